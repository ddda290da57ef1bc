//! The append planner: decides, for a batch of proposed events, which are new (and at which
//! version) and which are retries of stored events, checking expectations in request order.
//!
//! Every storage adapter calls [`plan_append`] inside its own critical section (the single
//! writer of the embedded engine, a transaction holding the stream locks in PostgreSQL), so the
//! rules live in one place and every adapter applies them identically.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{EntityId, Event, EventId, ExpectedVersion, ProposedEvent, Version, same_content};

/// What the planner needs to know about the stored log, as seen inside the adapter's critical
/// section.
pub trait AppendContext {
    /// Current version of the entity's stream in the tenant being appended to (0 = no events).
    fn stream_version(&self, entity_id: &EntityId) -> u64;
    /// The stored event with this id in the tenant, if any.
    fn stored_event(&self, id: &EventId) -> Option<Arc<Event>>;
}

/// The plan for one proposed event, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedEvent {
    /// Append it with this version.
    New { version: Version },
    /// A retry of this stored event: append nothing and answer with the original.
    Duplicate(Arc<Event>),
}

/// Why a batch was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendRejection {
    /// The expectation of the event at `index` did not hold.
    #[error("event {index}: expected version {expected} of '{entity_id}', current is {current}")]
    VersionConflict {
        index: usize,
        entity_id: EntityId,
        expected: ExpectedVersion,
        current: u64,
    },
    /// The id of the event at `index` is taken by a stored event with different content.
    #[error("event {index}: id {event_id} already exists with different content")]
    DuplicateEventId { index: usize, event_id: EventId },
}

/// Plans a batch. Expectations of several events on one entity apply in order, each seeing the
/// versions the earlier events of the batch take. A retry of a stored event (same id, same
/// content) is not checked against its expectation: it already passed it when first appended.
///
/// Callers reject a batch that names one id twice before planning it.
pub fn plan_append(
    ctx: &impl AppendContext,
    events: &[ProposedEvent],
) -> Result<Vec<PlannedEvent>, AppendRejection> {
    let mut heads: HashMap<&EntityId, u64> = HashMap::new();
    let mut plan = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        if let Some(stored) = ctx.stored_event(&event.id) {
            if same_content(&stored, event) {
                plan.push(PlannedEvent::Duplicate(stored));
                continue;
            }
            return Err(AppendRejection::DuplicateEventId {
                index,
                event_id: event.id,
            });
        }
        let current = heads
            .entry(&event.entity_id)
            .or_insert_with(|| ctx.stream_version(&event.entity_id));
        if !event.expected_version.is_satisfied_by(*current) {
            return Err(AppendRejection::VersionConflict {
                index,
                entity_id: event.entity_id.clone(),
                expected: event.expected_version,
                current: *current,
            });
        }
        *current += 1;
        plan.push(PlannedEvent::New {
            version: Version::new(*current),
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::fixtures::*;

    #[derive(Default)]
    struct Given {
        versions: HashMap<EntityId, u64>,
        events: HashMap<EventId, Arc<Event>>,
    }

    impl Given {
        fn stored(mut self, event: Event) -> Self {
            let v = self.versions.entry(event.entity_id.clone()).or_default();
            *v = (*v).max(event.version.get());
            self.events.insert(event.id, Arc::new(event));
            self
        }
    }

    impl AppendContext for Given {
        fn stream_version(&self, entity_id: &EntityId) -> u64 {
            self.versions.get(entity_id).copied().unwrap_or(0)
        }
        fn stored_event(&self, id: &EventId) -> Option<Arc<Event>> {
            self.events.get(id).cloned()
        }
    }

    fn expecting(mut p: ProposedEvent, e: ExpectedVersion) -> ProposedEvent {
        p.expected_version = e;
        p
    }

    fn versions(plan: &[PlannedEvent]) -> Vec<u64> {
        plan.iter()
            .map(|p| match p {
                PlannedEvent::New { version } => version.get(),
                PlannedEvent::Duplicate(e) => 1000 + e.version.get(),
            })
            .collect()
    }

    #[test]
    fn new_streams_start_at_version_one_and_batches_count_on() {
        let given = Given::default().stored(stored(proposed("b", "t", "1"), 1, 1));
        let batch = [
            proposed("a", "t", "1"),
            proposed("b", "t", "2"),
            proposed("a", "t", "3"),
        ];
        assert_eq!(versions(&plan_append(&given, &batch).unwrap()), [1, 2, 2]);
    }

    #[test]
    fn expectations_apply_in_order_within_a_batch() {
        let given = Given::default();
        let ok = [
            expecting(proposed("a", "t", "1"), ExpectedVersion::NoStream),
            expecting(proposed("a", "t", "2"), ExpectedVersion::Exact(1)),
            expecting(proposed("a", "t", "3"), ExpectedVersion::StreamExists),
        ];
        assert_eq!(versions(&plan_append(&given, &ok).unwrap()), [1, 2, 3]);

        let bad = [
            proposed("a", "t", "1"),
            expecting(proposed("a", "t", "2"), ExpectedVersion::NoStream),
        ];
        assert_eq!(
            plan_append(&given, &bad).unwrap_err(),
            AppendRejection::VersionConflict {
                index: 1,
                entity_id: EntityId::parse("a").unwrap(),
                expected: ExpectedVersion::NoStream,
                current: 1
            }
        );
    }

    #[test]
    fn exact_expectation_against_stored_stream() {
        let given = Given::default()
            .stored(stored(proposed("a", "t", "1"), 1, 1))
            .stored(stored(proposed("a", "t", "2"), 2, 2));
        let ok = [expecting(
            proposed("a", "t", "3"),
            ExpectedVersion::Exact(2),
        )];
        assert_eq!(versions(&plan_append(&given, &ok).unwrap()), [3]);
        let stale = [expecting(
            proposed("a", "t", "3"),
            ExpectedVersion::Exact(1),
        )];
        assert!(matches!(
            plan_append(&given, &stale),
            Err(AppendRejection::VersionConflict {
                current: 2,
                index: 0,
                ..
            })
        ));
        let missing = [expecting(
            proposed("z", "t", "3"),
            ExpectedVersion::StreamExists,
        )];
        assert!(matches!(
            plan_append(&given, &missing),
            Err(AppendRejection::VersionConflict { current: 0, .. })
        ));
    }

    #[test]
    fn retries_are_duplicates_and_skip_their_expectation() {
        let original = proposed("a", "t", r#"{"x":1}"#);
        let given = Given::default().stored(stored(original.clone(), 1, 7));
        let retry = expecting(original.clone(), ExpectedVersion::NoStream);
        let plan = plan_append(&given, &[retry, proposed("a", "t", "2")]).unwrap();
        match &plan[0] {
            PlannedEvent::Duplicate(e) => assert_eq!(e.position.get(), 7),
            other => panic!("expected duplicate, got {other:?}"),
        }
        assert_eq!(
            plan[1],
            PlannedEvent::New {
                version: Version::new(2)
            }
        );
    }

    #[test]
    fn same_id_with_other_content_is_refused() {
        let original = proposed("a", "t", r#"{"x":1}"#);
        let given = Given::default().stored(stored(original.clone(), 1, 1));
        let mut changed = original;
        changed.payload = raw(r#"{"x":2}"#);
        let id = changed.id;
        assert_eq!(
            plan_append(&given, &[proposed("b", "t", "1"), changed]).unwrap_err(),
            AppendRejection::DuplicateEventId {
                index: 1,
                event_id: id
            }
        );
    }
}
