#!/usr/bin/env bash
# test_examples.sh: every job in jobs/examples runs as written, in order, on PostgreSQL and on SQLite, and `down base` gives every table back.
. "$(dirname "$0")/../harness/lib.sh"

EXAMPLE_JOBS=(0001_backfill_full_name 0002_copy_orders_to_archive 0003_purge_archived_orders
    0004_backfill_invoice_cents)

make_schema() {
    psql_q "
create table users (id bigint primary key, first_name text not null, last_name text not null, full_name text);
insert into users select g, 'first' || g, 'last' || g, case when g % 10 = 0 then 'kept ' || g end
  from generate_series(1, 12000) g;
create table orders (id bigint primary key, customer_id int not null, amount numeric(10, 2) not null,
                     created_at date not null);
insert into orders select g, g % 97, (g % 1000) / 7.0, date '2024-06-01' + (g % 400)
  from generate_series(1, 9000) g;
create table orders_archive (id bigint primary key, customer_id int not null, amount numeric(10, 2) not null,
                             created_at date not null);
create table invoices (tenant_id int, id int, total numeric(12, 2) not null, total_cents bigint,
                       primary key (tenant_id, id));
insert into invoices select t, i, (t * i) / 3.0, case when i = 7 then 1 end
  from generate_series(1, 12) t, generate_series(1, 400) i;
analyze"
}

# The same tables and rows in an SQLite file ($T_DIR/t.db, WAL), as an SQLite schema would declare
# them: users and orders_archive keyed by the rowid, orders by a bigint primary key (a separate unique
# index), dates as ISO text, amounts as REAL rounded to cents.
make_schema_sqlite() {
    sq_init
    sq "
create table users (id integer primary key, first_name text not null, last_name text not null, full_name text);
with recursive g(i) as (select 1 union all select i + 1 from g where i < 12000)
insert into users select i, 'first' || i, 'last' || i, case when i % 10 = 0 then 'kept ' || i end from g;
create table orders (id bigint not null primary key, customer_id int not null, amount numeric(10, 2) not null,
                     created_at date not null);
with recursive g(i) as (select 1 union all select i + 1 from g where i < 9000)
insert into orders select i, i % 97, round((i % 1000) / 7.0, 2), date('2024-06-01', '+' || (i % 400) || ' days')
  from g;
create table orders_archive (id integer primary key, customer_id int not null, amount numeric(10, 2) not null,
                             created_at date not null);
create table invoices (tenant_id int not null, id int not null, total numeric(12, 2) not null, total_cents bigint,
                       primary key (tenant_id, id));
with recursive t(i) as (select 1 union all select i + 1 from t where i < 12),
               g(i) as (select 1 union all select i + 1 from g where i < 400)
insert into invoices select t.i, g.i, round(t.i * g.i / 3.0, 2), case when g.i = 7 then 1 end from t, g;
analyze"
}

# md5 of every example table, each in key order.
tables_md5() {
    psql_q "select md5(string_agg(x, '|')) from (
      select (select md5(string_agg(u::text, ',' order by id)) from users u) x
      union all select coalesce((select md5(string_agg(o::text, ',' order by id)) from orders o), '')
      union all select coalesce((select md5(string_agg(a::text, ',' order by id)) from orders_archive a), '')
      union all select (select md5(string_agg(i::text, ',' order by tenant_id, id)) from invoices i)) s"
}

# The same on SQLite: each table dumped value by value through quote(), so types count too.
tables_sum_sqlite() {
    local t
    for t in users orders orders_archive invoices; do
        echo "$t $(sq_sum "$t")"
    done
}

# load_states: STATES = every job's state from `status --json`, space-separated, in job order.
load_states() {
    load_status
    STATES=$(python3 -c 'import json,sys; print(" ".join(j["state"] for j in json.load(sys.stdin)))' <<<"$STATUS_JSON")
}

test_examples_up_then_down_base() {
    make_schema
    cp "$SLUICE_ROOT"/jobs/examples/*.sql "$JOBS/"
    local before old_orders
    before=$(tables_md5)
    old_orders=$(psql_q "select count(*) from orders where created_at < date '2025-01-01'")
    run_sluice up
    assert_rc 0
    # 0001: every NULL full_name filled, the ones already set left alone.
    assert_sql "select count(*) from users where full_name = first_name || ' ' || last_name" 10800
    assert_sql "select count(*) from users where full_name like 'kept %'" 1200
    # 0002 copied the old orders, 0003 purged them from orders.
    assert_sql "select count(*) from orders_archive" "$old_orders"
    assert_sql "select count(*) from orders where created_at < date '2025-01-01'" 0
    assert_sql "select count(*) from orders" $((9000 - old_orders))
    # 0004 over the composite key.
    assert_sql "select count(*) from invoices where total_cents = round(total * 100)" 4788
    assert_sql "select count(*) from invoices where total_cents = 1" 12
    load_states
    assert_eq "$STATES" "done done done done" "states after up"
    run_sluice down base
    assert_rc 0
    assert_eq "$(tables_md5)" "$before" "every table as before up"
    load_states
    assert_eq "$STATES" "rolled_back rolled_back rolled_back rolled_back" "states after down base"
}

test_examples_sqlite_up_then_down_base() {
    make_schema_sqlite
    cp "$SLUICE_ROOT"/jobs/examples/*.sql "$JOBS/"
    local before after old_orders old_dump
    before=$(tables_sum_sqlite)
    old_orders=$(sq "select count(*) from orders where created_at < '2025-01-01'")
    old_dump=$(sq "select quote(id) || '|' || quote(customer_id) || '|' || quote(amount) || '|' || quote(created_at)
                     from orders where created_at < '2025-01-01' order by id")
    assert_ne "$old_orders" 0 "old orders in the test data"
    run_sluice up
    assert_rc 0
    assert_sq "select count(*) from users where full_name = first_name || ' ' || last_name" 10800
    assert_sq "select count(*) from users where full_name like 'kept %'" 1200
    # The archive holds the old orders as they were: same values, same types.
    assert_eq "$(sq_dump orders_archive)" "$old_dump" "orders_archive after up vs the old orders before"
    assert_sq "select count(*) from orders where created_at < '2025-01-01'" 0
    assert_sq "select count(*) from orders" $((9000 - old_orders))
    assert_sq "select count(*), sum(typeof(total_cents) = 'integer') from invoices
                where total_cents = round(total * 100)" "4788|4788"
    assert_sq "select count(*) from invoices where total_cents = 1" 12
    load_states
    assert_eq "$STATES" "done done done done" "states after up"
    run_sluice down base
    assert_rc 0
    after=$(tables_sum_sqlite)
    assert_eq "$after" "$before" "every table as before up (rows, values and types)"
    load_states
    assert_eq "$STATES" "rolled_back rolled_back rolled_back rolled_back" "states after down base"
}

# plan on every example, before anything ran (0003's requires is not true yet: plan says so, exit 0).
plan_each() {
    local job
    for job in "${EXAMPLE_JOBS[@]}"; do
        run_sluice plan "$job"
        assert_rc 0
        assert_contains "$OUT" "first chunk" "plan $job"
    done
    assert_contains "$OUT" "first chunk: :lo = (1, 1)" "plan of the composite key"
}

test_examples_plan() {
    make_schema
    cp "$SLUICE_ROOT"/jobs/examples/*.sql "$JOBS/"
    plan_each
}

test_examples_sqlite_plan() {
    make_schema_sqlite
    cp "$SLUICE_ROOT"/jobs/examples/*.sql "$JOBS/"
    plan_each
    run_sluice plan 0001_backfill_full_name
    assert_contains "$OUT" "SEARCH users USING INTEGER PRIMARY KEY" "plan of 0001's chunk on SQLite"
    assert_not_contains "$OUT" "warning" "plan of 0001 on SQLite"
}

# 0003's requires refuses (exit 2, nothing changed) while the old orders are not all archived, and
# when orders_archive does not exist at all (the query's own error, named).
test_examples_requires_refuses() {
    make_schema
    cp "$SLUICE_ROOT"/jobs/examples/0003_purge_archived_orders.sql "$JOBS/"
    local before
    before=$(tables_md5)
    run_sluice up 0003_purge_archived_orders
    assert_rc 2
    assert_contains "$ERR" "0003_purge_archived_orders.sql:10: refusing to start: requires returned f"
    assert_eq "$(tables_md5)" "$before" "tables after the refusal"
    psql_q "drop table orders_archive"
    run_sluice up 0003_purge_archived_orders
    assert_rc 2
    assert_contains "$ERR" "requires query failed"
    assert_contains "$ERR" "orders_archive"
}

test_examples_sqlite_requires_refuses() {
    make_schema_sqlite
    cp "$SLUICE_ROOT"/jobs/examples/0003_purge_archived_orders.sql "$JOBS/"
    local before after
    before=$(tables_sum_sqlite)
    run_sluice up 0003_purge_archived_orders
    assert_rc 2
    assert_contains "$ERR" "0003_purge_archived_orders.sql:10: refusing to start: requires returned 0"
    after=$(tables_sum_sqlite)
    assert_eq "$after" "$before" "tables after the refusal"
    sq "drop table orders_archive"
    run_sluice up 0003_purge_archived_orders
    assert_rc 2
    assert_contains "$ERR" "requires query failed: no such table: orders_archive"
    assert_sq "select count(*) from orders" 9000
}

run_test "jobs/examples: up runs them all in order, down base gives every table back" test_examples_up_then_down_base
run_test "jobs/examples on SQLite: the same files, up in order, down base gives every table back" \
    test_examples_sqlite_up_then_down_base
run_test "jobs/examples: plan accepts each" test_examples_plan
run_test "jobs/examples on SQLite: plan accepts each" test_examples_sqlite_plan
run_test "jobs/examples: 0003 refuses to purge what is not archived, or with no archive table" \
    test_examples_requires_refuses
run_test "jobs/examples on SQLite: 0003 refuses to purge what is not archived, or with no archive table" \
    test_examples_sqlite_requires_refuses
t_done
