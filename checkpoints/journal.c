/* journal.c: reading a checkpoint's event log and its record of undone chunks, for `report`. */
#include <sqlite3.h>

#include "sluice/checkpoints/ckpt.h"

static int fail(sl_ckpt *ckpt, const char *what, sl_err *err)
{
    sl_err_set(err, "checkpoint file %s: %s: %s", sl_ckpt_file(ckpt), what, sqlite3_errmsg(sl_ckpt_sqlite(ckpt)));
    return -1;
}

int sl_ckpt_each_event(sl_ckpt *ckpt, int (*fn)(const sl_ckpt_event *ev, void *arg), void *arg, sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sl_ckpt_sqlite(ckpt), "SELECT id, at, kind, message, data FROM events ORDER BY id", -1, &st,
                           NULL) != SQLITE_OK)
        return fail(ckpt, "cannot read events", err);
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        sl_ckpt_event ev = {sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                            (const char *)sqlite3_column_text(st, 2), (const char *)sqlite3_column_text(st, 3),
                            (const char *)sqlite3_column_text(st, 4)};
        if (!ev.kind)
            ev.kind = "";
        if (!ev.message)
            ev.message = "";
        rc = fn(&ev, arg);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = fail(ckpt, "cannot read events", err);
    sqlite3_finalize(st);
    return rc;
}

int sl_ckpt_each_undone(sl_ckpt *ckpt, int (*fn)(const sl_ckpt_undone *u, void *arg), void *arg, sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sl_ckpt_sqlite(ckpt),
                           "SELECT run_id, chunk_no, rows, duration_ms, at FROM undone ORDER BY id", -1, &st,
                           NULL) != SQLITE_OK)
        return fail(ckpt, "cannot read undone chunks", err);
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        sl_ckpt_undone u = {sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
                            sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4)};
        rc = fn(&u, arg);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = fail(ckpt, "cannot read undone chunks", err);
    sqlite3_finalize(st);
    return rc;
}
