//! ReportResult's actions (SPEC §4 "ReportResult"): given the class of a result, the id the run
//! resumed (A) and the stored row (S), what to do to the row and what to answer. Store only on
//! SUCCESS and LIMIT_REACHED; clear only while the row still holds A; count zero-turn unknown
//! failures of a resume of S and clear at the limit.
//!
//! A report is planned in two steps, so that nothing about it is guessed. [`plan_report`] runs
//! before any I/O: it validates the report and splits it by whether its outcome depends on the
//! stored row. A store ([`ReportPlan::Store`]) does not: the last completed run wins whatever the
//! row holds, so the store writes the finished row. Everything else ([`ReportPlan::OnRow`]) is
//! decided by [`RowReport::decide`], called once by the store with the row it has locked.

use chrono::{DateTime, Utc};

use super::key::{MAX_SESSION_ID_BYTES, check_text};
use super::{AgentResult, Binding, FieldError, Policy, ResultClass, ResumeFailureCause, SessionRow, TranscriptFate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Stored,
    Cleared,
    Kept,
    Superseded,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Stored, Action::Cleared, Action::Kept, Action::Superseded];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stored => "stored",
            Action::Cleared => "cleared",
            Action::Kept => "kept",
            Action::Superseded => "superseded",
        }
    }
}

impl ResultClass {
    /// The actions a report of this class can lead to, whatever the row holds: the one table of
    /// which `(class, action)` pairs occur (the metrics pre-populate only these). A test runs
    /// [`plan_report`] and [`RowReport::decide`] over every situation and finds exactly these.
    pub const fn possible_actions(self) -> &'static [Action] {
        match self {
            ResultClass::Success | ResultClass::LimitReached => &[Action::Stored],
            ResultClass::SessionGone | ResultClass::InvalidSessionId => &[Action::Cleared, Action::Superseded],
            // Cleared only when zero-turn failures of the stored id reach the limit.
            ResultClass::UnknownFailure => &[Action::Cleared, Action::Kept, Action::Superseded],
            ResultClass::Transient | ResultClass::Quota | ResultClass::Auth => &[Action::Kept, Action::Superseded],
        }
    }
}

/// The answer to a report; it is also what an idempotent repeat of the report gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOutcome {
    pub class: ResultClass,
    pub action: Action,
    /// The id stored after the report; empty when none.
    pub session_id: String,
    /// Run the turn once more without resume.
    pub retry_fresh: bool,
    /// Transcripts deleted because this report cleared the id (0 on a replay: not recorded).
    pub transcripts_deleted: u64,
    /// Why a resume failed as SESSION_GONE (issue 19 point 3), decided with the row the report
    /// cleared (recorded with the report id, so a replay answers it too); None for every other
    /// report.
    pub cause: Option<ResumeFailureCause>,
}

/// What a validated report does, decided before the store is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportPlan {
    /// SUCCESS or LIMIT_REACHED: write this row, whatever the stored one holds.
    Store(StoreResult),
    /// Clears, keeps and failure counts: decided on the stored row as locked.
    OnRow(RowReport),
}

/// A completed run's row and its answer (always `Action::Stored` with the row's id), and what its
/// history event keeps of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreResult {
    pub row: SessionRow,
    pub outcome: ReportOutcome,
    /// The id the run resumed; empty for a fresh run.
    pub resumed_session_id: String,
    pub num_turns: u32,
    /// The signature that classified the result, as written in the table (None: structure).
    pub matched_signature: Option<String>,
    /// Events the key's history keeps (`[policy] history_events`).
    pub history_events: u32,
}

/// A report whose outcome depends on the stored row: a failed run's class and what it resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReport {
    /// Never SUCCESS or LIMIT_REACHED (those are `ReportPlan::Store`).
    pub class: ResultClass,
    /// A: the id the run resumed; empty for a fresh run.
    pub resumed_session_id: String,
    pub num_turns: u32,
    pub unknown_failure_limit: u32,
    /// What becomes of the cleared id's transcripts when no other row holds it.
    pub transcript_fate: TranscriptFate,
    /// The binding the failed run reported (kept in the tombstone of a clear).
    pub binding: Binding,
    /// The signature that classified the result, as written in the table (None: structure).
    pub matched_signature: Option<String>,
    /// Events the key's history keeps (`[policy] history_events`).
    pub history_events: u32,
}

/// The change a [`RowReport`] makes to the row it was decided on. Each names the id it was
/// decided on, so the store applies it as a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowEffect {
    None,
    /// Delete the row only while it still holds this id.
    Clear {
        expected_session_id: String,
    },
    /// Set the failure count only while the row still holds this id.
    CountFailure {
        expected_session_id: String,
        failure_count: u32,
    },
}

/// What a [`RowReport`] does to the row found, and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDecision {
    pub effect: RowEffect,
    pub outcome: ReportOutcome,
}

/// A report that cannot be acted on as sent.
pub type ReportError = FieldError;

/// Validates a report of `result` (classified as `class`) and plans it; touches nothing.
pub fn plan_report(
    class: ResultClass,
    result: &AgentResult,
    resumed_session_id: &str,
    binding: &Binding,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<ReportPlan, ReportError> {
    if !class.stores() {
        return Ok(ReportPlan::OnRow(RowReport {
            class,
            resumed_session_id: resumed_session_id.to_owned(),
            num_turns: result.num_turns,
            unknown_failure_limit: policy.unknown_failure_limit,
            transcript_fate: TranscriptFate::at(now, policy.transcript_grace),
            binding: binding.clone(),
            matched_signature: None,
            history_events: policy.history_events,
        }));
    }
    if result.session_id.is_empty() {
        return Err(FieldError::new(
            "result.session_id",
            format!("is required when the result is {}", class.as_str()),
        ));
    }
    check_text("result.session_id", &result.session_id, MAX_SESSION_ID_BYTES)?;
    Ok(ReportPlan::Store(StoreResult {
        row: SessionRow {
            session_id: result.session_id.clone(),
            binding: binding.clone(),
            last_used_at: now,
            failure_count: 0,
        },
        outcome: ReportOutcome {
            class,
            action: Action::Stored,
            session_id: result.session_id.clone(),
            retry_fresh: false,
            transcripts_deleted: 0,
            cause: None,
        },
        resumed_session_id: resumed_session_id.to_owned(),
        num_turns: result.num_turns,
        matched_signature: None,
        history_events: policy.history_events,
    }))
}

impl RowReport {
    /// Decides the report on `row`, the stored row as the store has locked it.
    pub fn decide(&self, row: Option<&SessionRow>) -> RowDecision {
        let a = self.resumed_session_id.as_str();
        let stored = row.map(|r| r.session_id.as_str());
        let decision = |effect, action, session_id: &str, retry_fresh| RowDecision {
            effect,
            outcome: ReportOutcome {
                class: self.class,
                action,
                session_id: session_id.to_owned(),
                retry_fresh,
                transcripts_deleted: 0,
                cause: None,
            },
        };
        let mut decided = match self.class {
            ResultClass::SessionGone | ResultClass::InvalidSessionId => match stored {
                Some(s) if s == a => decision(clear(a), Action::Cleared, "", true),
                Some(s) => decision(RowEffect::None, Action::Superseded, s, false),
                None => decision(RowEffect::None, Action::Cleared, "", !a.is_empty()),
            },
            ResultClass::UnknownFailure if self.num_turns == 0 && !a.is_empty() && stored == Some(a) => {
                let failures = row.map_or(0, |r| r.failure_count).saturating_add(1);
                if failures >= self.unknown_failure_limit {
                    decision(clear(a), Action::Cleared, "", true)
                } else {
                    let effect = RowEffect::CountFailure {
                        expected_session_id: a.to_owned(),
                        failure_count: failures,
                    };
                    decision(effect, Action::Kept, a, false)
                }
            }
            // Quota, auth, transient and other unknown failures keep the row. (Success and
            // limit reached never get here; should one, it keeps the row too: never a store.)
            _ => match stored {
                Some(s) if !a.is_empty() && s != a => decision(RowEffect::None, Action::Superseded, s, false),
                _ => decision(RowEffect::None, Action::Kept, stored.unwrap_or(""), false),
            },
        };
        let cleared = row.filter(|_| matches!(decided.effect, RowEffect::Clear { .. }));
        decided.outcome.cause = ResumeFailureCause::of_report(self, cleared);
        decided
    }
}

fn clear(expected: &str) -> RowEffect {
    RowEffect::Clear {
        expected_session_id: expected.to_owned(),
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
