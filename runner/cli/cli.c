/* cli.c: parse the command line, load and validate job files, dispatch to the commands. */
#include "sluice/cli/cli.h"
#include "sluice/base/log.h"
#include "sluice/db/dburl.h"
#include "sluice/db/secrets.h"
#include "sluice/services/metrics.h"
#include "sluice/services/progress.h"

#include "cli_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct cli_args {
    sl_opts opts;
    const char *pos[8];
    int npos;
    int help;
    const char *on_conflict; /* --on-conflict, checked by dispatch_down */
    const char *log_format;  /* --log-format, checked by apply_observability */
    const char *sample;      /* --sample, checked by apply_observability */
    int version;             /* --version */
    char **dbs;              /* copies of every --db's value, whose passwords argv no longer shows */
    int ndbs;
    const char *targets;                /* --targets FILE */
    const char *parallel;               /* --parallel N */
    int64_t parallel_n;                 /* its value, checked by dispatch (default 4) */
    const char *only_target;            /* --target NAME */
    sl_fleet fleet;                     /* several --db, or --targets: every command applies to each */
    sl_dburl db_url;                    /* the database string in use, normalised (opts.db points into it) */
    char *replica_arg[SL_MAX_REPLICAS]; /* copies of --replica's values, whose passwords argv no longer shows */
    size_t nreplica_arg;
    sl_dburl replica_url[SL_MAX_REPLICAS]; /* normalised; opts.run.replicas points into them */
    const char *replica[SL_MAX_REPLICAS];
} cli_args;

/* --replica URL: a copy, and the password out of argv, as for --db. */
static int keep_replica_arg(cli_args *a, char *value)
{
    if (a->nreplica_arg >= SL_MAX_REPLICAS) {
        sl_error("--replica: at most %d replicas", SL_MAX_REPLICAS);
        return -1;
    }
    a->replica_arg[a->nreplica_arg++] = sl_strdup(value);
    sl_secrets_hide(value);
    return 0;
}

/* --db's value: keep a copy, then overwrite its password in argv, which
 * /proc/PID/cmdline (ps, top) shows to every user of the machine. Given
 * several times, each is a target of a fleet. */
static const char *keep_db_arg(cli_args *a, char *value)
{
    a->dbs = sl_realloc(a->dbs, (size_t)(a->ndbs + 1) * sizeof *a->dbs);
    a->dbs[a->ndbs] = sl_strdup(value);
    sl_secrets_hide(value);
    return a->dbs[a->ndbs++];
}

/* Options may come before or after the command. */
static int parse_args(int argc, char **argv, cli_args *a)
{
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        const char **target = NULL;
        if (only_positional || arg[0] != '-' || (arg[1] >= '0' && arg[1] <= '9')) {
            if (a->npos >= 8) {
                sl_error("too many arguments (hint: sluice --help)");
                return -1;
            }
            a->pos[a->npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0)
            only_positional = 1;
        else if (strcmp(arg, "--json") == 0)
            a->opts.json = 1;
        else if (strcmp(arg, "--force") == 0) {
            sl_error("--force was split into flags that each say what they accept: --allow-changed-statements "
                     "(a job file changed after its first chunk), --allow-no-index (a key without an index)");
            return -1;
        } else if (strcmp(arg, "--allow-changed-statements") == 0)
            a->opts.run.allow_changed_statements = 1;
        else if (strcmp(arg, "--allow-no-index") == 0)
            a->opts.run.allow_no_index = 1;
        else if (strcmp(arg, "--allow-lost-undo") == 0)
            a->opts.run.allow_lost_undo = 1;
        else if (strcmp(arg, "--no-wait") == 0)
            a->opts.run.no_wait = 1;
        else if (strcmp(arg, "--allow-unmeasured-lag") == 0)
            a->opts.run.allow_unmeasured_lag = 1;
        else if (strcmp(arg, "--replica") == 0 || strncmp(arg, "--replica=", 10) == 0) {
            char *eq = strchr(arg, '=');
            char *value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (!value) {
                sl_error("option %s expects a value", arg);
                return -1;
            }
            if (keep_replica_arg(a, value) != 0)
                return -1;
        } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
            a->help = 1;
        else if (strcmp(arg, "--version") == 0)
            a->version = 1;
        else if (strcmp(arg, "--metrics") == 0 || strncmp(arg, "--metrics=", 10) == 0)
            target = &a->opts.metrics;
        else if (strcmp(arg, "--log-format") == 0 || strncmp(arg, "--log-format=", 13) == 0)
            target = &a->log_format;
        else if (strcmp(arg, "--sample") == 0 || strncmp(arg, "--sample=", 9) == 0)
            target = &a->sample;
        else if (strcmp(arg, "-o") == 0 || strcmp(arg, "--output") == 0 || strncmp(arg, "--output=", 9) == 0)
            target = &a->opts.out_file;
        else if (strcmp(arg, "--db") == 0 || strncmp(arg, "--db=", 5) == 0)
            target = &a->opts.db;
        else if (strcmp(arg, "--jobs") == 0 || strncmp(arg, "--jobs=", 7) == 0)
            target = &a->opts.jobs_dir;
        else if (strcmp(arg, "--checkpoints") == 0 || strncmp(arg, "--checkpoints=", 14) == 0)
            target = &a->opts.run.ckpt_dir;
        else if (strcmp(arg, "--on-conflict") == 0 || strncmp(arg, "--on-conflict=", 14) == 0)
            target = &a->on_conflict;
        else if (strcmp(arg, "--targets") == 0 || strncmp(arg, "--targets=", 10) == 0)
            target = &a->targets;
        else if (strcmp(arg, "--parallel") == 0 || strncmp(arg, "--parallel=", 11) == 0)
            target = &a->parallel;
        else if (strcmp(arg, "--target") == 0 || strncmp(arg, "--target=", 9) == 0)
            target = &a->only_target;
        else {
            sl_error("unknown option \"%s\" (hint: sluice --help)", arg);
            return -1;
        }
        if (target) {
            char *eq = strchr(arg, '=');
            char *value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (!value) {
                sl_error("option %s expects a value", arg);
                return -1;
            }
            *target = target == &a->opts.db ? keep_db_arg(a, value) : value;
        }
    }
    return 0;
}

/* sluice read sqlite:///srv/app.db as /srv/app.db before it read SQLAlchemy's
 * URLs as SQLAlchemy does (srv/app.db, relative): say so when only the
 * absolute file is there. */
static void hint_absolute_sqlite(const char *source, const char *given, const char *conninfo)
{
    const char *path = conninfo + strlen("sqlite:");
    if (strncmp(given, "sqlite:///", 10) != 0 || path[0] == '/' || access(path, F_OK) == 0)
        return;
    char *abs = sl_asprintf("/%s", path);
    if (access(abs, F_OK) == 0)
        sl_warn("%s: sqlite:///%s is %s in the current directory, as in SQLAlchemy (hint: for %s, write "
                "sqlite:///%s)",
                source, path, path, abs, abs);
    free(abs);
}

/* Whether s is unset, empty or only blanks. */
static int is_blank(const char *s)
{
    return !s || s[strspn(s, " \t\r\n\v\f")] == '\0';
}

/* --db, else SLUICE_DB, else DATABASE_URL (blank ones count as unset), else "" (libpq's PG* variables),
 * in any form dburl.h reads, normalised for the drivers into url. Not
 * strict (status): one it cannot use is a warning, and o->db NULL. */
static int resolve_db(sl_opts *o, sl_dburl *url, int strict)
{
    const char *source = "--db";
    if (!o->db) {
        o->db = getenv("SLUICE_DB");
        source = "SLUICE_DB";
    }
    if (is_blank(o->db)) {
        o->db = getenv("DATABASE_URL");
        source = "DATABASE_URL";
    }
    if (is_blank(o->db))
        o->db = "";
    sl_err err;
    if (sl_dburl_parse(o->db, url, &err) != 0) {
        sl_log(strict ? SL_LOG_ERROR : SL_LOG_WARN, "%s: %s", source, err.msg);
        o->db = NULL;
        return strict ? -1 : 0;
    }
    if (url->note[0])
        sl_warn("%s: %s", source, url->note);
    if (url->dialect == SL_DIALECT_SQLITE)
        hint_absolute_sqlite(source, o->db, url->conninfo);
    o->db = url->conninfo;
    return 0;
}

/* --replica, else SLUICE_REPLICAS (URLs separated by spaces), normalised
 * like --db; a replica is a PostgreSQL server. */
static int resolve_replicas(cli_args *a)
{
    const char *env = getenv("SLUICE_REPLICAS");
    const char *source = "--replica";
    if (a->nreplica_arg == 0 && env) {
        source = "SLUICE_REPLICAS";
        for (const char *p = env; *p;) {
            size_t len = strcspn(p, " \t\n");
            if (len > 0 && a->nreplica_arg >= SL_MAX_REPLICAS) {
                sl_error("SLUICE_REPLICAS: at most %d replicas", SL_MAX_REPLICAS);
                return -1;
            }
            if (len > 0)
                a->replica_arg[a->nreplica_arg++] = sl_strndup(p, len);
            p += len;
            p += strspn(p, " \t\n");
        }
    }
    if (a->nreplica_arg > 0 && a->fleet.n > 1) {
        sl_error("%s: the replicas of one database, not of %zu targets (hint: run the target whose replicas these "
                 "are on its own, with --target NAME)",
                 source, a->fleet.n);
        return -1;
    }
    for (size_t i = 0; i < a->nreplica_arg; i++) {
        sl_err err;
        if (sl_dburl_parse(a->replica_arg[i], &a->replica_url[i], &err) != 0) {
            sl_error("%s %zu: %s", source, i + 1, err.msg);
            return -1;
        }
        if (a->replica_url[i].dialect != SL_DIALECT_PG) {
            sl_dburl_free(&a->replica_url[i]);
            sl_error("%s %zu: a replica is a PostgreSQL server: postgresql://user@host:port/dbname", source, i + 1);
            return -1;
        }
        a->replica[i] = a->replica_url[i].conninfo;
        a->opts.run.nreplicas = i + 1;
    }
    a->opts.run.replicas = a->replica;
    return 0;
}

/* Only the commands that connect read the database string; status reads it
 * too, but answers from the checkpoint files when it cannot use it; history
 * and report read the checkpoint files and the database only for jobs that
 * have none; ctl asks the runner's socket, and the database only when no
 * runner listens there. */
static int resolve_defaults(cli_args *a, const char *cmd)
{
    sl_opts *o = &a->opts;
    int needs_db =
        strcmp(cmd, "up") == 0 || strcmp(cmd, "down") == 0 || strcmp(cmd, "plan") == 0 || strcmp(cmd, "stamp") == 0;
    /* a fleet's targets each have theirs (make_fleet) */
    int may_use_db = strcmp(cmd, "status") == 0 || strcmp(cmd, "history") == 0 || strcmp(cmd, "report") == 0 ||
                     strcmp(cmd, "ctl") == 0;
    if (a->fleet.n == 0 && (needs_db || may_use_db) && resolve_db(o, &a->db_url, needs_db) != 0)
        return -1;
    if ((strcmp(cmd, "up") == 0 || strcmp(cmd, "down") == 0 || strcmp(cmd, "plan") == 0) && resolve_replicas(a) != 0)
        return -1;
    if (!o->db && !may_use_db)
        o->db = "";
    if (!o->jobs_dir)
        o->jobs_dir = "jobs";
    if (!o->run.ckpt_dir)
        o->run.ckpt_dir = SL_DEFAULT_CKPT_DIR;
    o->run.progress_tty = isatty(2) && sl_log_get_format() == SL_LOG_FORMAT_TEXT;
    return 0;
}

/* Settings that cannot apply to the target database. */
static int check_target(const sl_opts *opts, const sl_job *job, sl_err *err)
{
    static const struct {
        sl_directive d;
        const char *why;
    } pg_only[] = {
        {SL_DIR_MAX_REPLICA_LAG, "a SQLite database has no replicas"},
        {SL_DIR_MAX_WAL_RATE, "a SQLite database writes no PostgreSQL WAL"},
        {SL_DIR_MAX_DEAD_TUPLES, "a SQLite database has no autovacuum"},
    };
    if (strncmp(opts->db, "sqlite:", 7) != 0)
        return 0;
    for (size_t i = 0; i < sizeof pg_only / sizeof pg_only[0]; i++) {
        if (!job->line[pg_only[i].d])
            continue;
        sl_err_set(err, "%s:%d: %s cannot apply to SQLite (--db %s): %s", job->path, job->line[pg_only[i].d],
                   sl_directive_name(pg_only[i].d), opts->db, pg_only[i].why);
        sl_err_append(err, "hint: remove the directive, or throttle with -- sluice:throttle-query SQL");
        return -1;
    }
    return 0;
}

static int load_jobs(const sl_opts *opts, sl_jobset *set, const char *only, int check)
{
    sl_err err = {{0}};
    if (sl_jobset_load(opts->jobs_dir, set, &err) != 0) {
        sl_error("%s", err.msg);
        return SL_EXIT_USAGE;
    }
    if (only && !sl_jobset_find(set, only)) {
        sl_error("no job \"%s\" in %s (hint: sluice status lists the jobs)", only, opts->jobs_dir);
        return SL_EXIT_USAGE;
    }
    int bad = 0;
    for (size_t i = 0; check && i < set->njobs; i++) {
        if (only && set->jobs + i != sl_jobset_find(set, only))
            continue;
        err.msg[0] = '\0';
        if (check_target(opts, &set->jobs[i], &err) != 0) {
            sl_error("%s", err.msg);
            bad = 1;
        }
    }
    return bad ? SL_EXIT_USAGE : SL_EXIT_OK;
}

static int want_args(const cli_args *a, int min, int max, const char *cmd)
{
    int n = a->npos - 1;
    if (n < min || n > max) {
        sl_error("%s: wrong number of arguments", cmd);
        sl_cli_print_command_help(cmd);
        return 0;
    }
    return 1;
}

/* `ctl JOB pause|resume|status|set NAME=VALUE`: one request to the runner's
 * socket, else through the database (in a fleet, to each target's runner;
 * idle as sl_cmd_ctl's). */
static int cmd_ctl(const cli_args *a, const sl_opts *o, const char *arg1, int *idle)
{
    int is_set = a->npos > 2 && strcmp(a->pos[2], "set") == 0;
    if (!want_args(a, is_set ? 3 : 2, is_set ? 3 : 2, "ctl"))
        return SL_EXIT_USAGE;
    size_t jl = strlen(arg1);
    if (jl > 4 && strcmp(arg1 + jl - 4, ".sql") == 0)
        jl -= 4;
    char *job = sl_strndup(arg1, jl);
    char *req = is_set ? sl_asprintf("set %s", a->pos[3]) : sl_strdup(a->pos[2]);
    int code = sl_cmd_ctl(o, job, req, idle);
    free(req);
    free(job);
    return code;
}

/* --on-conflict: stop (default), skip or overwrite. */
static int parse_on_conflict(cli_args *a)
{
    static const char *const modes[] = {
        [SL_CONFLICT_STOP] = "stop", [SL_CONFLICT_SKIP] = "skip", [SL_CONFLICT_OVERWRITE] = "overwrite"};
    int mode = a->on_conflict ? -1 : SL_CONFLICT_STOP;
    for (int i = 0; mode < 0 && i < 3; i++)
        if (strcmp(a->on_conflict, modes[i]) == 0)
            mode = i;
    if (mode < 0) {
        sl_error("--on-conflict \"%s\": expected stop, skip or overwrite", a->on_conflict);
        return -1;
    }
    a->opts.run.on_conflict = (sl_on_conflict)mode;
    return 0;
}

/* down JOB | -N | base: a job name must name a job file; -N and base do not. */
static int dispatch_down(const cli_args *a, const sl_opts *o)
{
    if (!want_args(a, 1, 1, "down"))
        return SL_EXIT_USAGE;
    const char *target = a->pos[1];
    int named = target[0] != '-' && strcmp(target, "base") != 0;
    sl_jobset set = {0};
    int code = load_jobs(o, &set, named ? target : NULL, 1);
    if (code == SL_EXIT_OK)
        code = sl_cmd_down(o, &set, target);
    sl_jobset_free(&set);
    return code;
}

/* --log-format, --metrics, --sample and -o: each only where it means something. */
static int apply_observability(cli_args *a, const char *cmd)
{
    sl_log_format format = SL_LOG_FORMAT_TEXT;
    if (a->log_format && sl_log_format_parse(a->log_format, &format) != 0) {
        sl_error("--log-format \"%s\": expected text or json", a->log_format);
        return -1;
    }
    sl_log_set_format(format); /* resolve_defaults draws no progress line with json */
    if (a->opts.metrics && strcmp(cmd, "up") != 0 && strcmp(cmd, "down") != 0) {
        sl_error("--metrics is for up and down, which serve metrics while they run");
        return -1;
    }
    if (a->sample && (strcmp(cmd, "plan") != 0 || sl_parse_int(a->sample, 1, 1000, &a->opts.sample) != 0)) {
        sl_error("--sample \"%s\": plan --sample N takes a number of chunks from 1 to 1000", a->sample);
        return -1;
    }
    if (a->opts.out_file && strcmp(cmd, "report") != 0) {
        sl_error("-o is for report: sluice report JOB -o FILE");
        return -1;
    }
    return 0;
}

/* Options whose empty value would mean something nobody asked for: an empty
 * --checkpoints joined to a job's name puts its files at the root of the
 * filesystem ("/JOB.sluice"). */
static int check_empty_values(const cli_args *a)
{
    const struct {
        const char *option, *value, *expected;
    } given[] = {
        {"--checkpoints", a->opts.run.ckpt_dir,
         "a directory for the checkpoint files (default ./" SL_DEFAULT_CKPT_DIR ")"},
        {"--jobs", a->opts.jobs_dir, "the directory of the job files (default ./jobs)"},
        {"-o", a->opts.out_file, "a file name for the page, or - for standard output"},
    };
    for (size_t i = 0; i < sizeof given / sizeof given[0]; i++) {
        if (given[i].value && !*given[i].value) {
            sl_error("%s \"\": expected %s", given[i].option, given[i].expected);
            return -1;
        }
    }
    /* a blank --db would be libpq's PG* defaults, whatever SLUICE_DB and DATABASE_URL say */
    for (int i = 0; i < a->ndbs; i++) {
        if (is_blank(a->dbs[i])) {
            sl_error("--db \"%s\": expected a database such as postgresql://USER@HOST/DBNAME or sqlite:PATH (hint: "
                     "leave --db out to use SLUICE_DB, else DATABASE_URL, else libpq's PG* variables)",
                     a->dbs[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < a->nreplica_arg; i++) {
        if (is_blank(a->replica_arg[i])) {
            sl_error("--replica \"%s\": expected a replica such as postgresql://USER@HOST/DBNAME", a->replica_arg[i]);
            return -1;
        }
    }
    return 0;
}

/* The environment's durations, checked before anything runs: the session
 * reads them only when it is made (session.h). */
static int check_env_values(void)
{
    sl_err err;
    if (sl_session_check_env(&err) == 0)
        return 0;
    sl_error("%s", err.msg);
    return -1;
}

/* One command against one database (o: the one of --db, or a fleet's target's). */
static int dispatch_one(const char *cmd, const cli_args *a, const sl_opts *o)
{
    const char *arg1 = a->npos > 1 ? a->pos[1] : NULL;
    sl_jobset set = {0};
    int code;
    if (strcmp(cmd, "ctl") == 0)
        return cmd_ctl(a, o, arg1, NULL);
    if (strcmp(cmd, "down") == 0)
        return dispatch_down(a, o);
    if (strcmp(cmd, "report") == 0)
        return want_args(a, 1, 1, cmd) ? sl_cmd_report(o, arg1) : SL_EXIT_USAGE;
    if (strcmp(cmd, "up") == 0) {
        if (!want_args(a, 0, 1, cmd))
            return SL_EXIT_USAGE;
        code = load_jobs(o, &set, arg1, 1);
        if (code == SL_EXIT_OK)
            code = sl_cmd_up(o, &set, arg1);
    } else if (strcmp(cmd, "plan") == 0 || strcmp(cmd, "stamp") == 0) {
        int is_plan = strcmp(cmd, "plan") == 0;
        if (!want_args(a, is_plan ? 1 : 2, is_plan ? 1 : 2, cmd))
            return SL_EXIT_USAGE;
        code = load_jobs(o, &set, arg1, is_plan);
        if (code == SL_EXIT_OK)
            code = is_plan ? sl_cmd_plan(o, sl_jobset_find(&set, arg1))
                           : sl_cmd_stamp(o, sl_jobset_find(&set, arg1), a->pos[2]);
    } else {
        sl_error("unknown command \"%s\" (hint: sluice --help lists the commands)", cmd);
        return SL_EXIT_USAGE;
    }
    sl_jobset_free(&set);
    return code;
}

/* ---- a fleet ---- */

typedef struct fleet_cmd {
    const cli_args *a;
    const char *cmd;
    int *codes;  /* each target's exit code */
    size_t idle; /* ctl: targets where the job does not run now */
} fleet_cmd;

static int on_target(const sl_target *t, uv_loop_t *loop, void *arg)
{
    fleet_cmd *c = arg;
    char *dir;
    sl_opts o = sl_target_opts(&c->a->opts, t, &dir);
    o.loop = loop;
    if (strcmp(c->cmd, "plan") == 0)
        printf("%s== target %s ==\n", t == c->a->fleet.targets ? "" : "\n", t->name);
    fflush(stdout);
    /* ctl goes to the target's socket, else through its database, as with --db: a pause there is
     * recorded for the next run, a target that cannot be reached says so */
    int idle = 0;
    int code = strcmp(c->cmd, "ctl") == 0 ? cmd_ctl(c->a, &o, c->a->npos > 1 ? c->a->pos[1] : NULL, &idle)
                                          : dispatch_one(c->cmd, c->a, &o);
    c->idle += (size_t)idle;
    c->codes[t - c->a->fleet.targets] = code;
    free(dir);
    return code;
}

static const char *fleet_prefix(void)
{
    const sl_target *t = sl_fleet_current();
    return t ? t->name : NULL;
}

/* How each target's up or down ended. */
static void fleet_summary(const sl_fleet *fleet, const int *codes)
{
    static const char *const outcome[] = {"done", "failed", "refused", "stopped"};
    for (size_t i = 0; i < fleet->n; i++) {
        const sl_target *t = &fleet->targets[i];
        const char *how = codes[i] >= 0 && codes[i] <= 3 ? outcome[codes[i]] : "?";
        /* with --log-format json, a line a target: its name, where it was named, how it ended */
        sl_log_event(SL_LOG_INFO, "fleet_target",
                     json_pack("{sssssssi}", "target", t->name, "origin", t->origin, "outcome", how, "exit", codes[i]),
                     "fleet: %s (%s): %s", t->name, t->origin, how);
    }
}

static int dispatch_fleet(const char *cmd, cli_args *a)
{
    sl_opts *o = &a->opts;
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "history") == 0) {
        if (!want_args(a, 0, strcmp(cmd, "status") == 0 ? 1 : 0, cmd))
            return SL_EXIT_USAGE;
        return strcmp(cmd, "status") == 0 ? sl_cmd_status(o, &a->fleet, a->npos > 1 ? a->pos[1] : NULL)
                                          : sl_cmd_history(o, &a->fleet);
    }
    if (strcmp(cmd, "report") == 0 && o->out_file && a->fleet.n > 1) {
        sl_error("-o names one file, and there are %zu targets (hint: --target NAME picks one; without -o each "
                 "target's page is JOB.NAME.report.html)",
                 a->fleet.n);
        return SL_EXIT_USAGE;
    }
    int concurrent = strcmp(cmd, "up") == 0 || strcmp(cmd, "down") == 0;
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* one endpoint for every target: each series has target="NAME" */
    sl_metrics_server *metrics = NULL;
    sl_err err = {{0}};
    if (concurrent && o->metrics && sl_metrics_serve(&loop, o->metrics, &metrics, &err) != 0) {
        sl_error("%s", err.msg);
        uv_run(&loop, UV_RUN_DEFAULT); /* the listener it closed */
        if (uv_loop_close(&loop) != 0)
            sl_warn("BUG: a libuv handle was left open at exit");
        return SL_EXIT_USAGE;
    }
    fleet_cmd c = {a, cmd, sl_calloc(a->fleet.n + 1, sizeof(int))};
    sl_log_set_prefix(fleet_prefix);
    sl_progress_set_owner(fleet_prefix);
    int code =
        sl_fleet_run(&a->fleet, concurrent ? &loop : NULL, concurrent ? (size_t)a->parallel_n : 0, on_target, &c);
    sl_progress_set_owner(NULL);
    sl_log_set_prefix(NULL);
    sl_metrics_stop(metrics);
    uv_run(&loop, UV_RUN_DEFAULT); /* what the commands left closing */
    if (uv_loop_close(&loop) != 0)
        sl_warn("BUG: a libuv handle was left open at exit");
    if (concurrent)
        fleet_summary(&a->fleet, c.codes);
    if (strcmp(cmd, "ctl") == 0 && c.idle == a->fleet.n && a->fleet.n > 0) {
        sl_error("no runner of %s is listening on any target", a->npos > 1 ? a->pos[1] : "the job");
        code = SL_EXIT_FAILED;
    }
    free(c.codes);
    return code;
}

/* JOB names a file in --jobs, and the checkpoint files made from it are
 * --checkpoints/JOB.sluice and its companions: a JOB with a '/' would reach
 * outside (ctl ../../x status). down's -N and base are not job names. */
static int check_job_arg(const cli_args *a, const char *cmd)
{
    static const char *const takes_job[] = {"up", "down", "status", "plan", "stamp", "report", "ctl"};
    const char *job = a->npos > 1 ? a->pos[1] : NULL;
    int takes = 0;
    for (size_t i = 0; i < sizeof takes_job / sizeof takes_job[0]; i++)
        takes |= strcmp(cmd, takes_job[i]) == 0;
    if (!takes || !job || (strcmp(cmd, "down") == 0 && (job[0] == '-' || strcmp(job, "base") == 0)))
        return 0;
    if (!*job || strchr(job, '/')) {
        sl_buf shown = {0};
        sl_buf_add_visible(&shown, job, strlen(job), 1);
        sl_error("%s \"%s\": expected a job's name, its file's name in %s without .sql, with no '/' (hint: sluice "
                 "status lists the jobs)",
                 cmd, shown.data ? shown.data : "", a->opts.jobs_dir);
        sl_buf_free(&shown);
        return -1;
    }
    return 0;
}

static int dispatch(const char *cmd, cli_args *a)
{
    if (check_job_arg(a, cmd) != 0)
        return SL_EXIT_USAGE;
    a->parallel_n = 4;
    if (a->parallel && sl_parse_int(a->parallel, 1, 64, &a->parallel_n) != 0) { /* whatever the command */
        sl_error("--parallel \"%s\": expected a whole number of targets from 1 to 64", a->parallel);
        return SL_EXIT_USAGE;
    }
    if (a->fleet.n > 0)
        return dispatch_fleet(cmd, a);
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "history") == 0) {
        if (!want_args(a, 0, strcmp(cmd, "status") == 0 ? 1 : 0, cmd))
            return SL_EXIT_USAGE;
        return strcmp(cmd, "status") == 0 ? sl_cmd_status(&a->opts, NULL, a->npos > 1 ? a->pos[1] : NULL)
                                          : sl_cmd_history(&a->opts, NULL);
    }
    return dispatch_one(cmd, a, &a->opts);
}

/* Several --db, or --targets FILE: a fleet, each target a database of its
 * own; --target NAME picks one of them. 0, or -1 (said why). */
static int make_fleet(cli_args *a)
{
    sl_err err = {{0}};
    if (a->targets && a->ndbs > 0) {
        sl_error("--targets and --db: give the targets one way (hint: put every database in the targets file)");
        return -1;
    }
    if (a->targets && sl_fleet_read(a->targets, &a->fleet, &err) != 0) {
        sl_error("%s", err.msg);
        return -1;
    }
    for (int i = 0; a->ndbs > 1 && i < a->ndbs; i++) {
        if (sl_fleet_add_db(&a->fleet, a->dbs[i], i + 1, &err) != 0) {
            sl_error("%s", err.msg);
            return -1;
        }
    }
    if (!a->only_target)
        return 0;
    const sl_target *t = a->fleet.n ? sl_fleet_find(&a->fleet, a->only_target) : NULL;
    if (!t) {
        sl_error("--target %s: %s", a->only_target,
                 a->fleet.n ? "no such target (hint: sluice status lists them)"
                            : "there is one database only (hint: --target picks one of --targets or several --db)");
        return -1;
    }
    /* keep that one alone */
    sl_target keep = *t;
    for (size_t i = 0; i < a->fleet.n; i++)
        if (&a->fleet.targets[i] != t) {
            free(a->fleet.targets[i].name);
            free(a->fleet.targets[i].db);
            free(a->fleet.targets[i].origin);
        }
    a->fleet.targets[0] = keep;
    a->fleet.n = 1;
    return 0;
}

/* --log-format json before anything else is read: the command line's own
 * mistakes (an unknown option, a --db sluice cannot read) are log lines
 * too, and a script reading them as JSON must get JSON. A value that is
 * not a format is refused later, in text. */
static void early_log_format(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *v = strcmp(argv[i], "--log-format") == 0 && i + 1 < argc ? argv[i + 1]
                        : strncmp(argv[i], "--log-format=", 13) == 0         ? argv[i] + 13
                                                                             : NULL;
        sl_log_format format;
        if (v && sl_log_format_parse(v, &format) == 0)
            sl_log_set_format(format);
    }
}

static int run_cli(int argc, char **argv, cli_args *a)
{
    early_log_format(argc, argv);
    if (parse_args(argc, argv, a) != 0)
        return SL_EXIT_USAGE;
    if (a->version && a->npos > 0) {
        sl_error("--version takes no arguments, got \"%s\" (hint: sluice --version)", a->pos[0]);
        return SL_EXIT_USAGE;
    }
    if (a->version) {
        printf("sluice %s\n", SL_VERSION);
        return SL_EXIT_OK;
    }
    if (a->npos == 0) {
        if (a->help) {
            fputs(sl_cli_usage_text, stdout);
            return SL_EXIT_OK;
        }
        fputs(sl_cli_usage_text, stderr);
        return SL_EXIT_USAGE;
    }
    const char *cmd = sl_cli_canonical_command(a->pos[0]);
    if (a->help)
        return sl_cli_print_command_help(cmd);
    if (check_empty_values(a) != 0 || check_env_values() != 0 || parse_on_conflict(a) != 0 || make_fleet(a) != 0 ||
        apply_observability(a, cmd) != 0)
        return SL_EXIT_USAGE;
    if (a->fleet.n == 0 && a->ndbs == 1)
        a->opts.db = a->dbs[0];
    if (resolve_defaults(a, cmd) != 0)
        return SL_EXIT_USAGE;
    return dispatch(cmd, a);
}

int sl_cli_main(int argc, char **argv)
{
    /* Backoff jitter must differ between processes, or runners that lost
     * the same server would retry in lockstep. */
    srand((unsigned)time(NULL) ^ ((unsigned)getpid() << 16));
    cli_args a = {0};
    int code = run_cli(argc, argv, &a);
    /* `sluice status --json > state.json` on a full disk must not exit 0
     * with a cut file. A reader that went away (| head -1) is no error. */
    errno = 0;
    int flushed = fflush(stdout);
    int why = errno;
    if ((flushed != 0 || ferror(stdout)) && why != EPIPE) {
        sl_error("cannot write the output to stdout: %s", why ? strerror(why) : "a write failed (a full disk?)");
        if (code == SL_EXIT_OK)
            code = SL_EXIT_FAILED;
    }
    for (int i = 0; i < a.ndbs; i++)
        free(a.dbs[i]);
    free(a.dbs);
    sl_fleet_free(&a.fleet);
    sl_dburl_free(&a.db_url);
    for (size_t i = 0; i < a.nreplica_arg; i++) {
        free(a.replica_arg[i]);
        sl_dburl_free(&a.replica_url[i]);
    }
    return code;
}
