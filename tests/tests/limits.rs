//! Every limit on what a client sends, against a real server whose options
//! set it low: accepted exactly at the limit, refused with a clear error
//! (naming the option) just past it. Also `{from_env: VAR}`, which reads
//! only the server variables it is allowed to, masked like secrets.

use std::time::Duration;

use ork_proto::v1;
use ork_server::ServerOptions;
use ork_tests::{TestServer, output, secure_options, task, test_options};
use prost::Message as _;
use serde_json::{Value, json};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(90);

async fn server_with(change: impl FnOnce(&mut ServerOptions)) -> TestServer {
    let dir = tempfile::tempdir().expect("dir");
    let mut options = test_options(dir.path());
    change(&mut options);
    TestServer::start_with(dir, options).await
}

/// A `ListRunsRequest` whose encoding is exactly `size` bytes.
fn list_runs_of_size(size: usize) -> v1::ListRunsRequest {
    let mut request = v1::ListRunsRequest {
        workflow: String::new(),
        limit: 0,
        ..Default::default()
    };
    let mut n = size.saturating_sub(4);
    loop {
        request.workflow = "w".repeat(n);
        match request.encoded_len().cmp(&size) {
            std::cmp::Ordering::Equal => return request,
            std::cmp::Ordering::Less => n += 1,
            std::cmp::Ordering::Greater => n -= 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_messages_and_rest_bodies() {
    const MAX: usize = 16 * 1024;
    let server = server_with(|o| {
        o.limits.max_message_bytes = MAX;
        o.limits.max_body_bytes = MAX;
    })
    .await;
    let mut c = server.clients().await;
    let at = c.runs.list_runs(list_runs_of_size(MAX)).await;
    assert!(at.is_ok(), "{at:?}");
    let past = c
        .runs
        .list_runs(list_runs_of_size(MAX + 1))
        .await
        .expect_err("past the limit");
    assert_eq!(past.code(), Code::OutOfRange, "{past:?}");

    // REST: a JSON body of exactly MAX bytes reaches the method (which finds
    // no such workflow); one byte more is refused before it is read whole.
    let http = reqwest::Client::new();
    let url = format!("{}/workflows/none/runs", server.url());
    let body = |size: usize| {
        let mut text = String::from("{\"input\": {}}");
        text.push_str(&" ".repeat(size - text.len()));
        text
    };
    let at = http.post(&url).body(body(MAX)).send().await.expect("POST");
    assert_eq!(at.status().as_u16(), 404);
    let past = http
        .post(&url)
        .body(body(MAX + 1))
        .send()
        .await
        .expect("POST");
    assert_eq!(past.status().as_u16(), 413);
    let error: Value = past.json().await.expect("json");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-body-bytes"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_yaml_size_depth_aliases_and_task_count() {
    let server = server_with(|o| {
        o.limits.yaml.max_bytes = 400;
        o.limits.yaml.max_depth = 8;
        o.limits.yaml.max_nodes = 57;
        o.limits.yaml.max_tasks = 2;
    })
    .await;
    let mut c = server.clients().await;
    let refused = |result: Result<v1::Workflow, tonic::Status>, option: &str| {
        let status = result.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(option), "{}", status.message());
    };

    let base = "name: sized\ntasks:\n  - {name: a, file: a.sh}\n";
    let padded = |size: usize| format!("{base}#{}\n", "x".repeat(size - base.len() - 2));
    assert!(c.deploy(&padded(400), &[("a.sh", "true")]).await.is_ok());
    refused(
        c.deploy(&padded(401), &[("a.sh", "true")]).await,
        "--max-yaml-bytes",
    );

    // The task's input sits 3 levels deep.
    let nested = |depth: usize| {
        format!(
            "name: deep\ntasks:\n  - name: a\n    file: a.sh\n    input: {{x: {}1{}}}\n",
            "[".repeat(depth - 4),
            "]".repeat(depth - 4)
        )
    };
    assert!(c.deploy(&nested(8), &[("a.sh", "true")]).await.is_ok());
    refused(
        c.deploy(&nested(9), &[("a.sh", "true")]).await,
        "--max-yaml-depth",
    );

    // 21 values with the list, and 6 more for each use of the 5-item alias:
    // 6 uses make exactly 57.
    let aliased = |uses: usize| {
        format!(
            "name: alias\ntasks:\n  - name: a\n    file: a.sh\n    input: {{l: &l [1, 2, 3, 4, 5], m: [{}]}}\n",
            vec!["*l"; uses].join(", ")
        )
    };
    assert!(c.deploy(&aliased(6), &[("a.sh", "true")]).await.is_ok());
    refused(
        c.deploy(&aliased(7), &[("a.sh", "true")]).await,
        "--max-yaml-nodes",
    );

    let tasks = |n: usize| {
        let mut yaml = String::from("name: many\ntasks:\n");
        for i in 0..n {
            yaml.push_str(&format!("  - {{name: t{i}, file: a.sh}}\n"));
        }
        yaml
    };
    assert!(c.deploy(&tasks(2), &[("a.sh", "true")]).await.is_ok());
    refused(
        c.deploy(&tasks(3), &[("a.sh", "true")]).await,
        "--max-tasks",
    );
}

/// A JSON object of exactly `size` bytes (compact), one string field.
fn object_of_size(size: usize) -> Value {
    let empty = serde_json::to_vec(&json!({"s": ""})).expect("json").len();
    json!({"s": "x".repeat(size - empty)})
}

#[tokio::test(flavor = "multi_thread")]
async fn run_inputs_and_task_outputs() {
    let server = server_with(|o| {
        o.limits.max_input_bytes = 1000;
        o.limits.max_output_bytes = 2000;
    })
    .await;
    let mut c = server.clients().await;
    // The task outputs a JSON object of exactly the size its input asks for.
    let yaml = "name: sizes\ntasks:\n  - name: out\n    file: out.py\n    input: { size: \"{{ run.input.size }}\" }\n";
    let script = "import json, os\nsize = json.load(open(os.environ['ORK_INPUT']))['size']\nempty = len(json.dumps({'s': ''}, separators=(',', ':')))\njson.dump({'s': 'x' * (size - empty)}, open(os.environ['ORK_OUTPUT'], 'w'), separators=(',', ':'))\n";
    c.deploy(yaml, &[("out.py", script)]).await.expect("deploy");

    let mut at = object_of_size(1000);
    at["size"] = json!(2000);
    // Keep the input exactly 1000 bytes with the extra field.
    let extra = serde_json::to_vec(&at).expect("json").len() - 1000;
    at["s"] = json!("x".repeat(at["s"].as_str().expect("s").len() - extra));
    assert_eq!(serde_json::to_vec(&at).expect("json").len(), 1000);
    let run = c.start_run("sizes", at.clone()).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    assert_eq!(
        serde_json::to_vec(&output(task(&run, "out")))
            .expect("json")
            .len(),
        2000,
        "an output of exactly the limit is stored"
    );

    let mut past = at.clone();
    past["s"] = json!(format!("{}x", past["s"].as_str().expect("s")));
    let refused = c
        .runs
        .start_run(v1::StartRunRequest {
            workflow: "sizes".into(),
            input: Some(ork_proto::json::to_proto(&past)),
            ..Default::default()
        })
        .await
        .expect_err("input past the limit");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("--max-input-bytes"),
        "{}",
        refused.message()
    );

    let run = c.start_run("sizes", json!({"size": 2001})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed");
    let out = task(&run, "out");
    assert!(
        out.error.contains("--max-output-bytes") && out.error.contains("2001 bytes"),
        "{}",
        out.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_and_log_volume_per_attempt() {
    let server = server_with(|o| {
        o.limits.max_log_line_bytes = 32;
        o.limits.max_log_bytes_per_attempt = 100;
    })
    .await;
    let mut c = server.clients().await;
    let yaml = "name: logs\ntasks:\n  - name: lines\n    file: lines.sh\n  - name: volume\n    file: volume.sh\n";
    // Lines of exactly 32 and 33 bytes; then 10 lines of 10 bytes (the
    // budget exactly) and one more byte.
    let lines = format!(
        "#!/bin/sh\necho {}\necho {}\n",
        "a".repeat(32),
        "b".repeat(33)
    );
    let volume =
        "#!/bin/sh\nfor i in 0 1 2 3 4 5 6 7 8 9; do echo \"line-$i....\"; done\necho x\necho y\n";
    c.deploy(yaml, &[("lines.sh", &lines), ("volume.sh", volume)])
        .await
        .expect("deploy");
    let run = c.start_run("logs", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");

    let got: Vec<String> = c
        .logs(&run.id, "lines")
        .await
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(
        got,
        [
            "a".repeat(32),
            format!("{} [line truncated]", "b".repeat(32))
        ]
    );
    let got: Vec<String> = c
        .logs(&run.id, "volume")
        .await
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(got.len(), 11, "{got:#?}");
    assert!(got[..10].iter().all(|l| l.len() == 10), "{got:#?}");
    assert!(
        got[10].contains("log limit of 100 bytes")
            && got[10].contains("--max-log-bytes-per-attempt"),
        "{got:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_out_items() {
    let server = server_with(|o| o.max_fan_out = 3).await;
    let mut c = server.clients().await;
    let yaml = "name: fan\ntasks:\n  - name: list\n    file: list.py\n    input: { n: \"{{ run.input.n }}\" }\n  - name: each\n    file: each.sh\n    depends_on: [list]\n    parallel: { for_each: list.items }\n";
    let list = "import json, os\nn = json.load(open(os.environ['ORK_INPUT']))['n']\njson.dump({'items': list(range(n))}, open(os.environ['ORK_OUTPUT'], 'w'))\n";
    c.deploy(yaml, &[("list.py", list), ("each.sh", "#!/bin/sh\ntrue\n")])
        .await
        .expect("deploy");
    let run = c.start_run("fan", json!({"n": 3})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success");
    assert_eq!(run.tasks.iter().filter(|t| t.name == "each").count(), 3);
    let run = c.start_run("fan", json!({"n": 4})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed");
    let each = task(&run, "each");
    assert!(
        each.error.contains("4 instances") && each.error.contains("--max-fan-out"),
        "{}",
        each.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_run_rate_per_token() {
    let dir = tempfile::tempdir().expect("dir");
    let mut options = secure_options(dir.path());
    options.limits.start_run_rate = 1;
    options.limits.start_run_burst = 2;
    let server = TestServer::start_with(dir, options).await;
    let mut admin = server.clients_with_token(&server.admin_token()).await;
    admin
        .deploy(
            "name: quick\ntasks:\n  - {name: a, file: a.sh}\n",
            &[("a.sh", "true")],
        )
        .await
        .expect("deploy");
    let a = admin.create_token("a", "operator", 0).await;
    let b = admin.create_token("b", "operator", 0).await;
    let start = |token: String| {
        let url = server.url();
        async move {
            let mut c = ork_tests::Clients::connect_with(
                &url,
                &ork_worker::ConnectOptions::default().with_token(token),
            )
            .await;
            c.runs
                .start_run(v1::StartRunRequest {
                    workflow: "quick".into(),
                    input: None,
                    ..Default::default()
                })
                .await
        }
    };
    // The burst is admitted at once; at one run per second, ten starts in a
    // row cannot all fit, whatever the machine's speed.
    assert!(start(a.clone()).await.is_ok());
    assert!(start(a.clone()).await.is_ok());
    let mut refused = None;
    for _ in 0..10 {
        if let Err(status) = start(a.clone()).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("past the rate");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--start-run-rate"),
        "{}",
        refused.message()
    );
    assert!(start(b.clone()).await.is_ok(), "limits are per token");

    // Over REST: 429 with Retry-After.
    let http = reqwest::Client::new();
    let mut saw = false;
    for _ in 0..10 {
        let response = http
            .post(format!("{}/workflows/quick/runs", server.url()))
            .bearer_auth(&b)
            .body("{}")
            .send()
            .await
            .expect("POST");
        if response.status().as_u16() == 429 {
            assert!(response.headers().get("retry-after").is_some());
            saw = true;
            break;
        }
    }
    assert!(saw, "REST starts count against the same token");
}

#[tokio::test(flavor = "multi_thread")]
async fn from_env_reads_only_allowed_variables_masked_like_secrets() {
    // Not allowed (the default): refused at deploy, naming task, field and option.
    let server = server_with(|_| {}).await;
    let mut c = server.clients().await;
    let leak = "name: leak\ntasks:\n  - name: steal\n    file: a.sh\n    env:\n      DB: {from_env: ORK_STATE_URL}\n";
    let refused = c
        .deploy(leak, &[("a.sh", "true")])
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "test.yaml: task `steal`, field `env.DB`: `from_env: ORK_STATE_URL` reads a server variable this server does not allow; start the server with `--allow-env ORK_STATE_URL` (or a pattern such as `ORK*`) to allow it"
    );
    drop(server);

    // Allowed: the task gets the value, and every log line and output
    // shows it masked.
    let value = std::env::var("PATH").expect("PATH is set");
    let dir = tempfile::tempdir().expect("dir");
    let mut options = test_options(dir.path());
    options.allow_env = vec!["PA*".to_owned()];
    let server = TestServer::start_with(dir, options).await;
    let mut c = server.clients().await;
    let yaml = "name: show\ntasks:\n  - name: show\n    file: show.sh\n    env:\n      P: {from_env: PATH}\n";
    let show = "#!/bin/sh\necho \"path is $P\"\nprintf '{\"p\":\"%s\"}' \"$P\" > \"$ORK_OUTPUT\"\n";
    c.deploy(yaml, &[("show.sh", show)]).await.expect("allowed");
    let run = c.start_run("show", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    let lines: Vec<String> = c
        .logs(&run.id, "show")
        .await
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(lines, ["path is ********"]);
    assert_eq!(output(task(&run, "show")), json!({"p": "********"}));
    assert!(!format!("{run:?}").contains(&value));

    // The allow-list shrank after deploy: the dispatch refuses, once, clearly.
    let dir = server.stop().await;
    let options = test_options(dir.path());
    let server = TestServer::start_with(dir, options).await;
    let mut c = server.clients().await;
    let run = c.start_run("show", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed");
    let show = task(&run, "show");
    assert_eq!(show.attempt, 1, "not retried");
    assert!(
        show.error.contains("task `show`, field `env.P`")
            && show.error.contains("--allow-env PATH"),
        "{}",
        show.error
    );
}
