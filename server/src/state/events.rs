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
//! The statements are written once, with numbered parameters both
//! backends accept.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use super::rows::{Columns, ms};
use super::{Error, NewRun, Result, RunRecord};

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

/// The runs of `ids`, in order.
async fn load_runs(store: &dyn super::StateStore, ids: Vec<String>) -> Result<Vec<RunRecord>> {
    let mut runs = Vec::with_capacity(ids.len());
    for id in ids {
        runs.push(store.get_run(&id).await?.ok_or_else(|| vanished(&id))?);
    }
    Ok(runs)
}

mod sqlite {
    use super::*;
    use crate::state::sqlite::SqliteStore;

    #[async_trait]
    impl Events for SqliteStore {
        async fn publish_event(
            &self,
            id: &str,
            name: &str,
            runs: Vec<NewRun>,
            now: DateTime<Utc>,
        ) -> Result<Published> {
            let mut versions = Vec::with_capacity(runs.len());
            for new in &runs {
                versions.push(self.current_version(&new.workflow).await?);
            }
            let mut tx = self.write_pool().begin().await?;
            for expire in [EXPIRE_EVENT_RUNS, EXPIRE_EVENTS] {
                sqlx::query(expire)
                    .bind(expired(now))
                    .execute(&mut *tx)
                    .await?;
            }
            let recorded = sqlx::query(RECORD)
                .bind(id)
                .bind(name)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
            let first = recorded.rows_affected() == 1;
            let mut ids = Vec::new();
            if first {
                for (new, version) in runs.iter().zip(&versions) {
                    let run_id = self.insert_run(&mut tx, new, version, now).await?;
                    sqlx::query(RECORD_RUN)
                        .bind(id)
                        .bind(&new.workflow)
                        .bind(&run_id)
                        .execute(&mut *tx)
                        .await?;
                    ids.push(run_id);
                }
            } else {
                for row in sqlx::query(RUNS_OF).bind(id).fetch_all(&mut *tx).await? {
                    ids.push(row.text("run_id")?);
                }
            }
            tx.commit().await?;
            Ok(Published {
                runs: load_runs(self, ids).await?,
                first,
            })
        }
    }
}

mod postgres {
    use super::*;
    use crate::state::postgres::{PostgresStore, retrying};

    impl PostgresStore {
        /// One try of [`Events::publish_event`]: the run ids and whether
        /// this delivery was the first.
        async fn publish_event_tx(
            &self,
            id: &str,
            name: &str,
            runs: &[NewRun],
            now: DateTime<Utc>,
        ) -> Result<(Vec<String>, bool)> {
            let mut versions = Vec::with_capacity(runs.len());
            for new in runs {
                versions.push(self.current_version(&new.workflow).await?);
            }
            let mut tx = self.pool().begin().await?;
            for expire in [EXPIRE_EVENT_RUNS, EXPIRE_EVENTS] {
                sqlx::query(expire)
                    .bind(expired(now))
                    .execute(&mut *tx)
                    .await?;
            }
            // A concurrent delivery of the same id waits here until the
            // first one commits, then finds the key taken.
            let recorded = sqlx::query(RECORD)
                .bind(id)
                .bind(name)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
            let first = recorded.rows_affected() == 1;
            let mut ids = Vec::new();
            if first {
                for (new, version) in runs.iter().zip(&versions) {
                    let run_id = self.insert_run(&mut tx, new, version, now).await?;
                    sqlx::query(RECORD_RUN)
                        .bind(id)
                        .bind(&new.workflow)
                        .bind(&run_id)
                        .execute(&mut *tx)
                        .await?;
                    ids.push(run_id);
                }
            } else {
                for row in sqlx::query(RUNS_OF).bind(id).fetch_all(&mut *tx).await? {
                    ids.push(row.text("run_id")?);
                }
            }
            tx.commit().await?;
            Ok((ids, first))
        }
    }

    #[async_trait]
    impl Events for PostgresStore {
        async fn publish_event(
            &self,
            id: &str,
            name: &str,
            runs: Vec<NewRun>,
            now: DateTime<Utc>,
        ) -> Result<Published> {
            let (ids, first) = retrying(|| self.publish_event_tx(id, name, &runs, now)).await?;
            Ok(Published {
                runs: load_runs(self, ids).await?,
                first,
            })
        }
    }
}
