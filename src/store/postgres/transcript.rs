//! Transcripts on Postgres ([`TranscriptStore`] for [`PostgresStore`]): the SQL of the transcript
//! tables, every statement a `&'static str` here, run as unnamed statements inside the store's
//! [`Leased`](super::Leased) transactions, bounded like every other operation.
//!
//! An append (entries, a summary, or both) is one autocommit statement whatever its size, the entries
//! bound as arrays: it calls `sessionkeeper_transcript_append` (migration 20261128000005), whose
//! statements each take a fresh snapshot. It claims the append id, then locks the transcript's header
//! (creating it; a summary alone only locks one that exists), so appends to one transcript queue there
//! and a repeated append id waits for the first to commit; once the lock is held it skips the entries
//! whose uuid is stored, checks the byte limit, inserts the rest, moves the header, writes the
//! summary by compare-and-set and records the outcome. A full transcript raises, so the statement
//! rolls back: nothing of the append stays, not even its claim. No `BEGIN`, `SET LOCAL` or `COMMIT`
//! round trips: the function sets the store's lock timeout for its own transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgDatabaseError, PgRow};
use sqlx::{FromRow, PgConnection, Row};

use super::{PostgresStore, is_dead_connection};
use crate::domain::{Entry, Summary, SummaryDialect, SummaryWrite, TranscriptKey};
use crate::store::StoreError;
use crate::store::error::context;
use crate::store::transcript::{
    AppendOutcome, AppendReply, Header, ListedSession, PageRow, SessionRow, StoredAppend, SummaryColumns, SummaryReply,
    TotalsRow, TranscriptPage, TranscriptStore, TranscriptTotals, TranscriptsDeleted, count, dialect_code,
    page_from_rows, sessions_from_rows, stored_count,
};

// An append, entries or a summary alone, as one autocommit statement: the function of migration
// 20261128000005 claims the append id, locks (or creates) the header, and appends, in the order and
// with the snapshots that BEGIN, two statements and COMMIT had. One row: 'appended' (the header
// after it), or 'replayed' (the append id's record, with the dialect's summary stored now); none: the
// append id was claimed before and has no record. A full transcript (SQLSTATE SK001, DETAIL its
// byte count) and a summary alone whose transcript was deleted under it (SK002) roll back.
const APPEND: &str = "SELECT outcome, project_key, session_id, subpath, stored, duplicates, entry_count, \
     byte_count, mtime_ms, summary_written, summary_data, summary_version, summary_mtime_ms \
     FROM sessionkeeper_transcript_append($1, $2, $3, $4, $5, $6, $7, $8::text[], $9::text[], $10, \
     $11::smallint, $12::text, $13, $14)";
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

/// An 'appended' row of [`APPEND`]: the header after the append.
#[derive(sqlx::FromRow)]
struct Appended {
    stored: i64,
    entry_count: i64,
    byte_count: i64,
    mtime_ms: i64,
    summary_written: bool,
    #[sqlx(flatten)]
    summary: SummaryColumns,
}

/// How [`APPEND`] ended when it rolled back on purpose (its connection is idle and reusable).
enum RolledBack {
    /// SK001: the fresh entries did not fit; the transcript's byte count.
    Full { byte_count: i64 },
    /// SK002: a summary alone's transcript was deleted between its claim and its lock.
    TranscriptDeleted,
}

impl RolledBack {
    fn of(err: &sqlx::Error) -> Option<RolledBack> {
        let sqlx::Error::Database(db) = err else {
            return None;
        };
        match db.code().as_deref() {
            Some("SK001") => {
                let detail = db
                    .try_downcast_ref::<PgDatabaseError>()
                    .and_then(PgDatabaseError::detail);
                Some(RolledBack::Full {
                    byte_count: detail.and_then(|d| d.parse().ok()).unwrap_or(0),
                })
            }
            Some("SK002") => Some(RolledBack::TranscriptDeleted),
            _ => None,
        }
    }
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
}

/// A transcript that does not exist, for a summary alone: nothing written.
fn no_transcript() -> (AppendReply, SummaryReply) {
    (
        AppendReply::Appended(Header::unchanged(None, 0)),
        SummaryReply::default(),
    )
}

/// What [`APPEND`]'s row says.
fn append_reply(
    row: Option<PgRow>,
    key: &TranscriptKey,
    sent: usize,
    summary: Option<&SummaryWrite>,
) -> Result<(AppendReply, SummaryReply), StoreError> {
    let unreadable = |e: sqlx::Error| StoreError::Other(context("reading an append's answer", e));
    let Some(row) = row else {
        // Only a summary alone claims nothing for an id with no record: its transcript does not exist.
        return if sent == 0 {
            Ok(no_transcript())
        } else {
            Err(StoreError::Other(
                "the append id's record vanished after its claim conflicted".into(),
            ))
        };
    };
    let outcome: String = row.try_get("outcome").map_err(unreadable)?;
    if outcome == "replayed" {
        let record = StoredAppend::from_row(&row).map_err(unreadable)?;
        return Ok(record.into_reply(key, summary));
    }
    let appended = Appended::from_row(&row).map_err(unreadable)?;
    let stored = count(appended.stored);
    let summary_reply = match summary {
        None => SummaryReply::default(),
        Some(write) if appended.summary_written => SummaryReply {
            written: true,
            current: Some(Summary {
                dialect: write.dialect,
                data_json: write.data_json.clone(),
                version: write.if_version + 1,
                mtime_ms: appended.mtime_ms,
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
            duplicates: (sent as u64).saturating_sub(stored),
            entry_count: count(appended.entry_count),
            byte_count: count(appended.byte_count),
            mtime_ms: appended.mtime_ms,
        }),
        summary_reply,
    ))
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
            self.refused_for_clock()?;
            // No BEGIN: the statement is its own transaction. A pooled connection found dead is
            // replaced, as `lease` does at BEGIN; sending the append again is safe even if the first
            // send committed, since its append id then answers what it did.
            let attempts = self.pool.options().get_max_connections() + 1;
            let deadline = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
            let mut attempt = 1;
            loop {
                let mut leased = self.acquire().await?;
                let answer = sqlx::query(APPEND)
                    .persistent(false)
                    .bind(key.namespace())
                    .bind(key.project_key())
                    .bind(key.session_id())
                    .bind(key.subpath())
                    .bind(append_id)
                    .bind(now)
                    .bind(now.timestamp_millis())
                    .bind(&texts)
                    .bind(&uuids)
                    .bind(stored_count(max_transcript_bytes))
                    .bind(dialect)
                    .bind(data)
                    .bind(if_version)
                    .bind(self.lock_timeout_ms)
                    .fetch_optional(leased.conn()?)
                    .await;
                let row = match answer {
                    Ok(row) => row,
                    Err(e) => match RolledBack::of(&e) {
                        Some(rolled_back) => {
                            leased.committed = true;
                            return Ok(match rolled_back {
                                // Neither the claim nor a header made for this append stays.
                                RolledBack::Full { byte_count } => (
                                    AppendReply::Full {
                                        byte_count: count(byte_count),
                                        limit: max_transcript_bytes,
                                    },
                                    SummaryReply::default(),
                                ),
                                RolledBack::TranscriptDeleted => no_transcript(),
                            });
                        }
                        None if attempt < attempts
                            && is_dead_connection(&e)
                            && tokio::time::Instant::now() < deadline =>
                        {
                            attempt += 1;
                            continue;
                        }
                        None => return Err(self.fail(e)),
                    },
                };
                leased.committed = true;
                return append_reply(row, key, entries.len(), summary);
            }
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
