-- State layer v2.
--
-- Executions are found by their attempt's fence: the executor id is gone.
ALTER TABLE task_runs DROP COLUMN executor_id;

-- Claims read ready task runs oldest first, launched ones and pool ones
-- (per handler) apart, each an index range that stops at the claim's limit.
CREATE INDEX task_runs_ready_launched ON task_runs (ready_at)
    WHERE status = 'pending' AND ready_at IS NOT NULL AND executor <> 'workers';
CREATE INDEX task_runs_ready_pooled ON task_runs (handler, ready_at)
    WHERE status = 'pending' AND ready_at IS NOT NULL AND executor = 'workers';

-- Replicas split the outbox: an entry is claimed by one mirror for a while
-- (and taken over when that mirror dies), and a key by one mirror at a time.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until INTEGER;
CREATE INDEX outbox_by_claim ON outbox (claimed_until);
CREATE INDEX outbox_by_key ON outbox (key);
