//! Schedule controls: pausing and resuming a workflow's schedule.
//!
//! The state is one row per workflow whose schedule was ever paused
//! (`schedule_states`), read by every replica's cron on each tick, so a
//! pause holds across restarts and replicas without any process keeping
//! it. Firing itself (one run per fire under a unique key) stays with the
//! store's `fire_schedule`; backfills and manual triggers go through it too.
//!
//! The statements are written once, with numbered parameters both
//! backends accept.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Result;
use super::rows::{Columns, from_ms, ms};

/// A schedule's pause state, as last set by an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub workflow: String,
    pub paused: bool,
    /// When it was paused or resumed. A resumed schedule fires only after
    /// this time: the fires it missed while paused are not caught up.
    pub changed_at: DateTime<Utc>,
}

/// The schedule-control role of the state store.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Pauses (`paused`) or resumes a workflow's schedule; returns the new
    /// state. Setting the state it already has changes nothing (its
    /// `changed_at` stays), so a repeated resume does not skip fires.
    async fn set_schedule_paused(
        &self,
        workflow: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<ScheduleState>;
    /// Every recorded state, by workflow (no entry: never paused).
    async fn schedule_states(&self) -> Result<HashMap<String, ScheduleState>>;
}

const UPSERT: &str = "INSERT INTO schedule_states (workflow, paused, changed_at) VALUES ($1, $2, $3) \
     ON CONFLICT (workflow) DO UPDATE SET paused = excluded.paused, changed_at = excluded.changed_at \
     WHERE schedule_states.paused <> excluded.paused";
const SELECT_ONE: &str =
    "SELECT workflow, paused, changed_at FROM schedule_states WHERE workflow = $1";
const SELECT_ALL: &str = "SELECT workflow, paused, changed_at FROM schedule_states";

fn state_of(row: &impl Columns) -> Result<ScheduleState> {
    Ok(ScheduleState {
        workflow: row.text("workflow")?,
        paused: row.int("paused")? != 0,
        changed_at: from_ms(row.int("changed_at")?),
    })
}

fn by_workflow(states: Vec<ScheduleState>) -> HashMap<String, ScheduleState> {
    states
        .into_iter()
        .map(|s| (s.workflow.clone(), s))
        .collect()
}

mod sqlite {
    use super::*;
    use crate::state::sqlite::SqliteStore;

    #[async_trait]
    impl Schedules for SqliteStore {
        async fn set_schedule_paused(
            &self,
            workflow: &str,
            paused: bool,
            now: DateTime<Utc>,
        ) -> Result<ScheduleState> {
            let mut tx = self.write_pool().begin().await?;
            sqlx::query(UPSERT)
                .bind(workflow)
                .bind(i64::from(paused))
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query(SELECT_ONE)
                .bind(workflow)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            state_of(&row)
        }

        async fn schedule_states(&self) -> Result<HashMap<String, ScheduleState>> {
            let rows = sqlx::query(SELECT_ALL).fetch_all(self.read_pool()).await?;
            Ok(by_workflow(
                rows.iter().map(state_of).collect::<Result<_>>()?,
            ))
        }
    }
}

mod postgres {
    use super::*;
    use crate::state::postgres::PostgresStore;

    #[async_trait]
    impl Schedules for PostgresStore {
        async fn set_schedule_paused(
            &self,
            workflow: &str,
            paused: bool,
            now: DateTime<Utc>,
        ) -> Result<ScheduleState> {
            // One statement then a read in one transaction: the upsert's
            // row lock orders concurrent pauses and resumes.
            let mut tx = self.pool().begin().await?;
            sqlx::query(UPSERT)
                .bind(workflow)
                .bind(i64::from(paused))
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query(SELECT_ONE)
                .bind(workflow)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            state_of(&row)
        }

        async fn schedule_states(&self) -> Result<HashMap<String, ScheduleState>> {
            let rows = sqlx::query(SELECT_ALL).fetch_all(self.pool()).await?;
            Ok(by_workflow(
                rows.iter().map(state_of).collect::<Result<_>>()?,
            ))
        }
    }
}
