/* schema.c: create sluice's tables in the target database (only what is missing) and read its identity. */
#include "sluice/db/schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- PostgreSQL ---- */

/* What is there: one row of booleans, in the order of pg_parts below. */
static const char pg_present_sql[] =
    "SELECT to_regclass('" SL_PROGRESS_TABLE "') IS NOT NULL, to_regclass('" SL_RANGES_TABLE "') IS NOT NULL,"
    " to_regclass('" SL_JOBS_TABLE "') IS NOT NULL, to_regclass('" SL_UNDO_TABLE "') IS NOT NULL,"
    " to_regclass('" SL_META_TABLE "') IS NOT NULL,"
    " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('" SL_PROGRESS_TABLE "')"
    "  AND attname = 'range_no' AND NOT attisdropped),"
    " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('" SL_PROGRESS_TABLE "')"
    "  AND attname = 'error' AND NOT attisdropped),"
    " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('" SL_JOBS_TABLE "')"
    "  AND attname = 'paused' AND NOT attisdropped)";

/* sluice's id for the database: what a checkpoint file is bound to. On its
 * own too, for tables an owner made without it (their DDL from the README:
 * a role with no CREATE right may still insert it). */
static const char pg_id_sql[] =
    "INSERT INTO " SL_META_TABLE " (key, value)"
    " VALUES ('database_id', md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text))"
    " ON CONFLICT DO NOTHING";
static const char lite_id_sql[] =
    "INSERT OR IGNORE INTO " SL_META_TABLE " (key, value) VALUES ('database_id', lower(hex(randomblob(16))))";

static const char *const pg_create_sql[] = {
    "BEGIN",
    "SET LOCAL client_min_messages = warning", /* no "already exists" notice */
    /* Serialise concurrent first runs: CREATE TABLE IF NOT EXISTS races. */
    "SELECT pg_advisory_xact_lock(7310255342)",
    "CREATE TABLE IF NOT EXISTS " SL_PROGRESS_TABLE " ("
    " job text NOT NULL, chunk_no bigint NOT NULL, lo text[] NOT NULL, hi text[] NOT NULL,"
    " rows bigint NOT NULL, duration_ms bigint, attempts integer NOT NULL DEFAULT 1, checksum text NOT NULL,"
    " committed_at timestamptz NOT NULL DEFAULT now(), skipped boolean NOT NULL DEFAULT false,"
    " range_no integer NOT NULL DEFAULT 0, error text, PRIMARY KEY (job, chunk_no))",
    /* a table made by an older sluice: add what it lacks, taking no lock when it is there */
    "DO $$ BEGIN"
    " IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '" SL_PROGRESS_TABLE "'::regclass"
    "  AND attname = 'range_no' AND NOT attisdropped) THEN"
    "  ALTER TABLE " SL_PROGRESS_TABLE " ADD COLUMN range_no integer NOT NULL DEFAULT 0; END IF;"
    " IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '" SL_PROGRESS_TABLE "'::regclass"
    "  AND attname = 'error' AND NOT attisdropped) THEN"
    "  ALTER TABLE " SL_PROGRESS_TABLE " ADD COLUMN error text; END IF;"
    " END $$",
    "CREATE TABLE IF NOT EXISTS " SL_RANGES_TABLE " ("
    " job text NOT NULL, range_no integer NOT NULL, after text[], until text[], PRIMARY KEY (job, range_no))",
    "CREATE TABLE IF NOT EXISTS " SL_JOBS_TABLE " ("
    " job text PRIMARY KEY, state text NOT NULL, stamped boolean NOT NULL DEFAULT false,"
    " checksum text NOT NULL DEFAULT '', table_name text, key_cols text, where_sql text, undo text,"
    " walk_end text[], follow boolean NOT NULL DEFAULT false, error text,"
    " runner text, runner_host text, runner_pid integer, runner_start bigint, runner_desc text,"
    " lease_until timestamptz, started_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now(), paused text)",
    "DO $$ BEGIN"
    " IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '" SL_JOBS_TABLE "'::regclass"
    "  AND attname = 'paused' AND NOT attisdropped) THEN"
    "  ALTER TABLE " SL_JOBS_TABLE " ADD COLUMN paused text; END IF;"
    " END $$",
    "CREATE TABLE IF NOT EXISTS " SL_UNDO_TABLE " ("
    " job text NOT NULL, chunk_no bigint NOT NULL, record bytea NOT NULL, PRIMARY KEY (job, chunk_no))",
    /* Undo records are written once a chunk and read once: lz4 (PostgreSQL 14 and later, when built
     * with it) compresses them at a small fraction of pglz's cost, which showed in every chunk. */
    "DO $$ BEGIN"
    " IF current_setting('server_version_num')::int >= 140000 AND EXISTS (SELECT 1 FROM pg_settings"
    "  WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN"
    "  EXECUTE 'ALTER TABLE " SL_UNDO_TABLE " ALTER COLUMN record SET COMPRESSION lz4';"
    " END IF;"
    " EXCEPTION WHEN insufficient_privilege THEN NULL;"
    " END $$",
    "CREATE TABLE IF NOT EXISTS " SL_META_TABLE " (key text PRIMARY KEY, value text NOT NULL)",
    pg_id_sql,
    "COMMIT",
};

/* The requests `sluice ctl` makes through the database, for a runner on
 * another machine (ctl.h), and every run of every job, for `history`. Made
 * apart from the tables above: a role that may not create tables still runs
 * jobs where an older sluice made those, only without these. */
static const char pg_ctl_sql[] =
    "DO $$ BEGIN"
    " IF to_regclass('" SL_CTL_TABLE "') IS NULL OR to_regclass('" SL_RUNS_TABLE "') IS NULL THEN"
    "  PERFORM pg_advisory_xact_lock(7310255342);"
    "  CREATE TABLE IF NOT EXISTS " SL_CTL_TABLE " ("
    "   id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job text NOT NULL, runner text NOT NULL,"
    "   request text NOT NULL, asked_at timestamptz NOT NULL DEFAULT now(), answered_at timestamptz, ok boolean,"
    "   answer text);"
    "  CREATE TABLE IF NOT EXISTS " SL_RUNS_TABLE " ("
    "   id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job text NOT NULL, kind text NOT NULL,"
    "   outcome text NOT NULL, started_at timestamptz NOT NULL DEFAULT now(), ended_at timestamptz,"
    "   rows bigint NOT NULL DEFAULT 0, chunks bigint NOT NULL DEFAULT 0, error text, runner text);"
    " ELSE" /* what a client killed while it waited left behind */
    "  DELETE FROM " SL_CTL_TABLE " WHERE asked_at < now() - interval '1 day';"
    " END IF;"
    " EXCEPTION WHEN insufficient_privilege THEN NULL;"
    " END $$";
/* A unique index with sluice_jobs.runner in it makes a change of runner a
 * key update (sl_schema_fence_lock). Made where it is missing and the role
 * may: tables an owner made from an older README have none. */
#define RUNNER_KEYED                                                                                                \
    "EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)" \
    " WHERE i.indrelid = to_regclass('" SL_JOBS_TABLE "') AND i.indisunique AND i.indimmediate"                     \
    " AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = 'runner')"
static const char pg_runner_key_sql[] =
    "DO $$ BEGIN"
    " IF NOT " RUNNER_KEYED " THEN"
    "  PERFORM pg_advisory_xact_lock(7310255342);"
    "  CREATE UNIQUE INDEX IF NOT EXISTS sluice_jobs_runner_key ON " SL_JOBS_TABLE " (job, runner);"
    " END IF;"
    " EXCEPTION WHEN insufficient_privilege THEN NULL;"
    " END $$";
static const char pg_isolation_sql[] =
    "SELECT " RUNNER_KEYED ", current_setting('default_transaction_isolation') = 'serializable'";
static const char lite_runs_sql[] =
    "CREATE TABLE IF NOT EXISTS " SL_RUNS_TABLE " (id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL,"
    " kind TEXT NOT NULL, outcome TEXT NOT NULL,"
    " started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), ended_at TEXT,"
    " rows INTEGER NOT NULL DEFAULT 0, chunks INTEGER NOT NULL DEFAULT 0, error TEXT, runner TEXT)";

/* The system identifier tells a restored copy from its original; a role
 * some managed services refuse pg_control_system() to simply has none. */
static const char pg_identity_sql[] = "SELECT (SELECT value FROM " SL_META_TABLE " WHERE key = 'database_id'),"
                                      " current_database()";
static const char pg_cluster_sql[] = "SELECT system_identifier::text FROM pg_control_system()";
/* The WAL file name's first eight hex digits are the timeline it is written
 * on; pg_walfile_name() refuses to run during recovery. */
static const char pg_timeline_sql[] =
    "SELECT CASE WHEN pg_is_in_recovery() THEN NULL"
    " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint::text END";
/* Asked apart, so that a role refused it keeps the timeline. */
static const char pg_started_sql[] = "SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text";

/* ---- SQLite ---- */

static const char lite_present_sql[] =
    "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('" SL_PROGRESS_TABLE
    "', '" SL_JOBS_TABLE "', '" SL_UNDO_TABLE "', '" SL_META_TABLE "')) = 4,"
    " EXISTS (SELECT 1 FROM pragma_table_info('" SL_PROGRESS_TABLE "') WHERE name = 'error'),"
    " EXISTS (SELECT 1 FROM pragma_table_info('" SL_JOBS_TABLE "') WHERE name = 'paused')";

/* Keys as JSON arrays of text, times as ISO text, booleans 0/1. */
static const char *const lite_create_sql[] = {
    "BEGIN IMMEDIATE",
    "CREATE TABLE IF NOT EXISTS " SL_PROGRESS_TABLE " ("
    " job TEXT NOT NULL, chunk_no INTEGER NOT NULL, lo TEXT NOT NULL, hi TEXT NOT NULL, rows INTEGER NOT NULL,"
    " duration_ms INTEGER, attempts INTEGER NOT NULL DEFAULT 1, checksum TEXT NOT NULL,"
    " committed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
    " skipped INTEGER NOT NULL DEFAULT 0, error TEXT, PRIMARY KEY (job, chunk_no))",
    "CREATE TABLE IF NOT EXISTS " SL_JOBS_TABLE " ("
    " job TEXT PRIMARY KEY, state TEXT NOT NULL, stamped INTEGER NOT NULL DEFAULT 0,"
    " checksum TEXT NOT NULL DEFAULT '', table_name TEXT, key_cols TEXT, where_sql TEXT, undo TEXT,"
    " walk_end TEXT, follow INTEGER NOT NULL DEFAULT 0, error TEXT,"
    " runner TEXT, runner_host TEXT, runner_pid INTEGER, runner_start INTEGER, runner_desc TEXT,"
    " lease_until TEXT, started_at TEXT, updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
    " paused TEXT)",
    "CREATE TABLE IF NOT EXISTS " SL_UNDO_TABLE " ("
    " job TEXT NOT NULL, chunk_no INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (job, chunk_no))",
    "CREATE TABLE IF NOT EXISTS " SL_META_TABLE " (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    lite_id_sql,
    "COMMIT",
};

/* Columns a table made by an older sluice lacks: the table, the column, its type. */
static const char *const lite_added_cols[][3] = {
    {SL_PROGRESS_TABLE, "error", "TEXT"},
    {SL_JOBS_TABLE, "paused", "TEXT"},
};

static const char lite_identity_sql[] = "SELECT (SELECT value FROM " SL_META_TABLE " WHERE key = 'database_id')";

/* ---- shared ---- */

static int lite(const sl_session *sess)
{
    return sess->dialect == SL_DIALECT_SQLITE;
}

/* Run one query of sluice's own: 0 with an ok answer; else err ("what:
 * why") and SL_EREFUSED when the role may not (a precondition: refused with
 * a hint, nothing changed), -1 otherwise. */
static int ask(sl_session *sess, const char *sql, const char *what, sl_answer *ans, sl_err *err)
{
    if (sl_session_exec1(sess, sql, 0, NULL, ans) == 0 && ans->ok)
        return 0;
    sl_err_set(err, "%s on %s: %s", what, sl_session_display(sess), ans->error ? ans->error : "not connected");
    int denied = strcmp(ans->sqlstate, "42501") == 0;
    if (denied)
        sl_err_append(err,
                      "hint: the role sluice connects as needs SELECT, INSERT, UPDATE and DELETE on %s, %s, %s, %s "
                      "and %s (and on %s and %s where they exist); their owner grants them: GRANT SELECT, INSERT, "
                      "UPDATE, DELETE ON %s, %s, %s, %s, %s, %s, %s TO the role",
                      SL_JOBS_TABLE, SL_PROGRESS_TABLE, SL_RANGES_TABLE, SL_UNDO_TABLE, SL_META_TABLE, SL_RUNS_TABLE,
                      SL_CTL_TABLE, SL_JOBS_TABLE, SL_PROGRESS_TABLE, SL_RANGES_TABLE, SL_UNDO_TABLE, SL_META_TABLE,
                      SL_RUNS_TABLE, SL_CTL_TABLE);
    sl_answer_free(ans);
    return denied ? SL_EREFUSED : -1;
}

/* 1 when every table and column is there, 0 when something is missing. */
static int all_present(sl_session *sess, sl_err *err)
{
    sl_answer ans;
    if (ask(sess, lite(sess) ? lite_present_sql : pg_present_sql, "cannot look for sluice's tables", &ans, err) != 0)
        return -1;
    int all = 1;
    for (int c = 0; c < ans.results[0].ncols; c++)
        all &= sl_answer_true(sl_answer_val(&ans, 0, 0, c));
    sl_answer_free(&ans);
    return all;
}

static int create_missing(sl_session *sess, sl_err *err)
{
    const char *const *sql = lite(sess) ? lite_create_sql : pg_create_sql;
    size_t n = lite(sess) ? sizeof lite_create_sql / sizeof *sql : sizeof pg_create_sql / sizeof *sql;
    sl_query q[16];
    for (size_t i = 0; i < n; i++)
        q[i] = (sl_query){sql[i], 0, NULL, 0};
    sl_answer ans;
    if (sl_session_exec(sess, q, n, &ans) != 0) {
        sl_err_set(err, "lost the connection to %s while creating sluice's tables", sl_session_display(sess));
        return -1;
    }
    int rc = 0;
    if (!ans.ok) {
        sl_err_set(err, "cannot create sluice's tables on %s: %s", sl_session_display(sess), ans.error);
        sl_err_append(err,
                      "hint: the first run creates %s, %s, %s, %s and %s%s; a role without that right can run "
                      "sluice once an owner has run it (or created them) first",
                      SL_JOBS_TABLE, SL_PROGRESS_TABLE, SL_RANGES_TABLE, SL_UNDO_TABLE, SL_META_TABLE,
                      lite(sess) ? "" : " and needs CREATE on the first schema of search_path");
        if (!ans.conn_lost)
            sl_session_disconnect(sess); /* leaves no half-open transaction behind */
        /* a role without the right: a precondition, refused with nothing changed */
        rc = strcmp(ans.sqlstate, "42501") == 0 ? SL_EREFUSED : -1;
    }
    sl_answer_free(&ans);
    /* SQLite has no ADD COLUMN IF NOT EXISTS: tables from an older sluice get the columns it lacked */
    for (size_t i = 0; rc == 0 && lite(sess) && i < sizeof lite_added_cols / sizeof *lite_added_cols; i++) {
        const char *table = lite_added_cols[i][0], *col = lite_added_cols[i][1];
        char *look = sl_asprintf("SELECT count(*) FROM pragma_table_info('%s') WHERE name = '%s'", table, col);
        sl_answer cols;
        rc = ask(sess, look, "cannot read the columns of sluice's tables", &cols, err);
        free(look);
        int has = rc == 0 && sl_answer_true(sl_answer_val(&cols, 0, 0, 0));
        if (rc == 0)
            sl_answer_free(&cols);
        char *add = sl_asprintf("ALTER TABLE %s ADD COLUMN %s %s", table, col, lite_added_cols[i][2]);
        if (rc == 0 && !has && ask(sess, add, "cannot add a column to sluice's tables", &cols, err) == 0)
            sl_answer_free(&cols);
        else if (rc == 0 && !has)
            rc = -1;
        free(add);
    }
    return rc;
}

static void copy_field(char *dst, size_t dstsz, const char *src)
{
    snprintf(dst, dstsz, "%s", src ? src : "");
}

/* 1 with *id filled, 0 when sluice_meta holds no id. */
static int read_identity(sl_session *sess, sl_db_identity *id, sl_err *err)
{
    memset(id, 0, sizeof *id);
    sl_answer ans;
    int rc = ask(sess, lite(sess) ? lite_identity_sql : pg_identity_sql, "cannot read sluice's id for the database",
                 &ans, err);
    if (rc != 0)
        return rc;
    const char *v = sl_answer_val(&ans, 0, 0, 0);
    copy_field(id->id, sizeof id->id, v);
    copy_field(id->name, sizeof id->name, lite(sess) ? sess->lite.path : sl_answer_val(&ans, 0, 0, 1));
    sl_answer_free(&ans);
    if (!v)
        return 0;
    if (!lite(sess) && sl_session_exec1(sess, pg_cluster_sql, 0, NULL, &ans) == 0) {
        copy_field(id->cluster, sizeof id->cluster, ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL);
        sl_answer_free(&ans);
    }
    id->timeline = sl_schema_timeline(sess, &id->started);
    return 1;
}

int64_t sl_schema_timeline(sl_session *sess, int64_t *started)
{
    *started = 0;
    if (lite(sess)) {
        *started = sl_machine_boot(); /* the file's "server" is this machine */
        return 0;
    }
    sl_answer ans;
    if (sl_session_exec1(sess, pg_timeline_sql, 0, NULL, &ans) != 0)
        return 0;
    const char *v = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL;
    int64_t timeline = v ? strtoll(v, NULL, 10) : 0;
    sl_answer_free(&ans);
    if (timeline <= 0)
        return 0;
    if (sl_session_exec1(sess, pg_started_sql, 0, NULL, &ans) == 0) {
        v = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL;
        *started = v ? strtoll(v, NULL, 10) : 0;
        sl_answer_free(&ans);
    }
    return timeline;
}

/* A server that takes no writes (a standby, or default_transaction_read_only
 * on for the role or database) refuses sluice's first write with "cannot
 * execute ... in a read-only transaction": said once, up front, with where
 * the writes should go. SL_EREFUSED, 0, or -1. */
static int writable(sl_session *sess, sl_err *err)
{
    const char *why;
    int ro = sl_session_read_only(sess, &why, err);
    if (ro <= 0)
        return ro;
    sl_err_set(err, "%s takes no writes: %s", sl_session_display(sess), why);
    sl_err_append(err, "hint: %s",
                  ro == 1 ? "point --db at the primary; sluice writes the job's changes and its state there"
                          : "turn it off for sluice's role (ALTER ROLE ... SET default_transaction_read_only = off) "
                            "or in the URL (options=-cdefault_transaction_read_only%3Doff)");
    return SL_EREFUSED;
}

int sl_schema_ensure(sl_session *sess, sl_db_identity *id, sl_err *err)
{
    int rc0 = writable(sess, err);
    if (rc0 != 0)
        return rc0;
    int present = all_present(sess, err);
    if (present < 0)
        return present;
    int rc = present == 0 ? create_missing(sess, err) : 0;
    if (rc != 0)
        return rc;
    sl_answer more;
    if ((rc = ask(sess, lite(sess) ? lite_runs_sql : pg_ctl_sql, "cannot create " SL_RUNS_TABLE, &more, err)) != 0)
        return rc;
    sl_answer_free(&more);
    if (!lite(sess)) {
        if ((rc = ask(sess, pg_runner_key_sql, "cannot index " SL_JOBS_TABLE, &more, err)) != 0)
            return rc;
        sl_answer_free(&more);
    }
    int found = read_identity(sess, id, err);
    if (found < 0)
        return found;
    if (found == 0) { /* the id row was deleted, or the tables were made without it: give it one */
        sl_answer ans;
        if ((rc = ask(sess, lite(sess) ? lite_id_sql : pg_id_sql, "cannot give the database an id in " SL_META_TABLE,
                      &ans, err)) != 0)
            return rc;
        sl_answer_free(&ans);
        found = read_identity(sess, id, err);
        if (found == 0)
            sl_err_set(err, "cannot give %s an id in %s", sl_session_display(sess), SL_META_TABLE);
        if (found != 1)
            return -1;
    }
    if (lite(sess))
        return 0;
    sl_answer ans;
    if ((rc = ask(sess, pg_isolation_sql, "cannot read the indexes of " SL_JOBS_TABLE, &ans, err)) != 0)
        return rc;
    id->runner_key = sl_answer_true(sl_answer_val(&ans, 0, 0, 0));
    id->serializable = sl_answer_true(sl_answer_val(&ans, 0, 0, 1));
    sl_answer_free(&ans);
    return 0;
}

const char *sl_schema_chunk_begin(const sl_session *sess, const sl_db_identity *id, int reads_first)
{
    if (lite(sess) || !reads_first || id->serializable)
        return sl_session_begin_sql(sess);
    return "BEGIN ISOLATION LEVEL REPEATABLE READ";
}

const char *sl_schema_fence_lock(const sl_db_identity *id, int reads_first)
{
    return (reads_first || id->serializable) && !id->runner_key ? "FOR SHARE" : "FOR KEY SHARE";
}

int sl_schema_identity(sl_session *sess, sl_db_identity *id, sl_err *err)
{
    memset(id, 0, sizeof *id);
    sl_answer ans;
    const char *sql = lite(sess) ? "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '" SL_META_TABLE
                                   "'"
                                 : "SELECT to_regclass('" SL_META_TABLE "') IS NOT NULL";
    if (ask(sess, sql, "cannot look for sluice's tables", &ans, err) != 0)
        return -1;
    int there = sl_answer_true(sl_answer_val(&ans, 0, 0, 0));
    sl_answer_free(&ans);
    return there ? read_identity(sess, id, err) : 0;
}

/* ---- the jobs recorded here ---- */

int sl_schema_job_names(sl_session *sess, char ***names, size_t *n, sl_err *err)
{
    *names = NULL;
    *n = 0;
    sl_answer ans;
    const char *look = lite(sess) ? "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '" SL_JOBS_TABLE "'),"
                                    " EXISTS (SELECT 1 FROM sqlite_master WHERE name = '" SL_PROGRESS_TABLE "')"
                                  : "SELECT to_regclass('" SL_JOBS_TABLE "') IS NOT NULL,"
                                    " to_regclass('" SL_PROGRESS_TABLE "') IS NOT NULL";
    if (ask(sess, look, "cannot look for sluice's tables", &ans, err) != 0)
        return -1;
    int jobs = sl_answer_true(sl_answer_val(&ans, 0, 0, 0)), progress = sl_answer_true(sl_answer_val(&ans, 0, 0, 1));
    sl_answer_free(&ans);
    if (!jobs && !progress)
        return 0;
    /* a chunk's row without the job's: a run killed before it wrote its state, or tables an older sluice made */
    const char *sql = jobs && progress ? "SELECT job FROM " SL_JOBS_TABLE " UNION SELECT job FROM " SL_PROGRESS_TABLE
                      : jobs           ? "SELECT job FROM " SL_JOBS_TABLE
                                       : "SELECT DISTINCT job FROM " SL_PROGRESS_TABLE;
    if (ask(sess, sql, "cannot read the jobs sluice's tables record", &ans, err) != 0)
        return -1;
    int rows = ans.results[0].nrows;
    *names = sl_calloc((size_t)rows + 1, sizeof(char *));
    for (int r = 0; r < rows; r++)
        (*names)[(*n)++] = sl_strdup(sl_answer_val(&ans, 0, r, 0));
    sl_answer_free(&ans);
    return 0;
}

/* ---- the job's state in another schema (PostgreSQL) ---- */

/* Where this connection keeps sluice's tables (or would create them), its
 * search_path, and the job's table ($1) as it resolves now. */
static const char pg_here_sql[] =
    "SELECT coalesce((SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    "  WHERE c.oid = to_regclass('" SL_JOBS_TABLE "')), current_schema()), current_setting('search_path'),"
    " to_regclass($1)::oid::text";

/* The job's row (its name in the setting sluice.job: no text of it in the
 * statement) in each other set of sluice's tables this role can read: every
 * schema holding a sluice_jobs but the one this connection's search_path
 * finds, in one statement however many there are (a schema per tenant). The
 * recorded table name is looked up as a run that kept its tables in that
 * schema would have found it: an unqualified name in that schema first,
 * then on the search_path (a schema per tenant: each its own table; one
 * schema for sluice's tables: the application's). Per row: the schema, its
 * quoted name, the job's state there, the table's oid (NULL: none found) and
 * whether no table was recorded (older sluice_jobs have no table_name). */
static const char pg_other_sets_sql[] =
    "SELECT s.nspname, s.q, (xpath('/row/state/text()', s.x))[1]::text, CASE WHEN s.t IS NULL THEN NULL"
    "  WHEN array_length(parse_ident(s.t), 1) = 1 THEN coalesce(to_regclass(s.q || '.' || s.t), to_regclass(s.t))"
    "  ELSE to_regclass(s.t) END::oid::text, s.t IS NULL"
    " FROM (SELECT o.nspname, o.q, o.x, (xpath('/row/t/text()', o.x))[1]::text AS t"
    "  FROM (SELECT n.nspname, quote_ident(n.nspname) AS q,"
    "   query_to_xml(format('SELECT state, %s AS t FROM %I." SL_JOBS_TABLE
    " WHERE job = current_setting(''sluice.job'')',"
    "    CASE WHEN EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'table_name'"
    "     AND NOT a.attisdropped) THEN 'table_name' ELSE 'NULL::text' END, n.nspname), false, true, '') AS x"
    "   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    "   WHERE c.relname = '" SL_JOBS_TABLE "' AND c.relkind IN ('r', 'p')"
    "    AND c.oid IS DISTINCT FROM to_regclass('" SL_JOBS_TABLE "') AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
    "    AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')) o"
    "  WHERE o.x::text <> '') s"
    " ORDER BY s.nspname";

/* The other sets of sluice's tables this role cannot read (no USAGE on the
 * schema, or no SELECT on its sluice_jobs): pg_class and pg_namespace are
 * readable by every role, the rows are not. Such a set counts only when a
 * role that could have run the job there exists: one that may write its
 * sluice_jobs and read the job's table ($1) (the job's table not found: any
 * such role). Superusers may do anything, so only the owner of the tables
 * among them counts: otherwise a schema per tenant, each role blind to the
 * others', would refuse every tenant's first run. Per row: the schema, its
 * quoted name, whether the schema is what is out of reach (else the table),
 * those roles, and this role. */
static const char pg_unreadable_sets_sql[] =
    "SELECT o.nspname, quote_ident(o.nspname), NOT o.usage, o.writers, current_user"
    " FROM (SELECT n.nspname, has_schema_privilege(n.oid, 'USAGE') AS usage,"
    "  (SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname) FROM pg_roles r"
    "    WHERE (NOT r.rolsuper OR r.oid = c.relowner) AND has_schema_privilege(r.oid, n.oid, 'USAGE')"
    "     AND has_table_privilege(r.oid, c.oid, 'INSERT, UPDATE')"
    "     AND (to_regclass($1) IS NULL OR has_any_column_privilege(r.oid, to_regclass($1), 'SELECT'))) AS writers"
    "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    "  WHERE c.relname = '" SL_JOBS_TABLE "' AND c.relkind IN ('r', 'p')"
    "   AND c.oid IS DISTINCT FROM to_regclass('" SL_JOBS_TABLE "') AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
    "   AND NOT (has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'))) o"
    " WHERE o.writers IS NOT NULL ORDER BY o.nspname";

/* Refuse for the first set of sluice's tables in ans' result res that this
 * role cannot read: it cannot tell whether the job ran there. */
static int refuse_unreadable(const sl_answer *ans, size_t res, const char *job, const char *so, sl_err *err)
{
    if (ans->results[res].nrows == 0)
        return 0;
    const char *schema = sl_answer_val(ans, res, 0, 0), *quoted = sl_answer_val(ans, res, 0, 1);
    int no_usage = sl_answer_true(sl_answer_val(ans, res, 0, 2));
    const char *writers = sl_answer_val(ans, res, 0, 3), *me = sl_answer_val(ans, res, 0, 4);
    sl_err_set(err,
               "%s: schema %s holds sluice's tables, which role %s cannot read (%s), and %s may write them and "
               "read the job's table: sluice cannot tell whether the job already ran there: %s",
               job, schema, me, no_usage ? "no USAGE on the schema" : "no SELECT on its " SL_JOBS_TABLE, writers, so);
    sl_err_append(err,
                  "hint: GRANT USAGE ON SCHEMA %s TO %s and GRANT SELECT ON %s." SL_JOBS_TABLE " TO %s, so that "
                  "sluice can read the job's record there; or connect with search_path %s "
                  "(options=-csearch_path=%s in the URL), so that both roles share that one set of tables",
                  quoted, me, quoted, me, quoted, quoted);
    return SL_EREFUSED;
}

int sl_schema_job_elsewhere(sl_session *sess, const char *job, const char *table, const char *so, sl_err *err)
{
    if (lite(sess))
        return 0;
    const char *p_job[] = {job}, *p_table[] = {table};
    sl_query q[] = {
        {"SELECT set_config('sluice.job', $1, true)", 1, p_job, 0},
        {pg_here_sql, 1, p_table, 0},
        {pg_other_sets_sql, 0, NULL, 0},
        {pg_unreadable_sets_sql, 1, p_table, 0},
    };
    sl_answer ans;
    int rc = sl_session_exec_readonly(sess, q, 4, &ans);
    if (rc != 0 || !ans.ok) {
        sl_err_set(err, "cannot look for the job in sluice's tables of other schemas on %s: %s",
                   sl_session_display(sess), ans.error ? ans.error : "not connected");
        if (rc == 0)
            sl_answer_free(&ans);
        return -1;
    }
    const char *here = sl_answer_val(&ans, 1, 0, 0), *path = sl_answer_val(&ans, 1, 0, 1);
    const char *now = sl_answer_val(&ans, 1, 0, 2);
    for (int i = 0; rc == 0 && i < ans.results[2].nrows; i++) {
        const char *state = sl_answer_val(&ans, 2, i, 2), *then = sl_answer_val(&ans, 2, i, 3);
        int ran = state && strcmp(state, "pending") != 0 && strcmp(state, "rolled_back") != 0;
        /* the same table: its recorded name finds the job's table now, or finds nothing (the run that
         * recorded it had another search_path: the name cannot tell, so take it for the same), or no
         * name was recorded */
        int same = sl_answer_true(sl_answer_val(&ans, 2, i, 4)) || !then || (now && strcmp(now, then) == 0);
        if (!ran || !same)
            continue;
        const char *schema = sl_answer_val(&ans, 2, i, 0), *quoted = sl_answer_val(&ans, 2, i, 1);
        sl_err_set(err,
                   "%s: sluice's tables in schema %s record this job as %s, on the same table, but this "
                   "connection's search_path (%s) %s%s, where the job has no record: %s",
                   job, schema, state, path && *path ? path : "empty",
                   here ? "puts sluice's tables in schema " : "names no schema for sluice's tables", here ? here : "",
                   so);
        sl_err_append(err,
                      "hint: connect with the search_path the job ran with, so that sluice finds its tables in "
                      "schema %s (options=-csearch_path=%s in the URL, or ALTER ROLE ... SET search_path)",
                      schema, quoted);
        rc = SL_EREFUSED;
    }
    if (rc == 0)
        rc = refuse_unreadable(&ans, 3, job, so, err);
    sl_answer_free(&ans);
    return rc;
}
