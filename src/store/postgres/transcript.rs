//! Transcripts on Postgres ([`TranscriptStore`] for [`PostgresStore`]): the SQL of the transcript
//! tables, every statement a `&'static str` here, run as unnamed statements inside the store's
//! [`Leased`](super::Leased) transactions, bounded like every other operation.
//!
//! An append is two statements whatever its size, the entries bound as arrays: the first claims the
//! append id and locks the transcript's header (creating it), so appends to one transcript queue
//! there and a repeated append id waits for the first to commit; the second, with a snapshot taken
//! once the lock is held, skips the entries whose uuid is stored, checks the byte limit, inserts the
//! rest, moves the header and records the outcome. A full transcript rolls the transaction back:
//! nothing of the append stays, not even its claim.
//!
//! A summary write rides on the second statement: its compare-and-set is one more CTE, so an append
//! with a summary is still `BEGIN`, two statements, `COMMIT`. The header's lock serialises it with
//! every other append and delete of the transcript. A summary alone (no entries) claims the append
//! id and locks the header only when the transcript exists, and runs the same second statement.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::PostgresStore;
use crate::domain::{Entry, Summary, SummaryDialect, SummaryWrite, TranscriptKey};
use crate::store::StoreError;
use crate::store::transcript::{
    AppendOutcome, AppendReply, Header, ListedSession, PageRow, SessionRow, StoredAppend, SummaryColumns, SummaryReply,
    TotalsRow, TranscriptPage, TranscriptStore, TranscriptTotals, TranscriptsDeleted, count, dialect_code,
    page_from_rows, sessions_from_rows, stored_count,
};

// Claims the append id (waiting while another transaction holds it uncommitted) and, only when
// claimed, creates or locks the header: the append id's lock before the header's, always. NULL
// when the append id was claimed before.
const CLAIM_APPEND_AND_LOCK_TRANSCRIPT: &str = "WITH claim AS ( \
         INSERT INTO transcript_append (namespace, append_id, project_key, session_id, subpath, created_at) \
         VALUES ($1, $5, $2, $3, $4, $6) ON CONFLICT (namespace, append_id) DO NOTHING RETURNING 1), \
     header AS ( \
         INSERT INTO transcript (namespace, project_key, session_id, subpath, mtime_ms) \
         SELECT $1, $2, $3, $4, 0 WHERE EXISTS (SELECT 1 FROM claim) \
         ON CONFLICT (namespace, project_key, session_id, subpath) DO UPDATE SET mtime_ms = transcript.mtime_ms \
         RETURNING id) \
     SELECT (SELECT id FROM header)";
// For a summary alone: claims the append id only when the transcript exists, then locks its
// header (same order as above). `id` NULL with `claimed` true: deleted in between.
const CLAIM_APPEND_AND_LOCK_EXISTING: &str = "WITH claim AS ( \
         INSERT INTO transcript_append (namespace, append_id, project_key, session_id, subpath, created_at) \
         SELECT $1, $5, $2, $3, $4, $6 WHERE EXISTS (SELECT 1 FROM transcript \
             WHERE namespace = $1 AND project_key = $2 AND session_id = $3 AND subpath = $4) \
         ON CONFLICT (namespace, append_id) DO NOTHING RETURNING 1), \
     header AS ( \
         SELECT id FROM transcript \
         WHERE namespace = $1 AND project_key = $2 AND session_id = $3 AND subpath = $4 \
         AND EXISTS (SELECT 1 FROM claim) FOR UPDATE) \
     SELECT (SELECT id FROM header) AS id, EXISTS (SELECT 1 FROM claim) AS claimed";
// The append itself, on the header locked above ($1): entries ($2) with their uuids ($3, NULL for
// none) in call order; an entry is fresh when it has no uuid, or its uuid is neither earlier in the
// call nor stored. Nothing is written unless the fresh entries fit under the limit ($4). Seqs
// continue the transcript without gaps; mtime ($5 is now in ms) moves only when something is stored.
// The summary of dialect $9 (NULL: none sent) is written as $10 when the stored version equals $11
// (0: none stored), with the header's new mtime; the outcome says so, with the stored summary when
// it was not written (its data only then: the caller has the data it wrote).
const APPEND_ENTRIES: &str = "WITH input AS ( \
         SELECT e, u, ord, row_number() OVER (PARTITION BY u ORDER BY ord) AS nth \
         FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS x(e, u, ord)), \
     fresh AS ( \
         SELECT i.e, i.u, row_number() OVER (ORDER BY i.ord) AS n FROM input i \
         WHERE (i.u IS NULL OR i.nth = 1) \
         AND NOT EXISTS (SELECT 1 FROM transcript_entry t WHERE t.transcript_id = $1 AND t.uuid = i.u)), \
     header AS (SELECT entry_count, byte_count FROM transcript WHERE id = $1), \
     verdict AS ( \
         SELECT (SELECT count(*) FROM fresh) AS stored, \
         coalesce((SELECT sum(octet_length(e)) FROM fresh), 0)::bigint AS bytes, \
         h.byte_count AS byte_count_before, h.entry_count AS entry_count_before FROM header h), \
     fits AS (SELECT v.* FROM verdict v WHERE v.byte_count_before + v.bytes <= $4), \
     inserted AS ( \
         INSERT INTO transcript_entry (transcript_id, seq, uuid, entry) \
         SELECT $1, v.entry_count_before + f.n, f.u, f.e FROM fresh f, fits v), \
     moved AS ( \
         UPDATE transcript t SET entry_count = t.entry_count + v.stored, byte_count = t.byte_count + v.bytes, \
         mtime_ms = CASE WHEN v.stored > 0 THEN greatest($5, t.mtime_ms + 1) ELSE t.mtime_ms END \
         FROM fits v WHERE t.id = $1 RETURNING t.entry_count, t.byte_count, t.mtime_ms), \
     summary_before AS ( \
         SELECT data, version, mtime_ms FROM transcript_summary WHERE transcript_id = $1 AND dialect = $9::smallint), \
     written AS ( \
         INSERT INTO transcript_summary (transcript_id, dialect, data, version, mtime_ms) \
         SELECT $1, $9::smallint, $10::text, $11::bigint + 1, m.mtime_ms FROM moved m \
         WHERE $9::smallint IS NOT NULL AND coalesce((SELECT version FROM summary_before), 0) = $11::bigint \
         ON CONFLICT (transcript_id, dialect) DO UPDATE SET \
         data = excluded.data, version = excluded.version, mtime_ms = excluded.mtime_ms \
         RETURNING version, mtime_ms), \
     recorded AS ( \
         UPDATE transcript_append a SET stored = v.stored, duplicates = $6 - v.stored, \
         entry_count = m.entry_count, byte_count = m.byte_count, mtime_ms = m.mtime_ms, \
         summary_written = EXISTS (SELECT 1 FROM written) \
         FROM fits v, moved m WHERE a.namespace = $7 AND a.append_id = $8) \
     SELECT v.byte_count_before, v.stored, m.entry_count, m.byte_count, m.mtime_ms, \
     w.version IS NOT NULL AS summary_written, \
     CASE WHEN w.version IS NULL THEN b.data END AS summary_data, \
     coalesce(w.version, b.version) AS summary_version, coalesce(w.mtime_ms, b.mtime_ms) AS summary_mtime_ms \
     FROM verdict v LEFT JOIN moved m ON true LEFT JOIN written w ON true LEFT JOIN summary_before b ON true";
// The record, with the summary of dialect $3 (NULL: none asked) its transcript holds now.
const SELECT_APPEND: &str = "SELECT a.project_key, a.session_id, a.subpath, a.stored, a.duplicates, a.entry_count, \
     a.byte_count, a.mtime_ms, a.summary_written, \
     s.data AS summary_data, s.version AS summary_version, s.mtime_ms AS summary_mtime_ms \
     FROM transcript_append a \
     LEFT JOIN transcript t ON $3::smallint IS NOT NULL AND t.namespace = a.namespace \
         AND t.project_key = a.project_key AND t.session_id = a.session_id AND t.subpath = a.subpath \
     LEFT JOIN transcript_summary s ON s.transcript_id = t.id AND s.dialect = $3::smallint \
     WHERE a.namespace = $1 AND a.append_id = $2";
const SELECT_TRANSCRIPT: &str = "SELECT id, entry_count, byte_count, mtime_ms FROM transcript \
     WHERE namespace = $1 AND project_key = $2 AND session_id = $3 AND subpath = $4";
// One statement, so the header and the entries are of one snapshot: the header's columns on every
// row, with the page's entries (none: one row with a NULL seq). The first `$6` entries after `$5`,
// cut where their running size passes `$7` bytes, the first always kept; the summary of dialect `$8`
// (NULL: none asked), its data on the first row only.
const SELECT_PAGE: &str = "SELECT h.entry_count, h.byte_count, h.mtime_ms, p.seq, p.entry, \
     CASE WHEN row_number() OVER (ORDER BY p.seq) = 1 THEN s.data END AS summary_data, \
     s.version AS summary_version, s.mtime_ms AS summary_mtime_ms \
     FROM transcript h LEFT JOIN LATERAL ( \
         SELECT r.seq, r.entry FROM ( \
             SELECT l.seq, l.entry, row_number() OVER w AS n, sum(octet_length(l.entry)) OVER w AS running \
             FROM (SELECT e.seq, e.entry FROM transcript_entry e \
                   WHERE e.transcript_id = h.id AND e.seq > $5 ORDER BY e.seq LIMIT $6) l \
             WINDOW w AS (ORDER BY l.seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) r \
         WHERE r.n = 1 OR r.running <= $7) p ON true \
     LEFT JOIN transcript_summary s ON s.transcript_id = h.id AND s.dialect = $8::smallint \
     WHERE h.namespace = $1 AND h.project_key = $2 AND h.session_id = $3 AND h.subpath = $4 \
     ORDER BY p.seq";
// With the summary of dialect $3 (NULL: none asked) where stored.
const SELECT_SESSIONS: &str = "SELECT t.session_id, t.mtime_ms, \
     s.data AS summary_data, s.version AS summary_version, s.mtime_ms AS summary_mtime_ms \
     FROM transcript t LEFT JOIN transcript_summary s ON s.transcript_id = t.id AND s.dialect = $3::smallint \
     WHERE t.namespace = $1 AND t.project_key = $2 AND t.subpath = '' ORDER BY t.session_id";
const SELECT_SUBKEYS: &str = "SELECT subpath FROM transcript \
     WHERE namespace = $1 AND project_key = $2 AND session_id = $3 AND subpath <> '' ORDER BY subpath";
// The headers first (waiting for an append that holds one), then, in a statement of its own whose
// snapshot sees whatever that append committed, their children (DELETE_CHILDREN). '' ($4) deletes
// every subpath.
const DELETE_TRANSCRIPTS: &str = "DELETE FROM transcript \
     WHERE namespace = $1 AND project_key = $2 AND session_id = $3 AND ($4::text = '' OR subpath = $4) RETURNING id";
// Everything stored under the deleted headers $1: summaries and entries (counted).
const DELETE_CHILDREN: &str = "WITH summaries AS ( \
         DELETE FROM transcript_summary WHERE transcript_id = ANY($1::bigint[])) \
     DELETE FROM transcript_entry WHERE transcript_id = ANY($1::bigint[])";
// The gauges' sums: one pass over the headers, never the entries.
const SELECT_TOTALS: &str = "SELECT count(*) AS transcripts, sum(entry_count)::bigint AS entries, \
     sum(byte_count)::bigint AS bytes FROM transcript";

/// The answer of [`APPEND_ENTRIES`]: the header after it, or none when the entries did not fit.
#[derive(sqlx::FromRow)]
struct Appended {
    byte_count_before: i64,
    stored: i64,
    entry_count: Option<i64>,
    byte_count: Option<i64>,
    mtime_ms: Option<i64>,
    summary_written: bool,
    #[sqlx(flatten)]
    summary: SummaryColumns,
}

/// The answer of [`CLAIM_APPEND_AND_LOCK_EXISTING`].
#[derive(sqlx::FromRow)]
struct ClaimedExisting {
    id: Option<i64>,
    claimed: bool,
}

/// A summary write's binds: dialect, data and if_version (NULLs: none).
fn summary_binds(summary: Option<&SummaryWrite>) -> (Option<i16>, Option<&str>, i64) {
    match summary {
        Some(write) => (
            Some(write.dialect.code()),
            Some(write.data_json.as_str()),
            stored_count(write.if_version),
        ),
        None => (None, None, 0),
    }
}

impl PostgresStore {
    /// The header at `key`, for an append with no entries.
    async fn transcript_header(&self, key: &TranscriptKey) -> Result<Option<Header>, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let header: Option<Header> = sqlx::query_as(SELECT_TRANSCRIPT)
                .persistent(false)
                .bind(key.namespace())
                .bind(key.project_key())
                .bind(key.session_id())
                .bind(key.subpath())
                .fetch_optional(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(header)
        })
        .await
    }

    /// Deletes what is stored under the transcripts `ids` (their summaries and entries), on a
    /// connection inside the transaction that deletes their headers (after it deleted them, so an
    /// append holding a header's lock has committed). Returns the entries deleted. Every delete
    /// of transcript headers uses it, so nothing of a deleted transcript stays.
    pub(super) async fn delete_transcript_children(
        &self,
        conn: &mut PgConnection,
        ids: &[i64],
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let entries = sqlx::query(DELETE_CHILDREN)
            .persistent(false)
            .bind(ids)
            .execute(conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(entries.rows_affected())
    }

    /// The replay of a claimed append id: its record (with the dialect's summary stored now).
    async fn replayed(
        &self,
        conn: &mut PgConnection,
        key: &TranscriptKey,
        append_id: &str,
        summary: Option<&SummaryWrite>,
    ) -> Result<Option<(AppendReply, SummaryReply)>, StoreError> {
        let record: Option<StoredAppend> = sqlx::query_as(SELECT_APPEND)
            .persistent(false)
            .bind(key.namespace())
            .bind(append_id)
            .bind(dialect_code(summary.map(|s| s.dialect)))
            .fetch_optional(conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(record.map(|record| record.into_reply(key, summary)))
    }
}

/// A transcript that does not exist, for a summary alone: nothing written.
fn no_transcript() -> (AppendReply, SummaryReply) {
    (
        AppendReply::Appended(Header::unchanged(None, 0)),
        SummaryReply::default(),
    )
}

#[async_trait]
impl TranscriptStore for PostgresStore {
    async fn append_with_summary(
        &self,
        key: &TranscriptKey,
        append_id: &str,
        entries: &[Entry],
        summary: Option<&SummaryWrite>,
        now: DateTime<Utc>,
        max_transcript_bytes: u64,
    ) -> Result<(AppendReply, SummaryReply), StoreError> {
        if entries.is_empty() && summary.is_none() {
            let header = self.transcript_header(key).await?;
            return Ok((
                AppendReply::Appended(Header::unchanged(header, 0)),
                SummaryReply::default(),
            ));
        }
        let texts: Vec<&str> = entries.iter().map(|e| e.json.as_str()).collect();
        let uuids: Vec<Option<&str>> = entries.iter().map(|e| e.uuid.as_deref()).collect();
        let (dialect, data, if_version) = summary_binds(summary);
        self.bounded(async {
            let mut tx = self.lease().await?;
            let transcript_id: Option<i64> = if entries.is_empty() {
                let claimed: ClaimedExisting = sqlx::query_as(CLAIM_APPEND_AND_LOCK_EXISTING)
                    .persistent(false)
                    .bind(key.namespace())
                    .bind(key.project_key())
                    .bind(key.session_id())
                    .bind(key.subpath())
                    .bind(append_id)
                    .bind(now)
                    .fetch_one(tx.conn()?)
                    .await
                    .map_err(|e| self.fail(e))?;
                match claimed {
                    ClaimedExisting { id: Some(id), .. } => Some(id),
                    ClaimedExisting {
                        id: None,
                        claimed: true,
                    } => {
                        // Deleted between the claim and the lock: the claim goes too.
                        tx.rollback(self).await?;
                        return Ok(no_transcript());
                    }
                    ClaimedExisting {
                        id: None,
                        claimed: false,
                    } => None,
                }
            } else {
                sqlx::query_scalar(CLAIM_APPEND_AND_LOCK_TRANSCRIPT)
                    .persistent(false)
                    .bind(key.namespace())
                    .bind(key.project_key())
                    .bind(key.session_id())
                    .bind(key.subpath())
                    .bind(append_id)
                    .bind(now)
                    .fetch_one(tx.conn()?)
                    .await
                    .map_err(|e| self.fail(e))?
            };
            let Some(transcript_id) = transcript_id else {
                let replayed = self.replayed(tx.conn()?, key, append_id, summary).await?;
                tx.commit(self).await?;
                return match replayed {
                    Some(replayed) => Ok(replayed),
                    // Only a summary alone claims nothing for a known id: its transcript does not exist.
                    None if entries.is_empty() => Ok(no_transcript()),
                    None => Err(StoreError::Other(
                        "the append id's record vanished after its claim conflicted".into(),
                    )),
                };
            };
            let appended: Appended = sqlx::query_as(APPEND_ENTRIES)
                .persistent(false)
                .bind(transcript_id)
                .bind(&texts)
                .bind(&uuids)
                .bind(stored_count(max_transcript_bytes))
                .bind(now.timestamp_millis())
                .bind(stored_count(entries.len() as u64))
                .bind(key.namespace())
                .bind(append_id)
                .bind(dialect)
                .bind(data)
                .bind(if_version)
                .fetch_one(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            let (Some(entry_count), Some(byte_count), Some(mtime_ms)) =
                (appended.entry_count, appended.byte_count, appended.mtime_ms)
            else {
                // Did not fit: neither the claim nor a header made for this append stays.
                tx.rollback(self).await?;
                return Ok((
                    AppendReply::Full {
                        byte_count: count(appended.byte_count_before),
                        limit: max_transcript_bytes,
                    },
                    SummaryReply::default(),
                ));
            };
            tx.commit(self).await?;
            let stored = count(appended.stored);
            let summary_reply = match summary {
                None => SummaryReply::default(),
                Some(write) if appended.summary_written => SummaryReply {
                    written: true,
                    current: Some(Summary {
                        dialect: write.dialect,
                        data_json: write.data_json.clone(),
                        version: write.if_version + 1,
                        mtime_ms,
                    }),
                },
                Some(write) => SummaryReply {
                    written: false,
                    current: appended.summary.into_summary(write.dialect),
                },
            };
            Ok((
                AppendReply::Appended(AppendOutcome {
                    stored,
                    duplicates: (entries.len() as u64).saturating_sub(stored),
                    entry_count: count(entry_count),
                    byte_count: count(byte_count),
                    mtime_ms,
                }),
                summary_reply,
            ))
        })
        .await
    }

    async fn load_page(
        &self,
        key: &TranscriptKey,
        after_seq: i64,
        max_entries: u32,
        max_bytes: u64,
        summary: Option<SummaryDialect>,
    ) -> Result<Option<TranscriptPage>, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let rows: Vec<PageRow> = sqlx::query_as(SELECT_PAGE)
                .persistent(false)
                .bind(key.namespace())
                .bind(key.project_key())
                .bind(key.session_id())
                .bind(key.subpath())
                .bind(after_seq)
                .bind(i64::from(max_entries.max(1)))
                .bind(stored_count(max_bytes))
                .bind(dialect_code(summary))
                .fetch_all(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(page_from_rows(rows, summary))
        })
        .await
    }

    async fn list_sessions(
        &self,
        namespace: &str,
        project_key: &str,
        summary: Option<SummaryDialect>,
    ) -> Result<Vec<ListedSession>, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let rows: Vec<SessionRow> = sqlx::query_as(SELECT_SESSIONS)
                .persistent(false)
                .bind(namespace)
                .bind(project_key)
                .bind(dialect_code(summary))
                .fetch_all(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(sessions_from_rows(rows, summary))
        })
        .await
    }

    async fn list_subkeys(
        &self,
        namespace: &str,
        project_key: &str,
        session_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let subpaths: Vec<String> = sqlx::query_scalar(SELECT_SUBKEYS)
                .persistent(false)
                .bind(namespace)
                .bind(project_key)
                .bind(session_id)
                .fetch_all(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(subpaths)
        })
        .await
    }

    async fn delete(&self, key: &TranscriptKey) -> Result<TranscriptsDeleted, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let ids: Vec<i64> = sqlx::query_scalar(DELETE_TRANSCRIPTS)
                .persistent(false)
                .bind(key.namespace())
                .bind(key.project_key())
                .bind(key.session_id())
                .bind(key.subpath())
                .fetch_all(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            if ids.is_empty() {
                tx.commit(self).await?;
                return Ok(TranscriptsDeleted::default());
            }
            let entries = self.delete_transcript_children(tx.conn()?, &ids).await?;
            tx.commit(self).await?;
            Ok(TranscriptsDeleted {
                transcripts: ids.len() as u64,
                entries,
            })
        })
        .await
    }

    async fn transcript_totals(&self) -> Result<TranscriptTotals, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let row: TotalsRow = sqlx::query_as(SELECT_TOTALS)
                .persistent(false)
                .fetch_one(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(row.into())
        })
        .await
    }
}
