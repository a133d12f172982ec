#!/usr/bin/env bash
# Instruction profile of the running service against its floor, with valgrind's callgrind,
# which counts instructions rather than time: the totals repeat run after run whatever else a
# shared machine is doing, which wall-clock numbers on 2 shared cores do not.
#
#   scripts/profile.sh              # 4 rounds of the 31 fixtures to each endpoint
#   ROUNDS=1 SKIP_BUILD=1 scripts/profile.sh
#   SIM=1 scripts/profile.sh       # also simulate branches and caches (Bcm, Bim, I1mr...)
#
# Builds the release binary with `bench-floor` (as scripts/load.sh does), starts it under
# callgrind on 127.0.0.1 (a free port, SQLite storage in a temporary directory), posts every
# fixture once to warm up, zeroes the counters, posts ROUNDS rounds over one keep-alive
# connection, and dumps. Then the same for `POST /bench/floor/{id}`. Prints the total
# instructions per call of each side and their ratio, and leaves both profiles for
# `callgrind_annotate --inclusive=yes FILE` (the path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-4}"
# Mispredicted branches and I-cache misses explain why CPU time can differ from instruction
# counts (session 4: 2.1x the floor's instructions, 3.2x its worker CPU time).
SIM_ARGS=()
if [ "${SIM:-0}" = 1 ]; then SIM_ARGS=(--branch-sim=yes --cache-sim=yes); fi
OUT="${OUT:-$(mktemp -d)}"
source scripts/bench-common.sh
ensure_tool valgrind
build_bench_binary
FIXTURES="$(realpath fixtures/requests)"

# Posts every fixture ROUNDS times to PREFIX + "jakguard-" + hook, one connection; prints calls.
drive() {
  python3 - "$1" "$2" "$3" "$FIXTURES" <<'PY'
import glob, http.client, re, sys
port, prefix, rounds, fixtures = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
bodies = []
for f in sorted(glob.glob(fixtures + "/*.json")):
    b = open(f, "rb").read()
    hook = re.search(rb'"hook"\s*:\s*"([^"]+)"', b).group(1).decode()
    bodies.append((prefix + "jakguard-" + hook, b))
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
n = 0
for _ in range(rounds):
    for path, b in bodies:
        c.request("POST", path, body=b, headers={"Content-Type": "application/json", "Accept-Language": "en"})
        r = c.getresponse()
        r.read()
        if r.status >= 500:
            sys.exit(f"{path}: {r.status}")
        n += 1
print(n)
PY
}

# profile NAME PREFIX -> prints "NAME calls instructions"
profile() {
  local name="$1" prefix="$2" port work pid calls
  port="$(free_port)"
  work="$(mktemp -d)"
  (cd "$work" && exec valgrind --tool=callgrind "${SIM_ARGS[@]}" --callgrind-out-file="$OUT/$name.out" \
    "$BIN" serve --bind "127.0.0.1:$port") >"$work/log" 2>&1 &
  pid=$!
  # valgrind starts slowly.
  wait_for_port "$port" 300 || {
    echo "jakguard ($name) did not start under valgrind:" >&2
    cat "$work/log" >&2
    exit 1
  }
  drive "$port" "$prefix" 1 >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  calls="$(drive "$port" "$prefix" "$ROUNDS")"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -INT "$pid"
  wait "$pid" || true
  rm -rf "$work"
  echo "$name $calls $(awk '/^summary:/ {print $2}' "$OUT/$name.out.1")"
}

echo "== callgrind, $ROUNDS rounds of the fixtures per side (slow: valgrind runs the code ~50x slower)"
read -r _ jc ji < <(profile jakguard /cds-services/)
read -r _ fc fi < <(profile floor /bench/floor/)
awk -v jc="$jc" -v ji="$ji" -v fc="$fc" -v fi="$fi" -v out="$OUT" 'BEGIN {
  printf "\n%-10s %8s %16s %14s\n", "", "calls", "instructions", "per call"
  printf "%-10s %8d %16d %14.0f\n", "floor", fc, fi, fi / fc
  printf "%-10s %8d %16d %14.0f\n", "jakguard", jc, ji, ji / jc
  printf "\nratio to the floor: %.2f\nprofiles: %s/jakguard.out.1 %s/floor.out.1\n", (ji / jc) / (fi / fc), out, out
}'
