# shellcheck shell=bash
# A real FHIR R4 server on loopback for the fetch tests (tests/fetch_*.rs): SEKMET from PyPI in
# a venv, started in the background with a fixed bearer token, loaded with the patients of
# fixtures/requests/*.json. Sourced by .ci/run (set -euo pipefail is on): any failure stops CI
# loudly rather than letting the fetch tests skip. Exports JAKGUARD_TEST_FHIR_URL and
# JAKGUARD_TEST_FHIR_TOKEN.

jakguard_fhir_server_setup() {
  local venv="${JAKGUARD_SEKMET_VENV:-/opt/jakguard-ci/sekmet-0.1.1}"
  local token="jakguard-ci-fhir-token"
  local py="${PYTHON:-python3}"
  if ! "$venv/bin/sekmet" --version >/dev/null 2>&1; then
    echo "installing SEKMET (sekmet-fhir 0.1.1) into $venv"
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check sekmet-fhir==0.1.1
  fi
  local port
  port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  local dir
  dir="$(mktemp -d /tmp/jakguard-fhir-XXXXXX)"
  cat >"$dir/settings.yaml" <<YAML
host: 127.0.0.1
port: $port
base_url: http://127.0.0.1:$port/fhir
data_dir: $dir/data
simulator: {enabled: false}
# The fixtures hold deliberately malformed resources (tolerance tests): store them as sent.
validation: {inbound: "off"}
log_inbound: false
server_auth: {types: [bearer], tokens: [$token]}
YAML
  mkdir -p "$dir/data"
  # Detached (own session, no inherited standard streams) so that nothing waits for it; CI
  # ends it with everything else the run left behind.
  # It writes keys and state beside its working directory: run it in its own folder.
  (cd "$dir" && exec setsid nohup "$venv/bin/sekmet" serve -c "$dir/settings.yaml" \
    </dev/null >"$dir/server.log" 2>&1) &
  disown || true
  local base="http://127.0.0.1:$port/fhir"
  local i
  for i in $(seq 1 120); do
    if curl -fsS -o /dev/null "$base/metadata" 2>/dev/null; then
      break
    fi
    if [ "$i" = 120 ]; then
      echo "SEKMET did not start on $base; its log:" >&2
      tail -n 50 "$dir/server.log" >&2
      return 1
    fi
    sleep 0.5
  done
  "$py" scripts/load-fhir-fixtures.py "$base" "$token"
  export JAKGUARD_TEST_FHIR_URL="$base"
  export JAKGUARD_TEST_FHIR_TOKEN="$token"
  echo "FHIR server for the fetch tests: $base (log: $dir/server.log)"
}

jakguard_fhir_server_setup
