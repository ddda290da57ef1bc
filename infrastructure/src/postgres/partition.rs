//! Hash partitioning of `allsource_events` by tenant (`allsource admin postgres-partition`).
//!
//! # Why the backend works unchanged on a partitioned log
//! Every statement of a request names its tenant, so PostgreSQL prunes to one partition; the
//! uniqueness that matters (a stream's versions, an event id within a tenant) already includes
//! `tenant_id`, which a partitioned table's unique constraints must. Positions stay one global
//! sequence assigned under the append lock, so readers keep their gapless prefix; the primary
//! key becomes `(tenant_id, position)` (a partitioned table's key must hold the partition key),
//! and a plain index on `position` serves the reads across tenants (the commit listener and
//! replication catch-up), one index scan per partition merged in order.
//!
//! # The conversion
//! One transaction: it takes the append lock (appends on every node wait) and an exclusive
//! lock on the table (reads wait), renames the plain table out of the way, creates the
//! partitioned one under the original names, copies the events in position order in chunks
//! (reporting progress), checks the count and drops the old table. Any failure rolls all of it
//! back: the log is then exactly as before. The migrations are unaffected (they ran before);
//! a later migration that changes `allsource_events` must work on both layouts.

use sqlx::{PgPool, Row};

use super::APPEND_LOCK_KEY;

/// The most partitions the conversion accepts.
pub const MAX_PARTITIONS: u32 = 1024;

/// How many events one copy statement moves.
const COPY_CHUNK: i64 = 50_000;

/// How `allsource_events` is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsLayout {
    /// One table (what the migrations create).
    Plain,
    /// Hash-partitioned by `tenant_id` into this many partitions.
    ByTenant { partitions: u32 },
}

/// What [`partition_by_tenant`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOutcome {
    /// The partitions the table now has.
    pub partitions: u32,
    /// Events copied into the partitions (0 when the table was partitioned already).
    pub events: u64,
    /// Whether the table was already partitioned this way (nothing was changed).
    pub unchanged: bool,
}

/// Why the conversion was refused or failed; the log is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("the number of partitions must be between 1 and {MAX_PARTITIONS}, not {0}")]
    InvalidCount(u32),
    #[error(
        "allsource_events is already partitioned by tenant into {existing} partitions; \
         changing the number of partitions is not supported"
    )]
    OtherCount { existing: u32 },
    #[error("the copy moved {copied} events of {expected}; nothing was changed")]
    CountMismatch { copied: u64, expected: u64 },
    #[error("database error (nothing was changed): {0}")]
    Database(#[from] sqlx::Error),
}

/// The current layout of `allsource_events`.
///
/// # Errors
/// A database error.
pub async fn layout(pool: &PgPool) -> Result<EventsLayout, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    layout_in(&mut connection).await
}

/// Converts `allsource_events` into `partitions` hash partitions by tenant (see the module
/// docs), calling `progress(copied, total)` after each chunk. Already partitioned into as
/// many: nothing changes.
///
/// # Errors
/// A count out of range, a table partitioned differently, or a database error; the log is
/// unchanged in every case.
pub async fn partition_by_tenant(
    pool: &PgPool,
    partitions: u32,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<PartitionOutcome, PartitionError> {
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(PartitionError::InvalidCount(partitions));
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    sqlx::query("LOCK TABLE allsource_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    match layout_in(&mut tx).await? {
        EventsLayout::ByTenant {
            partitions: existing,
        } if existing == partitions => {
            return Ok(PartitionOutcome {
                partitions,
                events: 0,
                unchanged: true,
            });
        }
        EventsLayout::ByTenant {
            partitions: existing,
        } => {
            return Err(PartitionError::OtherCount { existing });
        }
        EventsLayout::Plain => {}
    }
    for statement in [
        "ALTER TABLE allsource_events RENAME TO allsource_events_unpartitioned",
        "ALTER TABLE allsource_events_unpartitioned \
         RENAME CONSTRAINT allsource_events_pkey TO allsource_events_unpartitioned_pkey",
        "ALTER TABLE allsource_events_unpartitioned \
         RENAME CONSTRAINT allsource_events_stream_version \
         TO allsource_events_unpartitioned_stream_version",
        "ALTER TABLE allsource_events_unpartitioned \
         RENAME CONSTRAINT allsource_events_tenant_event_id \
         TO allsource_events_unpartitioned_tenant_event_id",
        "ALTER TABLE allsource_events_unpartitioned \
         RENAME CONSTRAINT allsource_events_version_positive \
         TO allsource_events_unpartitioned_version_positive",
        "ALTER INDEX allsource_events_tenant_position \
         RENAME TO allsource_events_unpartitioned_tenant_position",
        "ALTER INDEX allsource_events_tenant_type_position \
         RENAME TO allsource_events_unpartitioned_tenant_type_position",
        // The columns and constraints of migration 0001, with the key that a partitioned
        // table needs (it must hold the partition key).
        "CREATE TABLE allsource_events ( \
             position    BIGINT      NOT NULL, \
             tenant_id   TEXT        NOT NULL, \
             entity_id   TEXT        NOT NULL, \
             event_type  TEXT        NOT NULL, \
             version     BIGINT      NOT NULL, \
             id          UUID        NOT NULL, \
             recorded_at TIMESTAMPTZ NOT NULL, \
             payload     JSON        NOT NULL, \
             metadata    JSON, \
             CONSTRAINT allsource_events_pkey PRIMARY KEY (tenant_id, position), \
             CONSTRAINT allsource_events_stream_version UNIQUE (tenant_id, entity_id, version), \
             CONSTRAINT allsource_events_tenant_event_id UNIQUE (tenant_id, id), \
             CONSTRAINT allsource_events_version_positive CHECK (version >= 1) \
         ) PARTITION BY HASH (tenant_id)",
        "CREATE INDEX allsource_events_position ON allsource_events (position)",
        "CREATE INDEX allsource_events_tenant_type_position \
         ON allsource_events (tenant_id, event_type, position)",
    ] {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    for remainder in 0..partitions {
        // Both numbers are integers checked above: nothing of the input is spliced as text.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE allsource_events_p{remainder} PARTITION OF allsource_events \
             FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder})"
        )))
        .execute(&mut *tx)
        .await?;
    }
    let (total, last): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), max(position) FROM allsource_events_unpartitioned")
            .fetch_one(&mut *tx)
            .await?;
    let total = u64::try_from(total).unwrap_or(0);
    let last = last.unwrap_or(0);
    let mut copied = 0_u64;
    let mut from = 0_i64;
    progress(0, total);
    while from < last {
        let to = from.saturating_add(COPY_CHUNK);
        let moved = sqlx::query(
            "INSERT INTO allsource_events \
             (position, tenant_id, entity_id, event_type, version, id, recorded_at, payload, metadata) \
             SELECT position, tenant_id, entity_id, event_type, version, id, recorded_at, payload, metadata \
             FROM allsource_events_unpartitioned WHERE position > $1 AND position <= $2",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        copied += moved;
        from = to;
        progress(copied, total);
    }
    if copied != total {
        return Err(PartitionError::CountMismatch {
            copied,
            expected: total,
        });
    }
    sqlx::query("DROP TABLE allsource_events_unpartitioned")
        .execute(&mut *tx)
        .await?;
    sqlx::query("ANALYZE allsource_events")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(PartitionOutcome {
        partitions,
        events: copied,
        unchanged: false,
    })
}

/// The layout, read on `connection` (inside the conversion's transaction, after its locks).
async fn layout_in(connection: &mut sqlx::PgConnection) -> Result<EventsLayout, sqlx::Error> {
    let row = sqlx::query(
        "SELECT c.relkind::text AS kind, \
                (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid) AS partitions \
         FROM pg_class c WHERE c.oid = to_regclass('allsource_events')",
    )
    .fetch_one(connection)
    .await?;
    let kind: String = row.try_get("kind")?;
    let partitions: i64 = row.try_get("partitions")?;
    Ok(if kind == "p" {
        EventsLayout::ByTenant {
            partitions: u32::try_from(partitions).unwrap_or(u32::MAX),
        }
    } else {
        EventsLayout::Plain
    })
}
