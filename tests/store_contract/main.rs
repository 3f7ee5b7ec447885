//! The store contract: every test is written once, as a plain `async fn name(fixture: &Fixture)` in
//! the file of its subject, and the shared `on_both_stores!` (`fixture;`) runs it against both stores
//! (`<subject>::postgres::name` and `<subject>::sqlite::name`), the way Quickwit's
//! `metastore_test_suite!` does. A test reads back what it changed: a reply alone proves nothing about
//! the row. Concurrency tests run on Postgres through two store instances over the same schema (two
//! replicas) and on SQLite through its single instance. A few tests only make sense on Postgres
//! (replicas sweeping at once, a closed port); they are listed as `postgres_only`.
//! This binary must not grow store-specific rules: a store that behaves differently fails here.

#[path = "../support/mod.rs"]
mod support;

mod builders;
mod fixture;

mod concurrency;
mod expiry;
mod group_commit;
mod history;
mod idempotency;
mod interleavings;
mod migrations;
mod postgres_only;
mod reports;
mod rows;
mod tombstones;
mod transcript_lifecycle;
mod transcripts;
