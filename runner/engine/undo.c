/* undo.c: what `up` saves inside each chunk (hashes, old values) and the SQL `down` sends to put rows back.
 *
 * The shared part (which rows to keep, how to classify them for `down`) and
 * the PostgreSQL SQL; the SQLite SQL is in undo_lite.c. On PostgreSQL values
 * travel as PostgreSQL's own text form both ways (value::text out,
 * text::type in), which round-trips exactly for every type with the
 * session's fixed DateStyle/extra_float_digits (session.c): numeric, jsonb,
 * bytea (hex), timestamptz, arrays, enums, domains, composites. Restores are
 * set-based: one statement per chunk over unnest() of text arrays, not one
 * statement per row. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/base/json.h"
#include "sluice/db/schema.h"
#include "undo_internal.h"

#define ROW_ALIAS SL_UNDO_ROW_ALIAS

static int is_lite(const sl_undo_target *t)
{
    return t->ks->dialect == SL_DIALECT_SQLITE;
}

/* Values saved per row: snapshot(COL, ...) one per column; snapshot(*) the
 * whole row as one text on PostgreSQL, one literal per column on SQLite. */
static size_t saved_vals(const sl_undo_target *t)
{
    if (t->kind == SL_UNDO_SNAPSHOT_COLS)
        return t->ncols;
    if (t->kind == SL_UNDO_SNAPSHOT_ALL)
        return is_lite(t) ? t->ncols : 1;
    return 0;
}

void sl_undo_target_free(sl_undo_target *t)
{
    for (size_t i = 0; i < t->ncols; i++) {
        free(t->cols[i]);
        free(t->types[i]);
    }
    free(t->cols);
    free(t->types);
    free(t->pre_sql);
    free(t->post_sql);
    free(t->state_sql);
    memset(t, 0, sizeof *t);
}

/* Every column: name, quoted name, type, generated. */
static const char cols_sql[] =
    "SELECT a.attname, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), (a.attgenerated <> '')::text"
    "  FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped"
    " ORDER BY a.attnum";

static void add_col(sl_undo_target *t, const sl_answer *ans, int row)
{
    t->cols = sl_realloc(t->cols, (t->ncols + 1) * sizeof(char *));
    t->types = sl_realloc(t->types, (t->ncols + 1) * sizeof(char *));
    t->cols[t->ncols] = sl_strdup(sl_answer_val(ans, 0, row, 1));
    t->types[t->ncols] = sl_strdup(sl_answer_val(ans, 0, row, 2));
    t->ncols++;
}

/* SQLite's identifiers ignore ASCII case. */
static int same_name(const sl_keyspec *ks, const char *a, const char *b)
{
    return ks->dialect == SL_DIALECT_SQLITE ? strcasecmp(a, b) == 0 : strcmp(a, b) == 0;
}

static int is_key_col(const sl_keyspec *ks, const char *quoted)
{
    for (size_t i = 0; i < ks->ncols; i++)
        if (same_name(ks, ks->cols[i], quoted))
            return 1;
    return 0;
}

/* snapshot(COL, ...): each named column must exist and not be part of the key. */
static int pick_cols(const sl_job *job, const sl_answer *ans, sl_undo_target *t, sl_err *err)
{
    for (size_t c = 0; c < job->nundo_cols; c++) {
        char *name = sl_catalog_fold_ident(job->undo_cols[c]);
        int found = -1;
        for (int r = 0; r < ans->results[0].nrows && found < 0; r++)
            if (same_name(t->ks, sl_answer_val(ans, 0, r, 0), name))
                found = r;
        free(name);
        const char *why = found < 0                                              ? "does not exist in"
                          : is_key_col(t->ks, sl_answer_val(ans, 0, found, 1))   ? "is part of the key of"
                          : strcmp(sl_answer_val(ans, 0, found, 3), "true") == 0 ? "is a generated column of"
                                                                                 : NULL;
        if (why) {
            sl_err_set(err, "%s:%d: undo column \"%s\" %s table %s", job->path, job->line[SL_DIR_UNDO],
                       job->undo_cols[c], why, t->ks->table);
            sl_err_append(err, "hint: name the columns the up statements change, e.g. -- sluice:undo snapshot(%s)",
                          "full_name");
            return -1;
        }
        add_col(t, ans, found);
    }
    return 0;
}

static void add_key_text(sl_buf *b, const sl_keyspec *ks)
{
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(b, "%s%s::text", i ? ", " : "", ks->cols[i]);
}

/* In the post-image, only rows this transaction wrote (their xmin is its xid,
 * or a later one: a subtransaction's) get a hash; NULL marks a row the chunk
 * left alone, which needs no undo. Saves hashing and storing them. age()
 * counts from the transaction's own xid once it has one (the up statements
 * gave it one if they wrote anything): 0 for its rows, less for a later xid;
 * it compares the xids as numbers, without text. */
#define WRITTEN "age(" ROW_ALIAS ".xmin) <= 0"
#define TX_JOIN ""

/* SELECT key::text..., what FROM table WHERE the chunk's range (the whole
 * range, not only rows matching the job's where: the up statements may touch
 * any row in it). */
static char *range_select(const sl_keyspec *ks, const char *what, const char *join, const char *suffix)
{
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT ");
    add_key_text(&b, ks);
    sl_buf_printf(&b, ", %s", what);
    char *pred = sl_keys_range_predicate(ks, 1, 0);
    sl_buf_printf(&b, " FROM %s AS " ROW_ALIAS "%s WHERE %s%s", ks->table, join, pred, suffix);
    free(pred);
    return sl_buf_take(&b);
}

/* What `down` compares to see whether someone changed a row since the job
 * wrote it: the hash of what down would overwrite, the saved columns for
 * snapshot(COL, ...) (a change elsewhere in the row is no conflict), else
 * the whole row. malloc'd. */
static char *hash_expr(const sl_undo_target *t)
{
    if (t->kind != SL_UNDO_SNAPSHOT_COLS)
        return sl_strdup("hashtextextended(" ROW_ALIAS "::text, 0)");
    sl_buf b = {0};
    sl_buf_adds(&b, "hashtextextended(ROW(");
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, "%s%s", i ? ", " : "", t->cols[i]);
    sl_buf_adds(&b, ")::text, 0)");
    return sl_buf_take(&b);
}

static void build_sql(sl_undo_target *t)
{
    const sl_keyspec *ks = t->ks;
    char *hash = hash_expr(t);
    char *written = sl_asprintf("CASE WHEN %s THEN %s END", WRITTEN, hash);
    t->post_sql = range_select(ks, written, TX_JOIN, "");
    if (t->kind == SL_UNDO_DOWN) {
        /* the down section is SQL of the job's: its rows stay locked from the look to the COMMIT */
        t->state_sql = range_select(ks, hash, "", " FOR UPDATE OF " ROW_ALIAS);
    } else {
        /* a snapshot's restore is sluice's own: it writes a row only if its xmin is still the one
         * seen here (no lock taken to read, none written to WAL), see guard_sql */
        char *with_xmin = sl_asprintf("%s, " ROW_ALIAS ".xmin::text", hash);
        t->state_sql = range_select(ks, with_xmin, "", "");
        free(with_xmin);
    }
    free(written);
    free(hash);
    if (t->kind == SL_UNDO_SNAPSHOT_ALL) {
        t->pre_sql = range_select(ks, ROW_ALIAS "::text", "", "");
    } else if (t->kind == SL_UNDO_SNAPSHOT_COLS) {
        sl_buf b = {0};
        for (size_t i = 0; i < t->ncols; i++)
            sl_buf_printf(&b, "%s%s::text", i ? ", " : "", t->cols[i]);
        t->pre_sql = range_select(ks, b.data, "", "");
        sl_buf_free(&b);
    }
}

/* The table's columns (name, quoted name, type, generated), either backend. */
static int read_cols(sl_session *sess, const sl_job *job, const sl_keyspec *ks, sl_answer *ans, sl_err *err)
{
    if (ks->dialect == SL_DIALECT_SQLITE) {
        if (undo_lite_columns(sess, ks, ans, err) == 0)
            return 0;
        char *why = sl_strdup(err->msg);
        sl_err_set(err, "%s: %s", job->path, why);
        free(why);
        return -1;
    }
    const char *params[] = {ks->table};
    if (sl_session_exec1(sess, cols_sql, 1, params, ans) != 0 || !ans->ok) {
        sl_err_set(err, "%s: cannot read the columns of %s: %s", job->path, ks->table,
                   ans->error ? ans->error : "connection lost");
        sl_answer_free(ans);
        return -1;
    }
    return 0;
}

int sl_undo_resolve(sl_session *sess, const sl_job *job, const sl_table_info *info, sl_undo_target *t, sl_err *err)
{
    memset(t, 0, sizeof *t);
    const sl_keyspec *ks = &info->ks;
    t->kind = job->undo;
    t->ks = ks;
    if (t->kind == SL_UNDO_NONE || (t->kind == SL_UNDO_DOWN && !info->unique_key))
        return 0;
    if (!info->unique_key) {
        sl_err_set(err,
                   "%s:%d: undo snapshot needs a unique key: rows are put back by key, and the key of %s is "
                   "not unique",
                   job->path, job->line[SL_DIR_UNDO], ks->table);
        sl_err_append(err, "hint: walk a unique key (-- sluice:key COL, ... covered by a unique index), or undo with "
                           "a -- sluice:down section");
        return -1;
    }
    sl_answer ans;
    if (read_cols(sess, job, ks, &ans, err) != 0)
        return -1;
    int rc = 0;
    if (t->kind == SL_UNDO_SNAPSHOT_COLS)
        rc = pick_cols(job, &ans, t, err);
    for (int r = 0; t->kind == SL_UNDO_SNAPSHOT_ALL && r < ans.results[0].nrows; r++)
        if (strcmp(sl_answer_val(&ans, 0, r, 3), "true") != 0)
            add_col(t, &ans, r);
    if (rc == 0 && is_lite(t))
        undo_lite_build(t, &ans);
    else if (rc == 0)
        build_sql(t);
    sl_answer_free(&ans);
    if (rc != 0)
        sl_undo_target_free(t);
    return rc;
}

/* ---- capture (inside an up chunk) ---- */

typedef struct keyed {
    char *const *key; /* points into a result's row */
    int row;
} keyed;

static size_t sort_nkey; /* qsort has no context argument; single-threaded */

static int keyed_cmp(const void *a, const void *b)
{
    return sl_snap_key_cmp(((const keyed *)a)->key, ((const keyed *)b)->key, sort_nkey);
}

/* The rows of res ordered by their first nkey columns. */
static keyed *sort_rows(const sl_result *res, size_t nkey)
{
    keyed *k = sl_calloc((size_t)(res ? res->nrows : 0) + 1, sizeof *k);
    for (int r = 0; res && r < res->nrows; r++)
        k[r] = (keyed){&res->vals[(size_t)r * (size_t)res->ncols], r};
    sort_nkey = nkey;
    if (res && res->nrows > 1)
        qsort(k, (size_t)res->nrows, sizeof *k, keyed_cmp);
    return k;
}

/* A hash as the server printed it: [-]digits of a bigint. Read here rather
 * than with strtoll, which was a sixth of the runner's time in a chunk with
 * an undo record (a thousand calls a chunk, each through the locale). */
static int64_t hash_at(const sl_result *res, int row, size_t col)
{
    const char *v = res->vals[(size_t)row * (size_t)res->ncols + col];
    if (!v)
        return 0;
    int neg = *v == '-';
    uint64_t n = 0;
    for (const char *p = v + neg; *p >= '0' && *p <= '9'; p++)
        n = n * 10 + (uint64_t)(*p - '0');
    return (int64_t)(neg ? 0 - n : n); /* -2^63 comes back exactly, by two's complement */
}

static int hash_null(const sl_result *res, int row, size_t col)
{
    return res->vals[(size_t)row * (size_t)res->ncols + col] == NULL;
}

/* Where the saved values start in a pre_sql row: after the key, and on
 * SQLite after the row's hash too. */
static size_t vals_at(const sl_snap *s, int lite)
{
    return s->nkey + (lite ? 1 : 0);
}

/* Add the row of pre (pi, or -1) and post (qi, or -1) with the same key,
 * unless the chunk left it alone: PostgreSQL's post-image gives those a NULL
 * hash (not written by this transaction); on SQLite their hash is the same
 * before and after. The record borrows the result's strings. */
static void add_pair(sl_snap *s, int lite, const sl_result *pre, int pi, const sl_result *post, int qi)
{
    size_t n = s->nkey;
    if (qi >= 0 && hash_null(post, qi, n))
        return;
    if (lite && pi >= 0 && qi >= 0 && hash_at(pre, pi, n) == hash_at(post, qi, n))
        return;
    sl_snap_row *row = &s->rows[s->nrows++];
    const sl_result *src = pi >= 0 ? pre : post;
    row->key = &src->vals[(size_t)(pi >= 0 ? pi : qi) * (size_t)src->ncols];
    row->has_post = qi >= 0;
    row->post_hash = qi >= 0 ? hash_at(post, qi, n) : 0;
    row->has_pre = pi >= 0;
    row->vals = pi >= 0 ? &pre->vals[(size_t)pi * (size_t)pre->ncols + vals_at(s, lite)] : NULL;
}

/* Both lists come in the key's index order, so when they hold the same keys
 * (an UPDATE job) the rows pair up by position; otherwise sort and merge. */
static int same_keys(const sl_result *pre, const sl_result *post, size_t nkey)
{
    if (!pre || pre->nrows != post->nrows)
        return 0;
    for (int r = 0; r < pre->nrows; r++)
        if (sl_snap_key_cmp(&pre->vals[(size_t)r * (size_t)pre->ncols], &post->vals[(size_t)r * (size_t)post->ncols],
                            nkey) != 0)
            return 0;
    return 1;
}

static void merge_rows(sl_snap *s, int lite, const sl_result *pre, const sl_result *post)
{
    int np = pre ? pre->nrows : 0, nq = post ? post->nrows : 0;
    s->rows = sl_calloc((size_t)(np + nq) + 1, sizeof(sl_snap_row));
    if (!pre || same_keys(pre, post, s->nkey)) {
        for (int r = 0; r < nq; r++)
            add_pair(s, lite, pre, pre ? r : -1, post, r);
        return;
    }
    keyed *a = sort_rows(pre, s->nkey), *b = sort_rows(post, s->nkey);
    int i = 0, j = 0;
    while (i < np || j < nq) {
        int c = i >= np ? 1 : j >= nq ? -1 : sl_snap_key_cmp(a[i].key, b[j].key, s->nkey);
        int pi = c <= 0 ? a[i++].row : -1;
        int qi = c >= 0 ? b[j++].row : -1;
        add_pair(s, lite, pre, pi, post, qi);
    }
    free(a);
    free(b);
}

static const char *kind_tag(sl_undo_kind kind)
{
    return kind == SL_UNDO_SNAPSHOT_ALL ? "all" : kind == SL_UNDO_SNAPSHOT_COLS ? "cols" : "down";
}

char *sl_undo_record(const sl_undo_target *t, int64_t chunk_no, const sl_result *pre, const sl_result *post)
{
    sl_snap s = {0};
    s.chunk_no = chunk_no;
    snprintf(s.kind, sizeof s.kind, "%s", kind_tag(t->kind));
    s.nkey = t->ks->ncols;
    s.nvals = saved_vals(t);
    /* the down way on PostgreSQL has no pre-image: xmin tells the rows written */
    merge_rows(&s, is_lite(t), t->kind == SL_UNDO_DOWN && !is_lite(t) ? NULL : pre, post);
    sl_buf blob = {0};
    sl_snap_encode(&s, &blob);
    free(s.rows); /* the strings belong to the results */
    static const char digits[] = "0123456789abcdef";
    char *hex = sl_malloc(2 * blob.len + 1);
    for (size_t i = 0; i < blob.len; i++) {
        unsigned char c = (unsigned char)blob.data[i];
        hex[2 * i] = digits[c >> 4];
        hex[2 * i + 1] = digits[c & 15];
    }
    hex[2 * blob.len] = '\0';
    sl_buf_free(&blob);
    return hex;
}

const char *sl_undo_store_sql(const sl_undo_target *t)
{
    return is_lite(t) ? "INSERT INTO " SL_UNDO_TABLE " (job, chunk_no, record) VALUES ($1, $2, $3)"
                      : "INSERT INTO " SL_UNDO_TABLE " (job, chunk_no, record) VALUES ($1, $2, decode($3, 'hex'))";
}

const char *sl_undo_take_sql(const sl_undo_target *t)
{
    return is_lite(t) ? "DELETE FROM " SL_UNDO_TABLE " WHERE job = $1 AND chunk_no = $2 RETURNING record"
                      : "DELETE FROM " SL_UNDO_TABLE
                        " WHERE job = $1 AND chunk_no = $2 RETURNING encode(record, 'hex')";
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

int sl_undo_record_decode(const sl_undo_target *t, int64_t chunk_no, const char *text, sl_snap *out, sl_err *err)
{
    memset(out, 0, sizeof *out);
    size_t len = strlen(text);
    unsigned char *blob = sl_malloc(len / 2 + 1);
    int bad = len % 2 != 0;
    for (size_t i = 0; !bad && i < len; i += 2) {
        int hi = hex_digit(text[i]), lo = hex_digit(text[i + 1]);
        bad = hi < 0 || lo < 0;
        if (!bad) /* hi is -1 for a digit that is not hex: shifting it is undefined */
            blob[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    if (bad || sl_snap_decode(blob, len / 2, out) != 0) {
        free(blob);
        sl_err_set(err, "the undo record of chunk %" PRId64 " in %s is damaged: it cannot be read", chunk_no,
                   SL_UNDO_TABLE);
        return -1;
    }
    free(blob);
    out->chunk_no = chunk_no;
    snprintf(out->kind, sizeof out->kind, "%s", kind_tag(t->kind));
    /* its shape before any value is read: a record saved for other columns would restore the wrong ones */
    if (out->nkey != t->ks->ncols || out->nvals != saved_vals(t)) {
        sl_err_set(err,
                   "the undo record of chunk %" PRId64
                   " holds %zu key and %zu saved columns, but the job's key has %zu "
                   "and its undo saves %zu: it was saved for another version of the job",
                   chunk_no, out->nkey, out->nvals, t->ks->ncols, saved_vals(t));
        sl_snap_free(out);
        return -1;
    }
    return 0;
}

char *sl_undo_identity(const sl_undo_target *t)
{
    if (t->kind == SL_UNDO_SNAPSHOT_ALL)
        return sl_strdup("snapshot(*)");
    if (t->kind != SL_UNDO_SNAPSHOT_COLS)
        return sl_strdup("");
    sl_buf b = {0};
    sl_buf_adds(&b, "snapshot(");
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, "%s%s", i ? ", " : "", t->cols[i]);
    sl_buf_addc(&b, ')');
    return sl_buf_take(&b);
}

/* ---- down: classify and build the restore statements ---- */

/* A text[] literal: {"a","b\"c",NULL}. */
static void add_array_elem(sl_buf *b, const char *v)
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

/* The rows of one restore statement being collected: on PostgreSQL one
 * text array per column; on SQLite (lite) one JSON array of rows, each an
 * array of the saved quote() literals in hex (sluice_unquote, lite.c). Either
 * way the values are bound as parameters, never part of the statement. */
typedef struct arrays {
    int lite;
    int guard; /* PostgreSQL, stop or skip: checked statement, the row count its last parameter (guard_sql) */
    int xmin;  /* and the last array each row's xmin as down saw it (not for an INSERT) */
    size_t n;
    sl_buf *a;          /* PostgreSQL */
    json_t *json, *row; /* SQLite */
    int64_t rows;
} arrays;

static void arrays_init(arrays *x, size_t n, int lite, int guard, int xmin)
{
    memset(x, 0, sizeof *x);
    x->lite = lite;
    x->guard = guard;
    x->xmin = xmin;
    n += (size_t)xmin;
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
            add_array_elem(&x->a[first + i], vals[i]);
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
    size_t np = x->lite ? 1 + nedges : x->n + (size_t)x->guard;
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
    }
    arrays_free(x);
    s->q[q] = (sl_query){sql, (int)np, (const char *const *)s->params[q]};
}

/* "unnest($1::text[], ...) AS v(_k1, ..., _v1, ..., [_x])" and the key join
 * (and with guard, the row's xmin still the one down saw). */
static void add_unnest(sl_buf *b, const sl_keyspec *ks, size_t nvals, int guard)
{
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
    if (guard)
        sl_buf_adds(b, " AND " ROW_ALIAS ".xmin = v._x::xid");
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

static char *delete_sql(const sl_undo_target *t, int guard)
{
    sl_buf b = {0};
    sl_buf_printf(&b, "DELETE FROM %s AS " ROW_ALIAS " USING ", t->ks->table);
    add_unnest(&b, t->ks, 0, guard);
    return guard ? guard_sql(sl_buf_take(&b), t->ks->ncols + 2) : sl_buf_take(&b);
}

static char *update_cols_sql(const sl_undo_target *t, int guard)
{
    sl_buf b = {0};
    sl_buf_printf(&b, "UPDATE %s AS " ROW_ALIAS " SET ", t->ks->table);
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, "%s%s = v._v%zu::%s", i ? ", " : "", t->cols[i], i + 1, t->types[i]);
    sl_buf_adds(&b, " FROM ");
    add_unnest(&b, t->ks, t->ncols, guard);
    return guard ? guard_sql(sl_buf_take(&b), t->ks->ncols + t->ncols + 2) : sl_buf_take(&b);
}

/* snapshot(*): each saved row is the table's row type in text form (with
 * guard, beside the xmin down saw). The OFFSET 0 keeps the planner from
 * re-parsing it once per column. */
static void add_rows_subquery(sl_buf *b, const sl_undo_target *t, int guard)
{
    if (guard)
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

static char *update_all_sql(const sl_undo_target *t, int guard)
{
    sl_buf b = {0};
    sl_buf_printf(&b, "UPDATE %s AS " ROW_ALIAS " SET (", t->ks->table);
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, "%s%s", i ? ", " : "", t->cols[i]);
    sl_buf_adds(&b, ") = ROW(");
    add_row_fields(&b, t);
    sl_buf_adds(&b, ") FROM ");
    add_rows_subquery(&b, t, guard);
    sl_buf_adds(&b, " WHERE (");
    for (size_t i = 0; i < t->ks->ncols; i++)
        sl_buf_printf(&b, "%s" ROW_ALIAS ".%s", i ? ", " : "", t->ks->cols[i]);
    sl_buf_adds(&b, ") = (");
    for (size_t i = 0; i < t->ks->ncols; i++)
        sl_buf_printf(&b, "%s(s.r).%s", i ? ", " : "", t->ks->cols[i]);
    sl_buf_adds(&b, ")");
    if (guard)
        sl_buf_adds(&b, " AND " ROW_ALIAS ".xmin = s.g::xid");
    return guard ? guard_sql(sl_buf_take(&b), 3) : sl_buf_take(&b);
}

static char *insert_all_sql(const sl_undo_target *t, int guard)
{
    sl_buf b = {0};
    sl_buf_printf(&b, "INSERT INTO %s (", t->ks->table);
    for (size_t i = 0; i < t->ncols; i++)
        sl_buf_printf(&b, "%s%s", i ? ", " : "", t->cols[i]);
    sl_buf_adds(&b, ") OVERRIDING SYSTEM VALUE SELECT ");
    add_row_fields(&b, t);
    sl_buf_adds(&b, " FROM ");
    add_rows_subquery(&b, t, 0);
    if (guard)
        sl_buf_adds(&b, " ON CONFLICT DO NOTHING");
    return guard ? guard_sql(sl_buf_take(&b), 2) : sl_buf_take(&b);
}

static char *restore_sql(const sl_undo_target *t, undo_restore which, const arrays *x)
{
    if (x->lite)
        return undo_lite_restore_sql(t, which);
    if (which == UNDO_RESTORE_DELETE)
        return delete_sql(t, x->guard);
    if (which == UNDO_RESTORE_INSERT)
        return insert_all_sql(t, x->guard);
    return t->kind == SL_UNDO_SNAPSHOT_ALL ? update_all_sql(t, x->guard) : update_cols_sql(t, x->guard);
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
    return sl_snap_key_cmp((*(const sl_snap_row *const *)a)->key, (*(const sl_snap_row *const *)b)->key, sort_nkey);
}

/* The record's rows in key order (records keep the server's order). */
static const sl_snap_row **sort_snap(const sl_snap *snap)
{
    const sl_snap_row **rows = sl_calloc(snap->nrows + 1, sizeof *rows);
    for (size_t i = 0; i < snap->nrows; i++)
        rows[i] = &snap->rows[i];
    sort_nkey = snap->nkey;
    qsort(rows, snap->nrows, sizeof *rows, snap_row_cmp);
    return rows;
}

typedef struct restore_lists {
    arrays del, upd, ins;
} restore_lists;

/* What to do with one saved row, given whether it exists now. */
static void restore_row(const sl_undo_target *t, restore_lists *l, sl_undo_step *s, const sl_snap_row *row, int present,
                        const char *xmin)
{
    size_t nk = t->ks->ncols, nv = saved_vals(t);
    if (t->kind == SL_UNDO_SNAPSHOT_COLS && row->has_pre && !present) {
        s->nlost++; /* the job deleted it: only some columns were saved */
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
    if (dst == &l->del || (dst == &l->upd && (t->kind == SL_UNDO_SNAPSHOT_COLS || is_lite(t))))
        arrays_add(dst, 0, row->key, nk);
    if (dst != &l->del)
        arrays_add(dst, dst->n - (size_t)dst->xmin - nv, row->vals, nv);
    if (dst->xmin)
        arrays_add(dst, dst->n - 1, (char *const *)&xmin, 1);
    arrays_end_row(dst);
}

void sl_undo_plan_chunk(const sl_undo_target *t, const sl_snap *snap, const sl_result *cur, char *const *edges,
                        sl_on_conflict mode, sl_undo_step *out)
{
    memset(out, 0, sizeof *out);
    size_t nk = t->ks->ncols;
    keyed *c = sort_rows(cur, nk);
    int ncur = cur ? cur->nrows : 0, j = 0;
    int snapshot = t->kind != SL_UNDO_DOWN;
    restore_lists l;
    int lite = is_lite(t);
    size_t nv = saved_vals(t);
    /* PostgreSQL restores a snapshot without row locks, row by row against the xmin seen (guard_sql) */
    int guard = !lite && snapshot && mode != SL_CONFLICT_OVERWRITE;
    arrays_init(&l.del, nk, lite, guard, guard);
    arrays_init(&l.upd, t->kind == SL_UNDO_SNAPSHOT_ALL && !lite ? nv : nk + nv, lite, guard, guard);
    arrays_init(&l.ins, nv, lite, guard, 0); /* the row is not there: no xmin, the count alone */
    sl_buf keys = {0};
    const sl_snap_row **rows = sort_snap(snap);
    for (size_t i = 0; i < snap->nrows; i++) {
        const sl_snap_row *row = rows[i];
        while (j < ncur && sl_snap_key_cmp(c[j].key, row->key, nk) < 0)
            j++;
        int present = j < ncur && sl_snap_key_cmp(c[j].key, row->key, nk) == 0;
        /* as the job left it: gone if it deleted the row, else the same hash */
        int conflict = row->has_post ? !present || hash_at(cur, c[j].row, nk) != row->post_hash : present;
        if (conflict)
            note_conflict(out, &keys, row, nk);
        if (snapshot && (!conflict || mode == SL_CONFLICT_OVERWRITE))
            restore_row(t, &l, out, row, present,
                        present && guard ? cur->vals[(size_t)c[j].row * (size_t)cur->ncols + nk + 1] : NULL);
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

/* ---- descriptions ---- */

char *sl_undo_describe_kind(const sl_job *job)
{
    switch (job->undo) {
    case SL_UNDO_DOWN:
        return sl_asprintf("the down section (%zu statement%s)", job->down.nstmts, job->down.nstmts == 1 ? "" : "s");
    case SL_UNDO_SNAPSHOT_ALL: return sl_strdup("snapshot(*): whole rows saved before each chunk, put back by down");
    case SL_UNDO_SNAPSHOT_COLS: {
        sl_buf b = {0};
        sl_buf_adds(&b, "snapshot(");
        for (size_t i = 0; i < job->nundo_cols; i++)
            sl_buf_printf(&b, "%s%s", i ? ", " : "", job->undo_cols[i]);
        sl_buf_adds(&b, "): old values saved before each chunk, written back by down");
        return sl_buf_take(&b);
    }
    case SL_UNDO_NONE: break;
    }
    return sl_strdup("none");
}

/* Average stored width of the saved columns (pg_stats), or -1. */
static int64_t avg_width(sl_session *sess, const sl_job *job, const sl_keyspec *ks)
{
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT sum(avg_width) FROM pg_stats s JOIN pg_class c ON c.relname = s.tablename"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname"
                    " WHERE c.oid = to_regclass($1)");
    sl_buf names = {0};
    sl_buf_addc(&names, '{');
    for (size_t i = 0; job->undo == SL_UNDO_SNAPSHOT_COLS && i < job->nundo_cols; i++) {
        char *name = sl_catalog_fold_ident(job->undo_cols[i]);
        add_array_elem(&names, name);
        free(name);
    }
    sl_buf_addc(&names, '}');
    if (job->undo == SL_UNDO_SNAPSHOT_COLS)
        sl_buf_adds(&b, " AND s.attname = ANY($2::text[])");
    const char *params[] = {ks->table, names.data};
    sl_answer ans;
    int64_t width = -1;
    if (sl_session_exec1(sess, b.data, job->undo == SL_UNDO_SNAPSHOT_COLS ? 2 : 1, params, &ans) == 0) {
        const char *v = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL;
        width = v ? strtoll(v, NULL, 10) : -1;
        sl_answer_free(&ans);
    }
    sl_buf_free(&b);
    sl_buf_free(&names);
    return width;
}

void sl_undo_plan_print(sl_session *sess, const sl_job *job, const sl_keyspec *ks, int64_t rows)
{
    char *how = sl_undo_describe_kind(job);
    printf("rollback:   %s\n", how);
    free(how);
    if (job->undo == SL_UNDO_NONE) {
        printf("            `down` refuses this job (hint: add a -- sluice:down section, or\n"
               "            -- sluice:undo snapshot(COL, ...) / snapshot(*) to save old values)\n");
        return;
    }
    /* per changed row: key text (~8 bytes), a 64-bit hash, a flag and lengths */
    int64_t per_row = 8 * (int64_t)ks->ncols + 10;
    int lite = ks->dialect == SL_DIALECT_SQLITE;
    int64_t width = job->undo == SL_UNDO_DOWN ? 0
                    : lite                    ? undo_lite_avg_width(sess, job, ks)
                                              : avg_width(sess, job, ks);
    if (rows < 0 || width < 0) {
        if (lite)
            printf("snapshots:  size unknown (no rows in %s to sample)\n", ks->table);
        else
            printf("snapshots:  size unknown (no statistics: ANALYZE %s)\n", ks->table);
        return;
    }
    int64_t bytes = rows * (per_row + width);
    printf("snapshots:  up to ~%" PRId64 " MB in the database's " SL_UNDO_TABLE " table (%" PRId64 " rows x ~%" PRId64
           " bytes; rows a chunk leaves unchanged are not kept)\n",
           (bytes + (1 << 20) - 1) >> 20, rows, per_row + width);
}
