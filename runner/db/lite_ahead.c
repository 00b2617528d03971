/* lite_ahead.c: a query run ahead on a second, read-only connection to the SQLite target, on a thread of its own. */
#include "sluice/db/lite.h"

#include "lite_internal.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/base/util.h"

struct sl_lite_ahead {
    char *path, *sql;
    int busy_ms;
    uv_thread_t thread;
    uv_mutex_t mu;
    sqlite3 *db; /* under mu: set while the query may run, for sl_lite_ahead_drop's interrupt */
    int quit;    /* under mu */
    /* written by the thread, read once it is joined */
    int ok;
    int64_t value;
    atomic_int finished; /* the thread is about to end: joining it waits no more */
};

static void ahead_main(void *arg)
{
    struct sl_lite_ahead *a = arg;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(a->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, a->busy_ms);
        uv_mutex_lock(&a->mu);
        int go = !a->quit;
        a->db = go ? db : NULL;
        uv_mutex_unlock(&a->mu);
        sqlite3_stmt *st = NULL;
        if (go && sqlite3_prepare_v2(db, a->sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
            sqlite3_column_type(st, 0) == SQLITE_INTEGER) {
            a->value = sqlite3_column_int64(st, 0);
            a->ok = 1;
        }
        sqlite3_finalize(st);
        uv_mutex_lock(&a->mu);
        a->db = NULL; /* no interrupt from here on: the connection closes */
        uv_mutex_unlock(&a->mu);
    }
    sqlite3_close(db);
    atomic_store(&a->finished, 1);
}

void sl_lite_ahead_start(sl_lite *lite, const char *sql)
{
    sl_lite_ahead_drop(lite);
    if (!lite->db || !lite->journal_wal)
        return; /* a reader of a file with a rollback journal would hold up the writes meanwhile */
    struct sl_lite_ahead *a = sl_calloc(1, sizeof *a);
    a->path = sl_strdup(lite->path);
    a->sql = sl_strdup(sql);
    a->busy_ms = lite_busy_ms(lite->busy_timeout_ms); /* the main connection's */
    uv_mutex_init(&a->mu);
    if (uv_thread_create(&a->thread, ahead_main, a) != 0) { /* it runs where it is needed, as without */
        uv_mutex_destroy(&a->mu);
        free(a->path);
        free(a->sql);
        free(a);
        return;
    }
    lite->ahead = a;
}

int sl_lite_ahead_running(const sl_lite *lite)
{
    return lite->ahead && !atomic_load(&lite->ahead->finished);
}

/* Join its thread, free it, and say whether its query answered (with *value). */
static int ahead_end(sl_lite *lite, int64_t *value)
{
    struct sl_lite_ahead *a = lite->ahead;
    uv_thread_join(&a->thread);
    int ok = a->ok;
    *value = a->value;
    uv_mutex_destroy(&a->mu);
    free(a->path);
    free(a->sql);
    free(a);
    lite->ahead = NULL;
    return ok;
}

int sl_lite_ahead_take(sl_lite *lite, const char *sql, int64_t *value)
{
    if (!lite->ahead)
        return -1;
    if (strcmp(lite->ahead->sql, sql) != 0) {
        sl_lite_ahead_drop(lite);
        return -1;
    }
    return ahead_end(lite, value) ? 0 : -1; /* waits for its answer */
}

void sl_lite_ahead_drop(sl_lite *lite)
{
    struct sl_lite_ahead *a = lite->ahead;
    if (!a)
        return;
    uv_mutex_lock(&a->mu);
    a->quit = 1;
    if (a->db)
        sqlite3_interrupt(a->db);
    uv_mutex_unlock(&a->mu);
    int64_t unused;
    (void)ahead_end(lite, &unused);
}
