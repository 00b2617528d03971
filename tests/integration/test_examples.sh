#!/usr/bin/env bash
# test_examples.sh: every job in jobs/examples runs as written, in order, and `down base` gives every table back.
. "$(dirname "$0")/../harness/lib.sh"

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

# md5 of every example table, each in key order.
tables_md5() {
    psql_q "select md5(string_agg(x, '|')) from (
      select (select md5(string_agg(u::text, ',' order by id)) from users u) x
      union all select coalesce((select md5(string_agg(o::text, ',' order by id)) from orders o), '')
      union all select coalesce((select md5(string_agg(a::text, ',' order by id)) from orders_archive a), '')
      union all select (select md5(string_agg(i::text, ',' order by tenant_id, id)) from invoices i)) s"
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
    # 0004 over the composite key.
    assert_sql "select count(*) from invoices where total_cents = round(total * 100)" 4788
    assert_sql "select count(*) from invoices where total_cents = 1" 12
    run_sluice status --json
    local states
    states=$(python3 -c 'import json,sys; print(" ".join(j["state"] for j in json.load(sys.stdin)))' <<<"$OUT")
    assert_eq "$states" "done done done done" "states after up"
    run_sluice down base
    assert_rc 0
    assert_eq "$(tables_md5)" "$before" "every table as before up"
    run_sluice status --json
    states=$(python3 -c 'import json,sys; print(" ".join(j["state"] for j in json.load(sys.stdin)))' <<<"$OUT")
    assert_eq "$states" "rolled_back rolled_back rolled_back rolled_back" "states after down base"
}

test_examples_plan() {
    make_schema
    cp "$SLUICE_ROOT"/jobs/examples/*.sql "$JOBS/"
    local job
    for job in 0001_backfill_full_name 0002_copy_orders_to_archive 0003_purge_archived_orders \
        0004_backfill_invoice_cents; do
        run_sluice plan "$job"
        assert_rc 0
        assert_contains "$OUT" "first chunk" "plan $job"
    done
}

run_test "jobs/examples: up runs them all in order, down base gives every table back" test_examples_up_then_down_base
run_test "jobs/examples: plan accepts each" test_examples_plan
t_done
