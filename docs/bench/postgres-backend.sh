#!/usr/bin/env bash
# The postgres backend against raw PostgreSQL, same run (docs/BENCHMARKS.md, "postgres
# backend"): for each round, the release server on a fresh database under wrk (single-event
# appends at 64 connections, 100-event batches at 16), then pgbench on a table with an event's
# columns (single-row INSERTs at 64 clients, 100-row INSERTs at 16). Run it from the repository
# root, after `cargo build --release -p allsource`, with PostgreSQL on 127.0.0.1:5432 (user
# postgres, trust):
#
#   docs/bench/postgres-backend.sh
#   ROUNDS=3 DURATION=20s docs/bench/postgres-backend.sh
#
# Prints one line per round and workload, in events/s. Needs wrk, pgbench, psql and curl.
set -euo pipefail

bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/allsource}
rounds=${ROUNDS:-2}
port=${PORT:-3992}
duration=${DURATION:-10s}
seconds=${duration%s}
pg="-h 127.0.0.1 -p 5432 -U postgres"
url="http://127.0.0.1:$port"

fresh_db() {
  # shellcheck disable=SC2086
  psql $pg -q -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
}

# wrk's requests/s for one script and connection count.
wrk_rate() {
  local out
  out=$(wrk -t2 -c"$2" -d"$duration" -s "docs/bench/$1" "$url")
  if grep -q 'Non-2xx' <<<"$out"; then
    echo "$1: some requests failed:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '/Requests\/sec/ { printf "%d", $2 }' <<<"$out"
}

# pgbench's transactions/s for one script and client count.
pgbench_rate() {
  # shellcheck disable=SC2086
  pgbench $pg -n -M prepared -j 2 -c "$2" -T "$seconds" -f "docs/bench/pgbench/$1" allsource_bench_peer \
    | awk '/^tps/ { printf "%d", $3 }'
}

printf 'round\tworkload\tconnections\tevents/s\n'
for round in $(seq "$rounds"); do
  fresh_db allsource_bench
  dir=$(mktemp -d)
  ALLSOURCE__STORAGE__BACKEND=postgres \
    ALLSOURCE__STORAGE__POSTGRES__URL=postgres://postgres@127.0.0.1:5432/allsource_bench \
    "$bin" serve --dev --port "$port" --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    curl -fs "$url/health/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  single=$(wrk_rate single-append.lua 64)
  batch=$(wrk_rate batch-append.lua 16)
  kill "$pid"
  wait "$pid" || true
  rm -rf "$dir"
  printf '%s\tpostgres backend, single appends\t64\t%s\n' "$round" "$single"
  printf '%s\tpostgres backend, 100-event batches\t16\t%s\n' "$round" "$((batch * 100))"

  fresh_db allsource_bench_peer
  # shellcheck disable=SC2086
  psql $pg -q -d allsource_bench_peer -f docs/bench/pgbench/schema.sql >/dev/null
  peer_single=$(pgbench_rate single.sql 64)
  peer_batch=$(pgbench_rate batch.sql 16)
  printf '%s\tPostgreSQL single-row INSERT\t64\t%s\n' "$round" "$peer_single"
  printf '%s\tPostgreSQL 100-row INSERT\t16\t%s\n' "$round" "$((peer_batch * 100))"
  printf '%s\tratios\t\tsingle %s, batches %s\n' "$round" \
    "$(awk -v a="$single" -v b="$peer_single" 'BEGIN { printf "%.2f", a / b }')" \
    "$(awk -v a="$batch" -v b="$peer_batch" 'BEGIN { printf "%.2f", a / b }')"
done
# shellcheck disable=SC2086
psql $pg -q -d postgres -c "DROP DATABASE IF EXISTS allsource_bench" -c "DROP DATABASE IF EXISTS allsource_bench_peer" >/dev/null
