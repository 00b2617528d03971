#!/usr/bin/env bash
# test_kill9.sh: exactly once under kill -9 and a double SIGINT: a non-idempotent job, killed again and again, then resumed.
. "$(dirname "$0")/../harness/lib.sh"
. "$(dirname "$0")/../harness/kill.sh"

test_kill9_single_key() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 120000); analyze t"
    # The sleep keeps each chunk's transaction open a few ms: the runner must not finish 4800 chunks
    # before the 20th kill however fast it gets, and most kills land inside a transaction.
    chunk_sleep 0.003
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 25
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
$CHUNK_SLEEP_SQL
EOF
    kill_loop t 4800 20
    chunk_sleep 0
    finish_and_check t 120000
}

# The same with the checkpoint directory deleted after every kill: each resume starts on a bare machine.
test_kill9_lose_checkpoints() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 60000); analyze t"
    chunk_sleep 0.003
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 25
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
$CHUNK_SLEEP_SQL
EOF
    kill_loop t 2400 10 lose
    chunk_sleep 0
    finish_and_check t 60000
}

test_kill9_composite_key() {
    psql_q "create table tc (tenant int, id int, n int not null default 0, primary key (tenant, id));
            insert into tc (tenant, id) select t, i from generate_series(1, 40) t, generate_series(1, 1500) i;
            analyze tc"
    chunk_sleep 0.003
    write_job 0001_bump_composite <<EOF
-- sluice:table tc
-- sluice:batch 25
-- sluice:up
UPDATE tc SET n = n + 1 WHERE (tenant, id) BETWEEN :lo AND :hi;
$CHUNK_SLEEP_SQL
EOF
    kill_loop tc 2400 8
    chunk_sleep 0
    finish_and_check tc 60000
}

# Two SIGINTs: the second aborts the chunk in flight at once (rolled back, never half done), exit 3; the
# next `up` resumes and every row still changes exactly once. The chunk in flight waits on a row another
# session holds, so that the first signal cannot let it finish before the second one comes, however
# loaded the machine.
test_double_sigint_then_resume() {
    # shellcheck disable=SC2034 # show_state (kill.sh) prints it
    KILLS=0
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 50000); analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:lock-timeout 60s
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    hold_rows 60 "select 1 from t where id = 2520 for update"
    sluice_start up
    wait_runner_on_lock 30
    assert_sql "select count(*) from sluice_progress" 50
    kill -INT "$SLUICE_PID"
    wait_until 10 grep -q "received SIGINT" "${_T_BG_FILES[$SLUICE_PID]}.err"
    runner_alive || fail "the first SIGINT did not wait for the chunk in flight"
    sluice_kill INT
    assert_rc 3
    assert_contains "$ERR" "second signal: aborting the chunk in flight"
    release_rows 60
    check_exactly_once_so_far t
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n > 1) from t" "2500|0"
    assert_sql "select count(*) from sluice_progress" 50
    run_sluice status --json
    assert_rc 0
    state=$(jq -r '.[0].state' <<<"$OUT")
    assert_eq "$state" stopped "state after a double SIGINT"
    finish_and_check t 50000
}

run_test "20 kill -9's at random moments, then up: every row of 120,000 changed exactly once" test_kill9_single_key
run_test "10 kill -9's, the checkpoint directory deleted after each, then up: exactly once" test_kill9_lose_checkpoints
run_test "8 kill -9's over a composite key, then up: every row changed exactly once" test_kill9_composite_key
run_test "two SIGINTs abort the chunk in flight with exit 3; up resumes exactly once" test_double_sigint_then_resume
t_done
