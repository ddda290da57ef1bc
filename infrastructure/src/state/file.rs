//! `FileStateStore`: the embedded backend's state store.
//!
//! All entries live in memory ([`StateMap`]); every write is appended to `state.log` as one
//! checksummed record and synced before it is acknowledged and before readers see it. Writers
//! take the log's lock one at a time; readers take only the map's read lock, so a read never
//! waits for a writer's fsync (snapshot and tenant lookups sit on request paths). At start the
//! log is replayed; a torn last record (a crash mid-write) is cut off, a bad record followed by
//! good ones is refused as corruption. When most records are dead (overwritten or deleted) the
//! log is rewritten with only the live entries: temp file, sync, rename, sync the directory.
//!
//! **Values read back.** The log is read with the JSON parser's nesting limit
//! ([`READABLE_NESTING`](super::READABLE_NESTING)), so a write whose value nests deeper is refused with an error instead
//! of being written: whatever is in the log can be read. A record that is whole (its checksum
//! holds) but whose value still cannot be read, as an older version could write, is not
//! corruption: at start it is copied to `state.log.quarantine` next to the log (same record
//! format), reported as an error naming its tenant, namespace and key, and its key is left out
//! (an older value of the key is not served in its place); the log is then rewritten without
//! it. Every other entry loads as usual.
//!
//! **Relaxed namespaces** ([`FileStateStore::relax`]) hold state that can be rebuilt from
//! events, such as snapshots: their records are written but not synced on their own. The next
//! synced record covers them (one file, written in order), and so does a sync at most once a
//! second while relaxed writes go on, and one when the store is dropped. A crash can lose the
//! last second of such writes — a lost snapshot only means a longer fold — and never reorders
//! the log: what survives is always a prefix of it. Without this, every automatic snapshot was
//! an fsync of its own on the WAL's disk.
//!
//! Record: `u32 body length | u32 CRC32C(body) | body`, body = `op u8` (1 put, 2 delete),
//! tenant, namespace, key (each `u32` length + UTF-8), `u64` version, value (`u32` length +
//! JSON; empty for deletes). Little-endian.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_application::ports::{StateEntry, StateError, StateStore};
use allsource_domain::TenantId;
use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

#[cfg(test)]
use super::READABLE_NESTING;
use super::memory::{StateKey, StateMap};
use super::storable_text;

const LOG_NAME: &str = "state.log";
/// Where whole records whose value cannot be read are copied at start.
const QUARANTINE_NAME: &str = "state.log.quarantine";
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// Rewrite the log when it holds this many records and at least 3× the live entries.
const COMPACT_MIN_RECORDS: usize = 1024;
/// Longest time relaxed writes stay unsynced while they keep coming.
const RELAXED_SYNC_EVERY: Duration = Duration::from_secs(1);

/// Durable state in a single log file under `dir`.
pub struct FileStateStore {
    /// What readers see: entries whose records are synced (or written, in relaxed namespaces).
    map: Arc<RwLock<StateMap>>,
    /// Held by one writer at a time, from the version check to the map update.
    log: Arc<Mutex<Log>>,
    /// Namespaces whose writes are not synced on their own (see the module docs).
    relaxed: Arc<[String]>,
}

/// The log file and what a writer needs besides the map.
struct Log {
    dir: PathBuf,
    file: File,
    records: usize,
    /// Records written but not synced yet (relaxed writes).
    unsynced: bool,
    last_sync: Instant,
    /// Syncs of the log since it was opened (for tests and diagnostics).
    syncs: u64,
    /// Longest time relaxed writes stay unsynced ([`RELAXED_SYNC_EVERY`]).
    sync_every: Duration,
}

/// What a write sees: the log (locked) and the map (write-locked only to apply the change).
struct Writer<'a> {
    log: &'a mut Log,
    map: &'a RwLock<StateMap>,
}

impl FileStateStore {
    /// Opens (creating if needed) the state log in `dir` and replays it.
    ///
    /// # Errors
    /// I/O failures, or a corrupt log (a bad record followed by valid ones).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOG_NAME);
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .with_context(|| format!("cannot read {}", path.display()))?;
        }
        let Replayed {
            map,
            records,
            valid_len,
            quarantined,
        } = replay(&bytes).with_context(|| {
            format!(
                "the state log {} is corrupt: besides projections and snapshots it holds \
                 users, API keys, tenants, policies and schemas, which do not rebuild from \
                 events; keep the file and restore the data dir from a backup",
                path.display()
            )
        })?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if valid_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                cut_bytes = bytes.len() - valid_len,
                "cutting a torn record off the end of the state log"
            );
            file.set_len(valid_len as u64)?;
            file.sync_all()?;
        }
        let map = Arc::new(RwLock::new(map));
        let mut log = Log {
            dir: dir.to_path_buf(),
            file,
            records,
            unsynced: false,
            last_sync: Instant::now(),
            syncs: 0,
            sync_every: RELAXED_SYNC_EVERY,
        };
        if !quarantined.is_empty() {
            quarantine(dir, &bytes, &quarantined)?;
            // The records are safe aside: drop them from the log, so the next start is clean.
            // Should the rewrite fail, the next start quarantines them again.
            if let Err(e) = log.compact(&map) {
                tracing::warn!(error = %e, "cannot rewrite the state log without its quarantined records");
            }
        }
        Ok(Self {
            map,
            log: Arc::new(Mutex::new(log)),
            relaxed: Arc::from(Vec::new()),
        })
    }

    /// The bytes of the log as they are now: whole records only (taken under the writers'
    /// lock), a state the store was in. Backups copy it.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn backup_copy(&self) -> anyhow::Result<Vec<u8>> {
        let log = self.log.lock();
        let path = log.dir.join(LOG_NAME);
        fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// The name of the log file in its directory (restores write it).
    pub const LOG_FILE: &'static str = LOG_NAME;

    /// Makes writes to `namespaces` relaxed: not synced on their own (see the module docs).
    /// Only for state that can be rebuilt from events.
    #[must_use]
    pub fn relax(mut self, namespaces: &[&str]) -> Self {
        self.relaxed = namespaces.iter().map(|n| (*n).to_owned()).collect();
        self
    }

    /// Syncs of the log since it was opened.
    pub fn syncs(&self) -> u64 {
        self.log.lock().syncs
    }

    fn is_relaxed(&self, namespace: &str) -> bool {
        self.relaxed.iter().any(|n| n == namespace)
    }

    /// Runs a write on a blocking thread (it syncs the file), holding the log's lock.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let (log, map) = (Arc::clone(&self.log), Arc::clone(&self.map));
        tokio::task::spawn_blocking(move || {
            let mut log = log.lock();
            let result = f(&mut Writer {
                log: &mut log,
                map: &map,
            });
            if result.is_ok() {
                log.compact_if_mostly_dead(&map);
            }
            result
        })
        .await
        .map_err(|e| StateError::Internal(anyhow!("state write task failed: {e}")))?
    }
}

impl Writer<'_> {
    /// Appends one record and syncs it, unless it is `relaxed` and the last sync is recent;
    /// the caller applies it to the map afterwards.
    fn append(&mut self, record: &[u8], relaxed: bool) -> Result<(), StateError> {
        let log = &mut *self.log;
        let unavailable =
            |e: std::io::Error| StateError::Unavailable(format!("cannot write the state log: {e}"));
        log.file.write_all(record).map_err(unavailable)?;
        log.records += 1;
        if relaxed && log.last_sync.elapsed() < log.sync_every {
            log.unsynced = true;
            return Ok(());
        }
        log.sync().map_err(unavailable)
    }
}

impl Drop for FileStateStore {
    fn drop(&mut self) {
        let mut log = self.log.lock();
        if log.unsynced
            && let Err(e) = log.sync()
        {
            tracing::warn!(error = %e, "cannot sync the state log's last relaxed writes");
        }
    }
}

impl Log {
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.syncs += 1;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn compact_if_mostly_dead(&mut self, map: &RwLock<StateMap>) {
        let live = map.read().len();
        if self.records >= COMPACT_MIN_RECORDS
            && self.records >= 3 * live
            && let Err(e) = self.compact(map)
        {
            // The old log is intact; compaction is retried on a later write.
            tracing::warn!(error = %e, "state log compaction failed");
        }
    }

    /// Rewrites the log with the live entries. Writers are held off by the log's lock, so the
    /// map cannot change meanwhile; readers go on.
    fn compact(&mut self, map: &RwLock<StateMap>) -> anyhow::Result<()> {
        let tmp = self.dir.join(format!("{LOG_NAME}.tmp"));
        let mut out = Vec::new();
        let map = map.read();
        for ((tenant, namespace, key), entry) in map.iter() {
            out.extend(encode(
                OP_PUT,
                tenant,
                namespace,
                key,
                entry.version,
                Some(&entry.value),
            )?);
        }
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(LOG_NAME))?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new()
            .append(true)
            .open(self.dir.join(LOG_NAME))?;
        self.records = map.len();
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> anyhow::Result<()> {
    let len = u32::try_from(s.len()).context("string too long for the state log")?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Encodes a record; refuses a value the log could not read back.
fn encode(
    op: u8,
    tenant: &str,
    namespace: &str,
    key: &str,
    version: u64,
    value: Option<&Value>,
) -> anyhow::Result<Vec<u8>> {
    let value = value
        .map(|v| storable_text(v, tenant, namespace, key))
        .transpose()?
        .unwrap_or_default();
    encode_text(op, tenant, namespace, key, version, &value)
}

/// Frames a record around a value's JSON text as given.
fn encode_text(
    op: u8,
    tenant: &str,
    namespace: &str,
    key: &str,
    version: u64,
    value: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut body = vec![op];
    put_str(&mut body, tenant)?;
    put_str(&mut body, namespace)?;
    put_str(&mut body, key)?;
    body.extend_from_slice(&version.to_le_bytes());
    put_str(&mut body, value)?;
    let len = u32::try_from(body.len()).context("state record too large")?;
    let mut record = Vec::with_capacity(body.len() + 8);
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    record.extend_from_slice(&body);
    Ok(record)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
}

enum Op {
    Put(StateKey, StateEntry),
    Delete(StateKey),
    /// A whole put whose value cannot be parsed.
    Unreadable {
        key: StateKey,
        version: u64,
        reason: String,
    },
}

/// Parses the record at `at`: `Some((op, next offset))` if it is whole and its checksum holds.
fn record_at(bytes: &[u8], at: usize) -> Option<(Op, usize)> {
    let mut cursor = Cursor { bytes, at };
    let len = cursor.u32()? as usize;
    let crc = cursor.u32()?;
    let body = cursor.take(len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let next = cursor.at;
    let mut b = Cursor { bytes: body, at: 0 };
    let op = *b.take(1)?.first()?;
    let key = (
        b.str()?.to_owned(),
        b.str()?.to_owned(),
        b.str()?.to_owned(),
    );
    let version = b.u64()?;
    let value = b.str()?;
    match op {
        OP_PUT => match serde_json::from_str(value) {
            Ok(value) => Some((Op::Put(key, StateEntry { value, version }), next)),
            Err(e) => Some((
                Op::Unreadable {
                    key,
                    version,
                    reason: e.to_string(),
                },
                next,
            )),
        },
        OP_DELETE => Some((Op::Delete(key), next)),
        _ => None,
    }
}

/// A whole record whose value cannot be read.
struct Quarantined {
    key: StateKey,
    version: u64,
    reason: String,
    /// Where the record lies in the log.
    bytes: std::ops::Range<usize>,
}

/// What replaying a log found.
struct Replayed {
    map: StateMap,
    records: usize,
    /// Length of the valid prefix (a torn tail is cut off after it).
    valid_len: usize,
    quarantined: Vec<Quarantined>,
}

/// Replays a log.
fn replay(bytes: &[u8]) -> anyhow::Result<Replayed> {
    let mut map = StateMap::default();
    let mut quarantined = Vec::new();
    let mut at = 0;
    let mut records = 0;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Some((op, next)) => {
                match op {
                    Op::Put(key, entry) => map.set(key, entry),
                    Op::Delete(key) => {
                        map.remove(&key);
                    }
                    Op::Unreadable {
                        key,
                        version,
                        reason,
                    } => {
                        map.remove(&key);
                        quarantined.push(Quarantined {
                            key,
                            version,
                            reason,
                            bytes: at..next,
                        });
                    }
                }
                records += 1;
                at = next;
            }
            None => {
                // A torn tail has nothing valid after it; anything valid after is corruption.
                if (at + 1..bytes.len()).any(|later| record_at(bytes, later).is_some()) {
                    bail!("bad record at byte {at} followed by valid records");
                }
                break;
            }
        }
    }
    Ok(Replayed {
        map,
        records,
        valid_len: at,
        quarantined,
    })
}

/// Appends the quarantined records to the quarantine file (synced) and reports each.
fn quarantine(dir: &Path, log: &[u8], records: &[Quarantined]) -> anyhow::Result<()> {
    let path = dir.join(QUARANTINE_NAME);
    let mut out = Vec::new();
    for record in records {
        out.extend_from_slice(&log[record.bytes.clone()]);
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.write_all(&out)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    for record in records {
        let (tenant, namespace, key) = &record.key;
        tracing::error!(
            tenant = %tenant,
            namespace = %namespace,
            key = %key,
            version = record.version,
            reason = %record.reason,
            quarantine = %path.display(),
            "a state record cannot be read back: it is moved to the quarantine file and its key \
             is left out; every other entry is loaded"
        );
    }
    Ok(())
}

fn internal(e: anyhow::Error) -> StateError {
    StateError::Internal(e)
}

#[async_trait]
impl StateStore for FileStateStore {
    async fn get(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StateEntry>, StateError> {
        Ok(self
            .map
            .read()
            .get(&StateMap::key(tenant, namespace, key))
            .cloned())
    }

    async fn put(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
        value: Value,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let relaxed = self.is_relaxed(namespace);
        let key = StateMap::key(tenant, namespace, key);
        self.write(move |w| {
            let version = w.map.read().next_version(&key, expected)?;
            let record =
                encode(OP_PUT, &key.0, &key.1, &key.2, version, Some(&value)).map_err(internal)?;
            w.append(&record, relaxed)?;
            w.map.write().set(key, StateEntry { value, version });
            Ok(version)
        })
        .await
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<bool, StateError> {
        let relaxed = self.is_relaxed(namespace);
        let key = StateMap::key(tenant, namespace, key);
        self.write(move |w| {
            if w.map.read().get(&key).is_none() {
                return Ok(false);
            }
            let record = encode(OP_DELETE, &key.0, &key.1, &key.2, 0, None).map_err(internal)?;
            w.append(&record, relaxed)?;
            Ok(w.map.write().remove(&key))
        })
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        namespace: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, StateEntry)>, StateError> {
        Ok(self.map.read().list(
            tenant,
            namespace,
            prefix.as_deref(),
            after.as_deref(),
            limit,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant() -> TenantId {
        TenantId::default_tenant()
    }

    #[tokio::test]
    async fn survives_reopen_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStateStore::open(dir.path()).unwrap();
            store
                .put(&tenant(), "p", "a", json!({"n": 1}), None)
                .await
                .unwrap();
            store
                .put(&tenant(), "p", "a", json!({"n": 2}), Some(1))
                .await
                .unwrap();
            store
                .put(&tenant(), "p", "b", json!(7), None)
                .await
                .unwrap();
            assert!(store.delete(&tenant(), "p", "b").await.unwrap());
        }
        let path = dir.path().join(LOG_NAME);
        let whole = fs::read(&path).unwrap();
        // A crash in the middle of a further write.
        let mut torn = whole.clone();
        torn.extend_from_slice(
            &encode(OP_PUT, "default", "p", "c", 1, Some(&json!(1))).unwrap()[..9],
        );
        fs::write(&path, &torn).unwrap();
        let store = FileStateStore::open(dir.path()).unwrap();
        let a = store.get(&tenant(), "p", "a").await.unwrap().unwrap();
        assert_eq!((a.value, a.version), (json!({"n": 2}), 2));
        assert!(store.get(&tenant(), "p", "b").await.unwrap().is_none());
        assert!(store.get(&tenant(), "p", "c").await.unwrap().is_none());
        assert_eq!(fs::read(&path).unwrap(), whole, "torn bytes cut off");
    }

    #[tokio::test]
    async fn refuses_a_corrupt_record_followed_by_valid_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStateStore::open(dir.path()).unwrap();
            for key in ["a", "b", "c"] {
                store
                    .put(&tenant(), "p", key, json!(key), None)
                    .await
                    .unwrap();
            }
        }
        let path = dir.path().join(LOG_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[12] ^= 0xff; // inside the first record's body
        fs::write(&path, &bytes).unwrap();
        let err = FileStateStore::open(dir.path()).err().unwrap();
        assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
        assert!(
            format!("{err:#}").contains("restore the data dir from a backup"),
            "the advice keeps users, keys and tenants: {err:#}"
        );
    }

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |v, _| Value::Array(vec![v]))
    }

    #[tokio::test]
    async fn refuses_to_write_a_value_it_could_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStateStore::open(dir.path()).unwrap();
            store
                .put(
                    &tenant(),
                    "snapshots",
                    "edge",
                    nested(READABLE_NESTING),
                    None,
                )
                .await
                .unwrap();
            let err = store
                .put(
                    &tenant(),
                    "snapshots",
                    "deep",
                    nested(READABLE_NESTING + 1),
                    None,
                )
                .await
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("default/snapshots/deep cannot be stored"),
                "{err}"
            );
            assert!(
                store
                    .get(&tenant(), "snapshots", "deep")
                    .await
                    .unwrap()
                    .is_none()
            );
            store
                .put(&tenant(), "users", "alice", json!({"n": 1}), None)
                .await
                .unwrap();
        }
        let store = FileStateStore::open(dir.path()).expect("everything written reads back");
        let edge = store.get(&tenant(), "snapshots", "edge").await.unwrap();
        assert_eq!(edge.unwrap().value, nested(READABLE_NESTING));
        assert!(
            store
                .get(&tenant(), "users", "alice")
                .await
                .unwrap()
                .is_some()
        );
        assert!(!dir.path().join(QUARANTINE_NAME).exists());
    }

    #[tokio::test]
    async fn an_unreadable_record_is_quarantined_and_every_other_entry_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_NAME);
        {
            let store = FileStateStore::open(dir.path()).unwrap();
            store
                .put(&tenant(), "users", "alice", json!({"n": 1}), None)
                .await
                .unwrap();
            store
                .put(&tenant(), "snapshots", "deep", json!({"old": true}), None)
                .await
                .unwrap();
        }
        // What an older writer could append: a whole record the reader cannot parse.
        let deep_text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let bad = encode_text(OP_PUT, "default", "snapshots", "deep", 2, &deep_text).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&bad);
        bytes.extend_from_slice(
            &encode(OP_PUT, "default", "tenants", "t1", 1, Some(&json!("after"))).unwrap(),
        );
        fs::write(&path, &bytes).unwrap();

        let store = FileStateStore::open(dir.path()).expect("not fatal");
        let alice = store.get(&tenant(), "users", "alice").await.unwrap();
        assert_eq!(alice.unwrap().value, json!({"n": 1}));
        let t1 = store.get(&tenant(), "tenants", "t1").await.unwrap();
        assert_eq!(t1.unwrap().value, json!("after"));
        assert!(
            store
                .get(&tenant(), "snapshots", "deep")
                .await
                .unwrap()
                .is_none(),
            "an older value is not served in place of the unreadable one"
        );
        let quarantined = fs::read(dir.path().join(QUARANTINE_NAME)).unwrap();
        assert_eq!(quarantined, bad, "the record is kept aside as it was");
        // The key can be written again, and the log no longer holds the record.
        store
            .put(&tenant(), "snapshots", "deep", json!({"new": true}), None)
            .await
            .unwrap();
        drop(store);
        assert!(
            !fs::read(&path)
                .unwrap()
                .windows(200)
                .any(|w| w == &deep_text.as_bytes()[..200])
        );
        let store = FileStateStore::open(dir.path()).unwrap();
        let deep = store.get(&tenant(), "snapshots", "deep").await.unwrap();
        assert_eq!(deep.unwrap().value, json!({"new": true}));
        assert_eq!(
            fs::read(dir.path().join(QUARANTINE_NAME)).unwrap(),
            bad,
            "a second start finds nothing more to quarantine"
        );
    }

    #[tokio::test]
    async fn relaxed_namespaces_ride_on_the_next_sync_and_survive_a_clean_close() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStateStore::open(dir.path())
                .unwrap()
                .relax(&["snapshots"]);
            // However slow this machine is, no relaxed write here is due for a sync.
            store.log.lock().sync_every = Duration::from_secs(3600);
            for key in ["a", "b", "c"] {
                store
                    .put(&tenant(), "snapshots", key, json!(key), None)
                    .await
                    .unwrap();
            }
            assert!(store.delete(&tenant(), "snapshots", "b").await.unwrap());
            assert_eq!(store.syncs(), 0, "relaxed writes are not synced one by one");
            assert_eq!(
                store
                    .get(&tenant(), "snapshots", "a")
                    .await
                    .unwrap()
                    .unwrap()
                    .value,
                json!("a"),
                "readers see relaxed writes at once"
            );
            store
                .put(&tenant(), "projections", "p", json!(1), None)
                .await
                .unwrap();
            assert_eq!(store.syncs(), 1, "other namespaces sync every write");
            store
                .put(&tenant(), "snapshots", "d", json!("d"), None)
                .await
                .unwrap();
            assert_eq!(store.syncs(), 1);
        }
        // Dropping the store synced "d"; everything reads back in order.
        let store = FileStateStore::open(dir.path()).unwrap();
        let keys: Vec<String> = store
            .list(&tenant(), "snapshots", None, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a", "c", "d"]);
        assert!(
            store
                .get(&tenant(), "projections", "p")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn relaxed_writes_are_synced_at_least_once_a_second_while_they_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::open(dir.path())
            .unwrap()
            .relax(&["snapshots"]);
        store.log.lock().sync_every = Duration::ZERO;
        store
            .put(&tenant(), "snapshots", "a", json!(1), None)
            .await
            .unwrap();
        assert_eq!(
            store.syncs(),
            1,
            "once the time is up, a relaxed write syncs"
        );
        store.log.lock().sync_every = Duration::from_secs(3600);
        store
            .put(&tenant(), "snapshots", "b", json!(1), None)
            .await
            .unwrap();
        assert_eq!(store.syncs(), 1);
    }

    #[tokio::test]
    async fn compaction_keeps_only_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::open(dir.path()).unwrap();
        for i in 0..(COMPACT_MIN_RECORDS as u64 + 10) {
            store
                .put(&tenant(), "p", "hot", json!(i), None)
                .await
                .unwrap();
        }
        store
            .put(&tenant(), "p", "cold", json!("x"), None)
            .await
            .unwrap();
        let size = fs::metadata(dir.path().join(LOG_NAME)).unwrap().len();
        assert!(size < 4096, "log was compacted, {size} bytes");
        drop(store);
        let store = FileStateStore::open(dir.path()).unwrap();
        let hot = store.get(&tenant(), "p", "hot").await.unwrap().unwrap();
        assert_eq!(hot.version, COMPACT_MIN_RECORDS as u64 + 10);
        assert_eq!(hot.value, json!(COMPACT_MIN_RECORDS as u64 + 9));
        assert!(store.get(&tenant(), "p", "cold").await.unwrap().is_some());
    }
}
