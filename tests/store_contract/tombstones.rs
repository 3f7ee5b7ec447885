//! Tombstones (issue 19): every operation that removes a key's row leaves the key a tombstone in
//! the same transaction — a report's clear (gone, invalid, failure limit) with the class, the
//! matched signature and both bindings; Forget; an expiry on read; a sweep — and storing an id
//! deletes it. A compare-and-set that removes nothing leaves nothing. Tombstones are swept by
//! their own rule. Reports go through the store as the service sends them, alone and (many at
//! once, released together) in batches.

use std::sync::Arc;

use sessionkeeper::domain::{
    Binding, ReportPlan, ResultClass, SessionKey, Tombstone, TombstoneReason, TranscriptFate, explain_with,
};
use sessionkeeper::store::{Found, ReportReply, SessionStore};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        a_key_that_never_lost_an_id_has_no_tombstone,
        a_gone_report_leaves_a_tombstone_with_its_class_signature_and_both_bindings,
        the_unknown_failure_limit_leaves_a_failure_limit_tombstone,
        a_gone_report_about_an_older_id_leaves_no_tombstone,
        forget_leaves_a_forgotten_tombstone_and_forgetting_nothing_leaves_none,
        an_expiry_on_read_leaves_an_expired_tombstone_but_not_for_a_row_that_changed,
        a_sweep_leaves_a_swept_tombstone_for_each_row_it_deletes,
        storing_a_new_id_deletes_the_tombstone_with_or_without_a_report_id,
        a_newer_removal_replaces_the_tombstone,
        tombstones_are_swept_by_their_own_cutoff_per_agent,
        many_gone_reports_at_once_each_leave_their_keys_tombstone_and_successes_delete_them,
        a_lookup_finds_the_row_else_the_tombstone_alone_and_in_batches,
    ],
}

/// Sends `report` as the service does, with the signature that classified it.
async fn send(store: &dyn SessionStore, report: &Report) -> ReportReply {
    let mut plan = report.plan();
    if let ReportPlan::OnRow(on_row) = &mut plan {
        on_row.matched_signature = explain_with(
            &report.result,
            !report.resumed_session_id.is_empty(),
            &request_binding().provider,
            &[],
        )
        .signature
        .map(|s| s.label());
    }
    let report_id = report.report_id.as_deref();
    match &plan {
        ReportPlan::Store(result) => store.store_result(&report.key, report_id, report.now, result).await,
        ReportPlan::OnRow(on_row) => store.report_on_row(&report.key, report_id, report.now, on_row).await,
    }
    .unwrap_or_else(|e| panic!("report on {}: {e}", report.key))
}

async fn tombstone(store: &dyn SessionStore, key: &SessionKey) -> Option<Tombstone> {
    store
        .tombstone(key)
        .await
        .unwrap_or_else(|e| panic!("tombstone of {key}: {e}"))
}

fn removal(session_id: &str, reason: TombstoneReason, at: chrono::DateTime<chrono::Utc>) -> Tombstone {
    Tombstone {
        session_id: session_id.into(),
        reason,
        cleared_at: at,
        result_class: None,
        matched_signature: None,
        reported_binding: Binding::default(),
        stored_binding: stored_binding(),
    }
}

async fn a_key_that_never_lost_an_id_has_no_tombstone(fx: &Fixture) {
    let key = coder("never-lost");
    assert_eq!(tombstone(fx.store(), &key).await, None);
    put(fx, &key, &row(A, t0())).await;
    assert_eq!(tombstone(fx.store(), &key).await, None);
}

async fn a_gone_report_leaves_a_tombstone_with_its_class_signature_and_both_bindings(fx: &Fixture) {
    let key = coder("gone");
    put(fx, &key, &row(A, t0())).await;
    let at = t0() + hours(1);
    send(fx.store(), &Report::gone(&key, A).at(at)).await;
    assert_eq!(load(fx.store(), &key).await, None);
    assert_eq!(
        tombstone(fx.store(), &key).await,
        Some(Tombstone {
            session_id: A.into(),
            reason: TombstoneReason::ClearedGone,
            cleared_at: at,
            result_class: Some(ResultClass::SessionGone),
            matched_signature: Some("no conversation found".into()),
            reported_binding: request_binding(),
            stored_binding: stored_binding(),
        })
    );
}

async fn the_unknown_failure_limit_leaves_a_failure_limit_tombstone(fx: &Fixture) {
    let key = coder("limit");
    put(fx, &key, &row(A, t0())).await;
    send(
        fx.store(),
        &Report::unknown_zero_turn_failure(&key, A).at(t0() + hours(1)),
    )
    .await;
    assert_eq!(tombstone(fx.store(), &key).await, None, "one failure only counts");
    let at = t0() + hours(2);
    send(fx.store(), &Report::unknown_zero_turn_failure(&key, A).at(at)).await;
    let got = tombstone(fx.store(), &key).await.expect("a tombstone at the limit");
    assert_eq!(
        (got.reason, got.result_class, got.matched_signature, got.cleared_at),
        (
            TombstoneReason::ClearedFailureLimit,
            Some(ResultClass::UnknownFailure),
            None,
            at
        )
    );
}

async fn a_gone_report_about_an_older_id_leaves_no_tombstone(fx: &Fixture) {
    let key = coder("superseded");
    put(fx, &key, &row(B, t0())).await;
    send(fx.store(), &Report::gone(&key, A).at(t0() + hours(1))).await;
    assert_eq!(load(fx.store(), &key).await.map(|r| r.session_id), Some(B.to_owned()));
    assert_eq!(tombstone(fx.store(), &key).await, None);
    // And a gone report on a key with no row clears nothing, so leaves nothing.
    let empty = coder("superseded-empty");
    send(fx.store(), &Report::gone(&empty, A).at(t0() + hours(1))).await;
    assert_eq!(tombstone(fx.store(), &empty).await, None);
}

async fn forget_leaves_a_forgotten_tombstone_and_forgetting_nothing_leaves_none(fx: &Fixture) {
    let key = coder("forget");
    put(fx, &key, &row(A, t0())).await;
    let at = t0() + hours(3);
    let removed = fx
        .store()
        .forget(&key, TranscriptFate::Delete, at)
        .await
        .expect("forget");
    assert_eq!(removed.rows, 1);
    assert_eq!(
        tombstone(fx.store(), &key).await,
        Some(removal(A, TombstoneReason::Forgotten, at))
    );
    let nothing = coder("forget-nothing");
    fx.store()
        .forget(&nothing, TranscriptFate::Delete, at)
        .await
        .expect("forget");
    assert_eq!(tombstone(fx.store(), &nothing).await, None);
}

async fn an_expiry_on_read_leaves_an_expired_tombstone_but_not_for_a_row_that_changed(fx: &Fixture) {
    let key = coder("expired");
    put(fx, &key, &row(A, t0())).await;
    let at = t0() + hours(25);
    let read = load(fx.store(), &key).await.expect("the row");
    let removed = fx
        .store()
        .delete_if_unchanged(&key, &read, TranscriptFate::Delete, at)
        .await
        .expect("delete");
    assert_eq!(removed.rows, 1);
    assert_eq!(
        tombstone(fx.store(), &key).await,
        Some(removal(A, TombstoneReason::Expired, at))
    );
    let changed = coder("expired-changed");
    put(fx, &changed, &row(B, t0() + hours(1))).await;
    let removed = fx
        .store()
        .delete_if_unchanged(&changed, &row(B, t0()), TranscriptFate::Delete, at)
        .await
        .expect("delete");
    assert_eq!(removed.rows, 0);
    assert_eq!(tombstone(fx.store(), &changed).await, None);
}

async fn a_sweep_leaves_a_swept_tombstone_for_each_row_it_deletes(fx: &Fixture) {
    let old = [coder("swept-1"), coder("swept-2"), key("other", "coder", "swept-3")];
    for k in &old {
        put(fx, k, &row(A, t0())).await;
    }
    let fresh = coder("swept-fresh");
    put(fx, &fresh, &row(B, t0() + hours(20))).await;
    let at = t0() + hours(25);
    let deleted = fx
        .store()
        .delete_expired_batch(
            &rule(None, all_except(&[]), at - hours(24)),
            100,
            TranscriptFate::Delete,
            at,
        )
        .await
        .expect("sweep");
    assert_eq!(deleted.rows, 3);
    for k in &old {
        assert_eq!(
            tombstone(fx.store(), k).await,
            Some(removal(A, TombstoneReason::Swept, at)),
            "{k}"
        );
    }
    assert_eq!(tombstone(fx.store(), &fresh).await, None);
}

async fn storing_a_new_id_deletes_the_tombstone_with_or_without_a_report_id(fx: &Fixture) {
    for (conversation, report_id) in [("store-plain", None), ("store-with-id", Some("r-store"))] {
        let key = coder(conversation);
        put(fx, &key, &row(A, t0())).await;
        send(fx.store(), &Report::gone(&key, A).at(t0() + hours(1))).await;
        assert!(tombstone(fx.store(), &key).await.is_some(), "{conversation}");
        let mut success = Report::success(&key, "", B).at(t0() + hours(2));
        if let Some(id) = report_id {
            success = success.id(id);
        }
        send(fx.store(), &success).await;
        assert_eq!(tombstone(fx.store(), &key).await, None, "{conversation}");
        // A replay of the report changes nothing: the tombstone stays deleted, the row stays.
        send(fx.store(), &success).await;
        assert_eq!(load(fx.store(), &key).await.map(|r| r.session_id), Some(B.to_owned()));
    }
}

async fn a_newer_removal_replaces_the_tombstone(fx: &Fixture) {
    let key = coder("replaced");
    put(fx, &key, &row(A, t0())).await;
    send(fx.store(), &Report::gone(&key, A).at(t0() + hours(1))).await;
    put(fx, &key, &row(B, t0() + hours(2))).await;
    let at = t0() + hours(3);
    fx.store()
        .forget(&key, TranscriptFate::Delete, at)
        .await
        .expect("forget");
    let got = tombstone(fx.store(), &key).await.expect("a tombstone");
    assert_eq!(
        (
            got.session_id.as_str(),
            got.reason,
            got.result_class,
            got.reported_binding
        ),
        (B, TombstoneReason::Forgotten, None, Binding::default())
    );
}

async fn tombstones_are_swept_by_their_own_cutoff_per_agent(fx: &Fixture) {
    let coder_key = coder("ts-coder");
    let reviewer_key = key("acme", "reviewer", "ts-reviewer");
    for (k, at) in [(&coder_key, t0()), (&reviewer_key, t0())] {
        put(fx, k, &row(A, t0())).await;
        fx.store().forget(k, TranscriptFate::Delete, at).await.expect("forget");
    }
    let later = coder("ts-later");
    put(fx, &later, &row(A, t0())).await;
    fx.store()
        .forget(&later, TranscriptFate::Delete, t0() + hours(2))
        .await
        .expect("forget");
    // The reviewer's rule alone deletes only the reviewer's tombstone.
    let reviewer_rule = rule(None, only("reviewer"), t0() + hours(1));
    assert_eq!(
        fx.store()
            .delete_expired_tombstones_batch(&reviewer_rule, 100)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(tombstone(fx.store(), &reviewer_key).await, None);
    assert!(tombstone(fx.store(), &coder_key).await.is_some());
    // The others' rule: written before the cutoff goes, at or after it stays; a limit holds.
    let others = rule(None, all_except(&["reviewer"]), t0() + hours(2));
    assert_eq!(
        fx.store()
            .delete_expired_tombstones_batch(&others, 100)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(tombstone(fx.store(), &coder_key).await, None);
    assert!(tombstone(fx.store(), &later).await.is_some());
    // A namespace filter keeps other namespaces' tombstones.
    let elsewhere = rule(Some("other"), all_except(&[]), t0() + hours(3));
    assert_eq!(
        fx.store()
            .delete_expired_tombstones_batch(&elsewhere, 100)
            .await
            .expect("sweep"),
        0
    );
    assert!(tombstone(fx.store(), &later).await.is_some());
}

async fn many_gone_reports_at_once_each_leave_their_keys_tombstone_and_successes_delete_them(fx: &Fixture) {
    const KEYS: usize = 48;
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("pile-{k}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0())).await;
    }
    let at = t0() + hours(1);
    let send_all = |reports: Vec<Report>| {
        let start = Arc::new(Barrier::new(reports.len()));
        let mut senders = JoinSet::new();
        for (i, report) in reports.into_iter().enumerate() {
            let (store, start) = (fx.replica(i), start.clone());
            senders.spawn(async move {
                start.wait().await;
                send(store.as_ref(), &report).await
            });
        }
        senders
    };
    // Every other key gets a report id, so both kinds of batch member are covered.
    let gone: Vec<Report> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let r = Report::gone(k, A).at(at);
            if i % 2 == 0 { r.id(format!("gone-{i}")) } else { r }
        })
        .collect();
    for reply in send_all(gone).join_all().await {
        assert!(matches!(reply, ReportReply::Applied(_)), "{reply:?}");
    }
    for key in &keys {
        let got = tombstone(fx.store(), key).await;
        assert_eq!(
            got.as_ref().map(|t| (t.session_id.as_str(), t.reason, t.cleared_at)),
            Some((A, TombstoneReason::ClearedGone, at)),
            "{key}"
        );
        assert_eq!(got.map(|t| t.reported_binding), Some(request_binding()), "{key}");
    }
    let successes: Vec<Report> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Report::success(k, "", B).at(at + hours(1)).id(format!("ok-{i}")))
        .collect();
    for reply in send_all(successes).join_all().await {
        assert!(matches!(reply, ReportReply::Applied(_)), "{reply:?}");
    }
    for key in &keys {
        assert_eq!(tombstone(fx.store(), key).await, None, "{key}");
    }
}

/// What a Get decides on: the row, else the tombstone, read together whether the lookup runs
/// alone or coalesced with other keys' (where some have rows, some tombstones, some neither).
async fn a_lookup_finds_the_row_else_the_tombstone_alone_and_in_batches(fx: &Fixture) {
    const EACH: usize = 12;
    let at = t0() + hours(2);
    let mut expected: Vec<(SessionKey, Found)> = Vec::new();
    for i in 0..EACH {
        let held = coder(&format!("lookup-held-{i}"));
        put(fx, &held, &row(A, t0())).await;
        expected.push((
            held,
            Found {
                row: Some(row(A, t0())),
                tombstone: None,
            },
        ));
        let forgotten = coder(&format!("lookup-forgotten-{i}"));
        put(fx, &forgotten, &row(B, t0())).await;
        fx.store()
            .forget(&forgotten, TranscriptFate::Delete, at)
            .await
            .expect("forget");
        expected.push((
            forgotten,
            Found {
                row: None,
                tombstone: Some(removal(B, TombstoneReason::Forgotten, at)),
            },
        ));
        expected.push((coder(&format!("lookup-never-{i}")), Found::default()));
    }
    for (key, found) in &expected {
        assert_eq!(&fx.store().lookup(key).await.expect("lookup"), found, "alone: {key}");
    }
    let start = Arc::new(Barrier::new(expected.len() * 4));
    let mut lookups = JoinSet::new();
    for round in 0..4 {
        for (i, (key, found)) in expected.iter().enumerate() {
            let (store, start, key, found) = (fx.replica(i + round), start.clone(), key.clone(), found.clone());
            lookups.spawn(async move {
                start.wait().await;
                let got = store.lookup(&key).await.expect("lookup");
                assert_eq!(got, found, "at once: {key}");
            });
        }
    }
    lookups.join_all().await;
}
