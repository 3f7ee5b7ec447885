//! Concurrency: reports, expiry deletes and sweeps racing on the same keys never lose a newer id and
//! apply a report id exactly once; concurrent loads and expiry deletes (coalesced into batches on
//! Postgres) each get their own key's row and delete only their own row as read. On Postgres the
//! tasks alternate between two replicas; on SQLite they share its single instance.

use std::sync::Arc;
use std::time::Duration;

use sessionkeeper::domain::{Action, ReportOutcome, ResultClass, SessionKey};
use sessionkeeper::store::ReportReply;
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        a_late_gone_report_never_deletes_a_newer_id_under_concurrency,
        an_expiry_delete_racing_a_success_never_deletes_the_stored_row,
        a_sweep_racing_successes_never_deletes_a_newly_stored_id,
        many_tasks_sending_the_same_report_id_at_once_apply_it_exactly_once,
        a_store_and_a_clear_under_one_report_id_racing_other_reports_never_fail_and_agree,
        a_report_id_reused_concurrently_for_other_keys_changes_none_of_them,
        concurrent_zero_turn_failures_are_each_counted_once,
        hundreds_of_concurrent_loads_each_get_their_own_row,
        hundreds_of_concurrent_expiry_deletes_each_delete_only_their_own_row_as_read,
    ],
}

/// Racing pairs in flight at once: enough to contend, few enough for SQLite's single writer.
const PAIRS_IN_FLIGHT: usize = 16;

async fn a_late_gone_report_never_deletes_a_newer_id_under_concurrency(fx: &Fixture) {
    const KEYS: usize = 200;
    let now = t0() + hours(1);
    let keys: Vec<SessionKey> = (0..KEYS).map(|i| coder(&format!("race-{i}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0())).await;
    }
    let in_flight = Arc::new(Semaphore::new(PAIRS_IN_FLIGHT));
    let mut pairs = JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        let (one, other) = (fx.replica(i), fx.replica(i + 1));
        let success = Report::success(key, A, B).id(format!("s-{i}")).at(now);
        let gone = Report::gone(key, A).id(format!("g-{i}")).at(now);
        let in_flight = in_flight.clone();
        pairs.spawn(async move {
            let _permit = in_flight.acquire_owned().await.expect("semaphore");
            let (success_reply, gone_reply) = at_once(async move { success.send(one.as_ref()).await }, async move {
                gone.send(other.as_ref()).await
            })
            .await;
            (i, success_reply, gone_reply)
        });
    }
    let (mut cleared_first, mut superseded) = (0, 0);
    for (i, success_reply, gone_reply) in pairs.join_all().await {
        let key = &keys[i];
        assert_eq!(success_reply, ReportReply::Applied(stored(B)), "{key}");
        match gone_reply {
            ReportReply::Applied(o) if o == cleared_as_gone() => cleared_first += 1,
            ReportReply::Applied(o) if o == superseded_gone(B) => superseded += 1,
            other => panic!("{key}: unexpected gone reply {other:?}"),
        }
        assert_eq!(load(fx.store(), key).await, Some(stored_by_report(B, now)), "{key}");
    }
    println!("gone report first: {cleared_first}, success first: {superseded}");
}

async fn an_expiry_delete_racing_a_success_never_deletes_the_stored_row(fx: &Fixture) {
    const KEYS: usize = 200;
    let expired_at = t0() - hours(25);
    let keys: Vec<SessionKey> = (0..KEYS).map(|i| coder(&format!("expiry-race-{i}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, expired_at)).await;
    }
    let in_flight = Arc::new(Semaphore::new(PAIRS_IN_FLIGHT));
    let mut pairs = JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        let (one, other) = (fx.replica(i), fx.replica(i + 1));
        let read = row(A, expired_at);
        let key_for_delete = key.clone();
        // A run resumed A and completed: the same id is stored again, now.
        let success = Report::success(key, A, A).at(t0());
        let in_flight = in_flight.clone();
        pairs.spawn(async move {
            let _permit = in_flight.acquire_owned().await.expect("semaphore");
            let (deleted, success_reply) = at_once(
                async move {
                    one.delete_if_unchanged(
                        &key_for_delete,
                        &read,
                        sessionkeeper::domain::TranscriptFate::Delete,
                        t0(),
                    )
                    .await
                    .expect("delete")
                    .rows
                        > 0
                },
                async move { success.send(other.as_ref()).await },
            )
            .await;
            (i, deleted, success_reply)
        });
    }
    let mut deleted_first = 0;
    for (i, deleted, success_reply) in pairs.join_all().await {
        let key = &keys[i];
        assert_eq!(success_reply, ReportReply::Applied(stored(A)), "{key}");
        deleted_first += usize::from(deleted);
        assert_eq!(load(fx.store(), key).await, Some(stored_by_report(A, t0())), "{key}");
    }
    println!("expiry delete first: {deleted_first} of {KEYS}");
}

async fn a_sweep_racing_successes_never_deletes_a_newly_stored_id(fx: &Fixture) {
    const KEYS: usize = 200;
    const SWEEPERS: usize = 2;
    let now = t0();
    let keys: Vec<SessionKey> = (0..KEYS).map(|i| coder(&format!("sweep-race-{i}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, now - hours(25))).await;
    }
    let expiry = rule(None, only("coder"), now - hours(24));
    let start = Arc::new(Barrier::new(SWEEPERS + 1));
    let mut sweepers = JoinSet::new();
    for s in 0..SWEEPERS {
        let (store, expiry, start) = (fx.replica(s), expiry.clone(), start.clone());
        sweepers.spawn(async move {
            start.wait().await;
            let mut deleted = 0;
            // Small batches with a pause, as the sweeper does, so that the sweep and the reports interleave.
            loop {
                let batch = store
                    .delete_expired_batch(&expiry, 2, sessionkeeper::domain::TranscriptFate::Delete, t0())
                    .await
                    .expect("delete batch")
                    .rows;
                deleted += batch;
                if batch == 0 {
                    break deleted;
                }
                // Paces the batches (time passing, not a wait), as the sweeper's pause does.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    start.wait().await;
    let in_flight = Arc::new(Semaphore::new(PAIRS_IN_FLIGHT));
    let mut reports = JoinSet::new();
    // The sweep walks the rows from the first key; the reports start from the last, to meet it.
    for (i, key) in keys.iter().enumerate().rev() {
        // A run resumed A and completed with B while its expired row was being swept.
        let (store, report, in_flight) = (fx.replica(i + 1), Report::success(key, A, B).at(now), in_flight.clone());
        reports.spawn(async move {
            let _permit = in_flight.acquire_owned().await.expect("semaphore");
            (i, report.send(store.as_ref()).await)
        });
    }
    for (i, reply) in reports.join_all().await {
        assert_eq!(reply, ReportReply::Applied(stored(B)), "{}", keys[i]);
    }
    let swept: u64 = sweepers.join_all().await.into_iter().sum();
    println!("the sweep deleted {swept} of {KEYS} rows before their success");
    assert!(swept <= KEYS as u64, "deleted {swept} rows of {KEYS}");
    for key in &keys {
        assert_eq!(load(fx.store(), key).await, Some(stored_by_report(B, now)), "{key}");
    }
    assert_eq!(count_expired(fx.store(), &expiry).await, 0);
}

async fn many_tasks_sending_the_same_report_id_at_once_apply_it_exactly_once(fx: &Fixture) {
    const KEYS: usize = 8;
    const SENDERS: usize = 12;
    // Half the keys hold a row (the senders queue on its lock), half do not (they race to insert).
    let keys: Vec<(SessionKey, bool)> = (0..KEYS)
        .map(|k| (coder(&format!("same-id-{k}")), k % 2 == 0))
        .collect();
    for (key, has_row) in &keys {
        if *has_row {
            put(fx, key, &row(A, t0() - hours(1))).await;
        }
    }
    let start = Arc::new(Barrier::new(KEYS * SENDERS));
    let mut senders = JoinSet::new();
    for (k, (key, has_row)) in keys.iter().enumerate() {
        for j in 0..SENDERS {
            let resumed = if *has_row { A } else { "" };
            let report = Report::success(key, resumed, &format!("id-{j}")).id(format!("same-{k}"));
            let store = fx.replica(j);
            let start = start.clone();
            senders.spawn(async move {
                start.wait().await;
                (k, report.send(store.as_ref()).await)
            });
        }
    }
    let mut replies: Vec<Vec<ReportReply>> = vec![Vec::new(); KEYS];
    for (k, reply) in senders.join_all().await {
        replies[k].push(reply);
    }
    for ((key, _), replies) in keys.iter().zip(replies) {
        let applied: Vec<&ReportOutcome> = replies
            .iter()
            .filter_map(|r| match r {
                ReportReply::Applied(o) => Some(o),
                _ => None,
            })
            .collect();
        assert_eq!(
            applied.len(),
            1,
            "{key}: exactly one sender applies the report: {replies:?}"
        );
        let first = applied[0].clone();
        assert_eq!(first.action, Action::Stored, "{key}");
        for reply in &replies {
            assert!(
                *reply == ReportReply::Applied(first.clone()) || *reply == ReportReply::Replayed(first.clone()),
                "{key}: {reply:?} is neither the applied outcome nor its replay ({first:?})"
            );
        }
        let row = load(fx.store(), key).await.expect("the stored row");
        assert_eq!(
            row.session_id, first.session_id,
            "{key}: the row holds the applied report's id"
        );
    }
}

/// The two report paths racing on one key: report id R1 sent at once as a store (C) and as a
/// clear of A through two replicas, with R2 (store D) and R3 (clear A) racing them. Both paths
/// take the report id's lock before the row's, so none of the calls fails (`send` panics on any
/// error, a deadlock's `Conflict` included), R1 gets one answer, and the row ends with C or D.
async fn a_store_and_a_clear_under_one_report_id_racing_other_reports_never_fail_and_agree(fx: &Fixture) {
    const KEYS: usize = 48;
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("two-paths-{k}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0() - hours(1))).await;
    }
    let c = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";
    let d = "dddddddd-dddd-4ddd-8ddd-dddddddddddd";
    let start = Arc::new(Barrier::new(KEYS * 4));
    let mut senders = JoinSet::new();
    for (k, key) in keys.iter().enumerate() {
        let reports = [
            ("R1 store", Report::success(key, A, c).id(format!("r1-{k}"))),
            ("R1 clear", Report::gone(key, A).id(format!("r1-{k}"))),
            ("R2 store", Report::success(key, A, d).id(format!("r2-{k}"))),
            ("R3 clear", Report::gone(key, A).id(format!("r3-{k}"))),
        ];
        for (n, (name, report)) in reports.into_iter().enumerate() {
            let (store, start) = (fx.replica(k + n), start.clone());
            senders.spawn(async move {
                start.wait().await;
                (k, name, report.send(store.as_ref()).await)
            });
        }
    }
    let mut replies: Vec<Vec<(&str, ReportReply)>> = vec![Vec::new(); KEYS];
    for (k, name, reply) in senders.join_all().await {
        replies[k].push((name, reply));
    }
    for (key, replies) in keys.iter().zip(replies) {
        let outcome = |reply: &ReportReply| match reply {
            ReportReply::Applied(o) | ReportReply::Replayed(o) => o.clone(),
            ReportReply::ReportIdReused => panic!("{key}: a report id reused within its own key"),
        };
        let of = |name: &str| {
            replies
                .iter()
                .filter(|(n, _)| n.starts_with(name))
                .map(|(_, r)| r)
                .collect::<Vec<_>>()
        };
        let r1 = of("R1");
        let applied = r1.iter().filter(|r| matches!(r, ReportReply::Applied(_))).count();
        assert_eq!(applied, 1, "{key}: R1 is applied once: {r1:?}");
        assert_eq!(outcome(r1[0]), outcome(r1[1]), "{key}: both R1 senders get one answer");
        let r1 = outcome(r1[0]);
        assert_eq!(outcome(of("R2")[0]), stored(d), "{key}");
        let mut stored_ids = vec![d];
        if r1 == stored(c) {
            stored_ids.push(c);
        } else {
            assert_eq!(r1.class, ResultClass::SessionGone, "{key}: {r1:?}");
        }
        let row = load(fx.store(), key)
            .await
            .expect("a gone report about A never removes C or D");
        assert!(
            stored_ids.contains(&row.session_id.as_str()),
            "{key}: the row holds {}, not one of {stored_ids:?}",
            row.session_id
        );
    }
}

async fn a_report_id_reused_concurrently_for_other_keys_changes_none_of_them(fx: &Fixture) {
    const KEYS: usize = 16;
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("shared-id-{k}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0() - hours(1))).await;
    }
    let start = Arc::new(Barrier::new(KEYS));
    let mut senders = JoinSet::new();
    for (k, key) in keys.iter().enumerate() {
        let report = Report::success(key, A, &format!("id-{k}")).id("shared");
        let (store, start) = (fx.replica(k), start.clone());
        senders.spawn(async move {
            start.wait().await;
            (k, report.send(store.as_ref()).await)
        });
    }
    let mut winners = Vec::new();
    for (k, reply) in senders.join_all().await {
        let key = &keys[k];
        match reply {
            ReportReply::Applied(o) => {
                assert_eq!(o, stored(&format!("id-{k}")), "{key}");
                assert_eq!(
                    load(fx.store(), key).await,
                    Some(stored_by_report(&o.session_id, t0())),
                    "{key}"
                );
                winners.push(k);
            }
            // The loser's own effect (storing its id) was undone with its transaction.
            ReportReply::ReportIdReused => {
                assert_eq!(load(fx.store(), key).await, Some(row(A, t0() - hours(1))), "{key}");
            }
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one key gets the report id: {winners:?}");
}

async fn concurrent_zero_turn_failures_are_each_counted_once(fx: &Fixture) {
    const KEYS: usize = 20;
    const SENDERS: usize = 6;
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("counting-{k}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0() - hours(1))).await;
    }
    let start = Arc::new(Barrier::new(KEYS * SENDERS));
    let mut senders = JoinSet::new();
    for (k, key) in keys.iter().enumerate() {
        for j in 0..SENDERS {
            let report = Report::unknown_zero_turn_failure(key, A).id(format!("fail-{k}-{j}"));
            let store = fx.replica(j);
            let start = start.clone();
            senders.spawn(async move {
                start.wait().await;
                (k, report.send(store.as_ref()).await)
            });
        }
    }
    let mut replies: Vec<Vec<ReportReply>> = vec![Vec::new(); KEYS];
    for (k, reply) in senders.join_all().await {
        replies[k].push(reply);
    }
    let counted = ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Kept, A, false));
    let cleared = ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Cleared, "", true));
    let after_clear = ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Kept, "", false));
    for (key, replies) in keys.iter().zip(replies) {
        // Limit 2: the first failure counts, the second clears, the rest find no row.
        let how_many = |wanted: &ReportReply| replies.iter().filter(|r| *r == wanted).count();
        assert_eq!(how_many(&counted), 1, "{key}: {replies:?}");
        assert_eq!(how_many(&cleared), 1, "{key}: {replies:?}");
        assert_eq!(how_many(&after_clear), SENDERS - 2, "{key}: {replies:?}");
        assert_eq!(load(fx.store(), key).await, None, "{key}");
    }
}

/// Loads of many keys at once — stored, missing, the same key several times: each load answers its
/// own key. On Postgres the loads are coalesced into batches, so this checks that a batch hands
/// every caller its own row (and `None` to the missing ones).
async fn hundreds_of_concurrent_loads_each_get_their_own_row(fx: &Fixture) {
    const STORED: usize = 150;
    let keys: Vec<SessionKey> = (0..STORED).map(|i| coder(&format!("load-{i}"))).collect();
    for (i, key) in keys.iter().enumerate() {
        put(fx, key, &row(&format!("id-{i}"), t0())).await;
    }
    let mut loads = JoinSet::new();
    for round in 0..4 {
        for i in 0..STORED + 50 {
            let store = fx.replica(i + round);
            // Every stored key, a missing one beside it, and key 0 many times over.
            let (key, expected) = match i {
                i if i < STORED => (keys[i].clone(), Some(format!("id-{i}"))),
                i if i % 2 == 0 => (coder(&format!("missing-{i}")), None),
                _ => (keys[0].clone(), Some("id-0".to_owned())),
            };
            loads.spawn(async move {
                let loaded = store.load(&key).await.expect("load");
                assert_eq!(loaded.map(|r| r.session_id), expected, "{key}");
            });
        }
    }
    while let Some(done) = loads.join_next().await {
        done.expect("a load answered another key's row");
    }
}

/// Expiry deletes of many keys at once (coalesced into batches on Postgres): each deletes its own
/// key's row only as it was read, a row whose id changed since is kept, and a key found expired by
/// several Gets at once is deleted exactly once.
async fn hundreds_of_concurrent_expiry_deletes_each_delete_only_their_own_row_as_read(fx: &Fixture) {
    const KEYS: usize = 150;
    let keys: Vec<SessionKey> = (0..KEYS).map(|i| coder(&format!("expired-{i}"))).collect();
    for (i, key) in keys.iter().enumerate() {
        put(fx, key, &row(&format!("id-{i}"), t0())).await;
    }
    let mut deletes = JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        // Every third key was read with another id than the one it holds: it must stay.
        let read = if i % 3 == 0 {
            row("an-older-id", t0())
        } else {
            row(&format!("id-{i}"), t0())
        };
        // Key 1 is found expired by five Gets at once.
        let times = if i == 1 { 5 } else { 1 };
        for n in 0..times {
            let (store, key, read) = (fx.replica(i + n), key.clone(), read.clone());
            deletes.spawn(async move {
                (
                    i,
                    store
                        .delete_if_unchanged(&key, &read, sessionkeeper::domain::TranscriptFate::Delete, t0())
                        .await
                        .expect("delete")
                        .rows
                        > 0,
                )
            });
        }
    }
    let mut deleted = vec![0; KEYS];
    for (i, was_deleted) in deletes.join_all().await {
        deleted[i] += usize::from(was_deleted);
    }
    for (i, key) in keys.iter().enumerate() {
        let (expected_deleted, expected_row) = if i % 3 == 0 {
            (0, Some(row(&format!("id-{i}"), t0())))
        } else {
            (1, None)
        };
        assert_eq!(deleted[i], expected_deleted, "{key}: deletes that said they deleted");
        assert_eq!(load(fx.store(), key).await, expected_row, "{key}");
    }
}
