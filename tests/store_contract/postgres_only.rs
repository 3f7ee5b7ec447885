//! What only makes sense on Postgres: three replicas sweeping at once over one database, a store
//! behind a closed port failing fast with `Unavailable` on every operation, and timestamps Postgres
//! can hold that no time can (`infinity`), and, inside a batch of reports, a report the database
//! refuses (a trigger here) or one whose row another session holds locked; a transcript append (one
//! autocommit statement) held up by a transcript another session holds locked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionkeeper::domain::{Entry, Policy, ReportPlan, SessionKey, TranscriptKey, plan_report};
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};
use sessionkeeper::store::{AppendReply, ReportReply, SessionStore, StoreError, TranscriptStore};
use sessionkeeper::sweeper::{self, SweepScope};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::builders::*;
use crate::fixture::{Fixture, as_dyn, second_postgres_store};
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    postgres_only: [
        three_replicas_sweeping_at_once_delete_each_expired_row_exactly_once,
        a_store_behind_a_closed_port_is_unavailable_within_two_seconds,
        a_row_last_used_at_infinity_reads_as_expired_and_is_deleted_never_a_panic,
        a_report_the_database_refuses_fails_alone_never_the_other_reports_of_its_batch,
        a_row_another_session_holds_never_holds_up_or_fails_the_reports_batched_with_its_own,
        an_append_behind_a_transcript_another_session_holds_gives_up_at_the_lock_timeout_and_leaves_nothing,
    ],
}

async fn three_replicas_sweeping_at_once_delete_each_expired_row_exactly_once(fx: &Fixture) {
    const EXPIRED: i64 = 12_000;
    const LIVE: i64 = 300;
    let (pg, schema) = fx.postgres_parts();
    let policy = policy_with_short_lived_reviewer();
    let now = t0();
    // Even rows are reviewers 3 h old (TTL 2 h), odd rows coders 25 h old (TTL 24 h); then live rows.
    sqlx::query(
        "INSERT INTO session (namespace, agent, conversation, session_id, last_used_at) \
         SELECT 'acme', CASE WHEN i % 2 = 0 THEN 'reviewer' ELSE 'coder' END, 'c-' || i, 'id-' || i, \
                CASE WHEN i % 2 = 0 THEN $1 ELSE $2 END \
         FROM generate_series(1, $3) AS i",
    )
    .bind(now - hours(3))
    .bind(now - hours(25))
    .bind(EXPIRED)
    .execute(pg.pool())
    .await
    .expect("insert expired rows");
    sqlx::query(
        "INSERT INTO session (namespace, agent, conversation, session_id, last_used_at) \
         SELECT 'acme', CASE WHEN i % 2 = 0 THEN 'reviewer' ELSE 'coder' END, 'live-' || i, 'id-' || i, $1 \
         FROM generate_series(1, $2) AS i",
    )
    .bind(now - hours(1))
    .bind(LIVE)
    .execute(pg.pool())
    .await
    .expect("insert live rows");

    let replicas: Vec<Arc<dyn SessionStore>> = vec![
        fx.replica(0),
        as_dyn(second_postgres_store(schema)),
        as_dyn(second_postgres_store(schema)),
    ];
    // Connect every replica first, so that all three sweep at once rather than the warm one alone.
    for replica in &replicas {
        replica.check_ready().await.expect("replica ready");
    }
    let start = Arc::new(Barrier::new(replicas.len()));
    let started = Instant::now();
    let mut sweepers = JoinSet::new();
    for replica in &replicas {
        let (replica, start, policy) = (replica.clone(), start.clone(), policy.clone());
        sweepers.spawn(async move {
            start.wait().await;
            sweep(replica.as_ref(), &policy, now, &SweepScope::default(), false).await
        });
    }
    let counts = sweepers.join_all().await;
    println!("three replicas swept {counts:?} in {:?}", started.elapsed());
    assert_eq!(
        counts.iter().sum::<u64>(),
        EXPIRED as u64,
        "each expired row is counted once: {counts:?}"
    );

    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM session")
        .fetch_one(pg.pool())
        .await
        .expect("count rows");
    assert_eq!(left, LIVE, "only the live rows are left");
    for expiry in sweeper::expiry_rules(&policy, now, &SweepScope::default()) {
        assert_eq!(count_expired(fx.store(), &expiry).await, 0, "{expiry:?}");
    }
    for replica in &replicas[1..] {
        replica.close().await;
    }
}

async fn a_store_behind_a_closed_port_is_unavailable_within_two_seconds(_fx: &Fixture) {
    let store = PostgresStore::connect_lazy(&PostgresSettings {
        url: "postgres://postgres@127.0.0.1:1/x".into(),
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
        ..PostgresSettings::new("")
    })
    .expect("a lazy store");
    let key = coder("c1");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), store.load(&key))
        .await
        .expect("load must not hang");
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "load: expected Unavailable, got {result:?}"
    );
    assert!(took < Duration::from_secs(2), "load took {took:?}");

    let started = Instant::now();
    let ready = tokio::time::timeout(Duration::from_secs(5), store.check_ready())
        .await
        .expect("check_ready must not hang");
    let took = started.elapsed();
    assert!(
        matches!(ready, Err(StoreError::Unavailable(_))),
        "check_ready: expected Unavailable, got {ready:?}"
    );
    assert!(took < Duration::from_secs(2), "check_ready took {took:?}");

    for report in [Report::success(&key, "", A), Report::gone(&key, A)] {
        let plan = plan_report(
            report.class(),
            &report.result,
            "",
            &request_binding(),
            t0(),
            &report.policy,
        )
        .expect("a valid report");
        let started = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(5), async {
            match &plan {
                ReportPlan::Store(result) => store.store_result(&key, Some("r-1"), t0(), result).await,
                ReportPlan::OnRow(on_row) => store.report_on_row(&key, Some("r-1"), t0(), on_row).await,
            }
        })
        .await
        .expect("report must not hang");
        let took = started.elapsed();
        assert!(
            matches!(reply, Err(StoreError::Unavailable(_))),
            "report: expected Unavailable, got {reply:?}"
        );
        assert!(took < Duration::from_secs(2), "report took {took:?}");
    }

    // `sessionkeeper migrate` and `sessionkeeper sweep` must fail fast too.
    let started = Instant::now();
    let migrated = tokio::time::timeout(Duration::from_secs(5), store.migrate())
        .await
        .expect("migrate must not hang");
    let took = started.elapsed();
    assert!(
        matches!(migrated, Err(StoreError::Unavailable(_))),
        "migrate: expected Unavailable, got {migrated:?}"
    );
    assert!(took < Duration::from_secs(2), "migrate took {took:?}");

    let started = Instant::now();
    let swept = tokio::time::timeout(
        Duration::from_secs(5),
        sweeper::sweep_once(&store, &Policy::default(), t0(), &SweepScope::default(), false),
    )
    .await
    .expect("sweep must not hang");
    let took = started.elapsed();
    assert!(
        matches!(swept, Err(StoreError::Unavailable(_))),
        "sweep: expected Unavailable, got {swept:?}"
    );
    assert!(took < Duration::from_secs(2), "sweep took {took:?}");
}

/// `infinity` (or `-infinity`) in `last_used_at` can only come from outside sessionkeeper (a
/// migration script, a hand edit); decoding it as a time used to panic. The row reads as last used
/// at the epoch (so expired), the expiry-on-read delete removes it, a report on the key works, and
/// the sweep deletes such rows.
async fn a_row_last_used_at_infinity_reads_as_expired_and_is_deleted_never_a_panic(fx: &Fixture) {
    let (pg, _) = fx.postgres_parts();
    for (conversation, at) in [
        ("read", "infinity"),
        ("minus", "-infinity"),
        ("reported", "infinity"),
        ("swept", "infinity"),
    ] {
        sqlx::query(
            "INSERT INTO session (namespace, agent, conversation, session_id, last_used_at) \
             VALUES ('acme', 'coder', $1, 'id-' || $1, $2::timestamptz)",
        )
        .bind(conversation)
        .bind(at)
        .execute(pg.pool())
        .await
        .expect("insert a row with a non-finite time");
    }
    let store = fx.store();
    for conversation in ["read", "minus"] {
        let key = coder(conversation);
        let row = load(store, &key).await.expect("the row reads");
        assert_eq!(row.last_used_at, chrono::DateTime::UNIX_EPOCH, "{conversation}");
        assert_eq!(row.session_id, format!("id-{conversation}"));
        assert!(
            store
                .delete_if_unchanged(&key, &row, sessionkeeper::domain::TranscriptFate::Delete, t0())
                .await
                .expect("delete")
                .rows
                > 0,
            "{conversation}: the expired row is deleted on read"
        );
        assert!(load(store, &key).await.is_none(), "{conversation}");
    }

    let key = coder("reported");
    let report = Report::success(&key, "", A);
    let plan = plan_report(
        report.class(),
        &report.result,
        "",
        &request_binding(),
        t0(),
        &report.policy,
    )
    .expect("a valid report");
    match &plan {
        ReportPlan::Store(result) => store.store_result(&key, Some("r-inf"), t0(), result).await,
        ReportPlan::OnRow(on_row) => store.report_on_row(&key, Some("r-inf"), t0(), on_row).await,
    }
    .expect("a report on the key is applied");
    assert_eq!(load(store, &key).await.expect("stored").last_used_at, t0());

    let swept = sweeper::sweep_once(store, &Policy::default(), t0(), &SweepScope::default(), false)
        .await
        .expect("sweep");
    assert_eq!(swept.rows, 1, "the sweep deletes the row last used at infinity");
    assert!(load(store, &coder("swept")).await.is_none());
    assert!(load(store, &key).await.is_some(), "the reported row is live");
}

/// Concurrent reports share one transaction per batch. One the database refuses (here a trigger
/// raises for its id) fails alone: the batch is applied again report by report, and every other
/// report of it is stored.
async fn a_report_the_database_refuses_fails_alone_never_the_other_reports_of_its_batch(fx: &Fixture) {
    const REPORTS: usize = 64;
    const POISON: &str = "99999999-9999-4999-8999-999999999999";
    let (pg, _) = fx.postgres_parts();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.session_id = '99999999-9999-4999-8999-999999999999' THEN RAISE EXCEPTION 'poisoned row'; END IF; \
             RETURN NEW; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON session \
             FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .execute(pg.pool())
    .await
    .expect("create the trigger");
    for round in 0..5 {
        let keys: Vec<SessionKey> = (0..REPORTS).map(|i| coder(&format!("batch-{round}-{i}"))).collect();
        let barrier = Arc::new(Barrier::new(REPORTS));
        let mut reports = JoinSet::new();
        for (i, key) in keys.iter().enumerate() {
            let id = if i == REPORTS / 2 {
                POISON.to_owned()
            } else {
                format!("{i:08}-1111-4111-8111-111111111111")
            };
            let report = Report::success(key, "", &id).id(format!("r-{round}-{i}"));
            let (store, barrier) = (fx.replica(0), barrier.clone());
            reports.spawn(async move {
                barrier.wait().await;
                (i, id, report.try_send(store.as_ref()).await)
            });
        }
        for (i, id, reply) in reports.join_all().await {
            let key = &keys[i];
            if id == POISON {
                let error = reply.expect_err("the refused report fails");
                assert!(
                    !error.is_unavailable(),
                    "{key}: a refused row is not the database being down: {error}"
                );
                assert_eq!(load(fx.store(), key).await, None, "{key}");
            } else {
                assert_eq!(
                    reply.expect("every other report is stored"),
                    ReportReply::Applied(stored(&id)),
                    "{key}"
                );
                assert_eq!(load(fx.store(), key).await.map(|r| r.session_id), Some(id), "{key}");
            }
        }
    }
}

/// Another session holds one key's row locked. Reports on it share batches with reports on other
/// keys, yet those others are stored (a batch never waits for a row: the locked key's reports go
/// back to their callers, who wait alone), and once the lock is gone the key takes reports again.
async fn a_row_another_session_holds_never_holds_up_or_fails_the_reports_batched_with_its_own(fx: &Fixture) {
    const OTHERS: usize = 48;
    let (pg, _) = fx.postgres_parts();
    let hot = coder("hot");
    put(fx, &hot, &row(A, t0())).await;
    let mut locker = pg.pool().begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM session WHERE conversation = 'hot' FOR UPDATE")
        .execute(&mut *locker)
        .await
        .expect("lock the row");

    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(OTHERS));
        let mut reports = JoinSet::new();
        for i in 0..OTHERS {
            let (store, barrier) = (fx.replica(0), barrier.clone());
            if i % 6 == 0 {
                // A report on the locked key, given up after 300 ms by its caller.
                let report = Report::success(&hot, A, B).id(format!("hot-{round}-{i}"));
                reports.spawn(async move {
                    barrier.wait().await;
                    let gave_up = tokio::time::timeout(Duration::from_millis(300), report.try_send(store.as_ref()))
                        .await
                        .is_err();
                    assert!(gave_up, "a report on the locked row cannot finish while it is locked");
                    None
                });
            } else {
                let key = coder(&format!("beside-hot-{round}-{i}"));
                let report = Report::success(&key, "", B).id(format!("other-{round}-{i}"));
                reports.spawn(async move {
                    barrier.wait().await;
                    Some((key, report.try_send(store.as_ref()).await))
                });
            }
        }
        for (key, reply) in reports.join_all().await.into_iter().flatten() {
            assert_eq!(
                reply.expect("a report beside the locked key"),
                ReportReply::Applied(stored(B)),
                "{key}"
            );
            assert_eq!(
                load(fx.store(), &key).await.map(|r| r.session_id),
                Some(B.to_owned()),
                "{key}"
            );
        }
    }

    locker.rollback().await.expect("release the lock");
    let reply = Report::success(&hot, A, B).id("hot-after").send(fx.store()).await;
    assert_eq!(reply, ReportReply::Applied(stored(B)));
    assert_eq!(load(fx.store(), &hot).await.map(|r| r.session_id), Some(B.to_owned()));
}

/// An append is one statement that sets the store's lock timeout for itself (no `SET LOCAL` in a
/// `BEGIN` of its own): waiting for a transcript another session holds locked, it gives up at that
/// timeout with `Unavailable`, not at the operation's bound, and nothing of it stays, not even its
/// claim: once the lock is gone the same append id appends afresh.
async fn an_append_behind_a_transcript_another_session_holds_gives_up_at_the_lock_timeout_and_leaves_nothing(
    fx: &Fixture,
) {
    const LIMIT: u64 = 1024 * 1024;
    let (pg, schema) = fx.postgres_parts();
    let key = TranscriptKey::new("acme", "-work-repo", "held", "").expect("a transcript key");
    let entry = |uuid: &str| {
        Entry::parse(serde_json::json!({"type": "user", "uuid": uuid}).to_string(), 1024).expect("an entry")
    };
    pg.append(&key, "first", &[entry("u1")], t0(), LIMIT)
        .await
        .expect("the first append");
    let impatient = PostgresStore::connect_lazy(&PostgresSettings {
        lock_timeout: Duration::from_millis(300),
        ..crate::support::pg_settings(&schema.url)
    })
    .expect("a store with a short lock timeout");
    let mut locker = pg.pool().begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM transcript WHERE session_id = 'held' FOR UPDATE")
        .execute(&mut *locker)
        .await
        .expect("lock the transcript");

    let started = Instant::now();
    let refused = impatient.append(&key, "second", &[entry("u2")], t0(), LIMIT).await;
    let waited = started.elapsed();
    let Err(refused) = refused else {
        panic!("an append behind a held transcript: expected Unavailable, got {refused:?}");
    };
    assert!(refused.is_unavailable(), "expected Unavailable, got {refused:?}");
    let code = match refused.sqlx() {
        Some(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    assert_eq!(code.as_deref(), Some("55P03"), "the lock timeout ended it: {refused:?}");
    assert!(
        waited < Duration::from_secs(2),
        "gave up after {waited:?}, not at the 300 ms lock timeout"
    );

    locker.rollback().await.expect("release the lock");
    match impatient.append(&key, "second", &[entry("u2")], t0(), LIMIT).await {
        Ok(AppendReply::Appended(outcome)) => {
            assert_eq!((outcome.stored, outcome.entry_count), (1, 2), "{outcome:?}");
        }
        other => panic!("the append id after the lock: expected a fresh append, got {other:?}"),
    }
}
