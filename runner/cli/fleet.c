/* fleet.c: the targets of a fleet: a targets file or several --db, their names, and which one runs now. */
#include "sluice/cli/fleet.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "sluice/base/fiber.h"
#include "sluice/db/dburl.h"
#include "sluice/db/pq.h"
#include "sluice/db/secrets.h"

#define NAME_MAX_LEN 63

void sl_fleet_free(sl_fleet *fleet)
{
    for (size_t i = 0; i < fleet->n; i++) {
        free(fleet->targets[i].name);
        free(fleet->targets[i].db);
        free(fleet->targets[i].origin);
    }
    free(fleet->targets);
    memset(fleet, 0, sizeof *fleet);
}

const sl_target *sl_fleet_find(const sl_fleet *fleet, const char *name)
{
    for (size_t i = 0; i < fleet->n; i++)
        if (strcmp(fleet->targets[i].name, name) == 0)
            return &fleet->targets[i];
    return NULL;
}

static int valid_name(const char *name, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN || !isalnum((unsigned char)name[0]))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '.' && name[i] != '-')
            return 0;
    return 1;
}

/* Add name -> given (normalised by dburl); err says why not, from origin. */
static int add(sl_fleet *fleet, const char *name, const char *given, const char *origin, sl_err *err)
{
    if (sl_fleet_find(fleet, name)) {
        sl_err_set(err,
                   "%s: target name \"%s\" is given twice (hint: each target needs a name of its own: its "
                   "checkpoints live in <checkpoints>/<NAME>/)",
                   origin, name);
        return -1;
    }
    sl_dburl url;
    sl_err uerr;
    if (sl_dburl_parse(given, &url, &uerr) != 0) {
        sl_err_set(err, "%s: target %s: %s", origin, name, uerr.msg);
        return -1;
    }
    fleet->targets = sl_realloc(fleet->targets, (fleet->n + 1) * sizeof *fleet->targets);
    sl_target *t = &fleet->targets[fleet->n++];
    t->name = sl_strdup(name);
    t->db = sl_strdup(url.conninfo);
    t->origin = sl_strdup(origin);
    sl_dburl_free(&url);
    return 0;
}

/* One line: "NAME URL". 0 added or nothing there, -1 err. */
static int read_line(sl_fleet *fleet, const char *path, int lineno, char *line, sl_err *err)
{
    char origin[512];
    snprintf(origin, sizeof origin, "%s:%d", path, lineno);
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    char *name = p;
    while (*p && *p != ' ' && *p != '\t')
        p++;
    size_t nlen = (size_t)(p - name);
    while (*p == ' ' || *p == '\t')
        p++;
    char *url = p;
    size_t ulen = strlen(url);
    while (ulen > 0 && (url[ulen - 1] == ' ' || url[ulen - 1] == '\t'))
        url[--ulen] = '\0';
    if (ulen == 0 || strpbrk(url, " \t")) {
        sl_err_set(err, "%s: expected NAME URL (one target a line: a name, blanks, a database string without blanks)",
                   origin);
        sl_err_append(err, "hint: a libpq key=value string has blanks: write it as a postgresql:// URL");
        return -1;
    }
    if (!valid_name(name, nlen)) {
        sl_err_set(err,
                   "%s: \"%.*s\" is not a target name: 1 to %d letters, digits, '_', '.' or '-', starting with a "
                   "letter or digit",
                   origin, (int)(nlen > 80 ? 80 : nlen), name, NAME_MAX_LEN);
        return -1;
    }
    name[nlen] = '\0';
    return add(fleet, name, url, origin, err);
}

/* A file others may read must not hold a password (as libpq refuses a
 * .pgpass others can read). */
static int check_mode(const char *path, const char *text, sl_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0 || (st.st_mode & 077) == 0)
        return 0;
    int has = 0; /* each line's URL: the file as a whole is no database string */
    for (const char *line = text; *line && !has;) {
        size_t len = strcspn(line, "\n");
        char *copy = sl_strndup(line, len);
        const char *url = copy + strcspn(copy, " \t");
        url += strspn(url, " \t");
        sl_secret_span span;
        has = sl_secrets_find(url, &span, 1) > 0;
        free(copy);
        line += len + (line[len] == '\n');
    }
    if (!has)
        return 0;
    sl_err_set(err, "%s holds passwords and can be read by others than its owner (mode %03o)", path,
               (unsigned)(st.st_mode & 0777));
    sl_err_append(err, "hint: chmod 600 %s, or keep the passwords in ~/.pgpass (mode 0600) and out of the file", path);
    return -1;
}

int sl_fleet_read(const char *path, sl_fleet *fleet, sl_err *err)
{
    char *text;
    size_t len;
    if (sl_read_file(path, &text, &len, err) != 0)
        return -1;
    int rc = strlen(text) != len ? -1 : check_mode(path, text, err);
    if (strlen(text) != len)
        sl_err_set(err, "%s: a NUL byte in a targets file", path);
    int lineno = 0;
    for (char *line = text; rc == 0 && line && *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        size_t l = strlen(line);
        if (l > 0 && line[l - 1] == '\r')
            line[l - 1] = '\0';
        rc = read_line(fleet, path, ++lineno, line, err);
        line = end ? end + 1 : NULL;
    }
    if (rc == 0 && fleet->n == 0) {
        sl_err_set(err, "%s: no target in it (hint: one \"NAME URL\" a line)", path);
        rc = -1;
    }
    free(text);
    if (rc != 0)
        sl_fleet_free(fleet);
    return rc;
}

/* A name from a database string: a SQLite file's name, or host[-port]-dbname. */
static char *name_of(const char *db)
{
    sl_buf b = {0};
    if (strncmp(db, "sqlite:", 7) == 0) {
        const char *base = strrchr(db + 7, '/');
        base = base ? base + 1 : db + 7;
        size_t n = strcspn(base, ".");
        sl_buf_add(&b, base, n ? n : strlen(base));
    } else {
        PQconninfoOption *opts = PQconninfoParse(db, NULL);
        const char *host = NULL, *port = NULL, *dbname = NULL;
        for (PQconninfoOption *o = opts; o && o->keyword; o++) {
            if (strcmp(o->keyword, "host") == 0)
                host = o->val;
            else if (strcmp(o->keyword, "port") == 0)
                port = o->val;
            else if (strcmp(o->keyword, "dbname") == 0)
                dbname = o->val;
        }
        sl_buf_printf(&b, "%s%s%s-%s", host && host[0] != '/' ? host : "local", port ? "-" : "", port ? port : "",
                      dbname ? dbname : "db");
        PQconninfoFree(opts);
    }
    for (size_t i = 0; i < b.len; i++)
        if (!isalnum((unsigned char)b.data[i]) && b.data[i] != '_' && b.data[i] != '.' && b.data[i] != '-')
            b.data[i] = '_';
    if (b.len == 0 || !isalnum((unsigned char)b.data[0])) {
        char *rest = sl_buf_take(&b);
        sl_buf_printf(&b, "db%s", rest);
        free(rest);
    }
    if (b.len > NAME_MAX_LEN - 4)
        b.data[b.len = NAME_MAX_LEN - 4] = '\0';
    return sl_buf_take(&b);
}

int sl_fleet_add_db(sl_fleet *fleet, const char *db, int index, sl_err *err)
{
    char origin[32];
    snprintf(origin, sizeof origin, "--db #%d", index);
    sl_dburl url;
    sl_err uerr;
    if (sl_dburl_parse(db, &url, &uerr) != 0) {
        sl_err_set(err, "%s: %s", origin, uerr.msg);
        return -1;
    }
    char *base = name_of(url.conninfo);
    sl_dburl_free(&url);
    char *name = sl_strdup(base);
    for (int k = 2; sl_fleet_find(fleet, name); k++) {
        free(name);
        name = sl_asprintf("%s-%d", base, k);
    }
    int rc = add(fleet, name, db, origin, err);
    free(base);
    free(name);
    return rc;
}

int sl_fleet_worse(int a, int b)
{
    static const int rank[] = {[SL_EXIT_OK] = 0, [SL_EXIT_STOPPED] = 1, [SL_EXIT_USAGE] = 2, [SL_EXIT_FAILED] = 3};
    int ra = a >= 0 && a <= 3 ? rank[a] : 3, rb = b >= 0 && b <= 3 ? rank[b] : 3;
    return ra >= rb ? a : b;
}

/* The target of a command run one target after the other, on the main stack. */
static const sl_target *in_turn;

const sl_target *sl_fleet_current(void)
{
    if (sl_fiber_current())
        return sl_fiber_current_tag();
    const sl_target *lent = sl_fiber_current_tag();
    return lent ? lent : in_turn;
}

typedef struct fleet_call {
    const sl_target *target;
    uv_loop_t *loop;
    int (*fn)(const sl_target *target, uv_loop_t *loop, void *arg);
    void *arg;
    int code;
} fleet_call;

static void run_call(void *arg)
{
    fleet_call *c = arg;
    c->code = c->fn(c->target, c->loop, c->arg);
}

int sl_fleet_run(const sl_fleet *fleet, uv_loop_t *loop, size_t parallel,
                 int (*fn)(const sl_target *target, uv_loop_t *loop, void *arg), void *arg)
{
    int code = SL_EXIT_OK;
    if (parallel == 0) {
        for (size_t i = 0; i < fleet->n; i++) {
            in_turn = &fleet->targets[i];
            code = sl_fleet_worse(code, fn(&fleet->targets[i], NULL, arg));
        }
        in_turn = NULL;
        return code;
    }
    fleet_call *calls = sl_calloc(fleet->n + 1, sizeof *calls);
    sl_fiber **fibers = sl_calloc(fleet->n + 1, sizeof *fibers);
    for (size_t i = 0; i < fleet->n; i++) {
        calls[i] = (fleet_call){&fleet->targets[i], loop, fn, arg, SL_EXIT_OK};
        fibers[i] = sl_fiber_new(run_call, &calls[i]);
        sl_fiber_set_tag(fibers[i], &fleet->targets[i]);
    }
    sl_fiber_run_all(loop, fibers, fleet->n, parallel);
    for (size_t i = 0; i < fleet->n; i++) {
        code = sl_fleet_worse(code, calls[i].code);
        sl_fiber_free(fibers[i]);
    }
    free(fibers);
    free(calls);
    return code;
}
