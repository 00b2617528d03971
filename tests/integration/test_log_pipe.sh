#!/usr/bin/env bash
# test_log_pipe.sh: a stderr that stops taking lines (a pipe nobody reads, a stuck journal or `| tee`) blocks no runner.
. "$(dirname "$0")/../harness/lib.sh"

# long_key_table ROWS: table t keyed by 2000-character texts, so that each chunk's debug line (it
# names the chunk's first and last keys) is some 4 KiB: the pipe's 64 KiB fill after 16 chunks and
# the writer's 1 MiB queue after some 270.
long_key_table() {
    psql_q "create table t (id text primary key, n int not null default 0);
            insert into t select lpad(g::text, 2000, '0'), 0 from generate_series(1, $1) g"
}

# start_on_stalled_fifo ARGS...: sluice ARGS (with --jobs/--checkpoints, SLUICE_DEBUG=1) in the
# background, its stderr a FIFO that a reader holds open and never reads. Sets SLUICE_PID and FIFO.
start_on_stalled_fifo() {
    FIFO="$T_DIR/stderr.fifo"
    mkfifo "$FIFO"
    sleep 600 <"$FIFO" &
    SLUICE_DEBUG=1 "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" "$@" </dev/null >"$T_DIR/up.out" 2>"$FIFO" &
    SLUICE_PID=$!
    LAST_CMD="SLUICE_DEBUG=1 $(_t_show "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" "$@") 2>stalled-fifo"
    OUT="" ERR="(a FIFO)"
    echo "\$ $LAST_CMD & -> pid $SLUICE_PID"
}

# Nobody reads stderr: chunks still commit long after the pipe is full, and SIGINT stops the runner
# within seconds (exit 3, stopped, its checkpoint written). Before, the loop blocked in the log's
# write: no chunk, no signal answered, only kill -9 ended it.
test_stalled_stderr_runs_and_stops() {
    long_key_table 3000
    bump_job 0001_bump 5 "-- sluice:pause 20ms"
    start_on_stalled_fifo up
    # 100 chunks are 400 KiB of log lines: far past what the pipe holds
    wait_until 90 sql_true "select count(*) >= 100 from sluice_progress"
    local start=$SECONDS
    kill -INT "$SLUICE_PID"
    RC=0
    wait "$SLUICE_PID" || RC=$?
    echo "# exit $RC after $((SECONDS - start)) s"
    assert_rc 3
    ((SECONDS - start <= 8)) || fail "SIGINT took $((SECONDS - start)) s to stop the runner"
    load_status
    assert_eq "$(sfield 0001_bump state)" stopped "state after SIGINT"
    local chunks
    chunks=$(sfield 0001_bump chunks)
    assert_sql "select count(*) from sluice_progress" "$chunks"
    assert_sql "select count(*) from t where n = 1" "$((chunks * 5))"
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|3000"
}

# got_chunks FILE FORMAT: the chunk numbers FILE's debug lines name, one a line, in their order.
got_chunks() {
    if [[ $2 == json ]]; then
        jq -r 'select(.event == "chunk") | .chunk' "$1"
    else
        grep -oE '^[0-9T:-]+Z sluice: debug: 0001_bump: chunk [0-9]+ ' "$1" | awk '{ print $6 }'
    fi
}

# got_dropped FILE FORMAT: the counts FILE's dropped-lines notices give, one a line.
got_dropped() {
    if [[ $2 == json ]]; then
        jq -r 'select(.event == "log_dropped") | .dropped' "$1"
    else
        grep -oE '^[0-9T:-]+Z sluice: warning: [0-9]+ log lines dropped: ' "$1" | awk '{ print $4 }'
    fi
}

# Once a reader comes, the lines the queue could not hold are told in a line where they are missing,
# and every line after it arrives, the last ones before exit too. FORMAT: text or json.
test_dropped_lines_are_told() {
    local format=$1 got="$T_DIR/stderr.got"
    long_key_table 2000
    bump_job 0001_bump 5 "-- sluice:pause 20ms"
    start_on_stalled_fifo --log-format "$format" up
    # 330 lines of 4 KiB do not fit in the pipe and the queue: some were dropped
    wait_until 90 sql_true "select count(*) >= 330 from sluice_progress"
    cat "$FIFO" >"$got" &
    local reader=$!
    RC=0
    wait "$SLUICE_PID" || RC=$?
    assert_rc 0
    wait "$reader"
    if [[ $format == json ]]; then
        jq -e . "$got" >/dev/null || fail "a line of stderr is not JSON"
        assert_eq "$(jq -r 'select(.event == "log_dropped") | .level' "$got" | sort -u)" warn "the notices' level"
        assert_contains "$(tail -n 1 "$got")" '"event":"done"' "the last line"
    else
        assert_contains "$(tail -n 1 "$got")" "done: 2000 rows in 400 chunks" "the last line"
    fi
    assert_contains "$(head -n 3 "$got")" "starting from chunk 1" "the first lines"
    # the chunks' lines come in order, and the notices count every one missing (and perhaps a
    # progress line or two: the queue drops lines, whichever they are)
    local chunks dropped missing total
    chunks=$(got_chunks "$got" "$format")
    dropped=$(got_dropped "$got" "$format")
    [[ -n $dropped ]] || fail "no notice of dropped lines"
    assert_eq "$(sort -n <<<"$chunks")" "$chunks" "the chunks' lines in order"
    missing=$((400 - $(wc -l <<<"$chunks")))
    total=$(($(paste -sd+ <<<"$dropped")))
    diag "$(wc -l <<<"$dropped") notices, $total lines dropped, $missing chunk lines missing"
    ((missing > 0 && total >= missing && total <= missing + 10)) ||
        fail "$missing chunk lines are missing and the notices count $total"
    # the pipe and the queue held the run's first 270 lines or so: the first notice comes after them
    local first_notice
    first_notice=$(grep -n -m 1 -E 'log lines dropped|"log_dropped"' "$got" | cut -d: -f1)
    ((first_notice > 100)) || fail "the first notice is line $first_notice: the queue held some 270 lines before it"
    assert_sql "select min(n), max(n), count(*) from t" "1|1|2000"
}

run_test "stderr nobody reads: chunks go on, SIGINT stops the runner in seconds (exit 3, stopped)" \
    test_stalled_stderr_runs_and_stops
run_test "stderr read again: a line tells how many lines were dropped, where they are missing; the rest arrive" \
    test_dropped_lines_are_told text
run_test "the same with --log-format json: a log_dropped event with a count" test_dropped_lines_are_told json
t_done
