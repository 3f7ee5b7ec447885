//! Tests of the registry: every family from the first scrape, recorded values, the store's batch
//! counts, only possible label pairs pre-populated, and the folding of unknown agents.

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
        "sessionkeeper_store_connections_max 16",
        "grpc_server_started_total{grpc_method=\"Get\",grpc_service=\"sessionkeeper.v1.SessionService\",grpc_type=\"unary\"} 0",
        "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"LoadTranscript\",grpc_service=\"sessionkeeper.v1.TranscriptService\",grpc_type=\"server_stream\"} 0",
        "grpc_server_handling_seconds_count{grpc_method=\"ReportResult\",grpc_service=\"sessionkeeper.v1.SessionService\",grpc_type=\"unary\"} 0",
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
        &Policy::default(),
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

#[cfg(target_os = "linux")]
#[test]
fn the_process_families_are_exported() {
    let text = Metrics::new().render(PoolStats::default(), &[]);
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "missing {family} in\n{text}"
        );
    }
}

#[test]
fn only_label_pairs_that_can_occur_are_pre_populated() {
    let text = Metrics::new().render(PoolStats::default(), &[]);
    let mut pairs = 0;
    for class in ResultClass::ALL {
        for action in Action::ALL {
            let series = format!(
                "sessionkeeper_reports_total{{action=\"{}\",result_class=\"{}\"}} 0",
                action.as_str(),
                class.as_str()
            );
            let possible = class.possible_actions().contains(&action);
            assert_eq!(text.contains(&series), possible, "{series}");
            pairs += usize::from(possible);
        }
    }
    assert_eq!(pairs, 15);
    assert!(
        !text.contains("trigger=\"cli\""),
        "the sweep command's own process is never scraped"
    );
    assert!(text.contains("sessionkeeper_swept_total{trigger=\"read\"} 0"));
    assert!(
        !text.contains("sessionkeeper_sweep_duration_seconds_count{trigger=\"read\"}"),
        "a read deletes one row: no sweep pass is timed"
    );
    assert!(text.contains("sessionkeeper_sweep_duration_seconds_count{trigger=\"periodic\"} 0"));
    assert!(!text.contains("state=\"max\""), "the pool's limit has its own gauge");
}

#[test]
fn the_pool_states_sum_to_its_size_and_the_limit_is_apart() {
    let text = Metrics::new().render(
        PoolStats {
            size: 5,
            idle: 2,
            max: 9,
        },
        &[],
    );
    assert!(
        text.contains("sessionkeeper_store_connections{state=\"idle\"} 2"),
        "{text}"
    );
    assert!(text.contains("sessionkeeper_store_connections{state=\"in_use\"} 3"));
    assert!(text.contains("sessionkeeper_store_connections_max 9"));
}

#[test]
fn grpc_calls_count_by_type_service_method_and_go_code() {
    let metrics = Metrics::new();
    let service = crate::proto::TRANSCRIPT_SERVICE_NAME;
    metrics.record_grpc_started(service, "LoadTranscript");
    metrics.record_grpc_handled(
        service,
        "LoadTranscript",
        tonic::Code::Unavailable,
        Duration::from_millis(30),
    );
    let text = metrics.render(PoolStats::default(), &[]);
    let labels = "grpc_method=\"LoadTranscript\",grpc_service=\"sessionkeeper.v1.TranscriptService\",grpc_type=\"server_stream\"";
    for series in [
        format!("grpc_server_started_total{{{labels}}} 1"),
        format!("grpc_server_handled_total{{grpc_code=\"Unavailable\",{labels}}} 1"),
        format!("grpc_server_handled_total{{grpc_code=\"OK\",{labels}}} 0"),
        format!("grpc_server_handling_seconds_bucket{{{labels},le=\"0.025\"}} 0"),
        format!("grpc_server_handling_seconds_bucket{{{labels},le=\"0.05\"}} 1"),
    ] {
        assert!(text.contains(&series), "missing {series} in\n{text}");
    }
}

#[test]
fn folding_counts_agents_the_policy_does_not_name_as_one_label_value() {
    let mut policy = Policy::default();
    policy.agents.insert(
        "reviewer".into(),
        crate::domain::AgentPolicy {
            ttl: Duration::from_secs(60),
        },
    );
    let series = |agent: &str| {
        format!("sessionkeeper_resume_failures_total{{agent=\"{agent}\",cause=\"none\",reason=\"quota\"}}")
    };
    let metrics = Metrics::new().folding_unknown_agents(true);
    for agent in ["reviewer", "coder-1", "coder-2"] {
        metrics.record_resume_failure(&policy, agent, ResultClass::Quota, None);
    }
    let text = metrics.render(PoolStats::default(), &[]);
    assert!(text.contains(&format!("{} 1", series("reviewer"))), "{text}");
    assert!(text.contains(&format!("{} 2", series(FOLDED_AGENT))), "{text}");
    assert!(!text.contains("coder-1"), "{text}");

    let unfolded = Metrics::new();
    for agent in ["reviewer", "coder-1", "coder-2"] {
        unfolded.record_resume_failure(&policy, agent, ResultClass::Quota, None);
    }
    let text = unfolded.render(PoolStats::default(), &[]);
    assert!(
        text.contains(&format!("{} 1", series("coder-1"))),
        "off by default: {text}"
    );
    assert!(!text.contains(FOLDED_AGENT), "{text}");
}
