//! `allsource repair`: makes a data dir whose WAL is corrupt startable again without deleting
//! anything. The first bad record and everything after it in its segment are moved to a side
//! file `<segment>.corrupt-<unix time>`; later segments are renamed the same way (their events
//! follow the lost ones, so keeping them would leave gaps in streams). The events before the
//! corruption are kept as they are.
//!
//! Repair holds the data dir's [`DataDirLock`] while it works, so it refuses to run while a
//! server (or another command) uses the directory, and no server can open it meanwhile.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::intern::Interner;
use super::lock::{DataDirLock, LockError};
use super::wal::{self, ScanEnd};
use super::{list_segments, sync_dir, wal_dir};

/// What `repair` did.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Files holding the cut bytes or the set-aside segments.
    pub set_aside: Vec<PathBuf>,
    /// Bytes moved out of the WAL.
    pub cut_bytes: u64,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.set_aside.is_empty() {
            return write!(f, "the WAL is intact; nothing to repair");
        }
        writeln!(
            f,
            "moved {} bytes out of the WAL into these files (kept for inspection):",
            self.cut_bytes
        )?;
        for p in &self.set_aside {
            writeln!(f, "  {}", p.display())?;
        }
        write!(
            f,
            "the server can start again; events after the corruption are not loaded"
        )
    }
}

/// Repairs the WAL of `data_dir`. Refused while a server uses the directory.
///
/// # Errors
/// The data dir in use (nothing is changed), I/O failures (nothing is half-done: each step is
/// a copy before a cut).
pub fn repair(data_dir: &Path) -> anyhow::Result<RepairReport> {
    let mut report = RepairReport::default();
    if !wal_dir(data_dir).exists() {
        anyhow::bail!("{} holds no WAL (is it a data dir?)", data_dir.display());
    }
    let _lock = match DataDirLock::acquire(data_dir) {
        Ok(lock) => lock,
        Err(LockError::InUse { .. }) => anyhow::bail!(
            "the data dir {} is in use by a running AllSource process: stop the server before \
             repairing (nothing was changed)",
            data_dir.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let segments = list_segments(data_dir)?;
    let mut cut_from = None;
    for (i, (_, path)) in segments.iter().enumerate() {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let end = wal::scan_segment(&bytes, &mut Interner::default(), |_| Ok(()));
        let offset = match end {
            ScanEnd::Clean => continue,
            ScanEnd::TornTail { offset } | ScanEnd::Corrupt { offset, .. } => offset,
        };
        let side = side_path(path, stamp);
        let mut out =
            fs::File::create(&side).with_context(|| format!("cannot create {}", side.display()))?;
        out.write_all(&bytes[offset..])
            .and_then(|()| out.sync_all())
            .with_context(|| format!("cannot write {}", side.display()))?;
        let cut = || -> std::io::Result<()> {
            let file = OpenOptions::new().write(true).open(path)?;
            if offset < wal::HEADER_LEN {
                file.set_len(0)?;
                (&file).write_all(&wal::header())?;
            } else {
                file.set_len(offset as u64)?;
            }
            file.sync_all()
        };
        cut().with_context(|| format!("cannot cut {}", path.display()))?;
        report.cut_bytes += (bytes.len() - offset) as u64;
        report.set_aside.push(side);
        cut_from = Some(i + 1);
        break;
    }
    if let Some(first_later) = cut_from {
        for (_, path) in &segments[first_later..] {
            let side = side_path(path, stamp);
            report.cut_bytes += fs::metadata(path).map_or(0, |m| m.len());
            fs::rename(path, &side)
                .with_context(|| format!("cannot move {} to {}", path.display(), side.display()))?;
            report.set_aside.push(side);
        }
        sync_dir(&wal_dir(data_dir))
            .with_context(|| format!("cannot sync {}", wal_dir(data_dir).display()))?;
    }
    Ok(report)
}

fn side_path(path: &Path, stamp: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{stamp}"));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_while_the_data_dir_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(wal_dir(dir.path())).unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let err = repair(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("in use by a running AllSource process") && err.contains("nothing"),
            "{err}"
        );
        drop(held);
        assert!(repair(dir.path()).unwrap().set_aside.is_empty());
    }
}
