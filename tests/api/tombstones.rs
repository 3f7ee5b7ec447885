//! Get's rule 1 with tombstones (issue 19) through the real gRPC API on both stores: no row and a
//! current tombstone → START_FRESH / CLEARED with the tombstone's details; no row and no tombstone
//! (never used, or the tombstone's time is up) → NO_SESSION; a row found expired still answers
//! EXPIRED first. A Sweep deletes tombstones past their time without counting them as rows.

use std::time::Duration;

use chrono::TimeDelta;
use sessionkeeper::domain::{Binding, Policy};
use sessionkeeper::proto::{self, Decision, FreshReason, ResultClass, TombstoneReason};

use crate::helpers::TestApp;
use crate::support::Backend;
use crate::support::fixtures::{domain_binding, domain_key, key, no_conversation_found, pod, report_request, success};

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap(),
    }
}

async fn a_gone_resume_then_get_starts_fresh_as_cleared_with_the_tombstone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("t-gone");
    app.put_row(
        &domain_key(&conversation),
        "s-a",
        TimeDelta::hours(1),
        domain_binding(&pod("b")),
    )
    .await;
    let r = app
        .report(report_request(
            &conversation,
            "s-a",
            no_conversation_found("s-a", "x"),
            "",
        ))
        .await
        .expect("report");
    assert_eq!(r.action(), proto::Action::Cleared);
    let cleared_at = app.clock_now();
    app.clock.advance(TimeDelta::minutes(5));

    let d = app.get(&conversation, Some(pod("a"))).await;
    assert_eq!(
        (d.decision(), d.fresh_reason()),
        (Decision::StartFresh, FreshReason::Cleared)
    );
    assert_eq!(
        (d.session_id.as_str(), d.binding.as_ref()),
        ("", None),
        "no row is described"
    );
    let t = d.tombstone.expect("the tombstone's details");
    assert_eq!(t.session_id, "s-a");
    assert_eq!(t.reason(), TombstoneReason::ClearedGone);
    assert_eq!(t.result_class(), ResultClass::SessionGone);
    assert_eq!(t.matched_signature, "no conversation found");
    assert_eq!(t.reported_binding, Some(pod("a")));
    assert_eq!(t.stored_binding, Some(pod("b")));
    assert_eq!(t.cleared_at, Some(timestamp(cleared_at)));
}

async fn a_key_never_used_is_no_session_and_a_forgotten_one_is_cleared(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let never = key("t-never");
    let d = app.get(&never, None).await;
    assert_eq!((d.fresh_reason(), d.tombstone), (FreshReason::NoSession, None));

    let forgotten = key("t-forgotten");
    app.put_row(&domain_key(&forgotten), "s1", TimeDelta::hours(1), Binding::default())
        .await;
    let existed = app
        .client
        .clone()
        .forget(proto::ForgetRequest {
            key: Some(forgotten.clone()),
        })
        .await
        .expect("forget")
        .into_inner()
        .existed;
    assert!(existed);
    let d = app.get(&forgotten, None).await;
    assert_eq!(d.fresh_reason(), FreshReason::Cleared);
    let t = d.tombstone.expect("a tombstone");
    assert_eq!(
        (t.session_id.as_str(), t.reason(), t.result_class(), t.reported_binding),
        ("s1", TombstoneReason::Forgotten, ResultClass::Unspecified, None)
    );
}

async fn a_row_found_expired_answers_expired_and_the_next_get_cleared(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("t-expired");
    app.put_row(
        &domain_key(&conversation),
        "s-old",
        TimeDelta::hours(25),
        domain_binding(&pod("a")),
    )
    .await;
    let first = app.get(&conversation, None).await;
    assert_eq!((first.fresh_reason(), first.tombstone), (FreshReason::Expired, None));
    let second = app.get(&conversation, None).await;
    assert_eq!(second.fresh_reason(), FreshReason::Cleared);
    let t = second.tombstone.expect("a tombstone");
    assert_eq!(
        (t.session_id.as_str(), t.reason(), t.stored_binding),
        ("s-old", TombstoneReason::Expired, Some(pod("a")))
    );
}

async fn a_tombstone_counts_for_the_agents_ttl_then_the_key_is_no_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("t-ttl");
    app.put_row(
        &domain_key(&conversation),
        "s1",
        TimeDelta::hours(1),
        Binding::default(),
    )
    .await;
    app.report(report_request(
        &conversation,
        "s1",
        no_conversation_found("s1", "x"),
        "",
    ))
    .await
    .expect("report");
    app.clock.advance(TimeDelta::hours(24) - TimeDelta::microseconds(1));
    assert_eq!(app.get(&conversation, None).await.fresh_reason(), FreshReason::Cleared);
    app.clock.advance(TimeDelta::microseconds(1));
    let d = app.get(&conversation, None).await;
    assert_eq!((d.fresh_reason(), d.tombstone), (FreshReason::NoSession, None));
}

async fn a_configured_tombstone_ttl_applies_and_the_sweep_deletes_tombstones_uncounted(backend: Backend) {
    let policy = Policy {
        tombstone_ttl: Some(Duration::from_secs(3600)),
        ..Policy::default()
    };
    let app = TestApp::spawn_with_policy(backend, policy).await;
    let conversation = key("t-short");
    app.put_row(
        &domain_key(&conversation),
        "s1",
        TimeDelta::hours(1),
        Binding::default(),
    )
    .await;
    app.client
        .clone()
        .forget(proto::ForgetRequest {
            key: Some(conversation.clone()),
        })
        .await
        .expect("forget");
    app.clock.advance(TimeDelta::minutes(59));
    assert_eq!(app.get(&conversation, None).await.fresh_reason(), FreshReason::Cleared);
    app.clock.advance(TimeDelta::minutes(1));
    assert_eq!(
        app.get(&conversation, None).await.fresh_reason(),
        FreshReason::NoSession
    );
    assert!(app.store.tombstone(&domain_key(&conversation)).await.unwrap().is_some());
    // The sweep deletes what was written strictly before its cutoff, as it does rows; a dry run
    // counts it and deletes nothing.
    app.clock.advance(TimeDelta::seconds(1));
    let sweep = |dry_run: bool| {
        let mut client = app.client.clone();
        let namespace = conversation.namespace.clone();
        async move {
            client
                .sweep(proto::SweepRequest {
                    namespace,
                    agent: String::new(),
                    dry_run,
                })
                .await
                .expect("sweep")
                .into_inner()
        }
    };
    let counted = sweep(true).await;
    assert_eq!((counted.deleted, counted.tombstones_deleted), (0, 1), "dry run");
    assert!(app.store.tombstone(&domain_key(&conversation)).await.unwrap().is_some());
    let swept = sweep(false).await;
    assert_eq!((swept.deleted, swept.tombstones_deleted), (0, 1));
    assert_eq!(app.store.tombstone(&domain_key(&conversation)).await.unwrap(), None);
}

async fn a_success_after_a_clear_resumes_and_deletes_the_tombstone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("t-again");
    app.put_row(
        &domain_key(&conversation),
        "s1",
        TimeDelta::hours(1),
        Binding::default(),
    )
    .await;
    app.report(report_request(
        &conversation,
        "s1",
        no_conversation_found("s1", "x"),
        "",
    ))
    .await
    .expect("gone");
    app.report(report_request(&conversation, "", success("s2", 2), "r-2"))
        .await
        .expect("success");
    let d = app.get(&conversation, None).await;
    assert_eq!(
        (d.decision(), d.session_id.as_str(), d.tombstone),
        (Decision::Resume, "s2", None)
    );
    assert_eq!(app.store.tombstone(&domain_key(&conversation)).await.unwrap(), None);
}

/// The cause of a SESSION_GONE resume (issue 19 point 3) on the metric: stored on one host and
/// resumed on another is routed_elsewhere; a row stored without a binding gives unknown.
async fn a_gone_resume_counts_its_cause_on_the_metric(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let series = |cause: &str| {
        format!("sessionkeeper_resume_failures_total{{agent=\"coder\",cause=\"{cause}\",reason=\"session_gone\"}} 1")
    };
    let elsewhere = key("t-cause-elsewhere");
    app.put_row(
        &domain_key(&elsewhere),
        "s-e",
        TimeDelta::hours(1),
        domain_binding(&pod("b")),
    )
    .await;
    app.report(report_request(&elsewhere, "s-e", no_conversation_found("s-e", "x"), ""))
        .await
        .expect("report");
    let (_, metrics) = app.http_get("/metrics").await;
    assert!(metrics.contains(&series("routed_elsewhere")), "{metrics}");
    assert!(!metrics.contains("cause=\"lost_in_place\""), "{metrics}");

    let unbound = key("t-cause-unknown");
    app.put_row(&domain_key(&unbound), "s-u", TimeDelta::hours(1), Binding::default())
        .await;
    app.report(report_request(&unbound, "s-u", no_conversation_found("s-u", "x"), ""))
        .await
        .expect("report");
    let (_, metrics) = app.http_get("/metrics").await;
    assert!(metrics.contains(&series("unknown")), "{metrics}");
}

crate::on_both_stores!(
    a_gone_resume_counts_its_cause_on_the_metric,
    a_gone_resume_then_get_starts_fresh_as_cleared_with_the_tombstone,
    a_key_never_used_is_no_session_and_a_forgotten_one_is_cleared,
    a_row_found_expired_answers_expired_and_the_next_get_cleared,
    a_tombstone_counts_for_the_agents_ttl_then_the_key_is_no_session,
    a_configured_tombstone_ttl_applies_and_the_sweep_deletes_tombstones_uncounted,
    a_success_after_a_clear_resumes_and_deletes_the_tombstone,
);
