//! Which OpenTelemetry semantic conventions the spans follow, chosen once at start-up from
//! `OTEL_SEMCONV_STABILITY_OPT_IN` (a comma-separated list, as the OpenTelemetry migration plans
//! define it): `rpc` / `database` switch the server span / the store spans to the current stable
//! names, `rpc/dup` / `database/dup` emit the old and the stable names side by side (the `/dup`
//! value wins when both are listed), anything else keeps SPEC §6's names. Pure values and
//! tables only: the span code asks [`Emit`] what to record, this file never touches a span or
//! reads the environment itself (the binary calls [`SemconvMode::parse`] once).

/// The standard variable the binary reads once at start-up.
pub const OPT_IN_VARIABLE: &str = "OTEL_SEMCONV_STABILITY_OPT_IN";

/// Which names one category of spans carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// SPEC §6's names (`rpc.system`, `rpc.grpc.status_code`, `db.system`, `db.operation`).
    #[default]
    Old,
    /// The current stable names only.
    Stable,
    /// Both; where one key has a different value in each, the stable value.
    Dup,
}

impl Emit {
    pub fn old(self) -> bool {
        matches!(self, Emit::Old | Emit::Dup)
    }

    pub fn stable(self) -> bool {
        matches!(self, Emit::Stable | Emit::Dup)
    }
}

/// The conventions of the RPC server spans and of the store (database client) spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SemconvMode {
    pub rpc: Emit,
    pub database: Emit,
}

impl SemconvMode {
    /// Reads the variable's value (`None` when unset). Values are trimmed and compared without
    /// case; values for other categories (`http`, `messaging`…) and unknown ones are ignored.
    pub fn parse(value: Option<&str>) -> SemconvMode {
        let values: Vec<String> = value
            .unwrap_or_default()
            .split(',')
            .map(|v| v.trim().to_ascii_lowercase())
            .collect();
        let category = |name: &str| {
            if values.iter().any(|v| *v == format!("{name}/dup")) {
                Emit::Dup
            } else if values.iter().any(|v| v == name) {
                Emit::Stable
            } else {
                Emit::Old
            }
        };
        SemconvMode {
            rpc: category("rpc"),
            database: category("database"),
        }
    }
}

/// The gRPC status code's name as the stable `rpc.response.status_code` and `error.type` carry it
/// (`OK`, `DEADLINE_EXCEEDED`…).
pub fn grpc_status_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One store call the lifecycle service makes, as its span describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCall {
    SessionLoad,
    HistoryRead,
    MainTranscript,
    DeleteIfUnchanged,
    StoreResult,
    ReportOnRow,
    Forget,
    Sweep,
    SweepDryRun,
}

impl StoreCall {
    /// SPEC §6's name: the span's name and `db.operation` by default.
    pub fn name(self) -> &'static str {
        match self {
            StoreCall::SessionLoad => "session.load",
            StoreCall::HistoryRead => "history.read",
            StoreCall::MainTranscript => "transcript.main",
            StoreCall::DeleteIfUnchanged => "session.delete_if_unchanged",
            StoreCall::StoreResult => "session.store_result",
            StoreCall::ReportOnRow => "session.report_on_row",
            StoreCall::Forget => "session.forget",
            StoreCall::Sweep | StoreCall::SweepDryRun => "session.sweep",
        }
    }

    /// The stable `db.operation.name`: the SQL verb of the statement that does the call's work
    /// (a write of the session row is an upsert, `INSERT … ON CONFLICT DO UPDATE`); `BATCH` for a
    /// transaction of different statements, `BATCH <verb>` for many statements of one verb, as
    /// the database conventions name batches.
    pub fn operation(self) -> &'static str {
        match self {
            StoreCall::SessionLoad | StoreCall::HistoryRead | StoreCall::MainTranscript => "SELECT",
            StoreCall::DeleteIfUnchanged | StoreCall::Forget => "DELETE",
            StoreCall::StoreResult => "INSERT",
            StoreCall::ReportOnRow => "BATCH",
            StoreCall::Sweep => "BATCH DELETE",
            StoreCall::SweepDryRun => "BATCH SELECT",
        }
    }

    /// The stable `db.collection.name`: the table the call works on, when there is one.
    pub fn collection(self) -> Option<&'static str> {
        match self {
            StoreCall::SessionLoad
            | StoreCall::DeleteIfUnchanged
            | StoreCall::StoreResult
            | StoreCall::ReportOnRow
            | StoreCall::Forget => Some("session"),
            StoreCall::HistoryRead => Some("history"),
            StoreCall::MainTranscript => Some("transcript"),
            StoreCall::Sweep | StoreCall::SweepDryRun => None,
        }
    }

    /// The stable span name, `{db.operation.name} {db.collection.name}` (the operation alone when
    /// the call has no one table).
    pub fn stable_span_name(self) -> &'static str {
        match self {
            StoreCall::SessionLoad => "SELECT session",
            StoreCall::HistoryRead => "SELECT history",
            StoreCall::MainTranscript => "SELECT transcript",
            StoreCall::DeleteIfUnchanged | StoreCall::Forget => "DELETE session",
            StoreCall::StoreResult => "INSERT session",
            StoreCall::ReportOnRow => "BATCH session",
            StoreCall::Sweep => "BATCH DELETE",
            StoreCall::SweepDryRun => "BATCH SELECT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CALLS: [StoreCall; 9] = [
        StoreCall::SessionLoad,
        StoreCall::HistoryRead,
        StoreCall::MainTranscript,
        StoreCall::DeleteIfUnchanged,
        StoreCall::StoreResult,
        StoreCall::ReportOnRow,
        StoreCall::Forget,
        StoreCall::Sweep,
        StoreCall::SweepDryRun,
    ];

    fn mode(rpc: Emit, database: Emit) -> SemconvMode {
        SemconvMode { rpc, database }
    }

    #[test]
    fn the_opt_in_list_picks_each_categorys_names() {
        use Emit::*;
        for (value, expected) in [
            (None, mode(Old, Old)),
            (Some(""), mode(Old, Old)),
            (Some("http"), mode(Old, Old)),
            (Some("rpc"), mode(Stable, Old)),
            (Some("database"), mode(Old, Stable)),
            (Some("rpc,database"), mode(Stable, Stable)),
            (Some(" rpc , database "), mode(Stable, Stable)),
            (Some("RPC,Database"), mode(Stable, Stable)),
            (Some("rpc/dup"), mode(Dup, Old)),
            (Some("database/dup"), mode(Old, Dup)),
            (Some("rpc/dup,database/dup"), mode(Dup, Dup)),
            // `/dup` wins over the plain value, in either order.
            (Some("rpc,rpc/dup"), mode(Dup, Old)),
            (Some("database/dup,database"), mode(Old, Dup)),
            (Some("http/dup,rpc,messaging"), mode(Stable, Old)),
            // Not a category name: neither a prefix nor a misspelling counts.
            (Some("rp,databases,rpc/dupe"), mode(Old, Old)),
        ] {
            assert_eq!(SemconvMode::parse(value), expected, "{value:?}");
        }
    }

    #[test]
    fn dup_emits_both_names_and_each_mode_only_its_own() {
        assert!(Emit::Old.old() && !Emit::Old.stable());
        assert!(!Emit::Stable.old() && Emit::Stable.stable());
        assert!(Emit::Dup.old() && Emit::Dup.stable());
    }

    #[test]
    fn status_names_are_the_grpc_code_names() {
        for (code, name) in [
            (tonic::Code::Ok, "OK"),
            (tonic::Code::InvalidArgument, "INVALID_ARGUMENT"),
            (tonic::Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (tonic::Code::Unavailable, "UNAVAILABLE"),
            (tonic::Code::Unauthenticated, "UNAUTHENTICATED"),
        ] {
            assert_eq!(grpc_status_name(code), name);
        }
    }

    #[test]
    fn every_store_call_has_an_operation_name_and_a_span_name_made_of_it() {
        for call in ALL_CALLS {
            let expected = match call.collection() {
                Some(collection) => format!("{} {collection}", call.operation()),
                None => call.operation().to_owned(),
            };
            assert_eq!(call.stable_span_name(), expected, "{call:?}");
            let verb = call.operation().trim_start_matches("BATCH").trim();
            assert!(
                ["", "SELECT", "INSERT", "DELETE"].contains(&verb),
                "{call:?}: {}",
                call.operation()
            );
        }
        assert_eq!(StoreCall::SessionLoad.name(), "session.load");
        assert_eq!(StoreCall::SessionLoad.operation(), "SELECT");
    }
}
