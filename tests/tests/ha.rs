//! Several `ork server` replicas on one PostgreSQL while replicas are killed
//! with SIGKILL and frozen with SIGSTOP: every run still succeeds, no attempt
//! is dispatched twice and no task succeeds twice.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ork_tests::{Clients, binary, free_port, task, tasks};
use serde_json::json;

/// The PostgreSQL server of `scripts/postgres.sh`; the test skips loudly
/// without it, and fails in CI.
fn postgres_url() -> Option<String> {
    match std::env::var("ORK_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "ORK_TEST_POSTGRES_URL is not set in CI: run the tests under scripts/postgres.sh"
            );
            eprintln!(
                "\n*** SKIPPING the high-availability test: ORK_TEST_POSTGRES_URL is not set (use scripts/postgres.sh) ***\n"
            );
            None
        }
    }
}

/// A first admin token for the replicas, in a file they all read.
fn admin_token(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let token = ork_server::auth::credentials::generate().expect("random token");
    let file = dir.join("admin.token");
    std::fs::write(&file, &token).expect("token file");
    (file, token)
}

/// Clients of one replica, with the admin token.
async fn connect(url: &str, token: &str) -> Clients {
    Clients::connect_with(
        url,
        &ork_worker::ConnectOptions::default().with_token(token),
    )
    .await
}

/// A fresh database, dropped at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create(admin: &str) -> Self {
        Self::create_named(admin, "chaos")
    }

    fn create_named(admin: &str, what: &str) -> Self {
        let name = format!("ork_ha_{what}_{}", std::process::id());
        let psql = |sql: &str| {
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
        };
        psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        psql(&format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Self {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin)
            .arg("-qc")
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

struct Replica {
    port: u16,
    /// The first admin token, shared by every replica (tokens live in the
    /// shared database; each replica registers the file's token once).
    token_file: std::path::PathBuf,
    dir: std::path::PathBuf,
    db: String,
    child: Option<Child>,
    starts: u32,
}

impl Replica {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("server-{}.log", self.starts)))
            .expect("log");
        let child = Command::new(binary("ork"))
            .args(["server", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--state", &self.db])
            .args([
                "--objects",
                &format!("file://{}", self.dir.join("objects").display()),
            ])
            .args(["--data-dir", &self.dir.display().to_string()])
            .args([
                "--bootstrap-token-file",
                &self.token_file.display().to_string(),
            ])
            .args([
                "--heartbeat-interval",
                "1",
                "--heartbeat-timeout",
                "4",
                "--lease-seconds",
                "3",
            ])
            .args(["--max-subprocesses", "8"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ork server");
        self.child = Some(child);
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

const WORKFLOW: &str = r#"
name: ha
tasks:
  - name: start
    file: step.sh
    input: { audit: "{{ run.input.audit }}" }
  - name: work
    file: step.sh
    depends_on: [start]
    parallel: 48
    input: { audit: "{{ run.input.audit }}" }
  - name: join
    file: step.sh
    depends_on: [work]
    input: { audit: "{{ run.input.audit }}" }
"#;

/// Appends "task_run attempt server" to the audit file, then works a little.
const STEP: &str = "#!/bin/bash\naudit=$(python3 -c 'import json,os; print(json.load(open(os.environ[\"ORK_INPUT\"]))[\"audit\"])')\necho \"$ORK_TASK_RUN_ID $ORK_ATTEMPT $ORK_SERVER\" >> \"$audit\"\nsleep 0.2\n";

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_finish_every_run_through_kills_and_freezes() {
    let Some(admin) = postgres_url() else { return };
    let db = Database::create(&admin);
    let root = tempfile::tempdir().expect("dir");
    let (token_file, token) = admin_token(root.path());
    let audit = root.path().join("audit.log");
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| {
            let dir = root.path().join(format!("replica-{i}"));
            std::fs::create_dir_all(&dir).expect("dir");
            Replica {
                port: free_port(),
                token_file: token_file.clone(),
                dir,
                db: db.url.clone(),
                child: None,
                starts: 0,
            }
        })
        .collect();
    for r in &mut replicas {
        r.start();
    }
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(connect(&r.url(), &token).await);
    }
    clients[0]
        .deploy(WORKFLOW, &[("step.sh", STEP)])
        .await
        .expect("deploy");
    let mut runs = Vec::new();
    for i in 0..20 {
        let c = &mut clients[i % 3];
        runs.push(
            c.start_run("ha", json!({"audit": audit.display().to_string()}))
                .await
                .id,
        );
    }

    // Chaos: every few seconds one replica is killed (and restarted) or
    // frozen past its lease (and resumed), until every run has ended.
    let deadline = Instant::now() + Duration::from_secs(420);
    let mut round = 0usize;
    let mut observer = 0usize;
    loop {
        let mut pending = 0;
        for id in &runs {
            let run = loop {
                observer = (observer + 1) % 3;
                let url = replicas[observer].url();
                let mut c = connect(&url, &token).await;
                match c
                    .runs
                    .get_run(ork_proto::v1::GetRunRequest { id: id.clone() })
                    .await
                {
                    Ok(r) => break r.into_inner().run.expect("run"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            if !matches!(run.status.as_str(), "success" | "failed" | "cancelled") {
                pending += 1;
            }
        }
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} runs still unfinished after the chaos"
        );
        let victim = round % 3;
        if round % 4 == 3 {
            // Frozen for longer than its lease: others take its runs over.
            replicas[victim].signal("-STOP");
            tokio::time::sleep(Duration::from_secs(5)).await;
            replicas[victim].signal("-CONT");
        } else {
            replicas[victim].kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            replicas[victim].start();
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    assert!(
        round >= 2,
        "the runs ended before any chaos: make the workload longer"
    );

    let mut c = connect(&replicas[0].url(), &token).await;
    let mut successes: HashSet<String> = HashSet::new();
    for id in &runs {
        let run = c.get_run(id).await;
        assert_eq!(run.status, "success", "run {id}: {run:#?}");
        assert_eq!(tasks(&run, "work").len(), 48);
        assert_eq!(task(&run, "join").status, "success");
        for t in &run.tasks {
            let won: Vec<_> = t
                .attempts
                .iter()
                .filter(|a| a.status == "success")
                .collect();
            assert_eq!(
                won.len(),
                1,
                "task run {} succeeded {} times",
                t.id,
                won.len()
            );
            assert_eq!(
                won[0].attempt, t.attempt,
                "the success is the current attempt"
            );
            successes.insert(t.id.clone());
        }
    }
    assert_eq!(successes.len(), 20 * 50);

    // Every launch that ran a task appended one line: an attempt launched
    // twice would show up twice.
    let text = std::fs::read_to_string(&audit).expect("audit");
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let key = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        *seen.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "attempts dispatched more than once: {twice:?}"
    );
    eprintln!(
        "chaos rounds: {round}, launches: {}, attempts: {}",
        text.lines().count(),
        seen.len()
    );
    drop(replicas);
}

/// A replica frozen past its lease loses its runs to another within the
/// lease plus a tick, and once resumed it changes nothing of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_owner_is_taken_over_within_its_lease_and_stays_fenced_out() {
    let Some(admin) = postgres_url() else { return };
    let db = Database::create_named(&admin, "takeover");
    let root = tempfile::tempdir().expect("dir");
    let (token_file, token) = admin_token(root.path());
    let mut replicas: Vec<Replica> = (0..2)
        .map(|i| {
            let dir = root.path().join(format!("replica-{i}"));
            std::fs::create_dir_all(&dir).expect("dir");
            Replica {
                port: free_port(),
                token_file: token_file.clone(),
                dir,
                db: db.url.clone(),
                child: None,
                starts: 0,
            }
        })
        .collect();
    for r in &mut replicas {
        r.start();
    }
    let mut a = connect(&replicas[0].url(), &token).await;
    let mut b = connect(&replicas[1].url(), &token).await;
    let yaml = "name: slow\ntasks:\n  - name: one\n    file: s.sh\n  - name: two\n    file: s.sh\n    depends_on: [one]\n";
    a.deploy(yaml, &[("s.sh", "#!/bin/bash\nsleep 2\n")])
        .await
        .expect("deploy");
    let run = a.start_run("slow", json!({})).await;
    let first_owner = run.owner.clone();
    assert!(
        !first_owner.is_empty(),
        "the run is leased to the replica that received it"
    );

    replicas[0].signal("-STOP");
    let frozen = Instant::now();
    let taken = loop {
        let now = b.get_run(&run.id).await;
        if now.owner != first_owner {
            break frozen.elapsed();
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(30),
            "nobody took the run over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("takeover after {taken:?} (lease 3 s, tick 0.5 s)");
    // The lease may have been renewed just before the freeze: 3 s, plus one
    // tick of the taker, plus slack for a loaded machine.
    assert!(
        taken <= Duration::from_millis(3_000 + 500 + 3_000),
        "takeover took {taken:?}"
    );
    let new_owner = b.get_run(&run.id).await.owner;

    replicas[0].signal("-CONT");
    let done = b.wait_run(&run.id, Duration::from_secs(90)).await;
    assert_eq!(done.status, "success", "{done:#?}");
    assert_eq!(
        done.owner, new_owner,
        "the resumed replica did not take the run back"
    );
    for t in &done.tasks {
        let won = t.attempts.iter().filter(|x| x.status == "success").count();
        assert_eq!(won, 1, "{t:#?}");
    }
}
