/* ctl.c: the live control socket: a libuv server on the runner's loop, its blocking client, and `set` parsing. */
#define _GNU_SOURCE /* struct ucred for SO_PEERCRED */
#include "sluice/services/ctl.h"
#include "sluice/base/fiber.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- `set NAME=VALUE` ---- */

/* Settings that can change while a job runs; their values are checked as the
 * job-file parser checks the directive's. */
static const sl_directive live_settings[] = {
    SL_DIR_BATCH,   SL_DIR_PAUSE, SL_DIR_MAX_RATE, SL_DIR_CHUNK_TIME, SL_DIR_LOCK_TIMEOUT, SL_DIR_STATEMENT_TIMEOUT,
    SL_DIR_RETRIES,
};
#define NLIVE     (sizeof live_settings / sizeof live_settings[0])
#define LIVE_LIST "batch, pause, max-rate, chunk-time, lock-timeout, statement-timeout, retries"

/* max-rate and chunk-time are 0 in a job without the directive (no cap, a
 * fixed batch), and `ctl status` shows them so: 0 lifts them while the job
 * runs. A job file leaves the directive out instead, so it refuses 0. */
static int lifted(sl_directive d, const char *value)
{
    int64_t v = -1;
    if (d == SL_DIR_MAX_RATE)
        return sl_parse_int(value, 0, 0, &v) == 0;
    return d == SL_DIR_CHUNK_TIME && sl_parse_duration(value, &v) == 0 && v == 0;
}

/* s[0..len) without surrounding blanks, as a NUL-terminated copy in out. */
static int copy_trimmed(const char *s, size_t len, char *out, size_t outsz)
{
    while (len && isspace((unsigned char)*s))
        s++, len--;
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (len >= outsz)
        return -1;
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

static const sl_directive *find_setting(const char *name, sl_err *err)
{
    const char *best = NULL;
    size_t best_dist = 3;
    for (size_t i = 0; i < NLIVE; i++) {
        const char *candidate = sl_directive_name(live_settings[i]);
        if (strcmp(candidate, name) == 0)
            return &live_settings[i];
        size_t dist = sl_edit_distance(name, candidate);
        if (dist < best_dist)
            best = candidate, best_dist = dist;
    }
    for (int d = 0; d < SL_DIR_COUNT; d++)
        if (strcmp(sl_directive_name((sl_directive)d), name) == 0) {
            sl_err_set(err, "set: %s cannot change while a job runs (hint: settings that can: " LIVE_LIST ")", name);
            return NULL;
        }
    if (best)
        sl_err_set(err, "set: unknown setting \"%s\" (hint: did you mean \"%s\"?)", name, best);
    else
        sl_err_set(err, "set: unknown setting \"%s\" (hint: settings that can change: " LIVE_LIST ")", name);
    return NULL;
}

int sl_ctl_parse_set(const char *assignment, char *name, size_t namesz, char *value, size_t valuesz,
                     sl_directive *setting, int64_t *number, sl_err *err)
{
    char name_buf[64], value_buf[256];
    const char *eq = strchr(assignment, '=');
    if (!eq) {
        sl_err_set(err, "set: expected NAME=VALUE, got \"%.100s\" (hint: set batch=500, set pause=2s)", assignment);
        return -1;
    }
    if (copy_trimmed(assignment, (size_t)(eq - assignment), name_buf, sizeof name_buf) != 0 || !*name_buf) {
        sl_err_set(err, "set: expected NAME=VALUE, got \"%.100s\" (hint: set batch=500)", assignment);
        return -1;
    }
    const sl_directive *def = find_setting(name_buf, err);
    if (!def)
        return -1;
    int64_t parsed = 0;
    char why[512];
    if (copy_trimmed(eq + 1, strlen(eq + 1), value_buf, sizeof value_buf) != 0) {
        sl_err_set(err, "set: value \"%.100s...\" too long", eq + 1);
        return -1;
    }
    if (!lifted(*def, value_buf) && sl_directive_number(*def, value_buf, &parsed, why, sizeof why) != 0) {
        sl_err_set(err, "set: %s %s%s", name_buf, why,
                   *def == SL_DIR_MAX_RATE     ? " (hint: max-rate=0 lifts the cap)"
                   : *def == SL_DIR_CHUNK_TIME ? " (hint: chunk-time=0ms keeps the batch as it is)"
                                               : "");
        return -1;
    }
    if ((name && copy_trimmed(name_buf, strlen(name_buf), name, namesz) != 0) ||
        (value && copy_trimmed(value_buf, strlen(value_buf), value, valuesz) != 0)) {
        sl_err_set(err, "set: value \"%.100s\" too long", value_buf);
        return -1;
    }
    if (setting)
        *setting = *def;
    if (number)
        *number = parsed;
    return 0;
}

/* ---- server ---- */

typedef struct ctl_client {
    uv_pipe_t pipe;
    uv_timer_t timer;
    uv_write_t write_req;
    sl_ctl *ctl;
    struct ctl_client *next;
    char line[SL_CTL_LINE_MAX + 1];
    size_t len;
    char *answer;
    int pending_closes; /* pipe and timer: freed when both close callbacks ran */
    int closing;
} ctl_client;

struct sl_ctl {
    uv_loop_t *loop;
    uv_pipe_t *listener; /* NULL once it could not listen again */
    uv_timer_t watch;    /* looks for the socket file every SL_CTL_WATCH_MS */
    char *path;
    dev_t dev;
    ino_t ino; /* of our socket file: stop never removes another runner's */
    sl_ctl_handler handler;
    void *arg;
    uint64_t read_timeout_ms;
    ctl_client *clients;
    int handles;     /* listeners and the watch not yet closed */
    const void *tag; /* the fiber tag it was started under: lent to the handler (fiber.h) */
};

#define SL_CTL_WATCH_MS 2000

char *sl_ctl_path(const char *ckpt_dir, const char *job)
{
    size_t len = strlen(ckpt_dir);
    const char *sep = len && ckpt_dir[len - 1] == '/' ? "" : "/";
    return sl_asprintf("%s%s%s" SL_CTL_SUFFIX, ckpt_dir, sep, job);
}

static void ctl_maybe_free(sl_ctl *ctl)
{
    if (!ctl->handles && !ctl->clients) {
        free(ctl->path);
        free(ctl);
    }
}

static void on_client_closed(uv_handle_t *handle)
{
    ctl_client *c = handle->data;
    if (--c->pending_closes > 0)
        return;
    sl_ctl *ctl = c->ctl;
    for (ctl_client **p = &ctl->clients; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    free(c->answer);
    free(c);
    ctl_maybe_free(ctl);
}

static void client_close(ctl_client *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->pipe, on_client_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void on_answer_written(uv_write_t *req, int status)
{
    (void)status; /* a client gone before reading its answer is its own business */
    client_close(req->data);
}

/* Write the answer, then close: one response per connection. */
static void client_answer(ctl_client *c, int ok, const char *text)
{
    uv_read_stop((uv_stream_t *)&c->pipe);
    uv_timer_stop(&c->timer);
    size_t tlen = strlen(text);
    const char *nl = tlen && text[tlen - 1] != '\n' ? "\n" : "";
    c->answer = ok ? sl_asprintf("ok\n%s%s", text, nl) : sl_asprintf("error: %s%s", text, tlen ? nl : "\n");
    uv_buf_t buf = uv_buf_init(c->answer, (unsigned)strlen(c->answer));
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->pipe, &buf, 1, on_answer_written) != 0)
        client_close(c);
}

static int parse_request(char *line, sl_ctl_req *req, char *name, char *value, sl_err *err)
{
    memset(req, 0, sizeof *req);
    req->line = line;
    static const char *const plain[] = {
        [SL_CTL_STATUS] = "status", [SL_CTL_PAUSE] = "pause", [SL_CTL_RESUME] = "resume"};
    for (int i = SL_CTL_STATUS; i <= SL_CTL_RESUME; i++)
        if (strcmp(line, plain[i]) == 0) {
            req->cmd = (sl_ctl_cmd)i;
            return 0;
        }
    if (strncmp(line, "set", 3) == 0 && (line[3] == ' ' || line[3] == '\t')) {
        req->cmd = SL_CTL_SET;
        req->name = name;
        req->value = value;
        return sl_ctl_parse_set(line + 4, name, 64, value, 256, &req->setting, &req->number, err);
    }
    sl_err_set(err, "unknown request \"%.100s\" (hint: status, pause, resume or set NAME=VALUE)", line);
    return -1;
}

/* line without surrounding blanks ("status\r" from a hand-typed socat), into
 * out (SL_CTL_LINE_MAX + 1 bytes). */
static char *trim_line(const char *line, char *out)
{
    while (isspace((unsigned char)*line))
        line++;
    size_t len = strnlen(line, SL_CTL_LINE_MAX);
    while (len && isspace((unsigned char)line[len - 1]))
        len--;
    memcpy(out, line, len);
    out[len] = '\0';
    return out;
}

int sl_ctl_check(const char *line, sl_err *err)
{
    char copy[SL_CTL_LINE_MAX + 1], name[64], value[256];
    sl_ctl_req req;
    if (strlen(line) >= SL_CTL_LINE_MAX) {
        sl_err_set(err, "request line longer than %d bytes", SL_CTL_LINE_MAX);
        return -1;
    }
    return parse_request(trim_line(line, copy), &req, name, value, err);
}

int sl_ctl_answer(sl_ctl_handler handler, void *arg, const void *tag, const char *line, sl_buf *answer)
{
    char copy[SL_CTL_LINE_MAX + 1], name[64], value[256];
    sl_ctl_req req;
    sl_err err;
    if (strlen(line) >= SL_CTL_LINE_MAX) {
        sl_buf_printf(answer, "request line longer than %d bytes", SL_CTL_LINE_MAX);
        return -1;
    }
    if (parse_request(trim_line(line, copy), &req, name, value, &err) != 0) {
        sl_buf_adds(answer, err.msg);
        return -1;
    }
    const void *before = sl_fiber_lend_tag(tag); /* what it logs is its target's */
    int rc = handler(&req, answer, arg);
    sl_fiber_lend_tag(before);
    if (rc != 0 && answer->len == 0)
        sl_buf_adds(answer, "request failed");
    return rc == 0 ? 0 : -1;
}

static void client_handle_line(ctl_client *c)
{
    char *nl = memchr(c->line, '\n', c->len);
    assert(nl && "BUG: handling a request without its newline");
    *nl = '\0';
    /* a NUL would end the line where the parser stops reading, and what
     * follows it would go unseen: refused, as a line sluice ctl never sends */
    if (memchr(c->line, '\0', (size_t)(nl - c->line))) {
        client_answer(c, 0, "request line holds a NUL byte");
        return;
    }
    sl_buf response = {0};
    int rc = sl_ctl_answer(c->ctl->handler, c->ctl->arg, c->ctl->tag, c->line, &response);
    client_answer(c, rc == 0, response.data ? response.data : "");
    sl_buf_free(&response);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    ctl_client *c = handle->data;
    /* Reading into the line itself bounds what a client can make us hold. */
    *buf = uv_buf_init(c->line + c->len, (unsigned)(SL_CTL_LINE_MAX - c->len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    ctl_client *c = stream->data;
    if (nread < 0) { /* EOF before a full line, or an error: nothing to answer */
        client_close(c);
        return;
    }
    size_t before = c->len;
    c->len += (size_t)nread;
    c->line[c->len] = '\0';
    if (memchr(c->line + before, '\n', (size_t)nread))
        client_handle_line(c);
    else if (c->len >= SL_CTL_LINE_MAX)
        client_answer(c, 0, "request line longer than 4096 bytes");
}

static void on_read_timeout(uv_timer_t *timer)
{
    client_answer(timer->data, 0, "timed out waiting for a request line");
}

/* The socket's mode already keeps other users out; SO_PEERCRED also covers
 * root, which ignores file modes, and a socket whose mode someone widened. */
static int peer_allowed(ctl_client *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
        return 0;
#ifdef SO_PEERCRED
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return 0;
    return cred.uid == geteuid();
#else
    uid_t uid;
    gid_t gid;
    return getpeereid(fd, &uid, &gid) == 0 && uid == geteuid();
#endif
}

static void on_connection(uv_stream_t *server, int status)
{
    sl_ctl *ctl = server->data;
    if (status != 0)
        return;
    ctl_client *c = sl_calloc(1, sizeof *c);
    c->ctl = ctl;
    uv_pipe_init(ctl->loop, &c->pipe, 0);
    uv_timer_init(ctl->loop, &c->timer);
    c->pipe.data = c->timer.data = c;
    c->pending_closes = 2;
    c->next = ctl->clients;
    ctl->clients = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
        client_close(c);
        return;
    }
    if (!peer_allowed(c)) {
        sl_warn("control socket %s: refused a connection from another user", ctl->path);
        client_answer(c, 0, "permission denied: the job belongs to another user");
        return;
    }
    uv_timer_start(&c->timer, on_read_timeout, ctl->read_timeout_ms, 0);
    if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) != 0)
        client_close(c);
}

/* Connect to path: 0 when something answers, else -errno. */
static int probe_socket(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Make room for our socket: remove a stale one, refuse a live one. */
static int clear_stale(const char *path, sl_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        sl_err_set(err, "control socket %s: the path exists and is not a socket (hint: remove it)", path);
        return -1;
    }
    int rc = probe_socket(path);
    if (rc == 0 || rc == -EAGAIN) {
        sl_err_set(err, "control socket %s: another runner is listening on it (hint: sluice ctl JOB status)", path);
        return -1;
    }
    if (rc != -ECONNREFUSED) {
        sl_err_set(err, "control socket %s: %s", path, strerror(-rc));
        return -1;
    }
    sl_info("removing stale control socket %s (left by a runner that did not exit cleanly)", path);
    if (unlink(path) != 0 && errno != ENOENT) {
        sl_err_set(err, "control socket %s: cannot remove the stale socket: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void on_handle_closed(uv_handle_t *handle)
{
    sl_ctl *ctl = handle->data;
    if (handle != (uv_handle_t *)&ctl->watch)
        free(handle);
    ctl->handles--;
    ctl_maybe_free(ctl);
}

/* Listen at ctl->path on a new handle (ctl->listener); -1 with err, the
 * handle closed. */
static int ctl_listen(sl_ctl *ctl, sl_err *err)
{
    uv_pipe_t *listener = sl_calloc(1, sizeof *listener);
    uv_pipe_init(ctl->loop, listener, 0);
    listener->data = ctl;
    ctl->handles++;
    /* Bind under umask 077 so the socket never exists with a wider mode;
     * uv_pipe_chmod can only widen it. The runner is single-threaded. */
    mode_t old_mask = umask(077);
    int rc = uv_pipe_bind(listener, ctl->path);
    umask(old_mask);
    if (rc == 0 && chmod(ctl->path, 0600) != 0)
        rc = uv_translate_sys_error(errno);
    struct stat st;
    if (rc == 0 && stat(ctl->path, &st) != 0)
        rc = uv_translate_sys_error(errno);
    if (rc == 0) {
        ctl->dev = st.st_dev;
        ctl->ino = st.st_ino;
        rc = uv_listen((uv_stream_t *)listener, 8, on_connection);
    }
    /* Like the signal watchers: listening alone must not keep the loop alive. */
    uv_unref((uv_handle_t *)listener);
    if (rc != 0) {
        sl_err_set(err, "control socket %s: %s", ctl->path, uv_strerror(rc));
        if (rc == UV_EADDRINUSE)
            sl_err_append(err, "hint: another runner created it at the same moment");
        uv_close((uv_handle_t *)listener, on_handle_closed);
        return -1;
    }
    ctl->listener = listener;
    return 0;
}

/* The socket file gone while the job runs (the checkpoints directory
 * deleted: the database holds the job's truth, so an operator may): listen
 * again at the same path, in the directory made again, so that `sluice ctl`
 * still reaches the runner. Where that cannot be (its parent gone too, a
 * link to a volume not mounted), the run goes on without, said once. */
static void on_watch(uv_timer_t *timer)
{
    sl_ctl *ctl = timer->data;
    struct stat st;
    if (!ctl->listener || lstat(ctl->path, &st) == 0 || errno != ENOENT)
        return; /* ours, or something else now there: left alone */
    char *dir = sl_strdup(ctl->path);
    char *slash = strrchr(dir, '/');
    int made = 0, mkerr = 0;
    if (slash && slash != dir) {
        *slash = '\0';
        made = mkdir(dir, 0700) == 0;
        mkerr = made || errno == EEXIST ? 0 : errno;
    }
    sl_err err;
    if (mkerr) /* what bind would say is EACCES (libuv's word for a missing directory) */
        sl_err_set(&err, "cannot make the directory %s again: %s", dir, strerror(mkerr));
    free(dir);
    uv_pipe_t *old = ctl->listener;
    ctl->listener = NULL;
    ctl->ino = 0;
    uv_close((uv_handle_t *)old, on_handle_closed);
    if (mkerr || ctl_listen(ctl, &err) != 0) {
        sl_warn("control socket %s was removed while the job ran, and cannot be made again (%s): `sluice ctl` "
                "cannot reach this runner; a signal still stops it",
                ctl->path, err.msg);
        return;
    }
    sl_warn("control socket %s was removed while the job ran (the checkpoints directory deleted?): listening there "
            "again%s; the run's journal goes on in the removed checkpoint file, and the next run rebuilds the file "
            "from the database",
            ctl->path, made ? ", in the directory made again" : "");
}

int sl_ctl_start(uv_loop_t *loop, const char *sock_path, sl_ctl_handler handler, void *arg, sl_ctl **out, sl_err *err)
{
    struct sockaddr_un addr;
    if (strlen(sock_path) >= sizeof addr.sun_path) {
        sl_err_set(err, "control socket %s: path longer than %zu bytes, the limit of unix sockets", sock_path,
                   sizeof addr.sun_path - 1);
        sl_err_append(err, "hint: use a shorter --checkpoints directory");
        return -1;
    }
    if (clear_stale(sock_path, err) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    sl_ctl *ctl = sl_calloc(1, sizeof *ctl);
    ctl->loop = loop;
    ctl->path = sl_strdup(sock_path);
    ctl->handler = handler;
    ctl->arg = arg;
    ctl->tag = sl_fiber_current_tag();
    ctl->read_timeout_ms = SL_CTL_READ_TIMEOUT_MS;
    uv_timer_init(loop, &ctl->watch);
    ctl->watch.data = ctl;
    ctl->handles++;
    if (ctl_listen(ctl, err) != 0) {
        ctl->ino = 0; /* not ours: leave whatever is at the path alone */
        sl_ctl_stop(ctl);
        return -1;
    }
    uv_timer_start(&ctl->watch, on_watch, SL_CTL_WATCH_MS, SL_CTL_WATCH_MS);
    uv_unref((uv_handle_t *)&ctl->watch);
    *out = ctl;
    return 0;
}

void sl_ctl_set_read_timeout(sl_ctl *ctl, uint64_t ms)
{
    ctl->read_timeout_ms = ms;
}

void sl_ctl_stop(sl_ctl *ctl)
{
    if (!ctl)
        return;
    struct stat st;
    if (ctl->ino && lstat(ctl->path, &st) == 0 && st.st_dev == ctl->dev && st.st_ino == ctl->ino)
        unlink(ctl->path);
    for (ctl_client *c = ctl->clients; c; c = c->next)
        client_close(c);
    if (ctl->listener)
        uv_close((uv_handle_t *)ctl->listener, on_handle_closed);
    ctl->listener = NULL;
    uv_close((uv_handle_t *)&ctl->watch, on_handle_closed);
}

/* ---- client ---- */

/* "job X" from ".../X.sluice-ctl", for messages. */
static void job_of(const char *path, char *out, size_t outsz)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base), slen = strlen(SL_CTL_SUFFIX);
    if (len > slen && strcmp(base + len - slen, SL_CTL_SUFFIX) == 0)
        len -= slen;
    if (len >= outsz)
        len = outsz - 1; /* a message detail: cutting a long name short is fine */
    memcpy(out, base, len);
    out[len] = '\0';
}

static int client_connect(const char *path, sl_err *err)
{
    char job[256];
    job_of(path, job, sizeof job);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        sl_err_set(err, "control socket path %s is too long for a unix socket", path);
        return -2; /* the runner could not listen there either */
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sl_err_set(err, "cannot create a socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
        return fd;
    int e = errno;
    close(fd);
    if (e == ENOENT || e == ECONNREFUSED) {
        sl_err_set(err, "no runner of job %s is listening (%s control socket at %s)", job,
                   e == ENOENT ? "no" : "a stale", path);
        sl_err_append(err, "hint: `up` and `down` listen there while they run the job");
        return -2;
    } else if (e == EACCES || e == EPERM)
        sl_err_set(err, "control socket %s: permission denied\nhint: run sluice ctl as the user running the job", path);
    else
        sl_err_set(err, "cannot connect to control socket %s: %s", path, strerror(e));
    return -1;
}

/* Wait until fd is ready for events or the deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - sl_mono_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

static int client_exchange(int fd, const char *request, sl_buf *answer, const char *path, sl_err *err)
{
    int64_t deadline = sl_mono_ms() + SL_CTL_CLIENT_TIMEOUT;
    char *line = sl_asprintf("%s\n", request);
    size_t len = strlen(line), sent = 0;
    while (sent < len && wait_fd(fd, POLLOUT, deadline) == 0) {
        ssize_t n = send(fd, line + sent, len - sent, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            break; /* the server may have answered already (a refusal): read it */
        sent += (size_t)n;
    }
    free(line);
    char chunk[4096];
    for (;;) {
        if (wait_fd(fd, POLLIN, deadline) != 0) {
            sl_err_set(err, "control socket %s: no answer within %d s", path, SL_CTL_CLIENT_TIMEOUT / 1000);
            return -1;
        }
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && !answer->len) {
            sl_err_set(err, "control socket %s: %s", path, strerror(errno));
            return -1;
        }
        if (n <= 0 || answer->len > (1u << 20))
            return 0;
        sl_buf_add(answer, chunk, (size_t)n);
    }
}

int sl_ctl_request(const char *sock_path, const char *request, char **response, sl_err *err)
{
    *response = NULL;
    int fd = client_connect(sock_path, err);
    if (fd < 0)
        return fd == -2 ? SL_CTL_NOT_LISTENING : -1;
    sl_buf answer = {0};
    int rc = client_exchange(fd, request, &answer, sock_path, err);
    close(fd);
    const char *text = answer.data ? answer.data : "";
    if (rc == 0 && strncmp(text, "ok\n", 3) == 0) {
        /* for a terminal: whatever answers on the socket cannot drive it */
        sl_buf shown = {0};
        sl_buf_add_visible(&shown, text + 3, answer.len - 3, 0);
        *response = sl_buf_take(&shown);
    } else if (rc == 0 && strncmp(text, "error: ", 7) == 0) {
        size_t mlen = strlen(text + 7);
        while (mlen && text[7 + mlen - 1] == '\n')
            mlen--;
        sl_err_set(err, "%.*s", (int)mlen, text + 7);
        rc = SL_EREFUSED;
    } else if (rc == 0) {
        sl_err_set(err, "control socket %s: unexpected answer \"%.100s\"", sock_path, text);
        rc = -1;
    }
    sl_buf_free(&answer);
    return rc;
}
