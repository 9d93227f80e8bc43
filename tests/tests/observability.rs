//! `/metrics` after known workloads: every transition is counted exactly
//! once, histograms count what they should, task metrics become histograms,
//! and a metrics token guards the scrape when one is set.

use std::time::Duration;

use ork_tests::{TestServer, task, test_options};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

async fn scrape(server: &TestServer) -> String {
    let response = http()
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.expect("body")
}

/// The value of one series (`name{labels}`), or `None` when it is absent.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

fn expect(text: &str, series: &str, want: f64) {
    assert_eq!(value(text, series), Some(want), "{series} in:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn known_workloads_give_exact_counts() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    // 10 runs that succeed, each recording `rows` (1..=10) like any command:
    // `name value` lines in the file named by ORK_METRICS.
    c.deploy(
        "name: obs\ntasks:\n  - name: work\n    file: work.sh\n    input: { n: \"{{ run.input.n }}\" }\n",
        &[(
            "work.sh",
            "n=$(python3 -c 'import json,os; print(json.load(open(os.environ[\"ORK_INPUT\"]))[\"n\"])')\necho \"rows $n\" > \"$ORK_METRICS\"\n",
        )],
    )
    .await
    .expect("deploy obs");
    // A task that fails twice (one retry), a task that times out, and a run
    // that is cancelled while its task runs.
    c.deploy(
        "name: flaky\ntasks:\n  - name: boom\n    file: boom.sh\n    retries: 1\n    retry_delay_seconds: 0\n",
        &[("boom.sh", "echo 'errors 1' > \"$ORK_METRICS\"\nexit 1\n")],
    )
    .await
    .expect("deploy flaky");
    c.deploy(
        "name: late\ntasks:\n  - name: sleepy\n    file: sleepy.sh\n    timeout_seconds: 1\n",
        &[("sleepy.sh", "sleep 30\n")],
    )
    .await
    .expect("deploy late");
    c.deploy(
        "name: stopped\ntasks:\n  - name: long\n    file: long.sh\n",
        &[("long.sh", "sleep 30\n")],
    )
    .await
    .expect("deploy stopped");

    let mut ids = Vec::new();
    for n in 1..=10 {
        ids.push(c.start_run("obs", json!({ "n": n })).await.id);
    }
    for id in &ids {
        let run = c.wait_run(id, WAIT).await;
        assert_eq!(run.status, "success", "{run:#?}");
        let attempts = &task(&run, "work").attempts;
        assert_eq!(attempts.len(), 1);
        assert!(attempts[0].metrics.contains_key("rows"), "{attempts:#?}");
    }
    let flaky = c.start_run("flaky", json!({})).await;
    assert_eq!(c.wait_run(&flaky.id, WAIT).await.status, "failed");
    let late = c.start_run("late", json!({})).await;
    assert_eq!(c.wait_run(&late.id, WAIT).await.status, "failed");
    let stopped = c.start_run("stopped", json!({})).await;
    c.wait_until(&stopped.id, WAIT, "the task to run", |r| {
        task(r, "long").status == "running"
    })
    .await;
    c.runs
        .cancel_run(ork_proto::v1::CancelRunRequest {
            id: stopped.id.clone(),
        })
        .await
        .expect("cancel");
    assert_eq!(c.wait_run(&stopped.id, WAIT).await.status, "cancelled");

    let text = scrape(&server).await;
    expect(&text, "ork_runs_started_total{workflow=\"obs\"}", 10.0);
    expect(
        &text,
        "ork_runs_finished_total{workflow=\"obs\",status=\"success\"}",
        10.0,
    );
    expect(
        &text,
        "ork_run_duration_seconds_count{workflow=\"obs\",status=\"success\"}",
        10.0,
    );
    expect(
        &text,
        "ork_task_attempts_total{workflow=\"obs\",task=\"work\",outcome=\"success\"}",
        10.0,
    );
    expect(
        &text,
        "ork_task_duration_seconds_count{workflow=\"obs\",task=\"work\",outcome=\"success\"}",
        10.0,
    );
    expect(
        &text,
        "ork_task_schedule_to_start_seconds_count{workflow=\"obs\",task=\"work\"}",
        10.0,
    );
    expect(
        &text,
        "ork_task_metric_count{workflow=\"obs\",task=\"work\",name=\"rows\"}",
        10.0,
    );
    expect(
        &text,
        "ork_task_metric_sum{workflow=\"obs\",task=\"work\",name=\"rows\"}",
        55.0,
    );
    // Two failed attempts (the first retried), one failed run; the metrics a
    // failing task recorded count too.
    expect(
        &text,
        "ork_task_attempts_total{workflow=\"flaky\",task=\"boom\",outcome=\"failed\"}",
        2.0,
    );
    expect(
        &text,
        "ork_runs_finished_total{workflow=\"flaky\",status=\"failed\"}",
        1.0,
    );
    expect(
        &text,
        "ork_task_metric_count{workflow=\"flaky\",task=\"boom\",name=\"errors\"}",
        2.0,
    );
    expect(
        &text,
        "ork_task_attempts_total{workflow=\"late\",task=\"sleepy\",outcome=\"timeout\"}",
        1.0,
    );
    expect(
        &text,
        "ork_task_attempts_total{workflow=\"stopped\",task=\"long\",outcome=\"cancelled\"}",
        1.0,
    );
    expect(
        &text,
        "ork_runs_finished_total{workflow=\"stopped\",status=\"cancelled\"}",
        1.0,
    );
    // Nothing else finished: no stray series.
    let finished: f64 = text
        .lines()
        .filter(|l| l.starts_with("ork_runs_finished_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(finished, 13.0, "{text}");
    // Every write transaction is timed: one per started run; reports are
    // committed in batches (group commit), so at least one, at most one per
    // report.
    expect(
        &text,
        "ork_state_transaction_duration_seconds_count{operation=\"create_run\"}",
        13.0,
    );
    let reports = value(
        &text,
        "ork_state_transaction_duration_seconds_count{operation=\"report\"}",
    )
    .expect("report timed");
    assert!(reports >= 1.0, "{text}");
    // Gauges, read at scrape time: nothing waits, nothing runs.
    expect(&text, "ork_queue_depth{reason=\"ready\"}", 0.0);
    expect(&text, "ork_task_runs_active{status=\"running\"}", 0.0);
    expect(&text, "ork_runs_active{status=\"running\"}", 0.0);
    expect(&text, "ork_pool_workers", 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_queue_gauges_count_what_waits() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut options = test_options(data_dir.path());
    // One subprocess at a time: the other fan-out instances wait ready.
    options.max_subprocesses = 1;
    let server = TestServer::start_with(data_dir, options).await;
    let mut c = server.clients().await;
    c.deploy(
        "name: wide\ntasks:\n  - name: fan\n    file: hold.sh\n    parallel: 4\n  - name: after\n    file: hold.sh\n    depends_on: [fan]\n",
        &[("hold.sh", "sleep 30\n")],
    )
    .await
    .expect("deploy");
    let run = c.start_run("wide", json!({})).await;
    c.wait_until(&run.id, WAIT, "one instance running", |r| {
        r.tasks.iter().any(|t| t.status == "running")
    })
    .await;
    let text = scrape(&server).await;
    expect(&text, "ork_queue_depth{reason=\"ready\"}", 3.0);
    expect(&text, "ork_queue_depth{reason=\"upstream\"}", 1.0);
    expect(&text, "ork_task_runs_active{status=\"running\"}", 1.0);
    expect(&text, "ork_runs_active{status=\"running\"}", 1.0);
    expect(&text, "ork_leased_runs", 1.0);
    c.runs
        .cancel_run(ork_proto::v1::CancelRunRequest { id: run.id.clone() })
        .await
        .expect("cancel");
    c.wait_run(&run.id, WAIT).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metrics_token_guards_the_scrape() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut options = test_options(data_dir.path());
    options.metrics_token =
        Some(ork_server::options::BearerToken::new("scrape-token-0123456789").expect("token"));
    let server = TestServer::start_with(data_dir, options).await;
    let url = format!("{}/metrics", server.url());
    let denied = http().get(&url).send().await.expect("request");
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let wrong = http()
        .get(&url)
        .bearer_auth("scrape-token-0123456780")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    let allowed = http()
        .get(&url)
        .bearer_auth("scrape-token-0123456789")
        .send()
        .await
        .expect("request");
    assert_eq!(allowed.status(), 200);
    assert!(
        allowed
            .text()
            .await
            .expect("body")
            .contains("ork_build_info")
    );
    // The rest of the API is not affected by the metrics token.
    let health = http()
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_metric_name_is_refused_with_the_fix() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let response = c
        .workers
        .complete_task(ork_proto::v1::CompleteTaskRequest {
            attempt: Some(ork_proto::v1::AttemptRef {
                task_run_id: "no-such-task-run".into(),
                attempt: 1,
                token: "t".into(),
            }),
            output: None,
            metrics: [("rows processed".to_owned(), 1.0)].into_iter().collect(),
        })
        .await
        .expect_err("refused");
    assert_eq!(response.code(), tonic::Code::InvalidArgument);
    assert!(
        response.message().contains("field `metrics`")
            && response.message().contains("\"rows processed\""),
        "{}",
        response.message()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_task_run_id() {
    let data = tempfile::tempdir().expect("temp dir");
    let port = ork_tests::free_port();
    let mut dev = ork_tests::DevProcess::start(data.path(), port, &["--log-format", "json"]).await;
    let mut c = ork_tests::Clients::connect(&dev.url).await;
    c.deploy(
        "name: logged\ntasks:\n  - name: one\n    file: one.sh\n",
        &[("one.sh", "echo hi\n")],
    )
    .await
    .expect("deploy");
    let run = c.start_run("logged", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    let task_run_id = task(&run, "one").id.clone();
    dev.kill();
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(data.path()).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            lines.extend(
                std::fs::read_to_string(&path)
                    .expect("log")
                    .lines()
                    .map(str::to_owned),
            );
        }
    }
    // Every log line is a JSON object (the banner aside, which is for people).
    let banner = ["ork dev listening", "web UI at", "deployed"];
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| !banner.iter().any(|b| l.starts_with(b)))
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let success = events
        .iter()
        .find(|e| e["fields"]["message"] == "attempt succeeded")
        .unwrap_or_else(|| panic!("no success event in {lines:#?}"));
    assert_eq!(
        success["span"]["task_run_id"],
        json!(task_run_id),
        "{success}"
    );
    assert_eq!(success["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_pool_handler_records_metrics_and_sees_its_traceparent() {
    use ork_worker::pool::{Context, TaskError, Worker};
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    c.deploy(
        "name: rusty\ntasks:\n  - name: count\n    executor: workers\n    handler: count\n",
        &[],
    )
    .await
    .expect("deploy");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let url = server.url();
    let worker = tokio::spawn(async move {
        Worker::new(url)
            .task(ork_worker::pool::task(
                "count",
                |ctx: Context, _input: serde_json::Value| async move {
                    ctx.metrics
                        .record("rows", 7.0)
                        .map_err(TaskError::non_retryable)?;
                    Ok::<_, TaskError>(json!({ "traceparent": ctx.traceparent }))
                },
            ))
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("worker runs");
    });
    let run = c.start_run("rusty", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    let count = task(&run, "count");
    assert_eq!(count.attempts[0].metrics.get("rows"), Some(&7.0));
    let traceparent = ork_tests::output(count)["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The attempt's span, in the trace whose id is the run id.
    assert!(
        traceparent.starts_with(&format!("00-{}-", run.id.replace('-', ""))),
        "{traceparent}"
    );
    let _ = stop.send(());
    let _ = worker.await;
    server.stop().await;
}
