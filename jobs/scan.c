/* scan.c: the SQL scanner: splits sections into statements and finds :lo/:hi outside quotes and comments. */
#include "sluice/jobs/job.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Scanner state over one piece of text. Positions are byte offsets. */
typedef struct scanner {
    const char *path;
    const char *text;
    size_t len;
    size_t pos;
    int line; /* line of text[pos] */
} scanner;

/* One statement found by scan_next: [start, end) holds code from its first to
 * its last token, so leading and trailing blanks and comments are left out. */
typedef struct scanned {
    size_t start, end;
    int line;
    int ended_by_semicolon;
    int depth;          /* parentheses open at the end, outside strings and comments */
    int closed_early;   /* a ')' closed what it had not opened (depth went below 0) */
    sl_placeholder *ph; /* offsets relative to the text, not to start */
    size_t nph, cap;
} scanned;

/* Identifier characters as PostgreSQL's lexer sees them: bytes >= 0x80 are
 * letters of multibyte identifiers, and '$' may continue an identifier. */
static int is_ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static int is_ident_char(unsigned char c)
{
    return is_ident_start(c) || isdigit(c) || c == '$';
}

static unsigned char at(const scanner *sc, size_t pos)
{
    return pos < sc->len ? (unsigned char)sc->text[pos] : '\0';
}

static void advance(scanner *sc, size_t n)
{
    for (size_t i = 0; i < n && sc->pos < sc->len; i++) {
        if (sc->text[sc->pos] == '\n')
            sc->line++;
        sc->pos++;
    }
}

static int unterminated(scanner *sc, int start_line, const char *what, sl_err *err)
{
    sl_err_set(err, "%s:%d: unterminated %s", sc->path, start_line, what);
    return -1;
}

/* '...' with '' escapes; with backslash escapes too when escapes is set (E'...'). */
static int skip_string(scanner *sc, int escapes, sl_err *err)
{
    int start_line = sc->line;
    advance(sc, 1);
    while (sc->pos < sc->len) {
        unsigned char c = at(sc, sc->pos);
        if (escapes && c == '\\') {
            advance(sc, 2);
        } else if (c == '\'') {
            if (at(sc, sc->pos + 1) != '\'') {
                advance(sc, 1);
                return 0;
            }
            advance(sc, 2);
        } else {
            advance(sc, 1);
        }
    }
    return unterminated(sc, start_line, "string literal (hint: close it with ')", err);
}

static int skip_quoted_ident(scanner *sc, sl_err *err)
{
    int start_line = sc->line;
    advance(sc, 1);
    while (sc->pos < sc->len) {
        if (at(sc, sc->pos) == '"') {
            if (at(sc, sc->pos + 1) != '"') {
                advance(sc, 1);
                return 0;
            }
            advance(sc, 2);
        } else {
            advance(sc, 1);
        }
    }
    return unterminated(sc, start_line, "quoted identifier (hint: close it with \")", err);
}

static void skip_line_comment(scanner *sc)
{
    while (sc->pos < sc->len && sc->text[sc->pos] != '\n')
        advance(sc, 1);
}

/* PostgreSQL block comments nest. */
static int skip_block_comment(scanner *sc, sl_err *err)
{
    int start_line = sc->line;
    int depth = 0;
    do {
        if (at(sc, sc->pos) == '/' && at(sc, sc->pos + 1) == '*') {
            depth++;
            advance(sc, 2);
        } else if (at(sc, sc->pos) == '*' && at(sc, sc->pos + 1) == '/') {
            depth--;
            advance(sc, 2);
        } else {
            advance(sc, 1);
        }
    } while (depth > 0 && sc->pos < sc->len);
    if (depth > 0)
        return unterminated(sc, start_line, "/* comment (hint: close it with */)", err);
    return 0;
}

/* Length of the dollar-quote opener at pos ("$$" or "$tag$"), or 0 when the
 * '$' there is not one: "$1" is a parameter and "a$b" an identifier. */
static size_t dollar_tag_len(const scanner *sc, size_t pos)
{
    if (pos > 0 && is_ident_char((unsigned char)sc->text[pos - 1]))
        return 0;
    size_t i = pos + 1;
    if (at(sc, i) != '$' && !is_ident_start(at(sc, i)))
        return 0;
    while (i < sc->len && at(sc, i) != '$') {
        unsigned char c = at(sc, i);
        if (!is_ident_char(c))
            return 0;
        i++;
    }
    if (i >= sc->len)
        return 0;
    return i + 1 - pos;
}

static int skip_dollar_quote(scanner *sc, size_t tag_len, sl_err *err)
{
    int start_line = sc->line;
    const char *tag = sc->text + sc->pos;
    advance(sc, tag_len);
    while (sc->pos + tag_len <= sc->len) {
        if (memcmp(sc->text + sc->pos, tag, tag_len) == 0) {
            advance(sc, tag_len);
            return 0;
        }
        advance(sc, 1);
    }
    sl_err_set(err, "%s:%d: unterminated dollar-quoted string %.*s (hint: close it with %.*s)", sc->path, start_line,
               (int)tag_len, tag, (int)tag_len, tag);
    return -1;
}

/* ":lo" or ":hi" at pos that is a placeholder: 1 for :lo, 2 for :hi, else 0. */
static int placeholder_at(const scanner *sc, size_t pos)
{
    if (pos > 0 && sc->text[pos - 1] == ':')
        return 0; /* "x::lo" casts to a type named lo */
    if (pos + 3 > sc->len || is_ident_char(at(sc, pos + 3)))
        return 0; /* ":lower", ":hi_x" */
    if (memcmp(sc->text + pos, ":lo", 3) == 0)
        return 1;
    if (memcmp(sc->text + pos, ":hi", 3) == 0)
        return 2;
    return 0;
}

static void add_placeholder(scanned *st, size_t offset, int is_hi)
{
    if (st->nph == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 4;
        st->ph = sl_realloc(st->ph, st->cap * sizeof *st->ph);
    }
    st->ph[st->nph++] = (sl_placeholder){.offset = offset, .length = 3, .is_hi = is_hi};
}

/* Skip whatever starts at pos if it is a quote or a comment. Returns 1 when
 * something was skipped (so it is code that counts as a token, or a comment),
 * 0 when pos holds plain code, -1 on error. *is_comment tells which. */
static int skip_quoted(scanner *sc, int *is_comment, sl_err *err)
{
    unsigned char c = at(sc, sc->pos), next = at(sc, sc->pos + 1);
    *is_comment = 0;
    if (c == '-' && next == '-') {
        *is_comment = 1;
        skip_line_comment(sc);
        return 1;
    }
    if (c == '/' && next == '*') {
        *is_comment = 1;
        return skip_block_comment(sc, err) < 0 ? -1 : 1;
    }
    if (c == '\'') {
        /* E'...' takes backslash escapes, unless the E ends a longer word. */
        int escapes = sc->pos > 0 && (sc->text[sc->pos - 1] == 'E' || sc->text[sc->pos - 1] == 'e') &&
                      (sc->pos < 2 || !is_ident_char((unsigned char)sc->text[sc->pos - 2]));
        return skip_string(sc, escapes, err) < 0 ? -1 : 1;
    }
    if (c == '"')
        return skip_quoted_ident(sc, err) < 0 ? -1 : 1;
    if (c == '$') {
        size_t tag_len = dollar_tag_len(sc, sc->pos);
        if (tag_len > 0)
            return skip_dollar_quote(sc, tag_len, err) < 0 ? -1 : 1;
    }
    return 0;
}

/* Scan the next statement. Returns 1 with *st filled, 0 at the end of the
 * text, -1 on error. A statement with no code (only blanks and comments) has
 * start == end. */
static int scan_next(scanner *sc, scanned *st, sl_err *err)
{
    memset(st, 0, sizeof *st);
    if (sc->pos >= sc->len)
        return 0;
    int have_code = 0;
    while (sc->pos < sc->len) {
        unsigned char c = at(sc, sc->pos);
        if (c == ';') {
            advance(sc, 1);
            st->ended_by_semicolon = 1;
            return 1;
        }
        if (isspace(c)) {
            advance(sc, 1);
            continue;
        }
        size_t tok_start = sc->pos;
        int tok_line = sc->line, is_comment;
        int r = skip_quoted(sc, &is_comment, err);
        if (r < 0) {
            free(st->ph);
            st->ph = NULL;
            return -1;
        }
        if (r > 0 && is_comment)
            continue;
        if (r == 0 && c == '$' && isdigit(at(sc, sc->pos + 1)) &&
            (sc->pos == 0 || !is_ident_char((unsigned char)sc->text[sc->pos - 1]))) {
            /* sluice's own parameters are $1, $2, ...: one written here would be a key bound */
            size_t n = 1;
            while (isdigit(at(sc, sc->pos + n)))
                n++;
            sl_err_set(err,
                       "%s:%d: %.*s: positional parameters are sluice's own (it sends :lo and :hi as $1, $2, ...) "
                       "(hint: write :lo or :hi, or the value itself)",
                       sc->path, sc->line, (int)n, sc->text + sc->pos);
            free(st->ph);
            st->ph = NULL;
            return -1;
        }
        if (r == 0) {
            if (c == '(')
                st->depth++;
            if (c == ')' && --st->depth < 0)
                st->closed_early = 1;
            int kind = c == ':' ? placeholder_at(sc, sc->pos) : 0;
            if (kind)
                add_placeholder(st, sc->pos, kind == 2);
            advance(sc, kind ? 3 : 1);
        }
        if (!have_code) {
            have_code = 1;
            st->start = tok_start;
            st->line = tok_line;
        }
        st->end = sc->pos;
    }
    return 1;
}

/* Turn a scanned range into an owned statement. */
static void make_stmt(const scanner *sc, scanned *st, sl_stmt *out)
{
    memset(out, 0, sizeof *out);
    out->text = sl_strndup(sc->text + st->start, st->end - st->start);
    out->line = st->line;
    out->ph = st->ph;
    out->nph = st->nph;
    st->ph = NULL;
    for (size_t i = 0; i < out->nph; i++) {
        assert(out->ph[i].offset >= st->start && "BUG: placeholder before its statement");
        out->ph[i].offset -= st->start;
        if (out->ph[i].is_hi)
            out->uses_hi = 1;
        else
            out->uses_lo = 1;
    }
}

int sl_sql_split(const char *path, int first_line, const char *text, size_t len, sl_stmt **out, size_t *nout,
                 sl_err *err)
{
    scanner sc = {.path = path, .text = text, .len = len, .pos = 0, .line = first_line};
    sl_stmt *stmts = NULL;
    size_t nstmts = 0, cap = 0;
    scanned st;
    int r;
    *out = NULL;
    *nout = 0;
    while ((r = scan_next(&sc, &st, err)) > 0) {
        if (st.end == st.start) {
            free(st.ph);
            continue;
        }
        if (nstmts == cap) {
            cap = cap ? cap * 2 : 4;
            stmts = sl_realloc(stmts, cap * sizeof *stmts);
        }
        make_stmt(&sc, &st, &stmts[nstmts++]);
    }
    if (r < 0) {
        sl_stmts_free(stmts, nstmts);
        return -1;
    }
    *out = stmts;
    *nout = nstmts;
    return 0;
}

int sl_sql_fragment(const char *path, int line, const char *text, size_t len, sl_stmt *out, sl_err *err)
{
    scanner sc = {.path = path, .text = text, .len = len, .pos = 0, .line = line};
    scanned st;
    memset(out, 0, sizeof *out);
    int r = scan_next(&sc, &st, err);
    if (r < 0)
        return -1;
    if (r == 0 || st.end == st.start) {
        free(st.ph);
        sl_err_set(err, "%s:%d: expected SQL, got nothing", path, line);
        return -1;
    }
    if (st.ended_by_semicolon) {
        free(st.ph);
        sl_err_set(err, "%s:%d: ';' is not allowed here (hint: write one expression or query, without ';')", path,
                   line);
        return -1;
    }
    if (st.closed_early || st.depth != 0) {
        /* sluice puts the fragment inside its own parentheses ("... AND
         * (where)"): one that closes them would change what the chunk's
         * queries select */
        free(st.ph);
        sl_err_set(err, "%s:%d: unbalanced parentheses: %s (hint: write one whole expression or query)", path, line,
                   st.closed_early ? "a ')' closes one this value did not open" : "a '(' is never closed");
        return -1;
    }
    make_stmt(&sc, &st, out);
    return 0;
}

void sl_stmts_free(sl_stmt *stmts, size_t n)
{
    if (!stmts)
        return;
    for (size_t i = 0; i < n; i++) {
        free(stmts[i].text);
        free(stmts[i].ph);
    }
    free(stmts);
}

char *sl_stmt_render(const sl_stmt *stmt, const char *lo_sql, const char *hi_sql)
{
    sl_buf buf = {0};
    size_t done = 0;
    for (size_t i = 0; i < stmt->nph; i++) {
        const sl_placeholder *ph = &stmt->ph[i];
        assert(ph->offset >= done && "BUG: placeholders out of order");
        sl_buf_add(&buf, stmt->text + done, ph->offset - done);
        sl_buf_adds(&buf, ph->is_hi ? hi_sql : lo_sql);
        done = ph->offset + ph->length;
    }
    sl_buf_adds(&buf, stmt->text + done);
    return sl_buf_take(&buf);
}

/* Move past blanks and comments. */
static void skip_blanks_and_comments(scanner *sc)
{
    sl_err ignored;
    int is_comment;
    while (sc->pos < sc->len) {
        if (isspace(at(sc, sc->pos))) {
            advance(sc, 1);
            continue;
        }
        size_t before = sc->pos;
        if (skip_quoted(sc, &is_comment, &ignored) <= 0 || !is_comment) {
            sc->pos = before;
            return;
        }
    }
}

/* The keyword after blanks and comments (a letter, then letters, digits and
 * '_'), lower-cased into out and cut to fit; moves past all of it. "" when
 * something else comes first. */
static void read_word(scanner *sc, char *out, size_t outsz)
{
    assert(outsz > 0 && "BUG: no room for a word");
    size_t n = 0;
    skip_blanks_and_comments(sc);
    if (isalpha(at(sc, sc->pos))) {
        for (unsigned char c; sc->pos < sc->len && (isalnum(c = at(sc, sc->pos)) || c == '_'); sc->pos++)
            if (n + 1 < outsz)
                out[n++] = (char)tolower(c);
    }
    out[n] = '\0';
}

void sl_stmt_first_word(const sl_stmt *stmt, char *out, size_t outsz)
{
    scanner sc = {.path = "", .text = stmt->text, .len = strlen(stmt->text), .pos = 0, .line = 1};
    read_word(&sc, out, outsz);
}

static void upper_into(char *out, size_t outsz, const char *first, const char *second)
{
    snprintf(out, outsz, "%s%s%s", first, *second ? " " : "", second);
    for (char *c = out; *c; c++)
        *c = (char)toupper((unsigned char)*c);
}

int sl_stmt_transaction_control(const sl_stmt *stmt, char *what, size_t whatsz)
{
    static const char *const refused[] = {"begin", "start",     "commit",  "end",    "rollback",
                                          "abort", "savepoint", "release", "vacuum", NULL};
    scanner sc = {.path = "", .text = stmt->text, .len = strlen(stmt->text), .pos = 0, .line = 1};
    char first[32], second[32];
    read_word(&sc, first, sizeof first);
    read_word(&sc, second, sizeof second);
    /* SET TRANSACTION ..., SET transaction_isolation = ..., START TRANSACTION */
    int transaction = strcmp(second, "transaction") == 0 || strncmp(second, "transaction_", 12) == 0;
    int hit = transaction && (strcmp(first, "set") == 0 || strcmp(first, "prepare") == 0);
    for (size_t i = 0; refused[i] && !hit; i++)
        hit = strcmp(first, refused[i]) == 0;
    if (hit)
        upper_into(what, whatsz, first, transaction ? second : "");
    return hit;
}

int sl_stmt_begins_statement(const sl_stmt *stmt)
{
    /* the keywords PostgreSQL's and SQLite's statements begin with */
    static const char *const kinds[] = {
        "abort",   "alter",   "analyze",  "attach",    "begin",    "call",       "checkpoint", "close",
        "cluster", "comment", "commit",   "copy",      "create",   "deallocate", "declare",    "delete",
        "detach",  "discard", "do",       "drop",      "end",      "execute",    "explain",    "fetch",
        "grant",   "import",  "insert",   "listen",    "load",     "lock",       "merge",      "move",
        "notify",  "pragma",  "prepare",  "reassign",  "refresh",  "reindex",    "release",    "replace",
        "reset",   "revoke",  "rollback", "savepoint", "security", "select",     "set",        "show",
        "start",   "table",   "truncate", "unlisten",  "update",   "vacuum",     "values",     "with"};
    scanner sc = {.path = "", .text = stmt->text, .len = strlen(stmt->text), .pos = 0, .line = 1};
    skip_blanks_and_comments(&sc);
    if (at(&sc, sc.pos) == '(')
        return 1; /* (SELECT ...) UNION ... */
    char word[16];
    read_word(&sc, word, sizeof word);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(word, kinds[i]) == 0)
            return 1;
    return 0;
}

int sl_stmt_explainable(const sl_stmt *stmt)
{
    static const char *const kinds[] = {"update", "delete", "insert", "select", "with", "merge", "values"};
    char word[16];
    sl_stmt_first_word(stmt, word, sizeof word);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(word, kinds[i]) == 0)
            return 1;
    return 0;
}

/* ---- the columns UPDATEs assign (sl_stmt_updates) ---- */

/* A token of a statement: a word, a quoted identifier ("PostgreSQL's", and
 * SQLite's `backticked` and [bracketed] ones), a literal (string, dollar
 * quote, number) or one character of punctuation. depth counts the
 * parentheses and brackets around it; a '(' or '[' and its closing partner
 * both have the depth outside them. */
typedef struct tok {
    size_t start, end;
    int line;
    int depth;
    char kind; /* 'w' word, 'q' quoted identifier, 'l' literal, 'p' punctuation */
} tok;

typedef struct toks {
    const char *text;
    tok *v;
    size_t n, cap;
} toks;

/* Words after which a '[' opens SQLite's [quoted name] rather than a
 * subscript: where a name is expected (a subscript follows a value: a name,
 * a ')' or a ']', ARRAY, a type). */
static const char *const name_before[] = {"update", "set",      "into",  "only",    "from", "join",   "as", "table",
                                          "or",     "rollback", "abort", "replace", "fail", "ignore", "on"};

static int names_next(const toks *ts)
{
    if (ts->n == 0)
        return 1;
    const tok *prev = &ts->v[ts->n - 1];
    if (prev->kind == 'p')
        return ts->text[prev->start] != ')' && ts->text[prev->start] != ']';
    if (prev->kind != 'w')
        return 0;
    size_t len = prev->end - prev->start;
    for (size_t i = 0; i < sizeof name_before / sizeof name_before[0]; i++)
        if (strlen(name_before[i]) == len && strncasecmp(ts->text + prev->start, name_before[i], len) == 0)
            return 1;
    return 0;
}

/* SQLite's `name` (`` inside is one `) or, where a name is expected, [name]
 * (no escape), from pos: its end, or 0 when there is none (unclosed). */
static size_t sqlite_name_end(const toks *ts, const scanner *sc)
{
    unsigned char c = at(sc, sc->pos);
    if (c == '`') {
        for (size_t p = sc->pos + 1; p < sc->len; p++)
            if (at(sc, p) == '`') {
                if (at(sc, p + 1) != '`')
                    return p + 1;
                p++;
            }
        return 0;
    }
    if (c != '[' || !names_next(ts))
        return 0;
    const char *close = memchr(sc->text + sc->pos, ']', sc->len - sc->pos);
    return close ? (size_t)(close - sc->text) + 1 : 0;
}

static void tokenize(const sl_stmt *stmt, toks *ts)
{
    sl_err ignored;
    scanner sc = {.path = "", .text = stmt->text, .len = strlen(stmt->text), .pos = 0, .line = stmt->line};
    int depth = 0, is_comment;
    ts->text = stmt->text;
    while (sc.pos < sc.len) {
        unsigned char c = at(&sc, sc.pos);
        if (isspace(c)) {
            advance(&sc, 1);
            continue;
        }
        tok t = {.start = sc.pos, .line = sc.line, .depth = depth, .kind = 'p'};
        size_t name_end = sqlite_name_end(ts, &sc);
        int r = name_end ? 0 : skip_quoted(&sc, &is_comment, &ignored);
        if (r < 0)
            break; /* sl_sql_split saw the statement whole: cannot happen */
        if (r > 0 && is_comment)
            continue;
        if (name_end) {
            t.kind = 'q';
            while (sc.pos < name_end)
                advance(&sc, 1);
        } else if (r > 0) {
            t.kind = c == '"' ? 'q' : 'l';
        } else if (is_ident_start(c) || isdigit(c)) {
            t.kind = is_ident_start(c) ? 'w' : 'l';
            while (sc.pos < sc.len && (is_ident_char(at(&sc, sc.pos)) || (t.kind == 'l' && at(&sc, sc.pos) == '.')))
                advance(&sc, 1);
        } else {
            if (c == '(' || c == '[')
                depth++;
            if ((c == ')' || c == ']') && depth > 0)
                t.depth = --depth;
            advance(&sc, 1);
        }
        t.end = sc.pos;
        if (ts->n == ts->cap) {
            ts->cap = ts->cap ? ts->cap * 2 : 64;
            ts->v = sl_realloc(ts->v, ts->cap * sizeof *ts->v);
        }
        ts->v[ts->n++] = t;
    }
}

/* Token i is the keyword kw (an unquoted word, any case). */
static int is_kw(const toks *ts, size_t i, const char *kw)
{
    if (i >= ts->n || ts->v[i].kind != 'w')
        return 0;
    size_t len = ts->v[i].end - ts->v[i].start;
    return strlen(kw) == len && strncasecmp(ts->text + ts->v[i].start, kw, len) == 0;
}

static int is_punct(const toks *ts, size_t i, char c)
{
    return i < ts->n && ts->v[i].kind == 'p' && ts->text[ts->v[i].start] == c;
}

static int is_ident(const toks *ts, size_t i)
{
    return i < ts->n && (ts->v[i].kind == 'w' || ts->v[i].kind == 'q');
}

/* Token i, an identifier, as PostgreSQL reads it: unquoted lower-cased
 * (ASCII only, as its lexer does), quoted without its quotes and with ""
 * (`` in SQLite's `name`) read as one. With keep_quotes a quoted one stays
 * quoted, in double quotes whatever quotes it was written with. */
static void add_ident(sl_buf *b, const toks *ts, size_t i, int keep_quotes)
{
    const tok *t = &ts->v[i];
    char quote = ts->text[t->start];
    if (t->kind == 'q' && keep_quotes && quote == '"') {
        sl_buf_add(b, ts->text + t->start, t->end - t->start);
        return;
    }
    if (t->kind == 'q' && keep_quotes)
        sl_buf_adds(b, "\"");
    for (size_t p = t->start; p < t->end; p++) {
        char c = ts->text[p];
        if (t->kind == 'q' && (p == t->start || p + 1 == t->end))
            continue;
        if (t->kind == 'q' && quote != '[' && c == quote)
            p++; /* "" or `` */
        else if (t->kind == 'w' && c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        sl_buf_add(b, &c, 1);
        if (t->kind == 'q' && keep_quotes && c == '"')
            sl_buf_add(b, &c, 1);
    }
    if (t->kind == 'q' && keep_quotes)
        sl_buf_adds(b, "\"");
}

/* A relation name at *i (name, schema.name, ...) as written with unquoted
 * parts lower-cased, moving *i past it; NULL when there is none. */
static char *read_relation(const toks *ts, size_t *i)
{
    if (!is_ident(ts, *i))
        return NULL;
    sl_buf b = {0};
    add_ident(&b, ts, (*i)++, 1);
    while (is_punct(ts, *i, '.') && is_ident(ts, *i + 1)) {
        sl_buf_adds(&b, ".");
        add_ident(&b, ts, *i + 1, 1);
        *i += 2;
    }
    return sl_buf_take(&b);
}

static void add_column(sl_sql_update *u, const toks *ts, size_t i)
{
    sl_buf b = {0};
    add_ident(&b, ts, i, 0);
    u->cols = sl_realloc(u->cols, (u->ncols + 1) * sizeof *u->cols);
    u->col_lines = sl_realloc(u->col_lines, (u->ncols + 1) * sizeof *u->col_lines);
    u->cols[u->ncols] = sl_buf_take(&b);
    u->col_lines[u->ncols++] = ts->v[i].line;
}

/* Whether token i, at the SET list's depth, ends the list: FROM (not of IS
 * [NOT] DISTINCT FROM), WHERE, RETURNING, or MERGE's next WHEN. */
static int ends_set_list(const toks *ts, size_t i)
{
    if (is_kw(ts, i, "from"))
        return !is_kw(ts, i - 1, "distinct");
    return is_kw(ts, i, "where") || is_kw(ts, i, "returning") || is_kw(ts, i, "when");
}

/* The SET list from token i (after SET) at depth: each item's column (or
 * columns, for (a, b) = ...) into u. Returns the index of the token that
 * ends it. */
static size_t read_set_list(const toks *ts, size_t i, int depth, sl_sql_update *u)
{
    while (i < ts->n) {
        if (is_punct(ts, i, '(') && ts->v[i].depth == depth) {
            for (i++; i < ts->n && ts->v[i].depth > depth; i++)
                if (is_ident(ts, i) && ts->v[i].depth == depth + 1 &&
                    (is_punct(ts, i - 1, '(') || is_punct(ts, i - 1, ',')))
                    add_column(u, ts, i);
        } else if (is_ident(ts, i)) {
            add_column(u, ts, i);
        } else {
            return i; /* not a SET list after all */
        }
        /* the rest of the item: .field or [n], '=', the value; CASE ... END may hold WHEN */
        int cases = 0;
        for (i++; i < ts->n; i++) {
            const tok *t = &ts->v[i];
            if (t->depth < depth)
                return i; /* the ')' of a CTE */
            if (t->depth > depth)
                continue;
            if (is_punct(ts, i, ',') && cases == 0)
                break;
            cases += is_kw(ts, i, "case") - (cases > 0 && is_kw(ts, i, "end"));
            if (cases == 0 && ends_set_list(ts, i))
                return i;
        }
        i++;
    }
    return i;
}

/* UPDATE [ONLY] name [*] [[AS] alias] SET at token i (just past UPDATE):
 * the name, with *i moved to the token after SET; NULL when it is not that. */
static char *read_update_head(const toks *ts, size_t *i)
{
    static const char *const conflict[] = {"rollback", "abort", "replace", "fail", "ignore"};
    for (size_t c = 0; c < sizeof conflict / sizeof conflict[0]; c++)
        if (is_kw(ts, *i, "or") && is_kw(ts, *i + 1, conflict[c]))
            *i += 2; /* SQLite's UPDATE OR IGNORE t */
    *i += is_kw(ts, *i, "only");
    char *target = read_relation(ts, i);
    if (!target)
        return NULL;
    *i += is_punct(ts, *i, '*');
    if (is_kw(ts, *i, "as"))
        *i += 2;
    else if (is_ident(ts, *i) && !is_kw(ts, *i, "set"))
        *i += 1;
    if (!is_kw(ts, *i, "set")) {
        free(target);
        return NULL;
    }
    (*i)++;
    return target;
}

#define MAX_OWNER_DEPTH 32

size_t sl_stmt_updates(const sl_stmt *stmt, sl_sql_update **out)
{
    toks ts = {0};
    tokenize(stmt, &ts);
    /* the table of the INSERT or MERGE last seen at each depth: what its DO
     * UPDATE or THEN UPDATE writes */
    char *owner[MAX_OWNER_DEPTH] = {0};
    sl_sql_update *ups = NULL;
    size_t nups = 0;
    for (size_t i = 0; i < ts.n; i++) {
        int depth = ts.v[i].depth;
        if ((is_kw(&ts, i, "insert") || is_kw(&ts, i, "merge")) && is_kw(&ts, i + 1, "into") &&
            depth < MAX_OWNER_DEPTH) {
            size_t j = i + 2 + is_kw(&ts, i + 2, "only");
            free(owner[depth]);
            owner[depth] = read_relation(&ts, &j);
            continue;
        }
        if (!is_kw(&ts, i, "update") || (i > 0 && (is_kw(&ts, i - 1, "for") || is_kw(&ts, i - 1, "key"))))
            continue; /* FOR [NO KEY] UPDATE locks rows */
        size_t j = i + 1;
        char *target = NULL;
        if (i > 0 && (is_kw(&ts, i - 1, "do") || is_kw(&ts, i - 1, "then"))) {
            if (depth < MAX_OWNER_DEPTH && owner[depth] && is_kw(&ts, j, "set")) {
                target = sl_strdup(owner[depth]);
                j++;
            }
        } else {
            target = read_update_head(&ts, &j);
        }
        if (!target)
            continue;
        ups = sl_realloc(ups, (nups + 1) * sizeof *ups);
        sl_sql_update *u = &ups[nups++];
        *u = (sl_sql_update){.target = target, .line = ts.v[i].line};
        i = read_set_list(&ts, j, depth, u) - 1;
    }
    for (size_t d = 0; d < MAX_OWNER_DEPTH; d++)
        free(owner[d]);
    free(ts.v);
    *out = ups;
    return nups;
}

void sl_sql_updates_free(sl_sql_update *ups, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < ups[i].ncols; c++)
            free(ups[i].cols[c]);
        free(ups[i].cols);
        free(ups[i].col_lines);
        free(ups[i].target);
    }
    free(ups);
}
