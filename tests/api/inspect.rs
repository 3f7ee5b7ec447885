//! Inspect (issue 19 point 4) through the real gRPC API on both stores: a key's stored row, its
//! tombstone (and whether Get still reports it), nothing for a key never used; a bad key is
//! INVALID_ARGUMENT naming the field. Inspect writes nothing: a row found expired stays. The
//! history (issue 19 point 2): every change's event, oldest first, across ids, with what each
//! report said (and the cause of a SESSION_GONE resume); a Get writes no event (its expiry's
//! delete writes `expired`); `[policy] history_events` bounds it.
//! The token and namespace rules are checked with the other RPCs' in `security.rs`.

use chrono::TimeDelta;
use sessionkeeper::domain::{Binding, Policy};
use sessionkeeper::proto::{self, Action, HistoryEventKind, ResultClass, ResumeFailureCause, TombstoneReason};
use tonic::Code;

use crate::helpers::TestApp;
use crate::support::Backend;
use crate::support::fixtures::{
    domain_binding, domain_key, key, no_conversation_found, pod, report_request, success, transient_failure,
};

async fn inspect(app: &TestApp, key: &proto::SessionKey) -> Result<proto::InspectResponse, tonic::Status> {
    app.client
        .clone()
        .inspect(proto::InspectRequest { key: Some(key.clone()) })
        .await
        .map(tonic::Response::into_inner)
}

async fn inspect_shows_the_row_then_after_a_clear_the_tombstone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("i-gone");
    let never = inspect(&app, &key("i-never")).await.expect("inspect");
    assert_eq!(never, proto::InspectResponse::default());

    app.put_row(
        &domain_key(&conversation),
        "s-a",
        TimeDelta::hours(1),
        domain_binding(&pod("b")),
    )
    .await;
    let seen = inspect(&app, &conversation).await.expect("inspect");
    let session = seen.session.expect("the row");
    assert_eq!(
        (session.session_id.as_str(), session.binding, session.failure_count),
        ("s-a", Some(pod("b")), 0)
    );
    let (last, expires) = (session.last_used_at.unwrap(), session.expires_at.unwrap());
    assert_eq!(expires.seconds - last.seconds, 24 * 3600);
    assert_eq!(seen.tombstone, None);

    app.report(report_request(
        &conversation,
        "s-a",
        no_conversation_found("s-a", "x"),
        "",
    ))
    .await
    .expect("report");
    let seen = inspect(&app, &conversation).await.expect("inspect");
    assert_eq!(seen.session, None);
    assert!(!seen.tombstone_expired);
    let t = seen.tombstone.expect("the tombstone");
    assert_eq!(
        (
            t.session_id.as_str(),
            t.reason(),
            t.result_class(),
            t.matched_signature.as_str()
        ),
        (
            "s-a",
            TombstoneReason::ClearedGone,
            ResultClass::SessionGone,
            "no conversation found"
        )
    );
    assert_eq!((t.reported_binding, t.stored_binding), (Some(pod("a")), Some(pod("b"))));

    // Past the agent's TTL the tombstone is still shown until swept, marked expired.
    app.clock.advance(TimeDelta::hours(24));
    let seen = inspect(&app, &conversation).await.expect("inspect");
    assert!(seen.tombstone.is_some() && seen.tombstone_expired);
}

async fn inspect_writes_nothing_an_expired_row_stays(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("i-expired");
    app.put_row(
        &domain_key(&conversation),
        "s-old",
        TimeDelta::hours(30),
        Binding::default(),
    )
    .await;
    let seen = inspect(&app, &conversation).await.expect("inspect");
    assert_eq!(seen.session.map(|s| s.session_id), Some("s-old".to_owned()));
    assert!(app.store.load(&domain_key(&conversation)).await.unwrap().is_some());
    assert_eq!(app.store.tombstone(&domain_key(&conversation)).await.unwrap(), None);
}

async fn inspect_without_a_key_is_invalid_argument_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let err = app
        .client
        .clone()
        .inspect(proto::InspectRequest { key: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("key"), "{}", err.message());
    let bad = proto::SessionKey {
        agent: "bad agent".into(),
        ..key("c")
    };
    let err = inspect(&app, &bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("key.agent"), "{}", err.message());
}

fn kinds(history: &[proto::HistoryEvent]) -> Vec<(HistoryEventKind, &str)> {
    history.iter().map(|e| (e.kind(), e.session_id.as_str())).collect()
}

async fn inspect_shows_the_history_across_ids_oldest_first_and_a_get_writes_no_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("i-history");
    let stored_from = proto::ReportResultRequest {
        binding: Some(pod("b")),
        ..report_request(&conversation, "", success("s-a", 4), "r-1")
    };
    app.report(stored_from.clone()).await.expect("report");
    app.report(stored_from).await.expect("a replay");
    let resumed = app.get(&conversation, Some(pod("b"))).await;
    assert_eq!(resumed.session_id, "s-a");
    app.clock.advance(TimeDelta::minutes(1));
    // The resume ran on pod a while the transcript lived on pod b.
    app.report(report_request(
        &conversation,
        "s-a",
        no_conversation_found("s-a", "x"),
        "",
    ))
    .await
    .expect("report");
    let before_get = inspect(&app, &conversation).await.expect("inspect").history;
    app.get(&conversation, Some(pod("a"))).await;
    app.get(&conversation, None).await;
    assert_eq!(inspect(&app, &conversation).await.expect("inspect").history, before_get);
    app.clock.advance(TimeDelta::minutes(1));
    app.report(report_request(&conversation, "", success("s-b", 2), ""))
        .await
        .expect("report");
    // A Get past the TTL deletes the row: that delete writes the expired event.
    app.clock.advance(TimeDelta::hours(25));
    app.get(&conversation, Some(pod("a"))).await;

    let history = inspect(&app, &conversation).await.expect("inspect").history;
    assert_eq!(
        kinds(&history),
        [
            (HistoryEventKind::Stored, "s-a"),
            (HistoryEventKind::Cleared, "s-a"),
            (HistoryEventKind::Stored, "s-b"),
            (HistoryEventKind::Expired, "s-b"),
        ]
    );
    let stored = &history[0];
    assert_eq!(
        (
            stored.result_class(),
            stored.action(),
            stored.num_turns,
            stored.binding.clone()
        ),
        (ResultClass::Success, Action::Stored, 4, Some(pod("b")))
    );
    let cleared = &history[1];
    assert_eq!(
        (
            cleared.result_class(),
            cleared.action(),
            cleared.resumed_session_id.as_str(),
            cleared.matched_signature.as_str(),
            cleared.cause()
        ),
        (
            ResultClass::SessionGone,
            Action::Cleared,
            "s-a",
            "no conversation found",
            ResumeFailureCause::RoutedElsewhere
        )
    );
    assert_eq!(cleared.binding, Some(pod("a")));
    assert!(cleared.at.as_ref().unwrap().seconds > stored.at.as_ref().unwrap().seconds);
    let expired = &history[3];
    assert_eq!(
        (expired.result_class(), expired.binding.as_ref(), expired.cause()),
        (ResultClass::Unspecified, None, ResumeFailureCause::Unspecified)
    );
}

async fn the_policys_history_events_bounds_the_history(backend: Backend) {
    let policy = Policy {
        history_events: 2,
        ..Policy::default()
    };
    let app = TestApp::spawn_with_policy(backend, policy).await;
    let conversation = key("i-bounded");
    for _ in 0..3 {
        app.report(report_request(&conversation, "", transient_failure(), ""))
            .await
            .expect("report");
        app.clock.advance(TimeDelta::seconds(1));
    }
    app.report(report_request(&conversation, "", success("s-c", 1), ""))
        .await
        .expect("report");
    let history = inspect(&app, &conversation).await.expect("inspect").history;
    assert_eq!(
        kinds(&history),
        [(HistoryEventKind::Reported, ""), (HistoryEventKind::Stored, "s-c")]
    );
    assert_eq!(history[0].result_class(), ResultClass::Transient);
}

crate::on_both_stores!(
    inspect_shows_the_history_across_ids_oldest_first_and_a_get_writes_no_event,
    the_policys_history_events_bounds_the_history,
    inspect_shows_the_row_then_after_a_clear_the_tombstone,
    inspect_writes_nothing_an_expired_row_stays,
    inspect_without_a_key_is_invalid_argument_naming_the_field,
);
