-- Session summaries of Agent SDK transcripts (issue 18): per main transcript, at most one per SDK
-- dialect (the Python and TypeScript SDKs fold to different shapes), written by a compare-and-set
-- in the append's transaction. Foreign keys are off in the embedded store: the summaries of a
-- transcript are deleted explicitly, in the transaction that deletes its header.
CREATE TABLE transcript_summary (
    transcript_id INTEGER NOT NULL,
    -- SummaryDialect: 1 = claude-agent-sdk (Python), 2 = @anthropic-ai/claude-agent-sdk (TypeScript).
    dialect       INTEGER NOT NULL,
    -- The folded summary's data, a JSON object as the adapter sent it; never read by the server.
    data          TEXT    NOT NULL,
    -- 1 when first written, one more with each write: the compare-and-set's version.
    version       INTEGER NOT NULL,
    -- The transcript's mtime_ms after the append that wrote it.
    mtime_ms      INTEGER NOT NULL,
    PRIMARY KEY (transcript_id, dialect)
);

-- Whether the append wrote its summary: a repeat of the append id answers the same.
ALTER TABLE transcript_append ADD COLUMN summary_written INTEGER NOT NULL DEFAULT 0;
