#!/usr/bin/env bash
# bench_workers.sh: times sluice with 1 and 2 workers against one UPDATE, one and two batch procedures and a LIMIT/OFFSET loop; prints figures, never judges.
#
# Usage, as root, from anywhere:  bash tests/bench/bench_workers.sh
#
# It builds its own release binary (build-bench-workers/: --buildtype=release, no sanitizers), provisions
# a throw-away PostgreSQL with pg_virtualenv (like tests/run.sh; dropped at the end) and, each time on a
# fresh users(id bigint primary key, first_name, last_name, full_name) table (recreated, VACUUM ANALYZE,
# CHECKPOINT), runs `UPDATE users SET full_name = first_name || ' ' || last_name` as:
#   1. one plain UPDATE of the whole table;
#   2. a PL/pgSQL procedure walking the key, COMMIT per batch (bounds found the way sluice finds them);
#   3. two such procedures at once, from two psql sessions, each on one half of the key range;
#   4. a LIMIT/OFFSET client loop (the way alembic data migrations are usually written) over the first
#      BENCH_LOOP_ROWS rows through one psql session, BEGIN/SELECT/UPDATE/COMMIT per batch, timed per
#      tenth of its rows (its curve: last tenth / first tenth);
#   5. sluice up with `-- sluice:workers 1`, `-- sluice:workers 2` and each of BENCH_WORKERS_EXTRA, under
#      /usr/bin/time -v for peak RSS and sluice's own CPU time;
#   6. sluice up with `-- sluice:workers 2` at each of BENCH_MEM_ROWS rows, for peak RSS.
# It prints a table of seconds and rows/s (with the cores busy, cores in iowait and the load average as
# each method started: other work on the machine shows there), sluice's memory and chunk times, then the
# ratios issue 6 names, each beside its target:
#   sluice 1 worker / PL/pgSQL procedure              <= 1.0
#   sluice 2 workers / one UPDATE                     <= 0.7   (and 2 workers / two parallel procedures)
#   chunk time, last tenth of the key range / first   <= 1.2   (with the LIMIT/OFFSET loop's curve)
#   peak RSS of sluice, 2 workers, at BENCH_MEM_ROWS  <= 32 MiB
# Chunk times come from sluice_progress (duration_ms: from the chunk's BEGIN to its bookkeeping row,
# server side) and from the checkpoint file (the runner's whole chunk, COMMIT included), the chunks
# ordered by their key, not by chunk_no, as several workers take ranges in any order. With several
# workers the last tenth of the key range tends to run when some workers have run out of ranges: fewer
# chunks in flight, each faster; the 1-worker figure is the one that isolates the cost of position.
# With BENCH_WAITS=1 a psql session samples pg_stat_activity every 0.2 s during each method and prints
# the average number of sessions by wait event (CPU = running, no wait event; client:idle or
# client:idle-in-transaction = waiting for its client between statements): where the time goes.
# It is not part of the test command and never passes or fails on time; it exits non-zero only when it
# could not measure (build failed, no server, a method failed or did not update every row it should
# have); the other methods still run and print.
#
# Environment (defaults in brackets); a quick smoke run:
#   BENCH_ROWS=20000 BENCH_LOOP_ROWS=5000 BENCH_MEM_ROWS=40000 bash tests/bench/bench_workers.sh
#   BENCH_ROWS           rows in the table for methods 1, 2, 3 and 5 [1000000]
#   BENCH_BATCH          rows per batch for every batched method [1000]
#   BENCH_LOOP_ROWS      rows the LIMIT/OFFSET loop updates [200000]
#   BENCH_MEM_ROWS       table sizes (space-separated) to measure the peak RSS of sluice with 2 workers
#                        at; empty for none [10000000]
#   BENCH_WORKERS_EXTRA  further worker counts (space-separated) to run sluice with at BENCH_ROWS, e.g. "4" []
#   BENCH_WAITS          1: sample wait events during each method (see above) [1]
#   BENCH_PGVERSION      PostgreSQL major version [15]
#   BENCH_PG_OPTS        postgresql.conf settings, space-separated guc=value [fsync=on]: pg_virtualenv turns
#                        fsync off, and sluice fsyncs its checkpoint file per chunk, so the comparison is
#                        only fair (and production-like) with the server's fsync on too
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$ROOT/build-bench-workers"
SLUICE="$BUILD/sluice"
BENCH_ROWS=${BENCH_ROWS:-1000000}
BENCH_BATCH=${BENCH_BATCH:-1000}
BENCH_LOOP_ROWS=${BENCH_LOOP_ROWS:-200000}
BENCH_MEM_ROWS=${BENCH_MEM_ROWS-10000000}
BENCH_WORKERS_EXTRA=${BENCH_WORKERS_EXTRA:-}
BENCH_WAITS=${BENCH_WAITS:-1}
BENCH_PGVERSION=${BENCH_PGVERSION:-15}
BENCH_PG_OPTS=${BENCH_PG_OPTS-fsync=on}
export BENCH_ROWS BENCH_BATCH BENCH_LOOP_ROWS BENCH_MEM_ROWS BENCH_WORKERS_EXTRA BENCH_WAITS BENCH_PGVERSION BENCH_PG_OPTS

die() {
    echo "bench_workers.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------------
# Outside the server: tools, the release build, then this script again inside pg_virtualenv.

ensure_tools() {
    command -v pg_virtualenv >/dev/null ||
        die "pg_virtualenv is missing (hint: bash tests/run.sh installs what the build and PostgreSQL need)"
    command -v meson >/dev/null || die "meson is missing (hint: bash tests/run.sh installs it)"
    command -v sqlite3 >/dev/null || die "sqlite3 is missing (hint: apt-get install -y sqlite3)"
    need_time
}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_knobs() {
    local name value
    for name in BENCH_ROWS BENCH_BATCH BENCH_LOOP_ROWS; do
        value=${!name}
        [[ $value =~ ^[1-9][0-9]*$ ]] || die "$name=$value: expected a whole number above 0"
    done
    for value in $BENCH_MEM_ROWS; do
        [[ $value =~ ^[1-9][0-9]*$ ]] || die "BENCH_MEM_ROWS: '$value': expected whole numbers above 0, space-separated"
    done
    for value in $BENCH_WORKERS_EXTRA; do
        if ! [[ $value =~ ^[1-9][0-9]*$ ]] || ((value > 64)); then
            die "BENCH_WORKERS_EXTRA: '$value': expected worker counts from 1 to 64, space-separated"
        fi
    done
    ((BENCH_LOOP_ROWS <= BENCH_ROWS)) || die "BENCH_LOOP_ROWS=$BENCH_LOOP_ROWS: expected at most BENCH_ROWS ($BENCH_ROWS)"
    [[ $BENCH_WAITS == [01] ]] || die "BENCH_WAITS=$BENCH_WAITS: expected 0 or 1"
}

outer() {
    [[ $(id -u) == 0 ]] || die "run it as root (pg_virtualenv needs to create a cluster)"
    check_knobs
    ensure_tools
    build_release
    # shellcheck disable=SC2086 # BENCH_PG_OPTS: space-separated GUC=VALUE words
    pg_inner "${BASH_SOURCE[0]}" $BENCH_PG_OPTS
}

# ---------------------------------------------------------------------------------------------------
# Inside the server: helpers.

UPDATE_SET="UPDATE users SET full_name = first_name || ' ' || last_name"
JOB=0001_full_name
FAILED=0

q() {
    psql -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

# fail WHAT REASON: a method that could not be measured; the run goes on and exits 1 at the end.
fail() {
    echo "#   NOT MEASURED: $1: $2" >&2
    FAILED=1
    return 1
}

# fresh_table ROWS: users recreated with ROWS rows, full_name empty, statistics fresh, no dirty pages
# left over from the last method, and no bookkeeping from the last sluice run.
fresh_table() {
    local t0
    t0=$(now)
    q "drop table if exists users, sluice_progress, sluice_jobs, sluice_undo, sluice_ranges, sluice_meta" || exit 1
    q "create table users (id bigint, first_name text, last_name text, full_name text)" || exit 1
    q "insert into users (id, first_name, last_name)
       select g, 'first_' || g, 'last_' || g from generate_series(1, $1) g" || exit 1
    q "alter table users add primary key (id)" || exit 1
    q "vacuum analyze users" || exit 1
    q "checkpoint" || exit 1
    echo "#   (table of $1 rows ready in $(secs "$t0" "$(now)") s)"
}

# check_filled ROWS WHAT: exactly ROWS rows got their full_name, each the right one.
check_filled() {
    local got
    got=$(q "select count(*) filter (where full_name = first_name || ' ' || last_name)
                 || ' ' || count(*) filter (where full_name is not null) from users") ||
        { fail "$2" "could not count the rows it filled"; return 1; }
    [[ $got == "$1 $1" ]] || { fail "$2" "left the table wrong: expected $1 rows filled, got (right, filled) $got"; return 1; }
}

# cpu_now: "busy iowait total" jiffies over all cpus, from /proc/stat.
cpu_now() {
    awk '/^cpu / { t = 0; for (i = 2; i <= 9 && i <= NF; i++) t += $i; print t - $5 - $6, $6, t; exit }' /proc/stat
}

# The clock and the machine around one method: meter_start, then meter_stop NAME ROWS, which records it.
declare -a NAMES=()
declare -A ROWS=() SECS=() CORES=() IOWAIT=() LOAD=() WAITS=()
meter_start() {
    M_LOAD=$(cut -d' ' -f1 /proc/loadavg)
    M_CPU=$(cpu_now)
    waits_start
    M_T0=$(now)
}

meter_stop() {
    local t1 cpu busy iow
    t1=$(now)
    cpu=$(cpu_now)
    waits_stop "$1"
    NAMES+=("$1")
    ROWS[$1]=$2
    SECS[$1]=$(secs "$M_T0" "$t1")
    read -r busy iow < <(awk -v a="$M_CPU" -v b="$cpu" -v n="$(nproc)" 'BEGIN {
        split(a, x, " "); split(b, y, " "); t = (y[3] - x[3]) / n; if (t <= 0) t = 1
        printf "%.2f %.2f\n", (y[1] - x[1]) / t, (y[2] - x[2]) / t }')
    CORES[$1]=$busy
    IOWAIT[$1]=$iow
    LOAD[$1]=$M_LOAD
    printf '#   %-36s %9d rows %10.3f s  (%s cores busy, %s in iowait; load %s at start)\n' "$1" "$2" "${SECS[$1]}" \
        "${CORES[$1]}" "${IOWAIT[$1]}" "$M_LOAD"
    [[ -n ${WAITS[$1]:-} ]] && echo "#     average sessions by wait: ${WAITS[$1]}"
    return 0
}

# waits_start / waits_stop NAME: with BENCH_WAITS=1, a psql session sampling the other sessions' state
# every 0.2 s; WAITS[NAME] gets the average number of sessions in each: a wait event, CPU (active, no
# wait event) or client:STATE (not running a statement: waiting for its client), e.g. client:idle-in-transaction.
waits_start() {
    W_PID=""
    [[ $BENCH_WAITS == 1 ]] || return 0
    W_FILE=$(mktemp /tmp/bench_workers_waits.XXXXXX)
    printf '%s\n' "SELECT '=tick' UNION ALL SELECT CASE WHEN state = 'active'
            THEN coalesce(wait_event_type || ':' || wait_event, 'CPU') ELSE 'client:' || replace(state, ' ', '-') END
        FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
        AND datname = current_database()" '\watch 0.2' | psql -XAtq >"$W_FILE" 2>/dev/null &
    W_PID=$!
}

waits_stop() {
    [[ -n $W_PID ]] || return 0
    kill "$W_PID" 2>/dev/null
    wait "$W_PID" 2>/dev/null
    WAITS[$1]=$(awk '$0 == "=tick" { n++; next } NF { c[$0]++ }
        END { if (!n) exit; for (k in c) printf "%.2f %s\n", c[k] / n, k }' "$W_FILE" |
        sort -rn | head -n 6 | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1 } END { if (NR) print "" }')
    rm -f "$W_FILE"
}

# ---------------------------------------------------------------------------------------------------
# The methods.

bench_plain() {
    fresh_table "$BENCH_ROWS"
    meter_start
    q "$UPDATE_SET" || { waits_stop x; fail "plain UPDATE" "the statement failed"; return; }
    meter_stop "plain UPDATE (one statement)" "$BENCH_ROWS"
    check_filled "$BENCH_ROWS" "the plain UPDATE"
}

# The hand-written alternative to sluice (lib.sh's keyset_procedure_sql, as bench_core.sh's).
create_procedure() {
    q "$(keyset_procedure_sql)" || exit 1
}

bench_procedure() {
    fresh_table "$BENCH_ROWS"
    create_procedure
    meter_start
    q "call bench_walk($BENCH_BATCH, -9223372036854775808, 9223372036854775807)" ||
        { waits_stop x; fail "procedure" "the CALL failed"; return; }
    meter_stop "PL/pgSQL procedure" "$BENCH_ROWS"
    check_filled "$BENCH_ROWS" "the procedure"
}

# Two sessions, each walking one half of the key range (split at the middle key, found before the clock).
bench_two_procedures() {
    local mid p1 p2 rc1 rc2
    fresh_table "$BENCH_ROWS"
    create_procedure
    mid=$(q "select (min(id) + max(id)) / 2 from users") || exit 1
    meter_start
    q "call bench_walk($BENCH_BATCH, -9223372036854775808, $mid)" &
    p1=$!
    q "call bench_walk($BENCH_BATCH, $mid, 9223372036854775807)" &
    p2=$!
    wait "$p1"
    rc1=$?
    wait "$p2"
    rc2=$?
    ((rc1 == 0 && rc2 == 0)) || { waits_stop x; fail "two procedures" "a CALL failed (exit $rc1, $rc2)"; return; }
    meter_stop "two procedures in parallel" "$BENCH_ROWS"
    check_filled "$BENCH_ROWS" "the two procedures"
}

# offset_loop: an application's LIMIT/OFFSET loop through one psql session (a coprocess: every SELECT is
# a round trip whose answer the loop waits for, as a driver's would), over BENCH_LOOP_ROWS rows, timed per
# tenth of them; OFFSET_CURVE gets the last tenth's time over the first's.
offset_loop() {
    local done_rows=0 line ids n tmark now_t wfd tenth=1 mark t_first="" t_last="" step_from=0
    OFFSET_CURVE=""
    fresh_table "$BENCH_ROWS"
    coproc PQ { psql -XAtq -v ON_ERROR_STOP=1 2>&1; }
    # Connected before the clock starts, as an application's pool would be.
    printf '%s\n' "SELECT 'ready';" >&"${PQ[1]}"
    IFS= read -r line <&"${PQ[0]}"
    [[ $line == ready ]] || die "offset loop: psql said: $line"
    mark=$(((BENCH_LOOP_ROWS + 9) / 10))
    meter_start
    tmark=$M_T0
    while ((done_rows < BENCH_LOOP_ROWS)); do
        n=$((BENCH_LOOP_ROWS - done_rows < BENCH_BATCH ? BENCH_LOOP_ROWS - done_rows : BENCH_BATCH))
        # Never past a tenth's end, so that each tenth covers the rows it names.
        ((done_rows + n > mark)) && n=$((mark - done_rows))
        printf '%s\n' "BEGIN;" "SELECT coalesce(string_agg(id::text, ','), '') FROM (SELECT id FROM users ORDER BY id LIMIT $n OFFSET $done_rows) s;" >&"${PQ[1]}"
        IFS= read -r ids <&"${PQ[0]}" || die "psql ended early"
        [[ $ids =~ ^[0-9,]*$ ]] || die "offset loop: psql said: $ids"
        [[ -n $ids ]] || die "offset loop: ran out of rows at $done_rows"
        printf '%s\n' "$UPDATE_SET WHERE id = ANY('{$ids}'::bigint[]);" "COMMIT;" >&"${PQ[1]}"
        line=${ids//[^,]/}
        done_rows=$((done_rows + ${#line} + 1))
        if ((done_rows >= mark)); then
            # Wait for the last COMMIT before reading the clock.
            printf '%s\n' "SELECT 'mark';" >&"${PQ[1]}"
            IFS= read -r line <&"${PQ[0]}"
            [[ $line == mark ]] || die "offset loop: psql said: $line"
            now_t=$(now)
            printf '#     offset loop tenth %2d, rows %7d-%-7d %8.3f s  %8.0f rows/s\n' "$tenth" "$((step_from + 1))" "$done_rows" \
                "$(secs "$tmark" "$now_t")" "$(awk -v r=$((done_rows - step_from)) -v s="$(secs "$tmark" "$now_t")" 'BEGIN { print (s > 0 ? r / s : 0) }')"
            [[ -z $t_first ]] && t_first=$(secs "$tmark" "$now_t")
            t_last=$(secs "$tmark" "$now_t")
            tmark=$now_t
            step_from=$done_rows
            tenth=$((tenth + 1))
            mark=$((mark + (BENCH_LOOP_ROWS + 9) / 10))
            ((mark > BENCH_LOOP_ROWS)) && mark=$BENCH_LOOP_ROWS
        fi
    done
    meter_stop "LIMIT/OFFSET loop (alembic style)" "$BENCH_LOOP_ROWS"
    wfd=${PQ[1]}
    exec {wfd}>&-
    wait "$PQ_PID" 2>/dev/null
    OFFSET_CURVE=$(awk -v a="$t_first" -v b="$t_last" 'BEGIN { printf "%.2f", b / (a > 0 ? a : 0.001) }')
    echo "#     offset loop curve: last tenth / first tenth = $OFFSET_CURVE"
    check_filled "$BENCH_LOOP_ROWS" "the LIMIT/OFFSET loop"
}

# chunk_tenths WORK: "first last" mean chunk ms over the first and the last tenth of the key range,
# from sluice_progress (server side) and from the checkpoint file (runner side); chunks ordered by
# their last key.
CHUNK_PG=""
CHUNK_CK=""
chunk_tenths() {
    CHUNK_PG=$(q "with c as (select duration_ms d, row_number() over (order by (hi[1])::bigint) rn,
                                     count(*) over () n from sluice_progress where not skipped)
                  select round(avg(d) filter (where rn <= greatest(n / 10, 1)), 2) || ' ' ||
                         round(avg(d) filter (where rn > n - greatest(n / 10, 1)), 2) from c" 2>&1)
    [[ $CHUNK_PG =~ ^[0-9.]+\ [0-9.]+$ ]] || { echo "#     (no chunk times from sluice_progress: $CHUNK_PG)"; CHUNK_PG=""; }
    CHUNK_CK=$(sqlite3 "$1/ckpt/$JOB.sluice" "
        WITH c AS (SELECT duration_ms AS d, row_number() OVER (ORDER BY CAST(json_extract(hi, '\$[0]') AS INTEGER)) AS rn,
                          count(*) OVER () AS n FROM chunks WHERE NOT skipped)
        SELECT printf('%.2f %.2f', avg(CASE WHEN rn <= max(n / 10, 1) THEN d END),
                                   avg(CASE WHEN rn > n - max(n / 10, 1) THEN d END)) FROM c" 2>&1)
    [[ $CHUNK_CK =~ ^[0-9.]+\ [0-9.]+$ ]] || { echo "#     (no chunk times from the checkpoint file: $CHUNK_CK)"; CHUNK_CK=""; }
}

# run_sluice ROWS WORKERS NAME: sluice up on a fresh table of ROWS rows with `workers WORKERS`, recorded
# as NAME, with its peak RSS, CPU time and chunk times.
declare -a SL_NAMES=()
declare -A SL_WORKERS=() SL_RSS=() SL_CPU=() SL_PG=() SL_CK=() SL_CHUNKS=() SL_START=()
run_sluice() {
    local rows=$1 workers=$2 name=$3 work rc
    fresh_table "$rows"
    work=$(mktemp -d /tmp/bench_workers.XXXXXX)
    mkdir -p "$work/jobs"
    cat >"$work/jobs/$JOB.sql" <<EOF
-- sluice:table users
-- sluice:batch $BENCH_BATCH
-- sluice:workers $workers
-- sluice:up
$UPDATE_SET WHERE id BETWEEN :lo AND :hi;
EOF
    meter_start
    /usr/bin/time -v -o "$work/time.txt" "$SLUICE" --jobs "$work/jobs" --checkpoints "$work/ckpt" up \
        </dev/null >"$work/out" 2>"$work/err"
    rc=$?
    if ((rc != 0)); then
        waits_stop x
        sed 's/^/#     sluice: /' "$work/err" | tail -n 8 >&2
        fail "$name" "sluice up exited $rc"
        rm -rf "$work"
        return 1
    fi
    meter_stop "$name" "$rows"
    if ! check_filled "$rows" "$name"; then
        rm -rf "$work"
        return 1
    fi
    SL_NAMES+=("$name")
    SL_WORKERS[$name]=$workers
    SL_RSS[$name]=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time.txt")
    SL_CPU[$name]=$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$work/time.txt")
    SL_CHUNKS[$name]=$(q "select count(*) from sluice_progress")
    # From the start of the command to the first chunk's transaction: connecting, checks, the plan.
    SL_START[$name]=$(q "select round((extract(epoch from min(committed_at)) - $M_T0)::numeric, 3) from sluice_progress")
    chunk_tenths "$work"
    SL_PG[$name]=$CHUNK_PG
    SL_CK[$name]=$CHUNK_CK
    printf '#     peak RSS %d kB, sluice CPU %s s, %s chunks, first chunk after %s s; mean chunk ms first/last tenth: %s (server), %s (runner)\n' \
        "${SL_RSS[$name]}" "${SL_CPU[$name]}" "${SL_CHUNKS[$name]}" "${SL_START[$name]}" "${CHUNK_PG:-?}" "${CHUNK_CK:-?}"
    rm -rf "$work"
}

bench_sluice() {
    local w
    for w in 1 2 $BENCH_WORKERS_EXTRA; do
        echo "# sluice, workers $w"
        run_sluice "$BENCH_ROWS" "$w" "sluice, workers $w"
    done
}

bench_memory() {
    local rows
    for rows in $BENCH_MEM_ROWS; do
        echo "# sluice, workers 2, at $rows rows (peak memory)"
        run_sluice "$rows" 2 "sluice, workers 2, $rows rows"
    done
}

# ---------------------------------------------------------------------------------------------------
# The figures.

# ratio_line LABEL VALUE TARGET [NOTE]: VALUE beside its target (<= TARGET), met or not; never an error.
ratio_line() {
    local verdict="(no target)"
    if [[ -z $2 ]]; then
        verdict="not measured"
    elif [[ -n $3 ]]; then
        if awk -v v="$2" -v t="$3" 'BEGIN { exit !(v <= t) }'; then verdict="met"; else verdict="NOT met"; fi
    fi
    printf '%-58s %9s %9s  %-12s %s' "$1" "${2:--}" "${3:+<= $3}" "$verdict" "${4:-}" | sed 's/ *$//'
    echo
}

# per_row A B: A's time per row over B's, two decimals; empty if either is missing.
per_row() {
    [[ -n ${SECS[$1]:-} && -n ${SECS[$2]:-} ]] || return 0
    awk -v sa="${SECS[$1]}" -v ra="${ROWS[$1]}" -v sb="${SECS[$2]}" -v rb="${ROWS[$2]}" \
        'BEGIN { printf "%.2f", (sa / ra) / (sb > 0 ? sb / rb : 0.001) }'
}

# tenths_ratio "FIRST LAST": LAST / FIRST, two decimals; empty if missing.
tenths_ratio() {
    [[ -n $1 ]] || return 0
    awk -v p="$1" 'BEGIN { split(p, x, " "); printf "%.2f", x[2] / (x[1] > 0 ? x[1] : 0.001) }'
}

report() {
    local name rate rows label
    echo
    echo "== results: batch $BENCH_BATCH, $(nproc) cpus; cores busy / in iowait are the whole machine's, load is the 1-minute average as the method started"
    printf '%-40s %9s %10s %10s %6s %7s %6s\n' method rows seconds rows/s busy iowait load
    for name in "${NAMES[@]}"; do
        rate=$(awk -v r="${ROWS[$name]}" -v s="${SECS[$name]}" 'BEGIN { print (s > 0 ? r / s : 0) }')
        printf '%-40s %9d %10.3f %10.0f %6s %7s %6s\n' "$name" "${ROWS[$name]}" "${SECS[$name]}" "$rate" \
            "${CORES[$name]}" "${IOWAIT[$name]}" "${LOAD[$name]}"
    done
    if ((${#SL_NAMES[@]})); then
        echo
        echo "== sluice: peak RSS (/usr/bin/time -v), its own CPU (user+sys), seconds to its first chunk, mean chunk ms over the first / last tenth of the key range"
        printf '%-40s %7s %8s %7s %7s %7s %15s %15s\n' run workers "RSS kB" "cpu s" chunks "start s" "server ms f/l" "runner ms f/l"
        for name in "${SL_NAMES[@]}"; do
            printf '%-40s %7s %8s %7s %7s %7s %15s %15s\n' "$name" "${SL_WORKERS[$name]}" "${SL_RSS[$name]}" "${SL_CPU[$name]}" \
                "${SL_CHUNKS[$name]}" "${SL_START[$name]}" "${SL_PG[$name]:-?}" "${SL_CK[$name]:-?}"
        done
    fi
    if [[ $BENCH_WAITS == 1 ]]; then
        echo
        echo "== average sessions by wait event (pg_stat_activity every 0.2 s; CPU = running, no wait event; client:STATE = waiting for its client)"
        for name in "${NAMES[@]}"; do
            printf '%-40s %s\n' "$name" "${WAITS[$name]:--}"
        done
    fi
    echo
    echo "== ratios of time per row (below 1: the first is faster), targets from issue 6; figures only, never a failure"
    printf '%-58s %9s %9s  %s\n' ratio value target verdict
    ratio_line "sluice 1 worker / PL/pgSQL procedure" "$(per_row "sluice, workers 1" "PL/pgSQL procedure")" 1.0
    ratio_line "sluice 2 workers / one UPDATE" "$(per_row "sluice, workers 2" "plain UPDATE (one statement)")" 0.7
    ratio_line "sluice 2 workers / two parallel procedures" "$(per_row "sluice, workers 2" "two procedures in parallel")" ""
    ratio_line "sluice 2 workers / sluice 1 worker" "$(per_row "sluice, workers 2" "sluice, workers 1")" ""
    for name in $BENCH_WORKERS_EXTRA; do
        ratio_line "sluice $name workers / one UPDATE" "$(per_row "sluice, workers $name" "plain UPDATE (one statement)")" ""
    done
    for name in "${SL_NAMES[@]}"; do
        label="chunk time last/first tenth, $name"
        ratio_line "${label/, sluice/}" "$(tenths_ratio "${SL_PG[$name]}")" 1.2 \
            "runner side $(tenths_ratio "${SL_CK[$name]}"); LIMIT/OFFSET loop ${OFFSET_CURVE:-?}"
    done
    ((${#SL_NAMES[@]} > 1)) &&
        echo "(with several workers the last tenth runs with fewer chunks in flight; workers 1 isolates position)"
    for rows in $BENCH_MEM_ROWS; do
        name="sluice, workers 2, $rows rows"
        ratio_line "peak RSS MiB, sluice 2 workers, $rows rows" \
            "$([[ -n ${SL_RSS[$name]:-} ]] && awk -v k="${SL_RSS[$name]}" 'BEGIN { printf "%.1f", k / 1024 }')" 32
    done
}

inner() {
    unset SLUICE_DB DATABASE_URL
    export PGOPTIONS="-c client_min_messages=warning"
    createdb bench || die "createdb bench failed"
    export PGDATABASE=bench
    echo "# postgresql $(q 'show server_version'); fsync=$(q 'show fsync'), synchronous_commit=$(q 'show synchronous_commit'), shared_buffers=$(q 'show shared_buffers'), max_wal_size=$(q 'show max_wal_size')"
    echo "# sluice: $SLUICE ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $(nproc) cpus; $(uptime)"
    echo "# rows $BENCH_ROWS, batch $BENCH_BATCH, LIMIT/OFFSET loop $BENCH_LOOP_ROWS rows, memory at ${BENCH_MEM_ROWS:-(none)} rows"
    echo "# 1. plain UPDATE"
    bench_plain
    echo "# 2. PL/pgSQL procedure"
    bench_procedure
    echo "# 3. two procedures, one per half of the key range"
    bench_two_procedures
    echo "# 4. LIMIT/OFFSET loop"
    offset_loop
    echo "# 5. sluice"
    bench_sluice
    bench_memory
    report
    echo
    echo "# finished: $(uptime)"
    if ((FAILED)); then
        echo "bench_workers.sh: some methods could not be measured (NOT MEASURED above)" >&2
        exit 1
    fi
}

if [[ ${1:-} == --inner ]]; then
    inner
else
    outer
fi
