-- Agent SDK transcripts (issue 18): one header per transcript, its entries, and the idempotency
-- records of appends. No foreign keys: a transcript's entries are deleted explicitly, in the
-- transaction that deletes its header (the same on SQLite, where foreign keys are off).

-- One row per transcript: subpath '' is a session's main transcript, others its subagents'.
CREATE TABLE transcript (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace   text   NOT NULL,
    project_key text   NOT NULL,
    session_id  text   NOT NULL,
    subpath     text   NOT NULL DEFAULT '',
    entry_count bigint NOT NULL DEFAULT 0,
    -- Bytes of the stored entries' JSON text.
    byte_count  bigint NOT NULL DEFAULT 0,
    -- Epoch ms of the last append that stored an entry; strictly increasing per transcript.
    mtime_ms    bigint NOT NULL,
    -- Also serves a project's sessions (subpath = '') and a session's subpaths.
    UNIQUE (namespace, project_key, session_id, subpath)
);

-- Entries in append order (seq from 1, no gaps); the JSON text exactly as received.
CREATE TABLE transcript_entry (
    transcript_id bigint NOT NULL,
    seq           bigint NOT NULL,
    -- The entry's top-level string "uuid", NULL when it has none: an entry whose uuid the
    -- transcript already holds is not stored again.
    uuid          text,
    entry         text   NOT NULL,
    PRIMARY KEY (transcript_id, seq)
);
CREATE UNIQUE INDEX transcript_entry_uuid ON transcript_entry (transcript_id, uuid) WHERE uuid IS NOT NULL;

-- Idempotency records: the key and first outcome of each append_id, per namespace. Kept when the
-- transcript is deleted: a late retry still answers what the first call did.
CREATE TABLE transcript_append (
    namespace   text        NOT NULL,
    append_id   text        NOT NULL,
    project_key text        NOT NULL,
    session_id  text        NOT NULL,
    subpath     text        NOT NULL,
    stored      bigint      NOT NULL DEFAULT 0,
    duplicates  bigint      NOT NULL DEFAULT 0,
    entry_count bigint      NOT NULL DEFAULT 0,
    byte_count  bigint      NOT NULL DEFAULT 0,
    mtime_ms    bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (namespace, append_id)
);
CREATE INDEX transcript_append_created_at ON transcript_append (created_at);
