/* job.c: the job-file parser: its lines, directives and sections, and their validation (values: job_values.c). */
#include "sluice/jobs/job.h"
#include "sluice/jobs/keys.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "job_internal.h"

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
        return sl_directive_name((sl_directive)i);
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
            sl_buf_printf(&all, "%s%s", i ? ", " : "", sl_directive_name((sl_directive)i));
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
        if (name_is(dl, sl_directive_name((sl_directive)i))) {
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
                   p->path, p->line, sl_directive_name(d), fs->open == &p->job->up ? "up" : "down");
        return -1;
    }
    if (p->job->line[d]) {
        sl_err_set(p->err, "%s:%d: directive \"%s\" given twice (first at line %d)", p->path, p->line,
                   sl_directive_name(d), p->job->line[d]);
        return -1;
    }
    p->job->line[d] = p->line;
    return job_parse_value(p, d, dl->value);
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

/* A statement whose first word begins none (a misspelling, a byte order
 * mark where two files were joined) would reach the server only with the
 * first chunk, and fail the job there. */
static int refuse_no_statement(parser *p, const sl_stmt *stmt)
{
    if (sl_stmt_begins_statement(stmt))
        return 0;
    /* the statement's start as text, after its leading blanks, cut at the line's end and shown escaped */
    const char *t = stmt->text + strspn(stmt->text, " \t\r\n");
    int bom = (unsigned char)t[0] == 0xEF && (unsigned char)t[1] == 0xBB && (unsigned char)t[2] == 0xBF;
    sl_buf shown = {0};
    sl_buf_add_visible(&shown, t, strcspn(t, "\n") < 24 ? strcspn(t, "\n") : 24, 1);
    sl_err_set(p->err, "%s:%d: \"%s\" begins no SQL statement%s", p->path, stmt->line, shown.data ? shown.data : "",
               bom ? ": it begins with a byte order mark (U+FEFF), as where two files were joined" : "");
    sl_err_append(p->err, "hint: %s",
                  bom ? "remove the byte order mark"
                      : "a statement begins with a keyword such as UPDATE, DELETE, INSERT, "
                        "SELECT, WITH or CALL: is the first word misspelled?");
    sl_buf_free(&shown);
    return -1;
}

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
        if (refuse_no_statement(p, &sec->stmts[i]) != 0 || refuse_transaction_control(p, &sec->stmts[i]) != 0)
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
    job_free_strv(job->key, job->nkey);
    free(job->where);
    free(job->windows);
    job_free_strv(job->undo_cols, job->nundo_cols);
    free(job->throttle_query);
    free(job->requires);
    free(job->verify);
    sl_stmts_free(job->up.stmts, job->up.nstmts);
    sl_stmts_free(job->down.stmts, job->down.nstmts);
    memset(job, 0, sizeof *job);
}
