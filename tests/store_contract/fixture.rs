//! The fixture every contract test gets: a store under test in fresh storage of its own (a
//! Postgres schema or a SQLite directory), its replicas, the raw SQL the trait does not offer
//! (placing rows, recording or tampering with migrations) and the teardown that drops the data.
//! It holds no test logic: what a test asserts lives in the subject files.

use std::sync::Arc;

use sessionkeeper::store::postgres::PostgresStore;
use sessionkeeper::store::sqlite::SqliteStore;
use sessionkeeper::store::{SessionStore, TranscriptStore};

use crate::support::{self, Backend, PgSchema, RawRows};

/// The concrete store behind a fixture, for what the trait does not offer (raw SQL, a new schema).
#[derive(Debug)]
pub(crate) enum Storage {
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
pub(crate) struct Fixture {
    pub(crate) store: Arc<dyn SessionStore>,
    /// Store instances over the same data: two replicas on Postgres, the one instance on SQLite.
    pub(crate) replicas: Vec<Arc<dyn SessionStore>>,
    pub(crate) storage: Storage,
    /// The same instances as `replicas`, as transcript stores.
    pub(crate) transcript_replicas: Vec<Arc<dyn TranscriptStore>>,
    /// The fixture's own connection to the same data, for rows placed behind the store's back.
    pub(crate) raw: RawRows,
}

pub(crate) fn as_dyn<S: SessionStore>(store: Arc<S>) -> Arc<dyn SessionStore> {
    store
}

pub(crate) fn second_postgres_store(schema: &PgSchema) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::connect_lazy(&support::pg_settings(&schema.url)).expect("another postgres store"))
}

impl Fixture {
    /// A fixture of the backend's kind in fresh storage.
    pub(crate) async fn new(backend: Backend) -> Fixture {
        match backend {
            Backend::Postgres => Fixture::postgres().await,
            Backend::Sqlite => Fixture::sqlite().await,
        }
    }

    /// A migrated Postgres store in a fresh schema, and a second instance (replica) over it.
    pub(crate) async fn postgres() -> Fixture {
        let (store, schema) = support::postgres_store().await;
        Fixture::over_postgres(store, schema)
    }

    /// A migrated SQLite store in a fresh directory.
    pub(crate) async fn sqlite() -> Fixture {
        let (store, dir) = support::sqlite_store().await;
        Fixture::over_sqlite(store, dir).await
    }

    pub(crate) fn over_postgres(store: Arc<PostgresStore>, schema: PgSchema) -> Fixture {
        let second = second_postgres_store(&schema);
        let replicas = vec![as_dyn(store.clone()), as_dyn(second.clone())];
        let transcript_replicas: Vec<Arc<dyn TranscriptStore>> = vec![store.clone() as _, second as _];
        Fixture {
            store: store.clone(),
            replicas,
            transcript_replicas,
            raw: RawRows::postgres(&schema.url),
            storage: Storage::Postgres { store, schema },
        }
    }

    pub(crate) async fn over_sqlite(store: Arc<SqliteStore>, dir: tempfile::TempDir) -> Fixture {
        Fixture {
            store: store.clone(),
            replicas: vec![as_dyn(store.clone())],
            transcript_replicas: vec![store.clone() as Arc<dyn TranscriptStore>],
            raw: RawRows::sqlite(dir.path()).await,
            storage: Storage::Sqlite { store, _dir: dir },
        }
    }

    /// A store of the same kind over fresh storage that no migration has touched.
    pub(crate) async fn unmigrated_twin(&self) -> Fixture {
        match &self.storage {
            Storage::Postgres { .. } => {
                let schema = support::fresh_pg_schema().await;
                Fixture::over_postgres(second_postgres_store(&schema), schema)
            }
            Storage::Sqlite { .. } => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = SqliteStore::open(&support::sqlite_settings(dir.path()))
                    .await
                    .expect("sqlite store");
                Fixture::over_sqlite(Arc::new(store), dir).await
            }
        }
    }

    pub(crate) fn store(&self) -> &dyn SessionStore {
        self.store.as_ref()
    }

    /// The store under test as a transcript store.
    pub(crate) fn transcripts(&self) -> &dyn TranscriptStore {
        self.transcript_replicas[0].as_ref()
    }

    /// The `i`-th replica as a transcript store, round robin.
    pub(crate) fn transcript_replica(&self, i: usize) -> Arc<dyn TranscriptStore> {
        self.transcript_replicas[i % self.transcript_replicas.len()].clone()
    }

    /// The `i`-th replica, round robin.
    pub(crate) fn replica(&self, i: usize) -> Arc<dyn SessionStore> {
        self.replicas[i % self.replicas.len()].clone()
    }

    pub(crate) fn latest_migration(&self) -> i64 {
        match &self.storage {
            Storage::Postgres { .. } => PostgresStore::latest_migration(),
            Storage::Sqlite { .. } => SqliteStore::latest_migration(),
        }
    }

    pub(crate) fn postgres_parts(&self) -> (&Arc<PostgresStore>, &PgSchema) {
        match &self.storage {
            Storage::Postgres { store, schema } => (store, schema),
            Storage::Sqlite { .. } => panic!("a Postgres-only test ran on SQLite"),
        }
    }

    /// Records an applied migration this binary does not know, as a newer binary would.
    pub(crate) async fn record_newer_migration(&self, version: i64) {
        pub(crate) const DESCRIPTION: &str = "added by a newer binary";
        let checksum = vec![0xab_u8; 48];
        match &self.storage {
            Storage::Postgres { store, .. } => {
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
            Storage::Sqlite { store, .. } => {
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
    pub(crate) async fn tamper_with_applied_checksums(&self) {
        match &self.storage {
            Storage::Postgres { store, .. } => {
                sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea")
                    .execute(store.pool())
                    .await
                    .expect("tamper with postgres checksums");
            }
            Storage::Sqlite { store, .. } => {
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
    pub(crate) async fn teardown(self) {
        for replica in &self.replicas {
            replica.close().await;
        }
        self.raw.close().await;
        if let Storage::Postgres { schema, .. } = &self.storage {
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
