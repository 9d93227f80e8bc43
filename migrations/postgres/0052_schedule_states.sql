-- Schedule controls: a workflow's schedule paused or resumed by an operator.
-- No row means never paused. The scheduler of every replica reads it on
-- each tick, so a pause holds across restarts and replicas. `changed_at`
-- of a resumed schedule starts its fires afresh: fires missed while paused
-- are not caught up (backfill them explicitly).
CREATE TABLE schedule_states (
    workflow   TEXT PRIMARY KEY,
    paused     BIGINT NOT NULL,  -- 1 paused, 0 resumed
    changed_at BIGINT NOT NULL
);
