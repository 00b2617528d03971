/* undo_internal.h: what undo.c (shared logic, PostgreSQL SQL) and undo_lite.c (SQLite SQL) share. */
#ifndef SLUICE_UNDO_INTERNAL_H
#define SLUICE_UNDO_INTERNAL_H

#include "sluice/engine/undo.h"

#define SL_UNDO_ROW_ALIAS "_sl_row"

/* The restore statements of a down chunk, in the order they run. */
typedef enum undo_restore { UNDO_RESTORE_DELETE, UNDO_RESTORE_UPDATE, UNDO_RESTORE_INSERT } undo_restore;

/* Every column of ks's table, in the shape undo.c reads on both backends:
 * name, quoted name, declared type, generated ("true"/"false"). Hidden
 * columns of virtual tables are left out. 0, or -1 with err set. */
int undo_lite_columns(sl_session *sess, const sl_keyspec *ks, sl_answer *ans, sl_err *err) SL_MUSTCHECK;

/* Fill t's pre_sql, post_sql and state_sql. cols is undo_lite_columns()'s
 * answer: the whole-row hash covers all of them. Every query selects the
 * key columns as quote() literals, then sluice_hash() over what `down`
 * compares, then (pre_sql of a snapshot) the saved columns as quote()
 * literals, which put back exactly, type included. */
void undo_lite_build(sl_undo_target *t, const sl_answer *cols);

/* One restore statement over the rows of $1, a JSON array of rows, each an
 * array of quote() literals in hex (read back by sluice_unquote): DELETE:
 * the keys; UPDATE: keys then saved values; INSERT: saved values. The DELETE
 * also takes the chunk's edges as $2.. (lo, then hi). NULL when there is
 * nothing to set (every saved column is in the key). malloc'd. */
char *undo_lite_restore_sql(const sl_undo_target *t, undo_restore which);

/* For `plan`: average length of the saved columns' literals over a sample
 * of up to 1000 rows, or -1 (no rows, or the columns cannot be read). */
int64_t undo_lite_avg_width(sl_session *sess, const sl_job *job, const sl_keyspec *ks);

/* What undo.c and undo_restore.c share: how a chunk's rows are read. */
static inline int undo_is_lite(const sl_undo_target *t)
{
    return t->ks->dialect == SL_DIALECT_SQLITE;
}

/* Values saved per row: snapshot(COL, ...) one per column; snapshot(*) the
 * whole row as one text on PostgreSQL, one literal per column on SQLite. */
static inline size_t undo_saved_vals(const sl_undo_target *t)
{
    if (t->kind == SL_UNDO_SNAPSHOT_COLS)
        return t->ncols;
    if (t->kind == SL_UNDO_SNAPSHOT_ALL)
        return undo_is_lite(t) ? t->ncols : 1;
    return 0;
}

/* A hash as the server printed it: [-]digits of a bigint. Read here rather
 * than with strtoll, which was a sixth of the runner's time in a chunk with
 * an undo record (a thousand calls a chunk, each through the locale). */
static inline int64_t undo_hash_at(const sl_result *res, int row, size_t col)
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

typedef struct undo_keyed {
    char *const *key; /* points into a result's row */
    int row;
} undo_keyed;

/* The rows of res ordered by their first nkey columns (undo.c); malloc'd. */
undo_keyed *undo_sort_rows(const sl_result *res, size_t nkey);

/* PostgreSQL: the hash of what `down` would overwrite in the row ROW_ALIAS
 * (the saved columns, or the whole row), as post_sql records it. malloc'd. */
char *undo_hash_expr(const sl_undo_target *t);

/* snapshot(*) on PostgreSQL, a row saved before columns were added
 * (sl_undo_fit_saved_rows; or a chunk older than the rest, when they were
 * added while up ran): row_text with an empty (NULL) field for each column
 * it lacks, so that it reads as the table's row type now; malloc'd. NULL
 * when it needs none. */
char *undo_pad_row(const sl_undo_target *t, const char *row_text);

/* "snapshot(*)", "snapshot(a, b)" with the n names given, or "" for another
 * kind. malloc'd. */
char *undo_snapshot_words(sl_undo_kind kind, char *const *cols, size_t n);

/* Append v as one element of a text[] literal (undo_restore.c). */
void undo_add_array_elem(sl_buf *b, const char *v);

#endif
