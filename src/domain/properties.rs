//! Properties of the pure rules over arbitrary input (SPEC §3 and §4): the classifier, the
//! truncation of result texts and the key rules never panic on arbitrary strings (Unicode, control
//! characters, invalid UTF-8 read lossily, signature fragments in any case) and arbitrary numbers,
//! and they answer what the spec says. `arbitrary::CASES` cases per property keep the suite fast.

use proptest::prelude::*;

use super::arbitrary::*;
use super::{AgentResult, MAX_TEXT_BYTES, MAX_TOTAL_TEXT_BYTES, ResultClass, SessionKey, classify};

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
        let failing = key_fields_failing(&namespace, &agent, &conversation);
        match SessionKey::new(&namespace, &agent, &conversation) {
            Ok(k) => {
                prop_assert!(failing.is_empty(), "accepted although {:?} break the rules", failing);
                let expected_namespace = if namespace.is_empty() { "default" } else { namespace.as_str() };
                prop_assert_eq!((k.namespace(), k.agent(), k.conversation()), (expected_namespace, agent.as_str(), conversation.as_str()));
            }
            Err(e) => prop_assert!(failing.contains(&e.field), "rejected naming {} although only {:?} break the rules", e.field, failing),
        }
    }
}
