//! Persistence of Agent SDK transcripts (issue 18), and nothing else: the [`TranscriptStore`]
//! trait, implemented by both stores (`postgres/transcript.rs`, `sqlite/transcript.rs`) and held to
//! one contract suite (`tests/store_contract/transcripts.rs`). Entries arrive checked
//! (`domain::Entry`); the store keeps their text byte for byte, in append order, skips an entry
//! whose uuid the transcript already holds, refuses an append that would take the transcript past
//! its byte limit, and answers a repeated append id with the first outcome. An append is one
//! transaction; the time is passed in, never read here. A main transcript also keeps one session
//! summary per SDK dialect, written by compare-and-set in the append's transaction and deleted with
//! the transcript.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{Entry, Summary, SummaryDialect, SummaryWrite, TranscriptKey};

/// What an append did, and the transcript's header after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Entries stored by this append.
    pub stored: u64,
    /// Entries skipped: their uuid was already in the transcript, or earlier in the same append.
    pub duplicates: u64,
    pub entry_count: u64,
    pub byte_count: u64,
    /// Epoch ms of the last append that stored an entry (0 when the transcript does not exist).
    pub mtime_ms: i64,
}

/// What became of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendReply {
    /// Committed: the entries not skipped as duplicates are stored, and the append id recorded.
    Appended(AppendOutcome),
    /// The append id was seen before for this key: the first outcome, nothing written.
    Replayed(AppendOutcome),
    /// The append id was seen before for another key of the namespace: nothing written.
    AppendIdReused,
    /// Storing the entries would take the transcript past `limit` bytes: nothing written, the
    /// append id not recorded.
    Full { byte_count: u64, limit: u64 },
}

/// One stored entry: its place in the transcript (from 1, in append order) and its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagedEntry {
    pub seq: i64,
    pub json: String,
}

/// What became of an append's summary write ([`TranscriptStore::append_with_summary`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryReply {
    /// The summary sent was written (on a replay: the first call's).
    pub written: bool,
    /// The dialect's summary stored after the call, if any: the one written, or the one whose
    /// version the write's `if_version` did not match. None when no summary was sent, the append
    /// was refused, or the transcript does not exist.
    pub current: Option<Summary>,
}

/// A run of a transcript's entries, and its header when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptPage {
    /// In append order, each after the `after_seq` asked for; empty only when none remain.
    pub entries: Vec<PagedEntry>,
    pub entry_count: u64,
    pub byte_count: u64,
    pub mtime_ms: i64,
    /// The summary of the dialect asked for, read in the page's snapshot, when stored.
    pub summary: Option<Summary>,
}

/// A main transcript of a project: its session id and last append time, and its summary of the
/// dialect asked for, when stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSession {
    pub session_id: String,
    pub mtime_ms: i64,
    pub summary: Option<Summary>,
}

/// What every transcript holds together (the gauges `sessionkeeper_transcript_bytes` and
/// `sessionkeeper_transcript_entries`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscriptTotals {
    pub transcripts: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// What a delete removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscriptsDeleted {
    pub transcripts: u64,
    pub entries: u64,
}

#[async_trait]
pub trait TranscriptStore: Send + Sync + std::fmt::Debug + 'static {
    /// Appends `entries` to the transcript at `key`, atomically: creates it when it does not
    /// exist, skips entries whose uuid it holds (or that an earlier entry of this call carries),
    /// stores the rest after its last entry in their order, moves `mtime_ms` to
    /// `max(now in ms, previous + 1)` when anything was stored, and records `append_id` with the
    /// outcome. A known `append_id` writes nothing ([`AppendReply::Replayed`] or
    /// [`AppendReply::AppendIdReused`]); so does an append that would take the transcript past
    /// `max_transcript_bytes` ([`AppendReply::Full`]). No entries: nothing is written, nothing is
    /// created, and the answer is the header as it is.
    async fn append(
        &self,
        key: &TranscriptKey,
        append_id: &str,
        entries: &[Entry],
        now: DateTime<Utc>,
        max_transcript_bytes: u64,
    ) -> Result<AppendReply, StoreError> {
        Ok(self
            .append_with_summary(key, append_id, entries, None, now, max_transcript_bytes)
            .await?
            .0)
    }

    /// [`append`](TranscriptStore::append), and with it, in the same transaction, the main
    /// transcript's summary of `summary.dialect`: written iff the stored version equals
    /// `summary.if_version` (0: none stored), as version + 1 (1 for the first), with the
    /// transcript's `mtime_ms` after the append. A refused append (replayed, reused, full) writes
    /// no summary; a replay answers whether the first call wrote it, with the summary stored now.
    /// With no entries and a summary, the summary alone is written when the transcript exists,
    /// and the append id recorded; when it does not exist, nothing is written or recorded
    /// (`written` false, no current summary, the header zeros). The caller keeps summaries to
    /// main transcripts (subpath `""`).
    async fn append_with_summary(
        &self,
        key: &TranscriptKey,
        append_id: &str,
        entries: &[Entry],
        summary: Option<&SummaryWrite>,
        now: DateTime<Utc>,
        max_transcript_bytes: u64,
    ) -> Result<(AppendReply, SummaryReply), StoreError>;

    /// The entries after `after_seq`, in order: at most `max_entries`, and no more than
    /// `max_bytes` of JSON text, except that the first one remaining is always included; with
    /// the summary of `summary` when one is asked for and stored, from the same snapshot. None
    /// when the transcript does not exist.
    async fn load_page(
        &self,
        key: &TranscriptKey,
        after_seq: i64,
        max_entries: u32,
        max_bytes: u64,
        summary: Option<SummaryDialect>,
    ) -> Result<Option<TranscriptPage>, StoreError>;

    /// The project's main transcripts (subpath `""`), by session id, each with its summary of
    /// `summary` when one is asked for and stored (one query).
    async fn list_sessions(
        &self,
        namespace: &str,
        project_key: &str,
        summary: Option<SummaryDialect>,
    ) -> Result<Vec<ListedSession>, StoreError>;

    /// The subpaths of a session's transcripts, never `""`, in order.
    async fn list_subkeys(
        &self,
        namespace: &str,
        project_key: &str,
        session_id: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Deletes the transcript at `key` with its entries and summaries; the main key (`""`) takes
    /// every subpath of its session with it. An unknown key deletes nothing and is no error.
    /// Append records stay.
    async fn delete(&self, key: &TranscriptKey) -> Result<TranscriptsDeleted, StoreError>;

    /// The counts over every transcript, read in one cheap query (a sum over the headers).
    async fn transcript_totals(&self) -> Result<TranscriptTotals, StoreError>;
}

/// An append id's record as read back, before it is compared with the appending key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct StoredAppend {
    project_key: String,
    session_id: String,
    subpath: String,
    stored: i64,
    duplicates: i64,
    entry_count: i64,
    byte_count: i64,
    mtime_ms: i64,
    summary_written: bool,
    /// The dialect's summary stored now, when one was asked for (columns of [`SummaryColumns`]).
    #[sqlx(flatten)]
    current: SummaryColumns,
}

impl StoredAppend {
    /// The first outcome (or a reused id), and what became of its summary.
    pub(crate) fn into_reply(self, key: &TranscriptKey, summary: Option<&SummaryWrite>) -> (AppendReply, SummaryReply) {
        if self.project_key != key.project_key() || self.session_id != key.session_id() || self.subpath != key.subpath()
        {
            return (AppendReply::AppendIdReused, SummaryReply::default());
        }
        let reply = AppendReply::Replayed(AppendOutcome {
            stored: count(self.stored),
            duplicates: count(self.duplicates),
            entry_count: count(self.entry_count),
            byte_count: count(self.byte_count),
            mtime_ms: self.mtime_ms,
        });
        let summary_reply = match summary {
            None => SummaryReply::default(),
            Some(write) => SummaryReply {
                written: self.summary_written,
                current: self.current.into_summary(write.dialect),
            },
        };
        (reply, summary_reply)
    }
}

/// A summary row's columns as read back beside other columns (all NULL: none stored).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub(crate) struct SummaryColumns {
    pub(crate) summary_data: Option<String>,
    pub(crate) summary_version: Option<i64>,
    pub(crate) summary_mtime_ms: Option<i64>,
}

impl SummaryColumns {
    pub(crate) fn into_summary(self, dialect: SummaryDialect) -> Option<Summary> {
        Some(Summary {
            dialect,
            data_json: self.summary_data?,
            version: count(self.summary_version?),
            mtime_ms: self.summary_mtime_ms?,
        })
    }
}

/// A dialect as bound in SQL (NULL: none asked for).
pub(crate) fn dialect_code(dialect: Option<SummaryDialect>) -> Option<i16> {
    dialect.map(SummaryDialect::code)
}

/// A row of a sessions query: the session, and the summary columns (NULL when none asked or stored).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionRow {
    session_id: String,
    mtime_ms: i64,
    #[sqlx(flatten)]
    summary: SummaryColumns,
}

/// The listed sessions from their rows.
pub(crate) fn sessions_from_rows(rows: Vec<SessionRow>, dialect: Option<SummaryDialect>) -> Vec<ListedSession> {
    rows.into_iter()
        .map(|row| ListedSession {
            session_id: row.session_id,
            mtime_ms: row.mtime_ms,
            summary: dialect.and_then(|d| row.summary.into_summary(d)),
        })
        .collect()
}

/// The totals row: sums over the headers (NULL when there is none).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TotalsRow {
    transcripts: i64,
    entries: Option<i64>,
    bytes: Option<i64>,
}

impl From<TotalsRow> for TranscriptTotals {
    fn from(row: TotalsRow) -> Self {
        TranscriptTotals {
            transcripts: count(row.transcripts),
            entries: count(row.entries.unwrap_or(0)),
            bytes: count(row.bytes.unwrap_or(0)),
        }
    }
}

/// A transcript's header as read back.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub(crate) struct Header {
    pub(crate) id: i64,
    pub(crate) entry_count: i64,
    pub(crate) byte_count: i64,
    pub(crate) mtime_ms: i64,
}

impl Header {
    /// The header as an append's answer that stored nothing.
    pub(crate) fn unchanged(header: Option<Header>, duplicates: u64) -> AppendOutcome {
        AppendOutcome {
            stored: 0,
            duplicates,
            entry_count: header.map_or(0, |h| count(h.entry_count)),
            byte_count: header.map_or(0, |h| count(h.byte_count)),
            mtime_ms: header.map_or(0, |h| h.mtime_ms),
        }
    }
}

/// A count as stored (never negative) as a count.
pub(crate) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A count as stored.
pub(crate) fn stored_count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A row of a page query: the header's columns, and an entry's when the page holds one.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PageRow {
    entry_count: i64,
    byte_count: i64,
    mtime_ms: i64,
    seq: Option<i64>,
    entry: Option<String>,
    /// Filled on the first row only.
    #[sqlx(flatten)]
    summary: SummaryColumns,
}

/// The page from its rows (none: the transcript does not exist).
pub(crate) fn page_from_rows(mut rows: Vec<PageRow>, dialect: Option<SummaryDialect>) -> Option<TranscriptPage> {
    let first = rows.first_mut()?;
    let (entry_count, byte_count, mtime_ms) = (count(first.entry_count), count(first.byte_count), first.mtime_ms);
    let summary = dialect.and_then(|d| std::mem::take(&mut first.summary).into_summary(d));
    let entries = rows
        .into_iter()
        .filter_map(|row| {
            Some(PagedEntry {
                seq: row.seq?,
                json: row.entry?,
            })
        })
        .collect();
    Some(TranscriptPage {
        entries,
        entry_count,
        byte_count,
        mtime_ms,
        summary,
    })
}
