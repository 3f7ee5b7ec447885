//! The network edge: the gRPC service (handlers, conversions, the status mapping), tokens, TLS,
//! connection limits and handshake deadlines, overload shedding, per-call spans, health and reflection (v1 and v1alpha), and the plain HTTP port with
//! `/metrics`, `/livez` and `/readyz`.

pub mod admission;
pub mod auth;
pub mod convert;
pub mod grpc;
pub mod health;
pub mod http;
pub mod observe;
pub mod reflection;
mod status;
pub mod tls;
pub mod transport;

use crate::metrics::METHODS;
use crate::proto::SERVICE_NAME;

/// The method of a SessionService path (`/sessionkeeper.v1.SessionService/Get` → `Get`).
pub(crate) fn session_method(path: &str) -> Option<&'static str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service != SERVICE_NAME {
        return None;
    }
    METHODS.into_iter().find(|m| *m == method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_session_service_methods_are_observed_and_limited() {
        assert_eq!(session_method("/sessionkeeper.v1.SessionService/Get"), Some("Get"));
        assert_eq!(
            session_method("/sessionkeeper.v1.SessionService/ReportResult"),
            Some("ReportResult")
        );
        assert_eq!(session_method("/grpc.health.v1.Health/Check"), None);
        assert_eq!(session_method("/sessionkeeper.v1.SessionService/Nope"), None);
        assert_eq!(session_method("garbage"), None);
    }
}
