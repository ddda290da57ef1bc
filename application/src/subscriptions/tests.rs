//! The seam between catch-up and live, under races, slow readers, lost notifications and
//! storage failures, over [`SharedLog`] (a multi-tenant log publishing to a real feed).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use allsource_domain::{EntityId, EventFilter, TenantId, TypeFilters};

use super::*;
use crate::testing::SharedLog;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

fn open(log: &Arc<SharedLog>, name: &str, filter: EventFilter, after: Option<u64>) -> Subscription {
    Subscription::open(log.clone(), log.feed(), tenant(name), filter, after)
}

fn types(raw: &[&str]) -> EventFilter {
    EventFilter {
        types: TypeFilters::parse(raw).expect("filters"),
        entity_id: None,
    }
}

/// The next delivery, failing the test after a second of silence.
async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a delivery within 5 s")
        .expect("no error")
}

/// Positions of the next `n` events (CaughtUp markers are collected separately).
async fn take(sub: &mut Subscription, n: usize, caught_up: &mut usize) -> Vec<u64> {
    let mut positions = Vec::with_capacity(n);
    while positions.len() < n {
        match next(sub).await {
            Delivery::Event { event, .. } => positions.push(event.position.get()),
            Delivery::CaughtUp => *caught_up += 1,
        }
    }
    positions
}

/// Nothing more arrives for a little while.
async fn quiet(sub: &mut Subscription) {
    let more = tokio::time::timeout(Duration::from_millis(50), sub.next()).await;
    assert!(more.is_err(), "unexpected delivery: {more:?}");
}

fn positions_of(log: &SharedLog, name: &str, filter: &EventFilter, after: u64) -> Vec<u64> {
    log.events()
        .iter()
        .filter(|e| {
            e.tenant_id.as_str() == name
                && e.position.get() > after
                && filter.matches(&e.entity_id, e.event_type.as_str())
        })
        .map(|e| e.position.get())
        .collect()
}

#[tokio::test]
async fn catches_up_from_storage_then_follows_live_commits() {
    let log = SharedLog::new(64);
    for i in 0..12 {
        log.append("a", &[("e1", if i % 2 == 0 { "x.one" } else { "y" })]);
    }
    let mut sub = open(&log, "a", EventFilter::everything(), Some(0)).with_page_size(5);
    let mut caught_up = 0;
    assert_eq!(
        take(&mut sub, 12, &mut caught_up).await,
        (1..=12).collect::<Vec<_>>()
    );
    assert_eq!(next(&mut sub).await, Delivery::CaughtUp);
    log.append("a", &[("e1", "z"), ("e2", "z")]);
    let mut caught_up = 0;
    assert_eq!(take(&mut sub, 2, &mut caught_up).await, [13, 14]);
    assert_eq!(caught_up, 0, "CaughtUp comes once");
    assert_eq!(
        log.queries.load(Ordering::Relaxed),
        3,
        "3 pages, none while live"
    );
    quiet(&mut sub).await;
}

#[tokio::test]
async fn live_events_say_they_are_live_and_replayed_ones_do_not() {
    let log = SharedLog::new(64);
    log.append("a", &[("e1", "t")]);
    let mut sub = open(&log, "a", EventFilter::everything(), Some(0));
    assert!(matches!(
        next(&mut sub).await,
        Delivery::Event { live: false, .. }
    ));
    assert_eq!(next(&mut sub).await, Delivery::CaughtUp);
    log.append("a", &[("e1", "t")]);
    assert!(matches!(
        next(&mut sub).await,
        Delivery::Event { live: true, .. }
    ));
}

#[tokio::test]
async fn another_tenant_and_unmatched_types_never_arrive() {
    let log = SharedLog::new(64);
    let filter = types(&["order.*"]);
    log.append("b", &[("e1", "order.placed")]);
    log.append(
        "a",
        &[("e1", "order.placed"), ("e1", "orders"), ("e2", "order")],
    );
    let mut sub = open(&log, "a", filter.clone(), Some(0));
    let mut caught_up = 0;
    assert_eq!(take(&mut sub, 2, &mut caught_up).await, [2, 4]);
    log.append("b", &[("e1", "order.placed")]);
    log.append("a", &[("e1", "customer.created"), ("e3", "order.paid")]);
    assert_eq!(take(&mut sub, 1, &mut caught_up).await, [7]);
    assert_eq!(caught_up, 1);
    quiet(&mut sub).await;
}

#[tokio::test]
async fn an_entity_filter_follows_one_stream() {
    let log = SharedLog::new(64);
    log.append("a", &[("e1", "t"), ("e2", "t")]);
    let filter = EventFilter {
        types: TypeFilters::any(),
        entity_id: Some(EntityId::parse("e2").expect("entity")),
    };
    let mut sub = open(&log, "a", filter, Some(0));
    let mut caught_up = 0;
    assert_eq!(take(&mut sub, 1, &mut caught_up).await, [2]);
    log.append("a", &[("e1", "t"), ("e2", "t")]);
    assert_eq!(take(&mut sub, 1, &mut caught_up).await, [4]);
}

#[tokio::test]
async fn live_only_starts_at_the_head() {
    let log = SharedLog::new(64);
    log.append("a", &[("e1", "t"), ("e1", "t")]);
    let mut sub = open(&log, "a", EventFilter::everything(), None);
    log.append("a", &[("e1", "t")]);
    let mut caught_up = 0;
    assert_eq!(take(&mut sub, 1, &mut caught_up).await, [3]);
    assert_eq!(
        caught_up, 0,
        "a live-only subscription has nothing to catch up"
    );
    assert_eq!(log.queries.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_start_beyond_the_head_waits_for_that_position() {
    let log = SharedLog::new(64);
    log.append("a", &[("e1", "t")]);
    let mut sub = open(&log, "a", EventFilter::everything(), Some(3));
    log.append("a", &[("e1", "t"), ("e1", "t"), ("e1", "t")]);
    let mut caught_up = 0;
    assert_eq!(take(&mut sub, 1, &mut caught_up).await, [4]);
}

#[tokio::test]
async fn a_subscriber_that_reads_nothing_for_a_while_then_everything_misses_nothing() {
    // A feed that keeps only 2 groups: the reader falls behind many times.
    let log = SharedLog::new(2);
    let mut sub = open(&log, "a", EventFilter::everything(), Some(0)).with_page_size(7);
    assert_eq!(next(&mut sub).await, Delivery::CaughtUp);
    for round in 0..5 {
        for i in 0..100 {
            let tenant = if i % 3 == 0 { "b" } else { "a" };
            log.append(tenant, &[("e1", "t"), ("e2", "t")]);
        }
        let expected = positions_of(&log, "a", &EventFilter::everything(), sub.covered());
        let mut caught_up = 0;
        let got = take(&mut sub, expected.len(), &mut caught_up).await;
        assert_eq!(got, expected, "round {round}");
        quiet(&mut sub).await;
    }
    assert!(sub.counters().fell_behind >= 5, "{:?}", sub.counters());
}

#[tokio::test]
async fn a_lost_notification_shows_as_a_gap_and_is_read_from_storage() {
    let log = SharedLog::new(64);
    let mut sub = open(&log, "a", EventFilter::everything(), Some(0));
    assert_eq!(next(&mut sub).await, Delivery::CaughtUp);
    log.append_unpublished("a", &[("e1", "t"), ("e1", "t")]);
    log.append("a", &[("e1", "t")]);
    let mut caught_up = 0;
    assert_eq!(take(&mut sub, 3, &mut caught_up).await, [1, 2, 3]);
    assert_eq!(sub.counters().fell_behind, 1);
}

#[tokio::test]
async fn a_failed_read_is_an_error_and_a_new_subscription_goes_on_after_what_was_seen() {
    let log = SharedLog::new(64);
    for _ in 0..10 {
        log.append("a", &[("e1", "t")]);
    }
    let mut sub = open(&log, "a", EventFilter::everything(), Some(0)).with_page_size(4);
    let mut caught_up = 0;
    let first = take(&mut sub, 4, &mut caught_up).await;
    log.fail_queries.store(true, Ordering::Release);
    assert!(matches!(
        sub.next().await,
        Err(SubscriptionError::Storage(_))
    ));
    log.fail_queries.store(false, Ordering::Release);
    let last_seen = *first.last().expect("events");
    let mut again = open(&log, "a", EventFilter::everything(), Some(last_seen));
    assert_eq!(
        take(&mut again, 6, &mut caught_up).await,
        (5..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn closing_the_feed_ends_every_subscription() {
    let log = SharedLog::new(64);
    let mut live = open(&log, "a", EventFilter::everything(), None);
    let mut waiting = open(&log, "a", EventFilter::everything(), Some(0));
    assert_eq!(next(&mut waiting).await, Delivery::CaughtUp);
    let feed = log.feed();
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        feed.close();
    });
    assert!(matches!(live.next().await, Err(SubscriptionError::Closed)));
    assert!(matches!(
        waiting.next().await,
        Err(SubscriptionError::Closed)
    ));
    closer.await.expect("closer");
    assert!(log.feed().is_closed());
}

#[tokio::test]
async fn a_new_filter_applies_to_what_follows() {
    let log = SharedLog::new(64);
    let mut sub = open(&log, "a", types(&["x"]), Some(0));
    assert_eq!(next(&mut sub).await, Delivery::CaughtUp);
    log.append("a", &[("e1", "x"), ("e1", "y")]);
    let mut caught_up = 0;
    assert_eq!(take(&mut sub, 1, &mut caught_up).await, [1]);
    sub.set_filter(types(&["y"]));
    log.append("a", &[("e1", "x"), ("e1", "y")]);
    assert_eq!(take(&mut sub, 1, &mut caught_up).await, [4]);
}

/// A tiny deterministic generator, so a failing schedule can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Appends race the subscription's switch from catch-up to live, on two threads, with
/// subscriptions opened at random moments, random page sizes and a small feed: every
/// subscriber receives exactly its tenant's matching events after its start, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_racing_the_switch_to_live_never_make_a_gap_or_a_duplicate() {
    for seed in 0..150u64 {
        let mut rng = Lcg(seed);
        let log = SharedLog::new(1 + rng.below(8) as usize);
        for _ in 0..rng.below(30) {
            log.append("a", &[("e1", "t.one")]);
        }
        let appender = {
            let log = log.clone();
            let groups = 50 + rng.below(150);
            let mut rng = Lcg(seed ^ 0xdead_beef);
            std::thread::spawn(move || {
                for _ in 0..groups {
                    let tenant = if rng.below(4) == 0 { "b" } else { "a" };
                    let size = 1 + rng.below(4) as usize;
                    let kinds = ["t.one", "t.two", "u"];
                    let batch: Vec<(&str, &str)> = (0..size)
                        .map(|_| ("e1", kinds[rng.below(3) as usize]))
                        .collect();
                    log.append(tenant, &batch);
                    if rng.below(3) == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let filter = if seed % 2 == 0 {
            EventFilter::everything()
        } else {
            types(&["t.*"])
        };
        tokio::task::yield_now().await;
        let start = rng.below(5);
        let mut sub =
            open(&log, "a", filter.clone(), Some(start)).with_page_size(1 + rng.below(20) as usize);
        appender.join().expect("appender");
        let expected = positions_of(&log, "a", &filter, start);
        let mut caught_up = 0;
        let got = take(&mut sub, expected.len(), &mut caught_up).await;
        assert_eq!(got, expected, "seed {seed}");
        // The marker may come after the last event, when the reader caught up at the end.
        if caught_up == 0 {
            assert_eq!(next(&mut sub).await, Delivery::CaughtUp, "seed {seed}");
        }
        if seed % 10 == 0 {
            quiet(&mut sub).await;
        }
    }
}

#[tokio::test]
async fn waiting_live_is_set_only_while_it_waits_for_a_commit_with_nothing_in_hand() {
    let log = SharedLog::new(16);
    log.append("acme", &[("a", "t"), ("b", "t")]);
    // Storage reads take a while: the flag stays down while one is in progress.
    *log.query_latency.lock() = Some(Duration::from_millis(50));
    let mut sub = open(&log, "acme", types(&[]), Some(0));
    let flag = sub.waiting_live();
    assert!(!flag.load(Ordering::Acquire));
    let reading = tokio::spawn(async move {
        let mut caught_up = 0;
        let first = take(&mut sub, 2, &mut caught_up).await;
        (sub, first)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !flag.load(Ordering::Acquire),
        "reading storage is not caught up"
    );
    let (mut sub, first) = reading.await.expect("task");
    assert_eq!(first, [1, 2]);
    assert_eq!(next(&mut sub).await, Delivery::CaughtUp);
    // Caught up, waiting for the next commit: the flag is up until something arrives.
    let waiting = tokio::spawn(async move {
        let delivered = next(&mut sub).await;
        (sub, delivered)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waited = flag.load(Ordering::Acquire);
    log.append("acme", &[("c", "t")]);
    let (_sub, delivered) = waiting.await.expect("task");
    assert!(
        waited,
        "caught up and waiting: the flag is up (delivered next: {delivered:?})"
    );
    let Delivery::Event { event, .. } = delivered else {
        panic!("expected the event, got {delivered:?}");
    };
    assert_eq!(event.position.get(), 3);
    assert!(
        !flag.load(Ordering::Acquire),
        "holding an event is not waiting"
    );
}
