//! The `ork` CLI and `ork dev` as a user runs them: real processes, real ports.

use std::time::Duration;

use ork_tests::{Clients, DevProcess, TestServer, free_port, ork, task};
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
    // `ork dev FILES` deployed the example before serving.
    let listed = ork(&dev.url, &["workflow", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("etl"), "{}", stdout(&listed));

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
