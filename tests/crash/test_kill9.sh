#!/usr/bin/env bash
# test_kill9.sh: exactly once under kill -9 and a double SIGINT: a non-idempotent job, killed again and again, then resumed.
. "$(dirname "$0")/../harness/lib.sh"

# How many chunks are committed so far (0 before the first `up` made the bookkeeping table).
progress_chunks() {
    if sql_true "select to_regclass('sluice_progress') is not null"; then
        psql_q "select count(*) from sluice_progress"
    else
        echo 0
    fi
}

# Whether the background runner $SLUICE_PID is still running.
runner_alive() {
    kill -0 "$SLUICE_PID" 2>/dev/null
}

# Until the runner committed a chunk past $1 (so the next kill lands mid-run) or it exited.
progress_past_or_exited() {
    local chunks
    runner_alive || return 0
    chunks=$(progress_chunks) || return 1
    ((chunks > $1))
}

# What a failure needs to be understood: the kills, the rows per value of n, the bookkeeping, the state.
show_state() {
    local table=$1
    diag "kill -9's: $KILLS; last runner exit: ${RC:-none}"
    diag "rows per n in $table: $(psql_q "select string_agg(n || ': ' || c, ', ' order by n) from (select n, count(*) c from $table group by n) s" 2>&1)"
    diag "sluice_progress: $(psql_q "select count(*) || ' chunks, ' || coalesce(sum(rows), 0) || ' rows, max attempts ' || coalesce(max(attempts), 0) from sluice_progress" 2>&1)"
    diag "status: $("$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" status --json 2>&1)"
}

# The invariant at every moment between kills: the rows changed are exactly the rows of the chunks the
# bookkeeping table records (each chunk's effect commits with its record), and no row changed twice.
check_exactly_once_so_far() {
    local table=$1 got
    got=$(psql_q "select (select coalesce(sum(n), 0) from $table) = (select coalesce(sum(rows), 0) from sluice_progress)
                      and (select coalesce(max(n), 0) from $table) <= 1")
    [[ $got == t ]] && return 0
    show_state "$table"
    fail "after kill $KILLS: rows changed in $table do not match the committed chunks in sluice_progress, or a row changed twice"
}

# Milliseconds since the epoch.
now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
}

# kill_loop TABLE CHUNKS KILLS: start `up` and kill -9 it KILLS times, each time once it committed a new
# chunk since the last kill, plus a random sleep (so kills land mid-statement, mid-commit, between the
# commit and the checkpoint write). The sleep is at most 300 ms, less when the runner goes so fast that
# 300 ms sleeps would let the job (CHUNKS chunks in all) finish before the last kill.
kill_loop() {
    local table=$1 total=$2 want=$3 before=0 cap=300 seen t0 t1 now
    KILLS=0
    while ((KILLS < want)); do
        sluice_start up
        wait_until 60 progress_past_or_exited "$before" || { show_state "$table"; return 1; }
        seen=$(progress_chunks)
        t0=$(now_ms)
        random_sleep 0 "$cap"
        if ! runner_alive; then
            sluice_wait
            show_state "$table"
            fail "the runner exited ($RC) before kill $((KILLS + 1)) of $want: the job is too short for the test"
            return 1
        fi
        sluice_kill KILL
        t1=$(now_ms)
        assert_rc 137
        KILLS=$((KILLS + 1))
        check_exactly_once_so_far "$table"
        now=$(progress_chunks)
        diag "kill $KILLS: $now chunks committed (sleep cap ${cap} ms)"
        # Chunks per second while sleeping, and what is left per remaining kill: spend half of it sleeping.
        if ((KILLS < want && now > seen && t1 > t0)); then
            cap=$(((total - now) * (t1 - t0) / (2 * (want - KILLS) * (now - seen))))
            ((cap > 300)) && cap=300
            ((cap < 5)) && cap=5
        fi
        before=$now
    done
    diag "$KILLS kill -9's; $before of $total chunks committed before the final up"
}

# finish_and_check TABLE ROWS: a last `up` to completion, then every row changed exactly once and
# status agrees with the bookkeeping table.
finish_and_check() {
    local table=$1 rows=$2 chunks status
    run_sluice up
    assert_rc 0 || { show_state "$table"; return 1; }
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
    assert_sql "select sum(rows) from sluice_progress" "$rows"
}

test_kill9_single_key() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 200000); analyze t"
    # The sleep keeps each chunk's transaction open a few ms: the runner must not finish 8000 chunks
    # before the 20th kill however fast it gets, and most kills land inside a transaction.
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 25
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_sleep(0.003);
EOF
    kill_loop t 8000 20
    finish_and_check t 200000
}

test_kill9_composite_key() {
    psql_q "create table tc (tenant int, id int, n int not null default 0, primary key (tenant, id));
            insert into tc (tenant, id) select t, i from generate_series(1, 40) t, generate_series(1, 2500) i;
            analyze tc"
    write_job 0001_bump_composite <<'EOF'
-- sluice:table tc
-- sluice:batch 25
-- sluice:up
UPDATE tc SET n = n + 1 WHERE (tenant, id) BETWEEN :lo AND :hi;
SELECT pg_sleep(0.003);
EOF
    kill_loop tc 4000 8
    finish_and_check tc 100000
}

# Two SIGINTs in quick succession: the second aborts the chunk in flight at once (rolled back, never half
# done), exit 3; the next `up` resumes and every row still changes exactly once.
test_double_sigint_then_resume() {
    KILLS=0
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 50000); analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 60 progress_past_or_exited 2
    runner_alive || fail "the runner exited before the signals: the job is too short for the test"
    kill -INT "$SLUICE_PID"
    sleep 0.02
    sluice_kill INT
    assert_rc 3
    check_exactly_once_so_far t
    if sql_true "select count(*) = 0 from t where n = 0"; then
        fail "the double SIGINT did not stop the run before it finished: nothing left to resume"
    fi
    run_sluice status --json
    assert_rc 0
    state=$(jq -r '.[0].state' <<<"$OUT")
    assert_eq "$state" stopped "state after a double SIGINT"
    finish_and_check t 50000
}

run_test "20 kill -9's at random moments, then up: every row of 200,000 changed exactly once" test_kill9_single_key
run_test "8 kill -9's over a composite key, then up: every row changed exactly once" test_kill9_composite_key
run_test "two quick SIGINTs abort with exit 3; up resumes exactly once" test_double_sigint_then_resume
t_done
