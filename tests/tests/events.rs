//! Events and signed webhooks against a real server on SQLite and (under
//! `scripts/postgres.sh`) PostgreSQL: an event delivered twice with one id
//! (concurrently, over gRPC, REST and the CLI) starts one run per subscribed
//! workflow, filters select; a webhook with a bad or missing signature is
//! refused with 401 and starts nothing, a signed one starts one run per
//! delivery id.

use std::collections::HashSet;

use ork_proto::json::from_proto_opt;
use ork_proto::v1;
use ork_tests::postgres::Database;
use ork_tests::{Clients, TestServer, ork, test_options};
use serde_json::{Value, json};

const SECRET: &str = "It's a Secret to Everybody";

fn waits(name: &str, on: &str) -> String {
    format!(
        "name: {name}\non: {on}\ntasks:\n  - name: w\n    executor: workers\n    handler: nobody\n"
    )
}

async fn server_on(db: Option<&Database>) -> TestServer {
    let dir = tempfile::tempdir().expect("dir");
    let mut options = test_options(dir.path());
    if let Some(db) = db {
        options.state_url = db.url.clone();
    }
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    std::fs::write(secrets.join("github-hook"), format!("{SECRET}\n")).expect("secret");
    options.secrets_dir = Some(secrets);
    TestServer::start_with(dir, options).await
}

async fn runs_of(c: &mut Clients, workflow: &str) -> Vec<v1::Run> {
    c.runs
        .list_runs(v1::ListRunsRequest {
            workflow: workflow.into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .runs
}

async fn publish(c: &mut Clients, name: &str, id: &str, data: Value) -> v1::PublishEventResponse {
    c.events
        .publish_event(v1::PublishEventRequest {
            name: name.into(),
            id: id.into(),
            data: Some(ork_proto::json::to_proto(&data)),
        })
        .await
        .expect("publish")
        .into_inner()
}

async fn events_start_once(server: &TestServer) {
    let mut c = server.clients().await;
    c.deploy(
        &waits("eu-orders", "{event: order.created, filter: {region: eu}}"),
        &[],
    )
    .await
    .expect("deploy");
    c.deploy(&waits("all-orders", "{event: order.created}"), &[])
        .await
        .expect("deploy");
    c.deploy(&waits("refunds", "{event: refund.created}"), &[])
        .await
        .expect("deploy");

    // The same id twice at once, then again over REST and the CLI.
    let data = json!({"region": "eu", "order": 7});
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (x, y) = tokio::join!(
        publish(&mut c1, "order.created", "order-7", data.clone()),
        publish(&mut c2, "order.created", "order-7", data.clone()),
    );
    assert!(x.duplicate ^ y.duplicate, "one first delivery: {x:?} {y:?}");
    let first = if x.duplicate { &y } else { &x };
    assert_eq!(first.runs.len(), 2, "{first:?}");
    let http = reqwest::Client::new();
    let rest: Value = http
        .post(format!("{}/events/order.created", server.url()))
        .json(&json!({"id": "order-7", "data": data}))
        .send()
        .await
        .expect("post")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["duplicate"], true, "{rest}");
    let out = ork(
        &server.url(),
        &[
            "event",
            "send",
            "order.created",
            "--id",
            "order-7",
            "--data",
            r#"{"region": "eu"}"#,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("delivered before: nothing started"),
        "{out:?}"
    );
    for workflow in ["eu-orders", "all-orders"] {
        let runs = runs_of(&mut c, workflow).await;
        assert_eq!(runs.len(), 1, "{workflow}: {runs:?}");
        let run = &runs[0];
        assert_eq!(run.triggered_by, "event");
        assert_eq!(run.labels["ork/event-id"], "order-7");
        let input = from_proto_opt(run.input.as_ref());
        assert_eq!(input["event"]["data"]["order"], 7, "{input}");
        assert_eq!(input["event"]["name"], "order.created");
    }
    assert!(runs_of(&mut c, "refunds").await.is_empty());

    // The filter selects: a US order starts only the unfiltered workflow,
    // and without an id every send is a new event.
    let out = ork(
        &server.url(),
        &[
            "event",
            "send",
            "order.created",
            "--data",
            r#"{"region": "us"}"#,
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reply["runs"].as_array().expect("runs").len(), 1, "{reply}");
    assert_eq!(reply["runs"][0]["workflow"], "all-orders");
    assert_eq!(runs_of(&mut c, "all-orders").await.len(), 2);
    assert_eq!(runs_of(&mut c, "eu-orders").await.len(), 1);

    // Bad input names the field.
    let bad = c
        .events
        .publish_event(v1::PublishEventRequest {
            name: "no spaces please".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad name");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("field `name`"), "{bad:?}");
}

fn sign(body: &[u8]) -> String {
    ork_server::api::hooks::signature(SECRET.as_bytes(), body)
}

async fn webhooks_need_their_signature(server: &TestServer) {
    let mut c = server.clients().await;
    c.deploy(&waits("on-push", "{webhook: {secret: github-hook}}"), &[])
        .await
        .expect("deploy");
    c.deploy(&waits("unhooked", "{event: never}"), &[])
        .await
        .expect("deploy");
    let http = reqwest::Client::new();
    let url = format!("{}/hooks/on-push", server.url());
    let body = br#"{"ref": "refs/heads/main", "commits": 3}"#.to_vec();
    let post = |sig: Option<String>, delivery: &str, url: &str, body: Vec<u8>| {
        let mut req = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .body(body);
        if let Some(sig) = sig {
            req = req.header("x-hub-signature-256", sig);
        }
        req.send()
    };

    // Refused alike: a wrong signature, none, a signature over other bytes,
    // a workflow without a webhook, one that does not exist.
    let wrong = ork_server::api::hooks::signature(b"not the secret", &body);
    let other = sign(br#"{"ref": "refs/heads/evil"}"#);
    for (sig, target) in [
        (Some(wrong), url.clone()),
        (None, url.clone()),
        (Some(other), url.clone()),
        (
            Some(sign(&body)),
            format!("{}/hooks/unhooked", server.url()),
        ),
        (Some(sign(&body)), format!("{}/hooks/missing", server.url())),
    ] {
        let reply = post(sig, "d-0", &target, body.clone()).await.expect("post");
        assert_eq!(reply.status(), 401, "{target}");
        let error: Value = reply.json().await.expect("json");
        assert_eq!(error["code"], "UNAUTHENTICATED", "{error}");
    }
    assert!(
        runs_of(&mut c, "on-push").await.is_empty(),
        "a refused call started a run"
    );
    assert!(runs_of(&mut c, "unhooked").await.is_empty());

    // Signed: one run per delivery id, however often it is delivered.
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let reply = post(Some(sign(&body)), "d-1", &url, body.clone())
            .await
            .expect("post");
        assert_eq!(reply.status(), 202);
        let reply: Value = reply.json().await.expect("json");
        seen.insert(reply["runs"][0].as_str().expect("run").to_owned());
    }
    assert_eq!(seen.len(), 1);
    let runs = runs_of(&mut c, "on-push").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].triggered_by, "webhook");
    let input = from_proto_opt(runs[0].input.as_ref());
    assert_eq!(input["event"]["name"], "push");
    assert_eq!(input["event"]["id"], "d-1");
    assert_eq!(input["event"]["data"]["commits"], 3);
    // A new delivery id is a new run.
    let reply = post(Some(sign(&body)), "d-2", &url, body.clone())
        .await
        .expect("post");
    assert_eq!(reply.status(), 202);
    assert_eq!(runs_of(&mut c, "on-push").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_and_webhooks_on_sqlite() {
    let server = server_on(None).await;
    events_start_once(&server).await;
    webhooks_need_their_signature(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_and_webhooks_on_postgres() {
    let Some(db) = Database::create("events") else {
        return;
    };
    let server = server_on(Some(&db)).await;
    events_start_once(&server).await;
    webhooks_need_their_signature(&server).await;
    server.stop().await;
}
