-- Run history: labels, and indexes for filtered keyset paging.
--
-- ListRuns orders by (created_at DESC, id DESC) and pages by that key, so
-- every index a filter can use ends in (created_at, id): the planner walks
-- one index range in order and stops after a page, however deep the page.

-- The labels a run was started with, as a JSON object (what GetRun shows).
ALTER TABLE runs ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';

-- The same labels, one row each, for filtering. Written with the run, in
-- its transaction; runs are never deleted, so neither are these.
CREATE TABLE run_labels (
    run_id     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX run_labels_by_pair ON run_labels (key, value, created_at DESC, run_id DESC);

DROP INDEX runs_by_created;
CREATE INDEX runs_by_created ON runs (created_at DESC, id DESC);
DROP INDEX runs_by_workflow;
CREATE INDEX runs_by_workflow ON runs (workflow, created_at DESC, id DESC);
DROP INDEX runs_by_status;
CREATE INDEX runs_by_status ON runs (status, created_at DESC, id DESC);
CREATE INDEX runs_by_workflow_status ON runs (workflow, status, created_at DESC, id DESC);
CREATE INDEX runs_by_trigger ON runs (triggered_by, created_at DESC, id DESC);
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
