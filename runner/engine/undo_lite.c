/* undo_lite.c: the SQLite SQL of undo records: capture queries over quote() literals, set-based restores over JSON.
 *
 * SQLite has no xmin to tell which rows a chunk wrote, so every chunk reads
 * its range twice, before and after the up statements, and undo.c keeps the
 * rows whose hash changed. Values travel as quote() literals, which read
 * back as the very same value and type (integer, real to the last bit, text,
 * blob, NULL). Restores bind them, hex-encoded in one JSON parameter, and
 * sluice_unquote (lite.c) turns each back into its value: no saved value is
 * ever part of a statement's text. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/db/catalog.h"
#include "undo_internal.h"

#define ALIAS SL_UNDO_ROW_ALIAS

/* SQLite accepts 127 arguments per function call by default. */
#define HASH_GROUP 100

/* Every column: name, quoted name, declared type, generated. $1 table, $2 schema. */
static const char cols_sql[] = "SELECT name, '\"' || replace(name, '\"', '\"\"') || '\"', coalesce(type, ''),"
                               "       CASE WHEN hidden IN (2, 3) THEN 'true' ELSE 'false' END"
                               "  FROM pragma_table_xinfo($1, $2) WHERE hidden <> 1 ORDER BY cid";

int undo_lite_columns(sl_session *sess, const sl_keyspec *ks, sl_answer *ans, sl_err *err)
{
    char *schema, *name;
    sl_catalog_split_name(ks->table, &schema, &name); /* ks->table is "t" or "s"."t" */
    const char *params[] = {name, schema};
    int rc = sl_session_exec1(sess, cols_sql, 2, params, ans);
    free(schema);
    free(name);
    if (rc != 0 || !ans->ok || ans->results[0].nrows == 0) {
        sl_err_set(err, "cannot read the columns of %s: %s", ks->table,
                   rc != 0      ? "connection lost"
                   : ans->error ? ans->error
                                : "no columns");
        sl_answer_free(ans); /* zeroed when not sent */
        return -1;
    }
    return 0;
}

/* sluice_hash over cols, nested by groups when there are many. */
static void add_hash(sl_buf *b, char *const *cols, size_t n)
{
    if (n > HASH_GROUP)
        sl_buf_adds(b, "sluice_hash(");
    for (size_t g = 0; g < n; g += HASH_GROUP) {
        sl_buf_adds(b, g ? ", sluice_hash(" : "sluice_hash(");
        for (size_t i = g; i < n && i < g + HASH_GROUP; i++)
            sl_buf_printf(b, "%s" ALIAS ".%s", i > g ? ", " : "", cols[i]);
        sl_buf_addc(b, ')');
    }
    if (n > HASH_GROUP)
        sl_buf_addc(b, ')');
}

/* What `down` compares: the saved columns for snapshot(COL, ...), else every
 * column of the row (generated ones too: they follow the others), but for
 * columns added since the rows were saved (sl_undo_fit_saved_rows). cols:
 * undo_lite_columns()'s answer, for the down way (NULL after a fit). */
static char *hash_expr(const sl_undo_target *t, const sl_answer *cols)
{
    sl_buf b = {0};
    if (t->kind == SL_UNDO_SNAPSHOT_COLS) {
        add_hash(&b, t->cols, t->ncols);
        return sl_buf_take(&b);
    }
    size_t n = t->kind == SL_UNDO_SNAPSHOT_ALL ? t->nfields : (size_t)cols->results[0].nrows, m = 0;
    char **names = sl_calloc(n + 1, sizeof(char *));
    for (size_t r = 0, plain = 0; r < n; r++) {
        if (t->kind != SL_UNDO_SNAPSHOT_ALL) {
            names[m++] = (char *)sl_answer_val(cols, 0, (int)r, 1);
            continue;
        }
        if (!t->field_generated[r] && plain++ >= t->saved_fields)
            continue; /* added since: not in the saved rows' hash */
        names[m++] = t->field_cols[r];
    }
    add_hash(&b, names, m);
    free(names);
    return sl_buf_take(&b);
}

/* SELECT quote(key)..., hash[, quote(saved)...] over the chunk's whole range
 * (the up statements may touch any row in it, not only the where's). */
static char *range_select(const sl_undo_target *t, const char *hash, int with_vals)
{
    const sl_keyspec *ks = t->ks;
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT ");
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, "%squote(" ALIAS ".%s)", i ? ", " : "", ks->cols[i]);
    sl_buf_printf(&b, ", %s", hash);
    for (size_t i = 0; with_vals && i < t->ncols; i++)
        sl_buf_printf(&b, ", quote(" ALIAS ".%s)", t->cols[i]);
    char *pred = sl_keys_range_predicate(ks, 1, 0);
    sl_buf_printf(&b, " FROM %s AS " ALIAS " WHERE %s", ks->table, pred);
    free(pred);
    return sl_buf_take(&b);
}

void undo_lite_build(sl_undo_target *t, const sl_answer *cols)
{
    char *hash = hash_expr(t, cols);
    t->pre_sql = range_select(t, hash, t->kind != SL_UNDO_DOWN);
    t->post_sql = range_select(t, hash, 0);
    /* down's transaction is BEGIN IMMEDIATE: it holds the write lock already */
    t->state_sql = sl_strdup(t->post_sql);
    free(hash);
}

/* ---- restores ---- */

static int is_key(const sl_keyspec *ks, const char *quoted)
{
    for (size_t i = 0; i < ks->ncols; i++)
        if (strcasecmp(ks->cols[i], quoted) == 0)
            return 1;
    return 0;
}

/* "sluice_unquote(j.value ->> 0), ..." for n columns from the first. */
static void add_values(sl_buf *b, size_t first, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(b, "%ssluice_unquote(j.value ->> %zu)", i ? ", " : "", first + i);
}

/* The range (the chunk's edges, $2..) lets SQLite 3.40 search the key's
 * index; a composite key with a text column IN (...) alone would use at most
 * its leading columns. Every saved row lies in the range. */
static char *delete_sql(const sl_undo_target *t)
{
    char *keys = sl_keys_column_list(t->ks);
    char *range = sl_keys_range_predicate(t->ks, 2, 0);
    sl_buf b = {0};
    sl_buf_printf(&b, "DELETE FROM %s WHERE %s AND (%s) IN (SELECT ", t->ks->table, range, keys);
    add_values(&b, 0, t->ks->ncols);
    sl_buf_adds(&b, " FROM json_each($1) AS j)");
    free(range);
    free(keys);
    return sl_buf_take(&b);
}

/* The saved columns that are not part of the key (snapshot(*) saves them all). */
static char *update_sql(const sl_undo_target *t)
{
    const sl_keyspec *ks = t->ks;
    sl_buf set = {0};
    for (size_t i = 0; i < t->ncols; i++)
        if (!is_key(ks, t->cols[i]))
            sl_buf_printf(&set, "%s%s = v._v%zu", set.len ? ", " : "", t->cols[i], i + 1);
    if (!set.len)
        return NULL;
    sl_buf b = {0};
    sl_buf_adds(&b, "WITH v(");
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, "%s_k%zu", i ? ", " : "", i + 1);
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, ", _v%zu", i + 1);
    sl_buf_adds(&b, ") AS MATERIALIZED (SELECT ");
    add_values(&b, 0, ks->ncols + t->ncols);
    sl_buf_printf(&b, " FROM json_each($1) AS j) UPDATE %s AS " ALIAS " SET %s FROM v WHERE ", ks->table, set.data);
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, "%s" ALIAS ".%s = v._k%zu", i ? " AND " : "", ks->cols[i], i + 1);
    sl_buf_free(&set);
    return sl_buf_take(&b);
}

static char *insert_sql(const sl_undo_target *t)
{
    sl_buf b = {0};
    sl_buf_printf(&b, "INSERT INTO %s (", t->ks->table);
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, "%s%s", i ? ", " : "", t->cols[i]);
    sl_buf_adds(&b, ") SELECT ");
    add_values(&b, 0, t->ncols);
    sl_buf_adds(&b, " FROM json_each($1) AS j");
    return sl_buf_take(&b);
}

char *undo_lite_restore_sql(const sl_undo_target *t, undo_restore which)
{
    switch (which) {
    case UNDO_RESTORE_DELETE: return delete_sql(t);
    case UNDO_RESTORE_UPDATE: return update_sql(t);
    case UNDO_RESTORE_INSERT: return insert_sql(t);
    }
    return NULL;
}

/* ---- plan ---- */

static int is_undo_col(const sl_job *job, const char *name)
{
    for (size_t i = 0; i < job->nundo_cols; i++) {
        char *folded = sl_catalog_fold_ident(job->undo_cols[i]);
        int same = strcasecmp(folded, name) == 0;
        free(folded);
        if (same)
            return 1;
    }
    return 0;
}

int64_t undo_lite_avg_width(sl_session *sess, const sl_job *job, const sl_keyspec *ks)
{
    sl_answer cols;
    sl_err err;
    if (undo_lite_columns(sess, ks, &cols, &err) != 0)
        return -1;
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT CAST(avg(");
    size_t n = 0;
    for (int r = 0; r < cols.results[0].nrows; r++) {
        int generated = strcmp(sl_answer_val(&cols, 0, r, 3), "true") == 0;
        int saved = job->undo == SL_UNDO_SNAPSHOT_ALL ? !generated : is_undo_col(job, sl_answer_val(&cols, 0, r, 0));
        if (saved)
            sl_buf_printf(&b, "%slength(quote(%s))", n++ ? " + " : "", sl_answer_val(&cols, 0, r, 1));
    }
    sl_buf_printf(&b, ") AS INTEGER) FROM (SELECT * FROM %s LIMIT 1000)", ks->table);
    sl_answer_free(&cols);
    int64_t width = -1;
    sl_answer ans;
    if (n > 0 && sl_session_exec1(sess, b.data, 0, NULL, &ans) == 0) {
        const char *v = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL;
        width = v ? strtoll(v, NULL, 10) : -1;
        sl_answer_free(&ans);
    }
    sl_buf_free(&b);
    return width;
}
