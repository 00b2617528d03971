#!/usr/bin/env bash
# test_kill9.sh: exactly once under kill -9 and a double SIGINT: a non-idempotent job, killed again and again, then resumed.
. "$(dirname "$0")/../harness/lib.sh"
. "$(dirname "$0")/../harness/kill.sh"

test_kill9_single_key() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 120000); analyze t"
    # The sleep keeps each chunk's transaction open a few ms: the runner must not finish 4800 chunks
    # before the 20th kill however fast it gets, and most kills land inside a transaction.
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 25
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_sleep(0.003);
EOF
    kill_loop t 4800 20
    finish_and_check t 120000
}

# The same with the checkpoint directory deleted after every kill: each resume starts on a bare machine.
test_kill9_lose_checkpoints() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 60000); analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 25
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_sleep(0.003);
EOF
    kill_loop t 2400 10 lose
    finish_and_check t 60000
}

test_kill9_composite_key() {
    psql_q "create table tc (tenant int, id int, n int not null default 0, primary key (tenant, id));
            insert into tc (tenant, id) select t, i from generate_series(1, 40) t, generate_series(1, 1500) i;
            analyze tc"
    write_job 0001_bump_composite <<'EOF'
-- sluice:table tc
-- sluice:batch 25
-- sluice:up
UPDATE tc SET n = n + 1 WHERE (tenant, id) BETWEEN :lo AND :hi;
SELECT pg_sleep(0.003);
EOF
    kill_loop tc 2400 8
    finish_and_check tc 60000
}

# Two SIGINTs in quick succession: the second aborts the chunk in flight at once (rolled back, never half
# done), exit 3; the next `up` resumes and every row still changes exactly once.
test_double_sigint_then_resume() {
    # shellcheck disable=SC2034 # show_state (kill.sh) prints it
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

run_test "20 kill -9's at random moments, then up: every row of 120,000 changed exactly once" test_kill9_single_key
run_test "10 kill -9's, the checkpoint directory deleted after each, then up: exactly once" test_kill9_lose_checkpoints
run_test "8 kill -9's over a composite key, then up: every row changed exactly once" test_kill9_composite_key
run_test "two quick SIGINTs abort with exit 3; up resumes exactly once" test_double_sigint_then_resume
t_done
