//! The matching order of `classify`, one test per step and per tie: limits, API statuses, texts in
//! any field and any case, the zero-turn resume structure, and what a successful run may quote.

use super::*;

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
                    classify(&result, resumed, ""),
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
        assert_eq!(
            classify(&result, false, ""),
            UnknownFailure,
            "{subtype} {terminal_reason}"
        );
        assert_ne!(
            classify(&result, true, ""),
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
        assert_eq!(classify(&without_text, false, ""), class, "status {status}");
        if status / 100 != 5 {
            assert_eq!(classify(&result, false, ""), class, "status {status} with its text");
        }
    }
}

#[test]
fn not_logged_in_and_invalid_api_key_are_both_auth() {
    let not_logged_in = frame(
        r#"{"type":"result","subtype":"success","is_error":true,"num_turns":0,"result":"Not logged in · Please run /login"}"#,
    );
    let invalid_key = frame(
        r#"{"type":"result","subtype":"success","is_error":true,"num_turns":0,"result":"Invalid API key · Please run /login"}"#,
    );
    for provider in ["", "claude"] {
        assert_eq!(classify(&not_logged_in, true, provider), Auth);
        assert_eq!(classify(&invalid_key, true, provider), Auth);
    }
}

#[test]
fn a_successful_run_whose_texts_mention_no_conversation_found_is_success() {
    let frames = [
        r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","result":"The log says: No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21"}"#,
        r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","errors":["No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21"],"result":"Done."}"#,
        r#"{"is_error":false,"num_turns":1,"session_id":"d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95","result":"Claude AI usage limit reached|1700000000 was in the file; fixed."}"#,
    ];
    for json in frames {
        assert_eq!(classify(&frame(json), true, ""), Success, "{json}");
    }
}

#[test]
fn a_gone_or_invalid_id_text_wins_over_a_limit_subtype() {
    let gone = frame(
        r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":5,"terminal_reason":"max_turns","session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","errors":["No conversation found with session ID: 3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21"]}"#,
    );
    let invalid = frame(
        r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true,"num_turns":5,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","errors":["Error: --resume requires a valid session ID when used with --print. Usage: claude -p --resume <session-id>. Session IDs must be in UUID format (e.g., 550e8400-e29b-41d4-a716-446655440000). Provided value \"26372108\" is not a valid UUID"]}"#,
    );
    assert_eq!(classify(&gone, true, ""), SessionGone);
    assert_eq!(classify(&invalid, true, ""), InvalidSessionId);
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
        assert_eq!(classify(&by_subtype, true, ""), LimitReached, "{text}");
        assert_eq!(classify(&by_reason, true, ""), LimitReached, "{text}");
    }
}

#[test]
fn a_transient_text_on_a_zero_turn_resume_is_transient_not_gone() {
    let result = frame(
        r#"{"type":"result","subtype":"error_during_execution","is_error":true,"duration_ms":0,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","errors":["API Error: Connection error. (cause: read ECONNRESET)"]}"#,
    );
    assert_eq!(classify(&result, true, ""), Transient);
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
        assert_eq!(classify(&parse(&value), true, ""), class, "{value}");
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
        assert_eq!(classify(&result, true, ""), class, "{status} {text}");
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
        assert_eq!(classify(&result, true, ""), class, "status {status}");
    }
}

#[test]
fn the_zero_turn_structure_needs_a_resume_zero_turns_and_error_during_execution() {
    let gone = json!({"type": "result", "subtype": "error_during_execution", "is_error": true,
        "duration_ms": 0, "num_turns": 0, "session_id": "5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23",
        "errors": ["Error: Claude Code process exited with code 1"]});
    assert_eq!(classify(&parse(&gone), true, ""), SessionGone, "the structure itself");
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
        assert_eq!(classify(&parse(&value), resumed, ""), UnknownFailure, "{name}");
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
            "ERROR: --RESUME REQUIRES A VALID SESSION ID OR SESSION TITLE WHEN USED WITH --PRINT. PROVIDED VALUE \"X\" IS NOT A UUID AND DOES NOT MATCH ANY SESSION TITLE.",
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
        assert_eq!(classify(&result, false, ""), class, "{text}");
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
            assert_eq!(classify(&parse(&value), false, ""), class, "{text:?} in {field}");
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
        assert_eq!(classify(&result, false, ""), class, "{text:?}");
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
        assert_eq!(classify(&result, false, ""), UnknownFailure, "{text:?}");
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
        assert_eq!(classify(&result, false, ""), class, "{text:?}");
    }
}

#[test]
fn a_successful_run_whose_answer_quotes_every_kind_of_error_text_is_success() {
    // The answer explains a log full of failures; the run itself completed.
    let quoted = signature_frames()
        .iter()
        .map(|f| frame(&f.frame))
        .flat_map(|r| r.errors.into_iter().chain([r.exception, r.result_text]))
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let result = parse(
        &json!({"type": "result", "subtype": "success", "is_error": false, "num_turns": 3,
        "session_id": "d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95", "terminal_reason": "completed",
        "result": format!("I read the log. It said:\n{quoted}\nAll fixed now.")}),
    );
    for provider in ["", "claude", "codex", "gemini"] {
        assert_eq!(explain(&result, true, provider).class, Success, "{provider}");
    }
    // The same texts in a failed run are not a success: SUCCESS is decided by structure alone.
    let failed = AgentResult {
        is_error: true,
        ..result
    };
    assert_ne!(classify(&failed, true, ""), Success);
}

#[test]
fn an_api_error_rendered_into_the_result_text_with_subtype_success_is_not_a_success() {
    // Claude Code 2.1.332: API failures end as subtype "success" with is_error true.
    let cases = [
        ("Repeated 529 Overloaded errors", 529, Transient),
        ("Credit balance is too low", 400, Auth),
        (
            "You've hit your session limit · resets 8:20pm (Asia/Singapore)",
            429,
            Quota,
        ),
        (
            r#"API Error: 500 {"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
            500,
            Transient,
        ),
        ("API Error: something a gateway said", 503, Transient),
        ("API Error: something a gateway said", 401, Auth),
    ];
    for (text, status, class) in cases {
        let result = parse(
            &json!({"type": "result", "subtype": "success", "is_error": true, "num_turns": 1,
            "session_id": DEAD_ID, "terminal_reason": "api_error", "api_error_status": status, "result": text}),
        );
        assert_eq!(classify(&result, true, "claude"), class, "{text}");
    }
}

#[test]
fn a_usage_limit_message_with_the_word_session_is_quota_not_gone() {
    for text in [
        "You've hit your session limit · resets 8:20pm (Asia/Singapore)",
        "Usage limit reached for this session; resets at 5pm",
    ] {
        let result = parse(
            &json!({"type": "result", "subtype": "error_during_execution", "is_error": true,
            "num_turns": 0, "session_id": DEAD_ID, "errors": [text]}),
        );
        assert_eq!(classify(&result, true, "claude"), Quota, "{text}");
        assert_eq!(classify(&result, true, ""), Quota, "{text}");
    }
}

#[test]
fn quota_auth_and_transient_failures_of_a_resume_are_never_counted_toward_the_unknown_failure_limit() {
    use crate::domain::{Binding, Policy, ReportPlan, RowDecision, RowEffect, SessionRow, plan_report};
    let policy = Policy {
        unknown_failure_limit: 1,
        ..Policy::default()
    };
    let now = chrono::Utc::now();
    let stored = SessionRow {
        session_id: DEAD_ID.into(),
        binding: Binding::default(),
        last_used_at: now,
        failure_count: 0,
    };
    let decide = |class, result: &AgentResult| -> RowDecision {
        match plan_report(class, result, DEAD_ID, &Binding::default(), now, &policy).expect("a failure plans") {
            ReportPlan::OnRow(report) => report.decide(Some(&stored)),
            ReportPlan::Store(_) => panic!("{class:?} was planned as a store"),
        }
    };
    for f in signature_frames() {
        let result = frame(&f.frame);
        let class = classify(&result, true, &f.provider);
        if !matches!(class, Quota | Auth | Transient) {
            continue;
        }
        let zero_turns = AgentResult { num_turns: 0, ..result };
        let decision = decide(class, &zero_turns);
        assert_eq!(
            decision.effect,
            RowEffect::None,
            "{}: {class:?} must not count or clear",
            f.name
        );
        assert_eq!(decision.outcome.session_id, DEAD_ID, "{}", f.name);
    }
    // The same zero-turn resume, unexplained, is counted (and with a limit of 1, cleared).
    let unknown = frame(r#"{"is_error":true,"exception":"Error: Claude Code process exited with code 1"}"#);
    let class = classify(&unknown, true, "claude");
    assert_eq!(class, UnknownFailure);
    assert_ne!(decide(class, &unknown).effect, RowEffect::None);
}
