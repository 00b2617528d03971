#!/usr/bin/env bash
# lib.sh: what the benchmarks share: a release build of sluice, GNU time, a throw-away PostgreSQL on a free port, a clock, and the hand-written baselines.
# Sourced by tests/bench/bench_*.sh, which set ROOT (the repository), BUILD (the build dir) and die().

# build_release: build $BUILD as a release build without sanitizers; its log is kept only on failure.
build_release() {
    local log="$BUILD.log"
    echo "# building $BUILD (release, no sanitizers); log in $log"
    (
        cd "$ROOT" || exit
        if [[ -f $BUILD/build.ninja ]]; then
            meson configure "$BUILD" --buildtype=release -Db_sanitize=none || exit
        else
            meson setup "$BUILD" --buildtype=release || exit
        fi
        meson compile -C "$BUILD"
    ) >"$log" 2>&1 || {
        tail -n 30 "$log" >&2
        die "the release build failed (whole output in $log)"
    }
    rm -f "$log"
}

# need_time: GNU time at /usr/bin/time (its CPU and peak-memory figures), installed when missing.
need_time() {
    if [[ ! -x /usr/bin/time ]]; then
        echo "# installing package time (for /usr/bin/time)"
        { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y time; } </dev/null >/dev/null 2>&1 ||
            die "apt-get install time failed (hint: apt-get install -y time)"
    fi
}

# pg_inner SCRIPT [GUC=VALUE...]: `bash SCRIPT --inner` inside a throw-away PostgreSQL $BENCH_PGVERSION
# cluster (pg_virtualenv on a free port, each GUC=VALUE set in its postgresql.conf), without
# pg_virtualenv's own lines about creating and dropping it; SCRIPT's exit status.
pg_inner() {
    local script=$1 opts=() opt
    shift
    for opt in "$@"; do
        opts+=(-o "$opt")
    done
    PGPORT=$(free_port) pg_virtualenv -t -v "$BENCH_PGVERSION" "${opts[@]}" bash "$script" --inner 2>&1 |
        grep --line-buffered -v -e '^Creating new PostgreSQL cluster' -e '^Dropping cluster'
    return "${PIPESTATUS[0]}"
}

# ---- the PostgreSQL users table (bench_speed.sh, bench_chunk.sh) ----
# The caller defines q SQL (psql, one statement), fail ID REASON (report a wrong run, return 1) and die,
# and sets BENCH_ROWS, UPDATE_SET (the job's UPDATE without its WHERE) and JOB (the job file's name).

# pg_drop: no table of the last method left (nor its dead rows for autovacuum to find), nothing dirty.
pg_drop() {
    q "drop table if exists users, sluice_progress, sluice_ranges, sluice_undo, sluice_jobs, sluice_meta" &&
        q "checkpoint"
}

# pg_fresh: users recreated with BENCH_ROWS rows, full_name NULL, statistics fresh, no dirty pages left
# from the last method, and no bookkeeping from the last sluice run. Autovacuum is off on it: a method
# updates every row, and an autovacuum of the table that starts part-way through one method's run (or
# of the last method's table during the SQLite ones) lands on whichever method it meets.
pg_fresh() {
    if ! { pg_drop &&
        q "create table users (id bigint, first_name text, last_name text, full_name text)
           with (autovacuum_enabled = false)" &&
        q "insert into users (id, first_name, last_name)
           select g, 'first_' || g, 'last_' || g from generate_series(1, $BENCH_ROWS) g" &&
        q "alter table users add primary key (id)" &&
        q "vacuum analyze users" &&
        q "checkpoint"; }; then
        die "could not make a fresh users table"
    fi
}

pg_md5() {
    q "select md5(string_agg(u::text, ',' order by id)) from users u"
}

# pg_check_filled ID: every row got its full_name, the right one.
pg_check_filled() {
    local got
    got=$(q "select count(*) filter (where full_name = first_name || ' ' || last_name)
                 || ' ' || count(full_name) from users") || { fail "$1" "could not count the rows it filled"; return 1; }
    [[ $got == "$BENCH_ROWS $BENCH_ROWS" ]] ||
        { fail "$1" "left the table wrong: expected $BENCH_ROWS rows filled, got (right, filled) $got"; return 1; }
}

# users_job DIR BATCH WORKERS UNDO_LINE DOWN_SQL: DIR/jobs/$JOB.sql, $UPDATE_SET over the chunk's
# range; an empty WORKERS, UNDO_LINE or DOWN_SQL leaves that line or section out.
users_job() {
    mkdir -p "$1/jobs"
    {
        echo "-- sluice:table users"
        echo "-- sluice:batch $2"
        [[ -n $3 ]] && echo "-- sluice:workers $3"
        [[ -n $4 ]] && echo "$4"
        echo "-- sluice:up"
        echo "$UPDATE_SET WHERE id BETWEEN :lo AND :hi;"
        [[ -n $5 ]] && printf '%s\n' "-- sluice:down" "$5"
    } >"$1/jobs/$JOB.sql"
}

# bench_finished NAME: the closing line, and exit 1 when a run was wrong or could not be measured
# (FAILED set by the caller's fail).
bench_finished() {
    echo
    echo "# finished: $(uptime)"
    if ((FAILED)); then
        echo "$1: some runs were wrong or could not be measured (WRONG or NOT MEASURED above)" >&2
        exit 1
    fi
}

# make_template: (SQLite benches) $WORK/template.db with BENCH_ROWS rows, WAL mode (kept in the file), checkpointed.
make_template() {
    sqlite3 -bail "$WORK/template.db" >/dev/null <<SQL || die "could not create $WORK/template.db"
PRAGMA journal_mode = WAL;
CREATE TABLE users (id integer PRIMARY KEY, first_name text, last_name text, full_name text);
BEGIN;
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < $BENCH_ROWS)
INSERT INTO users (id, first_name, last_name) SELECT i, 'first_' || i, 'last_' || i FROM g;
COMMIT;
ANALYZE;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
}

# lite_fresh: (SQLite benches) $DB, a copy of make_template's file, on disk (synced) before the clock starts.
lite_fresh() {
    rm -f "$DB" "$DB-wal" "$DB-shm" "$DB-sluice-lock"
    cp "$WORK/template.db" "$DB" || die "cp failed"
    sync
}

# lite_check_filled ID: every row got its full_name, the right one.
lite_check_filled() {
    local got
    got=$(sqlite3 "$DB" "SELECT count(*) FILTER (WHERE full_name = first_name || ' ' || last_name) || ' ' ||
                                count(full_name) FROM users") || { fail "$1" "cannot read $DB"; return 1; }
    [[ $got == "$BENCH_ROWS $BENCH_ROWS" ]] ||
        { fail "$1" "left the table wrong: expected $BENCH_ROWS rows filled, got (right, filled) $got"; return 1; }
}

# now: the wall clock in seconds, with microseconds (for secs).
now() {
    echo "$EPOCHREALTIME"
}

# secs START END: the seconds between two now()s, three decimals.
secs() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'
}

# median VALUES...: the median of the given numbers, three decimals; nothing for none.
median() {
    (($#)) || return 0
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# free_port: a port nothing listens on, below Linux's ephemeral range (as tests/run.sh picks it).
free_port() {
    local port _
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 12000))
        if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && [[ ! -e /var/run/postgresql/.s.PGSQL.$port ]]; then
            echo "$port"
            return
        fi
    done
    echo 5432
}

# keyset_procedure_sql [NAME [SET [reads]]]: the CREATE of NAME(batch, after, upto) (default bench_walk),
# the hand-written PostgreSQL alternative to sluice (bench_workers.sh, bench_speed.sh): find each batch's
# last key with the index (as sluice's boundary query does), UPDATE users SET SET over the range
# (default: full_name from the two names), COMMIT; between two keys, so that two sessions can split
# the table. With "reads", each batch's rows are also read before the UPDATE (each key and full_name as
# text, as a snapshot(full_name)'s first image reads them) and after it (each key as text and the hash
# of full_name of the rows the transaction wrote, by a bitmap scan, as its second image does), and
# counted on the server: what a snapshot's two reads cost the server, with nothing sent or stored. CALL
# it outside a transaction block, so that it may COMMIT inside.
keyset_procedure_sql() {
    local before="" after=""
    if [[ ${3:-} == reads ]]; then
        before="select count(id::text) + count(full_name::text) into seen from users where id > last_id and id <= hi;"
        after="perform set_config('enable_indexscan', 'off', true);
        select count(id::text) + count(case when age(xmin) <= 0
                                            then coalesce(hashtextextended(full_name::text collate \"C\", 0), 0) end)
          into seen from users where id > last_id and id <= hi;"
    fi
    cat <<SQL
create or replace procedure ${1:-bench_walk}(batch int, after bigint, upto bigint) language plpgsql as \$\$
declare
    last_id bigint := after;
    hi bigint;
    seen bigint;
begin
    loop
        select max(id) into hi from (select id from users where id > last_id and id <= upto
                                     order by id limit batch) s;
        exit when hi is null;
        $before
        update users set ${2:-full_name = first_name || ' ' || last_name} where id > last_id and id <= hi;
        $after
        commit;
        last_id := hi;
    end loop;
end \$\$
SQL
}

# write_keyset_loop_py FILE: the hand-written SQLite alternative (bench_sqlite.sh, bench_speed.sh), the
# keyset loop a Python migration would run (python3's sqlite3 module, WAL, synchronous=FULL): per
# chunk BEGIN, find the chunk's last key, UPDATE the range, COMMIT. Run as
# `python3 FILE DB BATCH "UPDATE ... SET ..."`; it prints its seconds, timed from its first BEGIN to
# close (interpreter start and connect left out, as an application's would be).
write_keyset_loop_py() {
    cat >"$1" <<'PY'
import sqlite3, sys, time
db, batch, update = sys.argv[1], int(sys.argv[2]), sys.argv[3]
con = sqlite3.connect(db, isolation_level=None)
con.execute("PRAGMA journal_mode = WAL")
con.execute("PRAGMA synchronous = FULL")
t0 = time.monotonic()
last = -(2**63)
while True:
    con.execute("BEGIN IMMEDIATE")
    hi = con.execute("SELECT max(id) FROM (SELECT id FROM users WHERE id > ? ORDER BY id LIMIT ?)",
                     (last, batch)).fetchone()[0]
    if hi is None:
        con.execute("COMMIT")
        break
    con.execute(update + " WHERE id > ? AND id <= ?", (last, hi))
    con.execute("COMMIT")
    last = hi
con.close()
print("%.3f" % (time.monotonic() - t0))
PY
}
