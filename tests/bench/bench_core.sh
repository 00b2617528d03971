#!/usr/bin/env bash
# bench_core.sh: times sluice against a plain UPDATE, a PL/pgSQL batch procedure and client loops; prints figures, never judges.
#
# Usage, as root, from anywhere:  bash tests/bench/bench_core.sh
#
# It builds its own release binary (build-bench/: --buildtype=release, no sanitizers), provisions a
# throw-away PostgreSQL with pg_virtualenv (like tests/run.sh; dropped at the end) and, each time on a
# fresh users(id bigint primary key, first_name, last_name, full_name) table (recreated, VACUUM ANALYZE,
# CHECKPOINT), runs `UPDATE users SET full_name = first_name || ' ' || last_name` as:
#   1. one plain UPDATE of the whole table;
#   2. a PL/pgSQL procedure walking the key, COMMIT per batch (bounds found the way sluice finds them);
#   3. client loops over the first BENCH_LOOP_ROWS rows through one psql session: LIMIT/OFFSET (the way
#      alembic data migrations are usually written; its time per BENCH_LOOP_STEP rows shows its curve)
#      and keyset (WHERE id > last ORDER BY id LIMIT batch), both BEGIN/SELECT/UPDATE/COMMIT per batch;
#   4. sluice up with a job file, under /usr/bin/time -v for its peak memory.
# It prints each method's seconds and rows/s and sluice's time per row as a ratio to each (sluice/x;
# below 1 means sluice is faster), then sluice's peak RSS at BENCH_ROWS and each of BENCH_MEM_ROWS.
# It is not part of the test command and never passes or fails on time; it exits non-zero only when it
# could not measure (build failed, no server, a method did not update every row it should have).
#
# Environment (defaults in brackets); a quick smoke run:
#   BENCH_ROWS=20000 BENCH_LOOP_ROWS=5000 BENCH_LOOP_STEP=1000 BENCH_MEM_ROWS=40000 bash tests/bench/bench_core.sh
#   BENCH_ROWS        rows in the table for methods 1, 2 and 4 [1000000]
#   BENCH_BATCH       rows per batch for every batched method [1000]
#   BENCH_LOOP_ROWS   rows the client loops update [200000]
#   BENCH_LOOP_STEP   the LIMIT/OFFSET loop prints its time per this many rows [50000]
#   BENCH_MEM_ROWS    further table sizes (space-separated) to measure sluice's peak RSS at [5000000]
#                     (each run also prints the mean chunk time over the first and last tenth of chunks)
#   BENCH_PGVERSION   PostgreSQL major version [15]
#   BENCH_PG_OPTS     postgresql.conf settings, space-separated guc=value [fsync=on]: pg_virtualenv turns
#                     fsync off, and sluice fsyncs its checkpoint file per chunk, so the comparison is
#                     only fair (and production-like) with the server's fsync on too
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$ROOT/build-bench"
SLUICE="$BUILD/sluice"
BENCH_ROWS=${BENCH_ROWS:-1000000}
BENCH_BATCH=${BENCH_BATCH:-1000}
BENCH_LOOP_ROWS=${BENCH_LOOP_ROWS:-200000}
BENCH_LOOP_STEP=${BENCH_LOOP_STEP:-50000}
BENCH_MEM_ROWS=${BENCH_MEM_ROWS-5000000}
BENCH_PGVERSION=${BENCH_PGVERSION:-15}
BENCH_PG_OPTS=${BENCH_PG_OPTS-fsync=on}
export BENCH_ROWS BENCH_BATCH BENCH_LOOP_ROWS BENCH_LOOP_STEP BENCH_MEM_ROWS BENCH_PGVERSION BENCH_PG_OPTS

die() {
    echo "bench_core.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------------
# Outside the server: tools, the release build, then this script again inside pg_virtualenv.

ensure_tools() {
    command -v pg_virtualenv >/dev/null ||
        die "pg_virtualenv is missing (hint: bash tests/run.sh installs what the build and PostgreSQL need)"
    command -v meson >/dev/null || die "meson is missing (hint: bash tests/run.sh installs it)"
    need_time
}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

outer() {
    [[ $(id -u) == 0 ]] || die "run it as root (pg_virtualenv needs to create a cluster)"
    ensure_tools
    build_release
    # shellcheck disable=SC2086 # BENCH_PG_OPTS: space-separated GUC=VALUE words
    pg_inner "${BASH_SOURCE[0]}" $BENCH_PG_OPTS
}

# ---------------------------------------------------------------------------------------------------
# Inside the server.

UPDATE_SET="UPDATE users SET full_name = first_name || ' ' || last_name"

q() {
    psql -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

# fresh_table ROWS: users recreated with ROWS rows, full_name empty, statistics fresh, no dirty pages
# left over from the last method, and no bookkeeping from the last sluice run.
fresh_table() {
    q "drop table if exists users, sluice_progress, sluice_jobs, sluice_undo, sluice_ranges, sluice_meta" || exit 1
    q "create table users (id bigint primary key, first_name text, last_name text, full_name text)" || exit 1
    q "insert into users (id, first_name, last_name)
       select g, 'first_' || g, 'last_' || g from generate_series(1, $1) g" || exit 1
    q "vacuum analyze users" || exit 1
    q "checkpoint" || exit 1
}

# check_filled ROWS WHAT: exactly ROWS rows got their full_name, each the right one; else stop.
check_filled() {
    local got
    got=$(q "select count(*) filter (where full_name = first_name || ' ' || last_name)
                 || ' ' || count(*) filter (where full_name is not null) from users") || exit 1
    [[ $got == "$1 $1" ]] || die "$2 left the table wrong: expected $1 rows filled, got (right, filled) $got"
}

# record NAME ROWS SECONDS
declare -a NAMES=()
declare -A ROWS=() SECS=()
record() {
    NAMES+=("$1")
    ROWS[$1]=$2
    SECS[$1]=$3
    printf '#   %-40s %9d rows %10.3f s\n' "$1" "$2" "$3"
}

bench_plain() {
    local t0 t1
    fresh_table "$BENCH_ROWS"
    t0=$(now)
    q "$UPDATE_SET" || exit 1
    t1=$(now)
    check_filled "$BENCH_ROWS" "the plain UPDATE"
    record "plain UPDATE (one statement)" "$BENCH_ROWS" "$(secs "$t0" "$t1")"
}

# The hand-written alternative to sluice: find each batch's last key with the index (as sluice's
# boundary query does), update the range, COMMIT. CALL outside a transaction block may COMMIT inside.
bench_procedure() {
    local t0 t1
    fresh_table "$BENCH_ROWS"
    q "create or replace procedure bench_walk(batch int) language plpgsql as \$\$
       declare
           last_id bigint := -9223372036854775808;
           hi bigint;
       begin
           loop
               select max(id) into hi from (select id from users where id > last_id order by id limit batch) s;
               exit when hi is null;
               update users set full_name = first_name || ' ' || last_name where id > last_id and id <= hi;
               commit;
               last_id := hi;
           end loop;
       end \$\$" || exit 1
    t0=$(now)
    q "call bench_walk($BENCH_BATCH)" || exit 1
    t1=$(now)
    check_filled "$BENCH_ROWS" "the procedure"
    record "PL/pgSQL procedure, COMMIT per batch" "$BENCH_ROWS" "$(secs "$t0" "$t1")"
}

# client_loop offset|keyset: an application's loop through one psql session (a coprocess: every SELECT
# is a round trip whose answer the loop waits for, as a driver's would), over BENCH_LOOP_ROWS rows.
client_loop() {
    local mode=$1 done_rows=0 last_id=-9223372036854775808 line ids n t0 tmark now_t wfd
    local mark=$BENCH_LOOP_STEP step_from=0
    fresh_table "$BENCH_ROWS"
    coproc PQ { psql -XAtq -v ON_ERROR_STOP=1 2>&1; }
    # Connected before the clock starts, as an application's pool would be.
    printf '%s\n' "SELECT 'ready';" >&"${PQ[1]}"
    IFS= read -r line <&"${PQ[0]}"
    [[ $line == ready ]] || die "$mode loop: psql said: $line"
    t0=$(now)
    tmark=$t0
    while ((done_rows < BENCH_LOOP_ROWS)); do
        n=$((BENCH_LOOP_ROWS - done_rows < BENCH_BATCH ? BENCH_LOOP_ROWS - done_rows : BENCH_BATCH))
        if [[ $mode == offset ]]; then
            printf '%s\n' "BEGIN;" "SELECT coalesce(string_agg(id::text, ','), '') FROM (SELECT id FROM users ORDER BY id LIMIT $n OFFSET $done_rows) s;" >&"${PQ[1]}"
        else
            printf '%s\n' "BEGIN;" "SELECT coalesce(string_agg(id::text, ','), '') FROM (SELECT id FROM users WHERE id > $last_id ORDER BY id LIMIT $n) s;" >&"${PQ[1]}"
        fi
        IFS= read -r ids <&"${PQ[0]}" || die "psql ended early"
        [[ $ids =~ ^[0-9,]*$ ]] || die "$mode loop: psql said: $ids"
        [[ -n $ids ]] || die "$mode loop: ran out of rows at $done_rows"
        printf '%s\n' "$UPDATE_SET WHERE id = ANY('{$ids}'::bigint[]);" "COMMIT;" >&"${PQ[1]}"
        line=${ids//[^,]/}
        done_rows=$((done_rows + ${#line} + 1))
        last_id=${ids##*,}
        if [[ $mode == offset ]] && ((done_rows >= mark || done_rows >= BENCH_LOOP_ROWS)); then
            # Wait for the last COMMIT before reading the clock.
            printf '%s\n' "SELECT 'mark';" >&"${PQ[1]}"
            IFS= read -r line <&"${PQ[0]}"
            [[ $line == mark ]] || die "$mode loop: psql said: $line"
            now_t=$(now)
            printf '#     offset loop rows %7d-%-7d %8.3f s  %8.0f rows/s\n' "$((step_from + 1))" "$done_rows" \
                "$(secs "$tmark" "$now_t")" "$(awk -v r=$((done_rows - step_from)) -v s="$(secs "$tmark" "$now_t")" 'BEGIN { print (s > 0 ? r / s : 0) }')"
            tmark=$now_t
            step_from=$done_rows
            mark=$((mark + BENCH_LOOP_STEP))
        fi
    done
    printf '%s\n' "SELECT 'end';" >&"${PQ[1]}"
    IFS= read -r line <&"${PQ[0]}"
    [[ $line == end ]] || die "$mode loop: psql said: $line"
    now_t=$(now)
    wfd=${PQ[1]}
    exec {wfd}>&-
    wait "$PQ_PID" 2>/dev/null
    check_filled "$BENCH_LOOP_ROWS" "the $mode loop"
    if [[ $mode == offset ]]; then
        record "client LIMIT/OFFSET loop (alembic style)" "$BENCH_LOOP_ROWS" "$(secs "$t0" "$now_t")"
    else
        record "client keyset loop" "$BENCH_LOOP_ROWS" "$(secs "$t0" "$now_t")"
    fi
}

# run_sluice ROWS: sluice up on a fresh table of ROWS rows; sets SLUICE_SECS and SLUICE_RSS_KB.
run_sluice() {
    local rows=$1 work t0 t1 rc
    fresh_table "$rows"
    work=$(mktemp -d /tmp/bench_core.XXXXXX)
    mkdir -p "$work/jobs"
    cat >"$work/jobs/0001_full_name.sql" <<EOF
-- sluice:table users
-- sluice:batch $BENCH_BATCH
-- sluice:up
$UPDATE_SET WHERE id BETWEEN :lo AND :hi;
EOF
    t0=$(now)
    /usr/bin/time -v -o "$work/time.txt" "$SLUICE" --jobs "$work/jobs" --checkpoints "$work/ckpt" up \
        </dev/null >"$work/out" 2>"$work/err"
    rc=$?
    t1=$(now)
    if ((rc != 0)); then
        tail -n 20 "$work/err" >&2
        die "sluice up exited $rc"
    fi
    check_filled "$rows" "sluice"
    SLUICE_SECS=$(secs "$t0" "$t1")
    SLUICE_RSS_KB=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time.txt")
    # Is a chunk as cheap at the end of the table as at the start? Mean chunk time (runner side, from
    # the checkpoint file) over the first and the last tenth of the chunks.
    SLUICE_FLAT=$(sqlite3 "$work/ckpt/0001_full_name.sluice" "
        WITH c AS (SELECT chunk_no, duration_ms, (SELECT max(chunk_no) FROM chunks) AS n FROM chunks)
        SELECT printf('%.2f ms first tenth, %.2f ms last tenth, ratio %.2f',
                      avg(CASE WHEN chunk_no <= n / 10 THEN duration_ms END),
                      avg(CASE WHEN chunk_no > n - n / 10 THEN duration_ms END),
                      avg(CASE WHEN chunk_no > n - n / 10 THEN duration_ms END) * 1.0 /
                      max(avg(CASE WHEN chunk_no <= n / 10 THEN duration_ms END), 0.001)) FROM c")
    echo "#   sluice chunk time at $rows rows: $SLUICE_FLAT"
    rm -rf "$work"
}

bench_sluice() {
    run_sluice "$BENCH_ROWS"
    RSS_AT[$BENCH_ROWS]=$SLUICE_RSS_KB
    record "sluice up (release build)" "$BENCH_ROWS" "$SLUICE_SECS"
}

declare -A RSS_AT=()
bench_memory() {
    local rows
    for rows in $BENCH_MEM_ROWS; do
        echo "# sluice at $rows rows (peak memory)"
        run_sluice "$rows"
        RSS_AT[$rows]=$SLUICE_RSS_KB
        printf '#   %-40s %9d rows %10.3f s  peak RSS %d kB\n' "sluice up" "$rows" "$SLUICE_SECS" "$SLUICE_RSS_KB"
    done
}

report() {
    local name s_rate rate ratio proc_ratio="" rows
    local sluice="sluice up (release build)"
    s_rate=$(awk -v r="${ROWS[$sluice]}" -v s="${SECS[$sluice]}" 'BEGIN { print r / s }')
    echo
    echo "== results: batch $BENCH_BATCH; sluice/x compares time per row (the loops cover $BENCH_LOOP_ROWS rows)"
    printf '%-42s %9s %10s %11s %9s\n' method rows seconds rows/s sluice/x
    for name in "${NAMES[@]}"; do
        rate=$(awk -v r="${ROWS[$name]}" -v s="${SECS[$name]}" 'BEGIN { print r / s }')
        ratio=$(awk -v a="$rate" -v b="$s_rate" 'BEGIN { printf "%.2f", a / b }')
        [[ $name == PL/pgSQL* ]] && proc_ratio=$ratio
        printf '%-42s %9d %10.3f %11.0f %9s\n' "$name" "${ROWS[$name]}" "${SECS[$name]}" "$rate" "$ratio"
    done
    if [[ -n $proc_ratio ]]; then
        if awk -v r="$proc_ratio" 'BEGIN { exit !(r <= 1.2) }'; then
            echo "target (issue 2): sluice within 1.2x of the procedure: met ($proc_ratio)"
        else
            echo "target (issue 2): sluice within 1.2x of the procedure: NOT met ($proc_ratio)"
        fi
    fi
    echo
    echo "== sluice peak memory (max RSS, /usr/bin/time -v)"
    for rows in $(printf '%s\n' "${!RSS_AT[@]}" | sort -n); do
        printf '%10d rows  %8d kB  (%.1f MB)\n' "$rows" "${RSS_AT[$rows]}" "$(awk -v k="${RSS_AT[$rows]}" 'BEGIN { print k / 1024 }')"
    done
}

inner() {
    unset SLUICE_DB DATABASE_URL
    export PGOPTIONS="-c client_min_messages=warning"
    createdb bench || die "createdb bench failed"
    export PGDATABASE=bench
    echo "# postgresql $(q 'show server_version'); fsync=$(q 'show fsync'), synchronous_commit=$(q 'show synchronous_commit'), shared_buffers=$(q 'show shared_buffers'), max_wal_size=$(q 'show max_wal_size')"
    echo "# sluice: $SLUICE ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $(nproc) cpus"
    echo "# rows $BENCH_ROWS, batch $BENCH_BATCH, client loops $BENCH_LOOP_ROWS rows"
    echo "# 1. plain UPDATE"
    bench_plain
    echo "# 2. PL/pgSQL procedure"
    bench_procedure
    echo "# 3. client loops"
    client_loop offset
    client_loop keyset
    echo "# 4. sluice"
    bench_sluice
    bench_memory
    report
}

if [[ ${1:-} == --inner ]]; then
    inner
else
    outer
fi
