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

/* catalog_lite.c: sl_catalog_resolve and sl_catalog_estimate_spans on SQLite. */
int catalog_resolve_lite(sl_session *sess, const sl_job *job, sl_table_info *info, sl_err *err) SL_MUSTCHECK;
int64_t catalog_estimate_spans_lite(sl_session *sess, const sl_keyspec *ks, const sl_key_span *spans, size_t n);

/* A span's parameters (after's columns, then until's) into params; how many. */
int catalog_span_params(const sl_keyspec *ks, const sl_key_span *span, const char **params);

#endif
