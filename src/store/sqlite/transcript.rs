//! Transcripts in the embedded store ([`TranscriptStore`] for [`SqliteStore`]): the SQL of the
//! transcript tables. Appends and deletes are writes like any other, applied by the single writer
//! in its batches (`batch.rs`), each in a savepoint of its own inside `BEGIN IMMEDIATE`: holding
//! the write lock, an append reads the transcript, decides what to store and checks the limit
//! before it writes anything, then writes its entries one prepared statement each (in process: no
//! round trips to save), then its summary's compare-and-set. Foreign keys are off here, so a delete
//! removes the entries and summaries itself ([`delete_transcript_children`]). Reads go straight to
//! the pool, each one statement (one snapshot).

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;

use super::batch::Write;
use super::{SqliteStore, lite, micros};
use crate::domain::{Entry, Summary, SummaryDialect, SummaryWrite, TranscriptKey};
use crate::store::StoreError;
use crate::store::transcript::{
    AppendOutcome, AppendReply, Header, ListedSession, PageRow, SessionRow, StoredAppend, SummaryColumns, SummaryReply,
    TotalsRow, TranscriptPage, TranscriptStore, TranscriptTotals, TranscriptsDeleted, count, dialect_code,
    page_from_rows, sessions_from_rows, stored_count,
};

// The record, with the summary of dialect ?3 (NULL: none asked) its transcript holds now.
const SELECT_APPEND: &str = "SELECT a.project_key, a.session_id, a.subpath, a.stored, a.duplicates, a.entry_count, \
     a.byte_count, a.mtime_ms, a.summary_written, \
     s.data AS summary_data, s.version AS summary_version, s.mtime_ms AS summary_mtime_ms \
     FROM transcript_append a \
     LEFT JOIN transcript t ON ?3 IS NOT NULL AND t.namespace = a.namespace \
         AND t.project_key = a.project_key AND t.session_id = a.session_id AND t.subpath = a.subpath \
     LEFT JOIN transcript_summary s ON s.transcript_id = t.id AND s.dialect = ?3 \
     WHERE a.namespace = ?1 AND a.append_id = ?2";
const SELECT_SUMMARY: &str = "SELECT data AS summary_data, version AS summary_version, mtime_ms AS summary_mtime_ms \
     FROM transcript_summary WHERE transcript_id = ?1 AND dialect = ?2";
const UPSERT_SUMMARY: &str = "INSERT INTO transcript_summary (transcript_id, dialect, data, version, mtime_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (transcript_id, dialect) DO UPDATE SET \
     data = excluded.data, version = excluded.version, mtime_ms = excluded.mtime_ms";
const SELECT_TRANSCRIPT: &str = "SELECT id, entry_count, byte_count, mtime_ms FROM transcript \
     WHERE namespace = ?1 AND project_key = ?2 AND session_id = ?3 AND subpath = ?4";
const UUID_STORED: &str = "SELECT EXISTS (SELECT 1 FROM transcript_entry WHERE transcript_id = ?1 AND uuid = ?2)";
// The header's new counters, computed under the write lock from the header read in the same transaction.
const UPSERT_TRANSCRIPT: &str = "INSERT INTO transcript \
     (namespace, project_key, session_id, subpath, entry_count, byte_count, mtime_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (namespace, project_key, session_id, subpath) DO UPDATE SET \
     entry_count = excluded.entry_count, byte_count = excluded.byte_count, mtime_ms = excluded.mtime_ms \
     RETURNING id";
const INSERT_ENTRY: &str = "INSERT INTO transcript_entry (transcript_id, seq, uuid, entry) VALUES (?1, ?2, ?3, ?4)";
const RECORD_APPEND: &str = "INSERT INTO transcript_append \
     (namespace, append_id, project_key, session_id, subpath, stored, duplicates, entry_count, byte_count, mtime_ms, \
     created_at, summary_written) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
// The header's columns on every row, with the page's entries (none: one row with a NULL seq): the
// first `?6` entries after `?5`, cut where their running size passes `?7` bytes, the first always
// kept; the summary of dialect `?8` (NULL: none asked), its data on the first row only.
const SELECT_PAGE: &str = "SELECT h.entry_count, h.byte_count, h.mtime_ms, p.seq, p.entry, \
     CASE WHEN row_number() OVER (ORDER BY p.seq) = 1 THEN s.data END AS summary_data, \
     s.version AS summary_version, s.mtime_ms AS summary_mtime_ms \
     FROM transcript h LEFT JOIN ( \
         SELECT r.seq, r.entry FROM ( \
             SELECT l.seq, l.entry, row_number() OVER w AS n, sum(octet_length(l.entry)) OVER w AS running \
             FROM (SELECT e.seq, e.entry FROM transcript_entry e \
                   WHERE e.transcript_id = (SELECT id FROM transcript \
                       WHERE namespace = ?1 AND project_key = ?2 AND session_id = ?3 AND subpath = ?4) \
                   AND e.seq > ?5 ORDER BY e.seq LIMIT ?6) l \
             WINDOW w AS (ORDER BY l.seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) r \
         WHERE r.n = 1 OR r.running <= ?7) p ON 1 \
     LEFT JOIN transcript_summary s ON s.transcript_id = h.id AND s.dialect = ?8 \
     WHERE h.namespace = ?1 AND h.project_key = ?2 AND h.session_id = ?3 AND h.subpath = ?4 \
     ORDER BY p.seq";
// With the summary of dialect ?3 (NULL: none asked) where stored.
const SELECT_SESSIONS: &str = "SELECT t.session_id, t.mtime_ms, \
     s.data AS summary_data, s.version AS summary_version, s.mtime_ms AS summary_mtime_ms \
     FROM transcript t LEFT JOIN transcript_summary s ON s.transcript_id = t.id AND s.dialect = ?3 \
     WHERE t.namespace = ?1 AND t.project_key = ?2 AND t.subpath = '' ORDER BY t.session_id";
const SELECT_SUBKEYS: &str = "SELECT subpath FROM transcript \
     WHERE namespace = ?1 AND project_key = ?2 AND session_id = ?3 AND subpath <> '' ORDER BY subpath";
// '' (?4) deletes every subpath.
const SELECT_IDS: &str = "SELECT id FROM transcript \
     WHERE namespace = ?1 AND project_key = ?2 AND session_id = ?3 AND (?4 = '' OR subpath = ?4)";
// What is stored under the transcripts whose ids are the JSON array ?1.
const DELETE_SUMMARIES: &str =
    "DELETE FROM transcript_summary WHERE transcript_id IN (SELECT value FROM json_each(?1))";
const DELETE_ENTRIES: &str = "DELETE FROM transcript_entry WHERE transcript_id IN (SELECT value FROM json_each(?1))";
// The gauges' sums: one pass over the headers, never the entries.
const SELECT_TOTALS: &str = "SELECT count(*) AS transcripts, sum(entry_count) AS entries, sum(byte_count) AS bytes \
     FROM transcript";
const DELETE_TRANSCRIPTS: &str = "DELETE FROM transcript \
     WHERE namespace = ?1 AND project_key = ?2 AND session_id = ?3 AND (?4 = '' OR subpath = ?4)";

async fn fetch_header<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    key: &TranscriptKey,
) -> Result<Option<Header>, StoreError> {
    sqlx::query_as(SELECT_TRANSCRIPT)
        .bind(key.namespace())
        .bind(key.project_key())
        .bind(key.session_id())
        .bind(key.subpath())
        .fetch_optional(executor)
        .await
        .map_err(lite)
}

/// One append, on the batch's connection inside its write transaction (and its own savepoint),
/// with its summary's compare-and-set after the entries.
pub(super) async fn append(
    conn: &mut SqliteConnection,
    key: &TranscriptKey,
    append_id: &str,
    entries: &[Entry],
    summary: Option<&SummaryWrite>,
    now: DateTime<Utc>,
    max_transcript_bytes: u64,
) -> Result<(AppendReply, SummaryReply), StoreError> {
    let record: Option<StoredAppend> = sqlx::query_as(SELECT_APPEND)
        .bind(key.namespace())
        .bind(append_id)
        .bind(dialect_code(summary.map(|s| s.dialect)))
        .fetch_optional(&mut *conn)
        .await
        .map_err(lite)?;
    if let Some(record) = record {
        return Ok(record.into_reply(key, summary));
    }
    let header = fetch_header(&mut *conn, key).await?;
    if entries.is_empty() && header.is_none() {
        // A summary alone, and no transcript to summarise: nothing written, nothing recorded.
        return Ok((
            AppendReply::Appended(Header::unchanged(None, 0)),
            SummaryReply::default(),
        ));
    }
    let mut seen: HashSet<&str> = HashSet::new();
    let mut fresh: Vec<&Entry> = Vec::with_capacity(entries.len());
    for entry in entries {
        if let Some(uuid) = entry.uuid.as_deref() {
            if !seen.insert(uuid) {
                continue;
            }
            if let Some(header) = &header {
                let stored: bool = sqlx::query_scalar(UUID_STORED)
                    .bind(header.id)
                    .bind(uuid)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(lite)?;
                if stored {
                    continue;
                }
            }
        }
        fresh.push(entry);
    }
    let before = header.map_or(0, |h| count(h.byte_count));
    let bytes: u64 = fresh.iter().map(|e| e.json.len() as u64).sum();
    if before.saturating_add(bytes) > max_transcript_bytes {
        return Ok((
            AppendReply::Full {
                byte_count: before,
                limit: max_transcript_bytes,
            },
            SummaryReply::default(),
        ));
    }
    let stored = fresh.len() as u64;
    let duplicates = entries.len() as u64 - stored;
    let (transcript_id, outcome) = match header {
        Some(header) if fresh.is_empty() => (header.id, Header::unchanged(Some(header), duplicates)),
        _ => {
            let entry_count = header.map_or(0, |h| count(h.entry_count));
            let now_ms = now.timestamp_millis();
            let mtime_ms = header.map_or(now_ms, |h| now_ms.max(h.mtime_ms.saturating_add(1)));
            let outcome = AppendOutcome {
                stored,
                duplicates,
                entry_count: entry_count + stored,
                byte_count: before + bytes,
                mtime_ms,
            };
            let id: i64 = sqlx::query_scalar(UPSERT_TRANSCRIPT)
                .bind(key.namespace())
                .bind(key.project_key())
                .bind(key.session_id())
                .bind(key.subpath())
                .bind(stored_count(outcome.entry_count))
                .bind(stored_count(outcome.byte_count))
                .bind(mtime_ms)
                .fetch_one(&mut *conn)
                .await
                .map_err(lite)?;
            for (n, entry) in fresh.iter().enumerate() {
                sqlx::query(INSERT_ENTRY)
                    .bind(id)
                    .bind(stored_count(entry_count + n as u64 + 1))
                    .bind(entry.uuid.as_deref())
                    .bind(entry.json.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(lite)?;
            }
            (id, outcome)
        }
    };
    let summary_reply = match summary {
        None => SummaryReply::default(),
        Some(write) => write_summary(conn, transcript_id, write, outcome.mtime_ms).await?,
    };
    sqlx::query(RECORD_APPEND)
        .bind(key.namespace())
        .bind(append_id)
        .bind(key.project_key())
        .bind(key.session_id())
        .bind(key.subpath())
        .bind(stored_count(outcome.stored))
        .bind(stored_count(outcome.duplicates))
        .bind(stored_count(outcome.entry_count))
        .bind(stored_count(outcome.byte_count))
        .bind(outcome.mtime_ms)
        .bind(micros(now))
        .bind(summary_reply.written)
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
    Ok((AppendReply::Appended(outcome), summary_reply))
}

/// The summary's compare-and-set, under the write lock: written iff the stored version is
/// `if_version` (0: none stored).
async fn write_summary(
    conn: &mut SqliteConnection,
    transcript_id: i64,
    write: &SummaryWrite,
    mtime_ms: i64,
) -> Result<SummaryReply, StoreError> {
    let stored: Option<SummaryColumns> = sqlx::query_as(SELECT_SUMMARY)
        .bind(transcript_id)
        .bind(write.dialect.code())
        .fetch_optional(&mut *conn)
        .await
        .map_err(lite)?;
    let stored = stored.and_then(|columns| columns.into_summary(write.dialect));
    if stored.as_ref().map_or(0, |s| s.version) != write.if_version {
        return Ok(SummaryReply {
            written: false,
            current: stored,
        });
    }
    let version = write.if_version + 1;
    sqlx::query(UPSERT_SUMMARY)
        .bind(transcript_id)
        .bind(write.dialect.code())
        .bind(write.data_json.as_str())
        .bind(stored_count(version))
        .bind(mtime_ms)
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
    Ok(SummaryReply {
        written: true,
        current: Some(Summary {
            dialect: write.dialect,
            data_json: write.data_json.clone(),
            version,
            mtime_ms,
        }),
    })
}

/// Deletes what is stored under the transcripts `ids` (their summaries and entries), on a
/// connection inside the write transaction that deletes their headers. Returns the entries deleted.
/// Every delete of transcript headers uses it, so nothing of a deleted transcript stays.
pub(super) async fn delete_transcript_children(conn: &mut SqliteConnection, ids: &[i64]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = serde_json::to_string(ids).map_err(|e| StoreError::Other(e.into()))?;
    sqlx::query(DELETE_SUMMARIES)
        .bind(ids.as_str())
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
    let entries = sqlx::query(DELETE_ENTRIES)
        .bind(ids.as_str())
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
    Ok(entries.rows_affected())
}

/// One delete, on the batch's connection inside its write transaction.
pub(super) async fn delete(conn: &mut SqliteConnection, key: &TranscriptKey) -> Result<TranscriptsDeleted, StoreError> {
    let ids: Vec<i64> = sqlx::query_scalar(SELECT_IDS)
        .bind(key.namespace())
        .bind(key.project_key())
        .bind(key.session_id())
        .bind(key.subpath())
        .fetch_all(&mut *conn)
        .await
        .map_err(lite)?;
    let entries = delete_transcript_children(conn, &ids).await?;
    let transcripts = sqlx::query(DELETE_TRANSCRIPTS)
        .bind(key.namespace())
        .bind(key.project_key())
        .bind(key.session_id())
        .bind(key.subpath())
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
    Ok(TranscriptsDeleted {
        transcripts: transcripts.rows_affected(),
        entries,
    })
}

impl SqliteStore {
    async fn load_page_once(
        &self,
        key: &TranscriptKey,
        after_seq: i64,
        max_entries: u32,
        max_bytes: u64,
        summary: Option<SummaryDialect>,
    ) -> Result<Option<TranscriptPage>, StoreError> {
        let rows: Vec<PageRow> = sqlx::query_as(SELECT_PAGE)
            .bind(key.namespace())
            .bind(key.project_key())
            .bind(key.session_id())
            .bind(key.subpath())
            .bind(after_seq)
            .bind(i64::from(max_entries.max(1)))
            .bind(stored_count(max_bytes))
            .bind(dialect_code(summary))
            .fetch_all(&self.pool)
            .await
            .map_err(lite)?;
        Ok(page_from_rows(rows, summary))
    }

    async fn list_sessions_once(
        &self,
        namespace: &str,
        project_key: &str,
        summary: Option<SummaryDialect>,
    ) -> Result<Vec<ListedSession>, StoreError> {
        let rows: Vec<SessionRow> = sqlx::query_as(SELECT_SESSIONS)
            .bind(namespace)
            .bind(project_key)
            .bind(dialect_code(summary))
            .fetch_all(&self.pool)
            .await
            .map_err(lite)?;
        Ok(sessions_from_rows(rows, summary))
    }

    async fn transcript_totals_once(&self) -> Result<TranscriptTotals, StoreError> {
        let row: TotalsRow = sqlx::query_as(SELECT_TOTALS)
            .fetch_one(&self.pool)
            .await
            .map_err(lite)?;
        Ok(row.into())
    }

    async fn list_subkeys_once(
        &self,
        namespace: &str,
        project_key: &str,
        session_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(SELECT_SUBKEYS)
            .bind(namespace)
            .bind(project_key)
            .bind(session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(lite)
    }
}

#[async_trait]
impl TranscriptStore for SqliteStore {
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
            let header = self.storage.note(fetch_header(&self.pool, key).await)?;
            return Ok((
                AppendReply::Appended(Header::unchanged(header, 0)),
                SummaryReply::default(),
            ));
        }
        self.write(Write::AppendTranscript {
            key: key.clone(),
            append_id: append_id.to_owned(),
            entries: entries.to_vec(),
            summary: summary.cloned(),
            now,
            max_transcript_bytes,
        })
        .await?
        .into_appended()
    }

    async fn load_page(
        &self,
        key: &TranscriptKey,
        after_seq: i64,
        max_entries: u32,
        max_bytes: u64,
        summary: Option<SummaryDialect>,
    ) -> Result<Option<TranscriptPage>, StoreError> {
        self.storage.note(
            self.load_page_once(key, after_seq, max_entries, max_bytes, summary)
                .await,
        )
    }

    async fn list_sessions(
        &self,
        namespace: &str,
        project_key: &str,
        summary: Option<SummaryDialect>,
    ) -> Result<Vec<ListedSession>, StoreError> {
        self.storage
            .note(self.list_sessions_once(namespace, project_key, summary).await)
    }

    async fn list_subkeys(
        &self,
        namespace: &str,
        project_key: &str,
        session_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.storage
            .note(self.list_subkeys_once(namespace, project_key, session_id).await)
    }

    async fn delete(&self, key: &TranscriptKey) -> Result<TranscriptsDeleted, StoreError> {
        self.write(Write::DeleteTranscript { key: key.clone() })
            .await?
            .into_transcripts_deleted()
    }

    async fn transcript_totals(&self) -> Result<TranscriptTotals, StoreError> {
        self.storage.note(self.transcript_totals_once().await)
    }
}
