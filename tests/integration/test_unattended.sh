#!/usr/bin/env bash
# test_unattended.sh: sluice under cron, CI or an ssh session: closed standard descriptors, SIGHUP, no password in argv.
. "$(dirname "$0")/../harness/lib.sh"

make_table() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, ${1:-500}) g"
}

bump_job() {
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 100
${1:-}
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET n = n - 1 WHERE id BETWEEN :lo AND :hi;
EOF
}

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
    make_table
    bump_job
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
    make_table
    bump_job
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

for which in 0 1 2 all; do
    run_test "fd $which closed: up, status, history, down do their work, exit codes as usual" \
        test_closed_descriptors "$which"
done
run_test "all std descriptors closed: checkpoint files stay intact" test_closed_descriptors_leave_files_alone
t_done
