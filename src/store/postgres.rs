//! The production store: Postgres through a sqlx pool. Every statement is a `&'static str` here
//! and nowhere else. Compare-and-set lives in SQL: a report decided on the row claims its report
//! id, then locks the row (`FOR UPDATE`) for the length of one short transaction — the same order
//! as a stored result's one statement, so concurrent reports queue instead of deadlocking; Get's
//! expiry deletes only the row it read, and sweeps delete bounded batches with `SKIP LOCKED`, so
//! replicas sweeping at once never delete a row twice.
//!
//! Every operation is one self-contained transaction on one connection ([`Leased`]): `BEGIN` with
//! this process's lock and statement timeouts as `SET LOCAL` (so they hold through a pooler in
//! transaction mode), unnamed statements only (a named prepared statement would outlive the
//! transaction on a pooled server connection that another client then gets), then `COMMIT`. A
//! connection whose operation did not commit — an error, a timeout, a caller that gave up — is
//! closed, never handed to the next call in an unknown state; a read-only error also retires
//! every connection opened before it (the address now leads to a standby). A transcript append is
//! the exception: one autocommit statement that sets its own lock timeout ([`transcript`]).

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row};

mod group_commit;
mod history;

/// A row a Get found expired, to delete as read: the key, the row, its transcripts' fate and the
/// Get's time (the tombstone's).
type FoundExpired = (SessionKey, SessionRow, TranscriptFate, DateTime<Utc>);
mod tombstone;
mod transcript;
mod transcript_lifecycle;

use self::group_commit::{BatchReply, PendingReport, ReportWork};
use self::history::history_from_gone;
use self::tombstone::tombstone_from_gone;
use super::coalesce::Coalescer;
use super::error::{context, from_migrate, from_sqlx};
use super::{
    AgentSelector, BatchStats, ExpiryRule, Found, PoolStats, Removed, ReportReply, SessionStore, StoreError, StoreKind,
    StoredReport,
};
use crate::domain::{
    Binding, HistoryEvent, ResumeFailureCause, RowEffect, RowReport, SessionKey, SessionRow, StoreResult, Tombstone,
    TranscriptFate,
};

/// Connection settings of the Postgres store.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    pub url: String,
    pub max_connections: u32,
    /// Longest wait for a pooled connection (including connecting): past it a call is `Unavailable`.
    pub acquire_timeout: Duration,
    /// Longest wait for a row lock another session holds (`lock_timeout`): past it `Unavailable`.
    pub lock_timeout: Duration,
    /// Longest run of one statement (`statement_timeout`): past it `Unavailable`.
    pub statement_timeout: Duration,
}

impl PostgresSettings {
    /// The defaults of `--db-max-connections`, `--db-acquire-timeout`, `--db-lock-timeout` and
    /// `--db-statement-timeout`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresSettings {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(1),
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// `BEGIN` plus the `SET LOCAL`s of this process's timeouts: one round trip.
    begin: Arc<str>,
    /// The same for a batch's transaction, with a lock timeout of 1 ms: a batch never waits for a
    /// lock another transaction holds (its reports go back to their callers instead).
    begin_without_waiting: Arc<str>,
    /// The `lock_timeout` of `begin`, in ms, for a statement that is its own transaction and sets
    /// it itself (a transcript append).
    lock_timeout_ms: i64,
    /// The longest an operation may take from acquire to commit, even when the server stops
    /// answering (a hung node: no server-side timeout fires there).
    operation_timeout: Duration,
    /// Connections opened before this instant are closed instead of used, and operations that
    /// started before it give up (set when the node behind the address turned read-only or
    /// stopped answering: the address that led to the primary now leads elsewhere).
    retire_before: Arc<tokio::sync::watch::Sender<Option<Instant>>>,
    /// Set by the readiness check while this host's clock is more than [`MAX_CLOCK_SKEW`] off the
    /// database's: what it says, refused to every call until a check finds the clocks agree.
    clock_off: Arc<std::sync::RwLock<Option<Arc<str>>>>,
    /// Concurrent lookups, answered by one transaction per batch.
    loads: Arc<Coalescer<SessionKey, Found>>,
    /// Concurrent reports, applied by one transaction per batch ([`group_commit`]).
    reports: Arc<Coalescer<PendingReport, BatchReply>>,
    /// Expired rows found by concurrent Gets, deleted by one statement per batch.
    expired: Arc<Coalescer<FoundExpired, Removed>>,
    /// The node the readiness check last reached (see [`PostgresStore::note_node`]).
    node: Arc<std::sync::Mutex<Option<String>>>,
}

/// How many batches of loads run at once, and how many keys one batch answers at most. Two batches
/// at once keep both the database's cores and the connection pool busy while each batch spreads one
/// transaction's round trips over every call that was waiting; four made smaller batches and fewer
/// calls/s (BENCHMARKS.md). While Postgres is down a batch waits out the acquire timeout, and the
/// calls queued behind it fail with it (`Coalescer`), so none waits out two.
const LOAD_BATCHES_IN_FLIGHT: usize = 2;
const MAX_LOAD_BATCH: usize = 128;
/// The same for reports: each batch is one transaction holding its keys' locks until it commits.
const REPORT_BATCHES_IN_FLIGHT: usize = 2;
const MAX_REPORT_BATCH: usize = 128;

/// How far this host's clock may be from the database's. Every replica stamps `last_used_at` with
/// its own clock and judges expiry by it: a clock ahead by the skew would keep rows that long past
/// their TTL (and expire other replicas' rows early); one behind, the reverse. NTP keeps hosts
/// within milliseconds; 5 s off is a broken clock, not jitter.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Who asks for a connection: a call, a batch of calls (which never waits for a lock), or the
/// readiness check (which also judges the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Call,
    Batch,
    Readiness,
}

/// One operation's connection, inside the transaction [`PostgresStore::lease`] began. Committed,
/// it goes back to the pool; dropped uncommitted (an error, or a caller that gave up mid-statement)
/// it is closed at once, so no call ever waits behind another's abandoned statement.
struct Leased {
    /// Always `Some` until dropped: `Drop` takes it out to close it.
    conn: Option<PoolConnection<Postgres>>,
    committed: bool,
}

impl Leased {
    fn conn(&mut self) -> Result<&mut PgConnection, StoreError> {
        self.conn
            .as_deref_mut()
            .ok_or_else(|| StoreError::Other("the operation's connection is gone".into()))
    }

    async fn commit(mut self, store: &PostgresStore) -> Result<(), StoreError> {
        sqlx::raw_sql("COMMIT")
            .execute(self.conn()?)
            .await
            .map_err(|e| store.fail(e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        if !self.committed
            && let Some(conn) = self.conn.take()
        {
            // Out of the pool at once (its slot is free for the next call), and the socket closed:
            // the server ends the statement and rolls the transaction back.
            drop(conn.detach());
        }
    }
}

/// Why no connection could be had: the pool only says it timed out, so connect once directly
/// to learn the cause (refused, unknown host, bad password). Used off the hot path only.
async fn explain(pool: &PgPool, err: StoreError) -> StoreError {
    if !matches!(err.sqlx(), Some(sqlx::Error::PoolTimedOut)) {
        return err;
    }
    let options = pool.connect_options();
    let timeout = pool.options().get_acquire_timeout();
    match tokio::time::timeout(
        timeout,
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
    )
    .await
    {
        Ok(Err(cause)) => StoreError::Unavailable(context("cannot connect to postgres", cause)),
        Err(_) => StoreError::Unavailable(format!("cannot connect to postgres within {timeout:?}").into()),
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            err
        }
    }
}

/// SQLSTATEs that mean "not now": connection exceptions (08), insufficient resources (53),
/// operator intervention such as shutdown or "cannot connect now" (57P), our own lock and
/// statement timeouts (55P03 lock_not_available, 57014 query_canceled), and a node that is
/// read-only (25006: a standby, or a primary being demoted).
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "55P03" | "57014" | READ_ONLY)
}

/// read_only_sql_transaction.
const READ_ONLY: &str = "25006";

/// A statement gave up waiting for a lock (55P03 lock_not_available: our `lock_timeout`).
fn waited_for_a_lock(err: &StoreError) -> bool {
    matches!(err.sqlx(), Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03"))
}

/// The error of a statement sent on a connection that was already gone: the socket is closed, or
/// the backend was terminated (57P01 admin shutdown on a restart) or lost (08xxx).
fn is_dead_connection(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

fn pg(err: sqlx::Error) -> StoreError {
    from_sqlx(err, transient_sqlstate)
}

fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    // An older replica keeps serving a database that a newer one migrated.
    migrator.set_ignore_missing(true);
    migrator
}

impl PostgresStore {
    /// Builds the pool without connecting: connections are made on first use, so `serve` starts
    /// (not ready) while Postgres is down. Fails only on a malformed URL.
    pub fn connect_lazy(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let options: PgConnectOptions = settings
            .url
            .parse()
            .map_err(|e| StoreError::Other(context("invalid database url", e)))?;
        // No `extra_float_digits` startup parameter (no float is stored): PgBouncer refuses
        // unknown startup parameters unless told to ignore them.
        let options = options.application_name("sessionkeeper").extra_float_digits(None);
        let retire_before = Arc::new(tokio::sync::watch::Sender::new(None::<Instant>));
        let retired = retire_before.subscribe();
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            // No ping before use (sqlx's default is one per call: a second round trip). The
            // operation's own BEGIN is the test: a connection found dead there is replaced
            // (`lease_as`), and one whose BEGIN goes unanswered is judged there, where the
            // readiness check can tell a hung node from a slow call. A ping in the pool would hang
            // first, out of that judgement's sight.
            .test_before_acquire(false)
            .before_acquire(move |_conn, meta| {
                let retired = *retired.borrow();
                Box::pin(async move {
                    let opened = Instant::now().checked_sub(meta.age);
                    Ok(!matches!((retired, opened), (Some(retired), Some(opened)) if opened < retired))
                })
            })
            .connect_lazy_with(options);
        let begin = |lock_timeout: Duration| {
            format!(
                "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
                lock_timeout.as_millis().max(1),
                settings.statement_timeout.as_millis().max(1)
            )
        };
        Ok(PostgresStore {
            pool,
            begin: begin(settings.lock_timeout).into(),
            begin_without_waiting: begin(Duration::from_millis(1)).into(),
            // Postgres takes at most i32::MAX ms.
            lock_timeout_ms: i64::try_from(settings.lock_timeout.as_millis().clamp(1, i32::MAX as u128)).unwrap_or(1),
            operation_timeout: settings.acquire_timeout + settings.statement_timeout + Duration::from_secs(1),
            retire_before,
            clock_off: Arc::default(),
            loads: Arc::new(Coalescer::new(LOAD_BATCHES_IN_FLIGHT, MAX_LOAD_BATCH)),
            reports: Arc::new(Coalescer::new(REPORT_BATCHES_IN_FLIGHT, MAX_REPORT_BATCH)),
            expired: Arc::new(Coalescer::new(LOAD_BATCHES_IN_FLIGHT, MAX_LOAD_BATCH)),
            node: Arc::default(),
        })
    }

    /// Compares this host's clock with the database's (`clock_timestamp()`), allowing for the
    /// round trip; past [`MAX_CLOCK_SKEW`] every call is refused until the clocks agree again.
    async fn check_clock(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let before = Utc::now();
        let database: DateTime<Utc> = sqlx::query_scalar(DATABASE_CLOCK)
            .persistent(false)
            .fetch_one(conn)
            .await
            .map_err(|e| self.fail(e))?;
        let after = Utc::now();
        let round_trip = (after - before).abs();
        let here = before + (after - before) / 2;
        let skew = here - database;
        let allowed = chrono::TimeDelta::from_std(MAX_CLOCK_SKEW).unwrap_or(chrono::TimeDelta::MAX) + round_trip / 2;
        let verdict = (skew.abs() > allowed).then(|| {
            let (ahead, by) = if skew > chrono::TimeDelta::zero() {
                ("ahead of", skew)
            } else {
                ("behind", -skew)
            };
            format!(
                "this host's clock is {:.1} s {ahead} the database's (at most {} s allowed): fix its time \
                 synchronisation (NTP); every call is refused until then",
                by.as_seconds_f64(),
                MAX_CLOCK_SKEW.as_secs()
            )
        });
        let mut off = self.clock_off.write().unwrap_or_else(|e| e.into_inner());
        match (&*off, &verdict) {
            (None, Some(what)) => tracing::warn!(error = %what, "clock skew: refusing calls"),
            (Some(_), None) => tracing::info!("clock skew resolved: this host's clock agrees with the database's"),
            _ => {}
        }
        *off = verdict.map(Arc::from);
        drop(off);
        self.refused_for_clock()
    }

    /// The clock-skew refusal in force, if any.
    fn refused_for_clock(&self) -> Result<(), StoreError> {
        match &*self.clock_off.read().unwrap_or_else(|e| e.into_inner()) {
            Some(what) => Err(StoreError::ClockSkew(what.to_string())),
            None => Ok(()),
        }
    }

    /// Maps a statement's error; a read-only node retires every connection opened until now.
    fn fail(&self, err: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &err
            && db.code().as_deref() == Some(READ_ONLY)
        {
            self.retire_connections_opened_until_now();
        }
        pg(err)
    }

    /// The node behind the address is not the one the pooled connections were opened to (it is
    /// read-only, or it stopped answering): every connection opened until now is closed instead
    /// of used, so calls move to whatever the address leads to now.
    fn retire_connections_opened_until_now(&self) {
        self.retire_before.send_replace(Some(Instant::now()));
    }

    /// A connection inside a fresh transaction. Getting none is always `Unavailable` (the pool
    /// timed out, the server refused or is unreachable, a proxy in front of it hung up). A pooled
    /// connection that turns out dead at `BEGIN` (Postgres restarted while it sat in the pool) is
    /// replaced, bounded by the pool size and the acquire timeout: a call never fails for a
    /// connection that died before it started.
    async fn lease(&self) -> Result<Leased, StoreError> {
        self.lease_for(Caller::Call).await
    }

    /// [`PostgresStore::lease`] for a call or for a batch.
    async fn lease_for(&self, caller: Caller) -> Result<Leased, StoreError> {
        self.refused_for_clock()?;
        self.lease_as(caller).await
    }

    /// [`PostgresStore::lease`]; the readiness check's lease also judges the node: a pooled
    /// connection whose BEGIN goes unanswered for the acquire timeout means the node hung, and
    /// every connection opened before is retired (a call's own slow BEGIN only fails that call,
    /// so a burst of load never empties the pool).
    async fn lease_as(&self, caller: Caller) -> Result<Leased, StoreError> {
        let options = self.pool.options();
        let attempts = options.get_max_connections() + 1;
        let deadline = tokio::time::Instant::now() + options.get_acquire_timeout();
        let mut attempt = 1;
        loop {
            let acquire_timeout = options.get_acquire_timeout();
            let mut leased = self.acquire().await?;
            // A pooler in session mode accepts the login and queues the first statement until it
            // has a server connection: BEGIN is still part of getting a usable connection.
            let statement = match caller {
                Caller::Batch => self.begin_without_waiting.clone(),
                Caller::Call | Caller::Readiness => self.begin.clone(),
            };
            let begin = sqlx::raw_sql(AssertSqlSafe(statement)).execute(leased.conn()?);
            let Ok(begun) = tokio::time::timeout(acquire_timeout, begin).await else {
                if caller == Caller::Readiness {
                    self.retire_connections_opened_until_now();
                }
                return Err(StoreError::Unavailable(
                    format!("postgres did not begin a transaction within {acquire_timeout:?}").into(),
                ));
            };
            match begun {
                Ok(_) => return Ok(leased),
                Err(e) if attempt < attempts && is_dead_connection(&e) && tokio::time::Instant::now() < deadline => {
                    attempt += 1;
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// A pooled connection, not yet in a transaction: dropped before it is marked committed, it is
    /// closed. Getting none is always `Unavailable`.
    async fn acquire(&self) -> Result<Leased, StoreError> {
        // The pool's own timeout does not cover a connect that hangs after the TCP handshake (a
        // pooler queueing the login, a server that stopped answering): bound it here too.
        let acquire_timeout = self.pool.options().get_acquire_timeout();
        let conn = match tokio::time::timeout(acquire_timeout, self.pool.acquire()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e @ sqlx::Error::PoolTimedOut)) => return Err(pg(e)),
            Ok(Err(e)) => return Err(StoreError::Unavailable(context("cannot connect to postgres", e))),
            Err(_) => return Err(pg(sqlx::Error::PoolTimedOut)),
        };
        Ok(Leased {
            conn: Some(conn),
            committed: false,
        })
    }

    /// Runs one operation within [`PostgresStore::operation_timeout`]; past it the operation is
    /// dropped (its connection closed) and the call is `Unavailable`.
    async fn bounded<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let mut retired = self.retire_before.subscribe();
        let node_changed = async move {
            let _ = retired.wait_for(|at| at.is_some_and(|at| at > started)).await;
        };
        tokio::select! {
            finished = tokio::time::timeout(self.operation_timeout, operation) => finished.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    format!("postgres did not answer within {:?}", self.operation_timeout).into(),
                ))
            }),
            // Its connection most likely leads to the node that hung or turned read-only: give
            // up now rather than at the timeout (the caller retries on a fresh connection).
            () = node_changed => Err(StoreError::Unavailable(
                "the database node changed while this call was running".into(),
            )),
        }
    }

    /// When the readiness check reaches another node than last time, the address now leads
    /// elsewhere (a failover, a repointed name, a restart): every connection opened until now leads
    /// to the old node and is retired, and the calls still running on them end now. Without this, a
    /// call stuck on a primary that hung silently waits for its own bound whenever the pool had no
    /// idle connection for the readiness check to find hung.
    fn note_node(&self, node: String) {
        let mut last = self.node.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = last.as_deref()
            && previous != node
        {
            tracing::warn!(from = %previous, to = %node, "the database address leads to another node now; connections to the old one are retired");
            self.retire_connections_opened_until_now();
        }
        *last = Some(node);
    }

    /// The readiness check's questions on its connection: the schema version (None when there is
    /// no migrations table yet), and whether the node takes writes (a read-only one retires every
    /// connection opened until now and is an error).
    async fn readiness_statements(&self, conn: &mut PgConnection) -> Result<Option<i64>, StoreError> {
        let found: i64 = match sqlx::query_scalar(SCHEMA_VERSION)
            .persistent(false)
            .fetch_one(&mut *conn)
            .await
        {
            Ok(version) => version,
            // 42P01: no migrations table yet.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        let (read_only, node): (bool, String) = sqlx::query_as(READ_ONLY_AND_NODE)
            .persistent(false)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.fail(e))?;
        self.note_node(node);
        if read_only {
            self.retire_connections_opened_until_now();
            return Err(StoreError::Unavailable(
                "postgres is read-only here (a standby, or a demoted primary)".into(),
            ));
        }
        Ok(Some(found))
    }

    /// The rows of `keys`, in their order: a lone key by its primary key, several with one join
    /// against their arrays; then, in the same transaction and only when some key has no row,
    /// those keys' tombstones the same way.
    async fn lookup_batch(&self, keys: Vec<SessionKey>) -> Result<Vec<Found>, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let mut found: Vec<Found> = keys.iter().map(|_| Found::default()).collect();
            if let [key] = keys.as_slice() {
                let record: Option<SessionRecord> = sqlx::query_as(SELECT_SESSION)
                    .persistent(false)
                    .bind(key.namespace())
                    .bind(key.agent())
                    .bind(key.conversation())
                    .fetch_optional(tx.conn()?)
                    .await
                    .map_err(|e| self.fail(e))?;
                found[0].row = record.map(|record| record.into_row(key));
            } else {
                let records: Vec<NumberedRecord> = sqlx::query_as(SELECT_SESSIONS)
                    .persistent(false)
                    .bind(keys.iter().map(SessionKey::namespace).collect::<Vec<_>>())
                    .bind(keys.iter().map(SessionKey::agent).collect::<Vec<_>>())
                    .bind(keys.iter().map(SessionKey::conversation).collect::<Vec<_>>())
                    .fetch_all(tx.conn()?)
                    .await
                    .map_err(|e| self.fail(e))?;
                for numbered in records {
                    let at = ordinal_index(numbered.ordinal, keys.len())?;
                    found[at].row = Some(numbered.record.into_row(&keys[at]));
                }
            }
            let rowless: Vec<usize> = (0..keys.len()).filter(|&at| found[at].row.is_none()).collect();
            if !rowless.is_empty() {
                let asked: Vec<&SessionKey> = rowless.iter().map(|&at| &keys[at]).collect();
                let tombstones = tombstone::read_many(tx.conn()?, &asked)
                    .await
                    .map_err(|e| self.fail(e))?;
                for (ordinal, record) in tombstones {
                    let at = rowless[ordinal_index(ordinal, rowless.len())?];
                    found[at].tombstone = Some(record.into_tombstone()?);
                }
            }
            tx.commit(self).await?;
            Ok(found)
        })
        .await
    }

    /// Queues one report for the next batch of reports; applies it alone when the batch leaves it
    /// to its caller.
    async fn report(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        work: ReportWork,
    ) -> Result<ReportReply, StoreError> {
        let pending = PendingReport {
            key: key.clone(),
            report_id: report_id.map(str::to_owned),
            now,
            work,
        };
        let store = self.clone();
        let answer = self
            .reports
            .call(pending.clone(), move |items| {
                let store = store.clone();
                async move { store.report_batch(items).await }
            })
            .await?;
        match answer {
            BatchReply::Done(reply) => reply,
            BatchReply::Alone => self.report_alone(&pending, Caller::Call).await,
        }
    }

    /// A batch's transaction never waits for a lock ([`Caller::Batch`]): a lone report runs its own
    /// short path there, two or more share one transaction, and a report that would have to wait
    /// for a lock goes back to its caller, whose own path waits only as long as the caller does.
    /// (Holding the batch's slot while the database works is what lets concurrent reports queue
    /// and form the next batch.) Every report of a batch that failed for a reason other than the
    /// database being unable to serve (which would fail each of them alone as well) goes back to its
    /// caller too: one report the database refuses never fails the others.
    async fn report_batch(&self, items: Vec<PendingReport>) -> Result<Vec<BatchReply>, StoreError> {
        let answers = if let [item] = items.as_slice() {
            self.report_alone(item, Caller::Batch)
                .await
                .map(|reply| vec![BatchReply::Done(Ok(reply))])
        } else {
            group_commit::apply_batch(self, &items).await
        };
        match answers {
            Ok(answers) => Ok(answers),
            Err(e) if waited_for_a_lock(&e) => Ok(items.iter().map(|_| BatchReply::Alone).collect()),
            Err(e) if e.is_unavailable() || matches!(e, StoreError::Conflict(_)) => Err(e),
            Err(e) => {
                if items.len() > 1 {
                    tracing::warn!(error = %e, reports = items.len(), "a batch of reports failed; each is applied alone");
                }
                Ok(items.iter().map(|_| BatchReply::Alone).collect())
            }
        }
    }

    async fn report_alone(&self, item: &PendingReport, caller: Caller) -> Result<ReportReply, StoreError> {
        let (key, report_id, now) = (&item.key, item.report_id.as_deref(), item.now);
        match &item.work {
            ReportWork::Store(result) => self.store_result_alone(key, report_id, now, result, caller).await,
            ReportWork::OnRow(report) => self.report_on_row_alone(key, report_id, now, report, caller).await,
        }
    }

    /// A completed run's report alone: one statement claims the report id and writes the row.
    async fn store_result_alone(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        result: &StoreResult,
        caller: Caller,
    ) -> Result<ReportReply, StoreError> {
        let (row, outcome) = (&result.row, &result.outcome);
        self.bounded(async {
            let mut tx = self.lease_for(caller).await?;
            let logged = [(key, HistoryEvent::of_store(result, now), result.history_events)];
            let logged = history::Append::new(&logged);
            let Some(report_id) = report_id else {
                upsert(tx.conn()?, key, row, &logged).await.map_err(|e| self.fail(e))?;
                tx.commit(self).await?;
                return Ok(ReportReply::Applied(outcome.clone()));
            };
            let query = sqlx::query(CLAIM_REPORT_AND_UPSERT_SESSION.as_str())
                .persistent(false)
                .bind(key.namespace())
                .bind(key.agent())
                .bind(key.conversation())
                .bind(&row.session_id)
                .bind(&row.binding.provider)
                .bind(&row.binding.host)
                .bind(&row.binding.config_dir)
                .bind(&row.binding.cwd)
                .bind(row.last_used_at)
                .bind(i32::try_from(row.failure_count).unwrap_or(i32::MAX))
                .bind(report_id)
                .bind(outcome.class.as_str())
                .bind(outcome.action.as_str())
                .bind(outcome.retry_fresh)
                .bind(now);
            let claimed: bool = logged
                .bind(query)
                .fetch_one(tx.conn()?)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| self.fail(e))?;
            let reply = if claimed {
                ReportReply::Applied(outcome.clone())
            } else {
                recorded_reply(self, tx.conn()?, key, report_id).await?
            };
            tx.commit(self).await?;
            Ok(reply)
        })
        .await
    }

    /// A failed run's report alone: claim, lock the row, decide, apply, record.
    async fn report_on_row_alone(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        report: &RowReport,
        caller: Caller,
    ) -> Result<ReportReply, StoreError> {
        self.bounded(async {
            // The report id's claim, then the row's lock, in that order (as `store_result`'s one
            // statement), so concurrent reports queue instead of deadlocking.
            let mut tx = self.lease_for(caller).await?;
            if let Some(report_id) = report_id {
                // Waits while another transaction holds the same id uncommitted; claims nothing
                // when it committed, and then its record is what this report answers.
                let claimed = sqlx::query(CLAIM_REPORT)
                    .persistent(false)
                    .bind(key.namespace())
                    .bind(report_id)
                    .bind(key.agent())
                    .bind(key.conversation())
                    .bind(report.class.as_str())
                    .bind(now)
                    .execute(tx.conn()?)
                    .await
                    .map_err(|e| self.fail(e))?;
                if claimed.rows_affected() == 0 {
                    let reply = recorded_reply(self, tx.conn()?, key, report_id).await?;
                    tx.commit(self).await?;
                    return Ok(reply);
                }
            }
            let record: Option<SessionRecord> = sqlx::query_as(SELECT_SESSION_FOR_UPDATE)
                .persistent(false)
                .bind(key.namespace())
                .bind(key.agent())
                .bind(key.conversation())
                .fetch_optional(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            let row = record.map(|record| record.into_row(key));
            let mut decision = report.decide(row.as_ref());
            let mut removed = false;
            match &decision.effect {
                RowEffect::None => {}
                RowEffect::Clear { expected_session_id } => {
                    let tombstones: Vec<(&SessionKey, Tombstone)> = row
                        .iter()
                        .map(|row| (key, Tombstone::of_report(report, row, now)))
                        .collect();
                    let query = sqlx::query(CLEAR_IF_CURRENT.as_str())
                        .persistent(false)
                        .bind(key.namespace())
                        .bind(key.agent())
                        .bind(key.conversation())
                        .bind(expected_session_id);
                    let cleared: i64 = tombstone::bind_written(query, &tombstones)
                        .fetch_one(tx.conn()?)
                        .await
                        .and_then(|row| row.try_get(0))
                        .map_err(|e| self.fail(e))?;
                    if cleared > 0 {
                        removed = true;
                        let gone = [(key.namespace(), expected_session_id.as_str(), report.transcript_fate)];
                        let deleted = transcript_lifecycle::cascade_each(tx.conn()?, &gone)
                            .await
                            .map_err(|e| self.fail(e))?;
                        decision.outcome.transcripts_deleted = deleted.iter().sum();
                    }
                }
                RowEffect::CountFailure {
                    expected_session_id,
                    failure_count,
                } => {
                    sqlx::query(COUNT_FAILURE_IF_CURRENT)
                        .persistent(false)
                        .bind(key.namespace())
                        .bind(key.agent())
                        .bind(key.conversation())
                        .bind(expected_session_id)
                        .bind(i32::try_from(*failure_count).unwrap_or(i32::MAX))
                        .execute(tx.conn()?)
                        .await
                        .map_err(|e| self.fail(e))?;
                }
            }
            let event = [(
                key,
                HistoryEvent::of_report(report, row.as_ref(), &decision, removed, now),
                report.history_events,
            )];
            let outcome = &decision.outcome;
            let query = sqlx::query(RECORD_OUTCOME.as_str())
                .persistent(false)
                .bind(key.namespace())
                .bind(report_id)
                .bind(outcome.action.as_str())
                .bind(&outcome.session_id)
                .bind(outcome.retry_fresh);
            history::Append::new(&event)
                .bind(query)
                .bind(outcome.cause.map_or("", ResumeFailureCause::as_str))
                .execute(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(ReportReply::Applied(decision.outcome))
        })
        .await
    }

    /// Deletes the expired rows Gets found, each only while it is still what the Get read: a lone
    /// one by its primary key, several in one statement. That statement skips a row another
    /// transaction holds (a report deciding on it): it never waits while holding other rows, so it
    /// cannot deadlock with a batch of reports, and the row is left for the next Get or the sweep.
    async fn delete_expired_found(&self, found: Vec<FoundExpired>) -> Result<Vec<Removed>, StoreError> {
        let rows: Vec<(SessionKey, SessionRow)> = found.iter().map(|(k, r, _, _)| (k.clone(), r.clone())).collect();
        // The tombstones' time: the batch's latest Get (they differ by the batch's wait at most).
        let now = found
            .iter()
            .map(|(_, _, _, now)| *now)
            .max()
            .unwrap_or(DateTime::UNIX_EPOCH);
        self.bounded(async {
            let mut tx = self.lease().await?;
            let deleted = if let [(key, row)] = rows.as_slice() {
                let done: i64 = sqlx::query_scalar(DELETE_IF_UNCHANGED)
                    .persistent(false)
                    .bind(key.namespace())
                    .bind(key.agent())
                    .bind(key.conversation())
                    .bind(&row.session_id)
                    .bind(row.last_used_at)
                    .bind(now)
                    .fetch_one(tx.conn()?)
                    .await
                    .map_err(|e| self.fail(e))?;
                vec![done > 0]
            } else {
                let gone: Vec<(String, String, String)> = sqlx::query_as(DELETE_ALL_IF_UNCHANGED)
                    .persistent(false)
                    .bind(rows.iter().map(|(k, _)| k.namespace()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|(k, _)| k.agent()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|(k, _)| k.conversation()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|(_, r)| r.session_id.as_str()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|(_, r)| r.last_used_at).collect::<Vec<_>>())
                    .bind(now)
                    .fetch_all(tx.conn()?)
                    .await
                    .map_err(|e| self.fail(e))?;
                deleted_once(&rows, gone)
            };
            let gone: Vec<(&str, &str, TranscriptFate)> = found
                .iter()
                .zip(&deleted)
                .filter(|(_, deleted)| **deleted)
                .map(|((k, r, fate, _), _)| (k.namespace(), r.session_id.as_str(), *fate))
                .collect();
            let mut transcripts = transcript_lifecycle::cascade_each(tx.conn()?, &gone)
                .await
                .map_err(|e| self.fail(e))?
                .into_iter();
            tx.commit(self).await?;
            Ok(deleted
                .into_iter()
                .map(|deleted| Removed {
                    rows: u64::from(deleted),
                    transcripts: if deleted { transcripts.next().unwrap_or(0) } else { 0 },
                })
                .collect())
        })
        .await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The newest migration this binary carries.
    pub fn latest_migration() -> i64 {
        migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }
}

// `last_used_at` is NULL when it is not a finite time (`infinity`, written by another tool or by
// hand): such a value cannot be decoded as a time; see SessionRecord::into_row.
const SELECT_SESSION: &str = "SELECT session_id, provider, host, config_dir, cwd, \
     CASE WHEN isfinite(last_used_at) THEN last_used_at END AS last_used_at, failure_count \
     FROM session WHERE namespace = $1 AND agent = $2 AND conversation = $3";
// The rows of several keys at once: the arrays are the keys, numbered from 1 in their order.
const SELECT_SESSIONS: &str = "SELECT k.ordinal, s.session_id, s.provider, s.host, s.config_dir, s.cwd, \
     CASE WHEN isfinite(s.last_used_at) THEN s.last_used_at END AS last_used_at, s.failure_count \
     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(namespace, agent, conversation, ordinal) \
     JOIN session s ON s.namespace = k.namespace AND s.agent = k.agent AND s.conversation = k.conversation";
const SELECT_SESSION_FOR_UPDATE: &str = "SELECT session_id, provider, host, config_dir, cwd, \
     CASE WHEN isfinite(last_used_at) THEN last_used_at END AS last_used_at, failure_count \
     FROM session WHERE namespace = $1 AND agent = $2 AND conversation = $3 FOR UPDATE";
// Storing an id for the key deletes its tombstone and appends the history event ($11–$29), in
// the same statement.
static UPSERT_SESSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH removed AS (DELETE FROM tombstone WHERE namespace = $1 AND agent = $2 AND conversation = $3), \
         stored AS (INSERT INTO session \
         (namespace, agent, conversation, session_id, provider, host, config_dir, cwd, last_used_at, failure_count) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (namespace, agent, conversation) DO UPDATE SET \
         session_id = EXCLUDED.session_id, provider = EXCLUDED.provider, host = EXCLUDED.host, \
         config_dir = EXCLUDED.config_dir, cwd = EXCLUDED.cwd, last_used_at = EXCLUDED.last_used_at, \
         failure_count = EXCLUDED.failure_count), {} SELECT (SELECT appended FROM h_appended)",
        history::append_ctes(11, "true")
    )
});
// $6: now, when the tombstone and the history event (expired) are written.
const DELETE_IF_UNCHANGED: &str = concat!(
    "WITH gone AS (DELETE FROM session \
     WHERE namespace = $1 AND agent = $2 AND conversation = $3 AND session_id = $4 \
     AND (last_used_at = $5 OR NOT isfinite(last_used_at)) RETURNING *), ",
    history_from_gone!("expired", "$6"),
    tombstone_from_gone!("expired", "$6"),
    "SELECT count(*) FROM gone"
);
// Several of them at once; a row another transaction holds is skipped, not waited for.
const DELETE_ALL_IF_UNCHANGED: &str = concat!(
    "WITH gone AS (DELETE FROM session WHERE ctid = ANY(ARRAY( \
         SELECT s.ctid FROM session s \
         JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
         AS d(namespace, agent, conversation, session_id, last_used_at) \
         ON s.namespace = d.namespace AND s.agent = d.agent AND s.conversation = d.conversation \
         WHERE s.session_id = d.session_id AND (s.last_used_at = d.last_used_at OR NOT isfinite(s.last_used_at)) \
         FOR UPDATE OF s SKIP LOCKED)) \
     RETURNING *), ",
    history_from_gone!("expired", "$6"),
    tombstone_from_gone!("expired", "$6"),
    "SELECT namespace, agent, conversation FROM gone"
);
// A clear, and the tombstone it leaves ($5–$20) when it deleted the row, in one statement.
static CLEAR_IF_CURRENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH cleared AS (DELETE FROM session \
             WHERE namespace = $1 AND agent = $2 AND conversation = $3 AND session_id = $4 RETURNING 1), \
         {} SELECT count(*) FROM cleared",
        tombstone::written_cte(5, "EXISTS (SELECT 1 FROM cleared)")
    )
});
const COUNT_FAILURE_IF_CURRENT: &str = "UPDATE session SET failure_count = $5 \
     WHERE namespace = $1 AND agent = $2 AND conversation = $3 AND session_id = $4";
// $4: now, when the tombstone and the history event (forgotten) are written.
const FORGET: &str = concat!(
    "WITH gone AS (DELETE FROM session WHERE namespace = $1 AND agent = $2 AND conversation = $3 RETURNING *), ",
    history_from_gone!("forgotten", "$4"),
    tombstone_from_gone!("forgotten", "$4"),
    "SELECT session_id FROM gone"
);
// The claim of a report id by a report decided on the row: the outcome is recorded by
// RECORD_OUTCOME in the same transaction, so no other transaction ever sees the empty action.
const CLAIM_REPORT: &str = "INSERT INTO report \
     (namespace, report_id, agent, conversation, result_class, action, session_id, retry_fresh, created_at) \
     VALUES ($1, $2, $3, $4, $5, '', '', false, $6) ON CONFLICT (namespace, report_id) DO NOTHING";
// A report's outcome, recorded under its report id ($2; NULL records nothing) with its cause ($25),
// and its history event ($6–$24), in one statement.
static RECORD_OUTCOME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH recorded AS (UPDATE report SET action = $3, session_id = $4, retry_fresh = $5, cause = $25 \
             WHERE namespace = $1 AND report_id = $2), {} SELECT (SELECT appended FROM h_appended)",
        history::append_ctes(6, "true")
    )
});
const SELECT_REPORT: &str = "SELECT agent, conversation, result_class, action, session_id, retry_fresh, cause \
     FROM report WHERE namespace = $1 AND report_id = $2";
// $5: now, when the tombstones and the history events (swept) are written.
const DELETE_EXPIRED_OF_AGENT: &str = concat!(
    "WITH gone AS (DELETE FROM session WHERE ctid = ANY(ARRAY( \
         SELECT ctid FROM session \
         WHERE agent = $1 AND (last_used_at < $2 OR last_used_at = 'infinity') AND ($3::text IS NULL OR namespace = $3) \
         LIMIT $4 FOR UPDATE SKIP LOCKED)) \
     AND (last_used_at < $2 OR last_used_at = 'infinity') RETURNING *), ",
    history_from_gone!("swept", "$5"),
    tombstone_from_gone!("swept", "$5"),
    "SELECT namespace, session_id FROM gone"
);
// $5: now, when the tombstones and the history events (swept) are written.
const DELETE_EXPIRED_OF_OTHER_AGENTS: &str = concat!(
    "WITH gone AS (DELETE FROM session WHERE ctid = ANY(ARRAY( \
         SELECT ctid FROM session \
         WHERE agent <> ALL($1::text[]) AND (last_used_at < $2 OR last_used_at = 'infinity') AND ($3::text IS NULL OR namespace = $3) \
         LIMIT $4 FOR UPDATE SKIP LOCKED)) \
     AND (last_used_at < $2 OR last_used_at = 'infinity') RETURNING *), ",
    history_from_gone!("swept", "$5"),
    tombstone_from_gone!("swept", "$5"),
    "SELECT namespace, session_id FROM gone"
);
const DELETE_REPORTS_BEFORE: &str = "DELETE FROM report WHERE ctid = ANY(ARRAY( \
         SELECT ctid FROM report WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))";
// A stored outcome and its report id in one statement: the record is claimed first (the row's
// upsert reads the claim, so it runs after it: the report id's lock before the row's, as in
// report_on_row), and the row is written only when the claim succeeded (a repeat claims nothing
// and changes nothing), with its tombstone deleted and its history event ($16–$34) appended.
static CLAIM_REPORT_AND_UPSERT_SESSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH claim AS ( \
         INSERT INTO report \
         (namespace, report_id, agent, conversation, result_class, action, session_id, retry_fresh, created_at) \
         VALUES ($1, $11, $2, $3, $12, $13, $4, $14, $15) \
         ON CONFLICT (namespace, report_id) DO NOTHING RETURNING 1), \
     removed AS (DELETE FROM tombstone WHERE namespace = $1 AND agent = $2 AND conversation = $3 \
         AND EXISTS (SELECT 1 FROM claim)), \
     stored AS ( \
         INSERT INTO session \
         (namespace, agent, conversation, session_id, provider, host, config_dir, cwd, last_used_at, failure_count) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM claim) \
         ON CONFLICT (namespace, agent, conversation) DO UPDATE SET \
         session_id = EXCLUDED.session_id, provider = EXCLUDED.provider, host = EXCLUDED.host, \
         config_dir = EXCLUDED.config_dir, cwd = EXCLUDED.cwd, last_used_at = EXCLUDED.last_used_at, \
         failure_count = EXCLUDED.failure_count RETURNING 1), \
     {} SELECT EXISTS (SELECT 1 FROM claim), (SELECT appended FROM h_appended)",
        history::append_ctes(16, "EXISTS (SELECT 1 FROM claim)")
    )
});
const SCHEMA_VERSION: &str = "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success";
// The database's clock now (not the transaction's start, which `now()` gives).
const DATABASE_CLOCK: &str = "SELECT clock_timestamp()";
// A standby (or a primary being demoted) answers reads but no write: not ready.
// And which node answers: its address and port as the server sees them, and when its postmaster
// started (a promoted standby, another host behind the same name or a restarted server all differ).
const READ_ONLY_AND_NODE: &str = "SELECT current_setting('transaction_read_only') = 'on', \
     coalesce(host(inet_server_addr()), 'local socket') || ':' || coalesce(inet_server_port()::text, '-') \
     || ' started ' || pg_postmaster_start_time()::text";

/// The session row as Postgres returns it.
#[derive(sqlx::FromRow)]
struct SessionRecord {
    session_id: String,
    provider: String,
    host: String,
    config_dir: String,
    cwd: String,
    /// None when the stored value is not a finite time.
    last_used_at: Option<DateTime<Utc>>,
    failure_count: i32,
}

/// A row of [`SELECT_SESSIONS`]: which key (numbered from 1) it answers.
#[derive(sqlx::FromRow)]
struct NumberedRecord {
    ordinal: i64,
    #[sqlx(flatten)]
    record: SessionRecord,
}

/// The index of a batched query's answer numbered `ordinal` (from 1) among `len` asked.
fn ordinal_index(ordinal: i64, len: usize) -> Result<usize, StoreError> {
    usize::try_from(ordinal - 1)
        .ok()
        .filter(|at| *at < len)
        .ok_or_else(|| StoreError::Other(format!("a batched read returned ordinal {ordinal}").into()))
}

impl SessionRecord {
    /// The row; one whose `last_used_at` is not a finite time reads as last used at the Unix epoch,
    /// so the lifecycle finds it expired and deletes it (the sweep deletes such rows too), with a
    /// WARN naming the key: it can only have been written outside sessionkeeper.
    fn into_row(self, key: &SessionKey) -> SessionRow {
        let last_used_at = self.last_used_at.unwrap_or_else(|| {
            tracing::warn!(
                %key,
                "stored row has a last_used_at that is not a finite time (infinity); treated as expired"
            );
            DateTime::UNIX_EPOCH
        });
        SessionRow {
            session_id: self.session_id,
            binding: Binding {
                provider: self.provider,
                host: self.host,
                config_dir: self.config_dir,
                cwd: self.cwd,
            },
            last_used_at,
            failure_count: u32::try_from(self.failure_count).unwrap_or(0),
        }
    }
}

/// Which of `rows` a batched delete deleted, given the keys it returned: a key found expired by
/// several Gets of one batch was deleted once, and the first of them says so.
fn deleted_once(rows: &[(SessionKey, SessionRow)], gone: Vec<(String, String, String)>) -> Vec<bool> {
    let mut gone: std::collections::HashSet<(String, String, String)> = gone.into_iter().collect();
    rows.iter()
        .map(|(k, _)| {
            gone.remove(&(
                k.namespace().to_owned(),
                k.agent().to_owned(),
                k.conversation().to_owned(),
            ))
        })
        .collect()
}

/// The recorded answer to a report id claimed before: replayed for the same key, refused for another.
async fn recorded_reply(
    store: &PostgresStore,
    conn: &mut PgConnection,
    key: &SessionKey,
    report_id: &str,
) -> Result<ReportReply, StoreError> {
    let stored: Option<StoredReport> = sqlx::query_as(SELECT_REPORT)
        .persistent(false)
        .bind(key.namespace())
        .bind(report_id)
        .fetch_optional(conn)
        .await
        .map_err(|e| store.fail(e))?;
    stored
        .ok_or_else(|| StoreError::Other("the report id's record vanished after its claim conflicted".into()))?
        .into_reply(key)
}

/// Stores `row` for `key` (deleting its tombstone) and appends `logged`: one statement.
async fn upsert(
    conn: &mut PgConnection,
    key: &SessionKey,
    row: &SessionRow,
    logged: &history::Append<'_>,
) -> Result<(), sqlx::Error> {
    let query = sqlx::query(UPSERT_SESSION.as_str())
        .persistent(false)
        .bind(key.namespace())
        .bind(key.agent())
        .bind(key.conversation())
        .bind(&row.session_id)
        .bind(&row.binding.provider)
        .bind(&row.binding.host)
        .bind(&row.binding.config_dir)
        .bind(&row.binding.cwd)
        .bind(row.last_used_at)
        .bind(i32::try_from(row.failure_count).unwrap_or(i32::MAX));
    logged.bind(query).execute(conn).await?;
    Ok(())
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    fn batch_stats(&self) -> Vec<BatchStats> {
        vec![
            self.loads.stats("load"),
            self.reports.stats("report"),
            self.expired.stats("expiry_delete"),
        ]
    }

    /// Migrations take Postgres's session-level advisory lock: run them on a direct connection
    /// (or a pooler in session mode), never through a pooler in transaction mode.
    async fn migrate(&self) -> Result<(), StoreError> {
        match migrator().run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(e) => Err(explain(&self.pool, from_migrate(e, transient_sqlstate)).await),
        }
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let checked = self
            .bounded(async {
                let mut tx = self.lease_as(Caller::Readiness).await?;
                // Like its BEGIN, the check's statements judge the node: one that goes unanswered
                // for the acquire timeout means the node hung (the check asks nothing that could
                // wait on a lock or the disk), and every connection opened before is retired, so
                // the calls stuck on them end now rather than at their own bound.
                let answer_within = self.pool.options().get_acquire_timeout();
                let questions = async {
                    let Some(found) = self.readiness_statements(tx.conn()?).await? else {
                        return Ok(None);
                    };
                    Ok::<_, StoreError>(Some((found, self.check_clock(tx.conn()?).await)))
                };
                match tokio::time::timeout(answer_within, questions).await {
                    Ok(Ok(Some((found, clock)))) => {
                        tx.commit(self).await?;
                        clock?;
                        Ok(found)
                    }
                    Ok(Ok(None)) => Ok(0),
                    Ok(Err(e)) => Err(e),
                    Err(_) => {
                        self.retire_connections_opened_until_now();
                        Err(StoreError::Unavailable(
                            format!("postgres did not answer the readiness check within {answer_within:?}").into(),
                        ))
                    }
                }
            })
            .await;
        // Readiness says why no connection could be had (off the hot path: calls do not wait for this).
        let found = match checked {
            Ok(found) => found,
            Err(e) => return Err(explain(&self.pool, e).await),
        };
        let needed = Self::latest_migration();
        if found < needed {
            return Err(StoreError::NotMigrated { found, needed });
        }
        Ok(())
    }

    /// Concurrent lookups are coalesced: one transaction (one query, two when some key has no
    /// row) answers every key waiting.
    async fn lookup(&self, key: &SessionKey) -> Result<Found, StoreError> {
        let store = self.clone();
        self.loads
            .call(key.clone(), move |keys| {
                let store = store.clone();
                async move { store.lookup_batch(keys).await }
            })
            .await
    }

    /// Concurrent expiry deletes found by Gets are coalesced like the loads that found them.
    async fn delete_if_unchanged(
        &self,
        key: &SessionKey,
        row: &SessionRow,
        fate: TranscriptFate,
        now: DateTime<Utc>,
    ) -> Result<Removed, StoreError> {
        let store = self.clone();
        self.expired
            .call((key.clone(), row.clone(), fate, now), move |rows| {
                let store = store.clone();
                async move { store.delete_expired_found(rows).await }
            })
            .await
    }

    /// Concurrent reports are applied in batches ([`group_commit`]).
    async fn store_result(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        result: &StoreResult,
    ) -> Result<ReportReply, StoreError> {
        self.report(key, report_id, now, ReportWork::Store(result.clone()))
            .await
    }

    async fn report_on_row(
        &self,
        key: &SessionKey,
        report_id: Option<&str>,
        now: DateTime<Utc>,
        report: &RowReport,
    ) -> Result<ReportReply, StoreError> {
        self.report(key, report_id, now, ReportWork::OnRow(report.clone()))
            .await
    }

    async fn forget(&self, key: &SessionKey, fate: TranscriptFate, now: DateTime<Utc>) -> Result<Removed, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let forgotten: Option<String> = sqlx::query_scalar(FORGET)
                .persistent(false)
                .bind(key.namespace())
                .bind(key.agent())
                .bind(key.conversation())
                .bind(now)
                .fetch_optional(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            let gone: Vec<(&str, &str, TranscriptFate)> = forgotten
                .iter()
                .map(|id| (key.namespace(), id.as_str(), fate))
                .collect();
            let transcripts = transcript_lifecycle::cascade_each(tx.conn()?, &gone)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(Removed {
                rows: u64::from(forgotten.is_some()),
                transcripts: transcripts.iter().sum(),
            })
        })
        .await
    }

    async fn delete_expired_batch(
        &self,
        rule: &ExpiryRule,
        limit: u32,
        fate: TranscriptFate,
        now: DateTime<Utc>,
    ) -> Result<Removed, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let query = match &rule.agents {
                AgentSelector::Only(agent) => sqlx::query_as(DELETE_EXPIRED_OF_AGENT).bind(agent.as_str()),
                AgentSelector::AllExcept(agents) => {
                    sqlx::query_as(DELETE_EXPIRED_OF_OTHER_AGENTS).bind(agents.as_slice())
                }
            };
            let deleted: Vec<(String, String)> = query
                .persistent(false)
                .bind(rule.cutoff)
                .bind(rule.namespace.as_deref())
                .bind(i64::from(limit))
                .bind(now)
                .fetch_all(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            let gone: Vec<(&str, &str, TranscriptFate)> =
                deleted.iter().map(|(n, s)| (n.as_str(), s.as_str(), fate)).collect();
            let transcripts = transcript_lifecycle::cascade_each(tx.conn()?, &gone)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(Removed {
                rows: u64::try_from(deleted.len()).unwrap_or(u64::MAX),
                transcripts: transcripts.iter().sum(),
            })
        })
        .await
    }

    async fn history(&self, key: &SessionKey) -> Result<Vec<HistoryEvent>, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let found = history::read(self, tx.conn()?, key).await?;
            tx.commit(self).await?;
            Ok(found)
        })
        .await
    }

    async fn tombstone(&self, key: &SessionKey) -> Result<Option<Tombstone>, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let found = tombstone::read_many(tx.conn()?, &[key])
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            found
                .into_iter()
                .next()
                .map(|(_, record)| record.into_tombstone())
                .transpose()
        })
        .await
    }

    async fn count_expired_tombstones(&self, rule: &ExpiryRule) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let query = match &rule.agents {
                AgentSelector::Only(agent) => {
                    sqlx::query_scalar(tombstone::COUNT_EXPIRED_OF_AGENT).bind(agent.as_str())
                }
                AgentSelector::AllExcept(agents) => {
                    sqlx::query_scalar(tombstone::COUNT_EXPIRED_OF_OTHER_AGENTS).bind(agents.as_slice())
                }
            };
            let counted: i64 = query
                .persistent(false)
                .bind(rule.cutoff)
                .bind(rule.namespace.as_deref())
                .fetch_one(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(u64::try_from(counted).unwrap_or(0))
        })
        .await
    }

    async fn delete_expired_tombstones_batch(&self, rule: &ExpiryRule, limit: u32) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let query = match &rule.agents {
                AgentSelector::Only(agent) => {
                    sqlx::query_scalar(tombstone::DELETE_EXPIRED_OF_AGENT).bind(agent.as_str())
                }
                AgentSelector::AllExcept(agents) => {
                    sqlx::query_scalar(tombstone::DELETE_EXPIRED_OF_OTHER_AGENTS).bind(agents.as_slice())
                }
            };
            let deleted: i64 = query
                .persistent(false)
                .bind(rule.cutoff)
                .bind(rule.namespace.as_deref())
                .bind(i64::from(limit))
                .fetch_one(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(u64::try_from(deleted).unwrap_or(0))
        })
        .await
    }

    async fn count_expired(&self, rule: &ExpiryRule) -> Result<Removed, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let query = match &rule.agents {
                AgentSelector::Only(agent) => {
                    sqlx::query_as(transcript_lifecycle::COUNT_EXPIRED_OF_AGENT).bind(agent.as_str())
                }
                AgentSelector::AllExcept(agents) => {
                    sqlx::query_as(transcript_lifecycle::COUNT_EXPIRED_OF_OTHER_AGENTS).bind(agents.as_slice())
                }
            };
            let (rows, transcripts): (i64, i64) = query
                .persistent(false)
                .bind(rule.cutoff)
                .bind(rule.namespace.as_deref())
                .fetch_one(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(Removed {
                rows: u64::try_from(rows).unwrap_or(0),
                transcripts: u64::try_from(transcripts).unwrap_or(0),
            })
        })
        .await
    }

    async fn delete_reports_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.bounded(async {
            let mut tx = self.lease().await?;
            let done = sqlx::query(DELETE_REPORTS_BEFORE)
                .persistent(false)
                .bind(before)
                .bind(i64::from(limit))
                .execute(tx.conn()?)
                .await
                .map_err(|e| self.fail(e))?;
            tx.commit(self).await?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_a_batched_delete_removed_is_deleted_once_by_the_first_get_that_found_it() {
        let key = |c: &str| SessionKey::new("ns", "agent", c).unwrap();
        let row = SessionRow {
            session_id: "id".into(),
            binding: Binding::default(),
            last_used_at: DateTime::UNIX_EPOCH,
            failure_count: 0,
        };
        let rows = [
            (key("a"), row.clone()),
            (key("b"), row.clone()),
            (key("a"), row.clone()),
            (key("c"), row),
        ];
        let gone = vec![
            ("ns".to_owned(), "agent".to_owned(), "a".to_owned()),
            ("ns".to_owned(), "agent".to_owned(), "c".to_owned()),
        ];
        assert_eq!(deleted_once(&rows, gone), [true, false, false, true]);
    }
}
