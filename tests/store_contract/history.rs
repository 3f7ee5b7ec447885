//! A conversation's history (issue 19 point 2): every write that changes a key adds its event in
//! the same transaction — a store, a failed run's report (`reported`, or `cleared` when it removed
//! the row, with the cause of a SESSION_GONE resume), Forget, an expiry on read, a sweep — in
//! order, and trims the key's history to `[policy] history_events` and 16 KiB, oldest first. No
//! read writes one and a replayed report adds none. Storing a new id keeps the history; it goes
//! with the key's tombstone when the sweep deletes that, and events of keys with neither row nor
//! tombstone are swept past the cutoff. Reports go through the store as the service sends them,
//! alone and (many at once, released together) in batches.

use std::sync::Arc;

use sessionkeeper::domain::{
    Action, Binding, HistoryEvent, HistoryKind, MAX_HISTORY_BYTES, ReportPlan, ResultClass, ResumeFailureCause,
    SessionKey, TranscriptFate, explain_with, history_kept,
};
use sessionkeeper::store::{ReportReply, SessionStore};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        each_report_writes_its_event_in_order_with_what_the_run_said,
        forget_an_expiry_on_read_and_a_sweep_each_write_their_event_and_a_no_op_writes_none,
        reads_write_no_event,
        a_replayed_report_writes_no_second_event,
        a_history_keeps_the_newest_events_up_to_the_policys_count,
        a_history_keeps_the_newest_events_up_to_16_kib,
        storing_a_new_id_keeps_the_history_and_sweeping_the_tombstone_deletes_it,
        events_of_a_key_with_neither_row_nor_tombstone_are_swept_past_the_cutoff,
        many_reports_at_once_each_write_one_event_and_each_key_is_trimmed,
    ],
}

/// Sends `report` as the service does, with the signature that classified it and the binding
/// `binding` (the builders' request binding by default).
async fn send_from(store: &dyn SessionStore, report: &Report, binding: &Binding) -> ReportReply {
    let mut plan = report.plan();
    let signature = explain_with(
        &report.result,
        !report.resumed_session_id.is_empty(),
        &binding.provider,
        &[],
    )
    .signature
    .map(|s| s.label());
    match &mut plan {
        ReportPlan::OnRow(on_row) => {
            on_row.matched_signature = signature;
            on_row.binding = binding.clone();
        }
        ReportPlan::Store(stored) => {
            stored.matched_signature = signature;
            stored.row.binding = binding.clone();
        }
    }
    let report_id = report.report_id.as_deref();
    match &plan {
        ReportPlan::Store(result) => store.store_result(&report.key, report_id, report.now, result).await,
        ReportPlan::OnRow(on_row) => store.report_on_row(&report.key, report_id, report.now, on_row).await,
    }
    .unwrap_or_else(|e| panic!("report on {}: {e}", report.key))
}

async fn send(store: &dyn SessionStore, report: &Report) -> ReportReply {
    send_from(store, report, &request_binding()).await
}

async fn history(store: &dyn SessionStore, key: &SessionKey) -> Vec<HistoryEvent> {
    store
        .history(key)
        .await
        .unwrap_or_else(|e| panic!("history of {key}: {e}"))
}

fn kinds(events: &[HistoryEvent]) -> Vec<(HistoryKind, &str)> {
    events.iter().map(|e| (e.kind, e.session_id.as_str())).collect()
}

/// A report with the policy's `history_events` set to `keep`.
fn keeping(mut report: Report, keep: u32) -> Report {
    report.policy.history_events = keep;
    report
}

async fn each_report_writes_its_event_in_order_with_what_the_run_said(fx: &Fixture) {
    let key = coder("h-reports");
    let stored_from = Binding {
        host: "pod-a".into(),
        ..request_binding()
    };
    send_from(fx.store(), &Report::success(&key, "", A).at(t0()), &stored_from).await;
    send(fx.store(), &Report::transient_failure(&key, A).at(t0() + hours(1))).await;
    send(fx.store(), &Report::gone(&key, A).at(t0() + hours(2))).await;
    send(fx.store(), &Report::gone(&key, A).at(t0() + hours(3))).await;
    let events = history(fx.store(), &key).await;
    assert_eq!(
        kinds(&events),
        [
            (HistoryKind::Stored, A),
            (HistoryKind::Reported, A),
            (HistoryKind::Cleared, A),
            (HistoryKind::Reported, ""),
        ]
    );
    assert_eq!(
        events.iter().map(|e| e.at).collect::<Vec<_>>(),
        [t0(), t0() + hours(1), t0() + hours(2), t0() + hours(3)]
    );
    let stored = events[0].report.as_ref().expect("the store's facts");
    assert_eq!(
        (
            stored.class,
            stored.action,
            stored.num_turns,
            stored.resumed_session_id.as_str()
        ),
        (ResultClass::Success, Action::Stored, 3, "")
    );
    assert_eq!(events[0].binding, stored_from);
    let transient = events[1].report.as_ref().expect("the report's facts");
    assert_eq!(
        (transient.class, transient.action, transient.cause),
        (ResultClass::Transient, Action::Kept, None)
    );
    // The clear: the class, the signature, what it resumed, where it ran and, the run having gone
    // to pod-b while the id lived on pod-a, the cause.
    let cleared = events[2].report.as_ref().expect("the clear's facts");
    assert_eq!(
        (
            cleared.class,
            cleared.action,
            cleared.resumed_session_id.as_str(),
            cleared.matched_signature.as_deref(),
            cleared.cause
        ),
        (
            ResultClass::SessionGone,
            Action::Cleared,
            A,
            Some("no conversation found"),
            Some(ResumeFailureCause::RoutedElsewhere)
        )
    );
    assert_eq!(events[2].binding, request_binding());
    // A gone report with nothing left to clear: reported, cause unknown.
    let late = events[3].report.as_ref().expect("the late report's facts");
    assert_eq!(
        (late.action, late.cause),
        (Action::Cleared, Some(ResumeFailureCause::Unknown))
    );
    // Same binding: the transcript was lost in place.
    let in_place = coder("h-in-place");
    send(fx.store(), &Report::success(&in_place, "", B).at(t0())).await;
    send(fx.store(), &Report::gone(&in_place, B).at(t0() + hours(1))).await;
    let events = history(fx.store(), &in_place).await;
    assert_eq!(
        events[1].report.as_ref().and_then(|r| r.cause),
        Some(ResumeFailureCause::LostInPlace)
    );
}

async fn forget_an_expiry_on_read_and_a_sweep_each_write_their_event_and_a_no_op_writes_none(fx: &Fixture) {
    let key = coder("h-removals");
    send(fx.store(), &Report::success(&key, "", A).at(t0())).await;
    let forgotten_at = t0() + hours(1);
    fx.store()
        .forget(&key, TranscriptFate::Delete, forgotten_at)
        .await
        .expect("forget");
    // Forgetting a key with no row removes nothing and writes nothing.
    fx.store()
        .forget(&key, TranscriptFate::Delete, forgotten_at + hours(1))
        .await
        .expect("forget");
    send(fx.store(), &Report::success(&key, "", B).at(t0() + hours(2))).await;
    let read = load(fx.store(), &key).await.expect("the row");
    // A delete of a row that changed since it was read removes nothing and writes nothing.
    let stale = row(A, t0());
    let expired_at = t0() + hours(30);
    let removed = fx
        .store()
        .delete_if_unchanged(&key, &stale, TranscriptFate::Delete, expired_at)
        .await
        .expect("delete");
    assert_eq!(removed.rows, 0);
    fx.store()
        .delete_if_unchanged(&key, &read, TranscriptFate::Delete, expired_at)
        .await
        .expect("delete");
    send(fx.store(), &Report::success(&key, "", A).at(t0() + hours(31))).await;
    let swept_at = t0() + hours(60);
    let deleted = fx
        .store()
        .delete_expired_batch(
            &rule(None, all_except(&[]), swept_at - hours(24)),
            100,
            TranscriptFate::Delete,
            swept_at,
        )
        .await
        .expect("sweep");
    assert_eq!(deleted.rows, 1);
    let events = history(fx.store(), &key).await;
    assert_eq!(
        kinds(&events),
        [
            (HistoryKind::Stored, A),
            (HistoryKind::Forgotten, A),
            (HistoryKind::Stored, B),
            (HistoryKind::Expired, B),
            (HistoryKind::Stored, A),
            (HistoryKind::Swept, A),
        ]
    );
    assert_eq!(
        [events[1].at, events[3].at, events[5].at],
        [forgotten_at, expired_at, swept_at]
    );
    for removal in [&events[1], &events[3], &events[5]] {
        assert_eq!((&removal.report, &removal.binding), (&None, &Binding::default()));
    }
}

async fn reads_write_no_event(fx: &Fixture) {
    let key = coder("h-reads");
    send(fx.store(), &Report::success(&key, "", A).at(t0())).await;
    let before = history(fx.store(), &key).await;
    assert_eq!(before.len(), 1);
    // What a Get does before it decides (the row, the tombstone), and Inspect's reads.
    load(fx.store(), &key).await.expect("the row");
    fx.store().tombstone(&key).await.expect("tombstone");
    history(fx.store(), &key).await;
    let empty = coder("h-reads-never");
    assert_eq!(load(fx.store(), &empty).await, None);
    fx.store().tombstone(&empty).await.expect("tombstone");
    assert_eq!(history(fx.store(), &key).await, before);
    assert_eq!(history(fx.store(), &empty).await, []);
}

async fn a_replayed_report_writes_no_second_event(fx: &Fixture) {
    let key = coder("h-replay");
    let success = Report::success(&key, "", A).at(t0()).id("h-ok");
    let gone = Report::gone(&key, A).at(t0() + hours(1)).id("h-gone");
    for report in [&success, &success, &gone, &gone] {
        send(fx.store(), report).await;
    }
    // A replay later on, after other events, adds nothing either.
    send(fx.store(), &Report::transient_failure(&key, "").at(t0() + hours(2))).await;
    let replayed = send(fx.store(), &success).await;
    assert!(matches!(replayed, ReportReply::Replayed(_)), "{replayed:?}");
    assert_eq!(
        kinds(&history(fx.store(), &key).await),
        [
            (HistoryKind::Stored, A),
            (HistoryKind::Cleared, A),
            (HistoryKind::Reported, ""),
        ]
    );
}

async fn a_history_keeps_the_newest_events_up_to_the_policys_count(fx: &Fixture) {
    let key = coder("h-count");
    for i in 0..6 {
        let report = Report::success(&key, "", &format!("id-{i}")).at(t0() + hours(i));
        send(fx.store(), &keeping(report, 3)).await;
    }
    assert_eq!(
        kinds(&history(fx.store(), &key).await),
        [
            (HistoryKind::Stored, "id-3"),
            (HistoryKind::Stored, "id-4"),
            (HistoryKind::Stored, "id-5"),
        ]
    );
    // A removal knows no policy: it keeps the newest event's count.
    fx.store()
        .forget(&key, TranscriptFate::Delete, t0() + hours(7))
        .await
        .expect("forget");
    assert_eq!(
        kinds(&history(fx.store(), &key).await),
        [
            (HistoryKind::Stored, "id-4"),
            (HistoryKind::Stored, "id-5"),
            (HistoryKind::Forgotten, "id-5"),
        ]
    );
    // A larger count lets the history grow again; the default is 20.
    let other = coder("h-count-default");
    for i in 0..25 {
        send(fx.store(), &Report::transient_failure(&other, "").at(t0() + micros(i))).await;
    }
    let events = history(fx.store(), &other).await;
    assert_eq!(events.len(), 20);
    assert_eq!(events[0].at, t0() + micros(5));
}

async fn a_history_keeps_the_newest_events_up_to_16_kib(fx: &Fixture) {
    let key = coder("h-bytes");
    // Each event carries about 3 KiB of binding: 16 KiB holds five of them, not all eight.
    let long = |i: i64| Binding {
        cwd: format!("/{i}/{}", "d".repeat(1000)),
        config_dir: "c".repeat(1000),
        host: "h".repeat(1000),
        ..request_binding()
    };
    for i in 0..8 {
        let report = Report::transient_failure(&key, "").at(t0() + hours(i));
        send_from(fx.store(), &report, &long(i)).await;
    }
    let events = history(fx.store(), &key).await;
    let sizes: Vec<u32> = events.iter().map(HistoryEvent::bytes).collect();
    assert!(sizes.iter().sum::<u32>() <= MAX_HISTORY_BYTES, "{sizes:?}");
    let one = sizes[0];
    assert_eq!(events.len(), history_kept(vec![one; 8], 20));
    assert_eq!(events.len(), 5);
    assert_eq!(events.last().map(|e| e.at), Some(t0() + hours(7)));
    assert_eq!(events[0].binding, long(3));
}

async fn storing_a_new_id_keeps_the_history_and_sweeping_the_tombstone_deletes_it(fx: &Fixture) {
    let key = coder("h-tombstone");
    send(fx.store(), &Report::success(&key, "", A).at(t0())).await;
    send(fx.store(), &Report::gone(&key, A).at(t0() + hours(1))).await;
    send(fx.store(), &Report::success(&key, "", B).at(t0() + hours(2))).await;
    assert_eq!(fx.store().tombstone(&key).await.expect("tombstone"), None);
    assert_eq!(history(fx.store(), &key).await.len(), 3, "storing B kept A's events");
    fx.store()
        .forget(&key, TranscriptFate::Delete, t0() + hours(3))
        .await
        .expect("forget");
    // The tombstone still counts: the sweep before its cutoff keeps it and the history.
    let early = rule(None, all_except(&[]), t0() + hours(3));
    assert_eq!(
        fx.store()
            .delete_expired_tombstones_batch(&early, 100)
            .await
            .expect("sweep"),
        0
    );
    assert_eq!(history(fx.store(), &key).await.len(), 4);
    let late = rule(None, all_except(&[]), t0() + hours(4));
    assert_eq!(
        fx.store()
            .delete_expired_tombstones_batch(&late, 100)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(history(fx.store(), &key).await, []);
}

async fn events_of_a_key_with_neither_row_nor_tombstone_are_swept_past_the_cutoff(fx: &Fixture) {
    let never_stored = coder("h-orphan");
    send(fx.store(), &Report::transient_failure(&never_stored, "").at(t0())).await;
    send(
        fx.store(),
        &Report::transient_failure(&never_stored, "").at(t0() + hours(2)),
    )
    .await;
    // A key with a row keeps its events whatever their age.
    let alive = coder("h-alive");
    send(fx.store(), &Report::success(&alive, "", A).at(t0())).await;
    let other_agent = key("acme", "reviewer", "h-orphan-reviewer");
    send(fx.store(), &Report::transient_failure(&other_agent, "").at(t0())).await;
    let cutoff = rule(None, all_except(&["reviewer"]), t0() + hours(1));
    fx.store()
        .delete_expired_tombstones_batch(&cutoff, 100)
        .await
        .expect("sweep");
    let left = history(fx.store(), &never_stored).await;
    assert_eq!(left.iter().map(|e| e.at).collect::<Vec<_>>(), [t0() + hours(2)]);
    assert_eq!(history(fx.store(), &alive).await.len(), 1);
    assert_eq!(history(fx.store(), &other_agent).await.len(), 1, "another agent's rule");
    let reviewer = rule(None, only("reviewer"), t0() + hours(1));
    fx.store()
        .delete_expired_tombstones_batch(&reviewer, 100)
        .await
        .expect("sweep");
    assert_eq!(history(fx.store(), &other_agent).await, []);
}

async fn many_reports_at_once_each_write_one_event_and_each_key_is_trimmed(fx: &Fixture) {
    const KEYS: usize = 24;
    const ON_ONE_KEY: usize = 24;
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("h-pile-{k}"))).collect();
    let busy = coder("h-pile-busy");
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
    // Every other key's report has a report id, and each is sent twice: a replay adds nothing.
    let mut successes: Vec<Report> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let r = Report::success(k, "", A).at(at);
        successes.push(if i % 2 == 0 { r.id(format!("h-ok-{i}")) } else { r });
        if i % 2 == 0 {
            successes.push(Report::success(k, "", A).at(at).id(format!("h-ok-{i}")));
        }
    }
    // And many reports on one key, kept to 4 events.
    for i in 0..ON_ONE_KEY {
        successes.push(keeping(Report::success(&busy, "", &format!("busy-{i}")).at(at), 4));
    }
    for reply in send_all(successes).join_all().await {
        assert!(!matches!(reply, ReportReply::ReportIdReused), "{reply:?}");
    }
    let gone: Vec<Report> = keys.iter().map(|k| Report::gone(k, A).at(at + hours(1))).collect();
    send_all(gone).join_all().await;
    for key in &keys {
        assert_eq!(
            kinds(&history(fx.store(), key).await),
            [(HistoryKind::Stored, A), (HistoryKind::Cleared, A)],
            "{key}"
        );
    }
    let events = history(fx.store(), &busy).await;
    assert_eq!(events.len(), 4, "{:?}", kinds(&events));
    // The newest event is the id the key holds now.
    let held = load(fx.store(), &busy).await.expect("the row").session_id;
    assert_eq!(events.last().map(|e| e.session_id.clone()), Some(held));
}
