#!/usr/bin/env bash
# test_backlog.sh: the database's own backlog as health limits: max-wal-rate and max-dead-tuples, as a role without privileges.
#
# sluice connects as sl_app (LOGIN, CREATE on public for its own tables, and the grants of its jobs):
# both limits read what any role may read (pg_current_wal_flush_lsn(), pg_stat_all_tables, pg_class).
# The WAL comes from a writer running beside sluice (20MB a statement, for a few seconds); the dead
# tuples from an UPDATE of the job's table, whose autovacuum is off, until the test runs VACUUM.
. "$(dirname "$0")/../harness/lib.sh"


has_progress() {
    [[ $(progress "$1") != "0|0" ]]
}

# make_copy_job ROWS LIMIT [BATCH]: t with ROWS rows, and the job copying it into t_copy in chunks of BATCH
# (default 50): sluice itself leaves no dead tuples in t, and writes little WAL.
make_copy_job() {
    psql_q "create table t (id int primary key, pad text not null default repeat('x', 50));
            insert into t (id) select g from generate_series(1, $1) g"
    copy_job "$2" "${3:-50}"
}

# copy_job LIMIT [BATCH]: t_copy, the grants, and the job copying t (made already) into it in chunks of
# BATCH (default 50) with a pause of 100 ms between them, with LIMIT.
copy_job() {
    psql_q "create table t_copy (id int primary key, pad text);
            grant select, update on t to sl_app; grant select, insert on t_copy to sl_app"
    write_job 0001_copy <<EOF
-- sluice:table t
-- sluice:batch ${2:-50}
-- sluice:pause 100ms
-- sluice:$1
-- sluice:up
INSERT INTO t_copy SELECT id, pad FROM t WHERE id BETWEEN :lo AND :hi;
EOF
}

test_wal_rate() {
    make_app_role
    make_copy_job 4000 "max-wal-rate 4MB"
    psql_q "create table junk (pad text)"
    run_sluice --db "$APP_DB" plan 0001_copy
    assert_rc 0
    assert_contains "$OUT" "held under 4MB/s"
    sluice_start --db "$APP_DB" up
    wait_until 30 has_progress 0001_copy
    # A parallel writer: about 20MB of WAL a statement, for about five seconds.
    (
        end=$((SECONDS + 5))
        while ((SECONDS < end)); do
            psql -XAtq -c "insert into junk select repeat(md5(g::text), 8) from generate_series(1, 60000) g" || exit 1
        done
    ) &
    local writer=$!
    wait_until 10 grep -q "pausing: WAL written at" "$T_DIR/bg.1.err"
    local before after
    before=$(progress 0001_copy)
    sleep 1.5
    after=$(progress 0001_copy)
    assert_eq "$after" "$before" "chunks committed while the writer fills the WAL"
    run_cmd "$SLUICE" --checkpoints "$CKPT" ctl 0001_copy status
    assert_rc 0
    assert_match "$OUT" "wal-rate [0-9.]+[kMG]?B/s \(max-wal-rate 4MB/s\)"
    assert_contains "$OUT" "throttled WAL written at"
    wait "$writer" || fail "the writer failed"
    sluice_wait
    assert_rc 0
    assert_match "$ERR" "pausing: WAL written at [0-9.]+[kMG]?B/s > max-wal-rate 4MB/s"
    assert_match "$ERR" "resumed after [0-9]+s paused \(WAL written at"
    assert_sql "select count(*) from t_copy" 4000
    assert_sql "select count(*), sum(rows) from sluice_progress where job = '0001_copy'" "80|4000"
}

test_dead_tuples() {
    make_app_role
    make_copy_job 20000 "max-dead-tuples 20%" 1000
    psql_q "alter table t set (autovacuum_enabled = false)"
    # 10000 dead tuples > 50 + 20% of 20000 live ones: held back before the first chunk.
    psql_q "update t set pad = pad || 'y' where id <= 10000"
    wait_until 10 sql_true "select n_dead_tup >= 10000 from pg_stat_user_tables where relname = 't'"
    sluice_start --db "$APP_DB" up
    wait_until 20 grep -q "pausing: .* dead tuples in the table" "$T_DIR/bg.1.err"
    sleep 2
    assert_eq "$(progress 0001_copy)" "0|0" "chunks committed while autovacuum is behind"
    run_cmd "$SLUICE" --checkpoints "$CKPT" ctl 0001_copy status
    assert_rc 0
    assert_match "$OUT" "dead-tuples [0-9]+ of [0-9]+ live \(max-dead-tuples 20%\)"
    assert_contains "$OUT" "throttled "
    psql_q "vacuum t"
    sluice_wait
    assert_rc 0
    assert_match "$ERR" "pausing: [0-9]+ dead tuples in the table > 20% of its [0-9]+ live ones \+ 50"
    assert_match "$ERR" "resumed after [0-9]+s paused"
    assert_sql "select count(*) from t_copy" 20000
}

# A partitioned table has no counts of its own (0 dead, 0 live, relfrozenxid 0): each partition is
# vacuumed on its own, and the one furthest behind holds the job back, named.
test_dead_tuples_in_a_partition() {
    make_app_role
    psql_q "create table t (id int primary key, pad text not null default repeat('x', 50)) partition by range (id);
            create table t_low partition of t for values from (1) to (10001) with (autovacuum_enabled = false);
            create table t_high partition of t for values from (10001) to (20001);
            insert into t (id) select g from generate_series(1, 20000) g"
    copy_job "max-dead-tuples 20%" 1000
    # 8000 dead tuples in t_low > 50 + 20% of its 10000 live ones (and of the table's 20000 too)
    psql_q "update t set pad = pad || 'y' where id <= 8000"
    wait_until 10 sql_true "select n_dead_tup >= 8000 from pg_stat_user_tables where relname = 't_low'"
    sluice_start --db "$APP_DB" up
    wait_until 20 grep -q "pausing: .* dead tuples in partition t_low of the table" "$T_DIR/bg.1.err"
    sleep 2
    assert_eq "$(progress 0001_copy)" "0|0" "chunks committed while autovacuum is behind on a partition"
    run_cmd "$SLUICE" --checkpoints "$CKPT" ctl 0001_copy status
    assert_rc 0
    assert_match "$OUT" "dead-tuples 8[0-9]{3} of 10000 live \(max-dead-tuples 20%\)"
    psql_q "vacuum t_low"
    sluice_wait
    assert_rc 0
    assert_match "$ERR" "pausing: 8[0-9]{3} dead tuples in partition t_low of the table > 20% of its 10000 live ones \+ 50"
    assert_match "$ERR" "resumed after [0-9]+s paused"
    assert_sql "select count(*) from t_copy" 20000
}

test_no_backlog_no_hold() {
    make_app_role
    make_copy_job 500 "max-dead-tuples 20%"
    echo "-- sluice:max-wal-rate 1GB" | cat - "$JOBS/0001_copy.sql" >"$T_DIR/j" && mv "$T_DIR/j" "$JOBS/0001_copy.sql"
    run_sluice --db "$APP_DB" up
    assert_rc 0
    assert_not_contains "$ERR" "pausing"
    assert_sql "select count(*) from t_copy" 500
}

test_refused_on_sqlite() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    local d
    for d in "max-wal-rate 50MB" "max-dead-tuples 20%"; do
        write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:$d
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
        run_sluice up
        assert_rc 2
        assert_contains "$ERR" "0001_bump.sql:2: ${d%% *} cannot apply to SQLite"
    done
}

test_bad_values() {
    local v
    for v in "max-wal-rate 50mb" "max-wal-rate 0MB" "max-wal-rate 50" "max-dead-tuples 20" "max-dead-tuples 0%" \
        "max-dead-tuples 2000%"; do
        write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:$v
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
        run_sluice plan 0001_bump
        assert_rc 2
        assert_contains "$ERR" "0001_bump.sql:2: ${v%% *}"
    done
    assert_contains "$ERR" "a share of the table's live rows such as 20%"
}

run_test "max-wal-rate: no chunk while a parallel writer fills the WAL, finishes after" test_wal_rate
run_test "max-dead-tuples: no chunk while autovacuum is behind on the table, finishes after VACUUM" test_dead_tuples
run_test "max-dead-tuples on a partitioned table: the partition behind holds the job, named; finishes after VACUUM" \
    test_dead_tuples_in_a_partition
run_test "max-wal-rate and max-dead-tuples hold nothing back when not crossed" test_no_backlog_no_hold
run_test "max-wal-rate and max-dead-tuples are refused on SQLite, naming the line" test_refused_on_sqlite
run_test "max-wal-rate and max-dead-tuples refuse bad values" test_bad_values
t_done
