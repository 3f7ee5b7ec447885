//! Expiry: `delete_if_unchanged` (Get's expiry deletes only the row as it read it), expiry rules
//! by agent and namespace, batches, counts, sweeps by each agent's TTL, and the retention of report
//! ids.

use sessionkeeper::domain::{Policy, SessionKey};
use sessionkeeper::store::ReportReply;
use sessionkeeper::sweeper::{self, SweepScope};

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        delete_if_unchanged_deletes_the_row_as_it_was_read,
        delete_if_unchanged_keeps_a_row_whose_session_id_changed,
        delete_if_unchanged_keeps_a_success_stored_after_the_read,
        delete_if_unchanged_of_a_missing_row_deletes_nothing,
        an_agent_rule_deletes_only_that_agents_expired_rows,
        an_all_except_rule_spares_the_listed_agents,
        a_namespace_filter_limits_deletes_and_counts_to_that_namespace,
        a_row_last_used_exactly_at_the_cutoff_is_not_expired,
        a_batch_deletes_at_most_its_limit,
        counting_expired_rows_deletes_nothing,
        a_sweep_deletes_each_agents_rows_by_its_own_ttl_and_a_dry_run_deletes_nothing,
        a_scoped_sweep_touches_only_its_namespace_and_agent,
        a_sweep_forgets_report_ids_past_their_retention,
        deleting_reports_before_an_instant_frees_only_older_report_ids,
    ],
}

// ---------------------------------------------------------------------------------------------
// delete_if_unchanged: Get's expiry deletes only the row as it read it
// ---------------------------------------------------------------------------------------------

async fn delete_if_unchanged_deletes_the_row_as_it_was_read(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0() - hours(25) + micros(17))).await;
    let read = load(store, &key).await.expect("the row");
    assert!(
        (store
            .delete_if_unchanged(&key, &read, sessionkeeper::domain::TranscriptFate::Delete, t0())
            .await
            .expect("delete")
            .rows
            > 0)
    );
    assert_eq!(load(store, &key).await, None);
}

async fn delete_if_unchanged_keeps_a_row_whose_session_id_changed(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    let read = load(store, &key).await.expect("the row");
    // Same instant, another id: only the id tells them apart.
    put(fx, &key, &row(B, t0())).await;
    assert!(
        store
            .delete_if_unchanged(&key, &read, sessionkeeper::domain::TranscriptFate::Delete, t0())
            .await
            .expect("delete")
            .rows
            == 0
    );
    assert_eq!(load(store, &key).await, Some(row(B, t0())));
}

async fn delete_if_unchanged_keeps_a_success_stored_after_the_read(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0() - hours(25))).await;
    let read = load(store, &key).await.expect("the row");
    // A run resumed A and completed: the same id is stored again, with a new last use.
    let reply = Report::success(&key, A, A).at(t0()).send(store).await;
    assert_eq!(reply, ReportReply::Applied(stored(A)));
    assert!(
        store
            .delete_if_unchanged(&key, &read, sessionkeeper::domain::TranscriptFate::Delete, t0())
            .await
            .expect("delete")
            .rows
            == 0
    );
    assert_eq!(load(store, &key).await, Some(stored_by_report(A, t0())));

    // One microsecond is a change too.
    let later = row(A, t0() + micros(1));
    put(fx, &key, &later).await;
    assert!(
        store
            .delete_if_unchanged(&key, &row(A, t0()), sessionkeeper::domain::TranscriptFate::Delete, t0())
            .await
            .expect("delete")
            .rows
            == 0
    );
    assert_eq!(load(store, &key).await, Some(later));
}

async fn delete_if_unchanged_of_a_missing_row_deletes_nothing(fx: &Fixture) {
    let store = fx.store();
    let neighbour = coder("c2");
    put(fx, &neighbour, &row(A, t0())).await;
    assert!(
        !store
            .delete_if_unchanged(
                &coder("c1"),
                &row(A, t0()),
                sessionkeeper::domain::TranscriptFate::Delete,
                t0()
            )
            .await
            .expect("delete")
            .rows
            > 0
    );
    assert_eq!(load(store, &neighbour).await, Some(row(A, t0())));
}

// ---------------------------------------------------------------------------------------------
// Expiry: rules, batches and sweeps
// ---------------------------------------------------------------------------------------------

async fn an_agent_rule_deletes_only_that_agents_expired_rows(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(2);
    let old_reviewer = seed(fx, "acme", "reviewer", "old", 3, cutoff - hours(1)).await;
    let live_reviewer = seed(fx, "acme", "reviewer", "live", 2, cutoff + hours(1)).await;
    let old_coder = seed(fx, "acme", "coder", "old", 4, cutoff - hours(1)).await;
    let reviewers = rule(None, only("reviewer"), cutoff);
    assert_eq!(delete_batch(store, &reviewers, 100).await, 3);
    assert_eq!(surviving(store, &old_reviewer).await, 0);
    assert_eq!(surviving(store, &live_reviewer).await, 2);
    assert_eq!(surviving(store, &old_coder).await, 4);
    assert_eq!(delete_batch(store, &reviewers, 100).await, 0);
}

async fn an_all_except_rule_spares_the_listed_agents(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24);
    let old_reviewer = seed(fx, "acme", "reviewer", "old", 3, cutoff - hours(1)).await;
    let old_coder = seed(fx, "acme", "coder", "old", 4, cutoff - hours(1)).await;
    let old_tester = seed(fx, "acme", "tester", "old", 2, cutoff - hours(1)).await;
    let live_coder = seed(fx, "acme", "coder", "live", 1, cutoff + hours(1)).await;
    let others = rule(None, all_except(&["reviewer", "auditor"]), cutoff);
    assert_eq!(count_expired(store, &others).await, 6);
    assert_eq!(delete_batch(store, &others, 100).await, 6);
    assert_eq!(surviving(store, &old_coder).await, 0);
    assert_eq!(surviving(store, &old_tester).await, 0);
    assert_eq!(surviving(store, &old_reviewer).await, 3);
    assert_eq!(surviving(store, &live_coder).await, 1);
    // An empty exception list covers every agent.
    let everyone = rule(None, all_except(&[]), cutoff);
    assert_eq!(count_expired(store, &everyone).await, 3);
    assert_eq!(delete_batch(store, &everyone, 100).await, 3);
    assert_eq!(surviving(store, &old_reviewer).await, 0);
    assert_eq!(surviving(store, &live_coder).await, 1);
}

async fn a_namespace_filter_limits_deletes_and_counts_to_that_namespace(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24);
    let acme = seed(fx, "acme", "coder", "old", 3, cutoff - hours(1)).await;
    let other = seed(fx, "other", "coder", "old", 2, cutoff - hours(1)).await;
    for agents in [only("coder"), all_except(&[])] {
        assert_eq!(
            count_expired(store, &rule(Some("acme"), agents.clone(), cutoff)).await,
            3
        );
        assert_eq!(
            count_expired(store, &rule(Some("other"), agents.clone(), cutoff)).await,
            2
        );
        assert_eq!(
            count_expired(store, &rule(Some("nobody"), agents.clone(), cutoff)).await,
            0
        );
        assert_eq!(count_expired(store, &rule(None, agents, cutoff)).await, 5);
    }
    assert_eq!(
        delete_batch(store, &rule(Some("acme"), only("coder"), cutoff), 100).await,
        3
    );
    assert_eq!(surviving(store, &acme).await, 0);
    assert_eq!(surviving(store, &other).await, 2);
    assert_eq!(
        delete_batch(store, &rule(Some("acme"), all_except(&[]), cutoff), 100).await,
        0
    );
    assert_eq!(surviving(store, &other).await, 2);
    assert_eq!(delete_batch(store, &rule(None, all_except(&[]), cutoff), 100).await, 2);
    assert_eq!(surviving(store, &other).await, 0);
}

async fn a_row_last_used_exactly_at_the_cutoff_is_not_expired(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24) + micros(250);
    let before = coder("one-microsecond-before");
    let at = coder("exactly-at");
    let after = coder("one-microsecond-after");
    put(fx, &before, &row(A, cutoff - micros(1))).await;
    put(fx, &at, &row(A, cutoff)).await;
    put(fx, &after, &row(A, cutoff + micros(1))).await;
    for agents in [only("coder"), all_except(&[])] {
        assert_eq!(count_expired(store, &rule(None, agents, cutoff)).await, 1);
    }
    assert_eq!(delete_batch(store, &rule(None, only("coder"), cutoff), 100).await, 1);
    assert_eq!(load(store, &before).await, None);
    assert_eq!(load(store, &at).await, Some(row(A, cutoff)));
    assert_eq!(load(store, &after).await, Some(row(A, cutoff + micros(1))));
    assert_eq!(delete_batch(store, &rule(None, all_except(&[]), cutoff), 100).await, 0);
}

async fn a_batch_deletes_at_most_its_limit(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24);
    let live = seed(fx, "acme", "coder", "live", 3, cutoff + hours(1)).await;
    for (label, agents) in [("only", only("coder")), ("all-except", all_except(&[]))] {
        let expired = seed(fx, "acme", "coder", label, 25, cutoff - hours(1)).await;
        let expiry = rule(None, agents, cutoff);
        let mut batches = Vec::new();
        for _ in 0..4 {
            batches.push(delete_batch(store, &expiry, 10).await);
        }
        assert_eq!(batches, [10, 10, 5, 0], "{label}");
        assert_eq!(surviving(store, &expired).await, 0, "{label}");
        assert_eq!(surviving(store, &live).await, 3, "{label}");
    }
}

async fn counting_expired_rows_deletes_nothing(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24);
    let expired = seed(fx, "acme", "coder", "old", 7, cutoff - hours(1)).await;
    let live = seed(fx, "acme", "coder", "live", 3, cutoff + hours(1)).await;
    for _ in 0..2 {
        assert_eq!(count_expired(store, &rule(None, only("coder"), cutoff)).await, 7);
        assert_eq!(
            count_expired(store, &rule(Some("acme"), all_except(&[]), cutoff)).await,
            7
        );
        assert_eq!(
            count_expired(store, &rule(None, all_except(&["coder"]), cutoff)).await,
            0
        );
    }
    assert_eq!(surviving(store, &expired).await, 7);
    assert_eq!(surviving(store, &live).await, 3);
}

async fn a_sweep_deletes_each_agents_rows_by_its_own_ttl_and_a_dry_run_deletes_nothing(fx: &Fixture) {
    let store = fx.store();
    let policy = policy_with_short_lived_reviewer();
    let now = t0();
    let old_reviewer = seed(fx, "acme", "reviewer", "3h", 4, now - hours(3)).await;
    let live_reviewer = seed(fx, "acme", "reviewer", "1h", 2, now - hours(1)).await;
    let old_coder = seed(fx, "acme", "coder", "25h", 5, now - hours(25)).await;
    // Three hours is expired for the reviewer but not for the coder (default 24 h).
    let live_coder = seed(fx, "acme", "coder", "3h", 3, now - hours(3)).await;
    let old_tester = seed(fx, "other", "tester", "25h", 2, now - hours(25)).await;
    let everything = SweepScope::default();

    assert_eq!(sweep(store, &policy, now, &everything, true).await, 11);
    for (keys, count) in [
        (&old_reviewer, 4),
        (&live_reviewer, 2),
        (&old_coder, 5),
        (&live_coder, 3),
        (&old_tester, 2),
    ] {
        assert_eq!(surviving(store, keys).await, count, "a dry run deletes nothing");
    }

    assert_eq!(sweep(store, &policy, now, &everything, false).await, 11);
    for (keys, count) in [
        (&old_reviewer, 0),
        (&live_reviewer, 2),
        (&old_coder, 0),
        (&live_coder, 3),
        (&old_tester, 0),
    ] {
        assert_eq!(surviving(store, keys).await, count, "{:?}", keys[0]);
    }
    assert_eq!(sweep(store, &policy, now, &everything, false).await, 0);
    assert_eq!(sweep(store, &policy, now, &everything, true).await, 0);
}

async fn a_scoped_sweep_touches_only_its_namespace_and_agent(fx: &Fixture) {
    let store = fx.store();
    let policy = policy_with_short_lived_reviewer();
    let now = t0();
    let acme_reviewer = seed(fx, "acme", "reviewer", "old", 2, now - hours(3)).await;
    let other_reviewer = seed(fx, "other", "reviewer", "old", 3, now - hours(3)).await;
    let acme_coder = seed(fx, "acme", "coder", "old", 4, now - hours(25)).await;
    let scope = SweepScope {
        namespace: Some("acme".into()),
        agent: Some("reviewer".into()),
    };
    assert_eq!(sweep(store, &policy, now, &scope, true).await, 2);
    assert_eq!(sweep(store, &policy, now, &scope, false).await, 2);
    assert_eq!(surviving(store, &acme_reviewer).await, 0);
    assert_eq!(surviving(store, &other_reviewer).await, 3);
    assert_eq!(surviving(store, &acme_coder).await, 4);
    let acme = SweepScope {
        namespace: Some("acme".into()),
        agent: None,
    };
    assert_eq!(sweep(store, &policy, now, &acme, false).await, 4);
    assert_eq!(surviving(store, &other_reviewer).await, 3);
}

async fn a_sweep_forgets_report_ids_past_their_retention(fx: &Fixture) {
    let store = fx.store();
    let (old_key, recent_key) = (coder("old"), coder("recent"));
    let old_at = t0() - sweeper::REPORT_RETENTION - micros(1);
    // A day old: the report id must still be remembered (at least 24 h, SPEC §4), and its row is
    // exactly at the default TTL's cutoff, so it is not expired either.
    let recent_at = t0() - hours(24);
    let old = Report::success(&old_key, "", A).id("r-old").at(old_at);
    let recent = Report::success(&recent_key, "", B).id("r-recent").at(recent_at);
    assert_eq!(old.send(store).await, ReportReply::Applied(stored(A)));
    assert_eq!(recent.send(store).await, ReportReply::Applied(stored(B)));

    // A dry run forgets nothing.
    sweep(store, &Policy::default(), t0(), &SweepScope::default(), true).await;
    assert_eq!(old.send(store).await, ReportReply::Replayed(stored(A)));

    // The old report's row has expired too (24 h): the sweep deletes it.
    assert_eq!(
        sweep(store, &Policy::default(), t0(), &SweepScope::default(), false).await,
        1
    );
    assert_eq!(load(store, &old_key).await, None);
    let reused = Report::success(&old_key, "", "new-id").id("r-old").send(store).await;
    assert_eq!(reused, ReportReply::Applied(stored("new-id")));
    assert_eq!(load(store, &old_key).await, Some(stored_by_report("new-id", t0())));
    let again = Report::success(&recent_key, B, "new-id")
        .id("r-recent")
        .send(store)
        .await;
    assert_eq!(again, ReportReply::Replayed(stored(B)));
    assert_eq!(load(store, &recent_key).await, Some(stored_by_report(B, recent_at)));
}

async fn deleting_reports_before_an_instant_frees_only_older_report_ids(fx: &Fixture) {
    let store = fx.store();
    let before = t0() - hours(1);
    // Created 3 h and 2 h ago, exactly at the instant, and after it.
    let created = [before - hours(2), before - hours(1), before, t0()];
    let keys: Vec<SessionKey> = (0..created.len()).map(|i| coder(&format!("c{i}"))).collect();
    for (i, (key, at)) in keys.iter().zip(created).enumerate() {
        let reply = Report::success(key, "", &format!("first-{i}"))
            .id(format!("r-{i}"))
            .at(at)
            .send(store)
            .await;
        assert_eq!(reply, ReportReply::Applied(stored(&format!("first-{i}"))));
    }
    assert_eq!(store.delete_reports_before(before, 1).await.expect("delete reports"), 1);
    assert_eq!(
        store.delete_reports_before(before, 100).await.expect("delete reports"),
        1
    );
    assert_eq!(
        store.delete_reports_before(before, 100).await.expect("delete reports"),
        0
    );
    for (i, key) in keys.iter().enumerate() {
        let reply = Report::success(key, "", &format!("second-{i}"))
            .id(format!("r-{i}"))
            .send(store)
            .await;
        if i < 2 {
            assert_eq!(
                reply,
                ReportReply::Applied(stored(&format!("second-{i}"))),
                "r-{i} is usable again"
            );
            assert_eq!(load(store, key).await.expect("row").session_id, format!("second-{i}"));
        } else {
            assert_eq!(
                reply,
                ReportReply::Replayed(stored(&format!("first-{i}"))),
                "r-{i} is kept"
            );
            assert_eq!(load(store, key).await.expect("row").session_id, format!("first-{i}"));
        }
    }
}
