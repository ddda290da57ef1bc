#!/usr/bin/env bash
# What recording metrics costs an append (docs/BENCHMARKS.md): alternating runs of the release
# server with metrics off (`ALLSOURCE__METRICS__ENABLED=false`) then on, each on a fresh data
# dir, under wrk with docs/bench/single-append.lua. Run it from the repository root, after
# `cargo build --release -p allsource`:
#
#   docs/bench/metrics-ab.sh
#   PAIRS=10 BIN=path/to/allsource docs/bench/metrics-ab.sh
#   PIN=0 docs/bench/metrics-ab.sh    # without pinning the server and wrk to their own cores
#
# By default (PIN=1, with taskset) the server runs on CPU 0 and wrk on CPU 1, so that the two
# do not trade places on the cores between runs, which is most of the spread between pairs.
#
# Prints one line per pair (appends/s off, on, on ÷ off) and the means. Needs wrk and curl.
set -euo pipefail

bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/allsource}
pairs=${PAIRS:-6}
port=${PORT:-3991}
duration=${DURATION:-10s}
url="http://127.0.0.1:$port"
server_cpu=()
wrk_cpu=()
if [[ ${PIN:-1} == 1 ]] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c 0)
  wrk_cpu=(taskset -c 1)
fi

# One run: the server with metrics $1 (true|false); prints its appends/s.
run() {
  local dir pid out
  dir=$(mktemp -d)
  ALLSOURCE__METRICS__ENABLED=$1 "${server_cpu[@]}" "$bin" serve --dev --port "$port" --data-dir "$dir/data" \
    >"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    curl -fs "$url/health/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  out=$("${wrk_cpu[@]}" wrk -t2 -c64 -d"$duration" -s docs/bench/single-append.lua "$url")
  kill "$pid"
  wait "$pid" || true
  rm -rf "$dir"
  if grep -q 'Non-2xx' <<<"$out"; then
    echo "metrics=$1: some appends failed:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '/Requests\/sec/ { printf "%d", $2 }' <<<"$out"
}

printf 'pair\toff\ton\ton/off\n'
sum_off=0
sum_on=0
for pair in $(seq "$pairs"); do
  off=$(run false)
  on=$(run true)
  sum_off=$((sum_off + off))
  sum_on=$((sum_on + on))
  printf '%s\t%s\t%s\t%s\n' "$pair" "$off" "$on" "$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }')"
done
printf 'mean\t%s\t%s\t%s\n' "$((sum_off / pairs))" "$((sum_on / pairs))" \
  "$(awk -v a="$sum_on" -v b="$sum_off" 'BEGIN { printf "%.3f", a / b }')"
