//! Execution: one worker per enabled pipeline, and the [`Workers`] that start and stop them.
//!
//! # A worker
//! 1. **Lease.** It takes the pipeline's processing lease in its checkpoint record (a
//!    compare-and-swap on the record's version): free, expired, or already this node's.
//!    Otherwise it waits for the lease to run out (`pipelines.lease_ms`). So when several nodes
//!    share one state store (PostgreSQL), one node runs a pipeline at a time.
//! 2. **Follow.** It opens a [`Subscription`] of the tenant's log after the checkpoint's
//!    position, with the pipeline's source filters.
//! 3. **Process.** Each event becomes a record that goes through the operators in order
//!    (`enrich` looks up through the [`Lookups`]); what comes out of the last one goes to its
//!    outputs. Windows close when the watermark passes them: events move it, and so does the
//!    clock, on every tick, for windows over the server's own timestamps.
//! 4. **Commit.** Every `commit_interval` (or `batch_events` events) it appends the derived
//!    events (ids from [`derived_event_id`], so a re-emission is a no-op), writes the result
//!    rows, then writes the checkpoint — position, operator state and counters in one value,
//!    a compare-and-swap that also renews the lease. A crash anywhere in between resumes from
//!    the previous checkpoint and re-emits the same events under the same ids: nothing is lost
//!    and nothing is counted twice.
//!
//! A deactivated tenant's pipeline waits (keeping its lease) until the tenant is active
//! again. A failure that may pass (storage unavailable, a quota) ends the run without
//! committing; the supervisor starts it again after a pause, from the checkpoint. A
//! failure of one record (an operator error, an event its output refuses: a schema, a size)
//! is recorded in the checkpoint and processing goes on, or pauses (`on_error: pause`).
//!
//! # Bounds
//! At most `concurrency` pipelines process at once on a node (a semaphore, taken per batch):
//! the others wait their turn, their lag grows, and the request path keeps its cores.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use allsource_domain::pipeline::{
    Effects, EnrichSource, Operator, Output, PipelineDefinition, PipelineState, Record,
};
use allsource_domain::{Event, EventFilter, TenantId};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::lookup::{LookupError, Lookups};
use super::records::{
    CHECKPOINTS, Checkpoint, DEFINITIONS, Failure, RESULTS, ResultRow, Stored, TENANTS,
    derived_event_id, result_key, result_prefix,
};
use crate::Caller;
use crate::fleet::Fleet;
pub(crate) use crate::fleet::list_all;
use crate::ports::{EventStore, StateEntry, StateError, StateStore};
use crate::subscriptions::{CommitFeed, Delivery as Next, Subscription, SubscriptionError};
use crate::supervise::supervise;
use crate::use_cases::{AppendError, AppendEventInput, AppendEvents};

/// Keys read per page of the state store.
const PAGE: usize = 500;

/// Derived events pass through at most this many pipelines: an event derived this many times
/// is not processed again (a cycle of pipelines ends here, recorded as a failure).
pub const MAX_HOPS: u64 = 8;

/// How often a worker of a deactivated (or unreadable) tenant looks again.
const INACTIVE_TENANT_RECHECK: Duration = Duration::from_millis(500);

/// How pipelines run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// The longest time between processing an event and committing it.
    pub commit_interval: Duration,
    /// Events processed between two commits at most.
    pub batch_events: usize,
    /// How often the clock closes windows over the server's timestamps.
    pub tick: Duration,
    /// How far behind the clock those windows close: events are published a moment after
    /// their timestamp is taken (on PostgreSQL, other nodes' events up to the listener's
    /// delay later), and none of them may arrive after its window closed.
    pub clock_grace: Duration,
    /// How long a node's lease on a pipeline lasts without renewal.
    pub lease: Duration,
    /// How often every tenant's definitions are read again (how another node's changes
    /// arrive).
    pub rescan_interval: Duration,
    /// Pipelines processing at once on this node.
    pub concurrency: usize,
    /// This node's name in leases (`None`: random per process; see the webhooks' config).
    pub node: Option<String>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_millis(100),
            batch_events: 1000,
            tick: Duration::from_millis(250),
            clock_grace: Duration::from_secs(2),
            lease: Duration::from_secs(30),
            rescan_interval: Duration::from_secs(5),
            concurrency: 1,
            node: None,
        }
    }
}

impl PipelineConfig {
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis())
            .unwrap_or(i64::MAX)
            .max(10)
    }
}

/// What every worker of this node uses.
pub(crate) struct Shared {
    pub store: Arc<dyn EventStore>,
    pub feed: Arc<CommitFeed>,
    pub state: Arc<dyn StateStore>,
    pub append: AppendEvents,
    pub lookups: Arc<dyn Lookups>,
    /// A deactivated tenant's pipelines wait (nothing is skipped).
    pub tenants: Arc<dyn crate::quota::TenantGate>,
    pub config: PipelineConfig,
    pub node: String,
    pub permits: Arc<Semaphore>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A held lease: the checkpoint record's version as this node last wrote it.
#[derive(Debug, Clone, Copy)]
struct Lease {
    version: u64,
    until_ms: i64,
}

enum Flow {
    LostLease,
    Ended,
}

/// A failure that may pass: the run ends uncommitted and starts again from the checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transient(String);

/// One derived event or result row waiting for the next commit.
struct Emission {
    output: usize,
    record: Record,
    /// How many pipelines derived the source event in a row.
    hops: u64,
}

/// The subscription's `next()` in progress, owning the subscription until it is done.
type Reading = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Subscription, Result<Next, SubscriptionError>)> + Send>,
>;

/// A derived event to append.
struct Derived {
    output: usize,
    entity_id: String,
    event_type: String,
    record: Record,
    hops: u64,
}

/// The state of one run between two commits.
struct Run {
    checkpoint: Checkpoint,
    pending: Vec<Emission>,
    /// Events processed since the last commit.
    uncommitted: usize,
    /// A record failed under `on_error: pause`.
    pause: bool,
    /// [`hops`] of the source event being processed (0 for windows the clock closes).
    hops: u64,
}

/// One pipeline's worker.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    tenant: TenantId,
    stored: Stored,
    definition: PipelineDefinition,
    id: String,
}

impl Worker {
    pub(crate) fn new(
        shared: Arc<Shared>,
        tenant: TenantId,
        stored: Stored,
        definition: PipelineDefinition,
    ) -> Self {
        Self {
            id: stored.id.to_string(),
            shared,
            tenant,
            stored,
            definition,
        }
    }

    pub(crate) async fn run(&self) -> anyhow::Result<()> {
        loop {
            let Some((mut lease, checkpoint)) = self.acquire().await? else {
                return Ok(());
            };
            let flow = if checkpoint.paused {
                self.idle(&mut lease).await?
            } else {
                self.follow(&mut lease, checkpoint).await?
            };
            match flow {
                Flow::LostLease => {
                    tracing::debug!(pipeline = %self.id, tenant = %self.tenant,
                                    "pipeline lease lost or checkpoint changed; taking it again");
                }
                Flow::Ended => return Ok(()),
            }
        }
    }

    /// Step 1: waits for the lease; `None` when the pipeline is gone or a newer generation of
    /// it is stored (this worker is about to be replaced). A checkpoint of an older
    /// generation (the definition changed, or was reset) is replaced by a fresh one here, by
    /// whichever worker holds the lease, so the change takes effect exactly once.
    async fn acquire(&self) -> anyhow::Result<Option<(Lease, Checkpoint)>> {
        let lease_ms = self.shared.config.lease_ms();
        let state = &self.shared.state;
        loop {
            let entry = state.get(&self.tenant, CHECKPOINTS, &self.id).await?;
            let (mut checkpoint, version) = match entry {
                Some(entry) => (
                    Checkpoint::from_json(&entry.value).map_err(anyhow::Error::msg)?,
                    Some(entry.version),
                ),
                None => {
                    if state
                        .get(&self.tenant, DEFINITIONS, &self.id)
                        .await?
                        .is_none()
                    {
                        return Ok(None);
                    }
                    (self.fresh(), Some(0))
                }
            };
            if checkpoint.generation > self.stored.generation {
                // A newer definition is stored: this node's workers pick it up; the lease is
                // left to them.
                return Ok(None);
            }
            let now = now_ms();
            let ours = checkpoint.holder.as_deref() == Some(self.shared.node.as_str());
            if checkpoint.holder.is_none() || ours || checkpoint.lease_until_ms <= now {
                let fresh_generation = checkpoint.generation < self.stored.generation;
                if fresh_generation {
                    checkpoint = self.fresh();
                }
                checkpoint.holder = Some(self.shared.node.clone());
                checkpoint.lease_until_ms = now.saturating_add(lease_ms);
                match state
                    .put(
                        &self.tenant,
                        CHECKPOINTS,
                        &self.id,
                        checkpoint.to_json(),
                        version,
                    )
                    .await
                {
                    Ok(version) => {
                        if fresh_generation {
                            self.clear_old_results().await;
                        }
                        let lease = Lease {
                            version,
                            until_ms: checkpoint.lease_until_ms,
                        };
                        return Ok(Some((lease, checkpoint)));
                    }
                    Err(StateError::VersionConflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let wait = (checkpoint.lease_until_ms - now).clamp(10, lease_ms / 2 + 10);
            tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
        }
    }

    fn fresh(&self) -> Checkpoint {
        Checkpoint::fresh(
            self.stored.generation,
            self.stored.start_position,
            PipelineState::new(&self.definition),
        )
    }

    /// Deletes the result rows of earlier generations.
    async fn clear_old_results(&self) {
        let prefix = result_prefix(&self.id);
        let mut after = None;
        loop {
            let page = match self
                .shared
                .state
                .list(
                    &self.tenant,
                    RESULTS,
                    Some(prefix.clone()),
                    after.clone(),
                    PAGE,
                )
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(pipeline = %self.id, error = %e,
                                   "old pipeline results not cleared (readers skip them)");
                    return;
                }
            };
            let done = page.len() < PAGE;
            after = page.last().map(|(k, _)| k.clone());
            for (key, entry) in page {
                let old = entry
                    .value
                    .get("generation")
                    .and_then(Value::as_u64)
                    .is_none_or(|g| g < self.stored.generation);
                if old {
                    let _ = self.shared.state.delete(&self.tenant, RESULTS, &key).await;
                }
            }
            if done {
                return;
            }
        }
    }

    /// Writes the checkpoint (renewing the lease); `false` when it changed under us (another
    /// node took the lease, or the pipeline was updated, reset or deleted).
    async fn write_checkpoint(
        &self,
        lease: &mut Lease,
        checkpoint: &mut Checkpoint,
    ) -> anyhow::Result<bool> {
        checkpoint.holder = Some(self.shared.node.clone());
        checkpoint.lease_until_ms = now_ms().saturating_add(self.shared.config.lease_ms());
        match self
            .shared
            .state
            .put(
                &self.tenant,
                CHECKPOINTS,
                &self.id,
                checkpoint.to_json(),
                Some(lease.version),
            )
            .await
        {
            Ok(version) => {
                *lease = Lease {
                    version,
                    until_ms: checkpoint.lease_until_ms,
                };
                Ok(true)
            }
            Err(StateError::VersionConflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn until_renewal(&self, lease: &Lease) -> Duration {
        let renew_at = lease.until_ms - self.shared.config.lease_ms() / 2;
        Duration::from_millis((renew_at - now_ms()).max(0).unsigned_abs())
    }

    /// A paused pipeline holds its lease and does nothing until its checkpoint is changed
    /// (an update or a reset resumes it).
    async fn idle(&self, lease: &mut Lease) -> anyhow::Result<Flow> {
        loop {
            tokio::time::sleep(self.until_renewal(lease)).await;
            let Some(entry) = self
                .shared
                .state
                .get(&self.tenant, CHECKPOINTS, &self.id)
                .await?
            else {
                return Ok(Flow::Ended);
            };
            if entry.version != lease.version {
                return Ok(Flow::LostLease);
            }
            let mut checkpoint = Checkpoint::from_json(&entry.value).map_err(anyhow::Error::msg)?;
            if !self.write_checkpoint(lease, &mut checkpoint).await? {
                return Ok(Flow::LostLease);
            }
        }
    }

    /// Steps 2–4 while the lease is held.
    async fn follow(&self, lease: &mut Lease, checkpoint: Checkpoint) -> anyhow::Result<Flow> {
        let filter = EventFilter {
            types: self.definition.source.clone(),
            entity_id: None,
        };
        let subscription = Subscription::open(
            self.shared.store.clone(),
            self.shared.feed.clone(),
            self.tenant.clone(),
            filter,
            Some(checkpoint.position),
        );
        let caught_up = subscription.waiting_live();
        let mut run = Run {
            checkpoint,
            pending: Vec::new(),
            uncommitted: 0,
            pause: false,
            hops: 0,
        };
        let tick = self.shared.config.tick;
        let mut flush_at: Option<tokio::time::Instant> = None;
        // The subscription's `next()` is one future kept across the timers: a tick never
        // cancels a storage read in progress (a read slower than the tick would otherwise be
        // started again for ever). It owns the subscription and gives it back when it is done.
        let mut parked = Some(subscription);
        let mut reading: Option<Reading> = None;
        loop {
            if let Some(mut subscription) = parked.take() {
                reading = Some(Box::pin(async move {
                    let next = subscription.next().await;
                    (subscription, next)
                }));
            }
            let Some(read) = reading.as_mut() else {
                return Err(anyhow::anyhow!("a pipeline worker lost its subscription"));
            };
            let renewal = self.until_renewal(lease);
            let wake = flush_at.map_or(tick, |at| {
                at.saturating_duration_since(tokio::time::Instant::now())
                    .min(tick)
            });
            // Biased: a ready read wins, so the clock never sees a group already queued.
            let woke = tokio::select! {
                biased;
                (subscription, next) = read => Some((subscription, next)),
                () = tokio::time::sleep(wake.min(renewal)) => None,
            };
            // A deactivated tenant's events wait here, without holding a processing permit
            // (which would stop every other tenant's pipelines).
            if matches!(&woke, Some((_, Ok(Next::Event { .. }))))
                && !self.wait_until_active(lease, &mut run).await?
            {
                return Ok(Flow::LostLease);
            }
            let permit = self
                .shared
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| anyhow::anyhow!("pipelines are shutting down"))?;
            match woke {
                Some((mut subscription, next)) => {
                    reading = None;
                    match next {
                        Ok(Next::Event { event, .. }) => {
                            self.process(&event, &mut run).await?;
                            while run.uncommitted < self.shared.config.batch_events && !run.pause {
                                match subscription.next_ready() {
                                    Some(Next::Event { event, .. }) => {
                                        self.process(&event, &mut run).await?;
                                    }
                                    Some(Next::CaughtUp) => {}
                                    None => break,
                                }
                            }
                            // Everything handed out is processed; no matching event lies
                            // between the last one and what the subscription has covered.
                            if subscription.pending() == 0 {
                                run.checkpoint.position =
                                    run.checkpoint.position.max(subscription.covered());
                            }
                            flush_at.get_or_insert_with(|| {
                                tokio::time::Instant::now() + self.shared.config.commit_interval
                            });
                        }
                        Ok(Next::CaughtUp) => {}
                        Err(SubscriptionError::Closed) => {
                            drop(permit);
                            if run.uncommitted > 0 || !run.pending.is_empty() {
                                self.commit(lease, &mut run).await?;
                            }
                            return Ok(Flow::Ended);
                        }
                        Err(SubscriptionError::Storage(e)) => return Err(e.into()),
                    }
                    parked = Some(subscription);
                }
                // The clock closes windows only while the subscription waits for the next
                // commit with everything published handed out: while it reads storage, stored
                // events of an open window are still to come.
                None if caught_up.load(std::sync::atomic::Ordering::Acquire) => {
                    let clock = Utc::now()
                        - chrono::Duration::from_std(self.shared.config.clock_grace)
                            .unwrap_or_default();
                    if let Some((index, results)) =
                        run.checkpoint.state.advance(&self.definition, clock)
                        && !results.is_empty()
                    {
                        let event_id = results[0].source.id;
                        let position = results[0].source.position;
                        run.hops = 0;
                        self.run_from(index + 1, results, &mut run, position, event_id)
                            .await?;
                        flush_at.get_or_insert_with(tokio::time::Instant::now);
                    }
                }
                None => {}
            }
            let due = flush_at.is_some_and(|at| at <= tokio::time::Instant::now())
                || run.uncommitted >= self.shared.config.batch_events
                || run.pause;
            if due {
                if !self.commit(lease, &mut run).await? {
                    return Ok(Flow::LostLease);
                }
                flush_at = None;
                if run.checkpoint.paused {
                    tracing::warn!(pipeline = %self.id, tenant = %self.tenant,
                                   "pipeline paused after an error (on_error: pause)");
                    // A paused pipeline holds no processing permit.
                    drop(permit);
                    return self.idle(lease).await;
                }
            } else if self.until_renewal(lease).is_zero()
                && !self.write_checkpoint_kept(lease, &mut run).await?
            {
                return Ok(Flow::LostLease);
            }
            drop(permit);
        }
    }

    /// A deactivated tenant's pipelines process nothing until it is active again (what it
    /// appends meanwhile waits, none is skipped); the lease is kept. `false` when it was lost.
    async fn wait_until_active(&self, lease: &mut Lease, run: &mut Run) -> anyhow::Result<bool> {
        while self
            .shared
            .tenants
            .check_active(&self.tenant)
            .await
            .is_err()
        {
            if run.uncommitted > 0 || !run.pending.is_empty() {
                if !self.commit(lease, run).await? {
                    return Ok(false);
                }
            } else if self.until_renewal(lease).is_zero()
                && !self.write_checkpoint(lease, &mut run.checkpoint).await?
            {
                return Ok(false);
            }
            tokio::time::sleep(INACTIVE_TENANT_RECHECK).await;
        }
        Ok(true)
    }

    /// Renews the lease with nothing new to commit (the committed state stays as it was).
    async fn write_checkpoint_kept(
        &self,
        lease: &mut Lease,
        run: &mut Run,
    ) -> anyhow::Result<bool> {
        if run.uncommitted > 0 || !run.pending.is_empty() {
            return self.commit(lease, run).await;
        }
        self.write_checkpoint(lease, &mut run.checkpoint).await
    }

    /// Step 3 for one source event.
    async fn process(&self, event: &Event, run: &mut Run) -> anyhow::Result<()> {
        let position = event.position.get();
        let event_id = event.id.as_uuid();
        run.uncommitted += 1;
        run.checkpoint.counters.processed = run.checkpoint.counters.processed.saturating_add(1);
        run.checkpoint.last_processed_at = Some(Utc::now());
        run.hops = hops(event);
        if run.hops >= MAX_HOPS {
            self.fail(
                run,
                position,
                event_id,
                None,
                format!(
                    "this event was derived by {MAX_HOPS} pipelines in a row (a cycle?); \
                     not processed"
                ),
            );
        } else {
            let record = Record::from_event(event);
            self.run_from(0, vec![record], run, position, event_id)
                .await?;
        }
        run.checkpoint.position = run.checkpoint.position.max(position);
        Ok(())
    }

    fn fail(
        &self,
        run: &mut Run,
        position: u64,
        event_id: Uuid,
        operator: Option<usize>,
        message: String,
    ) {
        tracing::debug!(pipeline = %self.id, position, ?operator, %message, "pipeline record failed");
        run.checkpoint.record_failure(Failure {
            position,
            event_id,
            operator,
            message,
            at: Utc::now(),
        });
        if self.definition.on_error == allsource_domain::pipeline::OnError::Pause {
            run.pause = true;
        }
    }

    /// Runs records through the operators from `start`, then routes what comes out.
    async fn run_from(
        &self,
        start: usize,
        mut batch: Vec<Record>,
        run: &mut Run,
        position: u64,
        event_id: Uuid,
    ) -> anyhow::Result<()> {
        let operators = &self.definition.operators;
        for (index, operator) in operators.iter().enumerate().skip(start) {
            if batch.is_empty() {
                return Ok(());
            }
            match operator {
                Operator::Branch(_) => break,
                Operator::Enrich(enrich) => {
                    let mut kept = Vec::with_capacity(batch.len());
                    for mut record in batch {
                        let found = match enrich.lookup_key(&record) {
                            None => Ok(None),
                            Some(key) => self.look_up(&enrich.source, &key).await,
                        };
                        match found {
                            Ok(found) => match enrich.try_merge(&mut record, found) {
                                Ok(()) => kept.push(record),
                                Err(why) => {
                                    let source = &record.source;
                                    self.fail(run, source.position, source.id, Some(index), why);
                                }
                            },
                            Err(LookupError::Failed(why)) => {
                                self.fail(
                                    run,
                                    record.source.position,
                                    record.source.id,
                                    Some(index),
                                    why,
                                );
                            }
                            Err(LookupError::Unavailable(why)) => {
                                return Err(Transient(format!("enrich lookup: {why}")).into());
                            }
                        }
                    }
                    batch = kept;
                }
                _ => {
                    let mut effects = Effects::default();
                    batch =
                        run.checkpoint
                            .state
                            .apply(&self.definition, index, batch, &mut effects);
                    let counters = &mut run.checkpoint.counters;
                    counters.filtered = counters.filtered.saturating_add(effects.filtered);
                    counters.late = counters.late.saturating_add(effects.late);
                    for error in effects.errors {
                        self.fail(run, position, event_id, Some(error.operator), error.message);
                    }
                }
            }
        }
        let outputs = self.definition.outputs();
        for record in batch {
            let routes = self.definition.route(&record);
            if routes.is_empty() {
                run.checkpoint.counters.filtered =
                    run.checkpoint.counters.filtered.saturating_add(1);
            }
            for output in routes {
                let Some(index) = outputs.iter().position(|o| std::ptr::eq(*o, output)) else {
                    continue;
                };
                run.pending.push(Emission {
                    output: index,
                    record: record.clone(),
                    hops: run.hops,
                });
            }
        }
        Ok(())
    }

    async fn look_up(
        &self,
        source: &EnrichSource,
        key: &str,
    ) -> Result<Option<Value>, LookupError> {
        match source {
            EnrichSource::EntityState { .. } => {
                self.shared.lookups.entity_state(&self.tenant, key).await
            }
            EnrichSource::Projection { name, .. } => {
                self.shared
                    .lookups
                    .projection_state(&self.tenant, name, key)
                    .await
            }
        }
    }

    /// Step 4: emits what is pending, then writes the checkpoint; `false` when the lease was
    /// lost.
    async fn commit(&self, lease: &mut Lease, run: &mut Run) -> anyhow::Result<bool> {
        let pending = std::mem::take(&mut run.pending);
        let outputs = self.definition.outputs();
        let mut events = Vec::new();
        let mut rows: HashMap<String, ResultRow> = HashMap::new();
        for emission in pending {
            match outputs.get(emission.output) {
                Some(Output::Events {
                    event_type,
                    entity_id_field,
                }) => {
                    let entity_id = match entity_id_field {
                        None => Some(format!("pipeline-{}", self.definition.name)),
                        Some(field) => match field.get(&emission.record) {
                            Some(Value::String(s)) => Some(s),
                            Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
                            _ => None,
                        },
                    };
                    let Some(entity_id) = entity_id else {
                        self.fail(
                            run,
                            emission.record.source.position,
                            emission.record.source.id,
                            None,
                            "the output's entity_id_field is missing or not a string".into(),
                        );
                        continue;
                    };
                    events.push(Derived {
                        output: emission.output,
                        entity_id,
                        event_type: event_type.as_str().to_owned(),
                        record: emission.record,
                        hops: emission.hops,
                    });
                }
                Some(Output::Table) => {
                    let key = self.definition.table_key(&emission.record);
                    rows.insert(
                        key.clone(),
                        ResultRow {
                            generation: run.checkpoint.generation,
                            key,
                            value: emission.record.payload,
                            position: emission.record.source.position,
                            updated_at: Utc::now(),
                        },
                    );
                }
                None => {}
            }
        }
        self.append_derived(run, events).await?;
        let state = &self.shared.state;
        if !rows.is_empty() && !self.still_holds(lease).await? {
            // Another node took over (or the pipeline changed): its rows are not ours to write.
            return Ok(false);
        }
        for (key, row) in rows {
            let value = serde_json::to_value(&row)?;
            state
                .put(
                    &self.tenant,
                    RESULTS,
                    &result_key(&self.id, &key),
                    value,
                    None,
                )
                .await
                .map_err(|e| Transient(format!("result rows: {e}")))?;
            run.checkpoint.counters.emitted = run.checkpoint.counters.emitted.saturating_add(1);
        }
        if run.pause {
            run.checkpoint.paused = true;
        }
        run.uncommitted = 0;
        let kept = self.write_checkpoint(lease, &mut run.checkpoint).await?;
        Ok(kept)
    }

    /// Whether the checkpoint is still as this worker last wrote it, with time left on the
    /// lease.
    async fn still_holds(&self, lease: &Lease) -> anyhow::Result<bool> {
        if lease.until_ms <= now_ms() {
            return Ok(false);
        }
        let entry = self
            .shared
            .state
            .get(&self.tenant, CHECKPOINTS, &self.id)
            .await?;
        Ok(entry.is_some_and(|e| e.version == lease.version))
    }

    /// Appends derived events, as a batch when every one is accepted, else one by one so that
    /// only the refused ones fail.
    async fn append_derived(&self, run: &mut Run, events: Vec<Derived>) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let caller = Caller::new(self.tenant.clone());
        let max = self.shared.append.limits().max_batch_events.max(1);
        for chunk in events.chunks(max) {
            let inputs = chunk
                .iter()
                .map(|e| self.input(run.checkpoint.generation, e))
                .collect::<anyhow::Result<Vec<_>>>()?;
            match self.shared.append.batch(&caller, inputs).await {
                Ok(_) => {
                    run.checkpoint.counters.emitted = run
                        .checkpoint
                        .counters
                        .emitted
                        .saturating_add(chunk.len() as u64);
                }
                Err(e) if transient(&e) => {
                    return Err(Transient(format!("derived events: {e}")).into());
                }
                Err(_) => {
                    for event in chunk {
                        let input = self.input(run.checkpoint.generation, event)?;
                        match self.shared.append.one(&caller, input).await {
                            // A duplicate id was emitted before a crash (its content may differ
                            // when a lookup changed since): the first emission stands.
                            Ok(_) | Err(AppendError::DuplicateEventId { .. }) => {
                                run.checkpoint.counters.emitted =
                                    run.checkpoint.counters.emitted.saturating_add(1);
                            }
                            Err(e) if transient(&e) => {
                                return Err(Transient(format!("derived events: {e}")).into());
                            }
                            Err(e) => {
                                let message = refusal(&e);
                                let source = &event.record.source;
                                self.fail(run, source.position, source.id, None, message);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn input(&self, generation: u64, derived: &Derived) -> anyhow::Result<AppendEventInput> {
        let record = &derived.record;
        let id = derived_event_id(
            self.stored.id,
            self.stored.incarnation,
            generation,
            derived.output,
            &record.origin,
        );
        let payload = serde_json::value::to_raw_value(&record.payload)?;
        let metadata = serde_json::value::to_raw_value(&json!({
            "pipeline_id": self.id,
            "pipeline_name": self.definition.name,
            "pipeline_generation": generation,
            "source_event_id": record.source.id,
            "source_position": record.source.position,
            "pipeline_hops": derived.hops.saturating_add(1),
        }))?;
        Ok(AppendEventInput {
            id: Some(id.to_string()),
            entity_id: Some(derived.entity_id.clone()),
            event_type: Some(derived.event_type.clone()),
            payload: Some(payload),
            metadata: Some(metadata),
            expected_version: None,
        })
    }
}

/// How many pipelines derived this event in a row (`metadata.pipeline_hops`).
fn hops(event: &Event) -> u64 {
    let Some(metadata) = &event.metadata else {
        return 0;
    };
    // Most events were not derived: skip the parse unless the member may be there.
    if !metadata.get().contains("pipeline_hops") {
        return 0;
    }
    serde_json::from_str::<Value>(metadata.get())
        .ok()
        .and_then(|m| m.get("pipeline_hops").and_then(Value::as_u64))
        .unwrap_or(0)
}

/// Whether an append refusal may pass by itself.
fn transient(error: &AppendError) -> bool {
    matches!(
        error,
        AppendError::Unavailable(_)
            | AppendError::QuotaExceeded(_)
            | AppendError::Forbidden(_)
            | AppendError::Internal(_)
            | AppendError::VersionConflict { .. }
    )
}

fn refusal(error: &AppendError) -> String {
    match error {
        AppendError::Invalid(errors) | AppendError::SchemaViolation(errors) => {
            let fields: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            format!(
                "the derived event was refused: {error}: {}",
                fields.join("; ")
            )
        }
        other => format!("the derived event was refused: {other}"),
    }
}

impl Fleet for Shared {
    type Item = (Stored, PipelineDefinition);
    const NAME: &'static str = "pipeline";
    const RESCAN: &'static str = "pipeline rescan";

    fn state(&self) -> &dyn StateStore {
        self.state.as_ref()
    }

    fn definitions(&self) -> &'static str {
        DEFINITIONS
    }

    fn tenant_index(&self) -> &'static str {
        TENANTS
    }

    fn rescan_interval(&self) -> Duration {
        self.config.rescan_interval
    }

    fn parse(&self, entry: &StateEntry) -> Option<(Stored, PipelineDefinition)> {
        parse_entry(entry)
    }

    fn runs((stored, _): &(Stored, PipelineDefinition)) -> bool {
        stored.enabled
    }

    fn spawn(
        self: &Arc<Self>,
        tenant: TenantId,
        (stored, definition): (Stored, PipelineDefinition),
    ) -> JoinHandle<()> {
        let worker = Arc::new(Worker::new(Arc::clone(self), tenant, stored, definition));
        supervise("pipeline", move || {
            let worker = Arc::clone(&worker);
            async move { worker.run().await }
        })
    }

    /// Gives this node's lease on a pipeline back.
    async fn release(&self, tenant: &TenantId, id: Uuid) {
        let id = id.to_string();
        let Ok(Some(entry)) = self.state.get(tenant, CHECKPOINTS, &id).await else {
            return;
        };
        let Ok(mut checkpoint) = Checkpoint::from_json(&entry.value) else {
            return;
        };
        if checkpoint.holder.as_deref() != Some(self.node.as_str()) {
            return;
        }
        checkpoint.holder = None;
        checkpoint.lease_until_ms = 0;
        if let Err(e) = self
            .state
            .put(
                tenant,
                CHECKPOINTS,
                &id,
                checkpoint.to_json(),
                Some(entry.version),
            )
            .await
        {
            tracing::debug!(pipeline = %id, error = %e, "pipeline lease not released");
        }
    }
}

/// The workers of this node: one per enabled pipeline (see [`crate::fleet`]).
pub(crate) type Workers = crate::fleet::Workers<Shared>;

fn parse_entry(entry: &StateEntry) -> Option<(Stored, PipelineDefinition)> {
    let stored = match Stored::from_json(&entry.value) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(error = %e, "unreadable pipeline record; not running it");
            return None;
        }
    };
    match super::definition_of(&stored) {
        Ok(definition) => Some((stored, definition)),
        Err(e) => {
            tracing::error!(pipeline = %stored.id, error = %e,
                            "stored pipeline definition no longer valid; not running it");
            None
        }
    }
}
