/* ckpt_internal.h: what ckpt_open.c (opening a checkpoint file) and ckpt.c (reading and writing it) share. */
#ifndef SLUICE_CKPT_INTERNAL_H
#define SLUICE_CKPT_INTERNAL_H

#include <sqlite3.h>

#include "sluice/checkpoints/ckpt.h"

/* Statements prepared once at open (their SQL: stmt_sql in ckpt_open.c): it
 * keeps commit_chunk (run for every chunk) free of parsing, and preparing them
 * all checks the schema. */
enum ckpt_stmt {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_INSERT_CHUNK,
    ST_CHUNK_JOB,
    ST_CHUNK_RUN,
    ST_GET_JOB,
    ST_INSERT_RUN,
    ST_BEGIN_RUN_JOB,
    ST_FINISH_JOB,
    ST_FINISH_RUN,
    ST_SET_BATCH,
    ST_LOG_EVENT,
    ST_LAST_CHUNK,
    ST_DELETE_CHUNKS,
    ST_RESET_JOB,
    ST_STAMP_JOB,
    ST_INSERT_UNDONE,
    ST_UNDO_JOB,
    ST_DELETE_CHUNK,
    ST_COUNT
};

struct sl_ckpt {
    sqlite3 *db;
    char *path;
    char *job;
    sqlite3_stmt *stmts[ST_COUNT];
};

/* Append to err how to rebuild a checkpoint file from the target database. */
void ckpt_append_rebuild_hint(sl_err *err, const char *path);
/* Fill err: the file at path is corrupt or not a checkpoint (detail says how), with the rebuild hint. Returns -1. */
int ckpt_fail_corrupt(sl_err *err, const char *path, const char *detail);
/* Fill err with the SQLite failure of `what` on an open checkpoint, with a hint where the user can act. Returns -1. */
int ckpt_fail_db(sl_ckpt *ck, const char *what, sl_err *err);

/* The job state in column 1 of st (a row of ST_GET_JOB) into *out: 0, or -1 with err naming the file, the value
 * it holds and the states expected (ckpt.c). */
int ckpt_read_state(sl_ckpt *ck, sqlite3_stmt *st, sl_state *out, sl_err *err);

/* Reset and unbind a statement after use. */
void ckpt_stmt_done(sqlite3_stmt *st);
/* Bind text (NULL: SQL NULL) without copying it: it must live until ckpt_stmt_done. */
void ckpt_bind_text(sqlite3_stmt *st, int idx, const char *text);

#endif
