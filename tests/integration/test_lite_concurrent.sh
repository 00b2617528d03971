#!/usr/bin/env bash
# test_lite_concurrent.sh: SQLite shared with a running application: another process writes during a run; both finish, nothing lost.
. "$(dirname "$0")/../harness/lib.sh"

# writer.py DB N: an application's writes: N transactions, each inserting a row into t (above the range
# sluice starts with) and one into audit, with Python's own busy timeout; prints how many committed.
write_writer() {
    cat >"$T_DIR/writer.py" <<'EOF2'
import sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db, timeout=10, isolation_level=None)
done = 0
for i in range(n):
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO t (id, n) VALUES (?, 0)", (1000000 + i,))
    c.execute("INSERT INTO audit (msg) VALUES (?)", ("write %d" % i,))
    c.execute("COMMIT")
    done += 1
    time.sleep(0.002)
print(done)
EOF2
}

test_writer_and_runner_both_finish() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)
        ; create table audit (id integer primary key, msg text)"
    sq_fill t 40000
    write_job 0001_bump <<'EOF2'
-- sluice:table t
-- sluice:batch 200
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF2
    write_writer
    python3 "$T_DIR/writer.py" "$SQ_DB" 1500 >"$T_DIR/writer.out" 2>"$T_DIR/writer.err" &
    local wpid=$!
    run_sluice up
    assert_rc 0
    wait "$wpid" || fail "the writer failed: $(cat "$T_DIR/writer.err")"
    assert_eq "$(cat "$T_DIR/writer.out")" 1500 "transactions the writer committed"
    assert_sq "select count(*) from audit" 1500
    assert_sq "select count(*) from t where id >= 1000000" 1500
    # every row sluice walked was bumped once; rows the writer added after the walk passed them stay 0
    assert_sq "select count(*), min(n), max(n) from t where id <= 40000" "40000|1|1"
    assert_sq "select max(n) from t" 1
    assert_sq "select sum(n) from t" "$(sq "select sum(rows) from sluice_progress")"
}

# Another connection holds the write lock for longer than lock-timeout: the chunk meets SQLITE_BUSY,
# is retried with backoff like a lock timeout, and the run finishes once the lock is released.
test_busy_retried() {
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 3000
    write_job 0001_bump <<'EOF2'
-- sluice:table t
-- sluice:batch 500
-- sluice:lock-timeout 100ms
-- sluice:retries 10
-- sluice:pause 300ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF2
    # once the run is past its start (whose own writes wait out a lock with the default busy timeout),
    # the application holds the write lock for 1.5 s between two chunks
    sluice_start up
    wait_until 20 sq_true "select count(*) >= 1 from sluice_progress"
    python3 -c '
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE"); c.execute("UPDATE t SET n = n WHERE id = 1")
time.sleep(1.5); c.execute("COMMIT")' "$SQ_DB"
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "transient; retrying" "the log"
    assert_contains "$ERR" "database is locked" "the log"
    assert_sq "select count(*), min(n), max(n) from t" "3000|1|1"
}

run_test "another process writes during a run: both finish, nothing lost" test_writer_and_runner_both_finish
run_test "a write lock held past lock-timeout: SQLITE_BUSY retried, the run finishes" test_busy_retried
t_done
