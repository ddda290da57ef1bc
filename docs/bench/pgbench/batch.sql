-- One 100-row INSERT per transaction, like one 100-event batch.
\set n random(1, 1000000000)
INSERT INTO bench_events (entity_id, event_type, version, id, recorded_at, payload)
SELECT 'b-' || i, 'bench.batch', :n, gen_random_uuid(), now(), ('{"n":' || :n || ',"i":' || i || '}')::json
FROM generate_series(0, 99) AS i;
