//! Postgres SQL of tombstones (issue 19): the record a key keeps of its last session id once the
//! row is gone. Written inside the statements that remove rows: Forget, an expiry on read and a
//! sweep insert them from the deleted rows (the [`tombstone_from_gone!`] fragment over a `gone`
//! CTE); report clears, alone or batched, carry theirs in the statement that deletes the row (the
//! [`written_cte`] fragment, bound by [`bind_written`]). A statement storing a new id deletes the
//! key's tombstone itself. A swept tombstone takes its key's history with it (same statement).
//! Nothing decides here: the tombstones arrive built by `domain::Tombstone`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};

use crate::domain::{Binding, ResultClass, SessionKey, Tombstone, TombstoneReason};
use crate::store::StoreError;

/// The columns every tombstone write sets, and what a newer tombstone replaces.
macro_rules! tombstone_columns {
    () => {
        "(namespace, agent, conversation, session_id, reason, cleared_at, result_class, matched_signature, \
         reported_provider, reported_host, reported_config_dir, reported_cwd, \
         stored_provider, stored_host, stored_config_dir, stored_cwd) "
    };
}
pub(super) use tombstone_columns;

macro_rules! tombstone_replaces {
    () => {
        "ON CONFLICT (namespace, agent, conversation) DO UPDATE SET session_id = EXCLUDED.session_id, \
         reason = EXCLUDED.reason, cleared_at = EXCLUDED.cleared_at, result_class = EXCLUDED.result_class, \
         matched_signature = EXCLUDED.matched_signature, reported_provider = EXCLUDED.reported_provider, \
         reported_host = EXCLUDED.reported_host, reported_config_dir = EXCLUDED.reported_config_dir, \
         reported_cwd = EXCLUDED.reported_cwd, stored_provider = EXCLUDED.stored_provider, \
         stored_host = EXCLUDED.stored_host, stored_config_dir = EXCLUDED.stored_config_dir, \
         stored_cwd = EXCLUDED.stored_cwd "
    };
}
pub(super) use tombstone_replaces;

/// A CTE `tombstoned` inserting the tombstones of the rows of the CTE `gone` (deleted session
/// rows, all columns), with `$reason` (a literal) and the time `$at` (a parameter).
macro_rules! tombstone_from_gone {
    ($reason:literal, $at:literal) => {
        concat!(
            "tombstoned AS (INSERT INTO tombstone ",
            $crate::store::postgres::tombstone::tombstone_columns!(),
            "SELECT namespace, agent, conversation, session_id, '",
            $reason,
            "', ",
            $at,
            ", '', '', '', '', '', '', provider, host, config_dir, cwd FROM gone ",
            $crate::store::postgres::tombstone::tombstone_replaces!(),
            "RETURNING 1) "
        )
    };
}
pub(super) use tombstone_from_gone;

/// The CTE `t_written` writing the tombstones of report clears: arrays `$first`…`$first+15` (in
/// [`bind_written`]'s order), kept only when `gate` (a SQL condition, `true` for always) holds,
/// each replacing its key's older tombstone. It rides in the statement that deletes the rows
/// (no statement of its own).
pub(super) fn written_cte(first: usize, gate: &str) -> String {
    // Sixteen text arrays, but the sixth, `cleared_at`.
    let arrays = (0..16)
        .map(|n| format!("${}::{}[]", first + n, if n == 5 { "timestamptz" } else { "text" }))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        concat!(
            "t_written AS (INSERT INTO tombstone ",
            tombstone_columns!(),
            "SELECT * FROM unnest({arrays}) WHERE {gate} ",
            tombstone_replaces!(),
            "RETURNING 1)"
        ),
        arrays = arrays,
        gate = gate
    )
}

/// Binds the 16 arrays of [`written_cte`] (one tombstone per key), in order, after what `query`
/// has bound.
pub(super) fn bind_written<'q>(
    query: Query<'q, Postgres, PgArguments>,
    tombstones: &[(&SessionKey, Tombstone)],
) -> Query<'q, Postgres, PgArguments> {
    let column =
        |f: fn(&SessionKey, &Tombstone) -> String| -> Vec<String> { tombstones.iter().map(|(k, t)| f(k, t)).collect() };
    query
        .bind(column(|k, _| k.namespace().to_owned()))
        .bind(column(|k, _| k.agent().to_owned()))
        .bind(column(|k, _| k.conversation().to_owned()))
        .bind(column(|_, t| t.session_id.clone()))
        .bind(column(|_, t| t.reason.as_str().to_owned()))
        .bind(tombstones.iter().map(|(_, t)| t.cleared_at).collect::<Vec<_>>())
        .bind(column(|_, t| t.result_class.map_or("", ResultClass::as_str).to_owned()))
        .bind(column(|_, t| t.matched_signature.clone().unwrap_or_default()))
        .bind(column(|_, t| t.reported_binding.provider.clone()))
        .bind(column(|_, t| t.reported_binding.host.clone()))
        .bind(column(|_, t| t.reported_binding.config_dir.clone()))
        .bind(column(|_, t| t.reported_binding.cwd.clone()))
        .bind(column(|_, t| t.stored_binding.provider.clone()))
        .bind(column(|_, t| t.stored_binding.host.clone()))
        .bind(column(|_, t| t.stored_binding.config_dir.clone()))
        .bind(column(|_, t| t.stored_binding.cwd.clone()))
}

/// The tombstones of several keys (arrays), each numbered from 1 by its key's place.
const SELECT_MANY: &str = "SELECT k.ordinal, t.session_id, t.reason, t.cleared_at, t.result_class, \
     t.matched_signature, t.reported_provider, t.reported_host, t.reported_config_dir, t.reported_cwd, \
     t.stored_provider, t.stored_host, t.stored_config_dir, t.stored_cwd \
     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(namespace, agent, conversation, ordinal) \
     JOIN tombstone t ON t.namespace = k.namespace AND t.agent = k.agent AND t.conversation = k.conversation";

/// With the swept tombstones, their keys' histories; and events from before the cutoff of keys
/// with neither row nor tombstone (at most $4). Returns how many tombstones went.
macro_rules! and_their_history {
    ($agents:literal) => {
        concat!(
            "RETURNING namespace, agent, conversation), \
             forgotten AS (DELETE FROM history h USING swept s \
                 WHERE h.namespace = s.namespace AND h.agent = s.agent AND h.conversation = s.conversation), \
             orphans AS (DELETE FROM history WHERE id = ANY(ARRAY( \
                 SELECT h.id FROM history h WHERE ",
            $agents,
            " AND h.at < $2 AND ($3::text IS NULL OR h.namespace = $3) \
                 AND NOT EXISTS (SELECT 1 FROM session s WHERE s.namespace = h.namespace AND s.agent = h.agent \
                     AND s.conversation = h.conversation) \
                 AND NOT EXISTS (SELECT 1 FROM tombstone t WHERE t.namespace = h.namespace AND t.agent = h.agent \
                     AND t.conversation = h.conversation) \
                 LIMIT $4 FOR UPDATE SKIP LOCKED))) \
             SELECT count(*) FROM swept"
        )
    };
}

pub(super) const DELETE_EXPIRED_OF_AGENT: &str = concat!(
    "WITH swept AS (DELETE FROM tombstone WHERE ctid = ANY(ARRAY( \
         SELECT ctid FROM tombstone WHERE agent = $1 AND cleared_at < $2 AND ($3::text IS NULL OR namespace = $3) \
         LIMIT $4 FOR UPDATE SKIP LOCKED)) AND cleared_at < $2 ",
    and_their_history!("h.agent = $1")
);
pub(super) const DELETE_EXPIRED_OF_OTHER_AGENTS: &str = concat!(
    "WITH swept AS (DELETE FROM tombstone WHERE ctid = ANY(ARRAY( \
         SELECT ctid FROM tombstone WHERE agent <> ALL($1::text[]) AND cleared_at < $2 \
         AND ($3::text IS NULL OR namespace = $3) LIMIT $4 FOR UPDATE SKIP LOCKED)) AND cleared_at < $2 ",
    and_their_history!("h.agent <> ALL($1::text[])")
);

pub(super) const COUNT_EXPIRED_OF_AGENT: &str = "SELECT count(*) FROM tombstone \
     WHERE agent = $1 AND cleared_at < $2 AND ($3::text IS NULL OR namespace = $3)";
pub(super) const COUNT_EXPIRED_OF_OTHER_AGENTS: &str = "SELECT count(*) FROM tombstone \
     WHERE agent <> ALL($1::text[]) AND cleared_at < $2 AND ($3::text IS NULL OR namespace = $3)";

/// A tombstone as Postgres returns it.
#[derive(sqlx::FromRow)]
pub(super) struct TombstoneRecord {
    session_id: String,
    reason: String,
    cleared_at: DateTime<Utc>,
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

impl TombstoneRecord {
    pub(super) fn into_tombstone(self) -> Result<Tombstone, StoreError> {
        let reason = TombstoneReason::parse(&self.reason)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown tombstone reason {:?}", self.reason)))?;
        let result_class = match self.result_class.as_str() {
            "" => None,
            text => Some(
                super::super::class_from_str(text)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown result class {text:?}")))?,
            ),
        };
        Ok(Tombstone {
            session_id: self.session_id,
            reason,
            cleared_at: self.cleared_at,
            result_class,
            matched_signature: Some(self.matched_signature).filter(|s| !s.is_empty()),
            reported_binding: Binding {
                provider: self.reported_provider,
                host: self.reported_host,
                config_dir: self.reported_config_dir,
                cwd: self.reported_cwd,
            },
            stored_binding: Binding {
                provider: self.stored_provider,
                host: self.stored_host,
                config_dir: self.stored_config_dir,
                cwd: self.stored_cwd,
            },
        })
    }
}

/// A row of [`SELECT_MANY`]: which key (numbered from 1) the tombstone is of.
#[derive(sqlx::FromRow)]
struct NumberedTombstone {
    ordinal: i64,
    #[sqlx(flatten)]
    record: TombstoneRecord,
}

/// The tombstones `keys` have, each with its key's place among them (numbered from 1): one query,
/// on the caller's connection (a Get's lookup reads them in its own transaction; a single key's
/// is read the same way).
pub(super) async fn read_many(
    conn: &mut PgConnection,
    keys: &[&SessionKey],
) -> Result<Vec<(i64, TombstoneRecord)>, sqlx::Error> {
    let found: Vec<NumberedTombstone> = sqlx::query_as(SELECT_MANY)
        .persistent(false)
        .bind(keys.iter().map(|k| k.namespace()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.agent()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.conversation()).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
    Ok(found.into_iter().map(|n| (n.ordinal, n.record)).collect())
}
