#!/usr/bin/env bash
# test_restart.sh: the server restarted or down for a while mid-run: sluice reconnects by itself and finishes exactly once.
. "$(dirname "$0")/../harness/lib.sh"
. "$(dirname "$0")/../harness/kill.sh"
. "$(dirname "$0")/../harness/clusters.sh"

# It restarts and stops its server: a server of its own, so that the other files go on beside it.
own_server

ROWS=200000

# A non-idempotent job over $ROWS rows, long enough to be interrupted mid-run.
make_job() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, $ROWS); analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 25
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
}

# Start `up` and return once it has committed a few chunks, failing if it finished already.
start_mid_run() {
    sluice_start up
    wait_until 60 progress_past_or_exited 20
    runner_alive || { sluice_wait; show_state; fail "the runner exited ($RC) before the server went away"; }
    BEFORE=$(progress_chunks)
    diag "$BEFORE chunks committed when the server went away"
}

# The same runner (no second `up`) finishes with exit 0, every row changed exactly once, status agrees
# with the bookkeeping table, and it said it reconnected.
finishes_exactly_once() {
    local chunks status
    wait_until 200 runner_exited || { show_state; return 1; }
    sluice_wait
    assert_rc 0 || { show_state; return 1; }
    if ! sql_true "select count(*) = 0 from t where n <> 1" || ! sql_true "select sum(n) = $ROWS from t"; then
        show_state
        fail "not every row was changed exactly once"
    fi
    ((BEFORE < $(psql_q "select count(*) from sluice_progress"))) || fail "no chunk committed after the reconnect"
    assert_contains "$ERR" "reconnected" "the runner's log"
    chunks=$(psql_q "select count(*) from sluice_progress")
    run_sluice status --json
    assert_rc 0
    status=$(jq -c '.[0] | [.state, .rows, .chunks]' <<<"$OUT")
    assert_eq "$status" "[\"done\",$ROWS,$chunks]" "status --json [state, rows, chunks] (sluice_progress has $chunks chunks)"
    assert_sql "select sum(rows) from sluice_progress" "$ROWS"
}

test_immediate_restart() {
    make_job
    start_mid_run
    pg_restart
    finishes_exactly_once
}

test_server_down_5s() {
    make_job
    start_mid_run
    pg_stop
    sleep 5
    # Still waiting for the server, not given up.
    runner_alive || { sluice_wait; show_state; fail "the runner exited ($RC) while the server was down"; }
    pg_start
    finishes_exactly_once
}

# Two runners (two jobs, one database) lose the server together. Each comes back, re-takes its own lock
# and finishes exactly once; and their backoff is jittered independently (a per-process random seed), so
# runners that lost the same server do not all knock again at the same instants.
test_two_runners_jitter_apart() {
    local a b delays_a delays_b
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 100000);
            create table u (id int primary key, n int not null default 0);
            insert into u (id) select generate_series(1, 100000); analyze t; analyze u"
    write_job 0001_bump_t <<'EOF'
-- sluice:table t
-- sluice:batch 25
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    write_job 0002_bump_u <<'EOF'
-- sluice:table u
-- sluice:batch 25
-- sluice:up
UPDATE u SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up 0001_bump_t
    a=$SLUICE_PID
    sluice_start up 0002_bump_u
    b=$SLUICE_PID
    wait_until 60 sql_true "select count(distinct job) = 2 from sluice_progress"
    if ! kill -0 "$a" || ! kill -0 "$b"; then
        fail "a runner finished before the server went away"
    fi
    pg_stop
    sleep 3
    pg_start
    for SLUICE_PID in "$a" "$b"; do
        wait_until 200 runner_exited || { show_state; return 1; }
        sluice_wait
        assert_rc 0 || { show_state; return 1; }
        assert_contains "$ERR" "reconnected" "the runner's log"
    done
    assert_sql "select count(*) from t where n <> 1" 0
    assert_sql "select count(*) from u where n <> 1" 0
    assert_sql "select job || ':' || sum(rows) from sluice_progress group by job order by job" \
        "0001_bump_t:100000"$'\n'"0002_bump_u:100000"
    # every delay of each runner, the first ("reconnecting in") and the later ones ("trying again in"):
    # two first delays alone are the same once in about 200 runs
    delays_a=$(grep -Eo '(reconnecting|trying again) in [0-9]* ms' "${_T_BG_FILES[$a]}.err" | tr '\n' ' ')
    delays_b=$(grep -Eo '(reconnecting|trying again) in [0-9]* ms' "${_T_BG_FILES[$b]}.err" | tr '\n' ' ')
    diag "runner 1: $delays_a"
    diag "runner 2: $delays_b"
    [[ -n $delays_a ]] || fail "runner 1 logged no reconnect delay"
    assert_ne "$delays_a" "$delays_b" "the two runners' reconnect delays (jitter must differ between processes)"
}

# The server stops taking writes mid-run: a primary fenced for a switchover (default_transaction_read_only
# on, the configuration reloaded, so its open sessions' next transaction is read-only), or an address
# that names the old primary, a standby now. Each test turns it back on however it ends.
server_read_only() {
    psql_q "alter system set default_transaction_read_only = $1" && psql_q "select pg_reload_conf()" >/dev/null
}

writes_refused_in_log() {
    grep -q "takes no writes" "${_T_BG_FILES[$SLUICE_PID]}.err" || ! runner_alive
}

# Read-only for a few seconds, under `up` and then under `down`, of a job with 2 workers and a snapshot:
# the refused write is a dropped connection, the reconnects wait for a server that takes writes, and
# both finish exactly once: every row changed once after `up`, the table as it was after `down`.
test_read_only_for_a_while_up_and_down() {
    local before
    trap 'server_read_only off; _t_teardown' EXIT
    psql_q "create table t (id int primary key, n int not null default 0, note text);
            insert into t (id, note) select g, 'row ' || g from generate_series(1, $ROWS) g; analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:workers 2
-- sluice:undo snapshot(n, note)
-- sluice:up
UPDATE t SET n = n + 1, note = 'changed' WHERE id BETWEEN :lo AND :hi;
EOF
    before=$(table_sum)
    for cmd in up down; do
        if [[ $cmd == up ]]; then start_mid_run; else
            sluice_start down 0001_bump
            wait_until 60 sql_true "select count(*) > 0 from t where n = 0 and note like 'row %'"
        fi
        server_read_only on
        wait_until 30 writes_refused_in_log
        sleep 2
        runner_alive || { sluice_wait; show_state; fail "$cmd exited ($RC) while the server took no writes"; }
        server_read_only off
        wait_until 200 runner_exited || { show_state; return 1; }
        sluice_wait
        assert_rc 0 || { show_state; return 1; }
        assert_contains "$ERR" "stopped taking writes (a standby now, after a failover?): cannot execute" "$cmd's log"
        assert_contains "$ERR" "takes no writes: default_transaction_read_only is on" "$cmd's log"
        assert_contains "$ERR" "reconnected" "$cmd's log"
        if [[ $cmd == up ]]; then
            assert_sql "select count(*) from t where n <> 1 or note <> 'changed'" 0
            assert_sql "select sum(rows) from sluice_progress" "$ROWS"
            assert_sql "select count(*) from sluice_undo" "$(psql_q "select count(*) from sluice_progress")"
        fi
    done
    assert_eq "$(table_sum)" "$before" "the table after down (md5 of every row)"
}

# Read-only for longer than the reconnects last (SLUICE_RECONNECT_FOR): `up` gives up with exit 1,
# saying why; once the server takes writes again, `up` resumes and every row is changed once.
test_read_only_too_long() {
    trap 'server_read_only off; _t_teardown' EXIT
    export SLUICE_RECONNECT_FOR=2s
    make_job
    start_mid_run
    server_read_only on
    wait_until 60 runner_exited || { show_state; return 1; }
    sluice_wait
    assert_rc 1
    assert_contains "$ERR" "gave up reconnecting after 2s: " "the runner's log"
    assert_contains "$ERR" "takes no writes: default_transaction_read_only is on for this connection" \
        "the runner's log"
    server_read_only off
    unset SLUICE_RECONNECT_FOR
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n <> 1" 0
    assert_sql "select sum(rows) from sluice_progress" "$ROWS"
}

journal_chunks() {
    sqlite3 -bail "$CKPT/0001_bump.sluice" "select count(*) from chunks"
}

# Chunks commit without waiting for the disk (synchronous-commit off, the default), so a crash of the
# server's machine (power, kernel) loses the last few, each with its sluice_progress row, while the
# checkpoint file, written after each commit, has them; when the runner died with it, the next up finds
# the file ahead of a server that restarted. A test cannot crash the kernel: this one makes the
# database lose its last three chunks as such a crash does (their rows' change and their
# sluice_progress rows, in one transaction). Before a restart that is refused, as rows deleted by hand
# are (nothing changed); after one, up goes by the database, says why, and every row is changed once.
test_crash_with_the_runner() {
    make_job
    sluice_start up
    wait_until 60 progress_past_or_exited 20
    runner_alive || { sluice_wait; fail "the runner exited before the crash"; }
    sluice_kill TERM # its last chunk in the file too (a kill -9 may come between a commit and its entry)
    assert_rc 3
    psql_q "with gone as (delete from sluice_progress where chunk_no > (select max(chunk_no) - 3 from sluice_progress)
                          returning lo[1]::int lo, hi[1]::int hi)
            update t set n = n - 1 from gone where t.id between gone.lo and gone.hi" >/dev/null
    local file db before
    file=$(journal_chunks)
    db=$(progress_chunks)
    assert_eq "$((file - db))" 3 "chunks the checkpoint file holds over the database's"
    before=$(psql_q "select md5(string_agg(t::text, ',' order by id)) from t")
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "records 3 committed chunks"
    assert_contains "$ERR" "that this database's sluice_progress does not have"
    assert_sql "select md5(string_agg(t::text, ',' order by id)) from t" "$before"
    pg_restart
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_bump: the database no longer has 3 chunks that checkpoint file "
    assert_contains "$ERR" "its server restarted since the file last saw it, and a crash loses the last commits made without waiting for the disk (synchronous-commit off, the default); the database decides what is applied: going by it"
    assert_sql "select count(*) from t where n <> 1" 0
    assert_sql "select sum(rows) from sluice_progress" "$ROWS"
    assert_eq "$(journal_chunks)" "$(progress_chunks)" "chunks in the checkpoint file and in sluice_progress"
}

run_test "server restarted (-m immediate) mid-run: sluice reconnects and finishes exactly once" test_immediate_restart
run_test "server down 5 s mid-run: sluice keeps retrying and finishes exactly once" test_server_down_5s
run_test "server read-only for a while under up and down (2 workers, snapshot): both finish exactly once" \
    test_read_only_for_a_while_up_and_down
run_test "server read-only longer than the reconnects last: exit 1 saying so, then up resumes exactly once" \
    test_read_only_too_long
run_test "runner and server's machine crash together: the next up goes by the commits the server kept, exactly once" \
    test_crash_with_the_runner
run_test "two runners lose the server together: both finish exactly once, with independent jitter" test_two_runners_jitter_apart
t_done
