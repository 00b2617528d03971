#!/usr/bin/env bash
# test_dburl.sh: every database string form against real PostgreSQL and SQLite; refusals; passwords never shown, nor in argv.
. "$(dirname "$0")/../harness/lib.sh"

HOST=${PGHOST:-localhost}
PORT=${PGPORT:-5432}
# A password with every character that needs care: / @ : % space " ' (a '/' before the '@', so that
# even written unescaped in a URL it reads whole; see dburl.h).
PW='pa/ss@w:rd% x"q'\''z'
ROLE=sl_dburl_user

urlencode() {
    python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"
}

# The role the URLs log in as, with $PW, owning the test's database (so it may create sluice_progress).
make_role() {
    local sqlpw=${PW//\'/\'\'}
    psql_q "do \$\$ begin create role $ROLE login; exception when duplicate_object then null; end \$\$"
    psql_q "alter role $ROLE password '$sqlpw'"
    psql_q "alter database $T_DB owner to $ROLE"
}

# table_job N: a table t_N of 300 rows owned by the role and a job 000N_bump that bumps each row once.
table_job() {
    local n=$1
    psql_q "create table t_$n (id int primary key, n int not null default 0);
            insert into t_$n (id) select g from generate_series(1, 300) g;
            alter table t_$n owner to $ROLE"
    write_job "000${n}_bump" <<EOF
-- sluice:table t_$n
-- sluice:batch 100
-- sluice:up
UPDATE t_$n SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
}

# assert_no_password TEXT: none of the password's forms is in TEXT.
assert_no_password() {
    local enc
    enc=$(urlencode "$PW")
    assert_not_contains "$1" "$PW" "output"
    assert_not_contains "$1" "$enc" "output"
    assert_not_contains "$1" "${enc,,}" "output"
    assert_not_contains "$1" "pa/ss" "output"
    assert_not_contains "$1" "w:rd" "output"
}

# up_with N HOW DB: run `up 000N_bump` with DB given as HOW (--db, --db=, SLUICE_DB, DATABASE_URL, or --db
# with the password in PGPASSWORD); the
# table is bumped once, and the output never holds the password.
up_with() {
    local n=$1 how=$2 db=$3
    case $how in
    --db) run_sluice --db "$db" up "000${n}_bump" ;;
    --db=) run_sluice "--db=$db" up "000${n}_bump" ;;
    SLUICE_DB) SLUICE_DB=$db run_sluice up "000${n}_bump" ;;
    DATABASE_URL) SLUICE_DB="" DATABASE_URL=$db run_sluice up "000${n}_bump" ;;
    PGPASSWORD) PGPASSWORD=$PW run_sluice --db "$db" up "000${n}_bump" ;;
    esac
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t_$n" "1|1|300"
    assert_no_password "$OUT$ERR"
}

# Each PostgreSQL form, the password percent-encoded as SQLAlchemy's docs ask: up connects (as the role,
# with the password: the server checks it on TCP) and runs the job.
test_postgresql_forms() {
    make_role
    local enc n=0 scheme
    enc=$(urlencode "$PW")
    for scheme in postgresql postgres postgresql+psycopg2 postgresql+psycopg postgresql+asyncpg postgresql+pg8000 \
        postgresql+psycopg_async postgresql+psycopg2cffi; do
        n=$((n + 1))
        table_job "$n"
        up_with "$n" --db "$scheme://$ROLE:$enc@$HOST:$PORT/$T_DB"
        assert_contains "$ERR" "done: 300 rows" "up's log"
    done
    # Through SLUICE_DB and DATABASE_URL too, and with --db=.
    n=$((n + 1))
    table_job "$n"
    up_with "$n" SLUICE_DB "postgresql+psycopg2://$ROLE:$enc@$HOST:$PORT/$T_DB"
    n=$((n + 1))
    table_job "$n"
    up_with "$n" DATABASE_URL "postgres://$ROLE:$enc@$HOST:$PORT/$T_DB?sslmode=disable&application_name=app+sluice"
    n=$((n + 1))
    table_job "$n"
    up_with "$n" --db= "postgresql+asyncpg://$ROLE:$enc@$HOST:$PORT/$T_DB?connect_timeout=5"
    # Every run above connected as the role, not as the test's own user.
    assert_sql "select count(*) from pg_tables where tablename = 'sluice_progress' and tableowner = '$ROLE'" 1
}

# The password unescaped in a URL, in a key=value string, and in PGPASSWORD: each connects.
test_password_written_every_way() {
    make_role
    table_job 1
    up_with 1 --db "postgresql://$ROLE:$PW@$HOST:$PORT/$T_DB"
    table_job 2
    local kv=${PW//\\/\\\\}
    kv=${kv//\'/\\\'}
    up_with 2 --db "host=$HOST port=$PORT dbname=$T_DB user=$ROLE password='$kv'"
    table_job 3
    up_with 3 PGPASSWORD "postgresql+psycopg2://$ROLE@$HOST:$PORT/$T_DB"
    table_job 4
    up_with 4 --db "postgresql://$ROLE@$HOST:$PORT/$T_DB?password=$(urlencode "$PW")"
    # And the server does check it: a wrong one is refused (exit 1, nothing ran).
    table_job 5
    run_sluice --db "postgresql://$ROLE:$(urlencode "x$PW")@$HOST:$PORT/$T_DB" up 0005_bump
    assert_rc 1
    assert_contains "$ERR" "password authentication failed" "stderr"
    assert_no_password "$OUT$ERR"
}

# A URL whose password holds an unencoded '?' or '/' splits where its writer did not mean it to: the
# rest of the password lands in the query, the host or the database name, and no message shows it.
test_split_url_hides_its_parts() {
    table_job 1
    local url
    for url in 'postgresql://app?:S3cretPass@db.example/app?sslmode=require' \
        'postgresql://app/:S3cretPass@db.example/app' 'postgresql://app:s3c@r3tpwX/@localhost:5499/x'; do
        run_sluice --db "$url" up
        assert_ne "$RC" 0 "exit status with $url"
        [[ -n $ERR ]] || fail "nothing said about $url"
        assert_not_contains "$OUT$ERR" "S3cretPass"
        assert_not_contains "$OUT$ERR" "r3tpwX"
    done
    assert_contains "$ERR" "percent-encoded"
}

# Failures at every step say what failed, never with the password: a database that does not exist, a
# server that is not there, libpq's own parse errors, a failing job, a connection cut mid-run.
test_password_never_in_errors() {
    make_role
    local enc all=""
    enc=$(urlencode "$PW")
    table_job 1
    run_sluice --db "postgresql://$ROLE:$PW@$HOST:$PORT/no_such_db" up
    assert_rc 1
    assert_contains "$ERR" "$ROLE@$HOST:$PORT/no_such_db" "stderr"
    all+="$OUT$ERR"
    run_sluice --db "postgresql://$ROLE:$enc@127.0.0.1:1/x" up
    assert_rc 1
    all+="$OUT$ERR"
    run_sluice --db "postgresql://$ROLE:$PW@$HOST:$PORT/$T_DB?bogus=1" up
    assert_rc 2
    assert_contains "$ERR" "bogus" "stderr"
    all+="$OUT$ERR"
    # libpq parses what sluice passes on: its complaints about the string must not quote the password.
    run_sluice --db "host=$HOST password=$PW bogus" up
    assert_rc 2
    all+="$OUT$ERR"
    # libpq refuses it only when asked to connect, before it tries: bad input all the same
    run_sluice --db "host=$HOST port=$PORT dbname=$T_DB user=$ROLE password=$enc sslmode=bogus" up
    assert_rc 2
    assert_contains "$ERR" 'invalid sslmode value: "bogus"' "stderr"
    all+="$OUT$ERR"
    # A URL libpq reads as key=value and quotes whole in its complaint: after a blank, or pasted with
    # its variable's name; and one in quotes, refused before libpq sees it.
    run_sluice --db " postgresql://$ROLE:$enc@$HOST:$PORT/$T_DB" up
    assert_rc 2
    assert_contains "$ERR" "invalid database connection string" "stderr"
    all+="$OUT$ERR"
    run_sluice --db "DATABASE_URL=postgresql://$ROLE:$enc@$HOST:$PORT/$T_DB" status
    all+="$OUT$ERR"
    run_sluice --db "\"postgresql://$ROLE:$enc@$HOST:$PORT/$T_DB\"" up
    assert_rc 2
    assert_contains "$ERR" "starts with a quote" "stderr"
    all+="$OUT$ERR"
    # A job that fails on the server, with the password in the failing statement.
    write_job 0001_bump <<EOF
-- sluice:table t_1
-- sluice:batch 100
-- sluice:retries 0
-- sluice:up
UPDATE t_1 SET n = n + ('$enc' || :lo::text)::int WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice --db "postgresql://$ROLE:$enc@$HOST:$PORT/$T_DB" up
    assert_rc 1
    assert_contains "$ERR" "invalid input syntax" "stderr"
    all+="$OUT$ERR"
    # Server notices that quote it (a RAISE NOTICE of what the job sent), raw and encoded.
    psql_q "create function shout(t text) returns int language plpgsql as \$\$
            begin raise notice 'got %', t; return 0; end \$\$"
    table_job 2
    local sqlpw=${PW//\'/\'\'}
    write_job 0002_bump <<EOF
-- sluice:table t_2
-- sluice:batch 100
-- sluice:up
UPDATE t_2 SET n = n + 1 + shout('$enc') + shout('$sqlpw') WHERE id BETWEEN :lo AND :hi;
EOF
    run_sluice --db "postgresql://$ROLE:$enc@$HOST:$PORT/$T_DB" up 0002_bump
    assert_rc 0
    assert_contains "$ERR" "server: NOTICE:  got ***" "stderr"
    assert_sql "select min(n), max(n), count(*) from t_2" "1|1|300"
    all+="$OUT$ERR"
    run_sluice --db "postgresql://$ROLE:$enc@$HOST:$PORT/$T_DB" status
    all+="$OUT$ERR"
    run_sluice --db "postgresql://$ROLE:$enc@$HOST:$PORT/$T_DB" history
    all+="$OUT$ERR"
    assert_no_password "$all"
    if grep -rlaF -e "$PW" -e "$enc" "$CKPT"; then
        fail "the password is written in a checkpoint file"
    fi
}

# The password leaves the argument list as soon as sluice has read it: /proc/PID/cmdline (what ps shows
# every user) has stars in its place while the run goes on, and the run connects and finishes.
test_password_not_in_cmdline() {
    make_role
    local enc how n=0 cmdline kv
    enc=$(urlencode "$PW")
    kv=${PW//\\/\\\\}
    kv=${kv//\'/\\\'}
    for how in url url= kv; do
        n=$((n + 1))
        psql_q "create table t_$n (id int primary key, n int not null default 0);
                insert into t_$n (id) select g from generate_series(1, 2000) g; alter table t_$n owner to $ROLE"
        write_job "000${n}_slow" <<EOF
-- sluice:table t_$n
-- sluice:batch 100
-- sluice:pause 100ms
-- sluice:up
UPDATE t_$n SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
        case $how in
        url) sluice_start --db "postgresql://$ROLE:$enc@$HOST:$PORT/$T_DB" up "000${n}_slow" ;;
        url=) sluice_start "--db=postgresql+psycopg2://$ROLE:$PW@$HOST:$PORT/$T_DB" up "000${n}_slow" ;;
        kv) sluice_start --db "host=$HOST port=$PORT dbname=$T_DB user=$ROLE password='$kv'" up "000${n}_slow" ;;
        esac
        wait_until 30 sql_true "select count(*) >= 1 from sluice_progress where job = '000${n}_slow'"
        cmdline=$(tr '\0' ' ' <"/proc/$SLUICE_PID/cmdline")
        echo "# cmdline: $cmdline"
        assert_contains "$cmdline" "$ROLE" "cmdline"
        assert_contains "$cmdline" "***" "cmdline"
        assert_no_password "$cmdline"
        assert_not_contains "$cmdline" "rd%" "cmdline"
        sluice_wait
        assert_rc 0
        assert_sql "select min(n), max(n), count(*) from t_$n" "1|1|2000"
        assert_no_password "$OUT$ERR"
    done
}

# keepalive_timers PID: the TCP keepalive timer of each of PID's connections to the server, as ss shows it
# ("keepalive,27sec,0"), one per line; "none" for a connection without one.
keepalive_timers() {
    ss -tnpoH state established "( dport = :$PORT )" | grep "pid=$1," |
        sed -E 's/.*timer:\(([^)]*)\).*/\1/; t; s/.*/none/'
}

# Over TCP, sluice's connections notice a server gone silent within about a minute (keepalives after
# 30 s idle, and tcp_user_timeout), not the system's two hours; the string's own keepalive settings win.
test_keepalives_over_tcp() {
    make_table 2000
    write_job 0001_slow <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:pause 100ms
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    local url="postgresql://${PGUSER:-$(id -un)}@127.0.0.1:$PORT/$T_DB" query timers
    for query in "" "?keepalives_idle=300" "?keepalives=0"; do
        run_sluice stamp 0001_slow pending
        sluice_start --db "$url$query" up
        wait_until 30 sql_true "select count(*) >= 1 from sluice_progress"
        timers=$(keepalive_timers "$SLUICE_PID")
        echo "# $query: ${timers//$'\n'/ | }"
        case $query in
        "")
            assert_contains "$timers" "keepalive" "the connections of $url"
            assert_eq "$(grep -Evc '^keepalive,([0-9]|[12][0-9]|30)sec,' <<<"$timers" || true)" 0 "timers past 30 s"
            ;;
        *idle=300) assert_contains "$timers" "keepalive,4min" "the URL's 300 s" ;;
        *) # a retransmission timer ("on,204ms,0": data not yet acknowledged) may show; no keepalive may
            assert_eq "$(grep -c '^keepalive' <<<"$timers" || true)" 0 "keepalive timers with keepalives=0" ;;
        esac
        sluice_kill INT
        assert_rc 3
    done
}

# SQLite: sqlite:PATH as before, and SQLAlchemy's sqlite:///relative (to the current directory) and
# sqlite:////absolute, with or without +pysqlite / +aiosqlite; Python's sqlite3 options are left out
# with a warning.
# libpq is loaded when a PostgreSQL database is first used. With a library path that offers a
# libpq.so.5 that is not libpq, runs on SQLite (up, status) never touch it; one on PostgreSQL stops
# before connecting, exit 1, saying what to install, with nothing changed. A file there the loader
# cannot load at all is passed over for the libpq sluice was built against.
test_libpq_loaded_for_postgresql_only() {
    local pg=$SLUICE_DB fake=$T_DIR/lib
    mkdir -p "$fake"
    printf 'int sluice_test_not_libpq;\n' | ${CC:-cc} -shared -fPIC -Wl,-soname,libpq.so.5 -x c -o "$fake/libpq.so.5" - ||
        fail "cannot build the stand-in libpq.so.5"
    sq_init
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 300
    bump_job 0001_bump 100
    LD_LIBRARY_PATH=$fake run_sluice up
    assert_rc 0
    assert_sq "select min(n), max(n), count(*) from t" "1|1|300"
    LD_LIBRARY_PATH=$fake run_sluice status
    assert_rc 0
    assert_contains "$OUT" "done" "status"
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 300) g"
    rm -f "$CKPT"/*
    LD_LIBRARY_PATH=$fake run_sluice --db "$pg" up
    assert_rc 1
    assert_contains "$ERR" "libpq.so.5 has no PQ" "stderr"
    assert_contains "$ERR" "sluice needs libpq 14 or later" "stderr"
    assert_contains "$ERR" "hint: install libpq 14 or later (Debian and Ubuntu: apt-get install libpq5)" "stderr"
    assert_sql "select count(*) from pg_tables where tablename like 'sluice%'" 0
    assert_sql "select count(*) from t where n <> 0" 0
    assert_eq "$(ls -A "$CKPT")" "" "checkpoint dir"
    # Not a library at all: the loader refuses it, and sluice loads the libpq it was built against.
    printf 'not an ELF file\n' >"$fake/libpq.so.5"
    LD_LIBRARY_PATH=$fake run_sluice --db "$pg" up
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t" "1|1|300"
}

test_sqlite_forms() {
    sq_init "$T_DIR/app.db"
    mkdir -p sub
    sq_init "$T_DIR/sub/app2.db"
    SQ_DB=$T_DIR/app.db
    local n=0 db
    for db in "sqlite:app.db" "sqlite:$T_DIR/app.db" "sqlite:///app.db" "sqlite:////${T_DIR#/}/app.db" "sqlite://///${T_DIR#/}/app.db" \
        "sqlite+pysqlite:///app.db" "sqlite+aiosqlite:////${T_DIR#/}/app.db" "sqlite:///sub/../app.db" \
        "sqlite:///app.db?timeout=20&check_same_thread=false"; do
        n=$((n + 1))
        sq "create table t_$n (id integer primary key, n int not null default 0)"
        sq_fill "t_$n" 300
        write_job "000${n}_bump" <<EOF
-- sluice:table t_$n
-- sluice:batch 100
-- sluice:up
UPDATE t_$n SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
        DATABASE_URL=$db SLUICE_DB="" run_sluice up "000${n}_bump"
        assert_rc 0
        assert_sq "select min(n), max(n), count(*) from t_$n" "1|1|300"
    done
    assert_contains "$ERR" "left out timeout, check_same_thread" "stderr of the last"
    # Relative is relative to the current directory: from sub/, sqlite:///app2.db is sub/app2.db.
    SQ_DB=$T_DIR/sub/app2.db
    sq "create table t (id integer primary key, n int not null default 0)"
    sq_fill t 100
    write_job 0009_sub <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    (cd sub && run_sluice --db "sqlite:///app2.db" up 0009_sub && assert_rc 0)
    assert_sq "select min(n), max(n), count(*) from t" "1|1|100"
    # sqlite:///PATH is SQLAlchemy's relative path now, not an absolute one.
    run_sluice --db "sqlite:///${T_DIR#/}/app.db" up 0001_bump
    assert_rc 2
    assert_contains "$ERR" "no such database file" "stderr"
    assert_contains "$ERR" "write sqlite:////${T_DIR#/}/app.db" "stderr"
}

# What cannot apply is refused with exit 2, a reason, no password, nothing changed.
test_refusals() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 100) g"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    local cases=(
        "sqlite://|in-memory"
        "sqlite:///:memory:|in-memory"
        "sqlite+pysqlite://|in-memory"
        "sqlite::memory:|in-memory"
        "sqlite:///app.db?mode=ro|SQLite URI"
        "mysql://u:s3cret@$HOST/db|MySQL URL: sluice speaks PostgreSQL and SQLite"
        "mysql+pymysql://u:s3cret@$HOST/db|MySQL"
        "mariadb+mariadbconnector://u:s3cret@$HOST/db|MariaDB"
        "mssql+pyodbc://u:s3cret@dsn|SQL Server"
        "oracle+oracledb://u:s3cret@$HOST/db|Oracle"
        "postgresql+foo://u:s3cret@$HOST:$PORT/$T_DB|unknown PostgreSQL driver \"foo\""
        "postgresql+asyncpg://u:s3cret@$HOST:$PORT/$T_DB?prepared_statement_cache_size=0|not a libpq connection parameter"
        "postgresql+asyncpg://u:s3cret@$HOST:$PORT/$T_DB?ssl=require|sslmode=require"
        "postgresql://u:s3cret@$HOST:$PORT/$T_DB?host=a&host=b|given twice"
    )
    local c db says how
    for c in "${cases[@]}"; do
        db=${c%%|*}
        says=${c#*|}
        for how in --db SLUICE_DB DATABASE_URL; do
            case $how in
            --db) run_sluice --db "$db" up ;;
            SLUICE_DB) SLUICE_DB=$db run_sluice up ;;
            DATABASE_URL) SLUICE_DB="" DATABASE_URL=$db run_sluice up ;;
            esac
            assert_rc 2
            assert_contains "$ERR" "$how: " "stderr"
            assert_contains "$ERR" "$says" "stderr"
            assert_not_contains "$OUT$ERR" "s3cret" "output"
        done
    done
    run_sluice --db "sqlite://" plan 0001_bump
    assert_rc 2
    run_sluice --db "mysql://u:s3cret@$HOST/db" down 0001_bump
    assert_rc 2
    assert_sql "select count(*) from t where n <> 0" 0
    assert_sql "select to_regclass('sluice_progress') is null" t
    # status and history read only the checkpoint files: a DATABASE_URL they cannot use is no matter.
    DATABASE_URL="mysql://u:s3cret@$HOST/db" SLUICE_DB="" run_sluice status
    assert_rc 0
    assert_contains "$OUT" "0001_bump" "status"
}

# An empty or blank SLUICE_DB counts as unset, as DATABASE_URL does: DATABASE_URL is used. PGDATABASE
# names no database, so a run that took the blank as libpq's PG* defaults fails.
test_blank_env_is_unset() {
    make_role
    local n=0 value url="postgresql://$ROLE:$(urlencode "$PW")@$HOST:$PORT/$T_DB"
    for value in "" " " $'\t\n'; do
        n=$((n + 1))
        table_job $n
        PGDATABASE=sl_no_such_database SLUICE_DB=$value DATABASE_URL=$url run_sluice up "000${n}_bump"
        assert_rc 0
        assert_sql "select min(n), max(n), count(*) from t_$n" "1|1|300"
    done
    # and a blank DATABASE_URL is unset too: libpq's PG* variables (here the test's database)
    table_job 4
    SLUICE_DB=" " DATABASE_URL=" " run_sluice up 0004_bump
    assert_rc 0
    assert_sql "select min(n), max(n), count(*) from t_4" "1|1|300"
}

run_test "PostgreSQL: libpq's and SQLAlchemy's URL forms via --db, --db=, SLUICE_DB, DATABASE_URL" test_postgresql_forms
run_test "a password with / @ : % space quotes: unescaped URL, key=value, PGPASSWORD, query" \
    test_password_written_every_way
run_test "the password is in no error message, log line or checkpoint file" test_password_never_in_errors
run_test "a URL split by an unencoded '?' or '/' in its password: the parts after it in no message" \
    test_split_url_hides_its_parts
run_test "the password is gone from /proc/PID/cmdline while up runs (URL, --db=, key=value)" \
    test_password_not_in_cmdline
run_test "over TCP: keepalives after 30 s idle unless the string sets its own" test_keepalives_over_tcp
run_test "libpq loaded for PostgreSQL only: SQLite runs without it; PostgreSQL without it stops first, exit 1" \
    test_libpq_loaded_for_postgresql_only
run_test "SQLite: sqlite:PATH, sqlite:///relative, sqlite:////absolute, +pysqlite, +aiosqlite" test_sqlite_forms
run_test "an empty or blank SLUICE_DB or DATABASE_URL counts as unset" test_blank_env_is_unset
run_test "refused with exit 2 and a reason: in-memory, other databases, unknown drivers and parameters" \
    test_refusals
t_done
