/* test_ckpt.c: the checkpoint store on real SQLite files in a temporary directory. */
#include "check.h"
#include "sluice/checkpoints/ckpt.h"

#include <dirent.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_dir[] = "/tmp/sluice-test-ckpt-XXXXXX";

static char *tmp_path(const char *name)
{
    return sl_asprintf("%s/%s", tmp_dir, name);
}

static void remove_tree(const char *path)
{
    DIR *dir = opendir(path);
    if (dir) {
        struct dirent *ent;
        while ((ent = readdir(dir)) != NULL) {
            if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
                continue;
            char *child = sl_asprintf("%s/%s", path, ent->d_name);
            remove_tree(child);
            free(child);
        }
        closedir(dir);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fwrite(data, 1, len, f) == len);
    fclose(f);
}

/* Run SQL on a file with plain sqlite3, outside the module under test. */
static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    char *msg = NULL;
    CHECK(sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK);
    if (msg)
        printf("# %s\n", msg);
    sqlite3_free(msg);
    sqlite3_close(db);
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t value = -1;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        value = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return value;
}

static sl_ckpt *must_open(const char *path, const char *job, int create)
{
    sl_ckpt *ck = NULL;
    sl_err err = {{0}};
    int rc = sl_ckpt_open(path, job, create, &ck, &err);
    CHECK(rc == 0);
    if (rc != 0)
        printf("# %s\n", err.msg);
    return ck;
}

static sl_ckpt_chunk make_chunk(int64_t no, const char *lo, const char *hi, int64_t rows)
{
    sl_ckpt_chunk c = {0};
    c.chunk_no = no;
    c.lo = lo;
    c.hi = hi;
    c.rows = rows;
    c.affected = rows - 1;
    c.duration_ms = 10 * no;
    c.attempts = 1;
    return c;
}

static void commit_ok(sl_ckpt *ck, int64_t run_id, sl_ckpt_chunk chunk)
{
    sl_err err = {{0}};
    int rc = sl_ckpt_commit_chunk(ck, run_id, &chunk, &err);
    CHECK(rc == 0);
    if (rc != 0)
        printf("# %s\n", err.msg);
}

static int64_t begin_up(sl_ckpt *ck, const char *checksum)
{
    sl_err err = {{0}};
    int64_t run_id = 0;
    int rc = sl_ckpt_begin_run(ck, "up", SL_STATE_RUNNING, checksum, "postgresql://app@db/prod", &run_id, &err);
    CHECK(rc == 0);
    if (rc != 0)
        printf("# %s\n", err.msg);
    return run_id;
}

static void test_state_names(void)
{
    static const char *const names[] = {"pending", "running",      "stopped",    "failed",
                                        "done",    "rolling_back", "rolled_back"};
    for (int i = 0; i < 7; i++) {
        sl_state st = SL_STATE_PENDING;
        CHECK_STR(sl_state_name((sl_state)i), names[i]);
        CHECK(sl_state_parse(names[i], &st) == 0 && st == (sl_state)i);
    }
    sl_state st;
    CHECK(sl_state_parse("Done", &st) == -1);
    CHECK(sl_state_parse("", &st) == -1);
}

static void test_path(void)
{
    char *p = sl_ckpt_path("/var/lib/sluice", "0001_backfill");
    CHECK_STR(p, "/var/lib/sluice/0001_backfill.sluice");
    free(p);
    p = sl_ckpt_path("ckpt/", "j");
    CHECK_STR(p, "ckpt/j.sluice");
    free(p);
}

static void test_create_and_reopen(void)
{
    char *dir = tmp_path("nested/deeper");
    char *path = sl_ckpt_path(dir, "0001_job");
    sl_ckpt *ck = must_open(path, "0001_job", 1);
    if (!ck)
        goto out;
    CHECK_STR(sl_ckpt_file(ck), path);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);
    sl_ckpt_job job;
    sl_err err = {{0}};
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK_STR(job.job, "0001_job");
    CHECK(job.state == SL_STATE_PENDING);
    CHECK_STR(job.checksum, "");
    CHECK(job.rows == 0 && job.chunks == 0 && job.last_key == NULL && job.error == NULL);
    CHECK(job.started_at_ms == 0 && job.updated_at_ms == 0);
    sl_ckpt_job_free(&job);
    sl_ckpt_close(ck);

    CHECK(raw_int(path, "PRAGMA application_id") == 0x534c4331);
    CHECK(raw_int(path, "PRAGMA user_version") == 5);
    ck = must_open(path, "0001_job", 0); /* reopen without create */
    sl_ckpt_close(ck);
    ck = must_open(path, "0001_job", 1); /* create on an existing file keeps it */
    sl_ckpt_close(ck);
    CHECK(raw_int(path, "SELECT count(*) FROM job") == 1);
out:
    free(path);
    free(dir);
}

static void test_wal_mode(void)
{
    char *path = tmp_path("wal.sluice");
    sl_ckpt *ck = must_open(path, "wal", 1);
    sl_ckpt_close(ck);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(path);
}

static void test_commit_chunks(void)
{
    char *path = tmp_path("commit.sluice");
    sl_ckpt *ck = must_open(path, "commit", 1);
    if (!ck)
        goto out;
    int64_t run = begin_up(ck, "0123456789abcdef");
    CHECK(run > 0);
    sl_ckpt_chunk c1 = make_chunk(1, "[\"1\"]", "[\"1000\"]", 1000);
    c1.attempts = 3;
    c1.error = "canceling statement due to lock timeout";
    commit_ok(ck, run, c1);
    commit_ok(ck, run, make_chunk(2, "[\"1001\"]", "[\"2000\"]", 1000));
    commit_ok(ck, run, make_chunk(3, "[\"2001\"]", "[\"2500\"]", 500));

    sl_ckpt_job job;
    sl_err err = {{0}};
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK(job.state == SL_STATE_RUNNING);
    CHECK(job.rows == 2500 && job.affected == 2497 && job.chunks == 3);
    CHECK_STR(job.last_key, "[\"2500\"]");
    CHECK_STR(job.checksum, "0123456789abcdef");
    CHECK_STR(job.target, "postgresql://app@db/prod");
    CHECK(job.started_at_ms > 0 && job.updated_at_ms >= job.started_at_ms);
    sl_ckpt_job_free(&job);

    /* the same chunk twice is refused and changes nothing */
    sl_ckpt_chunk again = make_chunk(2, "[\"1001\"]", "[\"2000\"]", 1000);
    CHECK(sl_ckpt_commit_chunk(ck, run, &again, &err) == -1);
    CHECK_HAS(err.msg, "chunk 2 is already recorded");
    CHECK_HAS(err.msg, path);
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK(job.rows == 2500 && job.chunks == 3);
    CHECK_STR(job.last_key, "[\"2500\"]");
    sl_ckpt_job_free(&job);
    sl_ckpt_close(ck);

    /* durable across reopen, chunk details included */
    CHECK(raw_int(path, "SELECT attempts FROM chunks WHERE chunk_no = 1") == 3);
    CHECK(raw_int(path, "SELECT count(*) FROM chunks WHERE error IS NOT NULL") == 1);
    CHECK(raw_int(path, "SELECT sum(rows) FROM chunks") == 2500);
    CHECK(raw_int(path, "SELECT rows FROM runs") == 2500);
out:
    free(path);
}

/* Undoing a chunk takes it out of the job's totals and last key; one the
 * file never had changes nothing. */
static void test_undo_chunks(void)
{
    char *path = tmp_path("undo.sluice");
    sl_ckpt *ck = must_open(path, "undo", 1);
    if (!ck)
        goto out;
    int64_t run = begin_up(ck, "0123456789abcdef");
    commit_ok(ck, run, make_chunk(1, "[\"1\"]", "[\"1000\"]", 1000));
    commit_ok(ck, run, make_chunk(2, "[\"1001\"]", "[\"2000\"]", 1000));
    commit_ok(ck, run, make_chunk(3, "[\"2001\"]", "[\"2500\"]", 500));
    sl_err err = {{0}};
    static const struct {
        int64_t chunk_no, rows, affected, chunks;
        const char *last_key;
    } steps[] = {
        {3, 2000, 1998, 2, "[\"2000\"]"},
        {7, 2000, 1998, 2, "[\"2000\"]"}, /* never recorded here */
        {1, 1000, 999, 1, "[\"2000\"]"},
        {2, 0, 0, 0, NULL},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        CHECK(sl_ckpt_undo_chunk(ck, run, steps[i].chunk_no, 10, 5, &err) == 0);
        sl_ckpt_job job;
        CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
        CHECK(job.rows == steps[i].rows && job.affected == steps[i].affected && job.chunks == steps[i].chunks);
        if (steps[i].last_key)
            CHECK_STR(job.last_key, steps[i].last_key);
        else
            CHECK(job.last_key == NULL);
        sl_ckpt_job_free(&job);
    }
    sl_ckpt_close(ck);
    CHECK(raw_int(path, "SELECT count(*) FROM chunks") == 0);
    CHECK(raw_int(path, "SELECT count(*) FROM undone") == 4);
out:
    free(path);
}

static void test_commit_unknown_run_and_affected(void)
{
    char *path = tmp_path("norun.sluice");
    sl_ckpt *ck = must_open(path, "norun", 1);
    if (!ck)
        goto out;
    sl_err err = {{0}};
    sl_ckpt_chunk c = make_chunk(1, "[\"1\"]", "[\"2\"]", 2);
    c.affected = -1; /* unknown, as when recorded from the target's progress table */
    CHECK(sl_ckpt_commit_chunk(ck, 42, &c, &err) == -1);
    CHECK_HAS(err.msg, "run 42 does not exist");
    int64_t no = -1;
    char *lo = NULL, *hi = NULL;
    CHECK(sl_ckpt_last_chunk(ck, &no, &lo, &hi, &err) == 0);
    CHECK(no == 0);      /* rolled back */
    commit_ok(ck, 0, c); /* run 0: recorded outside any run */
    sl_ckpt_job job;
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK(job.chunks == 1 && job.rows == 2 && job.affected == 0);
    sl_ckpt_job_free(&job);
    sl_ckpt_close(ck);
out:
    free(path);
}

/* The journal records the checksum each run ran with (the database decides
 * whether a changed file may run: run.c). */
static void test_checksum_recorded(void)
{
    char *path = tmp_path("checksum.sluice");
    sl_ckpt *ck = must_open(path, "checksum", 1);
    if (!ck)
        goto out;
    sl_ckpt_job job;
    sl_err err = {{0}};
    int64_t run = begin_up(ck, "aaaaaaaaaaaaaaaa");
    commit_ok(ck, run, make_chunk(1, "[\"1\"]", "[\"9\"]", 9));
    begin_up(ck, "bbbbbbbbbbbbbbbb");
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK_STR(job.checksum, "bbbbbbbbbbbbbbbb");
    sl_ckpt_job_free(&job);
    int64_t down = 0;
    CHECK(sl_ckpt_begin_run(ck, "down", SL_STATE_ROLLING_BACK, NULL, "x", &down, &err) == 0); /* NULL: kept */
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK_STR(job.checksum, "bbbbbbbbbbbbbbbb");
    sl_ckpt_job_free(&job);
    sl_ckpt_close(ck);
out:
    free(path);
}

static void test_finish_and_runs(void)
{
    char *path = tmp_path("runs.sluice");
    sl_ckpt *ck = must_open(path, "runs", 1);
    if (!ck)
        goto out;
    sl_err err = {{0}};
    int64_t first = begin_up(ck, "0000000000000001");
    commit_ok(ck, first, make_chunk(1, "[\"1\"]", "[\"10\"]", 10));
    CHECK(sl_ckpt_finish_run(ck, first, SL_STATE_FAILED, "relation \"users\" does not exist", &err) == 0);
    sl_ckpt_job job;
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK(job.state == SL_STATE_FAILED);
    CHECK_STR(job.error, "relation \"users\" does not exist");
    int64_t started = job.started_at_ms;
    sl_ckpt_job_free(&job);

    int64_t second = begin_up(ck, "0000000000000001");
    CHECK(second > first);
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK(job.error == NULL && job.state == SL_STATE_RUNNING);
    CHECK(job.started_at_ms == started); /* the first run's start stays */
    sl_ckpt_job_free(&job);
    commit_ok(ck, second, make_chunk(2, "[\"11\"]", "[\"20\"]", 10));
    commit_ok(ck, second, make_chunk(3, "[\"21\"]", "[\"25\"]", 5));
    CHECK(sl_ckpt_finish_run(ck, second, SL_STATE_DONE, NULL, &err) == 0);

    sl_ckpt_run *runs = NULL;
    size_t nruns = 0;
    CHECK(sl_ckpt_list_runs(ck, &runs, &nruns, &err) == 0);
    CHECK(nruns == 2);
    if (nruns == 2) {
        CHECK(runs[0].id == first && runs[1].id == second);
        CHECK_STR(runs[0].job, "runs");
        CHECK_STR(runs[0].kind, "up");
        CHECK_STR(runs[0].outcome, "failed");
        CHECK_STR(runs[0].error, "relation \"users\" does not exist");
        CHECK(runs[0].rows == 10 && runs[0].chunks == 1);
        CHECK(runs[0].ended_at_ms >= runs[0].started_at_ms && runs[0].ended_at_ms > 0);
        CHECK_STR(runs[1].outcome, "done");
        CHECK(runs[1].error == NULL);
        CHECK(runs[1].rows == 15 && runs[1].chunks == 2);
    }
    for (size_t i = 0; i < nruns; i++)
        sl_ckpt_run_free(&runs[i]);
    free(runs);
    sl_ckpt_close(ck);
out:
    free(path);
}

static void test_running_run_is_listed_open(void)
{
    char *path = tmp_path("open.sluice");
    sl_ckpt *ck = must_open(path, "open", 1);
    if (!ck)
        goto out;
    sl_err err = {{0}};
    begin_up(ck, "0000000000000001");
    sl_ckpt_run *runs = NULL;
    size_t nruns = 0;
    CHECK(sl_ckpt_list_runs(ck, &runs, &nruns, &err) == 0);
    CHECK(nruns == 1);
    if (nruns == 1) {
        CHECK_STR(runs[0].outcome, "running");
        CHECK(runs[0].ended_at_ms == 0);
    }
    for (size_t i = 0; i < nruns; i++)
        sl_ckpt_run_free(&runs[i]);
    free(runs);
    sl_ckpt_close(ck);
out:
    free(path);
}

static void fill_three_chunks(sl_ckpt *ck)
{
    int64_t run = begin_up(ck, "00000000000000ff");
    commit_ok(ck, run, make_chunk(1, "[\"1\", \"a\"]", "[\"1\", \"z\"]", 100));
    commit_ok(ck, run, make_chunk(2, "[\"2\", \"a\"]", "[\"2\", \"z\"]", 100));
    commit_ok(ck, run, make_chunk(3, "[\"3\", \"a\"]", "[\"3\", \"q\"]", 40));
}

static void test_last_chunk(void)
{
    char *path = tmp_path("last.sluice");
    sl_ckpt *ck = must_open(path, "last", 1);
    if (!ck)
        goto out;
    sl_err err = {{0}};
    int64_t no = -1;
    char *lo = (char *)"x", *hi = (char *)"x";
    CHECK(sl_ckpt_last_chunk(ck, &no, &lo, &hi, &err) == 0);
    CHECK(no == 0 && lo == NULL && hi == NULL);
    fill_three_chunks(ck);
    CHECK(sl_ckpt_last_chunk(ck, &no, &lo, &hi, &err) == 0);
    CHECK(no == 3);
    CHECK_STR(lo, "[\"3\", \"a\"]");
    CHECK_STR(hi, "[\"3\", \"q\"]");
    free(lo);
    free(hi);
    sl_ckpt_close(ck);
out:
    free(path);
}

/* The chunk set, and forgetting chunks the database no longer has. */
static void test_chunk_numbers(void)
{
    char *path = tmp_path("numbers.sluice");
    sl_ckpt *ck = must_open(path, "numbers", 1);
    if (!ck)
        goto out;
    sl_err err = {{0}};
    int64_t *nums = NULL;
    size_t n = 9;
    CHECK(sl_ckpt_chunk_numbers(ck, &nums, &n, &err) == 0);
    CHECK(n == 0 && nums == NULL);
    int64_t run = begin_up(ck, "00000000000000ff");
    commit_ok(ck, run, make_chunk(7, "[\"7\"]", "[\"7\"]", 10));
    commit_ok(ck, run, make_chunk(2, "[\"2\"]", "[\"2\"]", 10));
    commit_ok(ck, run, make_chunk(3, "[\"3\"]", "[\"3\"]", 10));
    CHECK(sl_ckpt_chunk_numbers(ck, &nums, &n, &err) == 0);
    CHECK(n == 3 && nums[0] == 2 && nums[1] == 3 && nums[2] == 7);
    free(nums);
    int64_t gone[] = {3, 7, 99};
    CHECK(sl_ckpt_forget_chunks(ck, gone, 3, &err) == 0);
    sl_ckpt_job job;
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK(job.chunks == 1 && job.rows == 10);
    CHECK_STR(job.last_key, "[\"2\"]");
    sl_ckpt_job_free(&job);
    sl_ckpt_close(ck);
out:
    free(path);
}

/* A file is bound to the first database it is used with; another is refused. */
static void test_bind(void)
{
    char *path = tmp_path("bind.sluice");
    sl_ckpt *ck = must_open(path, "bind", 1);
    if (!ck)
        goto out;
    sl_err err = {{0}};
    CHECK(sl_ckpt_bind(ck, "id-a", "77", "app", 1, 0, &err) == 0); /* unbound, not written */
    CHECK(sl_ckpt_bind(ck, "id-a", "77", "app", 1, 1, &err) == 1); /* bound now */
    CHECK(sl_ckpt_bind(ck, "id-a", "77", "app", 1, 1, &err) == 0);
    CHECK(sl_ckpt_bind(ck, "id-a", "", "app", 1, 0, &err) == 0); /* a cluster it cannot read is no mismatch */
    CHECK(sl_ckpt_bind(ck, "id-b", "77", "app", 1, 1, &err) == -2);
    CHECK(strstr(err.msg, "belongs to database app (sluice id id-a") != NULL);
    CHECK(strstr(err.msg, "not to app (sluice id id-b") != NULL);
    CHECK(sl_ckpt_bind(ck, "id-a", "78", "app", 1, 1, &err) == -2);   /* a restored copy */
    CHECK(sl_ckpt_bind(ck, "id-a", "77", "other", 1, 1, &err) == -2); /* another database of the cluster */
    CHECK(sl_ckpt_bind(ck, "id-a", "77", "other", 0, 1, &err) == 0);  /* SQLite: the file may move */
    sl_ckpt_close(ck);
out:
    free(path);
}

struct visit {
    int64_t seen[8];
    int count;
    int stop_at;
    int64_t rows;
};

static int visit_chunk(const sl_ckpt_chunk *chunk, void *arg)
{
    struct visit *v = arg;
    if (v->count < 8)
        v->seen[v->count] = chunk->chunk_no;
    v->count++;
    v->rows += chunk->rows;
    CHECK(chunk->lo && chunk->hi && chunk->attempts == 1 && chunk->committed_at_ms > 0);
    CHECK(chunk->duration_ms == 10 * chunk->chunk_no);
    return v->count == v->stop_at ? 7 : 0;
}

static void test_each_chunk(void)
{
    char *path = tmp_path("each.sluice");
    sl_ckpt *ck = must_open(path, "each", 1);
    if (!ck)
        goto out;
    fill_three_chunks(ck);
    sl_err err = {{0}};
    struct visit all = {{0}, 0, 0, 0};
    CHECK(sl_ckpt_each_chunk(ck, 0, visit_chunk, &all, &err) == 0);
    CHECK(all.count == 3 && all.seen[0] == 1 && all.seen[2] == 3 && all.rows == 240);
    struct visit tail = {{0}, 0, 0, 0};
    CHECK(sl_ckpt_each_chunk(ck, 1, visit_chunk, &tail, &err) == 0);
    CHECK(tail.count == 2 && tail.seen[0] == 2 && tail.seen[1] == 3);
    struct visit stopped = {{0}, 0, 1, 0};
    CHECK(sl_ckpt_each_chunk(ck, 0, visit_chunk, &stopped, &err) == 7);
    CHECK(stopped.count == 1);
    sl_ckpt_close(ck);
out:
    free(path);
}

static void test_stamp(void)
{
    char *path = tmp_path("stamp.sluice");
    sl_ckpt *ck = must_open(path, "stamp", 1);
    if (!ck)
        goto out;
    sl_err err = {{0}};
    sl_ckpt_job job;
    fill_three_chunks(ck);
    CHECK(sl_ckpt_stamp(ck, SL_STATE_DONE, "1111111111111111", &err) == 0);
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK(job.state == SL_STATE_DONE && job.chunks == 3 && job.rows == 240);
    CHECK_STR(job.last_key, "[\"3\", \"q\"]");
    CHECK_STR(job.checksum, "1111111111111111");
    sl_ckpt_job_free(&job);
    CHECK(raw_int(path, "SELECT count(*) FROM chunks") == 3);

    CHECK(sl_ckpt_stamp(ck, SL_STATE_PENDING, "2222222222222222", &err) == 0);
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK(job.state == SL_STATE_PENDING && job.chunks == 0 && job.rows == 0 && job.affected == 0);
    CHECK(job.last_key == NULL && job.error == NULL);
    CHECK_STR(job.checksum, "");
    sl_ckpt_job_free(&job);
    int64_t no = -1;
    char *lo = NULL, *hi = NULL;
    CHECK(sl_ckpt_last_chunk(ck, &no, &lo, &hi, &err) == 0);
    CHECK(no == 0 && lo == NULL);

    sl_ckpt_run *runs = NULL;
    size_t nruns = 0;
    CHECK(sl_ckpt_list_runs(ck, &runs, &nruns, &err) == 0);
    CHECK(nruns == 3);
    if (nruns == 3) {
        CHECK_STR(runs[1].kind, "stamp");
        CHECK_STR(runs[1].outcome, "done");
        CHECK_STR(runs[2].kind, "stamp");
        CHECK_STR(runs[2].outcome, "pending");
        CHECK(runs[2].ended_at_ms == runs[2].started_at_ms && runs[2].started_at_ms > 0);
    }
    for (size_t i = 0; i < nruns; i++)
        sl_ckpt_run_free(&runs[i]);
    free(runs);
    /* chunk numbers start again after a reset */
    int64_t run = begin_up(ck, "3333333333333333");
    commit_ok(ck, run, make_chunk(1, "[\"1\", \"a\"]", "[\"1\", \"b\"]", 2));
    sl_ckpt_close(ck);
out:
    free(path);
}

static void test_batch_and_events(void)
{
    char *path = tmp_path("events.sluice");
    sl_ckpt *ck = must_open(path, "events", 1);
    if (!ck)
        goto out;
    sl_err err = {{0}};
    CHECK(sl_ckpt_set_batch(ck, 5000, &err) == 0);
    CHECK(sl_ckpt_log_event(ck, "retry", "chunk 4: deadlock detected, attempt 2", &err) == 0);
    CHECK(sl_ckpt_log_event(ck, "signal", "SIGINT", &err) == 0);
    sl_ckpt_job job;
    CHECK(sl_ckpt_get_job(ck, &job, &err) == 0);
    CHECK(job.batch == 5000);
    sl_ckpt_job_free(&job);
    sl_ckpt_close(ck);
    CHECK(raw_int(path, "SELECT count(*) FROM events") == 2);
    CHECK(raw_int(path, "SELECT count(*) FROM events WHERE kind = 'retry' AND message LIKE '%deadlock%'") == 1);
out:
    free(path);
}

/* A version 2 file (before chunks had a batch and a worker, events data,
 * and `down` runs a record, or the database's timeline) is upgraded in place
 * to this version, its chunks kept. */
static void test_upgrade_from_2(void)
{
    char *path = tmp_path("v2.sluice");
    sl_ckpt *ck = must_open(path, "v2", 1);
    if (!ck)
        goto out;
    int64_t run = begin_up(ck, "abc");
    commit_ok(ck, run, make_chunk(1, "[\"1\"]", "[\"10\"]", 10));
    sl_ckpt_close(ck);
    raw_exec(path, "ALTER TABLE chunks DROP COLUMN batch; ALTER TABLE chunks DROP COLUMN worker;"
                   " ALTER TABLE events DROP COLUMN data; DROP TABLE undone; ALTER TABLE job DROP COLUMN db_timeline;"
                   " ALTER TABLE job DROP COLUMN db_started; PRAGMA user_version = 2");
    CHECK(raw_int(path, "SELECT count(*) FROM pragma_table_info('chunks') WHERE name = 'batch'") == 0);
    ck = must_open(path, "v2", 0);
    if (!ck)
        goto out;
    CHECK(raw_int(path, "PRAGMA user_version") == 5);
    int64_t tl = -1, started = -1;
    sl_err terr = {{0}};
    CHECK(sl_ckpt_timeline(ck, &tl, &started, &terr) == 0 && tl == 0 && started == 0); /* never seen */
    CHECK(sl_ckpt_set_timeline(ck, 3, INT64_C(1795000000123456), &terr) == 0);
    CHECK(sl_ckpt_timeline(ck, &tl, &started, &terr) == 0 && tl == 3 && started == INT64_C(1795000000123456));
    CHECK(raw_int(path, "SELECT count(*) FROM pragma_table_info('chunks') WHERE name IN ('batch', 'worker')") == 2);
    CHECK(raw_int(path, "SELECT batch FROM chunks WHERE chunk_no = 1") == 0);
    sl_ckpt_chunk c = make_chunk(2, "[\"11\"]", "[\"20\"]", 10);
    c.batch = 10;
    c.worker = 3;
    commit_ok(ck, run, c);
    sl_err err = {{0}};
    CHECK(sl_ckpt_log_event_data(ck, "hold_start", "paused", "{\"reason\":\"ctl_pause\"}", &err) == 0);
    CHECK(sl_ckpt_undo_chunk(ck, run, 2, 10, 42, &err) == 0);
    sl_ckpt_close(ck);
    CHECK(raw_int(path, "SELECT count(*) FROM chunks") == 1);
    CHECK(raw_int(path, "SELECT duration_ms FROM undone WHERE chunk_no = 2") == 42);
    CHECK(raw_int(path, "SELECT count(*) FROM events WHERE data LIKE '%ctl_pause%'") == 1);
out:
    free(path);
}

static int count_event(const sl_ckpt_event *ev, void *arg)
{
    if (ev->data)
        (*(int *)arg)++;
    return 0;
}

static int count_undone(const sl_ckpt_undone *u, void *arg)
{
    *(int64_t *)arg += u->rows;
    return 0;
}

static int read_batch(const sl_ckpt_chunk *c, void *arg)
{
    *(int64_t *)arg = c->batch * 100 + c->worker;
    return 0;
}

/* What `report` reads: batch and worker per chunk, events' data, undone chunks. */
static void test_journal_for_report(void)
{
    char *path = tmp_path("journal.sluice");
    sl_ckpt *ck = must_open(path, "journal", 1);
    if (!ck)
        goto out;
    int64_t run = begin_up(ck, "abc");
    sl_ckpt_chunk c = make_chunk(1, "[\"1\"]", "[\"5\"]", 5);
    c.batch = 7;
    c.worker = 2;
    commit_ok(ck, run, c);
    sl_err err = {{0}};
    CHECK(sl_ckpt_log_event_data(ck, "hold_start", "outside", "{\"reason\":\"window\"}", &err) == 0);
    CHECK(sl_ckpt_log_event(ck, "retry", "deadlock", &err) == 0);
    int64_t got = 0;
    CHECK(sl_ckpt_each_chunk(ck, 0, read_batch, &got, &err) == 0);
    CHECK(got == 702);
    int with_data = 0;
    CHECK(sl_ckpt_each_event(ck, count_event, &with_data, &err) == 0);
    CHECK(with_data == 1);
    CHECK(sl_ckpt_undo_chunk(ck, run, 1, 5, 9, &err) == 0);
    int64_t undone = 0;
    CHECK(sl_ckpt_each_undone(ck, count_undone, &undone, &err) == 0);
    CHECK(undone == 5);
    sl_ckpt_close(ck);
out:
    free(path);
}

/* ---- refusals ---- */

static void expect_refused(const char *path, const char *job, int create, int code, const char *needle)
{
    sl_ckpt *ck = (sl_ckpt *)&ck; /* must be reset to NULL */
    sl_err err = {{0}};
    CHECK(sl_ckpt_open(path, job, create, &ck, &err) == code);
    CHECK(ck == NULL);
    CHECK_HAS(err.msg, path);
    CHECK_HAS(err.msg, needle);
}

static void test_missing_file(void)
{
    char *path = tmp_path("nothere/missing.sluice");
    expect_refused(path, "missing", 0, -2, "does not exist");
    struct stat sb;
    CHECK(stat(path, &sb) != 0); /* not created */
    free(path);
}

static void test_garbage_file(void)
{
    char *path = tmp_path("garbage.sluice");
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 7 + 3);
    write_file(path, junk, sizeof junk);
    expect_refused(path, "garbage", 0, -1, "corrupt");
    expect_refused(path, "garbage", 1, -1, "not a sluice checkpoint");
    expect_refused(path, "garbage", 0, -1, "hint: ");
    expect_refused(path, "garbage", 0, -1, "sluice_progress");
    write_file(path, "", 0);
    expect_refused(path, "garbage", 1, -1, "corrupt");
    free(path);
}

/* A checkpoint with enough chunks to span many pages, closed (WAL folded in). */
static int write_big_checkpoint(const char *path, const char *job)
{
    sl_ckpt *ck = must_open(path, job, 1);
    if (!ck)
        return -1;
    int64_t run = begin_up(ck, "0000000000000001");
    char lo[64], hi[64];
    for (int i = 1; i <= 400; i++) {
        snprintf(lo, sizeof lo, "[\"%d\", \"tenant-%d-lower-bound\"]", i, i);
        snprintf(hi, sizeof hi, "[\"%d\", \"tenant-%d-upper-bound\"]", i, i);
        commit_ok(ck, run, make_chunk(i, lo, hi, 1000));
    }
    sl_ckpt_close(ck);
    struct stat sb;
    char *wal = sl_asprintf("%s-wal", path);
    CHECK(stat(wal, &sb) != 0); /* closing folded the WAL into the file */
    free(wal);
    return 0;
}

static void test_truncated_file(void)
{
    char *path = tmp_path("truncated.sluice");
    struct stat sb;
    if (write_big_checkpoint(path, "truncated") != 0)
        goto out;
    CHECK(stat(path, &sb) == 0 && sb.st_size > 8 * 4096);
    CHECK(truncate(path, sb.st_size / 2) == 0);
    expect_refused(path, "truncated", 0, -1, "corrupt");
    expect_refused(path, "truncated", 1, -1, "sluice up");
out:
    free(path);
}

/* A torn page in the middle of the file, where only an integrity check
 * finds it (the header and the job row are intact). */
static void test_corrupt_page(void)
{
    char *path = tmp_path("torn.sluice");
    struct stat sb;
    if (write_big_checkpoint(path, "torn") != 0)
        goto out;
    CHECK(stat(path, &sb) == 0 && sb.st_size > 8 * 4096);
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (!f)
        goto out;
    char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    CHECK(fseek(f, (long)(sb.st_size / 4096 / 2) * 4096, SEEK_SET) == 0);
    CHECK(fwrite(junk, 1, sizeof junk, f) == sizeof junk);
    fclose(f);
    expect_refused(path, "torn", 0, -1, "corrupt");
out:
    free(path);
}

static void test_foreign_sqlite(void)
{
    char *path = tmp_path("foreign.sluice");
    raw_exec(path, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'a');");
    expect_refused(path, "foreign", 0, -1, "not a sluice checkpoint");
    expect_refused(path, "foreign", 1, -1, "not a sluice checkpoint");
    CHECK(raw_int(path, "SELECT count(*) FROM users") == 1); /* left alone */
    free(path);
}

static void test_wrong_job(void)
{
    char *path = tmp_path("0002_b.sluice");
    sl_ckpt *ck = must_open(path, "0002_a", 1);
    sl_ckpt_close(ck);
    expect_refused(path, "0002_b", 0, -1, "belongs to job \"0002_a\", not \"0002_b\"");
    free(path);
}

static void test_newer_schema(void)
{
    char *path = tmp_path("newer.sluice");
    sl_ckpt *ck = must_open(path, "newer", 1);
    sl_ckpt_close(ck);
    raw_exec(path, "PRAGMA user_version = 6");
    expect_refused(path, "newer", 0, -1, "upgrade sluice");
    free(path);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_state_names);
    RUN(test_path);
    RUN(test_create_and_reopen);
    RUN(test_wal_mode);
    RUN(test_commit_chunks);
    RUN(test_undo_chunks);
    RUN(test_commit_unknown_run_and_affected);
    RUN(test_checksum_recorded);
    RUN(test_finish_and_runs);
    RUN(test_running_run_is_listed_open);
    RUN(test_last_chunk);
    RUN(test_each_chunk);
    RUN(test_chunk_numbers);
    RUN(test_bind);
    RUN(test_stamp);
    RUN(test_batch_and_events);
    RUN(test_missing_file);
    RUN(test_garbage_file);
    RUN(test_truncated_file);
    RUN(test_corrupt_page);
    RUN(test_foreign_sqlite);
    RUN(test_wrong_job);
    RUN(test_newer_schema);
    RUN(test_upgrade_from_2);
    RUN(test_journal_for_report);
    remove_tree(tmp_dir);
    return CHECK_DONE();
}
