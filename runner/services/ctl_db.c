/* ctl_db.c: `sluice ctl` through the database: a request row in sluice_ctl for the runner holding the job's lease.
 *
 * The runner's side is in lease.c (it looks on its lease's connection); this
 * is the client's. The request is checked before anything is written, and
 * is addressed to the runner the lease names now, so a runner that takes
 * the job over later never acts on it. */
#include <stdlib.h>
#include <string.h>

#include "sluice/db/schema.h"
#include "sluice/services/ctl.h"

/* Look between answers this often while waiting. */
#define WAIT_STEP_MS 200

/* The job's live lease: 1 with *runner and *desc (malloc'd), 0 when the
 * database records none (or has no sluice tables), -1 with err. */
static int live_runner(sl_session *sess, const char *job, char **runner, char **desc, sl_err *err)
{
    *runner = *desc = NULL;
    const char *params[] = {job};
    sl_answer ans;
    int rc = sl_session_exec1(sess,
                              "SELECT runner, coalesce(runner_desc, runner) FROM " SL_JOBS_TABLE
                              " WHERE job = $1 AND runner IS NOT NULL AND lease_until > now()",
                              1, params, &ans);
    if (rc != 0 || !ans.ok) {
        int missing = rc == 0 && strcmp(ans.sqlstate, "42P01") == 0; /* no sluice_jobs: sluice never ran here */
        if (!missing)
            sl_err_set(err, "cannot read the job's runner from %s: %s", sl_session_display(sess),
                       ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return missing ? 0 : -1;
    }
    int found = ans.results[0].nrows > 0;
    if (found) {
        *runner = sl_strdup(sl_answer_val(&ans, 0, 0, 0));
        *desc = sl_strdup(sl_answer_val(&ans, 0, 0, 1));
    }
    sl_answer_free(&ans);
    return found;
}

/* Delete request id: 1 with the answer (ok, text) when the runner had
 * answered, 0 when it had not, -1 when the database could not be asked. */
static int take_answer(sl_session *sess, const char *id, int *ok, char **text)
{
    const char *params[] = {id};
    sl_answer ans;
    int rc = sl_session_exec1(sess,
                              "DELETE FROM " SL_CTL_TABLE " WHERE id = $1::bigint"
                              " RETURNING answered_at IS NOT NULL, coalesce(ok, false), coalesce(answer, '')",
                              1, params, &ans);
    int got = -1;
    if (rc == 0 && ans.ok) {
        got = ans.results[0].nrows > 0 && sl_answer_true(sl_answer_val(&ans, 0, 0, 0));
        if (got) {
            *ok = sl_answer_true(sl_answer_val(&ans, 0, 0, 1));
            *text = sl_strdup(sl_answer_val(&ans, 0, 0, 2));
        }
    }
    sl_answer_free(&ans);
    return got;
}

/* Whether request id has its answer yet: 1, 0, or -1. */
static int answered(sl_session *sess, const char *id)
{
    const char *params[] = {id};
    sl_answer ans;
    int rc = sl_session_exec1(sess, "SELECT answered_at IS NOT NULL FROM " SL_CTL_TABLE " WHERE id = $1::bigint", 1,
                              params, &ans);
    int got = rc == 0 && ans.ok && ans.results[0].nrows > 0 ? sl_answer_true(sl_answer_val(&ans, 0, 0, 0)) : -1;
    sl_answer_free(&ans);
    return got;
}

/* pause or resume with no runner: recorded in sluice_jobs.paused, which the
 * job's next run reads. 1 done (*response says so), 0 when a runner holds
 * the job after all (PostgreSQL: its lease; SQLite: its lock), -1 with err. */
static int pause_recorded(sl_session *sess, const char *job, int pause, char **response, sl_err *err)
{
    int lite = sess->dialect == SL_DIALECT_SQLITE;
    if (lite) {
        int rc = sl_session_lock_job(sess, job, 0, err);
        if (rc != 0)
            return rc == SL_EREFUSED ? 0 : -1;
    }
    char *text = pause ? sl_ctl_paused_now() : NULL;
    const char *params[] = {job, text};
    sl_answer ans;
    int rc = sl_session_exec1(sess,
                              lite ? "UPDATE " SL_JOBS_TABLE " SET paused = $2 WHERE job = $1 RETURNING 1"
                                   : "UPDATE " SL_JOBS_TABLE " SET paused = $2 WHERE job = $1"
                                     " AND NOT (runner IS NOT NULL AND lease_until > now()) RETURNING 1",
                              2, params, &ans);
    free(text);
    if (lite)
        sl_session_unlock_job(sess, job);
    if (rc != 0 || !ans.ok) {
        sl_err_set(err, "cannot record the %s of job %s in %s: %s", pause ? "pause" : "resume", job,
                   sl_session_display(sess), ans.error ? ans.error : "not connected");
        if (rc == 0 && (strcmp(ans.sqlstate, "42703") == 0 || strcmp(ans.sqlstate, "42P01") == 0))
            sl_err_append(err, "hint: sluice's tables here are an older sluice's (or there are none): `sluice up` "
                               "with this one adds what they lack");
        sl_answer_free(&ans);
        return -1;
    }
    int done = ans.results[0].nrows > 0;
    sl_answer_free(&ans);
    if (done)
        *response = pause ? sl_asprintf("paused: no runner runs job %s now; its next up or down waits until "
                                        "`sluice ctl %s resume`\n",
                                        job, job)
                          : sl_asprintf("resumed: the next up or down runs job %s\n", job);
    return done;
}

char *sl_ctl_paused_now(void)
{
    char at[32];
    sl_format_iso8601(sl_now_ms(), at);
    return sl_asprintf("by sluice ctl at %s", at);
}

int sl_ctl_request_db(sl_session *sess, const char *job, const char *request, char **response, char **runner,
                      sl_err *err)
{
    *response = *runner = NULL;
    if (sl_ctl_check(request, err) != 0)
        return SL_EREFUSED;
    int pause = strcmp(request, "pause") == 0, resume = strcmp(request, "resume") == 0;
    char *lease = NULL;
    int rc = sess->dialect == SL_DIALECT_SQLITE ? 0 : live_runner(sess, job, &lease, runner, err);
    if (rc == 0 && (pause || resume)) {
        rc = pause_recorded(sess, job, pause, response, err);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
        /* no row to mark (a job that never ran), or a runner took it meanwhile: ask that one */
        rc = sess->dialect == SL_DIALECT_SQLITE ? 0 : live_runner(sess, job, &lease, runner, err);
    }
    if (rc <= 0) {
        if (rc == 0)
            sl_err_set(err, "%s records no live runner of job %s%s", sl_session_display(sess), job,
                       pause || resume ? ", nor the job itself (it has not run there)" : "");
        return rc == 0 ? SL_CTL_NOT_LISTENING : -1;
    }
    const char *params[] = {job, lease, request};
    sl_answer ans;
    rc = sl_session_exec1(sess,
                          "INSERT INTO " SL_CTL_TABLE " (job, runner, request) VALUES ($1, $2, $3) RETURNING id::text",
                          3, params, &ans);
    free(lease);
    if (rc != 0 || !ans.ok) {
        sl_err_set(err, "cannot hand the request to %s through %s: %s", *runner, sl_session_display(sess),
                   ans.error ? ans.error : "not connected");
        if (rc == 0 && strcmp(ans.sqlstate, "42P01") == 0)
            sl_err_append(err, "hint: a sluice older than this one, or a role that may not create tables, made "
                               "sluice's tables here: an owner's `sluice up` adds " SL_CTL_TABLE);
        sl_answer_free(&ans);
        return -1;
    }
    char *id = sl_strdup(sl_answer_val(&ans, 0, 0, 0));
    sl_answer_free(&ans);
    int64_t deadline = sl_mono_ms() + SL_CTL_DB_TIMEOUT_MS;
    int seen = 0, stopped = 0;
    while (!seen && !stopped && sl_mono_ms() < deadline) {
        stopped = sl_session_sleep(sess, WAIT_STEP_MS);
        seen = !stopped && answered(sess, id) == 1;
    }
    int ok = 0;
    char *text = NULL;
    int got = take_answer(sess, id, &ok, &text); /* an answer that came at the last moment still counts */
    free(id);
    if (got != 1) {
        sl_err_set(err, "%s, which runs job %s, did not answer within %d s through %s", *runner, job,
                   SL_CTL_DB_TIMEOUT_MS / 1000, sl_session_display(sess));
        if (got == 0)
            sl_err_append(err,
                          "hint: a runner looks for requests every %d s; one held up (or an older sluice, "
                          "which does not look) leaves them: the request was withdrawn, and nothing changed",
                          SL_CTL_DB_POLL_MS / 1000);
        return -1;
    }
    /* for a terminal: whatever the database holds cannot drive it */
    sl_buf shown = {0};
    sl_buf_add_visible(&shown, text, strlen(text), 0);
    free(text);
    if (ok) {
        if (shown.len && shown.data[shown.len - 1] != '\n')
            sl_buf_addc(&shown, '\n');
        *response = sl_buf_take(&shown);
        if (!*response)
            *response = sl_strdup("");
        return 0;
    }
    sl_err_set(err, "%s", shown.data ? shown.data : "request failed");
    sl_buf_free(&shown);
    return SL_EREFUSED;
}
