//! API tokens: the small role trait [`TokenStore`], written once for the
//! SQLite and PostgreSQL stores.
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

use super::rows::{from_ms, ms, opt_ms};
use super::sql::{Backend, Columns, Conn, Query};
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

fn name_taken(e: Error, name: &str) -> Error {
    match &e {
        Error::Database(db)
            if db
                .as_database_error()
                .is_some_and(|db| db.is_unique_violation()) =>
        {
            Error::FailedPrecondition(format!(
                "a token named `{name}` already exists; revoke it first (`ork token revoke {name}`) or pick another name"
            ))
        }
        _ => e,
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

/// Tokens in the database of a state store, on its connections: writes
/// through its write transactions (SQLite's single writer), reads through
/// its read pool. Written once for both backends, through `sql.rs`.
#[allow(private_bounds)]
pub struct Tokens<B: Backend> {
    backend: B,
}

#[allow(private_bounds)]
impl<B: Backend> Tokens<B> {
    pub(super) fn new(backend: B) -> Self {
        Self { backend }
    }
}

const INSERT: &str = "INSERT INTO api_tokens (id, name, role, hash, created_at, expires_at, created_by) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const INSERT_FIRST: &str = "INSERT INTO api_tokens (id, name, role, hash, created_at, expires_at, created_by) \
     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM api_tokens) \
     ON CONFLICT DO NOTHING";
const INSERT_UNLESS_TAKEN: &str = "INSERT INTO api_tokens (id, name, role, hash, created_at, expires_at, created_by) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
const BY_HASH: &str = "SELECT id, name, role, created_at, expires_at, revoked_at, created_by FROM api_tokens WHERE hash = $1";
const ALL: &str = "SELECT id, name, role, created_at, expires_at, revoked_at, created_by FROM api_tokens \
     ORDER BY created_at, id";
/// Revokes the live token of that name if there is one, else the token with
/// that id; revoking twice keeps the first time.
const REVOKE: &str = "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) \
     WHERE id = (SELECT id FROM api_tokens WHERE (name = $2 AND revoked_at IS NULL) OR id = $2 \
     ORDER BY (revoked_at IS NULL) DESC LIMIT 1) \
     RETURNING id, name, role, created_at, expires_at, revoked_at, created_by";

/// One of the INSERTs above with `new` bound.
fn insert(sql: &'static str, new: &NewToken) -> Query {
    Query::new(sql)
        .bind(new.id.as_str())
        .bind(new.name.as_str())
        .bind(new.role.as_str())
        .bind(new.hash.as_str())
        .bind(ms(new.created_at))
        .bind(new.expires_at.map(ms))
        .bind(new.created_by.as_deref())
}

#[async_trait]
impl<B: Backend> TokenStore for Tokens<B> {
    async fn create_token(&self, new: &NewToken) -> Result<TokenRecord> {
        let mut tx = self.backend.begin().await?;
        tx.execute(insert(INSERT, new))
            .await
            .map_err(|e| name_taken(e, &new.name))?;
        tx.commit().await?;
        Ok(inserted(new))
    }

    async fn create_first_token(&self, new: &NewToken) -> Result<bool> {
        let mut tx = self.backend.begin().await?;
        let done = tx.execute(insert(INSERT_FIRST, new)).await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn ensure_token(&self, new: &NewToken) -> Result<bool> {
        let mut tx = self.backend.begin().await?;
        let done = tx.execute(insert(INSERT_UNLESS_TAKEN, new)).await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let mut conn = self.backend.read().await?;
        let row = conn.fetch_optional(Query::new(BY_HASH).bind(hash)).await?;
        row.as_ref().map(record).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let mut conn = self.backend.read().await?;
        let rows = conn.fetch_all(Query::new(ALL)).await?;
        rows.iter().map(record).collect()
    }

    async fn revoke_token(
        &self,
        name_or_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>> {
        let mut tx = self.backend.begin().await?;
        let row = tx
            .fetch_optional(Query::new(REVOKE).bind(ms(now)).bind(name_or_id))
            .await?;
        tx.commit().await?;
        row.as_ref().map(record).transpose()
    }
}
