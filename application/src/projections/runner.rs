//! The projection runner: one task that keeps every projection of every tenant caught up with
//! the committed log. It wakes when an append is acknowledged ([`ProjectionNotifier`], an
//! [`AppendGuard`]) and at least every poll interval, so it also sees what other nodes appended
//! (PostgreSQL backend).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::engine::ProjectionEngine;
use crate::Caller;
use crate::ports::AppendReceipt;
use crate::supervise::supervise;
use crate::use_cases::AppendGuard;

/// Starts the runner.
pub struct ProjectionRunner {
    engine: Arc<ProjectionEngine>,
    poll_interval: Duration,
}

/// A running runner; [`stop`](RunnerHandle::stop) ends it after the batch in progress.
pub struct RunnerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    engine: Arc<ProjectionEngine>,
}

impl ProjectionRunner {
    pub fn new(engine: Arc<ProjectionEngine>, poll_interval: Duration) -> Self {
        Self {
            engine,
            poll_interval: poll_interval.max(Duration::from_millis(10)),
        }
    }

    /// Spawns the runner on the current tokio runtime, [supervised](crate::supervise): a
    /// panic while catching up is logged and the runner restarted.
    pub fn spawn(self) -> RunnerHandle {
        let (stop, stopped) = watch::channel(false);
        let engine = self.engine.clone();
        let poll_interval = self.poll_interval;
        let runner = self.engine;
        let task = supervise("projection runner", move || {
            let engine = runner.clone();
            let mut stopped = stopped.clone();
            async move {
                loop {
                    if *stopped.borrow() {
                        return;
                    }
                    engine.catch_up_all().await;
                    tokio::select! {
                        () = engine.wake.notified() => {}
                        () = tokio::time::sleep(poll_interval) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        });
        RunnerHandle { stop, task, engine }
    }
}

impl RunnerHandle {
    /// Stops the runner and waits for it (its state is durable after every batch).
    pub async fn stop(self) {
        self.engine.stop();
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the projection runner's supervisor failed");
        }
    }
}

/// The append guard that wakes the runner after every acknowledged append.
pub struct ProjectionNotifier {
    engine: Arc<ProjectionEngine>,
}

impl ProjectionNotifier {
    pub fn new(engine: Arc<ProjectionEngine>) -> Self {
        Self { engine }
    }
}

#[async_trait::async_trait]
impl AppendGuard for ProjectionNotifier {
    async fn after_append(&self, _caller: &Caller, receipts: &[AppendReceipt], _: &[usize]) {
        if receipts.iter().any(|r| !r.duplicate) {
            self.engine.wake();
        }
    }
}
