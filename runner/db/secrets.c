/* secrets.c: where the passwords are in a database string; blanking them in argv, scrubbing them from messages. */
#include "sluice/db/secrets.h"
#include "sluice/db/dburl.h"

#include <stdlib.h>
#include <string.h>

#include "sluice/db/pq.h"

/* ---- finding them ---- */

/* As libpq's isspace() in the C locale. */
static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static int is_secret_key(const char *key, size_t len)
{
    return (len == 8 && memcmp(key, "password", 8) == 0) || (len == 11 && memcmp(key, "sslpassword", 11) == 0);
}

static size_t add_span(sl_secret_span *spans, size_t max, size_t n, size_t off, size_t len)
{
    if (len > 0 && n < max)
        spans[n] = (sl_secret_span){off, len};
    return len > 0 ? n + 1 : n;
}

/* Query parameters PARAM=VALUE separated by '&'; a piece without '=' after
 * a password's value can only be more of it (an unescaped '&'). */
static size_t query_secrets(const char *s, size_t from, sl_secret_span *spans, size_t max, size_t n)
{
    const char *p = s + from;
    while (*p) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        if (eq) {
            char *key = sl_dburl_decode(p, (size_t)(eq - p), 1, NULL);
            int secret = is_secret_key(key, strlen(key));
            free(key);
            size_t vlen = len - (size_t)(eq + 1 - p);
            while (secret && p[len] == '&' && !memchr(p + len + 1, '=', strcspn(p + len + 1, "&"))) {
                size_t more = strcspn(p + len + 1, "&");
                len += 1 + more;
                vlen += 1 + more;
            }
            if (secret)
                n = add_span(spans, max, n, (size_t)(eq + 1 - s), vlen);
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return n;
}

static const char *skip_space(const char *p)
{
    while (is_space(*p))
        p++;
    return p;
}

/* A libpq key=value value: quoted ('...' with backslash escapes) or a run of
 * non-space characters (backslash escapes too). Returns its end. */
static const char *kv_value_end(const char *p)
{
    if (*p == '\'') {
        for (p++; *p && *p != '\''; p++)
            if (*p == '\\' && p[1])
                p++;
        return p;
    }
    for (; *p && !is_space(*p); p++)
        if (*p == '\\' && p[1])
            p++;
    return p;
}

/* After an unquoted password: words that are no KEY=... pair ("password=a
 * b host=x": libpq takes "a" and chokes on "b"), which are more of it. */
static const char *kv_more_words(const char *end)
{
    for (;;) {
        const char *w = skip_space(end);
        if (!*w || w == end)
            return end;
        const char *w_end = w;
        while (*w_end && !is_space(*w_end) && *w_end != '=')
            w_end++;
        if (*skip_space(w_end) == '=')
            return end;
        end = kv_value_end(w);
    }
}

static size_t kv_secrets(const char *s, sl_secret_span *spans, size_t max, size_t n)
{
    const char *p = skip_space(s);
    while (*p) {
        const char *key = p;
        while (*p && *p != '=' && !is_space(*p))
            p++;
        size_t key_len = (size_t)(p - key);
        p = skip_space(p);
        if (*p != '=')
            continue; /* a word with no value: libpq's error to report */
        p = skip_space(p + 1);
        int quoted = *p == '\'';
        const char *v = quoted ? p + 1 : p;
        const char *end = kv_value_end(p);
        if (!quoted && is_secret_key(key, key_len))
            end = kv_more_words(end);
        if (is_secret_key(key, key_len))
            n = add_span(spans, max, n, (size_t)(v - s), (size_t)(end - v));
        p = skip_space(*end == '\'' ? end + 1 : end);
    }
    return n;
}

/* A URL's password and password parameters, offsets from base. */
static size_t url_secrets(const char *base, const char *s, const sl_dburl_parts *u, sl_secret_span *spans, size_t max,
                          size_t n)
{
    size_t at = (size_t)(s - base);
    if (u->has_password)
        n = add_span(spans, max, n, at + u->pw_off, u->pw_len);
    if (s[u->query] == '?') {
        size_t before = n < max ? n : max;
        n = query_secrets(s, u->query + 1, spans, max, n);
        for (size_t i = before; i < n && i < max; i++)
            spans[i].off += at;
    }
    return n;
}

static int is_scheme_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
           c == '.';
}

size_t sl_secrets_find(const char *s, sl_secret_span *spans, size_t max)
{
    sl_dburl_parts u;
    if (sl_dburl_split(s, &u))
        return url_secrets(s, s, &u, spans, max, 0);
    size_t n = kv_secrets(s, spans, max, 0);
    /* A URL inside something libpq cannot read ("postgresql://...",
     * DATABASE_URL=postgresql://..., a blank before it): libpq's error
     * quotes the whole piece, so its password is a secret too. */
    for (const char *hit = strstr(s, "://"); hit; hit = strstr(hit + 3, "://")) {
        const char *start = hit;
        while (start > s && is_scheme_char(start[-1]))
            start--;
        if (start < hit && sl_dburl_split(start, &u))
            n = url_secrets(s, start, &u, spans, max, n);
    }
    return n;
}

void sl_secrets_hide(char *s)
{
    sl_secret_span spans[16];
    size_t n = sl_secrets_find(s, spans, 16);
    for (size_t i = 0; i < n && i < 16; i++)
        memset(s + spans[i].off, '*', spans[i].len);
}

/* ---- scrubbing messages ---- */

/* A secret in every form a message may quote it: as libpq holds it, and
 * percent-encoded (upper and lower case). list holds NUL-separated strings. */
static void add_forms(sl_buf *list, const char *s, size_t len)
{
    if (len == 0)
        return;
    char *forms[3] = {sl_strndup(s, len), sl_dburl_encode(s, len, 0), sl_dburl_encode(s, len, 1)};
    for (size_t i = 0; i < 3; i++) {
        sl_buf_add(list, forms[i], strlen(forms[i]) + 1);
        free(forms[i]);
    }
}

/* Word by word: libpq cuts an unquoted "password=a b" after "a" and then
 * complains about "b". */
static void add_words(sl_buf *list, const char *v, size_t len)
{
    for (size_t at = 0; at < len;) {
        size_t word = 0;
        while (at + word < len && !is_space(v[at + word]))
            word++;
        if (word < len)
            add_forms(list, v + at, word);
        at += word;
        while (at < len && is_space(v[at]))
            at++;
    }
}

/* The secrets as written in conninfo and decoded: what libpq's error quotes
 * when it cannot parse the string ('invalid percent-encoded token: "s3%zz"'),
 * also word by word then. */
static void add_written(sl_buf *list, const char *conninfo, int parsed)
{
    sl_secret_span spans[8];
    size_t n = sl_secrets_find(conninfo, spans, 8);
    for (size_t i = 0; i < n && i < 8; i++) {
        const char *v = conninfo + spans[i].off;
        char *plain = sl_dburl_decode(v, spans[i].len, 0, NULL);
        add_forms(list, v, spans[i].len);
        add_forms(list, plain, strlen(plain));
        if (!parsed)
            add_words(list, v, spans[i].len);
        free(plain);
    }
}

/* A URL that split where its writer did not mean it to: a password with
 * an unencoded '/', '?' or '@' leaves the rest of it in the host and in a
 * database name that then holds an '@' (no real one does, pg_make_display):
 * both count as secrets, as libpq names the host it cannot reach. */
static void add_split_parts(sl_buf *list, const PQconninfoOption *opts)
{
    const char *host = NULL, *dbname = NULL;
    for (const PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
    }
    if (!dbname || !strchr(dbname, '@'))
        return;
    add_forms(list, dbname, strlen(dbname));
    if (host)
        add_forms(list, host, strlen(host));
}

/* Every password and sslpassword libpq will use: the string's own, as
 * PQconninfoParse reads it, and PGPASSWORD's. Returns whether it parsed. */
static int add_parsed(sl_buf *list, const char *conninfo)
{
    PQconninfoOption *sets[2] = {PQconninfoParse(conninfo, NULL), PQconndefaults()};
    int parsed = sets[0] != NULL;
    add_split_parts(list, sets[0]);
    for (size_t i = 0; i < 2; i++) {
        for (const PQconninfoOption *o = sets[i]; o && o->keyword; o++)
            if (o->val && (strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "sslpassword") == 0))
                add_forms(list, o->val, strlen(o->val));
        PQconninfoFree(sets[i]);
    }
    return parsed;
}

static int longer_first(const void *a, const void *b)
{
    size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
    return la < lb ? 1 : la > lb ? -1 : 0;
}

static char *replace_all(char *text, const char *secret)
{
    sl_buf out = {0};
    size_t len = strlen(secret);
    const char *p = text;
    for (const char *hit; (hit = strstr(p, secret)) != NULL; p = hit + len) {
        sl_buf_add(&out, p, (size_t)(hit - p));
        sl_buf_adds(&out, "***");
    }
    sl_buf_adds(&out, p);
    free(text);
    return sl_buf_take(&out);
}

/* message with every occurrence of every secret of conninfo replaced by
 * "***", longest first, so that a secret inside a longer one does not leave
 * the rest of the longer one behind. libpq quotes tokens of a string it
 * cannot parse ('invalid percent-encoded token: "s3%zz"'), and a server may
 * echo what it was sent. */
char *sl_secrets_scrub(const char *message, const char *conninfo)
{
    sl_buf list = {0};
    int parsed = add_parsed(&list, conninfo ? conninfo : "");
    add_written(&list, conninfo ? conninfo : "", parsed);
    size_t count = 0;
    for (size_t at = 0; at < list.len; at += strlen(list.data + at) + 1)
        count++;
    const char **secrets = sl_calloc(count + 1, sizeof *secrets);
    count = 0;
    for (size_t at = 0; at < list.len; at += strlen(list.data + at) + 1)
        secrets[count++] = list.data + at;
    qsort(secrets, count, sizeof *secrets, longer_first);
    char *text = sl_strdup(message);
    for (size_t i = 0; i < count; i++)
        text = replace_all(text, secrets[i]);
    free(secrets);
    sl_buf_free(&list);
    return text;
}
