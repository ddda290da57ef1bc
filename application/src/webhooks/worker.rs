//! Delivery: one worker per active webhook, and the [`Workers`] that start and stop them.
//!
//! # A worker
//! 1. **Lease.** It takes the webhook's delivery lease in its cursor record (a compare-and-swap
//!    on the record's version): free, expired, or already this node's. Otherwise it waits for
//!    the lease to expire. So when several nodes share one state store (PostgreSQL), one node
//!    delivers a webhook at a time; when that node dies, another takes over once its lease
//!    has run out (`webhooks.lease_ms`). A graceful stop gives the leases back at once.
//! 2. **Follow.** It opens a [`Subscription`] of the tenant's log after the cursor, with the
//!    webhook's type filters (and its entity, when it names exactly one; several are filtered
//!    here), and handles events one at a time, in position order.
//! 3. **Deliver.** Each event is POSTed until an attempt gets a `2xx` answer or
//!    `max_attempts` attempts have failed, waiting `backoff_base · 2^(n-1)` (at most
//!    `backoff_max`) after the n-th failure. Every attempt's outcome is written to the
//!    delivery log. Later events wait: delivery is in order, so a failing event delays the ones
//!    after it until it is marked failed.
//! 4. **Settle.** Then the cursor moves to the event (the same compare-and-swap, which also
//!    renews the lease). A crash between a delivery and the cursor's move delivers that event
//!    again after the restart (at least once; receivers drop duplicates by `delivery_id`). The
//!    first event after a (re)start looks up its delivery record: a settled one is not sent
//!    again, and a retrying one goes on counting its attempts.
//!
//! The lease is renewed whenever half of it has run, also while waiting between attempts; a
//! renewal that finds the record changed means another node took over, and the worker goes
//! back to step 1.
//!
//! # Workers
//! [`Workers`] keeps one supervised worker per active webhook on this node: it starts them at
//! server start, restarts one when its definition changes, stops it when it is deactivated or
//! deleted, and re-reads every tenant's definitions every `rescan_interval` (which is how a
//! node learns of webhooks registered on another node).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use allsource_domain::{Event, EventFilter, TenantId};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::records::{
    CURSORS, Cursor, DEFINITIONS, DELIVERIES, DELIVERIES_KEPT, Delivery, DeliveryStatus, TENANTS,
    Webhook, delivery_id, delivery_key, delivery_prefix,
};
use crate::fleet::Fleet;
pub(crate) use crate::fleet::list_all;
use crate::ports::{
    EventEncoder, EventStore, StateEntry, StateError, StateStore, WebhookRequest, WebhookSender,
};
use crate::subscriptions::{CommitFeed, Delivery as Next, Subscription, SubscriptionError};
use crate::supervise::supervise;

/// Keys read per page of the state store.
const PAGE: usize = 500;

/// How deliveries are retried and leases kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Attempts per event before it is marked failed (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub backoff_base: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
    /// How long a node's delivery lease on a webhook lasts without renewal.
    pub lease: Duration,
    /// How often every tenant's definitions are read again.
    pub rescan_interval: Duration,
    /// This node's name in leases. `None`: a random one per process, as several processes
    /// may share the state store (PostgreSQL). A backend only one process can open at a time
    /// (embedded) gives a fixed name, so that a process restarted after a crash takes its
    /// predecessor's leases at once instead of waiting for them to run out.
    pub node: Option<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            lease: Duration::from_secs(30),
            rescan_interval: Duration::from_secs(5),
            node: None,
        }
    }
}

impl WebhookConfig {
    /// The wait after the `attempt`-th failed attempt (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis())
            .unwrap_or(i64::MAX)
            .max(10)
    }
}

/// How often a worker of a deactivated (or unreadable) tenant looks again.
const INACTIVE_TENANT_RECHECK: Duration = Duration::from_millis(500);

/// What every worker of this node uses.
pub(crate) struct Shared {
    pub store: Arc<dyn EventStore>,
    pub feed: Arc<CommitFeed>,
    pub state: Arc<dyn StateStore>,
    pub sender: Arc<dyn WebhookSender>,
    pub encoder: Arc<dyn EventEncoder>,
    /// A deactivated tenant's webhooks wait until it is active again.
    pub tenants: Arc<dyn crate::quota::TenantGate>,
    pub config: WebhookConfig,
    /// This node's name in leases ([`WebhookConfig::node`]).
    pub node: String,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The API's timestamp format.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The body of a delivery.
#[derive(Serialize)]
struct Body<'a> {
    webhook_id: &'a str,
    delivery_id: &'a str,
    event: &'a RawValue,
    delivered_at: &'a str,
}

/// A held lease: the cursor record's version as this node last wrote it.
#[derive(Debug, Clone, Copy)]
struct Lease {
    version: u64,
    position: u64,
    until_ms: i64,
}

enum Flow {
    /// Another node holds the lease now.
    LostLease,
    /// The log is closed (shutdown) or the webhook is gone.
    Ended,
}

/// One webhook's worker.
struct Worker {
    shared: Arc<Shared>,
    tenant: TenantId,
    hook: Webhook,
    id: String,
}

impl Worker {
    async fn run(&self) -> anyhow::Result<()> {
        loop {
            let Some(mut lease) = self.acquire().await? else {
                return Ok(());
            };
            // Read under the lease: the previous holder may have added deliveries meanwhile.
            let mut kept = self.load_kept().await?;
            tracing::debug!(webhook = %self.id, tenant = %self.tenant, position = lease.position,
                            "webhook delivery lease taken");
            match self.follow(&mut lease, &mut kept).await? {
                Flow::LostLease => {
                    tracing::info!(webhook = %self.id, tenant = %self.tenant,
                                   "another node took over the webhook's delivery");
                }
                Flow::Ended => return Ok(()),
            }
        }
    }

    /// The keys of the delivery log, oldest first.
    async fn load_kept(&self) -> Result<VecDeque<String>, StateError> {
        let mut kept = VecDeque::new();
        let mut after = None;
        loop {
            let page = self
                .shared
                .state
                .list(
                    &self.tenant,
                    DELIVERIES,
                    Some(delivery_prefix(&self.id)),
                    after.clone(),
                    PAGE,
                )
                .await?;
            let done = page.len() < PAGE;
            after = page.last().map(|(k, _)| k.clone());
            kept.extend(page.into_iter().map(|(k, _)| k));
            if done {
                return Ok(kept);
            }
        }
    }

    /// Step 1: waits for the lease; `None` when the webhook's cursor is gone (deleted).
    async fn acquire(&self) -> anyhow::Result<Option<Lease>> {
        let lease_ms = self.shared.config.lease_ms();
        loop {
            let Some(entry) = self
                .shared
                .state
                .get(&self.tenant, CURSORS, &self.id)
                .await?
            else {
                return Ok(None);
            };
            let cursor = Cursor::from_json(&entry.value).map_err(anyhow::Error::msg)?;
            let now = now_ms();
            let ours = cursor.holder.as_deref() == Some(self.shared.node.as_str());
            if cursor.holder.is_none() || ours || cursor.lease_until_ms <= now {
                let until_ms = now.saturating_add(lease_ms);
                let taken = Cursor {
                    position: cursor.position,
                    holder: Some(self.shared.node.clone()),
                    lease_until_ms: until_ms,
                };
                match self
                    .shared
                    .state
                    .put(
                        &self.tenant,
                        CURSORS,
                        &self.id,
                        taken.to_json(),
                        Some(entry.version),
                    )
                    .await
                {
                    Ok(version) => {
                        return Ok(Some(Lease {
                            version,
                            position: cursor.position,
                            until_ms,
                        }));
                    }
                    Err(StateError::VersionConflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            // Held by another node: look again when it runs out (or sooner, if released).
            let wait = (cursor.lease_until_ms - now).clamp(10, lease_ms / 2 + 10);
            tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
        }
    }

    /// Writes the cursor at `position` with a renewed lease; `false` when another node has
    /// taken the lease (or the webhook was deleted).
    async fn write_cursor(&self, lease: &mut Lease, position: u64) -> anyhow::Result<bool> {
        let until_ms = now_ms().saturating_add(self.shared.config.lease_ms());
        let cursor = Cursor {
            position,
            holder: Some(self.shared.node.clone()),
            lease_until_ms: until_ms,
        };
        match self
            .shared
            .state
            .put(
                &self.tenant,
                CURSORS,
                &self.id,
                cursor.to_json(),
                Some(lease.version),
            )
            .await
        {
            Ok(version) => {
                *lease = Lease {
                    version,
                    position,
                    until_ms,
                };
                Ok(true)
            }
            Err(StateError::VersionConflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Time left until the lease should be renewed (half of it has run).
    fn until_renewal(&self, lease: &Lease) -> Duration {
        let renew_at = lease.until_ms - self.shared.config.lease_ms() / 2;
        Duration::from_millis((renew_at - now_ms()).max(0).unsigned_abs())
    }

    /// Steps 2–4 while the lease is held.
    async fn follow(&self, lease: &mut Lease, kept: &mut VecDeque<String>) -> anyhow::Result<Flow> {
        let filter = EventFilter {
            types: self.hook.event_types.clone(),
            entity_id: match self.hook.entity_ids.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
        };
        let mut subscription = Subscription::open(
            self.shared.store.clone(),
            self.shared.feed.clone(),
            self.tenant.clone(),
            filter,
            Some(lease.position),
        );
        // The last event handled (delivered, failed, or not for this webhook).
        let mut settled = lease.position;
        let mut first = true;
        loop {
            let next = tokio::select! {
                next = subscription.next() => next,
                () = tokio::time::sleep(self.until_renewal(lease)) => {
                    if !self.write_cursor(lease, settled).await? {
                        return Ok(Flow::LostLease);
                    }
                    continue;
                }
            };
            let event = match next {
                Ok(Next::Event { event, .. }) => event,
                Ok(Next::CaughtUp) => continue,
                Err(SubscriptionError::Closed) => return Ok(Flow::Ended),
                Err(SubscriptionError::Storage(e)) => return Err(e.into()),
            };
            let position = event.position.get();
            if !self.hook.wants_entity(&event.entity_id) {
                settled = position;
                continue;
            }
            // A deactivated tenant sends nothing; its events wait, none is skipped.
            while self
                .shared
                .tenants
                .check_active(&self.tenant)
                .await
                .is_err()
            {
                tokio::time::sleep(INACTIVE_TENANT_RECHECK).await;
                if !self.write_cursor(lease, settled).await? {
                    return Ok(Flow::LostLease);
                }
            }
            if !self.deliver(&event, lease, kept, first).await? {
                return Ok(Flow::LostLease);
            }
            first = false;
            settled = position;
            if !self.write_cursor(lease, settled).await? {
                return Ok(Flow::LostLease);
            }
        }
    }

    /// Step 3 for one event; `false` when the lease was lost meanwhile.
    async fn deliver(
        &self,
        event: &Event,
        lease: &mut Lease,
        kept: &mut VecDeque<String>,
        first: bool,
    ) -> anyhow::Result<bool> {
        let key = delivery_key(&self.id, event.position.get());
        let earlier = if first {
            self.earlier_record(&key).await?
        } else {
            None
        };
        if earlier
            .as_ref()
            .is_some_and(|d| d.status != DeliveryStatus::Retrying)
        {
            // Settled before a crash or a takeover: the cursor only had not moved yet.
            return Ok(true);
        }
        let delivery_uuid = delivery_id(self.hook.id, event.id.as_uuid());
        let delivery_id = delivery_uuid.to_string();
        let encoded = self.shared.encoder.encode(event)?;
        let mut attempts = earlier.as_ref().map_or(0, |d| d.attempts);
        let mut first_attempt_at = earlier.as_ref().map(|d| d.first_attempt_at);
        let mut recorded = earlier.is_some();
        let config = &self.shared.config;
        loop {
            if self.until_renewal(lease).is_zero()
                && !self.write_cursor(lease, lease.position).await?
            {
                return Ok(false);
            }
            attempts = attempts.saturating_add(1);
            let started = Utc::now();
            let first_at = *first_attempt_at.get_or_insert(started);
            let delivered_at = timestamp(started);
            let body = serde_json::to_vec(&Body {
                webhook_id: &self.id,
                delivery_id: &delivery_id,
                event: &encoded,
                delivered_at: &delivered_at,
            })?;
            let outcome = self
                .shared
                .sender
                .send(WebhookRequest {
                    url: self.hook.url.clone(),
                    webhook_id: self.id.clone(),
                    delivery_id: delivery_id.clone(),
                    event_type: event.event_type.as_str().to_owned(),
                    body,
                    secret: self.hook.secret.clone(),
                })
                .await;
            let ended = Utc::now();
            let (code, error) = match outcome {
                Ok(code) => (Some(code), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let delivered = code.is_some_and(|c| (200..300).contains(&c));
            let last = delivered || attempts >= config.max_attempts.max(1);
            let wait = config.backoff(attempts);
            let status = if delivered {
                DeliveryStatus::Delivered
            } else if last {
                DeliveryStatus::Failed
            } else {
                DeliveryStatus::Retrying
            };
            let record = Delivery {
                delivery_id: delivery_uuid,
                event_id: event.id.as_uuid(),
                position: event.position.get(),
                event_type: event.event_type.as_str().to_owned(),
                entity_id: event.entity_id.as_str().to_owned(),
                status,
                attempts,
                last_status_code: code,
                last_error: error,
                first_attempt_at: first_at,
                last_attempt_at: started,
                next_attempt_at: (!last).then(|| {
                    ended + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
                }),
                completed_at: last.then_some(ended),
            };
            self.shared
                .state
                .put(
                    &self.tenant,
                    DELIVERIES,
                    &key,
                    serde_json::to_value(&record)?,
                    None,
                )
                .await?;
            if !recorded {
                recorded = true;
                kept.push_back(key.clone());
                self.prune(kept).await?;
            }
            match status {
                DeliveryStatus::Delivered => return Ok(true),
                DeliveryStatus::Failed => {
                    tracing::warn!(webhook = %self.id, tenant = %self.tenant,
                                   position = record.position, attempts,
                                   last_status_code = ?record.last_status_code,
                                   last_error = ?record.last_error,
                                   "webhook delivery failed after every attempt; going on");
                    return Ok(true);
                }
                DeliveryStatus::Retrying => {
                    if !self.pause(wait, lease).await? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// The delivery record a previous run left for this key, if readable.
    async fn earlier_record(&self, key: &str) -> Result<Option<Delivery>, StateError> {
        let entry = self.shared.state.get(&self.tenant, DELIVERIES, key).await?;
        Ok(entry.and_then(|StateEntry { value, .. }| serde_json::from_value(value).ok()))
    }

    /// Waits `wait`, renewing the lease on the way; `false` when it was lost.
    async fn pause(&self, wait: Duration, lease: &mut Lease) -> anyhow::Result<bool> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(true);
            }
            let renewal = self.until_renewal(lease);
            if renewal.is_zero() {
                if !self.write_cursor(lease, lease.position).await? {
                    return Ok(false);
                }
                continue;
            }
            tokio::time::sleep(left.min(renewal)).await;
        }
    }

    /// Deletes the oldest deliveries beyond [`DELIVERIES_KEPT`].
    async fn prune(&self, kept: &mut VecDeque<String>) -> Result<(), StateError> {
        while kept.len() > DELIVERIES_KEPT {
            if let Some(oldest) = kept.front() {
                self.shared
                    .state
                    .delete(&self.tenant, DELIVERIES, oldest)
                    .await?;
            }
            kept.pop_front();
        }
        Ok(())
    }
}

impl Fleet for Shared {
    type Item = Webhook;
    const NAME: &'static str = "webhook";
    const RESCAN: &'static str = "webhook rescan";

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

    fn parse(&self, entry: &StateEntry) -> Option<Webhook> {
        match Webhook::from_json(&entry.value) {
            Ok(hook) => Some(hook),
            Err(e) => {
                tracing::error!(error = %e, "unreadable webhook definition; not delivering it");
                None
            }
        }
    }

    fn runs(hook: &Webhook) -> bool {
        hook.active
    }

    fn spawn(self: &Arc<Self>, tenant: TenantId, hook: Webhook) -> JoinHandle<()> {
        let worker = Arc::new(Worker {
            id: hook.id.to_string(),
            shared: Arc::clone(self),
            tenant,
            hook,
        });
        supervise("webhook delivery", move || {
            let worker = Arc::clone(&worker);
            async move { worker.run().await }
        })
    }

    /// Gives this node's lease on a webhook back, so another node (or this one after a
    /// restart) need not wait for it to run out.
    async fn release(&self, tenant: &TenantId, id: Uuid) {
        let id = id.to_string();
        let Ok(Some(entry)) = self.state.get(tenant, CURSORS, &id).await else {
            return;
        };
        let Ok(cursor) = Cursor::from_json(&entry.value) else {
            return;
        };
        if cursor.holder.as_deref() != Some(self.node.as_str()) {
            return;
        }
        let released = Cursor::at(cursor.position);
        if let Err(e) = self
            .state
            .put(
                tenant,
                CURSORS,
                &id,
                released.to_json(),
                Some(entry.version),
            )
            .await
        {
            tracing::debug!(webhook = %id, error = %e, "webhook lease not released");
        }
    }
}

/// The workers of this node (see the module docs).
pub(crate) type Workers = crate::fleet::Workers<Shared>;
