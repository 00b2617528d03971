/* sync.c: what keeping a checkpoint file in line with its database needs: the database it is bound to, its chunk set.
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/checkpoints/ckpt.h"

static int fail(sl_ckpt *ckpt, const char *what, sl_err *err)
{
    sl_err_set(err, "checkpoint file %s: %s: %s", sl_ckpt_file(ckpt), what, sqlite3_errmsg(sl_ckpt_sqlite(ckpt)));
    return -1;
}

static const char *text_or_empty(sqlite3_stmt *st, int col)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    return v ? (const char *)v : "";
}

/* "app (sluice id 3f.., cluster 77..)" */
static void describe(sl_buf *b, const char *id, const char *cluster, const char *name)
{
    sl_buf_printf(b, "%s (sluice id %s%s%s)", name[0] ? name : "?", id, cluster[0] ? ", cluster " : "", cluster);
}

/* Another database when the ids differ, or the clusters (both known), or
 * (on PostgreSQL, where the name is the database's) the names. */
static int same_owner(const char *id, const char *cluster, const char *name, const char *fid, const char *fcluster,
                      const char *fname, int by_name)
{
    if (strcmp(id, fid) != 0)
        return 0;
    if (cluster[0] && fcluster[0] && strcmp(cluster, fcluster) != 0)
        return 0;
    return !by_name || strcmp(name, fname) == 0;
}

static int adopt(sl_ckpt *ckpt, const char *id, const char *cluster, const char *name, sl_err *err)
{
    sqlite3 *db = sl_ckpt_sqlite(ckpt);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "UPDATE job SET db_id = ?1, db_cluster = ?2, db_name = ?3", -1, &st, NULL) != SQLITE_OK)
        return fail(ckpt, "cannot record its database", err);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, cluster, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail(ckpt, "cannot record its database", err);
    sqlite3_finalize(st);
    return rc;
}

int sl_ckpt_bind(sl_ckpt *ckpt, const char *id, const char *cluster, const char *name, int by_name, int write,
                 sl_err *err)
{
    sqlite3 *db = sl_ckpt_sqlite(ckpt);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT db_id, db_cluster, db_name FROM job", -1, &st, NULL) != SQLITE_OK)
        return fail(ckpt, "cannot read its database", err);
    int rc = 0;
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = fail(ckpt, "cannot read its database", err);
    } else if (sqlite3_column_type(st, 0) == SQLITE_NULL) {
        rc = write ? 1 : 0; /* bound to none yet: it takes this one */
    } else if (!same_owner(id, cluster, name, text_or_empty(st, 0), text_or_empty(st, 1), text_or_empty(st, 2),
                           by_name)) {
        sl_buf have = {0}, want = {0};
        describe(&have, text_or_empty(st, 0), text_or_empty(st, 1), text_or_empty(st, 2));
        describe(&want, id, cluster, name);
        sl_err_set(err, "checkpoint file %s belongs to database %s, not to %s", sl_ckpt_file(ckpt), have.data,
                   want.data);
        if (strcmp(id, text_or_empty(st, 0)) == 0) /* sluice_meta came along with the data */
            sl_err_append(err, "the same sluice id: this database is a copy of that one (restored from a backup "
                               "of it, or cloned), and a copy keeps its own checkpoints");
        sl_err_append(err, "hint: point --checkpoints at this database's own directory (or a new, empty one: the "
                           "database keeps each job's state, and sluice rebuilds the files from it)");
        sl_buf_free(&have);
        sl_buf_free(&want);
        rc = SL_EREFUSED;
    }
    sqlite3_finalize(st);
    if (rc == 1 && adopt(ckpt, id, cluster, name, err) != 0)
        rc = -1;
    return rc;
}

int sl_ckpt_timeline(sl_ckpt *ckpt, int64_t *timeline, int64_t *started, sl_err *err)
{
    sqlite3_stmt *st = NULL;
    *timeline = *started = 0;
    if (sqlite3_prepare_v2(sl_ckpt_sqlite(ckpt), "SELECT db_timeline, db_started FROM job", -1, &st, NULL) != SQLITE_OK)
        return fail(ckpt, "cannot read its database's timeline", err);
    int rc = 0;
    if (sqlite3_step(st) == SQLITE_ROW) { /* NULL: 0, never seen */
        *timeline = sqlite3_column_int64(st, 0);
        *started = sqlite3_column_int64(st, 1);
    } else {
        rc = fail(ckpt, "cannot read its database's timeline", err);
    }
    sqlite3_finalize(st);
    return rc;
}

int sl_ckpt_set_timeline(sl_ckpt *ckpt, int64_t timeline, int64_t started, sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sl_ckpt_sqlite(ckpt), "UPDATE job SET db_timeline = ?1, db_started = ?2", -1, &st, NULL) !=
        SQLITE_OK)
        return fail(ckpt, "cannot record its database's timeline", err);
    sqlite3_bind_int64(st, 1, timeline);
    sqlite3_bind_int64(st, 2, started);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail(ckpt, "cannot record its database's timeline", err);
    sqlite3_finalize(st);
    return rc;
}

int sl_ckpt_chunk_numbers(sl_ckpt *ckpt, int64_t **nums, size_t *n, sl_err *err)
{
    *nums = NULL;
    *n = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sl_ckpt_sqlite(ckpt), "SELECT chunk_no FROM chunks ORDER BY chunk_no", -1, &st, NULL) !=
        SQLITE_OK)
        return fail(ckpt, "cannot list chunks", err);
    size_t cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            *nums = sl_realloc(*nums, cap * sizeof **nums);
        }
        (*nums)[(*n)++] = sqlite3_column_int64(st, 0);
    }
    int rc = 0;
    if (step != SQLITE_DONE) {
        rc = fail(ckpt, "cannot list chunks", err);
        free(*nums);
        *nums = NULL;
        *n = 0;
    }
    sqlite3_finalize(st);
    return rc;
}
