#!/usr/bin/env bash
# demo.sh: build sluice and show it at work: a 1,000,000-row backfill, interrupted, resumed, its status, a rollback.
#
# Usage: bash jobs/examples/demo.sh
# Installs what is missing (Debian 12, as root), builds a release binary in build/, starts a throw-away
# PostgreSQL cluster with pg_virtualenv (gone when the demo ends) and runs the real commands against it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROWS=${DEMO_ROWS:-1000000}

if [[ ${1:-} != --inside ]]; then
    deps=(gcc libc6-dev pkg-config meson ninja-build libuv1-dev libpq-dev libsqlite3-dev sqlite3
        postgresql-15 postgresql-common postgresql-contrib)
    missing=()
    for p in "${deps[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    echo "== building sluice (release) in build/"
    cd "$ROOT"
    [[ -d build ]] || meson setup build --buildtype=release >/dev/null
    meson compile -C build >/dev/null
    echo "== starting a throw-away PostgreSQL 15 (pg_virtualenv)"
    exec pg_virtualenv -t -v 15 bash "${BASH_SOURCE[0]}" --inside
fi

SLUICE="$ROOT/build/sluice"
WORK=$(mktemp -d /tmp/sluice-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/jobs"
cp "$ROOT/jobs/examples/0001_backfill_full_name.sql" "$WORK/jobs/"
cd "$WORK"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

echo "== creating users with $ROWS rows, full_name empty"
psql -Xq -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE users (id bigint PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, full_name text);
INSERT INTO users (id, first_name, last_name)
     SELECT g, 'first' || g, 'last' || g FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE users;
SQL

say "cat jobs/0001_backfill_full_name.sql"
cat jobs/0001_backfill_full_name.sql
say "sluice plan 0001_backfill_full_name"
"$SLUICE" plan 0001_backfill_full_name
say "sluice up        # interrupted with SIGINT after 2 seconds"
"$SLUICE" up &
pid=$!
sleep 2
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
echo "(exit code $rc: stopped, resumable)"
say "sluice status"
"$SLUICE" status
say "sluice up        # resumes after the last committed chunk"
"$SLUICE" up
say "sluice status --json"
"$SLUICE" status --json
say "sluice history"
"$SLUICE" history
say "psql -c 'SELECT count(*) FILTER (WHERE full_name IS NULL) AS missing, count(*) FROM users'"
psql -X -c "SELECT count(*) FILTER (WHERE full_name IS NULL) AS missing, count(*) FROM users"
say "psql -c 'SELECT job, count(*) AS chunks, sum(rows) AS rows FROM sluice_progress GROUP BY job'"
psql -X -c "SELECT job, count(*) AS chunks, sum(rows) AS rows FROM sluice_progress GROUP BY job"
say "sluice down 0001_backfill_full_name    # puts back the saved old values, chunk by chunk"
"$SLUICE" down 0001_backfill_full_name
say "sluice status && sluice history"
"$SLUICE" status
"$SLUICE" history
say "psql -c 'SELECT count(*) FILTER (WHERE full_name IS NULL) AS missing, count(*) FROM users'"
psql -X -c "SELECT count(*) FILTER (WHERE full_name IS NULL) AS missing, count(*) FROM users"
