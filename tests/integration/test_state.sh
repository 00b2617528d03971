#!/usr/bin/env bash
# test_state.sh: the database holds each job's truth: lost and swapped checkpoint directories, the end of a
# walk, what a job walks and its undo records, the lease (PostgreSQL; SQLite in test_state_lite.sh).
. "$(dirname "$0")/../harness/lib.sh"

# A table of N rows (id int key, n counter, a and b for snapshots) and a job that bumps n and sets a and b.
# setup_bump_ab N BATCH [EXTRA_DIRECTIVES]
setup_bump_ab() {
    psql_q "create table t (id int primary key, n int not null default 0, a text, b text);
            insert into t (id, a, b) select g, 'a' || g, 'b' || g from generate_series(1, $1) g"
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch $2
${3:-}
-- sluice:up
UPDATE t SET n = n + 1, a = 'x', b = 'y' WHERE id BETWEEN :lo AND :hi;
EOF
}

# A second database beside the test's own (dropped with the test by the EXIT trap of run_test's subshell).
make_db2() {
    DB2="${T_DB}_b"
    createdb "$DB2"
    trap 'dropdb --force --if-exists "$DB2" >/dev/null 2>&1; _t_teardown' EXIT
    DB2_URL="${SLUICE_DB%/*}/$DB2"
}

psql2() {
    psql -XAtq -v ON_ERROR_STOP=1 -d "$DB2" -c "$1"
}

test_lost_after_done() {
    setup_bump_ab 500 100
    run_sluice up
    assert_rc 0
    rm -rf "$CKPT"
    psql_q "insert into t (id) select g from generate_series(501, 600) g" # the application goes on
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_bump: already done"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n = 0), max(n) from t" "500|100|1"
    # status answers from the database, with no checkpoint file
    rm -rf "$CKPT"
    load_status
    assert_eq "$(sfield 0001_bump state)" done
    assert_eq "$(sfield 0001_bump chunks)" 5
    assert_eq "$(sfield 0001_bump source)" database
}

# The runner's disk is gone: history and report answer from the database, and say so. Each run is
# recorded there (sluice_runs), whichever machine ran it; with tables an older sluice made (no
# sluice_runs), one line from the job's row. Nothing is written to the checkpoint directory; a job
# that never ran is refused by report.
test_history_and_report_after_loss() {
    # 20 chunks with a pause between: the killed run has at least 14 chunks left when its kill is sent,
    # so a slow poll on a loaded machine cannot let it end first
    setup_bump_ab 1000 50 "-- sluice:pause 100ms"
    stop_up_after 0001_bump 150
    local stopped_at
    stopped_at=$(progress 0001_bump)
    sluice_start up
    wait_until 30 rows_done_at_least 0001_bump $((${stopped_at#*|} + 50))
    sluice_kill KILL
    # the next run on another machine: its own, empty checkpoint directory
    run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$T_DIR/other" up
    assert_rc 0
    rm -rf "$CKPT" "$T_DIR/other"
    psql_q "update sluice_progress set attempts = 3 where job = '0001_bump' and chunk_no = 2" # two retries
    run_sluice history
    assert_rc 0
    assert_eq "$(grep 0001_bump <<<"$OUT" | awk '{print $4, $5}' | tr '\n' ' ')" "up stopped up interrupted up done "
    assert_not_contains "$ERR" "no checkpoint file"
    run_sluice --json history
    assert_rc 0
    assert_eq "$(jq -r '[.[] | select(.job == "0001_bump") | "\(.source) \(.outcome)"] | join(", ")' <<<"$OUT")" \
        "database stopped, database interrupted, database done"
    # the killed run counts the chunks that committed while it ran: every row in some run, once
    assert_eq "$(jq '[.[] | select(.job == "0001_bump") | .rows] | add' <<<"$OUT")" 1000
    assert_eq "$(jq '.[] | select(.outcome == "interrupted") | .rows > 0 and .ended_at != null' <<<"$OUT")" true
    mkdir -p "$T_DIR/scratch"
    TMPDIR="$T_DIR/scratch" run_sluice report 0001_bump -o "$T_DIR/r.html"
    assert_rc 0
    assert_contains "$(cat "$T_DIR/r.html")" '<p id="source">From the database'
    assert_contains "$(cat "$T_DIR/r.html")" '<td id="sum-rows">1000</td>'
    assert_contains "$(cat "$T_DIR/r.html")" '<td id="sum-chunks">20</td>'
    assert_contains "$(cat "$T_DIR/r.html")" '<td id="sum-retries">2</td>'
    assert_contains "$(cat "$T_DIR/r.html")" '<td id="sum-state">done</td>'
    assert_eq "$(grep -o '<td>stopped</td>\|<td>interrupted</td>\|<td>done</td>' "$T_DIR/r.html" | tr '\n' ' ')" \
        "<td>stopped</td> <td>interrupted</td> <td>done</td> "
    assert_eq "$(ls -A "$T_DIR/scratch")" "" # its scratch journal is gone
    [[ ! -e $CKPT ]] || fail "report or history wrote into the checkpoint directory: $(ls -A "$CKPT")"
    # a job the database never ran: no page
    write_job 0002_later <<'JOB'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
JOB
    run_sluice report 0002_later
    assert_rc 2
    assert_contains "$ERR" 'no checkpoint file for job "0002_later" in'
    assert_contains "$ERR" 'has no record of it: it has not run there'
    # a job with its file: the database's record still, and report reads the file
    run_sluice up 0002_later
    assert_rc 0
    run_sluice --json history
    assert_eq "$(jq -r '[.[] | "\(.job):\(.source)"] | join(" ")' <<<"$OUT")" \
        "0001_bump:database 0001_bump:database 0001_bump:database 0002_later:database"
    run_sluice report 0002_later -o "$T_DIR/r2.html"
    assert_rc 0
    assert_contains "$(cat "$T_DIR/r2.html")" '<p id="source">From the checkpoint file'
    # tables an older sluice made, with no sluice_runs: the checkpoint file's runs, else one line from
    # the job's row, and a note
    psql_q "drop table sluice_runs"
    run_sluice --json history
    assert_eq "$(jq -r '[.[] | "\(.job):\(.source):\(.outcome):\(.rows)"] | join(" ")' <<<"$OUT")" \
        "0001_bump:database:done:1000 0002_later:checkpoint:done:1000"
    assert_contains "$ERR" "1 job with no checkpoint file in"
    # an unreachable database: history shows the files, silently
    run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" --db "postgresql://nobody@127.0.0.1:1/x" history
    assert_rc 0
    assert_contains "$OUT" "0002_later"
    assert_not_contains "$OUT" "0001_bump"
}

# sluice's tables as an older sluice made them (no sluice_jobs.paused, no sluice_ctl): status reads
# them as they are, the next run adds what they lack, and a pause then works.
test_older_tables_upgraded() {
    setup_bump_ab 300 100
    psql_q "create table sluice_jobs (job text primary key, state text not null, stamped boolean not null default false,
              checksum text not null default '', table_name text, key_cols text, where_sql text, undo text,
              walk_end text[], follow boolean not null default false, error text, runner text, runner_host text,
              runner_pid integer, runner_start bigint, runner_desc text, lease_until timestamptz,
              started_at timestamptz, updated_at timestamptz not null default now());
            create table sluice_progress (job text not null, chunk_no bigint not null, lo text[] not null,
              hi text[] not null, rows bigint not null, duration_ms bigint, attempts integer not null default 1,
              checksum text not null, committed_at timestamptz not null default now(),
              skipped boolean not null default false, range_no integer not null default 0, error text,
              primary key (job, chunk_no));
            create table sluice_ranges (job text not null, range_no integer not null, after text[], until text[],
              primary key (job, range_no));
            create table sluice_undo (job text not null, chunk_no bigint not null, record bytea not null,
              primary key (job, chunk_no));
            create table sluice_meta (key text primary key, value text not null);
            insert into sluice_jobs (job, state) values ('0001_bump', 'pending')"
    load_status
    assert_eq "$(sfield 0001_bump paused)" null
    run_sluice ctl 0001_bump pause
    assert_rc 1
    assert_contains "$ERR" "an older sluice's"
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from pg_attribute where attrelid = 'sluice_jobs'::regclass and attname = 'paused'" 1
    assert_sql "select to_regclass('sluice_ctl') is not null" t
    run_sluice ctl 0001_bump pause
    assert_rc 0
    load_status
    assert_contains "$(sfield 0001_bump paused)" "by sluice ctl at"
}

test_lost_after_stamp() {
    setup_bump_ab 300 100
    run_sluice stamp 0001_bump done
    assert_rc 0
    rm -rf "$CKPT"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "already done (stamped)"
    assert_sql "select count(*) from t where n > 0" 0
    load_status
    assert_eq "$(sfield 0001_bump state)" done
    assert_eq "$(sfield 0001_bump stamped)" True
    # stamp pending, lose the directory again: up runs it from the start, once
    run_sluice stamp 0001_bump pending
    assert_rc 0
    rm -rf "$CKPT"
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "1|1"
}

# The README's own advice for a damaged checkpoint file, on a finished job.
test_move_file_aside_after_done() {
    setup_bump_ab 300 100
    run_sluice up
    assert_rc 0
    mv "$CKPT/0001_bump.sluice" "$T_DIR/aside.sluice"
    psql_q "insert into t (id) values (301), (302)"
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 300
    assert_sql "select count(*) from t where n = 0" 2
    # status knows the chunks from the database
    run_sluice status --json
    assert_contains "$OUT" '"chunks": 3'
}

test_lost_mid_run() {
    setup_bump_ab 3000 100 "-- sluice:pause 50ms"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 5 from sluice_progress"
    rm -rf "$CKPT"
    sluice_kill KILL
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "in line with the database"
    assert_sql "select min(n), max(n), count(*) from t" "1|1|3000"
    # one line for the rebuild, not one per chunk
    local lines
    lines=$(grep -c "in line with the database" <<<"$ERR")
    assert_eq "$lines" 1 "rebuild lines"
}

test_two_databases_one_directory() {
    setup_bump_ab 200 100
    make_db2
    psql2 "create table t (id int primary key, n int not null default 0, a text, b text);
           insert into t (id) select g from generate_series(1, 200) g"
    run_sluice up
    assert_rc 0
    # the same --checkpoints for another database: refused, naming both; nothing migrated there
    run_sluice --db "$DB2_URL" up
    assert_rc 2
    assert_contains "$ERR" "belongs to database $T_DB"
    assert_contains "$ERR" "not to"
    assert_not_contains "$ERR" "already done"
    assert_eq "$(psql2 "select count(*) from t where n > 0")" 0
    assert_eq "$(psql2 "select count(*) from pg_tables where tablename like 'sluice%'")" 0 "tables created on b"
    run_sluice --db "$DB2_URL" stamp 0001_bump done
    assert_rc 2
    run_sluice --db "$DB2_URL" status
    assert_rc 2
    # with a directory of its own it runs
    run_sluice --db "$DB2_URL" --checkpoints "$T_DIR/ckpt-b" up
    assert_rc 0
    assert_eq "$(psql2 "select min(n), max(n) from t")" "1|1"
}

test_down_with_other_databases_checkpoints() {
    setup_bump_ab 200 100 "-- sluice:undo snapshot(n, a, b)"
    make_db2
    psql2 "create table t (id int primary key, n int not null default 0, a text, b text);
           insert into t (id, a) select g, 'other' || g from generate_series(1, 200) g"
    run_sluice up
    assert_rc 0
    run_sluice --db "$DB2_URL" --checkpoints "$T_DIR/ckpt-b" up
    assert_rc 0
    local before
    before=$(psql2 "select md5(string_agg(t::text, ',' order by id)) from t")
    run_sluice --db "$DB2_URL" down 0001_bump
    assert_rc 2
    assert_contains "$ERR" "belongs to database $T_DB"
    assert_eq "$(psql2 "select md5(string_agg(t::text, ',' order by id)) from t")" "$before" "b after a refused down"
    # swapped directories both ways
    run_sluice --db "$DB2_URL" --checkpoints "$CKPT" up
    assert_rc 2
    run_sluice --checkpoints "$T_DIR/ckpt-b" down 0001_bump
    assert_rc 2
    run_sluice --checkpoints "$T_DIR/ckpt-b" stamp 0001_bump pending
    assert_rc 2
    assert_sql "select count(*) from sluice_progress" 2
    # each with its own: b's old values come back on b
    run_sluice --db "$DB2_URL" --checkpoints "$T_DIR/ckpt-b" down 0001_bump
    assert_rc 0
    assert_eq "$(psql2 "select count(*) from t where a = 'other' || id")" 200
}

# Inserts faster than the walk: the job ends at the last key of its start, every row that existed then
# is done exactly once, and the rows inserted past it are not the job's.
test_walk_ends() {
    setup_bump_ab 20000 500
    psql_q "create sequence s start 20001"
    (
        while :; do
            psql -XAtq -c "insert into t (id) select nextval('s') from generate_series(1, 400)" 2>/dev/null || exit
        done
    ) &
    local inserter=$!
    wait_until 20 sql_true "select max(id) > 20400 from t"
    run_sluice up
    kill "$inserter" 2>/dev/null
    wait "$inserter" 2>/dev/null || true
    assert_rc 0
    local end
    end=$(psql_q "select walk_end[1] from sluice_jobs where job = '0001_bump'")
    diag "walk ended at $end; the table now ends at $(psql_q "select max(id) from t")"
    assert_sql "select count(*) from t where id <= $end and n <> 1" 0
    assert_sql "select count(*) from t where id > $end and n <> 0" 0
    assert_sql "select count(*) >= 20000 from t where id <= $end" t
}

# end follow: the walk goes on over rows inserted past the first end.
test_end_follow() {
    setup_bump_ab 1000 100 "-- sluice:end follow
-- sluice:pause 100ms"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 2 from sluice_progress"
    psql_q "insert into t (id) select g from generate_series(1001, 1200) g"
    sluice_wait
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|1200"
    assert_sql "select follow, walk_end is null from sluice_jobs" "t|t"
}

test_skip_with_snapshot_then_down() {
    setup_bump_ab 400 100 "-- sluice:undo snapshot(n, a, b)
-- sluice:on-error skip"
    psql_q "alter table t add constraint n_small check (id <> 250 or n < 1)"
    local before
    before=$(psql_q "select md5(string_agg(t::text, ',' order by id)) from t")
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from sluice_progress where skipped" 1
    assert_sql "select n, a from t where id = 250" "0|a250"
    run_sluice down 0001_bump
    assert_rc 0
    assert_not_contains "$ERR" "no saved snapshot"
    assert_sql "select md5(string_agg(t::text, ',' order by id)) from t" "$before"
}

test_changed_undo_columns() {
    setup_bump_ab 300 100 "-- sluice:undo snapshot(n, a, b)"
    run_sluice up
    assert_rc 0
    local after
    after=$(psql_q "select md5(string_agg(t::text, ',' order by id)) from t")
    sed -i 's/snapshot(n, a, b)/snapshot(n, b, a)/' "$JOBS/0001_bump.sql"
    local flags
    for flags in "" "--allow-changed-statements" "--on-conflict overwrite"; do
        # shellcheck disable=SC2086
        run_sluice $flags down 0001_bump
        assert_rc 2
        assert_contains "$ERR" "undo columns changed after its first chunk committed"
        assert_contains "$ERR" "stamp 0001_bump pending"
    done
    run_sluice --allow-changed-statements up
    assert_rc 0 # already done: nothing to check
    assert_sql "select md5(string_agg(t::text, ',' order by id)) from t" "$after"
    assert_sql "select count(*) from t where b is null" 0
    # put back, down restores exactly
    sed -i 's/snapshot(n, b, a)/snapshot(n, a, b)/' "$JOBS/0001_bump.sql"
    run_sluice down 0001_bump
    assert_rc 0
    assert_sql "select count(*) from t where a = 'a' || id" 300
}

# A record saved for other columns is refused before any value is read (a hand-edited identity).
test_undo_record_shape() {
    setup_bump_ab 200 100 "-- sluice:undo snapshot(n, a, b)"
    run_sluice up
    assert_rc 0
    sed -i 's/snapshot(n, a, b)/snapshot(n, a)/' "$JOBS/0001_bump.sql"
    psql_q "update sluice_jobs set undo = 'snapshot(n, a)'"
    run_sluice --on-conflict overwrite down 0001_bump
    assert_rc 1
    assert_contains "$ERR" "saved for another version of the job"
    assert_sql "select count(*) from t where b is null" 0
}

test_changed_key_refused() {
    setup_bump_ab 3000 100 "-- sluice:pause 50ms"
    psql_q "create unique index on t (id, n)"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 2 from sluice_progress"
    sluice_kill INT
    assert_rc 3
    sed -i 's/^-- sluice:table t$/-- sluice:table t\n-- sluice:key id, n/' "$JOBS/0001_bump.sql"
    local flags
    for flags in "" "--allow-changed-statements" "--allow-no-index" "--allow-changed-statements --allow-no-index"; do
        # shellcheck disable=SC2086
        run_sluice $flags up
        assert_rc 2
        assert_contains "$ERR" "key changed after its first chunk committed"
    done
    run_sluice --force up
    assert_rc 2
    assert_contains "$ERR" "--allow-changed-statements"
    assert_sql "select count(*) from t where n > 1" 0
}

# up JOB, stopped (SIGINT, exit 3) once three of its chunks committed.
up_stopped_after_three() {
    sluice_start up "$1"
    wait_until 20 sql_true "select count(*) >= 3 from sluice_progress where job = '$1'"
    sluice_kill INT
    assert_rc 3
}

# TABLE (id int primary key, n int) with ids 1..3000, n 0.
counter_table() {
    psql_q "create table $1 (id int primary key, n int not null default 0);
            insert into $1 (id) select g from generate_series(1, 3000) g"
}

# What orders the key is part of what the walk fixed: a key column given another collation (or a type
# that orders otherwise) between two runs is refused, since the old position would be read in the new
# order (rows skipped or applied twice); integer to bigint orders alike and goes on. A job recorded by an
# older sluice (the key's names alone) is not refused.
test_changed_key_order() {
    psql_q "create table t (k text collate \"C\" primary key, n int not null default 0);
            insert into t (k) select 'k' || g from generate_series(1, 1500) g
            union all select 'K' || g from generate_series(1, 1500) g"
    write_job 0001_bump <<'EOF2'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 50ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE k BETWEEN :lo AND :hi;
EOF2
    up_stopped_after_three 0001_bump
    local done
    done=$(psql_q "select count(*) from t where n = 1")
    psql_q "alter table t alter column k type text collate \"en-US-x-icu\""
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "the job's key changed after its first chunk committed"
    assert_contains "$ERR" "pg_catalog.text_ops COLLATE pg_catalog.\"C\""
    assert_contains "$ERR" "COLLATE pg_catalog.\"en-US-x-icu\""
    assert_sql "select count(*) from t where n = 1" "$done"
    assert_sql "select count(*) from t where n > 1" 0
    # back to its collation: resumes, every row once
    psql_q "alter table t alter column k type text collate \"C\""
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 3000

    # integer to bigint: the same order, the walk goes on
    counter_table u
    sed 's/\bt\b/u/; s/k BETWEEN/id BETWEEN/; s/UPDATE t /UPDATE u /' "$JOBS/0001_bump.sql" >"$JOBS/0002_bump_u.sql"
    up_stopped_after_three 0002_bump_u
    assert_sql "select key_cols from sluice_jobs where job = '0002_bump_u'" 'id pg_catalog.integer_ops'
    psql_q "alter table u alter column id type bigint"
    run_sluice up 0002_bump_u
    assert_rc 0
    assert_sql "select count(*) from u where n = 1" 3000

    # recorded by an older sluice: the key's names alone, not refused
    counter_table w
    sed 's/\bu\b/w/; s/UPDATE u /UPDATE w /' "$JOBS/0002_bump_u.sql" >"$JOBS/0003_bump_w.sql"
    up_stopped_after_three 0003_bump_w
    psql_q "update sluice_jobs set key_cols = 'id' where job = '0003_bump_w'"
    run_sluice up 0003_bump_w
    assert_rc 0
    assert_sql "select count(*) from w where n = 1" 3000
}

test_changed_statements_flag() {
    setup_bump_ab 3000 100 "-- sluice:pause 50ms"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 1 from sluice_progress"
    sluice_kill INT
    sed -i 's/n = n + 1/n = n + 10/' "$JOBS/0001_bump.sql"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "--allow-changed-statements"
    run_sluice --allow-changed-statements up
    assert_rc 0
    assert_eq "$(grep -c "going on with the new text" <<<"$ERR")" 1 "warnings that the file changed"
    assert_sql "select count(*) from t where n not in (1, 10)" 0
    run_sluice up
    assert_rc 0
    assert_not_contains "$ERR" "was changed" # the text it finished with is the one recorded
    # done: a later edit does not run, and up says so
    sed -i 's/n = n + 10/n = n + 100/' "$JOBS/0001_bump.sql"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_bump: already done"
    assert_contains "$ERR" "0001_bump.sql was changed after the job ran"
    assert_contains "$ERR" "the new text did not run and will not"
    assert_sql "select count(*) from t where n not in (1, 10)" 0
}

test_lost_undo_records() {
    setup_bump_ab 3000 100 "-- sluice:undo snapshot(n, a, b)
-- sluice:pause 50ms"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 2 from sluice_progress"
    sluice_kill INT
    psql_q "delete from sluice_undo where chunk_no = 1"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "no undo record in sluice_undo (chunk 1)"
    assert_contains "$ERR" "--allow-lost-undo"
    run_sluice --allow-lost-undo up
    assert_rc 0
    run_sluice down 0001_bump
    assert_rc 2
    assert_contains "$ERR" "cannot put it back: chunk 1"
    run_sluice --allow-lost-undo down 0001_bump
    assert_rc 0
    assert_contains "$ERR" "chunk 1 left as it is"
    assert_sql "select count(*) from t where a = 'x'" 100
    assert_sql "select count(*) from t where a = 'a' || id" 2900
    load_status
    assert_eq "$(sfield 0001_bump state)" rolled_back
}

test_lost_during_down() {
    setup_bump_ab 2000 100 "-- sluice:undo snapshot(n, a, b)"
    local before
    before=$(psql_q "select md5(string_agg(t::text, ',' order by id)) from t")
    run_sluice up
    assert_rc 0
    job_pause 0001_bump 50ms
    sluice_start down 0001_bump
    wait_until 20 sql_true "select count(*) <= 15 from sluice_progress"
    rm -rf "$CKPT"
    sluice_kill KILL
    rm -rf "$CKPT"
    run_sluice down 0001_bump
    assert_rc 0
    assert_sql "select md5(string_agg(t::text, ',' order by id)) from t" "$before"
    assert_sql "select count(*) from sluice_undo" 0
}

test_killed_run_is_interrupted() {
    setup_bump_ab 3000 100 "-- sluice:pause 50ms"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 3 from sluice_progress"
    sluice_kill KILL
    run_sluice history
    assert_rc 0
    assert_contains "$OUT" "interrupted"
    assert_not_contains "$OUT" " running "
    load_status
    assert_eq "$(sfield 0001_bump state)" stopped
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "1|1"
}

# The lease: a second runner is refused; nothing is left in pg_locks; a runner gone from this machine
# (or left a zombie by a parent that has not reaped it) is taken over at once; another machine's lease is waited out only once it stops being renewed.
test_lease() {
    # 30 chunks 150 ms apart: the runner still runs when the refusals below are through, however slow
    setup_bump_ab 3000 100 "-- sluice:pause 150ms"
    sluice_start up
    local first=$SLUICE_PID
    wait_until 20 sql_true "select count(*) >= 2 from sluice_progress"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "already being run against this database (by sluice pid $first"
    run_sluice stamp 0001_bump done
    assert_rc 2
    assert_sql "select count(*) from pg_locks where locktype = 'advisory'
                and database = (select oid from pg_database where datname = current_database())" 0
    sluice_kill KILL "$first"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "is gone; taking over its job"
    assert_sql "select runner is null and lease_until is null from sluice_jobs" t
    # killed, and its parent has not reaped it yet (a shell busy elsewhere, a container's first
    # process that never calls wait): the zombie holds nothing, so it is taken over at once too
    run_sluice stamp 0001_bump pending
    assert_rc 0
    local holder zombie
    sh -c '"$@" </dev/null >/dev/null 2>&1 & echo $! >"$0"; exec sleep 120' "$T_DIR/zombie.pid" \
        "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" up &
    holder=$!
    wait_until 20 sql_true "select count(*) >= 2 from sluice_progress"
    zombie=$(cat "$T_DIR/zombie.pid")
    kill -KILL "$zombie"
    wait_until 10 grep -q '^State:.*Z' "/proc/$zombie/status"
    run_sluice up
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null || true
    assert_rc 0
    assert_contains "$ERR" "sluice pid $zombie on"
    assert_contains "$ERR" "is gone; taking over its job"
    assert_sql "select min(n), max(n) from t" "2|2" # stamp pending left the first run's bumps
    # a live lease of another machine, renewed a moment ago: refused
    psql_q "update sluice_jobs set state = 'running', runner = 'elsewhere', runner_host = 'other-host',
                   runner_pid = 1, runner_desc = 'sluice pid 1 on other-host', lease_until = now() + interval '29 s'"
    run_sluice stamp 0001_bump pending
    assert_rc 2
    assert_contains "$ERR" "sluice pid 1 on other-host"
    # one that stopped being renewed 16 s ago: waited for; a signal meanwhile stops the wait, exit 3,
    # and nothing changes
    psql_q "update sluice_jobs set lease_until = now() + interval '14 s'"
    sluice_start up
    wait_until 10 grep -q "stopped renewing its lease" "${_T_BG_FILES[$SLUICE_PID]}.err"
    sluice_kill TERM
    assert_rc 3
    assert_contains "$ERR" "stopped by a signal while waiting for the job's lease; nothing ran"
    assert_sql "select state, runner_desc from sluice_jobs" "running|sluice pid 1 on other-host"
    # one that stopped being renewed 25 s ago: waited for until it expires
    psql_q "update sluice_jobs set lease_until = now() + interval '2 s'"
    run_sluice stamp 0001_bump pending
    assert_rc 0
    assert_contains "$ERR" "stopped renewing its lease"
}

# A runner held up in the middle of a chunk (SIGSTOP here; a frozen VM, a network partition) while its
# transaction waits on it, between the rows it read for its undo record and the record: the server ends
# that transaction before the lease lapses, so the runner started meanwhile on another checkpoint
# directory takes the job over at the lease's end and finishes it, instead of waiting on the held-up
# chunk's locks. Woken, the first runner finds its connection gone and the job taken: it exits 1, having
# recorded nothing it did not commit, and the job's state stays its successor's. Every row once.
test_runner_held_up_mid_chunk() {
    make_table 100000 "n int not null default 0, w text" w "repeat('w', 200)"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 2000
-- sluice:workers 2
-- sluice:pause 200ms
-- sluice:undo snapshot(n, w)
-- sluice:up
UPDATE t SET n = n + 1, w = 'x' || id WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    local first=$SLUICE_PID tries=0
    wait_until 30 sql_true "select count(*) >= 2 from sluice_progress"
    # stop it at a moment when one of its chunks waits on it inside its transaction, and no other
    # session of it is active: one stopped half-way through sending a statement (an undo record is
    # a large message) stays active, which no server timeout ends (left for a note, not this test)
    while :; do
        kill -STOP "$first"
        sql_true "select count(*) filter (where state = 'idle in transaction') > 0
                  and count(*) filter (where state = 'active') = 0
                  from pg_stat_activity where datname = current_database() and application_name = 'sluice'" && break
        kill -CONT "$first"
        if ((++tries > 400)); then
            fail "never caught a chunk waiting on the runner inside its transaction"
            return
        fi
        sleep "0.0$((RANDOM % 9 + 1))"
    done
    echo "# held up inside a chunk's transaction at try $tries"
    sleep 16
    # the server ended it (idle_in_transaction_session_timeout, 15 s): its locks are gone
    assert_sql "select count(*) from pg_stat_activity where datname = current_database() and state like 'idle in%'" 0
    sluice_start --checkpoints "$T_DIR/ckpt-b" up
    local second=$SLUICE_PID
    # its run begins once it holds the lease (it may finish before a look at sluice_jobs would see it)
    wait_until 40 sql_true "select exists (select 1 from sluice_runs where runner like 'sluice pid $second on %')" ||
        diag "the second runner: $(cat "${_T_BG_FILES[$second]}.err"); sluice_jobs: $(psql_q "select runner_desc,
              lease_until - now() from sluice_jobs"); $(psql_q "select pid, state, left(query, 60) from pg_stat_activity
              where datname = current_database()")"
    kill -CONT "$first"
    sluice_wait "$first"
    assert_rc 1
    assert_contains "$ERR" "another runner took" # the job over (a worker found it), or the lease (the keeper did)
    sluice_wait "$second"
    assert_rc 0
    assert_contains "$ERR" "stopped renewing its lease"
    assert_sql "select count(*) filter (where n = 1 and w = 'x' || id), count(*) from t" "100000|100000"
    assert_sql "select state, (select count(*) from sluice_undo) = (select count(*) from sluice_progress) from sluice_jobs" \
        "done|t"
    # the first runner's directory holds no chunk the database does not: it is brought in line, not refused
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_bump: already done"
}

# A snapshot's chunk runs at repeatable read (the rows it writes are the ones it saved), so its fence reads
# the job's row as it was when the chunk began: a takeover while the chunk runs must still fail it. Here
# the chunk waits on a row another session holds while the job's row comes to name another runner ($1:
# the URL to run as; the caller says whether sluice_jobs has its unique index on (job, runner)). The
# chunk's lock on the job's row then meets the change (a key update with the index, FOR SHARE without
# it): it fails (40001), its retry is refused, and the runner exits 1 with the chunk not committed.
takeover_while_chunk_waits() {
    job_tag
    hold_rows 3 "select 1 from t where id = 150 for update"
    sluice_start --db "$1" up
    wait_runner_on_lock
    assert_sql "select count(*) from sluice_progress" 1
    psql_q "update sluice_jobs set runner = 'another runner'"
    sluice_wait
    wait "$HOLDER"
    assert_rc 1
    assert_contains "$ERR" "40001 could not serialize access"
    assert_contains "$ERR" "another runner took it over"
    assert_sql "select count(*), (select count(*) from t where v = 'orig+job') from sluice_progress" "1|100"
}

test_takeover_while_snapshot_chunk_waits() {
    make_table 300 "v text not null default 'orig'"
    takeover_while_chunk_waits "$SLUICE_DB"
    assert_sql "select count(*) from pg_indexes where indexname = 'sluice_jobs_runner_key'" 1
}

# Tables an owner made from an older README have no such index, and a role that may not create one runs
# with FOR SHARE, saying so.
test_takeover_while_snapshot_chunk_waits_no_index() {
    local role="${T_DB}_tag"
    psql_q "do \$\$ begin create role $role login password 'tag-pw'; exception when duplicate_object then null; end \$\$"
    make_table 300 "v text not null default 'orig'"
    awk '/^### The bookkeeping tables/ { f = 1 } f && /^```sql/ { g = 1; next } g && /^```/ { exit } g' \
        "$SLUICE_ROOT/README.md" >"$T_DIR/ddl.sql"
    psql_q "$(cat "$T_DIR/ddl.sql")"
    psql_q "drop index sluice_jobs_runner_key;
            grant select, insert, update, delete on t, sluice_jobs, sluice_progress, sluice_ranges, sluice_undo,
            sluice_meta, sluice_runs, sluice_ctl to $role"
    takeover_while_chunk_waits "postgresql://$role:tag-pw@${SLUICE_DB#*@}"
    assert_contains "$ERR" "sluice_jobs has no unique index on (job, runner), and this role cannot make one"
    assert_sql "select count(*) from pg_indexes where indexname = 'sluice_jobs_runner_key'" 0
    psql_q "drop owned by $role; drop role $role"
}

# A role with no right to create anything, as a managed database gives an application: it may only read
# and update the table. Its first up is refused (exit 2), saying what is missing, and changes nothing;
# once an owner has created sluice's tables with the README's DDL and granted it DML on them, it runs
# the job, down included, as that role; before the grants, it is refused (exit 2), saying which.
test_role_without_create() {
    local role="${T_DB}_app" url
    psql_q "do \$\$ begin create role $role login password 'app-pw'; exception when duplicate_object then null; end \$\$"
    psql_q "revoke create on schema public from public;
            create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 500);
            grant select, update on t to $role"
    url="postgresql://$role:app-pw@${SLUICE_DB#*@}"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET n = n - 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice --db "$url" up
    assert_rc 2
    assert_contains "$ERR" "cannot create sluice's tables"
    assert_contains "$ERR" "needs CREATE on the first schema of search_path"
    assert_sql "select count(*) from t where n <> 0" 0
    assert_sql "select to_regclass('sluice_jobs') is null and to_regclass('sluice_meta') is null" t
    # the owner runs the README's DDL (which has no id row: sluice inserts it, as the role may)
    awk '/^### The bookkeeping tables/ { f = 1 } f && /^```sql/ { g = 1; next } g && /^```/ { exit } g' \
        "$SLUICE_ROOT/README.md" >"$T_DIR/ddl.sql"
    psql_q "$(cat "$T_DIR/ddl.sql")"
    # the tables are there, its grants not yet: refused (exit 2), saying which grants, nothing changed
    run_sluice --db "$url" up
    assert_rc 2
    assert_contains "$ERR" "permission denied for table sluice_meta"
    assert_contains "$ERR" "hint: the role sluice connects as needs SELECT, INSERT, UPDATE and DELETE on sluice_jobs"
    assert_contains "$ERR" "GRANT SELECT, INSERT, UPDATE, DELETE ON sluice_jobs, sluice_progress, sluice_ranges"
    assert_sql "select count(*) from t where n <> 0" 0
    run_sluice --db "$url" status
    assert_rc 2
    assert_contains "$ERR" "hint: the role sluice connects as needs"
    psql_q "grant select, insert, update, delete on sluice_jobs, sluice_progress, sluice_ranges, sluice_undo,
            sluice_meta to $role"
    run_sluice --db "$url" up
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "1|1"
    assert_sql "select count(*) from sluice_meta where key = 'database_id'" 1
    run_sluice --db "$url" down 0001_bump
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "0|0"
    psql_q "drop owned by $role; drop role $role"
}

# sluice's tables sit in the first schema of the search_path: a run whose search_path changed (another
# role, a pooler's or a URL's setting) and whose checkpoint directory is gone must not start the job over
# in another set of tables. A schema per tenant, each with its own table, keeps its own record.
test_search_path_moved() {
    psql_q "create schema sl; create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 500)"
    write_job 0001_bump <<'EOF'
-- sluice:table public.t
-- sluice:batch 100
-- sluice:up
UPDATE public.t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice --db "$SLUICE_DB?options=-csearch_path%3Dsl,public" up
    assert_rc 0
    assert_sql "select to_regclass('sl.sluice_jobs') is not null, to_regclass('public.sluice_jobs') is null" "t|t"
    rm -rf "$CKPT"
    run_sluice up # the role's own search_path: "$user", public
    assert_rc 2
    assert_contains "$ERR" "sluice's tables in schema sl record this job as done, on the same table"
    assert_contains "$ERR" "this connection's search_path (\"\$user\", public) puts sluice's tables in schema public"
    assert_contains "$ERR" "options=-csearch_path=sl"
    assert_sql "select min(n), max(n) from t" "1|1"
    assert_sql "select to_regclass('public.sluice_jobs') is null" t # refused before anything was made
    run_sluice down 0001_bump
    assert_rc 2
    assert_contains "$ERR" "down 0001_bump: sluice's tables in schema sl record this job as done"
    assert_contains "$ERR" "nothing here to roll back"
    run_sluice --db "$SLUICE_DB?options=-csearch_path%3D" up
    assert_rc 2
    assert_contains "$ERR" "this connection's search_path (empty) names no schema for sluice's tables"
    run_sluice --db "$SLUICE_DB?options=-csearch_path%3Dsl,public" up
    assert_rc 0
    assert_contains "$ERR" "0001_bump: already done"
    assert_sql "select min(n), max(n) from t" "1|1"

    # a tenant per schema, the same job file run for each with its own search_path
    psql_q "create schema ta; create schema tb;
            create table ta.u (id int primary key, n int not null default 0);
            create table tb.u (id int primary key, n int not null default 0);
            insert into ta.u (id) select generate_series(1, 300); insert into tb.u (id) select generate_series(1, 200)"
    rm -rf "$JOBS"/*
    write_job 0001_tenant <<'EOF'
-- sluice:table u
-- sluice:batch 100
-- sluice:up
UPDATE u SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice --checkpoints "$T_DIR/ck_a" --db "$SLUICE_DB?options=-csearch_path%3Dta" up
    assert_rc 0
    run_sluice --checkpoints "$T_DIR/ck_b" --db "$SLUICE_DB?options=-csearch_path%3Dtb" up
    assert_rc 0
    assert_sql "select (select min(n) || '-' || max(n) from ta.u), (select min(n) || '-' || max(n) from tb.u)" "1-1|1-1"
    assert_sql "select (select state from ta.sluice_jobs), (select state from tb.sluice_jobs)" "done|done"
}

# sluice's tables in a schema the owner role cannot read (README "Roles"): role lo ran the job with
# search_path sl; the owner, with no checkpoint and its own search_path, must not create its own set of
# tables and run the job again. It cannot read lo's record, so it is refused, naming the schema; once it
# may read it, the refusal is the one for a readable record. A tenant's schema whose role cannot read
# the job's table does not stop another tenant's run.
test_search_path_unreadable() {
    local lo="${T_DB}_lo" lo_url
    make_app_role
    psql_q "do \$\$ begin create role $lo login password 'lo-pw'; exception when duplicate_object then null; end \$\$"
    psql_q "revoke create on schema public from public;
            create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 300);
            alter table t owner to sl_app; grant select, update on t to $lo; create schema sl authorization $lo"
    lo_url="postgresql://$lo:lo-pw@${SLUICE_DB#*@}"
    bump_job 0001_bump 100
    run_sluice --db "$lo_url?options=-csearch_path%3Dsl,public" up
    assert_rc 0
    assert_sql "select to_regclass('sl.sluice_jobs') is not null, to_regclass('public.sluice_jobs') is null" "t|t"
    rm -rf "$CKPT"
    run_sluice --db "$APP_DB" up
    assert_rc 2
    assert_contains "$ERR" "0001_bump: schema sl holds sluice's tables, which role sl_app cannot read (no USAGE on the schema)"
    assert_contains "$ERR" "$lo may write them and read the job's table: sluice cannot tell whether the job already ran there"
    assert_contains "$ERR" "hint: GRANT USAGE ON SCHEMA sl TO sl_app and GRANT SELECT ON sl.sluice_jobs TO sl_app"
    assert_contains "$ERR" "options=-csearch_path=sl"
    assert_sql "select min(n), max(n) from t" "1|1"
    assert_sql "select to_regclass('public.sluice_jobs') is null" t # refused before anything was made
    psql_q "grant usage on schema sl to sl_app"
    run_sluice --db "$APP_DB" up
    assert_rc 2
    assert_contains "$ERR" "which role sl_app cannot read (no SELECT on its sluice_jobs)"
    psql_q "grant select on sl.sluice_jobs to sl_app"
    run_sluice --db "$APP_DB" up
    assert_rc 2
    assert_contains "$ERR" "sluice's tables in schema sl record this job as done, on the same table"
    assert_sql "select min(n), max(n) from t" "1|1"
    assert_sql "select to_regclass('public.sluice_jobs') is null" t

    # a tenant: lo keeps its own tables and table in sl, and may not read the owner's u
    psql_q "create table u (id int primary key, n int not null default 0);
            insert into u (id) select generate_series(1, 200); alter table u owner to sl_app;
            create table sl.u (id int primary key, n int not null default 0);
            insert into sl.u (id) select generate_series(1, 100); alter table sl.u owner to $lo;
            revoke usage on schema sl from sl_app"
    write_job 0002_tenant <<'EOF'
-- sluice:table u
-- sluice:batch 100
-- sluice:up
UPDATE u SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice --checkpoints "$T_DIR/ck_lo" --db "$lo_url?options=-csearch_path%3Dsl" up 0002_tenant
    assert_rc 0
    run_sluice --checkpoints "$T_DIR/ck_app" --db "$APP_DB" up 0002_tenant
    assert_rc 0
    assert_sql "select (select min(n) || '-' || max(n) from sl.u), (select min(n) || '-' || max(n) from public.u)" \
        "1-1|1-1"
    psql_q "drop owned by $lo; drop role $lo"
}

# A job's name is its file's name: the same file under a new name (renumbered) is not a new job to run again.
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
    assert_sql "select min(n), max(n) from t" "1|1"
    assert_sql "select count(*) from sluice_jobs where job = '0002_bump'" 0
    # the old name back: already done; and the same text under two names, both there, is two jobs
    mv "$JOBS/0002_bump.sql" "$JOBS/0001_bump.sql"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_bump: already done"
    cp "$JOBS/0001_bump.sql" "$JOBS/0002_bump.sql"
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "2|2"
    # stamped done counts as run; a job rolled back may run again under any name
    rm "$JOBS/0001_bump.sql" "$JOBS/0002_bump.sql"
    write_job 0003_mark <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET a = 'm' WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET a = 'x' WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice stamp 0003_mark done
    assert_rc 0
    mv "$JOBS/0003_mark.sql" "$JOBS/0004_mark.sql"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "records 0003_mark as done"
    mv "$JOBS/0004_mark.sql" "$JOBS/0003_mark.sql"
    run_sluice up 0003_mark
    assert_rc 0
    psql_q "update sluice_jobs set state = 'rolled_back' where job = '0003_mark'"
    mv "$JOBS/0003_mark.sql" "$JOBS/0004_mark.sql"
    run_sluice up 0004_mark
    assert_rc 0
    assert_sql "select min(a), max(a) from t" "m|m"
}

# The database restored from a backup taken mid-run (pg_dump, pg_restore: the server's timeline stays
# as it was, unlike a point-in-time recovery, which crash/test_failover's promotion stands for), with
# the runner's checkpoint directory kept from after the backup: the file is ahead of the database and
# is refused (exit 2), saying so and changing nothing. Moved aside,
# up runs the chunks the restore took back, exactly once, and down undoes the whole job.
test_restored_from_backup() {
    setup_bump_ab 3000 100 "-- sluice:undo snapshot(n, a, b)
-- sluice:pause 50ms"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 5 from sluice_progress"
    sluice_kill TERM
    assert_rc 3
    local at_backup
    at_backup=$(psql_q "select count(*) from sluice_progress")
    pg_dump -Fc -d "$T_DB" -f "$T_DIR/backup.dump" || fail "pg_dump"
    run_sluice up
    assert_rc 0
    # restored under another name: a copy, which keeps checkpoints of its own
    make_db2
    pg_restore -d "$DB2" "$T_DIR/backup.dump" || fail "pg_restore"
    run_sluice --db "$DB2_URL" up
    assert_rc 2
    assert_contains "$ERR" "belongs to database $T_DB"
    assert_contains "$ERR" "this database is a copy of that one (restored from a backup"
    assert_eq "$(psql2 "select count(*) from sluice_progress")" "$at_backup" "the copy's chunks after the refusal"
    # restored in place, under its own name
    dropdb --force "$T_DB" && createdb "$T_DB" && pg_restore -d "$T_DB" "$T_DIR/backup.dump" || fail "restore"
    local before
    before=$(psql_q "select md5(string_agg(t::text, ',' order by id)) from t")
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "that this database's sluice_progress does not have"
    assert_contains "$ERR" "restored from a backup"
    assert_contains "$ERR" "the server is on timeline 1, as when the file last looked: no standby was promoted since"
    assert_sql "select md5(string_agg(t::text, ',' order by id)) from t" "$before"
    assert_sql "select count(*) from sluice_progress" "$at_backup"
    mv "$CKPT/0001_bump.sluice" "$T_DIR/aside.sluice"
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t where a = 'x'" "1|1|3000"
    run_sluice down 0001_bump
    assert_rc 0
    assert_sql "select count(*) from t where a = 'a' || id" 3000
}

# plan by a role that may update the table but not read it: it says the first chunk cannot be
# computed and why, and warns of no Seq Scan it never saw.
test_plan_without_select() {
    make_table 300
    make_app_role "grant update on t to sl_app"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice --db "$APP_DB" plan 0001_bump
    assert_contains "$OUT" "first chunk: cannot compute: "
    assert_contains "$OUT" "permission denied"
    assert_not_contains "$OUT" "Seq Scan"
}

run_test "lost checkpoint directory after done: the job is not applied again to new rows" test_lost_after_done
run_test "lost checkpoint directory: history and report answer from the database" test_history_and_report_after_loss
run_test "tables an older sluice made: status reads them, the next run adds what they lack" test_older_tables_upgraded
run_test "lost checkpoint directory after stamp done, and after stamp pending" test_lost_after_stamp
run_test "a checkpoint file moved aside after done: nothing runs twice" test_move_file_aside_after_done
run_test "checkpoint directory deleted mid-run, then kill -9: resume exactly once" test_lost_mid_run
run_test "one checkpoint directory for two databases: the second is refused, naming both" test_two_databases_one_directory
run_test "down and stamp with another database's checkpoints: refused, nothing written" test_down_with_other_databases_checkpoints
run_test "a database restored from a backup behind its checkpoint file: refused, then up once and down" \
    test_restored_from_backup
run_test "inserts faster than the walk: the job ends at its start's last key" test_walk_ends
run_test "end follow walks the rows inserted past the end" test_end_follow
run_test "on-error skip with undo snapshot: down restores every chunk" test_skip_with_snapshot_then_down
run_test "changed undo columns: refused always" test_changed_undo_columns
run_test "an undo record of another shape is refused before a value is read" test_undo_record_shape
run_test "changed key: refused with every flag" test_changed_key_refused
run_test "a key column given another collation between runs: refused; integer to bigint goes on; an older record's names accepted" \
    test_changed_key_order
run_test "changed statements: --allow-changed-statements" test_changed_statements_flag
run_test "lost undo records: refused unless --allow-lost-undo" test_lost_undo_records
run_test "checkpoint directory deleted during down and after its kill: down finishes" test_lost_during_down
run_test "a killed run shows as interrupted in history and stopped in status" test_killed_run_is_interrupted
run_test "the lease: one runner, nothing in pg_locks, takeover" test_lease
run_test "a runner held up mid-chunk past its lease: its transaction ends, the next runner takes over" \
    test_runner_held_up_mid_chunk
run_test "a takeover while a snapshot's repeatable-read chunk waits: the chunk fails, nothing committed" \
    test_takeover_while_snapshot_chunk_waits
run_test "the same on tables without the index on (job, runner), by a role that may not make it" \
    test_takeover_while_snapshot_chunk_waits_no_index
run_test "a role that may create nothing: refused until an owner made the tables, then up and down" \
    test_role_without_create
run_test "a changed search_path finds no record of a job that ran: refused, naming the schema; tenants apart" \
    test_search_path_moved
run_test "sluice's tables in a schema this role cannot read: refused, naming the schema; a tenant apart runs" \
    test_search_path_unreadable
run_test "a job file renamed after it ran (or was stamped) is refused under its new name" test_renamed_job_file
run_test "plan by a role that may update the table but not read it: no first chunk, and no Seq Scan warned of" \
    test_plan_without_select
t_done
