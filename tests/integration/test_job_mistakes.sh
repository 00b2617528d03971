#!/usr/bin/env bash
# test_job_mistakes.sh: one table of the mistakes users make in job files: each refused (exit 2, file:line, what), nothing changed.
. "$(dirname "$0")/../harness/lib.sh"

# t: 300 rows, v = 0, name = 'n' || id.
TCOLS=("v int not null default 0, name text" name "'n' || g")

# Each refusal case writes jobs/0001_bad.sql from a printf %b string (so \0, \r, \x1b and any byte can
# be written), then `up` and `plan 0001_bad` must both exit 2 with "0001_bad.sql:LINE:" (or
# "0001_bad.sql: " where no line applies: LINE -) and every TEXT in stderr, and the database must be
# as it was: no sluice_progress table, the same md5 of t, no checkpoint file.

table_md5() {
    psql_q "select md5(string_agg(t::text, ',' order by id)) from t"
}

# assert_unchanged MD5: t is as it was, and sluice left nothing behind.
assert_unchanged() {
    assert_eq "$(table_md5)" "$1" "md5 of t"
    assert_sql "select to_regclass('sluice_progress') is null and to_regclass('sluice_ranges') is null" t
    local f
    for f in "$CKPT"/*; do
        [[ -e $f ]] && fail "a checkpoint file was written: $f"
    done
    return 0
}

# expect_refused LINE TEXT...: the job already written as 0001_bad.sql is refused by up and by plan.
expect_refused() {
    local line=$1 before cmd where
    shift
    before=$(table_md5)
    where="0001_bad.sql:$line:"
    [[ $line == - ]] && where="0001_bad.sql: "
    for cmd in up plan; do
        if [[ $cmd == up ]]; then run_sluice up; else run_sluice plan 0001_bad; fi
        assert_rc 2
        # plan shows a refusal the server makes among its findings, on stdout, then exits 2
        local said=$ERR
        [[ $cmd == plan ]] && said="$OUT$ERR"
        assert_contains "$said" "$where" "$cmd's output"
        for text in "$@"; do
            assert_contains "$said" "$text" "$cmd's output"
        done
        assert_unchanged "$before"
    done
}

# refused LINE CONTENT TEXT...: write CONTENT (printf %b) as the job, then expect_refused LINE TEXT...
refused() {
    local line=$1 content=$2
    shift 2
    make_table 300 "${TCOLS[@]}"
    printf '%b' "$content" >"$JOBS/0001_bad.sql"
    expect_refused "$line" "$@"
}

H='-- sluice:table t\n'                                                 # line 1
UP='-- sluice:up\nUPDATE t SET v = v + 1 WHERE id BETWEEN :lo AND :hi;\n' # 2 lines

# ---- the table: name, line (- where none applies), job text, what the message must say ----
CASES=(
    # typos in directives
    "typo in a directive name|2|${H}-- sluice:bacth 100\n${UP}|unknown directive \"bacth\"|did you mean \"batch\""
    "section marker in upper case|2|${H}-- sluice:UP\nUPDATE t SET v = 1 WHERE id BETWEEN :lo AND :hi;\n|unknown directive \"UP\"|did you mean \"up\""
    "sluice: in capitals|2|${H}-- SLUICE:batch 5\n${UP}|\"SLUICE:\" must be written \"sluice:\""
    "a space after sluice:|2|${H}-- sluice: batch 5\n${UP}|expected a directive name after"
    "a directive given twice|3|${H}-- sluice:batch 10\n-- sluice:batch 20\n${UP}|directive \"batch\" given twice (first at line 2)"
    "a directive inside the up section|4|${H}${UP}-- sluice:batch 10\n|directive \"batch\" inside the up section"
    "a value on the up marker|2|${H}-- sluice:up now\nUPDATE t SET v = 1 WHERE id BETWEEN :lo AND :hi;\n|-- sluice:up takes no value"
    # numbers and durations
    "batch 0|2|${H}-- sluice:batch 0\n${UP}|batch expects a whole number of rows from 1 to 10000000, got \"0\""
    "batch in words|2|${H}-- sluice:batch lots\n${UP}|batch expects a whole number"
    "pause without a unit|2|${H}-- sluice:pause 5\n${UP}|pause expects a duration"
    "pause in days|2|${H}-- sluice:pause 2d\n${UP}|pause expects a duration"
    "lock-timeout 0ms|2|${H}-- sluice:lock-timeout 0ms\n${UP}|lock-timeout expects a duration greater than zero"
    "statement-timeout 597h, past PostgreSQL's int|2|${H}-- sluice:statement-timeout 597h\n${UP}|statement-timeout 597h is too long: at most 2147483647ms"
    "lock-timeout 2147483648ms|2|${H}-- sluice:lock-timeout 2147483648ms\n${UP}|lock-timeout 2147483648ms is too long: at most 2147483647ms"
    "retries 101|2|${H}-- sluice:retries 101\n${UP}|retries expects a whole number of attempts from 0 to 100"
    "workers 65|2|${H}-- sluice:workers 65\n${UP}|workers expects a whole number of workers from 1 to 64"
    "max-rate 0|2|${H}-- sluice:max-rate 0\n${UP}|max-rate expects a whole number of rows per second"
    # windows
    "window hour 25|2|${H}-- sluice:window 25:00-06:00\n${UP}|window expects time ranges HH:MM-HH:MM"
    "window that never closes|2|${H}-- sluice:window 08:00-08:00\n${UP}|window 08:00-08:00 starts and ends at the same time"
    "window without its dash|2|${H}-- sluice:window 22:00 06:00\n${UP}|window expects"
    # undo and on-error
    "undo snapshot()|2|${H}-- sluice:undo snapshot()\n${UP}|undo expects snapshot(COL, ...), snapshot(*) or down"
    "undo names a column twice|2|${H}-- sluice:undo snapshot(v, V)\n${UP}|undo names column V twice"
    "undo down without a down section|2|${H}-- sluice:undo down\n${UP}|undo down needs a -- sluice:down section"
    "undo snapshot of a column t lacks|2|${H}-- sluice:undo snapshot(nope)\n${UP}|undo column \"nope\" does not exist in table t"
    "undo snapshot of the key|2|${H}-- sluice:undo snapshot(id)\n${UP}|undo column \"id\" is part of the key of table t"
    "undo snapshot(xmin), a system column|2|${H}-- sluice:undo snapshot(xmin)\n${UP}|undo column \"xmin\" does not exist in table t"
    "undo snapshot(ctid), a system column|2|${H}-- sluice:undo snapshot(ctid)\n${UP}|undo column \"ctid\" does not exist in table t"
    # what up statements assign that the snapshot cannot put back
    "snapshot(*) and an up that moves keys: down would bring them back beside the moved ones|4|${H}-- sluice:undo snapshot(*)\n-- sluice:up\nUPDATE t SET id = id + 1000, v = 1 WHERE id BETWEEN :lo AND :hi AND id % 10 = 0;\n|up statement 1 assigns id, a key column of t, but undo snapshot(*) puts rows back by their key|hint: leave the key alone in a job with a snapshot"
    "snapshot(v) and an up that moves keys|4|${H}-- sluice:undo snapshot(v)\n-- sluice:up\nUPDATE t SET v = 1, \"id\" = id + 1000 WHERE id BETWEEN :lo AND :hi;\n|up statement 1 assigns id, a key column of t, but undo snapshot(v) puts rows back by their key"
    "snapshot(*) and a CTE that moves keys|5|${H}-- sluice:undo snapshot(*)\n-- sluice:up\nWITH m AS (\n  UPDATE ONLY public.T AS x SET id = -x.id WHERE id BETWEEN :lo AND :hi RETURNING 1\n) SELECT count(*) FROM m;\n|up statement 1 assigns id, a key column of t"
    "snapshot(name) and an up that writes v too|4|${H}-- sluice:undo snapshot(name)\n-- sluice:up\nUPDATE t SET name = 'x, SET v', v = 7 WHERE id BETWEEN :lo AND :hi;\n|up statement 1 assigns v of t, which undo snapshot(name) does not save: down would leave it changed|hint: save it too: -- sluice:undo snapshot(name, v), or snapshot(*)"
    "snapshot(v) and an ON CONFLICT that writes name|6|${H}-- sluice:undo snapshot(v)\n-- sluice:up\nUPDATE t SET v = 1 WHERE id BETWEEN :lo AND :hi;\nINSERT INTO t (id) SELECT id FROM t WHERE id BETWEEN :lo AND :hi\n  ON CONFLICT (id) DO UPDATE SET name = 'x';\n|up statement 2 assigns name of t, which undo snapshot(v) does not save|snapshot(v, name), or snapshot(*)"
    "snapshot(v) and an up that deletes rows|4|${H}-- sluice:undo snapshot(v)\n-- sluice:up\nDELETE FROM t WHERE id BETWEEN :lo AND :hi AND v > 0;\n|up statement 1 deletes from t, but undo snapshot(v) saves only those columns of t: down could not put the deleted rows back|hint: save whole rows: -- sluice:undo snapshot(*)"
    "on-error maybe|2|${H}-- sluice:on-error maybe\n${UP}|on-error expects stop or skip, got \"maybe\""
    # sections
    "no up section|-|${H}-- sluice:batch 5\n|no up section"
    "no table directive|-|${UP}|no table directive"
    "a second up section|4|${H}${UP}-- sluice:up\nUPDATE t SET v = 2 WHERE id BETWEEN :lo AND :hi;\n|second -- sluice:up section (the first starts at line 2)"
    "an empty up section|2|${H}-- sluice:up\n-- nothing yet\n|the up section is empty"
    "SQL outside a section|2|${H}UPDATE t SET v = 1;\n${UP}|SQL outside a section"
    "SQL after a block comment outside a section|2|${H}/* note */ UPDATE t SET v = 1;\n${UP}|SQL outside a section"
    "a directive inside a block comment|3|${H}/*\n-- sluice:batch 5\n*/\n${UP}|-- sluice:batch inside the /* comment that starts at line 2"
    "an unterminated string|4|${H}${UP}UPDATE t SET name = 'x WHERE id BETWEEN :lo AND :hi;\n|unterminated string literal"
    # transaction control
    "BEGIN in a section|4|${H}${UP}BEGIN;\n|BEGIN is transaction control"
    "COMMIT in a section|4|${H}${UP}COMMIT;\n|COMMIT is transaction control"
    "SET TRANSACTION in a section|4|${H}${UP}SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;\n|SET TRANSACTION is transaction control"
    "VACUUM in a section|4|${H}${UP}VACUUM t;\n|VACUUM cannot run inside a transaction"
    # :lo and :hi
    "no :lo or :hi|2|${H}-- sluice:up\nUPDATE t SET v = v + 1;\n|the up section never uses :lo and :hi"
    "no :hi|2|${H}-- sluice:up\nUPDATE t SET v = v + 1 WHERE id >= :lo;\n|the up section never uses :hi"
    ":lo and :hi only inside a string|2|${H}-- sluice:up\nUPDATE t SET name = ':lo :hi';\n|never uses :lo and :hi"
    ":lo in where|2|${H}-- sluice:where id > :lo\n${UP}|where cannot use :lo or :hi"
    "\$1 in a statement: it would be the chunk's first key|3|${H}-- sluice:up\nUPDATE t SET name = \$1 WHERE id BETWEEN :lo AND :hi;\n|\$1: positional parameters are sluice's own|write :lo or :hi, or the value itself"
    "\$2 in where|2|${H}-- sluice:where name <> \$2\n${UP}|\$2: positional parameters are sluice's own"
    "a where that closes sluice's parenthesis|2|${H}-- sluice:where 1=1) OR (1=1\n${UP}|unbalanced parentheses: a ')' closes one this value did not open"
    "a requires that leaves one open|2|${H}-- sluice:requires (SELECT true\n${UP}|unbalanced parentheses: a '(' is never closed"
    "a key of nine columns|2|${H}-- sluice:key a, b, c, d, e, f, g, h, i\n${UP}|key has 9 columns, at most 8 are supported"
    # bytes
    "a NUL inside a statement|3|${H}-- sluice:up\nUPDATE t SET v = v + 1 WHERE true \0 AND id BETWEEN :lo AND :hi;\n|NUL byte at column 35"
    "a NUL in a directive|2|${H}-- sluice:batch 5\0000\n${UP}|NUL byte at column 18"
    "Latin-1, not UTF-8|4|${H}${UP}UPDATE t SET name = 'caf\xe9' WHERE id BETWEEN :lo AND :hi;\n|invalid UTF-8 (byte 0xE9 at column 25)|iconv -f LATIN1 -t UTF-8"
    "an escape character|2|${H}-- \x1b[2J\n${UP}|control character U+001B at column 4"
    "old Mac line ends (CR alone)|1|${H//\\n/\\r}${UP//\\n/\\r}|carriage return without a line feed"
)

# The same job in UTF-16, with and without a byte order mark: the hint says how to convert it.
test_utf16() {
    make_table 300 "${TCOLS[@]}"
    printf '%b' "${H}${UP}" | iconv -f UTF-8 -t "$1" >"$JOBS/0001_bad.sql"
    expect_refused 1 "the file is UTF-16 ($2)" "iconv -f UTF-16 -t UTF-8"
}

# A FIFO named like a job would hang a plain read forever (no writer comes): refused at once.
test_fifo() {
    make_table 300 "${TCOLS[@]}"
    mkfifo "$JOBS/0001_bad.sql"
    T_CMD_TIMEOUT=20 expect_refused - "it is a FIFO, not a regular file"
}

# A symlink to /dev/zero would be read until memory runs out.
test_dev_zero() {
    make_table 300 "${TCOLS[@]}"
    ln -s /dev/zero "$JOBS/0001_bad.sql"
    T_CMD_TIMEOUT=20 expect_refused - "it is a character device, not a regular file"
}

test_too_large() {
    make_table 300 "${TCOLS[@]}"
    { printf '%b' "${H}${UP}"; head -c $((17 * 1024 * 1024)) /dev/zero | tr '\0' '-'; } >"$JOBS/0001_bad.sql"
    expect_refused - "too large to read" "the limit is 16777216 bytes (16 MiB)"
}

# The issue's example on SQLite, where the cut statement used to update every row each chunk.
test_nul_on_sqlite() {
    sq_init
    sq "create table t (id integer primary key, v int not null default 0)"
    sq_fill t 300
    local before
    before=$(sq_sum t)
    printf '%b' "${H}-- sluice:batch 50\n-- sluice:up\nUPDATE t SET v = v + 1 WHERE true \0 AND id BETWEEN :lo AND :hi;\n" \
        >"$JOBS/0001_bad.sql"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bad.sql:4: NUL byte at column 35"
    assert_eq "$(sq_sum t)" "$before" "t on SQLite"
    assert_sq "select count(*) from sqlite_master where name like 'sluice%'" 0
}

# SQLite has parameters of other forms (?, ?N, :name, @name, $name): it would bind ? and ?1 to the
# chunk's first key and the named ones to NULL. Each is refused, named, before anything is written.
test_parameters_on_sqlite() {
    sq_init
    sq "create table t (id integer primary key, v int not null default 0, name text)"
    sq_fill t 300
    local before p
    before=$(sq "select count(*), sum(v), count(name) from t")
    for p in '?' '?1' ':name' '@name' '$name'; do
        printf '%b' "${H}-- sluice:batch 50\n-- sluice:up\nUPDATE t SET name = $p WHERE id BETWEEN :lo AND :hi;\n" \
            >"$JOBS/0001_bad.sql"
        run_sluice up
        assert_rc 2
        assert_contains "$ERR" "0001_bad.sql:4: this up statement cannot run against the database"
        assert_contains "$ERR" "$p is a parameter sluice does not bind"
        assert_eq "$(sq "select count(*), sum(v), count(name) from t")" "$before" "t on SQLite ($p)"
        assert_sq "select count(*) from sqlite_master where name like 'sluice%'" 0
    done
}

# A key of two columns walked with `id BETWEEN :lo AND :hi`, where :lo and :hi are rows: the server's
# error ("operator does not exist: integer >= record"; SQLite: "row value misused") comes with a hint
# that shows the comparison as a row. PostgreSQL, then SQLite.
test_row_key_compared_as_column() {
    make_table 300 "${TCOLS[@]}"
    psql_q "create unique index t_id_v on t (id, v)"
    printf '%b' "${H}-- sluice:key id, v
${UP}" >"$JOBS/0001_bad.sql"
    expect_refused 4 "this up statement cannot run against the database: 42883 operator does not exist" \
        "hint: the key has 2 columns, so :lo and :hi are rows of 2 values: compare the key as a row, (id, v) BETWEEN :lo AND :hi"
    sq_init
    sq "create table t (id integer, v int not null default 0, primary key (id, v))"
    sq_fill t 300
    local before
    before=$(sq_sum t)
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bad.sql:4: this up statement cannot run against the database: row value misused"
    assert_contains "$ERR" "compare the key as a row, (\"id\", \"v\") BETWEEN :lo AND :hi"
    assert_eq "$(sq_sum t)" "$before" "t on SQLite"
    assert_sq "select count(*) from sqlite_master where name like 'sluice%'" 0
}

# requires, verify and throttle-query only look: one that writes fails, saying why, and changes nothing
# (plan shows the failure and changes nothing either). PostgreSQL, then SQLite.
readonly_case() {
    local directive=$1 rc=$2 text=$3 query=$4
    printf '%b' "${H}-- sluice:$directive $query\n${UP}" >"$JOBS/0001_bad.sql"
    run_sluice up
    assert_rc "$rc"
    assert_contains "$ERR" "$text"
    assert_contains "$ERR" "they run read-only"
}

test_checks_only_look_pg() {
    make_table 300 "${TCOLS[@]}"
    local before del="WITH d AS (DELETE FROM t RETURNING 1) SELECT true"
    before=$(table_md5)
    printf '%b' "${H}-- sluice:requires $del\n${UP}" >"$JOBS/0001_bad.sql"
    run_sluice plan 0001_bad
    assert_contains "$OUT" "read-only transaction"
    assert_eq "$(table_md5)" "$before" "t after plan"
    readonly_case requires 2 "0001_bad.sql:2: requires query failed: cannot execute" "$del"
    assert_eq "$(table_md5)" "$before" "t after up"
    readonly_case throttle-query 2 "0001_bad.sql:2: throttle-query failed: cannot execute" "$del"
    assert_eq "$(table_md5)" "$before" "t after up"
    readonly_case verify 1 "read-only transaction" "$del"
    assert_sql "select min(v), max(v), count(*) from t" "1|1|300"
    assert_eq "$(state_of)" failed
    # nothing left open on the connection: a verify that only looks finishes the job
    printf '%b' "${H}-- sluice:verify SELECT count(*) = 300 FROM t\n${UP}" >"$JOBS/0001_bad.sql"
    run_sluice --allow-changed-statements up
    assert_rc 0
    assert_sql "select min(v), max(v), count(*) from t" "1|1|300"
}

test_checks_only_look_sqlite() {
    sq_init
    sq "create table t (id integer primary key, v int not null default 0)"
    sq_fill t 300
    local before
    before=$(sq_sum t)
    readonly_case requires 2 "0001_bad.sql:2: requires query failed" "DELETE FROM t RETURNING 1"
    assert_eq "$(sq_sum t)" "$before" "t on SQLite"
    readonly_case throttle-query 2 "throttle-query failed: attempt to write a readonly database" \
        "DELETE FROM t RETURNING 1"
    assert_eq "$(sq_sum t)" "$before" "t on SQLite"
    readonly_case verify 1 "attempt to write a readonly database" "DELETE FROM t RETURNING 1"
    assert_sq "select min(v), max(v), count(*) from t" "1|1|300"
    # query_only is off again: the next up writes
    printf '%b' "${H}-- sluice:verify SELECT count(*) = 300 FROM t\n${UP}" >"$JOBS/0001_bad.sql"
    run_sluice --allow-changed-statements up
    assert_rc 0
}

# Up statements that assign columns, accepted: a snapshot(*) job that leaves the key alone goes up and
# comes down whole; a job without a snapshot that moves keys is warned about (plan and up), not refused;
# another table's column named like the key is no key of t.
test_assigned_columns_accepted_pg() {
    make_table 100 "${TCOLS[@]}"
    local before
    before=$(table_md5)
    printf '%b' "${H}-- sluice:batch 10\n-- sluice:undo snapshot(*)\n-- sluice:up\nUPDATE t SET (v, name) = (v + 1, 'moved') WHERE id BETWEEN :lo AND :hi;\n" >"$JOBS/0001_ok.sql"
    run_sluice plan 0001_ok
    assert_rc 0
    assert_not_contains "$OUT$ERR" "warning:    0001_ok.sql"
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) filter (where name = 'moved'), count(*) from t" "100|100"
    run_sluice down 0001_ok
    assert_rc 0
    assert_eq "$(table_md5)" "$before" "md5 of t after down"
    psql_q "drop table sluice_progress, sluice_jobs, sluice_undo cascade; drop table if exists sluice_ranges"
    rm -f "$JOBS"/*.sql "$CKPT"/*
    # no snapshot: moving keys is warned about
    printf '%b' "${H}-- sluice:batch 10\n-- sluice:up\nUPDATE t SET id = id + 1000 WHERE id BETWEEN :lo AND :hi AND id % 10 = 0;\n" >"$JOBS/0002_move.sql"
    run_sluice plan 0002_move
    assert_rc 0
    assert_contains "$OUT" "0002_move.sql:4: up statement 1 assigns id, a key column of t: a row whose key moves ahead of the walk is met again"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0002_move.sql:4: up statement 1 assigns id, a key column of t"
    assert_sql "select count(*) filter (where id > 1000), count(*) from t" "10|100"
    # another table's id, here and in another schema, is not t's key
    psql_q "drop table t, sluice_progress, sluice_jobs cascade; drop table if exists sluice_ranges, sluice_undo"
    rm -f "$JOBS"/*.sql "$CKPT"/*
    make_table 100 "${TCOLS[@]}"
    psql_q "create table u (id int primary key, v int); insert into u select g, 0 from generate_series(1, 100) g;
            create schema other; create table other.t (id int primary key); insert into other.t select generate_series(1, 100)"
    printf '%b' "${H}-- sluice:batch 10\n-- sluice:up\nUPDATE u SET id = id + 1000 WHERE id BETWEEN :lo AND :hi;\nUPDATE other.t x SET id = x.id + 1000 WHERE id BETWEEN :lo AND :hi;\n" >"$JOBS/0003_other.sql"
    run_sluice plan 0003_other
    assert_rc 0
    assert_not_contains "$OUT" "key column"
    run_sluice up
    assert_rc 0
    assert_not_contains "$ERR" "key column"
    assert_sql "select (select count(*) from u where id > 1000), (select count(*) from other.t where id > 1000)" "100|100"
}

# SQLite: the same refusals (key moved, column not saved, a delete under snapshot(COL)) and the same warning.
test_assigned_columns_sqlite() {
    sq_init
    sq "create table t (id integer primary key, v int not null default 0, name text)"
    sq_fill t 100
    local before
    before=$(sq_sum t)
    printf '%b' "${H}-- sluice:undo snapshot(*)\n-- sluice:up\nUPDATE main.T SET ID = id + 1000 WHERE id BETWEEN :lo AND :hi;\n" >"$JOBS/0001_bad.sql"
    local cmd
    for cmd in up "plan 0001_bad"; do
        run_sluice $cmd
        assert_rc 2
        assert_contains "$OUT$ERR" "0001_bad.sql:4: up statement 1 assigns id, a key column of \"t\", but undo snapshot(*) puts rows back by their key"
        assert_eq "$(sq_sum t)" "$before" "t on SQLite"
        assert_sq "select count(*) from sqlite_master where name like 'sluice%'" 0
    done
    printf '%b' "${H}-- sluice:undo snapshot(name)\n-- sluice:up\nUPDATE t SET name = 'x', \"V\" = 2 WHERE id BETWEEN :lo AND :hi;\n" >"$JOBS/0001_bad.sql"
    for cmd in up "plan 0001_bad"; do
        run_sluice $cmd
        assert_rc 2
        assert_contains "$OUT$ERR" "0001_bad.sql:4: up statement 1 assigns V of \"t\", which undo snapshot(name) does not save"
        assert_contains "$OUT$ERR" "hint: save it too: -- sluice:undo snapshot(name, \"V\"), or snapshot(*)"
        assert_eq "$(sq_sum t)" "$before" "t on SQLite"
    done
    printf '%b' "${H}-- sluice:undo snapshot(name)\n-- sluice:up\ndelete from t WHERE id BETWEEN :lo AND :hi;\n" >"$JOBS/0001_bad.sql"
    for cmd in up "plan 0001_bad"; do
        run_sluice $cmd
        assert_rc 2
        assert_contains "$OUT$ERR" "0001_bad.sql:4: up statement 1 deletes rows, but undo snapshot(name) saves only those columns of \"t\""
        assert_eq "$(sq_sum t)" "$before" "t on SQLite"
    done
    rm -f "$JOBS/0001_bad.sql"
    printf '%b' "${H}-- sluice:batch 10\n-- sluice:up\nUPDATE t SET id = id + 1000 WHERE id BETWEEN :lo AND :hi AND id % 10 = 0;\n" >"$JOBS/0002_move.sql"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0002_move.sql:4: up statement 1 assigns id, a key column of \"t\""
    assert_sq "select count(*) from t where id > 1000" 10
}

# SQLite's own ways to write an UPDATE are read too: [name] and `name` quoting, UPDATE OR IGNORE, and
# rowid, _rowid_ or oid for an INTEGER PRIMARY KEY (unless a column has that name).
test_assigned_columns_sqlite_forms() {
    sq_init
    sq "create table t (id integer primary key, v int not null default 0, name text)"
    sq_fill t 100
    sq "create table u (id integer primary key, oid int)"
    sq "insert into u select id, 0 from t"
    local before cmd
    before=$(sq_sum t)
    printf '%b' "${H}-- sluice:undo snapshot(name)\n-- sluice:up\nUPDATE OR IGNORE [t] SET name = 'x', [v] = 2 WHERE id BETWEEN :lo AND :hi;\n" >"$JOBS/0001_bad.sql"
    for cmd in up "plan 0001_bad"; do
        run_sluice $cmd
        assert_rc 2
        assert_contains "$OUT$ERR" "0001_bad.sql:4: up statement 1 assigns v of \"t\", which undo snapshot(name) does not save"
        assert_eq "$(sq_sum t)" "$before" "t on SQLite"
    done
    printf '%b' "${H}-- sluice:undo snapshot(*)\n-- sluice:up\nUPDATE \`t\` SET \`name\` = 'y', RowID = rowid + 1000 WHERE id BETWEEN :lo AND :hi;\n" >"$JOBS/0001_bad.sql"
    for cmd in up "plan 0001_bad"; do
        run_sluice $cmd
        assert_rc 2
        assert_contains "$OUT$ERR" "0001_bad.sql:4: up statement 1 assigns rowid, a key column of \"t\", but undo snapshot(*) puts rows back by their key"
        assert_eq "$(sq_sum t)" "$before" "t on SQLite"
    done
    rm -f "$JOBS/0001_bad.sql"
    # u's oid is a column of its own: snapshot(*) saves it, and down puts it back
    printf '%b' "-- sluice:table u\n-- sluice:batch 30\n-- sluice:undo snapshot(*)\n-- sluice:up\nUPDATE u SET oid = 7 WHERE id BETWEEN :lo AND :hi;\n" >"$JOBS/0001_oid.sql"
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from u where oid = 7" 100
    run_sluice down 0001_oid
    assert_rc 0
    assert_sq "select count(*) from u where oid = 0" 100
    rm -f "$JOBS/0001_oid.sql"
    printf '%b' "${H}-- sluice:batch 10\n-- sluice:up\nUPDATE t SET _rowid_ = _rowid_ + 1000 WHERE id BETWEEN :lo AND :hi AND id % 10 = 0;\n" >"$JOBS/0002_move.sql"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0002_move.sql:4: up statement 1 assigns _rowid_, a key column of \"t\""
    assert_sq "select count(*) from t where id > 1000" 10
}

# What is accepted on purpose: a UTF-8 byte order mark, CRLF line ends, a block comment at the top.
accepted() {
    make_table 300 "${TCOLS[@]}"
    printf '%b' "$1" >"$JOBS/0001_ok.sql"
    run_sluice up
    assert_rc 0
    assert_sql "select min(v), max(v), count(*) from t" "1|1|300"
}

# A second up statement that writes without :lo or :hi runs over every row it matches in each chunk:
# plan and up warn with its line (the section as a whole uses both, so nothing refuses it).
test_unbounded_second_statement_warned() {
    psql_q "create table t (id int primary key, a text, b text);
            insert into t select g, 'a', 'b' from generate_series(1, 100) g"
    write_job 0001_x <<'EOF'
-- sluice:table t
-- sluice:batch 50
-- sluice:up
UPDATE t SET a = 'x' WHERE id BETWEEN :lo AND :hi;
UPDATE t SET b = 'z';
SELECT 1;
EOF
    run_sluice plan 0001_x
    assert_rc 0
    assert_contains "$OUT" "0001_x.sql:5: up statement 2 uses neither :lo nor :hi"
    assert_not_contains "$OUT" "up statement 3 uses"
    run_sluice up
    assert_rc 0
    assert_contains "$ERR" "0001_x.sql:5: up statement 2 uses neither :lo nor :hi"
}

for entry in "${CASES[@]}"; do
    IFS='|' read -r -a fields <<<"$entry"
    run_test "refused: ${fields[0]}" refused "${fields[@]:1}"
done
run_test "refused: UTF-16 with a byte order mark" test_utf16 UTF-16 "it starts with the byte order mark FF FE"
run_test "refused: UTF-16 without one" test_utf16 UTF-16LE "it has a NUL in every other byte"
run_test "refused: a FIFO named 0001_bad.sql, at once" test_fifo
run_test "refused: a symlink to /dev/zero" test_dev_zero
run_test "refused: a 17 MiB job file" test_too_large
run_test "refused on SQLite: a NUL inside a statement, t unchanged" test_nul_on_sqlite
run_test "refused on SQLite: ?, ?1, :name, @name and \$name, named, t unchanged" test_parameters_on_sqlite
run_test "accepted: a UTF-8 byte order mark" accepted "\xef\xbb\xbf${H}-- sluice:batch 70\n${UP}"
run_test "accepted: CRLF line ends" accepted "${H//\\n/\\r\\n}-- sluice:batch 70\r\n${UP//\\n/\\r\\n}"
run_test "accepted: a block comment before the directives" accepted "/* backfill v\n * (ticket 42) */\n${H}${UP}"
run_test "requires, verify and throttle-query that write: refused or failed, nothing changed (PostgreSQL)" \
    test_checks_only_look_pg
run_test "the same on SQLite" test_checks_only_look_sqlite
run_test "a key of two columns compared as one column: refused with a hint that shows the row (both databases)" \
    test_row_key_compared_as_column
run_test "assigned columns accepted: snapshot(*) of non-key columns, moved keys without a snapshot (warned), another table's id" \
    test_assigned_columns_accepted_pg
run_test "assigned columns on SQLite: moved keys and unsaved columns refused with a snapshot, warned without" \
    test_assigned_columns_sqlite
run_test "assigned columns on SQLite written its own ways ([v], \`t\`, UPDATE OR IGNORE, rowid for the key): read, refused with a snapshot" \
    test_assigned_columns_sqlite_forms
run_test "an up statement that writes without :lo or :hi beside one that uses them: plan and up warn" \
    test_unbounded_second_statement_warned
t_done
