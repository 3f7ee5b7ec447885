//! Bad input: INVALID_ARGUMENT naming the field, oversized messages refused, nothing lost.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use sessionkeeper::domain::Policy;
use sessionkeeper::proto::{self, Action, Decision};
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};
use tonic::Code;

use crate::helpers::{StoreHandle, TestApp};
use crate::support::Backend;
use crate::support::fixtures::{domain_binding, domain_key, key, pod, report_request, success};

async fn bad_keys_are_invalid_argument_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let with = |namespace: &str, agent: &str, conversation: &str| proto::SessionKey {
        namespace: namespace.into(),
        agent: agent.into(),
        conversation: conversation.into(),
    };
    let long = "n".repeat(65);
    let long_conversation = "c".repeat(257);
    let cases = [
        (None, "key"),
        (Some(with("acme corp", "coder", "c")), "key.namespace"),
        (Some(with(&long, "coder", "c")), "key.namespace"),
        (Some(with("acme", "", "c")), "key.agent"),
        (Some(with("acme", "co/der", "c")), "key.agent"),
        (Some(with("acme", "coder", "")), "key.conversation"),
        (Some(with("acme", "coder", &long_conversation)), "key.conversation"),
        (Some(with("acme", "coder", "tab\there")), "key.conversation"),
        // Renders as "invoice-24" but is not: a right-to-left override, and a zero-width space.
        (Some(with("acme", "coder", "invoice-\u{202E}42")), "key.conversation"),
        (Some(with("acme", "coder", "invoice\u{200B}-42")), "key.conversation"),
    ];
    let mut client = app.client.clone();
    for (k, field) in cases {
        let err = client
            .get(proto::GetRequest {
                key: k.clone(),
                binding: None,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{k:?}");
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
        let err = client
            .forget(proto::ForgetRequest { key: k.clone() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let mut request = report_request(&key("x"), "", success("s", 1), "");
        request.key = k;
        let err = client.report_result(request).await.unwrap_err();
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
    }
}

async fn bad_reports_are_invalid_argument_naming_the_field_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("bad-report");
    let mut no_result = report_request(&conversation, "", success("s", 1), "");
    no_result.result = None;
    let mut limit = success("", 4);
    limit.is_error = true;
    limit.subtype = "error_max_turns".into();
    let cases = [
        (no_result, "result"),
        (
            report_request(&conversation, "", success("", 1), ""),
            "result.session_id",
        ),
        (report_request(&conversation, "", limit, ""), "result.session_id"),
        (
            report_request(&conversation, "", success("id\nwith-newline", 1), ""),
            "result.session_id",
        ),
    ];
    for (request, field) in cases {
        let err = app.report(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
    }
    assert_eq!(app.get(&conversation, None).await.decision(), Decision::StartFresh);
    // The rejected report's id was not consumed: the same report_id with a valid report applies.
    let mut rejected = report_request(&conversation, "", success("", 1), "dispatch-x");
    assert!(app.report(rejected.clone()).await.is_err());
    rejected.result = Some(success("s-good", 1));
    assert_eq!(app.report(rejected).await.unwrap().session_id, "s-good");
}

async fn a_rejected_report_leaves_the_stored_row_as_it_was_and_its_report_id_unused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("rejected");
    app.put_row(
        &domain_key(&conversation),
        "s-stored",
        TimeDelta::hours(1),
        domain_binding(&pod("pod-a")),
    )
    .await;
    let before = app.get(&conversation, None).await;
    // A completed run without a session id cannot be stored: refused before the store is touched.
    let mut rejected = report_request(&conversation, "s-stored", success("", 3), "dispatch-r");
    let err = app.report(rejected.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("result.session_id"), "{}", err.message());
    assert_eq!(app.get(&conversation, None).await, before, "the row is unchanged");
    rejected.result = Some(success("s-next", 3));
    let applied = app.report(rejected).await.unwrap();
    assert_eq!(
        (applied.action(), applied.session_id.as_str()),
        (Action::Stored, "s-next")
    );
}

/// Validation comes before any I/O: with the store unreachable, a bad report is still answered
/// INVALID_ARGUMENT naming the field (not UNAVAILABLE), and a good one UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_report_is_invalid_argument_even_while_the_store_is_unreachable() {
    let url = "postgres://postgres@127.0.0.1:1/sessionkeeper".to_string();
    let store = PostgresStore::connect_lazy(&PostgresSettings {
        url: url.clone(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(1),
        ..PostgresSettings::new("")
    })
    .unwrap();
    let handle = StoreHandle {
        store: Arc::new(store),
        dir: None,
        database_url: Some(url),
        backend: Backend::Postgres,
    };
    let app = TestApp::start(handle, Policy::default(), crate::support::t0()).await;
    let conversation = key("store-down");
    let err = app
        .report(report_request(&conversation, "", success("", 1), "r-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("result.session_id"), "{}", err.message());
    let err = app
        .report(report_request(&conversation, "", success("s-1", 1), "r-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

async fn an_oversized_message_is_refused_and_the_server_keeps_serving(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut huge = report_request(&key("huge"), "", success("s", 1), "");
    huge.result.as_mut().unwrap().result_text = "x".repeat(5 * 1024 * 1024);
    let err = app.report(huge).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{:?}: {}",
        err.code(),
        err.message()
    );
    let r = app
        .report(report_request(&key("huge"), "", success("s-after", 1), ""))
        .await
        .unwrap();
    assert_eq!(r.session_id, "s-after");
}

crate::on_both_stores!(
    bad_keys_are_invalid_argument_naming_the_field,
    bad_reports_are_invalid_argument_naming_the_field_and_store_nothing,
    a_rejected_report_leaves_the_stored_row_as_it_was_and_its_report_id_unused,
    an_oversized_message_is_refused_and_the_server_keeps_serving,
);
