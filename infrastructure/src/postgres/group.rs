//! Node-level group commit: the appends that arrive on a node while its previous transaction
//! runs share the next transaction.
//!
//! # Why
//! Appends take one advisory lock for the whole database (see the store's module docs), so
//! transactions commit one at a time. With one transaction per request, a node made about one
//! commit — one WAL flush on PostgreSQL's side, four round trips on ours — per append, and
//! concurrent requests only queued for the lock. With one transaction per *group*, the lock,
//! the round trips and the flush are paid once for every request that arrived meanwhile.
//!
//! # How
//! [`GroupCommitter`] is one task per store, with a connection of its own (outside the pool,
//! so reads never wait behind appends and a commit never waits for a pooled connection). It
//! takes the first waiting request, then every request already queued up to
//! [`MAX_GROUP_EVENTS`], and runs one transaction:
//! 1. `BEGIN; SELECT pg_advisory_xact_lock(..)` in one simple query (one round trip);
//! 2. one planning read for the whole group (head, the current version of every
//!    (tenant, entity) of the group, the stored events with the group's ids), see
//!    [`load_context`];
//! 3. [`plan_group`] plans the requests in arrival order, each against what the database holds
//!    plus what the requests before it in the group add — exactly what it would see had it
//!    committed alone after them. A rejected request (version conflict, reused id) is answered
//!    with its rejection and adds nothing; the others go on;
//! 4. one statement inserts every new row (`UNNEST` of column arrays), moves the head and
//!    notifies the commit listeners; then `COMMIT`.
//!
//! Every statement is prepared once per connection (sqlx's statement cache).
//!
//! # Failures
//! - The database is unreachable or goes away (or a group takes longer than
//!   [`GROUP_TIMEOUT`]): every request of the group gets `Unavailable` (nothing acknowledged;
//!   clients retry with the same ids, which idempotency makes safe), and the connection is
//!   made again for the next group.
//! - Any other failure of a group of several requests: each request is retried alone, so one
//!   request the database refuses cannot fail the others.
//! - Shutdown: the queue is closed (new appends are refused), what was queued is committed,
//!   then the task ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use allsource_application::ports::{AppendReceipt, Clock, StoreAppendError};
use allsource_domain::{
    AppendContext, EntityId, Event, EventId, PlannedEvent, Position, ProposedEvent, TenantId,
    Version, plan_append,
};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::rows::{EVENT_COLUMNS, event_from_row};
use super::{COMMIT_CHANNEL, append_error, is_unavailable};
use crate::index::truncate_to_micros;

/// The most events one group takes (a single request larger than this is a group alone).
pub const MAX_GROUP_EVENTS: usize = 10_000;

/// Requests that may wait for the committer; further appends wait to be queued.
const QUEUE_CAPACITY: usize = 4096;

/// The longest a group's transaction may take before its requests are answered `Unavailable`
/// and its connection is dropped (a database that stopped answering without closing).
pub const GROUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The transaction's first round trip: begin, then wait for the append lock. The lock must be
/// a statement of its own, before the planning read, so that the read's snapshot is taken
/// after the lock is granted. The key is [`super::APPEND_LOCK_KEY`] (a test checks it).
const BEGIN_AND_LOCK: &str = "BEGIN; SELECT pg_advisory_xact_lock(107118303867491)";

/// What a caller gets back.
type Answer = Result<Vec<AppendReceipt>, StoreAppendError>;

/// One append waiting for its group.
struct Request {
    tenant: TenantId,
    events: Vec<ProposedEvent>,
    reply: oneshot::Sender<Answer>,
}

/// Queues appends for the committer task and stops it.
pub(super) struct GroupCommitter {
    queue: mpsc::Sender<Request>,
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<GroupCounters>,
}

/// Figures of a node's group commit since the store started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupCommitStats {
    /// Transactions that wrote at least one event.
    pub groups: u64,
    /// Append requests those transactions served.
    pub appends: u64,
}

#[derive(Default)]
struct GroupCounters {
    groups: AtomicU64,
    appends: AtomicU64,
}

impl GroupCommitter {
    /// Starts the committer task (on the current runtime); it connects on its first group.
    pub(super) fn start(
        options: PgConnectOptions,
        connect_timeout: Duration,
        clock: Arc<dyn Clock>,
        committed: Arc<AtomicU64>,
    ) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE_CAPACITY);
        let stop = Arc::new(Notify::new());
        let counters = Arc::new(GroupCounters::default());
        let committer = Committer {
            options,
            connect_timeout,
            clock,
            connection: None,
            metrics: GroupMetrics::new(),
            counters: Arc::clone(&counters),
            committed,
        };
        let task = tokio::spawn(committer.run(requests, Arc::clone(&stop)));
        Self {
            queue,
            stop,
            task: Mutex::new(Some(task)),
            counters,
        }
    }

    /// Groups committed and the appends they served, so far.
    pub(super) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            groups: self.counters.groups.load(Ordering::Relaxed),
            appends: self.counters.appends.load(Ordering::Relaxed),
        }
    }

    /// Appends `events` in the next group and waits for its commit.
    pub(super) async fn append(&self, tenant: &TenantId, events: Vec<ProposedEvent>) -> Answer {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            tenant: tenant.clone(),
            events,
            reply,
        };
        if self.queue.send(request).await.is_err() {
            return Err(shutting_down());
        }
        answer.await.unwrap_or_else(|_| Err(shutting_down()))
    }

    /// Refuses new appends, commits the queued ones and waits for the task to end.
    pub(super) async fn stop(&self) {
        self.stop.notify_one();
        let task = self.task.lock().take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the postgres group committer ended abnormally");
        }
    }
}

fn shutting_down() -> StoreAppendError {
    StoreAppendError::Unavailable("the store is shutting down".into())
}

/// The committer task's state.
struct Committer {
    options: PgConnectOptions,
    connect_timeout: Duration,
    clock: Arc<dyn Clock>,
    /// The committer's own connection; `None` until the first group and after a failure.
    connection: Option<PgConnection>,
    metrics: GroupMetrics,
    counters: Arc<GroupCounters>,
    /// The last position this node committed (read-your-writes on a standby, `standby.rs`).
    committed: Arc<AtomicU64>,
}

/// The committer's measurements (the same as the embedded engine's commit groups).
struct GroupMetrics {
    appends: metrics::Histogram,
    events: metrics::Histogram,
}

impl GroupMetrics {
    fn new() -> Self {
        Self {
            appends: metrics::histogram!("allsource_commit_group_appends"),
            events: metrics::histogram!("allsource_commit_group_events"),
        }
    }
}

impl Committer {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>, stop: Arc<Notify>) {
        let mut stopping = false;
        loop {
            let first = if stopping {
                requests.recv().await
            } else {
                tokio::select! {
                    biased;
                    () = stop.notified() => {
                        // Refuse new requests; the queued ones are still committed.
                        requests.close();
                        stopping = true;
                        continue;
                    }
                    first = requests.recv() => first,
                }
            };
            let Some(first) = first else { break };
            let mut events = first.events.len();
            let mut group = vec![first];
            while events < MAX_GROUP_EVENTS {
                match requests.try_recv() {
                    Ok(next) => {
                        events += next.events.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group).await;
        }
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }

    /// Commits one group and answers each of its requests.
    async fn commit(&mut self, group: Vec<Request>) {
        let span = tracing::info_span!(
            "commit_group",
            db.system = "postgresql",
            appends = group.len(),
            events = tracing::field::Empty
        );
        let _entered = span.enter();
        #[allow(clippy::cast_precision_loss)]
        self.metrics.appends.record(group.len() as f64);
        let (inputs, replies): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|r| ((r.tenant, r.events), r.reply))
            .unzip();
        match self.transaction(&inputs).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) if inputs.len() > 1 && !matches!(e, StoreAppendError::Unavailable(_)) => {
                tracing::warn!(error = %e, appends = inputs.len(), "a commit group failed; retrying its appends one by one");
                for (input, reply) in inputs.iter().zip(replies) {
                    let answer = match self.transaction(std::slice::from_ref(input)).await {
                        Ok(mut answers) => answers.pop().unwrap_or_else(|| {
                            Err(StoreAppendError::Internal(anyhow::anyhow!(
                                "a commit group of one gave no answer"
                            )))
                        }),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(copy_error(&e)));
                }
            }
        }
    }

    /// One transaction for `inputs`, bounded by [`GROUP_TIMEOUT`]; on any error the connection
    /// is dropped (its state is unknown) and made again by the next group.
    async fn transaction(
        &mut self,
        inputs: &[(TenantId, Vec<ProposedEvent>)],
    ) -> Result<Vec<Answer>, StoreAppendError> {
        let outcome = tokio::time::timeout(GROUP_TIMEOUT, self.try_transaction(inputs)).await;
        let outcome = outcome.unwrap_or_else(|_| {
            Err(StoreAppendError::Unavailable(format!(
                "PostgreSQL did not complete a commit within {GROUP_TIMEOUT:?}"
            )))
        });
        if outcome.is_err() {
            self.connection = None;
        }
        outcome
    }

    async fn try_transaction(
        &mut self,
        inputs: &[(TenantId, Vec<ProposedEvent>)],
    ) -> Result<Vec<Answer>, StoreAppendError> {
        let connection =
            connection(&mut self.connection, &self.options, self.connect_timeout).await?;
        let mut tx = connection
            .begin_with(BEGIN_AND_LOCK)
            .await
            .map_err(append_error)?;
        let mut context = load_context(&mut tx, inputs).await?;
        let timestamp = truncate_to_micros(self.clock.now());
        let timestamp = context
            .last_timestamp
            .map_or(timestamp, |t| t.max(timestamp));
        let plan = plan_group(&mut context, timestamp, inputs);
        let rows = &plan.rows;
        if rows.positions.is_empty() {
            // Only retries and rejections: nothing to write. The retried events are at or
            // below the head just read, which is therefore committed.
            tx.rollback().await.map_err(append_error)?;
            self.committed.fetch_max(
                u64::try_from(plan.last_position).unwrap_or(0),
                Ordering::AcqRel,
            );
            return Ok(plan.answers);
        }
        tracing::Span::current().record("events", rows.positions.len());
        #[allow(clippy::cast_precision_loss)]
        self.metrics.events.record(rows.positions.len() as f64);
        // Insert, move the head and notify every node's commit listener, in one round trip.
        // PostgreSQL delivers the notification at commit, in commit order; the listener reads
        // the events, the payload only tells it how far to read.
        sqlx::query(
            "WITH inserted AS ( \
               INSERT INTO allsource_events \
                 (position, tenant_id, entity_id, event_type, version, id, recorded_at, payload, metadata) \
               SELECT p, tn, e, t, v, i, $2, pl::json, m::json \
               FROM UNNEST($1::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::uuid[], $8::text[], $9::text[]) \
                 AS r(p, tn, e, t, v, i, pl, m)), \
             moved AS ( \
               UPDATE allsource_log_head SET last_position = $10, last_timestamp = $2 WHERE singleton) \
             SELECT pg_notify($11, $12)",
        )
        .bind(&rows.positions)
        .bind(timestamp)
        .bind(&rows.tenant_ids)
        .bind(&rows.entity_ids)
        .bind(&rows.event_types)
        .bind(&rows.versions)
        .bind(&rows.ids)
        .bind(&rows.payloads)
        .bind(&rows.metadata)
        .bind(plan.last_position)
        .bind(COMMIT_CHANNEL)
        .bind(format!("{}:{}", plan.first_position, plan.last_position))
        .execute(&mut *tx)
        .await
        .map_err(append_error)?;
        tx.commit().await.map_err(append_error)?;
        self.committed.fetch_max(
            u64::try_from(plan.last_position).unwrap_or(0),
            Ordering::AcqRel,
        );
        self.counters.groups.fetch_add(1, Ordering::Relaxed);
        self.counters
            .appends
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        Ok(plan.answers)
    }
}

/// The committer's connection in `slot`, made if there is none.
async fn connection<'a>(
    slot: &'a mut Option<PgConnection>,
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<&'a mut PgConnection, StoreAppendError> {
    if slot.is_none() {
        let made = tokio::time::timeout(timeout, PgConnection::connect_with(options))
            .await
            .map_err(|_| {
                StoreAppendError::Unavailable(format!(
                    "PostgreSQL did not accept a connection within {timeout:?}"
                ))
            })?;
        *slot = Some(made.map_err(|e| {
            if is_unavailable(&e) || matches!(e, sqlx::Error::Database(_)) {
                StoreAppendError::Unavailable(format!("PostgreSQL is unavailable: {e}"))
            } else {
                append_error(e)
            }
        })?);
    }
    slot.as_mut().ok_or_else(|| {
        StoreAppendError::Internal(anyhow::anyhow!("the committer has no connection"))
    })
}

/// The same error for every request of a failed group.
fn copy_error(e: &StoreAppendError) -> StoreAppendError {
    match e {
        StoreAppendError::Unavailable(message) => StoreAppendError::Unavailable(message.clone()),
        StoreAppendError::Rejected(rejection) => StoreAppendError::Rejected(rejection.clone()),
        StoreAppendError::Internal(e) => StoreAppendError::Internal(anyhow::anyhow!("{e:#}")),
    }
}

/// What the database holds that the group's planning needs.
#[derive(Debug, Default)]
pub(super) struct GroupContext {
    pub last_position: i64,
    pub last_timestamp: Option<DateTime<Utc>>,
    /// Current stream versions, by tenant then entity (only streams that have events).
    pub versions: HashMap<String, HashMap<String, u64>>,
    /// Stored events with the group's ids, by tenant then id.
    pub events: HashMap<String, HashMap<EventId, Arc<Event>>>,
}

/// The context of one tenant's request.
struct TenantView<'a> {
    versions: Option<&'a HashMap<String, u64>>,
    events: Option<&'a HashMap<EventId, Arc<Event>>>,
}

impl AppendContext for TenantView<'_> {
    fn stream_version(&self, entity_id: &EntityId) -> u64 {
        self.versions
            .and_then(|v| v.get(entity_id.as_str()).copied())
            .unwrap_or(0)
    }

    fn stored_event(&self, id: &EventId) -> Option<Arc<Event>> {
        self.events.and_then(|e| e.get(id).cloned())
    }
}

/// Reads the group's [`GroupContext`] in one round trip: the head, the current version of each
/// (tenant, entity) of the group (one backward index probe each, so the cost does not grow
/// with stream length), and the positions of stored events with the group's ids (one index
/// probe each); only when there are such events (retries) are they fetched, in a second query.
///
/// Both lookups are lateral subqueries that PostgreSQL cannot flatten into a join (an
/// aggregate, a `LIMIT 1` on a unique key) on purpose: the statement is prepared once per
/// connection and PostgreSQL soon runs a generic plan of it, made with the statistics of that
/// moment. With a plain join, a plan made on a young table hashed the whole table on every
/// group until the next `ANALYZE` (a scan that grew with the log: 2 ms per group after 30,000
/// events); a lateral subquery can only be a probe per key.
async fn load_context(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    inputs: &[(TenantId, Vec<ProposedEvent>)],
) -> Result<GroupContext, StoreAppendError> {
    let count: usize = inputs.iter().map(|(_, events)| events.len()).sum();
    let mut tenants = Vec::with_capacity(count);
    let mut entity_ids = Vec::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    for (tenant, events) in inputs {
        for event in events {
            tenants.push(tenant.as_str());
            entity_ids.push(event.entity_id.as_str());
            ids.push(event.id.as_uuid());
        }
    }
    let row = sqlx::query(
        "SELECT h.last_position, h.last_timestamp, \
           (SELECT COALESCE(json_agg(json_build_array(s.tn, s.e, m.version)), '[]')::text \
            FROM (SELECT DISTINCT tn, e FROM UNNEST($1::text[], $2::text[]) AS u(tn, e)) s \
            CROSS JOIN LATERAL (SELECT MAX(version) AS version FROM allsource_events \
                  WHERE tenant_id = s.tn AND entity_id = s.e) m \
            WHERE m.version IS NOT NULL), \
           (SELECT COALESCE(json_agg(ev.position), '[]')::text \
            FROM (SELECT DISTINCT tn, i FROM UNNEST($1::text[], $3::uuid[]) AS k(tn, i)) k \
            CROSS JOIN LATERAL (SELECT position FROM allsource_events \
                  WHERE tenant_id = k.tn AND id = k.i LIMIT 1) ev) \
         FROM allsource_log_head h WHERE h.singleton",
    )
    .bind(&tenants)
    .bind(&entity_ids)
    .bind(&ids)
    .fetch_one(&mut **tx)
    .await
    .map_err(append_error)?;
    let internal = |what: &'static str| {
        move |e: serde_json::Error| StoreAppendError::Internal(anyhow::Error::new(e).context(what))
    };
    let mut context = GroupContext {
        last_position: row.try_get(0).map_err(append_error)?,
        last_timestamp: row.try_get(1).map_err(append_error)?,
        ..GroupContext::default()
    };
    let versions: &str = row.try_get(2).map_err(append_error)?;
    let stored_positions: &str = row.try_get(3).map_err(append_error)?;
    let versions: Vec<(String, String, i64)> =
        serde_json::from_str(versions).map_err(internal("versions"))?;
    let stored_positions: Vec<i64> =
        serde_json::from_str(stored_positions).map_err(internal("positions"))?;
    for (tenant, entity, version) in versions {
        context
            .versions
            .entry(tenant)
            .or_default()
            .insert(entity, u64::try_from(version).unwrap_or(0));
    }
    if !stored_positions.is_empty() {
        let stored = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM allsource_events WHERE position = ANY($1)"
        )))
        .bind(&stored_positions)
        .fetch_all(&mut **tx)
        .await
        .map_err(append_error)?;
        for row in stored {
            let event = event_from_row(&row).map_err(StoreAppendError::Internal)?;
            context
                .events
                .entry(event.tenant_id.as_str().to_owned())
                .or_default()
                .insert(event.id, Arc::new(event));
        }
    }
    Ok(context)
}

/// What one group writes and answers.
#[derive(Debug, Default)]
pub(super) struct GroupPlan {
    /// One answer per request, in order.
    pub answers: Vec<Answer>,
    /// The new rows, at positions `first_position..=last_position`.
    pub rows: NewRows,
    pub first_position: i64,
    pub last_position: i64,
}

/// Plans the requests of a group in order, each against `context` plus what the requests
/// before it add (versions, and the events a later request of the group retries), as if each
/// had committed alone after the ones before it. A rejected request adds nothing.
pub(super) fn plan_group(
    context: &mut GroupContext,
    timestamp: DateTime<Utc>,
    inputs: &[(TenantId, Vec<ProposedEvent>)],
) -> GroupPlan {
    // Ids that appear in more than one request of the group: the later requests must find the
    // earlier one's event as stored. Only those are materialized as events.
    let mut seen = HashSet::new();
    let mut repeated = HashSet::new();
    for (tenant, events) in inputs {
        let unique: HashSet<EventId> = events.iter().map(|e| e.id).collect();
        for id in unique {
            if !seen.insert((tenant, id)) {
                repeated.insert((tenant, id));
            }
        }
    }
    let mut plan = GroupPlan {
        answers: Vec::with_capacity(inputs.len()),
        first_position: context.last_position + 1,
        last_position: context.last_position,
        ..GroupPlan::default()
    };
    for (tenant, events) in inputs {
        let view = TenantView {
            versions: context.versions.get(tenant.as_str()),
            events: context.events.get(tenant.as_str()),
        };
        let planned = match plan_append(&view, events) {
            Ok(planned) => planned,
            Err(rejection) => {
                plan.answers
                    .push(Err(StoreAppendError::Rejected(rejection)));
                continue;
            }
        };
        let mut receipts = Vec::with_capacity(events.len());
        for (event, planned) in events.iter().zip(planned) {
            match planned {
                PlannedEvent::Duplicate(stored) => {
                    receipts.push(AppendReceipt::for_event(&stored, true));
                }
                PlannedEvent::New { version } => {
                    plan.last_position += 1;
                    let position = plan.last_position;
                    plan.rows.push(tenant, event, version, position);
                    let receipt = AppendReceipt {
                        event_id: event.id,
                        entity_id: event.entity_id.clone(),
                        version,
                        position: Position::new(u64::try_from(position).unwrap_or(0)),
                        timestamp,
                        duplicate: false,
                    };
                    context
                        .versions
                        .entry(tenant.as_str().to_owned())
                        .or_default()
                        .insert(event.entity_id.as_str().to_owned(), version.get());
                    if repeated.contains(&(tenant, event.id)) {
                        context
                            .events
                            .entry(tenant.as_str().to_owned())
                            .or_default()
                            .insert(event.id, Arc::new(stored_event(tenant, event, &receipt)));
                    }
                    receipts.push(receipt);
                }
            }
        }
        plan.answers.push(Ok(receipts));
    }
    plan
}

/// The event a new row becomes, for a later request of the same group that retries it.
fn stored_event(tenant: &TenantId, event: &ProposedEvent, receipt: &AppendReceipt) -> Event {
    Event {
        id: event.id,
        tenant_id: tenant.clone(),
        entity_id: event.entity_id.clone(),
        event_type: event.event_type.clone(),
        version: receipt.version,
        position: receipt.position,
        timestamp: receipt.timestamp,
        payload: event.payload.clone(),
        metadata: event.metadata.clone(),
    }
}

/// Columns of the new rows, for one `INSERT ... SELECT FROM UNNEST` (one round trip per group).
#[derive(Debug, Default)]
pub(super) struct NewRows {
    pub positions: Vec<i64>,
    pub tenant_ids: Vec<String>,
    pub entity_ids: Vec<String>,
    pub event_types: Vec<String>,
    pub versions: Vec<i64>,
    pub ids: Vec<Uuid>,
    pub payloads: Vec<String>,
    pub metadata: Vec<Option<String>>,
}

impl NewRows {
    fn push(&mut self, tenant: &TenantId, event: &ProposedEvent, version: Version, position: i64) {
        self.positions.push(position);
        self.tenant_ids.push(tenant.as_str().to_owned());
        self.entity_ids.push(event.entity_id.as_str().to_owned());
        self.event_types.push(event.event_type.as_str().to_owned());
        self.versions
            .push(i64::try_from(version.get()).unwrap_or(i64::MAX));
        self.ids.push(event.id.as_uuid());
        self.payloads.push(event.payload.get().to_owned());
        self.metadata
            .push(event.metadata.as_ref().map(|m| m.get().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allsource_domain::{AppendRejection, EventType, ExpectedVersion};
    use serde_json::value::RawValue;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).expect("tenant")
    }

    fn event(entity: &str, expected: ExpectedVersion) -> ProposedEvent {
        ProposedEvent {
            id: EventId::generate(),
            entity_id: EntityId::parse(entity).expect("entity"),
            event_type: EventType::parse("t.happened").expect("type"),
            payload: RawValue::from_string(r#"{"n":1}"#.into()).expect("json"),
            metadata: None,
            expected_version: expected,
        }
    }

    /// The same proposed event again (a client's retry).
    fn again(e: &ProposedEvent) -> ProposedEvent {
        ProposedEvent {
            id: e.id,
            entity_id: e.entity_id.clone(),
            event_type: e.event_type.clone(),
            payload: e.payload.clone(),
            metadata: e.metadata.clone(),
            expected_version: e.expected_version,
        }
    }

    fn now() -> DateTime<Utc> {
        truncate_to_micros(Utc::now())
    }

    fn versions(answer: &Answer) -> Vec<u64> {
        answer
            .as_ref()
            .expect("accepted")
            .iter()
            .map(|r| r.version.get())
            .collect()
    }

    #[test]
    fn the_lock_statement_takes_the_append_lock() {
        assert_eq!(
            BEGIN_AND_LOCK,
            format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                super::super::APPEND_LOCK_KEY
            )
        );
    }

    #[test]
    fn requests_of_a_group_see_the_versions_of_the_ones_before() {
        let mut context = GroupContext {
            last_position: 41,
            ..GroupContext::default()
        };
        context
            .versions
            .entry("default".into())
            .or_default()
            .insert("a".into(), 3);
        let t = tenant("default");
        let inputs = vec![
            (t.clone(), vec![event("a", ExpectedVersion::Exact(3))]),
            (t.clone(), vec![event("a", ExpectedVersion::Exact(3))]),
            (
                t.clone(),
                vec![
                    event("a", ExpectedVersion::Exact(4)),
                    event("b", ExpectedVersion::NoStream),
                ],
            ),
            (t.clone(), vec![event("b", ExpectedVersion::NoStream)]),
        ];
        let plan = plan_group(&mut context, now(), &inputs);
        assert_eq!(versions(&plan.answers[0]), [4]);
        assert!(matches!(
            plan.answers[1],
            Err(StoreAppendError::Rejected(
                AppendRejection::VersionConflict { current: 4, .. }
            ))
        ));
        assert_eq!(versions(&plan.answers[2]), [5, 1]);
        assert!(matches!(
            plan.answers[3],
            Err(StoreAppendError::Rejected(
                AppendRejection::VersionConflict { current: 1, .. }
            ))
        ));
        assert_eq!(plan.rows.positions, [42, 43, 44]);
        assert_eq!((plan.first_position, plan.last_position), (42, 44));
        assert_eq!(plan.rows.versions, [4, 5, 1]);
    }

    #[test]
    fn a_retry_later_in_the_group_gets_the_first_requests_receipt() {
        let mut context = GroupContext::default();
        let t = tenant("default");
        let first = event("a", ExpectedVersion::Any);
        let mut changed = again(&first);
        changed.payload = RawValue::from_string(r#"{"n":2}"#.into()).expect("json");
        let inputs = vec![
            (t.clone(), vec![again(&first)]),
            (t.clone(), vec![again(&first)]),
            (t.clone(), vec![changed]),
        ];
        let plan = plan_group(&mut context, now(), &inputs);
        let original = &plan.answers[0].as_ref().expect("accepted")[0];
        let retried = &plan.answers[1].as_ref().expect("accepted")[0];
        assert!(!original.duplicate);
        assert!(retried.duplicate);
        assert_eq!(
            (retried.position, retried.version, retried.timestamp),
            (original.position, original.version, original.timestamp)
        );
        assert!(matches!(
            plan.answers[2],
            Err(StoreAppendError::Rejected(
                AppendRejection::DuplicateEventId { index: 0, .. }
            ))
        ));
        assert_eq!(plan.rows.positions, [1]);
    }

    #[test]
    fn tenants_of_one_group_keep_their_own_streams_and_ids() {
        let mut context = GroupContext::default();
        context
            .versions
            .entry("acme".into())
            .or_default()
            .insert("a".into(), 7);
        let shared = event("a", ExpectedVersion::Any);
        let inputs = vec![
            (tenant("acme"), vec![again(&shared)]),
            (tenant("globex"), vec![again(&shared)]),
        ];
        let plan = plan_group(&mut context, now(), &inputs);
        assert_eq!(versions(&plan.answers[0]), [8]);
        // The same id in another tenant is another event, not a retry.
        let other = &plan.answers[1].as_ref().expect("accepted")[0];
        assert_eq!((other.version.get(), other.duplicate), (1, false));
        assert_eq!(plan.rows.tenant_ids, ["acme", "globex"]);
    }

    #[test]
    fn a_group_of_only_retries_and_rejections_writes_nothing() {
        let stored = event("a", ExpectedVersion::Any);
        let t = tenant("default");
        let mut context = GroupContext {
            last_position: 9,
            ..GroupContext::default()
        };
        context
            .versions
            .entry("default".into())
            .or_default()
            .insert("a".into(), 1);
        let receipt = AppendReceipt {
            event_id: stored.id,
            entity_id: stored.entity_id.clone(),
            version: Version::new(1),
            position: Position::new(9),
            timestamp: now(),
            duplicate: false,
        };
        context
            .events
            .entry("default".into())
            .or_default()
            .insert(stored.id, Arc::new(stored_event(&t, &stored, &receipt)));
        let inputs = vec![
            (t.clone(), vec![again(&stored)]),
            (t.clone(), vec![event("a", ExpectedVersion::NoStream)]),
        ];
        let plan = plan_group(&mut context, now(), &inputs);
        let retried = &plan.answers[0].as_ref().expect("accepted")[0];
        assert!(retried.duplicate);
        assert_eq!(retried.position.get(), 9);
        assert!(plan.answers[1].is_err());
        assert!(plan.rows.positions.is_empty());
    }
}
