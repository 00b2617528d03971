/* log.c: log lines as events, printed as text or as one JSON object a line. */
#include "sluice/base/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sluice/base/logq.h"

static sl_log_format log_format = SL_LOG_FORMAT_TEXT;
/* The format, for the writer thread's dropped-lines notice. */
static atomic_int log_format_json;
static char log_target[256];

/* Lines queued while the writer is stuck: a few MiB's worth would say no more. */
#define LOG_QUEUE_BYTES (1024 * 1024)
/* How long a line is waited for before the writer counts as stalled (logq.h). */
#define LOG_SYNC_MS 100

/* The writer (sl_log_writer_start): NULL before it and after it stopped. */
static sl_logq *log_queue;
/* The writer was left blocked in a write at its stop: writing more would block too. */
static int log_queue_stuck;

/* The job each target's fiber runs now ("" the owner of a single database):
 * a fleet runs up to 64 targets at once, each with a job of its own. */
#define MAX_OWNERS 65
static struct {
    char owner[128], job[256];
} log_jobs[MAX_OWNERS];

static const char *owner_now(void)
{
    const char *owner = sl_log_owner();
    return owner ? owner : "";
}

static const char *job_now(void)
{
    const char *owner = owner_now();
    for (size_t i = 0; i < MAX_OWNERS; i++)
        if (log_jobs[i].job[0] && strcmp(log_jobs[i].owner, owner) == 0)
            return log_jobs[i].job;
    return "";
}

int sl_log_format_parse(const char *name, sl_log_format *out)
{
    if (name && strcmp(name, "text") == 0)
        *out = SL_LOG_FORMAT_TEXT;
    else if (name && strcmp(name, "json") == 0)
        *out = SL_LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

sl_log_format sl_log_get_format(void)
{
    return log_format;
}

void sl_log_set_job(const char *job)
{
    const char *owner = owner_now();
    size_t slot = MAX_OWNERS;
    for (size_t i = 0; i < MAX_OWNERS; i++) {
        if (log_jobs[i].job[0] && strcmp(log_jobs[i].owner, owner) == 0) {
            slot = i;
            break;
        }
        if (!log_jobs[i].job[0] && slot == MAX_OWNERS)
            slot = i;
    }
    if (slot == MAX_OWNERS)
        return; /* more at once than a fleet runs: the line goes without its job */
    snprintf(log_jobs[slot].owner, sizeof log_jobs[slot].owner, "%s", owner);
    snprintf(log_jobs[slot].job, sizeof log_jobs[slot].job, "%s", job ? job : "");
}

void sl_log_set_target(const char *target)
{
    snprintf(log_target, sizeof log_target, "%s", target ? target : "");
}

/* s as a log shows it: controls and bytes that are not UTF-8 as escapes,
 * so the string is valid UTF-8 that jansson takes. */
static json_t *visible(const char *s)
{
    sl_buf b = {0};
    sl_buf_add_visible(&b, s, strlen(s), 0);
    json_t *v = json_string(b.data ? b.data : "");
    sl_buf_free(&b);
    return v ? v : json_string("");
}

static json_t *visible_value(const json_t *v)
{
    return json_is_string(v) ? visible(json_string_value(v)) : json_deep_copy(v);
}

static const char *level_name(sl_log_level level)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    return level >= SL_LOG_DEBUG && level <= SL_LOG_ERROR ? names[level] : "info";
}

static void format_time(int64_t ms, char out[40])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 40, "%s.%03dZ", base, (int)(ms % 1000));
}

static char *json_line(int64_t now_ms, sl_log_level level, const char *job, const char *target, const char *event,
                       const json_t *fields, const char *msg)
{
    char ts[40];
    format_time(now_ms, ts);
    json_t *o = json_object();
    json_object_set_new(o, "time", json_string(ts));
    json_object_set_new(o, "level", json_string(level_name(level)));
    json_object_set_new(o, "job", job && *job ? visible(job) : json_null());
    if (target && target[0])
        json_object_set_new(o, "target", visible(target));
    json_object_set_new(o, "event", visible(event));
    json_object_set_new(o, "msg", visible(msg ? msg : ""));
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)fields, key, value)
    {
        if (!json_object_get(o, key)) /* the line's own keys stay what they are */
            json_object_set_new(o, key, visible_value(value));
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(o);
    char *out = sl_strdup(text ? text : "{}");
    free(text);
    return out;
}

char *sl_log_json_line(int64_t now_ms, sl_log_level level, const char *job, const char *event, const json_t *fields,
                       const char *msg)
{
    return json_line(now_ms, level, job, log_target[0] ? log_target : sl_log_owner(), event, fields, msg);
}

void sl_log_write(const char *bytes, size_t len)
{
    if (log_queue) {
        (void)sl_logq_put(log_queue, bytes, len); /* dropped: counted, and told once the writer catches up */
    } else if (!log_queue_stuck) {
        fwrite(bytes, 1, len, stderr);
        fflush(stderr);
    }
}

static void print_json(sl_log_level level, const char *event, const json_t *fields, const char *msg)
{
    char *line = sl_log_json_line(sl_now_ms(), level, job_now(), event, fields, msg);
    size_t len = strlen(line);
    line = sl_realloc(line, len + 2);
    line[len] = '\n';
    line[len + 1] = '\0';
    sl_log_write(line, len + 1);
    free(line);
}

/* Plain sl_log lines, while the format is JSON. */
static void json_sink(sl_log_level level, const char *msg)
{
    print_json(level, "log", NULL, msg);
}

/* Plain sl_log lines as text while the writer runs: as util.c prints them
 * itself (sl_log_text_line), handed to the writer. */
static void text_sink(sl_log_level level, const char *msg)
{
    sl_buf out = {0};
    sl_log_text_line(&out, level, sl_log_owner(), msg);
    sl_log_write(out.data, out.len);
    sl_buf_free(&out);
}

static void apply_sink(void)
{
    if (log_format == SL_LOG_FORMAT_JSON)
        sl_log_set_sink(json_sink);
    else
        sl_log_set_sink(log_queue || log_queue_stuck ? text_sink : NULL);
}

void sl_log_set_format(sl_log_format format)
{
    log_format = format;
    atomic_store(&log_format_json, format == SL_LOG_FORMAT_JSON);
    apply_sink();
}

/* The writer thread's line for lines it dropped, in the format in use. It
 * runs on that thread: no job or target (the loop's), and nothing the loop
 * changes but the format. */
static char *dropped_notice(uint64_t dropped)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%llu log lines dropped: stderr was not taking them (whatever reads it stalled)",
             (unsigned long long)dropped);
    sl_buf out = {0};
    if (atomic_load(&log_format_json)) {
        json_t *fields = json_pack("{sI}", "dropped", (json_int_t)dropped);
        char *line = json_line(sl_now_ms(), SL_LOG_WARN, NULL, NULL, "log_dropped", fields, msg);
        json_decref(fields);
        sl_buf_adds(&out, line);
        free(line);
    } else {
        if (!isatty(STDERR_FILENO)) {
            char ts[32];
            sl_format_iso8601(sl_now_ms(), ts);
            sl_buf_printf(&out, "%s ", ts);
        }
        sl_buf_printf(&out, "sluice: warning: %s", msg);
    }
    sl_buf_addc(&out, '\n');
    return sl_buf_take(&out);
}

void sl_log_writer_start(void)
{
    if (log_queue)
        return;
    log_queue = sl_logq_new(STDERR_FILENO, LOG_QUEUE_BYTES, LOG_SYNC_MS, dropped_notice);
    log_queue_stuck = 0;
    apply_sink();
}

void sl_log_writer_stop(int64_t wait_ms)
{
    if (!log_queue)
        return;
    sl_logq *q = log_queue;
    log_queue = NULL;
    log_queue_stuck = sl_logq_free(q, wait_ms) != 0;
    apply_sink();
}

void sl_log_event(sl_log_level level, const char *event, json_t *fields, const char *fmt, ...)
{
    if (!sl_log_enabled(level)) {
        json_decref(fields);
        return;
    }
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log_format == SL_LOG_FORMAT_JSON)
        print_json(level, event, fields, msg);
    else
        sl_log(level, "%s", msg);
    json_decref(fields);
}
