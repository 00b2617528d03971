/* job.c: the job-file parser: directives, sections and their validation. */
#include "sluice/jobs/job.h"
#include "sluice/jobs/keys.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest part of a user's value quoted back in an error message. */
#define SHOWN_VALUE_MAX 80

/* lock_timeout and statement_timeout are ints of milliseconds in PostgreSQL
 * (guc_tables.c): a longer value parses here but fails every chunk. */
#define PG_TIMEOUT_LIMIT "2147483647ms (about 596h), the most PostgreSQL takes"

typedef struct parser {
    const char *path;
    sl_job *job;
    sl_err *err;
    int line; /* of the directive being parsed */
} parser;

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
    [SL_DIR_MAX_WAL_RATE] = {"max-wal-rate",
                             "an amount of WAL per second such as 500kB, 50MB or 1GB (units of 1024, as PostgreSQL's)",
                             parse_size, 1, INT64_C(1) << 50},
    [SL_DIR_MAX_DEAD_TUPLES] = {"max-dead-tuples", "a share of the table's live rows such as 20% (from 0.01% to 1000%)",
                                parse_percent, 1, 100000},
    [SL_DIR_VERIFY] = {"verify", "an SQL query that returns true once the job has done what it should", parse_sql, 0,
                       0},
};

const char *sl_directive_name(sl_directive d)
{
    assert(d >= 0 && d < SL_DIR_COUNT && "BUG: directive out of range");
    return directive_defs[d].name;
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

static void free_strv(char **v, size_t n)
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
        free_strv(cols, ncols);
        return -1;
    }
    if (ncols > max) {
        sl_err_set(p->err, "%s:%d: %s has %zu columns, at most %zu are supported", p->path, p->line,
                   directive_defs[d].name, ncols, max);
        free_strv(cols, ncols);
        return -1;
    }
    *out = cols;
    *nout = ncols;
    return 0;
bad:
    free_strv(cols, ncols);
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
            int64_t bytes = n << units[u].shift;
            if (n == 0 || bytes > directive_defs[d].max || (bytes >> units[u].shift) != n)
                return bad_value(p, d, value);
            p->job->max_wal_rate = bytes;
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

static int parse_on_error(parser *p, sl_directive d, const char *value)
{
    if (strcmp(value, "stop") == 0)
        p->job->on_error = SL_ON_ERROR_STOP;
    else if (strcmp(value, "skip") == 0)
        p->job->on_error = SL_ON_ERROR_SKIP;
    else
        return bad_value(p, d, value);
    return 0;
}

static int parse_end(parser *p, sl_directive d, const char *value)
{
    if (strcmp(value, "fixed") == 0)
        p->job->follow = 0;
    else if (strcmp(value, "follow") == 0)
        p->job->follow = 1;
    else
        return bad_value(p, d, value);
    return 0;
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

/* ---- lines, directives and sections ---- */

/* A "-- sluice:NAME VALUE" line, split into its parts. */
typedef struct directive_line {
    const char *name;
    size_t name_len;
    char *value;    /* owned, trimmed */
    int prefix_off; /* "sluice:" written in another case */
} directive_line;

static int is_blank_char(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* Recognise a directive line; returns 1 and fills *dl, else 0. */
static int split_directive(const char *line, size_t len, directive_line *dl)
{
    size_t i = 0;
    while (i < len && is_blank_char(line[i]))
        i++;
    if (len - i < 2 || line[i] != '-' || line[i + 1] != '-')
        return 0;
    i += 2;
    while (i < len && is_blank_char(line[i]))
        i++;
    if (len - i < 7 || strncasecmp(line + i, "sluice:", 7) != 0)
        return 0;
    dl->prefix_off = memcmp(line + i, "sluice:", 7) != 0;
    i += 7;
    dl->name = line + i;
    while (i < len && !is_blank_char(line[i]))
        i++;
    dl->name_len = (size_t)(line + i - dl->name);
    while (i < len && is_blank_char(line[i]))
        i++;
    while (len > i && is_blank_char(line[len - 1]))
        len--;
    dl->value = sl_strndup(line + i, len - i);
    return 1;
}

static int name_is(const directive_line *dl, const char *name)
{
    return dl->name_len == strlen(name) && memcmp(dl->name, name, dl->name_len) == 0;
}

/* Every name that may follow "-- sluice:", for "did you mean". */
static const char *known_name(size_t i)
{
    if (i < SL_DIR_COUNT)
        return directive_defs[i].name;
    return i == SL_DIR_COUNT ? "up" : i == SL_DIR_COUNT + 1 ? "down" : NULL;
}

static int unknown_directive(parser *p, const directive_line *dl)
{
    char *name = sl_strndup(dl->name, dl->name_len);
    char *folded = sl_strdup(name); /* names are lower case: "UP" means "up" */
    for (char *c = folded; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    const char *best = NULL;
    size_t best_dist = SIZE_MAX;
    for (size_t i = 0; known_name(i); i++) {
        size_t dist = sl_edit_distance(folded, known_name(i));
        if (dist < best_dist) {
            best_dist = dist;
            best = known_name(i);
        }
    }
    size_t limit = strlen(best) >= 10 ? 3 : 2;
    if (!*name) {
        sl_err_set(p->err,
                   "%s:%d: expected a directive name after \"-- sluice:\" (hint: write it without a "
                   "space, e.g. -- sluice:batch 500)",
                   p->path, p->line);
    } else if (best_dist <= limit && best_dist * 2 <= strlen(best)) {
        sl_err_set(p->err, "%s:%d: unknown directive \"%.*s\" (hint: did you mean \"%s\"?)", p->path, p->line,
                   SHOWN_VALUE_MAX, name, best);
    } else {
        sl_buf all = {0};
        for (size_t i = 0; i < SL_DIR_COUNT; i++)
            sl_buf_printf(&all, "%s%s", i ? ", " : "", directive_defs[i].name);
        sl_err_set(p->err,
                   "%s:%d: unknown directive \"%.*s\" (hint: directives are %s; sections start at -- "
                   "sluice:up and -- sluice:down)",
                   p->path, p->line, SHOWN_VALUE_MAX, name, all.data);
        sl_buf_free(&all);
    }
    free(folded);
    free(name);
    return -1;
}

static int lookup_directive(const directive_line *dl, sl_directive *d)
{
    for (int i = 0; i < SL_DIR_COUNT; i++) {
        if (name_is(dl, directive_defs[i].name)) {
            *d = (sl_directive)i;
            return 0;
        }
    }
    return -1;
}

/* Where each section's body lies in the file's text. */
typedef struct section_span {
    size_t start, end;
} section_span;

typedef struct file_state {
    sl_section *open; /* section whose body is being read, or NULL */
    section_span *open_span;
    section_span up, down;
    int comment_depth; /* inside a slash-star comment before the sections */
    int comment_line;  /* where the outermost one starts */
} file_state;

static int on_marker(parser *p, file_state *fs, const directive_line *dl, size_t next_line_start, size_t line_start)
{
    int is_up = name_is(dl, "up");
    const char *which = is_up ? "up" : "down";
    sl_section *sec = is_up ? &p->job->up : &p->job->down;
    if (*dl->value) {
        sl_err_set(p->err,
                   "%s:%d: -- sluice:%s takes no value, got \"%.*s\" (hint: put statements on the lines "
                   "after it)",
                   p->path, p->line, which, SHOWN_VALUE_MAX, dl->value);
        return -1;
    }
    if (sec->present) {
        sl_err_set(p->err, "%s:%d: second -- sluice:%s section (the first starts at line %d)", p->path, p->line, which,
                   sec->line);
        return -1;
    }
    if (fs->open_span)
        fs->open_span->end = line_start;
    sec->present = 1;
    sec->line = p->line;
    fs->open = sec;
    fs->open_span = is_up ? &fs->up : &fs->down;
    fs->open_span->start = next_line_start;
    return 0;
}

static int on_directive(parser *p, const file_state *fs, const directive_line *dl)
{
    sl_directive d;
    if (lookup_directive(dl, &d) != 0)
        return unknown_directive(p, dl);
    if (fs->open) {
        sl_err_set(p->err,
                   "%s:%d: directive \"%s\" inside the %s section (hint: directives go before -- "
                   "sluice:up)",
                   p->path, p->line, directive_defs[d].name, fs->open == &p->job->up ? "up" : "down");
        return -1;
    }
    if (p->job->line[d]) {
        sl_err_set(p->err, "%s:%d: directive \"%s\" given twice (first at line %d)", p->path, p->line,
                   directive_defs[d].name, p->job->line[d]);
        return -1;
    }
    p->job->line[d] = p->line;
    return directive_defs[d].parse(p, d, dl->value);
}

/* Move i past the end of the open slash-star comment (they nest, as in
 * PostgreSQL), or to len when it goes on past the line. */
static size_t skip_comment_body(file_state *fs, const char *line, size_t len, size_t i)
{
    while (i < len && fs->comment_depth > 0) {
        if (i + 1 < len && line[i] == '/' && line[i + 1] == '*')
            fs->comment_depth++, i += 2;
        else if (i + 1 < len && line[i] == '*' && line[i + 1] == '/')
            fs->comment_depth--, i += 2;
        else
            i++;
    }
    return i;
}

static int sql_outside(parser *p)
{
    sl_err_set(p->err,
               "%s:%d: SQL outside a section (hint: put statements after -- sluice:up, or -- sluice:down "
               "for the way back)",
               p->path, p->line);
    return -1;
}

/* Outside sections only directives, comments (-- and slash-star, which may
 * span lines) and blank lines may appear. A directive must start its line. */
static int check_preamble_line(parser *p, file_state *fs, const char *line, size_t len)
{
    size_t i = skip_comment_body(fs, line, len, 0);
    for (;;) {
        while (i < len && is_blank_char(line[i]))
            i++;
        if (i == len)
            return 0;
        if (len - i >= 2 && line[i] == '/' && line[i + 1] == '*') {
            fs->comment_depth = 1;
            fs->comment_line = p->line;
            i = skip_comment_body(fs, line, len, i + 2);
            continue;
        }
        if (len - i < 2 || line[i] != '-' || line[i + 1] != '-')
            return sql_outside(p);
        directive_line dl;
        if (!split_directive(line + i, len - i, &dl))
            return 0;
        free(dl.value);
        sl_err_set(p->err, "%s:%d: a directive must start its line (hint: move what comes before -- sluice:%.*s)",
                   p->path, p->line, (int)dl.name_len, dl.name);
        return -1;
    }
}

/* "-- Sluice:batch 5" would be a plain comment, its directive silently lost. */
static int miscased_prefix(parser *p, const directive_line *dl)
{
    sl_err_set(p->err, "%s:%d: \"%.7s\" must be written \"sluice:\" (hint: directives are lower case: -- sluice:%.*s)",
               p->path, p->line, dl->name - 7, (int)dl->name_len, dl->name);
    return -1;
}

/* A "-- sluice:" line inside a slash-star comment is ambiguous: refused. */
static int directive_in_comment(parser *p, const file_state *fs, const directive_line *dl)
{
    sl_err_set(p->err,
               "%s:%d: -- sluice:%.*s inside the /* comment that starts at line %d (hint: close the comment "
               "before it; to switch a directive off, write -- before it: -- -- sluice:%.*s)",
               p->path, p->line, (int)dl->name_len, dl->name, fs->comment_line, (int)dl->name_len, dl->name);
    return -1;
}

/* Markers and directives are found line by line before any SQL is scanned,
 * as migration tools do: a "-- sluice:" line inside a multi-line string of a
 * section still counts as one. */
static int parse_line(parser *p, file_state *fs, const char *text, size_t start, size_t end, size_t next)
{
    directive_line dl;
    if (!split_directive(text + start, end - start, &dl))
        return fs->open ? 0 : check_preamble_line(p, fs, text + start, end - start);
    int rc;
    if (dl.prefix_off)
        rc = miscased_prefix(p, &dl);
    else if (fs->comment_depth > 0)
        rc = directive_in_comment(p, fs, &dl);
    else if (name_is(&dl, "up") || name_is(&dl, "down"))
        rc = on_marker(p, fs, &dl, next, start);
    else
        rc = on_directive(p, fs, &dl);
    free(dl.value);
    return rc;
}

static int parse_lines(parser *p, file_state *fs, const char *text, size_t len)
{
    size_t pos = 0;
    /* A UTF-8 byte order mark is not part of the first line. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    for (p->line = 1; pos < len; p->line++) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t next = nl ? end + 1 : len;
        /* CRLF line ends: the CR is part of the line end (sl_job_check_text
         * allows it nowhere else). Statements keep theirs: SQL reads it as a blank. */
        if (end > pos && text[end - 1] == '\r')
            end--;
        if (parse_line(p, fs, text, pos, end, next) != 0)
            return -1;
        pos = next;
    }
    if (fs->comment_depth > 0) {
        sl_err_set(p->err, "%s:%d: unterminated /* comment (hint: close it with */)", p->path, fs->comment_line);
        return -1;
    }
    if (fs->open_span)
        fs->open_span->end = len;
    return 0;
}

/* ---- sections ---- */

/* Transaction control would break the chunk's one transaction, which holds
 * the chunk's effect and its progress record together (exactly once). */
static int refuse_transaction_control(parser *p, const sl_stmt *stmt)
{
    char what[64];
    if (!sl_stmt_transaction_control(stmt, what, sizeof what))
        return 0;
    if (strcmp(what, "VACUUM") == 0)
        sl_err_set(p->err,
                   "%s:%d: VACUUM cannot run inside a transaction, and sluice runs each chunk in a transaction "
                   "of its own (hint: run it after the job)",
                   p->path, stmt->line);
    else
        sl_err_set(p->err,
                   "%s:%d: %s is transaction control, not allowed in a section: sluice runs each chunk in a "
                   "transaction of its own (hint: remove it)",
                   p->path, stmt->line, what);
    return -1;
}

static int load_section(parser *p, sl_section *sec, const section_span *span, const char *which, const char *text)
{
    if (sl_sql_split(p->path, sec->line + 1, text + span->start, span->end - span->start, &sec->stmts, &sec->nstmts,
                     p->err) != 0)
        return -1;
    if (sec->nstmts == 0) {
        sl_err_set(p->err,
                   "%s:%d: the %s section is empty (hint: write the statements to run for each chunk "
                   "on the lines after it)",
                   p->path, sec->line, which);
        return -1;
    }
    int lo = 0, hi = 0;
    for (size_t i = 0; i < sec->nstmts; i++) {
        if (refuse_transaction_control(p, &sec->stmts[i]) != 0)
            return -1;
        lo |= sec->stmts[i].uses_lo;
        hi |= sec->stmts[i].uses_hi;
    }
    if (!lo || !hi) {
        sl_err_set(p->err,
                   "%s:%d: the %s section never uses %s: without them every chunk would touch the whole "
                   "table (hint: limit it to the chunk, e.g. WHERE id BETWEEN :lo AND :hi)",
                   p->path, sec->line, which,
                   !lo && !hi ? ":lo and :hi"
                   : !lo      ? ":lo"
                              : ":hi");
        return -1;
    }
    return 0;
}

/* Checks that need the whole file. */
static int finish_job(parser *p, const file_state *fs, const char *text)
{
    sl_job *job = p->job;
    if (!job->table) {
        sl_err_set(p->err,
                   "%s: no table directive (hint: name the table whose key is walked, e.g. -- "
                   "sluice:table users, before -- sluice:up)",
                   p->path);
        return -1;
    }
    if (!job->up.present) {
        sl_err_set(p->err,
                   "%s: no up section (hint: add a line -- sluice:up followed by the statements to run "
                   "for each chunk)",
                   p->path);
        return -1;
    }
    if (load_section(p, &job->up, &fs->up, "up", text) != 0)
        return -1;
    if (job->down.present && load_section(p, &job->down, &fs->down, "down", text) != 0)
        return -1;
    if (!job->line[SL_DIR_UNDO]) {
        job->undo = job->down.present ? SL_UNDO_DOWN : SL_UNDO_NONE;
    } else if (job->undo == SL_UNDO_DOWN && !job->down.present) {
        sl_err_set(p->err,
                   "%s:%d: undo down needs a -- sluice:down section (hint: add one, or use undo "
                   "snapshot(COL, ...) to save old values instead)",
                   p->path, job->line[SL_DIR_UNDO]);
        return -1;
    }
    return 0;
}

static char *job_name_of(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".sql") == 0)
        n -= 4;
    return sl_strndup(base, n);
}

int sl_job_parse(const char *path, const char *text, size_t len, sl_job *job, sl_err *err)
{
    memset(job, 0, sizeof *job);
    job->name = job_name_of(path);
    job->path = sl_strdup(path);
    sl_checksum_hex(text, len, job->checksum);
    job->batch = 1000;
    job->lock_timeout_ms = 2000;
    job->statement_timeout_ms = 60000;
    job->retries = 5;
    job->workers = 1;
    job->on_error = SL_ON_ERROR_STOP;
    job->undo = SL_UNDO_NONE;

    parser p = {.path = path, .job = job, .err = err, .line = 0};
    file_state fs = {0};
    if (sl_job_check_text(path, text, len, err) != 0 || parse_lines(&p, &fs, text, len) != 0 ||
        finish_job(&p, &fs, text) != 0) {
        sl_job_free(job);
        return -1;
    }
    return 0;
}

int sl_job_load(const char *path, sl_job *job, sl_err *err)
{
    char *text;
    size_t len;
    memset(job, 0, sizeof *job);
    if (sl_read_file(path, &text, &len, err) != 0)
        return -1;
    int rc = sl_job_parse(path, text, len, job, err);
    free(text);
    return rc;
}

void sl_job_free(sl_job *job)
{
    if (!job)
        return;
    free(job->name);
    free(job->path);
    free(job->table);
    free_strv(job->key, job->nkey);
    free(job->where);
    free(job->windows);
    free_strv(job->undo_cols, job->nundo_cols);
    free(job->throttle_query);
    free(job->requires);
    free(job->verify);
    sl_stmts_free(job->up.stmts, job->up.nstmts);
    sl_stmts_free(job->down.stmts, job->down.nstmts);
    memset(job, 0, sizeof *job);
}
