//! Group commit: reports from many workers wait in a queue and are committed
//! together, one transaction per batch, each caller answered once its batch
//! committed.
//!
//! A committer takes the first waiting report, then everything already
//! queued behind it (up to [`QueueOptions::max_batch`]). When that is more
//! than one report the server is busy, and the committer lingers up to
//! [`QueueOptions::linger`] for more, so a busy server commits fewer, larger
//! batches; an idle one commits a lone report at once, so latency does not
//! grow.
//!
//! Heartbeat checks are batched too, one read per batch, but several reads
//! run at once ([`QueueOptions::checkers`]) and none lingers: a beat writes
//! nothing, so the batch exists only to spare reads, and while every reader
//! is busy the beats that arrive form the next batch by themselves.
//!
//! A batch whose transaction fails as a whole (a lost connection, say) is
//! retried report by report, so every caller gets its own answer and one
//! report that cannot be applied never takes the others down with it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

use crate::state::{self, Fence, Report, StateStore};

/// How the queue batches.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Most reports in one transaction.
    pub max_batch: usize,
    /// How long a busy committer waits for a batch to fill.
    pub linger: Duration,
    /// Transactions in flight at once: 1 for a store with one writer
    /// (SQLite); a few where writers run in parallel (PostgreSQL).
    pub committers: usize,
    /// Heartbeat reads in flight at once.
    pub checkers: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            linger: Duration::from_millis(1),
            committers: 1,
            checkers: 4,
        }
    }
}

type Answer<T> = oneshot::Sender<Result<T, state::Error>>;

struct Waiting<I, T> {
    item: I,
    answer: Answer<T>,
}

/// A report waiting for its batch.
type WaitingReport = Waiting<(Fence, Report), ()>;

/// The handle to the queues; cheap to clone. The committers stop once
/// every handle is gone.
#[derive(Clone)]
pub struct Queue {
    reports: mpsc::Sender<WaitingReport>,
    beats: mpsc::Sender<Waiting<Fence, bool>>,
}

/// Reports waiting per committer before callers wait to enqueue.
const DEPTH: usize = 8192;

impl Queue {
    /// Starts the committers on the current runtime.
    pub fn spawn(state: Arc<dyn StateStore>, options: QueueOptions) -> Self {
        let (reports, rx) = mpsc::channel(DEPTH);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..options.committers.max(1) {
            tokio::spawn(commit_reports(state.clone(), rx.clone(), options));
        }
        let (beats, rx) = mpsc::channel(DEPTH);
        tokio::spawn(check_beats(state, rx, options));
        Self { reports, beats }
    }

    /// Commits `report` with whatever else is waiting; resolves once its
    /// batch committed.
    pub async fn report(&self, fence: Fence, report: Report) -> Result<(), state::Error> {
        let (answer, answered) = oneshot::channel();
        self.reports
            .send(Waiting {
                item: (fence, report),
                answer,
            })
            .await
            .map_err(|_| stopping())?;
        answered.await.map_err(|_| stopping())?
    }

    /// Checks a heartbeat with whatever else is waiting; true when the
    /// attempt must stop.
    pub async fn heartbeat(&self, fence: Fence) -> Result<bool, state::Error> {
        let (answer, answered) = oneshot::channel();
        self.beats
            .send(Waiting {
                item: fence,
                answer,
            })
            .await
            .map_err(|_| stopping())?;
        answered.await.map_err(|_| stopping())?
    }
}

fn stopping() -> state::Error {
    state::Error::FailedPrecondition("the server is stopping; report again".to_owned())
}

/// Takes a batch: the first item, what is queued behind it, and (when that
/// shows load) what arrives within the linger.
async fn gather<I, T>(
    rx: &mut mpsc::Receiver<Waiting<I, T>>,
    options: QueueOptions,
) -> Option<Vec<Waiting<I, T>>> {
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < options.max_batch {
        match rx.try_recv() {
            Ok(w) => batch.push(w),
            Err(_) => break,
        }
    }
    if batch.len() > 1 && batch.len() < options.max_batch && !options.linger.is_zero() {
        let until = tokio::time::Instant::now() + options.linger;
        while batch.len() < options.max_batch {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(w)) => batch.push(w),
                _ => break,
            }
        }
    }
    Some(batch)
}

async fn commit_reports(
    state: Arc<dyn StateStore>,
    rx: Arc<Mutex<mpsc::Receiver<WaitingReport>>>,
    options: QueueOptions,
) {
    loop {
        // One committer gathers while the others commit.
        let Some(batch) = gather(&mut *rx.lock().await, options).await else {
            return;
        };
        let (items, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| (w.item, w.answer)).unzip();
        match state.report(&items, Utc::now()).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) if items.len() == 1 => {
                if let Some(answer) = answers.into_iter().next() {
                    let _ = answer.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, reports = items.len(), "a batch of reports failed; committing them one by one");
                for ((fence, report), answer) in items.into_iter().zip(answers) {
                    let _ = answer.send(state.report_one(&fence, report, Utc::now()).await);
                }
            }
        }
    }
}

async fn check_beats(
    state: Arc<dyn StateStore>,
    mut rx: mpsc::Receiver<Waiting<Fence, bool>>,
    options: QueueOptions,
) {
    let readers = Arc::new(Semaphore::new(options.checkers.max(1)));
    loop {
        // A reader first: while all are busy, arriving beats queue up and
        // make the next batch.
        let Ok(reader) = readers.clone().acquire_owned().await else {
            return;
        };
        // No linger: several reads run at once instead.
        let beats = QueueOptions {
            linger: Duration::ZERO,
            ..options
        };
        let Some(batch) = gather(&mut rx, beats).await else {
            return;
        };
        let state = state.clone();
        tokio::spawn(async move {
            check_batch(&*state, batch).await;
            drop(reader);
        });
    }
}

/// Checks a batch of heartbeats in one read and answers each caller.
async fn check_batch(state: &dyn StateStore, batch: Vec<Waiting<Fence, bool>>) {
    let (fences, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| (w.item, w.answer)).unzip();
    match state.heartbeats(&fences, Utc::now()).await {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
        }
        Err(e) if fences.len() == 1 => {
            if let Some(answer) = answers.into_iter().next() {
                let _ = answer.send(Err(e));
            }
        }
        Err(e) => {
            // A failed read: each beat is checked again alone, so each
            // caller hears its own error.
            tracing::warn!(error = %e, beats = fences.len(), "a batch of heartbeats failed; checking them one by one");
            for (fence, answer) in fences.iter().zip(answers) {
                let _ = answer.send(state.heartbeat(fence, Utc::now()).await);
            }
        }
    }
}
