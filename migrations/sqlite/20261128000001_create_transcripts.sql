-- Agent SDK transcripts (issue 18): one header per transcript, its entries, and the idempotency
-- records of appends. Foreign keys are off in the embedded store: a transcript's entries are
-- deleted explicitly, in the transaction that deletes its header. Times are as in the first
-- migration (microseconds since the Unix epoch); mtime_ms is epoch milliseconds, as the SDK reads it.

-- One row per transcript: subpath '' is a session's main transcript, others its subagents'.
CREATE TABLE transcript (
    id          INTEGER PRIMARY KEY,
    namespace   TEXT    NOT NULL,
    project_key TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    subpath     TEXT    NOT NULL DEFAULT '',
    entry_count INTEGER NOT NULL DEFAULT 0,
    -- Bytes of the stored entries' JSON text.
    byte_count  INTEGER NOT NULL DEFAULT 0,
    -- Epoch ms of the last append that stored an entry; strictly increasing per transcript.
    mtime_ms    INTEGER NOT NULL,
    UNIQUE (namespace, project_key, session_id, subpath)
);

-- Entries in append order (seq from 1, no gaps); the JSON text exactly as received. A rowid
-- table, not WITHOUT ROWID: entries run to a MiB, far past the size WITHOUT ROWID suits.
CREATE TABLE transcript_entry (
    transcript_id INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    -- The entry's top-level string "uuid", NULL when it has none.
    uuid          TEXT,
    entry         TEXT    NOT NULL,
    PRIMARY KEY (transcript_id, seq)
);
CREATE UNIQUE INDEX transcript_entry_uuid ON transcript_entry (transcript_id, uuid) WHERE uuid IS NOT NULL;

-- Idempotency records: the key and first outcome of each append_id, per namespace.
CREATE TABLE transcript_append (
    namespace   TEXT    NOT NULL,
    append_id   TEXT    NOT NULL,
    project_key TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    subpath     TEXT    NOT NULL,
    stored      INTEGER NOT NULL,
    duplicates  INTEGER NOT NULL,
    entry_count INTEGER NOT NULL,
    byte_count  INTEGER NOT NULL,
    mtime_ms    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (namespace, append_id)
) WITHOUT ROWID;
CREATE INDEX transcript_append_created_at ON transcript_append (created_at);
