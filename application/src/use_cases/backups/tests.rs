//! The backup use cases over a mocked source, an in-memory target and a recording sink.

use std::collections::BTreeMap;
use std::sync::Arc;

use allsource_domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use parking_lot::Mutex;

use super::*;
use crate::ports::backup::{MockBackupSource, StoreCut};

struct FixedClock;
impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Default)]
struct MemTarget(Mutex<BTreeMap<String, Vec<u8>>>);

#[async_trait]
impl BackupTarget for MemTarget {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), BackupIoError> {
        self.0.lock().insert(path.to_owned(), bytes);
        Ok(())
    }
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, BackupIoError> {
        Ok(self.0.lock().get(path).cloned())
    }
    async fn list_dirs(&self) -> Result<Vec<String>, BackupIoError> {
        let mut dirs: Vec<String> = self
            .0
            .lock()
            .keys()
            .filter_map(|k| k.split('/').next().map(str::to_owned))
            .collect();
        dirs.dedup();
        Ok(dirs)
    }
}

fn ts(position: u64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + position as i64, 0)
        .unwrap()
}

/// A store of `head` events in pieces of 10, each piece's bytes naming its positions; the
/// state is the text `state@<head>`.
struct FakeCut {
    after: u64,
    head: u64,
}

#[async_trait]
impl StoreCut for FakeCut {
    fn to_position(&self) -> u64 {
        self.head
    }
    fn to_timestamp(&self) -> Option<DateTime<Utc>> {
        (self.head > 0).then(|| ts(self.head))
    }
    fn pieces(&self) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut first = self.after + 1;
        while first <= self.head {
            let last = (first + 9).min(self.head);
            out.push(Piece {
                kind: PieceKind::Events,
                name: format!("events-{first}-{last}"),
                first_position: first,
                last_position: last,
                events: last - first + 1,
                first_timestamp: Some(ts(first)),
                last_timestamp: Some(ts(last)),
            });
            first = last + 1;
        }
        out.push(Piece {
            kind: PieceKind::State,
            name: "state.log".into(),
            first_position: 0,
            last_position: 0,
            events: 0,
            first_timestamp: None,
            last_timestamp: None,
        });
        out
    }
    async fn read(&self, index: usize) -> Result<Vec<u8>, BackupIoError> {
        let piece = &self.pieces()[index];
        Ok(match piece.kind {
            PieceKind::Events => (piece.first_position..=piece.last_position)
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
            PieceKind::State => format!("state@{}", self.head).into_bytes(),
        })
    }
}

fn source(head: Arc<Mutex<u64>>) -> MockBackupSource {
    let mut source = MockBackupSource::new();
    let h = Arc::clone(&head);
    source.expect_head().returning(move || Ok(*h.lock()));
    source.expect_cut().returning(move |after| {
        Ok(Box::new(FakeCut {
            after,
            head: *head.lock(),
        }) as Box<dyn StoreCut>)
    });
    source
}

/// Records what a restore writes: positions restored, the state.
#[derive(Default)]
struct Recorder {
    positions: Vec<u64>,
    state: Option<String>,
    finished: bool,
}

#[async_trait]
impl RestoreSink for Recorder {
    async fn events(
        &mut self,
        _piece: &Piece,
        bytes: Vec<u8>,
        point: RestorePoint,
    ) -> Result<Option<(u64, u64, DateTime<Utc>)>, BackupIoError> {
        let text = String::from_utf8(bytes).unwrap();
        let before = self.positions.len();
        for p in text.split(',').map(|p| p.parse::<u64>().unwrap()) {
            if point.includes(p, ts(p)) {
                self.positions.push(p);
            }
        }
        let n = (self.positions.len() - before) as u64;
        Ok(self
            .positions
            .last()
            .filter(|_| n > 0)
            .map(|&p| (n, p, ts(p))))
    }
    async fn state(&mut self, bytes: Vec<u8>) -> Result<(), BackupIoError> {
        self.state = Some(String::from_utf8(bytes).unwrap());
        Ok(())
    }
    async fn finish(&mut self) -> Result<(), BackupIoError> {
        self.finished = true;
        Ok(())
    }
}

fn operator() -> Caller {
    Caller::new(TenantId::default_tenant())
}

fn backups(head: Arc<Mutex<u64>>, target: Arc<MemTarget>) -> Backups {
    Backups::new(Arc::new(source(head)), target, Arc::new(FixedClock))
}

#[tokio::test]
async fn a_chain_restores_every_event_once_with_the_newest_state() {
    let head = Arc::new(Mutex::new(25));
    let target = Arc::new(MemTarget::default());
    let b = backups(Arc::clone(&head), Arc::clone(&target));
    let full = b
        .create_now(BackupKind::Full, None, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        (full.from_position, full.to_position, full.event_count),
        (1, 25, 25)
    );
    *head.lock() = 47;
    let inc = b
        .create_now(BackupKind::Incremental, None, &NoProgress)
        .await
        .unwrap();
    assert_eq!(inc.since_backup.as_deref(), Some(full.backup_id.as_str()));
    assert_eq!(
        (inc.from_position, inc.to_position, inc.event_count),
        (26, 47, 22)
    );

    let mut sink = Recorder::default();
    let report = restore(
        target.as_ref(),
        None,
        RestorePoint::Latest,
        false,
        &mut sink,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(sink.positions, (1..=47).collect::<Vec<_>>());
    assert_eq!(sink.state.as_deref(), Some("state@47"));
    assert!(sink.finished);
    assert_eq!(
        report.chain,
        vec![full.backup_id.clone(), inc.backup_id.clone()]
    );
    assert_eq!((report.events, report.to_position), (47, 47));
}

#[tokio::test]
async fn a_point_in_time_restore_stops_at_the_position_and_takes_an_older_state() {
    let head = Arc::new(Mutex::new(25));
    let target = Arc::new(MemTarget::default());
    let b = backups(Arc::clone(&head), Arc::clone(&target));
    let full = b
        .create_now(BackupKind::Full, None, &NoProgress)
        .await
        .unwrap();
    *head.lock() = 47;
    b.create_now(BackupKind::Incremental, None, &NoProgress)
        .await
        .unwrap();

    let mut sink = Recorder::default();
    let report = restore(
        target.as_ref(),
        None,
        RestorePoint::Position(33),
        false,
        &mut sink,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(sink.positions, (1..=33).collect::<Vec<_>>());
    assert_eq!(
        sink.state.as_deref(),
        Some("state@25"),
        "the state of the full backup"
    );
    assert_eq!(report.state_from.as_deref(), Some(full.backup_id.as_str()));

    let mut sink = Recorder::default();
    restore(
        target.as_ref(),
        None,
        RestorePoint::Time(ts(40)),
        false,
        &mut sink,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(sink.positions, (1..=40).collect::<Vec<_>>());

    // Before the full backup's cut: no state is that old.
    let mut sink = Recorder::default();
    let refused = restore(
        target.as_ref(),
        None,
        RestorePoint::Position(10),
        false,
        &mut sink,
        &NoProgress,
    )
    .await;
    assert!(
        matches!(refused, Err(BackupError::Conflict(_))),
        "{refused:?}"
    );
    assert!(!sink.finished);
    let mut sink = Recorder::default();
    restore(
        target.as_ref(),
        None,
        RestorePoint::Position(10),
        true,
        &mut sink,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(sink.positions, (1..=10).collect::<Vec<_>>());
    assert_eq!(sink.state, None);

    // Past the cut: refused, not silently shorter.
    let mut sink = Recorder::default();
    let refused = restore(
        target.as_ref(),
        None,
        RestorePoint::Position(48),
        false,
        &mut sink,
        &NoProgress,
    )
    .await;
    assert!(
        matches!(refused, Err(BackupError::Conflict(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_damaged_file_fails_verify_and_restore() {
    let head = Arc::new(Mutex::new(15));
    let target = Arc::new(MemTarget::default());
    let b = backups(head, Arc::clone(&target));
    let full = b
        .create_now(BackupKind::Full, None, &NoProgress)
        .await
        .unwrap();
    let clean = b.verify(&operator(), &full.backup_id).await.unwrap();
    assert!(clean.ok, "{clean:?}");
    assert_eq!(clean.files_checked, 3);

    let path = format!("{}/{}", full.backup_id, full.files[1].object);
    target.0.lock().get_mut(&path).unwrap()[0] ^= 0xff;
    let report = b.verify(&operator(), &full.backup_id).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(
        report.problems[0].contains(&full.files[1].object),
        "{report:?}"
    );
    let mut sink = Recorder::default();
    let refused = restore(
        target.as_ref(),
        None,
        RestorePoint::Latest,
        false,
        &mut sink,
        &NoProgress,
    )
    .await;
    assert!(
        matches!(refused, Err(BackupError::Corrupt(_))),
        "{refused:?}"
    );
    assert!(!sink.finished);
}

#[tokio::test]
async fn jobs_run_in_the_background_and_are_listed() {
    let head = Arc::new(Mutex::new(5));
    let target = Arc::new(MemTarget::default());
    let b = backups(head, target);
    let job = b
        .start(
            &operator(),
            StartBackupInput {
                kind: Some("full".into()),
                since_backup: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(job.state, BackupState::Running);
    for _ in 0..100 {
        if b.get(&operator(), &job.backup_id).await.unwrap().state == BackupState::Completed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let done = b.get(&operator(), &job.backup_id).await.unwrap();
    assert_eq!(done.state, BackupState::Completed);
    assert_eq!((done.event_count, done.to_position), (Some(5), Some(5)));
    let listed = b.list(&operator()).await.unwrap();
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn only_operators_and_valid_requests_start_backups() {
    let b = backups(Arc::new(Mutex::new(5)), Arc::new(MemTarget::default()));
    let tenant_admin = Caller::new(TenantId::parse("acme").unwrap());
    let refused = b.start(&tenant_admin, StartBackupInput::default()).await;
    assert!(
        matches!(refused, Err(BackupError::Forbidden(_))),
        "{refused:?}"
    );
    let refused = b.list(&tenant_admin).await;
    assert!(matches!(refused, Err(BackupError::Forbidden(_))));
    for (kind, since, field) in [
        (None, None, "kind"),
        (Some("partial"), None, "kind"),
        (Some("full"), Some("x"), "since_backup"),
        (Some("incremental"), Some("../etc"), "since_backup"),
    ] {
        let input = StartBackupInput {
            kind: kind.map(str::to_owned),
            since_backup: since.map(str::to_owned),
        };
        match b.start(&operator(), input).await {
            Err(BackupError::Invalid(errors)) => assert_eq!(errors[0].field, field),
            other => panic!("{kind:?} {since:?}: {other:?}"),
        }
    }
    // An incremental backup needs an earlier one.
    let refused = b
        .start(
            &operator(),
            StartBackupInput {
                kind: Some("incremental".into()),
                since_backup: None,
            },
        )
        .await;
    assert!(
        matches!(refused, Err(BackupError::Conflict(_))),
        "{refused:?}"
    );
    let missing = b.get(&operator(), "0000-nope").await;
    assert!(matches!(missing, Err(BackupError::NotFound(_))));
}

#[tokio::test]
async fn a_backend_without_backups_is_refused_before_any_job() {
    let mut source = MockBackupSource::new();
    source
        .expect_head()
        .returning(|| Err(BackupIoError::Unsupported("postgres: use pg_dump".into())));
    let b = Backups::new(
        Arc::new(source),
        Arc::new(MemTarget::default()),
        Arc::new(FixedClock),
    );
    let refused = b
        .start(
            &operator(),
            StartBackupInput {
                kind: Some("full".into()),
                since_backup: None,
            },
        )
        .await;
    assert!(
        matches!(refused, Err(BackupError::Conflict(ref m)) if m.contains("pg_dump")),
        "{refused:?}"
    );
    assert!(b.list(&operator()).await.unwrap().is_empty());
}
