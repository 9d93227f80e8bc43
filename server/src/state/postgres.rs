//! The production store: PostgreSQL through sqlx, shared by several
//! `ork server` replicas.
//!
//! Transactions run at READ COMMITTED and serialize on row locks, never on
//! SERIALIZABLE retries (the lock clauses are in the shared statements):
//! - claims lock the task runs they take with `FOR UPDATE SKIP LOCKED`, so two
//!   replicas never dispatch the same attempt and never wait on each other;
//! - everything that moves a run forward (reports, cancel, retry) first locks
//!   the runs' rows, then the task runs', each in id order. Two reports of one
//!   run therefore apply one after the other, and the second sees what the
//!   first readied (without the run lock, two fan-in reports committing
//!   together could each see the other still running and leave their
//!   successor waiting forever);
//! - the few deadlocks left possible (a bulk update against a report) are
//!   retried, whole, a few times.
//!
//! A transaction that moved runs forward notifies their owners on
//! [`WAKE_CHANNEL`] as it commits, so a report received by one replica wakes
//! the replica that holds the run's lease.
//!
//! Connection loss surfaces as [`Error::Database`]; the pool reconnects on
//! its own, and the scheduler loops retry with backoff.

use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions, PgRow};
use sqlx::{Connection, PgPool, Postgres};

use super::sql::{Backend, Conn, Query};
use super::store::Store;
use super::{Error, Limits, Result};

/// Connections per replica.
const MAX_CONNECTIONS: u32 = 16;
/// A pooled connection idle this long is checked before it is used.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long `open` keeps trying to reach the server (it may be starting too).
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// The `LISTEN/NOTIFY` channel of cross-replica wake-ups. Its payload is the
/// sending store's id, a space, and the owner to wake, or `*` for every
/// replica. A store skips its own notifications: its notifier already woke
/// its loops at the commit, and a second wake-up would only run a useless
/// claim while the next report waits.
pub const WAKE_CHANNEL: &str = "ork_wake";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The PostgreSQL state store.
pub type PostgresStore = Store<PostgresBackend>;

/// A pool of connections to one PostgreSQL database.
#[derive(Clone)]
pub struct PostgresBackend {
    pool: PgPool,
    /// This store's id in the wake-ups it sends (see [`WAKE_CHANNEL`]).
    sender: String,
}

/// Whether the wake-up `payload` is for `owner` and from another store than
/// `sender`. A payload without a sender (an older server) names the owner
/// alone.
fn wakes(payload: &str, owner: &str, sender: &str) -> bool {
    let target = match payload.split_once(' ') {
        Some((from, _)) if from == sender => return false,
        Some((_, target)) => target,
        None => payload,
    };
    target == owner || target == "*"
}

impl Store<PostgresBackend> {
    /// Connects to and migrates the database at `url`
    /// (`postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...`), waiting up
    /// to 30 s for the server to accept connections.
    pub async fn open(url: &str, limits: Limits) -> Result<Self> {
        Self::open_with_patience(url, limits, CONNECT_PATIENCE).await
    }

    /// [`PostgresStore::open`] with a bound on the wait for the server.
    pub async fn open_with_patience(url: &str, limits: Limits, patience: Duration) -> Result<Self> {
        Ok(Store::new(
            PostgresBackend::open(url, patience).await?,
            limits,
        ))
    }

    /// The token store in this database, on the same pool.
    pub fn tokens(&self) -> super::tokens::Tokens<PostgresBackend> {
        super::tokens::Tokens::new(self.backend().clone())
    }

    /// Wake-ups for `owner` sent by other replicas (a report they received
    /// for one of its runs, a run that ended): `LISTEN` on [`WAKE_CHANNEL`].
    /// After a lost connection the listener reconnects and yields once, since
    /// notifications sent meanwhile are gone.
    pub async fn listen_wakeups(&self, owner: &str) -> Result<BoxStream<'static, ()>> {
        self.backend().listen(owner).await
    }
}

impl PostgresBackend {
    async fn open(url: &str, patience: Duration) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            Error::InvalidArgument(format!("invalid PostgreSQL url `{}`: {e}", redact(url)))
        })?;
        let pool_options = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            // A connection the server dropped (restart, failover) is noticed
            // before use and replaced, instead of failing a query. sqlx
            // checks every connection as it is given back, so only one that
            // sat idle since is checked again: a round trip before every
            // query would double the round trips of a transaction.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_CHECK {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
        // Probe with single connections first: the pool's own connect retries
        // for a whole acquire timeout, which would blur the bound below.
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let remaining = patience
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(100));
            let attempt =
                tokio::time::timeout(remaining, PgConnection::connect_with(&options)).await;
            let e = match attempt {
                Ok(Ok(probe)) => {
                    let _ = probe.close().await;
                    break;
                }
                Ok(Err(e)) => e,
                Err(_) => sqlx::Error::PoolTimedOut,
            };
            if is_transient(&e) && started.elapsed() + delay < patience {
                tracing::warn!(url = %redact(url), error = %e, "PostgreSQL is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
            let waited = if is_transient(&e) {
                format!(" after trying for {} s", started.elapsed().as_secs())
            } else {
                String::new()
            };
            return Err(Error::Database(sqlx::Error::Io(std::io::Error::other(
                format!(
                    "cannot connect to PostgreSQL at {}{waited}: {e}; check that the server is up and the url, user and password are right",
                    redact(url)
                ),
            ))));
        }
        let pool = pool_options.connect_with(options).await?;
        // Replicas starting together serialize here: sqlx takes an advisory lock.
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            sender: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    async fn listen(&self, owner: &str) -> Result<BoxStream<'static, ()>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(WAKE_CHANNEL).await?;
        let owner = owner.to_owned();
        let sender = self.sender.clone();
        let stream = futures::stream::unfold(listener, move |mut listener| {
            let owner = owner.clone();
            let sender = sender.clone();
            async move {
                loop {
                    match listener.try_recv().await {
                        Ok(Some(note)) if wakes(note.payload(), &owner, &sender) => {
                            return Some(((), listener));
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return Some(((), listener)),
                        Err(e) => {
                            tracing::warn!(error = %e, "listening for wake-ups failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

impl Backend for PostgresBackend {
    type Db = Postgres;
    const WRITERS: usize = 4;
    const ROW_LOCKS: bool = true;

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn read(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    /// PostgreSQL delivers notifications at commit, one per distinct
    /// payload. A run that ended wakes every replica, since runs waiting on
    /// its workflow's `concurrency` may belong to any of them.
    async fn wake_owners(&self, conn: &mut PgConnection, runs: &[String]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        conn.execute(
            Query::new(
                "SELECT pg_notify($2, $3 || ' ' || CASE WHEN status IN ('pending', 'running') \
                 THEN COALESCE(owner, '*') ELSE '*' END) FROM runs WHERE id = ANY($1)",
            )
            .bind(runs)
            .bind(WAKE_CHANNEL)
            .bind(self.sender.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn wakeups(&self, owner: &str) -> Result<Option<BoxStream<'static, ()>>> {
        Ok(Some(self.listen(owner).await?))
    }

    fn is_conflict(error: &Error) -> bool {
        match error {
            Error::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| code == "40P01" || code == "40001"),
            _ => false,
        }
    }
}

super::sql::sqlx_backend! {
    db: Postgres,
    conn: PgConnection,
    row: PgRow,
    dialect: |sql| sql,
    list: |list| list,
}

/// The url with its password replaced, fit for logs and error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(an unparseable url)".to_owned(),
    }
}

/// Errors worth waiting out at start-up: the server is down, starting, or
/// out of connections.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 57P03 cannot_connect_now, 53300 too_many_connections, 08 connection exceptions.
            code == "57P03" || code == "53300" || code.starts_with("08")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_skip_their_sender() {
        assert!(wakes("a1 r1", "r1", "b2"));
        assert!(wakes("a1 *", "r1", "b2"));
        assert!(!wakes("a1 r2", "r1", "b2"));
        assert!(!wakes("b2 r1", "r1", "b2"), "its own");
        assert!(!wakes("b2 *", "r1", "b2"), "its own");
        // From an older server: the owner alone.
        assert!(wakes("r1", "r1", "b2"));
        assert!(wakes("*", "r1", "b2"));
        assert!(!wakes("r2", "r1", "b2"));
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://ork:s3cret@db:5432/ork"),
            "postgres://ork:***@db:5432/ork"
        );
        assert_eq!(redact("postgres://ork@db/ork"), "postgres://ork@db/ork");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error_after_the_wait() {
        // Port 1 on loopback: nothing listens, connections are refused at once.
        let url = "postgres://ork:s3cret@127.0.0.1:1/ork";
        let started = Instant::now();
        let err = PostgresStore::open_with_patience(url, Limits::default(), Duration::from_secs(1))
            .await
            .err()
            .expect("no server there");
        let message = err.to_string();
        assert!(matches!(err, Error::Database(_)), "{message}");
        assert!(
            message.contains("postgres://ork:***@127.0.0.1:1/ork"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "it retried for a while"
        );
    }
}
