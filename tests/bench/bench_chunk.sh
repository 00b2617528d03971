#!/usr/bin/env bash
# bench_chunk.sh: where a chunk's time goes on PostgreSQL: each statement's server time per chunk (pg_stat_statements) beside the chunk's wall-clock time, for up with and without a way back and for down; prints figures, never judges.
#
# Usage, as root, from anywhere:  bash tests/bench/bench_chunk.sh
#
# It builds the release binary (build-bench/, as bench_speed.sh), provisions a throw-away PostgreSQL
# with pg_virtualenv (fsync on, pg_stat_statements loaded, planning tracked; dropped at the end), and
# runs BENCH_RUNS rounds, each on a fresh users table of BENCH_ROWS rows (bench_speed.sh's, from
# lib.sh), of `UPDATE users SET full_name = first_name || ' ' || last_name`, batch 1000, one worker:
#    1. sluice up, no way back;
#    2. sluice up, `undo snapshot(full_name)`; then 3. its down;
#    4. sluice up, a `-- sluice:down` section (full_name = NULL); then 5. its down.
# Each up is checked to have filled every row right, each down to have left the table's md5 what it
# was before the up. Before each sluice run the statistics are reset; after it, each statement's calls,
# execution and planning time are read (the runner's and its lease keeper's sessions, the only ones).
#
# For each run: its wall-clock milliseconds per chunk (sluice from process start to exit over the
# chunks it committed or undid) and sluice's own CPU per chunk (/usr/bin/time, user+sys); then, over
# all rounds, each statement's calls, execution and planning time per chunk and its share of the wall
# time, the statements' sum, and the rest: what no statement's own time holds (the commits' WAL, the
# protocol's messages, each round trip, sluice between an answer and its next batch, start and end).
# Statements under 1 % of the wall time are summed on one line. On a 2-core machine with the server on
# it, the rounds' own figures move by a tenth or more; the medians and sums are what to read.
#
# Environment (defaults in brackets); a quick smoke run:
#   BENCH_ROWS=20000 BENCH_RUNS=1 bash tests/bench/bench_chunk.sh
#   BENCH_ROWS       rows in the table [1000000]
#   BENCH_RUNS       rounds [3]
#   BENCH_PGVERSION  PostgreSQL major version [15]
#   BENCH_PG_OPTS    further postgresql.conf settings, space-separated guc=value [fsync=on]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$ROOT/build-bench"
SLUICE="$BUILD/sluice"
BENCH_ROWS=${BENCH_ROWS:-1000000}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_PGVERSION=${BENCH_PGVERSION:-15}
BENCH_PG_OPTS=${BENCH_PG_OPTS-fsync=on}
export BENCH_ROWS BENCH_RUNS BENCH_PGVERSION BENCH_PG_OPTS

die() {
    echo "bench_chunk.sh: $*" >&2
    exit 1
}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

outer() {
    [[ $(id -u) == 0 ]] || die "run it as root (pg_virtualenv needs to create a cluster)"
    [[ $BENCH_ROWS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROWS=$BENCH_ROWS: expected a whole number above 0"
    [[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS=$BENCH_RUNS: expected a whole number above 0"
    command -v pg_virtualenv >/dev/null ||
        die "pg_virtualenv is missing (hint: bash tests/run.sh installs what the build and PostgreSQL need)"
    command -v meson >/dev/null || die "meson is missing (hint: bash tests/run.sh installs it)"
    need_time
    build_release
    # shellcheck disable=SC2086 # BENCH_PG_OPTS: space-separated GUC=VALUE words
    pg_inner "${BASH_SOURCE[0]}" shared_preload_libraries=pg_stat_statements pg_stat_statements.track_planning=on \
        $BENCH_PG_OPTS
}

# ---------------------------------------------------------------------------------------------------
# Inside the server.

# shellcheck disable=SC2034 # read by lib.sh's users_job
UPDATE_SET="UPDATE users SET full_name = first_name || ' ' || last_name"
JOB=0001_full_name
FAILED=0
IDS=(up snap_up snap_down ds_up ds_down)
declare -A LABEL=(
    [up]="up, no way back"
    [snap_up]="up, snapshot(full_name)"
    [snap_down]="down, snapshot(full_name)"
    [ds_up]="up, down section"
    [ds_down]="down, down section"
)
# per run: WALL_MS[id,round] CPU_US[id,round] CHUNKS[id,round]; per statement, summed over the rounds:
# CALLS[id,key] EXEC[id,key] PLAN[id,key] and TEXT[key], keyed by the md5 of the statement's text (its
# queryid names the tables' oids, new each round)
declare -A WALL_MS=() CPU_US=() CHUNKS=() CALLS=() EXEC=() PLAN=() TEXT=() SEEN=()

q() {
    PGOPTIONS="-c client_min_messages=warning" psql -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

fail() {
    echo "#   WRONG or NOT MEASURED: ${LABEL[$1]}: $2" >&2
    FAILED=1
    return 1
}

# timed ID ROUND DIR CHUNKS ARGS...: sluice ARGS over DIR's job, statistics reset before and read after;
# the run's figures kept under ID for ROUND, over CHUNKS chunks (those of the checkpoint file when empty).
timed() {
    local id=$1 round=$2 dir=$3 chunks=$4 t0 t1 rc key calls exec plan text
    shift 4
    q "select pg_stat_statements_reset()" >/dev/null || die "cannot reset pg_stat_statements"
    t0=$(now)
    /usr/bin/time -f '%U %S' -o "$dir/time.txt" "$SLUICE" --jobs "$dir/jobs" --checkpoints "$dir/ckpt" "$@" \
        </dev/null >"$dir/out" 2>"$dir/err"
    rc=$?
    t1=$(now)
    if ((rc != 0)); then
        sed 's/^/#     sluice: /' "$dir/err" | tail -n 8 >&2
        fail "$id" "sluice $1 exited $rc"
        return 1
    fi
    [[ -n $chunks ]] || chunks=$(sqlite3 "$dir/ckpt/$JOB.sluice" "SELECT count(*) FROM chunks WHERE NOT skipped")
    ((chunks > 0)) || { fail "$id" "no chunk committed"; return 1; }
    WALL_MS[$id,$round]=$(awk -v a="$t0" -v b="$t1" -v n="$chunks" 'BEGIN { printf "%.3f", (b - a) * 1000 / n }')
    CPU_US[$id,$round]=$(awk -v n="$chunks" 'END { printf "%.0f", ($1 + $2) * 1e6 / n }' "$dir/time.txt")
    CHUNKS[$id,$round]=$chunks
    while IFS=$'\t' read -r key calls exec plan text; do
        CALLS[$id,$key]=$((${CALLS[$id,$key]:-0} + calls))
        EXEC[$id,$key]=$(awk -v a="${EXEC[$id,$key]:-0}" -v b="$exec" 'BEGIN { printf "%.3f", a + b }')
        PLAN[$id,$key]=$(awk -v a="${PLAN[$id,$key]:-0}" -v b="$plan" 'BEGIN { printf "%.3f", a + b }')
        TEXT[$key]=$text
        SEEN[$id]+=" $key"
    done < <(psql -XAtq -F $'\t' -c "select md5(query), calls, total_exec_time, total_plan_time,
                                            left(regexp_replace(query, '\s+', ' ', 'g'), 200)
                                       from pg_stat_statements
                                      where query not like '%pg_stat_statements%'")
    printf '#   %-32s %8.3f ms/chunk   sluice cpu %5d us/chunk   %6d chunks\n' "${LABEL[$id]}" \
        "${WALL_MS[$id,$round]}" "${CPU_US[$id,$round]}" "$chunks"
}

# up_down ROUND UP_ID DOWN_ID UNDO_LINE DOWN_SQL: up, then (with a DOWN_ID) down, checked.
up_down() {
    local round=$1 up_id=$2 down_id=$3 dir before chunks
    pg_fresh
    before=$(pg_md5) || die "could not read the table's md5"
    dir=$(mktemp -d "$WORK/run.XXXXXX") || die "mktemp failed"
    users_job "$dir" 1000 "" "$4" "$5"
    timed "$up_id" "$round" "$dir" "" up || return
    pg_check_filled "$up_id" || return
    if [[ -n $down_id ]]; then
        chunks=${CHUNKS[$up_id,$round]}
        timed "$down_id" "$round" "$dir" "$chunks" down "$JOB" || return
        [[ $(pg_md5) == "$before" ]] ||
            { fail "$down_id" "the table's md5 after down is not the one before up"; return; }
    fi
    rm -rf "$dir"
}

run_round() {
    echo "# round $1 of $BENCH_RUNS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    up_down "$1" up "" "" ""
    up_down "$1" snap_up snap_down "-- sluice:undo snapshot(full_name)" ""
    up_down "$1" ds_up ds_down "" "UPDATE users SET full_name = NULL WHERE id BETWEEN :lo AND :hi;"
}

# report ID: the median wall and CPU per chunk, then each statement's time per chunk over all rounds.
report() {
    local id=$1 round walls=() cpus=() chunks=0 wall cpu key line
    for ((round = 1; round <= BENCH_RUNS; round++)); do
        [[ -n ${WALL_MS[$id,$round]:-} ]] || continue
        walls+=("${WALL_MS[$id,$round]}")
        cpus+=("${CPU_US[$id,$round]}")
        chunks=$((chunks + CHUNKS[$id,$round]))
    done
    if ((chunks == 0)); then
        printf '\n%s: not measured\n' "${LABEL[$id]}"
        return
    fi
    wall=$(median "${walls[@]}")
    cpu=$(median "${cpus[@]}")
    printf '\n%s: %.3f ms a chunk (median of %d rounds), sluice cpu %.0f us a chunk; per chunk over %d chunks:\n' \
        "${LABEL[$id]}" "$wall" "${#walls[@]}" "$cpu" "$chunks"
    printf '  %6s %9s %9s %7s  %s\n' calls exec_ms plan_ms "% wall" statement
    for key in $(tr ' ' '\n' <<<"${SEEN[$id]}" | sort -u); do
        line=$(awk -v c="${CALLS[$id,$key]}" -v e="${EXEC[$id,$key]}" -v p="${PLAN[$id,$key]}" -v n="$chunks" \
            -v w="$wall" 'BEGIN { t = (e + p) / n; k = c / n < 0.5 ? "once" : t < w / 100 ? "small" : "big"
                              printf "%.4f\t%s\t%6.2f %9.3f %9.3f %6.1f%%", t, k, c / n, e / n, p / n, 100 * t / w }')
        printf '%s\t%s\n' "$line" "${TEXT[$key]}"
    done | sort -t$'\t' -k1,1gr | while IFS=$'\t' read -r t kind figures text; do
        [[ $kind == big ]] && printf '  %s  %s\n' "$figures" "${text:0:100}"
        echo "$kind $t"
    done | awk -v w="$wall" '
        /^small / { small += $2; n++; sum += $2; next }
        /^once / { once += $2; m++; sum += $2; next }
        /^big / { sum += $2; next }
        { print }
        END {
            if (n) printf "  %6s %19.3f %6.1f%%  %d statements of each chunk, under 1%% of the wall time each\n", "", small, 100 * small / w, n
            if (m) printf "  %6s %19.3f %6.1f%%  %d statements run once or a few times a run (its start and end, the lease)\n", "", once, 100 * once / w, m
            printf "  %6s %19.3f %6.1f%%  every statement: execution and planning\n", "", sum, 100 * sum / w
            printf "  %6s %19.3f %6.1f%%  the rest: commits'"'"' WAL, protocol messages, round trips, sluice between answers\n", "", w - sum, 100 * (w - sum) / w
        }'
}

inner() {
    [[ -x $SLUICE ]] || die "$SLUICE is missing (the build should have made it)"
    WORK=$(mktemp -d /var/tmp/bench_chunk.XXXXXX) || die "mktemp failed"
    trap 'rm -rf "$WORK"' EXIT
    q "create extension if not exists pg_stat_statements" || die "cannot create pg_stat_statements"
    echo "# postgresql $(q 'show server_version'); fsync=$(q 'show fsync'), shared_buffers=$(q 'show shared_buffers'); pg_stat_statements, planning tracked"
    echo "# sluice: $SLUICE ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $(nproc) cpus; $(uptime)"
    echo "# rows $BENCH_ROWS, batch 1000, workers 1, $BENCH_RUNS rounds"
    local round id
    for ((round = 1; round <= BENCH_RUNS; round++)); do
        run_round "$round"
    done
    echo
    echo "== where a chunk's time goes: each statement's server time per chunk (execution, planning), summed"
    echo "   over the rounds and divided by their chunks, beside the median wall time per chunk"
    for id in "${IDS[@]}"; do
        report "$id"
    done
    bench_finished bench_chunk.sh
}

if [[ ${1:-} == --inner ]]; then
    inner
else
    outer
fi
