#!/usr/bin/env bash
# test_unattended.sh: sluice under cron, CI or an ssh session: closed standard descriptors, SIGHUP, no password in argv.
. "$(dirname "$0")/../harness/lib.sh"

# run_closed WHICH ARGS...: run sluice (with --jobs/--checkpoints) with descriptor WHICH closed: 0, 1, 2,
# or all. What is left open goes to last.out / last.err as with run_sluice; sets RC, OUT, ERR.
run_closed() {
    local which=$1 out="$T_DIR/last.out" err="$T_DIR/last.err"
    shift
    local cmd=(timeout --foreground -k 5 120 "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" "$@")
    : >"$out"
    : >"$err"
    LAST_CMD="$(_t_show "${cmd[@]:4}") with fd $which closed"
    RC=0
    case $which in
    0) "${cmd[@]}" <&- >"$out" 2>"$err" || RC=$? ;;
    1) "${cmd[@]}" </dev/null >&- 2>"$err" || RC=$? ;;
    2) "${cmd[@]}" </dev/null >"$out" 2>&- || RC=$? ;;
    all) "${cmd[@]}" <&- >&- 2>&- || RC=$? ;;
    *) fail "BUG: run_closed $which" ;;
    esac
    OUT=$(cat "$out")
    ERR=$(cat "$err")
    echo "\$ $LAST_CMD -> exit $RC"
}

# up, status, down with stdin, stdout, stderr or all three closed: every command does its work and
# exits as usual (it used to abort in libuv's teardown with exit 134: its epoll descriptor took the
# closed number). Against PostgreSQL and a SQLite file.
test_closed_descriptors() {
    local which=$1
    make_table 500
    bump_job --down 0001_bump 100
    run_closed "$which" up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|500"
    [[ $which == 2 || $which == all ]] || assert_contains "$ERR" "done: 500 rows" "up's log"
    run_closed "$which" status
    assert_rc 0
    [[ $which == 1 || $which == all ]] || assert_contains "$OUT" "0001_bump" "status"
    run_closed "$which" history
    assert_rc 0
    run_closed "$which" down 0001_bump
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "0|0|500"
    load_status
    assert_eq "$(sfield 0001_bump state)" rolled_back "state after down"
    # Exit codes as usual: a refused command still says 2.
    run_closed "$which" up no_such_job
    assert_rc 2
    [[ $which == 2 || $which == all ]] || assert_contains "$ERR" "no_such_job" "stderr"

    # a database of its own needs a checkpoint directory of its own
    CKPT="$T_DIR/checkpoints-sqlite"
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 300
    run_closed "$which" up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|300"
    run_closed "$which" down 0001_bump
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "0|0|300"
}

# A checkpoint file or socket that took number 1 or 2 would receive log lines: the checkpoint directory
# holds only sluice's own files, each readable as what it is.
test_closed_descriptors_leave_files_alone() {
    make_table 500
    bump_job --down 0001_bump 100
    run_closed all up
    assert_rc 0
    run_sluice status --json
    assert_rc 0
    STATUS_JSON=$OUT
    assert_eq "$(sfield 0001_bump state)" done "state"
    assert_eq "$(sfield 0001_bump rows)" 500 "rows"
    local f
    for f in "$CKPT"/*.sluice; do
        [[ $(head -c 15 "$f") == "SQLite format 3" ]] || fail "$f is not a SQLite file any more"
    done
}

# SIGHUP (the terminal or ssh session closed) stops like SIGTERM: the chunk in flight finishes, the
# checkpoint is written, exit 3; status says stopped, history not running; up resumes exactly once.
test_sighup_stops() {
    make_table 3000
    bump_job --down 0001_bump 100 "-- sluice:pause 100ms"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 2 from sluice_progress"
    sluice_kill HUP
    assert_rc 3
    assert_contains "$ERR" "received SIGHUP" "stderr"
    local chunks
    load_status
    assert_eq "$(sfield 0001_bump state)" stopped "state after SIGHUP"
    chunks=$(sfield 0001_bump chunks)
    ((chunks >= 2 && chunks < 30)) || fail "chunks after SIGHUP: $chunks"
    assert_sql "select count(*) from sluice_progress" "$chunks"
    assert_sql "select count(*) from t where n = 1" "$((chunks * 100))"
    assert_sql "select count(*) from t where n not in (0, 1)" 0
    run_sluice history
    assert_rc 0
    assert_contains "$OUT" "0001_bump" "history"
    assert_not_contains "$OUT" "running" "history"
    assert_not_contains "$OUT" "interrupted" "history"
    run_sluice history --json
    assert_rc 0
    assert_not_contains "$OUT" "running" "history --json"

    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|3000"
    load_status
    assert_eq "$(sfield 0001_bump state)" done "state after resuming"
}

# A second signal aborts the chunk in flight (it rolls back), whichever signals they are: SIGHUP then
# SIGTERM while a chunk sleeps on the server. Exit 3, stopped, and the rolled-back chunk's rows untouched.
test_sighup_then_sigterm_aborts() {
    make_table 1000
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_sleep(CASE WHEN :lo::int > 300 THEN 30 ELSE 0 END);
EOF
    sluice_start up
    wait_until 20 sql_true "select count(*) > 0 from pg_stat_activity where datname = current_database() and query like '%pg_sleep%' and state = 'active' and pid <> pg_backend_pid()"
    kill -HUP "$SLUICE_PID"
    sleep 0.3
    local start=$SECONDS
    sluice_kill TERM
    assert_rc 3
    ((SECONDS - start < 15)) || fail "the second signal did not abort the chunk (took $((SECONDS - start)) s)"
    assert_contains "$ERR" "received SIGHUP" "stderr"
    assert_contains "$ERR" "second signal" "stderr"
    # the server stopped the chunk too (its statement cancelled, not left to run to its COMMIT after
    # sluice exited), and the lease is cleared on the connection that kept it
    wait_until 5 sql_true "select count(*) = 0 from pg_stat_activity where datname = current_database()
                           and query like '%pg_sleep%' and pid <> pg_backend_pid()"
    assert_sql "select runner is null and lease_until is null from sluice_jobs" t
    load_status
    assert_eq "$(sfield 0001_bump state)" stopped "state"
    assert_eq "$(sfield 0001_bump chunks)" 3 "chunks"
    assert_sql "select count(*) from t where n = 1" 300
    assert_sql "select count(*) from t where n not in (0, 1)" 0
}

# The same on SQLite, where the chunk runs on a thread of its own.
test_sighup_stops_sqlite() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 3000
    bump_job --down 0001_bump 100 "-- sluice:pause 100ms"
    sluice_start up
    wait_until 20 sq_true "select count(*) >= 2 from sluice_progress"
    sluice_kill HUP
    assert_rc 3
    load_status
    assert_eq "$(sfield 0001_bump state)" stopped "state after SIGHUP"
    run_sluice history
    assert_not_contains "$OUT" "running" "history"
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
}

# SIGHUP during down: exit 3, rolling_back; down again finishes.
test_sighup_during_down() {
    make_table 3000
    bump_job --down 0001_bump 100 "-- sluice:pause 50ms"
    run_sluice up
    assert_rc 0
    sluice_start down 0001_bump
    wait_until 20 sql_true "select count(*) <= 28 from sluice_progress"
    sluice_kill HUP
    assert_rc 3
    load_status
    assert_eq "$(sfield 0001_bump state)" rolling_back "state after SIGHUP during down"
    run_sluice down 0001_bump
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "0|0|3000"
}

# A database that reaps idle sessions (idle_session_timeout on the role, as a managed database or a DBA
# sets it): a job held back between chunks (max-rate, then a ctl pause) keeps its connections. Before,
# every hold longer than the timeout lost them: "connection lost; reconnecting", a failed health check
# and a pause for it. Exactly once, with workers and a down.
test_idle_session_timeout() {
    make_table 600
    make_app_role "grant select, update on t to sl_app;
                   alter role sl_app in database $T_DB set idle_session_timeout = '300ms'"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:workers 2
-- sluice:max-rate 80
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET n = n - 1 WHERE id BETWEEN :lo AND :hi;
EOF
    # the timeout is on: a plain session of the role has it
    assert_eq "$(PGPASSWORD=app-secret psql -XAtq "$APP_DB" -c "select current_setting('idle_session_timeout')")" \
        300ms "the role's idle_session_timeout"
    sluice_start --db "$APP_DB" up
    wait_until 20 sql_true "select count(*) >= 2 from sluice_progress"
    run_sluice --db "$APP_DB" ctl 0001_bump pause
    assert_rc 0
    sleep 1.5
    run_sluice --db "$APP_DB" ctl 0001_bump resume
    assert_rc 0
    sluice_wait
    assert_rc 0
    assert_not_contains "$ERR" "connection lost" "up's log"
    assert_not_contains "$ERR" "reconnect" "up's log"
    assert_not_contains "$ERR" "health check failed" "up's log"
    assert_sql "select min(n), max(n), count(*) from t" "1|1|600"
    run_sluice --db "$APP_DB" down 0001_bump
    assert_rc 0
    assert_not_contains "$ERR" "connection lost" "down's log"
    assert_sql "select min(n), max(n), count(*) from t" "0|0|600"
}

for which in 0 1 2 all; do
    run_test "fd $which closed: up, status, history, down do their work, exit codes as usual" \
        test_closed_descriptors "$which"
done
run_test "all std descriptors closed: checkpoint files stay intact" test_closed_descriptors_leave_files_alone
run_test "SIGHUP stops like SIGTERM: exit 3, stopped, history not running, up resumes" test_sighup_stops
run_test "SIGHUP then SIGTERM: the second signal aborts the chunk in flight" test_sighup_then_sigterm_aborts
run_test "SIGHUP on SQLite: exit 3, stopped, up resumes" test_sighup_stops_sqlite
run_test "SIGHUP during down: exit 3, rolling_back, down again finishes" test_sighup_during_down
run_test "a role whose idle sessions the server ends: holds keep their connections" test_idle_session_timeout
t_done
