/* test_keys.c: the key SQL builders, as exact strings and run against a real in-memory SQLite database. */
#include "check.h"
#include "sluice/jobs/keys.h"

#include <sqlite3.h>
#include <stdlib.h>

/* A keyspec from literals; types may be NULL for SQLite. */
static sl_keyspec make_ks(sl_dialect dialect, const char *table, const char *where, const char *c1, const char *t1,
                          const char *c2, const char *t2)
{
    sl_keyspec ks = {0};
    ks.dialect = dialect;
    ks.table = sl_strdup(table);
    ks.where = where ? sl_strdup(where) : NULL;
    ks.cols[0] = sl_strdup(c1);
    ks.types[0] = sl_strdup(t1 ? t1 : "");
    ks.ncols = 1;
    if (c2) {
        ks.cols[1] = sl_strdup(c2);
        ks.types[1] = sl_strdup(t2 ? t2 : "");
        ks.ncols = 2;
    }
    return ks;
}

#define CHECK_SQL(expr, expected)  \
    do {                           \
        char *sql_ = (expr);       \
        CHECK_STR(sql_, expected); \
        free(sql_);                \
    } while (0)

static void test_quote_ident(void)
{
    CHECK_SQL(sl_quote_ident("id"), "\"id\"");
    CHECK_SQL(sl_quote_ident("User Id"), "\"User Id\"");
    CHECK_SQL(sl_quote_ident("a\"b"), "\"a\"\"b\"");
    CHECK_SQL(sl_quote_ident(""), "\"\"");
}

static void test_column_list(void)
{
    sl_keyspec one = make_ks(SL_DIALECT_PG, "\"t\"", NULL, "\"id\"", "bigint", NULL, NULL);
    sl_keyspec two = make_ks(SL_DIALECT_PG, "\"t\"", NULL, "\"tenant\"", "integer", "\"id\"", "text");
    CHECK_SQL(sl_keys_column_list(&one), "\"id\"");
    CHECK_SQL(sl_keys_column_list(&two), "\"tenant\", \"id\"");
    sl_keyspec_free(&one);
    sl_keyspec_free(&two);
    CHECK(one.table == NULL && one.ncols == 0);
}

static void test_placeholders(void)
{
    sl_keyspec pg1 = make_ks(SL_DIALECT_PG, "\"t\"", NULL, "\"id\"", "bigint", NULL, NULL);
    sl_keyspec pg2 = make_ks(SL_DIALECT_PG, "\"t\"", NULL, "\"tenant\"", "integer", "\"id\"", "text");
    sl_keyspec lite1 = make_ks(SL_DIALECT_SQLITE, "\"t\"", NULL, "\"id\"", NULL, NULL, NULL);
    sl_keyspec lite2 = make_ks(SL_DIALECT_SQLITE, "\"t\"", NULL, "\"tenant\"", "INTEGER", "\"id\"", NULL);
    CHECK_SQL(sl_keys_placeholder_sql(&pg1, 1), "$1::bigint");
    CHECK_SQL(sl_keys_placeholder_sql(&pg1, 4), "$4::bigint");
    CHECK_SQL(sl_keys_placeholder_sql(&pg2, 1), "($1::integer, $2::text)");
    CHECK_SQL(sl_keys_placeholder_sql(&pg2, 3), "($3::integer, $4::text)");
    CHECK_SQL(sl_keys_placeholder_sql(&lite1, 1), "$1");
    CHECK_SQL(sl_keys_placeholder_sql(&lite1, 2), "$2");
    CHECK_SQL(sl_keys_placeholder_sql(&lite2, 3), "($3, $4)");
    sl_keyspec_free(&pg1);
    sl_keyspec_free(&pg2);
    sl_keyspec_free(&lite1);
    sl_keyspec_free(&lite2);
}

static void test_timestamp_type_cast(void)
{
    sl_keyspec ks = make_ks(SL_DIALECT_PG, "\"t\"", NULL, "\"at\"", "timestamp with time zone", NULL, NULL);
    CHECK_SQL(sl_keys_placeholder_sql(&ks, 1), "$1::timestamp with time zone");
    sl_keyspec_free(&ks);
}

static void test_range_predicate(void)
{
    sl_keyspec pg1 = make_ks(SL_DIALECT_PG, "\"t\"", "deleted_at IS NULL", "\"id\"", "bigint", NULL, NULL);
    sl_keyspec pg2 = make_ks(SL_DIALECT_PG, "\"t\"", NULL, "\"tenant\"", "integer", "\"id\"", "text");
    sl_keyspec lite2 = make_ks(SL_DIALECT_SQLITE, "\"t\"", "x = 1 OR y = 2", "\"a\"", NULL, "\"b\"", NULL);
    CHECK_SQL(sl_keys_range_predicate(&pg1, 1, 0), "\"id\" BETWEEN $1::bigint AND $2::bigint");
    CHECK_SQL(sl_keys_range_predicate(&pg1, 1, 1), "\"id\" BETWEEN $1::bigint AND $2::bigint AND (deleted_at IS NULL)");
    CHECK_SQL(sl_keys_range_predicate(&pg1, 3, 0), "\"id\" BETWEEN $3::bigint AND $4::bigint");
    CHECK_SQL(sl_keys_range_predicate(&pg2, 1, 1),
              "(\"tenant\", \"id\") BETWEEN ($1::integer, $2::text) AND ($3::integer, $4::text)");
    CHECK_SQL(sl_keys_range_predicate(&pg2, 2, 0),
              "(\"tenant\", \"id\") BETWEEN ($2::integer, $3::text) AND ($4::integer, $5::text)");
    CHECK_SQL(sl_keys_range_predicate(&lite2, 1, 1),
              "(\"a\", \"b\") BETWEEN ($1, $2) AND ($3, $4) AND (x = 1 OR y = 2)");
    CHECK_SQL(sl_keys_range_predicate(&lite2, 5, 0), "(\"a\", \"b\") BETWEEN ($5, $6) AND ($7, $8)");
    sl_keyspec_free(&pg1);
    sl_keyspec_free(&pg2);
    sl_keyspec_free(&lite2);
}

#define WINDOW_TAIL " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) LIMIT 1"

static void test_boundary_pg_single(void)
{
    /* a type with min() and max(): aggregates, no window */
    sl_keyspec ks = make_ks(SL_DIALECT_PG, "\"public\".\"users\"", NULL, "\"id\"", "bigint", NULL, NULL);
    CHECK_SQL(sl_keys_boundary_sql(&ks, 0),
              "SELECT min(\"id\")::text, max(\"id\")::text, count(*)::text"
              " FROM (SELECT \"id\" FROM \"public\".\"users\" ORDER BY \"id\" LIMIT $1) s HAVING count(*) > 0");
    CHECK_SQL(sl_keys_boundary_sql(&ks, 1),
              "SELECT min(\"id\")::text, max(\"id\")::text, count(*)::text"
              " FROM (SELECT \"id\" FROM \"public\".\"users\" WHERE \"id\" > $1::bigint ORDER BY \"id\" LIMIT $2) s"
              " HAVING count(*) > 0");
    ks.where = sl_strdup("active OR admin");
    CHECK_SQL(sl_keys_boundary_sql(&ks, 1),
              "SELECT min(\"id\")::text, max(\"id\")::text, count(*)::text"
              " FROM (SELECT \"id\" FROM \"public\".\"users\" WHERE \"id\" > $1::bigint AND (active OR admin)"
              " ORDER BY \"id\" LIMIT $2) s HAVING count(*) > 0");
    sl_keyspec_free(&ks);
    /* character varying(n) has them too; uuid has none before PostgreSQL 16: the window form */
    sl_keyspec vc = make_ks(SL_DIALECT_PG, "\"t\"", NULL, "\"code\"", "character varying(20)", NULL, NULL);
    CHECK_SQL(sl_keys_boundary_sql(&vc, 0),
              "SELECT min(\"code\")::text, max(\"code\")::text, count(*)::text"
              " FROM (SELECT \"code\" FROM \"t\" ORDER BY \"code\" LIMIT $1) s HAVING count(*) > 0");
    sl_keyspec_free(&vc);
    sl_keyspec uu = make_ks(SL_DIALECT_PG, "\"public\".\"users\"", "active OR admin", "\"id\"", "uuid", NULL, NULL);
    CHECK_SQL(sl_keys_boundary_sql(&uu, 0),
              "SELECT (first_value(\"id\") OVER w)::text, (last_value(\"id\") OVER w)::text, (count(*) OVER w)::text"
              " FROM (SELECT \"id\" FROM \"public\".\"users\" WHERE (active OR admin) ORDER BY \"id\" LIMIT $1) s"
              " WINDOW w AS (ORDER BY \"id\"" WINDOW_TAIL);
    CHECK_SQL(sl_keys_boundary_sql(&uu, 1),
              "SELECT (first_value(\"id\") OVER w)::text, (last_value(\"id\") OVER w)::text, (count(*) OVER w)::text"
              " FROM (SELECT \"id\" FROM \"public\".\"users\" WHERE \"id\" > $1::uuid AND (active OR admin)"
              " ORDER BY \"id\" LIMIT $2) s WINDOW w AS (ORDER BY \"id\"" WINDOW_TAIL);
    sl_keyspec_free(&uu);
}

static void test_boundary_pg_composite(void)
{
    sl_keyspec ks = make_ks(SL_DIALECT_PG, "\"t\"", "n > 0", "\"tenant\"", "integer", "\"id\"", "uuid");
    CHECK_SQL(sl_keys_boundary_sql(&ks, 1),
              "SELECT (first_value(\"tenant\") OVER w)::text, (first_value(\"id\") OVER w)::text,"
              " (last_value(\"tenant\") OVER w)::text, (last_value(\"id\") OVER w)::text, (count(*) OVER w)::text"
              " FROM (SELECT \"tenant\", \"id\" FROM \"t\" WHERE (\"tenant\", \"id\") > ($1::integer, $2::uuid)"
              " AND (n > 0) ORDER BY \"tenant\", \"id\" LIMIT $3) s"
              " WINDOW w AS (ORDER BY \"tenant\", \"id\"" WINDOW_TAIL);
    CHECK_SQL(sl_keys_boundary_sql(&ks, 0),
              "SELECT (first_value(\"tenant\") OVER w)::text, (first_value(\"id\") OVER w)::text,"
              " (last_value(\"tenant\") OVER w)::text, (last_value(\"id\") OVER w)::text, (count(*) OVER w)::text"
              " FROM (SELECT \"tenant\", \"id\" FROM \"t\" WHERE (n > 0) ORDER BY \"tenant\", \"id\" LIMIT $1) s"
              " WINDOW w AS (ORDER BY \"tenant\", \"id\"" WINDOW_TAIL);
    sl_keyspec_free(&ks);
}

/* A worker's range: after a key, up to a key, or both (up_chunk.c). */
static void test_boundary_range(void)
{
    sl_keyspec ks = make_ks(SL_DIALECT_PG, "\"t\"", "n > 0", "\"tenant\"", "text", "\"id\"", "text");
    CHECK_SQL(sl_keys_boundary_range_sql(&ks, 1, 1),
              "SELECT (first_value(\"tenant\") OVER w)::text, (first_value(\"id\") OVER w)::text,"
              " (last_value(\"tenant\") OVER w)::text, (last_value(\"id\") OVER w)::text, (count(*) OVER w)::text"
              " FROM (SELECT \"tenant\", \"id\" FROM \"t\" WHERE (\"tenant\", \"id\") > ($1::text, $2::text)"
              " AND (\"tenant\", \"id\") <= ($3::text, $4::text) AND (n > 0) ORDER BY \"tenant\", \"id\" LIMIT $5) s"
              " WINDOW w AS (ORDER BY \"tenant\", \"id\"" WINDOW_TAIL);
    CHECK_SQL(sl_keys_boundary_range_sql(&ks, 0, 1),
              "SELECT (first_value(\"tenant\") OVER w)::text, (first_value(\"id\") OVER w)::text,"
              " (last_value(\"tenant\") OVER w)::text, (last_value(\"id\") OVER w)::text, (count(*) OVER w)::text"
              " FROM (SELECT \"tenant\", \"id\" FROM \"t\" WHERE (\"tenant\", \"id\") <= ($1::text, $2::text)"
              " AND (n > 0) ORDER BY \"tenant\", \"id\" LIMIT $3) s"
              " WINDOW w AS (ORDER BY \"tenant\", \"id\"" WINDOW_TAIL);
    sl_keyspec_free(&ks);
    sl_keyspec one = make_ks(SL_DIALECT_SQLITE, "\"users\"", NULL, "\"id\"", "INTEGER", NULL, NULL);
    CHECK_SQL(sl_keys_boundary_range_sql(&one, 1, 1),
              "SELECT min(\"id\"), max(\"id\"), count(*)"
              " FROM (SELECT \"id\" FROM \"users\" WHERE \"id\" > $1 AND \"id\" <= $2 ORDER BY \"id\" LIMIT $3) s"
              " HAVING count(*) > 0");
    sl_keyspec_free(&one);
}

/* What a walk has left of a range, for the estimate (catalog.c). */
static void test_span(void)
{
    sl_keyspec ks = make_ks(SL_DIALECT_PG, "\"t\"", "n > 0", "\"tenant\"", "text", "\"id\"", "text");
    CHECK_SQL(sl_keys_span_sql(&ks, "1", 1, 1), "SELECT 1 FROM \"t\" WHERE (\"tenant\", \"id\") > ($1::text, $2::text)"
                                                " AND (\"tenant\", \"id\") <= ($3::text, $4::text) AND (n > 0)");
    CHECK_SQL(sl_keys_span_sql(&ks, "1", 0, 0), "SELECT 1 FROM \"t\" WHERE (n > 0)");
    sl_keyspec_free(&ks);
    sl_keyspec one = make_ks(SL_DIALECT_SQLITE, "\"users\"", NULL, "\"id\"", "INTEGER", NULL, NULL);
    CHECK_SQL(sl_keys_span_sql(&one, "count(*)", 0, 1), "SELECT count(*) FROM \"users\" WHERE \"id\" <= $1");
    CHECK_SQL(sl_keys_span_sql(&one, "count(*)", 0, 0), "SELECT count(*) FROM \"users\"");
    sl_keyspec_free(&one);
}

static void test_boundary_sqlite(void)
{
    sl_keyspec one = make_ks(SL_DIALECT_SQLITE, "\"users\"", NULL, "\"id\"", "INTEGER", NULL, NULL);
    sl_keyspec two = make_ks(SL_DIALECT_SQLITE, "\"t\"", "n > 0", "\"a\"", NULL, "\"b\"", NULL);
    /* one column: min/max, no second sort */
    CHECK_SQL(sl_keys_boundary_sql(&one, 1),
              "SELECT min(\"id\"), max(\"id\"), count(*)"
              " FROM (SELECT \"id\" FROM \"users\" WHERE \"id\" > $1 ORDER BY \"id\" LIMIT $2) s"
              " HAVING count(*) > 0");
    CHECK_SQL(sl_keys_boundary_sql(&two, 0),
              "SELECT first_value(\"a\") OVER w, first_value(\"b\") OVER w, last_value(\"a\") OVER w,"
              " last_value(\"b\") OVER w, count(*) OVER w"
              " FROM (SELECT \"a\", \"b\" FROM \"t\" WHERE (n > 0) ORDER BY \"a\", \"b\" LIMIT $1) s"
              " WINDOW w AS (ORDER BY \"a\", \"b\"" WINDOW_TAIL);
    CHECK_SQL(sl_keys_boundary_sql(&two, 1),
              "SELECT first_value(\"a\") OVER w, first_value(\"b\") OVER w, last_value(\"a\") OVER w,"
              " last_value(\"b\") OVER w, count(*) OVER w"
              " FROM (SELECT \"a\", \"b\" FROM \"t\" WHERE (\"a\", \"b\") > ($1, $2) AND (n > 0)"
              " ORDER BY \"a\", \"b\" LIMIT $3) s WINDOW w AS (ORDER BY \"a\", \"b\"" WINDOW_TAIL);
    sl_keyspec_free(&one);
    sl_keyspec_free(&two);
}

/* ---- the SQLite SQL run for real ---- */

static sqlite3 *open_fixture(void)
{
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    /* 25 rows; tenant = id % 3 so that the composite key order differs from id order; even ids are "live". */
    const char *sql = "CREATE TABLE t (tenant INTEGER NOT NULL, id INTEGER NOT NULL, live INTEGER,"
                      " PRIMARY KEY (tenant, id));"
                      "CREATE TABLE u (id INTEGER PRIMARY KEY, live INTEGER);"
                      "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < 25)"
                      " INSERT INTO t SELECT x % 3, x, x % 2 = 0 FROM g;"
                      "INSERT INTO u SELECT id, live FROM t;";
    char *msg = NULL;
    CHECK(sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK);
    if (msg)
        printf("# %s\n", msg);
    sqlite3_free(msg);
    return db;
}

/* Run a boundary query, binding the key (as text, the way the runner binds
 * it) and the limit; write the row as "first|...|last|...|count" or "" for no row. */
static void run_boundary(sqlite3 *db, const sl_keyspec *ks, const char *const *after, int64_t limit, char *out,
                         size_t outsz)
{
    char *sql = sl_keys_boundary_sql(ks, after != NULL);
    sqlite3_stmt *st = NULL;
    out[0] = '\0';
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    CHECK(rc == SQLITE_OK);
    if (rc != SQLITE_OK)
        printf("# %s: %s\n", sql, sqlite3_errmsg(db));
    free(sql);
    if (rc != SQLITE_OK)
        return;
    int param = 1;
    for (size_t i = 0; after && i < ks->ncols; i++)
        sqlite3_bind_text(st, param++, after[i], -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, param, limit);
    CHECK(sqlite3_bind_parameter_count(st) == param);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        size_t len = 0;
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            const char *v = (const char *)sqlite3_column_text(st, c);
            int n = snprintf(out + len, outsz - len, "%s%s", c ? "|" : "", v ? v : "NULL");
            CHECK(n >= 0 && (size_t)n < outsz - len);
            len += (size_t)n;
        }
        rc = sqlite3_step(st);
    }
    CHECK(rc == SQLITE_DONE);
    sqlite3_finalize(st);
}

static void test_sqlite_walk_single(void)
{
    sqlite3 *db = open_fixture();
    sl_keyspec ks = make_ks(SL_DIALECT_SQLITE, "\"u\"", NULL, "\"id\"", "INTEGER", NULL, NULL);
    char row[256];
    run_boundary(db, &ks, NULL, 10, row, sizeof row);
    CHECK_STR(row, "1|10|10");
    run_boundary(db, &ks, (const char *const[]){"10"}, 10, row, sizeof row);
    CHECK_STR(row, "11|20|10");
    run_boundary(db, &ks, (const char *const[]){"20"}, 10, row, sizeof row);
    CHECK_STR(row, "21|25|5");
    run_boundary(db, &ks, (const char *const[]){"25"}, 10, row, sizeof row);
    CHECK_STR(row, "");
    sl_keyspec_free(&ks);
    sqlite3_close(db);
}

static void test_sqlite_walk_where(void)
{
    sqlite3 *db = open_fixture();
    sl_keyspec ks = make_ks(SL_DIALECT_SQLITE, "\"u\"", "live = 1 OR id = 1", "\"id\"", "INTEGER", NULL, NULL);
    char row[256];
    run_boundary(db, &ks, NULL, 4, row, sizeof row);
    CHECK_STR(row, "1|6|4"); /* 1 (by the OR), 2, 4, 6: the where is parenthesised */
    run_boundary(db, &ks, (const char *const[]){"6"}, 4, row, sizeof row);
    CHECK_STR(row, "8|14|4");
    run_boundary(db, &ks, (const char *const[]){"22"}, 4, row, sizeof row);
    CHECK_STR(row, "24|24|1");
    run_boundary(db, &ks, (const char *const[]){"24"}, 4, row, sizeof row);
    CHECK_STR(row, "");
    sl_keyspec_free(&ks);
    sqlite3_close(db);
}

static void test_sqlite_walk_composite(void)
{
    sqlite3 *db = open_fixture();
    /* key order: tenant 0: 3,6,...,24 (8 rows); tenant 1: 1,4,...,25 (9); tenant 2: 2,5,...,23 (8) */
    sl_keyspec ks = make_ks(SL_DIALECT_SQLITE, "\"t\"", NULL, "\"tenant\"", "INTEGER", "\"id\"", "INTEGER");
    char row[256];
    run_boundary(db, &ks, NULL, 10, row, sizeof row);
    CHECK_STR(row, "0|3|1|4|10");
    run_boundary(db, &ks, (const char *const[]){"1", "4"}, 10, row, sizeof row);
    CHECK_STR(row, "1|7|2|8|10");
    run_boundary(db, &ks, (const char *const[]){"2", "8"}, 10, row, sizeof row);
    CHECK_STR(row, "2|11|2|23|5");
    run_boundary(db, &ks, (const char *const[]){"2", "23"}, 10, row, sizeof row);
    CHECK_STR(row, "");
    sl_keyspec_free(&ks);
    sqlite3_close(db);
}

/* The range predicate selects exactly the chunk the boundary query found. */
static void test_sqlite_range_predicate(void)
{
    sqlite3 *db = open_fixture();
    sl_keyspec ks = make_ks(SL_DIALECT_SQLITE, "\"t\"", "live = 1", "\"tenant\"", NULL, "\"id\"", NULL);
    char *pred = sl_keys_range_predicate(&ks, 1, 1);
    char *sql =
        sl_asprintf("SELECT count(*), group_concat(id) FROM (SELECT id FROM t WHERE %s ORDER BY tenant, id)", pred);
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    const char *bounds[] = {"0", "6", "1", "10"};
    for (int i = 0; i < 4; i++)
        sqlite3_bind_text(st, i + 1, bounds[i], -1, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    CHECK(sqlite3_column_int(st, 0) == 6);
    CHECK_STR((const char *)sqlite3_column_text(st, 1), "6,12,18,24,4,10");
    sqlite3_finalize(st);
    free(sql);
    free(pred);
    sl_keyspec_free(&ks);
    sqlite3_close(db);
}

/* The key's last value: aliased output, so ORDER BY sorts the column, not its text ("9999" > "10000"). */
static void test_last_sql(void)
{
    sl_keyspec pg = make_ks(SL_DIALECT_PG, "\"t\"", "x > 1", "\"tenant\"", "integer", "\"id\"", "text");
    CHECK_SQL(sl_keys_last_sql(&pg),
              "SELECT \"tenant\"::text AS sluice_k0, \"id\"::text AS sluice_k1 FROM \"t\" WHERE "
              "\"tenant\" IS NOT NULL AND \"id\" IS NOT NULL ORDER BY \"tenant\" DESC, \"id\" DESC "
              "LIMIT 1");
    sl_keyspec_free(&pg);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
                       " INSERT INTO t VALUES (9999, 'a'), (10000, 'b'), (2, NULL)",
                       NULL, NULL, NULL) == SQLITE_OK);
    sl_keyspec lite = make_ks(SL_DIALECT_SQLITE, "\"t\"", NULL, "\"id\"", "INTEGER", NULL, NULL);
    char *sql = sl_keys_last_sql(&lite);
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) == 10000);
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(sql);
    sl_keyspec_free(&lite);
}

int main(void)
{
    RUN(test_quote_ident);
    RUN(test_column_list);
    RUN(test_placeholders);
    RUN(test_timestamp_type_cast);
    RUN(test_range_predicate);
    RUN(test_boundary_pg_single);
    RUN(test_boundary_pg_composite);
    RUN(test_boundary_sqlite);
    RUN(test_boundary_range);
    RUN(test_span);
    RUN(test_sqlite_walk_single);
    RUN(test_sqlite_walk_where);
    RUN(test_sqlite_walk_composite);
    RUN(test_sqlite_range_predicate);
    RUN(test_last_sql);
    return CHECK_DONE();
}
