//! End to end: a server mirroring into S3 (moto, started by
//! `scripts/emulators.sh`), stopped, then the run read back from the bucket
//! alone, by the library and by `ork run status --from-objects`.

use std::io::Write as _;
use std::time::Duration;

use ork_server::objects::{self, Settings};
use ork_tests::{TestServer, ork, test_options};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// `s3://BUCKET/e2e/UNIQUE?...` for moto, or `None` (skipped loudly, failed in CI).
fn s3_url() -> Option<String> {
    let Some(endpoint) = std::env::var("ORK_TEST_S3_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "ORK_TEST_S3_ENDPOINT is not set; in CI the tests run under scripts/emulators.sh"
        );
        // Straight to stderr: libtest captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "WARNING: skipping the S3 end-to-end test: ORK_TEST_S3_ENDPOINT is not set"
        );
        return None;
    };
    let bucket = std::env::var("ORK_TEST_S3_BUCKET").unwrap_or_else(|_| "ork-test".into());
    // Everything in the URL: the server must not depend on this process's
    // environment, and moto accepts any credentials.
    Some(format!(
        "s3://{bucket}/e2e/{}?endpoint={endpoint}&allow_http=true&region=us-east-1\
         &access_key_id=testing&secret_access_key=testing",
        uuid_like()
    ))
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_mirrored_to_s3_reads_back_without_the_server() {
    let Some(url) = s3_url() else { return };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut options = test_options(data_dir.path());
    options.objects_url = url.clone();
    let server = TestServer::start_with(data_dir, options).await;
    let mut c = server.clients().await;
    let yaml = "name: to-s3\ntasks:\n  - name: flaky\n    file: flaky.sh\n    retries: 1\n    retry_delay_seconds: 0\n  - name: each\n    file: each.sh\n    depends_on: [flaky]\n    parallel: 2\n    input: { n: \"{{ tasks.flaky.output.n }}\" }\n";
    // Fails its first attempt, succeeds on the retry.
    let flaky = "#!/bin/bash\nif [ \"$ORK_ATTEMPT\" = 1 ]; then echo 'first attempt fails' >&2; exit 1; fi\necho \"attempt $ORK_ATTEMPT ok\"\necho '{\"n\": 5}' > \"$ORK_OUTPUT\"\n";
    let each = "#!/bin/bash\necho \"instance $ORK_PARALLEL_INDEX\"\necho \"{\\\"i\\\": $ORK_PARALLEL_INDEX}\" > \"$ORK_OUTPUT\"\n";
    c.deploy(yaml, &[("flaky.sh", flaky), ("each.sh", each)])
        .await
        .expect("deploy");
    let run = c.start_run("to-s3", json!({"day": "2026-11-26"})).await;
    let from_server = c.wait_run(&run.id, WAIT).await;
    assert_eq!(from_server.status, "success", "{from_server:#?}");
    // Stopping flushes the outbox into the bucket.
    let _data = server.stop().await;

    let store = objects::open(&url, &Settings::new()).expect("open the bucket");
    let from_bucket = objects::read_run(store.as_ref(), &run.id)
        .await
        .expect("read the run from S3");
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

    // The CLI, with no server to talk to (nothing listens on port 1).
    let cli = ork(
        "http://127.0.0.1:1",
        &[
            "run",
            "status",
            &run.id,
            "--from-objects",
            &url,
            "--output",
            "json",
        ],
    );
    assert!(
        cli.status.success(),
        "ork run status --from-objects: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&cli.stdout).expect("json on stdout");
    assert_eq!(printed["id"], run.id.as_str());
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

    let attempts = objects::read_run_attempts(store.as_ref(), &run.id)
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
