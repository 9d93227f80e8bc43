//! The `ork` CLI and `ork dev` as a user runs them: real processes, real ports.

use std::time::Duration;

use ork_tests::{Clients, DevProcess, TestServer, free_port, ork, ork_in, task};
use serde_json::{Value, json};

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_runs_end_to_end_through_the_cli() {
    let data = tempfile::tempdir().expect("data dir");
    let example = repo_root().join("examples/etl/etl.yaml");
    let dev = DevProcess::start(data.path(), free_port(), &[example.to_str().expect("path")]).await;
    // `ork dev FILES` deploys the example once it serves: the port answers
    // a moment before the deploy has committed, so wait for it to show.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = ork(&dev.url, &["workflow", "list"]);
        assert!(listed.status.success(), "{}", stderr(&listed));
        if stdout(&listed).contains("etl") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the example was not deployed: {}",
            stdout(&listed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let run = ork(
        &dev.url,
        &[
            "run",
            "start",
            "etl",
            "--input",
            "date=2026-11-26",
            "--wait",
            "-o",
            "json",
        ],
    );
    assert!(
        run.status.success(),
        "exit {:?}: {}{}",
        run.status.code(),
        stdout(&run),
        stderr(&run)
    );
    let run: Value = serde_json::from_str(&stdout(&run)).expect("run json");
    assert_eq!(run["status"], "success");
    assert_eq!(run["workflow"], "etl");
    let tasks = run["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 5, "discover, 3 x process, report");
    for t in tasks {
        for key in ["name", "status", "attempt", "output"] {
            assert!(t.get(key).is_some(), "task lacks `{key}`: {t}");
        }
        assert_eq!(t["status"], "success");
    }
    let indices: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["name"] == "process")
        .map(|t| &t["parallel_index"])
        .collect();
    assert_eq!(indices, [&json!(0), &json!(1), &json!(2)]);
    let report = tasks
        .iter()
        .find(|t| t["name"] == "report")
        .expect("report");
    assert_eq!(report["output"]["files"], 3);
    assert_eq!(report["output"]["title"], "Report for 2026-11-26");

    let id = run["id"].as_str().expect("id");
    let status = ork(&dev.url, &["run", "status", id]);
    assert!(status.status.success());
    assert!(stdout(&status).contains("report"), "{}", stdout(&status));
    let logs = ork(&dev.url, &["run", "logs", id, "--task", "report"]);
    assert!(stdout(&logs).contains("total"), "{}", stdout(&logs));

    // A run id alone on stdout without --output json, for scripts.
    let started = ork(
        &dev.url,
        &["run", "start", "etl", "--input", "date=2026-11-27"],
    );
    assert!(started.status.success());
    assert_eq!(
        stdout(&started).trim().len(),
        36,
        "a uuid: {}",
        stdout(&started)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_exits_1_and_an_unreachable_server_exits_3() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("wf.yaml"),
        "name: sad\ntasks:\n  - name: t\n    file: t.sh\n",
    )
    .expect("yaml");
    std::fs::write(dir.path().join("t.sh"), "#!/bin/bash\nexit 1\n").expect("script");
    let deployed = ork(
        &server.url(),
        &[
            "workflow",
            "deploy",
            dir.path().join("wf.yaml").to_str().expect("p"),
        ],
    );
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let run = ork(&server.url(), &["run", "start", "sad", "--wait"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let unreachable = ork(
        &format!("http://127.0.0.1:{}", free_port()),
        &["run", "list"],
    );
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(
        stderr(&unreachable).contains("ork dev"),
        "{}",
        stderr(&unreachable)
    );
}

/// Every validation error names the task, the field and the line, both when
/// the CLI checks locally and when the server checks a raw gRPC deploy.
#[tokio::test(flavor = "multi_thread")]
async fn validation_errors_name_task_field_and_line() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("a.sh"), "#!/bin/sh\n").expect("script");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown field",
            "name: w\ntasks:\n  - name: a\n    file: a.sh\n    depend_on: [b]\n",
            &["task `a`", "depend_on", ":5:", "depends_on"],
        ),
        (
            "duplicate task",
            "name: w\ntasks:\n  - name: a\n    file: a.sh\n  - name: a\n    file: a.sh\n",
            &["task `a`", "duplicate", ":5:"],
        ),
        (
            "unknown dependency",
            "name: w\ntasks:\n  - name: a\n    file: a.sh\n    depends_on: [extrct]\n  - name: extract\n    file: a.sh\n",
            &["task `a`", "depends_on", "extrct", "extract"],
        ),
        (
            "template names an unknown task",
            "name: w\ntasks:\n  - name: a\n    file: a.sh\n    input: { x: \"{{ tasks.nope.output }}\" }\n",
            &["task `a`", "input", "nope"],
        ),
        (
            "template names a task that is not upstream",
            "name: w\ntasks:\n  - name: a\n    file: a.sh\n  - name: b\n    file: a.sh\n    input: { x: \"{{ tasks.a.output }}\" }\n",
            &["task `b`", "input", "depends_on"],
        ),
        (
            "cycle",
            "name: w\ntasks:\n  - name: a\n    file: a.sh\n    depends_on: [b]\n  - name: b\n    file: a.sh\n    depends_on: [a]\n",
            &["cycle", "a -> b -> a"],
        ),
        (
            "parallel ref not upstream",
            "name: w\ntasks:\n  - name: a\n    file: a.sh\n  - name: b\n    file: a.sh\n    parallel: { for_each: a.items }\n",
            &["task `b`", "parallel", "depends_on"],
        ),
        (
            "zero timeout",
            "name: w\ntasks:\n  - name: a\n    file: a.sh\n    timeout_seconds: 0\n",
            &["task `a`", "timeout_seconds", ":5:"],
        ),
        (
            "invalid cron",
            "name: w\nschedule: \"61 * * * *\"\ntasks:\n  - name: a\n    file: a.sh\n",
            &["schedule", ":2:"],
        ),
        (
            "missing file",
            "name: w\ntasks:\n  - name: a\n    file: missing.sh\n",
            &["task `a`", "missing.sh"],
        ),
        (
            "invalid YAML",
            "name: w\ntasks:\n  - name: a\n    file: [unclosed\n",
            &["w.yaml"],
        ),
    ];
    for (what, yaml, needles) in cases {
        let path = dir.path().join("w.yaml");
        std::fs::write(&path, yaml).expect("yaml");
        let out = ork(
            &server.url(),
            &["workflow", "deploy", path.to_str().expect("p")],
        );
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        let message = stderr(&out);
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{what}: `{needle}` missing from:\n{message}"
            );
        }
        assert!(!message.contains("panicked"), "{what}: {message}");
        if *what == "missing file" {
            continue; // The CLI refuses before calling the server.
        }
        let files: &[(&str, &str)] = &[("a.sh", "#!/bin/sh\n")];
        let err = c.deploy(yaml, files).await.expect_err(what);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}");
        for needle in needles.iter().filter(|n| !n.ends_with(".yaml")) {
            assert!(
                err.message().contains(needle),
                "{what} via gRPC: `{needle}` missing from:\n{}",
                err.message()
            );
        }
    }
    assert!(
        c.workflows
            .list_workflows(ork_proto::v1::ListWorkflowsRequest {})
            .await
            .expect("list")
            .into_inner()
            .workflows
            .is_empty(),
        "nothing was half-written"
    );
}

/// A killed `ork dev` restarted on the same data dir finishes its runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_ork_dev_restarted_on_its_data_dir_continues_its_runs() {
    let data = tempfile::tempdir().expect("data dir");
    let spool = tempfile::tempdir().expect("spool");
    let port = free_port();
    let mut dev = DevProcess::start(data.path(), port, &[]).await;
    let mut c = Clients::connect(&dev.url).await;
    let yaml = "name: durable\ntasks:\n  - name: first\n    file: slow.sh\n    input: { spool: \"{{ run.input.spool }}\" }\n  - name: second\n    file: slow.sh\n    depends_on: [first]\n    input: { spool: \"{{ run.input.spool }}\" }\n";
    let slow = "#!/bin/bash\nspool=$(python3 -c 'import json,os; print(json.load(open(os.environ[\"ORK_INPUT\"]))[\"spool\"])')\ntouch \"$spool/$ORK_TASK_NAME.started\"\nsleep 2\necho \"{\\\"task\\\": \\\"$ORK_TASK_NAME\\\"}\" > \"$ORK_OUTPUT\"\n";
    c.deploy(yaml, &[("slow.sh", slow)]).await.expect("deploy");
    let run = c
        .start_run(
            "durable",
            json!({"spool": spool.path().display().to_string()}),
        )
        .await;
    for _ in 0..200 {
        if spool.path().join("first.started").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        spool.path().join("first.started").exists(),
        "the first task started"
    );
    dev.kill();

    let dev = DevProcess::start(data.path(), port, &["--heartbeat-timeout", "5"]).await;
    let mut c = Clients::connect(&dev.url).await;
    let run = c.wait_run(&run.id, Duration::from_secs(90)).await;
    assert_eq!(run.status, "success", "{run:#?}");
    assert_eq!(
        ork_tests::output(task(&run, "second")),
        json!({"task": "second"})
    );
}

/// `ork run logs --follow` shows lines while the task still runs, and ends
/// by itself when the task ends.
#[tokio::test(flavor = "multi_thread")]
async fn run_logs_follow_streams_lines_as_they_are_written() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = "name: chatty\ntasks:\n  - name: talk\n    file: talk.sh\n";
    c.deploy(
        yaml,
        &[("talk.sh", "#!/bin/bash\necho first\nsleep 2\necho second\n")],
    )
    .await
    .expect("deploy");
    let run = c.start_run("chatty", json!({})).await;
    let mut follow = std::process::Command::new(ork_tests::binary("ork"))
        .args(["run", "logs", &run.id, "--task", "talk", "--follow"])
        .env("ORK_SERVER", server.url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ork run logs");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the first line");
    assert_eq!(first, "first");
    let status = c.get_run(&run.id).await;
    assert_ne!(
        status.status, "success",
        "the first line arrived while the task was still running"
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the second line"),
        "second"
    );
    let exit = follow
        .wait()
        .expect("ork exits by itself when the task ends");
    assert!(exit.success());
}

/// Copies `src` into `dst` recursively: an example as a user's checkout has it.
fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == ".venv" || name == "__pycache__" || name == ".ork" {
            continue;
        }
        let to = dst.join(&name);
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}

/// The README's path: `ork dev examples/etl/etl.yaml` with the default data
/// dir (`.ork`, relative to where it starts), then `ork run start etl
/// --wait`. The data dir used to reach task processes relative, so every file
/// task failed with "No such file or directory"; tests passed only because
/// they all gave an absolute temporary data dir. `--objects` with a relative
/// folder works too, and the inputs' defaults make `--input` optional.
#[tokio::test(flavor = "multi_thread")]
async fn ork_dev_with_its_default_relative_data_dir_runs_file_tasks() {
    let home = tempfile::tempdir().expect("a user's folder");
    copy_dir(
        &repo_root().join("examples/etl"),
        &home.path().join("examples/etl"),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let dev = DevProcess::start_in(
        home.path(),
        port,
        &[
            "dev",
            "--listen",
            &listen,
            "--objects",
            "file://mirror",
            "examples/etl/etl.yaml",
        ],
    )
    .await;
    let run = ork_in(
        home.path(),
        &dev.url,
        &["run", "start", "etl", "--wait", "-o", "json"],
    );
    let log = std::fs::read_to_string(home.path().join("ork-0.log")).unwrap_or_default();
    assert!(
        run.status.success(),
        "exit {:?}: {}{}\n{log}",
        run.status.code(),
        stdout(&run),
        stderr(&run)
    );
    let run: Value = serde_json::from_str(&stdout(&run)).expect("run json");
    assert_eq!(run["status"], "success");
    assert_eq!(run["input"]["date"], "2026-11-26", "the declared default");
    assert!(
        home.path().join(".ork/ork.db").is_file(),
        "the default data dir"
    );
    let id = run["id"].as_str().expect("id");
    assert!(
        home.path().join("mirror/runs").join(id).is_dir(),
        "--objects file://mirror is relative to where ork dev started"
    );
}

/// `ork server` as the README's Production section starts it, but on
/// SQLite and a local folder given relative to where it starts (and the
/// default `--data-dir .ork`): every subprocess task of every run used to
/// fail there.
#[tokio::test(flavor = "multi_thread")]
async fn ork_server_with_relative_state_objects_and_data_dir_runs_file_tasks() {
    let home = tempfile::tempdir().expect("a user's folder");
    copy_dir(
        &repo_root().join("examples/etl"),
        &home.path().join("flows"),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = DevProcess::start_in(
        home.path(),
        port,
        &[
            "server",
            "--listen",
            &listen,
            "--state",
            "sqlite://state/ork.db",
            "--objects",
            "file://objects",
            "--bootstrap-token-file",
            "admin.token",
        ],
    )
    .await;
    // `ork server` requires tokens; the first admin token is written to the
    // file, relative to where the server started like every other path.
    let token = std::fs::read_to_string(home.path().join("admin.token")).expect("admin token");
    let token = token.trim();
    let deployed = ork_in(
        home.path(),
        &server.url,
        &["--token", token, "workflow", "deploy", "flows/etl.yaml"],
    );
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let run = ork_in(
        home.path(),
        &server.url,
        &[
            "--token",
            token,
            "run",
            "start",
            "etl",
            "--input",
            "date=2026-12-01",
            "--wait",
            "-o",
            "json",
        ],
    );
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let run: Value = serde_json::from_str(&stdout(&run)).expect("run json");
    assert_eq!(run["status"], "success");
    let id = run["id"].as_str().expect("id");
    assert!(home.path().join("state/ork.db").is_file());
    assert!(home.path().join("objects/runs").join(id).is_dir());
    assert!(
        home.path().join(".ork/work").is_dir(),
        "attempts ran under the default data dir"
    );
}

/// `--wait` follows the run's WatchRun stream and, into a pipe, prints one
/// plain line per event (a task started, failed, waits) on stderr; then the
/// run on stdout. `--color always` colours even a pipe, `NO_COLOR` turns
/// `auto` off.
#[tokio::test(flavor = "multi_thread")]
async fn wait_prints_progress_lines_into_a_pipe_and_colour_follows_the_flag() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = "name: steps\ntasks:\n  - name: one\n    command: [\"true\"]\n  - name: two\n    command: [bash, -c, \"echo oops >&2; exit 4\"]\n    depends_on: [one]\n  - name: three\n    command: [\"true\"]\n    depends_on: [two]\n";
    c.deploy(yaml, &[]).await.expect("deploy");
    let out = ork(&server.url(), &["run", "start", "steps", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        "of steps: 3 tasks",
        "one running",
        "one succeeded",
        "two failed: exited with code 4: oops",
        "three skipped",
        "run failed",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
    assert!(
        !err.contains('\x1b'),
        "no colour into a pipe by default: {err}"
    );
    assert!(
        stdout(&out).contains("two"),
        "the run table: {}",
        stdout(&out)
    );

    let coloured = ork(&server.url(), &["--color", "always", "run", "list"]);
    assert!(stdout(&coloured).contains("\x1b["), "{}", stdout(&coloured));
    let forced = std::process::Command::new(ork_tests::binary("ork"))
        .args(["run", "list"])
        .env("ORK_SERVER", server.url())
        .env_remove("NO_COLOR")
        .env("CLICOLOR_FORCE", "1")
        .output()
        .expect("ork");
    assert!(stdout(&forced).contains("\x1b["), "{}", stdout(&forced));
}

/// `ork run logs --follow` exits 1 when the run it followed failed (as the
/// README's exit codes say), 0 when it succeeded; with `--task` it answers
/// for that task. Unknown names get a did-you-mean.
#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_exits_1_when_the_run_failed_and_names_get_did_you_mean() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = "name: mixed\ntasks:\n  - name: good\n    command: [bash, -c, \"echo fine\"]\n  - name: bad\n    command: [bash, -c, \"echo broken; exit 1\"]\n";
    c.deploy(yaml, &[]).await.expect("deploy");
    let run = c.start_run("mixed", json!({})).await;
    let all = ork(&server.url(), &["run", "logs", &run.id, "--follow"]);
    assert_eq!(all.status.code(), Some(1), "{}", stderr(&all));
    assert!(stdout(&all).contains("broken"), "{}", stdout(&all));
    assert!(stderr(&all).contains("ended failed"), "{}", stderr(&all));
    let good = ork(
        &server.url(),
        &["run", "logs", &run.id, "--task", "good", "--follow"],
    );
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    let bad = ork(
        &server.url(),
        &["run", "logs", &run.id, "--task", "bad", "--follow"],
    );
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("task bad of run"), "{}", stderr(&bad));

    let typo = ork(&server.url(), &["run", "logs", &run.id, "--task", "goood"]);
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        stderr(&typo).contains("(did you mean `good`?)"),
        "{}",
        stderr(&typo)
    );
    let typo = ork(&server.url(), &["run", "start", "mixd"]);
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        stderr(&typo).contains("workflow `mixd` not found (did you mean `mixed`?)"),
        "{}",
        stderr(&typo)
    );
    let conflict = ork(
        &server.url(),
        &["run", "start", "mixed", "-i", "a.b=1", "-i", "a=2"],
    );
    assert_eq!(
        conflict.status.code(),
        Some(2),
        "bad input: {}",
        stderr(&conflict)
    );
    assert!(
        stderr(&conflict).contains("would replace \"a.b\""),
        "{}",
        stderr(&conflict)
    );
}

/// `command:` runs a program with or without a file; `python:` (here from
/// the workflow's `defaults:`, relative to the workflow file) chooses the
/// interpreter of `.py` files, instead of whatever `python3` the server has.
#[tokio::test(flavor = "multi_thread")]
async fn command_and_python_choose_the_program_of_a_task() {
    let server = TestServer::start().await;
    let home = tempfile::tempdir().expect("folder");
    let flows = home.path().join("flows");
    std::fs::create_dir_all(flows.join("venv/bin")).expect("mkdir");
    // A stand-in for a virtualenv's python: marks the run, then is python3.
    let fake = flows.join("venv/bin/python");
    std::fs::write(
        &fake,
        "#!/bin/sh\nexport FROM_VENV=yes\nexec python3 \"$@\"\n",
    )
    .expect("python");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(
        flows.join("job.py"),
        "import json, os, sys\njson.dump({'venv': os.environ.get('FROM_VENV', 'no'), 'argv0': os.path.basename(sys.argv[0])}, open(os.environ['ORK_OUTPUT'], 'w'))\n",
    )
    .expect("job.py");
    std::fs::write(
        flows.join("show.sh"),
        "echo \"{\\\"args\\\": \\\"$*\\\"}\" > \"$ORK_OUTPUT\"\n",
    )
    .expect("show.sh");
    std::fs::write(
        flows.join("interp.yaml"),
        r#"name: interp
defaults:
  python: venv/bin/python
tasks:
  - name: inline
    command: ["bash", "-c", "echo '{\"said\": \"hi\"}' > \"$ORK_OUTPUT\""]
  - name: with-file
    file: show.sh
    command: ["bash", "-e"]
  - name: venv
    file: job.py
  - name: system
    file: job.py
    python: python3
"#,
    )
    .expect("yaml");
    let deployed = ork_in(
        home.path(),
        &server.url(),
        &["workflow", "deploy", "flows/interp.yaml"],
    );
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let out = ork(
        &server.url(),
        &["run", "start", "interp", "--wait", "-o", "json"],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let run: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let output_of = |name: &str| {
        run["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name))
            .map(|t| t["output"].clone())
            .unwrap_or_default()
    };
    assert_eq!(output_of("inline"), json!({"said": "hi"}));
    assert_eq!(
        output_of("with-file")["args"],
        "",
        "bash ran the file with no arguments"
    );
    assert_eq!(output_of("venv"), json!({"venv": "yes", "argv0": "job.py"}));
    assert_eq!(
        output_of("system"),
        json!({"venv": "no", "argv0": "job.py"})
    );
    // The stored definition names the interpreter by its absolute path.
    let shown = ork(
        &server.url(),
        &["workflow", "status", "interp", "-o", "json"],
    );
    let shown: Value = serde_json::from_str(&stdout(&shown)).expect("json");
    let python = shown["workflow"]["tasks"][2]["python"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(python, fake.display().to_string());
}
