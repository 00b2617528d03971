#!/usr/bin/env bash
# bench_down.sh: what rollback costs: `up` with and without undo records, `down`, and the checkpoint file's size.
#
# Usage, as root, from anywhere:  bash tests/bench/bench_down.sh
#
# Like bench_core.sh it builds the release binary (build-bench/), provisions a throw-away PostgreSQL with
# pg_virtualenv (fsync on, like production) and, each time on a fresh users(id bigint primary key,
# first_name, last_name, full_name) table, runs the backfill
#   UPDATE users SET full_name = first_name || ' ' || last_name WHERE id BETWEEN :lo AND :hi
# as `sluice up` three ways: with no way back (nothing recorded), with a down section (a hash per row
# recorded, for conflict detection), and with `undo snapshot(full_name)` (old values and hashes); then
# `sluice down` of the last two, checking the table's md5 is back to what it was. It prints seconds,
# rows/s, the overhead against the plain run, and the checkpoint file's size.
#
# Then wide rows, where a chunk's undo record is large: a purge with `undo snapshot(*)` of
# BENCH_WIDE_ROWS rows of BENCH_WIDE_KB KB each (text stored uncompressed), batch BENCH_WIDE_BATCH, and
# its `down` (the table's md5 checked again). Beside sluice's seconds it prints one DELETE of the same
# rows in psql (the baseline), and beside its peak memory (GNU time's maximum resident set) the bytes a
# chunk saves (batch x row), and their ratio.
#
# It never passes or fails on time; it exits non-zero only when it could not measure (build failed, no
# server, a wrong result).
#
# Environment: BENCH_ROWS [1000000], BENCH_BATCH [1000], BENCH_WIDE_ROWS [2000], BENCH_WIDE_KB [200],
# BENCH_WIDE_BATCH [1000], BENCH_PGVERSION [15], BENCH_PG_OPTS [fsync=on].
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$ROOT/build-bench"
SLUICE="$BUILD/sluice"
BENCH_ROWS=${BENCH_ROWS:-1000000}
BENCH_BATCH=${BENCH_BATCH:-1000}
BENCH_WIDE_ROWS=${BENCH_WIDE_ROWS:-2000}
BENCH_WIDE_KB=${BENCH_WIDE_KB:-200}
BENCH_WIDE_BATCH=${BENCH_WIDE_BATCH:-1000}
BENCH_PGVERSION=${BENCH_PGVERSION:-15}
BENCH_PG_OPTS=${BENCH_PG_OPTS-fsync=on}
export BENCH_ROWS BENCH_BATCH BENCH_WIDE_ROWS BENCH_WIDE_KB BENCH_WIDE_BATCH BENCH_PGVERSION BENCH_PG_OPTS

die() {
    echo "bench_down.sh: $*" >&2
    exit 1
}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

outer() {
    [[ $(id -u) == 0 ]] || die "run it as root (pg_virtualenv needs to create a cluster)"
    command -v pg_virtualenv >/dev/null || die "pg_virtualenv is missing (hint: bash tests/run.sh installs it)"
    need_time
    build_release
    # shellcheck disable=SC2086 # BENCH_PG_OPTS: space-separated GUC=VALUE words
    pg_inner "${BASH_SOURCE[0]}" $BENCH_PG_OPTS
}

# ---------------------------------------------------------------------------------------------------
# Inside the server.

q() {
    psql -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

fresh_table() {
    q "SET client_min_messages = warning; DROP TABLE IF EXISTS users, sluice_progress, sluice_jobs, sluice_undo, sluice_ranges, sluice_meta"
    q "CREATE TABLE users (id bigint PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, full_name text)"
    q "INSERT INTO users (id, first_name, last_name)
       SELECT g, 'first' || g, 'last' || (g % 1000) FROM generate_series(1, $BENCH_ROWS) g"
    q "VACUUM ANALYZE users" && q "CHECKPOINT"
}

table_md5() {
    q "SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM users u"
}

# write_job DIR UNDO_LINES DOWN_LINES
write_job() {
    mkdir -p "$1"
    cat >"$1/0001_backfill.sql" <<EOF
-- sluice:table users
-- sluice:batch $BENCH_BATCH
$2
-- sluice:up
UPDATE users SET full_name = first_name || ' ' || last_name WHERE id BETWEEN :lo AND :hi;
$3
EOF
}

# timed LABEL CMD...: run CMD, print and remember its seconds in SECS.
timed() {
    local label=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    "$@" >/dev/null 2>"$WORK/last.err" || {
        tail -n 5 "$WORK/last.err" >&2
        die "$label failed"
    }
    t1=$EPOCHREALTIME
    SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
}

row() { # label seconds [base seconds] [extra]
    local rate over=""
    rate=$(awk -v s="$2" -v n="$BENCH_ROWS" 'BEGIN {printf "%.0f", n / s}')
    [[ -n ${3:-} ]] && over=$(awk -v s="$2" -v b="$3" 'BEGIN {printf "%+.0f%%", (s / b - 1) * 100}')
    printf '%-44s %8ss %10s rows/s %8s  %s\n' "$1" "$2" "$rate" "$over" "${4:-}"
}

# run_way NAME UNDO_LINES DOWN_LINES: fresh table, up, (down), sizes.
run_way() {
    local dir="$WORK/$1" before size
    fresh_table
    before=$(table_md5)
    write_job "$dir/jobs" "$2" "$3"
    timed "up ($1)" "$SLUICE" --jobs "$dir/jobs" --checkpoints "$dir/ckpt" up
    UP_SECS=$SECS
    size=$(du -b "$dir/ckpt/0001_backfill.sluice" | cut -f1)
    CKPT_MB=$(awk -v b="$size" 'BEGIN {printf "%.1f MB", b / 1048576}')
    [[ $(q "SELECT count(*) FROM users WHERE full_name IS NULL") == 0 ]] || die "up ($1) left rows unfilled"
    DOWN_SECS=""
    if [[ -n $2$3 ]]; then
        timed "down ($1)" "$SLUICE" --jobs "$dir/jobs" --checkpoints "$dir/ckpt" down base
        DOWN_SECS=$SECS
        [[ $(table_md5) == "$before" ]] || die "down ($1) did not give back the table"
    fi
}

# The wide table: BENCH_WIDE_ROWS rows of BENCH_WIDE_KB KB of text kept uncompressed (STORAGE EXTERNAL).
fresh_wide() {
    q "SET client_min_messages = warning; DROP TABLE IF EXISTS wide, sluice_progress, sluice_jobs, sluice_undo, sluice_ranges, sluice_meta"
    q "CREATE TABLE wide (id int PRIMARY KEY, body text)"
    q "ALTER TABLE wide ALTER COLUMN body SET STORAGE EXTERNAL"
    q "INSERT INTO wide SELECT g, repeat(md5(g::text), $BENCH_WIDE_KB * 1024 / 32) FROM generate_series(1, $BENCH_WIDE_ROWS) g"
    q "VACUUM ANALYZE wide" && q "CHECKPOINT"
}

wide_md5() {
    q "SELECT md5(string_agg(md5(w::text), ',' ORDER BY id)) FROM wide w"
}

# mem_timed LABEL CMD...: like timed, and PEAK_MB is the command's peak resident memory.
mem_timed() {
    local label=$1
    shift
    timed "$label" /usr/bin/time -f '%M' -o "$WORK/mem.txt" "$@"
    PEAK_MB=$(awk '{printf "%.0f", $1 / 1024}' "$WORK/mem.txt")
}

wide_rows() {
    local dir="$WORK/wide" before base up_s up_mb down_s down_mb chunk_mb
    fresh_wide
    timed "DELETE in psql" psql -XAtq -v ON_ERROR_STOP=1 -c "BEGIN" -c "DELETE FROM wide" -c "ROLLBACK"
    base=$SECS
    before=$(wide_md5)
    mkdir -p "$dir/jobs"
    cat >"$dir/jobs/0001_purge.sql" <<EOF
-- sluice:table wide
-- sluice:batch $BENCH_WIDE_BATCH
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM wide WHERE id BETWEEN :lo AND :hi;
EOF
    mem_timed "up (wide)" "$SLUICE" --jobs "$dir/jobs" --checkpoints "$dir/ckpt" up
    up_s=$SECS up_mb=$PEAK_MB
    [[ $(q "SELECT count(*) FROM wide") == 0 ]] || die "up (wide) left rows"
    mem_timed "down (wide)" "$SLUICE" --jobs "$dir/jobs" --checkpoints "$dir/ckpt" down base
    down_s=$SECS down_mb=$PEAK_MB
    [[ $(wide_md5) == "$before" ]] || die "down (wide) did not give back the table"
    chunk_mb=$(awk -v b="$BENCH_WIDE_BATCH" -v k="$BENCH_WIDE_KB" 'BEGIN {printf "%.1f", b * k / 1024}')
    echo
    echo "# wide rows: $BENCH_WIDE_ROWS rows of $BENCH_WIDE_KB KB, batch $BENCH_WIDE_BATCH (a chunk saves ~$chunk_mb MB)"
    printf '%-44s %8ss   baseline: one DELETE of every row (psql, rolled back) %ss\n' "up, snapshot(*) purge" "$up_s" "$base"
    printf '%-44s %8ss\n' "down of it (table md5 identical)" "$down_s"
    printf '%-44s %8s MB  %5.1fx the chunk'"'"'s saved bytes\n' "peak memory, up" "$up_mb" "$(awk -v m="$up_mb" -v c="$chunk_mb" 'BEGIN {print (c > 0 ? m / c : 0)}')"
    printf '%-44s %8s MB  %5.1fx the chunk'"'"'s saved bytes\n' "peak memory, down" "$down_mb" "$(awk -v m="$down_mb" -v c="$chunk_mb" 'BEGIN {print (c > 0 ? m / c : 0)}')"
}

inner() {
    WORK=$(mktemp -d /tmp/bench-down.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
    echo "# $BENCH_ROWS rows, batch $BENCH_BATCH, PostgreSQL $(q 'SHOW server_version'), fsync $(q 'SHOW fsync')"
    run_way plain "" ""
    local base=$UP_SECS plain_mb=$CKPT_MB
    run_way down-section "" "-- sluice:down
UPDATE users SET full_name = NULL WHERE id BETWEEN :lo AND :hi;"
    local ds_up=$UP_SECS ds_down=$DOWN_SECS ds_mb=$CKPT_MB
    run_way snapshot "-- sluice:undo snapshot(full_name)" ""
    echo
    row "up, no way back (nothing recorded)" "$base" "" "checkpoint $plain_mb"
    row "up, down section (row hashes recorded)" "$ds_up" "$base" "checkpoint $ds_mb"
    row "up, undo snapshot(full_name)" "$UP_SECS" "$base" "checkpoint $CKPT_MB"
    row "down, down section" "$ds_down"
    row "down, snapshot(full_name)" "$DOWN_SECS" "" "table md5 identical after down"
    wide_rows
}

if [[ ${1:-} == --inner ]]; then
    inner
else
    outer
fi
