//! The transcript service (issue 18): appends, loads, lists and deletes Agent SDK
//! transcripts through the [`TranscriptStore`], stamping each append with the one clock and holding
//! it to the configured limits. It turns the store's replies into answers or [`ServiceError`]s and
//! knows nothing of gRPC. It counts appends and loads (`sessionkeeper_transcript_*`), and keeps
//! session summaries to main transcripts. Not here yet: the lifecycle that deletes a transcript
//! with its session, and the sweep of orphaned transcripts.

use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::{Entry, FieldError, SummaryDialect, SummaryWrite, TranscriptKey};
use crate::metrics::{Metrics, TranscriptAppendResult};
use crate::service::ServiceError;
use crate::store::{
    AppendOutcome, AppendReply, ListedSession, SummaryReply, TranscriptPage, TranscriptStore, TranscriptTotals,
    TranscriptsDeleted,
};

/// Default largest entry: 1 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1024 * 1024;
/// The highest `transcript_max_entry_bytes` accepted: one entry must fit a load chunk (with the
/// chunk's few other fields) under gRPC's default 4 MiB receive limit, which clients keep.
pub const MAX_ENTRY_BYTES_CEILING: u64 = 4 * 1024 * 1024 - 4096;
/// Default largest transcript: 64 MiB of entries.
pub const DEFAULT_MAX_TRANSCRIPT_BYTES: u64 = 64 * 1024 * 1024;

/// The size limits of transcripts (settings `transcript_max_entry_bytes`, `transcript_max_bytes`);
/// validated at start: both above 0, an entry no larger than a transcript nor than
/// [`MAX_ENTRY_BYTES_CEILING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranscriptLimits {
    pub max_entry_bytes: u64,
    pub max_transcript_bytes: u64,
}

impl Default for TranscriptLimits {
    fn default() -> Self {
        TranscriptLimits {
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_transcript_bytes: DEFAULT_MAX_TRANSCRIPT_BYTES,
        }
    }
}

/// What an accepted append did: its outcome, whether it is the first answer of a repeated append
/// id, and what became of its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendAnswer {
    pub replayed: bool,
    pub outcome: AppendOutcome,
    pub summary: SummaryReply,
}

#[derive(Debug)]
pub struct Transcripts {
    store: Arc<dyn TranscriptStore>,
    clock: Arc<dyn Clock>,
    limits: TranscriptLimits,
    metrics: Arc<Metrics>,
}

impl Transcripts {
    pub fn new(
        store: Arc<dyn TranscriptStore>,
        clock: Arc<dyn Clock>,
        limits: TranscriptLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Transcripts {
            store,
            clock,
            limits,
            metrics,
        }
    }

    pub fn limits(&self) -> TranscriptLimits {
        self.limits
    }

    /// Appends checked entries under `append_id`, at the clock's now, with the session summary
    /// when one is sent (main transcript only, and with an append id: else INVALID_ARGUMENT,
    /// before any I/O). A full transcript and an append id of another key are errors; a repeat for
    /// the same key is the first answer. A summary alone for a transcript that does not exist is
    /// not written (`summary.written` false, no current summary, the header zeros).
    pub async fn append(
        &self,
        key: &TranscriptKey,
        append_id: &str,
        entries: &[Entry],
        summary: Option<&SummaryWrite>,
    ) -> Result<AppendAnswer, ServiceError> {
        if summary.is_some() {
            if !key.is_main() {
                return Err(
                    FieldError::new("summary", "is only kept for the main transcript (key.subpath empty)").into(),
                );
            }
            if append_id.is_empty() {
                return Err(FieldError::new("append_id", "is required with a summary").into());
            }
        }
        let now = self.clock.now();
        let (reply, summary) = self
            .store
            .append_with_summary(key, append_id, entries, summary, now, self.limits.max_transcript_bytes)
            .await?;
        match reply {
            AppendReply::Appended(outcome) => {
                self.metrics.record_transcript_append(
                    TranscriptAppendResult::Appended,
                    outcome.stored,
                    outcome.duplicates,
                );
                Ok(AppendAnswer {
                    replayed: false,
                    outcome,
                    summary,
                })
            }
            AppendReply::Replayed(outcome) => {
                self.metrics
                    .record_transcript_append(TranscriptAppendResult::Replayed, 0, 0);
                Ok(AppendAnswer {
                    replayed: true,
                    outcome,
                    summary,
                })
            }
            AppendReply::AppendIdReused => {
                self.metrics
                    .record_transcript_append(TranscriptAppendResult::AppendIdReused, 0, 0);
                Err(ServiceError::AppendIdReused {
                    append_id: append_id.to_owned(),
                })
            }
            AppendReply::Full { byte_count, limit } => {
                self.metrics
                    .record_transcript_append(TranscriptAppendResult::Full, 0, 0);
                Err(ServiceError::TranscriptFull { byte_count, limit })
            }
        }
    }

    /// A load's first page: as [`load_page`](Transcripts::load_page), with the main transcript's
    /// summary of `summary` when asked and stored (none for a subpath); counted in
    /// `sessionkeeper_transcript_loads_total`.
    pub async fn load_first_page(
        &self,
        key: &TranscriptKey,
        after_seq: i64,
        max_entries: u32,
        max_bytes: u64,
        summary: Option<SummaryDialect>,
    ) -> Result<Option<TranscriptPage>, ServiceError> {
        let summary = summary.filter(|_| key.is_main());
        let page = self
            .store
            .load_page(key, after_seq, max_entries, max_bytes, summary)
            .await?;
        self.metrics.record_transcript_load(page.is_some());
        Ok(page)
    }

    /// The entries after `after_seq`, at most `max_entries` and about `max_bytes` of them (at least
    /// one when any remain); None when the transcript does not exist.
    pub async fn load_page(
        &self,
        key: &TranscriptKey,
        after_seq: i64,
        max_entries: u32,
        max_bytes: u64,
    ) -> Result<Option<TranscriptPage>, ServiceError> {
        Ok(self
            .store
            .load_page(key, after_seq, max_entries, max_bytes, None)
            .await?)
    }

    /// A project's main transcripts, each with its summary of `summary` where stored.
    pub async fn list_sessions(
        &self,
        namespace: &str,
        project_key: &str,
        summary: Option<SummaryDialect>,
    ) -> Result<Vec<ListedSession>, ServiceError> {
        Ok(self.store.list_sessions(namespace, project_key, summary).await?)
    }

    pub async fn list_subkeys(
        &self,
        namespace: &str,
        project_key: &str,
        session_id: &str,
    ) -> Result<Vec<String>, ServiceError> {
        Ok(self.store.list_subkeys(namespace, project_key, session_id).await?)
    }

    /// Deletes a transcript; the main key takes its subpaths with it.
    pub async fn delete(&self, key: &TranscriptKey) -> Result<TranscriptsDeleted, ServiceError> {
        Ok(self.store.delete(key).await?)
    }

    /// Reads what every transcript holds together and sets the gauges
    /// `sessionkeeper_transcript_bytes` and `sessionkeeper_transcript_entries`.
    pub async fn refresh_gauges(&self) -> Result<TranscriptTotals, ServiceError> {
        let totals = self.store.transcript_totals().await?;
        self.metrics.set_transcript_totals(totals);
        Ok(totals)
    }
}
