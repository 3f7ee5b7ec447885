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

use crate::helpers::{Backend, TestApp, domain_key, key, new_store, report_request, success, test_config};

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
    tokio::time::sleep(Duration::from_millis(300)).await;

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

    // The abandoned call gives its slot back (the server drops it once the client has gone).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let free = app
        .report(report_request(&key("free"), "", success("s-free", 1), ""))
        .await;
    assert!(free.is_ok(), "a slot is free again after the deadline: {free:?}");

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
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    assert!(
        metrics.contains(
            "sessionkeeper_rpc_duration_seconds_count{code=\"RESOURCE_EXHAUSTED\",method=\"ReportResult\"} 9"
        ),
        "shed calls are visible in the metrics"
    );
}
