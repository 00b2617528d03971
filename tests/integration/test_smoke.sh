#!/usr/bin/env bash
# test_smoke.sh: the harness itself works: the binary runs, and each test gets its own reachable database.
. "$(dirname "$0")/../harness/lib.sh"

test_help_exits_zero() {
    run_sluice --help
    assert_rc 0
    assert_contains "$OUT$ERR" "up" "--help output"
}

test_psql_reaches_own_database() {
    assert_eq "$(psql_q 'select current_database()')" "$T_DB" "database psql talks to"
    psql_q "create table smoke (id int primary key); insert into smoke select generate_series(1, 42)"
    assert_sql "select count(*) from smoke" 42
}

# Run after the test above: a fresh database per test means its table is gone here.
test_databases_are_independent() {
    assert_sql "select count(*) from pg_tables where tablename = 'smoke'" 0
}

test_sluice_db_is_libpq_url() {
    assert_exit 0 psql -XAtq -d "$SLUICE_DB" -c 'select 1'
    assert_eq "$OUT" 1 "select 1 through \$SLUICE_DB"
}

run_test "sluice --help exits 0" test_help_exits_zero
run_test "psql reaches the test's own database" test_psql_reaches_own_database
run_test "each test gets a fresh database" test_databases_are_independent
run_test "SLUICE_DB is a URL libpq accepts" test_sluice_db_is_libpq_url
t_done
