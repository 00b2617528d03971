#!/usr/bin/env bash
# test_state_lite.sh: the same truth-in-the-database guarantees as test_state.sh, on SQLite target files.
. "$(dirname "$0")/../harness/lib.sh"

# setup_bump_ab N BATCH [EXTRA_DIRECTIVES]: $SQ_DB with a table of N rows and a job that bumps n and sets a and b.
setup_bump_ab() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0, a text, b text)"
    sq_fill t "$1"
    sq "update t set a = 'a' || id, b = 'b' || id"
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch $2
${3:-}
-- sluice:up
UPDATE t SET n = n + 1, a = 'x', b = 'y' WHERE id BETWEEN :lo AND :hi;
EOF
}

test_renamed_job_file() {
    setup_bump_ab 300 100
    run_sluice up
    assert_rc 0
    mv "$JOBS/0001_bump.sql" "$JOBS/0002_bump.sql"
    rm -rf "$CKPT"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0002_bump.sql: the file is, byte for byte, the job file 0001_bump ran with"
    assert_contains "$ERR" "records 0001_bump as done, but $JOBS/0001_bump.sql is gone: renamed?"
    assert_sq "select min(n), max(n) from t" "1|1"
    assert_sq "select count(*) from sluice_jobs where job = '0002_bump'" 0
}

test_lost_after_done() {
    setup_bump_ab 500 100
    run_sluice up
    assert_rc 0
    rm -rf "$CKPT"
    sq_fill t 100 501
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "already done"
    assert_sq "select count(*) filter (where n = 1), count(*) filter (where n = 0) from t" "500|100"
    rm -rf "$CKPT"
    load_status
    assert_eq "$(sfield 0001_bump state)" done
    assert_eq "$(sfield 0001_bump source)" database
}

# The runner's disk is gone: history and report answer from the database file, after up and after down.
test_history_and_report_after_loss() {
    setup_bump_ab 300 100 "-- sluice:undo snapshot(n, a, b)"
    run_sluice up
    assert_rc 0
    rm -rf "$CKPT"
    sq "update sluice_progress set attempts = 2 where chunk_no = 1"
    run_sluice --json history
    assert_rc 0
    assert_eq "$(jq -r '.[] | "\(.job) \(.source) \(.kind) \(.outcome) \(.rows) \(.chunks)"' <<<"$OUT")" \
        "0001_bump database up done 300 3"
    run_sluice report 0001_bump -o "$T_DIR/r.html"
    assert_rc 0
    local page
    page=$(cat "$T_DIR/r.html")
    assert_contains "$page" '<p id="source">From the database'
    assert_contains "$page" '<td id="sum-rows">300</td>'
    assert_contains "$page" '<td id="sum-retries">1</td>'
    # the chunks' times read back as times: the run spans seconds, not years
    local wall
    wall=$(grep -o 'id="sum-wall" data-ms="[0-9-]*"' <<<"$page" | grep -o '[0-9-]*"$' | tr -d '"')
    ((wall >= 0 && wall < 600000)) || fail "wall time from the database's times: $wall ms"
    [[ ! -e $CKPT ]] || fail "report or history wrote into the checkpoint directory"
    run_sluice down 0001_bump
    assert_rc 0
    rm -rf "$CKPT"
    run_sluice --json history
    assert_eq "$(jq -r '[.[] | "\(.source) \(.kind) \(.outcome) \(.chunks)"] | join(", ")' <<<"$OUT")" \
        "database up done 3, database down done 3"
    run_sluice report 0001_bump -o "$T_DIR/r.html"
    assert_rc 0
    assert_contains "$(cat "$T_DIR/r.html")" '<td id="sum-state">rolled_back</td>'
}

test_lost_after_stamp() {
    setup_bump_ab 300 100
    run_sluice stamp 0001_bump done
    assert_rc 0
    rm -rf "$CKPT"
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n > 0" 0
}

test_two_files_one_directory() {
    setup_bump_ab 200 100
    local a=$SQ_DB b="$T_DIR/b.db"
    cp "$a" "$b"
    sqlite3 "$b" "drop table if exists sluice_jobs"
    rm -f "$b-wal" "$b-shm"
    # b: a copy of a before sluice ran, with a table of its own
    sqlite3 "$b" "delete from t; insert into t (id) values (1), (2), (3)"
    run_sluice up
    assert_rc 0
    run_sluice --db "sqlite:$b" up
    assert_rc 2
    assert_contains "$ERR" "belongs to database"
    assert_eq "$(sqlite3 "$b" "select count(*) from t where n > 0")" 0
    run_sluice --db "sqlite:$b" --checkpoints "$T_DIR/ckpt-b" up
    assert_rc 0
    assert_eq "$(sqlite3 "$b" "select min(n), max(n) from t")" "1|1"
}

test_lost_mid_run() {
    setup_bump_ab 20000 200 "-- sluice:pause 10ms"
    sluice_start up
    wait_until 20 sq_true "select count(*) >= 5 from sluice_progress"
    rm -rf "$CKPT"
    sluice_kill KILL
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "in line with the database"
    assert_sq "select min(n), max(n), count(*) from t" "1|1|20000"
}

# The checkpoint directory deleted under a running job takes its control socket with it, and on
# SQLite no request goes through the database: the runner listens again, in the directory made again,
# and `ctl` reaches it; the job ends exactly once, and the next run rebuilds the checkpoint file.
test_ctl_after_lost_directory() {
    setup_bump_ab 3000 100 "-- sluice:pause 100ms"
    sluice_start up
    wait_until 20 test -S "$CKPT/0001_bump.sluice-ctl"
    rm -rf "$CKPT"
    wait_until 10 test -S "$CKPT/0001_bump.sluice-ctl"
    run_sluice ctl 0001_bump status
    assert_rc 0
    assert_contains "$OUT" "state running"
    run_sluice ctl 0001_bump set pause=0ms
    assert_rc 0
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "control socket $CKPT/0001_bump.sluice-ctl was removed while the job ran"
    assert_contains "$ERR" "listening there again, in the directory made again"
    assert_contains "$ERR" "set pause=0ms by sluice ctl"
    [[ -e $CKPT/0001_bump.sluice-ctl ]] && fail "the socket outlived its runner"
    assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
    run_sluice status
    assert_rc 0
    assert_contains "$OUT" "done"
    # the directory above the checkpoints gone too: not made again; said once, and the job runs on
    sq "update t set n = 0"
    run_sluice stamp 0001_bump pending
    assert_rc 0
    local deep=$T_DIR/deep/ckpt
    job_pause 0001_bump 300ms # 9 s
    CKPT=$deep sluice_start up
    wait_until 20 test -S "$deep/0001_bump.sluice-ctl"
    rm -rf "$T_DIR/deep"
    wait_until 10 grep -q "control socket" "$T_DIR/bg.$_T_BG_COUNT.err"
    sleep 2.5 # another look at the socket: it says nothing more
    sluice_kill INT
    assert_rc 3
    assert_contains "$ERR" "cannot make the directory $deep again: No such file or directory"
    assert_eq "$(grep -c "control socket" <<<"$ERR")" 1 "lines about the socket"
    [[ -e $T_DIR/deep ]] && fail "the directory above the checkpoints was made again"
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
}

test_walk_ends() {
    setup_bump_ab 5000 100 "-- sluice:pause 5ms"
    sluice_start up
    wait_until 20 sq_true "select count(*) >= 2 from sluice_progress"
    sq_fill t 2000 5001
    sluice_wait
    assert_rc 0
    assert_sq "select count(*) from t where id <= 5000 and n <> 1" 0
    assert_sq "select count(*) from t where id > 5000 and n <> 0" 0
}

test_skip_with_snapshot_then_down() {
    setup_bump_ab 400 100 "-- sluice:undo snapshot(n, a, b)
-- sluice:on-error skip"
    sq "create trigger no250 before update on t when new.id = 250 begin select raise(abort, 'not 250'); end"
    local before
    before=$(sq_sum t)
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from sluice_progress where skipped" 1
    run_sluice down 0001_bump
    assert_rc 0
    assert_eq "$(sq_sum t)" "$before" "table after down"
}

test_changed_undo_columns() {
    setup_bump_ab 300 100 "-- sluice:undo snapshot(n, a, b)"
    run_sluice up
    assert_rc 0
    local after
    after=$(sq_sum t)
    sed -i 's/snapshot(n, a, b)/snapshot(n, b, a)/' "$JOBS/0001_bump.sql"
    run_sluice --on-conflict overwrite down 0001_bump
    assert_rc 2
    assert_contains "$ERR" "undo columns changed after its first chunk committed"
    assert_eq "$(sq_sum t)" "$after" "table after a refused down"
}

test_changed_key_refused() {
    setup_bump_ab 3000 100 "-- sluice:pause 50ms"
    sq "create unique index t_id_n on t (id, n)"
    sluice_start up
    wait_until 20 sq_true "select count(*) >= 2 from sluice_progress"
    sluice_kill INT
    sed -i 's/^-- sluice:table t$/-- sluice:table t\n-- sluice:key id, n/' "$JOBS/0001_bump.sql"
    run_sluice --allow-changed-statements --allow-no-index up
    assert_rc 2
    assert_contains "$ERR" "key changed after its first chunk committed"
}

test_lost_undo_records() {
    setup_bump_ab 400 100 "-- sluice:undo snapshot(n, a, b)"
    run_sluice up
    assert_rc 0
    sq "delete from sluice_undo where chunk_no = 2"
    run_sluice down 0001_bump
    assert_rc 2
    assert_contains "$ERR" "chunk 2"
    run_sluice --allow-lost-undo down 0001_bump
    assert_rc 0
    assert_sq "select count(*) from t where a = 'x'" 100
}

test_killed_run_is_interrupted() {
    setup_bump_ab 20000 100 "-- sluice:pause 10ms"
    sluice_start up
    wait_until 20 sq_true "select count(*) >= 3 from sluice_progress"
    sluice_kill KILL
    run_sluice history
    assert_contains "$OUT" "interrupted"
    load_status
    assert_eq "$(sfield 0001_bump state)" stopped
}

test_checkpoint_mode() {
    setup_bump_ab 100 100
    umask 022
    run_sluice up
    assert_rc 0
    local mode
    mode=$(stat -c %a "$CKPT/0001_bump.sluice")
    assert_eq "$mode" 600 "checkpoint file mode"
}

run_test "sqlite: lost checkpoint directory after done" test_lost_after_done
run_test "sqlite: lost checkpoint directory: history and report answer from the database" test_history_and_report_after_loss
run_test "sqlite: lost checkpoint directory after stamp" test_lost_after_stamp
run_test "sqlite: one checkpoint directory for two database files" test_two_files_one_directory
run_test "sqlite: checkpoint directory deleted mid-run, then kill -9" test_lost_mid_run
run_test "sqlite: checkpoint directory deleted under a running job: ctl reaches it again" test_ctl_after_lost_directory
run_test "sqlite: the walk ends at its start's last key" test_walk_ends
run_test "sqlite: on-error skip with undo snapshot, then down" test_skip_with_snapshot_then_down
run_test "sqlite: changed undo columns refused" test_changed_undo_columns
run_test "sqlite: changed key refused with every flag" test_changed_key_refused
run_test "sqlite: lost undo records" test_lost_undo_records
run_test "sqlite: a killed run is interrupted / stopped" test_killed_run_is_interrupted
run_test "checkpoint files are created 0600" test_checkpoint_mode
run_test "sqlite: a job file renamed after it ran is refused under its new name" test_renamed_job_file
t_done
