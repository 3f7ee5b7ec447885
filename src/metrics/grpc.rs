//! The gRPC server families off-the-shelf dashboards query, named and labelled as
//! go-grpc-prometheus and grpc-ecosystem's providers name them: `grpc_server_started_total`,
//! `grpc_server_handled_total` and `grpc_server_handling_seconds`, labelled `grpc_type`,
//! `grpc_service`, `grpc_method` (and `grpc_code`, spelled as Go's `codes.Code` prints it). They
//! sit beside SPEC §6's `sessionkeeper_rpc_duration_seconds`, which stays. What a call is (its
//! service and method) is decided by the server; this file only counts.

use std::time::Duration;

use prometheus::{DEFAULT_BUCKETS, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::{METHODS, TRANSCRIPT_METHODS};
use crate::proto::{SERVICE_NAME, TRANSCRIPT_SERVICE_NAME};

/// The API's server-streaming methods; every other method is unary (a test holds this to the
/// contract's descriptor set).
pub const SERVER_STREAMING_METHODS: [&str; 1] = ["LoadTranscript"];

/// `grpc_type` of a method: `server_stream` or `unary` (the API has no client streams).
pub fn grpc_type(method: &str) -> &'static str {
    if SERVER_STREAMING_METHODS.contains(&method) {
        "server_stream"
    } else {
        "unary"
    }
}

/// A status code as Go's `codes.Code` prints it, which is what `grpc_code` holds in the libraries
/// whose dashboards query these families (`OK`, `Canceled`, `Unavailable`, ...).
pub fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[derive(Debug, Clone)]
pub(super) struct GrpcMetrics {
    started: IntCounterVec,
    handled: IntCounterVec,
    handling: HistogramVec,
}

impl GrpcMetrics {
    /// Registers the three families with a zero-valued series per method (handled: with `OK`,
    /// the one code every method answers).
    pub(super) fn register(registry: &Registry) -> GrpcMetrics {
        let call = ["grpc_type", "grpc_service", "grpc_method"];
        let started = IntCounterVec::new(
            Opts::new(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
            ),
            &call,
        )
        .expect("valid metric");
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
            ),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )
        .expect("valid metric");
        let handling = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            )
            .buckets(DEFAULT_BUCKETS.to_vec()),
            &call,
        )
        .expect("valid metric");
        registry.register(Box::new(started.clone())).expect("unique metric");
        registry.register(Box::new(handled.clone())).expect("unique metric");
        registry.register(Box::new(handling.clone())).expect("unique metric");
        let services = METHODS
            .iter()
            .map(|m| (SERVICE_NAME, *m))
            .chain(TRANSCRIPT_METHODS.iter().map(|m| (TRANSCRIPT_SERVICE_NAME, *m)));
        for (service, method) in services {
            let labels = [grpc_type(method), service, method];
            started.with_label_values(&labels);
            handling.with_label_values(&labels);
            handled.with_label_values(&[labels[0], service, method, go_code_name(tonic::Code::Ok)]);
        }
        GrpcMetrics {
            started,
            handled,
            handling,
        }
    }

    pub(super) fn started(&self, service: &str, method: &str) {
        self.started
            .with_label_values(&[grpc_type(method), service, method])
            .inc();
    }

    pub(super) fn handled(&self, service: &str, method: &str, code: tonic::Code, took: Duration) {
        let kind = grpc_type(method);
        self.handled
            .with_label_values(&[kind, service, method, go_code_name(code)])
            .inc();
        self.handling
            .with_label_values(&[kind, service, method])
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    #[test]
    fn the_method_lists_and_their_grpc_types_are_the_contracts() {
        let set = FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut seen = Vec::new();
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                let listed: &[&str] = match name.as_str() {
                    SERVICE_NAME => &METHODS,
                    TRANSCRIPT_SERVICE_NAME => &TRANSCRIPT_METHODS,
                    other => panic!("service {other} has no method list"),
                };
                for method in &service.method {
                    assert!(
                        listed.contains(&method.name()),
                        "{name}/{} is not listed",
                        method.name()
                    );
                    assert!(!method.client_streaming(), "{name}/{}", method.name());
                    let expected = if method.server_streaming() {
                        "server_stream"
                    } else {
                        "unary"
                    };
                    assert_eq!(grpc_type(method.name()), expected, "{name}/{}", method.name());
                    seen.push(method.name().to_owned());
                }
            }
        }
        for method in METHODS.iter().chain(&TRANSCRIPT_METHODS) {
            assert!(seen.iter().any(|m| m == method), "{method} is not in the contract");
        }
    }

    #[test]
    fn codes_are_spelled_as_go_prints_them() {
        assert_eq!(go_code_name(tonic::Code::Ok), "OK");
        assert_eq!(go_code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(go_code_name(tonic::Code::Unavailable), "Unavailable");
        assert_eq!(go_code_name(tonic::Code::InvalidArgument), "InvalidArgument");
        assert_eq!(go_code_name(tonic::Code::DeadlineExceeded), "DeadlineExceeded");
    }
}
