//! API tokens: the small role trait [`TokenStore`] and its SQLite and
//! PostgreSQL implementations.
//!
//! It is kept apart from [`super::StateStore`] on purpose: tokens share
//! nothing with runs but the database, so their storage is one table, one
//! migration and a handful of queries that no run transition touches.
//!
//! Only a hash of each token is stored (SHA-256, hex). Tokens are 256 random
//! bits, so neither the hash nor its speed helps anyone guess one; a slow
//! password hash would only cost every request time, and a fast one lets a
//! request find its token with one index lookup.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, SqlitePool};

use super::rows::{from_ms, ms, opt_ms};
use super::sql::Columns;
use super::{Error, Result};

/// What a token may do. `Viewer` < `Operator` < `Admin` is a ladder;
/// `Worker` stands apart: it may only make the calls pool workers make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads workflows, runs and logs.
    Viewer,
    /// Also starts, cancels and retries runs.
    Operator,
    /// Also deploys and deletes workflows and manages tokens.
    Admin,
    /// Only `ork.v1.WorkerService` (pool workers).
    Worker,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Admin, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored token (never its secret, nor its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Name of the token that created this one.
    pub created_by: Option<String>,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token, lowercase hex.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
}

/// Storage of API tokens. One conformance suite covers every implementation.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a token; fails with [`Error::FailedPrecondition`] when a live
    /// (not revoked) token already has its name.
    async fn create_token(&self, new: &NewToken) -> Result<TokenRecord>;
    /// Stores `new` only when no token exists at all, revoked ones included:
    /// the first start of a server. Returns whether it was stored. Of several
    /// replicas starting at once, one wins (names of live tokens are unique).
    async fn create_first_token(&self, new: &NewToken) -> Result<bool>;
    /// Stores `new` unless its hash or its name (among live tokens) is taken.
    /// Returns whether it was stored.
    async fn ensure_token(&self, new: &NewToken) -> Result<bool>;
    /// The token with this hash, revoked and expired ones included.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Every token, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Revokes the live token named `name_or_id`, else the token with that
    /// id (revoking twice keeps the first time). `None` when there is none.
    async fn revoke_token(
        &self,
        name_or_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>>;
}

const COLUMNS: &str = "id, name, role, created_at, expires_at, revoked_at, created_by";

fn record<R: Columns>(row: &R) -> Result<TokenRecord> {
    let role = row.text("role")?;
    Ok(TokenRecord {
        id: row.text("id")?,
        name: row.text("name")?,
        role: Role::parse(&role).ok_or_else(|| Error::Corrupt(format!("token role `{role}`")))?,
        created_at: from_ms(row.int("created_at")?),
        expires_at: opt_ms(row.opt_int("expires_at")?),
        revoked_at: opt_ms(row.opt_int("revoked_at")?),
        created_by: row.opt_text("created_by")?,
    })
}

fn name_taken(e: sqlx::Error, name: &str) -> Error {
    match e.as_database_error() {
        Some(db) if db.is_unique_violation() => Error::FailedPrecondition(format!(
            "a token named `{name}` already exists; revoke it first (`ork token revoke {name}`) or pick another name"
        )),
        _ => Error::Database(e),
    }
}

fn inserted(new: &NewToken) -> TokenRecord {
    TokenRecord {
        id: new.id.clone(),
        name: new.name.clone(),
        role: new.role,
        created_at: new.created_at,
        expires_at: new.expires_at,
        revoked_at: None,
        created_by: new.created_by.clone(),
    }
}

/// Tokens in the SQLite database of a [`super::sqlite::SqliteStore`]: writes
/// through its single writer, reads through its read pool.
pub struct SqliteTokens {
    write: SqlitePool,
    read: SqlitePool,
}

impl SqliteTokens {
    pub fn new(write: SqlitePool, read: SqlitePool) -> Self {
        Self { write, read }
    }
}

/// The INSERT every backend shares; `$n` placeholders work in both.
const INSERT: &str = "INSERT INTO api_tokens (id, name, role, hash, created_at, expires_at, created_by) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const INSERT_FIRST: &str = "INSERT INTO api_tokens (id, name, role, hash, created_at, expires_at, created_by) \
     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM api_tokens) \
     ON CONFLICT DO NOTHING";
const INSERT_UNLESS_TAKEN: &str = "INSERT INTO api_tokens (id, name, role, hash, created_at, expires_at, created_by) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
const REVOKE: &str = "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2";

/// Binds a [`NewToken`] to one of the INSERTs above.
macro_rules! bind_new {
    ($query:expr, $new:expr) => {
        sqlx::query($query)
            .bind(&$new.id)
            .bind(&$new.name)
            .bind($new.role.as_str())
            .bind(&$new.hash)
            .bind(ms($new.created_at))
            .bind($new.expires_at.map(ms))
            .bind(&$new.created_by)
    };
}

/// The query a revoke resolves its target with: the live token of that name
/// first, else the token with that id.
const TARGET: &str = "SELECT id FROM api_tokens WHERE (name = $1 AND revoked_at IS NULL) OR id = $1 \
     ORDER BY (revoked_at IS NULL) DESC LIMIT 1";

#[async_trait]
impl TokenStore for SqliteTokens {
    async fn create_token(&self, new: &NewToken) -> Result<TokenRecord> {
        bind_new!(INSERT, new)
            .execute(&self.write)
            .await
            .map_err(|e| name_taken(e, &new.name))?;
        Ok(inserted(new))
    }

    async fn create_first_token(&self, new: &NewToken) -> Result<bool> {
        let done = bind_new!(INSERT_FIRST, new).execute(&self.write).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn ensure_token(&self, new: &NewToken) -> Result<bool> {
        let done = bind_new!(INSERT_UNLESS_TAKEN, new)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_tokens WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(record).collect()
    }

    async fn revoke_token(
        &self,
        name_or_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>> {
        let mut tx = self.write.begin().await?;
        let Some(id) = sqlx::query_scalar::<_, String>(TARGET)
            .bind(name_or_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        sqlx::query(REVOKE)
            .bind(ms(now))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        record(&row).map(Some)
    }
}

/// Tokens in the PostgreSQL database of a [`super::postgres::PostgresStore`].
pub struct PostgresTokens {
    pool: PgPool,
}

impl PostgresTokens {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl TokenStore for PostgresTokens {
    async fn create_token(&self, new: &NewToken) -> Result<TokenRecord> {
        bind_new!(INSERT, new)
            .execute(&self.pool)
            .await
            .map_err(|e| name_taken(e, &new.name))?;
        Ok(inserted(new))
    }

    async fn create_first_token(&self, new: &NewToken) -> Result<bool> {
        let done = bind_new!(INSERT_FIRST, new).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn ensure_token(&self, new: &NewToken) -> Result<bool> {
        let done = bind_new!(INSERT_UNLESS_TAKEN, new)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_tokens WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    async fn revoke_token(
        &self,
        name_or_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE id = ({}) RETURNING {COLUMNS}",
            TARGET.replace("$1", "$2")
        ))
        .bind(ms(now))
        .bind(name_or_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }
}
