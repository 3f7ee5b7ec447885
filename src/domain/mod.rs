//! The session lifecycle as pure, synchronous rules (SPEC §4): the key and binding types with their
//! validation, Get's decision, the classification of a reported result and the action it takes;
//! a conversation's history (`history`); and the transcript key and entry checks of the Agent SDKs' session store (`transcript`).
//! Nothing here does I/O, awaits, or knows about protobuf or SQL; the service feeds rows in and
//! applies the effects these functions return.

mod classify;
mod decide;
mod frame;
mod history;
mod key;
mod policy;
mod report;
mod resume_failure;
mod tombstone;
mod transcript;
mod transcript_lifecycle;

// Property tests over arbitrary input; `arbitrary` is shared with tests/reliability.
#[cfg(test)]
mod arbitrary;
#[cfg(test)]
mod properties;

pub use classify::{
    Classification, OPERATOR_SOURCE, PatternKind, SIGNATURES, SIGNATURES_TOML, Signature, SignatureError, Stage,
    classify, explain, explain_with, operator_signature, parse_signatures, signatures_markdown,
};
pub use decide::{Decision, FreshReason, decide, decide_without_row};
pub use frame::result_from_output;
pub use history::{
    DEFAULT_HISTORY_EVENTS, EVENT_OVERHEAD_BYTES, HistoryEvent, HistoryKind, MAX_EVENT_TEXT_BYTES, MAX_HISTORY_BYTES,
    ReportFacts, kept as history_kept, removal_bytes, trim as trim_history,
};
pub use key::{Binding, DEFAULT_NAMESPACE, FieldError, MAX_SESSION_ID_BYTES, SessionKey, check_name, check_text};
pub use policy::{AgentPolicy, Policy};
pub use report::{
    Action, ReportError, ReportOutcome, ReportPlan, RowDecision, RowEffect, RowReport, StoreResult, plan_report,
};
pub use resume_failure::ResumeFailureCause;
pub use tombstone::{Tombstone, TombstoneReason};
pub use transcript::{
    Entry, MAX_ENTRY_UUID_BYTES, MAX_PROJECT_KEY_BYTES, MAX_SUBPATH_BYTES, MAX_TRANSCRIPT_SESSION_ID_BYTES, Summary,
    SummaryDialect, SummaryWrite, TranscriptKey, check_subpath, parse_entries,
};
pub use transcript_lifecycle::{MainTranscript, TranscriptDecision, TranscriptFate, decide_with_transcript};

use chrono::{DateTime, Utc};

/// The stored state of one conversation: the id to resume and where it can be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub session_id: String,
    pub binding: Binding,
    /// When a completed run last stored this id; the TTL counts from here. Get never moves it.
    pub last_used_at: DateTime<Utc>,
    /// Consecutive zero-turn unknown failures of resumes of this id; any store resets it.
    pub failure_count: u32,
}

/// How a reported result was classified (SPEC §4's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultClass {
    Success,
    SessionGone,
    InvalidSessionId,
    LimitReached,
    Transient,
    Quota,
    Auth,
    UnknownFailure,
}

impl ResultClass {
    pub const ALL: [ResultClass; 8] = [
        ResultClass::Success,
        ResultClass::SessionGone,
        ResultClass::InvalidSessionId,
        ResultClass::LimitReached,
        ResultClass::Transient,
        ResultClass::Quota,
        ResultClass::Auth,
        ResultClass::UnknownFailure,
    ];

    /// Stable lowercase name, used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultClass::Success => "success",
            ResultClass::SessionGone => "session_gone",
            ResultClass::InvalidSessionId => "invalid_session_id",
            ResultClass::LimitReached => "limit_reached",
            ResultClass::Transient => "transient",
            ResultClass::Quota => "quota",
            ResultClass::Auth => "auth",
            ResultClass::UnknownFailure => "unknown_failure",
        }
    }

    /// SUCCESS and LIMIT_REACHED: a completed run whose id is stored, whatever the row holds.
    pub fn stores(self) -> bool {
        matches!(self, ResultClass::Success | ResultClass::LimitReached)
    }
}

/// Longest kept text of a result field; longer texts are cut, never rejected (SPEC §3).
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// Longest kept total of all result texts together.
pub const MAX_TOTAL_TEXT_BYTES: usize = 64 * 1024;

/// A run's result as the SDK reported it (SPEC §3 `AgentResult`), after truncation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentResult {
    pub is_error: bool,
    pub subtype: String,
    pub session_id: String,
    pub num_turns: u32,
    pub errors: Vec<String>,
    pub terminal_reason: String,
    pub api_error_status: u32,
    pub exception: String,
    pub result_text: String,
}

impl AgentResult {
    /// Cuts every text to [`MAX_TEXT_BYTES`] and all of them together to [`MAX_TOTAL_TEXT_BYTES`]
    /// (on character boundaries), so that a report is never refused for its length. `exception`
    /// keeps its end (the last lines of stderr say what went wrong); the others keep their start.
    /// The session id is not a text: it is validated where it is stored, never cut.
    pub fn truncated(mut self) -> Self {
        let mut budget = MAX_TOTAL_TEXT_BYTES;
        let mut cut = |text: &mut String, keep_tail: bool| {
            let limit = MAX_TEXT_BYTES.min(budget);
            if keep_tail {
                keep_last_bytes(text, limit);
            } else {
                truncate_on_char_boundary(text, limit);
            }
            budget -= text.len();
        };
        cut(&mut self.subtype, false);
        cut(&mut self.terminal_reason, false);
        cut(&mut self.exception, true);
        cut(&mut self.result_text, false);
        for error in &mut self.errors {
            cut(error, false);
        }
        self.errors.retain(|e| !e.is_empty());
        self
    }
}

/// Keeps the last `limit` bytes of `text` (on a character boundary).
fn keep_last_bytes(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut start = text.len() - limit;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text.drain(..start);
    }
}

fn truncate_on_char_boundary(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_text_is_cut_to_8_kib_on_a_char_boundary() {
        let result = AgentResult {
            exception: "é".repeat(5000),
            ..AgentResult::default()
        }
        .truncated();
        assert_eq!(result.exception.len(), MAX_TEXT_BYTES);
        assert!(result.exception.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_long_exception_keeps_its_end_where_stderr_says_what_failed() {
        let stderr = format!(
            "{}\nError: No conversation found with session ID: abc",
            "noise ".repeat(5000)
        );
        let result = AgentResult {
            exception: stderr,
            ..AgentResult::default()
        }
        .truncated();
        assert_eq!(result.exception.len(), MAX_TEXT_BYTES);
        assert!(result.exception.ends_with("No conversation found with session ID: abc"));
    }

    #[test]
    fn all_texts_together_are_cut_to_64_kib() {
        let result = AgentResult {
            errors: vec!["x".repeat(20_000); 20],
            result_text: "r".repeat(100),
            ..AgentResult::default()
        }
        .truncated();
        let total: usize = result.errors.iter().map(String::len).sum::<usize>() + result.result_text.len();
        assert_eq!(total, MAX_TOTAL_TEXT_BYTES);
        assert_eq!(result.result_text.len(), 100, "earlier fields keep their text");
        assert!(result.errors.iter().all(|e| e.len() <= MAX_TEXT_BYTES));
    }
}
