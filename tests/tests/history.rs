//! Run history against a real server on SQLite and (under
//! `scripts/postgres.sh`) PostgreSQL: filters, labels and keyset paging over
//! gRPC, REST and the CLI, and idempotent starts (`request_id`).

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ork_proto::v1;
use ork_tests::{Clients, TestServer, ork, test_options};
use serde_json::{Value, json};

/// Runs of this workflow wait for a pool worker nobody attaches, so they
/// stay `running` and cost nothing while the test pages through them.
const WAITS: &str =
    "name: waits\ntasks:\n  - name: w\n    executor: workers\n    handler: nobody\n";

/// A fresh PostgreSQL database of `scripts/postgres.sh`, dropped at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Option<Self> {
        let admin = match std::env::var("ORK_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "ORK_TEST_POSTGRES_URL is not set in CI: run the tests under scripts/postgres.sh"
                );
                eprintln!(
                    "\n*** SKIPPING the PostgreSQL run-history case: ORK_TEST_POSTGRES_URL is not set (use scripts/postgres.sh) ***\n"
                );
                return None;
            }
        };
        let name = format!("ork_history_{}", std::process::id());
        psql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(admin: &str, sql: &str) {
    let out = Command::new("psql")
        .arg(admin)
        .arg("-qc")
        .arg(sql)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn server_on(db: Option<&Database>) -> TestServer {
    let dir = tempfile::tempdir().expect("dir");
    let mut options = test_options(dir.path());
    if let Some(db) = db {
        options.state_url = db.url.clone();
    }
    TestServer::start_with(dir, options).await
}

async fn start(c: &mut Clients, labels: &[(&str, &str)]) -> String {
    c.runs
        .start_run(v1::StartRunRequest {
            workflow: "waits".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner()
        .run
        .expect("run")
        .id
}

/// 5,000 runs (every tenth labelled team=data), then the walk.
async fn paging_visits_each_run_once_while_runs_are_created(server: &TestServer) {
    let mut c = server.clients().await;
    c.deploy(WAITS, &[]).await.expect("deploy");
    const RUNS: usize = 5000;
    let mut starters = Vec::new();
    for worker in 0..8 {
        let mut c = c.clone();
        starters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..RUNS).step_by(8) {
                let labels: &[(&str, &str)] = if i % 10 == 0 {
                    &[("team", "data")]
                } else {
                    &[("team", "web")]
                };
                ids.push((i % 10 == 0, start(&mut c, labels).await));
            }
            ids
        }));
    }
    let mut before: Vec<(bool, String)> = Vec::new();
    for s in starters {
        before.extend(s.await.expect("starter"));
    }
    let old: HashSet<String> = before.iter().map(|(_, id)| id.clone()).collect();
    let data: HashSet<String> = before
        .iter()
        .filter(|(d, _)| *d)
        .map(|(_, id)| id.clone())
        .collect();

    // New runs keep arriving for the whole walk.
    let stop = Arc::new(AtomicBool::new(false));
    let creator = {
        let (mut c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut made = 0;
            while !stop.load(Ordering::Relaxed) {
                start(&mut c, &[("team", "data")]).await;
                made += 1;
            }
            made
        })
    };
    let mut seen = Vec::new();
    let mut request = v1::ListRunsRequest {
        workflow: "waits".into(),
        limit: 97,
        include_total: true,
        ..Default::default()
    };
    let mut first_page = true;
    let mut total = None;
    loop {
        let page = c
            .runs
            .list_runs(request.clone())
            .await
            .expect("page")
            .into_inner();
        if first_page {
            total = page.total;
            first_page = false;
        }
        seen.extend(page.runs.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
        request.include_total = false;
    }
    let first_total = total.expect("a total on the first page");
    stop.store(true, Ordering::Relaxed);
    let made = creator.await.expect("creator");
    assert!(made > 0, "runs were created during the walk");
    assert!(first_total >= RUNS as u64);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a run was shown twice");
    for id in &old {
        assert!(unique.contains(id), "run {id} was never shown");
    }

    // Filters: a label, and a status no run has.
    let mut labelled = HashSet::new();
    let mut request = v1::ListRunsRequest {
        label: vec!["team=data".into()],
        status: vec!["running".into(), "pending".into()],
        limit: 1000,
        ..Default::default()
    };
    loop {
        let page = c
            .runs
            .list_runs(request.clone())
            .await
            .expect("page")
            .into_inner();
        for run in page.runs {
            assert_eq!(run.labels.get("team").map(String::as_str), Some("data"));
            labelled.insert(run.id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert!(data.is_subset(&labelled));
    let none = c
        .runs
        .list_runs(v1::ListRunsRequest {
            status: vec!["failed".into()],
            include_total: true,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert!(none.runs.is_empty() && none.next_page_token.is_empty());
    assert_eq!(none.total, Some(0));
}

async fn rest_and_cli(server: &TestServer) {
    let http = reqwest::Client::new();
    let url = server.url();
    // Repeated query parameters are a list filter; the token pages on.
    let first: Value = http
        .get(format!(
            "{url}/runs?workflow=waits&status=running&status=pending&label=team%3Ddata&limit=3&include_total=true"
        ))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(first["runs"].as_array().map(Vec::len), Some(3), "{first}");
    assert!(
        first["total"]
            .as_str()
            .is_some_and(|t| t.parse::<u64>().unwrap() >= 500),
        "{first}"
    );
    let token = first["next_page_token"].as_str().expect("token");
    let second: Value = http
        .get(format!(
            "{url}/runs?workflow=waits&label=team%3Ddata&limit=3&page_token={token}"
        ))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(second["runs"].as_array().map(Vec::len), Some(3));
    assert_ne!(second["runs"][0]["id"], first["runs"][0]["id"]);
    // Bad filters name their field.
    for (query, field) in [
        ("page_token=nonsense", "page_token"),
        ("status=exploded", "status"),
        ("label=team", "label"),
        ("created_after=yesterday", "created_after"),
    ] {
        let response = http
            .get(format!("{url}/runs?{query}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: Value = response.json().await.expect("json");
        assert!(body.to_string().contains(field), "{query}: {body}");
    }
    // Labels at start are checked.
    let response = http
        .post(format!("{url}/workflows/waits/runs"))
        .json(&json!({"labels": {"bad key": "x"}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 400);

    // The CLI: a label at start, then the filters and --all.
    let out = ork(
        &url,
        &[
            "run", "start", "waits", "--label", "team=cli", "--label", "env=test",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = ork(
        &url,
        &[
            "run",
            "list",
            "--label",
            "team=cli",
            "--status",
            "running,pending",
            "--since",
            "1h",
            "--all",
            "-o",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(runs[0]["id"], id.as_str());
    assert_eq!(runs[0]["labels"]["env"], "test");
    let out = ork(&url, &["run", "list", "waits", "--limit", "2"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--page-token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ork(&url, &["run", "list", "--since", "soon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}

/// The same `request_id` sent twice at once (gRPC, then REST) yields one run.
async fn request_id_starts_once(server: &TestServer) {
    let c = server.clients().await;
    let start = |mut c: Clients| async move {
        c.runs
            .start_run(v1::StartRunRequest {
                workflow: "waits".into(),
                request_id: "deploy-2026-11-29".into(),
                ..Default::default()
            })
            .await
            .expect("start")
            .into_inner()
            .run
            .expect("run")
            .id
    };
    let (a, b) = tokio::join!(
        tokio::spawn(start(c.clone())),
        tokio::spawn(start(c.clone()))
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(a, b);
    let http = reqwest::Client::new();
    let rest = |body: Value| {
        let http = http.clone();
        let url = format!("{}/workflows/waits/runs", server.url());
        async move {
            let response = http.post(url).json(&body).send().await.expect("POST");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = rest(json!({"request_id": "deploy-2026-11-29"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run"]["id"], a.as_str());
    let (status, body) = rest(json!({"request_id": "two words"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("request_id"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_history_on_sqlite() {
    let server = server_on(None).await;
    paging_visits_each_run_once_while_runs_are_created(&server).await;
    rest_and_cli(&server).await;
    request_id_starts_once(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_history_on_postgres() {
    let Some(db) = Database::create() else { return };
    let server = server_on(Some(&db)).await;
    paging_visits_each_run_once_while_runs_are_created(&server).await;
    rest_and_cli(&server).await;
    request_id_starts_once(&server).await;
    server.stop().await;
}
