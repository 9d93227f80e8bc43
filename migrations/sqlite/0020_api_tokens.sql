-- API tokens. Only a SHA-256 hash of each token is stored: tokens are 256
-- random bits, so the hash cannot be reversed or guessed, and a fast hash
-- lets every request find its token by an index lookup.
CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    created_by TEXT
);

-- A name names one live token; a revoked token's name can be used again.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
