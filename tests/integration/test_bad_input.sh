#!/usr/bin/env bash
# test_bad_input.sh: bad job files, databases, checkpoints and usage: clear errors, README's exit codes, no row changed.
. "$(dirname "$0")/../harness/lib.sh"

# The table every test starts from: 300 rows (unless said) with code = id, n = 0, d = 1.
TCOLS=("code int not null, n int not null default 0, d int not null default 1" code g)

# assert_untouched: no row changed, no chunk recorded in the database or in a checkpoint file.
assert_untouched() {
    assert_sql "select count(*) from t where n <> 0" 0
    if sql_true "select to_regclass('sluice_progress') is not null"; then
        assert_sql "select count(*) from sluice_progress" 0
    fi
    local f
    for f in "$CKPT"/*; do
        [[ -e $f ]] || continue
        fail "a checkpoint file was written: $f"
    done
}

# A valid job bumping n by chunks of BATCH (default 100), as JOBS/NAME.sql.
valid_job() {
    write_job "$1" <<EOF
-- sluice:table t
-- sluice:batch ${2:-100}
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
}

# expect_invalid LINE TEXT...: up over the job file already written as 0001_bad.sql exits 2 with a
# message naming 0001_bad.sql:LINE and holding every TEXT, and changes nothing.
expect_invalid() {
    local line=$1 text
    shift
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bad.sql:$line:" "stderr"
    for text in "$@"; do
        assert_contains "$ERR" "$text" "stderr"
    done
    assert_untouched
    # plan validates the same way.
    run_sluice plan 0001_bad
    assert_rc 2
    assert_contains "$ERR" "0001_bad.sql:$line:" "plan's stderr"
}

test_unknown_directive() {
    make_table 300 "${TCOLS[@]}"
    write_job 0001_bad <<'EOF'
-- sluice:table t
-- sluice:batchh 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    expect_invalid 2 "batchh" "did you mean" '"batch"'
}

test_bad_batch_value() {
    make_table 300 "${TCOLS[@]}"
    local value
    for value in lots 0 -5 1.5 ''; do
        write_job 0001_bad <<EOF
-- sluice:table t
-- sluice:key id
-- sluice:batch $value
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
        expect_invalid 3 "batch"
    done
}

test_missing_placeholders() {
    make_table 300 "${TCOLS[@]}"
    write_job 0001_bad <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id >= :lo;
EOF
    expect_invalid 2 ":hi"
    write_job 0001_bad <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1;
EOF
    expect_invalid 2 ":lo"
    # Placeholders only inside a string literal or a comment do not count.
    write_job 0001_bad <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE ':lo' <> ':hi'; -- id BETWEEN :lo AND :hi
EOF
    expect_invalid 2 ":lo"
}

test_unterminated_string() {
    make_table 300 "${TCOLS[@]}"
    write_job 0001_bad <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1
 WHERE id BETWEEN :lo AND :hi AND 'it''s' <> 'abc;
EOF
    expect_invalid 4 "unterminated"
}

test_one_invalid_among_valid() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_first
    write_job 0002_broken <<'EOF'
-- sluice:table t
-- sluice:bacth 10
-- sluice:up
UPDATE t SET d = 2 WHERE id BETWEEN :lo AND :hi;
EOF
    valid_job 0003_last
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0002_broken.sql:2:" "stderr"
    assert_untouched
    # Even when only a valid job is asked for.
    run_sluice up 0001_first
    assert_rc 2
    assert_untouched
}

test_missing_table() {
    make_table 300 "${TCOLS[@]}"
    write_job 0001_bad <<'EOF'
-- sluice:table no_such_table
-- sluice:up
UPDATE no_such_table SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "no_such_table" "stderr"
    assert_contains "$ERR" "0001_bad.sql" "stderr"
    assert_untouched
}

test_missing_key_column() {
    make_table 300 "${TCOLS[@]}"
    write_job 0001_bad <<'EOF'
-- sluice:table t
-- sluice:key no_such_col
-- sluice:up
UPDATE t SET n = n + 1 WHERE no_such_col BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "no_such_col" "stderr"
    assert_contains "$ERR" "0001_bad.sql:2" "stderr"
    assert_untouched
}

test_no_index_on_key() {
    make_table 300 "${TCOLS[@]}"
    write_job 0001_by_code <<'EOF'
-- sluice:table t
-- sluice:key code
-- sluice:batch 70
-- sluice:up
UPDATE t SET n = n + 1 WHERE code BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "index" "stderr"
    assert_contains "$ERR" "--allow-no-index" "stderr (hint)"
    assert_untouched
    run_sluice up --allow-no-index
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|300"
}

test_unreachable_server() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_bump
    local port url start
    port=$(free_port)
    for url in "postgresql://127.0.0.1:1/x" "postgresql://127.0.0.1:$port/x" "host=127.0.0.1 port=$port dbname=x"; do
        start=$SECONDS
        run_sluice --db "$url" up
        assert_rc 1
        # Fast: refused at once, not after minutes of retrying (loose bound).
        ((SECONDS - start <= 15)) || fail "an unreachable server took $((SECONDS - start)) s to report"
        assert_match "$ERR" "connect" "stderr"
        assert_contains "$ERR" "127.0.0.1" "stderr"
    done
    assert_untouched
}

test_bad_db_string() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_bump
    local url
    for url in "host=localhost bogus=1" "postgresql://u:s3cret@/x?bogus=1" "password=s3cret host=localhost bogus=2"; do
        run_sluice --db "$url" up
        assert_rc 2
        assert_match "$ERR" "bogus" "stderr"
        assert_not_contains "$OUT$ERR" "s3cret" "output"
    done
    run_sluice --db "postgresql://u:s3cret@[::1/x" up
    assert_ne "$RC" 0 "exit status for a malformed URL"
    assert_ne "$ERR" "" "stderr for a malformed URL"
    assert_not_contains "$OUT$ERR" "s3cret" "output"
    # Through the environment too.
    SLUICE_DB="postgresql://u:s3cret@/x?bogus=1" run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$CKPT" up
    assert_rc 2
    assert_not_contains "$OUT$ERR" "s3cret" "output"
    assert_untouched
}

test_second_runner_refused() {
    make_table 2000 "${TCOLS[@]}"
    write_job 0001_slow <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 700ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    # About 14 s in all: the second runner gives up after waiting 5 s for the first, long before that.
    sluice_start up
    local first=$SLUICE_PID
    wait_until 20 sql_true "select count(*) >= 1 from sluice_progress"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "already being run" "second runner's stderr"
    kill -0 "$first" || fail "the first runner is gone"
    # The refused runner did not touch the job's state.
    run_sluice status --json
    assert_rc 0
    assert_contains "$OUT" '"state": "running"' "status --json while the first runs"
    assert_contains "$OUT" '"error": null' "status --json while the first runs"
    sluice_wait "$first"
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|2000"
    assert_sql "select count(*) from sluice_progress" 20
}

# Leave 0001_bump failed after one committed chunk (row 150 divides by zero), then fix the data.
failed_after_one_chunk() {
    make_table 300 "${TCOLS[@]}"
    psql_q "update t set d = 0 where id = 150"
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
    assert_file "$CKPT/0001_bump.sluice"
}

# assert_rebuilds_after_move_aside F: following the error's hint (move F aside, run up again) resumes from
# what sluice_progress recorded: the job finishes with every row changed exactly once.
assert_rebuilds_after_move_aside() {
    mv "$1" "$1.bad"
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|300"
    assert_sql "select count(*) from sluice_progress" 3
}

test_truncated_checkpoint() {
    failed_after_one_chunk
    local f="$CKPT/0001_bump.sluice" size
    size=$(stat -c %s "$f")
    truncate -s $((size / 2)) "$f"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bump.sluice" "stderr"
    assert_sql "select count(*) from t where n = 1" 100
    assert_sql "select count(*) from t where n not in (0, 1)" 0
    assert_sql "select count(*) from sluice_progress" 1
    # Cut to nothing: SQLite would take it for a new database; sluice must not take it for a fresh start.
    truncate -s 0 "$f"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bump.sluice" "stderr"
    assert_sql "select count(*) from t where n = 1" 100
    assert_sql "select count(*) from sluice_progress" 1
    assert_rebuilds_after_move_aside "$f"
}

test_garbage_checkpoint() {
    failed_after_one_chunk
    local f="$CKPT/0001_bump.sluice"
    head -c 20000 /dev/urandom >"$f"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bump.sluice" "stderr"
    assert_sql "select count(*) from t where n = 1" 100
    assert_sql "select count(*) from t where n not in (0, 1)" 0
    assert_sql "select count(*) from sluice_progress" 1
    assert_rebuilds_after_move_aside "$f"
    # A garbage file where a job has never run: not mistaken for a fresh start.
    psql_q "create table u (id int primary key, n int not null default 0); insert into u select g, 0 from generate_series(1, 50) g"
    write_job 0002_other <<'EOF'
-- sluice:table u
-- sluice:up
UPDATE u SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    printf 'this is not a checkpoint\n' >"$CKPT/0002_other.sluice"
    run_sluice up 0002_other
    assert_rc 2
    assert_contains "$ERR" "0002_other.sluice" "stderr"
    assert_sql "select count(*) from u where n <> 0" 0
}

test_job_edited_after_first_chunk() {
    failed_after_one_chunk
    # The edit: same meaning, different text. Any change counts.
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 / greatest(d, 1) WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "0001_bump" "stderr"
    assert_contains "$ERR" "changed" "stderr"
    assert_contains "$ERR" "--allow-changed-statements" "stderr (hint)"
    assert_sql "select count(*) from t where n = 1" 100
    assert_sql "select count(*) from sluice_progress" 1
    run_sluice up --allow-changed-statements
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|300"
    assert_sql "select count(*) from sluice_progress" 3
}

# What the database holds may hold anything: a key with an escape sequence in it, an error message that
# quotes it. plan, the log and status show it escaped, never as bytes a terminal would obey.
test_database_text_escaped() {
    psql_q "create table t (k text primary key, n int not null default 0);
            insert into t (k, n) values (E'a\x1b[2Jwiped', 0), (E'b\x1b]0;title\x07', 1), ('c', 0)"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 10
-- sluice:up
UPDATE t SET n = n + 1 WHERE k BETWEEN :lo AND :hi;
SELECT (E'\x1b[31m' || :lo::text)::int;
EOF
    run_sluice plan 0001_bump
    assert_rc 0
    assert_contains "$OUT" 'a\x1b[2Jwiped'
    [[ $OUT != *$'\x1b'* ]] || fail "plan printed an ESC byte: $(od -c <<<"$OUT" | head -20)"
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" '\x1b[31ma\x1b[2Jwiped'
    [[ $ERR != *$'\x1b'* ]] || fail "the log printed an ESC byte"
    run_sluice status
    assert_rc 0
    [[ $OUT$ERR != *$'\x1b'* ]] || fail "status printed an ESC byte"
}

test_bad_usage() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_bump
    run_sluice frobnicate
    assert_rc 2
    assert_contains "$ERR" "frobnicate" "stderr"
    run_sluice up --frobnicate
    assert_rc 2
    assert_contains "$ERR" "--frobnicate" "stderr"
    run_sluice --frobnicate up
    assert_rc 2
    run_sluice stamp 0001_bump sideways
    assert_rc 2
    run_sluice up no_such_job
    assert_rc 2
    assert_contains "$ERR" "no_such_job" "stderr"
    run_sluice plan
    assert_rc 2
    run_sluice --jobs "$T_DIR/no_such_dir" up
    assert_rc 2
    # --version takes nothing after it, as the commands refuse extra arguments
    run_sluice --version extra
    assert_rc 2
    assert_contains "$ERR" '--version takes no arguments, got "extra"' "stderr"
    assert_eq "$OUT" "" "stdout"
    run_sluice up --version
    assert_rc 2
    run_sluice --version
    assert_rc 0
    assert_contains "$OUT" "sluice " "stdout"
    assert_untouched
}

# A checkpoint file that cannot be created (a job name too long for a file name, a --checkpoints that
# is a file) is found before anything is written to the database: exit 2, the path and the reason.
test_checkpoint_cannot_be_created() {
    make_table 100
    local name
    name=$(printf 'a%.0s' {1..250})
    write_job "$name" <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$T_DIR/new-dir" up
    assert_rc 2
    assert_contains "$ERR" "cannot create checkpoint file"
    assert_contains "$ERR" "File name too long"
    assert_sql "select to_regclass('sluice_jobs') is null and to_regclass('sluice_progress') is null" t
    rm -f "$JOBS/$name.sql"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    : >"$T_DIR/not-a-dir"
    run_cmd "$SLUICE" --jobs "$JOBS" --checkpoints "$T_DIR/not-a-dir" up
    assert_rc 2
    assert_contains "$ERR" "not-a-dir"
    assert_sql "select to_regclass('sluice_jobs') is null and to_regclass('sluice_progress') is null" t
    assert_sql "select count(*) from t where n <> 0" 0
}

run_test "unknown directive: file:line and did-you-mean" test_unknown_directive
run_test "bad batch values" test_bad_batch_value
run_test "up section without :lo/:hi" test_missing_placeholders
run_test "unterminated string literal" test_unterminated_string
run_test "one invalid file among valid ones: nothing runs" test_one_invalid_among_valid
run_test "missing table" test_missing_table
run_test "missing key column" test_missing_key_column
run_test "no index on the key: refused unless --allow-no-index" test_no_index_on_key
run_test "unreachable server: exit 1, fast" test_unreachable_server
run_test "bad --db string: clear error, password absent" test_bad_db_string
run_test "second runner on the same job is refused" test_second_runner_refused
run_test "truncated checkpoint file" test_truncated_checkpoint
run_test "garbage checkpoint file" test_garbage_checkpoint
run_test "job file edited after the first chunk: refused unless --allow-changed-statements" test_job_edited_after_first_chunk
# An empty --checkpoints is refused: joined to a job's name it made /JOB.sluice, at the filesystem's root.
# status first: without the check it writes nothing, so the test cannot leave a file in / behind.
test_empty_checkpoints() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_bump
    run_sluice --checkpoints "" status
    assert_rc 2
    assert_contains "$ERR" '--checkpoints "": expected a directory' "stderr"
    run_sluice --checkpoints= up
    assert_rc 2
    assert_contains "$ERR" '--checkpoints "": expected a directory' "stderr"
    [[ ! -e /0001_bump.sluice ]] || fail "a checkpoint file was written at the filesystem's root"
    run_sluice --jobs "" up
    assert_rc 2
    assert_contains "$ERR" '--jobs "": expected' "stderr"
    assert_untouched
}

# An explicit --db that is empty or blank is a mistake, not libpq's PG* defaults: exit 2, whatever
# SLUICE_DB says. PGDATABASE names no database here, so a run that fell back to it could not pass.
test_empty_db() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_bump
    local value
    for value in "" " " $'\t'; do
        PGDATABASE=sl_no_such_database run_sluice --db "$value" up
        assert_rc 2
        assert_contains "$ERR" "--db \"$value\": expected a database" "stderr"
    done
    PGDATABASE=sl_no_such_database run_sluice --db= plan 0001_bump
    assert_rc 2
    run_sluice --db "$SLUICE_DB" --db "" up
    assert_rc 2
    assert_contains "$ERR" '--db "": expected a database' "stderr"
    run_sluice --replica " " up
    assert_rc 2
    assert_contains "$ERR" '--replica " ": expected a replica' "stderr"
    assert_untouched
}

# The environment's durations are checked like options: one sluice cannot read is refused before
# anything runs, naming the variable and its value, rather than silently replaced by the default.
test_bad_env_values() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_bump
    local value
    for value in abc 0s 99999999999999h 10 " 5s"; do
        SLUICE_CONNECT_TIMEOUT=$value run_sluice up
        assert_rc 2
        assert_contains "$ERR" "SLUICE_CONNECT_TIMEOUT=\"$value\": expected a duration greater than zero" "stderr"
    done
    for value in -1s abc 2d; do
        SLUICE_RECONNECT_FOR=$value run_sluice status
        assert_rc 2
        assert_contains "$ERR" "SLUICE_RECONNECT_FOR=\"$value\": expected a duration" "stderr"
    done
    assert_untouched
    # good values, and empty ones (unset), are taken
    SLUICE_CONNECT_TIMEOUT=30s SLUICE_RECONNECT_FOR=0s run_sluice up
    assert_rc 0
    SLUICE_CONNECT_TIMEOUT= SLUICE_RECONNECT_FOR= run_sluice status
    assert_rc 0
}

# A JOB argument is a job's name: with a '/' it made paths outside --checkpoints
# (ck/../../outside.sluice-ctl), so every command taking JOB refuses it, and an empty one.
test_job_arg_with_slash() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_bump
    mkdir -p a/b
    local job cmd extra
    for job in ../../outside a/b/0001_bump "" ../jobs/0001_bump; do
        for cmd in ctl report status up plan stamp down; do
            extra=()
            case $cmd in
            ctl) extra=(status) ;;
            stamp) extra=(done) ;;
            esac
            run_sluice "$cmd" "$job" "${extra[@]}"
            assert_rc 2
            assert_contains "$ERR" "$cmd \"$job\": expected a job's name" "stderr"
        done
    done
    [[ -z $(find "$T_DIR/.." -maxdepth 2 -name 'outside*') ]] || fail "a file was made outside --checkpoints"
    assert_untouched
    run_sluice --checkpoints a/b ctl ../../outside status
    assert_rc 2
    assert_contains "$ERR" 'ctl "../../outside": expected' "stderr"
}

# report -o may not replace the job's checkpoint file, its companions or a job file, however the path
# is spelled (a hard link too), nor write a new *.sql among the jobs; a missing directory or an empty
# -o is a usage error. Exit 2, nothing written.
test_report_out_refused() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_bump
    run_sluice up
    assert_rc 0
    ln "$JOBS/0001_bump.sql" "$T_DIR/linked.sql"
    local before after out
    before=$(cksum "$CKPT"/* "$JOBS"/*)
    for out in "$CKPT/0001_bump.sluice" checkpoints/../checkpoints/0001_bump.sluice ./checkpoints//0001_bump.sluice \
        checkpoints/0001_bump.sluice-lock checkpoints/0001_bump.sluice-ctl checkpoints/0001_bump.sluice-wal \
        "$JOBS/0001_bump.sql" jobs/../jobs/0001_bump.sql jobs/0002_new.sql "$T_DIR/linked.sql"; do
        run_sluice report 0001_bump -o "$out"
        assert_rc 2
        assert_contains "$ERR" "-o $out: that" "stderr"
    done
    after=$(cksum "$CKPT"/* "$JOBS"/*)
    assert_eq "$after" "$before" "the checkpoint and job files"
    [[ ! -e jobs/0002_new.sql && ! -e checkpoints/0001_bump.sluice-ctl ]] || fail "report wrote a file it refused"
    run_sluice report 0001_bump -o ""
    assert_rc 2
    assert_contains "$ERR" '-o "": expected a file name' "stderr"
    run_sluice report 0001_bump -o /missing/dir/x.html
    assert_rc 2
    assert_contains "$ERR" "-o /missing/dir/x.html: its directory is not there" "stderr"
    run_sluice report 0001_bump -o "$T_DIR/page.html"
    assert_rc 0
    [[ -s $T_DIR/page.html ]] || fail "no page written"
}

# A job file whose name down cannot take (base: every job; -N: the last N; -x: an option) would run
# and never be rolled back by name: refused when the jobs are read, naming the file, with a hint.
test_unaddressable_job_names() {
    make_table 300 "${TCOLS[@]}"
    local name
    for name in base -5 -x; do
        rm -f "$JOBS"/*.sql
        valid_job 0001_bump
        valid_job "$name"
        run_sluice up
        assert_rc 2
        assert_contains "$ERR" "$JOBS/$name.sql: a job" "stderr"
        assert_contains "$ERR" "hint: rename it" "stderr"
        assert_untouched
    done
    assert_contains "$ERR" "may not start with '-'" "stderr"
    rm -f "$JOBS/-x.sql"
    valid_job base
    run_sluice plan 0001_bump
    assert_rc 2
    assert_contains "$ERR" 'may not be named "base": down base means every job' "stderr"
    # names that only look like them are jobs as any other
    rm -f "$JOBS/base.sql"
    valid_job 0002_base
    valid_job base2
    run_sluice up
    assert_rc 0
}

# What a refused command must leave as it was: the job's row, the rows, sluice_progress, the checkpoint file.
untouched_snapshot() {
    psql_q "select j::text from sluice_jobs j order by job"
    psql_q "select count(*), sum(n) from t; select count(*) from sluice_progress"
    cksum "$CKPT"/* 2>/dev/null || true
}

# A checkpoint file whose job state is not one sluice knows: up, down, stamp and status refuse it alike,
# naming the file, the value (escaped) and the states expected, and change nothing anywhere.
test_checkpoint_bad_state() {
    failed_after_one_chunk
    local f="$CKPT/0001_bump.sluice" before cmd
    sqlite3 "$f" "update job set state = 'half' || char(27) || 'done'"
    before=$(untouched_snapshot)
    for cmd in "up" "up 0001_bump" "down 0001_bump" "down -1" "stamp 0001_bump done" "status"; do
        # shellcheck disable=SC2086 # the command and its arguments
        run_sluice $cmd
        assert_rc 2
        assert_contains "$ERR" "checkpoint file $f" "$cmd's stderr"
        assert_contains "$ERR" 'its job state is "half\x1bdone", expected one of pending, running, stopped, failed, done, rolling_back, rolled_back' "$cmd's stderr"
        [[ $ERR != *$'\x1b'* ]] || fail "$cmd printed the ESC byte of the file's state"
        assert_eq "$(untouched_snapshot)" "$before" "the database and the checkpoint file after $cmd"
    done
    assert_rebuilds_after_move_aside "$f"
}

# A dangling symbolic link where the job's checkpoint file, or the --checkpoints directory, should be (a
# volume not mounted): every command refuses, naming the link and where it points, makes nothing there,
# and changes nothing; once the link is gone the job resumes.
test_checkpoint_dangling_symlink() {
    failed_after_one_chunk
    local f="$CKPT/0001_bump.sluice" before cmd
    mv "$f" "$T_DIR/saved.sluice"
    ln -s "$T_DIR/gone/0001_bump.sluice" "$f"
    before=$(untouched_snapshot)
    for cmd in "up" "down 0001_bump" "stamp 0001_bump done" "status"; do
        # shellcheck disable=SC2086
        run_sluice $cmd
        assert_rc 2
        assert_contains "$ERR" "checkpoint file $f is a symbolic link to $T_DIR/gone/0001_bump.sluice, which does not exist" "$cmd's stderr"
        assert_eq "$(untouched_snapshot)" "$before" "the database after $cmd"
        [[ ! -e $T_DIR/gone ]] || fail "$cmd made the link's target"
    done
    # the directory
    rm "$f"
    mv "$CKPT" "$T_DIR/saved-dir"
    ln -s "$T_DIR/no-such-dir" "$CKPT"
    before=$(untouched_snapshot)
    for cmd in "up" "down 0001_bump" "status"; do
        # shellcheck disable=SC2086
        run_sluice $cmd
        assert_rc 2
        assert_contains "$ERR" "checkpoint directory $CKPT is a symbolic link to $T_DIR/no-such-dir, which does not exist" "$cmd's stderr"
        assert_eq "$(untouched_snapshot)" "$before" "the database after $cmd"
        [[ ! -e $T_DIR/no-such-dir ]] || fail "$cmd made the link's target"
    done
    rm "$CKPT"
    mv "$T_DIR/saved-dir" "$CKPT"
    mv "$T_DIR/saved.sluice" "$f"
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|300"
}

# Settings libpq parses but refuses before it connects (an sslmode, target_session_attrs or gssencmode it
# does not know, from the string or a PG* variable) are bad input: exit 2 with libpq's words, no
# password; status says so and answers from the checkpoint files, as for any string it cannot use. So is a
# port that is not a number from 1 to 65535 (libpq finds that only when it connects). A
# server nobody listens on, over TCP or a Unix socket (which libpq too finds at once), stays exit 1.
test_bad_db_settings() {
    make_table 300 "${TCOLS[@]}"
    valid_job 0001_bump
    local url cmd said
    for url in "postgresql://u:s3cret@localhost/db?sslmode=bogus|invalid sslmode value: \"bogus\"" \
        "host=x target_session_attrs=nope password=s3cret|invalid target_session_attrs value: \"nope\"" \
        "host=localhost gssencmode=zzz password=s3cret|invalid gssencmode value: \"zzz\""; do
        said=${url#*|}
        url=${url%%|*}
        for cmd in "up" "plan 0001_bump" "down 0001_bump" "stamp 0001_bump done"; do
            # shellcheck disable=SC2086
            run_sluice --db "$url" $cmd
            assert_rc 2
            assert_contains "$ERR" "invalid database connection settings" "$cmd's stderr"
            assert_contains "$ERR" "$said" "$cmd's stderr"
            assert_not_contains "$OUT$ERR" "s3cret" "$cmd's output"
        done
        run_sluice --db "$url" status
        assert_rc 0
        assert_contains "$ERR" "$said" "status's stderr"
        assert_contains "$ERR" "showing what the checkpoint files" "status's stderr"
        assert_not_contains "$OUT$ERR" "s3cret" "status's output"
    done
    # the test's own database, with a PG* variable libpq refuses
    PGSSLMODE=bogus run_sluice up
    assert_rc 2
    assert_contains "$ERR" 'invalid sslmode value: "bogus"' "stderr"
    assert_untouched
    # a port, which libpq reads only when it connects (it failed as a server that does not answer, exit 1):
    # the string's, one of a list, or PGPORT's
    for url in "postgresql://u:s3cret@localhost:99999/db|\"99999\"" "host=a,b port=5432,abc password=s3cret|\"5432,abc\"" \
        "host=localhost port=0|\"0\""; do
        said=${url#*|}
        url=${url%%|*}
        run_sluice --db "$url" up
        assert_rc 2
        assert_contains "$ERR" "invalid database connection string: port $said is not a port number from 1 to 65535"
        assert_not_contains "$OUT$ERR" "s3cret" "up's output"
    done
    PGPORT=x run_sluice --db "host=localhost dbname=x" up
    assert_rc 2
    assert_contains "$ERR" 'port "x" (from PGPORT) is not a port number from 1 to 65535'
    run_sluice --db "host=a,b port=' 5432 ,' connect_timeout=1" up # spaces, and an empty one: the default
    assert_rc 1
    assert_contains "$ERR" "cannot connect to"
    assert_untouched
    # nothing listening: the network's failure, as before
    local port
    port=$(free_port)
    for url in "postgresql://u:s3cret@127.0.0.1:$port/x" "host=$T_DIR port=$port dbname=x password=s3cret"; do
        for cmd in "up" "plan 0001_bump" "down 0001_bump"; do
            # shellcheck disable=SC2086
            run_sluice --db "$url" $cmd
            assert_rc 1
            assert_contains "$ERR" "cannot connect to" "$cmd's stderr"
            assert_not_contains "$OUT$ERR" "s3cret" "$cmd's output"
        done
    done
    assert_contains "$ERR" "No such file or directory" "stderr (the Unix socket)"
    assert_untouched
}

run_test "unknown command, option, argument: exit 2" test_bad_usage
run_test "an empty --checkpoints or --jobs: exit 2" test_empty_checkpoints
run_test "an empty or blank --db or --replica: exit 2" test_empty_db
run_test "SLUICE_CONNECT_TIMEOUT and SLUICE_RECONNECT_FOR sluice cannot read: exit 2" test_bad_env_values
run_test "a JOB argument with a '/', or empty, is refused by every command: exit 2" test_job_arg_with_slash
run_test "report -o: not the job's checkpoint file, its companions or a job file; no missing directory" \
    test_report_out_refused
run_test "job files named base.sql or -N.sql, which down cannot name: refused, exit 2" test_unaddressable_job_names
run_test "text from the database (keys, errors) escaped in plan, the log and status" test_database_text_escaped
run_test "a checkpoint file that cannot be created: exit 2 before the database is touched" \
    test_checkpoint_cannot_be_created
run_test "a checkpoint file with a job state sluice does not know: up, down, stamp, status refuse it, exit 2" \
    test_checkpoint_bad_state
run_test "a dangling symlink as the checkpoint file or directory: exit 2, its target not made" \
    test_checkpoint_dangling_symlink
run_test "connection settings libpq refuses before connecting: exit 2; nobody listening stays exit 1" \
    test_bad_db_settings
t_done
