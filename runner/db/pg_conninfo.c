/* pg_conninfo.c: PostgreSQL connection strings: sl_pg_init's parsing, the printable display, libpq's messages without
 * secrets. */
#include "sluice/base/fiber.h"
#include "sluice/db/dburl.h"
#include "sluice/db/secrets.h"

#include "pg_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static int pg_parse(uv_loop_t *loop, sl_pg *pg, const char *conninfo, sl_err *err);

/* Fold libpq's multi-line messages ("...failed: Connection refused\n\tIs the
 * server running...") into one line, in place. */
char *pg_oneline(char *s)
{
    size_t out = 0;
    int pending_space = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] == '\n' || s[i] == '\r') {
            pending_space = 1;
            continue;
        }
        if (pending_space && isspace((unsigned char)s[i]))
            continue;
        if (pending_space && out > 0)
            s[out++] = ' ';
        pending_space = 0;
        s[out++] = s[i];
    }
    while (out > 0 && isspace((unsigned char)s[out - 1]))
        out--;
    s[out] = '\0';
    return s;
}

/* libpq's message about pg's connection, on one line, without secrets. */
char *pg_safe_line(const sl_pg *pg, const char *message, const char *fallback)
{
    char *one = pg_oneline(sl_strdup(message ? message : ""));
    char *line = sl_secrets_scrub(one, pg->conninfo);
    free(one);
    if (line[0] == '\0') {
        free(line);
        line = sl_strdup(fallback);
    }
    return line;
}

static const char *pg_opt(const PQconninfoOption *opts, const char *keyword)
{
    for (const PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, keyword) == 0)
            return o->val && o->val[0] ? o->val : NULL;
    }
    return NULL;
}

/* First of: the string's own value, libpq's default (PG* environment,
 * compiled-in), then fallback. */
static const char *pg_pick(const PQconninfoOption *opts, const PQconninfoOption *defaults, const char *keyword,
                           const char *fallback)
{
    const char *v = pg_opt(opts, keyword);
    if (!v)
        v = pg_opt(defaults, keyword);
    return v ? v : fallback;
}

/* "user@host:port/dbname" the way libpq will resolve it; never the password.
 * "[local]" (psql's word) stands for the default Unix-domain socket. */
static char *pg_make_display(const PQconninfoOption *opts)
{
    PQconninfoOption *defaults = PQconndefaults();
    const char *user = pg_pick(opts, defaults, "user", "?");
    const char *host = pg_opt(opts, "host");
    if (!host)
        host = pg_opt(opts, "hostaddr");
    if (!host)
        host = pg_pick(NULL, defaults, "host", NULL);
    if (!host)
        host = pg_pick(NULL, defaults, "hostaddr", "[local]");
    const char *port = pg_pick(opts, defaults, "port", "5432");
    const char *dbname = pg_pick(opts, defaults, "dbname", user);
    /* A database name holding '@' is a URL that split where its writer did
     * not mean it to: a password with an unencoded '/', '?' or '@' puts the
     * rest of it in the host and the database name, and no message may show
     * those. */
    char *display = strchr(dbname, '@') ? sl_asprintf("%s@(host and database not shown: the database name holds '@'; "
                                                      "a password's '@', '/' and '?' must be percent-encoded)",
                                                      user)
                                        : sl_asprintf("%s@%s:%s/%s", user, host, port, dbname);
    PQconninfoFree(defaults);
    return display;
}

/* sluice_pooler=... (else SLUICE_POOLER) into *mode. */
static int pg_read_pooler(const char *value, const char *where, sl_pg_pooler *mode, sl_err *err)
{
    if (!value || strcmp(value, "auto") == 0 || value[0] == '\0')
        *mode = SL_POOLER_AUTO;
    else if (strcmp(value, "transaction") == 0)
        *mode = SL_POOLER_TRANSACTION;
    else if (strcmp(value, "session") == 0 || strcmp(value, "none") == 0)
        *mode = SL_POOLER_SESSION;
    else {
        sl_err_set(err,
                   "%s \"%.40s\": expected transaction (a pooler in transaction mode, such as PgBouncer's "
                   "pool_mode = transaction), session or none (the server session is sluice's until it "
                   "disconnects), or auto",
                   where, value);
        return -1;
    }
    return 0;
}

int sl_pg_init(uv_loop_t *loop, sl_pg *pg, const char *given, sl_err *err)
{
    memset(pg, 0, sizeof *pg);
    char *setting = NULL, *conninfo = NULL;
    int in_string = sl_dburl_take_param(given, SL_DBURL_POOLER, &setting, &conninfo);
    const char *env = getenv("SLUICE_POOLER");
    int rc = in_string ? pg_read_pooler(setting, SL_DBURL_POOLER, &pg->pooler, err)
                       : pg_read_pooler(env, "SLUICE_POOLER", &pg->pooler, err);
    free(setting);
    if (rc == 0)
        rc = pg_parse(loop, pg, conninfo, err);
    free(conninfo);
    return rc;
}

/* libpq reads the port (a list of them, one per host) only when it
 * connects, and a value it cannot read fails like a server that does not
 * answer: checked here as libpq checks it (fe-connect.c's parse_int_param:
 * an integer from 1 to 65535, spaces around it; empty for the default),
 * the environment's PGPORT included. 0, or -1 with err. */
static int pg_check_port(const PQconninfoOption *opts, sl_err *err)
{
    PQconninfoOption *defaults = PQconndefaults();
    const char *given = pg_opt(opts, "port");
    const char *port = given ? given : pg_pick(NULL, defaults, "port", "");
    int bad = 0;
    for (const char *p = port; *p && !bad;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t i = 0, digits = 0;
        long value = 0;
        while (i < len && isspace((unsigned char)p[i]))
            i++;
        if (i < len && p[i] == '+')
            i++;
        for (; i < len && isdigit((unsigned char)p[i]) && value <= 65535; i++, digits++)
            value = value * 10 + (p[i] - '0');
        while (i < len && isspace((unsigned char)p[i]))
            i++;
        int blank = 1;
        for (size_t j = 0; j < len; j++)
            blank &= isspace((unsigned char)p[j]) != 0;
        bad = !blank && (i < len || digits == 0 || value < 1 || value > 65535);
        p = end ? end + 1 : p + len;
    }
    if (bad) {
        char *shown = sl_strdup(port);
        for (char *c = shown; *c; c++)
            if (!isprint((unsigned char)*c))
                *c = '?';
        sl_err_set(err, "invalid database connection string: port \"%s\"%s is not a port number from 1 to 65535", shown,
                   given ? "" : " (from PGPORT)");
        sl_err_append(err, "hint: one number per host, separated by commas (port=5432 or :5432 in a URL)");
        free(shown);
    }
    PQconninfoFree(defaults);
    return bad ? -1 : 0;
}

/* The rest of sl_pg_init, on the string libpq reads. */
static int pg_parse(uv_loop_t *loop, sl_pg *pg, const char *conninfo, sl_err *err)
{
    char *parse_error = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &parse_error);
    if (!opts) {
        char *safe = sl_secrets_scrub(parse_error ? pg_oneline(parse_error) : "out of memory", conninfo);
        sl_err_set(err, "invalid database connection string: %s", safe);
        sl_err_append(err, "hint: use postgresql://user@host:port/dbname or key=value pairs such as "
                           "\"host=localhost dbname=app\"");
        free(safe);
        PQfreemem(parse_error);
        return -1;
    }
    if (pg_check_port(opts, err) != 0) {
        PQconninfoFree(opts);
        return -1;
    }
    int rc = uv_timer_init(loop, &pg->timer);
    if (rc != 0) {
        PQconninfoFree(opts);
        sl_err_set(err, "could not create a timer: %s", uv_strerror(rc));
        return -1;
    }
    pg->timer.data = pg;
    pg->loop = loop;
    pg->tag = sl_fiber_current_tag();
    pg->conninfo = sl_strdup(conninfo);
    pg->display = pg_make_display(opts);
    pg->poll_fd = -1;
    PQconninfoFree(opts);
    return 0;
}
