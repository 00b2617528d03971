/* run_internal.h: what run.c, run_row.c and run_journal.c share. */
#ifndef SLUICE_RUN_INTERNAL_H
#define SLUICE_RUN_INTERNAL_H

#include <stdint.h>
#include <stdlib.h>

#include "sluice/engine/run.h"

/* A SQLite time column as milliseconds since the epoch. */
#define LITE_MS(col) "CAST(round((julianday(" col ") - 2440587.5) * 86400000) AS INTEGER)"

static inline int run_is_lite(const sl_session *sess)
{
    return sess->dialect == SL_DIALECT_SQLITE;
}

static inline int64_t run_to_i64(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

/* Open (creating it when missing) and bind the run's journal, under its run
 * lock, and bring it in step with the database (run_journal.c). */
int run_open_journal(sl_run *run) SL_MUSTCHECK;

#endif
