//! Proptest strategies and the key rules of SPEC §3 restated as an oracle, shared by the pure
//! property tests beside the domain (`domain/properties.rs`) and the request-validation properties
//! of `tests/reliability` (which include this file with `#[path]`). It must stay free of any path
//! into the crate: its includer provides `AgentResult` (`super::AgentResult`), so the same file
//! compiles inside the library and in a test binary. Test-only: never part of the service.

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::AgentResult;

pub const CASES: u32 = 2_000;

pub fn config() -> Config {
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
pub fn text() -> impl Strategy<Value = String> {
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
pub fn long_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => text(),
        1 => (text(), 0usize..400).prop_map(|(unit, n)| unit.repeat(n)),
        1 => (prop::sample::select(&["x", "é", "€", "😀"][..]), 8180usize..8200).prop_map(|(c, n)| c.repeat(n / c.len())),
    ]
}

/// Interesting numbers: the ones the rules name, their neighbours, and anything.
pub fn number() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(&[0u32, 1, 2, 401, 403, 429, 500, 502, 503, 529, 530, u32::MAX][..]),
        any::<u32>(),
    ]
}

pub fn agent_result() -> impl Strategy<Value = AgentResult> {
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

// The key rules of SPEC §3, restated as the oracle.

/// Control characters: Unicode general category Cc (C0, DEL, C1).
pub fn is_control(c: char) -> bool {
    c <= '\u{1f}' || ('\u{7f}'..='\u{9f}').contains(&c)
}

/// namespace and agent: 1–64 bytes of `[A-Za-z0-9._-]`.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The characters free text must not hold besides control characters, as the issue lists them:
/// bidirectional embeddings, overrides and isolates, the zero-width space and the byte-order mark.
const HIDDEN: &str = "\u{202A}\u{202B}\u{202C}\u{202D}\u{202E}\u{2066}\u{2067}\u{2068}\u{2069}\u{200B}\u{FEFF}";

/// conversation: 1–256 bytes of UTF-8 without control characters or hidden ones.
pub fn is_conversation(s: &str) -> bool {
    (1..=256).contains(&s.len()) && !s.chars().any(|c| is_control(c) || HIDDEN.contains(c))
}

/// Names: valid ones, valid ones around the 64-byte limit, one bad character, or anything.
pub fn name() -> impl Strategy<Value = String> {
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
pub fn conversation() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => text(),
        2 => (prop::sample::select(&["c", "é", "€", "😀"][..]), 250usize..262).prop_map(|(c, bytes)| c.repeat(bytes / c.len())),
        2 => ("[^\\x00-\\x1f]{0,30}", any::<char>(), "[^\\x00-\\x1f]{0,30}").prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        // A hidden character, or the zero-width joiner that emoji need (allowed), among text.
        2 => ("[a-z]{0,10}", prop::sample::select(HIDDEN.chars().chain(['\u{200D}']).collect::<Vec<_>>()), "[a-z]{0,10}")
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        1 => prop::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect::<String>()),
    ]
}

/// The fields of a key that break the rules (an empty namespace is `default`).
pub fn key_fields_failing(namespace: &str, agent: &str, conversation: &str) -> Vec<&'static str> {
    let namespace = if namespace.is_empty() { "default" } else { namespace };
    let mut failing = Vec::new();
    if !is_name(namespace) {
        failing.push("key.namespace");
    }
    if !is_name(agent) {
        failing.push("key.agent");
    }
    if !is_conversation(conversation) {
        failing.push("key.conversation");
    }
    failing
}
