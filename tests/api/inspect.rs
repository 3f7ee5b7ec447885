//! Inspect (issue 19 point 4) through the real gRPC API on both stores: a key's stored row, its
//! tombstone (and whether Get still reports it), nothing for a key never used; a bad key is
//! INVALID_ARGUMENT naming the field. Inspect writes nothing: a row found expired stays.
//! The token and namespace rules are checked with the other RPCs' in `security.rs`.

use chrono::TimeDelta;
use sessionkeeper::domain::Binding;
use sessionkeeper::proto::{self, ResultClass, TombstoneReason};
use tonic::Code;

use crate::helpers::TestApp;
use crate::support::Backend;
use crate::support::fixtures::{domain_binding, domain_key, key, no_conversation_found, pod, report_request};

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

crate::on_both_stores!(
    inspect_shows_the_row_then_after_a_clear_the_tombstone,
    inspect_writes_nothing_an_expired_row_stays,
    inspect_without_a_key_is_invalid_argument_naming_the_field,
);
