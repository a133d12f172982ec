#!/usr/bin/env bash
# Load test of jakguard against its floor, side by side in one run, with the budgets of the
# README ("Performance"). Exits non-zero when a budget is missed.
#
#   scripts/load.sh                 # 10 s per run; DURATION=5 scripts/load.sh for a quick look
#
# It builds the release binary with the `bench-floor` feature, starts two instances of it on
# 127.0.0.1 (free ports): one receives the calls to `POST /cds-services/{id}`, the other the
# same bodies on `POST /bench/floor/{id}` (the body into `serde::de::IgnoredAny`, then
# `{"cards":[]}`: the least any service must do). Two processes so that each peak RSS
# (VmHWM) is its own. wrk (Debian's package, installed if missing) POSTs every request of
# fixtures/requests/ in turn, at 4 and at 50 connections; the runs alternate floor and
# jakguard so that the machine's drift hits both. Only loopback is ever targeted, and every
# run is bounded by DURATION.
#
# Budgets (ratios, because a shared machine's absolute numbers swing from run to run):
#   throughput at 50 connections >= 0.5 x the floor's
#   p50 latency at 4 connections <= 2 x the floor's
#   peak resident memory < 100 MB
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
THREADS="${THREADS:-1}"
source scripts/bench-common.sh
ensure_tool wrk
build_bench_binary
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# One instance; its logs (one line per call, no patient data) go to a file in $work.
start() {
  local name="$1" port
  port="$(free_port)"
  # From $work, so that nothing the service writes lands in the repository.
  (cd "$work" && exec "$BIN" serve --bind "127.0.0.1:$port") >"$work/$name.log" 2>&1 &
  pids+=("$!")
  local pid="$!"
  if wait_for_port "$port" 50; then
    echo "$pid $port"
    return
  fi
  echo "jakguard ($name) did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

read -r jak_pid jak_port < <(start jakguard)
read -r floor_pid floor_port < <(start floor)
# `start` ran in a subshell: record the pids here for the cleanup.
pids=("$jak_pid" "$floor_pid")

# wrk's script: every fixture in turn, each to the service of its hook; `done` prints one
# machine-readable line (latencies in microseconds).
cat >"$work/post.lua" <<'LUA'
local reqs = {}
local n = 0
function init(args)
  local prefix = args[1]
  for i = 2, #args do
    local f = assert(io.open(args[i], "rb"))
    local body = f:read("*a")
    f:close()
    local hook = body:match('"hook"%s*:%s*"([^"]+)"')
    reqs[#reqs + 1] = wrk.format("POST", prefix .. "jakguard-" .. hook,
      { ["Content-Type"] = "application/json", ["Accept-Language"] = "en" }, body)
  end
end
function request()
  n = n % #reqs + 1
  return reqs[n]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
LUA

fixtures=(fixtures/requests/*.json)
bytes=$(cat "${fixtures[@]}" | wc -c)
echo "== ${#fixtures[@]} fixture requests, $((bytes / ${#fixtures[@]})) bytes on average"

# run PORT PATH_PREFIX CONNECTIONS SECONDS -> "req/s p50_us p99_us errors"
run() {
  local port="$1" prefix="$2" conns="$3" secs="$4" out
  out="$(wrk -t "$THREADS" -c "$conns" -d "${secs}s" --timeout 10s -s "$work/post.lua" \
    "http://127.0.0.1:$port" -- "$prefix" "${fixtures[@]}")"
  echo "$out" | awk '/^RESULT/ {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    printf "%.0f %d %d %d\n", v["requests"] / (v["duration_us"] / 1e6), v["p50_us"], v["p99_us"], v["errors"]
  }'
}

hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# cpu_ticks PID -> "workers audit log other": CPU time (user + system, in clock ticks) of the
# process's threads so far, by role. Read before and after a run, it says what a call costs in
# CPU, which on a shared machine moves much less than throughput does, and where it goes: the
# HTTP workers, the audit trail's writer (the storage runtime and SQLite's thread), the log
# writer.
cpu_ticks() {
  local t comm stat w=0 a=0 l=0 o=0 ticks
  for t in /proc/"$1"/task/*; do
    comm="$(cat "$t/comm" 2>/dev/null)" || continue
    stat="$(cat "$t/stat" 2>/dev/null)" || continue
    # Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    read -r -a f <<<"${stat##*) }"
    ticks=$((f[11] + f[12]))
    case "$comm" in
      actix-rt*) w=$((w + ticks)) ;;
      sqlx-sqlite*|jakguard-storag*) a=$((a + ticks)) ;;
      jakguard-log*) l=$((l + ticks)) ;;
      *) o=$((o + ticks)) ;;
    esac
  done
  echo "$w $a $l $o"
}

# cpu_us BEFORE AFTER REQUESTS -> the same four, in microseconds of CPU per request.
cpu_us() {
  awk -v b="$1" -v a="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(b, B, " "); split(a, A, " ")
    for (i = 1; i <= 4; i++) printf "%.1f ", (n > 0 ? (A[i] - B[i]) * 1e6 / hz / n : 0)
  }'
}

echo "== warm-up (${WARMUP} s each)"
run "$jak_port" /cds-services/ 4 "$WARMUP" >/dev/null
run "$floor_port" /bench/floor/ 4 "$WARMUP" >/dev/null

declare -A R C
# measure KEY PID PORT PREFIX CONNS: one run, its results in R[KEY] and its CPU in C[KEY].
measure() {
  local before
  before="$(cpu_ticks "$2")"
  R[$1]="$(run "$3" "$4" "$5" "$DURATION")"
  C[$1]="$(cpu_us "$before" "$(cpu_ticks "$2")" \
    "$(awk -v r="${R[$1]}" -v d="$DURATION" 'BEGIN { split(r, x, " "); print x[1] * d }')")"
}
for conns in 4 50; do
  echo "== $conns connections, ${DURATION} s per side"
  measure "floor_$conns" "$floor_pid" "$floor_port" /bench/floor/ "$conns"
  measure "jak_$conns" "$jak_pid" "$jak_port" /cds-services/ "$conns"
done
jak_hwm="$(hwm_kb "$jak_pid")"
floor_hwm="$(hwm_kb "$floor_pid")"

# A 4xx/5xx or socket error would make the numbers meaningless: refuse them.
status=0
for k in floor_4 jak_4 floor_50 jak_50; do
  read -r _ _ _ errors <<<"${R[$k]}"
  if [ "$errors" != 0 ]; then
    echo "FAIL: $k had $errors errors (non-2xx or socket)"
    status=1
  fi
done

awk -v f4="${R[floor_4]}" -v j4="${R[jak_4]}" -v f50="${R[floor_50]}" -v j50="${R[jak_50]}" \
  -v jh="$jak_hwm" -v fh="$floor_hwm" -v status="$status" \
  -v fc="${C[floor_50]}" -v jc="${C[jak_50]}" 'BEGIN {
  split(f4, F4, " "); split(j4, J4, " "); split(f50, F50, " "); split(j50, J50, " ")
  split(fc, FC, " "); split(jc, JC, " ")
  printf "\n%-22s %12s %12s %12s\n", "", "floor", "jakguard", "ratio"
  row("req/s @4", F4[1], J4[1]); row("p50 ms @4", F4[2] / 1000, J4[2] / 1000)
  row("p99 ms @4", F4[3] / 1000, J4[3] / 1000)
  row("req/s @50", F50[1], J50[1]); row("p50 ms @50", F50[2] / 1000, J50[2] / 1000)
  row("p99 ms @50", F50[3] / 1000, J50[3] / 1000)
  row("peak RSS MB", fh / 1024, jh / 1024)
  # Not a budget: where the CPU of a call goes (us per request at 50 connections).
  row("CPU us/req @50", FC[1] + FC[2] + FC[3] + FC[4], JC[1] + JC[2] + JC[3] + JC[4])
  row("  HTTP workers", FC[1], JC[1])
  row("  audit writer", FC[2], JC[2])
  row("  log writer", FC[3], JC[3])
  print ""
  check("throughput @50 >= 0.5 x floor", J50[1] / F50[1], ">=", 0.5)
  check("p50 @4 <= 2 x floor", J4[2] / F4[2], "<=", 2)
  check("peak RSS < 100 MB", jh / 1024, "<", 100)
  exit status
}
function row(name, f, j) { printf "%-22s %12.2f %12.2f %12.2f\n", name, f, j, (f > 0 ? j / f : 0) }
function check(name, v, op, limit,   ok) {
  ok = (op == ">=" ? v >= limit : (op == "<=" ? v <= limit : v < limit))
  printf "%s  %-32s %.2f (budget %s %s)\n", (ok ? "PASS" : "FAIL"), name, v, op, limit
  if (!ok) status = 1
}'
