//! The manifest: which Parquet files hold which positions. It is the source of truth for
//! Parquet: a file not named in it is ignored (and removed), so a crash between writing a file
//! and recording it loses nothing (the WAL segment is still there) and duplicates nothing.
//! Written atomically: temp file, sync, rename, sync the directory.

use std::fs;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::sync_dir;

pub const MANIFEST_NAME: &str = "manifest.json";

/// One Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParquetEntry {
    /// File name under `parquet/`.
    pub file: String,
    pub first_position: u64,
    pub last_position: u64,
    pub events: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// In position order, not overlapping.
    pub parquet: Vec<ParquetEntry>,
}

impl Manifest {
    /// Highest position held in Parquet (0 if none).
    pub fn last_position(&self) -> u64 {
        self.parquet.last().map_or(0, |p| p.last_position)
    }

    /// Loads the manifest of `dir` (empty if there is none yet).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(MANIFEST_NAME);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("the manifest {} is unreadable", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                format: 1,
                parquet: Vec::new(),
            }),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Replaces the manifest of `dir` atomically.
    pub fn store(&self, dir: &Path) -> anyhow::Result<()> {
        let tmp = dir.join(format!("{MANIFEST_NAME}.tmp"));
        let bytes = serde_json::to_vec_pretty(self)?;
        {
            let mut f = fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, dir.join(MANIFEST_NAME))?;
        sync_dir(dir)?;
        Ok(())
    }
}
