//! `BackgroundSnapshots`: the [`SnapshotScheduler`] that takes automatic snapshots on a tokio
//! task, off the append path. It has no I/O of its own: it calls [`Snapshots`], which reaches
//! storage through the ports.
//!
//! - **Bounded.** Jobs wait in a channel of fixed capacity; when it is full, `schedule` drops
//!   the job at once (counted in [`SnapshotJobStats::dropped`]) instead of making the append
//!   wait. A dropped snapshot only means a later read folds more events.
//! - **Deduplicated.** At most one job per (tenant, entity) waits at a time; scheduling an
//!   entity that is already waiting raises the version of the waiting job, so a hot entity
//!   costs one snapshot per turn of the worker, at its newest due version.
//! - **Never fatal.** A failing snapshot is logged and counted; nothing else happens. A worker
//!   that panics is logged and restarted by [`supervise`] on the same queue (its job is lost,
//!   which only means a later read folds more).
//!
//! One worker runs the jobs in order. It stops when the scheduler is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use allsource_domain::{EntityId, TenantId, Version};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::Snapshots;
use crate::ports::SnapshotScheduler;
use crate::supervise::supervise;

type Job = (TenantId, EntityId);

/// Counters of the background snapshot jobs.
#[derive(Debug, Default)]
pub struct SnapshotJobStats {
    /// Snapshots written.
    pub taken: AtomicU64,
    /// Jobs that failed (store unavailable, ...), logged.
    pub failed: AtomicU64,
    /// Jobs dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// Runs automatic snapshots in the background (see the module docs).
pub struct BackgroundSnapshots {
    queue: mpsc::Sender<Job>,
    /// The version each waiting job will snapshot.
    pending: Arc<Mutex<HashMap<Job, Version>>>,
    stats: Arc<SnapshotJobStats>,
}

impl BackgroundSnapshots {
    /// Starts the worker on the current tokio runtime, with room for `capacity` waiting jobs.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(snapshots: Snapshots, capacity: usize) -> Arc<Self> {
        let (queue, jobs) = mpsc::channel::<Job>(capacity.max(1));
        let pending: Arc<Mutex<HashMap<Job, Version>>> = Arc::default();
        let stats: Arc<SnapshotJobStats> = Arc::default();
        let (worker_pending, worker_stats) = (Arc::clone(&pending), Arc::clone(&stats));
        // The receiver outlives a worker that dies: the supervisor starts a new one on it.
        let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
        supervise("snapshot worker", move || {
            let (jobs, pending, stats) = (
                Arc::clone(&jobs),
                Arc::clone(&worker_pending),
                Arc::clone(&worker_stats),
            );
            let snapshots = snapshots.clone();
            async move {
                let mut jobs = jobs.lock().await;
                while let Some(job) = jobs.recv().await {
                    let Some(version) = pending.lock().remove(&job) else {
                        continue;
                    };
                    let (tenant, entity_id) = job;
                    match snapshots.take_automatic(&tenant, &entity_id, version).await {
                        Ok(_) => {
                            stats.taken.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("allsource_snapshot_jobs_total", "outcome" => "taken")
                                .increment(1);
                        }
                        Err(error) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("allsource_snapshot_jobs_total", "outcome" => "failed")
                                .increment(1);
                            tracing::warn!(
                                %tenant, entity_id = %entity_id, version = version.get(), %error,
                                "automatic snapshot failed"
                            );
                        }
                    }
                }
            }
        });
        Arc::new(Self {
            queue,
            pending,
            stats,
        })
    }

    pub fn stats(&self) -> &SnapshotJobStats {
        &self.stats
    }

    /// Jobs waiting (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.pending.lock().len()
    }
}

impl SnapshotScheduler for BackgroundSnapshots {
    fn schedule(&self, tenant: &TenantId, entity_id: &EntityId, version: Version) -> bool {
        let job = (tenant.clone(), entity_id.clone());
        // Held across `try_send` (which never waits) so the worker cannot take the job before
        // its version is recorded.
        let mut pending = self.pending.lock();
        if let Some(waiting) = pending.get_mut(&job) {
            *waiting = (*waiting).max(version);
            return true;
        }
        pending.insert(job.clone(), version);
        if self.queue.try_send(job.clone()).is_ok() {
            return true;
        }
        pending.remove(&job);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("allsource_snapshot_jobs_total", "outcome" => "dropped").increment(1);
        tracing::debug!(%tenant, entity_id = %entity_id, "snapshot queue full; job dropped");
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::Caller;
    use crate::ports::{Clock, EventStore, StateStore};
    use crate::testing::{Given, MemoryStateStore};
    use crate::use_cases::{
        AppendEventInput, AppendEvents, AppendLimits, SnapshotPolicy, SnapshotTrigger,
    };

    struct SystemClock;
    impl Clock for SystemClock {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            chrono::Utc::now()
        }
    }

    fn input(entity: &str, n: u64) -> AppendEventInput {
        AppendEventInput {
            event_type: Some("counted".into()),
            entity_id: Some(entity.into()),
            payload: Some(
                serde_json::value::to_raw_value(&json!({ "n": n })).expect("valid JSON in test"),
            ),
            ..Default::default()
        }
    }

    async fn eventually(mut check: impl AsyncFnMut() -> bool) {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition never held");
    }

    #[tokio::test]
    async fn appends_every_n_events_leave_snapshots_in_the_state_store() {
        let events: Arc<dyn EventStore> = Given::tenant("default").store();
        let state: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
        let policy = SnapshotPolicy {
            every_n_events: 5,
            keep_per_entity: 2,
        };
        let snapshots = Snapshots::new(
            Arc::clone(&events),
            Arc::clone(&state),
            Arc::new(SystemClock),
            policy,
        );
        let scheduler = BackgroundSnapshots::start(snapshots.clone(), 16);
        let append =
            AppendEvents::new(Arc::clone(&events), AppendLimits::default()).with_guard(Arc::new(
                SnapshotTrigger::new(policy.every_n_events, scheduler.clone()),
            ));
        let caller = Caller::default_tenant();
        for n in 1..=17 {
            append.one(&caller, input("counter", n)).await.unwrap();
        }
        let counter = EntityId::parse("counter").unwrap();
        let tenant = TenantId::default_tenant();
        // Jobs of one entity waiting together are merged, so 5 and 10 may never be taken; 15
        // always is, and never more than the 2 kept remain.
        eventually(async || {
            let all = snapshots.archive().all(&tenant, &counter).await.unwrap();
            let versions: Vec<u64> = all.iter().map(|s| s.state.version.get()).collect();
            assert!(versions.len() <= 2 && versions.iter().all(|v| v % 5 == 0));
            versions.last() == Some(&15)
        })
        .await;
        let newest = snapshots
            .archive()
            .newest(&tenant, &counter, None, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(newest.state.state, json!({"n": 15}));
        assert_eq!(scheduler.stats().failed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_jobs_and_a_waiting_entity_is_merged() {
        let snapshots = Snapshots::new(
            Given::tenant("default").store(),
            Arc::new(MemoryStateStore::new()),
            Arc::new(SystemClock),
            SnapshotPolicy::default(),
        );
        // A current-thread runtime: the worker cannot run while this test does not await.
        let scheduler = BackgroundSnapshots::start(snapshots, 1);
        let tenant = TenantId::default_tenant();
        let (a, b) = (EntityId::parse("a").unwrap(), EntityId::parse("b").unwrap());
        assert!(scheduler.schedule(&tenant, &a, Version::new(5)));
        assert!(scheduler.schedule(&tenant, &a, Version::new(10)));
        assert!(!scheduler.schedule(&tenant, &b, Version::new(5)));
        assert_eq!(scheduler.waiting(), 1);
        assert_eq!(
            scheduler.pending.lock().get(&(tenant, a)),
            Some(&Version::new(10))
        );
        assert_eq!(scheduler.stats().dropped.load(Ordering::Relaxed), 1);
        // Entity `a` has no version 10: the job runs, writes nothing, and fails nothing.
        eventually(async || scheduler.waiting() == 0).await;
        eventually(async || scheduler.stats().taken.load(Ordering::Relaxed) == 1).await;
    }

    /// A clock whose first reading panics, as a bug in a job would.
    struct PanicsOnce(std::sync::atomic::AtomicBool);
    impl Clock for PanicsOnce {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            assert!(
                self.0.swap(true, Ordering::SeqCst),
                "a bug in a snapshot job"
            );
            chrono::Utc::now()
        }
    }

    #[tokio::test]
    async fn a_worker_that_panics_is_restarted_on_the_same_queue() {
        let given = Given::tenant("default")
            .event("a", "t", json!({"n": 1}))
            .event("b", "t", json!({"n": 2}));
        let clock = Arc::new(PanicsOnce(Default::default()));
        let snapshots = Snapshots::new(
            given.store(),
            Arc::new(MemoryStateStore::new()),
            Arc::clone(&clock) as Arc<dyn Clock>,
            SnapshotPolicy::default(),
        );
        let scheduler = BackgroundSnapshots::start(snapshots.clone(), 16);
        let tenant = TenantId::default_tenant();
        let (a, b) = (EntityId::parse("a").unwrap(), EntityId::parse("b").unwrap());
        assert!(scheduler.schedule(&tenant, &a, Version::new(1)));
        eventually(async || clock.0.load(Ordering::SeqCst)).await;
        // The job of `a` died with its worker; the next one is served by the restarted worker.
        assert!(scheduler.schedule(&tenant, &b, Version::new(1)));
        eventually(async || scheduler.stats().taken.load(Ordering::Relaxed) == 1).await;
        let newest = snapshots
            .archive()
            .newest(&tenant, &b, None, None)
            .await
            .unwrap()
            .expect("b's snapshot");
        assert_eq!(newest.state.state, json!({"n": 2}));
    }
}
