/* plan.c: `plan`: a dry run of one job against the live database. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/checkpoints/ckpt.h"
#include "sluice/db/catalog.h"
#include "sluice/engine/plan.h"
#include "sluice/engine/undo.h"
#include "sluice/engine/up.h"
#include "sluice/services/throttle.h"

/* A plan line that reads the whole table: PostgreSQL's Seq Scan; SQLite's
 * "SCAN t" without an index, or a sort of everything it read. */
static int full_scan(const sl_session *sess, const char *line)
{
    if (sess->dialect == SL_DIALECT_PG)
        return strstr(line, "Seq Scan") != NULL;
    return (strncmp(line, "SCAN ", 5) == 0 && !strstr(line, " USING ")) || strstr(line, "TEMP B-TREE") != NULL;
}

/* Print EXPLAIN (SQLite: EXPLAIN QUERY PLAN) of sql with params; returns 1
 * if the plan reads the whole table. */
static int explain(sl_session *sess, const char *title, const char *sql, int nparams, const char *const *params)
{
    int lite = sess->dialect == SL_DIALECT_SQLITE;
    char *q = sl_asprintf("%s %s", lite ? "EXPLAIN QUERY PLAN" : "EXPLAIN", sql);
    sl_answer ans;
    int seq = 0;
    printf("\n%s:\n", title);
    if (sl_session_exec1(sess, q, nparams, params, &ans) == 0) {
        if (!ans.ok) {
            printf("  (%s failed: ", lite ? "EXPLAIN QUERY PLAN" : "EXPLAIN");
            sl_fputs_visible(ans.error, stdout);
            printf(")\n");
        }
        for (int r = 0; ans.ok && r < ans.results[0].nrows; r++) {
            /* SQLite: id, parent, notused, detail */
            const char *line = sl_answer_val(&ans, 0, r, lite ? 3 : 0);
            printf("  ");
            sl_fputs_visible(line, stdout);
            printf("\n");
            seq |= full_scan(sess, line);
        }
        sl_answer_free(&ans);
    }
    free(q);
    return seq;
}

static void print_key(const sl_table_info *info)
{
    printf("key:        ");
    for (size_t i = 0; i < info->ks.ncols; i++) {
        printf("%s", i ? ", " : "");
        sl_fputs_visible(info->ks.cols[i], stdout);
        printf(" ");
        sl_fputs_visible(info->ks.types[i], stdout);
    }
    printf("\nindex:      ");
    sl_fputs_visible(info->index ? info->index : "NONE (every chunk would scan the table)", stdout);
    printf("\n");
}

/* Show the first chunk's bounds and the plans of its statements. */
static int plan_first_chunk(sl_session *sess, const sl_job *job, const sl_table_info *info)
{
    size_t n = info->ks.ncols;
    char limit[24];
    snprintf(limit, sizeof limit, "%" PRId64, job->batch);
    const char *lparams[] = {limit};
    char *bsql = sl_keys_boundary_sql(&info->ks, 0);
    sl_answer ans;
    int warnings = 0;
    if (sl_session_exec1(sess, bsql, 1, lparams, &ans) != 0 || !ans.ok) {
        printf("first chunk: cannot compute: ");
        sl_fputs_visible(ans.error ? ans.error : "connection lost", stdout);
        printf("\n");
        sl_answer_free(&ans);
        free(bsql);
        return 0; /* no plan was read: none to warn about */
    }
    /* SQLite's plan of it always shows a SCAN (the walk in key order, stopped
     * after batch rows) and a TEMP B-TREE (the window's sort of those rows):
     * there, only a missing index (warned about already) makes it costly. */
    int bseq = explain(sess, "plan of the boundary query (runs once per chunk)", bsql, 1, lparams);
    if (sess->dialect == SL_DIALECT_PG)
        warnings += bseq;
    free(bsql);
    if (ans.results[0].nrows == 0) {
        printf("\nfirst chunk: none: no rows match; `up` would finish at once\n");
        sl_answer_free(&ans);
        return warnings;
    }
    const char *edges[2 * SL_MAX_KEY_COLS];
    printf("\nfirst chunk: :lo = (");
    for (size_t i = 0; i < n; i++) {
        printf("%s", i ? ", " : "");
        sl_fputs_visible(edges[i] = sl_answer_val(&ans, 0, 0, (int)i), stdout);
    }
    printf(")  :hi = (");
    for (size_t i = 0; i < n; i++) {
        printf("%s", i ? ", " : "");
        sl_fputs_visible(edges[n + i] = sl_answer_val(&ans, 0, 0, (int)(n + i)), stdout);
    }
    printf(")  rows = ");
    sl_fputs_visible(sl_answer_val(&ans, 0, 0, (int)(2 * n)), stdout);
    printf("\n");
    for (size_t s = 0; s < job->up.nstmts; s++) {
        const sl_stmt *st = &job->up.stmts[s];
        char *sql = sl_keys_stmt_sql(&info->ks, st);
        char title[512];
        snprintf(title, sizeof title,
                 "up statement %zu (%s:%d), as sent for each chunk:\n  %s\nits plan for the "
                 "first chunk",
                 s + 1, job->path, st->line, sql);
        int used = (st->uses_lo + st->uses_hi) * (int)n;
        warnings += explain(sess, title, sql, used, st->uses_lo ? edges : edges + n);
        free(sql);
    }
    sl_answer_free(&ans);
    return warnings;
}

/* The health limits the job sets, and whether up can measure its replica lag. */
static int plan_health(const sl_run_opts *opts, sl_session *sess, const sl_job *job, const sl_table_info *info,
                       int *refused)
{
    int warnings = 0;
    char a[24];
    if (job->max_replica_lag_ms && sess->dialect == SL_DIALECT_PG) {
        sl_throttle th;
        sl_err err = {{0}};
        int rc = sl_throttle_init(&th, sess->loop, opts->replicas, opts->nreplicas, 0, sess->connect_timeout_ms, &err);
        if (rc == 0) {
            rc = sl_throttle_prepare(&th, sess, job, info->ks.table, &err);
            if (rc == 0)
                printf("replica lag: %" PRId64 "ms now (max-replica-lag %" PRId64 "ms), %s\n", th.lag_ms,
                       job->max_replica_lag_ms, th.lag_how);
            sl_throttle_close(&th);
        }
        if (rc != 0) {
            printf("warning:    %sreplica lag cannot be measured%s:\n  %s\n",
                   opts->allow_unmeasured_lag ? "" : "up refuses this job: ",
                   opts->allow_unmeasured_lag ? " (--allow-unmeasured-lag: up goes on without it)"
                                              : " (unless --allow-unmeasured-lag)",
                   err.msg);
            warnings++;
            *refused += !opts->allow_unmeasured_lag;
        }
    }
    if (job->max_wal_rate) {
        sl_format_bytes(job->max_wal_rate, a, sizeof a);
        printf("wal rate:   held under %s/s (max-wal-rate: pg_current_wal_flush_lsn() between checks)\n", a);
    }
    if (job->max_dead_tuples_bp)
        printf("vacuum:     held while dead tuples exceed autovacuum_vacuum_threshold + %" PRId64 ".%02" PRId64
               "%% of live ones, or an anti-wraparound vacuum is due or running (max-dead-tuples)\n",
               job->max_dead_tuples_bp / 100, job->max_dead_tuples_bp % 100);
    return warnings;
}

/* workers N: the connections the first `up` opens and the ranges it splits
 * the key into, as it decides by the estimate (up_split.c). */
static void print_workers(const sl_job *job, int64_t rows)
{
    int64_t ranges = sl_up_split_ranges(job->workers, job->batch, rows);
    if (ranges < 2)
        printf("workers:    1 of the %" PRId64 " asked for: about %" PRId64
               " rows, too few for two ranges of two chunks, so `up` walks the key as one range\n",
               job->workers, rows);
    else if (ranges < job->workers)
        printf("workers:    %" PRId64 " of the %" PRId64
               " asked for, each with a chunk in flight: the first `up` splits "
               "the key into about %" PRId64
               " ranges, none under two chunks by the estimate, at keys sampled from the table\n",
               ranges, job->workers, ranges);
    else
        printf("workers:    %" PRId64
               " connections, each with a chunk in flight; the first `up` splits the key into up "
               "to %" PRId64 " ranges at keys sampled from the table\n",
               job->workers, ranges);
}

/* How each chunk commits (synchronous-commit). */
static void print_commits(const sl_session *sess, const sl_job *job)
{
    int lite = sess->dialect == SL_DIALECT_SQLITE;
    if (job->wait_commit)
        printf("commits:    each chunk's waits for the disk as %s (synchronous-commit on)\n",
               lite ? "synchronous=FULL makes it" : "the server's synchronous_commit says");
    else if (lite && !sess->lite.journal_wal)
        printf("commits:    each chunk's waits for the disk (synchronous=FULL): the file has a rollback journal, "
               "where NORMAL could corrupt it on a power loss\n");
    else
        printf("commits:    each chunk's without waiting for the disk (synchronous-commit off, the default%s); the "
               "job's state waits, and with it every chunk before it\n",
               lite ? ": synchronous=NORMAL" : "");
}

/* One "warning:" line each, the rest of a message indented under it. */
static void print_warning(const char *prefix, const char *msg)
{
    printf("warning:    %s", prefix);
    for (const char *line = msg, *end; line; line = end ? end + 1 : NULL) {
        end = strchr(line, '\n');
        char *part = sl_strndup(line, end ? (size_t)(end - line) : strlen(line));
        printf("%s", line == msg ? "" : "\n            ");
        sl_fputs_visible(part, stdout);
        free(part);
    }
    printf("\n");
}

/* What the undo snapshot cannot put back (undo_scope.c): up's refusal, shown. */
static int plan_scope(sl_session *sess, const sl_job *job, const sl_keyspec *ks, int *refused)
{
    char **warnings = NULL;
    sl_err err = {{0}};
    int rc = sl_undo_check_scope(sess, job, ks, &warnings, &err), n = 0;
    if (rc == SL_EREFUSED || rc < 0)
        print_warning(rc == SL_EREFUSED ? "up refuses this job: " : "", err.msg);
    n += rc != 0;
    *refused += rc == SL_EREFUSED;
    for (char **w = warnings; w && *w; w++, n++) {
        print_warning("", *w);
        free(*w);
    }
    free(warnings);
    return n;
}

/* The undo columns resolved against the table as up resolves them (a column
 * that does not exist, or is part of the key, is up's refusal). */
static int plan_undo_target(sl_session *sess, const sl_job *job, const sl_table_info *info, int *refused)
{
    sl_undo_target target;
    sl_err err = {{0}};
    if (sl_undo_resolve(sess, job, info, &target, &err) != 0) {
        print_warning("up refuses this job: ", err.msg);
        (*refused)++;
        return 1;
    }
    sl_undo_target_free(&target);
    return 0;
}

int sl_plan_job(sl_session *sess, const sl_run_opts *opts, sl_job *job, int64_t sample)
{
    int code = SL_EXIT_OK;
    sl_table_info info;
    sl_err err = {{0}};
    if (sl_catalog_resolve(sess, job, &info, &err) != 0) {
        sl_error("%s", err.msg);
        return SL_EXIT_USAGE;
    }
    int64_t rows = sl_catalog_estimate_rows(sess, &info.ks);
    printf("job:        %s (%s)\ntable:      %s\n", job->name, job->path, info.ks.table);
    print_key(&info);
    printf("where:      %s\nbatch:      %" PRId64 " rows\n", job->where ? job->where : "(all rows)", job->batch);
    if (rows >= 0)
        printf("estimate:   ~%" PRId64 " rows in ~%" PRId64 " chunks (%s)\n", rows,
               (rows + job->batch - 1) / job->batch,
               sess->dialect == SL_DIALECT_SQLITE ? "counted" : "PostgreSQL's statistics");
    else if (rows == SL_CATALOG_NO_STATS)
        printf("estimate:   unknown: %s has no statistics (never analyzed), so up shows no percent or ETA\n"
               "            (hint: ANALYZE %s gives an estimate)\n",
               info.ks.table, info.ks.table);
    else
        printf("estimate:   unknown (the server's planner gave none)\n");
    if (job->workers > 1 && sess->dialect == SL_DIALECT_SQLITE)
        printf("workers:    1 (workers %" PRId64 " asked for; SQLite lets one writer in at a time)\n", job->workers);
    else if (job->workers > 1)
        print_workers(job, rows);
    print_commits(sess, job);
    sl_undo_plan_print(sess, job, &info.ks, rows);
    int refused = 0; /* what up refuses (exit 2): plan shows it all, then exits 2 too */
    if (!info.index && !opts->allow_no_index)
        refused++; /* warned about below */
    int rc = sl_up_check_sql(sess, job, &info.ks, &err);
    /* plan needs only SELECT: a reviewer's role that may not write is told, and not refused */
    int denied = rc == SL_EREFUSED && strstr(err.msg, ": 42501 ") != NULL;
    if (rc != 0)
        print_warning(denied              ? "up as this role refuses this job: "
                      : rc == SL_EREFUSED ? "up refuses this job: "
                                          : "",
                      err.msg);
    refused += rc == SL_EREFUSED && !denied;
    sl_err derr = {{0}};
    if (job->undo == SL_UNDO_DOWN && sl_down_check_sql(sess, job, &info.ks, &derr) == SL_EREFUSED)
        print_warning("down of this job refuses until its down section runs: ", derr.msg);
    int scope_warnings = plan_undo_target(sess, job, &info, &refused);
    scope_warnings += plan_scope(sess, job, &info.ks, &refused);
    if (job->requires) {
        sl_answer ans;
        sl_query q = {job->requires, 0, NULL, 0};
        if (sl_session_exec_readonly(sess, &q, 1, &ans) == 0) {
            const char *v = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL;
            printf("requires:   %s -> ", job->requires);
            sl_fputs_visible(!ans.ok             ? ans.error
                             : sl_answer_true(v) ? "true (up may start)"
                                                 : "not true (up refuses)",
                             stdout);
            printf("%s\n", ans.ok ? "" : " (up refuses)");
            /* not counted against the exit code: what requires waits for (an earlier job of the same
             * `up`, a deploy) has often not happened yet when the plan is made */
            sl_answer_free(&ans);
        }
    }
    if (job->verify) {
        sl_answer ans;
        sl_query q = {job->verify, 0, NULL, 0};
        if (sl_session_exec_readonly(sess, &q, 1, &ans) == 0) {
            const char *v = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL;
            printf("verify:     %s (%s:%d) -> ", job->verify, job->path, job->line[SL_DIR_VERIFY]);
            sl_fputs_visible(!ans.ok             ? ans.error
                             : sl_answer_true(v) ? "true now (up checks it again after the last chunk)"
                                                 : "not true yet (it must be once the last chunk is done, or the job "
                                                   "fails)",
                             stdout);
            printf("\n");
            sl_answer_free(&ans);
        }
    }
    int warnings = scope_warnings + (info.index ? 0 : 1);
    warnings += plan_health(opts, sess, job, &info, &refused);
    if (!info.unique_key) {
        printf("warning:    no unique index covers the key: chunks take every row of their :hi value, so they may "
               "be larger than batch\n");
        warnings++;
    }
    if (info.nullable_key) {
        printf("warning:    a key column allows NULL: rows with a NULL key are never visited\n");
        warnings++;
    }
    int seq = plan_first_chunk(sess, job, &info);
    if (!info.index)
        printf("\nwarning: no btree index on the key: create one before running%s\n",
               opts->allow_no_index ? " (--allow-no-index: up walks it anyway)"
                                    : "; up refuses this job unless --allow-no-index");
    if (seq)
        printf("\nwarning: a plan above %s: each chunk may read the whole table\n",
               sess->dialect == SL_DIALECT_SQLITE ? "scans the table without an index (SCAN or TEMP B-TREE)"
                                                  : "has a Seq Scan");
    if (refused) {
        sl_error("plan %s: up refuses this job: %d reason%s above (\"up refuses this job\")", job->name, refused,
                 refused == 1 ? "" : "s");
        code = SL_EXIT_USAGE;
    } else if (sample > 0 && sl_plan_sample(sess, job, &info, rows, sample) != 0) {
        code = SL_EXIT_FAILED;
    }
    sl_table_info_free(&info);
    return code;
}
