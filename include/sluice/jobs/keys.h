/* keys.h: a job's resolved key and the SQL that walks it (chunk boundaries, range predicates). */
#ifndef SLUICE_KEYS_H
#define SLUICE_KEYS_H

#include "sluice/base/util.h"

typedef enum sl_dialect { SL_DIALECT_PG, SL_DIALECT_SQLITE } sl_dialect;

#define SL_MAX_KEY_COLS 8

/* The key as resolved against the live database. All strings are owned. */
typedef struct sl_keyspec {
    sl_dialect dialect;
    char *table; /* quoted, schema-qualified name as the server prints it */
    size_t ncols;
    char *cols[SL_MAX_KEY_COLS];  /* quoted identifiers */
    char *types[SL_MAX_KEY_COLS]; /* PostgreSQL: format_type() output, e.g. "bigint"; SQLite: declared type or "" */
    char *where;                  /* the job's where clause, or NULL */
    int rowid_alias;              /* SQLite: the key is the table's INTEGER PRIMARY KEY, its rowid */
} sl_keyspec;

void sl_keyspec_free(sl_keyspec *ks);

/* SQL that finds the next chunk: the first and last key of the next `limit`
 * rows (in key order, matching where) strictly after a given key, and how
 * many there are. It reads at most `limit` index entries.
 *
 * With after_param = 0 it starts at the beginning of the table and has one
 * parameter: $1 = limit. With after_param = 1 it has ncols + 1 parameters:
 * $1..$n = the previous chunk's last key (text), $n+1 = limit.
 *
 * The result has zero rows (nothing left) or one row of 2*ncols + 1 text
 * columns: first key's columns, last key's columns, row count. malloc'd. */
char *sl_keys_boundary_sql(const sl_keyspec *ks, int after_param);

/* The same within a key range: with after_param the keys after $1..$n, with
 * until_param those up to and including the next n parameters; LIMIT is the
 * parameter after them. For workers walking a range each (up_chunk.c). */
char *sl_keys_boundary_range_sql(const sl_keyspec *ks, int after_param, int until_param);

/* "SELECT what FROM table WHERE ..." over the rows of a key range that
 * match where: the keys after $1..$n with after_param, up to and including
 * the next n parameters with until_param. For estimating and counting what a
 * walk has left. malloc'd. */
char *sl_keys_span_sql(const sl_keyspec *ks, const char *what, int after_param, int until_param);

/* SQL for the key's last value (its highest, by the index's order): no
 * row when the table has none with a key, else one row of ncols text
 * columns. The end of a job's walk (README "A job ends"). No parameters;
 * the where clause does not apply (any row past it is not the job's).
 * malloc'd. */
char *sl_keys_last_sql(const sl_keyspec *ks);

/* The SQL that :lo and :hi stand for in a chunk statement, bound to
 * parameters $first..$first+ncols-1 (lo) and the next ncols (hi), with casts
 * to the key's types on PostgreSQL. Single key: "$1::bigint"; composite:
 * "($1::integer, $2::text)". malloc'd. */
char *sl_keys_placeholder_sql(const sl_keyspec *ks, int first_param);

struct sl_stmt;
/* A chunk statement as sent: its :lo as $1.. and its :hi as the next ncols
 * parameters (from $1 when it has no :lo), placeholder SQL as above; it
 * binds (uses_lo + uses_hi) * ncols of them. malloc'd. */
char *sl_keys_stmt_sql(const sl_keyspec *ks, const struct sl_stmt *st);

/* "(a, b) BETWEEN <lo> AND <hi>" style predicate over the key (plus the
 * where clause when with_where), with lo bound at $first.. and hi right
 * after. Used for counting and for snapshots. malloc'd. */
char *sl_keys_range_predicate(const sl_keyspec *ks, int first_param, int with_where);

/* "a, b" (ORDER BY / select list). malloc'd. */
char *sl_keys_column_list(const sl_keyspec *ks);

/* Quote an identifier the way the dialect wants it ("x""y"). malloc'd. */
char *sl_quote_ident(const char *ident);

#endif
