//! Prometheus metrics: every family SPEC §6 lists, in one registry owned by the process (no global
//! state), registered at start and pre-populated with zero-valued series where the label values
//! are known, so the first scrape shows them all. Served as Prometheus text on `/metrics`.
//! What the store counts itself (its pool, its batches) is read from it at scrape time and handed
//! to [`Metrics::render`]; the store never sees this module. Only label values that can occur are
//! pre-populated (report pairs come from [`ResultClass::possible_actions`]). The `process_*`
//! families come from the prometheus crate's process collector (Linux), the `grpc_server_*`
//! families from [`grpc`]. The `agent` label's values come from callers: with
//! `fold_unknown_agents`, agents the policy does not name are counted as [`FOLDED_AGENT`].

mod grpc;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, exponential_buckets,
};

pub use self::grpc::{SERVER_STREAMING_METHODS, go_code_name, grpc_type};
use crate::domain::{Action, Decision, FreshReason, Policy, ResultClass, ResumeFailureCause};
use crate::store::{BatchStats, PoolStats, TranscriptTotals};

/// What became of a transcript append (`transcript_appends_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptAppendResult {
    Appended,
    Replayed,
    Full,
    AppendIdReused,
}

impl TranscriptAppendResult {
    pub const ALL: [TranscriptAppendResult; 4] = [
        TranscriptAppendResult::Appended,
        TranscriptAppendResult::Replayed,
        TranscriptAppendResult::Full,
        TranscriptAppendResult::AppendIdReused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptAppendResult::Appended => "appended",
            TranscriptAppendResult::Replayed => "replayed",
            TranscriptAppendResult::Full => "full",
            TranscriptAppendResult::AppendIdReused => "append_id_reused",
        }
    }
}

/// The transcript families (issue 18): appends, entries, loads, and the stored totals.
#[derive(Debug, Clone)]
struct TranscriptMetrics {
    appends: IntCounterVec,
    entries_appended: IntCounter,
    duplicates: IntCounter,
    loads: IntCounterVec,
    bytes: IntGauge,
    entries: IntGauge,
}

impl TranscriptMetrics {
    fn register(registry: &Registry) -> TranscriptMetrics {
        let appends = IntCounterVec::new(
            Opts::new(
                "sessionkeeper_transcript_appends_total",
                "Transcript appends, by result (appended, replayed, full, append_id_reused)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let entries_appended = IntCounter::new(
            "sessionkeeper_transcript_entries_appended_total",
            "Transcript entries stored by appends",
        )
        .expect("valid metric");
        let duplicates = IntCounter::new(
            "sessionkeeper_transcript_duplicates_total",
            "Transcript entries skipped by appends: their uuid was already stored",
        )
        .expect("valid metric");
        let loads = IntCounterVec::new(
            Opts::new(
                "sessionkeeper_transcript_loads_total",
                "Transcript loads, by whether the transcript was found",
            ),
            &["found"],
        )
        .expect("valid metric");
        let bytes = IntGauge::new(
            "sessionkeeper_transcript_bytes",
            "Bytes of entry text stored in all transcripts (refreshed periodically)",
        )
        .expect("valid metric");
        let entries = IntGauge::new(
            "sessionkeeper_transcript_entries",
            "Entries stored in all transcripts (refreshed periodically)",
        )
        .expect("valid metric");
        for collector in [
            Box::new(appends.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(entries_appended.clone()),
            Box::new(duplicates.clone()),
            Box::new(loads.clone()),
            Box::new(bytes.clone()),
            Box::new(entries.clone()),
        ] {
            registry.register(collector).expect("unique metric");
        }
        for result in TranscriptAppendResult::ALL {
            appends.with_label_values(&[result.as_str()]);
        }
        for found in ["true", "false"] {
            loads.with_label_values(&[found]);
        }
        TranscriptMetrics {
            appends,
            entries_appended,
            duplicates,
            loads,
            bytes,
            entries,
        }
    }
}

/// What started a sweep (`swept_total{trigger}`): `read` is Get deleting an expired row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepTrigger {
    Startup,
    Periodic,
    Rpc,
    Cli,
    Read,
}

impl SweepTrigger {
    /// The triggers a server's `/metrics` can show: `cli` runs in the `sweep` command's own
    /// process, whose metrics nobody scrapes.
    pub const IN_SERVER: [SweepTrigger; 4] = [
        SweepTrigger::Startup,
        SweepTrigger::Periodic,
        SweepTrigger::Rpc,
        SweepTrigger::Read,
    ];

    /// Whether this trigger runs a sweep pass (timed by `sweep_duration_seconds`); `read` deletes
    /// the one expired row a Get found.
    pub fn runs_a_pass(self) -> bool {
        self != SweepTrigger::Read
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SweepTrigger::Startup => "startup",
            SweepTrigger::Periodic => "periodic",
            SweepTrigger::Rpc => "rpc",
            SweepTrigger::Cli => "cli",
            SweepTrigger::Read => "read",
        }
    }
}

/// The gRPC methods of the session service, for zero-valued latency series.
pub const METHODS: [&str; 5] = ["Get", "ReportResult", "Sweep", "Forget", "Inspect"];
/// The gRPC methods of the transcript service (no name is shared with [`METHODS`], so `method`
/// alone says which service was called).
pub const TRANSCRIPT_METHODS: [&str; 5] = [
    "AppendEntries",
    "LoadTranscript",
    "ListTranscriptSessions",
    "ListSubkeys",
    "DeleteTranscript",
];

/// Why transcripts were deleted (`transcripts_deleted_total{reason}`): with their session id
/// (`cleared` by a report, `forgotten`, `expired` on read, `swept` with an expired row), or by
/// the sweep (`orphan`: no row holds the id and the last append is older than default_ttl;
/// `graced`: past the grace period after the id went away).
pub const TRANSCRIPT_DELETE_REASONS: [&str; 6] = ["cleared", "forgotten", "expired", "swept", "orphan", "graced"];

/// The `agent` label value of agents folded by `fold_unknown_agents`: not a valid agent name, so it
/// never stands for one agent.
pub const FOLDED_AGENT: &str = "(other)";

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Count agents the policy does not name (`[policy.agents.*]`) as [`FOLDED_AGENT`].
    fold_unknown_agents: bool,
    decisions: IntCounterVec,
    reports: IntCounterVec,
    resume_failures: IntCounterVec,
    swept: IntCounterVec,
    transcripts_deleted: IntCounterVec,
    sweep_duration: HistogramVec,
    rpc_duration: HistogramVec,
    grpc: grpc::GrpcMetrics,
    store_connections: IntGaugeVec,
    store_connections_max: IntGauge,
    store_batches: IntCounterVec,
    store_batched_calls: IntCounterVec,
    transcripts: TranscriptMetrics,
    /// Held while the store's batch counts are copied into the two counters above, so two scrapes
    /// at once never add the same growth twice.
    copying_batch_stats: Arc<Mutex<()>>,
}

fn decision_labels(decision: Decision) -> [&'static str; 2] {
    match decision {
        Decision::Resume => ["resume", ""],
        Decision::StartFresh(reason) => ["start_fresh", reason.as_str()],
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("unique metric");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let family = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(family.clone())).expect("unique metric");
            family
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let family =
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
            registry.register(Box::new(family.clone())).expect("unique metric");
            family
        };
        let decisions = counter(
            "sessionkeeper_decisions_total",
            "Get answers, by decision and fresh reason (empty with resume)",
            &["decision", "reason"],
        );
        let reports = counter(
            "sessionkeeper_reports_total",
            "Reports applied, by result class and action (idempotent repeats are not counted)",
            &["result_class", "action"],
        );
        let resume_failures = counter(
            "sessionkeeper_resume_failures_total",
            "Runs that resumed a session and failed, by agent, result class and (for session_gone) cause: \
             wasted resume attempts",
            &["agent", "reason", "cause"],
        );
        let swept = counter(
            "sessionkeeper_swept_total",
            "Expired session rows deleted, by what triggered the deletion",
            &["trigger"],
        );
        let transcripts_deleted = counter(
            "sessionkeeper_transcripts_deleted_total",
            "Transcripts deleted by the lifecycle, by reason (cleared, forgotten, expired, swept, orphan, graced)",
            &["reason"],
        );
        let sweep_duration = histogram(
            "sessionkeeper_sweep_duration_seconds",
            "Duration of sweep passes, by trigger",
            &["trigger"],
            exponential_buckets(0.001, 4.0, 10).expect("buckets"),
        );
        let rpc_duration = histogram(
            "sessionkeeper_rpc_duration_seconds",
            "Server-side duration of SessionService and TranscriptService calls, by method and gRPC status code",
            &["method", "code"],
            exponential_buckets(0.0001, 2.0, 17).expect("buckets"),
        );
        let store_connections = IntGaugeVec::new(
            Opts::new(
                "sessionkeeper_store_connections",
                "Store pool connections open, by state (idle, in_use); their sum is the pool's size",
            ),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(store_connections.clone()))
            .expect("unique metric");
        let store_connections_max = IntGauge::new(
            "sessionkeeper_store_connections_max",
            "Most connections the store pool opens",
        )
        .expect("valid metric");
        registry
            .register(Box::new(store_connections_max.clone()))
            .expect("unique metric");
        let store_batches = counter(
            "sessionkeeper_store_batches_total",
            "Batches the store ran for coalesced calls, by operation (load, report, expiry_delete, write)",
            &["operation"],
        );
        let store_batched_calls = counter(
            "sessionkeeper_store_batched_calls_total",
            "Calls the store answered in batches, by operation; divided by batches: the mean batch size",
            &["operation"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new("sessionkeeper_build_info", "Always 1; the version is a label"),
            &["version"],
        )
        .expect("valid metric");
        registry.register(Box::new(build_info.clone())).expect("unique metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let transcripts = TranscriptMetrics::register(&registry);
        let grpc = grpc::GrpcMetrics::register(&registry);

        // Zero-valued series for every known label set.
        decisions.with_label_values(&decision_labels(Decision::Resume));
        for reason in [
            FreshReason::NoSession,
            FreshReason::Expired,
            FreshReason::BindingMismatch,
            FreshReason::Cleared,
        ] {
            decisions.with_label_values(&decision_labels(Decision::StartFresh(reason)));
        }
        for class in ResultClass::ALL {
            for action in class.possible_actions() {
                reports.with_label_values(&[class.as_str(), action.as_str()]);
            }
        }
        for trigger in SweepTrigger::IN_SERVER {
            swept.with_label_values(&[trigger.as_str()]);
            if trigger.runs_a_pass() {
                sweep_duration.with_label_values(&[trigger.as_str()]);
            }
        }
        for reason in TRANSCRIPT_DELETE_REASONS {
            transcripts_deleted.with_label_values(&[reason]);
        }
        for method in METHODS.into_iter().chain(TRANSCRIPT_METHODS) {
            rpc_duration.with_label_values(&[method, "OK"]);
        }
        for state in ["idle", "in_use"] {
            store_connections.with_label_values(&[state]);
        }
        Metrics {
            registry,
            fold_unknown_agents: false,
            decisions,
            reports,
            resume_failures,
            swept,
            transcripts_deleted,
            sweep_duration,
            rpc_duration,
            grpc,
            store_connections,
            store_connections_max,
            store_batches,
            store_batched_calls,
            transcripts,
            copying_batch_stats: Arc::default(),
        }
    }

    /// Counts agents the policy does not name as [`FOLDED_AGENT`] (`metrics_fold_unknown_agents`).
    pub fn folding_unknown_agents(mut self, fold: bool) -> Metrics {
        self.fold_unknown_agents = fold;
        self
    }

    /// One transcript append's result, with the entries it stored and skipped as duplicates.
    pub fn record_transcript_append(&self, result: TranscriptAppendResult, stored: u64, duplicates: u64) {
        self.transcripts.appends.with_label_values(&[result.as_str()]).inc();
        self.transcripts.entries_appended.inc_by(stored);
        self.transcripts.duplicates.inc_by(duplicates);
    }

    /// One transcript load, by whether the transcript was found.
    pub fn record_transcript_load(&self, found: bool) {
        let found = if found { "true" } else { "false" };
        self.transcripts.loads.with_label_values(&[found]).inc();
    }

    /// What all transcripts hold, as last read from the store.
    pub fn set_transcript_totals(&self, totals: TranscriptTotals) {
        self.transcripts
            .bytes
            .set(i64::try_from(totals.bytes).unwrap_or(i64::MAX));
        self.transcripts
            .entries
            .set(i64::try_from(totals.entries).unwrap_or(i64::MAX));
    }

    pub fn record_decision(&self, decision: Decision) {
        self.decisions.with_label_values(&decision_labels(decision)).inc();
    }

    pub fn record_report(&self, class: ResultClass, action: Action) {
        self.reports.with_label_values(&[class.as_str(), action.as_str()]).inc();
    }

    /// `cause`: why a SESSION_GONE resume failed; `none` for the other classes. `policy`: the
    /// current one, whose `[policy.agents.*]` are the agents never folded.
    pub fn record_resume_failure(
        &self,
        policy: &Policy,
        agent: &str,
        class: ResultClass,
        cause: Option<ResumeFailureCause>,
    ) {
        let cause = cause.map_or("none", ResumeFailureCause::as_str);
        let agent = self.agent_label(policy, agent);
        self.resume_failures
            .with_label_values(&[agent, class.as_str(), cause])
            .inc();
    }

    /// The `agent` label value of `agent`: itself, or [`FOLDED_AGENT`] when folding and the policy
    /// does not name it.
    fn agent_label<'a>(&self, policy: &Policy, agent: &'a str) -> &'a str {
        if self.fold_unknown_agents && !policy.agents.contains_key(agent) {
            FOLDED_AGENT
        } else {
            agent
        }
    }

    pub fn record_swept(&self, trigger: SweepTrigger, rows: u64) {
        self.swept.with_label_values(&[trigger.as_str()]).inc_by(rows);
    }

    /// `reason` is one of [`TRANSCRIPT_DELETE_REASONS`].
    pub fn record_transcripts_deleted(&self, reason: &'static str, transcripts: u64) {
        self.transcripts_deleted
            .with_label_values(&[reason])
            .inc_by(transcripts);
    }

    pub fn record_sweep_duration(&self, trigger: SweepTrigger, took: Duration) {
        self.sweep_duration
            .with_label_values(&[trigger.as_str()])
            .observe(took.as_secs_f64());
    }

    /// `sessionkeeper_rpc_duration_seconds`: a call until its response starts.
    pub fn record_rpc(&self, method: &str, code: tonic::Code, took: Duration) {
        self.rpc_duration
            .with_label_values(&[method, code_name(code)])
            .observe(took.as_secs_f64());
    }

    /// `grpc_server_started_total`: a call of the API began.
    pub fn record_grpc_started(&self, service: &str, method: &str) {
        self.grpc.started(service, method);
    }

    /// `grpc_server_handled_total` and `grpc_server_handling_seconds`: a call of the API ended
    /// with `code` (a stream: when its status is sent), `took` after it began.
    pub fn record_grpc_handled(&self, service: &str, method: &str, code: tonic::Code, took: Duration) {
        self.grpc.handled(service, method, code, took);
    }

    /// The exposition in Prometheus text format, with the pool and the batch counts read from the
    /// store at this instant.
    pub fn render(&self, pool: PoolStats, batches: &[BatchStats]) -> String {
        self.store_connections
            .with_label_values(&["idle"])
            .set(i64::from(pool.idle));
        self.store_connections
            .with_label_values(&["in_use"])
            .set(i64::from(pool.size.saturating_sub(pool.idle)));
        self.store_connections_max.set(i64::from(pool.max));
        {
            // The store's counts only grow: each counter takes the growth since the last scrape.
            let _copying = self.copying_batch_stats.lock().unwrap_or_else(|e| e.into_inner());
            for stats in batches {
                let counted = self.store_batches.with_label_values(&[stats.operation]);
                counted.inc_by(stats.batches.saturating_sub(counted.get()));
                let counted = self.store_batched_calls.with_label_values(&[stats.operation]);
                counted.inc_by(stats.calls.saturating_sub(counted.get()));
            }
        }
        let families = self.registry.gather();
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buffer)
            .expect("text encoding never fails");
        let mut text = String::from_utf8(buffer).expect("exposition is utf-8");
        // A family whose label values are not known yet (resume failures by agent, batches of a
        // store that coalesces nothing) has no series; the registry leaves it out, so declare it
        // here: every family shows from the first scrape.
        for collector in [&self.resume_failures, &self.store_batches, &self.store_batched_calls] {
            for desc in prometheus::core::Collector::desc(collector) {
                if !families.iter().any(|f| f.name() == desc.fq_name) {
                    text.push_str(&format!(
                        "# HELP {} {}\n# TYPE {} counter\n",
                        desc.fq_name, desc.help, desc.fq_name
                    ));
                }
            }
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The canonical upper-case name of a gRPC status code (`OK`, `UNAVAILABLE`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests;
