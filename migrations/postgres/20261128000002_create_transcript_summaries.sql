-- Session summaries of Agent SDK transcripts (issue 18): per main transcript, at most one per SDK
-- dialect (the Python and TypeScript SDKs fold to different shapes), written by a compare-and-set
-- in the append's transaction. No foreign key, as for the entries: the summaries of a transcript
-- are deleted explicitly, in the transaction that deletes its header.
CREATE TABLE transcript_summary (
    transcript_id bigint   NOT NULL,
    -- SummaryDialect: 1 = claude-agent-sdk (Python), 2 = @anthropic-ai/claude-agent-sdk (TypeScript).
    dialect       smallint NOT NULL,
    -- The folded summary's data, a JSON object as the adapter sent it; never read by the server.
    data          text     NOT NULL,
    -- 1 when first written, one more with each write: the compare-and-set's version.
    version       bigint   NOT NULL,
    -- The transcript's mtime_ms after the append that wrote it.
    mtime_ms      bigint   NOT NULL,
    PRIMARY KEY (transcript_id, dialect)
);

-- Whether the append wrote its summary: a repeat of the append id answers the same.
ALTER TABLE transcript_append ADD COLUMN summary_written boolean NOT NULL DEFAULT false;
