//! Conversions between the protobuf messages and the domain types, in one place. Decoding
//! validates every field and fails with `INVALID_ARGUMENT` naming it; encoding cannot fail.

use chrono::{DateTime, Utc};

use crate::domain::{
    self, Action, AgentResult, Binding, Decision, FieldError, FreshReason, MAX_SESSION_ID_BYTES, ReportOutcome,
    ResultClass, SessionKey, check_name, check_text,
};
use crate::proto;
use crate::service::{GetAnswer, Report, ServiceError, SweepSummary};
use crate::sweeper::SweepScope;

/// Longest accepted report id (a dispatch id, a UUID, a hash).
const MAX_REPORT_ID_BYTES: usize = 128;

pub fn session_key(key: Option<proto::SessionKey>) -> Result<SessionKey, ServiceError> {
    let key = key.ok_or_else(|| FieldError::new("key", "is required"))?;
    Ok(SessionKey::new(&key.namespace, &key.agent, &key.conversation)?)
}

pub fn binding(binding: Option<proto::Binding>) -> Result<Binding, ServiceError> {
    let b = binding.unwrap_or_default();
    let binding = Binding {
        provider: b.provider,
        host: b.host,
        config_dir: b.config_dir,
        cwd: b.cwd,
    };
    binding.validate()?;
    Ok(binding)
}

pub fn agent_result(result: Option<proto::AgentResult>) -> Result<AgentResult, ServiceError> {
    let r = result.ok_or_else(|| FieldError::new("result", "is required"))?;
    Ok(AgentResult {
        is_error: r.is_error,
        subtype: r.subtype,
        session_id: r.session_id,
        num_turns: r.num_turns,
        errors: r.errors,
        terminal_reason: r.terminal_reason,
        api_error_status: r.api_error_status,
        exception: r.exception,
        result_text: r.result_text,
    })
}

pub fn report(request: proto::ReportResultRequest) -> Result<Report, ServiceError> {
    let key = session_key(request.key)?;
    if !request.resumed_session_id.is_empty() {
        check_text("resumed_session_id", &request.resumed_session_id, MAX_SESSION_ID_BYTES)?;
    }
    if !request.report_id.is_empty() {
        check_text("report_id", &request.report_id, MAX_REPORT_ID_BYTES)?;
    }
    Ok(Report {
        key,
        resumed_session_id: request.resumed_session_id,
        binding: binding(request.binding)?,
        result: agent_result(request.result)?,
        report_id: Some(request.report_id).filter(|id| !id.is_empty()),
    })
}

pub fn sweep_scope(request: &proto::SweepRequest) -> Result<SweepScope, ServiceError> {
    let namespace = Some(request.namespace.clone()).filter(|n| !n.is_empty());
    let agent = Some(request.agent.clone()).filter(|a| !a.is_empty());
    if let Some(namespace) = &namespace {
        check_name("namespace", namespace)?;
    }
    if let Some(agent) = &agent {
        check_name("agent", agent)?;
    }
    Ok(SweepScope { namespace, agent })
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn proto_binding(b: domain::Binding) -> proto::Binding {
    proto::Binding {
        provider: b.provider,
        host: b.host,
        config_dir: b.config_dir,
        cwd: b.cwd,
    }
}

pub fn get_response(answer: GetAnswer) -> proto::GetResponse {
    let (decision, fresh_reason) = match answer.decision {
        Decision::Resume => (proto::Decision::Resume, proto::FreshReason::Unspecified),
        Decision::StartFresh(reason) => (
            proto::Decision::StartFresh,
            match reason {
                FreshReason::NoSession => proto::FreshReason::NoSession,
                FreshReason::Expired => proto::FreshReason::Expired,
                FreshReason::BindingMismatch => proto::FreshReason::BindingMismatch,
            },
        ),
    };
    let stored = answer.stored;
    proto::GetResponse {
        decision: decision.into(),
        session_id: answer.session_id.unwrap_or_default(),
        fresh_reason: fresh_reason.into(),
        last_used_at: stored.as_ref().map(|s| timestamp(s.last_used_at)),
        expires_at: stored.as_ref().map(|s| timestamp(s.expires_at)),
        binding: stored.map(|s| proto_binding(s.binding)),
    }
}

pub fn result_class(class: ResultClass) -> proto::ResultClass {
    match class {
        ResultClass::Success => proto::ResultClass::Success,
        ResultClass::SessionGone => proto::ResultClass::SessionGone,
        ResultClass::InvalidSessionId => proto::ResultClass::InvalidSessionId,
        ResultClass::LimitReached => proto::ResultClass::LimitReached,
        ResultClass::Transient => proto::ResultClass::Transient,
        ResultClass::Quota => proto::ResultClass::Quota,
        ResultClass::Auth => proto::ResultClass::Auth,
        ResultClass::UnknownFailure => proto::ResultClass::UnknownFailure,
    }
}

pub fn action(action: Action) -> proto::Action {
    match action {
        Action::Stored => proto::Action::Stored,
        Action::Cleared => proto::Action::Cleared,
        Action::Kept => proto::Action::Kept,
        Action::Superseded => proto::Action::Superseded,
    }
}

pub fn report_response(outcome: ReportOutcome) -> proto::ReportResultResponse {
    proto::ReportResultResponse {
        result_class: result_class(outcome.class).into(),
        action: action(outcome.action).into(),
        session_id: outcome.session_id,
        retry_fresh: outcome.retry_fresh,
    }
}

pub fn sweep_response(summary: SweepSummary) -> proto::SweepResponse {
    proto::SweepResponse {
        deleted: summary.deleted,
        took: Some(prost_types::Duration {
            seconds: i64::try_from(summary.took.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(summary.took.subsec_nanos()).unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: ServiceError) -> &'static str {
        match err {
            ServiceError::InvalidArgument(f) => f.field,
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    fn valid_request() -> proto::ReportResultRequest {
        proto::ReportResultRequest {
            key: Some(proto::SessionKey {
                namespace: String::new(),
                agent: "coder".into(),
                conversation: "c1".into(),
            }),
            result: Some(proto::AgentResult::default()),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_key_or_result_is_named() {
        assert_eq!(field_of(session_key(None).unwrap_err()), "key");
        let mut request = valid_request();
        request.result = None;
        assert_eq!(field_of(report(request).unwrap_err()), "result");
    }

    #[test]
    fn report_ids_resumed_ids_and_bindings_are_checked() {
        let mut request = valid_request();
        request.report_id = "r".repeat(129);
        assert_eq!(field_of(report(request).unwrap_err()), "report_id");
        let mut request = valid_request();
        request.resumed_session_id = "bad\u{0}id".into();
        assert_eq!(field_of(report(request).unwrap_err()), "resumed_session_id");
        let mut request = valid_request();
        request.binding = Some(proto::Binding {
            cwd: "/work\n".into(),
            ..Default::default()
        });
        assert_eq!(field_of(report(request).unwrap_err()), "binding.cwd");
    }

    #[test]
    fn sweep_filters_are_names() {
        let request = proto::SweepRequest {
            namespace: "a b".into(),
            ..Default::default()
        };
        assert_eq!(field_of(sweep_scope(&request).unwrap_err()), "namespace");
        let scope = sweep_scope(&proto::SweepRequest::default()).unwrap();
        assert_eq!(scope, SweepScope::default());
    }
}
