-- One row per conversation: the session id to resume and where it can be resumed.
-- Times are microseconds since the Unix epoch (UTC).
CREATE TABLE session (
    namespace     TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    conversation  TEXT    NOT NULL,
    session_id    TEXT    NOT NULL,
    provider      TEXT    NOT NULL DEFAULT '',
    host          TEXT    NOT NULL DEFAULT '',
    config_dir    TEXT    NOT NULL DEFAULT '',
    cwd           TEXT    NOT NULL DEFAULT '',
    last_used_at  INTEGER NOT NULL,
    failure_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, agent, conversation)
) WITHOUT ROWID;

CREATE INDEX session_agent_last_used_at ON session (agent, last_used_at);
CREATE INDEX session_last_used_at ON session (last_used_at);

-- Idempotency records: the first outcome of each report_id, per namespace, kept at least 24 h.
CREATE TABLE report (
    namespace    TEXT    NOT NULL,
    report_id    TEXT    NOT NULL,
    agent        TEXT    NOT NULL,
    conversation TEXT    NOT NULL,
    result_class TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    session_id   TEXT    NOT NULL,
    retry_fresh  INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (namespace, report_id)
) WITHOUT ROWID;

CREATE INDEX report_created_at ON report (created_at);
