/* test_lite.c: the SQLite target driver through the session, on real database files in a temp dir. */
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "sluice/db/pg.h"
#include "sluice/db/session.h"

static char tmpdir[64];
static char dbpath[128];
static char url[160];

/* A fresh database file holding t(id INTEGER PRIMARY KEY, n INTEGER, s TEXT) with rows 1..10. */
static void make_db(void)
{
    snprintf(dbpath, sizeof dbpath, "%s/app.db", tmpdir);
    snprintf(url, sizeof url, "sqlite:%s", dbpath);
    unlink(dbpath);
    sqlite3 *db;
    CHECK(sqlite3_open(dbpath, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER CHECK (n < 100),"
                       " s TEXT); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10)"
                       " INSERT INTO t SELECT i, 0, 'r' || i FROM c",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
}

static void open_session(uv_loop_t *loop, sl_session *sess)
{
    sl_err err = {{0}};
    uv_loop_init(loop);
    CHECK(sl_session_init(sess, loop, url, &err) == 0);
    CHECK(sess->dialect == SL_DIALECT_SQLITE);
    CHECK(sl_session_connect(sess, &err) == 0);
}

static void close_session(uv_loop_t *loop, sl_session *sess)
{
    sl_session_close(sess);
    CHECK(uv_loop_close(loop) == 0);
}

static void test_batch_results(void)
{
    make_db();
    uv_loop_t loop;
    sl_session sess;
    open_session(&loop, &sess);
    const char *p[] = {"3", "5"};
    /* $2 before $1: bound by name, not by order of appearance */
    sl_query q[] = {{"BEGIN IMMEDIATE", 0, NULL, 0},
                    {"UPDATE t SET n = n + 1 WHERE id <= $2 AND id >= $1", 2, p, 1},
                    {"SELECT id, s, NULL FROM t WHERE n = 1 ORDER BY id", 0, NULL, 0},
                    {"COMMIT", 0, NULL, 0}};
    sl_answer ans;
    CHECK(sl_session_exec(&sess, q, 4, &ans) == 0);
    CHECK(ans.ok && ans.failed_index == -1);
    CHECK(ans.nresults == 4);
    CHECK(ans.results[1].cmd_tuples == 3);
    CHECK(ans.results[2].cmd_tuples == -1);
    CHECK(ans.results[2].nrows == 3 && ans.results[2].ncols == 3);
    CHECK_STR(sl_answer_val(&ans, 2, 0, 0), "3");
    CHECK_STR(sl_answer_val(&ans, 2, 2, 1), "r5");
    CHECK(sl_answer_val(&ans, 2, 0, 2) == NULL);
    sl_answer_free(&ans);
    /* the prepared statement again, from the cache, with other values */
    const char *p2[] = {"1", "1"};
    q[1].params = p2;
    CHECK(sl_session_exec(&sess, q, 2, &ans) == 0 && ans.ok && ans.results[1].cmd_tuples == 1);
    sl_answer_free(&ans);
    CHECK(sl_session_exec1(&sess, "COMMIT", 0, NULL, &ans) == 0 && ans.ok);
    sl_answer_free(&ans);
    CHECK(sl_session_exec1(&sess, "SELECT sum(n) FROM t", 0, NULL, &ans) == 0);
    CHECK_STR(sl_answer_val(&ans, 0, 0, 0), "4");
    sl_answer_free(&ans);
    close_session(&loop, &sess);
}

/* An error stops the batch like an aborted pipeline segment and rolls the
 * transaction back: nothing of it stays. */
static void test_error_rolls_back(void)
{
    make_db();
    uv_loop_t loop;
    sl_session sess;
    open_session(&loop, &sess);
    sl_query q[] = {{"BEGIN IMMEDIATE", 0, NULL, 0},
                    {"UPDATE t SET n = 1", 0, NULL, 0},
                    {"UPDATE t SET n = 500 WHERE id = 7", 0, NULL, 0},
                    {"UPDATE t SET n = 2", 0, NULL, 0},
                    {"COMMIT", 0, NULL, 0}};
    sl_answer ans;
    CHECK(sl_session_exec(&sess, q, 5, &ans) == 0);
    CHECK(!ans.ok && !ans.conn_lost && ans.failed_index == 2);
    CHECK_STR(ans.sqlstate, "23514");
    CHECK_HAS(ans.error, "CHECK constraint failed");
    CHECK(ans.results[1].cmd_tuples == 10);
    CHECK(ans.results[3].cmd_tuples == 0 && ans.results[3].nrows == 0);
    sl_answer_free(&ans);
    CHECK(sl_session_exec1(&sess, "SELECT count(*) FROM t WHERE n <> 0", 0, NULL, &ans) == 0 && ans.ok);
    CHECK_STR(sl_answer_val(&ans, 0, 0, 0), "0");
    sl_answer_free(&ans);
    /* a syntax error names itself and has no SQLSTATE of PostgreSQL's */
    CHECK(sl_session_exec1(&sess, "UPDATE nope SET x = 1", 0, NULL, &ans) == 0);
    CHECK(!ans.ok && ans.failed_index == 0 && ans.sqlstate[0] == '\0');
    CHECK_HAS(ans.error, "no such table: nope");
    sl_answer_free(&ans);
    close_session(&loop, &sess);
}

/* Which errors a row's data can cause (on-error skip splits on those and
 * stops on the rest): a CHECK failure can; a database that takes no writes
 * cannot, and SQLite's answer says so in PostgreSQL's terms. */
static void test_statement_errors(void)
{
    make_db();
    uv_loop_t loop;
    sl_session sess;
    open_session(&loop, &sess);
    sl_answer ans;
    CHECK(sl_session_exec1(&sess, "UPDATE t SET n = 500 WHERE id = 7", 0, NULL, &ans) == 0 && !ans.ok);
    CHECK_STR(ans.sqlstate, "23514");
    CHECK(!sl_answer_statement_error(ans.sqlstate));
    sl_answer_free(&ans);
    CHECK(sl_session_exec1(&sess, "PRAGMA query_only = 1", 0, NULL, &ans) == 0 && ans.ok);
    sl_answer_free(&ans);
    CHECK(sl_session_exec1(&sess, "UPDATE t SET n = 1 WHERE id = 7", 0, NULL, &ans) == 0 && !ans.ok);
    CHECK_STR(ans.sqlstate, "25006");
    CHECK(sl_answer_statement_error(ans.sqlstate) && !sl_answer_transient(ans.sqlstate));
    sl_answer_free(&ans);
    close_session(&loop, &sess);
    /* PostgreSQL's: the statement, the role, the server; not a row's data, a trigger's RAISE, a retry */
    static const char *const statement[] = {"42501", "42P01", "42703", "0A000", "53100", "58030", "XX000", "25006"};
    static const char *const row[] = {"22012", "23505", "P0001", "54000", "40001", "57014", "42P05", "08006", ""};
    for (size_t i = 0; i < sizeof statement / sizeof *statement; i++)
        CHECK(sl_answer_statement_error(statement[i]));
    for (size_t i = 0; i < sizeof row / sizeof *row; i++)
        CHECK(!sl_answer_statement_error(row[i]));
    CHECK(!sl_answer_statement_error(NULL));
}

/* Run one chunk-like batch of q (BEGIN, q, COMMIT): it must fail at q with
 * 08P01 (not transient), say want, and leave every row as it was. */
static void check_bind_refused(sl_session *sess, sl_query q, const char *want)
{
    sl_query batch[] = {{"BEGIN IMMEDIATE", 0, NULL, 0}, q, {"COMMIT", 0, NULL, 0}};
    sl_answer ans;
    CHECK(sl_session_exec(sess, batch, 3, &ans) == 0);
    CHECK(!ans.ok && !ans.conn_lost && ans.failed_index == 1);
    CHECK_STR(ans.sqlstate, "08P01");
    CHECK(!sl_answer_transient(ans.sqlstate));
    CHECK_HAS(ans.error, want);
    sl_answer_free(&ans);
    CHECK(sl_session_exec1(sess, "SELECT count(*) FROM t WHERE n <> 0", 0, NULL, &ans) == 0 && ans.ok);
    CHECK_STR(sl_answer_val(&ans, 0, 0, 0), "0");
    sl_answer_free(&ans);
}

/* A statement must use exactly the values bound to it. SQLite alone would
 * ignore a value nothing uses: a statement cut short before its :lo/:hi ran
 * over the whole table, every chunk. */
static void test_parameter_count_checked(void)
{
    make_db();
    uv_loop_t loop;
    sl_session sess;
    open_session(&loop, &sess);
    const char *edges[] = {"3", "5", "7"};
    /* each chunk's up statements are prepared: one cut short before its :lo/:hi fails */
    check_bind_refused(&sess, (sl_query){"UPDATE t SET n = n + 1 WHERE true", 2, edges, 1},
                       "a value was bound to $1, but the statement has no such parameter (it has 0)");
    for (int prepare = 0; prepare < 2; prepare++) {
        check_bind_refused(&sess, (sl_query){"UPDATE t SET n = n + 1 WHERE id >= $1", 2, edges, prepare},
                           "a value was bound to $2, but the statement has no such parameter (it has 1)");
        check_bind_refused(&sess, (sl_query){"UPDATE t SET n = n + 1 WHERE id BETWEEN $1 AND $2", 1, edges, prepare},
                           "the statement has 2 parameters, but 1 values were bound");
        /* ":lower" is no placeholder of sluice's, but SQLite would bind it NULL; "?" and "?1" it would
         * bind by position, to the chunk's first key */
        check_bind_refused(
            &sess, (sl_query){"UPDATE t SET n = n + 1 WHERE id BETWEEN $1 AND $2 OR s = :lower", 2, edges, prepare},
            ":lower is a parameter sluice does not bind");
        check_bind_refused(&sess, (sl_query){"UPDATE t SET s = ? WHERE id BETWEEN $1 AND $2", 2, edges, prepare},
                           "? is a parameter sluice does not bind");
        check_bind_refused(&sess, (sl_query){"UPDATE t SET s = ?1 WHERE id BETWEEN $1 AND $2", 2, edges, prepare},
                           "?1 is a parameter sluice does not bind");
        check_bind_refused(&sess, (sl_query){"UPDATE t SET s = @v WHERE id BETWEEN $1 AND $2", 2, edges, prepare},
                           "@v is a parameter sluice does not bind");
        check_bind_refused(&sess, (sl_query){"UPDATE t SET s = $01 WHERE id BETWEEN $1 AND $2", 2, edges, prepare},
                           "$01 is a parameter sluice does not bind");
    }
    /* unprepared statements without parameters get no leeway either */
    check_bind_refused(&sess, (sl_query){"UPDATE t SET n = 1 WHERE id IN (VALUES (4), (5))", 2, edges, 0},
                       "a value was bound to $1, but the statement has no such parameter (it has 0)");
    /* the same value twice is fine, and the parameters may come in any order */
    sl_answer ans;
    sl_query ok[] = {{"SELECT $1 + $1 + $2", 2, edges, 1}, {"SELECT $2 || $1", 2, edges, 0}};
    CHECK(sl_session_exec(&sess, ok, 2, &ans) == 0 && ans.ok);
    CHECK_STR(sl_answer_val(&ans, 0, 0, 0), "11");
    CHECK_STR(sl_answer_val(&ans, 1, 0, 0), "53");
    sl_answer_free(&ans);
    close_session(&loop, &sess);
}

/* Another connection holds the write lock: BEGIN IMMEDIATE waits for the
 * lock-timeout, then fails as a lock timeout does on PostgreSQL (retried). */
static void test_busy_is_lock_timeout(void)
{
    make_db();
    sqlite3 *other;
    CHECK(sqlite3_open(dbpath, &other) == SQLITE_OK);
    CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE; UPDATE t SET n = 9 WHERE id = 1", NULL, NULL, NULL) == SQLITE_OK);
    uv_loop_t loop;
    sl_session sess;
    open_session(&loop, &sess);
    sl_session_set_timeouts(&sess, 150, 0);
    sl_answer ans;
    int64_t start = sl_mono_ms();
    CHECK(sl_session_exec1(&sess, "BEGIN IMMEDIATE", 0, NULL, &ans) == 0);
    int64_t waited = sl_mono_ms() - start;
    CHECK(!ans.ok);
    CHECK_STR(ans.sqlstate, "55P03");
    CHECK(waited >= 140 && waited < 5000);
    sl_answer_free(&ans);
    /* WAL: readers go on while the other connection writes */
    CHECK(sl_session_exec1(&sess, "SELECT n FROM t WHERE id = 1", 0, NULL, &ans) == 0 && ans.ok);
    CHECK_STR(sl_answer_val(&ans, 0, 0, 0), "0");
    sl_answer_free(&ans);
    CHECK(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(other);
    CHECK(sl_session_exec1(&sess, "BEGIN IMMEDIATE", 0, NULL, &ans) == 0 && ans.ok);
    sl_answer_free(&ans);
    CHECK(sl_session_exec1(&sess, "ROLLBACK", 0, NULL, &ans) == 0 && ans.ok);
    sl_answer_free(&ans);
    close_session(&loop, &sess);
}

static const char slow_sql[] =
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000000) SELECT count(*) FROM c";

static void test_statement_timeout(void)
{
    make_db();
    uv_loop_t loop;
    sl_session sess;
    open_session(&loop, &sess);
    sl_session_set_timeouts(&sess, 1000, 100);
    sl_answer ans;
    int64_t start = sl_mono_ms();
    CHECK(sl_session_exec1(&sess, slow_sql, 0, NULL, &ans) == 0);
    CHECK(!ans.ok);
    CHECK_STR(ans.sqlstate, "57014");
    CHECK_HAS(ans.error, "statement timeout");
    CHECK(sl_mono_ms() - start < 5000);
    sl_answer_free(&ans);
    close_session(&loop, &sess);
}

/* While a statement runs on the pool the loop is free: a timer fires, and a
 * second signal interrupts the statement. */
static int ticks;
static void on_tick(uv_timer_t *t)
{
    sl_session *sess = t->data;
    if (++ticks == 3) {
        raise(SIGINT);
        raise(SIGINT);
    }
    (void)sess;
}

static void test_loop_free_and_interrupt(void)
{
    make_db();
    uv_loop_t loop;
    sl_session sess;
    open_session(&loop, &sess);
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    tick.data = &sess;
    ticks = 0;
    uv_timer_start(&tick, on_tick, 20, 20);
    sl_answer ans;
    CHECK(sl_session_exec1(&sess, slow_sql, 0, NULL, &ans) == 0);
    CHECK(ticks >= 3);
    CHECK(!ans.ok);
    CHECK_STR(ans.sqlstate, "57014");
    CHECK(sl_session_stopping(&sess));
    sl_answer_free(&ans);
    uv_close((uv_handle_t *)&tick, NULL);
    close_session(&loop, &sess);
}

static void test_hash_tells_types_apart(void)
{
    make_db();
    uv_loop_t loop;
    sl_session sess;
    open_session(&loop, &sess);
    sl_answer ans;
    CHECK(sl_session_exec1(&sess,
                           "SELECT sluice_hash(1), sluice_hash(1.0), sluice_hash('1'), sluice_hash(X'31'),"
                           " sluice_hash(NULL), sluice_hash(1, NULL), sluice_hash(1)",
                           0, NULL, &ans) == 0 &&
          ans.ok);
    for (int a = 0; a < 6; a++)
        for (int b = a + 1; b < 6; b++)
            CHECK(strcmp(sl_answer_val(&ans, 0, 0, a), sl_answer_val(&ans, 0, 0, b)) != 0);
    CHECK_STR(sl_answer_val(&ans, 0, 0, 0), sl_answer_val(&ans, 0, 0, 6));
    sl_answer_free(&ans);
    close_session(&loop, &sess);
}

/* One runner per job and database: a second process is refused and told
 * who holds it; another job is free; the lock goes with the process. */
static void test_job_lock(void)
{
    make_db();
    uv_loop_t loop;
    sl_session sess;
    open_session(&loop, &sess);
    sl_err err = {{0}};
    CHECK(sl_session_lock_job(&sess, "0001_a", 0, &err) == 0);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t child = fork();
    if (child == 0) {
        uv_loop_t cl;
        sl_session cs;
        sl_err cerr = {{0}};
        uv_loop_init(&cl);
        int r1 = sl_session_init(&cs, &cl, url, &cerr) == 0 && sl_session_connect(&cs, &cerr) == 0 ? 0 : 9;
        int a = sl_session_lock_job(&cs, "0001_a", 200, &cerr);
        char out[300];
        int len = snprintf(out, sizeof out, "%d %d %.200s", r1, a, cerr.msg);
        int b = sl_session_lock_job(&cs, "0002_b", 0, &cerr);
        if (write(fds[1], out, (size_t)len) < 0 || b != 0)
            _exit(3);
        _exit(0);
    }
    close(fds[1]);
    char got[300] = {0};
    ssize_t n = read(fds[0], got, sizeof got - 1);
    close(fds[0]);
    int status;
    waitpid(child, &status, 0);
    CHECK(n > 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0); /* the other job's lock was free */
    CHECK(strncmp(got, "0 -2 ", 5) == 0);
    CHECK_HAS(got, "already being run"); /* the run names the holder from sluice_jobs */
    sl_session_unlock_job(&sess, "0001_a");
    close_session(&loop, &sess);
}

/* Two connections of one process to one file (two targets of a fleet run
 * naming one database): the second is refused the job the first holds, and
 * closing it leaves the first one's lock in place. */
static void test_job_lock_same_process(void)
{
    make_db();
    uv_loop_t loop, loop2;
    sl_session sess, sess2;
    open_session(&loop, &sess);
    open_session(&loop2, &sess2);
    sl_err err = {{0}};
    CHECK(sl_session_lock_job(&sess, "0001_a", 0, &err) == 0);
    CHECK(sl_lite_job_locked(&sess2.lite, "0001_a"));
    CHECK(!sl_lite_job_locked(&sess.lite, "0001_a")); /* its own lock is no other runner's */
    CHECK(sl_session_lock_job(&sess2, "0001_a", 0, &err) == SL_EREFUSED);
    CHECK_HAS(err.msg, "already being run");
    CHECK(sl_session_lock_job(&sess2, "0002_b", 0, &err) == 0);
    close_session(&loop2, &sess2);
    open_session(&loop2, &sess2);
    CHECK(sl_session_lock_job(&sess2, "0001_a", 0, &err) == SL_EREFUSED);
    CHECK(sl_session_lock_job(&sess2, "0002_b", 0, &err) == 0); /* went with the closed connection */
    close_session(&loop2, &sess2);
    sl_session_unlock_job(&sess, "0001_a");
    close_session(&loop, &sess);
}

static void test_missing_file_refused(void)
{
    uv_loop_t loop;
    sl_session sess;
    sl_err err = {{0}};
    char missing[160];
    snprintf(missing, sizeof missing, "sqlite:%s/nope.db", tmpdir);
    uv_loop_init(&loop);
    CHECK(sl_session_init(&sess, &loop, missing, &err) != 0);
    CHECK_HAS(err.msg, "no such database file");
    CHECK_HAS(err.msg, "nope.db");
    CHECK(uv_loop_close(&loop) == 0);
    char path[128];
    snprintf(path, sizeof path, "%s/nope.db", tmpdir);
    CHECK(access(path, F_OK) != 0); /* not created */
    CHECK(sl_session_init(&sess, &loop, "sqlite:", &err) != 0);
    CHECK_HAS(err.msg, "no database file after");
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-lite.XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    RUN(test_batch_results);
    RUN(test_error_rolls_back);
    RUN(test_statement_errors);
    RUN(test_parameter_count_checked);
    RUN(test_busy_is_lock_timeout);
    RUN(test_statement_timeout);
    RUN(test_loop_free_and_interrupt);
    RUN(test_hash_tells_types_apart);
    RUN(test_job_lock);
    RUN(test_job_lock_same_process);
    RUN(test_missing_file_refused);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return CHECK_DONE();
}
