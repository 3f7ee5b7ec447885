//! Idempotency: a report id is answered once per namespace; a replay returns the first outcome and
//! changes nothing, and a report without an id is applied every time.

use sessionkeeper::store::ReportReply;

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        the_same_report_id_twice_replays_the_first_outcome_and_changes_nothing,
        a_replayed_gone_report_does_not_delete_an_id_stored_since,
        a_report_id_used_for_another_key_of_the_namespace_is_refused_and_changes_nothing,
        the_same_report_id_in_another_namespace_is_independent,
        reports_without_a_report_id_are_applied_every_time,
    ],
}

async fn the_same_report_id_twice_replays_the_first_outcome_and_changes_nothing(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let first = Report::success(&key, "", A).id("r-1").at(t0()).send(store).await;
    assert_eq!(first, ReportReply::Applied(stored(A)));
    // The repeat would store another id if it were applied.
    let repeat = Report::success(&key, A, B)
        .id("r-1")
        .at(t0() + hours(1))
        .send(store)
        .await;
    assert_eq!(repeat, ReportReply::Replayed(stored(A)));
    assert_eq!(load(store, &key).await, Some(stored_by_report(A, t0())));
}

async fn a_replayed_gone_report_does_not_delete_an_id_stored_since(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0() - hours(1))).await;
    let gone = Report::gone(&key, A).id("g-1");
    assert_eq!(gone.send(store).await, ReportReply::Applied(cleared_as_gone()));
    // The fresh retry completed and stored B; then the gone report is delivered again.
    let now = t0() + micros(5);
    assert_eq!(
        Report::success(&key, "", B).at(now).send(store).await,
        ReportReply::Applied(stored(B))
    );
    assert_eq!(gone.send(store).await, ReportReply::Replayed(cleared_as_gone()));
    assert_eq!(load(store, &key).await, Some(stored_by_report(B, now)));
}

async fn a_report_id_used_for_another_key_of_the_namespace_is_refused_and_changes_nothing(fx: &Fixture) {
    let store = fx.store();
    let first_key = key("acme", "coder", "c1");
    let first = Report::success(&first_key, "", A).id("r-1").send(store).await;
    assert_eq!(first, ReportReply::Applied(stored(A)));
    let others = [key("acme", "coder", "c2"), key("acme", "reviewer", "c1")];
    for other in &others {
        let existing = row("other-id", t0() - hours(1));
        put(fx, other, &existing).await;
        let reply = Report::success(other, "other-id", B).id("r-1").send(store).await;
        assert_eq!(reply, ReportReply::ReportIdReused, "{other}");
        assert_eq!(load(store, other).await, Some(existing), "{other}");
    }
    assert_eq!(load(store, &first_key).await, Some(stored_by_report(A, t0())));
}

async fn the_same_report_id_in_another_namespace_is_independent(fx: &Fixture) {
    let store = fx.store();
    let acme = key("acme", "coder", "c1");
    let other = key("other", "coder", "c1");
    assert_eq!(
        Report::success(&acme, "", A).id("r-1").send(store).await,
        ReportReply::Applied(stored(A))
    );
    assert_eq!(
        Report::success(&other, "", B).id("r-1").send(store).await,
        ReportReply::Applied(stored(B))
    );
    assert_eq!(load(store, &acme).await, Some(stored_by_report(A, t0())));
    assert_eq!(load(store, &other).await, Some(stored_by_report(B, t0())));
    // Each namespace replays its own first outcome.
    assert_eq!(
        Report::success(&other, B, "x").id("r-1").send(store).await,
        ReportReply::Replayed(stored(B))
    );
    assert_eq!(
        Report::success(&acme, A, "x").id("r-1").send(store).await,
        ReportReply::Replayed(stored(A))
    );
}

async fn reports_without_a_report_id_are_applied_every_time(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    assert_eq!(
        Report::success(&key, "", A).send(store).await,
        ReportReply::Applied(stored(A))
    );
    let now = t0() + hours(1);
    assert_eq!(
        Report::success(&key, A, B).at(now).send(store).await,
        ReportReply::Applied(stored(B))
    );
    assert_eq!(load(store, &key).await, Some(stored_by_report(B, now)));
}
