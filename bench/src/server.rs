//! The server under test: an `ork server` child process on a free loopback
//! port, against a fresh SQLite file or a fresh PostgreSQL database, and the
//! `/proc` readings (CPU time, resident memory) taken from it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::Connection as _;
use tokio::process::{Child, Command};

/// Which state store a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    pub fn label(self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL",
        }
    }
}

/// Where the binaries are and which PostgreSQL cluster to use.
#[derive(Debug, Clone)]
pub struct Setup {
    pub bin_dir: PathBuf,
    pub postgres_url: Option<String>,
}

/// Whether the server under test requires tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// As in production: every call carries a token.
    Tokens,
    /// `--insecure-no-auth` (loopback), to measure what authentication costs.
    Off,
}

/// A running `ork server`; killed (and its database dropped) by [`stop`].
///
/// [`stop`]: ServerProc::stop
pub struct ServerProc {
    pub url: String,
    pub pid: u32,
    /// The first admin token (with [`Auth::Tokens`]): deploys, starts runs.
    pub admin_token: Option<String>,
    /// A worker token for the pool workers and raw sessions.
    pub worker_token: Option<String>,
    /// The state store's URL (the SQLite file or the PostgreSQL database),
    /// for the scenarios that count rows without asking the server.
    pub state_url: String,
    child: Child,
    dir: tempfile::TempDir,
    database: Option<(String, String)>,
}

static NEXT_DB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl ServerProc {
    /// A server that requires tokens, as in production.
    pub async fn start(setup: &Setup, store: Store) -> anyhow::Result<Self> {
        Self::start_with(setup, store, Auth::Tokens).await
    }

    pub async fn start_with(setup: &Setup, store: Store, auth: Auth) -> anyhow::Result<Self> {
        Self::start_args(setup, store, auth, &[]).await
    }

    /// A server with `extra` arguments after the harness's own.
    pub async fn start_args(
        setup: &Setup,
        store: Store,
        auth: Auth,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut database = None;
        let state_url = match store {
            Store::Sqlite => format!("sqlite://{}", dir.path().join("ork.db").display()),
            Store::Postgres => {
                let admin = setup.postgres_url.clone().context("no PostgreSQL url")?;
                let name = format!(
                    "ork_bench_{}_{}",
                    std::process::id(),
                    NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                let url = with_database(&admin, &name)?;
                database = Some((admin, name));
                url
            }
        };
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let token_file = dir.path().join("admin.token");
        let auth_args: Vec<String> = match auth {
            Auth::Tokens => vec![
                "--bootstrap-token-file".into(),
                token_file.display().to_string(),
            ],
            Auth::Off => vec!["--insecure-no-auth".into()],
        };
        let child = Command::new(setup.bin_dir.join("ork"))
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--state",
                &state_url,
            ])
            .args([
                "--objects",
                &format!("file://{}", dir.path().join("objects").display()),
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--scheduler-id", "bench"])
            .arg("--worker-binary")
            .arg(setup.bin_dir.join("ork-worker"))
            .args(auth_args)
            // The harness starts runs as fast as it can; the per-token rate
            // limit is a policy, not a cost, so it is lifted.
            .args(["--start-run-rate", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", setup.bin_dir.join("ork").display()))?;
        let pid = child.id().context("server pid")?;
        let url = format!("http://127.0.0.1:{port}");
        let mut server = Self {
            url,
            pid,
            admin_token: None,
            worker_token: None,
            state_url,
            child,
            dir,
            database,
        };
        server.wait_ready().await?;
        if auth == Auth::Tokens {
            let admin = std::fs::read_to_string(&token_file)
                .context("the server wrote no admin token")?
                .trim()
                .to_owned();
            server.worker_token =
                Some(crate::client::create_worker_token(&server.url, &admin).await?);
            server.admin_token = Some(admin);
        }
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr = self.url.trim_start_matches("http://").to_owned();
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited with {status}:\n{}", self.log_tail());
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "the server did not listen within 20 s:\n{}",
            self.log_tail()
        )
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// CPU time (user + system) of the server process, in milliseconds.
    pub fn cpu_ms(&self) -> anyhow::Result<f64> {
        process_cpu_ms(self.pid, false)
    }

    /// Resident set size of the server, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?;
        Ok(kb * 1024)
    }

    /// Task runs of `run` in `status`, counted in the database itself (a
    /// GetRun of a large run would grow the server's memory it measures).
    pub async fn count_task_runs(&self, run: &str, status: &str) -> anyhow::Result<i64> {
        const SQL_SQLITE: &str = "SELECT COUNT(*) FROM task_runs WHERE run_id = ? AND status = ?";
        const SQL_PG: &str = "SELECT COUNT(*) FROM task_runs WHERE run_id = $1 AND status = $2";
        if self.state_url.starts_with("sqlite:") {
            let url = format!("{}?mode=ro", self.state_url);
            let mut conn = sqlx::SqliteConnection::connect(&url).await?;
            let n: i64 = sqlx::query_scalar(SQL_SQLITE)
                .bind(run)
                .bind(status)
                .fetch_one(&mut conn)
                .await?;
            conn.close().await?;
            Ok(n)
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.state_url).await?;
            let n: i64 = sqlx::query_scalar(SQL_PG)
                .bind(run)
                .bind(status)
                .fetch_one(&mut conn)
                .await?;
            conn.close().await?;
            Ok(n)
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if let Some((admin, name)) = self.database.take() {
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
        }
        Ok(())
    }
}

fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").context("postgres url without scheme")? + 3;
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host = &base[..path_start.unwrap_or(base.len())];
    Ok(match query {
        Some(q) => format!("{host}/{name}?{q}"),
        None => format!("{host}/{name}"),
    })
}

pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (plus its reaped children's when asked), in ms.
fn process_cpu_ms(pid: u32, with_children: bool) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14..17 of stat(5) are utime, stime, cutime, cstime; `rest`
    // starts at field 3.
    let get = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i - 3).context("short stat")?.parse::<f64>()?)
    };
    let mut ticks = get(14)? + get(15)?;
    if with_children {
        ticks += get(16)? + get(17)?;
    }
    Ok(ticks * 1000.0 / clock_ticks())
}

/// CPU time of every process running as the `postgres` user, children
/// that exited included (a backend's time moves to the postmaster when it is
/// reaped), in ms. `None` when there is no such user.
pub fn postgres_cpu_ms() -> Option<f64> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let uid = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .and_then(|l| l.split(':').nth(2))?
        .to_owned();
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let owner = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1));
        if owner == Some(uid.as_str()) {
            total += process_cpu_ms(pid, true).unwrap_or(0.0);
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_swapped_in_the_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://u@h:1", "b").unwrap(),
            "postgres://u@h:1/b"
        );
        assert_eq!(
            with_database("postgres://u@h:1/x?sslmode=disable", "b").unwrap(),
            "postgres://u@h:1/b?sslmode=disable"
        );
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(process_cpu_ms(std::process::id(), false).unwrap() >= 0.0);
    }
}
