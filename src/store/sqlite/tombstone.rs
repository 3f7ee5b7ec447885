//! SQLite SQL of tombstones (issue 19): the record a key keeps of its last session id once the
//! row is gone, written on the write transaction's connection by every operation that removes a
//! row (a report's clear, Forget, an expiry on read, a sweep) and deleted when an id is stored
//! for the key. Nothing decides here: the tombstones arrive built by `domain::Tombstone`.

use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqliteExecutor};

use super::{from_micros, lite, micros};
use crate::domain::{Binding, ResultClass, SessionKey, Tombstone, TombstoneReason};
use crate::store::StoreError;

const WRITE: &str = "INSERT INTO tombstone \
     (namespace, agent, conversation, session_id, reason, cleared_at, result_class, matched_signature, \
      reported_provider, reported_host, reported_config_dir, reported_cwd, \
      stored_provider, stored_host, stored_config_dir, stored_cwd) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
     ON CONFLICT (namespace, agent, conversation) DO UPDATE SET session_id = excluded.session_id, \
     reason = excluded.reason, cleared_at = excluded.cleared_at, result_class = excluded.result_class, \
     matched_signature = excluded.matched_signature, reported_provider = excluded.reported_provider, \
     reported_host = excluded.reported_host, reported_config_dir = excluded.reported_config_dir, \
     reported_cwd = excluded.reported_cwd, stored_provider = excluded.stored_provider, \
     stored_host = excluded.stored_host, stored_config_dir = excluded.stored_config_dir, \
     stored_cwd = excluded.stored_cwd";
const REMOVE: &str = "DELETE FROM tombstone WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3";
const SELECT: &str = "SELECT session_id, reason, cleared_at, result_class, matched_signature, \
     reported_provider, reported_host, reported_config_dir, reported_cwd, \
     stored_provider, stored_host, stored_config_dir, stored_cwd \
     FROM tombstone WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3";
pub(super) const DELETE_EXPIRED_OF_AGENT: &str = "DELETE FROM tombstone WHERE (namespace, agent, conversation) IN ( \
         SELECT namespace, agent, conversation FROM tombstone \
         WHERE agent = ?1 AND cleared_at < ?2 AND (?3 IS NULL OR namespace = ?3) LIMIT ?4) \
     RETURNING namespace, agent, conversation";
pub(super) const DELETE_EXPIRED_OF_OTHER_AGENTS: &str = "DELETE FROM tombstone WHERE (namespace, agent, conversation) IN ( \
         SELECT namespace, agent, conversation FROM tombstone \
         WHERE agent NOT IN (SELECT value FROM json_each(?1)) AND cleared_at < ?2 \
         AND (?3 IS NULL OR namespace = ?3) LIMIT ?4) \
     RETURNING namespace, agent, conversation";

pub(super) const COUNT_EXPIRED_OF_AGENT: &str = "SELECT count(*) FROM tombstone \
     WHERE agent = ?1 AND cleared_at < ?2 AND (?3 IS NULL OR namespace = ?3)";
pub(super) const COUNT_EXPIRED_OF_OTHER_AGENTS: &str = "SELECT count(*) FROM tombstone \
     WHERE agent NOT IN (SELECT value FROM json_each(?1)) AND cleared_at < ?2 AND (?3 IS NULL OR namespace = ?3)";

/// Writes the key's tombstone, replacing an older one.
pub(super) async fn write(conn: &mut SqliteConnection, key: &SessionKey, t: &Tombstone) -> Result<(), StoreError> {
    sqlx::query(WRITE)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .bind(&t.session_id)
        .bind(t.reason.as_str())
        .bind(micros(t.cleared_at))
        .bind(t.result_class.map_or("", ResultClass::as_str))
        .bind(t.matched_signature.as_deref().unwrap_or_default())
        .bind(&t.reported_binding.provider)
        .bind(&t.reported_binding.host)
        .bind(&t.reported_binding.config_dir)
        .bind(&t.reported_binding.cwd)
        .bind(&t.stored_binding.provider)
        .bind(&t.stored_binding.host)
        .bind(&t.stored_binding.config_dir)
        .bind(&t.stored_binding.cwd)
        .execute(conn)
        .await
        .map_err(lite)?;
    Ok(())
}

/// Deletes the key's tombstone (an id was stored for it).
pub(super) async fn remove(conn: &mut SqliteConnection, key: &SessionKey) -> Result<(), StoreError> {
    sqlx::query(REMOVE)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .execute(conn)
        .await
        .map_err(lite)?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct TombstoneRecord {
    session_id: String,
    reason: String,
    cleared_at: i64,
    result_class: String,
    matched_signature: String,
    reported_provider: String,
    reported_host: String,
    reported_config_dir: String,
    reported_cwd: String,
    stored_provider: String,
    stored_host: String,
    stored_config_dir: String,
    stored_cwd: String,
}

/// The key's tombstone, current or not (the caller decides with the policy).
pub(super) async fn read<'e>(
    executor: impl SqliteExecutor<'e>,
    key: &SessionKey,
) -> Result<Option<Tombstone>, StoreError> {
    let record: Option<TombstoneRecord> = sqlx::query_as(SELECT)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .fetch_optional(executor)
        .await
        .map_err(lite)?;
    let Some(r) = record else {
        return Ok(None);
    };
    let reason = TombstoneReason::parse(&r.reason)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown tombstone reason {:?}", r.reason)))?;
    let result_class = match r.result_class.as_str() {
        "" => None,
        text => Some(
            crate::store::class_from_str(text)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown result class {text:?}")))?,
        ),
    };
    let cleared_at: DateTime<Utc> = from_micros(r.cleared_at).map_err(lite)?;
    Ok(Some(Tombstone {
        session_id: r.session_id,
        reason,
        cleared_at,
        result_class,
        matched_signature: Some(r.matched_signature).filter(|s| !s.is_empty()),
        reported_binding: Binding {
            provider: r.reported_provider,
            host: r.reported_host,
            config_dir: r.reported_config_dir,
            cwd: r.reported_cwd,
        },
        stored_binding: Binding {
            provider: r.stored_provider,
            host: r.stored_host,
            config_dir: r.stored_config_dir,
            cwd: r.stored_cwd,
        },
    }))
}
