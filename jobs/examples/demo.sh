#!/usr/bin/env bash
# demo.sh: build sluice and show it at work on an embedded SQLite database: a 1,000,000-row backfill, interrupted, resumed, its status, a rollback.
#
# Usage, from any directory:  bash jobs/examples/demo.sh
#
# 1. Installs what is missing (Debian/Ubuntu: apt-get, when run as root; otherwise it says what to
#    install) and builds a release binary in build/ at the top of the repository (meson, ninja).
# 2. In a fresh temporary directory (mktemp -d; removed at the end unless DEMO_KEEP=1) it creates
#    demo.db, an SQLite file (WAL mode) with a users table of 1,000,000 rows, full_name NULL in 99 %.
#    No server: SQLite is a library, the database is that one file.
# 3. Runs the real commands on it with jobs/examples/0001_backfill_full_name.sql: plan; up, interrupted
#    with SIGINT part-way (exit 3); status; up again, which resumes after the last committed chunk;
#    status --json; history; down, which puts back the old values it saved; status and history again;
#    and checks that the table is as it was before the backfill.
#
# Environment: DEMO_ROWS (rows in users, default 1000000), DEMO_KEEP=1 (keep the directory).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROWS=${DEMO_ROWS:-1000000}
JOB=0001_backfill_full_name

die() {
    echo "demo.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------------
# What the build needs, then the build.

install_missing() {
    local deps=(gcc libc6-dev pkg-config meson ninja-build libuv1-dev libpq-dev libsqlite3-dev libjansson-dev sqlite3)
    local missing=() p
    command -v dpkg-query >/dev/null || return 0 # not Debian: the build below says what it lacks
    for p in "${deps[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        die "missing packages: ${missing[*]}
hint: sudo apt-get update && sudo apt-get install -y ${missing[*]}   (or run this script as root)"
    fi
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } </dev/null >/dev/null ||
        die "apt-get install ${missing[*]} failed"
}

build() {
    echo "== building sluice (release) in $ROOT/build"
    (
        cd "$ROOT"
        [[ -f build/build.ninja ]] || meson setup build --buildtype=release >/dev/null
        ninja -C build >/dev/null
    ) || die "the build failed (hint: cd $ROOT && meson setup build && ninja -C build shows why)"
}

install_missing
build
export PATH="$ROOT/build:$PATH"
command -v sqlite3 >/dev/null || die "the sqlite3 command-line tool is missing (hint: apt-get install -y sqlite3)"

# ---------------------------------------------------------------------------------------------------
# The demo, in a fresh directory.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-demo.XXXXXX")
if [[ ${DEMO_KEEP:-0} == 1 ]]; then
    trap 'echo; echo "== the demo files are in $WORK (DEMO_KEEP=1)"' EXIT
else
    trap 'rm -rf "$WORK"' EXIT
fi
cd "$WORK"
mkdir jobs
cp "$ROOT/jobs/examples/$JOB.sql" jobs/

# say TEXT: show a command (and a comment) as the reader would type it; the caller runs it.
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
# fingerprint: the users table summed up, with the md5 of every row (NULL shown as \N), to compare the
# table before the backfill with the table after the rollback.
fingerprint() {
    local sum
    sum=$(sqlite3 -nullvalue '\N' demo.db "SELECT * FROM users ORDER BY id" | md5sum | cut -d' ' -f1)
    sqlite3 demo.db "SELECT count(*) || ' rows, ' || count(full_name) || ' with a full_name, md5 of all rows $sum'
                       FROM users"
}

echo "== in $WORK: demo.db, an SQLite database with users($ROWS rows; 1 in 100 has a full_name already)"
start=$EPOCHREALTIME
sqlite3 demo.db >/dev/null <<SQL
PRAGMA journal_mode = WAL;
CREATE TABLE users (id integer PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, full_name text);
BEGIN;
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < $ROWS)
INSERT INTO users SELECT i, 'first' || i, 'last' || i, CASE WHEN i % 100 = 0 THEN 'Dr. last' || i END FROM g;
COMMIT;
ANALYZE;
SQL
printf '   (%.1f s)\n' "$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')"
before=$(fingerprint)

say "export SLUICE_DB=sqlite:demo.db    # the database every command below uses (or --db sqlite:demo.db)"
export SLUICE_DB=sqlite:demo.db
say "cat jobs/$JOB.sql"
cat "jobs/$JOB.sql"
say "sluice plan $JOB    # a dry run: the key, the estimate, the chunk's SQL and its query plan"
sluice plan "$JOB"

say "sluice up    # interrupted with SIGINT (Ctrl-C) once a third of the rows are done"
sluice up &
pid=$!
# Committed rows, from the bookkeeping table sluice keeps in the database (0 until the first chunk).
committed() {
    sqlite3 -cmd '.timeout 2000' demo.db "SELECT coalesce(sum(rows), 0) FROM sluice_progress" 2>/dev/null || echo 0
}
while kill -0 "$pid" 2>/dev/null && (($(committed) < ROWS / 3)); do
    sleep 0.02
done
kill -INT "$pid" 2>/dev/null || true
rc=0
wait "$pid" || rc=$?
case $rc in
3) echo "(exit code 3: stopped before done, resumable; the chunk in flight finished or was rolled back)" ;;
0) echo "(exit code 0: it finished before the interrupt landed; try DEMO_ROWS=5000000)" ;;
*) die "sluice up exited $rc" ;;
esac

say "sluice status"
sluice status
say "sqlite3 demo.db 'SELECT min(id) AS first_to_do, count(*) AS to_do FROM users WHERE full_name IS NULL'"
sqlite3 -header -column demo.db "SELECT min(id) AS first_to_do, count(*) AS to_do FROM users WHERE full_name IS NULL"
echo "(the first row left to do is the one right after LAST KEY: every committed chunk is there whole)"
say "sluice up    # resumes after the last committed chunk"
sluice up
say "sluice status --json"
sluice status --json
say "sluice history"
sluice history
some=$((ROWS > 424242 ? 424242 : ROWS))
say "sqlite3 demo.db 'SELECT count(*) AS missing FROM users WHERE full_name IS NULL; SELECT * FROM users WHERE id = $some'"
sqlite3 -header -column demo.db "SELECT count(*) AS missing FROM users WHERE full_name IS NULL;
                                 SELECT * FROM users WHERE id = $some"

say "sluice down $JOB    # puts back the old values it saved, chunk by chunk"
sluice down "$JOB"
say "sluice status; sluice history"
sluice status
sluice history

say "sqlite3 demo.db 'SELECT count(*), count(full_name) FROM users'; sqlite3 demo.db 'SELECT * FROM users ORDER BY id' | md5sum"
after=$(fingerprint)
echo "before the backfill: $before"
echo "after the rollback:  $after"
[[ $after == "$before" ]] || die "the table is not as it was before the backfill"
echo "the same: the rollback gave the table back as it was"
