#!/usr/bin/env bash
# test_down_kill9.sh: `down` after an `up` killed part-way, and `down` itself killed again and again, loses nothing.
. "$(dirname "$0")/../harness/lib.sh"
. "$(dirname "$0")/../harness/kill.sh"

# t: name = 'n' || id, n = 0, and note 'keep' on every 5th row (then analyzed).
TCOLS=("name text, n int not null default 0, note text" "name, note" "'n' || g, case when g % 5 = 0 then 'keep' end")

# Until the runner's chunk count left $1 (up: grew past it, down: fell below it) or it exited.
moved_or_exited() {
    local chunks
    runner_alive || return 0
    chunks=$(progress_chunks) || return 1
    if [[ $2 == up ]]; then ((chunks > $1)); else ((chunks < $1)); fi
}

# kill -9 an `up` once it committed a few chunks; then `down` must give back the table as it was.
kill_up_then_down() {
    local before
    before=$(table_sum)
    sluice_start up
    wait_until 60 moved_or_exited 3 up
    random_sleep 0 200
    runner_alive || fail "up finished before the kill: the job is too short for the test"
    sluice_kill KILL
    assert_rc 137
    chunks=$(progress_chunks)
    diag "killed up after $chunks chunks"
    ((chunks > 0)) || fail "nothing committed before the kill"
    [[ $(table_sum) != "$before" ]] || fail "up changed nothing before the kill"
    run_sluice down base
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after kill -9 during up, then down"
    assert_eq "$(progress_chunks)" 0 "chunks left in sluice_progress"
    assert_eq "$(state_of)" rolled_back
}

test_kill_up_down_section() {
    make_table 60000 "${TCOLS[@]}"
    psql_q "analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1, name = upper(name) WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET n = n - 1, name = lower(name) WHERE id BETWEEN :lo AND :hi;
EOF
    kill_up_then_down
}

test_kill_up_snapshot_cols() {
    make_table 60000 "${TCOLS[@]}"
    psql_q "analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:undo snapshot(n, note)
-- sluice:up
UPDATE t SET n = n + 1, note = coalesce(note, '') || ' seen' WHERE id BETWEEN :lo AND :hi;
EOF
    kill_up_then_down
}

test_kill_up_snapshot_all() {
    make_table 60000 "${TCOLS[@]}"
    psql_q "analyze t"
    write_job 0001_purge <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM t WHERE id BETWEEN :lo AND :hi AND note IS NULL;
EOF
    kill_up_then_down
}

# Between kills: the rows still bumped are exactly those of the chunks sluice_progress still lists.
check_consistent() {
    local got
    got=$(psql_q "select (select coalesce(sum(n), 0) from t) = (select coalesce(sum(rows), 0) from sluice_progress)
                      and (select min(n) >= 0 and max(n) <= 1 from t)")
    [[ $got == t ]] && return 0
    diag "sum(n): $(psql_q 'select sum(n), min(n), max(n) from t'); progress: $(psql_q 'select count(*), sum(rows) from sluice_progress')"
    diag "status: $("$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" status --json 2>&1)"
    fail "after kill $1 of down: the undone rows do not match the chunks left in sluice_progress"
}

kill_down_loop() {
    local want=$1 lose=${2:-} kills=0 before
    before=$(progress_chunks)
    while ((kills < want)); do
        sluice_start down base
        wait_until 60 moved_or_exited "$before" down
        random_sleep 0 250
        if ! runner_alive; then
            sluice_wait
            fail "down exited ($RC) before kill $((kills + 1)) of $want: the job is too short for the test"
            return 1
        fi
        sluice_kill KILL
        assert_rc 137
        kills=$((kills + 1))
        check_consistent "$kills"
        [[ $lose == lose ]] && rm -rf "$CKPT"
        before=$(progress_chunks)
        [[ $(state_of) == rolling_back ]] || fail "state after kill $kills of down is $(state_of)"
    done
    diag "$kills kill -9's during down; $before chunks still applied before the last down"
}

kill_down_test() { # $1 = undo directive or down section
    make_table 100000 "${TCOLS[@]}"
    psql_q "analyze t"
    before=$(table_sum)
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 50
$1
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
$2
EOF
    run_sluice up
    assert_rc 0
    # At most 100 chunks a second while it is killed (down keeps the file's pause; it warns that the
    # file changed): however fast the machine, twelve rounds cannot undo all 2000 chunks (each undoes
    # some 30 here). The last down goes without it.
    job_pause 0001_bump 10ms
    kill_down_loop 12
    job_pause 0001_bump off
    run_sluice down base
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after 12 kill -9's during down, then down"
    assert_eq "$(state_of)" rolled_back
    run_sluice history --json
    assert_eq "$(jq '[.[] | select(.kind == "down")] | length' <<<"$OUT")" 13 "down runs in history"
}

test_kill_down_snapshot() {
    kill_down_test "-- sluice:undo snapshot(n)" ""
}

test_kill_down_section() {
    kill_down_test "" "-- sluice:down
UPDATE t SET n = n - 1 WHERE id BETWEEN :lo AND :hi;"
}

# The same with the checkpoint directory deleted after every kill: what is still applied, and the undo
# records, are the database's.
test_kill_down_lose_checkpoints() {
    make_table 100000 "${TCOLS[@]}"
    psql_q "analyze t"
    before=$(table_sum)
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    # at most 200 chunks a second from here (down keeps the file's pause; it warns that the file
    # changed): however fast the machine, eight rounds cannot undo all 2000 chunks
    job_pause 0001_bump 5ms
    rm -rf "$CKPT"
    kill_down_loop 8 lose
    job_pause 0001_bump off
    run_sluice down base
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after 8 kill -9's during down, checkpoints lost each time"
    assert_eq "$(state_of)" rolled_back
}

# down with workers: ranges undone at once on several connections, killed again and again, then
# finished: the table as before up, and an up after a partial down applies the undone chunks once.
# While it is killed, a pause (which down keeps; it warns that the file changed) holds each worker to
# at most 50 chunks a second, so that however fast the machine, twelve rounds of start, wait and kill
# cannot undo all 2000 chunks; the runs that go to the end go without it.
test_kill_down_workers() {
    make_table 200000 "${TCOLS[@]}"
    psql_q "analyze t"
    before=$(table_sum)
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 4
-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    job_pause 0001_bump 20ms
    sluice_start down base
    wait_until 60 moved_or_exited "$(($(progress_chunks) - 20))" down
    assert_sql "select count(distinct range_no) from sluice_ranges where job = '0001_bump'" 16
    sluice_kill KILL
    kill_down_loop 8
    job_pause 0001_bump off
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|200000"
    job_pause 0001_bump 20ms
    kill_down_loop 4
    job_pause 0001_bump off
    run_sluice down base
    assert_rc 0
    assert_contains "$ERR" "4 workers over "
    assert_eq "$(table_sum)" "$before" "table checksum after up, killed downs with workers, an up, and down"
    assert_eq "$(state_of)" rolled_back
}

# SIGINT during down: exit 3, rolling_back, and the next down finishes it.
test_sigint_down() {
    make_table 100000 "${TCOLS[@]}"
    psql_q "analyze t"
    before=$(table_sum)
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    total=$(progress_chunks)
    sluice_start --log-format json down -1
    wait_until 60 moved_or_exited "$((total - 5))" down
    sluice_kill INT
    assert_rc 3
    check_consistent 1
    assert_eq "$(state_of)" rolling_back
    # its "stopped" line counts what it undid and what is left, as the database has it
    local left stopped
    left=$(progress_chunks)
    stopped=$(grep -v swapcontext <<<"$ERR" | jq -c 'select(.event == "stopped") | [.chunks, .left, .rows]')
    assert_eq "$stopped" "[$((total - left)),$left,$((50 * (total - left)))]" "down's stopped event"
    run_sluice --log-format json down -1
    assert_rc 0
    assert_eq "$(grep -v swapcontext <<<"$ERR" | jq -c 'select(.event == "rolled_back") | [.chunks, .left]')" \
        "[$left,0]" "down's rolled_back event"
    assert_eq "$(table_sum)" "$before" "table checksum after SIGINT during down, then down"
}

# A rollback killed part-way and then given up on: `up` re-applies exactly the undone chunks, once.
test_kill_down_then_up() {
    make_table 200000 "${TCOLS[@]}"
    psql_q "analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    kill_down_loop 4
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|200000"
    assert_eq "$(state_of)" done
    assert_sql "select count(*), sum(rows) from sluice_progress" "4000|200000"
}

run_test "kill -9 during up, then down (down section): table as before" test_kill_up_down_section
run_test "kill -9 during up, then down (snapshot(n, note)): table as before" test_kill_up_snapshot_cols
run_test "kill -9 during up, then down (snapshot(*) of a DELETE): table as before" test_kill_up_snapshot_all
run_test "12 kill -9's during down (snapshot), then down: table as before, exactly once" test_kill_down_snapshot
run_test "12 kill -9's during down (down section), then down: table as before, exactly once" test_kill_down_section
run_test "8 kill -9's during down, the checkpoint directory deleted after each, then down: table as before" test_kill_down_lose_checkpoints
run_test "down with workers 4 killed 12 times, an up between: the table as before, exactly once" test_kill_down_workers
run_test "kill -9's during down, then up: the undone chunks are applied again exactly once" test_kill_down_then_up
run_test "SIGINT during down exits 3, rolling_back; down again finishes" test_sigint_down
t_done
