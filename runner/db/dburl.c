/* dburl.c: --db, SLUICE_DB and DATABASE_URL in libpq's, SQLAlchemy's and sqlite: forms, normalised for the drivers. */
#include "sluice/db/dburl.h"

#include <stdlib.h>
#include <string.h>

#include "sluice/db/pq.h"

/* ---- characters (ASCII only: a locale must not change what a URL means) ---- */

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int hex_val(char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---- percent-encoding ---- */

static char *decode(const char *s, size_t len, int plus_is_space, size_t *out_len)
{
    char *out = sl_malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hex_val(s[i + 1]) >= 0 && hex_val(s[i + 2]) >= 0) {
            out[n++] = (char)(hex_val(s[i + 1]) * 16 + hex_val(s[i + 2]));
            i += 2;
        } else {
            out[n++] = plus_is_space && s[i] == '+' ? ' ' : s[i];
        }
    }
    out[n] = '\0';
    if (out_len)
        *out_len = n;
    return out;
}

char *sl_dburl_decode(const char *s, size_t len, int plus_is_space, size_t *out_len)
{
    return decode(s, len, plus_is_space, out_len);
}

char *sl_dburl_encode(const char *s, size_t len, int lower)
{
    const char *digits = lower ? "0123456789abcdef" : "0123456789ABCDEF";
    sl_buf b = {0};
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_alpha((char)c) || is_digit((char)c) || c == '-' || c == '.' || c == '_' || c == '~') {
            sl_buf_addc(&b, (char)c);
        } else {
            sl_buf_addc(&b, '%');
            sl_buf_addc(&b, digits[c >> 4]);
            sl_buf_addc(&b, digits[c & 15]);
        }
    }
    return sl_buf_take(&b);
}

/* ---- a URL's parts ---- */

/* The user info ends at the last '@' before the host, which runs to the first
 * '/' after the first '@' (the database name), else to the first '?' (the
 * query), else to the end: no host name holds an '@', so "user:p@ss@host"
 * is user "user", password "p@ss", where libpq would read a host "ss@host"
 * (and show it). A '/' or '?' before any ':' or '@' means no user info. */
static void find_userinfo(const char *s, sl_dburl_parts *u)
{
    const char *rest = s + u->auth;
    size_t k = strcspn(rest, ":@/?");
    u->host = u->auth;
    if (rest[k] != ':' && rest[k] != '@')
        return;
    const char *first_at = strchr(rest + k, '@');
    if (!first_at)
        return;
    const char *end = strchr(first_at, '/');
    if (!end)
        end = strchr(first_at, '?');
    if (!end)
        end = first_at + strlen(first_at);
    const char *last_at = first_at;
    for (const char *p = first_at; p < end; p++)
        if (*p == '@')
            last_at = p;
    size_t info_len = (size_t)(last_at - rest);
    const char *colon = memchr(rest, ':', info_len);
    u->has_user = 1;
    u->user_len = colon ? (size_t)(colon - rest) : info_len;
    if (colon) {
        u->has_password = 1;
        u->pw_off = (size_t)(colon + 1 - s);
        u->pw_len = (size_t)(last_at - colon - 1);
    }
    u->host = (size_t)(last_at + 1 - s);
}

/* The scheme: RFC 3986's letters, digits, '+', '-', '.', and SQLAlchemy's
 * '_' ("postgresql+psycopg_async"), and ':' so that "jdbc:postgresql://" is
 * recognised as a URL, to be refused. */
int sl_dburl_split(const char *s, sl_dburl_parts *u)
{
    memset(u, 0, sizeof *u);
    size_t n = 0;
    if (!is_alpha(s[0]))
        return 0;
    while (is_alpha(s[n]) || is_digit(s[n]) || (s[n] && strchr("+-._:", s[n]) != NULL)) {
        if (strncmp(s + n, "://", 3) == 0)
            break;
        n++;
    }
    if (strncmp(s + n, "://", 3) != 0)
        return 0;
    u->scheme_len = n;
    u->auth = n + 3;
    find_userinfo(s, u);
    const char *q = strchr(s + u->host, '?');
    u->query = q ? (size_t)(q - s) : strlen(s);
    return 1;
}

/* ---- PostgreSQL URLs ---- */

/* Its value is a secret (secrets.h finds and hides it). */
static int is_password_param(const char *key)
{
    return strcmp(key, "password") == 0 || strcmp(key, "sslpassword") == 0;
}

static const char *const pg_drivers[] = {"psycopg2", "psycopg", "psycopg_async", "asyncpg", "pg8000", "psycopg2cffi"};

/* Decode what SQLAlchemy decodes (in a query, '+' is a space to Python's
 * parse_qsl), encode what libpq needs encoded. */
static int add_reencoded(sl_buf *b, const char *s, size_t len, int plus_is_space, const char *what, sl_err *err)
{
    size_t n;
    char *plain = decode(s, len, plus_is_space, &n);
    if (memchr(plain, '\0', n)) {
        free(plain);
        sl_err_set(err, "the %s holds a NUL byte (%%00), which no connection can carry", what);
        return -1;
    }
    char *enc = sl_dburl_encode(plain, n, 0);
    sl_buf_adds(b, enc);
    free(enc);
    free(plain);
    return 0;
}

static int libpq_knows(const PQconninfoOption *known, const char *key)
{
    for (const PQconninfoOption *o = known; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0)
            return 1;
    return 0;
}

/* One PARAM=VALUE of a PostgreSQL URL's query: libpq's own, once. */
static int check_pg_param(const char *key, const char *value, const PQconninfoOption *known, const sl_buf *seen,
                          sl_err *err)
{
    if (strcmp(key, "ssl") == 0 && strcmp(value, "true") != 0) {
        sl_err_set(err, "query parameter ssl=%s: libpq takes only ssl=true (its sslmode=require)", value);
        sl_err_append(err, "hint: write sslmode=require, or sslmode=verify-full to check the server's certificate");
        return -1;
    }
    if (strcmp(key, "ssl") != 0 && strcmp(key, SL_DBURL_POOLER) != 0 && !libpq_knows(known, key)) {
        /* a name no parameter has ("?:secret@host/db", a password's unencoded '?') is not shown */
        if (key[strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")] != '\0')
            sl_err_set(err, "the URL's query (after its first '?') holds a name no parameter has, not shown: it may "
                            "be part of a password (a password's '@', '/' and '?' must be percent-encoded)");
        else
            sl_err_set(err, "query parameter \"%s\" is not a libpq connection parameter", key);
        sl_err_append(err, "hint: sluice connects through libpq and refuses what libpq would not use, rather than "
                           "connect otherwise than asked; its parameters are libpq's (sslmode, connect_timeout, "
                           "application_name, options, host, ...): see README \"Databases\"");
        return -1;
    }
    char *tagged = sl_asprintf("\n%s\n", key);
    int twice = seen->data && strstr(seen->data, tagged) != NULL;
    free(tagged);
    if (twice) {
        sl_err_set(err, "query parameter \"%s\" is given twice; libpq would use only the last", key);
        sl_err_append(err,
                      "hint: list several hosts in the URL itself: postgresql://user@host1:5432,host2:5432/dbname");
        return -1;
    }
    return 0;
}

/* A decoded query value for libpq, which decodes it again: escaped where
 * it must be, readable where it can be ("host=/var/run/postgresql"). */
static void add_query_value(sl_buf *b, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (is_alpha(*p) || is_digit(*p) || strchr("-._~/:@,!$()*;=+", *p) != NULL) {
            sl_buf_addc(b, *p);
        } else {
            char *enc = sl_dburl_encode(p, 1, 0);
            sl_buf_adds(b, enc);
            free(enc);
        }
    }
}

/* The query, checked and written again. A password's value is encoded
 * again (libpq would quote it back in an error about a bad escape). With
 * SQLAlchemy's URLs values mean what Python's parse_qsl says: '+' is a space. */
static int add_pg_query(sl_buf *b, const char *q, int sqlalchemy, sl_err *err)
{
    PQconninfoOption *known = PQconninfoParse("", NULL);
    sl_buf seen = {0};
    int rc = 0;
    char sep = '?';
    for (size_t len; rc == 0 && *q; q += len + (q[len] == '&')) {
        len = strcspn(q, "&");
        if (len == 0)
            continue;
        const char *eq = memchr(q, '=', len);
        if (!eq) {
            sl_err_set(err, "a query parameter has no \"=\": expected PARAM=VALUE pairs separated by \"&\"");
            rc = -1;
            break;
        }
        size_t vlen = len - (size_t)(eq + 1 - q);
        char *key = decode(q, (size_t)(eq - q), sqlalchemy, NULL);
        char *value = decode(eq + 1, vlen, sqlalchemy, NULL);
        int secret = is_password_param(key);
        rc = check_pg_param(key, secret ? "" : value, known, &seen, err);
        if (rc == 0) {
            sl_buf_printf(&seen, "\n%s\n", key);
            sl_buf_addc(b, sep);
            sep = '&';
            sl_buf_add(b, q, (size_t)(eq + 1 - q));
            if (secret)
                rc = add_reencoded(b, eq + 1, vlen, sqlalchemy, "password", err);
            else if (sqlalchemy)
                add_query_value(b, value);
            else
                sl_buf_add(b, eq + 1, vlen);
        }
        free(key);
        free(value);
    }
    sl_buf_free(&seen);
    PQconninfoFree(known);
    return rc;
}

/* A driver's +NAME must be one of SQLAlchemy's PostgreSQL drivers. */
static int check_pg_driver(const char *scheme, size_t len, sl_err *err)
{
    const char *plus = memchr(scheme, '+', len);
    if (!plus)
        return 0;
    size_t dlen = len - (size_t)(plus + 1 - scheme);
    for (size_t i = 0; i < sizeof pg_drivers / sizeof pg_drivers[0]; i++)
        if (strlen(pg_drivers[i]) == dlen && memcmp(pg_drivers[i], plus + 1, dlen) == 0)
            return 0;
    sl_err_set(err, "unknown PostgreSQL driver \"%.*s\" in \"%.*s://\"", (int)dlen, plus + 1, (int)len, scheme);
    sl_err_append(err, "hint: SQLAlchemy's PostgreSQL drivers are psycopg2, psycopg, psycopg_async, asyncpg, pg8000 "
                       "and psycopg2cffi; sluice connects through libpq whichever the application uses, so "
                       "postgresql://... will do");
    return -1;
}

static int parse_pg_url(const char *s, const sl_dburl_parts *u, sl_dburl *out, sl_err *err)
{
    if (check_pg_driver(s, u->scheme_len, err) != 0)
        return -1;
    int sqlalchemy = memchr(s, '+', u->scheme_len) != NULL;
    sl_buf b = {0};
    sl_buf_adds(&b, "postgresql://");
    int rc = 0;
    if (u->has_user) {
        rc = add_reencoded(&b, s + u->auth, u->user_len, 0, "user name", err);
        if (rc == 0 && u->has_password) {
            sl_buf_addc(&b, ':');
            rc = add_reencoded(&b, s + u->pw_off, u->pw_len, 0, "password", err);
        }
        sl_buf_addc(&b, '@');
    }
    sl_buf_add(&b, s + u->host, u->query - u->host);
    if (rc == 0 && s[u->query] == '?')
        rc = add_pg_query(&b, s + u->query + 1, sqlalchemy, err);
    if (rc != 0) {
        sl_buf_free(&b);
        return -1;
    }
    out->dialect = SL_DIALECT_PG;
    out->conninfo = sl_buf_take(&b);
    return 0;
}

/* ---- SQLite ---- */

/* Options of Python's sqlite3.connect(): they set up the application's
 * driver, not the file, and sluice's connection has its own. */
static const char *const pysqlite_options[] = {
    "timeout", "check_same_thread", "isolation_level", "detect_types", "cached_statements", "factory", "autocommit"};

static void refuse_memory(const char *how, sl_err *err)
{
    sl_err_set(err,
               "%s is an in-memory SQLite database: it lives and dies with the process that opens it, so "
               "sluice would migrate a new, empty database nobody else sees",
               how);
    sl_err_append(err, "hint: name the file: sqlite:///app.db (relative to the current directory), "
                       "sqlite:////srv/app.db (absolute), or sqlite:app.db");
}

static int drop_sqlite_param(const char *key, sl_dburl *out, sl_err *err)
{
    if (strcmp(key, "uri") == 0 || strcmp(key, "mode") == 0 || strcmp(key, "cache") == 0 || strcmp(key, "vfs") == 0 ||
        strcmp(key, "immutable") == 0 || strcmp(key, "nolock") == 0) {
        sl_err_set(err,
                   "query parameter \"%s\": sluice opens a SQLite database by its file name, read-write, "
                   "not as a SQLite URI",
                   key);
        sl_err_append(err, "hint: drop the query: sqlite:///app.db");
        return -1;
    }
    for (size_t i = 0; i < sizeof pysqlite_options / sizeof pysqlite_options[0]; i++) {
        if (strcmp(key, pysqlite_options[i]) == 0) {
            size_t used = strlen(out->note);
            snprintf(out->note + used, sizeof out->note - used, "%s%s", used ? ", " : "", key);
            return 0;
        }
    }
    sl_err_set(err, "query parameter \"%s\" is not an option of a SQLite URL", key);
    sl_err_append(err, "hint: sqlite:///app.db names the file; sluice has no other use for the URL's query");
    return -1;
}

static int sqlite_query(const char *q, sl_dburl *out, sl_err *err)
{
    for (size_t len; *q; q += len + (q[len] == '&')) {
        len = strcspn(q, "&");
        if (len == 0)
            continue;
        const char *eq = memchr(q, '=', len);
        char *key = decode(q, eq ? (size_t)(eq - q) : len, 1, NULL);
        int rc = drop_sqlite_param(key, out, err);
        free(key);
        if (rc != 0)
            return -1;
    }
    if (out->note[0]) {
        char *list = sl_strdup(out->note);
        snprintf(out->note, sizeof out->note,
                 "left out %s: options of Python's sqlite3 module, not of the database (sluice waits for locks "
                 "as long as the job's lock-timeout)",
                 list);
        free(list);
    }
    return 0;
}

/* sqlite://HOST/PATH?QUERY as SQLAlchemy reads it: no host; PATH relative,
 * or absolute when it starts with '/' (sqlite:////srv/app.db). */
static int parse_sqlite_url(const char *s, const sl_dburl_parts *u, sl_dburl *out, sl_err *err)
{
    const char *rest = s + u->auth;
    if (*rest != '/') {
        if (*rest == '\0' || *rest == '?') {
            refuse_memory("sqlite://", err);
            return -1;
        }
        sl_err_set(err, "a SQLite URL names a file, not a host or user: nothing may stand between \"sqlite://\" and "
                        "the path's \"/\"");
        sl_err_append(err, "hint: sqlite:///app.db (relative to the current directory), sqlite:////srv/app.db "
                           "(absolute)");
        return -1;
    }
    size_t path_len;
    char *path = decode(rest + 1, (size_t)(s + u->query - rest - 1), 0, &path_len);
    int rc = 0;
    if (memchr(path, '\0', path_len)) {
        sl_err_set(err, "the SQLite path holds a NUL byte (%%00)");
        rc = -1;
    } else if (path[0] == '\0' || strcmp(path, ":memory:") == 0) {
        refuse_memory(path[0] ? "sqlite:///:memory:" : "sqlite:/// (no path)", err);
        rc = -1;
    } else if (s[u->query] == '?') {
        rc = sqlite_query(s + u->query + 1, out, err);
    }
    const char *p = path;
    while (p[0] == '/' && p[1] == '/')
        p++; /* "////srv" is "/srv", and so reads the same when parsed again */
    if (rc == 0) {
        out->dialect = SL_DIALECT_SQLITE;
        out->conninfo = sl_asprintf("sqlite:%s", p);
    }
    free(path);
    return rc;
}

static int check_sqlite_driver(const char *scheme, size_t len, sl_err *err)
{
    const char *plus = memchr(scheme, '+', len);
    if (!plus)
        return 0;
    size_t dlen = len - (size_t)(plus + 1 - scheme);
    if ((dlen == 8 && memcmp(plus + 1, "pysqlite", 8) == 0) || (dlen == 9 && memcmp(plus + 1, "aiosqlite", 9) == 0))
        return 0;
    if (dlen == 11 && memcmp(plus + 1, "pysqlcipher", 11) == 0) {
        sl_err_set(err, "sqlite+pysqlcipher:// is an encrypted SQLCipher database, which the SQLite library sluice "
                        "uses cannot read");
        return -1;
    }
    sl_err_set(err, "unknown SQLite driver \"%.*s\" in \"%.*s://\"", (int)dlen, plus + 1, (int)len, scheme);
    sl_err_append(err, "hint: sqlite:///app.db (SQLAlchemy's pysqlite and aiosqlite drivers are accepted)");
    return -1;
}

/* ---- the whole ---- */

static int scheme_is(const char *s, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len >= n && memcmp(s, name, n) == 0 && (len == n || s[n] == '+');
}

static int refuse_scheme(const char *s, size_t len, sl_err *err)
{
    static const char *const others[][2] = {
        {"mysql", "MySQL"}, {"mariadb", "MariaDB"}, {"mssql", "SQL Server"}, {"oracle", "Oracle"}};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        if (scheme_is(s, len, others[i][0])) {
            sl_err_set(err, "\"%.*s://\" is a %s URL: sluice speaks PostgreSQL and SQLite only", (int)len, s,
                       others[i][1]);
            return -1;
        }
    }
    sl_err_set(err, "unknown database URL scheme \"%.*s://\"", (int)len, s);
    sl_err_append(err, "hint: postgresql://user@host:port/dbname (or postgres://, postgresql+psycopg2:// ...), a "
                       "libpq key=value string, or sqlite:///app.db");
    return -1;
}

int sl_dburl_parse(const char *given, sl_dburl *out, sl_err *err)
{
    memset(out, 0, sizeof *out);
    if (strcmp(given, "sqlite::memory:") == 0) {
        refuse_memory("sqlite::memory:", err);
        return -1;
    }
    if (given[0] == '"' || given[0] == '\'') {
        /* neither a URL nor a key=value string starts so: quotes kept from
         * a .env file or a shell line (never echoed: they hold a password) */
        sl_err_set(err, "the database string starts with a quote (%c): give it without the quotes around it", given[0]);
        sl_err_append(err, "hint: a .env line DATABASE_URL=\"postgresql://...\" keeps its quotes when read as is "
                           "(docker --env-file, systemd EnvironmentFile); write DATABASE_URL=postgresql://...");
        return -1;
    }
    sl_dburl_parts u;
    int lite_path = strncmp(given, "sqlite:", 7) == 0 && strncmp(given, "sqlite://", 9) != 0;
    if (lite_path || !sl_dburl_split(given, &u)) {
        /* sqlite:PATH (everything after "sqlite:" is the path), or for libpq */
        out->dialect = lite_path ? SL_DIALECT_SQLITE : SL_DIALECT_PG;
        out->conninfo = sl_strdup(given);
        return 0;
    }
    if (scheme_is(given, u.scheme_len, "postgresql") || scheme_is(given, u.scheme_len, "postgres"))
        return parse_pg_url(given, &u, out, err);
    if (scheme_is(given, u.scheme_len, "sqlite")) {
        if (check_sqlite_driver(given, u.scheme_len, err) != 0)
            return -1;
        return parse_sqlite_url(given, &u, out, err);
    }
    return refuse_scheme(given, u.scheme_len, err);
}

/* ---- sluice's own settings in a PostgreSQL string ---- */

/* As libpq's isspace() in the C locale. */
static int kv_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* The end of a key=value string's value at p: '...' with backslash escapes
 * (the closing quote included), or a run of non-space characters. */
static const char *kv_end(const char *p)
{
    int quoted = *p == '\'';
    for (p += quoted; *p && (quoted ? *p != '\'' : !kv_space(*p)); p++)
        if (*p == '\\' && p[1])
            p++;
    return *p == '\'' ? p + 1 : p;
}

/* A value as libpq reads it: quotes and backslash escapes removed. */
static char *kv_unquote(const char *v, size_t len)
{
    sl_buf b = {0};
    size_t i = v[0] == '\'' ? 1 : 0, end = v[0] == '\'' && len > 1 ? len - 1 : len;
    for (; i < end; i++) {
        if (v[i] == '\\' && i + 1 < end)
            i++;
        sl_buf_addc(&b, v[i]);
    }
    return sl_buf_take(&b);
}

static int take_kv(const char *s, const char *key, char **value, char **rest)
{
    size_t klen = strlen(key);
    for (const char *p = s; *p;) {
        while (kv_space(*p))
            p++;
        const char *k = p;
        while (*p && *p != '=' && !kv_space(*p))
            p++;
        size_t this_len = (size_t)(p - k);
        while (kv_space(*p))
            p++;
        if (*p != '=')
            continue; /* not a pair: libpq's to refuse */
        p++;
        while (kv_space(*p))
            p++;
        const char *v = p;
        p = kv_end(p);
        if (this_len == klen && memcmp(k, key, klen) == 0) {
            *value = kv_unquote(v, (size_t)(p - v));
            sl_buf b = {0};
            sl_buf_add(&b, s, (size_t)(k - s));
            sl_buf_adds(&b, p);
            *rest = sl_buf_take(&b);
            return 1;
        }
    }
    return 0;
}

static int take_query(const char *s, const sl_dburl_parts *u, const char *key, char **value, char **rest)
{
    sl_buf b = {0};
    sl_buf_add(&b, s, u->query);
    int found = 0;
    char sep = '?';
    const char *q = s[u->query] == '?' ? s + u->query + 1 : s + u->query;
    for (size_t len; *q; q += len + (q[len] == '&')) {
        len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);
        char *name = decode(q, eq ? (size_t)(eq - q) : len, 0, NULL);
        if (!found && eq && strcmp(name, key) == 0) {
            *value = decode(eq + 1, len - (size_t)(eq + 1 - q), 0, NULL);
            found = 1;
        } else if (len > 0) {
            sl_buf_addc(&b, sep);
            sl_buf_add(&b, q, len);
            sep = '&';
        }
        free(name);
    }
    *rest = sl_buf_take(&b);
    if (!found) {
        free(*rest);
        *rest = NULL;
    }
    return found;
}

int sl_dburl_take_param(const char *conninfo, const char *key, char **value, char **rest)
{
    sl_dburl_parts u;
    *value = NULL;
    *rest = NULL;
    int found =
        sl_dburl_split(conninfo, &u) ? take_query(conninfo, &u, key, value, rest) : take_kv(conninfo, key, value, rest);
    if (!found)
        *rest = sl_strdup(conninfo);
    size_t n = strlen(*rest);
    while (n > 0 && kv_space((*rest)[n - 1]))
        (*rest)[--n] = '\0'; /* "dbname=x sluice_pooler=none" leaves a space; a string of spaces would be a dbname */
    return found;
}

void sl_dburl_free(sl_dburl *url)
{
    free(url->conninfo);
    url->conninfo = NULL;
}
