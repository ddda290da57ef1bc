-- One single-row INSERT per transaction (pgbench's autocommit), like one single-event append.
\set n random(1, 1000000000)
INSERT INTO bench_events (entity_id, event_type, version, id, recorded_at, payload)
VALUES ('e-' || (:n % 1000), 'bench.single', :n, gen_random_uuid(), now(), ('{"n":' || :n || ',"note":"metrics overhead"}')::json);
