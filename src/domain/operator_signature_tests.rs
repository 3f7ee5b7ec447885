//! Operator-added signatures (`[[policy.signatures]]`): read, validated, and tried first within
//! their step, never before step 1.

use super::*;
use crate::domain::ResultClass::{LimitReached, Success, UnknownFailure};

fn failure(text: &str, num_turns: u32) -> AgentResult {
    AgentResult {
        is_error: true,
        subtype: "error_during_execution".into(),
        num_turns,
        errors: vec![text.into()],
        ..AgentResult::default()
    }
}

fn row(class: &str, contains: &str, provider: &str) -> Signature {
    operator_signature(class, contains, provider).unwrap()
}

#[test]
fn an_operator_row_is_lowercased_sourced_and_validated() {
    let signature = row("transient", "  Gateway HICCUP ", "Claude");
    assert_eq!(signature.class, Transient);
    assert_eq!(signature.pattern, PatternKind::Contains("gateway hiccup".into()));
    assert_eq!(signature.provider, "claude");
    assert_eq!(signature.source, OPERATOR_SOURCE);
    for class in ["session_gone", "invalid_session_id", "quota", "auth", "transient"] {
        assert!(operator_signature(class, "x", "").is_ok(), "{class}");
    }
    for class in ["success", "limit_reached", "unknown_failure", "TRANSIENT", ""] {
        let err = operator_signature(class, "x", "").unwrap_err();
        assert!(err.contains("is not one of"), "{class}: {err}");
    }
    assert_eq!(operator_signature("quota", " ", "").unwrap_err(), "contains is empty");
}

#[test]
fn an_unknown_text_becomes_the_operators_class() {
    let frame = failure("Acme egress proxy refused the upstream connection", 0);
    assert_eq!(explain_with(&frame, false, "claude", &[]).class, UnknownFailure);
    let rows = [row("transient", "acme egress proxy", "")];
    let explained = explain_with(&frame, false, "claude", &rows);
    assert_eq!((explained.class, explained.step), (Transient, 4));
    assert_eq!(explained.signature, Some(&rows[0]));
}

#[test]
fn a_completed_run_is_a_success_whatever_the_operators_rows_say() {
    let frame = AgentResult {
        subtype: "success".into(),
        session_id: "s".into(),
        num_turns: 3,
        result_text: "Fixed the workspace wiped error".into(),
        ..AgentResult::default()
    };
    let rows = [row("session_gone", "workspace wiped", "")];
    assert_eq!(explain_with(&frame, true, "", &rows).class, Success);
}

#[test]
fn operator_rows_come_first_within_their_step() {
    // Step 4: the built-in table would say QUOTA (quota wins over transient among built-in rows).
    let frame = failure("Claude AI usage limit reached behind the Acme gateway", 0);
    assert_eq!(explain_with(&frame, true, "claude", &[]).class, Quota);
    let rows = [row("transient", "acme gateway", "")];
    assert_eq!(explain_with(&frame, true, "claude", &rows).class, Transient);

    // Step 2: an operator's dead-session row wins over a built-in one.
    let frame = failure("No conversation found with session ID: abc (tenant moved)", 0);
    let rows = [row("invalid_session_id", "tenant moved", "")];
    let explained = explain_with(&frame, true, "claude", &rows);
    assert_eq!((explained.class, explained.step), (InvalidSessionId, 2));

    // An operator's keep-session row does not jump ahead of step 2 or step 3.
    let rows = [row("transient", "no conversation found", "")];
    assert_eq!(explain_with(&frame, true, "claude", &rows).class, SessionGone);
    let limit = AgentResult {
        subtype: "error_max_turns".into(),
        ..failure("stopped; acme gateway busy", 4)
    };
    let rows = [row("transient", "acme gateway", "")];
    assert_eq!(explain_with(&limit, true, "claude", &rows).class, LimitReached);
}

#[test]
fn an_operator_row_keeps_step_6_from_clearing_a_valid_session() {
    let frame = failure("Failed to resume session: upstream mesh reset", 0);
    assert_eq!(explain_with(&frame, true, "claude", &[]).class, SessionGone);
    let rows = [row("transient", "upstream mesh reset", "")];
    assert_eq!(explain_with(&frame, true, "claude", &rows).class, Transient);
}

#[test]
fn an_operator_row_of_one_provider_is_not_tried_for_another() {
    let frame = failure("Acme egress proxy refused", 0);
    let rows = [row("transient", "acme egress proxy", "codex")];
    assert_eq!(explain_with(&frame, false, "claude", &rows).class, UnknownFailure);
    assert_eq!(explain_with(&frame, false, "codex", &rows).class, Transient);
    assert_eq!(explain_with(&frame, false, "", &rows).class, Transient);
}
