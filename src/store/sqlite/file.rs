//! The embedded store's file before it is served: a new one is created whole under its name, an
//! empty one is refused (no file at all is what "no store yet" means), and one whose pages fail
//! SQLite's `quick_check`, or that is not a database, is refused as [`StoreError::Damaged`] with
//! what to do. It never modifies an existing file.

use std::path::{Path, PathBuf};

use sqlx::AssertSqlSafe;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use super::{lite, primary_code};
use crate::store::StoreError;

/// At most this many problems are asked of `quick_check` (the refusal names the first ones).
const QUICK_CHECK_LIMIT: u32 = 3;

/// SQLITE_CORRUPT (11) and SQLITE_NOTADB (26).
pub(super) fn damage_code(code: u32) -> bool {
    matches!(code, 11 | 26)
}

pub(super) fn damaged(path: &Path, detail: &str) -> StoreError {
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

/// Refuses what is left of a store that is gone. "No store yet" means no database file and no
/// write-ahead log of one. An empty database file is what a truncation or an interrupted restore
/// leaves (never this binary's own creation, see [`create_store_file`]); a log without its file is
/// what deleting the file alone leaves, and SQLite would replay it onto a new, empty file. Neither
/// is taken for a new store, so no one's data silently becomes nothing.
pub(super) fn refuse_a_lost_store(path: &Path) -> Result<(), StoreError> {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let nonempty = |file: &Path| std::fs::metadata(file).is_ok_and(|meta| meta.len() > 0);
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == 0 => Err(StoreError::Damaged(format!(
            "embedded store {} is an empty file (truncated, or a restore was interrupted): \
             restore it from a backup, or delete it to start an empty store",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && nonempty(&wal) => Err(StoreError::Damaged(format!(
            "embedded store {} is missing but its write-ahead log {} is there: restore the file from a \
             backup, or move the log aside to start an empty store",
            path.display(),
            wal.display()
        ))),
        _ => Ok(()),
    }
}

/// Creates a new store's file under a temporary name, writes its header (WAL mode) and renames it
/// into place: a crash or a full disk during creation leaves no file, or a stray temporary one,
/// never an empty file under the store's name.
pub(super) async fn create_store_file(path: &Path) -> Result<(), StoreError> {
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
pub(super) async fn quick_check(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::SessionStore;
    use crate::store::StoreError;
    use crate::store::sqlite::{DATABASE_FILE, SqliteSettings, SqliteStore};

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
    async fn a_write_ahead_log_without_its_database_file_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SqliteSettings {
            data_dir: dir.path().to_owned(),
            max_connections: 1,
            acquire_timeout: Duration::from_secs(2),
        };
        let wal = dir.path().join(format!("{DATABASE_FILE}-wal"));
        std::fs::write(&wal, b"frames of a store that is gone").unwrap();
        match SqliteStore::open(&settings).await {
            Err(StoreError::Damaged(text)) => assert!(text.contains("write-ahead log"), "{text}"),
            other => panic!("expected Damaged, got {other:?}"),
        }
        assert!(!dir.path().join(DATABASE_FILE).exists(), "no new store was made");
        assert_eq!(std::fs::read(&wal).unwrap(), b"frames of a store that is gone");
        // An empty log is nothing to lose.
        std::fs::write(&wal, b"").unwrap();
        SqliteStore::open(&settings)
            .await
            .expect("a new store beside an empty log");
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
