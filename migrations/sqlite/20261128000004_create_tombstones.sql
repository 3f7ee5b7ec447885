-- Tombstones (issue 19): what a key remembers of its last session id once the row is gone, so
-- the next Get can say why it starts fresh. One per key, written in the transaction that removes
-- the row (a clear, Forget, an expiry on read, a sweep) and deleted when a new id is stored for
-- the key. Times are microseconds since the Unix epoch (UTC). Kept [policy] tombstone_ttl (default: the agent's TTL) after cleared_at, then swept.
CREATE TABLE tombstone (
    namespace         TEXT NOT NULL,
    agent             TEXT NOT NULL,
    conversation      TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    -- cleared_gone, cleared_invalid, cleared_failure_limit, forgotten, expired, swept
    reason            TEXT NOT NULL,
    cleared_at        INTEGER NOT NULL,
    -- The clearing report's class and matched signature ('' when no report cleared the id).
    result_class      TEXT NOT NULL DEFAULT '',
    matched_signature TEXT NOT NULL DEFAULT '',
    -- The binding the clearing report's run gave.
    reported_provider   TEXT NOT NULL DEFAULT '',
    reported_host       TEXT NOT NULL DEFAULT '',
    reported_config_dir TEXT NOT NULL DEFAULT '',
    reported_cwd        TEXT NOT NULL DEFAULT '',
    -- The binding the id was stored with.
    stored_provider     TEXT NOT NULL DEFAULT '',
    stored_host         TEXT NOT NULL DEFAULT '',
    stored_config_dir   TEXT NOT NULL DEFAULT '',
    stored_cwd          TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, agent, conversation)
) WITHOUT ROWID;

-- The sweep walks tombstones per agent and overall, like the session rows.
CREATE INDEX tombstone_agent_cleared_at ON tombstone (agent, cleared_at);
CREATE INDEX tombstone_cleared_at ON tombstone (cleared_at);
