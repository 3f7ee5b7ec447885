//! The embedded store: one SQLite file in the data dir, for a single instance when no database is
//! configured. WAL journal with full sync (a kill -9 loses no committed report). SQLite has one
//! writer, so concurrent writes (reports, forgets, expiry deletes) are coalesced: each batch runs
//! in one `BEGIN IMMEDIATE` transaction, which takes the write lock before any row is read, so a
//! compare-and-set is as atomic as on Postgres, and commits once for all its writes; each write
//! runs in arrival order in a savepoint of its own, its steps in Postgres's order (the report
//! id's claim, then the row) (`sqlite/batch.rs`). Reads go straight to the pool (WAL readers
//! never wait for the writer). Times are stored as Unix microseconds.
//!
//! The file is judged before it is served: an empty file or one whose pages fail SQLite's
//! `quick_check` is refused ([`StoreError::Damaged`]). A write transaction that does not end
//! cleanly (a COMMIT refused for a full disk, a batch's task that ended) closes its connection
//! instead of returning it to the pool mid-transaction (`WriteTx`), and a write refused for lack
//! of space or an I/O error makes the readiness check prove, by writing, that writes succeed
//! again (`StorageHealth`). The data dir's lock is taken before this opens anything
//! (`data_dir.rs`). This file holds the store's SQL; `sqlite/batch.rs` applies batches of
//! writes, `sqlite/file.rs` judges the file, `sqlite/write_tx.rs` runs write transactions and
//! tracks the storage's health, `sqlite/transcript.rs` holds the transcript tables' SQL.

mod batch;
mod file;
mod history;
mod tombstone;
mod transcript;
mod transcript_lifecycle;
mod write_tx;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteExecutor, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Executor};

use super::coalesce::Coalescer;
use super::error::{context, from_migrate, from_sqlx};
use super::{
    AgentSelector, BatchStats, ExpiryRule, Found, PoolStats, Removed, ReportReply, SessionStore, StoreError, StoreKind,
    StoredReport,
};
use crate::domain::{
    Binding, HistoryEvent, HistoryKind, ReportOutcome, ResumeFailureCause, RowEffect, RowReport, SessionKey,
    SessionRow, StoreResult, Tombstone, TombstoneReason, TranscriptFate,
};
use batch::{Write, Written};
use file::{create_store_file, damage_code, damaged, quick_check, refuse_a_lost_store};
use write_tx::{StorageHealth, WriteTx};

/// Longest wait for SQLite's write lock (at least; the acquire timeout when longer).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite takes its busy timeout as an `int` of milliseconds (sqlx panics past it): a longer
/// acquire timeout waits this long for the write lock.
const SQLITE_BUSY_TIMEOUT_MAX: Duration = Duration::from_millis(i32::MAX as u64);

/// The file name of the embedded store inside the data dir.
pub const DATABASE_FILE: &str = "sessionkeeper.sqlite3";

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
    /// Concurrent writes, applied in one write transaction per batch (`sqlite/batch.rs`).
    writes: Arc<Coalescer<Write, Result<Written, StoreError>>>,
}

/// SQLite has one writer: one batch of writes at a time (a second would only queue for the
/// write lock), each taking whatever waited while the previous one committed. A bound keeps one
/// transaction short: the readers of the WAL never wait for it, but the next writers do.
const WRITE_BATCHES_IN_FLIGHT: usize = 1;
const MAX_WRITE_BATCH: usize = 128;

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

/// SQLite's busy (5) and locked (6) codes (another writer), and the storage's refusals (a full
/// disk, an I/O error), in any extended form: not now, retry later, never a fault of ours.
fn transient_code(code: &str) -> bool {
    code.parse::<u32>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6) || storage_code(c & 0xff))
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
            StoreError::Other(context(
                format!("cannot create data dir {}", settings.data_dir.display()),
                e,
            ))
        })?;
        let path = settings.data_dir.join(DATABASE_FILE);
        refuse_a_lost_store(&path)?;
        if !path.exists() {
            create_store_file(&path).await?;
        }
        let options = Self::connect_options(&path, settings.acquire_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| match primary_code(&e) {
                Some(code) if damage_code(code) => damaged(&path, &e.to_string()),
                _ => StoreError::Other(context(format!("cannot open {}", path.display()), e)),
            })?;
        quick_check(&pool, &path).await?;
        Ok(SqliteStore {
            pool,
            path,
            storage: Arc::default(),
            writes: Arc::new(Coalescer::new(WRITE_BATCHES_IN_FLIGHT, MAX_WRITE_BATCH)),
        })
    }

    /// How the store connects to its file `path`: its journal, sync and lock-wait settings (also
    /// what the benchmark's raw-SQLite baseline connects with).
    pub fn connect_options(path: &Path, acquire_timeout: Duration) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Writers queue for SQLite's single write lock: under a burst of fsyncing commits the
            // pool's acquire timeout is too short a wait for it, so allow a few seconds.
            .busy_timeout(acquire_timeout.clamp(SQLITE_BUSY_TIMEOUT, SQLITE_BUSY_TIMEOUT_MAX))
            .foreign_keys(false)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn latest_migration() -> i64 {
        migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }
}

// The session row's read by primary key and its durable upsert are public for the benchmark's
// raw-SQLite baseline, which runs these very statements.
pub const SELECT_SESSION: &str = "SELECT session_id, provider, host, config_dir, cwd, last_used_at, failure_count \
     FROM session WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3";
pub const UPSERT_SESSION: &str = "INSERT INTO session \
     (namespace, agent, conversation, session_id, provider, host, config_dir, cwd, last_used_at, failure_count) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT (namespace, agent, conversation) DO UPDATE SET \
     session_id = excluded.session_id, provider = excluded.provider, host = excluded.host, \
     config_dir = excluded.config_dir, cwd = excluded.cwd, last_used_at = excluded.last_used_at, \
     failure_count = excluded.failure_count";
const DELETE_IF_UNCHANGED: &str = "DELETE FROM session \
     WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 AND session_id = ?4 AND last_used_at = ?5 \
     RETURNING session_id, provider, host, config_dir, cwd, last_used_at, failure_count";
const CLEAR_IF_CURRENT: &str =
    "DELETE FROM session WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 AND session_id = ?4";
const COUNT_FAILURE_IF_CURRENT: &str = "UPDATE session SET failure_count = ?5 \
     WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 AND session_id = ?4";
const FORGET: &str = "DELETE FROM session WHERE namespace = ?1 AND agent = ?2 AND conversation = ?3 \
     RETURNING session_id, provider, host, config_dir, cwd, last_used_at, failure_count";
const SELECT_REPORT: &str = "SELECT agent, conversation, result_class, action, session_id, retry_fresh, cause \
     FROM report WHERE namespace = ?1 AND report_id = ?2";
// Claims a report id with its outcome; a report decided on the row claims it with a placeholder
// outcome and records the real one with RECORD_OUTCOME before it commits (no one sees the placeholder).
const CLAIM_REPORT: &str = "INSERT INTO report \
     (namespace, report_id, agent, conversation, result_class, action, session_id, retry_fresh, created_at, cause) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (namespace, report_id) DO NOTHING";
const RECORD_OUTCOME: &str = "UPDATE report SET action = ?3, session_id = ?4, retry_fresh = ?5, cause = ?6 \
     WHERE namespace = ?1 AND report_id = ?2";
// Agent lists travel as a JSON array (SQLite has no array type); json_each is built in.
const DELETE_EXPIRED_OF_AGENT: &str = "DELETE FROM session WHERE (namespace, agent, conversation) IN ( \
         SELECT namespace, agent, conversation FROM session \
         WHERE agent = ?1 AND last_used_at < ?2 AND (?3 IS NULL OR namespace = ?3) LIMIT ?4) \
     RETURNING namespace, agent, conversation, session_id, provider, host, config_dir, cwd, last_used_at, failure_count";
const DELETE_EXPIRED_OF_OTHER_AGENTS: &str = "DELETE FROM session WHERE (namespace, agent, conversation) IN ( \
         SELECT namespace, agent, conversation FROM session \
         WHERE agent NOT IN (SELECT value FROM json_each(?1)) AND last_used_at < ?2 \
         AND (?3 IS NULL OR namespace = ?3) LIMIT ?4) \
     RETURNING namespace, agent, conversation, session_id, provider, host, config_dir, cwd, last_used_at, failure_count";
const DELETE_REPORTS_BEFORE: &str = "DELETE FROM report WHERE (namespace, report_id) IN ( \
         SELECT namespace, report_id FROM report WHERE created_at < ?1 LIMIT ?2)";
const SCHEMA_VERSION: &str = "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success = 1";

/// A JSON array of strings, for `json_each`.
fn json_array(items: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(items).map_err(|e| StoreError::Other(context("agent list as JSON", e)))
}

/// A row a sweep deleted, with its key.
#[derive(sqlx::FromRow)]
struct SweptRecord {
    namespace: String,
    agent: String,
    conversation: String,
    #[sqlx(flatten)]
    record: SessionRecord,
}

/// The session row as SQLite returns it (times in Unix microseconds).
#[derive(Clone, sqlx::FromRow)]
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
        .bind(outcome.cause.map_or("", ResumeFailureCause::as_str))
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

async fn upsert(conn: &mut SqliteConnection, key: &SessionKey, row: &SessionRow) -> Result<(), StoreError> {
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
        .execute(&mut *conn)
        .await
        .map_err(lite)?;
    // Storing an id for the key deletes its tombstone.
    tombstone::remove(conn, key).await
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

    /// Nothing is coalesced here yet.
    fn batch_stats(&self) -> Vec<BatchStats> {
        vec![self.writes.stats("write")]
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // SQLite has no migration lock: when two migrators race (a `migrate` next to a starting
        // server), the loser fails on the winner's tables. If the schema is current by then,
        // the race was won by someone else, which is success. If it is not (the winner is still
        // applying a later migration), the loser runs again: the migrations the winner applied
        // are skipped, and each failure means the winner applied one more, so one attempt per
        // migration is enough.
        // Only a failing statement has that shape; a checksum mismatch (a migration edited after
        // it was applied) or a dirty migration stays an error.
        use sqlx::migrate::MigrateError;
        let attempts = migrator().iter().count() + 1;
        let mut attempt = 1;
        loop {
            match migrator().run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e @ (MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))) => {
                    if self.check_ready().await.is_ok() {
                        return Ok(());
                    }
                    if attempt >= attempts {
                        return Err(from_migrate(e, transient_code));
                    }
                    attempt += 1;
                }
                Err(e) => return Err(from_migrate(e, transient_code)),
            }
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

    async fn lookup(&self, key: &SessionKey) -> Result<Found, StoreError> {
        self.storage.note(self.lookup_once(key).await)
    }

    async fn delete_if_unchanged(
        &self,
        key: &SessionKey,
        row: &SessionRow,
        fate: TranscriptFate,
        now: DateTime<Utc>,
    ) -> Result<Removed, StoreError> {
        self.write(Write::DeleteIfUnchanged {
            key: key.clone(),
            row: row.clone(),
            fate,
            now,
        })
        .await?
        .into_removed()
    }

    async fn store_result(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        result: &StoreResult,
    ) -> Result<ReportReply, StoreError> {
        self.write(Write::Store {
            key: key.clone(),
            report_id: report_id.map(str::to_owned),
            now,
            result: result.clone(),
        })
        .await?
        .into_reply()
    }

    async fn report_on_row(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        report: &RowReport,
    ) -> Result<ReportReply, StoreError> {
        self.write(Write::OnRow {
            key: key.clone(),
            report_id: report_id.map(str::to_owned),
            now,
            report: report.clone(),
        })
        .await?
        .into_reply()
    }

    async fn forget(&self, key: &SessionKey, fate: TranscriptFate, now: DateTime<Utc>) -> Result<Removed, StoreError> {
        self.write(Write::Forget {
            key: key.clone(),
            fate,
            now,
        })
        .await?
        .into_removed()
    }

    async fn delete_expired_batch(
        &self,
        rule: &ExpiryRule,
        limit: u32,
        fate: TranscriptFate,
        now: DateTime<Utc>,
    ) -> Result<Removed, StoreError> {
        self.storage
            .note(self.delete_expired_batch_once(rule, limit, fate, now).await)
    }

    async fn history(&self, key: &SessionKey) -> Result<Vec<HistoryEvent>, StoreError> {
        self.storage.note(history::read(&self.pool, key).await)
    }

    async fn tombstone(&self, key: &SessionKey) -> Result<Option<Tombstone>, StoreError> {
        self.storage.note(tombstone::read(&self.pool, key).await)
    }

    async fn count_expired_tombstones(&self, rule: &ExpiryRule) -> Result<u64, StoreError> {
        self.storage.note(self.count_expired_tombstones_once(rule).await)
    }

    async fn delete_expired_tombstones_batch(&self, rule: &ExpiryRule, limit: u32) -> Result<u64, StoreError> {
        self.storage
            .note(self.delete_expired_tombstones_batch_once(rule, limit).await)
    }

    async fn count_expired(&self, rule: &ExpiryRule) -> Result<Removed, StoreError> {
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
    /// The row, then (on the same connection) the tombstone when there is no row.
    async fn lookup_once(&self, key: &SessionKey) -> Result<Found, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(lite)?;
        let row = fetch_session(&mut *conn, key).await?;
        let tombstone = match row {
            Some(_) => None,
            None => tombstone::read(&mut *conn, key).await?,
        };
        Ok(Found { row, tombstone })
    }

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

    /// Applies `write` in a batch with whatever other writes are waiting (`sqlite/batch.rs`).
    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let store = self.clone();
        self.writes
            .call(write, move |writes| {
                let store = store.clone();
                async move { store.apply_batch(writes).await }
            })
            .await
            .and_then(|answer| answer)
    }

    /// The rows and, in the same write transaction, their ids' transcripts.
    async fn delete_expired_batch_once(
        &self,
        rule: &ExpiryRule,
        limit: u32,
        fate: TranscriptFate,
        now: DateTime<Utc>,
    ) -> Result<Removed, StoreError> {
        let query = match &rule.agents {
            AgentSelector::Only(agent) => sqlx::query_as(DELETE_EXPIRED_OF_AGENT).bind(agent.clone()),
            AgentSelector::AllExcept(agents) => {
                sqlx::query_as(DELETE_EXPIRED_OF_OTHER_AGENTS).bind(json_array(agents)?)
            }
        };
        let mut tx = WriteTx::begin(&self.pool).await?;
        let deleted: Vec<SweptRecord> = query
            .bind(micros(rule.cutoff))
            .bind(rule.namespace.clone())
            .bind(i64::from(limit))
            .fetch_all(tx.conn())
            .await
            .map_err(lite)?;
        let mut transcripts = 0;
        for swept in &deleted {
            let key = SessionKey::new(&swept.namespace, &swept.agent, &swept.conversation)
                .map_err(|e| StoreError::Corrupt(format!("a swept row's key: {e}")))?;
            let row = SessionRow::try_from(swept.record.clone())?;
            tombstone::write(
                tx.conn(),
                &key,
                &Tombstone::of_removal(&row, TombstoneReason::Swept, now),
            )
            .await?;
            let event = HistoryEvent::of_removal(&row.session_id, HistoryKind::Swept, now);
            history::append(tx.conn(), &key, &event, None).await?;
            transcripts += transcript_lifecycle::cascade(tx.conn(), &swept.namespace, &row.session_id, fate).await?;
        }
        tx.commit().await?;
        Ok(Removed {
            rows: u64::try_from(deleted.len()).unwrap_or(u64::MAX),
            transcripts,
        })
    }

    async fn count_expired_tombstones_once(&self, rule: &ExpiryRule) -> Result<u64, StoreError> {
        let query = match &rule.agents {
            AgentSelector::Only(agent) => sqlx::query_scalar(tombstone::COUNT_EXPIRED_OF_AGENT).bind(agent.clone()),
            AgentSelector::AllExcept(agents) => {
                sqlx::query_scalar(tombstone::COUNT_EXPIRED_OF_OTHER_AGENTS).bind(json_array(agents)?)
            }
        };
        let counted: i64 = query
            .bind(micros(rule.cutoff))
            .bind(rule.namespace.clone())
            .fetch_one(&self.pool)
            .await
            .map_err(lite)?;
        Ok(u64::try_from(counted).unwrap_or(0))
    }

    async fn delete_expired_tombstones_batch_once(&self, rule: &ExpiryRule, limit: u32) -> Result<u64, StoreError> {
        let (agents, tombstones, orphans) = match &rule.agents {
            AgentSelector::Only(agent) => (
                agent.clone(),
                tombstone::DELETE_EXPIRED_OF_AGENT,
                history::DELETE_ORPHANS_OF_AGENT,
            ),
            AgentSelector::AllExcept(agents) => (
                json_array(agents)?,
                tombstone::DELETE_EXPIRED_OF_OTHER_AGENTS,
                history::DELETE_ORPHANS_OF_OTHER_AGENTS,
            ),
        };
        let mut tx = WriteTx::begin(&self.pool).await?;
        let swept: Vec<(String, String, String)> = sqlx::query_as(tombstones)
            .bind(agents.clone())
            .bind(micros(rule.cutoff))
            .bind(rule.namespace.clone())
            .bind(i64::from(limit))
            .fetch_all(tx.conn())
            .await
            .map_err(lite)?;
        // A swept tombstone takes its key's history; events of keys with neither go on their own.
        history::delete_of_keys(tx.conn(), &swept).await?;
        sqlx::query(orphans)
            .bind(agents)
            .bind(micros(rule.cutoff))
            .bind(rule.namespace.clone())
            .bind(i64::from(limit))
            .execute(tx.conn())
            .await
            .map_err(lite)?;
        tx.commit().await?;
        Ok(u64::try_from(swept.len()).unwrap_or(u64::MAX))
    }

    async fn count_expired_once(&self, rule: &ExpiryRule) -> Result<Removed, StoreError> {
        let query = match &rule.agents {
            AgentSelector::Only(agent) => {
                sqlx::query_as(transcript_lifecycle::COUNT_EXPIRED_OF_AGENT).bind(agent.clone())
            }
            AgentSelector::AllExcept(agents) => {
                sqlx::query_as(transcript_lifecycle::COUNT_EXPIRED_OF_OTHER_AGENTS).bind(json_array(agents)?)
            }
        };
        let (rows, transcripts): (i64, i64) = query
            .bind(micros(rule.cutoff))
            .bind(rule.namespace.clone())
            .fetch_one(&self.pool)
            .await
            .map_err(lite)?;
        Ok(Removed {
            rows: u64::try_from(rows).unwrap_or(0),
            transcripts: u64::try_from(transcripts).unwrap_or(0),
        })
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

/// The writes themselves, each on the batch's connection inside its write transaction (and its
/// own savepoint): `sqlite/batch.rs` runs them in arrival order.
async fn delete_if_unchanged(
    conn: &mut SqliteConnection,
    key: &SessionKey,
    row: &SessionRow,
    fate: TranscriptFate,
    now: DateTime<Utc>,
) -> Result<Removed, StoreError> {
    let done: Option<SessionRecord> = sqlx::query_as(DELETE_IF_UNCHANGED)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .bind(&row.session_id)
        .bind(micros(row.last_used_at))
        .fetch_optional(&mut *conn)
        .await
        .map_err(lite)?;
    let Some(deleted) = done else {
        return Ok(Removed::default());
    };
    let deleted = SessionRow::try_from(deleted)?;
    tombstone::write(
        conn,
        key,
        &Tombstone::of_removal(&deleted, TombstoneReason::Expired, now),
    )
    .await?;
    let event = HistoryEvent::of_removal(&deleted.session_id, HistoryKind::Expired, now);
    history::append(conn, key, &event, None).await?;
    Ok(Removed {
        rows: 1,
        transcripts: transcript_lifecycle::cascade(conn, key.namespace(), &row.session_id, fate).await?,
    })
}

async fn store_result(
    conn: &mut SqliteConnection,
    key: &SessionKey,
    report_id: Option<&str>,
    now: DateTime<Utc>,
    result: &StoreResult,
) -> Result<ReportReply, StoreError> {
    if let Some(report_id) = report_id
        && !claim_report(&mut *conn, key, report_id, &result.outcome, now).await?
    {
        return recorded_reply(conn, key, report_id).await;
    }
    upsert(conn, key, &result.row).await?;
    let event = HistoryEvent::of_store(result, now);
    history::append(conn, key, &event, Some(result.history_events)).await?;
    Ok(ReportReply::Applied(result.outcome.clone()))
}

/// Inside the write transaction (`BEGIN IMMEDIATE` holds the write lock), the row read here
/// cannot change before the effect decided on it is applied.
async fn report_on_row(
    conn: &mut SqliteConnection,
    key: &SessionKey,
    report_id: Option<&str>,
    now: DateTime<Utc>,
    report: &RowReport,
) -> Result<ReportReply, StoreError> {
    if let Some(report_id) = report_id {
        let pending = ReportOutcome {
            class: report.class,
            action: crate::domain::Action::Kept,
            session_id: String::new(),
            retry_fresh: false,
            transcripts_deleted: 0,
            cause: None,
        };
        if !claim_report(&mut *conn, key, report_id, &pending, now).await? {
            return recorded_reply(conn, key, report_id).await;
        }
    }
    let row = fetch_session(&mut *conn, key).await?;
    let mut decision = report.decide(row.as_ref());
    let mut removed = false;
    match &decision.effect {
        RowEffect::None => {}
        RowEffect::Clear { expected_session_id } => {
            let cleared = sqlx::query(CLEAR_IF_CURRENT)
                .bind(key.namespace())
                .bind(key.agent())
                .bind(key.conversation())
                .bind(expected_session_id)
                .execute(&mut *conn)
                .await
                .map_err(lite)?;
            if cleared.rows_affected() > 0 {
                removed = true;
                if let Some(row) = row.as_ref() {
                    tombstone::write(&mut *conn, key, &Tombstone::of_report(report, row, now)).await?;
                }
                decision.outcome.transcripts_deleted = transcript_lifecycle::cascade(
                    &mut *conn,
                    key.namespace(),
                    expected_session_id,
                    report.transcript_fate,
                )
                .await?;
            }
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
                .execute(&mut *conn)
                .await
                .map_err(lite)?;
        }
    }
    let event = HistoryEvent::of_report(report, row.as_ref(), &decision, removed, now);
    history::append(&mut *conn, key, &event, Some(report.history_events)).await?;
    if let Some(report_id) = report_id {
        let outcome = &decision.outcome;
        sqlx::query(RECORD_OUTCOME)
            .bind(key.namespace())
            .bind(report_id)
            .bind(outcome.action.as_str())
            .bind(&outcome.session_id)
            .bind(outcome.retry_fresh)
            .bind(outcome.cause.map_or("", ResumeFailureCause::as_str))
            .execute(&mut *conn)
            .await
            .map_err(lite)?;
    }
    Ok(ReportReply::Applied(decision.outcome))
}

async fn forget(
    conn: &mut SqliteConnection,
    key: &SessionKey,
    fate: TranscriptFate,
    now: DateTime<Utc>,
) -> Result<Removed, StoreError> {
    let forgotten: Option<SessionRecord> = sqlx::query_as(FORGET)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .fetch_optional(&mut *conn)
        .await
        .map_err(lite)?;
    let Some(forgotten) = forgotten else {
        return Ok(Removed::default());
    };
    let row = SessionRow::try_from(forgotten)?;
    let session_id = row.session_id.clone();
    tombstone::write(conn, key, &Tombstone::of_removal(&row, TombstoneReason::Forgotten, now)).await?;
    let event = HistoryEvent::of_removal(&session_id, HistoryKind::Forgotten, now);
    history::append(conn, key, &event, None).await?;
    Ok(Removed {
        rows: 1,
        transcripts: transcript_lifecycle::cascade(conn, key.namespace(), &session_id, fate).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lists_become_json_arrays() {
        assert_eq!(json_array(&[]).unwrap(), "[]");
        assert_eq!(json_array(&["a".into(), "b\"c".into()]).unwrap(), r#"["a","b\"c"]"#);
    }

    /// An acquire timeout of 2^31 ms or more (`30days`, which validation accepts) made sqlx panic
    /// while connecting.
    #[tokio::test]
    async fn an_acquire_timeout_past_sqlites_int_milliseconds_connects_without_a_panic() {
        use sqlx::{ConnectOptions, Connection};
        let dir = tempfile::tempdir().expect("temp dir");
        for days in [24, 25, 30, 365 * 100] {
            let timeout = Duration::from_secs(days * 24 * 3600);
            let options = SqliteStore::connect_options(&dir.path().join("t.sqlite3"), timeout).create_if_missing(true);
            let conn = options.connect().await.expect("connects");
            conn.close().await.expect("closes");
        }
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
}
