//! Workflow versions: listing them, their deploy messages, starting a run
//! on one, and rolling a workflow back to one.
//!
//! Versions are immutable and named by a content hash (`deploy_workflow`
//! stores them); this role only reads them, records the deployer's message,
//! and moves the workflow's `current_version` pointer. A run always keeps
//! the version it was created on, so a rollback changes only what new runs
//! (and the schedule and `on:` triggers, which read the current version)
//! use. Written once for both backends, through `sql.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::rows::{from_ms, ms};
use super::sql::{Backend, Columns, Conn, Query};
use super::store::Store;
use super::{Definitions, Error, NewRun, Result, RunRecord, Runs, WorkflowRecord};
use crate::notify::Changes;

/// Longest deploy message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1000;
/// Shortest version prefix accepted for a version.
pub const MIN_PREFIX_LEN: usize = 6;

/// One deployed version of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub version: String,
    pub created_at: DateTime<Utc>,
    pub message: String,
    pub current: bool,
}

/// The version role of the state store.
#[async_trait]
pub trait Versions: Send + Sync {
    /// A workflow's versions, newest first; NotFound for an unknown workflow.
    async fn list_versions(&self, workflow: &str) -> Result<Vec<VersionRecord>>;
    /// Records the message a version was deployed with.
    async fn set_version_message(&self, version: &str, message: &str) -> Result<()>;
    /// The full hash of the workflow's version named by `version` (a hash
    /// or a unique prefix of at least [`MIN_PREFIX_LEN`] characters).
    async fn resolve_version(&self, workflow: &str, version: &str) -> Result<String>;
    /// Makes `version` (as [`Versions::resolve_version`] reads it) the
    /// workflow's current version.
    async fn rollback_workflow(
        &self,
        workflow: &str,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<WorkflowRecord>;
    /// Creates a run on `version` of its workflow instead of the current one.
    async fn create_run_on_version(
        &self,
        new: NewRun,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord>;
}

/// Checks a deploy message: at most [`MAX_MESSAGE_LEN`] bytes, no control
/// characters but newlines and tabs.
pub fn check_message(message: &str) -> Result<()> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Error::InvalidArgument(format!(
            "field `message`: {} bytes; at most {MAX_MESSAGE_LEN}",
            message.len()
        )));
    }
    if message
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::InvalidArgument(
            "field `message`: contains a control character".into(),
        ));
    }
    Ok(())
}

fn no_workflow(workflow: &str) -> Error {
    Error::NotFound {
        what: format!("workflow `{workflow}` (deploy it with `ork workflow deploy FILE`)"),
    }
}

#[async_trait]
impl<B: Backend> Versions for Store<B> {
    async fn list_versions(&self, workflow: &str) -> Result<Vec<VersionRecord>> {
        let current = self
            .get_workflow(workflow)
            .await?
            .ok_or_else(|| no_workflow(workflow))?
            .version
            .version
            .clone();
        let mut conn = self.backend().read().await?;
        let rows = conn
            .fetch_all(
                Query::new(
                    "SELECT version, created_at, message FROM workflow_versions \
                     WHERE workflow = $1 ORDER BY created_at DESC, version",
                )
                .bind(workflow),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let version = row.text("version")?;
                Ok(VersionRecord {
                    current: version == current,
                    version,
                    created_at: from_ms(row.int("created_at")?),
                    message: row.text("message")?,
                })
            })
            .collect()
    }

    async fn set_version_message(&self, version: &str, message: &str) -> Result<()> {
        check_message(message)?;
        let mut tx = self.backend().begin().await?;
        tx.execute(
            Query::new("UPDATE workflow_versions SET message = $2 WHERE version = $1")
                .bind(version)
                .bind(message),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn resolve_version(&self, workflow: &str, version: &str) -> Result<String> {
        let valid = version.len() >= MIN_PREFIX_LEN
            && version.len() <= 128
            && version.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "field `version`: `{}` is not a version; give its hash or at least {MIN_PREFIX_LEN} of its first characters (`ork workflow versions {workflow}` lists them)",
                version.chars().take(80).collect::<String>()
            )));
        }
        let mut conn = self.backend().read().await?;
        // Hashes are lowercase hex, so the prefix holds no LIKE wildcards.
        let rows = conn
            .fetch_all(
                Query::new(
                    "SELECT version FROM workflow_versions WHERE workflow = $1 AND version LIKE $2 \
                     ORDER BY version LIMIT 2",
                )
                .bind(workflow)
                .bind(format!("{}%", version.to_ascii_lowercase())),
            )
            .await?;
        match rows.as_slice() {
            [one] => one.text("version"),
            [] => Err(Error::NotFound {
                what: format!(
                    "version `{version}` of workflow `{workflow}` (`ork workflow versions {workflow}` lists them)"
                ),
            }),
            _ => Err(Error::InvalidArgument(format!(
                "field `version`: `{version}` is the start of several versions of `{workflow}`; give more characters"
            ))),
        }
    }

    async fn rollback_workflow(
        &self,
        workflow: &str,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<WorkflowRecord> {
        let version = self.resolve_version(workflow, version).await?;
        let mut tx = self.backend().begin().await?;
        let moved = tx
            .execute(
                Query::new(
                    "UPDATE workflows SET current_version = $2, updated_at = $3 WHERE name = $1",
                )
                .bind(workflow)
                .bind(&version)
                .bind(ms(now)),
            )
            .await?;
        tx.commit().await?;
        if moved == 0 {
            return Err(no_workflow(workflow));
        }
        self.notify(Changes::OUTBOX, &[]);
        self.get_workflow(workflow)
            .await?
            .ok_or_else(|| no_workflow(workflow))
    }

    async fn create_run_on_version(
        &self,
        new: NewRun,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord> {
        let version = self.resolve_version(&new.workflow, version).await?;
        let compiled = self
            .get_version(&version)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("version {version} listed but not loadable")))?;
        let (run_id, told) = self
            .write("create_run", || async {
                let mut tx = self.backend().begin().await?;
                let created = self.insert_run(&mut *tx, &new, &compiled, now).await?;
                tx.commit().await?;
                Ok(created)
            })
            .await?;
        self.notify(Changes::ALL, &told);
        self.get_run(&run_id)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("run {run_id} vanished after insert")))
    }
}
