/* pg.c: PostgreSQL through libpq's asynchronous API on a libuv loop, in pipeline mode. */
#include "sluice/db/pg.h"
#include "sluice/base/fiber.h"
#include "sluice/db/secrets.h"

#include "pg_internal.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* pg->poll_active: the one uv_poll_t moves between these states. A handle is
 * bound to its descriptor at init, so watching a different descriptor means
 * closing it and initialising it again once libuv has released it. */
enum { POLL_NONE = 0, POLL_READY = 1, POLL_CLOSING = 2 };

struct sl_pg_batch {
    struct sl_pg_batch *next;
    sl_pg_reply_cb cb;
    void *arg;
    size_t nqueries;
    size_t current;        /* query whose results are being read; nqueries = awaiting the sync */
    size_t skip;           /* commands sent before the current query whose results are still to read */
    unsigned char *hidden; /* per query: commands sent just before it (the prelude, a Prepare) */
    char **prep;           /* per query: the statement name prepared just before it, or NULL */
    int named;             /* some query ran as a named statement */
    sl_query *held;        /* pooled, another batch on the wire: a copy of the queries, sent after it */
    PGresult **results;
    int failed_index;
    char sqlstate[6];
    char *error;
};

static void pg_on_poll(uv_poll_t *handle, int status, int events);
static void pg_forget_prepared(sl_pg *pg);
static void pg_lose(sl_pg *pg, const char *message);
static void pg_connect_fail(sl_pg *pg, const char *message);
static int pg_write_batch(sl_pg *pg, struct sl_pg_batch *b, const sl_query *queries);

/* ---- handles ---- */

static int pg_alive(const sl_pg *pg, const PGconn *conn)
{
    return pg->conn == conn && pg->connected && !pg->closing;
}

static void pg_maybe_closed(sl_pg *pg)
{
    assert(pg->pending_closes >= 0 && "BUG: more handle closes than were started");
    if (!pg->closing || pg->pending_closes > 0)
        return;
    free(pg->conninfo);
    free(pg->display);
    pg->conninfo = pg->display = NULL;
    pg_forget_prepared(pg);
    if (pg->close_cb)
        pg->close_cb(pg);
}

static void pg_on_timer_closed(uv_handle_t *handle)
{
    sl_pg *pg = handle->data;
    pg->pending_closes--;
    pg_maybe_closed(pg);
}

static int pg_watch(sl_pg *pg, int events);

static void pg_on_poll_closed(uv_handle_t *handle)
{
    sl_pg *pg = handle->data;
    pg->pending_closes--;
    pg->poll_active = POLL_NONE;
    pg->poll_fd = -1;
    if (pg->closing) {
        pg_maybe_closed(pg);
        return;
    }
    /* A (re)connect asked for events while the handle was closing. */
    if (pg->conn && pg->events && pg_watch(pg, pg->events) < 0) {
        if (pg->connected) {
            pg_lose(pg, "could not watch the connection's socket");
        } else {
            pg_connect_fail(pg, "could not watch the connection's socket");
        }
    }
}

static void pg_close_poll(sl_pg *pg)
{
    pg->events = 0;
    if (pg->poll_active != POLL_READY)
        return;
    uv_poll_stop(&pg->poll);
    uv_close((uv_handle_t *)&pg->poll, pg_on_poll_closed);
    pg->poll_active = POLL_CLOSING;
    pg->pending_closes++;
}

/* Watch libpq's current socket for events. libpq may have replaced the socket
 * (next host, TCP after a Unix socket), maybe under the same number: the
 * handle was stopped before libpq ran, so starting it registers afresh. */
static int pg_watch(sl_pg *pg, int events)
{
    pg->events = events;
    if (pg->poll_active == POLL_CLOSING)
        return 0; /* pg_on_poll_closed resumes */
    int fd = PQsocket(pg->conn);
    if (fd < 0)
        return -1;
    if (pg->poll_active == POLL_READY && pg->poll_fd != fd) {
        pg_close_poll(pg);
        pg->events = events;
        return 0;
    }
    if (pg->poll_active == POLL_NONE) {
        if (uv_poll_init_socket(pg->loop, &pg->poll, fd) != 0)
            return -1;
        pg->poll.data = pg;
        pg->poll_fd = fd;
        pg->poll_active = POLL_READY;
    }
    return uv_poll_start(&pg->poll, events, pg_on_poll) == 0 ? 0 : -1;
}

/* ---- prepared statements ---- */

static int pg_is_prepared(const sl_pg *pg, const char *name)
{
    for (size_t i = 0; i < pg->nprepared; i++)
        if (strcmp(pg->prepared[i], name) == 0)
            return 1;
    return 0;
}

static void pg_add_prepared(sl_pg *pg, const char *name)
{
    pg->prepared = sl_realloc(pg->prepared, (pg->nprepared + 1) * sizeof *pg->prepared);
    pg->prepared[pg->nprepared++] = sl_strdup(name);
}

/* A Prepare that failed left nothing on the server: prepare it again next time. */
static void pg_drop_prepared(sl_pg *pg, const char *name)
{
    for (size_t i = 0; i < pg->nprepared; i++) {
        if (strcmp(pg->prepared[i], name) == 0) {
            free(pg->prepared[i]);
            pg->prepared[i] = pg->prepared[--pg->nprepared];
            return;
        }
    }
}

/* Prepared statements live and die with the server session. */
static void pg_forget_prepared(sl_pg *pg)
{
    for (size_t i = 0; i < pg->nprepared; i++)
        free(pg->prepared[i]);
    free(pg->prepared);
    pg->prepared = NULL;
    pg->nprepared = 0;
}

/* ---- batches held back ---- */

static sl_query *queries_copy(const sl_query *queries, size_t n)
{
    sl_query *copy = sl_calloc(n ? n : 1, sizeof *copy);
    for (size_t i = 0; i < n; i++) {
        copy[i] = queries[i];
        copy[i].sql = sl_strdup(queries[i].sql);
        char **params = sl_calloc((size_t)queries[i].nparams + 1, sizeof *params);
        for (int k = 0; k < queries[i].nparams; k++)
            params[k] = queries[i].params[k] ? sl_strdup(queries[i].params[k]) : NULL;
        copy[i].params = (const char *const *)params;
    }
    return copy;
}

static void queries_free(sl_query *queries, size_t n)
{
    if (!queries)
        return;
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < queries[i].nparams; k++)
            free((char *)queries[i].params[k]);
        free((char **)queries[i].params);
        free((char *)queries[i].sql);
    }
    free(queries);
}

/* Forget the connection. The poll handle is closed before PQfinish closes its
 * descriptor (libuv poll.rst), and not kept for a later socket: stopping or
 * closing a handle whose number was reused would unregister someone else's. */
static void pg_drop(sl_pg *pg)
{
    uv_timer_stop(&pg->timer);
    pg_close_poll(pg);
    PQfinish(pg->conn);
    pg->conn = NULL;
    pg->connected = 0;
    pg_forget_prepared(pg);
}

/* ---- connecting ---- */

/* The attempt ended without a connection: status SL_EFAIL, or SL_EREFUSED
 * when libpq refused the connection options themselves (pg.h). */
static void pg_connect_end(sl_pg *pg, int status, const char *message)
{
    char *line = pg_safe_line(pg, message, "could not connect");
    sl_pg_connect_cb cb = pg->connect_cb;
    pg->connect_cb = NULL;
    pg_drop(pg);
    if (cb)
        cb(pg, status, line, pg->connect_arg);
    free(line);
}

static void pg_connect_fail(sl_pg *pg, const char *message)
{
    pg_connect_end(pg, SL_EFAIL, message);
}

/* What libpq connects with: the string's own settings win, as they come
 * before dbname, which libpq expands in their place. A server gone silent
 * (a partition, a host that died) is noticed within about a minute,
 * sending or waiting for an answer, rather than the system's two hours: the
 * runner then reconnects or gives up, and a scheduler sees it end. */
typedef struct pg_params {
    const char *keywords[7], *values[7];
} pg_params;

static pg_params pg_connect_params(const sl_pg *pg)
{
    return (pg_params){
        .keywords = {"keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname",
                     "fallback_application_name", NULL},
        .values = {"30", "10", "3", "60000", pg->conninfo, "sluice", NULL},
    };
}

/* Whether a connection that failed inside PQconnectStartParams failed on its
 * options (an sslmode, gssencmode or target_session_attrs libpq does not
 * know, host and hostaddr lists that do not match: bad input, which no
 * retry mends) rather than on the way to the server. Both end there:
 * connectOptions2 checks the options before any socket is opened, but the
 * first PQconnectPoll step runs inside it too, and fails at once on a Unix
 * socket nobody listens on or a host name that does not resolve. libpq
 * tells them apart for PQping: PQPING_NO_ATTEMPT, "the supplied parameters
 * were obviously incorrect" (libpq docs 34.1; fe-connect.c's internal_ping
 * returns it when connectOptions2 left options_valid unset). With valid
 * options the ping tries to connect again, blocking: it runs only after
 * such a failure, which a second try repeats at once, and never again once
 * libpq took the options. */
static int pg_options_refused(sl_pg *pg)
{
    if (pg->options_ok)
        return 0;
    pg_params params = pg_connect_params(pg);
    int refused = PQpingParams(params.keywords, params.values, 1) == PQPING_NO_ATTEMPT;
    pg->options_ok = !refused;
    return refused;
}

static void pg_on_notice(void *arg, const char *message)
{
    sl_pg *pg = arg;
    char *line = sl_secrets_scrub(message, pg->conninfo); /* RAISE NOTICE may show what it was sent */
    /* one line (its DETAIL and HINT folded in): a line feed in the server's
     * text would start a log line of its own choosing */
    pg_oneline(line);
    if (pg->notice_cb) {
        pg->notice_cb(pg, line, pg->notice_arg);
    } else {
        /* libpq's text already says NOTICE/WARNING/...; keep the server's own word */
        sl_log(strncmp(line, "WARNING", 7) == 0 ? SL_LOG_WARN : SL_LOG_INFO, "server: %s", line);
    }
    free(line);
}

static void pg_connect_done(sl_pg *pg)
{
    uv_timer_stop(&pg->timer);
    /* libpq docs 34.5: pipeline mode can only be entered while idle. */
    if (PQsetnonblocking(pg->conn, 1) != 0 || PQenterPipelineMode(pg->conn) != 1) {
        pg_connect_fail(pg, PQerrorMessage(pg->conn));
        return;
    }
    if (pg_watch(pg, UV_READABLE) < 0) {
        pg_connect_fail(pg, "could not watch the connection's socket");
        return;
    }
    pg->connected = 1;
    sl_pg_connect_cb cb = pg->connect_cb;
    pg->connect_cb = NULL;
    if (cb)
        cb(pg, 0, NULL, pg->connect_arg);
}

/* One PQconnectPoll step. The handle is stopped first: libpq may close the
 * socket it watches during the call. */
static void pg_connect_step(sl_pg *pg)
{
    if (pg->poll_active == POLL_READY)
        uv_poll_stop(&pg->poll);
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_READING:
        if (pg_watch(pg, UV_READABLE) < 0)
            pg_connect_fail(pg, "could not watch the connection's socket");
        return;
    case PGRES_POLLING_WRITING:
        if (pg_watch(pg, UV_WRITABLE) < 0)
            pg_connect_fail(pg, "could not watch the connection's socket");
        return;
    case PGRES_POLLING_OK: pg_connect_done(pg); return;
    default: pg_connect_fail(pg, PQerrorMessage(pg->conn)); return;
    }
}

/* The timer serves three ends, one at a time: the connect timeout; reporting
 * a connect that failed inside PQconnectStartParams (callbacks never run
 * inside sl_pg_connect); and, while connected, a send that broke the
 * connection (callbacks never run inside sl_pg_send). */
static void pg_timed_out(sl_pg *pg)
{
    if (pg->connected) {
        pg_lose(pg, PQerrorMessage(pg->conn));
        return;
    }
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        pg_connect_end(pg, pg_options_refused(pg) ? SL_EREFUSED : SL_EFAIL, PQerrorMessage(pg->conn));
        return;
    }
    char *message = sl_asprintf("timed out connecting to %s", pg->display);
    pg_connect_fail(pg, message);
    free(message);
}

static void pg_on_timer(uv_timer_t *timer)
{
    sl_pg *pg = timer->data;
    if (!pg->conn)
        return;
    const void *before = sl_fiber_lend_tag(pg->tag);
    pg_timed_out(pg);
    sl_fiber_lend_tag(before);
}

/* ---- results ---- */

static int pg_result_failed(ExecStatusType status)
{
    return status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE || status == PGRES_NONFATAL_ERROR;
}

static char *pg_result_error(const PGresult *res)
{
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    char *message;
    if (primary && detail) {
        message = sl_asprintf("%s (detail: %s)", primary, detail);
    } else {
        message = sl_strdup(primary ? primary : PQresultErrorMessage(res));
    }
    pg_oneline(message);
    if (message[0] == '\0') {
        free(message);
        message = sl_strdup("query failed without a message");
    }
    return message;
}

/* Keep one result per query: the first, or an error that follows it. */
static void pg_batch_store(struct sl_pg_batch *b, PGresult *res)
{
    ExecStatusType status = PQresultStatus(res);
    size_t i = b->current;
    assert(i < b->nqueries && "BUG: result stored past the batch's last query");
    if (status == PGRES_PIPELINE_ABORTED) {
        PQclear(res); /* pg.h: aborted queries have NULL results */
        return;
    }
    if (pg_result_failed(status) && b->failed_index < 0) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        b->failed_index = (int)i;
        snprintf(b->sqlstate, sizeof b->sqlstate, "%s", state ? state : "");
        b->error = pg_result_error(res);
    }
    if (b->results[i] && !pg_result_failed(status)) {
        PQclear(res);
        return;
    }
    PQclear(b->results[i]);
    b->results[i] = res;
}

/* Run a detached batch's callback, then release it. */
static void pg_batch_finish(sl_pg *pg, struct sl_pg_batch *b, const char *lost_message)
{
    if (b->error) {
        char *safe = sl_secrets_scrub(b->error, pg->conninfo);
        free(b->error);
        b->error = safe;
    }
    sl_pg_reply reply = {
        .nresults = b->nqueries,
        .results = b->results,
        .ok = !lost_message && b->failed_index < 0,
        .failed_index = b->failed_index,
        .error = b->error ? b->error : lost_message,
        .conn_lost = lost_message != NULL,
    };
    memcpy(reply.sqlstate, b->sqlstate, sizeof reply.sqlstate);
    /* A named statement gone (26000) or already there (42P05): the server
     * session changed between two transactions of ours. */
    if (!lost_message && b->named && !pg->pooled &&
        (strcmp(b->sqlstate, "26000") == 0 || strcmp(b->sqlstate, "42P05") == 0)) {
        char *why = sl_asprintf("a prepared statement of this connection %s (%s)",
                                b->sqlstate[1] == '6' ? "went missing" : "was already there", b->sqlstate);
        sl_pg_set_pooled(pg, why);
        free(why);
    }
    b->cb(pg, &reply, b->arg);
    for (size_t i = 0; i < b->nqueries; i++) {
        PQclear(b->results[i]);
        free(b->prep[i]);
    }
    queries_free(b->held, b->nqueries);
    free(b->hidden);
    free(b->prep);
    free(b->results);
    free(b->error);
    free(b);
}

/* The connection is gone: drop it first, so that callbacks may reconnect,
 * then fail every batch that was waiting, in order. */
static void pg_lose(sl_pg *pg, const char *message)
{
    char *line = pg_safe_line(pg, message, "connection lost");
    struct sl_pg_batch *b = pg->head;
    pg->head = pg->tail = NULL;
    pg_drop(pg);
    while (b) {
        struct sl_pg_batch *next = b->next;
        pg_batch_finish(pg, b, line);
        b = next;
    }
    free(line);
}

/* Read whatever results libpq has parsed. PQgetResult blocks while PQisBusy,
 * so it is called only when it is 0. Results of one query end with NULL; the
 * sync's PGRES_PIPELINE_SYNC has none after it (libpq docs 34.5.1.2). A
 * callback may send, disconnect or close: the loop re-checks after each. */
static void pg_read(sl_pg *pg)
{
    PGconn *conn = pg->conn;
    while (pg->head && pg_alive(pg, conn) && PQstatus(conn) != CONNECTION_BAD && !PQisBusy(conn)) {
        struct sl_pg_batch *b = pg->head;
        PGresult *res = PQgetResult(conn);
        if (b->current < b->nqueries && b->skip) {
            /* the prelude or Prepare sent before the current query: its error is the query's */
            if (!res) {
                b->skip--;
                continue;
            }
            ExecStatusType status = PQresultStatus(res);
            /* failed, or aborted by an earlier error: nothing was prepared (the Prepare is sent last) */
            if (b->prep[b->current] && b->skip == 1 && (pg_result_failed(status) || status == PGRES_PIPELINE_ABORTED))
                pg_drop_prepared(pg, b->prep[b->current]);
            if (pg_result_failed(status))
                pg_batch_store(b, res);
            else
                PQclear(res);
            continue;
        }
        if (b->current < b->nqueries) {
            if (res) {
                pg_batch_store(b, res);
            } else if (++b->current < b->nqueries) {
                b->skip = b->hidden[b->current];
            }
            continue;
        }
        if (!res)
            break; /* not expected; never spin on it */
        if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
            PQclear(res);
            pg_lose(pg, "protocol out of step: a result arrived where a pipeline sync was expected");
            return;
        }
        PQclear(res);
        pg->head = b->next;
        if (!pg->head)
            pg->tail = NULL;
        /* pooled: the next batch waited for this one's sync */
        if (pg->head && pg->head->held && pg_write_batch(pg, pg->head, pg->head->held) != 0) {
            char *message = sl_strdup(PQerrorMessage(conn));
            pg_batch_finish(pg, b, NULL); /* complete: its sync arrived */
            if (pg_alive(pg, conn))
                pg_lose(pg, message);
            free(message);
            return;
        }
        pg_batch_finish(pg, b, NULL);
    }
    if (pg_alive(pg, conn) && PQstatus(conn) == CONNECTION_BAD)
        pg_lose(pg, PQerrorMessage(conn));
}

/* Write what libpq holds. UV_WRITABLE only while PQflush says more is left:
 * always watching it would spin, never watching it would stall. */
static int pg_flush(sl_pg *pg)
{
    int rc = PQflush(pg->conn);
    if (rc < 0)
        return -1;
    return pg_watch(pg, UV_READABLE | (rc == 1 ? UV_WRITABLE : 0));
}

static void pg_io_step(sl_pg *pg, int status, int events)
{
    PGconn *conn = pg->conn;
    if (status < 0) {
        /* libuv stops the handle on POLLERR (a reset, say): keep what the
         * server said before it went, then give up with libpq's words. */
        int readable = PQconsumeInput(conn);
        pg_read(pg);
        if (pg_alive(pg, conn))
            pg_lose(pg, readable ? uv_strerror(status) : PQerrorMessage(conn));
        return;
    }
    if ((events & UV_READABLE) && !PQconsumeInput(conn)) {
        pg_lose(pg, PQerrorMessage(conn));
        return;
    }
    pg_read(pg);
    if (pg_alive(pg, conn) && pg_flush(pg) < 0)
        pg_lose(pg, PQerrorMessage(conn));
}

static void pg_on_poll(uv_poll_t *handle, int status, int events)
{
    sl_pg *pg = handle->data;
    if (!pg->conn)
        return;
    const void *before = sl_fiber_lend_tag(pg->tag); /* what it logs is its fiber's target's */
    if (pg->connected) {
        pg_io_step(pg, status, events);
    } else {
        pg_connect_step(pg);
    }
    sl_fiber_lend_tag(before);
}

/* ---- public ---- */

void sl_pg_set_notice_cb(sl_pg *pg, sl_pg_notice_cb cb, void *arg)
{
    pg->notice_cb = cb;
    pg->notice_arg = arg;
}

int sl_pg_connect(sl_pg *pg, int64_t timeout_ms, sl_pg_connect_cb cb, void *arg)
{
    if (pg->closing || pg->conn)
        return -1;
    pg_params params = pg_connect_params(pg);
    /* The one thing that blocks the loop: libpq resolves host names
     * synchronously inside PQconnectStartParams (getaddrinfo). */
    PGconn *conn = PQconnectStartParams(params.keywords, params.values, 1);
    if (!conn)
        return -1;
    pg->conn = conn;
    pg->connected = 0;
    pg->connect_cb = cb;
    pg->connect_arg = arg;
    PQsetNoticeProcessor(conn, pg_on_notice, pg);
    if (PQstatus(conn) == CONNECTION_BAD) {
        uv_timer_start(&pg->timer, pg_on_timer, 0, 0); /* pg_timed_out reports it */
        return 0;
    }
    pg->options_ok = 1; /* past connectOptions2 */
    /* connect_timeout is ignored by PQconnectPoll: this timer replaces it. */
    if (timeout_ms > 0)
        uv_timer_start(&pg->timer, pg_on_timer, (uint64_t)timeout_ms, 0);
    /* libpq docs 34.1: behave as if PQconnectPoll had returned WRITING. */
    if (pg_watch(pg, UV_WRITABLE) < 0) {
        pg->connect_cb = NULL;
        pg_drop(pg);
        return -1;
    }
    return 0;
}

static int pg_queries_valid(const sl_query *queries, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const sl_query *q = &queries[i];
        if (!q->sql || q->nparams < 0 || q->nparams > PQ_QUERY_PARAM_MAX_LIMIT)
            return 0;
        if (q->nparams > 0 && !q->params)
            return 0;
    }
    return 1;
}

static void pg_enqueue(sl_pg *pg, struct sl_pg_batch *b)
{
    if (pg->tail) {
        pg->tail->next = b;
    } else {
        pg->head = b;
    }
    pg->tail = b;
}

/* Queue one query: unnamed, or a named statement, prepared first if this
 * connection has not seen it (the Prepare's result is read and dropped
 * before the query's own). Returns libpq's 1 or 0. */
static int pg_send_one(sl_pg *pg, struct sl_pg_batch *b, size_t i, const sl_query *q)
{
    if (!q->prepare || pg->pooled)
        return PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL, q->params, q->lengths, q->formats,
                                 q->binary_result);
    b->named = 1;
    char hash[17], name[24];
    sl_checksum_hex(q->sql, strlen(q->sql), hash);
    snprintf(name, sizeof name, "sl_%s", hash);
    if (!pg_is_prepared(pg, name)) {
        if (!PQsendPrepare(pg->conn, name, q->sql, q->nparams, NULL))
            return 0;
        pg_add_prepared(pg, name);
        b->prep[i] = sl_strdup(name);
        b->hidden[i]++;
    }
    return PQsendQueryPrepared(pg->conn, name, q->nparams, q->params, q->lengths, q->formats, q->binary_result);
}

/* A statement that ends the transaction: what follows starts a new one. */
static int pg_ends_xact(const char *sql)
{
    return strcasecmp(sql, "COMMIT") == 0 || strcasecmp(sql, "ROLLBACK") == 0;
}

/* A statement that opens a transaction block: BEGIN, with or without its
 * modes. */
static int pg_begins_xact(const char *sql)
{
    return strncasecmp(sql, "BEGIN", 5) == 0 && (sql[5] == '\0' || sql[5] == ' ');
}

/* Put b's queries on the wire, then its sync. Pooled, the prelude goes
 * first in every transaction that starts here: at the start of a batch sent
 * outside a transaction (one batch on the wire at a time makes libpq's
 * transaction status exact), and after a COMMIT or ROLLBACK. A BEGIN that
 * has a query after it goes before the prelude, which then runs inside its
 * block: a query before it would take the transaction's snapshot, and a
 * BEGIN ISOLATION LEVEL after that fails (25001). 0, or -1 when libpq failed
 * (the connection broke). */
static int pg_write_batch(sl_pg *pg, struct sl_pg_batch *b, const sl_query *queries)
{
    int prelude = pg->pooled && pg->prelude && PQtransactionStatus(pg->conn) == PQTRANS_IDLE;
    int sent = 1;
    for (size_t i = 0; i < b->nqueries && sent; i++) {
        if (prelude && !(pg_begins_xact(queries[i].sql) && i + 1 < b->nqueries)) {
            sent = PQsendQueryParams(pg->conn, pg->prelude, 0, NULL, NULL, NULL, NULL, 0);
            b->hidden[i]++;
            prelude = 0;
        }
        if (sent)
            sent = pg_send_one(pg, b, i, &queries[i]);
        if (pg->pooled && pg->prelude && pg_ends_xact(queries[i].sql))
            prelude = 1;
    }
    b->skip = b->nqueries ? b->hidden[0] : 0;
    queries_free(b->held, b->nqueries);
    b->held = NULL;
    if (!sent || !PQpipelineSync(pg->conn) || pg_flush(pg) < 0)
        return -1;
    return 0;
}

int sl_pg_send(sl_pg *pg, const sl_query *queries, size_t n, sl_pg_reply_cb cb, void *arg)
{
    /* An active timer while connected means a send already broke the
     * connection and its loss is about to be reported. */
    if (!pg->connected || pg->closing || uv_is_active((uv_handle_t *)&pg->timer))
        return -1;
    if (!cb || !pg_queries_valid(queries, n))
        return -1;
    struct sl_pg_batch *b = sl_calloc(1, sizeof *b);
    b->cb = cb;
    b->arg = arg;
    b->nqueries = n;
    b->results = sl_calloc(n ? n : 1, sizeof *b->results);
    b->hidden = sl_calloc(n ? n : 1, 1);
    b->prep = sl_calloc(n ? n : 1, sizeof *b->prep);
    b->failed_index = -1;
    int wait = pg->pooled && pg->head != NULL;
    pg_enqueue(pg, b);
    if (wait) {
        b->held = queries_copy(queries, n); /* sent by pg_read once the batches before it answered */
        return 0;
    }
    /* libpq copies text and params into its output buffer here, so the
     * caller's memory is free to go as soon as this returns. With the
     * queries validated above, a failure means the connection broke. */
    if (pg_write_batch(pg, b, queries) != 0) {
        if (pg->poll_active == POLL_READY)
            uv_poll_stop(&pg->poll);
        uv_timer_start(&pg->timer, pg_on_timer, 0, 0);
    }
    return 0;
}

/* Whether the line about display's pooler was logged already: once per
 * database (a fleet has several), not once per connection. */
static int pg_told_pooled(const char *display)
{
    static char told[32][128];
    static size_t ntold;
    for (size_t i = 0; i < ntold; i++)
        if (strncmp(told[i], display, sizeof told[i] - 1) == 0)
            return 1;
    if (ntold < sizeof told / sizeof told[0])
        snprintf(told[ntold++], sizeof told[0], "%s", display);
    return 0;
}

void sl_pg_set_pooled(sl_pg *pg, const char *why)
{
    if (pg->pooled)
        return;
    pg->pooled = 1;
    pg_forget_prepared(pg); /* which server holds them is anyone's guess now */
    if (!why || pg_told_pooled(pg->display ? pg->display : ""))
        return;
    sl_info("%s: %s: the server session changes between transactions, as behind PgBouncer in transaction mode; "
            "sending every statement unnamed and repeating the session's settings in each transaction (hint: "
            "sluice_pooler=transaction in the connection string, or SLUICE_POOLER=transaction, says so up front; "
            "sluice_pooler=none keeps prepared statements)",
            pg->display, why);
}

size_t sl_pg_pending(const sl_pg *pg)
{
    size_t count = 0;
    for (const struct sl_pg_batch *b = pg->head; b; b = b->next)
        count++;
    return count;
}

void sl_pg_cancel(sl_pg *pg)
{
    if (!pg->conn || !pg->connected || !pg->head)
        return;
    /* a blocking round trip of its own to the server (or the pooler, which
     * passes it on): only when the run is being aborted */
    PGcancel *cancel = PQgetCancel(pg->conn);
    char why[256];
    if (cancel && !PQcancel(cancel, why, sizeof why))
        sl_log(SL_LOG_DEBUG, "cannot cancel the statement running on %s: %s", pg->display, why);
    PQfreeCancel(cancel);
}

void sl_pg_disconnect(sl_pg *pg)
{
    if (!pg->conn)
        return;
    if (!pg->connected) {
        pg_connect_fail(pg, "connection attempt cancelled");
        return;
    }
    pg_lose(pg, "disconnected");
}

void sl_pg_close(sl_pg *pg, sl_pg_close_cb on_close)
{
    if (pg->closing)
        return;
    pg->closing = 1;
    pg->close_cb = on_close;
    sl_pg_disconnect(pg);
    pg_close_poll(pg);
    uv_close((uv_handle_t *)&pg->timer, pg_on_timer_closed);
    pg->pending_closes++;
}
