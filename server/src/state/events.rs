//! Events: a published event starts one run of every subscribed workflow,
//! exactly once per event id.
//!
//! The event id is recorded under a primary key in the same transaction as
//! the runs it starts (and a row per run in `event_runs`), so a second
//! delivery of one id, on one replica or several, even concurrently, starts
//! nothing: its insert waits for the first transaction and then finds the
//! key taken (PostgreSQL), or runs after it (SQLite's single writer), and
//! returns the first delivery's runs. Which workflows subscribe is decided
//! by the caller (the API, from the deployed definitions); ids are kept for
//! [`RETENTION`], expired ones deleted as new ones are recorded.
//!
//! Written once for both backends, through `sql.rs`.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use super::rows::ms;
use super::sql::{Backend, Columns, Conn, Query};
use super::store::Store;
use super::{Error, NewRun, Result, RunRecord, Runs, Transition};
use crate::notify::Changes;

/// How long an event id keeps a redelivery from starting runs again.
pub const RETENTION: TimeDelta = TimeDelta::days(7);

/// What a publish did.
#[derive(Debug, Clone)]
pub struct Published {
    /// The runs the event started (by its first delivery), by workflow name.
    pub runs: Vec<RunRecord>,
    /// False when the id was seen before: nothing was started now.
    pub first: bool,
}

/// The event role of the state store.
#[async_trait]
pub trait Events: Send + Sync {
    /// Records event `id` (named `name`) and creates `runs` (one per
    /// subscribed workflow) in one transaction, unless the id was recorded
    /// within [`RETENTION`]; then creates nothing and returns the runs the
    /// first delivery started.
    async fn publish_event(
        &self,
        id: &str,
        name: &str,
        runs: Vec<NewRun>,
        now: DateTime<Utc>,
    ) -> Result<Published>;
}

const EXPIRE_EVENT_RUNS: &str =
    "DELETE FROM event_runs WHERE event_id IN (SELECT id FROM events WHERE created_at < $1)";
const EXPIRE_EVENTS: &str = "DELETE FROM events WHERE created_at < $1";
const RECORD: &str = "INSERT INTO events (id, name, created_at) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO NOTHING";
const RUNS_OF: &str = "SELECT run_id FROM event_runs WHERE event_id = $1 ORDER BY workflow";
const RECORD_RUN: &str = "INSERT INTO event_runs (event_id, workflow, run_id) VALUES ($1, $2, $3)";

fn expired(now: DateTime<Utc>) -> i64 {
    ms(now - RETENTION)
}

fn vanished(run_id: &str) -> Error {
    Error::Corrupt(format!("run {run_id} of a recorded event vanished"))
}

#[async_trait]
impl<B: Backend> Events for Store<B> {
    async fn publish_event(
        &self,
        id: &str,
        name: &str,
        runs: Vec<NewRun>,
        now: DateTime<Utc>,
    ) -> Result<Published> {
        let (ids, first, told) = self
            .write("publish_event", || {
                self.publish_event_tx(id, name, &runs, now)
            })
            .await?;
        if first && !ids.is_empty() {
            self.notify(Changes::ALL, &told);
        }
        let mut records = Vec::with_capacity(ids.len());
        for run_id in ids {
            records.push(
                self.get_run(&run_id)
                    .await?
                    .ok_or_else(|| vanished(&run_id))?,
            );
        }
        Ok(Published {
            runs: records,
            first,
        })
    }
}

#[allow(private_bounds)]
impl<B: Backend> Store<B> {
    /// One try of [`Events::publish_event`]: the run ids, whether this
    /// delivery was the first, and the transitions its runs made.
    async fn publish_event_tx(
        &self,
        id: &str,
        name: &str,
        runs: &[NewRun],
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, bool, Vec<Transition>)> {
        let mut versions = Vec::with_capacity(runs.len());
        for new in runs {
            versions.push(self.current_version(&new.workflow).await?);
        }
        let mut tx = self.backend().begin().await?;
        for expire in [EXPIRE_EVENT_RUNS, EXPIRE_EVENTS] {
            tx.execute(Query::new(expire).bind(expired(now))).await?;
        }
        // A concurrent delivery of the same id waits here until the first
        // one commits (PostgreSQL), or runs after it (SQLite's single
        // writer), then finds the key taken.
        let recorded = tx
            .execute(Query::new(RECORD).bind(id).bind(name).bind(ms(now)))
            .await?;
        let first = recorded == 1;
        let mut ids = Vec::new();
        let mut told = Vec::new();
        if first {
            for (new, version) in runs.iter().zip(&versions) {
                let (run_id, transitions) = self.insert_run(&mut *tx, new, version, now).await?;
                told.extend(transitions);
                tx.execute(
                    Query::new(RECORD_RUN)
                        .bind(id)
                        .bind(&new.workflow)
                        .bind(&run_id),
                )
                .await?;
                ids.push(run_id);
            }
        } else {
            for row in tx.fetch_all(Query::new(RUNS_OF).bind(id)).await? {
                ids.push(row.text("run_id")?);
            }
        }
        tx.commit().await?;
        Ok((ids, first, told))
    }
}
