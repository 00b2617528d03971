#!/usr/bin/env bash
# test_observe.sh: seeing a run: --metrics scraped during a run, --log-format json, report (parsed and rendered
# in headless Chromium), verify, plan --sample, --version and the man page, the progress bar.
. "$(dirname "$0")/../harness/lib.sh"

OBS="$SLUICE_ROOT/tests/harness/observe.py"

# served_port ERRFILE: the port a runner started with --metrics 127.0.0.1:0 serves on, from its log.
served_port() {
    wait_until 20 grep -q 'metrics at http://127.0.0.1:' "$1"
    sed -nE 's|.*metrics at http://127\.0\.0\.1:([0-9]+)/metrics.*|\1|p' "$1" | head -n 1
}

# metric RESULT KEY: a sample of the last scrape in `observe.py counters`' RESULT.
metric() {
    python3 -c 'import json, sys; print(json.loads(sys.argv[1])["last"].get(sys.argv[2], "missing"))' "$1" "$2"
}

# ---------------------------------------------------------------------------------------------------
# Metrics

test_metrics_during_a_run() {
    make_table 60000
    # job 1: 300 chunks over two workers (some 8 s), paused by ctl for a while; job 2: held by a window
    # hours away.
    write_job 0001_bump <<'JOB'
-- sluice:table t
-- sluice:batch 200
-- sluice:workers 2
-- sluice:pause 40ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
JOB
    local from to
    from=$(date -d '+3 hours' +%H:%M)
    to=$(date -d '+4 hours' +%H:%M)
    write_job 0002_later <<JOB
-- sluice:table t
-- sluice:window $from-$to
-- sluice:up
UPDATE t SET n = n + 10 WHERE id BETWEEN :lo AND :hi;
JOB
    local port scrapes="$T_DIR/scrapes"
    mkdir -p "$scrapes"
    sluice_start --metrics 127.0.0.1:0 up
    port=$(served_port "$T_DIR/bg.1.err")
    wait_until 20 curl -sf "http://127.0.0.1:$port/metrics" -o /dev/null
    # paused as soon as 4000 rows are done, before the slow probes below: on a loaded machine those took
    # longer than the whole job, and a pause after its end is only recorded for a next run (ctl_pause 0)
    wait_until 20 rows_done_at_least 0001_bump 4000
    run_sluice ctl 0001_bump pause
    assert_rc 0
    assert_contains "$OUT" "paused by sluice ctl"
    # curl every 100 ms, each answer kept
    (
        n=0
        until [[ -e $scrapes/stop ]]; do
            n=$((n + 1))
            curl -sf -m 5 "http://127.0.0.1:$port/metrics" -o "$scrapes/$(printf %05d $n).txt" || rm -f "$scrapes/$(printf %05d $n).txt"
            sleep 0.1
        done
    ) &
    local scraper=$!
    # malformed and refused requests get 4xx (5xx for a version it does not speak), and the run goes on
    assert_eq "$(python3 "$OBS" raw "$port" "b'\\x16\\x03\\x01\\x00\\xa5hello'")" 400 "TLS bytes"
    assert_eq "$(python3 "$OBS" raw "$port" "b'GET /metrics HTTP/1.1\\r\\n\\r\\n'")" 400 "HTTP/1.1 without Host"
    assert_eq "$(python3 "$OBS" raw "$port" "b'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nX: ' + b'a' * 9000")" 431 "huge header"
    assert_eq "$(python3 "$OBS" raw "$port" "b'GET /metrics HTTP/3.0\\r\\n\\r\\n'")" 505 "HTTP/3.0"
    assert_eq "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/nothing")" 404 "/nothing"
    assert_eq "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/metrics")" 405 "POST"
    # 500 idle connections: the server keeps at most 64 and answers scrapes all the same.
    python3 "$OBS" idle "$port" 500 6 >"$T_DIR/idle.out" &
    local idler=$!
    sleep 1.5
    wait_until 20 test -s "$T_DIR/idle.out"
    assert_eq "$(cat "$T_DIR/idle.out")" 500 "idle connections opened"
    # while idle connections are held: a scrape still answers at once
    local t0 t1
    t0=$(now_ms)
    curl -sf -m 5 "http://127.0.0.1:$port/metrics" -o "$T_DIR/during_idle.txt"
    t1=$(now_ms)
    diag "a scrape during 500 idle connections took $((t1 - t0)) ms"
    ((t1 - t0 < 2000)) || fail "a scrape took $((t1 - t0)) ms while idle connections were held"
    assert_contains "$(cat "$T_DIR/during_idle.txt")" 'sluice_throttled_seconds_total{job="0001_bump",reason="ctl_pause"}'
    run_sluice ctl 0001_bump resume
    assert_rc 0
    assert_contains "$OUT" "resumed by sluice ctl"
    # job 1 done, job 2 waits for its window
    wait_until 60 grep -q "0002_later: outside its windows" "$T_DIR/bg.1.err"
    sleep 1.5
    wait "$idler"
    touch "$scrapes/stop"
    wait "$scraper"
    sluice_kill INT
    assert_rc 3
    local result
    result=$(python3 "$OBS" counters "$scrapes")
    diag "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["scrapes"])' "$result") scrapes"
    assert_eq "$(metric "$result" 'sluice_rows_total{job="0001_bump"}')" 60000.0 "rows_total"
    assert_eq "$(metric "$result" 'sluice_chunks_total{job="0001_bump"}')" \
        "$(psql_q "select count(*) from sluice_progress where job = '0001_bump'").0" "chunks_total"
    assert_eq "$(metric "$result" 'sluice_chunk_duration_seconds_count{job="0001_bump"}')" \
        "$(psql_q "select count(*) from sluice_progress where job = '0001_bump'").0" "histogram count"
    assert_eq "$(metric "$result" 'sluice_job_state{job="0001_bump",state="done"}')" 1.0 "job 1 state"
    assert_eq "$(metric "$result" 'sluice_job_state{job="0002_later",state="running"}')" 1.0 "job 2 state"
    local paused window
    paused=$(metric "$result" 'sluice_throttled_seconds_total{job="0001_bump",reason="ctl_pause"}')
    window=$(metric "$result" 'sluice_throttled_seconds_total{job="0002_later",reason="window"}')
    diag "ctl_pause $paused s, window $window s"
    python3 -c "import sys; sys.exit(not (float('$paused') >= 1.0 and float('$window') >= 1.0))" ||
        fail "throttled seconds: ctl_pause $paused, window $window (expected at least 1 s each)"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "60000|0"
    # the run logged no error about the connections
    assert_not_contains "$(cat "$T_DIR/bg.1.err")" "error:"
}

# During a down: sluice_rows_total and sluice_chunks_total stay at what the job held when it began (they
# read 0), sluice_rows_undone_total counts up from there, and sluice_batch_size is the rows of the chunk
# being undone (it read 0).
test_metrics_during_a_down() {
    make_table 6000
    bump_job 0001_bump 150 "-- sluice:undo snapshot(n)"
    run_sluice up
    assert_rc 0
    job_pause 0001_bump 100ms
    local port
    sluice_start --metrics 127.0.0.1:0 down 0001_bump
    port=$(served_port "$T_DIR/bg.1.err")
    wait_until 30 sql_true "select count(*) < 30 from sluice_progress where job = '0001_bump'"
    curl -sf -m 5 "http://127.0.0.1:$port/metrics" -o "$T_DIR/scrape.txt"
    sluice_wait
    assert_rc 0
    local scrape
    scrape=$(cat "$T_DIR/scrape.txt")
    assert_match "$scrape" $'(^|\n)sluice_rows_total\\{job="0001_bump"\\} 6000\n'
    assert_match "$scrape" $'(^|\n)sluice_chunks_total\\{job="0001_bump"\\} 40\n'
    assert_match "$scrape" $'(^|\n)sluice_batch_size\\{job="0001_bump"\\} 150\n'
    assert_match "$scrape" $'(^|\n)sluice_rows_undone_total\\{job="0001_bump"\\} [1-9][0-9]{2,3}\n'
    assert_sql "select count(*) filter (where n = 0) from t" 6000
}

test_metrics_refusals() {
    make_table 10
    write_job 0001_bump <<'JOB'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
JOB
    run_sluice --metrics nowhere up
    assert_rc 2
    assert_contains "$ERR" "--metrics nowhere: expected HOST:PORT"
    run_sluice --metrics 127.0.0.1:70000 up
    assert_rc 2
    # a port held by another process: one the kernel gave it (a port found free could be taken by a
    # test file running beside this one before it is bound)
    local port
    python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(5)" >"$T_DIR/held_port" &
    wait_until 5 test -s "$T_DIR/held_port"
    port=$(cat "$T_DIR/held_port")
    run_sluice --metrics "127.0.0.1:$port" up
    assert_rc 2
    assert_contains "$ERR" "cannot listen"
    run_sluice --metrics "127.0.0.1:$port" status
    assert_rc 2
    # the same for a fleet run, which shares one endpoint between its targets (and leaks nothing: the
    # sanitizer build fails the run on a leak)
    run_sluice --db "$SLUICE_DB" --db "$SLUICE_DB" --metrics "127.0.0.1:$port" up
    assert_rc 2
    assert_contains "$ERR" "cannot listen"
    assert_not_contains "$ERR" "LeakSanitizer"
    assert_sql "select count(*) from t where n = 1" 0
}

# ---------------------------------------------------------------------------------------------------
# JSON logs

test_json_logs() {
    make_table 3000
    psql_q "create table gate (closed boolean not null); insert into gate values (true)"
    write_job 0001_bump <<'JOB'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 100ms
-- sluice:lock-timeout 200ms
-- sluice:retries 10
-- sluice:throttle-query SELECT closed FROM gate
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
JOB
    sluice_start --log-format json up
    wait_until 10 grep -q '"event":"throttle"' "$T_DIR/bg.1.err"
    # the application holds rows of chunk 15 for 5 seconds from a second before the gate opens: retries
    psql -XAtq -v ON_ERROR_STOP=1 >"$T_DIR/locker.out" 2>&1 <<'SQL' &
BEGIN;
SELECT id FROM t WHERE id BETWEEN 1490 AND 1500 FOR UPDATE;
SELECT 'locked';
SELECT pg_sleep(5);
COMMIT;
SQL
    local locker=$!
    wait_until 10 grep -q locked "$T_DIR/locker.out"
    sleep 1
    psql_q "update gate set closed = false"
    wait "$locker"
    wait_until 30 rows_done_at_least 0001_bump 2000
    sluice_kill INT
    assert_rc 3
    run_sluice --log-format json up
    assert_rc 0
    cat "$T_DIR/bg.1.err" "$T_DIR/last.err" >"$T_DIR/all.log"
    local got
    got=$(python3 "$OBS" jsonlog "$T_DIR/all.log" start throttle resume_after_throttle retry stopped resume done log)
    python3 - "$got" <<'PY'
import json, sys
ev = json.loads(sys.argv[1])
def one(name):
    if not ev[name]:
        sys.exit(f"no {name} event")
    return ev[name][0]
s = one("start"); assert s["job"] == "0001_bump" and s["chunk"] == 1 and s["batch"] == 100, s
t = one("throttle"); assert t["reason"] == "throttle_query" and "throttle-query" in t["detail"] and t["level"] == "warn", t
r = one("resume_after_throttle"); assert r["reason"] == "throttle_query" and r["seconds"] >= 1, r
x = one("retry"); assert x["chunk"] == 15 and x["attempt"] >= 1 and "lock timeout" in x["error"] and x["wait_ms"] > 0, x
st = one("stopped"); assert st["rows"] >= 2000 and st["chunks"] >= 20, st
re = one("resume"); assert re["rows_done"] == st["rows"] and re["chunk"] > 1, (re, st)
d = one("done"); assert d["rows"] == 3000 and d["chunks"] == 30, d
assert all(o["job"] in ("0001_bump", None) for k in ev for o in ev[k])
PY
    assert_sql "select count(*) filter (where n = 1) from t" 3000
    # a plain text run still prints text
    run_sluice status
    assert_not_contains "$ERR$OUT" '{"time"'
    run_sluice --log-format yaml status
    assert_rc 2
    assert_contains "$ERR" 'expected text or json'
    # the command line's own mistakes are JSON lines too, wherever --log-format json stands
    local args
    for args in "--log-format json --bogusflag status" "--log-format=json --on-conflict bogus down base" \
        "--db mysql://x/y --log-format json up" "--log-format json --db postgresql://a:b@h/d?foo=1 up"; do
        # shellcheck disable=SC2086 # the words of args are the arguments
        run_sluice $args
        assert_rc 2
        [[ -n $ERR ]] || fail "sluice $args said nothing"
        jq -e 'select(.level == "error") | .msg' <<<"$ERR" >/dev/null || fail "sluice $args: not JSON lines: $ERR"
    done
}

# ---------------------------------------------------------------------------------------------------
# report

# check_report FILE: parses strictly, one chart per measure; prints the parse (charts, summary cells) as JSON.
check_report() {
    local parsed
    parsed=$(python3 "$OBS" html "$1") || fail "$1 does not parse: $parsed"
    python3 - "$parsed" <<'PY' || return 1
import json, sys
p = json.loads(sys.argv[1])
want = ["rows_per_second", "chunk_duration", "batch_size", "workers", "throttled", "retries_splits", "set_aside"]
assert sorted(p["measures"]) == sorted(want), p["measures"]
PY
    echo "$parsed"
}

# cell PARSED ID: a summary cell.
cell() {
    python3 -c 'import json, sys; print(json.loads(sys.argv[1])["cells"][sys.argv[2]])' "$1" "$2"
}

# ckpt_sql JOB SQL: a query on the job's checkpoint file.
ckpt_sql() {
    sqlite3 "$CKPT/$1.sluice" "$2"
}

# ckpt_rank JOB P: the nearest-rank percentile P of the committed (not set aside) chunks' durations, as the
# report writes it.
ckpt_rank() {
    python3 - "$CKPT/$1.sluice" "$2" <<'PY'
import math, sqlite3, sys
ms = sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute("select duration_ms from chunks where skipped = 0"))
k = max(1, math.ceil(float(sys.argv[2]) * len(ms)))
print(f"{ms[k - 1] / 1000:.3f} s")
PY
}

# render_in_chromium HTML PNG: headless Chromium draws the page; nothing on its console.
render_in_chromium() {
    local html=$1 png=$2
    rm -rf "$T_DIR/chromium"
    timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$T_DIR/chromium" --enable-logging=stderr --v=0 --window-size=1000,2600 \
        --screenshot="$png" "file://$html" >"$T_DIR/chromium.out" 2>"$T_DIR/chromium.err" ||
        fail "chromium failed: $(tail -5 "$T_DIR/chromium.err")"
    [[ -s $png ]] || fail "no screenshot"
    local size
    size=$(stat -c %s "$png")
    ((size > 20000)) || fail "the screenshot is $size bytes: blank?"
    # the console: a page error, a refused or failed load (nothing may be fetched)
    if grep -E 'CONSOLE|Uncaught|Refused to|net::ERR|Failed to load' "$T_DIR/chromium.err"; then
        fail "chromium's console reported errors rendering $html"
    fi
}

test_report() {
    make_table 4000
    local job='0001_bump<&>'
    # row 777 fails (division by zero): set aside; two workers; a ctl pause mid-run
    write_job "$job" <<'JOB'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 2
-- sluice:pause 50ms
-- sluice:on-error skip
-- sluice:up
UPDATE t SET n = n + 1 / (id - 777) + 1 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET n = 0 WHERE id BETWEEN :lo AND :hi;
JOB
    sluice_start --log-format json up
    wait_until 20 rows_done_at_least "$job" 1500
    run_sluice ctl "$job" pause
    assert_rc 0
    sleep 1.2
    # a running job's report
    run_sluice report "$job" -o "$T_DIR/running.html"
    assert_rc 0
    local parsed
    parsed=$(check_report "$T_DIR/running.html")
    assert_eq "$(cell "$parsed" sum-state)" running "state while it runs"
    run_sluice ctl "$job" resume
    assert_rc 0
    sluice_wait
    assert_rc 0
    # its JSON log: the splits down to row 777, the row set aside, the ctl requests
    local events
    events=$(python3 "$OBS" jsonlog "$T_DIR/bg.1.err" split set_aside ctl)
    python3 - "$events" <<'PY'
import json, sys
ev = json.loads(sys.argv[1])
assert ev["split"] and all(e["limit"] < e["rows"] and "division by zero" in e["error"] for e in ev["split"]), ev["split"]
a, = ev["set_aside"]
assert a["key"] == '["777"]' and "division by zero" in a["error"] and a["job"] == "0001_bump<&>", a
assert [e["request"] for e in ev["ctl"]] == ["paused by sluice ctl", "resumed by sluice ctl"], ev["ctl"]
PY
    run_sluice report "$job"
    assert_rc 0
    local file="$T_DIR/$job.report.html"
    assert_eq "$OUT" "$job.report.html" "report's output path"
    assert_eq "$(stat -c %a "$file")" 600 "the report's mode"
    parsed=$(check_report "$file")
    assert_eq "$(cell "$parsed" sum-job)" "$job" "job (escaped in the page, read back)"
    assert_not_contains "$(cat "$file")" "<&>"
    assert_eq "$(cell "$parsed" sum-rows)" "$(ckpt_sql "$job" 'select rows from job')" "rows"
    assert_eq "$(cell "$parsed" sum-chunks)" "$(ckpt_sql "$job" 'select chunks from job')" "chunks"
    assert_eq "$(cell "$parsed" sum-rows)" 4000 "rows"
    assert_eq "$(cell "$parsed" sum-set-aside)" "$(ckpt_sql "$job" 'select count(*) from chunks where skipped')" "set aside"
    assert_eq "$(cell "$parsed" sum-set-aside)" 1 "set aside"
    assert_eq "$(cell "$parsed" sum-splits)" "$(ckpt_sql "$job" "select count(*) from events where kind = 'split'")" "splits"
    assert_eq "$(cell "$parsed" sum-retries)" "$(ckpt_sql "$job" "select count(*) from events where kind = 'retry'")" "retries"
    assert_eq "$(cell "$parsed" sum-median)" "$(ckpt_rank "$job" 0.5)" "median chunk time"
    assert_eq "$(cell "$parsed" sum-p99)" "$(ckpt_rank "$job" 0.99)" "p99 chunk time"
    local held
    held=$(ckpt_sql "$job" "select coalesce(sum(json_extract(data, '\$.ms')), 0) from events where kind = 'hold_end'")
    assert_eq "$(cell "$parsed" sum-throttled)" "$(python3 -c "print(f'{$held / 1000:.3f} s')")" "time held back"
    ((held >= 1000)) || fail "the ctl pause held the job $held ms"
    assert_contains "$(cat "$file")" "division by zero"
    assert_eq "$(ckpt_sql "$job" 'select count(distinct worker) from chunks')" 2 "workers recorded per chunk"
    assert_eq "$(ckpt_sql "$job" 'select max(batch) from chunks where not skipped')" 100 "batches recorded"
    render_in_chromium "$file" "$T_DIR/report.png"
    cp "$T_DIR/report.png" "${SLUICE_TEST_LOGDIR:-/tmp}/report.png" 2>/dev/null || true

    # a down run, scraped while it runs (40 chunks, 50ms apart), and its report
    local port last=""
    sluice_start --metrics 127.0.0.1:0 down "$job"
    port=$(served_port "$T_DIR/bg.$_T_BG_COUNT.err")
    while kill -0 "$SLUICE_PID" 2>/dev/null; do
        curl -sf -m 5 "http://127.0.0.1:$port/metrics" -o "$T_DIR/down.metrics" && last=$(cat "$T_DIR/down.metrics") &&
            cat "$T_DIR/down.metrics" >>"$T_DIR/down.all.metrics"
        sleep 0.1
    done
    sluice_wait
    assert_rc 0
    assert_match "$last" 'sluice_rows_undone_total\{job="0001_bump<&>"\} [1-9][0-9]*'
    # rolling back while it ran; the last scrape may come after the state turned rolled_back, before exit
    grep -Fqx 'sluice_job_state{job="0001_bump<&>",state="rolling_back"} 1' "$T_DIR/down.all.metrics" ||
        fail "no scrape showed the job rolling back"
    assert_match "$last" 'sluice_job_state\{job="0001_bump<&>",state="(rolling_back|rolled_back)"\} 1'
    # the workers undoing it, as some scrape saw them
    grep -Eq '^sluice_workers\{job="0001_bump<&>"\} [1-9]$' "$T_DIR/down.all.metrics" || fail "no scrape showed the workers of down"
    run_sluice report "$job" -o "$T_DIR/down.html"
    assert_rc 0
    parsed=$(check_report "$T_DIR/down.html")
    # row 777, set aside by up, was never changed, so down puts back the other 3999 (as its last line says)
    assert_eq "$(cell "$parsed" sum-rows-undone)" 3999 "rows undone"
    assert_contains "$(cat "$T_DIR/bg.$_T_BG_COUNT.err")" "rolled back: 3999 rows" "down's last line"
    assert_eq "$(cell "$parsed" sum-chunks-undone)" "$(ckpt_sql "$job" 'select count(*) from undone')" "chunks undone"
    assert_eq "$(cell "$parsed" sum-state)" rolled_back "state after down"
    render_in_chromium "$T_DIR/down.html" "$T_DIR/down.png"

    run_sluice report 0009_none
    assert_rc 2
    assert_contains "$ERR" 'no checkpoint file for job "0009_none"'

    # -o names a file it replaces: a FIFO, a symbolic link or a directory stays as it is, refused
    mkfifo "$T_DIR/fifo"
    ln -s "$T_DIR/elsewhere.html" "$T_DIR/link.html"
    mkdir "$T_DIR/dir.html"
    local o
    for o in fifo link.html dir.html; do
        run_sluice report "$job" -o "$T_DIR/$o"
        assert_rc 2
        assert_contains "$ERR" "report writes a new file in its place"
    done
    [[ -p $T_DIR/fifo && -L $T_DIR/link.html && -d $T_DIR/dir.html && ! -e $T_DIR/elsewhere.html ]] ||
        fail "report -o replaced what was there: $(ls -la "$T_DIR")"
    # output that cannot be written (a full disk) is an error, not exit 0 with half a page
    run_cmd sh -c '"$@" >/dev/full' sh "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" report "$job" -o -
    assert_rc 1
    assert_contains "$ERR" "cannot write the output to stdout"
    run_cmd sh -c '"$@" >/dev/full' sh "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" status --json
    assert_rc 1
}

# ---------------------------------------------------------------------------------------------------
# verify

test_verify_pg() {
    make_table 1000
    # the up statement leaves row 7 alone: verify finds it
    write_job 0001_fill <<'JOB'
-- sluice:table t
-- sluice:batch 100
-- sluice:verify SELECT count(*) = 0 FROM t WHERE n = 0
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi AND id <> 7;
JOB
    run_sluice plan 0001_fill
    assert_rc 0
    assert_contains "$OUT" "verify:     SELECT count(*) = 0 FROM t WHERE n = 0 ($JOBS/0001_fill.sql:3) -> not true yet"
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" "$JOBS/0001_fill.sql:3: verify returned f, not true: SELECT count(*) = 0 FROM t WHERE n = 0"
    load_status
    assert_eq "$(sfield 0001_fill state)" failed "state"
    assert_contains "$(sfield 0001_fill error)" "0001_fill.sql:3: verify returned f"
    assert_sql "select state from sluice_jobs where job = '0001_fill'" failed
    assert_sql "select count(*), sum(rows) from sluice_progress where job = '0001_fill'" "10|1000"
    # still false: fails again, without walking
    run_sluice up
    assert_rc 1
    assert_sql "select count(*) from t where n = 2" 0
    psql_q "update t set n = 1 where id = 7"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "verify returned true"
    # not walked again: no chunk more, no row bumped twice
    assert_sql "select count(*), max(chunk_no) from sluice_progress where job = '0001_fill'" "10|10"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "1000|0"
    assert_sql "select state, error is null from sluice_jobs where job = '0001_fill'" "done|t"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "already done"
}

test_verify_sqlite() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 500
    write_job 0001_fill <<'JOB'
-- sluice:table t
-- sluice:batch 100
-- sluice:verify SELECT count(*) = 0 FROM t WHERE n = 0
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi AND id <> 7;
JOB
    run_sluice plan 0001_fill
    assert_rc 0
    assert_contains "$OUT" "($JOBS/0001_fill.sql:3) -> not true yet"
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" "$JOBS/0001_fill.sql:3: verify returned 0, not true"
    assert_sq "select state from sluice_jobs where job = '0001_fill'" failed
    run_sluice up
    assert_rc 1
    assert_sq "select count(*) from t where n = 2" 0
    sq "update t set n = 1 where id = 7"
    run_sluice up
    assert_rc 0
    assert_sq "select count(*), max(chunk_no) from sluice_progress" "5|5"
    assert_sq "select count(*) from t where n = 1" 500
    assert_sq "select state from sluice_jobs where job = '0001_fill'" done
}

# ---------------------------------------------------------------------------------------------------
# plan --sample

sluice_tables_pg() {
    psql_q "select coalesce(string_agg(relname, ',' order by relname), '') from pg_class where relname like 'sluice%'"
}

# bookkeeping: a digest of what sluice's tables hold.
bookkeeping() {
    psql_q "select md5(coalesce((select string_agg(p::text, ',' order by job, chunk_no) from sluice_progress p), '') ||
                       coalesce((select string_agg(j::text, ',' order by job) from sluice_jobs j), '') ||
                       coalesce((select string_agg(m::text, ',' order by key) from sluice_meta m), ''))"
}

test_plan_sample_pg() {
    make_table 5000
    psql_q "alter table t add column s text; update t set s = md5(id::text)"
    write_job 0001_bump <<'JOB'
-- sluice:table t
-- sluice:batch 200
-- sluice:pause 10ms
-- sluice:up
UPDATE t SET n = n + 1, s = upper(s) WHERE id BETWEEN :lo AND :hi;
JOB
    psql_q "analyze t"
    local before
    before=$(psql_q "select md5(string_agg(t::text, ',' order by id)) from t")
    run_sluice plan 0001_bump --sample 5
    assert_rc 0
    assert_contains "$OUT" "sample: the first 5 chunks, each in a transaction that is rolled back"
    assert_contains "$OUT" 'chunk 5: up to ["1000"], 200 rows, 200 changed'
    assert_not_contains "$OUT" "chunk 6:"
    assert_contains "$OUT" "time per chunk, median:"
    assert_contains "$OUT" "time per chunk, p90:"
    assert_contains "$OUT" "chunks:                        ~25"
    assert_contains "$OUT" "total time at the job's pace:"
    assert_match "$OUT" "WAL per chunk: +[1-9][0-9]* bytes"
    assert_sql "select md5(string_agg(t::text, ',' order by id)) from t" "$before"
    assert_eq "$(sluice_tables_pg)" "" "sluice's tables (none may be created)"
    [[ ! -e $CKPT/0001_bump.sluice ]] || fail "plan --sample wrote a checkpoint file"
    # with sluice's tables there (another job ran), they are left as they were
    write_job 0002_other <<'JOB'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n WHERE id BETWEEN :lo AND :hi;
JOB
    run_sluice up 0002_other
    assert_rc 0
    local book
    book=$(bookkeeping)
    before=$(psql_q "select md5(string_agg(t::text, ',' order by id)) from t")
    run_sluice plan 0001_bump --sample 5
    assert_rc 0
    assert_sql "select md5(string_agg(t::text, ',' order by id)) from t" "$before"
    assert_eq "$(bookkeeping)" "$book" "sluice's tables"
    assert_sql "select count(*) from sluice_jobs where job = '0001_bump'" 0
    run_sluice plan 0001_bump --sample 0
    assert_rc 2
    run_sluice up --sample 3
    assert_rc 2
}

test_plan_sample_sqlite() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 2000
    write_job 0001_bump <<'JOB'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
JOB
    local before
    before=$(sq_sum t)
    run_sluice plan 0001_bump --sample 5
    assert_rc 0
    assert_contains "$OUT" 'chunk 5: up to ["500"], 100 rows, 100 changed'
    assert_not_contains "$OUT" "chunk 6:"
    assert_contains "$OUT" "time per chunk, median:"
    assert_contains "$OUT" "chunks:                        ~20"
    assert_eq "$(sq_sum t)" "$before" "the table"
    assert_sq "select count(*) from sqlite_master where name like 'sluice%'" 0
    [[ ! -e $CKPT/0001_bump.sluice ]] || fail "plan --sample wrote a checkpoint file"
}

# ---------------------------------------------------------------------------------------------------
# The small things

test_version_man_and_bar() {
    run_sluice --version
    assert_rc 0
    assert_match "$OUT" "^sluice [0-9]+\.[0-9]+\.[0-9]+$"
    local version=${OUT#sluice }
    # the man page is installed with the binary
    local dest="$T_DIR/inst" man
    run_cmd meson install -C "$SLUICE_BUILD" --destdir "$dest" --no-rebuild
    assert_rc 0
    man=$(find "$dest" -name sluice.1 -path '*man1*')
    [[ -n $man ]] || fail "no sluice.1 installed under $dest"
    [[ -n $(find "$dest" -name sluice -path '*/bin/*') ]] || fail "no binary installed"
    run_cmd man -l -P cat "$man"
    assert_rc 0
    assert_contains "$OUT" "report JOB"
    assert_contains "$OUT" "sluice $version" "the man page (its version is sluice --version's)"
    # the progress line on a terminal draws a bar
    make_table 3000
    write_job 0001_bump <<'JOB'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 30ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
JOB
    psql_q "analyze t"
    run_cmd script -qfec "stty cols 200; $SLUICE --jobs $JOBS --checkpoints $CKPT up" "$T_DIR/typescript"
    assert_rc 0
    assert_match "$(cat "$T_DIR/typescript")" '\[#+\.*\] 0001_bump: [0-9]+ of ~3000 rows'
    assert_drawn_within 200 "$T_DIR/typescript"
    # a terminal of 60 columns: the line is shortened to fit (the bar goes first), never wraps: a wrapped
    # line's head would be left behind by each redraw, which erases one row a line
    bump_job 0002_bump 100 "-- sluice:pause 30ms"
    run_cmd script -qfec "stty cols 60; $SLUICE --jobs $JOBS --checkpoints $CKPT up" "$T_DIR/typescript"
    assert_rc 0
    assert_drawn_within 60 "$T_DIR/typescript"
    assert_match "$(cat "$T_DIR/typescript")" '0002_bump: [0-9]+ of ~3000 rows \([0-9.]+%\)'
    assert_not_contains "$(cat "$T_DIR/typescript")" "[#" "the progress line on 60 columns"
}

# assert_drawn_within COLUMNS TYPESCRIPT: every progress line drawn (`JOB: N rows`, `JOB: N of ~M rows`,
# with or without its bar) fits in COLUMNS, and some were drawn.
assert_drawn_within() {
    python3 - "$1" "$2" <<'PY' || fail "progress lines wider than $1 columns in $2"
import re, sys
cols, text = int(sys.argv[1]), open(sys.argv[2], encoding="utf-8", errors="replace").read()
drawn = [seg for seg in re.split(r"[\r\n]|\x1b\[[0-9;]*[A-Za-z]", text)
         if re.match(r"(\[[#.]+\] )?\d{4}_\w+: \d+ (of ~\d+ )?rows", seg)]
wide = [seg for seg in drawn if len(seg) > cols]
print(f"{len(drawn)} progress lines drawn, widest {max(map(len, drawn), default=0)}; too wide: {wide[:3]}",
      file=sys.stderr)
sys.exit(0 if drawn and not wide else 1)
PY
}

# A table never analyzed: the planner's guess of a where's and a key range's share comes from fixed
# defaults (a range keeps 0.5 %), so the percent and ETA would lie (99.9 % from a tenth of the run on
# here). No estimate instead: no percent, no ETA, no sluice_rows_estimated; rows and rate still shown,
# and the run says once (two workers ask for estimates twice) that ANALYZE gives one.
test_no_statistics_no_estimate() {
    make_table 4000
    psql_q "alter table t set (autovacuum_enabled = off)" # autovacuum would analyze it under the test
    assert_sql "select reltuples < 0 from pg_class where oid = 't'::regclass" t
    write_job 0001_bump <<'JOB'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 2
-- sluice:pause 200ms
-- sluice:where n = 0
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi AND n = 0;
JOB
    # 20 rests of 200 ms a worker: still running when a slow probe has seen 1000 rows done
    local port
    sluice_start --log-format json --metrics 127.0.0.1:0 up
    port=$(served_port "$T_DIR/bg.1.err")
    wait_until 30 rows_done_at_least 0001_bump 1000
    curl -sf -m 5 "http://127.0.0.1:$port/metrics" -o "$T_DIR/scrape.txt"
    sluice_wait
    assert_rc 0
    assert_contains "$(cat "$T_DIR/scrape.txt")" 'sluice_rows_total{job="0001_bump"}'
    assert_not_contains "$(cat "$T_DIR/scrape.txt")" 'sluice_rows_estimated{' "a scrape"
    assert_not_contains "$(cat "$T_DIR/scrape.txt")" 'sluice_eta_seconds{' "a scrape"
    python3 - "$T_DIR/bg.1.err" <<'PY' || fail "up's events: $(cat "$T_DIR/bg.1.err")"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
said = [o for o in ev if o["event"] == "no_estimate"]
assert len(said) == 1 and said[0]["level"] == "info" and said[0]["table"] == "t", said
assert "ANALYZE t" in said[0]["msg"], said
start = [o for o in ev if o["event"] == "start"]
assert len(start) == 1 and start[0]["rows_estimated"] == -1, start
assert all("rows_estimated" not in o for o in ev if o["event"] == "progress"), ev
PY
    assert_sql "select count(*) filter (where n = 1) from t" 4000
    # on a terminal: rows and rate, no bar, percent or ETA
    bump_job 0002_bump 100 "-- sluice:pause 30ms"
    run_cmd script -qfec "$SLUICE --jobs $JOBS --checkpoints $CKPT up" "$T_DIR/typescript"
    assert_rc 0
    assert_match "$(cat "$T_DIR/typescript")" '0002_bump: [0-9]+ rows, [0-9]+ rows/s, batch 100'
    assert_contains "$(cat "$T_DIR/typescript")" "t has no statistics (never analyzed)"
    assert_not_contains "$(cat "$T_DIR/typescript")" "%)" "the progress line"
    assert_not_contains "$(cat "$T_DIR/typescript")" "[#" "the progress line"
    assert_not_contains "$(cat "$T_DIR/typescript")" ", eta " "the progress line"
    # analyzed, the table has an estimate again, and the run says nothing of statistics
    psql_q "analyze t"
    bump_job 0003_bump 100 "-- sluice:where n = 2"
    run_sluice --log-format json up
    assert_rc 0
    assert_not_contains "$ERR" "no_estimate"
    assert_match "$ERR" '"event":"start".*"rows_estimated":(39[0-9][0-9]|40[0-9][0-9])[,}]'
}

# A down killed with kill -9: history says what the database cannot know of it (the rows and chunks it
# undid, when it stopped: its chunks' rows are gone from sluice_progress) as unknown, before the next
# run and after it; it said "0 0" and no end. The report counts a killed run to the last thing it
# recorded, not to the end of the journal (which counted later runs' time twice), and the page made
# from the database counts the rows the downs recorded undoing, "at least" when one did not: it said 0.
test_killed_down_in_history_and_report() {
    make_table 6000
    bump_job 0001_bump 100 "-- sluice:undo snapshot(n)"
    run_sluice up
    assert_rc 0
    job_pause 0001_bump 50ms
    sluice_start down 0001_bump
    wait_until 30 sql_true "select count(*) < 50 from sluice_progress where job = '0001_bump'"
    sluice_kill KILL
    assert_rc 137
    local left
    left=$(psql_q "select count(*) from sluice_progress where job = '0001_bump'")
    ((left >= 20)) || fail "the down was nearly done before the kill: $left chunks left"
    run_sluice history --json
    assert_rc 0
    assert_eq "$(jq -c '[.[] | select(.kind == "down") | [.outcome, .rows, .chunks, .ended_at]]' <<<"$OUT")" \
        '[["interrupted",null,null,null]]' "the killed down, before the next run"
    run_sluice down 0001_bump
    assert_rc 0
    run_sluice history --json
    assert_rc 0
    assert_eq "$(jq -c '[.[] | select(.kind == "down") | [.outcome, .rows, .chunks, .ended_at == null]]' <<<"$OUT")" \
        "[[\"interrupted\",null,null,true],[\"done\",$((left * 100)),$left,false]]" "the downs, after the next"
    run_sluice history
    assert_match "$OUT" "unknown +0001_bump +down +interrupted +\\? +\\?"
    # wall time: the runs one after the other fit between the first start and the last end
    local parsed wall span
    run_sluice report 0001_bump -o "$T_DIR/file.html"
    assert_rc 0
    parsed=$(check_report "$T_DIR/file.html")
    wall=$(cell "$parsed" sum-wall)
    span=$(ckpt_sql 0001_bump "select max(ended_at) - min(started_at) from runs where kind <> 'stamp'")
    python3 -c "import sys; w = float(sys.argv[1].split()[0]) * 1000; sys.exit(0 if 0 < w <= $span + 1 else 1)" \
        "$wall" || fail "report's wall time $wall, the runs span ${span} ms"
    # the page from the database
    mkdir "$T_DIR/empty"
    run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$T_DIR/empty" report 0001_bump -o "$T_DIR/db.html"
    assert_rc 0
    parsed=$(check_report "$T_DIR/db.html")
    assert_eq "$(cell "$parsed" sum-rows-undone)" \
        "at least $((left * 100)) (1 down killed before it ended did not record its count)" "rows undone (database)"
    wall=$(cell "$parsed" sum-wall)
    span=$(psql_q "select (extract(epoch from max(ended_at) - min(started_at)) * 1000)::bigint from sluice_runs")
    python3 -c "import sys; w = float(sys.argv[1].split()[0]) * 1000; sys.exit(0 if 0 < w <= $span + 1 else 1)" \
        "$wall" || fail "the database page's wall time $wall, the runs span ${span} ms"
    assert_contains "$(cat "$T_DIR/db.html")" "<td>unknown</td><td>?</td><td>?</td>"
    assert_contains "$(cat "$T_DIR/db.html")" "the chunks each down undid, one by one"
}

run_test "metrics: scraped every 100 ms, counters only grow, final counts, holds by reason, 4xx, 500 idle connections" test_metrics_during_a_run
run_test "a table never analyzed: no percent, ETA or rows_estimated; said once, with ANALYZE" test_no_statistics_no_estimate
run_test "metrics during a down: rows_total and chunks_total the job's as it began, batch_size the chunk's rows" \
    test_metrics_during_a_down
run_test "metrics: a bad address or a port in use is refused with exit 2 before anything runs" test_metrics_refusals
run_test "--log-format json: every line of a run with a throttle, retries, a stop and a resume is JSON with its fields" test_json_logs
run_test "report: parses, a chart per measure, summary equals the checkpoint, renders in Chromium; running and down runs" test_report
run_test "a down killed with kill -9: history and report say what is unknown, wall time ends at its last chunk" \
    test_killed_down_in_history_and_report
run_test "verify (PostgreSQL): false fails the job naming file:line; up re-checks without walking; true: done" test_verify_pg
run_test "verify (SQLite): false then true" test_verify_sqlite
run_test "plan --sample 5 (PostgreSQL): estimates, WAL; the table and sluice's tables unchanged, none created" test_plan_sample_pg
run_test "plan --sample 5 (SQLite): the table unchanged, no sluice table created" test_plan_sample_sqlite
run_test "--version, the man page installed by meson install, the progress bar" test_version_man_and_bar
t_done
