#!/usr/bin/env bash
# test_commands.sh: status (--json, as README "Commands" shows it), current, history, plan, stamp, upgrade, --help.
. "$(dirname "$0")/../harness/lib.sh"

# The checker check_status runs; it prints the job's error (or nothing) and exits non-zero on a mismatch.
_status_checker() {
    cat <<'PY'
import json, re, sys
job, want = sys.argv[1], json.loads(sys.argv[2])
iso = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
states = {"pending", "running", "stopped", "failed", "done", "rolling_back", "rolled_back"}
doc = json.load(sys.stdin)
assert isinstance(doc, list), "not an array"
mine = None
for o in doc:
    assert isinstance(o, dict), "not an object: %r" % (o,)
    for f in ("job", "state", "rows", "chunks", "last_key", "error", "started_at", "updated_at"):
        assert f in o, "field %s missing in %r" % (f, o)
    assert isinstance(o["job"], str)
    assert o["state"] in states, "bad state %r" % o["state"]
    for f in ("rows", "chunks"):
        assert type(o[f]) is int and o[f] >= 0, "%s is not a count: %r" % (f, o[f])
    lk = o["last_key"]
    assert lk is None or (isinstance(lk, list) and lk and all(isinstance(k, str) for k in lk)), \
        "last_key is not null or an array of strings: %r" % (lk,)
    assert o["error"] is None or isinstance(o["error"], str), "error: %r" % (o["error"],)
    for f in ("started_at", "updated_at"):
        assert o[f] is None or (isinstance(o[f], str) and iso.match(o[f])), "%s is not ISO 8601 UTC: %r" % (f, o[f])
    if o["job"] == job:
        mine = o
assert mine is not None, "no job %s" % job
for f, v in want.items():
    if v == "<iso>":
        assert isinstance(mine[f], str) and iso.match(mine[f]), "%s: expected a time, got %r" % (f, mine[f])
    else:
        assert mine[f] == v, "%s: expected %r, got %r" % (f, v, mine[f])
print(mine["error"] or "", end="")
PY
}
# check_status JOB EXPECTED_JSON: `status --json` is a valid JSON array in which every object has
# the fields README "Commands" shows for it, with their types, and JOB's object has the values in EXPECTED_JSON, where "<iso>"
# stands for any ISO 8601 UTC time ("2026-11-24T10:00:00Z"). Sets STATUS_JSON and JOB_ERROR (the
# job's "error", empty when null).
check_status() {
    run_sluice status --json
    assert_rc 0
    STATUS_JSON=$OUT
    JOB_ERROR=$(python3 -c "$(_status_checker)" "$1" "$2" <<<"$STATUS_JSON" 2>&1) ||
        fail "status --json for $1: ${JOB_ERROR##*$'\n'}"$'\n'"$STATUS_JSON"
}

# A table of N rows (id int key, n counter, d divisor 1) and a job that bumps n in chunks of BATCH.
# setup_bump N BATCH [EXTRA_DIRECTIVES]
setup_bump() {
    make_table "$1" "n int not null default 0, d int not null default 1"
    bump_job 0001_bump "$2" "${3:-}"
}

test_status_json_pending_and_done() {
    setup_bump 250 100
    check_status 0001_bump '{"job": "0001_bump", "state": "pending", "rows": 0, "chunks": 0,
        "last_key": null, "error": null, "started_at": null}'
    run_sluice up
    assert_rc 0
    check_status 0001_bump '{"job": "0001_bump", "state": "done", "rows": 250, "chunks": 3,
        "last_key": ["250"], "error": null, "started_at": "<iso>", "updated_at": "<iso>"}'
    # Times are plausible: today, in UTC, started no later than updated.
    local today
    today=$(date -u +%Y-%m-%d)
    assert_contains "$STATUS_JSON" "\"started_at\": \"$today" "status --json"
    python3 -c '
import json, sys
o = json.load(sys.stdin)[0]
assert o["started_at"] <= o["updated_at"], o' <<<"$STATUS_JSON"
    assert_eq "$(jq -r '.[0].source' <<<"$STATUS_JSON")" database "source"
    # Status reads the database; unreachable, it says so and shows what the checkpoint files say.
    run_sluice --db postgresql://127.0.0.1:1/x status --json
    assert_rc 0
    assert_contains "$ERR" "showing what the checkpoint files"
    # the same, but for the times: the file notes its own clock's, a moment after the database's
    assert_eq "$(jq -c 'del(.[].source, .[].started_at, .[].updated_at, .[].database_error)' <<<"$OUT")" \
        "$(jq -c 'del(.[].source, .[].started_at, .[].updated_at, .[].database_error)' <<<"$STATUS_JSON")" \
        "status --json without a database"
    assert_match "$(jq -r '.[0].database_error' <<<"$OUT")" "^cannot connect to .*127.0.0.1:1/x: "
    local drift
    drift=$(jq -n --argjson a "$OUT" --argjson b "$STATUS_JSON" \
        '[($a[0].started_at, $a[0].updated_at, $b[0].started_at, $b[0].updated_at) | sub("\\.[0-9]+"; "") | fromdate]
         | [(.[0] - .[2]), (.[1] - .[3])] | map(fabs) | max')
    ((drift <= 2)) || fail "the checkpoint file's times are ${drift}s from the database's: $OUT vs $STATUS_JSON"
    assert_eq "$(jq -r '.[0].source' <<<"$OUT")" checkpoint "source without a database"
    # A socket directory with no server in it: libpq fails inside its first call, and sluice reports
    # that from a timer of 0 ms. It says libpq's words at once, not the watchdog's "did not answer"
    # 3 s later (the loop turned once more and waited for the watchdog before).
    local t0 elapsed
    t0=$(date +%s%N)
    run_sluice --db "postgresql:///x?host=$T_DIR/no-server" status --json
    elapsed=$((($(date +%s%N) - t0) / 1000000))
    assert_rc 0
    assert_contains "$ERR" "cannot connect to"
    assert_contains "$ERR" "No such file or directory"
    assert_not_contains "$ERR" "did not answer"
    ((elapsed < 2000)) || fail "status took ${elapsed} ms to find no server behind a socket path"
    assert_eq "$(jq -r '.[0].source' <<<"$OUT")" checkpoint "source without a server"
}

test_status_json_failed_then_resumed() {
    setup_bump 250 100
    # Row 150 is in the second chunk: the first commits, the second fails on every attempt.
    psql_q "update t set d = 0 where id = 150"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
UPDATE t SET n = n / d WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 1
    assert_contains "$ERR" "division by zero" "stderr"
    check_status 0001_bump '{"state": "failed", "rows": 100, "chunks": 1, "last_key": ["100"],
        "started_at": "<iso>", "updated_at": "<iso>"}'
    assert_contains "$JOB_ERROR" "division by zero" "error field"
    assert_match "$JOB_ERROR" "chunk 2" "error field"
    # The failed chunk rolled back as a whole: its first statement's effect is gone too.
    assert_sql "select count(*) from t where n = 1" 100
    assert_sql "select count(*) from t where n = 0" 150
    assert_sql "select count(*) from sluice_progress" 1

    # The cause is fixed in the data: up resumes at chunk 2 and finishes, each row once.
    psql_q "update t set d = 1 where id = 150"
    run_sluice up
    assert_rc 0
    check_status 0001_bump '{"state": "done", "rows": 250, "chunks": 3, "last_key": ["250"], "error": null}'
    assert_sql "select min(n), max(n), count(*) from t" "1|1|250"
    assert_sql "select count(*) from sluice_progress" 3
}

test_failed_in_first_chunk_fixed_file() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 300) g"
    write_job 0001_bad_sql <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 / (id - 5) WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 1
    check_status 0001_bad_sql '{"state": "failed", "rows": 0, "chunks": 0, "last_key": null}'
    assert_contains "$JOB_ERROR" "division by zero" "error field"
    assert_contains "$JOB_ERROR" "chunk 1" "error field"
    assert_sql "select count(*) from t where n <> 0" 0

    # No chunk committed yet, so fixing the file needs no --allow-changed-statements.
    write_job 0001_bad_sql <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 0
    check_status 0001_bad_sql '{"state": "done", "rows": 300, "chunks": 3, "error": null}'
    assert_sql "select min(n), max(n), count(*) from t" "1|1|300"
}

test_status_json_stopped() {
    setup_bump 3000 100 "-- sluice:pause 100ms"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 1 from sluice_progress"
    sluice_kill INT
    assert_rc 3
    check_status 0001_bump '{"state": "stopped", "error": null, "started_at": "<iso>", "updated_at": "<iso>"}'
    local chunks
    chunks=$(python3 -c 'import json,sys; o = json.load(sys.stdin)[0]; print(o["chunks"], o["rows"], o["last_key"][0])' \
        <<<"$STATUS_JSON")
    local c=${chunks%% *}
    assert_eq "$chunks" "$c $((c * 100)) $((c * 100))" "chunks, rows and last_key of the stopped job"
    assert_sql "select count(*) from t where n = 1" "$((c * 100))"
    run_sluice history --json
    assert_rc 0
    python3 -c '
import json, sys
d = json.load(sys.stdin)
assert [(o["job"], o["outcome"], o["rows"]) for o in d] == [("0001_bump", "stopped", int(sys.argv[1]))], d
' "$((c * 100))" <<<"$OUT" || fail "history --json after SIGINT: $OUT"
}

test_status_one_job_and_current() {
    setup_bump 100 50
    write_job 0002_other <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET d = 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up 0001_bump
    assert_rc 0
    # up JOB ran only that job.
    check_status 0002_other '{"state": "pending", "chunks": 0}'
    check_status 0001_bump '{"state": "done", "chunks": 2}'

    run_sluice status 0001_bump
    assert_rc 0
    assert_contains "$OUT" "0001_bump"
    assert_contains "$OUT" "done"
    assert_not_contains "$OUT" "0002_other"
    local plain=$OUT

    run_sluice current 0001_bump
    assert_rc 0
    assert_eq "$OUT" "$plain" "current (alias of status)"

    run_sluice status
    assert_rc 0
    assert_contains "$OUT" "0001_bump"
    assert_contains "$OUT" "0002_other"
    assert_match "$OUT" "0002_other +pending" "status"

    run_sluice status --json 0002_other
    assert_rc 0
    python3 -c '
import json, sys
d = json.load(sys.stdin)
assert [o["job"] for o in d] == ["0002_other"], d' <<<"$OUT" || fail "status --json JOB: $OUT"

    run_sluice status no_such_job
    assert_ne "$RC" 0 "status of an unknown job"

    # --parallel is checked whatever the command; a wrong one changes nothing and says what it expects
    run_sluice --parallel abc status
    assert_rc 2
    assert_contains "$ERR" '--parallel "abc": expected a whole number of targets from 1 to 64'
    run_sluice --parallel -5 history
    assert_rc 2
}

# status from a checkpoint file (the database unreadable) gives the started_at the database gives: when
# the current walk began. It gave the file's first run ever, kept through a rollback and a new up.
test_status_started_at_from_checkpoint() {
    make_table 300
    bump_job --down 0001_bump 100
    run_sluice up
    assert_rc 0
    sleep 1.2
    run_sluice down 0001_bump
    assert_rc 0
    sleep 1.2
    run_sluice up
    assert_rc 0
    local from_db from_file first
    run_sluice status --json
    assert_rc 0
    from_db=$(jq -r '.[0].started_at' <<<"$OUT")
    first=$(sqlite3 "$CKPT/0001_bump.sluice" "select strftime('%Y-%m-%dT%H:%M:%SZ', min(started_at) / 1000, 'unixepoch') from runs")
    SLUICE_DB=postgresql://127.0.0.1:1/nothing run_sluice status --json
    assert_rc 0
    assert_eq "$(jq -r '.[0].source' <<<"$OUT")" checkpoint "the source"
    from_file=$(jq -r '.[0].started_at' <<<"$OUT")
    [[ $first != "$from_db" ]] || fail "the first run began $first, the database says the same"
    python3 -c "
import sys, datetime as d
a, b = (d.datetime.strptime(x, '%Y-%m-%dT%H:%M:%SZ') for x in sys.argv[1:])
sys.exit(abs((a - b).total_seconds()) > 1)" "$from_db" "$from_file" ||
        fail "started_at: the database says $from_db, the checkpoint file $from_file (the first run: $first)"
}

# The status and history tables pad by the columns text takes on a terminal: a key with 'é' (two bytes)
# or '日本' (three bytes and two columns each) shifted the columns after it.
test_status_columns_with_wide_text() {
    make_table 10
    psql_q "create table u (k text primary key, n int not null default 0); insert into u values ('aé日本')"
    bump_job 0001_bump 100
    write_job 0002_é日本 <<'JOB'
-- sluice:table u
-- sluice:up
UPDATE u SET n = n + 1 WHERE k BETWEEN :lo AND :hi;
JOB
    run_sluice up
    assert_rc 0
    run_sluice status
    assert_rc 0
    assert_contains "$OUT" "aé日本"
    local table=$OUT
    run_sluice history
    assert_rc 0
    table+=$'\n'$OUT
    python3 - <<'PY' "$table" || fail "columns do not line up:"$'\n'"$table"
import re, sys, unicodedata
def width(s):
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)
lines = [l for l in sys.argv[1].splitlines() if re.search(r"\d{4}-\d\d-\d\dT", l)]
status = [l for l in lines if l.startswith("000")]
history = [l for l in lines if not l.startswith("000")]
assert len(status) == 2 and len(history) == 2, lines
for group, mark in ((status, r"\d{4}-\d\d-\d\dT"), (status, r"done"), (history, r" up ")):
    at = {width(l[:re.search(mark, l).start()]) for l in group}
    assert len(at) == 1, (mark, at, group)
PY
}

# status and history with no job anywhere: no job file, no checkpoint, nothing in the database.
test_status_with_nothing() {
    mkdir -p "$T_DIR/empty"
    run_cmd "$SLUICE" --jobs "$T_DIR/empty" --checkpoints "$T_DIR/empty/ck" status
    assert_rc 0
    assert_eq "$OUT" "" "status of nothing"
    run_cmd "$SLUICE" --jobs "$T_DIR/empty" --checkpoints "$T_DIR/empty/ck" status --json
    assert_rc 0
    assert_eq "$OUT" "[]" "status --json of nothing"
    run_cmd "$SLUICE" --jobs "$T_DIR/empty" --checkpoints "$T_DIR/empty/ck" history
    assert_rc 0
    # up with no job file (a wrong --jobs, a volume not mounted) does nothing, and says so
    run_cmd "$SLUICE" --jobs "$T_DIR/empty" --checkpoints "$T_DIR/empty/ck" up
    assert_rc 0
    assert_contains "$ERR" "no job files (*.sql) in $T_DIR/empty: nothing to run"
    rm -rf "$T_DIR/empty/ck"
    # reading changes nothing on the runner's disk either: no checkpoint directory made
    write_job 0001_x "$T_DIR/empty" <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    run_cmd "$SLUICE" --jobs "$T_DIR/empty" --checkpoints "$T_DIR/empty/ck" status
    assert_rc 0
    [[ ! -e $T_DIR/empty/ck ]] || fail "status made the checkpoint directory"
}

# A "*.sql" in the jobs directory is a job, and a job is a file (or a link to one): a directory or a
# FIFO named so is refused by every command that reads the jobs directory, naming it (exit 2, nothing
# changed), status as up; once it is gone, a link to a job file is a job like any other.
test_job_entry_not_a_file() {
    setup_bump 100 50
    mv "$JOBS/0001_bump.sql" "$T_DIR/bump.sql"
    ln -s "$T_DIR/bump.sql" "$JOBS/0001_bump.sql"
    mkdir "$JOBS/x.sql"
    mkfifo "$JOBS/0002_fifo.sql"
    local args
    for args in "status" "--json status" "status 0001_bump" "up" "plan 0001_bump" "down base" "stamp 0001_bump done"; do
        # shellcheck disable=SC2086 # the words of args are the arguments
        T_CMD_TIMEOUT=20 run_sluice $args
        assert_rc 2
        assert_contains "$ERR" "$JOBS/x.sql: cannot read it: it is a directory, not a regular file" "sluice $args"
        assert_contains "$ERR" "$JOBS/0002_fifo.sql: cannot read it: it is a FIFO, not a regular file" "sluice $args"
        assert_eq "$OUT" "" "sluice $args: stdout"
    done
    assert_sql "select to_regclass('sluice_progress') is null" t
    assert_sql "select count(*) from t where n <> 0" 0
    rmdir "$JOBS/x.sql"
    rm "$JOBS/0002_fifo.sql"
    run_sluice --json status
    assert_rc 0
    assert_eq "$(jq -c '[.[].job]' <<<"$OUT")" '["0001_bump"]' "status after"
    run_sluice up
    assert_rc 0
    assert_status 0001_bump state done
}

test_history() {
    setup_bump 250 100
    psql_q "update t set d = 0 where id = 150"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:up
UPDATE t SET n = n + 1 / d WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice up
    assert_rc 1
    psql_q "update t set d = 1"
    run_sluice up
    assert_rc 0

    run_sluice history
    assert_rc 0
    assert_match "$OUT" "0001_bump +up +failed +100 +1" "history"
    assert_match "$OUT" "0001_bump +up +done +150 +2" "history"

    run_sluice history --json
    assert_rc 0
    python3 -c '
import json, sys
d = json.load(sys.stdin)
runs = [(o["job"], o["outcome"], o["rows"], o["chunks"]) for o in d]
assert sorted(runs) == [("0001_bump", "done", 150, 2), ("0001_bump", "failed", 100, 1)], runs
' <<<"$OUT" || fail "history --json: $OUT"
}

test_plan() {
    setup_bump 2500 700
    psql_q "analyze t"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "table: +t" "plan"
    assert_match "$OUT" "key: +id" "plan"
    assert_match "$OUT" "index: +t_pkey" "plan"
    assert_match "$OUT" "estimate: .*2500 rows.*[ ~]4 chunks" "plan"
    assert_match "$OUT" ":lo = \(?1\)? +:hi = \(?700\)?" "plan (first chunk)"
    assert_contains "$OUT" "Update on t" "plan (EXPLAIN)"
    assert_contains "$OUT" "t_pkey" "plan (EXPLAIN)"
    assert_not_contains "$OUT$ERR" "Seq Scan" "plan"
    # Changes nothing: no bookkeeping table, no checkpoint file, no row.
    assert_sql "select to_regclass('sluice_progress') is null" t
    assert_eq "$(ls -A "$CKPT")" "" "checkpoint dir after plan"
    assert_sql "select count(*) from t where n <> 0" 0
}

# Right after a job rewrote every row the table holds as many dead rows as live ones, and the planner,
# scaling the last ANALYZE's count by the pages, guesses twice the rows; plan and up count the live ones.
test_plan_estimate_after_rewrite() {
    setup_bump 4000 1000 "-- sluice:where id <= 1000"
    psql_q "analyze t"
    psql_q "update t set d = 2"
    assert_sql "select (reltuples * pg_relation_size('t') / (relpages * 8192.0)) > 7000 from pg_class where relname = 't'" t
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "estimate: +~(9[5-9][0-9]|10[0-4][0-9]) rows in ~1 chunks \\(PostgreSQL.s statistics\\)" "plan (where id <= 1000)"
    sed -i '/sluice:where/d' "$JOBS/0001_bump.sql"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "estimate: +~(39[0-9][0-9]|40[0-9][0-9]) rows in ~4 chunks" "plan (every row)"
    run_sluice --log-format json up
    assert_rc 0
    python3 - "$T_DIR/last.err" <<'PY' || fail "up's start event: $(cat "$T_DIR/last.err")"
import json, sys
starts = [o for o in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")) if o.get("event") == "start"]
assert len(starts) == 1 and 3900 <= starts[0]["rows_estimated"] <= 4100, starts
PY
    assert_sql "select count(*) filter (where n = 1) from t" 4000
}

# Rows inserted, then analyzed in the same session within a second, PostgreSQL 15 counts twice (the
# ANALYZE sets the live count, then the insert's own count, not yet flushed, is added to it) until the
# next VACUUM: a load script's usual ending. The live count never raises the planner's guess, so plan
# says 4000 rows, not 8000.
test_plan_estimate_after_load_and_analyze() {
    psql -XAtq -v ON_ERROR_STOP=1 -c "create table t (id int primary key, n int not null default 0)" \
        -c "insert into t (id) select generate_series(1, 4000)" -c "analyze t"
    bump_job 0001_bump 1000
    wait_until 10 sql_true "select n_live_tup = 8000 from pg_stat_user_tables where relname = 't'"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "estimate: +~(39[0-9][0-9]|40[0-9][0-9]) rows in ~4 chunks" "plan after load and analyze"
}

# A partitioned table keeps no row counts of its own: its partitions' (every level) add up to its, so
# after a rewrite plan and up count the live rows there too, not the planner's guess.
test_plan_estimate_partitioned() {
    psql_q "create table t (id int primary key, n int not null default 0, d int not null default 1)
              partition by range (id);
            create table t_low partition of t for values from (1) to (2001);
            create table t_high partition of t for values from (2001) to (4001) partition by range (id);
            create table t_high_a partition of t_high for values from (2001) to (3001);
            create table t_high_b partition of t_high for values from (3001) to (4001);
            insert into t (id) select g from generate_series(1, 4000) g; analyze t"
    bump_job 0001_bump 1000
    psql_q "update t set d = 2"
    psql_q "update t set d = 3"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "estimate: +~(39[0-9][0-9]|40[0-9][0-9]) rows in ~4 chunks" "plan (every row, 3 partitions)"
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) filter (where n = 1) from t" 4000
}

# A where on a column the job changes matches only the rows left once some are done: a resumed run
# counts the rows done and estimates what its walk has left, instead of taking the where's estimate
# over the table for the whole (past half-way, fewer than the rows done: the job looked done at the
# start).
test_resume_estimate_where_changed() {
    make_table 10000 "n int not null default 0"
    write_job 0001_once <<'EOF2'
-- sluice:table t
-- sluice:batch 200
-- sluice:pause 100ms
-- sluice:where n = 0
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi AND n = 0;
EOF2
    stop_up_after 0001_once 6000
    psql_q "analyze t"
    run_sluice --log-format json up
    assert_rc 0
    python3 - "$T_DIR/last.err" <<'PY' || fail "up's resume event: $(cat "$T_DIR/last.err")"
import json, sys
ev = [o for o in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")) if o.get("event") == "resume"]
assert len(ev) == 1, ev
left = ev[0]["rows_estimated"] - ev[0]["rows_done"]
assert 6000 <= ev[0]["rows_done"] < 10000 and left >= 200, ev
PY
    assert_sql "select count(*) filter (where n = 1) from t" 10000
}

# A role that may not call the statistics functions (a hardened database revoked them from PUBLIC)
# still gets the planner's estimate.
test_plan_estimate_without_stats_functions() {
    local role="${T_DB}_ro" fns="pg_stat_get_live_tuples(oid), pg_stat_get_dead_tuples(oid)"
    psql_q "do \$\$ begin create role $role login password 'ro-pw'; exception when duplicate_object then null; end \$\$"
    setup_bump 3000 1000
    psql_q "analyze t; grant select on t to $role; revoke execute on function $fns from public"
    run_sluice --db "postgresql://$role:ro-pw@${SLUICE_DB#*@}" plan 0001_bump
    psql_q "grant execute on function $fns to public; drop owned by $role; drop role $role"
    assert_rc 0
    assert_match "$OUT" "estimate: +~3000 rows in ~3 chunks" "plan"
}

# A table never analyzed (or only vacuumed, or given its primary key after the load: reltuples set,
# no column statistics) has no estimate: the planner's defaults would say 0.5 % of the rows for a key
# range. plan says so, and what gives one, rather than a made-up number; --sample gives the
# per-chunk figures without a total. Analyzed, it estimates again. An empty partition never analyzed
# is taken for 10 pages of rows by the planner: no estimate either, until ANALYZE of the parent.
test_plan_estimate_unknown_without_statistics() {
    psql_q "create table t (id int not null, n int not null default 0, d int not null default 1)
              with (autovacuum_enabled = off);
            insert into t (id) select g from generate_series(1, 3000) g; alter table t add primary key (id)"
    assert_sql "select reltuples from pg_class where oid = 't'::regclass" 3000
    bump_job 0001_bump 1000 "-- sluice:where id > 1000"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "estimate: +unknown: t has no statistics \\(never analyzed\\)" "plan"
    assert_contains "$OUT" "(hint: ANALYZE t gives an estimate)" "plan"
    assert_not_contains "$OUT" " rows in ~" "plan"
    run_sluice plan 0001_bump --sample 2
    assert_rc 0
    assert_match "$OUT" "rows: +unknown" "plan --sample"
    assert_not_contains "$OUT" "total time at the job's pace" "plan --sample"
    psql_q "analyze t"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "estimate: +~(19[5-9][0-9]|20[0-4][0-9]) rows in ~2 chunks" "plan, analyzed"
    psql_q "drop table t;
            create table t (id int primary key, n int not null default 0, d int not null default 1)
              partition by range (id);
            create table t_a partition of t for values from (1) to (3001);
            create table t_b partition of t for values from (3001) to (6001);
            insert into t (id) select g from generate_series(1, 3000) g; analyze t_a"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "estimate: +unknown: t has no statistics" "plan, an empty partition never analyzed"
    psql_q "analyze t"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "estimate: +~(19[5-9][0-9]|20[0-4][0-9]) rows in ~2 chunks" "plan, partitions analyzed"
}

# SQLite counts the rows: with a where, those the where keeps, not the table's.
test_plan_estimate_sqlite_where() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 2000
    bump_job 0001_bump 100 "-- sluice:where id % 4 = 0"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_match "$OUT" "estimate: +~500 rows in ~5 chunks \\(counted\\)" "plan"
    run_sluice --log-format json up
    assert_rc 0
    assert_contains "$ERR" '"rows_estimated":500' "up's start"
}

# A name the job file quotes ("Mixed", a mixed-case name) is printed quoted once, as written; an
# unquoted column, as the database folds it (the name that was looked for). PostgreSQL, then SQLite.
test_quoted_names_in_messages() {
    psql_q 'create table "Mixed" (id int primary key, n int not null default 0)'
    sqlite3 "$T_DIR/l.db" 'create table "Mixed" (id integer primary key, n int not null default 0)'
    local db case table key undo want
    for db in "$SLUICE_DB" "sqlite:$T_DIR/l.db"; do
        for case in '"Nope"||||table "Nope" does not exist' \
            'public."Nope"||||table public."Nope" does not exist' \
            '"Mixed"|-- sluice:key "Id"|||key column "Id" does not exist in table "Mixed"' \
            '"Mixed"|-- sluice:key Idx|||key column "idx" does not exist in table "Mixed"' \
            '"Mixed"||-- sluice:undo snapshot("N")||undo column "N" does not exist in table "Mixed"'; do
            IFS='|' read -r table key undo _ want <<<"$case"
            # SQLite's schema is main, and its names ignore case: "Id" is id there
            [[ $db == sqlite:* && ($table == public.* || $want == *'"Id"'* || $want == *'"N"'*) ]] && continue
            printf -- '-- sluice:table %s\n%s\n%s\n-- sluice:up\nUPDATE "Mixed" SET n = 1 WHERE id BETWEEN :lo AND :hi;\n' \
                "$table" "$key" "$undo" | write_job 0001_named
            run_sluice --db "$db" plan 0001_named
            assert_rc 2
            assert_contains "$OUT$ERR" "$want" "plan ($db)"
            assert_not_contains "$OUT$ERR" '""' "plan ($db)"
            run_sluice --db "$db" --log-format json up
            assert_rc 2
            assert_contains "$ERR" "${want//\"/\\\"}" "up --log-format json ($db)"
            assert_not_contains "$ERR" '\"\"' "up --log-format json ($db)"
        done
    done
}

test_plan_warns_without_index() {
    psql_q "create table t (id int primary key, code int not null, n int not null default 0);
            insert into t (id, code) select g, g from generate_series(1, 2000) g; analyze t"
    write_job 0001_by_code <<'EOF'
-- sluice:table t
-- sluice:key code
-- sluice:batch 500
-- sluice:up
UPDATE t SET n = n + 1 WHERE code BETWEEN :lo AND :hi;
EOF
    # up refuses the job without an index, so plan exits 2 like up, once it has shown everything
    run_sluice plan 0001_by_code
    assert_rc 2
    assert_match "$OUT$ERR" "index: +NONE" "plan"
    assert_contains "$OUT" "warning: no btree index on the key: create one before running; up refuses this job unless --allow-no-index"
    assert_match "$OUT$ERR" "warning:.*Seq Scan" "plan"
    assert_contains "$ERR" "plan 0001_by_code: up refuses this job: 1 reason above"
    run_sluice --allow-no-index plan 0001_by_code
    assert_rc 0
    assert_contains "$OUT" "(--allow-no-index: up walks it anyway)"
    assert_sql "select to_regclass('sluice_progress') is null" t
    assert_eq "$(ls -A "$CKPT")" "" "checkpoint dir after plan"
    assert_sql "select count(*) from t where n <> 0" 0
}

# plan is the dry run a pipeline can gate a deploy on: what up refuses, plan shows and exits 2 for too
# (a statement the server cannot plan), and exits 0 once up would start. A requires not true yet is
# shown and not counted: what it waits for (an earlier job of the same up) may not have happened.
test_plan_refuses_like_up() {
    setup_bump 300 100 "-- sluice:requires SELECT count(*) = 0 FROM t WHERE n > 0"
    psql_q "update t set n = 1 where id = 7"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_contains "$OUT" "-> not true (up refuses)"
    run_sluice up
    assert_rc 2
    psql_q "update t set n = 0 where id = 7"
    run_sluice plan 0001_bump
    assert_rc 0
    assert_contains "$OUT" "-> true (up may start)"
    # a statement naming a column the table lacks
    sed -i 's/SET n = n + 1/SET nn = n + 1/' "$JOBS/0001_bump.sql"
    run_sluice plan 0001_bump
    assert_rc 2
    assert_contains "$OUT" "warning:    up refuses this job: "
    assert_contains "$OUT" "this up statement cannot run against the database: 42703"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "this up statement cannot run against the database: 42703"
    assert_sql "select to_regclass('sluice_progress') is null" t
    assert_sql "select count(*) from t where n <> 0" 0
}

test_stamp_done_skips() {
    setup_bump 300 100
    run_sluice stamp 0001_bump "done"
    assert_rc 0
    check_status 0001_bump '{"state": "done"}'
    run_sluice up
    assert_rc 0
    assert_sql "select count(*) from t where n <> 0" 0
    assert_sql "select count(*) from sluice_progress" 0
    check_status 0001_bump '{"state": "done"}'
}

test_stamp_pending_reruns() {
    setup_bump 300 100
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n) from t" "1|1"
    run_sluice stamp 0001_bump pending
    assert_rc 0
    check_status 0001_bump '{"state": "pending", "rows": 0, "chunks": 0, "last_key": null}'
    run_sluice up
    assert_rc 0
    # From the start: every row once more, not once or three times.
    assert_sql "select min(n), max(n), count(*) from t" "2|2|300"
    check_status 0001_bump '{"state": "done", "rows": 300, "chunks": 3, "last_key": ["300"]}'
    assert_sql "select count(*) from sluice_progress where job = '0001_bump'" 3
}

test_stamp_refused_while_running_or_unknown() {
    setup_bump 2000 100 "-- sluice:pause 300ms"
    sluice_start up
    wait_until 20 sql_true "select count(*) >= 1 from sluice_progress"
    run_sluice stamp 0001_bump "done"
    assert_rc 2
    assert_contains "$ERR" "0001_bump" "stderr"
    run_sluice stamp 0001_bump pending
    assert_rc 2
    sluice_kill INT
    assert_rc 3
    check_status 0001_bump '{"state": "stopped"}'
    run_sluice up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|2000"

    run_sluice stamp no_such_job "done"
    assert_rc 2
    assert_contains "$ERR" "no_such_job" "stderr"
}

test_upgrade_alias() {
    setup_bump 120 50
    run_sluice upgrade
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|120"
    check_status 0001_bump '{"state": "done", "rows": 120, "chunks": 3}'
}

test_help() {
    local cmd
    run_sluice --help
    assert_rc 0
    for cmd in up status history plan stamp; do
        assert_contains "$OUT$ERR" "$cmd" "--help"
    done
    run_sluice -h
    assert_rc 0
    for cmd in up status history plan stamp upgrade current; do
        run_sluice "$cmd" --help
        assert_rc 0
        assert_contains "$OUT$ERR" "usage:" "$cmd --help"
    done
    # --help runs nothing, even with a job pending.
    setup_bump 10 5
    run_sluice up --help
    assert_rc 0
    assert_sql "select count(*) from t where n <> 0" 0
}

# down works from what the database records as applied: a job whose file was moved out of --jobs is
# not taken for never run. One it would have to roll back is refused (exit 2, nothing changed), naming
# the job and its file; once the file is back, down goes on. run_unfiled_downs TABLE_CHECK: the checks,
# TABLE_CHECK a function asserting the table is as both jobs left it.
write_unfiled_jobs() {
    bump_job 0001_a 100 "-- sluice:undo snapshot(n)"
    bump_job --down 0002_b 100
}

run_unfiled_downs() {
    mkdir -p "$T_DIR/aside"
    mv "$JOBS/0002_b.sql" "$T_DIR/aside/"
    run_sluice down 0001_a
    assert_rc 2
    assert_contains "$ERR" "down 0001_a: a job is applied but has no job file: 0002_b (done; no $JOBS/0002_b.sql)"
    assert_contains "$ERR" "hint: put the job file back in the jobs directory"
    assert_not_contains "$ERR" "0001_a: rolled back"
    "$1" 2
    run_sluice down -1
    assert_rc 2
    assert_contains "$ERR" "0002_b (done; no $JOBS/0002_b.sql)"
    run_sluice down base
    assert_rc 2
    assert_contains "$ERR" "0002_b (done; no"
    "$1" 2
    mv "$JOBS/0001_a.sql" "$T_DIR/aside/"
    run_sluice down base
    assert_rc 2
    assert_contains "$ERR" "down base: jobs are applied but have no job file: 0001_a (done; no 0001_a.sql), 0002_b"
    assert_not_contains "$ERR" "nothing to roll back"
    run_sluice down -1
    assert_rc 2
    assert_not_contains "$ERR" "only 0 jobs"
    assert_contains "$ERR" "0002_b (done; no 0002_b.sql)"
    run_sluice down -2
    assert_rc 2
    assert_contains "$ERR" "0001_a (done; no 0001_a.sql), 0002_b (done; no 0002_b.sql)"
    "$1" 2
    # the newest back: down -1 rolls it back; base still needs the other's file
    mv "$T_DIR/aside/0002_b.sql" "$JOBS/"
    run_sluice down -1
    assert_rc 0
    assert_contains "$ERR" "0002_b: rolled back"
    "$1" 1
    run_sluice down base
    assert_rc 2
    assert_contains "$ERR" "0001_a (done; no $JOBS/0001_a.sql)"
    mv "$T_DIR/aside/0001_a.sql" "$JOBS/"
    run_sluice down base
    assert_rc 0
    "$1" 0
}

pg_table_at() {
    assert_sql "select min(n), max(n), count(*) from t" "$1|$1|300"
}

test_down_with_job_file_missing() {
    make_table 300
    write_unfiled_jobs
    run_sluice up
    assert_rc 0
    pg_table_at 2
    run_unfiled_downs pg_table_at
    assert_sql "select string_agg(state, ',' order by job) from sluice_jobs" "rolled_back,rolled_back"
}

sq_table_at() {
    assert_sq "select min(n), max(n), count(*) from t" "$1|$1|300"
}

test_down_with_job_file_missing_sqlite() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 300
    write_unfiled_jobs
    run_sluice up
    assert_rc 0
    sq_table_at 2
    run_unfiled_downs sq_table_at
    assert_sq "select group_concat(state, ',') from (select state from sluice_jobs order by job)" "rolled_back,rolled_back"
}

run_test "status --json: pending and done" test_status_json_pending_and_done
run_test "status --json: failed (error names SQL error and chunk), then up resumes" test_status_json_failed_then_resumed
run_test "failure in the first chunk, job file fixed, up finishes" test_failed_in_first_chunk_fixed_file
run_test "status --json: stopped" test_status_json_stopped
run_test "status JOB and the current alias" test_status_one_job_and_current
run_test "status, history and up with no job anywhere" test_status_with_nothing
run_test "a directory or FIFO named *.sql is refused by status as by up, plan, down, stamp; a link is a job" \
    test_job_entry_not_a_file
run_test "history lists each up run with rows" test_history
run_test "status from a checkpoint file: started_at is when the current walk began, as the database says" \
    test_status_started_at_from_checkpoint
run_test "status and history line up their columns with non-ASCII keys and job names" \
    test_status_columns_with_wide_text
run_test "plan shows table, key, index, estimate, bounds, EXPLAIN; changes nothing" test_plan
run_test "plan and up estimate the live rows, not the planner's guess that counts a rewrite's dead rows" test_plan_estimate_after_rewrite
run_test "plan estimates a partitioned table's live rows from its partitions', every level" test_plan_estimate_partitioned
run_test "rows inserted and analyzed in one session, counted twice by PostgreSQL 15: plan estimates them once" \
    test_plan_estimate_after_load_and_analyze
run_test "a resumed up estimates the rows its walk has left, not a where the job changes over the table" test_resume_estimate_where_changed
run_test "plan estimates from the planner alone for a role refused the statistics functions" \
    test_plan_estimate_without_stats_functions
run_test "plan: a table never analyzed has no estimate, and plan says what gives one" \
    test_plan_estimate_unknown_without_statistics
run_test "plan (SQLite): the estimate counts the rows a where keeps" test_plan_estimate_sqlite_where
run_test "a quoted table, key or undo column is named in messages quoted once" test_quoted_names_in_messages
run_test "plan warns on a missing index and a Seq Scan" test_plan_warns_without_index
run_test "plan exits 2 where up refuses: a statement the server cannot plan; requires not true is shown" \
    test_plan_refuses_like_up
run_test "stamp done makes up skip the job" test_stamp_done_skips
run_test "stamp pending makes up run the job again from the start" test_stamp_pending_reruns
run_test "stamp is refused while the job runs, and for an unknown job" test_stamp_refused_while_running_or_unknown
run_test "upgrade is an alias of up" test_upgrade_alias
run_test "--help and COMMAND --help exit 0" test_help
run_test "down refuses, changing nothing, to skip an applied job whose file is missing (PostgreSQL)" \
    test_down_with_job_file_missing
run_test "down refuses, changing nothing, to skip an applied job whose file is missing (SQLite)" \
    test_down_with_job_file_missing_sqlite

t_done
