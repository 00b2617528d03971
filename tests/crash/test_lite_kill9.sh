#!/usr/bin/env bash
# test_lite_kill9.sh: exactly once on SQLite under kill -9: a non-idempotent job killed 20 times, then resumed; `down` killed too.
. "$(dirname "$0")/../harness/lib.sh"

# Committed chunks so far (0 before the first `up` made the bookkeeping table).
lite_chunks() {
    if [[ $(sq "select count(*) from sqlite_master where name = 'sluice_progress'") == 1 ]]; then
        sq "select count(*) from sluice_progress"
    else
        echo 0
    fi
}

past_or_exited() {
    runner_alive || return 0
    (($(lite_chunks) > $1))
}

# Each chunk's effect commits with its record: rows changed = rows recorded, none twice.
check_so_far() {
    local got
    got=$(sq "select (select coalesce(sum(n), 0) from t) = (select coalesce(sum(rows), 0) from sluice_progress)
                 and (select coalesce(max(n), 0) from t) <= 1")
    [[ $got == 1 ]] || fail "after kill $KILLS: changed rows do not match sluice_progress, or a row changed twice:
$(sq "select n, count(*) from t group by n")"
}

# kill_loop COMMAND WANT CHECK [LOSE]: start sluice COMMAND and kill -9 it WANT times, each once it
# committed a new chunk, after a random sleep; run CHECK after each kill. LOSE=lose deletes the
# checkpoint directory after every kill.
kill_loop() {
    local cmd=$1 want=$2 check=$3 lose=${4:-} before=0
    KILLS=0
    QUEUED=0
    while ((KILLS < want)); do
        sluice_start $cmd
        wait_until 60 past_or_exited "$before"
        random_sleep 0 150
        runner_alive || {
            sluice_wait
            fail "the runner exited ($RC) before kill $((KILLS + 1)) of $want: the job is too short for the test"
        }
        sluice_kill KILL
        assert_rc 137
        QUEUED=$((QUEUED + $(grep -c "(queued behind the chunk before)" <<<"$ERR" || true)))
        KILLS=$((KILLS + 1))
        $check
        [[ $lose == lose ]] && rm -rf "$CKPT"
        before=$(lite_chunks)
        [[ $cmd == up ]] || before=0
    done
    diag "$KILLS kill -9's, $(lite_chunks) chunks committed at the last"
}

test_up_killed_20_times() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 60000
    sq_slow_bump_job 40 20000
    # SLUICE_DEBUG: each committed chunk is logged, saying when it ran queued behind the one before
    # (SQLite's two chunks in flight), so the kills are known to have landed among queued chunks.
    SLUICE_DEBUG=1 kill_loop up 20 check_so_far
    diag "$QUEUED chunks ran queued in the killed runs"
    ((QUEUED > 0)) || fail "no chunk ran queued behind another in the killed runs"
    run_sluice up
    assert_rc 0
    assert_sq "select count(*), min(n), max(n) from t" "60000|1|1"
    assert_sq "select count(*), sum(rows) from sluice_progress" "1500|60000"
    run_sluice status --json
    assert_match "$OUT" '"state": "done"' "status after resume"
}

test_down_killed() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0, v)"
    sq_fill t 20000
    sq "update t set v = case id % 4 when 0 then id when 1 then id * 0.5 when 2 then 'text ''' || id when 3 then null end"
    local before
    before=$(sq_dump t | md5sum)
    write_job 0001_rewrite <<'EOF2'
-- sluice:table t
-- sluice:batch 20
-- sluice:undo snapshot(v)
-- sluice:up
UPDATE t SET v = randomblob(4) WHERE id BETWEEN :lo AND :hi;
EOF2
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where typeof(v) = 'blob'" 20000
    kill_loop "down 0001_rewrite" 12 true
    run_sluice down 0001_rewrite
    assert_rc 0
    assert_eq "$(sq_dump t | md5sum)" "$before" "table after up, 12 killed downs and a resumed down"
    assert_sq "select count(*) from sluice_progress" 0
}

# Up and down killed with the checkpoint directory deleted after every kill.
test_killed_lose_checkpoints() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0, v)"
    sq_fill t 30000
    sq "update t set v = id"
    local before
    before=$(sq_dump t | md5sum)
    sq_slow_bump_job 40 20000
    sed -i 's/^-- sluice:batch 40$/-- sluice:batch 40\n-- sluice:undo snapshot(n)/' "$JOBS/0001_bump.sql"
    kill_loop up 8 check_so_far lose
    rm -rf "$CKPT"
    run_sluice up
    assert_rc 0
    assert_sq "select count(*), min(n), max(n) from t" "30000|1|1"
    kill_loop "down 0001_bump" 6 true lose
    run_sluice down 0001_bump
    assert_rc 0
    assert_eq "$(sq_dump t | md5sum)" "$before" "table after up and down, killed, the checkpoints lost each time"
}

run_test "up on SQLite, kill -9 twenty times, resume: every row exactly once" test_up_killed_20_times
run_test "up and down on SQLite killed, the checkpoint directory lost after each kill: exactly once" test_killed_lose_checkpoints
run_test "down on SQLite, kill -9 twelve times, resume: the table as it was" test_down_killed
t_done
