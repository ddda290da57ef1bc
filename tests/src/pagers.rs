//! Concurrent writers and a pager that follows the log, for the tests of "a pager never skips a
//! committed event" on one node, on two, and on a standby; and the plain test event they
//! append ([`event`]), which the other postgres tests use too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_application::ports::{EventQuery, EventStore};
use allsource_domain::{EntityId, EventId, EventType, ExpectedVersion, ProposedEvent, TenantId};
use serde_json::value::RawValue;

/// The events each writer of [`writers_and_pager`] appends: 40 batches, 14 of one event, 13 of
/// two and 13 of three.
pub const EVENTS_PER_WRITER: usize = 79;

/// How long the pager goes on before it gives up on events it has not seen.
const PAGER_DEADLINE: Duration = Duration::from_secs(120);

/// A `test.appended` event of `entity` with payload `{"n":1}`, a fresh id and no expectation.
pub fn event(entity: &str) -> ProposedEvent {
    ProposedEvent {
        id: EventId::generate(),
        entity_id: EntityId::parse(entity).expect("entity"),
        event_type: EventType::parse("test.appended").expect("type"),
        payload: RawValue::from_string(r#"{"n":1}"#.into()).expect("json"),
        metadata: None,
        expected_version: ExpectedVersion::Any,
    }
}

/// `writers` tasks append to `tenant` through `writer` (batches of one to three events, four
/// entities each) while one task pages `reader`'s log of `tenant` by `from_position`, seven
/// events a page, until it has seen `writers × EVENTS_PER_WRITER` events (or
/// [`PAGER_DEADLINE`] passed). Gives the positions the pager saw, in the order it saw them.
pub async fn writers_and_pager<W, R>(
    writer: Arc<W>,
    reader: Arc<R>,
    tenant: &TenantId,
    writers: usize,
) -> Vec<u64>
where
    W: EventStore + ?Sized + 'static,
    R: EventStore + ?Sized + 'static,
{
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&writer);
            let tenant = tenant.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let batch = (0..(1 + i % 3))
                        .map(|_| event(&format!("w{w}-{}", i % 4)))
                        .collect();
                    store.append(&tenant, batch).await.expect("append");
                }
            })
        })
        .collect();
    let expected = writers * EVENTS_PER_WRITER;
    let tenant = tenant.clone();
    let pager = tokio::spawn(async move {
        let deadline = Instant::now() + PAGER_DEADLINE;
        let mut seen = Vec::new();
        let mut cursor = None;
        while seen.len() < expected && Instant::now() < deadline {
            let page = reader
                .query(
                    &tenant,
                    EventQuery {
                        from_position: cursor,
                        limit: 7,
                        ..Default::default()
                    },
                )
                .await
                .expect("query");
            if page.events.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            seen.extend(page.events.iter().map(|e| e.position.get()));
            cursor = page.events.last().map(|e| e.position);
        }
        seen
    });
    for handle in handles {
        handle.await.expect("writer");
    }
    pager.await.expect("pager")
}

/// The positions of every event of `tenant` (up to 10,000), in order.
pub async fn all_positions<S>(store: &S, tenant: &TenantId) -> Vec<u64>
where
    S: EventStore + ?Sized,
{
    let all = store
        .query(
            tenant,
            EventQuery {
                limit: 10_000,
                ..Default::default()
            },
        )
        .await
        .expect("query all");
    all.events.iter().map(|e| e.position.get()).collect()
}
