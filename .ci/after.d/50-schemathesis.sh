#!/usr/bin/env bash
# schemathesis (PyPI) against the live binary, from the OpenAPI document it serves: no 5xx,
# statuses, content types and bodies as documented.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/ci-venv-schemathesis
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi
# The binary the tests just built, with their feature set: a plain `cargo build --bin` resolves
# features without the dev-dependencies and so builds a second copy of the whole tree.
cargo test --workspace --locked --quiet --no-run
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
JAKGUARD_LOG=warn ./target/debug/jakguard serve --bind "127.0.0.1:$port" > target/schemathesis-serve.log 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$port/health/live" > /dev/null && break
  sleep 0.2
done
timeout 600 "$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples 40 --phases examples,coverage,fuzzing --seed 1
