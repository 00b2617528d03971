#!/usr/bin/env bash
# test_sqlite_down.sh: `down` on SQLite puts the data back: each undo way, every storage class, other writers, refusals, targets.
. "$(dirname "$0")/../harness/lib.sh"

# t(id, first, last, full_name, n): full_name already set on every 7th row.
sq_make_users() {
    sq_init
    sq "create table t (id integer primary key, first text not null default '', last text not null default '',
                        full_name text, n int not null default 0)"
    sq_fill t "${1:-5000}"
    sq "update t set first = 'f' || id, last = 'l' || id; update t set full_name = 'kept ' || id where id % 7 = 0"
}

roundtrip() { # $1 = undo directive, $2 = extra sections
    sq_make_users
    job_backfill 0001_fill "$1"
    [[ -z ${2:-} ]] || printf '%s\n' "$2" >>"$JOBS/0001_fill.sql"
    local before
    before=$(sq_sum t)
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where full_name is null" 0
    assert_ne "$(sq_sum t)" "$before" "up changed the table"
    run_sluice down 0001_fill
    assert_rc 0
    assert_eq "$(sq_sum t)" "$before" "table dump after down"
    assert_eq "$(state_of 0001_fill)" rolled_back "state after down"
    assert_sq "select count(*) from sluice_progress" 0
    run_sluice history --json
    assert_rc 0
    assert_eq "$(jq -c '[.[] | select(.kind == "down") | [.outcome, .rows]]' <<<"$OUT")" '[["done",5000]]' "down runs in history"
    # And up again applies it once more, from the start.
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where full_name is null or n <> (case when id % 7 = 0 then 0 else 1 end)" 0
    assert_eq "$(state_of 0001_fill)" "done" "state after up again"
}

test_down_section() {
    roundtrip "" "-- sluice:down
UPDATE t SET full_name = NULL, n = n - 1 WHERE id BETWEEN :lo AND :hi AND id % 7 <> 0;"
}

test_snapshot_cols() {
    roundtrip "-- sluice:undo snapshot(full_name, n)"
}

test_snapshot_all_update() {
    roundtrip "-- sluice:undo snapshot(*)"
}

# A DELETE job rolled back gives back the identical table.
test_snapshot_all_delete() {
    sq_make_users 4000
    sq "alter table t add column created text; update t set created = datetime('2020-01-01', '+' || id || ' hours')"
    local before
    before=$(sq_sum t)
    write_job 0001_purge <<'EOF'
-- sluice:table t
-- sluice:batch 250
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM t WHERE id BETWEEN :lo AND :hi AND id % 3 <> 0;
EOF
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t" 1333
    run_sluice down -1
    assert_rc 0
    assert_eq "$(sq_sum t)" "$before" "table dump after down"
    assert_eq "$(state_of 0001_purge)" rolled_back
}

# The same DELETE on a composite key of a WITHOUT ROWID table.
test_snapshot_all_delete_composite() {
    sq_init
    sq "create table t (tenant int, id int, v text, n int not null default 0, primary key (tenant, id)) without rowid;
        with recursive a(x) as (select 1 union all select x + 1 from a where x < 5),
                       b(y) as (select 1 union all select y + 1 from b where y < 400)
        insert into t (tenant, id, v) select x, y, 'v' || x || '.' || y from a, b"
    local before
    before=$(sq_sum t)
    write_job 0001_purge <<'EOF'
-- sluice:table t
-- sluice:batch 150
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM t WHERE (tenant, id) BETWEEN :lo AND :hi AND id % 2 = 0;
EOF
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t" 1000
    run_sluice down base
    assert_rc 0
    assert_eq "$(sq_sum t)" "$before" "table dump after down"
}

# Every storage class (INTEGER, REAL, TEXT, BLOB, NULL), in typed and untyped columns, comes back
# byte for byte and with its own type: quote() in the dump tells 1, 1.0, '1' and X'31' apart.
make_values() {
    sq_init
    sq "create table v (id integer primary key, i integer, r real, s text, b blob, u, num numeric, flag boolean, ts datetime);
        insert into v values
          (1, null, null, null, null, null, null, null, null),
          (2, 9223372036854775807, 0.1, 'quote '' dq \" back \\ nl ' || char(10) || ' tab ' || char(9) || ' uni é 日本 🎉',
              x'00ff10', 1.5, '123abc', 1, '2024-02-29 23:59:59.123456+05:30'),
          (3, -9223372036854775808, 1e308, '', x'', 'text in untyped', 1e-300, 0, '2024-01-01'),
          (4, 0, -2.5e-7, 'NULL', x'00', x'01', 3, null, 17),
          (5, 1, 3.141592653589793, '1', x'31', 1.0, '1', 'yes', 1700000000.25),
          (6, -1, 0.30000000000000004, '  padded  ', randomblob(64), 9007199254740993, 12345678901234567890, 'no', null);
        with recursive g(k) as (select 7 union all select k + 1 from g where k < 60)
        insert into v (id, s, u) select k, 'row ' || k, case k % 4 when 0 then k when 1 then k * 1.5 when 2 then 'u' || k else cast(k as blob) end from g"
}

test_values_roundtrip() {
    make_values
    local before
    before=$(sq_sum v)
    diag "types in v: $(sq "select group_concat(t, ' ') from (select distinct typeof(i) || typeof(r) || typeof(s) || typeof(b) || typeof(u) || typeof(num) || typeof(flag) || typeof(ts) t from v)")"
    write_job 0001_scramble <<'EOF'
-- sluice:table v
-- sluice:batch 7
-- sluice:undo snapshot(i, r, s, b, u, num, flag, ts)
-- sluice:up
UPDATE v SET i = 7, r = 7.5, s = 'x', b = x'7a', u = 'z', num = 'q', flag = 2, ts = datetime('now') WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_ne "$(sq_sum v)" "$before" "up changed the table"
    run_sluice down 0001_scramble
    assert_rc 0
    assert_eq "$(sq_sum v)" "$before" "dump of every value after down"
    # And whole rows through snapshot(*) of a DELETE.
    write_job 0002_purge <<'EOF'
-- sluice:table v
-- sluice:batch 5
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM v WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up 0002_purge
    assert_rc 0
    assert_sq "select count(*) from v" 0
    run_sluice down 0002_purge
    assert_rc 0
    assert_eq "$(sq_sum v)" "$before" "dump after re-inserting whole rows"
}

# A run that failed part-way: only committed chunks are undone, and up runs the job again afterwards.
test_failed_run_then_down_then_up() {
    sq_make_users
    local before
    before=$(sq_sum t)
    # 1 / 0 is NULL in SQLite: n turns NULL at id 3100 and breaks NOT NULL in chunk 11.
    write_job 0001_fill <<'EOF'
-- sluice:table t
-- sluice:batch 300
-- sluice:undo snapshot(full_name, n)
-- sluice:up
UPDATE t SET full_name = first || ' ' || last, n = n + 1 / (id - 3100) + 1 WHERE id BETWEEN :lo AND :hi AND full_name IS NULL;
EOF
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" "NOT NULL constraint failed"
    assert_eq "$(state_of 0001_fill)" failed
    assert_ne "$(sq_sum t)" "$before" "some chunks committed before the failure"
    run_sluice down 0001_fill
    assert_rc 0
    assert_eq "$(sq_sum t)" "$before" "table dump after down of a failed run"
    sed -i 's|n + 1 / (id - 3100) + 1|n + 1|' "$JOBS/0001_fill.sql"
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where full_name is null or n <> (case when id % 7 = 0 then 0 else 1 end)" 0
    assert_eq "$(state_of 0001_fill)" "done"
}

# Another process changes rows between up and down.
other_writer_setup() {
    sq_make_users 3000
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    BEFORE=$(sq_sum t)
    run_sluice up
    assert_rc 0
    sq "update t set full_name = 'theirs' where id in (10, 2500)"
}

test_conflict_stop() {
    other_writer_setup
    local mid
    mid=$(sq_sum t)
    run_sluice down 0001_fill
    assert_rc 1
    assert_contains "$ERR" "(2500)" "conflict report"
    assert_contains "$ERR" "--on-conflict" "conflict hint"
    assert_eq "$(state_of 0001_fill)" rolling_back
    # Chunks after the conflicting one (newer ones) were rolled back; the conflicting chunk changed nothing.
    assert_sq "select full_name from t where id in (2500, 2501) order by id" $'theirs\nf2501 l2501'
    assert_sq "select count(*) from t where id > 2700 and full_name is not null and id % 7 <> 0" 0
    assert_ne "$(sq_sum t)" "$mid" "later chunks were undone"
}

test_conflict_skip() {
    other_writer_setup
    run_sluice --log-format json down 0001_fill --on-conflict skip
    assert_rc 0
    assert_sq "select id, full_name from t where full_name = 'theirs' order by id" $'10|theirs\n2500|theirs'
    # the rows put back are counted, and the two left as they are said apart (history, too)
    assert_eq "$(jq -c 'select(.event == "rolled_back") | [.rows, .rows_skipped, .rows_lost, .chunks]' <<<"$ERR")" \
        "[2998,2,0,10]" "rolled_back event"
    assert_contains "$ERR" "rolled back: 2998 rows in 10 chunks; 2 rows left as another session changed them since up (--on-conflict skip)"
    run_sluice --json history
    assert_eq "$(jq -c '[.[] | select(.kind == "down") | .rows]' <<<"$OUT")" "[2998]" "history"
    assert_sq "select count(*) from t where full_name is not null and id % 7 <> 0 and id not in (10, 2500)" 0
    assert_eq "$(state_of 0001_fill)" rolled_back
}

test_conflict_overwrite() {
    other_writer_setup
    run_sluice down 0001_fill --on-conflict overwrite
    assert_rc 0
    assert_eq "$(sq_sum t)" "$BEFORE" "table dump after overwrite"
}

test_conflict_down_section() {
    sq_make_users 2000
    job_backfill 0001_fill ""
    printf '%s\n' '-- sluice:down' 'UPDATE t SET full_name = NULL, n = n - 1 WHERE id BETWEEN :lo AND :hi AND id % 7 <> 0;' >>"$JOBS/0001_fill.sql"
    run_sluice up
    assert_rc 0
    sq "update t set n = 100 where id = 1999"
    run_sluice down 0001_fill
    assert_rc 1
    assert_contains "$ERR" "(1999)"
    assert_sq "select n from t where id = 1999" 100
    run_sluice down 0001_fill --on-conflict overwrite
    assert_rc 0
    assert_sq "select count(*) from t where full_name is not null and id % 7 <> 0" 0
}

# A row deleted by someone else after a snapshot(*) DELETE job... and a row re-inserted in its place:
# stop names it; overwrite puts the saved row back.
test_conflict_reinserted_row() {
    sq_make_users 1000
    local before
    before=$(sq_sum t)
    write_job 0001_purge <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM t WHERE id BETWEEN :lo AND :hi AND id % 2 = 0;
EOF
    run_sluice up
    assert_rc 0
    sq "insert into t (id, first, last) values (500, 'new', 'row')"
    run_sluice down 0001_purge
    assert_rc 1
    assert_contains "$ERR" "(500)" "conflict report"
    assert_sq "select first from t where id = 500" new
    run_sluice down 0001_purge --on-conflict overwrite
    assert_rc 0
    assert_eq "$(sq_sum t)" "$before" "table dump after overwrite"
}

test_refuse_no_way_back() {
    sq_make_users 100
    job_backfill 0001_fill ""
    run_sluice up
    assert_rc 0
    local sum
    sum=$(sq_sum t)
    run_sluice down 0001_fill
    assert_rc 2
    assert_contains "$ERR" "no way back"
    assert_contains "$ERR" "sluice:down"
    assert_contains "$ERR" "snapshot("
    assert_eq "$(sq_sum t)" "$sum" "table untouched"
    assert_eq "$(state_of 0001_fill)" "done"
}

test_refuse_pending_missing_and_too_far() {
    sq_make_users 100
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    job_backfill 0002_more "-- sluice:undo snapshot(full_name, n)"
    run_sluice up 0001_fill
    assert_rc 0
    local sum
    sum=$(sq_sum t)
    run_sluice down 0002_more
    assert_rc 2
    assert_contains "$ERR" "the job never ran against"
    run_sluice stamp 0002_more pending
    assert_rc 0
    run_sluice down 0002_more
    assert_rc 2
    assert_contains "$ERR" "pending"
    run_sluice down 0009_nope
    assert_rc 2
    run_sluice down -5
    assert_rc 2
    assert_contains "$ERR" "only 1 job is applied"
    run_sluice down 0001_fill --on-conflict maybe
    assert_rc 2
    assert_eq "$(sq_sum t)" "$sum" "table untouched by refusals"
    assert_eq "$(state_of 0001_fill)" "done"
}

# Checkpoints of one database, down against another (here: a copy whose sluice_progress is emptied): refused.
test_refuse_other_database() {
    sq_make_users 600
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    run_sluice up
    assert_rc 0
    sq "delete from sluice_progress"
    local sum
    sum=$(sq_sum t)
    run_sluice down base
    assert_rc 2
    assert_contains "$ERR" "another database"
    assert_eq "$(sq_sum t)" "$sum" "table untouched"
    assert_eq "$(state_of 0001_fill)" "done"
}

# Three jobs, each adding to n: -1 undoes the last, JOB undoes it and later ones, base all; downgrade is an alias.
test_targets() {
    sq_make_users 1000
    local s0 j
    s0=$(sq_sum t)
    for j in 1 2 3; do
        write_job "000${j}_add" <<EOF
-- sluice:table t
-- sluice:batch 200
-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + $j WHERE id BETWEEN :lo AND :hi;
EOF
    done
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n) from t" "6|6"
    run_sluice down -1
    assert_rc 0
    assert_sq "select min(n), max(n) from t" "3|3"
    assert_eq "$(state_of 0003_add)" rolled_back
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n) from t" "6|6"
    run_sluice downgrade 0002_add
    assert_rc 0
    assert_sq "select min(n), max(n) from t" "1|1"
    assert_eq "$(state_of 0002_add)$(state_of 0003_add)$(state_of 0001_add)" rolled_backrolled_backdone
    run_sluice down base
    assert_rc 0
    assert_eq "$(sq_sum t)" "$s0" "table dump after down base"
    run_sluice down base
    assert_rc 0
    assert_contains "$ERR" "nothing to roll back"
}

# SIGINT during down: exit 3, rolling_back, the undone rows match the chunks left; the next down finishes.
test_sigint_down() {
    sq_make_users 40000
    local before
    before=$(sq_sum t)
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:pause 2ms
-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    sluice_start down -1
    wait_until 30 sq_true "select count(*) <= 790 from sluice_progress"
    sluice_kill INT
    assert_rc 3
    assert_eq "$(state_of 0001_bump)" rolling_back
    assert_sq "select (select sum(n) from t) = (select sum(rows) from sluice_progress)" 1
    assert_sq "select count(*) from t where n not in (0, 1)" 0
    local left
    left=$(sq "select count(*) from sluice_progress")
    ((left > 0)) || fail "down finished before SIGINT: nothing left to resume"
    run_sluice down -1
    assert_rc 0
    assert_eq "$(sq_sum t)" "$before" "table dump after SIGINT during down, then down"
    assert_eq "$(state_of 0001_bump)" rolled_back
}

test_plan_says_how() {
    sq_make_users 2000
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    run_sluice plan 0001_fill
    assert_rc 0
    assert_contains "$OUT" "rollback:   snapshot(full_name, n)"
    job_backfill 0002_none ""
    run_sluice plan 0002_none
    assert_rc 0
    assert_contains "$OUT" "refuses this job"
}

# A down section SQLite cannot plan (a misspelt column): up warns, down refuses (exit 2) and changes
# nothing; fixed, down runs.
test_down_section_checked() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 300
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET nn = n - 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_bump.sql:6: this down statement cannot run against the database"
    run_sluice down 0001_bump
    assert_rc 2
    assert_contains "$ERR" "0001_bump.sql:6: this down statement cannot run against the database"
    assert_eq "$(state_of 0001_bump)" done
    assert_sq "select min(n), max(n) from t" "1|1"
    sed -i 's/SET nn = n - 1/SET n = n - 1/' "$JOBS/0001_bump.sql"
    run_sluice down 0001_bump
    assert_rc 0
    assert_sq "select min(n), max(n) from t" "0|0"
}

run_test "down section: table dump equal after up + down; up again" test_down_section
run_test "a down section SQLite cannot plan: up warns, down refuses (exit 2, nothing changed)" \
    test_down_section_checked
run_test "snapshot(full_name, n): table dump equal after up + down" test_snapshot_cols
run_test "snapshot(*) of an UPDATE job: table dump equal after up + down" test_snapshot_all_update
run_test "snapshot(*) of a DELETE job gives back the identical table" test_snapshot_all_delete
run_test "snapshot(*) of a DELETE on a composite key (WITHOUT ROWID)" test_snapshot_all_delete_composite
run_test "INTEGER, REAL, TEXT, BLOB, NULL in typed and untyped columns round-trip with their types" test_values_roundtrip
run_test "a failed run: down undoes the committed chunks; up runs it again" test_failed_run_then_down_then_up
run_test "other writer: --on-conflict stop changes nothing in that chunk, exit 1" test_conflict_stop
run_test "other writer: --on-conflict skip keeps their rows, restores the rest" test_conflict_skip
run_test "other writer: --on-conflict overwrite restores all" test_conflict_overwrite
run_test "other writer with a down section: stop, then overwrite" test_conflict_down_section
run_test "a deleted row re-inserted by someone else: stop names it, overwrite restores" test_conflict_reinserted_row
run_test "refused: a job with no way back (exit 2, nothing touched)" test_refuse_no_way_back
run_test "refused: pending job, missing checkpoint, unknown job, -N too far, bad --on-conflict" test_refuse_pending_missing_and_too_far
run_test "refused: checkpoints that belong to another database" test_refuse_other_database
run_test "down -1, downgrade JOB with later jobs, down base" test_targets
# snapshot(*) with a column added while up was stopped: each chunk is put back with the columns it
# saved (a NOT NULL DEFAULT column gets its default in the rows saved before it).
test_snapshot_all_columns_added_mid_run() {
    sq_init
    sq "create table u (id integer primary key, a text, b int)"
    sq_fill u 1000
    sq "update u set a = 'a' || id, b = id"
    write_job 0001_purge <<'EOF'
-- sluice:table u
-- sluice:batch 50
-- sluice:pause 100ms
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM u WHERE id BETWEEN :lo AND :hi AND id % 2 = 0;
EOF
    stop_up_after 0001_purge 300 sq_rows_done_at_least
    local stop
    stop=$(sq "select max(cast(json_extract(hi, '\$[0]') as int)) from sluice_progress")
    sq "alter table u add column z int not null default 7"
    sq "update u set z = id"
    run_sluice up
    assert_rc 0
    run_sluice down 0001_purge
    assert_rc 0
    assert_contains "$ERR" "saved their rows with 3 columns of the 4"
    assert_sq "select count(*), sum(z <> case when id <= $stop and id % 2 = 0 then 7 else id end),
               sum(a <> 'a' || id or b <> id) from u" "1000|0|0"
}

# snapshot(*) after columns were added (SQLite appends them): put back what the rows held; one dropped: refused.
test_snapshot_all_after_columns_changed() {
    sq_init
    sq "create table u (id integer primary key, a text, b int)"
    sq_fill u 600
    sq "update u set a = 'a' || id, b = id"
    write_job 0001_purge <<'EOF'
-- sluice:table u
-- sluice:batch 100
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM u WHERE id BETWEEN :lo AND :hi AND id % 3 = 0;
EOF
    run_sluice up
    assert_rc 0
    sq "alter table u add column c text default 'dflt'; alter table u add column g int generated always as (b * 2) virtual"
    run_sluice down 0001_purge
    assert_rc 0
    assert_contains "$ERR" 'its rows were saved with 3 columns, and "u" has 4 now'
    assert_eq "$(grep -c 'its rows were saved with' <<<"$ERR")" 1 "times down says so"
    assert_sq "select count(*), count(*) filter (where c = 'dflt'), count(*) filter (where a = 'a' || id and b = id) from u" \
        "600|600|600"
    write_job 0002_shout <<'EOF'
-- sluice:table u
-- sluice:batch 100
-- sluice:undo snapshot(*)
-- sluice:up
UPDATE u SET a = upper(a), b = -b WHERE id BETWEEN :lo AND :hi AND id % 2 = 0;
EOF
    run_sluice up 0002_shout
    assert_rc 0
    sq "alter table u add column e int default 7; update u set a = 'app' where id = 4; update u set e = 70 where id = 6"
    run_sluice down 0002_shout
    assert_rc 1
    assert_contains "$ERR" "key (4)"
    run_sluice down 0002_shout --on-conflict skip
    assert_rc 0
    assert_sq "select group_concat(id || ':' || a || ':' || b || ':' || e, ' ') from u where id between 3 and 6" \
        "3:a3:3:7 4:app:-4:7 5:a5:5:7 6:a6:6:70"
    run_sluice up 0002_shout
    assert_rc 0
    sq "alter table u drop column e"
    run_sluice down 0002_shout
    assert_rc 2
    assert_contains "$ERR" 'column "e" was dropped since up ran'
}

# snapshot(*) records name the columns they saved (SQLite's own: a literal per column). sq_people_job
# JOB UP: t of 3000 people (n = id), a snapshot(*) job JOB running UP, run. sq_people_purged ALTERS:
# that with a DELETE of every third row, then the ALTERs (one statement per line); TSUM the table after.
sq_people_job() {
    sq_init
    sq "create table t (id integer primary key, first_name text, last_name text, full_name text, n int default 0)"
    sq_fill t 3000
    sq "update t set first_name = 'f' || id, last_name = 'l' || id, full_name = 'f' || id || ' l' || id, n = id"
    write_job "$1" <<EOF
-- sluice:table t
-- sluice:batch 500
-- sluice:undo snapshot(*)
-- sluice:up
$2
EOF
    run_sluice up
    assert_rc 0
}

sq_people_purged() {
    sq_people_job 0001_purge "DELETE FROM t WHERE id BETWEEN :lo AND :hi AND id % 3 = 0;"
    sq "$1"
    TSUM=$(sq_sum t)
}

# Dropped one, added one: refused, exit 2, naming the columns; the table untouched.
test_snapshot_all_dropped_and_added() {
    sq_people_purged "alter table t drop column first_name; alter table t add column email text"
    run_sluice down 0001_purge
    assert_rc 2
    assert_contains "$ERR" 'its rows were saved from the columns ("id", "first_name", "last_name", "full_name", "n") of "t", and it has ("id", "last_name", "full_name", "n", "email") now'
    assert_contains "$ERR" 'column "first_name" was dropped since up ran'
    assert_eq "$(sq_sum t)" "$TSUM" "table after the refused down"
    assert_eq "$(state_of 0001_purge)" done "state after the refused down"
}

# Dropped one, added two; and dropped one and added it back (last): refused. The last column dropped
# and added back is where it was: put back.
test_snapshot_all_dropped_then_added() {
    sq_people_purged "alter table t drop column first_name; alter table t add column email text; alter table t add column phone text"
    run_sluice down 0001_purge
    assert_rc 2
    assert_contains "$ERR" 'column "first_name" was dropped since up ran'
    assert_eq "$(sq_sum t)" "$TSUM" "table after the refused down"
    sq "alter table t drop column email; alter table t drop column phone; alter table t add column first_name text"
    TSUM=$(sq_sum t)
    run_sluice down 0001_purge
    assert_rc 2
    assert_contains "$ERR" 'column "first_name" is not where it was when up ran'
    assert_eq "$(sq_sum t)" "$TSUM" "table after the refused down"
}

test_snapshot_all_last_column_back() {
    sq_people_purged "alter table t drop column n; alter table t add column n int default 0"
    run_sluice down 0001_purge
    assert_rc 0
    assert_sq "select count(*), sum(n = id), sum(n = 0), sum(first_name = 'f' || id and last_name = 'l' || id) from t" \
        "3000|1000|2000|3000"
}

# An UPDATE job: refused, --on-conflict overwrite too, rather than writing every value shifted.
test_snapshot_all_update_dropped_and_added() {
    sq_people_job 0001_shout "UPDATE t SET full_name = upper(full_name) WHERE id BETWEEN :lo AND :hi;"
    sq "alter table t drop column first_name; alter table t add column email text"
    local tsum
    tsum=$(sq_sum t)
    run_sluice down 0001_shout
    assert_rc 2
    assert_contains "$ERR" 'column "first_name" was dropped since up ran'
    assert_not_contains "$ERR" "changed by someone else"
    run_sluice down 0001_shout --on-conflict overwrite
    assert_rc 2
    assert_eq "$(sq_sum t)" "$tsum" "table after the refused downs"
}

run_test "SIGINT during down exits 3, rolling_back; down again finishes" test_sigint_down
run_test "plan says how the job rolls back" test_plan_says_how
run_test "snapshot(*) after columns were added or dropped" test_snapshot_all_after_columns_changed
run_test "sqlite: snapshot(*) with a column added while up was stopped: each chunk put back with its columns" \
    test_snapshot_all_columns_added_mid_run
run_test "sqlite: snapshot(*), a column dropped and one added since up: refused, the table untouched" \
    test_snapshot_all_dropped_and_added
run_test "sqlite: snapshot(*), a column dropped and two added, or added back last: refused" \
    test_snapshot_all_dropped_then_added
run_test "sqlite: snapshot(*), the last column dropped and added back: put back" test_snapshot_all_last_column_back
run_test "sqlite: snapshot(*) of an UPDATE job, a column dropped and one added: refused, overwrite too" \
    test_snapshot_all_update_dropped_and_added
t_done
