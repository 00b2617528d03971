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

void sl_undo_target_free(sl_undo_target *t)
{
    for (size_t i = 0; i < t->ncols; i++) {
        free(t->cols[i]);
        free(t->types[i]);
    }
    free(t->cols);
    free(t->types);
    for (size_t i = 0; i < t->nfields; i++) {
        free(t->field_cols[i]);
        free(t->field_types[i]);
    }
    free(t->field_cols);
    free(t->field_types);
    free(t->field_generated);
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
            char *shown = sl_catalog_shown_ident(job->undo_cols[c]);
            sl_err_set(err, "%s:%d: undo column %s %s table %s", job->path, job->line[SL_DIR_UNDO], shown, why,
                       t->ks->table);
            free(shown);
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
 * the whole row. The columns are qualified: a restore's FROM names its own
 * (undo_restore.c). malloc'd. */
char *undo_hash_expr(const sl_undo_target *t)
{
    sl_buf b = {0};
    if (t->col_hash) {
        /* each column's text hashed on its own, seeded by its place, the hashes XORed: no row to build and
         * print, no quoting. A NULL gets a number of its own (a NULL hash marks a row up left alone), and
         * COLLATE "C" hashes the bytes: a case-insensitive column's 'A' to 'a' is a change. snapshot(*):
         * the columns its rows were saved with (fewer than now when columns were added since up); a down
         * section: every column the table has, as the row's text has them. */
        int saved = t->kind == SL_UNDO_SNAPSHOT_COLS;
        size_t n = saved ? t->ncols : t->kind == SL_UNDO_SNAPSHOT_ALL ? t->saved_fields : t->nfields;
        for (size_t i = 0; i < n; i++)
            sl_buf_printf(&b, "%scoalesce(hashtextextended(" ROW_ALIAS ".%s::text COLLATE \"C\", %zu), %zu)",
                          i ? " # " : "", saved ? t->cols[i] : t->field_cols[i], i, i);
        return sl_buf_take(&b);
    }
    int some = t->kind == SL_UNDO_SNAPSHOT_ALL && t->saved_fields < t->nfields; /* columns added since up */
    if (t->kind != SL_UNDO_SNAPSHOT_COLS && !some)
        return sl_strdup("hashtextextended(" ROW_ALIAS "::text, 0)");
    /* ROW(a, b)::text is the text a row of just those columns had: the same hash */
    sl_buf_adds(&b, "hashtextextended(ROW(");
    size_t n = some ? t->saved_fields : t->ncols;
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(&b, "%s" ROW_ALIAS ".%s", i ? ", " : "", some ? t->field_cols[i] : t->cols[i]);
    sl_buf_adds(&b, ")::text, 0)");
    return sl_buf_take(&b);
}

/* " ORDER BY" the key's columns of the row, qualified: the select list names
 * its text casts after them, and the text's order is not the key's. */
static char *key_order(const sl_keyspec *ks)
{
    sl_buf b = {0};
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, "%s" ROW_ALIAS ".%s", i ? ", " : " ORDER BY ", ks->cols[i]);
    return sl_buf_take(&b);
}

static void build_sql(sl_undo_target *t)
{
    const sl_keyspec *ks = t->ks;
    char *hash = undo_hash_expr(t);
    char *written = sl_asprintf("CASE WHEN %s THEN %s END", WRITTEN, hash);
    /* in key order as the pre-image, so that the two pair up by position
     * (merge_rows); read by a bitmap scan (sl_undo_post_plan_sql) */
    char *order = key_order(ks);
    t->post_sql = range_select(ks, written, TX_JOIN, order);
    free(order);
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
        /* ROW(a, b, ...)::text is row::text's very text, but of the columns the record names
         * (sl_undo_record_bytes): a column dropped while up runs fails the chunk, one added is left out */
        sl_buf b = {0};
        sl_buf_adds(&b, "ROW(");
        for (size_t i = 0; i < t->nfields; i++)
            sl_buf_printf(&b, "%s" ROW_ALIAS ".%s", i ? ", " : "", t->field_cols[i]);
        sl_buf_adds(&b, ")::text");
        t->pre_sql = range_select(ks, b.data, "", "");
        sl_buf_free(&b);
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
    /* snapshot(*) saves these; a down section's rows are hashed over them (undo_hash_expr) */
    if (t->kind == SL_UNDO_SNAPSHOT_ALL || (t->kind == SL_UNDO_DOWN && !undo_is_lite(t))) {
        size_t n = (size_t)ans.results[0].nrows;
        t->field_cols = sl_calloc(n + 1, sizeof(char *));
        t->field_types = sl_calloc(n + 1, sizeof(char *));
        t->field_generated = sl_calloc(n + 1, sizeof(int));
        for (size_t r = 0; r < n; r++) {
            t->field_cols[r] = sl_strdup(sl_answer_val(&ans, 0, (int)r, 1));
            t->field_types[r] = sl_strdup(sl_answer_val(&ans, 0, (int)r, 2));
            t->field_generated[r] = strcmp(sl_answer_val(&ans, 0, (int)r, 3), "true") == 0;
        }
        t->nfields = n;
        t->saved_fields = undo_is_lite(t) ? t->ncols : n;
    }
    if (rc == 0 && undo_is_lite(t)) {
        undo_lite_build(t, &ans);
    } else if (rc == 0) {
        t->col_hash = 1;
        build_sql(t);
    }
    sl_answer_free(&ans);
    if (rc != 0)
        sl_undo_target_free(t);
    return rc;
}

/* Fields in a row type's text form, "(1,abc,"x,y",)": commas outside double
 * quotes, plus one. Inside quotes a backslash takes the next character and
 * "" is a quote (read as leaving and entering again). */
static size_t row_fields(const char *text)
{
    size_t n = 1;
    int quoted = 0;
    for (const char *p = text; *p; p++) {
        if (quoted && *p == '\\' && p[1])
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (!quoted && *p == ',')
            n++;
    }
    return n;
}

size_t sl_undo_saved_fields(const sl_undo_target *t, const sl_snap *snap)
{
    if (t->kind != SL_UNDO_SNAPSHOT_ALL)
        return 0;
    if (snap->ncols) {
        size_t k = 0;
        for (size_t i = 0; i < snap->ncols; i++)
            k += !undo_is_lite(t) || !snap->col_generated[i];
        return k;
    }
    /* PostgreSQL: fields of a saved row's text, generated columns among them;
     * SQLite: the saved literals, one per column that is not generated */
    if (undo_is_lite(t))
        return snap->nvals;
    for (size_t i = 0; i < snap->nrows; i++)
        if (snap->rows[i].has_pre && snap->rows[i].vals[0])
            return row_fields(snap->rows[i].vals[0]);
    return 0;
}

/* Columns a saved row would hold if saved now (see sl_undo_saved_fields). */
static size_t fields_now(const sl_undo_target *t)
{
    size_t now = 0;
    for (size_t i = 0; i < t->nfields; i++)
        now += !undo_is_lite(t) || !t->field_generated[i];
    return now;
}

/* "(a, b, c)" of n names; of a wide table the first few and the count,
 * so that the message keeps room for its hint. malloc'd. */
static char *name_list(char *const *names, size_t n)
{
    enum { SHOWN = 16 };
    sl_buf b = {0};
    sl_buf_addc(&b, '(');
    for (size_t i = 0; i < n && i < SHOWN; i++)
        sl_buf_printf(&b, "%s%s", i ? ", " : "", names[i]);
    if (n > SHOWN)
        sl_buf_printf(&b, ", ... %zu in all", n);
    sl_buf_addc(&b, ')');
    return sl_buf_take(&b);
}

/* Index of the column called name now, or -1. */
static int field_now(const sl_undo_target *t, const char *name)
{
    for (size_t i = 0; i < t->nfields; i++)
        if (same_name(t->ks, t->field_cols[i], name))
            return (int)i;
    return -1;
}

/* A record that names its columns (format 2): they must be the table's
 * first columns now, by name, in their order, generated where they were;
 * columns added since may follow. Anything else would put a saved value
 * into a column of another name: SL_EREFUSED with err, before a row is
 * read. Older records name none: their count is checked instead. */
static int check_names(const sl_undo_target *t, const sl_snap *snap, const char *job, sl_err *err)
{
    size_t i = 0;
    while (i < snap->ncols && i < t->nfields && same_name(t->ks, snap->cols[i], t->field_cols[i]) &&
           !snap->col_generated[i] == !t->field_generated[i])
        i++;
    if (i == snap->ncols)
        return 0;
    const char *dropped = NULL;
    for (size_t j = 0; j < snap->ncols && !dropped; j++)
        if (field_now(t, snap->cols[j]) < 0)
            dropped = snap->cols[j];
    char *saved = name_list(snap->cols, snap->ncols), *now = name_list(t->field_cols, t->nfields);
    sl_err_set(err, "%s: its rows were saved from the columns %s of %s, and it has %s now", job, saved, t->ks->table,
               now);
    free(saved);
    free(now);
    if (dropped) {
        sl_err_append(err,
                      "column %s was dropped since up ran; down puts saved values back only into the columns they "
                      "came from, in the same order (columns added since may follow them)",
                      dropped);
        sl_err_append(err,
                      "hint: add %s back where it was, with its type (ALTER TABLE ... ADD COLUMN puts it last: that "
                      "is where it was only if it was last); or put the rows back by hand from %s; or leave the "
                      "job as it is",
                      dropped, SL_UNDO_TABLE);
    } else {
        sl_err_append(err,
                      "column %s is not where it was when up ran (dropped and added back, or generated then and "
                      "not now, or the reverse); down puts saved values back only into the columns they came from, "
                      "in the same order",
                      snap->cols[i]);
        sl_err_append(err,
                      "hint: a column cannot be moved back into place with ALTER TABLE: put the rows back by "
                      "hand from %s, or leave the job as it is",
                      SL_UNDO_TABLE);
    }
    return SL_EREFUSED;
}

/* Forget t's statements, before they are built again for another shape or hash. */
static void drop_sql(sl_undo_target *t)
{
    free(t->pre_sql);
    free(t->post_sql);
    free(t->state_sql);
    t->pre_sql = t->post_sql = t->state_sql = NULL;
}

void sl_undo_use_hash_of(sl_undo_target *t, const sl_snap *snap)
{
    if (undo_is_lite(t) || t->kind == SL_UNDO_NONE || t->col_hash == snap->col_hash)
        return;
    t->col_hash = snap->col_hash;
    drop_sql(t);
    build_sql(t);
}

int sl_undo_check_saved_rows(const sl_undo_target *t, const sl_snap *snap, const char *job, sl_err *err)
{
    if (t->kind == SL_UNDO_SNAPSHOT_ALL && check_names(t, snap, job, err) != 0)
        return SL_EREFUSED;
    size_t k = sl_undo_saved_fields(t, snap), now = fields_now(t);
    if (k <= now)
        return 0;
    sl_err_set(err,
               "%s: its rows were saved with %zu columns, and %s has %zu now: a column was dropped since up "
               "ran, and snapshot(*) cannot tell which of the saved values belonged to it",
               job, k, t->ks->table, now);
    sl_err_append(err, "hint: to roll back, add the column back where it was, with its name and type (ALTER "
                       "TABLE ... ADD COLUMN puts it last: that is where it was only if it was last); or leave "
                       "the job as it is");
    return SL_EREFUSED;
}

int sl_undo_fit_saved_rows(sl_undo_target *t, const sl_snap *snap, const char *job, int *said, sl_err *err)
{
    if (t->kind != SL_UNDO_SNAPSHOT_ALL)
        return 0;
    int lite = undo_is_lite(t);
    size_t k = sl_undo_saved_fields(t, snap), now = fields_now(t);
    if (check_names(t, snap, job, err) != 0)
        return SL_EREFUSED;
    if (k == 0 || k == t->saved_fields)
        return 0;
    if (k > now)
        return sl_undo_check_saved_rows(t, snap, job, err);
    for (size_t i = 0; i < t->ncols; i++) {
        free(t->cols[i]);
        free(t->types[i]);
    }
    t->ncols = 0;
    for (size_t i = 0, seen = 0; i < t->nfields && seen < k; i++) {
        if (!lite || !t->field_generated[i])
            seen++;
        if (t->field_generated[i])
            continue;
        t->cols = sl_realloc(t->cols, (t->ncols + 1) * sizeof(char *));
        t->types = sl_realloc(t->types, (t->ncols + 1) * sizeof(char *));
        t->cols[t->ncols] = sl_strdup(t->field_cols[i]);
        t->types[t->ncols] = sl_strdup(t->field_types[i]);
        t->ncols++;
    }
    t->saved_fields = k;
    drop_sql(t);
    if (lite)
        undo_lite_build(t, NULL);
    else
        build_sql(t);
    if (said && !*said)
        sl_info("%s: its rows were saved with %zu columns, and %s has %zu now: down puts back those %zu and leaves "
                "the %zu added since (rows it updates keep their values there, rows it inserts get their defaults)",
                job, k, t->ks->table, now, k, now - k);
    if (said)
        *said = 1;
    return 0;
}

char *undo_pad_row(const sl_undo_target *t, const char *row_text)
{
    if (t->kind != SL_UNDO_SNAPSHOT_ALL || undo_is_lite(t) || !row_text)
        return NULL;
    size_t k = row_fields(row_text), len = strlen(row_text);
    if (k >= t->nfields || len == 0 || row_text[len - 1] != ')')
        return NULL; /* as it is: the cast says what is wrong with it */
    size_t pad = t->nfields - k;
    char *out = sl_malloc(len + pad + 1);
    memcpy(out, row_text, len - 1);
    memset(out + len - 1, ',', pad);
    out[len - 1 + pad] = ')';
    out[len + pad] = '\0';
    return out;
}

/* ---- capture (inside an up chunk) ---- */

static size_t sort_nkey; /* qsort has no context argument; single-threaded */

static int keyed_cmp(const void *a, const void *b)
{
    return sl_snap_key_cmp(((const undo_keyed *)a)->key, ((const undo_keyed *)b)->key, sort_nkey);
}

undo_keyed *undo_sort_rows(const sl_result *res, size_t nkey)
{
    undo_keyed *k = sl_calloc((size_t)(res ? res->nrows : 0) + 1, sizeof *k);
    for (int r = 0; res && r < res->nrows; r++)
        k[r] = (undo_keyed){&res->vals[(size_t)r * (size_t)res->ncols], r};
    sort_nkey = nkey;
    if (res && res->nrows > 1)
        qsort(k, (size_t)res->nrows, sizeof *k, keyed_cmp);
    return k;
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
    if (lite && pi >= 0 && qi >= 0 && undo_hash_at(pre, pi, n) == undo_hash_at(post, qi, n))
        return;
    sl_snap_row *row = &s->rows[s->nrows++];
    const sl_result *src = pi >= 0 ? pre : post;
    row->key = &src->vals[(size_t)(pi >= 0 ? pi : qi) * (size_t)src->ncols];
    row->has_post = qi >= 0;
    row->post_hash = qi >= 0 ? undo_hash_at(post, qi, n) : 0;
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
    undo_keyed *a = undo_sort_rows(pre, s->nkey), *b = undo_sort_rows(post, s->nkey);
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

char *sl_undo_record_bytes(const sl_undo_target *t, int64_t chunk_no, const sl_result *pre, const sl_result *post,
                           size_t *len)
{
    sl_snap s = {0};
    s.chunk_no = chunk_no;
    snprintf(s.kind, sizeof s.kind, "%s", kind_tag(t->kind));
    s.nkey = t->ks->ncols;
    s.nvals = undo_saved_vals(t);
    s.col_hash = t->col_hash;
    if (t->kind == SL_UNDO_SNAPSHOT_ALL) {
        /* the columns the rows are saved from (pre_sql selects these, by name), for down to check
         * that they are still there, in this order (check_names) */
        s.ncols = t->nfields;
        s.cols = t->field_cols;
        s.col_generated = t->field_generated;
    }
    /* the down way on PostgreSQL has no pre-image: xmin tells the rows written */
    merge_rows(&s, undo_is_lite(t), t->kind == SL_UNDO_DOWN && !undo_is_lite(t) ? NULL : pre, post);
    sl_buf blob = {0};
    sl_snap_encode(&s, &blob);
    free(s.rows); /* the strings belong to the results */
    *len = blob.len;
    return blob.data ? blob.data : sl_strdup("");
}

char *sl_undo_record(const sl_undo_target *t, int64_t chunk_no, const sl_result *pre, const sl_result *post)
{
    size_t len;
    char *blob = sl_undo_record_bytes(t, chunk_no, pre, post, &len);
    static const char digits[] = "0123456789abcdef";
    char *hex = sl_malloc(2 * len + 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)blob[i];
        hex[2 * i] = digits[c >> 4];
        hex[2 * i + 1] = digits[c & 15];
    }
    hex[2 * len] = '\0';
    free(blob);
    return hex;
}

/* Run in the chunk's transaction before the post-image: the up statements
 * left each row of the range two versions, its old one (gone for this
 * transaction) and its new one, and an index scan fetches both, one at a
 * time, in key order; a bitmap scan reads each page once, and the post-image
 * then costs about a fifth less. Transaction-local: it ends at the COMMIT,
 * and between the two only sluice's own statements run. */
const char *sl_undo_post_plan_sql(void)
{
    return "SELECT set_config('enable_indexscan', 'off', true)";
}

const char *sl_undo_store_sql(void)
{
    return "INSERT INTO " SL_UNDO_TABLE " (job, chunk_no, record) VALUES ($1, $2, $3)";
}

const char *sl_undo_take_sql(void)
{
    /* PostgreSQL reads it in binary (sl_undo_record_len), SQLite keeps hex text */
    return "DELETE FROM " SL_UNDO_TABLE " WHERE job = $1 AND chunk_no = $2 RETURNING record";
}

/* Each byte's value as a hex digit, or -1: one load per digit, where a
 * chain of comparisons was half of reading a record. */
static signed char hex_value[256];

static void hex_init(void)
{
    if (hex_value['1'] == 1)
        return;
    memset(hex_value, -1, sizeof hex_value);
    for (int i = 0; i < 10; i++)
        hex_value['0' + i] = (signed char)i;
    for (int i = 0; i < 6; i++)
        hex_value['a' + i] = hex_value['A' + i] = (signed char)(10 + i);
}

/* The record as stored: bytes (PostgreSQL's bytea, read in binary) or, with
 * len -1, hex text (SQLite's). */
static int record_read(const sl_undo_target *t, int64_t chunk_no, const char *data, long long len, int check_shape,
                       sl_snap *out, sl_err *err)
{
    memset(out, 0, sizeof *out);
    int bad = 0;
    if (len >= 0) {
        bad = sl_snap_decode(data, (size_t)len, out) != 0;
    } else {
        const char *text = data;
        size_t tlen = strlen(text);
        unsigned char *blob = sl_malloc(tlen / 2 + 1);
        bad = tlen % 2 != 0;
        hex_init();
        for (size_t i = 0; !bad && i < tlen; i += 2) {
            int hi = hex_value[(unsigned char)text[i]], lo = hex_value[(unsigned char)text[i + 1]];
            bad = hi < 0 || lo < 0;
            if (!bad) /* hi is -1 for a digit that is not hex: shifting it is undefined */
                blob[i / 2] = (unsigned char)(hi << 4 | lo);
        }
        bad = bad || sl_snap_decode(blob, tlen / 2, out) != 0;
        free(blob);
    }
    if (bad) {
        sl_err_set(err, "the undo record of chunk %" PRId64 " in %s is damaged: it cannot be read", chunk_no,
                   SL_UNDO_TABLE);
        return -1;
    }
    out->chunk_no = chunk_no;
    snprintf(out->kind, sizeof out->kind, "%s", kind_tag(t->kind));
    /* its shape before any value is read: a record saved for other columns would restore the wrong ones
     * (SQLite's snapshot(*) saves a value per column the table had: fewer when columns were added since,
     * which down fits chunk by chunk, sl_undo_fit_saved_rows) */
    int whole_rows = t->kind == SL_UNDO_SNAPSHOT_ALL && undo_is_lite(t);
    if (out->col_hash && undo_is_lite(t)) {
        /* only PostgreSQL hashes by column: SQLite's down would compare other hashes */
        sl_err_set(err,
                   "the undo record of chunk %" PRId64 " in %s hashes its rows column by column, as sluice does "
                   "on PostgreSQL, and this is a SQLite database: it was saved for another database",
                   chunk_no, SL_UNDO_TABLE);
        sl_snap_free(out);
        return -1;
    }
    if (check_shape && (out->nkey != t->ks->ncols || (out->nvals != undo_saved_vals(t) && !whole_rows))) {
        sl_err_set(err,
                   "the undo record of chunk %" PRId64
                   " holds %zu key and %zu saved columns, but the job's key has %zu "
                   "and its undo saves %zu: it was saved for another version of the job",
                   chunk_no, out->nkey, out->nvals, t->ks->ncols, undo_saved_vals(t));
        sl_snap_free(out);
        return -1;
    }
    return 0;
}

int sl_undo_record_decode(const sl_undo_target *t, int64_t chunk_no, const char *data, long long len, sl_snap *out,
                          sl_err *err)
{
    return record_read(t, chunk_no, data, len, 1, out, err);
}

int sl_undo_record_read(const sl_undo_target *t, int64_t chunk_no, const char *data, long long len, sl_snap *out,
                        sl_err *err)
{
    return record_read(t, chunk_no, data, len, 0, out, err);
}

long long sl_undo_record_len(const sl_result *res, int row)
{
    return res->lens ? res->lens[(size_t)row * (size_t)res->ncols + (size_t)(res->ncols - 1)] : -1;
}

char *undo_snapshot_words(sl_undo_kind kind, char *const *cols, size_t n)
{
    if (kind == SL_UNDO_SNAPSHOT_ALL)
        return sl_strdup("snapshot(*)");
    if (kind != SL_UNDO_SNAPSHOT_COLS)
        return sl_strdup("");
    sl_buf b = {0};
    sl_buf_adds(&b, "snapshot(");
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(&b, "%s%s", i ? ", " : "", cols[i]);
    sl_buf_addc(&b, ')');
    return sl_buf_take(&b);
}

char *sl_undo_identity(const sl_undo_target *t)
{
    return undo_snapshot_words(t->kind, t->cols, t->ncols);
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
        undo_add_array_elem(&names, name);
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
