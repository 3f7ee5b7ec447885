//! The embedded store: one SQLite file in the data dir, for a single instance when no database is
//! configured. WAL journal with full sync (a kill -9 loses no committed report). Reports run in
//! `BEGIN IMMEDIATE` transactions, which take the write lock before reading the row, so the
//! compare-and-set is as atomic as on Postgres; inside them the steps follow Postgres's order
//! (the report id's claim, then the row). Times are stored as Unix microseconds.
//!
//! The file is judged before it is served: an empty file or one whose pages fail SQLite's
//! `quick_check` is refused ([`StoreError::Damaged`]). A write transaction that does not end
//! cleanly (a COMMIT refused for a full disk, a cancelled call) closes its connection instead of
//! returning it to the pool mid-transaction ([`WriteTx`]), and a write refused for lack of space or
//! an I/O error makes the readiness check prove, by writing, that writes succeed again
//! ([`StorageHealth`]). The data dir's lock is taken before this opens anything (`data_dir.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteExecutor, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Executor};

use super::error::{from_migrate, from_sqlx};
use super::{AgentSelector, ExpiryRule, PoolStats, ReportReply, SessionStore, StoreError, StoreKind, StoredReport};
use crate::domain::{Binding, ReportOutcome, RowEffect, RowReport, SessionKey, SessionRow, StoreResult};

/// Longest wait for SQLite's write lock (at least; the acquire timeout when longer).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The file name of the embedded store inside the data dir.
pub const DATABASE_FILE: &str = "sessionkeeper.sqlite3";

/// At most this many problems are asked of `quick_check` (the refusal names the first ones).
const QUICK_CHECK_LIMIT: u32 = 3;

#[derive(Debug, Clone)]
pub struct SqliteSettings {
    pub data_dir: PathBuf,
    pub max_connections: u32,
    /// Longest wait for a connection or for the write lock.
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    storage: Arc<StorageHealth>,
}

/// Whether the storage under the file refuses writes: counts the operations that failed for lack
/// of space or an I/O error, and how many of those a successful write probe has answered since.
/// While some are unanswered the readiness check writes to find out (no probe writes otherwise).
#[derive(Debug, Default)]
struct StorageHealth {
    failures: AtomicU64,
    answered: AtomicU64,
}

impl StorageHealth {
    /// Records `result`'s failure when the storage caused it.
    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && storage_failure(e)
        {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    /// The failures so far, when some are unanswered (a probe must write).
    fn unanswered(&self) -> Option<u64> {
        let failures = self.failures.load(Ordering::SeqCst);
        (failures > self.answered.load(Ordering::SeqCst)).then_some(failures)
    }

    /// A probe that started after `failures` failures wrote: those are answered (a failure
    /// recorded while it ran stays unanswered).
    fn answer(&self, failures: u64) {
        self.answered.fetch_max(failures, Ordering::SeqCst);
    }
}

/// SQLite's primary result code of a driver error.
fn primary_code(err: &sqlx::Error) -> Option<u32> {
    match err {
        sqlx::Error::Database(db) => db.code()?.parse::<u32>().ok().map(|c| c & 0xff),
        _ => None,
    }
}

/// SQLITE_IOERR (10) and SQLITE_FULL (13): the storage refused, not the statement.
fn storage_code(code: u32) -> bool {
    matches!(code, 10 | 13)
}

fn storage_failure(err: &StoreError) -> bool {
    err.sqlx().and_then(primary_code).is_some_and(storage_code)
}

/// SQLite's busy (5) and locked (6) codes (another writer), and the storage's refusals (a full
/// disk, an I/O error), in any extended form: not now, retry later, never a fault of ours.
fn transient_code(code: &str) -> bool {
    code.parse::<u32>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6) || storage_code(c & 0xff))
}

/// SQLITE_CORRUPT (11) and SQLITE_NOTADB (26).
fn damage_code(code: u32) -> bool {
    matches!(code, 11 | 26)
}

/// One write transaction's connection, in `BEGIN IMMEDIATE` from [`WriteTx::begin`]. Committed or
/// rolled back, the connection goes back to the pool; dropped in any other state (a COMMIT that
/// failed, an error mid-way, a caller that gave up) it is closed, and SQLite rolls back whatever
/// it held: the pool never hands out a connection inside a transaction.
struct WriteTx {
    /// Always `Some` until dropped: `Drop` takes it out to close it.
    conn: Option<PoolConnection<Sqlite>>,
    /// True once the transaction is over (or never began): the connection may be reused.
    ended: bool,
}

impl WriteTx {
    async fn begin(pool: &SqlitePool) -> Result<WriteTx, StoreError> {
        let conn = pool.acquire().await.map_err(lite)?;
        let mut tx = WriteTx {
            conn: Some(conn),
            ended: false,
        };
        if let Err(e) = sqlx::raw_sql("BEGIN IMMEDIATE").execute(tx.conn()).await {
            // A BEGIN that failed (busy past the timeout) began nothing.
            tx.ended = true;
            return Err(lite(e));
        }
        Ok(tx)
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_deref_mut()
            .expect("a write transaction's connection until dropped")
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::raw_sql("COMMIT").execute(self.conn()).await.map_err(lite)?;
        self.ended = true;
        Ok(())
    }

    /// Ends a transaction that wrote nothing (a replayed report id).
    async fn roll_back(mut self) {
        if sqlx::raw_sql("ROLLBACK").execute(self.conn()).await.is_ok() {
            self.ended = true;
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.ended
            && let Some(conn) = self.conn.take()
        {
            // Out of the pool (its slot is free for a fresh connection) and closed.
            drop(conn.detach());
        }
    }
}

fn lite(err: sqlx::Error) -> StoreError {
    from_sqlx(err, transient_code)
}

fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(value: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| sqlx::Error::Decode(format!("timestamp {value} out of range").into()))
}

impl SqliteStore {
    /// Opens the store's file in `settings.data_dir`, creating it when the data dir holds none,
    /// and checks its pages; refuses an empty or damaged file with [`StoreError::Damaged`].
    pub async fn open(settings: &SqliteSettings) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
            StoreError::Other(format!("cannot create data dir {}: {e}", settings.data_dir.display()).into())
        })?;
        let path = settings.data_dir.join(DATABASE_FILE);
        refuse_an_empty_file(&path)?;
        if !path.exists() {
            create_store_file(&path).await?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Writers queue for SQLite's single write lock: under a burst of fsyncing commits the
            // pool's acquire timeout is too short a wait for it, so allow a few seconds.
            .busy_timeout(settings.acquire_timeout.max(SQLITE_BUSY_TIMEOUT))
            .foreign_keys(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| match primary_code(&e) {
                Some(code) if damage_code(code) => damaged(&path, &e.to_string()),
                _ => StoreError::Other(format!("cannot open {}: {e}", path.display()).into()),
            })?;
        quick_check(&pool, &path).await?;
        Ok(SqliteStore {
            pool,
            path,
            storage: Arc::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn latest_migration() -> i64 {
        migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }
}

fn damaged(path: &Path, detail: &str) -> StoreError {
    StoreError::Damaged(format!(
        "embedded store {} is damaged ({}): restore it from a backup, or move it aside to start an empty store",
        path.display(),
        detail
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

/// "No store yet" means no database file at all. An empty file is what a truncation or an
/// interrupted restore leaves (never this binary's own creation, see [`create_store_file`]): it is
/// never taken for a new store, so no one's data silently becomes nothing.
fn refuse_an_empty_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == 0 => Err(StoreError::Damaged(format!(
            "embedded store {} is an empty file (truncated, or a restore was interrupted): \
             restore it from a backup, or delete it to start an empty store",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Creates a new store's file under a temporary name, writes its header (WAL mode) and renames it
/// into place: a crash or a full disk during creation leaves no file, or a stray temporary one,
/// never an empty file under the store's name.
async fn create_store_file(path: &Path) -> Result<(), StoreError> {
    use sqlx::Connection;
    let creating = path.with_extension("sqlite3.creating");
    let cannot = |e: &dyn std::fmt::Display| {
        StoreError::Other(format!("cannot create the embedded store {}: {e}", path.display()).into())
    };
    // A leftover from an interrupted creation holds nothing.
    for leftover in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{leftover}", creating.display()));
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(cannot(&e)),
            _ => {}
        }
    }
    let options = SqliteConnectOptions::new()
        .filename(&creating)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| cannot(&e))?;
    // Closing the only connection checkpoints and removes the -wal and -shm files.
    conn.close().await.map_err(|e| cannot(&e))?;
    std::fs::rename(&creating, path).map_err(|e| cannot(&e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| cannot(&e))?;
    }
    Ok(())
}

/// SQLite's `quick_check` (every page's structure, without cross-checking indexes against tables,
/// which is `integrity_check`'s slow part): a store with damaged pages is refused at start rather
/// than served with some keys and every report failing.
async fn quick_check(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let check = format!("PRAGMA quick_check({QUICK_CHECK_LIMIT})");
    match sqlx::query_scalar::<_, String>(AssertSqlSafe(check))
        .fetch_all(pool)
        .await
    {
        Ok(found) if found.iter().all(|line| line == "ok") => Ok(()),
        Ok(found) => Err(damaged(path, &format!("quick_check: {}", found.join("; ")))),
        Err(e) if primary_code(&e).is_some_and(damage_code) => Err(damaged(path, &e.to_string())),
        Err(e) => Err(lite(e)),
    }
}

const SELECT_SESSION: &str = "SELECT session_id, provider, host, config_dir, cwd, last_used_at, failure_count \
     FROM session WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3";
const UPSERT_SESSION: &str = "INSERT INTO session \
     (namespace, agent, conversation, session_id, provider, host, config_dir, cwd, last_used_at, failure_count) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT (namespace, agent, conversation) DO UPDATE SET \
     session_id = excluded.session_id, provider = excluded.provider, host = excluded.host, \
     config_dir = excluded.config_dir, cwd = excluded.cwd, last_used_at = excluded.last_used_at, \
     failure_count = excluded.failure_count";
const DELETE_IF_UNCHANGED: &str = "DELETE FROM session \
     WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 AND session_id = ?4 AND last_used_at = ?5";
const CLEAR_IF_CURRENT: &str =
    "DELETE FROM session WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 AND session_id = ?4";
const COUNT_FAILURE_IF_CURRENT: &str = "UPDATE session SET failure_count = ?5 \
     WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 AND session_id = ?4";
const FORGET: &str = "DELETE FROM session WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3";
const SELECT_REPORT: &str = "SELECT agent, conversation, result_class, action, session_id, retry_fresh \
     FROM report WHERE namespace = ?1 AND report_id = ?2";
// Claims a report id with its outcome; a report decided on the row claims it with a placeholder
// outcome and records the real one with RECORD_OUTCOME before it commits (no one sees the placeholder).
const CLAIM_REPORT: &str = "INSERT INTO report \
     (namespace, report_id, agent, conversation, result_class, action, session_id, retry_fresh, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (namespace, report_id) DO NOTHING";
const RECORD_OUTCOME: &str = "UPDATE report SET action = ?3, session_id = ?4, retry_fresh = ?5 \
     WHERE namespace = ?1 AND report_id = ?2";
// Agent lists travel as a JSON array (SQLite has no array type); json_each is built in.
const DELETE_EXPIRED_OF_AGENT: &str = "DELETE FROM session WHERE (namespace, agent, conversation) IN ( \
         SELECT namespace, agent, conversation FROM session \
         WHERE agent = ?1 AND last_used_at < ?2 AND (?3 IS NULL OR namespace = ?3) LIMIT ?4)";
const DELETE_EXPIRED_OF_OTHER_AGENTS: &str = "DELETE FROM session WHERE (namespace, agent, conversation) IN ( \
         SELECT namespace, agent, conversation FROM session \
         WHERE agent NOT IN (SELECT value FROM json_each(?1)) AND last_used_at < ?2 \
         AND (?3 IS NULL OR namespace = ?3) LIMIT ?4)";
const COUNT_EXPIRED_OF_AGENT: &str = "SELECT count(*) FROM session \
     WHERE agent = ?1 AND last_used_at < ?2 AND (?3 IS NULL OR namespace = ?3)";
const COUNT_EXPIRED_OF_OTHER_AGENTS: &str = "SELECT count(*) FROM session \
     WHERE agent NOT IN (SELECT value FROM json_each(?1)) AND last_used_at < ?2 AND (?3 IS NULL OR namespace = ?3)";
const DELETE_REPORTS_BEFORE: &str = "DELETE FROM report WHERE (namespace, report_id) IN ( \
         SELECT namespace, report_id FROM report WHERE created_at < ?1 LIMIT ?2)";
const SCHEMA_VERSION: &str = "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success = 1";

/// A JSON array of strings, for `json_each`.
fn json_array(items: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| StoreError::Other(format!("agent list as JSON: {e}").into()))
}

/// The session row as SQLite returns it (times in Unix microseconds).
#[derive(sqlx::FromRow)]
struct SessionRecord {
    session_id: String,
    provider: String,
    host: String,
    config_dir: String,
    cwd: String,
    last_used_at: i64,
    failure_count: i64,
}

impl TryFrom<SessionRecord> for SessionRow {
    type Error = StoreError;

    fn try_from(record: SessionRecord) -> Result<Self, StoreError> {
        Ok(SessionRow {
            session_id: record.session_id,
            binding: Binding {
                provider: record.provider,
                host: record.host,
                config_dir: record.config_dir,
                cwd: record.cwd,
            },
            last_used_at: from_micros(record.last_used_at).map_err(lite)?,
            failure_count: u32::try_from(record.failure_count).unwrap_or(0),
        })
    }
}

async fn fetch_session<'e>(
    executor: impl SqliteExecutor<'e>,
    key: &SessionKey,
) -> Result<Option<SessionRow>, StoreError> {
    let record: Option<SessionRecord> = sqlx::query_as(SELECT_SESSION)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .fetch_optional(executor)
        .await
        .map_err(lite)?;
    record.map(SessionRow::try_from).transpose()
}

async fn fetch_report<'e>(
    executor: impl SqliteExecutor<'e>,
    namespace: &str,
    report_id: &str,
) -> Result<Option<StoredReport>, StoreError> {
    sqlx::query_as(SELECT_REPORT)
        .bind(namespace)
        .bind(report_id)
        .fetch_optional(executor)
        .await
        .map_err(lite)
}

/// Claims `report_id` for `key` with `outcome`; false when it was claimed before.
async fn claim_report<'e>(
    executor: impl SqliteExecutor<'e>,
    key: &SessionKey,
    report_id: &str,
    outcome: &ReportOutcome,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let claimed = sqlx::query(CLAIM_REPORT)
        .bind(key.namespace())
        .bind(report_id)
        .bind(key.agent())
        .bind(key.conversation())
        .bind(outcome.class.as_str())
        .bind(outcome.action.as_str())
        .bind(&outcome.session_id)
        .bind(outcome.retry_fresh)
        .bind(micros(now))
        .execute(executor)
        .await
        .map_err(lite)?;
    Ok(claimed.rows_affected() > 0)
}

/// The recorded answer to a report id claimed before: replayed for the same key, refused for another.
async fn recorded_reply<'e>(
    executor: impl SqliteExecutor<'e>,
    key: &SessionKey,
    report_id: &str,
) -> Result<ReportReply, StoreError> {
    fetch_report(executor, key.namespace(), report_id)
        .await?
        .ok_or_else(|| StoreError::Other("the report id's record vanished after its claim conflicted".into()))?
        .into_reply(key)
}

async fn upsert<'e>(executor: impl SqliteExecutor<'e>, key: &SessionKey, row: &SessionRow) -> Result<(), StoreError> {
    sqlx::query(UPSERT_SESSION)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .bind(&row.session_id)
        .bind(&row.binding.provider)
        .bind(&row.binding.host)
        .bind(&row.binding.config_dir)
        .bind(&row.binding.cwd)
        .bind(micros(row.last_used_at))
        .bind(i64::from(row.failure_count))
        .execute(executor)
        .await
        .map_err(lite)?;
    Ok(())
}

#[async_trait]
impl SessionStore for SqliteStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // SQLite has no migration lock: when two migrators race (a `migrate` next to a starting
        // server), the loser fails on the winner's tables. If the schema is current by then,
        // the race was won by someone else, which is success.
        // Only a failing statement has that shape; a checksum mismatch (a migration edited after
        // it was applied) or a dirty migration stays an error.
        use sqlx::migrate::MigrateError;
        match migrator().run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(e @ (MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))) => {
                match self.check_ready().await {
                    Ok(()) => Ok(()),
                    Err(_) => Err(from_migrate(e, transient_code)),
                }
            }
            Err(e) => Err(from_migrate(e, transient_code)),
        }
    }

    /// Also, after a write failed for lack of space or an I/O error, proves with a write of its
    /// own that writes succeed again: readiness stays off while they cannot.
    async fn check_ready(&self) -> Result<(), StoreError> {
        let found: i64 = match sqlx::query_scalar(SCHEMA_VERSION).fetch_one(&self.pool).await {
            Ok(version) => version,
            Err(sqlx::Error::Database(db)) if db.message().contains("no such table") => 0,
            Err(e) => return Err(lite(e)),
        };
        let needed = Self::latest_migration();
        if found < needed {
            return Err(StoreError::NotMigrated { found, needed });
        }
        if let Some(failures) = self.storage.unanswered() {
            self.probe_write().await?;
            self.storage.answer(failures);
        }
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRow>, StoreError> {
        self.storage.note(fetch_session(&self.pool, key).await)
    }

    async fn delete_if_unchanged(&self, key: &SessionKey, row: &SessionRow) -> Result<bool, StoreError> {
        self.storage.note(self.delete_if_unchanged_once(key, row).await)
    }

    async fn store_result(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        result: &StoreResult,
    ) -> Result<ReportReply, StoreError> {
        self.storage
            .note(self.store_result_once(key, report_id, now, result).await)
    }

    async fn report_on_row(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        report: &RowReport,
    ) -> Result<ReportReply, StoreError> {
        self.storage
            .note(self.report_on_row_once(key, report_id, now, report).await)
    }

    async fn forget(&self, key: &SessionKey) -> Result<bool, StoreError> {
        self.storage.note(self.forget_once(key).await)
    }

    async fn delete_expired_batch(&self, rule: &ExpiryRule, limit: u32) -> Result<u64, StoreError> {
        self.storage.note(self.delete_expired_batch_once(rule, limit).await)
    }

    async fn count_expired(&self, rule: &ExpiryRule) -> Result<u64, StoreError> {
        self.storage.note(self.count_expired_once(rule).await)
    }

    async fn delete_reports_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.storage.note(self.delete_reports_before_once(before, limit).await)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// The operations themselves; the trait's methods above record their storage failures.
impl SqliteStore {
    /// One write transaction that rewrites the header's `user_version` with its own value: a
    /// one-page commit through the same WAL and fsync as a report, and no table of its own.
    async fn probe_write(&self) -> Result<(), StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(tx.conn())
            .await
            .map_err(lite)?;
        let rewrite = format!("PRAGMA user_version = {version}");
        tx.conn().execute(AssertSqlSafe(rewrite)).await.map_err(lite)?;
        tx.commit().await
    }

    async fn delete_if_unchanged_once(&self, key: &SessionKey, row: &SessionRow) -> Result<bool, StoreError> {
        let done = sqlx::query(DELETE_IF_UNCHANGED)
            .bind(key.namespace())
            .bind(key.agent())
            .bind(key.conversation())
            .bind(&row.session_id)
            .bind(micros(row.last_used_at))
            .execute(&self.pool)
            .await
            .map_err(lite)?;
        Ok(done.rows_affected() > 0)
    }

    async fn store_result_once(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        result: &StoreResult,
    ) -> Result<ReportReply, StoreError> {
        let Some(report_id) = report_id else {
            upsert(&self.pool, key, &result.row).await?;
            return Ok(ReportReply::Applied(result.outcome.clone()));
        };
        let mut tx = WriteTx::begin(&self.pool).await?;
        if !claim_report(tx.conn(), key, report_id, &result.outcome, now).await? {
            let reply = recorded_reply(tx.conn(), key, report_id).await;
            tx.roll_back().await;
            return reply;
        }
        upsert(tx.conn(), key, &result.row).await?;
        tx.commit().await?;
        Ok(ReportReply::Applied(result.outcome.clone()))
    }

    async fn report_on_row_once(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        report: &RowReport,
    ) -> Result<ReportReply, StoreError> {
        // IMMEDIATE takes the write lock first: the row read below cannot change before commit.
        let mut tx = WriteTx::begin(&self.pool).await?;
        if let Some(report_id) = report_id {
            let pending = ReportOutcome {
                class: report.class,
                action: crate::domain::Action::Kept,
                session_id: String::new(),
                retry_fresh: false,
            };
            if !claim_report(tx.conn(), key, report_id, &pending, now).await? {
                let reply = recorded_reply(tx.conn(), key, report_id).await;
                tx.roll_back().await;
                return reply;
            }
        }
        let row = fetch_session(tx.conn(), key).await?;
        let decision = report.decide(row.as_ref());
        match &decision.effect {
            RowEffect::None => {}
            RowEffect::Clear { expected_session_id } => {
                sqlx::query(CLEAR_IF_CURRENT)
                    .bind(key.namespace())
                    .bind(key.agent())
                    .bind(key.conversation())
                    .bind(expected_session_id)
                    .execute(tx.conn())
                    .await
                    .map_err(lite)?;
            }
            RowEffect::CountFailure {
                expected_session_id,
                failure_count,
            } => {
                sqlx::query(COUNT_FAILURE_IF_CURRENT)
                    .bind(key.namespace())
                    .bind(key.agent())
                    .bind(key.conversation())
                    .bind(expected_session_id)
                    .bind(i64::from(*failure_count))
                    .execute(tx.conn())
                    .await
                    .map_err(lite)?;
            }
        }
        if let Some(report_id) = report_id {
            let outcome = &decision.outcome;
            sqlx::query(RECORD_OUTCOME)
                .bind(key.namespace())
                .bind(report_id)
                .bind(outcome.action.as_str())
                .bind(&outcome.session_id)
                .bind(outcome.retry_fresh)
                .execute(tx.conn())
                .await
                .map_err(lite)?;
        }
        tx.commit().await?;
        Ok(ReportReply::Applied(decision.outcome))
    }

    async fn forget_once(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let done = sqlx::query(FORGET)
            .bind(key.namespace())
            .bind(key.agent())
            .bind(key.conversation())
            .execute(&self.pool)
            .await
            .map_err(lite)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_expired_batch_once(&self, rule: &ExpiryRule, limit: u32) -> Result<u64, StoreError> {
        let query = match &rule.agents {
            AgentSelector::Only(agent) => sqlx::query(DELETE_EXPIRED_OF_AGENT).bind(agent.clone()),
            AgentSelector::AllExcept(agents) => sqlx::query(DELETE_EXPIRED_OF_OTHER_AGENTS).bind(json_array(agents)?),
        };
        let done = query
            .bind(micros(rule.cutoff))
            .bind(rule.namespace.clone())
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await
            .map_err(lite)?;
        Ok(done.rows_affected())
    }

    async fn count_expired_once(&self, rule: &ExpiryRule) -> Result<u64, StoreError> {
        let query = match &rule.agents {
            AgentSelector::Only(agent) => sqlx::query_scalar(COUNT_EXPIRED_OF_AGENT).bind(agent.clone()),
            AgentSelector::AllExcept(agents) => {
                sqlx::query_scalar(COUNT_EXPIRED_OF_OTHER_AGENTS).bind(json_array(agents)?)
            }
        };
        let count: i64 = query
            .bind(micros(rule.cutoff))
            .bind(rule.namespace.clone())
            .fetch_one(&self.pool)
            .await
            .map_err(lite)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn delete_reports_before_once(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(DELETE_REPORTS_BEFORE)
            .bind(micros(before))
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await
            .map_err(lite)?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lists_become_json_arrays() {
        assert_eq!(json_array(&[]).unwrap(), "[]");
        assert_eq!(json_array(&["a".into(), "b\"c".into()]).unwrap(), r#"["a","b\"c"]"#);
    }

    #[test]
    fn busy_locked_full_and_io_error_codes_are_transient() {
        assert!(transient_code("5"));
        assert!(transient_code("517"));
        assert!(transient_code("6"));
        assert!(transient_code("13"), "SQLITE_FULL");
        assert!(transient_code("778"), "SQLITE_IOERR_WRITE");
        assert!(!transient_code("1"));
        assert!(!transient_code("11"), "SQLITE_CORRUPT is not transient");
        assert!(!transient_code("19"));
    }

    #[test]
    fn a_storage_failure_stays_unanswered_until_a_probe_that_started_after_it_writes() {
        let health = StorageHealth::default();
        assert_eq!(health.unanswered(), None);
        let other: Result<(), _> = Err(StoreError::Other("syntax error".into()));
        let _ = health.note(other);
        assert_eq!(
            health.unanswered(),
            None,
            "a statement's own failure is not the storage's"
        );
        let full = sqlx::Error::Io(std::io::Error::other("not a database error"));
        let _ = health.note::<()>(Err(lite(full)));
        assert_eq!(health.unanswered(), None, "only SQLite's FULL and IOERR codes count");
        health.failures.fetch_add(1, Ordering::SeqCst);
        let seen = health.unanswered().expect("a failure to answer");
        health.failures.fetch_add(1, Ordering::SeqCst);
        health.answer(seen);
        assert!(
            health.unanswered().is_some(),
            "a failure during the probe stays unanswered"
        );
        health.answer(health.unanswered().unwrap());
        assert_eq!(health.unanswered(), None);
    }

    #[tokio::test]
    async fn a_write_transaction_dropped_before_commit_leaves_no_transaction_on_a_pooled_connection() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SqliteSettings {
            data_dir: dir.path().to_owned(),
            max_connections: 1,
            acquire_timeout: Duration::from_secs(2),
        };
        let store = SqliteStore::open(&settings).await.unwrap();
        store.migrate().await.unwrap();
        let mut tx = WriteTx::begin(&store.pool).await.unwrap();
        sqlx::raw_sql("PRAGMA user_version = 7")
            .execute(tx.conn())
            .await
            .unwrap();
        // A caller that gave up (or a COMMIT that failed): dropped mid-transaction.
        drop(tx);
        // The pool's one connection is a fresh one, not the abandoned transaction's.
        let mut tx = WriteTx::begin(&store.pool)
            .await
            .expect("a new transaction on the pool");
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(tx.conn())
            .await
            .unwrap();
        assert_eq!(version, 0, "the abandoned write was rolled back");
        tx.commit().await.unwrap();
        store.probe_write().await.expect("the write probe commits");
    }

    #[tokio::test]
    async fn a_new_store_is_created_whole_under_its_name_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        // An interrupted creation's leftover is no obstacle.
        std::fs::write(dir.path().join("sessionkeeper.sqlite3.creating"), b"").unwrap();
        let settings = SqliteSettings {
            data_dir: dir.path().to_owned(),
            max_connections: 1,
            acquire_timeout: Duration::from_secs(2),
        };
        let store = SqliteStore::open(&settings).await.unwrap();
        store.migrate().await.unwrap();
        store.close().await;
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [DATABASE_FILE]);
        assert!(std::fs::metadata(dir.path().join(DATABASE_FILE)).unwrap().len() > 0);
        let reopened = SqliteStore::open(&settings).await.unwrap();
        reopened.check_ready().await.expect("the reopened store is migrated");
    }

    #[tokio::test]
    async fn an_empty_database_file_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(DATABASE_FILE);
        std::fs::File::create(&file).unwrap();
        let settings = SqliteSettings {
            data_dir: dir.path().to_owned(),
            max_connections: 1,
            acquire_timeout: Duration::from_secs(2),
        };
        match SqliteStore::open(&settings).await {
            Err(StoreError::Damaged(text)) => assert!(text.contains("empty file"), "{text}"),
            other => panic!("expected Damaged, got {other:?}"),
        }
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
    }
}
