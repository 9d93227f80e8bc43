//! The run every object-store end-to-end test mirrors (a retried task, then
//! a fan-out), and the checks that the bucket alone holds it: read back by
//! the library and by `ork run status --from-objects`, with no server.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use ork_proto::v1;
use ork_server::objects::{self, Settings};
use serde_json::json;

use crate::{Clients, binary};

pub const WORKFLOW: &str = "mirrored";

const YAML: &str = "name: mirrored\ntasks:\n  - name: flaky\n    file: flaky.sh\n    retries: 1\n    retry_delay_seconds: 0\n  - name: each\n    file: each.sh\n    depends_on: [flaky]\n    parallel: 2\n    input: { n: \"{{ tasks.flaky.output.n }}\" }\n";
/// Fails its first attempt, succeeds on the retry.
const FLAKY: &str = "#!/bin/bash\nif [ \"$ORK_ATTEMPT\" = 1 ]; then echo 'first attempt fails' >&2; exit 1; fi\necho \"attempt $ORK_ATTEMPT ok\"\necho '{\"n\": 5}' > \"$ORK_OUTPUT\"\n";
const EACH: &str = "#!/bin/bash\necho \"instance $ORK_PARALLEL_INDEX\"\necho \"{\\\"i\\\": $ORK_PARALLEL_INDEX}\" > \"$ORK_OUTPUT\"\n";

/// The emulator endpoint in `variable` (set by `scripts/emulators.sh`), or
/// `None`: the test is skipped loudly, or fails when `CI` is set.
pub fn emulator(variable: &str) -> Option<String> {
    if let Some(value) = std::env::var(variable).ok().filter(|v| !v.is_empty()) {
        return Some(value);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{variable} is not set; in CI the tests run under scripts/emulators.sh"
    );
    // Straight to stderr: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "WARNING: skipping an object-store end-to-end test: {variable} is not set"
    );
    None
}

/// A name no other test run uses, for a bucket prefix.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{}", std::process::id())
}

/// Deploys and runs the workflow; returns the run as the server reports it
/// once it succeeded.
pub async fn run_to_success(c: &mut Clients) -> v1::Run {
    c.deploy(YAML, &[("flaky.sh", FLAKY), ("each.sh", EACH)])
        .await
        .expect("deploy");
    let run = c.start_run(WORKFLOW, json!({"day": "2026-11-26"})).await;
    let from_server = c.wait_run(&run.id, Duration::from_secs(60)).await;
    assert_eq!(from_server.status, "success", "{from_server:#?}");
    from_server
}

/// Reads the run back from the bucket at `url` (opened with `settings`),
/// and through the CLI run with only `cli_env` in its environment, and
/// compares both with what the server said.
pub async fn assert_bucket_holds(
    url: &str,
    settings: &Settings,
    cli_env: &[(&str, &str)],
    from_server: &v1::Run,
) {
    let run_id = from_server.id.as_str();
    let store = objects::open(url, settings).expect("open the bucket");
    let from_bucket = objects::read_run(store.as_ref(), run_id)
        .await
        .expect("read the run from the bucket");
    assert_eq!(from_bucket.status, "success");
    assert_eq!(from_bucket.input, from_server.input);
    assert_eq!(from_bucket.tasks.len(), 3);
    for (b, s) in from_bucket.tasks.iter().zip(&from_server.tasks) {
        assert_eq!(
            (&b.id, &b.name, b.parallel_index),
            (&s.id, &s.name, s.parallel_index)
        );
        assert_eq!(
            (&b.status, b.attempt, &b.output),
            (&s.status, s.attempt, &s.output),
            "{}",
            b.name
        );
        assert_eq!(
            b.attempts.len() as u32,
            b.attempt,
            "{}: every attempt listed",
            b.name
        );
    }

    // The CLI, with no server to talk to (nothing listens on port 1) and
    // nothing in its environment but `cli_env`.
    let cli = Command::new(binary("ork"))
        .args([
            "run",
            "status",
            run_id,
            "--from-objects",
            url,
            "--output",
            "json",
        ])
        .env_clear()
        .env("ORK_SERVER", "http://127.0.0.1:1")
        .env("NO_COLOR", "1")
        .envs(cli_env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run ork");
    assert!(
        cli.status.success(),
        "ork run status --from-objects: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&cli.stdout).expect("json on stdout");
    assert_eq!(printed["id"], run_id);
    assert_eq!(printed["status"], "success");
    let tasks = printed["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 3);
    for (p, b) in tasks.iter().zip(&from_bucket.tasks) {
        assert_eq!((&p["id"], &p["status"]), (&json!(b.id), &json!(b.status)));
        assert_eq!(
            p["output"],
            ork_proto::json::from_proto_opt(b.output.as_ref())
        );
        assert_eq!(
            p["attempts"].as_array().map(Vec::len),
            Some(b.attempts.len())
        );
    }
    assert_eq!(printed["tasks"][0]["attempts"][0]["status"], "failed");

    let attempts = objects::read_run_attempts(store.as_ref(), run_id)
        .await
        .expect("attempts");
    let seen: Vec<_> = attempts
        .iter()
        .map(|a| (a.task.as_str(), a.parallel_index, a.attempt))
        .collect();
    assert_eq!(
        seen,
        [
            ("each", Some(0), 1),
            ("each", Some(1), 1),
            ("flaky", None, 1),
            ("flaky", None, 2)
        ]
    );
    for a in &attempts {
        let what = format!("{}[{:?}] attempt {}", a.task, a.parallel_index, a.attempt);
        let status = a
            .status
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no status.json"));
        assert!(a.spec.is_some(), "{what}: no spec.json");
        let log = a
            .log
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: no log.txt"));
        if a.task == "flaky" && a.attempt == 1 {
            assert_eq!(status.status, "failed");
            assert!(a.output.is_none(), "{what}: a failed attempt has no output");
            assert!(log.contains("first attempt fails"), "{what}: {log:?}");
        } else {
            assert_eq!(status.status, "success", "{what}");
            assert!(a.output.is_some(), "{what}: no output.json");
            assert!(!log.is_empty(), "{what}: empty log");
        }
    }
    assert_eq!(attempts[3].output, Some(json!({"n": 5})));
    assert_eq!(
        attempts[0].spec.as_ref().and_then(|s| s.input.clone()),
        Some(json!({"n": 5}))
    );
}
