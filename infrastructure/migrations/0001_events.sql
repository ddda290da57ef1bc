-- The event log of AllSource's postgres backend.
--
-- Positions are assigned under the row lock of allsource_log_head, so transactions commit in
-- position order and a reader's snapshot always holds a gapless prefix of positions: a reader
-- paging by position never skips an event that commits later with a smaller position.
CREATE TABLE allsource_events (
    position    BIGINT      PRIMARY KEY,
    tenant_id   TEXT        NOT NULL,
    entity_id   TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    version     BIGINT      NOT NULL,
    id          UUID        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    -- `json` (not `jsonb`) keeps the client's text exactly, as the other backends do.
    payload     JSON        NOT NULL,
    metadata    JSON,
    CONSTRAINT allsource_events_stream_version UNIQUE (tenant_id, entity_id, version),
    CONSTRAINT allsource_events_tenant_event_id UNIQUE (tenant_id, id),
    CONSTRAINT allsource_events_version_positive CHECK (version >= 1)
);

CREATE INDEX allsource_events_tenant_position ON allsource_events (tenant_id, position);
CREATE INDEX allsource_events_tenant_type_position ON allsource_events (tenant_id, event_type, position);

CREATE TABLE allsource_log_head (
    singleton      BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_position  BIGINT      NOT NULL,
    last_timestamp TIMESTAMPTZ
);

INSERT INTO allsource_log_head (singleton, last_position, last_timestamp) VALUES (TRUE, 0, NULL);
