#!/usr/bin/env bash
# test_fleet.sh: one job across a fleet: four real PostgreSQL servers (the test's and three started here) and a
# SQLite file, --parallel, a target that dies, kill -9 across the fleet, targets files that are wrong, ctl, failover.
. "$(dirname "$0")/../harness/lib.sh"
. "$(dirname "$0")/../harness/clusters.sh"

ROWS=8000

# fleet_up N: the test's database and N-1 new servers, each with t(id, n) of ROWS rows; targets.txt names them.
make_fleet() {
    local n=$1 i
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, $ROWS)"
    : >"$T_DIR/targets.txt"
    chmod 600 "$T_DIR/targets.txt"
    echo "# the test's own server first" >>"$T_DIR/targets.txt"
    echo "main $SLUICE_DB" >>"$T_DIR/targets.txt"
    for ((i = 2; i <= n; i++)); do
        cluster_start "s$i"
        cluster_q "s$i" "create table t (id int primary key, n int not null default 0);
                         insert into t (id) select generate_series(1, $ROWS)"
        echo "shard$i   ${CLUSTER_URL[s$i]}" >>"$T_DIR/targets.txt"
    done
    unset SLUICE_DB
}

# target_q NAME SQL: SQL on a target of make_fleet.
target_q() {
    if [[ $1 == main ]]; then psql_q "$2"; else cluster_q "s${1#shard}" "$2"; fi
}

all_targets() {
    echo main shard2 shard3 shard4
}

assert_every_row_once() {
    # shellcheck disable=SC2046 # one word each
    assert_every_row_once_on $(all_targets)
}

assert_every_row_once_on() {
    local t
    for t in "$@"; do
        assert_eq "$(target_q "$t" "select min(n) || '|' || max(n) || '|' || count(*) from t")" "1|1|$ROWS" "t on $t"
    done
}

# The most targets whose first and last chunk commits overlap at one moment.
max_overlap() {
    local t rows=""
    for t in $(all_targets); do
        rows+=$(target_q "$t" "select extract(epoch from min(committed_at)) || ' ' || extract(epoch from max(committed_at))
                                 from sluice_progress")$'\n'
    done
    python3 -c '
import sys
iv = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
print(max(sum(1 for a, b in iv if a <= s <= b) for s, _ in iv))' <<<"$rows"
}

# A fleet seen from outside: one metrics endpoint whose series name their target, JSON log lines that each
# name the target and the job they are about, and a report page per target.
test_metrics_logs_and_reports() {
    make_fleet 2
    bump_job 0001_bump 200 "-- sluice:pause 20ms" "-- sluice:undo snapshot(n)"
    sluice_start --targets "$T_DIR/targets.txt" --metrics 127.0.0.1:0 --log-format json up
    local err="$T_DIR/bg.$_T_BG_COUNT.err" port scrape
    wait_until 20 grep -q 'metrics at http://127.0.0.1:' "$err"
    port=$(sed -nE 's|.*metrics at http://127\.0\.0\.1:([0-9]+)/metrics.*|\1|p' "$err" | head -n 1)
    wait_until 30 sql_true "select count(*) >= 3 from sluice_progress"
    scrape=$(curl -sS --max-time 5 "http://127.0.0.1:$port/metrics")
    assert_contains "$scrape" 'sluice_rows_total{job="0001_bump",target="main"}'
    assert_contains "$scrape" 'sluice_rows_total{job="0001_bump",target="shard2"}'
    sluice_wait
    assert_rc 0
    assert_every_row_once_on main shard2
    python3 -c '
import json, sys
done, ended = {}, {}
for n, line in enumerate(sys.stdin, 1):
    if line.startswith("==") and "swapcontext" in line:
        continue  # the sanitizer build says once that it has fibers to follow
    o = json.loads(line)  # every line is one JSON object
    if o["event"] == "done":
        done[o.get("target")] = o["job"]
    if o["event"] == "fleet_target":  # how each target ended, named
        ended[o.get("target")] = (o["outcome"], o["exit"])
    if o["event"] in ("start", "done", "progress"):
        assert o.get("target") in ("main", "shard2") and o["job"] == "0001_bump", (n, o)
        assert not o["msg"].startswith("["), (n, o)  # the target is a field, not a prefix
assert done == {"main": "0001_bump", "shard2": "0001_bump"}, done
assert ended == {"main": ("done", 0), "shard2": ("done", 0)}, ended' <"$err" ||
        fail "JSON log lines of a fleet: $(head -c 3000 "$err")"
    pushd "$T_DIR" >/dev/null || return 1
    run_sluice --targets "$T_DIR/targets.txt" report 0001_bump
    popd >/dev/null || return 1
    assert_rc 0
    assert_file "$T_DIR/0001_bump.main.report.html"
    assert_file "$T_DIR/0001_bump.shard2.report.html"
    run_sluice --targets "$T_DIR/targets.txt" report 0001_bump -o "$T_DIR/one.html"
    assert_rc 2
    assert_contains "$ERR" "-o names one file"
    # A server's notices are the target's lines too, each one line: a line feed in one cannot start a
    # log line of the server's choosing.
    local t
    for t in main shard2; do
        target_q "$t" "create function noisy(lo int, hi int) returns void language plpgsql as \$\$
            begin raise notice '%', 'chunk ' || lo || '..' || hi || chr(10) || 'forged: done'; end \$\$"
    done
    write_job 0002_noisy <<'EOF'
-- sluice:table t
-- sluice:batch 4000
-- sluice:up
SELECT noisy(:lo, :hi);
EOF
    run_sluice --targets "$T_DIR/targets.txt" up 0002_noisy
    assert_rc 0
    assert_contains "$ERR" "[main] server: NOTICE:  chunk 1..4000 forged: done"
    assert_contains "$ERR" "[shard2] server: NOTICE:  chunk 4001..8000 forged: done"
    assert_not_contains "$ERR" $'\nforged'
    run_sluice --targets "$T_DIR/targets.txt" stamp 0002_noisy pending
    run_sluice --targets "$T_DIR/targets.txt" --log-format json up 0002_noisy
    assert_rc 0
    python3 -c '
import json, sys
seen = set()
for line in sys.stdin:
    if line.startswith("==") and "swapcontext" in line:
        continue
    o = json.loads(line)
    if o["msg"].startswith("server: NOTICE"):
        assert o.get("target") in ("main", "shard2") and o["job"] == "0002_noisy", o
        seen.add(o["target"])
assert seen == {"main", "shard2"}, seen' <<<"$ERR" || fail "notices in JSON lines: $(head -c 3000 <<<"$ERR")"
}

test_up_and_down_parallel_2() {
    make_fleet 4
    bump_job 0001_bump 200 "-- sluice:pause 10ms" "-- sluice:undo snapshot(n)"
    local before
    before=$(for t in $(all_targets); do target_q "$t" "select md5(string_agg(t::text, ',' order by id)) from t"; done)
    run_sluice --targets "$T_DIR/targets.txt" --parallel 2 up
    assert_rc 0
    assert_every_row_once
    local overlap
    overlap=$(max_overlap)
    diag "most targets running at once: $overlap"
    ((overlap <= 2)) || fail "$overlap targets ran at once with --parallel 2"
    assert_contains "$ERR" "[shard3] 0001_bump: done"
    assert_contains "$ERR" "fleet: shard4 (${T_DIR}/targets.txt:5): done"
    # status: one row per target and job, "target" in JSON; each target's checkpoints in its own directory
    run_sluice --targets "$T_DIR/targets.txt" status --json
    assert_rc 0
    assert_eq "$(jq -r '[.[] | .target + ":" + .state] | join(" ")' <<<"$OUT")" \
        "main:done shard2:done shard3:done shard4:done" "status --json"
    assert_file "$CKPT/shard3/0001_bump.sluice"
    run_sluice --targets "$T_DIR/targets.txt" history
    assert_rc 0
    assert_contains "$OUT" "shard2"
    run_sluice --targets "$T_DIR/targets.txt" --parallel 2 down 0001_bump
    assert_rc 0
    assert_eq "$(for t in $(all_targets); do target_q "$t" "select md5(string_agg(t::text, ',' order by id)) from t"; done)" \
        "$before" "every target after down"
}

# A target whose server dies mid-run: the others finish, exit 1; once it is back, up finishes it exactly once.
test_target_dies() {
    export SLUICE_RECONNECT_FOR=3s # a dead server is given up on in seconds, not two minutes
    make_fleet 4
    bump_job 0001_bump 200 "-- sluice:pause 30ms" "-- sluice:undo snapshot(n)"
    sluice_start --targets "$T_DIR/targets.txt" --parallel 4 up
    wait_until 30 sql_true "select count(*) >= 3 from sluice_progress"
    wait_until 30 cluster_true s3 "select count(*) = 1 from pg_tables where tablename = 'sluice_progress'"
    cluster_stop s3
    sluice_wait
    assert_rc 1
    assert_contains "$ERR" "fleet: shard3"
    assert_match "$ERR" "fleet: shard3 \\([^)]*\\): failed"
    local t
    for t in main shard2 shard4; do
        assert_eq "$(target_q "$t" "select min(n) || '|' || max(n) from t")" "1|1" "t on $t"
    done
    cluster_restart s3
    run_sluice --targets "$T_DIR/targets.txt" up
    assert_rc 0
    assert_contains "$ERR" "[main] 0001_bump: already done"
    assert_every_row_once
}

# kill -9 of the runner at random moments while all four run, once with the checkpoints lost: exactly once.
test_kill9_across_the_fleet() {
    ROWS=60000
    make_fleet 4
    # 300 chunks a target: about 7 s, longer than six kills' at most 5.4 s
    bump_job 0001_bump 200 "-- sluice:pause 20ms" "-- sluice:undo snapshot(n)"
    local k
    for k in 1 2 3 4 5 6; do
        sluice_start --targets "$T_DIR/targets.txt" --parallel 4 up
        wait_until 60 sql_true "select to_regclass('sluice_progress') is not null"
        random_sleep 300 900
        kill -0 "$SLUICE_PID" 2>/dev/null || fail "the fleet finished before kill $k: the job is too short"
        sluice_kill KILL
        assert_rc 137
        ((k == 4)) && rm -rf "$CKPT"
        for t in $(all_targets); do
            target_q "$t" "select to_regclass('sluice_progress') is not null" | grep -q t || continue
            assert_eq "$(target_q "$t" "select (select coalesce(sum(n), 0) from t) =
                                               (select coalesce(sum(rows), 0) from sluice_progress)
                                           and (select max(n) from t) <= 1")" t "$t after kill $k"
        done
    done
    run_sluice --targets "$T_DIR/targets.txt" --parallel 4 up
    assert_rc 0
    assert_every_row_once
}

test_bad_targets_files() {
    psql_q "create table t (id int primary key, n int not null default 0)"
    bump_job 0001_bump 200 "-- sluice:pause 10ms" "-- sluice:undo snapshot(n)"
    local f="$T_DIR/bad.txt"
    printf '# targets\nshard1 %s\nshard2\n' "$SLUICE_DB" >"$f"
    run_sluice --targets "$f" status
    assert_rc 2
    assert_contains "$ERR" "$f:3: expected NAME URL"
    printf 'a %s\nb %s\na %s\n' "$SLUICE_DB" "$SLUICE_DB" "$SLUICE_DB" >"$f"
    run_sluice --targets "$f" up
    assert_rc 2
    assert_contains "$ERR" "$f:3: target name \"a\" is given twice"
    printf 'shard/1 %s\n' "$SLUICE_DB" >"$f"
    run_sluice --targets "$f" up
    assert_rc 2
    assert_contains "$ERR" "$f:1: \"shard/1\" is not a target name"
    printf 'ok %s\nmy mysql://app@db/app\n' "$SLUICE_DB" >"$f"
    run_sluice --targets "$f" up
    assert_rc 2
    assert_contains "$ERR" "$f:2: target my:"
    # a world-readable file with a password in it is refused; 0600 is read
    printf 'ok postgresql://app:s3cret@127.0.0.1:1/app\n' >"$f"
    chmod 644 "$f"
    run_sluice --targets "$f" up
    assert_rc 2
    assert_contains "$ERR" "holds passwords and can be read by others"
    assert_not_contains "$ERR" "s3cret"
    # an unreachable host: the target fails, named with its line; exit 1
    chmod 600 "$f"
    printf 'main %s\nfar postgresql://app:s3cret@127.0.0.1:1/app\n' "$SLUICE_DB" >"$f"
    run_sluice --targets "$f" up
    assert_rc 1
    assert_match "$ERR" "fleet: far \\($f:2\\): failed"
    assert_contains "$ERR" "[far] cannot connect"
    assert_not_contains "$ERR" "s3cret"
    # in JSON, the line that says why is an event of its own, naming its target
    run_sluice --targets "$f" --log-format json up
    assert_rc 1
    assert_eq "$(jq -rR 'fromjson? | select(.event == "connect_failed") | .target' <<<"$ERR")" far "the target of connect_failed"
    assert_match "$(jq -rR 'fromjson? | select(.event == "connect_failed") | .error' <<<"$ERR")" "^cannot connect to app@127.0.0.1:1/app"
    assert_not_contains "$ERR" "s3cret"
    assert_sql "select count(*) from sluice_jobs where state = 'done'" 1
    run_sluice --targets "$f" --db "$SLUICE_DB" up
    assert_rc 2
    run_sluice --targets "$f" --target nowhere status
    assert_rc 2
    assert_contains "$ERR" "no such target"
}

# ctl for one target, a mixed fleet with a SQLite file, and a target renamed and moved (failover): its state
# is in its database.
test_ctl_sqlite_and_failover() {
    make_fleet 2
    sq_init "$T_DIR/lite.db"
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t "$ROWS"
    unset SLUICE_DB
    echo "lite sqlite:$SQ_DB" >>"$T_DIR/targets.txt"
    # 40 chunks, 500 ms apart: every target is still running when ctl reaches it, however late the
    # slowest one starts on a loaded machine (at 200 ms apart, a run once found main no longer running)
    bump_job 0001_bump 200 "-- sluice:pause 500ms" "-- sluice:undo snapshot(n)"
    sluice_start --targets "$T_DIR/targets.txt" up
    local target
    for target in main shard2 lite; do
        wait_until 30 test -S "$CKPT/$target/0001_bump.sluice-ctl"
    done
    run_sluice --targets "$T_DIR/targets.txt" --target shard2 ctl 0001_bump pause
    assert_rc 0
    assert_contains "$OUT" "shard2: paused by sluice ctl"
    run_sluice --targets "$T_DIR/targets.txt" ctl 0001_bump set pause=0ms
    assert_rc 0
    assert_contains "$OUT" "main: set pause=0ms"
    wait_until 60 sql_true "select state = 'done' from sluice_jobs"
    run_sluice --targets "$T_DIR/targets.txt" --target shard2 ctl 0001_bump status
    assert_contains "$OUT" "shard2: state paused"
    run_sluice --targets "$T_DIR/targets.txt" --target shard2 ctl 0001_bump resume
    assert_rc 0
    sluice_wait
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|$ROWS"
    # the runner logs each request as the line of the target it reached
    assert_contains "$ERR" "[shard2] 0001_bump: paused by sluice ctl"
    assert_contains "$ERR" "[lite] 0001_bump: set pause=0ms by sluice ctl"
    assert_not_contains "$ERR" "sluice: 0001_bump: set pause=0ms"
    # failover: shard2's name and URL change (a socket path instead of host and port); its state stays
    sed -i "s|^shard2 .*|replica2 postgresql:///postgres?host=${CLUSTER_DIR[s2]}\&port=${CLUSTER_PORT[s2]}\&user=postgres|" \
        "$T_DIR/targets.txt"
    run_sluice --targets "$T_DIR/targets.txt" up
    assert_rc 0
    assert_contains "$ERR" "[replica2] 0001_bump: already done"
    assert_eq "$(cluster_q s2 "select max(n) from t")" 1 "shard2 after the failover"
}

# One database named by two targets: two runners of one process. On PostgreSQL the second is refused
# (exit 2, saying why) while the first finishes; on SQLite it waits for the job's lock, then finds the
# job done. Every row once either way.
test_same_database_twice() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, $ROWS)"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 400
-- sluice:pause 50ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    local url=$SLUICE_DB
    unset SLUICE_DB
    run_sluice --db "$url" --db "$url" up
    assert_rc 2
    assert_contains "$ERR" "by this same sluice process: two of its targets (--db, --targets) name one database"
    assert_every_row_once_on main
    run_sluice --db "$url" --db "$url" up
    assert_rc 0
    assert_every_row_once_on main
    sqlite3 "$T_DIR/app.db" "create table t (id integer primary key, n integer not null default 0);
        with recursive c(i) as (select 1 union all select i + 1 from c where i < $ROWS) insert into t (id) select i from c"
    run_sluice --db "sqlite:$T_DIR/app.db" --db "sqlite:$T_DIR/./app.db" up
    assert_rc 0
    assert_contains "$ERR" "0001_bump: already done"
    assert_eq "$(sqlite3 "$T_DIR/app.db" "select min(n) || '|' || max(n) || '|' || count(*) from t")" "1|1|$ROWS" "t"
}

# ctl and status where a target has no runner, or cannot be reached. With no runner, ctl pause is
# recorded for the target's next run, as --db records it (it said "does not run on this target now"
# and recorded nothing); a target whose server refuses the connection or the password says "cannot
# connect" and why (it said "does not run"). status shows such a target's jobs as "unknown", with
# why, not "pending"; exit 1.
test_idle_and_unreachable_targets() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select generate_series(1, 1000)"
    bump_job 0001_bump 200
    make_app_role
    local f="$T_DIR/t.txt" tgt
    printf 'main %s\n' "$SLUICE_DB" >"$f"
    chmod 600 "$f"
    run_sluice --targets "$f" up
    assert_rc 0
    printf 'far postgresql://app:s3cret@127.0.0.1:1/app\nbadpw postgresql://sl_app:wrong-secret@%s:%s/%s\n' \
        "$PGHOST" "$PGPORT" "$T_DB" >>"$f"
    run_sluice --targets "$f" --target main ctl 0001_bump pause
    assert_rc 0
    assert_contains "$OUT" "main: paused: no runner runs job 0001_bump now"
    assert_sql "select paused like 'by sluice ctl at %' from sluice_jobs where job = '0001_bump'" t
    run_sluice --targets "$f" --target main ctl 0001_bump resume
    assert_rc 0
    assert_sql "select paused is null from sluice_jobs where job = '0001_bump'" t
    for tgt in far badpw; do
        run_sluice --targets "$f" --target "$tgt" ctl 0001_bump pause
        assert_rc 1
        assert_match "$ERR" "\\[$tgt\\] .*cannot connect to "
        assert_not_contains "$ERR" "does not run"
    done
    assert_contains "$ERR" "password authentication failed"
    # every target: main has no runner (said, no error), the two others cannot be asked
    run_sluice --targets "$f" ctl 0001_bump status
    assert_rc 1
    assert_contains "$ERR" "[main] job 0001_bump does not run on this target now"
    assert_match "$ERR" "\\[far\\] .*cannot connect to app@127.0.0.1:1/app"
    assert_match "$ERR" "\\[badpw\\] .*cannot connect to .*password authentication failed"
    assert_not_contains "$ERR" "s3cret"
    assert_not_contains "$ERR" "wrong-secret"
    # a job that never ran on main cannot be paused there: said, and every line of it, its hint too,
    # names the target (the hint had no [main], so parallel targets' hints could not be told apart)
    run_sluice --targets "$f" --target main ctl 0002_never pause
    assert_rc 1
    assert_contains "$ERR" "nor the job itself"
    assert_match "$ERR" "(^|"$'\n'")\\[main\\] hint: "
    [[ -z $(grep -Ev '^([0-9TZ:.-]+ )?sluice: |^\[main\] ' <<<"$ERR" || true) ]] || fail "a line without its target: $ERR"

    # status: what the database cannot say is not "pending"
    run_sluice --targets "$f" status --json
    assert_rc 1
    python3 - "$OUT" <<'PY' || fail "status --json: $OUT"
import json, sys
rows = {o["target"]: o for o in json.loads(sys.argv[1])}
main = rows["main"]
assert (main["state"], main["source"], main["rows"], main["database_error"]) == ("done", "database", 1000, None), main
for t in ("far", "badpw"):
    o = rows[t]
    assert (o["state"], o["source"], o["rows"], o["chunks"]) == ("unknown", "none", None, None), o
    assert o["database_error"].startswith("cannot connect to "), o
assert "password authentication failed" in rows["badpw"]["database_error"], rows["badpw"]
PY
    assert_not_contains "$OUT$ERR" "s3cret"
    assert_not_contains "$OUT$ERR" "wrong-secret"
    run_sluice --targets "$f" status
    assert_rc 1
    assert_match "$OUT" "(^|"$'\n'")far +0001_bump +unknown +- +-"
    assert_contains "$ERR" "far: cannot connect to app@127.0.0.1:1/app"
    # a target with a checkpoint file shows what it says, and why the database did not
    sed -i 's|^main .*|main postgresql://app@127.0.0.1:1/app|' "$f"
    run_sluice --targets "$f" --target main status --json
    assert_rc 1
    assert_eq "$(jq -r '.[0].state + " " + .[0].source' <<<"$OUT")" "done checkpoint" "main from its file"
    assert_match "$(jq -r '.[0].database_error' <<<"$OUT")" "^cannot connect to app@127.0.0.1:1/app"
    # one database alone answers from its checkpoint files as before (exit 0), saying the same
    run_sluice --db postgresql://app:s3cret@127.0.0.1:1/app status --json
    assert_rc 0
    assert_eq "$(jq -r '.[0].state + " " + .[0].source' <<<"$OUT")" "unknown none" "a job without a file"
    assert_match "$(jq -r '.[0].database_error' <<<"$OUT")" "^cannot connect to app@127.0.0.1:1/app"
}

run_test "four servers, --parallel 2: up, status, history, down" test_up_and_down_parallel_2
run_test "a fleet seen from outside: one metrics endpoint, JSON lines naming their target, a report each" \
    test_metrics_logs_and_reports
run_test "one server dies mid-run: the others finish, exit 1; back, up finishes it once" test_target_dies
run_test "kill -9 across a fleet of four, checkpoints lost once: every row once on every target" \
    test_kill9_across_the_fleet
run_test "targets files: bad line, duplicate, bad name, foreign URL, world-readable password, unreachable host" \
    test_bad_targets_files
run_test "ctl on one target, a SQLite target, and a renamed and moved target" test_ctl_sqlite_and_failover
run_test "one database named by two targets: the second runner is refused or waits; every row once" \
    test_same_database_twice
run_test "a target with no runner: ctl pause recorded; one not reached: cannot connect; status unknown, exit 1" \
    test_idle_and_unreachable_targets
t_done
