/* job_values.c: what each directive's value may be, and one parser per kind (durations, sizes, windows, undo...). */
#include "sluice/jobs/job.h"
#include "sluice/jobs/keys.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "job_internal.h"

/* lock_timeout and statement_timeout are ints of milliseconds in PostgreSQL
 * (guc_tables.c): a longer value parses here but fails every chunk. */
#define PG_TIMEOUT_LIMIT "2147483647ms (about 596h), the most PostgreSQL takes"

typedef int (*directive_fn)(parser *p, sl_directive d, const char *value);

static int parse_table(parser *p, sl_directive d, const char *value);
static int parse_key(parser *p, sl_directive d, const char *value);
static int parse_sql(parser *p, sl_directive d, const char *value);
static int parse_number(parser *p, sl_directive d, const char *value);
static int parse_duration(parser *p, sl_directive d, const char *value);
static int parse_window(parser *p, sl_directive d, const char *value);
static int parse_on_error(parser *p, sl_directive d, const char *value);
static int parse_undo(parser *p, sl_directive d, const char *value);
static int parse_end(parser *p, sl_directive d, const char *value);
static int parse_size(parser *p, sl_directive d, const char *value);
static int parse_percent(parser *p, sl_directive d, const char *value);
static int parse_on_off(parser *p, sl_directive d, const char *value);

static const struct directive_def {
    const char *name;
    const char *expects; /* completes "NAME expects ..." */
    directive_fn parse;
    int64_t min, max;  /* for numbers and durations (ms) */
    const char *limit; /* why max is what it is, when it is not a choice of ours */
} directive_defs[SL_DIR_COUNT] = {
    [SL_DIR_TABLE] = {"table", "a table name such as users, app.users or \"Users\"", parse_table, 0, 0},
    [SL_DIR_KEY] = {"key", "column names separated by commas, such as id or tenant_id, id", parse_key, 0, 0},
    [SL_DIR_WHERE] = {"where", "an SQL condition such as deleted_at IS NULL", parse_sql, 0, 0},
    [SL_DIR_BATCH] = {"batch", "a whole number of rows from 1 to 10000000", parse_number, 1, 10000000},
    [SL_DIR_CHUNK_TIME] = {"chunk-time", "a duration greater than zero such as 500ms, 2s or 1m", parse_duration, 1,
                           INT64_MAX},
    [SL_DIR_PAUSE] = {"pause", "a duration such as 0s, 250ms or 1s", parse_duration, 0, INT64_MAX},
    [SL_DIR_MAX_RATE] = {"max-rate", "a whole number of rows per second, at least 1", parse_number, 1,
                         INT64_C(1000000000000)},
    [SL_DIR_WINDOW] = {"window", "time ranges HH:MM-HH:MM separated by commas, such as 22:00-06:00", parse_window, 0,
                       0},
    [SL_DIR_LOCK_TIMEOUT] = {"lock-timeout", "a duration greater than zero such as 500ms or 2s", parse_duration, 1,
                             SL_MAX_TIMEOUT_MS, PG_TIMEOUT_LIMIT},
    [SL_DIR_STATEMENT_TIMEOUT] = {"statement-timeout", "a duration greater than zero such as 30s or 5m", parse_duration,
                                  1, SL_MAX_TIMEOUT_MS, PG_TIMEOUT_LIMIT},
    [SL_DIR_RETRIES] = {"retries", "a whole number of attempts from 0 to 100", parse_number, 0, 100},
    [SL_DIR_ON_ERROR] = {"on-error", "stop or skip", parse_on_error, 0, 0},
    [SL_DIR_UNDO] = {"undo", "snapshot(COL, ...), snapshot(*) or down", parse_undo, 0, 0},
    [SL_DIR_WORKERS] = {"workers", "a whole number of workers from 1 to 64", parse_number, 1, 64},
    [SL_DIR_MAX_REPLICA_LAG] = {"max-replica-lag", "a duration greater than zero such as 10s", parse_duration, 1,
                                INT64_MAX},
    [SL_DIR_THROTTLE_QUERY] = {"throttle-query", "an SQL query that returns true while sluice should wait", parse_sql,
                               0, 0},
    [SL_DIR_REQUIRES] = {"requires", "an SQL query that returns true when the job may start", parse_sql, 0, 0},
    [SL_DIR_END] = {"end",
                    "fixed (the walk ends at the key's last value when the job began) or follow (it also "
                    "walks rows inserted past it)",
                    parse_end, 0, 0},
    [SL_DIR_MAX_WAL_RATE] =
        {"max-wal-rate",
         "an amount of WAL per second such as 500kB, 50MB or 1GB, at most 1024TB (units of 1024, as "
         "PostgreSQL's)",
         parse_size, 1, INT64_C(1) << 50},
    [SL_DIR_MAX_DEAD_TUPLES] = {"max-dead-tuples", "a share of the table's live rows such as 20% (from 0.01% to 1000%)",
                                parse_percent, 1, 100000},
    [SL_DIR_VERIFY] = {"verify", "an SQL query that returns true once the job has done what it should", parse_sql, 0,
                       0},
    [SL_DIR_SYNCHRONOUS_COMMIT] = {"synchronous-commit",
                                   "off (chunks commit without waiting for the disk) or on (each chunk's commit "
                                   "waits as the server's synchronous_commit says)",
                                   parse_on_off, 0, 0},
};

const char *sl_directive_name(sl_directive d)
{
    assert(d >= 0 && d < SL_DIR_COUNT && "BUG: directive out of range");
    return directive_defs[d].name;
}

int job_parse_value(parser *p, sl_directive d, const char *value)
{
    return directive_defs[d].parse(p, d, value);
}

static int bad_value(parser *p, sl_directive d, const char *value)
{
    const struct directive_def *def = &directive_defs[d];
    if (!*value)
        sl_err_set(p->err, "%s:%d: %s expects %s, got nothing", p->path, p->line, def->name, def->expects);
    else
        sl_err_set(p->err, "%s:%d: %s expects %s, got \"%.*s\"", p->path, p->line, def->name, def->expects,
                   SHOWN_VALUE_MAX, value);
    return -1;
}

/* ---- identifiers ---- */

static int is_ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static int is_ident_char(unsigned char c)
{
    return is_ident_start(c) || isdigit(c) || c == '$';
}

/* Length of the identifier at s: a plain one or a "quoted" one with ""
 * escapes (never empty, as PostgreSQL wants). 0 when there is none. */
static size_t ident_len(const char *s)
{
    size_t i = 0;
    if (s[0] == '"') {
        for (i = 1; s[i]; i++) {
            if (s[i] == '"' && s[i + 1] == '"')
                i++;
            else if (s[i] == '"')
                return i > 1 ? i + 1 : 0;
        }
        return 0;
    }
    if (!is_ident_start((unsigned char)s[0]))
        return 0;
    while (is_ident_char((unsigned char)s[i]))
        i++;
    return i;
}

/* The name an identifier stands for: plain ones fold to lower case, quoted
 * ones lose their quotes. Used to spot the same column written twice. */
static char *ident_name(const char *s, size_t n)
{
    sl_buf buf = {0};
    if (s[0] == '"') {
        for (size_t i = 1; i + 1 < n; i++) {
            sl_buf_addc(&buf, s[i]);
            if (s[i] == '"')
                i++;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            sl_buf_addc(&buf, (char)tolower((unsigned char)s[i]));
    }
    return sl_buf_take(&buf);
}

static const char *skip_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

void job_free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int has_duplicate(char **cols, size_t ncols, size_t *dup)
{
    for (size_t i = 0; i < ncols; i++) {
        for (size_t j = 0; j < i; j++) {
            char *a = ident_name(cols[i], strlen(cols[i]));
            char *b = ident_name(cols[j], strlen(cols[j]));
            int same = strcmp(a, b) == 0;
            free(a);
            free(b);
            if (same) {
                *dup = i;
                return 1;
            }
        }
    }
    return 0;
}

/* "a, "B", c" into owned strings as written. Fails on a malformed list, a
 * column named twice, or more than max columns. */
static int parse_ident_list(parser *p, sl_directive d, const char *value, const char *list, size_t max, char ***out,
                            size_t *nout)
{
    char **cols = NULL;
    size_t ncols = 0;
    const char *s = skip_blanks(list);
    for (;;) {
        size_t n = ident_len(s);
        if (n == 0)
            goto bad;
        cols = sl_realloc(cols, (ncols + 1) * sizeof *cols);
        cols[ncols++] = sl_strndup(s, n);
        s = skip_blanks(s + n);
        if (*s == '\0')
            break;
        if (*s != ',')
            goto bad;
        s = skip_blanks(s + 1);
    }
    size_t dup;
    if (has_duplicate(cols, ncols, &dup)) {
        sl_err_set(p->err, "%s:%d: %s names column %s twice", p->path, p->line, directive_defs[d].name, cols[dup]);
        job_free_strv(cols, ncols);
        return -1;
    }
    if (ncols > max) {
        sl_err_set(p->err, "%s:%d: %s has %zu columns, at most %zu are supported", p->path, p->line,
                   directive_defs[d].name, ncols, max);
        job_free_strv(cols, ncols);
        return -1;
    }
    *out = cols;
    *nout = ncols;
    return 0;
bad:
    job_free_strv(cols, ncols);
    return bad_value(p, d, value);
}

/* ---- one parser per kind of value ---- */

static int parse_table(parser *p, sl_directive d, const char *value)
{
    size_t n = ident_len(value);
    if (n > 0 && value[n] == '.') {
        size_t n2 = ident_len(value + n + 1);
        n = n2 ? n + 1 + n2 : 0;
    }
    if (n == 0 || value[n] != '\0')
        return bad_value(p, d, value);
    p->job->table = sl_strdup(value);
    return 0;
}

static int parse_key(parser *p, sl_directive d, const char *value)
{
    return parse_ident_list(p, d, value, value, SL_MAX_KEY_COLS, &p->job->key, &p->job->nkey);
}

/* where, throttle-query, requires and verify: one SQL fragment, kept without
 * surrounding comments so that pasting it into a query cannot comment out
 * what follows. */
static int parse_sql(parser *p, sl_directive d, const char *value)
{
    if (!*value)
        return bad_value(p, d, value);
    sl_stmt frag;
    if (sl_sql_fragment(p->path, p->line, value, strlen(value), &frag, p->err) != 0)
        return -1;
    free(frag.ph);
    if (frag.nph > 0) {
        free(frag.text);
        sl_err_set(p->err,
                   "%s:%d: %s cannot use :lo or :hi (hint: they stand for a chunk's bounds and exist only in the "
                   "up and down sections)",
                   p->path, p->line, directive_defs[d].name);
        return -1;
    }
    char **slot = d == SL_DIR_WHERE            ? &p->job->where
                  : d == SL_DIR_THROTTLE_QUERY ? &p->job->throttle_query
                  : d == SL_DIR_VERIFY         ? &p->job->verify
                                               : &p->job->requires;
    *slot = frag.text;
    return 0;
}

static int64_t *number_slot(sl_job *job, sl_directive d)
{
    switch (d) {
    case SL_DIR_BATCH: return &job->batch;
    case SL_DIR_CHUNK_TIME: return &job->chunk_time_ms;
    case SL_DIR_PAUSE: return &job->pause_ms;
    case SL_DIR_MAX_RATE: return &job->max_rate;
    case SL_DIR_LOCK_TIMEOUT: return &job->lock_timeout_ms;
    case SL_DIR_STATEMENT_TIMEOUT: return &job->statement_timeout_ms;
    case SL_DIR_RETRIES: return &job->retries;
    case SL_DIR_WORKERS: return &job->workers;
    case SL_DIR_MAX_REPLICA_LAG: return &job->max_replica_lag_ms;
    default: assert(0 && "BUG: directive has no number"); return NULL;
    }
}

int sl_directive_number(sl_directive d, const char *value, int64_t *out, char *why, size_t whysz)
{
    assert(d >= 0 && d < SL_DIR_COUNT && "BUG: directive out of range");
    const struct directive_def *def = &directive_defs[d];
    assert((def->parse == parse_number || def->parse == parse_duration) && "BUG: directive takes no number");
    int64_t v;
    int rc =
        def->parse == parse_duration ? sl_parse_duration(value, &v) : sl_parse_int(value, INT64_MIN, INT64_MAX, &v);
    if (rc == 0 && v > def->max && def->limit) {
        snprintf(why, whysz, "%.*s is too long: at most %s", SHOWN_VALUE_MAX, value, def->limit);
        return -1;
    }
    if (rc != 0 || v < def->min || v > def->max) {
        if (*value)
            snprintf(why, whysz, "expects %s, got \"%.*s\"", def->expects, SHOWN_VALUE_MAX, value);
        else
            snprintf(why, whysz, "expects %s, got nothing", def->expects);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_bounded(parser *p, sl_directive d, const char *value)
{
    char why[512];
    if (sl_directive_number(d, value, number_slot(p->job, d), why, sizeof why) != 0) {
        sl_err_set(p->err, "%s:%d: %s %s", p->path, p->line, directive_defs[d].name, why);
        return -1;
    }
    return 0;
}

static int parse_number(parser *p, sl_directive d, const char *value)
{
    return parse_bounded(p, d, value);
}

static int parse_duration(parser *p, sl_directive d, const char *value)
{
    return parse_bounded(p, d, value);
}

/* max-wal-rate: a whole number and B, kB, MB, GB or TB (PostgreSQL's units,
 * multiples of 1024), optionally "/s". */
static int parse_size(parser *p, sl_directive d, const char *value)
{
    static const struct {
        const char *unit;
        int shift;
    } units[] = {{"B", 0}, {"kB", 10}, {"MB", 20}, {"GB", 30}, {"TB", 40}};
    size_t i = 0;
    while (isdigit((unsigned char)value[i]) && i < 10)
        i++;
    char unit[8] = "";
    size_t ulen = strlen(value + i);
    if (ulen > 2 && strcmp(value + i + ulen - 2, "/s") == 0)
        ulen -= 2;
    if (i == 0 || isdigit((unsigned char)value[i]) || ulen == 0 || ulen >= sizeof unit)
        return bad_value(p, d, value);
    memcpy(unit, value + i, ulen);
    int64_t n = 0;
    for (size_t k = 0; k < i; k++)
        n = n * 10 + (value[k] - '0');
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        if (strcmp(unit, units[u].unit) == 0) {
            /* checked before the shift: one past int64_t is undefined behaviour, not a wrap to test after */
            if (n == 0 || n > directive_defs[d].max >> units[u].shift)
                return bad_value(p, d, value);
            p->job->max_wal_rate = n << units[u].shift;
            return 0;
        }
        if (strcasecmp(unit, units[u].unit) == 0) {
            sl_err_set(p->err, "%s:%d: %s: unit \"%s\" (hint: write %.*s%s, in PostgreSQL's spelling)", p->path,
                       p->line, directive_defs[d].name, unit, (int)i, value, units[u].unit);
            return -1;
        }
    }
    return bad_value(p, d, value);
}

/* max-dead-tuples: a number with at most two decimals, then '%'. */
static int parse_percent(parser *p, sl_directive d, const char *value)
{
    int64_t whole = 0, hundredths = 0;
    size_t i = 0, digits = 0, decimals = 0;
    for (; isdigit((unsigned char)value[i]) && digits < 6; i++, digits++)
        whole = whole * 10 + (value[i] - '0');
    if (value[i] == '.') {
        for (i++; isdigit((unsigned char)value[i]) && decimals < 2; i++, decimals++)
            hundredths = hundredths * 10 + (value[i] - '0');
        if (decimals == 0)
            return bad_value(p, d, value);
        if (decimals == 1)
            hundredths *= 10;
    }
    int64_t bp = whole * 100 + hundredths;
    if (digits == 0 || strcmp(value + i, "%") != 0 || bp < directive_defs[d].min || bp > directive_defs[d].max)
        return bad_value(p, d, value);
    p->job->max_dead_tuples_bp = bp;
    return 0;
}

/* "H:MM" or "HH:MM" from 00:00 to 23:59, as minutes after midnight. */
static int parse_clock(const char **s, int *minutes)
{
    const char *c = *s;
    int digits = 0, hours = 0;
    while (isdigit((unsigned char)c[digits]) && digits < 3)
        hours = hours * 10 + (c[digits++] - '0');
    if (digits < 1 || digits > 2 || c[digits] != ':')
        return -1;
    c += digits + 1;
    if (!isdigit((unsigned char)c[0]) || !isdigit((unsigned char)c[1]) || isdigit((unsigned char)c[2]))
        return -1;
    int mins = (c[0] - '0') * 10 + (c[1] - '0');
    if (hours > 23 || mins > 59)
        return -1;
    *minutes = hours * 60 + mins;
    *s = c + 2;
    return 0;
}

static int parse_window(parser *p, sl_directive d, const char *value)
{
    sl_job *job = p->job;
    const char *s = skip_blanks(value);
    for (;;) {
        const char *item = s;
        sl_window w;
        if (parse_clock(&s, &w.start_min) != 0)
            return bad_value(p, d, value);
        s = skip_blanks(s);
        if (*s != '-')
            return bad_value(p, d, value);
        s = skip_blanks(s + 1);
        if (parse_clock(&s, &w.end_min) != 0)
            return bad_value(p, d, value);
        if (w.start_min == w.end_min) {
            sl_err_set(p->err,
                       "%s:%d: window %.*s starts and ends at the same time (hint: a window that "
                       "never closes is no window; remove the directive to run at any time)",
                       p->path, p->line, (int)(s - item), item);
            return -1;
        }
        job->windows = sl_realloc(job->windows, (job->nwindows + 1) * sizeof *job->windows);
        job->windows[job->nwindows++] = w;
        s = skip_blanks(s);
        if (*s == '\0')
            return 0;
        if (*s != ',')
            return bad_value(p, d, value);
        s = skip_blanks(s + 1);
    }
}

/* A directive with two words: *out 0 for the first, 1 for the second. */
static int parse_either(parser *p, sl_directive d, const char *value, const char *first, const char *second, int *out)
{
    if (strcmp(value, first) == 0)
        *out = 0;
    else if (strcmp(value, second) == 0)
        *out = 1;
    else
        return bad_value(p, d, value);
    return 0;
}

static int parse_on_error(parser *p, sl_directive d, const char *value)
{
    int skip = 0;
    if (parse_either(p, d, value, "stop", "skip", &skip) != 0)
        return -1;
    p->job->on_error = skip ? SL_ON_ERROR_SKIP : SL_ON_ERROR_STOP;
    return 0;
}

static int parse_end(parser *p, sl_directive d, const char *value)
{
    return parse_either(p, d, value, "fixed", "follow", &p->job->follow);
}

static int parse_on_off(parser *p, sl_directive d, const char *value)
{
    return parse_either(p, d, value, "off", "on", &p->job->wait_commit);
}

static int parse_undo(parser *p, sl_directive d, const char *value)
{
    sl_job *job = p->job;
    if (strcmp(value, "down") == 0) {
        job->undo = SL_UNDO_DOWN;
        return 0;
    }
    const char *s = value;
    size_t vlen = strlen(value);
    if (strncmp(s, "snapshot", 8) != 0 || vlen < 10 || value[vlen - 1] != ')')
        return bad_value(p, d, value);
    s = skip_blanks(s + 8);
    if (*s != '(')
        return bad_value(p, d, value);
    char *inner = sl_strndup(s + 1, (size_t)(value + vlen - 1 - (s + 1)));
    size_t n = strlen(inner);
    while (n > 0 && (inner[n - 1] == ' ' || inner[n - 1] == '\t'))
        inner[--n] = '\0';
    int rc = 0;
    if (strcmp(skip_blanks(inner), "*") == 0)
        job->undo = SL_UNDO_SNAPSHOT_ALL;
    else if ((rc = parse_ident_list(p, d, value, inner, SIZE_MAX, &job->undo_cols, &job->nundo_cols)) == 0)
        job->undo = SL_UNDO_SNAPSHOT_COLS;
    free(inner);
    return rc;
}
