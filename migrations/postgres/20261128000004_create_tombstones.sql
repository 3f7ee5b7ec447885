-- Tombstones (issue 19): what a key remembers of its last session id once the row is gone, so
-- the next Get can say why it starts fresh. One per key, written in the transaction that removes
-- the row (a clear, Forget, an expiry on read, a sweep) and deleted when a new id is stored for
-- the key. Kept [policy] tombstone_ttl (default: the agent's TTL) after cleared_at, then swept.
CREATE TABLE tombstone (
    namespace         text        NOT NULL,
    agent             text        NOT NULL,
    conversation      text        NOT NULL,
    session_id        text        NOT NULL,
    -- cleared_gone, cleared_invalid, cleared_failure_limit, forgotten, expired, swept
    reason            text        NOT NULL,
    cleared_at        timestamptz NOT NULL,
    -- The clearing report's class and matched signature ('' when no report cleared the id).
    result_class      text        NOT NULL DEFAULT '',
    matched_signature text        NOT NULL DEFAULT '',
    -- The binding the clearing report's run gave.
    reported_provider   text NOT NULL DEFAULT '',
    reported_host       text NOT NULL DEFAULT '',
    reported_config_dir text NOT NULL DEFAULT '',
    reported_cwd        text NOT NULL DEFAULT '',
    -- The binding the id was stored with.
    stored_provider     text NOT NULL DEFAULT '',
    stored_host         text NOT NULL DEFAULT '',
    stored_config_dir   text NOT NULL DEFAULT '',
    stored_cwd          text NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, agent, conversation)
);

-- The sweep walks tombstones per agent and overall, like the session rows.
CREATE INDEX tombstone_agent_cleared_at ON tombstone (agent, cleared_at);
CREATE INDEX tombstone_cleared_at ON tombstone (cleared_at);
