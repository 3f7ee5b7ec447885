//! Logs and traces. Logs: `tracing` on stdout, as text or JSON lines, at `--log-level` when it is
//! set, else filtered by `RUST_LOG` (default `info`); colours only when stdout is a terminal (and
//! `NO_COLOR` is not set), so a file or a pipe gets plain text. Inside a call, lines carry the
//! call's span, with its `trace_id` (not the store calls' child spans: those are for traces only,
//! [`TRACE_ONLY`]). Traces: exported over
//! OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, configured
//! by the standard `OTEL_*` variables (`OTEL_SERVICE_NAME` defaults to `sessionkeeper`; the sampler
//! variables are read by the SDK). With no endpoint, nothing connects anywhere. The resource names
//! the crate's version (`service.version`); spans carry only the attributes their code gives them:
//! none of the `tracing` bridge's own (source location, thread, target, busy and idle times), and
//! not the ids the server span keeps for log lines ([`LOG_ONLY_FIELDS`]). Which semantic
//! conventions those attributes follow is [`crate::semconv`]'s business, not this file's.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanProcessor};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogLevel};

/// Owns the trace exporter; [`TelemetryGuard::shutdown`] flushes the spans still buffered.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes and stops the exporter. It blocks: call it outside the async workers, while the
    /// runtime that drives the exporter's connection is still alive.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

fn otlp_endpoint_set() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Escape codes only for a person at a terminal: never into a file, a pipe or a log collector.
fn colours_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The target of spans that only traces carry (a store call's child span): log lines never list
/// them, so with no exporter they cost nothing (no layer wants them, and none is built).
pub const TRACE_ONLY: &str = "sessionkeeper::trace";

/// Span fields for log lines only: the server span records its own trace and span ids so that a
/// log line leads to its trace, and an exported span has them already.
pub const LOG_ONLY_FIELDS: [&str; 2] = ["trace_id", "span_id"];

/// Passes spans on to the exporter's processor without their [`LOG_ONLY_FIELDS`].
#[derive(Debug)]
struct WithoutLogOnlyFields<P>(P);

impl<P: SpanProcessor> SpanProcessor for WithoutLogOnlyFields<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        span.attributes.retain(|kv| !LOG_ONLY_FIELDS.contains(&kv.key.as_str()));
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Installs the global subscriber. Must run inside the tokio runtime (the OTLP exporter's
/// connection lives on it). A second call (tests) installs nothing and returns an empty guard.
pub fn init(format: LogFormat, level: Option<LogLevel>) -> anyhow::Result<TelemetryGuard> {
    let filter = match level {
        Some(level) => EnvFilter::new(level.as_str()),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
    }
    .add_directive(format!("{TRACE_ONLY}=off").parse()?);
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(colours_wanted())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
    }
    .with_filter(filter);

    let (otel, provider) = if otlp_endpoint_set() {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        let service_name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| "sessionkeeper".to_owned());
        let resource = Resource::builder()
            .with_service_name(service_name)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(WithoutLogOnlyFields(BatchSpanProcessor::builder(exporter).build()))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("sessionkeeper");
        // Our own spans only, whatever RUST_LOG says about log lines, with only the attributes our
        // code gives them (the bridge adds none of its own).
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target("sessionkeeper", Level::INFO));
        (Some(layer), Some(provider))
    } else {
        (None, None)
    };

    let installed = tracing_subscriber::registry().with(fmt).with(otel).try_init().is_ok();
    Ok(TelemetryGuard {
        provider: if installed { provider } else { None },
    })
}
