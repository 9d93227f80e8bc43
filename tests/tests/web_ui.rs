//! What the web UI stands on, against a real server on an ephemeral port:
//! the app is served under `/ui/` with a strict Content-Security-Policy,
//! browsers (and only browsers) are sent there from `/`, a run can be watched
//! over REST as Server-Sent Events, and any deployed version of a workflow
//! stays readable (so a past run's DAG can be drawn). The pages themselves
//! are tested in a real browser by `scripts/test-ui.sh`.

use std::time::Duration;

use ork_proto::v1;
use ork_tests::TestServer;
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_is_served_under_ui_and_only_browsers_are_redirected_there() {
    let server = TestServer::start().await;
    let url = server.url();

    let browser = http()
        .get(format!("{url}/"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .expect("GET /");
    assert_eq!(browser.status().as_u16(), 303);
    assert_eq!(browser.headers()["location"], "/ui/");

    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut request = http().get(format!("{url}/"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.expect("GET /");
        assert_eq!(response.status().as_u16(), 404, "accept {accept:?}");
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["code"], "NOT_FOUND");
    }
    // POST / from a form-submitting browser is not a navigation to redirect.
    let post = http()
        .post(format!("{url}/"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .expect("POST /");
    assert_ne!(post.status().as_u16(), 303);

    for path in ["/ui/", "/ui/runs/some-run", "/ui/workflows"] {
        let page = http()
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("page");
        assert_eq!(page.status().as_u16(), 200, "{path}");
        let headers = page.headers().clone();
        let policy = headers["content-security-policy"].to_str().expect("ascii");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let html = page.text().await.expect("html");
        assert!(html.contains("/ui/assets/app.js"), "{html}");
        assert!(!html.contains("<script>"), "no inline script: {html}");
    }
    let script = http()
        .get(format!("{url}/ui/assets/app.js"))
        .send()
        .await
        .expect("script");
    assert_eq!(script.status().as_u16(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/javascript")
    );
    let missing = http()
        .get(format!("{url}/ui/assets/missing.js"))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status().as_u16(), 404);
    // The REST API is untouched by the UI's routes.
    let workflows = http()
        .get(format!("{url}/workflows"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .expect("workflows");
    assert_eq!(workflows.status().as_u16(), 200);
    let body: Value = workflows.json().await.expect("JSON");
    assert_eq!(body, json!({}));
}

const TWO_STEPS: &str = r#"
name: two-steps
tasks:
  - name: first
    file: step.sh
  - name: second
    file: step.sh
    depends_on: [first]
"#;
const STEP: &str = "#!/bin/bash\nsleep 0.3\necho '{\"ok\": true}' > \"$ORK_OUTPUT\"\n";

/// `(event, data)` pairs of a finished Server-Sent Events body.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            (!data.is_empty()).then(|| (event, serde_json::from_str(&data).expect("JSON data")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_watched_over_rest_until_it_ends() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    c.deploy(TWO_STEPS, &[("step.sh", STEP)])
        .await
        .expect("deploy");
    let run = c.start_run("two-steps", json!({})).await;

    let response = http()
        .get(format!("{}/runs/{}/watch", server.url(), run.id))
        .send()
        .await
        .expect("watch");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    // The stream ends by itself after the message that shows the run ended.
    let body = tokio::time::timeout(Duration::from_secs(60), response.text())
        .await
        .expect("the watch ends when the run does")
        .expect("body");
    let events = events(&body);
    let (last, _) = events.last().expect("events");
    assert_eq!(last, "end", "{body}");
    let runs: Vec<&Value> = events
        .iter()
        .filter(|(e, _)| e == "run")
        .map(|(_, d)| &d["run"])
        .collect();
    assert!(runs.len() >= 2, "{body}");
    // The first message is the whole run, with every task, and so is the
    // last; those in between carry only the task runs that changed.
    assert_eq!(runs[0]["id"], run.id.as_str());
    assert_eq!(runs[0]["tasks"].as_array().map(Vec::len), Some(2), "{body}");
    let changes_only: Vec<bool> = events
        .iter()
        .filter(|(e, _)| e == "run")
        .map(|(_, d)| d["changes_only"].as_bool().unwrap_or(false))
        .collect();
    assert!(
        !changes_only[0] && !changes_only[changes_only.len() - 1],
        "{body}"
    );
    let mut known = std::collections::HashMap::new();
    for (message, delta) in runs.iter().zip(&changes_only) {
        for task in message["tasks"].as_array().into_iter().flatten() {
            let before = known.insert(task["id"].to_string(), task.clone());
            if *delta {
                assert_ne!(
                    before.as_ref(),
                    Some(task),
                    "a change message repeats an unchanged task: {body}"
                );
            }
        }
    }
    let final_run = runs.last().expect("a run");
    assert_eq!(final_run["status"], "success", "{body}");
    let seen: Vec<String> = runs
        .iter()
        .map(|r| {
            r["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("{}:{}", t["name"], t["status"]))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert!(
        seen.iter().any(|s| s.contains("\"second\":\"running\"")),
        "the watch showed the chain advance: {seen:#?}"
    );

    // Unknown runs are a JSON 404, not an empty stream.
    let missing = http()
        .get(format!("{}/runs/nope/watch", server.url()))
        .send()
        .await
        .expect("watch");
    assert_eq!(missing.status().as_u16(), 404);
    let body: Value = missing.json().await.expect("JSON error");
    assert_eq!(body["code"], "NOT_FOUND");
}

const VERSIONED: &str = "name: versioned\ntasks:\n  - name: one\n    file: step.sh\n";
const VERSIONED_2: &str = "name: versioned\ntasks:\n  - name: one\n    file: step.sh\n  - name: two\n    file: step.sh\n    depends_on: [one]\n";

#[tokio::test(flavor = "multi_thread")]
async fn any_deployed_version_stays_readable_over_grpc_and_rest() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let first = c
        .deploy(VERSIONED, &[("step.sh", STEP)])
        .await
        .expect("deploy");
    let second = c
        .deploy(VERSIONED_2, &[("step.sh", STEP)])
        .await
        .expect("deploy");
    assert_ne!(first.version, second.version);

    let old = c
        .workflows
        .get_workflow(v1::GetWorkflowRequest {
            name: "versioned".into(),
            version: first.version.clone(),
        })
        .await
        .expect("old version")
        .into_inner()
        .workflow
        .expect("workflow");
    assert_eq!(old.version, first.version);
    assert_eq!(old.tasks.len(), 1);
    assert_eq!(old.definition_yaml, VERSIONED);

    let url = format!(
        "{}/workflows/versioned?version={}",
        server.url(),
        first.version
    );
    let rest: Value = http()
        .get(&url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(rest["workflow"]["version"], first.version.as_str());
    assert_eq!(rest["workflow"]["tasks"].as_array().map(Vec::len), Some(1));

    // The newest is still what GetWorkflow returns without a version.
    let newest: Value = http()
        .get(format!("{}/workflows/versioned", server.url()))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(newest["workflow"]["version"], second.version.as_str());

    // A version of another workflow, or none at all, names the field.
    for version in ["nope", second.version.as_str()] {
        let name = if version == "nope" {
            "versioned"
        } else {
            "other"
        };
        let response = http()
            .get(format!(
                "{}/workflows/{name}?version={version}",
                server.url()
            ))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), 404);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["details"][0]["field"], "version", "{body}");
    }

    // Deleting the workflow keeps its versions readable for past runs.
    c.workflows
        .delete_workflow(v1::DeleteWorkflowRequest {
            name: "versioned".into(),
        })
        .await
        .expect("delete");
    let (status, body) = {
        let response = http().get(&url).send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("JSON"))
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workflow"]["version"], first.version.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tokens_the_ui_files_are_public_and_the_api_and_its_streams_are_not() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let options = ork_tests::secure_options(data_dir.path());
    let server = TestServer::start_with(data_dir, options).await;
    let url = server.url();
    let token = server.admin_token();
    let mut c = server.clients_with_token(&token).await;
    c.deploy(TWO_STEPS, &[("step.sh", STEP)])
        .await
        .expect("deploy");
    let run = c.start_run("two-steps", json!({})).await;

    // A browser loads the page before it can send a token: no data in it.
    let home = http()
        .get(format!("{url}/"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .expect("GET /");
    assert_eq!(home.status().as_u16(), 303);
    for path in [
        "/ui/",
        "/ui/runs/x",
        "/ui/assets/app.js",
        "/ui/assets/app.css",
    ] {
        let file = http()
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("UI file");
        assert_eq!(file.status().as_u16(), 200, "{path}");
    }

    // What the UI reads needs the token, the live streams included.
    let paths = [
        "/runs".to_owned(),
        format!("/runs/{}", run.id),
        format!("/runs/{}/watch", run.id),
        format!("/runs/{}/tasks/first/logs?follow=true", run.id),
        "/workflows".to_owned(),
        "/workers".to_owned(),
    ];
    for path in &paths {
        let refused = http()
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("API call");
        assert_eq!(refused.status().as_u16(), 401, "{path}");
        let body: Value = refused.json().await.expect("JSON error");
        assert_eq!(body["code"], "UNAUTHENTICATED", "{path}");

        let allowed = http()
            .get(format!("{url}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("API call");
        assert_eq!(allowed.status().as_u16(), 200, "{path}");
    }
    server.stop().await;
}
