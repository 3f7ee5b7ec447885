//! The one mapping from errors to gRPC status codes: the services' (sessions and transcripts), and
//! the server edge's own (authentication and namespace access). Callers get a short, safe message;
//! internal details (SQL, connection strings) are logged here and never returned.

use tonic::Status;
use tracing::{error, warn};

use super::auth::{AccessDenied, AuthError};
use crate::service::ServiceError;
use crate::store::StoreError;

/// Logged error texts are cut to this many bytes (a driver error can quote a whole statement).
const MAX_LOGGED_ERROR_BYTES: usize = 300;

fn clip(text: &str) -> &str {
    let mut end = text.len().min(MAX_LOGGED_ERROR_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::InvalidArgument(field) => Status::invalid_argument(field.to_string()),
            ServiceError::ReportIdReused { .. } | ServiceError::AppendIdReused { .. } => {
                Status::already_exists(err.to_string())
            }
            ServiceError::TranscriptFull { .. } => Status::failed_precondition(err.to_string()),
            ServiceError::TranscriptDeletedDuringLoad => Status::aborted(err.to_string()),
            ServiceError::Store(store) => match store {
                StoreError::Unavailable(detail) => {
                    warn!(error = clip(&detail.to_string()), "store unavailable");
                    Status::unavailable("session store unavailable, retry later")
                }
                StoreError::NotMigrated { found, needed } => {
                    warn!(found, needed, "store schema not migrated");
                    Status::unavailable("session store not migrated yet, retry later")
                }
                StoreError::ClockSkew(detail) => {
                    warn!(error = clip(&detail), "clock skew");
                    Status::unavailable(detail)
                }
                // Reports take their locks in one order and never deadlock; should the database
                // still abort a transaction, nothing was changed and the call may be retried.
                StoreError::Conflict(detail) => {
                    warn!(error = clip(&detail.to_string()), "store conflict");
                    Status::unavailable("concurrent update conflict, retry")
                }
                StoreError::Corrupt(detail) | StoreError::Damaged(detail) => {
                    error!(error = clip(&detail), "store holds an unreadable value");
                    Status::internal("internal error")
                }
                StoreError::Other(detail) => {
                    error!(error = clip(&detail.to_string()), "store error");
                    Status::internal("internal error")
                }
            },
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        Status::unauthenticated(err.to_string())
    }
}

impl From<AccessDenied> for Status {
    fn from(err: AccessDenied) -> Self {
        Status::permission_denied(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::domain::FieldError;

    #[test]
    fn every_service_error_has_its_code() {
        let cases = [
            (
                ServiceError::InvalidArgument(FieldError::new("key.agent", "must not be empty")),
                Code::InvalidArgument,
            ),
            (
                ServiceError::ReportIdReused { report_id: "r".into() },
                Code::AlreadyExists,
            ),
            (
                ServiceError::AppendIdReused { append_id: "a".into() },
                Code::AlreadyExists,
            ),
            (
                ServiceError::TranscriptFull {
                    byte_count: 10,
                    limit: 12,
                },
                Code::FailedPrecondition,
            ),
            (ServiceError::TranscriptDeletedDuringLoad, Code::Aborted),
            (
                ServiceError::Store(StoreError::Unavailable("pool timed out".into())),
                Code::Unavailable,
            ),
            (
                ServiceError::Store(StoreError::NotMigrated { found: 0, needed: 1 }),
                Code::Unavailable,
            ),
            (
                ServiceError::Store(StoreError::ClockSkew("this host's clock is 3600.0 s ahead".into())),
                Code::Unavailable,
            ),
            (
                ServiceError::Store(StoreError::Other("syntax error at or near".into())),
                Code::Internal,
            ),
            (
                ServiceError::Store(StoreError::Conflict("deadlock detected".into())),
                Code::Unavailable,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
        assert_eq!(Status::from(AuthError::Unknown).code(), Code::Unauthenticated);
        assert_eq!(Status::from(AuthError::Missing).code(), Code::Unauthenticated);
        let denied = AccessDenied {
            caller: "t".into(),
            what: "namespace \"x\"".into(),
        };
        assert_eq!(Status::from(denied).code(), Code::PermissionDenied);
    }

    #[test]
    fn invalid_argument_names_the_field_and_internal_errors_hide_details() {
        let status = Status::from(ServiceError::InvalidArgument(FieldError::new(
            "key.agent",
            "must not be empty",
        )));
        assert_eq!(status.message(), "key.agent: must not be empty");
        let status = Status::from(ServiceError::Store(StoreError::Other("password=hunter2".into())));
        assert!(!status.message().contains("hunter2"));
    }
}
