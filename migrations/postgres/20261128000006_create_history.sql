-- A conversation's history (issue 19 point 2): the last events of a key (an id stored, each
-- report, a clear, an expiry on read or by a sweep, a forget), oldest first by id. Each event is
-- written in the transaction of the change it records, and that write trims the key's history to
-- the newest `keep` events and 16 KiB (by `size`). Storing a new id keeps the history; it is
-- deleted with the key's tombstone when the sweep deletes that, and an event of a key with
-- neither row nor tombstone is swept past the tombstone's time.
CREATE TABLE history (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace          text        NOT NULL,
    agent              text        NOT NULL,
    conversation       text        NOT NULL,
    at                 timestamptz NOT NULL,
    -- stored, reported, cleared, expired, swept, forgotten
    kind               text        NOT NULL,
    session_id         text        NOT NULL DEFAULT '',
    -- The binding the reporting run gave ('' for an expiry, a sweep or a forget).
    provider           text        NOT NULL DEFAULT '',
    host               text        NOT NULL DEFAULT '',
    config_dir         text        NOT NULL DEFAULT '',
    cwd                text        NOT NULL DEFAULT '',
    -- The report's class, action and matched signature ('' when no report made the event).
    result_class       text        NOT NULL DEFAULT '',
    action             text        NOT NULL DEFAULT '',
    matched_signature  text        NOT NULL DEFAULT '',
    resumed_session_id text        NOT NULL DEFAULT '',
    num_turns          bigint      NOT NULL DEFAULT 0,
    -- lost_in_place, routed_elsewhere or unknown on a SESSION_GONE resume; '' otherwise.
    cause              text        NOT NULL DEFAULT '',
    -- What the event counts for against the 16 KiB bound (domain::HistoryEvent::bytes).
    size               integer     NOT NULL,
    -- The events the key keeps ([policy] history_events when the write ran); a removal, which
    -- knows no policy, trims with the newest event's.
    keep               integer     NOT NULL
);

CREATE INDEX history_key ON history (namespace, agent, conversation, id);
-- The sweep of events whose key has neither row nor tombstone.
CREATE INDEX history_agent_at ON history (agent, at);
