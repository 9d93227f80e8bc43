//! The attempts an engine-backed executor (Kubernetes, Fargate, Cloud Run,
//! Container Apps) is watching, and how an execution that ended without a
//! report becomes an [`ExecutorEvent`]: written once, so that every such
//! executor unwatches on cancel (whoever cancels decides the attempt's
//! fate), reports an end at most once, and adopts idempotently.
// Shared by executors behind different features: what one leaves unused,
// another uses.
#![cfg_attr(
    not(all(
        feature = "kubernetes",
        feature = "fargate",
        feature = "cloudrun",
        feature = "containerapp"
    )),
    allow(dead_code)
)]

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::ExecutorEvent;
use crate::state::{FailureKind, Fence};

/// How an execution ended, as far as its engine tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub description: String,
    pub kind: FailureKind,
    pub non_retryable: bool,
}

impl End {
    /// The worker vanished: retried without spending the task's `retries`.
    pub fn lost(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            kind: FailureKind::Lost,
            non_retryable: false,
        }
    }
}

/// One watched execution.
#[derive(Debug, Clone)]
pub struct Watched {
    pub fence: Fence,
    /// The task's memory limit as declared (for out-of-memory messages).
    pub memory: Option<String>,
    /// The engine's own handle of the execution when it is not derived from
    /// its name (an ECS task ARN, a Cloud Run execution name).
    pub handle: Option<String>,
}

/// Executions being watched, by execution name, and where their ends go.
pub struct Watchlist {
    events: mpsc::UnboundedSender<ExecutorEvent>,
    watched: Mutex<HashMap<String, Watched>>,
}

impl Watchlist {
    pub fn new(events: mpsc::UnboundedSender<ExecutorEvent>) -> Self {
        Self {
            events,
            watched: Mutex::new(HashMap::new()),
        }
    }

    /// Starts watching (or replaces what was known of) an execution.
    pub fn watch(&self, name: &str, watched: Watched) {
        if let Ok(mut map) = self.watched.lock() {
            map.insert(name.to_owned(), watched);
        }
    }

    /// Watches an execution found in the engine unless already watched.
    pub fn adopt(&self, name: &str, watched: Watched) {
        if let Ok(mut map) = self.watched.lock() {
            map.entry(name.to_owned()).or_insert(watched);
        }
    }

    /// Stops watching: whoever cancels decides the attempt's fate, so no
    /// event follows. Returns what was watched.
    pub fn unwatch(&self, name: &str) -> Option<Watched> {
        self.watched.lock().ok()?.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<Watched> {
        self.watched.lock().ok()?.get(name).cloned()
    }

    /// Everything watched now.
    pub fn snapshot(&self) -> Vec<(String, Watched)> {
        self.watched
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The execution ended: reports it once, if it is still watched.
    /// Returns whether it was.
    pub fn end(&self, name: &str, end: End) -> bool {
        let Some(watched) = self.unwatch(name) else {
            return false;
        };
        let _ = self.events.send(ExecutorEvent::Exited {
            fence: watched.fence,
            description: end.description,
            kind: end.kind,
            non_retryable: end.non_retryable,
        });
        true
    }

    /// The scheduler is gone: monitors stop.
    pub fn is_closed(&self) -> bool {
        self.events.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(attempt: u32) -> Watched {
        Watched {
            fence: Fence {
                task_run_id: "tr".into(),
                attempt,
                token: "t".into(),
            },
            memory: None,
            handle: None,
        }
    }

    #[test]
    fn an_end_is_reported_once_and_never_after_a_cancel() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let list = Watchlist::new(tx);
        list.watch("a", watched(1));
        list.adopt("a", watched(2));
        assert_eq!(
            list.get("a").map(|w| w.fence.attempt),
            Some(1),
            "adopt keeps"
        );
        assert!(list.end("a", End::lost("gone")));
        assert!(!list.end("a", End::lost("gone again")));
        let Ok(ExecutorEvent::Exited { description, .. }) = rx.try_recv() else {
            panic!("one event");
        };
        assert_eq!(description, "gone");
        assert!(rx.try_recv().is_err());

        list.watch("b", watched(1));
        assert!(list.unwatch("b").is_some());
        assert!(!list.end("b", End::lost("after cancel")));
        assert!(rx.try_recv().is_err());
    }
}
