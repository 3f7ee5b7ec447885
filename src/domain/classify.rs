//! Classification of a reported result (SPEC §4's table). The text signatures are data: one table,
//! [`SIGNATURES`], matched case-insensitively over `errors`, `exception` and `result_text`. The
//! steps run in the spec's order and the first that matches wins; adding a signature is adding a row.

use super::{AgentResult, ResultClass};

/// Which step of the classification a text signature belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Step 2: the session id is dead or malformed. Tried before limits and transient failures.
    DeadSession,
    /// Step 4: the account or the network failed; the session itself is fine.
    KeepSession,
}

/// How a signature's text is found in a lowercased text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// The text contains this.
    Contains(&'static str),
    /// The text contains `before`, then one id-like token (whitespace-free, with a digit, as ids
    /// have and words do not: "thread 0199a2 not found", not "the thread was not found"), then `after`.
    TokenBetween { before: &'static str, after: &'static str },
    /// The text contains `before`, then anything (a path), then `after`.
    AnyBetween { before: &'static str, after: &'static str },
}

/// One row of the signature table. Patterns are written in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub stage: Stage,
    pub class: ResultClass,
    pub pattern: PatternKind,
}

const fn sig(stage: Stage, class: ResultClass, pattern: PatternKind) -> Signature {
    Signature { stage, class, pattern }
}

use PatternKind::{AnyBetween, Contains, TokenBetween};
use ResultClass::{Auth, InvalidSessionId, Quota, SessionGone, Transient};
use Stage::{DeadSession, KeepSession};

/// Every text signature, in matching order within its stage.
pub const SIGNATURES: &[Signature] = &[
    // Claude Code / Agent SDK: the transcript is not on this host, config dir or cwd.
    sig(DeadSession, SessionGone, Contains("no conversation found")),
    sig(DeadSession, SessionGone, Contains("no conversations found to resume")),
    sig(DeadSession, SessionGone, Contains("session not found")),
    sig(DeadSession, SessionGone, Contains("no longer on disk")),
    // Codex: the thread's rollout was never written or is gone.
    sig(DeadSession, SessionGone, Contains("no rollout found for thread id")),
    sig(DeadSession, SessionGone, Contains("thread not loaded")),
    sig(
        DeadSession,
        SessionGone,
        TokenBetween {
            before: "thread ",
            after: " not found",
        },
    ),
    sig(
        DeadSession,
        SessionGone,
        AnyBetween {
            before: "rollout at ",
            after: " is empty",
        },
    ),
    // The SDK refused the id itself.
    sig(
        DeadSession,
        InvalidSessionId,
        Contains("--resume requires a valid session id"),
    ),
    sig(
        DeadSession,
        InvalidSessionId,
        Contains("is not a uuid and does not match any session title"),
    ),
    sig(DeadSession, InvalidSessionId, Contains("must be in uuid format")),
    sig(DeadSession, InvalidSessionId, Contains("invalid session id")),
    // The account's plan or credits.
    sig(KeepSession, Quota, Contains("usage limit reached")),
    sig(KeepSession, Quota, Contains("session limit")),
    sig(KeepSession, Quota, Contains("hit your limit")),
    sig(KeepSession, Quota, Contains("credit exhaustion")),
    // Credentials and billing.
    sig(KeepSession, Auth, Contains("authentication_failed")),
    sig(KeepSession, Auth, Contains("billing_error")),
    sig(KeepSession, Auth, Contains("not logged in")),
    sig(KeepSession, Auth, Contains("invalid token")),
    sig(KeepSession, Auth, Contains("unauthorized")),
    // The API or the network, for now.
    sig(KeepSession, Transient, Contains("rate limit")),
    sig(KeepSession, Transient, Contains("too many requests")),
    sig(KeepSession, Transient, Contains("overloaded")),
    sig(KeepSession, Transient, Contains("at capacity")),
    sig(KeepSession, Transient, Contains("timeout")),
    sig(KeepSession, Transient, Contains("econnreset")),
    sig(KeepSession, Transient, Contains("econnrefused")),
    sig(KeepSession, Transient, Contains("etimedout")),
    sig(KeepSession, Transient, Contains("socket hang up")),
    sig(KeepSession, Transient, Contains("api error: 5")),
];

/// Subtypes of a run that stopped at a limit (step 3).
pub const LIMIT_SUBTYPES: &[&str] = &[
    "error_max_turns",
    "error_max_budget_usd",
    "error_max_structured_output_retries",
];
/// Terminal reasons of a run that stopped at a limit (step 3).
pub const LIMIT_TERMINAL_REASONS: &[&str] = &["max_turns", "budget_exhausted"];
/// API statuses that say nothing about the session (step 5).
pub const API_STATUS_CLASSES: &[(u32, ResultClass)] = &[
    (429, Transient),
    (500, Transient),
    (502, Transient),
    (503, Transient),
    (529, Transient),
    (401, Auth),
    (403, Auth),
];
/// The subtype of a run that failed before its first turn (step 6's structure).
const ERROR_DURING_EXECUTION: &str = "error_during_execution";

impl PatternKind {
    /// Whether this pattern occurs in `text`, which must already be lowercase.
    pub fn matches(self, text: &str) -> bool {
        match self {
            Contains(needle) => text.contains(needle),
            TokenBetween { before, after } => text.match_indices(before).any(|(start, _)| {
                let rest = &text[start + before.len()..];
                let token_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let token = &rest[..token_len];
                token.bytes().any(|b| b.is_ascii_digit()) && rest[token_len..].starts_with(after)
            }),
            AnyBetween { before, after } => text
                .find(before)
                .is_some_and(|start| text[start + before.len()..].contains(after)),
        }
    }
}

/// Classifies a run's result; `resumed` says whether the run was asked to resume a session.
pub fn classify(result: &AgentResult, resumed: bool) -> ResultClass {
    let subtype = result.subtype.as_str();
    // 1. A completed run is a success whatever its texts say.
    if !result.is_error && (subtype.is_empty() || subtype.eq_ignore_ascii_case("success")) {
        return ResultClass::Success;
    }
    let texts: Vec<String> = result
        .errors
        .iter()
        .chain([&result.exception, &result.result_text])
        .filter(|t| !t.is_empty())
        .map(|t| t.to_lowercase())
        .collect();
    let find = |stage: Stage| {
        SIGNATURES
            .iter()
            .filter(|s| s.stage == stage)
            .find(|s| texts.iter().any(|t| s.pattern.matches(t)))
            .map(|s| s.class)
    };
    // 2. The SDK said the session is gone or the id is malformed.
    if let Some(class) = find(DeadSession) {
        return class;
    }
    // 3. The run did turns and stopped at a limit: the session is valid.
    let at_limit = LIMIT_SUBTYPES.iter().any(|s| subtype.eq_ignore_ascii_case(s))
        || LIMIT_TERMINAL_REASONS
            .iter()
            .any(|r| result.terminal_reason.eq_ignore_ascii_case(r));
    if at_limit && result.num_turns > 0 {
        return ResultClass::LimitReached;
    }
    // 4. Quota, auth or transient texts.
    if let Some(class) = find(KeepSession) {
        return class;
    }
    // 5. The API's status.
    if let Some((_, class)) = API_STATUS_CLASSES
        .iter()
        .find(|(status, _)| *status == result.api_error_status)
    {
        return *class;
    }
    // 6. A resume that failed before any turn, without a known text: the session is gone.
    if resumed && subtype.eq_ignore_ascii_case(ERROR_DURING_EXECUTION) && result.num_turns == 0 {
        return ResultClass::SessionGone;
    }
    // 7. Anything else.
    ResultClass::UnknownFailure
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
