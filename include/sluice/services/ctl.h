/* ctl.h: the live control socket of a running job (server on the runner's loop) and its client (`sluice ctl`).
 *
 * Protocol (README "Live control: `sluice ctl`"): a client connects to the unix socket
 * "<checkpoints>/<job>.sluice-ctl", writes one request line ending in "\n"
 * (at most SL_CTL_LINE_MAX bytes with the newline), and reads one response
 * until the server closes: "ok\n" followed by the handler's lines, or
 * "error: <message>\n". Requests:
 *
 *   status | pause | resume | set NAME=VALUE
 *
 * The server runs on the runner's libuv loop, so requests are answered while
 * the runner awaits a database reply (a chunk in flight). The socket is
 * readable and writable by its owner alone (mode 0600), and a peer whose uid
 * differs from the server's effective uid is refused (SO_PEERCRED).
 *
 * On PostgreSQL the same requests also go through the database, for a runner
 * on another machine (or one whose socket path is too long): the client
 * writes a row to sluice_ctl naming the runner that holds the job's lease;
 * that runner looks for its requests every SL_CTL_DB_POLL_MS on its lease's
 * connection (lease.c), answers them through sl_ctl_answer, and writes the
 * answer into the row, which the client reads and deletes. */
#ifndef SLUICE_CTL_H
#define SLUICE_CTL_H

#include <uv.h>

#include "sluice/base/util.h"
#include "sluice/db/session.h"
#include "sluice/jobs/job.h"

#define SL_CTL_SUFFIX          ".sluice-ctl"
#define SL_CTL_LINE_MAX        4096  /* bytes of a request line, its newline included */
#define SL_CTL_READ_TIMEOUT_MS 5000  /* a client that sends no full line by then is dropped */
#define SL_CTL_CLIENT_TIMEOUT  10000 /* ms the client waits for a connection and its answer */
#define SL_CTL_DB_POLL_MS      1000  /* how often a runner looks for requests in sluice_ctl */
#define SL_CTL_DB_TIMEOUT_MS   15000 /* ms the client waits for a runner's answer there */
#define SL_CTL_NOT_LISTENING   1     /* sl_ctl_request: nothing listens at the path (or it is too long) */

typedef enum sl_ctl_cmd { SL_CTL_STATUS, SL_CTL_PAUSE, SL_CTL_RESUME, SL_CTL_SET } sl_ctl_cmd;

/* One request, already parsed and validated by the server: unknown requests
 * and invalid settings are answered with an error before any handler runs. */
typedef struct sl_ctl_req {
    const char *line; /* the request line, without its newline */
    sl_ctl_cmd cmd;
    /* SL_CTL_SET only: */
    sl_directive setting; /* SL_DIR_BATCH, SL_DIR_PAUSE, ... (see sl_ctl_parse_set) */
    const char *name;     /* its canonical name, "batch" */
    const char *value;    /* the value as written, "500" or "250ms" */
    int64_t number;       /* the parsed value: a count, or milliseconds for durations */
} sl_ctl_req;

/* Called on the loop for each valid request. Appends the answer's lines to
 * response and returns 0, or appends an error message (no "error: " prefix)
 * and returns -1. It must not wait (no uv_run, no sl_session_exec): it runs
 * inside a read callback, possibly while the runner itself awaits a reply, so
 * it only reads state and sets flags or values the runner applies later. */
typedef int (*sl_ctl_handler)(const sl_ctl_req *req, sl_buf *response, void *arg);

typedef struct sl_ctl sl_ctl;

/* "<ckpt_dir>/<job>.sluice-ctl", malloc'd (beside sl_ckpt_path's file). */
char *sl_ctl_path(const char *ckpt_dir, const char *job);

/* Listen on sock_path and answer requests through handler(req, response, arg).
 * A stale socket left by a killed runner (nothing answers it) is replaced; a
 * live one is refused ("... another runner is listening ..."), as are a path
 * too long for a unix socket and a path that is not a socket. The socket is
 * created mode 0600. Ignores SIGPIPE for the process (libuv writes with
 * writev(), and a client that hangs up before its answer must not kill the
 * runner). The listener does not keep the loop alive on its own (uv_unref),
 * like the session's signal watchers; a client being answered does. On
 * success *out is the server; the caller calls sl_ctl_stop. */
int sl_ctl_start(uv_loop_t *loop, const char *sock_path, sl_ctl_handler handler, void *arg, sl_ctl **out,
                 sl_err *err) SL_MUSTCHECK;

/* Close the listener and every client (answers not yet written are dropped),
 * and remove the socket file. ctl's memory is released from the close
 * callbacks: the loop must run afterwards (sl_session_close does) before
 * uv_loop_close. NULL is a no-op. */
void sl_ctl_stop(sl_ctl *ctl);

/* Change the 5 s per-client read timeout (tests). */
void sl_ctl_set_read_timeout(sl_ctl *ctl, uint64_t ms);

/* Answer one request line as the server does: parse and validate it, then
 * call handler (lending it the fiber tag tag: what it logs is its target's).
 * 0 with the handler's lines in answer; -1 with the message (no "error: "
 * prefix) in answer. */
int sl_ctl_answer(sl_ctl_handler handler, void *arg, const void *tag, const char *line, sl_buf *answer);

/* Whether line is a request the server would take: 0, or -1 with err. */
int sl_ctl_check(const char *line, sl_err *err) SL_MUSTCHECK;

/* Client side: send request (one line, no newline) to the server at
 * sock_path and wait up to SL_CTL_CLIENT_TIMEOUT ms for the answer.
 *   0  the server answered ok; *response (malloc'd, caller frees) holds the
 *      lines after "ok", possibly "", with control characters shown as
 *      escapes (sl_buf_add_visible) so that printing it is safe.
 *  SL_CTL_NOT_LISTENING  nothing listens at sock_path (no socket, a stale
 *      one, or a path too long for one): err says so. *response is NULL.
 *  -1  no answer: err says why (permission denied, timed out, ...). *response is NULL.
 *  SL_EREFUSED  the server refused the request: err holds its message. *response is NULL. */
int sl_ctl_request(const char *sock_path, const char *request, char **response, sl_err *err) SL_MUSTCHECK;

/* What sluice_jobs.paused records of a pause asked now: "by sluice ctl at
 * <ISO 8601 time>", malloc'd (the runner's and, with no runner, ctl's). */
char *sl_ctl_paused_now(void);

/* Client side through the database (PostgreSQL): check request, then hand
 * it to the runner that holds job's lease by a row in sluice_ctl, and wait
 * up to SL_CTL_DB_TIMEOUT_MS for its answer; the row is deleted either way.
 * Returns as sl_ctl_request (0, SL_EREFUSED for a request refused, before
 * anything is written or by the runner), with SL_CTL_NOT_LISTENING when the
 * database records no live runner of the job; *runner (malloc'd, or NULL)
 * names the runner asked ("sluice pid 12 on web-1"). */
int sl_ctl_request_db(sl_session *sess, const char *job, const char *request, char **response, char **runner,
                      sl_err *err) SL_MUSTCHECK;

/* Split "NAME=VALUE" (spaces around either allowed) and validate it as a pace
 * setting that can change while a job runs: batch, pause, max-rate,
 * chunk-time, lock-timeout, statement-timeout, retries, with the same bounds
 * as in a job file. Copies the canonical name and the value into name/value,
 * stores the directive in *setting and the parsed number (a count, or ms for
 * durations) in *number. Any out pointer may be NULL. Returns 0, or -1 with
 * err saying what is wrong and which settings exist. */
int sl_ctl_parse_set(const char *assignment, char *name, size_t namesz, char *value, size_t valuesz,
                     sl_directive *setting, int64_t *number, sl_err *err) SL_MUSTCHECK;

#endif
