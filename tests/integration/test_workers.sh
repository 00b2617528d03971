#!/usr/bin/env bash
# test_workers.sh: `workers N`: disjoint key ranges run at once, exactly once, with pace, ctl, signals, undo, resume and SQLite.
. "$(dirname "$0")/../harness/lib.sh"

# chunks_at_least N: at least N chunks committed (for wait_until).
chunks_at_least() {
    local p
    p=$(progress)
    ((${p%|*} >= $1))
}

# cut_connections: end every other client session of the test's database (sluice's, as a failover
# or a pooler restart would).
cut_connections() {
    psql_q "select pg_terminate_backend(pid) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'" \
        >/dev/null
}

# assert_done JOB TABLE ROWS: status says done with ROWS rows, as many chunks as sluice_progress holds,
# chunk numbers unique (gaps allowed), and every row of TABLE has n = 1.
assert_done() {
    local job=$1 table=$2 rows=$3 chunks
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from $table" "$rows|0"
    chunks=$(psql_q "select count(*) from sluice_progress where job = '$job'")
    assert_sql "select coalesce(sum(rows), 0), count(distinct chunk_no) from sluice_progress where job = '$job'" "$rows|$chunks"
    load_status
    local got
    got=$(jq -c --arg j "$job" '.[] | select(.job == $j) | [.state, .rows, .chunks]' <<<"$STATUS_JSON")
    assert_eq "$got" "[\"done\",$rows,$chunks]" "status --json [state, rows, chunks] of $job"
}

# assert_several_ranges_ran JOB: the chunks came from more than one range.
assert_several_ranges_ran() {
    local n
    n=$(psql_q "select count(distinct range_no) from sluice_progress where job = '$1'")
    diag "$1: chunks from $n ranges"
    ((n > 1)) || fail "every chunk of $1 came from range_no $(psql_q "select min(range_no) from sluice_progress where job = '$1'"): nothing was split"
}

# (a) ---------------------------------------------------------------------------------------------

test_bigint_key_four_workers() {
    psql_q "create table t (id bigint primary key, n int not null default 0);
            insert into t (id) select g * 3 from generate_series(1, 20000) g; analyze t"
    # The last chunk of the first range takes 0.8 s: the other workers do every other range meanwhile,
    # so it commits last though its chunk number is not the highest. The job's chunk count must not
    # follow the number of the chunk that committed last.
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 500
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_sleep(CASE WHEN :hi = (SELECT max(id) FROM t WHERE id <= first_range_end()) THEN 0.8 ELSE 0 END);
EOF
    # PL/pgSQL plans its query when it first runs: sluice_ranges need not exist when sluice checks the job
    psql_q "create function first_range_end() returns bigint language plpgsql as \$\$
            begin return (select until[1]::bigint from sluice_ranges where job = '0001_bump' and after is null);
            end \$\$"
    run_sluice up
    assert_rc 0
    diag "chunks by commit time, last first (checkpoint file): $(sqlite3 "$CKPT/0001_bump.sluice" "select group_concat(chunk_no, ', ') from (select chunk_no from chunks order by committed_at desc, chunk_no desc limit 5)")"
    assert_done 0001_bump t 20000
    assert_several_ranges_ran 0001_bump
    assert_ranges_chain 0001_bump
    # At most 4 ranges per worker.
    assert_sql "select count(*) <= 16 from sluice_ranges where job = '0001_bump'" t
    # Each chunk lies inside its range: after < lo, hi <= until (as numbers, the key's order).
    assert_sql "select count(*) from sluice_progress p join sluice_ranges r using (job, range_no)
                 where p.job = '0001_bump'
                   and not ((r.after is null or p.lo[1]::bigint > r.after[1]::bigint)
                        and (r.until is null or p.hi[1]::bigint <= r.until[1]::bigint)
                        and p.lo[1]::bigint <= p.hi[1]::bigint)" 0
    # Chunks never overlap, and a range's chunks are full except its last one.
    assert_sql "select count(*) from sluice_progress a join sluice_progress b
                  on a.job = b.job and a.chunk_no < b.chunk_no
                 where a.job = '0001_bump'
                   and a.lo[1]::bigint <= b.hi[1]::bigint and b.lo[1]::bigint <= a.hi[1]::bigint" 0
    assert_sql "select count(*) <= count(distinct range_no) from sluice_progress where job = '0001_bump' and rows < 500" t
    # A second up changes nothing.
    run_sluice up
    assert_rc 0
    assert_contains "$OUT$ERR" "already done" "second up"
    assert_sql "select min(n), max(n), count(*) from t" "1|1|20000"
}

# (b) ---------------------------------------------------------------------------------------------

test_composite_text_key_with_where() {
    # Mixed case, a space, a quote and the empty string: the database's text order, not byte order.
    psql_q "create table tc (region text, code text, kind int not null, n int not null default 0,
                             primary key (region, code));
            insert into tc (region, code, kind)
              select r, md5(r || i), i % 3
                from unnest(array['eu-west', 'us-east', 'ap south', 'Zulu', 'zulu', 'it''s', '']) r,
                     generate_series(1, 2000) i;
            analyze tc"
    write_job 0001_kind0 <<'EOF'
-- sluice:table tc
-- sluice:key region, code
-- sluice:where kind = 0
-- sluice:batch 100
-- sluice:workers 3
-- sluice:up
UPDATE tc SET n = n + 1 WHERE (region, code) BETWEEN :lo AND :hi AND kind = 0;
EOF
    local want
    want=$(psql_q "select count(*) from tc where kind = 0")
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from tc where kind = 0" "$want|0"
    assert_sql "select count(*) from tc where kind <> 0 and n <> 0" 0
    assert_sql "select sum(rows), count(*) = count(distinct chunk_no) from sluice_progress where job = '0001_kind0'" "$want|t"
    assert_several_ranges_ran 0001_kind0
    assert_ranges_chain 0001_kind0
    # Each chunk inside its range, in the key's own (collation) order.
    assert_sql "select count(*) from sluice_progress p join sluice_ranges r using (job, range_no)
                 where p.job = '0001_kind0'
                   and not ((r.after is null or (p.lo[1], p.lo[2]) > (r.after[1], r.after[2]))
                        and (r.until is null or (p.hi[1], p.hi[2]) <= (r.until[1], r.until[2])))" 0
    # Each chunk counts exactly the matching rows between its bounds.
    assert_sql "select count(*) from sluice_progress p
                 where p.job = '0001_kind0'
                   and p.rows <> (select count(*) from tc
                                   where (region, code) between (p.lo[1], p.lo[2]) and (p.hi[1], p.hi[2]) and kind = 0)" 0
    assert_status 0001_kind0 state "done"
}

# (c) ---------------------------------------------------------------------------------------------

# four_at_once WHAT LOG PIDS CHUNKS MS: CHUNKS chunks of 100 ms each, logged in LOG (lo, pid, t0, t1) and
# run by the backends whose pids are in table PIDS, took MS: under 6/10 of one at a time, on 4 backends,
# 3 or 4 of them at once (up or down with workers 4).
four_at_once() {
    local what=$1 log=$2 pid_table=$3 chunks=$4 ms=$5 serial pids overlap
    serial=$((chunks * 100))
    pids=$(psql_q "select count(distinct pid) from $pid_table")
    overlap=$(psql_q "select max((select count(*) from $log b where b.t0 <= a.t0 and a.t0 < b.t1)) from $log a")
    diag "$what: $chunks chunks of 100 ms with workers 4: ${ms} ms (${serial} ms one at a time); $pids backends; at most $overlap chunks at once"
    ((ms < serial * 6 / 10)) || fail "$what: $chunks chunks of 100 ms with workers 4 took ${ms} ms: not run at the same time (serial: ${serial} ms)"
    assert_eq "$pids" 4 "distinct backends that ran chunks ($what)"
    ((overlap >= 3)) || fail "$what: at most $overlap chunks were in flight at once with workers 4"
    ((overlap <= 4)) || fail "$what: $overlap chunks were in flight at once with workers 4"
}


test_chunks_run_at_the_same_time() {
    psql_q "create table t (id int primary key, n int not null default 0, pid int);
            create table chunk_log (lo int primary key, pid int not null, t0 timestamptz not null, t1 timestamptz);
            insert into t (id) select generate_series(1, 4000); analyze t"
    # 40 batches (a few more chunks where ranges end) of 100 ms each: 4 s or more one after the other.
    write_job 0001_slow <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1, pid = pg_backend_pid() WHERE id BETWEEN :lo AND :hi;
INSERT INTO chunk_log (lo, pid, t0) VALUES (:lo, pg_backend_pid(), clock_timestamp());
SELECT pg_sleep(0.1);
UPDATE chunk_log SET t1 = clock_timestamp() WHERE lo = :lo;
EOF
    local t0 t1 ms
    t0=$(now_ms)
    run_sluice up
    t1=$(now_ms)
    assert_rc 0
    ms=$((t1 - t0))
    assert_done 0001_slow t 4000
    local chunks
    chunks=$(psql_q "select count(*) from sluice_progress")
    assert_sql "select count(*), count(t1) from chunk_log" "$chunks|$chunks"
    four_at_once up chunk_log t "$chunks" "$ms"
}

# (d) ---------------------------------------------------------------------------------------------

test_sigint_then_resume() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 8000); analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 100ms
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 30 chunks_at_least 8
    sluice_kill INT
    assert_rc 3
    assert_contains "$ERR" "stopped" "log"
    # What committed is exactly what the bookkeeping says, and nothing is still on its way.
    local before after
    before=$(progress)
    assert_sql "select sum(n) = ${before#*|} and max(n) <= 1 from t" t
    sleep 0.5
    after=$(progress)
    assert_eq "$after" "$before" "chunks committed after the runner exited"
    ((${before#*|} < 8000)) || fail "the job finished before SIGINT: nothing left to resume"
    assert_several_ranges_ran 0001_bump
    assert_status 0001_bump state stopped
    assert_status 0001_bump rows "${before#*|}"
    assert_status 0001_bump chunks "${before%|*}"

    run_sluice up
    assert_rc 0
    assert_done 0001_bump t 8000
}

# Cut every connection of a runner with workers: it reconnects, and while it lives a second runner is
# refused (its lease is renewed by a connection of its own, and no session holds anything a cut could
# release); the first finishes exactly once.
test_second_runner_refused_while_workers_live() {
    # Chunks are slow (the first runner must be mid-run when the second starts) until slow is turned off.
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 8000); analyze t;
            create table pace (slow boolean); insert into pace values (true)"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_sleep(CASE WHEN slow THEN 0.5 ELSE 0 END) FROM pace;
EOF
    sluice_start up
    wait_until 30 chunks_at_least 8
    assert_sql "select count(*) from pg_locks where locktype = 'advisory'
                and database = (select oid from pg_database where datname = current_database())" 0
    cut_connections
    run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$T_DIR/other" up
    assert_rc 2
    assert_contains "$ERR" "is already being run against this database"
    runner_alive_still=$(kill -0 "$SLUICE_PID" 2>/dev/null && echo yes || echo no)
    assert_eq "$runner_alive_still" yes "the first runner still running when the second was refused"
    psql_q "update pace set slow = false"
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "reconnected"
    assert_done 0001_bump t 8000
}

# (e) ---------------------------------------------------------------------------------------------

test_max_rate_is_for_the_whole_job() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 6000); analyze t"
    write_job 0001_slow <<'EOF'
-- sluice:table t
-- sluice:batch 200
-- sluice:workers 4
-- sluice:max-rate 2000
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    local t0 t1 ms
    t0=$(now_ms)
    run_sluice up
    t1=$(now_ms)
    assert_rc 0
    assert_done 0001_slow t 6000
    assert_several_ranges_ran 0001_slow
    # 6000 rows at 2000 rows/s is 3 s for the whole job (4 workers each at 2000 rows/s would take 0.75 s).
    ms=$((t1 - t0))
    diag "max-rate 2000 over 6000 rows with workers 4: ${ms} ms"
    ((ms >= 2500)) || fail "max-rate 2000 over 6000 rows with workers 4 took only ${ms} ms: the rate is not the job's"
}

# (f) ---------------------------------------------------------------------------------------------

JOB=0001_ctl

# chunks_of_size N: 4 or more chunks of exactly N rows committed, from 2 or more ranges (a range's last
# chunk may be short by chance, but not 4 of them all of that size).
chunks_of_size() {
    sql_true "select count(*) >= 4 and count(distinct range_no) >= 2 from sluice_progress where job = '$JOB' and rows = $1"
}

test_ctl_with_workers() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 10000); analyze t"
    # 200 chunks, 4 workers each resting 200 ms between its chunks: about 10 s unless told otherwise.
    write_job "$JOB" <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:pause 200ms
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 20 chunks_at_least 1
    wait_until 10 test -S "$CKPT/$JOB.sluice-ctl"
    run_sluice ctl "$JOB" status
    assert_rc 0
    assert_contains "$OUT" "job $JOB"
    assert_contains "$OUT" "state running"
    assert_contains "$OUT" "batch 50"

    # pause: every worker's chunk in flight finishes, then nothing moves.
    run_sluice ctl "$JOB" pause
    assert_rc 0
    assert_contains "$OUT" "paused by sluice ctl"
    run_sluice ctl "$JOB" status
    assert_rc 0
    assert_contains "$OUT" "state paused"
    sleep 0.5
    local before after
    before=$(progress "$JOB")
    sleep 1.5
    after=$(progress "$JOB")
    assert_eq "$after" "$before" "chunks committed in 1.5 s of ctl pause with workers 4"
    ((${before#*|} < 10000)) || fail "the job finished before it could be paused"
    kill -0 "$SLUICE_PID" 2>/dev/null || fail "the runner exited on ctl pause"
    assert_sql "select sum(n) = ${before#*|} and max(n) <= 1 from t" t
    run_sluice ctl "$JOB" status
    assert_rc 0
    assert_contains "$OUT" "rows ${before#*|}"

    run_sluice ctl "$JOB" resume
    assert_rc 0
    assert_contains "$OUT" "resumed by sluice ctl"
    wait_until 10 chunks_at_least $((${before%|*} + 1))
    run_sluice ctl "$JOB" status
    assert_contains "$OUT" "state running"

    # set acts on the job as a whole: every worker's next chunks have the new size.
    run_sluice ctl "$JOB" set batch=7
    assert_rc 0
    wait_until 10 chunks_of_size 7
    wait_until 5 ctl_says "batch 7" "$JOB" status
    # Then finish quickly: batches of 1000 may end the job before the next request reaches its runner
    run_sluice ctl "$JOB" set batch=1000
    assert_rc 0
    run_sluice ctl "$JOB" set pause=0ms
    ((RC == 0)) || [[ $RC == 1 && $ERR == *"no runner of job $JOB is listening"* ]] ||
        fail "ctl set pause=0ms: exit $RC: $ERR"
    sluice_wait
    assert_rc 0
    assert_done "$JOB" t 10000
    assert_several_ranges_ran "$JOB"
}

# (g) ---------------------------------------------------------------------------------------------

test_undo_snapshot_then_down() {
    make_users 6000
    write_job 0001_fill <<'EOF'
-- sluice:table t
-- sluice:batch 300
-- sluice:workers 2
-- sluice:undo snapshot(full_name, n)
-- sluice:up
UPDATE t SET full_name = first || ' ' || last, n = n + 1 WHERE id BETWEEN :lo AND :hi AND full_name IS NULL;
EOF
    local before
    before=$(table_sum)
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where full_name is null" 0
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n = 0) from t" "5143|857"
    assert_several_ranges_ran 0001_fill
    run_sluice down 0001_fill
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after down"
    assert_sql "select count(*) from sluice_progress where job = '0001_fill'" 0
    assert_status 0001_fill state rolled_back
}

# users_and_fill_job [CONDITION]: make_users 20000 and job 0001_fill, 4 workers at 100 rows a chunk with
# a pause, a snapshot of full_name and n; its UPDATE's WHERE adds "AND CONDITION" when given.
users_and_fill_job() {
    make_users 20000
    write_job 0001_fill <<EOF
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 100ms
-- sluice:workers 4
-- sluice:undo snapshot(full_name, n)
-- sluice:up
UPDATE t SET full_name = first || ' ' || last, n = n + 1 WHERE id BETWEEN :lo AND :hi${1:+ AND $1};
EOF
}

# A partial run stops with holes in the middle of the key space (each range partly done): down puts
# back exactly the chunks that committed.
test_undo_after_partial_run() {
    users_and_fill_job "full_name IS NULL"
    local before
    before=$(table_sum)
    sluice_start up
    wait_until 30 chunks_at_least 8
    sluice_kill INT
    assert_rc 3
    assert_several_ranges_ran 0001_fill
    if sql_true "select count(*) = 0 from t where full_name is null"; then
        fail "the job finished before SIGINT: nothing partial to roll back"
    fi
    run_sluice down 0001_fill
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after down of a partial run"
    assert_sql "select count(*) from sluice_progress where job = '0001_fill'" 0
}

# The key split edited by hand after a partial run: a range deleted from it would never be walked, and
# with no split at all the last chunk is not the walk's position. Each is refused (exit 2), nothing
# changed; down needs only sluice_progress and gives the table back; then up runs the job whole.
test_split_edited_by_hand() {
    users_and_fill_job
    local before partial last
    before=$(table_sum)
    sluice_start up
    wait_until 30 chunks_at_least 8
    sluice_kill KILL
    # a chunk the runner had sent whole may still commit after the kill: wait for its sessions to end
    wait_until 30 sql_true "select count(*) = 0 from pg_stat_activity where application_name = 'sluice'"
    assert_several_ranges_ran 0001_fill
    partial=$(table_sum)
    last=$(psql_q "select max(range_no) from sluice_ranges where job = '0001_fill'")
    psql_q "delete from sluice_ranges where job = '0001_fill' and range_no = $last"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "not whole: the ranges after range $((last - 1)) are missing: their keys would never be walked"
    psql_q "delete from sluice_ranges where job = '0001_fill' and range_no = 3"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_fill: the job's key split in sluice_ranges is not whole"
    assert_contains "$ERR" "not whole: range 3 is missing: its keys would never be walked (the next range it holds is 4)"
    assert_contains "$ERR" "hint: were rows of sluice_ranges deleted or changed by hand?"
    assert_eq "$(table_sum)" "$partial" "table checksum after the refused up"
    psql_q "delete from sluice_ranges where job = '0001_fill'"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_fill: sluice_progress holds chunks of "
    assert_contains "$ERR" "ranges of a key split, but sluice_ranges has no split for the job"
    assert_eq "$(table_sum)" "$partial" "table checksum after the refused up"
    run_sluice down 0001_fill
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after down"
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "20000|0"
}

# A partitioned table (two levels) has no pages of its own: the split samples its partitions' pages at
# the share a table of their size needs (about 300 pages of about 640 here), not all of them, which on a
# large table would read it whole before the first chunk. Every row once, then down.
test_partitioned_table() {
    psql_q "create table t (id int primary key, n int not null default 0, note text) partition by range (id);
            create table t_low partition of t for values from (1) to (50001);
            create table t_high partition of t for values from (50001) to (100001) partition by range (id);
            create table t_high_a partition of t_high for values from (50001) to (75001);
            create table t_high_b partition of t_high for values from (75001) to (100001);
            insert into t (id, note) select g, 'row ' || g from generate_series(1, 100000) g; analyze t"
    bump_job 0001_bump 1000 "-- sluice:workers 2" "-- sluice:undo snapshot(n)"
    local before pct
    before=$(psql_q "select md5(string_agg(t::text, ',' order by id)) from t")
    run_sluice up
    assert_rc 0
    pct=$(grep -o "sampled from [0-9.]*% of t's pages" <<<"$ERR" | grep -o "[0-9.]*%" | tr -d %)
    diag "the split sampled ${pct:-?}% of t's pages"
    [[ -n $pct ]] && awk -v p="$pct" 'BEGIN { exit !(p >= 20 && p <= 80) }' ||
        fail "the split should sample about half of the partitions' pages, not ${pct:-none}%: $ERR"
    assert_several_ranges_ran 0001_bump
    assert_sql "select min(n), max(n), count(*) from t" "1|1|100000"
    run_sluice down 0001_bump
    assert_rc 0
    assert_sql "select md5(string_agg(t::text, ',' order by id)) from t" "$before"
}

# down with workers: the ranges are undone at once, each on its own connection, newest chunk first
# within a range; the table comes back exactly.
test_down_runs_ranges_at_the_same_time() {
    psql_q "create table t (id int primary key, n int not null default 0);
            create table down_log (lo int primary key, pid int not null, t0 timestamptz not null, t1 timestamptz);
            insert into t (id) select generate_series(1, 4000); analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET n = n - 1 WHERE id BETWEEN :lo AND :hi;
INSERT INTO down_log (lo, pid, t0) VALUES (:lo, pg_backend_pid(), clock_timestamp());
SELECT pg_sleep(0.1);
UPDATE down_log SET t1 = clock_timestamp() WHERE lo = :lo;
EOF
    run_sluice up
    assert_rc 0
    psql_q "create table up_chunks as select range_no, chunk_no, lo[1]::int as lo from sluice_progress"
    local chunks t0 t1
    chunks=$(psql_q "select count(*) from up_chunks")
    t0=$(now_ms)
    run_sluice down 0001_bump
    t1=$(now_ms)
    assert_rc 0
    assert_contains "$ERR" "4 workers over"
    assert_sql "select min(n), max(n), count(*) from t" "0|0|4000"
    assert_sql "select count(*), count(t1) from down_log" "$chunks|$chunks"
    four_at_once down down_log down_log "$chunks" "$((t1 - t0))"
    # within a range, newest first: no chunk was undone before the one that committed after it
    assert_sql "select count(*) from up_chunks a join up_chunks b on b.range_no = a.range_no and b.chunk_no > a.chunk_no
                  join down_log da on da.lo = a.lo join down_log db on db.lo = b.lo where da.t0 < db.t1" 0
    assert_status 0001_bump state rolled_back
}

# The server's row counts reset since the table's last ANALYZE (a crash, a failover to a standby,
# pg_stat_reset): they count no row live, only the old versions of the rows updated since. The split
# goes by the planner's rows then, as with no counts at all: it used to take the table for empty
# and walk it with one worker, saying nothing.
test_split_after_counts_reset() {
    psql_q "create table t (id int primary key, n int not null default 0) with (autovacuum_enabled = false);
            insert into t (id) select generate_series(1, 20000); analyze t"
    psql_q "select pg_stat_reset()" >/dev/null
    psql_q "update t set n = n"
    wait_until 10 sql_true "select n_dead_tup > 0 and n_live_tup = 0 and last_analyze is null
                              from pg_stat_all_tables where relid = 't'::regclass"
    bump_job 0001_bump 100 "-- sluice:workers 2"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "split the key into"
    assert_contains "$ERR" "2 workers over"
    assert_done 0001_bump t 20000
}

# (h) ---------------------------------------------------------------------------------------------

test_tiny_and_empty_tables() {
    psql_q "create table t (id int primary key, n int not null default 0);
            create table e (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 7); analyze t; analyze e"
    write_job 0001_tiny <<'EOF'
-- sluice:table t
-- sluice:workers 8
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    write_job 0002_empty <<'EOF'
-- sluice:table e
-- sluice:batch 10
-- sluice:workers 8
-- sluice:up
UPDATE e SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice plan 0001_tiny
    assert_rc 0
    # plan says what up will do with the estimate: one worker (it said "8 connections")
    assert_contains "$OUT" "workers:    1 of the 8 asked for: about 7 rows, too few for two ranges of two chunks"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_tiny: workers 8, but the key is walked as one range, by one worker: about 7 rows to walk"
    assert_done 0001_tiny t 7
    assert_sql "select count(*) from sluice_progress where job = '0001_tiny'" 1
    assert_status 0002_empty state "done"
    assert_status 0002_empty rows 0
    assert_sql "select count(*) from sluice_progress where job = '0002_empty'" 0
}

# 60 rows in chunks of 10: three ranges of two chunks, so three of the eight workers, as plan says.
test_fewer_ranges_than_workers() {
    make_table 60
    psql_q "analyze t"
    bump_job 0001_mid 10 "-- sluice:workers 8"
    run_sluice plan 0001_mid
    assert_rc 0
    assert_contains "$OUT" 'workers:    3 of the 8 asked for, each with a chunk in flight: the first `up` splits the key into about 3 ranges'
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_mid: 3 workers over 3 key ranges"
    assert_done 0001_mid t 60
}

# (i) ---------------------------------------------------------------------------------------------

test_resume_with_other_worker_count() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 20000); analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 100ms
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 30 chunks_at_least 8
    sluice_kill INT
    assert_rc 3
    assert_several_ranges_ran 0001_bump
    local before
    before=$(progress)
    ((${before#*|} < 20000)) || fail "the job finished before SIGINT: nothing left to resume"

    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 1
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    # Refused without --allow-changed-statements (the file changed), and nothing changed.
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bump" "stderr"
    assert_contains "$ERR" "changed" "stderr"
    assert_contains "$ERR" "--allow-changed-statements" "stderr (hint)"
    assert_eq "$(progress)" "$before" "chunks after the refusal"
    assert_sql "select sum(n) from t" "${before#*|}"

    # One worker finishes what four left: every range continues after its last committed chunk.
    run_sluice up --allow-changed-statements
    assert_rc 0
    assert_done 0001_bump t 20000
}

# Resumed with more workers, a job that ran with one splits what its walk has left, sized by the
# estimate of the rows after its last chunk (its where tests the column it changes, so the where's
# estimate over the table no longer counts the rows done), and the workers finish it exactly once.
test_more_workers_split_what_is_left() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 20000); analyze t"
    local job='-- sluice:table t
-- sluice:batch 200
-- sluice:where n = 0'
    printf '%s\n' "$job" "-- sluice:pause 50ms" "-- sluice:up" \
        "UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi AND n = 0;" | write_job 0001_bump
    sluice_start up
    wait_until 60 rows_done_at_least 0001_bump 12000
    sluice_kill INT
    assert_rc 3
    psql_q "analyze t"
    printf '%s\n' "$job" "-- sluice:workers 4" "-- sluice:up" \
        "UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi AND n = 0;" | write_job 0001_bump
    run_sluice up --allow-changed-statements
    assert_rc 0
    assert_contains "$ERR" "split the key into" "stderr"
    assert_contains "$ERR" "4 workers over" "stderr"
    assert_sql "select count(*) filter (where n = 1) from t" 20000
}

# down with workers whose connections are cut between chunks (as a failover or a pooler restart
# cuts them): each worker reconnects before its next chunk, and down finishes, every chunk undone
# once. A worker that found no connection there used to wait for its health check for ever.
test_down_workers_reconnect_between_chunks() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 4000); analyze t"
    local before
    before=$(table_sum)
    bump_job 0001_bump 100 "-- sluice:workers 2" "-- sluice:undo snapshot(n)" "-- sluice:pause 100ms"
    run_sluice up
    assert_rc 0
    assert_done 0001_bump t 4000
    local chunks cut
    chunks=$(psql_q "select count(*) from sluice_progress where job = '0001_bump'")
    sluice_start down 0001_bump
    for cut in 4 12; do
        wait_until 60 sql_true "select count(*) <= $chunks - $cut from sluice_progress where job = '0001_bump'"
        # the chunks take a few milliseconds in every 100: the cut lands between chunks
        cut_connections
    done
    wait_until 60 runner_exited
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "reconnected"
    assert_sql "select count(*) from sluice_progress where job = '0001_bump'" 0
    assert_eq "$(table_sum)" "$before" "table checksum after down"
}

# A job walked by one worker, then resumed with two (the rest of the key split into ranges), then
# rolled back part-way: `down` undoes the newest chunks of each range, those that ran before the
# split (range 0) too. The next `up` walks range 0 again from its last chunk left, up to where the
# split begins, as it does the other ranges: every row once, and done means done.
test_up_after_partial_down_walks_range_zero_again() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 20000); analyze t"
    local job='-- sluice:table t
-- sluice:batch 100
-- sluice:undo snapshot(n)
-- sluice:pause 20ms'
    printf '%s\n' "$job" "-- sluice:up" "UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;" | write_job 0001_bump
    stop_up_after 0001_bump 6000
    printf '%s\n' "$job" "-- sluice:workers 2" "-- sluice:up" "UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;" |
        write_job 0001_bump
    run_sluice up --allow-changed-statements
    assert_rc 0
    assert_contains "$ERR" "split the key into"
    assert_done 0001_bump t 20000
    local zero
    zero=$(psql_q "select count(*) from sluice_progress where job = '0001_bump' and range_no = 0")
    ((zero >= 60)) || fail "only $zero chunks ran before the split"
    sluice_start down 0001_bump
    wait_until 60 sql_true "select count(*) < $zero - 5 from sluice_progress where job = '0001_bump' and range_no = 0"
    sluice_kill INT
    assert_rc 3
    sql_true "select count(*) > 0 from sluice_progress where job = '0001_bump'" || fail "down finished: nothing to resume"
    run_sluice up --allow-changed-statements
    assert_rc 0
    assert_done 0001_bump t 20000
}

# (j) ---------------------------------------------------------------------------------------------

test_sqlite_runs_one_worker() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 3000
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 4
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice plan 0001_bump
    assert_rc 0
    assert_contains "$OUT" "workers:    1 (workers 4 asked for"
    run_sluice up
    assert_rc 0
    assert_match "$ERR" "warning: [^"$'\n'"]*worker" "log (a warning that workers 4 runs as one on SQLite)"
    assert_match "$ERR" "warning: [^"$'\n'"]*(one writer|1 worker|one worker)" "log"
    assert_sq "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "3000|0"
    assert_sq "select sum(rows), count(*) = count(distinct chunk_no) from sluice_progress" "3000|1"
    assert_status 0001_bump state "done"
    assert_status 0001_bump rows 3000
}

# (k) ---------------------------------------------------------------------------------------------

test_on_error_skip_with_workers() {
    psql_q "create table t (id int primary key, n int not null default 0, d int not null default 1);
            insert into t (id) select generate_series(1, 6000);
            update t set d = 0 where id in (777, 3001, 5999); analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 200
-- sluice:workers 2
-- sluice:on-error skip
-- sluice:up
UPDATE t SET n = n + 1 / d WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "set aside (on-error skip)" "log"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t where d <> 0" "5997|0"
    assert_sql "select string_agg(id || ':' || n, ',' order by id) from t where d = 0" "777:0,3001:0,5999:0"
    assert_sql "select string_agg(hi[1], ',' order by hi[1]::int) from sluice_progress where skipped" "777,3001,5999"
    assert_sql "select sum(rows) from sluice_progress where not skipped" 5997
    assert_several_ranges_ran 0001_bump
    run_sluice status --json
    assert_rc 0
    local keys
    keys=$(jq -r '.[0] | ([.skipped[].key[0]] | sort_by(tonumber) | join(",")) + " " + .state' <<<"$OUT")
    assert_eq "$keys" "777,3001,5999 done" "skipped keys and state in status --json"
}

run_test "workers 4 over a bigint key: every row once, ranges form one chain" test_bigint_key_four_workers
run_test "workers 3 over a composite text key with where: exactly the matching rows once" test_composite_text_key_with_where
run_test "workers 4: chunks really run at the same time, on 4 connections, never more than 4" test_chunks_run_at_the_same_time
run_test "workers 4: SIGINT stops with exit 3, up resumes exactly once" test_sigint_then_resume
run_test "workers 4: a second runner is refused while the first lives, every connection of it cut" test_second_runner_refused_while_workers_live
run_test "workers 4: max-rate is for the whole job" test_max_rate_is_for_the_whole_job
run_test "workers 4: ctl status, pause, resume and set" test_ctl_with_workers
run_test "workers 2: undo snapshot(cols), then down restores the table exactly" test_undo_snapshot_then_down
run_test "workers 4: down after a partial run restores the table exactly" test_undo_after_partial_run
run_test "workers 4: down undoes the ranges at the same time, on 4 connections, newest first in each" test_down_runs_ranges_at_the_same_time
run_test "workers 2: down's connections cut between chunks: each worker reconnects, down finishes, the table as before" \
    test_down_workers_reconnect_between_chunks
run_test "counts reset since the last ANALYZE, the table only updated since: the key is still split" test_split_after_counts_reset
run_test "workers 8 on a table smaller than a batch, and on an empty one; plan shows the workers" test_tiny_and_empty_tables
run_test "workers 8 on 60 rows in chunks of 10: plan and up both run three" test_fewer_ranges_than_workers
run_test "resume with workers 1 after workers 4: refused unless --allow-changed-statements, then every row once" test_resume_with_other_worker_count
run_test "resumed with workers 4 after workers 1, a where on the column it changes: what is left is split" \
    test_more_workers_split_what_is_left
run_test "one worker, then two (a split), then a down stopped part-way: up walks the chunks before the split again, every row once" \
    test_up_after_partial_down_walks_range_zero_again
run_test "SQLite: workers 4 runs as one worker with a warning, every row once" test_sqlite_runs_one_worker
run_test "workers 2 with on-error skip: failing rows set aside, the others once" test_on_error_skip_with_workers
run_test "a partitioned table, two levels: the split samples its partitions' pages; every row once, then down" \
    test_partitioned_table
run_test "the key split edited by hand: a range deleted, then all of it: refused, nothing changed; down, then up" \
    test_split_edited_by_hand
t_done
