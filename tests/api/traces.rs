//! Traces through the real thing: the real binary exporting spans over OTLP/gRPC to a real
//! receiver run here. The caller's trace continues; the span attributes follow SPEC §6's names by
//! default and the stable OpenTelemetry names `OTEL_SEMCONV_STABILITY_OPT_IN` asks for (or both);
//! the resource names the service and its version; no span carries the `tracing` bridge's noise.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use sessionkeeper::proto;
use sessionkeeper::semconv::OPT_IN_VARIABLE;
use tonic::metadata::MetadataValue;

use crate::binary::{READY_WITHIN, Server};
use crate::support::fixtures::{key, report_request, success};

/// An OTLP/gRPC trace receiver that keeps every batch it is sent, with its resource.
#[derive(Default, Clone)]
struct Receiver {
    batches: Arc<Mutex<Vec<ResourceSpans>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut batches = self.batches.lock().unwrap();
        batches.extend(request.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves on a free loopback port until the test ends.
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (receiver, addr)
    }

    fn spans(&self) -> Vec<Span> {
        let batches = self.batches.lock().unwrap();
        batches
            .iter()
            .flat_map(|batch| &batch.scope_spans)
            .flat_map(|scope| scope.spans.clone())
            .collect()
    }
}

/// `serve` exporting to `otlp`, with `OTEL_SEMCONV_STABILITY_OPT_IN` set to `opt_in` (unset when
/// `None`, whatever the test's own environment says).
fn start_traced(otlp: SocketAddr, opt_in: Option<&str>, configure: impl FnOnce(&mut std::process::Command)) -> Server {
    Server::start("otlp", |c| {
        c.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
            .env("OTEL_SERVICE_NAME", "sessionkeeper-under-test");
        match opt_in {
            Some(value) => c.env(OPT_IN_VARIABLE, value),
            None => c.env_remove(OPT_IN_VARIABLE),
        };
        configure(c);
    })
}

/// SIGTERM flushes the spans still buffered before the process exits.
async fn stop(mut server: Server) {
    server.signal("-TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).await.success());
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A Get that continues the caller's trace (no row: one lookup reads the row and the tombstone) and a
/// ReportResult (a row written), on the embedded store, with the given opt-in. Returns the receiver
/// once the server has exited, and the server's log lines.
async fn get_and_report(opt_in: Option<&str>) -> (Receiver, Vec<serde_json::Value>) {
    let (receiver, otlp) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_traced(otlp, opt_in, |c| {
        c.arg("--data-dir").arg(dir.path());
    });
    server.wait_ready(READY_WITHIN).await;
    let mut client = server.client().await;
    let mut request = tonic::Request::new(proto::GetRequest {
        key: Some(key("traced")),
        binding: None,
        ..Default::default()
    });
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    request
        .metadata_mut()
        .insert("traceparent", MetadataValue::try_from(traceparent.as_str()).unwrap());
    client.get(request).await.unwrap();
    let report = report_request(&key("traced"), "", success("s1", 1), "r-1");
    client.report_result(report).await.unwrap();
    let logs = server.log_events();
    stop(server).await;
    (receiver, logs)
}

fn attribute<'a>(span: &'a Span, name: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == name)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string_attribute<'a>(span: &'a Span, name: &str) -> Option<&'a str> {
    match attribute(span, name) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn keys(span: &Span) -> Vec<&str> {
    span.attributes.iter().map(|kv| kv.key.as_str()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span named {name:?} among {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// The child of `parent` named `name`.
fn child<'a>(spans: &'a [Span], parent: &Span, name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.parent_span_id == parent.span_id && s.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no child {name:?} of {:?} among {:?}",
                parent.name,
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
}

fn assert_absent(span: &Span, names: &[&str]) {
    for name in names {
        assert!(
            attribute(span, name).is_none(),
            "{:?} carries {name}: {:?}",
            span.name,
            keys(span)
        );
    }
}

const GET: &str = "sessionkeeper.v1.SessionService/Get";
const REPORT: &str = "sessionkeeper.v1.SessionService/ReportResult";
const OLD_RPC_ONLY: [&str; 3] = ["rpc.system", "rpc.service", "rpc.grpc.status_code"];
const STABLE_RPC_ONLY: [&str; 3] = ["rpc.system.name", "rpc.response.status_code", "error.type"];
const OLD_DB: [&str; 2] = ["db.system", "db.operation"];
const STABLE_DB: [&str; 3] = ["db.system.name", "db.operation.name", "db.collection.name"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_makes_the_server_span_a_child_of_the_callers_span_with_store_child_spans() {
    let (receiver, logged) = get_and_report(None).await;
    let spans = receiver.spans();
    let get = named(&spans, GET);
    assert_eq!(hex(&get.trace_id), TRACE_ID, "the caller's trace continues");
    assert_eq!(
        hex(&get.parent_span_id),
        CALLER_SPAN,
        "the server span is a child of the caller's span"
    );
    assert_eq!(get.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(string_attribute(get, "sessionkeeper.decision"), Some("start_fresh"));
    assert_eq!(string_attribute(get, "sessionkeeper.fresh_reason"), Some("no_session"));
    let store = child(&spans, get, "session.load");
    assert_eq!(store.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(store.trace_id, get.trace_id);

    let report = named(&spans, REPORT);
    assert_eq!(string_attribute(report, "sessionkeeper.result_class"), Some("success"));
    assert_eq!(string_attribute(report, "sessionkeeper.action"), Some("stored"));
    named(&spans, "sweep");

    // The JSON log line written inside the call carries the call's trace and span ids.
    let applied = logged
        .iter()
        .find(|e| e["message"] == "report applied")
        .expect("a 'report applied' log line");
    let rpc = applied["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "rpc"))
        .unwrap_or_else(|| panic!("the log line names its rpc span: {applied}"));
    assert_eq!(
        rpc["trace_id"].as_str(),
        Some(hex(&report.trace_id).as_str()),
        "{applied}"
    );
    assert_eq!(
        rpc["span_id"].as_str(),
        Some(hex(&report.span_id).as_str()),
        "{applied}"
    );
}

/// SPEC §6: with no opt-in, the older names only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_spans_carry_spec_section_6s_names_and_no_stable_ones() {
    let (receiver, _) = get_and_report(None).await;
    let spans = receiver.spans();
    let get = named(&spans, GET);
    assert_eq!(string_attribute(get, "rpc.system"), Some("grpc"));
    assert_eq!(
        string_attribute(get, "rpc.service"),
        Some("sessionkeeper.v1.SessionService")
    );
    assert_eq!(string_attribute(get, "rpc.method"), Some("Get"));
    assert_eq!(attribute(get, "rpc.grpc.status_code"), Some(&Value::IntValue(0)));
    assert_absent(get, &STABLE_RPC_ONLY);

    let load = child(&spans, get, "session.load");
    assert_eq!(string_attribute(load, "db.system"), Some("sqlite"));
    assert_eq!(string_attribute(load, "db.operation"), Some("session.load"));
    assert_absent(load, &STABLE_DB);
    let write = child(&spans, named(&spans, REPORT), "session.store_result");
    assert_eq!(string_attribute(write, "db.operation"), Some("session.store_result"));
}

/// `rpc,database`: the stable names only, the method fully qualified, the status code by name,
/// store spans named `{db.operation.name} {db.collection.name}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpc_and_database_opt_ins_switch_to_the_stable_names() {
    let (receiver, _) = get_and_report(Some("rpc,database")).await;
    let spans = receiver.spans();
    let get = named(&spans, GET);
    assert_eq!(string_attribute(get, "rpc.system.name"), Some("grpc"));
    assert_eq!(string_attribute(get, "rpc.method"), Some(GET));
    assert_eq!(string_attribute(get, "rpc.response.status_code"), Some("OK"));
    assert_absent(get, &OLD_RPC_ONLY);
    assert_absent(get, &["error.type"]);

    let load = child(&spans, get, "SELECT session");
    assert_eq!(string_attribute(load, "db.system.name"), Some("sqlite"));
    assert_eq!(string_attribute(load, "db.operation.name"), Some("SELECT"));
    assert_eq!(string_attribute(load, "db.collection.name"), Some("session"));
    assert_absent(load, &OLD_DB);

    let report = named(&spans, REPORT);
    assert_eq!(string_attribute(report, "rpc.method"), Some(REPORT));
    let write = child(&spans, report, "INSERT session");
    assert_eq!(string_attribute(write, "db.operation.name"), Some("INSERT"));
    assert!(
        !spans.iter().any(|s| s.name.starts_with("session.")),
        "no store span keeps its old name"
    );
}

/// `rpc/dup,database/dup` (in a list with another category): both names; where one key differs,
/// the stable value (`rpc.method`, the store span's name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dup_opt_ins_emit_the_old_and_the_stable_names() {
    let (receiver, _) = get_and_report(Some("http,rpc/dup, database/dup")).await;
    let spans = receiver.spans();
    let get = named(&spans, GET);
    assert_eq!(string_attribute(get, "rpc.system"), Some("grpc"));
    assert_eq!(string_attribute(get, "rpc.system.name"), Some("grpc"));
    assert_eq!(
        string_attribute(get, "rpc.service"),
        Some("sessionkeeper.v1.SessionService")
    );
    assert_eq!(string_attribute(get, "rpc.method"), Some(GET));
    assert_eq!(attribute(get, "rpc.grpc.status_code"), Some(&Value::IntValue(0)));
    assert_eq!(string_attribute(get, "rpc.response.status_code"), Some("OK"));

    let load = child(&spans, get, "SELECT session");
    assert_eq!(string_attribute(load, "db.system"), Some("sqlite"));
    assert_eq!(string_attribute(load, "db.system.name"), Some("sqlite"));
    assert_eq!(string_attribute(load, "db.operation"), Some("session.load"));
    assert_eq!(string_attribute(load, "db.operation.name"), Some("SELECT"));
}

/// A call that fails on the server's side (Postgres down: UNAVAILABLE) is an error span whose
/// stable attributes name the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_names_its_status_in_the_stable_names() {
    let (receiver, otlp) = Receiver::start().await;
    let server = start_traced(otlp, Some("rpc"), |c| {
        c.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/sessionkeeper")
            .env("SESSIONKEEPER_DB_ACQUIRE_TIMEOUT", "200ms");
    });
    let mut client = server.client().await;
    let status = client
        .get(proto::GetRequest {
            key: Some(key("down")),
            binding: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    stop(server).await;

    let spans = receiver.spans();
    let get = named(&spans, GET);
    assert_eq!(string_attribute(get, "rpc.response.status_code"), Some("UNAVAILABLE"));
    assert_eq!(string_attribute(get, "error.type"), Some("UNAVAILABLE"));
    assert_eq!(get.status.as_ref().map(|s| s.code), Some(2), "STATUS_CODE_ERROR");
    assert_absent(get, &OLD_RPC_ONLY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_names_the_service_and_its_version() {
    let (receiver, _) = get_and_report(None).await;
    let batches = receiver.batches.lock().unwrap().clone();
    assert!(!batches.is_empty(), "spans were exported");
    for batch in &batches {
        let resource = batch.resource.as_ref().expect("a resource");
        let value = |name: &str| {
            resource
                .attributes
                .iter()
                .find(|kv| kv.key == name)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.clone())
        };
        assert_eq!(
            value("service.name"),
            Some(Value::StringValue("sessionkeeper-under-test".into()))
        );
        assert_eq!(
            value("service.version"),
            Some(Value::StringValue(env!("CARGO_PKG_VERSION").into()))
        );
    }
}

/// Attributes no span may carry: the `tracing` bridge's source locations, threads, target, level
/// and busy/idle times, and the ids the server span keeps for log lines.
fn noise(key: &str) -> bool {
    key.starts_with("code.")
        || key.starts_with("thread.")
        || ["busy_ns", "idle_ns", "target", "level", "trace_id", "span_id"].contains(&key)
}

/// Every span (server, store, sweep), in the mode with the most attributes: only attributes its
/// code gives it, each once, none repeating its parent's or naming its own ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_no_noise_attributes_and_no_repeated_ids() {
    let (receiver, _) = get_and_report(Some("rpc/dup,database/dup")).await;
    let spans = receiver.spans();
    assert!(spans.len() >= 6, "server, store and sweep spans: {}", spans.len());
    for span in &spans {
        let keys = keys(span);
        assert!(
            !keys.iter().any(|k| noise(k)),
            "{:?} carries noise: {keys:?}",
            span.name
        );
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{:?} repeats a key: {keys:?}", span.name);
        let own_ids = [hex(&span.trace_id), hex(&span.span_id)];
        for kv in &span.attributes {
            if let Some(Value::StringValue(text)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                assert!(!own_ids.contains(text), "{:?} repeats its id in {}", span.name, kv.key);
            }
        }
        if let Some(parent) = spans.iter().find(|p| p.span_id == span.parent_span_id) {
            for kv in &span.attributes {
                assert!(
                    !parent.attributes.contains(kv),
                    "{:?} repeats its parent {:?}'s {}",
                    span.name,
                    parent.name,
                    kv.key
                );
            }
        }
    }
}
