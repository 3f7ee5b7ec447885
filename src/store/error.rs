//! The store's small error vocabulary. Connection loss, pool time-outs, a database that is
//! shutting down and storage that refuses writes (a full disk) are `Unavailable` (the caller may
//! retry); an embedded store file found damaged at open is `Damaged`; anything else is a fault of
//! ours.

/// What a store failure came from: the driver's own error (a `sqlx::Error`, which callers may
/// downcast to read its SQLSTATE), the same with what we were doing ([`Context`]) or, where there
/// is none, a message of ours.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// An error with what the store was doing when it happened; the error itself stays its source.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct Context {
    what: String,
    #[source]
    source: Cause,
}

/// `source`, saying what the store was doing.
pub(crate) fn context(what: impl Into<String>, source: impl Into<Cause>) -> Cause {
    Box::new(Context {
        what: what.into(),
        source: source.into(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is not accepting work now.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The database answers but its schema is older than this binary's migrations.
    #[error("store schema is at migration {found}, this binary needs {needed}")]
    NotMigrated { found: i64, needed: i64 },
    /// The database aborted the transaction to break a deadlock or a serialization conflict
    /// with a concurrent one; nothing was changed and the operation can run again.
    #[error("store conflict: {0}")]
    Conflict(#[source] Cause),
    /// This host's clock is too far off the database's to stamp or judge expiry; the text says
    /// by how much (nothing secret: it is shown to callers).
    #[error("{0}")]
    ClockSkew(String),
    /// A stored value this binary cannot read.
    #[error("store holds an unreadable value: {0}")]
    Corrupt(String),
    /// The embedded store's file is damaged or empty: found when the store opens, never served.
    #[error("{0}")]
    Damaged(String),
    #[error("store error: {0}")]
    Other(#[source] Cause),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::NotMigrated { .. } | StoreError::ClockSkew(_)
        )
    }

    /// The same failure for another caller of one batch: the same variant and text (the driver's
    /// error itself cannot be shared).
    pub(crate) fn for_another_caller(&self) -> StoreError {
        match self {
            StoreError::Unavailable(cause) => StoreError::Unavailable(cause.to_string().into()),
            StoreError::NotMigrated { found, needed } => StoreError::NotMigrated {
                found: *found,
                needed: *needed,
            },
            StoreError::Conflict(cause) => StoreError::Conflict(cause.to_string().into()),
            StoreError::ClockSkew(what) => StoreError::ClockSkew(what.clone()),
            StoreError::Corrupt(what) => StoreError::Corrupt(what.clone()),
            StoreError::Damaged(what) => StoreError::Damaged(what.clone()),
            StoreError::Other(cause) => StoreError::Other(cause.to_string().into()),
        }
    }

    /// The driver's error behind this one, when there is one.
    pub fn sqlx(&self) -> Option<&sqlx::Error> {
        match self {
            StoreError::Unavailable(cause) | StoreError::Conflict(cause) | StoreError::Other(cause) => cause
                .downcast_ref::<sqlx::Error>()
                .or_else(|| cause.downcast_ref::<Context>()?.source.downcast_ref::<sqlx::Error>()),
            StoreError::NotMigrated { .. }
            | StoreError::ClockSkew(_)
            | StoreError::Corrupt(_)
            | StoreError::Damaged(_) => None,
        }
    }
}

/// Maps a sqlx error; `transient_code` says which database error codes mean "not now".
pub(crate) fn from_sqlx(err: sqlx::Error, transient_code: fn(&str) -> bool) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(err.into())
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| transient_code(&c)) => {
            StoreError::Unavailable(err.into())
        }
        // 40P01 deadlock_detected, 40001 serialization_failure.
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40P01" || c == "40001") => {
            StoreError::Conflict(err.into())
        }
        _ => StoreError::Other(err.into()),
    }
}

pub(crate) fn from_migrate(err: sqlx::migrate::MigrateError, transient_code: fn(&str) -> bool) -> StoreError {
    match err {
        sqlx::migrate::MigrateError::Execute(inner) => from_sqlx(inner, transient_code),
        sqlx::migrate::MigrateError::ExecuteMigration(inner, version) => match from_sqlx(inner, transient_code) {
            StoreError::Other(detail) => StoreError::Other(format!("migration {version} failed: {detail}").into()),
            unavailable => unavailable,
        },
        other => StoreError::Other(format!("migration failed: {other}").into()),
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn a_mapped_driver_error_keeps_the_driver_error_as_its_source() {
        let err = from_sqlx(sqlx::Error::PoolTimedOut, |_| false);
        assert!(err.is_unavailable());
        assert!(matches!(err.sqlx(), Some(sqlx::Error::PoolTimedOut)), "{err:?}");
        let source = err.source().expect("a source");
        assert!(source.downcast_ref::<sqlx::Error>().is_some(), "{source:?}");
        assert_eq!(
            err.to_string(),
            format!("store unavailable: {}", sqlx::Error::PoolTimedOut)
        );

        let ours = StoreError::Other("the report id's record vanished".into());
        assert!(ours.sqlx().is_none());
        assert_eq!(ours.to_string(), "store error: the report id's record vanished");
    }

    #[test]
    fn a_driver_error_with_what_the_store_was_doing_keeps_the_driver_error_as_its_source() {
        let err = StoreError::Unavailable(context("cannot connect to postgres", sqlx::Error::PoolClosed));
        assert_eq!(
            err.to_string(),
            format!(
                "store unavailable: cannot connect to postgres: {}",
                sqlx::Error::PoolClosed
            )
        );
        assert!(matches!(err.sqlx(), Some(sqlx::Error::PoolClosed)), "{err:?}");
        let mut chain = Vec::new();
        let mut next = err.source();
        while let Some(source) = next {
            chain.push(source.to_string());
            next = source.source();
        }
        assert_eq!(chain.last(), Some(&sqlx::Error::PoolClosed.to_string()), "{chain:?}");
    }
}
