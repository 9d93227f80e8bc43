-- Idempotent starts: the run a StartRun `request_id` created. The key
-- makes two concurrent starts with one id create one run, on any replica.
CREATE TABLE run_requests (
    workflow   TEXT NOT NULL,
    request_id TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workflow, request_id)
);
CREATE INDEX run_requests_by_time ON run_requests (created_at);
