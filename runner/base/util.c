/* util.c: errors, buffers, parsing of numbers and durations, time, logging. */
#include "sluice/base/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void sl_err_set(sl_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

void sl_err_append(sl_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    size_t used = strnlen(err->msg, sizeof err->msg);
    if (used > 0 && used + 1 < sizeof err->msg)
        err->msg[used++] = '\n';
    if (used >= sizeof err->msg - 1)
        return; /* full: the first errors are the ones worth reading */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + used, sizeof err->msg - used, fmt, ap);
    va_end(ap);
}

static void oom(void)
{
    static const char msg[] = "sluice: out of memory\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    abort();
}

void *sl_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *sl_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *sl_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        oom();
    return p;
}

char *sl_strdup(const char *s)
{
    return sl_strndup(s, strlen(s));
}

char *sl_strdup_or_null(const char *s)
{
    return s ? sl_strdup(s) : NULL;
}

char *sl_strndup(const char *s, size_t len)
{
    char *p = sl_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static void buf_reserve(sl_buf *buf, size_t extra)
{
    if (buf->len + extra + 1 <= buf->cap)
        return;
    size_t cap = buf->cap ? buf->cap : 64;
    while (cap < buf->len + extra + 1)
        cap *= 2;
    buf->data = sl_realloc(buf->data, cap);
    buf->cap = cap;
}

void sl_buf_add(sl_buf *buf, const char *data, size_t len)
{
    buf_reserve(buf, len);
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
}

void sl_buf_adds(sl_buf *buf, const char *s)
{
    sl_buf_add(buf, s, strlen(s));
}

void sl_buf_addc(sl_buf *buf, char c)
{
    sl_buf_add(buf, &c, 1);
}

static void buf_vprintf(sl_buf *buf, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int need = vsnprintf(NULL, 0, fmt, ap);
    if (need > 0) {
        buf_reserve(buf, (size_t)need);
        vsnprintf(buf->data + buf->len, (size_t)need + 1, fmt, ap2);
        buf->len += (size_t)need;
    }
    va_end(ap2);
}

void sl_buf_printf(sl_buf *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(buf, fmt, ap);
    va_end(ap);
}

char *sl_asprintf(const char *fmt, ...)
{
    sl_buf buf = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&buf, fmt, ap);
    va_end(ap);
    return sl_buf_take(&buf);
}

void sl_buf_add_json_str(sl_buf *buf, const char *s)
{
    if (!s) {
        sl_buf_adds(buf, "null");
        return;
    }
    sl_buf_addc(buf, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sl_buf_adds(buf, "\\\""); break;
        case '\\': sl_buf_adds(buf, "\\\\"); break;
        case '\n': sl_buf_adds(buf, "\\n"); break;
        case '\r': sl_buf_adds(buf, "\\r"); break;
        case '\t': sl_buf_adds(buf, "\\t"); break;
        default:
            if (*p < 0x20)
                sl_buf_printf(buf, "\\u%04x", *p);
            else
                sl_buf_addc(buf, (char)*p);
        }
    }
    sl_buf_addc(buf, '"');
}

size_t sl_utf8_decode(const char *str, size_t avail, uint32_t *code)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t n;
    uint32_t min;
    if (avail == 0)
        return 0;
    if (s[0] < 0x80) {
        *code = s[0];
        return 1;
    } else if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        n = 2, min = 0x80, *code = s[0] & 0x1Fu;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        n = 3, min = 0x800, *code = s[0] & 0x0Fu;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        n = 4, min = 0x10000, *code = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (n > avail)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        *code = (*code << 6) | (s[i] & 0x3Fu);
    }
    if (*code < min || *code > 0x10FFFF || (*code >= 0xD800 && *code <= 0xDFFF))
        return 0;
    return n;
}

/* Characters that move the cursor, recolour or reorder what a terminal
 * shows: C0 and C1 controls, DEL, and the bidirectional overrides. */
static int is_hidden_control(uint32_t code, int one_line)
{
    return (code < 0x20 && (code != '\n' || one_line) && code != '\t') || (code >= 0x7F && code <= 0x9F) ||
           (code >= 0x202A && code <= 0x202E) || (code >= 0x2066 && code <= 0x2069);
}

void sl_buf_add_visible(sl_buf *buf, const char *s, size_t len, int one_line)
{
    for (size_t i = 0; i < len;) {
        uint32_t code;
        size_t n = sl_utf8_decode(s + i, len - i, &code);
        if (n == 0 || (n == 1 && is_hidden_control(code, one_line))) {
            sl_buf_printf(buf, "\\x%02x", (unsigned char)s[i]); /* a control byte, or a byte that is not UTF-8 */
            i++;
        } else if (is_hidden_control(code, one_line)) {
            sl_buf_printf(buf, "\\u%04x", (unsigned)code);
            i += n;
        } else {
            sl_buf_add(buf, s + i, n);
            i += n;
        }
    }
}

void sl_fputs_visible(const char *s, FILE *f)
{
    if (!s) {
        fputs("NULL", f);
        return;
    }
    sl_buf b = {0};
    sl_buf_add_visible(&b, s, strlen(s), 1);
    fputs(b.data ? b.data : "", f);
    sl_buf_free(&b);
}

char *sl_buf_take(sl_buf *buf)
{
    char *p = buf->data ? buf->data : sl_strdup("");
    buf->data = NULL;
    buf->len = buf->cap = 0;
    return p;
}

void sl_buf_reset(sl_buf *buf)
{
    buf->len = 0;
    if (buf->data)
        buf->data[0] = '\0';
}

void sl_buf_free(sl_buf *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

int sl_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return -1;
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q) && *q != '_')
            return -1;
    /* underscores as digit separators ("1_000_000") are accepted */
    char digits[32];
    size_t n = 0;
    for (const char *q = s; *q; q++) {
        if (*q == '_')
            continue;
        if (n + 1 >= sizeof digits)
            return -1;
        digits[n++] = *q;
    }
    digits[n] = '\0';
    errno = 0;
    char *end = NULL;
    long long v = strtoll(digits, &end, 10);
    if (errno || !end || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int sl_parse_duration(const char *s, int64_t *out_ms)
{
    if (!s)
        return -1;
    size_t i = 0;
    while (isdigit((unsigned char)s[i]))
        i++;
    if (i == 0 || i > 12)
        return -1;
    char num[16];
    memcpy(num, s, i);
    num[i] = '\0';
    int64_t v;
    if (sl_parse_int(num, 0, INT64_C(999999999999), &v) != 0)
        return -1;
    const char *unit = s + i;
    int64_t mult;
    if (strcmp(unit, "ms") == 0)
        mult = 1;
    else if (strcmp(unit, "s") == 0)
        mult = 1000;
    else if (strcmp(unit, "m") == 0 || strcmp(unit, "min") == 0)
        mult = 60 * 1000;
    else if (strcmp(unit, "h") == 0)
        mult = 3600 * 1000;
    else
        return -1;
    if (v > INT64_C(1) << 40)
        return -1;
    *out_ms = v * mult;
    return 0;
}

void sl_format_duration(int64_t ms, char *out, size_t outsz)
{
    if (ms < 1000 || ms % 1000 != 0) {
        if (ms < 1000)
            snprintf(out, outsz, "%lldms", (long long)ms);
        else
            snprintf(out, outsz, "%.1fs", (double)ms / 1000.0);
        return;
    }
    int64_t s = ms / 1000;
    if (s < 60)
        snprintf(out, outsz, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(out, outsz, s % 60 ? "%lldm%llds" : "%lldm", (long long)(s / 60), (long long)(s % 60));
    else
        snprintf(out, outsz, (s % 3600) / 60 ? "%lldh%lldm" : "%lldh", (long long)(s / 3600),
                 (long long)((s % 3600) / 60));
}

void sl_checksum_hex(const void *data, size_t len, char out[17])
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

int64_t sl_machine_boot(void)
{
    char id[64] = "", hex[17];
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!f)
        return 0;
    size_t n = fread(id, 1, sizeof id - 1, f);
    fclose(f);
    id[strcspn(id, "\n")] = '\0';
    if (n == 0 || !id[0])
        return 0;
    sl_checksum_hex(id, strlen(id), hex);
    hex[15] = '\0'; /* 60 bits: positive */
    int64_t v = strtoll(hex, NULL, 16);
    return v > 0 ? v : 1;
}

int64_t sl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sl_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sl_format_iso8601(int64_t ms, char out[32])
{
    if (ms <= 0) {
        out[0] = '\0';
        return;
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

size_t sl_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return la > lb ? la : lb;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* What a path that is not a regular file is, for the message refusing it. */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

/* Refuse anything but a regular file of at most SL_FILE_MAX bytes: a FIFO
 * would block the reader forever and /dev/zero never ends. */
static int check_file(const char *path, const struct stat *st, sl_err *err)
{
    if (!S_ISREG(st->st_mode)) {
        sl_err_set(err, "%s: cannot read it: it is %s, not a regular file (hint: give a plain file)", path,
                   file_kind(st->st_mode));
        return -1;
    }
    if (st->st_size > SL_FILE_MAX) {
        sl_err_set(err, "%s: too large to read: %lld bytes, the limit is %d bytes (16 MiB)", path,
                   (long long)st->st_size, SL_FILE_MAX);
        return -1;
    }
    return 0;
}

/* Read fd to its end, but never more than SL_FILE_MAX bytes (the file may
 * grow after fstat). */
static int read_all(int fd, const char *path, sl_buf *buf, sl_err *err)
{
    char chunk[8192];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            sl_err_set(err, "%s: read error: %s", path, strerror(errno));
            return -1;
        }
        if (n == 0)
            return 0;
        if (buf->len + (size_t)n > SL_FILE_MAX) {
            sl_err_set(err, "%s: too large to read: more than %d bytes (16 MiB)", path, SL_FILE_MAX);
            return -1;
        }
        sl_buf_add(buf, chunk, (size_t)n);
    }
}

int sl_file_check(const char *path, sl_err *err)
{
    struct stat st;
    /* stat before open: opening some devices does something by itself */
    if (stat(path, &st) != 0) {
        sl_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    return check_file(path, &st, err);
}

int sl_read_file(const char *path, char **out, size_t *out_len, sl_err *err)
{
    if (sl_file_check(path, err) != 0)
        return -1;
    struct stat st;
    /* O_NONBLOCK: should a FIFO have taken the file's place since, open
     * does not wait for a writer; fstat then refuses it */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        sl_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    sl_buf buf = {0};
    int rc = -1;
    if (fstat(fd, &st) != 0)
        sl_err_set(err, "%s: cannot stat: %s", path, strerror(errno));
    else if (check_file(path, &st, err) == 0)
        rc = read_all(fd, path, &buf, err);
    close(fd);
    if (rc != 0) {
        sl_buf_free(&buf);
        return -1;
    }
    *out_len = buf.len;
    *out = sl_buf_take(&buf);
    return 0;
}

/* ---- logging ---- */

static sl_log_level log_min = SL_LOG_INFO;
static int log_level_init;
static void (*log_before)(void);
static void (*log_after)(void);
static void (*log_sink)(sl_log_level level, const char *msg);

void sl_log_set_level(sl_log_level level)
{
    log_min = level;
    log_level_init = 1;
}

static const char *(*log_prefix)(void);

void sl_log_set_prefix(const char *(*prefix)(void))
{
    log_prefix = prefix;
}

const char *sl_log_owner(void)
{
    return log_prefix ? log_prefix() : NULL;
}

void sl_log_set_hooks(void (*before)(void), void (*after)(void))
{
    log_before = before;
    log_after = after;
}

void sl_log_set_sink(void (*sink)(sl_log_level level, const char *msg))
{
    log_sink = sink;
}

int sl_log_enabled(sl_log_level level)
{
    if (!log_level_init) {
        const char *dbg = getenv("SLUICE_DEBUG");
        if (dbg && *dbg && strcmp(dbg, "0") != 0)
            log_min = SL_LOG_DEBUG;
        log_level_init = 1;
    }
    return level >= log_min;
}

void sl_logv(sl_log_level level, const char *fmt, va_list ap)
{
    if (!sl_log_enabled(level))
        return;
    char line[4096];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    if (log_sink) { /* it says where the line comes from its own way (sl_log_owner) */
        if (log_before)
            log_before();
        log_sink(level, line);
        if (log_after)
            log_after();
        return;
    }
    sl_buf out = {0};
    sl_log_text_line(&out, level, sl_log_owner(), line);
    if (log_before)
        log_before();
    fputs(out.data, stderr);
    fflush(stderr);
    sl_buf_free(&out);
    if (log_after)
        log_after();
}

void sl_log_text_line(sl_buf *out, sl_log_level level, const char *owner, const char *msg)
{
    static const char *const names[] = {"debug: ", "", "warning: ", "error: "};
    sl_buf raw = {0};
    /* every line its owner's: a fleet's targets log at once, and a hint must say whose it is */
    for (const char *at = msg; at;) {
        const char *nl = strchr(at, '\n');
        if (owner)
            sl_buf_printf(&raw, "[%s] ", owner);
        sl_buf_add(&raw, at, nl ? (size_t)(nl - at + 1) : strlen(at));
        at = nl ? nl + 1 : NULL;
    }
    if (!isatty(STDERR_FILENO)) {
        char ts[32];
        sl_format_iso8601(sl_now_ms(), ts);
        sl_buf_printf(out, "%s ", ts);
    }
    sl_buf_printf(out, "sluice: %s", level >= SL_LOG_DEBUG && level <= SL_LOG_ERROR ? names[level] : "");
    /* a job's name, a value or a server's error text may hold anything: it
     * must not reach the terminal as an escape sequence */
    sl_buf_add_visible(out, raw.data ? raw.data : "", raw.len, 0);
    sl_buf_addc(out, '\n');
    sl_buf_free(&raw);
}

void sl_log(sl_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_logv(level, fmt, ap);
    va_end(ap);
}
