//! `sessionkeeper classify`: what the service would decide about one result frame, without a
//! server or a store. It classifies with `domain`'s rules and table, names the step and the row
//! that decided (with the package version the row's text was found in), and says what a report
//! would do to a stored id: the one the run resumed, another one, or none. Text in, text out;
//! `main` reads stdin and prints.

use chrono::Utc;

use crate::domain::{AgentResult, Binding, Policy, ReportPlan, RowEffect, SessionRow, explain_with, plan_report};

/// The report of `classify` for `result`, one fact per line.
pub fn describe(result: &AgentResult, resumed: &str, provider: &str, policy: &Policy) -> String {
    let explained = explain_with(result, !resumed.is_empty(), provider, &policy.signatures);
    let class = explained.class;
    let mut lines = vec![format!("class: {}", class.as_str().to_uppercase())];
    lines.push(match explained.signature {
        Some(row) => format!(
            "decided by: step {}, signature {:?} (provider {}, found in {})",
            explained.step,
            row.label(),
            if row.provider.is_empty() { "any" } else { &row.provider },
            row.source
        ),
        None => format!("decided by: step {} ({})", explained.step, step_meaning(explained.step)),
    });
    let binding = Binding {
        provider: provider.to_owned(),
        ..Binding::default()
    };
    let now = Utc::now();
    match plan_report(class, result, resumed, &binding, now, policy) {
        Err(invalid) => lines.push(format!("a report would be refused: INVALID_ARGUMENT {invalid}")),
        Ok(ReportPlan::Store(stored)) => lines.push(format!(
            "any stored id: STORED {} (a completed run's id replaces whatever is stored)",
            stored.outcome.session_id
        )),
        Ok(ReportPlan::OnRow(report)) => {
            let row = |session_id: &str| SessionRow {
                session_id: session_id.to_owned(),
                binding: Binding::default(),
                last_used_at: now,
                failure_count: 0,
            };
            let mut cases = Vec::new();
            if !resumed.is_empty() {
                cases.push((format!("stored id {resumed} (the one resumed)"), Some(row(resumed))));
            }
            cases.push(("another stored id".to_owned(), Some(row("<another id>"))));
            cases.push(("no stored id".to_owned(), None));
            for (situation, stored) in cases {
                let decision = report.decide(stored.as_ref());
                let outcome = &decision.outcome;
                let mut what = outcome.action.as_str().to_uppercase();
                match decision.effect {
                    RowEffect::Clear { .. } => what.push_str(" (the row is deleted)"),
                    RowEffect::CountFailure { failure_count, .. } => what.push_str(&format!(
                        " (zero-turn failure {failure_count} of {}; at {} the id is cleared)",
                        policy.unknown_failure_limit, policy.unknown_failure_limit
                    )),
                    RowEffect::None => {}
                }
                if outcome.retry_fresh {
                    what.push_str(", retry_fresh");
                }
                if !outcome.session_id.is_empty() {
                    what.push_str(&format!(", resume {} next", outcome.session_id));
                }
                lines.push(format!("{situation}: {what}"));
            }
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn step_meaning(step: u8) -> &'static str {
    match step {
        1 => "a completed run",
        3 => "a run that stopped at a limit after doing turns",
        5 => "the API's HTTP status",
        6 => "a resume that failed before its first turn, which no signature explains",
        _ => "no signature, status or structure matched",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_transcript_names_its_row_and_clears_only_the_resumed_id() {
        let result = AgentResult {
            is_error: true,
            subtype: "error_during_execution".into(),
            errors: vec!["No conversation found with session ID: s-dead".into()],
            ..AgentResult::default()
        };
        let text = describe(&result, "s-dead", "claude", &Policy::default());
        assert!(
            text.starts_with("class: SESSION_GONE\ndecided by: step 2, signature \"no conversation found\""),
            "{text}"
        );
        assert!(
            text.contains("stored id s-dead (the one resumed): CLEARED (the row is deleted), retry_fresh\n"),
            "{text}"
        );
        assert!(
            text.contains("another stored id: SUPERSEDED, resume <another id> next\n"),
            "{text}"
        );
        assert!(text.contains("no stored id: CLEARED, retry_fresh\n"), "{text}");
    }

    #[test]
    fn an_unexplained_zero_turn_failure_counts_toward_the_limit() {
        let result = AgentResult {
            is_error: true,
            subtype: "error".into(),
            exception: "the agent exited with status 3".into(),
            ..AgentResult::default()
        };
        let text = describe(&result, "s1", "", &Policy::default());
        assert!(text.starts_with("class: UNKNOWN_FAILURE\ndecided by: step 7"), "{text}");
        assert!(text.contains("stored id s1 (the one resumed): KEPT (zero-turn failure 1 of 2; at 2 the id is cleared), resume s1 next"), "{text}");
    }

    #[test]
    fn a_completed_run_stores_its_id_and_a_missing_id_is_refused() {
        let mut result = AgentResult {
            subtype: "success".into(),
            session_id: "s-new".into(),
            num_turns: 2,
            ..AgentResult::default()
        };
        let text = describe(&result, "s-old", "claude", &Policy::default());
        assert!(
            text.contains("class: SUCCESS\ndecided by: step 1 (a completed run)\nany stored id: STORED s-new"),
            "{text}"
        );
        result.session_id.clear();
        let text = describe(&result, "", "", &Policy::default());
        assert!(
            text.contains("a report would be refused: INVALID_ARGUMENT result.session_id"),
            "{text}"
        );
    }
}
