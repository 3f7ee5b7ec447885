//! Many reports at once on a few keys, as a store that commits concurrent reports together (the
//! embedded store batches its writes into one transaction) sees them: every answer is one a
//! serial order of SPEC §4 gives, a report id answers once however often and however it is
//! sent, and the rows read back agree with the answers. Starts are released together (a
//! barrier) so that calls pile up into batches; nothing here waits for time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sessionkeeper::domain::{Action, ReportOutcome, ResultClass, ResumeFailureCause, SessionKey, SessionRow};
use sessionkeeper::store::ReportReply;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        hundreds_of_concurrent_reports_on_a_few_keys_are_each_explained_and_the_rows_agree,
        two_reports_on_one_key_at_once_leave_the_row_of_one_of_their_two_orders,
    ],
}

/// What one sender sent: its report id, and the id it stored (a success) or resumed (a gone report).
#[derive(Debug, Clone)]
enum Sent {
    Success { stores: String },
    Gone { resumed: String },
}

async fn hundreds_of_concurrent_reports_on_a_few_keys_are_each_explained_and_the_rows_agree(fx: &Fixture) {
    const KEYS: usize = 4;
    const REPORTS: usize = 320;
    let now = t0() + hours(1);
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("pile-{k}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0())).await;
    }
    // Report i goes to key i % KEYS. Every third is a gone report about A or about an id an
    // earlier success on its key stores; the others store an id of their own. Every seventh
    // (from the eighth on) reuses the report id of the report KEYS before it: same key, other
    // content, so only one of the two is applied and both get its answer.
    let mut sent: Vec<(usize, String, Sent)> = Vec::with_capacity(REPORTS);
    for i in 0..REPORTS {
        let k = i % KEYS;
        let report_id = if i >= KEYS && i % 7 == 0 {
            sent[i - KEYS].1.clone()
        } else {
            format!("pile-{i}")
        };
        let what = if i % 3 == 2 {
            let resumed = if i % 2 == 0 || i < 3 * KEYS {
                A.to_owned()
            } else {
                format!("id-{}", i - 2 * KEYS)
            };
            Sent::Gone { resumed }
        } else {
            Sent::Success {
                stores: format!("id-{i}"),
            }
        };
        sent.push((k, report_id, what));
    }
    let start = Arc::new(Barrier::new(REPORTS));
    let mut senders = JoinSet::new();
    for (i, (k, report_id, what)) in sent.iter().enumerate() {
        let key = &keys[*k];
        let report = match what {
            Sent::Success { stores } => Report::success(key, A, stores),
            Sent::Gone { resumed } => Report::gone(key, resumed),
        }
        .id(report_id.clone())
        .at(now);
        let (store, start) = (fx.replica(i), start.clone());
        senders.spawn(async move {
            start.wait().await;
            (i, report.send(store.as_ref()).await)
        });
    }
    let mut replies: Vec<Option<ReportReply>> = vec![None; REPORTS];
    for (i, reply) in senders.join_all().await {
        replies[i] = Some(reply);
    }
    let replies: Vec<ReportReply> = replies.into_iter().map(|r| r.expect("every sender answered")).collect();

    // One answer per report id, applied by exactly one of its senders.
    let mut by_report_id: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (_, report_id, _)) in sent.iter().enumerate() {
        by_report_id.entry(report_id).or_default().push(i);
    }
    // Per key: the ids a success was applied for (with A, the row's first id).
    let mut stored_ids: Vec<BTreeSet<String>> = vec![BTreeSet::from([A.to_owned()]); KEYS];
    let mut applied: Vec<usize> = Vec::new();
    for (report_id, senders) in &by_report_id {
        let outcome = |i: usize| match &replies[i] {
            ReportReply::Applied(o) | ReportReply::Replayed(o) => o.clone(),
            ReportReply::ReportIdReused => panic!("report {i} ({report_id}): its id is reused only within its key"),
        };
        let first: Vec<usize> = senders
            .iter()
            .copied()
            .filter(|i| matches!(replies[*i], ReportReply::Applied(_)))
            .collect();
        assert_eq!(first.len(), 1, "{report_id} is applied once: {senders:?}");
        for i in senders {
            assert_eq!(
                outcome(*i),
                outcome(first[0]),
                "{report_id}: one answer for all its senders"
            );
        }
        if let Sent::Success { stores } = &sent[first[0]].2 {
            stored_ids[sent[first[0]].0].insert(stores.clone());
        }
        applied.push(first[0]);
    }
    assert!(
        by_report_id.values().any(|s| s.len() > 1),
        "some report ids were sent twice"
    );

    // Each applied report's answer is one its own content gives on some row of its key.
    let (mut cleared, mut superseded) = (0, 0);
    for i in applied {
        let (k, report_id, what) = &sent[i];
        let ReportReply::Applied(outcome) = &replies[i] else {
            unreachable!("filtered above")
        };
        match what {
            Sent::Success { stores } => assert_eq!(*outcome, stored(stores), "{report_id}"),
            Sent::Gone { resumed } if outcome.action == Action::Cleared => {
                // It removed the row holding its id (the first row, A, stored by another pod;
                // any later one by a success of this test, bound as the gone report is), or found
                // none left to compare with (another gone report cleared it first).
                let removed = if resumed == A {
                    ResumeFailureCause::RoutedElsewhere
                } else {
                    ResumeFailureCause::LostInPlace
                };
                assert!(
                    [Some(removed), Some(ResumeFailureCause::Unknown)].contains(&outcome.cause),
                    "{report_id}: {outcome:?}"
                );
                let want = ReportOutcome {
                    cause: outcome.cause,
                    ..cleared_as_gone()
                };
                assert_eq!(*outcome, want, "{report_id}");
                cleared += 1;
            }
            Sent::Gone { resumed } => {
                assert_eq!(
                    outcome.cause,
                    Some(ResumeFailureCause::Unknown),
                    "{report_id}: {outcome:?}"
                );
                assert_eq!(outcome.class, ResultClass::SessionGone, "{report_id}: {outcome:?}");
                assert_eq!(outcome.action, Action::Superseded, "{report_id}: {outcome:?}");
                assert_ne!(&outcome.session_id, resumed, "{report_id}: superseded by itself");
                assert!(
                    stored_ids[*k].contains(&outcome.session_id),
                    "{report_id}: superseded by {}, which no report stored on {}",
                    outcome.session_id,
                    keys[*k]
                );
                superseded += 1;
            }
        }
    }
    println!("gone reports: {cleared} cleared, {superseded} superseded");

    // Each key's row is one a success stored (binding and time included), or none.
    for (k, key) in keys.iter().enumerate() {
        if let Some(found) = load(fx.store(), key).await {
            assert!(
                stored_ids[k].contains(&found.session_id) && found.session_id != A,
                "{key}: the row holds {}, which no applied success stored",
                found.session_id
            );
            assert_eq!(found, stored_by_report(&found.session_id, now), "{key}");
        }
    }
}

/// A zero-turn failure of a resume of A (the row's failure count is 1, the limit 2) and a
/// success that stores A again, sent at once on each of many keys. Failure first: it clears the
/// row (CLEARED, retry), then the success stores A with no failures. Success first: it stores A
/// with no failures, then the failure counts one (KEPT). The failure's answer says which order
/// ran, and the row must be that order's.
async fn two_reports_on_one_key_at_once_leave_the_row_of_one_of_their_two_orders(fx: &Fixture) {
    const KEYS: usize = 64;
    let now = t0() + hours(1);
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("two-orders-{k}"))).collect();
    for key in &keys {
        let once_failed = SessionRow {
            failure_count: 1,
            ..row(A, t0())
        };
        put(fx, key, &once_failed).await;
    }
    let start = Arc::new(Barrier::new(2 * KEYS));
    let mut senders = JoinSet::new();
    for (k, key) in keys.iter().enumerate() {
        let failure = Report::unknown_zero_turn_failure(key, A)
            .id(format!("fail-{k}"))
            .at(now);
        let success = Report::success(key, A, A).id(format!("ok-{k}")).at(now);
        for (n, (is_failure, report)) in [(true, failure), (false, success)].into_iter().enumerate() {
            let (store, start) = (fx.replica(k + n), start.clone());
            senders.spawn(async move {
                start.wait().await;
                (k, is_failure, report.send(store.as_ref()).await)
            });
        }
    }
    let mut failure_replies: Vec<Option<ReportReply>> = vec![None; KEYS];
    for (k, is_failure, reply) in senders.join_all().await {
        if is_failure {
            failure_replies[k] = Some(reply);
        } else {
            assert_eq!(reply, ReportReply::Applied(stored(A)), "{}", keys[k]);
        }
    }
    let cleared = ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Cleared, "", true));
    let counted = ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Kept, A, false));
    let (mut failure_first, mut success_first) = (0, 0);
    for (key, reply) in keys.iter().zip(failure_replies) {
        let reply = reply.expect("the failure was answered");
        let row = load(fx.store(), key).await;
        let stored_again = stored_by_report(A, now);
        if reply == cleared {
            failure_first += 1;
            assert_eq!(row, Some(stored_again), "{key}: failure then success");
        } else if reply == counted {
            success_first += 1;
            let counted_once = SessionRow {
                failure_count: 1,
                ..stored_again
            };
            assert_eq!(row, Some(counted_once), "{key}: success then failure");
        } else {
            panic!("{key}: {reply:?} is the failure's answer in neither order");
        }
    }
    println!("failure first: {failure_first}, success first: {success_first}");
}
