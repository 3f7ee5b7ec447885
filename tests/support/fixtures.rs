//! The SDK result frames, keys, bindings and requests every test binary builds from (the gRPC API
//! tests, the reliability tests and the store contract), written once. Frames are the protobuf
//! `AgentResult` a client sends; a test of the store turns one into the domain's with
//! [`domain_result`], the conversion the service itself uses. Builders only build: assertions stay
//! in the tests.

use sessionkeeper::domain::{AgentResult, Binding, SessionKey};
use sessionkeeper::proto;
use sessionkeeper::server::convert;

/// A key of the `coder` agent in namespace `acme`.
pub fn key(conversation: &str) -> proto::SessionKey {
    key_in("acme", conversation)
}

/// A key of the `coder` agent in `namespace`.
pub fn key_in(namespace: &str, conversation: &str) -> proto::SessionKey {
    proto::SessionKey {
        namespace: namespace.into(),
        agent: "coder".into(),
        conversation: conversation.into(),
    }
}

pub fn domain_key(key: &proto::SessionKey) -> SessionKey {
    SessionKey::new(&key.namespace, &key.agent, &key.conversation).expect("a valid key")
}

/// Where a Claude run on `host` keeps its transcripts.
pub fn pod(host: &str) -> proto::Binding {
    proto::Binding {
        provider: "claude".into(),
        host: host.into(),
        config_dir: "/home/agent/.claude".into(),
        cwd: "/work/repo".into(),
    }
}

pub fn domain_binding(b: &proto::Binding) -> Binding {
    Binding {
        provider: b.provider.clone(),
        host: b.host.clone(),
        config_dir: b.config_dir.clone(),
        cwd: b.cwd.clone(),
    }
}

/// A successful Claude result frame.
pub fn success(session_id: &str, num_turns: u32) -> proto::AgentResult {
    proto::AgentResult {
        is_error: false,
        subtype: "success".into(),
        session_id: session_id.into(),
        num_turns,
        result_text: "Done.".into(),
        ..Default::default()
    }
}

/// The exact frame Claude Code answers when the resumed transcript is missing:
/// `{"is_error":true,"subtype":"error_during_execution","num_turns":0,
///   "errors":["No conversation found with session ID: <id>"],"session_id":"<new id>"}`.
/// Its `session_id` (`frame_session_id`) is a brand-new id with no transcript: never to be stored.
pub fn no_conversation_found(resumed: &str, frame_session_id: &str) -> proto::AgentResult {
    proto::AgentResult {
        is_error: true,
        subtype: "error_during_execution".into(),
        session_id: frame_session_id.into(),
        num_turns: 0,
        errors: vec![format!("No conversation found with session ID: {resumed}")],
        ..Default::default()
    }
}

/// A resume that failed before its first turn, for no reason the signatures know.
pub fn unknown_zero_turn_failure() -> proto::AgentResult {
    proto::AgentResult {
        is_error: true,
        subtype: "error".into(),
        result_text: "the agent process exited with status 3".into(),
        ..Default::default()
    }
}

/// A run that failed before its first turn with `error` in its result frame's `errors`, the way
/// Claude Code reports a failure during execution (a text the built-in signatures may not know).
pub fn zero_turn_failure_with(error: &str) -> proto::AgentResult {
    proto::AgentResult {
        is_error: true,
        subtype: "error_during_execution".into(),
        num_turns: 0,
        errors: vec![error.into()],
        ..Default::default()
    }
}

/// The Claude Code process exited with no result frame and no known text; the adapter reports only
/// the exception: `{"is_error":true,"exception":"Error: Claude Code process exited with code 1"}`.
pub fn exited_without_a_result() -> proto::AgentResult {
    proto::AgentResult {
        is_error: true,
        num_turns: 0,
        exception: "Error: Claude Code process exited with code 1".into(),
        ..Default::default()
    }
}

/// An overloaded API after two turns: transient.
pub fn transient_failure() -> proto::AgentResult {
    proto::AgentResult {
        is_error: true,
        subtype: "error_during_execution".into(),
        num_turns: 2,
        errors: vec!["API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}".into()],
        ..Default::default()
    }
}

/// The domain's result for a frame, converted as the service converts it.
pub fn domain_result(frame: proto::AgentResult) -> AgentResult {
    convert::agent_result(Some(frame)).expect("a valid frame")
}

pub fn get_request(key: &proto::SessionKey) -> proto::GetRequest {
    proto::GetRequest {
        key: Some(key.clone()),
        binding: None,
        ..Default::default()
    }
}

/// A report of a run on pod `a`.
pub fn report_request(
    key: &proto::SessionKey,
    resumed: &str,
    result: proto::AgentResult,
    report_id: &str,
) -> proto::ReportResultRequest {
    proto::ReportResultRequest {
        key: Some(key.clone()),
        resumed_session_id: resumed.into(),
        binding: Some(pod("a")),
        result: Some(result),
        report_id: report_id.into(),
    }
}
