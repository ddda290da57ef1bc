//! `allsource repair`: makes a data dir whose WAL is corrupt startable again without deleting
//! anything. The first bad record and everything after it in its segment are moved to a side
//! file `<segment>.corrupt-<unix time>`; later segments are renamed the same way (their events
//! follow the lost ones, so keeping them would leave gaps in streams). The events before the
//! corruption are kept as they are.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::intern::Interner;
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

/// Repairs the WAL of `data_dir`. Run it with the server stopped.
///
/// # Errors
/// I/O failures (nothing is half-done: each step is a copy before a cut).
pub fn repair(data_dir: &Path) -> anyhow::Result<RepairReport> {
    let mut report = RepairReport::default();
    if !wal_dir(data_dir).exists() {
        anyhow::bail!("{} holds no WAL (is it a data dir?)", data_dir.display());
    }
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
        let mut out = fs::File::create(&side)?;
        out.write_all(&bytes[offset..])?;
        out.sync_all()?;
        let file = OpenOptions::new().write(true).open(path)?;
        if offset < wal::HEADER_LEN {
            file.set_len(0)?;
            (&file).write_all(&wal::header())?;
        } else {
            file.set_len(offset as u64)?;
        }
        file.sync_all()?;
        report.cut_bytes += (bytes.len() - offset) as u64;
        report.set_aside.push(side);
        cut_from = Some(i + 1);
        break;
    }
    if let Some(first_later) = cut_from {
        for (_, path) in &segments[first_later..] {
            let side = side_path(path, stamp);
            report.cut_bytes += fs::metadata(path).map_or(0, |m| m.len());
            fs::rename(path, &side)?;
            report.set_aside.push(side);
        }
        sync_dir(&wal_dir(data_dir))?;
    }
    Ok(report)
}

fn side_path(path: &Path, stamp: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{stamp}"));
    path.with_file_name(name)
}
