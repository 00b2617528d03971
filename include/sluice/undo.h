/* undo.h: how a job's chunks are undone: what `up` saves inside each chunk, and what `down` sends to put it back.
 *
 * Every job with a way back (SPEC `undo`) records, inside each up chunk's
 * transaction and before it commits, an undo record in the checkpoint file
 * (snapshot.h): a hash of every row the chunk left, and for snapshot(...) the
 * old values. `down` compares the hashes with the rows as they are now, so a
 * row another session changed since is never overwritten silently.
 *
 * PostgreSQL tells the rows a chunk wrote by xmin and saves values as their
 * text form; SQLite (undo_lite.c) reads each chunk's range before and after
 * the up statements, keeps the rows whose hash changed, and saves values as
 * quote() literals. */
#ifndef SLUICE_UNDO_H
#define SLUICE_UNDO_H

#include "sluice/catalog.h"
#include "sluice/ckpt.h"
#include "sluice/cli.h"
#include "sluice/snapshot.h"

/* What a job saves and how it restores, resolved against the live table. */
typedef struct sl_undo_target {
    sl_undo_kind kind;
    const sl_keyspec *ks; /* borrowed: outlives the target */
    size_t ncols;         /* restored columns: the snapshot's, or every non-generated column for snapshot(*) */
    char **cols;          /* quoted names */
    char **types;         /* format_type() of each; SQLite: the declared type */
    char *pre_sql;        /* rows before the up statements ($1.. = lo, then hi); NULL for the down way on PostgreSQL */
    char *post_sql;       /* keys and hashes after them (same parameters) */
    char *state_sql;      /* post_sql FOR UPDATE (SQLite: post_sql): the rows as `down` finds them */
} sl_undo_target;

/* Resolve job's undo against info (kind NONE gives a zeroed target and 0).
 * Errors name the job file and line: a snapshot column that does not exist
 * or is part of the key, a snapshot over a key that is not unique (rows are
 * put back by key). With the down way over a non-unique key no hashes are
 * recorded (post_sql NULL): conflicts cannot be told row by row. */
int sl_undo_resolve(sl_session *sess, const sl_job *job, const sl_table_info *info, sl_undo_target *t,
                    sl_err *err) SL_MUSTCHECK;
void sl_undo_target_free(sl_undo_target *t);

/* Inside an up chunk (its transaction still open): build the chunk's undo
 * record from the pre_sql result (NULL when there is no pre_sql) and the
 * post_sql result, and store it durably as chunk_no's record. Rows the chunk
 * did not change are left out. */
int sl_undo_save(const sl_undo_target *t, sl_ckpt *ckpt, int64_t chunk_no, const sl_result *pre, const sl_result *post,
                 sl_err *err) SL_MUSTCHECK;

/* One down chunk, worked out from its record and the rows as they are now
 * (state_sql's result). */
typedef struct sl_undo_step {
    size_t nconflicts; /* rows changed by someone else since the chunk ran */
    char *conflicts;   /* the first of their keys, readable, or NULL */
    size_t nlost;      /* rows the job deleted that snapshot(COL, ...) cannot bring back */
    int64_t restored;  /* rows written back */
    size_t nq;         /* restore statements (DELETE, UPDATE, INSERT), none for the down way; on SQLite
                          the values are inlined as literals and the caller binds the chunk's edges (lo,
                          then hi, as for state_sql): q[i].nparams is 0 */
    sl_pg_query q[3];
    char *sql[3];
    char **params[3];
} sl_undo_step;

/* Classify every row of snap against cur and, unless mode is stop and there
 * are conflicts, build the statements that restore the chunk's rows (skip:
 * all but the conflicting ones; overwrite: all). */
void sl_undo_plan_chunk(const sl_undo_target *t, const sl_snap *snap, const sl_result *cur, sl_on_conflict mode,
                        sl_undo_step *out);
void sl_undo_step_free(sl_undo_step *s);

/* "down section", "snapshot(full_name)", ... for messages. malloc'd. */
char *sl_undo_describe_kind(const sl_job *job);

/* For `plan`: print how the job rolls back and the space its undo records
 * will take in the checkpoint file (rows x average widths: from pg_stats, on
 * SQLite from a sample of 1000 rows). */
void sl_undo_plan_print(sl_session *sess, const sl_job *job, const sl_keyspec *ks, int64_t rows);

#endif
