/* undo.h: how a job's chunks are undone: what `up` saves inside each chunk, and what `down` sends to put it back.
 *
 * Every job with a way back (README "Rolling back") records, inside each up
 * chunk's transaction, an undo record in the target database's sluice_undo
 * (snapshot.h is its form): a hash of every row the chunk left, and for
 * snapshot(...) the old values. It commits with the chunk or not at all, and
 * a `down` chunk deletes it in the transaction that puts the rows back.
 * `down` compares the hashes with the rows as they are now, so a row another
 * session changed since is never overwritten silently.
 *
 * PostgreSQL tells the rows a chunk wrote by xmin and saves values as their
 * text form; SQLite (undo_lite.c) reads each chunk's range before and after
 * the up statements, keeps the rows whose hash changed, and saves values as
 * quote() literals. */
#ifndef SLUICE_UNDO_H
#define SLUICE_UNDO_H

#include "sluice/checkpoints/snapshot.h"
#include "sluice/db/catalog.h"
#include "sluice/engine/run.h"

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
    /* snapshot(*) (and a down section on PostgreSQL, for its hash): every
     * column of the table now, and how many a saved row
     * holds: on PostgreSQL the row type's text has a field per column,
     * generated ones too; on SQLite a literal per column that is not
     * generated. Columns added since up come last (sl_undo_fit_saved_rows);
     * snapshot(*) records name the columns they saved (snapshot.h). */
    size_t nfields;       /* the table's columns now, generated ones included */
    size_t saved_fields;  /* what a saved row holds: all of them, or fewer (columns added since up) */
    char **field_cols;    /* nfields quoted names, in the row's order */
    char **field_types;   /* their format_type() */
    int *field_generated; /* their attgenerated, as 0/1 */
    /* PostgreSQL: 1 (what up records) hashes each column's text on its own
     * (snapshot(COL, ...) the saved ones; snapshot(*) the saved_fields
     * first field_cols; a down section every one), cheaper than the row
     * form that records of formats 1 and 2 hold (0, sl_undo_use_hash_of) */
    int col_hash;
} sl_undo_target;

/* Resolve job's undo against info (kind NONE gives a zeroed target and 0).
 * Errors name the job file and line: a snapshot column that does not exist
 * or is part of the key, a snapshot over a key that is not unique (rows are
 * put back by key). With the down way over a non-unique key no hashes are
 * recorded (post_sql NULL): conflicts cannot be told row by row. */
int sl_undo_resolve(sl_session *sess, const sl_job *job, const sl_table_info *info, sl_undo_target *t,
                    sl_err *err) SL_MUSTCHECK;
void sl_undo_target_free(sl_undo_target *t);

/* Have t hash as a PostgreSQL record of snap's form does (sl_snap.col_hash):
 * `down` of a job whose chunks an older sluice recorded. Rebuilds t's
 * statements. */
void sl_undo_use_hash_of(sl_undo_target *t, const sl_snap *snap);

/* snapshot(*): how many columns the rows of snap were saved with (0 when
 * it tells nothing: an older record with no row saved, another kind). */
size_t sl_undo_saved_fields(const sl_undo_target *t, const sl_snap *snap);

/* snapshot(*): SL_EREFUSED with err, naming the columns saved and the
 * table's now, when the rows of snap cannot be put back into the columns
 * they came from: the record names its columns (snapshot.h) and they are
 * not the table's first ones now, by name and in order (one was dropped,
 * or dropped and added back last); or, in an older record without names,
 * the rows hold more columns than the table has now. Else 0. */
int sl_undo_check_saved_rows(const sl_undo_target *t, const sl_snap *snap, const char *job, sl_err *err) SL_MUSTCHECK;

/* snapshot(*), before `down` reads any row: fit t to rows saved as snap (a
 * record of the job, read with sl_undo_record_read) has them. With fewer
 * columns than the table has now (columns were added since up ran, after
 * the saved ones), t restores and compares the ones they hold only: the
 * added columns keep their values in rows put back by UPDATE and get their
 * defaults in rows put back by INSERT. Rows that sl_undo_check_saved_rows
 * refuses are refused the same way (SL_EREFUSED with err). 0 otherwise
 * (nothing to do for other kinds). It says what it does unless *said, and
 * sets *said. */
int sl_undo_fit_saved_rows(sl_undo_target *t, const sl_snap *snap, const char *job, int *said,
                           sl_err *err) SL_MUSTCHECK;

/* Inside an up chunk (its transaction still open): chunk_no's undo record,
 * built from the pre_sql result (NULL when there is no pre_sql) and the
 * post_sql result, as *len bytes to bind as sl_undo_store_sql's $3 in binary
 * format (PostgreSQL's bytea). Rows the chunk did not change are left out.
 * malloc'd. */
char *sl_undo_record_bytes(const sl_undo_target *t, int64_t chunk_no, const sl_result *pre, const sl_result *post,
                           size_t *len);

/* The same record as hex text: the $3 on SQLite, which keeps records as text. */
char *sl_undo_record(const sl_undo_target *t, int64_t chunk_no, const sl_result *pre, const sl_result *post);

/* PostgreSQL: the statement an up chunk runs just before post_sql, which
 * has post_sql read the range by a bitmap scan (undo.c says why). */
const char *sl_undo_post_plan_sql(void);

/* The statement that stores a chunk's record in sluice_undo, inside the
 * chunk's transaction: $1 job, $2 chunk_no, $3 the record. */
const char *sl_undo_store_sql(void);

/* Inside a down chunk: delete chunk $2's record of job $1 and return it
 * (one row, one column, or no row when it has none). On PostgreSQL send it
 * with binary_result: the record comes as its bytes. */
const char *sl_undo_take_sql(void);

/* Read a record: len bytes at data (PostgreSQL's, read in binary), or with
 * len -1 the hex text SQLite keeps; sl_undo_record_len tells which a result
 * holds. The shape is checked against t (key columns, saved columns) before
 * any value is read: a record saved by another version of the job is
 * refused. 0, or -1 with err. */
int sl_undo_record_decode(const sl_undo_target *t, int64_t chunk_no, const char *data, long long len, sl_snap *out,
                          sl_err *err) SL_MUSTCHECK;
/* The same without the shape check: for sl_undo_fit_saved_rows. */
int sl_undo_record_read(const sl_undo_target *t, int64_t chunk_no, const char *data, long long len, sl_snap *out,
                        sl_err *err) SL_MUSTCHECK;
/* The length of the record in the last column of res's row: its bytes in a
 * binary result, -1 (hex text) in a text one. */
long long sl_undo_record_len(const sl_result *res, int row);

/* What the job saves, as fixed by its first chunk (run.h identity):
 * "snapshot(a, b)" with the quoted column names, "snapshot(*)", or "" (the
 * down section, or nothing). malloc'd. */
char *sl_undo_identity(const sl_undo_target *t);

/* One down chunk, worked out from its record and the rows as they are now
 * (state_sql's result). */
typedef struct sl_undo_step {
    size_t nconflicts; /* rows changed by someone else since the chunk ran */
    char *conflicts;   /* the first of their keys, readable, or NULL */
    size_t nlost;      /* rows the job deleted that snapshot(COL, ...) cannot bring back */
    size_t ngone;      /* rows deleted since the job wrote them (overwrite): snapshot(COL, ...) cannot either */
    size_t nkept;      /* rows the job inserted that snapshot(COL, ...) leaves in place */
    int64_t restored;  /* rows written back */
    size_t nq;         /* restore statements (DELETE, UPDATE, INSERT), none for the down way; every value
                          is a bound parameter (on SQLite one JSON array, and the DELETE the chunk's edges) */
    sl_query q[3];
    char *sql[3];
    char **params[3];
} sl_undo_step;

/* Classify every row of snap against cur and, unless mode is stop and there
 * are conflicts, build the statements that restore the chunk's rows (skip:
 * all but the conflicting ones; overwrite: all). edges: the chunk's lo, then
 * hi columns (SQLite's DELETE searches the key's index within them). */
void sl_undo_plan_chunk(const sl_undo_target *t, const sl_snap *snap, const sl_result *cur, char *const *edges,
                        sl_on_conflict mode, sl_undo_step *out);
/* The restore of a chunk planned from its record alone, without looking at
 * the rows first (PostgreSQL, snapshot, on-conflict stop or skip): one
 * UPDATE writing back every saved row whose hash is still the one the job
 * left, within the chunk's edges (lo, then hi columns), checked to write
 * them all (else it fails with 22012 before the COMMIT, and down plans the
 * chunk with sl_undo_plan_chunk). Of a down section: a check (none for a
 * record of no rows) that locks the chunk's rows and fails with 22012
 * unless each row of the record is there with the hash the job left; the
 * down section follows it. -1 when the record does not allow it (the job
 * inserted or deleted rows, SQLite): out is then empty. */
int sl_undo_plan_trusting(const sl_undo_target *t, const sl_snap *snap, char *const *edges,
                          sl_undo_step *out) SL_MUSTCHECK;
void sl_undo_step_free(sl_undo_step *s);

/* "down section", "snapshot(full_name)", ... for messages. malloc'd. */
char *sl_undo_describe_kind(const sl_job *job);

/* For `plan`: print how the job rolls back and the space its undo records
 * will take in sluice_undo (rows x average widths: from pg_stats, on SQLite
 * from a sample of 1000 rows). */
void sl_undo_plan_print(sl_session *sess, const sl_job *job, const sl_keyspec *ks, int64_t rows);

/* Before a job's first chunk, and in plan: whether its up statements write
 * only what its undo snapshot can put back (undo_scope.c). Their plans name
 * the tables they write: an UPDATE, DELETE or MERGE of another table, or a
 * DELETE of the walked table that a foreign key carries on (ON DELETE
 * CASCADE, SET NULL, SET DEFAULT), is refused (SL_EREFUSED, err naming the
 * statement, the table or key, and what to do); an INSERT into another table
 * gives *warnings (NULL, or a NULL-terminated array of lines; the caller
 * frees each and the array). These plans are read for snapshot jobs on
 * PostgreSQL only. On both databases and for every undo kind, the columns
 * the UPDATEs assign (sl_stmt_updates) are checked too: a key column of the
 * walked table is refused with a snapshot and a warning without one; a
 * column snapshot(COL, ...) does not save is refused. -1 on error. */
int sl_undo_check_scope(sl_session *sess, const sl_job *job, const sl_keyspec *ks, char ***warnings,
                        sl_err *err) SL_MUSTCHECK;

#endif
