/* test_logq.c: the log's writer queue: in place while the descriptor takes lines, never blocking when
 * it does not, drops counted and told where they happened, a bounded wait at the end. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "sluice/base/logq.h"

#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031 /* Linux's fcntl(2); glibc shows it only with _GNU_SOURCE */
#endif

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static char *notice(uint64_t dropped)
{
    char line[64];
    snprintf(line, sizeof line, "dropped %llu\n", (unsigned long long)dropped);
    return strdup(line);
}

/* What the pipe holds now (its read end non-blocking), appended to out. */
static void drain(int fd, sl_buf *out)
{
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        sl_buf_add(out, chunk, (size_t)n);
}

/* A pipe whose read end never blocks and which holds one page: a reader that stalled after a page. */
static void small_pipe(int fds[2])
{
    CHECK(pipe(fds) == 0);
    (void)fcntl(fds[0], F_SETPIPE_SZ, 4096); /* at least a page: the kernel rounds up */
    CHECK(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);
}

/* While the reader keeps up, a put returns with its line written, in order. */
static void test_in_place_in_order(void)
{
    int fds[2];
    small_pipe(fds);
    sl_logq *q = sl_logq_new(fds[1], 1 << 20, 1000, notice);
    CHECK(q != NULL);
    sl_buf got = {0};
    CHECK(sl_logq_put(q, "one\n", 4) == 0);
    drain(fds[0], &got);
    CHECK_STR(got.data, "one\n");
    CHECK(sl_logq_put(q, "\r\033[K", 4) == 0); /* the progress display's bytes go the same way */
    CHECK(sl_logq_put(q, "two\n", 4) == 0);
    drain(fds[0], &got);
    CHECK_STR(got.data, "one\n\r\033[Ktwo\n");
    CHECK(sl_logq_dropped(q) == 0);
    CHECK(sl_logq_free(q, 1000) == 0);
    sl_buf_free(&got);
    close(fds[0]);
    close(fds[1]);
}

/* Nobody reads: puts return at once (the first after sync_ms), lines past the queue's bytes are
 * dropped and counted (the progress display's bytes are not lines) until the writer has caught up;
 * then the next line comes after one notice for them, and everything else arrives in order. */
static void test_stalled_drops_and_tells(void)
{
    int fds[2];
    small_pipe(fds);
    sl_logq *q = sl_logq_new(fds[1], 2000, 50, notice);
    CHECK(q != NULL);
    char line[128];
    int64_t start = sl_mono_ms();
    int queued = 0, refused = 0;
    for (int i = 0; i < 400; i++) {
        int len = snprintf(line, sizeof line, "line %03d %s\n", i, "................................................");
        if (sl_logq_put(q, line, (size_t)len) == 0)
            queued++;
        else
            refused++;
    }
    /* until the writer catches up, lines are dropped even where one would fit: one gap, one notice */
    CHECK(sl_logq_put(q, "short\n", 6) == -1);
    refused++;
    CHECK(sl_logq_put(q, "\r\033[K", 4) == -1); /* not a line: not counted */
    int64_t took = sl_mono_ms() - start;
    if (took > 1000)
        printf("#   400 puts took %lld ms\n", (long long)took);
    CHECK(took < 1000);
    CHECK(refused > 0 && queued > 0);
    CHECK(sl_logq_dropped(q) == (uint64_t)refused);

    /* the reader is back: the queue drains, then a line comes after the notice */
    sl_buf got = {0};
    for (int i = 0; i < 200 && got.len < (size_t)queued * 58; i++) {
        drain(fds[0], &got);
        sleep_ms(5);
    }
    CHECK(sl_logq_put(q, "after\n", 6) == 0);
    CHECK(sl_logq_dropped(q) == 0);
    CHECK(sl_logq_free(q, 1000) == 0);
    drain(fds[0], &got);

    char want_tail[64];
    snprintf(want_tail, sizeof want_tail, "dropped %d\nafter\n", refused);
    size_t tail_len = strlen(want_tail);
    CHECK(got.len > tail_len && strcmp(got.data + got.len - tail_len, want_tail) == 0);
    /* before the notice: lines 000 on, each once, in order */
    int next = 0;
    for (const char *p = got.data; p && strncmp(p, "line ", 5) == 0; p = strchr(p, '\n') + 1) {
        CHECK(strtol(p + 5, NULL, 10) == next);
        next++;
    }
    CHECK(next == queued);
    if (next != queued)
        printf("#   %d lines before the notice, %d queued; got:\n%s", next, queued, got.data);
    sl_buf_free(&got);
    close(fds[0]);
    close(fds[1]);
}

/* A writer blocked for good: freeing waits no longer than asked, and says so; drops are told at the
 * end (here: into a pipe that takes them once read). */
static void test_free_waits_bounded(void)
{
    int fds[2];
    small_pipe(fds);
    sl_logq *q = sl_logq_new(fds[1], 1 << 20, 20, notice);
    CHECK(q != NULL);
    static char big[16384];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\n';
    CHECK(sl_logq_put(q, big, sizeof big) == 0); /* more than the pipe holds: the writer blocks */
    int64_t start = sl_mono_ms();
    CHECK(sl_logq_free(q, 200) == -1);
    int64_t took = sl_mono_ms() - start;
    CHECK(took >= 150 && took < 1500);
    /* a reader that goes away: the writer's write fails (EPIPE, not SIGPIPE: this process lives
     * on), it ends, and frees the queue itself */
    close(fds[0]);
    sleep_ms(100);
    close(fds[1]);
}

/* A descriptor that refuses everything (a pipe with no reader, /dev/full): lines are lost as an
 * fputs's would be, the process is not killed by SIGPIPE, and nothing waits. */
static void test_failing_descriptors(void)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    close(fds[0]);
    int full = open("/dev/full", O_WRONLY);
    CHECK(full >= 0);
    int targets[] = {fds[1], full};
    for (size_t t = 0; t < 2; t++) {
        sl_logq *q = sl_logq_new(targets[t], 1 << 20, 1000, notice);
        CHECK(q != NULL);
        int64_t start = sl_mono_ms();
        for (int i = 0; i < 100; i++)
            CHECK(sl_logq_put(q, "lost\n", 5) == 0);
        CHECK(sl_mono_ms() - start < 1000);
        CHECK(sl_logq_dropped(q) == 0);
        CHECK(sl_logq_free(q, 1000) == 0);
    }
    close(fds[1]);
    close(full);
}

int main(void)
{
    RUN(test_in_place_in_order);
    RUN(test_stalled_drops_and_tells);
    RUN(test_free_waits_bounded);
    RUN(test_failing_descriptors);
    return CHECK_DONE();
}
