/* job.h: job files (README "A job file"): directives, sections, statements and the :lo/:hi scanner. */
#ifndef SLUICE_JOB_H
#define SLUICE_JOB_H

#include "sluice/base/util.h"

/* Every directive of README's table ("Directives"), validated by the parser. */
typedef enum sl_directive {
    SL_DIR_TABLE,
    SL_DIR_KEY,
    SL_DIR_WHERE,
    SL_DIR_BATCH,
    SL_DIR_CHUNK_TIME,
    SL_DIR_PAUSE,
    SL_DIR_MAX_RATE,
    SL_DIR_WINDOW,
    SL_DIR_LOCK_TIMEOUT,
    SL_DIR_STATEMENT_TIMEOUT,
    SL_DIR_RETRIES,
    SL_DIR_ON_ERROR,
    SL_DIR_UNDO,
    SL_DIR_WORKERS,
    SL_DIR_MAX_REPLICA_LAG,
    SL_DIR_THROTTLE_QUERY,
    SL_DIR_REQUIRES,
    SL_DIR_END,
    SL_DIR_MAX_WAL_RATE,
    SL_DIR_MAX_DEAD_TUPLES,
    SL_DIR_VERIFY,
    SL_DIR_SYNCHRONOUS_COMMIT,
    SL_DIR_COUNT
} sl_directive;

/* "table", "chunk-time", ... as written in job files. */
const char *sl_directive_name(sl_directive d);

/* The longest lock-timeout and statement-timeout: PostgreSQL keeps both
 * settings as an int of milliseconds (INT_MAX). */
#define SL_MAX_TIMEOUT_MS INT64_C(2147483647)

/* Parse value for a directive that takes a number or a duration (batch,
 * pause, lock-timeout, ...; durations in ms) and check it against the
 * directive's bounds: job files and `ctl set` both use it. 0 with *out set,
 * or -1 with why completing "NAME ...": "expects a whole number of rows
 * from 1 to 10000000, got \"0\"", or for a limit set by the database
 * "600h is too long: at most 2147483647ms ...". */
int sl_directive_number(sl_directive d, const char *value, int64_t *out, char *why, size_t whysz) SL_MUSTCHECK;

/* One occurrence of :lo or :hi inside a statement's text. */
typedef struct sl_placeholder {
    size_t offset; /* byte offset of ':' within sl_stmt.text */
    size_t length; /* 3 */
    int is_hi;     /* 0 for :lo, 1 for :hi */
} sl_placeholder;

/* One SQL statement of a section, without its terminating ';'. */
typedef struct sl_stmt {
    char *text;
    int line; /* line in the job file where the statement starts */
    sl_placeholder *ph;
    size_t nph;
    int uses_lo, uses_hi;
} sl_stmt;

typedef struct sl_section {
    int present;
    int line; /* line of the "-- sluice:up" / "-- sluice:down" marker */
    sl_stmt *stmts;
    size_t nstmts;
} sl_section;

typedef enum sl_undo_kind {
    SL_UNDO_NONE,          /* no way back */
    SL_UNDO_DOWN,          /* run the down section */
    SL_UNDO_SNAPSHOT_COLS, /* saved old values of undo_cols */
    SL_UNDO_SNAPSHOT_ALL,  /* saved whole rows */
} sl_undo_kind;

typedef enum sl_on_error { SL_ON_ERROR_STOP, SL_ON_ERROR_SKIP } sl_on_error;

typedef struct sl_window {
    int start_min; /* minutes after local midnight, 0..1439 */
    int end_min;   /* may be < start_min: the window crosses midnight */
} sl_window;

typedef struct sl_job {
    char *name;        /* file name without ".sql" */
    char *path;        /* as given to sl_job_load */
    char checksum[17]; /* of the whole file's bytes */

    int line[SL_DIR_COUNT]; /* line of each directive, 0 when absent */

    char *table; /* as written, possibly schema-qualified / quoted */
    char **key;  /* as written; NULL when absent (use the primary key) */
    size_t nkey;
    char *where;           /* NULL when absent */
    int64_t batch;         /* default 1000 */
    int64_t chunk_time_ms; /* 0 = off */
    int64_t pause_ms;      /* default 0 */
    int64_t max_rate;      /* rows per second, 0 = unlimited */
    sl_window *windows;
    size_t nwindows;              /* 0 = always */
    int64_t lock_timeout_ms;      /* default 2000 */
    int64_t statement_timeout_ms; /* default 60000 */
    int64_t retries;              /* default 5 */
    sl_on_error on_error;         /* default stop */
    sl_undo_kind undo;            /* default: DOWN if a down section exists, else NONE */
    char **undo_cols;             /* for SL_UNDO_SNAPSHOT_COLS */
    size_t nundo_cols;
    int64_t workers;            /* default 1 */
    int64_t max_replica_lag_ms; /* 0 = off */
    int64_t max_wal_rate;       /* bytes of WAL per second the server may write, 0 = off */
    int64_t max_dead_tuples_bp; /* dead tuples over live ones, in hundredths of a percent, 0 = off */
    char *throttle_query;       /* NULL = off */
    char *requires;             /* NULL = none */
    char *verify;               /* must return true once the walk is over, or the job fails; NULL = none */
    int follow;                 /* end follow: walk rows inserted past the end too (default: end fixed) */
    int wait_commit;            /* synchronous-commit on: each chunk's COMMIT waits as the server's synchronous_commit
                                 * says; off (the default), PostgreSQL chunks commit without waiting for the disk */

    sl_section up;   /* required */
    sl_section down; /* optional */
} sl_job;

/* Parse a job file's text. path names the file in error messages and gives
 * the job its name (basename without ".sql"). On success the job owns all
 * its strings (release with sl_job_free); on failure job is left zeroed and
 * err holds "PATH:LINE: what was wrong (hint: ...)". */
int sl_job_parse(const char *path, const char *text, size_t len, sl_job *job, sl_err *err) SL_MUSTCHECK;
/* The bytes a job file may hold, checked by sl_job_parse before anything
 * else: UTF-8 (an optional byte order mark first), lines ending in LF or
 * CRLF, tabs and form feeds, and no NUL, other control character or
 * invalid UTF-8 (a NUL would cut a statement short where C strings end,
 * after its :lo/:hi were seen). Fails with "PATH:LINE: what (hint: ...)";
 * UTF-16 (a byte order mark FF FE or FE FF, or a NUL every other byte)
 * gets a hint on converting it. */
int sl_job_check_text(const char *path, const char *text, size_t len, sl_err *err) SL_MUSTCHECK;
/* Read and parse the file at path. */
int sl_job_load(const char *path, sl_job *job, sl_err *err) SL_MUSTCHECK;
void sl_job_free(sl_job *job);

/* All jobs of a directory, sorted by file name. */
typedef struct sl_jobset {
    sl_job *jobs;
    size_t njobs;
} sl_jobset;

/* Load every "*.sql" file of dir (not recursive) in file-name order. Every
 * file is parsed even after an error, and err collects one line per invalid
 * file; on any error the set is empty and -1 is returned. A missing dir is an
 * error that names it; a "*.sql" that is not a file (a directory, say) is
 * an invalid file. */
int sl_jobset_load(const char *dir, sl_jobset *set, sl_err *err) SL_MUSTCHECK;
/* Check, without reading them, what sl_jobset_load checks of every "*.sql"
 * of dir before it parses it: a name the commands can take, and a file (or
 * a symbolic link to one). 0, or -1 with err naming each that is not (a
 * directory, say), one a line. A dir that cannot be read (missing, say) is
 * no error here. */
int sl_jobset_check_files(const char *dir, sl_err *err) SL_MUSTCHECK;
/* The job named name (with or without ".sql"), or NULL. */
sl_job *sl_jobset_find(sl_jobset *set, const char *name);
void sl_jobset_free(sl_jobset *set);

/* ---- the SQL scanner ----
 * Split text (a section body starting at line first_line of path) into
 * statements at ';' outside string literals ('...', E'...' with backslash
 * escapes, "identifiers"), comments (-- and nested slash-star), and dollar
 * quotes ($$...$$, $tag$...$tag$). Empty statements are dropped. :lo and :hi
 * are recorded only outside those, not after another ':' (a "::lo" cast) and
 * only when not followed by an identifier character (":lower" is not one).
 * Unterminated quotes or comments are errors naming the line they start on.
 * On success *out is a malloc'd array of *nout statements. */
int sl_sql_split(const char *path, int first_line, const char *text, size_t len, sl_stmt **out, size_t *nout,
                 sl_err *err) SL_MUSTCHECK;
void sl_stmts_free(sl_stmt *stmts, size_t n);

/* Check a one-line SQL fragment written in a directive (where, requires,
 * throttle-query) that starts at line of path, with the same quoting rules.
 * Fails on nothing but blanks and comments, an unterminated quote or comment,
 * or a ';' outside them. On success *out is the fragment without leading or
 * trailing blanks and comments, with its placeholders recorded; release it
 * with free(out->text) and free(out->ph). */
int sl_sql_fragment(const char *path, int line, const char *text, size_t len, sl_stmt *out, sl_err *err) SL_MUSTCHECK;

/* Copy stmt's text with every :lo replaced by lo_sql and every :hi by hi_sql
 * (e.g. "$1::bigint" or "($1::int, $2::text)"). malloc'd. */
char *sl_stmt_render(const sl_stmt *stmt, const char *lo_sql, const char *hi_sql);

/* The first keyword of a statement, lower-cased ("update", "begin", ...), in
 * out (empty if none), after any leading comments. */
void sl_stmt_first_word(const sl_stmt *stmt, char *out, size_t outsz);

/* Whether stmt begins as an SQL statement does: with one of the keywords
 * PostgreSQL's or SQLite's statements begin with (after comments), or a
 * parenthesis. A word that begins none ("UPDAT", a byte order mark in the
 * middle of a file) would reach the server only with the first chunk. */
int sl_stmt_begins_statement(const sl_stmt *stmt);

/* Whether EXPLAIN can plan stmt without running it (UPDATE, DELETE, INSERT,
 * SELECT, WITH, MERGE, VALUES); CALL and DO it cannot. */
int sl_stmt_explainable(const sl_stmt *stmt);

/* Whether stmt is transaction control (BEGIN, COMMIT, SAVEPOINT, SET
 * TRANSACTION, ...) or VACUUM, which cannot run inside a chunk's
 * transaction. When it is, out holds its leading keywords upper-cased
 * ("SET TRANSACTION", "COMMIT"). Comments between the words do not hide it. */
int sl_stmt_transaction_control(const sl_stmt *stmt, char *out, size_t outsz);

/* One UPDATE of a statement: the relation it writes and the columns its SET
 * list assigns. */
typedef struct sl_sql_update {
    char *target; /* as written, possibly schema-qualified: "quoted" parts kept exactly (SQLite's `x` and [x] as
                     "x"), unquoted ones lower-cased */
    int line;     /* of its UPDATE keyword, in the job file */
    char **cols;  /* each assigned column's name: unquoted lower-cased, quoted without its quotes ("" read as ") */
    int *col_lines;
    size_t ncols;
} sl_sql_update;

/* The UPDATEs of stmt, seen in its text: UPDATE [ONLY] t [*] [[AS] alias]
 * SET ... (SQLite's UPDATE OR IGNORE t, `t` and [t] too), also inside WITH
 * (several in one statement), INSERT INTO t ... ON CONFLICT ... DO UPDATE
 * SET (target t) and MERGE INTO t ... THEN UPDATE SET (target t). A SET item
 * assigns a column (col = ..., col.field = ..., col[n] = ...) or several
 * ((a, b) = ...); the list ends at a FROM, WHERE, RETURNING or WHEN
 * outside parentheses, at the ')' closing a CTE, or at the statement's
 * end. What hides in strings, dollar quotes (DO, function bodies), called
 * functions and triggers is not seen. Returns how many; *out is malloc'd
 * (NULL when none), freed with sl_sql_updates_free. */
size_t sl_stmt_updates(const sl_stmt *stmt, sl_sql_update **out);
void sl_sql_updates_free(sl_sql_update *ups, size_t n);

#endif
