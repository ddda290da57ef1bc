-- The peer's table: the columns of an AllSource event (docs/BENCHMARKS.md, "postgres backend").
DROP TABLE IF EXISTS bench_events;
CREATE TABLE bench_events (
    position    BIGSERIAL   PRIMARY KEY,
    entity_id   TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    version     BIGINT      NOT NULL,
    id          UUID        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    payload     JSON        NOT NULL
);
