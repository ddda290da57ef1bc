-- Derived state (projection state, checkpoints, snapshots): tenant, namespace, key -> JSON.
CREATE TABLE allsource_state (
    tenant_id  TEXT        NOT NULL,
    namespace  TEXT        NOT NULL,
    key        TEXT        NOT NULL,
    value      JSONB       NOT NULL,
    version    BIGINT      NOT NULL CHECK (version >= 1),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, namespace, key)
);
