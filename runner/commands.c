/* commands.c: up (over all jobs), status, history, stamp. plan lives in plan.c. */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/ckpt.h"
#include "sluice/cli.h"

int sl_cmd_up(const sl_opts *opts, sl_jobset *jobs, const char *only)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_session sess;
    sl_err err = {{0}};
    int code = SL_EXIT_OK;
    if (sl_session_init(&sess, &loop, opts->db, &err) != 0) {
        sl_error("%s", err.msg);
        uv_loop_close(&loop);
        return SL_EXIT_USAGE;
    }
    sl_job *target = only ? sl_jobset_find(jobs, only) : NULL;
    if (sl_session_connect(&sess, &err) != 0) {
        sl_error("%s", err.msg);
        code = SL_EXIT_FAILED;
    }
    for (size_t i = 0; code == SL_EXIT_OK && i < jobs->njobs; i++) {
        if (target && &jobs->jobs[i] != target)
            continue;
        if (sl_session_stopping(&sess)) {
            code = SL_EXIT_STOPPED;
            break;
        }
        code = sl_up_job(&sess, opts, &jobs->jobs[i]);
    }
    sl_session_close(&sess);
    if (uv_loop_close(&loop) != 0)
        sl_warn("BUG: a libuv handle was left open at exit");
    return code;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names of every job with a file in the jobs dir or a checkpoint file. */
static char **list_job_names(const sl_opts *opts, size_t *count)
{
    size_t n = 0, cap = 16;
    char **names = sl_calloc(cap, sizeof(char *));
    const char *dirs[2] = {opts->jobs_dir, opts->ckpt_dir};
    const char *exts[2] = {".sql", ".sluice"};
    for (int d = 0; d < 2; d++) {
        DIR *dir = opendir(dirs[d]);
        if (!dir)
            continue;
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            size_t len = strlen(de->d_name), el = strlen(exts[d]);
            if (len <= el || de->d_name[0] == '.' || strcmp(de->d_name + len - el, exts[d]) != 0)
                continue;
            char *name = sl_strndup(de->d_name, len - el);
            int dup = 0;
            for (size_t i = 0; i < n && !dup; i++)
                dup = strcmp(names[i], name) == 0;
            if (dup) {
                free(name);
                continue;
            }
            if (n == cap)
                names = sl_realloc(names, (cap *= 2) * sizeof(char *));
            names[n++] = name;
        }
        closedir(dir);
    }
    qsort(names, n, sizeof(char *), cmp_str);
    *count = n;
    return names;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Where the rows on-error skip set aside go: JSON objects, or text lines. */
typedef struct skipped_sink {
    int json;
    sl_buf buf;
} skipped_sink;

static int add_skipped(const char *key, const char *error, void *arg)
{
    skipped_sink *sink = arg;
    if (!sink->json) {
        sl_buf_printf(&sink->buf, "    skipped %s: %s\n", key, error ? error : "");
        return 0;
    }
    sl_buf_adds(&sink->buf, sink->buf.len ? ", {\"key\": " : "{\"key\": ");
    sl_buf_adds(&sink->buf, key);
    sl_buf_adds(&sink->buf, ", \"error\": ");
    sl_buf_add_json_str(&sink->buf, error);
    sl_buf_addc(&sink->buf, '}');
    return 0;
}

/* Read a job's summary, and into skipped (JSON objects, comma-separated)
 * the rows on-error skip set aside; a missing checkpoint file is a pending
 * job. */
static int read_summary(const sl_opts *opts, const char *name, sl_ckpt_job *out, skipped_sink *skipped, sl_err *err)
{
    memset(out, 0, sizeof *out);
    char *path = sl_ckpt_path(opts->ckpt_dir, name);
    sl_ckpt *ckpt = NULL;
    int rc = sl_ckpt_open(path, name, 0, &ckpt, err);
    if (rc == -2) {
        free(path);
        out->job = sl_strdup(name);
        out->state = SL_STATE_PENDING;
        return 0;
    }
    if (rc != 0) {
        free(path);
        return -1;
    }
    rc = sl_ckpt_get_job(ckpt, out, err);
    if (rc == 0)
        rc = sl_ckpt_each_skipped(ckpt, add_skipped, skipped, err);
    sl_ckpt_close(ckpt);
    /* "running" in a file no live runner holds: it was killed mid-run. */
    if (rc == 0 && out->state == SL_STATE_RUNNING && !sl_ckpt_locked(path))
        out->state = SL_STATE_STOPPED;
    free(path);
    return rc;
}

static void json_time(sl_buf *b, int64_t ms)
{
    char ts[32];
    sl_format_iso8601(ms, ts);
    sl_buf_add_json_str(b, ms > 0 ? ts : NULL);
}

static void status_json(sl_buf *b, const sl_ckpt_job *j, const char *file, const sl_buf *skipped)
{
    sl_buf_adds(b, "{\"job\": ");
    sl_buf_add_json_str(b, j->job);
    sl_buf_printf(b, ", \"state\": \"%s\", \"rows\": %" PRId64 ", \"chunks\": %" PRId64 ", \"last_key\": ",
                  sl_state_name(j->state), j->rows, j->chunks);
    sl_buf_adds(b, j->last_key ? j->last_key : "null");
    sl_buf_adds(b, ", \"error\": ");
    sl_buf_add_json_str(b, j->error);
    sl_buf_adds(b, ", \"started_at\": ");
    json_time(b, j->started_at_ms);
    sl_buf_adds(b, ", \"updated_at\": ");
    json_time(b, j->updated_at_ms);
    sl_buf_printf(b, ", \"affected\": %" PRId64 ", \"batch\": %" PRId64 ", \"checkpoint\": ", j->affected, j->batch);
    sl_buf_add_json_str(b, file);
    sl_buf_adds(b, ", \"skipped\": [");
    sl_buf_adds(b, skipped->data ? skipped->data : "");
    sl_buf_adds(b, "]}");
}

static void status_line(const sl_ckpt_job *j)
{
    char ts[32];
    sl_format_iso8601(j->updated_at_ms, ts);
    printf("%-40s %-12s %12" PRId64 " %8" PRId64 "  %-20s %s\n", j->job, sl_state_name(j->state), j->rows, j->chunks,
           j->last_key ? j->last_key : "-", ts[0] ? ts : "-");
    if (j->error)
        printf("    error: %s\n", j->error);
}

int sl_cmd_status(const sl_opts *opts, sl_jobset *jobs, const char *only)
{
    (void)jobs;
    size_t n;
    char **names = list_job_names(opts, &n);
    int code = SL_EXIT_OK, found = 0;
    sl_buf out = {0};
    sl_buf_adds(&out, "[");
    if (!opts->json)
        printf("%-40s %-12s %12s %8s  %-20s %s\n", "JOB", "STATE", "ROWS", "CHUNKS", "LAST KEY", "UPDATED");
    for (size_t i = 0; i < n; i++) {
        if (only && strcmp(names[i], only) != 0 &&
            !(strncmp(names[i], only, strlen(names[i])) == 0 && strcmp(only + strlen(names[i]), ".sql") == 0))
            continue;
        found = 1;
        sl_ckpt_job j;
        sl_err err = {{0}};
        skipped_sink skipped = {opts->json, {0}};
        if (read_summary(opts, names[i], &j, &skipped, &err) != 0) {
            sl_error("%s", err.msg);
            sl_buf_free(&skipped.buf);
            code = SL_EXIT_USAGE;
            continue;
        }
        char *file = sl_ckpt_path(opts->ckpt_dir, names[i]);
        if (opts->json) {
            if (out.len > 1)
                sl_buf_adds(&out, ",\n ");
            status_json(&out, &j, file, &skipped.buf);
        } else {
            status_line(&j);
            fputs(skipped.buf.data ? skipped.buf.data : "", stdout);
        }
        sl_buf_free(&skipped.buf);
        free(file);
        sl_ckpt_job_free(&j);
    }
    sl_buf_adds(&out, "]\n");
    if (opts->json)
        fputs(out.data, stdout);
    sl_buf_free(&out);
    if (only && !found) {
        sl_error("no job \"%s\" in %s or %s", only, opts->jobs_dir, opts->ckpt_dir);
        code = SL_EXIT_USAGE;
    }
    free_names(names, n);
    return code;
}

static int cmp_run(const void *a, const void *b)
{
    const sl_ckpt_run *x = a, *y = b;
    if (x->started_at_ms != y->started_at_ms)
        return x->started_at_ms < y->started_at_ms ? -1 : 1;
    return strcmp(x->job, y->job);
}

static void history_row(sl_buf *out, const sl_ckpt_run *r, int json)
{
    char st[32], en[32];
    sl_format_iso8601(r->started_at_ms, st);
    sl_format_iso8601(r->ended_at_ms, en);
    if (!json) {
        printf("%-20s %-20s %-32s %-6s %-12s %12" PRId64 " %8" PRId64 "%s%s\n", st, en[0] ? en : "-", r->job, r->kind,
               r->outcome, r->rows, r->chunks, r->error ? "  " : "", r->error ? r->error : "");
        return;
    }
    if (out->len > 1)
        sl_buf_adds(out, ",\n ");
    sl_buf_adds(out, "{\"job\": ");
    sl_buf_add_json_str(out, r->job);
    sl_buf_adds(out, ", \"kind\": ");
    sl_buf_add_json_str(out, r->kind);
    sl_buf_adds(out, ", \"outcome\": ");
    sl_buf_add_json_str(out, r->outcome);
    sl_buf_printf(out, ", \"rows\": %" PRId64 ", \"chunks\": %" PRId64 ", \"started_at\": ", r->rows, r->chunks);
    json_time(out, r->started_at_ms);
    sl_buf_adds(out, ", \"ended_at\": ");
    json_time(out, r->ended_at_ms);
    sl_buf_adds(out, ", \"error\": ");
    sl_buf_add_json_str(out, r->error);
    sl_buf_adds(out, "}");
}

int sl_cmd_history(const sl_opts *opts, sl_jobset *jobs)
{
    (void)jobs;
    size_t n, nall = 0;
    char **names = list_job_names(opts, &n);
    sl_ckpt_run *all = NULL;
    int code = SL_EXIT_OK;
    for (size_t i = 0; i < n; i++) {
        char *path = sl_ckpt_path(opts->ckpt_dir, names[i]);
        sl_ckpt *ckpt = NULL;
        sl_err err = {{0}};
        int rc = sl_ckpt_open(path, names[i], 0, &ckpt, &err);
        free(path);
        if (rc == -2)
            continue;
        sl_ckpt_run *runs = NULL;
        size_t nruns = 0;
        if (rc != 0 || sl_ckpt_list_runs(ckpt, &runs, &nruns, &err) != 0) {
            sl_error("%s", err.msg);
            code = SL_EXIT_USAGE;
        }
        if (ckpt)
            sl_ckpt_close(ckpt);
        all = sl_realloc(all, (nall + nruns + 1) * sizeof *all);
        memcpy(all + nall, runs, nruns * sizeof *runs);
        nall += nruns;
        free(runs);
    }
    qsort(all, nall, sizeof *all, cmp_run);
    sl_buf out = {0};
    sl_buf_adds(&out, "[");
    if (!opts->json)
        printf("%-20s %-20s %-32s %-6s %-12s %12s %8s\n", "STARTED", "ENDED", "JOB", "KIND", "OUTCOME", "ROWS",
               "CHUNKS");
    for (size_t i = 0; i < nall; i++) {
        history_row(&out, &all[i], opts->json);
        sl_ckpt_run_free(&all[i]);
    }
    sl_buf_adds(&out, "]\n");
    if (opts->json)
        fputs(out.data, stdout);
    sl_buf_free(&out);
    free(all);
    free_names(names, n);
    return code;
}
