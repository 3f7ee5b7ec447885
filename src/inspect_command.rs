//! `sessionkeeper inspect NAMESPACE/AGENT/CONVERSATION`: a client of a running server's Inspect
//! RPC, for an operator asking why a conversation started fresh. Prints what the server keeps
//! about the key — its history (the last events, across ids), the stored row and the tombstone of
//! its last cleared id — as a timeline, or as JSON with `--json`. No rule lives here: the server
//! decides, this prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::domain::SessionKey;
use crate::proto::{self, session_service_client::SessionServiceClient};

/// Where the server is and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`, or `https://…` with `tls_ca`.
    pub address: String,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
}

/// Runs the command: 0 printed, 1 the server could not answer, 2 a bad argument.
pub fn run(key: &str, target: &Target, json: bool) -> ExitCode {
    let key = match parse_key(key) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(inspect(&key, target)) {
        Ok(answer) => {
            if json {
                println!("{:#}", to_json(&key, &answer));
            } else {
                print!("{}", timeline(&key, &answer));
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Server(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Server(String),
}

/// NAMESPACE/AGENT/CONVERSATION; the conversation is everything after the second `/`.
fn parse_key(text: &str) -> Result<SessionKey, String> {
    let mut parts = text.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(namespace), Some(agent), Some(conversation)) => {
            SessionKey::new(namespace, agent, conversation).map_err(|e| format!("{text:?}: {e}"))
        }
        _ => Err(format!("{text:?}: expected NAMESPACE/AGENT/CONVERSATION")),
    }
}

async fn inspect(key: &SessionKey, target: &Target) -> Result<proto::InspectResponse, Failure> {
    let mut endpoint = Endpoint::from_shared(target.address.clone())
        .map_err(|e| Failure::Usage(format!("--target {:?}: {e}", target.address)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(ca) = &target.tls_ca {
        let pem = std::fs::read(ca).map_err(|e| Failure::Usage(format!("--tls-ca {}: {e}", ca.display())))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(|e| Failure::Usage(format!("--tls-ca {}: {e}", ca.display())))?;
    } else if target.address.starts_with("https://") {
        return Err(Failure::Usage("an https:// --target needs --tls-ca".into()));
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Failure::Server(format!("cannot reach {}: {e}", target.address)))?;
    let mut request = tonic::Request::new(proto::InspectRequest {
        key: Some(proto::SessionKey {
            namespace: key.namespace().into(),
            agent: key.agent().into(),
            conversation: key.conversation().into(),
        }),
    });
    if let Some(token) = &target.token {
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Failure::Usage("--token: not a valid header value".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    SessionServiceClient::new(channel)
        .inspect(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| Failure::Server(format!("inspect: {:?}: {}", s.code(), s.message())))
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map_or_else(|| "?".into(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn binding_text(b: Option<&proto::Binding>) -> String {
    let Some(b) = b else {
        return "(none)".into();
    };
    let fields: Vec<String> = [
        ("provider", &b.provider),
        ("host", &b.host),
        ("config_dir", &b.config_dir),
        ("cwd", &b.cwd),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    if fields.is_empty() {
        "(none)".into()
    } else {
        fields.join(" ")
    }
}

fn binding_json(b: Option<&proto::Binding>) -> Value {
    b.map_or(
        Value::Null,
        |b| json!({"provider": b.provider, "host": b.host, "config_dir": b.config_dir, "cwd": b.cwd}),
    )
}

/// The stable text of an enum value: its proto name without the prefix, lowercased.
fn enum_text(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

fn reason_text(t: &proto::Tombstone) -> String {
    enum_text(t.reason().as_str_name(), "TOMBSTONE_REASON_")
}

fn class_text(t: &proto::Tombstone) -> Option<String> {
    (t.result_class() != proto::ResultClass::Unspecified)
        .then(|| enum_text(t.result_class().as_str_name(), "RESULT_CLASS_"))
}

fn event_json(e: &proto::HistoryEvent) -> Value {
    let report = e.result_class() != proto::ResultClass::Unspecified;
    json!({
        "at": time(e.at.as_ref()),
        "kind": enum_text(e.kind().as_str_name(), "HISTORY_EVENT_KIND_"),
        "session_id": e.session_id,
        "binding": binding_json(e.binding.as_ref()),
        "result_class": report.then(|| enum_text(e.result_class().as_str_name(), "RESULT_CLASS_")),
        "action": report.then(|| enum_text(e.action().as_str_name(), "ACTION_")),
        "matched_signature": Some(&e.matched_signature).filter(|s| !s.is_empty()),
        "resumed_session_id": report.then_some(&e.resumed_session_id),
        "num_turns": report.then_some(e.num_turns),
        "cause": (e.cause() != proto::ResumeFailureCause::Unspecified)
            .then(|| enum_text(e.cause().as_str_name(), "RESUME_FAILURE_CAUSE_")),
    })
}

/// One history event: when, what and which id; for a report, what it said and where it ran.
fn event_text(e: &proto::HistoryEvent) -> String {
    let id = if e.session_id.is_empty() {
        "(no id)"
    } else {
        e.session_id.as_str()
    };
    let mut text = format!(
        "  {}  {}  {id}",
        time(e.at.as_ref()),
        enum_text(e.kind().as_str_name(), "HISTORY_EVENT_KIND_")
    );
    if e.result_class() != proto::ResultClass::Unspecified {
        let mut said = format!(
            "{} ({})",
            enum_text(e.result_class().as_str_name(), "RESULT_CLASS_"),
            enum_text(e.action().as_str_name(), "ACTION_")
        );
        if e.resumed_session_id.is_empty() {
            said.push_str(", a fresh run");
        } else {
            said.push_str(&format!(", resumed {}", e.resumed_session_id));
        }
        said.push_str(&format!(", {} turns", e.num_turns));
        if e.cause() != proto::ResumeFailureCause::Unspecified {
            said.push_str(&format!(
                ", cause {}",
                enum_text(e.cause().as_str_name(), "RESUME_FAILURE_CAUSE_")
            ));
        }
        if !e.matched_signature.is_empty() {
            said.push_str(&format!(", signature {:?}", e.matched_signature));
        }
        text.push_str(&format!(
            "\n      {said}\n      run binding:  {}",
            binding_text(e.binding.as_ref())
        ));
    }
    text
}

fn to_json(key: &SessionKey, answer: &proto::InspectResponse) -> Value {
    json!({
        "history": answer.history.iter().map(event_json).collect::<Vec<_>>(),
        "key": {"namespace": key.namespace(), "agent": key.agent(), "conversation": key.conversation()},
        "session": answer.session.as_ref().map(|s| json!({
            "session_id": s.session_id,
            "binding": binding_json(s.binding.as_ref()),
            "last_used_at": time(s.last_used_at.as_ref()),
            "expires_at": time(s.expires_at.as_ref()),
            "failure_count": s.failure_count,
        })),
        "tombstone": answer.tombstone.as_ref().map(|t| json!({
            "session_id": t.session_id,
            "reason": reason_text(t),
            "cleared_at": time(t.cleared_at.as_ref()),
            "result_class": class_text(t),
            "matched_signature": Some(&t.matched_signature).filter(|s| !s.is_empty()),
            "reported_binding": binding_json(t.reported_binding.as_ref()),
            "stored_binding": binding_json(t.stored_binding.as_ref()),
            "expired": answer.tombstone_expired,
        })),
    })
}

/// The history (oldest first), then what is kept now in time order, then what the next Get does.
fn timeline(key: &SessionKey, answer: &proto::InspectResponse) -> String {
    let mut events: Vec<(String, String)> = Vec::new();
    if let Some(t) = &answer.tombstone {
        let mut text = format!("{}  {}", reason_text(t), t.session_id);
        if let Some(class) = class_text(t) {
            text.push_str(&format!("\n    a report said {class}"));
            if !t.matched_signature.is_empty() {
                text.push_str(&format!(" (signature {:?})", t.matched_signature));
            }
        }
        text.push_str(&format!(
            "\n    stored from:  {}",
            binding_text(t.stored_binding.as_ref())
        ));
        if t.reported_binding.is_some() {
            text.push_str(&format!(
                "\n    failing run:  {}",
                binding_text(t.reported_binding.as_ref())
            ));
        }
        events.push((time(t.cleared_at.as_ref()), text));
    }
    if let Some(s) = &answer.session {
        let mut text = format!(
            "stored  {}\n    binding:      {}",
            s.session_id,
            binding_text(s.binding.as_ref())
        );
        if s.failure_count > 0 {
            text.push_str(&format!("\n    zero-turn unknown failures since: {}", s.failure_count));
        }
        events.push((time(s.last_used_at.as_ref()), text));
    }
    events.sort();
    let mut out = format!("{}/{}/{}\n", key.namespace(), key.agent(), key.conversation());
    if !answer.history.is_empty() {
        out.push_str("history, oldest first:\n");
        for event in &answer.history {
            out.push_str(&event_text(event));
            out.push('\n');
        }
        if !events.is_empty() {
            out.push_str("kept now:\n");
        }
    }
    for (at, text) in &events {
        out.push_str(&format!("{at}  {text}\n"));
    }
    let next = match (&answer.session, &answer.tombstone) {
        (Some(s), _) => format!(
            "a Get resumes {} (where the binding allows) until {}",
            s.session_id,
            time(s.expires_at.as_ref())
        ),
        (None, Some(t)) if !answer.tombstone_expired => {
            format!("a Get starts fresh: cleared ({})", reason_text(t))
        }
        (None, _) => "a Get starts fresh: no_session".into(),
    };
    out.push_str(&format!("next: {next}\n"));
    out
}
