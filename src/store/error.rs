//! The store's small error vocabulary. Connection loss, pool time-outs and a database that is
//! shutting down are `Unavailable` (the caller may retry); anything else is a fault of ours.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is not accepting work now.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database answers but its schema is older than this binary's migrations.
    #[error("store schema is at migration {found}, this binary needs {needed}")]
    NotMigrated { found: i64, needed: i64 },
    /// The database aborted the transaction to break a deadlock or a serialization conflict
    /// with a concurrent one; nothing was changed and the operation can run again.
    #[error("store conflict: {0}")]
    Conflict(String),
    /// A stored value this binary cannot read.
    #[error("store holds an unreadable value: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::NotMigrated { .. })
    }
}

/// Maps a sqlx error; `transient_code` says which database error codes mean "not now".
pub(crate) fn from_sqlx(err: sqlx::Error, transient_code: fn(&str) -> bool) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(err.to_string())
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| transient_code(&c)) => {
            StoreError::Unavailable(err.to_string())
        }
        // 40P01 deadlock_detected, 40001 serialization_failure.
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40P01" || c == "40001") => {
            StoreError::Conflict(err.to_string())
        }
        _ => StoreError::Other(err.to_string()),
    }
}

pub(crate) fn from_migrate(err: sqlx::migrate::MigrateError, transient_code: fn(&str) -> bool) -> StoreError {
    match err {
        sqlx::migrate::MigrateError::Execute(inner) => from_sqlx(inner, transient_code),
        sqlx::migrate::MigrateError::ExecuteMigration(inner, version) => match from_sqlx(inner, transient_code) {
            StoreError::Other(detail) => StoreError::Other(format!("migration {version} failed: {detail}")),
            unavailable => unavailable,
        },
        other => StoreError::Other(format!("migration failed: {other}")),
    }
}
