//! One server span and one latency observation per API call (SessionService, TranscriptService), as a tower layer around
//! the gRPC routes. The span continues the caller's trace from the W3C `traceparent` metadata and
//! carries the OpenTelemetry RPC attributes of the conventions chosen at start-up
//! ([`SemconvMode::rpc`]: SPEC §6's by default); the lifecycle service records the decision, result
//! class and action on it. Health and reflection calls (probes) are passed through untraced. The
//! `grpc_server_*` families count a call when it starts and when it is handled ([`super::handled`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::http;
use tracing::field::Empty;
use tracing::{Instrument, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::api_method;
use super::handled::{on_handled, status_in};
use crate::metrics::Metrics;
use crate::semconv::{Emit, SemconvMode, grpc_status_name};

#[derive(Debug, Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    semconv: Emit,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ObserveLayer {
            metrics,
            semconv: Emit::default(),
        }
    }

    /// The conventions of the server spans (SPEC §6's names unless this is called).
    pub fn with_semconv(self, semconv: SemconvMode) -> Self {
        ObserveLayer {
            semconv: semconv.rpc,
            ..self
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            semconv: self.semconv,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
    semconv: Emit,
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The call's status: tonic sends errors of unary calls as trailers-only responses, with
/// `grpc-status` in the headers; a response without it succeeded.
fn grpc_code(headers: &http::HeaderMap) -> Code {
    status_in(headers).unwrap_or(Code::Ok)
}

/// Server-side codes that mark a span as an error (OpenTelemetry gRPC semantic conventions).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(super::ApiMethod { service, method }) = api_method(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let full_method = format!("{service}/{method}");
        let span = info_span!(
            "rpc",
            otel.name = full_method.as_str(),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = Empty,
            rpc.service = Empty,
            rpc.method = Empty,
            rpc.grpc.status_code = Empty,
            rpc.system.name = Empty,
            rpc.response.status_code = Empty,
            error.type = Empty,
            trace_id = Empty,
            span_id = Empty,
            caller = Empty,
            sessionkeeper.decision = Empty,
            sessionkeeper.fresh_reason = Empty,
            sessionkeeper.result_class = Empty,
            sessionkeeper.action = Empty,
            sessionkeeper.retry_fresh = Empty,
        );
        // Before the span starts (below, on `context()`), so that a sampler sees them.
        let emit = self.semconv;
        if emit.old() {
            span.record("rpc.system", "grpc").record("rpc.service", service);
        }
        if emit.stable() {
            span.record("rpc.system.name", "grpc");
        }
        // The stable conventions qualify the method with its service (with `/dup`, that value wins).
        span.record("rpc.method", if emit.stable() { full_method.as_str() } else { method });
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        let _ = span.set_parent(parent);
        // With tracing on, log lines inside the call carry its ids, so a log line leads to its trace.
        let context = span.context();
        let ids = context.span().span_context().clone();
        if ids.is_valid() {
            span.record("trace_id", tracing::field::display(ids.trace_id()));
            span.record("span_id", tracing::field::display(ids.span_id()));
        }
        let metrics = self.metrics.clone();
        let started = Instant::now();
        metrics.record_grpc_started(service, method);
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let result = future.instrument(span.clone()).await;
            let code = match &result {
                Ok(response) => grpc_code(response.headers()),
                Err(_) => Code::Internal,
            };
            if emit.old() {
                span.record("rpc.grpc.status_code", code as i32);
            }
            if emit.stable() {
                span.record("rpc.response.status_code", grpc_status_name(code));
            }
            if is_server_error(code) {
                span.record("otel.status_code", "ERROR");
                if emit.stable() {
                    span.record("error.type", grpc_status_name(code));
                }
            }
            metrics.record_rpc(method, code, started.elapsed());
            match result {
                Ok(response) => Ok(on_handled(response, move |code| {
                    metrics.record_grpc_handled(service, method, code, started.elapsed());
                })),
                Err(e) => {
                    metrics.record_grpc_handled(service, method, code, started.elapsed());
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_comes_from_grpc_status_or_is_ok() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_code(&headers), Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(grpc_code(&headers), Code::Unavailable);
        assert!(is_server_error(Code::Unavailable));
        assert!(!is_server_error(Code::InvalidArgument));
    }
}
