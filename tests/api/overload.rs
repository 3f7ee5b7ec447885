//! Overload and deadlines on a real Postgres whose rows the test locks: calls over the global
//! limit are shed at once with RESOURCE_EXHAUSTED, a client deadline is honoured while the
//! database is stuck, probes keep answering, and everything recovers when the lock goes.

use std::time::{Duration, Instant};

use sessionkeeper::domain::{Binding, Policy};
use sessionkeeper::proto;
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};
use sqlx::Connection;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{TestApp, new_store, test_config};
use crate::support::Backend;
use crate::support::fixtures::{domain_key, key, report_request, success};
use crate::support::wait::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_limit_are_shed_at_once_and_deadlines_hold_while_the_database_is_stuck() {
    let mut handle = new_store(Backend::Postgres).await;
    let url = handle.database_url.clone().unwrap();
    // Locks held by others are waited for much longer than the default lock timeout here: this
    // test is about admission while the database is stuck, not about the timeout that unsticks it.
    handle.store = std::sync::Arc::new(
        PostgresStore::connect_lazy(&PostgresSettings {
            lock_timeout: Duration::from_secs(60),
            statement_timeout: Duration::from_secs(60),
            ..crate::support::pg_settings(&url)
        })
        .unwrap(),
    );
    let mut config = test_config(&handle, Policy::default());
    config.max_concurrent_requests = 3;
    let app = TestApp::start_with_config(handle, config, crate::support::t0()).await;
    app.wait_until_ready().await;
    let hot = key("hot");
    app.put_row(&domain_key(&hot), "s0", chrono::TimeDelta::hours(1), Binding::default())
        .await;

    // Another session holds the row: reports on it wait for the lock.
    let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT * FROM session WHERE conversation = 'hot' FOR UPDATE;")
        .execute(&mut locker)
        .await
        .unwrap();
    let stuck: Vec<_> = (0..2)
        .map(|i| {
            let mut client = app.client.clone();
            let request = report_request(&hot, "", success(&format!("s-stuck-{i}"), 1), "");
            tokio::spawn(async move { client.report_result(request).await })
        })
        .collect();
    let locker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut locker)
        .await
        .unwrap();
    let watcher = sqlx::PgPool::connect(&url).await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "the two stuck calls waiting on the row lock",
        || {
            let watcher = watcher.clone();
            async move { blocked_by(&watcher, locker_pid).await == 2 }
        },
    )
    .await;

    // A client deadline is honoured although the database does not answer.
    let mut request = tonic::Request::new(report_request(&hot, "", success("s-deadline", 1), ""));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = app.client.clone().report_result(request).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "deadline honoured: {:?}",
        started.elapsed()
    );

    // The abandoned call gives its slot back (the server drops it at its deadline). Nothing counts
    // the end of a dropped call, so the probe is a call on a free key: shed while the slot is still
    // taken (counted, for the metric asserted below), answered once it is free.
    let shed_while_waiting = std::cell::Cell::new(0);
    wait_until(
        Duration::from_secs(5),
        "a slot free again after the deadline",
        || async {
            match app
                .report(report_request(&key("free"), "", success("s-free", 1), ""))
                .await
            {
                Ok(_) => true,
                Err(status) if status.code() == Code::ResourceExhausted => {
                    shed_while_waiting.set(shed_while_waiting.get() + 1);
                    false
                }
                Err(status) => panic!("a call on a free key is answered or shed: {status:?}"),
            }
        },
    )
    .await;

    // Two stuck calls hold two of three slots: of ten more, one is admitted and the rest shed at once.
    let burst: Vec<_> = (0..10)
        .map(|i| {
            let mut client = app.client.clone();
            let request = report_request(&hot, "", success(&format!("s-burst-{i}"), 1), "");
            tokio::spawn(async move {
                let started = Instant::now();
                let result = client.report_result(request).await;
                (result.map(|_| ()).map_err(|s| s.code()), started.elapsed())
            })
        })
        .collect();
    // Shed calls answer at once (each is timed below); the admitted one stays stuck on the lock.
    wait_until(Duration::from_secs(5), "nine calls of the burst answered", || {
        let answered = burst.iter().filter(|task| task.is_finished()).count();
        async move { answered >= 9 }
    })
    .await;
    let mut shed = 0;
    let mut pending = Vec::new();
    for task in burst {
        if task.is_finished() {
            let (result, took) = task.await.unwrap();
            assert_eq!(result, Err(Code::ResourceExhausted));
            assert!(took < Duration::from_millis(250), "shed at once, took {took:?}");
            shed += 1;
        } else {
            pending.push(task);
        }
    }
    assert_eq!(shed, 9, "exactly the calls over the limit are shed");
    assert_eq!(
        app.service_status(proto::SERVICE_NAME).await.unwrap(),
        ServingStatus::Serving,
        "probes are not shed"
    );

    // The lock goes: admitted calls finish, and the service is fully usable again.
    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    for task in stuck {
        task.await.unwrap().expect("an admitted call completes");
    }
    for task in pending {
        assert_eq!(task.await.unwrap().0, Ok(()));
    }
    for i in 0..10 {
        app.report(report_request(&key(&format!("after-{i}")), "", success("s", 1), ""))
            .await
            .unwrap();
    }
    let metrics = app.http_get("/metrics").await.1;
    let shed_in_all = 9 + shed_while_waiting.get();
    assert!(
        metrics.contains(&format!(
            "sessionkeeper_rpc_duration_seconds_count{{code=\"RESOURCE_EXHAUSTED\",method=\"ReportResult\"}} {shed_in_all}"
        )),
        "shed calls are visible in the metrics ({shed_in_all} shed)"
    );
}

/// How many backends wait, directly or behind another waiter, on a lock that the backend `pid`
/// holds (a second waiter on a row waits on the first waiter's tuple lock).
async fn blocked_by(pool: &sqlx::PgPool, pid: i32) -> i64 {
    sqlx::query_scalar(
        "WITH RECURSIVE blocked(pid) AS ( \
             SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) \
             UNION \
             SELECT a.pid FROM pg_stat_activity a JOIN blocked b ON b.pid = ANY(pg_blocking_pids(a.pid)) \
         ) SELECT count(*) FROM blocked",
    )
    .bind(pid)
    .fetch_one(pool)
    .await
    .expect("read pg_stat_activity")
}
