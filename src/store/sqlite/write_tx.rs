//! The embedded store's writes and the storage under them: [`WriteTx`], the one way a write
//! transaction runs (a transaction that does not end cleanly closes its connection, so the pool
//! never hands one out mid-transaction), and [`StorageHealth`], which remembers writes refused
//! for lack of space or an I/O error until a write probe succeeds, so readiness can say whether
//! writes work. It owns no SQL of the store's tables.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool};

use super::{lite, primary_code, storage_code};
use crate::store::StoreError;

/// Whether the storage under the file refuses writes: counts the operations that failed for lack
/// of space or an I/O error, and how many of those a successful write probe has answered since.
/// While some are unanswered the readiness check writes to find out (no probe writes otherwise).
#[derive(Debug, Default)]
pub(super) struct StorageHealth {
    failures: AtomicU64,
    answered: AtomicU64,
}

impl StorageHealth {
    /// Records `result`'s failure when the storage caused it.
    pub(super) fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && storage_failure(e)
        {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    /// The failures so far, when some are unanswered (a probe must write).
    pub(super) fn unanswered(&self) -> Option<u64> {
        let failures = self.failures.load(Ordering::SeqCst);
        (failures > self.answered.load(Ordering::SeqCst)).then_some(failures)
    }

    /// A probe that started after `failures` failures wrote: those are answered (a failure
    /// recorded while it ran stays unanswered).
    pub(super) fn answer(&self, failures: u64) {
        self.answered.fetch_max(failures, Ordering::SeqCst);
    }
}

fn storage_failure(err: &StoreError) -> bool {
    err.sqlx().and_then(primary_code).is_some_and(storage_code)
}

/// One write transaction's connection, in `BEGIN IMMEDIATE` from [`WriteTx::begin`]. Committed,
/// the connection goes back to the pool; dropped in any other state (a COMMIT that failed, an
/// error mid-way, a batch whose task ended) it is closed, and SQLite rolls back whatever it held:
/// the pool never hands out a connection inside a transaction.
pub(super) struct WriteTx {
    /// Always `Some` until dropped: `Drop` takes it out to close it.
    conn: Option<PoolConnection<Sqlite>>,
    /// True once the transaction is over (or never began): the connection may be reused.
    ended: bool,
}

impl WriteTx {
    pub(super) async fn begin(pool: &SqlitePool) -> Result<WriteTx, StoreError> {
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

    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_deref_mut()
            .expect("a write transaction's connection until dropped")
    }

    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::raw_sql("COMMIT").execute(self.conn()).await.map_err(lite)?;
        self.ended = true;
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::SessionStore;
    use crate::store::sqlite::{SqliteSettings, SqliteStore};

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
}
