//! The one wake-up signal of the server: fired after every commit (by the
//! state store itself) and when executors gain capacity, read by the loops
//! that act on it. Nothing else wakes anything: no handler calls a loop.
//!
//! A signal carries no payload on purpose: whoever wakes re-reads the
//! committed state, which is the source of truth, so a coalesced or missed
//! wake-up can delay an action but never change what it does.
//!
//! Observers (Prometheus metrics, trace spans) are the exception: they are
//! told the [`Transition`]s each commit made, in commit order, through
//! [`Notifier::committed`], and how long each write transaction took. They
//! are called on the committing task, so they must be quick and never block
//! (counters, a channel send).

use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, watch};

use crate::state::Transition;

/// What changed, so each loop wakes only for what it cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changes {
    /// Task runs may be ready, runs may have started or ended, or executors
    /// may take more work: the dispatch loop claims.
    pub work: bool,
    /// Outbox rows were written: the mirror drains.
    pub outbox: bool,
    /// Something people watch changed (runs, task runs, logs): streaming
    /// readers re-read.
    pub views: bool,
}

impl Changes {
    /// A transition of runs or attempts: everything.
    pub const ALL: Changes = Changes {
        work: true,
        outbox: true,
        views: true,
    };
    /// Capacity only (a slot freed, a worker attached).
    pub const WORK: Changes = Changes {
        work: true,
        outbox: false,
        views: false,
    };
    /// Log lines.
    pub const VIEWS: Changes = Changes {
        work: false,
        outbox: false,
        views: true,
    };
    /// A change the mirror must copy but nobody acts on (a deployed workflow).
    pub const OUTBOX: Changes = Changes {
        work: false,
        outbox: true,
        views: true,
    };
}

/// Told what each commit did; see the module documentation.
pub trait Observer: Send + Sync + 'static {
    /// The transitions of one committed transaction.
    fn committed(&self, transitions: &[Transition]);
    /// A write transaction `operation` took `seconds` (retries included).
    fn transaction(&self, _operation: &'static str, _seconds: f64) {}
}

/// Tells several observers, in order.
pub struct Observers(pub Vec<Arc<dyn Observer>>);

impl Observer for Observers {
    fn committed(&self, transitions: &[Transition]) {
        for observer in &self.0 {
            observer.committed(transitions);
        }
    }

    fn transaction(&self, operation: &'static str, seconds: f64) {
        for observer in &self.0 {
            observer.transaction(operation, seconds);
        }
    }
}

struct Inner {
    work: Notify,
    outbox: Notify,
    views: watch::Sender<u64>,
    /// Set once by the server; stores opened by tools and tests tell nobody.
    observer: OnceLock<Arc<dyn Observer>>,
}

/// Cheap-to-clone handle: [`Notifier::fire`] after a commit; each loop waits
/// on its topic.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                work: Notify::new(),
                outbox: Notify::new(),
                views: watch::Sender::new(0),
                observer: OnceLock::new(),
            }),
        }
    }
}

impl Notifier {
    /// Something committed (or capacity grew): wake whoever cares.
    pub fn fire(&self, changes: Changes) {
        if changes.work {
            self.inner.work.notify_one();
        }
        if changes.outbox {
            self.inner.outbox.notify_one();
        }
        if changes.views {
            self.inner.views.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Sets the observer told about every commit; only the first call counts.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        let _ = self.inner.observer.set(observer);
    }

    /// A transaction committed `transitions`: tell the observer, then wake
    /// whoever cares.
    pub fn committed(&self, changes: Changes, transitions: &[Transition]) {
        if !transitions.is_empty()
            && let Some(observer) = self.inner.observer.get()
        {
            observer.committed(transitions);
        }
        self.fire(changes);
    }

    /// A write transaction `operation` took `seconds`.
    pub fn transaction(&self, operation: &'static str, seconds: f64) {
        if let Some(observer) = self.inner.observer.get() {
            observer.transaction(operation, seconds);
        }
    }

    /// Resolves at the next `work` change, or at once when one happened since
    /// the last wait (a wake-up is never lost between two waits). One waiter:
    /// the dispatch loop.
    pub async fn work(&self) {
        self.inner.work.notified().await;
    }

    /// Like [`Notifier::work`], for the mirror.
    pub async fn outbox(&self) {
        self.inner.outbox.notified().await;
    }

    /// A receiver that changes with every `views` change, for any number of
    /// streaming readers.
    pub fn views(&self) -> watch::Receiver<u64> {
        self.inner.views.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_change_before_the_wait_is_not_lost() {
        let n = Notifier::default();
        n.fire(Changes::ALL);
        tokio::time::timeout(Duration::from_secs(5), n.work())
            .await
            .expect("woken by the earlier fire");
        tokio::time::timeout(Duration::from_secs(5), n.outbox())
            .await
            .expect("woken by the earlier fire");
        // Log lines wake readers, not the loops.
        let mut views = n.views();
        views.borrow_and_update();
        n.fire(Changes::VIEWS);
        assert!(views.has_changed().unwrap());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), n.work())
                .await
                .is_err()
        );
    }
}
