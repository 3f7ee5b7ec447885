//! SQLite SQL of the one lifecycle of transcripts and session rows (design §6.3): the cascade
//! that runs inside the write transaction removing a session row ([`cascade`]), the sweep of
//! transcripts no row holds, the pruning of append records and Get's look-up of a row's main
//! transcript. A transcript's children are deleted in one place, [`delete_transcripts`], shared by
//! the cascade and the sweep. The embedded store has one writer and no round trips, so the
//! cascade runs per removed id.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;

use super::write_tx::WriteTx;
use super::{SqliteStore, lite, micros};
use crate::domain::{MainTranscript, TranscriptFate};
use crate::store::{StoreError, SweptTranscripts, TranscriptLifecycle};

/// No row of the transcript's namespace holds its session id (any more).
macro_rules! unheld {
    () => {
        "NOT EXISTS (SELECT 1 FROM session s WHERE s.namespace = t.namespace AND s.session_id = t.session_id)"
    };
}

/// Every table keyed by `transcript_id`, emptied of the doomed transcripts' rows before their
/// headers go: entries and summaries.
const CHILD_TABLES: &[&str] = &["transcript_entry", "transcript_summary"];

const UNHELD_OF_ID: &str = concat!(
    "SELECT t.id FROM transcript t WHERE t.namespace = ?1 AND t.session_id = ?2 AND ",
    unheld!()
);
const MARK_UNHELD_OF_ID: &str = concat!(
    "UPDATE transcript AS t SET delete_after_ms = ?3 WHERE t.namespace = ?1 AND t.session_id = ?2 AND ",
    unheld!()
);
/// ?1 last append cutoff (ms), ?2 now (ms), ?3 namespace or NULL.
macro_rules! sweepable {
    () => {
        concat!(
            "(t.mtime_ms < ?1 OR t.delete_after_ms <= ?2) AND (?3 IS NULL OR t.namespace = ?3) AND ",
            unheld!()
        )
    };
}
const SWEEPABLE: &str = concat!(
    "SELECT t.id, coalesce(t.delete_after_ms <= ?2, 0) AS graced FROM transcript t WHERE ",
    sweepable!(),
    " LIMIT ?4"
);
const COUNT_SWEEPABLE: &str = concat!(
    "SELECT coalesce(sum(NOT coalesce(t.delete_after_ms <= ?2, 0)), 0), \
         coalesce(sum(coalesce(t.delete_after_ms <= ?2, 0)), 0) FROM transcript t WHERE ",
    sweepable!()
);
const DELETE_APPENDS_BEFORE: &str = "DELETE FROM transcript_append WHERE (namespace, append_id) IN ( \
         SELECT namespace, append_id FROM transcript_append WHERE created_at < ?1 LIMIT ?2)";
/// A mark counts only while no row holds the id: storing the id again voids it.
const MAIN_TRANSCRIPT: &str = concat!(
    "SELECT t.project_key, t.entry_count, (t.delete_after_ms IS NOT NULL AND ",
    unheld!(),
    ") AS delete_pending FROM transcript t \
     WHERE t.namespace = ?1 AND t.session_id = ?2 AND t.subpath = '' AND (?3 IS NULL OR t.project_key = ?3) \
     ORDER BY (t.entry_count > 0 AND t.delete_after_ms IS NULL) DESC, t.mtime_ms DESC LIMIT 1"
);

/// A row (alias `$a`) expired under an expiry rule of one agent: ?1 agent, ?2 cutoff, ?3 namespace.
macro_rules! expired_of_agent {
    ($a:literal) => {
        concat!(
            $a,
            ".agent = ?1 AND ",
            $a,
            ".last_used_at < ?2 AND (?3 IS NULL OR ",
            $a,
            ".namespace = ?3)"
        )
    };
}
/// The same for every agent but ?1 (a JSON array).
macro_rules! expired_of_other_agents {
    ($a:literal) => {
        concat!(
            $a,
            ".agent NOT IN (SELECT value FROM json_each(?1)) AND ",
            $a,
            ".last_used_at < ?2 \
             AND (?3 IS NULL OR ",
            $a,
            ".namespace = ?3)"
        )
    };
}
/// A dry-run sweep of one rule: the expired rows, and the transcripts whose id only expired rows
/// of the rule hold (what the cascade would delete with no grace period).
macro_rules! count_expired {
    ($expired:ident) => {
        concat!(
            "SELECT (SELECT count(*) FROM session e WHERE ", $expired!("e"), "), \
             (SELECT count(*) FROM transcript t \
              WHERE EXISTS (SELECT 1 FROM session e WHERE e.namespace = t.namespace AND e.session_id = t.session_id AND ",
            $expired!("e"),
            ") AND NOT EXISTS (SELECT 1 FROM session s WHERE s.namespace = t.namespace AND s.session_id = t.session_id \
              AND NOT (", $expired!("s"), ")))"
        )
    };
}
pub(super) const COUNT_EXPIRED_OF_AGENT: &str = count_expired!(expired_of_agent);
pub(super) const COUNT_EXPIRED_OF_OTHER_AGENTS: &str = count_expired!(expired_of_other_agents);

/// Applies `fate` to the transcripts of `session_id` in `namespace`, whose row the current write
/// transaction just removed, unless another row of the namespace still holds the id. Returns the
/// transcripts deleted (marks are not deletions).
pub(super) async fn cascade(
    conn: &mut SqliteConnection,
    namespace: &str,
    session_id: &str,
    fate: TranscriptFate,
) -> Result<u64, StoreError> {
    match fate {
        TranscriptFate::Delete => {
            let ids: Vec<i64> = sqlx::query_scalar(UNHELD_OF_ID)
                .bind(namespace)
                .bind(session_id)
                .fetch_all(&mut *conn)
                .await
                .map_err(lite)?;
            delete_transcripts(conn, &ids).await
        }
        TranscriptFate::DeleteAfterMs(at) => {
            sqlx::query(MARK_UNHELD_OF_ID)
                .bind(namespace)
                .bind(session_id)
                .bind(at)
                .execute(&mut *conn)
                .await
                .map_err(lite)?;
            Ok(0)
        }
    }
}

/// Deletes the transcripts `ids` with every child row ([`CHILD_TABLES`]); returns how many.
async fn delete_transcripts(conn: &mut SqliteConnection, ids: &[i64]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = serde_json::to_string(ids).map_err(|e| StoreError::Other(e.into()))?;
    for table in CHILD_TABLES {
        let delete = format!("DELETE FROM {table} WHERE transcript_id IN (SELECT value FROM json_each(?1))");
        sqlx::query(sqlx::AssertSqlSafe(delete))
            .bind(&ids)
            .execute(&mut *conn)
            .await
            .map_err(lite)?;
    }
    let done = sqlx::query("DELETE FROM transcript WHERE id IN (SELECT value FROM json_each(?1))")
        .bind(&ids)
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
    Ok(done.rows_affected())
}

#[derive(sqlx::FromRow)]
struct MainRecord {
    project_key: String,
    entry_count: i64,
    delete_pending: bool,
}

fn swept(orphan: i64, graced: i64) -> SweptTranscripts {
    SweptTranscripts {
        orphan: u64::try_from(orphan).unwrap_or(0),
        graced: u64::try_from(graced).unwrap_or(0),
    }
}

impl SqliteStore {
    async fn sweep_transcripts_batch_once(
        &self,
        namespace: Option<&str>,
        last_append_before_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<SweptTranscripts, StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        let doomed: Vec<(i64, bool)> = sqlx::query_as(SWEEPABLE)
            .bind(last_append_before_ms)
            .bind(now_ms)
            .bind(namespace)
            .bind(i64::from(limit))
            .fetch_all(tx.conn())
            .await
            .map_err(lite)?;
        let ids: Vec<i64> = doomed.iter().map(|(id, _)| *id).collect();
        delete_transcripts(tx.conn(), &ids).await?;
        tx.commit().await?;
        let graced = doomed.iter().filter(|(_, graced)| *graced).count();
        Ok(swept(
            i64::try_from(doomed.len() - graced).unwrap_or(i64::MAX),
            i64::try_from(graced).unwrap_or(i64::MAX),
        ))
    }
}

#[async_trait]
impl TranscriptLifecycle for SqliteStore {
    async fn main_transcript(
        &self,
        namespace: &str,
        session_id: &str,
        project_key: Option<&str>,
    ) -> Result<Option<MainTranscript>, StoreError> {
        let found: Option<MainRecord> = self.storage.note(
            sqlx::query_as(MAIN_TRANSCRIPT)
                .bind(namespace)
                .bind(session_id)
                .bind(project_key)
                .fetch_optional(&self.pool)
                .await
                .map_err(lite),
        )?;
        Ok(found.map(|m| MainTranscript {
            project_key: m.project_key,
            entry_count: u64::try_from(m.entry_count).unwrap_or(0),
            delete_pending: m.delete_pending,
        }))
    }

    async fn sweep_transcripts_batch(
        &self,
        namespace: Option<&str>,
        last_append_before_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<SweptTranscripts, StoreError> {
        self.storage.note(
            self.sweep_transcripts_batch_once(namespace, last_append_before_ms, now_ms, limit)
                .await,
        )
    }

    async fn count_sweepable_transcripts(
        &self,
        namespace: Option<&str>,
        last_append_before_ms: i64,
        now_ms: i64,
    ) -> Result<SweptTranscripts, StoreError> {
        let (orphan, graced): (i64, i64) = self.storage.note(
            sqlx::query_as(COUNT_SWEEPABLE)
                .bind(last_append_before_ms)
                .bind(now_ms)
                .bind(namespace)
                .fetch_one(&self.pool)
                .await
                .map_err(lite),
        )?;
        Ok(swept(orphan, graced))
    }

    async fn delete_appends_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let done = self.storage.note(
            sqlx::query(DELETE_APPENDS_BEFORE)
                .bind(micros(before))
                .bind(i64::from(limit))
                .execute(&self.pool)
                .await
                .map_err(lite),
        )?;
        Ok(done.rows_affected())
    }
}
