/* undo_restore.c: `down`'s side of undo records: which rows of a chunk to put back, and the set-based SQL that does it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/base/json.h"
#include "undo_internal.h"

#define ROW_ALIAS SL_UNDO_ROW_ALIAS

static size_t snap_sort_nkey; /* qsort has no context argument; single-threaded */

/* A text[] literal: {"a","b\"c",NULL}. */
void undo_add_array_elem(sl_buf *b, const char *v)
{
    if (b->len > 1)
        sl_buf_addc(b, ',');
    if (!v) {
        sl_buf_adds(b, "NULL");
        return;
    }
    sl_buf_addc(b, '"');
    for (const char *p = v; *p;) {
        size_t plain = strcspn(p, "\"\\"); /* copied as they are, up to the next one to escape */
        sl_buf_add(b, p, plain);
        p += plain;
        if (*p) {
            char esc[2] = {'\\', *p++};
            sl_buf_add(b, esc, 2);
        }
    }
    sl_buf_addc(b, '"');
}

/* What the last array of a checked statement holds for each row, which the
 * row must still match to be written: its xmin as down saw it, or the hash
 * its undo record says the job left (the trusting restore, which does not
 * look at the rows first). */
enum { CHECK_NONE, CHECK_XMIN, CHECK_HASH };

/* The rows of one restore statement being collected: on PostgreSQL one
 * text array per column; on SQLite (lite) one JSON array of rows, each an
 * array of the saved quote() literals in hex (sluice_unquote, lite.c). Either
 * way the values are bound as parameters, never part of the statement. */
typedef struct arrays {
    int lite;
    int guard;  /* PostgreSQL, stop or skip: checked statement, the row count its last parameter (guard_sql) */
    int check;  /* CHECK_*: what the last array holds (none for an INSERT) */
    int ranged; /* PostgreSQL: the chunk's edges follow the count, and the statement keeps to them */
    size_t n;
    sl_buf *a;          /* PostgreSQL */
    json_t *json, *row; /* SQLite */
    int64_t rows;
} arrays;

static void arrays_init(arrays *x, size_t n, int lite, int guard, int check)
{
    memset(x, 0, sizeof *x);
    x->lite = lite;
    x->guard = guard;
    x->check = check;
    n += check != CHECK_NONE;
    x->n = n;
    x->a = sl_calloc(n + 1, sizeof(sl_buf));
    for (size_t i = 0; i < n && !lite; i++)
        sl_buf_addc(&x->a[i], '{');
    if (lite)
        x->json = json_array();
}

static json_t *hex_string(const char *v)
{
    if (!v)
        return json_null();
    static const char digits[] = "0123456789abcdef";
    size_t len = strlen(v);
    char *hex = sl_malloc(2 * len + 1);
    for (size_t i = 0; i < len; i++) {
        hex[2 * i] = digits[(unsigned char)v[i] >> 4];
        hex[2 * i + 1] = digits[(unsigned char)v[i] & 15];
    }
    hex[2 * len] = '\0';
    json_t *s = json_string(hex);
    free(hex);
    return s;
}

/* Values first.. first+n-1 of the current row. */
static void arrays_add(arrays *x, size_t first, char *const *vals, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!x->lite) {
            undo_add_array_elem(&x->a[first + i], vals[i]);
            continue;
        }
        if (!x->row)
            x->row = json_array();
        json_array_append_new(x->row, hex_string(vals[i]));
    }
}

static void arrays_end_row(arrays *x)
{
    if (x->lite) {
        json_array_append_new(x->json, x->row ? x->row : json_array());
        x->row = NULL;
    }
    x->rows++;
}

static void arrays_free(arrays *x)
{
    for (size_t i = 0; i < x->n; i++)
        sl_buf_free(&x->a[i]);
    free(x->a);
    json_decref(x->json);
    json_decref(x->row);
    memset(x, 0, sizeof *x);
}

/* Add the statement restoring the rows in x to the step, the rows its
 * parameters: PostgreSQL's arrays; SQLite's JSON, then for its DELETE the
 * chunk's edges (the range that lets it search the key's index). */
static void arrays_finish(arrays *x, sl_undo_step *s, char *sql, char *const *edges, size_t nedges)
{
    if (x->rows == 0 || !sql) {
        free(sql);
        arrays_free(x);
        return;
    }
    size_t q = s->nq++;
    s->sql[q] = sql;
    s->restored += x->rows;
    size_t np = x->lite ? 1 + nedges : x->n + (size_t)x->guard + (x->ranged ? nedges : 0);
    s->params[q] = sl_calloc(np + 1, sizeof(char *));
    if (x->lite) {
        s->params[q][0] = json_dumps(x->json, JSON_COMPACT);
        for (size_t i = 0; i < nedges; i++)
            s->params[q][1 + i] = sl_strdup(edges[i]);
    } else {
        for (size_t i = 0; i < x->n; i++) {
            sl_buf_addc(&x->a[i], '}');
            s->params[q][i] = sl_buf_take(&x->a[i]);
        }
        if (x->guard) /* the rows it must write, every one */
            s->params[q][x->n] = sl_asprintf("%" PRId64, x->rows);
        for (size_t i = 0; x->ranged && i < nedges; i++)
            s->params[q][x->n + (size_t)x->guard + i] = sl_strdup(edges[i]);
    }
    arrays_free(x);
    s->q[q] = (sl_query){sql, (int)np, (const char *const *)s->params[q], 1};
}

/* The condition a checked row must meet, its expected value in v: "_sl_row.xmin = v::xid". */
static void add_check(sl_buf *b, const sl_undo_target *t, int check, const char *v)
{
    if (check == CHECK_XMIN) {
        sl_buf_printf(b, " AND " ROW_ALIAS ".xmin = %s::xid", v);
    } else if (check == CHECK_HASH) {
        char *hash = undo_hash_expr(t);
        sl_buf_printf(b, " AND %s = %s::bigint", hash, v);
        free(hash);
    }
}

/* " AND (_sl_row.a, ...) BETWEEN lo AND hi", the chunk's edges bound at
 * $first.. (after the arrays and the count): with it the planner can read
 * the chunk's range in key order and merge it with the rows to write,
 * instead of looking each key up (see down_chunk.c, finish_chunk). */
static void add_range(sl_buf *b, const sl_keyspec *ks, size_t first)
{
    sl_buf_adds(b, " AND ");
    if (ks->ncols > 1)
        sl_buf_addc(b, '(');
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(b, "%s" ROW_ALIAS ".%s", i ? ", " : "", ks->cols[i]);
    if (ks->ncols > 1)
        sl_buf_addc(b, ')');
    char *lo = sl_keys_placeholder_sql(ks, (int)first), *hi = sl_keys_placeholder_sql(ks, (int)(first + ks->ncols));
    sl_buf_printf(b, " BETWEEN %s AND %s", lo, hi);
    free(lo);
    free(hi);
}

/* "unnest($1::text[], ...) AS v(_k1, ..., _v1, ..., [_x])" and the key join
 * (and with a check, the row still as down saw it, or as the job left it). */
static void add_unnest(sl_buf *b, const sl_undo_target *t, size_t nvals, int check)
{
    const sl_keyspec *ks = t->ks;
    int guard = check != CHECK_NONE;
    sl_buf_adds(b, "unnest(");
    for (size_t i = 0; i < ks->ncols + nvals + (size_t)guard; i++)
        sl_buf_printf(b, "%s$%zu::text[]", i ? ", " : "", i + 1);
    sl_buf_adds(b, ") AS v(");
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(b, "%s_k%zu", i ? ", " : "", i + 1);
    for (size_t i = 0; i < nvals; i++)
        sl_buf_printf(b, ", _v%zu", i + 1);
    if (guard)
        sl_buf_adds(b, ", _x");
    sl_buf_adds(b, ") WHERE (");
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(b, "%s" ROW_ALIAS ".%s", i ? ", " : "", ks->cols[i]);
    sl_buf_adds(b, ") = (");
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(b, "%sv._k%zu::%s", i ? ", " : "", i + 1, ks->types[i]);
    sl_buf_adds(b, ")");
    add_check(b, t, check, "v._x");
}

/* Without row locks between down's look at the rows and its restore, the
 * restore checks each row itself: it writes a row only while its xmin is the
 * one down saw (any change by another session since gives it a new xmin;
 * the INSERT of a row the job deleted does nothing when someone inserted it
 * again), and its last parameter is how many rows it must write. Fewer, and
 * the division by zero ends the chunk's transaction before its COMMIT, so
 * that nothing of the chunk is written: down.c takes that 22012 for "changed
 * meanwhile" and looks again. */
static char *guard_sql(char *restore, size_t count_param)
{
    char *sql = sl_asprintf("WITH w AS (%s RETURNING 1) SELECT 1 / (count(*) = $%zu::bigint)::int FROM w", restore,
                            count_param);
    free(restore);
    return sql;
}

static char *delete_sql(const sl_undo_target *t, const arrays *x)
{
    sl_buf b = {0};
    sl_buf_printf(&b, "DELETE FROM %s AS " ROW_ALIAS " USING ", t->ks->table);
    add_unnest(&b, t, 0, x->check);
    return x->guard ? guard_sql(sl_buf_take(&b), t->ks->ncols + 2) : sl_buf_take(&b);
}

static char *update_cols_sql(const sl_undo_target *t, const arrays *x)
{
    sl_buf b = {0};
    sl_buf_printf(&b, "UPDATE %s AS " ROW_ALIAS " SET ", t->ks->table);
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, "%s%s = v._v%zu::%s", i ? ", " : "", t->cols[i], i + 1, t->types[i]);
    sl_buf_adds(&b, " FROM ");
    add_unnest(&b, t, t->ncols, x->check);
    if (x->ranged)
        add_range(&b, t->ks, x->n + 2);
    return x->guard ? guard_sql(sl_buf_take(&b), t->ks->ncols + t->ncols + 2) : sl_buf_take(&b);
}

/* snapshot(*): each saved row is the table's row type in text form (with
 * a check, beside the xmin down saw or the hash the job left). The OFFSET 0
 * keeps the planner from re-parsing it once per column. */
static void add_rows_subquery(sl_buf *b, const sl_undo_target *t, int check)
{
    if (check != CHECK_NONE)
        sl_buf_printf(b, "(SELECT u.x::%s AS r, u.g AS g FROM unnest($1::text[], $2::text[]) AS u(x, g) OFFSET 0) s",
                      t->ks->table);
    else
        sl_buf_printf(b, "(SELECT u.x::%s AS r FROM unnest($1::text[]) AS u(x) OFFSET 0) s", t->ks->table);
}

static void add_row_fields(sl_buf *b, const sl_undo_target *t)
{
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(b, "%s(s.r).%s", i ? ", " : "", t->cols[i]);
}

static char *update_all_sql(const sl_undo_target *t, const arrays *x)
{
    sl_buf b = {0};
    sl_buf_printf(&b, "UPDATE %s AS " ROW_ALIAS " SET (", t->ks->table);
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, "%s%s", i ? ", " : "", t->cols[i]);
    sl_buf_adds(&b, ") = ROW(");
    add_row_fields(&b, t);
    sl_buf_adds(&b, ") FROM ");
    add_rows_subquery(&b, t, x->check);
    sl_buf_adds(&b, " WHERE (");
    for (size_t i = 0; i < t->ks->ncols; i++)
        sl_buf_printf(&b, "%s" ROW_ALIAS ".%s", i ? ", " : "", t->ks->cols[i]);
    sl_buf_adds(&b, ") = (");
    for (size_t i = 0; i < t->ks->ncols; i++)
        sl_buf_printf(&b, "%s(s.r).%s", i ? ", " : "", t->ks->cols[i]);
    sl_buf_adds(&b, ")");
    add_check(&b, t, x->check, "s.g");
    if (x->ranged)
        add_range(&b, t->ks, x->n + 2);
    return x->guard ? guard_sql(sl_buf_take(&b), 3) : sl_buf_take(&b);
}

static char *insert_all_sql(const sl_undo_target *t, const arrays *x)
{
    int guard = x->guard;
    sl_buf b = {0};
    sl_buf_printf(&b, "INSERT INTO %s (", t->ks->table);
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, "%s%s", i ? ", " : "", t->cols[i]);
    sl_buf_adds(&b, ") OVERRIDING SYSTEM VALUE SELECT ");
    add_row_fields(&b, t);
    sl_buf_adds(&b, " FROM ");
    add_rows_subquery(&b, t, CHECK_NONE);
    if (guard)
        sl_buf_adds(&b, " ON CONFLICT DO NOTHING");
    return guard ? guard_sql(sl_buf_take(&b), 2) : sl_buf_take(&b);
}

static char *restore_sql(const sl_undo_target *t, undo_restore which, const arrays *x)
{
    if (x->lite)
        return undo_lite_restore_sql(t, which);
    if (which == UNDO_RESTORE_DELETE)
        return delete_sql(t, x);
    if (which == UNDO_RESTORE_INSERT)
        return insert_all_sql(t, x);
    return t->kind == SL_UNDO_SNAPSHOT_ALL ? update_all_sql(t, x) : update_cols_sql(t, x);
}

static void note_conflict(sl_undo_step *s, sl_buf *keys, const sl_snap_row *row, size_t nkey)
{
    s->nconflicts++;
    if (s->nconflicts > 10)
        return;
    sl_buf_adds(keys, s->nconflicts > 1 ? ", (" : "(");
    for (size_t k = 0; k < nkey; k++)
        sl_buf_printf(keys, "%s%s", k ? ", " : "", row->key[k]);
    sl_buf_adds(keys, ")");
}

static int snap_row_cmp(const void *a, const void *b)
{
    return sl_snap_key_cmp((*(const sl_snap_row *const *)a)->key, (*(const sl_snap_row *const *)b)->key,
                           snap_sort_nkey);
}

/* The record's rows in key order (records keep the server's order). */
static const sl_snap_row **sort_snap(const sl_snap *snap)
{
    const sl_snap_row **rows = sl_calloc(snap->nrows + 1, sizeof *rows);
    for (size_t i = 0; i < snap->nrows; i++)
        rows[i] = &snap->rows[i];
    snap_sort_nkey = snap->nkey;
    qsort(rows, snap->nrows, sizeof *rows, snap_row_cmp);
    return rows;
}

/* The record keeps the rows in the order the server gave them, and the rows
 * read now come in the same order when nothing was inserted or deleted
 * since (an UPDATE job, the common case): then they pair up by position,
 * and neither list needs sorting (the two sorts by text took a sixth of a
 * down chunk's CPU). */
static int same_order(const sl_snap *snap, const sl_result *cur, size_t nkey)
{
    if (!cur || (size_t)cur->nrows != snap->nrows)
        return 0;
    for (size_t i = 0; i < snap->nrows; i++)
        if (sl_snap_key_cmp(snap->rows[i].key, &cur->vals[i * (size_t)cur->ncols], nkey) != 0)
            return 0;
    return 1;
}

/* A row's saved values (snapshot(*) on PostgreSQL: padded to the row type
 * as it is now, when columns were added since up). */
static void add_saved(const sl_undo_target *t, arrays *x, size_t first, char *const *vals, size_t nv)
{
    char *padded = nv == 1 && vals ? undo_pad_row(t, vals[0]) : NULL;
    arrays_add(x, first, padded ? &padded : vals, nv);
    free(padded);
}

typedef struct restore_lists {
    arrays del, upd, ins;
} restore_lists;

/* What to do with one saved row, given whether it exists now. */
static void restore_row(const sl_undo_target *t, restore_lists *l, sl_undo_step *s, const sl_snap_row *row, int present,
                        const char *xmin)
{
    size_t nk = t->ks->ncols, nv = undo_saved_vals(t);
    if (t->kind == SL_UNDO_SNAPSHOT_COLS && row->has_pre && !present) {
        if (row->has_post)
            s->ngone++; /* someone deleted it after the job wrote it: only some columns were saved */
        else
            s->nlost++; /* the job deleted it */
        return;
    }
    if (t->kind == SL_UNDO_SNAPSHOT_COLS && !row->has_pre && present) {
        s->nkept++; /* the job inserted it: columns are written back, rows are not deleted */
        return;
    }
    arrays *dst = row->has_pre ? (present ? &l->upd : &l->ins) : (present ? &l->del : NULL);
    if (!dst || (t->kind == SL_UNDO_SNAPSHOT_COLS && dst != &l->upd))
        return;
    /* keys go with the values, except in PostgreSQL's row text (snapshot(*)) */
    if (dst == &l->del || (dst == &l->upd && (t->kind == SL_UNDO_SNAPSHOT_COLS || undo_is_lite(t))))
        arrays_add(dst, 0, row->key, nk);
    if (dst != &l->del)
        add_saved(t, dst, dst->n - (size_t)(dst->check != CHECK_NONE) - nv, row->vals, nv);
    if (dst->check != CHECK_NONE)
        arrays_add(dst, dst->n - 1, (char *const *)&xmin, 1);
    arrays_end_row(dst);
}

void sl_undo_plan_chunk(const sl_undo_target *t, const sl_snap *snap, const sl_result *cur, char *const *edges,
                        sl_on_conflict mode, sl_undo_step *out)
{
    memset(out, 0, sizeof *out);
    size_t nk = t->ks->ncols;
    int ncur = cur ? cur->nrows : 0, j = 0;
    int snapshot = t->kind != SL_UNDO_DOWN;
    restore_lists l;
    int lite = undo_is_lite(t);
    size_t nv = undo_saved_vals(t);
    /* PostgreSQL restores a snapshot without row locks, row by row against the xmin seen (guard_sql) */
    int guard = !lite && snapshot && mode != SL_CONFLICT_OVERWRITE;
    int check = guard ? CHECK_XMIN : CHECK_NONE;
    arrays_init(&l.del, nk, lite, guard, check);
    arrays_init(&l.upd, t->kind == SL_UNDO_SNAPSHOT_ALL && !lite ? nv : nk + nv, lite, guard, check);
    arrays_init(&l.ins, nv, lite, guard, CHECK_NONE); /* the row is not there: no xmin, the count alone */
    sl_buf keys = {0};
    int paired = same_order(snap, cur, nk);
    undo_keyed *c = paired ? NULL : undo_sort_rows(cur, nk);
    const sl_snap_row **rows = paired ? NULL : sort_snap(snap);
    for (size_t i = 0; i < snap->nrows; i++) {
        const sl_snap_row *row = paired ? &snap->rows[i] : rows[i];
        int present;
        if (paired) {
            present = 1;
            j = (int)i;
        } else {
            while (j < ncur && sl_snap_key_cmp(c[j].key, row->key, nk) < 0)
                j++;
            present = j < ncur && sl_snap_key_cmp(c[j].key, row->key, nk) == 0;
        }
        int at = present ? (paired ? j : c[j].row) : -1;
        /* as the job left it: gone if it deleted the row, else the same hash */
        int conflict = row->has_post ? !present || undo_hash_at(cur, at, nk) != row->post_hash : present;
        if (conflict)
            note_conflict(out, &keys, row, nk);
        if (snapshot && (!conflict || mode == SL_CONFLICT_OVERWRITE))
            restore_row(t, &l, out, row, present,
                        present && guard ? cur->vals[(size_t)at * (size_t)cur->ncols + nk + 1] : NULL);
    }
    free(c);
    free(rows);
    out->conflicts = keys.data ? sl_buf_take(&keys) : NULL;
    if (out->nconflicts > 10) {
        char *more = sl_asprintf("%s and %zu more", out->conflicts, out->nconflicts - 10);
        free(out->conflicts);
        out->conflicts = more;
    }
    /* order: free keys first (DELETE), then UPDATE, then INSERT */
    int build = out->nconflicts == 0 || mode != SL_CONFLICT_STOP;
    size_t nedges = lite ? 2 * nk : 0;
    arrays_finish(&l.del, out, build && l.del.rows ? restore_sql(t, UNDO_RESTORE_DELETE, &l.del) : NULL, edges, nedges);
    arrays_finish(&l.upd, out, build && l.upd.rows ? restore_sql(t, UNDO_RESTORE_UPDATE, &l.upd) : NULL, edges, 0);
    arrays_finish(&l.ins, out, build && l.ins.rows ? restore_sql(t, UNDO_RESTORE_INSERT, &l.ins) : NULL, edges, 0);
    if (!build)
        out->restored = 0;
}

/* v in decimal, at the end of buf (snprintf was a tenth of planning a chunk). */
static const char *decimal(char buf[24], int64_t v)
{
    uint64_t n = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    char *p = buf + 23;
    *p = '\0';
    do
        *--p = (char)('0' + n % 10);
    while ((n /= 10) != 0);
    if (v < 0)
        *--p = '-';
    return p;
}

/* A down section's check of the rows its record says the job wrote, ahead
 * of the section: it locks the chunk's rows (as the look of
 * sl_undo_plan_chunk's callers does, so that another session's writes to
 * them wait for down), and fails with 22012 unless every row of the record
 * is there with the hash the job left. Arrays as x holds them, the count
 * after them, then the chunk's edges. */
static char *down_check_sql(const sl_undo_target *t, const arrays *x)
{
    const sl_keyspec *ks = t->ks;
    char *hash = undo_hash_expr(t);
    sl_buf b = {0};
    /* a subquery, not a CTE: the planner then joins by hash (reading the whole range, which locks each
     * of its rows), where a CTE's rows were sorted for a merge; the arrays are of the key's own types */
    sl_buf_adds(&b, "SELECT 1 / (count(*) = $");
    sl_buf_printf(&b, "%zu::bigint)::int FROM (SELECT ", x->n + 1);
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, ROW_ALIAS ".%s AS _c%zu, ", ks->cols[i], i + 1);
    sl_buf_printf(&b, "%s AS _h FROM %s AS " ROW_ALIAS " WHERE TRUE", hash, ks->table);
    add_range(&b, ks, x->n + 2);
    sl_buf_adds(&b, " FOR UPDATE OF " ROW_ALIAS ") AS c JOIN unnest(");
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, "$%zu::%s[], ", i + 1, ks->types[i]);
    sl_buf_printf(&b, "$%zu::bigint[]) AS v(", ks->ncols + 1);
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, "_k%zu, ", i + 1);
    sl_buf_adds(&b, "_x) ON ");
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, "%sc._c%zu = v._k%zu", i ? " AND " : "", i + 1, i + 1);
    sl_buf_adds(&b, " WHERE c._h = v._x");
    free(hash);
    return sl_buf_take(&b);
}

/* A down section's chunk planned from its record alone: the check above,
 * which the down section follows in the same transaction. */
static int plan_down_check(const sl_undo_target *t, const sl_snap *snap, char *const *edges, sl_undo_step *out)
{
    size_t nk = t->ks->ncols;
    for (size_t i = 0; i < snap->nrows; i++)
        if (!snap->rows[i].has_post)
            return -1; /* not a row the job left: sl_undo_plan_chunk tells what it means */
    arrays chk;
    arrays_init(&chk, nk, 0, 1, CHECK_HASH);
    chk.ranged = 1;
    for (size_t i = 0; i < snap->nrows; i++) {
        char hash[24];
        const char *hp = decimal(hash, snap->rows[i].post_hash);
        arrays_add(&chk, 0, snap->rows[i].key, nk);
        arrays_add(&chk, nk, (char *const *)&hp, 1);
        arrays_end_row(&chk);
    }
    arrays_finish(&chk, out, chk.rows ? down_check_sql(t, &chk) : NULL, edges, 2 * nk);
    out->restored = 0; /* a check: the down section writes the rows */
    return 0;
}

int sl_undo_plan_trusting(const sl_undo_target *t, const sl_snap *snap, char *const *edges, sl_undo_step *out)
{
    memset(out, 0, sizeof *out);
    if (undo_is_lite(t))
        return -1;
    if (t->kind == SL_UNDO_DOWN)
        return plan_down_check(t, snap, edges, out);
    for (size_t i = 0; i < snap->nrows; i++)
        if (!snap->rows[i].has_pre || !snap->rows[i].has_post)
            return -1; /* the job inserted or deleted rows: down looks first (sl_undo_plan_chunk) */
    size_t nk = t->ks->ncols, nv = undo_saved_vals(t);
    arrays upd;
    arrays_init(&upd, t->kind == SL_UNDO_SNAPSHOT_ALL ? nv : nk + nv, 0, 1, CHECK_HASH);
    upd.ranged = 1;
    for (size_t i = 0; i < snap->nrows; i++) {
        const sl_snap_row *row = &snap->rows[i];
        char hash[24];
        const char *hp = decimal(hash, row->post_hash);
        if (t->kind == SL_UNDO_SNAPSHOT_COLS) /* snapshot(*): the key is inside the row's text */
            arrays_add(&upd, 0, row->key, nk);
        add_saved(t, &upd, upd.n - 1 - nv, row->vals, nv);
        arrays_add(&upd, upd.n - 1, (char *const *)&hp, 1);
        arrays_end_row(&upd);
    }
    arrays_finish(&upd, out, upd.rows ? restore_sql(t, UNDO_RESTORE_UPDATE, &upd) : NULL, edges, 2 * nk);
    return 0;
}

void sl_undo_step_free(sl_undo_step *s)
{
    for (size_t q = 0; q < s->nq; q++) {
        for (int i = 0; i < s->q[q].nparams; i++)
            free(s->params[q][i]);
        free(s->params[q]);
        free(s->sql[q]);
    }
    free(s->conflicts);
    memset(s, 0, sizeof *s);
}
