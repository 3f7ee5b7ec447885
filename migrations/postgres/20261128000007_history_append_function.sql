-- A report's history events appended as one function call (issue 19 point 2, its cost): the
-- statement that writes a report's row (or a batch's rows) calls it from a CTE, so the events take
-- no statement of their own. Being PL/pgSQL, its statement keeps a cached plan per connection, and
-- the plan is generic (`plan_cache_mode`): the trim's window over the keys' events was planned
-- afresh on every report otherwise (the service's statements are unnamed, for transaction-mode
-- poolers, so Postgres caches none of theirs), which cost more than the write itself.
--
-- The events arrive in order, already trimmed among themselves (domain::history_kept in the
-- service). The call deletes the older events they push out of each key's history (beyond the
-- newest new event's `keep` counted with the new ones, or past p_max_bytes with them), then
-- inserts them; it returns how many it inserted. An old event another transaction holds is being
-- deleted by that one (events are never updated): skipped, never waited for, so a batch (whose
-- lock timeout is 1 ms) is not sent back for it, and two trims never deadlock.
CREATE FUNCTION sessionkeeper_history_append(
    p_namespace          text[],
    p_agent              text[],
    p_conversation       text[],
    p_at                 timestamptz[],
    p_kind               text[],
    p_session_id         text[],
    p_provider           text[],
    p_host               text[],
    p_config_dir         text[],
    p_cwd                text[],
    p_result_class       text[],
    p_action             text[],
    p_matched_signature  text[],
    p_resumed_session_id text[],
    p_num_turns          bigint[],
    p_cause              text[],
    p_size               integer[],
    p_keep               integer[],
    p_max_bytes          bigint
) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    appended bigint;
BEGIN
    WITH incoming AS (
        SELECT * FROM unnest(p_namespace, p_agent, p_conversation, p_at, p_kind, p_session_id, p_provider, p_host,
            p_config_dir, p_cwd, p_result_class, p_action, p_matched_signature, p_resumed_session_id, p_num_turns,
            p_cause, p_size, p_keep) WITH ORDINALITY
        AS n(namespace, agent, conversation, at, kind, session_id, provider, host, config_dir, cwd, result_class,
            action, matched_signature, resumed_session_id, num_turns, cause, size, keep, ord)),
    room AS (
        SELECT namespace, agent, conversation, count(*) AS events, sum(size) AS bytes,
            (array_agg(keep ORDER BY ord DESC))[1] AS keep
        FROM incoming GROUP BY namespace, agent, conversation),
    trimmed AS (
        DELETE FROM history d WHERE d.id = ANY(ARRAY(
            SELECT o.id FROM history o WHERE o.id IN (
                SELECT r.id FROM (
                    SELECT x.id, row_number() OVER w AS rn, sum(x.size) OVER w AS total, m.events, m.bytes, m.keep
                    FROM history x JOIN room m ON x.namespace = m.namespace AND x.agent = m.agent
                        AND x.conversation = m.conversation
                    WINDOW w AS (PARTITION BY x.namespace, x.agent, x.conversation ORDER BY x.id DESC)) r
                WHERE r.rn + r.events > r.keep OR r.total + r.bytes > p_max_bytes)
            FOR UPDATE SKIP LOCKED))),
    inserted AS (
        INSERT INTO history (namespace, agent, conversation, at, kind, session_id, provider, host, config_dir, cwd,
            result_class, action, matched_signature, resumed_session_id, num_turns, cause, size, keep)
        SELECT namespace, agent, conversation, at, kind, session_id, provider, host, config_dir, cwd, result_class,
            action, matched_signature, resumed_session_id, num_turns, cause, size, keep
        FROM incoming ORDER BY ord
        RETURNING 1)
    SELECT count(*) INTO appended FROM inserted;
    RETURN appended;
END;
$$;
