//! Cron: creates the runs of due schedule fires.
//!
//! Which fires are due (time zones, DST, the catch-up policy) is decided by
//! `ork_domain::schedule`; that each fire creates exactly one run, however many
//! replicas look, is guaranteed by the store's unique (workflow, fire) key.
//! A paused schedule (`state::schedules`) is skipped on every replica.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::state::{self, RunRecord, StateStore};

/// Fires the schedules of every deployed workflow.
pub struct Cron {
    state: Arc<dyn StateStore>,
    owner: String,
}

impl Cron {
    pub fn new(state: Arc<dyn StateStore>, owner: String) -> Self {
        Self { state, owner }
    }

    /// Creates a run for every fire due at `now` that no scheduler created
    /// yet; returns the runs this call created. Takes `now` as a parameter so
    /// tests can drive it with any clock.
    pub async fn fire_due(&self, now: DateTime<Utc>) -> Result<Vec<RunRecord>, state::Error> {
        let mut created = Vec::new();
        let states = self.state.schedule_states().await?;
        for (workflow, last_fire) in self.state.scheduled_workflows().await? {
            // A paused schedule fires nothing; a resumed one starts afresh
            // from its resume, as a new deploy would.
            let mut since = workflow.updated_at;
            if let Some(state) = states.get(&workflow.name) {
                if state.paused {
                    continue;
                }
                since = since.max(state.changed_at);
            }
            let def = &workflow.version.definition;
            for fire in ork_domain::schedule::due_fires(def, last_fire, since, now) {
                if let Some(run) = self
                    .state
                    .fire_schedule(&workflow.name, fire, &self.owner, now)
                    .await?
                {
                    tracing::info!(workflow = %workflow.name, %fire, run = %run.id, "schedule fired");
                    created.push(run);
                }
            }
        }
        Ok(created)
    }
}
