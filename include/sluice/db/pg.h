/* pg.h: a PostgreSQL connection driven by libpq's asynchronous API on a libuv loop, in pipeline mode. */
#ifndef SLUICE_PG_H
#define SLUICE_PG_H

#include <uv.h>

#include "sluice/base/util.h"
#include "sluice/db/answer.h"
#include "sluice/db/pq.h"

typedef struct sl_pg sl_pg;

/* How the server session behaves between transactions (README "Production
 * checklist"), from the string's sluice_pooler=... or SLUICE_POOLER. */
typedef enum sl_pg_pooler {
    SL_POOLER_AUTO,        /* find out: a backend pid that is not the server's means a pooler */
    SL_POOLER_TRANSACTION, /* a pooler in transaction mode: the session may change after every transaction */
    SL_POOLER_SESSION,     /* a direct connection, or a pooler in session mode: the session is ours */
} sl_pg_pooler;

/* Queries are sl_query (answer.h); a prepared one becomes a named
 * statement, "sl_" + a hash of its sql, on each connection. */

/* What a batch produced. Valid only during the callback: the results are
 * cleared when it returns. */
typedef struct sl_pg_reply {
    size_t nresults;
    PGresult **results; /* one per query, in order; NULL where the query was aborted */
    int ok;             /* every query succeeded */
    int failed_index;   /* index of the query that failed, -1 if none */
    char sqlstate[6];   /* of the first error, "" if none or no SQLSTATE */
    const char *error;  /* first error message (one line, no trailing newline), NULL if ok */
    int conn_lost;      /* the connection broke: results are incomplete, the transaction's outcome unknown */
} sl_pg_reply;

typedef void (*sl_pg_connect_cb)(sl_pg *pg, int status, const char *error, void *arg);
typedef void (*sl_pg_reply_cb)(sl_pg *pg, const sl_pg_reply *reply, void *arg);
typedef void (*sl_pg_close_cb)(sl_pg *pg);
typedef void (*sl_pg_notice_cb)(sl_pg *pg, const char *message, void *arg);

struct sl_pg_batch;

struct sl_pg {
    uv_loop_t *loop;
    char *conninfo; /* as given; never printed */
    char *display;  /* "user@host:port/dbname": safe to print */
    PGconn *conn;
    uv_poll_t poll;
    uv_timer_t timer; /* connect timeout */
    int poll_active;  /* poll handle initialised for the current socket */
    int poll_fd;
    int events; /* current poll mask */
    int connected;
    int closing;
    int pending_closes;
    sl_pg_connect_cb connect_cb;
    void *connect_arg;
    sl_pg_close_cb close_cb;
    sl_pg_notice_cb notice_cb;
    void *notice_arg;
    const void *tag;                 /* the fiber tag it was made under: lent to its callbacks (fiber.h) */
    struct sl_pg_batch *head, *tail; /* batches sent and awaiting results, FIFO */
    char **prepared;                 /* statement names prepared on this connection */
    size_t nprepared;
    sl_pg_pooler pooler; /* as the connection string (or SLUICE_POOLER) says */
    int pooled;          /* the server session may change between transactions: see sl_pg_set_pooled */
    int options_ok;      /* libpq took the connection options once: a failed connect is not their fault */
    const char *prelude; /* static SQL run first in every transaction when pooled, or NULL */
    void *data;          /* for the owner */
};

/* Validate conninfo (a postgresql:// URL or key=value string; "" means
 * libpq's PG* environment) and prepare pg. sluice_pooler=... is taken out
 * of the string (pg->conninfo is what libpq reads) into pg->pooler, else
 * SLUICE_POOLER's value. Fails, naming what is wrong, for a malformed
 * string or setting; the message never contains the password. No I/O. */
int sl_pg_init(uv_loop_t *loop, sl_pg *pg, const char *conninfo, sl_err *err) SL_MUSTCHECK;

/* Where notices (RAISE NOTICE, warnings) go; by default to sl_log. */
void sl_pg_set_notice_cb(sl_pg *pg, sl_pg_notice_cb cb, void *arg);

/* Connect without blocking the loop (PQconnectStartParams/PQconnectPoll),
 * giving up after timeout_ms. On success the connection is non-blocking and
 * in pipeline mode. cb runs exactly once unless this returns non-zero, with
 * status 0 (connected), SL_EREFUSED (libpq refused the connection options
 * themselves, nothing was tried: an sslmode, gssencmode or
 * target_session_attrs it does not know, from the string or a PG* variable;
 * no retry mends it) or SL_EFAIL (any other failure); error is libpq's
 * message, secrets scrubbed. May be called again after a lost connection
 * (reconnect). */
int sl_pg_connect(sl_pg *pg, int64_t timeout_ms, sl_pg_connect_cb cb, void *arg) SL_MUSTCHECK;

/* Send n queries as one pipeline segment (each PQsendQueryParams, then
 * PQpipelineSync). Several batches may be in flight; their callbacks run in
 * order, each exactly once, after the segment's sync arrived, or with
 * conn_lost set when the connection breaks. Returns non-zero (callback will
 * not run) if not connected. The query texts and params are copied. */
int sl_pg_send(sl_pg *pg, const sl_query *queries, size_t n, sl_pg_reply_cb cb, void *arg) SL_MUSTCHECK;

/* From now on treat the connection as one through a pooler in transaction
 * mode, where the server session may change after every transaction: every
 * statement is unnamed (a named one may be missing, or already there from
 * another client, on the next server), the prelude runs at the start of
 * every transaction, and one batch is on the wire at a time (a pooler that
 * does not count syncs may hand the server to another client after the
 * first). why (for the log, once per process) says how it was found out. */
void sl_pg_set_pooled(sl_pg *pg, const char *why);

/* Number of batches awaiting results. */
size_t sl_pg_pending(const sl_pg *pg);

/* Ask the server to cancel the statement it runs for pg now, if a batch is
 * in flight (PQcancel: blocking, a connection of its own). The batch's
 * transaction then fails, and what it sent after that statement, COMMIT
 * too, does not apply. */
void sl_pg_cancel(sl_pg *pg);

/* Drop the connection now (stop polling, PQfinish). Pending batches' callbacks
 * run with conn_lost before this returns; the server rolls back any open
 * transaction. pg may connect again afterwards. */
void sl_pg_disconnect(sl_pg *pg);

/* Disconnect and close the handles; on_close runs when libuv has released
 * them, after which pg's memory may be freed. */
void sl_pg_close(sl_pg *pg, sl_pg_close_cb on_close);

#endif
