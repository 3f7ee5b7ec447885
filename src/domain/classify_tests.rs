//! Tests of `classify` and the `SIGNATURES` table (SPEC §4): every row is exercised with a message
//! the SDKs really print, every class is reached from a real result frame, and each step of the
//! matching order has its own test. Inputs are SDK frames written as JSON text, parsed by `frame`.

use serde_json::{Value, json};

use super::*;
use crate::domain::ResultClass::{
    Auth, InvalidSessionId, LimitReached, Quota, SessionGone, Success, Transient, UnknownFailure,
};

/// The id a resume asked for (a Claude transcript that no longer exists on this host).
const DEAD_ID: &str = "3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21";
/// A Codex thread id (UUIDv7).
const THREAD_ID: &str = "0199a213-81c0-7800-8aa1-bbab2a035a53";

/// Parses an SDK frame (JSON text) into an `AgentResult`: `result` is the result text, `exception`
/// the text of a thrown error or exit, `api_error_status` the API's HTTP status; the rest of the
/// frame (`type`, `duration_ms`, `usage`, ...) is ignored, as the service ignores it.
fn frame(json: &str) -> AgentResult {
    parse(&serde_json::from_str(json).expect("the frame is valid JSON"))
}

fn parse(v: &Value) -> AgentResult {
    let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
    let number = |key: &str| u32::try_from(v[key].as_u64().unwrap_or(0)).expect("fits in u32");
    AgentResult {
        is_error: v["is_error"].as_bool().unwrap_or(false),
        subtype: text("subtype"),
        session_id: text("session_id"),
        num_turns: number("num_turns"),
        errors: v["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e.as_str().expect("errors are strings").to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        terminal_reason: text("terminal_reason"),
        api_error_status: number("api_error_status"),
        exception: text("exception"),
        result_text: text("result"),
    }
}

/// One message per row of `SIGNATURES`, as the SDK prints it (mixed case), with the class the spec
/// gives it. A row added to the table without a message here fails
/// `every_signature_row_has_exactly_one_real_message_in_this_test`.
fn signature_messages() -> Vec<(ResultClass, PatternKind, String)> {
    use PatternKind::{AnyBetween, Contains, TokenBetween};
    vec![
        // Claude Code / Agent SDK: the transcript is not here.
        (
            SessionGone,
            Contains("no conversation found"),
            format!("No conversation found with session ID: {DEAD_ID}"),
        ),
        (SessionGone, Contains("no conversations found to resume"), "No conversations found to resume.".into()),
        (SessionGone, Contains("session not found"), format!("Error: Session not found: {DEAD_ID}")),
        (
            SessionGone,
            Contains("no longer on disk"),
            format!("Session {DEAD_ID} is no longer on disk (transcripts older than cleanupPeriodDays are deleted)"),
        ),
        // Codex.
        (
            SessionGone,
            Contains("no rollout found for thread id"),
            format!("Error: thread/resume: thread/resume failed: no rollout found for thread id {THREAD_ID} (code -32600)"),
        ),
        (SessionGone, Contains("thread not loaded"), format!("thread not loaded: {THREAD_ID}")),
        (
            SessionGone,
            TokenBetween {
                before: "thread ",
                after: " not found",
            },
            format!("Error: Thread {THREAD_ID} not found"),
        ),
        (
            SessionGone,
            AnyBetween {
                before: "rollout at ",
                after: " is empty",
            },
            format!("Rollout at /root/.codex/sessions/2026/01/05/rollout-2026-01-05T10-00-00-{THREAD_ID}.jsonl is empty"),
        ),
        // The id itself was refused.
        (
            InvalidSessionId,
            Contains("--resume requires a valid session id"),
            "Error: --resume requires a valid session ID or session title when used with --print. Usage: claude -p --resume <session-id|title>.".into(),
        ),
        (
            InvalidSessionId,
            Contains("is not a uuid and does not match any session title"),
            "Error: --resume <id>. Provided value \"26372108\" is not a UUID and does not match any session title.".into(),
        ),
        (
            InvalidSessionId,
            Contains("must be in uuid format"),
            "Session IDs must be in UUID format (e.g., 550e8400-e29b-41d4-a716-446655440000).".into(),
        ),
        (InvalidSessionId, Contains("invalid session id"), "Error: Invalid session ID. Must be a valid UUID.".into()),
        // Plan limits and credits.
        (Quota, Contains("usage limit reached"), "Claude AI usage limit reached|1700000000".into()),
        (Quota, Contains("session limit"), "You've hit your session limit · resets 8:20pm (Asia/Singapore)".into()),
        (Quota, Contains("hit your limit"), "You've hit your limit · resets 3pm (Europe/Berlin)".into()),
        (
            Quota,
            Contains("credit exhaustion"),
            "Usage paused due to credit exhaustion. Add credits to continue.".into(),
        ),
        // Credentials and billing.
        (
            Auth,
            Contains("authentication_failed"),
            "Error: authentication_failed - OAuth token has expired. Please run /login".into(),
        ),
        (
            Auth,
            Contains("billing_error"),
            "Error: billing_error - Your credit balance is too low to access the Anthropic API.".into(),
        ),
        (Auth, Contains("not logged in"), "Not logged in · Please run /login".into()),
        (Auth, Contains("invalid token"), "stream error: unexpected status 401: {\"detail\":\"Invalid token\"}".into()),
        (
            Auth,
            Contains("unauthorized"),
            "unexpected status 401 Unauthorized: Missing bearer or basic authentication in header".into(),
        ),
        // The API or the network, for now.
        (
            Transient,
            Contains("rate limit"),
            r#"API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 50,000 input tokens per minute."}}"#.into(),
        ),
        (Transient, Contains("too many requests"), "exceeded retry limit, last status: 429 Too Many Requests".into()),
        (
            Transient,
            Contains("overloaded"),
            r#"API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.into(),
        ),
        (Transient, Contains("at capacity"), "Selected model is at capacity. Please try a different model.".into()),
        (Transient, Contains("timeout"), "Error: Stream idle timeout - partial response received".into()),
        (Transient, Contains("econnreset"), "API Error: Connection error. (cause: read ECONNRESET)".into()),
        (Transient, Contains("econnrefused"), "Error: connect ECONNREFUSED 127.0.0.1:443".into()),
        (Transient, Contains("etimedout"), "Error: connect ETIMEDOUT 160.79.104.10:443".into()),
        (Transient, Contains("socket hang up"), "Error: socket hang up".into()),
        (
            Transient,
            Contains("api error: 5"),
            r#"API Error: 500 {"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#.into(),
        ),
    ]
}

/// The row that decides a text: dead-session rows first, then the others, each in table order.
fn deciding_row(text: &str) -> Option<&'static Signature> {
    let text = text.to_lowercase();
    [Stage::DeadSession, Stage::KeepSession]
        .into_iter()
        .flat_map(|stage| SIGNATURES.iter().filter(move |s| s.stage == stage))
        .find(|s| s.pattern.matches(&text))
}

/// The same failure as three real shapes: in a result frame's `errors`, as an API failure rendered
/// as result text, and as the exception of a process that exited without a result frame.
fn failure_in_each_field(message: &str) -> [(&'static str, AgentResult); 3] {
    [
        (
            "errors",
            parse(
                &json!({"type": "result", "subtype": "error_during_execution", "is_error": true,
                "duration_ms": 0, "num_turns": 0, "session_id": "5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23",
                "errors": [message]}),
            ),
        ),
        (
            "result",
            parse(
                &json!({"type": "result", "subtype": "success", "is_error": true, "num_turns": 0,
                "session_id": "5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23", "result": message}),
            ),
        ),
        (
            "exception",
            parse(&json!({"is_error": true,
                "exception": format!("Error: Claude Code process exited with code 1\n{message}")})),
        ),
    ]
}

#[test]
fn every_signature_row_classifies_a_real_message_as_its_class() {
    let messages = signature_messages();
    for row in SIGNATURES {
        let (class, _, message) = messages
            .iter()
            .find(|(_, pattern, _)| *pattern == row.pattern)
            .unwrap_or_else(|| panic!("no message for {row:?}"));
        assert_eq!(row.class, *class, "the table gives {row:?} another class than the spec");
        assert_eq!(
            deciding_row(message),
            Some(row),
            "{message:?} is decided by another row than {row:?}"
        );
        for text in [message.clone(), message.to_uppercase(), message.to_lowercase()] {
            for (field, result) in failure_in_each_field(&text) {
                for resumed in [false, true] {
                    assert_eq!(
                        classify(&result, resumed),
                        *class,
                        "{text:?} in {field}, resumed {resumed}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_signature_row_has_exactly_one_real_message_in_this_test() {
    let messages = signature_messages();
    for row in SIGNATURES {
        let count = messages
            .iter()
            .filter(|(_, pattern, _)| *pattern == row.pattern)
            .count();
        assert_eq!(
            count, 1,
            "{row:?} needs exactly one real message in signature_messages()"
        );
    }
    for (_, pattern, message) in &messages {
        assert!(
            SIGNATURES.iter().any(|row| row.pattern == *pattern),
            "{pattern:?} ({message:?}) is not a row of SIGNATURES any more"
        );
    }
    assert_eq!(messages.len(), SIGNATURES.len());
}

#[test]
fn every_signature_pattern_is_written_in_lowercase() {
    for row in SIGNATURES {
        let parts = match row.pattern {
            PatternKind::Contains(needle) => vec![needle],
            PatternKind::TokenBetween { before, after } | PatternKind::AnyBetween { before, after } => {
                vec![before, after]
            }
        };
        for part in parts {
            assert_eq!(part, part.to_lowercase(), "{row:?} can never match a lowercased text");
        }
    }
}

/// Real frames, whether the run was a resume, and the class the spec gives them.
fn real_frames() -> Vec<(&'static str, bool, &'static str, ResultClass)> {
    vec![
        (
            "a successful resume",
            true,
            r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":48211,"num_turns":3,"result":"Done.","session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","total_cost_usd":0.0412}"#,
            Success,
        ),
        (
            "a completed Codex turn reports no subtype",
            false,
            r#"{"is_error":false,"num_turns":1,"session_id":"0199a213-81c0-7800-8aa1-bbab2a035a53","result":"Applied the patch."}"#,
            Success,
        ),
        (
            "a resume of a transcript missing on this host",
            true,
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"duration_ms":0,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","errors":["No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21"]}"#,
            SessionGone,
        ),
        (
            "the Claude process exited because the transcript is missing",
            true,
            r#"{"is_error":true,"exception":"Error: Claude Code process exited with code 1\nstderr: No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21"}"#,
            SessionGone,
        ),
        (
            "codex exec could not find the thread's rollout",
            true,
            r#"{"is_error":true,"exception":"Error: Codex Exec exited with code 1: Reading prompt from stdin...\nError: thread/resume: thread/resume failed: no rollout found for thread id 0199a213-81c0-7800-8aa1-bbab2a035a53 (code -32600)"}"#,
            SessionGone,
        ),
        (
            "the codex app-server does not know the thread",
            true,
            r#"{"is_error":true,"exception":"Error: thread 0199a213-81c0-7800-8aa1-bbab2a035a53 not found"}"#,
            SessionGone,
        ),
        (
            "the thread's rollout was never written",
            true,
            r#"{"is_error":true,"exception":"Error: rollout at /root/.codex/sessions/2026/01/05/rollout-2026-01-05T10-00-00-0199a213-81c0-7800-8aa1-bbab2a035a53.jsonl is empty"}"#,
            SessionGone,
        ),
        (
            "the codex app-server has not loaded the thread",
            true,
            r#"{"is_error":true,"exception":"thread not loaded: 0199a213-81c0-7800-8aa1-bbab2a035a53"}"#,
            SessionGone,
        ),
        (
            "a resume that failed before its first turn without a known text",
            true,
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"duration_ms":0,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","errors":[]}"#,
            SessionGone,
        ),
        (
            "a short id passed to --resume",
            true,
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"duration_ms":0,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","errors":["Error: --resume requires a valid session ID or session title when used with --print. Usage: claude -p --resume <session-id|title>. Provided value \"26372108\" is not a UUID and does not match any session title."]}"#,
            InvalidSessionId,
        ),
        (
            "a run that used up its turns",
            true,
            r#"{"type":"result","subtype":"error_max_turns","is_error":true,"duration_ms":93512,"num_turns":31,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","terminal_reason":"max_turns"}"#,
            LimitReached,
        ),
        (
            "a run that used up its budget",
            false,
            r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true,"num_turns":7,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","terminal_reason":"budget_exhausted","total_cost_usd":5.02}"#,
            LimitReached,
        ),
        (
            "the plan's usage limit",
            true,
            r#"{"type":"result","subtype":"success","is_error":true,"num_turns":1,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","result":"Claude AI usage limit reached|1700000000"}"#,
            Quota,
        ),
        (
            "a host that is not logged in",
            true,
            r#"{"type":"result","subtype":"success","is_error":true,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","result":"Not logged in · Please run /login"}"#,
            Auth,
        ),
        (
            "an invalid API key with the API's 401",
            true,
            r#"{"type":"result","subtype":"success","is_error":true,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","result":"Invalid API key · Please run /login","api_error_status":401}"#,
            Auth,
        ),
        (
            "an overloaded API",
            true,
            r#"{"type":"result","subtype":"success","is_error":true,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","result":"API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"}"#,
            Transient,
        ),
        (
            "codex hit the rate limit",
            true,
            r#"{"is_error":true,"exception":"Error: Codex Exec exited with code 1: exceeded retry limit, last status: 429 Too Many Requests"}"#,
            Transient,
        ),
        (
            "an invalid API key without a status: no listed signature, so not AUTH",
            true,
            r#"{"type":"result","subtype":"success","is_error":true,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","result":"Invalid API key · Please run /login"}"#,
            UnknownFailure,
        ),
        (
            "a bare exit of a resume (step 6 needs the error_during_execution subtype)",
            true,
            r#"{"is_error":true,"exception":"Error: Claude Code process exited with code 1"}"#,
            UnknownFailure,
        ),
        (
            "a tool failure after some turns",
            true,
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":4,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","errors":["Tool use failed: permission denied"]}"#,
            UnknownFailure,
        ),
    ]
}

#[test]
fn real_sdk_frames_classify_as_the_spec_says() {
    for (name, resumed, json, class) in real_frames() {
        assert_eq!(classify(&frame(json), resumed), class, "{name}");
    }
}

#[test]
fn every_result_class_is_reached_by_a_real_frame() {
    let frames = real_frames();
    for class in ResultClass::ALL {
        assert!(
            frames.iter().any(|(_, _, _, c)| *c == class),
            "no real frame is classified {class:?}"
        );
    }
}

#[test]
fn each_limit_subtype_and_terminal_reason_with_turns_is_limit_reached() {
    let limits = [
        ("error_max_turns", ""),
        ("error_max_budget_usd", ""),
        ("error_max_structured_output_retries", ""),
        ("error_during_execution", "max_turns"),
        ("error_during_execution", "budget_exhausted"),
    ];
    for (subtype, terminal_reason) in limits {
        for num_turns in [1, 12] {
            let result = parse(&json!({"type": "result", "subtype": subtype, "is_error": true,
                "num_turns": num_turns, "terminal_reason": terminal_reason,
                "session_id": "d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95"}));
            for resumed in [false, true] {
                assert_eq!(
                    classify(&result, resumed),
                    LimitReached,
                    "{subtype} {terminal_reason} after {num_turns} turns, resumed {resumed}"
                );
            }
        }
    }
}

#[test]
fn a_limit_subtype_or_terminal_reason_with_zero_turns_is_not_limit_reached() {
    let limits = [
        ("error_max_turns", ""),
        ("error_max_budget_usd", ""),
        ("error_max_structured_output_retries", ""),
        ("error_during_execution", "max_turns"),
        ("error_during_execution", "budget_exhausted"),
    ];
    for (subtype, terminal_reason) in limits {
        let result = parse(&json!({"type": "result", "subtype": subtype, "is_error": true,
            "num_turns": 0, "terminal_reason": terminal_reason,
            "session_id": "5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23"}));
        assert_eq!(classify(&result, false), UnknownFailure, "{subtype} {terminal_reason}");
        assert_ne!(
            classify(&result, true),
            LimitReached,
            "{subtype} {terminal_reason}, resumed"
        );
    }
}

#[test]
fn api_error_statuses_are_transient_or_auth_and_others_unknown() {
    let cases = [
        (429, Transient),
        (500, Transient),
        (502, Transient),
        (503, Transient),
        (529, Transient),
        (401, Auth),
        (403, Auth),
        (400, UnknownFailure),
        (404, UnknownFailure),
        (413, UnknownFailure),
        (0, UnknownFailure),
    ];
    for (status, class) in cases {
        let result = parse(&json!({"type": "result", "subtype": "success", "is_error": true,
            "num_turns": 0, "session_id": "5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23",
            "result": format!("API Error: {status} request failed"), "api_error_status": status}));
        // `API Error: 5xx` is itself a transient text; the status must decide without it too.
        let without_text = AgentResult {
            result_text: "request failed".into(),
            ..result.clone()
        };
        assert_eq!(classify(&without_text, false), class, "status {status}");
        if status / 100 != 5 {
            assert_eq!(classify(&result, false), class, "status {status} with its text");
        }
    }
}

#[test]
fn not_logged_in_is_auth_but_invalid_api_key_matches_no_listed_signature() {
    let not_logged_in = frame(
        r#"{"type":"result","subtype":"success","is_error":true,"num_turns":0,"result":"Not logged in · Please run /login"}"#,
    );
    let invalid_key = frame(
        r#"{"type":"result","subtype":"success","is_error":true,"num_turns":0,"result":"Invalid API key · Please run /login"}"#,
    );
    assert_eq!(classify(&not_logged_in, true), Auth);
    assert_eq!(classify(&invalid_key, true), UnknownFailure);
}

#[test]
fn a_successful_run_whose_texts_mention_no_conversation_found_is_success() {
    let frames = [
        r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","result":"The log says: No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21"}"#,
        r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","errors":["No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21"],"result":"Done."}"#,
        r#"{"is_error":false,"num_turns":1,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","result":"Claude AI usage limit reached|1700000000 was in the file; fixed."}"#,
    ];
    for json in frames {
        assert_eq!(classify(&frame(json), true), Success, "{json}");
    }
}

#[test]
fn a_gone_or_invalid_id_text_wins_over_a_limit_subtype() {
    let gone = frame(
        r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":5,"terminal_reason":"max_turns","session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","errors":["No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21"]}"#,
    );
    let invalid = frame(
        r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true,"num_turns":5,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","errors":["Session IDs must be in UUID format (e.g., 550e8400-e29b-41d4-a716-446655440000)."]}"#,
    );
    assert_eq!(classify(&gone, true), SessionGone);
    assert_eq!(classify(&invalid, true), InvalidSessionId);
}

#[test]
fn a_limit_with_turns_wins_over_transient_quota_and_auth_texts() {
    let texts = [
        r#"API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        "Error: Stream idle timeout - partial response received",
        "Claude AI usage limit reached|1700000000",
        "Not logged in · Please run /login",
    ];
    for text in texts {
        let by_subtype = parse(
            &json!({"type": "result", "subtype": "error_max_turns", "is_error": true,
            "num_turns": 12, "session_id": "d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95", "errors": [text]}),
        );
        let by_reason = parse(&json!({"type": "result", "subtype": "error_during_execution",
            "is_error": true, "num_turns": 12, "terminal_reason": "budget_exhausted",
            "session_id": "d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95", "result": text}));
        assert_eq!(classify(&by_subtype, true), LimitReached, "{text}");
        assert_eq!(classify(&by_reason, true), LimitReached, "{text}");
    }
}

#[test]
fn a_transient_text_on_a_zero_turn_resume_is_transient_not_gone() {
    let result = frame(
        r#"{"type":"result","subtype":"error_during_execution","is_error":true,"duration_ms":0,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","errors":["API Error: Connection error. (cause: read ECONNRESET)"]}"#,
    );
    assert_eq!(classify(&result, true), Transient);
}

#[test]
fn quota_wins_over_auth_and_auth_over_transient_in_table_order_not_field_order() {
    let cases = [
        (
            json!({"errors": ["Not logged in · Please run /login"], "result": "Claude AI usage limit reached|1700000000"}),
            Quota,
        ),
        (
            json!({"errors": ["Error: socket hang up"], "exception": "Error: Claude Code process exited with code 1\nNot logged in · Please run /login"}),
            Auth,
        ),
        (
            json!({"result": "API Error: 429 Too Many Requests; You've hit your limit · resets 3pm"}),
            Quota,
        ),
        (
            json!({"result": "API Error: 503 upstream timeout, then: Not logged in · Please run /login"}),
            Auth,
        ),
    ];
    for (mut value, class) in cases {
        value["type"] = json!("result");
        value["subtype"] = json!("success");
        value["is_error"] = json!(true);
        assert_eq!(classify(&parse(&value), true), class, "{value}");
    }
}

#[test]
fn a_text_of_step_4_wins_over_the_api_status() {
    let cases = [
        (
            401,
            r#"API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            Transient,
        ),
        (529, "Not logged in · Please run /login", Auth),
        (503, "Claude AI usage limit reached|1700000000", Quota),
        (429, "You've hit your limit · resets 3pm (Europe/Berlin)", Quota),
    ];
    for (status, text, class) in cases {
        let result = parse(&json!({"type": "result", "subtype": "success", "is_error": true,
            "num_turns": 0, "result": text, "api_error_status": status}));
        assert_eq!(classify(&result, true), class, "{status} {text}");
    }
}

#[test]
fn an_api_status_wins_over_the_zero_turn_resume_structure() {
    for (status, class) in [
        (503, Transient),
        (529, Transient),
        (429, Transient),
        (401, Auth),
        (403, Auth),
    ] {
        let result = parse(&json!({"type": "result", "subtype": "error_during_execution",
            "is_error": true, "duration_ms": 0, "num_turns": 0, "errors": [],
            "session_id": "5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23", "api_error_status": status}));
        assert_eq!(classify(&result, true), class, "status {status}");
    }
}

#[test]
fn the_zero_turn_structure_needs_a_resume_zero_turns_and_error_during_execution() {
    let gone = json!({"type": "result", "subtype": "error_during_execution", "is_error": true,
        "duration_ms": 0, "num_turns": 0, "session_id": "5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23",
        "errors": ["Error: Claude Code process exited with code 1"]});
    assert_eq!(classify(&parse(&gone), true), SessionGone, "the structure itself");
    let variants = [
        ("a fresh run", false, json!({})),
        ("one turn done", true, json!({"num_turns": 1})),
        ("subtype success with is_error", true, json!({"subtype": "success"})),
        ("no subtype", true, json!({"subtype": ""})),
        ("another error subtype", true, json!({"subtype": "error_max_turns"})),
    ];
    for (name, resumed, change) in variants {
        let mut value = gone.clone();
        for (key, v) in change.as_object().expect("an object") {
            value[key] = v.clone();
        }
        assert_eq!(classify(&parse(&value), resumed), UnknownFailure, "{name}");
    }
}

#[test]
fn matching_is_case_insensitive() {
    let cases = [
        ("NO CONVERSATION FOUND WITH SESSION ID: 3F2C9A51", SessionGone),
        ("no conversation found with session id: 3f2c9a51", SessionGone),
        ("No Conversation Found With Session Id", SessionGone),
        ("THREAD 0199A213-81C0 NOT FOUND", SessionGone),
        ("ROLLOUT AT /ROOT/.CODEX/X.JSONL IS EMPTY", SessionGone),
        (
            "PROVIDED VALUE \"X\" IS NOT A UUID AND DOES NOT MATCH ANY SESSION TITLE",
            InvalidSessionId,
        ),
        ("CLAUDE AI USAGE LIMIT REACHED|1700000000", Quota),
        ("NOT LOGGED IN · PLEASE RUN /LOGIN", Auth),
        ("read econnreset", Transient),
        ("api error: 502 bad gateway", Transient),
    ];
    for (text, class) in cases {
        let result = parse(&json!({"type": "result", "subtype": "error_during_execution",
            "is_error": true, "num_turns": 0, "errors": [text]}));
        assert_eq!(classify(&result, false), class, "{text}");
    }
}

#[test]
fn a_signature_is_found_in_errors_exception_and_result_text_each() {
    let texts = [
        (
            "No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21",
            SessionGone,
        ),
        (
            "Error: --resume requires a valid session ID or session title when used with --print.",
            InvalidSessionId,
        ),
        ("Claude AI usage limit reached|1700000000", Quota),
        ("Not logged in · Please run /login", Auth),
        ("Error: connect ETIMEDOUT 160.79.104.10:443", Transient),
    ];
    for (text, class) in texts {
        let placements = [
            ("first error", json!({"errors": [text]})),
            (
                "a later error",
                json!({"errors": ["Error: Claude Code process exited with code 1", text]}),
            ),
            (
                "exception",
                json!({"exception": format!("Error: Claude Code process exited with code 1\n{text}")}),
            ),
            ("result text", json!({"result": text})),
        ];
        for (field, mut value) in placements {
            value["type"] = json!("result");
            value["subtype"] = json!("error_during_execution");
            value["is_error"] = json!(true);
            assert_eq!(classify(&parse(&value), false), class, "{text:?} in {field}");
        }
    }
}

#[test]
fn thread_id_not_found_needs_a_whitespace_free_id_between() {
    let cases = [
        (
            "Error: thread 0199a213-81c0-7800-8aa1-bbab2a035a53 not found",
            SessionGone,
        ),
        ("app-server error -32600: Thread thr_1 Not Found", SessionGone),
        (
            "codex thread resume failed: thread 0199a213-81c0-7800-8aa1-bbab2a035a53 not found",
            SessionGone,
        ),
        ("thread 0199a213 (code -32600) not found", UnknownFailure),
        ("thread  not found", UnknownFailure),
        ("thread not found", UnknownFailure),
        ("thread 0199a213 is not found", UnknownFailure),
    ];
    for (text, class) in cases {
        let result = parse(&json!({"type": "result", "subtype": "error_during_execution",
            "is_error": true, "num_turns": 0, "errors": [text]}));
        assert_eq!(classify(&result, false), class, "{text:?}");
    }
}

#[test]
fn a_sentence_saying_the_thread_was_not_found_is_not_a_thread_id_signature() {
    for text in [
        "Error: the thread was not found",
        "The requested thread is not found",
        "Background thread has not found any work",
    ] {
        let result = parse(&json!({"type": "result", "subtype": "error_during_execution",
            "is_error": true, "num_turns": 0, "errors": [text]}));
        assert_eq!(classify(&result, false), UnknownFailure, "{text:?}");
    }
}

#[test]
fn rollout_at_path_is_empty_allows_a_path_with_spaces() {
    let cases = [
        (
            "Error: rollout at /root/.codex/sessions/2026/01/05/rollout-2026-01-05T10-00-00-0199a213.jsonl is empty",
            SessionGone,
        ),
        (
            "rollout at /home/jane doe/My Projects/.codex/sessions/2026/01/05/rollout 1.jsonl is empty",
            SessionGone,
        ),
        (
            r"Rollout At C:\Users\Jane Doe\.codex\sessions\rollout.jsonl Is Empty",
            SessionGone,
        ),
        (
            "the queue is empty; rollout at /root/.codex/x.jsonl was written",
            UnknownFailure,
        ),
        (
            "rollout at /root/.codex/x.jsonl does not start with session metadata",
            UnknownFailure,
        ),
    ];
    for (text, class) in cases {
        let result = parse(&json!({"type": "result", "subtype": "error_during_execution",
            "is_error": true, "num_turns": 0, "errors": [text]}));
        assert_eq!(classify(&result, false), class, "{text:?}");
    }
}
