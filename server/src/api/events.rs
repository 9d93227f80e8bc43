//! What streaming readers (`FollowTaskLogs`, `WatchRun`, pool sessions)
//! wait on: the notifier's `views` changes, fired by the store after every
//! commit, and the server's stop. Nobody polls the database in a loop.
//!
//! A change carries no payload on purpose: a reader that wakes re-reads the
//! committed state, which is the source of truth, so a coalesced or missed
//! wake-up can delay a message but never change what it says.

use std::time::Duration;

use tokio::sync::watch;

use crate::notify::Notifier;

/// Changes committed by another replica (which has its own notifier) are
/// picked up by a re-read at least this often.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// Cheap-to-clone handle: `subscribe` to wait for changes; `close` when the
/// server stops.
#[derive(Clone)]
pub struct EventHub {
    notifier: Notifier,
    closed: watch::Sender<bool>,
}

impl EventHub {
    pub fn new(notifier: Notifier) -> Self {
        Self {
            notifier,
            closed: watch::Sender::new(false),
        }
    }

    /// The server is stopping: every stream ends after its current message.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription {
            views: self.notifier.views(),
            closed: self.closed.subscribe(),
        }
    }
}

/// One stream's view of the hub.
pub struct Subscription {
    views: watch::Receiver<u64>,
    closed: watch::Receiver<bool>,
}

impl Subscription {
    /// Marks everything so far as seen; call before reading the state so a
    /// change committed during the read wakes the next `wait`.
    pub fn mark_seen(&mut self) {
        self.views.borrow_and_update();
    }

    /// Waits for a change after the last `mark_seen` (or `FALLBACK_POLL`).
    /// Returns false when the server is stopping.
    pub async fn wait(&mut self) -> bool {
        if *self.closed.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::timeout(FALLBACK_POLL, self.views.changed()) => {}
            _ = self.closed.changed() => {}
        }
        !*self.closed.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Changes;

    #[tokio::test]
    async fn a_change_during_the_read_wakes_the_next_wait_at_once() {
        let notifier = Notifier::default();
        let hub = EventHub::new(notifier.clone());
        let mut sub = hub.subscribe();
        sub.mark_seen();
        notifier.fire(Changes::VIEWS);
        let started = std::time::Instant::now();
        assert!(sub.wait().await);
        assert!(
            started.elapsed() < FALLBACK_POLL / 2,
            "woke only after the fallback"
        );
    }

    #[tokio::test]
    async fn close_ends_waiting() {
        let hub = EventHub::new(Notifier::default());
        let mut sub = hub.subscribe();
        sub.mark_seen();
        let waiting = tokio::spawn(async move { sub.wait().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.close();
        assert!(!waiting.await.unwrap());
    }
}
