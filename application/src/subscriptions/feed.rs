//! [`CommitFeed`]: the append path's commit notifications, one broadcast per commit group.
//!
//! The store that commits events publishes each commit group here once its events are visible
//! to readers (after the index publish of the embedded and memory stores; after the
//! LISTEN/NOTIFY wake-up and the read of the committed range on postgres). Groups are
//! published in position order and, together, cover every position without a gap: positions
//! are gapless on every backend, so a group always starts right after the previous one ends.
//! A subscriber that sees a group start beyond what it has covered knows it missed something
//! (it lagged) and reads the difference from storage.
//!
//! The feed is a `tokio::sync::broadcast` ring: sending never waits for receivers, and a
//! receiver that falls more than `capacity` groups behind is told it lagged instead of slowing
//! the sender (see [`Subscription`](super::Subscription)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use allsource_domain::{Event, Position};
use tokio::sync::broadcast;

/// The events of one commit group, all tenants, in position order.
#[derive(Debug)]
pub struct CommitGroup {
    /// The first position of the group.
    pub first: Position,
    /// The last position of the group.
    pub last: Position,
    pub events: Vec<Arc<Event>>,
}

impl CommitGroup {
    /// A group of `events` (non-empty, in position order, contiguous positions); `None` when
    /// empty.
    pub fn of(events: Vec<Arc<Event>>) -> Option<Self> {
        let first = events.first()?.position;
        let last = events.last()?.position;
        Some(Self {
            first,
            last,
            events,
        })
    }
}

/// The broadcast of commit groups, and the position of the last one published.
pub struct CommitFeed {
    sender: broadcast::Sender<Arc<CommitGroup>>,
    /// Set once, at shutdown: every subscription ends.
    closed: tokio::sync::watch::Sender<bool>,
    /// The last position published (or, before the first publish, the store's head when it
    /// was opened). Every event at or below it is visible to readers.
    head: AtomicU64,
}

impl std::fmt::Debug for CommitFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitFeed")
            .field("head", &self.head())
            .field("receivers", &self.sender.receiver_count())
            .finish()
    }
}

impl CommitFeed {
    /// Default number of commit groups a subscriber may fall behind before it reads from
    /// storage instead.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// A feed that keeps the last `capacity` groups for its slowest subscriber.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            closed: tokio::sync::watch::Sender::new(false),
            head: AtomicU64::new(0),
        }
    }

    /// Sets where the log stands before anything is published (the store, once recovered).
    /// Never moves the head back.
    pub fn start_at(&self, head: u64) {
        self.head.fetch_max(head, Ordering::AcqRel);
    }

    /// The last position published: every event at or below it is readable from storage.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Publishes a commit group whose events are already visible to readers. Never waits.
    pub fn publish(&self, group: CommitGroup) {
        // The head moves before the send: a subscriber that reads the head and then storage
        // finds every event up to it; groups after it reach its receiver.
        self.head.fetch_max(group.last.get(), Ordering::AcqRel);
        // No receivers is not an error: nobody follows the log right now.
        let _ = self.sender.send(Arc::new(group));
    }

    /// Publishes `events` (in position order) as one group, if there are any.
    pub fn publish_events(&self, events: Vec<Arc<Event>>) {
        if let Some(group) = CommitGroup::of(events) {
            self.publish(group);
        }
    }

    /// A receiver of every group published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommitGroup>> {
        self.sender.subscribe()
    }

    /// Ends every subscription (shutdown): their `next()` answers `Closed`, so the streams
    /// that follow the log finish and their connections close.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Tells when the feed closes.
    pub fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Receivers open right now (for stats).
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

impl Default for CommitFeed {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}
