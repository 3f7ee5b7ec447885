//! Persistence side of the one lifecycle of transcripts and session rows (issue 18 point 3,
//! design §6.3): the [`TranscriptLifecycle`] trait both stores implement (the sweep of transcripts
//! no row holds, the pruning of append records, Get's look-up of a row's main transcript) and the
//! counts the row-removing operations of [`super::SessionStore`] return. The cascade itself (a row's
//! id goes away → its transcripts go, unless another row of the namespace holds the id) runs inside
//! those operations' transactions, in `postgres/transcript_lifecycle.rs` and
//! `sqlite/transcript_lifecycle.rs`. No rules here: the fate of the transcripts is decided in
//! `domain::TranscriptFate`, the time is passed in.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::MainTranscript;

/// What an operation that removes session rows removed: the rows, and the transcripts deleted with
/// them in the same transaction (marked ones, under a grace period, are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub rows: u64,
    pub transcripts: u64,
}

/// Transcripts a sweep deleted (or, dry, would delete), by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweptTranscripts {
    /// No row holds the id and the last append is older than the orphan cutoff.
    pub orphan: u64,
    /// No row holds the id and its `delete_after` has passed.
    pub graced: u64,
}

impl SweptTranscripts {
    pub fn total(&self) -> u64 {
        self.orphan + self.graced
    }
}

#[async_trait]
pub trait TranscriptLifecycle: Send + Sync + std::fmt::Debug + 'static {
    /// The main transcript (subpath `""`) of `session_id` in `namespace`: under `project_key`
    /// when given, else the one with entries and no pending deletion last appended to (or any).
    /// One short read; writes nothing.
    async fn main_transcript(
        &self,
        namespace: &str,
        session_id: &str,
        project_key: Option<&str>,
    ) -> Result<Option<MainTranscript>, StoreError>;

    /// Deletes at most `limit` transcripts (with their entries) that no session row of their
    /// namespace holds and whose last append is before `last_append_before_ms` or whose
    /// `delete_after` is at or before `now_ms`; in one transaction, skipping rows another holds.
    async fn sweep_transcripts_batch(
        &self,
        namespace: Option<&str>,
        last_append_before_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<SweptTranscripts, StoreError>;

    /// What [`TranscriptLifecycle::sweep_transcripts_batch`] would delete, all batches together.
    async fn count_sweepable_transcripts(
        &self,
        namespace: Option<&str>,
        last_append_before_ms: i64,
        now_ms: i64,
    ) -> Result<SweptTranscripts, StoreError>;

    /// Deletes at most `limit` append records (`transcript_append`) created before `before`.
    async fn delete_appends_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
}
