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

    /// Spawns the runner on the current tokio runtime.
    pub fn spawn(self) -> RunnerHandle {
        let (stop, mut stopped) = watch::channel(false);
        let engine = self.engine.clone();
        let task = tokio::spawn(async move {
            loop {
                self.engine.catch_up_all().await;
                tokio::select! {
                    () = self.engine.wake.notified() => {}
                    () = tokio::time::sleep(self.poll_interval) => {}
                    _ = stopped.changed() => return,
                }
                if *stopped.borrow() {
                    return;
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
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!("the projection runner panicked");
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
