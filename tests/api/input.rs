//! Bad input: INVALID_ARGUMENT naming the field, oversized messages refused, nothing lost.

use sessionkeeper::proto::{self, Decision};
use tonic::Code;

use crate::helpers::{Backend, TestApp, key, report_request, success};

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
    ];
    let mut client = app.client.clone();
    for (k, field) in cases {
        let err = client
            .get(proto::GetRequest {
                key: k.clone(),
                binding: None,
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
    an_oversized_message_is_refused_and_the_server_keeps_serving,
);
