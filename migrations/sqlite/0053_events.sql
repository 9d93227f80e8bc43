-- Events: each published event id once, with the runs it started. The
-- primary key makes a second delivery of one id (on any replica, even
-- concurrently) start nothing and return the first delivery's runs.
-- Ids are kept for a retention window (state/events.rs).
CREATE TABLE events (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_by_time ON events (created_at);

CREATE TABLE event_runs (
    event_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    PRIMARY KEY (event_id, workflow)
);
