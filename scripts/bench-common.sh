# Shared by scripts/load.sh and scripts/profile.sh (sourced, from the repository's root): the
# tools they install, the binary they build, and the loopback ports they use.

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="${LOAD_BIN:-$TARGET_DIR/release/jakguard}"

# ensure_tool COMMAND: installs the Debian package of the same name when COMMAND is missing.
ensure_tool() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "== installing $1 (Debian package)"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# build_bench_binary: the release binary with the floor endpoint (unless SKIP_BUILD=1); sets BIN
# to its absolute path.
build_bench_binary() {
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "== cargo build --release --features bench-floor"
    cargo build --release --features bench-floor --bin jakguard
  fi
  BIN="$(realpath "$BIN")"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_port PORT TRIES: waits TRIES x 0.2 s at most for a listener; fails when none came.
wait_for_port() {
  local i
  for ((i = 0; i < $2; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}
