//! Reads from a streaming-replication standby (`storage.postgres.read_url`), never older than
//! what this node knows is committed.
//!
//! # Why a standby keeps the reader guarantee
//! A hot standby replays the primary's WAL in order, and commits are in position order (appends
//! hold the append lock until their commit is visible, see the store's module docs). So every
//! snapshot on the standby holds a gapless prefix of the log, as on the primary, only possibly
//! a shorter one: a pager reading the standby by position never skips an event.
//!
//! # Read-your-writes
//! The node knows a position that is certainly committed: the last one its own appends
//! committed and the last one its commit listener published (every node's commits). A read goes
//! to the standby only once the standby's `allsource_log_head` has reached that position. The
//! highest head seen on the standby is remembered (replay never goes back), so reads pay for
//! that check only after the node learned of a newer commit. A standby that is behind is asked
//! again, with short pauses, for up to `read_wait`; then that read goes to the primary. A
//! standby that fails is left alone for [`STANDBY_RETRY`], and reads go to the primary
//! meanwhile. So an answer is never older than what this node acknowledged or published. A
//! client that appends through another node and reads here at once may, for the replication
//! lag, see the log without that append (a shorter log, never an inconsistent one), exactly as
//! it may before this node's listener hears of the commit.
//!
//! # The schema
//! A fresh standby may not have replayed the migrations the node just applied (the tables of a
//! new database, a later migration's change). So the node notes the primary's WAL position
//! after its migrations, and uses the standby only once the standby has replayed that far
//! (`pg_last_wal_replay_lsn()`); until then reads go to the primary, after the same wait.
//!
//! `read_url` must name one standby (not a balancer over several): the remembered head is that
//! server's. At start the standby must answer and be a replica of the primary's database (same
//! system identifier, same database name), or the node refuses to start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::PgPool;

/// How long reads avoid a standby that failed.
pub const STANDBY_RETRY: Duration = Duration::from_secs(5);

/// The longest pause between two checks of a standby that is behind.
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// Where a read runs: the primary's pool, or the standby's once it has caught up.
pub(super) struct ReadRouter {
    primary: PgPool,
    standby: Option<Standby>,
}

struct Standby {
    pool: PgPool,
    wait: Duration,
    /// The primary's WAL position after the node's migrations (`pg_lsn` text).
    schema_lsn: String,
    /// Whether the standby has replayed up to `schema_lsn`.
    schema_ready: AtomicBool,
    /// The highest head position seen on the standby.
    confirmed: AtomicU64,
    /// Until when reads skip the standby after it failed.
    skip_until: Mutex<Option<Instant>>,
    reads: AtomicU64,
    primary_reads: AtomicU64,
    failures: AtomicU64,
}

/// Figures of the standby reads since the store started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StandbyStats {
    /// Reads served by the standby.
    pub reads: u64,
    /// Reads sent to the primary because the standby was behind for the whole wait, or was
    /// being avoided after a failure.
    pub primary_reads: u64,
    /// Checks of the standby that failed (it was then avoided for [`STANDBY_RETRY`]).
    pub failures: u64,
    /// The highest head position seen on the standby.
    pub confirmed_position: u64,
}

impl ReadRouter {
    /// Every read on the primary.
    pub(super) fn primary_only(primary: PgPool) -> Self {
        Self {
            primary,
            standby: None,
        }
    }

    /// Reads on `standby` once it has replayed `schema_lsn` (the primary's WAL position after
    /// the migrations) and caught up, waiting up to `wait` for it.
    pub(super) fn with_standby(
        primary: PgPool,
        standby: PgPool,
        wait: Duration,
        schema_lsn: String,
    ) -> Self {
        Self {
            primary,
            standby: Some(Standby {
                pool: standby,
                wait,
                schema_lsn,
                schema_ready: AtomicBool::new(false),
                confirmed: AtomicU64::new(0),
                skip_until: Mutex::new(None),
                reads: AtomicU64::new(0),
                primary_reads: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// The standby's pool, if there is one.
    pub(super) fn standby_pool(&self) -> Option<&PgPool> {
        self.standby.as_ref().map(|s| &s.pool)
    }

    /// Figures of the standby reads, if there is a standby.
    pub(super) fn stats(&self) -> Option<StandbyStats> {
        self.standby.as_ref().map(|s| StandbyStats {
            reads: s.reads.load(Ordering::Relaxed),
            primary_reads: s.primary_reads.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            confirmed_position: s.confirmed.load(Ordering::Acquire),
        })
    }

    /// The pool for a read that must see at least position `committed`.
    pub(super) async fn pool_for(&self, committed: u64) -> &PgPool {
        let Some(standby) = &self.standby else {
            return &self.primary;
        };
        if standby.caught_up(committed).await {
            standby.reads.fetch_add(1, Ordering::Relaxed);
            &standby.pool
        } else {
            standby.primary_reads.fetch_add(1, Ordering::Relaxed);
            &self.primary
        }
    }

    /// Closes both pools.
    pub(super) async fn close(&self) {
        if let Some(standby) = &self.standby {
            standby.pool.close().await;
        }
        self.primary.close().await;
    }
}

impl Standby {
    /// Whether the standby holds every position up to `committed`, waiting up to `self.wait`
    /// for it to get there.
    async fn caught_up(&self, committed: u64) -> bool {
        let schema_ready = self.schema_ready.load(Ordering::Acquire);
        if schema_ready && self.confirmed.load(Ordering::Acquire) >= committed {
            return true;
        }
        if self
            .skip_until
            .lock()
            .is_some_and(|until| Instant::now() < until)
        {
            return false;
        }
        let deadline = Instant::now() + self.wait;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.check(committed).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    *self.skip_until.lock() = Some(Instant::now() + STANDBY_RETRY);
                    tracing::warn!(
                        error = %e,
                        retry_in = ?STANDBY_RETRY,
                        "the postgres standby failed; reads go to the primary meanwhile"
                    );
                    return false;
                }
            }
            let now = Instant::now();
            if now + pause > deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// One look at the standby: whether it has the schema and holds `committed`.
    async fn check(&self, committed: u64) -> Result<bool, sqlx::Error> {
        if !self.schema_ready.load(Ordering::Acquire) {
            // NULL when the server is not in recovery: then it has everything.
            let replayed: bool =
                sqlx::query_scalar("SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, true)")
                    .bind(&self.schema_lsn)
                    .fetch_one(&self.pool)
                    .await?;
            if !replayed {
                return Ok(false);
            }
            self.schema_ready.store(true, Ordering::Release);
        }
        let head = head(&self.pool).await?;
        self.confirmed.fetch_max(head, Ordering::AcqRel);
        Ok(head >= committed)
    }
}

/// The primary's current WAL position, as `pg_lsn` text.
pub(super) async fn wal_position(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await
}

/// The last position a server holds (`allsource_log_head`).
pub(super) async fn head(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let head: i64 =
        sqlx::query_scalar("SELECT last_position FROM allsource_log_head WHERE singleton")
            .fetch_one(pool)
            .await?;
    Ok(u64::try_from(head).unwrap_or(0))
}

/// What identifies a server's copy of a database: `pg_control_system()`'s system identifier
/// (shared by a primary and its physical standbys) and the database's name.
pub(super) async fn identity(pool: &PgPool) -> Result<(i64, String), sqlx::Error> {
    sqlx::query_as("SELECT system_identifier, current_database()::text FROM pg_control_system()")
        .fetch_one(pool)
        .await
}
