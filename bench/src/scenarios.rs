//! The scenarios, each against a fresh server: one repetition after a
//! warm-up, then [`REPS`] measured ones whose values the report summarises.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ork_proto::v1;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{Api, PythonWorker, RustWorker, channel, check_run, ms};
use crate::server::{Auth, ServerProc, Setup, Store, postgres_cpu_ms};

/// Measured repetitions of each scenario.
pub const REPS: usize = 5;
/// Longest a single run may take before the scenario fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// What a scenario run needs to know.
pub struct Ctx {
    pub setup: Setup,
    pub store: Store,
    pub quick: bool,
    pub python: PathBuf,
    pub sustained: Duration,
}

/// Values per metric (one per repetition), notes, and sustained windows.
#[derive(Default)]
pub struct Outcome {
    pub values: BTreeMap<String, Vec<f64>>,
    pub notes: Vec<String>,
    pub windows: BTreeMap<String, Vec<f64>>,
}

impl Outcome {
    fn push(&mut self, key: &str, value: f64) {
        self.values.entry(key.to_owned()).or_default().push(value);
    }
}

/// Nearest-rank percentile of unsorted values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn noop_task(name: &str, depends_on: Option<&str>) -> String {
    let mut t =
        format!("  - name: {name}\n    executor: workers\n    handler: noop\n    retries: 0\n");
    if let Some(d) = depends_on {
        t.push_str(&format!("    depends_on: [{d}]\n"));
    }
    t
}

// ---------------------------------------------------------------- (a)

const ONE: &str =
    "name: one\ntasks:\n  - name: noop\n    executor: workers\n    handler: noop\n    retries: 0\n";

/// Start-run call to success seen on `WatchRun`, and the server's own view
/// (run created → task finished).
async fn one_run(api: &mut Api) -> anyhow::Result<(f64, f64)> {
    let t0 = Instant::now();
    let id = api.start("one").await?;
    let run = api.watch(&id).await?;
    let client = t0.elapsed().as_secs_f64() * 1000.0;
    check_run(&run, 1)?;
    let server =
        ms(&run.tasks[0].finished_at).unwrap_or(f64::NAN) - ms(&run.created_at).unwrap_or(f64::NAN);
    Ok((client, server))
}

pub async fn one_task(ctx: &Ctx, out: &mut Outcome) -> anyhow::Result<()> {
    let server = ServerProc::start(&ctx.setup, ctx.store).await?;
    let result = async {
        let mut api = Api::connect(&server).await?;
        api.deploy(ONE, &[]).await?;
        let worker = RustWorker::start(&server, "bench-a", 4).await?;
        let n = if ctx.quick { 100 } else { 1000 };
        for _ in 0..50 {
            one_run(&mut api).await?;
        }
        for _ in 0..REPS {
            let (mut client, mut srv) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for _ in 0..n {
                let (c, s) = one_run(&mut api).await?;
                client.push(c);
                srv.push(s);
            }
            out.push("a.p50", percentile(&client, 50.0));
            out.push("a.p99", percentile(&client, 99.0));
            out.push("a.server", percentile(&srv, 50.0));
        }
        worker.stop().await;
        anyhow::Ok(())
    }
    .await;
    finish(server, result).await
}

async fn finish(server: ServerProc, result: anyhow::Result<()>) -> anyhow::Result<()> {
    let tail = result.as_ref().err().map(|_| server.log_tail());
    server.stop().await?;
    result.map_err(|e| match tail {
        Some(tail) => e.context(format!("server log tail:\n{tail}")),
        None => e,
    })
}

// ---------------------------------------------------------------- (b)

pub(crate) const CHAIN: usize = 40;
const NOOP_SH: &str = "#!/bin/sh\nexit 0\n";

pub(crate) fn chain_yaml(name: &str, subprocess: bool) -> String {
    let mut yaml = format!("name: {name}\ntasks:\n");
    for i in 1..=CHAIN {
        let task = format!("t{i:02}");
        let dep = (i > 1).then(|| format!("t{:02}", i - 1));
        if subprocess {
            yaml.push_str(&format!(
                "  - name: {task}\n    file: noop.sh\n    retries: 0\n"
            ));
            if let Some(d) = dep {
                yaml.push_str(&format!("    depends_on: [{d}]\n"));
            }
        } else {
            yaml.push_str(&noop_task(&task, dep.as_deref()));
        }
    }
    yaml
}

/// The phases of one chain, from the task records, in ms.
struct ChainTimes {
    records_total: f64,
    assignment: f64,
    execution: f64,
    transition: f64,
}

fn chain_times(run: &v1::Run) -> anyhow::Result<ChainTimes> {
    check_run(run, CHAIN)?;
    let mut tasks: Vec<&v1::TaskRun> = run.tasks.iter().collect();
    tasks.sort_by(|a, b| a.name.cmp(&b.name));
    let at = |t: &v1::TaskRun| -> (f64, f64, f64) {
        (
            ms(&t.ready_at).unwrap_or(f64::NAN),
            ms(&t.started_at).unwrap_or(f64::NAN),
            ms(&t.finished_at).unwrap_or(f64::NAN),
        )
    };
    let (mut assignment, mut execution, mut transition) = (0.0, 0.0, 0.0);
    for (i, t) in tasks.iter().enumerate() {
        let (ready, started, finished) = at(t);
        assignment += started - ready;
        execution += finished - started;
        if i > 0 {
            let (_, prev_started, prev_finished) = at(tasks[i - 1]);
            if ready < prev_finished || started < prev_finished || started < prev_started {
                bail!(
                    "chain tasks overlap: {} started before {} finished",
                    t.name,
                    tasks[i - 1].name
                );
            }
            transition += ready - prev_finished;
        }
    }
    let created = ms(&run.created_at).unwrap_or(f64::NAN);
    let last = at(tasks[CHAIN - 1]).2;
    Ok(ChainTimes {
        records_total: last - created,
        assignment,
        execution,
        transition,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ChainWorker {
    Rust,
    Python,
    Subprocess,
}

impl ChainWorker {
    fn key(self) -> &'static str {
        match self {
            ChainWorker::Rust => "b.rust",
            ChainWorker::Python => "b.py",
            ChainWorker::Subprocess => "b.sh",
        }
    }
}

enum AnyWorker {
    Rust(RustWorker),
    Python(PythonWorker),
    None,
}

impl AnyWorker {
    async fn start(kind: ChainWorker, ctx: &Ctx, server: &ServerProc) -> anyhow::Result<Self> {
        Ok(match kind {
            ChainWorker::Rust => AnyWorker::Rust(RustWorker::start(server, "bench-b", 4).await?),
            ChainWorker::Python => AnyWorker::Python(
                PythonWorker::start(&ctx.python, server, server.data_dir(), 4).await?,
            ),
            ChainWorker::Subprocess => AnyWorker::None,
        })
    }

    async fn stop(self) {
        match self {
            AnyWorker::Rust(w) => w.stop().await,
            AnyWorker::Python(w) => w.stop().await,
            AnyWorker::None => {}
        }
    }
}

pub async fn chain(ctx: &Ctx, kind: ChainWorker, out: &mut Outcome) -> anyhow::Result<()> {
    if let Some(why) = (kind == ChainWorker::Python)
        .then(|| PythonWorker::unavailable(&ctx.python))
        .flatten()
    {
        out.notes
            .push(format!("(b) Python pool worker not run: {why}"));
        return Ok(());
    }
    let server = ServerProc::start(&ctx.setup, ctx.store).await?;
    let result = async {
        let mut api = Api::connect(&server).await?;
        let subprocess = kind == ChainWorker::Subprocess;
        api.deploy(&chain_yaml("chain", subprocess), &[("noop.sh", NOOP_SH)])
            .await?;
        let worker = AnyWorker::start(kind, ctx, &server).await?;
        let key = kind.key();
        for rep in 0..=REPS {
            let t0 = Instant::now();
            let id = api.start("chain").await?;
            let run = api.watch(&id).await?;
            let wall = t0.elapsed().as_secs_f64() * 1000.0;
            let times = chain_times(&run)?;
            if rep == 0 {
                continue; // warm-up
            }
            out.push(&format!("{key}.wall"), wall);
            out.push(&format!("{key}.records"), times.records_total);
            out.push(&format!("{key}.assign"), times.assignment);
            out.push(&format!("{key}.exec"), times.execution);
            out.push(&format!("{key}.transition"), times.transition);
            out.push(&format!("{key}.per_task"), wall / CHAIN as f64);
        }
        worker.stop().await;
        anyhow::Ok(())
    }
    .await;
    finish(server, result).await
}

// ---------------------------------------------------------------- (c) + (d)

pub(crate) fn fan_yaml(name: &str, n: u32, handler: &str) -> String {
    format!(
        "name: {name}\ntasks:\n  - name: each\n    executor: workers\n    handler: {handler}\n    parallel: {n}\n    retries: 0\n"
    )
}

/// Pool workers for fan-outs: 4 sessions of 64 slots.
async fn fan_workers(server: &ServerProc) -> anyhow::Result<Vec<RustWorker>> {
    let mut workers = Vec::new();
    for i in 0..4 {
        workers.push(RustWorker::start(server, &format!("bench-fan-{i}"), 64).await?);
    }
    Ok(workers)
}

struct FanResult {
    tasks_per_s: f64,
    client_tasks_per_s: f64,
    p99_ready_started: f64,
    server_cpu_ms: f64,
    db_cpu_ms: Option<f64>,
}

async fn fan_run(
    api: &mut Api,
    server: &ServerProc,
    store: Store,
    workflow: &str,
    n: u32,
) -> anyhow::Result<FanResult> {
    let db0 = (store == Store::Postgres).then(postgres_cpu_ms).flatten();
    let cpu0 = server.cpu_ms()?;
    let t0 = Instant::now();
    let id = api.start(workflow).await?;
    api.poll_over(workflow, &id, Duration::from_millis(10), RUN_TIMEOUT)
        .await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = server.cpu_ms()?;
    let db1 = (store == Store::Postgres).then(postgres_cpu_ms).flatten();
    let run = api.get_run(&id).await?;
    check_run(&run, n as usize)?;
    let created = ms(&run.created_at).context("run created_at")?;
    let last = run
        .tasks
        .iter()
        .filter_map(|t| ms(&t.finished_at))
        .fold(f64::MIN, f64::max);
    let waits: Vec<f64> = run
        .tasks
        .iter()
        .map(|t| ms(&t.started_at).unwrap_or(f64::NAN) - ms(&t.ready_at).unwrap_or(f64::NAN))
        .collect();
    Ok(FanResult {
        tasks_per_s: f64::from(n) / ((last - created) / 1000.0),
        client_tasks_per_s: f64::from(n) / wall,
        p99_ready_started: percentile(&waits, 99.0),
        server_cpu_ms: (cpu1 - cpu0) / f64::from(n),
        db_cpu_ms: db0.zip(db1).map(|(a, b)| (b - a) / f64::from(n)),
    })
}

pub async fn fan_out(ctx: &Ctx, out: &mut Outcome) -> anyhow::Result<()> {
    let server = ServerProc::start(&ctx.setup, ctx.store).await?;
    let result = async {
        let mut api = Api::connect(&server).await?;
        api.deploy(&fan_yaml("fan1k", 1_000, "noop"), &[]).await?;
        api.deploy(&fan_yaml("fan10k", 10_000, "noop"), &[]).await?;
        let workers = fan_workers(&server).await?;
        fan_run(&mut api, &server, ctx.store, "fan1k", 1_000).await?; // warm-up
        for (workflow, n, key) in [("fan1k", 1_000, "1k"), ("fan10k", 10_000, "10k")] {
            for _ in 0..REPS {
                let r = fan_run(&mut api, &server, ctx.store, workflow, n).await?;
                out.push(&format!("c.{key}.tps"), r.tasks_per_s);
                out.push(&format!("c.{key}.client_tps"), r.client_tasks_per_s);
                out.push(&format!("c.{key}.p99"), r.p99_ready_started);
                out.push(&format!("d.{key}"), r.server_cpu_ms);
                if let Some(db) = r.db_cpu_ms {
                    out.push(&format!("d.{key}.db"), r.server_cpu_ms + db);
                }
            }
        }
        for w in workers {
            w.stop().await;
        }
        anyhow::Ok(())
    }
    .await;
    finish(server, result).await
}

// ---------------------------------------------------------------- (e)

pub async fn pending_memory(ctx: &Ctx, out: &mut Outcome) -> anyhow::Result<()> {
    const N: u32 = 10_000;
    for rep in 0..=REPS {
        let server = ServerProc::start(&ctx.setup, ctx.store).await?;
        let result = async {
            let mut api = Api::connect(&server).await?;
            api.deploy(&fan_yaml("warm", 100, "nobody"), &[]).await?;
            api.deploy(&fan_yaml("pending", N, "nobody"), &[]).await?;
            // Warm the server's caches and connection pools first.
            api.start("warm").await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let before = server.rss_bytes()?;
            let id = api.start("pending").await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = server.rss_bytes()?;
            let run = api.get_run(&id).await?;
            let pending = run.tasks.iter().filter(|t| t.status == "pending").count();
            if pending != N as usize {
                bail!("expected {N} pending task runs, found {pending}");
            }
            if rep > 0 {
                out.push(
                    "e.kb",
                    (after as f64 - before as f64) / f64::from(N) / 1024.0,
                );
            }
            anyhow::Ok(())
        }
        .await;
        finish(server, result).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- (i)

/// Items in the big `for_each`.
const BIG: u32 = 100_000;

fn big_yaml(name: &str) -> String {
    format!(
        "name: {name}\ntasks:\n  - name: list\n    executor: workers\n    handler: list\n    retries: 0\n\
         \x20 - name: each\n    executor: workers\n    handler: noop\n    retries: 0\n    depends_on: [list]\n\
         \x20   parallel: {{ for_each: list.items }}\n"
    )
}

/// A 100,000-item `for_each`: a `list` task outputs 100,000 items, and no
/// worker serves their handler yet, so they wait. The server's RSS is
/// sampled while they do (against the RSS before the run started, after a
/// warm-up fan-out went through the same code paths), then the fan-out
/// workers attach and the run must complete: every instance successful on
/// its first attempt. Pending rows are counted in the database, not through
/// the server, so nothing but the run itself grows the server's memory.
pub async fn big_for_each(ctx: &Ctx, out: &mut Outcome) -> anyhow::Result<()> {
    let max = BIG.to_string();
    let server = ServerProc::start_args(
        &ctx.setup,
        ctx.store,
        Auth::Tokens,
        &["--max-fan-out", &max],
    )
    .await?;
    let result = async {
        let mut api = Api::connect(&server).await?;
        api.deploy(&big_yaml("big"), &[]).await?;
        api.deploy(&fan_yaml("warm", 1_000, "noop"), &[]).await?;
        // Warm-up: pools, caches, the dispatch and report paths.
        let workers = fan_workers(&server).await?;
        let warm = api.start("warm").await?;
        api.poll_over("warm", &warm, Duration::from_millis(20), RUN_TIMEOUT)
            .await?;
        for w in workers {
            w.stop().await;
        }
        let lister = RustWorker::start_lister(&server, BIG).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = server.rss_bytes()?;
        let t0 = Instant::now();
        let id = api.start("big").await?;
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            if server.count_task_runs(&id, "pending").await? >= i64::from(BIG) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the {BIG} instances were not all pending within {RUN_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let expanded = t0.elapsed().as_secs_f64();
        // Sample for 2 s while they wait; the highest reading counts.
        let mut after = 0;
        for _ in 0..8 {
            after = after.max(server.rss_bytes()?);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        lister.stop().await;
        let workers = fan_workers(&server).await?;
        let t1 = Instant::now();
        api.poll_over("big", &id, Duration::from_millis(100), RUN_TIMEOUT)
            .await?;
        let drained = t1.elapsed().as_secs_f64();
        let peak = server.rss_bytes()?;
        for w in workers {
            w.stop().await;
        }
        let run = api.get_run(&id).await?;
        check_run(&run, BIG as usize + 1)?;
        out.push(
            "i.kb",
            (after as f64 - before as f64) / f64::from(BIG) / 1024.0,
        );
        out.push("i.expand", expanded);
        out.push("i.tps", f64::from(BIG) / drained);
        out.push("i.rss", peak as f64 / (1024.0 * 1024.0));
        out.notes.push(format!(
            "(i) is one run, not {REPS} (it takes minutes); its range is that run."
        ));
        anyhow::Ok(())
    }
    .await;
    finish(server, result).await
}

// ---------------------------------------------------------------- (f)

/// Opens a raw session serving `hold` with `slots` slots; returns the
/// assignments as they arrive. Pings are answered; dropping the returned
/// sender closes the session.
async fn hold_session(
    api: &mut Api,
    slots: u32,
) -> anyhow::Result<(
    mpsc::Sender<v1::SessionRequest>,
    mpsc::UnboundedReceiver<v1::AttemptRef>,
)> {
    let (tx, rx) = mpsc::channel::<v1::SessionRequest>(64);
    tx.send(v1::SessionRequest {
        message: Some(v1::session_request::Message::Attach(v1::WorkerAttach {
            name: "bench-hold".to_owned(),
            handlers: vec!["hold".to_owned()],
            slots,
            sdk: "bench".to_owned(),
        })),
    })
    .await?;
    let mut inbound = api
        .workers
        .session(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (assigned_tx, assigned_rx) = mpsc::unbounded_channel();
    // A weak sender: dropping the returned one must close the session.
    let pong = tx.downgrade();
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            match m.message {
                Some(v1::session_response::Message::Assignment(a)) => {
                    if let Some(attempt) = a.attempt {
                        let _ = assigned_tx.send(attempt);
                    }
                }
                Some(v1::session_response::Message::Ping(p)) => {
                    let Some(pong) = pong.upgrade() else { return };
                    let _ = pong
                        .send(v1::SessionRequest {
                            message: Some(v1::session_request::Message::Pong(v1::WorkerPong {
                                nonce: p.nonce,
                            })),
                        })
                        .await;
                }
                _ => {}
            }
        }
    });
    Ok((tx, assigned_rx))
}

/// Runs `call` once per attempt with at most `concurrency` calls in flight.
async fn for_each_bounded<F, Fut>(
    attempts: &[v1::AttemptRef],
    concurrency: usize,
    call: F,
) -> anyhow::Result<()>
where
    F: Fn(v1::AttemptRef) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut handles = Vec::with_capacity(attempts.len());
    for a in attempts {
        let permit = permits.clone().acquire_owned().await?;
        let fut = call(a.clone());
        handles.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(())
}

pub async fn worker_calls(ctx: &Ctx, out: &mut Outcome) -> anyhow::Result<()> {
    const N: u32 = 1_000;
    const CONCURRENCY: usize = 64;
    const CHANNELS: usize = 4;
    let hammer = if ctx.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let server = ServerProc::start(&ctx.setup, ctx.store).await?;
    let result = async {
        let mut api = Api::connect(&server).await?;
        api.deploy(&fan_yaml("hold", N, "hold"), &[]).await?;
        let mut clients = Vec::new();
        for _ in 0..CHANNELS {
            clients.push(v1::worker_service_client::WorkerServiceClient::new(
                channel(&server.url, server.worker_token.as_deref()).await?,
            ));
        }
        for rep in 0..=REPS {
            let (session, mut assigned) = hold_session(&mut api, N).await?;
            let id = api.start("hold").await?;
            let mut attempts = Vec::with_capacity(N as usize);
            while attempts.len() < N as usize {
                let a = tokio::time::timeout(Duration::from_secs(60), assigned.recv())
                    .await
                    .context("assignments stopped arriving")?
                    .context("the session closed")?;
                attempts.push(a);
            }
            let start_client = clients[0].clone();
            for_each_bounded(&attempts, CONCURRENCY, |a| {
                let mut c = start_client.clone();
                async move {
                    c.start_task(v1::StartTaskRequest { attempt: Some(a) })
                        .await
                        .map(|_| ())
                }
            })
            .await?;

            // Heartbeats: CONCURRENCY loops over the attempts, spread over
            // CHANNELS connections, for `hammer`.
            let ok = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let attempts = Arc::new(attempts);
            let t0 = Instant::now();
            let deadline = t0 + hammer;
            let mut loops = Vec::new();
            for i in 0..CONCURRENCY {
                let mut c = clients[i % CHANNELS].clone();
                let (ok, failed, attempts) = (ok.clone(), failed.clone(), attempts.clone());
                loops.push(tokio::spawn(async move {
                    let mut j = i;
                    while Instant::now() < deadline {
                        let a = attempts[j % attempts.len()].clone();
                        match c.heartbeat(v1::HeartbeatRequest { attempt: Some(a) }).await {
                            Ok(r) if !r.get_ref().cancelled => ok.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                        j += CONCURRENCY;
                    }
                }));
            }
            for l in loops {
                l.await?;
            }
            let beats_per_s = ok.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
            let failed = failed.load(Ordering::Relaxed);
            if failed > 0 {
                bail!("{failed} heartbeats failed or said cancelled");
            }

            // Reports: complete every attempt, CONCURRENCY at a time.
            let t1 = Instant::now();
            let clients_for_reports = clients.clone();
            let next = Arc::new(AtomicU64::new(0));
            for_each_bounded(&attempts, CONCURRENCY, |a| {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let mut c = clients_for_reports[i % CHANNELS].clone();
                async move {
                    c.complete_task(v1::CompleteTaskRequest {
                        metrics: Default::default(),
                        attempt: Some(a),
                        output: None,
                    })
                    .await
                    .map(|_| ())
                }
            })
            .await?;
            let reports_per_s = f64::from(N) / t1.elapsed().as_secs_f64();
            api.poll_over("hold", &id, Duration::from_millis(20), RUN_TIMEOUT)
                .await?;
            check_run(&api.get_run(&id).await?, N as usize)?;
            drop(session);
            // Let the server see the session close before the next one attaches.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if rep > 0 {
                out.push("f.heartbeats", beats_per_s);
                out.push("f.reports", reports_per_s);
            }
        }
        anyhow::Ok(())
    }
    .await;
    finish(server, result).await
}

// ---------------------------------------------------------------- (g)

/// Tasks finished per second in consecutive 10-second windows from `origin`
/// (epoch ms) up to `origin + length`.
fn windows(finished: &[f64], origin: f64, length: Duration) -> Vec<f64> {
    let width = 10_000.0;
    let count = (length.as_secs_f64() * 1000.0 / width).floor().max(1.0) as usize;
    let mut per = vec![0.0; count];
    for f in finished {
        let i = ((f - origin) / width).floor();
        if i >= 0.0 && (i as usize) < count {
            per[i as usize] += 1.0;
        }
    }
    per.iter().map(|n| n / (width / 1000.0)).collect()
}

fn now_ms() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1000.0
}

pub async fn sustained(ctx: &Ctx, out: &mut Outcome) -> anyhow::Result<()> {
    // Chains back to back with a warm Rust worker.
    let server = ServerProc::start(&ctx.setup, ctx.store).await?;
    let result = async {
        let mut api = Api::connect(&server).await?;
        api.deploy(&chain_yaml("chain", false), &[]).await?;
        let worker = RustWorker::start(&server, "bench-g", 4).await?;
        let warm = api.start("chain").await?;
        api.watch(&warm).await?;
        let origin = now_ms();
        let t0 = Instant::now();
        let mut ids = Vec::new();
        while t0.elapsed() < ctx.sustained {
            let id = api.start("chain").await?;
            api.watch(&id).await?;
            ids.push(id);
        }
        let mut finished = Vec::new();
        for id in &ids {
            let run = api.get_run(id).await?;
            chain_times(&run)?;
            finished.extend(run.tasks.iter().filter_map(|t| ms(&t.finished_at)));
        }
        out.windows.insert(
            "g.chain".to_owned(),
            windows(&finished, origin, ctx.sustained),
        );
        worker.stop().await;
        anyhow::Ok(())
    }
    .await;
    finish(server, result).await?;

    // Fan-outs of 1,000, two in flight at a time.
    let server = ServerProc::start(&ctx.setup, ctx.store).await?;
    let result = async {
        let mut api = Api::connect(&server).await?;
        api.deploy(&fan_yaml("fan1k", 1_000, "noop"), &[]).await?;
        let workers = fan_workers(&server).await?;
        let warm = api.start("fan1k").await?;
        api.poll_over("fan1k", &warm, Duration::from_millis(10), RUN_TIMEOUT)
            .await?;
        let origin = now_ms();
        let t0 = Instant::now();
        let length = ctx.sustained;
        let mut lanes = Vec::new();
        for _ in 0..2 {
            let mut api = api.clone();
            lanes.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                while t0.elapsed() < length {
                    let id = api.start("fan1k").await?;
                    api.poll_over("fan1k", &id, Duration::from_millis(10), RUN_TIMEOUT)
                        .await?;
                    ids.push(id);
                }
                anyhow::Ok(ids)
            }));
        }
        let mut finished = Vec::new();
        for lane in lanes {
            for id in lane.await?? {
                let run = api.get_run(&id).await?;
                check_run(&run, 1_000)?;
                finished.extend(run.tasks.iter().filter_map(|t| ms(&t.finished_at)));
            }
        }
        out.windows
            .insert("g.fan".to_owned(), windows(&finished, origin, length));
        for w in workers {
            w.stop().await;
        }
        anyhow::Ok(())
    }
    .await;
    finish(server, result).await
}

// ---------------------------------------------------------------- (h)

/// Sequential `GetWorkflow`s on one warm connection; their p50 in µs.
async fn small_calls(api: &mut Api, calls: usize) -> anyhow::Result<f64> {
    let mut micros = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        api.workflows
            .get_workflow(v1::GetWorkflowRequest {
                name: "one".to_owned(),
                ..Default::default()
            })
            .await
            .context("GetWorkflow")?;
        micros.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentile(&micros, 50.0))
}

/// What authentication costs a small call: the same `GetWorkflow`s against
/// a server that requires tokens and one that does not, measured in
/// alternating batches so that both see the same machine.
pub async fn auth_overhead(ctx: &Ctx, out: &mut Outcome) -> anyhow::Result<()> {
    let calls = if ctx.quick { 500 } else { 2_000 };
    let open = ServerProc::start_with(&ctx.setup, ctx.store, Auth::Off).await?;
    let locked = ServerProc::start_with(&ctx.setup, ctx.store, Auth::Tokens).await?;
    let result = async {
        let mut open_api = Api::connect(&open).await?;
        let mut locked_api = Api::connect(&locked).await?;
        open_api.deploy(ONE, &[]).await?;
        locked_api.deploy(ONE, &[]).await?;
        for rep in 0..=REPS {
            let p50_open = small_calls(&mut open_api, calls).await?;
            let p50_token = small_calls(&mut locked_api, calls).await?;
            if rep > 0 {
                out.push("h.open", p50_open);
                out.push("h.token", p50_token);
                out.push("h.cost", p50_token - p50_open);
            }
        }
        anyhow::Ok(())
    }
    .await;
    open.stop().await?;
    locked.stop().await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }

    #[test]
    fn windows_count_per_second() {
        let w = windows(
            &[0.0, 5_000.0, 10_000.0, 25_000.0, 31_000.0],
            0.0,
            Duration::from_secs(30),
        );
        assert_eq!(w, vec![0.2, 0.1, 0.1]);
    }

    #[test]
    fn chain_yaml_links_each_task_to_the_previous() {
        let yaml = chain_yaml("c", false);
        assert!(yaml.contains("name: t40"));
        assert!(yaml.contains("depends_on: [t39]"));
        assert!(!yaml.contains("depends_on: [t40]"));
    }
}
