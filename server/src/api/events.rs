//! A change signal for streaming readers (`FollowTaskLogs`, `WatchRun`): API
//! calls that commit a change bump a generation counter, and every open stream
//! re-reads the state when it moves, so nobody polls the database in a loop.
//!
//! The signal carries no payload on purpose: a reader that wakes re-reads the
//! committed state, which is the source of truth, so a coalesced or missed
//! wake-up can delay a message but never change what it says.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Changes committed without an API call (the scheduler's dispatches, timeouts
/// and lost heartbeats) are picked up by a re-read at least this often.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, Default)]
struct Generation {
    changes: u64,
    closed: bool,
}

/// Cheap-to-clone handle: `notify` after a commit, `subscribe` to wait.
#[derive(Clone)]
pub struct EventHub {
    tx: Arc<watch::Sender<Generation>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(Generation::default())),
        }
    }
}

impl EventHub {
    /// Something committed: wake every waiting stream.
    pub fn notify(&self) {
        self.tx.send_modify(|g| g.changes += 1);
    }

    /// The server is stopping: every stream ends after its current message.
    pub fn close(&self) {
        self.tx.send_modify(|g| g.closed = true);
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }
}

/// One stream's view of the hub.
pub struct Subscription {
    rx: watch::Receiver<Generation>,
}

impl Subscription {
    /// Marks everything so far as seen; call before reading the state so a
    /// change committed during the read wakes the next `wait`.
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Waits for a change after the last `mark_seen` (or `FALLBACK_POLL`).
    /// Returns false when the server is stopping.
    pub async fn wait(&mut self) -> bool {
        if self.rx.borrow().closed {
            return false;
        }
        let _ = tokio::time::timeout(FALLBACK_POLL, self.rx.changed()).await;
        !self.rx.borrow().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_during_the_read_wakes_the_next_wait_at_once() {
        let hub = EventHub::default();
        let mut sub = hub.subscribe();
        sub.mark_seen();
        hub.notify();
        let started = std::time::Instant::now();
        assert!(sub.wait().await);
        assert!(
            started.elapsed() < FALLBACK_POLL / 2,
            "woke only after the fallback"
        );
    }

    #[tokio::test]
    async fn close_ends_waiting() {
        let hub = EventHub::default();
        let mut sub = hub.subscribe();
        sub.mark_seen();
        hub.close();
        assert!(!sub.wait().await);
    }
}
