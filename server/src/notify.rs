//! The one wake-up signal of the server: fired after every commit (by the
//! state store itself) and when executors gain capacity, read by the loops
//! that act on it. Nothing else wakes anything: no handler calls a loop.
//!
//! A signal carries no payload on purpose: whoever wakes re-reads the
//! committed state, which is the source of truth, so a coalesced or missed
//! wake-up can delay an action but never change what it does.

use std::sync::Arc;

use tokio::sync::{Notify, watch};

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

struct Inner {
    work: Notify,
    outbox: Notify,
    views: watch::Sender<u64>,
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
