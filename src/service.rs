//! The lifecycle service: load, decide with the pure rules of `domain`, save through the store.
//! It knows nothing of gRPC; `server` converts requests into the domain types it takes and maps
//! its [`ServiceError`] to status codes in one place.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::field::Empty;
use tracing::{Instrument, Span, debug, info, info_span};

use crate::clock::Clock;
use crate::domain::ResumeFailureCause;
use crate::domain::{
    Action, AgentResult, Binding, Decision, FieldError, FreshReason, HistoryEvent, Policy, ReportOutcome, ReportPlan,
    SessionKey, SessionRow, Tombstone, TranscriptFate, decide, decide_with_transcript, decide_without_row,
    explain_with, plan_report,
};
use crate::metrics::{Metrics, SweepTrigger};
use crate::semconv::{SemconvMode, StoreCall};
use crate::store::{Found, Removed, ReportReply, SessionStore, StoreError};
use crate::sweeper::{self, SweepCounts, SweepScope};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] FieldError),
    #[error("report_id {report_id:?} was already used for another key of this namespace")]
    ReportIdReused { report_id: String },
    #[error("append_id {append_id:?} was already used for another transcript of this namespace")]
    AppendIdReused { append_id: String },
    #[error(
        "the transcript is full: it holds {byte_count} bytes and the append would pass the {limit}-byte limit (transcript_max_bytes)"
    )]
    TranscriptFull { byte_count: u64, limit: u64 },
    #[error("the transcript was deleted while it was being loaded; load it again")]
    TranscriptDeletedDuringLoad,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stored row as Get describes it to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub binding: Binding,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAnswer {
    pub decision: Decision,
    /// The id to resume; only with `Decision::Resume`.
    pub session_id: Option<String>,
    /// The row that stays stored (absent when there is none, or it just expired).
    pub stored: Option<StoredSession>,
    /// With a resume: the project key of the session's held main transcript, which the SDK
    /// materialises on any host or config dir.
    pub resumable_anywhere: Option<String>,
    /// With START_FRESH / CLEARED: what the key remembers of its last id.
    pub tombstone: Option<Tombstone>,
}

/// A report as received, validated field by field.
#[derive(Debug, Clone)]
pub struct Report {
    pub key: SessionKey,
    pub resumed_session_id: String,
    pub binding: Binding,
    pub result: AgentResult,
    pub report_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSummary {
    pub deleted: u64,
    /// Transcripts deleted: those of the deleted rows, orphans and graced ones.
    pub transcripts_deleted: u64,
    /// Tombstones past their time (not counted in `deleted`).
    pub tombstones_deleted: u64,
    pub took: Duration,
}

/// What Forget removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forgotten {
    pub existed: bool,
    pub transcripts_deleted: u64,
}

/// Everything kept about a key, for Inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The stored row and its expiry under the current policy.
    pub row: Option<(SessionRow, DateTime<Utc>)>,
    pub tombstone: Option<Tombstone>,
    /// The tombstone is past `tombstone_ttl` (Get ignores it; the sweep deletes it).
    pub tombstone_expired: bool,
    /// The key's last events, oldest first.
    pub history: Vec<HistoryEvent>,
}

/// The policy in force, shared by every call and replaced as a whole when SIGHUP reloads the
/// file: a call reads it once and decides with that one policy from start to end.
#[derive(Debug, Clone, Default)]
pub struct SharedPolicy(Arc<RwLock<Arc<Policy>>>);

impl SharedPolicy {
    pub fn new(policy: Policy) -> Self {
        SharedPolicy(Arc::new(RwLock::new(Arc::new(policy))))
    }

    pub fn current(&self) -> Arc<Policy> {
        // A writer that panicked cannot leave a half-written Arc behind: the value is still whole.
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn replace(&self, policy: Policy) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(policy);
    }
}

#[derive(Debug, Clone)]
pub struct Lifecycle {
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    policy: SharedPolicy,
    metrics: Arc<Metrics>,
    /// The names its store spans carry.
    semconv: SemconvMode,
}

impl Lifecycle {
    pub fn new(
        store: Arc<dyn SessionStore>,
        clock: Arc<dyn Clock>,
        policy: SharedPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Lifecycle {
            store,
            clock,
            policy,
            metrics,
            semconv: SemconvMode::default(),
        }
    }

    /// The conventions of its store spans (SPEC §6's names unless this is called).
    pub fn with_semconv(self, semconv: SemconvMode) -> Self {
        Lifecycle { semconv, ..self }
    }

    /// A child span for one store call, named and described by the conventions chosen at start-up
    /// ([`SemconvMode::database`]: `db.system` and `db.operation` by default, `db.system.name`,
    /// `db.operation.name` and `db.collection.name` when stable ones are asked for). For traces
    /// only: its target is [`crate::telemetry::TRACE_ONLY`], which log lines never show, so with
    /// no trace exporter it is never even built.
    fn store_span(&self, call: StoreCall) -> Span {
        let emit = self.semconv.database;
        let span = info_span!(
            target: crate::telemetry::TRACE_ONLY,
            "store",
            otel.name = if emit.stable() { call.stable_span_name() } else { call.name() },
            otel.kind = "client",
            db.system = Empty,
            db.operation = Empty,
            db.system.name = Empty,
            db.operation.name = Empty,
            db.collection.name = Empty,
        );
        let system = self.store.kind().as_str();
        if emit.old() {
            span.record("db.system", system).record("db.operation", call.name());
        }
        if emit.stable() {
            span.record("db.system.name", system)
                .record("db.operation.name", call.operation());
            if let Some(collection) = call.collection() {
                span.record("db.collection.name", collection);
            }
        }
        span
    }

    /// Resume or start fresh. An expired row is deleted as it was read, never a newer one, and its
    /// id's transcripts with it. A row whose main transcript is held (under
    /// `transcript_project_key` when given) resumes on any host or config dir. The transcript is
    /// looked up only when the binding alone would start fresh: one more short read on that path,
    /// none on Get's usual one (a plain RESUME leaves `resumable_anywhere` unset).
    pub async fn get(
        &self,
        key: &SessionKey,
        binding: &Binding,
        transcript_project_key: Option<&str>,
    ) -> Result<GetAnswer, ServiceError> {
        let Found { row, tombstone } = self
            .store
            .lookup(key)
            .instrument(self.store_span(StoreCall::SessionLoad))
            .await?;
        let now = self.clock.now();
        let policy = self.policy.current();
        let mut decision = decide(row.as_ref(), key.agent(), binding, now, &policy);
        let mut resumable_anywhere = None;
        // Rule 1: no row → the key's tombstone, if current, says why (read by the same lookup).
        let tombstone = tombstone.filter(|t| row.is_none() && t.is_current(key.agent(), now, &policy));
        if row.is_none() {
            decision = decide_without_row(tombstone.as_ref());
        }
        if let Some(row) = row.as_ref()
            && decision == Decision::StartFresh(FreshReason::BindingMismatch)
        {
            let main = self
                .store
                .main_transcript(key.namespace(), &row.session_id, transcript_project_key)
                .instrument(self.store_span(StoreCall::MainTranscript))
                .await?;
            let held = main.filter(|m| m.is_held(transcript_project_key));
            let refined = decide_with_transcript(decision, row, binding, held.as_ref());
            decision = refined.decision;
            resumable_anywhere = refined.resumable_anywhere;
        }
        self.metrics.record_decision(decision);
        let span = Span::current();
        match decision {
            Decision::Resume => span.record("sessionkeeper.decision", "resume"),
            Decision::StartFresh(reason) => span
                .record("sessionkeeper.decision", "start_fresh")
                .record("sessionkeeper.fresh_reason", reason.as_str()),
        };
        let describe = |row: &crate::domain::SessionRow| StoredSession {
            binding: row.binding.clone(),
            last_used_at: row.last_used_at,
            expires_at: policy.expires_at(key.agent(), row.last_used_at),
        };
        let answer = match (decision, row) {
            (Decision::Resume, Some(row)) => GetAnswer {
                decision,
                stored: Some(describe(&row)),
                session_id: Some(row.session_id),
                resumable_anywhere,
                tombstone: None,
            },
            (Decision::StartFresh(FreshReason::Expired), Some(row)) => {
                let fate = TranscriptFate::at(now, policy.transcript_grace);
                let removed = self
                    .store
                    .delete_if_unchanged(key, &row, fate, now)
                    .instrument(self.store_span(StoreCall::DeleteIfUnchanged))
                    .await?;
                if removed.rows > 0 {
                    self.metrics.record_swept(SweepTrigger::Read, 1);
                    self.metrics.record_transcripts_deleted("expired", removed.transcripts);
                    info!(
                        %key,
                        session_id = %row.session_id,
                        transcripts_deleted = removed.transcripts,
                        "expired session deleted on read"
                    );
                }
                GetAnswer {
                    decision,
                    session_id: None,
                    stored: None,
                    resumable_anywhere: None,
                    tombstone: None,
                }
            }
            (decision, row) => GetAnswer {
                decision,
                session_id: None,
                stored: row.as_ref().map(describe),
                resumable_anywhere: None,
                tombstone,
            },
        };
        debug!(%key, ?answer.decision, "get");
        Ok(answer)
    }

    /// Classifies and validates the report before any I/O, then stores, keeps or clears the
    /// session id, atomically with the report id's record.
    pub async fn report(&self, report: Report) -> Result<ReportOutcome, ServiceError> {
        let Report {
            key,
            resumed_session_id,
            binding,
            result,
            report_id,
        } = report;
        let result = result.truncated();
        let policy = self.policy.current();
        let explained = explain_with(
            &result,
            !resumed_session_id.is_empty(),
            &binding.provider,
            &policy.signatures,
        );
        let class = explained.class;
        let now = self.clock.now();
        let mut plan = plan_report(class, &result, &resumed_session_id, &binding, now, &policy)?;
        let matched_signature = explained.signature.map(|s| s.label());
        match &mut plan {
            ReportPlan::OnRow(on_row) => on_row.matched_signature = matched_signature,
            ReportPlan::Store(stored) => stored.matched_signature = matched_signature,
        }
        let report_id = report_id.as_deref();
        let reply = match &plan {
            ReportPlan::Store(stored) => {
                self.store
                    .store_result(&key, report_id, now, stored)
                    .instrument(self.store_span(StoreCall::StoreResult))
                    .await?
            }
            ReportPlan::OnRow(on_row) => {
                self.store
                    .report_on_row(&key, report_id, now, on_row)
                    .instrument(self.store_span(StoreCall::ReportOnRow))
                    .await?
            }
        };
        let outcome = match reply {
            ReportReply::Applied(outcome) => {
                self.metrics.record_report(class, outcome.action);
                if outcome.action == Action::Cleared {
                    self.metrics
                        .record_transcripts_deleted("cleared", outcome.transcripts_deleted);
                }
                let cause = outcome.cause;
                if !resumed_session_id.is_empty() && !class.stores() {
                    self.metrics.record_resume_failure(&policy, key.agent(), class, cause);
                }
                info!(
                    %key,
                    class = class.as_str(),
                    cause = cause.map(ResumeFailureCause::as_str),
                    action = outcome.action.as_str(),
                    retry_fresh = outcome.retry_fresh,
                    transcripts_deleted = outcome.transcripts_deleted,
                    "report applied"
                );
                outcome
            }
            ReportReply::Replayed(outcome) => {
                debug!(%key, report_id, "report replayed");
                outcome
            }
            ReportReply::ReportIdReused => {
                return Err(ServiceError::ReportIdReused {
                    report_id: report_id.unwrap_or_default().to_owned(),
                });
            }
        };
        Span::current()
            .record("sessionkeeper.result_class", outcome.class.as_str())
            .record("sessionkeeper.action", outcome.action.as_str())
            .record("sessionkeeper.retry_fresh", outcome.retry_fresh);
        Ok(outcome)
    }

    /// Deletes the key's row, whatever id it holds, and its id's transcripts unless another row
    /// of the namespace holds the id.
    pub async fn forget(&self, key: &SessionKey) -> Result<Forgotten, ServiceError> {
        let now = self.clock.now();
        let fate = TranscriptFate::at(now, self.policy.current().transcript_grace);
        let Removed { rows, transcripts } = self
            .store
            .forget(key, fate, now)
            .instrument(self.store_span(StoreCall::Forget))
            .await?;
        self.metrics.record_transcripts_deleted("forgotten", transcripts);
        info!(%key, existed = rows > 0, transcripts_deleted = transcripts, "session forgotten");
        Ok(Forgotten {
            existed: rows > 0,
            transcripts_deleted: transcripts,
        })
    }

    /// The key's row and tombstone (one lookup) and its history: no write, no decision.
    pub async fn inspect(&self, key: &SessionKey) -> Result<Inspection, ServiceError> {
        let Found { row, tombstone } = self
            .store
            .lookup(key)
            .instrument(self.store_span(StoreCall::SessionLoad))
            .await?;
        let history = self
            .store
            .history(key)
            .instrument(self.store_span(StoreCall::HistoryRead))
            .await?;
        let now = self.clock.now();
        let policy = self.policy.current();
        let tombstone_expired = tombstone
            .as_ref()
            .is_some_and(|t| !t.is_current(key.agent(), now, &policy));
        Ok(Inspection {
            row: row.map(|row| {
                let expires_at = policy.expires_at(key.agent(), row.last_used_at);
                (row, expires_at)
            }),
            tombstone,
            tombstone_expired,
            history,
        })
    }

    /// Deletes (or, dry, counts) the rows expired now under the policy, in bounded batches.
    pub async fn sweep(
        &self,
        scope: &SweepScope,
        dry_run: bool,
        trigger: SweepTrigger,
    ) -> Result<SweepSummary, ServiceError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let counts: SweepCounts = sweeper::sweep_once(self.store.as_ref(), &self.policy.current(), now, scope, dry_run)
            .instrument(self.store_span(if dry_run {
                StoreCall::SweepDryRun
            } else {
                StoreCall::Sweep
            }))
            .await?;
        let took = started.elapsed();
        if !dry_run {
            self.metrics.record_swept(trigger, counts.rows);
            self.metrics
                .record_transcripts_deleted("swept", counts.transcripts_of_rows);
            self.metrics
                .record_transcripts_deleted("orphan", counts.transcripts_unheld.orphan);
            self.metrics
                .record_transcripts_deleted("graced", counts.transcripts_unheld.graced);
            self.metrics.record_sweep_duration(trigger, took);
        }
        Ok(SweepSummary {
            deleted: counts.rows,
            transcripts_deleted: counts.transcripts(),
            tombstones_deleted: counts.tombstones,
            took,
        })
    }
}
