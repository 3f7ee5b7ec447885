//! ReportResult through the server: idempotent report ids, ALREADY_EXISTS, truncation.

use sessionkeeper::proto::{self, Action, Decision, ResultClass};
use tonic::Code;

use crate::helpers::TestApp;
use crate::support::Backend;
use crate::support::fixtures::{key, no_conversation_found, report_request, success};

async fn a_repeated_report_id_returns_the_first_answer_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("idem");
    let first = app
        .report(report_request(&conversation, "", success("s1", 1), "dispatch-9"))
        .await
        .unwrap();
    assert_eq!(first.action(), Action::Stored);
    // A retry of the same dispatch carrying a different result must not change anything.
    let again = app
        .report(report_request(
            &conversation,
            "s1",
            no_conversation_found("s1", "s9"),
            "dispatch-9",
        ))
        .await
        .unwrap();
    assert_eq!(again, first);
    let d = app.get(&conversation, None).await;
    assert_eq!((d.decision(), d.session_id.as_str()), (Decision::Resume, "s1"));
}

async fn a_report_id_reused_for_another_key_is_already_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.report(report_request(&key("one"), "", success("s1", 1), "dispatch-1"))
        .await
        .unwrap();
    let err = app
        .report(report_request(&key("two"), "", success("s2", 1), "dispatch-1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("report_id"), "{}", err.message());
    assert_eq!(
        app.get(&key("two"), None).await.decision(),
        Decision::StartFresh,
        "nothing stored"
    );
    // Another namespace has its own report ids.
    let other = proto::SessionKey {
        namespace: "globex".into(),
        ..key("two")
    };
    let r = app
        .report(report_request(&other, "", success("s3", 1), "dispatch-1"))
        .await
        .unwrap();
    assert_eq!(r.action(), Action::Stored);
}

async fn over_long_result_texts_are_truncated_never_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let conversation = key("long");
    let mut result = no_conversation_found("s1", "x");
    result.errors.push("e".repeat(200_000));
    result.exception = "x".repeat(100_000);
    result.result_text = "r".repeat(100_000);
    let r = app
        .report(report_request(&conversation, "s1", result, ""))
        .await
        .unwrap();
    assert_eq!(r.result_class(), ResultClass::SessionGone);
    let mut long_success = success("s2", 1);
    long_success.result_text = "ok ".repeat(1_000_000);
    let r = app
        .report(report_request(&conversation, "", long_success, ""))
        .await
        .unwrap();
    assert_eq!(r.action(), Action::Stored);
}

crate::on_both_stores!(
    a_repeated_report_id_returns_the_first_answer_and_changes_nothing,
    a_report_id_reused_for_another_key_is_already_exists,
    over_long_result_texts_are_truncated_never_rejected,
);
