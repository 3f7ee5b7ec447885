//! Conversions between the protobuf messages and the domain types, in one place. Decoding
//! validates every field and fails with `INVALID_ARGUMENT` naming it; encoding cannot fail.

use crate::domain::{HistoryEvent, HistoryKind, ResumeFailureCause, Tombstone, TombstoneReason};
use chrono::{DateTime, Utc};

use crate::domain::{
    self, Action, AgentResult, Binding, DEFAULT_NAMESPACE, Decision, Entry, FieldError, FreshReason,
    MAX_PROJECT_KEY_BYTES, MAX_SESSION_ID_BYTES, MAX_TRANSCRIPT_SESSION_ID_BYTES, ReportOutcome, ResultClass,
    SessionKey, Summary, SummaryDialect, SummaryWrite, TranscriptKey, check_name, check_text, parse_entries,
};
use crate::proto;
use crate::service::{Forgotten, GetAnswer, Inspection, Report, ServiceError, SweepSummary};
use crate::store::{ListedSession, TranscriptsDeleted};
use crate::sweeper::SweepScope;
use crate::transcripts::AppendAnswer;

/// Longest accepted report id (a dispatch id, a UUID, a hash).
const MAX_REPORT_ID_BYTES: usize = 128;
/// Longest accepted append id (the SDK adapter's batch id, possibly with a `.<n>` split suffix).
const MAX_APPEND_ID_BYTES: usize = 128;

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
                FreshReason::Cleared => proto::FreshReason::Cleared,
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
        resumable_anywhere: answer.resumable_anywhere.is_some(),
        transcript_project_key: answer.resumable_anywhere.unwrap_or_default(),
        tombstone: answer.tombstone.map(tombstone),
    }
}

pub fn inspect_response(inspection: Inspection) -> proto::InspectResponse {
    proto::InspectResponse {
        session: inspection.row.map(|(row, expires_at)| proto::StoredSession {
            session_id: row.session_id,
            binding: Some(proto_binding(row.binding)),
            last_used_at: Some(timestamp(row.last_used_at)),
            expires_at: Some(timestamp(expires_at)),
            failure_count: row.failure_count,
        }),
        tombstone: inspection.tombstone.map(tombstone),
        tombstone_expired: inspection.tombstone_expired,
        history: inspection.history.into_iter().map(history_event).collect(),
    }
}

pub fn history_event(event: HistoryEvent) -> proto::HistoryEvent {
    let kind = match event.kind {
        HistoryKind::Stored => proto::HistoryEventKind::Stored,
        HistoryKind::Reported => proto::HistoryEventKind::Reported,
        HistoryKind::Cleared => proto::HistoryEventKind::Cleared,
        HistoryKind::Expired => proto::HistoryEventKind::Expired,
        HistoryKind::Swept => proto::HistoryEventKind::Swept,
        HistoryKind::Forgotten => proto::HistoryEventKind::Forgotten,
    };
    let mut proto_event = proto::HistoryEvent {
        at: Some(timestamp(event.at)),
        kind: kind.into(),
        session_id: event.session_id,
        ..proto::HistoryEvent::default()
    };
    if let Some(report) = event.report {
        let cause = match report.cause {
            None => proto::ResumeFailureCause::Unspecified,
            Some(ResumeFailureCause::LostInPlace) => proto::ResumeFailureCause::LostInPlace,
            Some(ResumeFailureCause::RoutedElsewhere) => proto::ResumeFailureCause::RoutedElsewhere,
            Some(ResumeFailureCause::Unknown) => proto::ResumeFailureCause::Unknown,
        };
        proto_event.binding = Some(proto_binding(event.binding));
        proto_event.result_class = result_class(report.class).into();
        proto_event.action = action(report.action).into();
        proto_event.matched_signature = report.matched_signature.unwrap_or_default();
        proto_event.resumed_session_id = report.resumed_session_id;
        proto_event.num_turns = report.num_turns;
        proto_event.cause = cause.into();
    }
    proto_event
}

pub fn tombstone(t: Tombstone) -> proto::Tombstone {
    let reason = match t.reason {
        TombstoneReason::ClearedGone => proto::TombstoneReason::ClearedGone,
        TombstoneReason::ClearedInvalid => proto::TombstoneReason::ClearedInvalid,
        TombstoneReason::ClearedFailureLimit => proto::TombstoneReason::ClearedFailureLimit,
        TombstoneReason::Forgotten => proto::TombstoneReason::Forgotten,
        TombstoneReason::Expired => proto::TombstoneReason::Expired,
        TombstoneReason::Swept => proto::TombstoneReason::Swept,
    };
    proto::Tombstone {
        session_id: t.session_id,
        reason: reason.into(),
        cleared_at: Some(timestamp(t.cleared_at)),
        result_class: t
            .result_class
            .map_or(proto::ResultClass::Unspecified, result_class)
            .into(),
        matched_signature: t.matched_signature.unwrap_or_default(),
        reported_binding: t.reported_binding.is_set().then(|| proto_binding(t.reported_binding)),
        stored_binding: Some(proto_binding(t.stored_binding)),
    }
}

/// GetRequest.transcript_project_key: empty is none; else the rule of TranscriptKey.project_key.
pub fn optional_project_key(project_key: &str) -> Result<Option<String>, ServiceError> {
    if project_key.is_empty() {
        return Ok(None);
    }
    check_text("transcript_project_key", project_key, MAX_PROJECT_KEY_BYTES)?;
    Ok(Some(project_key.to_owned()))
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
        transcripts_deleted: count32(outcome.transcripts_deleted),
    }
}

pub fn forget_response(forgotten: Forgotten) -> proto::ForgetResponse {
    proto::ForgetResponse {
        existed: forgotten.existed,
        transcripts_deleted: count32(forgotten.transcripts_deleted),
    }
}

pub fn sweep_response(summary: SweepSummary) -> proto::SweepResponse {
    proto::SweepResponse {
        deleted: summary.deleted,
        transcripts_deleted: summary.transcripts_deleted,
        tombstones_deleted: summary.tombstones_deleted,
        took: Some(prost_types::Duration {
            seconds: i64::try_from(summary.took.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(summary.took.subsec_nanos()).unwrap_or(0),
        }),
    }
}

pub fn transcript_key(key: Option<proto::TranscriptKey>) -> Result<TranscriptKey, ServiceError> {
    let key = key.ok_or_else(|| FieldError::new("key", "is required"))?;
    Ok(TranscriptKey::new(
        &key.namespace,
        &key.project_key,
        &key.session_id,
        &key.subpath,
    )?)
}

/// An append as decoded: the key, its append id (empty only when there are no entries and no
/// summary), its checked entries and its checked summary write.
#[derive(Debug)]
pub struct Append {
    pub key: TranscriptKey,
    pub append_id: String,
    pub entries: Vec<Entry>,
    pub summary: Option<SummaryWrite>,
}

/// A `SummaryDialect` field: None for UNSPECIFIED, an error naming `field` for an unknown value.
fn summary_dialect(field: &'static str, value: i32) -> Result<Option<SummaryDialect>, FieldError> {
    if value == 0 {
        return Ok(None);
    }
    SummaryDialect::from_code(i64::from(value))
        .map(Some)
        .ok_or_else(|| FieldError::new(field, format!("{value} is not a known SummaryDialect")))
}

/// A summary write: main transcript only, a dialect, and data that is a JSON object of at most
/// `max_bytes` (each error names its field).
fn summary_write(
    key: &TranscriptKey,
    write: proto::SummaryWrite,
    max_bytes: usize,
) -> Result<SummaryWrite, FieldError> {
    if !key.is_main() {
        return Err(FieldError::new(
            "summary",
            "is only kept for the main transcript (key.subpath empty)",
        ));
    }
    let dialect = summary_dialect("summary.dialect", write.dialect)?
        .ok_or_else(|| FieldError::new("summary.dialect", "is required"))?;
    SummaryWrite::parse(dialect, write.data_json, write.if_version, max_bytes)
}

fn summary(summary: Summary) -> proto::Summary {
    proto::Summary {
        dialect: i32::from(summary.dialect.code()),
        data_json: summary.data_json,
        version: summary.version,
        mtime_ms: summary.mtime_ms,
    }
}

/// Decodes an append to `key` (decoded first, so the namespace is checked before the entries are
/// read); an entry over `max_entry_bytes`, or not a JSON object with a string `type`, is named by
/// its index (`entries[3]`).
pub fn append(
    key: TranscriptKey,
    request: proto::AppendEntriesRequest,
    max_entry_bytes: u64,
) -> Result<Append, ServiceError> {
    let max_entry_bytes = usize::try_from(max_entry_bytes).unwrap_or(usize::MAX);
    let summary = request
        .summary
        .map(|write| summary_write(&key, write, max_entry_bytes))
        .transpose()?;
    if !request.entries.is_empty() || !request.append_id.is_empty() || summary.is_some() {
        check_text("append_id", &request.append_id, MAX_APPEND_ID_BYTES)?;
    }
    let entries = parse_entries("entries", request.entries, max_entry_bytes)?;
    Ok(Append {
        key,
        append_id: request.append_id,
        entries,
        summary,
    })
}

/// A count as a `uint32` field (an append stores far fewer than 2^32 entries).
fn count32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub fn append_response(answer: AppendAnswer) -> proto::AppendEntriesResponse {
    let outcome = answer.outcome;
    proto::AppendEntriesResponse {
        replayed: answer.replayed,
        stored: count32(outcome.stored),
        duplicates: count32(outcome.duplicates),
        mtime_ms: outcome.mtime_ms,
        entry_count: outcome.entry_count,
        byte_count: outcome.byte_count,
        summary_written: answer.summary.written,
        // Only when not written: the stored summary to fold over again.
        current_summary: answer.summary.current.filter(|_| !answer.summary.written).map(summary),
    }
}

/// A load's key, where it starts (after this seq) and the summary dialect asked for.
pub fn load(
    request: proto::LoadTranscriptRequest,
) -> Result<(TranscriptKey, i64, Option<SummaryDialect>), ServiceError> {
    let key = transcript_key(request.key)?;
    let after_seq =
        i64::try_from(request.after_seq).map_err(|_| FieldError::new("after_seq", "is larger than any seq"))?;
    let dialect = summary_dialect("summary_dialect", request.summary_dialect)?;
    Ok((key, after_seq, dialect))
}

/// The first load chunk's summary.
pub fn loaded_summary(loaded: Option<Summary>) -> Option<proto::Summary> {
    loaded.map(summary)
}

/// A ListTranscriptSessions request: namespace (defaulted), project key and summary dialect.
pub fn sessions_request(
    request: &proto::ListTranscriptSessionsRequest,
) -> Result<(String, String, Option<SummaryDialect>), ServiceError> {
    let (namespace, project_key) = project(&request.namespace, &request.project_key)?;
    let dialect = summary_dialect("summary_dialect", request.summary_dialect)?;
    Ok((namespace, project_key, dialect))
}

/// A namespace field as stored: `"default"` when empty.
fn namespace(value: &str) -> Result<String, ServiceError> {
    let namespace = if value.is_empty() { DEFAULT_NAMESPACE } else { value };
    check_name("namespace", namespace)?;
    Ok(namespace.to_owned())
}

/// A project: its namespace (defaulted) and project key, each checked as in a transcript key.
pub fn project(namespace_field: &str, project_key: &str) -> Result<(String, String), ServiceError> {
    let namespace = namespace(namespace_field)?;
    check_text("project_key", project_key, MAX_PROJECT_KEY_BYTES)?;
    Ok((namespace, project_key.to_owned()))
}

/// The session a ListSubkeys names: namespace (defaulted), project key and session id.
pub fn subkeys_request(request: proto::ListSubkeysRequest) -> Result<(String, String, String), ServiceError> {
    let (namespace, project_key) = project(&request.namespace, &request.project_key)?;
    check_text("session_id", &request.session_id, MAX_TRANSCRIPT_SESSION_ID_BYTES)?;
    Ok((namespace, project_key, request.session_id))
}

pub fn sessions_response(sessions: Vec<ListedSession>) -> proto::ListTranscriptSessionsResponse {
    proto::ListTranscriptSessionsResponse {
        sessions: sessions
            .into_iter()
            .map(|s| proto::TranscriptSession {
                session_id: s.session_id,
                mtime_ms: s.mtime_ms,
                summary: s.summary.map(summary),
            })
            .collect(),
    }
}

pub fn delete_response(deleted: TranscriptsDeleted) -> proto::DeleteTranscriptResponse {
    proto::DeleteTranscriptResponse {
        transcripts_deleted: count32(deleted.transcripts),
        entries_deleted: deleted.entries,
    }
}

#[cfg(test)]
mod tests {
    use tonic::Status;

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

    fn append_request(append_id: &str, entries: &[&str]) -> proto::AppendEntriesRequest {
        proto::AppendEntriesRequest {
            key: Some(proto::TranscriptKey {
                namespace: String::new(),
                project_key: "-work-repo".into(),
                session_id: "sess".into(),
                subpath: String::new(),
            }),
            append_id: append_id.into(),
            entries: entries.iter().map(|e| (*e).to_owned()).collect(),
            summary: None,
        }
    }

    fn append(request: proto::AppendEntriesRequest, max_entry_bytes: u64) -> Result<Append, ServiceError> {
        let mut request = request;
        let key = transcript_key(request.key.take())?;
        super::append(key, request, max_entry_bytes)
    }

    #[test]
    fn an_append_needs_an_append_id_with_entries_and_names_a_bad_entry_by_index() {
        let ok = append(append_request("a1", &[r#"{"type":"user"}"#]), 1024).unwrap();
        assert_eq!(ok.key.namespace(), "default");
        assert_eq!(ok.entries.len(), 1);
        assert!(append(append_request("", &[]), 1024).unwrap().entries.is_empty());
        let err = append(append_request("", &[r#"{"type":"user"}"#]), 1024).unwrap_err();
        assert_eq!(field_of(err), "append_id");
        let big = format!(r#"{{"type":"x","pad":"{}"}}"#, "a".repeat(100));
        let err = append(append_request("a1", &[r#"{"type":"x"}"#, &big]), 64).unwrap_err();
        assert_eq!(
            Status::from(err).message(),
            format!("entries[1]: is {} bytes, over the 64-byte limit", big.len())
        );
        let mut request = append_request("a1", &[]);
        request.key.as_mut().unwrap().subpath = "../x".into();
        assert_eq!(field_of(append(request, 64).unwrap_err()), "key.subpath");
        assert_eq!(
            field_of(append(proto::AppendEntriesRequest::default(), 64).unwrap_err()),
            "key"
        );
    }

    #[test]
    fn a_summary_is_checked_field_by_field_before_anything_is_read() {
        let write = |dialect: i32, data: &str| proto::SummaryWrite {
            dialect,
            data_json: data.into(),
            if_version: 0,
        };
        let mut request = append_request("a1", &[]);
        request.summary = Some(write(1, r#"{"custom_title":"t"}"#));
        let ok = append(request, 64).unwrap();
        assert_eq!(ok.summary.unwrap().dialect, SummaryDialect::ClaudePython);
        for (dialect, data, field) in [
            (0, "{}", "summary.dialect"),
            (9, "{}", "summary.dialect"),
            (2, "[]", "summary.data_json"),
            (2, "{nope", "summary.data_json"),
        ] {
            let mut request = append_request("a1", &[]);
            request.summary = Some(write(dialect, data));
            assert_eq!(field_of(append(request, 64).unwrap_err()), field, "{dialect} {data}");
        }
        let mut request = append_request("a1", &[]);
        request.summary = Some(write(2, &format!(r#"{{"a":"{}"}}"#, "x".repeat(64))));
        assert_eq!(field_of(append(request, 64).unwrap_err()), "summary.data_json");
        let mut request = append_request("", &[]);
        request.summary = Some(write(1, "{}"));
        assert_eq!(field_of(append(request, 64).unwrap_err()), "append_id");
        let mut request = append_request("a1", &[]);
        request.key.as_mut().unwrap().subpath = "subagents/agent-1".into();
        request.summary = Some(write(1, "{}"));
        assert_eq!(field_of(append(request, 64).unwrap_err()), "summary");
        let request = proto::LoadTranscriptRequest {
            key: append_request("a1", &[]).key,
            after_seq: 0,
            summary_dialect: 5,
        };
        assert_eq!(field_of(load(request).unwrap_err()), "summary_dialect");
    }

    #[test]
    fn list_requests_name_their_own_fields() {
        assert_eq!(field_of(project("", "").unwrap_err()), "project_key");
        assert_eq!(field_of(project("a b", "p").unwrap_err()), "namespace");
        assert_eq!(project("", "p").unwrap(), ("default".to_owned(), "p".to_owned()));
        let request = proto::ListSubkeysRequest {
            namespace: "acme".into(),
            project_key: "p".into(),
            session_id: String::new(),
        };
        assert_eq!(field_of(subkeys_request(request).unwrap_err()), "session_id");
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
