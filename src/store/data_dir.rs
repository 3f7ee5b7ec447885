//! The embedded store's directory on disk, before SQLite opens anything in it: made and proven
//! writable, and locked for one process. [`prepare_data_dir`] takes an exclusive advisory lock on
//! `sessionkeeper.lock` and returns it; the command keeps it for its whole life, so a second
//! `serve`, `migrate` or `sweep` on the same directory refuses at once instead of racing the first
//! on one SQLite file. It must not open the database (that is `sqlite.rs`'s job).

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data dir. It is never deleted: removing a lock file while
/// another process waits on it would let two processes lock two different files.
pub const LOCK_FILE: &str = "sessionkeeper.lock";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory cannot be made, or a file cannot be written in it (a configuration problem).
    #[error("data_dir {}: not writable: {source}", dir.display())]
    NotWritable { dir: PathBuf, source: std::io::Error },
    /// Another process holds the directory's lock.
    #[error(
        "data_dir {} is in use by another sessionkeeper process{}: run one server per data dir, and \
         while it runs sweep through its Sweep RPC instead of `sessionkeeper sweep` (it migrates at start)",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, holder: Option<u32> },
}

/// The data dir's exclusive lock, held until dropped (the kernel also releases it when the
/// process ends, however it ends: a kill -9 leaves no stale lock).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Creates the data dir if needed, proves a file can be written in it and takes its lock
/// (startup does this before any command opens the store, so each problem is one clear line).
pub fn prepare_data_dir(dir: &Path) -> Result<DataDirLock, DataDirError> {
    let not_writable = |source| DataDirError::NotWritable {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    let probe = dir.join(".sessionkeeper-write-probe");
    std::fs::write(&probe, b"ok").map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)?;
    lock(dir)
}

fn lock(dir: &Path) -> Result<DataDirLock, DataDirError> {
    let not_writable = |source| DataDirError::NotWritable {
        dir: dir.to_owned(),
        source,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(not_writable)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(DataDirError::InUse {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(not_writable(e)),
    }
    // The holder's pid, for the refusal's message only (the lock itself is the flock).
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(not_writable)?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_data_dir_is_refused_naming_the_dir_and_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = prepare_data_dir(dir.path()).expect("the first lock");
        match prepare_data_dir(dir.path()) {
            Err(e @ DataDirError::InUse { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
                let text = e.to_string();
                assert!(text.contains(&dir.path().display().to_string()), "{text}");
                assert!(text.contains("Sweep RPC"), "{text}");
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        prepare_data_dir(dir.path()).expect("the lock again once released");
    }
}
