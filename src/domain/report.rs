//! ReportResult's actions (SPEC §4 "ReportResult"): given the class of a result, the id the run
//! resumed (A) and the stored row (S), what to do to the row and what to answer. Store only on
//! SUCCESS and LIMIT_REACHED; clear only while the row still holds A; count zero-turn unknown
//! failures of a resume of S and clear at the limit.

use chrono::{DateTime, Utc};

use super::key::{MAX_SESSION_ID_BYTES, check_text};
use super::{AgentResult, Binding, FieldError, Policy, ResultClass, SessionRow};

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

/// The answer to a report; it is also what an idempotent repeat of the report gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOutcome {
    pub class: ResultClass,
    pub action: Action,
    /// The id stored after the report; empty when none.
    pub session_id: String,
    /// Run the turn once more without resume.
    pub retry_fresh: bool,
}

/// The change to the stored row. Conditional effects name the id they were decided on, so the
/// store can apply them as a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Insert or replace the row, whatever it holds: the last completed run wins.
    Store(SessionRow),
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub effect: Effect,
    pub outcome: ReportOutcome,
}

/// A report that cannot be acted on as sent.
pub type ReportError = FieldError;

/// Decides what a report of `result` (classified as `class`) does to `row`.
pub fn plan_report(
    class: ResultClass,
    result: &AgentResult,
    resumed_session_id: &str,
    binding: &Binding,
    row: Option<&SessionRow>,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Plan, ReportError> {
    let a = resumed_session_id;
    let stored = row.map(|r| r.session_id.as_str());
    let plan = |effect, action, session_id: &str, retry_fresh| Plan {
        effect,
        outcome: ReportOutcome {
            class,
            action,
            session_id: session_id.to_owned(),
            retry_fresh,
        },
    };
    Ok(match class {
        ResultClass::Success | ResultClass::LimitReached => {
            if result.session_id.is_empty() {
                return Err(FieldError::new(
                    "result.session_id",
                    format!("is required when the result is {}", class.as_str()),
                ));
            }
            check_text("result.session_id", &result.session_id, MAX_SESSION_ID_BYTES)?;
            let new_row = SessionRow {
                session_id: result.session_id.clone(),
                binding: binding.clone(),
                last_used_at: now,
                failure_count: 0,
            };
            plan(Effect::Store(new_row), Action::Stored, &result.session_id, false)
        }
        ResultClass::SessionGone | ResultClass::InvalidSessionId => match stored {
            Some(s) if s == a => plan(clear(a), Action::Cleared, "", true),
            Some(s) => plan(Effect::None, Action::Superseded, s, false),
            None => plan(Effect::None, Action::Cleared, "", !a.is_empty()),
        },
        ResultClass::UnknownFailure if result.num_turns == 0 && !a.is_empty() && stored == Some(a) => {
            let failures = row.map_or(0, |r| r.failure_count).saturating_add(1);
            if failures >= policy.unknown_failure_limit {
                plan(clear(a), Action::Cleared, "", true)
            } else {
                let effect = Effect::CountFailure {
                    expected_session_id: a.to_owned(),
                    failure_count: failures,
                };
                plan(effect, Action::Kept, a, false)
            }
        }
        ResultClass::Quota | ResultClass::Auth | ResultClass::Transient | ResultClass::UnknownFailure => match stored {
            Some(s) if !a.is_empty() && s != a => plan(Effect::None, Action::Superseded, s, false),
            _ => plan(Effect::None, Action::Kept, stored.unwrap_or(""), false),
        },
    })
}

fn clear(expected: &str) -> Effect {
    Effect::Clear {
        expected_session_id: expected.to_owned(),
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
