//! Get through the server: TTL on read with per-agent policy, binding mismatch, the stored row
//! described in the response.

use std::time::Duration;

use chrono::TimeDelta;
use sessionkeeper::domain::{AgentPolicy, Binding, Policy};
use sessionkeeper::proto::{self, Decision, FreshReason};

use crate::helpers::TestApp;
use crate::support::Backend;
use crate::support::fixtures::{domain_binding, domain_key, key, pod};

async fn a_row_25_hours_old_is_expired_and_deleted_on_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("old");
    app.put_row(
        &domain_key(&conversation),
        "s-old",
        TimeDelta::hours(25),
        Binding::default(),
    )
    .await;

    let d = app.get(&conversation, None).await;
    assert_eq!(d.decision(), Decision::StartFresh);
    assert_eq!(d.fresh_reason(), FreshReason::Expired);
    assert_eq!(d.session_id, "");
    assert!(
        app.store.load(&domain_key(&conversation)).await.unwrap().is_none(),
        "the row is gone"
    );
}

async fn a_row_1_hour_old_resumes_and_get_does_not_extend_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("recent");
    app.put_row(
        &domain_key(&conversation),
        "s-recent",
        TimeDelta::hours(1),
        domain_binding(&pod("a")),
    )
    .await;
    let before = app.store.load(&domain_key(&conversation)).await.unwrap().unwrap();

    let d = app.get(&conversation, Some(pod("a"))).await;
    assert_eq!(d.decision(), Decision::Resume);
    assert_eq!(d.session_id, "s-recent");
    let last_used = d.last_used_at.expect("last_used_at");
    assert_eq!(last_used.seconds, before.last_used_at.timestamp());
    let expires = d.expires_at.expect("expires_at");
    assert_eq!(expires.seconds - last_used.seconds, 24 * 3600, "default ttl 24 h");
    assert_eq!(d.binding, Some(pod("a")));

    app.clock.advance(TimeDelta::hours(2));
    app.get(&conversation, None).await;
    let after = app.store.load(&domain_key(&conversation)).await.unwrap().unwrap();
    assert_eq!(
        after.last_used_at, before.last_used_at,
        "Get never extends a row's life"
    );
}

async fn an_agent_ttl_from_the_policy_applies_to_that_agent_only(backend: Backend) {
    let mut policy = Policy::default();
    policy.agents.insert(
        "reviewer".into(),
        AgentPolicy {
            ttl: Duration::from_secs(2 * 3600),
        },
    );
    let app = TestApp::spawn_with_policy(backend, policy).await;
    let reviewer = proto::SessionKey {
        agent: "reviewer".into(),
        ..key("pr-7")
    };
    let coder = key("pr-7");
    for k in [&reviewer, &coder] {
        app.put_row(&domain_key(k), "s", TimeDelta::hours(3), Binding::default())
            .await;
    }
    assert_eq!(app.get(&reviewer, None).await.fresh_reason(), FreshReason::Expired);
    assert_eq!(app.get(&coder, None).await.decision(), Decision::Resume);
}

async fn another_binding_starts_fresh_and_keeps_the_row_for_its_host(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("bound");
    app.put_row(
        &domain_key(&conversation),
        "s-a",
        TimeDelta::hours(1),
        domain_binding(&pod("a")),
    )
    .await;

    let d = app.get(&conversation, Some(pod("b"))).await;
    assert_eq!(d.decision(), Decision::StartFresh);
    assert_eq!(d.fresh_reason(), FreshReason::BindingMismatch);
    assert_eq!(d.session_id, "");
    assert_eq!(
        d.binding,
        Some(pod("a")),
        "the router learns where the transcript lives"
    );
    assert!(d.expires_at.is_some());

    let d = app.get(&conversation, Some(pod("a"))).await;
    assert_eq!((d.decision(), d.session_id.as_str()), (Decision::Resume, "s-a"));
}

async fn forget_deletes_the_row_whatever_its_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("reset");
    app.put_row(
        &domain_key(&conversation),
        "s1",
        TimeDelta::hours(1),
        Binding::default(),
    )
    .await;
    let mut client = app.client.clone();
    let forget = |k: &proto::SessionKey| proto::ForgetRequest { key: Some(k.clone()) };
    assert!(client.forget(forget(&conversation)).await.unwrap().into_inner().existed);
    assert!(!client.forget(forget(&conversation)).await.unwrap().into_inner().existed);
    // No row, but the key remembers it was forgotten (issue 19).
    assert_eq!(app.get(&conversation, None).await.fresh_reason(), FreshReason::Cleared);
    assert_eq!(
        app.get(&key("never-stored"), None).await.fresh_reason(),
        FreshReason::NoSession
    );
}

crate::on_both_stores!(
    a_row_25_hours_old_is_expired_and_deleted_on_read,
    a_row_1_hour_old_resumes_and_get_does_not_extend_it,
    an_agent_ttl_from_the_policy_applies_to_that_agent_only,
    another_binding_starts_fresh_and_keeps_the_row_for_its_host,
    forget_deletes_the_row_whatever_its_id,
);
