#!/usr/bin/env bash
# test_down.sh: `down` puts the data back: each undo way, exact values, other writers, refusals, -N/JOB/base.
. "$(dirname "$0")/../harness/lib.sh"

roundtrip() { # $1 = undo directive, $2 = extra sections
    make_users
    job_backfill 0001_fill "$1"
    [[ -z ${2:-} ]] || printf '%s\n' "$2" >>"$JOBS/0001_fill.sql"
    before=$(table_sum)
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where full_name is null" 0
    run_sluice down 0001_fill
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after down"
    assert_eq "$(state_of 0001_fill)" rolled_back "state after down"
    assert_sql "select count(*) from sluice_progress" 0
    run_sluice history --json
    assert_eq "$(jq -c '[.[] | select(.kind == "down") | [.outcome, .rows]]' <<<"$OUT")" '[["done",5000]]' "down runs in history"
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

# A DELETE job (archive, then purge) rolled back gives back the identical table.
test_snapshot_all_delete() {
    make_users 4000
    psql_q "alter table t add column created timestamptz default '2020-01-01 00:00:00+00'; update t set created = created + id * interval '1 hour'"
    before=$(table_sum)
    write_job 0001_purge <<'EOF'
-- sluice:table t
-- sluice:batch 250
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM t WHERE id BETWEEN :lo AND :hi AND id % 3 <> 0;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t" 1333
    run_sluice down -1
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after down"
}

# A run that failed part-way: only committed chunks are undone, and `up` can run the job again afterwards.
test_failed_run_then_down_then_up() {
    make_users
    before=$(table_sum)
    write_job 0001_fill <<'EOF'
-- sluice:table t
-- sluice:batch 300
-- sluice:undo snapshot(full_name, n)
-- sluice:up
UPDATE t SET full_name = first || ' ' || last, n = n + 1 / (id - 3100) WHERE id BETWEEN :lo AND :hi AND full_name IS NULL;
EOF
    run_sluice up
    assert_rc 1
    assert_eq "$(state_of 0001_fill)" failed
    assert_ne "$(table_sum)" "$before" "some chunks committed before the failure"
    run_sluice down 0001_fill
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after down of a failed run"
    sed -i 's|n + 1 / (id - 3100)|n + 1|' "$JOBS/0001_fill.sql"
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where full_name is null or n <> (case when id % 7 = 0 then 0 else 1 end)" 0
    assert_eq "$(state_of 0001_fill)" done
}

# Every kind of value comes back byte for byte.
test_values_roundtrip() {
    psql_q "create type mood as enum ('sad', 'ok', 'happy'); create domain posint as int check (value > 0);
            create table v (id int primary key, s text, num numeric, j jsonb, b bytea, ts timestamptz, arr text[],
                            m mood, d posint, f float8);
            insert into v values
              (1, null, null, null, null, null, null, null, null, null),
              (2, E'quote '' dq \" back \\\\ nl \n tab \t uni é 日本 🎉', 123456789012345678901234567890.123456789012345678901,
               '{\"a\": [1, 2.50, {\"b\": null}], \"c\": \"q''t\"}', '\\x00ff10', '2024-02-29 23:59:59.123456+05:30',
               array['a,b', 'c\"d', null, '{}', 'NULL'], 'happy', 42, 0.1),
              (3, '', 0, '[]', '', '-infinity', '{}', 'sad', 1, 'NaN');
            insert into v (id, s) select g, 'row ' || g from generate_series(4, 50) g"
    before=$(table_sum v)
    write_job 0001_scramble <<'EOF'
-- sluice:table v
-- sluice:batch 7
-- sluice:undo snapshot(s, num, j, b, ts, arr, m, d, f)
-- sluice:up
UPDATE v SET s = 'x', num = 1, j = '{}', b = 'zz', ts = now(), arr = '{z}', m = 'ok', d = 7, f = 2 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_ne "$(table_sum v)" "$before" "up changed the table"
    run_sluice down 0001_scramble
    assert_rc 0
    assert_eq "$(table_sum v)" "$before" "checksum of every value after down"
    # and whole rows through snapshot(*) of a DELETE
    write_job 0002_purge <<'EOF'
-- sluice:table v
-- sluice:batch 5
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM v WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up 0002_purge # a plain `up` would also run 0001 again: it is rolled back, so pending-like
    assert_rc 0
    assert_sql "select count(*) from v" 0
    run_sluice down 0002_purge
    assert_rc 0
    assert_eq "$(table_sum v)" "$before" "checksum after re-inserting whole rows"
}

# Another session changes rows between up and down.
other_writer_setup() {
    make_users 3000
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    before=$(table_sum)
    run_sluice up
    assert_rc 0
    psql_q "update t set full_name = 'theirs' where id in (10, 2500)"
}

test_conflict_stop() {
    other_writer_setup
    mid=$(table_sum)
    run_sluice down 0001_fill
    assert_rc 1
    assert_contains "$ERR" "(2500)" "conflict report"
    assert_contains "$ERR" "--on-conflict" "conflict hint"
    assert_eq "$(state_of 0001_fill)" rolling_back
    # chunks after the conflicting one (newer ones) were rolled back; the conflicting chunk changed nothing
    assert_sql "select full_name from t where id in (2500, 2501) order by id" $'theirs\nf2501 l2501'
    assert_sql "select count(*) from t where id > 2700 and full_name is not null and id % 7 <> 0" 0
    assert_ne "$(table_sum)" "$mid" "later chunks were undone"
}

test_conflict_skip() {
    other_writer_setup
    run_sluice --log-format json down 0001_fill --on-conflict skip
    assert_rc 0
    assert_sql "select id, full_name from t where full_name = 'theirs' order by id" $'10|theirs\n2500|theirs'
    # the rows put back are counted, and the two left as they are said apart (history, too)
    assert_eq "$(jq -c 'select(.event == "rolled_back") | [.rows, .rows_skipped, .rows_lost, .chunks]' <<<"$ERR")" \
        "[2998,2,0,10]" "rolled_back event"
    assert_contains "$ERR" "rolled back: 2998 rows in 10 chunks; 2 rows left as another session changed them since up (--on-conflict skip)"
    run_sluice --json history
    assert_eq "$(jq -c '[.[] | select(.kind == "down") | .rows]' <<<"$OUT")" "[2998]" "history"
    assert_sql "select count(*) from t where full_name is not null and id % 7 <> 0 and id not in (10, 2500)" 0
    assert_eq "$(state_of 0001_fill)" rolled_back
}

# old_records HASH WHERE: the undo records of sluice_undo matching WHERE rewritten as a sluice before
# format 3 recorded them: format 1, each row's hash HASH (SQL over t's row as it is now).
old_records() {
    psql_q "select id || '|' || $1 from t" >"$T_DIR/hashes"
    psql_q "select chunk_no || '|' || encode(record, 'hex') from sluice_undo where $2" >"$T_DIR/records"
    python3 - "$T_DIR/hashes" "$T_DIR/records" >"$T_DIR/rewrite.sql" <<'PY'
import sys
hashes = dict(line.rstrip("\n").split("|") for line in open(sys.argv[1]))
def varint(b, i):
    v = s = 0
    while True:
        c = b[i]; i += 1
        v |= (c & 0x7F) << s; s += 7
        if not c & 0x80:
            return v, i
for line in open(sys.argv[2]):
    no, rec = line.rstrip("\n").split("|")
    b = bytearray(bytes.fromhex(rec))
    assert b[0] in (3, 4), "a record of format %d" % b[0]
    named = b[0] == 4
    b[0] = 2 if named else 1
    nkey, i = varint(b, 1)
    nvals, i = varint(b, i)
    if named:  # snapshot(*): its columns' names, each with a generated byte
        ncols, i = varint(b, i)
        for _ in range(ncols):
            n, i = varint(b, i)
            i += n - 1 + 1
    nrows, i = varint(b, i)
    for _ in range(nrows):
        flags = b[i]; i += 1
        keys = []
        for _ in range(nkey):
            n, i = varint(b, i)
            keys.append(b[i:i + n - 1].decode()); i += n - 1
        if flags & 2:
            h = int(hashes[keys[0]]) & (2**64 - 1)
            b[i:i + 8] = h.to_bytes(8, "little"); i += 8
        for _ in range(nvals if flags & 1 else 0):
            n, i = varint(b, i)
            i += max(n - 1, 0)
    assert i == len(b)
    print("update sluice_undo set record = decode('%s', 'hex') where chunk_no = %s;" % (b.hex(), no))
PY
    psql_q <"$T_DIR/rewrite.sql"
}

# Records an older sluice wrote (one hash over the saved columns' ROW() text) beside this one's (a hash a
# column): down compares each chunk's rows as its record hashed them, finding the changes in both.
test_records_of_an_older_sluice() {
    make_users 3000
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    run_sluice up
    assert_rc 0
    assert_sql "select string_agg(distinct get_byte(record, 0)::text, ',') from sluice_undo" 3
    old_records "hashtextextended(ROW(full_name, n)::text, 0)" "chunk_no % 2 = 1"
    assert_sql "select string_agg(distinct get_byte(record, 0)::text, ',') from sluice_undo" 1,3
    # 10 is in chunk 1 (an old record), 400 in chunk 2 (a new one); down goes newest first
    psql_q "update t set full_name = 'theirs' where id in (10, 400)"
    run_sluice down 0001_fill
    assert_rc 1
    assert_contains "$ERR" "(400)" "the conflict in a new record"
    assert_not_contains "$ERR" "(10)"
    # chunks 10 to 3, old and new records, were put back without a conflict; then 2 stopped down
    assert_sql "select count(*) from t where full_name is not null and id % 7 <> 0 and id > 600" 0
    run_sluice down 0001_fill --on-conflict skip
    assert_rc 0
    assert_contains "$ERR" "rolled back: 598 rows in 2 chunks, those an earlier down left; 2 rows left as another session changed them since up"
    assert_sql "select id, full_name, n from t where n <> 0 order by id" $'10|theirs|1\n400|theirs|1'
    assert_sql "select count(*) from t where full_name is not null and id % 7 <> 0 and id not in (10, 400)" 0
}

# The same with snapshot(*), a column added since up: each chunk compares the columns its rows were
# saved with, hashed as its record hashed them.
test_snapshot_all_records_of_an_older_sluice() {
    make_users 3000
    job_backfill 0001_fill "-- sluice:undo snapshot(*)"
    run_sluice up
    assert_rc 0
    assert_sql "select string_agg(distinct get_byte(record, 0)::text, ',') from sluice_undo" 4
    old_records "hashtextextended(t::text, 0)" "chunk_no % 2 = 1"
    assert_sql "select string_agg(distinct get_byte(record, 0)::text, ',' order by get_byte(record, 0)::text) from sluice_undo" 2,4
    psql_q "alter table t add column extra int default 7"
    psql_q "update t set full_name = 'theirs' where id in (10, 400)"
    run_sluice down 0001_fill --on-conflict skip
    assert_rc 0
    assert_contains "$ERR" "rolled back: 2998 rows in 10 chunks; 2 rows left as another session changed them since up"
    assert_sql "select id, full_name, n, extra from t where n <> 0 order by id" $'10|theirs|1|7\n400|theirs|1|7'
    assert_sql "select count(*) from t where full_name is not null and id % 7 <> 0 and id not in (10, 400)" 0
}

# The same with a down section, whose hash is of the whole row: an older sluice's over the row's text.
test_down_section_records_of_an_older_sluice() {
    make_users 3000
    job_backfill 0001_fill
    printf '%s\n' "-- sluice:down" "UPDATE t SET full_name = NULL, n = n - 1 WHERE id BETWEEN :lo AND :hi AND id % 7 <> 0;" \
        >>"$JOBS/0001_fill.sql"
    before=$(table_sum)
    run_sluice up
    assert_rc 0
    assert_sql "select string_agg(distinct get_byte(record, 0)::text, ',') from sluice_undo" 3
    old_records "hashtextextended(t::text, 0)" "chunk_no % 2 = 1"
    assert_sql "select string_agg(distinct get_byte(record, 0)::text, ',') from sluice_undo" 1,3
    # 10 is in chunk 1 (an old record), 400 in chunk 2 (a new one); down goes newest first
    psql_q "update t set n = 5 where id in (10, 400)"
    run_sluice down 0001_fill
    assert_rc 1
    assert_contains "$ERR" "(400)" "the conflict in a new record"
    assert_not_contains "$ERR" "(10)"
    assert_sql "select count(*) from t where full_name is not null and id % 7 <> 0 and id > 600" 0
    # 400 as the job left it: chunk 2 goes; 10 is found in the old record
    psql_q "update t set n = 1 where id = 400"
    run_sluice down 0001_fill
    assert_rc 1
    assert_contains "$ERR" "(10)" "the conflict in an old record"
    assert_sql "select full_name is null, n from t where id = 400" "t|0"
    psql_q "update t set n = 1 where id = 10"
    run_sluice down 0001_fill
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "the table after down"
}

# scans_of_t: the scans of t so far (index and sequential), once the sessions that made them have ended
# and their counts arrived (a backend adds them to the shared statistics as it exits, which may come
# after it left pg_stat_activity): the same count twice, half a second apart.
scans_of_t() {
    local sql="select coalesce(idx_scan, 0) + seq_scan from pg_stat_user_tables where relname = 't'" a b
    wait_until 10 sql_true "select count(*) = 0 from pg_stat_activity where datname = current_database()
                            and backend_type = 'client backend' and pid <> pg_backend_pid()"
    b=$(psql_q "$sql")
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        a=$b
        sleep 0.5
        b=$(psql_q "$sql")
        [[ $a == "$b" ]] && break
    done
    echo "$b"
}

# A down section's job whose records are all an older sluice's: each chunk's rows are read once, hashed as
# its record asks, but the first chunk's (read as this sluice hashes, then again, by a statement of its
# own: two more scans in the table's counts than the same job with records of this sluice). Each chunk
# read its rows twice before: 12 more.
test_down_section_all_records_of_an_older_sluice() {
    make_users 3000
    job_backfill 0001_fill
    printf '%s\n' "-- sluice:down" "UPDATE t SET full_name = NULL, n = n - 1 WHERE id BETWEEN :lo AND :hi AND id % 7 <> 0;" \
        >>"$JOBS/0001_fill.sql"
    local before old new
    before=$(table_sum)
    # up, its records rewritten as FORMAT says (1: an older sluice's, 3: left as this one wrote them),
    # then down: the table as before, and SCANS the scans of t down made
    up_then_down() {
        run_sluice up
        assert_rc 0
        if [[ $1 == 1 ]]; then
            old_records "hashtextextended(t::text, 0)" "true"
        fi
        assert_sql "select string_agg(distinct get_byte(record, 0)::text, ',') from sluice_undo" "$1"
        local s0
        s0=$(scans_of_t)
        run_sluice down 0001_fill
        assert_rc 0
        SCANS=$(($(scans_of_t) - s0))
        assert_eq "$(table_sum)" "$before" "the table after down (records of format $1)"
    }
    up_then_down 1
    old=$SCANS
    up_then_down 3
    new=$SCANS
    diag "scans of t by down: $old (older records), $new (this sluice's), 10 chunks"
    ((old <= new + 2)) || fail "down read the rows of older records twice: $old scans, against $new"
}

# The column-wise hash tells what the row's text told: NULL from '' and from 'NULL', a change of case in a
# case-insensitive column, a value moved to the other column.
test_hash_tells_every_change() {
    psql_q "create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
    make_table 600 "a text collate ci, b text"
    psql_q "update t set a = 'x' || id, b = 'y' || id"
    write_job 0001_set <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:undo snapshot(a, b)
-- sluice:up
UPDATE t SET a = CASE WHEN id % 2 = 0 THEN NULL ELSE 'Ada' END, b = CASE WHEN id = 6 THEN 'p' ELSE NULL END
 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    psql_q "update t set a = '' where id = 2; update t set a = 'NULL' where id = 4; update t set a = 'ADA' where id = 5;
            update t set a = 'p', b = NULL where id = 6; update t set b = '' where id = 8"
    run_sluice down 0001_set --on-conflict skip
    assert_rc 0
    assert_contains "$ERR" "5 rows left as another session changed them since up"
    assert_sql "select id, coalesce(a, '-'), coalesce(b, '-') from t where id in (2, 4, 5, 6, 8) order by id" \
        $'2||-\n4|NULL|-\n5|ADA|-\n6|p|-\n8|-|'
    assert_sql "select count(*) from t where id not in (2, 4, 5, 6, 8) and (a, b) is distinct from ('x' || id, 'y' || id)" 0
}

test_conflict_overwrite() {
    other_writer_setup
    run_sluice down 0001_fill --on-conflict overwrite
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "table checksum after overwrite"
}

# Rows another session deleted after the job wrote them are conflicts too; overwrite puts back what was
# saved: snapshot(*) the whole row, snapshot(COL) nothing (it saved only that column), saying so.
test_conflict_deleted_rows() {
    psql_q "create table t (id int primary key, n int not null default 0, note text);
            insert into t (id, note) select g, 'n' || g from generate_series(1, 1000) g"
    local before
    before=$(psql_q "select md5(string_agg(t::text, ',' order by id)) from t")
    write_job 0001_cols <<'EOF'
-- sluice:table t
-- sluice:batch 300
-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    psql_q "delete from t where id in (10, 20, 700)"
    run_sluice down 0001_cols
    assert_rc 1
    assert_contains "$ERR" "(700)"
    run_sluice down 0001_cols --on-conflict overwrite
    assert_rc 0
    assert_contains "$ERR" "chunk 3: put back what was saved of 1 row another session changed or deleted since the job wrote them: (700)"
    assert_contains "$ERR" "chunk 1: 2 rows deleted by another session since the job wrote them cannot be brought back by snapshot(COL, ...), which saved only their columns"
    assert_not_contains "$ERR" "the job deleted"
    assert_sql "select count(*), sum(n) from t" "997|0"
    # chunks 3 to 1 (chunk 4 went before the conflict stopped the first down): those rows are not counted
    assert_contains "$ERR" "rolled back: 897 rows in 3 chunks, those an earlier down left; 3 rows not put back (no undo record, or deleted with only some columns saved)"
    # snapshot(*) puts the deleted rows back whole
    psql_q "insert into t (id, note) values (10, 'n10'), (20, 'n20'), (700, 'n700')"
    write_job 0002_all <<'EOF'
-- sluice:table t
-- sluice:batch 300
-- sluice:undo snapshot(*)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    rm "$JOBS/0001_cols.sql"
    run_sluice up
    assert_rc 0
    psql_q "delete from t where id in (10, 20, 700)"
    run_sluice down 0002_all --on-conflict overwrite
    assert_rc 0
    assert_not_contains "$ERR" "cannot be brought back"
    assert_sql "select md5(string_agg(t::text, ',' order by id)) from t" "$before"
}

test_conflict_down_section() {
    make_users 2000
    job_backfill 0001_fill "" 
    printf '%s\n' '-- sluice:down' 'UPDATE t SET full_name = NULL, n = n - 1 WHERE id BETWEEN :lo AND :hi AND id % 7 <> 0;' >>"$JOBS/0001_fill.sql"
    run_sluice up
    assert_rc 0
    psql_q "update t set n = 100 where id = 1999"
    run_sluice down 0001_fill
    assert_rc 1
    assert_contains "$ERR" "(1999)"
    assert_sql "select n from t where id = 1999" 100
    run_sluice down 0001_fill --on-conflict overwrite
    assert_rc 0
    assert_contains "$ERR" "ran the down section over 1 row another session changed or deleted since the job wrote them: (1999)"
    assert_not_contains "$ERR" "put back what was saved"
    assert_sql "select count(*) from t where full_name is not null and id % 7 <> 0" 0
}

# A row changed while down undoes its chunk (after down looked at it, before the restore wrote it). Up
# bumps n over one chunk of 1000 rows, with the way back given in $1 (the job file's last lines); then
# another session changes row 5 to 42 and holds it, uncommitted, for 6 s, while `down` runs: it must
# exit 1 naming the conflict, with nothing of the chunk written.
down_while_row_changes() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 1000); analyze t"
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 5000
-- sluice:lock-timeout 30s
$1
EOF
    run_sluice up
    assert_rc 0
    hold_rows 6 "update t set n = 42 where id = 5"
    run_sluice down 0001_bump
    wait "$HOLDER"
    assert_rc 1
    assert_contains "$ERR" "1 row was changed by someone else"
    assert_contains "$ERR" "key (5)"
    assert_sql "select n from t where id = 5" 42
    assert_sql "select count(*) from t where id <> 5 and n = 1" 999
    assert_eq "$(state_of 0001_bump)" rolling_back
}

# A snapshot: down takes no row locks to look, so the restore checks each row's xmin; it waits for their
# lock, finds the change, writes nothing of the chunk, looks again, and reports the conflict as if it had
# been there from the start.
test_change_while_undoing() {
    down_while_row_changes "-- sluice:undo snapshot(n)
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;"
    # skip leaves their row as they left it and puts the others back; the down that began the rollback
    # failed, so this one says it resumes it, and whose its counts are
    run_sluice down 0001_bump --on-conflict skip
    assert_rc 0
    assert_contains "$ERR" "0001_bump: resuming its rollback: 1 chunk (1000 rows) still applied, undone with"
    assert_contains "$ERR" "0001_bump: rolled back: 999 rows in 1 chunk, those an earlier down left; 1 row left as"
    assert_sql "select n from t where id = 5" 42
    assert_sql "select count(*) from t where id <> 5 and n = 0" 999
    assert_eq "$(state_of 0001_bump)" rolled_back
}

# A down section, which is the job's own SQL: down locks the chunk's rows to read them (FOR UPDATE), so
# its read waits for their lock and sees their change. (Read committed without the lock would write
# n = 41 over their 42.)
test_change_while_undoing_down_section() {
    down_while_row_changes "-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET n = n - 1 WHERE id BETWEEN :lo AND :hi;"
    run_sluice down 0001_bump --on-conflict overwrite
    assert_rc 0
    assert_sql "select n from t where id = 5" 41
    assert_sql "select count(*) from t where id <> 5 and n = 0" 999
    assert_eq "$(state_of 0001_bump)" rolled_back
}

# A down section while the application keeps writing the same rows (pgbench, 2 sessions, 1,000 writes a
# second, each to a random row): every chunk undone once, every one of their writes kept, and no chunk
# retried: down's locked read makes their writes wait for it rather than fail it. (A repeatable-read
# read without the lock, tried, was retried dozens of times under such writes.)
test_down_section_under_writers() {
    psql_q "create table t (id int primary key, n int not null default 0, m int not null default 0);
            insert into t (id) select generate_series(1, 20000); analyze t"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 500
-- sluice:workers 2
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET n = n - 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    printf '%s\n' '\set id random(1, 20000)' 'UPDATE t SET m = m + 1 WHERE id = :id;' >"$T_DIR/writer.sql"
    pgbench -n -c 2 -R 1000 -T 4 -f "$T_DIR/writer.sql" "$T_DB" >"$T_DIR/pgbench.log" 2>&1 &
    local writer=$!
    wait_until 10 sql_true "select sum(m) > 100 from t"
    run_sluice down 0001_bump --on-conflict overwrite
    assert_rc 0
    assert_sql "select count(*) from t where n <> 0" 0
    wait "$writer" || fail "pgbench failed: $(tail -n 5 "$T_DIR/pgbench.log")"
    local done_tx
    done_tx=$(awk '/actually processed/ {split($NF, a, "/"); print a[1]}' "$T_DIR/pgbench.log")
    assert_sql "select sum(m) from t" "$done_tx"
    assert_not_contains "$ERR" "retrying"
    assert_eq "$(state_of 0001_bump)" rolled_back
}

# Another session changes a row after its chunk saved it and before the chunk's up statement writes it
# (here it holds the row's lock, so the chunk's UPDATE waits, and then commits its change). A snapshot's
# chunk runs at repeatable read: its UPDATE fails (40001), the chunk is retried and saves their value, and
# down gives their value back. (Under read committed the chunk wrote over their change with a record of
# the row before it, and down silently undid their change: "orig" here. A row they insert into the range
# and commit between the chunk's read and its UPDATE is the same case, too quick to stage.)
test_snapshot_row_changed_mid_chunk() {
    make_table 300 "v text not null default 'orig'"
    row_changed_mid_chunk
}

# The same where the database's default isolation is serializable: kept (it is stronger), to the same end.
test_snapshot_row_changed_mid_chunk_serializable() {
    make_table 300 "v text not null default 'orig'"
    psql_q "alter database $T_DB set default_transaction_isolation = serializable"
    row_changed_mid_chunk
}

row_changed_mid_chunk() {
    job_tag
    # (read committed: under a serializable default a serializable writer could be the one aborted)
    hold_rows 3 "update t set v = 'theirs' where id = 150" "begin isolation level read committed"
    run_sluice up
    wait "$HOLDER"
    assert_rc 0
    assert_contains "$ERR" "chunk 2"
    assert_contains "$ERR" "40001 could not serialize access"
    assert_sql "select v, (select count(*) from t where v = 'orig+job') from t where id = 150" "theirs+job|299"
    run_sluice down 0001_tag
    assert_rc 0
    assert_not_contains "$ERR" "changed by someone else"
    assert_sql "select v, (select count(*) from t where v = 'orig') from t where id = 150" "theirs|299"
}

# A row the application keeps committing changes to (here 50 a second, to a column the job does not
# touch) fails a snapshot's repeatable-read chunk each time it meets it while the chunk runs (a slow
# statement here): retried, split down to the row, then the job fails (on-error stop), saying why and
# what helps. Nothing is changed twice.
test_snapshot_hot_row() {
    make_table 10 "v int not null default 0, w int not null default 0"
    write_job 0001_hot <<'EOF'
-- sluice:table t
-- sluice:batch 10
-- sluice:retries 1
-- sluice:undo snapshot(v)
-- sluice:up
UPDATE t SET v = v + 1 WHERE id BETWEEN :lo AND :hi AND (SELECT pg_sleep(0.3)) IS NOT NULL;
EOF
    printf '%s\n' 'UPDATE t SET w = w + 1 WHERE id = 5;' >"$T_DIR/hot.sql"
    pgbench -n -c 1 -R 50 -T 60 -f "$T_DIR/hot.sql" "$T_DB" >"$T_DIR/pgbench.log" 2>&1 &
    local writer=$!
    wait_until 10 sql_true "select w > 5 from t where id = 5"
    run_sluice up
    kill "$writer" 2>/dev/null
    wait "$writer" 2>/dev/null || true # ended by the kill
    assert_rc 1
    assert_contains "$ERR" "splitting it"
    assert_contains "$ERR" '(["5"] .. ["5"]) failed on attempt 2: '
    assert_contains "$ERR" '0001_hot.sql:6: 40001 could not serialize access'
    assert_contains "$ERR" "hint: another session kept committing changes to rows of this chunk while it ran"
    assert_sql "select count(*) from t where v not in (0, 1)" 0
    assert_sql "select v from t where id = 5" 0
}

test_refuse_no_way_back() {
    make_users 100
    job_backfill 0001_fill ""
    run_sluice up
    assert_rc 0
    sum=$(table_sum)
    run_sluice down 0001_fill
    assert_rc 2
    assert_contains "$ERR" "no way back"
    assert_contains "$ERR" "sluice:down"
    assert_contains "$ERR" "snapshot("
    assert_eq "$(table_sum)" "$sum" "table untouched"
    assert_eq "$(state_of 0001_fill)" done
}

test_refuse_pending_and_missing() {
    make_users 100
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    job_backfill 0002_more "-- sluice:undo snapshot(full_name, n)"
    run_sluice up 0001_fill
    assert_rc 0
    sum=$(table_sum)
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
    assert_eq "$(table_sum)" "$sum" "table untouched by refusals"
    assert_eq "$(state_of 0001_fill)" done
}

# Checkpoints of one database, down against another (here: its sluice_progress emptied): refused.
test_refuse_other_database() {
    make_users 600
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    run_sluice up
    assert_rc 0
    psql_q "delete from sluice_progress"
    sum=$(table_sum)
    run_sluice down base
    assert_rc 2
    assert_contains "$ERR" "another database"
    assert_eq "$(table_sum)" "$sum" "table untouched"
    assert_eq "$(state_of 0001_fill)" done
}

# Three jobs, each adding to n: -1 undoes the last, JOB undoes it and later ones, base all; downgrade is an alias.
test_targets() {
    make_users 1000
    s0=$(table_sum)
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
    assert_sql "select min(n), max(n) from t" "6|6"
    run_sluice down -1
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "3|3"
    assert_eq "$(state_of 0003_add)" rolled_back
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "6|6"
    run_sluice downgrade 0002_add
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "1|1"
    assert_eq "$(state_of 0002_add)$(state_of 0003_add)$(state_of 0001_add)" rolled_backrolled_backdone
    run_sluice down base
    assert_rc 0
    assert_eq "$(table_sum)" "$s0" "table checksum after down base"
    run_sluice down base
    assert_rc 0
    assert_contains "$ERR" "nothing to roll back"
    # a job already rolled back, named again (a script's retry): exit 0, nothing changed
    run_sluice down 0002_add
    assert_rc 0
    assert_contains "$ERR" "0002_add: already rolled back"
    assert_eq "$(table_sum)" "$s0" "table checksum after down JOB again"
    # and the jobs applied after it are still rolled back
    run_sluice up 0001_add
    assert_rc 0
    run_sluice up 0003_add
    assert_rc 0
    assert_eq "$(state_of 0001_add)$(state_of 0002_add)$(state_of 0003_add)" donerolled_backdone
    run_sluice down 0002_add
    assert_rc 0
    assert_contains "$ERR" "0002_add: already rolled back"
    assert_contains "$ERR" "0003_add: rolling back"
    assert_eq "$(state_of 0001_add)$(state_of 0002_add)$(state_of 0003_add)" donerolled_backrolled_back
}

# Straight after up its table holds the row versions up replaced: down says so (event dead_rows)
# and goes on; after a VACUUM it says nothing. Autovacuum is off on the table, so that it cannot clear
# them under the test.
test_dead_rows_advice() {
    make_users 3000
    psql_q "alter table t set (autovacuum_enabled = false)"
    local before
    before=$(table_sum)
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    run_sluice up
    assert_rc 0
    # up's sessions report their counts as they end, a moment after it exits
    wait_until 10 sql_true "select n_dead_tup >= 2500 from pg_stat_all_tables where relid = 't'::regclass"
    run_sluice --log-format json down 0001_fill
    assert_rc 0
    assert_match "$ERR" '"event":"dead_rows".*"dead":[0-9]{4},"live":[0-9]{4}'
    assert_contains "$ERR" "a VACUUM of t before a large down makes it faster"
    assert_eq "$(table_sum)" "$before"
    run_sluice up
    assert_rc 0
    psql_q "vacuum t"
    wait_until 10 sql_true "select n_dead_tup = 0 from pg_stat_all_tables where relid = 't'::regclass"
    run_sluice --log-format json down 0001_fill
    assert_rc 0
    assert_not_contains "$ERR" "dead_rows"
    assert_eq "$(table_sum)" "$before"
}

test_plan_says_how() {
    make_users 2000
    job_backfill 0001_fill "-- sluice:undo snapshot(full_name, n)"
    run_sluice plan 0001_fill
    assert_rc 0
    assert_contains "$OUT" "rollback:   snapshot(full_name, n)"
    assert_match "$OUT" "snapshots: +up to ~[0-9]+ MB"
    job_backfill 0002_none ""
    run_sluice plan 0002_none
    assert_rc 0
    assert_contains "$OUT" "refuses this job"
}

# A partitioned table (by range of a date, a default partition, the key (id, created) as its primary
# key must be), walked by 3 workers: an UPDATE with snapshot(note) and a purge with snapshot(*), each
# undone; rows go back to their partitions and the table's md5 is what it was.
test_partitioned_table() {
    psql_q "create table ev (id bigint not null, created date not null, n int not null default 0, note text,
                             primary key (id, created)) partition by range (created);
            create table ev_2025 partition of ev for values from ('2025-01-01') to ('2026-01-01');
            create table ev_2026 partition of ev for values from ('2026-01-01') to ('2027-01-01');
            create table ev_rest partition of ev default;
            insert into ev (id, created, note)
                select g, date '2025-01-01' + (g % 800)::int, 'x' || g from generate_series(1, 6000) g;
            analyze ev"
    local before parts
    before=$(psql_q "select md5(string_agg(ev::text, ',' order by id)) from ev")
    parts=$(psql_q "select string_agg(tableoid::regclass || ':' || c, ',' order by tableoid::regclass::text)
                    from (select tableoid, count(*) c from ev group by tableoid) s")
    write_job 0001_note <<'EOF'
-- sluice:table ev
-- sluice:key id, created
-- sluice:batch 400
-- sluice:workers 3
-- sluice:undo snapshot(note)
-- sluice:up
UPDATE ev SET note = upper(note) WHERE (id, created) BETWEEN :lo AND :hi;
EOF
    write_job 0002_purge <<'EOF'
-- sluice:table ev
-- sluice:key id, created
-- sluice:batch 400
-- sluice:workers 3
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM ev WHERE (id, created) BETWEEN :lo AND :hi AND id % 3 = 0;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*), count(*) filter (where note = 'X' || id) from ev" "4000|4000"
    run_sluice down base
    assert_rc 0
    assert_sql "select md5(string_agg(ev::text, ',' order by id)) from ev" "$before"
    assert_sql "select string_agg(tableoid::regclass || ':' || c, ',' order by tableoid::regclass::text)
                from (select tableoid, count(*) c from ev group by tableoid) s" "$parts"
}

# A down section the server cannot plan (a misspelt column): up says so before its first chunk (and
# runs: the way back may use what the job creates), plan shows it, and down refuses with exit 2 and
# changes nothing, where it used to fail at its first chunk and leave the job rolling_back. Fixed, down
# runs.
test_down_section_checked() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 500)"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET nn = n - 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice plan 0001_bump
    assert_rc 0
    assert_contains "$OUT" "down of this job refuses until its down section runs:"
    assert_contains "$OUT" "0001_bump.sql:6: this down statement cannot run against the database: 42703"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_bump.sql:6: this down statement cannot run against the database: 42703"
    assert_contains "$ERR" "fix it before the rollback is needed"
    assert_sql "select min(n), max(n) from t" "1|1"
    run_sluice down 0001_bump
    assert_rc 2
    assert_contains "$ERR" "0001_bump.sql:6: this down statement cannot run against the database"
    assert_eq "$(state_of 0001_bump)" done
    assert_sql "select min(n), max(n) from t" "1|1"
    assert_sql "select count(*) from sluice_progress" 5
    sed -i 's/SET nn = n - 1/SET n = n - 1/' "$JOBS/0001_bump.sql"
    run_sluice down 0001_bump
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "0|0"
    assert_eq "$(state_of 0001_bump)" rolled_back
}

# down reads a snapshot job's undo records two chunks ahead and plans each chunk while the one before it
# runs (down_ahead.c), then sends it as one batch. What happens to those rows meanwhile counts as it
# counts without reading ahead: records deleted after down read them are refused as lost records (none of
# their rows put back, each chunk still applied while its rows are), and a row changed in a chunk
# planned ahead is a conflict that leaves its chunk as it was. As a role with no privileges but its
# table's.
test_read_ahead_changed_under_it() {
    make_table 2000
    make_app_role "grant select, update on t to sl_app"
    bump_job 0001_bump 100 "-- sluice:undo snapshot(n)"
    run_sluice --db "$APP_DB" up
    assert_rc 0
    local ones="(select count(*) from t where n = 1)"
    local applied="(select count(*) from sluice_progress where job = '0001_bump')"
    job_pause 0001_bump 1s
    sluice_start --db "$APP_DB" down 0001_bump
    # resting after its second chunk, it holds the records of the next two
    wait_until 20 sql_true "select count(*) <= 18 from sluice_progress where job = '0001_bump'"
    local gone
    gone=$(psql_q "delete from sluice_undo where job = '0001_bump' and chunk_no in (select chunk_no
                   from sluice_progress where job = '0001_bump' order by chunk_no desc limit 3)
                   returning chunk_no" | sort -n | tr '\n' ' ')
    sluice_wait
    assert_rc 1
    [[ -n $gone ]] || fail "no undo record was left to delete: down ran ahead of the test"
    local named
    named=$(sed -n 's/.*0001_bump: chunk \([0-9]*\) has no undo record in sluice_undo, so down cannot put it back.*/\1/p' \
        <<<"$ERR" | head -n 1)
    [[ " $gone" == *" $named "* ]] || fail "down named chunk '$named', not one of those whose record was deleted ($gone)"
    assert_sql "select $ones = 100 * $applied" t
    assert_sql "select count(*) from sluice_progress where job = '0001_bump' and chunk_no = $named" 1
    # a row of the chunk three below the lowest lost one: down reads that chunk's record while it leaves
    # the lost ones, and plans its restore trusting the record
    local lowest=${gone%% *} nlost key
    nlost=$(wc -w <<<"$gone")
    key=$(psql_q "select lo[1]::int + 5 from sluice_progress where job = '0001_bump' and chunk_no = $((lowest - 3))")
    [[ -n $key ]] || fail "chunk $((lowest - 3)) is not applied"
    psql_q "update t set n = 42 where id = $key"
    job_pause 0001_bump off
    run_sluice --db "$APP_DB" down 0001_bump --allow-lost-undo
    assert_rc 1
    assert_contains "$ERR" "0001_bump: chunk $((lowest - 3)) "
    assert_contains "$ERR" "1 row was changed by someone else since the job wrote it: key ($key)"
    assert_sql "select count(*) from sluice_progress where job = '0001_bump' and chunk_no = $((lowest - 3))" 1
    # the lost chunks above it left as they are, the chunks below it still applied
    assert_sql "select $ones + 1 = 100 * ($applied + $nlost)" t
    run_sluice --db "$APP_DB" down 0001_bump --allow-lost-undo --on-conflict skip
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" $((100 * nlost))
    assert_sql "select n from t where id = $key" 42
    assert_sql "select count(*) from t where n = 0" $((2000 - 100 * nlost - 1))
    assert_eq "$(state_of 0001_bump)" rolled_back
}

# A down section's chunks go the same way: down reads each record ahead and sends the chunk as one batch,
# the record's check (its rows locked, each with the hash the job left) before the down section. A
# record deleted after down read it: the chunk goes as without it, the down section run unchecked (as
# for any down section chunk without a record). A row changed in a chunk planned ahead: the check fails
# before the down section writes anything, and down looks at the rows and names the conflict. As a role
# with no privileges but its table's.
test_read_ahead_down_section() {
    make_table 2000
    make_app_role "grant select, update on t to sl_app"
    bump_job --down 0001_bump 100
    run_sluice --db "$APP_DB" up
    assert_rc 0
    job_pause 0001_bump 1s
    sluice_start --db "$APP_DB" down 0001_bump
    # resting after its second chunk, it holds the records of the next two (18 and 17)
    wait_until 20 sql_true "select count(*) <= 18 from sluice_progress where job = '0001_bump'"
    local top second key
    top=$(psql_q "select max(chunk_no) from sluice_progress where job = '0001_bump'")
    second=$((top - 1))
    assert_sql "delete from sluice_undo where job = '0001_bump' and chunk_no = $top returning chunk_no" "$top"
    key=$(psql_q "select lo[1]::int + 5 from sluice_progress where job = '0001_bump' and chunk_no = $second")
    psql_q "update t set n = 42 where id = $key"
    sluice_wait
    assert_rc 1
    assert_contains "$ERR" "0001_bump: chunk $second "
    assert_contains "$ERR" "1 row was changed by someone else since the job wrote it: key ($key)"
    # the chunk without its record undone, the one with the change as it was, those below still applied
    assert_sql "select count(*) from sluice_progress where job = '0001_bump' and chunk_no >= $top" 0
    assert_sql "select count(*) from sluice_progress where job = '0001_bump' and chunk_no = $second" 1
    assert_sql "select count(*) from t where n = 0" $((2000 - 100 * second))
    assert_sql "select n from t where id = $key" 42
    assert_sql "select count(*) from t where n = 1" $((100 * second - 1))
    job_pause 0001_bump off
    run_sluice --db "$APP_DB" down 0001_bump --on-conflict overwrite
    assert_rc 0
    assert_sql "select n from t where id = $key" 41
    assert_sql "select count(*) from t where n = 0" 1999
    assert_eq "$(state_of 0001_bump)" rolled_back
}

# A down section over a composite text key whose values need quoting in an array (a quote, a double
# quote, a backslash, the empty string, mixed case): the record's check on the server finds each row by
# its key, a changed row stops down at its chunk (the chunks after it undone), and once it is put back
# as the job left it down finishes with the table as it was.
test_down_section_composite_key() {
    psql_q "create table tc (region text, code text, n int not null default 0, primary key (region, code));
            insert into tc (region, code)
              select r, md5(r || i) from unnest(array['eu-west', 'it''s', '', 'Zulu', 'a\"b', 'c\\d']) r,
                                         generate_series(1, 250) i;
            analyze tc"
    local before chunks
    before=$(psql_q "select md5(string_agg(tc::text, ',' order by region, code)) from tc")
    write_job 0001_kind <<'EOF'
-- sluice:table tc
-- sluice:key region, code
-- sluice:batch 100
-- sluice:up
UPDATE tc SET n = n + 1 WHERE (region, code) BETWEEN :lo AND :hi;
-- sluice:down
UPDATE tc SET n = n - 1 WHERE (region, code) BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    chunks=$(psql_q "select count(*) from sluice_progress where job = '0001_kind'")
    assert_sql "select count(*) from tc where region in ('a\"b', 'c\\d') and n = 1" 500
    psql_q "update tc set n = 7 where (region, code) = (select lo[1], lo[2] from sluice_progress
                                                          where job = '0001_kind' order by chunk_no desc offset 2 limit 1)"
    run_sluice down 0001_kind
    assert_rc 1
    assert_contains "$ERR" "1 row was changed by someone else since the job wrote it"
    assert_sql "select count(*) from sluice_progress where job = '0001_kind'" $((chunks - 2))
    assert_sql "select count(*) from tc where n = 0" 200
    psql_q "update tc set n = 1 where n = 7"
    run_sluice down 0001_kind
    assert_rc 0
    assert_sql "select md5(string_agg(tc::text, ',' order by region, code)) from tc" "$before"
    assert_eq "$(state_of 0001_kind)" rolled_back
}

run_test "down section: table checksum equal after up + down" test_down_section
run_test "snapshot(full_name, n): table checksum equal after up + down" test_snapshot_cols
run_test "snapshot(*) of an UPDATE job: table checksum equal after up + down" test_snapshot_all_update
run_test "snapshot(*) of a DELETE job gives back the identical table" test_snapshot_all_delete
run_test "a failed run: down undoes the committed chunks; up runs it again" test_failed_run_then_down_then_up
run_test "NULL, quotes, unicode, numeric, jsonb, bytea, timestamptz, arrays, enum, domain round-trip" test_values_roundtrip
run_test "other writer: --on-conflict stop changes nothing in that chunk, exit 1" test_conflict_stop
run_test "other writer: --on-conflict skip keeps their rows, restores the rest" test_conflict_skip
run_test "other writer: --on-conflict overwrite restores all" test_conflict_overwrite
run_test "undo records of an older sluice beside this one's: down tells the changes in both" \
    test_records_of_an_older_sluice
run_test "snapshot(*) records of an older sluice beside this one's, a column added since: down tells the changes in both" \
    test_snapshot_all_records_of_an_older_sluice
run_test "a down section's records of an older sluice beside this one's: down tells the changes in both" \
    test_down_section_records_of_an_older_sluice
run_test "a down section's records all of an older sluice: each chunk's rows read once" \
    test_down_section_all_records_of_an_older_sluice
run_test "the column-wise hash tells every change: NULL and '', case, a value between columns" \
    test_hash_tells_every_change
run_test "rows another session deleted: conflicts; overwrite puts back what snapshot saved, and says what it cannot" \
    test_conflict_deleted_rows
run_test "other writer with a down section: stop, then overwrite" test_conflict_down_section
run_test "a row changed while its chunk is undone: nothing of the chunk written, then the conflict" test_change_while_undoing
run_test "a row changed while a down section's chunk is undone: down waits for it, then names the conflict" test_change_while_undoing_down_section
run_test "a down section while the application writes the same rows: once, their writes kept, no retry" test_down_section_under_writers
run_test "a row another session changes while its up chunk runs: the chunk retried, down gives back their value" \
    test_snapshot_row_changed_mid_chunk
run_test "the same under a serializable default" test_snapshot_row_changed_mid_chunk_serializable
run_test "a row the application keeps changing fails a snapshot's chunks: split to the row, then exit 1 saying why" \
    test_snapshot_hot_row
run_test "refused: a job with no way back (exit 2, nothing touched)" test_refuse_no_way_back
# An undo snapshot puts back rows of the walked table only: up refuses, before its first chunk, a statement
# whose writes down could not undo (another table updated, rows a foreign key deletes or nulls with them),
# and plan says so; an insert elsewhere is a warning.
test_snapshot_scope() {
    psql_q "create table parent (id int primary key, v text);
            create table child (id serial primary key, pid int references parent on delete cascade, w text);
            create table node (id int primary key, up int references node on delete set null);
            create table kept (id int primary key, pid int references parent on delete restrict);
            create table log (pid int, at timestamptz default now());
            insert into parent select g, 'p' || g from generate_series(1, 400) g;
            insert into child (pid, w) select g, 'c' || g from generate_series(1, 400) g;
            insert into node select g, nullif(g - 1, 0) from generate_series(1, 100) g"
    write_job 0001_purge <<'EOF'
-- sluice:table parent
-- sluice:batch 100
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM parent WHERE id BETWEEN :lo AND :hi AND id % 2 = 0;
EOF
    run_sluice plan 0001_purge
    assert_rc 2
    assert_contains "$ERR" "plan 0001_purge: up refuses this job: 1 reason above"
    assert_contains "$OUT" "warning:    up refuses this job: "
    assert_contains "$OUT" "the foreign key child_pid_fkey of child (ON DELETE CASCADE) deletes the rows of child"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_purge.sql:5: up statement 1 deletes from parent, and the foreign key child_pid_fkey"
    assert_contains "$ERR" "undo snapshot(*) saves rows of parent only, so down could not put them back"
    assert_sql "select (select count(*) from parent), (select count(*) from child)" "400|400"
    assert_sql "select to_regclass('sluice_progress') is null" t # refused before sluice made anything
    # a key that only refuses (RESTRICT) loses nothing: with the cascade gone the purge runs and comes back
    psql_q "alter table child drop constraint child_pid_fkey"
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from parent" 200
    run_sluice down 0001_purge
    assert_rc 0
    assert_sql "select count(*) from parent" 400
    rm "$JOBS/0001_purge.sql"

    # a row of the same table, outside the chunk, nulled by the delete
    write_job 0002_prune <<'EOF'
-- sluice:table node
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM node WHERE id BETWEEN :lo AND :hi AND id > 50;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "the foreign key node_up_fkey of node (ON DELETE SET NULL) sets to NULL the reference in"
    rm "$JOBS/0002_prune.sql"

    # another table updated (in a CTE) is refused; an insert elsewhere is a warning, and down leaves it
    write_job 0003_mark <<'EOF'
-- sluice:table parent
-- sluice:batch 100
-- sluice:undo snapshot(v)
-- sluice:up
UPDATE parent SET v = 'x' WHERE id BETWEEN :lo AND :hi;
INSERT INTO log (pid) SELECT id FROM parent WHERE id BETWEEN :lo AND :hi;
WITH c AS (UPDATE child SET w = 'y' WHERE pid BETWEEN :lo AND :hi RETURNING 1) SELECT count(*) FROM c;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0003_mark.sql:7: up statement 3 updates child, but undo snapshot(v) saves rows of parent only"
    assert_sql "select count(*) from parent where v = 'x'" 0
    sed -i '/^WITH c AS/d' "$JOBS/0003_mark.sql"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "up statement 2 inserts into log: down leaves those rows (undo snapshot(v) puts back rows of parent only)"
    run_sluice down 0003_mark
    assert_rc 0
    assert_sql "select (select count(*) from parent where v = 'x'), (select count(*) from log)" "0|400"
    rm "$JOBS/0003_mark.sql"

    # a delete of the walked table under snapshot(COL): refused (down could put no deleted row back)
    write_job 0004_trim <<'EOF'
-- sluice:table parent
-- sluice:batch 100
-- sluice:undo snapshot(v)
-- sluice:up
DELETE FROM parent WHERE id BETWEEN :lo AND :hi AND id % 2 = 0;
EOF
    run_sluice plan 0004_trim
    assert_rc 2
    assert_contains "$OUT" "up statement 1 deletes from parent, but undo snapshot(v) saves only those columns of parent"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0004_trim.sql:5: up statement 1 deletes from parent, but undo snapshot(v) saves only those columns of parent: down could not put the deleted rows back"
    assert_contains "$ERR" "hint: save whole rows: -- sluice:undo snapshot(*)"
    assert_sql "select count(*) from parent" 400
    rm "$JOBS/0004_trim.sql"

    # an insert into the walked table: warned; down deletes what it inserted inside a chunk's range and
    # leaves what it inserted outside it
    write_job 0005_copy <<'EOF'
-- sluice:table parent
-- sluice:batch 100
-- sluice:undo snapshot(*)
-- sluice:up
INSERT INTO parent SELECT id + 100000, v FROM parent WHERE id BETWEEN :lo AND :hi AND id % 100 = 0;
INSERT INTO parent SELECT id + 1, 'new' FROM parent WHERE id BETWEEN :lo AND :hi AND id % 100 = 50 AND id < 400;
EOF
    run_sluice plan 0005_copy
    assert_contains "$OUT" "up statement 1 inserts into parent: down deletes the rows it inserts with a key inside the chunk's :lo .. :hi, and leaves any it inserts outside it"
    psql_q "delete from parent where id % 100 = 51"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0005_copy.sql:5: up statement 1 inserts into parent: down deletes the rows it inserts with a key inside"
    assert_sql "select count(*) from parent" 404
    run_sluice down 0005_copy
    assert_rc 0
    assert_sql "select count(*), count(*) filter (where id > 100000), count(*) filter (where v = 'new') from parent" "400|4|0"
}

# A job that already ran chunks when its writes became ones the snapshot cannot undo (a cascade added since,
# or a run by an older sluice) is warned and resumes: its undo may not change now.
test_snapshot_scope_on_resume() {
    psql_q "create table parent (id int primary key, v text);
            create table child (id serial primary key, pid int, w text);
            insert into parent select g, 'p' || g from generate_series(1, 3000) g"
    write_job 0001_purge <<'EOF'
-- sluice:table parent
-- sluice:batch 100
-- sluice:pause 50ms
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM parent WHERE id BETWEEN :lo AND :hi AND id % 2 = 0;
EOF
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 1 from sluice_progress"
    sluice_kill INT
    psql_q "alter table child add foreign key (pid) references parent on delete cascade"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "warning: $JOBS/0001_purge.sql:6: up statement 1 deletes from parent, and the foreign key"
    assert_sql "select count(*) from parent" 1500
}

# snapshot(*) with columns added while up ran (stopped, a migration, resumed): each chunk is put back
# with the columns it saved. Rows saved before the column came get its default (a NOT NULL column
# too); rows saved after it get their own values back; rows down updates keep the added column's
# values; the older chunks' hashes still match.
test_snapshot_all_columns_added_mid_run() {
    psql_q "create table u (id int primary key, a text, b int);
            insert into u select g, 'a' || g, g from generate_series(1, 1000) g"
    local before
    before=$(psql_q "select md5(string_agg((id, a, b)::text, ',' order by id)) from u")
    write_job 0001_purge <<'EOF'
-- sluice:table u
-- sluice:batch 50
-- sluice:pause 100ms
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM u WHERE id BETWEEN :lo AND :hi AND id % 2 = 0;
EOF
    stop_up_after 0001_purge 300
    local stop
    stop=$(psql_q "select max(hi[1]::int) from sluice_progress where job = '0001_purge'")
    psql_q "alter table u add column z int not null default 7; update u set z = id"
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from u" 500
    job_pause 0001_purge off # down goes at full speed (it warns)
    run_sluice down 0001_purge
    assert_rc 0
    assert_contains "$ERR" "saved their rows with 3 columns of the 4 u has now"
    assert_sql "select count(*), count(*) filter (where z <> case when id <= $stop and id % 2 = 0 then 7 else id end) from u" \
        "1000|0"
    assert_sql "select md5(string_agg((id, a, b)::text, ',' order by id)) from u" "$before"

    # an UPDATE job: rows down updates keep the added column's values, in the older chunks as in the newer
    write_job 0002_shout <<'EOF'
-- sluice:table u
-- sluice:batch 50
-- sluice:pause 100ms
-- sluice:undo snapshot(*)
-- sluice:up
UPDATE u SET a = upper(a) WHERE id BETWEEN :lo AND :hi;
EOF
    stop_up_after 0002_shout 300
    psql_q "alter table u add column y int default 1; update u set y = id + 1"
    run_sluice up 0002_shout
    assert_rc 0
    job_pause 0002_shout off # down goes at full speed (it warns)
    run_sluice down 0002_shout
    assert_rc 0
    assert_not_contains "$ERR" "changed by someone else"
    assert_sql "select count(*) filter (where a = 'a' || id), count(*) filter (where y = id + 1) from u" "1000|1000"

    # a column dropped while up ran: the oldest chunks hold a value for it, which fits no column now:
    # refused before a row is touched, whichever chunk comes first
    write_job 0003_thin <<'EOF'
-- sluice:table u
-- sluice:batch 50
-- sluice:pause 100ms
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM u WHERE id BETWEEN :lo AND :hi AND id % 5 = 0;
EOF
    stop_up_after 0003_thin 300
    psql_q "alter table u drop column y"
    run_sluice up 0003_thin
    assert_rc 0
    local thin
    thin=$(psql_q "select count(*) || md5(string_agg(u::text, ',' order by id)) from u")
    job_pause 0003_thin off # down goes at full speed (it warns)
    run_sluice down 0003_thin
    assert_rc 2
    assert_contains "$ERR" "column y was dropped since up ran"
    assert_sql "select count(*) || md5(string_agg(u::text, ',' order by id)) from u" "$thin"
}

# snapshot(*) saves whole rows as the table had them: a column added between up and down (a schema
# migration meanwhile) keeps its default in rows put back by INSERT and its values in rows put back by
# UPDATE; a row changed since is still a conflict; a column dropped since is refused, saying why.
test_snapshot_all_after_columns_changed() {
    psql_q "create table u (id int primary key, a text, b int);
            insert into u select g, 'a' || g, g from generate_series(1, 600) g"
    local before
    before=$(psql_q "select md5(string_agg((id, a, b)::text, ',' order by id)) from u")
    write_job 0001_purge <<'EOF'
-- sluice:table u
-- sluice:batch 100
-- sluice:undo snapshot(*)
-- sluice:up
DELETE FROM u WHERE id BETWEEN :lo AND :hi AND id % 3 = 0;
EOF
    run_sluice up
    assert_rc 0
    psql_q "alter table u add column c text default 'dflt', add column g int generated always as (b * 2) stored"
    run_sluice down 0001_purge
    assert_rc 0
    assert_contains "$ERR" "its rows were saved with 3 columns, and u has 5 now: down puts back those 3"
    assert_eq "$(grep -c 'its rows were saved with' <<<"$ERR")" 1 "times down says so"
    assert_sql "select count(*), count(*) filter (where c = 'dflt'), count(*) filter (where g = b * 2) from u" \
        "600|600|600"
    assert_sql "select md5(string_agg((id, a, b)::text, ',' order by id)) from u" "$before"

    write_job 0002_shout <<'EOF'
-- sluice:table u
-- sluice:batch 100
-- sluice:undo snapshot(*)
-- sluice:up
UPDATE u SET a = upper(a), b = -b WHERE id BETWEEN :lo AND :hi AND id % 2 = 0;
EOF
    run_sluice up 0002_shout
    assert_rc 0
    psql_q "alter table u add column e int default 7; update u set a = 'app' where id = 4; update u set e = 70 where id = 6"
    run_sluice down 0002_shout
    assert_rc 1
    assert_contains "$ERR" "1 row was changed by someone else since the job wrote it: key (4)"
    run_sluice down 0002_shout --on-conflict skip
    assert_rc 0
    assert_sql "select string_agg(id || ':' || a || ':' || b || ':' || c || ':' || e, ' ' order by id) from u where id between 3 and 6" \
        "3:a3:3:dflt:7 4:app:-4:dflt:7 5:a5:5:dflt:7 6:a6:6:dflt:70"
    assert_sql "select count(*) from u where a <> 'a' || id or b <> id" 1

    # a column dropped since up: refused before a row is touched
    run_sluice up 0002_shout
    assert_rc 0
    psql_q "alter table u drop column e"
    run_sluice down 0002_shout
    assert_rc 2
    assert_contains "$ERR" "its rows were saved from the columns (id, a, b, c, g, e) of u, and it has (id, a, b, c, g) now"
    assert_contains "$ERR" "column e was dropped since up ran"
    assert_sql "select count(*) from u where b < 0" 299
}

# snapshot(*) records name the columns they saved. people_job JOB UP: t of 3000 people (n = id, so
# that a value in the wrong column shows), and a snapshot(*) job JOB running UP, run. people_purged
# ALTERS: that with a DELETE of every third row, then the ALTERs; TSUM is the table as down finds it.
people_job() {
    psql_q "create table t (id int primary key, first_name text, last_name text, full_name text, n int default 0);
            insert into t select g, 'f' || g, 'l' || g, 'f' || g || ' l' || g, g from generate_series(1, 3000) g"
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

people_purged() {
    people_job 0001_purge "DELETE FROM t WHERE id BETWEEN :lo AND :hi AND id % 3 = 0;"
    psql_q "$1"
    TSUM=$(table_sum)
}

# A column dropped and another added since up: the saved values would land one column to the left
# (last_name = 'f3'). Refused, exit 2, naming the columns; the table untouched.
test_snapshot_all_dropped_and_added() {
    people_purged "alter table t drop column first_name; alter table t add column email text"
    run_sluice down 0001_purge
    assert_rc 2
    assert_contains "$ERR" "0001_purge: its rows were saved from the columns (id, first_name, last_name, full_name, n) of t, and it has (id, last_name, full_name, n, email) now"
    assert_contains "$ERR" "column first_name was dropped since up ran"
    assert_contains "$ERR" "hint: add first_name back where it was"
    assert_eq "$(table_sum)" "$TSUM" "table after the refused down"
    assert_eq "$(state_of 0001_purge)" done "state after the refused down"
}

# Dropped one, added two: the count passes for "columns added since", the names do not.
test_snapshot_all_dropped_one_added_two() {
    people_purged "alter table t drop column first_name; alter table t add column email text, add column phone text"
    run_sluice down 0001_purge
    assert_rc 2
    assert_contains "$ERR" "and it has (id, last_name, full_name, n, email, phone) now"
    assert_contains "$ERR" "column first_name was dropped since up ran"
    assert_eq "$(table_sum)" "$TSUM" "table after the refused down"
}

# Dropped and added back: ADD COLUMN puts it last, not where it was. Refused.
test_snapshot_all_dropped_and_added_back() {
    people_purged "alter table t drop column first_name; alter table t add column first_name text"
    run_sluice down 0001_purge
    assert_rc 2
    assert_contains "$ERR" "and it has (id, last_name, full_name, n, first_name) now"
    assert_contains "$ERR" "column first_name is not where it was when up ran"
    assert_contains "$ERR" "hint: a column cannot be moved back into place with ALTER TABLE"
    assert_eq "$(table_sum)" "$TSUM" "table after the refused down"
}

# The last column dropped and added back is where it was: down puts the rows back, n and all.
test_snapshot_all_last_column_back() {
    people_purged "alter table t drop column n; alter table t add column n int default 0"
    run_sluice down 0001_purge
    assert_rc 0
    assert_sql "select count(*), count(*) filter (where n = id), count(*) filter (where n = 0),
                count(*) filter (where first_name = 'f' || id and last_name = 'l' || id) from t" "3000|1000|2000|3000"
}

# An UPDATE job: the rows' hashes would not match (every row "changed by someone else") and
# overwrite would write every value shifted. Refused either way.
test_snapshot_all_update_dropped_and_added() {
    people_job 0001_shout "UPDATE t SET full_name = upper(full_name) WHERE id BETWEEN :lo AND :hi;"
    psql_q "alter table t drop column first_name; alter table t add column email text"
    local tsum
    tsum=$(table_sum)
    run_sluice down 0001_shout
    assert_rc 2
    assert_contains "$ERR" "column first_name was dropped since up ran"
    assert_not_contains "$ERR" "changed by someone else"
    run_sluice down 0001_shout --on-conflict overwrite
    assert_rc 2
    assert_contains "$ERR" "column first_name was dropped since up ran"
    assert_eq "$(table_sum)" "$tsum" "table after the refused downs"
    assert_sql "select count(*) from t where full_name = upper('f' || id || ' l' || id)" 3000
}

run_test "refused: pending job, missing checkpoint, unknown job, -N too far, bad --on-conflict" test_refuse_pending_and_missing
run_test "refused: checkpoints that belong to another database" test_refuse_other_database
run_test "down -1, downgrade JOB with later jobs, down base" test_targets
run_test "a partitioned table with workers: snapshot(note) and snapshot(*) purge, both undone" test_partitioned_table
run_test "a down section the server cannot plan: up and plan warn, down refuses (exit 2, nothing changed)" \
    test_down_section_checked
run_test "plan says how the job rolls back and the snapshot space" test_plan_says_how
run_test "down straight after up says the table's dead row versions slow it; after a VACUUM it does not" \
    test_dead_rows_advice
run_test "undo snapshot: writes down could not undo are refused before the first chunk, and shown by plan" \
    test_snapshot_scope
run_test "undo snapshot: such writes found on resume are a warning" test_snapshot_scope_on_resume
run_test "snapshot(*) after columns were added (their defaults and values kept) or dropped (refused)" \
    test_snapshot_all_after_columns_changed
run_test "snapshot(*) with columns added while up ran: each chunk put back with the columns it saved" \
    test_snapshot_all_columns_added_mid_run
run_test "snapshot(*): a column dropped and one added since up: refused, the table untouched" \
    test_snapshot_all_dropped_and_added
run_test "snapshot(*): a column dropped and two added since up: refused" test_snapshot_all_dropped_one_added_two
run_test "snapshot(*): a column dropped and added back (last) since up: refused" \
    test_snapshot_all_dropped_and_added_back
run_test "snapshot(*): the last column dropped and added back since up: put back" test_snapshot_all_last_column_back
run_test "snapshot(*) of an UPDATE job, a column dropped and one added since up: refused, overwrite too" \
    test_snapshot_all_update_dropped_and_added
run_test "records read ahead: deleted meanwhile, lost records; a row changed meanwhile, a conflict" \
    test_read_ahead_changed_under_it
run_test "a down section's records read ahead: deleted meanwhile, run unchecked; a row changed meanwhile, a conflict" \
    test_read_ahead_down_section
run_test "a down section over a composite text key needing quotes: checked on the server, a conflict named" \
    test_down_section_composite_key
t_done
