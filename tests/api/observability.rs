//! Observability through the real thing: `/metrics` scraped over HTTP before and after a stale
//! session report and concurrent Gets (traces: `traces.rs`).

use sessionkeeper::proto;

use crate::helpers::TestApp;
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

crate::on_both_stores!(a_stale_session_report_moves_the_counters_on_metrics);

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
