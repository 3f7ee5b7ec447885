//! One lifecycle for transcripts and session rows (issue 18 point 3, design §6.3): when a row's id
//! goes away (a report clears it, Forget, expired on read, the sweep), every transcript of that id
//! in the namespace (each project key and subpath) goes in the same transaction, unless another
//! row of the namespace still holds the id; with a grace period they are marked and the sweep
//! deletes them later, and storing the id again voids the mark. Transcripts no row holds are swept
//! once default_ttl has passed since their last append; append records are pruned after the report
//! retention. A failure in the middle of the transaction leaves the row and the transcripts.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sessionkeeper::domain::{Entry, Policy, SummaryDialect, SummaryWrite, TranscriptFate, TranscriptKey};
use sessionkeeper::store::{AppendReply, ReportReply, SessionStore, StoreError};
use sessionkeeper::sweeper::{self, REPORT_RETENTION, SweepCounts, SweepScope};

use crate::builders::*;
use crate::fixture::{Fixture, Storage};
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        a_gone_report_deletes_every_transcript_of_the_cleared_id_and_counts_them,
        reaching_the_unknown_failure_limit_deletes_the_transcripts,
        a_superseded_gone_report_deletes_no_transcript,
        forget_deletes_the_ids_transcripts_and_counts_them,
        an_expired_row_deleted_on_read_takes_its_transcripts,
        a_sweep_deletes_the_expired_rows_transcripts_and_a_dry_run_counts_them,
        another_row_of_the_namespace_holding_the_id_keeps_its_transcripts,
        with_a_grace_period_the_transcripts_are_marked_then_swept_after_it,
        storing_the_id_again_voids_the_mark,
        a_transcript_no_row_holds_is_swept_after_default_ttl_from_its_last_append_not_before,
        a_held_transcript_is_not_swept_however_old_its_last_append,
        append_records_are_pruned_after_the_report_retention,
        a_failure_in_the_middle_of_a_forget_leaves_the_row_and_the_transcripts,
        a_failure_in_the_middle_of_a_clearing_report_leaves_the_row_and_the_transcripts,
        concurrent_clearing_reports_each_delete_their_own_ids_transcripts,
        the_main_transcript_is_the_held_one_under_the_asked_project_key,
        the_cascade_and_the_sweep_delete_the_summaries_too,
    ],
}

const LIMIT: u64 = 64 * 1024 * 1024;
const GRACE: Duration = Duration::from_secs(3600);

fn tkey(namespace: &str, project_key: &str, session_id: &str, subpath: &str) -> TranscriptKey {
    TranscriptKey::new(namespace, project_key, session_id, subpath).expect("a valid transcript key")
}

/// The three transcripts of `session_id` in `acme`: the main one, a subagent's, and the main one
/// under a second project key.
fn transcripts_of(session_id: &str) -> [TranscriptKey; 3] {
    [
        tkey("acme", "-work-repo", session_id, ""),
        tkey("acme", "-work-repo", session_id, "subagents/agent-1"),
        tkey("acme", "-work-other", session_id, ""),
    ]
}

/// Transcripts that must survive whatever happens to `session_id` in `acme`: another id, and the
/// same id in another namespace.
fn bystanders_of(session_id: &str) -> [TranscriptKey; 2] {
    [
        tkey("acme", "-work-repo", "another-session", ""),
        tkey("other", "-work-repo", session_id, ""),
    ]
}

fn entry(uuid: String) -> Entry {
    let json = serde_json::json!({"type": "user", "uuid": uuid, "text": "hello"}).to_string();
    Entry::parse(json, 1024 * 1024).expect("a valid entry")
}

async fn append_at(fx: &Fixture, key: &TranscriptKey, append_id: &str, now: DateTime<Utc>) -> AppendReply {
    fx.transcripts()
        .append(
            key,
            append_id,
            &[entry(format!("{append_id}.1")), entry(format!("{append_id}.2"))],
            now,
            LIMIT,
        )
        .await
        .unwrap_or_else(|e| panic!("append to {key:?}: {e}"))
}

/// Appends two entries to each key at `now`.
async fn write_all(fx: &Fixture, keys: &[TranscriptKey], now: DateTime<Utc>) {
    for (n, key) in keys.iter().enumerate() {
        let id = format!(
            "{}/{}/{}/{}@{}#{n}",
            key.namespace(),
            key.project_key(),
            key.session_id(),
            key.subpath(),
            now.timestamp_millis()
        );
        assert!(matches!(append_at(fx, key, &id, now).await, AppendReply::Appended(_)));
    }
}

async fn exists(fx: &Fixture, key: &TranscriptKey) -> bool {
    fx.transcripts()
        .load_page(key, 0, 10, 1 << 20, None)
        .await
        .unwrap_or_else(|e| panic!("load {key:?}: {e}"))
        .is_some()
}

async fn assert_all(fx: &Fixture, keys: &[TranscriptKey], present: bool, why: &str) {
    for key in keys {
        assert_eq!(exists(fx, key).await, present, "{why}: {key:?}");
    }
}

fn applied(reply: ReportReply) -> sessionkeeper::domain::ReportOutcome {
    match reply {
        ReportReply::Applied(outcome) => outcome,
        other => panic!("expected an applied report, got {other:?}"),
    }
}

fn policy_with_grace() -> Policy {
    Policy {
        transcript_grace: GRACE,
        ..Policy::default()
    }
}

async fn sweep_at(fx: &Fixture, policy: &Policy, now: DateTime<Utc>, dry: bool) -> SweepCounts {
    sweeper::sweep_once(fx.store(), policy, now, &SweepScope::default(), dry)
        .await
        .unwrap_or_else(|e| panic!("sweep: {e}"))
}

async fn delete_pending(fx: &Fixture, session_id: &str) -> bool {
    fx.store()
        .main_transcript("acme", session_id, None)
        .await
        .expect("main transcript")
        .expect("the main transcript exists")
        .delete_pending
}

// ---------------------------------------------------------------------------------------------
// Each path that removes a row's id deletes its transcripts
// ---------------------------------------------------------------------------------------------

async fn a_gone_report_deletes_every_transcript_of_the_cleared_id_and_counts_them(fx: &Fixture) {
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    write_all(fx, &transcripts_of(A), t0()).await;
    write_all(fx, &bystanders_of(A), t0()).await;

    let outcome = applied(Report::gone(&key, A).id("r1").send(fx.store()).await);
    assert_eq!(outcome.transcripts_deleted, 3, "{outcome:?}");
    assert!(load(fx.store(), &key).await.is_none());
    assert_all(fx, &transcripts_of(A), false, "cleared with the row").await;
    assert_all(fx, &bystanders_of(A), true, "another id or namespace").await;

    let replay = Report::gone(&key, A).id("r1").send(fx.store()).await;
    assert!(matches!(replay, ReportReply::Replayed(_)), "{replay:?}");
}

async fn reaching_the_unknown_failure_limit_deletes_the_transcripts(fx: &Fixture) {
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    write_all(fx, &transcripts_of(A), t0()).await;
    let first = applied(Report::unknown_zero_turn_failure(&key, A).send(fx.store()).await);
    assert_eq!(first.transcripts_deleted, 0, "the first failure only counts");
    assert_all(fx, &transcripts_of(A), true, "below the limit").await;
    let second = applied(Report::unknown_zero_turn_failure(&key, A).send(fx.store()).await);
    assert_eq!(second.action, sessionkeeper::domain::Action::Cleared);
    assert_eq!(second.transcripts_deleted, 3);
    assert_all(fx, &transcripts_of(A), false, "cleared at the limit").await;
}

async fn a_superseded_gone_report_deletes_no_transcript(fx: &Fixture) {
    let key = coder("c1");
    put(fx, &key, &row(B, t0())).await;
    write_all(fx, &transcripts_of(A), t0()).await;
    write_all(fx, &transcripts_of(B), t0()).await;
    let outcome = applied(Report::gone(&key, A).send(fx.store()).await);
    assert_eq!(outcome.action, sessionkeeper::domain::Action::Superseded);
    assert_eq!(outcome.transcripts_deleted, 0);
    assert_all(fx, &transcripts_of(A), true, "no row went away").await;
    assert_all(fx, &transcripts_of(B), true, "the stored id's").await;
}

async fn forget_deletes_the_ids_transcripts_and_counts_them(fx: &Fixture) {
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    write_all(fx, &transcripts_of(A), t0()).await;
    write_all(fx, &bystanders_of(A), t0()).await;
    let removed = fx
        .store()
        .forget(&key, TranscriptFate::Delete, t0())
        .await
        .expect("forget");
    assert_eq!((removed.rows, removed.transcripts), (1, 3));
    assert_all(fx, &transcripts_of(A), false, "forgotten with the row").await;
    assert_all(fx, &bystanders_of(A), true, "another id or namespace").await;
    let again = fx
        .store()
        .forget(&key, TranscriptFate::Delete, t0())
        .await
        .expect("forget");
    assert_eq!((again.rows, again.transcripts), (0, 0));
}

async fn an_expired_row_deleted_on_read_takes_its_transcripts(fx: &Fixture) {
    let key = coder("c1");
    let read = row(A, t0());
    put(fx, &key, &read).await;
    write_all(fx, &transcripts_of(A), t0()).await;
    write_all(fx, &bystanders_of(A), t0()).await;
    // A SUCCESS stored after the read: the delete deletes nothing, and no transcript.
    let newer = row(A, t0() + hours(1));
    put(fx, &key, &newer).await;
    let kept = fx
        .store()
        .delete_if_unchanged(&key, &read, TranscriptFate::Delete, t0())
        .await
        .expect("delete");
    assert_eq!((kept.rows, kept.transcripts), (0, 0));
    assert_all(fx, &transcripts_of(A), true, "the row changed after the read").await;

    let removed = fx
        .store()
        .delete_if_unchanged(&key, &newer, TranscriptFate::Delete, t0())
        .await
        .expect("delete");
    assert_eq!((removed.rows, removed.transcripts), (1, 3));
    assert_all(fx, &transcripts_of(A), false, "expired with the row").await;
    assert_all(fx, &bystanders_of(A), true, "another id or namespace").await;
}

async fn a_sweep_deletes_the_expired_rows_transcripts_and_a_dry_run_counts_them(fx: &Fixture) {
    let policy = Policy::default();
    let now = t0() + hours(25);
    // Expired: c1 (holds A). Live: c2 (holds B), appended to at `now` so no orphan rule applies.
    put(fx, &coder("c1"), &row(A, t0())).await;
    put(fx, &coder("c2"), &row(B, now)).await;
    write_all(fx, &transcripts_of(A), now).await;
    write_all(fx, &transcripts_of(B), now).await;

    let dry = sweep_at(fx, &policy, now, true).await;
    assert_eq!((dry.rows, dry.transcripts()), (1, 3), "{dry:?}");
    assert_all(fx, &transcripts_of(A), true, "a dry run deletes nothing").await;

    let swept = sweep_at(fx, &policy, now, false).await;
    assert_eq!(
        (swept.rows, swept.transcripts_of_rows, swept.transcripts()),
        (1, 3, 3),
        "{swept:?}"
    );
    assert_all(fx, &transcripts_of(A), false, "swept with the row").await;
    assert_all(fx, &transcripts_of(B), true, "a live row's").await;
    assert_eq!(sweep_at(fx, &policy, now, true).await, SweepCounts::default());
}

async fn another_row_of_the_namespace_holding_the_id_keeps_its_transcripts(fx: &Fixture) {
    // Two conversations (one of another agent) resumed the same id.
    let (first, second) = (coder("c1"), key("acme", "reviewer", "c9"));
    put(fx, &first, &row(A, t0())).await;
    put(fx, &second, &row(A, t0())).await;
    write_all(fx, &transcripts_of(A), t0()).await;

    let outcome = applied(Report::gone(&first, A).send(fx.store()).await);
    assert_eq!(outcome.transcripts_deleted, 0, "the second row still holds A");
    assert_all(fx, &transcripts_of(A), true, "held by another row").await;

    let removed = fx
        .store()
        .forget(&second, TranscriptFate::Delete, t0())
        .await
        .expect("forget");
    assert_eq!((removed.rows, removed.transcripts), (1, 3), "the last holder went");
    assert_all(fx, &transcripts_of(A), false, "no row holds A any more").await;
}

// ---------------------------------------------------------------------------------------------
// Grace period
// ---------------------------------------------------------------------------------------------

async fn with_a_grace_period_the_transcripts_are_marked_then_swept_after_it(fx: &Fixture) {
    let policy = policy_with_grace();
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    write_all(fx, &transcripts_of(A), t0()).await;

    let mut gone = Report::gone(&key, A);
    gone.policy = policy.clone();
    let outcome = applied(gone.send(fx.store()).await);
    assert_eq!(outcome.transcripts_deleted, 0, "marked, not deleted");
    assert_all(fx, &transcripts_of(A), true, "within the grace period").await;
    assert!(delete_pending(fx, A).await, "no longer held at once");

    let early = sweep_at(fx, &policy, t0() + TimeDelta::minutes(59), false).await;
    assert_eq!(early.transcripts(), 0, "{early:?}");
    assert_all(fx, &transcripts_of(A), true, "before delete_after").await;

    let dry = sweep_at(fx, &policy, t0() + TimeDelta::minutes(60), true).await;
    assert_eq!(dry.transcripts_unheld.graced, 3, "{dry:?}");
    let late = sweep_at(fx, &policy, t0() + TimeDelta::minutes(60), false).await;
    assert_eq!((late.transcripts_unheld.graced, late.transcripts()), (3, 3), "{late:?}");
    assert_all(fx, &transcripts_of(A), false, "at delete_after").await;
}

async fn storing_the_id_again_voids_the_mark(fx: &Fixture) {
    let policy = policy_with_grace();
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    write_all(fx, &transcripts_of(A), t0()).await;
    let removed = fx
        .store()
        .forget(&key, TranscriptFate::at(t0(), GRACE), t0())
        .await
        .expect("forget");
    assert_eq!((removed.rows, removed.transcripts), (1, 0));
    assert!(delete_pending(fx, A).await);

    // The next run resumed A from the store and completed: A is stored again.
    let stored = Report::success(&key, A, A).at(t0() + TimeDelta::minutes(10));
    assert!(matches!(stored.send(fx.store()).await, ReportReply::Applied(_)));
    assert!(!delete_pending(fx, A).await, "held again");
    let swept = sweep_at(fx, &policy, t0() + hours(2), false).await;
    assert_eq!(swept.transcripts(), 0, "{swept:?}");
    assert_all(fx, &transcripts_of(A), true, "the mark is void").await;

    // Cleared again later: a fresh mark, counted from then.
    let cleared_at = t0() + hours(3);
    let mut gone = Report::gone(&key, A).at(cleared_at);
    gone.policy = policy.clone();
    assert_eq!(applied(gone.send(fx.store()).await).transcripts_deleted, 0);
    assert_eq!(
        sweep_at(fx, &policy, cleared_at + TimeDelta::minutes(30), false)
            .await
            .transcripts(),
        0
    );
    assert_all(fx, &transcripts_of(A), true, "the fresh mark is not due").await;
    assert_eq!(
        sweep_at(fx, &policy, cleared_at + hours(1), false).await.transcripts(),
        3
    );
    assert_all(fx, &transcripts_of(A), false, "the fresh mark is due").await;
}

// ---------------------------------------------------------------------------------------------
// Orphans and append records
// ---------------------------------------------------------------------------------------------

async fn a_transcript_no_row_holds_is_swept_after_default_ttl_from_its_last_append_not_before(fx: &Fixture) {
    let policy = Policy::default();
    // A fresh run's transcript, never reported; its main one appended to again an hour later.
    write_all(fx, &transcripts_of(A), t0()).await;
    write_all(fx, &transcripts_of(A)[..1], t0() + hours(1)).await;
    let ms = TimeDelta::milliseconds;

    let not_yet = sweep_at(fx, &policy, t0() + hours(24), true).await;
    assert_eq!(not_yet.transcripts(), 0, "not before default_ttl: {not_yet:?}");
    let first = sweep_at(fx, &policy, t0() + hours(24) + ms(1), false).await;
    assert_eq!(
        first.transcripts_unheld.orphan, 2,
        "the two not appended to since: {first:?}"
    );
    assert!(
        exists(fx, &transcripts_of(A)[0]).await,
        "its last append is an hour later"
    );
    assert_eq!(
        sweep_at(fx, &policy, t0() + hours(25), false).await.transcripts(),
        0,
        "not before default_ttl since its last append"
    );
    let second = sweep_at(fx, &policy, t0() + hours(25) + ms(1), false).await;
    assert_eq!(second.transcripts_unheld.orphan, 1, "{second:?}");
    assert_all(fx, &transcripts_of(A), false, "orphans past default_ttl").await;
}

async fn a_held_transcript_is_not_swept_however_old_its_last_append(fx: &Fixture) {
    let policy = Policy::default();
    let now = t0() + hours(100);
    write_all(fx, &transcripts_of(A), t0()).await;
    put(fx, &coder("c1"), &row(A, now)).await;
    let swept = sweep_at(fx, &policy, now, false).await;
    assert_eq!(swept, SweepCounts::default());
    assert_all(fx, &transcripts_of(A), true, "a live row holds A").await;
}

async fn append_records_are_pruned_after_the_report_retention(fx: &Fixture) {
    let policy = Policy::default();
    let transcript = tkey("acme", "-work-repo", A, "");
    put(fx, &coder("c1"), &row(A, t0() + hours(30))).await;
    assert!(matches!(
        append_at(fx, &transcript, "x", t0()).await,
        AppendReply::Appended(_)
    ));

    sweep_at(fx, &policy, t0() + REPORT_RETENTION - TimeDelta::seconds(1), false).await;
    assert!(
        matches!(append_at(fx, &transcript, "x", t0()).await, AppendReply::Replayed(_)),
        "kept within the retention"
    );
    sweep_at(fx, &policy, t0() + REPORT_RETENTION + TimeDelta::seconds(1), false).await;
    assert!(
        matches!(append_at(fx, &transcript, "x", t0()).await, AppendReply::Appended(_)),
        "pruned after the retention: the id is new again"
    );
}

// ---------------------------------------------------------------------------------------------
// Atomicity and concurrency
// ---------------------------------------------------------------------------------------------

/// Makes every delete of a transcript entry fail, so the cascade fails after the row's delete.
async fn refuse_entry_deletes(fx: &Fixture, refuse: bool) {
    match &fx.storage {
        Storage::Postgres { store, .. } => {
            let sql = if refuse {
                "CREATE FUNCTION refuse_entry_delete() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'entry deletes refused by the test'; END $$; \
                 CREATE TRIGGER refuse_entry_delete BEFORE DELETE ON transcript_entry \
                 FOR EACH ROW EXECUTE FUNCTION refuse_entry_delete()"
            } else {
                "DROP TRIGGER refuse_entry_delete ON transcript_entry; DROP FUNCTION refuse_entry_delete()"
            };
            sqlx::raw_sql(sql)
                .execute(store.pool())
                .await
                .expect("postgres trigger");
        }
        Storage::Sqlite { store, .. } => {
            use sqlx::Connection;
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(store.path());
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("open the sqlite file");
            let sql = if refuse {
                "CREATE TRIGGER refuse_entry_delete BEFORE DELETE ON transcript_entry \
                 BEGIN SELECT RAISE(ABORT, 'entry deletes refused by the test'); END"
            } else {
                "DROP TRIGGER refuse_entry_delete"
            };
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("sqlite trigger");
            conn.close().await.expect("close the sqlite connection");
        }
    }
}

async fn a_failure_in_the_middle_of_a_forget_leaves_the_row_and_the_transcripts(fx: &Fixture) {
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    write_all(fx, &transcripts_of(A), t0()).await;
    refuse_entry_deletes(fx, true).await;
    let failed: Result<_, StoreError> = fx.store().forget(&key, TranscriptFate::Delete, t0()).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        load(fx.store(), &key).await,
        Some(row(A, t0())),
        "the row's delete is undone"
    );
    assert_all(fx, &transcripts_of(A), true, "nothing deleted").await;

    refuse_entry_deletes(fx, false).await;
    let removed = fx
        .store()
        .forget(&key, TranscriptFate::Delete, t0())
        .await
        .expect("forget");
    assert_eq!((removed.rows, removed.transcripts), (1, 3));
}

async fn a_failure_in_the_middle_of_a_clearing_report_leaves_the_row_and_the_transcripts(fx: &Fixture) {
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    write_all(fx, &transcripts_of(A), t0()).await;
    refuse_entry_deletes(fx, true).await;
    let failed = Report::gone(&key, A).id("r1").try_send(fx.store()).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(load(fx.store(), &key).await, Some(row(A, t0())), "the clear is undone");
    assert_all(fx, &transcripts_of(A), true, "nothing deleted").await;

    refuse_entry_deletes(fx, false).await;
    let outcome = applied(Report::gone(&key, A).id("r1").send(fx.store()).await);
    assert_eq!(
        outcome.transcripts_deleted, 3,
        "the report id was not recorded by the failed try"
    );
    assert_all(fx, &transcripts_of(A), false, "cleared").await;
}

async fn concurrent_clearing_reports_each_delete_their_own_ids_transcripts(fx: &Fixture) {
    const KEYS: usize = 24;
    let ids: Vec<String> = (0..KEYS).map(|i| format!("id-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        put(fx, &coder(&format!("c{i}")), &row(id, t0())).await;
        write_all(fx, &transcripts_of(id)[..2], t0()).await;
    }
    let mut reports = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let store = fx.replica(i);
        let report = Report::gone(&coder(&format!("c{i}")), id).id(format!("r{i}"));
        reports.spawn(async move { applied(report.send(store.as_ref()).await).transcripts_deleted });
    }
    let deleted: Vec<u64> = reports.join_all().await;
    assert!(
        deleted.iter().all(|&n| n == 2),
        "each report deletes its id's two: {deleted:?}"
    );
    for id in &ids {
        assert_all(fx, &transcripts_of(id)[..2], false, "cleared").await;
    }
}

async fn the_main_transcript_is_the_held_one_under_the_asked_project_key(fx: &Fixture) {
    let store: &dyn SessionStore = fx.store();
    assert_eq!(store.main_transcript("acme", A, None).await.expect("read"), None);
    // A subagent's transcript alone is no main transcript.
    write_all(fx, &[tkey("acme", "-work-repo", A, "subagents/agent-1")], t0()).await;
    assert_eq!(store.main_transcript("acme", A, None).await.expect("read"), None);
    write_all(fx, &[tkey("acme", "-work-repo", A, "")], t0()).await;
    let found = store
        .main_transcript("acme", A, None)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        (found.project_key.as_str(), found.entry_count, found.delete_pending),
        ("-work-repo", 2, false)
    );
    assert!(found.is_held(None) && found.is_held(Some("-work-repo")));
    assert_eq!(
        store
            .main_transcript("acme", A, Some("-work-other"))
            .await
            .expect("read"),
        None,
        "not under another project key"
    );
    assert_eq!(
        store.main_transcript("other", A, None).await.expect("read"),
        None,
        "nor namespace"
    );
}

// ---------------------------------------------------------------------------------------------
// Summaries go with their transcript
// ---------------------------------------------------------------------------------------------

/// Rows of `transcript_summary`, read from the tables themselves: a summary whose transcript is
/// gone can no longer be read through the store.
async fn summary_rows(fx: &Fixture) -> i64 {
    const COUNT: &str = "SELECT count(*) FROM transcript_summary";
    match &fx.storage {
        Storage::Postgres { store, .. } => sqlx::query_scalar(COUNT)
            .fetch_one(store.pool())
            .await
            .expect("count postgres summaries"),
        Storage::Sqlite { store, .. } => {
            use sqlx::Connection;
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(store.path());
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("open the sqlite file");
            let count = sqlx::query_scalar(COUNT)
                .fetch_one(&mut conn)
                .await
                .expect("count sqlite summaries");
            conn.close().await.expect("close the sqlite connection");
            count
        }
    }
}

/// Appends one entry to the main transcript `key` with a summary in both dialects.
async fn write_summaries(fx: &Fixture, key: &TranscriptKey, now: DateTime<Utc>) {
    for (n, dialect) in SummaryDialect::ALL.into_iter().enumerate() {
        let summary = SummaryWrite {
            dialect,
            data_json: r#"{"first_prompt":"hello"}"#.into(),
            if_version: 0,
        };
        let (reply, written) = fx
            .transcripts()
            .append_with_summary(
                key,
                &format!("summary-{}-{n}", key.session_id()),
                &[entry(format!("{}-summary-{n}", key.session_id()))],
                Some(&summary),
                now,
                LIMIT,
            )
            .await
            .expect("append with a summary");
        assert!(matches!(reply, AppendReply::Appended(_)), "{reply:?}");
        assert!(written.written, "{written:?}");
    }
}

async fn the_cascade_and_the_sweep_delete_the_summaries_too(fx: &Fixture) {
    let held = tkey("acme", "-work-repo", A, "");
    let orphan = tkey("acme", "-work-repo", "orphan-session", "");
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    write_summaries(fx, &held, t0()).await;
    write_summaries(fx, &orphan, t0()).await;
    assert_eq!(summary_rows(fx).await, 4, "two dialects of two transcripts");

    let removed = fx
        .store()
        .forget(&key, TranscriptFate::Delete, t0())
        .await
        .expect("forget");
    assert_eq!(removed.transcripts, 1);
    assert_eq!(
        summary_rows(fx).await,
        2,
        "the forgotten id's summaries went with its transcript"
    );

    let policy = Policy::default();
    let ttl = TimeDelta::from_std(policy.default_ttl).expect("a day");
    let counts = sweep_at(fx, &policy, t0() + ttl + TimeDelta::seconds(1), false).await;
    assert_eq!(counts.transcripts_unheld.orphan, 1, "{counts:?}");
    assert_eq!(summary_rows(fx).await, 0, "the orphan's summaries went with it");
}
