//! The network edge: the gRPC services (handlers, conversions, the status mapping), tokens, TLS,
//! connection limits and handshake deadlines, overload shedding, per-call spans, health and reflection (v1 and v1alpha), and the plain HTTP port with
//! `/metrics`, `/livez` and `/readyz`.

pub mod admission;
pub mod auth;
pub mod convert;
pub mod grpc;
mod handled;
pub mod health;
pub mod http;
pub mod observe;
pub mod reflection;
mod status;
pub mod tls;
pub mod transcripts;
pub mod transport;

use crate::metrics::{METHODS, TRANSCRIPT_METHODS};
use crate::proto::{SERVICE_NAME, TRANSCRIPT_SERVICE_NAME};

/// A call of the API (SessionService or TranscriptService): the calls that are observed (a span,
/// `sessionkeeper_rpc_*`, `grpc_server_*`) and limited (admission). Health and reflection calls are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApiMethod {
    /// The fully qualified service (`sessionkeeper.v1.SessionService`).
    pub service: &'static str,
    /// The method (`Get`), unique across both services.
    pub method: &'static str,
}

/// The API method of a request path (`/sessionkeeper.v1.SessionService/Get` → SessionService,
/// `Get`); None for any other service or an unknown method.
pub(crate) fn api_method(path: &str) -> Option<ApiMethod> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (service, methods): (&'static str, &[&'static str]) = match service {
        SERVICE_NAME => (SERVICE_NAME, &METHODS),
        TRANSCRIPT_SERVICE_NAME => (TRANSCRIPT_SERVICE_NAME, &TRANSCRIPT_METHODS),
        _ => return None,
    };
    let method = methods.iter().copied().find(|m| *m == method)?;
    Some(ApiMethod { service, method })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_session_and_transcript_service_methods_are_observed_and_limited() {
        let get = api_method("/sessionkeeper.v1.SessionService/Get").unwrap();
        assert_eq!((get.service, get.method), ("sessionkeeper.v1.SessionService", "Get"));
        assert_eq!(
            api_method("/sessionkeeper.v1.SessionService/ReportResult").map(|m| m.method),
            Some("ReportResult")
        );
        let append = api_method("/sessionkeeper.v1.TranscriptService/AppendEntries").unwrap();
        assert_eq!(
            (append.service, append.method),
            ("sessionkeeper.v1.TranscriptService", "AppendEntries")
        );
        for method in TRANSCRIPT_METHODS {
            let path = format!("/sessionkeeper.v1.TranscriptService/{method}");
            assert_eq!(api_method(&path).map(|m| m.method), Some(method), "{path}");
        }
        assert_eq!(api_method("/sessionkeeper.v1.TranscriptService/Get"), None);
        assert_eq!(api_method("/sessionkeeper.v1.SessionService/AppendEntries"), None);
        assert_eq!(api_method("/grpc.health.v1.Health/Check"), None);
        assert_eq!(api_method("/sessionkeeper.v1.SessionService/Nope"), None);
        assert_eq!(api_method("garbage"), None);
    }
}
