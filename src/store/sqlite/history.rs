//! SQLite SQL of a conversation's history (issue 19 point 2): the last events of a key, each
//! written on the write transaction's connection by the write that causes it (a store, a report, a
//! clear, Forget, an expiry on read, a sweep), which then trims the key's history to the newest
//! `keep` events and 16 KiB (`domain::history_kept`'s rule, as rank and running total newest
//! first). A removal knows no policy: its event takes the newest event's `keep`. A swept
//! tombstone takes its key's history with it, and events of keys with neither row nor tombstone
//! are swept past the cutoff. The events arrive built by `domain::HistoryEvent`.

use sqlx::{SqliteConnection, SqliteExecutor};

use super::{from_micros, lite, micros};
use crate::domain::{
    Binding, DEFAULT_HISTORY_EVENTS, HistoryEvent, HistoryKind, MAX_HISTORY_BYTES, ResumeFailureCause, SessionKey,
};
use crate::store::StoreError;

// ?18: the event's keep, NULL for the newest event's (the default when the key has none: ?19).
const INSERT: &str = "INSERT INTO history (namespace, agent, conversation, at, kind, session_id, provider, host, \
     config_dir, cwd, result_class, action, matched_signature, resumed_session_id, num_turns, cause, size, keep) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
     coalesce(?18, (SELECT keep FROM history WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 \
         ORDER BY id DESC LIMIT 1), ?19))";
// After an insert: what no longer fits under the newest event's keep and ?4 bytes.
const TRIM: &str = "DELETE FROM history WHERE id IN (SELECT id FROM ( \
         SELECT id, row_number() OVER w AS rn, sum(size) OVER w AS total, first_value(keep) OVER w AS keep \
         FROM history WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 \
         WINDOW w AS (ORDER BY id DESC)) \
     WHERE rn > keep OR total > ?4)";
const SELECT: &str = "SELECT at, kind, session_id, provider, host, config_dir, cwd, result_class, action, \
     matched_signature, resumed_session_id, num_turns, cause \
     FROM history WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 ORDER BY id";
/// The histories of the keys (a JSON array of [namespace, agent, conversation]) whose tombstones
/// a sweep deleted.
const DELETE_OF_KEYS: &str = "DELETE FROM history WHERE (namespace, agent, conversation) IN ( \
     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]') \
     FROM json_each(?1))";
macro_rules! orphans {
    ($agents:literal) => {
        concat!(
            "DELETE FROM history WHERE id IN (SELECT h.id FROM history h WHERE ",
            $agents,
            " AND h.at < ?2 AND (?3 IS NULL OR h.namespace = ?3) \
             AND NOT EXISTS (SELECT 1 FROM session s WHERE s.namespace = h.namespace AND s.agent = h.agent \
                 AND s.conversation = h.conversation) \
             AND NOT EXISTS (SELECT 1 FROM tombstone t WHERE t.namespace = h.namespace AND t.agent = h.agent \
                 AND t.conversation = h.conversation) \
             LIMIT ?4)"
        )
    };
}
/// At most ?4 events from before ?2 of keys with neither row nor tombstone (of agent ?1).
pub(super) const DELETE_ORPHANS_OF_AGENT: &str = orphans!("h.agent = ?1");
/// The same for the agents not in the JSON array ?1.
pub(super) const DELETE_ORPHANS_OF_OTHER_AGENTS: &str = orphans!("h.agent NOT IN (SELECT value FROM json_each(?1))");

/// Writes the key's `event` and trims the key's history; `keep` is the policy's
/// `history_events`, None for a removal (the newest event's then).
pub(super) async fn append(
    conn: &mut SqliteConnection,
    key: &SessionKey,
    event: &HistoryEvent,
    keep: Option<u32>,
) -> Result<(), StoreError> {
    let report = event.report.as_ref();
    sqlx::query(INSERT)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .bind(micros(event.at))
        .bind(event.kind.as_str())
        .bind(&event.session_id)
        .bind(&event.binding.provider)
        .bind(&event.binding.host)
        .bind(&event.binding.config_dir)
        .bind(&event.binding.cwd)
        .bind(report.map_or("", |r| r.class.as_str()))
        .bind(report.map_or("", |r| r.action.as_str()))
        .bind(report.and_then(|r| r.matched_signature.as_deref()).unwrap_or_default())
        .bind(report.map_or("", |r| r.resumed_session_id.as_str()))
        .bind(report.map_or(0, |r| i64::from(r.num_turns)))
        .bind(report.and_then(|r| r.cause).map_or("", ResumeFailureCause::as_str))
        .bind(i64::from(event.bytes()))
        .bind(keep.map(i64::from))
        .bind(i64::from(DEFAULT_HISTORY_EVENTS))
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
    sqlx::query(TRIM)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .bind(i64::from(MAX_HISTORY_BYTES))
        .execute(conn)
        .await
        .map_err(lite)?;
    Ok(())
}

/// Deletes the histories of `keys` (whose tombstones were just swept).
pub(super) async fn delete_of_keys(
    conn: &mut SqliteConnection,
    keys: &[(String, String, String)],
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(&keys.iter().map(|(n, a, c)| [n, a, c]).collect::<Vec<_>>())
        .map_err(|e| StoreError::Other(crate::store::error::context("history keys as JSON", e)))?;
    sqlx::query(DELETE_OF_KEYS)
        .bind(json)
        .execute(conn)
        .await
        .map_err(lite)?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct EventRecord {
    at: i64,
    kind: String,
    session_id: String,
    provider: String,
    host: String,
    config_dir: String,
    cwd: String,
    result_class: String,
    action: String,
    matched_signature: String,
    resumed_session_id: String,
    num_turns: i64,
    cause: String,
}

/// The key's history, oldest first.
pub(super) async fn read<'e>(
    executor: impl SqliteExecutor<'e>,
    key: &SessionKey,
) -> Result<Vec<HistoryEvent>, StoreError> {
    let records: Vec<EventRecord> = sqlx::query_as(SELECT)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .fetch_all(executor)
        .await
        .map_err(lite)?;
    records
        .into_iter()
        .map(|r| {
            let kind = HistoryKind::parse(&r.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown history event kind {:?}", r.kind)))?;
            Ok(HistoryEvent {
                at: from_micros(r.at).map_err(lite)?,
                kind,
                report: crate::store::report_facts(
                    &r.result_class,
                    &r.action,
                    r.matched_signature,
                    r.resumed_session_id,
                    r.num_turns,
                    &r.cause,
                )?,
                session_id: r.session_id,
                binding: Binding {
                    provider: r.provider,
                    host: r.host,
                    config_dir: r.config_dir,
                    cwd: r.cwd,
                },
            })
        })
        .collect()
}
