#!/usr/bin/env bash
# test_up.sh: `up` over every key kind, with where, several statements, requires, pause, max-rate, resume.
. "$(dirname "$0")/../harness/lib.sh"

# assert_chunks JOB ROWS CHUNKS: status and sluice_progress agree on what ran.
assert_chunks() {
    assert_status "$1" rows "$2"
    assert_status "$1" chunks "$3"
    assert_sql "select count(*), coalesce(sum(rows), 0) from sluice_progress where job = '$1'" "$3|$2"
    # Chunk numbers are 1..N without gaps.
    assert_sql "select count(distinct chunk_no), coalesce(min(chunk_no), 1), coalesce(max(chunk_no), 0)
                from sluice_progress where job = '$1'" "$3|1|$3"
}

# assert_no_progress: no chunk recorded in the database (the bookkeeping table may not even exist).
assert_no_progress() {
    if sql_true "select to_regclass('sluice_progress') is not null"; then
        assert_sql "select count(*) from sluice_progress" 0
    fi
}

test_bigint_key() {
    psql_q "create table t (id bigint primary key, n int not null default 0);
            insert into t (id) select g * 7 from generate_series(1, 1003) g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:key id
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 1003
    assert_sql "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 1003 11
    assert_status 0001_bump state "done"
    assert_status 0001_bump last_key '["7021"]'
    # The chunks are contiguous in key order and cover the table.
    assert_sql "select lo, hi, rows from sluice_progress where chunk_no in (1, 11) order by chunk_no" \
        "{7}|{700}|100"$'\n'"{7007}|{7021}|3"
}

test_composite_key() {
    psql_q "create table t (tenant_id int, id int, n int not null default 0, primary key (tenant_id, id));
            insert into t (tenant_id, id) select t, i from generate_series(1, 7) t, generate_series(1, 143) i"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:key tenant_id, id
-- sluice:batch 97
-- sluice:up
UPDATE t SET n = n + 1 WHERE (tenant_id, id) BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 1001
    assert_sql "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 1001 11
    assert_status 0001_bump last_key '["7", "143"]'
    # Chunks follow the composite order: the second one crosses from tenant 1 into tenant 2.
    assert_sql "select lo, hi from sluice_progress where chunk_no = 1" "{1,1}|{1,97}"
    assert_sql "select lo, hi from sluice_progress where chunk_no = 2" "{1,98}|{2,51}"
}

test_text_key() {
    # md5 strings: no order that follows insertion, and mixed digits and letters.
    psql_q "create table t (code text primary key, n int not null default 0);
            insert into t (code) select md5(g::text) from generate_series(1, 1234) g;
            insert into t (code) values ('it''s'), ('a b'), ('Zeta'), ('zeta'), ('')"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 150
-- sluice:up
UPDATE t SET n = n + 1 WHERE code BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 1239
    assert_sql "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 1239 9
}

test_uuid_key() {
    psql_q "create table t (id uuid primary key default gen_random_uuid(), n int not null default 0);
            insert into t (n) select 0 from generate_series(1, 1111)"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 200
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 1111
    assert_sql "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 1111 6
    local last
    last=$(psql_q "select '[\"' || max(id::text) || '\"]' from t")
    assert_status 0001_bump last_key "$last"
}

test_timestamptz_key() {
    # Microsecond parts: a key that loses precision on its way through text would skip or repeat rows.
    psql_q "create table t (at timestamptz not null, n int not null default 0);
            create unique index t_at on t (at);
            insert into t (at) select timestamptz '2024-03-31 00:59:58.123456+00' + g * interval '0.777777 s'
              from generate_series(1, 1000) g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:key at
-- sluice:batch 300
-- sluice:up
UPDATE t SET n = n + 1 WHERE at BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 1000
    assert_sql "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 1000 4
}

test_where_limits_chunks() {
    psql_q "create table t (id int primary key, kind text not null, n int not null default 0);
            insert into t (id, kind) select g, case when g % 10 = 0 then 'x' else 'y' end
              from generate_series(1, 1000) g"
    write_job 0001_only_x <<'EOF'
-- sluice:table t
-- sluice:where kind = 'x'
-- sluice:batch 30
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi AND kind = 'x';
EOF
    run_sluice up
    assert_rc 0
    # 100 matching rows in chunks of 30 (without the where it would be 1000 rows in 34 chunks).
    assert_chunks 0001_only_x 100 4
    assert_sql "select lo, hi, rows from sluice_progress where chunk_no = 1" "{10}|{300}|30"
    assert_sql "select lo, hi, rows from sluice_progress where chunk_no = 4" "{910}|{1000}|10"
    assert_sql "select count(*) from t where kind = 'x' and n = 1" 100
    assert_sql "select count(*) from t where kind = 'y' and n = 0" 900
}

test_where_matching_nothing() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 100) g"
    write_job 0001_none <<'EOF'
-- sluice:table t
-- sluice:where n > 1000
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi AND n > 1000;
EOF
    run_sluice up
    assert_rc 0
    assert_status 0001_none state "done"
    assert_chunks 0001_none 0 0
    assert_status 0001_none last_key null
    assert_sql "select count(*) from t where n <> 0" 0
}

test_quoted_names_casts_and_quotes() {
    # A schema-qualified mixed-case table and key; :lo/:hi next to casts, and look-alikes in quotes
    # and comments that must stay as written.
    psql_q 'create schema app; create table app."Orders" ("Id" bigint primary key, n int not null default 0, note text);
            insert into app."Orders" ("Id") select g from generate_series(1, 250) g'
    write_job 0001_quoted <<'EOF'
-- sluice:table app."Orders"
-- sluice:key "Id"
-- sluice:batch 100
-- sluice:up
UPDATE app."Orders"
   SET n = n + 1,
       note = ':lo' || $$ :hi $$ || $tag$:lo$tag$ /* :hi */ || E'\':hi'
 WHERE "Id"::numeric BETWEEN :lo::numeric AND :hi; -- and :lo here
EOF
    run_sluice up
    assert_rc 0
    assert_sql 'select min(n), max(n), count(*) from app."Orders"' "1|1|250"
    assert_sql 'select distinct note from app."Orders"' ":lo :hi :lo':hi"
    assert_chunks 0001_quoted 250 3
}

test_checkpoint_file_lost() {
    # Exactly once even when the checkpoint file is gone: sluice_progress in the database knows what committed.
    psql_q "create table t (id int primary key, n int not null default 0, d int not null default 1);
            insert into t (id) select g from generate_series(1, 300) g; update t set d = 0 where id = 150"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 / d WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 1
    assert_sql "select count(*) from t where n = 1" 100
    psql_q "update t set d = 1"
    rm -f "$CKPT"/0001_bump.sluice*
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|300"
    assert_chunks 0001_bump 300 3
}

test_several_statements() {
    psql_q "create table t (id int primary key, n int not null default 0);
            create table audit (chunk_lo int, chunk_hi int, touched int);
            insert into t (id) select g from generate_series(1, 950) g"
    write_job 0001_with_audit <<'EOF'
-- sluice:table t
-- sluice:batch 200
-- sluice:up
-- a comment with :lo and ; in it must not split or bind anything
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
INSERT INTO audit
SELECT :lo, :hi, count(*) FROM t WHERE id BETWEEN :lo AND :hi AND n = 1;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 950
    assert_sql "select count(*) from t where n <> 1" 0
    assert_chunks 0001_with_audit 950 5
    # One audit row per chunk, written after that chunk's UPDATE in the same transaction.
    assert_sql "select count(*), sum(touched) from audit" "5|950"
    assert_sql "select chunk_lo, chunk_hi, touched from audit order by chunk_lo limit 1" "1|200|200"
    assert_sql "select chunk_lo, chunk_hi, touched from audit order by chunk_lo desc limit 1" "801|950|150"
}

# synchronous-commit: off (the default) makes each chunk's COMMIT, up's and down's, not wait for the
# disk, in the chunk's transaction only; on leaves the server's own setting (here a session's, through
# PGOPTIONS) to the chunks.
test_synchronous_commit() {
    psql_q "create table t (id int primary key, sc text, back text);
            insert into t (id) select g from generate_series(1, 300) g"
    write_job 0001_fast <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET sc = current_setting('synchronous_commit') WHERE id BETWEEN :lo AND :hi;
-- sluice:down
UPDATE t SET sc = NULL, back = current_setting('synchronous_commit') WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice plan 0001_fast
    assert_rc 0
    assert_contains "$OUT" "commits:    each chunk's without waiting for the disk (synchronous-commit off, the default); the job's state waits"
    PGOPTIONS="-c synchronous_commit=local" run_sluice up
    assert_rc 0
    assert_sql "select sc, count(*) from t group by sc" "off|300"
    PGOPTIONS="-c synchronous_commit=local" run_sluice down 0001_fast
    assert_rc 0
    assert_sql "select coalesce(sc, 'null'), back, count(*) from t group by 1, 2" "null|off|300"
    run_sluice stamp 0001_fast pending
    assert_rc 0
    sed -i 's/^-- sluice:batch 100$/&\n-- sluice:synchronous-commit on/' "$JOBS/0001_fast.sql"
    run_sluice plan 0001_fast
    assert_rc 0
    assert_contains "$OUT" "commits:    each chunk's waits for the disk as the server's synchronous_commit says (synchronous-commit on)"
    PGOPTIONS="-c synchronous_commit=local" run_sluice up
    assert_rc 0
    assert_sql "select sc, count(*) from t group by sc" "local|300"
    PGOPTIONS="-c synchronous_commit=local" run_sluice down 0001_fast
    assert_rc 0
    assert_sql "select coalesce(sc, 'null'), back, count(*) from t group by 1, 2" "null|local|300"
}

# A database that turns standard_conforming_strings off: the server would read 'x\' as an open
# string, and the :lo/:hi the scanner saw after it as part of it (every chunk then rewrites the
# whole table). sluice's sessions set it on: each chunk writes its own rows, the backslash kept.
test_standard_strings_whatever_the_database_says() {
    make_table 50 "full_name text" full_name "'orig'"
    psql_q "alter database \"$T_DB\" set standard_conforming_strings = off"
    write_job 0001_x <<'EOF'
-- sluice:table t
-- sluice:batch 10
-- sluice:up
UPDATE t SET full_name = 'x\' WHERE id BETWEEN :lo AND :hi AND full_name <> '' -- '
   || :lo::text || :hi::text;
EOF
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "done: 50 rows in 5 chunks"
    assert_sql "select full_name, count(*) from t group by 1" 'x\|50'
    assert_sql "select count(*) from sluice_progress where job = '0001_x'" 5
}

# Where the walk ends is recorded in sluice_jobs.walk_end when the first chunk runs. Changed by hand
# (more values than the key has columns, a value of another type, an end before the chunks already
# done), it is refused with exit 2 and nothing changes; put back, the job finishes exactly once.
test_walk_end_edited_by_hand() {
    make_table 2000
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 50ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    stop_up_after 0001_bump 1000
    local end before bad
    end=$(psql_q "select walk_end::text from sluice_jobs where job = '0001_bump'")
    assert_eq "$end" "{2000}" "walk_end"
    before=$(progress 0001_bump)
    for bad in '{1,2}:["1","2"]' '{abc}:["abc"]' '{5}:["5"]' '{}:[]'; do
        psql_q "update sluice_jobs set walk_end = '${bad%%:*}' where job = '0001_bump'"
        run_sluice up
        assert_rc 2
        assert_contains "$ERR" "sluice_jobs.walk_end = ${bad#*:}, cannot be"
        assert_contains "$ERR" "changed by hand"
        assert_eq "$(progress 0001_bump)" "$before" "progress after the refusal of walk_end $bad"
    done
    psql_q "update sluice_jobs set walk_end = '$end' where job = '0001_bump'"
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "2000|0"
}

# A job with a way back reads the rows its chunk wrote by a bitmap scan: index scans are off from
# that read to the COMMIT, for sluice's own statements only. The up statements (the next chunk's on
# the same connection too) and the down section see the session's own setting.
test_image_read_keeps_to_its_chunk() {
    psql_q "create table t (id int primary key, v text, seen text);
            create table seen_down (id int, seen text);
            insert into t (id) select g from generate_series(1, 300) g"
    write_job 0001_snap <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:undo snapshot(v, seen)
-- sluice:up
UPDATE t SET v = 'v' || id, seen = current_setting('enable_indexscan') WHERE id BETWEEN :lo AND :hi;
EOF
    write_job 0002_section <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET v = v || '!', seen = seen || current_setting('enable_indexscan') WHERE id BETWEEN :lo AND :hi;
-- sluice:down
INSERT INTO seen_down SELECT id, current_setting('enable_indexscan') FROM t WHERE id BETWEEN :lo AND :hi;
UPDATE t SET v = left(v, -1), seen = left(seen, 2) WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select seen, count(*) from t group by seen" "onon|300"
    run_sluice down base
    assert_rc 0
    assert_sql "select seen, count(*) from seen_down group by seen" "on|300"
    assert_sql "select count(*) from t where v is null and seen is null" 300
    assert_sql "select count(*) from sluice_undo" 0
}

test_non_idempotent_exactly_once() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 2001) g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 250
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|2001"
    assert_chunks 0001_bump 2001 9
}

test_requires() {
    psql_q "create table t (id int primary key, n int not null default 0);
            create table flags (name text primary key);
            insert into t (id) select g from generate_series(1, 300) g"
    write_job 0001_guarded <<'EOF'
-- sluice:table t
-- sluice:requires select exists (select 1 from flags where name = 'ready')
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "requires" "stderr"
    assert_sql "select count(*) from t where n <> 0" 0
    assert_no_progress
    load_status
    local state
    state=$(sfield 0001_guarded state)
    assert_ne "$state" "done" "state after refusal"

    psql_q "insert into flags values ('ready')"
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "1|1"
    assert_chunks 0001_guarded 300 3
}

test_default_key_is_primary_key() {
    # The PK is not the first column, and another column sorts differently: chunk bounds show which was walked.
    psql_q "create table t (other int not null unique, id int primary key, n int not null default 0);
            insert into t (other, id) select 1001 - g, g from generate_series(1, 1000) g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 400
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 1000
    assert_sql "select lo, hi from sluice_progress order by chunk_no" "{1}|{400}"$'\n'"{401}|{800}"$'\n'"{801}|{1000}"
}

test_explicit_unique_key() {
    psql_q "create table t (id int primary key, email text not null, n int not null default 0);
            create unique index t_email on t (email);
            insert into t (id, email) select g, 'user' || lpad((1000 - g)::text, 4, '0') || '@x'
              from generate_series(1, 1000) g"
    write_job 0001_by_email <<'EOF'
-- sluice:table t
-- sluice:key email
-- sluice:batch 300
-- sluice:up
UPDATE t SET n = n + 1 WHERE email BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n = 1" 1000
    assert_chunks 0001_by_email 1000 4
    # Walked by email: the first chunk holds the smallest emails (the largest ids).
    assert_sql "select lo, hi from sluice_progress where chunk_no = 1" "{user0000@x}|{user0299@x}"
    assert_status 0001_by_email last_key '["user0999@x"]'
}

test_pause_and_max_rate() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 3000) g"
    write_job 0001_slow <<'EOF'
-- sluice:table t
-- sluice:batch 500
-- sluice:max-rate 2000
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    local t0 t1
    t0=$(date +%s%N)
    run_sluice up
    t1=$(date +%s%N)
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|3000"
    # 3000 rows at 2000 rows/s: at least ~1 s (loose: 900 ms), whatever the machine.
    local ms=$(((t1 - t0) / 1000000))
    diag "max-rate run took ${ms} ms"
    ((ms >= 900)) || fail "max-rate 2000 over 3000 rows took only ${ms} ms"

    psql_q "create table u (id int primary key, n int not null default 0);
            insert into u (id) select g from generate_series(1, 500) g"
    write_job 0002_paused <<'EOF'
-- sluice:table u
-- sluice:batch 100
-- sluice:pause 250ms
-- sluice:up
UPDATE u SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    t0=$(date +%s%N)
    run_sluice up 0002_paused
    t1=$(date +%s%N)
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from u" "1|1|500"
    # 5 chunks, 4 pauses of 250 ms between them: at least ~1 s.
    ms=$(((t1 - t0) / 1000000))
    diag "paused run took ${ms} ms"
    ((ms >= 900)) || fail "pause 250ms over 5 chunks took only ${ms} ms"
}

test_second_up_is_noop() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 500) g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 200
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    local before
    load_status
    before=$(sfield 0001_bump updated_at)
    run_sluice up
    assert_rc 0
    assert_contains "$OUT$ERR" "already done" "second up"
    assert_sql "select min(n), max(n) from t" "1|1"
    assert_sql "select count(*) from sluice_progress" 3
    assert_status 0001_bump chunks 3
    assert_status 0001_bump updated_at "$before"
}

test_resume_after_sigint() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 3000) g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 100ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 2 from sluice_progress"
    sluice_kill INT
    assert_rc 3
    assert_status 0001_bump state stopped
    local chunks
    load_status
    chunks=$(sfield 0001_bump chunks)
    ((chunks >= 2 && chunks < 30)) || fail "chunks after SIGINT: $chunks"
    # What the checkpoint says ran is exactly what the database holds.
    assert_sql "select count(*) from sluice_progress" "$chunks"
    assert_sql "select count(*) from t where n = 1" "$((chunks * 100))"
    assert_sql "select count(*) from t where n not in (0, 1)" 0

    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|3000"
    assert_chunks 0001_bump 3000 30
    assert_status 0001_bump state "done"
}

# make_commit_trap: table t (1..1000, n) and a deferred trigger that refuses, at COMMIT, the rows
# listed in fail_at (with SQLSTATE code; only the first time if once), as a deferred foreign key or
# exclusion constraint would.
make_commit_trap() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 1000) g;
            create table fail_at (id int, code text, once bool);
            create sequence tries;
            create function t_check() returns trigger language plpgsql as \$\$
            declare f fail_at;
            begin
              select * into f from fail_at where id = new.id;
              if found then
                if not f.once or nextval('tries') = 1 then
                  raise exception 'row % refused at commit', new.id using errcode = f.code;
                end if;
              end if;
              return null;
            end \$\$;
            create constraint trigger t_at_commit after update on t deferrable initially deferred
              for each row execute function t_check();"
}

# A chunk that fails at its COMMIT (a deferred constraint) fails the job like any chunk: nothing of
# it or after it is changed or recorded, and the resume does every row once.
test_commit_failure() {
    make_commit_trap
    psql_q "insert into fail_at values (450, 'P0001', false)"
    bump_job 0001_bump 100
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" "chunk 5 ([\"401\"] .. [\"500\"]) failed on attempt 1: P0001 row 450 refused at commit"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n = 0), max(id) filter (where n = 1)
                from t" "400|600|400"
    assert_sql "select count(*), max(hi[1]) from sluice_progress" "4|400"
    assert_status 0001_bump state failed

    psql_q "delete from fail_at"
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|1000"
    assert_chunks 0001_bump 1000 10
}

# The same COMMIT failing once with a transient error (40001), in a job with a snapshot to undo: the
# chunk is retried and commits once, with its undo record; down puts the table back as it was.
test_commit_retried_with_snapshot() {
    make_commit_trap
    psql_q "insert into fail_at values (450, '40001', true)"
    local before
    before=$(table_sum)
    bump_job 0001_bump 100 "-- sluice:undo snapshot(n)"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "chunk 5 ([\"401\"] .. [\"500\"]) failed on attempt 1: 40001 row 450 refused at commit"
    assert_contains "$ERR" "retrying in"
    assert_sql "select min(n), max(n), count(*) from t" "1|1|1000"
    assert_chunks 0001_bump 1000 10
    assert_sql "select count(*) from sluice_undo where job = '0001_bump'" 10

    run_sluice down 0001_bump
    assert_rc 0
    assert_eq "$(table_sum)" "$before" "the table after down"
}

test_sigterm_stops_too() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 2000) g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 100ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 1 from sluice_progress"
    sluice_kill TERM
    assert_rc 3
    assert_status 0001_bump state stopped
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|2000"
    assert_chunks 0001_bump 2000 20
}

# A second signal aborts the chunk in flight (its connection dropped): the database still records the
# stop (sluice_jobs stopped, the run's row ended), as after one signal; up then finishes exactly once.
test_second_signal_records_the_stop() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 1000) g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
SELECT pg_sleep(1);
EOF
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 1 from sluice_progress"
    kill -INT "$SLUICE_PID"
    sleep 0.3
    sluice_kill INT
    assert_rc 3
    assert_contains "$ERR" "second signal"
    assert_sql "select state from sluice_jobs where job = '0001_bump'" stopped
    assert_sql "select outcome, ended_at is not null from sluice_runs where job = '0001_bump'" "stopped|t"
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|1000"
}

test_jobs_in_file_name_order() {
    # 0002 needs 0001's effect (its requires checks it when it starts); 0001 fails once on row 299.
    psql_q "create table t (id int primary key, a int not null default 0, b int not null default 0, d int not null default 1);
            insert into t (id) select g from generate_series(1, 300) g; update t set d = 0 where id = 299"
    write_job 0002_b <<'EOF'
-- sluice:table t
-- sluice:requires select not exists (select 1 from t where a = 0)
-- sluice:batch 100
-- sluice:up
UPDATE t SET b = a + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    write_job 0001_a <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET a = a + 1 / d WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 1
    # The failed job stops the run: the later one has not started.
    assert_status 0001_a state failed
    assert_status 0002_b state pending
    assert_sql "select count(*) from t where b <> 0" 0
    psql_q "update t set d = 1"
    run_sluice up
    assert_rc 0
    assert_status 0001_a state "done"
    assert_status 0002_b state "done"
    assert_sql "select a, b, count(*) from t group by a, b" "1|2|300"
}

test_password_never_shown() {
    [[ -n ${PGPASSWORD:-} ]] || {
        diag "PGPASSWORD is not set: nothing to look for"
        return 0
    }
    psql_q "create table t (id int primary key, n int not null default 0, d int not null default 1);
            insert into t (id) select g from generate_series(1, 300) g; update t set d = 0 where id = 250"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 / d WHERE id BETWEEN :lo AND :hi;
EOF
    local all=""
    # A job that fails on the server.
    run_sluice --db "$SLUICE_DB_PW" up
    assert_rc 1
    all+="$OUT$ERR"
    run_sluice --db "$SLUICE_DB_PW" status
    all+="$OUT$ERR"
    run_sluice --db "$SLUICE_DB_PW" plan 0001_bump
    assert_rc 0
    all+="$OUT$ERR"
    # A database that does not exist, and a server that is not there.
    run_sluice --db "${SLUICE_DB_PW%/*}/no_such_db" up
    assert_rc 1
    all+="$OUT$ERR"
    run_sluice --db "postgresql://${PGUSER:-$(id -un)}:$PGPASSWORD@127.0.0.1:1/x" up
    assert_rc 1
    all+="$OUT$ERR"
    # The same through the environment.
    SLUICE_DB=$SLUICE_DB_PW run_sluice up
    assert_rc 1
    all+="$OUT$ERR"
    assert_not_contains "$all" "$PGPASSWORD" "sluice's output"
    # Nor in what it leaves on disk.
    if grep -rlaF -- "$PGPASSWORD" "$CKPT"; then
        fail "the password is written in a checkpoint file"
    fi
    # It failed at the right place, not earlier: rows before the bad one were done.
    assert_sql "select count(*) from t where n = 1" 200
}

run_test "bigint key, batch not dividing the rows" test_bigint_key
run_test "composite (tenant_id, id) key with row BETWEEN" test_composite_key
run_test "text key" test_text_key
run_test "uuid key" test_uuid_key
run_test "timestamptz key with microseconds" test_timestamptz_key
run_test "where: only matching rows count into chunks" test_where_limits_chunks
run_test "where matching no row: done, 0 chunks" test_where_matching_nothing
run_test "quoted schema-qualified names, casts, look-alike placeholders" test_quoted_names_casts_and_quotes
run_test "checkpoint file lost: resumes from sluice_progress, exactly once" test_checkpoint_file_lost
run_test "several statements per section, one transaction per chunk" test_several_statements
run_test "synchronous-commit: chunks commit without waiting for the disk unless on" test_synchronous_commit
run_test "a way back's read of the rows written: index scans off for sluice's own statements only" test_image_read_keeps_to_its_chunk
run_test "non-idempotent job runs exactly once" test_non_idempotent_exactly_once
run_test "requires: false refuses with exit 2, true runs" test_requires
run_test "default key is the primary key" test_default_key_is_primary_key
run_test "explicit key on a unique non-PK column" test_explicit_unique_key
run_test "pause and max-rate slow the run down" test_pause_and_max_rate
run_test "second up after done changes nothing" test_second_up_is_noop
run_test "SIGINT stops with exit 3, up resumes exactly once" test_resume_after_sigint
run_test "standard_conforming_strings off for the database: on in sluice's sessions, each chunk its own rows" \
    test_standard_strings_whatever_the_database_says
run_test "sluice_jobs.walk_end changed by hand: refused, exit 2, nothing changed; put back, every row once" \
    test_walk_end_edited_by_hand
run_test "SIGTERM stops with exit 3 too" test_sigterm_stops_too
run_test "a second signal aborts the chunk in flight, and the database still records the stop" \
    test_second_signal_records_the_stop
run_test "a chunk failing at COMMIT fails the job, nothing of it kept; resume exactly once" test_commit_failure
run_test "a COMMIT retried after 40001, with snapshot undo; down restores" test_commit_retried_with_snapshot
run_test "jobs run in file-name order; a failed job stops the later ones" test_jobs_in_file_name_order
run_test "password never in output" test_password_never_shown
t_done
