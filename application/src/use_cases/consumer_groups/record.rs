//! The durable record of one consumer group (one state-store value, rewritten with
//! compare-and-swap by every operation) and its pure transitions.
//!
//! # What the record holds
//! - `config`: the group's settings.
//! - `read`: the read cursor. Every matching event at or below it has been taken from the log
//!   at least once; none above it.
//! - `leases`: every message taken from the log and not settled yet, in position order:
//!   held by a member until its deadline (`held`), or waiting to be delivered again (its ack
//!   timeout passed, it was nacked, or it was replayed from the parked list). `delivery_id` is
//!   the id of its latest delivery, the one an ack names.
//! - `parked`: messages delivered `max_deliveries` times without an ack, in position order, at
//!   most [`MAX_PARKED`].
//! - `committed`: every message at or below it is acked or parked (informational: one below the
//!   first lease, or `read` when there is none; a replay of parked messages moves it back).
//! - `counters` and `members` (last poll time per member, at most [`MAX_MEMBERS`]).
//!
//! The acked messages above `committed` are not listed: a matching event at or below `read`
//! that is neither leased nor parked has been acked. That keeps the record small: its size is
//! bounded by `max_in_flight` leases, [`MAX_PARKED`] parked messages and [`MAX_MEMBERS`]
//! members, whatever the log holds.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Parked messages kept per group. When the list is full, messages that run out of attempts
/// stay waiting (they are neither delivered again nor dropped) and the group takes nothing new
/// from the log until parked messages are replayed.
pub const MAX_PARKED: usize = 1000;
/// Members remembered per group (the least recently seen is forgotten first).
pub const MAX_MEMBERS: usize = 100;
/// A poll that changes nothing still records the member's poll time when the one stored is
/// older than this (so idle long polls do not write on every wake-up).
pub const MEMBER_TOUCH_MS: i64 = 5_000;

/// The group's settings, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// Event-type filters as written (`x`, `x.*`, `*`); empty = every type.
    pub filters: Vec<String>,
    /// The group delivers the events after this position.
    pub start_position: u64,
    pub ack_timeout_ms: u64,
    pub max_in_flight: u32,
    pub max_deliveries: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A message taken from the log and not settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The id of the latest delivery (a fresh one at every delivery).
    pub delivery_id: String,
    pub position: u64,
    /// The event's id (to read it again for a redelivery).
    pub event_id: String,
    /// Deliveries so far (0 for a replayed message not delivered since).
    pub attempt: u32,
    /// The member of the latest delivery.
    pub member: Option<String>,
    /// Held by `member` until `deadline_ms`; otherwise waiting to be delivered again.
    pub held: bool,
    /// Milliseconds since the Unix epoch.
    pub deadline_ms: i64,
}

/// A message that ran out of attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub position: u64,
    pub event_id: String,
    pub attempts: u32,
    /// The id of its last delivery: a late ack with it still settles the message.
    pub delivery_id: String,
    pub member: Option<String>,
    pub parked_at: DateTime<Utc>,
}

/// Totals since the group was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Deliveries, first ones and redeliveries.
    pub delivered: u64,
    /// Deliveries after the first of a message.
    pub redelivered: u64,
    pub acked: u64,
    pub nacked: u64,
    /// Leases whose ack timeout passed.
    pub expired: u64,
    /// Messages parked.
    pub parked: u64,
    /// Parked messages put back to be delivered again.
    pub replayed: u64,
}

/// One consumer group's durable state (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub config: GroupConfig,
    pub committed: u64,
    pub read: u64,
    #[serde(default)]
    pub leases: Vec<Lease>,
    #[serde(default)]
    pub parked: Vec<Parked>,
    #[serde(default)]
    pub counters: Counters,
    /// Member → time of its last poll.
    #[serde(default)]
    pub members: BTreeMap<String, DateTime<Utc>>,
}

/// What an ack or nack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Delivery ids that settled a message.
    pub settled: usize,
    /// Delivery ids that named no message of the group (already acked, delivered again since
    /// under a new id, or never issued), in request order.
    pub ignored: Vec<String>,
}

impl GroupRecord {
    /// A new group, nothing read yet.
    pub fn new(config: GroupConfig) -> Self {
        let start = config.start_position;
        Self {
            config,
            committed: start,
            read: start,
            leases: Vec::new(),
            parked: Vec::new(),
            counters: Counters::default(),
            members: BTreeMap::new(),
        }
    }

    /// Leases held by a member right now.
    pub fn in_flight(&self) -> usize {
        self.leases.iter().filter(|l| l.held).count()
    }

    /// Leases waiting to be delivered again.
    pub fn waiting(&self) -> usize {
        self.leases.iter().filter(|l| !l.held).count()
    }

    /// Releases the leases whose deadline has passed, then parks the waiting messages that
    /// have had `max_deliveries` attempts (while the parked list has room).
    pub fn settle_time(&mut self, now_ms: i64, now: DateTime<Utc>) {
        for lease in &mut self.leases {
            if lease.held && lease.deadline_ms <= now_ms {
                lease.held = false;
                self.counters.expired += 1;
            }
        }
        self.park_exhausted(now);
    }

    /// Parks the waiting messages that have had `max_deliveries` attempts, while the parked
    /// list has room.
    pub fn park_exhausted(&mut self, now: DateTime<Utc>) {
        let max = self.config.max_deliveries;
        let mut kept = Vec::with_capacity(self.leases.len());
        for lease in std::mem::take(&mut self.leases) {
            if !lease.held && lease.attempt >= max && self.parked.len() < MAX_PARKED {
                self.counters.parked += 1;
                self.parked.push(Parked {
                    position: lease.position,
                    event_id: lease.event_id,
                    attempts: lease.attempt,
                    delivery_id: lease.delivery_id,
                    member: lease.member,
                    parked_at: now,
                });
            } else {
                kept.push(lease);
            }
        }
        self.leases = kept;
        self.parked.sort_by_key(|p| p.position);
    }

    /// How many more messages may be held at once.
    fn room(&self) -> usize {
        (self.config.max_in_flight as usize).saturating_sub(self.in_flight())
    }

    /// Indices of waiting leases to deliver again (lowest positions first), at most `max` and
    /// within `max_in_flight`.
    pub fn redeliverable(&self, max: usize) -> Vec<usize> {
        let limit = max.min(self.room());
        self.leases
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.held && l.attempt < self.config.max_deliveries)
            .map(|(i, _)| i)
            .take(limit)
            .collect()
    }

    /// How many new messages may be taken from the log now, for a poll that can take `max`
    /// more: within `max_in_flight` (messages held and waiting together), and nothing while
    /// the parked list is full.
    pub fn room_for_new(&self, max: usize) -> usize {
        if self.parked.len() >= MAX_PARKED {
            return 0;
        }
        let limit = self.config.max_in_flight as usize;
        max.min(self.room())
            .min(limit.saturating_sub(self.leases.len()))
    }

    /// Delivers the waiting lease at `index` to `member` under a new delivery id; returns its
    /// attempt number.
    pub fn redeliver(
        &mut self,
        index: usize,
        member: &str,
        now_ms: i64,
        delivery_id: String,
    ) -> u32 {
        let deadline = self.deadline(now_ms);
        let lease = &mut self.leases[index];
        lease.attempt += 1;
        lease.delivery_id = delivery_id;
        lease.member = Some(member.to_owned());
        lease.held = true;
        lease.deadline_ms = deadline;
        self.counters.delivered += 1;
        if lease.attempt > 1 {
            self.counters.redelivered += 1;
        }
        lease.attempt
    }

    /// Drops the lease at `index` (its event cannot be found any more).
    pub fn forget(&mut self, index: usize) {
        self.leases.remove(index);
    }

    /// Delivers the event at `position` (after the read cursor) for the first time.
    pub fn deliver_new(
        &mut self,
        position: u64,
        event_id: String,
        member: &str,
        now_ms: i64,
        delivery_id: String,
    ) {
        let deadline = self.deadline(now_ms);
        self.read = self.read.max(position);
        self.counters.delivered += 1;
        self.leases.push(Lease {
            delivery_id,
            position,
            event_id,
            attempt: 1,
            member: Some(member.to_owned()),
            held: true,
            deadline_ms: deadline,
        });
    }

    fn deadline(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(i64::try_from(self.config.ack_timeout_ms).unwrap_or(i64::MAX))
    }

    /// Acks: each id of a lease (held, or waiting and not delivered again since) or of a parked
    /// message settles it.
    pub fn ack(&mut self, ids: &[String]) -> Settled {
        let mut settled = Settled::default();
        for id in ids {
            if let Some(i) = self.leases.iter().position(|l| l.delivery_id == *id) {
                self.leases.remove(i);
            } else if let Some(i) = self.parked.iter().position(|p| p.delivery_id == *id) {
                self.parked.remove(i);
            } else {
                settled.ignored.push(id.clone());
                continue;
            }
            settled.settled += 1;
            self.counters.acked += 1;
        }
        settled
    }

    /// Nacks: each id of a lease makes its message available for delivery at once (parked
    /// instead when it has had `max_deliveries` attempts).
    pub fn nack(&mut self, ids: &[String], now: DateTime<Utc>) -> Settled {
        let mut settled = Settled::default();
        for id in ids {
            match self.leases.iter_mut().find(|l| l.delivery_id == *id) {
                Some(lease) => {
                    lease.held = false;
                    lease.deadline_ms = 0;
                    settled.settled += 1;
                    self.counters.nacked += 1;
                }
                None => settled.ignored.push(id.clone()),
            }
        }
        self.park_exhausted(now);
        settled
    }

    /// Puts every parked message back, to be delivered again with `max_deliveries` fresh
    /// attempts; returns how many.
    pub fn replay_parked(&mut self) -> usize {
        let parked = std::mem::take(&mut self.parked);
        let n = parked.len();
        for p in parked {
            self.leases.push(Lease {
                delivery_id: p.delivery_id,
                position: p.position,
                event_id: p.event_id,
                attempt: 0,
                member: p.member,
                held: false,
                deadline_ms: 0,
            });
        }
        self.counters.replayed += n as u64;
        n
    }

    /// Records a poll by `member`: always when `changed`, else only when its stored poll
    /// time is older than [`MEMBER_TOUCH_MS`].
    pub fn touch_member(&mut self, member: &str, now: DateTime<Utc>, changed: bool) {
        let stale = self
            .members
            .get(member)
            .is_none_or(|last| (now - *last).num_milliseconds() >= MEMBER_TOUCH_MS);
        if !changed && !stale {
            return;
        }
        self.members.insert(member.to_owned(), now);
        while self.members.len() > MAX_MEMBERS {
            let oldest = self
                .members
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(m, _)| m.clone());
            match oldest {
                Some(m) => self.members.remove(&m),
                None => break,
            };
        }
    }

    /// Restores the invariants after a change: leases in position order, `committed` one below
    /// the first lease (or at the read cursor).
    pub fn normalize(&mut self) {
        self.leases.sort_by_key(|l| l.position);
        self.committed = match self.leases.first() {
            Some(first) => first.position.saturating_sub(1),
            None => self.read,
        };
    }

    /// The earliest deadline of a held lease (ms since the epoch).
    pub fn next_deadline(&self) -> Option<i64> {
        self.leases
            .iter()
            .filter(|l| l.held)
            .map(|l| l.deadline_ms)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).expect("time")
    }

    fn record(max_in_flight: u32, max_deliveries: u32) -> GroupRecord {
        GroupRecord::new(GroupConfig {
            filters: vec![],
            start_position: 0,
            ack_timeout_ms: 1000,
            max_in_flight,
            max_deliveries,
            created_at: at(0),
            updated_at: at(0),
        })
    }

    fn deliver(r: &mut GroupRecord, positions: &[u64], now_ms: i64) {
        for p in positions {
            r.deliver_new(*p, format!("e{p}"), "m", now_ms, format!("d{p}"));
        }
        r.normalize();
    }

    #[test]
    fn new_messages_fit_within_max_in_flight_and_waiting_ones_count_too() {
        let mut r = record(3, 5);
        assert_eq!(r.room_for_new(10), 3);
        deliver(&mut r, &[1, 2], 0);
        assert_eq!(r.room_for_new(10), 1);
        r.settle_time(2000, at(2000));
        assert_eq!((r.in_flight(), r.waiting()), (0, 2));
        // Two waiting: only one new one fits, and both waiting ones can go again.
        assert_eq!(r.room_for_new(10), 1);
        assert_eq!(r.redeliverable(10), vec![0, 1]);
        assert_eq!(r.counters.expired, 2);
    }

    #[test]
    fn a_redelivery_gets_a_new_id_and_counts_an_attempt() {
        let mut r = record(3, 5);
        deliver(&mut r, &[4], 0);
        r.settle_time(1000, at(1000));
        let attempt = r.redeliver(0, "other", 1000, "d4b".into());
        assert_eq!(attempt, 2);
        assert_eq!(r.leases[0].member.as_deref(), Some("other"));
        assert_eq!(r.leases[0].deadline_ms, 2000);
        // The first delivery's id no longer settles anything.
        let acked = r.ack(&["d4".into()]);
        assert_eq!(acked.ignored, vec!["d4".to_owned()]);
        assert_eq!(r.ack(&["d4b".into()]).settled, 1);
        r.normalize();
        assert_eq!((r.committed, r.read), (4, 4));
        assert_eq!(r.counters.redelivered, 1);
    }

    #[test]
    fn a_late_ack_is_accepted_until_the_message_goes_out_again() {
        let mut r = record(3, 5);
        deliver(&mut r, &[1], 0);
        r.settle_time(5000, at(5000));
        assert_eq!(r.ack(&["d1".into()]).settled, 1);
        assert!(r.leases.is_empty());
    }

    #[test]
    fn committed_stays_below_the_first_unsettled_message() {
        let mut r = record(10, 5);
        deliver(&mut r, &[2, 5, 9], 0);
        assert_eq!(r.committed, 1);
        r.ack(&["d5".into(), "d9".into()]);
        r.normalize();
        assert_eq!(r.committed, 1);
        r.ack(&["d2".into()]);
        r.normalize();
        assert_eq!(r.committed, 9);
    }

    #[test]
    fn nack_makes_a_message_available_now_and_the_last_attempt_parks_it() {
        let mut r = record(10, 2);
        deliver(&mut r, &[1], 0);
        assert_eq!(
            r.nack(&["d1".into(), "zz".into()], at(1)).ignored,
            vec!["zz"]
        );
        assert_eq!(r.redeliverable(10), vec![0]);
        r.redeliver(0, "m", 1, "d1b".into());
        r.nack(&["d1b".into()], at(2));
        assert!(r.leases.is_empty());
        assert_eq!(r.parked.len(), 1);
        assert_eq!(r.parked[0].attempts, 2);
        // A late ack of the parked message still settles it.
        assert_eq!(r.ack(&["d1b".into()]).settled, 1);
        assert!(r.parked.is_empty());
    }

    #[test]
    fn replayed_messages_get_fresh_attempts() {
        let mut r = record(10, 1);
        deliver(&mut r, &[3, 7], 0);
        r.settle_time(1000, at(1000));
        assert_eq!(r.parked.len(), 2);
        assert!(r.redeliverable(10).is_empty());
        assert_eq!(r.replay_parked(), 2);
        r.normalize();
        assert_eq!(r.committed, 2);
        assert_eq!(r.redeliverable(10), vec![0, 1]);
        assert_eq!(r.redeliver(0, "m", 1000, "x".into()), 1);
        assert_eq!(r.counters.replayed, 2);
    }

    #[test]
    fn a_full_parked_list_stops_new_reads_and_keeps_exhausted_messages_waiting() {
        let mut r = record(10, 1);
        for p in 0..MAX_PARKED as u64 {
            r.parked.push(Parked {
                position: p + 100,
                event_id: String::new(),
                attempts: 1,
                delivery_id: format!("p{p}"),
                member: None,
                parked_at: at(0),
            });
        }
        deliver(&mut r, &[1], 0);
        r.settle_time(1000, at(1000));
        assert_eq!(r.leases.len(), 1, "not parked: no room");
        assert!(r.redeliverable(10).is_empty(), "nor delivered again");
        assert_eq!(r.room_for_new(10), 0);
        r.ack(&["p0".into()]);
        r.settle_time(1000, at(1000));
        assert_eq!(r.parked.len(), MAX_PARKED);
        assert!(r.leases.is_empty());
    }

    #[test]
    fn members_are_touched_when_stale_and_bounded() {
        let mut r = record(10, 1);
        r.touch_member("a", at(0), false);
        assert_eq!(r.members["a"], at(0));
        r.touch_member("a", at(10), false);
        assert_eq!(r.members["a"], at(0), "fresh enough: not rewritten");
        r.touch_member("a", at(10), true);
        assert_eq!(r.members["a"], at(10));
        for i in 0..MAX_MEMBERS + 5 {
            r.touch_member(&format!("m{i}"), at(100 + i as i64), true);
        }
        assert_eq!(r.members.len(), MAX_MEMBERS);
        assert!(!r.members.contains_key("a"));
    }

    #[test]
    fn the_record_survives_json() {
        let mut r = record(10, 3);
        deliver(&mut r, &[1, 2], 0);
        r.touch_member("m", at(5), true);
        let json = serde_json::to_value(&r).expect("json");
        let back: GroupRecord = serde_json::from_value(json).expect("back");
        assert_eq!(back, r);
    }
}
