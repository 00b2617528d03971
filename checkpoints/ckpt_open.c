/* ckpt_open.c: a checkpoint file's schema, and creating, checking, upgrading, opening and closing it. */
#include "sluice/checkpoints/ckpt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

/* "SLC1": lets open() tell a sluice checkpoint from any other SQLite file. */
#define CKPT_APPLICATION_ID  0x534c4331
#define CKPT_SCHEMA_VERSION  5
#define CKPT_BUSY_TIMEOUT_MS 5000

/* Version 3: each chunk's batch and worker, events' data (JSON), and the
 * chunks `down` undid, for `report`. Version 4: the database's timeline
 * (sync.c). Version 5: when its server started (sync.c). */
#define UNDONE_SQL                                                                        \
    "CREATE TABLE undone (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL," \
    " chunk_no INTEGER NOT NULL, rows INTEGER NOT NULL, duration_ms INTEGER NOT NULL, at INTEGER NOT NULL);"

static const char schema_sql[] =
    "CREATE TABLE job ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL, state TEXT NOT NULL,"
    " checksum TEXT NOT NULL DEFAULT '', rows INTEGER NOT NULL DEFAULT 0, affected INTEGER NOT NULL DEFAULT 0,"
    " chunks INTEGER NOT NULL DEFAULT 0, last_key TEXT, error TEXT, target TEXT,"
    " batch INTEGER NOT NULL DEFAULT 0, started_at INTEGER NOT NULL DEFAULT 0,"
    " updated_at INTEGER NOT NULL DEFAULT 0, db_id TEXT, db_cluster TEXT, db_name TEXT, db_timeline INTEGER,"
    " db_started INTEGER);"
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

/* The SQL of each statement of enum ckpt_stmt (ckpt_internal.h). */
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
    [ST_INSERT_UNDONE] = "INSERT INTO undone (run_id, chunk_no, rows, duration_ms, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    /* the totals less the chunk ?1 about to be deleted (none when the file never had it), without summing
     * every chunk again: a down of n chunks stays linear */
    [ST_UNDO_JOB] = "UPDATE job SET rows = job.rows - c.rows, affected = job.affected - max(c.affected, 0),"
                    " chunks = job.chunks - 1, updated_at = ?2,"
                    " last_key = (SELECT hi FROM chunks WHERE chunk_no <> ?1 ORDER BY chunk_no DESC LIMIT 1)"
                    " FROM (SELECT rows, affected FROM chunks WHERE chunk_no = ?1) AS c",
    [ST_DELETE_CHUNK] = "DELETE FROM chunks WHERE chunk_no = ?1",
};

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

/* The error for a symbolic link on the way to a checkpoint file that points nowhere. */
static int dangling_link(const char *link, int is_file, sl_err *err)
{
    char target[4096];
    ssize_t len = readlink(link, target, sizeof target - 1);
    sl_buf shown = {0};
    sl_buf_add_visible(&shown, target, len > 0 ? (size_t)len : 0, 1);
    sl_err_set(err, "checkpoint %s %s is a symbolic link to %s, which does not exist", is_file ? "file" : "directory",
               link, shown.data);
    sl_buf_free(&shown);
    if (is_file)
        sl_err_append(err, "hint: mount or restore what it points to; or remove the link, and `sluice up` writes a new "
                           "checkpoint file there from what the target database's sluice_progress table records");
    else
        sl_err_append(err, "hint: mount or restore what it points to, or point --checkpoints at a directory that "
                           "exists (a missing one is created)");
    return -1;
}

/* A path that is not there because a symbolic link on the way points nowhere
 * (a volume not mounted, a target moved) is refused, file or directory:
 * making what the link points to would put the checkpoint where nobody
 * looks for it, and taking it for a missing file would start afresh. 0 when
 * there is none; -1 with err naming the link and its target. */
static int refuse_dangling(const char *path, sl_err *err)
{
    char *walk = sl_strdup(path);
    int res = 0;
    for (char *p = walk + 1; res == 0; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        struct stat sb;
        if (lstat(walk, &sb) == 0 && S_ISLNK(sb.st_mode) && stat(walk, &sb) != 0 && errno == ENOENT)
            res = dangling_link(walk, saved == '\0', err);
        *p = saved;
        if (!saved)
            break;
    }
    free(walk);
    return res;
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

/* Write a file's data to the disk before a link makes it visible. */
static int sync_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Made with no fsync: nothing can read the file before create_file syncs
 * it whole and links it into place. */
static int init_schema(sqlite3 *db, const char *job)
{
    char *sql = sl_asprintf("PRAGMA synchronous = OFF; PRAGMA journal_mode = WAL; BEGIN; %s"
                            " PRAGMA application_id = %d; PRAGMA user_version = %d;",
                            schema_sql, CKPT_APPLICATION_ID, CKPT_SCHEMA_VERSION);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    free(sql);
    sqlite3_stmt *st = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "INSERT INTO job (id, name, state) VALUES (1, ?1, 'pending')", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        ckpt_bind_text(st, 1, job);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    return rc;
}

/* The empty file a new checkpoint is built in, beside path: its directory
 * made, a leftover of a crashed creation removed, created 0600 before
 * SQLite writes a byte (its -wal file takes the same mode: it holds row
 * values). 0 with *tmp (malloc'd, also on failure), or -1 with err. */
static int create_tmp(const char *path, const char *dir, char **tmp, sl_err *err)
{
    *tmp = sl_asprintf("%s.%ld.tmp", path, (long)getpid());
    if (make_dirs(dir, err) != 0)
        return -1;
    (void)unlink(*tmp);
    int fd = open(*tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        sl_err_set(err, "cannot create checkpoint file %s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

int sl_ckpt_can_create(const char *path, sl_err *err)
{
    if (refuse_dangling(path, err) != 0)
        return -1;
    char *dir = dir_of(path), *tmp;
    int res = create_tmp(path, dir, &tmp, err);
    (void)unlink(tmp);
    free(tmp);
    free(dir);
    return res;
}

/* Build the new file under a temporary name and link() it into place, so
 * that the path either does not exist or holds a complete checkpoint: a
 * crash half-way through creation can never leave a file that looks corrupt.
 * link() also refuses to replace a file another process created meanwhile. */
static int create_file(const char *path, const char *job, sl_err *err)
{
    char *dir = dir_of(path), *tmp;
    int res = create_tmp(path, dir, &tmp, err);
    sqlite3 *db = NULL;
    if (res == 0) {
        int rc = sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK)
            rc = init_schema(db, job);
        if (rc != SQLITE_OK) {
            sl_err_set(err, "cannot create checkpoint file %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
            res = -1;
        }
    }
    /* Closing the last connection checkpoints the WAL into the file and removes it. */
    sqlite3_close(db);
    if (res == 0 && sync_file(tmp) != 0) {
        sl_err_set(err, "cannot create checkpoint file %s: %s", path, strerror(errno));
        res = -1;
    }
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
            res = ckpt_fail_corrupt(err, ck->path, verdict ? verdict : "?");
    } else {
        res = ckpt_fail_db(ck, "cannot check the file", err);
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
        return ckpt_fail_db(ck, "cannot read the header", err);
    if (app_id != CKPT_APPLICATION_ID) {
        sl_err_set(err,
                   "checkpoint file %s is not a sluice checkpoint file (a SQLite database with application_id "
                   "0x%08x, expected 0x%08x)",
                   ck->path, (unsigned)app_id, (unsigned)CKPT_APPLICATION_ID);
        ckpt_append_rebuild_hint(err, ck->path);
        return -1;
    }
    if (version > CKPT_SCHEMA_VERSION) {
        sl_err_set(err, "checkpoint file %s was written by a newer sluice (schema version %d, this one reads up to %d)",
                   ck->path, version, CKPT_SCHEMA_VERSION);
        sl_err_append(err, "hint: upgrade sluice");
        return -1;
    }
    if (version < 1)
        return ckpt_fail_corrupt(err, ck->path, "no schema version");
    /* each step in one transaction: a file is at one version or the next */
    static const char *const upgrades[] = {
        [1] = "ALTER TABLE job ADD COLUMN db_id TEXT; ALTER TABLE job ADD COLUMN db_cluster TEXT;"
              " ALTER TABLE job ADD COLUMN db_name TEXT; PRAGMA user_version = 2;",
        [2] = "ALTER TABLE chunks ADD COLUMN batch INTEGER NOT NULL DEFAULT 0;"
              " ALTER TABLE chunks ADD COLUMN worker INTEGER NOT NULL DEFAULT 0;"
              " ALTER TABLE events ADD COLUMN data TEXT;" UNDONE_SQL " PRAGMA user_version = 3;",
        [3] = "ALTER TABLE job ADD COLUMN db_timeline INTEGER; PRAGMA user_version = 4;",
        [4] = "ALTER TABLE job ADD COLUMN db_started INTEGER; PRAGMA user_version = 5;",
    };
    for (; version < CKPT_SCHEMA_VERSION; version++) {
        char *sql = sl_asprintf("BEGIN IMMEDIATE; %s COMMIT", upgrades[version]);
        rc = sqlite3_exec(ck->db, sql, NULL, NULL, NULL);
        free(sql);
        if (rc != SQLITE_OK) {
            int failed = ckpt_fail_db(ck, "cannot upgrade it to this sluice's schema", err);
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
            return ckpt_fail_corrupt(err, ck->path, sqlite3_errmsg(ck->db));
    }
    return 0;
}

/* The job row: there, of this job, in a state sluice knows. */
static int check_job_row(sl_ckpt *ck, const char *job, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_GET_JOB];
    int rc = sqlite3_step(st);
    int res = 0;
    if (rc != SQLITE_ROW) {
        res = rc == SQLITE_DONE ? ckpt_fail_corrupt(err, ck->path, "no job row")
                                : ckpt_fail_db(ck, "cannot read the job", err);
    } else if (!sqlite3_column_text(st, 0) || strcmp((const char *)sqlite3_column_text(st, 0), job) != 0) {
        const char *owner = (const char *)sqlite3_column_text(st, 0);
        sl_err_set(err, "checkpoint file %s belongs to job \"%s\", not \"%s\"", ck->path, owner ? owner : "", job);
        sl_err_append(err, "hint: was the job file renamed? rename the checkpoint file to match, or move it aside");
        res = -1;
    } else {
        /* read at open, as the name is: a file whose state no command can take is refused before anything
         * is written, by every command alike */
        sl_state state;
        res = ckpt_read_state(ck, st, &state, err);
    }
    ckpt_stmt_done(st);
    return res;
}

static int configure(sl_ckpt *ck, sl_err *err)
{
    /* WAL so that status can read while a run writes; FULL so that a chunk
     * recorded here survives power loss (it is already committed in the target). */
    if (sqlite3_exec(ck->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK)
        return ckpt_fail_db(ck, "cannot configure the file", err);
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
    if (prepare_all(ck, err) != 0 || check_job_row(ck, job, err) != 0)
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
        if (refuse_dangling(path, err) != 0)
            return -1;
        if (!create) {
            sl_err_set(err, "checkpoint file %s does not exist", path);
            return SL_CKPT_MISSING;
        }
        if (create_file(path, job, err) != 0)
            return -1;
    } else if (!S_ISREG(sb.st_mode)) {
        sl_err_set(err, "checkpoint file %s is not a regular file", path);
        return -1;
    } else if (sb.st_size == 0) {
        return ckpt_fail_corrupt(err, path, "the file is empty");
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
