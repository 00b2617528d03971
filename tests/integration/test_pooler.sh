#!/usr/bin/env bash
# test_pooler.sh: every command through PgBouncer (Debian's, 1.18) in transaction mode, with pgbench on the same pool.
#
# The pooler: Debian's pgbouncer, started by this file on a free port as the postgres user (it refuses
# to run as root), pool_mode = transaction, default_pool_size = 3, auth_type = trust towards its
# clients and the test server's password (a userlist) towards the server. Its "* =" line sends each
# test's database to the same name on the test server, so every test has its own pool of three
# server connections, shared by sluice's connections (workers, the lease keeper) and pgbench's
# clients. PgBouncer 1.18 keeps no prepared statements across server connections and resets nothing
# between clients: whatever sluice left in a server session, the next client of the pool finds.
#
# What each test checks on the server itself (psql_q goes around the pooler): every row changed
# exactly once, no advisory lock in pg_locks after any exit or kill -9.
. "$(dirname "$0")/../harness/lib.sh"
. "$(dirname "$0")/../harness/pooler.sh"

_pooler_file_cleanup() {
    pgb_stop
    _t_file_cleanup
}
trap _pooler_file_cleanup EXIT

# Each test: sluice reaches its database through the pooler (SLUICE_DB), psql_q directly.
through_pooler() {
    [[ -z $PGB_ERR ]] || fail "$PGB_ERR"
    export SLUICE_DB="postgresql://$PGUSER@127.0.0.1:$PGB_PORT/$T_DB${1:-}"
}

# pgbench's TPC-B clients on the same pool for the length of the test (its tables made directly).
pgbench_start() {
    pgbench -i -q -s 1 "$T_DB" >"$T_DIR/pgbench-init.log" 2>&1 || fail "pgbench -i: $(cat "$T_DIR/pgbench-init.log")"
    pgbench -n -c 4 -T 300 -h 127.0.0.1 -p "$PGB_PORT" -U "$PGUSER" "$T_DB" >"$T_DIR/pgbench.log" 2>&1 &
    PGBENCH_PID=$!
    wait_until 20 sql_true "select count(*) > 0 from pgbench_history"
}

# pgbench is still going (it exits on its first failed transaction).
pgbench_alive() {
    kill -0 "$PGBENCH_PID" 2>/dev/null || fail "pgbench stopped: $(tail -n 5 "$T_DIR/pgbench.log")"
}

# In this test's database: pg_locks shows the whole cluster, where the test files running beside this
# one take their own (sluice's schema creation holds a transaction-level one for a moment).
no_advisory_locks() {
    assert_sql "select count(*) from pg_locks where locktype = 'advisory'
                and database = (select oid from pg_database where datname = current_database())" 0
}

progress_rows() {
    psql_q "select coalesce(sum(rows), 0) from sluice_progress where job = '$1'"
}

test_up_one_worker() {
    through_pooler
    make_table 20000
    pgbench_start
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 500
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice plan 0001_bump
    assert_rc 0
    assert_contains "$OUT" "first chunk: :lo = (1)"
    run_sluice up
    assert_rc 0
    no_advisory_locks
    assert_contains "$ERR" "connected through a pooler"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "20000|0"
    assert_sql "select count(*), sum(rows) from sluice_progress where job = '0001_bump'" "40|20000"
    run_sluice status --json
    assert_rc 0
    STATUS_JSON=$OUT
    assert_eq "$(sfield 0001_bump state)" done
    assert_eq "$(sfield 0001_bump source)" database
    pgbench_alive
}

test_four_workers_down_stamp() {
    through_pooler
    make_table 20000
    pgbench_start
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 300
-- sluice:workers 4
-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    no_advisory_locks
    assert_contains "$ERR" "4 workers"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "20000|0"
    assert_ranges_chain 0001_bump
    run_sluice down 0001_bump
    assert_rc 0
    no_advisory_locks
    assert_sql "select count(*) filter (where n = 0) from t" 20000
    assert_sql "select count(*) from sluice_progress where job = '0001_bump'" 0
    run_sluice stamp 0001_bump done
    assert_rc 0
    no_advisory_locks
    assert_sql "select state, stamped from sluice_jobs where job = '0001_bump'" "done|t"
    run_sluice stamp 0001_bump pending
    assert_rc 0
    assert_sql "select state from sluice_jobs where job = '0001_bump'" pending
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) filter (where n = 1) from t" 20000
    no_advisory_locks
    # a down section, through the pool: each chunk's rows locked, read and undone in one transaction
    write_job 0002_double <<'EOF'
-- sluice:table t
-- sluice:batch 300
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n * 2 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET n = n / 2 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) filter (where n = 2) from t" 20000
    run_sluice down 0002_double
    assert_rc 0
    no_advisory_locks
    assert_sql "select count(*) filter (where n = 1) from t" 20000
    assert_sql "select state from sluice_jobs where job = '0002_double'" rolled_back
    pgbench_alive
}

test_kill9_resume() {
    through_pooler
    make_table 30000
    pgbench_start
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 200
-- sluice:workers 4
-- sluice:pause 20ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    local round rows
    for round in 1 2 3 4; do
        sluice_start up
        wait_until 60 sql_true "select to_regclass('sluice_progress') is not null"
        random_sleep 300 1500
        if ((round == 2)); then
            run_cmd "$SLUICE" --checkpoints "$CKPT" ctl 0001_bump status
            [[ $RC == 0 ]] && assert_contains "$OUT" "job 0001_bump"
        fi
        sluice_kill KILL
        rows=$(progress_rows 0001_bump)
        diag "round $round: killed with $rows rows committed"
        no_advisory_locks
        # Every committed chunk's rows changed once, none of the others.
        assert_sql "select count(*) filter (where n = 1) = $rows, count(*) filter (where n > 1) from t" "t|0"
    done
    run_sluice up
    assert_rc 0
    no_advisory_locks
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "30000|0"
    assert_sql "select sum(rows) from sluice_progress where job = '0001_bump'" 30000
    pgbench_alive
}

# The features together, as an operator runs them: a composite key, workers, on-error skip and
# snapshot(*) undo, through the pool with pgbench on it. `up` is killed at random moments, then
# resumed with another worker count; `down` (on the job's workers) is killed too, then finished.
# v = 2 * g for row g (a = g / 100, b = g % 100); the job adds 1, which the check refuses for the
# 60 rows whose 2 * g ends in 000: they are set aside, every other row is changed once, and after
# the last `down` the table is what it was. The pause holds each worker to at most 50 chunks a second:
# three rounds of at most 1.5 s cannot finish the 600 chunks of `up` on two workers, or undo them on
# three.
test_kill9_features_together() {
    through_pooler
    psql_q "create table c (a int, b int, v int not null check (v % 1000 <> 1), note text, primary key (a, b));
            insert into c select g / 100, g % 100, 2 * g, null from generate_series(1, 30000) g; analyze c"
    local before round job_text
    before=$(table_sum_c)
    pgbench_start
    job_text='-- sluice:table c
-- sluice:key a, b
-- sluice:batch 50
-- sluice:workers WORKERS
-- sluice:pause 20ms
-- sluice:on-error skip
-- sluice:undo snapshot(*)
-- sluice:up
UPDATE c SET v = v + 1, note = '"'"'x'"'"' || v WHERE (a, b) BETWEEN :lo AND :hi;'
    write_job 0001_odd <<<"${job_text/WORKERS/2}"
    for round in 1 2 3; do
        sluice_start up
        wait_until 60 sql_true "select to_regclass('sluice_progress') is not null"
        random_sleep 300 1500
        sluice_kill KILL
        diag "up round $round: killed at $(progress 0001_odd)"
        no_advisory_locks
        assert_sql "select coalesce(sum(rows), 0) < 29940 from sluice_progress where job = '0001_odd'" t
        # the rows of the chunks sluice_progress lists were changed once, no other row
        assert_sql "select count(*) filter (where c.v <> 2 * (c.a * 100 + c.b) + 1 and p.job is not null
                                              and c.v % 1000 <> 0),
                           count(*) filter (where c.v <> 2 * (c.a * 100 + c.b) and p.job is null)
                      from c left join sluice_progress p on p.job = '0001_odd' and not p.skipped
                       and (c.a, c.b) between (p.lo[1]::int, p.lo[2]::int) and (p.hi[1]::int, p.hi[2]::int)" "0|0"
    done
    write_job 0001_odd <<<"${job_text/WORKERS/3}"
    run_sluice up --allow-changed-statements
    assert_rc 0
    no_advisory_locks
    assert_sql "select count(*) filter (where v = 2 * (a * 100 + b) + 1), count(*) filter (where v = 2 * (a * 100 + b)),
                       count(*) filter (where v % 1000 = 0 and note is null) from c" "29940|60|60"
    assert_sql "select count(*) from sluice_progress where job = '0001_odd' and skipped" 60
    for round in 1 2 3; do
        sluice_start down 0001_odd
        random_sleep 300 1500
        sluice_kill KILL
        diag "down round $round: killed at $(progress 0001_odd)"
        no_advisory_locks
        assert_sql "select count(*) > 60 from sluice_progress where job = '0001_odd'" t
        # each chunk still listed keeps its change; each one undone is back as it was
        assert_sql "select count(*) from c left join sluice_progress p on p.job = '0001_odd' and not p.skipped
                       and (c.a, c.b) between (p.lo[1]::int, p.lo[2]::int) and (p.hi[1]::int, p.hi[2]::int)
                     where (p.job is null) <> (c.v = 2 * (c.a * 100 + c.b))" 0
    done
    run_sluice down 0001_odd
    assert_rc 0
    assert_contains "$ERR" "3 workers over "
    no_advisory_locks
    assert_eq "$(table_sum_c)" "$before" "the table after up and down, each killed three times"
    assert_sql "select state from sluice_jobs where job = '0001_odd'" rolled_back
    assert_sql "select count(*) from sluice_undo" 0
    pgbench_alive
}

table_sum_c() {
    psql_q "select md5(string_agg(c::text, ',' order by a, b)) from c"
}

test_second_runner_refused() {
    through_pooler
    make_table 5000
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 200ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    local first=$SLUICE_PID
    wait_until 30 sql_true "select to_regclass('sluice_progress') is not null and exists (select from sluice_progress)"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "already being run"
    run_cmd "$SLUICE" --checkpoints "$CKPT" ctl 0001_bump status
    assert_rc 0
    assert_contains "$OUT" "job 0001_bump"
    # from another machine (no socket in its checkpoint directory): through the pool to the runner
    run_cmd "$SLUICE" --checkpoints "$T_DIR/elsewhere" ctl 0001_bump pause
    assert_rc 0
    assert_contains "$OUT" "paused by sluice ctl"
    assert_contains "$ERR" "answered through"
    run_cmd "$SLUICE" --checkpoints "$T_DIR/elsewhere" ctl 0001_bump status
    assert_rc 0
    assert_contains "$OUT" "state paused"
    run_cmd "$SLUICE" --checkpoints "$T_DIR/elsewhere" ctl 0001_bump resume
    assert_rc 0
    assert_sql "select count(*) from sluice_ctl" 0
    sluice_kill INT "$first"
    assert_rc 3
    assert_contains "$ERR" "connected through a pooler"
    no_advisory_locks
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "5000|0"
    no_advisory_locks
}

# Told the session is its own (sluice_pooler=none), sluice prepares statements; through the pooler
# they go missing or turn up where another client made them, and sluice switches by itself. down
# prepares its statements too (the record taken, the restore): the same switch, in its own process.
test_detects_missing_statements() {
    through_pooler "?sluice_pooler=none"
    make_table 20000
    local before
    before=$(psql_q "select md5(string_agg(id || ':' || n, ',' order by id)) from t")
    pgbench_start
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 200
-- sluice:workers 4
-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_match "$ERR" "prepared statement of this connection (went missing|was already there)"
    assert_contains "$ERR" "sluice_pooler=transaction"
    assert_eq "$(grep -c 'the server session changes between transactions' <<<"$ERR")" 1 "lines saying so"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "20000|0"
    run_sluice down 0001_bump
    assert_rc 0
    assert_match "$ERR" "prepared statement of this connection (went missing|was already there)"
    assert_eq "$(grep -c 'the server session changes between transactions' <<<"$ERR")" 1 "lines saying so (down)"
    assert_sql "select md5(string_agg(id || ':' || n, ',' order by id)) from t" "$before"
    assert_sql "select count(*) from sluice_progress where job = '0001_bump'" 0
    pgbench_alive
    no_advisory_locks
}

# A float key needs 17 digits to read back as itself. The pooled servers start with
# extra_float_digits = 0 (15 digits): only sluice's own setting, in every transaction, keeps the walk
# exact; a key read back rounded would skip rows or change them twice.
test_session_settings_per_transaction() {
    through_pooler "?sluice_pooler=transaction"
    psql_q "alter database $T_DB set extra_float_digits = 0"
    psql_q "create table f (k float8 primary key, n int not null default 0);
            insert into f (k) select g / 7.0::float8 + g * 1e-13 from generate_series(1, 6000) g"
    write_job 0001_floats <<'EOF'
-- sluice:table f
-- sluice:batch 97
-- sluice:workers 2
-- sluice:up
UPDATE f SET n = n + 1 WHERE k BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_not_contains "$ERR" "connected through a pooler" "a pooler named in the string needs no finding out"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from f" "6000|0"
    # The rounded key is what a session with the pool's settings prints: the test would catch a slip.
    assert_sql "select count(*) > 0 from f where k::text::float8 <> k" t
}

# A pool of one server connection, two workers, and a failing row in every chunk (on-error skip):
# a batch that fails inside its transaction holds the pool's only connection until its ROLLBACK.
# sluice sends that ROLLBACK the moment the failure is in, not when its coordinator gets to the
# answer: the coordinator may be waiting for that very connection, finding the other worker's next
# chunk, and both would wait until the pooler's query_wait_timeout broke the run.
# pool_of_one NAME: a database NAME in PgBouncer, the test's own through a pool of one server
# connection, and SLUICE_DB through it.
pool_of_one() {
    [[ -z $PGB_ERR ]] || fail "$PGB_ERR"
    sed -i "/^\[databases\]/a $1 = host=$PGHOST port=$PGPORT dbname=$T_DB pool_size=1" "$PGB_DIR/pgbouncer.ini"
    psql -h 127.0.0.1 -p "$PGB_PORT" -U "$PGUSER" -d pgbouncer -XAtq -c "RELOAD" >/dev/null ||
        fail "pgbouncer did not reload its configuration"
    export SLUICE_DB="postgresql://$PGUSER@127.0.0.1:$PGB_PORT/$1?sluice_pooler=transaction"
}

test_failing_chunks_free_the_pool() {
    pool_of_one "${T_DB}_one"
    make_table 4000
    psql_q "update t set n = 990 where id % 100 = 7; alter table t add constraint small check (n < 1000)"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 2
-- sluice:on-error skip
-- sluice:up
UPDATE t SET n = n + 20 WHERE id BETWEEN :lo AND :hi;
EOF
    T_CMD_TIMEOUT=100 run_sluice up
    assert_rc 0
    assert_contains "$ERR" "set aside"
    assert_sql "select count(*) filter (where n = 20), count(*) filter (where n = 990), count(*) from t" "3960|40|4000"
    assert_sql "select count(*) from sluice_progress where job = '0001_bump' and skipped" 40
}

# status through a pool whose one server connection the application holds: the pooler accepts the
# connection and holds every query (its query_wait_timeout is 120 s); status says so within the
# connect timeout (3 s) and answers from the checkpoint files instead of waiting.
test_status_behind_a_busy_pool() {
    pool_of_one "${T_DB}_busy"
    make_table 500
    bump_job 0001_bump 100
    run_sluice up
    assert_rc 0
    psql -h 127.0.0.1 -p "$PGB_PORT" -U "$PGUSER" -d "${T_DB}_busy" -XAtq -c "begin" -c "select pg_sleep(12)" \
        -c "commit" >/dev/null 2>&1 &
    local holder=$! start
    wait_until 10 sql_true "select count(*) > 0 from pg_stat_activity where datname = current_database()
                            and query like '%pg_sleep(12)%' and pid <> pg_backend_pid()"
    start=$SECONDS
    run_sluice status --json
    assert_rc 0
    ((SECONDS - start <= 7)) || fail "status waited $((SECONDS - start)) s for the busy pool"
    assert_contains "$ERR" "did not answer within 3000 ms"
    assert_eq "$(jq -r '.[0].state + " " + .[0].source' <<<"$OUT")" "done checkpoint" "status from the files"
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null || true
}

test_refuses_bad_setting() {
    through_pooler "?sluice_pooler=sometimes"
    make_table 10
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" 'sluice_pooler "sometimes"'
    through_pooler
    SLUICE_POOLER=sometimes run_sluice plan 0001_bump
    assert_rc 2
    assert_contains "$ERR" "SLUICE_POOLER"
    assert_sql "select count(*) from t where n <> 0" 0
}

pgb_start "$PGHOST" "$PGPORT" || true
run_test "through PgBouncer: plan, up with one worker, status; pgbench on the same pool" test_up_one_worker
run_test "through PgBouncer: up with four workers and undo records, down, stamp done and pending; a down section" test_four_workers_down_stamp
run_test "through PgBouncer: kill -9 at random moments, resume: every row once, no advisory lock" test_kill9_resume
run_test "through PgBouncer: composite key, workers, on-error skip, snapshot(*): up and down each killed 3 times, then finished" \
    test_kill9_features_together
run_test "through PgBouncer: a second runner is refused, ctl answers (by socket and through the pool); SIGINT leaves nothing locked" \
    test_second_runner_refused
run_test "sluice_pooler=none through PgBouncer: missing statements found, switched, retried, in up and in down" test_detects_missing_statements
run_test "pooled: the session's settings hold in every transaction (float keys)" test_session_settings_per_transaction
run_test "a pool of one connection, two workers, a failing row in every chunk: failed batches free it at once" test_failing_chunks_free_the_pool
run_test "sluice_pooler and SLUICE_POOLER with a bad value are refused" test_refuses_bad_setting
run_test "status behind a pool whose one connection is busy: the checkpoint files within 3 s" \
    test_status_behind_a_busy_pool
t_done
