//! The narrow interface between the store's logic and its two backends.
//!
//! Every statement is written once, in PostgreSQL's syntax with numbered
//! parameters (`$1`), and run through [`Conn`]: a connection that executes a
//! [`Query`] and returns rows read through [`Columns`]. SQLite understands
//! the same statements after two rewrites its connection applies (list
//! parameters, `= ANY($n)`, become `IN (SELECT value FROM json_each($n))`,
//! and row-lock clauses are dropped: its single writer already serializes
//! every write transaction); statements built at run time, whose numbered
//! parameters are sequential, bind anonymous `?` there instead (SQLite
//! looks numbered ones up linearly: O(n²) for a large multi-row insert).
//! A [`Backend`] opens transactions and read
//! connections, and says whether rows are locked.
//!
//! So `sqlite.rs` and `postgres.rs` keep only what differs: connecting,
//! pools, locking and dialect.

use std::borrow::Cow;
use std::future::Future;

use futures::stream::BoxStream;

use super::Result;

/// One bound parameter.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Float(f64),
    Bytes(Vec<u8>),
    /// A list for `= ANY($n)`.
    Texts(Vec<String>),
    /// A list for `= ANY($n)`.
    Ints(Vec<i64>),
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<Option<u32>> for Arg {
    fn from(v: Option<u32>) -> Self {
        Arg::Int(v.map(i64::from))
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Float(v)
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}
impl From<Vec<String>> for Arg {
    fn from(v: Vec<String>) -> Self {
        Arg::Texts(v)
    }
}
impl From<Vec<i64>> for Arg {
    fn from(v: Vec<i64>) -> Self {
        Arg::Ints(v)
    }
}
impl From<&[String]> for Arg {
    fn from(v: &[String]) -> Self {
        Arg::Texts(v.to_vec())
    }
}

/// A statement and its parameters, in order.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub sql: Cow<'static, str>,
    pub args: Vec<Arg>,
}

impl Query {
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    pub fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// A statement ending in a `VALUES` list with one tuple per row:
    /// `head` is followed by `(…), (…)` with `width` numbered parameters per
    /// tuple, then `tail`. `row` binds one row's values, `width` of them, in
    /// order. Parameters start at `$1`.
    pub fn values<T>(
        head: &str,
        rows: &[T],
        width: usize,
        tail: &str,
        mut row: impl FnMut(&T, &mut Vec<Arg>),
    ) -> Self {
        let mut sql = String::with_capacity(head.len() + tail.len() + rows.len() * width * 5);
        sql.push_str(head);
        let mut args = Vec::with_capacity(rows.len() * width);
        let mut n = 0;
        for (i, r) in rows.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for j in 0..width {
                n += 1;
                if j > 0 {
                    sql.push_str(", ");
                }
                sql.push('$');
                sql.push_str(&n.to_string());
            }
            sql.push(')');
            let before = args.len();
            row(r, &mut args);
            debug_assert_eq!(args.len() - before, width, "one value per column");
        }
        sql.push_str(tail);
        Self {
            sql: sql.into(),
            args,
        }
    }
}

/// Most rows per multi-row statement: far below SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters per statement at the widest tuples.
pub(crate) const CHUNK: usize = 500;

/// Typed column access, implemented for the row type of every backend. The
/// schemas of `migrations/sqlite` and `migrations/postgres` have the same
/// tables and columns (every integer decodes as `i64`), so one decoder serves
/// both.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn float(&self, column: &str) -> Result<f64>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>>;
}

/// A connection (or open transaction) of a backend.
pub(crate) trait Conn: Send {
    type Row: Columns + Send + Sync + 'static;

    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, query: Query) -> impl Future<Output = Result<u64>> + Send;
    fn fetch_all(&mut self, query: Query) -> impl Future<Output = Result<Vec<Self::Row>>> + Send;
    fn fetch_optional(
        &mut self,
        query: Query,
    ) -> impl Future<Output = Result<Option<Self::Row>>> + Send;
}

/// What a backend provides besides SQL: transactions, reads and its way of
/// keeping concurrent writers apart.
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: sqlx::Database<Connection: Conn>;

    /// True when concurrent write transactions exist and serialize on row
    /// locks (PostgreSQL, several replicas); false when one writer runs every
    /// write transaction in turn (SQLite), so lock-only reads are skipped.
    const ROW_LOCKS: bool;

    /// How many write transactions are worth running at once.
    const WRITERS: usize;

    /// Opens a write transaction.
    fn begin(&self) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>>> + Send;

    /// A connection for reads outside any transaction.
    fn read(&self) -> impl Future<Output = Result<sqlx::pool::PoolConnection<Self::Db>>> + Send;

    /// Called before a transaction that moved runs forward commits: tells the
    /// owners of `runs` in other processes to look (PostgreSQL notifies; a
    /// single-process store has nobody to tell). This process's own loops
    /// are woken by the notifier after the commit, not by this.
    fn wake_owners(
        &self,
        _conn: &mut <Self::Db as sqlx::Database>::Connection,
        _runs: &[String],
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Wake-ups for `owner` caused by other processes' commits; `None` when
    /// the store serves one process.
    fn wakeups(
        &self,
        _owner: &str,
    ) -> impl Future<Output = Result<Option<BoxStream<'static, ()>>>> + Send {
        async { Ok(None) }
    }

    /// True for errors that mean the transaction lost a race (a deadlock, a
    /// serialization failure) and may simply run again.
    fn is_conflict(_error: &super::Error) -> bool {
        false
    }
}

/// Statements with more parameters than this are large batches whose size
/// varies from call to call: they are not kept prepared, so they do not push
/// the statements that recur out of the connection's cache.
pub(crate) const PREPARED_MAX_ARGS: usize = 64;

/// Implements [`Columns`] for a backend's row type and [`Conn`] for its
/// connection. `dialect` turns a shared statement into the backend's SQL;
/// `list` turns a list parameter into the value bound for `= ANY($n)` (or
/// what the dialect made of it).
macro_rules! sqlx_backend {
    (db: $db:ty, conn: $conn:ty, row: $row:ty, dialect: $dialect:expr, list: $list:expr $(,)?) => {
        impl $crate::state::sql::Columns for $row {
            fn text(&self, column: &str) -> $crate::state::Result<String> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_text(&self, column: &str) -> $crate::state::Result<Option<String>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn int(&self, column: &str) -> $crate::state::Result<i64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_int(&self, column: &str) -> $crate::state::Result<Option<i64>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn float(&self, column: &str) -> $crate::state::Result<f64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn bytes(&self, column: &str) -> $crate::state::Result<Vec<u8>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }

        fn build(
            sql: &str,
            args: Vec<$crate::state::sql::Arg>,
        ) -> sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments<'_>> {
            use $crate::state::sql::Arg;
            let persistent = args.len() <= $crate::state::sql::PREPARED_MAX_ARGS;
            let mut q = sqlx::query(sql).persistent(persistent);
            for arg in args {
                q = match arg {
                    Arg::Text(v) => q.bind(v),
                    Arg::Int(v) => q.bind(v),
                    Arg::Float(v) => q.bind(v),
                    Arg::Bytes(v) => q.bind(v),
                    Arg::Texts(v) => q.bind(($list)(v)),
                    Arg::Ints(v) => q.bind(($list)(v)),
                };
            }
            q
        }

        impl $crate::state::sql::Conn for $conn {
            type Row = $row;

            async fn execute(
                &mut self,
                query: $crate::state::sql::Query,
            ) -> $crate::state::Result<u64> {
                let sql = ($dialect)(query.sql);
                Ok(build(&sql, query.args).execute(self).await?.rows_affected())
            }

            async fn fetch_all(
                &mut self,
                query: $crate::state::sql::Query,
            ) -> $crate::state::Result<Vec<$row>> {
                let sql = ($dialect)(query.sql);
                Ok(build(&sql, query.args).fetch_all(self).await?)
            }

            async fn fetch_optional(
                &mut self,
                query: $crate::state::sql::Query,
            ) -> $crate::state::Result<Option<$row>> {
                let sql = ($dialect)(query.sql);
                Ok(build(&sql, query.args).fetch_optional(self).await?)
            }
        }
    };
}
pub(crate) use sqlx_backend;

/// The row type of a backend's connections.
pub(crate) type RowOf<B> = <<<B as Backend>::Db as sqlx::Database>::Connection as Conn>::Row;

/// Runs `op` again while it loses to a deadlock, a few times at most.
pub(crate) async fn retrying<B: Backend, T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    const RETRIES: u32 = 5;
    let mut tries = 0;
    loop {
        match op().await {
            Err(e) if B::is_conflict(&e) && tries < RETRIES => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5 << tries)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_number_every_parameter() {
        let q = Query::values(
            "INSERT INTO t (a, b) VALUES ",
            &[(1, "x"), (2, "y")],
            2,
            " RETURNING a",
            |(a, b), args| {
                args.push(Arg::from(*a as i64));
                args.push(Arg::from(*b));
            },
        );
        assert_eq!(
            q.sql,
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) RETURNING a"
        );
        assert_eq!(q.args.len(), 4);
    }
}
