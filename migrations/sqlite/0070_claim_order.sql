-- Claims take ready task runs in (ready_at, id) order. A fan-out readies
-- all its instances at the same millisecond, so an index on ready_at alone
-- leaves the tie to a sort of every ready row per claim; with id in the
-- index the claim reads just the rows it takes.
DROP INDEX task_runs_ready_launched;
CREATE INDEX task_runs_ready_launched ON task_runs (ready_at, id)
    WHERE status = 'pending' AND ready_at IS NOT NULL AND executor <> 'workers';
DROP INDEX task_runs_ready_pooled;
CREATE INDEX task_runs_ready_pooled ON task_runs (handler, ready_at, id)
    WHERE status = 'pending' AND ready_at IS NOT NULL AND executor = 'workers';

-- Tasks with a `concurrency` cap are ranked per (run, task): their own
-- index, so a claim does not walk every task run of its runs to find them.
CREATE INDEX task_runs_ready_capped ON task_runs (run_id, task_name, ready_at)
    WHERE status = 'pending' AND ready_at IS NOT NULL AND executor <> 'workers'
        AND concurrency IS NOT NULL;
