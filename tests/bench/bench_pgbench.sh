#!/usr/bin/env bash
# bench_pgbench.sh: what pgbench's TPC-B load feels while a whole-table backfill runs, as one UPDATE and as sluice; prints figures, never judges.
#
# Usage, as root, from anywhere:  bash tests/bench/bench_pgbench.sh
#
# It builds its own release binary (build-bench/, as bench_core.sh does), provisions a throw-away
# PostgreSQL with pg_virtualenv (dropped at the end) and, each time on a freshly initialised pgbench
# database (pgbench -i, VACUUM ANALYZE, CHECKPOINT), runs pgbench's TPC-B script with BENCH_CLIENTS
# clients for BENCH_SECONDS seconds:
#   1. with no backfill (the baseline);
#   2. while one `UPDATE pgbench_accounts SET filler = md5(aid::text)` runs, started BENCH_LEAD s in;
#   3. while sluice does the same in chunks with `chunk-time 200ms`, started BENCH_LEAD s in.
# From pgbench's per-transaction log (-l) it computes, for the baseline over the whole run and for the
# other two over the time the backfill ran (the "window"), the throughput, the 99th percentile and
# the maximum latency; the longest latency counts every transaction that overlapped the window. It
# prints them side by side with the targets of issue 4: during sluice no pgbench transaction waits
# longer than 2x chunk-time, and pgbench keeps at least 75 % of its baseline throughput. It exits
# non-zero only when it could not measure (build failed, no server, a backfill failed or left rows
# unchanged), never on the figures.
#
# Environment (defaults in brackets):
#   BENCH_SCALE       pgbench scale factor: 100,000 pgbench_accounts rows each [20]
#   BENCH_CLIENTS     pgbench clients (and threads) [4]
#   BENCH_SECONDS     seconds each pgbench run lasts; a backfill that outlasts it is measured only up
#                     to its end (the report says so) [60]
#   BENCH_LEAD        seconds of plain load before the backfill starts [5]
#   BENCH_CHUNK_TIME  sluice's chunk-time [200ms]
#   BENCH_PAUSE       sluice's pause between chunks, e.g. 200ms [none]
#   BENCH_PGVERSION   PostgreSQL major version [15]
#   BENCH_PG_OPTS     postgresql.conf settings, space-separated guc=value [fsync=on]: pg_virtualenv
#                     turns fsync off; with it on, commits cost what they cost in production
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$ROOT/build-bench"
SLUICE="$BUILD/sluice"
BENCH_SCALE=${BENCH_SCALE:-20}
BENCH_CLIENTS=${BENCH_CLIENTS:-4}
BENCH_SECONDS=${BENCH_SECONDS:-60}
BENCH_LEAD=${BENCH_LEAD:-5}
BENCH_CHUNK_TIME=${BENCH_CHUNK_TIME:-200ms}
BENCH_PAUSE=${BENCH_PAUSE:-}
BENCH_PGVERSION=${BENCH_PGVERSION:-15}
BENCH_PG_OPTS=${BENCH_PG_OPTS-fsync=on}
export BENCH_SCALE BENCH_CLIENTS BENCH_SECONDS BENCH_LEAD BENCH_CHUNK_TIME BENCH_PAUSE BENCH_PGVERSION BENCH_PG_OPTS

die() {
    echo "bench_pgbench.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------------
# Outside the server: tools, the release build, then this script again inside pg_virtualenv.

ensure_tools() {
    command -v pg_virtualenv >/dev/null ||
        die "pg_virtualenv is missing (hint: bash tests/run.sh installs what the build and PostgreSQL need)"
    command -v meson >/dev/null || die "meson is missing (hint: bash tests/run.sh installs it)"
    command -v python3 >/dev/null || die "python3 is missing (hint: apt-get install -y python3)"
    if ! command -v pgbench >/dev/null; then
        echo "# installing postgresql-contrib (for pgbench)"
        { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-contrib; } \
            </dev/null >/dev/null 2>&1 || die "apt-get install postgresql-contrib failed"
    fi
}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

outer() {
    [[ $(id -u) == 0 ]] || die "run it as root (pg_virtualenv needs to create a cluster)"
    ensure_tools
    if [[ -z ${BENCH_SLUICE:-} ]]; then
        build_release
    else
        SLUICE=$BENCH_SLUICE # a binary built elsewhere, for a run while the tree does not build
        echo "# using $SLUICE"
    fi
    export BENCH_SLUICE=$SLUICE
    # shellcheck disable=SC2086 # BENCH_PG_OPTS: space-separated GUC=VALUE words
    pg_inner "${BASH_SOURCE[0]}" $BENCH_PG_OPTS
}

# ---------------------------------------------------------------------------------------------------
# Inside the server.

BACKFILL_SET="UPDATE pgbench_accounts SET filler = md5(aid::text)"
WORK=""

q() {
    psql -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

# fresh_db: pgbench's tables initialised anew, statistics fresh, no dirty pages from the last phase.
fresh_db() {
    pgbench -i -q -s "$BENCH_SCALE" >"$WORK/init.log" 2>&1 || {
        tail -n 20 "$WORK/init.log" >&2
        die "pgbench -i failed"
    }
    q "drop table if exists sluice_progress" || exit 1
    q "vacuum analyze" || exit 1
    q "checkpoint" || exit 1
}

# check_filled WHAT: every pgbench_accounts row got its filler.
check_filled() {
    local got
    got=$(q "select count(*) filter (where filler <> md5(aid::text)) from pgbench_accounts") || exit 1
    [[ $got == 0 ]] || die "$1 left $got pgbench_accounts rows without their new filler"
}

# pgbench_start NAME: TPC-B load in the background, each transaction logged under $WORK/NAME.*
pgbench_start() {
    rm -f "$WORK/$1".log*
    pgbench -n -c "$BENCH_CLIENTS" -j "$BENCH_CLIENTS" -T "$BENCH_SECONDS" -l --log-prefix="$WORK/$1.log" \
        >"$WORK/$1.out" 2>&1 &
    PGBENCH_PID=$!
    PGBENCH_T0=$EPOCHREALTIME
}

pgbench_wait() {
    wait "$PGBENCH_PID" || {
        tail -n 20 "$WORK/$1.out" >&2
        die "pgbench ($1) failed"
    }
    PGBENCH_T1=$EPOCHREALTIME
}

# stats NAME FROM TO: "seconds txns tps p99_ms max_ms clipped" over [FROM, TO] (epoch seconds) of
# NAME's logs: tps and p99 from the transactions that ended in it, the maximum over every
# transaction that overlapped it.
stats() {
    python3 - "$WORK" "$@" <<'PY'
import glob, sys
work, name, t_from, t_to, run_end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
clipped = t_to > run_end
t_to = min(t_to, run_end)
ended, longest = [], 0.0
for path in glob.glob(f"{work}/{name}.log.*"):
    with open(path) as f:
        for line in f:
            p = line.split()
            lat_ms = int(p[2]) / 1000.0
            end = int(p[4]) + int(p[5]) / 1e6
            start = end - lat_ms / 1000.0
            if t_from <= end <= t_to:
                ended.append(lat_ms)
            if start <= t_to and end >= t_from:
                longest = max(longest, lat_ms)
secs = t_to - t_from
ended.sort()
p99 = ended[min(len(ended) - 1, int(0.99 * len(ended)))] if ended else 0.0
print(f"{secs:.1f} {len(ended)} {len(ended) / secs if secs > 0 else 0:.0f} {p99:.1f} {longest:.1f} {int(clipped)}")
PY
}

declare -A STATS=() BACKFILL_SECS=()

phase_baseline() {
    echo "# 1. pgbench alone, ${BENCH_SECONDS}s"
    fresh_db
    pgbench_start base
    pgbench_wait base
    # The whole run, bar its first second (connections, cold caches).
    STATS[base]=$(stats base "$(awk -v t="$PGBENCH_T0" 'BEGIN { printf "%.6f", t + 1 }')" "$PGBENCH_T1" "$PGBENCH_T1")
    echo "#    $(grep -E '^tps' "$WORK/base.out" | head -n 1)"
}

phase_update() {
    local t0 t1
    echo "# 2. pgbench with one UPDATE of all of pgbench_accounts, started after ${BENCH_LEAD}s"
    fresh_db
    pgbench_start update
    sleep "$BENCH_LEAD"
    t0=$EPOCHREALTIME
    q "$BACKFILL_SET" >/dev/null || die "the UPDATE failed"
    t1=$EPOCHREALTIME
    pgbench_wait update
    check_filled "the UPDATE"
    BACKFILL_SECS[update]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    STATS[update]=$(stats update "$t0" "$t1" "$PGBENCH_T1")
    echo "#    the UPDATE took ${BACKFILL_SECS[update]}s"
}

phase_sluice() {
    local t0 t1 rc
    echo "# 3. pgbench with sluice (chunk-time $BENCH_CHUNK_TIME${BENCH_PAUSE:+, pause $BENCH_PAUSE}), started after ${BENCH_LEAD}s"
    fresh_db
    mkdir -p "$WORK/jobs"
    cat >"$WORK/jobs/0001_filler.sql" <<EOF
-- sluice:table pgbench_accounts
-- sluice:key aid
-- sluice:batch 1000
-- sluice:chunk-time $BENCH_CHUNK_TIME
-- sluice:up
$BACKFILL_SET WHERE aid BETWEEN :lo AND :hi;
EOF
    [[ -z $BENCH_PAUSE ]] || sed -i "1i -- sluice:pause $BENCH_PAUSE" "$WORK/jobs/0001_filler.sql"
    pgbench_start sluice
    sleep "$BENCH_LEAD"
    t0=$EPOCHREALTIME
    "$SLUICE" --jobs "$WORK/jobs" --checkpoints "$WORK/ckpt" up </dev/null >"$WORK/sluice.out" 2>"$WORK/sluice.err"
    rc=$?
    t1=$EPOCHREALTIME
    pgbench_wait sluice
    if ((rc != 0)); then
        tail -n 20 "$WORK/sluice.err" >&2
        die "sluice up exited $rc"
    fi
    check_filled "sluice"
    BACKFILL_SECS[sluice]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    STATS[sluice]=$(stats sluice "$t0" "$t1" "$PGBENCH_T1")
    SLUICE_CHUNKS=$(sqlite3 "$WORK/ckpt/0001_filler.sluice" \
        "select count(*) || ' chunks, rows per chunk ' || min(rows) || '..' || max(rows) || ', median chunk ' ||
                (select duration_ms from chunks order by duration_ms limit 1 offset (select count(*) / 2 from chunks)) ||
                ' ms, longest ' || max(duration_ms) || ' ms, retried ' || sum(attempts > 1) from chunks")
    echo "#    sluice took ${BACKFILL_SECS[sluice]}s: $SLUICE_CHUNKS"
}

report() {
    local name label secs txns tps p99 max clipped base_tps pct note chunk_ms
    read -r _ _ base_tps _ _ _ <<<"${STATS[base]}"
    echo
    echo "== pgbench TPC-B, scale $BENCH_SCALE, $BENCH_CLIENTS clients, ${BENCH_SECONDS}s a run; figures over the whole baseline run"
    echo "   and over the time each backfill ran (window); max counts every transaction overlapping the window"
    printf '%-38s %9s %9s %8s %9s %9s %10s\n' run "window s" txns tps "p99 ms" "max ms" "% of base"
    for name in base update sluice; do
        case $name in
        base) label="no backfill (baseline)" ;;
        update) label="one UPDATE of the table" ;;
        sluice) label="sluice, chunk-time $BENCH_CHUNK_TIME${BENCH_PAUSE:+, pause $BENCH_PAUSE}" ;;
        esac
        read -r secs txns tps p99 max clipped <<<"${STATS[$name]}"
        pct=$(awk -v a="$tps" -v b="$base_tps" 'BEGIN { printf "%.0f", (b > 0 ? 100 * a / b : 0) }')
        note=""
        ((clipped)) && note="  (backfill outlasted pgbench: window cut at its end; raise BENCH_SECONDS)"
        printf '%-38s %9s %9s %8s %9s %9s %9s%%%s\n' "$label" "$secs" "$txns" "$tps" "$p99" "$max" "$pct" "$note"
    done
    echo "backfill durations: UPDATE ${BACKFILL_SECS[update]}s, sluice ${BACKFILL_SECS[sluice]}s ($SLUICE_CHUNKS)"
    read -r _ _ tps _ max _ <<<"${STATS[sluice]}"
    chunk_ms=$(sed -E 's/ms$//; s/^([0-9]+)s$/\1000/' <<<"$BENCH_CHUNK_TIME")
    pct=$(awk -v a="$tps" -v b="$base_tps" 'BEGIN { printf "%.0f", (b > 0 ? 100 * a / b : 0) }')
    if awk -v m="$max" -v c="$chunk_ms" 'BEGIN { exit !(m <= 2 * c) }'; then
        echo "target (issue 4): no pgbench transaction waits longer than 2x chunk-time ($((2 * chunk_ms)) ms) during sluice: met (max ${max} ms)"
    else
        echo "target (issue 4): no pgbench transaction waits longer than 2x chunk-time ($((2 * chunk_ms)) ms) during sluice: NOT met (max ${max} ms)"
    fi
    if ((pct >= 75)); then
        echo "target (issue 4): pgbench keeps >= 75 % of its baseline throughput during sluice: met (${pct} %)"
    else
        echo "target (issue 4): pgbench keeps >= 75 % of its baseline throughput during sluice: NOT met (${pct} %)"
    fi
}

inner() {
    unset SLUICE_DB DATABASE_URL
    SLUICE=$BENCH_SLUICE
    export PGOPTIONS="-c client_min_messages=warning"
    createdb bench || die "createdb bench failed"
    export PGDATABASE=bench
    WORK=$(mktemp -d /tmp/bench_pgbench.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
    cd "$WORK" || exit 1
    echo "# postgresql $(q 'show server_version'); fsync=$(q 'show fsync'), synchronous_commit=$(q 'show synchronous_commit'), shared_buffers=$(q 'show shared_buffers'), max_wal_size=$(q 'show max_wal_size')"
    echo "# sluice: $SLUICE ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $(nproc) cpus; $(pgbench --version)"
    phase_baseline
    phase_update
    phase_sluice
    report
}

if [[ ${1:-} == --inner ]]; then
    inner
else
    outer
fi
