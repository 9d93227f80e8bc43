//! Schedule controls against a real server on SQLite and (under
//! `scripts/postgres.sh`) PostgreSQL: a paused schedule fires nothing across
//! a restart and on two replicas; a backfill over 48 hourly fires creates 48
//! runs and repeating it creates none; trigger, list, REST and the CLI.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ork_proto::v1;
use ork_tests::postgres::Database;
use ork_tests::{Clients, TestServer, ork, test_options};
use serde_json::Value;

/// Runs wait for a pool worker nobody attaches: they stay `running` and
/// cost nothing.
fn waits(name: &str, schedule: &str) -> String {
    format!(
        "name: {name}\nschedule: \"{schedule}\"\ntasks:\n  - name: w\n    executor: workers\n    handler: nobody\n"
    )
}

fn options(
    dir: &std::path::Path,
    db: Option<&Database>,
    replica: &str,
) -> ork_server::ServerOptions {
    let mut options = test_options(dir);
    if let Some(db) = db {
        options.state_url = db.url.clone();
    }
    options.scheduler_id = replica.to_owned();
    options
}

fn time(text: &str) -> pbjson_types::Timestamp {
    let t: DateTime<Utc> = text.parse().expect("time");
    ork_proto::time::to_proto(t)
}

async fn count(c: &mut Clients, workflow: &str) -> u64 {
    c.runs
        .list_runs(v1::ListRunsRequest {
            workflow: workflow.into(),
            limit: 1,
            include_total: true,
            ..Default::default()
        })
        .await
        .expect("list runs")
        .into_inner()
        .total
        .expect("total")
}

async fn wait_count(c: &mut Clients, workflow: &str, at_least: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = count(c, workflow).await;
        if n >= at_least {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{workflow}: {n} runs, waited for {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cli(server: &str, args: &[&str]) -> (String, String) {
    let out = ork(server, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "ork {args:?}: {stdout}{stderr}");
    (stdout, stderr)
}

/// Paused before it could ever fire (deployed yearly, paused, redeployed
/// every second): no run across a restart, on every replica, while an
/// unpaused per-second schedule keeps firing; after resume it fires.
async fn a_pause_holds_across_restart_and_replicas(db: Option<&Database>) {
    let dir = tempfile::tempdir().expect("dir");
    let o = options(dir.path(), db, "a");
    let first = TestServer::start_with(dir, o).await;
    let mut c = first.clients().await;
    c.deploy(&waits("tick", "0 0 1 1 *"), &[])
        .await
        .expect("deploy");
    let http = reqwest::Client::new();
    let reply: Value = http
        .post(format!("{}/schedules/tick/pause", first.url()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("pause")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("json");
    assert_eq!(reply["schedule"]["paused"], true, "{reply}");
    // The pause belongs to the workflow, not its version.
    c.deploy(&waits("tick", "* * * * * *"), &[])
        .await
        .expect("redeploy");
    c.deploy(&waits("tock", "* * * * * *"), &[])
        .await
        .expect("deploy");
    let (table, _) = cli(&first.url(), &["schedule", "list"]);
    let tick = table
        .lines()
        .find(|l| l.starts_with("tick"))
        .expect("tick row");
    assert!(tick.contains("paused"), "{table}");
    wait_count(&mut c, "tock", 2).await;
    let data_dir = first.stop().await;

    // Restarted on the same store (on SQLite, in the same data folder), and
    // on PostgreSQL a second replica beside it.
    let o = options(data_dir.path(), db, "a");
    let a = TestServer::start_with(data_dir, o).await;
    let b = match db {
        Some(_) => {
            let dir = tempfile::tempdir().expect("dir");
            let o = options(dir.path(), db, "b");
            Some(TestServer::start_with(dir, o).await)
        }
        None => None,
    };
    let mut c = a.clients().await;
    let tocks = count(&mut c, "tock").await;
    // Three more fires of the unpaused schedule: every replica's cron has
    // looked at the paused one several times since the restart.
    wait_count(&mut c, "tock", tocks + 3).await;
    assert_eq!(count(&mut c, "tick").await, 0, "a paused schedule fired");

    let (_, said) = cli(&a.url(), &["schedule", "resume", "tick"]);
    assert!(said.contains("resumed"), "{said}");
    wait_count(&mut c, "tick", 1).await;
    if let Some(b) = b {
        b.stop().await;
    }
    a.stop().await;
}

/// 48 hourly fires backfilled: 48 runs, each with its `scheduled_for`;
/// again (gRPC and CLI): none. Trigger, list and the errors.
async fn backfill_is_idempotent(server: &TestServer) {
    let mut c = server.clients().await;
    c.deploy(&waits("hourly", "0 * * * *"), &[])
        .await
        .expect("deploy");
    // Paused, so only the backfill creates runs; a backfill ignores pauses.
    c.schedules
        .pause_schedule(v1::PauseScheduleRequest {
            workflow: "hourly".into(),
        })
        .await
        .expect("pause");
    let request = v1::BackfillScheduleRequest {
        workflow: "hourly".into(),
        start_time: Some(time("2026-01-01T00:00:00Z")),
        end_time: Some(time("2026-01-02T23:00:00Z")),
        limit: 0,
    };
    let first = c
        .schedules
        .backfill_schedule(request.clone())
        .await
        .expect("backfill")
        .into_inner();
    assert_eq!((first.fires, first.existing, first.remaining), (48, 0, 0));
    assert_eq!(first.runs.len(), 48);
    let fires: HashSet<String> = first
        .runs
        .iter()
        .map(|r| {
            assert_eq!(r.triggered_by, "schedule");
            ork_proto::json::from_proto_opt(r.input.as_ref())["scheduled_for"]
                .as_str()
                .expect("scheduled_for")
                .to_owned()
        })
        .collect();
    assert_eq!(fires.len(), 48);
    assert!(fires.contains("2026-01-01T00:00:00Z") && fires.contains("2026-01-02T23:00:00Z"));

    let again = c
        .schedules
        .backfill_schedule(request)
        .await
        .expect("again")
        .into_inner();
    assert_eq!((again.fires, again.existing, again.runs.len()), (48, 48, 0));
    let (_, said) = cli(
        &server.url(),
        &[
            "schedule",
            "backfill",
            "hourly",
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-02T23:00:00Z",
        ],
    );
    assert!(
        said.contains("48 fire(s) in the range: 0 run(s) created, 48 already had one"),
        "{said}"
    );
    assert_eq!(count(&mut c, "hourly").await, 48);

    // Trigger: one run now, as the schedule would, paused or not.
    let (json, _) = cli(
        &server.url(),
        &["schedule", "trigger", "hourly", "-o", "json"],
    );
    let run: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(run["triggered_by"], "schedule");
    assert!(run["input"]["scheduled_for"].is_string(), "{run}");
    assert_eq!(count(&mut c, "hourly").await, 49);

    // Listed over REST: paused, no next fires, the latest fire.
    let list: Value = reqwest::get(format!("{}/schedules", server.url()))
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let hourly = list["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .find(|s| s["workflow"] == "hourly")
        .expect("hourly")
        .clone();
    assert_eq!(hourly["paused"], true, "{hourly}");
    assert_eq!(hourly["cron"], "0 * * * *");
    assert_eq!(hourly["last_fire"], "2026-01-02T23:00:00+00:00", "{hourly}");

    // Errors name the field and the fix.
    let future = c
        .schedules
        .backfill_schedule(v1::BackfillScheduleRequest {
            workflow: "hourly".into(),
            start_time: Some(time("2026-01-01T00:00:00Z")),
            end_time: Some(ork_proto::time::to_proto(
                Utc::now() + chrono::Duration::hours(2),
            )),
            limit: 0,
        })
        .await
        .expect_err("future");
    assert_eq!(future.code(), tonic::Code::InvalidArgument);
    assert!(future.message().contains("end_time"), "{future:?}");
    c.deploy(
        "name: plain\ntasks:\n  - name: w\n    executor: workers\n    handler: nobody\n",
        &[],
    )
    .await
    .expect("deploy");
    let plain = c
        .schedules
        .trigger_schedule(v1::TriggerScheduleRequest {
            workflow: "plain".into(),
        })
        .await
        .expect_err("no schedule");
    assert_eq!(plain.code(), tonic::Code::FailedPrecondition);
    let missing = c
        .schedules
        .pause_schedule(v1::PauseScheduleRequest {
            workflow: "hourlx".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("hourly"), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_on_sqlite() {
    let server = TestServer::start().await;
    backfill_is_idempotent(&server).await;
    server.stop().await;
    a_pause_holds_across_restart_and_replicas(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_on_postgres() {
    let Some(db) = Database::create("schedules") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let o = options(dir.path(), Some(&db), "a");
    let server = TestServer::start_with(dir, o).await;
    backfill_is_idempotent(&server).await;
    server.stop().await;
    let db2 = Database::create("schedules_pause").expect("database");
    a_pause_holds_across_restart_and_replicas(Some(&db2)).await;
}

/// `--max-concurrent 2`: six fires, never more than two runs at once.
#[tokio::test(flavor = "multi_thread")]
async fn backfill_keeps_at_most_n_runs_at_once() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    c.deploy(
        "name: quick\nschedule: \"*/10 * * * *\"\ntasks:\n  - name: s\n    command: [\"sleep\", \"1\"]\n",
        &[],
    )
    .await
    .expect("deploy");
    cli(&server.url(), &["schedule", "pause", "quick"]);
    let (json, _) = cli(
        &server.url(),
        &[
            "schedule",
            "backfill",
            "quick",
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-01T00:50:00Z",
            "--max-concurrent",
            "2",
            "-o",
            "json",
        ],
    );
    let created: Vec<Value> = serde_json::from_str(&json).expect("json");
    assert_eq!(created.len(), 6);
    let mut spans = Vec::new();
    for run in &created {
        let id = run["id"].as_str().expect("id");
        let done = c.wait_run(id, Duration::from_secs(120)).await;
        assert_eq!(done.status, "success", "{done:?}");
        let at = |t: &Option<pbjson_types::Timestamp>| {
            ork_proto::time::from_proto(t.as_ref().expect("time")).expect("time")
        };
        spans.push((at(&done.created_at), at(&done.finished_at)));
    }
    for (start, _) in &spans {
        let running = spans
            .iter()
            .filter(|(s, f)| s <= start && start < f)
            .count();
        assert!(running <= 2, "{running} runs at once: {spans:?}");
    }
    server.stop().await;
}
