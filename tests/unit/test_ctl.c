/* test_ctl.c: the control socket over real unix sockets: the server on a loop here, clients in forked children. */
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "sluice/services/ctl.h"

static char tmpdir[64];

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the runner's side: a handler over a little state ---- */

typedef struct fake_job {
    int paused;
    int64_t batch, pause_ms;
    int calls;
    int slow_ms;       /* hold the loop this long before answering: the client is gone by then */
    const char *label; /* shown by status when set */
} fake_job;

static int handler(const sl_ctl_req *req, sl_buf *response, void *arg)
{
    fake_job *job = arg;
    job->calls++;
    if (job->slow_ms)
        sleep_ms(job->slow_ms);
    switch (req->cmd) {
    case SL_CTL_STATUS:
        sl_buf_printf(response, "state %s\nbatch %lld\n", job->paused ? "paused" : "running", (long long)job->batch);
        if (job->label)
            sl_buf_printf(response, "label %s\n", job->label);
        return 0;
    case SL_CTL_PAUSE:
        if (job->paused) {
            sl_buf_adds(response, "already paused");
            return -1;
        }
        job->paused = 1;
        return 0;
    case SL_CTL_RESUME: job->paused = 0; return 0;
    case SL_CTL_SET:
        if (req->setting == SL_DIR_BATCH)
            job->batch = req->number;
        else if (req->setting == SL_DIR_PAUSE)
            job->pause_ms = req->number;
        sl_buf_printf(response, "%s = %s", req->name, req->value);
        return 0;
    }
    return -1;
}

/* ---- clients, in forked children (the client blocks; the server needs this loop to run) ---- */

typedef void (*child_fn)(int outfd, const void *arg);

typedef struct poll_state {
    pid_t pid;
    int done;
} poll_state;

static void on_poll_child(uv_timer_t *timer)
{
    poll_state *ps = timer->data;
    int status;
    if (waitpid(ps->pid, &status, WNOHANG) == ps->pid)
        ps->done = 1;
}

/* Fork fn(outfd, arg), run loop until the child exits, return what it wrote. */
static char *run_child(uv_loop_t *loop, child_fn fn, const void *arg)
{
    int fds[2];
    if (pipe(fds) != 0)
        abort();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        fn(fds[1], arg);
        _exit(0);
    }
    close(fds[1]);
    poll_state ps = {pid, 0};
    uv_timer_t timer;
    uv_timer_init(loop, &timer);
    timer.data = &ps;
    uv_timer_start(&timer, on_poll_child, 5, 5);
    while (!ps.done)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    sl_buf out = {0};
    char chunk[4096];
    ssize_t n;
    while ((n = read(fds[0], chunk, sizeof chunk)) > 0)
        sl_buf_add(&out, chunk, (size_t)n);
    close(fds[0]);
    return sl_buf_take(&out);
}

static void write_all(int fd, const char *s)
{
    size_t len = strlen(s);
    while (len) {
        ssize_t n = write(fd, s, len);
        if (n <= 0)
            return;
        s += n, len -= (size_t)n;
    }
}

static char sock_path[100];

/* "rc=N\n" then the response or the error. */
static void child_request(int outfd, const void *arg)
{
    char *response;
    sl_err err = {{0}};
    int rc = sl_ctl_request(sock_path, arg, &response, &err);
    char head[32];
    snprintf(head, sizeof head, "rc=%d\n", rc);
    write_all(outfd, head);
    write_all(outfd, rc == 0 ? response : err.msg);
    free(response);
}

static char *request(uv_loop_t *loop, const char *req)
{
    return run_child(loop, child_request, req);
}

static int raw_connect(void)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        _exit(9);
    return fd;
}

/* A raw client: sends each '|'-separated piece of arg with a pause between,
 * then ('>' at the end) reads the whole answer, or hangs up at once. */
static void child_raw(int outfd, const void *arg)
{
    int fd = raw_connect();
    char *script = sl_strdup(arg);
    size_t len = strlen(script);
    int read_answer = len && script[len - 1] == '>';
    if (read_answer)
        script[--len] = '\0';
    char *save = NULL;
    for (char *piece = strtok_r(script, "|", &save); piece; piece = strtok_r(NULL, "|", &save)) {
        if (piece != script)
            sleep_ms(150);
        send(fd, piece, strlen(piece), MSG_NOSIGNAL);
    }
    char chunk[4096];
    ssize_t n;
    while (read_answer && (n = recv(fd, chunk, sizeof chunk - 1, 0)) > 0) {
        chunk[n] = '\0';
        write_all(outfd, chunk);
    }
    close(fd);
    free(script);
}

/* ---- fixtures ---- */

typedef struct fixture {
    uv_loop_t loop;
    fake_job job;
    sl_ctl *ctl;
} fixture;

static int fixture_start(fixture *f)
{
    memset(f, 0, sizeof *f);
    f->job.batch = 1000;
    uv_loop_init(&f->loop);
    sl_err err = {{0}};
    int rc = sl_ctl_start(&f->loop, sock_path, handler, &f->job, &f->ctl, &err);
    if (rc != 0)
        printf("# start: %s\n", err.msg);
    return rc;
}

static void fixture_end(fixture *f)
{
    sl_ctl_stop(f->ctl);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&f->loop) == 0);
    struct stat st;
    CHECK(lstat(sock_path, &st) != 0 && errno == ENOENT);
}

/* ---- cases ---- */

static void test_path(void)
{
    char *p = sl_ctl_path("/var/ck", "0001_x");
    CHECK_STR(p, "/var/ck/0001_x.sluice-ctl");
    free(p);
    p = sl_ctl_path("ck/", "j");
    CHECK_STR(p, "ck/j.sluice-ctl");
    free(p);
}

static void test_parse_set(void)
{
    char name[32], value[32];
    sl_directive d;
    int64_t n;
    sl_err err = {{0}};
    CHECK(sl_ctl_parse_set("batch=500", name, sizeof name, value, sizeof value, &d, &n, &err) == 0);
    CHECK_STR(name, "batch");
    CHECK(d == SL_DIR_BATCH && n == 500);
    CHECK(sl_ctl_parse_set(" pause = 250ms ", name, sizeof name, value, sizeof value, &d, &n, &err) == 0);
    CHECK_STR(value, "250ms");
    CHECK(d == SL_DIR_PAUSE && n == 250);
    CHECK(sl_ctl_parse_set("statement-timeout=5m", NULL, 0, NULL, 0, &d, &n, &err) == 0);
    CHECK(d == SL_DIR_STATEMENT_TIMEOUT && n == 300000);
    CHECK(sl_ctl_parse_set("retries=0", NULL, 0, NULL, 0, &d, &n, &err) == 0 && n == 0);
    CHECK(sl_ctl_parse_set("max-rate=2000", NULL, 0, NULL, 0, &d, &n, &err) == 0 && d == SL_DIR_MAX_RATE);
    /* 0 lifts max-rate and chunk-time, as `ctl status` shows them in a job without them */
    n = -1;
    CHECK(sl_ctl_parse_set("max-rate=0", NULL, 0, NULL, 0, &d, &n, &err) == 0 && d == SL_DIR_MAX_RATE && n == 0);
    n = -1;
    CHECK(sl_ctl_parse_set("chunk-time=0s", NULL, 0, NULL, 0, &d, &n, &err) == 0 && d == SL_DIR_CHUNK_TIME && n == 0);
    CHECK(sl_ctl_parse_set("chunk-time=0ms", NULL, 0, NULL, 0, NULL, NULL, &err) == 0);
    CHECK(sl_ctl_parse_set("max-rate=-1", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_HAS(err.msg, "max-rate expects a whole number of rows per second, at least 1, got \"-1\" (hint: max-rate=0");
    CHECK(sl_ctl_parse_set("chunk-time=fast", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_HAS(err.msg, "chunk-time expects a duration greater than zero");
    CHECK(sl_ctl_parse_set("pause=-1s", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK(strstr(err.msg, "hint") == NULL);
    CHECK(sl_ctl_parse_set("batch=0", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_HAS(err.msg, "from 1 to 10000000, got \"0\"");
    CHECK(sl_ctl_parse_set("retries=101", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK(sl_ctl_parse_set("lock-timeout=abc", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_STR(err.msg, "set: lock-timeout expects a duration greater than zero such as 500ms or 2s, got \"abc\"");
    /* the job file's bounds: PostgreSQL takes at most INT_MAX ms */
    CHECK(sl_ctl_parse_set("lock-timeout=597h", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_STR(err.msg, "set: lock-timeout 597h is too long: at most 2147483647ms (about 596h), the most PostgreSQL "
                       "takes");
    CHECK(sl_ctl_parse_set("statement-timeout = 2147483648ms", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_HAS(err.msg, "set: statement-timeout 2147483648ms is too long: at most 2147483647ms");
    CHECK(sl_ctl_parse_set("statement-timeout=2147483647ms", NULL, 0, NULL, 0, &d, &n, &err) == 0);
    CHECK(d == SL_DIR_STATEMENT_TIMEOUT && n == INT64_C(2147483647));
    CHECK(sl_ctl_parse_set("batch=10000001", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_STR(err.msg, "set: batch expects a whole number of rows from 1 to 10000000, got \"10000001\"");
    CHECK(sl_ctl_parse_set("bacth=5", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_HAS(err.msg, "did you mean \"batch\"");
    CHECK(sl_ctl_parse_set("table=users", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_HAS(err.msg, "table cannot change while a job runs");
    CHECK(sl_ctl_parse_set("batch", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
    CHECK_HAS(err.msg, "expected NAME=VALUE");
    CHECK(sl_ctl_parse_set("=5", NULL, 0, NULL, 0, NULL, NULL, &err) == -1);
}

static void test_round_trips(void)
{
    fixture f;
    if (fixture_start(&f) != 0) {
        CHECK(0);
        return;
    }
    struct stat st;
    CHECK(stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);

    char *out = request(&f.loop, "status");
    CHECK_STR(out, "rc=0\nstate running\nbatch 1000\n");
    free(out);
    /* what answers on the socket is shown, not obeyed, by the terminal ctl prints to */
    f.job.label = "\x1b]0;owned\x07\x1b[2J caf\xC3\xA9";
    out = request(&f.loop, "status");
    CHECK_STR(out, "rc=0\nstate running\nbatch 1000\nlabel \\x1b]0;owned\\x07\\x1b[2J caf\xC3\xA9\n");
    f.job.label = NULL;
    free(out);
    out = request(&f.loop, "pause");
    CHECK_STR(out, "rc=0\n");
    CHECK(f.job.paused == 1);
    free(out);
    out = request(&f.loop, "pause"); /* the handler's error reaches the client */
    CHECK_STR(out, "rc=-2\nalready paused");
    free(out);
    out = request(&f.loop, "set batch=500");
    CHECK_STR(out, "rc=0\nbatch = 500\n");
    CHECK(f.job.batch == 500);
    free(out);
    out = request(&f.loop, "set pause=2s");
    CHECK(f.job.pause_ms == 2000);
    free(out);
    out = request(&f.loop, "resume");
    CHECK(f.job.paused == 0);
    free(out);
    int calls = f.job.calls;
    out = request(&f.loop, "frobnicate");
    CHECK_HAS(out, "rc=-2\nunknown request \"frobnicate\"");
    free(out);
    out = request(&f.loop, "set bacth=5");
    CHECK_HAS(out, "rc=-2\nset: unknown setting \"bacth\" (hint: did you mean \"batch\"?)");
    free(out);
    out = request(&f.loop, "set batch=-1");
    CHECK_HAS(out, "rc=-2\nset: batch expects");
    CHECK(f.job.batch == 500);
    free(out);
    CHECK(f.job.calls == calls);                        /* invalid requests never reach the handler */
    out = run_child(&f.loop, child_raw, "status\r\n>"); /* what socat sends */
    CHECK_HAS(out, "ok\nstate running\nbatch 500\n");
    free(out);
    fixture_end(&f);
}

static void test_partial_and_long(void)
{
    fixture f;
    if (fixture_start(&f) != 0) {
        CHECK(0);
        return;
    }
    char *out = run_child(&f.loop, child_raw, "st|at|us\n>");
    CHECK_STR(out, "ok\nstate running\nbatch 1000\n");
    free(out);
    char *longline = sl_malloc(5002);
    memset(longline, 'a', 5000);
    longline[5000] = '>';
    longline[5001] = '\0';
    out = run_child(&f.loop, child_raw, longline);
    CHECK_STR(out, "error: request line longer than 4096 bytes\n");
    free(out);
    memcpy(longline, "set batch=7", 11); /* exactly 4096 bytes with its newline: accepted */
    memset(longline + 11, ' ', 4084);
    memcpy(longline + 4095, "\n>", 3);
    out = run_child(&f.loop, child_raw, longline);
    CHECK_STR(out, "ok\nbatch = 7\n");
    CHECK(f.job.batch == 7);
    free(out);
    free(longline);
    fixture_end(&f);
}

static void test_early_disconnect(void)
{
    fixture f;
    if (fixture_start(&f) != 0) {
        CHECK(0);
        return;
    }
    char *out = run_child(&f.loop, child_raw, ""); /* connect, hang up */
    free(out);
    out = run_child(&f.loop, child_raw, "pau"); /* half a line: nothing happens */
    free(out);
    CHECK(f.job.calls == 0 && f.job.paused == 0);
    f.job.slow_ms = 200;
    out = run_child(&f.loop, child_raw, "status\n"); /* gone before its answer: EPIPE, not SIGPIPE */
    free(out);
    CHECK(f.job.calls == 1);
    f.job.slow_ms = 0;
    out = request(&f.loop, "status");
    CHECK_HAS(out, "rc=0\nstate running");
    free(out);
    fixture_end(&f);
}

static void test_slow_client_times_out(void)
{
    fixture f;
    if (fixture_start(&f) != 0) {
        CHECK(0);
        return;
    }
    sl_ctl_set_read_timeout(f.ctl, 300);
    int64_t t0 = sl_mono_ms();
    char *out = run_child(&f.loop, child_raw, "stat>");
    CHECK_STR(out, "error: timed out waiting for a request line\n");
    CHECK(sl_mono_ms() - t0 < 3000);
    CHECK(f.job.calls == 0);
    free(out);
    out = run_child(&f.loop, child_raw, ">"); /* says nothing at all */
    CHECK_STR(out, "error: timed out waiting for a request line\n");
    free(out);
    fixture_end(&f);
}

static void test_stale_and_second_server(void)
{
    /* A killed runner leaves its socket file; nothing listens on it. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock_path);
    CHECK(bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
    close(fd);
    char *out = NULL;
    sl_err err = {{0}};
    CHECK(sl_ctl_request(sock_path, "status", &out, &err) == SL_CTL_NOT_LISTENING);
    CHECK_HAS(err.msg, "is listening (a stale control socket at");

    fixture f;
    if (fixture_start(&f) != 0) {
        CHECK(0);
        unlink(sock_path);
        return;
    }
    sl_ctl *second = NULL;
    CHECK(sl_ctl_start(&f.loop, sock_path, handler, &f.job, &second, &err) == -1);
    CHECK_HAS(err.msg, "another runner is listening on it");
    CHECK(second == NULL);
    out = request(&f.loop, "status"); /* the first one is untouched */
    CHECK_HAS(out, "rc=0\nstate running");
    free(out);
    fixture_end(&f);

    CHECK(sl_ctl_request(sock_path, "status", &out, &err) == SL_CTL_NOT_LISTENING);
    CHECK_HAS(err.msg, "no runner of job j is listening (no control socket at ");
    CHECK(out == NULL);
}

static void test_refusals_at_start(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_ctl *ctl = NULL;
    sl_err err = {{0}};
    FILE *file = fopen(sock_path, "w");
    fclose(file);
    CHECK(sl_ctl_start(&loop, sock_path, handler, NULL, &ctl, &err) == -1);
    CHECK_HAS(err.msg, "is not a socket");
    unlink(sock_path);
    char longpath[200];
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    CHECK(sl_ctl_start(&loop, longpath, handler, NULL, &ctl, &err) == -1);
    CHECK_HAS(err.msg, "the limit of unix sockets");
    CHECK(uv_loop_close(&loop) == 0);
}

static uid_t nobody_uid;

static void child_as_nobody(int outfd, const void *arg)
{
    if (setuid(nobody_uid) != 0) {
        write_all(outfd, "setuid failed");
        return;
    }
    child_request(outfd, arg);
}

static void test_other_user_refused(void)
{
    struct passwd *pw = getpwnam("nobody");
    if (geteuid() != 0 || !pw) {
        printf("# not root or no user nobody: another user cannot be tried\n");
        CHECK(geteuid() != 0); /* as root (CI), this must run */
        return;
    }
    nobody_uid = pw->pw_uid;
    fixture f;
    if (fixture_start(&f) != 0) {
        CHECK(0);
        return;
    }
    /* The file mode keeps nobody out... */
    char *out = run_child(&f.loop, child_as_nobody, "pause");
    CHECK_HAS(out, "rc=-1\ncontrol socket ");
    CHECK_HAS(out, "permission denied");
    free(out);
    /* ...and so does the server when the modes let it through. */
    CHECK(chmod(tmpdir, 0711) == 0 && chmod(sock_path, 0666) == 0);
    out = run_child(&f.loop, child_as_nobody, "pause");
    CHECK_STR(out, "rc=-2\npermission denied: the job belongs to another user");
    free(out);
    CHECK(f.job.calls == 0 && f.job.paused == 0);
    CHECK(chmod(tmpdir, 0700) == 0);
    out = request(&f.loop, "status"); /* the owner still gets through */
    CHECK_HAS(out, "rc=0\n");
    free(out);
    fixture_end(&f);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-ctl-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    snprintf(sock_path, sizeof sock_path, "%s/j" SL_CTL_SUFFIX, tmpdir);
    sl_log_set_level(SL_LOG_ERROR);
    RUN(test_path);
    RUN(test_parse_set);
    RUN(test_round_trips);
    RUN(test_partial_and_long);
    RUN(test_early_disconnect);
    RUN(test_slow_client_times_out);
    RUN(test_stale_and_second_server);
    RUN(test_refusals_at_start);
    RUN(test_other_user_refused);
    unlink(sock_path);
    rmdir(tmpdir);
    return CHECK_DONE();
}
