//! Real SDK frames, one per situation SPEC §4 names, classified as the spec says; every class is
//! reached by one.

use super::*;

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
            "an invalid API key without a status is still AUTH (Claude Code's own text)",
            true,
            r#"{"type":"result","subtype":"success","is_error":true,"num_turns":0,"session_id":"5b0d7c1e-3a9f-4d2b-8e6c-1f4a7b9c0d23","result":"Invalid API key · Please run /login"}"#,
            Auth,
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
        assert_eq!(classify(&frame(json), resumed, ""), class, "{name}");
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
