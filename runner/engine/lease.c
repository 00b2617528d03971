/* lease.c: the job's lease in sluice_jobs: take it (or take it over), renew it on a keeper connection, fence chunks. */
#include "sluice/engine/lease.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/base/fiber.h"
#include "sluice/db/schema.h"

/* A runner that missed this many renewals is taken to be dying: a new one
 * waits for its lease to expire rather than refusing at once. */
#define STALE_RENEWALS 3

/* ---- this process ---- */

static int read_text(const char *path, char *out, size_t outsz)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, out, outsz - 1);
    close(fd);
    if (n < 0)
        return -1;
    out[n] = '\0';
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

/* Field 22 of /proc/PID/stat: when the process started, in clock ticks after
 * boot; with the pid it names one process for good (pids are reused). -1 for
 * no such process, and for one that has exited and is only waiting for its
 * parent to reap it (state Z or X: a runner killed with kill -9 whose parent,
 * a shell or a container's first process, has not called wait yet holds
 * nothing any more). */
static long long start_time(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (read_text(path, buf, sizeof buf) != 0)
        return -1;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
        return -1;
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    return p ? strtoll(p + 1, NULL, 10) : -1;
}

static void random_hex(char out[33])
{
    unsigned char bytes[16] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, bytes, sizeof bytes) != (ssize_t)sizeof bytes) {
        uint64_t x = (uint64_t)sl_now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)sl_mono_ms();
        for (size_t i = 0; i < sizeof bytes; i++, x = x * 6364136223846793005ULL + 1442695040888963407ULL)
            bytes[i] ^= (unsigned char)(x >> 56);
    }
    if (fd >= 0)
        close(fd);
    for (size_t i = 0; i < sizeof bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
}

const sl_runner *sl_runner_self(void)
{
    static sl_runner self;
    static int made;
    if (made)
        return &self;
    made = 1;
    random_hex(self.id);
    char name[64] = "", boot[64] = "", ns[64] = "";
    if (gethostname(name, sizeof name) != 0)
        snprintf(name, sizeof name, "?");
    name[sizeof name - 1] = '\0';
    (void)read_text("/proc/sys/kernel/random/boot_id", boot, sizeof boot);
    ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    ns[n > 0 ? n : 0] = '\0';
    snprintf(self.host, sizeof self.host, "%s %s %s", name, boot, ns);
    self.pid = (int)getpid();
    self.start = start_time(self.pid);
    snprintf(self.desc, sizeof self.desc, "sluice pid %d on %s", self.pid, name);
    return &self;
}

int sl_runner_gone(const char *host, int pid, long long start)
{
    const sl_runner *me = sl_runner_self();
    if (!host || strcmp(host, me->host) != 0 || pid <= 0)
        return 0;
    return start_time(pid) != start;
}

int sl_runner_is_self(const char *runner)
{
    const char *me = sl_runner_self()->id;
    size_t n = strlen(me);
    return runner && strncmp(runner, me, n) == 0 && (runner[n] == '\0' || runner[n] == '.');
}

/* ---- taking it ---- */

static const char read_sql[] = "SELECT runner, runner_host, runner_pid, runner_start, runner_desc,"
                               " (extract(epoch FROM lease_until - now()) * 1000)::bigint"
                               " FROM " SL_JOBS_TABLE " WHERE job = $1";
static const char add_row_sql[] =
    "INSERT INTO " SL_JOBS_TABLE " (job, state) VALUES ($1, 'pending') ON CONFLICT DO NOTHING";
static const char take_sql[] = "UPDATE " SL_JOBS_TABLE " SET runner = $2, runner_host = $3, runner_pid = $4::integer,"
                               " runner_start = $5::bigint, runner_desc = $6,"
                               " lease_until = now() + $7::bigint * interval '1 millisecond'"
                               " WHERE job = $1 AND runner IS NOT DISTINCT FROM $8 RETURNING 1";
static const char renew_sql[] =
    "UPDATE " SL_JOBS_TABLE " SET lease_until = now() + $3::bigint * interval '1 millisecond'"
    " WHERE job = $1 AND runner = $2 RETURNING 1";
static const char release_sql[] =
    "UPDATE " SL_JOBS_TABLE " SET runner = NULL, lease_until = NULL WHERE job = $1 AND runner = $2";

/* The lease as the job's row has it. */
typedef struct holder {
    int row;      /* the job has a row */
    char *runner; /* NULL: free */
    char *host, *desc;
    int pid;
    long long start;
    int64_t left_ms; /* until it expires; <= 0 expired */
} holder;

static void holder_free(holder *h)
{
    free(h->runner);
    free(h->host);
    free(h->desc);
    memset(h, 0, sizeof *h);
}

static int read_holder(sl_session *sess, const char *job, holder *h, sl_err *err)
{
    memset(h, 0, sizeof *h);
    const char *params[] = {job};
    sl_answer ans;
    if (sl_session_exec1(sess, read_sql, 1, params, &ans) != 0 || !ans.ok) {
        sl_err_set(err, "cannot read the lease of job %s: %s", job, ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return -1;
    }
    h->row = ans.results[0].nrows > 0;
    if (h->row) {
        h->runner = sl_strdup_or_null(sl_answer_val(&ans, 0, 0, 0));
        h->host = sl_strdup_or_null(sl_answer_val(&ans, 0, 0, 1));
        const char *pid = sl_answer_val(&ans, 0, 0, 2), *start = sl_answer_val(&ans, 0, 0, 3);
        h->pid = pid ? (int)strtol(pid, NULL, 10) : 0;
        h->start = start ? strtoll(start, NULL, 10) : -1;
        h->desc = sl_strdup_or_null(sl_answer_val(&ans, 0, 0, 4));
        const char *left = sl_answer_val(&ans, 0, 0, 5);
        h->left_ms = left ? strtoll(left, NULL, 10) : 0;
    }
    sl_answer_free(&ans);
    return 0;
}

static int exec_ok(sl_session *sess, const char *sql, int n, const char *const *params, const char *what, sl_err *err)
{
    sl_answer ans;
    int rc = sl_session_exec1(sess, sql, n, params, &ans);
    if (rc != 0 || !ans.ok) {
        sl_err_set(err, "%s: %s", what, ans.error ? ans.error : "not connected");
        rc = -1;
    }
    sl_answer_free(&ans);
    return rc;
}

/* Swap the lease from old (NULL: free) to us, waiting (lock_timeout) for
 * the old runner's chunks in flight: 1 taken, 0 someone was quicker. */
static int swap(sl_session *sess, const sl_lease *lease, const char *job, const char *old, sl_err *err)
{
    const sl_runner *me = sl_runner_self();
    char pid[16], start[24], ttl[24];
    snprintf(pid, sizeof pid, "%d", me->pid);
    snprintf(start, sizeof start, "%lld", me->start);
    snprintf(ttl, sizeof ttl, "%d", SL_LEASE_TTL_MS);
    const char *lock[] = {job};
    const char *params[] = {job, lease->id, me->host, pid, start, me->desc, ttl, old};
    sl_query q[] = {{"BEGIN", 0, NULL, 0},
                    {"SET LOCAL lock_timeout = '10s'", 0, NULL, 0},
                    {"SELECT 1 FROM " SL_JOBS_TABLE " WHERE job = $1 FOR UPDATE", 1, lock, 0},
                    {take_sql, 8, params, 0},
                    {"COMMIT", 0, NULL, 0}};
    sl_answer ans;
    if (sl_session_exec(sess, q, 5, &ans) != 0 || !ans.ok) {
        sl_err_set(err, "cannot take the lease of job %s: %s", job, ans.error ? ans.error : "not connected");
        if (!ans.conn_lost && ans.failed_index >= 0 && ans.failed_index < 4) {
            sl_answer rb;
            if (sl_session_exec1(sess, "ROLLBACK", 0, NULL, &rb) == 0)
                sl_answer_free(&rb);
        }
        sl_answer_free(&ans);
        return -1;
    }
    int taken = ans.results[3].nrows > 0;
    sl_answer_free(&ans);
    return taken;
}

void sl_runner_refusal(const char *job, const char *desc, int self, int64_t left_ms, sl_err *err)
{
    if (self) {
        sl_err_set(err,
                   "job %s is already being run against this database by this same sluice process: two of its "
                   "targets (--db, --targets) name one database",
                   job);
        sl_err_append(err, "hint: give each database once; the other target's run goes on");
        return;
    }
    if (left_ms < 0) {
        sl_err_set(err, "job %s is already being run against this database (by %s)", job, desc);
        sl_err_append(err, "hint: one runner per job and database, up, down or stamp; wait for it, or stop it with "
                           "SIGINT");
        return;
    }
    sl_err_set(err, "job %s is already being run against this database (by %s; its lease runs %" PRId64 " s more)", job,
               desc, (left_ms + 999) / 1000);
    sl_err_append(err,
                  "hint: one runner per job and database, up, down or stamp; wait for it, or stop it with "
                  "SIGINT. A runner killed on another machine leaves its lease to expire (at most %d s)",
                  SL_LEASE_TTL_MS / 1000);
}

static void refuse(const char *job, const holder *h, sl_err *err)
{
    sl_runner_refusal(job, h->desc ? h->desc : "another runner", sl_runner_is_self(h->runner),
                      h->left_ms < 0 ? 0 : h->left_ms, err);
}

/* Whether h leaves the lease to us now: 1 yes, 0 refuse, 2 wait *wait_ms. */
static int judge(const sl_lease *lease, const char *job, const holder *h, int64_t *wait_ms)
{
    if (!h->runner || strcmp(h->runner, lease->id) == 0 || h->left_ms <= 0)
        return 1;
    if (sl_runner_gone(h->host, h->pid, h->start)) {
        sl_info("%s: %s is gone; taking over its job", job, h->desc ? h->desc : "the runner holding it");
        return 1;
    }
    if (h->left_ms < SL_LEASE_TTL_MS - STALE_RENEWALS * SL_LEASE_RENEW_MS) {
        *wait_ms = h->left_ms + 100;
        return 2;
    }
    return 0;
}

static int take(sl_lease *lease, sl_session *sess, const char *job, sl_err *err);

int sl_lease_take(sl_lease *lease, sl_session *sess, const char *job, sl_err *err)
{
    static unsigned taken;
    memset(lease, 0, sizeof *lease);
    lease->loop = sess->loop;
    lease->job = sl_strdup(job);
    snprintf(lease->id, sizeof lease->id, "%s.%u", sl_runner_self()->id, ++taken);
    int rc = take(lease, sess, job, err);
    if (rc != 0) {
        free(lease->job);
        lease->job = NULL;
    }
    return rc;
}

static int take(sl_lease *lease, sl_session *sess, const char *job, sl_err *err)
{
    const char *params[] = {job};
    int announced = 0;
    for (int attempt = 0; attempt < 50; attempt++) {
        holder h;
        if (read_holder(sess, job, &h, err) != 0)
            return -1;
        if (!h.row) {
            holder_free(&h);
            if (exec_ok(sess, add_row_sql, 1, params, "cannot record the job in " SL_JOBS_TABLE, err) != 0)
                return -1;
            continue;
        }
        int64_t wait = 0;
        int verdict = judge(lease, job, &h, &wait);
        if (verdict == 0)
            refuse(job, &h, err);
        if (verdict == 2 && !announced++)
            sl_info("%s: %s stopped renewing its lease; waiting %" PRId64 " s for it to expire", job,
                    h.desc ? h.desc : "another runner", wait / 1000 + 1);
        int rc = verdict == 1 ? swap(sess, lease, job, h.runner, err) : 0;
        holder_free(&h);
        if (verdict == 0 || rc < 0)
            return verdict == 0 ? SL_EREFUSED : SL_EFAIL;
        if (rc == 1) {
            lease->held = 1;
            lease->renewed_at = sl_mono_ms();
            return 0;
        }
        if (sl_session_sleep(sess, verdict == 2 ? wait : 100)) {
            sl_err_set(err, "%s: stopped by a signal while waiting for the job's lease; nothing ran", job);
            return SL_STOPPED;
        }
    }
    sl_err_set(err, "cannot take the lease of job %s: it keeps changing hands", job);
    return -1;
}

int sl_lease_check(sl_lease *lease, sl_session *sess, sl_err *err)
{
    holder h;
    if (read_holder(sess, lease->job, &h, err) != 0)
        return -1;
    int mine = h.runner && strcmp(h.runner, lease->id) == 0;
    int64_t wait = 0;
    int rc = mine ? 1 : judge(lease, lease->job, &h, &wait) == 1 ? swap(sess, lease, lease->job, h.runner, err) : 0;
    if (rc == 0) {
        lease->lost = 1;
        snprintf(lease->why, sizeof lease->why, "%s: another runner took the job over (%s); stopping", lease->job,
                 h.desc ? h.desc : "?");
        sl_err_set(err, "%s", lease->why);
    }
    holder_free(&h);
    if (rc == 1)
        lease->renewed_at = sl_mono_ms();
    return rc == 1 ? SL_OK : rc == 0 ? SL_EREFUSED : SL_EFAIL;
}

int sl_lease_lost(const sl_lease *lease)
{
    return lease->lost;
}

/* ---- the keeper ---- */

static void on_renewed(sl_pg *pg, const sl_pg_reply *reply, void *arg)
{
    (void)pg;
    sl_lease *lease = arg;
    lease->renewing = 0;
    if (!reply->ok)
        return; /* tried again at the next tick; a chunk's fence is what counts */
    if (reply->results && reply->results[0] && PQntuples(reply->results[0]) > 0) {
        lease->renewed_at = sl_mono_ms();
        return;
    }
    lease->lost = 1;
    snprintf(lease->why, sizeof lease->why,
             "%s: lost the job's lease: another runner took it over (this runner was held up for over %d s?)",
             lease->job, SL_LEASE_TTL_MS / 1000);
}

static void on_keeper_connected(sl_pg *pg, int status, const char *error, void *arg)
{
    (void)pg;
    (void)error;
    sl_lease *lease = arg;
    lease->connecting = 0;
    (void)status; /* a failed connect is tried again at the next tick */
}

static void renew(sl_lease *lease)
{
    if (!lease->keeper.connected) {
        if (!lease->connecting && sl_pg_connect(&lease->keeper, 10000, on_keeper_connected, lease) == 0)
            lease->connecting = 1;
        return;
    }
    if (lease->renewing)
        return;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", SL_LEASE_TTL_MS);
    const char *params[] = {lease->job, lease->id, ttl};
    sl_query q = {renew_sql, 3, params, 0};
    if (sl_pg_send(&lease->keeper, &q, 1, on_renewed, lease) == 0) {
        lease->renewing = 1;
        lease->renew_sent_at = sl_mono_ms();
    }
}

/* ---- `sluice ctl` through the database ---- */

static const char ctl_poll_sql[] = "SELECT id::text, request FROM " SL_CTL_TABLE
                                   " WHERE job = $1 AND runner = $2 AND answered_at IS NULL ORDER BY id LIMIT 16";
static const char ctl_answer_sql[] = "UPDATE " SL_CTL_TABLE " SET answered_at = now(), ok = $2::boolean, answer = $3"
                                     " WHERE id = $1::bigint";

static void on_ctl_answered(sl_pg *pg, const sl_pg_reply *reply, void *arg)
{
    (void)pg;
    (void)reply; /* an answer that did not reach the row: the client withdraws the request when it times out */
    (void)arg;
}

static void on_ctl_polled(sl_pg *pg, const sl_pg_reply *reply, void *arg)
{
    sl_lease *lease = arg;
    lease->ctl_polling = 0;
    if (!reply->ok) {
        /* no such table (an older sluice made sluice's tables, and this role may not add it), or no right
         * to it: no requests can come this way, so stop looking */
        if (strcmp(reply->sqlstate, "42P01") == 0 || strcmp(reply->sqlstate, "42501") == 0)
            lease->ctl_off = 1;
        return;
    }
    PGresult *res = reply->results[0];
    int n = res ? PQntuples(res) : 0;
    if (n == 0 || !lease->ctl_handler)
        return; /* requests that came as the walk ended are withdrawn by their clients */
    sl_query *q = sl_calloc((size_t)n, sizeof *q);
    const char **params = sl_calloc((size_t)n * 3, sizeof *params);
    sl_buf *answers = sl_calloc((size_t)n, sizeof *answers);
    for (int i = 0; i < n; i++) {
        int ok =
            sl_ctl_answer(lease->ctl_handler, lease->ctl_arg, lease->ctl_tag, PQgetvalue(res, i, 1), &answers[i]) == 0;
        params[3 * i] = PQgetvalue(res, i, 0);
        params[3 * i + 1] = ok ? "true" : "false";
        params[3 * i + 2] = answers[i].data ? answers[i].data : "";
        q[i] = (sl_query){ctl_answer_sql, 3, params + 3 * i, 0};
    }
    if (sl_pg_send(pg, q, (size_t)n, on_ctl_answered, lease) != 0)
        sl_warn("%s: could not answer %d sluice ctl request%s through the database: the connection is gone", lease->job,
                n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++)
        sl_buf_free(&answers[i]);
    free(answers);
    free(params);
    free(q);
}

static void poll_ctl(sl_lease *lease)
{
    if (!lease->ctl_handler || lease->ctl_off || lease->ctl_polling || !lease->keeper.connected)
        return;
    const char *params[] = {lease->job, lease->id};
    sl_query q = {ctl_poll_sql, 2, params, 0};
    if (sl_pg_send(&lease->keeper, &q, 1, on_ctl_polled, lease) == 0)
        lease->ctl_polling = 1;
}

void sl_lease_set_ctl(sl_lease *lease, sl_ctl_handler handler, void *arg)
{
    lease->ctl_handler = handler;
    lease->ctl_arg = arg;
    lease->ctl_tag = sl_fiber_current_tag();
}

/* Every SL_CTL_DB_POLL_MS: look for ctl requests; renew every SL_LEASE_RENEW_MS. */
static void on_tick(uv_timer_t *timer)
{
    sl_lease *lease = timer->data;
    if (!lease->held || lease->lost)
        return;
    if (!lease->keeper.connected || sl_mono_ms() - lease->renew_sent_at >= SL_LEASE_RENEW_MS - SL_CTL_DB_POLL_MS / 2)
        renew(lease);
    poll_ctl(lease);
}

void sl_lease_start(sl_lease *lease, const sl_session *sess)
{
    sl_err err;
    if (sl_pg_init(lease->loop, &lease->keeper, sess->pg.conninfo, &err) != 0) {
        sl_warn("%s: cannot keep the job's lease renewed: %s", lease->job, err.msg);
        return;
    }
    lease->has_keeper = 1;
    uv_timer_init(lease->loop, &lease->timer);
    lease->timer.data = lease;
    lease->has_timer = 1;
    uv_timer_start(&lease->timer, on_tick, SL_CTL_DB_POLL_MS, SL_CTL_DB_POLL_MS);
    uv_unref((uv_handle_t *)&lease->timer); /* it must not keep the loop alive on its own */
    renew(lease);                           /* connect now */
}

static void on_closed(uv_handle_t *handle)
{
    sl_lease *lease = handle->data;
    lease->closes--;
}

static void on_keeper_closed(sl_pg *pg)
{
    sl_lease *lease = pg->data;
    lease->closes--;
}

static void on_released(sl_pg *pg, const sl_pg_reply *reply, void *arg)
{
    (void)pg;
    (void)reply;
    *(int *)arg = 1;
}

static void on_release_timeout(uv_timer_t *timer)
{
    sl_lease *lease = timer->data;
    sl_pg_disconnect(&lease->keeper); /* its callback runs, with the connection lost */
}

/* The run's own connection is gone (a second signal dropped it to abort the
 * chunk in flight): clear the lease on the keeper's, so that a runner on
 * another machine need not wait for it to expire. 2 s at most. */
static void release_on_keeper(sl_lease *lease)
{
    if (!lease->has_keeper || !lease->keeper.connected)
        return;
    const char *params[] = {lease->job, lease->id};
    sl_query q = {release_sql, 2, params, 0};
    int done = 0;
    if (sl_pg_send(&lease->keeper, &q, 1, on_released, &done) != 0)
        return;
    uv_timer_init(lease->loop, &lease->release_timer);
    lease->release_timer.data = lease;
    uv_timer_start(&lease->release_timer, on_release_timeout, 2000, 0);
    while (!done)
        sl_fiber_wait(lease->loop);
    lease->closes++;
    uv_close((uv_handle_t *)&lease->release_timer, on_closed); /* waited for below */
}

void sl_lease_release(sl_lease *lease, sl_session *sess)
{
    if (lease->held && !lease->lost && sl_session_connected(sess)) {
        const char *params[] = {lease->job, lease->id};
        sl_err err;
        if (exec_ok(sess, release_sql, 2, params, "cannot release the job's lease", &err) != 0)
            sl_warn("%s: %s (it expires within %d s)", lease->job, err.msg, SL_LEASE_TTL_MS / 1000);
    } else if (lease->held && !lease->lost) {
        release_on_keeper(lease);
    }
    lease->held = 0;
    if (lease->has_timer) {
        lease->closes++;
        uv_close((uv_handle_t *)&lease->timer, on_closed);
    }
    if (lease->has_keeper) {
        lease->closes++;
        lease->keeper.data = lease;
        sl_pg_close(&lease->keeper, on_keeper_closed);
    }
    while (lease->closes > 0)
        sl_fiber_wait(lease->loop);
    if (lease->has_keeper) {
        free(lease->keeper.conninfo);
        free(lease->keeper.display);
    }
    lease->has_timer = lease->has_keeper = 0;
    free(lease->job);
    lease->job = NULL;
}

char *sl_lease_fence_sql(int job_param, int chunk_param, int runner_param, int prev_param, int range_param,
                         const char *lock)
{
    return sl_asprintf("(SELECT $%d::bigint FROM " SL_JOBS_TABLE
                       " WHERE job = $%d AND runner = $%d AND CASE WHEN $%d::bigint IS "
                       "NOT NULL THEN EXISTS (SELECT 1 FROM " SL_PROGRESS_TABLE " WHERE job = $%d AND chunk_no = $%d) "
                       "ELSE $%d::integer = 0 OR EXISTS (SELECT 1 FROM " SL_RANGES_TABLE
                       " WHERE job = $%d AND range_no = $%d::integer) END %s)",
                       chunk_param, job_param, runner_param, prev_param, job_param, prev_param, range_param, job_param,
                       range_param, lock);
}
