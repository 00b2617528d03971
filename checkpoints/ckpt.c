/* ckpt.c: the checkpoint store: one SQLite file per job with its state, committed chunks, runs and events. */
#include "sluice/checkpoints/ckpt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "SLC1": lets open() tell a sluice checkpoint from any other SQLite file. */
#define CKPT_APPLICATION_ID  0x534c4331
#define CKPT_SCHEMA_VERSION  3
#define CKPT_BUSY_TIMEOUT_MS 5000

/* Version 3: each chunk's batch and worker, events' data (JSON), and the
 * chunks `down` undid, for `report`. */
#define UNDONE_SQL                                                                        \
    "CREATE TABLE undone (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL," \
    " chunk_no INTEGER NOT NULL, rows INTEGER NOT NULL, duration_ms INTEGER NOT NULL, at INTEGER NOT NULL);"

static const char schema_sql[] =
    "CREATE TABLE job ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL, state TEXT NOT NULL,"
    " checksum TEXT NOT NULL DEFAULT '', rows INTEGER NOT NULL DEFAULT 0, affected INTEGER NOT NULL DEFAULT 0,"
    " chunks INTEGER NOT NULL DEFAULT 0, last_key TEXT, error TEXT, target TEXT,"
    " batch INTEGER NOT NULL DEFAULT 0, started_at INTEGER NOT NULL DEFAULT 0,"
    " updated_at INTEGER NOT NULL DEFAULT 0, db_id TEXT, db_cluster TEXT, db_name TEXT);"
    "CREATE TABLE chunks ("
    " chunk_no INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, lo TEXT NOT NULL, hi TEXT NOT NULL,"
    " rows INTEGER NOT NULL, affected INTEGER NOT NULL, duration_ms INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL, error TEXT, committed_at INTEGER NOT NULL, skipped INTEGER NOT NULL DEFAULT 0,"
    " batch INTEGER NOT NULL DEFAULT 0, worker INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE runs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, outcome TEXT NOT NULL,"
    " started_at INTEGER NOT NULL, ended_at INTEGER NOT NULL DEFAULT 0, rows INTEGER NOT NULL DEFAULT 0,"
    " chunks INTEGER NOT NULL DEFAULT 0, error TEXT);"
    "CREATE TABLE events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,"
    " data TEXT);" UNDONE_SQL;

/* Statements prepared once at open: it keeps commit_chunk (run for every
 * chunk) free of parsing, and preparing them all checks the schema. */
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
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_INSERT_CHUNK] = "INSERT INTO chunks (chunk_no, run_id, lo, hi, rows, affected, duration_ms, attempts, error,"
                        " committed_at, skipped, batch, worker)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [ST_CHUNK_JOB] = "UPDATE job SET rows = rows + ?1, affected = affected + max(?2, 0), chunks = chunks + 1,"
                     " last_key = ?3, updated_at = ?4",
    [ST_CHUNK_RUN] = "UPDATE runs SET rows = rows + ?1, chunks = chunks + 1 WHERE id = ?2",
    [ST_GET_JOB] = "SELECT name, state, checksum, rows, affected, chunks, last_key, error, target, batch,"
                   " started_at, updated_at FROM job",
    [ST_INSERT_RUN] = "INSERT INTO runs (kind, outcome, started_at, ended_at) VALUES (?1, ?2, ?3, ?4)",
    [ST_BEGIN_RUN_JOB] = "UPDATE job SET state = ?1, error = NULL, updated_at = ?2,"
                         " started_at = CASE WHEN started_at = 0 THEN ?2 ELSE started_at END,"
                         " target = coalesce(?3, target), checksum = coalesce(?4, checksum)",
    [ST_FINISH_JOB] = "UPDATE job SET state = ?1, error = ?2, updated_at = ?3",
    [ST_FINISH_RUN] = "UPDATE runs SET outcome = ?1, ended_at = ?2, error = ?3 WHERE id = ?4",
    [ST_SET_BATCH] = "UPDATE job SET batch = ?1",
    [ST_LOG_EVENT] = "INSERT INTO events (at, kind, message, data) VALUES (?1, ?2, ?3, ?4)",
    [ST_LAST_CHUNK] = "SELECT chunk_no, lo, hi FROM chunks ORDER BY chunk_no DESC LIMIT 1",
    [ST_DELETE_CHUNKS] = "DELETE FROM chunks",
    [ST_RESET_JOB] = "UPDATE job SET rows = 0, affected = 0, chunks = 0, last_key = NULL, checksum = '',"
                     " started_at = 0",
    [ST_STAMP_JOB] = "UPDATE job SET state = ?1, error = NULL, updated_at = ?2, checksum = coalesce(?3, checksum)",
};

struct sl_ckpt {
    sqlite3 *db;
    char *path;
    char *job;
    sqlite3_stmt *stmts[ST_COUNT];
};

/* ---- states ---- */

static const char *const state_names[] = {
    [SL_STATE_PENDING] = "pending",         [SL_STATE_RUNNING] = "running", [SL_STATE_STOPPED] = "stopped",
    [SL_STATE_FAILED] = "failed",           [SL_STATE_DONE] = "done",       [SL_STATE_ROLLING_BACK] = "rolling_back",
    [SL_STATE_ROLLED_BACK] = "rolled_back",
};

#define NSTATES (sizeof state_names / sizeof state_names[0])

const char *sl_state_name(sl_state state)
{
    assert((size_t)state < NSTATES && "BUG: state out of range");
    return (size_t)state < NSTATES ? state_names[state] : "unknown";
}

int sl_state_parse(const char *name, sl_state *out)
{
    for (size_t i = 0; name && i < NSTATES; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *out = (sl_state)i;
            return 0;
        }
    }
    return -1;
}

/* ---- errors ---- */

static void append_rebuild_hint(sl_err *err, const char *path)
{
    sl_err_append(err,
                  "hint: the target database's sluice_progress table still records which chunks committed: "
                  "move %s aside and run `sluice up` to rebuild it",
                  path);
}

static int fail_corrupt(sl_err *err, const char *path, const char *detail)
{
    sl_err_set(err, "checkpoint file %s is corrupt or not a sluice checkpoint file (%s)", path, detail);
    append_rebuild_hint(err, path);
    return -1;
}

/* An SQLite failure on an open checkpoint, with a hint where the user can act. */
static int fail_db(sl_ckpt *ck, const char *what, sl_err *err)
{
    int code = sqlite3_errcode(ck->db);
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
        return fail_corrupt(err, ck->path, sqlite3_errmsg(ck->db));
    sl_err_set(err, "checkpoint file %s: %s: %s", ck->path, what, sqlite3_errmsg(ck->db));
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        sl_err_append(err, "hint: another process holds the file locked; is another sluice running this job?");
    else if (code == SQLITE_FULL)
        sl_err_append(err, "hint: the disk holding it is full");
    else if (code == SQLITE_READONLY || code == SQLITE_CANTOPEN || code == SQLITE_PERM)
        sl_err_append(err, "hint: check the permissions of the file and its directory");
    return -1;
}

/* ---- statement helpers ---- */

/* Every statement is reset and unbound after use, so the text bound with
 * SQLITE_STATIC never outlives the caller's string and no read transaction
 * stays open to hold back WAL checkpoints. */
static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int step_done(sl_ckpt *ck, sqlite3_stmt *st, const char *what, sl_err *err)
{
    int rc = sqlite3_step(st);
    int res = rc == SQLITE_DONE ? 0 : fail_db(ck, what, err);
    stmt_done(st);
    return res;
}

static void bind_text(sqlite3_stmt *st, int idx, const char *text)
{
    /* A NULL pointer binds SQL NULL (sqlite3_bind_text docs). */
    sqlite3_bind_text(st, idx, text, -1, SQLITE_STATIC);
}

static char *column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *text = sqlite3_column_text(st, col);
    return text ? sl_strdup((const char *)text) : NULL;
}

static int tx_begin(sl_ckpt *ck, sl_err *err)
{
    return step_done(ck, ck->stmts[ST_BEGIN], "cannot begin a transaction", err);
}

static int tx_commit(sl_ckpt *ck, sl_err *err)
{
    return step_done(ck, ck->stmts[ST_COMMIT], "cannot commit", err);
}

/* Roll back after a failure already in err; SQLite may have rolled back by
 * itself (SQLITE_FULL, IOERR), so only do it while a transaction is open. */
static int tx_abort(sl_ckpt *ck)
{
    if (!sqlite3_get_autocommit(ck->db)) {
        sqlite3_step(ck->stmts[ST_ROLLBACK]);
        stmt_done(ck->stmts[ST_ROLLBACK]);
    }
    return -1;
}

/* ---- paths and files ---- */

char *sl_ckpt_path(const char *dir, const char *job)
{
    size_t len = strlen(dir);
    const char *sep = len && dir[len - 1] == '/' ? "" : "/";
    return sl_asprintf("%s%s%s.sluice", dir, sep, job);
}

const char *sl_ckpt_file(const sl_ckpt *ckpt)
{
    return ckpt->path;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return sl_strdup(".");
    if (slash == path)
        return sl_strdup("/");
    return sl_strndup(path, (size_t)(slash - path));
}

/* mkdir -p with mode 0700: checkpoints hold the target's name and data. */
static int make_dirs(const char *dir, sl_err *err)
{
    char *walk = sl_strdup(dir);
    int res = 0;
    for (char *p = walk + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(walk, 0700) != 0 && errno != EEXIST) {
            sl_err_set(err, "cannot create checkpoint directory %s: %s", walk, strerror(errno));
            res = -1;
            break;
        }
        *p = saved;
        if (!saved)
            break;
    }
    free(walk);
    return res;
}

/* Make the rename/link of a new file durable. Best effort: a crash that loses
 * the directory entry only loses an empty, pending checkpoint. */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY);
    if (fd < 0)
        return;
    (void)fsync(fd);
    close(fd);
}

static int init_schema(sqlite3 *db, const char *job)
{
    char *sql = sl_asprintf("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; BEGIN; %s"
                            " PRAGMA application_id = %d; PRAGMA user_version = %d;",
                            schema_sql, CKPT_APPLICATION_ID, CKPT_SCHEMA_VERSION);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    free(sql);
    sqlite3_stmt *st = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT INTO job (id, name, state) VALUES (1, ?1, 'pending')", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        bind_text(st, 1, job);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    return rc;
}

/* Build the new file under a temporary name and link() it into place, so
 * that the path either does not exist or holds a complete checkpoint: a
 * crash half-way through creation can never leave a file that looks corrupt.
 * link() also refuses to replace a file another process created meanwhile. */
static int create_file(const char *path, const char *job, sl_err *err)
{
    char *dir = dir_of(path);
    int res = make_dirs(dir, err);
    char *tmp = sl_asprintf("%s.%ld.tmp", path, (long)getpid());
    sqlite3 *db = NULL;
    if (res == 0) {
        (void)unlink(tmp); /* a leftover of a crashed creation */
        /* created 0600 before SQLite writes a byte (its -wal file takes the same mode): it holds row values */
        int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int rc = fd < 0 ? SQLITE_CANTOPEN : SQLITE_OK;
        if (fd >= 0)
            close(fd);
        if (rc == SQLITE_OK)
            rc = sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK)
            rc = init_schema(db, job);
        if (rc != SQLITE_OK) {
            sl_err_set(err, "cannot create checkpoint file %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
            res = -1;
        }
    }
    /* Closing the last connection checkpoints the WAL into the file and removes it. */
    sqlite3_close(db);
    if (res == 0 && link(tmp, path) != 0 && errno != EEXIST) {
        sl_err_set(err, "cannot create checkpoint file %s: %s", path, strerror(errno));
        res = -1;
    }
    (void)unlink(tmp);
    if (res == 0)
        sync_dir(dir);
    free(tmp);
    free(dir);
    return res;
}

/* ---- open ---- */

static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* PRAGMA quick_check: the files are small, and a torn or truncated file is
 * better refused at open than half-read in the middle of a run. */
static int quick_check(sl_ckpt *ck, sl_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(ck->db, "PRAGMA quick_check", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int res = 0;
    if (rc == SQLITE_ROW) {
        const char *verdict = (const char *)sqlite3_column_text(st, 0);
        if (!verdict || strcmp(verdict, "ok") != 0)
            res = fail_corrupt(err, ck->path, verdict ? verdict : "?");
    } else {
        res = fail_db(ck, "cannot check the file", err);
    }
    sqlite3_finalize(st);
    return res;
}

static int check_header(sl_ckpt *ck, sl_err *err)
{
    int app_id = 0, version = 0;
    int rc = pragma_int(ck->db, "PRAGMA application_id", &app_id);
    if (rc == SQLITE_OK)
        rc = pragma_int(ck->db, "PRAGMA user_version", &version);
    if (rc != SQLITE_OK)
        return fail_db(ck, "cannot read the header", err);
    if (app_id != CKPT_APPLICATION_ID) {
        sl_err_set(err,
                   "checkpoint file %s is not a sluice checkpoint file (a SQLite database with application_id "
                   "0x%08x, expected 0x%08x)",
                   ck->path, (unsigned)app_id, (unsigned)CKPT_APPLICATION_ID);
        append_rebuild_hint(err, ck->path);
        return -1;
    }
    if (version > CKPT_SCHEMA_VERSION) {
        sl_err_set(err, "checkpoint file %s was written by a newer sluice (schema version %d, this one reads up to %d)",
                   ck->path, version, CKPT_SCHEMA_VERSION);
        sl_err_append(err, "hint: upgrade sluice");
        return -1;
    }
    if (version < 1)
        return fail_corrupt(err, ck->path, "no schema version");
    /* each step in one transaction: a file is at one version or the next */
    static const char *const upgrades[] = {
        [1] = "ALTER TABLE job ADD COLUMN db_id TEXT; ALTER TABLE job ADD COLUMN db_cluster TEXT;"
              " ALTER TABLE job ADD COLUMN db_name TEXT; PRAGMA user_version = 2;",
        [2] = "ALTER TABLE chunks ADD COLUMN batch INTEGER NOT NULL DEFAULT 0;"
              " ALTER TABLE chunks ADD COLUMN worker INTEGER NOT NULL DEFAULT 0;"
              " ALTER TABLE events ADD COLUMN data TEXT;" UNDONE_SQL " PRAGMA user_version = 3;",
    };
    for (; version < CKPT_SCHEMA_VERSION; version++) {
        char *sql = sl_asprintf("BEGIN IMMEDIATE; %s COMMIT", upgrades[version]);
        rc = sqlite3_exec(ck->db, sql, NULL, NULL, NULL);
        free(sql);
        if (rc != SQLITE_OK) {
            int failed = fail_db(ck, "cannot upgrade it to this sluice's schema", err);
            sqlite3_exec(ck->db, "ROLLBACK", NULL, NULL, NULL);
            return failed;
        }
    }
    return 0;
}

static int prepare_all(sl_ckpt *ck, sl_err *err)
{
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(ck->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &ck->stmts[i], NULL) != SQLITE_OK)
            return fail_corrupt(err, ck->path, sqlite3_errmsg(ck->db));
    }
    return 0;
}

static int check_job_name(sl_ckpt *ck, const char *job, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_GET_JOB];
    int rc = sqlite3_step(st);
    int res = 0;
    if (rc != SQLITE_ROW) {
        res = rc == SQLITE_DONE ? fail_corrupt(err, ck->path, "no job row") : fail_db(ck, "cannot read the job", err);
    } else if (!sqlite3_column_text(st, 0) || strcmp((const char *)sqlite3_column_text(st, 0), job) != 0) {
        const char *owner = (const char *)sqlite3_column_text(st, 0);
        sl_err_set(err, "checkpoint file %s belongs to job \"%s\", not \"%s\"", ck->path, owner ? owner : "", job);
        sl_err_append(err, "hint: was the job file renamed? rename the checkpoint file to match, or move it aside");
        res = -1;
    }
    stmt_done(st);
    return res;
}

static int configure(sl_ckpt *ck, sl_err *err)
{
    /* WAL so that status can read while a run writes; FULL so that a chunk
     * recorded here survives power loss (it is already committed in the target). */
    if (sqlite3_exec(ck->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK)
        return fail_db(ck, "cannot configure the file", err);
    return 0;
}

static int open_checked(sl_ckpt *ck, const char *job, sl_err *err)
{
    int rc = sqlite3_open_v2(ck->path, &ck->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sl_err_set(err, "cannot open checkpoint file %s: %s", ck->path,
                   ck->db ? sqlite3_errmsg(ck->db) : sqlite3_errstr(rc));
        return -1;
    }
    sqlite3_busy_timeout(ck->db, CKPT_BUSY_TIMEOUT_MS);
    if (check_header(ck, err) != 0 || quick_check(ck, err) != 0)
        return -1;
    if (prepare_all(ck, err) != 0 || check_job_name(ck, job, err) != 0)
        return -1;
    return configure(ck, err);
}

int sl_ckpt_open(const char *path, const char *job, int create, sl_ckpt **out, sl_err *err)
{
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno != ENOENT) {
            sl_err_set(err, "cannot open checkpoint file %s: %s", path, strerror(errno));
            return -1;
        }
        if (!create) {
            sl_err_set(err, "checkpoint file %s does not exist", path);
            return -2;
        }
        if (create_file(path, job, err) != 0)
            return -1;
    } else if (!S_ISREG(sb.st_mode)) {
        sl_err_set(err, "checkpoint file %s is not a regular file", path);
        return -1;
    } else if (sb.st_size == 0) {
        return fail_corrupt(err, path, "the file is empty");
    }
    sl_ckpt *ck = sl_calloc(1, sizeof *ck);
    ck->path = sl_strdup(path);
    ck->job = sl_strdup(job);
    if (open_checked(ck, job, err) != 0) {
        sl_ckpt_close(ck);
        return -1;
    }
    *out = ck;
    return 0;
}

void sl_ckpt_close(sl_ckpt *ckpt)
{
    if (!ckpt)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(ckpt->stmts[i]);
    int rc = sqlite3_close(ckpt->db);
    assert(rc == SQLITE_OK && "BUG: checkpoint closed with a statement still open");
    (void)rc;
    free(ckpt->path);
    free(ckpt->job);
    free(ckpt);
}

/* ---- reading ---- */

void sl_ckpt_job_free(sl_ckpt_job *job)
{
    if (!job)
        return;
    free(job->job);
    free(job->last_key);
    free(job->error);
    free(job->target);
    memset(job, 0, sizeof *job);
}

static int read_job_row(sl_ckpt *ck, sqlite3_stmt *st, sl_ckpt_job *out, sl_err *err)
{
    const char *state = (const char *)sqlite3_column_text(st, 1);
    const char *checksum = (const char *)sqlite3_column_text(st, 2);
    if (sl_state_parse(state, &out->state) != 0)
        return fail_corrupt(err, ck->path, "unknown job state");
    int n = snprintf(out->checksum, sizeof out->checksum, "%s", checksum ? checksum : "");
    if (n < 0 || (size_t)n >= sizeof out->checksum)
        return fail_corrupt(err, ck->path, "bad checksum");
    out->job = column_dup(st, 0);
    out->rows = sqlite3_column_int64(st, 3);
    out->affected = sqlite3_column_int64(st, 4);
    out->chunks = sqlite3_column_int64(st, 5);
    out->last_key = column_dup(st, 6);
    out->error = column_dup(st, 7);
    out->target = column_dup(st, 8);
    out->batch = sqlite3_column_int64(st, 9);
    out->started_at_ms = sqlite3_column_int64(st, 10);
    out->updated_at_ms = sqlite3_column_int64(st, 11);
    return 0;
}

int sl_ckpt_get_job(sl_ckpt *ckpt, sl_ckpt_job *out, sl_err *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = ckpt->stmts[ST_GET_JOB];
    int rc = sqlite3_step(st);
    int res;
    if (rc == SQLITE_ROW)
        res = read_job_row(ckpt, st, out, err);
    else
        res =
            rc == SQLITE_DONE ? fail_corrupt(err, ckpt->path, "no job row") : fail_db(ckpt, "cannot read the job", err);
    stmt_done(st);
    return res;
}

int sl_ckpt_last_chunk(sl_ckpt *ckpt, int64_t *chunk_no, char **lo, char **hi, sl_err *err)
{
    *chunk_no = 0;
    *lo = *hi = NULL;
    sqlite3_stmt *st = ckpt->stmts[ST_LAST_CHUNK];
    int rc = sqlite3_step(st);
    int res = 0;
    if (rc == SQLITE_ROW) {
        *chunk_no = sqlite3_column_int64(st, 0);
        *lo = column_dup(st, 1);
        *hi = column_dup(st, 2);
    } else if (rc != SQLITE_DONE) {
        res = fail_db(ckpt, "cannot read the last chunk", err);
    }
    stmt_done(st);
    return res;
}

static void read_chunk_row(sqlite3_stmt *st, sl_ckpt_chunk *chunk)
{
    chunk->chunk_no = sqlite3_column_int64(st, 0);
    chunk->lo = (const char *)sqlite3_column_text(st, 1);
    chunk->hi = (const char *)sqlite3_column_text(st, 2);
    chunk->rows = sqlite3_column_int64(st, 3);
    chunk->affected = sqlite3_column_int64(st, 4);
    chunk->duration_ms = sqlite3_column_int64(st, 5);
    chunk->attempts = sqlite3_column_int64(st, 6);
    chunk->error = (const char *)sqlite3_column_text(st, 7);
    chunk->committed_at_ms = sqlite3_column_int64(st, 8);
    chunk->skipped = sqlite3_column_int(st, 9);
    chunk->batch = sqlite3_column_int64(st, 10);
    chunk->worker = sqlite3_column_int64(st, 11);
}

/* Prepared per call rather than cached: fn may call back into this
 * checkpoint, even into each_chunk, while the walk is open. */
int sl_ckpt_each_chunk(sl_ckpt *ckpt, int64_t after, int (*fn)(const sl_ckpt_chunk *chunk, void *arg), void *arg,
                       sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ckpt->db,
                           "SELECT chunk_no, lo, hi, rows, affected, duration_ms, attempts, error, committed_at,"
                           " skipped, batch, worker FROM chunks WHERE chunk_no > ?1 ORDER BY chunk_no",
                           -1, &st, NULL) != SQLITE_OK)
        return fail_db(ckpt, "cannot read chunks", err);
    sqlite3_bind_int64(st, 1, after);
    int rc = SQLITE_DONE, res = 0;
    while (res == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        sl_ckpt_chunk chunk;
        read_chunk_row(st, &chunk);
        res = fn(&chunk, arg);
    }
    if (res == 0 && rc != SQLITE_DONE)
        res = fail_db(ckpt, "cannot read chunks", err);
    sqlite3_finalize(st);
    return res;
}

void sl_ckpt_run_free(sl_ckpt_run *run)
{
    if (!run)
        return;
    free(run->job);
    free(run->kind);
    free(run->outcome);
    free(run->error);
    memset(run, 0, sizeof *run);
}

static void read_run_row(sl_ckpt *ck, sqlite3_stmt *st, sl_ckpt_run *run)
{
    run->id = sqlite3_column_int64(st, 0);
    run->job = sl_strdup(ck->job);
    run->kind = column_dup(st, 1);
    run->outcome = column_dup(st, 2);
    run->started_at_ms = sqlite3_column_int64(st, 3);
    run->ended_at_ms = sqlite3_column_int64(st, 4);
    run->rows = sqlite3_column_int64(st, 5);
    run->chunks = sqlite3_column_int64(st, 6);
    run->error = column_dup(st, 7);
}

int sl_ckpt_list_runs(sl_ckpt *ckpt, sl_ckpt_run **runs, size_t *nruns, sl_err *err)
{
    *runs = NULL;
    *nruns = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ckpt->db,
                           "SELECT id, kind, outcome, started_at, ended_at, rows, chunks, error FROM runs ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return fail_db(ckpt, "cannot read runs", err);
    size_t count = 0, cap = 0;
    sl_ckpt_run *list = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 8;
            list = sl_realloc(list, cap * sizeof *list);
        }
        read_run_row(ckpt, st, &list[count++]);
    }
    int res = rc == SQLITE_DONE ? 0 : fail_db(ckpt, "cannot read runs", err);
    sqlite3_finalize(st);
    if (res != 0) {
        for (size_t i = 0; i < count; i++)
            sl_ckpt_run_free(&list[i]);
        free(list);
        return res;
    }
    *runs = list;
    *nruns = count;
    return 0;
}

/* ---- writing ---- */

static int insert_chunk(sl_ckpt *ck, int64_t run_id, const sl_ckpt_chunk *chunk, int64_t at, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_INSERT_CHUNK];
    sqlite3_bind_int64(st, 1, chunk->chunk_no);
    sqlite3_bind_int64(st, 2, run_id);
    bind_text(st, 3, chunk->lo);
    bind_text(st, 4, chunk->hi);
    sqlite3_bind_int64(st, 5, chunk->rows);
    sqlite3_bind_int64(st, 6, chunk->affected);
    sqlite3_bind_int64(st, 7, chunk->duration_ms);
    sqlite3_bind_int64(st, 8, chunk->attempts);
    bind_text(st, 9, chunk->error);
    sqlite3_bind_int64(st, 10, at);
    sqlite3_bind_int(st, 11, chunk->skipped ? 1 : 0);
    sqlite3_bind_int64(st, 12, chunk->batch);
    sqlite3_bind_int64(st, 13, chunk->worker);
    int rc = sqlite3_step(st);
    int res = 0;
    if (rc != SQLITE_DONE && sqlite3_extended_errcode(ck->db) == SQLITE_CONSTRAINT_PRIMARYKEY) {
        sl_err_set(err, "checkpoint file %s: chunk %lld is already recorded", ck->path, (long long)chunk->chunk_no);
        res = -1;
    } else if (rc != SQLITE_DONE) {
        res = fail_db(ck, "cannot record a chunk", err);
    }
    stmt_done(st);
    return res;
}

static int advance_job(sl_ckpt *ck, const sl_ckpt_chunk *chunk, int64_t at, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_CHUNK_JOB];
    sqlite3_bind_int64(st, 1, chunk->rows);
    sqlite3_bind_int64(st, 2, chunk->affected);
    bind_text(st, 3, chunk->hi);
    sqlite3_bind_int64(st, 4, at);
    return step_done(ck, st, "cannot update the job", err);
}

/* An UPDATE of one run: a run id the file does not know is a caller's mistake. */
static int step_run(sl_ckpt *ck, sqlite3_stmt *st, int64_t run_id, const char *what, sl_err *err)
{
    if (step_done(ck, st, what, err) != 0)
        return -1;
    if (sqlite3_changes(ck->db) == 1)
        return 0;
    sl_err_set(err, "checkpoint file %s: run %lld does not exist", ck->path, (long long)run_id);
    return -1;
}

static int advance_run(sl_ckpt *ck, int64_t run_id, const sl_ckpt_chunk *chunk, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_CHUNK_RUN];
    sqlite3_bind_int64(st, 1, chunk->rows);
    sqlite3_bind_int64(st, 2, run_id);
    return step_run(ck, st, run_id, "cannot update the run", err);
}

int sl_ckpt_commit_chunk(sl_ckpt *ckpt, int64_t run_id, const sl_ckpt_chunk *chunk, sl_err *err)
{
    assert(chunk && chunk->chunk_no > 0 && chunk->lo && chunk->hi && "BUG: incomplete chunk");
    int64_t now = sl_now_ms();
    int64_t at = chunk->committed_at_ms ? chunk->committed_at_ms : now;
    /* The one write per chunk skips the fsync: the chunk is already committed
     * in the target's sluice_progress, and reconcile copies it back if power
     * loss takes it from here. Everything that exists only here (snapshots,
     * stamps, state) keeps synchronous=FULL. */
    if (sqlite3_exec(ckpt->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK)
        return fail_db(ckpt, "cannot configure the file", err);
    int rc = -1;
    if (tx_begin(ckpt, err) != 0)
        goto out;
    if (insert_chunk(ckpt, run_id, chunk, at, err) != 0 || advance_job(ckpt, chunk, now, err) != 0 ||
        (run_id > 0 && advance_run(ckpt, run_id, chunk, err) != 0) || tx_commit(ckpt, err) != 0) {
        rc = tx_abort(ckpt);
        goto out;
    }
    rc = 0;
out:
    if (sqlite3_exec(ckpt->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK && rc == 0)
        rc = fail_db(ckpt, "cannot configure the file", err);
    return rc;
}

static int insert_run(sl_ckpt *ck, const char *kind, const char *outcome, int64_t started, int64_t ended,
                      int64_t *run_id, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_INSERT_RUN];
    bind_text(st, 1, kind);
    bind_text(st, 2, outcome);
    sqlite3_bind_int64(st, 3, started);
    sqlite3_bind_int64(st, 4, ended);
    if (step_done(ck, st, "cannot record a run", err) != 0)
        return -1;
    if (run_id)
        *run_id = sqlite3_last_insert_rowid(ck->db);
    return 0;
}

int sl_ckpt_begin_run(sl_ckpt *ckpt, const char *kind, sl_state state, const char *checksum, const char *target,
                      int64_t *run_id, sl_err *err)
{
    int64_t now = sl_now_ms();
    if (tx_begin(ckpt, err) != 0)
        return -1;
    /* The caller holds the run lock, so a run still marked running died
     * without closing itself (kill -9, power loss). */
    if (sqlite3_exec(ckpt->db, "UPDATE runs SET outcome = 'interrupted' WHERE outcome = 'running'", NULL, NULL, NULL) !=
        SQLITE_OK) {
        sl_err_set(err, "%s: cannot close interrupted runs: %s", ckpt->path, sqlite3_errmsg(ckpt->db));
        return tx_abort(ckpt);
    }
    if (insert_run(ckpt, kind, "running", now, 0, run_id, err) != 0)
        return tx_abort(ckpt);
    sqlite3_stmt *st = ckpt->stmts[ST_BEGIN_RUN_JOB];
    bind_text(st, 1, sl_state_name(state));
    sqlite3_bind_int64(st, 2, now);
    bind_text(st, 3, target);
    bind_text(st, 4, checksum);
    if (step_done(ckpt, st, "cannot update the job", err) != 0)
        return tx_abort(ckpt);
    if (tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

static int close_run(sl_ckpt *ck, int64_t run_id, const char *outcome, const char *error, int64_t now, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_FINISH_RUN];
    bind_text(st, 1, outcome);
    sqlite3_bind_int64(st, 2, now);
    bind_text(st, 3, error);
    sqlite3_bind_int64(st, 4, run_id);
    return step_run(ck, st, run_id, "cannot close the run", err);
}

int sl_ckpt_finish_run(sl_ckpt *ckpt, int64_t run_id, sl_state state, const char *error, sl_err *err)
{
    return sl_ckpt_finish_run_as(ckpt, run_id, state, sl_state_name(state), error, err);
}

int sl_ckpt_finish_run_as(sl_ckpt *ckpt, int64_t run_id, sl_state state, const char *outcome, const char *error,
                          sl_err *err)
{
    int64_t now = sl_now_ms();
    if (tx_begin(ckpt, err) != 0)
        return -1;
    sqlite3_stmt *st = ckpt->stmts[ST_FINISH_JOB];
    bind_text(st, 1, sl_state_name(state));
    bind_text(st, 2, error);
    sqlite3_bind_int64(st, 3, now);
    if (step_done(ckpt, st, "cannot update the job", err) != 0)
        return tx_abort(ckpt);
    if (run_id > 0 && close_run(ckpt, run_id, outcome, error, now, err) != 0)
        return tx_abort(ckpt);
    if (tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

int sl_ckpt_set_batch(sl_ckpt *ckpt, int64_t batch, sl_err *err)
{
    sqlite3_stmt *st = ckpt->stmts[ST_SET_BATCH];
    sqlite3_bind_int64(st, 1, batch);
    return step_done(ckpt, st, "cannot record the batch size", err);
}

static int stamp_job(sl_ckpt *ck, sl_state state, const char *checksum, int64_t now, sl_err *err)
{
    if (state == SL_STATE_PENDING) {
        if (step_done(ck, ck->stmts[ST_DELETE_CHUNKS], "cannot forget the chunks", err) != 0)
            return -1;
        if (step_done(ck, ck->stmts[ST_RESET_JOB], "cannot reset the job", err) != 0)
            return -1;
        checksum = NULL; /* the next run's first chunk records it */
    }
    sqlite3_stmt *st = ck->stmts[ST_STAMP_JOB];
    bind_text(st, 1, sl_state_name(state));
    sqlite3_bind_int64(st, 2, now);
    bind_text(st, 3, checksum && checksum[0] ? checksum : NULL);
    return step_done(ck, st, "cannot update the job", err);
}

int sl_ckpt_stamp(sl_ckpt *ckpt, sl_state state, const char *checksum, sl_err *err)
{
    int64_t now = sl_now_ms();
    if (tx_begin(ckpt, err) != 0)
        return -1;
    if (stamp_job(ckpt, state, checksum, now, err) != 0)
        return tx_abort(ckpt);
    if (insert_run(ckpt, "stamp", sl_state_name(state), now, now, NULL, err) != 0)
        return tx_abort(ckpt);
    if (tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

int sl_ckpt_log_event(sl_ckpt *ckpt, const char *kind, const char *message, sl_err *err)
{
    return sl_ckpt_log_event_data(ckpt, kind, message, NULL, err);
}

int sl_ckpt_log_event_data(sl_ckpt *ckpt, const char *kind, const char *message, const char *data, sl_err *err)
{
    sqlite3_stmt *st = ckpt->stmts[ST_LOG_EVENT];
    sqlite3_bind_int64(st, 1, sl_now_ms());
    bind_text(st, 2, kind);
    bind_text(st, 3, message ? message : "");
    bind_text(st, 4, data);
    return step_done(ckpt, st, "cannot log an event", err);
}

/* ---- rollback ---- */

struct sqlite3 *sl_ckpt_sqlite(sl_ckpt *ckpt)
{
    return ckpt->db;
}

/* The summary follows the chunks left: `down` removes them from the top. */
static int resummarize(sl_ckpt *ck, sl_err *err)
{
    static const char sql[] = "UPDATE job SET rows = (SELECT coalesce(sum(rows), 0) FROM chunks),"
                              " affected = (SELECT coalesce(sum(max(affected, 0)), 0) FROM chunks),"
                              " chunks = (SELECT count(*) FROM chunks),"
                              " last_key = (SELECT hi FROM chunks ORDER BY chunk_no DESC LIMIT 1), updated_at = ?1";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ck->db, sql, -1, &st, NULL) != SQLITE_OK)
        return fail_db(ck, "cannot update the job", err);
    sqlite3_bind_int64(st, 1, sl_now_ms());
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail_db(ck, "cannot update the job", err);
    sqlite3_finalize(st);
    return rc;
}

static int delete_chunks(sl_ckpt *ck, const char *sql, int64_t chunk_no, sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ck->db, sql, -1, &st, NULL) != SQLITE_OK)
        return fail_db(ck, "cannot forget chunks", err);
    sqlite3_bind_int64(st, 1, chunk_no);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail_db(ck, "cannot forget chunks", err);
    sqlite3_finalize(st);
    return rc;
}

/* What `down` undid, kept for `report` after the chunk itself is gone. */
static int insert_undone(sl_ckpt *ck, int64_t run_id, int64_t chunk_no, int64_t rows, int64_t duration_ms, sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ck->db,
                           "INSERT INTO undone (run_id, chunk_no, rows, duration_ms, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                           -1, &st, NULL) != SQLITE_OK)
        return fail_db(ck, "cannot record an undone chunk", err);
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, chunk_no);
    sqlite3_bind_int64(st, 3, rows);
    sqlite3_bind_int64(st, 4, duration_ms);
    sqlite3_bind_int64(st, 5, sl_now_ms());
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail_db(ck, "cannot record an undone chunk", err);
    sqlite3_finalize(st);
    return rc;
}

int sl_ckpt_undo_chunk(sl_ckpt *ckpt, int64_t run_id, int64_t chunk_no, int64_t rows, int64_t duration_ms, sl_err *err)
{
    if (tx_begin(ckpt, err) != 0)
        return -1;
    if (run_id > 0 && insert_undone(ckpt, run_id, chunk_no, rows, duration_ms, err) != 0)
        return tx_abort(ckpt);
    if (delete_chunks(ckpt, "DELETE FROM chunks WHERE chunk_no = ?1", chunk_no, err) != 0 ||
        resummarize(ckpt, err) != 0)
        return tx_abort(ckpt);
    if (run_id > 0) {
        sqlite3_stmt *st = ckpt->stmts[ST_CHUNK_RUN];
        sqlite3_bind_int64(st, 1, rows);
        sqlite3_bind_int64(st, 2, run_id);
        if (step_run(ckpt, st, run_id, "cannot update the run", err) != 0)
            return tx_abort(ckpt);
    }
    if (tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

int sl_ckpt_forget_chunks(sl_ckpt *ckpt, const int64_t *nums, size_t n, sl_err *err)
{
    if (n == 0)
        return 0;
    if (tx_begin(ckpt, err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (delete_chunks(ckpt, "DELETE FROM chunks WHERE chunk_no = ?1", nums[i], err) != 0)
            return tx_abort(ckpt);
    if (resummarize(ckpt, err) != 0 || tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

int sl_ckpt_each_skipped(sl_ckpt *ckpt, int (*fn)(const char *key, const char *error, void *arg), void *arg,
                         sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ckpt->db, "SELECT hi, error FROM chunks WHERE skipped <> 0 ORDER BY chunk_no", -1, &st,
                           NULL) != SQLITE_OK) {
        sl_err_set(err, "checkpoint file %s: cannot list skipped rows: %s", ckpt->path, sqlite3_errmsg(ckpt->db));
        return -1;
    }
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1), arg);
    if (rc == 0 && step != SQLITE_DONE) {
        sl_err_set(err, "checkpoint file %s: cannot list skipped rows: %s", ckpt->path, sqlite3_errmsg(ckpt->db));
        rc = -1;
    }
    sqlite3_finalize(st);
    return rc;
}
