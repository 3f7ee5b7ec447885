//! Test support shared by the integration test binaries: a fresh Postgres schema per test on the
//! server `scripts/test` found or started (`SESSIONKEEPER_TEST_DATABASE_URL`; a missing variable
//! fails the test loudly, it never skips), a fresh SQLite file per test, and real servers on
//! port 0 driven by a real tonic client.

#![allow(dead_code)]

pub mod process;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sessionkeeper::store::SessionStore;
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};
use sessionkeeper::store::sqlite::{SqliteSettings, SqliteStore};

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
