-- A transcript append as one autocommit statement (issue 18 point 2): `SELECT * FROM
-- sessionkeeper_transcript_append(…)` does what BEGIN, two statements and COMMIT did, so an append
-- costs one statement's round trips instead of four statements'. VOLATILE PL/pgSQL under READ
-- COMMITTED: each statement below takes a fresh snapshot, so the one that checks uuids and the byte
-- limit sees whatever another append committed while this one waited for the header's lock.
--
-- Nothing of an append that does not fit stays, not even its claim: the function raises SQLSTATE
-- SK001 (DETAIL: the transcript's byte count) and the statement's transaction rolls back. A summary
-- alone whose transcript was deleted between its claim and its lock raises SK002 the same way.
-- Rows: one 'appended' row; one 'replayed' row (the append id's record, with the dialect's summary
-- stored now); none when the append id was claimed before and has no record (a summary alone whose
-- transcript does not exist).
CREATE FUNCTION sessionkeeper_transcript_append(
    p_namespace    text,
    p_project_key  text,
    p_session_id   text,
    p_subpath      text,
    p_append_id    text,
    p_created_at   timestamptz,
    -- now, in epoch ms: the header's mtime moves to it (or one past the last) when an entry is stored.
    p_now_ms       bigint,
    -- The entries in call order, with their uuids (NULL for none). Empty: a summary alone.
    p_entries      text[],
    p_uuids        text[],
    p_max_bytes    bigint,
    -- The summary write: dialect (NULL: none), data, and the version it expects (0: none stored).
    p_dialect      smallint,
    p_summary      text,
    p_if_version   bigint,
    -- The caller's lock_timeout (ms), for this statement's transaction only.
    p_lock_timeout_ms bigint
) RETURNS TABLE (
    outcome          text,
    project_key      text,
    session_id       text,
    subpath          text,
    stored           bigint,
    duplicates       bigint,
    entry_count      bigint,
    byte_count       bigint,
    mtime_ms         bigint,
    summary_written  boolean,
    summary_data     text,
    summary_version  bigint,
    summary_mtime_ms bigint
) LANGUAGE plpgsql VOLATILE AS $function$
#variable_conflict use_column
DECLARE
    v_claimed boolean;
    v_id bigint;
    v_byte_count_before bigint;
    r record;
BEGIN
    -- Local to this statement's transaction: nothing outlives it on a pooled server connection.
    PERFORM set_config('lock_timeout', p_lock_timeout_ms::text, true);

    -- The append id's claim (waiting while another transaction holds it uncommitted), then the
    -- header's lock: always in this order, so appends queue instead of deadlocking.
    IF cardinality(p_entries) > 0 THEN
        INSERT INTO transcript_append AS a (namespace, append_id, project_key, session_id, subpath, created_at)
        VALUES (p_namespace, p_append_id, p_project_key, p_session_id, p_subpath, p_created_at)
        ON CONFLICT (namespace, append_id) DO NOTHING;
        v_claimed := FOUND;
        IF v_claimed THEN
            INSERT INTO transcript AS t (namespace, project_key, session_id, subpath, mtime_ms)
            VALUES (p_namespace, p_project_key, p_session_id, p_subpath, 0)
            ON CONFLICT (namespace, project_key, session_id, subpath) DO UPDATE SET mtime_ms = t.mtime_ms
            RETURNING t.id INTO v_id;
        END IF;
    ELSE
        -- A summary alone claims only when the transcript exists, and never creates it.
        INSERT INTO transcript_append AS a (namespace, append_id, project_key, session_id, subpath, created_at)
        SELECT p_namespace, p_append_id, p_project_key, p_session_id, p_subpath, p_created_at
        WHERE EXISTS (SELECT 1 FROM transcript t WHERE t.namespace = p_namespace
            AND t.project_key = p_project_key AND t.session_id = p_session_id AND t.subpath = p_subpath)
        ON CONFLICT (namespace, append_id) DO NOTHING;
        v_claimed := FOUND;
        IF v_claimed THEN
            SELECT t.id INTO v_id FROM transcript t WHERE t.namespace = p_namespace
                AND t.project_key = p_project_key AND t.session_id = p_session_id AND t.subpath = p_subpath
                FOR UPDATE;
            IF v_id IS NULL THEN
                RAISE EXCEPTION 'the transcript was deleted while a summary was being written'
                    USING ERRCODE = 'SK002';
            END IF;
        END IF;
    END IF;

    IF NOT v_claimed THEN
        -- Claimed before: its record (and the dialect's summary stored now) answers.
        RETURN QUERY SELECT 'replayed'::text, a.project_key, a.session_id, a.subpath, a.stored, a.duplicates,
            a.entry_count, a.byte_count, a.mtime_ms, a.summary_written, s.data, s.version, s.mtime_ms
        FROM transcript_append a
        LEFT JOIN transcript t ON p_dialect IS NOT NULL AND t.namespace = a.namespace
            AND t.project_key = a.project_key AND t.session_id = a.session_id AND t.subpath = a.subpath
        LEFT JOIN transcript_summary s ON s.transcript_id = t.id AND s.dialect = p_dialect
        WHERE a.namespace = p_namespace AND a.append_id = p_append_id;
        RETURN;
    END IF;

    -- The append itself, on the locked header: an entry is fresh when it has no uuid, or its uuid is
    -- neither earlier in the call nor stored. Nothing is written unless the fresh entries fit. Seqs
    -- continue the transcript without gaps; mtime moves only when something is stored. The summary
    -- is written when the stored version equals p_if_version, with the header's new mtime; its data
    -- is returned only when it was not written (the caller has the data it wrote).
    WITH input AS (
        SELECT x.e, x.u, x.ord, row_number() OVER (PARTITION BY x.u ORDER BY x.ord) AS nth
        FROM unnest(p_entries, p_uuids) WITH ORDINALITY AS x(e, u, ord)),
    fresh AS (
        SELECT i.e, i.u, row_number() OVER (ORDER BY i.ord) AS n FROM input i
        WHERE (i.u IS NULL OR i.nth = 1)
        AND NOT EXISTS (SELECT 1 FROM transcript_entry t WHERE t.transcript_id = v_id AND t.uuid = i.u)),
    header AS (SELECT h.entry_count, h.byte_count FROM transcript h WHERE h.id = v_id),
    verdict AS (
        SELECT (SELECT count(*) FROM fresh) AS stored,
        coalesce((SELECT sum(octet_length(f.e)) FROM fresh f), 0)::bigint AS bytes,
        h.byte_count AS byte_count_before, h.entry_count AS entry_count_before FROM header h),
    fits AS (SELECT v.* FROM verdict v WHERE v.byte_count_before + v.bytes <= p_max_bytes),
    inserted AS (
        INSERT INTO transcript_entry (transcript_id, seq, uuid, entry)
        SELECT v_id, v.entry_count_before + f.n, f.u, f.e FROM fresh f, fits v),
    moved AS (
        UPDATE transcript t SET entry_count = t.entry_count + v.stored, byte_count = t.byte_count + v.bytes,
        mtime_ms = CASE WHEN v.stored > 0 THEN greatest(p_now_ms, t.mtime_ms + 1) ELSE t.mtime_ms END
        FROM fits v WHERE t.id = v_id RETURNING t.entry_count, t.byte_count, t.mtime_ms),
    summary_before AS (
        SELECT b.data, b.version, b.mtime_ms FROM transcript_summary b
        WHERE b.transcript_id = v_id AND b.dialect = p_dialect),
    written AS (
        INSERT INTO transcript_summary AS w (transcript_id, dialect, data, version, mtime_ms)
        SELECT v_id, p_dialect, p_summary, p_if_version + 1, m.mtime_ms FROM moved m
        WHERE p_dialect IS NOT NULL AND coalesce((SELECT b.version FROM summary_before b), 0) = p_if_version
        ON CONFLICT (transcript_id, dialect) DO UPDATE SET
        data = excluded.data, version = excluded.version, mtime_ms = excluded.mtime_ms
        RETURNING w.version, w.mtime_ms),
    recorded AS (
        UPDATE transcript_append a SET stored = v.stored, duplicates = cardinality(p_entries) - v.stored,
        entry_count = m.entry_count, byte_count = m.byte_count, mtime_ms = m.mtime_ms,
        summary_written = EXISTS (SELECT 1 FROM written)
        FROM fits v, moved m WHERE a.namespace = p_namespace AND a.append_id = p_append_id)
    SELECT v.stored AS stored, v.byte_count_before AS byte_count_before, m.entry_count AS entry_count,
        m.byte_count AS byte_count, m.mtime_ms AS mtime_ms, w.version IS NOT NULL AS written,
        CASE WHEN w.version IS NULL THEN b.data END AS data,
        coalesce(w.version, b.version) AS version, coalesce(w.mtime_ms, b.mtime_ms) AS version_mtime_ms
    INTO r
    FROM verdict v LEFT JOIN moved m ON true LEFT JOIN written w ON true LEFT JOIN summary_before b ON true;

    IF r.entry_count IS NULL THEN
        -- Did not fit: the whole statement rolls back, the claim and a header made for it with it.
        RAISE EXCEPTION 'the transcript is full' USING ERRCODE = 'SK001', DETAIL = r.byte_count_before::text;
    END IF;
    outcome := 'appended';
    stored := r.stored;
    duplicates := cardinality(p_entries) - r.stored;
    entry_count := r.entry_count;
    byte_count := r.byte_count;
    mtime_ms := r.mtime_ms;
    summary_written := r.written;
    summary_data := r.data;
    summary_version := r.version;
    summary_mtime_ms := r.version_mtime_ms;
    RETURN NEXT;
END
$function$;
