//! The embedded default store: SQLite in WAL mode through sqlx.
//!
//! SQLite has one writer, so writes go through a pool of one connection (no
//! lock-upgrade deadlocks, no SQLITE_BUSY between our own transactions) and
//! reads through a separate pool. That single writer is also why the shared
//! statements' row-lock clauses are dropped here: every write transaction
//! already runs alone.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool};

use super::sql::Backend;
use super::store::Store;
use super::{Error, Limits, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// The SQLite state store.
pub type SqliteStore = Store<SqliteBackend>;

/// Connections to one SQLite database.
#[derive(Clone)]
pub struct SqliteBackend {
    write: SqlitePool,
    read: SqlitePool,
}

impl Store<SqliteBackend> {
    /// Opens (creating when missing) and migrates the database at `url`.
    pub async fn open(url: &str, limits: Limits) -> Result<Self> {
        Ok(Store::new(SqliteBackend::open(url).await?, limits))
    }

    /// The token store in this database, on the same writer and read pools.
    pub fn tokens(&self) -> super::tokens::Tokens<SqliteBackend> {
        super::tokens::Tokens::new(self.backend().clone())
    }
}

impl SqliteBackend {
    async fn open(url: &str) -> Result<Self> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let path = url
            .strip_prefix("sqlite://")
            .map(|p| p.split('?').next().unwrap_or(p));
        if !in_memory
            && let Some(path) = path
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::InvalidArgument(format!("cannot create the folder of {path}: {e}"))
            })?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        // An in-memory database exists once per connection: share one.
        // A file does not drop connections: no test before each use (sqlx
        // would run one more statement on the connection's thread every
        // time; it still checks each connection when it is given back).
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        // Statistics for the query planner, gathered only for tables that
        // changed enough since the last time and with a bounded effort, so
        // a large run history keeps its plans without a long start-up.
        sqlx::query("PRAGMA optimize=0x10002")
            .execute(&write)
            .await?;
        let read = if in_memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Self { write, read })
    }
}

impl Backend for SqliteBackend {
    type Db = Sqlite;
    const WRITERS: usize = 1;
    const ROW_LOCKS: bool = false;

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.write.begin().await?)
    }

    async fn read(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>> {
        Ok(self.read.acquire().await?)
    }

    fn is_conflict(error: &Error) -> bool {
        // SQLITE_BUSY (5) and its extended codes: another process holds the
        // write lock longer than the busy timeout.
        match error {
            Error::Database(sqlx::Error::Database(db)) => db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| code & 0xff == 5),
            _ => false,
        }
    }
}

super::sql::sqlx_backend! {
    db: Sqlite,
    conn: SqliteConnection,
    row: SqliteRow,
    dialect: dialect,
    // SQLite has no arrays: a list travels as a JSON array for `json_each`.
    list: |list| serde_json::Value::from(list).to_string(),
}

/// The SQLite form of a shared statement. Static statements are rewritten
/// once and kept; built ones every time.
fn dialect(sql: Cow<'static, str>) -> Cow<'static, str> {
    static REWRITTEN: OnceLock<Mutex<HashMap<(usize, usize), &'static str>>> = OnceLock::new();
    match sql {
        Cow::Borrowed(s) => {
            let key = (s.as_ptr() as usize, s.len());
            let cache = REWRITTEN.get_or_init(Default::default);
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            let found = cache.entry(key).or_insert_with(|| match rewrite(s) {
                // Static statements are a fixed set: each is leaked once.
                Cow::Owned(o) => Box::leak(o.into_boxed_str()),
                Cow::Borrowed(b) => b,
            });
            Cow::Borrowed(found)
        }
        Cow::Owned(s) => {
            let s = rewrite(&s).into_owned();
            Cow::Owned(anonymous_parameters(&s).unwrap_or(s))
        }
    }
}

/// `$1, $2, … $n`, each once and in that order, become `?`; any other
/// statement is left as it is (`None`). SQLite finds a numbered parameter
/// by a linear search of the statement's parameter list, once when it
/// parses the statement and again for every value bound, so a statement of
/// n numbered parameters costs O(n²): a 500-row insert of 17 columns took
/// ≈ 0.4 s, and the 100,000 instances of a `for_each` 77 s (`strncmp` and
/// `sqlite3_bind_parameter_name` were 84 % of the server's samples).
/// Anonymous `?` parameters are numbered by position, at no cost. Applied
/// to the statements built at run time (multi-row inserts), whose
/// parameters are sequential by construction.
fn anonymous_parameters(sql: &str) -> Option<String> {
    let mut out = String::with_capacity(sql.len());
    let mut next = 1u64;
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..i]);
        if digits == 0 {
            out.push('$');
        } else {
            if after[..digits].parse::<u64>().ok()? != next {
                return None;
            }
            next += 1;
            out.push('?');
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    Some(out)
}

/// `= ANY($n)` becomes `IN (SELECT value FROM json_each($n))` (a list is
/// bound as a JSON array), and row-lock clauses (`FOR UPDATE [OF t] [SKIP
/// LOCKED]`, `FOR SHARE …`) go.
fn rewrite(sql: &str) -> Cow<'_, str> {
    if !sql.contains("= ANY($") && !sql.contains(" FOR UPDATE") && !sql.contains(" FOR SHARE") {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    loop {
        let any = rest.find("= ANY($");
        let lock = [" FOR UPDATE", " FOR SHARE"]
            .iter()
            .filter_map(|p| rest.find(p))
            .min();
        match (any, lock) {
            (Some(a), l) if l.is_none_or(|l| a < l) => {
                out.push_str(&rest[..a]);
                let after = &rest[a + "= ANY(".len()..];
                let close = after.find(')').unwrap_or(after.len());
                out.push_str("IN (SELECT value FROM json_each(");
                out.push_str(&after[..close]);
                out.push_str("))");
                rest = after.get(close + 1..).unwrap_or("");
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                let mut after = &rest[l..];
                after = after
                    .strip_prefix(" FOR UPDATE")
                    .or_else(|| after.strip_prefix(" FOR SHARE"))
                    .unwrap_or(after);
                if let Some(of) = after.strip_prefix(" OF ") {
                    let end = of
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(of.len());
                    after = &of[end..];
                }
                for tail in [" SKIP LOCKED", " NOWAIT"] {
                    if let Some(t) = after.strip_prefix(tail) {
                        after = t;
                    }
                }
                rest = after;
            }
            _ => {
                out.push_str(rest);
                return Cow::Owned(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_parameters_become_anonymous() {
        assert_eq!(
            anonymous_parameters("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)").as_deref(),
            Some("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)")
        );
        // `$` without a number (a JSON path) stays.
        assert_eq!(
            anonymous_parameters("SELECT json_extract(x, '$.a') FROM t WHERE id = $1").as_deref(),
            Some("SELECT json_extract(x, '$.a') FROM t WHERE id = ?")
        );
        // Out of order or repeated: left alone.
        assert_eq!(anonymous_parameters("SELECT $2, $1"), None);
        assert_eq!(anonymous_parameters("SELECT $1 WHERE a = $1"), None);
        assert_eq!(anonymous_parameters("SELECT $1, $10"), None);
        assert_eq!(
            anonymous_parameters("SELECT 1").as_deref(),
            Some("SELECT 1")
        );
    }

    #[test]
    fn shared_statements_become_sqlite() {
        let cases = [
            (
                "SELECT 1 FROM t WHERE id = $1",
                "SELECT 1 FROM t WHERE id = $1",
            ),
            (
                "SELECT id FROM t WHERE id = ANY($2) AND x = $1 ORDER BY id FOR UPDATE",
                "SELECT id FROM t WHERE id IN (SELECT value FROM json_each($2)) AND x = $1 ORDER BY id",
            ),
            (
                "WITH a AS (SELECT id FROM t ORDER BY x LIMIT $2 FOR UPDATE OF t SKIP LOCKED), b AS (SELECT 1 FOR SHARE) SELECT * FROM a",
                "WITH a AS (SELECT id FROM t ORDER BY x LIMIT $2), b AS (SELECT 1) SELECT * FROM a",
            ),
            (
                "INSERT INTO w VALUES ($1) ON CONFLICT (name) DO UPDATE SET v = excluded.v",
                "INSERT INTO w VALUES ($1) ON CONFLICT (name) DO UPDATE SET v = excluded.v",
            ),
        ];
        for (shared, sqlite) in cases {
            assert_eq!(rewrite(shared), sqlite);
        }
    }
}
