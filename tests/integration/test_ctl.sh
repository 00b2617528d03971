#!/usr/bin/env bash
# test_ctl.sh: `sluice ctl` against a running job: status, pause/resume, set, refusals, the socket's owner-only access.
. "$(dirname "$0")/../harness/lib.sh"

JOB=0001_bump

# chunk_of_size N: some committed chunk has exactly N rows (for wait_until).
chunk_of_size() {
    sql_true "select exists (select from sluice_progress where job = '$JOB' and rows = $1)"
}

events() {
    sqlite3 "$CKPT/$JOB.sluice" "select message from events where kind = 'ctl' order by id"
}

# A job of 100 chunks with a 100ms pause after each: it runs for ten seconds or more unless told otherwise.
make_slow_job() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 5000) g; analyze t"
    write_job "$JOB" <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:pause 100ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
}

start_slow_job() {
    make_slow_job
    sluice_start up
    wait_until 20 rows_done_at_least "$JOB" 1
    wait_until 10 test -S "$CKPT/$JOB.sluice-ctl"
}

assert_every_row_once() {
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "5000|0"
    assert_sql "select sum(rows), count(distinct chunk_no), max(chunk_no) = count(*) from sluice_progress where job = '$JOB'" \
        "5000|$(psql_q "select count(*) from sluice_progress where job = '$JOB'")|t"
}

test_status_pause_resume_set() {
    start_slow_job
    run_sluice ctl "$JOB" status
    assert_rc 0
    assert_contains "$OUT" "job $JOB"
    assert_contains "$OUT" "state running"
    assert_contains "$OUT" "batch 50"
    assert_contains "$OUT" "pause 100ms"
    assert_match "$OUT" $'(^|\n)rows [0-9]+'
    # how far, and how long it has left: what an operator on another machine asks
    assert_match "$OUT" $'\nrate [0-9]+ rows/s\nrows-estimated 5000 \\([0-9.]+% done\\)\neta [0-9]+:[0-5][0-9]:[0-5][0-9]\n'

    # pause: the chunk in flight finishes, then nothing moves.
    run_sluice ctl "$JOB" pause
    assert_rc 0
    assert_contains "$OUT" "paused by sluice ctl"
    run_sluice ctl "$JOB" status
    assert_contains "$OUT" "state paused"
    sleep 0.5
    held_for 2 "chunks committed in 2s of ctl pause" "$JOB"
    ((${HELD#*|} < 5000)) || fail "the job finished before it could be paused"
    # status answers while paused, and says how far it got.
    run_sluice ctl "$JOB" status
    assert_rc 0
    assert_contains "$OUT" "rows ${HELD#*|}"

    run_sluice ctl "$JOB" resume
    assert_rc 0
    assert_contains "$OUT" "resumed by sluice ctl"
    wait_until 10 rows_done_at_least "$JOB" $((${HELD#*|} + 1))

    # set batch: the next chunks have the new size.
    run_sluice ctl "$JOB" set batch=7
    assert_rc 0
    assert_contains "$OUT" "set batch=7 by sluice ctl"
    wait_until 10 chunk_of_size 7
    wait_until 5 ctl_says "batch 7" "$JOB" status

    # Refused: an unknown setting and a bad value exit 2 and change nothing.
    run_sluice ctl "$JOB" set nosuch=1
    assert_rc 2
    assert_contains "$ERR" "nosuch"
    run_sluice ctl "$JOB" set batch=abc
    assert_rc 2
    run_sluice ctl "$JOB" set batch=0
    assert_rc 2
    run_sluice ctl "$JOB" set pause=fast
    assert_rc 2
    run_sluice ctl "$JOB" status
    assert_contains "$OUT" "batch 7"
    assert_contains "$OUT" "pause 100ms"

    # set pause=0ms: no more sleeping between chunks. Bigger chunks first, to finish in time (and so
    # that every chunk of 7 rows ran with the 100ms pause); both set while paused, so that status still
    # finds the runner (without a pause, the rest of the job can take less than a ctl's start).
    local ckpt_before
    run_sluice ctl "$JOB" pause
    assert_rc 0
    ckpt_before=$(psql_q "select max(chunk_no) from sluice_progress where job = '$JOB'")
    run_sluice ctl "$JOB" set batch=97
    assert_rc 0
    run_sluice ctl "$JOB" set pause=0ms
    assert_rc 0
    run_sluice ctl "$JOB" status
    assert_contains "$OUT" "pause 0ms"
    run_sluice ctl "$JOB" resume
    assert_rc 0
    sluice_wait
    assert_rc 0
    assert_every_row_once

    # Chunks of 7 rows with the 100ms pause between them; chunks of 97 (the first few still with the
    # pause, the rest after pause=0ms) mostly with none.
    local gaps
    gaps=$(psql_q "with c as (select rows, committed_at - lag(committed_at) over (order by chunk_no) as gap
                              from sluice_progress where job = '$JOB')
                   select (select percentile_cont(0.5) within group (order by extract(epoch from gap) * 1000)
                             from c where rows = 7)::int,
                          (select percentile_cont(0.5) within group (order by extract(epoch from gap) * 1000)
                             from c where rows = 97)::int,
                          (select count(*) from c where rows = 97)")
    diag "median ms between chunks: batch 7 (pause 100ms), batch 97 (pause 0ms), chunks of 97: $gaps"
    local slow fast n97
    IFS='|' read -r slow fast n97 <<<"$gaps"
    ((n97 >= 3)) || fail "expected several chunks of 97 rows after set batch=97, got $n97"
    ((slow >= 100)) || fail "chunks came ${slow}ms apart with pause 100ms"
    ((fast < 100)) || fail "chunks still came ${fast}ms apart after set pause=0ms"
    assert_sql "select count(*) > 0 from sluice_progress where job = '$JOB' and chunk_no > $ckpt_before and rows = 97" t

    # Each change is in the log and in the checkpoint's event log; the refused ones in neither.
    local ev want
    ev=$(events)
    for want in "paused by sluice ctl" "resumed by sluice ctl" "set batch=7 by sluice ctl" \
        "set batch=97 by sluice ctl" "set pause=0ms by sluice ctl"; do
        assert_contains "$ev" "$want" "the checkpoint's events"
        assert_contains "$ERR" "$JOB: $want" "the runner's log"
    done
    assert_not_contains "$ev" "nosuch"
    assert_not_contains "$ev" "abc"
    # The chunks table of the checkpoint agrees.
    assert_eq "$(sqlite3 "$CKPT/$JOB.sluice" "select count(*) > 0 from chunks where rows = 7")" 1 "chunks of 7 in the checkpoint"
}

# A rest already begun ends as the pause in force says: `ctl set pause=1h` by mistake, then
# `set pause=0ms`, and the runner goes on at once (it used to sleep out the hour).
test_long_pause_taken_back() {
    start_slow_job
    run_sluice ctl "$JOB" set pause=1h
    assert_rc 0
    sleep 0.5
    held_for 2 "chunks committed in 2 s of pause 1h" "$JOB"
    run_sluice ctl "$JOB" set pause=0ms
    assert_rc 0
    wait_until 10 rows_done_at_least "$JOB" $((${HELD#*|} + 1))
    sluice_wait
    assert_rc 0
    assert_every_row_once
}

test_socket_owner_only() {
    start_slow_job
    local sock="$CKPT/$JOB.sluice-ctl"
    assert_eq "$(stat -c '%a %U' "$sock")" "600 $(id -un)" "the socket's mode and owner"
    # Let another user reach the socket itself: the test's own temporary directories above it made
    # searchable, so that only the socket's mode and the runner's peer check stand in the way.
    local dirs=("$CKPT" "$T_DIR" "$T_ROOT") modes=() i
    [[ -n ${SLUICE_TEST_TMP:-} && $T_ROOT == "$SLUICE_TEST_TMP"/* ]] && dirs+=("$SLUICE_TEST_TMP")
    for i in "${!dirs[@]}"; do
        modes[i]=$(stat -c %a "${dirs[i]}")
    done
    chmod o+x "${dirs[@]}"
    run_cmd runuser -u nobody -- "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" ctl "$JOB" pause
    assert_ne "$RC" 0 "exit status of ctl as nobody"
    assert_contains "$ERR" "permission denied"
    # Even with the mode widened by someone, the runner asks the kernel who is calling and refuses.
    chmod 0666 "$sock"
    run_cmd runuser -u nobody -- "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" ctl "$JOB" pause
    assert_ne "$RC" 0 "exit status of ctl as nobody through a widened socket"
    assert_contains "$ERR" "another user"
    chmod 0600 "$sock"
    for i in "${!dirs[@]}"; do
        chmod "${modes[i]}" "${dirs[i]}"
    done
    # Nothing was paused by them; the owner is still heard.
    run_sluice ctl "$JOB" status
    assert_rc 0
    assert_contains "$OUT" "state running"
    run_sluice ctl "$JOB" set pause=0ms
    assert_rc 0
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "refused a connection from another user"
    assert_every_row_once
    assert_not_contains "$(events)" "paused by sluice ctl"
}

# A request line with a NUL byte is refused whole: "set batch=50<NUL>junk" changes nothing.
test_nul_in_request_refused() {
    start_slow_job
    local said
    said=$(python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"set batch=7\x00junk\n")
print(s.recv(4096).decode(errors="replace").strip())' "$CKPT/$JOB.sluice-ctl")
    assert_contains "$said" "NUL byte"
    run_sluice ctl "$JOB" status
    assert_rc 0
    assert_contains "$OUT" "batch 50"
    run_sluice ctl "$JOB" set pause=0ms
    assert_rc 0
    sluice_wait
    assert_rc 0
    assert_every_row_once
    assert_not_contains "$(events)" "batch=7"
}

test_not_running() {
    psql_q "create table t (id int primary key, n int not null default 0)"
    write_job "$JOB" <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice ctl "$JOB" status
    assert_rc 1
    assert_contains "$ERR" "no runner of job $JOB is listening"
    # After a run, the socket is gone and the answer is the same.
    run_sluice up
    assert_rc 0
    [[ ! -e $CKPT/$JOB.sluice-ctl ]] || fail "the control socket outlived the run"
    run_sluice ctl "$JOB" status
    assert_rc 1
    assert_contains "$ERR" "is listening"
    # Bad usage is told apart from a job that is not there.
    run_sluice ctl "$JOB"
    assert_rc 2
}

# The runner on another machine (here: its own checkpoint directory, so no socket in $CKPT): ctl goes
# through the database, to the runner holding the lease. A bad request writes nothing; once the runner
# is gone, ctl says so; requests leave no row behind.
test_through_the_database() {
    make_slow_job
    local elsewhere=$T_DIR/other-machine
    "$SLUICE" --jobs "$JOBS" --checkpoints "$elsewhere" up </dev/null >"$T_DIR/far.out" 2>"$T_DIR/far.err" &
    local far=$!
    wait_until 20 rows_done_at_least "$JOB" 1
    [[ ! -e $CKPT/$JOB.sluice-ctl ]] || fail "a socket in this runner's checkpoint directory"
    run_sluice ctl "$JOB" status
    assert_rc 0
    assert_contains "$OUT" "state running"
    assert_contains "$ERR" "answered through"
    run_sluice ctl "$JOB" pause
    assert_rc 0
    assert_contains "$OUT" "paused by sluice ctl"
    sleep 0.5
    held_for 2 "chunks committed in 2s of ctl pause through the database" "$JOB"
    run_sluice ctl "$JOB" set batch=abc
    assert_rc 2
    assert_contains "$ERR" "batch expects"
    run_sluice ctl "$JOB" set pause=0ms
    assert_rc 0
    assert_contains "$OUT" "set pause=0ms by sluice ctl"
    assert_sql "select count(*) from sluice_ctl" 0
    run_sluice ctl "$JOB" resume
    assert_rc 0
    wait "$far" || fail "the far runner exited $?: $(cat "$T_DIR/far.err")"
    assert_contains "$(cat "$T_DIR/far.err")" "paused by sluice ctl"
    assert_contains "$(cat "$T_DIR/far.err")" "set pause=0ms by sluice ctl"
    assert_every_row_once
    run_sluice ctl "$JOB" status
    assert_rc 1
    assert_contains "$ERR" "records no live runner of job $JOB"
    assert_sql "select count(*) from sluice_ctl" 0
}

# A pause is the job's, not the runner's: it is recorded in the database, a new runner (another
# container, its checkpoint directory gone) starts paused, --no-wait stops at once, and only resume
# lets it go on. With no runner, pause and resume are recorded for the next run.
test_pause_outlives_the_runner() {
    start_slow_job
    run_sluice ctl "$JOB" pause
    assert_rc 0
    wait_until 10 sql_true "select paused like 'by sluice ctl at %' from sluice_jobs where job = '$JOB'"
    sluice_kill TERM
    assert_rc 3
    rm -rf "$CKPT"
    local before
    before=$(progress "$JOB")
    run_sluice up --no-wait
    assert_rc 3
    assert_contains "$ERR" "paused by sluice ctl at"
    assert_contains "$ERR" "stopping (--no-wait) until \`sluice ctl $JOB resume\`"
    load_status
    assert_contains "$(sfield "$JOB" paused)" "by sluice ctl at"
    sluice_start up
    wait_until 10 test -S "$CKPT/$JOB.sluice-ctl"
    sleep 2
    assert_eq "$(progress "$JOB")" "$before" "chunks committed by a run that began paused"
    run_sluice ctl "$JOB" status
    assert_contains "$OUT" "state paused"
    run_sluice ctl "$JOB" resume
    assert_rc 0
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "waiting for \`sluice ctl $JOB resume\`"
    assert_every_row_once
    assert_sql "select paused is null from sluice_jobs where job = '$JOB'" t
    # no runner: recorded for the next one
    run_sluice ctl "$JOB" pause
    assert_rc 0
    assert_contains "$OUT" "no runner runs job $JOB now"
    assert_sql "select paused is not null from sluice_jobs where job = '$JOB'" t
    run_sluice ctl "$JOB" resume
    assert_rc 0
    assert_sql "select paused is null from sluice_jobs where job = '$JOB'" t
    run_sluice ctl 0009_none pause
    assert_rc 1
    assert_contains "$ERR" "nor the job itself"
}

# A rollback listens too: status, pause (nothing undone while paused), set pause and max-rate (and a
# refusal of batch: the size of up's chunks is not down's to change), resume; down puts every row back.
test_down_controlled() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 3000) g"
    local before
    before=$(table_sum)
    bump_job "$JOB" 50 "-- sluice:undo snapshot(n)"
    run_sluice up
    assert_rc 0
    # The rollback rests 100ms after each of its 60 chunks (the job file's pause, added after up).
    job_pause "$JOB" 100ms
    local t0 took
    t0=$(now_ms)
    sluice_start down "$JOB"
    wait_until 20 sql_true "select count(*) < 60 from sluice_progress where job = '$JOB'"
    wait_until 10 test -S "$CKPT/$JOB.sluice-ctl"
    run_sluice ctl "$JOB" status
    assert_rc 0
    assert_contains "$OUT" "state rolling_back"
    assert_contains "$OUT" "pause 100ms"
    assert_match "$OUT" $'(^|\n)chunks-left [0-9]+'
    assert_match "$OUT" $'\nrows-estimated 3000 \\([0-9.]+% done\\)\neta [0-9]+:[0-5][0-9]:[0-5][0-9]\n'

    run_sluice ctl "$JOB" pause
    assert_rc 0
    assert_contains "$OUT" "paused by sluice ctl"
    wait_until 5 ctl_says "state paused" "$JOB" status
    sleep 0.5
    local left
    left=$(psql_q "select count(*) from sluice_progress where job = '$JOB'")
    sleep 2
    assert_sql "select count(*) from sluice_progress where job = '$JOB'" "$left"
    ((left > 8)) || fail "the rollback was nearly done before it could be paused: $left chunks left"

    run_sluice ctl "$JOB" set batch=10
    assert_rc 2
    assert_contains "$ERR" "batch cannot change during a rollback"
    run_sluice ctl "$JOB" set pause=0ms
    assert_rc 0
    run_sluice ctl "$JOB" set max-rate=400
    assert_rc 0
    assert_contains "$OUT" "set max-rate=400 by sluice ctl"
    wait_until 5 ctl_says "max-rate 400" "$JOB" status
    run_sluice ctl "$JOB" resume
    assert_rc 0
    sluice_wait
    assert_rc 0
    # max-rate keeps the run's average: 3000 rows at 400 a second take 7.5s from its start, less the
    # first chunk, which goes at once.
    took=$(($(now_ms) - t0))
    ((took >= 7375)) || fail "the rollback took ${took}ms, under max-rate's 7375ms"
    assert_eq "$(table_sum)" "$before" "the table after down"
    assert_contains "$ERR" "paused by sluice ctl"
    assert_contains "$ERR" "set max-rate=400 by sluice ctl"
    local events
    events=$(events)
    assert_contains "$events" "paused by sluice ctl"
    assert_contains "$events" "set pause=0ms by sluice ctl"
    assert_contains "$events" "resumed by sluice ctl"
}

# The same in a rollback: `ctl set pause=1h` holds it, `set pause=0ms` lets it go on at once.
test_down_long_pause_taken_back() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 3000) g"
    local before left
    before=$(table_sum)
    bump_job "$JOB" 50 "-- sluice:undo snapshot(n)"
    run_sluice up
    assert_rc 0
    job_pause "$JOB" 100ms
    sluice_start down "$JOB"
    wait_until 20 sql_true "select count(*) < 60 from sluice_progress where job = '$JOB'"
    wait_until 10 test -S "$CKPT/$JOB.sluice-ctl"
    run_sluice ctl "$JOB" set pause=1h
    assert_rc 0
    sleep 0.5
    left=$(psql_q "select count(*) from sluice_progress where job = '$JOB'")
    sleep 2
    assert_sql "select count(*) from sluice_progress where job = '$JOB'" "$left"
    ((left > 8)) || fail "the rollback was nearly done before pause=1h: $left chunks left"
    run_sluice ctl "$JOB" set pause=0ms
    assert_rc 0
    wait_until 10 sql_true "select count(*) < $left from sluice_progress where job = '$JOB'"
    sluice_wait
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "the table after down"
}

# max-rate after a hold: the seconds a ctl pause held the job are not saved up for a burst once it
# resumes (nor those outside a window or behind a throttle, held the same way): the job goes on at its
# rate. Before, its average since the start ruled, and it ran at full speed for as long as it had been
# held. Two workers, so that a burst would be fast.
test_max_rate_after_pause() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 40000) g; analyze t"
    write_job "$JOB" <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 2
-- sluice:max-rate 2000
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 20 rows_done_at_least "$JOB" 1000
    wait_until 10 test -S "$CKPT/$JOB.sluice-ctl"
    run_sluice ctl "$JOB" pause
    assert_rc 0
    sleep 6
    local before after t0 t1
    before=$(progress "$JOB")
    t0=$(now_ms)
    run_sluice ctl "$JOB" resume
    assert_rc 0
    sleep 2
    after=$(progress "$JOB")
    t1=$(now_ms)
    # the rate status shows is the job's speed while it ran, about 2000, the 6 s of pause left out: the
    # average since the run began (what it showed before) is under 800 here
    run_sluice ctl "$JOB" status
    assert_rc 0
    local rate
    rate=$(sed -n 's/^rate \([0-9]*\) rows\/s$/\1/p' <<<"$OUT")
    diag "ctl status after the pause: rate $rate rows/s"
    ((${rate:-0} >= 1300)) || fail "ctl status says rate ${rate:-none} rows/s after 6 s of pause; the job runs at 2000"
    sluice_kill INT
    assert_rc 3
    # 2000 rows/s over the time between the two reads (2 s and what the resume and the reads took on
    # this machine), one second saved up, and the chunks in flight: far below the 12000 rows that six
    # seconds of pause would have let through at once.
    local moved=$((${after#*|} - ${before#*|})) allowed=$((2000 * (t1 - t0) / 1000 + 2500))
    diag "rows in the $((t1 - t0)) ms after 6 s of pause: $moved (allowed $allowed)"
    ((moved <= allowed)) || fail "$moved rows in the $((t1 - t0)) ms after resume: max-rate 2000 let a burst through"
    ((moved >= 1000)) || fail "only $moved rows in the 2 s after resume: the job did not go on"
}

# A live cap lifted: `ctl status` shows max-rate 0 and chunk-time 0ms in a job without them, and ctl
# takes those values back (it refused them, so a max-rate from the job file or set live stayed).
test_cap_lifted() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 5000) g"
    write_job "$JOB" <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:max-rate 200
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 20 rows_done_at_least "$JOB" 1
    wait_until 10 test -S "$CKPT/$JOB.sluice-ctl"
    run_sluice ctl "$JOB" set max-rate=-1
    assert_rc 2
    assert_contains "$ERR" "hint: max-rate=0 lifts the cap"
    # paused while the cap is lifted, so that the runner is still there for status (uncapped, the
    # rest takes a second or two)
    run_sluice ctl "$JOB" pause
    assert_rc 0
    run_sluice ctl "$JOB" set chunk-time=0ms
    assert_rc 0
    assert_contains "$OUT" "set chunk-time=0ms by sluice ctl"
    run_sluice ctl "$JOB" set max-rate=0
    assert_rc 0
    assert_contains "$OUT" "set max-rate=0 by sluice ctl"
    run_sluice ctl "$JOB" status
    assert_contains "$OUT" $'max-rate 0\nchunk-time 0ms'
    run_sluice ctl "$JOB" resume
    assert_rc 0
    # 5000 rows at 200 a second take 25 s; uncapped, a second or two
    local t0
    t0=$(now_ms)
    sluice_wait
    assert_rc 0
    (($(now_ms) - t0 < 12000)) || fail "the job took $(($(now_ms) - t0)) ms more after max-rate=0: still capped"
    assert_every_row_once
}

run_test "ctl status, pause, resume and set on a running job; every change logged and recorded" test_status_pause_resume_set
run_test "ctl set max-rate=0 and chunk-time=0ms lift a cap while the job runs, as status shows them" test_cap_lifted
run_test "ctl set pause=1h, then pause=0ms: the rest already begun ends at once" test_long_pause_taken_back
run_test "ctl: the socket is its owner's alone" test_socket_owner_only
run_test "ctl: a request line with a NUL byte is refused whole, nothing changed" test_nul_in_request_refused
run_test "ctl on a job that is not running exits 1 and says so" test_not_running
run_test "ctl through the database to a runner on another machine: status, pause, set, refusal, resume" test_through_the_database
run_test "a ctl pause outlives its runner: the next run begins paused (--no-wait stops), resume goes on" \
    test_pause_outlives_the_runner
run_test "ctl during down: status, pause, set pause and max-rate, batch refused, resume" test_down_controlled
run_test "ctl set pause=1h during down, then pause=0ms: the rest already begun ends at once" \
    test_down_long_pause_taken_back
run_test "max-rate after 6 s of ctl pause: the job goes on at its rate, without a burst; status's rate leaves the pause out" \
    test_max_rate_after_pause
t_done
