//! Test support shared by the integration test binaries: a fresh Postgres schema per test on the
//! server `scripts/test` found or started (`SESSIONKEEPER_TEST_DATABASE_URL`; a missing variable
//! fails the test loudly, it never skips), a fresh SQLite file per test, and real servers on
//! port 0 driven by a real tonic client.

#![allow(dead_code)]

pub mod fixtures;
pub mod process;
pub mod wait;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sessionkeeper::domain::{SessionKey, SessionRow};
use sessionkeeper::store::SessionStore;
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};
use sessionkeeper::store::sqlite::{SqliteSettings, SqliteStore};

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Runs each listed test on both stores, as `postgres::name` and `sqlite::name` (those listed under
/// `postgres_only` only as the first), the way Quickwit's `metastore_test_suite!` does. Each test is
/// an `async fn name(backend: Backend)`; with `fixture;` first (the store contract), an
/// `async fn name(fixture: &Fixture)` that gets a fresh `crate::fixture::Fixture` of the backend,
/// whose data is dropped after the test (a failed test keeps its Postgres schema for inspection).
#[macro_export]
macro_rules! on_both_stores {
    (fixture; both: [$($test:ident),* $(,)?], postgres_only: [$($pg_test:ident),* $(,)?] $(,)?) => {
        $crate::on_both_stores!(@stores fixture 4; [$($test),*]; [$($pg_test),*]);
    };
    (fixture; both: [$($test:ident),* $(,)?] $(,)?) => {
        $crate::on_both_stores!(@stores fixture 4; [$($test),*]; []);
    };
    (fixture; postgres_only: [$($pg_test:ident),* $(,)?] $(,)?) => {
        $crate::on_both_stores!(@stores fixture 4; []; [$($pg_test),*]);
    };
    ($($test:ident),* $(,)?) => {
        $crate::on_both_stores!(@stores backend 2; [$($test),*]; []);
    };
    (@stores $how:ident $threads:literal; [$($test:ident),*]; [$($pg_test:ident),*]) => {
        mod postgres {
            $crate::on_both_stores!(@each $how $threads Postgres: $($test,)* $($pg_test,)*);
        }
        mod sqlite {
            $crate::on_both_stores!(@each $how $threads Sqlite: $($test,)*);
        }
    };
    (@each backend $threads:literal $backend:ident: $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn $test() {
                super::$test($crate::support::Backend::$backend).await
            }
        )*
    };
    (@each fixture $threads:literal $backend:ident: $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn $test() {
                let fixture = $crate::fixture::Fixture::new($crate::support::Backend::$backend).await;
                super::$test(&fixture).await;
                fixture.teardown().await;
            }
        )*
    };
}

pub const TEST_DATABASE_URL: &str = "SESSIONKEEPER_TEST_DATABASE_URL";

/// The test database's URL. Panics when it is missing: Postgres tests never skip silently.
pub fn test_database_url() -> String {
    std::env::var(TEST_DATABASE_URL).unwrap_or_else(|_| {
        panic!(
            "{TEST_DATABASE_URL} is not set: these tests need a real Postgres. Run scripts/test, which finds \
             or starts one, or point {TEST_DATABASE_URL} at an empty database you can create schemas in"
        )
    })
}

/// A schema of its own in the test database, and a URL whose connections use it.
#[derive(Debug, Clone)]
pub struct PgSchema {
    pub schema: String,
    pub url: String,
}

/// Creates a fresh schema; the URL sets `search_path` to it, so migrations and queries stay in it.
pub async fn fresh_pg_schema() -> PgSchema {
    use sqlx::Connection;
    let base = test_database_url();
    let schema = format!("sk_{}_{}", std::process::id(), fastrand::u64(..));
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test Postgres at {TEST_DATABASE_URL}: {e}"));
    let create = format!("CREATE SCHEMA {schema}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .expect("create schema");
    conn.close().await.ok();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    PgSchema { schema, url }
}

pub fn pg_settings(url: &str) -> PostgresSettings {
    PostgresSettings {
        url: url.to_owned(),
        max_connections: 8,
        acquire_timeout: std::time::Duration::from_secs(2),
        ..PostgresSettings::new("")
    }
}

/// A migrated Postgres store in a fresh schema.
pub async fn postgres_store() -> (Arc<PostgresStore>, PgSchema) {
    let schema = fresh_pg_schema().await;
    let store = PostgresStore::connect_lazy(&pg_settings(&schema.url)).expect("postgres store");
    store.migrate().await.expect("migrate postgres");
    (Arc::new(store), schema)
}

/// A migrated SQLite store in a fresh temporary directory (kept alive by the returned guard).
pub async fn sqlite_store() -> (Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&sqlite_settings(dir.path()))
        .await
        .expect("sqlite store");
    store.migrate().await.expect("migrate sqlite");
    (Arc::new(store), dir)
}

pub fn sqlite_settings(dir: &std::path::Path) -> SqliteSettings {
    SqliteSettings {
        data_dir: dir.to_owned(),
        max_connections: 4,
        acquire_timeout: std::time::Duration::from_secs(2),
    }
}

/// A fixed instant to run tests at.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z").unwrap().to_utc()
}

/// A database of its own on the test server, for a test that reads per-database statistics
/// (`pg_stat_database`). Created from the test database's connection; dropped by [`PgDatabase::drop_now`].
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

/// `url` with its database (the path) replaced by `database`, keeping user, host and query.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = location.split('/').next().unwrap_or(location);
    format!("{scheme}://{authority}/{database}{query}")
}

/// Creates a fresh database on the test server.
pub async fn fresh_pg_database() -> PgDatabase {
    use sqlx::Connection;
    let base = test_database_url();
    let name = format!("sk_db_{}_{}", std::process::id(), fastrand::u32(..));
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test Postgres at {TEST_DATABASE_URL}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    conn.close().await.ok();
    PgDatabase {
        url: url_with_database(&base, &name),
        name,
    }
}

impl PgDatabase {
    /// Drops the database, disconnecting whoever is still connected.
    pub async fn drop_now(&self) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&test_database_url())
            .await
            .expect("connect to the test database");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .expect("drop database");
        conn.close().await.ok();
    }
}

/// Rows written behind the store's back, with SQL of the tests' own: the stores have no "put"
/// (only reports store rows), but a test must place a row in the past or with a failure count.
#[derive(Debug, Clone)]
pub enum RawRows {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

const PUT_POSTGRES: &str = "INSERT INTO session \
     (namespace, agent, conversation, session_id, provider, host, config_dir, cwd, last_used_at, failure_count) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (namespace, agent, conversation) DO UPDATE SET \
     session_id = EXCLUDED.session_id, provider = EXCLUDED.provider, host = EXCLUDED.host, \
     config_dir = EXCLUDED.config_dir, cwd = EXCLUDED.cwd, last_used_at = EXCLUDED.last_used_at, \
     failure_count = EXCLUDED.failure_count";
// The embedded store keeps times as Unix microseconds.
const PUT_SQLITE: &str = "INSERT INTO session \
     (namespace, agent, conversation, session_id, provider, host, config_dir, cwd, last_used_at, failure_count) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT (namespace, agent, conversation) DO UPDATE SET \
     session_id = excluded.session_id, provider = excluded.provider, host = excluded.host, \
     config_dir = excluded.config_dir, cwd = excluded.cwd, last_used_at = excluded.last_used_at, \
     failure_count = excluded.failure_count";

impl RawRows {
    /// Over the Postgres database (schema) at `url`.
    pub fn postgres(url: &str) -> RawRows {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(url)
            .expect("a postgres URL");
        RawRows::Postgres(pool)
    }

    /// Over the embedded store's file in `data_dir`.
    pub async fn sqlite(data_dir: &std::path::Path) -> RawRows {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(data_dir.join(sessionkeeper::store::sqlite::DATABASE_FILE))
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("open the sqlite file");
        RawRows::Sqlite(pool)
    }

    /// Inserts or replaces the key's row.
    pub async fn put(&self, key: &SessionKey, row: &SessionRow) {
        let failure_count = i64::from(row.failure_count);
        let done = match self {
            RawRows::Postgres(pool) => sqlx::query(PUT_POSTGRES)
                .bind(key.namespace())
                .bind(key.agent())
                .bind(key.conversation())
                .bind(&row.session_id)
                .bind(&row.binding.provider)
                .bind(&row.binding.host)
                .bind(&row.binding.config_dir)
                .bind(&row.binding.cwd)
                .bind(row.last_used_at)
                .bind(i32::try_from(failure_count).expect("a failure count"))
                .execute(pool)
                .await
                .map(|_| ()),
            RawRows::Sqlite(pool) => sqlx::query(PUT_SQLITE)
                .bind(key.namespace())
                .bind(key.agent())
                .bind(key.conversation())
                .bind(&row.session_id)
                .bind(&row.binding.provider)
                .bind(&row.binding.host)
                .bind(&row.binding.config_dir)
                .bind(&row.binding.cwd)
                .bind(row.last_used_at.timestamp_micros())
                .bind(failure_count)
                .execute(pool)
                .await
                .map(|_| ()),
        };
        done.unwrap_or_else(|e| panic!("put the row of {key}: {e}"));
    }

    pub async fn close(&self) {
        match self {
            RawRows::Postgres(pool) => pool.close().await,
            RawRows::Sqlite(pool) => pool.close().await,
        }
    }
}
