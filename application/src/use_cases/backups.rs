//! [`Backups`]: online backups of the whole store (every tenant), their verification, and the
//! offline restore ([`restore`]) into a data dir.
//!
//! # Layout of a backup in its target
//! `<backup id>/<piece name>.zst` for each piece of the cut (zstd-compressed), and
//! `<backup id>/backup.json`, the [`BackupManifest`], written last: a backup without it is
//! incomplete and not listed. The manifest names every file with the SHA-256 of its stored
//! (compressed) bytes and of its content; the backup's `checksum` is the SHA-256 of the lines
//! `<object> <sha256>\n` of its files, in order.
//!
//! # Kinds
//! A `full` backup holds every event up to its cut. An `incremental` one holds the events after
//! the cut of the backup it is based on (`since_backup`, by default the newest completed
//! backup) up to its own cut; each backup carries a whole copy of the state store (it is small
//! next to the events, and a restore needs one consistent copy). Restoring an incremental
//! follows the chain back to its full backup.
//!
//! # Who may
//! Backups hold every tenant's data: only operators ([`Caller::is_operator`]) start, list,
//! read or verify them through the API.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ports::Clock;
use crate::ports::backup::{
    BackupIoError, BackupSource, BackupTarget, NoProgress, Piece, PieceKind, Progress,
    RestorePoint, RestoreSink,
};
use crate::tenancy::Caller;
use crate::use_cases::FieldError;

/// The name of a backup's manifest in its directory.
pub const MANIFEST_FILE: &str = "backup.json";
/// The format of [`BackupManifest`] this version writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// The zstd level of stored pieces.
const ZSTD_LEVEL: i32 = 3;

/// A full or an incremental backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    Incremental,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }
}

/// One stored file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// What the file holds.
    #[serde(flatten)]
    pub piece: Piece,
    /// Its object name in the backup's directory (`<piece name>.zst`).
    pub object: String,
    /// Bytes stored (compressed) and their SHA-256 (hex).
    pub size_bytes: u64,
    pub sha256: String,
    /// Bytes of the content (decompressed) and their SHA-256 (hex).
    pub raw_bytes: u64,
    pub raw_sha256: String,
}

/// `backup.json`: what a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    pub backup_id: String,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub kind: BackupKind,
    /// The backup an incremental one continues.
    pub since_backup: Option<String>,
    /// The first position the backup holds (the base's `to_position + 1`; 1 for a full one).
    pub from_position: u64,
    /// The position of the cut.
    pub to_position: u64,
    /// The timestamp of the event at `to_position`.
    pub to_timestamp: Option<DateTime<Utc>>,
    /// Events held (`to_position - from_position + 1`).
    pub event_count: u64,
    /// Bytes stored, all files.
    pub size_bytes: u64,
    /// `sha256:<hex>` over the files' digests (see the module docs).
    pub checksum: String,
    pub files: Vec<BackupFile>,
}

/// The state of a backup job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupState {
    Running,
    Completed,
    Failed,
}

impl BackupState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// A backup as the API shows it: a running or failed job (kept in memory until a restart),
/// or a completed backup (read from the target).
#[derive(Debug, Clone, PartialEq)]
pub struct BackupView {
    pub backup_id: String,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub kind: BackupKind,
    pub since_backup: Option<String>,
    pub state: BackupState,
    pub event_count: Option<u64>,
    pub size_bytes: Option<u64>,
    pub checksum: Option<String>,
    pub from_position: Option<u64>,
    pub to_position: Option<u64>,
    pub files: Option<usize>,
    /// Why a failed job failed.
    pub error: Option<String>,
}

impl BackupView {
    fn completed(m: &BackupManifest) -> Self {
        Self {
            backup_id: m.backup_id.clone(),
            created_at: m.created_at,
            completed_at: Some(m.completed_at),
            kind: m.kind,
            since_backup: m.since_backup.clone(),
            state: BackupState::Completed,
            event_count: Some(m.event_count),
            size_bytes: Some(m.size_bytes),
            checksum: Some(m.checksum.clone()),
            from_position: Some(m.from_position),
            to_position: Some(m.to_position),
            files: Some(m.files.len()),
            error: None,
        }
    }
}

/// What `POST /api/v1/backups` asks for.
#[derive(Debug, Clone, Default)]
pub struct StartBackupInput {
    /// `full` or `incremental` (required).
    pub kind: Option<String>,
    /// For `incremental`: the base; the newest completed backup when absent.
    pub since_backup: Option<String>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub backup_id: String,
    pub ok: bool,
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// One line per damaged or missing file.
    pub problems: Vec<String>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// The backup restored and the chain it needed, full first.
    pub backup_id: String,
    pub chain: Vec<String>,
    /// Events restored and the last one's position and timestamp.
    pub events: u64,
    pub to_position: u64,
    pub to_timestamp: Option<DateTime<Utc>>,
    /// The backup whose state store was restored (`None` with `events_only`).
    pub state_from: Option<String>,
}

/// Why a backup request failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// 400: invalid input, by field.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// 403: the caller is not an operator.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such backup.
    #[error("{0}")]
    NotFound(String),
    /// 409: another backup is running, or the backend has no backup of its own, or the
    /// request contradicts what the backups hold.
    #[error("{0}")]
    Conflict(String),
    /// 503: the target or the store cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// 422 (restore): a backup file is damaged.
    #[error("{0}")]
    Corrupt(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<BackupIoError> for BackupError {
    fn from(e: BackupIoError) -> Self {
        match e {
            BackupIoError::Unsupported(why) => Self::Conflict(why),
            BackupIoError::Unavailable(why) => Self::Unavailable(why),
            BackupIoError::Corrupt(why) => Self::Corrupt(why),
            BackupIoError::Internal(e) => Self::Internal(e),
        }
    }
}

/// Whether `id` can name a backup (what ids this version makes: UUIDs; never a path).
pub fn valid_backup_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Reads a backup's manifest.
///
/// # Errors
/// `NotFound`, `Corrupt` for a manifest that does not parse, the target's failures.
pub async fn read_manifest(
    target: &dyn BackupTarget,
    id: &str,
) -> Result<BackupManifest, BackupError> {
    if !valid_backup_id(id) {
        return Err(BackupError::NotFound(format!("no backup '{id}'")));
    }
    let Some(bytes) = target.get(&format!("{id}/{MANIFEST_FILE}")).await? else {
        return Err(BackupError::NotFound(format!(
            "no completed backup '{id}' in {}",
            target.describe()
        )));
    };
    let manifest: BackupManifest = serde_json::from_slice(&bytes).map_err(|e| {
        BackupError::Corrupt(format!("the manifest of backup '{id}' does not parse: {e}"))
    })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(BackupError::Corrupt(format!(
            "backup '{id}' has manifest format {}, this version reads {MANIFEST_FORMAT}",
            manifest.format
        )));
    }
    Ok(manifest)
}

/// Every completed backup in the target, oldest first.
///
/// # Errors
/// The target's failures; a manifest that does not parse.
pub async fn list_manifests(target: &dyn BackupTarget) -> Result<Vec<BackupManifest>, BackupError> {
    let mut out = Vec::new();
    for id in target.list_dirs().await? {
        if !valid_backup_id(&id) {
            continue;
        }
        match read_manifest(target, &id).await {
            Ok(m) => out.push(m),
            // Incomplete (no manifest yet, or a failed job's leftovers): not a backup.
            Err(BackupError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| (a.created_at, &a.backup_id).cmp(&(b.created_at, &b.backup_id)));
    Ok(out)
}

fn hex_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn checksum(files: &[BackupFile]) -> String {
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(format!("{} {}\n", f.object, f.sha256).as_bytes());
    }
    let digest = hasher.finalize();
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn compress(raw: &[u8]) -> Result<Vec<u8>, BackupError> {
    let mut encoder =
        zstd::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(|e| BackupError::Internal(e.into()))?;
    encoder
        .write_all(raw)
        .map_err(|e| BackupError::Internal(e.into()))?;
    encoder
        .finish()
        .map_err(|e| BackupError::Internal(e.into()))
}

/// Reads a stored file back and checks both digests; the content on success.
async fn fetch_checked(
    target: &dyn BackupTarget,
    id: &str,
    file: &BackupFile,
) -> Result<Vec<u8>, BackupError> {
    let path = format!("{id}/{}", file.object);
    let Some(stored) = target.get(&path).await? else {
        return Err(BackupError::Corrupt(format!("{path}: missing")));
    };
    let digest = hex_sha256(&stored);
    if digest != file.sha256 {
        return Err(BackupError::Corrupt(format!(
            "{path}: SHA-256 {digest}, the manifest says {}",
            file.sha256
        )));
    }
    let mut raw = Vec::with_capacity(file.raw_bytes.min(1 << 30) as usize);
    zstd::Decoder::new(stored.as_slice())
        .and_then(|mut d| d.read_to_end(&mut raw))
        .map_err(|e| BackupError::Corrupt(format!("{path}: does not decompress: {e}")))?;
    let raw_digest = hex_sha256(&raw);
    if raw_digest != file.raw_sha256 || raw.len() as u64 != file.raw_bytes {
        return Err(BackupError::Corrupt(format!(
            "{path}: its content has SHA-256 {raw_digest}, the manifest says {}",
            file.raw_sha256
        )));
    }
    Ok(raw)
}

/// Re-reads every file of a backup and checks its digests (stored and content).
///
/// # Errors
/// `NotFound`, a manifest that does not parse, the target's failures. Damaged files are
/// reported in the [`VerifyReport`], not as errors.
pub async fn verify(
    target: &dyn BackupTarget,
    id: &str,
    progress: &dyn Progress,
) -> Result<VerifyReport, BackupError> {
    let manifest = read_manifest(target, id).await?;
    let mut report = VerifyReport {
        backup_id: id.to_owned(),
        ok: true,
        files_checked: 0,
        bytes_checked: 0,
        problems: Vec::new(),
    };
    if checksum(&manifest.files) != manifest.checksum {
        report
            .problems
            .push("the manifest's checksum does not match its files".into());
    }
    progress.begin("verifying", manifest.size_bytes);
    for file in &manifest.files {
        match fetch_checked(target, id, file).await {
            Ok(_) => {}
            Err(BackupError::Corrupt(why)) => report.problems.push(why),
            Err(e) => return Err(e),
        }
        report.files_checked += 1;
        report.bytes_checked += file.size_bytes;
        progress.advance(file.size_bytes);
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// Restores a backup (with the chain it continues) through `sink`, up to `point`.
///
/// `backup_id` `None` takes the newest completed backup. The state store restored is the one
/// of the newest backup of the chain whose cut is at or below the last event restored, so the
/// state never reflects events the restore left out; when there is none (a point before the
/// full backup's cut) the restore is refused unless `events_only`, which restores no state
/// store at all.
///
/// # Errors
/// `NotFound` (no such backup, or none at all), `Conflict` (a broken chain, a position past
/// the backup's cut, no state at or before the point), `Corrupt` (a damaged file: nothing is
/// finished, the sink's output must be discarded), the target's and the sink's failures.
pub async fn restore(
    target: &dyn BackupTarget,
    backup_id: Option<&str>,
    point: RestorePoint,
    events_only: bool,
    sink: &mut dyn RestoreSink,
    progress: &dyn Progress,
) -> Result<RestoreReport, BackupError> {
    let newest = match backup_id {
        Some(id) => read_manifest(target, id).await?,
        None => list_manifests(target).await?.pop().ok_or_else(|| {
            BackupError::NotFound(format!("no completed backup in {}", target.describe()))
        })?,
    };
    // The chain, full first.
    let mut chain = vec![newest.clone()];
    while let Some(base) = chain.last().and_then(|m| m.since_backup.clone()) {
        if chain.len() > 10_000 || chain.iter().any(|m| m.backup_id == base) {
            return Err(BackupError::Conflict(format!(
                "the chain of backup '{}' loops at '{base}'",
                newest.backup_id
            )));
        }
        let manifest = read_manifest(target, &base).await.map_err(|e| match e {
            BackupError::NotFound(_) => BackupError::Conflict(format!(
                "backup '{}' continues '{base}', which is not in {}",
                chain.last().map_or("", |m| m.backup_id.as_str()),
                target.describe()
            )),
            other => other,
        })?;
        chain.push(manifest);
    }
    chain.reverse();
    if chain[0].kind != BackupKind::Full {
        return Err(BackupError::Conflict(format!(
            "the chain of backup '{}' does not start with a full backup",
            newest.backup_id
        )));
    }
    for pair in chain.windows(2) {
        if pair[1].from_position != pair[0].to_position + 1 {
            return Err(BackupError::Conflict(format!(
                "backup '{}' starts at position {}, but its base '{}' ends at {}",
                pair[1].backup_id, pair[1].from_position, pair[0].backup_id, pair[0].to_position
            )));
        }
    }
    if let RestorePoint::Position(p) = point
        && p > newest.to_position
    {
        return Err(BackupError::Conflict(format!(
            "position {p} is past the cut of backup '{}' ({}): restore a later backup",
            newest.backup_id, newest.to_position
        )));
    }

    let total: u64 = chain
        .iter()
        .flat_map(|m| &m.files)
        .filter(|f| f.piece.kind == PieceKind::Events)
        .map(|f| f.size_bytes)
        .sum();
    progress.begin("restoring events", total);
    let mut restored = 0u64;
    let mut last: Option<(u64, DateTime<Utc>)> = None;
    'chain: for manifest in &chain {
        for file in manifest
            .files
            .iter()
            .filter(|f| f.piece.kind == PieceKind::Events)
        {
            let beyond = match point {
                RestorePoint::Latest => false,
                RestorePoint::Position(p) => file.piece.first_position > p,
                RestorePoint::Time(t) => file.piece.first_timestamp.is_some_and(|ts| ts > t),
            };
            if beyond {
                break 'chain;
            }
            let raw = fetch_checked(target, &manifest.backup_id, file).await?;
            if let Some((n, position, timestamp)) = sink.events(&file.piece, raw, point).await? {
                restored += n;
                last = Some((position, timestamp));
            }
            progress.advance(file.size_bytes);
        }
    }
    let to_position = last.map_or(0, |(p, _)| p);

    let state_from = if events_only {
        None
    } else {
        let Some(base) = chain.iter().rev().find(|m| m.to_position <= to_position) else {
            return Err(BackupError::Conflict(format!(
                "the restore stops at position {to_position}, before the cut of the full backup \
                 '{}' ({}): no copy of the state store is that old. Restore to a later point, \
                 or pass --events-only to restore the events without any state (users, keys, \
                 tenants, schemas, projections and cursors are then empty)",
                chain[0].backup_id, chain[0].to_position
            )));
        };
        let file = base
            .files
            .iter()
            .find(|f| f.piece.kind == PieceKind::State)
            .ok_or_else(|| {
                BackupError::Corrupt(format!("backup '{}' has no state store", base.backup_id))
            })?;
        let raw = fetch_checked(target, &base.backup_id, file).await?;
        sink.state(raw).await?;
        Some(base.backup_id.clone())
    };
    sink.finish().await?;
    Ok(RestoreReport {
        backup_id: newest.backup_id.clone(),
        chain: chain.iter().map(|m| m.backup_id.clone()).collect(),
        events: restored,
        to_position,
        to_timestamp: last.map(|(_, t)| t),
        state_from,
    })
}

struct Inner {
    source: Arc<dyn BackupSource>,
    target: Arc<dyn BackupTarget>,
    clock: Arc<dyn Clock>,
    /// Running and failed jobs of this process, by id.
    jobs: Mutex<BTreeMap<String, BackupView>>,
}

/// The backup use cases.
#[derive(Clone)]
pub struct Backups {
    inner: Result<Arc<Inner>, String>,
}

impl Backups {
    pub fn new(
        source: Arc<dyn BackupSource>,
        target: Arc<dyn BackupTarget>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Ok(Arc::new(Inner {
                source,
                target,
                clock,
                jobs: Mutex::new(BTreeMap::new()),
            })),
        }
    }

    /// Backups that answer every request `Conflict(why)` (no target configured).
    pub fn disabled(why: impl Into<String>) -> Self {
        Self {
            inner: Err(why.into()),
        }
    }

    fn inner(&self, caller: &Caller) -> Result<&Arc<Inner>, BackupError> {
        if !caller.is_operator() {
            return Err(BackupError::Forbidden(
                "backups hold every tenant's data: only operators (admins of tenant \
                 'default') may start, list or verify them"
                    .into(),
            ));
        }
        self.inner
            .as_ref()
            .map_err(|why| BackupError::Conflict(why.clone()))
    }

    /// Starts a backup in the background; the job as it starts (`running`).
    ///
    /// # Errors
    /// `Forbidden`; `Invalid` (kind, since_backup); `NotFound` (since_backup); `Conflict`
    /// (another backup is running, no target, a backend without backups, an incremental
    /// without any earlier backup); `Unavailable`.
    pub async fn start(
        &self,
        caller: &Caller,
        input: StartBackupInput,
    ) -> Result<BackupView, BackupError> {
        let inner = self.inner(caller)?;
        let kind = match input.kind.as_deref() {
            Some("full") => BackupKind::Full,
            Some("incremental") => BackupKind::Incremental,
            Some(other) => {
                return Err(BackupError::Invalid(vec![FieldError::new(
                    "kind",
                    format!("'{other}' is not one of: full, incremental"),
                )]));
            }
            None => {
                return Err(BackupError::Invalid(vec![FieldError::new(
                    "kind",
                    "required: full or incremental",
                )]));
            }
        };
        if kind == BackupKind::Full && input.since_backup.is_some() {
            return Err(BackupError::Invalid(vec![FieldError::new(
                "since_backup",
                "only an incremental backup has a base",
            )]));
        }
        if let Some(id) = &input.since_backup
            && !valid_backup_id(id)
        {
            return Err(BackupError::Invalid(vec![FieldError::new(
                "since_backup",
                "not a backup id",
            )]));
        }
        // Fails early (409) for a backend without backups, before a job exists.
        inner.source.head().await?;
        let base = inner.base(kind, input.since_backup.as_deref()).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let view = BackupView {
            backup_id: id.clone(),
            created_at: inner.clock.now(),
            completed_at: None,
            kind,
            since_backup: base.as_ref().map(|b| b.backup_id.clone()),
            state: BackupState::Running,
            event_count: None,
            size_bytes: None,
            checksum: None,
            from_position: Some(base.as_ref().map_or(1, |b| b.to_position + 1)),
            to_position: None,
            files: None,
            error: None,
        };
        {
            let mut jobs = inner.jobs.lock();
            if jobs.values().any(|j| j.state == BackupState::Running) {
                return Err(BackupError::Conflict(
                    "a backup is running: wait for it to finish".into(),
                ));
            }
            jobs.insert(id.clone(), view.clone());
        }
        let job = Arc::clone(inner);
        let created_at = view.created_at;
        tokio::spawn(async move {
            let outcome = job
                .create(&id, created_at, kind, base.as_ref(), &NoProgress)
                .await;
            let mut jobs = job.jobs.lock();
            match outcome {
                Ok(manifest) => {
                    tracing::info!(
                        backup_id = %id,
                        kind = kind.as_str(),
                        to_position = manifest.to_position,
                        events = manifest.event_count,
                        bytes = manifest.size_bytes,
                        "backup completed"
                    );
                    // Completed backups are read from the target from now on.
                    jobs.remove(&id);
                }
                Err(e) => {
                    tracing::error!(backup_id = %id, error = format!("{e:#}"), "backup failed");
                    if let Some(j) = jobs.get_mut(&id) {
                        j.state = BackupState::Failed;
                        j.error = Some(match &e {
                            BackupError::Internal(_) => {
                                "internal error (see the server log)".into()
                            }
                            other => other.to_string(),
                        });
                    }
                }
            }
        });
        Ok(view)
    }

    /// Takes a backup now, in this task (the CLI's `backup create`), reporting progress.
    ///
    /// # Errors
    /// As [`start`](Self::start), and the failures of the work itself.
    pub async fn create_now(
        &self,
        kind: BackupKind,
        since_backup: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<BackupManifest, BackupError> {
        let inner = self
            .inner
            .as_ref()
            .map_err(|why| BackupError::Conflict(why.clone()))?;
        inner.source.head().await?;
        let base = inner.base(kind, since_backup).await?;
        let id = uuid::Uuid::now_v7().to_string();
        inner
            .create(&id, inner.clock.now(), kind, base.as_ref(), progress)
            .await
    }

    /// Completed backups (oldest first), then this process's running and failed jobs.
    ///
    /// # Errors
    /// `Forbidden`, `Conflict` (no target), the target's failures.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<BackupView>, BackupError> {
        let inner = self.inner(caller)?;
        let mut views: Vec<BackupView> = list_manifests(inner.target.as_ref())
            .await?
            .iter()
            .map(BackupView::completed)
            .collect();
        let jobs: Vec<BackupView> = inner.jobs.lock().values().cloned().collect();
        for job in jobs {
            if !views.iter().any(|v| v.backup_id == job.backup_id) {
                views.push(job);
            }
        }
        Ok(views)
    }

    /// One backup or job.
    ///
    /// # Errors
    /// `Forbidden`, `NotFound`, the target's failures.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<BackupView, BackupError> {
        let inner = self.inner(caller)?;
        if let Some(job) = inner.jobs.lock().get(id).cloned() {
            return Ok(job);
        }
        Ok(BackupView::completed(
            &read_manifest(inner.target.as_ref(), id).await?,
        ))
    }

    /// Re-reads a completed backup and checks every digest.
    ///
    /// # Errors
    /// `Forbidden`, `NotFound` (also for a running job: nothing to verify yet), the target's
    /// failures.
    pub async fn verify(&self, caller: &Caller, id: &str) -> Result<VerifyReport, BackupError> {
        let inner = self.inner(caller)?;
        verify(inner.target.as_ref(), id, &NoProgress).await
    }

    /// The target, for the CLI's offline commands.
    pub fn target(&self) -> Option<Arc<dyn BackupTarget>> {
        self.inner.as_ref().ok().map(|i| Arc::clone(&i.target))
    }
}

impl Inner {
    /// The base of an incremental backup (checked against the store), `None` for a full one.
    async fn base(
        &self,
        kind: BackupKind,
        since: Option<&str>,
    ) -> Result<Option<BackupManifest>, BackupError> {
        if kind == BackupKind::Full {
            return Ok(None);
        }
        let base = match since {
            Some(id) => read_manifest(self.target.as_ref(), id).await?,
            None => list_manifests(self.target.as_ref())
                .await?
                .pop()
                .ok_or_else(|| {
                    BackupError::Conflict(format!(
                        "an incremental backup continues an earlier one, and {} holds none: \
                         take a full backup first",
                        self.target.describe()
                    ))
                })?,
        };
        let head = self.source.head().await?;
        if base.to_position > head {
            return Err(BackupError::Conflict(format!(
                "backup '{}' ends at position {}, past this store's head ({head}): it is not \
                 a backup of this store",
                base.backup_id, base.to_position
            )));
        }
        Ok(Some(base))
    }

    async fn create(
        &self,
        id: &str,
        created_at: DateTime<Utc>,
        kind: BackupKind,
        base: Option<&BackupManifest>,
        progress: &dyn Progress,
    ) -> Result<BackupManifest, BackupError> {
        let after = base.map_or(0, |b| b.to_position);
        let cut = self.source.cut(after).await?;
        let pieces = cut.pieces();
        let mut files = Vec::with_capacity(pieces.len());
        progress.begin("backing up", pieces.len() as u64);
        for (i, piece) in pieces.into_iter().enumerate() {
            let raw = cut.read(i).await?;
            let stored = tokio::task::spawn_blocking(move || {
                let stored = compress(&raw)?;
                Ok::<_, BackupError>((hex_sha256(&raw), raw.len() as u64, stored))
            })
            .await
            .map_err(|e| BackupError::Internal(e.into()))??;
            let (raw_sha256, raw_bytes, stored) = stored;
            let object = format!("{}.zst", piece.name);
            let file = BackupFile {
                piece,
                object: object.clone(),
                size_bytes: stored.len() as u64,
                sha256: hex_sha256(&stored),
                raw_bytes,
                raw_sha256,
            };
            self.target.put(&format!("{id}/{object}"), stored).await?;
            files.push(file);
            progress.advance(1);
        }
        let to_position = cut.to_position().max(after);
        let manifest = BackupManifest {
            format: MANIFEST_FORMAT,
            backup_id: id.to_owned(),
            created_at,
            completed_at: self.clock.now(),
            kind,
            since_backup: base.map(|b| b.backup_id.clone()),
            from_position: after + 1,
            to_position,
            to_timestamp: cut.to_timestamp(),
            event_count: to_position - after,
            size_bytes: files.iter().map(|f| f.size_bytes).sum(),
            checksum: checksum(&files),
            files,
        };
        drop(cut);
        let bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Internal(e.into()))?;
        self.target
            .put(&format!("{id}/{MANIFEST_FILE}"), bytes)
            .await?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests;
