//! Observability through the real thing: `/metrics` scraped over HTTP before and after a stale
//! session report, concurrent Gets, calls that succeed, fail and stream (the `grpc_server_*`,
//! `process_*` and pool families), and resume failures of named and unknown agents (folding)
//! (traces: `traces.rs`).

use std::time::Duration;

use sessionkeeper::domain::{AgentPolicy, Policy};
use sessionkeeper::metrics::FOLDED_AGENT;
use sessionkeeper::proto;
use sessionkeeper::proto::transcript_service_client::TranscriptServiceClient;

use crate::helpers::{TestApp, new_store, test_config};
use crate::support::Backend;
use crate::support::fixtures::{key, no_conversation_found, report_request, success};

/// The value of a counter series in a Prometheus text exposition (0 when absent).
fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn a_stale_session_report_moves_the_counters_on_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, before) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "sessionkeeper_decisions_total",
        "sessionkeeper_reports_total",
        "sessionkeeper_resume_failures_total",
        "sessionkeeper_swept_total",
        "sessionkeeper_sweep_duration_seconds",
        "sessionkeeper_rpc_duration_seconds",
        "sessionkeeper_store_connections",
        "sessionkeeper_store_batches_total",
        "sessionkeeper_store_batched_calls_total",
        "sessionkeeper_build_info",
    ] {
        assert!(
            before.contains(&format!("# TYPE {family} ")),
            "{family} exported from the first scrape"
        );
    }
    let gone = "sessionkeeper_reports_total{action=\"cleared\",result_class=\"session_gone\"}";
    // Stored and failed on the same binding: the transcript was lost in place (issue 19).
    let wasted = "sessionkeeper_resume_failures_total{agent=\"coder\",cause=\"lost_in_place\",reason=\"session_gone\"}";
    // The Get after the clear finds the key's tombstone (issue 19).
    let fresh = "sessionkeeper_decisions_total{decision=\"start_fresh\",reason=\"cleared\"}";
    let get_ok = "sessionkeeper_rpc_duration_seconds_count{code=\"OK\",method=\"Get\"}";

    let conversation = key("metered");
    app.report(report_request(&conversation, "", success("s1", 1), ""))
        .await
        .unwrap();
    app.report(report_request(
        &conversation,
        "s1",
        no_conversation_found("s1", "s2"),
        "",
    ))
    .await
    .unwrap();
    app.get(&conversation, None).await;

    let (_, after) = app.http_get("/metrics").await;
    assert_eq!(sample(&after, gone) - sample(&before, gone), 1.0, "{after}");
    assert_eq!(sample(&after, wasted) - sample(&before, wasted), 1.0);
    assert_eq!(sample(&after, fresh) - sample(&before, fresh), 1.0);
    assert_eq!(sample(&after, get_ok) - sample(&before, get_ok), 1.0);
}

/// The standard families after real calls: the gRPC server families count a Get that succeeds,
/// one refused INVALID_ARGUMENT and a LoadTranscript stream read to its end; the process families
/// are there; the pool's limit is its own gauge, the store's configured maximum; report pairs
/// that cannot occur are not pre-populated.
async fn the_standard_families_count_real_calls_on_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, before) = app.http_get("/metrics").await;
    let get = "grpc_method=\"Get\",grpc_service=\"sessionkeeper.v1.SessionService\",grpc_type=\"unary\"";
    let load = "grpc_method=\"LoadTranscript\",grpc_service=\"sessionkeeper.v1.TranscriptService\",grpc_type=\"server_stream\"";
    let get_ok = format!("grpc_server_handled_total{{grpc_code=\"OK\",{get}}}");
    let get_invalid = format!("grpc_server_handled_total{{grpc_code=\"InvalidArgument\",{get}}}");
    let load_ok = format!("grpc_server_handled_total{{grpc_code=\"OK\",{load}}}");
    assert!(before.contains(&format!("{get_ok} 0")), "pre-populated:\n{before}");
    assert!(!before.contains(&get_invalid), "only OK is pre-populated");

    app.get(&key("standard"), None).await;
    let refused = app
        .client
        .clone()
        .get(proto::GetRequest {
            key: Some(proto::SessionKey {
                agent: String::new(),
                ..key("standard")
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let mut stream = TranscriptServiceClient::new(app.channel.clone())
        .load_transcript(proto::LoadTranscriptRequest {
            key: Some(proto::TranscriptKey {
                namespace: "acme".into(),
                project_key: "-work-repo".into(),
                session_id: "never-written".into(),
                subpath: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}

    let (_, after) = app.http_get("/metrics").await;
    let grew = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(grew(&get_ok), 1.0, "{after}");
    assert_eq!(grew(&get_invalid), 1.0, "{after}");
    assert_eq!(grew(&format!("grpc_server_started_total{{{get}}}")), 2.0);
    assert_eq!(grew(&format!("grpc_server_handling_seconds_count{{{get}}}")), 2.0);
    assert_eq!(grew(&load_ok), 1.0, "{after}");
    assert_eq!(grew(&format!("grpc_server_started_total{{{load}}}")), 1.0);
    assert_eq!(grew(&format!("grpc_server_handling_seconds_count{{{load}}}")), 1.0);
    assert_eq!(
        grew("sessionkeeper_rpc_duration_seconds_count{code=\"INVALID_ARGUMENT\",method=\"Get\"}"),
        1.0,
        "SPEC §6's family stays"
    );

    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        assert!(after.contains(&format!("# TYPE {family} ")), "{family} in\n{after}");
    }
    assert!(sample(&after, "process_resident_memory_bytes ") > 0.0);
    assert!(sample(&after, "process_open_fds ") > 0.0);

    let configured = match backend {
        Backend::Postgres => crate::support::pg_settings("").max_connections,
        Backend::Sqlite => crate::support::sqlite_settings(std::path::Path::new("")).max_connections,
    };
    assert_eq!(
        sample(&after, "sessionkeeper_store_connections_max "),
        f64::from(configured),
        "{after}"
    );
    assert!(!after.contains("state=\"max\""), "the limit is no state:\n{after}");

    for impossible in [
        "sessionkeeper_reports_total{action=\"stored\",result_class=\"session_gone\"}",
        "sessionkeeper_reports_total{action=\"cleared\",result_class=\"success\"}",
        "sessionkeeper_reports_total{action=\"cleared\",result_class=\"quota\"}",
        "sessionkeeper_swept_total{trigger=\"cli\"}",
    ] {
        assert!(!after.contains(impossible), "{impossible} cannot occur:\n{after}");
    }
    let pairs = after
        .lines()
        .filter(|l| l.starts_with("sessionkeeper_reports_total{"))
        .count();
    assert_eq!(pairs, 15, "the pairs a report can lead to:\n{after}");
}

/// With `metrics_fold_unknown_agents`, resume failures of an agent the policy names keep its name
/// and those of any other agent share one label value; callers cannot grow the series.
async fn folding_counts_agents_the_policy_does_not_name_as_one_on_metrics(backend: Backend) {
    let mut policy = Policy::default();
    policy.agents.insert(
        "reviewer".into(),
        AgentPolicy {
            ttl: Duration::from_secs(3600),
        },
    );
    let handle = new_store(backend).await;
    let mut config = test_config(&handle, policy);
    config.metrics_fold_unknown_agents = true;
    let app = TestApp::start_with_config(handle, config, crate::support::t0()).await;
    app.wait_until_ready().await;

    let agents = ["reviewer", "coder", "caller-invented-1", "caller-invented-2"];
    for agent in agents {
        let conversation = proto::SessionKey {
            agent: agent.into(),
            ..key("folded")
        };
        app.report(report_request(&conversation, "", success("s1", 1), ""))
            .await
            .unwrap();
        app.report(report_request(
            &conversation,
            "s1",
            no_conversation_found("s1", "s2"),
            "",
        ))
        .await
        .unwrap();
    }

    let (_, after) = app.http_get("/metrics").await;
    let wasted = |agent: &str| {
        format!(
            "sessionkeeper_resume_failures_total{{agent=\"{agent}\",cause=\"lost_in_place\",reason=\"session_gone\"}}"
        )
    };
    assert_eq!(sample(&after, &wasted("reviewer")), 1.0, "{after}");
    assert_eq!(sample(&after, &wasted(FOLDED_AGENT)), 3.0, "{after}");
    for unnamed in &agents[1..] {
        assert!(
            !after.contains(&format!("agent=\"{unnamed}\"")),
            "{unnamed} is folded:\n{after}"
        );
    }
}

crate::on_both_stores!(
    a_stale_session_report_moves_the_counters_on_metrics,
    the_standard_families_count_real_calls_on_metrics,
    folding_counts_agents_the_policy_does_not_name_as_one_on_metrics,
);

/// Postgres coalesces loads: the counters of its batches count every Get's load, in at most as
/// many batches as calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_grow_the_store_batch_counters_on_metrics() {
    // Under the default admission limit (64), so none is shed.
    const GETS: usize = 32;
    let app = TestApp::spawn(Backend::Postgres).await;
    let batches = "sessionkeeper_store_batches_total{operation=\"load\"}";
    let calls = "sessionkeeper_store_batched_calls_total{operation=\"load\"}";
    let (_, before) = app.http_get("/metrics").await;
    assert!(
        before.contains(batches),
        "the load series shows from the first scrape:\n{before}"
    );

    let gets: Vec<_> = (0..GETS)
        .map(|i| {
            let client = app.client.clone();
            let conversation = key(&format!("batched-{i}"));
            tokio::spawn(async move {
                client
                    .clone()
                    .get(proto::GetRequest {
                        key: Some(conversation),
                        binding: None,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().decision)
            })
        })
        .collect();
    for get in gets {
        assert_eq!(get.await.unwrap().unwrap(), proto::Decision::StartFresh as i32);
    }

    let (_, after) = app.http_get("/metrics").await;
    let batched = sample(&after, batches) - sample(&before, batches);
    let answered = sample(&after, calls) - sample(&before, calls);
    assert_eq!(answered, GETS as f64, "one load per Get:\n{after}");
    assert!(
        (1.0..=answered).contains(&batched),
        "{batched} batches for {answered} calls"
    );
}

/// The exposition of a real scrape passes `promtool check metrics` (scripts/test installs the
/// Debian `prometheus` package for it; a missing promtool fails this test, it never skips).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_scrape_passes_promtool_check_metrics() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let app = TestApp::spawn(Backend::Sqlite).await;
    app.report(report_request(&key("p"), "s0", no_conversation_found("s0", "s1"), ""))
        .await
        .unwrap();
    app.get(&key("p"), None).await;
    let (_, exposition) = app.http_get("/metrics").await;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: install the Debian package `prometheus` (scripts/test does)");
    promtool.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
