//! Persistence of Agent SDK transcripts (issue 18), and nothing else: the [`TranscriptStore`]
//! trait, implemented by both stores (`postgres/transcript.rs`, `sqlite/transcript.rs`) and held to
//! one contract suite (`tests/store_contract/transcripts.rs`). Entries arrive checked
//! (`domain::Entry`); the store keeps their text byte for byte, in append order, skips an entry
//! whose uuid the transcript already holds, refuses an append that would take the transcript past
//! its byte limit, and answers a repeated append id with the first outcome. An append is one
//! transaction; the time is passed in, never read here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{Entry, TranscriptKey};

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

/// A run of a transcript's entries, and its header when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptPage {
    /// In append order, each after the `after_seq` asked for; empty only when none remain.
    pub entries: Vec<PagedEntry>,
    pub entry_count: u64,
    pub byte_count: u64,
    pub mtime_ms: i64,
}

/// A main transcript of a project: its session id and last append time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSession {
    pub session_id: String,
    pub mtime_ms: i64,
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
    ) -> Result<AppendReply, StoreError>;

    /// The entries after `after_seq`, in order: at most `max_entries`, and no more than
    /// `max_bytes` of JSON text, except that the first one remaining is always included. None
    /// when the transcript does not exist.
    async fn load_page(
        &self,
        key: &TranscriptKey,
        after_seq: i64,
        max_entries: u32,
        max_bytes: u64,
    ) -> Result<Option<TranscriptPage>, StoreError>;

    /// The project's main transcripts (subpath `""`), by session id.
    async fn list_sessions(&self, namespace: &str, project_key: &str) -> Result<Vec<ListedSession>, StoreError>;

    /// The subpaths of a session's transcripts, never `""`, in order.
    async fn list_subkeys(
        &self,
        namespace: &str,
        project_key: &str,
        session_id: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Deletes the transcript at `key` with its entries; the main key (`""`) takes every subpath
    /// of its session with it. An unknown key deletes nothing and is no error. Append records stay.
    async fn delete(&self, key: &TranscriptKey) -> Result<TranscriptsDeleted, StoreError>;
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
}

impl StoredAppend {
    pub(crate) fn into_reply(self, key: &TranscriptKey) -> AppendReply {
        if self.project_key != key.project_key() || self.session_id != key.session_id() || self.subpath != key.subpath()
        {
            return AppendReply::AppendIdReused;
        }
        AppendReply::Replayed(AppendOutcome {
            stored: count(self.stored),
            duplicates: count(self.duplicates),
            entry_count: count(self.entry_count),
            byte_count: count(self.byte_count),
            mtime_ms: self.mtime_ms,
        })
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
}

/// The page from its rows (none: the transcript does not exist).
pub(crate) fn page_from_rows(rows: Vec<PageRow>) -> Option<TranscriptPage> {
    let first = rows.first()?;
    let (entry_count, byte_count, mtime_ms) = (count(first.entry_count), count(first.byte_count), first.mtime_ms);
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
    })
}
