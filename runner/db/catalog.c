/* catalog.c: resolve a job's table, key and index against the PostgreSQL catalog (SQLite: catalog_lite.c). */
#include "sluice/db/catalog.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "catalog_internal.h"

void sl_table_info_free(sl_table_info *info)
{
    sl_keyspec_free(&info->ks);
    free(info->index);
    memset(info, 0, sizeof *info);
}

char *sl_catalog_fold_ident(const char *ident)
{
    size_t len = strlen(ident);
    if (len >= 2 && ident[0] == '"' && ident[len - 1] == '"') {
        sl_buf buf = {0};
        for (size_t i = 1; i + 1 < len; i++) {
            sl_buf_addc(&buf, ident[i]);
            if (ident[i] == '"' && ident[i + 1] == '"')
                i++;
        }
        return sl_buf_take(&buf);
    }
    char *out = sl_strdup(ident);
    for (char *p = out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return out;
}

char *sl_catalog_shown_ident(const char *ident)
{
    char *folded = sl_catalog_fold_ident(ident), *quoted = sl_quote_ident(folded);
    free(folded);
    return quoted;
}

/* Table: its printable (quoted, qualified when needed) name, its kind, and whether row-level
 * security is on for it. */
static const char *const table_sql =
    "SELECT c.oid::regclass::text, c.relkind::text, c.relrowsecurity::text FROM pg_class c"
    " WHERE c.oid = to_regclass($1)";

/* Primary-key columns, in key order. */
static const char *const pk_sql =
    "SELECT a.attname, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnotnull::text"
    "  FROM pg_index i"
    "  CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)"
    "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
    " WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord";

/* Every column (name, quoted name, type, not null). */
static const char *const cols_sql =
    "SELECT a.attname, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnotnull::text"
    "  FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped"
    " ORDER BY a.attnum";

/* Valid, non-partial btree indexes and their columns (expressions as "?"). */
static const char *const idx_sql =
    "SELECT i.indexrelid::regclass::text,"
    "       (SELECT string_agg(coalesce(a.attname, '?'), E'\\x01' ORDER BY k.ord)"
    "          FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)"
    "          LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),"
    "       i.indisunique::text"
    "  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam"
    " WHERE i.indrelid = to_regclass($1) AND i.indisvalid AND i.indpred IS NULL AND am.amname = 'btree'"
    "   AND i.indexprs IS NULL ORDER BY i.indisprimary DESC, i.indnatts";

static int find_col(const sl_answer *ans, size_t res, const char *folded)
{
    for (int r = 0; r < ans->results[res].nrows; r++)
        if (strcmp(sl_answer_val(ans, res, r, 0), folded) == 0)
            return r;
    return -1;
}

static void add_key_col(sl_keyspec *ks, const sl_answer *ans, size_t res, int row, int *nullable)
{
    ks->cols[ks->ncols] = sl_strdup(sl_answer_val(ans, res, row, 1));
    ks->types[ks->ncols] = sl_strdup(sl_answer_val(ans, res, row, 2));
    if (strcmp(sl_answer_val(ans, res, row, 3), "true") != 0)
        *nullable = 1;
    ks->ncols++;
}

static int name_eq(const char *a, const char *b, size_t len, int nocase)
{
    return (nocase ? strncasecmp(a, b, len) : strncmp(a, b, len)) == 0;
}

int catalog_index_walks_key(const char *idx_cols, char *const *names, size_t n, int nocase)
{
    const char *p = idx_cols;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (!name_eq(p, names[i], len, nocase) || (p[len] != '\x01' && p[len] != '\0'))
            return 0;
        p += len;
        if (i + 1 < n) {
            if (*p != '\x01')
                return 0;
            p++;
        }
    }
    return 1;
}

int catalog_index_within_key(const char *idx_cols, char *const *names, size_t n, int nocase)
{
    const char *p = idx_cols;
    while (*p) {
        const char *end = strchr(p, '\x01');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int found = 0;
        for (size_t i = 0; i < n && !found; i++)
            found = strlen(names[i]) == len && name_eq(names[i], p, len, nocase);
        if (!found)
            return 0;
        p += len;
        if (*p)
            p++;
    }
    return 1;
}

static int resolve_key(const sl_job *job, const sl_answer *ans, sl_table_info *info, char **names, sl_err *err)
{
    sl_keyspec *ks = &info->ks;
    if (job->nkey > 0) {
        for (size_t i = 0; i < job->nkey; i++) {
            names[i] = sl_catalog_fold_ident(job->key[i]);
            int row = find_col(ans, 2, names[i]);
            if (row < 0) {
                char *shown = sl_catalog_shown_ident(job->key[i]);
                sl_err_set(err, "%s:%d: key column %s does not exist in table %s", job->path, job->line[SL_DIR_KEY],
                           shown, ks->table);
                free(shown);
                return -1;
            }
            add_key_col(ks, ans, 2, row, &info->nullable_key);
        }
        return 0;
    }
    const sl_result *pk = &ans->results[1];
    if (pk->nrows == 0) {
        sl_err_set(err, "%s:%d: table %s has no primary key, so the key to walk must be named", job->path,
                   job->line[SL_DIR_TABLE], ks->table);
        sl_err_append(err, "hint: add \"-- sluice:key COL[, COL...]\" naming a unique, indexed column list");
        return -1;
    }
    if (pk->nrows > SL_MAX_KEY_COLS) {
        sl_err_set(err, "%s: the primary key of %s has %d columns; sluice walks at most %d", job->path, ks->table,
                   pk->nrows, SL_MAX_KEY_COLS);
        return -1;
    }
    for (int r = 0; r < pk->nrows; r++) {
        names[r] = sl_strdup(sl_answer_val(ans, 1, r, 0));
        add_key_col(ks, ans, 1, r, &info->nullable_key);
    }
    return 0;
}

int sl_catalog_resolve(sl_session *sess, const sl_job *job, sl_table_info *info, sl_err *err)
{
    memset(info, 0, sizeof *info);
    if (sess->dialect == SL_DIALECT_SQLITE)
        return catalog_resolve_lite(sess, job, info, err);
    const char *params[] = {job->table};
    sl_query q[] = {{table_sql, 1, params}, {pk_sql, 1, params}, {cols_sql, 1, params}, {idx_sql, 1, params}};
    sl_answer ans;
    if (sl_session_exec(sess, q, 4, &ans) != 0) {
        sl_err_set(err, "lost the connection while reading the catalog");
        return -1;
    }
    int rc = -1;
    char *names[SL_MAX_KEY_COLS] = {0};
    if (!ans.ok) {
        sl_err_set(err, "%s:%d: cannot look up table %s: %s", job->path, job->line[SL_DIR_TABLE], job->table,
                   ans.error);
        goto out;
    }
    if (ans.results[0].nrows == 0) {
        sl_err_set(err, "%s:%d: table %s does not exist (or is not visible on the search_path)", job->path,
                   job->line[SL_DIR_TABLE], job->table);
        goto out;
    }
    info->ks.dialect = SL_DIALECT_PG;
    info->ks.table = sl_strdup(sl_answer_val(&ans, 0, 0, 0));
    info->ks.where = job->where ? sl_strdup(job->where) : NULL;
    info->row_security = sl_answer_true(sl_answer_val(&ans, 0, 0, 2));
    if (resolve_key(job, &ans, info, names, err) != 0)
        goto out;
    for (int r = 0; r < ans.results[3].nrows; r++) {
        const char *cols = sl_answer_val(&ans, 3, r, 1);
        if (!info->index && catalog_index_walks_key(cols, names, info->ks.ncols, 0))
            info->index = sl_strdup(sl_answer_val(&ans, 3, r, 0));
        if (strcmp(sl_answer_val(&ans, 3, r, 2), "true") == 0 &&
            catalog_index_within_key(cols, names, info->ks.ncols, 0))
            info->unique_key = 1;
    }
    rc = 0;
out:
    for (size_t i = 0; i < SL_MAX_KEY_COLS; i++)
        free(names[i]);
    sl_answer_free(&ans);
    if (rc != 0)
        sl_table_info_free(info);
    return rc;
}

/* The rows= of an EXPLAIN's first line, or -1. */
static int64_t explained_rows(const sl_answer *ans, size_t res)
{
    const char *line = sl_answer_val(ans, res, 0, 0);
    const char *p = line ? strstr(line, "rows=") : NULL;
    return p ? strtoll(p + 5, NULL, 10) : -1;
}

/* The planner scales the row count of the last VACUUM or ANALYZE by the
 * table's pages now, so dead rows count as live: right after a job that
 * updated every row (the job before this one, often) it guesses twice the
 * rows. The live rows PostgreSQL counts as rows come and go are the better
 * total; the planner still gives the share a where (and a key range)
 * keeps. A partitioned table keeps no counts of its own: its partitions'
 * (every level, as the planner's guess covers them) add up to its. The
 * planner's guess alone when there are no counts or they cannot be read,
 * or when no VACUUM or ANALYZE counted the rows since the counts began (the
 * fourth column): VACUUM and ANALYZE set the live count, inserts and
 * deletes only move it, so after a reset (a crash, a failover to a standby,
 * which keeps counts of its own, pg_stat_reset) it says how many rows came
 * and went since, not how many there are: a table only updated since has
 * dead rows and none live.
 *
 * The third column: the planner has no statistics for a table of the
 * tree, and its share of a where or a key range comes from fixed defaults
 * (a range keeps 0.5 %), its rows from a guess: no estimate. That is a
 * table never analyzed (reltuples -1, PostgreSQL 14 and later), which the
 * planner takes for 10 pages even when empty (an empty partition made
 * ahead of its rows, which autovacuum leaves alone), but for an empty
 * inheritance parent (its pages are read); or one holding rows without
 * column statistics (a VACUUM or CREATE INDEX sets reltuples, not them;
 * pg_stats shows a role the columns it may read, the key's among them).
 * A partitioned parent has none of its own: its partitions' count. */
static const char live_sql[] =
    SL_PG_TABLE_TREE "SELECT sum(pg_stat_get_live_tuples(c.oid)), sum(pg_stat_get_dead_tuples(c.oid)),"
                     " coalesce(bool_or(c.relkind <> 'p' AND ((c.reltuples < 0 AND NOT c.relhassubclass)"
                     " OR (pg_relation_size(c.oid) > 0 AND NOT EXISTS (SELECT 1 FROM pg_stats s"
                     " JOIN pg_namespace n ON n.nspname = s.schemaname"
                     " WHERE n.oid = c.relnamespace AND s.tablename = c.relname)))), false)::text,"
                     " coalesce(bool_or(pg_stat_get_last_vacuum_time(c.oid) IS NOT NULL"
                     " OR pg_stat_get_last_autovacuum_time(c.oid) IS NOT NULL"
                     " OR pg_stat_get_last_analyze_time(c.oid) IS NOT NULL"
                     " OR pg_stat_get_last_autoanalyze_time(c.oid) IS NOT NULL), false)::text"
                     " FROM sluice_tree t JOIN pg_class c ON c.oid = t.rel";

void catalog_spans_build(catalog_spans *s, const sl_keyspec *ks, const sl_key_span *spans, size_t n, size_t lead,
                         const char *prefix, const char *what)
{
    s->nq = lead + n;
    s->q = sl_calloc(s->nq, sizeof *s->q);
    s->sql = sl_calloc(s->nq, sizeof *s->sql);
    s->params = sl_calloc(n * 2 * ks->ncols + 1, sizeof *s->params);
    for (size_t i = 0; i < n; i++) {
        char *span = sl_keys_span_sql(ks, what, spans[i].after != NULL, spans[i].until != NULL);
        s->sql[lead + i] = sl_asprintf("%s%s", prefix, span);
        free(span);
        const char **p = s->params + i * 2 * ks->ncols;
        int k = 0;
        for (size_t c = 0; spans[i].after && c < ks->ncols; c++)
            p[k++] = spans[i].after[c];
        for (size_t c = 0; spans[i].until && c < ks->ncols; c++)
            p[k++] = spans[i].until[c];
        s->q[lead + i] = (sl_query){s->sql[lead + i], k, p, 0};
    }
}

void catalog_spans_free(catalog_spans *s)
{
    for (size_t i = 0; i < s->nq; i++)
        free(s->sql[i]);
    free(s->sql);
    free(s->params);
    free(s->q);
}

/* The live and dead rows the statistics count for the table (0 for both
 * when they cannot be read: a role refused the functions, say, or when
 * they know nothing of its rows since a reset), and whether the planner has
 * statistics for it (live_sql; 1 when that cannot be read either: the
 * planner's guess is all there is). */
static void stat_rows(sl_session *sess, const char *table, int64_t *live, int64_t *dead, int *analyzed)
{
    const char *params[] = {table};
    sl_answer ans;
    *live = *dead = 0;
    *analyzed = 1;
    if (sl_session_exec1(sess, live_sql, 1, params, &ans) != 0)
        return;
    const char *l = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL, *d = ans.ok ? sl_answer_val(&ans, 0, 0, 1) : NULL;
    const char *missing = ans.ok ? sl_answer_val(&ans, 0, 0, 2) : NULL;
    *live = l ? strtoll(l, NULL, 10) : 0;
    *dead = d ? strtoll(d, NULL, 10) : 0;
    *analyzed = !missing || strcmp(missing, "true") != 0;
    const char *counted = ans.ok ? sl_answer_val(&ans, 0, 0, 3) : NULL;
    if (!counted || strcmp(counted, "true") != 0)
        *live = *dead = 0; /* reset since the rows were counted: the planner's guess */
    sl_answer_free(&ans);
}

void sl_catalog_count_ahead(sl_session *sess, const sl_keyspec *ks)
{
    if (sess->dialect == SL_DIALECT_SQLITE)
        catalog_count_ahead_lite(sess, ks);
}

void sl_catalog_count_ahead_drop(sl_session *sess)
{
    if (sess->dialect == SL_DIALECT_SQLITE)
        sl_lite_ahead_drop(&sess->lite);
}

int64_t sl_catalog_estimate_spans(sl_session *sess, const sl_keyspec *ks, const sl_key_span *spans, size_t n)
{
    if (sess->dialect == SL_DIALECT_SQLITE)
        return catalog_estimate_spans_lite(sess, ks, spans, n);
    catalog_spans s;
    catalog_spans_build(&s, ks, spans, n, 1, "EXPLAIN ", "1");
    s.sql[0] = sl_asprintf("EXPLAIN SELECT 1 FROM %s", ks->table);
    s.q[0] = (sl_query){s.sql[0], 0, NULL, 0};
    sl_answer ans;
    int64_t rows = -1;
    if (sl_session_exec(sess, s.q, s.nq, &ans) == 0) {
        int64_t planned_all = ans.ok ? explained_rows(&ans, 0) : -1, planned = ans.ok ? 0 : -1;
        for (size_t i = 0; i < n && planned >= 0; i++) {
            int64_t r = explained_rows(&ans, 1 + i);
            planned = r >= 0 ? planned + r : -1;
        }
        sl_answer_free(&ans);
        int64_t nlive = 0, ndead = 0;
        int analyzed = 1;
        if (planned >= 0)
            stat_rows(sess, ks->table, &nlive, &ndead, &analyzed);
        rows = planned;
        if (!analyzed)
            rows = SL_CATALOG_NO_STATS;
        else if (planned >= 0 && planned_all > 0 && nlive + ndead > 0 && nlive < planned_all)
            /* the live count only ever lowers the planner's guess: its rows for the whole table, the
             * last count's density times the pages now, are what the pages can hold; a live count
             * above them is one the statistics got wrong (PostgreSQL 15 counts rows inserted, then
             * analyzed in the same session within a second, twice, until the next VACUUM) */
            rows = (int64_t)((double)planned * (double)nlive / (double)planned_all + 0.5);
    }
    catalog_spans_free(&s);
    return rows;
}

int64_t sl_catalog_estimate_rows(sl_session *sess, const sl_keyspec *ks)
{
    sl_key_span all = {NULL, NULL};
    return sl_catalog_estimate_spans(sess, ks, &all, 1);
}
