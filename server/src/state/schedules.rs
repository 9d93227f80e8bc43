//! Schedule controls: pausing and resuming a workflow's schedule.
//!
//! The state is one row per workflow whose schedule was ever paused
//! (`schedule_states`), read by every replica's cron on each tick, so a
//! pause holds across restarts and replicas without any process keeping
//! it. Firing itself (one run per fire under a unique key) stays with the
//! store's `fire_schedule`; backfills and manual triggers go through it too.
//!
//! Written once for both backends, through `sql.rs`.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::rows::{from_ms, ms};
use super::sql::{Backend, Columns, Conn, Query};
use super::store::Store;
use super::{Error, Result};

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

#[async_trait]
impl<B: Backend> Schedules for Store<B> {
    async fn set_schedule_paused(
        &self,
        workflow: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<ScheduleState> {
        // The upsert's row lock orders concurrent pauses and resumes.
        let mut tx = self.backend().begin().await?;
        tx.execute(
            Query::new(UPSERT)
                .bind(workflow)
                .bind(i64::from(paused))
                .bind(ms(now)),
        )
        .await?;
        let row = tx
            .fetch_optional(Query::new(SELECT_ONE).bind(workflow))
            .await?
            .ok_or_else(|| Error::Corrupt(format!("schedule state of `{workflow}` vanished")))?;
        tx.commit().await?;
        state_of(&row)
    }

    async fn schedule_states(&self) -> Result<HashMap<String, ScheduleState>> {
        let mut conn = self.backend().read().await?;
        let rows = conn.fetch_all(Query::new(SELECT_ALL)).await?;
        Ok(by_workflow(
            rows.iter().map(state_of).collect::<Result<_>>()?,
        ))
    }
}
