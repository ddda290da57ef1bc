//! The `EventStore` contract suite: one set of cases, run against every adapter (memory,
//! embedded, postgres, postgres on a log partitioned by tenant, postgres reading a
//! streaming-replication standby) and the cache
//! decorator (`cached`) through the [`Harness`]. Adding an adapter is one line in
//! `all_backends!`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use allsource_application::ports::{
    EntityListQuery, EntityOrder, EventQuery, EventStore, SortOrder, StoreAppendError, StreamRange,
};
use allsource_domain::{
    AppendRejection, EntityId, Event, EventId, EventType, ExpectedVersion, Position, ProposedEvent,
    TenantId,
};
use allsource_tests::harness::Harness;
use serde_json::value::RawValue;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

fn entity(name: &str) -> EntityId {
    EntityId::parse(name).expect("entity")
}

fn event(entity_id: &str, event_type: &str, payload: &str) -> ProposedEvent {
    ProposedEvent {
        id: EventId::generate(),
        entity_id: entity(entity_id),
        event_type: EventType::parse(event_type).expect("type"),
        payload: RawValue::from_string(payload.to_owned()).expect("json"),
        metadata: None,
        expected_version: ExpectedVersion::Any,
    }
}

fn expecting(mut e: ProposedEvent, expected: ExpectedVersion) -> ProposedEvent {
    e.expected_version = expected;
    e
}

async fn all_events(store: &dyn EventStore, t: &TenantId) -> Vec<Arc<Event>> {
    store
        .query(
            t,
            EventQuery {
                limit: 100_000,
                ..Default::default()
            },
        )
        .await
        .expect("query")
        .events
}

fn versions(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.version.get()).collect()
}

pub mod cases {
    use super::*;

    pub async fn batches_are_atomic(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        store.append(&t, vec![event("a", "t", "1")]).await.unwrap();
        let batch = vec![
            event("b", "t", "1"),
            event("c", "t", "1"),
            expecting(event("a", "t", "2"), ExpectedVersion::Exact(5)),
            event("d", "t", "1"),
        ];
        let err = store.append(&t, batch).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreAppendError::Rejected(AppendRejection::VersionConflict {
                    index: 2,
                    current: 1,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(
            all_events(store.as_ref(), &t).await.len(),
            1,
            "nothing of the batch"
        );
        let stats = store.stats(&t).await.unwrap();
        assert_eq!((stats.total_events, stats.total_entities), (1, 1));
        let ok = store
            .append(
                &t,
                vec![
                    event("b", "t", "1"),
                    event("a", "t", "2"),
                    event("b", "u", "2"),
                ],
            )
            .await
            .unwrap();
        let got: Vec<(String, u64)> = ok
            .iter()
            .map(|r| (r.entity_id.as_str().to_owned(), r.version.get()))
            .collect();
        assert_eq!(got, [("b".into(), 1), ("a".into(), 2), ("b".into(), 2)]);
        store.shutdown().await.unwrap();
    }

    pub async fn expected_version_forms(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        let conflict = |r: Result<_, StoreAppendError>, current: u64| match r {
            Err(StoreAppendError::Rejected(AppendRejection::VersionConflict {
                current: c,
                ..
            })) => assert_eq!(c, current),
            other => panic!("expected a conflict, got {other:?}"),
        };
        conflict(
            store
                .append(
                    &t,
                    vec![expecting(
                        event("a", "t", "1"),
                        ExpectedVersion::StreamExists,
                    )],
                )
                .await,
            0,
        );
        conflict(
            store
                .append(
                    &t,
                    vec![expecting(event("a", "t", "1"), ExpectedVersion::Exact(1))],
                )
                .await,
            0,
        );
        store
            .append(
                &t,
                vec![expecting(event("a", "t", "1"), ExpectedVersion::Exact(0))],
            )
            .await
            .unwrap();
        conflict(
            store
                .append(
                    &t,
                    vec![expecting(event("a", "t", "1"), ExpectedVersion::NoStream)],
                )
                .await,
            1,
        );
        store
            .append(
                &t,
                vec![expecting(
                    event("a", "t", "1"),
                    ExpectedVersion::StreamExists,
                )],
            )
            .await
            .unwrap();
        store
            .append(
                &t,
                vec![expecting(event("a", "t", "1"), ExpectedVersion::Exact(2))],
            )
            .await
            .unwrap();
        conflict(
            store
                .append(
                    &t,
                    vec![expecting(event("a", "t", "1"), ExpectedVersion::Exact(2))],
                )
                .await,
            3,
        );
        store
            .append(
                &t,
                vec![expecting(event("a", "t", "1"), ExpectedVersion::Any)],
            )
            .await
            .unwrap();
        store
            .append(
                &t,
                vec![expecting(event("new", "t", "1"), ExpectedVersion::NoStream)],
            )
            .await
            .unwrap();
        store.shutdown().await.unwrap();
    }

    pub async fn expectations_apply_in_order_within_a_batch(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        let ok = store
            .append(
                &t,
                vec![
                    expecting(event("a", "t", "1"), ExpectedVersion::NoStream),
                    expecting(event("a", "t", "2"), ExpectedVersion::Exact(1)),
                    expecting(event("a", "t", "3"), ExpectedVersion::StreamExists),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            ok.iter().map(|r| r.version.get()).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let err = store
            .append(
                &t,
                vec![
                    event("b", "t", "1"),
                    expecting(event("b", "t", "2"), ExpectedVersion::NoStream),
                ],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreAppendError::Rejected(AppendRejection::VersionConflict {
                    index: 1,
                    current: 1,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(
            store
                .read_stream(&t, &entity("b"), StreamRange::ALL)
                .await
                .unwrap()
                .is_empty()
        );
        store.shutdown().await.unwrap();
    }

    pub async fn retries_are_idempotent_by_id(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        let original = event("a", "t", r#"{"x":1}"#);
        let first = store.append(&t, vec![original.clone()]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut retry = expecting(original.clone(), ExpectedVersion::NoStream);
        retry.payload = RawValue::from_string(r#"{ "x": 1 }"#.into()).unwrap();
        let again = store
            .append(&t, vec![retry, event("a", "t", "2")])
            .await
            .unwrap();
        assert!(again[0].duplicate);
        assert_eq!(
            (again[0].version, again[0].position, again[0].timestamp),
            (first[0].version, first[0].position, first[0].timestamp)
        );
        assert!(!again[1].duplicate);
        assert_eq!(again[1].version.get(), 2);
        assert_eq!(
            all_events(store.as_ref(), &t).await.len(),
            2,
            "the retry appended nothing"
        );

        let mut changed = original.clone();
        changed.payload = RawValue::from_string(r#"{"x":2}"#.into()).unwrap();
        let err = store
            .append(&t, vec![event("z", "t", "1"), changed])
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreAppendError::Rejected(AppendRejection::DuplicateEventId { index: 1, event_id }) if event_id == original.id),
            "{err:?}"
        );
        let elsewhere = store
            .append(&tenant("other"), vec![original.clone()])
            .await
            .unwrap();
        assert!(!elsewhere[0].duplicate, "ids are unique per tenant");
        store.shutdown().await.unwrap();
    }

    pub async fn versions_positions_and_timestamps(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        for i in 0..30 {
            let batch = (0..(1 + i % 4))
                .map(|j| event(&format!("e{}", (i + j) % 3), "t", "{}"))
                .collect();
            store.append(&t, batch).await.unwrap();
        }
        let all = all_events(store.as_ref(), &t).await;
        assert_eq!(all.len(), (0..30).map(|i| 1 + i % 4).sum::<usize>());
        assert!(
            all.windows(2).all(|w| w[0].position < w[1].position),
            "positions increase"
        );
        assert!(
            all.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
            "timestamps never decrease"
        );
        assert!(
            all.iter()
                .all(|e| e.timestamp.timestamp_subsec_nanos() % 1000 == 0),
            "microseconds"
        );
        for e in ["e0", "e1", "e2"] {
            let stream = store
                .read_stream(&t, &entity(e), StreamRange::ALL)
                .await
                .unwrap();
            assert_eq!(
                versions(&stream),
                (1..=stream.len() as u64).collect::<Vec<_>>(),
                "{e} gapless"
            );
        }
        store.shutdown().await.unwrap();
    }

    pub async fn stream_ranges(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        store
            .append(
                &t,
                (0..10).map(|i| event("s", "t", &i.to_string())).collect(),
            )
            .await
            .unwrap();
        let range = |from, to, limit| StreamRange {
            from_version: from,
            to_version: to,
            limit,
        };
        let read = |r| {
            let store = store.clone();
            let t = t.clone();
            async move { versions(&store.read_stream(&t, &entity("s"), r).await.unwrap()) }
        };
        assert_eq!(read(StreamRange::ALL).await, (1..=10).collect::<Vec<_>>());
        assert_eq!(read(range(3, Some(5), None)).await, [3, 4, 5]);
        assert_eq!(read(range(8, None, Some(5))).await, [8, 9, 10]);
        assert_eq!(read(range(2, None, Some(2))).await, [2, 3]);
        assert!(read(range(11, None, None)).await.is_empty());
        assert!(
            store
                .read_stream(&t, &entity("nobody"), StreamRange::ALL)
                .await
                .unwrap()
                .is_empty()
        );
        store.shutdown().await.unwrap();
    }

    pub async fn queries_filter_and_page(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        let mut positions = Vec::new();
        for i in 0..20 {
            let ty = if i % 2 == 0 { "even" } else { "odd" };
            let r = store
                .append(&t, vec![event(&format!("q{}", i % 3), ty, &i.to_string())])
                .await
                .unwrap();
            positions.push(r[0].position.get());
            if i == 9 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let pos =
            |events: &[Arc<Event>]| events.iter().map(|e| e.position.get()).collect::<Vec<_>>();
        let q = |query: EventQuery| {
            let store = store.clone();
            let t = t.clone();
            async move { store.query(&t, query).await.unwrap() }
        };
        let page = q(EventQuery {
            limit: 5,
            ..Default::default()
        })
        .await;
        assert_eq!(pos(&page.events), positions[..5]);
        assert!(page.has_more);
        let page = q(EventQuery {
            limit: 5,
            from_position: Some(Position::new(positions[16])),
            ..Default::default()
        })
        .await;
        assert_eq!(pos(&page.events), positions[17..]);
        assert!(!page.has_more);
        let page = q(EventQuery {
            limit: 3,
            order: SortOrder::Desc,
            ..Default::default()
        })
        .await;
        assert_eq!(
            pos(&page.events),
            [positions[19], positions[18], positions[17]]
        );
        let page = q(EventQuery {
            limit: 3,
            order: SortOrder::Desc,
            from_position: Some(Position::new(positions[2])),
            ..Default::default()
        })
        .await;
        assert_eq!(pos(&page.events), [positions[1], positions[0]]);
        let page = q(EventQuery {
            limit: 2,
            offset: 3,
            event_type: Some(EventType::parse("odd").unwrap()),
            ..Default::default()
        })
        .await;
        assert_eq!(pos(&page.events), [positions[7], positions[9]]);
        let page = q(EventQuery {
            limit: 100,
            entity_id: Some(entity("q1")),
            ..Default::default()
        })
        .await;
        assert_eq!(
            pos(&page.events),
            positions
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 3 == 1)
                .map(|(_, p)| *p)
                .collect::<Vec<_>>()
        );
        let page = q(EventQuery {
            limit: 100,
            entity_id: Some(entity("q1")),
            event_type: Some(EventType::parse("even").unwrap()),
            ..Default::default()
        })
        .await;
        assert_eq!(page.events.len(), 3);
        // Time filters: the 10th event and later were appended after a pause.
        let all = all_events(store.as_ref(), &t).await;
        let cut = all[10].timestamp;
        assert!(all[9].timestamp < cut);
        let page = q(EventQuery {
            limit: 100,
            since: Some(cut),
            ..Default::default()
        })
        .await;
        assert_eq!(page.events.len(), 10);
        let page = q(EventQuery {
            limit: 100,
            until: Some(cut),
            ..Default::default()
        })
        .await;
        assert_eq!(page.events.len(), 10);
        let page = q(EventQuery {
            limit: 100,
            as_of: Some(all[9].timestamp),
            ..Default::default()
        })
        .await;
        assert_eq!(page.events.len(), 10);
        assert!(
            q(EventQuery {
                limit: 10,
                entity_id: Some(entity("none")),
                ..Default::default()
            })
            .await
            .events
            .is_empty()
        );
        store.shutdown().await.unwrap();
    }

    pub async fn pagers_never_miss_concurrent_appends(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                let t = t.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        let batch = (0..(1 + i % 3))
                            .map(|_| event(&format!("w{w}"), "t", "{}"))
                            .collect();
                        store.append(&t, batch).await.unwrap();
                    }
                })
            })
            .collect();
        let pager = {
            let store = store.clone();
            let t = t.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut cursor = None;
                let mut idle = 0;
                while idle < 30 {
                    let page = store
                        .query(
                            &t,
                            EventQuery {
                                from_position: cursor,
                                limit: 5,
                                ..Default::default()
                            },
                        )
                        .await
                        .unwrap();
                    if page.events.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    idle = 0;
                    seen.extend(page.events.iter().map(|e| e.position.get()));
                    cursor = page.events.last().map(|e| e.position);
                }
                seen
            })
        };
        for w in writers {
            w.await.unwrap();
        }
        let seen = pager.await.unwrap();
        let all: Vec<u64> = all_events(store.as_ref(), &t)
            .await
            .iter()
            .map(|e| e.position.get())
            .collect();
        // Per writer: 9 batches of 1, 8 of 2, 8 of 3 events.
        assert_eq!(all.len(), 4 * 49);
        assert_eq!(seen, all, "every event seen once, in order");
        store.shutdown().await.unwrap();
    }

    pub async fn tenants_are_isolated_everywhere(h: &Harness) {
        let store = h.open().await;
        let (a, b) = (tenant("alpha"), tenant("beta"));
        let ra = store
            .append(&a, vec![event("shared", "a.type", "1")])
            .await
            .unwrap();
        store
            .append(
                &b,
                vec![
                    event("shared", "b.type", "2"),
                    event("only-b", "b.type", "3"),
                ],
            )
            .await
            .unwrap();
        assert!(store.get_event(&b, ra[0].event_id).await.unwrap().is_none());
        assert!(store.get_event(&a, ra[0].event_id).await.unwrap().is_some());
        assert_eq!(
            store
                .read_stream(&a, &entity("shared"), StreamRange::ALL)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .read_stream(&b, &entity("shared"), StreamRange::ALL)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(all_events(store.as_ref(), &a).await.len(), 1);
        assert!(
            all_events(store.as_ref(), &a)
                .await
                .iter()
                .all(|e| e.tenant_id == a)
        );
        let list = store
            .list_entities(
                &a,
                EntityListQuery {
                    limit: 10,
                    offset: 0,
                    event_type_prefix: None,
                    order: EntityOrder::Desc,
                },
            )
            .await
            .unwrap();
        assert_eq!(list.total, 1);
        let types = store.event_types(&a).await.unwrap();
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].event_type.as_str(), "a.type");
        let stats = store.stats(&b).await.unwrap();
        assert_eq!(
            (
                stats.total_events,
                stats.total_entities,
                stats.total_event_types
            ),
            (2, 2, 1)
        );
        let none = tenant("nobody");
        assert_eq!(store.stats(&none).await.unwrap().total_events, 0);
        store.shutdown().await.unwrap();
    }

    /// `event_type_prefix` and `payload_filter` (top-level keys, numbers by value), with paging:
    /// every backend answers alike, including past payloads that are not objects.
    pub async fn queries_by_type_prefix_and_payload(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        let payloads = [
            ("order.placed", r#"{"status":"new","n":1}"#),
            ("order.paid", r#"{"status":"paid","n":2.0}"#),
            ("orders", r#"{"status":"paid","n":2}"#),
            ("order.paid", r#"[{"status":"paid"}]"#),
            ("order.paid", r#"{"status":"paid","n":2,"extra":{"a":[1]}}"#),
            ("user.created", r#"{"status":"paid","n":2}"#),
            ("order.paid", r#""paid""#),
        ];
        let mut positions = Vec::new();
        for (i, (ty, payload)) in payloads.iter().enumerate() {
            let r = store
                .append(&t, vec![event(&format!("e{i}"), ty, payload)])
                .await
                .unwrap();
            positions.push(r[0].position.get());
        }
        let pos =
            |events: &[Arc<Event>]| events.iter().map(|e| e.position.get()).collect::<Vec<_>>();
        let filter = |raw: &str| match serde_json::from_str(raw).unwrap() {
            serde_json::Value::Object(map) => Some(map),
            _ => unreachable!("filters are objects"),
        };
        let prefixed = store
            .query(
                &t,
                EventQuery {
                    event_type_prefix: Some("order.".into()),
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            pos(&prefixed.events),
            [
                positions[0],
                positions[1],
                positions[3],
                positions[4],
                positions[6]
            ]
        );
        let paid = |limit: usize, offset: usize, order: SortOrder| {
            let store = store.clone();
            let t = t.clone();
            let filter = filter(r#"{"status":"paid","n":2}"#);
            async move {
                store
                    .query(
                        &t,
                        EventQuery {
                            payload_filter: filter,
                            limit,
                            offset,
                            order,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap()
            }
        };
        let all = paid(100, 0, SortOrder::Asc).await;
        assert_eq!(
            pos(&all.events),
            [positions[1], positions[2], positions[4], positions[5]]
        );
        assert!(!all.has_more);
        let page = paid(2, 1, SortOrder::Asc).await;
        assert_eq!(pos(&page.events), [positions[2], positions[4]]);
        assert!(page.has_more);
        let newest = paid(1, 0, SortOrder::Desc).await;
        assert_eq!(pos(&newest.events), [positions[5]]);
        assert!(newest.has_more);
        let both = store
            .query(
                &t,
                EventQuery {
                    event_type_prefix: Some("order.".into()),
                    payload_filter: filter(r#"{"status":"paid"}"#),
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(pos(&both.events), [positions[1], positions[4]]);
        let nested = store
            .query(
                &t,
                EventQuery {
                    payload_filter: filter(r#"{"extra":{"a":[1]}}"#),
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(pos(&nested.events), [positions[4]]);
        store.shutdown().await.unwrap();
    }

    pub async fn catalog_views(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        store
            .append(
                &t,
                vec![
                    event("b", "order.placed", "1"),
                    event("a", "user.created", "1"),
                    event("c", "order.paid", "1"),
                ],
            )
            .await
            .unwrap();
        let last = store
            .append(&t, vec![event("a", "order.placed", "2")])
            .await
            .unwrap();
        let page = store
            .list_entities(
                &t,
                EntityListQuery {
                    limit: 2,
                    offset: 0,
                    event_type_prefix: None,
                    order: EntityOrder::Desc,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.total, 3);
        let ids: Vec<&str> = page.entities.iter().map(|e| e.entity_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(page.entities[0].event_count, 2);
        assert_eq!(page.entities[0].version.get(), 2);
        assert_eq!(page.entities[0].last_event_type.as_str(), "order.placed");
        assert_eq!(page.entities[0].last_event_at, last[0].timestamp);
        let users = store
            .list_entities(
                &t,
                EntityListQuery {
                    limit: 10,
                    offset: 0,
                    event_type_prefix: Some("user.".into()),
                    order: EntityOrder::Desc,
                },
            )
            .await
            .unwrap();
        assert_eq!((users.total, users.entities.len()), (1, 1));
        let orders = store
            .list_entities(
                &t,
                EntityListQuery {
                    limit: 10,
                    offset: 1,
                    event_type_prefix: Some("order.".into()),
                    order: EntityOrder::Desc,
                },
            )
            .await
            .unwrap();
        assert_eq!((orders.total, orders.entities.len()), (3, 2));
        // Oldest change first; b and c changed in the same append, so by id.
        let oldest_first = store
            .list_entities(
                &t,
                EntityListQuery {
                    limit: 10,
                    offset: 0,
                    event_type_prefix: None,
                    order: EntityOrder::Asc,
                },
            )
            .await
            .unwrap();
        let ids: Vec<&str> = oldest_first
            .entities
            .iter()
            .map(|e| e.entity_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "c", "a"]);
        let types: Vec<(String, u64)> = store
            .event_types(&t)
            .await
            .unwrap()
            .iter()
            .map(|c| (c.event_type.as_str().to_owned(), c.count))
            .collect();
        assert_eq!(
            types,
            [
                ("order.paid".into(), 1),
                ("order.placed".into(), 2),
                ("user.created".into(), 1)
            ]
        );
        let stats = store.stats(&t).await.unwrap();
        assert_eq!(
            (
                stats.total_events,
                stats.total_entities,
                stats.total_event_types
            ),
            (4, 3, 3)
        );
        assert_eq!(stats.last_position, last[0].position.get());
        assert!(stats.storage.contains_key("backend"));
        store.shutdown().await.unwrap();
    }

    pub async fn racing_no_stream_appends_have_one_winner(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        let racers: Vec<_> = (0..10)
            .map(|_| {
                let store = store.clone();
                let t = t.clone();
                tokio::spawn(async move {
                    store
                        .append(
                            &t,
                            vec![expecting(
                                event("race", "t", "1"),
                                ExpectedVersion::NoStream,
                            )],
                        )
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for r in racers {
            match r.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreAppendError::Rejected(AppendRejection::VersionConflict {
                    current: 1,
                    ..
                })) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(wins, 1);
        assert_eq!(
            store
                .read_stream(&t, &entity("race"), StreamRange::ALL)
                .await
                .unwrap()
                .len(),
            1
        );
        store.shutdown().await.unwrap();
    }

    pub async fn appends_after_shutdown_are_unavailable(h: &Harness) {
        let store = h.open().await;
        let t = tenant("default");
        store.append(&t, vec![event("a", "t", "1")]).await.unwrap();
        store.shutdown().await.unwrap();
        assert!(matches!(
            store.append(&t, vec![event("a", "t", "1")]).await,
            Err(StoreAppendError::Unavailable(_))
        ));
    }

    /// The adapter publishes every commit to the feed once it is readable: a subscription
    /// that starts while appends race it gets exactly its tenant's matching events, in
    /// position order, then live ones.
    pub async fn followers_get_every_commit_once_in_order(h: &Harness) {
        use allsource_application::subscriptions::{Delivery, Subscription};
        use allsource_domain::{EventFilter, TypeFilters};
        let (store, feed) = h.open_followed().await;
        let (a, b) = (tenant("a"), tenant("b"));
        for i in 0..10 {
            store
                .append(&a, vec![event(&format!("e{i}"), "x.before", "1")])
                .await
                .unwrap();
        }
        let writers: Vec<_> = [(a.clone(), "x.one"), (b.clone(), "x.one"), (a.clone(), "y")]
            .into_iter()
            .map(|(t, ty)| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..20 {
                        let batch = (0..1 + i % 3)
                            .map(|j| event(&format!("w{i}-{j}"), ty, "{}"))
                            .collect();
                        store.append(&t, batch).await.unwrap();
                    }
                })
            })
            .collect();
        let filter = EventFilter {
            types: TypeFilters::parse(&["x.*"]).unwrap(),
            entity_id: None,
        };
        let mut sub =
            Subscription::open(store.clone(), feed, a.clone(), filter, Some(0)).with_page_size(7);
        for w in writers {
            w.await.unwrap();
        }
        let expected: Vec<u64> = all_events(store.as_ref(), &a)
            .await
            .iter()
            .filter(|e| e.event_type.as_str().starts_with("x."))
            .map(|e| e.position.get())
            .collect();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("a delivery")
                .unwrap()
            {
                Delivery::Event { event, .. } => got.push(event.position.get()),
                Delivery::CaughtUp => {}
            }
        }
        assert_eq!(got, expected);
        let live = store
            .append(&a, vec![event("later", "x.live", "1")])
            .await
            .unwrap();
        let next = loop {
            match tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("a live delivery")
                .unwrap()
            {
                Delivery::Event { event, .. } => break event,
                Delivery::CaughtUp => {}
            }
        };
        assert_eq!(next.position, live[0].position);
        store.shutdown().await.unwrap();
    }

    pub async fn reopening_keeps_everything(h: &Harness) {
        if !h.durable() {
            return;
        }
        let store = h.open().await;
        let (a, b) = (tenant("default"), tenant("other"));
        for i in 0..120 {
            let t = if i % 5 == 0 { &b } else { &a };
            let mut e = event(
                &format!("r{}", i % 7),
                "t",
                &format!(r#"{{"i":{i},"text":"{}"}}"#, "z".repeat(64)),
            );
            if i % 2 == 0 {
                e.metadata = Some(RawValue::from_string(format!(r#"{{"n":{i}}}"#)).unwrap());
            }
            store.append(t, vec![e]).await.unwrap();
        }
        let mut snapshot: HashMap<TenantId, Vec<Event>> = HashMap::new();
        for t in [&a, &b] {
            snapshot.insert(
                t.clone(),
                all_events(store.as_ref(), t)
                    .await
                    .iter()
                    .map(|e| (**e).clone())
                    .collect(),
            );
        }
        store.shutdown().await.unwrap();
        drop(store);
        let store = h.open().await;
        for t in [&a, &b] {
            let after: Vec<Event> = all_events(store.as_ref(), t)
                .await
                .iter()
                .map(|e| (**e).clone())
                .collect();
            assert_eq!(&after, &snapshot[t], "tenant {t}");
        }
        let last = snapshot
            .values()
            .flatten()
            .map(|e| e.position.get())
            .max()
            .unwrap();
        let next = store.append(&a, vec![event("r0", "t", "1")]).await.unwrap();
        assert_eq!(next[0].position.get(), last + 1);
        let ids: HashSet<EventId> = snapshot.values().flatten().map(|e| e.id).collect();
        assert_eq!(ids.len(), 120);
        store.shutdown().await.unwrap();
    }
}

macro_rules! contract_suite {
    ($backend:ident => $make:expr; $($case:ident),* $(,)?) => {
        mod $backend {
            use allsource_tests::harness::Harness;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(harness) = $make.await else { return };
                    super::cases::$case(&harness).await;
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($case:ident),* $(,)?) => {
        contract_suite!(memory => Harness::memory(); $($case),*);
        contract_suite!(embedded => Harness::embedded(); $($case),*);
        contract_suite!(embedded_cold => Harness::embedded_cold(); $($case),*);
        contract_suite!(postgres => Harness::postgres(); $($case),*);
        contract_suite!(postgres_partitioned => Harness::postgres_partitioned(); $($case),*);
        contract_suite!(postgres_standby => Harness::postgres_standby(); $($case),*);
        contract_suite!(cached => Harness::cached(); $($case),*);
    };
}

all_backends!(
    batches_are_atomic,
    expected_version_forms,
    expectations_apply_in_order_within_a_batch,
    retries_are_idempotent_by_id,
    versions_positions_and_timestamps,
    stream_ranges,
    queries_filter_and_page,
    queries_by_type_prefix_and_payload,
    pagers_never_miss_concurrent_appends,
    tenants_are_isolated_everywhere,
    catalog_views,
    racing_no_stream_appends_have_one_winner,
    appends_after_shutdown_are_unavailable,
    reopening_keeps_everything,
);

// The postgres backend learns of commits through LISTEN/NOTIFY (see also `postgres_feed`).
contract_suite!(memory_followed => Harness::memory(); followers_get_every_commit_once_in_order);
contract_suite!(postgres_followed => Harness::postgres(); followers_get_every_commit_once_in_order);
contract_suite!(postgres_standby_followed => Harness::postgres_standby(); followers_get_every_commit_once_in_order);
contract_suite!(embedded_followed => Harness::embedded(); followers_get_every_commit_once_in_order);
contract_suite!(embedded_cold_followed => Harness::embedded_cold(); followers_get_every_commit_once_in_order);
contract_suite!(cached_followed => Harness::cached(); followers_get_every_commit_once_in_order);
