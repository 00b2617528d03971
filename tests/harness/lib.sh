# lib.sh: helpers for the shell tests in tests/integration and tests/crash; each test file prints TAP.
# shellcheck shell=bash
#
# A test file is a bash script that tests/run.sh runs inside its throw-away PostgreSQL:
#
#   #!/usr/bin/env bash
#   # test_backfill.sh: `up` over single-column keys.
#   . "$(dirname "$0")/../harness/lib.sh"
#
#   test_fills_every_row() {
#       psql_q "create table t (id int primary key, n int); insert into t select g, 0 from generate_series(1, 100) g"
#       write_job 0001_bump <<'EOF'
#   -- sluice:table t
#   -- sluice:up
#   UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
#   EOF
#       run_sluice up
#       assert_rc 0
#       assert_sql "select count(*) from t where n = 1" 100
#   }
#   run_test "up bumps every row once" test_fills_every_row
#   t_done
#
# Each run_test runs its function in a subshell with `set -e`, in a fresh work directory ($T_DIR, the
# current directory, holding $JOBS and $CKPT) and a fresh database ($T_DB: SLUICE_DB and PGDATABASE
# point at it, so both sluice and psql_q use it without being told). The first failing command or
# assertion ends the test; its output (every command run, and the assertion's diagnosis) is printed
# only when it fails. Background runners it started are killed and its database dropped at the end, so
# tests are independent and can run in any order. Run one file with: bash tests/run.sh test_backfill
#
# set -e pitfalls: write `v=$(psql_q ...)` on its own line (`local v=$(...)` hides a failure), and
# remember that a command in an `if`, `||` or `&&` does not end the test when it fails.
# Crash tests: sluice_start / sluice_kill KILL / random_sleep for kill -9 at random moments, and
# pg_restart for `pg_ctl restart -m immediate` on the test server ($SLUICE_TEST_PGRESTART).

set -uo pipefail

SLUICE_ROOT=${SLUICE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# The binary under test: the sanitizer build that tests/run.sh makes.
SLUICE=${SLUICE:-$SLUICE_ROOT/build-test/sluice}
# How long one synchronous run_sluice / run_cmd may take before it is killed and counted as a failure.
T_CMD_TIMEOUT=${T_CMD_TIMEOUT:-300}
T_FILE=$(basename "$0" .sh)
T_NUM=0
T_FAILED=0
T_ROOT=$(mktemp -d "${SLUICE_TEST_TMP:-/tmp}/${T_FILE}.XXXXXX")
# Only the variables lib.sh sets may choose the database; a stray one from the caller's shell must not.
unset DATABASE_URL PGSERVICE

_t_file_cleanup() {
    local pid
    for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; done
    [[ ${SLUICE_TEST_KEEP:-0} == 1 ]] || rm -rf "$T_ROOT"
}
trap _t_file_cleanup EXIT

# ---------------------------------------------------------------------------------------------------
# TAP

# run_test NAME FUNC [ARGS...]: run FUNC as one test and print "ok N - NAME" or "not ok N - NAME"
# followed by the test's output as "#" lines.
run_test() {
    local name=$1 func=$2 rc lines start=$EPOCHREALTIME
    shift 2
    T_NUM=$((T_NUM + 1))
    local out="$T_ROOT/$T_NUM.out"
    (
        _t_setup || exit 1
        trap _t_teardown EXIT
        set -eE
        trap '_t_on_err $? "$LINENO" "$BASH_COMMAND"' ERR
        "$func" "$@"
    ) </dev/null >"$out" 2>&1
    rc=$?
    # Each test's seconds, for finding where a slow file spends its time (run.sh keeps the file).
    if [[ -n ${SLUICE_TEST_LOGDIR:-} ]]; then
        local ms=$(((${EPOCHREALTIME//[.,]/} - ${start//[.,]/}) / 1000))
        printf '%s\t%d\t%d.%d\t%s\n' "$T_FILE" "$T_NUM" $((ms / 1000)) $((ms % 1000 / 100)) "$name" \
            >>"$SLUICE_TEST_LOGDIR/test-times.tsv"
    fi
    if ((rc == 0)); then
        echo "ok $T_NUM - $name"
        return 0
    fi
    T_FAILED=$((T_FAILED + 1))
    echo "not ok $T_NUM - $name"
    lines=$(wc -l <"$out")
    ((lines > 200)) && echo "#   ... $((lines - 200)) earlier lines cut; the work dir is kept with SLUICE_TEST_KEEP=1"
    tail -n 200 "$out" | sed 's/^/#   /'
    return 0
}

# t_done: print the plan and exit non-zero if any test failed. The last line of every test file.
t_done() {
    echo "1..$T_NUM"
    ((T_FAILED == 0))
    exit
}

# diag MSG...: a comment line in the test's output (shown when the test fails).
diag() {
    echo "# $*"
}

# fail MSG...: fail the current test with MSG.
fail() {
    echo "FAIL: $*"
    return 1
}

# ERR trap: name the line of the test file (not of lib.sh) where the failing command or assertion is.
_t_on_err() {
    local status=$1 line=$2 cmd=$3 frame=1
    while [[ ${BASH_SOURCE[$frame]:-} == "${BASH_SOURCE[0]}" ]] && ((frame + 1 < ${#BASH_SOURCE[@]})); do
        frame=$((frame + 1))
        line=${BASH_LINENO[$((frame - 1))]}
        cmd="${FUNCNAME[$((frame - 1))]} ..."
    done
    echo "FAIL: ${BASH_SOURCE[$frame]##*/}:$line: $cmd (exit $status)"
}

# A fresh work dir and database for the test in this subshell.
_t_setup() {
    T_DIR="$T_ROOT/t$T_NUM"
    JOBS="$T_DIR/jobs"
    CKPT="$T_DIR/checkpoints"
    mkdir -p "$JOBS" "$CKPT" || return 1
    cd "$T_DIR" || return 1
    # Lower case, at most 63 bytes: PostgreSQL's identifier limit.
    T_DB=$(printf 'sl_%.30s_%d_%d' "$T_FILE" "$$" "$T_NUM" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9_\n' '_')
    if ! createdb "$T_DB"; then
        echo "FAIL: createdb $T_DB failed (hint: run through bash tests/run.sh, which provisions PostgreSQL)"
        return 1
    fi
    export T_DIR JOBS CKPT T_DB PGDATABASE="$T_DB"
    local user=${PGUSER:-$(id -un)} host=${PGHOST:-localhost} port=${PGPORT:-5432}
    export SLUICE_DB="postgresql://$user@$host:$port/$T_DB"
    # The same URL with the password in it, for tests that check it never shows in any output.
    export SLUICE_DB_PW="postgresql://$user:${PGPASSWORD:-}@$host:$port/$T_DB"
}

_t_teardown() {
    local rc=$? pid
    set +eE
    trap - ERR
    for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    cd "$T_ROOT" || return
    if [[ ${SLUICE_TEST_KEEP:-0} == 1 ]]; then
        echo "# kept: work dir $T_DIR, database $T_DB"
        return
    fi
    dropdb --force --if-exists "$T_DB" >/dev/null 2>&1
    ((rc == 0)) && rm -rf "$T_DIR"
}

# ---------------------------------------------------------------------------------------------------
# Running things

# run_sluice ARGS...: run sluice with --jobs $JOBS --checkpoints $CKPT ARGS, stdin closed (so not a
# terminal), and capture RC (exit status), OUT (stdout) and ERR (stderr). Never fails by itself:
# check with assert_rc. Killed and RC=124 after $T_CMD_TIMEOUT seconds.
run_sluice() {
    run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" "$@"
}

# What ran, short: "sluice --jobs jobs --checkpoints checkpoints up" rather than three long paths.
_t_show() {
    local text="$*"
    text=${text//"$SLUICE"/sluice}
    text=${text//"$T_DIR/"/}
    echo "$text"
}

# run_cmd CMD...: like run_sluice for any command. LAST_CMD holds what ran, for diagnoses.
run_cmd() {
    LAST_CMD=$(_t_show "$@")
    RC=0
    timeout --foreground -k 5 "$T_CMD_TIMEOUT" "$@" </dev/null >"$T_DIR/last.out" 2>"$T_DIR/last.err" || RC=$?
    OUT=$(cat "$T_DIR/last.out")
    ERR=$(cat "$T_DIR/last.err")
    echo "\$ $LAST_CMD -> exit $RC"
    ((RC == 124)) && echo "# timed out after ${T_CMD_TIMEOUT}s"
    return 0
}

# sluice_start ARGS...: start sluice (with --jobs/--checkpoints, like run_sluice) in the background.
# Sets SLUICE_PID; its stdout/stderr go to $T_DIR/bg.N.out/.err (N counts the test's runners).
sluice_start() {
    _T_BG_COUNT=$((_T_BG_COUNT + 1))
    "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" "$@" </dev/null \
        >"$T_DIR/bg.$_T_BG_COUNT.out" 2>"$T_DIR/bg.$_T_BG_COUNT.err" &
    SLUICE_PID=$!
    _T_BG_FILES[$SLUICE_PID]="$T_DIR/bg.$_T_BG_COUNT"
    echo "\$ $(_t_show "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" "$@") & -> pid $SLUICE_PID"
}
_T_BG_COUNT=0
declare -A _T_BG_FILES=()

# sluice_wait [PID]: wait for a background sluice (default $SLUICE_PID) and capture RC, OUT, ERR.
# A runner killed by signal N gives RC 128+N (137 for kill -9).
sluice_wait() {
    local pid=${1:-$SLUICE_PID}
    local files=${_T_BG_FILES[$pid]:?"BUG: sluice_wait: pid $pid was not started by sluice_start"}
    RC=0
    wait "$pid" || RC=$?
    OUT=$(cat "$files.out")
    ERR=$(cat "$files.err")
    LAST_CMD="sluice (pid $pid)"
    echo "# sluice pid $pid exited $RC"
}

# sluice_kill SIGNAL [PID]: send SIGNAL (KILL, TERM, INT...) to a background sluice and wait for it
# (sets RC, OUT, ERR like sluice_wait).
sluice_kill() {
    local pid=${2:-$SLUICE_PID}
    kill "-$1" "$pid" 2>/dev/null || true
    sluice_wait "$pid"
}

# runner_alive: the background sluice $SLUICE_PID is still running.
runner_alive() {
    kill -0 "$SLUICE_PID" 2>/dev/null
}

# runner_exited: the background sluice $SLUICE_PID has exited (for wait_until).
runner_exited() {
    ! runner_alive
}

# state_of [JOB]: JOB's state in a fresh `status --json` (the first job's without JOB), for $(...).
state_of() {
    if (($# == 0)); then
        "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" status --json | jq -r '.[0].state'
    else
        "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" status --json | jq -r --arg j "$1" '.[] | select(.job == $j) | .state'
    fi
}

# ctl_says TEXT JOB ARGS...: `sluice ctl JOB ARGS` answers and its answer contains TEXT (for wait_until).
ctl_says() {
    local text=$1 job=$2
    shift 2
    "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" ctl "$job" "$@" 2>/dev/null | grep -qF -- "$text"
}

# make_app_role [SQL]: role sl_app (LOGIN, password app-secret; roles live in the cluster, so a replica
# has it too) with CREATE and USAGE on public (its first run creates sluice's tables), then SQL (the
# grants its jobs need, e.g. "grant select, update on t to sl_app"), and nothing more: checked to be
# neither superuser nor in pg_monitor. Sets APP_DB, a URL connecting as it to the test's database.
make_app_role() {
    psql_q "do \$\$ begin
              if not exists (select from pg_roles where rolname = 'sl_app') then
                  create role sl_app login password 'app-secret';
              end if;
            end \$\$"
    psql_q "grant create, usage on schema public to sl_app${1:+; $1}"
    assert_sql "select rolsuper or pg_has_role('sl_app', 'pg_monitor', 'member') from pg_roles where rolname = 'sl_app'" f
    APP_DB="postgresql://sl_app:app-secret@$PGHOST:$PGPORT/$T_DB"
}

# free_port: a TCP port nothing listens on (nor a PostgreSQL socket file names), below Linux's ephemeral
# range (32768 and up) so that no client connection holds it either. Use on its own line: p=$(free_port)
free_port() {
    local port _
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 12000))
        if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && [[ ! -e /var/run/postgresql/.s.PGSQL.$port ]]; then
            echo "$port"
            return 0
        fi
    done
    echo "FAIL: free_port: 50 ports tried, every one in use" >&2
    return 1
}

# wait_until SECONDS CMD...: poll CMD every 50ms until it succeeds; fail the test if it never does.
#   wait_until 10 sql_true "select count(*) > 0 from t where n = 1"
wait_until() {
    poll_until "$@" && return 0
    shift
    fail "waited in vain for: $*"
    return 1
}

# poll_until SECS CMD...: CMD (its output thrown away) until it succeeds, 0; or, after SECS seconds, 1,
# failing nothing (for a harness function that says why itself). Every 50 ms for the first second, then
# every 200 ms: most CMDs run psql, and a long wait polled at 50 ms took CPU the tests beside it needed.
poll_until() {
    local deadline=$((SECONDS + $1)) polls=0
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        if ((++polls <= 20)); then sleep 0.05; else sleep 0.2; fi
    done
}

# random_sleep MIN_MS MAX_MS: sleep a random time between the two, for kills at random moments.
random_sleep() {
    local ms=$(($1 + RANDOM % ($2 - $1 + 1)))
    sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
}

# write_job NAME [DIR] <<'EOF' ... EOF: write a job file DIR/NAME.sql (DIR defaults to $JOBS).
write_job() {
    local name=${1%.sql}
    cat >"${2:-$JOBS}/$name.sql"
}

# bump_job [--down] NAME BATCH [LINE...]: a job NAME adding 1 to t.n, BATCH rows a chunk; each LINE (say
# "-- sluice:pause 10ms") goes on a line of its own after the batch. --down: with a down section taking 1 off.
#   bump_job 0001_bump 100 "-- sluice:undo snapshot(n)"
bump_job() {
    local down=0
    [[ $1 == --down ]] && { down=1; shift; }
    local name=$1 batch=$2
    shift 2
    {
        echo "-- sluice:table t"
        echo "-- sluice:batch $batch"
        (($# == 0)) || printf '%s\n' "$@"
        echo "-- sluice:up"
        echo "UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;"
        if ((down)); then
            echo "-- sluice:down"
            echo "UPDATE t SET n = n - 1 WHERE id BETWEEN :lo AND :hi;"
        fi
    } | write_job "$name"
}

# job_pause NAME DURATION|off: job NAME's file (in $JOBS) rests DURATION after each chunk (its
# `-- sluice:pause` line says so, put before `-- sluice:up` when it had none), or no longer rests (off:
# the line goes). Changed after an up, the file's checksum differs: down warns and keeps to it.
job_pause() {
    local f="$JOBS/${1%.sql}.sql"
    sed -i '/^-- sluice:pause /d' "$f" || fail "job_pause: cannot edit $f"
    [[ $2 == off ]] && return 0
    sed -i "s/^-- sluice:up\$/-- sluice:pause $2\n&/" "$f"
    grep -qx -- "-- sluice:pause $2" "$f" || fail "job_pause: $f has no '-- sluice:up' line to put the pause before"
}

# sq_slow_bump_job BATCH STEPS: job 0001_bump adding 1 to t.n on SQLite, BATCH rows a chunk, each chunk
# also counting to STEPS in a recursive CTE (an uncorrelated subquery: once a statement), so that a
# chunk takes a while whatever the machine: 20000 steps a few milliseconds, 300000 about a tenth of a
# second, for kills, signals and pauses to land inside chunks.
sq_slow_bump_job() {
    write_job 0001_bump <<EOF2
-- sluice:table t
-- sluice:batch $1
-- sluice:up
UPDATE t SET n = n + 1
 WHERE id BETWEEN :lo AND :hi
   AND (SELECT count(*) FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $2)
                              SELECT i FROM c)) > 0;
EOF2
}

# job_tag: a job 0001_tag appending '+job' to t.v (make_table 300 "v text ...") over chunks of 100 rows,
# undo snapshot(v), waiting up to 30 s for a row another session holds.
job_tag() {
    write_job 0001_tag <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:lock-timeout 30s
-- sluice:undo snapshot(v)
-- sluice:up
UPDATE t SET v = v || '+job' WHERE id BETWEEN :lo AND :hi;
EOF
}

# wait_sleeping SECONDS: wait until another session of the test's database is running pg_sleep(SECONDS)
# (one started in the background to hold a row while it sleeps).
wait_sleeping() {
    wait_until 10 sql_true "select exists (select 1 from pg_stat_activity where datname = current_database()
                                            and query like '%pg_sleep($1)%' and state = 'active'
                                            and pid <> pg_backend_pid())"
}

# hold_rows SECONDS SQL [BEGIN]: another session runs SQL (an UPDATE, or a SELECT ... FOR UPDATE) in a
# transaction opened with BEGIN ("begin" unless named), then holds what it locked for SECONDS before it
# commits. Returns once it sleeps, its psql's pid in HOLDER: `wait "$HOLDER"` waits for the commit,
# release_rows ends it at once. SECONDS tells it from other sleeping sessions: one hold per length.
hold_rows() {
    psql -XAtq -c "${3:-begin}; $2; select pg_sleep($1); commit" >/dev/null 2>&1 &
    HOLDER=$!
    wait_sleeping "$1"
}

# release_rows SECONDS: end hold_rows' session of that length now (its transaction rolls back, its
# locks go) and reap its psql.
release_rows() {
    psql_q "select count(pg_terminate_backend(pid)) from pg_stat_activity
             where datname = current_database() and query like '%pg_sleep($1)%' and pid <> pg_backend_pid()" >/dev/null
    wait "$HOLDER" 2>/dev/null || true
}

# wait_runner_on_lock [SECONDS]: wait (10 s unless named) until one of sluice's sessions of the test's
# database waits on a lock (its chunk has met a row hold_rows holds).
wait_runner_on_lock() {
    wait_until "${1:-10}" sql_true "select exists (select 1 from pg_stat_activity where datname = current_database()
                                                    and application_name = 'sluice' and wait_event_type = 'Lock')"
}

# job_backfill NAME [LINES]: a job NAME filling t.full_name from first and last (make_users' table) where it
# is null and adding 1 to n, 300 rows a chunk; LINES (say "-- sluice:undo snapshot(full_name, n)") after the batch.
job_backfill() {
    write_job "$1" <<EOF
-- sluice:table t
-- sluice:batch 300
${2:-}
-- sluice:up
UPDATE t SET full_name = first || ' ' || last, n = n + 1 WHERE id BETWEEN :lo AND :hi AND full_name IS NULL;
EOF
}

# ---------------------------------------------------------------------------------------------------
# PostgreSQL

# psql_q SQL: run SQL on the test's database and print the result unaligned, without headers, fields
# separated by "|". Stops at the first error and fails. Several statements in one string run in one
# transaction; with no argument it reads SQL from stdin (psql_q <<'SQL' ... SQL), statement by statement.
psql_q() {
    if (($# > 0)); then
        psql -XAtq -v ON_ERROR_STOP=1 -c "$1"
    else
        psql -XAtq -v ON_ERROR_STOP=1 -f -
    fi
}

# sql_true SQL: succeed if SQL returns true (for wait_until and if).
sql_true() {
    [[ $(psql_q "$1") == t ]]
}

# make_table N [COLUMNS [FILL_COLUMNS FILL_VALUES]]: table t (id int primary key, COLUMNS) with ids 1..N;
# COLUMNS defaults to "n int not null default 0". FILL_COLUMNS (a column list) take FILL_VALUES (SQL over g,
# the row's id); the other columns their defaults.
#   make_table 300 "name text, n int not null default 0" name "'n' || g"
make_table() {
    local rows=$1 cols=${2:-n int not null default 0} fill=${3:-} values=${4:-}
    psql_q "create table t (id int primary key, $cols);
            insert into t (id${fill:+, $fill}) select g${values:+, $values} from generate_series(1, $rows) g"
}

# make_users [N]: table t (id, first, last, full_name, n) with N rows (default 5000): first and last set,
# full_name null but for every 7th id ('kept ID'), n 0; analyzed. The table of job_backfill.
make_users() {
    psql_q "create table t (id int primary key, first text not null, last text not null, full_name text, n int not null default 0);
            insert into t (id, first, last) select g, 'f' || g, 'l' || g from generate_series(1, ${1:-5000}) g;
            update t set full_name = 'kept ' || id where id % 7 = 0; analyze t"
}

# table_sum [TABLE]: the md5 of every row of TABLE (default t) as text, in id order: equal sums, equal tables.
table_sum() {
    psql_q "select md5(coalesce(string_agg(x::text, E'\n' order by x.id), '')) from ${1:-t} x"
}

# progress [JOB]: "chunks|rows" committed so far for JOB (for every job without it) according to
# sluice_progress; "0|0" before the first chunk made the table (or while the server does not answer).
# One psql a call: it is the probe of many waits. sq_progress is SQLite's.
progress() {
    local where=""
    [[ -n ${1:-} ]] && where="where job = '$1'"
    psql_q "select count(*) || '|' || coalesce(sum(rows), 0) from sluice_progress $where" 2>/dev/null || echo "0|0"
}

# held_for SECS WHAT [JOB]: JOB's progress ("chunks|rows" applied; JOB 0001_bump unless given) does not
# move for SECS seconds; WHAT names it in a failure. HELD gets the progress.
held_for() {
    local job=${3:-0001_bump}
    HELD=$(progress "$job")
    sleep "$1"
    assert_eq "$(progress "$job")" "$HELD" "$2"
}

# rows_done_at_least JOB N: at least N rows of JOB committed (for wait_until). sq_rows_done_at_least is SQLite's.
rows_done_at_least() {
    local p
    p=$(progress "$1")
    ((${p#*|} >= $2))
}

# stop_up_after JOB ROWS [DONE]: `up JOB` in the background until at least ROWS of JOB committed (DONE:
# the check for wait_until, rows_done_at_least or SQLite's sq_rows_done_at_least), then SIGINT: it stops,
# exit 3, resumable.
stop_up_after() {
    sluice_start up "$1"
    wait_until 30 "${3:-rows_done_at_least}" "$1" "$2"
    sluice_kill INT
    assert_rc 3
}

# pg_restart: restart the server at once (pg_ctl restart -m immediate: no shutdown checkpoint, crash
# recovery on start, every connection dropped). Returns once it accepts connections again.
pg_restart() {
    echo "\$ $SLUICE_TEST_PGRESTART"
    $SLUICE_TEST_PGRESTART && return 0
    # Under load pg_ctlcluster's immediate stop can return before the postmaster is gone, and its start
    # then says "Cluster is already running": stop again, then start.
    echo "# restart failed; stopping and starting again"
    $SLUICE_TEST_PGSTOP || true
    $SLUICE_TEST_PGSTART
}

# pg_stop / pg_start: the server down (immediately) for as long as the test needs, then up again.
pg_stop() {
    echo "\$ $SLUICE_TEST_PGSTOP"
    $SLUICE_TEST_PGSTOP
}
pg_start() {
    echo "\$ $SLUICE_TEST_PGSTART"
    $SLUICE_TEST_PGSTART
}

# load_status: a fresh `status --json` (exit 0 asserted) into STATUS_JSON, for sfield.
load_status() {
    run_sluice status --json
    assert_rc 0
    STATUS_JSON=$OUT
}

# sfield JOB FIELD: one field of STATUS_JSON for JOB; lists and null as JSON. Use on its own line:
#   v=$(sfield JOB rows)
sfield() {
    python3 -c '
import json, sys
job, field = sys.argv[1], sys.argv[2]
for o in json.load(sys.stdin):
    if o["job"] == job:
        v = o[field]
        print(json.dumps(v) if isinstance(v, (list, dict)) or v is None else v)
        break
else:
    sys.exit("no job " + job + " in status --json")
' "$1" "$2" <<<"$STATUS_JSON"
}

# ---------------------------------------------------------------------------------------------------
# Assertions: each prints what it expected and what it got, and fails the test.

# assert_eq ACTUAL EXPECTED [WHAT]
assert_eq() {
    [[ $1 == "$2" ]] && return 0
    fail "${3:-value}: expected \"$2\", got \"$1\""
}

# assert_ne ACTUAL UNEXPECTED [WHAT]
assert_ne() {
    [[ $1 != "$2" ]] && return 0
    fail "${3:-value}: expected anything but \"$2\""
}

# assert_contains HAYSTACK NEEDLE [WHAT]: NEEDLE is a plain substring.
assert_contains() {
    [[ $1 == *"$2"* ]] && return 0
    fail "${3:-output} does not contain \"$2\"; it is:"$'\n'"$1"
}

# assert_not_contains HAYSTACK NEEDLE [WHAT]
assert_not_contains() {
    [[ $1 != *"$2"* ]] && return 0
    fail "${3:-output} contains \"$2\"; it is:"$'\n'"$1"
}

# assert_match HAYSTACK ERE [WHAT]: an extended regular expression, matched anywhere.
assert_match() {
    [[ $1 =~ $2 ]] && return 0
    fail "${3:-output} does not match /$2/; it is:"$'\n'"$1"
}

# assert_rc CODE: the last run_sluice / run_cmd / sluice_wait exited CODE; otherwise shows its output.
assert_rc() {
    [[ $RC == "$1" ]] && return 0
    fail "$LAST_CMD: expected exit $1, got $RC"$'\n'"--- stdout:"$'\n'"$(head -c 4000 <<<"$OUT")"$'\n'"--- stderr:"$'\n'"$(head -c 4000 <<<"$ERR")"
}

# assert_exit CODE CMD...: run CMD (capturing RC, OUT, ERR) and check it exits CODE.
assert_exit() {
    local code=$1
    shift
    run_cmd "$@"
    assert_rc "$code"
}

# assert_sql SQL EXPECTED: SQL's result on the test's database (as psql_q prints it) is EXPECTED.
assert_sql() {
    local got
    got=$(psql_q "$1") || return 1
    assert_eq "$got" "$2" "$1"
}

# assert_status JOB FIELD EXPECTED: a fresh `status --json` has FIELD of JOB equal to EXPECTED.
assert_status() {
    local v
    load_status
    v=$(sfield "$1" "$2")
    assert_eq "$v" "$3" "status --json: $2 of $1"
}

# assert_file PATH: PATH exists.
assert_file() {
    [[ -e $1 ]] && return 0
    fail "expected file $1 to exist"
}

# ---------------------------------------------------------------------------------------------------

# Testing nothing is a failure: without a server every test here would fail anyway; say why once.
if ! psql -XAtq -c 'select 1' >/dev/null 2>"$T_ROOT/psql.err"; then
    echo "not ok 1 - postgresql is reachable"
    sed 's/^/#   /' "$T_ROOT/psql.err"
    echo "#   hint: run shell tests through bash tests/run.sh $T_FILE, which provisions PostgreSQL"
    echo "1..1"
    exit 1
fi

# ---------------------------------------------------------------------------------------------------
# SQLite targets (--db sqlite:PATH): the test's database file instead of (beside) its PostgreSQL one.
#
#   sq_init                         # $T_DIR/t.db in WAL mode; SLUICE_DB=sqlite:$SQ_DB for run_sluice
#   sq "create table t (id integer primary key, n int not null default 0)"
#   sq_fill t 1000                  # rows 1..1000 (ids only; other columns take their defaults)
#   run_sluice up
#   assert_sq "select min(n), max(n), count(*) from t" "1|1|1000"
#
# sq prints what psql_q prints for the same query: unaligned, no headers, fields separated by "|",
# NULL as an empty string; it waits up to 10 s for a lock (sluice holds one during each chunk).

# sq_init [PATH] [JOURNAL_MODE]: create the SQLite database PATH (default $T_DIR/t.db) in JOURNAL_MODE
# (default wal), and point SQ_DB and SLUICE_DB at it (run_sluice and sluice_start then use it).
sq_init() {
    SQ_DB=${1:-$T_DIR/t.db}
    local mode
    mode=$(sqlite3 -bail "$SQ_DB" "pragma journal_mode = ${2:-wal}")
    [[ $mode == "${2:-wal}" ]] || fail "sqlite3 $SQ_DB: journal_mode is $mode, not ${2:-wal}"
    export SQ_DB SLUICE_DB="sqlite:$SQ_DB"
}

# sq SQL: run SQL (one or more statements) on $SQ_DB with sqlite3; fails on the first error.
sq() {
    sqlite3 -bail -batch -cmd '.timeout 10000' "$SQ_DB" "$1"
}

# sq_true SQL: succeed if SQL returns 1 (for wait_until and if).
sq_true() {
    [[ $(sq "$1") == 1 ]]
}

# assert_sq SQL EXPECTED: SQL's result on $SQ_DB (as sq prints it) is EXPECTED.
assert_sq() {
    local got
    got=$(sq "$1") || return 1
    assert_eq "$got" "$2" "sqlite: $1"
}

# sq_fill TABLE N [FROM]: insert ids FROM..FROM+N-1 (default 1..N) into TABLE(id).
sq_fill() {
    sq "with recursive g(i) as (select ${3:-1} union all select i + 1 from g where i < ${3:-1} + $2 - 1)
        insert into $1 (id) select i from g"
}

# sq_dump TABLE: every row of TABLE, each value through quote() (so 1, 1.0, '1', X'01' and NULL all
# differ), in the order of all its columns: equal dumps mean equal tables, types and all.
sq_dump() {
    local cols
    cols=$(sq "select group_concat('quote(\"' || name || '\")', ' || ''|'' || ') from pragma_table_info('$1')")
    [[ -n $cols ]] || fail "sq_dump: no table $1 in $SQ_DB"
    sq "select $cols from \"$1\" order by $(sq "select group_concat('\"' || name || '\"', ', ') from pragma_table_info('$1')")"
}

# sq_sum TABLE: the md5 of sq_dump TABLE (with its row count), for before/after comparisons.
sq_sum() {
    local dump
    dump=$(sq_dump "$1") || return 1
    echo "$(wc -l <<<"$dump") $(md5sum <<<"$dump" | cut -d' ' -f1)"
}

# sq_progress [JOB]: "chunks|rows" committed so far according to $SQ_DB's sluice_progress ("0|0"
# before the first chunk made the table).
sq_progress() {
    local where=""
    [[ -n ${1:-} ]] && where="where job = '$1'"
    if sq_true "select count(*) from sqlite_master where name = 'sluice_progress'"; then
        sq "select count(*) || '|' || coalesce(sum(rows), 0) from sluice_progress $where"
    else
        echo "0|0"
    fi
}

# sq_rows_done_at_least JOB N: at least N rows of JOB committed in $SQ_DB (for wait_until).
sq_rows_done_at_least() {
    local p
    p=$(sq_progress "$1")
    ((${p#*|} >= $2))
}

# Milliseconds since the epoch.
now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
}

# assert_ranges_chain JOB: sluice_ranges holds at least two ranges for JOB that cover the whole key space
# in one chain: one starts at the open beginning, each next one starts where the one before ends, one
# ends at the open end, and every chunk of sluice_progress names one of them (a job with workers).
assert_ranges_chain() {
    local job=$1 got
    got=$(psql_q "with recursive r as (
                      select range_no, until, 1 as depth from sluice_ranges where job = '$job' and after is null
                      union all
                      select s.range_no, s.until, r.depth + 1 from r
                        join sluice_ranges s on s.job = '$job' and s.after = r.until
                       where r.depth < 1000)
                  select (select count(*) from sluice_ranges where job = '$job') || '|' ||
                         (select count(distinct range_no) from r) || '|' ||
                         (select count(*) from sluice_ranges where job = '$job' and after is null) || '|' ||
                         (select count(*) from sluice_ranges where job = '$job' and until is null) || '|' ||
                         (select count(*) from r where until is null)")
    local n reached starts ends reached_end
    IFS='|' read -r n reached starts ends reached_end <<<"$got"
    if ((n < 2 || reached != n || starts != 1 || ends != 1 || reached_end != 1)); then
        diag "sluice_ranges of $job:"$'\n'"$(psql_q "select range_no, after, until from sluice_ranges where job = '$job' order by range_no")"
        fail "sluice_ranges of $job is not one chain of 2 or more ranges from the open start to the open end (ranges|reached|open starts|open ends|chain ends open: $got)"
    fi
    assert_sql "select count(*) from sluice_progress p where job = '$job'
                   and not exists (select from sluice_ranges r where r.job = p.job and r.range_no = p.range_no)" 0
}
