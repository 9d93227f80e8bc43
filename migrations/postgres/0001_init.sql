-- ork state, PostgreSQL flavour: the same tables as migrations/sqlite, so both
-- backends share their row decoding. Times are Unix milliseconds (BIGINT);
-- JSON is TEXT; every integer is BIGINT (decoded as i64 by both backends).

CREATE TABLE workflows (
    name            TEXT PRIMARY KEY,
    current_version TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Immutable versions, addressed by a content hash of the YAML and its files.
CREATE TABLE workflow_versions (
    version    TEXT PRIMARY KEY,
    workflow   TEXT NOT NULL,
    yaml       TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Task files, deduplicated by content hash.
CREATE TABLE files (
    hash    TEXT PRIMARY KEY,
    content BYTEA NOT NULL
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
    lease_expires    BIGINT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE INDEX runs_by_workflow ON runs (workflow, created_at DESC);
CREATE INDEX runs_by_created ON runs (created_at DESC);
CREATE INDEX runs_by_status ON runs (status, created_at);
-- Lease scans (acquire, renew, claim) look at unfinished runs only.
CREATE INDEX runs_unfinished_by_owner ON runs (owner, lease_expires)
    WHERE status IN ('pending', 'running');

CREATE TABLE task_runs (
    id             TEXT PRIMARY KEY,
    run_id         TEXT NOT NULL,
    task_name      TEXT NOT NULL,
    status         TEXT NOT NULL,
    -- Current attempt (0 before the first dispatch) and its fencing token.
    attempt        BIGINT NOT NULL DEFAULT 0,
    token          TEXT,
    -- Attempts before a manual retry do not count against `retries`.
    attempt_base   BIGINT NOT NULL DEFAULT 0,
    -- Attempts lost to infrastructure (dead worker, server restart).
    lost_count     BIGINT NOT NULL DEFAULT 0,
    max_retries    BIGINT NOT NULL,
    timeout_seconds BIGINT NOT NULL,
    -- The task's `concurrency` cap, copied so claims need no definition.
    concurrency    BIGINT,
    parallel_index BIGINT,
    parallel_count BIGINT,
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
    created_at     BIGINT NOT NULL,
    ready_at       BIGINT,
    dispatched_at  BIGINT,
    started_at     BIGINT,
    finished_at    BIGINT,
    heartbeat_at   BIGINT,
    deadline_at    BIGINT
);
CREATE INDEX task_runs_by_task ON task_runs (run_id, task_name, status);
CREATE INDEX task_runs_by_status ON task_runs (run_id, status);
CREATE INDEX task_runs_ready ON task_runs (ready_at) WHERE status = 'pending' AND ready_at IS NOT NULL;
CREATE INDEX task_runs_active ON task_runs (status) WHERE status IN ('dispatched', 'running');

-- One row per dispatched attempt: the history shown by `run status` and the
-- audit that no attempt is dispatched twice.
CREATE TABLE attempts (
    task_run_id   TEXT NOT NULL,
    attempt       BIGINT NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    dispatched_at BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    PRIMARY KEY (task_run_id, attempt)
);

CREATE TABLE task_logs (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL,
    task_run_id TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    stream      TEXT NOT NULL,
    line        TEXT NOT NULL,
    time        BIGINT NOT NULL
);
CREATE INDEX task_logs_by_run ON task_logs (run_id, id);
CREATE INDEX task_logs_by_attempt ON task_logs (task_run_id, attempt, id);

-- Durable outbox of the object-store mirror: written in the same transaction
-- as the change it describes, deleted once mirrored.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    attempt     BIGINT,
    created_at  BIGINT NOT NULL
);

-- One row per cron fire: the unique key makes each fire create one run, even
-- with several schedulers.
CREATE TABLE schedule_fires (
    workflow  TEXT NOT NULL,
    fire_time BIGINT NOT NULL,
    run_id    TEXT NOT NULL,
    PRIMARY KEY (workflow, fire_time)
);
