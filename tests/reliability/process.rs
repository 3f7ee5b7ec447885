//! Request builders and helpers of the reliability tests; the process runner and the probes are
//! the shared ones in `tests/support/process.rs`.

use std::time::Duration;

use sessionkeeper::proto;

pub use crate::support::process::*;

pub fn key(namespace: &str, conversation: &str) -> proto::SessionKey {
    proto::SessionKey {
        namespace: namespace.into(),
        agent: "coder".into(),
        conversation: conversation.into(),
    }
}

pub fn get_request(key: &proto::SessionKey) -> proto::GetRequest {
    proto::GetRequest {
        key: Some(key.clone()),
        binding: None,
    }
}

/// A successful Claude result frame.
pub fn success(session_id: &str) -> proto::AgentResult {
    proto::AgentResult {
        is_error: false,
        subtype: "success".into(),
        session_id: session_id.into(),
        num_turns: 3,
        result_text: "Done.".into(),
        ..Default::default()
    }
}

/// The frame Claude Code answers when the resumed transcript is missing (its session_id is a
/// brand-new id with no transcript, which must never be stored).
pub fn no_conversation_found(resumed: &str) -> proto::AgentResult {
    proto::AgentResult {
        is_error: true,
        subtype: "error_during_execution".into(),
        session_id: format!("{resumed}-failed-frame"),
        num_turns: 0,
        errors: vec![format!("No conversation found with session ID: {resumed}")],
        ..Default::default()
    }
}

pub fn report_request(
    key: &proto::SessionKey,
    resumed: &str,
    result: proto::AgentResult,
    report_id: &str,
) -> proto::ReportResultRequest {
    proto::ReportResultRequest {
        key: Some(key.clone()),
        resumed_session_id: resumed.into(),
        binding: Some(proto::Binding {
            provider: "claude".into(),
            host: "pod-a".into(),
            config_dir: "/home/agent/.claude".into(),
            cwd: "/work/repo".into(),
        }),
        result: Some(result),
        report_id: report_id.into(),
    }
}

/// Milliseconds with one decimal, for the measurements the tests print.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
