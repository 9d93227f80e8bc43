//! Task semantics against a real server: timeouts, lost workers, cancel,
//! retry, dynamic fan-out, concurrency caps and secrets.

use std::time::Duration;

use ork_proto::v1;
use ork_tests::{TestServer, output, task, tasks, test_options};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

fn spool_input(dir: &tempfile::TempDir) -> serde_json::Value {
    json!({"spool": dir.path().display().to_string()})
}

/// Reads `spool` from the task input (bash helper prepended to scripts).
const READ_SPOOL: &str = "spool=$(python3 -c 'import json,os; print(json.load(open(os.environ[\"ORK_INPUT\"]))[\"spool\"])')\n";

fn time(t: &Option<pbjson_types::Timestamp>) -> i128 {
    let t = t.as_ref().expect("timestamp");
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn wait_for_file(path: &std::path::Path) -> String {
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_the_attempt_and_retries_apply() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = "name: slow\ntasks:\n  - name: sleepy\n    file: sleepy.sh\n    timeout_seconds: 1\n    retries: 1\n";
    c.deploy(
        yaml,
        &[("sleepy.sh", "#!/bin/bash\necho started\nsleep 30\n")],
    )
    .await
    .expect("deploy");
    let run = c.start_run("slow", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed");
    let t = task(&run, "sleepy");
    assert_eq!(t.attempt, 2, "the timeout was retried once");
    assert_eq!(t.attempts.len(), 2);
    for a in &t.attempts {
        assert_eq!(a.status, "failed");
        assert!(a.error.contains("timed out after 1s"), "{}", a.error);
        let took = time(&a.finished_at) - time(&a.dispatched_at);
        assert!(
            took < 20_000_000_000,
            "the 30 s sleep was killed, took {took} ns"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_with_sigkill_is_detected_and_retried() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let spool = tempfile::tempdir().expect("spool");
    let script = format!(
        "#!/bin/bash\n{READ_SPOOL}if [ \"$ORK_ATTEMPT\" = 1 ]; then echo $PPID > \"$spool/worker.pid\"; sleep 60; fi\necho '{{\"attempt\": '$ORK_ATTEMPT'}}' > \"$ORK_OUTPUT\"\n"
    );
    let yaml = "name: victim\ntasks:\n  - name: t\n    file: t.sh\n    input: { spool: \"{{ run.input.spool }}\" }\n";
    c.deploy(yaml, &[("t.sh", &script)]).await.expect("deploy");
    let run = c.start_run("victim", spool_input(&spool)).await;
    let pid: i32 = wait_for_file(&spool.path().join("worker.pid"))
        .await
        .trim()
        .parse()
        .expect("pid");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    let t = task(&run, "t");
    assert_eq!(output(t), json!({"attempt": 2}));
    assert!(
        t.attempts[0].error.contains("before reporting"),
        "{}",
        t.attempts[0].error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_running_chain() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let spool = tempfile::tempdir().expect("spool");
    let script = format!("#!/bin/bash\n{READ_SPOOL}echo $$ > \"$spool/task.pid\"\nsleep 60\n");
    let yaml = "name: long\ntasks:\n  - name: a\n    file: a.sh\n    input: { spool: \"{{ run.input.spool }}\" }\n  - name: b\n    file: a.sh\n    depends_on: [a]\n    input: { spool: \"{{ run.input.spool }}\" }\n";
    c.deploy(yaml, &[("a.sh", &script)]).await.expect("deploy");
    let run = c.start_run("long", spool_input(&spool)).await;
    let pid: i32 = wait_for_file(&spool.path().join("task.pid"))
        .await
        .trim()
        .parse()
        .expect("pid");
    assert!(pid_alive(pid));
    let cancelled = c
        .runs
        .cancel_run(v1::CancelRunRequest { id: run.id.clone() })
        .await
        .expect("cancel")
        .into_inner()
        .run
        .expect("run");
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(task(&cancelled, "a").status, "cancelled");
    assert_eq!(task(&cancelled, "b").status, "cancelled");
    for _ in 0..200 {
        if !pid_alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!pid_alive(pid), "the task's process was stopped");
    let again = c
        .runs
        .cancel_run(v1::CancelRunRequest { id: run.id.clone() })
        .await
        .expect_err("twice");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_reruns_only_what_failed_or_a_task_and_its_downstream() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let spool = tempfile::tempdir().expect("spool");
    let first = "#!/bin/bash\necho '{\"n\": 1}' > \"$ORK_OUTPUT\"\n";
    let second = format!(
        "#!/bin/bash\n{READ_SPOOL}if [ ! -e \"$spool/fixed\" ]; then echo broken >&2; exit 1; fi\necho '{{\"ok\": true}}' > \"$ORK_OUTPUT\"\n"
    );
    let yaml = "name: fix\ntasks:\n  - name: first\n    file: first.sh\n  - name: second\n    file: second.sh\n    depends_on: [first]\n    input: { spool: \"{{ run.input.spool }}\" }\n  - name: third\n    file: first.sh\n    depends_on: [second]\n";
    c.deploy(yaml, &[("first.sh", first), ("second.sh", &second)])
        .await
        .expect("deploy");
    let run = c.start_run("fix", spool_input(&spool)).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed");
    assert_eq!(task(&run, "third").status, "skipped");

    std::fs::write(spool.path().join("fixed"), "").expect("fix");
    let retried = c
        .runs
        .retry_run(v1::RetryRunRequest {
            id: run.id.clone(),
            task: String::new(),
        })
        .await
        .expect("retry")
        .into_inner()
        .run
        .expect("run");
    assert_eq!(retried.id, run.id, "same run id");
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    assert_eq!(
        task(&run, "first").attempt,
        1,
        "the successful task was not re-run"
    );
    assert_eq!(task(&run, "second").attempt, 2);
    assert_eq!(task(&run, "third").attempt, 1);

    c.runs
        .retry_run(v1::RetryRunRequest {
            id: run.id.clone(),
            task: "second".into(),
        })
        .await
        .expect("retry --task");
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success");
    assert_eq!(task(&run, "first").attempt, 1);
    assert_eq!(task(&run, "second").attempt, 3);
    assert_eq!(task(&run, "third").attempt, 2);
    let bad = c
        .runs
        .retry_run(v1::RetryRunRequest {
            id: run.id.clone(),
            task: "nope".into(),
        })
        .await
        .expect_err("unknown task");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("first, second, third"),
        "{}",
        bad.message()
    );
    let typo = c
        .runs
        .retry_run(v1::RetryRunRequest {
            id: run.id.clone(),
            task: "secnd".into(),
        })
        .await
        .expect_err("a typo");
    assert!(
        typo.message()
            .contains("no task `secnd` (did you mean `second`?)"),
        "{}",
        typo.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn for_each_over_zero_one_and_a_thousand_items() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = r#"
name: each
tasks:
  - name: list
    file: list.py
    input: { n: "{{ run.input.n }}" }
  - name: item
    file: item.sh
    depends_on: [list]
    parallel: { for_each: list.items }
    input: { value: "{{ item }}" }
  - name: total
    file: total.py
    depends_on: [item]
    input: { all: "{{ tasks.item.outputs }}" }
"#;
    let list = "import json, os\nn = json.load(open(os.environ['ORK_INPUT']))['n']\njson.dump({'items': list(range(n))}, open(os.environ['ORK_OUTPUT'], 'w'))\n";
    let item = "#!/bin/sh\necho \"{\\\"i\\\": $ORK_PARALLEL_INDEX}\" > \"$ORK_OUTPUT\"\n";
    let total = "import json, os\nall = json.load(open(os.environ['ORK_INPUT']))['all']\njson.dump({'count': len(all), 'sum': sum(o['i'] for o in all)}, open(os.environ['ORK_OUTPUT'], 'w'))\n";
    c.deploy(
        yaml,
        &[("list.py", list), ("item.sh", item), ("total.py", total)],
    )
    .await
    .expect("deploy");
    for n in [0u32, 1, 1000] {
        let run = c.start_run("each", json!({"n": n})).await;
        let run = c.wait_run(&run.id, Duration::from_secs(240)).await;
        assert_eq!(run.status, "success", "n = {n}");
        let instances: Vec<&v1::TaskRun> = tasks(&run, "item")
            .into_iter()
            .filter(|t| t.parallel_index.is_some())
            .collect();
        assert_eq!(instances.len(), n as usize);
        let sum: u64 = (0..u64::from(n)).sum();
        assert_eq!(output(task(&run, "total")), json!({"count": n, "sum": sum}));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn task_concurrency_is_never_exceeded_and_extra_runs_wait() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = "name: capped\nconcurrency: 1\ntasks:\n  - name: work\n    file: w.sh\n    parallel: 6\n    concurrency: 2\n";
    c.deploy(yaml, &[("w.sh", "#!/bin/bash\nsleep 0.3\n")])
        .await
        .expect("deploy");
    let first = c.start_run("capped", json!({})).await;
    let second = c.start_run("capped", json!({})).await;
    assert_eq!(
        second.status, "pending",
        "the workflow allows one run at a time"
    );
    let first = c.wait_run(&first.id, WAIT).await;
    assert_eq!(first.status, "success");
    let second = c.wait_run(&second.id, WAIT).await;
    assert_eq!(second.status, "success");
    assert!(
        time(&second.started_at) >= time(&first.finished_at),
        "the second run started after the first ended"
    );
    for run in [&first, &second] {
        let spans: Vec<(i128, i128)> = tasks(run, "work")
            .iter()
            .map(|t| (time(&t.started_at), time(&t.finished_at)))
            .collect();
        assert_eq!(spans.len(), 6);
        for (start, _) in &spans {
            let overlapping = spans
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count();
            assert!(
                overlapping <= 2,
                "{overlapping} instances ran at once: {spans:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_reaches_the_task_and_nowhere_else() {
    const CANARY: &str = "canary-7f3c9a1e-secret";
    let data_dir = tempfile::tempdir().expect("data dir");
    let secrets = tempfile::tempdir().expect("secrets dir");
    std::fs::write(secrets.path().join("API_TOKEN"), format!("{CANARY}\n")).expect("secret");
    let mut options = test_options(data_dir.path());
    options.secrets_dir = Some(secrets.path().to_path_buf());
    let server = TestServer::start_with(data_dir, options).await;
    let mut c = server.clients().await;
    let yaml = "name: secretive\ntasks:\n  - name: leak\n    file: leak.sh\n    env:\n      TOKEN: { secret: API_TOKEN }\n      PLAIN: visible\n  - name: fail\n    file: fail.sh\n    env:\n      TOKEN: { secret: API_TOKEN }\n";
    let leak = "#!/bin/bash\necho \"token is $TOKEN\"\necho \"to stderr: $TOKEN\" >&2\nsum=$(printf %s \"$TOKEN\" | sha256sum | cut -c1-16)\necho \"{\\\"sum\\\": \\\"$sum\\\", \\\"echo\\\": \\\"$TOKEN\\\", \\\"plain\\\": \\\"$PLAIN\\\"}\" > \"$ORK_OUTPUT\"\n";
    let fail = "#!/bin/bash\necho \"failing with $TOKEN\" >&2\nexit 3\n";
    c.deploy(yaml, &[("leak.sh", leak), ("fail.sh", fail)])
        .await
        .expect("deploy");
    let run = c.start_run("secretive", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed");
    let out = output(task(&run, "leak"));
    let expected_sum = {
        let o = std::process::Command::new("bash")
            .args([
                "-c",
                &format!("printf %s {CANARY} | sha256sum | cut -c1-16"),
            ])
            .output()
            .expect("sha256sum");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(
        out["sum"],
        json!(expected_sum),
        "the task saw the real secret"
    );
    assert_eq!(out["plain"], json!("visible"));

    let mut seen = serde_json::to_string(&run).expect("json");
    for name in ["leak", "fail"] {
        for line in c.logs(&run.id, name).await {
            seen.push_str(&line.line);
            seen.push('\n');
        }
    }
    assert!(
        seen.contains("token is ********"),
        "masked, not dropped: {seen}"
    );
    assert!(!seen.contains(CANARY), "run status or logs leak the secret");
    let data = server.stop().await;
    let mut leaks = Vec::new();
    for entry in walk(data.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()) {
            leaks.push(entry.display().to_string());
        }
    }
    assert!(leaks.is_empty(), "the secret was stored in {leaks:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_that_breaks_its_type_fails_the_attempt() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = r#"
name: typed
types:
  listing:
    type: object
    required: [files]
    properties:
      files: { type: array, items: { type: string } }
tasks:
  - name: good
    file: good.sh
    output_type: listing
  - name: bad
    file: bad.sh
    output_type: listing
"#;
    let good = "#!/bin/bash\necho '{\"files\": [\"a\", \"b\"]}' > \"$ORK_OUTPUT\"\n";
    let bad = "#!/bin/bash\necho '{\"files\": [\"a\", 3]}' > \"$ORK_OUTPUT\"\n";
    c.deploy(yaml, &[("good.sh", good), ("bad.sh", bad)])
        .await
        .expect("deploy");
    let run = c.start_run("typed", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed");
    assert_eq!(task(&run, "good").status, "success");
    let bad = task(&run, "bad");
    assert_eq!(bad.status, "failed");
    assert!(
        bad.error.contains("does not match type `listing`"),
        "{}",
        bad.error
    );
    assert!(bad.error.contains("/files/1"), "{}", bad.error);
    assert_eq!(bad.output, None, "an invalid output is not stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_never_runs_more_subprocesses_than_its_cap() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut options = test_options(data_dir.path());
    options.max_subprocesses = 3;
    let server = TestServer::start_with(data_dir, options).await;
    let mut c = server.clients().await;
    let yaml = "name: wide\ntasks:\n  - name: w\n    file: w.sh\n    parallel: 12\n";
    c.deploy(yaml, &[("w.sh", "#!/bin/bash\nsleep 0.2\n")])
        .await
        .expect("deploy");
    let run = c.start_run("wide", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success");
    let spans: Vec<(i128, i128)> = tasks(&run, "w")
        .iter()
        .map(|t| (time(&t.dispatched_at), time(&t.finished_at)))
        .collect();
    for (start, _) in &spans {
        let at_once = spans
            .iter()
            .filter(|(s, f)| s <= start && start < f)
            .count();
        assert!(at_once <= 3, "{at_once} subprocesses at once: {spans:?}");
    }
}
