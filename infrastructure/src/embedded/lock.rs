//! [`DataDirLock`]: the one lock of a data dir. Whoever uses a data dir holds it for as long
//! as it does: the server (taken when the embedded store opens, released when its last thread
//! stops), `allsource admin`, and `allsource repair`. A second process that tries gets
//! [`LockError::InUse`] and changes nothing.
//!
//! The lock is an advisory lock (`flock` on Unix, `LockFileEx` on Windows) on the file
//! `<data_dir>/LOCK`, so the operating system releases it when the holder exits, even by a
//! crash: there is never a stale lock to remove by hand. The file itself stays (it is empty).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a data dir.
pub const LOCK_FILE: &str = "LOCK";

/// Why a data dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "the data dir {} is in use by another AllSource process (a running server, `allsource \
         admin` or `allsource repair`); stop it first, or choose another storage.data_dir",
        dir.display()
    )]
    InUse { dir: PathBuf },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock of a data dir; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    dir: PathBuf,
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (which must exist), without waiting.
    ///
    /// # Errors
    /// [`LockError::InUse`] when another process holds it; [`LockError::Io`] when the lock
    /// file cannot be opened or locked.
    pub fn acquire(data_dir: &Path) -> Result<Self, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Self {
                dir: data_dir.to_path_buf(),
                _file: file,
            }),
            Err(TryLockError::WouldBlock) => Err(LockError::InUse {
                dir: data_dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// The locked data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(held.dir(), dir.path());
        let refused = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(refused, LockError::InUse { .. }), "{refused:?}");
        assert!(refused.to_string().contains("in use"), "{refused}");
        drop(held);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_missing_dir_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = DataDirLock::acquire(&missing).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("nope/LOCK"), "{err}");
    }
}
