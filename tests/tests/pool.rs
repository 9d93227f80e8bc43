//! Pool workers (the Rust SDK) against a real server: slots, lost sessions,
//! cancellation and draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ork_proto::v1;
use ork_tests::{TestServer, output, task, tasks};
use ork_worker::pool::{Context, TaskDef, TaskError, Worker, task as handler};
use serde::{Deserialize, Serialize};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct SquareIn {
    n: i64,
}

#[derive(Serialize)]
struct SquareOut {
    square: i64,
    worker: String,
}

/// Counts how many calls run at once, remembering the most.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn square(name: &'static str, gauge: Arc<Gauge>, pause: Duration) -> TaskDef {
    handler("square", move |ctx: Context, input: SquareIn| {
        let gauge = gauge.clone();
        async move {
            gauge.enter();
            ctx.log(format!("squaring {}", input.n));
            tokio::time::sleep(pause).await;
            gauge.leave();
            Ok::<_, TaskError>(SquareOut {
                square: input.n * input.n,
                worker: name.to_owned(),
            })
        }
    })
}

const FAN_OUT: &str = r#"
name: squares
tasks:
  - name: list
    file: list.sh
    input: { n: "{{ run.input.n }}" }
  - name: square
    executor: workers
    handler: square
    depends_on: [list]
    parallel: { for_each: list.items }
    retries: 0
    input: { n: "{{ item }}" }
"#;
const LIST: &str = "#!/bin/bash\nn=$(python3 -c 'import json,os; print(json.load(open(os.environ[\"ORK_INPUT\"]))[\"n\"])')\npython3 -c \"import json; print(json.dumps({'items': list(range($n))}))\" > \"$ORK_OUTPUT\"\n";

fn spawn_worker(
    url: String,
    name: &'static str,
    slots: u32,
    def: TaskDef,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        Worker::new(url)
            .name(name)
            .slots(slots)
            .task(def)
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("worker runs");
    });
    (handle, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_a_fan_out_within_their_slots() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    c.deploy(FAN_OUT, &[("list.sh", LIST)])
        .await
        .expect("deploy");
    let (ga, gb) = (Arc::new(Gauge::default()), Arc::new(Gauge::default()));
    let pause = Duration::from_millis(30);
    let (_a, stop_a) = spawn_worker(server.url(), "a", 3, square("a", ga.clone(), pause));
    let (_b, stop_b) = spawn_worker(server.url(), "b", 2, square("b", gb.clone(), pause));
    let run = c.start_run("squares", json!({"n": 60})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    let squares = tasks(&run, "square");
    assert_eq!(squares.len(), 60);
    let mut by_worker = std::collections::HashMap::<String, usize>::new();
    for t in &squares {
        let i = i64::from(t.parallel_index.expect("index"));
        let out = output(t);
        assert_eq!(out["square"], json!(i * i));
        *by_worker
            .entry(out["worker"].as_str().expect("worker").to_owned())
            .or_default() += 1;
    }
    assert_eq!(by_worker.len(), 2, "both workers took work: {by_worker:?}");
    assert!(
        ga.max.load(Ordering::SeqCst) <= 3,
        "worker a ran {} at once",
        ga.max.load(Ordering::SeqCst)
    );
    assert!(
        gb.max.load(Ordering::SeqCst) <= 2,
        "worker b ran {} at once",
        gb.max.load(Ordering::SeqCst)
    );
    let logs = c.logs(&run.id, "square").await;
    assert_eq!(logs.len(), 60, "one log line per instance");
    let _ = (stop_a.send(()), stop_b.send(()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_worker_s_attempts_are_retried_on_another() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    c.deploy(FAN_OUT, &[("list.sh", LIST)])
        .await
        .expect("deploy");
    let (ga, gb) = (Arc::new(Gauge::default()), Arc::new(Gauge::default()));
    let (a, _stop_a) = spawn_worker(
        server.url(),
        "a",
        4,
        square("a", ga.clone(), Duration::from_millis(400)),
    );
    let run = c.start_run("squares", json!({"n": 12})).await;
    c.wait_until(&run.id, WAIT, "worker a to be busy", |r| {
        tasks(r, "square")
            .iter()
            .filter(|t| t.status == "running")
            .count()
            >= 2
    })
    .await;
    // The worker dies without a word: its session breaks mid-run.
    a.abort();
    let (_b, _stop_b) = spawn_worker(
        server.url(),
        "b",
        4,
        square("b", gb.clone(), Duration::from_millis(10)),
    );
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    let retried: Vec<&v1::TaskRun> = tasks(&run, "square")
        .into_iter()
        .filter(|t| t.attempt > 1)
        .collect();
    assert!(
        !retried.is_empty(),
        "the dead worker's attempts were retried"
    );
    for t in retried {
        assert!(
            t.attempts[0].error.contains("session"),
            "{}",
            t.attempts[0].error
        );
        assert_eq!(output(t)["worker"], "b");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_run_reaches_the_handler_and_draining_finishes_work() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = "name: waits\ntasks:\n  - name: wait\n    executor: workers\n    handler: wait\n";
    c.deploy(yaml, &[]).await.expect("deploy");
    let noticed = Arc::new(AtomicUsize::new(0));
    let seen = noticed.clone();
    let def = handler("wait", move |ctx: Context, _input: serde_json::Value| {
        let seen = seen.clone();
        async move {
            tokio::select! {
                _ = ctx.cancelled() => { seen.fetch_add(1, Ordering::SeqCst); Err(TaskError::retryable("cancelled")) }
                _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(json!("slept")),
            }
        }
    });
    let (_w, stop) = spawn_worker(server.url(), "w", 1, def);
    let run = c.start_run("waits", json!({})).await;
    c.wait_until(&run.id, WAIT, "the task to run", |r| {
        task(r, "wait").status == "running"
    })
    .await;
    c.runs
        .cancel_run(v1::CancelRunRequest { id: run.id.clone() })
        .await
        .expect("cancel");
    for _ in 0..100 {
        if noticed.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        noticed.load(Ordering::SeqCst),
        1,
        "the handler saw the cancellation"
    );
    let _ = stop.send(());

    // Draining: a worker asked to stop finishes what it runs first.
    let yaml = "name: short\ntasks:\n  - name: s\n    executor: workers\n    handler: short\n";
    c.deploy(yaml, &[]).await.expect("deploy");
    let def = handler("short", |_ctx: Context, _input: serde_json::Value| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Ok::<_, TaskError>(json!({"done": true}))
    });
    let (worker, stop) = spawn_worker(server.url(), "d", 1, def);
    let run = c.start_run("short", json!({})).await;
    c.wait_until(&run.id, WAIT, "the task to run", |r| {
        task(r, "s").status == "running"
    })
    .await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, worker)
        .await
        .expect("the worker stops")
        .expect("joins");
    let run = c.get_run(&run.id).await;
    assert_eq!(
        run.status, "success",
        "the running task finished before the worker left: {run:#?}"
    );
    assert_eq!(task(&run, "s").attempt, 1);
}

const UNSERVED: &str = r#"
name: unserved
tasks:
  - name: lonely
    executor: workers
    handler: nobody
"#;

/// A task whose handler no attached worker serves says so (naming the
/// handlers that are attached) as soon as it is ready, in gRPC, REST and the
/// CLI; `--schedule-to-start-timeout` then fails it with that message.
/// Meanwhile `ork worker list` (PoolService.ListWorkers, GET /workers) shows
/// the worker that is attached.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_no_worker_serves_says_so_and_the_schedule_to_start_timeout_fails_it() {
    let data = tempfile::tempdir().expect("data dir");
    let mut options = ork_tests::test_options(data.path());
    options.schedule_to_start_timeout = Some(Duration::from_secs(3));
    let server = TestServer::start_with(data, options).await;
    let mut c = server.clients().await;
    c.deploy(UNSERVED, &[]).await.expect("deploy");
    let other = handler("other", |_ctx: Context, _input: serde_json::Value| async {
        Ok::<_, TaskError>(json!({}))
    });
    let (_worker, stop) = spawn_worker(server.url(), "other-worker", 2, other);
    // The worker is attached once the registry lists it.
    let mut pool = v1::pool_service_client::PoolServiceClient::connect(server.url())
        .await
        .expect("pool client");
    let deadline = std::time::Instant::now() + WAIT;
    let workers = loop {
        let workers = pool
            .list_workers(v1::ListWorkersRequest {})
            .await
            .expect("ListWorkers")
            .into_inner()
            .workers;
        if !workers.is_empty() || std::time::Instant::now() > deadline {
            break workers;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(workers.len(), 1, "{workers:#?}");
    assert_eq!(workers[0].name, "other-worker");
    assert_eq!(workers[0].handlers, ["other"]);
    assert_eq!((workers[0].slots, workers[0].slots_in_use), (2, 0));
    assert!(workers[0].last_seen_at.is_some() && workers[0].attached_at.is_some());

    let run = c.start_run("unserved", json!({})).await;
    let want = "no attached worker serves handler `nobody` (attached: other)";
    // The reason is computed when the run is read: the first read after the
    // task is ready says it.
    let seen = c
        .wait_until(&run.id, WAIT, "the reason", |r| {
            task(r, "lonely").pending_reason.contains(want)
        })
        .await;
    assert_eq!(task(&seen, "lonely").status, "pending");
    assert!(
        task(&seen, "lonely")
            .pending_reason
            .contains("(--schedule-to-start-timeout)"),
        "{seen:#?}"
    );
    let rest: serde_json::Value = reqwest::get(format!("{}/runs/{}", server.url(), run.id))
        .await
        .expect("GET /runs/ID")
        .json()
        .await
        .expect("json");
    // Still pending, or already failed by the timeout: either way it says why.
    let rest_task = &rest["run"]["tasks"][0];
    let said = match rest_task["status"].as_str() {
        Some("pending") => &rest_task["pending_reason"],
        _ => &rest_task["error"],
    };
    assert!(said.as_str().unwrap_or_default().contains(want), "{rest:#}");
    let listed: serde_json::Value = reqwest::get(format!("{}/workers", server.url()))
        .await
        .expect("GET /workers")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["workers"][0]["handlers"],
        json!(["other"]),
        "{listed:#}"
    );
    let cli = ork_tests::ork(&server.url(), &["worker", "list"]);
    let shown = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        shown.contains("other-worker") && shown.contains("other") && shown.contains("0/2"),
        "{shown}"
    );

    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed", "{run:#?}");
    let lonely = task(&run, "lonely");
    assert_eq!(lonely.status, "failed");
    assert!(
        lonely.error.contains(want) && lonely.error.contains("--schedule-to-start-timeout"),
        "{}",
        lonely.error
    );
    assert_eq!(lonely.attempt, 0, "it never ran");
    let _ = stop.send(());
}
