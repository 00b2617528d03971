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

/* One restore statement over the rows of ?1, a JSON array of rows, each an
 * array of quote() literals in hex (read back by sluice_unquote): DELETE:
 * the keys; UPDATE: keys then saved values; INSERT: saved values. The DELETE
 * also takes the chunk's edges as ?2.. (lo, then hi). NULL when there is
 * nothing to set (every saved column is in the key). malloc'd. */
char *undo_lite_restore_sql(const sl_undo_target *t, undo_restore which);

/* For `plan`: average length of the saved columns' literals over a sample
 * of up to 1000 rows, or -1 (no rows, or the columns cannot be read). */
int64_t undo_lite_avg_width(sl_session *sess, const sl_job *job, const sl_keyspec *ks);

#endif
