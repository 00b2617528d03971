#!/usr/bin/env bash
# test_workers_kill9.sh: exactly once under kill -9 with `workers N`: several chunks in flight at every kill, then resumed.
. "$(dirname "$0")/../harness/lib.sh"
. "$(dirname "$0")/../harness/kill.sh"

# finish_ranges_and_check JOB TABLE ROWS: finish_and_check, and the chunks came from several ranges of
# one plan.
finish_ranges_and_check() {
    local job=$1 table=$2 rows=$3 ranges
    finish_and_check "$table" "$rows"
    ranges=$(psql_q "select count(distinct range_no) from sluice_progress")
    diag "$(psql_q "select count(*) from sluice_progress") chunks from $ranges ranges; chunk numbers up to $(psql_q "select max(chunk_no) from sluice_progress")"
    ((ranges > 1)) || fail "every chunk came from one range: the job was not split"
    assert_ranges_chain "$job"
}

test_kill9_four_workers() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 200000); analyze t"
    # 2000 chunks; the sleep keeps each chunk's transaction open 40 ms, so that at most kills all four
    # workers are inside one, and the job cannot finish before the 20th kill however fast it gets (each
    # start and kill lets some 50 chunks commit; twice that on a loaded machine).
    chunk_sleep 0.04
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
$CHUNK_SLEEP_SQL
EOF
    kill_loop t 2000 20
    chunk_sleep 0
    finish_ranges_and_check 0001_bump t 200000
}

# With the checkpoint directory deleted after every kill: the ranges and their positions live in the database.
test_kill9_workers_lose_checkpoints() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 100000); analyze t"
    chunk_sleep 0.04
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
$CHUNK_SLEEP_SQL
EOF
    kill_loop t 1000 10 lose
    chunk_sleep 0
    finish_ranges_and_check 0001_bump t 100000
}

test_kill9_composite_text_key() {
    # Text keys in the database's collation order (mixed case, digits as text: '10' < '9').
    psql_q "create table tc (tenant text, id text, n int not null default 0, primary key (tenant, id));
            insert into tc (tenant, id)
              select case when t % 2 = 0 then 'Tenant ' || t else 'tenant-' || t end, i::text
                from generate_series(1, 40) t, generate_series(1, 2500) i;
            analyze tc"
    chunk_sleep 0.04
    write_job 0001_bump_composite <<EOF
-- sluice:table tc
-- sluice:batch 100
-- sluice:workers 3
-- sluice:up
UPDATE tc SET n = n + 1 WHERE (tenant, id) BETWEEN :lo AND :hi;
$CHUNK_SLEEP_SQL
EOF
    kill_loop tc 1000 10
    chunk_sleep 0
    finish_ranges_and_check 0001_bump_composite tc 100000
}

# kill -9 at any moment from the very start, before or while the plan is made and written, as well
# as later: each next run finds either no plan or the whole one, never half of one.
test_kill9_while_planning() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 50000); analyze t"
    chunk_sleep 0.04
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 250
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
$CHUNK_SLEEP_SQL
EOF
    KILLS=0
    local i plan chunks ranges first_plan=""
    for i in 1 2 3 4 5 6 7 8; do
        sluice_start up
        random_sleep 0 $((i * 40))
        sluice_kill KILL
        if ((RC != 137)); then
            show_state t
            fail "run $i ended with exit $RC before its kill -9 (at most $((i * 40)) ms after it started)"
        fi
        KILLS=$((KILLS + 1))
        check_exactly_once_so_far t
        chunks=$(progress_chunks)
        plan=""
        ranges=0
        if sql_true "select to_regclass('sluice_ranges') is not null"; then
            plan=$(psql_q "select count(*) || ' ' || md5(coalesce(string_agg(range_no || ':' || coalesce(after::text, '-') || ':' || coalesce(until::text, '-'), ',' order by range_no), '')) from sluice_ranges")
            ranges=${plan%% *}
        fi
        diag "kill $KILLS (at most $((i * 40)) ms in): $ranges ranges planned, $chunks chunks committed"
        # Once a chunk committed, the plan it belongs to stays as it is.
        if ((chunks > 0)); then
            [[ -z $first_plan || $plan == "$first_plan" ]] || {
                show_state t
                fail "the plan in sluice_ranges changed after chunks had committed ($first_plan, then $plan)"
            }
            first_plan=$plan
        fi
    done
    chunk_sleep 0
    finish_ranges_and_check 0001_bump t 50000
}

run_test "workers 4: 20 kill -9's at random moments, then up: every row of 200,000 changed exactly once" test_kill9_four_workers
run_test "workers 4: 10 kill -9's, the checkpoint directory deleted after each, then up: exactly once" test_kill9_workers_lose_checkpoints
run_test "workers 3 over a composite text key: 10 kill -9's, then up: every row changed exactly once" test_kill9_composite_text_key
run_test "workers 4: kill -9's from the first milliseconds on (while planning), then up: exactly once" test_kill9_while_planning
t_done
