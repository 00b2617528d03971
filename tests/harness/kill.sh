# kill.sh: what the kill -9 tests on PostgreSQL share: progress probes and the kill loop.
# shellcheck shell=bash
#
# Sourced after lib.sh by the crash tests on PostgreSQL (tests/crash/test_*.sh). kill_loop and
# finish_and_check call show_state TABLE when they fail, and kill_loop checks check_exactly_once_so_far
# TABLE after every kill.

# How many chunks are committed so far (0 before the first `up` made the bookkeeping table, or while the
# server does not answer). One psql a call: it is the probe between kills.
progress_chunks() {
    psql_q "select count(*) from sluice_progress" 2>/dev/null || echo 0
}

# The statement a job adds after its UPDATE to hold each chunk's transaction open: it sleeps the seconds
# chunk_sleep last set. The setting is the database's, read by each new session, so the last `up` after
# a kill loop, with chunk_sleep 0, runs the same statements (unchanged, as a resume requires) without it.
CHUNK_SLEEP_SQL="SELECT pg_sleep(current_setting('sluice_test.chunk_sleep')::float);"

# chunk_sleep SECONDS: each session opened from now on sleeps SECONDS in $CHUNK_SLEEP_SQL.
chunk_sleep() {
    psql_q "do \$\$ begin execute format('alter database %I set sluice_test.chunk_sleep = %L', current_database(), '$1'); end \$\$"
}

# show_state [TABLE]: diag lines that explain a failure: the kills and the last runner's exit, the rows of
# TABLE (default t) per value of n, the bookkeeping (with the ranges of a job with workers), the status,
# and the end of the background runners' logs.
show_state() {
    local table=${1:-t}
    diag "kill -9's: ${KILLS:-none}; last runner exit: ${RC:-none (still running)}"
    diag "rows per n in $table: $(psql_q "select string_agg(n || ': ' || c, ', ' order by n) from (select n, count(*) c from $table group by n) s" 2>&1)"
    diag "sluice_progress: $(psql_q "select count(*) || ' chunks, ' || coalesce(sum(rows), 0) || ' rows, max attempts ' || coalesce(max(attempts), 0) || ', ' || count(distinct range_no) || ' ranges, max chunk_no ' || coalesce(max(chunk_no), 0) from sluice_progress" 2>&1)"
    if sql_true "select to_regclass('sluice_ranges') is not null" 2>/dev/null; then
        diag "sluice_ranges: $(psql_q "select string_agg(range_no || ': (' || coalesce(after::text, '-') || ', ' || coalesce(until::text, '-') || ']', '; ' order by range_no) from sluice_ranges" 2>&1)"
    fi
    diag "status: $("$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" status --json 2>&1)"
    diag "runners' logs (last 30 lines each):"
    tail -n 30 "$T_DIR"/bg.*.err 2>/dev/null | sed 's/^/#   /' || true
}

# Until the runner committed a chunk past $1 (so the next kill lands mid-run) or it exited.
progress_past_or_exited() {
    local chunks
    runner_alive || return 0
    chunks=$(progress_chunks) || return 1
    ((chunks > $1))
}

# The invariant at every moment between kills, for a job that adds 1 to column n: the rows changed are
# exactly the rows of the chunks the bookkeeping table records (each chunk's effect commits with its
# record), and no row changed twice.
check_exactly_once_so_far() {
    local table=$1 got recorded=0
    # Killed before the first chunk, the bookkeeping table may not even exist yet: then nothing changed.
    if sql_true "select to_regclass('sluice_progress') is not null"; then
        recorded="(select coalesce(sum(rows), 0) from sluice_progress)"
    fi
    got=$(psql_q "select (select coalesce(sum(n), 0) from $table) = $recorded
                      and (select coalesce(max(n), 0) from $table) <= 1")
    [[ $got == t ]] && return 0
    show_state "$table"
    fail "after kill $KILLS: rows changed in $table do not match the committed chunks in sluice_progress, or a row changed twice"
}

# kill_loop TABLE CHUNKS KILLS [LOSE]: start `up` and kill -9 it KILLS times, each time once it committed
# a new chunk since the last kill, plus a random sleep (so kills land mid-statement, mid-commit, between
# the commit and the checkpoint write, and with workers while several chunks are in flight). The sleep
# is at most 300 ms, less when the runner goes so fast that 300 ms sleeps would let the job (about
# CHUNKS chunks in all) finish before the last kill. A job that ends anyway after half the kills or
# more (the probes between kills slow on a loaded machine) ends the loop there. With LOSE=lose, the
# checkpoint directory is deleted after every kill (a runner on a new machine each time): the
# database alone says what is done.
kill_loop() {
    local table=$1 total=$2 want=$3 lose=${4:-} before=0 cap=300 seen t0 t1 now
    KILLS=0
    while ((KILLS < want)); do
        sluice_start up
        wait_until 60 progress_past_or_exited "$before" || {
            show_state "$table"
            return 1
        }
        seen=$(progress_chunks)
        t0=$(now_ms)
        random_sleep 0 "$cap"
        if ! runner_alive; then
            sluice_wait
            # on a machine so busy that the probes between kills let the job run out: half the kills, at
            # random moments, still test what the rest would have (the checks below and after are the same)
            if ((RC == 0 && KILLS * 2 >= want)); then
                diag "the job ended after $KILLS of $want kills: the machine is slow beside the job's chunks"
                before=$(progress_chunks)
                break
            fi
            show_state "$table"
            fail "the runner exited ($RC) before kill $((KILLS + 1)) of $want: the job is too short for the test"
            return 1
        fi
        sluice_kill KILL
        t1=$(now_ms)
        assert_rc 137
        KILLS=$((KILLS + 1))
        check_exactly_once_so_far "$table"
        [[ $lose == lose ]] && rm -rf "$CKPT"
        now=$(progress_chunks)
        diag "kill $KILLS: $now chunks committed (sleep cap ${cap} ms)"
        # Chunks per second while sleeping, and what is left per remaining kill: spend a third of it
        # sleeping (a restart and the probes between kills, slower on a busy machine, take their share).
        if ((KILLS < want && now > seen && t1 > t0)); then
            cap=$(((total - now) * (t1 - t0) / (3 * (want - KILLS) * (now - seen))))
            ((cap > 300)) && cap=300
            ((cap < 5)) && cap=5
        fi
        before=$now
    done
    diag "$KILLS kill -9's; $before of about $total chunks committed before the final up"
}

# finish_and_check TABLE ROWS: a last `up` to completion, then every row changed exactly once, status
# agrees with the bookkeeping table, and chunk numbers are unique (with workers they may have gaps).
finish_and_check() {
    local table=$1 rows=$2 chunks status
    run_sluice up
    assert_rc 0 || {
        show_state "$table"
        return 1
    }
    if ! sql_true "select count(*) = 0 from $table where n <> 1" || ! sql_true "select sum(n) = $rows from $table"; then
        show_state "$table"
        fail "not every row of $table was changed exactly once"
        return 1
    fi
    chunks=$(psql_q "select count(*) from sluice_progress")
    run_sluice status --json
    assert_rc 0
    status=$(jq -c '.[0] | [.state, .rows, .chunks]' <<<"$OUT")
    assert_eq "$status" "[\"done\",$rows,$chunks]" "status --json [state, rows, chunks] (sluice_progress has $chunks chunks)"
    assert_sql "select sum(rows), count(distinct chunk_no) from sluice_progress" "$rows|$chunks"
}
