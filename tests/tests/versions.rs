//! Workflow versions against a real server on SQLite and (under
//! `scripts/postgres.sh`) PostgreSQL: deploy messages, `ork workflow
//! versions`, a run started on an older version keeps it, rollback makes an
//! older one current, over the CLI, gRPC and REST.

use std::time::Duration;

use ork_proto::v1;
use ork_tests::postgres::Database;
use ork_tests::{TestServer, ork, test_options};
use serde_json::Value;

const V1: &str = "name: ver\ntasks:\n  - name: one\n    command: [\"true\"]\n";
const V2: &str = "name: ver\ntasks:\n  - name: one\n    command: [\"true\"]\n  - name: two\n    command: [\"true\"]\n    depends_on: [one]\n";

fn cli(server: &str, args: &[&str]) -> String {
    let out = ork(server, args);
    assert!(
        out.status.success(),
        "ork {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn versions(server: &TestServer) {
    let dir = tempfile::tempdir().expect("dir");
    let (p1, p2) = (dir.path().join("v1.yaml"), dir.path().join("v2.yaml"));
    std::fs::write(&p1, V1).expect("v1");
    std::fs::write(&p2, V2).expect("v2");
    let url = server.url();
    cli(
        &url,
        &[
            "workflow",
            "deploy",
            p1.to_str().expect("path"),
            "--message",
            "one task",
        ],
    );
    cli(
        &url,
        &[
            "workflow",
            "deploy",
            p2.to_str().expect("path"),
            "-m",
            "add two",
        ],
    );

    let listed: Vec<Value> =
        serde_json::from_str(&cli(&url, &["workflow", "versions", "ver", "-o", "json"]))
            .expect("json");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["message"], "add two");
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[1]["message"], "one task");
    let old = listed[1]["version"].as_str().expect("version").to_owned();
    let table = cli(&url, &["workflow", "versions", "ver"]);
    assert!(
        table.contains("one task") && table.contains(&old[..12]),
        "{table}"
    );

    // A run on the older version keeps it and runs its one task.
    let run_id = cli(&url, &["run", "start", "ver", "--version", &old[..8]])
        .trim()
        .to_owned();
    let mut c = server.clients().await;
    let run = c.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run.status, "success");
    assert_eq!(run.workflow_version, old);
    assert_eq!(run.tasks.len(), 1);

    // Rollback: new runs use the older version; REST sees it.
    let said = ork(&url, &["workflow", "rollback", "ver", &old[..8]]);
    assert!(said.status.success(), "{said:?}");
    let next = c.start_run("ver", serde_json::json!({})).await;
    assert_eq!(next.workflow_version, old);
    let rest: Value = reqwest::get(format!("{url}/workflows/ver/versions"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["versions"][1]["current"], true, "{rest}");
    // Forward again over REST.
    let newest = listed[0]["version"].as_str().expect("version");
    let reply = reqwest::Client::new()
        .post(format!("{url}/workflows/ver/rollback"))
        .json(&serde_json::json!({"version": newest}))
        .send()
        .await
        .expect("post");
    assert_eq!(reply.status(), 200);
    assert_eq!(
        c.start_run("ver", serde_json::json!({}))
            .await
            .workflow_version,
        newest
    );

    // Errors name the version or the workflow.
    let unknown = c
        .runs
        .start_run(v1::StartRunRequest {
            workflow: "ver".into(),
            version: "ffffffffff".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown version");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(
        unknown.message().contains("version `ffffffffff`"),
        "{unknown:?}"
    );
    let missing = c
        .workflows
        .rollback_workflow(v1::RollbackWorkflowRequest {
            name: "vr".into(),
            version: old.clone(),
        })
        .await
        .expect_err("unknown workflow");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(
        missing.message().contains("did you mean `ver`"),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_on_sqlite() {
    let server = TestServer::start().await;
    versions(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_on_postgres() {
    let Some(db) = Database::create("versions") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut options = test_options(dir.path());
    options.state_url = db.url.clone();
    let server = TestServer::start_with(dir, options).await;
    versions(&server).await;
    server.stop().await;
}
