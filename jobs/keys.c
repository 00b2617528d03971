/* keys.c: the SQL that walks a job's key: chunk boundaries, :lo/:hi placeholders, range predicates. */
#include "sluice/jobs/keys.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/jobs/job.h"

void sl_keyspec_free(sl_keyspec *ks)
{
    if (!ks)
        return;
    free(ks->table);
    for (size_t i = 0; i < SL_MAX_KEY_COLS; i++) {
        free(ks->cols[i]);
        free(ks->types[i]);
    }
    free(ks->where);
    memset(ks, 0, sizeof *ks);
}

static void check_keyspec(const sl_keyspec *ks)
{
    assert(ks && "BUG: NULL keyspec");
    assert(ks->ncols >= 1 && ks->ncols <= SL_MAX_KEY_COLS && "BUG: keyspec without key columns");
    assert(ks->table && "BUG: keyspec without a table");
}

/* One bound parameter, $N on both databases. PostgreSQL gets an explicit
 * cast because the driver sends every value as text and the comparison must
 * be done in the key's own type (and collation) for the index to be usable.
 * SQLite's needs no cast: a parameter has no affinity, so it takes the
 * column's. */
static void add_param(sl_buf *buf, const sl_keyspec *ks, int param, size_t col)
{
    sl_buf_printf(buf, "$%d", param);
    if (ks->dialect != SL_DIALECT_SQLITE && ks->types[col] && ks->types[col][0])
        sl_buf_printf(buf, "::%s", ks->types[col]);
}

/* The key as a value: "$1::bigint" or a row constructor "($1::integer, $2::text)". */
static void add_key_params(sl_buf *buf, const sl_keyspec *ks, int first_param)
{
    if (ks->ncols > 1)
        sl_buf_addc(buf, '(');
    for (size_t i = 0; i < ks->ncols; i++) {
        if (i)
            sl_buf_adds(buf, ", ");
        add_param(buf, ks, first_param + (int)i, i);
    }
    if (ks->ncols > 1)
        sl_buf_addc(buf, ')');
}

static void add_column_list(sl_buf *buf, const sl_keyspec *ks)
{
    for (size_t i = 0; i < ks->ncols; i++) {
        if (i)
            sl_buf_adds(buf, ", ");
        sl_buf_adds(buf, ks->cols[i]);
    }
}

/* The key as an expression: a column, or a row of columns. */
static void add_key_expr(sl_buf *buf, const sl_keyspec *ks)
{
    if (ks->ncols > 1)
        sl_buf_addc(buf, '(');
    add_column_list(buf, ks);
    if (ks->ncols > 1)
        sl_buf_addc(buf, ')');
}

char *sl_keys_column_list(const sl_keyspec *ks)
{
    check_keyspec(ks);
    sl_buf buf = {0};
    add_column_list(&buf, ks);
    return sl_buf_take(&buf);
}

char *sl_keys_placeholder_sql(const sl_keyspec *ks, int first_param)
{
    check_keyspec(ks);
    assert(first_param >= 1 && "BUG: parameters are numbered from 1");
    sl_buf buf = {0};
    add_key_params(&buf, ks, first_param);
    return sl_buf_take(&buf);
}

char *sl_keys_stmt_sql(const sl_keyspec *ks, const sl_stmt *st)
{
    char *lo = sl_keys_placeholder_sql(ks, 1), *hi = sl_keys_placeholder_sql(ks, st->uses_lo ? 1 + (int)ks->ncols : 1);
    char *sql = sl_stmt_render(st, lo, hi);
    free(lo);
    free(hi);
    return sql;
}

char *sl_keys_range_predicate(const sl_keyspec *ks, int first_param, int with_where)
{
    check_keyspec(ks);
    assert(first_param >= 1 && "BUG: parameters are numbered from 1");
    sl_buf buf = {0};
    add_key_expr(&buf, ks);
    sl_buf_adds(&buf, " BETWEEN ");
    add_key_params(&buf, ks, first_param);
    sl_buf_adds(&buf, " AND ");
    add_key_params(&buf, ks, first_param + (int)ks->ncols);
    if (with_where && ks->where)
        sl_buf_printf(&buf, " AND (%s)", ks->where);
    return sl_buf_take(&buf);
}

/* One output column of the boundary query. PostgreSQL casts to text so the
 * client reads the server's exact text form whatever the key's type. */
static void add_window_col(sl_buf *buf, const sl_keyspec *ks, const char *fn, const char *arg)
{
    if (ks->dialect == SL_DIALECT_PG)
        sl_buf_printf(buf, "(%s(%s) OVER w)::text", fn, arg);
    else
        sl_buf_printf(buf, "%s(%s) OVER w", fn, arg);
}

/* " FROM table WHERE key > $1.. AND key <= $n.. AND (where)": the keys
 * after the first n parameters (with after_param), up to and including the
 * next n (with until_param), that match where. Returns the next parameter's
 * number. */
static int add_span(sl_buf *buf, const sl_keyspec *ks, int after_param, int until_param)
{
    sl_buf_printf(buf, " FROM %s", ks->table);
    const char *joiner = " WHERE ";
    int param = 1;
    if (after_param) {
        sl_buf_adds(buf, joiner);
        add_key_expr(buf, ks);
        sl_buf_adds(buf, " > ");
        add_key_params(buf, ks, param);
        param += (int)ks->ncols;
        joiner = " AND ";
    }
    if (until_param) {
        sl_buf_adds(buf, joiner);
        add_key_expr(buf, ks);
        sl_buf_adds(buf, " <= ");
        add_key_params(buf, ks, param);
        param += (int)ks->ncols;
        joiner = " AND ";
    }
    if (ks->where)
        sl_buf_printf(buf, "%s(%s)", joiner, ks->where);
    return param;
}

/* The inner query: the next `limit` keys in index order, after the key at
 * $1.. (after_param) and up to the key at the next parameters (until_param).
 * Its ORDER BY must be exactly the key's column order so that the planner
 * walks the key's btree and stops after `limit` entries instead of sorting
 * the table. */
static void add_inner_select(sl_buf *buf, const sl_keyspec *ks, int after_param, int until_param)
{
    sl_buf_adds(buf, "SELECT ");
    add_column_list(buf, ks);
    int param = add_span(buf, ks, after_param, until_param);
    sl_buf_adds(buf, " ORDER BY ");
    add_column_list(buf, ks);
    sl_buf_printf(buf, " LIMIT $%d", param);
}

/* PostgreSQL types with min() and max() (uuid and bytea, for one, have
 * none before PostgreSQL 16), by format_type's name. */
static int pg_has_minmax(const char *type)
{
    static const char *const prefixes[] = {"smallint", "integer",   "bigint", "numeric",   "real", "double precision",
                                           "text",     "character", "date",   "timestamp", "time", "interval",
                                           "oid"};
    if (!type)
        return 0;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (strncmp(type, prefixes[i], n) == 0 && (type[n] == '\0' || type[n] == '(' || type[n] == ' '))
            return 1;
    }
    return 0;
}

/* first_value/last_value over a whole-partition frame give both ends of the
 * chunk in one pass over at most `limit` rows, on PostgreSQL and on SQLite
 * (>= 3.25) alike; min()/max() would not work for a composite key. */
char *sl_keys_boundary_sql(const sl_keyspec *ks, int after_param)
{
    return sl_keys_boundary_range_sql(ks, after_param, 0);
}

char *sl_keys_boundary_range_sql(const sl_keyspec *ks, int after_param, int until_param)
{
    check_keyspec(ks);
    assert((after_param == 0 || after_param == 1) && "BUG: after_param is 0 or 1");
    assert((until_param == 0 || until_param == 1) && "BUG: until_param is 0 or 1");
    sl_buf buf = {0};
    if (ks->ncols == 1 && (ks->dialect == SL_DIALECT_SQLITE || pg_has_minmax(ks->types[0]))) {
        /* SQLite sorts the rows again for the window (a TEMP B-TREE), which
         * cost a third of a chunk's time in a 1000-row backfill, and
         * PostgreSQL keeps them in a tuplestore (0.1 ms a chunk); min() and
         * max() of one column need neither, and compare with the column's
         * collation as the index does. HAVING: no row when none is left, as
         * from the window form. */
        if (ks->dialect == SL_DIALECT_PG)
            sl_buf_printf(&buf, "SELECT min(%s)::text, max(%s)::text, count(*)::text FROM (", ks->cols[0], ks->cols[0]);
        else
            sl_buf_printf(&buf, "SELECT min(%s), max(%s), count(*) FROM (", ks->cols[0], ks->cols[0]);
        add_inner_select(&buf, ks, after_param, until_param);
        sl_buf_adds(&buf, ") s HAVING count(*) > 0");
        return sl_buf_take(&buf);
    }
    sl_buf_adds(&buf, "SELECT ");
    for (size_t i = 0; i < ks->ncols; i++) {
        add_window_col(&buf, ks, "first_value", ks->cols[i]);
        sl_buf_adds(&buf, ", ");
    }
    for (size_t i = 0; i < ks->ncols; i++) {
        add_window_col(&buf, ks, "last_value", ks->cols[i]);
        sl_buf_adds(&buf, ", ");
    }
    add_window_col(&buf, ks, "count", "*");
    sl_buf_adds(&buf, " FROM (");
    add_inner_select(&buf, ks, after_param, until_param);
    sl_buf_adds(&buf, ") s WINDOW w AS (ORDER BY ");
    add_column_list(&buf, ks);
    sl_buf_adds(&buf, " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) LIMIT 1");
    return sl_buf_take(&buf);
}

char *sl_keys_span_sql(const sl_keyspec *ks, const char *what, int after_param, int until_param)
{
    check_keyspec(ks);
    assert((after_param == 0 || after_param == 1) && "BUG: after_param is 0 or 1");
    assert((until_param == 0 || until_param == 1) && "BUG: until_param is 0 or 1");
    sl_buf buf = {0};
    sl_buf_printf(&buf, "SELECT %s", what);
    add_span(&buf, ks, after_param, until_param);
    return sl_buf_take(&buf);
}

char *sl_keys_last_sql(const sl_keyspec *ks)
{
    check_keyspec(ks);
    sl_buf buf = {0};
    sl_buf_adds(&buf, "SELECT ");
    /* aliased: ORDER BY a name would sort by an output column of that name, its text */
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&buf, ks->dialect == SL_DIALECT_PG ? "%s%s::text AS sluice_k%zu" : "%s%s AS sluice_k%zu",
                      i ? ", " : "", ks->cols[i], i);
    sl_buf_printf(&buf, " FROM %s WHERE ", ks->table);
    /* rows with a NULL key are never walked; PostgreSQL sorts them first going down */
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&buf, "%s%s IS NOT NULL", i ? " AND " : "", ks->cols[i]);
    sl_buf_adds(&buf, " ORDER BY ");
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&buf, "%s%s DESC", i ? ", " : "", ks->cols[i]);
    sl_buf_adds(&buf, " LIMIT 1");
    return sl_buf_take(&buf);
}

char *sl_quote_ident(const char *ident)
{
    assert(ident && "BUG: NULL identifier");
    sl_buf buf = {0};
    sl_buf_addc(&buf, '"');
    for (const char *p = ident; *p; p++) {
        if (*p == '"')
            sl_buf_addc(&buf, '"');
        sl_buf_addc(&buf, *p);
    }
    sl_buf_addc(&buf, '"');
    return sl_buf_take(&buf);
}
