//! Bad input as properties: the classifier, the truncation of result texts, the key rules and
//! the request validation never panic on arbitrary strings (Unicode, control characters, invalid
//! UTF-8 read lossily, signature fragments in any case) and arbitrary numbers, and they answer what
//! SPEC §3 and §4 say. `CASES` cases per property keep the suite fast.

use proptest::prelude::*;
use proptest::test_runner::Config;
use prost::Message;
use sessionkeeper::domain::{AgentResult, MAX_TEXT_BYTES, MAX_TOTAL_TEXT_BYTES, ResultClass, SessionKey, classify};
use sessionkeeper::proto;
use sessionkeeper::server::convert;
use sessionkeeper::service::ServiceError;

pub const CASES: u32 = 2_000;

fn config() -> Config {
    Config {
        cases: CASES,
        // Minimal failing inputs are printed; no regression files are written into the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Texts that reach the classifier's matching logic: signature fragments, id-like tokens,
/// characters whose lowercase form is longer than themselves, control and combining characters.
const FRAGMENTS: &[&str] = &[
    "No conversation found with session ID: ",
    "no conversations found to resume",
    "Session not found",
    "no longer on disk",
    "no rollout found for thread id",
    "thread not loaded",
    "thread ",
    " not found",
    "thread 0199a2f3-7c1e not found",
    "rollout at ",
    " is empty",
    "--resume requires a valid session ID",
    "is not a UUID and does not match any session title",
    "must be in UUID format",
    "Invalid session ID",
    "usage limit reached",
    "hit your limit",
    "authentication_failed",
    "Not logged in",
    "rate limit",
    "API Error: 5",
    "ECONNRESET",
    "timeout",
    "error_max_turns",
    "error_during_execution",
    "success",
    "\u{130}",
    "\u{1E9E}",
    "\u{0}",
    "\u{7f}",
    "\u{85}",
    "\u{200b}",
    "e\u{301}",
    "\r\n\t",
    "\u{FFFD}",
    "😀",
    "0",
];

/// An arbitrary text: any chars, bytes read as lossy UTF-8, or noise around signature fragments.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect::<String>()),
        2 => prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        3 => prop::collection::vec(
            prop_oneof![
                prop::sample::select(FRAGMENTS).prop_map(str::to_owned),
                "[a-z0-9 :./-]{0,12}",
                any::<char>().prop_map(String::from),
            ],
            0..6
        )
        .prop_map(|parts| parts.concat()),
        1 => Just(String::new()),
    ]
}

/// A text that is sometimes far over the 8 KiB limit: a short unit repeated.
fn long_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => text(),
        1 => (text(), 0usize..400).prop_map(|(unit, n)| unit.repeat(n)),
        1 => (prop::sample::select(&["x", "é", "€", "😀"][..]), 8180usize..8200).prop_map(|(c, n)| c.repeat(n / c.len())),
    ]
}

/// Interesting numbers: the ones the rules name, their neighbours, and anything.
fn number() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(&[0u32, 1, 2, 401, 403, 429, 500, 502, 503, 529, 530, u32::MAX][..]),
        any::<u32>(),
    ]
}

fn agent_result() -> impl Strategy<Value = AgentResult> {
    (
        any::<bool>(),
        prop_oneof![
            text(),
            prop::sample::select(
                &[
                    "",
                    "success",
                    "SUCCESS",
                    "error_during_execution",
                    "error_max_turns",
                    "error_max_budget_usd"
                ][..]
            )
            .prop_map(str::to_owned)
        ],
        text(),
        number(),
        prop::collection::vec(long_text(), 0..12),
        prop_oneof![
            text(),
            prop::sample::select(&["", "max_turns", "budget_exhausted"][..]).prop_map(str::to_owned)
        ],
        number(),
        long_text(),
        long_text(),
    )
        .prop_map(
            |(
                is_error,
                subtype,
                session_id,
                num_turns,
                errors,
                terminal_reason,
                api_error_status,
                exception,
                result_text,
            )| {
                AgentResult {
                    is_error,
                    subtype,
                    session_id,
                    num_turns,
                    errors,
                    terminal_reason,
                    api_error_status,
                    exception,
                    result_text,
                }
            },
        )
}

/// Randomly upper- or lower-cases ASCII letters (the signatures match case-insensitively).
fn scramble_case(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn texts_of(r: &AgentResult) -> Vec<&String> {
    [&r.subtype, &r.terminal_reason, &r.exception, &r.result_text]
        .into_iter()
        .chain(r.errors.iter())
        .collect()
}

// The key rules of SPEC §3, restated as the oracle.

/// Control characters: Unicode general category Cc (C0, DEL, C1).
fn is_control(c: char) -> bool {
    c <= '\u{1f}' || ('\u{7f}'..='\u{9f}').contains(&c)
}

/// namespace and agent: 1–64 bytes of `[A-Za-z0-9._-]`.
fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// conversation: 1–256 bytes of UTF-8 without control characters.
fn is_conversation(s: &str) -> bool {
    (1..=256).contains(&s.len()) && !s.chars().any(is_control)
}

/// Names: valid ones, valid ones around the 64-byte limit, one bad character, or anything.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9._-]{0,70}",
        2 => (62usize..67).prop_flat_map(|n| prop::collection::vec(prop::sample::select(b"aZ9._-".to_vec()), n))
            .prop_map(|b| String::from_utf8(b).unwrap()),
        2 => ("[A-Za-z0-9._-]{0,20}", any::<char>(), "[A-Za-z0-9._-]{0,20}").prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        2 => text(),
        1 => Just(String::new()),
    ]
}

/// Conversations: anything, texts around the 256-byte limit in multi-byte characters, one control char.
fn conversation() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => text(),
        2 => (prop::sample::select(&["c", "é", "€", "😀"][..]), 250usize..262).prop_map(|(c, bytes)| c.repeat(bytes / c.len())),
        2 => ("[^\\x00-\\x1f]{0,30}", any::<char>(), "[^\\x00-\\x1f]{0,30}").prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        1 => prop::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect::<String>()),
    ]
}

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

fn key_fields_failing(key: &proto::SessionKey) -> Vec<&'static str> {
    let namespace = if key.namespace.is_empty() {
        "default"
    } else {
        &key.namespace
    };
    let mut failing = Vec::new();
    if !is_name(namespace) {
        failing.push("key.namespace");
    }
    if !is_name(&key.agent) {
        failing.push("key.agent");
    }
    if !is_conversation(&key.conversation) {
        failing.push("key.conversation");
    }
    failing
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn classify_never_panics_and_only_a_completed_run_is_a_success(result in agent_result(), resumed in any::<bool>()) {
        let class = classify(&result, resumed, "");
        let completed = !result.is_error && (result.subtype.is_empty() || result.subtype.eq_ignore_ascii_case("success"));
        prop_assert_eq!(class == ResultClass::Success, completed, "{:?}", class);
        // The service classifies the truncated result: that never panics either.
        let _ = classify(&result.truncated(), resumed, "");
    }

    #[test]
    fn a_no_conversation_found_text_in_any_case_anywhere_makes_a_failed_run_session_gone(
        mut result in agent_result(),
        resumed in any::<bool>(),
        id in text(),
        mask in any::<u64>(),
        at in any::<prop::sample::Index>(),
        into_exception in any::<bool>(),
    ) {
        result.is_error = true;
        let frame = scramble_case(&format!("No conversation found with session ID: {id}"), mask);
        if into_exception {
            result.exception = format!("{}\n{frame}", result.exception);
        } else {
            let at = at.index(result.errors.len() + 1);
            result.errors.insert(at, frame);
        }
        prop_assert_eq!(classify(&result, resumed, ""), ResultClass::SessionGone);
    }

    #[test]
    fn truncation_never_panics_keeps_the_right_end_within_the_limits_and_cuts_only_when_needed(result in agent_result()) {
        let original = result.clone();
        let cut = result.truncated();
        let (before, after) = (texts_of(&original), texts_of(&cut));
        prop_assert_eq!(&cut.session_id, &original.session_id, "the session id is never cut");
        prop_assert_eq!((cut.is_error, cut.num_turns, cut.api_error_status), (original.is_error, original.num_turns, original.api_error_status));
        // subtype, terminal_reason and result_text keep their start; exception (index 2) its end.
        for (i, (b, a)) in before.iter().zip(&after).take(4).enumerate() {
            if i == 2 {
                prop_assert!(b.ends_with(a.as_str()), "exception keeps its end");
            } else {
                prop_assert!(b.starts_with(a.as_str()));
            }
        }
        // The kept errors are non-empty prefixes of the original errors, in order.
        let mut kept = cut.errors.iter().peekable();
        for error in &original.errors {
            if let Some(next) = kept.peek()
                && !next.is_empty()
                && error.starts_with(next.as_str())
            {
                kept.next();
            }
        }
        prop_assert!(kept.next().is_none(), "errors are not prefixes of the originals, in order");
        prop_assert!(cut.errors.iter().all(|e| !e.is_empty()));
        let total: usize = after.iter().map(|t| t.len()).sum();
        prop_assert!(after.iter().all(|t| t.len() <= MAX_TEXT_BYTES), "a text over 8 KiB");
        prop_assert!(total <= MAX_TOTAL_TEXT_BYTES, "{} bytes in all", total);
        let original_total: usize = before.iter().map(|t| t.len()).sum();
        if before.iter().all(|t| t.len() <= MAX_TEXT_BYTES) && original_total <= MAX_TOTAL_TEXT_BYTES {
            let mut expected = original.clone();
            expected.errors.retain(|e| !e.is_empty());
            prop_assert_eq!(&cut, &expected, "a result within the limits is not changed");
        }
        // A text cut short ends within one character of a limit (its own or the total's).
        let n = before.len();
        for (b, a) in before.iter().zip(&after).take(4) {
            if a.len() < b.len() {
                prop_assert!(a.len() + 4 > MAX_TEXT_BYTES || total + 4 * n > MAX_TOTAL_TEXT_BYTES, "cut to {} of {} bytes", a.len(), b.len());
            }
        }
        let cut_errors: usize = original.errors.iter().map(String::len).sum::<usize>()
            - cut.errors.iter().map(String::len).sum::<usize>();
        if cut_errors > 0 {
            prop_assert!(
                cut.errors.len() < original.errors.len()
                    || cut.errors.iter().any(|e| e.len() + 4 > MAX_TEXT_BYTES)
                    || total + 4 * n > MAX_TOTAL_TEXT_BYTES,
                "errors were cut without reaching a limit"
            );
        }
    }

    #[test]
    fn session_keys_are_accepted_exactly_as_the_rules_say(namespace in name(), agent in name(), conversation in conversation()) {
        let key = proto::SessionKey { namespace: namespace.clone(), agent: agent.clone(), conversation: conversation.clone() };
        let failing = key_fields_failing(&key);
        match SessionKey::new(&namespace, &agent, &conversation) {
            Ok(k) => {
                prop_assert!(failing.is_empty(), "accepted although {:?} break the rules", failing);
                let expected_namespace = if namespace.is_empty() { "default" } else { namespace.as_str() };
                prop_assert_eq!((k.namespace(), k.agent(), k.conversation()), (expected_namespace, agent.as_str(), conversation.as_str()));
            }
            Err(e) => prop_assert!(failing.contains(&e.field), "rejected naming {} although only {:?} break the rules", e.field, failing),
        }
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
        let key_failing = request.key.as_ref().map(key_fields_failing);
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
