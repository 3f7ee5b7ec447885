-- One row per conversation: the session id to resume and where it can be resumed.
CREATE TABLE session (
    namespace     text        NOT NULL,
    agent         text        NOT NULL,
    conversation  text        NOT NULL,
    session_id    text        NOT NULL,
    provider      text        NOT NULL DEFAULT '',
    host          text        NOT NULL DEFAULT '',
    config_dir    text        NOT NULL DEFAULT '',
    cwd           text        NOT NULL DEFAULT '',
    -- The TTL counts from here; the agent's TTL is read from the policy at decision time.
    last_used_at  timestamptz NOT NULL,
    -- Consecutive zero-turn unknown failures of resumes of session_id.
    failure_count integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, agent, conversation)
);

-- Sweeps walk expired rows per agent (agents with a TTL of their own) and overall (the default).
CREATE INDEX session_agent_last_used_at ON session (agent, last_used_at);
CREATE INDEX session_last_used_at ON session (last_used_at);

-- Sweeps delete in bulk: let autovacuum reclaim dead tuples early.
ALTER TABLE session SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- Idempotency records: the first outcome of each report_id, per namespace, kept at least 24 h.
CREATE TABLE report (
    namespace    text        NOT NULL,
    report_id    text        NOT NULL,
    agent        text        NOT NULL,
    conversation text        NOT NULL,
    result_class text        NOT NULL,
    action       text        NOT NULL,
    session_id   text        NOT NULL,
    retry_fresh  boolean     NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (namespace, report_id)
);

CREATE INDEX report_created_at ON report (created_at);
