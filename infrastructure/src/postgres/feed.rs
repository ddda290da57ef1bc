//! [`CommitListener`]: how a node on the postgres backend learns of the commits of every node
//! sharing its database, and publishes them to its [`CommitFeed`].
//!
//! # What it does
//! Every append transaction calls `pg_notify('allsource_commits', '<first>:<last>')` (see the
//! store's append), which PostgreSQL delivers to every listening session at commit, in commit
//! order — including the session of the node that appended, so a node learns of its own
//! commits the same way as of the others' and the feed has exactly one source (publishing
//! locally as well would interleave two sources out of order).
//!
//! The listener is one task per node, with its own connection (`LISTEN allsource_commits`,
//! `application_name = allsource-commit-listener`). On each wake-up it reads the events after
//! the feed's head, of every tenant, in position order, in pages of [`PAGE`] rows, and
//! publishes each page as one commit group. The store is the source of truth; a notification
//! only says "read up to here". So a lost notification loses nothing, it only delays:
//! - every `realtime.postgres_poll_interval_ms` it reads the head row (`allsource_log_head`)
//!   and publishes whatever the notifications did not announce, and checks that the listening
//!   connection still answers (a connection cut without a reset would otherwise wait forever);
//! - when the listening connection is lost it logs, reconnects with a growing pause
//!   ([`RECONNECT_INITIAL`] doubling up to [`RECONNECT_MAX`]), and reads what it missed as
//!   soon as it listens again. Meanwhile the timer keeps delivering.
//!
//! Delivery is therefore bounded by the round trip of the notification plus one read (a few
//! milliseconds, see `docs/OPERATIONS.md`), and by the poll interval when a notification is
//! lost or the listening connection is down.
//!
//! # The feed's invariants
//! The feed's head is the last position published, and the listener is its only publisher, so
//! the head is also where the next read starts: groups are contiguous (positions are gapless,
//! see the store's module docs, and each page is checked to start right after the head and to
//! have no hole), in position order, and survive a restart of the task by its supervisor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use allsource_application::subscriptions::CommitFeed;
use allsource_application::supervise::supervise;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::rows::{EVENT_COLUMNS, event_from_row};

/// The channel every append notifies, with payload `<first position>:<last position>`.
pub const COMMIT_CHANNEL: &str = "allsource_commits";

/// Events read per page; each page is published as one commit group.
pub const PAGE: usize = 1000;

/// The pause before the first reconnect of a lost listening connection.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(100);

/// The longest pause between reconnects.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// How long the liveness check of the listening connection may take before the connection is
/// given up and made again.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The `application_name` of the listening connection (to find it in `pg_stat_activity`).
pub const LISTENER_APPLICATION_NAME: &str = "allsource-commit-listener";

/// Figures of a [`CommitListener`] since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitListenerStats {
    /// Whether the listening connection is up right now.
    pub listening: bool,
    /// Notifications received.
    pub notifications: u64,
    /// Timer wake-ups that found commits no notification had announced yet.
    pub polls_with_news: u64,
    /// Commit groups published to the feed.
    pub groups: u64,
    /// Events published to the feed.
    pub events: u64,
    /// Times the listening connection was lost (or could not be made).
    pub connection_losses: u64,
    /// Reads of the log that failed (retried on the next wake-up).
    pub read_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    listening: AtomicBool,
    notifications: AtomicU64,
    polls_with_news: AtomicU64,
    groups: AtomicU64,
    events: AtomicU64,
    connection_losses: AtomicU64,
    read_failures: AtomicU64,
}

/// The task that publishes every node's commits to this node's feed (see the module docs).
/// Stopped by [`stop`](Self::stop) or when dropped.
pub struct CommitListener {
    task: JoinHandle<()>,
    counters: Arc<Counters>,
    listen_pool: PgPool,
}

impl std::fmt::Debug for CommitListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitListener")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl CommitListener {
    /// Reads the log's head, starts `feed` there, and starts the listener task (supervised:
    /// restarted if it ever panics). It reads events through `pool` and listens on a
    /// connection of its own, made with the same options.
    ///
    /// # Errors
    /// The head cannot be read.
    pub async fn start(
        pool: PgPool,
        feed: Arc<CommitFeed>,
        poll_interval: Duration,
    ) -> Result<Self, sqlx::Error> {
        let head = read_head(&pool).await?;
        feed.start_at(head);
        let options = (*pool.connect_options())
            .clone()
            .application_name(LISTENER_APPLICATION_NAME);
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let counters = Arc::new(Counters::default());
        let follower = Arc::new(Follower {
            pool,
            listen_pool: listen_pool.clone(),
            feed,
            poll_interval: poll_interval.max(Duration::from_millis(1)),
            counters: Arc::clone(&counters),
        });
        let task = supervise("postgres commit listener", move || {
            Arc::clone(&follower).run()
        });
        Ok(Self {
            task,
            counters,
            listen_pool,
        })
    }

    /// Figures since the start.
    pub fn stats(&self) -> CommitListenerStats {
        let c = &self.counters;
        CommitListenerStats {
            listening: c.listening.load(Ordering::Acquire),
            notifications: c.notifications.load(Ordering::Relaxed),
            polls_with_news: c.polls_with_news.load(Ordering::Relaxed),
            groups: c.groups.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            connection_losses: c.connection_losses.load(Ordering::Relaxed),
            read_failures: c.read_failures.load(Ordering::Relaxed),
        }
    }

    /// Stops the task and closes the listening connection. Nothing is published afterwards.
    pub async fn stop(mut self) {
        self.task.abort();
        // Ends with "cancelled" (or the task had already ended): either way it is gone.
        let _ = (&mut self.task).await;
        self.counters.listening.store(false, Ordering::Release);
        // A connection cut without a reset could hold the close up; never wait long for it.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.listen_pool.close()).await;
    }
}

impl Drop for CommitListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the last committed position from the head row.
async fn read_head(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let head: i64 =
        sqlx::query_scalar("SELECT last_position FROM allsource_log_head WHERE singleton")
            .fetch_one(pool)
            .await?;
    Ok(u64::try_from(head).unwrap_or(0))
}

/// The last position named by a notification's payload `<first>:<last>`.
pub fn notified_last(payload: &str) -> Option<u64> {
    let (first, last) = payload.split_once(':')?;
    let first: u64 = first.parse().ok()?;
    let last: u64 = last.parse().ok()?;
    (first >= 1 && first <= last).then_some(last)
}

/// What woke the loop.
enum Wake {
    /// `count` notifications arrived; `last` is the highest last position they name (`None`:
    /// an unreadable payload, read the head).
    Notified { last: Option<u64>, count: u64 },
    /// The poll interval passed.
    Timer,
    /// The listening connection is up (again).
    Connected,
    /// The listening connection was lost or could not be made.
    Lost(String),
}

type Connecting = Pin<Box<dyn Future<Output = Result<PgListener, sqlx::Error>> + Send>>;

enum LinkState {
    Up {
        listener: PgListener,
        since: Instant,
    },
    Connecting(Connecting),
    Waiting {
        until: Instant,
    },
}

/// The listening connection, with its reconnect pause. Every `await` in [`Link::next`] is
/// cancel-safe (the connect in progress is kept across calls), so the loop may race it
/// against its timer.
struct Link {
    state: LinkState,
    pause: Duration,
    pool: PgPool,
}

impl Link {
    fn new(pool: PgPool) -> Self {
        let state = LinkState::Connecting(connect(pool.clone()));
        Self {
            state,
            pause: RECONNECT_INITIAL,
            pool,
        }
    }

    async fn next(&mut self) -> Wake {
        loop {
            match &mut self.state {
                LinkState::Up { listener, .. } => {
                    return match listener.try_recv().await {
                        Ok(Some(first)) => {
                            // Take every notification already here: one read serves them all.
                            let mut last = notified_last(first.payload());
                            let mut count = 1;
                            while let Some(more) = listener.next_buffered() {
                                count += 1;
                                last = match (last, notified_last(more.payload())) {
                                    (Some(a), Some(b)) => Some(a.max(b)),
                                    _ => None,
                                };
                            }
                            Wake::Notified { last, count }
                        }
                        Ok(None) => self.lost("the connection was closed".into()),
                        Err(e) => self.lost(e.to_string()),
                    };
                }
                LinkState::Connecting(connecting) => {
                    return match connecting.as_mut().await {
                        Ok(listener) => {
                            self.state = LinkState::Up {
                                listener,
                                since: Instant::now(),
                            };
                            Wake::Connected
                        }
                        Err(e) => self.lost(e.to_string()),
                    };
                }
                LinkState::Waiting { until } => {
                    tokio::time::sleep_until(*until).await;
                    self.state = LinkState::Connecting(connect(self.pool.clone()));
                }
            }
        }
    }

    /// Checks that the listening connection still answers; gives it up when it does not.
    async fn check(&mut self) -> Option<Wake> {
        let LinkState::Up { listener, .. } = &mut self.state else {
            return None;
        };
        let ping = sqlx::query("SELECT 1").execute(&mut *listener);
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(self.lost(e.to_string())),
            Err(_) => Some(self.lost(format!(
                "no answer to a liveness check within {} ms",
                PING_TIMEOUT.as_millis()
            ))),
        }
    }

    /// Drops the connection and waits before the next attempt: the pause starts over when the
    /// connection had been up for a while, and grows otherwise.
    fn lost(&mut self, reason: String) -> Wake {
        if let LinkState::Up { since, .. } = &self.state
            && since.elapsed() >= RECONNECT_MAX * 3
        {
            self.pause = RECONNECT_INITIAL;
        }
        self.state = LinkState::Waiting {
            until: Instant::now() + self.pause,
        };
        self.pause = (self.pause * 2).min(RECONNECT_MAX);
        Wake::Lost(reason)
    }

    fn pause(&self) -> Duration {
        match &self.state {
            LinkState::Waiting { until } => until.saturating_duration_since(Instant::now()),
            _ => Duration::ZERO,
        }
    }
}

/// A new listening connection on `pool` (the listener's own), listening on the channel.
fn connect(pool: PgPool) -> Connecting {
    Box::pin(async move {
        let mut listener = PgListener::connect_with(&pool).await?;
        // Reconnects are this module's business (with logs, a pause and a catch-up read).
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener.listen(COMMIT_CHANNEL).await?;
        Ok(listener)
    })
}

/// Why a read of the log could not be published.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a stored event cannot be decoded: {0:#}")]
    Corrupt(anyhow::Error),
    #[error("expected position {expected} after the feed's head, found {found}")]
    Gap { expected: u64, found: u64 },
    #[error("the log's head says {head} but no event follows position {after} yet")]
    NotVisible { after: u64, head: u64 },
}

/// The loop's shared state: what it reads from and publishes to.
struct Follower {
    pool: PgPool,
    listen_pool: PgPool,
    feed: Arc<CommitFeed>,
    poll_interval: Duration,
    counters: Arc<Counters>,
}

impl Follower {
    /// The loop. It never ends by itself: every failure is logged and retried, and stopping
    /// is aborting its task.
    async fn run(self: Arc<Self>) {
        let mut link = Link::new(self.listen_pool.clone());
        let mut timer = tokio::time::interval(self.poll_interval);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing_reads = 0u64;
        loop {
            let wake = tokio::select! {
                wake = link.next() => wake,
                _ = timer.tick() => Wake::Timer,
            };
            let target = match wake {
                Wake::Notified { last, count } => {
                    self.counters
                        .notifications
                        .fetch_add(count, Ordering::Relaxed);
                    last
                }
                Wake::Timer => {
                    if let Some(Wake::Lost(reason)) = link.check().await {
                        self.connection_lost(&reason, link.pause());
                    }
                    None
                }
                Wake::Connected => {
                    self.counters.listening.store(true, Ordering::Release);
                    tracing::info!(
                        channel = COMMIT_CHANNEL,
                        "listening for the commits of every node"
                    );
                    // Whatever committed while nobody listened is read now.
                    None
                }
                Wake::Lost(reason) => {
                    self.connection_lost(&reason, link.pause());
                    continue;
                }
            };
            let from_timer = target.is_none();
            match self.publish_up_to(target).await {
                Ok(published) => {
                    if from_timer && published > 0 {
                        self.counters
                            .polls_with_news
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if failing_reads > 0 {
                        tracing::info!(failed = failing_reads, "reading commits again");
                        failing_reads = 0;
                    }
                }
                Err(e) => {
                    self.counters.read_failures.fetch_add(1, Ordering::Relaxed);
                    failing_reads += 1;
                    // Said once per outage (and for every gap, which should never happen).
                    if failing_reads == 1 || matches!(e, ReadError::Gap { .. }) {
                        tracing::warn!(
                            error = %e,
                            retry_in_ms = self.poll_interval.as_millis() as u64,
                            "cannot read the latest commits; retrying"
                        );
                    } else {
                        tracing::debug!(error = %e, "cannot read the latest commits");
                    }
                }
            }
        }
    }

    fn connection_lost(&self, reason: &str, retry_in: Duration) {
        self.counters.listening.store(false, Ordering::Release);
        self.counters
            .connection_losses
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            channel = COMMIT_CHANNEL,
            error = reason,
            retry_in_ms = retry_in.as_millis() as u64,
            poll_interval_ms = self.poll_interval.as_millis() as u64,
            "lost the connection listening for commits; reconnecting (commits are still read \
             every poll interval)"
        );
    }

    /// Publishes every event after the feed's head up to `target` (the head row's position
    /// when `None`), page by page. Returns how many events it published.
    async fn publish_up_to(&self, target: Option<u64>) -> Result<u64, ReadError> {
        let mut after = self.feed.head();
        if target.is_some_and(|t| t <= after) {
            return Ok(0);
        }
        let head = match target {
            Some(t) => t,
            None => read_head(&self.pool).await?,
        };
        let mut published = 0;
        while after < head {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM allsource_events \
                 WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3"
            )))
            .bind(to_i64(after))
            .bind(to_i64(head))
            .bind(PAGE as i64)
            .fetch_all(&self.pool)
            .await?;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                let event = event_from_row(row).map_err(ReadError::Corrupt)?;
                let expected = after + 1 + events.len() as u64;
                if event.position.get() != expected {
                    return Err(ReadError::Gap {
                        expected,
                        found: event.position.get(),
                    });
                }
                events.push(Arc::new(event));
            }
            let Some(last) = events.last().map(|e| e.position.get()) else {
                return Err(ReadError::NotVisible { after, head });
            };
            let count = events.len() as u64;
            self.feed.publish_events(events);
            self.counters.groups.fetch_add(1, Ordering::Relaxed);
            self.counters.events.fetch_add(count, Ordering::Relaxed);
            published += count;
            after = last;
        }
        Ok(published)
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_its_last_position() {
        assert_eq!(notified_last("1:1"), Some(1));
        assert_eq!(notified_last("11:20"), Some(20));
        for bad in ["", "7", "a:b", "5:4", "0:3", ":3", "3:", "1:2:3", "-1:2"] {
            assert_eq!(notified_last(bad), None, "{bad:?}");
        }
    }
}
