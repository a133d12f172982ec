# Sourced by .ci/run (under `set -euo pipefail`): a throwaway PostgreSQL cluster on loopback
# for the storage tests, from Debian's packages. Idempotent and quick on a second run: the
# package is installed only when missing, and a cluster already running is reused.
# Exports JAKGUARD_TEST_POSTGRES_URL (a user that may create the tests' scratch databases).
# Not for production: trust authentication on 127.0.0.1 and fsync off (the tests kill
# jakguard, never PostgreSQL's machine).

jg_pg_port="${JAKGUARD_TEST_POSTGRES_PORT:-55432}"
jg_pg_dir="${JAKGUARD_TEST_POSTGRES_DIR:-/var/tmp/jakguard-ci-postgres}"

jg_pg_bindir() {
  # The newest installed server's binaries (Debian keeps them out of PATH).
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

if [ -z "$(jg_pg_bindir)" ] || [ ! -x "$(jg_pg_bindir)/initdb" ]; then
  echo "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  apt-get clean
fi
jg_pg_bin="$(jg_pg_bindir)"

# initdb and the server refuse to run as root: they run as the package's `postgres` user.
jg_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if ! jg_as_pg "$jg_pg_bin/pg_ctl" -D "$jg_pg_dir" status >/dev/null 2>&1; then
  if [ ! -s "$jg_pg_dir/PG_VERSION" ]; then
    rm -rf "$jg_pg_dir"
    mkdir -p "$jg_pg_dir"
    chown postgres:postgres "$jg_pg_dir" 2>/dev/null || true
    jg_as_pg "$jg_pg_bin/initdb" -D "$jg_pg_dir" -U postgres --auth=trust \
      --encoding=UTF8 --no-locale >/dev/null
  fi
  jg_as_pg "$jg_pg_bin/pg_ctl" -D "$jg_pg_dir" -l "$jg_pg_dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $jg_pg_port -k $jg_pg_dir -c fsync=off -c max_connections=200" \
    start >/dev/null
fi

jg_psql() {
  jg_as_pg "$jg_pg_bin/psql" -h 127.0.0.1 -p "$jg_pg_port" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -qAt "$@"
}
if [ "$(jg_psql -c "SELECT 1 FROM pg_roles WHERE rolname = 'jakguard'")" != 1 ]; then
  jg_psql -c "CREATE ROLE jakguard LOGIN CREATEDB PASSWORD 'jakguard'"
fi
if [ "$(jg_psql -c "SELECT 1 FROM pg_database WHERE datname = 'jakguard_test'")" != 1 ]; then
  jg_psql -c "CREATE DATABASE jakguard_test OWNER jakguard"
fi

export JAKGUARD_TEST_POSTGRES_URL="postgres://jakguard:jakguard@127.0.0.1:${jg_pg_port}/jakguard_test"
echo "PostgreSQL $("$jg_pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:${jg_pg_port} (JAKGUARD_TEST_POSTGRES_URL exported)"
unset -f jg_pg_bindir jg_as_pg jg_psql
unset jg_pg_port jg_pg_dir jg_pg_bin
