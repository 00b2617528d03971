/* log.c: log lines as events, printed as text or as one JSON object a line. */
#include "sluice/base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static sl_log_format log_format = SL_LOG_FORMAT_TEXT;
static char log_target[256];

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

char *sl_log_json_line(int64_t now_ms, sl_log_level level, const char *job, const char *event, const json_t *fields,
                       const char *msg)
{
    char ts[40];
    format_time(now_ms, ts);
    json_t *o = json_object();
    json_object_set_new(o, "time", json_string(ts));
    json_object_set_new(o, "level", json_string(level_name(level)));
    json_object_set_new(o, "job", job && *job ? visible(job) : json_null());
    const char *target = log_target[0] ? log_target : sl_log_owner();
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

static void print_json(sl_log_level level, const char *event, const json_t *fields, const char *msg)
{
    char *line = sl_log_json_line(sl_now_ms(), level, job_now(), event, fields, msg);
    fputs(line, stderr);
    fputc('\n', stderr);
    fflush(stderr);
    free(line);
}

/* Plain sl_log lines, while the format is JSON. */
static void json_sink(sl_log_level level, const char *msg)
{
    print_json(level, "log", NULL, msg);
}

void sl_log_set_format(sl_log_format format)
{
    log_format = format;
    sl_log_set_sink(format == SL_LOG_FORMAT_JSON ? json_sink : NULL);
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
