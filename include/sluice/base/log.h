/* log.h: log lines as events: plain text (the default) or one JSON object a line (--log-format json).
 *
 * A log call that matters names its event and gives its fields:
 *
 *   sl_log_event(SL_LOG_WARN, "retry", json_pack("{sI sI}", "chunk", no, "attempt", n),
 *                "%s (transient; retrying)", msg);
 *
 * As text it prints the message as sl_log does. As JSON it prints, on
 * stderr, {"time": "...Z", "level": "warn", "job": "...", "event": "retry",
 * "msg": "...", "chunk": 7, "attempt": 2}: time in UTC with milliseconds,
 * job the one running (sl_log_set_job), then the event's own fields. Plain
 * sl_log lines become event "log". Strings are made visible as in text
 * logs (a control character is "\x1b" text), so a log viewer shows what a
 * terminal would. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <jansson.h>

#include "sluice/base/util.h"

typedef enum sl_log_format { SL_LOG_FORMAT_TEXT, SL_LOG_FORMAT_JSON } sl_log_format;

/* "text" or "json": 0, else -1. */
int sl_log_format_parse(const char *name, sl_log_format *out) SL_MUSTCHECK;
void sl_log_set_format(sl_log_format format);
sl_log_format sl_log_get_format(void);

/* The job the lines are about from now on (copied; NULL: none); in a fleet,
 * the lines about the target the running fiber works on (sl_log_owner). */
void sl_log_set_job(const char *job);
/* The target the lines are about: lines then carry "target" after "job"
 * (copied; NULL: none, and no key). Unset, a fleet's lines carry the
 * running fiber's (sl_log_owner). */
void sl_log_set_target(const char *target);

/* A log line that is an event: fields (a JSON object, or NULL) is taken
 * over and released. */
void sl_log_event(sl_log_level level, const char *event, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The text of one JSON log line (no newline), malloc'd: for the above and
 * for tests. fields is borrowed. */
char *sl_log_json_line(int64_t now_ms, sl_log_level level, const char *job, const char *event, const json_t *fields,
                       const char *msg);

/* ---- writing: a stderr nobody reads never blocks the event loop ----
 *
 * From sl_log_writer_start on, log lines (text and JSON) and the progress
 * display go to stderr through one thread of their own and a queue of up to
 * 1 MiB (logq.h), in the order they were made. A line is waited for while
 * stderr takes it (up to 100 ms), so it is out before the call returns as
 * before; once a write takes longer (a pipe nobody reads, a stuck journal,
 * a terminal on ^S), lines queue without waiting; once the queue is full
 * they are dropped and counted until the writer has caught up, and the next
 * line then comes after a warning line saying how many were dropped (event
 * "log_dropped", field "dropped", in JSON). Before
 * the start, and after a stop that emptied the queue, lines are written in
 * place. fd 2 itself is left as it is (never made non-blocking). */
void sl_log_writer_start(void);
/* Write what is queued, waiting at most wait_ms (a stuck pipe must not keep
 * a stopping runner alive), and stop the thread. When the writer is still
 * stuck, lines logged after this are dropped. For main's exit. */
void sl_log_writer_stop(int64_t wait_ms);
/* len bytes for stderr, through the writer when it runs: a log line with
 * its newline, or the progress display's bytes. */
void sl_log_write(const char *bytes, size_t len);

#endif
