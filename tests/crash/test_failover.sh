#!/usr/bin/env bash
# test_failover.sh: a real failover mid-run: the primary stops, the address lands on its standby, the standby is promoted; sluice waits and finishes there.
#
# Two servers of this file's own (clusters.sh): a primary and a streaming standby made from it with
# pg_basebackup -R. sluice's URL names both hosts, primary first, as an application's would
# (host=A,B: libpq connects to the first that answers). With the primary stopped (-m fast: the
# standby has received every committed chunk, as with synchronous replication), the reconnects land on
# the standby, which takes no writes: each counts as a failed attempt, logged as such. Once the
# standby is promoted the next reconnect goes on there, where the job's state (sluice_jobs, the lease,
# sluice_progress, the undo records) arrived by replication.
. "$(dirname "$0")/../harness/lib.sh"
. "$(dirname "$0")/../harness/clusters.sh"
. "$(dirname "$0")/../harness/pooler.sh"

ROWS=100000

# standby_start NAME PRIMARY: a streaming standby of PRIMARY (a cluster of cluster_start), its own
# server on a free port; CLUSTER_DIR, CLUSTER_PORT and CLUSTER_URL as for cluster_start.
standby_start() {
    local name=$1 primary=$2 dir port
    dir=$(mktemp -d /tmp/sluice-cluster.XXXXXX)
    port=$(free_port)
    chown postgres: "$dir" && chmod 700 "$dir"
    if ! _cl_as_postgres "$CL_BIN/pg_basebackup" -h "${CLUSTER_DIR[$primary]}" -p "${CLUSTER_PORT[$primary]}" \
        -U postgres -D "$dir/data" -R -X stream -c fast >"$dir/basebackup.log" 2>&1; then
        fail "pg_basebackup for $name failed: $(tail -n 5 "$dir/basebackup.log")"
        return 1
    fi
    CLUSTER_DIR[$name]=$dir
    CLUSTER_PORT[$name]=$port
    CLUSTER_URL[$name]="postgresql://postgres@/postgres?host=$dir&port=$port"
    cluster_restart "$name"
    wait_until 30 cluster_true "$primary" "select count(*) = 1 from pg_stat_replication where state = 'streaming'"
}

promote() {
    _cl_as_postgres "$CL_BIN/pg_ctl" -D "${CLUSTER_DIR[$1]}/data" -w promote >/dev/null
}

stop_fast() {
    _cl_as_postgres "$CL_BIN/pg_ctl" -D "${CLUSTER_DIR[$1]}/data" -m fast -w stop >/dev/null
}

chunks_on_a_at_least() {
    [[ $(cluster_q a "select to_regclass('sluice_progress') is not null") == t ]] &&
        (($(cluster_q a "select count(*) from sluice_progress") >= $1))
}

two_hosts() { # A B: a URL naming both servers, A first (libpq connects to the first that answers)
    echo "postgresql://postgres@/postgres?host=${CLUSTER_DIR[$1]},${CLUSTER_DIR[$2]}&port=${CLUSTER_PORT[$1]},${CLUSTER_PORT[$2]}"
}

# Server a with t (id, n, note) of ROWS rows, server b its standby, and the job: 2 workers, a snapshot.
primary_standby_and_job() {
    cluster_start a
    cluster_q a "create table t (id int primary key, n int not null default 0, note text);
                 insert into t (id, note) select g, 'row ' || g from generate_series(1, $ROWS) g; analyze t"
    standby_start b a
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 2
-- sluice:pause 5ms
-- sluice:undo snapshot(n, note)
-- sluice:up
UPDATE t SET n = n + 1, note = 'changed' WHERE id BETWEEN :lo AND :hi;
EOF
}

table_md5() { # CLUSTER
    cluster_q "$1" "select md5(string_agg(t::text, E'\n' order by id)) from t"
}

# After up on CLUSTER: every row changed once, the chunks' rows add up, one undo record a chunk.
every_row_once_on() {
    assert_eq "$(cluster_q "$1" "select min(n) || '|' || max(n) || '|' || count(*) from t where note = 'changed'")" \
        "1|1|$ROWS" "t on $1"
    assert_eq "$(cluster_q "$1" "select sum(rows) from sluice_progress")" "$ROWS" "rows in sluice_progress"
    assert_eq "$(cluster_q "$1" "select count(*) from sluice_undo")" \
        "$(cluster_q "$1" "select count(*) from sluice_progress")" "undo records (one a chunk)"
}

log_says() {
    grep -q "$1" "${_T_BG_FILES[$SLUICE_PID]}.err"
}

# up (2 workers, a snapshot) loses its primary mid-run, waits on the standby until it is promoted, and
# finishes there exactly once; down on the new primary then gives the table back as it was.
test_failover_to_promoted_standby() {
    local url before
    primary_standby_and_job
    url=$(two_hosts a b)
    before=$(table_md5 a)
    sluice_start --db "$url" up
    wait_until 60 chunks_on_a_at_least 20
    runner_alive || { sluice_wait; fail "up exited ($RC) before the failover"; }
    stop_fast a
    # the reconnects reach the standby and are refused there, for as long as it is one
    wait_until 30 log_says "takes no writes: it is a standby (in recovery)"
    sleep 2
    runner_alive || { sluice_wait; fail "up exited ($RC) while only the standby answered"; }
    promote b
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "reconnected"
    every_row_once_on b
    run_sluice --db "$url" status --json
    assert_rc 0
    assert_eq "$(jq -c '.[0] | [.state, .rows]' <<<"$OUT")" "[\"done\",$ROWS]" "status --json [state, rows]"
    run_sluice --db "$url" down 0001_bump
    assert_rc 0
    assert_eq "$(table_md5 b)" "$before" "t after down on the new primary"
}

# Asynchronous replication loses the last commits in a failover: the standby stops receiving (its
# primary_conninfo emptied), the primary commits more chunks, then crashes, and the standby is promoted
# without them. The database is the truth: what it lost, rows and bookkeeping alike, is done again in
# the same command. Under `up` (a primary and its standby), then under `down` (the promoted standby and
# a standby of its own): every row changed once, then the table as it was.
# cut_off_and_fail_over PRIMARY STANDBY [CMD ARGS...]: the standby stops receiving, 30 more chunks
# commit (or go) on the primary, the primary crashes, CMD runs (a pooler re-pointed), the standby is promoted.
cut_off_and_fail_over() {
    local primary=$1 standby=$2 n
    shift 2
    cluster_q "$standby" "alter system set primary_conninfo = ''"
    cluster_q "$standby" "select pg_reload_conf()" >/dev/null
    wait_until 30 cluster_true "$primary" "select count(*) = 0 from pg_stat_replication"
    n=$(cluster_q "$primary" "select count(*) from sluice_progress")
    wait_until 60 progress_moved "$primary" "$n" 30
    cluster_stop "$primary"
    diag "chunks in sluice_progress: $n when the standby was cut off, $(cluster_q "$standby" "select count(*) from sluice_progress") on it at the failover"
    (($# == 0)) || "$@"
    promote "$standby"
}

progress_moved() { # CLUSTER FROM BY: sluice_progress's count is at least BY away from FROM (or the runner is gone)
    local now
    runner_alive || return 0
    now=$(cluster_q "$1" "select count(*) from sluice_progress")
    ((now >= $2 + $3 || now <= $2 - $3))
}

test_failover_that_lost_chunks() {
    local before
    primary_standby_and_job
    before=$(table_md5 a)
    sluice_start --db "$(two_hosts a b)" up
    wait_until 60 chunks_on_a_at_least 20
    cut_off_and_fail_over a b
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "0001_bump: the database no longer has "
    assert_contains "$ERR" "chunks that had committed"
    assert_contains "$ERR" "; running the job again from what the database has"
    every_row_once_on b
    # down, on b, with a standby of its own that misses its last rollbacks
    standby_start c b
    sluice_start --db "$(two_hosts b c)" down 0001_bump
    wait_until 60 cluster_true b "select count(*) >= 2000 from t where n = 0"
    cut_off_and_fail_over b c
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "chunks that had been rolled back"
    assert_contains "$ERR" "0001_bump: the database has again "
    assert_contains "$ERR" "; rolling back again from what the database has"
    assert_eq "$(table_md5 c)" "$before" "t after down on the second promoted standby"
    assert_eq "$(cluster_q c "select count(*) from sluice_progress")" 0 "chunks left in sluice_progress"
}

# The same loss while no runner runs: the runner is killed, then the primary crashes and the standby
# is promoted without the last chunks. The next up finds its checkpoint file ahead of the database; the
# server's timeline moved since the file last looked (a promotion), so the database decides, as after
# a reconnect: the file follows it, and the job goes on from what the database has, every row once.
# (Before, the file was refused until moved aside, as after a restore.)
test_lossy_failover_while_no_runner_runs() {
    primary_standby_and_job
    sluice_start --db "$(two_hosts a b)" up
    wait_until 60 chunks_on_a_at_least 20
    cut_off_and_fail_over a b sluice_kill KILL
    assert_rc 137
    run_sluice --db "$(two_hosts a b)" up
    assert_rc 0
    every_row_once_on b
    assert_contains "$ERR" "0001_bump: the database no longer has "
    assert_contains "$ERR" "its timeline went from 1 to 2 since the file last saw it (a standby promoted"
}

# The same loss behind PgBouncer in transaction mode, re-pointed at the promoted standby: sluice's
# connections to the pooler may all stay up, so no reconnect looks, and its chunks go on committing on
# the new primary past the ones it lost. Each chunk's sluice_progress row is written only while the
# chunk before it in its key range is still there, so the first chunk past the loss is refused and the
# job runs again from what the database has: every row once, then down through the pooler gives the
# table back.
test_lossy_failover_behind_pooler() {
    local url before
    primary_standby_and_job
    pgb_start "${CLUSTER_DIR[a]}" "${CLUSTER_PORT[a]}" || fail "$PGB_ERR"
    trap 'pgb_stop; clusters_drop; _t_teardown' EXIT
    url="postgresql://$PGUSER@127.0.0.1:$PGB_PORT/postgres"
    before=$(table_md5 a)
    sluice_start --db "$url" up
    wait_until 60 chunks_on_a_at_least 20
    cut_off_and_fail_over a b pgb_point "${CLUSTER_DIR[b]}" "${CLUSTER_PORT[b]}"
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "chunks that had committed"
    assert_contains "$ERR" "; running the job again from what the database has"
    every_row_once_on b
    run_sluice --db "$url" down 0001_bump
    assert_rc 0
    assert_eq "$(table_md5 b)" "$before" "t after down through the pooler"
}

# holder NAME CLUSTER SQL: a session on CLUSTER that ran SQL in a transaction it keeps open (the locks
# it took held) until unhold NAME CLUSTER ends it, rolled back.
holder() {
    PGAPPNAME=$1 psql -h "${CLUSTER_DIR[$2]}" -p "${CLUSTER_PORT[$2]}" -U postgres -d postgres -XAtq \
        -c "begin" -c "$3" -c "select pg_sleep(600)" >/dev/null 2>&1 &
    wait_until 30 cluster_true "$2" "select count(*) = 1 from pg_stat_activity
                                     where application_name = '$1' and query = 'select pg_sleep(600)'"
}
unhold() {
    cluster_q "$2" "select pg_terminate_backend(pid) from pg_stat_activity where application_name = '$1'" >/dev/null
}
waiting_to_write() { # CLUSTER TABLE N: at least N of sluice's statements wait for a lock to write TABLE
    cluster_true "$1" "select count(*) >= $3 from pg_stat_activity where application_name = 'sluice'
                       and wait_event_type = 'Lock' and query like 'INSERT INTO $2 %'"
}

# The split itself lost: a failover that keeps the lease (sluice_jobs) but loses the key split
# (sluice_ranges), before any chunk has committed. Staged with locks: the split's INSERT waits while
# the standby receives the lease and is then cut off; the chunks' sluice_progress rows wait while the
# split commits on the primary alone; the primary crashes; the standby is promoted. The workers then
# begin their ranges afresh on a database with no split: a range's first chunk commits only while its
# range is in sluice_ranges, so it is refused, and the job runs again, splitting anew. A kill -9 later
# and a resume then continue from that split: every row once. (Before, the first chunks committed with
# no split behind them, and the resume took the last of them as the walk's position, skipping what lay
# before it.)
test_failover_that_lost_the_split() {
    primary_standby_and_job
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 2
-- sluice:pause 5ms
-- sluice:lock-timeout 60s
-- sluice:undo snapshot(n, note)
-- sluice:up
UPDATE t SET n = n + 1, note = 'changed' WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice --db "${CLUSTER_URL[a]}" stamp 0001_bump pending # sluice's tables, to lock
    assert_rc 0
    # the split's first row waits behind this one (the same key, not committed); the chunks' rows wait
    # behind the lock (sluice writes nothing else to sluice_progress before its first chunk)
    holder split a "insert into sluice_ranges (job, range_no) values ('0001_bump', 1)"
    holder chunks a "lock table sluice_progress in exclusive mode"
    sluice_start --db "$(two_hosts a b)" up
    wait_until 30 waiting_to_write a sluice_ranges 1
    wait_until 30 cluster_true b "select runner is not null from sluice_jobs where job = '0001_bump'"
    cluster_q b "alter system set primary_conninfo = ''"
    cluster_q b "select pg_reload_conf()" >/dev/null
    wait_until 30 cluster_true a "select count(*) = 0 from pg_stat_replication"
    unhold split a
    wait_until 30 waiting_to_write a sluice_progress 2
    assert_eq "$(cluster_q a "select count(*) from sluice_ranges")|$(cluster_q b "select count(*) from sluice_ranges")" \
        "8|0" "ranges on the primary|on the cut-off standby"
    cluster_stop a
    promote b
    wait_until 60 cluster_true b "select count(*) >= 30 from sluice_progress"
    runner_alive || { sluice_wait; fail "up exited ($RC) before the kill: $(tail -n 3 <<<"$ERR")"; }
    sluice_kill KILL
    local killed=$ERR
    run_sluice --db "$(two_hosts a b)" up
    assert_rc 0
    every_row_once_on b
    assert_contains "$killed" "0001_bump: the database no longer has the job's key split (range "
    assert_contains "$killed" "; running the job again from what the database has"
}

run_test "failover mid-run (2 workers, snapshot): waits on the standby, finishes once it is promoted; down there" \
    test_failover_to_promoted_standby
run_test "failover that lost the last chunks (asynchronous replication): they are done again, every row once" \
    test_failover_that_lost_chunks
run_test "lossy failover while no runner runs: the next up follows the database (a new timeline), every row once" \
    test_lossy_failover_while_no_runner_runs
run_test "lossy failover behind PgBouncer, no reconnect: the chunk past the loss is refused, every row once; down" \
    test_lossy_failover_behind_pooler
run_test "failover that lost the key split before any chunk: the ranges' first chunks are refused, split anew; kill -9, resume: every row once" \
    test_failover_that_lost_the_split
t_done
