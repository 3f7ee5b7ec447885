-- A conversation's history (issue 19 point 2): the last events of a key (an id stored, each
-- report, a clear, an expiry on read or by a sweep, a forget), oldest first by id. Each event is
-- written in the transaction of the change it records, and that write trims the key's history to
-- the newest `keep` events and 16 KiB (by `size`). Storing a new id keeps the history; it is
-- deleted with the key's tombstone when the sweep deletes that, and an event of a key with
-- neither row nor tombstone is swept past the tombstone's time. Times are microseconds since the
-- Unix epoch (UTC). A new id is always above every id left (the newest is never deleted by a
-- trim), so ids order a key's events.
CREATE TABLE history (
    id                 INTEGER PRIMARY KEY,
    namespace          TEXT    NOT NULL,
    agent              TEXT    NOT NULL,
    conversation       TEXT    NOT NULL,
    at                 INTEGER NOT NULL,
    -- stored, reported, cleared, expired, swept, forgotten
    kind               TEXT    NOT NULL,
    session_id         TEXT    NOT NULL DEFAULT '',
    -- The binding the reporting run gave ('' for an expiry, a sweep or a forget).
    provider           TEXT    NOT NULL DEFAULT '',
    host               TEXT    NOT NULL DEFAULT '',
    config_dir         TEXT    NOT NULL DEFAULT '',
    cwd                TEXT    NOT NULL DEFAULT '',
    -- The report's class, action and matched signature ('' when no report made the event).
    result_class       TEXT    NOT NULL DEFAULT '',
    action             TEXT    NOT NULL DEFAULT '',
    matched_signature  TEXT    NOT NULL DEFAULT '',
    resumed_session_id TEXT    NOT NULL DEFAULT '',
    num_turns          INTEGER NOT NULL DEFAULT 0,
    -- lost_in_place, routed_elsewhere or unknown on a SESSION_GONE resume; '' otherwise.
    cause              TEXT    NOT NULL DEFAULT '',
    -- What the event counts for against the 16 KiB bound (domain::HistoryEvent::bytes).
    size               INTEGER NOT NULL,
    -- The events the key keeps ([policy] history_events when the write ran); a removal, which
    -- knows no policy, trims with the newest event's.
    keep               INTEGER NOT NULL
);

CREATE INDEX history_key ON history (namespace, agent, conversation, id);
-- The sweep of events whose key has neither row nor tombstone.
CREATE INDEX history_agent_at ON history (agent, at);
