#!/usr/bin/env bash
# test_throttle.sh: lock-timeout and retries against an application's row locks, windows, throttle-query, chunk-time.
#
# Windows are in local time with minute resolution. Rather than wait up to a minute for a boundary,
# the window tests run sluice with TZ set to a zone whose offset has seconds in it ("SLC-0:00:37"), so
# that local time is a few seconds before a minute boundary, and compute the window's HH:MM in that
# same zone: the window opens (or closes) a few seconds from now, every time.
. "$(dirname "$0")/../harness/lib.sh"

# t: n, and app for the rows an application writes.
TCOLS=("n int not null default 0, app int not null default 0")

# zone OFFSET: a TZ value whose local time is UTC + OFFSET seconds (either sign, under a day).
zone() {
    local off=$1 sign=-
    if ((off < 0)); then
        sign=+
        off=$((-off))
    fi
    printf 'SLC%s%d:%02d:%02d' "$sign" $((off / 3600)) $((off / 60 % 60)) $((off % 60))
}

# offset_at_second S: an offset (for zone) at which the local time now is S seconds past a minute.
offset_at_second() {
    echo $((($1 - 10#$(date -u +%S) + 60) % 60))
}

# hhmm ZONE EPOCH: local HH:MM in ZONE at EPOCH.
hhmm() {
    TZ=$1 date -d "@$2" +%H:%M
}

test_lock_timeout_retries() {
    make_table 3000 "${TCOLS[@]}"
    # Room on every page, so that the application's updates stay HOT on their page: sluice's UPDATE
    # (seq scan or index scan alike) then always reaches the application's row before the locked ones.
    psql_q "alter table t set (fillfactor = 10)"
    psql_q "vacuum full t"
    # What the application measures: how long each of its own single-row UPDATEs waited.
    psql_q "create table app_waits (at timestamptz, ms numeric)"
    psql_q "create procedure app_loop(n int) language plpgsql as \$\$
            declare t0 timestamptz;
            begin
                for i in 1 .. n loop
                    t0 := clock_timestamp();
                    update t set app = app + 1 where id = 1401;
                    insert into app_waits values (t0, extract(epoch from clock_timestamp() - t0) * 1000);
                    commit;
                    perform pg_sleep(0.1);
                end loop;
            end \$\$"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:lock-timeout 200ms
-- sluice:retries 10
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    # The application holds rows 1490..1500 for four seconds: sluice's chunk 15 (1401..1500) updates
    # 1401..1489, then meets the lock.
    psql -XAtq -v ON_ERROR_STOP=1 >"$T_DIR/locker.out" 2>&1 <<'SQL' &
BEGIN;
SELECT id FROM t WHERE id BETWEEN 1490 AND 1500 FOR UPDATE;
SELECT 'locked';
SELECT pg_sleep(4);
COMMIT;
SQL
    local locker=$!
    wait_until 10 grep -q locked "$T_DIR/locker.out"
    sluice_start up
    # Meanwhile the application updates row 1401, which sluice's stuck chunk has already updated: it
    # waits for sluice's transaction, for at most lock-timeout, since sluice gives up and rolls back.
    psql_q "call app_loop(40)"
    wait "$locker"
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "lock timeout"
    assert_contains "$ERR" "transient; retrying"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "3000|0"
    assert_sql "select count(*), sum(rows) from sluice_progress where job = '0001_bump'" "30|3000"
    # The chunk that met the lock took several attempts; the others one.
    assert_sql "select chunk_no from sluice_progress where job = '0001_bump' and attempts > 1" 15
    local attempts
    attempts=$(psql_q "select attempts from sluice_progress where job = '0001_bump' and chunk_no = 15")
    ((attempts >= 3)) || fail "chunk 15 was held four seconds with lock-timeout 200ms but took $attempts attempts"
    local retries
    retries=$(sqlite3 "$CKPT/0001_bump.sluice" "select count(*) from events where kind = 'retry' and message like '%lock timeout%'")
    assert_eq "$retries" "$((attempts - 1))" "retry events in the checkpoint"
    # The application never waited much longer than lock-timeout (without it: the whole four seconds),
    # and it did meet sluice's locks, so the measurement means something.
    local waits
    waits=$(psql_q "select count(*), round(max(ms)), count(*) filter (where ms > 50) from app_waits")
    diag "application updates: count, longest wait ms, waits over 50ms: $waits"
    IFS='|' read -r n max waited <<<"$waits"
    assert_eq "$n" 40 "application updates"
    ((max < 1000)) || fail "an application UPDATE waited ${max}ms for sluice (lock-timeout is 200ms)"
    ((waited >= 1)) || fail "no application UPDATE ever waited for sluice's chunk: the test proves nothing"
    assert_sql "select app from t where id = 1401" 40
    # The premise: the application's row stayed on a page before the locked rows' page.
    assert_sql "select (select (ctid::text::point)[0] from t where id = 1401) < (select (ctid::text::point)[0] from t where id = 1490)" t
}

test_window_opens_soon() {
    make_table 500 "${TCOLS[@]}"
    local zone now opens from to
    zone=$(zone "$(offset_at_second 54)")
    now=$(date +%s)
    # The next minute boundary of local time: the window opens then.
    opens=$((now + 60 - 10#$(TZ=$zone date -d "@$now" +%S)))
    from=$(hhmm "$zone" "$opens")
    to=$(hhmm "$zone" $((opens + 120)))
    diag "local time $(TZ=$zone date -d "@$now" +%T) in $zone; window $from-$to"
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 100
-- sluice:window $from-$to
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    TZ=$zone sluice_start up
    wait_until 10 grep -q "waiting until $from" "$T_DIR/bg.1.err"
    assert_eq "$(progress 0001_bump)" "0|0" "chunks before the window opens"
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "outside its windows; waiting until $from"
    assert_contains "$ERR" "window open; going on"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "500|0"
    # Nothing ran before the window opened.
    assert_sql "select count(*) from sluice_progress where committed_at < to_timestamp($opens)" 0
    assert_sql "select count(*) from sluice_progress" 5
}

test_window_closes_mid_run() {
    make_table 3000 "${TCOLS[@]}"
    local off zone now closes from to
    off=$(offset_at_second 53)
    zone=$(zone "$off")
    now=$(date +%s)
    # The window opened two minutes ago and closes at the next minute boundary of local time.
    closes=$((now + 60 - 10#$(TZ=$zone date -d "@$now" +%S)))
    from=$(hhmm "$zone" $((closes - 180)))
    to=$(hhmm "$zone" "$closes")
    diag "local time $(TZ=$zone date -d "@$now" +%T) in $zone; window $from-$to"
    # 150 chunks of at least 100ms: still running when the window closes, seven seconds from now.
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 20
-- sluice:pause 100ms
-- sluice:window $from-$to
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    TZ=$zone run_sluice up --no-wait
    assert_rc 3
    assert_contains "$ERR" "outside its windows (next opens at $from); stopping (--no-wait)"
    local chunks rows
    IFS='|' read -r chunks rows <<<"$(progress 0001_bump)"
    diag "stopped after $chunks chunks, $rows rows"
    ((rows > 0 && rows < 3000)) || fail "expected the run to stop part-way, it did $rows of 3000 rows"
    # Stopped at a chunk boundary: exactly the committed chunks' rows are done, each once.
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n not in (0, 1)) from t" "$rows|0"
    assert_sql "select count(*) from t where n = 1 and id > $rows" 0
    load_status
    assert_eq "$(sfield 0001_bump state)" stopped "state"
    assert_eq "$(sfield 0001_bump rows)" "$rows" "status rows"

    # Outside the window, --no-wait changes nothing.
    TZ=$zone run_sluice up --no-wait
    assert_rc 3
    assert_eq "$(progress 0001_bump)" "$chunks|$rows" "chunks after a run outside the window"
    assert_sql "select count(*) from t where n = 1" "$rows"

    # Back inside the window: in a zone two minutes behind, it is now a minute before it closes.
    local inside
    inside=$(zone $((off - 120)))
    diag "resuming at local time $(TZ=$inside date +%T) in $inside"
    TZ=$inside run_sluice up --no-wait
    assert_rc 0
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "3000|0"
    assert_sql "select count(*), sum(rows), max(chunk_no) from sluice_progress" "150|3000|150"
}

test_no_wait_outside_window() {
    make_table 300 "${TCOLS[@]}"
    local from to
    from=$(date -d "120 minutes" +%H:%M)
    to=$(date -d "180 minutes" +%H:%M)
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:window $from-$to
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up --no-wait
    assert_rc 3
    assert_contains "$ERR" "outside its windows (next opens at $from)"
    assert_sql "select count(*) from t where n <> 0" 0
    assert_eq "$(progress 0001_bump)" "0|0" "chunks"
    # nothing ran, so nothing is recorded as having run: the job is as it was
    assert_sql "select count(*) from sluice_jobs where job = '0001_bump' and state <> 'pending'" 0
    # a down outside the windows leaves a done job done (not rolling_back with nothing undone)
    sed -i '/sluice:window/d' "$JOBS/0001_bump.sql"
    printf -- '-- sluice:down\nUPDATE t SET n = n - 1 WHERE id BETWEEN :lo AND :hi;\n' >>"$JOBS/0001_bump.sql"
    run_sluice up
    assert_rc 0
    sed -i "1i -- sluice:window $from-$to" "$JOBS/0001_bump.sql"
    run_sluice down 0001_bump --no-wait
    assert_rc 3
    assert_contains "$ERR" "outside its windows (next opens at $from); stopping (--no-wait)"
    assert_sql "select state from sluice_jobs where job = '0001_bump'" done
    assert_sql "select count(*) from t where n <> 1" 0
}

test_throttle_query() {
    make_table 3000 "${TCOLS[@]}"
    psql_q "create table app_flags (busy bool not null); insert into app_flags values (false)"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 30
-- sluice:pause 100ms
-- sluice:throttle-query SELECT busy FROM app_flags
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 20 rows_done_at_least 0001_bump 1
    psql_q "update app_flags set busy = true"
    wait_until 10 grep -q "pausing: throttle-query returned true" "$T_DIR/bg.1.err"
    held_for 3 "chunks committed while throttle-query returned true"
    ((${HELD#*|} < 3000)) || fail "the job finished before the throttle-query turned true"
    psql_q "update app_flags set busy = false"
    sluice_wait
    assert_rc 0
    assert_match "$ERR" "resumed after [0-9]+s paused \(throttle-query returned true"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "3000|0"
    assert_sql "select count(*), sum(rows) from sluice_progress" "100|3000"
    local events
    events=$(sqlite3 "$CKPT/0001_bump.sluice" "select message from events where kind = 'throttle' order by id")
    assert_contains "$events" "throttle-query returned true"
    assert_match "$events" "resumed after [0-9]+s paused"
}

# A rollback keeps the job's windows and health limits as its up did: outside every window, down
# --no-wait exits 3 with nothing undone; a throttle-query that turns true holds its chunks back, and
# down finishes once it turns false.
test_down_throttled() {
    make_table 3000 "${TCOLS[@]}"
    psql_q "create table app_flags (busy bool not null); insert into app_flags values (false)"
    local before from to
    before=$(table_sum)
    bump_job 0001_bump 30 "-- sluice:undo snapshot(n)" "-- sluice:throttle-query SELECT busy FROM app_flags"
    run_sluice up
    assert_rc 0

    from=$(date -d "120 minutes" +%H:%M)
    to=$(date -d "180 minutes" +%H:%M)
    sed -i "s/^-- sluice:batch 30\$/-- sluice:batch 30\n-- sluice:window $from-$to/" "$JOBS/0001_bump.sql"
    run_sluice down 0001_bump --no-wait
    assert_rc 3
    assert_contains "$ERR" "outside its windows (next opens at $from); stopping (--no-wait)"
    assert_eq "$(progress 0001_bump)" "100|3000" "chunks applied after down outside the window"

    sed -i '/^-- sluice:window /d' "$JOBS/0001_bump.sql"
    job_pause 0001_bump 50ms
    sluice_start down 0001_bump
    wait_until 20 sql_true "select count(*) < 100 from sluice_progress"
    psql_q "update app_flags set busy = true"
    wait_until 10 grep -q "pausing: throttle-query returned true" "$T_DIR/bg.1.err"
    held_for 3 "chunks undone while throttle-query returned true"
    ((${HELD%|*} > 0)) || fail "the rollback finished before the throttle-query turned true"
    psql_q "update app_flags set busy = false"
    sluice_wait
    assert_rc 0
    assert_match "$ERR" "resumed after [0-9]+s paused \(throttle-query returned true"
    assert_eq "$(table_sum)" "$before" "the table after down"
    local events
    events=$(sqlite3 "$CKPT/0001_bump.sluice" "select message from events where kind = 'throttle' order by id")
    assert_contains "$events" "throttle-query returned true"
}

test_chunk_time_converges() {
    make_table 30000 "${TCOLS[@]}"
    # 0.1ms a row on top of the UPDATE: a 200ms chunk is a little under 2000 rows.
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:chunk-time 200ms
-- sluice:up
SELECT pg_sleep(0.0001 * (:hi - :lo + 1));
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "30000|0"
    local sizes
    sizes=$(sqlite3 "$CKPT/0001_bump.sluice" "select group_concat(rows, ' ') from (select rows from chunks order by chunk_no)")
    diag "chunk sizes: $sizes"
    local -a r
    read -r -a r <<<"$sizes"
    local i
    # Damped: no chunk more than 20% bigger than the one before (+1 for rounding of small batches).
    for ((i = 1; i < ${#r[@]} - 1; i++)); do
        ((r[i] * 10 <= r[i - 1] * 12 + 10)) || fail "chunk $((i + 1)) grew from ${r[i - 1]} to ${r[i]} rows (more than 20%)"
    done
    # Converged: the last three full chunks are near 2000 rows, and their middle time near 200ms (one
    # chunk the machine held up, under the suite's other file, once took 588 ms of a steady 1930 rows).
    local tail_sizes
    tail_sizes=$(sqlite3 "$CKPT/0001_bump.sluice" "select min(rows), max(rows), min(duration_ms),
                 (select duration_ms from (select duration_ms from chunks
                    where chunk_no < (select max(chunk_no) from chunks) order by chunk_no desc limit 3)
                  order by duration_ms limit 1 offset 1), max(duration_ms) from
                 (select rows, duration_ms from chunks where chunk_no < (select max(chunk_no) from chunks)
                  order by chunk_no desc limit 3)")
    diag "last three full chunks: min rows, max rows, min ms, middle ms, max ms: $tail_sizes"
    local lo hi lo_ms mid_ms hi_ms
    IFS='|' read -r lo hi lo_ms mid_ms hi_ms <<<"$tail_sizes"
    ((lo >= 1000 && hi <= 3000)) || fail "chunk sizes did not converge near 2000 rows: $tail_sizes"
    ((lo_ms >= 100 && mid_ms <= 400)) || fail "chunk times did not converge near 200ms: $tail_sizes"
    load_status
    local batch
    batch=$(sfield 0001_bump batch)
    ((batch >= 1000 && batch <= 3000)) || fail "status batch $batch is not near 2000"
}

run_test "lock-timeout: chunks give way to an application's row locks, retry, finish once" test_lock_timeout_retries
run_test "window: a window opening in a few seconds: waits, then runs" test_window_opens_soon
run_test "window: closing mid-run stops at a chunk boundary (--no-wait: exit 3, resumable)" test_window_closes_mid_run
run_test "window: --no-wait outside every window exits 3 and changes nothing" test_no_wait_outside_window
run_test "throttle-query: no chunk while it returns true, finishes after it turns false" test_throttle_query
run_test "down keeps the windows (--no-wait: exit 3) and the throttle-query" test_down_throttled
run_test "chunk-time: the batch converges near the target, growing at most 20% a chunk" test_chunk_time_converges
t_done
