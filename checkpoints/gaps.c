/* gaps.c: which chunk numbers a checkpoint file lacks below its highest: the candidates reconcile asks the database
 * about. */
#include <sqlite3.h>
#include <stdlib.h>

#include "sluice/ckpt.h"

int sl_ckpt_chunk_gaps(sl_ckpt *ckpt, int64_t *max, int64_t **gaps, size_t *ngaps, sl_err *err)
{
    *max = 0;
    *gaps = NULL;
    *ngaps = 0;
    sqlite3 *db = sl_ckpt_sqlite(ckpt);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT chunk_no FROM chunks ORDER BY chunk_no", -1, &st, NULL) != SQLITE_OK) {
        sl_err_set(err, "checkpoint file %s: cannot list chunks: %s", sl_ckpt_file(ckpt), sqlite3_errmsg(db));
        return -1;
    }
    size_t cap = 0;
    int64_t expect = 1;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t no = sqlite3_column_int64(st, 0);
        for (; expect < no; expect++) {
            if (*ngaps == cap) {
                cap = cap ? cap * 2 : 16;
                *gaps = sl_realloc(*gaps, cap * sizeof **gaps);
            }
            (*gaps)[(*ngaps)++] = expect;
        }
        expect = no + 1;
        *max = no;
    }
    int rc = 0;
    if (step != SQLITE_DONE) {
        sl_err_set(err, "checkpoint file %s: cannot list chunks: %s", sl_ckpt_file(ckpt), sqlite3_errmsg(db));
        free(*gaps);
        *gaps = NULL;
        *ngaps = 0;
        rc = -1;
    }
    sqlite3_finalize(st);
    return rc;
}
