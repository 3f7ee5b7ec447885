//! Readiness and migrations: `check_ready` until `migrate` runs, migrations recorded by a newer
//! binary, replicas migrating a fresh database at once, and a migration changed after it was applied.

use std::sync::Arc;

use sessionkeeper::store::StoreError;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::builders::*;
use crate::fixture::Fixture;
use crate::support::t0;

crate::on_both_stores! {
    fixture;
    both: [
        check_ready_says_not_migrated_until_migrate_runs,
        a_newer_migration_recorded_by_a_newer_binary_is_tolerated,
        replicas_migrating_a_fresh_database_at_once_all_succeed,
        a_migration_changed_after_it_was_applied_is_an_error,
    ],
}

async fn check_ready_says_not_migrated_until_migrate_runs(fx: &Fixture) {
    let fresh = fx.unmigrated_twin().await;
    let store = fresh.store();
    match store.check_ready().await {
        Err(StoreError::NotMigrated { found, needed }) => {
            assert_eq!(found, 0);
            assert_eq!(needed, fx.latest_migration());
        }
        other => panic!("expected NotMigrated, got {other:?}"),
    }
    store.migrate().await.expect("migrate");
    store.check_ready().await.expect("ready after migrate");
    store.migrate().await.expect("migrate twice");
    store.check_ready().await.expect("ready after migrating twice");
    let key = coder("c1");
    put(&fresh, &key, &row(A, t0())).await;
    assert_eq!(load(store, &key).await, Some(row(A, t0())));
    fresh.teardown().await;
}

async fn a_newer_migration_recorded_by_a_newer_binary_is_tolerated(fx: &Fixture) {
    let store = fx.store();
    fx.record_newer_migration(fx.latest_migration() + 1).await;
    store.migrate().await.expect("migrate with a newer migration recorded");
    store
        .check_ready()
        .await
        .expect("ready with a newer migration recorded");
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    assert_eq!(load(store, &key).await, Some(row(A, t0())));
}

async fn replicas_migrating_a_fresh_database_at_once_all_succeed(fx: &Fixture) {
    // A rolling deploy: replicas start together on an empty database and migrate at startup (on
    // SQLite, the one instance is asked to migrate several times at once). A few rounds, because
    // one round may not overlap.
    const ROUNDS: usize = 3;
    const MIGRATORS: usize = 4;
    for round in 0..ROUNDS {
        let fresh = fx.unmigrated_twin().await;
        let start = Arc::new(Barrier::new(MIGRATORS));
        let mut migrators = JoinSet::new();
        for i in 0..MIGRATORS {
            let (store, start) = (fresh.replica(i), start.clone());
            migrators.spawn(async move {
                start.wait().await;
                store.migrate().await.map_err(|e| e.to_string())
            });
        }
        let results = migrators.join_all().await;
        assert!(
            results.iter().all(Result::is_ok),
            "round {round}: every concurrent migrate succeeds: {results:?}"
        );
        for i in 0..MIGRATORS {
            fresh.replica(i).check_ready().await.expect("ready");
        }
        let key = coder("c1");
        put(&fresh, &key, &row(A, t0())).await;
        assert_eq!(load(fresh.store(), &key).await, Some(row(A, t0())));
        fresh.teardown().await;
    }
}

async fn a_migration_changed_after_it_was_applied_is_an_error(fx: &Fixture) {
    // The schema looks current (check_ready only compares versions), but it is not what this
    // binary's migrations describe: migrate must say so rather than report success.
    fx.tamper_with_applied_checksums().await;
    let migrated = fx.store().migrate().await;
    assert!(
        matches!(migrated, Err(StoreError::Other(_))),
        "migrate over a modified migration: expected an error, got {migrated:?}"
    );
}
