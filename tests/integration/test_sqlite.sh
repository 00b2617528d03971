#!/usr/bin/env bash
# test_sqlite.sh: `--db sqlite:PATH`: up over every key kind, status, history, plan, stamp, refusals, pace, ctl, signals.
. "$(dirname "$0")/../harness/lib.sh"

# assert_chunks JOB ROWS CHUNKS: status and the database's sluice_progress agree on what ran.
assert_chunks() {
    assert_status "$1" rows "$2"
    assert_status "$1" chunks "$3"
    assert_sq "select count(*), coalesce(sum(rows), 0) from sluice_progress where job = '$1'" "$3|$2"
    # Chunk numbers are 1..N without gaps.
    assert_sq "select count(distinct chunk_no), coalesce(min(chunk_no), 1), coalesce(max(chunk_no), 0)
               from sluice_progress where job = '$1'" "$3|1|$3"
}

# assert_untouched TABLE: no row of TABLE changed (n is 0 everywhere), no chunk recorded anywhere.
assert_untouched() {
    assert_sq "select count(*) from ${1:-t} where n <> 0" 0
    assert_eq "$(sq_progress)" "0|0" "chunks in sluice_progress"
    local f
    for f in "$CKPT"/*.sluice; do
        [[ -e $f ]] || continue
        [[ $(sqlite3 "$f" "select count(*) from chunks" 2>/dev/null) == 0 ]] || fail "chunks recorded in $f"
    done
}

# The usual table: t(id integer primary key, n, d) with ids 1..N, n = 0 and d = 1.
sq_make_table() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0, d int not null default 1)"
    sq_fill t "${1:-300}"
}

test_integer_key() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq "with recursive g(i) as (select 1 union all select i + 1 from g where i < 1003) insert into t (id) select i * 7 from g"
    bump_job 0001_bump 100
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n = 1" 1003
    assert_sq "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 1003 11
    assert_status 0001_bump state "done"
    assert_status 0001_bump last_key '["7021"]'
    # The chunks are contiguous in key order and cover the table; the bounds are JSON arrays of text.
    assert_sq "select lo, hi, rows from sluice_progress where chunk_no in (1, 11) order by chunk_no" \
        '["7"]|["700"]|100'$'\n''["7007"]|["7021"]|3'
    # The checkpoint file agrees with the database.
    assert_eq "$(sqlite3 "$CKPT/0001_bump.sluice" "select count(*), sum(rows) from chunks")" "11|1003" "checkpoint chunks"
}

test_int64_limits() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0);
        insert into t (id) values (-9223372036854775808), (-1), (0), (9007199254740993), (9007199254740994),
                                  (9223372036854775806), (9223372036854775807)"
    bump_job 0001_bump 2
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n = 1" 7
    assert_chunks 0001_bump 7 4
    assert_status 0001_bump last_key '["9223372036854775807"]'
}

test_text_key() {
    sq_init
    # Hex strings in no order that follows insertion, and quotes, spaces, case and the empty string.
    sq "create table t (code text primary key, n int not null default 0);
        with recursive g(i) as (select 1 union all select i + 1 from g where i < 1234)
        insert into t (code) select printf('%08x', (i * 2654435761) % 4294967296) from g;
        insert into t (code) values ('it''s'), ('a b'), ('Zeta'), ('zeta'), (''), ('日本')"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 150
-- sluice:up
UPDATE t SET n = n + 1 WHERE code BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n = 1" 1240
    assert_sq "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 1240 9
    # SQLite's own (binary) order: '' first, then digits, upper case, lower case, multi-byte last.
    assert_sq "select lo from sluice_progress where chunk_no = 1" '[""]'
    load_status
    python3 -c 'import json, sys; o = json.load(sys.stdin)[0]; assert o["last_key"] == ["日本"], o' <<<"$STATUS_JSON" ||
        fail "status --json: last_key is not [\"日本\"]: $STATUS_JSON"
}

test_composite_key() {
    sq_init
    sq "create table t (tenant_id int, id int, n int not null default 0, primary key (tenant_id, id)) without rowid;
        with recursive a(x) as (select 1 union all select x + 1 from a where x < 7),
                       b(y) as (select 1 union all select y + 1 from b where y < 143)
        insert into t (tenant_id, id) select x, y from a, b"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:key tenant_id, id
-- sluice:batch 97
-- sluice:up
UPDATE t SET n = n + 1 WHERE (tenant_id, id) BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n = 1" 1001
    assert_sq "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 1001 11
    assert_status 0001_bump last_key '["7", "143"]'
    # Chunks follow the composite order: the second one crosses from tenant 1 into tenant 2.
    assert_sq "select lo, hi from sluice_progress where chunk_no = 1" '["1","1"]|["1","97"]'
    assert_sq "select lo, hi from sluice_progress where chunk_no = 2" '["1","98"]|["2","51"]'
}

# A key column declared without a type (BLOB affinity) holding integers: the bounds must compare as
# the stored values do, not as text.
test_untyped_key() {
    sq_init
    sq "create table t (id primary key, n int not null default 0)"
    sq_fill t 250
    bump_job 0001_bump 100
    T_CMD_TIMEOUT=30 run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n = 1" 250
    assert_sq "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 250 3
    assert_status 0001_bump last_key '["250"]'
}

# A BLOB key (UUIDs kept as 16 bytes, as many SQLite applications do): bounds compare as blobs.
test_blob_key() {
    sq_init
    sq "create table t (id blob primary key, n int not null default 0);
        with recursive g(i) as (select 1 union all select i + 1 from g where i < 500) insert into t (id) select randomblob(16) from g;
        insert into t (id) values (x''), (x'00'), (x'0000'), (x'ff')"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    T_CMD_TIMEOUT=30 run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n = 1" 504
    assert_sq "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 504 6
}

# A text key with COLLATE NOCASE: chunks follow the column's collation, not binary order.
test_nocase_key() {
    sq_init
    sq "create table t (code text collate nocase primary key, n int not null default 0);
        with recursive g(i) as (select 1 union all select i + 1 from g where i < 500)
        insert into t (code) select case when i % 2 then 'k' else 'K' end || printf('%04d', i) from g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE code BETWEEN :lo AND :hi;
EOF
    T_CMD_TIMEOUT=30 run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n = 1" 500
    assert_sq "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 500 5
    assert_sq "select lo, hi from sluice_progress where chunk_no = 1" '["k0001"]|["K0100"]'
}

# A REAL key: bounds that lose digits on their way through text would skip or repeat rows, or never end.
test_real_key() {
    sq_init
    sq "create table t (x real primary key, n int not null default 0);
        with recursive g(i) as (select 1 union all select i + 1 from g where i < 250) insert into t (x) select i / 3.0 from g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE x BETWEEN :lo AND :hi;
EOF
    T_CMD_TIMEOUT=30 run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n = 1" 250
    assert_sq "select count(*) from t where n <> 1" 0
    assert_chunks 0001_bump 250 3
}

test_where_limits_chunks() {
    sq_init
    sq "create table t (id integer primary key, kind text not null default 'y', n int not null default 0)"
    sq_fill t 1000
    sq "update t set kind = 'x' where id % 10 = 0"
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
    assert_sq "select lo, hi, rows from sluice_progress where chunk_no = 1" '["10"]|["300"]|30'
    assert_sq "select lo, hi, rows from sluice_progress where chunk_no = 4" '["910"]|["1000"]|10'
    assert_sq "select count(*) from t where kind = 'x' and n = 1" 100
    assert_sq "select count(*) from t where kind = 'y' and n = 0" 900
}

test_several_statements() {
    sq_make_table 950
    sq "create table audit (chunk_lo int, chunk_hi int, touched int)"
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
    assert_sq "select count(*) from t where n = 1" 950
    assert_sq "select count(*) from t where n <> 1" 0
    assert_chunks 0001_with_audit 950 5
    # One audit row per chunk, written after that chunk's UPDATE in the same transaction.
    assert_sq "select count(*), sum(touched) from audit" "5|950"
    assert_sq "select chunk_lo, chunk_hi, touched from audit order by chunk_lo limit 1" "1|200|200"
    assert_sq "select chunk_lo, chunk_hi, touched from audit order by chunk_lo desc limit 1" "801|950|150"
}

# A chunk that fails rolls back as a whole; a resume after the data is fixed applies each row once, even
# with the checkpoint file gone (sluice_progress in the database knows what committed).
test_failed_then_resumed_exactly_once() {
    sq_make_table 300
    # 1 / 0 is NULL in SQLite: row 150 breaks the NOT NULL constraint in chunk 2.
    sq "update t set d = 0 where id = 150"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
UPDATE t SET n = n + 1 / d - 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" "NOT NULL constraint failed" "stderr"
    assert_status 0001_bump state failed
    assert_status 0001_bump chunks 1
    local error
    error=$(sfield 0001_bump error)
    assert_contains "$error" "NOT NULL constraint failed" "error field"
    assert_contains "$error" "chunk 2" "error field"
    # The failed chunk's first statement was rolled back with it.
    assert_sq "select count(*) from t where n = 1" 100
    assert_sq "select count(*) from t where n = 0" 200
    sq "update t set d = 1"
    rm -f "$CKPT"/0001_bump.sluice*
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|300"
    assert_chunks 0001_bump 300 3
}

test_requires() {
    sq_make_table 300
    sq "create table flags (name text primary key)"
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
    assert_untouched
    local state
    load_status
    state=$(sfield 0001_guarded state)
    assert_ne "$state" "done" "state after refusal"
    sq "insert into flags values ('ready')"
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n) from t" "1|1"
    assert_chunks 0001_guarded 300 3
}

test_status_history_json() {
    sq_make_table 250
    bump_job 0001_bump 100
    run_sluice status --json
    assert_rc 0
    python3 -c '
import json, sys
o = json.load(sys.stdin)[0]
assert (o["job"], o["state"], o["rows"], o["chunks"], o["last_key"], o["error"], o["started_at"]) == \
    ("0001_bump", "pending", 0, 0, None, None, None), o' <<<"$OUT" || fail "status --json before up: $OUT"
    run_sluice up
    assert_rc 0
    run_sluice status --json
    assert_rc 0
    local status=$OUT
    python3 -c '
import json, re, sys
iso = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
o = json.load(sys.stdin)[0]
assert (o["job"], o["state"], o["rows"], o["chunks"], o["last_key"], o["error"]) == \
    ("0001_bump", "done", 250, 3, ["250"], None), o
assert iso.match(o["started_at"]) and iso.match(o["updated_at"]) and o["started_at"] <= o["updated_at"], o' \
        <<<"$status" || fail "status --json after up: $status"
    # Status reads the database; with the file gone it says so and shows what the checkpoint files say.
    mv "$SQ_DB" "$SQ_DB.away"
    run_sluice status --json
    assert_rc 0
    assert_contains "$ERR" "showing what the checkpoint files"
    # the same, but for the times (the file notes its own clock's, a moment after the database's) and
    # the database's error, which says why it was not read
    assert_contains "$(jq -r '.[0].database_error' <<<"$OUT")" "no such database file"
    assert_eq "$(jq -r '.[0].database_error' <<<"$status")" "null"
    assert_eq "$(jq -c 'del(.[].source, .[].started_at, .[].updated_at, .[].database_error)' <<<"$OUT")" \
        "$(jq -c 'del(.[].source, .[].started_at, .[].updated_at, .[].database_error)' <<<"$status")" \
        "status --json without the database"
    local drift
    drift=$(jq -n --argjson a "$OUT" --argjson b "$status" \
        '[($a[0].started_at, $a[0].updated_at, $b[0].started_at, $b[0].updated_at) | sub("\\.[0-9]+"; "") | fromdate]
         | [(.[0] - .[2]), (.[1] - .[3])] | map(fabs) | max')
    ((drift <= 2)) || fail "the checkpoint file's times are ${drift}s from the database's: $OUT vs $status"
    mv "$SQ_DB.away" "$SQ_DB"
    run_sluice status
    assert_rc 0
    assert_match "$OUT" "0001_bump +done" "status"
    run_sluice current
    assert_rc 0
    assert_match "$OUT" "0001_bump +done" "current"

    run_sluice history
    assert_rc 0
    assert_match "$OUT" "0001_bump +up +done +250 +3" "history"
    run_sluice history --json
    assert_rc 0
    python3 -c '
import json, sys
d = json.load(sys.stdin)
assert [(o["job"], o["kind"], o["outcome"], o["rows"], o["chunks"]) for o in d] == [("0001_bump", "up", "done", 250, 3)], d
' <<<"$OUT" || fail "history --json: $OUT"
}

test_plan() {
    sq_make_table 2500
    bump_job 0001_bump 700
    sq "analyze"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "table: +\"?t\"?" "plan"
    assert_match "$OUT" "key: +\"?id\"?" "plan"
    assert_match "$OUT" "estimate: .*2500 rows.*[ ~]4 chunks" "plan"
    assert_match "$OUT" ":lo = \(?1\)? +:hi = \(?700\)?" "plan (first chunk)"
    # EXPLAIN QUERY PLAN's lines, not the VDBE program EXPLAIN alone prints; the up statement finds its
    # rows through the key (the boundary query's plan shows a SCAN: the walk in key order, cut by LIMIT).
    assert_match "$OUT" "its plan for the first chunk:"$'\n'" +SEARCH \"?t\"? USING INTEGER PRIMARY KEY" "plan (EXPLAIN QUERY PLAN)"
    assert_not_contains "$OUT$ERR" "warning" "plan"
    assert_not_contains "$OUT" "OpenWrite" "plan (a VDBE opcode)"
    assert_not_contains "$OUT" "Init" "plan (a VDBE opcode)"
    # Changes nothing: no bookkeeping table, no checkpoint file, no row.
    assert_sq "select count(*) from sqlite_master where name = 'sluice_progress'" 0
    assert_eq "$(ls -A "$CKPT")" "" "checkpoint dir after plan"
    assert_sq "select count(*) from t where n <> 0" 0

    # A fresh walk counts the table's rows less those with no key (never walked) and those after its end.
    sq "create table u (k text, n int not null default 0); create index u_k on u (k);
        with recursive g(i) as (select 1 union all select i + 1 from g where i < 1200)
        insert into u (k) select case when i % 6 = 0 then null else printf('k%05d', i) end from g"
    write_job 0002_keyed <<'EOF'
-- sluice:table u
-- sluice:key k
-- sluice:batch 300
-- sluice:up
UPDATE u SET n = n + 1 WHERE k BETWEEN :lo AND :hi;
EOF
    run_sluice plan 0002_keyed
    assert_rc 0
    assert_match "$OUT" "estimate: .*1000 rows.*[ ~]4 chunks" "plan, 200 of 1200 keys NULL"
    run_sluice --log-format json up 0002_keyed
    assert_rc 0
    assert_contains "$ERR" '"rows_estimated":1000' "up's start"
    assert_sq "select count(*), sum(n) from u where k is not null" "1000|1000"
}

# The rows a fresh walk covers are counted on a second connection while sluice makes its tables and
# checkpoint file (WAL), or on its own connection when the walk begins (a rollback journal): the same
# estimate either way. A resumed walk counts what it has left, not the table.
test_estimate_counted_ahead() {
    local mode
    for mode in wal delete; do
        sq_init "$T_DIR/$mode.db" "$mode"
        CKPT="$T_DIR/checkpoints-$mode"
        # 1200 keys, 200 of them NULL (never walked); k00839 is the 700th key: chunk 3 fails on it.
        sq "create table u (k text, d int not null default 1, n int not null default 0); create index u_k on u (k);
            with recursive g(i) as (select 1 union all select i + 1 from g where i < 1200)
            insert into u (k) select case when i % 6 = 0 then null else printf('k%05d', i) end from g;
            update u set d = 0 where k = 'k00839'"
        write_job 0001_keyed <<'EOF'
-- sluice:table u
-- sluice:key k
-- sluice:batch 300
-- sluice:up
UPDATE u SET n = n + 1 / d WHERE k BETWEEN :lo AND :hi;
EOF
        run_sluice --log-format json up
        assert_rc 1
        assert_match "$ERR" '"event":"start".*"rows_estimated":1000[,}]' "up's start ($mode)"
        assert_sq "select count(*), sum(n) from u where n > 0" "600|600"
        sq "update u set d = 1"
        run_sluice --log-format json up
        assert_rc 0
        assert_match "$ERR" '"event":"resume".*"rows_done":600,.*"rows_estimated":1000[,}]' "up's resume ($mode)"
        assert_sq "select count(*), sum(n) from u where k is not null" "1000|1000"
        assert_sq "pragma journal_mode" "$mode"
    done
}

test_plan_warns_without_index() {
    sq_init
    sq "create table t (id integer primary key, code int not null default 0, n int not null default 0)"
    sq_fill t 2000
    sq "update t set code = id; analyze"
    write_job 0001_by_code <<'EOF'
-- sluice:table t
-- sluice:key code
-- sluice:batch 500
-- sluice:up
UPDATE t SET n = n + 1 WHERE code BETWEEN :lo AND :hi;
EOF
    run_sluice plan 0001_by_code
    assert_rc 2
    assert_match "$OUT$ERR" "index: +NONE" "plan"
    assert_match "$OUT$ERR" "warning:.*index" "plan"
    assert_match "$OUT$ERR" "warning:.*SCAN" "plan"
    assert_contains "$ERR" "up refuses this job: 1 reason above"
    # up refuses the same job unless --allow-no-index.
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "index" "stderr"
    assert_contains "$ERR" "--allow-no-index" "stderr (hint)"
    assert_untouched
    run_sluice up --allow-no-index
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|2000"
}

test_stamp() {
    sq_make_table 300
    bump_job 0001_bump 100
    run_sluice stamp 0001_bump "done"
    assert_rc 0
    assert_status 0001_bump state done
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from t where n <> 0" 0
    run_sluice stamp 0001_bump pending
    assert_rc 0
    assert_status 0001_bump state pending
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|300"
    # pending again after a full run: up runs it from the start, each row once more.
    run_sluice stamp 0001_bump pending
    assert_rc 0
    assert_status 0001_bump chunks 0
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "2|2|300"
    assert_chunks 0001_bump 300 3
    run_sluice stamp no_such_job "done"
    assert_rc 2
    assert_contains "$ERR" "no_such_job" "stderr"
}

# A database file that is not there: named in a clear error, refused as bad usage, and never created.
test_missing_database_file() {
    bump_job 0001_bump 100
    local cmd
    for cmd in up plan; do
        run_sluice --db "sqlite:$T_DIR/nope.db" $cmd $([[ $cmd == plan ]] && echo 0001_bump)
        assert_rc 2
        assert_contains "$ERR" "$T_DIR/nope.db" "stderr"
        assert_contains "$ERR" "no such database file" "stderr"
        assert_contains "$ERR" "hint:" "stderr"
    done
    run_sluice --db "sqlite:nope.db" up
    assert_rc 2
    assert_contains "$ERR" "nope.db" "stderr"
    run_sluice --db "sqlite:" up
    assert_rc 2
    assert_contains "$ERR" "sqlite:" "stderr"
    local left
    left=$(ls -A "$T_DIR" | grep -v -e '^jobs$' -e '^checkpoints$' -e '^last\.' || true)
    assert_eq "$left" "" "files created in the work dir"
    assert_eq "$(ls -A "$CKPT")" "" "checkpoint dir"
}

test_not_a_database() {
    bump_job 0001_bump 100
    printf 'this is not a database, it is just text long enough to fill a header...\n%.0s' {1..20} >"$T_DIR/text.db"
    run_sluice --db "sqlite:$T_DIR/text.db" up
    assert_rc 2 # bad input, like a missing file
    assert_contains "$ERR" "text.db" "stderr"
    assert_contains "$ERR" "not a SQLite database" "stderr"
    assert_eq "$(ls -A "$CKPT")" "" "checkpoint dir"
    mkdir "$T_DIR/dir.db"
    run_sluice --db "sqlite:$T_DIR/dir.db" up
    assert_rc 2
    assert_contains "$ERR" "dir.db: a directory, not a database file" "stderr"
    assert_eq "$(ls -A "$CKPT")" "" "checkpoint dir"
}

test_unknown_table_and_key() {
    sq_make_table 100
    write_job 0001_bad <<'EOF'
-- sluice:table no_such_table
-- sluice:up
UPDATE no_such_table SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bad.sql:1" "stderr"
    assert_contains "$ERR" "no_such_table" "stderr"
    assert_untouched
    write_job 0001_bad <<'EOF'
-- sluice:table t
-- sluice:key no_such_col
-- sluice:up
UPDATE t SET n = n + 1 WHERE no_such_col BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bad.sql:2" "stderr"
    assert_contains "$ERR" "no_such_col" "stderr"
    assert_untouched
}

test_max_replica_lag_refused() {
    sq_make_table 100
    bump_job 0001_fine 100
    write_job 0002_lag <<'EOF'
-- sluice:table t
-- sluice:batch 10
-- sluice:max-replica-lag 5s
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    local cmd
    for cmd in up plan; do
        run_sluice $cmd $([[ $cmd == plan ]] && echo 0002_lag)
        assert_rc 2
        assert_contains "$ERR" "0002_lag.sql:3:" "stderr"
        assert_contains "$ERR" "max-replica-lag" "stderr"
        assert_contains "$ERR" "SQLite" "stderr"
        assert_contains "$ERR" "hint:" "stderr"
    done
    # Nothing ran, not even the valid job before it.
    assert_untouched
}

test_second_runner_refused() {
    sq_make_table 2000
    bump_job 0001_slow 100 "-- sluice:pause 500ms"
    sluice_start up
    local first=$SLUICE_PID
    wait_until 20 sq_true "select count(*) >= 1 from sluice_progress"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "already being run" "second runner's stderr"
    assert_contains "$ERR" "0001_slow" "second runner's stderr"
    kill -0 "$first" || fail "the first runner is gone"
    run_sluice status --json
    assert_rc 0
    assert_contains "$OUT" '"state": "running"' "status --json while the first runs"
    # Another job on the same database is not held up by the lock of this one.
    sq "create table u (id integer primary key, n int not null default 0)"
    sq_fill u 50
    write_job 0002_other <<'EOF'
-- sluice:table u
-- sluice:up
UPDATE u SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up 0002_other
    assert_rc 0
    assert_sq "select min(n), max(n) from u" "1|1"
    sluice_kill INT "$first"
    assert_rc 3
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|2000"
    assert_sq "select count(*) from sluice_progress where job = '0001_slow'" 20
}

test_job_edited_after_first_chunk() {
    sq_make_table 300
    sq "update t set d = 0 where id = 150"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 / d WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 1
    assert_sq "select count(*) from t where n = 1" 100
    # The edit: same meaning once the data is fixed, different text. Any change counts.
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 / max(d, 1) WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bump" "stderr"
    assert_contains "$ERR" "changed" "stderr"
    assert_contains "$ERR" "--allow-changed-statements" "stderr (hint)"
    assert_sq "select count(*) from t where n = 1" 100
    assert_sq "select count(*) from sluice_progress" 1
    run_sluice up --allow-changed-statements
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|300"
    assert_sq "select count(*) from sluice_progress" 3
}

test_pause_and_max_rate() {
    sq_make_table 3000
    bump_job 0001_slow 500 "-- sluice:max-rate 2000"
    local t0 t1 ms
    t0=$(date +%s%N)
    run_sluice up
    t1=$(date +%s%N)
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
    # 3000 rows at 2000 rows/s: at least ~1 s (loose: 900 ms), whatever the machine.
    ms=$(((t1 - t0) / 1000000))
    diag "max-rate run took ${ms} ms"
    ((ms >= 900)) || fail "max-rate 2000 over 3000 rows took only ${ms} ms"

    sq "create table u (id integer primary key, n int not null default 0)"
    sq_fill u 500
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
    assert_sq "select min(n), max(n), count(*) from u" "1|1|500"
    # 5 chunks, 4 pauses of 250 ms between them: at least ~1 s.
    ms=$(((t1 - t0) / 1000000))
    diag "paused run took ${ms} ms"
    ((ms >= 900)) || fail "pause 250ms over 5 chunks took only ${ms} ms"
    # The commit times in the database show the pauses too.
    assert_sq "select count(*) from (select julianday(committed_at) - julianday(lag(committed_at) over (order by chunk_no)) as gap
               from sluice_progress where job = '0002_paused') where gap * 86400000 >= 240" 4
}

# iterations_per_ms: how many steps of a recursive CTE the sqlite3 library runs in a millisecond here.
iterations_per_ms() {
    local t0 t1
    t0=$(date +%s%N)
    sqlite3 :memory: "with recursive g(i) as (select 1 union all select i + 1 from g where i < 2000000) select count(*) from g" >/dev/null
    t1=$(date +%s%N)
    echo $((2000000 * 1000000 / (t1 - t0 + 1)))
}

test_chunk_time_converges() {
    sq_make_table 40000
    # About 0.1 ms a row on top of the UPDATE, burnt in SQL (SQLite has no sleep): a 200 ms chunk is
    # about 2000 rows.
    local per_row
    per_row=$(($(iterations_per_ms) / 10))
    diag "recursive CTE steps per row (0.1 ms): $per_row"
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 100
-- sluice:chunk-time 200ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
UPDATE t SET d = (WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < (:hi - :lo + 1) * $per_row)
                  SELECT count(*) >= 0 FROM g) WHERE id = :lo;
EOF
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "40000|0"
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
    # Converged: the last five full chunks are near 2000 rows and their median time near 200 ms
    # (loose: a busy machine; one chunk slowed or sped by other work does not decide it).
    local tail_sizes lo hi med_ms
    tail_sizes=$(sqlite3 "$CKPT/0001_bump.sluice" "select min(rows), max(rows), (select duration_ms from
                 (select duration_ms from chunks where chunk_no < (select max(chunk_no) from chunks)
                  order by chunk_no desc limit 5) order by duration_ms limit 1 offset 2) from
                 (select rows from chunks where chunk_no < (select max(chunk_no) from chunks)
                  order by chunk_no desc limit 5)")
    diag "last five full chunks: min rows, max rows, median ms: $tail_sizes"
    IFS='|' read -r lo hi med_ms <<<"$tail_sizes"
    # What chunk-time promises is the time; the rows that take it follow the machine's speed, which a
    # machine shared with other work changes during the run: they must only have grown well past the
    # starting batch, toward the ~2000 that 200 ms took when measured.
    ((lo >= 300 && hi <= 4000)) || fail "chunk sizes did not grow toward the target: $tail_sizes"
    ((med_ms >= 100 && med_ms <= 400)) || fail "chunk times did not converge near 200ms: $tail_sizes"
}

chunk_of_size() {
    sq_true "select exists (select 1 from sluice_progress where job = '$1' and rows = $2)"
}

test_ctl_pause_resume_set() {
    sq_make_table 5000
    bump_job 0001_bump 50 "-- sluice:pause 100ms"
    sluice_start up
    wait_until 20 sq_rows_done_at_least 0001_bump 1
    wait_until 10 test -S "$CKPT/0001_bump.sluice-ctl"
    run_sluice ctl 0001_bump status
    assert_rc 0
    assert_contains "$OUT" "state running"
    assert_contains "$OUT" "batch 50"
    assert_contains "$OUT" "pause 100ms"

    run_sluice ctl 0001_bump pause
    assert_rc 0
    assert_contains "$OUT" "paused by sluice ctl"
    wait_until 5 ctl_says "state paused" 0001_bump status
    sleep 0.3
    local before after
    before=$(sq_progress 0001_bump)
    sleep 1.5
    after=$(sq_progress 0001_bump)
    assert_eq "$after" "$before" "chunks committed in 1.5 s of ctl pause"
    ((${before#*|} < 5000)) || fail "the job finished before it could be paused"
    # Paused between chunks: no transaction open, so the database is free for others to write at once.
    sqlite3 -bail "$SQ_DB" "create table side (x int); insert into side values (1)"

    run_sluice ctl 0001_bump resume
    assert_rc 0
    assert_contains "$OUT" "resumed by sluice ctl"
    wait_until 10 sq_rows_done_at_least 0001_bump $((${before#*|} + 1))

    run_sluice ctl 0001_bump set batch=7
    assert_rc 0
    assert_contains "$OUT" "set batch=7 by sluice ctl"
    wait_until 10 chunk_of_size 0001_bump 7
    wait_until 5 ctl_says "batch 7" 0001_bump status
    run_sluice ctl 0001_bump set batch=0
    assert_rc 2
    run_sluice ctl 0001_bump set batch=500
    assert_rc 0
    run_sluice ctl 0001_bump set pause=0ms
    assert_rc 0
    sluice_wait
    assert_rc 0
    assert_sq "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "5000|0"
    assert_sq "select sum(rows), count(*) = max(chunk_no) from sluice_progress where job = '0001_bump'" "5000|1"
    assert_sq "select count(*) > 0 from sluice_progress where rows = 500" 1
    local ev
    ev=$(sqlite3 "$CKPT/0001_bump.sluice" "select message from events where kind = 'ctl' order by id")
    assert_contains "$ev" "paused by sluice ctl" "the checkpoint's events"
    assert_contains "$ev" "set batch=7 by sluice ctl" "the checkpoint's events"
}

# ctl pause, then SIGINT while paused: exit 3, stopped; up resumes where it was.
test_ctl_pause_then_sigint() {
    sq_make_table 3000
    bump_job 0001_bump 50 "-- sluice:pause 100ms"
    sluice_start up
    wait_until 20 sq_rows_done_at_least 0001_bump 1
    wait_until 10 test -S "$CKPT/0001_bump.sluice-ctl"
    run_sluice ctl 0001_bump pause
    assert_rc 0
    wait_until 5 ctl_says "state paused" 0001_bump status
    sluice_kill INT
    assert_rc 3
    assert_status 0001_bump state stopped
    local p
    p=$(sq_progress 0001_bump)
    assert_sq "select count(*) from t where n = 1" "${p#*|}"
    # the pause is the job's, recorded in the database file: the next run stops at once (--no-wait)
    assert_sq "select paused like 'by sluice ctl at %' from sluice_jobs where job = '0001_bump'" 1
    run_sluice up --no-wait
    assert_rc 3
    assert_contains "$ERR" "paused by sluice ctl at"
    assert_sq "select count(*) from t where n = 1" "${p#*|}"
    # resume with no runner: recorded, and the next run goes on
    run_sluice ctl 0001_bump resume
    assert_rc 0
    assert_contains "$OUT" "resumed: the next up or down runs job 0001_bump"
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
}

test_no_wait_outside_window() {
    sq_make_table 300
    local from to
    from=$(date -d "120 minutes" +%H:%M)
    to=$(date -d "180 minutes" +%H:%M)
    bump_job 0001_bump 100 "-- sluice:window $from-$to"
    run_sluice up --no-wait
    assert_rc 3
    assert_contains "$ERR" "outside its windows (next opens at $from)"
    assert_untouched
    # Inside a window that is open now, the same job runs.
    from=$(date -d "-5 minutes" +%H:%M)
    to=$(date -d "60 minutes" +%H:%M)
    bump_job 0001_bump 100 "-- sluice:window $from-$to"
    run_sluice up --no-wait
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|300"
}

test_sigint_then_resume() {
    sq_make_table 3000
    bump_job 0001_bump 100 "-- sluice:pause 100ms"
    sluice_start up
    wait_until 20 sq_true "select count(*) >= 2 from sluice_progress"
    sluice_kill INT
    assert_rc 3
    assert_status 0001_bump state stopped
    local chunks rows
    load_status
    chunks=$(sfield 0001_bump chunks)
    rows=$(sfield 0001_bump rows)
    ((chunks >= 2 && chunks < 30)) || fail "chunks after SIGINT: $chunks"
    # What the checkpoint says ran is exactly what the database holds.
    assert_sq "select count(*), sum(rows) from sluice_progress" "$chunks|$rows"
    assert_sq "select count(*) from t where n = 1" "$rows"
    assert_sq "select count(*) from t where n not in (0, 1)" 0
    # No transaction left open: another connection can write at once.
    sqlite3 -bail "$SQ_DB" "create table side (x int)"
    sluice_start up
    sluice_wait
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
    assert_chunks 0001_bump 3000 30
    # SIGTERM does the same.
    sq "update t set n = 0"
    run_sluice stamp 0001_bump pending
    assert_rc 0
    sluice_start up
    wait_until 20 sq_true "select count(*) >= 1 from sluice_progress"
    sluice_kill TERM
    assert_rc 3
    assert_status 0001_bump state stopped
}

# queued_counts FILE: "sent alone|queued": the chunk events of a --log-format json log, by their "queued".
queued_counts() {
    python3 -c '
import json, sys
q = [json.loads(line).get("queued") for line in open(sys.argv[1]) if json.loads(line).get("event") == "chunk"]
print("%d|%d" % (q.count(False), q.count(True)))' "$1"
}

# On SQLite the next chunk is queued behind the one running, so the worker thread goes from one to the
# next without waking the loop. Only plain jobs: a pause between chunks or undo images send each alone.
test_queued_chunks() {
    sq_make_table 3000
    bump_job 0001_bump 50
    SLUICE_DEBUG=1 run_sluice --log-format json up
    assert_rc 0
    echo "$ERR" >"$T_DIR/log.json"
    local counts
    counts=$(queued_counts "$T_DIR/log.json")
    ((${counts%|*} + ${counts#*|} == 60 && ${counts#*|} >= 30)) || fail "chunks sent alone|queued: $counts (60 chunks)"
    assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
    assert_sq "select count(*), sum(rows), max(chunk_no) from sluice_progress" "60|3000|60"

    for extra in "-- sluice:pause 1ms" "-- sluice:undo snapshot(n)"; do
        sq "drop table sluice_progress; drop table sluice_jobs; update t set n = 0"
        rm -rf "$CKPT"
        bump_job 0001_bump 50 "$extra"
        SLUICE_DEBUG=1 run_sluice --log-format json up
        assert_rc 0
        echo "$ERR" >"$T_DIR/log.json"
        assert_eq "$(queued_counts "$T_DIR/log.json")" "60|0" "chunks sent alone|queued ($extra)"
        assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
    done
}

# A chunk that fails stops the walk where it failed: the one queued behind it never runs.
test_queued_chunk_after_a_failure() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0 check (n < 1 or id <> 1550))"
    sq_fill t 3000
    bump_job 0001_bump 50
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" "chunk 31"
    assert_sq "select count(*), min(id), max(id) from t where n = 1" "1500|1|1500"
    assert_sq "select count(*), sum(rows), max(chunk_no) from sluice_progress" "30|1500|30"
    sq "update t set n = 1 where id = 1550" 2>/dev/null && fail "the CHECK constraint let n = 1 in at id 1550"
    sq "drop table t; create table t (id integer primary key, n int not null default 0)"
    sq_fill t 3000
    sq "update t set n = 1 where id <= 1500"
    run_sluice up --allow-changed-statements
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
}

# A ctl pause or a signal acts from the next chunk: the queued one is withdrawn, only the one running
# commits after it.
test_queued_chunk_withdrawn() {
    sq_make_table 400
    sq_slow_bump_job 20 300000
    sluice_start up
    wait_until 20 sq_rows_done_at_least 0001_bump 40
    wait_until 10 test -S "$CKPT/0001_bump.sluice-ctl"
    run_sluice ctl 0001_bump pause
    assert_rc 0
    local at_pause after
    at_pause=$(sq "select count(*) from sluice_progress")
    wait_until 5 ctl_says "state paused" 0001_bump status
    sleep 1
    after=$(sq "select count(*) from sluice_progress")
    ((after - at_pause <= 1)) || fail "chunks committed after ctl pause answered: $((after - at_pause)) (at most the one running)"
    ((after < 20)) || fail "the job finished before it could be paused"
    run_sluice ctl 0001_bump resume
    assert_rc 0
    wait_until 20 sq_true "select count(*) >= $((after + 2)) from sluice_progress"
    kill -TERM "$SLUICE_PID"
    # counted once the runner took the signal (it withdraws the queued chunk before it says so)
    wait_until 10 grep -q "received SIGTERM" "${_T_BG_FILES[$SLUICE_PID]}.err"
    local at_signal
    at_signal=$(sq "select count(*) from sluice_progress")
    sluice_wait
    assert_rc 3
    after=$(sq "select count(*) from sluice_progress")
    ((after - at_signal <= 1)) || fail "chunks committed after SIGTERM: $((after - at_signal)) (at most the one running)"
    assert_sq "select count(*) from t where n not in (0, 1)" 0
    assert_sq "select count(*) from t where n = 1" "$(sq "select sum(rows) from sluice_progress")"
    run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|400"
}

# skip_items_job BATCH: a job adding 10 to items.v, BATCH rows a chunk, on-error skip.
skip_items_job() {
    write_job 0001_bump <<EOF
-- sluice:table items
-- sluice:batch $1
-- sluice:on-error skip
-- sluice:up
UPDATE items SET v = v + 10 WHERE id BETWEEN :lo AND :hi;
EOF
}

test_on_error_skip_check_constraint() {
    sq_init
    sq "create table items (id integer primary key, v int not null default 0 check (v < 1000))"
    sq_fill items 5000
    sq "update items set v = id % 100; update items set v = 995 where id in (17, 2500, 2501, 4999)"
    skip_items_job 300
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "set aside (on-error skip)" "log"
    assert_contains "$ERR" "CHECK constraint failed" "log"
    # Every other row changed exactly once; the four failing rows untouched.
    assert_sq "select count(*) from items where id not in (17, 2500, 2501, 4999) and v = id % 100 + 10" 4996
    assert_sq "select group_concat(id || ':' || v, ',') from (select id, v from items where id in (17, 2500, 2501, 4999) order by id)" \
        "17:995,2500:995,2501:995,4999:995"
    assert_sq "select group_concat(hi, ',') from (select hi from sluice_progress where skipped order by chunk_no)" \
        '["17"],["2500"],["2501"],["4999"]'
    run_sluice status --json
    assert_rc 0
    local keys
    keys=$(python3 -c 'import json,sys; j=json.load(sys.stdin)[0]; print(",".join(s["key"][0] for s in j["skipped"]), j["state"]); assert all("CHECK constraint failed" in s["error"] for s in j["skipped"]), j["skipped"]' <<<"$OUT")
    assert_eq "$keys" "17,2500,2501,4999 done" "skipped keys in status --json"
    # A second up changes nothing: the rows set aside are not tried again.
    run_sluice up
    assert_rc 0
    assert_sq "select sum(v) from items where id in (17, 2500, 2501, 4999)" 3980
}

test_status_with_many_rows_set_aside() {
    sq_init
    sq "create table items (id integer primary key, v int not null default 0 check (v < 1000))"
    sq_fill items 500
    sq "update items set v = 995 where id % 20 = 0"
    skip_items_job 100
    run_sluice up
    assert_rc 0
    run_sluice status
    assert_rc 0
    assert_eq "$(grep -c '^    skipped \["' <<<"$OUT")" 10 "status lists ten"
    assert_contains "$OUT" 'skipped ["200"]' "the tenth"
    assert_not_contains "$OUT" 'skipped ["220"]' "not the eleventh"
    assert_contains "$OUT" '... and 15 more (25 rows set aside in all): `sluice status 0001_bump --json` lists every one' \
        "the rest counted"
    run_sluice status --json
    assert_eq "$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)[0]["skipped"]))' <<<"$OUT")" 25 \
        "--json lists all"
}

# sluice leaves the journal mode as the application chose it.
test_journal_mode_kept() {
    local mode
    for mode in wal delete; do
        sq_init "$T_DIR/$mode.db" "$mode"
        sq "create table t (id integer primary key, n int not null default 0)"
        sq_fill t 500
        bump_job 0001_bump 100
        rm -f "$CKPT"/*
        run_sluice up
        assert_rc 0
        assert_sq "select min(n), max(n), count(*) from t" "1|1|500"
        assert_sq "pragma journal_mode" "$mode"
    done
}

# synchronous-commit off (the default): in WAL mode each chunk's commit does not wait for the disk
# (synchronous=NORMAL, under which a power loss loses whole transactions, never part of one); in a
# rollback journal, where NORMAL could corrupt the file, and with synchronous-commit on, commits wait
# (FULL). A chunk's statement reads the setting it runs under.
test_synchronous_commit() {
    local mode
    for mode in wal delete; do
        sq_init "$T_DIR/sync-$mode.db" "$mode"
        sq "create table t (id integer primary key, s int)"
        sq_fill t 300
        rm -f "$CKPT"/*
        write_job 0001_sync <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET s = (SELECT synchronous FROM pragma_synchronous) WHERE id BETWEEN :lo AND :hi;
EOF
        run_sluice plan 0001_sync
        assert_rc 0
        if [[ $mode == wal ]]; then
            assert_contains "$OUT" "commits:    each chunk's without waiting for the disk (synchronous-commit off, the default: synchronous=NORMAL)"
        else
            assert_contains "$OUT" "commits:    each chunk's waits for the disk (synchronous=FULL): the file has a rollback journal"
        fi
        run_sluice up
        assert_rc 0
        assert_sq "select s, count(*) from t group by s" "$([[ $mode == wal ]] && echo 1 || echo 2)|300" # NORMAL, FULL
        run_sluice stamp 0001_sync pending
        assert_rc 0
        sed -i 's/^-- sluice:batch 100$/&\n-- sluice:synchronous-commit on/' "$JOBS/0001_sync.sql"
        run_sluice plan 0001_sync
        assert_contains "$OUT" "commits:    each chunk's waits for the disk as synchronous=FULL makes it (synchronous-commit on)"
        run_sluice up
        assert_rc 0
        assert_sq "select s, count(*) from t group by s" "2|300"
        assert_sq "pragma journal_mode" "$mode"
    done
}

# A power loss, or a crash of the machine, takes the last chunks committed without waiting for the disk,
# each with its sluice_progress row, while the checkpoint file may keep them. A test cannot cut the
# power: this one makes the database lose its last three chunks as that does. On the boot the file last
# saw, that is refused, as rows deleted by hand are (nothing changed); with the file last seen on another
# boot (as after a restart), up goes by the database, says why, and every row is changed once.
test_crash_of_the_machine() {
    sq_make_table 3000
    bump_job 0001_bump 100 "-- sluice:pause 50ms"
    sluice_start up
    wait_until 20 sq_true "select count(*) >= 8 from sluice_progress"
    sluice_kill TERM
    assert_rc 3
    sq "begin;
        update t set n = n - 1 where exists (select 1 from sluice_progress p
            where p.chunk_no > (select max(chunk_no) - 3 from sluice_progress)
              and t.id between cast(p.lo ->> 0 as integer) and cast(p.hi ->> 0 as integer));
        delete from sluice_progress where chunk_no > (select max(chunk_no) - 3 from sluice_progress);
        commit"
    local before
    before=$(sq_sum t)
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "records 3 committed chunks"
    assert_contains "$ERR" "that this database's sluice_progress does not have"
    assert_eq "$(sq_sum t)" "$before" "the table after the refusal"
    sqlite3 -bail "$CKPT/0001_bump.sluice" "update job set db_started = db_started + 1"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_bump: the database no longer has 3 chunks that checkpoint file "
    assert_contains "$ERR" "the machine restarted since the file last saw it, and a crash loses the last commits made without waiting for the disk"
    assert_sq "select min(n), max(n), count(*) from t" "1|1|3000"
    assert_chunks 0001_bump 3000 30
}

run_test "integer primary key: every row once, chunks in key order" test_integer_key
run_test "int64 keys at the limits" test_int64_limits
run_test "text key in SQLite's binary order" test_text_key
run_test "composite key of a WITHOUT ROWID table" test_composite_key
run_test "key column declared without a type (integers in it)" test_untyped_key
run_test "BLOB key (16-byte UUIDs, empty blob)" test_blob_key
run_test "text key with COLLATE NOCASE" test_nocase_key
run_test "REAL key: bounds keep every digit, the walk ends" test_real_key
run_test "where limits the rows counted into chunks" test_where_limits_chunks
run_test "several statements per section, one transaction" test_several_statements
run_test "failed chunk rolls back whole; resume exactly once, even without the checkpoint file" test_failed_then_resumed_exactly_once
run_test "requires: false refuses (exit 2), true runs" test_requires
run_test "a fresh walk's rows counted ahead (WAL) or when it begins, the same; a resume counts what is left" test_estimate_counted_ahead
run_test "status, status --json, current, history (--json)" test_status_history_json
run_test "plan: EXPLAIN QUERY PLAN, estimate, bounds; changes nothing" test_plan
run_test "plan warns on a key without an index; up refuses it unless --allow-no-index" test_plan_warns_without_index
run_test "stamp done and pending" test_stamp
run_test "missing database file: clear error, exit 2, nothing created" test_missing_database_file
run_test "a file that is not a database" test_not_a_database
run_test "unknown table and key column: file:line, exit 2" test_unknown_table_and_key
run_test "max-replica-lag refused for SQLite (exit 2, file:line)" test_max_replica_lag_refused
run_test "second runner on the same job and database is refused" test_second_runner_refused
run_test "job file edited after the first chunk: refused unless --allow-changed-statements" test_job_edited_after_first_chunk
run_test "pause and max-rate slow the run down" test_pause_and_max_rate
run_test "chunk-time: the batch converges near the target" test_chunk_time_converges
run_test "ctl status, pause, resume, set batch and pause" test_ctl_pause_resume_set
run_test "ctl pause, then SIGINT: exit 3; the pause holds the next run until ctl resume" test_ctl_pause_then_sigint
run_test "window: --no-wait outside every window exits 3 and changes nothing" test_no_wait_outside_window
run_test "SIGINT and SIGTERM stop with exit 3; up resumes exactly once" test_sigint_then_resume
run_test "on-error skip sets rows failing a CHECK constraint aside" test_on_error_skip_check_constraint
run_test "status lists ten rows set aside and counts the rest" test_status_with_many_rows_set_aside
run_test "journal mode (wal, delete) left as the application set it" test_journal_mode_kept
run_test "synchronous-commit: chunks do not wait for the disk in WAL mode, unless on" test_synchronous_commit
run_test "a crash of the machine lost the last chunks: the next up goes by the database once it restarted" \
    test_crash_of_the_machine
run_test "chunks run queued behind each other; not with a pause or undo images" test_queued_chunks
run_test "a failing chunk: the one queued behind it never runs" test_queued_chunk_after_a_failure
run_test "ctl pause and SIGTERM withdraw the queued chunk: only the running one commits" test_queued_chunk_withdrawn
t_done
