//! Long-lived pool workers: the registry of attached sessions and the
//! `workers` executor that pushes assignments to them.
//!
//! The scheduler claims pool tasks only up to the free slots the registry
//! reports ([`WorkerPool::capacity`]), so assignments are pushed at once and
//! never queue here. A session's slots are freed when its attempt reports,
//! is cancelled, or is declared lost.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ork_proto::v1;
use tokio::sync::mpsc;

use super::{Error, ExecutionStatus, Executor, Launch};
use crate::notify::{Changes, Notifier};
use crate::state::Fence;

/// What a session's stream carries to its worker.
pub type SessionSender = mpsc::Sender<Result<v1::SessionResponse, tonic::Status>>;

struct Session {
    name: String,
    /// The id of the worker token that attached it (`None` without
    /// authentication): only that token may report its attempts.
    owner: Option<String>,
    handlers: BTreeSet<String>,
    slots: u32,
    running: HashSet<String>,
    draining: bool,
    tx: SessionSender,
    attached_at: DateTime<Utc>,
    /// The last message the worker sent on its stream (pongs included).
    last_seen: DateTime<Utc>,
}

/// The attached pool workers serving one handler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerSlots {
    pub workers: u32,
    pub free: u32,
}

/// One attached session as `ork worker list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: u64,
    pub name: String,
    pub handlers: Vec<String>,
    pub slots: u32,
    pub in_use: u32,
    pub draining: bool,
    pub attached_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl Session {
    fn free(&self) -> u32 {
        if self.draining {
            return 0;
        }
        self.slots
            .saturating_sub(u32::try_from(self.running.len()).unwrap_or(u32::MAX))
    }
}

#[derive(Default)]
struct PoolState {
    next_id: u64,
    sessions: HashMap<u64, Session>,
    /// task_run_id → (session, fence) of every assigned attempt.
    assigned: HashMap<String, (u64, Fence)>,
    /// Owners of attempts that ended lately, so that a worker repeating a
    /// report whose reply it lost is still recognised (oldest first).
    recent: VecDeque<(String, u32, Option<String>)>,
    /// Slots freed so far: tells the scheduler whether one freed while it
    /// claimed ([`WorkerPool::claimed`]).
    freed: u64,
    /// The last claim left a handler without a free slot, so ready tasks
    /// may wait for one: the next freed slot wakes the scheduler.
    short: bool,
}

/// A snapshot of the attached pool workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub workers: u64,
    pub slots: u64,
    /// Slots running an attempt.
    pub busy: u64,
}
/// How many ended assignments [`PoolState::recent`] remembers.
const RECENT: usize = 4096;

/// The registry of attached pool workers.
#[derive(Default)]
pub struct WorkerPool {
    inner: Mutex<PoolState>,
    /// Told when capacity grows (a worker attached, a slot freed).
    notifier: Notifier,
}

impl WorkerPool {
    pub fn new(notifier: Notifier) -> Self {
        Self {
            inner: Mutex::default(),
            notifier,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Free slots per handler: how many more pool tasks the scheduler may
    /// claim. A worker serving several handlers counts for each of them; the
    /// executor gives back a claim it cannot place.
    pub fn capacity(&self) -> BTreeMap<String, u32> {
        let state = self.lock();
        let mut free: BTreeMap<String, u32> = BTreeMap::new();
        for session in state.sessions.values() {
            let n = session.free();
            if n == 0 {
                continue;
            }
            for handler in &session.handlers {
                *free.entry(handler.clone()).or_default() += n;
            }
        }
        free
    }

    /// [`WorkerPool::capacity`] for a claim, and a mark to hand back to
    /// [`WorkerPool::claimed`] once its assignments are pushed.
    pub fn capacity_for_claim(&self) -> (BTreeMap<String, u32>, u64) {
        let mark = self.lock().freed;
        (self.capacity(), mark)
    }

    /// A claim taken with the capacity of `mark` was dispatched. A slot that
    /// frees wakes the scheduler only when a claim may have left ready
    /// tasks behind for lack of one (a handler has no free slot now): the
    /// report that frees it already woke the scheduler once, and a second,
    /// useless claim would hold the writer when the next report comes.
    pub fn claimed(&self, mark: u64) {
        let mut state = self.lock();
        let full = state
            .sessions
            .values()
            .any(|s| !s.draining && s.free() == 0);
        if !full {
            return;
        }
        if state.freed == mark {
            state.short = true;
            return;
        }
        // A slot freed during the claim, unseen by it.
        drop(state);
        self.notifier.fire(Changes::WORK);
    }

    /// Per handler of the attached (not draining) sessions: how many serve
    /// it and their free slots, for the reasons a pool task waits.
    pub fn handler_slots(&self) -> BTreeMap<String, HandlerSlots> {
        let state = self.lock();
        let mut out: BTreeMap<String, HandlerSlots> = BTreeMap::new();
        for session in state.sessions.values().filter(|s| !s.draining) {
            for handler in &session.handlers {
                let entry = out.entry(handler.clone()).or_default();
                entry.workers += 1;
                entry.free += session.free();
            }
        }
        out
    }

    /// Every attached session, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let state = self.lock();
        let mut sessions: Vec<SessionInfo> = state
            .sessions
            .iter()
            .map(|(id, s)| SessionInfo {
                id: *id,
                name: s.name.clone(),
                handlers: s.handlers.iter().cloned().collect(),
                slots: s.slots,
                in_use: u32::try_from(s.running.len()).unwrap_or(u32::MAX),
                draining: s.draining,
                attached_at: s.attached_at,
                last_seen: s.last_seen,
            })
            .collect();
        sessions.sort_by_key(|s| s.id);
        sessions
    }

    /// The session's worker sent something: it is alive now.
    pub fn seen(&self, id: u64) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.last_seen = Utc::now();
        }
    }

    /// Registers a session attached by token `owner`; returns its id.
    pub fn attach(
        &self,
        name: String,
        owner: Option<String>,
        handlers: BTreeSet<String>,
        slots: u32,
        tx: SessionSender,
    ) -> u64 {
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        tracing::info!(session = id, %name, ?handlers, slots, "pool worker attached");
        let now = Utc::now();
        state.sessions.insert(
            id,
            Session {
                name,
                owner,
                handlers,
                slots,
                running: HashSet::new(),
                draining: false,
                tx,
                attached_at: now,
                last_seen: now,
            },
        );
        drop(state);
        self.notifier.fire(Changes::WORK);
        id
    }

    /// Stops sending the session new work; it finishes what it runs. Tells
    /// the worker so once no assignment can follow (assignments are sent
    /// under the same lock).
    pub fn drain(&self, id: u64) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            tracing::info!(session = id, name = %s.name, "pool worker draining");
            s.draining = true;
            let drained = v1::SessionResponse {
                message: Some(v1::session_response::Message::Drained(
                    v1::SessionDrained {},
                )),
            };
            let _ = s.tx.try_send(Ok(drained));
        }
    }

    /// Removes a session; returns the attempts it was running, which are lost.
    pub fn detach(&self, id: u64) -> Vec<Fence> {
        let mut state = self.lock();
        let Some(session) = state.sessions.remove(&id) else {
            return Vec::new();
        };
        tracing::info!(session = id, name = %session.name, running = session.running.len(), "pool worker detached");
        session
            .running
            .iter()
            .filter_map(|task_run_id| state.assigned.remove(task_run_id).map(|(_, fence)| fence))
            .collect()
    }

    /// Frees the slot of an attempt that ended (reported, cancelled, lost).
    /// Returns true when a slot was freed, so the scheduler can use it.
    pub fn finished(&self, task_run_id: &str) -> bool {
        let mut state = self.lock();
        let Some((session, fence)) = state.assigned.remove(task_run_id) else {
            return false;
        };
        let mut owner = None;
        if let Some(s) = state.sessions.get_mut(&session) {
            s.running.remove(task_run_id);
            owner = s.owner.clone();
        }
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state
            .recent
            .push_back((fence.task_run_id, fence.attempt, owner));
        state.freed += 1;
        let wake = std::mem::take(&mut state.short);
        drop(state);
        if wake {
            self.notifier.fire(Changes::WORK);
        }
        true
    }

    /// Attached workers, their slots, and the slots running an attempt,
    /// for `/metrics`.
    pub fn stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            workers: state.sessions.len() as u64,
            slots: state.sessions.values().map(|s| u64::from(s.slots)).sum(),
            busy: state
                .sessions
                .values()
                .map(|s| s.running.len() as u64)
                .sum(),
        }
    }

    /// The token that owns the session attempt `attempt` of `task_run_id`
    /// was pushed to (inner `None`: attached without authentication); `None`
    /// when this server never pushed that attempt to a session (or has
    /// forgotten it long after it ended).
    pub fn owner_of(&self, task_run_id: &str, attempt: u32) -> Option<Option<String>> {
        let state = self.lock();
        if let Some((session, fence)) = state.assigned.get(task_run_id)
            && fence.attempt == attempt
        {
            return Some(state.sessions.get(session).and_then(|s| s.owner.clone()));
        }
        state
            .recent
            .iter()
            .rev()
            .find(|(id, a, _)| id == task_run_id && *a == attempt)
            .map(|(_, _, owner)| owner.clone())
    }

    /// The attempts attached workers are running, whose liveness is their
    /// session's.
    pub fn running(&self) -> Vec<Fence> {
        self.lock()
            .assigned
            .values()
            .map(|(_, fence)| fence.clone())
            .collect()
    }

    /// Number of attached sessions, for logs and tests.
    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Takes a slot on the least-busy session serving `handler` and pushes
    /// `message` (the assignment) to it, under the registry's lock so that a
    /// drain's notice never overtakes it. False when no session has room.
    fn assign(&self, handler: &str, fence: &Fence, message: v1::SessionResponse) -> bool {
        let mut state = self.lock();
        let Some(id) = state
            .sessions
            .iter()
            .filter(|(_, s)| s.handlers.contains(handler) && s.free() > 0)
            .max_by_key(|(id, s)| (s.free(), std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
        else {
            return false;
        };
        let Some(session) = state.sessions.get_mut(&id) else {
            return false;
        };
        // The stream's buffer holds twice the slots: full means the worker
        // stopped reading, and the claim is better given back.
        if session.tx.try_send(Ok(message)).is_err() {
            return false;
        }
        session.running.insert(fence.task_run_id.clone());
        state
            .assigned
            .insert(fence.task_run_id.clone(), (id, fence.clone()));
        true
    }

    fn assigned(&self, task_run_id: &str) -> Option<(u64, Fence, SessionSender)> {
        let state = self.lock();
        let (session, fence) = state.assigned.get(task_run_id)?.clone();
        let tx = state.sessions.get(&session)?.tx.clone();
        Some((session, fence, tx))
    }
}

/// The `workers` executor: pushes each claimed attempt, with its spec, to
/// the least busy session serving its handler.
pub struct PoolExecutor {
    pool: Arc<WorkerPool>,
}

impl PoolExecutor {
    pub fn new(pool: Arc<WorkerPool>) -> Self {
        Self { pool }
    }
}

fn attempt_ref(fence: &Fence) -> v1::AttemptRef {
    v1::AttemptRef {
        task_run_id: fence.task_run_id.clone(),
        attempt: fence.attempt,
        token: fence.token.clone(),
    }
}

#[async_trait]
impl Executor for PoolExecutor {
    async fn dispatch(&self, launch: &Launch) -> Result<(), Error> {
        let handler = launch.spec.handler.clone();
        let assignment = v1::SessionResponse {
            message: Some(v1::session_response::Message::Assignment(v1::Assignment {
                attempt: Some(attempt_ref(&launch.fence)),
                spec: Some(launch.spec.clone()),
            })),
        };
        if self.pool.assign(&handler, &launch.fence, assignment) {
            Ok(())
        } else {
            Err(Error::NoCapacity { handler })
        }
    }

    async fn cancel(&self, fence: &Fence) -> Result<(), Error> {
        if let Some((_, fence, tx)) = self.pool.assigned(&fence.task_run_id) {
            let cancel = v1::SessionResponse {
                message: Some(v1::session_response::Message::Cancel(
                    v1::CancelAssignment {
                        attempt: Some(attempt_ref(&fence)),
                        reason: "cancelled".to_owned(),
                    },
                )),
            };
            // A closed stream already means the attempt is gone.
            let _ = tx.send(Ok(cancel)).await;
            self.pool.finished(&fence.task_run_id);
        }
        Ok(())
    }

    async fn status(&self, fence: &Fence) -> Result<ExecutionStatus, Error> {
        Ok(match self.pool.assigned(&fence.task_run_id) {
            Some(_) => ExecutionStatus::Running,
            None => ExecutionStatus::Unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping() -> v1::SessionResponse {
        v1::SessionResponse {
            message: Some(v1::session_response::Message::Ping(v1::SessionPing {
                nonce: 1,
            })),
        }
    }

    fn fence(id: &str) -> Fence {
        Fence {
            task_run_id: id.into(),
            attempt: 1,
            token: "t".into(),
        }
    }

    #[test]
    fn capacity_counts_free_slots_per_handler_and_drain_stops_new_work() {
        let pool = WorkerPool::default();
        let (tx, _rx) = mpsc::channel(4);
        let a = pool.attach(
            "a".into(),
            None,
            ["h1".to_owned(), "h2".to_owned()].into(),
            2,
            tx.clone(),
        );
        let _b = pool.attach("b".into(), None, ["h1".to_owned()].into(), 1, tx);
        assert_eq!(
            pool.capacity(),
            BTreeMap::from([("h1".to_owned(), 3), ("h2".to_owned(), 2)])
        );
        assert!(pool.assign("h2", &fence("x"), ping()));
        assert_eq!(pool.capacity()["h1"], 2);
        pool.drain(a);
        assert_eq!(pool.capacity(), BTreeMap::from([("h1".to_owned(), 1)]));
        assert!(
            !pool.assign("h2", &fence("y"), ping()),
            "draining sessions get nothing"
        );
        assert!(pool.finished("x"));
        assert!(!pool.finished("x"), "a slot is freed once");
        assert_eq!(pool.detach(a), Vec::<Fence>::new());
    }

    #[test]
    fn detach_returns_the_running_attempts() {
        let pool = WorkerPool::default();
        let (tx, _rx) = mpsc::channel(4);
        let a = pool.attach("a".into(), None, ["h".to_owned()].into(), 2, tx);
        assert!(pool.assign("h", &fence("x"), ping()));
        assert!(pool.assign("h", &fence("y"), ping()));
        assert!(!pool.assign("h", &fence("z"), ping()), "slots respected");
        let mut lost: Vec<String> = pool.detach(a).into_iter().map(|f| f.task_run_id).collect();
        lost.sort();
        assert_eq!(lost, ["x", "y"]);
        assert!(pool.capacity().is_empty());
    }

    #[test]
    fn attempts_are_bound_to_the_token_of_their_session() {
        let pool = WorkerPool::default();
        let (tx, _rx) = mpsc::channel(4);
        let _a = pool.attach(
            "a".into(),
            Some("token-a".into()),
            ["h".to_owned()].into(),
            1,
            tx.clone(),
        );
        assert!(pool.assign("h", &fence("x"), ping()));
        assert_eq!(pool.owner_of("x", 1), Some(Some("token-a".to_owned())));
        assert_eq!(
            pool.owner_of("x", 2),
            None,
            "another attempt of the task run"
        );
        assert_eq!(pool.owner_of("y", 1), None, "never pushed");
        assert!(pool.finished("x"));
        assert_eq!(
            pool.owner_of("x", 1),
            Some(Some("token-a".to_owned())),
            "still known for a repeated report"
        );
    }
}
