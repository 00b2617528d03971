/* util.h: errors, growable buffers, number and duration parsing, JSON escaping, logging. */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SL_MUSTCHECK    __attribute__((warn_unused_result))
#define SL_PRINTF(a, b) __attribute__((format(printf, a, b), nonnull(a)))

/* Exit codes, README "Exit codes". */
enum {
    SL_EXIT_OK = 0,
    SL_EXIT_FAILED = 1,  /* a job failed; state saved, resumable */
    SL_EXIT_USAGE = 2,   /* bad usage, invalid job file, refused precondition; nothing changed */
    SL_EXIT_STOPPED = 3, /* stopped before done; resumable */
};

/* Named results of the fallible functions (libuv's UV_E* are the model):
 * SL_OK, or what went otherwise. A command turns them into an exit code
 * (SL_EXIT_*): refused is SL_EXIT_USAGE, stopped SL_EXIT_STOPPED, the rest
 * SL_EXIT_FAILED. Which results a function returns is said above it. */
typedef enum sl_rc {
    SL_OK = 0,
    SL_STOPPED = 1,    /* stopped before done (a signal, --no-wait outside the windows): resumable */
    SL_EFAIL = -1,     /* failed: the err it was given says why */
    SL_EREFUSED = -2,  /* refused before it changed anything (another runner holds it, a check failed...) */
    SL_ECONFLICT = -3, /* down: rows someone else changed since the job wrote them */
} sl_rc;

/* A caller-supplied error. Fallible functions return 0 or a negative value
 * and, on failure, fill msg with one or more lines (lower case, "what failed
 * and where", optional "hint: ..." lines). */
typedef struct sl_err {
    char msg[4096];
} sl_err;

/* Replace err's message. */
void sl_err_set(sl_err *err, const char *fmt, ...) SL_PRINTF(2, 3);
/* Append a new line to err's message (used to collect several errors). */
void sl_err_append(sl_err *err, const char *fmt, ...) SL_PRINTF(2, 3);

/* Allocation that aborts the process with a message on out-of-memory:
 * nothing in sluice can continue meaningfully without memory, and every
 * durable state is already committed before any allocation that matters. */
void *sl_malloc(size_t size);
void *sl_calloc(size_t count, size_t size);
void *sl_realloc(void *ptr, size_t size);
char *sl_strdup(const char *s);
/* sl_strdup, or NULL for NULL. */
char *sl_strdup_or_null(const char *s);
char *sl_strndup(const char *s, size_t len);
/* malloc'd printf. */
char *sl_asprintf(const char *fmt, ...) SL_PRINTF(1, 2);

/* Growable NUL-terminated byte buffer. A zeroed struct is a valid empty buffer. */
typedef struct sl_buf {
    char *data; /* NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
} sl_buf;

void sl_buf_add(sl_buf *buf, const char *data, size_t len);
void sl_buf_adds(sl_buf *buf, const char *s);
void sl_buf_addc(sl_buf *buf, char c);
void sl_buf_printf(sl_buf *buf, const char *fmt, ...) SL_PRINTF(2, 3);
/* Append s as a JSON string literal, with quotes; NULL appends null. */
void sl_buf_add_json_str(sl_buf *buf, const char *s);
/* Length of the UTF-8 sequence at s (at most avail bytes), with its code
 * point in *code, or 0 when it is not valid UTF-8 (RFC 3629: a stray
 * continuation byte, a sequence cut short, an overlong form, a UTF-16
 * surrogate, or beyond U+10FFFF). */
size_t sl_utf8_decode(const char *s, size_t avail, uint32_t *code);
/* Append s[0..len) for a terminal or a log: control characters (but for
 * tab, and newline unless one_line), DEL, bytes that are not UTF-8 and the
 * bidirectional overrides become visible escapes (ESC is \x1b, U+009B
 * \u009b), so text from a job file, the database or a socket cannot drive
 * the terminal. Other UTF-8 text is kept as it is. */
void sl_buf_add_visible(sl_buf *buf, const char *s, size_t len, int one_line);
/* Write s to f as sl_buf_add_visible shows it on one line ("NULL" for NULL):
 * for what a database said (a value, a plan line, an error) on stdout. */
void sl_fputs_visible(const char *s, FILE *f);
/* Give up the buffer's memory to the caller (never NULL: "" for empty). */
char *sl_buf_take(sl_buf *buf);
void sl_buf_reset(sl_buf *buf);
void sl_buf_free(sl_buf *buf);

/* Parse a whole decimal integer in [min, max]. Returns 0 or -1. */
int sl_parse_int(const char *s, int64_t min, int64_t max, int64_t *out) SL_MUSTCHECK;
/* Parse a duration "250ms", "2s", "5m", "1h" (a whole number and a unit)
 * into milliseconds. Returns 0 or -1. */
int sl_parse_duration(const char *s, int64_t *out_ms) SL_MUSTCHECK;
/* Format milliseconds the way durations are written: "250ms", "2s", "1m30s". */
void sl_format_duration(int64_t ms, char *out, size_t outsz);

/* 64-bit FNV-1a of data, as 16 lower-case hex digits and a NUL. */
void sl_checksum_hex(const void *data, size_t len, char out[17]);

/* A positive number for this machine's boot (from Linux's boot id): another
 * after each restart of the machine. 0 when it cannot be read. */
int64_t sl_machine_boot(void);

/* Wall-clock milliseconds since the epoch, and monotonic milliseconds. */
int64_t sl_now_ms(void);
int64_t sl_mono_ms(void);
/* "2026-11-24T10:00:07Z" (UTC) for a wall-clock time in ms; "" for 0. */
void sl_format_iso8601(int64_t ms, char out[32]);

/* Levenshtein distance, for "did you mean" hints. */
size_t sl_edit_distance(const char *a, const char *b);

/* The largest file sl_read_file reads: job files are small. */
#define SL_FILE_MAX (16 * 1024 * 1024)

/* Read a whole regular file of at most SL_FILE_MAX bytes. A directory, FIFO,
 * device or socket (also through a symlink) is refused without reading it,
 * and a FIFO without waiting for a writer. Returns 0 or -1 (err names the
 * path and says what is wrong). */
int sl_read_file(const char *path, char **out, size_t *out_len, sl_err *err) SL_MUSTCHECK;
/* What sl_read_file would refuse, without reading: 0, or -1 with its err. */
int sl_file_check(const char *path, sl_err *err) SL_MUSTCHECK;

/* ---- logging ----
 * Log lines go to stderr: "sluice: <message>" on a terminal, and with a UTC
 * timestamp otherwise. A progress line on a terminal is cleared before a log
 * line and redrawn after it (see progress.h). */
typedef enum sl_log_level { SL_LOG_DEBUG, SL_LOG_INFO, SL_LOG_WARN, SL_LOG_ERROR } sl_log_level;

void sl_log(sl_log_level level, const char *fmt, ...) SL_PRINTF(2, 3);
void sl_logv(sl_log_level level, const char *fmt, va_list ap);
/* Minimum level printed (default SL_LOG_INFO; SLUICE_DEBUG=1 lowers it). */
void sl_log_set_level(sl_log_level level);
/* Where a line comes from, put before it as "[NAME] " (a fleet's target);
 * prefix returns NULL for none. */
void sl_log_set_prefix(const char *(*prefix)(void));
/* The name the prefix gives now (the target the running fiber is about), or
 * NULL: JSON lines carry it as "target", metrics as a label. */
const char *sl_log_owner(void);
/* A log line as text goes to stderr, into out: a UTC time first when stderr
 * is not a terminal, "sluice: ", the level ("warning: "), and each line of
 * msg after "[OWNER] " (owner NULL: none), controls made visible. */
void sl_log_text_line(sl_buf *out, sl_log_level level, const char *owner, const char *msg);
/* Hooks the progress display uses to clear and redraw its line. */
void sl_log_set_hooks(void (*before)(void), void (*after)(void));
/* 1 when a line at level is printed (the minimum level above). */
int sl_log_enabled(sl_log_level level);
/* Hand every line to sink (its message as formatted, controls not yet made
 * visible) instead of printing it as text; NULL prints text again. log.h's
 * JSON lines use it. */
void sl_log_set_sink(void (*sink)(sl_log_level level, const char *msg));

#define sl_info(...)  sl_log(SL_LOG_INFO, __VA_ARGS__)
#define sl_warn(...)  sl_log(SL_LOG_WARN, __VA_ARGS__)
#define sl_error(...) sl_log(SL_LOG_ERROR, __VA_ARGS__)

#endif
