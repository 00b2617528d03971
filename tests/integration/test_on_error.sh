#!/usr/bin/env bash
# test_on_error.sh: chunks that keep failing: split on transient errors, on-error skip sets failing rows aside.
. "$(dirname "$0")/../harness/lib.sh"

# items(id, v) with v < 1000 checked; rows 17, 2500, 2501 and 4999 sit at 995, so adding 10 breaks the check.
make_items() {
    psql_q "create table items (id int primary key, v int not null check (v < 1000));
            insert into items select g, g % 100 from generate_series(1, 5000) g;
            update items set v = 995 where id in (17, 2500, 2501, 4999)"
}

# items_job ON_ERROR: a job adding 10 to items.v (and a down section taking it off), 300 rows a chunk, on-error ON_ERROR.
items_job() {
    write_job 0001_bump <<EOF
-- sluice:table items
-- sluice:batch 300
-- sluice:on-error $1
-- sluice:up
UPDATE items SET v = v + 10 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE items SET v = v - 10 WHERE id BETWEEN :lo AND :hi;
EOF
}

test_skip_sets_exactly_the_failing_rows_aside() {
    make_items
    items_job skip
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "set aside (on-error skip)" "log"
    # the last line counts them, as a run read from its last line alone must show them
    assert_contains "$(tail -n 1 <<<"$ERR")" \
        'done: 5000 rows in 46 chunks; 4 of the rows were set aside (on-error skip): `sluice status 0001_bump` lists them' \
        "the done line"
    # Every other row changed exactly once; the four failing rows untouched.
    assert_sql "select count(*) from items where id not in (17, 2500, 2501, 4999) and v = id % 100 + 10" 4996
    assert_sql "select string_agg(id || ':' || v, ',' order by id) from items where id in (17, 2500, 2501, 4999)" \
        "17:995,2500:995,2501:995,4999:995"
    assert_sql "select string_agg(hi[1], ',' order by chunk_no) from sluice_progress where skipped" "17,2500,2501,4999"
    run_sluice status --json
    assert_rc 0
    local keys
    keys=$(python3 -c 'import json,sys; j=json.load(sys.stdin)[0]; print(",".join(s["key"][0] for s in j["skipped"]), j["state"]); assert all("items_v_check" in s["error"] for s in j["skipped"])' <<<"$OUT")
    assert_eq "$keys" "17,2500,2501,4999 done" "skipped keys in status --json"
    run_sluice status
    assert_contains "$OUT" 'skipped ["2501"]' "status lists the keys"
    # A second up changes nothing: the rows set aside are not tried again.
    local sum
    sum=$(psql_q "select sum(v) from items")
    run_sluice up
    assert_rc 0
    assert_sql "select sum(v) from items" "$sum"
}

test_skip_then_down_leaves_set_aside_rows_alone() {
    make_items
    local before
    before=$(psql_q "select md5(string_agg(id || ':' || v, ',' order by id)) from items")
    items_job skip
    run_sluice up
    assert_rc 0
    run_sluice down 0001_bump
    assert_rc 0
    assert_contains "$ERR" "rolled back: 4996 rows in 46 chunks; 4 rows up set aside (on-error skip) left as they were" \
        "down's last line: the rows set aside were not put back, never having changed"
    assert_sql "select md5(string_agg(id || ':' || v, ',' order by id)) from items" "$before"
    assert_sql "select count(*) from sluice_progress" 0
}

# status_skipped_lines: the set-aside lines of $OUT (status's table), one key a line, then the tail line.
status_skipped_lines() {
    grep -E '^    (skipped|\.\.\.)' <<<"$OUT" | sed -E 's/^    skipped \["([0-9]+)"\].*/\1/'
}

test_status_lists_the_first_rows_set_aside() {
    psql_q "create table items (id int primary key, v int not null check (v < 1000));
            insert into items select g, case when g % 40 = 0 then 995 else 0 end from generate_series(1, 1000) g"
    items_job skip
    run_sluice up
    assert_rc 0
    assert_contains "$(tail -n 1 <<<"$ERR")" "25 of the rows were set aside" "the done line"
    # The table lists the first ten, in the order they were set aside, and counts the rest.
    local want
    want=$(printf '%s\n' 40 80 120 160 200 240 280 320 360 400 \
        '    ... and 15 more (25 rows set aside in all): `sluice status 0001_bump --json` lists every one')
    run_sluice status
    assert_rc 0
    assert_eq "$(status_skipped_lines)" "$want" "status, from the database"
    run_sluice status 0001_bump
    assert_eq "$(status_skipped_lines)" "$want" "status JOB"
    # --json lists every one, as before.
    run_sluice status --json
    assert_eq "$(python3 -c 'import json,sys; print(",".join(s["key"][0] for s in json.load(sys.stdin)[0]["skipped"]))' <<<"$OUT")" \
        "$(seq -s, 40 40 1000)" "status --json lists all 25"
    # The same from the checkpoint file, when the database cannot be reached.
    run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" --db "postgresql://nobody@127.0.0.1:1/x" status
    assert_rc 0
    assert_contains "$ERR" "showing what the checkpoint files" "status fell back to the files"
    assert_eq "$(status_skipped_lines)" "$want" "status, from the checkpoint file"
    run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" --db "postgresql://nobody@127.0.0.1:1/x" status --json
    assert_eq "$(python3 -c 'import json,sys; j=json.load(sys.stdin)[0]; print(len(j["skipped"]), j["source"])' <<<"$OUT")" \
        "25 checkpoint" "status --json, from the checkpoint file"
}

# An error no row's data causes (the role lost its right to update the table mid-run: 42501) would fail
# every row alike: on-error skip stops the job at that chunk, with a hint, instead of splitting it and
# setting every row aside one by one; once the grant is back, up resumes it, every row once.
test_skip_stops_on_an_error_no_row_causes() {
    make_table 600
    make_app_role "grant select, update on t to sl_app"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:pause 200ms
-- sluice:on-error skip
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start --db "$APP_DB" up
    wait_until 20 sql_true "select count(*) >= 2 from sluice_progress"
    psql_q "revoke update on t from sl_app"
    sluice_wait
    assert_rc 1
    assert_contains "$ERR" "42501 permission denied for table t" "the error"
    assert_contains "$ERR" "this error is about the statement, the role or the server, not a row, so the job stopped" \
        "the hint"
    assert_not_contains "$ERR" "splitting it" "no split"
    assert_not_contains "$ERR" "set aside (on-error skip)" "no row set aside"
    assert_sql "select count(*) from sluice_progress where skipped" 0
    assert_status 0001_bump state failed
    local done_rows
    done_rows=$(psql_q "select count(*) from t where n = 1")
    assert_sql "select count(*) from t where n not in (0, 1)" 0
    assert_sql "select sum(rows) from sluice_progress" "$done_rows"
    psql_q "grant update on t to sl_app"
    run_sluice --db "$APP_DB" up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|600"
}

# A row-level security policy's WITH CHECK refuses single rows with the same SQLSTATE as a missing grant
# (42501): on a table with row security on, on-error skip sets those rows aside, as any row's error.
test_skip_sets_aside_rows_a_policy_refuses() {
    psql_q "create table t (id int primary key, n int not null default 0, owner text not null default 'app');
            insert into t (id) select generate_series(1, 300);
            update t set owner = 'other' where id in (50, 250);
            alter table t enable row level security;
            create policy own_rows on t using (true) with check (owner = 'app')"
    make_app_role "grant select, update on t to sl_app"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:on-error skip
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice --db "$APP_DB" up
    assert_rc 0
    assert_contains "$ERR" 'row ["50"] set aside (on-error skip)' "the log"
    assert_contains "$ERR" "42501 new row violates row-level security policy" "the log"
    assert_sql "select string_agg(hi[1], ',' order by chunk_no) from sluice_progress where skipped" "50,250"
    assert_sql "select count(*) filter (where n = 1), string_agg(id::text, ',' order by id) filter (where n <> 1) from t" \
        "298|50,250"
}

test_stop_fails_without_splitting() {
    make_items
    items_job stop
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" "items_v_check" "the SQL error"
    assert_contains "$ERR" "chunk 1 " "the failing chunk"
    assert_not_contains "$ERR" "splitting" "no split for a permanent error under stop"
    assert_sql "select count(*) from items where v = id % 100 + 10" 0
    run_sluice status --json
    assert_contains "$OUT" '"state": "failed"' "status"
}

# locked_row_job ROW: table t of 400 rows, job 0001_bump adding 1 to n in chunks of 100 (lock-timeout
# 100ms, retries 1), and another session holding row ROW locked for 60 s (until release_rows 60).
locked_row_job() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t select generate_series(1, 400)"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:lock-timeout 100ms
-- sluice:retries 1
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    hold_rows 60 "select 1 from t where id = $1 for update"
}

# Another session keeps row 150 locked past every retry: the chunk around it is split until the rows
# before it commit, then the job fails on the single locked row; once the lock is gone, up finishes.
test_transient_failures_split_the_chunk() {
    locked_row_job 150
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" "splitting it" "split log"
    assert_contains "$ERR" "55P03" "lock timeout"
    # Everything before the locked row committed, in smaller chunks; nothing after it ran.
    assert_sql "select count(*) from t where n = 1" 149
    assert_sql "select count(*) from t where n > 1" 0
    release_rows 60
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 400
}

# While a split's smaller chunks run, the progress line says the batch they are sent with, not the
# job's: row 120 is locked past every retry, so the chunk of rows 101-200 is split until the rows
# before it commit in chunks of fewer than 100.
test_split_batch_on_the_progress_line() {
    locked_row_job 120
    run_cmd script -qfec "$SLUICE --jobs $JOBS --checkpoints $CKPT up" "$T_DIR/typescript"
    assert_rc 1
    assert_sql "select count(*) from t where n = 1" 119
    local lines
    lines=$(tr '\r' '\n' <"$T_DIR/typescript" | grep -E '0001_bump: [0-9]+ rows')
    assert_match "$lines" ', batch 100([^0-9]|$)' "the progress line before the split"
    assert_match "$lines" ', batch [0-9]{1,2}([^0-9]|$)' "the progress line after the split"
    release_rows 60
}

# A chunk whose statements end their own backend (as a batch over the server's message limit or a
# pooler's query_timeout would) loses its connection on every attempt: counted as a transient failure,
# it is split down to the row, which on-error skip sets aside and on-error stop fails on; down gives up
# on such a chunk after its retries. Before, both sent it again forever.
test_chunk_that_loses_its_connection_every_time() {
    psql_q "create table k (id int primary key, v int not null default 0);
            insert into k (id) select generate_series(1, 300)"
    kill_job() {
        write_job 0001_kill <<EOF
-- sluice:table k
-- sluice:batch 100
-- sluice:retries 2
-- sluice:on-error $1
-- sluice:up
UPDATE k SET v = v + 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_terminate_backend(pg_backend_pid()) WHERE 150 BETWEEN :lo AND :hi;
-- sluice:down
UPDATE k SET v = v - 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_terminate_backend(pg_backend_pid()) WHERE 250 BETWEEN :lo AND :hi;
EOF
    }
    kill_job skip
    T_CMD_TIMEOUT=60 run_sluice up
    assert_rc 0
    assert_contains "$ERR" 'row ["150"] set aside (on-error skip): 0001_kill: chunk'
    assert_contains "$ERR" 'lost its connection on attempt 3: terminating connection due to administrator command'
    assert_sql "select count(*) filter (where v = 1), string_agg(id::text, ',') filter (where v <> 1) from k" "299|150"
    assert_sql "select string_agg(hi[1], ',') from sluice_progress where skipped" 150
    # down: the chunk holding row 250 ends its backend every time; it stays applied, so do the chunks
    # before it (down goes newest first), and the job fails
    T_CMD_TIMEOUT=60 run_sluice down 0001_kill
    assert_rc 1
    assert_contains "$ERR" "the connection was lost on each of its 3 attempts, and the chunk is still applied"
    assert_sql "select v from k where id = 250" 1
    assert_sql "select count(*) filter (where v = 1) from k where id <= 100" 100
    # on-error stop: narrowed down to the row, then the job fails on it
    psql_q "drop table k; delete from sluice_progress; delete from sluice_undo; delete from sluice_jobs"
    rm -rf "$CKPT"
    psql_q "create table k (id int primary key, v int not null default 0);
            insert into k (id) select generate_series(1, 300)"
    kill_job stop
    T_CMD_TIMEOUT=60 run_sluice up
    assert_rc 1
    assert_contains "$ERR" 'error: 0001_kill: chunk'
    assert_contains "$ERR" '(["150"] .. ["150"]) lost its connection on attempt 3'
    assert_sql "select count(*) filter (where v = 1), count(*) filter (where v = 0) from k" "149|151"
    assert_status 0001_kill state failed
}

# retries 0 and one lost connection (a failover): the chunk goes again all the same, in up and in down.
# A sequence (never rolled back) lets the statement end its backend the first time only.
test_one_lost_connection_with_retries_0() {
    psql_q "create table k (id int primary key, v int not null default 0);
            insert into k (id) select generate_series(1, 300);
            create sequence up_once; create sequence down_once"
    write_job 0001_once <<'EOF'
-- sluice:table k
-- sluice:batch 100
-- sluice:retries 0
-- sluice:up
UPDATE k SET v = v + 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_terminate_backend(pg_backend_pid()) WHERE 150 BETWEEN :lo AND :hi AND nextval('up_once') = 1;
-- sluice:down
UPDATE k SET v = v - 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_terminate_backend(pg_backend_pid()) WHERE 150 BETWEEN :lo AND :hi AND nextval('down_once') = 1;
EOF
    T_CMD_TIMEOUT=60 run_sluice up
    assert_rc 0
    assert_contains "$ERR" "reconnected"
    assert_not_contains "$ERR" "splitting it"
    assert_sql "select count(*) filter (where v = 1) from k" 300
    assert_sql "select count(*) from sluice_progress where job = '0001_once'" 3
    T_CMD_TIMEOUT=60 run_sluice down 0001_once
    assert_rc 0
    assert_contains "$ERR" "reconnected"
    assert_sql "select count(*) filter (where v = 0) from k" 300
    assert_sql "select last_value from down_once" 2
}

run_test "on-error skip sets exactly the failing rows aside and lists them" test_skip_sets_exactly_the_failing_rows_aside
run_test "down after on-error skip restores the table, set-aside rows untouched" test_skip_then_down_leaves_set_aside_rows_alone
run_test "status lists the first ten rows set aside and counts the rest; --json lists all" \
    test_status_lists_the_first_rows_set_aside
run_test "on-error skip stops on an error no row causes (a privilege revoked mid-run), then resumes" \
    test_skip_stops_on_an_error_no_row_causes
run_test "on-error skip sets aside the rows a row-level security policy refuses (42501)" \
    test_skip_sets_aside_rows_a_policy_refuses
run_test "on-error stop fails on a permanent error without splitting" test_stop_fails_without_splitting
run_test "transient failures split the chunk down to the locked row" test_transient_failures_split_the_chunk
run_test "a split's smaller chunks: the progress line says the batch they are sent with" test_split_batch_on_the_progress_line
run_test "a chunk that ends its connection every time: split and set aside, or failed; down gives up after its retries" \
    test_chunk_that_loses_its_connection_every_time
run_test "retries 0 and one lost connection: the chunk goes again, in up and in down" test_one_lost_connection_with_retries_0
t_done
