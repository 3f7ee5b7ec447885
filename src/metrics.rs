//! Prometheus metrics: every family SPEC §6 lists, in one registry owned by the process (no global
//! state), registered at start and pre-populated with zero-valued series where the label values
//! are known, so the first scrape shows them all. Served as Prometheus text on `/metrics`.
//! What the store counts itself (its pool, its batches) is read from it at scrape time and handed
//! to [`Metrics::render`]; the store never sees this module.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, exponential_buckets,
};

use crate::domain::{Action, Decision, FreshReason, ResultClass, ResumeFailureCause};
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
    pub const ALL: [SweepTrigger; 5] = [
        SweepTrigger::Startup,
        SweepTrigger::Periodic,
        SweepTrigger::Rpc,
        SweepTrigger::Cli,
        SweepTrigger::Read,
    ];

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

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    decisions: IntCounterVec,
    reports: IntCounterVec,
    resume_failures: IntCounterVec,
    swept: IntCounterVec,
    transcripts_deleted: IntCounterVec,
    sweep_duration: HistogramVec,
    rpc_duration: HistogramVec,
    store_connections: IntGaugeVec,
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
                "Store pool connections, by state (idle, in_use, max)",
            ),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(store_connections.clone()))
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
            for action in Action::ALL {
                reports.with_label_values(&[class.as_str(), action.as_str()]);
            }
        }
        for trigger in SweepTrigger::ALL {
            swept.with_label_values(&[trigger.as_str()]);
            sweep_duration.with_label_values(&[trigger.as_str()]);
        }
        for reason in TRANSCRIPT_DELETE_REASONS {
            transcripts_deleted.with_label_values(&[reason]);
        }
        for method in METHODS.into_iter().chain(TRANSCRIPT_METHODS) {
            rpc_duration.with_label_values(&[method, "OK"]);
        }
        for state in ["idle", "in_use", "max"] {
            store_connections.with_label_values(&[state]);
        }
        Metrics {
            registry,
            decisions,
            reports,
            resume_failures,
            swept,
            transcripts_deleted,
            sweep_duration,
            rpc_duration,
            store_connections,
            store_batches,
            store_batched_calls,
            transcripts,
            copying_batch_stats: Arc::default(),
        }
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

    /// `cause`: why a SESSION_GONE resume failed; `none` for the other classes.
    pub fn record_resume_failure(&self, agent: &str, class: ResultClass, cause: Option<ResumeFailureCause>) {
        let cause = cause.map_or("none", ResumeFailureCause::as_str);
        self.resume_failures
            .with_label_values(&[agent, class.as_str(), cause])
            .inc();
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

    pub fn record_rpc(&self, method: &str, code: tonic::Code, took: Duration) {
        self.rpc_duration
            .with_label_values(&[method, code_name(code)])
            .observe(took.as_secs_f64());
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
        self.store_connections
            .with_label_values(&["max"])
            .set(i64::from(pool.max));
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
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_from_the_first_scrape() {
        let text = Metrics::new().render(
            PoolStats {
                size: 3,
                idle: 1,
                max: 16,
            },
            &[],
        );
        for family in [
            "sessionkeeper_decisions_total{decision=\"start_fresh\",reason=\"expired\"} 0",
            "sessionkeeper_reports_total{action=\"cleared\",result_class=\"session_gone\"} 0",
            "# TYPE sessionkeeper_resume_failures_total counter",
            "sessionkeeper_swept_total{trigger=\"read\"} 0",
            "sessionkeeper_sweep_duration_seconds_count{trigger=\"startup\"} 0",
            "sessionkeeper_rpc_duration_seconds_count{code=\"OK\",method=\"Get\"} 0",
            "sessionkeeper_store_connections{state=\"in_use\"} 2",
            "sessionkeeper_store_connections{state=\"max\"} 16",
            "# TYPE sessionkeeper_store_batches_total counter",
            "# TYPE sessionkeeper_store_batched_calls_total counter",
            "sessionkeeper_build_info{version=",
            "sessionkeeper_transcript_appends_total{result=\"append_id_reused\"} 0",
            "sessionkeeper_transcript_entries_appended_total 0",
            "sessionkeeper_transcript_duplicates_total 0",
            "sessionkeeper_transcript_loads_total{found=\"false\"} 0",
            "sessionkeeper_transcript_bytes 0",
            "sessionkeeper_transcript_entries 0",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
    }

    #[test]
    fn recorded_values_show_up() {
        let metrics = Metrics::new();
        metrics.record_decision(Decision::StartFresh(FreshReason::Expired));
        metrics.record_resume_failure(
            "coder",
            ResultClass::SessionGone,
            Some(ResumeFailureCause::RoutedElsewhere),
        );
        metrics.record_swept(SweepTrigger::Periodic, 7);
        metrics.record_transcript_append(TranscriptAppendResult::Appended, 3, 2);
        metrics.record_transcript_load(true);
        metrics.set_transcript_totals(TranscriptTotals {
            transcripts: 1,
            entries: 3,
            bytes: 120,
        });
        let text = metrics.render(PoolStats::default(), &[]);
        for series in [
            "sessionkeeper_transcript_appends_total{result=\"appended\"} 1",
            "sessionkeeper_transcript_entries_appended_total 3",
            "sessionkeeper_transcript_duplicates_total 2",
            "sessionkeeper_transcript_loads_total{found=\"true\"} 1",
            "sessionkeeper_transcript_bytes 120",
            "sessionkeeper_transcript_entries 3",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
        assert!(text.contains("sessionkeeper_decisions_total{decision=\"start_fresh\",reason=\"expired\"} 1"));
        assert!(text.contains(
            "sessionkeeper_resume_failures_total{agent=\"coder\",cause=\"routed_elsewhere\",reason=\"session_gone\"} 1"
        ));
        assert!(text.contains("sessionkeeper_swept_total{trigger=\"periodic\"} 7"));
    }

    #[test]
    fn the_stores_batch_counts_show_as_counters_that_follow_the_store() {
        let metrics = Metrics::new();
        let load = |batches, calls| BatchStats {
            operation: "load",
            batches,
            calls,
        };
        let text = metrics.render(PoolStats::default(), &[load(2, 5)]);
        assert!(
            text.contains("sessionkeeper_store_batches_total{operation=\"load\"} 2"),
            "{text}"
        );
        assert!(text.contains("sessionkeeper_store_batched_calls_total{operation=\"load\"} 5"));
        let text = metrics.render(PoolStats::default(), &[load(7, 40)]);
        assert!(
            text.contains("sessionkeeper_store_batches_total{operation=\"load\"} 7"),
            "{text}"
        );
        assert!(text.contains("sessionkeeper_store_batched_calls_total{operation=\"load\"} 40"));
    }
}
