//! Tests of `plan_report` and `RowReport::decide` (SPEC §4 "ReportResult"): one table of every action for every class
//! family and row state, then one test per invariant: a failed result's id is never stored, a store
//! needs a valid id, zero-turn unknown failures of the stored id count up to the limit, a store
//! resets the count.

use chrono::{DateTime, Utc};

use super::*;
use crate::domain::ResultClass::{
    Auth, InvalidSessionId, LimitReached, Quota, SessionGone, Success, Transient, UnknownFailure,
};

/// A: the id the run resumed.
const A: &str = "3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21";
/// B: a newer id a concurrent run stored meanwhile.
const B: &str = "b7e1f0c2-5a3d-4e8f-8c6b-9d2a1e0f4b37";
/// N: the id on the reported result frame (brand new: a completed run's, or a failed frame's junk).
const N: &str = "d4c05e7a-2b1f-4c9d-a8e3-6f7b0c1d2e95";

const STORING: [ResultClass; 2] = [Success, LimitReached];
const CLEARING: [ResultClass; 2] = [SessionGone, InvalidSessionId];
const KEEPING: [ResultClass; 4] = [Quota, Auth, Transient, UnknownFailure];
const NON_STORING: [ResultClass; 6] = [SessionGone, InvalidSessionId, Quota, Auth, Transient, UnknownFailure];

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z").unwrap().to_utc()
}

fn earlier() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T09:30:00Z").unwrap().to_utc()
}

/// Where the reporting run ran.
fn request_binding() -> Binding {
    Binding {
        provider: "claude".into(),
        host: "worker-7".into(),
        config_dir: "/home/agent/.claude".into(),
        cwd: "/work/repo".into(),
    }
}

/// A stored row written by an earlier run on another worker.
fn row(session_id: &str, failure_count: u32) -> SessionRow {
    SessionRow {
        session_id: session_id.into(),
        binding: Binding {
            host: "worker-2".into(),
            ..request_binding()
        },
        last_used_at: earlier(),
        failure_count,
    }
}

fn result(class: ResultClass, session_id: &str, num_turns: u32) -> AgentResult {
    let is_success = class == Success;
    AgentResult {
        is_error: !is_success,
        subtype: match class {
            Success => "success",
            LimitReached => "error_max_turns",
            _ => "error_during_execution",
        }
        .into(),
        session_id: session_id.into(),
        num_turns,
        ..AgentResult::default()
    }
}

/// A report's effect on the row, as the two steps together apply it: a store plan's row, or what
/// `RowReport::decide` answers on the stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    None,
    Store(SessionRow),
    Clear {
        expected_session_id: String,
    },
    CountFailure {
        expected_session_id: String,
        failure_count: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    effect: Effect,
    outcome: ReportOutcome,
}

/// `plan_report`, then (for a report decided on the row) `decide` on `stored`, once.
fn plan_on(
    class: ResultClass,
    result: &AgentResult,
    resumed: &str,
    stored: Option<&SessionRow>,
    policy: &Policy,
) -> Result<Plan, FieldError> {
    Ok(
        match plan_report(class, result, resumed, &request_binding(), now(), policy)? {
            ReportPlan::Store(StoreResult { row, outcome, .. }) => Plan {
                effect: Effect::Store(row),
                outcome,
            },
            ReportPlan::OnRow(report) => {
                let RowDecision { effect, outcome } = report.decide(stored);
                let effect = match effect {
                    RowEffect::None => Effect::None,
                    RowEffect::Clear { expected_session_id } => Effect::Clear { expected_session_id },
                    RowEffect::CountFailure {
                        expected_session_id,
                        failure_count,
                    } => Effect::CountFailure {
                        expected_session_id,
                        failure_count,
                    },
                };
                Plan { effect, outcome }
            }
        },
    )
}

fn plan(
    class: ResultClass,
    num_turns: u32,
    resumed: &str,
    stored: Option<&SessionRow>,
    policy: &Policy,
) -> Result<Plan, FieldError> {
    plan_on(class, &result(class, N, num_turns), resumed, stored, policy)
}

/// The row a store writes: the result's id, the request's binding, now, no failures.
fn stored_row(session_id: &str) -> SessionRow {
    SessionRow {
        session_id: session_id.into(),
        binding: request_binding(),
        last_used_at: now(),
        failure_count: 0,
    }
}

#[derive(Debug, Clone, Copy)]
enum Want {
    Nothing,
    Store,
    Clear,
    Count(u32),
}

/// name, classes, num_turns, A, the stored row, effect, action, session_id, retry_fresh.
type ActionCase = (
    &'static str,
    &'static [ResultClass],
    u32,
    &'static str,
    Option<SessionRow>,
    Want,
    Action,
    &'static str,
    bool,
);

#[test]
fn every_class_family_takes_its_action_for_each_row_state() {
    use Action::{Cleared, Kept, Stored, Superseded};
    #[rustfmt::skip]
    let cases: Vec<ActionCase> = vec![
        ("store: fresh run, no row", &STORING, 3, "", None, Want::Store, Stored, N, false),
        ("store: resume, no row", &STORING, 3, A, None, Want::Store, Stored, N, false),
        ("store: resume of the stored id", &STORING, 3, A, Some(row(A, 0)), Want::Store, Stored, N, false),
        ("store: resume of the stored id that had a failure", &STORING, 3, A, Some(row(A, 1)), Want::Store, Stored, N, false),
        ("store: a newer id was stored meanwhile, the last run wins", &STORING, 3, A, Some(row(B, 0)), Want::Store, Stored, N, false),
        ("store: fresh run over a stored id", &STORING, 3, "", Some(row(B, 0)), Want::Store, Stored, N, false),
        ("clear: the row holds A", &CLEARING, 0, A, Some(row(A, 0)), Want::Clear, Cleared, "", true),
        ("clear: the row holds A, turns done", &CLEARING, 2, A, Some(row(A, 1)), Want::Clear, Cleared, "", true),
        ("clear: no row, resume", &CLEARING, 0, A, None, Want::Nothing, Cleared, "", true),
        ("clear: no row, fresh run", &CLEARING, 0, "", None, Want::Nothing, Cleared, "", false),
        ("clear: a newer id was stored meanwhile", &CLEARING, 0, A, Some(row(B, 0)), Want::Nothing, Superseded, B, false),
        ("clear: fresh run, a row holds another id", &CLEARING, 0, "", Some(row(B, 0)), Want::Nothing, Superseded, B, false),
        ("keep: fresh run, no row", &KEEPING, 2, "", None, Want::Nothing, Kept, "", false),
        ("keep: resume, no row", &KEEPING, 2, A, None, Want::Nothing, Kept, "", false),
        ("keep: resume of the stored id", &KEEPING, 2, A, Some(row(A, 0)), Want::Nothing, Kept, A, false),
        ("keep: fresh run, a row exists", &KEEPING, 2, "", Some(row(B, 0)), Want::Nothing, Kept, B, false),
        ("keep: a newer id was stored meanwhile", &KEEPING, 2, A, Some(row(B, 0)), Want::Nothing, Superseded, B, false),
        ("keep: zero turns, newer id stored", &KEEPING, 0, A, Some(row(B, 1)), Want::Nothing, Superseded, B, false),
        ("keep, not unknown: zero turns on the stored id do not count", &[Quota, Auth, Transient], 0, A, Some(row(A, 1)), Want::Nothing, Kept, A, false),
        ("count: first zero-turn unknown failure of the stored id", &[UnknownFailure], 0, A, Some(row(A, 0)), Want::Count(1), Kept, A, false),
        ("count: at the limit the row is cleared", &[UnknownFailure], 0, A, Some(row(A, 1)), Want::Clear, Cleared, "", true),
    ];
    let mut seen_actions = Vec::new();
    let mut seen_classes = Vec::new();
    for (name, classes, num_turns, a, stored, want, action, session_id, retry_fresh) in cases {
        for &class in classes {
            let mut got = plan(class, num_turns, a, stored.as_ref(), &Policy::default())
                .unwrap_or_else(|e| panic!("{name} / {class:?}: {e}"));
            // The cause has its own test below; here: only a resume that failed as gone has one.
            let cause = got.outcome.cause.take();
            assert_eq!(
                cause.is_some(),
                class == SessionGone && !a.is_empty(),
                "{name} / {class:?}"
            );
            let effect = match want {
                Want::Nothing => Effect::None,
                Want::Store => Effect::Store(stored_row(N)),
                Want::Clear => Effect::Clear {
                    expected_session_id: a.into(),
                },
                Want::Count(failure_count) => Effect::CountFailure {
                    expected_session_id: a.into(),
                    failure_count,
                },
            };
            let outcome = ReportOutcome {
                class,
                action,
                session_id: session_id.into(),
                retry_fresh,
                transcripts_deleted: 0,
                cause: None,
            };
            assert_eq!(got, Plan { effect, outcome }, "{name} / {class:?}");
            seen_actions.push(action);
            seen_classes.push(class);
        }
    }
    for action in Action::ALL {
        assert!(seen_actions.contains(&action), "no case ends {action:?}");
    }
    for class in ResultClass::ALL {
        assert!(seen_classes.contains(&class), "no case for {class:?}");
    }
}

/// Every combination a report can come in: A empty or not, no row / the row holds A / another id,
/// any failure count, zero or some turns, the default and a stricter limit.
fn every_situation() -> Vec<(&'static str, Option<SessionRow>, u32, Policy)> {
    let mut situations = Vec::new();
    for a in ["", A] {
        for stored in [None, Some(A), Some(B)] {
            for failure_count in [0, 1, 5] {
                for num_turns in [0, 1, 9] {
                    for limit in [1, 2, 3] {
                        let policy = Policy {
                            unknown_failure_limit: limit,
                            ..Policy::default()
                        };
                        let stored = stored.map(|s| row(s, failure_count));
                        situations.push((a, stored, num_turns, policy));
                    }
                }
            }
        }
    }
    situations
}

#[test]
fn each_class_leads_to_exactly_the_actions_it_declares_possible() {
    for class in ResultClass::ALL {
        let mut reached = Vec::new();
        for (a, stored, num_turns, policy) in every_situation() {
            let got = plan(class, num_turns, a, stored.as_ref(), &policy).unwrap();
            if !reached.contains(&got.outcome.action) {
                reached.push(got.outcome.action);
            }
        }
        let declared = class.possible_actions();
        assert!(
            reached.len() == declared.len() && reached.iter().all(|a| declared.contains(a)),
            "{class:?} reaches {reached:?}, declares {declared:?}"
        );
    }
}

#[test]
fn the_session_id_of_a_failed_result_is_never_stored() {
    for class in NON_STORING {
        for (a, stored, num_turns, policy) in every_situation() {
            let context = format!("{class:?}, A {a:?}, row {stored:?}, {num_turns} turns");
            let got = plan(class, num_turns, a, stored.as_ref(), &policy).expect(&context);
            assert!(!matches!(got.effect, Effect::Store(_)), "{context}: {:?}", got.effect);
            assert_ne!(got.outcome.session_id, N, "{context}");
            assert!(
                !got.outcome.retry_fresh || got.outcome.session_id.is_empty(),
                "{context}"
            );
            match &got.effect {
                Effect::Clear { expected_session_id }
                | Effect::CountFailure {
                    expected_session_id, ..
                } => {
                    assert_eq!(expected_session_id, A, "{context}: only the resumed id is ever touched");
                    assert_eq!(stored.as_ref().map(|r| r.session_id.as_str()), Some(A), "{context}");
                }
                Effect::None => {}
                Effect::Store(_) => unreachable!(),
            }
        }
    }
}

#[test]
fn success_and_limit_reached_store_the_new_id_whatever_the_row_holds() {
    for class in STORING {
        for (a, stored, num_turns, policy) in every_situation() {
            let context = format!("{class:?}, A {a:?}, row {stored:?}");
            let got = plan(class, num_turns, a, stored.as_ref(), &policy).expect(&context);
            assert_eq!(got.effect, Effect::Store(stored_row(N)), "{context}");
            assert_eq!(got.outcome.action, Action::Stored, "{context}");
            assert_eq!(got.outcome.session_id, N, "{context}");
            assert!(!got.outcome.retry_fresh, "{context}");
        }
    }
}

#[test]
fn success_or_limit_reached_without_a_session_id_is_an_error_naming_result_session_id() {
    for class in STORING {
        for stored in [None, Some(row(A, 0))] {
            let err = plan_on(class, &result(class, "", 4), A, stored.as_ref(), &Policy::default()).unwrap_err();
            assert_eq!(err.field, "result.session_id", "{class:?}");
        }
    }
}

#[test]
fn a_session_id_with_a_control_character_or_over_256_bytes_is_rejected_naming_result_session_id() {
    let too_long = "a".repeat(257);
    let bad = [
        "3f2c9a51-7d0e-4b8a\n-9c1f-2e6d5a4b3c21",
        "3f2c9a51-7d0e-4b8a-9c1f-2e6d5a4b3c21\0",
        "\t3f2c9a51",
        "3f2c\u{7f}9a51",
        "3f2c\u{85}9a51",
        &too_long,
    ];
    for class in STORING {
        for session_id in bad {
            let err = plan_on(
                class,
                &result(class, session_id, 4),
                A,
                Some(&row(A, 0)),
                &Policy::default(),
            )
            .unwrap_err();
            assert_eq!(err.field, "result.session_id", "{class:?} {session_id:?}");
        }
        let longest = "é".repeat(128);
        assert_eq!(longest.len(), 256);
        let got =
            plan_on(class, &result(class, &longest, 4), A, None, &Policy::default()).expect("256 bytes are allowed");
        assert_eq!(got.effect, Effect::Store(stored_row(&longest)));
    }
}

#[test]
fn a_zero_turn_unknown_failure_of_a_resume_of_the_stored_id_counts() {
    let got = plan(UnknownFailure, 0, A, Some(&row(A, 0)), &Policy::default()).unwrap();
    assert_eq!(
        got,
        Plan {
            effect: Effect::CountFailure {
                expected_session_id: A.into(),
                failure_count: 1,
            },
            outcome: ReportOutcome {
                class: UnknownFailure,
                action: Action::Kept,
                session_id: A.into(),
                retry_fresh: false,
                transcripts_deleted: 0,
                cause: None,
            },
        }
    );
}

#[test]
fn the_unknown_failure_limit_clears_the_row_when_the_count_reaches_it() {
    assert_eq!(Policy::default().unknown_failure_limit, 2);
    // limit, the row's count before the report, the count written (None: the row is cleared)
    let cases = [
        (1, 0, None),
        (2, 0, Some(1)),
        (2, 1, None),
        (3, 0, Some(1)),
        (3, 1, Some(2)),
        (3, 2, None),
    ];
    for (limit, before, after) in cases {
        let policy = Policy {
            unknown_failure_limit: limit,
            ..Policy::default()
        };
        let got = plan(UnknownFailure, 0, A, Some(&row(A, before)), &policy).unwrap();
        let want = match after {
            Some(failure_count) => Plan {
                effect: Effect::CountFailure {
                    expected_session_id: A.into(),
                    failure_count,
                },
                outcome: ReportOutcome {
                    class: UnknownFailure,
                    action: Action::Kept,
                    session_id: A.into(),
                    retry_fresh: false,
                    transcripts_deleted: 0,
                    cause: None,
                },
            },
            None => Plan {
                effect: Effect::Clear {
                    expected_session_id: A.into(),
                },
                outcome: ReportOutcome {
                    class: UnknownFailure,
                    action: Action::Cleared,
                    session_id: String::new(),
                    retry_fresh: true,
                    transcripts_deleted: 0,
                    cause: None,
                },
            },
        };
        assert_eq!(got, want, "limit {limit}, count {before}");
    }
}

#[test]
fn repeated_zero_turn_unknown_failures_clear_the_row_after_exactly_the_limit() {
    for limit in [1, 2, 3] {
        let policy = Policy {
            unknown_failure_limit: limit,
            ..Policy::default()
        };
        let mut current = row(A, 0);
        let mut reports = 0;
        loop {
            reports += 1;
            assert!(
                reports <= limit,
                "limit {limit}: still not cleared after {reports} reports"
            );
            let got = plan(UnknownFailure, 0, A, Some(&current), &policy).unwrap();
            match got.effect {
                Effect::CountFailure { failure_count, .. } => current.failure_count = failure_count,
                Effect::Clear { .. } => break,
                other => panic!("limit {limit}: unexpected {other:?}"),
            }
        }
        assert_eq!(reports, limit, "limit {limit}");
    }
}

#[test]
fn no_counting_when_a_differs_from_s_or_a_is_empty_or_the_run_did_turns() {
    // The row is one failure short of the limit, so a wrong count would also clear it.
    let cases = [
        ("A differs from S", 0, A, row(B, 1), Action::Superseded, B),
        ("A empty (a fresh run)", 0, "", row(B, 1), Action::Kept, B),
        ("one turn done", 1, A, row(A, 1), Action::Kept, A),
        ("many turns done", 9, A, row(A, 1), Action::Kept, A),
    ];
    for (name, num_turns, a, stored, action, session_id) in cases {
        let got = plan(UnknownFailure, num_turns, a, Some(&stored), &Policy::default()).unwrap();
        assert_eq!(got.effect, Effect::None, "{name}");
        assert_eq!(got.outcome.action, action, "{name}");
        assert_eq!(got.outcome.session_id, session_id, "{name}");
        assert!(!got.outcome.retry_fresh, "{name}");
    }
}

#[test]
fn a_store_resets_the_failure_count() {
    for class in STORING {
        for stored in [row(A, 1), row(B, 1), row(A, 5)] {
            let got = plan(class, 3, A, Some(&stored), &Policy::default()).unwrap();
            let Effect::Store(new_row) = got.effect else {
                panic!("{class:?}: {:?}", got.effect);
            };
            assert_eq!(new_row.failure_count, 0, "{class:?} over {stored:?}");
            assert_eq!(new_row.last_used_at, now());
            assert_eq!(new_row.binding, request_binding());
        }
    }
}

#[test]
fn a_resume_that_failed_as_gone_carries_the_cause_of_the_row_it_cleared() {
    use crate::domain::ResumeFailureCause::{LostInPlace, RoutedElsewhere, Unknown};
    let cause = |class, resumed, stored: Option<SessionRow>| {
        plan(class, 0, resumed, stored.as_ref(), &Policy::default())
            .unwrap()
            .outcome
            .cause
    };
    // Stored where the failing run ran: the transcript was lost in place.
    assert_eq!(cause(SessionGone, A, Some(stored_row(A))), Some(LostInPlace));
    // Stored by a run on another host: the run was routed elsewhere.
    assert_eq!(cause(SessionGone, A, Some(row(A, 0))), Some(RoutedElsewhere));
    // Nothing of A cleared (no row, or a newer id): nothing to compare with.
    assert_eq!(cause(SessionGone, A, None), Some(Unknown));
    assert_eq!(cause(SessionGone, A, Some(stored_row(B))), Some(Unknown));
    // Not a resume, or not SESSION_GONE: no cause.
    assert_eq!(cause(SessionGone, "", Some(stored_row(B))), None);
    assert_eq!(cause(InvalidSessionId, A, Some(stored_row(A))), None);
    assert_eq!(cause(Transient, A, Some(stored_row(A))), None);
}

#[test]
fn a_late_gone_report_about_a_never_clears_a_newer_id() {
    for class in CLEARING.into_iter().chain([UnknownFailure]) {
        let got = plan(class, 0, A, Some(&row(B, 1)), &Policy::default()).unwrap();
        assert_eq!(got.effect, Effect::None, "{class:?}");
        assert_eq!(got.outcome.action, Action::Superseded, "{class:?}");
        assert_eq!(got.outcome.session_id, B, "{class:?}");
        assert!(!got.outcome.retry_fresh, "{class:?}");
    }
}

#[test]
fn only_success_and_limit_reached_are_planned_as_stores_before_the_row_is_read() {
    for class in ResultClass::ALL {
        let planned = plan_report(
            class,
            &result(class, N, 3),
            A,
            &request_binding(),
            now(),
            &Policy::default(),
        )
        .unwrap_or_else(|e| panic!("{class:?}: {e}"));
        match planned {
            ReportPlan::Store(store) => {
                assert!(class.stores(), "{class:?} was planned as a store");
                assert_eq!(store.row, stored_row(N), "{class:?}");
                assert_eq!(
                    store.outcome,
                    ReportOutcome {
                        class,
                        action: Action::Stored,
                        session_id: N.into(),
                        retry_fresh: false,
                        transcripts_deleted: 0,
                        cause: None,
                    }
                );
            }
            ReportPlan::OnRow(report) => {
                assert!(!class.stores(), "{class:?} was left to the row");
                assert_eq!(report.class, class);
                assert_eq!(report.resumed_session_id, A);
                assert_eq!(report.num_turns, 3);
                assert_eq!(report.unknown_failure_limit, Policy::default().unknown_failure_limit);
            }
        }
    }
}

#[test]
fn a_failed_frames_session_id_is_not_validated_because_it_is_never_stored() {
    // A failed frame's id is junk (empty, or anything the CLI printed); the report stays valid.
    for class in NON_STORING {
        for junk in ["", "not\nan id", &"x".repeat(300)] {
            let got = plan_on(class, &result(class, junk, 0), A, Some(&row(A, 0)), &Policy::default());
            assert!(got.is_ok(), "{class:?} with session id {junk:?}: {got:?}");
        }
    }
}
