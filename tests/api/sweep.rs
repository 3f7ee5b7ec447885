//! Sweeps through the server: the Sweep RPC (filters, dry run) and the startup sweep.

use chrono::TimeDelta;
use sessionkeeper::domain::{Binding, Policy};
use sessionkeeper::proto;

use crate::helpers::{TestApp, new_store};
use crate::support::Backend;
use crate::support::fixtures::{domain_key, key};

async fn the_sweep_rpc_deletes_expired_rows_with_filters_and_dry_run(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let globex = |c: &str| proto::SessionKey {
        namespace: "globex".into(),
        ..key(c)
    };
    for i in 0..5 {
        app.put_row(
            &domain_key(&key(&format!("old-{i}"))),
            "s",
            TimeDelta::hours(30),
            Binding::default(),
        )
        .await;
        app.put_row(
            &domain_key(&globex(&format!("old-{i}"))),
            "s",
            TimeDelta::hours(30),
            Binding::default(),
        )
        .await;
    }
    app.put_row(&domain_key(&key("fresh")), "s", TimeDelta::hours(1), Binding::default())
        .await;
    let mut client = app.client.clone();
    let sweep = |namespace: &str, dry_run: bool| proto::SweepRequest {
        namespace: namespace.into(),
        agent: String::new(),
        dry_run,
    };

    let dry = client.sweep(sweep("", true)).await.unwrap().into_inner();
    assert_eq!(dry.deleted, 10);
    assert!(dry.took.is_some());
    let acme = client.sweep(sweep("acme", false)).await.unwrap().into_inner();
    assert_eq!(acme.deleted, 5);
    assert!(
        app.store.load(&domain_key(&globex("old-0"))).await.unwrap().is_some(),
        "other namespace untouched"
    );
    let rest = client.sweep(sweep("", false)).await.unwrap().into_inner();
    assert_eq!(rest.deleted, 5);
    assert!(
        app.store.load(&domain_key(&key("fresh"))).await.unwrap().is_some(),
        "young rows stay"
    );
    assert_eq!(client.sweep(sweep("", false)).await.unwrap().into_inner().deleted, 0);
}

/// N old rows, a restart, and all of them are gone without any Get: the startup sweep.
async fn the_startup_sweep_deletes_old_rows_without_any_get(backend: Backend) {
    let handle = new_store(backend).await;
    let first = TestApp::spawn_with(handle, Policy::default(), crate::support::t0()).await;
    let keys: Vec<_> = (0..40).map(|i| key(&format!("stale-{i}"))).collect();
    for k in &keys {
        first
            .put_row(&domain_key(k), "s", TimeDelta::hours(48), Binding::default())
            .await;
    }
    first
        .put_row(&domain_key(&key("young")), "s", TimeDelta::hours(2), Binding::default())
        .await;
    let handle = first.stop().await;
    // The same store, reopened by a new server (its own pool, as after a restart).
    let restarted = TestApp::spawn_with(new_handle_like(&handle).await, Policy::default(), crate::support::t0()).await;
    // spawn_with returned after the startup sweep finished; nothing called Get.
    assert_eq!(*restarted.sweep_passes.borrow(), 1);
    for k in &keys {
        assert!(
            restarted.store.load(&domain_key(k)).await.unwrap().is_none(),
            "{k:?} swept at startup"
        );
    }
    assert!(
        restarted
            .store
            .load(&domain_key(&key("young")))
            .await
            .unwrap()
            .is_some()
    );
}

/// Reopens the store behind `handle` with fresh connections, as a restarted process would.
async fn new_handle_like(handle: &crate::helpers::StoreHandle) -> crate::helpers::StoreHandle {
    use sessionkeeper::store::postgres::PostgresStore;
    use sessionkeeper::store::sqlite::SqliteStore;
    use std::sync::Arc;
    let store: Arc<dyn sessionkeeper::store::SessionStore> = match handle.backend {
        Backend::Postgres => Arc::new(
            PostgresStore::connect_lazy(&crate::support::pg_settings(handle.database_url.as_ref().unwrap())).unwrap(),
        ),
        Backend::Sqlite => Arc::new(
            SqliteStore::open(&crate::support::sqlite_settings(handle.dir.as_ref().unwrap().path()))
                .await
                .unwrap(),
        ),
    };
    crate::helpers::StoreHandle {
        store,
        ..handle.clone()
    }
}

crate::on_both_stores!(
    the_sweep_rpc_deletes_expired_rows_with_filters_and_dry_run,
    the_startup_sweep_deletes_old_rows_without_any_get,
);
