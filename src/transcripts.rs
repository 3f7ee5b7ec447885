//! The transcript service (issue 18, preview): appends, loads, lists and deletes Agent SDK
//! transcripts through the [`TranscriptStore`], stamping each append with the one clock and holding
//! it to the configured limits. It turns the store's replies into answers or [`ServiceError`]s and
//! knows nothing of gRPC. Not here yet: the lifecycle that deletes a transcript with its session,
//! and the sweep of orphaned transcripts.

use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::{Entry, TranscriptKey};
use crate::service::ServiceError;
use crate::store::{AppendOutcome, AppendReply, ListedSession, TranscriptPage, TranscriptStore, TranscriptsDeleted};

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

/// What an accepted append did: its outcome, and whether it is the first answer of a repeated
/// append id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAnswer {
    pub replayed: bool,
    pub outcome: AppendOutcome,
}

#[derive(Debug)]
pub struct Transcripts {
    store: Arc<dyn TranscriptStore>,
    clock: Arc<dyn Clock>,
    limits: TranscriptLimits,
}

impl Transcripts {
    pub fn new(store: Arc<dyn TranscriptStore>, clock: Arc<dyn Clock>, limits: TranscriptLimits) -> Self {
        Transcripts { store, clock, limits }
    }

    pub fn limits(&self) -> TranscriptLimits {
        self.limits
    }

    /// Appends checked entries under `append_id`, at the clock's now. A full transcript and an
    /// append id of another key are errors; a repeat for the same key is the first answer.
    pub async fn append(
        &self,
        key: &TranscriptKey,
        append_id: &str,
        entries: &[Entry],
    ) -> Result<AppendAnswer, ServiceError> {
        let now = self.clock.now();
        let reply = self
            .store
            .append(key, append_id, entries, now, self.limits.max_transcript_bytes)
            .await?;
        match reply {
            AppendReply::Appended(outcome) => Ok(AppendAnswer {
                replayed: false,
                outcome,
            }),
            AppendReply::Replayed(outcome) => Ok(AppendAnswer {
                replayed: true,
                outcome,
            }),
            AppendReply::AppendIdReused => Err(ServiceError::AppendIdReused {
                append_id: append_id.to_owned(),
            }),
            AppendReply::Full { byte_count, limit } => Err(ServiceError::TranscriptFull { byte_count, limit }),
        }
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
        Ok(self.store.load_page(key, after_seq, max_entries, max_bytes).await?)
    }

    pub async fn list_sessions(&self, namespace: &str, project_key: &str) -> Result<Vec<ListedSession>, ServiceError> {
        Ok(self.store.list_sessions(namespace, project_key).await?)
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
}
