//! [`Subscription`]: every event of a tenant after a position that passes a filter, in
//! position order, first from storage (catch-up) and then from the [`CommitFeed`] (live), with
//! no gap and no duplicate at the seam.
//!
//! # How the seam holds
//! The subscription keeps one number, `covered`: every matching event at or below it has been
//! handed out, and none above it.
//! 1. It takes its feed receiver **before** it reads anything, so every group published from
//!    then on reaches it.
//! 2. Catch-up: it reads the feed's head `h`, then pages through storage after `covered`
//!    until a page says nothing more follows. Everything at or below `h` was visible before
//!    the read started, so afterwards `covered = max(h, last event read)`; and storage never
//!    shows an event while a smaller position is still to come (the store's contract), so
//!    nothing below the last event read can appear later.
//! 3. Live: a group that ends at or below `covered` was read already and is skipped; a group
//!    that starts right after `covered` (or overlaps it) hands out its matching events above
//!    `covered` and moves `covered` to its end. A group that starts beyond `covered + 1`
//!    means groups were missed (the receiver lagged): back to step 2.
//!
//! # Slow subscribers
//! The subscription is pulled: it reads a page or takes a group only when its owner asks for
//! the next event, so its memory is one page or one group. The feed never waits for it; when
//! it falls more than the feed's capacity behind, its receiver reports a lag and it goes back
//! to catch-up from storage, then rejoins live. It never loses an event and never slows the
//! appends or the other subscribers.
//!
//! Every `await` in [`Subscription::next`] is cancel-safe: the state changes only after an
//! await completes, so a door may race `next()` against its client in a `select!`.

use std::collections::VecDeque;
use std::sync::Arc;

use allsource_domain::{Event, EventFilter, Position, TenantId};
use tokio::sync::broadcast::{self, error::RecvError};

use super::feed::{CommitFeed, CommitGroup};
use crate::ports::{EventQuery, EventStore, SortOrder, StoreError};

/// Events read from storage per page during catch-up.
pub const CATCH_UP_PAGE: usize = 500;

/// What [`Subscription::next`] hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The next matching event. `live` is false while the subscription reads from storage.
    Event { event: Arc<Event>, live: bool },
    /// The subscription has read everything stored and follows the commits from now on.
    /// Handed out once, the first time it catches up.
    CaughtUp,
}

/// Why a subscription stopped.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// Storage cannot answer (503): the subscription may be retried after the last position
    /// handed out.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The server is shutting down: nothing more will be published.
    #[error("the server is shutting down")]
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    CatchUp,
    Live,
}

/// Figures of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionCounters {
    /// Events handed out.
    pub delivered: u64,
    /// Times it fell behind the feed and read from storage again.
    pub fell_behind: u64,
}

/// One follower of a tenant's log (see the module docs).
pub struct Subscription {
    store: Arc<dyn EventStore>,
    feed: Arc<CommitFeed>,
    receiver: broadcast::Receiver<Arc<CommitGroup>>,
    closed: tokio::sync::watch::Receiver<bool>,
    tenant: TenantId,
    filter: EventFilter,
    covered: u64,
    mode: Mode,
    pending: VecDeque<Arc<Event>>,
    caught_up_announced: bool,
    announce_caught_up: bool,
    page_size: usize,
    counters: SubscriptionCounters,
    /// True while [`Subscription::next`] waits for the next commit with nothing in hand.
    waiting_live: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("tenant", &self.tenant)
            .field("filter", &self.filter)
            .field("covered", &self.covered)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Follows `tenant`'s events that pass `filter`: with `after = Some(p)`, every one after
    /// position `p` (0 = from the beginning) and then live; with `None`, live only (from the
    /// feed's head now).
    pub fn open(
        store: Arc<dyn EventStore>,
        feed: Arc<CommitFeed>,
        tenant: TenantId,
        filter: EventFilter,
        after: Option<u64>,
    ) -> Self {
        // The receiver first (step 1 of the module docs).
        let receiver = feed.subscribe();
        let closed = feed.closed();
        let (covered, mode) = match after {
            Some(p) => (p, Mode::CatchUp),
            None => (feed.head(), Mode::Live),
        };
        Self {
            store,
            feed,
            receiver,
            closed,
            tenant,
            filter,
            covered,
            mode,
            pending: VecDeque::new(),
            caught_up_announced: after.is_none(),
            announce_caught_up: false,
            page_size: CATCH_UP_PAGE,
            counters: SubscriptionCounters::default(),
            waiting_live: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Reads `page_size` events per storage page (tests use tiny pages).
    #[must_use]
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Every matching event at or below this position has been handed out (or is about to
    /// be, from the current page); none above it.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Events read from storage or taken from a group that are not handed out yet. When it is
    /// 0, every matching event at or below [`covered`](Self::covered) has been handed out.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A flag that is true exactly while [`next`](Self::next) waits for the next commit,
    /// live, with everything published so far handed out (false while it reads storage, and
    /// while it holds events). A follower whose `next()` runs elsewhere (a future it keeps
    /// across a `select!`) reads it to know it is caught up.
    pub fn waiting_live(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.waiting_live)
    }

    /// The tenant followed.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }

    pub fn counters(&self) -> SubscriptionCounters {
        self.counters
    }

    /// Changes the filter for everything handed out from now on (events already read into
    /// the current page are filtered again).
    pub fn set_filter(&mut self, filter: EventFilter) {
        self.pending
            .retain(|e| filter.matches(&e.entity_id, e.event_type.as_str()));
        self.filter = filter;
    }

    /// The next matching event, or [`Delivery::CaughtUp`] once. Waits for the next commit
    /// when everything has been handed out.
    ///
    /// # Errors
    /// [`SubscriptionError::Storage`] when a catch-up read fails (nothing is lost: a new
    /// subscription after the last position handed out goes on), `Closed` at shutdown.
    pub async fn next(&mut self) -> Result<Delivery, SubscriptionError> {
        loop {
            if *self.closed.borrow() {
                return Err(SubscriptionError::Closed);
            }
            if let Some(ready) = self.next_ready() {
                return Ok(ready);
            }
            match self.mode {
                Mode::CatchUp => self.catch_up_page().await?,
                Mode::Live => {
                    // Nothing in hand and no group queued before this wait: caught up.
                    self.waiting_live
                        .store(true, std::sync::atomic::Ordering::Release);
                    let received = tokio::select! {
                        received = self.receiver.recv() => received,
                        _ = self.closed.changed() => continue,
                    };
                    self.waiting_live
                        .store(false, std::sync::atomic::Ordering::Release);
                    match received {
                        Ok(group) => self.take_group(&group),
                        Err(RecvError::Lagged(_)) => self.fall_behind(),
                        Err(RecvError::Closed) => return Err(SubscriptionError::Closed),
                    }
                }
            }
        }
    }

    /// The next delivery if one is ready without waiting (an event of the page or group in
    /// hand, or the caught-up marker), so a door can write several frames before it flushes.
    pub fn next_ready(&mut self) -> Option<Delivery> {
        if *self.closed.borrow() {
            return None;
        }
        if let Some(event) = self.pending.pop_front() {
            self.counters.delivered += 1;
            return Some(Delivery::Event {
                event,
                live: self.mode == Mode::Live && self.caught_up_announced,
            });
        }
        if self.announce_caught_up {
            self.announce_caught_up = false;
            self.caught_up_announced = true;
            return Some(Delivery::CaughtUp);
        }
        None
    }

    /// Reads one page of storage after `covered`; at the end of the log, switches to live.
    async fn catch_up_page(&mut self) -> Result<(), SubscriptionError> {
        // The head before the read (step 2): everything at or below it is in storage.
        let head = self.feed.head();
        let query = EventQuery {
            entity_id: self.filter.entity_id.clone(),
            type_filters: self.filter.types.clone(),
            from_position: Some(Position::new(self.covered)),
            limit: self.page_size,
            order: SortOrder::Asc,
            ..EventQuery::default()
        };
        let page = self.store.query(&self.tenant, query).await?;
        for event in page.events {
            // A store never answers at or below the cursor; checked anyway, as it costs
            // nothing and a duplicate would break the contract of every door.
            if event.position.get() > self.covered {
                self.covered = event.position.get();
                self.pending.push_back(event);
            }
        }
        if !page.has_more {
            self.covered = self.covered.max(head);
            self.mode = Mode::Live;
            if !self.caught_up_announced {
                self.announce_caught_up = true;
            }
        }
        Ok(())
    }

    /// Step 3: hands out the group's matching events above `covered`, or falls behind.
    fn take_group(&mut self, group: &CommitGroup) {
        if group.last.get() <= self.covered {
            return;
        }
        if group.first.get() > self.covered + 1 {
            self.fall_behind();
            return;
        }
        for event in &group.events {
            if event.position.get() > self.covered
                && event.tenant_id == self.tenant
                && self
                    .filter
                    .matches(&event.entity_id, event.event_type.as_str())
            {
                self.pending.push_back(Arc::clone(event));
            }
        }
        self.covered = group.last.get();
    }

    fn fall_behind(&mut self) {
        self.counters.fell_behind += 1;
        self.mode = Mode::CatchUp;
        // Groups still queued for this receiver are older than what the catch-up will read;
        // dropping them now saves skipping them one by one.
        self.receiver = self.receiver.resubscribe();
    }
}
