/* lite.c: the SQLite target driver: each connection's batches run on a thread of its own, answers like libpq's. */
#define _GNU_SOURCE /* F_OFD_SETLK: open file description locks (Linux 3.15) */
#include "sluice/db/lite.h"

#include "lite_internal.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Statements a job repeats every chunk stay prepared (SQLITE_PREPARE_PERSISTENT). */
#define LITE_CACHE_MAX 32

struct sl_lite_stmt {
    char *sql;
    sqlite3_stmt *stmt;
};

const char sl_lite_carried[2 * SL_MAX_KEY_COLS + 1];

static void on_wake(uv_async_t *handle);
static void worker_main(void *arg);

/* A directory, a FIFO or a file that does not start as every SQLite
 * database does: told now, like a missing file (an empty file is an empty
 * database to SQLite). */
static int not_a_database(const char *url, const char *path, sl_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0; /* opening it says why */
    if (!S_ISREG(st.st_mode)) {
        sl_err_set(err, "--db %s: %s, not a database file", url,
                   S_ISDIR(st.st_mode)    ? "a directory"
                   : S_ISFIFO(st.st_mode) ? "a FIFO"
                                          : "not a regular file");
        return -1;
    }
    if (st.st_size == 0)
        return 0;
    static const char magic[16] = "SQLite format 3";
    char head[16] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* opening it says why */
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    if (n != (ssize_t)sizeof head || memcmp(head, magic, sizeof magic) != 0) {
        sl_err_set(err, "--db %s: not a SQLite database (its first bytes are not \"SQLite format 3\")", url);
        return -1;
    }
    return 0;
}

int sl_lite_init(uv_loop_t *loop, sl_lite *lite, const char *url, sl_err *err)
{
    memset(lite, 0, sizeof *lite);
    assert(strncmp(url, "sqlite:", 7) == 0 && "BUG: not a sqlite: URL");
    const char *path = url + 7;
    if (!*path) {
        sl_err_set(err, "--db %s: no database file after \"sqlite:\"", url);
        sl_err_append(err, "hint: --db sqlite:app.db (a path, relative to the current directory or absolute)");
        return -1;
    }
    if (access(path, F_OK) != 0) {
        sl_err_set(err, "--db %s: no such database file", url);
        sl_err_append(err, "hint: sluice never creates the database; check the path (relative to the current "
                           "directory, or absolute)");
        return -1;
    }
    if (not_a_database(url, path, err) != 0)
        return -1;
    lite->loop = loop;
    uv_mutex_init(&lite->mu);
    uv_cond_init(&lite->cv);
    uv_async_init(loop, &lite->wake, on_wake);
    lite->wake.data = lite;
    uv_unref((uv_handle_t *)&lite->wake); /* referenced only while a batch is in flight */
    lite->path = sl_strdup(path);
    lite->display = sl_strdup(url);
    lite->busy_timeout_ms = 2000;
    lite->wait_commit = 1;
    lite->lock_fd = -1;
    return 0;
}

/* ---- functions sluice's SQL uses (the rest in lite_funcs.c) ---- */

/* sluice_elapsed_ms(): time since the batch began, for sluice_progress.duration_ms. */
static void fn_elapsed(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sl_lite *lite = sqlite3_user_data(ctx);
    sqlite3_result_int64(ctx, sl_mono_ms() - lite->batch_started_ms);
}

/* Checked every 1000 VM steps: past the statement's deadline, interrupt it. */
static int on_progress(void *arg)
{
    sl_lite *lite = arg;
    return lite->deadline_ms > 0 && sl_mono_ms() > lite->deadline_ms;
}

static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *st;
    out[0] = '\0';
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

int lite_busy_ms(int64_t ms)
{
    return ms > INT_MAX ? INT_MAX : ms < 0 ? 0 : (int)ms;
}

int sl_lite_open(sl_lite *lite, sl_err *err)
{
    if (lite->db)
        return 0;
    /* NOMUTEX: only the worker thread uses the connection while it runs
     * (sqlite3_interrupt is safe from any thread) */
    int rc = sqlite3_open_v2(lite->path, &lite->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sl_err_set(err, "cannot open %s: %s", lite->display, lite->db ? sqlite3_errmsg(lite->db) : sqlite3_errstr(rc));
        sqlite3_close(lite->db);
        lite->db = NULL;
        return -1;
    }
    sqlite3_extended_result_codes(lite->db, 1);
    lite->busy_applied_ms = lite->busy_timeout_ms;
    sqlite3_busy_timeout(lite->db, lite_busy_ms(lite->busy_applied_ms));
    char mode[32];
    /* reading the journal mode also checks that this is a database at all */
    if (pragma_text(lite->db, "PRAGMA journal_mode", mode, sizeof mode) != 0 ||
        sqlite3_exec(lite->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK) {
        sl_err_set(err, "cannot use %s: %s", lite->display, sqlite3_errmsg(lite->db));
        sl_lite_close(lite);
        return -1;
    }
    lite->journal_wal = strcmp(mode, "wal") == 0;
    lite->sync_full = 1;
    lite_add_functions(lite->db);
    sqlite3_create_function(lite->db, "sluice_elapsed_ms", 0, SQLITE_UTF8, lite, fn_elapsed, NULL, NULL);
    sqlite3_progress_handler(lite->db, 1000, on_progress, lite);
    atomic_store(&lite->quit, 0);
    lite->running = lite->has_next = lite->nfinished = lite->in_flight = 0;
    if (uv_thread_create(&lite->thread, worker_main, lite) != 0) {
        sl_err_set(err, "cannot start the thread that runs %s's statements", lite->display);
        sl_lite_close(lite);
        return -1;
    }
    lite->thread_running = 1;
    return 0;
}

void sl_lite_set_timeouts(sl_lite *lite, int64_t lock_ms, int64_t stmt_ms)
{
    /* not sqlite3_busy_timeout() here: a batch may be running, and the
     * connection's mutex would block the loop until it is done */
    lite->busy_timeout_ms = lock_ms;
    lite->stmt_timeout_ms = stmt_ms;
}

void sl_lite_set_wait_commit(sl_lite *lite, int wait)
{
    lite->wait_commit = wait;
}

/* ---- one batch, on the connection's own thread ---- */

/* The SQLSTATE PostgreSQL would give, so the runner's retry rules apply:
 * lock waits and interrupts are transient, constraint failures are not, and
 * a full disk, a read-only or damaged file is no row's doing (on-error skip
 * stops on them, see sl_answer_statement_error). */
static const char *nearest_sqlstate(int code)
{
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return "55P03";
    case SQLITE_INTERRUPT: return "57014";
    case SQLITE_FULL: return "53100";
    case SQLITE_NOMEM: return "53200";
    case SQLITE_IOERR: return "58030";
    case SQLITE_READONLY: return "25006";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return "XX001";
    case SQLITE_PERM:
    case SQLITE_AUTH: return "42501";
    case SQLITE_CONSTRAINT: break;
    default: return "";
    }
    switch (code) {
    case SQLITE_CONSTRAINT_CHECK: return "23514";
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY: return "23505";
    case SQLITE_CONSTRAINT_NOTNULL: return "23502";
    case SQLITE_CONSTRAINT_FOREIGNKEY: return "23503";
    default: return "23000";
    }
}

static sqlite3_stmt *cached_stmt(sl_lite *lite, const char *sql)
{
    for (size_t i = 0; i < lite->ncache; i++)
        if (strcmp(lite->cache[i].sql, sql) == 0)
            return lite->cache[i].stmt;
    return NULL;
}

static int get_stmt(sl_lite *lite, const sl_query *q, sqlite3_stmt **out, int *owned)
{
    *owned = 1;
    if (q->prepare && (*out = cached_stmt(lite, q->sql)) != NULL) {
        *owned = 0;
        return SQLITE_OK;
    }
    int keep = q->prepare && lite->ncache < LITE_CACHE_MAX;
    int rc = sqlite3_prepare_v3(lite->db, q->sql, -1, keep ? SQLITE_PREPARE_PERSISTENT : 0, out, NULL);
    if (rc != SQLITE_OK)
        return rc;
    if (!*out) /* only a comment or whitespace */
        return SQLITE_OK;
    if (keep) {
        lite->cache = sl_realloc(lite->cache, (lite->ncache + 1) * sizeof *lite->cache);
        lite->cache[lite->ncache++] = (struct sl_lite_stmt){sl_strdup(q->sql), *out};
        *owned = 0;
    }
    return SQLITE_OK;
}

/* The shortest text that reads back as exactly d (SQLite's own text form
 * of a REAL keeps 15 digits, which loses some: a key bound back from it
 * would not be the same key). */
static void real_text(double d, char *out, size_t outlen)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, outlen, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            return;
    }
}

/* A BLOB travels as its SQL literal X'00FF' (blob_text) and binds back as the bytes. */
static int bind_blob_literal(sqlite3_stmt *st, int idx, const char *hex, size_t nbytes)
{
    unsigned char *bytes = sl_calloc(nbytes + 1, 1);
    for (size_t i = 0; i < nbytes; i++) {
        char pair[3] = {hex[2 * i], hex[2 * i + 1], 0};
        bytes[i] = (unsigned char)strtoul(pair, NULL, 16);
    }
    return sqlite3_bind_blob(st, idx, bytes, (int)nbytes, free);
}

static char *blob_text(const unsigned char *data, int nbytes)
{
    char *out = sl_calloc((size_t)nbytes * 2 + 4, 1);
    out[0] = 'X';
    out[1] = '\'';
    for (int i = 0; i < nbytes; i++)
        snprintf(out + 2 + 2 * i, 3, "%02X", data[i]);
    out[2 + 2 * nbytes] = '\'';
    return out;
}

/* Values travel as text, but a key column declared without a type has no
 * affinity to turn '42' back into 42, and SQLite orders every number before
 * every text. So a value in a number's exact canonical text form is bound
 * as that number: a typed column converts it to its affinity exactly as it
 * would the text ('42' and 42 both become 42 in an INTEGER column, '42' in
 * a TEXT one), and an untyped one compares it as the number it printed as.
 * Anything else ("007", "1e5", "abc") stays text, but for X'..', a BLOB's
 * literal as results give it. */
static int bind_value(sl_lite *lite, sqlite3_stmt *st, int idx, const char *v)
{
    if (v >= sl_lite_carried && v < sl_lite_carried + sizeof sl_lite_carried) {
        size_t k = (size_t)(v - sl_lite_carried);
        v = k < lite->ncarry ? lite->carry[k] : NULL;
    }
    if (!v)
        return sqlite3_bind_null(st, idx);
    size_t len = strlen(v);
    if (len >= 3 && len % 2 == 1 && v[0] == 'X' && v[1] == '\'' && v[len - 1] == '\'' &&
        strspn(v + 2, "0123456789ABCDEF") == len - 3)
        return bind_blob_literal(st, idx, v + 2, (len - 3) / 2);
    char *end;
    errno = 0;
    long long i = strtoll(v, &end, 10);
    char canon[40];
    if (*v && !*end && errno == 0) {
        snprintf(canon, sizeof canon, "%lld", i);
        if (strcmp(canon, v) == 0)
            return sqlite3_bind_int64(st, idx, i);
    }
    if (*v && strpbrk(v, ".eE") && !isspace((unsigned char)*v)) {
        double d = strtod(v, &end);
        if (!*end && isfinite(d)) {
            real_text(d, canon, sizeof canon);
            if (strcmp(canon, v) == 0)
                return sqlite3_bind_double(st, idx, d);
        }
    }
    return sqlite3_bind_text(st, idx, v, -1, SQLITE_STATIC);
}

/* Is name one of sluice's own, "$N" (N from 1)? */
static int ours(const char *name)
{
    if (!name || name[0] != '$' || name[1] < '1' || name[1] > '9')
        return 0;
    return strspn(name + 1, "0123456789") == strlen(name + 1);
}

/* Every value must have its parameter and every parameter its value, as
 * PostgreSQL's Bind insists (08P01): SQLite would bind a missing one as NULL
 * and ignore an extra one, so a statement that lost its :lo/:hi would run
 * over the whole table. On a mismatch lite->bind_error says what. */
static int bind_params(sl_lite *lite, sqlite3_stmt *st, const sl_query *q)
{
    int count = sqlite3_bind_parameter_count(st);
    /* A parameter of another form (?, ?N, :name, @name, $name) would be bound
     * by position to one of the chunk's keys, or left NULL: job text with one
     * is refused, naming it (sluice's own SQL writes $N alone). */
    for (int i = 1; i <= count; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        if (!ours(name)) {
            snprintf(lite->bind_error, sizeof lite->bind_error,
                     "%s is a parameter sluice does not bind (it binds :lo and :hi, and no other) (hint: write :lo "
                     "or :hi, or the value itself)",
                     name ? name : "?");
            return SQLITE_RANGE;
        }
    }
    for (int i = 1; i <= q->nparams; i++) {
        char name[16];
        snprintf(name, sizeof name, "$%d", i);
        int idx = sqlite3_bind_parameter_index(st, name);
        if (!idx) {
            snprintf(lite->bind_error, sizeof lite->bind_error,
                     "a value was bound to $%d, but the statement has no such parameter (it has %d)", i, count);
            return SQLITE_RANGE;
        }
        int rc = bind_value(lite, st, idx, q->params[i - 1]);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (count != q->nparams) {
        snprintf(lite->bind_error, sizeof lite->bind_error, "the statement has %d parameters, but %d values were bound",
                 count, q->nparams);
        return SQLITE_RANGE;
    }
    return SQLITE_OK;
}

static void add_row(sl_result *res, sqlite3_stmt *st, size_t *cap)
{
    int ncols = res->ncols;
    size_t need = (size_t)(res->nrows + 1) * (size_t)ncols;
    if (need + 1 > *cap) {
        *cap = *cap ? *cap * 2 : 16;
        while (*cap < need + 1)
            *cap *= 2;
        res->vals = sl_realloc(res->vals, *cap * sizeof(char *));
    }
    for (int c = 0; c < ncols; c++) {
        char **dst = &res->vals[(size_t)res->nrows * (size_t)ncols + (size_t)c];
        if (sqlite3_column_type(st, c) == SQLITE_BLOB) { /* bytes are not text: the literal, X'00FF' */
            *dst = blob_text(sqlite3_column_blob(st, c), sqlite3_column_bytes(st, c));
            continue;
        }
        if (sqlite3_column_type(st, c) == SQLITE_FLOAT) {
            char text[40];
            real_text(sqlite3_column_double(st, c), text, sizeof text);
            *dst = sl_strdup(text);
            continue;
        }
        const unsigned char *v = sqlite3_column_text(st, c);
        *dst = v ? sl_strdup((const char *)v) : NULL;
    }
    res->nrows++;
}

/* Run one statement to completion into res. SQLITE_DONE on success. */
static int run_stmt(sl_lite *lite, const sl_query *q, sl_result *res)
{
    sqlite3_stmt *st = NULL;
    int owned;
    res->cmd_tuples = -1;
    int rc = get_stmt(lite, q, &st, &owned);
    if (rc != SQLITE_OK || !st)
        return rc == SQLITE_OK ? SQLITE_DONE : rc;
    rc = bind_params(lite, st, q);
    if (rc == SQLITE_OK) {
        int64_t before = sqlite3_total_changes64(lite->db);
        res->ncols = sqlite3_column_count(st);
        size_t cap = 0;
        int64_t limit = lite->stmt_timeout_ms;
        lite->deadline_ms = limit > 0 ? sl_mono_ms() + limit : 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            add_row(res, st, &cap);
        lite->timed_out = rc == SQLITE_INTERRUPT && lite->deadline_ms > 0 && sl_mono_ms() >= lite->deadline_ms;
        lite->deadline_ms = 0;
        if (!sqlite3_stmt_readonly(st))
            res->cmd_tuples = sqlite3_total_changes64(lite->db) != before ? sqlite3_changes64(lite->db) : 0;
    }
    if (owned) {
        sqlite3_finalize(st);
    } else {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    return rc;
}

static void run_batch(sl_lite *lite)
{
    const sl_lite_batch *w = &lite->batch;
    sl_answer *ans = w->ans;
    ans->ok = 1;
    ans->failed_index = -1;
    ans->nresults = w->n;
    ans->results = sl_calloc(w->n + 1, sizeof(sl_result));
    lite->batch_started_ms = sl_mono_ms();
    lite->timed_out = 0;
    lite->bind_error[0] = '\0';
    int64_t busy = lite->busy_timeout_ms;
    if (busy != lite->busy_applied_ms) {
        sqlite3_busy_timeout(lite->db, lite_busy_ms(busy));
        lite->busy_applied_ms = busy;
    }
    int full = atomic_load(&lite->wait_commit) || !lite->journal_wal;
    if (full != lite->sync_full && sqlite3_get_autocommit(lite->db) &&
        sqlite3_exec(lite->db, full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) ==
            SQLITE_OK)
        lite->sync_full = full;
    for (size_t i = 0; i < w->n; i++) {
        int rc = run_stmt(lite, &w->queries[i], &ans->results[i]);
        if (rc == SQLITE_DONE)
            continue;
        int code = sqlite3_extended_errcode(lite->db);
        if (code == SQLITE_OK)
            code = rc;
        ans->ok = 0;
        ans->failed_index = (int)i;
        snprintf(ans->sqlstate, sizeof ans->sqlstate, "%s", lite->bind_error[0] ? "08P01" : nearest_sqlstate(code));
        if (lite->bind_error[0])
            ans->error = sl_strdup(lite->bind_error);
        else if (lite->timed_out)
            ans->error =
                sl_asprintf("canceling statement due to statement timeout (%lld ms)", (long long)lite->stmt_timeout_ms);
        else
            ans->error = sl_strdup(sqlite3_errmsg(lite->db));
        /* Like an aborted pipeline segment: nothing after the error runs, and
         * the transaction does not stay open half-done. */
        if (!sqlite3_get_autocommit(lite->db))
            sqlite3_exec(lite->db, "ROLLBACK", NULL, NULL, NULL);
        break;
    }
}

/* Wait for a batch on the condition variable. 0 when quitting. */
static int wait_batch(sl_lite *lite)
{
    uv_mutex_lock(&lite->mu);
    while (!lite->running && !atomic_load(&lite->quit))
        uv_cond_wait(&lite->cv, &lite->mu);
    uv_mutex_unlock(&lite->mu);
    return !atomic_load(&lite->quit);
}

/* Under mu, with a follow-on queued and the batch before it just done:
 * whether the follow-on runs. It does when the batch succeeded with a row in
 * its last result, which it then carries over and becomes the batch. */
static int take_next(sl_lite *lite)
{
    const sl_answer *ans = lite->batch.ans;
    const sl_result *last = ans->nresults ? &ans->results[ans->nresults - 1] : NULL;
    int take = ans->ok && last && last->nrows > 0 && (size_t)last->ncols <= sizeof sl_lite_carried;
    lite->has_next = 0;
    *lite->next_taken = take;
    if (!take)
        return 0;
    for (size_t k = 0; k < lite->ncarry; k++)
        free(lite->carry[k]);
    lite->ncarry = (size_t)last->ncols;
    for (size_t k = 0; k < lite->ncarry; k++)
        lite->carry[k] = last->vals[k] ? sl_strdup(last->vals[k]) : NULL;
    lite->batch = lite->next;
    return 1;
}

/* One thread per connection, not libuv's pool: the pool's threads take
 * turns, so every chunk woke a different one, often on the other core
 * (bench_sqlite.sh: a third of the run was spent in those hand-offs). A
 * follow-on runs at once, without waking the loop in between. */
static void worker_main(void *arg)
{
    sl_lite *lite = arg;
    while (wait_batch(lite)) {
        run_batch(lite);
        uv_mutex_lock(&lite->mu);
        assert(lite->nfinished < 3 && "BUG: more done flags than batches in flight");
        lite->finished[lite->nfinished++] = lite->batch.done;
        int had_next = lite->has_next;
        lite->running = had_next && take_next(lite);
        if (had_next && !lite->running) /* the follow-on did not run: done with the batch before */
            lite->finished[lite->nfinished++] = lite->next.done;
        uv_mutex_unlock(&lite->mu);
        uv_async_send(&lite->wake);
    }
}

/* On the loop thread: batches are done, their answers complete. */
static void on_wake(uv_async_t *handle)
{
    sl_lite *lite = handle->data;
    uv_mutex_lock(&lite->mu);
    for (int i = 0; i < lite->nfinished; i++)
        *lite->finished[i] = 1;
    lite->in_flight -= lite->nfinished;
    lite->nfinished = 0;
    uv_mutex_unlock(&lite->mu);
    if (lite->in_flight == 0)
        uv_unref((uv_handle_t *)&lite->wake);
}

int sl_lite_send(sl_lite *lite, const sl_query *queries, size_t n, sl_answer *ans, int *done)
{
    memset(ans, 0, sizeof *ans);
    if (!lite->db || !lite->thread_running)
        return -1;
    assert(lite->in_flight == 0 && "BUG: a second batch while one runs");
    lite->batch = (sl_lite_batch){queries, n, ans, done};
    *done = 0;
    lite->in_flight = 1;
    uv_ref((uv_handle_t *)&lite->wake); /* the loop waits for it (uv_run returns at once with nothing referenced) */
    uv_mutex_lock(&lite->mu);
    lite->running = 1;
    uv_cond_signal(&lite->cv);
    uv_mutex_unlock(&lite->mu);
    return 0;
}

int sl_lite_send_next(sl_lite *lite, const sl_query *queries, size_t n, sl_answer *ans, int *done, int *taken)
{
    memset(ans, 0, sizeof *ans);
    if (!lite->db || !lite->thread_running || lite->in_flight != 1)
        return -1;
    *done = 0;
    *taken = 0;
    uv_mutex_lock(&lite->mu);
    assert(!lite->has_next && "BUG: a second follow-on");
    lite->next = (sl_lite_batch){queries, n, ans, done};
    lite->next_taken = taken;
    lite->has_next = 1;
    lite->in_flight++;
    int decided_now = !lite->running, ran = 0;
    if (decided_now) { /* the batch before is done already: decide here, and a follow-on not run is done now */
        ran = lite->running = take_next(lite);
        if (ran)
            uv_cond_signal(&lite->cv);
    }
    uv_mutex_unlock(&lite->mu);
    if (decided_now && !ran) {
        lite->in_flight--;
        *done = 1;
    }
    return 0;
}

void sl_lite_cancel_next(sl_lite *lite)
{
    uv_mutex_lock(&lite->mu);
    int withdrawn = lite->has_next;
    if (withdrawn) {
        lite->has_next = 0;
        *lite->next_taken = 0;
    }
    uv_mutex_unlock(&lite->mu);
    if (withdrawn) {
        lite->in_flight--;
        *lite->next.done = 1;
    }
}

void sl_lite_interrupt(sl_lite *lite)
{
    if (lite->db)
        sqlite3_interrupt(lite->db);
}

/* ---- the job lock ---- */

static off_t job_byte(const char *job)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    lite_hash_bytes(&h, "sluice:", 7);
    lite_hash_bytes(&h, job, strlen(job));
    return (off_t)(h >> 2); /* positive, far beyond any real file size: fcntl locks need not cover data */
}

int sl_lite_try_lock_job(sl_lite *lite, const char *job, sl_err *err)
{
    if (lite->lock_fd < 0) {
        char *path = sl_asprintf("%s-sluice-lock", lite->path);
        lite->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lite->lock_fd < 0) {
            sl_err_set(err, "cannot open the job lock file %s: %s", path, strerror(errno));
            free(path);
            return -1;
        }
        free(path);
    }
    /* An open file description lock, not a process's record lock: it
     * conflicts with another descriptor of this same process (two targets
     * of one fleet run naming one file), and closing some other descriptor
     * of the file does not drop it. It conflicts with record locks too (an
     * older sluice's). */
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = job_byte(job), .l_len = 1, .l_pid = 0};
    if (fcntl(lite->lock_fd, F_OFD_SETLK, &fl) == 0)
        return 0;
    if (errno != EACCES && errno != EAGAIN) {
        sl_err_set(err, "cannot lock %s-sluice-lock: %s", lite->path, strerror(errno));
        return -1;
    }
    /* the holder's pid is known for a record lock only (-1 for another open
     * file description's): the caller names the runner from sluice_jobs */
    struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = job_byte(job), .l_len = 1, .l_pid = 0};
    int known = fcntl(lite->lock_fd, F_OFD_GETLK, &who) == 0 && who.l_type != F_UNLCK && who.l_pid > 0;
    if (known)
        sl_err_set(err, "job %s is already being run against this database (pid %ld)", job, (long)who.l_pid);
    else
        sl_err_set(err, "job %s is already being run against this database", job);
    sl_err_append(err, "hint: one runner per job and database, up or down; wait for it, or stop it with SIGINT");
    return SL_EREFUSED;
}

int sl_lite_job_locked(sl_lite *lite, const char *job)
{
    /* through lock_fd, kept open for the job lock this connection may take */
    if (lite->lock_fd < 0) {
        char *path = sl_asprintf("%s-sluice-lock", lite->path);
        lite->lock_fd = open(path, O_RDWR | O_CLOEXEC); /* none yet: nobody holds it */
        free(path);
        if (lite->lock_fd < 0)
            return 0;
    }
    /* any lock but this descriptor's own: another process's, or another
     * open file description's of this process (another target) */
    struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = job_byte(job), .l_len = 1, .l_pid = 0};
    return fcntl(lite->lock_fd, F_OFD_GETLK, &who) == 0 && who.l_type != F_UNLCK;
}

void sl_lite_unlock_job(sl_lite *lite, const char *job)
{
    if (lite->lock_fd < 0)
        return;
    struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = job_byte(job), .l_len = 1, .l_pid = 0};
    (void)fcntl(lite->lock_fd, F_OFD_SETLK, &fl);
}

void sl_lite_close(sl_lite *lite)
{
    sl_lite_ahead_drop(lite);
    if (lite->thread_running) {
        uv_mutex_lock(&lite->mu);
        atomic_store(&lite->quit, 1);
        uv_cond_signal(&lite->cv);
        uv_mutex_unlock(&lite->mu);
        uv_thread_join(&lite->thread);
        lite->thread_running = 0;
    }
    for (size_t i = 0; i < lite->ncache; i++) {
        sqlite3_finalize(lite->cache[i].stmt);
        free(lite->cache[i].sql);
    }
    free(lite->cache);
    lite->cache = NULL;
    lite->ncache = 0;
    for (size_t k = 0; k < lite->ncarry; k++)
        free(lite->carry[k]);
    lite->ncarry = 0;
    if (lite->db)
        sqlite3_close(lite->db);
    lite->db = NULL;
}

static void on_wake_closed(uv_handle_t *handle)
{
    sl_lite *lite = handle->data;
    lite->stopped = 1;
}

void sl_lite_stop(sl_lite *lite)
{
    sl_lite_close(lite);
    lite->wake.data = lite;
    uv_close((uv_handle_t *)&lite->wake, on_wake_closed);
}

void sl_lite_free(sl_lite *lite)
{
    sl_lite_close(lite);
    uv_mutex_destroy(&lite->mu);
    uv_cond_destroy(&lite->cv);
    if (lite->lock_fd >= 0)
        close(lite->lock_fd);
    lite->lock_fd = -1;
    free(lite->path);
    free(lite->display);
    lite->path = lite->display = NULL;
}
