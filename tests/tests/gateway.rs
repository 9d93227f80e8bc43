//! The HTTP/JSON gateway, reflection, health, OpenAPI and live logs, against a
//! real server on an ephemeral port: one scenario through gRPC, REST (a real
//! HTTP client) and the CLI gives the same data; REST errors are JSON with the
//! status of the one error table; a follow shows lines while the task runs;
//! grpcurl explores the API through reflection alone.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use ork_proto::v1;
use ork_tests::{TestServer, ork, task};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// A proto message as the gateway writes it (proto3 JSON via pbjson).
fn to_json<T: serde::Serialize>(message: &T) -> Value {
    serde_json::to_value(message).expect("message serializes")
}

/// Makes JSON comparable across writers that print `42` or `42.0` for the
/// same double.
fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_f64(v)))
                .collect(),
        ),
        other => other,
    }
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let response = http()
        .get(format!("{}{path}", server.url()))
        .send()
        .await
        .expect("GET");
    json_of(response).await
}

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let response = http()
        .post(format!("{}{path}", server.url()))
        .json(body)
        .send()
        .await
        .expect("POST");
    json_of(response).await
}

/// Status and JSON body; fails when the body is not JSON.
async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("status {status}, content-type {content_type}: body is not JSON ({e}): {text}")
    });
    assert!(
        content_type.starts_with("application/json"),
        "status {status}: content-type {content_type}"
    );
    (status, body)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const CHAIN_YAML: &str = r#"
name: chain
tasks:
  - name: extract
    file: extract.sh
    input:
      date: "{{ run.input.date }}"
  - name: report
    file: report.sh
    depends_on: [extract]
    input:
      rows: "{{ tasks.extract.output.rows }}"
"#;
const EXTRACT: &str = r#"#!/bin/bash
echo "extracting"
echo '{"rows": 42}' > "$ORK_OUTPUT"
"#;
const REPORT: &str = r#"#!/bin/bash
echo "reporting"
cat "$ORK_INPUT" > "$ORK_OUTPUT"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn one_scenario_through_rest_grpc_and_the_cli_gives_equal_results() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;

    // Deploy and start through REST only.
    let files =
        json!({ "extract.sh": base64(EXTRACT.as_bytes()), "report.sh": base64(REPORT.as_bytes()) });
    let (status, deployed) = post(
        &server,
        "/workflows",
        &json!({ "yaml": CHAIN_YAML, "source": "chain.yaml", "files": files }),
    )
    .await;
    assert_eq!(status, 200, "{deployed:#}");
    assert_eq!(deployed["created"], true);
    assert_eq!(deployed["workflow"]["name"], "chain");
    let (status, started) = post(
        &server,
        "/workflows/chain/runs",
        &json!({ "input": { "date": "2026-11-26" } }),
    )
    .await;
    assert_eq!(status, 200, "{started:#}");
    let id = started["run"]["id"].as_str().expect("run id").to_owned();
    assert!(started["run"]["status"].is_string(), "{started:#}");

    let finished = c.wait_run(&id, WAIT).await;
    assert_eq!(finished.status, "success", "{finished:#?}");
    assert_eq!(
        ork_tests::output(task(&finished, "report")),
        json!({ "rows": 42 })
    );

    // Every read: REST body == gRPC response in proto3 JSON.
    let grpc_run = c
        .runs
        .get_run(v1::GetRunRequest { id: id.clone() })
        .await
        .expect("GetRun")
        .into_inner();
    let (status, rest_run) = get(&server, &format!("/runs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(rest_run, to_json(&grpc_run));

    let grpc_tasks = c
        .runs
        .list_task_runs(v1::ListTaskRunsRequest { run_id: id.clone() })
        .await
        .expect("tasks")
        .into_inner();
    assert_eq!(
        get(&server, &format!("/runs/{id}/tasks")).await,
        (200, to_json(&grpc_tasks))
    );

    let grpc_runs = c
        .runs
        .list_runs(v1::ListRunsRequest {
            workflow: "chain".into(),
            limit: 5,
            ..Default::default()
        })
        .await
        .expect("runs")
        .into_inner();
    assert_eq!(
        get(&server, "/runs?workflow=chain&limit=5").await,
        (200, to_json(&grpc_runs))
    );
    assert_eq!(grpc_runs.runs.len(), 1);

    let grpc_workflows = c
        .workflows
        .list_workflows(v1::ListWorkflowsRequest {})
        .await
        .expect("workflows")
        .into_inner();
    assert_eq!(
        get(&server, "/workflows").await,
        (200, to_json(&grpc_workflows))
    );
    let grpc_workflow = c
        .workflows
        .get_workflow(v1::GetWorkflowRequest {
            name: "chain".into(),
            ..Default::default()
        })
        .await
        .expect("workflow")
        .into_inner();
    assert_eq!(
        get(&server, "/workflows/chain").await,
        (200, to_json(&grpc_workflow))
    );

    let grpc_logs = c
        .runs
        .get_task_logs(v1::GetTaskLogsRequest {
            run_id: id.clone(),
            task: "extract".into(),
            cursor: String::new(),
            limit: 0,
        })
        .await
        .expect("logs")
        .into_inner();
    let (status, rest_logs) = get(&server, &format!("/runs/{id}/tasks/extract/logs")).await;
    assert_eq!(status, 200);
    assert_eq!(rest_logs, to_json(&grpc_logs));
    assert!(
        grpc_logs.lines.iter().any(|l| l.line == "extracting"),
        "{grpc_logs:#?}"
    );

    // The CLI's JSON is the same run.
    let cli = ork(&server.url(), &["run", "status", &id, "--output", "json"]);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli_run: Value = serde_json::from_slice(&cli.stdout).expect("CLI prints JSON");
    assert_eq!(
        numbers_as_f64(cli_run),
        numbers_as_f64(rest_run["run"].clone())
    );

    // Retry and cancel answer with the run, like their gRPC methods.
    let (status, retried) = post(
        &server,
        &format!("/runs/{id}/retry"),
        &json!({ "task": "report" }),
    )
    .await;
    assert_eq!(status, 200, "{retried:#}");
    assert_eq!(retried["run"]["id"], id.as_str());
    let again = c.wait_run(&id, WAIT).await;
    assert_eq!(again.status, "success", "{again:#?}");
    assert_eq!(task(&again, "report").attempt, 2, "{again:#?}");

    let response = http()
        .delete(format!("{}/workflows/chain", server.url()))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(json_of(response).await, (200, json!({})));
    let err = c
        .workflows
        .get_workflow(v1::GetWorkflowRequest {
            name: "chain".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str, field: Option<&str>) {
    assert_eq!(status, want_status, "{body:#}");
    assert_eq!(body["code"], want_code, "{body:#}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
    assert!(body["details"].is_array(), "{body:#}");
    if let Some(field) = field {
        assert_eq!(body["details"][0]["field"], field, "{body:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_errors_are_json_with_the_status_of_the_error_table() {
    let server = TestServer::start().await;
    let url = server.url();
    let client = http();

    let (s, b) = get(&server, "/runs/no-such-run").await;
    assert_error(s, &b, 404, "NOT_FOUND", None);
    assert!(
        b["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no-such-run"),
        "{b:#}"
    );

    let (s, b) = get(&server, "/workflows/nope").await;
    assert_error(s, &b, 404, "NOT_FOUND", None);

    // Not JSON at all.
    let response = client
        .post(format!("{url}/workflows/nope/runs"))
        .header("content-type", "application/json")
        .body(r#"{"input": {"date": "#)
        .send()
        .await
        .expect("POST");
    let (s, b) = json_of(response).await;
    assert_error(s, &b, 400, "INVALID_ARGUMENT", None);
    assert!(
        b["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON"),
        "{b:#}"
    );

    // JSON, but not an object.
    let (s, b) = post(&server, "/workflows/nope/runs", &json!([1, 2])).await;
    assert_error(s, &b, 400, "INVALID_ARGUMENT", None);

    // Wrong types, each naming its field.
    let (s, b) = post(&server, "/runs/x/retry", &json!({ "task": 5 })).await;
    assert_error(s, &b, 400, "INVALID_ARGUMENT", Some("task"));
    let (s, b) = get(&server, "/runs?limit=many").await;
    assert_error(s, &b, 400, "INVALID_ARGUMENT", Some("limit"));
    let (s, b) = post(
        &server,
        "/workflows",
        &json!({ "yaml": "name: x", "files": { "a.sh": "%%% not base64" } }),
    )
    .await;
    assert_error(s, &b, 400, "INVALID_ARGUMENT", Some("files.a.sh"));
    let (s, b) = post(
        &server,
        "/workflows/nope/runs",
        &json!({ "input": {}, "colour": "red" }),
    )
    .await;
    assert_error(s, &b, 400, "INVALID_ARGUMENT", Some("colour"));
    let (s, b) = get(&server, "/runs/x/tasks/t/logs?follow=maybe").await;
    assert_error(s, &b, 400, "INVALID_ARGUMENT", Some("follow"));

    // The service's own validation comes through with its field.
    let (s, b) = post(&server, "/workflows", &json!({ "yaml": "name: [" })).await;
    assert_error(s, &b, 400, "INVALID_ARGUMENT", None);

    // Unknown routes and methods.
    let (s, b) = get(&server, "/no/such/route").await;
    assert_error(s, &b, 404, "NOT_FOUND", None);
    let response = client
        .delete(format!("{url}/runs"))
        .send()
        .await
        .expect("DELETE");
    let (s, b) = json_of(response).await;
    assert_error(s, &b, 405, "UNIMPLEMENTED", None);

    // Oversized body: rejected before it is parsed.
    let big = vec![b' '; ork_server::ClientLimits::default().max_body_bytes + 1];
    let response = client
        .post(format!("{url}/workflows"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("POST of an oversized body gets an answer");
    let (s, b) = json_of(response).await;
    assert_error(s, &b, 413, "OUT_OF_RANGE", None);

    // And the server still serves.
    let (s, b) = get(&server, "/healthz").await;
    assert_eq!((s, b), (200, json!({ "status": "SERVING" })));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_served_openapi_document_is_the_committed_one() {
    let server = TestServer::start().await;
    let (status, served) = get(&server, "/openapi.json").await;
    assert_eq!(status, 200);
    let committed_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(ork_server::api::openapi::COMMITTED_PATH);
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(&committed_path).expect("committed openapi.json"),
    )
    .expect("committed openapi.json is JSON");
    assert_eq!(served, committed, "run scripts/openapi.sh");
    assert_eq!(served["openapi"], "3.0.3");
    for path in [
        "/workflows",
        "/workflows/{name}",
        "/workflows/{name}/runs",
        "/runs",
        "/runs/{id}",
        "/runs/{id}/cancel",
        "/runs/{id}/retry",
        "/runs/{id}/tasks",
        "/runs/{id}/tasks/{name}/logs",
    ] {
        assert!(
            served["paths"].get(path).is_some(),
            "{path} is not documented"
        );
    }
}

const SLOW_YAML: &str = r#"
name: slow
tasks:
  - name: talk
    file: talk.sh
"#;
/// Prints a line, then waits long enough that a follower must see it before
/// the task ends.
const TALK: &str = r#"#!/bin/bash
echo "first"
sleep 4
echo "second"
"#;

/// Reads Server-Sent Events into `(event, data)` pairs.
struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            stream: response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Option<(String, Value)> {
        self.next_with_id()
            .await
            .map(|(event, _, data)| (event, data))
    }

    /// The next event as `(event, id, data)`; `id` is `None` when the event
    /// carries none.
    async fn next_with_id(&mut self) -> Option<(String, Option<String>, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = "message".to_owned();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    } else if let Some(i) = line.strip_prefix("id:") {
                        id = Some(i.trim().to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((
                    event,
                    id,
                    serde_json::from_str(&data).expect("event data is JSON"),
                ));
            }
            let chunk = self.stream.next().await?.expect("stream chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follow_shows_lines_as_they_are_written_over_rest_and_grpc() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    c.deploy(SLOW_YAML, &[("talk.sh", TALK)])
        .await
        .expect("deploy");
    let run = c.start_run("slow", json!({})).await;

    // gRPC: WatchRun and FollowTaskLogs opened before the task starts.
    let mut watch = c
        .runs
        .watch_run(v1::WatchRunRequest { id: run.id.clone() })
        .await
        .expect("WatchRun")
        .into_inner();
    let mut grpc_follow = c
        .runs
        .follow_task_logs(v1::FollowTaskLogsRequest {
            run_id: run.id.clone(),
            task: "talk".into(),
            cursor: String::new(),
        })
        .await
        .expect("FollowTaskLogs")
        .into_inner();
    // REST: the same follow as Server-Sent Events.
    let response = http()
        .get(format!(
            "{}/runs/{}/tasks/talk/logs?follow=true",
            server.url(),
            run.id
        ))
        .send()
        .await
        .expect("follow");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream"),
        "{:?}",
        response.headers()
    );
    let mut sse = SseReader::new(response);

    let started = Instant::now();
    let (event, data) = tokio::time::timeout(WAIT, sse.next())
        .await
        .expect("a first event")
        .expect("an event");
    assert_eq!(event, "lines", "{data:#}");
    assert_eq!(data["lines"][0]["line"], "first", "{data:#}");
    // The first line arrived while the task still runs (it sleeps 4 s before
    // its second line), so it was pushed, not read after the end.
    let now = c.get_run(&run.id).await;
    assert_eq!(
        task(&now, "talk").status,
        "running",
        "the first line came only after the task ended: {now:#?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    let first = tokio::time::timeout(WAIT, grpc_follow.message())
        .await
        .expect("gRPC follow")
        .expect("ok")
        .expect("a message");
    assert_eq!(first.lines[0].line, "first");

    // Both streams go on to the second line and then end on their own.
    let mut rest_lines = vec!["first".to_owned()];
    loop {
        match tokio::time::timeout(WAIT, sse.next())
            .await
            .expect("SSE ends in time")
        {
            Some((event, data)) if event == "lines" => {
                rest_lines.extend(
                    data["lines"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|l| l["line"].as_str().unwrap_or_default().to_owned()),
                );
            }
            Some((event, _)) if event == "end" => break,
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(rest_lines, ["first", "second"]);
    let mut grpc_lines: Vec<String> = first.lines.iter().map(|l| l.line.clone()).collect();
    while let Some(message) = tokio::time::timeout(WAIT, grpc_follow.message())
        .await
        .expect("gRPC follow ends in time")
        .expect("ok")
    {
        grpc_lines.extend(message.lines.into_iter().map(|l| l.line));
    }
    assert_eq!(grpc_lines, ["first", "second"]);

    // WatchRun saw the run go through running to success, then ended: the
    // first and last messages whole, those in between only what changed.
    let mut statuses = Vec::new();
    let mut whole = Vec::new();
    let mut followed = None;
    while let Some(message) = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("watch ends in time")
        .expect("ok")
    {
        whole.push(!message.changes_only);
        let run = ork_proto::watch::apply(followed.take(), message);
        statuses.push(format!("{}/{}", run.status, task(&run, "talk").status));
        followed = Some(run);
    }
    assert_eq!(whole.first(), Some(&true), "{whole:?}");
    assert_eq!(whole.last(), Some(&true), "{whole:?}");
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("success/success"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|s| s.ends_with("/running")),
        "{statuses:?}"
    );
    let mut deduped = statuses.clone();
    deduped.dedup();
    assert_eq!(deduped, statuses, "a watch only sends changes");

    // A follow of an unknown run is a plain 404, not a stream.
    let (s, b) = get(&server, "/runs/nope/tasks/talk/logs?follow=true").await;
    assert_error(s, &b, 404, "NOT_FOUND", None);
    let err = c
        .runs
        .follow_task_logs(v1::FollowTaskLogsRequest {
            run_id: "nope".into(),
            task: String::new(),
            cursor: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// Every event of a finished follow: `(event, id, data)`.
async fn follow_events(
    server: &TestServer,
    path: &str,
    last_event_id: Option<&str>,
) -> Vec<(String, Option<String>, Value)> {
    let mut request = http().get(format!("{}{path}", server.url()));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.expect("follow");
    assert_eq!(response.status().as_u16(), 200);
    let mut sse = SseReader::new(response);
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(WAIT, sse.next_with_id())
        .await
        .expect("the follow ends in time")
    {
        let end = event.0 == "end";
        events.push(event);
        if end {
            break;
        }
    }
    events
}

fn lines_of(events: &[(String, Option<String>, Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(event, _, _)| event == "lines")
        .flat_map(|(_, _, data)| data["lines"].as_array().cloned().unwrap_or_default())
        .map(|l| l["line"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every event of a log follow carries the cursor after it as its `id`, and
/// a client that reconnects with `Last-Event-ID` (as a browser's EventSource
/// does) gets only the lines after it, never the whole log again.
#[tokio::test(flavor = "multi_thread")]
async fn log_events_carry_ids_and_a_reconnect_with_last_event_id_resumes() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml =
        "name: lines\ntasks:\n  - name: t\n    command: [bash, -c, \"echo a; echo b; echo c\"]\n";
    c.deploy(yaml, &[]).await.expect("deploy");
    let run = c.start_run("lines", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    let path = format!("/runs/{}/tasks/t/logs?follow=true", run.id);

    let all = follow_events(&server, &path, None).await;
    assert_eq!(lines_of(&all), ["a", "b", "c"]);
    for (event, id, _) in &all {
        let id = id
            .as_deref()
            .unwrap_or_else(|| panic!("`{event}` event without an id"));
        assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
    }
    let (last_event, last_id, _) = all.last().expect("events");
    assert_eq!(last_event, "end");
    let lines_id = all
        .iter()
        .rev()
        .find(|(e, _, _)| e == "lines")
        .and_then(|(_, id, _)| id.clone());
    assert_eq!(
        last_id, &lines_id,
        "`end` repeats the cursor of the last lines"
    );

    // Where the first line ends, from the paged API: resuming there gives
    // the rest.
    let page = c
        .runs
        .get_task_logs(v1::GetTaskLogsRequest {
            run_id: run.id.clone(),
            task: "t".into(),
            cursor: String::new(),
            limit: 1,
        })
        .await
        .expect("page")
        .into_inner();
    let after_a = page.next_cursor;
    let rest = follow_events(&server, &path, Some(&after_a)).await;
    assert_eq!(lines_of(&rest), ["b", "c"]);
    // The header is newer than a cursor in the URL, so it wins.
    let rest = follow_events(&server, &format!("{path}&cursor=0"), Some(&after_a)).await;
    assert_eq!(lines_of(&rest), ["b", "c"]);
    // Reconnecting after the last event replays nothing.
    let none = follow_events(&server, &path, last_id.as_deref()).await;
    assert_eq!(lines_of(&none), Vec::<String>::new());
    assert_eq!(none.len(), 1, "only `end`: {none:?}");

    let response = http()
        .get(format!("{}{path}", server.url()))
        .header("Last-Event-ID", "not-a-cursor")
        .send()
        .await
        .expect("follow");
    let (status, body) = json_of(response).await;
    assert_error(
        status,
        &body,
        400,
        "INVALID_ARGUMENT",
        Some("Last-Event-ID"),
    );
}

/// grpcurl from `.tools/bin` (installed by `scripts/grpcurl.sh`), else from
/// `PATH`. In CI its absence fails the test; elsewhere it skips loudly.
fn grpcurl() -> Option<PathBuf> {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/grpcurl");
    if local.is_file() {
        return Some(local);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("grpcurl"))
        .find(|p| p.is_file());
    if on_path.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "grpcurl is missing in CI: scripts/test.sh installs it with scripts/grpcurl.sh"
        );
        eprintln!(
            "SKIPPED: grpcurl is not installed; run scripts/grpcurl.sh to install it into .tools/bin"
        );
    }
    on_path
}

fn run_grpcurl(bin: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().expect("run grpcurl");
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_describes_and_calls_through_reflection() {
    let Some(bin) = grpcurl() else { return };
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    c.deploy(
        CHAIN_YAML,
        &[("extract.sh", EXTRACT), ("report.sh", REPORT)],
    )
    .await
    .expect("deploy");
    let addr = server.addr.to_string();

    let list = run_grpcurl(&bin, &["-plaintext", &addr, "list"]);
    for service in [
        "ork.v1.WorkflowService",
        "ork.v1.RunService",
        "ork.v1.WorkerService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            list.lines().any(|l| l.trim() == service),
            "{service} not listed:\n{list}"
        );
    }
    let described = run_grpcurl(
        &bin,
        &["-plaintext", &addr, "describe", "ork.v1.RunService"],
    );
    assert!(described.contains("rpc FollowTaskLogs"), "{described}");
    assert!(
        described.contains("stream .ork.v1.FollowTaskLogsResponse"),
        "{described}"
    );
    let message = run_grpcurl(&bin, &["-plaintext", &addr, "describe", "ork.v1.Run"]);
    assert!(message.contains("workflow_version"), "{message}");

    let listed = run_grpcurl(
        &bin,
        &[
            "-plaintext",
            "-d",
            "{}",
            &addr,
            "ork.v1.WorkflowService/ListWorkflows",
        ],
    );
    let listed: Value = serde_json::from_str(&listed).expect("grpcurl prints JSON");
    assert_eq!(listed["workflows"][0]["name"], "chain", "{listed:#}");

    let health = run_grpcurl(&bin, &["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
}

/// grpcurl asks v1 first; older clients (and `buf curl` fallbacks) use v1alpha.
#[tokio::test(flavor = "multi_thread")]
async fn reflection_v1alpha_lists_the_services_too() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let _ = server.clients().await;
    let channel = tonic::transport::Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let response = responses.message().await.expect("ok").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "ork.v1.RunService",
        "ork.v1.WorkflowService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
}

/// Open streams must not hold a stopping server: the shutdown ends them.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_stops_promptly_while_a_follow_and_a_watch_are_open() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = "name: long\ntasks:\n  - name: wait\n    file: wait.sh\n";
    c.deploy(
        yaml,
        &[("wait.sh", "#!/bin/bash\necho waiting\nsleep 30\n")],
    )
    .await
    .expect("deploy");
    let run = c.start_run("long", json!({})).await;
    let mut watch = c
        .runs
        .watch_run(v1::WatchRunRequest { id: run.id.clone() })
        .await
        .expect("watch")
        .into_inner();
    let response = http()
        .get(format!(
            "{}/runs/{}/tasks/wait/logs?follow=true",
            server.url(),
            run.id
        ))
        .send()
        .await
        .expect("follow");
    let mut sse = SseReader::new(response);
    let (event, _) = tokio::time::timeout(WAIT, sse.next())
        .await
        .expect("first event")
        .expect("event");
    assert_eq!(event, "lines");
    assert!(watch.message().await.expect("ok").is_some());

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("the server stops while streams are open");
    assert!(started.elapsed() < Duration::from_secs(20));
    // Both streams end rather than hang.
    let rest_end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some((event, _)) = sse.next().await {
            if event == "end" {
                break;
            }
        }
    })
    .await;
    assert!(rest_end.is_ok(), "the SSE stream did not end");
    let grpc_end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = watch.message().await {}
    })
    .await;
    assert!(grpc_end.is_ok(), "the watch did not end");
}
