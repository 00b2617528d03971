#!/usr/bin/env bash
# bench_fleet.sh: a fleet of four targets, --parallel 1 against --parallel 4; prints figures, never judges.
#
# Usage, as root, from anywhere:  bash tests/bench/bench_fleet.sh
#
# It builds its own release binary (build-bench/), provisions a throw-away PostgreSQL with pg_virtualenv
# and makes BENCH_TARGETS databases on it, each with users(id bigint primary key, first_name,
# last_name, full_name) of BENCH_ROWS rows, and a targets file naming them. Then, BENCH_RUNS times
# each, on fresh tables: `sluice --targets ... --parallel 1 up` and `--parallel BENCH_TARGETS up` of
# `UPDATE users SET full_name = first_name || ' ' || last_name` (batch BENCH_BATCH), timed as a whole
# command, with the runner's own CPU time (user + system, from /usr/bin/time). It prints each run,
# the medians, their ratio (parallel N / parallel 1; on a 2-core machine whose server is on the same
# machine, the server's cores are the limit), and the runner's CPU time per chunk, beside one target
# run alone with --db for the same per-chunk figure. It exits non-zero only when it could not measure.
#
# The targets share one server here (one machine); in a real fleet each has its own, so the
# parallel/serial ratio here is a floor on what --parallel buys, not its measure.
#
# Environment (defaults in brackets); a quick smoke run:
#   BENCH_ROWS=20000 BENCH_RUNS=1 bash tests/bench/bench_fleet.sh
#   BENCH_ROWS        rows per target [1000000]
#   BENCH_TARGETS     targets [4]
#   BENCH_BATCH       rows per chunk [1000]
#   BENCH_RUNS        runs per setting; the median is reported [3]
#   BENCH_PGVERSION   PostgreSQL major version [15]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$ROOT/build-bench"
SLUICE="$BUILD/sluice"
BENCH_ROWS=${BENCH_ROWS:-1000000}
BENCH_TARGETS=${BENCH_TARGETS:-4}
BENCH_BATCH=${BENCH_BATCH:-1000}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_PGVERSION=${BENCH_PGVERSION:-15}
export BENCH_ROWS BENCH_TARGETS BENCH_BATCH BENCH_RUNS BENCH_PGVERSION

die() {
    echo "bench_fleet.sh: $*" >&2
    exit 1
}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

outer() {
    command -v pg_virtualenv >/dev/null || die "pg_virtualenv is missing (hint: bash tests/run.sh installs it)"
    need_time
    build_release
    pg_inner "${BASH_SOURCE[0]}" fsync=on
}

q() {
    psql -XAtq -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}

# fresh: every target's users recreated, full_name empty, no bookkeeping, no checkpoints.
fresh() {
    local i
    for ((i = 1; i <= BENCH_TARGETS; i++)); do
        q "fleet$i" "drop table if exists users, sluice_progress, sluice_jobs, sluice_undo, sluice_ranges, sluice_meta;
                     create table users (id bigint primary key, first_name text, last_name text, full_name text);
                     insert into users (id, first_name, last_name)
                       select g, 'first_' || g, 'last_' || g from generate_series(1, $BENCH_ROWS) g" || exit 1
        q "fleet$i" "vacuum analyze users" || exit 1 # its own statement: VACUUM cannot run in psql -c's one transaction
    done
    q postgres "checkpoint" || exit 1
    rm -rf "$WORK/ckpt"
}

check_filled() {
    local i got
    for ((i = 1; i <= BENCH_TARGETS; i++)); do
        got=$(q "fleet$i" "select count(*) filter (where full_name = first_name || ' ' || last_name) from users")
        [[ $got == "$BENCH_ROWS" ]] || die "$1 left fleet$i wrong: $got of $BENCH_ROWS rows filled"
    done
}

# run LABEL ARGS...: one timed sluice up; records wall seconds and the runner's CPU seconds.
declare -A WALL=() CPU=()
run() {
    local label=$1 t0 t1 cpu
    shift
    fresh
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%U %S' -o "$WORK/time" "$SLUICE" --jobs "$WORK/jobs" --checkpoints "$WORK/ckpt" "$@" up \
        >"$WORK/out" 2>&1 || die "sluice $* up failed: $(tail -n 5 "$WORK/out")"
    t1=$EPOCHREALTIME
    cpu=$(awk '{ printf "%.3f", $1 + $2 }' "$WORK/time")
    WALL[$label]+=" $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    CPU[$label]+=" $cpu"
    printf '#   %-28s %8.3f s wall %8.3f s runner cpu\n' "$label" "${WALL[$label]##* }" "$cpu"
}

median() {
    tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

inner() {
    unset SLUICE_DB DATABASE_URL
    export PGOPTIONS="-c client_min_messages=warning"
    WORK=$(mktemp -d /tmp/sluice-bench-fleet.XXXXXX)
    mkdir -p "$WORK/jobs"
    cat >"$WORK/jobs/0001_fill.sql" <<EOF
-- sluice:table users
-- sluice:batch $BENCH_BATCH
-- sluice:up
UPDATE users SET full_name = first_name || ' ' || last_name WHERE id BETWEEN :lo AND :hi;
EOF
    local i
    : >"$WORK/targets.txt"
    chmod 600 "$WORK/targets.txt"
    for ((i = 1; i <= BENCH_TARGETS; i++)); do
        createdb "fleet$i" || die "createdb fleet$i failed"
        echo "fleet$i postgresql://$PGUSER@$PGHOST:$PGPORT/fleet$i" >>"$WORK/targets.txt"
    done
    echo "# postgresql $(q postgres 'show server_version'); $(nproc) cpus; $BENCH_TARGETS targets of $BENCH_ROWS rows, batch $BENCH_BATCH"
    local chunks=$((BENCH_TARGETS * ((BENCH_ROWS + BENCH_BATCH - 1) / BENCH_BATCH)))
    for ((r = 1; r <= BENCH_RUNS; r++)); do
        run "--parallel 1" --targets "$WORK/targets.txt" --parallel 1
        check_filled "--parallel 1"
        run "--parallel $BENCH_TARGETS" --targets "$WORK/targets.txt" --parallel "$BENCH_TARGETS"
        check_filled "--parallel $BENCH_TARGETS"
        run "one target (--db)" --db "postgresql://$PGUSER@$PGHOST:$PGPORT/fleet1"
    done
    local s p o
    s=$(median "${WALL[--parallel 1]}")
    p=$(median "${WALL[--parallel $BENCH_TARGETS]}")
    o=$(median "${WALL[one target (--db)]}")
    echo "# medians of $BENCH_RUNS runs"
    printf '%-28s %10s %14s %22s\n' "setting" "wall s" "runner cpu s" "runner cpu ms/chunk"
    printf '%-28s %10.3f %14.3f %22.3f\n' "--parallel 1" "$s" "$(median "${CPU[--parallel 1]}")" \
        "$(awk -v c="$(median "${CPU[--parallel 1]}")" -v n="$chunks" 'BEGIN { print 1000 * c / n }')"
    printf '%-28s %10.3f %14.3f %22.3f\n' "--parallel $BENCH_TARGETS" "$p" "$(median "${CPU[--parallel $BENCH_TARGETS]}")" \
        "$(awk -v c="$(median "${CPU[--parallel $BENCH_TARGETS]}")" -v n="$chunks" 'BEGIN { print 1000 * c / n }')"
    printf '%-28s %10.3f %14.3f %22.3f\n' "one target alone (--db)" "$o" "$(median "${CPU[one target (--db)]}")" \
        "$(awk -v c="$(median "${CPU[one target (--db)]}")" -v n="$((chunks / BENCH_TARGETS))" 'BEGIN { print 1000 * c / n }')"
    printf 'parallel %d / parallel 1 (wall): %.2f\n' "$BENCH_TARGETS" "$(awk -v a="$p" -v b="$s" 'BEGIN { print a / b }')"
    rm -rf "$WORK"
}

if [[ ${1:-} == --inner ]]; then
    inner
else
    outer
fi
