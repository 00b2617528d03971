/* catalog_lite.c: resolve a job's table, key and index against a SQLite schema (table-valued pragmas). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "catalog_internal.h"

void sl_catalog_split_name(const char *name, char **schema, char **table)
{
    int quoted = 0;
    const char *dot = NULL;
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            quoted = !quoted;
        else if (*p == '.' && !quoted && !dot)
            dot = p;
    }
    if (!dot) {
        *schema = sl_strdup("main");
        *table = sl_catalog_fold_ident(name);
        return;
    }
    char *s = sl_strdup(name);
    s[dot - name] = '\0';
    *schema = sl_catalog_fold_ident(s);
    *table = sl_catalog_fold_ident(dot + 1);
    free(s);
}

/* $1 table, $2 schema. The name as stored, and whether it is a table. */
static const char table_sql[] = "SELECT name, type FROM pragma_table_list($1) WHERE schema = $2";
/* Every column: name, declared type, not null, position in the primary key, hidden (generated). */
static const char cols_sql[] =
    "SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo($1, $2) ORDER BY cid";
/* Complete (not partial) indexes on columns, their columns joined by \x01 (expressions as "?"). */
static const char idx_sql[] =
    "SELECT il.name, il.\"unique\","
    "       (SELECT group_concat(coalesce(ii.name, '?'), char(1))"
    "          FROM (SELECT name FROM pragma_index_info(il.name, $2) ORDER BY seqno) ii)"
    "  FROM pragma_index_list($1, $2) il WHERE il.partial = 0 ORDER BY il.origin = 'pk' DESC, il.seq";

static int col_row(const sl_answer *ans, const char *name)
{
    for (int r = 0; r < ans->results[1].nrows; r++)
        if (strcasecmp(sl_answer_val(ans, 1, r, 0), name) == 0)
            return r;
    return -1;
}

static void add_key_col(sl_table_info *info, const sl_answer *ans, int row)
{
    sl_keyspec *ks = &info->ks;
    ks->cols[ks->ncols] = sl_quote_ident(sl_answer_val(ans, 1, row, 0));
    const char *type = sl_answer_val(ans, 1, row, 1);
    ks->types[ks->ncols] = sl_strdup(type ? type : "");
    int notnull = strcmp(sl_answer_val(ans, 1, row, 2), "0") != 0;
    int in_pk = strcmp(sl_answer_val(ans, 1, row, 3), "0") != 0;
    if (!notnull && !in_pk)
        info->nullable_key = 1;
    ks->ncols++;
}

static int resolve_key(const sl_job *job, const sl_answer *ans, sl_table_info *info, char **names, sl_err *err)
{
    if (job->nkey > 0) {
        for (size_t i = 0; i < job->nkey; i++) {
            char *folded = sl_catalog_fold_ident(job->key[i]);
            int row = col_row(ans, folded);
            free(folded);
            if (row < 0) {
                char *shown = sl_catalog_shown_ident(job->key[i]);
                sl_err_set(err, "%s:%d: key column %s does not exist in table %s", job->path, job->line[SL_DIR_KEY],
                           shown, info->ks.table);
                free(shown);
                return -1;
            }
            names[i] = sl_strdup(sl_answer_val(ans, 1, row, 0));
            add_key_col(info, ans, row);
        }
        return 0;
    }
    /* the primary key, in key order: pk is the column's 1-based position in it */
    int npk = 0;
    for (int r = 0; r < ans->results[1].nrows; r++)
        if (strcmp(sl_answer_val(ans, 1, r, 3), "0") != 0)
            npk++;
    if (npk == 0) {
        sl_err_set(err, "%s:%d: table %s has no primary key, so the key to walk must be named", job->path,
                   job->line[SL_DIR_TABLE], info->ks.table);
        sl_err_append(err, "hint: add \"-- sluice:key COL[, COL...]\" naming a unique, indexed column list");
        return -1;
    }
    if (npk > SL_MAX_KEY_COLS) {
        sl_err_set(err, "%s: the primary key of %s has %d columns; sluice walks at most %d", job->path, info->ks.table,
                   npk, SL_MAX_KEY_COLS);
        return -1;
    }
    for (int pos = 1; pos <= npk; pos++)
        for (int r = 0; r < ans->results[1].nrows; r++)
            if (strtol(sl_answer_val(ans, 1, r, 3), NULL, 10) == pos) {
                names[info->ks.ncols] = sl_strdup(sl_answer_val(ans, 1, r, 0));
                add_key_col(info, ans, r);
            }
    return 0;
}

/* A rowid table's INTEGER PRIMARY KEY is the rowid: the table's own b-tree
 * walks it and it is unique, though no index lists it. */
static int rowid_key(const sl_answer *ans, const sl_table_info *info, char *const *names)
{
    if (info->ks.ncols != 1)
        return 0;
    int row = col_row(ans, names[0]), npk = 0;
    for (int r = 0; r < ans->results[1].nrows; r++)
        if (strcmp(sl_answer_val(ans, 1, r, 3), "0") != 0)
            npk++;
    if (row < 0 || npk != 1 || strcmp(sl_answer_val(ans, 1, row, 3), "1") != 0)
        return 0;
    const char *type = sl_answer_val(ans, 1, row, 1);
    /* a WITHOUT ROWID table lists its primary key as an index (origin pk) */
    for (int r = 0; r < ans->results[2].nrows; r++)
        if (strncmp(sl_answer_val(ans, 2, r, 0), "sqlite_autoindex_", 17) == 0)
            return 0;
    return type && strcasecmp(type, "INTEGER") == 0;
}

int catalog_resolve_lite(sl_session *sess, const sl_job *job, sl_table_info *info, sl_err *err)
{
    char *schema, *table;
    sl_catalog_split_name(job->table, &schema, &table);
    const char *params[] = {table, schema};
    sl_query q[] = {{table_sql, 2, params}, {cols_sql, 2, params}, {idx_sql, 2, params}};
    sl_answer ans;
    int rc = -1;
    char *names[SL_MAX_KEY_COLS] = {0};
    if (sl_session_exec(sess, q, 3, &ans) != 0) {
        sl_err_set(err, "%s:%d: cannot read the schema of %s", job->path, job->line[SL_DIR_TABLE],
                   sl_session_display(sess));
        goto out;
    }
    if (!ans.ok) {
        sl_err_set(err, "%s:%d: cannot look up table %s: %s", job->path, job->line[SL_DIR_TABLE], job->table,
                   ans.error);
        goto out;
    }
    if (ans.results[0].nrows == 0 || strcmp(sl_answer_val(&ans, 0, 0, 1), "table") != 0) {
        sl_err_set(err, "%s:%d: table %s does not exist in %s", job->path, job->line[SL_DIR_TABLE], job->table,
                   sl_session_display(sess));
        goto out;
    }
    info->ks.dialect = SL_DIALECT_SQLITE;
    char *quoted = sl_quote_ident(sl_answer_val(&ans, 0, 0, 0));
    if (strcmp(schema, "main") == 0) {
        info->ks.table = quoted;
    } else {
        char *qs = sl_quote_ident(schema);
        info->ks.table = sl_asprintf("%s.%s", qs, quoted);
        free(qs);
        free(quoted);
    }
    info->ks.where = job->where ? sl_strdup(job->where) : NULL;
    if (resolve_key(job, &ans, info, names, err) != 0)
        goto out;
    if (rowid_key(&ans, info, names)) {
        info->index = sl_strdup("INTEGER PRIMARY KEY (the rowid)");
        info->unique_key = 1;
        info->ks.rowid_alias = 1;
    }
    for (int r = 0; r < ans.results[2].nrows; r++) {
        const char *cols = sl_answer_val(&ans, 2, r, 2);
        if (!cols)
            continue;
        if (!info->index && catalog_index_walks_key(cols, names, info->ks.ncols, 1))
            info->index = sl_strdup(sl_answer_val(&ans, 2, r, 0));
        if (strcmp(sl_answer_val(&ans, 2, r, 1), "1") == 0 && catalog_index_within_key(cols, names, info->ks.ncols, 1))
            info->unique_key = 1;
    }
    rc = 0;
out:
    for (size_t i = 0; i < SL_MAX_KEY_COLS; i++)
        free(names[i]);
    free(schema);
    free(table);
    sl_answer_free(&ans);
    if (rc != 0)
        sl_table_info_free(info);
    return rc;
}

/* The rows a fresh walk of ks covers from the table's start to its end: the
 * table's less those with no key (never walked). SQLite counts the table's
 * rows from its pages' headers, without reading a row: four times quicker
 * than counting a span row by row. NULL when that does not hold: a key of
 * several columns, or a where (the table's rows are not the ones it keeps). */
static char *fresh_rows_sql(const sl_keyspec *ks)
{
    if (ks->ncols != 1 || ks->where)
        return NULL;
    return sl_asprintf("SELECT (SELECT count(*) FROM %s) - (SELECT count(*) FROM %s WHERE %s IS NULL)", ks->table,
                       ks->table, ks->cols[0]);
}

void catalog_count_ahead_lite(sl_session *sess, const sl_keyspec *ks)
{
    char *sql = fresh_rows_sql(ks);
    if (sql)
        sl_lite_ahead_start(&sess->lite, sql);
    free(sql);
}

int64_t catalog_estimate_spans_lite(sl_session *sess, const sl_keyspec *ks, const sl_key_span *spans, size_t n)
{
    /* SQLite keeps no row estimate: the rows are counted. A span from the
     * table's start (a fresh walk) is counted as fresh_rows_sql says, less
     * the rows after the span, which are few; that count may have been
     * started ahead (catalog_count_ahead_lite). */
    catalog_spans s;
    catalog_spans_build(&s, ks, spans, n, 0, "", "count(*)");
    for (size_t i = 0; i < n; i++) {
        char *fresh = spans[i].after ? NULL : fresh_rows_sql(ks);
        if (!fresh)
            continue;
        sl_buf b = {0};
        int64_t counted;
        /* the loop turns meanwhile, for signals, ctl and metrics; a stop
         * interrupts it and counts here, as without it */
        while (sl_lite_ahead_running(&sess->lite) && !sl_session_stopping(sess))
            sl_session_turn(sess, 1);
        if (sl_session_stopping(sess))
            sl_lite_ahead_drop(&sess->lite);
        if (sl_lite_ahead_take(&sess->lite, fresh, &counted) == 0)
            sl_buf_printf(&b, "SELECT %" PRId64, counted);
        else
            sl_buf_adds(&b, fresh);
        free(fresh);
        if (spans[i].until) { /* the rows after it: the span's bounds as the start of another */
            char *after = sl_keys_span_sql(ks, "count(*)", 1, 0);
            sl_buf_printf(&b, " - (%s)", after);
            free(after);
        }
        free(s.sql[i]);
        s.sql[i] = sl_buf_take(&b);
        s.q[i].sql = s.sql[i];
    }
    sl_lite_ahead_drop(&sess->lite); /* a walk that did not start at the table's start: not needed */
    sl_answer ans;
    int64_t rows = -1;
    if (sl_session_exec(sess, s.q, s.nq, &ans) == 0) {
        rows = ans.ok ? 0 : -1;
        for (size_t i = 0; i < n && rows >= 0; i++) {
            const char *v = sl_answer_val(&ans, i, 0, 0);
            rows = v ? rows + strtoll(v, NULL, 10) : -1;
        }
        sl_answer_free(&ans);
    }
    catalog_spans_free(&s);
    return rows;
}
