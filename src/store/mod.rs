//! Persistence of sessions and report records, and nothing else: one trait, [`SessionStore`], a
//! Postgres implementation for production and an embedded SQLite one for a single instance. The
//! rules stay in `domain`. A report arrives validated and planned, through one of two typed
//! operations: [`SessionStore::store_result`] writes a completed run's finished row, and
//! [`SessionStore::report_on_row`] hands the row it has locked to `RowReport::decide` (once) and
//! applies the decision. Both take their locks in one order — the report id first, then the row —
//! so concurrent reports queue and never deadlock, and compare-and-set and idempotency are atomic.
//! Concurrent calls are coalesced (`coalesce`): loads into one query per batch, reports into one
//! transaction per batch, each report applied as if alone, in arrival order. Both stores pass the
//! same contract suite (`tests/store_contract/`). Agent SDK transcripts are kept by the same two
//! stores through a trait of their own, [`TranscriptStore`] (`transcript.rs`). Every operation
//! that removes a key's row leaves the key a tombstone (`domain::Tombstone`) in the same
//! transaction, and storing an id deletes it (`postgres/tombstone.rs`, `sqlite/tombstone.rs`).
//! Every write that changes a key (a store, a report, a clear, Forget, an expiry on read, a sweep)
//! adds the key's history event (`domain::HistoryEvent`) in its transaction and trims the history
//! there (`postgres/history.rs`, `sqlite/history.rs`); a replayed report adds none, and no read
//! writes one. Storing an id keeps the history: it goes with the key's tombstone when the sweep
//! deletes that, and an event of a key left with neither row nor tombstone is swept on its own
//! past the tombstones' time.

mod coalesce;
pub mod data_dir;
mod error;
pub mod postgres;
pub mod sqlite;
mod transcript;
mod transcript_lifecycle;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    HistoryEvent, ReportOutcome, RowReport, SessionKey, SessionRow, StoreResult, Tombstone, TranscriptFate,
};

pub use error::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use transcript::{
    AppendOutcome, AppendReply, ListedSession, PagedEntry, SummaryReply, TranscriptPage, TranscriptStore,
    TranscriptTotals, TranscriptsDeleted,
};
pub use transcript_lifecycle::{Removed, SweptTranscripts, TranscriptLifecycle};

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportReply {
    /// The report's effect is committed, with the report id's record when one was given.
    Applied(ReportOutcome),
    /// The report id was seen before for this key: the first outcome, nothing changed.
    Replayed(ReportOutcome),
    /// The report id was seen before for another key of the namespace: nothing changed.
    ReportIdReused,
}

/// What [`SessionStore::lookup`] finds for a key: its row, else its tombstone if it has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub row: Option<SessionRow>,
    /// Read only when there is no row (storing an id deletes the key's tombstone anyway).
    pub tombstone: Option<Tombstone>,
}

/// Which agents an expiry rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSelector {
    Only(String),
    /// Every agent but these (the ones with a TTL of their own).
    AllExcept(Vec<String>),
}

/// Rows of the selected agents (and namespace) last used before `cutoff` are expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryRule {
    pub namespace: Option<String>,
    pub agents: AgentSelector,
    pub cutoff: DateTime<Utc>,
}

/// The pool's connections at one instant, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// How one kind of coalesced call was batched since the start, for `/metrics`: `calls / batches`
/// is the mean batch size. Both only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// What the calls do (`load`), the `operation` label.
    pub operation: &'static str,
    pub batches: u64,
    pub calls: u64,
}

/// The backend, for logs, traces (`db.system`) and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Postgres => "postgresql",
            StoreKind::Sqlite => "sqlite",
        }
    }
}

/// A session store keeps the transcripts of its sessions too: both stores implement both traits,
/// and the transcript service gets the same store as a [`TranscriptStore`].
#[async_trait]
pub trait SessionStore: TranscriptStore + TranscriptLifecycle + Send + Sync + std::fmt::Debug + 'static {
    fn kind(&self) -> StoreKind;

    fn pool_stats(&self) -> PoolStats;

    /// Each kind of coalesced call's batches and calls so far (empty when nothing is coalesced).
    fn batch_stats(&self) -> Vec<BatchStats>;

    /// Applies the migrations this binary knows (under the database's migration lock); migrations
    /// applied by a newer binary are tolerated.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Ok when the store answers and its schema is at least this binary's latest migration.
    async fn check_ready(&self) -> Result<(), StoreError>;

    /// The key's row and, when it has none, its tombstone (current or not: the caller decides
    /// with the policy), read on one connection in one transaction: what a Get decides on. Writes
    /// nothing. One connection, because behind a session-mode pooler a second connection may
    /// queue for a server connection the first one holds.
    async fn lookup(&self, key: &SessionKey) -> Result<Found, StoreError>;

    /// The key's row alone.
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRow>, StoreError> {
        Ok(self.lookup(key).await?.row)
    }

    /// Deletes the row only if it is still exactly `row` (same id and last use); with it, in the
    /// same transaction, the id's transcripts meet `fate` unless another row holds the id, and the
    /// key gets an `expired` tombstone written at `now`.
    async fn delete_if_unchanged(
        &self,
        key: &SessionKey,
        row: &SessionRow,
        fate: TranscriptFate,
        now: DateTime<Utc>,
    ) -> Result<Removed, StoreError>;

    /// A completed run (SUCCESS, LIMIT_REACHED): writes `result.row` whatever the key's row holds.
    /// With a report id, atomically: claims the id (or finds its recorded answer and changes
    /// nothing), then writes the row and records `result.outcome` (kept from `now`).
    async fn store_result(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        result: &StoreResult,
    ) -> Result<ReportReply, StoreError>;

    /// A report decided on the row, atomically (alone, or within its batch's transaction, as if
    /// alone): claims the report id (or finds its recorded answer and changes nothing), locks the
    /// key's row, calls `report.decide` once with the row found, applies its effect as a
    /// compare-and-set and records the outcome. A clear applies `report.transcript_fate` to the
    /// id's transcripts in the same transaction (unless another row holds the id), counts the
    /// deleted ones in the outcome's `transcripts_deleted` and writes the key's tombstone
    /// (`Tombstone::of_report`, at `now`). Storing an id (either operation) deletes the key's
    /// tombstone in the same transaction.
    async fn report_on_row(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        report: &RowReport,
    ) -> Result<ReportReply, StoreError>;

    /// Deletes the key's row whatever it holds, and (same transaction) its id's transcripts meet
    /// `fate` unless another row holds the id, and the key gets a `forgotten` tombstone at `now`.
    async fn forget(&self, key: &SessionKey, fate: TranscriptFate, now: DateTime<Utc>) -> Result<Removed, StoreError>;

    /// Deletes at most `limit` rows expired under `rule`, in one short statement, skipping rows
    /// another sweeper holds, with (same transaction) their ids' transcripts meeting `fate` where
    /// no other row holds the id, and a `swept` tombstone at `now` for each deleted row's key;
    /// returns what this call deleted.
    async fn delete_expired_batch(
        &self,
        rule: &ExpiryRule,
        limit: u32,
        fate: TranscriptFate,
        now: DateTime<Utc>,
    ) -> Result<Removed, StoreError>;

    /// The key's history, oldest first (at most `[policy] history_events` events and 16 KiB, as
    /// the writes trimmed it). One short read; writes nothing.
    async fn history(&self, key: &SessionKey) -> Result<Vec<HistoryEvent>, StoreError>;

    /// The key's tombstone, if it has one (current or not: the caller decides with the policy).
    /// One short read by primary key; writes nothing. The service reads tombstones through
    /// [`SessionStore::lookup`]; this reads one even beside a row, which is how the contract suite
    /// proves that storing an id deletes it.
    async fn tombstone(&self, key: &SessionKey) -> Result<Option<Tombstone>, StoreError>;

    /// Deletes at most `limit` tombstones written before `rule.cutoff` (of the rule's agents and
    /// namespace), skipping ones another sweeper holds, with (same statement) the history of their
    /// keys, and at most `limit` history events from before the cutoff of keys with neither row
    /// nor tombstone; returns how many tombstones.
    async fn delete_expired_tombstones_batch(&self, rule: &ExpiryRule, limit: u32) -> Result<u64, StoreError>;

    /// Counts the tombstones written before `rule.cutoff` (of the rule's agents and namespace):
    /// what a sweep would delete (a dry run).
    async fn count_expired_tombstones(&self, rule: &ExpiryRule) -> Result<u64, StoreError>;

    /// Counts the rows expired under `rule`, and the transcripts no row but those holds (a
    /// dry-run sweep with no grace period).
    async fn count_expired(&self, rule: &ExpiryRule) -> Result<Removed, StoreError>;

    /// Deletes at most `limit` report records created before `before`.
    async fn delete_reports_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;

    /// Closes the connections; later calls fail with `Unavailable`.
    async fn close(&self);
}

/// Stable text of a result class and an action in the report table.
fn class_from_str(text: &str) -> Option<crate::domain::ResultClass> {
    crate::domain::ResultClass::ALL.into_iter().find(|c| c.as_str() == text)
}

fn action_from_str(text: &str) -> Option<crate::domain::Action> {
    crate::domain::Action::ALL.into_iter().find(|a| a.as_str() == text)
}

/// A report's facts as both stores keep them ('' for none); None when no report made the event.
fn report_facts(
    class: &str,
    action: &str,
    matched_signature: String,
    resumed_session_id: String,
    num_turns: i64,
    cause: &str,
) -> Result<Option<crate::domain::ReportFacts>, StoreError> {
    if class.is_empty() {
        return Ok(None);
    }
    let class: crate::domain::ResultClass =
        class_from_str(class).ok_or_else(|| StoreError::Corrupt(format!("unknown result class {class:?}")))?;
    let action: crate::domain::Action =
        action_from_str(action).ok_or_else(|| StoreError::Corrupt(format!("unknown action {action:?}")))?;
    let cause = cause_from_str(cause)?;
    Ok(Some(crate::domain::ReportFacts {
        class,
        action,
        matched_signature: Some(matched_signature).filter(|s| !s.is_empty()),
        resumed_session_id,
        num_turns: u32::try_from(num_turns).unwrap_or(u32::MAX),
        cause,
    }))
}

/// A resume failure's cause as both stores keep it ('' for none).
fn cause_from_str(text: &str) -> Result<Option<crate::domain::ResumeFailureCause>, StoreError> {
    match text {
        "" => Ok(None),
        text => crate::domain::ResumeFailureCause::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown resume failure cause {text:?}"))),
    }
}

/// A report record as read back, before it is compared with the reporting key.
#[derive(Debug, Clone, sqlx::FromRow)]
struct StoredReport {
    agent: String,
    conversation: String,
    result_class: String,
    action: String,
    session_id: String,
    retry_fresh: bool,
    cause: String,
}

impl StoredReport {
    fn into_reply(self, key: &SessionKey) -> Result<ReportReply, StoreError> {
        if self.agent != key.agent() || self.conversation != key.conversation() {
            return Ok(ReportReply::ReportIdReused);
        }
        let class = class_from_str(&self.result_class)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown result class {:?}", self.result_class)))?;
        let action = action_from_str(&self.action)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown action {:?}", self.action)))?;
        Ok(ReportReply::Replayed(ReportOutcome {
            class,
            action,
            session_id: self.session_id,
            retry_fresh: self.retry_fresh,
            transcripts_deleted: 0,
            cause: cause_from_str(&self.cause)?,
        }))
    }
}
