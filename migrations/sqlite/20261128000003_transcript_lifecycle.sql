-- One lifecycle for transcripts and session rows (issue 18 point 3, design §6.3). A transcript
-- belongs to every session row of its namespace with the same session_id: when the last such row
-- goes away its transcripts are deleted in the same transaction, or, with [policy]
-- transcript_grace > 0, marked to be deleted at delete_after_ms. A mark counts only while no row
-- holds the id (storing the id again voids it; a later clear sets a fresh one).

-- Epoch ms after which the sweep deletes the transcript (NULL: no deletion pending).
ALTER TABLE transcript ADD COLUMN delete_after_ms INTEGER;

-- "Transcripts of (namespace, session_id)": the cascade, and Get's held check.
CREATE INDEX transcript_namespace_session_id ON transcript (namespace, session_id);
-- "Session rows of (namespace, session_id)": does another row still hold the id?
CREATE INDEX session_namespace_session_id ON session (namespace, session_id);
-- The orphan sweep (last append older than default_ttl) and the graced sweep.
CREATE INDEX transcript_mtime_ms ON transcript (mtime_ms);
CREATE INDEX transcript_delete_after_ms ON transcript (delete_after_ms) WHERE delete_after_ms IS NOT NULL;
