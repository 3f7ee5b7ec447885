//! The store contract: every test is written once, as a plain `async fn name(fixture: &Fixture)` in
//! the file of its subject, and [`store_contract_suite!`] runs it against both stores
//! (`<subject>::postgres::name` and `<subject>::sqlite::name`), the way Quickwit's
//! `metastore_test_suite!` does. A test reads back what it changed: a reply alone proves nothing about
//! the row. Concurrency tests run on Postgres through two store instances over the same schema (two
//! replicas) and on SQLite through its single instance. A few tests only make sense on Postgres
//! (replicas sweeping at once, a closed port); they are listed as `postgres_only`.
//! This binary must not grow store-specific rules: a store that behaves differently fails here.

#[path = "../support/mod.rs"]
mod support;

/// Generates, for each test name, a `#[tokio::test]` in `mod postgres` and (unless Postgres-only)
/// in `mod sqlite` that builds a fresh fixture, runs the test and drops the fixture's data. A failed
/// test keeps its Postgres schema for inspection. Each subject file instantiates it once.
macro_rules! store_contract_suite {
    (both: [$($test:ident),* $(,)?] $(,)?) => {
        store_contract_suite!(both: [$($test),*], postgres_only: []);
    };
    (postgres_only: [$($pg_test:ident),* $(,)?] $(,)?) => {
        mod postgres {
            store_contract_suite!(@each postgres: $($pg_test,)*);
        }
    };
    (both: [$($test:ident),* $(,)?], postgres_only: [$($pg_test:ident),* $(,)?] $(,)?) => {
        mod postgres {
            store_contract_suite!(@each postgres: $($test,)* $($pg_test,)*);
        }
        mod sqlite {
            store_contract_suite!(@each sqlite: $($test,)*);
        }
    };
    (@each $backend:ident: $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let fixture = $crate::fixture::Fixture::$backend().await;
                super::$test(&fixture).await;
                fixture.teardown().await;
            }
        )*
    };
}

mod builders;
mod fixture;

mod concurrency;
mod expiry;
mod idempotency;
mod migrations;
mod postgres_only;
mod reports;
mod rows;
