//! Request validation at the gRPC edge as properties (SPEC §3 and §4): keys, reports and
//! arbitrary bytes decoded as any request never make validation panic, and a refusal names the
//! field that breaks the rules. The strategies and the key oracle are the domain's
//! (`src/domain/arbitrary.rs`); the pure rules' own properties live beside them in `domain/`.

use proptest::prelude::*;
use prost::Message;
use sessionkeeper::domain::AgentResult;
use sessionkeeper::proto;
use sessionkeeper::server::convert;
use sessionkeeper::service::ServiceError;

#[path = "../../src/domain/arbitrary.rs"]
mod arbitrary;

use arbitrary::*;

fn proto_key() -> impl Strategy<Value = Option<proto::SessionKey>> {
    prop::option::weighted(
        0.9,
        (name(), name(), conversation()).prop_map(|(namespace, agent, conversation)| proto::SessionKey {
            namespace,
            agent,
            conversation,
        }),
    )
}

fn binding_field() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => text(),
        1 => (4094usize..4099).prop_map(|n| "b".repeat(n)),
    ]
}

fn proto_report() -> impl Strategy<Value = proto::ReportResultRequest> {
    (
        proto_key(),
        prop_oneof![text(), conversation()],
        prop::option::of(
            (binding_field(), binding_field(), binding_field(), binding_field()).prop_map(
                |(provider, host, config_dir, cwd)| proto::Binding {
                    provider,
                    host,
                    config_dir,
                    cwd,
                },
            ),
        ),
        prop::option::weighted(0.9, agent_result()),
        prop_oneof![text(), (126usize..131).prop_map(|n| "r".repeat(n))],
    )
        .prop_map(
            |(key, resumed_session_id, binding, result, report_id)| proto::ReportResultRequest {
                key,
                resumed_session_id,
                binding,
                result: result.map(|r| proto::AgentResult {
                    is_error: r.is_error,
                    subtype: r.subtype,
                    session_id: r.session_id,
                    num_turns: r.num_turns,
                    errors: r.errors,
                    terminal_reason: r.terminal_reason,
                    api_error_status: r.api_error_status,
                    exception: r.exception,
                    result_text: r.result_text,
                }),
                report_id,
            },
        )
}

/// The field an `INVALID_ARGUMENT` names.
fn invalid_field(err: ServiceError) -> &'static str {
    match err {
        ServiceError::InvalidArgument(field) => field.field,
        other => panic!("validation failed with something else than INVALID_ARGUMENT: {other:?}"),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_grpc_edge_accepts_session_keys_exactly_as_the_rules_say(namespace in name(), agent in name(), conversation in conversation()) {
        let key = proto::SessionKey { namespace: namespace.clone(), agent: agent.clone(), conversation: conversation.clone() };
        let failing = key_fields_failing(&namespace, &agent, &conversation);
        // The gRPC edge agrees with the domain.
        match convert::session_key(Some(key)) {
            Ok(_) => prop_assert!(failing.is_empty()),
            Err(e) => {
                let field = invalid_field(e);
                prop_assert!(failing.contains(&field), "{}", field);
            }
        }
    }

    #[test]
    fn report_validation_never_panics_and_rejects_only_naming_a_field(request in proto_report()) {
        let key_failing = request
            .key
            .as_ref()
            .map(|k| key_fields_failing(&k.namespace, &k.agent, &k.conversation));
        let has_result = request.result.is_some();
        match convert::report(request.clone()) {
            Ok(report) => {
                prop_assert_eq!(key_failing, Some(vec![]), "a report with a bad or missing key was accepted");
                prop_assert!(has_result);
                prop_assert_eq!(report.resumed_session_id, request.resumed_session_id);
                prop_assert_eq!(report.report_id.unwrap_or_default(), request.report_id);
            }
            Err(e) => {
                let field = invalid_field(e);
                let named = ["key", "key.namespace", "key.agent", "key.conversation", "resumed_session_id", "report_id",
                    "binding.provider", "binding.host", "binding.config_dir", "binding.cwd", "result"];
                prop_assert!(named.contains(&field), "{}", field);
                if field.starts_with("key") {
                    prop_assert!(key_failing.is_none_or(|f| f.contains(&field)), "{}", field);
                }
            }
        }
        let _ = convert::binding(request.binding.clone());
        let _ = convert::agent_result(request.result.clone());
    }

    #[test]
    fn arbitrary_bytes_decoded_as_any_request_never_make_validation_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(request) = proto::ReportResultRequest::decode(bytes.as_slice()) {
            let _ = convert::report(request);
        }
        if let Ok(request) = proto::GetRequest::decode(bytes.as_slice()) {
            let _ = convert::session_key(request.key);
            let _ = convert::binding(request.binding);
        }
        if let Ok(request) = proto::SweepRequest::decode(bytes.as_slice()) {
            let _ = convert::sweep_scope(&request);
        }
        if let Ok(request) = proto::ForgetRequest::decode(bytes.as_slice()) {
            let _ = convert::session_key(request.key);
        }
    }
}
