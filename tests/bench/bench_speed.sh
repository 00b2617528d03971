#!/usr/bin/env bash
# bench_speed.sh: issue 16's table from one run: sluice over the hand-written loops, what undo costs, down over up, and sluice's CPU per chunk; prints figures, never judges.
#
# Usage, as root, from anywhere:  bash tests/bench/bench_speed.sh
#
# It builds the release binary (build-bench/: --buildtype=release, no sanitizers), provisions a
# throw-away PostgreSQL with pg_virtualenv (fsync on; dropped at the end) and makes an SQLite file (WAL
# mode), each with users(id bigint primary key (SQLite: id integer primary key), first_name, last_name,
# full_name) of BENCH_ROWS rows, full_name NULL. Then, BENCH_RUNS rounds, each running every method once
# in this order (A B C, A B C, ...: noise on the machine spreads over every method instead of landing
# on one), each on a fresh table (PostgreSQL: recreated, autovacuum off on it, VACUUM ANALYZE,
# CHECKPOINT, and dropped before the SQLite methods; SQLite: a synced copy of a template file),
# `UPDATE users SET full_name = first_name || ' ' || last_name` as:
#   PostgreSQL
#    1. one UPDATE of the whole table (psql);
#    2. the PL/pgSQL keyset procedure, COMMIT per batch of 1000 (bench_workers.sh's, from lib.sh); then
#       the same procedure reading each batch's rows before and after its UPDATE as a snapshot's two
#       images read them, counted on the server (lib.sh's "reads"): the server's own cost of those reads,
#       with nothing sent to a client or stored, the least a snapshot can add over an up without undo;
#    3. sluice up, workers 1, no way back (also the "up without undo" the undo rows divide by); then the
#       same with `synchronous-commit on` (each chunk's commit waits for the disk, as the procedure's);
#    4. sluice up, workers 2;
#    5. sluice up, workers 1, `undo snapshot(full_name)`; then sluice down;
#    6. sluice up, workers 1, a `-- sluice:down` section (sluice records a hash per row); then down;
#    7. sluice up, workers 2, snapshot; then down with workers 2;
#    8. the same up; then down with the job file's `workers` line changed to 1 (down warns that the
#       file changed), so both downs undo a key split alike (the up's: 4 ranges per worker);
#    9. 5 and 6 again with `VACUUM users; CHECKPOINT` between up and down: the table as each up found
#       it (no dead rows, hint bits set, nothing dirty), where after 5 and 6 down walks the 1,000,000
#       row versions up left dead (as it would before autovacuum came by);
#   10. the hand-written way back: the keyset procedure, then a PL/pgSQL procedure that runs the down
#       section's UPDATE over the same batches (COMMIT per batch, no check of the rows), on the table
#       as the procedure left it (as 6's down finds it);
#   SQLite (WAL; synchronous=FULL for the UPDATE and the Python loop; sluice with its default, NORMAL
#   for the chunks, and with `synchronous-commit on`, FULL as theirs)
#   11. one UPDATE (sqlite3 CLI);
#   12. the Python keyset loop (bench_sqlite.sh's, from lib.sh) and sluice up (then with
#       `synchronous-commit on`), at batch 1000, then 5000.
# The job is `WHERE id BETWEEN :lo AND :hi`, batch 1000 unless named. Every up is checked to have
# filled every row right, and every down to have left the table's md5 (all rows, all columns) what it
# was before the up; a wrong result is reported, its time left out, and the script exits 1 at the end.
#
# Times: sluice, psql and the sqlite3 CLI from process start to exit; the procedure is its psql CALL;
# the Python loop times itself from its first BEGIN (interpreter start and connect left out, as an
# application's would be). The issue's SQLite rows divide the two as they are, which leaves out of
# the loop what it puts into sluice; two more rows divide them alike: sluice from its first chunk's
# start (from its checkpoint file) to its exit over the loop's own time, and each from process start
# to exit (the loop's python3 timed from outside). sluice runs under `/usr/bin/time -f '%U %S'`: its
# CPU (user+sys, 10 ms resolution) over the chunks it committed or undid is its cost per chunk, in
# microseconds. On SQLite the database engine runs inside sluice, so that figure there includes the
# UPDATE's own work.
#
# The machine's busy CPU time over each run (/proc/stat: every process, the server's included, against
# the wall-clock seconds times the CPUs; not for the Python loop, which times itself) says how near it
# came to using the whole machine: where the CPUs are full, more workers cannot go faster.
#
# It prints each method's seconds per round with their median and sluice's CPU per chunk, then the
# summary: each ratio (of medians) beside the median seconds of the two sides it divides, the lowest
# and highest of the rounds' own ratios (how far noise moves it), and its target from issue 16. It never passes or fails on time; it exits non-zero only when it could not
# measure (build failed, no server, a method failed or left a table wrong).
#
# Environment (defaults in brackets); a quick smoke run:
#   BENCH_ROWS=20000 BENCH_RUNS=1 bash tests/bench/bench_speed.sh
#   BENCH_ROWS       rows in each table [1000000]
#   BENCH_RUNS       rounds; each figure is the median of them [3]
#   BENCH_DIR        where the SQLite files, job files and checkpoint files go (a disk, not tmpfs:
#                    sluice and SQLite fsync there) [a new directory under /var/tmp, removed at the end]
#   BENCH_PGVERSION  PostgreSQL major version [15]
#   BENCH_PG_OPTS    postgresql.conf settings, space-separated guc=value [fsync=on]: pg_virtualenv turns
#                    fsync off, and sluice fsyncs its checkpoint file per chunk, so the comparison is
#                    only fair (and production-like) with the server's fsync on too
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$ROOT/build-bench"
SLUICE="$BUILD/sluice"
BENCH_ROWS=${BENCH_ROWS:-1000000}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_DIR=${BENCH_DIR:-}
BENCH_PGVERSION=${BENCH_PGVERSION:-15}
BENCH_PG_OPTS=${BENCH_PG_OPTS-fsync=on}
export BENCH_ROWS BENCH_RUNS BENCH_DIR BENCH_PGVERSION BENCH_PG_OPTS

die() {
    echo "bench_speed.sh: $*" >&2
    exit 1
}

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------------------------------
# Outside the server: tools, the release build, then this script again inside pg_virtualenv.

ensure_tools() {
    local tool
    command -v pg_virtualenv >/dev/null ||
        die "pg_virtualenv is missing (hint: bash tests/run.sh installs what the build and PostgreSQL need)"
    command -v meson >/dev/null || die "meson is missing (hint: bash tests/run.sh installs it)"
    for tool in sqlite3 python3; do
        command -v "$tool" >/dev/null || die "$tool is missing (hint: apt-get install -y $tool)"
    done
    need_time
}

outer() {
    [[ $(id -u) == 0 ]] || die "run it as root (pg_virtualenv needs to create a cluster)"
    [[ $BENCH_ROWS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROWS=$BENCH_ROWS: expected a whole number above 0"
    [[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS=$BENCH_RUNS: expected a whole number above 0"
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

# fail ID REASON: a run that could not be measured or left a table wrong; the rounds go on, and the
# script exits 1 at the end.
fail() {
    echo "#   WRONG or NOT MEASURED: ${LABEL[$1]}: $2" >&2
    FAILED=1
    return 1
}

# The methods, in the order of the tables; LABEL[ID] names one.
IDS=(pg_update pg_proc pg_proc_reads pg_w1 pg_w1_wait pg_w2 pg_snap_up pg_snap_down pg_ds_up pg_ds_down
    pg_w2snap_up pg_w2snap_down pg_w2snap_up_b pg_w2snap_down1 pg_snap_up_v pg_snap_down_v pg_ds_up_v
    pg_ds_down_v pg_proc_up pg_proc_down
    lite_update lite_py1000 lite_pyp1000 lite_sl1000 lite_sl1000_first lite_sl1000_wait
    lite_py5000 lite_pyp5000 lite_sl5000 lite_sl5000_first lite_sl5000_wait)
declare -A LABEL=(
    [pg_update]="PG one UPDATE"
    [pg_proc]="PG PL/pgSQL keyset procedure, batch 1000"
    [pg_proc_reads]="PG the procedure, reading before and after"
    [pg_w1]="PG sluice up, workers 1"
    [pg_w1_wait]="PG sluice up, workers 1, synchronous-commit on"
    [pg_w2]="PG sluice up, workers 2"
    [pg_snap_up]="PG sluice up, snapshot(full_name)"
    [pg_snap_down]="PG sluice down, snapshot(full_name)"
    [pg_ds_up]="PG sluice up, down section"
    [pg_ds_down]="PG sluice down, down section"
    [pg_w2snap_up]="PG sluice up, workers 2, snapshot"
    [pg_w2snap_down]="PG sluice down, workers 2, snapshot"
    [pg_w2snap_up_b]="PG sluice up, workers 2, snapshot (again)"
    [pg_w2snap_down1]="PG sluice down, workers 1, its split"
    [pg_snap_up_v]="PG sluice up, snapshot (again)"
    [pg_snap_down_v]="PG sluice down, snapshot, after VACUUM"
    [pg_ds_up_v]="PG sluice up, down section (again)"
    [pg_ds_down_v]="PG sluice down, down section, after VACUUM"
    [pg_proc_up]="PG PL/pgSQL keyset procedure (again)"
    [pg_proc_down]="PG PL/pgSQL procedure of the down UPDATE"
    [lite_update]="SQLite one UPDATE"
    [lite_py1000]="SQLite Python keyset loop, batch 1000"
    [lite_pyp1000]="SQLite the Python loop, 1000, whole process"
    [lite_sl1000]="SQLite sluice up, batch 1000"
    [lite_sl1000_first]="SQLite sluice up, 1000, from its first chunk"
    [lite_sl1000_wait]="SQLite sluice up, 1000, synchronous-commit on"
    [lite_py5000]="SQLite Python keyset loop, batch 5000"
    [lite_pyp5000]="SQLite the Python loop, 5000, whole process"
    [lite_sl5000]="SQLite sluice up, batch 5000"
    [lite_sl5000_first]="SQLite sluice up, 5000, from its first chunk"
    [lite_sl5000_wait]="SQLite sluice up, 5000, synchronous-commit on"
)

# busy_ticks: the clock ticks every CPU of the machine has spent busy since boot (user, nice, system,
# irq, softirq, steal: /proc/stat's first line), whatever process it ran.
busy_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# clock_start, then clock_stop: RUN_SECS gets the wall-clock seconds between the two, RUN_BUSY the CPU
# seconds the machine was busy meanwhile.
clock_start() {
    CLOCK_BUSY=$(busy_ticks)
    CLOCK_T0=$(now)
}

clock_stop() {
    RUN_SECS=$(secs "$CLOCK_T0" "$(now)")
    RUN_BUSY=$(awk -v a="$CLOCK_BUSY" -v b="$(busy_ticks)" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
}

# record ID ROUND SECONDS [CPU_SECONDS CHUNKS]: one run's figures, printed, kept for the tables. RUN_BUSY,
# when set, is the machine's busy CPU seconds over the same run (taken, and cleared).
declare -A SECS=() CPU_US=() CHUNKS=() BUSY=()
RUN_BUSY=""
# shellcheck disable=SC2034 # CPU_US, CHUNKS and BUSY are read through median_of's nameref
record() {
    local id=$1 round=$2 cpu="" busy=""
    SECS[$id,$round]=$3
    if [[ -n ${4:-} ]]; then
        CHUNKS[$id,$round]=$5
        cpu=$(awk -v c="$4" -v n="$5" 'BEGIN { printf "%.0f", (n > 0 ? c * 1e6 / n : 0) }')
        CPU_US[$id,$round]=$cpu
    fi
    if [[ -n $RUN_BUSY ]]; then
        BUSY[$id,$round]=$RUN_BUSY
        busy="   machine busy $RUN_BUSY cpu s ($(busy_share "$RUN_BUSY" "$3"))"
        RUN_BUSY=""
    fi
    printf '#   %-48s %9.3f s%s%s\n' "${LABEL[$id]}" "$3" "${cpu:+   sluice cpu $4 s, $5 chunks, $cpu us/chunk}" "$busy"
}

# busy_share CPU_SECONDS SECONDS: the share of the machine's CPU time (SECONDS on every CPU) spent busy.
busy_share() {
    awk -v b="$1" -v s="$2" -v n="$(nproc)" 'BEGIN { printf "%.0f %%", (s > 0 ? b * 100 / (s * n) : 0) }'
}

# busy_cell ID: ID's median busy CPU seconds and their share over its median seconds ("3.49 s  47 %");
# nothing when not measured.
busy_cell() {
    local busy secs
    busy=$(median_of BUSY "$1")
    secs=$(median_of SECS "$1")
    [[ -n $busy && -n $secs ]] && printf '%.2f s %5s' "$busy" "$(busy_share "$busy" "$secs")"
    return 0
}

# median_of MAP ID: the median over the rounds of MAP[ID,round] (SECS, CPU_US or CHUNKS).
median_of() {
    local -n map=$1
    local round values=()
    for ((round = 1; round <= BENCH_RUNS; round++)); do
        [[ -n ${map[$2,$round]:-} ]] && values+=("${map[$2,$round]}")
    done
    median "${values[@]}"
}

# ---------------------------------------------------------------------------------------------------
# Tables, job files, sluice.

# sluice_timed DIR ARGS...: sluice ARGS (its job files and checkpoints in DIR) under /usr/bin/time;
# RUN_SECS gets its wall-clock seconds, RUN_CPU its user+sys seconds, RUN_BUSY the machine's busy CPU
# seconds meanwhile (the server's and sluice's, and anything else running). Returns its exit code.
sluice_timed() {
    local dir=$1 rc
    shift
    clock_start
    /usr/bin/time -f '%U %S' -o "$dir/time.txt" "$SLUICE" --jobs "$dir/jobs" --checkpoints "$dir/ckpt" "$@" \
        </dev/null >"$dir/out" 2>"$dir/err"
    rc=$?
    clock_stop
    # The last line: time puts "Command exited with non-zero status N" before it.
    RUN_CPU=$(awk 'END { printf "%.2f", $1 + $2 }' "$dir/time.txt")
    if ((rc != 0)); then
        sed 's/^/#     sluice: /' "$dir/err" | tail -n 8 >&2
    fi
    return "$rc"
}

# chunks_of DIR: the chunks the job's checkpoint file lists as committed (none set aside).
chunks_of() {
    sqlite3 "$1/ckpt/$JOB.sluice" "SELECT count(*) FROM chunks WHERE NOT skipped"
}

# new_dir: an empty directory for one sluice run's job and checkpoint files.
new_dir() {
    mktemp -d "$WORK/run.XXXXXX" || die "mktemp failed"
}

# ---------------------------------------------------------------------------------------------------
# The methods; each takes the round.

pg_update() {
    pg_fresh
    clock_start
    q "$UPDATE_SET" || { fail pg_update "the UPDATE failed"; return; }
    clock_stop
    pg_check_filled pg_update && record pg_update "$1" "$RUN_SECS"
}

pg_proc() {
    pg_fresh
    q "$(keyset_procedure_sql)" || die "could not create the procedure"
    clock_start
    q "call bench_walk(1000, -9223372036854775808, 9223372036854775807)" || { fail pg_proc "the CALL failed"; return; }
    clock_stop
    pg_check_filled pg_proc && record pg_proc "$1" "$RUN_SECS"
}

pg_proc_reads() {
    pg_fresh
    q "$(keyset_procedure_sql bench_reads "" reads)" || die "could not create the reading procedure"
    clock_start
    q "call bench_reads(1000, -9223372036854775808, 9223372036854775807)" ||
        { fail pg_proc_reads "the CALL failed"; return; }
    clock_stop
    pg_check_filled pg_proc_reads && record pg_proc_reads "$1" "$RUN_SECS"
}

# pg_proc_up_down ROUND: the keyset procedure, then the way back by hand: a procedure running the down
# section's UPDATE over the same batches, on the table as the first left it (no VACUUM between).
pg_proc_up_down() {
    pg_fresh
    q "$(keyset_procedure_sql)" || die "could not create the procedure"
    q "$(keyset_procedure_sql bench_back "full_name = null")" || die "could not create the way-back procedure"
    clock_start
    q "call bench_walk(1000, -9223372036854775808, 9223372036854775807)" || { fail pg_proc_up "the CALL failed"; return; }
    clock_stop
    pg_check_filled pg_proc_up && record pg_proc_up "$1" "$RUN_SECS"
    clock_start
    q "call bench_back(1000, -9223372036854775808, 9223372036854775807)" ||
        { fail pg_proc_down "the CALL failed"; return; }
    clock_stop
    [[ $(q "select count(full_name) from users") == 0 ]] ||
        { fail pg_proc_down "left some full_name filled"; return; }
    record pg_proc_down "$1" "$RUN_SECS"
}

# pg_sluice_up ID ROUND WORKERS [LINE]: sluice up, no way back; LINE, a directive, in the job file.
pg_sluice_up() {
    local dir
    pg_fresh
    dir=$(new_dir)
    users_job "$dir" 1000 "$3" "${4:-}" ""
    sluice_timed "$dir" up || { fail "$1" "sluice up exited $?"; return; }
    pg_check_filled "$1" && record "$1" "$2" "$RUN_SECS" "$RUN_CPU" "$(chunks_of "$dir")"
    rm -rf "$dir"
}

# pg_up_down UP_ID DOWN_ID ROUND WORKERS UNDO_LINE DOWN_SQL DOWN_WORKERS [vacuum]: sluice up, then down
# with the job file's workers line set to DOWN_WORKERS (with vacuum: VACUUM and CHECKPOINT first, untimed);
# down must give back the table's md5 from before up.
pg_up_down() {
    local up_id=$1 down_id=$2 round=$3 dir before chunks
    pg_fresh
    before=$(pg_md5) || die "could not read the table's md5"
    dir=$(new_dir)
    users_job "$dir" 1000 "$4" "$5" "$6"
    sluice_timed "$dir" up || { fail "$up_id" "sluice up exited $?"; return; }
    pg_check_filled "$up_id" || return
    chunks=$(chunks_of "$dir")
    record "$up_id" "$round" "$RUN_SECS" "$RUN_CPU" "$chunks"
    [[ $7 == "$4" ]] || users_job "$dir" 1000 "$7" "$5" "$6"
    if [[ ${8:-} == vacuum ]]; then
        { q "vacuum users" && q "checkpoint"; } || { fail "$down_id" "VACUUM or CHECKPOINT failed"; return; }
    fi
    sluice_timed "$dir" down "$JOB" || { fail "$down_id" "sluice down exited $?"; return; }
    # down logs how many workers it ran only when more than one (runner/engine/down.c)
    if (($7 > 1)) && ! grep -q "$7 workers over" "$dir/err"; then
        echo "#     (down did not say it ran $7 workers: $(tail -n 3 "$dir/err" | tr '\n' ' '))"
    fi
    [[ $(pg_md5) == "$before" ]] || { fail "$down_id" "the table's md5 after down is not the one before up"; return; }
    record "$down_id" "$round" "$RUN_SECS" "$RUN_CPU" "$chunks"
    rm -rf "$dir"
}

lite_update() {
    lite_fresh
    clock_start
    sqlite3 -bail "$DB" "PRAGMA synchronous = FULL; $UPDATE_SET" >/dev/null || { fail lite_update "the UPDATE failed"; return; }
    clock_stop
    lite_check_filled lite_update && record lite_update "$1" "$RUN_SECS"
}

# lite_python ROUND BATCH: its own time (from its first BEGIN), and its process's, from start to exit
# (the interpreter's start and the connect too: as sluice is timed).
lite_python() {
    local id=lite_py$2 t
    RUN_BUSY="" # not reported for the loop (and a failed run before may have left its figure)
    lite_fresh
    clock_start
    t=$(python3 "$WORK/loop.py" "$DB" "$2" "$UPDATE_SET") || { fail "$id" "the Python loop failed"; return; }
    clock_stop
    RUN_BUSY=""
    lite_check_filled "$id" || return
    record "$id" "$1" "$t"
    record "lite_pyp$2" "$1" "$RUN_SECS"
}

# first_chunk_secs DIR: the seconds from the start of the job's first chunk (its commit less its
# duration, from the checkpoint file, to the millisecond) to the end of the run CLOCK_T0 and RUN_SECS
# timed: sluice as the Python loop times itself, from its first BEGIN, leaving out what comes before
# (the process's start, the target's bookkeeping tables and the checkpoint file made, the rows
# counted for the percent).
first_chunk_secs() {
    local first
    first=$(sqlite3 "$1/ckpt/$JOB.sluice" "SELECT min(committed_at - duration_ms) FROM chunks") || return 1
    [[ -n $first ]] || return 1
    awk -v t0="$CLOCK_T0" -v s="$RUN_SECS" -v f="$first" 'BEGIN { printf "%.3f", t0 + s - f / 1000 }'
}

# lite_sluice ROUND BATCH [wait]: with wait, the job says synchronous-commit on.
lite_sluice() {
    local id=lite_sl$2${3:+_wait} dir first
    lite_fresh
    dir=$(new_dir)
    users_job "$dir" "$2" "" "${3:+-- sluice:synchronous-commit on}" ""
    sluice_timed "$dir" --db "sqlite:$DB" up || { fail "$id" "sluice up exited $?"; return; }
    lite_check_filled "$id" || return
    record "$id" "$1" "$RUN_SECS" "$RUN_CPU" "$(chunks_of "$dir")"
    if [[ -z ${3:-} ]]; then
        first=$(first_chunk_secs "$dir") || { fail "${id}_first" "cannot read its first chunk's start"; return; }
        record "${id}_first" "$1" "$first"
    fi
    rm -rf "$dir"
}

# run_round N: every method once.
run_round() {
    local snap="-- sluice:undo snapshot(full_name)" ds="UPDATE users SET full_name = NULL WHERE id BETWEEN :lo AND :hi;"
    echo "# round $1 of $BENCH_RUNS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    pg_update "$1"
    pg_proc "$1"
    pg_proc_reads "$1"
    pg_sluice_up pg_w1 "$1" 1
    pg_sluice_up pg_w1_wait "$1" 1 "-- sluice:synchronous-commit on"
    pg_sluice_up pg_w2 "$1" 2
    pg_up_down pg_snap_up pg_snap_down "$1" 1 "$snap" "" 1
    pg_up_down pg_ds_up pg_ds_down "$1" 1 "" "$ds" 1
    pg_up_down pg_w2snap_up pg_w2snap_down "$1" 2 "$snap" "" 2
    pg_up_down pg_w2snap_up_b pg_w2snap_down1 "$1" 2 "$snap" "" 1
    pg_up_down pg_snap_up_v pg_snap_down_v "$1" 1 "$snap" "" 1 vacuum
    pg_up_down pg_ds_up_v pg_ds_down_v "$1" 1 "" "$ds" 1 vacuum
    pg_proc_up_down "$1"
    pg_drop || die "could not drop the last PostgreSQL table"
    lite_update "$1"
    lite_python "$1" 1000
    lite_sluice "$1" 1000
    lite_sluice "$1" 1000 wait
    lite_python "$1" 5000
    lite_sluice "$1" 5000
    lite_sluice "$1" 5000 wait
}

# ---------------------------------------------------------------------------------------------------
# The figures.

per_run_table() {
    local id round line median busy
    echo
    echo "== each round's seconds, their median, sluice's own CPU (user+sys) per chunk, and the machine's busy CPU"
    echo "   seconds (every process) with their share of its $(nproc) CPUs over the median seconds, medians over the rounds"
    line=$(printf '%-48s' method)
    for ((round = 1; round <= BENCH_RUNS; round++)); do
        line+=$(printf ' %9s' "run $round")
    done
    printf '%s %9s %12s %8s %16s\n' "$line" median "cpu us/chunk" chunks "machine busy"
    for id in "${IDS[@]}"; do
        line=$(printf '%-48s' "${LABEL[$id]}")
        for ((round = 1; round <= BENCH_RUNS; round++)); do
            line+=$(printf ' %9s' "${SECS[$id,$round]:--}")
        done
        median=$(median_of SECS "$id")
        busy=$(busy_cell "$id")
        printf '%s %9s %12s %8s %16s\n' "$line" "${median:--}" "$(median_of CPU_US "$id" | cut -d. -f1)" \
            "$(median_of CHUNKS "$id" | cut -d. -f1)" "${busy:--}"
    done
}

# round_spread A_ID B_ID [pct]: the lowest and the highest of each round's own A / B ("0.98-1.33"; with
# pct "+30..+58 %"), nothing with fewer than two rounds: on a noisy machine the ratio of the medians can
# sit anywhere in it, and a narrow one is what makes a ratio worth quoting.
round_spread() {
    local round values=()
    for ((round = 1; round <= BENCH_RUNS; round++)); do
        [[ -n ${SECS[$1,$round]:-} && -n ${SECS[$2,$round]:-} ]] || continue
        values+=("$(awk -v a="${SECS[$1,$round]}" -v b="${SECS[$2,$round]}" 'BEGIN { printf "%.4f", (b > 0 ? a / b : 0) }')")
    done
    ((${#values[@]} >= 2)) || return 0
    printf '%s\n' "${values[@]}" | sort -g | awk -v pct="${3:-}" '
        NR == 1 { lo = $1 } { hi = $1 }
        END { if (pct == "pct") printf "%+.0f..%+.0f %%", (lo - 1) * 100, (hi - 1) * 100; else printf "%.2f-%.2f", lo, hi }'
}

# summary_line MEASURE A_ID B_ID TARGET [pct]: median A / median B beside both, the spread of the rounds'
# own ratios, and the target (ratio <= TARGET; with pct, shown as a change in per cent). An empty TARGET:
# a figure to report.
summary_line() {
    local a b ratio="" shown="-" target="(report)" verdict="" spread
    a=$(median_of SECS "$2")
    b=$(median_of SECS "$3")
    spread=$(round_spread "$2" "$3" "${5:-}")
    if [[ -n $a && -n $b ]]; then
        ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
        if [[ ${5:-} == pct ]]; then
            shown=$(awk -v r="$ratio" 'BEGIN { printf "%+.0f %%", (r - 1) * 100 }')
        else
            shown=$(awk -v r="$ratio" 'BEGIN { printf "%.2f", r }')
        fi
    fi
    if [[ -n $4 ]]; then
        if [[ ${5:-} == pct ]]; then
            target=$(awk -v t="$4" 'BEGIN { printf "<= %+.0f %%", (t - 1) * 100 }')
        else
            target="<= $4"
        fi
        if [[ -z $ratio ]]; then
            verdict="not measured"
        elif awk -v r="$ratio" -v t="$4" 'BEGIN { exit !(r <= t + 1e-9) }'; then
            verdict="met"
        else
            verdict="NOT met"
        fi
    fi
    printf '%-66s %9s %9s %7s %15s %9s  %s\n' "$1" "${a:--}" "${b:--}" "$shown" "${spread:--}" "$target" "$verdict" |
        sed 's/ *$//'
}

summary() {
    echo
    echo "== summary: $BENCH_ROWS rows, medians of $BENCH_RUNS rounds; ratio = median A / median B (below 1: A is faster);"
    echo "   rounds: the lowest and highest of each round's own A / B"
    printf '%-66s %9s %9s %7s %15s %9s  %s\n' "measure: A / B" "A s" "B s" ratio rounds target verdict
    summary_line "PG: sluice 1 worker / PL/pgSQL keyset procedure (batch 1000)" pg_w1 pg_proc 0.95
    summary_line "PG:   the same, synchronous-commit on / procedure" pg_w1_wait pg_proc ""
    summary_line "PG: sluice 2 workers / one UPDATE" pg_w2 pg_update 0.70
    summary_line "SQLite: sluice batch 1000 / Python keyset loop batch 1000" lite_sl1000 lite_py1000 1.00
    summary_line "SQLite:   the same, synchronous-commit on / Python loop" lite_sl1000_wait lite_py1000 ""
    summary_line "SQLite:   sluice from its first chunk / Python loop" lite_sl1000_first lite_py1000 ""
    summary_line "SQLite:   sluice / Python loop, each from process start to exit" lite_sl1000 lite_pyp1000 ""
    summary_line "SQLite:   sluice batch 1000 / one UPDATE" lite_sl1000 lite_update ""
    summary_line "SQLite:   Python loop batch 1000 / one UPDATE" lite_py1000 lite_update ""
    summary_line "SQLite: sluice batch 5000 / Python keyset loop batch 5000" lite_sl5000 lite_py5000 1.00
    summary_line "SQLite:   the same, synchronous-commit on / Python loop" lite_sl5000_wait lite_py5000 ""
    summary_line "SQLite:   sluice from its first chunk / Python loop" lite_sl5000_first lite_py5000 ""
    summary_line "SQLite:   sluice / Python loop, each from process start to exit" lite_sl5000 lite_pyp5000 ""
    summary_line "SQLite:   sluice batch 5000 / one UPDATE" lite_sl5000 lite_update ""
    summary_line "SQLite:   Python loop batch 5000 / one UPDATE" lite_py5000 lite_update ""
    summary_line "PG: up with undo snapshot(full_name) / up without undo" pg_snap_up pg_w1 1.20 pct
    summary_line "PG:   procedure reading before and after / procedure" pg_proc_reads pg_proc "" pct
    summary_line "PG: up with a down section (row hashes) / up without undo" pg_ds_up pg_w1 "" pct
    summary_line "PG: down / up, snapshot(full_name)" pg_snap_down pg_snap_up 1.00
    summary_line "PG:   the same, VACUUM between (down / its own up)" pg_snap_down_v pg_snap_up_v ""
    summary_line "PG: down / up, down section" pg_ds_down pg_ds_up 1.00
    summary_line "PG:   the same, VACUUM between (down / its own up)" pg_ds_down_v pg_ds_up_v ""
    summary_line "PG:   sluice down, down section / procedure of the down UPDATE" pg_ds_down pg_proc_down ""
    summary_line "PG:   procedure of the down UPDATE / keyset procedure" pg_proc_down pg_proc_up ""
    summary_line "PG: down workers 2 / down workers 1 (snapshot; ups with workers 2)" pg_w2snap_down pg_w2snap_down1 ""
    echo "(targets from issue 16; figures only, never a failure. Up without undo is sluice up, workers 1."
    echo " The procedure reading before and after reads each batch's rows as a snapshot's two images do, on the"
    echo " server alone: what those reads cost with nothing sent or stored, the least a snapshot adds."
    echo " The down-workers row undoes two ups with workers 2, each of which split the key (4 ranges per worker,"
    echo " cut at sampled keys): one with the job file's workers 2, one with it changed to 1)"
    echo
    echo "== the machine's busy CPU seconds (every process: the server's backends and its WAL writer, sluice, the"
    echo "   rest), medians, and their share of its $(nproc) CPUs over the median seconds: how near a method came to"
    echo "   using the whole machine"
    local id busy
    for id in pg_update pg_proc pg_w1 pg_w2; do
        busy=$(busy_cell "$id")
        [[ -n $busy ]] && printf '%-66s %16s\n' "${LABEL[$id]}" "$busy"
    done
    return 0
}

inner() {
    local round
    unset SLUICE_DB DATABASE_URL
    export PGOPTIONS="-c client_min_messages=warning"
    createdb bench || die "createdb bench failed"
    export PGDATABASE=bench
    if [[ -n $BENCH_DIR ]]; then
        WORK=$BENCH_DIR
        mkdir -p "$WORK" || die "cannot create $WORK"
    else
        WORK=$(mktemp -d /var/tmp/bench_speed.XXXXXX) || die "mktemp failed"
        trap 'rm -rf "$WORK"' EXIT
    fi
    DB="$WORK/bench.db"
    echo "# postgresql $(q 'show server_version'); fsync=$(q 'show fsync'), synchronous_commit=$(q 'show synchronous_commit'), shared_buffers=$(q 'show shared_buffers'), max_wal_size=$(q 'show max_wal_size')"
    echo "# sqlite $(sqlite3 --version | cut -d' ' -f1) (CLI), python3 sqlite3 module $(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)'); WAL, synchronous=FULL (sluice: NORMAL for the chunks unless synchronous-commit on)"
    echo "# sluice: $SLUICE ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $(nproc) cpus; $(uptime)"
    echo "# rows $BENCH_ROWS, $BENCH_RUNS rounds; files in $WORK ($(df -T "$WORK" | awk 'NR == 2 { print $2 }'))"
    make_template
    write_keyset_loop_py "$WORK/loop.py"
    for ((round = 1; round <= BENCH_RUNS; round++)); do
        run_round "$round"
    done
    per_run_table
    summary
    bench_finished bench_speed.sh
}

if [[ ${1:-} == --inner ]]; then
    inner
else
    outer
fi
