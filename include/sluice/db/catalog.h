/* catalog.h: what a job needs to know about the live database: table, key, index, row estimates. */
#ifndef SLUICE_CATALOG_H
#define SLUICE_CATALOG_H

#include "sluice/db/session.h"
#include "sluice/jobs/job.h"
#include "sluice/jobs/keys.h"

/* PostgreSQL: the start of a query over the table named by parameter $1
 * (text) and, when it is a partitioned (or inheritance) parent, every table
 * under it, at every level: their oids as rel in sluice_tree (a NULL rel
 * when there is no such table). A partitioned parent has no pages or row
 * counts of its own; its partitions' add up to its. */
#define SL_PG_TABLE_TREE                                              \
    "WITH RECURSIVE sluice_tree(rel) AS (SELECT to_regclass($1)::oid" \
    " UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN sluice_tree t ON i.inhparent = t.rel) "

typedef struct sl_table_info {
    sl_keyspec ks;    /* resolved table and key */
    char *index;      /* a valid btree index whose leading columns are the key, or NULL */
    int nullable_key; /* some key column allows NULL: those rows are never visited */
    int unique_key;   /* a unique index covers the key: each key value is one row */
    int row_security; /* PostgreSQL: row-level security is on for it: a 42501 may be one row's (a policy's
                         WITH CHECK), not the role's */
} sl_table_info;

void sl_table_info_free(sl_table_info *info);

/* Resolve job's table and key (its key directive, else the primary key)
 * against the database and find an index that walks it. Errors name the job
 * file and line and say what is missing: table not found, column not found,
 * no key and no primary key. A missing index is not an error here (info->index
 * is NULL); callers decide. */
int sl_catalog_resolve(sl_session *sess, const sl_job *job, sl_table_info *info, sl_err *err) SL_MUSTCHECK;

/* An estimate of the rows the job walks (table, where), or a negative
 * number when there is none: on PostgreSQL the live rows its statistics
 * count, times the share of them the planner expects the where to keep; on
 * SQLite a count. SL_CATALOG_NO_STATS: the planner has no statistics for
 * the table (or one of its partitions): never analyzed, its guess from
 * fixed defaults would be no estimate (`ANALYZE TABLE` gives one); -1: it
 * cannot tell otherwise. */
#define SL_CATALOG_NO_STATS (-2)
int64_t sl_catalog_estimate_rows(sl_session *sess, const sl_keyspec *ks);

/* A key range: the keys after `after` (NULL: from the first) up to and
 * including `until` (NULL: to the last), the key's columns as text. */
typedef struct sl_key_span {
    const char *const *after;
    const char *const *until;
} sl_key_span;

/* The same over n key ranges (what a resumed walk has left), summed (or
 * negative, as above). */
int64_t sl_catalog_estimate_spans(sl_session *sess, const sl_keyspec *ks, const sl_key_span *spans, size_t n);

/* On SQLite, start counting what a fresh walk of ks covers on a second
 * connection (see sl_lite_ahead_start), for the estimate to take when the
 * walk begins, instead of counting then; sl_catalog_count_ahead_drop ends
 * it unused. Nothing on PostgreSQL, whose estimate reads no row. */
void sl_catalog_count_ahead(sl_session *sess, const sl_keyspec *ks);
void sl_catalog_count_ahead_drop(sl_session *sess);

/* Normalise an identifier as PostgreSQL folds it: "Quoted" keeps its case
 * (and loses the quotes and doubled quotes), unquoted is lower-cased. malloc'd. */
char *sl_catalog_fold_ident(const char *ident);
/* The same quoted once, for a message naming a column as the job file
 * writes it: "Id" for "Id", "id" for Id (the name that was looked for). */
char *sl_catalog_shown_ident(const char *ident);

/* SQLite: split "schema.table" (either part may be quoted) at its unquoted
 * dot into the names pragmas take (schema "main" when none). malloc'd. */
void sl_catalog_split_name(const char *name, char **schema, char **table);

#endif
