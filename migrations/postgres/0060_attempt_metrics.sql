-- The figures tasks record per attempt (`ctx.metrics.record("rows", 1200)`,
-- `rows 1200` lines in the file named by ORK_METRICS), stored with the
-- attempt's report: one row per (attempt, name), the last value wins.
CREATE TABLE attempt_metrics (
    task_run_id TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    name        TEXT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (task_run_id, attempt, name)
);

-- `/metrics` counts unfinished task runs by status at every scrape; this
-- index holds only those rows, so the count stays cheap however many
-- finished task runs the database keeps.
CREATE INDEX task_runs_unfinished ON task_runs (status, ready_at)
    WHERE status IN ('pending', 'dispatched', 'running');
