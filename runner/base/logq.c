/* logq.c: the log's writer thread and its bounded queue (logq.h). */
#include "sluice/base/logq.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One record: bytes to write, or (dropped > 0) the notice for that many lines. */
typedef struct logq_rec {
    struct logq_rec *next;
    uint64_t seq;
    uint64_t dropped;
    size_t len;
    char bytes[];
} logq_rec;

struct sl_logq {
    int fd;
    size_t max_bytes;
    int64_t sync_ms;
    sl_logq_notice_fn notice;
    pthread_t thread;
    pthread_mutex_t mu;  /* guards everything below */
    pthread_cond_t work; /* the writer waits on it for records, or for closing */
    pthread_cond_t done; /* a record is written (or the writer caught up) */
    logq_rec *head, *tail;
    size_t queued_bytes;
    uint64_t put_seq, written_seq;
    uint64_t dropped; /* lines dropped and not yet in a notice record */
    int writing;      /* the writer holds a record it took off the queue */
    int stalled;      /* a write took longer than sync_ms: puts do not wait until the queue is empty again */
    int dropping;     /* the queue was full: puts drop until the writer has caught up (one notice a stall) */
    int closing, abandoned;
};

static struct timespec deadline_in(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void destroy(sl_logq *q)
{
    while (q->head) {
        logq_rec *r = q->head;
        q->head = r->next;
        free(r);
    }
    pthread_cond_destroy(&q->work);
    pthread_cond_destroy(&q->done);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* All of it, as a blocking fputs would; a descriptor that fails (EPIPE,
 * ENOSPC, EBADF) loses the record, as an fputs's bytes would be lost. */
static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* someone else made the descriptor non-blocking (it is shared):
             * wait for room as a blocking write would; an error or hang-up
             * shows in the next write */
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            (void)poll(&pfd, 1, -1);
        } else {
            return;
        }
    }
}

static void write_rec(sl_logq *q, const logq_rec *r)
{
    if (r->dropped == 0) {
        write_all(q->fd, r->bytes, r->len);
        return;
    }
    char *line = q->notice ? q->notice(r->dropped) : NULL;
    if (line)
        write_all(q->fd, line, strlen(line));
    free(line);
}

static void *writer_main(void *arg)
{
    sl_logq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->closing)
            pthread_cond_wait(&q->work, &q->mu);
        logq_rec *r = q->head;
        if (!r)
            break; /* closing, and all written */
        q->head = r->next;
        if (!q->head)
            q->tail = NULL;
        q->queued_bytes -= r->len;
        q->writing = 1;
        pthread_mutex_unlock(&q->mu); /* the write may block for ever: puts go on meanwhile */
        write_rec(q, r);
        pthread_mutex_lock(&q->mu);
        q->writing = 0;
        q->written_seq = r->seq;
        if (!q->head)
            q->stalled = q->dropping = 0; /* caught up: puts queue, and wait for their line, again */
        free(r);
        pthread_cond_broadcast(&q->done);
    }
    int abandoned = q->abandoned;
    pthread_mutex_unlock(&q->mu);
    if (abandoned)
        destroy(q); /* sl_logq_free gave up waiting and left q to this thread */
    return NULL;
}

sl_logq *sl_logq_new(int fd, size_t max_bytes, int64_t sync_ms, sl_logq_notice_fn notice)
{
    sl_logq *q = sl_calloc(1, sizeof *q);
    q->fd = fd;
    q->max_bytes = max_bytes;
    q->sync_ms = sync_ms;
    q->notice = notice;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->work, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* deadline_in's clock */
    pthread_cond_init(&q->done, &attr);
    pthread_condattr_destroy(&attr);
    /* The thread starts with every signal blocked: SIGINT, SIGTERM, SIGHUP
     * go to the loop's thread (libuv's watchers), and a write to a closed
     * pipe fails with EPIPE instead of ending the process. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&q->thread, NULL, writer_main, q);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        destroy(q);
        return NULL;
    }
    return q;
}

static void append(sl_logq *q, logq_rec *r)
{
    r->seq = ++q->put_seq;
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    q->queued_bytes += r->len;
}

/* The notice record for the lines dropped so far, where they would have been. */
static void append_notice(sl_logq *q)
{
    logq_rec *r = sl_calloc(1, sizeof *r);
    r->dropped = q->dropped;
    q->dropped = 0;
    append(q, r);
}

int sl_logq_put(sl_logq *q, const char *bytes, size_t len)
{
    if (len == 0)
        return 0;
    int is_line = bytes[len - 1] == '\n';
    pthread_mutex_lock(&q->mu);
    if (q->closing || q->dropping || len > q->max_bytes - q->queued_bytes) {
        q->dropped += (uint64_t)is_line;
        q->stalled = q->dropping = 1;
        pthread_mutex_unlock(&q->mu);
        return -1;
    }
    if (q->dropped && is_line)
        append_notice(q);
    logq_rec *r = sl_malloc(sizeof *r + len);
    memset(r, 0, sizeof *r);
    memcpy(r->bytes, bytes, len);
    r->len = len;
    append(q, r);
    uint64_t seq = r->seq; /* r is the writer's from here on */
    pthread_cond_signal(&q->work);
    if (!q->stalled && q->sync_ms > 0) {
        struct timespec until = deadline_in(q->sync_ms);
        while (q->written_seq < seq) {
            if (pthread_cond_timedwait(&q->done, &q->mu, &until) == ETIMEDOUT) {
                q->stalled = q->written_seq < seq;
                break;
            }
        }
    }
    pthread_mutex_unlock(&q->mu);
    return 0;
}

uint64_t sl_logq_dropped(sl_logq *q)
{
    pthread_mutex_lock(&q->mu);
    uint64_t dropped = q->dropped;
    pthread_mutex_unlock(&q->mu);
    return dropped;
}

int sl_logq_free(sl_logq *q, int64_t wait_ms)
{
    pthread_mutex_lock(&q->mu);
    if (q->dropped)
        append_notice(q);
    q->closing = 1;
    pthread_cond_signal(&q->work);
    struct timespec until = deadline_in(wait_ms);
    while (q->head || q->writing) {
        if (pthread_cond_timedwait(&q->done, &q->mu, &until) == ETIMEDOUT)
            break;
    }
    if (q->head || q->writing) {
        pthread_t thread = q->thread; /* q is the writer's once unlocked */
        q->abandoned = 1;
        pthread_mutex_unlock(&q->mu);
        pthread_detach(thread);
        return -1;
    }
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    destroy(q);
    return 0;
}
