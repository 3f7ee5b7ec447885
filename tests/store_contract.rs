//! The store contract: every test here is written once, as a plain `async fn name(fixture: &Fixture)`,
//! and [`store_contract_suite!`] runs it against both stores (`postgres::name` and `sqlite::name`),
//! the way Quickwit's `metastore_test_suite!` does. A test reads back what it changed: a reply alone
//! proves nothing about the row. Concurrency tests run on Postgres through two store instances over
//! the same schema (two replicas) and on SQLite through its single instance. A few tests only make
//! sense on Postgres (replicas sweeping at once, a closed port); they are listed as `postgres_only`.
//! This file must not grow store-specific rules: a store that behaves differently fails here.

#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sessionkeeper::domain::{
    Action, AgentPolicy, AgentResult, Binding, MAX_SESSION_ID_BYTES, Policy, ReportOutcome, ReportPlan, ResultClass,
    SessionKey, SessionRow, classify, plan_report,
};
use sessionkeeper::store::postgres::{PostgresSettings, PostgresStore};
use sessionkeeper::store::sqlite::SqliteStore;
use sessionkeeper::store::{AgentSelector, ExpiryRule, ReportReply, SessionStore, StoreError};
use sessionkeeper::sweeper::{self, SweepScope};
use support::{PgSchema, RawRows, t0};
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

/// Generates, for each test name, a `#[tokio::test]` in `mod postgres` and (unless Postgres-only)
/// in `mod sqlite` that builds a fresh fixture, runs the test and drops the fixture's data. A failed
/// test keeps its Postgres schema for inspection.
macro_rules! store_contract_suite {
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
                let fixture = super::Fixture::$backend().await;
                super::$test(&fixture).await;
                fixture.teardown().await;
            }
        )*
    };
}

store_contract_suite! {
    both: [
        loading_a_missing_key_finds_nothing,
        a_put_row_loads_back_with_every_field_to_the_microsecond,
        putting_a_row_again_replaces_every_field,
        the_longest_accepted_values_round_trip,
        keys_differing_only_in_namespace_agent_or_conversation_are_separate_rows,
        forget_deletes_the_row_whatever_it_holds_and_says_whether_there_was_one,
        delete_if_unchanged_deletes_the_row_as_it_was_read,
        delete_if_unchanged_keeps_a_row_whose_session_id_changed,
        delete_if_unchanged_keeps_a_success_stored_after_the_read,
        delete_if_unchanged_of_a_missing_row_deletes_nothing,
        a_success_report_stores_the_new_id_and_resets_the_failure_count,
        a_success_report_for_a_new_conversation_inserts_its_row,
        a_gone_report_about_the_stored_id_deletes_the_row,
        a_late_gone_report_does_not_delete_a_newer_id,
        zero_turn_unknown_failures_are_counted_and_clear_the_row_at_the_limit,
        a_transient_failure_leaves_the_row_untouched,
        the_same_report_id_twice_replays_the_first_outcome_and_changes_nothing,
        a_replayed_gone_report_does_not_delete_an_id_stored_since,
        a_report_id_used_for_another_key_of_the_namespace_is_refused_and_changes_nothing,
        the_same_report_id_in_another_namespace_is_independent,
        reports_without_a_report_id_are_applied_every_time,
        a_late_gone_report_never_deletes_a_newer_id_under_concurrency,
        an_expiry_delete_racing_a_success_never_deletes_the_stored_row,
        a_sweep_racing_successes_never_deletes_a_newly_stored_id,
        many_tasks_sending_the_same_report_id_at_once_apply_it_exactly_once,
        a_store_and_a_clear_under_one_report_id_racing_other_reports_never_fail_and_agree,
        a_report_id_reused_concurrently_for_other_keys_changes_none_of_them,
        concurrent_zero_turn_failures_are_each_counted_once,
        an_agent_rule_deletes_only_that_agents_expired_rows,
        an_all_except_rule_spares_the_listed_agents,
        a_namespace_filter_limits_deletes_and_counts_to_that_namespace,
        a_row_last_used_exactly_at_the_cutoff_is_not_expired,
        a_batch_deletes_at_most_its_limit,
        counting_expired_rows_deletes_nothing,
        a_sweep_deletes_each_agents_rows_by_its_own_ttl_and_a_dry_run_deletes_nothing,
        a_scoped_sweep_touches_only_its_namespace_and_agent,
        a_sweep_forgets_report_ids_past_their_retention,
        deleting_reports_before_an_instant_frees_only_older_report_ids,
        check_ready_says_not_migrated_until_migrate_runs,
        a_newer_migration_recorded_by_a_newer_binary_is_tolerated,
        replicas_migrating_a_fresh_database_at_once_all_succeed,
        a_migration_changed_after_it_was_applied_is_an_error,
    ],
    postgres_only: [
        three_replicas_sweeping_at_once_delete_each_expired_row_exactly_once,
        a_store_behind_a_closed_port_is_unavailable_within_two_seconds,
    ],
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// The concrete store behind a fixture, for what the trait does not offer (raw SQL, a new schema).
#[derive(Debug)]
enum Backend {
    Postgres {
        store: Arc<PostgresStore>,
        schema: PgSchema,
    },
    Sqlite {
        store: Arc<SqliteStore>,
        _dir: tempfile::TempDir,
    },
}

/// A store under test in fresh storage of its own.
#[derive(Debug)]
struct Fixture {
    store: Arc<dyn SessionStore>,
    /// Store instances over the same data: two replicas on Postgres, the one instance on SQLite.
    replicas: Vec<Arc<dyn SessionStore>>,
    backend: Backend,
    /// The fixture's own connection to the same data, for rows placed behind the store's back.
    raw: RawRows,
}

fn as_dyn<S: SessionStore>(store: Arc<S>) -> Arc<dyn SessionStore> {
    store
}

fn second_postgres_store(schema: &PgSchema) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::connect_lazy(&support::pg_settings(&schema.url)).expect("another postgres store"))
}

impl Fixture {
    /// A migrated Postgres store in a fresh schema, and a second instance (replica) over it.
    async fn postgres() -> Fixture {
        let (store, schema) = support::postgres_store().await;
        Fixture::over_postgres(store, schema)
    }

    /// A migrated SQLite store in a fresh directory.
    async fn sqlite() -> Fixture {
        let (store, dir) = support::sqlite_store().await;
        Fixture::over_sqlite(store, dir).await
    }

    fn over_postgres(store: Arc<PostgresStore>, schema: PgSchema) -> Fixture {
        let replicas = vec![as_dyn(store.clone()), as_dyn(second_postgres_store(&schema))];
        Fixture {
            store: store.clone(),
            replicas,
            raw: RawRows::postgres(&schema.url),
            backend: Backend::Postgres { store, schema },
        }
    }

    async fn over_sqlite(store: Arc<SqliteStore>, dir: tempfile::TempDir) -> Fixture {
        Fixture {
            store: store.clone(),
            replicas: vec![as_dyn(store.clone())],
            raw: RawRows::sqlite(dir.path()).await,
            backend: Backend::Sqlite { store, _dir: dir },
        }
    }

    /// A store of the same kind over fresh storage that no migration has touched.
    async fn unmigrated_twin(&self) -> Fixture {
        match &self.backend {
            Backend::Postgres { .. } => {
                let schema = support::fresh_pg_schema().await;
                Fixture::over_postgres(second_postgres_store(&schema), schema)
            }
            Backend::Sqlite { .. } => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = SqliteStore::open(&support::sqlite_settings(dir.path()))
                    .await
                    .expect("sqlite store");
                Fixture::over_sqlite(Arc::new(store), dir).await
            }
        }
    }

    fn store(&self) -> &dyn SessionStore {
        self.store.as_ref()
    }

    /// The `i`-th replica, round robin.
    fn replica(&self, i: usize) -> Arc<dyn SessionStore> {
        self.replicas[i % self.replicas.len()].clone()
    }

    fn latest_migration(&self) -> i64 {
        match &self.backend {
            Backend::Postgres { .. } => PostgresStore::latest_migration(),
            Backend::Sqlite { .. } => SqliteStore::latest_migration(),
        }
    }

    fn postgres_parts(&self) -> (&Arc<PostgresStore>, &PgSchema) {
        match &self.backend {
            Backend::Postgres { store, schema } => (store, schema),
            Backend::Sqlite { .. } => panic!("a Postgres-only test ran on SQLite"),
        }
    }

    /// Records an applied migration this binary does not know, as a newer binary would.
    async fn record_newer_migration(&self, version: i64) {
        const DESCRIPTION: &str = "added by a newer binary";
        let checksum = vec![0xab_u8; 48];
        match &self.backend {
            Backend::Postgres { store, .. } => {
                sqlx::query(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                     VALUES ($1, $2, true, $3, 1)",
                )
                .bind(version)
                .bind(DESCRIPTION)
                .bind(checksum)
                .execute(store.pool())
                .await
                .expect("record a newer postgres migration");
            }
            Backend::Sqlite { store, .. } => {
                use sqlx::Connection;
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(store.path());
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("open the sqlite file");
                sqlx::query(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                     VALUES (?1, ?2, 1, ?3, 1)",
                )
                .bind(version)
                .bind(DESCRIPTION)
                .bind(checksum)
                .execute(&mut conn)
                .await
                .expect("record a newer sqlite migration");
                conn.close().await.expect("close the sqlite connection");
            }
        }
    }

    /// Changes the recorded checksum of every applied migration, as if this binary's migration
    /// files had been edited after they were applied.
    async fn tamper_with_applied_checksums(&self) {
        match &self.backend {
            Backend::Postgres { store, .. } => {
                sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea")
                    .execute(store.pool())
                    .await
                    .expect("tamper with postgres checksums");
            }
            Backend::Sqlite { store, .. } => {
                use sqlx::Connection;
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(store.path());
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("open the sqlite file");
                sqlx::query("UPDATE _sqlx_migrations SET checksum = X'00'")
                    .execute(&mut conn)
                    .await
                    .expect("tamper with sqlite checksums");
                conn.close().await.expect("close the sqlite connection");
            }
        }
    }

    /// Closes the stores and drops the Postgres schema (the SQLite directory goes with the fixture).
    /// Cleaning up is not part of the contract: a failure here is reported, not a test failure.
    async fn teardown(self) {
        for replica in &self.replicas {
            replica.close().await;
        }
        self.raw.close().await;
        if let Backend::Postgres { schema, .. } = &self.backend {
            use sqlx::Connection;
            let drop = format!("DROP SCHEMA {} CASCADE", schema.schema);
            let dropped = async {
                let mut conn = sqlx::PgConnection::connect(&support::test_database_url()).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await?;
                conn.close().await
            };
            if let Err(e) = dropped.await {
                eprintln!("warning: test schema {} left behind: {e}", schema.schema);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rows, reports and helpers
// ---------------------------------------------------------------------------------------------

const A: &str = "11111111-1111-4111-8111-111111111111";
const B: &str = "22222222-2222-4222-8222-222222222222";

fn key(namespace: &str, agent: &str, conversation: &str) -> SessionKey {
    SessionKey::new(namespace, agent, conversation).expect("a valid key")
}

fn coder(conversation: &str) -> SessionKey {
    key("acme", "coder", conversation)
}

fn micros(n: i64) -> TimeDelta {
    TimeDelta::microseconds(n)
}

fn hours(n: i64) -> TimeDelta {
    TimeDelta::hours(n)
}

/// Where the stored rows were last run.
fn stored_binding() -> Binding {
    Binding {
        provider: "claude".into(),
        host: "pod-a".into(),
        config_dir: "/home/agent/.claude".into(),
        cwd: "/work/repo".into(),
    }
}

/// Where the reporting runs ran.
fn request_binding() -> Binding {
    Binding {
        host: "pod-b".into(),
        ..stored_binding()
    }
}

fn row(session_id: &str, last_used_at: DateTime<Utc>) -> SessionRow {
    SessionRow {
        session_id: session_id.into(),
        binding: stored_binding(),
        last_used_at,
        failure_count: 0,
    }
}

/// The row a SUCCESS report at `now` stores.
fn stored_by_report(session_id: &str, now: DateTime<Utc>) -> SessionRow {
    SessionRow {
        session_id: session_id.into(),
        binding: request_binding(),
        last_used_at: now,
        failure_count: 0,
    }
}

fn outcome(class: ResultClass, action: Action, session_id: &str, retry_fresh: bool) -> ReportOutcome {
    ReportOutcome {
        class,
        action,
        session_id: session_id.into(),
        retry_fresh,
    }
}

fn stored(session_id: &str) -> ReportOutcome {
    outcome(ResultClass::Success, Action::Stored, session_id, false)
}

fn cleared_as_gone() -> ReportOutcome {
    outcome(ResultClass::SessionGone, Action::Cleared, "", true)
}

fn superseded_gone(current: &str) -> ReportOutcome {
    outcome(ResultClass::SessionGone, Action::Superseded, current, false)
}

async fn load(store: &dyn SessionStore, key: &SessionKey) -> Option<SessionRow> {
    store.load(key).await.unwrap_or_else(|e| panic!("load {key}: {e}"))
}

/// Places a row with the fixture's own SQL (the stores have no "put": only reports store rows).
async fn put(fx: &Fixture, key: &SessionKey, row: &SessionRow) {
    fx.raw.put(key, row).await;
}

/// Puts `count` rows of `agent` in `namespace`, all last used at `last_used_at`.
async fn seed(
    fx: &Fixture,
    namespace: &str,
    agent: &str,
    label: &str,
    count: usize,
    last_used_at: DateTime<Utc>,
) -> Vec<SessionKey> {
    let mut keys = Vec::with_capacity(count);
    for i in 0..count {
        let key = key(namespace, agent, &format!("{label}-{i}"));
        put(fx, &key, &row(&format!("{label}-id-{i}"), last_used_at)).await;
        keys.push(key);
    }
    keys
}

/// How many of `keys` still have a row.
async fn surviving(store: &dyn SessionStore, keys: &[SessionKey]) -> usize {
    let mut found = 0;
    for key in keys {
        if load(store, key).await.is_some() {
            found += 1;
        }
    }
    found
}

fn rule(namespace: Option<&str>, agents: AgentSelector, cutoff: DateTime<Utc>) -> ExpiryRule {
    ExpiryRule {
        namespace: namespace.map(str::to_owned),
        agents,
        cutoff,
    }
}

fn only(agent: &str) -> AgentSelector {
    AgentSelector::Only(agent.into())
}

fn all_except(agents: &[&str]) -> AgentSelector {
    AgentSelector::AllExcept(agents.iter().map(|a| (*a).to_owned()).collect())
}

async fn delete_batch(store: &dyn SessionStore, rule: &ExpiryRule, limit: u32) -> u64 {
    store
        .delete_expired_batch(rule, limit)
        .await
        .unwrap_or_else(|e| panic!("delete_expired_batch {rule:?}: {e}"))
}

async fn count_expired(store: &dyn SessionStore, rule: &ExpiryRule) -> u64 {
    store
        .count_expired(rule)
        .await
        .unwrap_or_else(|e| panic!("count_expired {rule:?}: {e}"))
}

/// The default policy with a 2 h TTL for `reviewer` (everyone else keeps 24 h).
fn policy_with_short_lived_reviewer() -> Policy {
    let mut policy = Policy::default();
    policy.agents.insert(
        "reviewer".into(),
        AgentPolicy {
            ttl: Duration::from_secs(2 * 3600),
        },
    );
    policy
}

async fn sweep(store: &dyn SessionStore, policy: &Policy, now: DateTime<Utc>, scope: &SweepScope, dry: bool) -> u64 {
    sweeper::sweep_once(store, policy, now, scope, dry)
        .await
        .unwrap_or_else(|e| panic!("sweep_once (dry {dry}): {e}"))
}

/// A report as the service sends it to the store: classified, planned by `domain::plan_report`.
#[derive(Debug, Clone)]
struct Report {
    key: SessionKey,
    resumed_session_id: String,
    result: AgentResult,
    report_id: Option<String>,
    now: DateTime<Utc>,
    policy: Policy,
}

impl Report {
    fn new(key: &SessionKey, resumed_session_id: &str, result: AgentResult) -> Report {
        Report {
            key: key.clone(),
            resumed_session_id: resumed_session_id.into(),
            result,
            report_id: None,
            now: t0(),
            policy: Policy::default(),
        }
    }

    /// A completed run that produced `session_id`.
    fn success(key: &SessionKey, resumed: &str, session_id: &str) -> Report {
        let result = AgentResult {
            subtype: "success".into(),
            session_id: session_id.into(),
            num_turns: 3,
            result_text: "Done: the tests pass.".into(),
            ..AgentResult::default()
        };
        Report::new(key, resumed, result)
    }

    /// Claude Code's answer to a resume of an id whose transcript is not here.
    fn gone(key: &SessionKey, resumed: &str) -> Report {
        let result = AgentResult {
            is_error: true,
            subtype: "error_during_execution".into(),
            session_id: "33333333-3333-4333-8333-333333333333".into(),
            errors: vec![format!("No conversation found with session ID: {resumed}")],
            ..AgentResult::default()
        };
        Report::new(key, resumed, result)
    }

    /// A resume that failed before its first turn, for no reason the signatures know.
    fn unknown_zero_turn_failure(key: &SessionKey, resumed: &str) -> Report {
        let result = AgentResult {
            is_error: true,
            subtype: "error".into(),
            result_text: "the agent process exited with status 3".into(),
            ..AgentResult::default()
        };
        Report::new(key, resumed, result)
    }

    fn transient_failure(key: &SessionKey, resumed: &str) -> Report {
        let result = AgentResult {
            is_error: true,
            subtype: "error_during_execution".into(),
            num_turns: 2,
            errors: vec!["API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}".into()],
            ..AgentResult::default()
        };
        Report::new(key, resumed, result)
    }

    fn id(mut self, report_id: impl Into<String>) -> Report {
        self.report_id = Some(report_id.into());
        self
    }

    fn at(mut self, now: DateTime<Utc>) -> Report {
        self.now = now;
        self
    }

    fn class(&self) -> ResultClass {
        classify(
            &self.result,
            !self.resumed_session_id.is_empty(),
            &request_binding().provider,
        )
    }

    /// Sends the report exactly as `service::Lifecycle::report` does: planned before any I/O,
    /// then through the store operation its plan names.
    async fn send(&self, store: &dyn SessionStore) -> ReportReply {
        let plan = plan_report(
            self.class(),
            &self.result,
            &self.resumed_session_id,
            &request_binding(),
            self.now,
            &self.policy,
        )
        .unwrap_or_else(|e| panic!("a valid report on {}: {e}", self.key));
        let report_id = self.report_id.as_deref();
        match &plan {
            ReportPlan::Store(result) => store.store_result(&self.key, report_id, self.now, result).await,
            ReportPlan::OnRow(report) => store.report_on_row(&self.key, report_id, self.now, report).await,
        }
        .unwrap_or_else(|e| panic!("report on {}: {e}", self.key))
    }
}

/// Runs both futures at once on the runtime's worker threads.
async fn at_once<X, Y>(
    first: impl Future<Output = X> + Send + 'static,
    second: impl Future<Output = Y> + Send + 'static,
) -> (X, Y)
where
    X: Send + 'static,
    Y: Send + 'static,
{
    let (x, y) = tokio::join!(tokio::spawn(first), tokio::spawn(second));
    (x.expect("first task"), y.expect("second task"))
}

// ---------------------------------------------------------------------------------------------
// Rows: load, put, forget
// ---------------------------------------------------------------------------------------------

async fn loading_a_missing_key_finds_nothing(fx: &Fixture) {
    assert_eq!(load(fx.store(), &coder("nobody-here")).await, None);
}

async fn a_put_row_loads_back_with_every_field_to_the_microsecond(fx: &Fixture) {
    let store = fx.store();
    let key = key("acme", "coder", "PR #42: ünïcode ✓ and 'quotes'");
    let written = SessionRow {
        session_id: A.into(),
        binding: Binding {
            provider: "claude".into(),
            host: "pod-a.agents.svc.cluster.local".into(),
            config_dir: "/home/agent/.claude".into(),
            cwd: "/work/repo with spaces/ü".into(),
        },
        last_used_at: t0() + micros(123_457),
        failure_count: 7,
    };
    put(fx, &key, &written).await;
    assert_eq!(load(store, &key).await, Some(written.clone()));
    // One microsecond apart is a different instant, before and after the epoch of either store.
    let early = SessionRow {
        last_used_at: DateTime::from_timestamp_micros(-1).expect("valid instant"),
        ..written
    };
    put(fx, &key, &early).await;
    assert_eq!(load(store, &key).await, Some(early));
}

async fn putting_a_row_again_replaces_every_field(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(
        fx,
        &key,
        &SessionRow {
            failure_count: 1,
            ..row(A, t0())
        },
    )
    .await;
    let replacement = SessionRow {
        session_id: B.into(),
        binding: Binding::default(),
        last_used_at: t0() - hours(30) + micros(1),
        failure_count: 0,
    };
    put(fx, &key, &replacement).await;
    assert_eq!(load(store, &key).await, Some(replacement));
}

async fn the_longest_accepted_values_round_trip(fx: &Fixture) {
    let store = fx.store();
    let name = "n".repeat(64);
    let key = key(&name, &name, &"é".repeat(128));
    assert_eq!(key.conversation().len(), 256);
    let written = SessionRow {
        session_id: "ü".repeat(MAX_SESSION_ID_BYTES / 2),
        binding: Binding {
            provider: "p".repeat(4096),
            host: "h".repeat(4096),
            config_dir: "c".repeat(4096),
            cwd: "✓".repeat(1365),
        },
        last_used_at: t0(),
        failure_count: u32::MAX / 2,
    };
    put(fx, &key, &written).await;
    assert_eq!(load(store, &key).await, Some(written));
}

async fn keys_differing_only_in_namespace_agent_or_conversation_are_separate_rows(fx: &Fixture) {
    let store = fx.store();
    let keys = [
        key("acme", "coder", "c1"),
        key("other", "coder", "c1"),
        key("acme", "reviewer", "c1"),
        key("acme", "coder", "c2"),
        // Names compare exactly: case matters.
        key("Acme", "coder", "c1"),
        key("acme", "Coder", "c1"),
        key("acme", "coder", "C1"),
    ];
    let rows: Vec<SessionRow> = (0..keys.len())
        .map(|i| row(&format!("id-{i}"), t0() + micros(i as i64)))
        .collect();
    for (key, row) in keys.iter().zip(&rows) {
        put(fx, key, row).await;
    }
    for (key, row) in keys.iter().zip(&rows) {
        assert_eq!(load(store, key).await.as_ref(), Some(row), "{key}");
    }
    assert!(store.forget(&keys[0]).await.expect("forget"));
    assert_eq!(load(store, &keys[0]).await, None);
    for (key, row) in keys.iter().zip(&rows).skip(1) {
        assert_eq!(
            load(store, key).await.as_ref(),
            Some(row),
            "{key} survives forgetting {}",
            keys[0]
        );
    }
}

async fn forget_deletes_the_row_whatever_it_holds_and_says_whether_there_was_one(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    assert!(store.forget(&key).await.expect("forget"), "there was a row");
    assert_eq!(load(store, &key).await, None);
    assert!(
        !store.forget(&key).await.expect("forget again"),
        "there was no row left"
    );
}

// ---------------------------------------------------------------------------------------------
// delete_if_unchanged: Get's expiry deletes only the row as it read it
// ---------------------------------------------------------------------------------------------

async fn delete_if_unchanged_deletes_the_row_as_it_was_read(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0() - hours(25) + micros(17))).await;
    let read = load(store, &key).await.expect("the row");
    assert!(store.delete_if_unchanged(&key, &read).await.expect("delete"));
    assert_eq!(load(store, &key).await, None);
}

async fn delete_if_unchanged_keeps_a_row_whose_session_id_changed(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0())).await;
    let read = load(store, &key).await.expect("the row");
    // Same instant, another id: only the id tells them apart.
    put(fx, &key, &row(B, t0())).await;
    assert!(!store.delete_if_unchanged(&key, &read).await.expect("delete"));
    assert_eq!(load(store, &key).await, Some(row(B, t0())));
}

async fn delete_if_unchanged_keeps_a_success_stored_after_the_read(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0() - hours(25))).await;
    let read = load(store, &key).await.expect("the row");
    // A run resumed A and completed: the same id is stored again, with a new last use.
    let reply = Report::success(&key, A, A).at(t0()).send(store).await;
    assert_eq!(reply, ReportReply::Applied(stored(A)));
    assert!(!store.delete_if_unchanged(&key, &read).await.expect("delete"));
    assert_eq!(load(store, &key).await, Some(stored_by_report(A, t0())));

    // One microsecond is a change too.
    let later = row(A, t0() + micros(1));
    put(fx, &key, &later).await;
    assert!(!store.delete_if_unchanged(&key, &row(A, t0())).await.expect("delete"));
    assert_eq!(load(store, &key).await, Some(later));
}

async fn delete_if_unchanged_of_a_missing_row_deletes_nothing(fx: &Fixture) {
    let store = fx.store();
    let neighbour = coder("c2");
    put(fx, &neighbour, &row(A, t0())).await;
    assert!(
        !store
            .delete_if_unchanged(&coder("c1"), &row(A, t0()))
            .await
            .expect("delete")
    );
    assert_eq!(load(store, &neighbour).await, Some(row(A, t0())));
}

// ---------------------------------------------------------------------------------------------
// Reports: the plan runs on the row as locked, and its effect is applied atomically
// ---------------------------------------------------------------------------------------------

async fn a_success_report_stores_the_new_id_and_resets_the_failure_count(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(
        fx,
        &key,
        &SessionRow {
            failure_count: 1,
            ..row(A, t0() - hours(3))
        },
    )
    .await;
    let now = t0() + micros(7);
    let reply = Report::success(&key, A, B).at(now).send(store).await;
    assert_eq!(reply, ReportReply::Applied(stored(B)));
    assert_eq!(load(store, &key).await, Some(stored_by_report(B, now)));
}

async fn a_success_report_for_a_new_conversation_inserts_its_row(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let reply = Report::success(&key, "", A).send(store).await;
    assert_eq!(reply, ReportReply::Applied(stored(A)));
    assert_eq!(load(store, &key).await, Some(stored_by_report(A, t0())));
}

async fn a_gone_report_about_the_stored_id_deletes_the_row(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0() - hours(1))).await;
    let report = Report::gone(&key, A);
    assert_eq!(report.class(), ResultClass::SessionGone);
    assert_eq!(report.send(store).await, ReportReply::Applied(cleared_as_gone()));
    assert_eq!(load(store, &key).await, None);
}

async fn a_late_gone_report_does_not_delete_a_newer_id(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let newer = row(B, t0() - hours(1));
    put(fx, &key, &newer).await;
    let reply = Report::gone(&key, A).send(store).await;
    assert_eq!(reply, ReportReply::Applied(superseded_gone(B)));
    assert_eq!(load(store, &key).await, Some(newer));
}

async fn zero_turn_unknown_failures_are_counted_and_clear_the_row_at_the_limit(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let original = row(A, t0() - hours(1));
    put(fx, &key, &original).await;
    let report = Report::unknown_zero_turn_failure(&key, A);
    assert_eq!(report.class(), ResultClass::UnknownFailure);
    assert_eq!(report.policy.unknown_failure_limit, 2);

    let first = report.send(store).await;
    assert_eq!(
        first,
        ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Kept, A, false))
    );
    // Only the count moves: the id, its binding and its last use stay.
    assert_eq!(
        load(store, &key).await,
        Some(SessionRow {
            failure_count: 1,
            ..original
        })
    );

    let second = report.send(store).await;
    assert_eq!(
        second,
        ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Cleared, "", true))
    );
    assert_eq!(load(store, &key).await, None);
}

async fn a_transient_failure_leaves_the_row_untouched(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let original = SessionRow {
        failure_count: 1,
        ..row(A, t0() - hours(1))
    };
    put(fx, &key, &original).await;
    let report = Report::transient_failure(&key, A);
    assert_eq!(report.class(), ResultClass::Transient);
    assert_eq!(
        report.send(store).await,
        ReportReply::Applied(outcome(ResultClass::Transient, Action::Kept, A, false))
    );
    assert_eq!(load(store, &key).await, Some(original));
}

// ---------------------------------------------------------------------------------------------
// Idempotency: a report id is answered once per namespace
// ---------------------------------------------------------------------------------------------

async fn the_same_report_id_twice_replays_the_first_outcome_and_changes_nothing(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    let first = Report::success(&key, "", A).id("r-1").at(t0()).send(store).await;
    assert_eq!(first, ReportReply::Applied(stored(A)));
    // The repeat would store another id if it were applied.
    let repeat = Report::success(&key, A, B)
        .id("r-1")
        .at(t0() + hours(1))
        .send(store)
        .await;
    assert_eq!(repeat, ReportReply::Replayed(stored(A)));
    assert_eq!(load(store, &key).await, Some(stored_by_report(A, t0())));
}

async fn a_replayed_gone_report_does_not_delete_an_id_stored_since(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    put(fx, &key, &row(A, t0() - hours(1))).await;
    let gone = Report::gone(&key, A).id("g-1");
    assert_eq!(gone.send(store).await, ReportReply::Applied(cleared_as_gone()));
    // The fresh retry completed and stored B; then the gone report is delivered again.
    let now = t0() + micros(5);
    assert_eq!(
        Report::success(&key, "", B).at(now).send(store).await,
        ReportReply::Applied(stored(B))
    );
    assert_eq!(gone.send(store).await, ReportReply::Replayed(cleared_as_gone()));
    assert_eq!(load(store, &key).await, Some(stored_by_report(B, now)));
}

async fn a_report_id_used_for_another_key_of_the_namespace_is_refused_and_changes_nothing(fx: &Fixture) {
    let store = fx.store();
    let first_key = key("acme", "coder", "c1");
    let first = Report::success(&first_key, "", A).id("r-1").send(store).await;
    assert_eq!(first, ReportReply::Applied(stored(A)));
    let others = [key("acme", "coder", "c2"), key("acme", "reviewer", "c1")];
    for other in &others {
        let existing = row("other-id", t0() - hours(1));
        put(fx, other, &existing).await;
        let reply = Report::success(other, "other-id", B).id("r-1").send(store).await;
        assert_eq!(reply, ReportReply::ReportIdReused, "{other}");
        assert_eq!(load(store, other).await, Some(existing), "{other}");
    }
    assert_eq!(load(store, &first_key).await, Some(stored_by_report(A, t0())));
}

async fn the_same_report_id_in_another_namespace_is_independent(fx: &Fixture) {
    let store = fx.store();
    let acme = key("acme", "coder", "c1");
    let other = key("other", "coder", "c1");
    assert_eq!(
        Report::success(&acme, "", A).id("r-1").send(store).await,
        ReportReply::Applied(stored(A))
    );
    assert_eq!(
        Report::success(&other, "", B).id("r-1").send(store).await,
        ReportReply::Applied(stored(B))
    );
    assert_eq!(load(store, &acme).await, Some(stored_by_report(A, t0())));
    assert_eq!(load(store, &other).await, Some(stored_by_report(B, t0())));
    // Each namespace replays its own first outcome.
    assert_eq!(
        Report::success(&other, B, "x").id("r-1").send(store).await,
        ReportReply::Replayed(stored(B))
    );
    assert_eq!(
        Report::success(&acme, A, "x").id("r-1").send(store).await,
        ReportReply::Replayed(stored(A))
    );
}

async fn reports_without_a_report_id_are_applied_every_time(fx: &Fixture) {
    let store = fx.store();
    let key = coder("c1");
    assert_eq!(
        Report::success(&key, "", A).send(store).await,
        ReportReply::Applied(stored(A))
    );
    let now = t0() + hours(1);
    assert_eq!(
        Report::success(&key, A, B).at(now).send(store).await,
        ReportReply::Applied(stored(B))
    );
    assert_eq!(load(store, &key).await, Some(stored_by_report(B, now)));
}

// ---------------------------------------------------------------------------------------------
// Concurrency (on Postgres, the tasks alternate between two replicas)
// ---------------------------------------------------------------------------------------------

/// Racing pairs in flight at once: enough to contend, few enough for SQLite's single writer.
const PAIRS_IN_FLIGHT: usize = 16;

async fn a_late_gone_report_never_deletes_a_newer_id_under_concurrency(fx: &Fixture) {
    const KEYS: usize = 200;
    let now = t0() + hours(1);
    let keys: Vec<SessionKey> = (0..KEYS).map(|i| coder(&format!("race-{i}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0())).await;
    }
    let in_flight = Arc::new(Semaphore::new(PAIRS_IN_FLIGHT));
    let mut pairs = JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        let (one, other) = (fx.replica(i), fx.replica(i + 1));
        let success = Report::success(key, A, B).id(format!("s-{i}")).at(now);
        let gone = Report::gone(key, A).id(format!("g-{i}")).at(now);
        let in_flight = in_flight.clone();
        pairs.spawn(async move {
            let _permit = in_flight.acquire_owned().await.expect("semaphore");
            let (success_reply, gone_reply) = at_once(async move { success.send(one.as_ref()).await }, async move {
                gone.send(other.as_ref()).await
            })
            .await;
            (i, success_reply, gone_reply)
        });
    }
    let (mut cleared_first, mut superseded) = (0, 0);
    for (i, success_reply, gone_reply) in pairs.join_all().await {
        let key = &keys[i];
        assert_eq!(success_reply, ReportReply::Applied(stored(B)), "{key}");
        match gone_reply {
            ReportReply::Applied(o) if o == cleared_as_gone() => cleared_first += 1,
            ReportReply::Applied(o) if o == superseded_gone(B) => superseded += 1,
            other => panic!("{key}: unexpected gone reply {other:?}"),
        }
        assert_eq!(load(fx.store(), key).await, Some(stored_by_report(B, now)), "{key}");
    }
    println!("gone report first: {cleared_first}, success first: {superseded}");
}

async fn an_expiry_delete_racing_a_success_never_deletes_the_stored_row(fx: &Fixture) {
    const KEYS: usize = 200;
    let expired_at = t0() - hours(25);
    let keys: Vec<SessionKey> = (0..KEYS).map(|i| coder(&format!("expiry-race-{i}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, expired_at)).await;
    }
    let in_flight = Arc::new(Semaphore::new(PAIRS_IN_FLIGHT));
    let mut pairs = JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        let (one, other) = (fx.replica(i), fx.replica(i + 1));
        let read = row(A, expired_at);
        let key_for_delete = key.clone();
        // A run resumed A and completed: the same id is stored again, now.
        let success = Report::success(key, A, A).at(t0());
        let in_flight = in_flight.clone();
        pairs.spawn(async move {
            let _permit = in_flight.acquire_owned().await.expect("semaphore");
            let (deleted, success_reply) = at_once(
                async move { one.delete_if_unchanged(&key_for_delete, &read).await.expect("delete") },
                async move { success.send(other.as_ref()).await },
            )
            .await;
            (i, deleted, success_reply)
        });
    }
    let mut deleted_first = 0;
    for (i, deleted, success_reply) in pairs.join_all().await {
        let key = &keys[i];
        assert_eq!(success_reply, ReportReply::Applied(stored(A)), "{key}");
        deleted_first += usize::from(deleted);
        assert_eq!(load(fx.store(), key).await, Some(stored_by_report(A, t0())), "{key}");
    }
    println!("expiry delete first: {deleted_first} of {KEYS}");
}

async fn a_sweep_racing_successes_never_deletes_a_newly_stored_id(fx: &Fixture) {
    const KEYS: usize = 200;
    const SWEEPERS: usize = 2;
    let now = t0();
    let keys: Vec<SessionKey> = (0..KEYS).map(|i| coder(&format!("sweep-race-{i}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, now - hours(25))).await;
    }
    let expiry = rule(None, only("coder"), now - hours(24));
    let start = Arc::new(Barrier::new(SWEEPERS + 1));
    let mut sweepers = JoinSet::new();
    for s in 0..SWEEPERS {
        let (store, expiry, start) = (fx.replica(s), expiry.clone(), start.clone());
        sweepers.spawn(async move {
            start.wait().await;
            let mut deleted = 0;
            // Small batches with a pause, as the sweeper does, so that the sweep and the reports interleave.
            loop {
                let batch = store.delete_expired_batch(&expiry, 2).await.expect("delete batch");
                deleted += batch;
                if batch == 0 {
                    break deleted;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    start.wait().await;
    let in_flight = Arc::new(Semaphore::new(PAIRS_IN_FLIGHT));
    let mut reports = JoinSet::new();
    // The sweep walks the rows from the first key; the reports start from the last, to meet it.
    for (i, key) in keys.iter().enumerate().rev() {
        // A run resumed A and completed with B while its expired row was being swept.
        let (store, report, in_flight) = (fx.replica(i + 1), Report::success(key, A, B).at(now), in_flight.clone());
        reports.spawn(async move {
            let _permit = in_flight.acquire_owned().await.expect("semaphore");
            (i, report.send(store.as_ref()).await)
        });
    }
    for (i, reply) in reports.join_all().await {
        assert_eq!(reply, ReportReply::Applied(stored(B)), "{}", keys[i]);
    }
    let swept: u64 = sweepers.join_all().await.into_iter().sum();
    println!("the sweep deleted {swept} of {KEYS} rows before their success");
    assert!(swept <= KEYS as u64, "deleted {swept} rows of {KEYS}");
    for key in &keys {
        assert_eq!(load(fx.store(), key).await, Some(stored_by_report(B, now)), "{key}");
    }
    assert_eq!(count_expired(fx.store(), &expiry).await, 0);
}

async fn many_tasks_sending_the_same_report_id_at_once_apply_it_exactly_once(fx: &Fixture) {
    const KEYS: usize = 8;
    const SENDERS: usize = 12;
    // Half the keys hold a row (the senders queue on its lock), half do not (they race to insert).
    let keys: Vec<(SessionKey, bool)> = (0..KEYS)
        .map(|k| (coder(&format!("same-id-{k}")), k % 2 == 0))
        .collect();
    for (key, has_row) in &keys {
        if *has_row {
            put(fx, key, &row(A, t0() - hours(1))).await;
        }
    }
    let start = Arc::new(Barrier::new(KEYS * SENDERS));
    let mut senders = JoinSet::new();
    for (k, (key, has_row)) in keys.iter().enumerate() {
        for j in 0..SENDERS {
            let resumed = if *has_row { A } else { "" };
            let report = Report::success(key, resumed, &format!("id-{j}")).id(format!("same-{k}"));
            let store = fx.replica(j);
            let start = start.clone();
            senders.spawn(async move {
                start.wait().await;
                (k, report.send(store.as_ref()).await)
            });
        }
    }
    let mut replies: Vec<Vec<ReportReply>> = vec![Vec::new(); KEYS];
    for (k, reply) in senders.join_all().await {
        replies[k].push(reply);
    }
    for ((key, _), replies) in keys.iter().zip(replies) {
        let applied: Vec<&ReportOutcome> = replies
            .iter()
            .filter_map(|r| match r {
                ReportReply::Applied(o) => Some(o),
                _ => None,
            })
            .collect();
        assert_eq!(
            applied.len(),
            1,
            "{key}: exactly one sender applies the report: {replies:?}"
        );
        let first = applied[0].clone();
        assert_eq!(first.action, Action::Stored, "{key}");
        for reply in &replies {
            assert!(
                *reply == ReportReply::Applied(first.clone()) || *reply == ReportReply::Replayed(first.clone()),
                "{key}: {reply:?} is neither the applied outcome nor its replay ({first:?})"
            );
        }
        let row = load(fx.store(), key).await.expect("the stored row");
        assert_eq!(
            row.session_id, first.session_id,
            "{key}: the row holds the applied report's id"
        );
    }
}

/// The two report paths racing on one key: report id R1 sent at once as a store (C) and as a
/// clear of A through two replicas, with R2 (store D) and R3 (clear A) racing them. Both paths
/// take the report id's lock before the row's, so none of the calls fails (`send` panics on any
/// error, a deadlock's `Conflict` included), R1 gets one answer, and the row ends with C or D.
async fn a_store_and_a_clear_under_one_report_id_racing_other_reports_never_fail_and_agree(fx: &Fixture) {
    const KEYS: usize = 48;
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("two-paths-{k}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0() - hours(1))).await;
    }
    let c = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";
    let d = "dddddddd-dddd-4ddd-8ddd-dddddddddddd";
    let start = Arc::new(Barrier::new(KEYS * 4));
    let mut senders = JoinSet::new();
    for (k, key) in keys.iter().enumerate() {
        let reports = [
            ("R1 store", Report::success(key, A, c).id(format!("r1-{k}"))),
            ("R1 clear", Report::gone(key, A).id(format!("r1-{k}"))),
            ("R2 store", Report::success(key, A, d).id(format!("r2-{k}"))),
            ("R3 clear", Report::gone(key, A).id(format!("r3-{k}"))),
        ];
        for (n, (name, report)) in reports.into_iter().enumerate() {
            let (store, start) = (fx.replica(k + n), start.clone());
            senders.spawn(async move {
                start.wait().await;
                (k, name, report.send(store.as_ref()).await)
            });
        }
    }
    let mut replies: Vec<Vec<(&str, ReportReply)>> = vec![Vec::new(); KEYS];
    for (k, name, reply) in senders.join_all().await {
        replies[k].push((name, reply));
    }
    for (key, replies) in keys.iter().zip(replies) {
        let outcome = |reply: &ReportReply| match reply {
            ReportReply::Applied(o) | ReportReply::Replayed(o) => o.clone(),
            ReportReply::ReportIdReused => panic!("{key}: a report id reused within its own key"),
        };
        let of = |name: &str| {
            replies
                .iter()
                .filter(|(n, _)| n.starts_with(name))
                .map(|(_, r)| r)
                .collect::<Vec<_>>()
        };
        let r1 = of("R1");
        let applied = r1.iter().filter(|r| matches!(r, ReportReply::Applied(_))).count();
        assert_eq!(applied, 1, "{key}: R1 is applied once: {r1:?}");
        assert_eq!(outcome(r1[0]), outcome(r1[1]), "{key}: both R1 senders get one answer");
        let r1 = outcome(r1[0]);
        assert_eq!(outcome(of("R2")[0]), stored(d), "{key}");
        let mut stored_ids = vec![d];
        if r1 == stored(c) {
            stored_ids.push(c);
        } else {
            assert_eq!(r1.class, ResultClass::SessionGone, "{key}: {r1:?}");
        }
        let row = load(fx.store(), key)
            .await
            .expect("a gone report about A never removes C or D");
        assert!(
            stored_ids.contains(&row.session_id.as_str()),
            "{key}: the row holds {}, not one of {stored_ids:?}",
            row.session_id
        );
    }
}

async fn a_report_id_reused_concurrently_for_other_keys_changes_none_of_them(fx: &Fixture) {
    const KEYS: usize = 16;
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("shared-id-{k}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0() - hours(1))).await;
    }
    let start = Arc::new(Barrier::new(KEYS));
    let mut senders = JoinSet::new();
    for (k, key) in keys.iter().enumerate() {
        let report = Report::success(key, A, &format!("id-{k}")).id("shared");
        let (store, start) = (fx.replica(k), start.clone());
        senders.spawn(async move {
            start.wait().await;
            (k, report.send(store.as_ref()).await)
        });
    }
    let mut winners = Vec::new();
    for (k, reply) in senders.join_all().await {
        let key = &keys[k];
        match reply {
            ReportReply::Applied(o) => {
                assert_eq!(o, stored(&format!("id-{k}")), "{key}");
                assert_eq!(
                    load(fx.store(), key).await,
                    Some(stored_by_report(&o.session_id, t0())),
                    "{key}"
                );
                winners.push(k);
            }
            // The loser's own effect (storing its id) was undone with its transaction.
            ReportReply::ReportIdReused => {
                assert_eq!(load(fx.store(), key).await, Some(row(A, t0() - hours(1))), "{key}");
            }
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one key gets the report id: {winners:?}");
}

async fn concurrent_zero_turn_failures_are_each_counted_once(fx: &Fixture) {
    const KEYS: usize = 20;
    const SENDERS: usize = 6;
    let keys: Vec<SessionKey> = (0..KEYS).map(|k| coder(&format!("counting-{k}"))).collect();
    for key in &keys {
        put(fx, key, &row(A, t0() - hours(1))).await;
    }
    let start = Arc::new(Barrier::new(KEYS * SENDERS));
    let mut senders = JoinSet::new();
    for (k, key) in keys.iter().enumerate() {
        for j in 0..SENDERS {
            let report = Report::unknown_zero_turn_failure(key, A).id(format!("fail-{k}-{j}"));
            let store = fx.replica(j);
            let start = start.clone();
            senders.spawn(async move {
                start.wait().await;
                (k, report.send(store.as_ref()).await)
            });
        }
    }
    let mut replies: Vec<Vec<ReportReply>> = vec![Vec::new(); KEYS];
    for (k, reply) in senders.join_all().await {
        replies[k].push(reply);
    }
    let counted = ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Kept, A, false));
    let cleared = ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Cleared, "", true));
    let after_clear = ReportReply::Applied(outcome(ResultClass::UnknownFailure, Action::Kept, "", false));
    for (key, replies) in keys.iter().zip(replies) {
        // Limit 2: the first failure counts, the second clears, the rest find no row.
        let how_many = |wanted: &ReportReply| replies.iter().filter(|r| *r == wanted).count();
        assert_eq!(how_many(&counted), 1, "{key}: {replies:?}");
        assert_eq!(how_many(&cleared), 1, "{key}: {replies:?}");
        assert_eq!(how_many(&after_clear), SENDERS - 2, "{key}: {replies:?}");
        assert_eq!(load(fx.store(), key).await, None, "{key}");
    }
}

// ---------------------------------------------------------------------------------------------
// Expiry: rules, batches and sweeps
// ---------------------------------------------------------------------------------------------

async fn an_agent_rule_deletes_only_that_agents_expired_rows(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(2);
    let old_reviewer = seed(fx, "acme", "reviewer", "old", 3, cutoff - hours(1)).await;
    let live_reviewer = seed(fx, "acme", "reviewer", "live", 2, cutoff + hours(1)).await;
    let old_coder = seed(fx, "acme", "coder", "old", 4, cutoff - hours(1)).await;
    let reviewers = rule(None, only("reviewer"), cutoff);
    assert_eq!(delete_batch(store, &reviewers, 100).await, 3);
    assert_eq!(surviving(store, &old_reviewer).await, 0);
    assert_eq!(surviving(store, &live_reviewer).await, 2);
    assert_eq!(surviving(store, &old_coder).await, 4);
    assert_eq!(delete_batch(store, &reviewers, 100).await, 0);
}

async fn an_all_except_rule_spares_the_listed_agents(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24);
    let old_reviewer = seed(fx, "acme", "reviewer", "old", 3, cutoff - hours(1)).await;
    let old_coder = seed(fx, "acme", "coder", "old", 4, cutoff - hours(1)).await;
    let old_tester = seed(fx, "acme", "tester", "old", 2, cutoff - hours(1)).await;
    let live_coder = seed(fx, "acme", "coder", "live", 1, cutoff + hours(1)).await;
    let others = rule(None, all_except(&["reviewer", "auditor"]), cutoff);
    assert_eq!(count_expired(store, &others).await, 6);
    assert_eq!(delete_batch(store, &others, 100).await, 6);
    assert_eq!(surviving(store, &old_coder).await, 0);
    assert_eq!(surviving(store, &old_tester).await, 0);
    assert_eq!(surviving(store, &old_reviewer).await, 3);
    assert_eq!(surviving(store, &live_coder).await, 1);
    // An empty exception list covers every agent.
    let everyone = rule(None, all_except(&[]), cutoff);
    assert_eq!(count_expired(store, &everyone).await, 3);
    assert_eq!(delete_batch(store, &everyone, 100).await, 3);
    assert_eq!(surviving(store, &old_reviewer).await, 0);
    assert_eq!(surviving(store, &live_coder).await, 1);
}

async fn a_namespace_filter_limits_deletes_and_counts_to_that_namespace(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24);
    let acme = seed(fx, "acme", "coder", "old", 3, cutoff - hours(1)).await;
    let other = seed(fx, "other", "coder", "old", 2, cutoff - hours(1)).await;
    for agents in [only("coder"), all_except(&[])] {
        assert_eq!(
            count_expired(store, &rule(Some("acme"), agents.clone(), cutoff)).await,
            3
        );
        assert_eq!(
            count_expired(store, &rule(Some("other"), agents.clone(), cutoff)).await,
            2
        );
        assert_eq!(
            count_expired(store, &rule(Some("nobody"), agents.clone(), cutoff)).await,
            0
        );
        assert_eq!(count_expired(store, &rule(None, agents, cutoff)).await, 5);
    }
    assert_eq!(
        delete_batch(store, &rule(Some("acme"), only("coder"), cutoff), 100).await,
        3
    );
    assert_eq!(surviving(store, &acme).await, 0);
    assert_eq!(surviving(store, &other).await, 2);
    assert_eq!(
        delete_batch(store, &rule(Some("acme"), all_except(&[]), cutoff), 100).await,
        0
    );
    assert_eq!(surviving(store, &other).await, 2);
    assert_eq!(delete_batch(store, &rule(None, all_except(&[]), cutoff), 100).await, 2);
    assert_eq!(surviving(store, &other).await, 0);
}

async fn a_row_last_used_exactly_at_the_cutoff_is_not_expired(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24) + micros(250);
    let before = coder("one-microsecond-before");
    let at = coder("exactly-at");
    let after = coder("one-microsecond-after");
    put(fx, &before, &row(A, cutoff - micros(1))).await;
    put(fx, &at, &row(A, cutoff)).await;
    put(fx, &after, &row(A, cutoff + micros(1))).await;
    for agents in [only("coder"), all_except(&[])] {
        assert_eq!(count_expired(store, &rule(None, agents, cutoff)).await, 1);
    }
    assert_eq!(delete_batch(store, &rule(None, only("coder"), cutoff), 100).await, 1);
    assert_eq!(load(store, &before).await, None);
    assert_eq!(load(store, &at).await, Some(row(A, cutoff)));
    assert_eq!(load(store, &after).await, Some(row(A, cutoff + micros(1))));
    assert_eq!(delete_batch(store, &rule(None, all_except(&[]), cutoff), 100).await, 0);
}

async fn a_batch_deletes_at_most_its_limit(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24);
    let live = seed(fx, "acme", "coder", "live", 3, cutoff + hours(1)).await;
    for (label, agents) in [("only", only("coder")), ("all-except", all_except(&[]))] {
        let expired = seed(fx, "acme", "coder", label, 25, cutoff - hours(1)).await;
        let expiry = rule(None, agents, cutoff);
        let mut batches = Vec::new();
        for _ in 0..4 {
            batches.push(delete_batch(store, &expiry, 10).await);
        }
        assert_eq!(batches, [10, 10, 5, 0], "{label}");
        assert_eq!(surviving(store, &expired).await, 0, "{label}");
        assert_eq!(surviving(store, &live).await, 3, "{label}");
    }
}

async fn counting_expired_rows_deletes_nothing(fx: &Fixture) {
    let store = fx.store();
    let cutoff = t0() - hours(24);
    let expired = seed(fx, "acme", "coder", "old", 7, cutoff - hours(1)).await;
    let live = seed(fx, "acme", "coder", "live", 3, cutoff + hours(1)).await;
    for _ in 0..2 {
        assert_eq!(count_expired(store, &rule(None, only("coder"), cutoff)).await, 7);
        assert_eq!(
            count_expired(store, &rule(Some("acme"), all_except(&[]), cutoff)).await,
            7
        );
        assert_eq!(
            count_expired(store, &rule(None, all_except(&["coder"]), cutoff)).await,
            0
        );
    }
    assert_eq!(surviving(store, &expired).await, 7);
    assert_eq!(surviving(store, &live).await, 3);
}

async fn a_sweep_deletes_each_agents_rows_by_its_own_ttl_and_a_dry_run_deletes_nothing(fx: &Fixture) {
    let store = fx.store();
    let policy = policy_with_short_lived_reviewer();
    let now = t0();
    let old_reviewer = seed(fx, "acme", "reviewer", "3h", 4, now - hours(3)).await;
    let live_reviewer = seed(fx, "acme", "reviewer", "1h", 2, now - hours(1)).await;
    let old_coder = seed(fx, "acme", "coder", "25h", 5, now - hours(25)).await;
    // Three hours is expired for the reviewer but not for the coder (default 24 h).
    let live_coder = seed(fx, "acme", "coder", "3h", 3, now - hours(3)).await;
    let old_tester = seed(fx, "other", "tester", "25h", 2, now - hours(25)).await;
    let everything = SweepScope::default();

    assert_eq!(sweep(store, &policy, now, &everything, true).await, 11);
    for (keys, count) in [
        (&old_reviewer, 4),
        (&live_reviewer, 2),
        (&old_coder, 5),
        (&live_coder, 3),
        (&old_tester, 2),
    ] {
        assert_eq!(surviving(store, keys).await, count, "a dry run deletes nothing");
    }

    assert_eq!(sweep(store, &policy, now, &everything, false).await, 11);
    for (keys, count) in [
        (&old_reviewer, 0),
        (&live_reviewer, 2),
        (&old_coder, 0),
        (&live_coder, 3),
        (&old_tester, 0),
    ] {
        assert_eq!(surviving(store, keys).await, count, "{:?}", keys[0]);
    }
    assert_eq!(sweep(store, &policy, now, &everything, false).await, 0);
    assert_eq!(sweep(store, &policy, now, &everything, true).await, 0);
}

async fn a_scoped_sweep_touches_only_its_namespace_and_agent(fx: &Fixture) {
    let store = fx.store();
    let policy = policy_with_short_lived_reviewer();
    let now = t0();
    let acme_reviewer = seed(fx, "acme", "reviewer", "old", 2, now - hours(3)).await;
    let other_reviewer = seed(fx, "other", "reviewer", "old", 3, now - hours(3)).await;
    let acme_coder = seed(fx, "acme", "coder", "old", 4, now - hours(25)).await;
    let scope = SweepScope {
        namespace: Some("acme".into()),
        agent: Some("reviewer".into()),
    };
    assert_eq!(sweep(store, &policy, now, &scope, true).await, 2);
    assert_eq!(sweep(store, &policy, now, &scope, false).await, 2);
    assert_eq!(surviving(store, &acme_reviewer).await, 0);
    assert_eq!(surviving(store, &other_reviewer).await, 3);
    assert_eq!(surviving(store, &acme_coder).await, 4);
    let acme = SweepScope {
        namespace: Some("acme".into()),
        agent: None,
    };
    assert_eq!(sweep(store, &policy, now, &acme, false).await, 4);
    assert_eq!(surviving(store, &other_reviewer).await, 3);
}

async fn a_sweep_forgets_report_ids_past_their_retention(fx: &Fixture) {
    let store = fx.store();
    let (old_key, recent_key) = (coder("old"), coder("recent"));
    let old_at = t0() - sweeper::REPORT_RETENTION - micros(1);
    // A day old: the report id must still be remembered (at least 24 h, SPEC §4), and its row is
    // exactly at the default TTL's cutoff, so it is not expired either.
    let recent_at = t0() - hours(24);
    let old = Report::success(&old_key, "", A).id("r-old").at(old_at);
    let recent = Report::success(&recent_key, "", B).id("r-recent").at(recent_at);
    assert_eq!(old.send(store).await, ReportReply::Applied(stored(A)));
    assert_eq!(recent.send(store).await, ReportReply::Applied(stored(B)));

    // A dry run forgets nothing.
    sweep(store, &Policy::default(), t0(), &SweepScope::default(), true).await;
    assert_eq!(old.send(store).await, ReportReply::Replayed(stored(A)));

    // The old report's row has expired too (24 h): the sweep deletes it.
    assert_eq!(
        sweep(store, &Policy::default(), t0(), &SweepScope::default(), false).await,
        1
    );
    assert_eq!(load(store, &old_key).await, None);
    let reused = Report::success(&old_key, "", "new-id").id("r-old").send(store).await;
    assert_eq!(reused, ReportReply::Applied(stored("new-id")));
    assert_eq!(load(store, &old_key).await, Some(stored_by_report("new-id", t0())));
    let again = Report::success(&recent_key, B, "new-id")
        .id("r-recent")
        .send(store)
        .await;
    assert_eq!(again, ReportReply::Replayed(stored(B)));
    assert_eq!(load(store, &recent_key).await, Some(stored_by_report(B, recent_at)));
}

async fn deleting_reports_before_an_instant_frees_only_older_report_ids(fx: &Fixture) {
    let store = fx.store();
    let before = t0() - hours(1);
    // Created 3 h and 2 h ago, exactly at the instant, and after it.
    let created = [before - hours(2), before - hours(1), before, t0()];
    let keys: Vec<SessionKey> = (0..created.len()).map(|i| coder(&format!("c{i}"))).collect();
    for (i, (key, at)) in keys.iter().zip(created).enumerate() {
        let reply = Report::success(key, "", &format!("first-{i}"))
            .id(format!("r-{i}"))
            .at(at)
            .send(store)
            .await;
        assert_eq!(reply, ReportReply::Applied(stored(&format!("first-{i}"))));
    }
    assert_eq!(store.delete_reports_before(before, 1).await.expect("delete reports"), 1);
    assert_eq!(
        store.delete_reports_before(before, 100).await.expect("delete reports"),
        1
    );
    assert_eq!(
        store.delete_reports_before(before, 100).await.expect("delete reports"),
        0
    );
    for (i, key) in keys.iter().enumerate() {
        let reply = Report::success(key, "", &format!("second-{i}"))
            .id(format!("r-{i}"))
            .send(store)
            .await;
        if i < 2 {
            assert_eq!(
                reply,
                ReportReply::Applied(stored(&format!("second-{i}"))),
                "r-{i} is usable again"
            );
            assert_eq!(load(store, key).await.expect("row").session_id, format!("second-{i}"));
        } else {
            assert_eq!(
                reply,
                ReportReply::Replayed(stored(&format!("first-{i}"))),
                "r-{i} is kept"
            );
            assert_eq!(load(store, key).await.expect("row").session_id, format!("first-{i}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Readiness and migrations
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Postgres only
// ---------------------------------------------------------------------------------------------

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
