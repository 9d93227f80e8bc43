//! Idempotent starts: `StartRun` with a `request_id` creates a run once.
//!
//! The id is recorded under a unique key (workflow, request id) in the run's
//! own transaction, so two concurrent starts with one id, on one replica or
//! several, create one run: the second insert waits for the first
//! transaction and then finds the key taken (PostgreSQL), or runs after it
//! (SQLite's single writer), and returns the first run. Ids are kept for
//! [`RETENTION`]; expired ones are deleted as new ones are recorded, so the
//! table stays as small as a day of ids.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use super::rows::ms;
use super::sql::{Backend, Columns, Conn, Query};
use super::store::Store;
use super::{Error, NewRun, Result, RunRecord, Runs, Transition};
use crate::notify::Changes;

/// How long a request id returns its first run.
pub const RETENTION: TimeDelta = TimeDelta::hours(24);
/// Longest request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Checks a request id: 1–128 printable ASCII characters.
pub fn check_request_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::InvalidArgument(format!(
            "field `request_id`: use 1 to {MAX_REQUEST_ID_LEN} printable ASCII characters without spaces (a UUID is a good choice)"
        )));
    }
    Ok(())
}

/// The idempotent-start role of the state store.
#[async_trait]
pub trait RunRequests: Send + Sync {
    /// Creates the run unless `request_id` already created one for this
    /// workflow within [`RETENTION`]; returns the run and whether it is new.
    async fn create_run_once(
        &self,
        new: NewRun,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(RunRecord, bool)>;
}

fn expired(now: DateTime<Utc>) -> i64 {
    ms(now - RETENTION)
}

#[async_trait]
impl<B: Backend> RunRequests for Store<B> {
    async fn create_run_once(
        &self,
        new: NewRun,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(RunRecord, bool)> {
        check_request_id(request_id)?;
        let (run_id, told) = self
            .write("create_run", || {
                self.create_requested_run(&new, request_id, now)
            })
            .await?;
        let created = told.is_some();
        if let Some(told) = told {
            self.notify(Changes::ALL, &told);
        }
        let run = self.get_run(&run_id).await?.ok_or_else(|| {
            Error::Corrupt(format!("run {run_id} of a recorded request id vanished"))
        })?;
        Ok((run, created))
    }
}

#[allow(private_bounds)]
impl<B: Backend> Store<B> {
    /// One try of [`RunRequests::create_run_once`]: the run's id and, when
    /// this call created it, what to tell observers.
    async fn create_requested_run(
        &self,
        new: &NewRun,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, Option<Vec<Transition>>)> {
        let version = self.current_version(&new.workflow).await?;
        let mut tx = self.backend().begin().await?;
        tx.execute(Query::new("DELETE FROM run_requests WHERE created_at < $1").bind(expired(now)))
            .await?;
        // A concurrent start with the same id waits here until the first
        // one commits (PostgreSQL), or runs after it (SQLite's single
        // writer), then finds the key taken.
        let recorded = tx
            .execute(
                Query::new(
                    "INSERT INTO run_requests (workflow, request_id, run_id, created_at) VALUES ($1, $2, '', $3) \
                     ON CONFLICT (workflow, request_id) DO NOTHING",
                )
                .bind(&new.workflow)
                .bind(request_id)
                .bind(ms(now)),
            )
            .await?;
        if recorded == 0 {
            let run_id = tx
                .fetch_optional(
                    Query::new(
                        "SELECT run_id FROM run_requests WHERE workflow = $1 AND request_id = $2",
                    )
                    .bind(&new.workflow)
                    .bind(request_id),
                )
                .await?
                .ok_or_else(|| Error::Corrupt(format!("request id `{request_id}` vanished")))?
                .text("run_id")?;
            tx.commit().await?;
            return Ok((run_id, None));
        }
        let (run_id, told) = self.insert_run(&mut *tx, new, &version, now).await?;
        tx.execute(
            Query::new(
                "UPDATE run_requests SET run_id = $1 WHERE workflow = $2 AND request_id = $3",
            )
            .bind(&run_id)
            .bind(&new.workflow)
            .bind(request_id),
        )
        .await?;
        tx.commit().await?;
        Ok((run_id, Some(told)))
    }
}
