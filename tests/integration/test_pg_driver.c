/* test_pg_driver.c: the libpq-on-libuv driver (runner/db/pg.c) against a real PostgreSQL named by SLUICE_TEST_DB. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "sluice/db/pg.h"

static const char *test_db;
static int reply_seq;

/* ---- helpers ---- */

typedef struct connect_wait {
    int done;
    int status;
    char error[1024];
} connect_wait;

typedef struct reply_wait reply_wait;
struct reply_wait {
    int done;
    int order; /* when its callback ran, across all batches */
    int ok, failed_index, conn_lost, has_error;
    char sqlstate[6];
    char error[1024];
    size_t n;
    int *status;                            /* PQresultStatus, -1 for a NULL result */
    char **value;                           /* first column of the first row, or NULL */
    void (*then)(sl_pg *pg, reply_wait *w); /* runs inside the callback */
    void *ctx;
};

static void on_connect(sl_pg *pg, int status, const char *error, void *arg)
{
    connect_wait *w = arg;
    (void)pg;
    w->done++;
    w->status = status;
    snprintf(w->error, sizeof w->error, "%s", error ? error : "");
}

static void on_reply(sl_pg *pg, const sl_pg_reply *r, void *arg)
{
    reply_wait *w = arg;
    w->done++;
    w->order = ++reply_seq;
    w->ok = r->ok;
    w->failed_index = r->failed_index;
    w->conn_lost = r->conn_lost;
    w->has_error = r->error != NULL;
    memcpy(w->sqlstate, r->sqlstate, sizeof w->sqlstate);
    snprintf(w->error, sizeof w->error, "%s", r->error ? r->error : "");
    w->n = r->nresults;
    w->status = calloc(r->nresults + 1, sizeof *w->status);
    w->value = calloc(r->nresults + 1, sizeof *w->value);
    for (size_t i = 0; i < r->nresults; i++) {
        const PGresult *res = r->results[i];
        w->status[i] = res ? (int)PQresultStatus(res) : -1;
        if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
            w->value[i] = strdup(PQgetvalue(res, 0, 0));
        }
    }
    if (w->then)
        w->then(pg, w);
}

static void reply_free(reply_wait *w)
{
    for (size_t i = 0; w->value && i < w->n; i++)
        free(w->value[i]);
    free(w->value);
    free(w->status);
    memset(w, 0, sizeof *w);
}

/* Run the loop until *flag is set or nothing is left to run. */
static void wait_until(uv_loop_t *loop, const int *flag)
{
    while (!*flag && uv_run(loop, UV_RUN_ONCE)) {
    }
}

static void init_pg(uv_loop_t *loop, sl_pg *pg, const char *conninfo)
{
    sl_err err;
    if (sl_pg_init(loop, pg, conninfo, &err) != 0) {
        printf("Bail out! sl_pg_init: %s\n", err.msg);
        exit(1);
    }
}

static int connect_pg(uv_loop_t *loop, sl_pg *pg)
{
    connect_wait w = {0};
    if (sl_pg_connect(pg, 10000, on_connect, &w) != 0)
        return -1;
    wait_until(loop, &w.done);
    if (w.status != 0)
        printf("#   connect: %s\n", w.error);
    return w.done == 1 ? w.status : -1;
}

static void open_pg(uv_loop_t *loop, sl_pg *pg)
{
    init_pg(loop, pg, test_db);
    CHECK(connect_pg(loop, pg) == 0);
    CHECK(pg->connected);
}

static void on_closed(sl_pg *pg)
{
    *(int *)pg->data = 1;
}

static void close_pg(uv_loop_t *loop, sl_pg *pg)
{
    int closed = 0;
    pg->data = &closed;
    sl_pg_close(pg, on_closed);
    wait_until(loop, &closed);
    CHECK(closed);
}

static void finish_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(loop) == 0);
}

static int run_batch(uv_loop_t *loop, sl_pg *pg, const sl_query *q, size_t n, reply_wait *w)
{
    memset(w, 0, sizeof *w);
    int rc = sl_pg_send(pg, q, n, on_reply, w);
    CHECK(rc == 0);
    if (rc != 0)
        return -1;
    wait_until(loop, &w->done);
    CHECK(w->done == 1);
    return w->done == 1 ? 0 : -1;
}

static void exec_sql(uv_loop_t *loop, sl_pg *pg, const char *sql, reply_wait *w)
{
    sl_query q = {sql, 0, NULL};
    run_batch(loop, pg, &q, 1, w);
}

/* ---- tests ---- */

static void test_batch_with_params(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    open_pg(&loop, &pg);
    char a[8] = "2", b[8] = "3", word[8] = "abc";
    const char *add[] = {a, b};
    const char *up[] = {word};
    const char *null_param[] = {NULL};
    sl_query q[] = {
        {"SELECT $1::int + $2::int", 2, add},
        {"SELECT upper($1)", 1, up},
        {"SELECT $1::text IS NULL", 1, null_param},
        {"SELECT 'x'", 0, NULL},
    };
    reply_wait w = {0};
    CHECK(sl_pg_send(&pg, q, 4, on_reply, &w) == 0);
    CHECK(sl_pg_pending(&pg) == 1);
    /* The driver promises to copy: clobber the caller's memory before anything is read. */
    memcpy(a, "9", 2);
    memcpy(word, "zzz", 4);
    wait_until(&loop, &w.done);
    CHECK(w.done == 1);
    CHECK(sl_pg_pending(&pg) == 0);
    CHECK(w.ok && w.failed_index == -1 && !w.conn_lost && !w.has_error);
    CHECK_STR(w.sqlstate, "");
    CHECK(w.n == 4);
    if (w.n == 4) {
        CHECK_STR(w.value[0], "5");
        CHECK_STR(w.value[1], "ABC");
        CHECK_STR(w.value[2], "t");
        CHECK_STR(w.value[3], "x");
        for (int i = 0; i < 4; i++)
            CHECK(w.status[i] == PGRES_TUPLES_OK);
    }
    reply_free(&w);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

static void test_error_mid_batch(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    open_pg(&loop, &pg);
    reply_wait w;
    exec_sql(&loop, &pg, "CREATE TEMP TABLE t (id int)", &w);
    CHECK(w.ok);
    reply_free(&w);
    sl_query q[] = {
        {"INSERT INTO t VALUES (1)", 0, NULL},
        {"SELECT 1/0", 0, NULL},
        {"INSERT INTO t VALUES (2)", 0, NULL},
    };
    run_batch(&loop, &pg, q, 3, &w);
    CHECK(!w.ok && !w.conn_lost);
    CHECK(w.failed_index == 1);
    CHECK_STR(w.sqlstate, "22012");
    CHECK_HAS(w.error, "division by zero");
    CHECK(strchr(w.error, '\n') == NULL);
    if (w.n == 3) {
        CHECK(w.status[0] == PGRES_COMMAND_OK);
        CHECK(w.status[1] == PGRES_FATAL_ERROR);
        CHECK(w.status[2] == -1); /* aborted: NULL */
    }
    reply_free(&w);
    /* The segment's implicit transaction rolled back; the connection goes on. */
    exec_sql(&loop, &pg, "SELECT count(*) FROM t", &w);
    CHECK(w.ok);
    CHECK_STR(w.value ? w.value[0] : NULL, "0");
    reply_free(&w);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

/* A Bind whose values do not match the statement's parameters (a statement
 * that lost its :lo/:hi) is refused by the server with 08P01, which must not
 * be retried as the connection failures of class 08 are. */
static void test_bind_count_refused(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    open_pg(&loop, &pg);
    reply_wait w;
    exec_sql(&loop, &pg, "CREATE TEMP TABLE t AS SELECT g AS id, 0 AS n FROM generate_series(1, 10) g", &w);
    CHECK(w.ok);
    reply_free(&w);
    const char *edges[] = {"3", "5"};
    for (int prepare = 0; prepare < 2; prepare++) {
        sl_query q[] = {
            {"BEGIN", 0, NULL, 0}, {"UPDATE t SET n = n + 1 WHERE true", 2, edges, prepare}, {"COMMIT", 0, NULL, 0}};
        run_batch(&loop, &pg, q, 3, &w);
        CHECK(!w.ok && !w.conn_lost && w.failed_index == 1);
        CHECK_STR(w.sqlstate, "08P01");
        CHECK_HAS(w.error, "bind message supplies 2 parameters, but prepared statement");
        CHECK(!sl_answer_transient(w.sqlstate));
        reply_free(&w);
        exec_sql(&loop, &pg, "ROLLBACK", &w); /* as the runner ends a failed chunk */
        reply_free(&w);
        /* the connection goes on, and nothing changed */
        exec_sql(&loop, &pg, "SELECT count(*) FROM t WHERE n <> 0", &w);
        CHECK(w.ok);
        CHECK_STR(w.value ? w.value[0] : NULL, "0");
        reply_free(&w);
    }
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

static void test_explicit_transaction(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    open_pg(&loop, &pg);
    reply_wait w;
    exec_sql(&loop, &pg, "CREATE TEMP TABLE t (id int)", &w);
    reply_free(&w);
    sl_query good[] = {{"BEGIN", 0, NULL}, {"INSERT INTO t VALUES (1)", 0, NULL}, {"COMMIT", 0, NULL}};
    run_batch(&loop, &pg, good, 3, &w);
    CHECK(w.ok && w.n == 3);
    reply_free(&w);
    sl_query bad[] = {
        {"BEGIN", 0, NULL}, {"INSERT INTO t VALUES (2)", 0, NULL}, {"SELECT 1/0", 0, NULL}, {"COMMIT", 0, NULL}};
    run_batch(&loop, &pg, bad, 4, &w);
    CHECK(!w.ok && w.failed_index == 2);
    CHECK_STR(w.sqlstate, "22012");
    if (w.n == 4)
        CHECK(w.status[3] == -1);
    reply_free(&w);
    /* The explicit transaction outlives the sync, aborted: until the owner
     * rolls back, everything fails. */
    exec_sql(&loop, &pg, "SELECT 1", &w);
    CHECK(!w.ok && w.failed_index == 0);
    CHECK_STR(w.sqlstate, "25P02");
    reply_free(&w);
    exec_sql(&loop, &pg, "ROLLBACK", &w);
    CHECK(w.ok);
    reply_free(&w);
    exec_sql(&loop, &pg, "SELECT count(*) FROM t", &w);
    CHECK(w.ok);
    CHECK_STR(w.value ? w.value[0] : NULL, "1");
    reply_free(&w);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

/* Pooled, the prelude runs in every transaction: before a batch's first
 * query, after each COMMIT, and after (not before) a BEGIN with a query
 * after it, where a query before it would have taken the transaction's
 * snapshot and BEGIN ISOLATION LEVEL would fail (25001). */
static void test_pooled_prelude(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    open_pg(&loop, &pg);
    pg.prelude = "SELECT set_config('application_name', 'prelude ran', true)";
    sl_pg_set_pooled(&pg, NULL);
    reply_wait w;
    exec_sql(&loop, &pg, "SHOW application_name", &w);
    CHECK(w.ok);
    CHECK_STR(w.value ? w.value[0] : NULL, "prelude ran");
    reply_free(&w);
    sl_query rr[] = {{"BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL},
                     {"SHOW transaction_isolation", 0, NULL},
                     {"SHOW application_name", 0, NULL},
                     {"COMMIT", 0, NULL},
                     {"SHOW application_name", 0, NULL}};
    run_batch(&loop, &pg, rr, 5, &w);
    CHECK(w.ok && w.n == 5);
    if (w.ok && w.n == 5) {
        CHECK_STR(w.value[1], "repeatable read");
        CHECK_STR(w.value[2], "prelude ran");
        CHECK_STR(w.value[4], "prelude ran");
    } else {
        printf("#   %s %s\n", w.sqlstate, w.error);
    }
    reply_free(&w);
    /* the prelude's own error is the next query's */
    pg.prelude = "SELECT 1/0";
    sl_query bad[] = {{"BEGIN", 0, NULL}, {"SELECT 2", 0, NULL}, {"COMMIT", 0, NULL}};
    run_batch(&loop, &pg, bad, 3, &w);
    CHECK(!w.ok && w.failed_index == 1);
    CHECK_STR(w.sqlstate, "22012");
    reply_free(&w);
    exec_sql(&loop, &pg, "ROLLBACK", &w);
    reply_free(&w);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

static void test_two_batches_in_flight(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    open_pg(&loop, &pg);
    sl_query first[] = {{"SELECT pg_sleep(0.2)", 0, NULL}, {"SELECT 'a'", 0, NULL}};
    sl_query second[] = {{"SELECT 'b'", 0, NULL}};
    reply_wait a = {0}, b = {0};
    CHECK(sl_pg_send(&pg, first, 2, on_reply, &a) == 0);
    CHECK(sl_pg_send(&pg, second, 1, on_reply, &b) == 0);
    CHECK(sl_pg_pending(&pg) == 2);
    wait_until(&loop, &b.done);
    CHECK(a.done == 1 && b.done == 1);
    CHECK(a.order < b.order);
    CHECK(a.ok && b.ok);
    CHECK_STR(a.value ? a.value[1] : NULL, "a");
    CHECK_STR(b.value ? b.value[0] : NULL, "b");
    reply_free(&a);
    reply_free(&b);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

static const sl_query chain_query = {"SELECT 'chained'", 0, NULL};

/* From inside a callback: send again twice, then close the driver. */
static void chain_next(sl_pg *pg, reply_wait *w)
{
    int *count = w->ctx;
    (*count)++;
    if (*count < 3) {
        reply_wait *next = w + 1;
        memset(next, 0, sizeof *next);
        next->then = chain_next;
        next->ctx = count;
        CHECK(sl_pg_send(pg, &chain_query, 1, on_reply, next) == 0);
    } else {
        sl_pg_close(pg, on_closed);
    }
}

static void disconnect_inside(sl_pg *pg, reply_wait *w)
{
    (void)w;
    sl_pg_disconnect(pg);
}

static void test_reentrant_callbacks(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    open_pg(&loop, &pg);
    /* A callback that disconnects: the other pending batch is failed before
     * sl_pg_disconnect returns, and the driver can connect again. */
    reply_wait a = {.then = disconnect_inside}, b = {0};
    sl_query q = {"SELECT 1", 0, NULL};
    CHECK(sl_pg_send(&pg, &q, 1, on_reply, &a) == 0);
    CHECK(sl_pg_send(&pg, &q, 1, on_reply, &b) == 0);
    wait_until(&loop, &a.done);
    CHECK(a.ok && b.done == 1 && b.conn_lost && !b.ok);
    CHECK_HAS(b.error, "disconnected");
    CHECK(!pg.connected && pg.conn == NULL && sl_pg_pending(&pg) == 0);
    reply_free(&a);
    reply_free(&b);
    CHECK(connect_pg(&loop, &pg) == 0);
    /* Chained sends from callbacks, ending in sl_pg_close from a callback. */
    reply_wait chain[4];
    int count = 0, closed = 0;
    memset(chain, 0, sizeof chain);
    chain[0].then = chain_next;
    chain[0].ctx = &count;
    pg.data = &closed;
    CHECK(sl_pg_send(&pg, &chain_query, 1, on_reply, &chain[0]) == 0);
    wait_until(&loop, &closed);
    CHECK(closed && count == 3);
    for (int i = 0; i < 3; i++) {
        CHECK(chain[i].ok);
        CHECK_STR(chain[i].value ? chain[i].value[0] : NULL, "chained");
        reply_free(&chain[i]);
    }
    finish_loop(&loop);
}

static void test_large_batches(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    open_pg(&loop, &pg);
    enum { NQ = 2000 };
    static char numbers[NQ][12];
    static const char *params[NQ][1];
    static sl_query q[NQ];
    for (int i = 0; i < NQ; i++) {
        snprintf(numbers[i], sizeof numbers[i], "%d", i);
        params[i][0] = numbers[i];
        q[i] = (sl_query){"SELECT $1::int * 2", 1, params[i]};
    }
    reply_wait w;
    run_batch(&loop, &pg, q, NQ, &w);
    CHECK(w.ok && w.n == NQ);
    int wrong = 0;
    for (size_t i = 0; i < w.n; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", (int)i * 2);
        if (!w.value[i] || strcmp(w.value[i], want) != 0)
            wrong++;
    }
    CHECK(wrong == 0);
    reply_free(&w);
    /* 16 MB of parameters cannot leave in one write: the driver must wait
     * for the socket to become writable, and keep reading meanwhile. The
     * batch opens with a sleep, during which the backend reads nothing (it
     * reads its next message only once a statement is done), so the socket's
     * buffers fill whatever the machine's speed: without it, a backend on
     * another core could drain all 16 MB within the first write. Two
     * seconds, not less: on a loaded machine the client may take longer
     * than a short sleep to hand libpq the rest, and the backend, awake
     * again, drains it as it comes. */
    size_t big_len = 2u << 20;
    char *big = malloc(big_len + 1);
    memset(big, 'x', big_len);
    big[big_len] = '\0';
    const char *big_param[] = {big};
    sl_query bq[9];
    bq[0] = (sl_query){"SELECT pg_sleep(2)", 0, NULL};
    for (int i = 1; i < 9; i++)
        bq[i] = (sl_query){"SELECT length($1)", 1, big_param};
    memset(&w, 0, sizeof w);
    CHECK(sl_pg_send(&pg, bq, 9, on_reply, &w) == 0);
    CHECK(pg.events & UV_WRITABLE);
    free(big);
    wait_until(&loop, &w.done);
    CHECK(w.done == 1 && w.ok && w.n == 9);
    for (size_t i = 1; i < w.n; i++)
        CHECK_STR(w.value[i], "2097152");
    CHECK(!(pg.events & UV_WRITABLE));
    reply_free(&w);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

typedef struct notice_log {
    int count;
    char last[512];
} notice_log;

static void on_notice(sl_pg *pg, const char *message, void *arg)
{
    notice_log *log = arg;
    (void)pg;
    log->count++;
    snprintf(log->last, sizeof log->last, "%s", message);
}

static void test_notices(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    init_pg(&loop, &pg, test_db);
    notice_log log = {0};
    sl_pg_set_notice_cb(&pg, on_notice, &log);
    CHECK(connect_pg(&loop, &pg) == 0);
    reply_wait w;
    exec_sql(&loop, &pg, "DO $$BEGIN RAISE NOTICE 'hello %', 42; END$$", &w);
    CHECK(w.ok);
    CHECK(log.count == 1);
    CHECK_HAS(log.last, "hello 42");
    size_t len = strlen(log.last);
    CHECK(len > 0 && log.last[len - 1] != '\n');
    reply_free(&w);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

/* A loopback TCP socket bound to a free port; listening or not. */
static int local_socket(int listening, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0 || (listening && listen(fd, 8) != 0)) {
        printf("Bail out! cannot make a loopback socket\n");
        exit(1);
    }
    *port = ntohs(addr.sin_port);
    return fd;
}

static void connect_expect_failure(const char *conninfo, int64_t timeout_ms, connect_wait *w, uint64_t *elapsed)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg;
    init_pg(&loop, &pg, conninfo);
    uv_update_time(&loop);
    uint64_t start = uv_now(&loop);
    CHECK(sl_pg_connect(&pg, timeout_ms, on_connect, w) == 0);
    CHECK(w->done == 0); /* never called back from inside sl_pg_connect */
    wait_until(&loop, &w->done);
    uv_update_time(&loop);
    *elapsed = uv_now(&loop) - start;
    CHECK(w->done == 1 && w->status == -1);
    CHECK(strchr(w->error, '\n') == NULL);
    CHECK(!pg.connected && pg.conn == NULL);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

static void test_connect_refused(void)
{
    int port;
    close(local_socket(0, &port)); /* bound, never listened: nothing there now */
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=nobody dbname=nothing", port);
    connect_wait w = {0};
    uint64_t elapsed;
    connect_expect_failure(conninfo, 5000, &w, &elapsed);
    CHECK_HAS(w.error, "refused");
    CHECK(elapsed < 4000);
}

static void test_connect_timeout(void)
{
    /* The kernel completes the handshake into the backlog; nobody ever
     * answers libpq's first packet. */
    int port;
    int fd = local_socket(1, &port);
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=nobody dbname=nothing", port);
    connect_wait w = {0};
    uint64_t elapsed;
    connect_expect_failure(conninfo, 300, &w, &elapsed);
    CHECK_HAS(w.error, "timed out");
    CHECK_HAS(w.error, "nobody@127.0.0.1:");
    CHECK(elapsed >= 290 && elapsed < 5000);
    close(fd);
}

static void add_option(char *out, size_t outsz, const char *key, const char *val)
{
    size_t len = strlen(out);
    len += (size_t)snprintf(out + len, outsz - len, "%s%s='", len ? " " : "", key);
    for (const char *p = val; *p && len + 3 < outsz; p++) {
        if (*p == '\\' || *p == '\'')
            out[len++] = '\\';
        out[len++] = *p;
    }
    snprintf(out + len, outsz - len, "'");
}

/* SLUICE_TEST_DB with a dead host put in front of its own. */
static void host_list_conninfo(int bad_port, char *out, size_t outsz)
{
    PQconninfoOption *opts = PQconninfoParse(test_db, NULL);
    const char *host = "", *port = "";
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (!o->val || !o->val[0] || strcmp(o->keyword, "hostaddr") == 0)
            continue;
        if (strcmp(o->keyword, "host") == 0) {
            host = o->val;
        } else if (strcmp(o->keyword, "port") == 0) {
            port = o->val;
        } else {
            add_option(out, outsz, o->keyword, o->val);
        }
    }
    /* An empty list entry would mean the compiled-in socket, not PGHOST. */
    if (!host[0] && getenv("PGHOST"))
        host = getenv("PGHOST");
    char hosts[512], ports[64];
    snprintf(hosts, sizeof hosts, "127.0.0.1,%s", host);
    snprintf(ports, sizeof ports, "%d,%s", bad_port, port);
    add_option(out, outsz, "host", hosts);
    add_option(out, outsz, "port", ports);
    PQconninfoFree(opts);
}

/* libpq finds the first host refused inside PQconnectPoll and opens a new
 * socket for the next one, usually under the same descriptor number; the
 * driver must follow it to the new socket. */
static void test_host_list_fallback(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int port;
    close(local_socket(0, &port)); /* nothing listens there */
    char conninfo[2048];
    host_list_conninfo(port, conninfo, sizeof conninfo);
    sl_pg pg;
    init_pg(&loop, &pg, conninfo);
    connect_wait cw = {0};
    CHECK(sl_pg_connect(&pg, 5000, on_connect, &cw) == 0);
    wait_until(&loop, &cw.done);
    CHECK(cw.done == 1 && cw.status == 0);
    if (cw.status != 0)
        printf("#   connect: %s\n", cw.error);
    reply_wait w;
    if (pg.connected) {
        exec_sql(&loop, &pg, "SELECT 1", &w);
        CHECK(w.ok);
        reply_free(&w);
    }
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

typedef struct killer {
    uv_loop_t *loop;
    sl_pg *victim, *pg;
    uv_timer_t retry;
    char pid[16];
    const char *params[1];
    reply_wait reply;
    int killed;
} killer;

static void kill_attempt(uv_timer_t *timer);

/* pg_terminate_backend only once the victim's pg_sleep is running. */
static void killer_replied(sl_pg *pg, reply_wait *w)
{
    killer *k = w->ctx;
    (void)pg;
    k->killed = w->ok && w->value[0] && strcmp(w->value[0], "t") == 0;
    if (!k->killed)
        uv_timer_start(&k->retry, kill_attempt, 20, 0);
}

static void kill_attempt(uv_timer_t *timer)
{
    killer *k = timer->data;
    static const sl_query q = {"SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity"
                               " WHERE pid = $1::int AND state = 'active' AND query LIKE '%pg_sleep%'",
                               0, NULL};
    sl_query kq = q;
    kq.nparams = 1;
    kq.params = k->params;
    reply_free(&k->reply);
    k->reply.then = killer_replied;
    k->reply.ctx = k;
    CHECK(sl_pg_send(k->pg, &kq, 1, on_reply, &k->reply) == 0);
}

static void test_connection_lost(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_pg pg, other;
    open_pg(&loop, &pg);
    open_pg(&loop, &other);
    killer k = {.loop = &loop, .victim = &pg, .pg = &other};
    int old_pid = PQbackendPID(pg.conn);
    snprintf(k.pid, sizeof k.pid, "%d", old_pid);
    k.params[0] = k.pid;
    uv_timer_init(&loop, &k.retry);
    k.retry.data = &k;
    uv_timer_start(&k.retry, kill_attempt, 0, 0);
    sl_query q = {"SELECT pg_sleep(30)", 0, NULL};
    reply_wait w;
    run_batch(&loop, &pg, &q, 1, &w);
    wait_until(&loop, &k.killed); /* the killer's reply may come second */
    CHECK(k.killed);
    CHECK(w.conn_lost && !w.ok && w.has_error);
    printf("#   lost: %s [%s]\n", w.error, w.sqlstate);
    CHECK(w.n == 1);
    CHECK(!pg.connected && pg.conn == NULL && sl_pg_pending(&pg) == 0);
    CHECK(sl_pg_send(&pg, &q, 1, on_reply, &w) != 0); /* not connected: refused */
    reply_free(&w);
    /* Reconnect and carry on. */
    CHECK(connect_pg(&loop, &pg) == 0);
    CHECK(pg.conn && PQbackendPID(pg.conn) != old_pid);
    exec_sql(&loop, &pg, "SELECT 1", &w);
    CHECK(w.ok);
    CHECK_STR(w.value ? w.value[0] : NULL, "1");
    reply_free(&w);
    reply_free(&k.reply);
    uv_close((uv_handle_t *)&k.retry, NULL);
    close_pg(&loop, &other);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

static void test_bad_conninfo(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static const char *const bad[] = {
        "postgresql://u:s3cret@/x?bogus=1",
        "postgresql://u:s3cr%zzet@/x",
        "host=h password=s3cret bogus=1",
        "host=h password='s3cr et' bogus",
        /* libpq takes "s3cr" and chokes on the rest of an unquoted password */
        "host=h password=s3cr x9z7 bogus=1",
        "postgresql://u@h/x?password=s3cr%zzx9z7",
        "postgresql://u@h/x?sslpassword=s3cr%x9z7",
        "postgresql://u:s3cr%x9z7@h/x?bogus=1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_pg pg;
        sl_err err = {{0}};
        CHECK(sl_pg_init(&loop, &pg, bad[i], &err) < 0);
        CHECK(err.msg[0] != '\0');
        CHECK(strstr(err.msg, "s3cr") == NULL);
        CHECK(strstr(err.msg, "x9z7") == NULL);
        printf("#   %s\n", err.msg);
    }
    sl_pg pg;
    sl_err err = {{0}};
    CHECK(sl_pg_init(&loop, &pg, "postgresql://u:s3cret@/x?bogus=1", &err) < 0);
    CHECK_HAS(err.msg, "bogus");
    CHECK(sl_pg_init(&loop, &pg, "postgresql://alice:s3cret@db.example:6543/app", &err) == 0);
    CHECK_STR(pg.display, "alice@db.example:6543/app");
    close_pg(&loop, &pg);
    CHECK(sl_pg_init(&loop, &pg, "host=/tmp port=7 user=bob password=s3cret", &err) == 0);
    /* libpq's default database: PGDATABASE, else the user name. */
    const char *env_db = getenv("PGDATABASE");
    char want[128];
    snprintf(want, sizeof want, "bob@/tmp:7/%s", env_db && env_db[0] ? env_db : "bob");
    CHECK_STR(pg.display, want);
    close_pg(&loop, &pg);
    finish_loop(&loop);
}

static void test_transient(void)
{
    static const char *const yes[] = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03",
                                      "08006", "08001", "08000", "08003", "08004", "08007"};
    static const char *const no[] = {"23505", "22012", "25P02", "42P01", "", "0", "08P01"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        CHECK(sl_answer_transient(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        CHECK(!sl_answer_transient(no[i]));
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_db = getenv("SLUICE_TEST_DB");
    if (!test_db) {
        printf("not ok 1 - SLUICE_TEST_DB not set\n1..1\n");
        return 1;
    }
    alarm(300); /* a hang is a failure, never a stuck CI job */
    RUN(test_bad_conninfo);
    RUN(test_transient);
    RUN(test_batch_with_params);
    RUN(test_error_mid_batch);
    RUN(test_bind_count_refused);
    RUN(test_explicit_transaction);
    RUN(test_pooled_prelude);
    RUN(test_two_batches_in_flight);
    RUN(test_reentrant_callbacks);
    RUN(test_large_batches);
    RUN(test_notices);
    RUN(test_connect_refused);
    RUN(test_connect_timeout);
    RUN(test_host_list_fallback);
    RUN(test_connection_lost);
    return CHECK_DONE();
}
