#!/usr/bin/env bash
# bench_sqlite.sh: times sluice on an SQLite file against one UPDATE statement and a Python keyset loop; prints figures, never judges.
#
# Usage, from anywhere (no root, no server):  bash tests/bench/bench_sqlite.sh
#
# It builds its own release binary (build-bench/: --buildtype=release, no sanitizers), makes one SQLite
# file (WAL mode) holding users(id integer primary key, first_name, last_name, full_name) with
# BENCH_ROWS rows, full_name NULL, and runs `UPDATE users SET full_name = first_name || ' ' || last_name`
# on a fresh copy of it, BENCH_RUNS times per method, as:
#   1. one UPDATE statement of the whole table (sqlite3 CLI, synchronous=FULL): the floor;
#   2. a Python keyset loop (python3's sqlite3 module, WAL, synchronous=FULL): per chunk BEGIN, find
#      the chunk's last key (as sluice's boundary query does), UPDATE the range, COMMIT; timed inside
#      Python from its first BEGIN to close (interpreter start and connect left out, as an
#      application's would be);
#   3. sluice up with a job file (sluice commits each chunk with its sluice_progress row, then
#      records the chunk in its checkpoint file; in WAL mode its chunks run with synchronous=NORMAL,
#      its default, synchronous-commit off); timed as the whole command, process start to exit;
#   4. the same with `synchronous-commit on` (synchronous=FULL, as methods 1 and 2).
# Methods 2 and 3 run once per batch size in BENCH_BATCHES.
# It prints each run's seconds, then per method the median and best seconds and the ratio of medians
# to the single UPDATE (x/UPDATE; 1.00 = as fast as one statement). It exits non-zero only when it
# could not measure (build failed, a method left the table wrong), never on the figures.
#
# Environment (defaults in brackets); a quick smoke run:
#   BENCH_ROWS=20000 BENCH_RUNS=1 bash tests/bench/bench_sqlite.sh
#   BENCH_ROWS            rows in the table [1000000]
#   BENCH_RUNS            runs per method; the median is reported [3]
#   BENCH_BATCHES         rows per chunk, space-separated: each batched method runs at each [1000 5000]
#   BENCH_DIR             where the database files go (a disk, not tmpfs, for fsync to cost what it
#                         costs) [a new directory under /var/tmp, removed at the end]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$ROOT/build-bench"
SLUICE="$BUILD/sluice"
BENCH_ROWS=${BENCH_ROWS:-1000000}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_BATCHES=${BENCH_BATCHES:-1000 5000}
UPDATE_SET="UPDATE users SET full_name = first_name || ' ' || last_name"

die() {
    echo "bench_sqlite.sh: $*" >&2
    exit 1
}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# check_filled WHAT: every row got its full_name, the right one; else stop.
check_filled() {
    local got
    got=$(sqlite3 "$DB" "SELECT count(*) FILTER (WHERE full_name = first_name || ' ' || last_name) || ' ' ||
                                count(full_name) FROM users") || die "$1: cannot read $DB"
    [[ $got == "$BENCH_ROWS $BENCH_ROWS" ]] ||
        die "$1 left the table wrong: expected $BENCH_ROWS rows filled, got (right, filled) $got"
}

# record METHOD SECONDS: one run's time, printed, kept for the summary.
declare -a METHODS=()
declare -A TIMES=()
record() {
    [[ -n ${TIMES[$1]:-} ]] || METHODS+=("$1")
    TIMES[$1]="${TIMES[$1]:-} $2"
    printf '#   %-36s %8.3f s\n' "$1" "$2"
}

bench_update() {
    local t0 t1
    lite_fresh
    t0=$(now)
    sqlite3 -bail "$DB" "PRAGMA synchronous = FULL; $UPDATE_SET" >/dev/null || die "the UPDATE failed"
    t1=$(now)
    check_filled "the UPDATE"
    record "one UPDATE statement" "$(secs "$t0" "$t1")"
}

# The hand-written alternative: the keyset loop a Python migration would run (lib.sh). Prints its seconds.
write_python_loop() {
    write_keyset_loop_py "$WORK/loop.py"
}

bench_python() {
    local batch=$1 t
    lite_fresh
    t=$(python3 "$WORK/loop.py" "$DB" "$batch" "$UPDATE_SET") || die "the Python loop failed"
    check_filled "the Python loop"
    record "Python keyset loop, batch $batch" "$t"
}

# bench_sluice BATCH [wait]: with wait, the job says synchronous-commit on.
bench_sluice() {
    local batch=$1 t0 t1 rc
    lite_fresh
    rm -rf "$WORK/jobs" "$WORK/ckpt"
    mkdir -p "$WORK/jobs"
    cat >"$WORK/jobs/0001_full_name.sql" <<EOF
-- sluice:table users
-- sluice:batch $batch${2:+
-- sluice:synchronous-commit on}
-- sluice:up
$UPDATE_SET WHERE id BETWEEN :lo AND :hi;
EOF
    t0=$(now)
    "$SLUICE" --db "sqlite:$DB" --jobs "$WORK/jobs" --checkpoints "$WORK/ckpt" up </dev/null \
        >"$WORK/out" 2>"$WORK/err"
    rc=$?
    t1=$(now)
    if ((rc != 0)); then
        tail -n 20 "$WORK/err" >&2
        die "sluice up exited $rc"
    fi
    check_filled "sluice"
    record "sluice up, batch $batch${2:+, sync-commit on}" "$(secs "$t0" "$t1")"
}

# stats TIMES...: "median best" of the given seconds.
stats() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                                                             printf "%.3f %.3f", m, v[1] }'
}

report() {
    local name base median best rate
    # shellcheck disable=SC2086 # word splitting of the recorded times is the point
    base=$(stats ${TIMES["one UPDATE statement"]} | cut -d' ' -f1)
    echo
    echo "== results: $BENCH_ROWS rows, median of $BENCH_RUNS runs; x/UPDATE compares medians (1.00 = as fast as one UPDATE)"
    printf '%-38s %10s %10s %11s %10s\n' method median_s best_s rows/s x/UPDATE
    for name in "${METHODS[@]}"; do
        # shellcheck disable=SC2086
        read -r median best < <(stats ${TIMES[$name]})
        rate=$(awk -v r="$BENCH_ROWS" -v s="$median" 'BEGIN { printf "%.0f", r / s }')
        printf '%-38s %10.3f %10.3f %11s %10.2f\n' "$name" "$median" "$best" "$rate" \
            "$(awk -v a="$median" -v b="$base" 'BEGIN { print a / b }')"
    done
    echo "(issue 5's reference: sluice within 1.2x of one UPDATE; a Python keyset loop measured 1.26x)"
}

main() {
    local run batch
    command -v sqlite3 >/dev/null || die "the sqlite3 command-line tool is missing (hint: apt-get install -y sqlite3)"
    command -v python3 >/dev/null || die "python3 is missing (hint: apt-get install -y python3)"
    build_release
    if [[ -n ${BENCH_DIR:-} ]]; then
        WORK=$BENCH_DIR
        mkdir -p "$WORK" || die "cannot create $WORK"
    else
        WORK=$(mktemp -d /var/tmp/bench_sqlite.XXXXXX) || die "mktemp failed"
        trap 'rm -rf "$WORK"' EXIT
    fi
    DB="$WORK/bench.db"
    echo "# sqlite $(sqlite3 --version | cut -d' ' -f1) (CLI), python3 sqlite3 module $(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)')"
    echo "# sluice: $SLUICE ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $(nproc) cpus"
    echo "# files in $WORK ($(df -T "$WORK" | awk 'NR == 2 { print $2 }')); rows $BENCH_ROWS; WAL, synchronous=FULL (sluice's chunks: NORMAL unless synchronous-commit on)"
    make_template
    write_python_loop
    for run in $(seq 1 "$BENCH_RUNS"); do
        echo "# run $run of $BENCH_RUNS"
        bench_update
        for batch in $BENCH_BATCHES; do
            bench_python "$batch"
            bench_sluice "$batch"
            bench_sluice "$batch" wait
        done
    done
    report
}

main
