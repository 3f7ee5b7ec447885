//! Postgres SQL of the one lifecycle of transcripts and session rows (design §6.3): the cascade
//! that runs inside the transaction removing session rows ([`cascade`]: one statement for every id
//! the transaction removed, whatever their number), the sweep of transcripts no row holds, the
//! pruning of append records and Get's look-up of a row's main transcript. A transcript's children
//! are deleted in one place, the `delete_doomed!` fragment, shared by the cascade and the sweep.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::PostgresStore;
use crate::domain::{MainTranscript, TranscriptFate};
use crate::store::{StoreError, SweptTranscripts, TranscriptLifecycle};

/// Deletes the transcripts of the CTE `doomed(id, graced)` with their children, and returns
/// `headers(namespace, session_id, graced)`. Every table keyed by `transcript_id` gets a line
/// here, before `headers`: entries and summaries.
macro_rules! delete_doomed {
    () => {
        "entries AS (DELETE FROM transcript_entry e USING doomed d WHERE e.transcript_id = d.id), \
         summaries AS (DELETE FROM transcript_summary s USING doomed d WHERE s.transcript_id = d.id), \
         headers AS (DELETE FROM transcript t USING doomed d WHERE t.id = d.id \
             RETURNING t.namespace, t.session_id, d.graced) "
    };
}

/// No row of the transcript's namespace holds its session id (any more).
macro_rules! unheld {
    () => {
        "NOT EXISTS (SELECT 1 FROM session s WHERE s.namespace = t.namespace AND s.session_id = t.session_id)"
    };
}

/// The session ids ($1 namespaces, $2 ids) the transaction removed rows of, distinct.
macro_rules! gone {
    () => {
        "gone AS (SELECT DISTINCT namespace, session_id FROM unnest($1::text[], $2::text[]) \
             AS g(namespace, session_id)) "
    };
}

const CASCADE_DELETE: &str = concat!(
    "WITH ",
    gone!(),
    ", doomed AS (SELECT t.id, false AS graced FROM transcript t \
         JOIN gone g ON t.namespace = g.namespace AND t.session_id = g.session_id WHERE ",
    unheld!(),
    "), ",
    delete_doomed!(),
    "SELECT namespace, session_id, count(*) FROM headers GROUP BY namespace, session_id"
);

const CASCADE_MARK: &str = concat!(
    "WITH ",
    gone!(),
    "UPDATE transcript t SET delete_after_ms = $3 FROM gone g \
     WHERE t.namespace = g.namespace AND t.session_id = g.session_id AND ",
    unheld!()
);

/// $1 last append cutoff (ms), $2 now (ms), $3 namespace or NULL.
macro_rules! sweepable {
    () => {
        concat!(
            "(t.mtime_ms < $1 OR t.delete_after_ms <= $2) AND ($3::text IS NULL OR t.namespace = $3) AND ",
            unheld!()
        )
    };
}

const SWEEP_BATCH: &str = concat!(
    "WITH doomed AS (SELECT t.id, coalesce(t.delete_after_ms <= $2, false) AS graced FROM transcript t WHERE ",
    sweepable!(),
    " LIMIT $4 FOR UPDATE OF t SKIP LOCKED), ",
    delete_doomed!(),
    "SELECT count(*) FILTER (WHERE NOT graced), count(*) FILTER (WHERE graced) FROM headers"
);

const COUNT_SWEEPABLE: &str = concat!(
    "SELECT count(*) FILTER (WHERE NOT coalesce(t.delete_after_ms <= $2, false)), \
         count(*) FILTER (WHERE coalesce(t.delete_after_ms <= $2, false)) FROM transcript t WHERE ",
    sweepable!()
);

const DELETE_APPENDS_BEFORE: &str = "DELETE FROM transcript_append WHERE ctid = ANY(ARRAY( \
         SELECT ctid FROM transcript_append WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))";

/// The main transcript of a session id: under the project key $3 (NULL: the one with entries
/// and no mark, last appended to). A mark counts only while no row holds the id: storing the id
/// again voids it. $1 namespace, $2 session id, $3 project key (NULL: any).
const MAIN_TRANSCRIPT: &str = concat!(
    "SELECT t.project_key, t.entry_count, (t.delete_after_ms IS NOT NULL AND ",
    unheld!(),
    ") AS delete_pending FROM transcript t WHERE t.namespace = $1 AND t.session_id = $2 AND t.subpath = '' \
     AND ($3::text IS NULL OR t.project_key = $3::text) \
     ORDER BY (t.entry_count > 0 AND t.delete_after_ms IS NULL) DESC, t.mtime_ms DESC LIMIT 1"
);

/// Applies `fate` to the transcripts of the session ids the current transaction removed rows of
/// (`gone`: namespace and session id pairs), except those another row of the namespace still
/// holds: one statement for all of them, run after the row changes in the same transaction.
/// Returns the transcripts deleted per pair (absent: none; marks are not deletions).
pub(super) async fn cascade(
    conn: &mut PgConnection,
    gone: &[(&str, &str)],
    fate: TranscriptFate,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let namespaces: Vec<&str> = gone.iter().map(|(n, _)| *n).collect();
    let session_ids: Vec<&str> = gone.iter().map(|(_, s)| *s).collect();
    match fate {
        TranscriptFate::Delete => {
            sqlx::query_as(CASCADE_DELETE)
                .persistent(false)
                .bind(&namespaces)
                .bind(&session_ids)
                .fetch_all(conn)
                .await
        }
        TranscriptFate::DeleteAfterMs(at) => {
            sqlx::query(CASCADE_MARK)
                .persistent(false)
                .bind(&namespaces)
                .bind(&session_ids)
                .bind(at)
                .execute(conn)
                .await?;
            Ok(Vec::new())
        }
    }
}

/// [`cascade`] for ids removed by several operations of one transaction (namespace, session id,
/// and the fate each operation asked for): one statement per distinct fate (one, but across a
/// policy reload). Returns the transcripts deleted for each, in order: a pair removed twice is
/// counted once, for the first.
pub(super) async fn cascade_each(
    conn: &mut PgConnection,
    gone: &[(&str, &str, TranscriptFate)],
) -> Result<Vec<u64>, sqlx::Error> {
    let mut counts = vec![0; gone.len()];
    let mut fates: Vec<TranscriptFate> = gone.iter().map(|(_, _, f)| *f).collect();
    fates.dedup();
    for fate in fates {
        let pairs: Vec<(&str, &str)> = gone.iter().filter(|g| g.2 == fate).map(|(n, s, _)| (*n, *s)).collect();
        for (namespace, session_id, deleted) in cascade(&mut *conn, &pairs, fate).await? {
            if let Some(at) = gone.iter().position(|(n, s, _)| *n == namespace && *s == session_id) {
                counts[at] = u64::try_from(deleted).unwrap_or(0);
            }
        }
    }
    Ok(counts)
}

#[derive(sqlx::FromRow)]
struct MainRecord {
    project_key: String,
    entry_count: i64,
    delete_pending: bool,
}

#[async_trait]
impl TranscriptLifecycle for PostgresStore {
    async fn main_transcript(
        &self,
        namespace: &str,
        session_id: &str,
        project_key: Option<&str>,
    ) -> Result<Option<MainTranscript>, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let found: Option<MainRecord> = sqlx::query_as(MAIN_TRANSCRIPT)
                .persistent(false)
                .bind(namespace)
                .bind(session_id)
                .bind(project_key)
                .fetch_optional(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(found.map(|m| MainTranscript {
                project_key: m.project_key,
                entry_count: u64::try_from(m.entry_count).unwrap_or(0),
                delete_pending: m.delete_pending,
            }))
        })
        .await
    }

    async fn sweep_transcripts_batch(
        &self,
        namespace: Option<&str>,
        last_append_before_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<SweptTranscripts, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let (orphan, graced): (i64, i64) = sqlx::query_as(SWEEP_BATCH)
                .persistent(false)
                .bind(last_append_before_ms)
                .bind(now_ms)
                .bind(namespace)
                .bind(i64::from(limit))
                .fetch_one(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(swept(orphan, graced))
        })
        .await
    }

    async fn count_sweepable_transcripts(
        &self,
        namespace: Option<&str>,
        last_append_before_ms: i64,
        now_ms: i64,
    ) -> Result<SweptTranscripts, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let (orphan, graced): (i64, i64) = sqlx::query_as(COUNT_SWEEPABLE)
                .persistent(false)
                .bind(last_append_before_ms)
                .bind(now_ms)
                .bind(namespace)
                .fetch_one(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(swept(orphan, graced))
        })
        .await
    }

    async fn delete_appends_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let done = sqlx::query(DELETE_APPENDS_BEFORE)
                .persistent(false)
                .bind(before)
                .bind(i64::from(limit))
                .execute(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(done.rows_affected())
        })
        .await
    }
}

fn swept(orphan: i64, graced: i64) -> SweptTranscripts {
    SweptTranscripts {
        orphan: u64::try_from(orphan).unwrap_or(0),
        graced: u64::try_from(graced).unwrap_or(0),
    }
}

/// A row (alias `$a`) expired under an expiry rule of one agent: $1 agent, $2 cutoff, $3 namespace.
macro_rules! expired_of_agent {
    ($a:literal) => {
        concat!(
            $a,
            ".agent = $1 AND (",
            $a,
            ".last_used_at < $2 OR ",
            $a,
            ".last_used_at = 'infinity') \
             AND ($3::text IS NULL OR ",
            $a,
            ".namespace = $3)"
        )
    };
}

/// The same for every agent but $1 (an array).
macro_rules! expired_of_other_agents {
    ($a:literal) => {
        concat!(
            $a,
            ".agent <> ALL($1::text[]) AND (",
            $a,
            ".last_used_at < $2 OR ",
            $a,
            ".last_used_at = 'infinity') \
             AND ($3::text IS NULL OR ",
            $a,
            ".namespace = $3)"
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
