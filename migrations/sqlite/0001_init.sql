-- ork state, SQLite flavour. Times are Unix milliseconds (INTEGER); JSON is TEXT.

CREATE TABLE workflows (
    name            TEXT PRIMARY KEY,
    current_version TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Immutable versions, addressed by a content hash of the YAML and its files.
CREATE TABLE workflow_versions (
    version    TEXT PRIMARY KEY,
    workflow   TEXT NOT NULL,
    yaml       TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Task files, deduplicated by content hash.
CREATE TABLE files (
    hash    TEXT PRIMARY KEY,
    content BLOB NOT NULL
);

CREATE TABLE workflow_files (
    version TEXT NOT NULL,
    path    TEXT NOT NULL,
    hash    TEXT NOT NULL,
    PRIMARY KEY (version, path)
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    workflow_version TEXT NOT NULL,
    status           TEXT NOT NULL,
    triggered_by     TEXT NOT NULL,
    input            TEXT NOT NULL,
    owner            TEXT,
    lease_expires    INTEGER,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
);
CREATE INDEX runs_by_workflow ON runs (workflow, created_at DESC);
CREATE INDEX runs_by_created ON runs (created_at DESC);
CREATE INDEX runs_by_status ON runs (status, created_at);

CREATE TABLE task_runs (
    id             TEXT PRIMARY KEY,
    run_id         TEXT NOT NULL,
    task_name      TEXT NOT NULL,
    status         TEXT NOT NULL,
    -- Current attempt (0 before the first dispatch) and its fencing token.
    attempt        INTEGER NOT NULL DEFAULT 0,
    token          TEXT,
    -- Attempts before a manual retry do not count against `retries`.
    attempt_base   INTEGER NOT NULL DEFAULT 0,
    -- Attempts lost to infrastructure (dead worker, server restart).
    lost_count     INTEGER NOT NULL DEFAULT 0,
    max_retries    INTEGER NOT NULL,
    timeout_seconds INTEGER NOT NULL,
    -- The task's `concurrency` cap, copied so claims need no definition.
    concurrency    INTEGER,
    parallel_index INTEGER,
    parallel_count INTEGER,
    -- The for_each element of this instance, JSON.
    item           TEXT,
    executor       TEXT NOT NULL,
    -- For `executor: workers`: the pool handler that runs it.
    handler        TEXT,
    executor_id    TEXT,
    -- Resolved input, set when the task becomes ready.
    input          TEXT,
    output         TEXT,
    error          TEXT,
    created_at     INTEGER NOT NULL,
    ready_at       INTEGER,
    dispatched_at  INTEGER,
    started_at     INTEGER,
    finished_at    INTEGER,
    heartbeat_at   INTEGER,
    deadline_at    INTEGER
);
CREATE INDEX task_runs_by_task ON task_runs (run_id, task_name, status);
CREATE INDEX task_runs_by_status ON task_runs (run_id, status);
CREATE INDEX task_runs_ready ON task_runs (ready_at) WHERE status = 'pending' AND ready_at IS NOT NULL;
CREATE INDEX task_runs_active ON task_runs (status) WHERE status IN ('dispatched', 'running');

-- One row per dispatched attempt: the history shown by `run status` and the
-- audit that no attempt is dispatched twice.
CREATE TABLE attempts (
    task_run_id   TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    dispatched_at INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    PRIMARY KEY (task_run_id, attempt)
);

CREATE TABLE task_logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    task_run_id TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    stream      TEXT NOT NULL,
    line        TEXT NOT NULL,
    time        INTEGER NOT NULL
);
CREATE INDEX task_logs_by_run ON task_logs (run_id, id);
CREATE INDEX task_logs_by_attempt ON task_logs (task_run_id, attempt, id);

-- Durable outbox of the object-store mirror: written in the same transaction
-- as the change it describes, deleted once mirrored.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    attempt     INTEGER,
    created_at  INTEGER NOT NULL
);

-- One row per cron fire: the unique key makes each fire create one run, even
-- with several schedulers.
CREATE TABLE schedule_fires (
    workflow  TEXT NOT NULL,
    fire_time INTEGER NOT NULL,
    run_id    TEXT NOT NULL,
    PRIMARY KEY (workflow, fire_time)
);
