//! The entity-state fold: an entity's current state is its payloads folded in version order with
//! a top-level merge.
//!
//! Rules (from the REST contract):
//! - an object payload's top-level keys overwrite the state's; a key set to `null` is removed;
//! - a non-object payload replaces the whole state;
//! - an object payload applied to a non-object state starts a fresh object.
//!
//! The fold starts from an empty object.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::{EntityId, Event, Version};

/// Applies one payload to a state, following the merge rules above.
pub fn apply_payload(state: &mut Value, payload: Value) {
    match payload {
        Value::Object(fields) => {
            if !state.is_object() {
                *state = Value::Object(Map::new());
            }
            if let Value::Object(current) = state {
                for (key, value) in fields {
                    if value.is_null() {
                        current.remove(&key);
                    } else {
                        current.insert(key, value);
                    }
                }
            }
        }
        other => *state = other,
    }
}

/// The state of one entity reconstructed from its events.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityState {
    pub entity_id: EntityId,
    /// Version of the last event folded in.
    pub version: Version,
    /// Number of events folded in.
    pub event_count: u64,
    /// Timestamp of the last event folded in.
    pub last_updated: DateTime<Utc>,
    pub state: Value,
}

impl EntityState {
    /// Folds the events of one entity, given in version order. `None` if there are none.
    ///
    /// A stored payload is valid JSON by construction; should one fail to parse anyway, it is
    /// skipped rather than allowed to wipe the state, and the version still advances.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Self> {
        let mut folded: Option<Self> = None;
        for event in events {
            folded
                .get_or_insert_with(|| Self {
                    entity_id: event.entity_id.clone(),
                    version: event.version,
                    event_count: 0,
                    last_updated: event.timestamp,
                    state: Value::Object(Map::new()),
                })
                .apply(event);
        }
        folded
    }

    /// Folds one more event (the next version of the same entity) into the state. Because the
    /// fold is a left fold, a state folded up to version `v` and then given the events after
    /// `v` equals the fold of the whole stream (property-tested below).
    pub fn apply(&mut self, event: &Event) {
        if let Ok(payload) = serde_json::from_str::<Value>(event.payload.get()) {
            apply_payload(&mut self.state, payload);
        }
        self.version = event.version;
        self.event_count += 1;
        self.last_updated = event.timestamp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::fixtures::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn fold_values(payloads: &[Value]) -> Value {
        let mut state = Value::Object(Map::new());
        for p in payloads {
            apply_payload(&mut state, p.clone());
        }
        state
    }

    #[test]
    fn top_level_merge_overwrites_and_removes() {
        let state = fold_values(&[
            json!({"status": "placed", "amount": 10, "items": [1]}),
            json!({"status": "paid", "items": [1, 2]}),
            json!({"amount": null, "note": {"a": 1}}),
        ]);
        assert_eq!(
            state,
            json!({"status": "paid", "items": [1, 2], "note": {"a": 1}})
        );
    }

    #[test]
    fn merge_is_not_deep() {
        let state = fold_values(&[json!({"a": {"x": 1, "y": 2}}), json!({"a": {"x": 3}})]);
        assert_eq!(state, json!({"a": {"x": 3}}));
    }

    #[test]
    fn non_object_payload_replaces_the_state() {
        assert_eq!(fold_values(&[json!({"a": 1}), json!(42)]), json!(42));
        assert_eq!(
            fold_values(&[json!({"a": 1}), json!([1, 2])]),
            json!([1, 2])
        );
        assert_eq!(
            fold_values(&[json!("s"), json!({"b": 2, "c": null})]),
            json!({"b": 2})
        );
        assert_eq!(fold_values(&[json!(null)]), json!(null));
    }

    #[test]
    fn first_object_drops_null_keys() {
        assert_eq!(fold_values(&[json!({"a": null, "b": 1})]), json!({"b": 1}));
    }

    #[test]
    fn fold_tracks_version_count_and_time() {
        let e1 = stored(proposed("e", "t", r#"{"a":1}"#), 1, 10);
        let e2 = stored(proposed("e", "t", r#"{"b":2}"#), 2, 11);
        let state = EntityState::fold([&e1, &e2]).unwrap();
        assert_eq!(state.version, Version::new(2));
        assert_eq!(state.event_count, 2);
        assert_eq!(state.last_updated, e2.timestamp);
        assert_eq!(state.state, json!({"a": 1, "b": 2}));
        assert!(EntityState::fold(std::iter::empty::<&Event>()).is_none());
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
        ]
    }

    fn payload() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => prop::collection::btree_map("[a-d]", json_leaf(), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => json_leaf(),
        ]
    }

    proptest! {
        /// Folding is a left fold: folding a prefix and then the rest gives the whole fold, which
        /// is what lets snapshots fold only the tail.
        #[test]
        fn fold_of_prefix_then_rest_is_the_whole_fold(
            payloads in prop::collection::vec(payload(), 0..12),
            split in 0usize..12,
        ) {
            let split = split.min(payloads.len());
            let mut state = fold_values(&payloads[..split]);
            for p in &payloads[split..] {
                apply_payload(&mut state, p.clone());
            }
            prop_assert_eq!(state, fold_values(&payloads));
        }

        /// The state holds exactly the keys whose last write since the last non-object payload
        /// was not null, with that value.
        #[test]
        fn object_fold_matches_last_writer_model(
            payloads in prop::collection::vec(payload(), 1..12),
        ) {
            let state = fold_values(&payloads);
            let last_non_object = payloads.iter().rposition(|p| !p.is_object());
            match last_non_object {
                Some(i) if i == payloads.len() - 1 => prop_assert_eq!(&state, &payloads[i]),
                _ => {
                    let start = last_non_object.map_or(0, |i| i + 1);
                    let mut model = std::collections::BTreeMap::new();
                    for p in &payloads[start..] {
                        for (k, v) in p.as_object().unwrap() {
                            model.insert(k.clone(), v.clone());
                        }
                    }
                    model.retain(|_, v| !v.is_null());
                    let expected = Value::Object(model.into_iter().collect());
                    prop_assert_eq!(state, expected);
                }
            }
        }
    }
}
