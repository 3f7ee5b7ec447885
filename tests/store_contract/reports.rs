//! Reports: the plan runs on the row as locked, and its effect is applied atomically (a success
//! stores its id, a gone report clears only the id it is about, failures are counted).

use sessionkeeper::domain::{Action, ResultClass, SessionRow};
use sessionkeeper::store::ReportReply;

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        a_success_report_stores_the_new_id_and_resets_the_failure_count,
        a_success_report_for_a_new_conversation_inserts_its_row,
        a_gone_report_about_the_stored_id_deletes_the_row,
        a_late_gone_report_does_not_delete_a_newer_id,
        zero_turn_unknown_failures_are_counted_and_clear_the_row_at_the_limit,
        a_transient_failure_leaves_the_row_untouched,
    ],
}

async fn a_success_report_stores_the_new_id_and_resets_the_failure_count(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(
        fx,
        &key,
        &SessionRow {
            failure_count: 1,
            ..row(A, t0() - hours(3))
        },
    )
    .await;
    let now = t0() + micros(7);
    let reply = Report::success(&key, A, B).at(now).send(store).await;
    assert_eq!(reply, ReportReply::Applied(stored(B)));
    assert_eq!(load(store, &key).await, Some(stored_by_report(B, now)));
}

async fn a_success_report_for_a_new_conversation_inserts_its_row(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let reply = Report::success(&key, "", A).send(store).await;
    assert_eq!(reply, ReportReply::Applied(stored(A)));
    assert_eq!(load(store, &key).await, Some(stored_by_report(A, t0())));
}

async fn a_gone_report_about_the_stored_id_deletes_the_row(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0() - hours(1))).await;
    let report = Report::gone(&key, A);
    assert_eq!(report.class(), ResultClass::SessionGone);
    assert_eq!(report.send(store).await, ReportReply::Applied(cleared_as_gone()));
    assert_eq!(load(store, &key).await, None);
}

async fn a_late_gone_report_does_not_delete_a_newer_id(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let newer = row(B, t0() - hours(1));
    put(fx, &key, &newer).await;
    let reply = Report::gone(&key, A).send(store).await;
    assert_eq!(reply, ReportReply::Applied(superseded_gone(B)));
    assert_eq!(load(store, &key).await, Some(newer));
}

async fn zero_turn_unknown_failures_are_counted_and_clear_the_row_at_the_limit(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let original = row(A, t0() - hours(1));
    put(fx, &key, &original).await;
    let report = Report::unknown_zero_turn_failure(&key, A);
    assert_eq!(report.class(), ResultClass::UnknownFailure);
    assert_eq!(report.policy.unknown_failure_limit, 2);

    let first = report.send(store).await;
    assert_eq!(
        first,
        ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Kept, A, false))
    );
    // Only the count moves: the id, its binding and its last use stay.
    assert_eq!(
        load(store, &key).await,
        Some(SessionRow {
            failure_count: 1,
            ..original
        })
    );

    let second = report.send(store).await;
    assert_eq!(
        second,
        ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Cleared, "", true))
    );
    assert_eq!(load(store, &key).await, None);
}

async fn a_transient_failure_leaves_the_row_untouched(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let original = SessionRow {
        failure_count: 1,
        ..row(A, t0() - hours(1))
    };
    put(fx, &key, &original).await;
    let report = Report::transient_failure(&key, A);
    assert_eq!(report.class(), ResultClass::Transient);
    assert_eq!(
        report.send(store).await,
        ReportReply::Applied(outcome(ResultClass::Transient, Action::Kept, A, false))
    );
    assert_eq!(load(store, &key).await, Some(original));
}
