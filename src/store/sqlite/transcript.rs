//! Transcripts in the embedded store ([`TranscriptStore`] for [`SqliteStore`]): the SQL of the
//! transcript tables. Appends and deletes are writes like any other, applied by the single writer
//! in its batches (`batch.rs`), each in a savepoint of its own inside `BEGIN IMMEDIATE`: holding
//! the write lock, an append reads the transcript, decides what to store and checks the limit
//! before it writes anything, then writes its entries one prepared statement each (in process: no
//! round trips to save). Foreign keys are off here, so a delete removes the entries itself. Reads
//! go straight to the pool, each one statement (one snapshot).

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;

use super::batch::Write;
use super::{SqliteStore, lite, micros};
use crate::domain::{Entry, TranscriptKey};
use crate::store::StoreError;
use crate::store::transcript::{
    AppendOutcome, AppendReply, Header, ListedSession, PageRow, StoredAppend, TranscriptPage, TranscriptStore,
    TranscriptsDeleted, count, page_from_rows, stored_count,
};

const SELECT_APPEND: &str = "SELECT project_key, session_id, subpath, stored, duplicates, entry_count, byte_count, \
     mtime_ms FROM transcript_append WHERE namespace = ?1 AND append_id = ?2";
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
     created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
// The header's columns on every row, with the page's entries (none: one row with a NULL seq): the
// first `?6` entries after `?5`, cut where their running size passes `?7` bytes, the first always kept.
const SELECT_PAGE: &str = "SELECT h.entry_count, h.byte_count, h.mtime_ms, p.seq, p.entry \
     FROM transcript h LEFT JOIN ( \
         SELECT r.seq, r.entry FROM ( \
             SELECT l.seq, l.entry, row_number() OVER w AS n, sum(octet_length(l.entry)) OVER w AS running \
             FROM (SELECT e.seq, e.entry FROM transcript_entry e \
                   WHERE e.transcript_id = (SELECT id FROM transcript \
                       WHERE namespace = ?1 AND project_key = ?2 AND session_id = ?3 AND subpath = ?4) \
                   AND e.seq > ?5 ORDER BY e.seq LIMIT ?6) l \
             WINDOW w AS (ORDER BY l.seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) r \
         WHERE r.n = 1 OR r.running <= ?7) p ON 1 \
     WHERE h.namespace = ?1 AND h.project_key = ?2 AND h.session_id = ?3 AND h.subpath = ?4 \
     ORDER BY p.seq";
const SELECT_SESSIONS: &str = "SELECT session_id, mtime_ms FROM transcript \
     WHERE namespace = ?1 AND project_key = ?2 AND subpath = '' ORDER BY session_id";
const SELECT_SUBKEYS: &str = "SELECT subpath FROM transcript \
     WHERE namespace = ?1 AND project_key = ?2 AND session_id = ?3 AND subpath <> '' ORDER BY subpath";
// The entries first, while their headers still say which they are. '' (?4) deletes every subpath.
const DELETE_ENTRIES: &str = "DELETE FROM transcript_entry WHERE transcript_id IN ( \
         SELECT id FROM transcript \
         WHERE namespace = ?1 AND project_key = ?2 AND session_id = ?3 AND (?4 = '' OR subpath = ?4))";
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

/// One append, on the batch's connection inside its write transaction (and its own savepoint).
pub(super) async fn append(
    conn: &mut SqliteConnection,
    key: &TranscriptKey,
    append_id: &str,
    entries: &[Entry],
    now: DateTime<Utc>,
    max_transcript_bytes: u64,
) -> Result<AppendReply, StoreError> {
    let record: Option<StoredAppend> = sqlx::query_as(SELECT_APPEND)
        .bind(key.namespace())
        .bind(append_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(lite)?;
    if let Some(record) = record {
        return Ok(record.into_reply(key));
    }
    let header = fetch_header(&mut *conn, key).await?;
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
        return Ok(AppendReply::Full {
            byte_count: before,
            limit: max_transcript_bytes,
        });
    }
    let stored = fresh.len() as u64;
    let duplicates = entries.len() as u64 - stored;
    let outcome = match header {
        Some(header) if fresh.is_empty() => Header::unchanged(Some(header), duplicates),
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
            outcome
        }
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
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
    Ok(AppendReply::Appended(outcome))
}

/// One delete, on the batch's connection inside its write transaction.
pub(super) async fn delete(conn: &mut SqliteConnection, key: &TranscriptKey) -> Result<TranscriptsDeleted, StoreError> {
    let entries = sqlx::query(DELETE_ENTRIES)
        .bind(key.namespace())
        .bind(key.project_key())
        .bind(key.session_id())
        .bind(key.subpath())
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
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
        entries: entries.rows_affected(),
    })
}

impl SqliteStore {
    async fn load_page_once(
        &self,
        key: &TranscriptKey,
        after_seq: i64,
        max_entries: u32,
        max_bytes: u64,
    ) -> Result<Option<TranscriptPage>, StoreError> {
        let rows: Vec<PageRow> = sqlx::query_as(SELECT_PAGE)
            .bind(key.namespace())
            .bind(key.project_key())
            .bind(key.session_id())
            .bind(key.subpath())
            .bind(after_seq)
            .bind(i64::from(max_entries.max(1)))
            .bind(stored_count(max_bytes))
            .fetch_all(&self.pool)
            .await
            .map_err(lite)?;
        Ok(page_from_rows(rows))
    }

    async fn list_sessions_once(&self, namespace: &str, project_key: &str) -> Result<Vec<ListedSession>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(SELECT_SESSIONS)
            .bind(namespace)
            .bind(project_key)
            .fetch_all(&self.pool)
            .await
            .map_err(lite)?;
        Ok(rows
            .into_iter()
            .map(|(session_id, mtime_ms)| ListedSession { session_id, mtime_ms })
            .collect())
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
    async fn append(
        &self,
        key: &TranscriptKey,
        append_id: &str,
        entries: &[Entry],
        now: DateTime<Utc>,
        max_transcript_bytes: u64,
    ) -> Result<AppendReply, StoreError> {
        if entries.is_empty() {
            let header = self.storage.note(fetch_header(&self.pool, key).await)?;
            return Ok(AppendReply::Appended(Header::unchanged(header, 0)));
        }
        self.write(Write::AppendTranscript {
            key: key.clone(),
            append_id: append_id.to_owned(),
            entries: entries.to_vec(),
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
    ) -> Result<Option<TranscriptPage>, StoreError> {
        self.storage
            .note(self.load_page_once(key, after_seq, max_entries, max_bytes).await)
    }

    async fn list_sessions(&self, namespace: &str, project_key: &str) -> Result<Vec<ListedSession>, StoreError> {
        self.storage.note(self.list_sessions_once(namespace, project_key).await)
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
}
