/* catalog_internal.h: what the PostgreSQL and SQLite catalogs share. */
#ifndef SLUICE_CATALOG_INTERNAL_H
#define SLUICE_CATALOG_INTERNAL_H

#include "sluice/db/catalog.h"

/* Does idx_cols (names joined by \x01) start with the key's column names?
 * nocase: compare as SQLite does, ignoring ASCII case. */
int catalog_index_walks_key(const char *idx_cols, char *const *names, size_t n, int nocase);
/* Are all of the index's columns among the key's? A unique index on them
 * makes the key unique. */
int catalog_index_within_key(const char *idx_cols, char *const *names, size_t n, int nocase);

/* catalog_lite.c: sl_catalog_resolve, sl_catalog_count_ahead and sl_catalog_estimate_spans on SQLite. */
int catalog_resolve_lite(sl_session *sess, const sl_job *job, sl_table_info *info, sl_err *err) SL_MUSTCHECK;
void catalog_count_ahead_lite(sl_session *sess, const sl_keyspec *ks);
int64_t catalog_estimate_spans_lite(sl_session *sess, const sl_keyspec *ks, const sl_key_span *spans, size_t n);

/* The queries of an estimate over n key spans: `lead` slots left for the
 * caller, then per span prefix + "SELECT what FROM table WHERE <span>" with
 * its parameters (after's columns, then until's). */
typedef struct catalog_spans {
    sl_query *q;
    char **sql; /* each query's text, freed by catalog_spans_free */
    const char **params;
    size_t nq; /* lead + n */
} catalog_spans;
void catalog_spans_build(catalog_spans *s, const sl_keyspec *ks, const sl_key_span *spans, size_t n, size_t lead,
                         const char *prefix, const char *what);
void catalog_spans_free(catalog_spans *s);

#endif
