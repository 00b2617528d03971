/* test_job.c: the job-file parser: every directive (value, default, errors), sections, job sets. */
#include "check.h"
#include "sluice/jobs/job.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH "jobs/0003_fix.sql"
#define UP   "-- sluice:up\nUPDATE t SET a = 1 WHERE id BETWEEN :lo AND :hi;\n"

static sl_job job;
static sl_err err;

static int parse(const char *text)
{
    sl_job_free(&job);
    err.msg[0] = '\0';
    return sl_job_parse(PATH, text, strlen(text), &job, &err);
}

/* A job with "table t" on line 1, the given line on line 2, then an up section. */
static int with(const char *line2)
{
    char *text = sl_asprintf("-- sluice:table t\n%s\n" UP, line2);
    int rc = parse(text);
    free(text);
    return rc;
}

static int job_is_zeroed(void)
{
    static const sl_job zero;
    return memcmp(&job, &zero, sizeof job) == 0;
}

/* ---- README's example job ("A job file", with undo snapshot) and the defaults ---- */

static const char spec_example[] = "-- sluice:table users\n"
                                   "-- sluice:key id\n"
                                   "-- sluice:batch 5000\n"
                                   "-- sluice:undo snapshot(full_name)\n"
                                   "\n"
                                   "-- sluice:up\n"
                                   "UPDATE users\n"
                                   "   SET full_name = first_name || ' ' || last_name\n"
                                   " WHERE id BETWEEN :lo AND :hi\n"
                                   "   AND full_name IS NULL;\n"
                                   "\n"
                                   "-- sluice:down\n"
                                   "UPDATE users SET full_name = NULL WHERE id BETWEEN :lo AND :hi;\n";

static void test_spec_example(void)
{
    CHECK(parse(spec_example) == 0);
    CHECK_STR(job.name, "0003_fix");
    CHECK_STR(job.path, PATH);
    CHECK_STR(job.table, "users");
    CHECK(job.nkey == 1);
    CHECK_STR(job.key[0], "id");
    CHECK(job.batch == 5000);
    CHECK(job.undo == SL_UNDO_SNAPSHOT_COLS);
    CHECK(job.nundo_cols == 1);
    CHECK_STR(job.undo_cols[0], "full_name");
    CHECK(job.line[SL_DIR_TABLE] == 1 && job.line[SL_DIR_KEY] == 2);
    CHECK(job.line[SL_DIR_BATCH] == 3 && job.line[SL_DIR_UNDO] == 4);
    CHECK(job.line[SL_DIR_WHERE] == 0);
    CHECK(job.up.present && job.up.line == 6);
    CHECK(job.up.nstmts == 1);
    CHECK(job.up.stmts[0].line == 7);
    CHECK_HAS(job.up.stmts[0].text, "UPDATE users\n   SET full_name");
    CHECK(job.up.stmts[0].uses_lo && job.up.stmts[0].uses_hi);
    CHECK(job.down.present && job.down.line == 12);
    CHECK(job.down.nstmts == 1 && job.down.stmts[0].line == 13);
    CHECK_STR(job.down.stmts[0].text, "UPDATE users SET full_name = NULL WHERE id BETWEEN :lo AND :hi");
    char sum[17];
    sl_checksum_hex(spec_example, strlen(spec_example), sum);
    CHECK_STR(job.checksum, sum);
    CHECK(strlen(job.checksum) == 16);
}

static void test_checksum_changes_with_any_byte(void)
{
    char sum1[17];
    CHECK(parse("-- sluice:table t\n" UP) == 0);
    memcpy(sum1, job.checksum, sizeof sum1);
    CHECK(parse("-- sluice:table t\n\n" UP) == 0);
    CHECK(strcmp(sum1, job.checksum) != 0);
}

static void test_defaults(void)
{
    CHECK(parse("-- sluice:table t\n" UP) == 0);
    CHECK(job.key == NULL && job.nkey == 0);
    CHECK(job.where == NULL);
    CHECK(job.batch == 1000);
    CHECK(job.chunk_time_ms == 0);
    CHECK(job.pause_ms == 0);
    CHECK(job.max_rate == 0);
    CHECK(job.windows == NULL && job.nwindows == 0);
    CHECK(job.lock_timeout_ms == 2000);
    CHECK(job.statement_timeout_ms == 60000);
    CHECK(job.retries == 5);
    CHECK(job.on_error == SL_ON_ERROR_STOP);
    CHECK(job.undo == SL_UNDO_NONE);
    CHECK(job.undo_cols == NULL && job.nundo_cols == 0);
    CHECK(job.workers == 1);
    CHECK(job.wait_commit == 0);
    CHECK(job.max_replica_lag_ms == 0);
    CHECK(job.throttle_query == NULL);
    CHECK(job.requires == NULL);
    CHECK(!job.down.present);
    for (int d = 1; d < SL_DIR_COUNT; d++)
        CHECK(job.line[d] == 0);
}

static void test_directive_names(void)
{
    CHECK_STR(sl_directive_name(SL_DIR_TABLE), "table");
    CHECK_STR(sl_directive_name(SL_DIR_CHUNK_TIME), "chunk-time");
    CHECK_STR(sl_directive_name(SL_DIR_STATEMENT_TIMEOUT), "statement-timeout");
    CHECK_STR(sl_directive_name(SL_DIR_MAX_REPLICA_LAG), "max-replica-lag");
    CHECK_STR(sl_directive_name(SL_DIR_REQUIRES), "requires");
}

/* ---- each directive ---- */

static void test_table(void)
{
    static const char *const good[] = {"users", "app.users", "\"My Table\"", "\"a\"\"b\".c", "app.\"T\"", "_t$1", NULL};
    for (size_t i = 0; good[i]; i++) {
        char *text = sl_asprintf("-- sluice:table %s\n" UP, good[i]);
        CHECK(parse(text) == 0);
        CHECK_STR(job.table, good[i]);
        free(text);
    }
    static const char *const bad[] = {"a b", "a.b.c", "1abc", "\"\"", "a.", "\"open", "a;b", NULL};
    for (size_t i = 0; bad[i]; i++) {
        char *text = sl_asprintf("-- sluice:table %s\n" UP, bad[i]);
        CHECK(parse(text) < 0);
        CHECK_HAS(err.msg, PATH ":1: table expects a table name such as users, app.users or \"Users\", got \"");
        CHECK_HAS(err.msg, bad[i]);
        free(text);
    }
    CHECK(parse("-- sluice:table\n" UP) < 0);
    CHECK_STR(err.msg, PATH ":1: table expects a table name such as users, app.users or \"Users\", got nothing");
}

static void test_key(void)
{
    CHECK(with("-- sluice:key id") == 0);
    CHECK(job.nkey == 1);
    CHECK_STR(job.key[0], "id");
    CHECK(job.line[SL_DIR_KEY] == 2);
    CHECK(with("-- sluice:key tenant_id,id ,  \"Created At\"") == 0);
    CHECK(job.nkey == 3);
    CHECK_STR(job.key[0], "tenant_id");
    CHECK_STR(job.key[1], "id");
    CHECK_STR(job.key[2], "\"Created At\"");
    /* "Id" quoted is another column than id, which folds to lower case. */
    CHECK(with("-- sluice:key \"Id\", id") == 0);
    CHECK(job.nkey == 2);
    CHECK(with("-- sluice:key a,b,c,d,e,f,g,h") == 0);
    CHECK(job.nkey == 8);
}

static void test_key_errors(void)
{
    CHECK(with("-- sluice:key id, ID") < 0);
    CHECK_STR(err.msg, PATH ":2: key names column ID twice");
    CHECK(with("-- sluice:key \"x\", \"x\"") < 0);
    CHECK_STR(err.msg, PATH ":2: key names column \"x\" twice");
    CHECK(with("-- sluice:key a,b,c,d,e,f,g,h,i") < 0);
    CHECK_STR(err.msg, PATH ":2: key has 9 columns, at most 8 are supported");
    static const char *const bad[] = {"a,,b", "a b", ",", "a,", "t.id", "(a)", NULL};
    for (size_t i = 0; bad[i]; i++) {
        char *line = sl_asprintf("-- sluice:key %s", bad[i]);
        CHECK(with(line) < 0);
        CHECK_HAS(err.msg, PATH ":2: key expects column names separated by commas, such as id or tenant_id, id, "
                                "got \"");
        free(line);
    }
    CHECK(with("-- sluice:key") < 0);
    CHECK_HAS(err.msg, "key expects column names separated by commas, such as id or tenant_id, id, got nothing");
}

static void test_where(void)
{
    CHECK(with("-- sluice:where status = 'active' AND note <> 'a;b'") == 0);
    CHECK_STR(job.where, "status = 'active' AND note <> 'a;b'");
    CHECK(job.line[SL_DIR_WHERE] == 2);
    /* A trailing comment is dropped so that it cannot comment out SQL built around the clause. */
    CHECK(with("-- sluice:where deleted_at IS NULL -- live rows only") == 0);
    CHECK_STR(job.where, "deleted_at IS NULL");
    CHECK(with("-- sluice:where a = 1; DROP TABLE t") < 0);
    CHECK_HAS(err.msg, PATH ":2: ';' is not allowed here");
    CHECK(with("-- sluice:where id > :lo") < 0);
    CHECK_HAS(err.msg, PATH ":2: where cannot use :lo or :hi");
    CHECK(with("-- sluice:where x::lo IS NOT NULL") == 0);
    CHECK(with("-- sluice:where") < 0);
    CHECK_STR(err.msg, PATH ":2: where expects an SQL condition such as deleted_at IS NULL, got nothing");
    CHECK(with("-- sluice:where name = 'open") < 0);
    CHECK_HAS(err.msg, PATH ":2: unterminated string literal");
}

static void test_batch(void)
{
    CHECK(with("-- sluice:batch 5000") == 0);
    CHECK(job.batch == 5000);
    CHECK(with("-- sluice:batch 1") == 0);
    CHECK(job.batch == 1);
    CHECK(with("-- sluice:batch 10000000") == 0);
    CHECK(job.batch == 10000000);
    CHECK(with("-- sluice:batch abc") < 0);
    CHECK_STR(err.msg, PATH ":2: batch expects a whole number of rows from 1 to 10000000, got \"abc\"");
    CHECK(with("-- sluice:batch 0") < 0);
    CHECK_HAS(err.msg, "got \"0\"");
    CHECK(with("-- sluice:batch 10000001") < 0);
    CHECK_HAS(err.msg, "batch expects");
    CHECK(with("-- sluice:batch 1.5") < 0);
    CHECK(with("-- sluice:batch -5") < 0);
    CHECK(with("-- sluice:batch") < 0);
    CHECK_STR(err.msg, PATH ":2: batch expects a whole number of rows from 1 to 10000000, got nothing");
}

static void test_chunk_time(void)
{
    CHECK(with("-- sluice:chunk-time 500ms") == 0);
    CHECK(job.chunk_time_ms == 500);
    CHECK(with("-- sluice:chunk-time 2s") == 0);
    CHECK(job.chunk_time_ms == 2000);
    CHECK(with("-- sluice:chunk-time 0s") < 0);
    CHECK_STR(err.msg, PATH ":2: chunk-time expects a duration greater than zero such as 500ms, 2s or 1m, got "
                            "\"0s\"");
    CHECK(with("-- sluice:chunk-time 2") < 0);
    CHECK_HAS(err.msg, "got \"2\"");
    CHECK(with("-- sluice:chunk-time 2 s") < 0);
}

static void test_pause(void)
{
    CHECK(with("-- sluice:pause 250ms") == 0);
    CHECK(job.pause_ms == 250);
    CHECK(with("-- sluice:pause 0s") == 0);
    CHECK(job.pause_ms == 0 && job.line[SL_DIR_PAUSE] == 2);
    CHECK(with("-- sluice:pause 1m") == 0);
    CHECK(job.pause_ms == 60000);
    CHECK(with("-- sluice:pause -1s") < 0);
    CHECK_STR(err.msg, PATH ":2: pause expects a duration such as 0s, 250ms or 1s, got \"-1s\"");
    CHECK(with("-- sluice:pause soon") < 0);
}

static void test_max_rate(void)
{
    CHECK(with("-- sluice:max-rate 2000") == 0);
    CHECK(job.max_rate == 2000);
    CHECK(with("-- sluice:max-rate 1") == 0);
    CHECK(job.max_rate == 1);
    CHECK(with("-- sluice:max-rate 0") < 0);
    CHECK_STR(err.msg, PATH ":2: max-rate expects a whole number of rows per second, at least 1, got \"0\"");
}

static void test_window(void)
{
    CHECK(with("-- sluice:window 22:00-06:00") == 0);
    CHECK(job.nwindows == 1);
    CHECK(job.windows[0].start_min == 22 * 60 && job.windows[0].end_min == 6 * 60);
    CHECK(with("-- sluice:window 09:00-12:00, 13:00 - 17:30,0:00-0:01") == 0);
    CHECK(job.nwindows == 3);
    CHECK(job.windows[0].start_min == 540 && job.windows[0].end_min == 720);
    CHECK(job.windows[1].start_min == 780 && job.windows[1].end_min == 1050);
    CHECK(job.windows[2].start_min == 0 && job.windows[2].end_min == 1);
    CHECK(with("-- sluice:window 00:00-23:59") == 0);
    CHECK(job.windows[0].end_min == 1439);
    static const char *const bad[] = {"24:00-01:00",  "09:60-10:00", "9-10",  "09:00", "09:00-10:00,",
                                      "09:00-10:000", "9:5-10:00",   "night", NULL};
    for (size_t i = 0; bad[i]; i++) {
        char *line = sl_asprintf("-- sluice:window %s", bad[i]);
        CHECK(with(line) < 0);
        CHECK_HAS(err.msg, PATH ":2: window expects time ranges HH:MM-HH:MM separated by commas, such as "
                                "22:00-06:00, got \"");
        free(line);
    }
    CHECK(with("-- sluice:window 08:00-09:00, 10:00-10:00") < 0);
    CHECK_HAS(err.msg, PATH ":2: window 10:00-10:00 starts and ends at the same time");
}

static void test_timeouts(void)
{
    CHECK(with("-- sluice:lock-timeout 500ms") == 0);
    CHECK(job.lock_timeout_ms == 500);
    CHECK(job.statement_timeout_ms == 60000);
    CHECK(with("-- sluice:statement-timeout 5m") == 0);
    CHECK(job.statement_timeout_ms == 300000);
    CHECK(job.lock_timeout_ms == 2000);
    CHECK(with("-- sluice:lock-timeout 0ms") < 0);
    CHECK_STR(err.msg, PATH ":2: lock-timeout expects a duration greater than zero such as 500ms or 2s, got \"0ms\"");
    CHECK(with("-- sluice:statement-timeout 0s") < 0);
    CHECK_HAS(err.msg, PATH ":2: statement-timeout expects a duration greater than zero");
    CHECK(with("-- sluice:statement-timeout 10") < 0);
    /* PostgreSQL keeps both as an int of ms: 597h parsed, passed plan, then failed every chunk */
    CHECK(with("-- sluice:lock-timeout 596h") == 0);
    CHECK(job.lock_timeout_ms == INT64_C(2145600000));
    CHECK(with("-- sluice:statement-timeout 2147483647ms") == 0);
    CHECK(job.statement_timeout_ms == INT64_C(2147483647));
    CHECK(with("-- sluice:statement-timeout 597h") < 0);
    CHECK_STR(err.msg, PATH ":2: statement-timeout 597h is too long: at most 2147483647ms (about 596h), the most "
                            "PostgreSQL takes");
    CHECK(with("-- sluice:lock-timeout 2147483648ms") < 0);
    CHECK_STR(err.msg, PATH ":2: lock-timeout 2147483648ms is too long: at most 2147483647ms (about 596h), the most "
                            "PostgreSQL takes");
    CHECK(with("-- sluice:lock-timeout 35792m") < 0);
    CHECK_HAS(err.msg, "lock-timeout 35792m is too long");
    CHECK(with("-- sluice:lock-timeout 99999999999h") < 0);
    CHECK_HAS(err.msg, "is too long: at most 2147483647ms");
    /* other durations are the runner's own, not the server's: long is fine */
    CHECK(with("-- sluice:pause 1000h") == 0);
    CHECK(job.pause_ms == INT64_C(3600000000));
}

static void test_retries(void)
{
    CHECK(with("-- sluice:retries 0") == 0);
    CHECK(job.retries == 0);
    CHECK(with("-- sluice:retries 100") == 0);
    CHECK(job.retries == 100);
    CHECK(with("-- sluice:retries 101") < 0);
    CHECK_STR(err.msg, PATH ":2: retries expects a whole number of attempts from 0 to 100, got \"101\"");
}

static void test_on_error(void)
{
    CHECK(with("-- sluice:on-error skip") == 0);
    CHECK(job.on_error == SL_ON_ERROR_SKIP);
    CHECK(with("-- sluice:on-error stop") == 0);
    CHECK(job.on_error == SL_ON_ERROR_STOP && job.line[SL_DIR_ON_ERROR] == 2);
    CHECK(with("-- sluice:on-error continue") < 0);
    CHECK_STR(err.msg, PATH ":2: on-error expects stop or skip, got \"continue\"");
}

static void test_undo(void)
{
    CHECK(with("-- sluice:undo snapshot(a, \"B c\" ,d)") == 0);
    CHECK(job.undo == SL_UNDO_SNAPSHOT_COLS);
    CHECK(job.nundo_cols == 3);
    CHECK_STR(job.undo_cols[1], "\"B c\"");
    CHECK_STR(job.undo_cols[2], "d");
    CHECK(with("-- sluice:undo snapshot(*)") == 0);
    CHECK(job.undo == SL_UNDO_SNAPSHOT_ALL && job.nundo_cols == 0);
    CHECK(with("-- sluice:undo snapshot ( * )") == 0);
    CHECK(job.undo == SL_UNDO_SNAPSHOT_ALL);
    CHECK(parse("-- sluice:table t\n-- sluice:undo down\n" UP "-- sluice:down\nDELETE FROM x WHERE id BETWEEN :lo "
                "AND :hi;\n") == 0);
    CHECK(job.undo == SL_UNDO_DOWN);
    /* A snapshot is kept even when there is a down section. */
    CHECK(parse("-- sluice:table t\n-- sluice:undo snapshot(a)\n" UP "-- sluice:down\nSELECT :lo, :hi;\n") == 0);
    CHECK(job.undo == SL_UNDO_SNAPSHOT_COLS);
}

static void test_undo_default(void)
{
    CHECK(parse("-- sluice:table t\n" UP "-- sluice:down\nDELETE FROM x WHERE id BETWEEN :lo AND :hi;\n") == 0);
    CHECK(job.undo == SL_UNDO_DOWN);
    CHECK(job.line[SL_DIR_UNDO] == 0);
    CHECK(parse("-- sluice:table t\n" UP) == 0);
    CHECK(job.undo == SL_UNDO_NONE);
}

static void test_undo_errors(void)
{
    CHECK(parse("-- sluice:table t\n\n-- sluice:undo down\n" UP) < 0);
    CHECK_HAS(err.msg, PATH ":3: undo down needs a -- sluice:down section");
    CHECK(job_is_zeroed());
    static const char *const bad[] = {"snapshot()",     "snapshot",      "snap(a)", "snapshot(a", "snapshot(a,)",
                                      "snapshot(*, a)", "snapshot(a) x", "up",      NULL};
    for (size_t i = 0; bad[i]; i++) {
        char *line = sl_asprintf("-- sluice:undo %s", bad[i]);
        CHECK(with(line) < 0);
        CHECK_HAS(err.msg, PATH ":2: undo expects snapshot(COL, ...), snapshot(*) or down, got \"");
        free(line);
    }
    CHECK(with("-- sluice:undo snapshot(a, A)") < 0);
    CHECK_STR(err.msg, PATH ":2: undo names column A twice");
}

static void test_workers(void)
{
    CHECK(with("-- sluice:workers 4") == 0);
    CHECK(job.workers == 4);
    CHECK(with("-- sluice:workers 64") == 0);
    CHECK(job.workers == 64);
    CHECK(with("-- sluice:workers 65") < 0);
    CHECK_STR(err.msg, PATH ":2: workers expects a whole number of workers from 1 to 64, got \"65\"");
    CHECK(with("-- sluice:workers 0") < 0);
}

static void test_synchronous_commit(void)
{
    CHECK(with("-- sluice:synchronous-commit on") == 0);
    CHECK(job.wait_commit == 1);
    CHECK(with("-- sluice:synchronous-commit off") == 0);
    CHECK(job.wait_commit == 0);
    CHECK(with("-- sluice:synchronous-commit remote_apply") < 0);
    CHECK_STR(err.msg,
              PATH ":2: synchronous-commit expects off (chunks commit without waiting for the disk) or on "
                   "(each chunk's commit waits as the server's synchronous_commit says), got \"remote_apply\"");
    CHECK(job.wait_commit == 0); /* left zeroed */
    CHECK(with("-- sluice:synchronous-commmit on") < 0);
    CHECK_HAS(err.msg, "did you mean \"synchronous-commit\"?");
}

static void test_max_replica_lag(void)
{
    CHECK(with("-- sluice:max-replica-lag 10s") == 0);
    CHECK(job.max_replica_lag_ms == 10000);
    CHECK(with("-- sluice:max-replica-lag 0s") < 0);
    CHECK_STR(err.msg, PATH ":2: max-replica-lag expects a duration greater than zero such as 10s, got \"0s\"");
}

static void test_max_wal_rate(void)
{
    CHECK(with("-- sluice:max-wal-rate 50MB") == 0);
    CHECK(job.max_wal_rate == 50 * 1024 * 1024);
    CHECK(with("-- sluice:max-wal-rate 500kB/s") == 0);
    CHECK(job.max_wal_rate == 500 * 1024);
    CHECK(with("-- sluice:max-wal-rate 1GB") == 0);
    CHECK(job.max_wal_rate == 1024 * 1024 * 1024);
    CHECK(with("-- sluice:max-wal-rate 50mb") < 0);
    CHECK_STR(err.msg, PATH ":2: max-wal-rate: unit \"mb\" (hint: write 50MB, in PostgreSQL's spelling)");
    CHECK(with("-- sluice:max-wal-rate 0MB") < 0);
    CHECK_HAS(err.msg, PATH ":2: max-wal-rate expects an amount of WAL per second such as 500kB");
    CHECK(with("-- sluice:max-wal-rate 50") < 0);
    CHECK(with("-- sluice:max-wal-rate 99999999999TB") < 0);
    /* too large for an int64_t once shifted: refused before the shift, which would be undefined behaviour */
    CHECK(with("-- sluice:max-wal-rate 1024TB") == 0);
    CHECK(job.max_wal_rate == INT64_C(1) << 50);
    CHECK(with("-- sluice:max-wal-rate 1025TB") < 0);
    CHECK(with("-- sluice:max-wal-rate 8388608TB") < 0);
    CHECK_HAS(err.msg, PATH ":2: max-wal-rate expects");
    CHECK_HAS(err.msg, "at most 1024TB");
    CHECK_HAS(err.msg, "got \"8388608TB\"");
    CHECK(with("-- sluice:max-wal-rate 16777216TB") < 0);
    CHECK(with("-- sluice:max-wal-rate 9999999999GB") < 0);
    CHECK_HAS(err.msg, "got \"9999999999GB\"");
    CHECK(with("-- sluice:max-wal-rate 9999999999TB/s") < 0);
}

static void test_max_dead_tuples(void)
{
    CHECK(with("-- sluice:max-dead-tuples 20%") == 0);
    CHECK(job.max_dead_tuples_bp == 2000);
    CHECK(with("-- sluice:max-dead-tuples 2.5%") == 0);
    CHECK(job.max_dead_tuples_bp == 250);
    CHECK(with("-- sluice:max-dead-tuples 0.01%") == 0);
    CHECK(job.max_dead_tuples_bp == 1);
    CHECK(with("-- sluice:max-dead-tuples 20") < 0);
    CHECK_STR(err.msg, PATH ":2: max-dead-tuples expects a share of the table's live rows such as 20% (from 0.01% "
                            "to 1000%), got \"20\"");
    CHECK(with("-- sluice:max-dead-tuples 0%") < 0);
    CHECK(with("-- sluice:max-dead-tuples 1001%") < 0);
    CHECK(with("-- sluice:max-dead-tuples 2.555%") < 0);
    CHECK(with("-- sluice:max-dead-tuples .5%") < 0);
}

static void test_throttle_query_and_requires(void)
{
    CHECK(with("-- sluice:throttle-query SELECT count(*) > 10 FROM pg_stat_activity WHERE state = 'active'") == 0);
    CHECK_STR(job.throttle_query, "SELECT count(*) > 10 FROM pg_stat_activity WHERE state = 'active'");
    CHECK(job.line[SL_DIR_THROTTLE_QUERY] == 2);
    CHECK(with("-- sluice:requires SELECT EXISTS (SELECT 1 FROM t) /* seeded */") == 0);
    CHECK_STR(job.requires, "SELECT EXISTS (SELECT 1 FROM t)");
    CHECK(with("-- sluice:requires") < 0);
    CHECK_STR(err.msg, PATH ":2: requires expects an SQL query that returns true when the job may start, got nothing");
    CHECK(with("-- sluice:throttle-query SELECT :hi > 5") < 0);
    CHECK_HAS(err.msg, PATH ":2: throttle-query cannot use :lo or :hi");
    CHECK(with("-- sluice:requires SELECT 1; SELECT 2") < 0);
    CHECK_HAS(err.msg, PATH ":2: ';' is not allowed here");
    CHECK(with("-- sluice:verify SELECT count(*) = 0 FROM users WHERE full_name IS NULL -- all filled") == 0);
    CHECK_STR(job.verify, "SELECT count(*) = 0 FROM users WHERE full_name IS NULL");
    CHECK(job.line[SL_DIR_VERIFY] == 2);
    CHECK(with("-- sluice:verify") < 0);
    CHECK_HAS(err.msg, PATH ":2: verify expects an SQL query that returns true once the job has done what it should");
    CHECK(with("-- sluice:verify SELECT :lo IS NULL") < 0);
    CHECK_HAS(err.msg, PATH ":2: verify cannot use :lo or :hi");
}

/* ---- directive syntax ---- */

static void test_directive_spacing(void)
{
    CHECK(with("--sluice:batch 7") == 0);
    CHECK(job.batch == 7);
    CHECK(with("--  \tsluice:batch\t 8 \r") == 0);
    CHECK(job.batch == 8);
    CHECK(with("   -- sluice:batch 9") == 0);
    CHECK(job.batch == 9);
    /* Not directives: plain comments. */
    CHECK(with("-- sluice is great, batch 5") == 0);
    CHECK(with("--- sluice:batch 5") == 0);
    CHECK(job.batch == 1000);
}

static void test_unknown_directive_hint(void)
{
    CHECK(parse("-- sluice:table t\n\n\n\n\n-- a comment\n-- sluice:bacth 5000\n" UP) < 0);
    CHECK_STR(err.msg, PATH ":7: unknown directive \"bacth\" (hint: did you mean \"batch\"?)");
    CHECK(with("-- sluice:chunktime 1s") < 0);
    CHECK_STR(err.msg, PATH ":2: unknown directive \"chunktime\" (hint: did you mean \"chunk-time\"?)");
    CHECK(with("-- sluice:statment_timeout 1s") < 0);
    CHECK_HAS(err.msg, "(hint: did you mean \"statement-timeout\"?)");
    CHECK(with("-- sluice:Table t") < 0);
    CHECK_HAS(err.msg, "did you mean \"table\"?");
    CHECK(with("-- sluice:wokers 2") < 0);
    CHECK_HAS(err.msg, "did you mean \"workers\"?");
    CHECK(with("-- Sluice:batch 5") < 0); /* would be a comment, its directive lost */
    CHECK_STR(err.msg, PATH ":2: \"Sluice:\" must be written \"sluice:\" (hint: directives are lower case: -- "
                            "sluice:batch)");
    CHECK(parse("-- sluice:table t\n" UP "-- SLUICE:DOWN\nSELECT :lo, :hi;\n") < 0);
    CHECK_HAS(err.msg, PATH ":4: \"SLUICE:\" must be written \"sluice:\"");
    CHECK(with("-- sluice:BATCH 5") < 0);
    CHECK_STR(err.msg, PATH ":2: unknown directive \"BATCH\" (hint: did you mean \"batch\"?)");
}

static void test_unknown_directive_without_hint(void)
{
    CHECK(with("-- sluice:colour blue") < 0);
    CHECK_HAS(err.msg, PATH ":2: unknown directive \"colour\" (hint: directives are table, key, where, batch, ");
    CHECK_HAS(
        err.msg,
        "throttle-query, requires, end, max-wal-rate, max-dead-tuples, verify, synchronous-commit; sections start at -- "
        "sluice:up and -- sluice:down)");
    CHECK(strstr(err.msg, "did you mean") == NULL);
    CHECK(with("-- sluice:") < 0);
    CHECK_HAS(err.msg, PATH ":2: expected a directive name after \"-- sluice:\"");
    CHECK(with("-- sluice: batch 5") < 0);
    CHECK_HAS(err.msg, PATH ":2: expected a directive name");
}

static void test_unknown_section_hint(void)
{
    CHECK(parse("-- sluice:table t\n-- sluice:upp\nSELECT :lo, :hi;\n") < 0);
    CHECK_STR(err.msg, PATH ":2: unknown directive \"upp\" (hint: did you mean \"up\"?)");
    /* Inside a section a misspelt marker is still an error, not a comment. */
    CHECK(parse("-- sluice:table t\n" UP "-- sluice:dwon\nSELECT :lo, :hi;\n") < 0);
    CHECK_STR(err.msg, PATH ":4: unknown directive \"dwon\" (hint: did you mean \"down\"?)");
    CHECK(parse("-- sluice:table t\n-- sluice:UP\nSELECT :lo, :hi;\n") < 0);
    CHECK_STR(err.msg, PATH ":2: unknown directive \"UP\" (hint: did you mean \"up\"?)");
    CHECK(parse("-- sluice:table t\n" UP "-- sluice:Down\nSELECT :lo, :hi;\n") < 0);
    CHECK_STR(err.msg, PATH ":4: unknown directive \"Down\" (hint: did you mean \"down\"?)");
}

static void test_duplicate_directive(void)
{
    CHECK(parse("-- sluice:table t\n-- sluice:batch 10\n-- sluice:key id\n-- sluice:batch 20\n" UP) < 0);
    CHECK_STR(err.msg, PATH ":4: directive \"batch\" given twice (first at line 2)");
    CHECK(job_is_zeroed());
    CHECK(parse("-- sluice:table t\n-- sluice:table u\n" UP) < 0);
    CHECK_STR(err.msg, PATH ":2: directive \"table\" given twice (first at line 1)");
}

static void test_directive_after_section(void)
{
    CHECK(parse("-- sluice:table t\n" UP "-- sluice:batch 10\n") < 0);
    CHECK_STR(err.msg, PATH ":4: directive \"batch\" inside the up section (hint: directives go before -- "
                            "sluice:up)");
    CHECK(parse("-- sluice:table t\n" UP "-- sluice:down\nSELECT :lo, :hi;\n-- sluice:key id\n") < 0);
    CHECK_HAS(err.msg, PATH ":6: directive \"key\" inside the down section");
}

static void test_sql_outside_section(void)
{
    CHECK(parse("-- sluice:table t\n\n-- comment\nUPDATE t SET a = 1;\n" UP) < 0);
    CHECK_STR(err.msg, PATH ":4: SQL outside a section (hint: put statements after -- sluice:up, or -- sluice:down "
                            "for the way back)");
    CHECK(parse("  \t\n-- sluice:table t\n   -- indented comment\n\n" UP) == 0);
}

static void test_missing_table_and_up(void)
{
    CHECK(parse(UP) < 0);
    CHECK_HAS(err.msg, PATH ": no table directive (hint: name the table whose key is walked");
    CHECK(job_is_zeroed());
    CHECK(parse("-- sluice:table t\n-- sluice:batch 5\n") < 0);
    CHECK_HAS(err.msg, PATH ": no up section (hint: add a line -- sluice:up");
    CHECK(parse("-- sluice:table t\n-- sluice:down\nSELECT :lo, :hi;\n") < 0);
    CHECK_HAS(err.msg, PATH ": no up section");
    CHECK(parse("") < 0);
    CHECK_HAS(err.msg, PATH ": no table directive");
}

static void test_section_markers(void)
{
    CHECK(parse("-- sluice:table t\n" UP "-- sluice:up\nSELECT :lo, :hi;\n") < 0);
    CHECK_STR(err.msg, PATH ":4: second -- sluice:up section (the first starts at line 2)");
    CHECK(parse("-- sluice:table t\n" UP "-- sluice:down\nSELECT :lo, :hi;\n-- sluice:down\nSELECT :lo, :hi;\n") < 0);
    CHECK_STR(err.msg, PATH ":6: second -- sluice:down section (the first starts at line 4)");
    CHECK(parse("-- sluice:table t\n-- sluice:up now\nSELECT :lo, :hi;\n") < 0);
    CHECK_HAS(err.msg, PATH ":2: -- sluice:up takes no value, got \"now\"");
    /* down may come first; each section keeps its own statements. */
    CHECK(parse("-- sluice:table t\n-- sluice:down\nDELETE FROM t WHERE id BETWEEN :lo AND :hi;\n" UP) == 0);
    CHECK(job.down.line == 2 && job.up.line == 4);
    CHECK(job.down.nstmts == 1 && job.up.nstmts == 1);
    CHECK_HAS(job.down.stmts[0].text, "DELETE");
    CHECK_HAS(job.up.stmts[0].text, "UPDATE");
}

static void test_empty_sections(void)
{
    CHECK(parse("-- sluice:table t\n-- sluice:up\n\n-- nothing here\n") < 0);
    CHECK_STR(err.msg, PATH ":2: the up section is empty (hint: write the statements to run for each chunk on the "
                            "lines after it)");
    CHECK(parse("-- sluice:table t\n" UP "\n-- sluice:down\n;\n") < 0);
    CHECK_HAS(err.msg, PATH ":5: the down section is empty");
}

static void test_sections_must_use_lo_and_hi(void)
{
    CHECK(parse("-- sluice:table t\n-- sluice:up\nUPDATE t SET a = 1;\n") < 0);
    CHECK_STR(err.msg, PATH ":2: the up section never uses :lo and :hi: without them every chunk would touch the "
                            "whole table (hint: limit it to the chunk, e.g. WHERE id BETWEEN :lo AND :hi)");
    CHECK(parse("-- sluice:table t\n-- sluice:up\nUPDATE t SET a = 1 WHERE id >= :lo;\n") < 0);
    CHECK_HAS(err.msg, PATH ":2: the up section never uses :hi:");
    CHECK(parse("-- sluice:table t\n-- sluice:up\nUPDATE t SET a = 1 WHERE id <= :hi;\n") < 0);
    CHECK_HAS(err.msg, PATH ":2: the up section never uses :lo:");
    /* Placeholders in comments and literals do not count. */
    CHECK(parse("-- sluice:table t\n-- sluice:up\nUPDATE t SET a = ':lo' -- :hi\n;\n") < 0);
    CHECK_HAS(err.msg, "never uses :lo and :hi");
    /* Across statements is enough. */
    CHECK(parse("-- sluice:table t\n-- sluice:up\nDELETE FROM a WHERE id >= :lo;\nDELETE FROM b WHERE id <= :hi;\n") ==
          0);
    CHECK(parse("-- sluice:table t\n" UP "-- sluice:down\nUPDATE t SET a = NULL;\n") < 0);
    CHECK_HAS(err.msg, PATH ":4: the down section never uses :lo and :hi");
}

static void test_several_statements_and_lines(void)
{
    const char *text = "-- sluice:table t\n"
                       "-- sluice:up\n"
                       "UPDATE t SET a = 1 WHERE id BETWEEN :lo AND :hi;\n"
                       "\n"
                       "-- second\n"
                       "INSERT INTO log SELECT id FROM t WHERE id BETWEEN :lo AND :hi;\n"
                       "DO $$ BEGIN PERFORM 1; END $$";
    CHECK(parse(text) == 0);
    CHECK(job.up.nstmts == 3);
    CHECK(job.up.stmts[0].line == 3);
    CHECK(job.up.stmts[1].line == 6);
    CHECK(job.up.stmts[2].line == 7);
    CHECK_STR(job.up.stmts[2].text, "DO $$ BEGIN PERFORM 1; END $$");
}

static void test_scanner_errors_name_file_lines(void)
{
    CHECK(parse("-- sluice:table t\n-- sluice:up\nUPDATE t SET a = 1 WHERE id BETWEEN :lo AND :hi;\n\nUPDATE t SET "
                "b = 'x\n;\n") < 0);
    CHECK_STR(err.msg, PATH ":5: unterminated string literal (hint: close it with ')");
}

static void test_transaction_control_refused(void)
{
    static const struct {
        const char *stmt;
        const char *shown;
    } cases[] = {
        {"BEGIN", "BEGIN"},
        {"commit", "COMMIT"},
        {"START TRANSACTION", "START TRANSACTION"},
        {"END", "END"},
        {"ROLLBACK", "ROLLBACK"},
        {"abort", "ABORT"},
        {"SAVEPOINT s1", "SAVEPOINT"},
        {"RELEASE SAVEPOINT s1", "RELEASE"},
        {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET TRANSACTION"},
        {"set transaction read only", "SET TRANSACTION"},
        {"SET transaction_isolation = 'serializable'", "SET TRANSACTION_ISOLATION"},
        {"PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"},
        {"/* c */ Begin", "BEGIN"},
        /* comments between the words do not hide it */
        {"/* a */ SET /* b */ TRANSACTION -- c\n ISOLATION LEVEL SERIALIZABLE", "SET TRANSACTION"},
        {"begin\ttransaction", "BEGIN TRANSACTION"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = sl_asprintf("-- sluice:table t\n" UP "%s;\n", cases[i].stmt);
        CHECK(parse(text) < 0);
        char *want = sl_asprintf(PATH ":4: %s is transaction control, not allowed in a section: sluice runs each "
                                      "chunk in a transaction of its own (hint: remove it)",
                                 cases[i].shown);
        CHECK_STR(err.msg, want);
        free(want);
        free(text);
    }
    CHECK(parse("-- sluice:table t\n" UP "VACUUM t;\n") < 0);
    CHECK_STR(err.msg, PATH ":4: VACUUM cannot run inside a transaction, and sluice runs each chunk in a transaction "
                            "of its own (hint: run it after the job)");
    /* Settings scoped to the chunk's transaction are fine, and so are ordinary statements. */
    CHECK(parse("-- sluice:table t\n" UP "SET LOCAL work_mem = '64MB';\nSELECT 'begin';\n") == 0);
    CHECK(parse("-- sluice:table t\n" UP "PREPARE q AS SELECT 1;\n") == 0);
    CHECK(parse("-- sluice:table t\n" UP "SET LOCAL transactions_seen = 1;\nSELECT begin_x FROM t;\n") == 0);
}

/* A statement must begin as one: a misspelled first word, or a byte order
 * mark where two files were joined, is refused with the file and line
 * before anything runs (the server would have seen it at the first chunk). */
static void test_statement_must_begin_as_one(void)
{
    CHECK(parse("-- sluice:table t\n-- sluice:up\nUPDAT t SET a = 1 WHERE id BETWEEN :lo AND :hi;\n") < 0);
    CHECK_STR(err.msg, PATH ":3: \"UPDAT t SET a = 1 WHERE \" begins no SQL statement\nhint: a statement begins "
                            "with a keyword such as UPDATE, DELETE, INSERT, SELECT, WITH or CALL: is the first word "
                            "misspelled?");
    CHECK(parse("-- sluice:table t\n-- sluice:up\nSELECT 1;\n\xef\xbb\xbfUPDATE t SET a = 1 WHERE id BETWEEN :lo "
                "AND :hi;\n") < 0);
    CHECK_HAS(err.msg, PATH ":4: ");
    CHECK_HAS(err.msg, "begins no SQL statement: it begins with a byte order mark (U+FEFF)");
    CHECK_HAS(err.msg, "hint: remove the byte order mark");
    /* keywords of either database, any case, after comments; a parenthesis */
    CHECK(parse("-- sluice:table t\n-- sluice:up\n/* c */ update t SET a = 1 WHERE id BETWEEN :lo AND :hi;\n"
                "(SELECT 1) UNION (SELECT 2);\nCALL p(:lo, :hi);\nDo $$ BEGIN END $$;\nREPLACE INTO u VALUES (1);\n"
                "PRAGMA foreign_keys;\n") == 0);
}

/* A slash-star comment before the directives is a comment (it may span
 * lines and nest); SQL after it is still SQL outside a section. */
static void test_block_comment_in_preamble(void)
{
    CHECK(parse("/* backfill of t.a, ticket 42 */\n-- sluice:table t\n" UP) == 0);
    CHECK_STR(job.table, "t");
    CHECK(parse("/*\n * backfill\n * /* nested */ still a comment\n */  /* two */ -- and a line comment\n"
                "-- sluice:table t\n-- sluice:batch 5\n" UP) == 0);
    CHECK(job.batch == 5 && job.line[SL_DIR_BATCH] == 6);
    CHECK(parse("-- sluice:table t\n/* note */ UPDATE t SET a = 1;\n" UP) < 0);
    CHECK_STR(err.msg, PATH ":2: SQL outside a section (hint: put statements after -- sluice:up, or -- sluice:down "
                            "for the way back)");
    CHECK(parse("-- sluice:table t\n/* note\n*/ x\n" UP) < 0);
    CHECK_HAS(err.msg, PATH ":3: SQL outside a section");
    /* a directive inside a comment is ambiguous */
    CHECK(parse("-- sluice:table t\n/*\n-- sluice:batch 5\n*/\n" UP) < 0);
    CHECK_STR(err.msg, PATH ":3: -- sluice:batch inside the /* comment that starts at line 2 (hint: close the "
                            "comment before it; to switch a directive off, write -- before it: -- -- "
                            "sluice:batch)");
    CHECK(parse("-- sluice:table t\n/* unclosed\n" UP) < 0);
    CHECK_HAS(err.msg, PATH ":3: -- sluice:up inside the /* comment that starts at line 2");
    CHECK(parse("-- sluice:table t\n/* unclosed\n") < 0);
    CHECK_STR(err.msg, PATH ":2: unterminated /* comment (hint: close it with */)");
    CHECK(parse("/* c */ -- sluice:table t\n" UP) < 0);
    CHECK_STR(err.msg, PATH ":1: a directive must start its line (hint: move what comes before -- sluice:table)");
    /* switched off the way the hint says */
    CHECK(parse("-- sluice:table t\n-- -- sluice:batch 5\n" UP) == 0);
    CHECK(job.batch == 1000);
}

static void test_name_crlf_and_bom(void)
{
    const char *crlf = "\xEF\xBB\xBF-- sluice:table t\r\n-- sluice:batch 50\r\n-- sluice:up\r\nUPDATE t SET a = 1 "
                       "WHERE id BETWEEN :lo AND :hi;\r\n";
    sl_job_free(&job);
    CHECK(sl_job_parse("0001_x.sql", crlf, strlen(crlf), &job, &err) == 0);
    CHECK_STR(job.name, "0001_x");
    CHECK_STR(job.table, "t");
    CHECK(job.batch == 50);
    CHECK(job.up.nstmts == 1 && job.up.stmts[0].line == 4);
    sl_job_free(&job);
    CHECK(sl_job_parse("/a/b/noext", crlf, strlen(crlf), &job, &err) == 0);
    CHECK_STR(job.name, "noext");
}

/* ---- bytes: UTF-8 text only ---- */

static int parse_n(const char *text, size_t len)
{
    sl_job_free(&job);
    err.msg[0] = '\0';
    return sl_job_parse(PATH, text, len, &job, &err);
}

/* A NUL would end the statement's C string early: the :lo/:hi seen after it
 * would never reach the database, and every chunk would update every row. */
static void test_nul_refused(void)
{
    static const char text[] = "-- sluice:table t\n-- sluice:up\n"
                               "UPDATE t SET v = v + 1 WHERE true \0 AND id BETWEEN :lo AND :hi;\n";
    CHECK(parse_n(text, sizeof text - 1) < 0);
    CHECK_STR(err.msg, PATH ":3: NUL byte at column 35: a job file is text, and nothing after a NUL would reach the "
                            "database (hint: remove it)");
    CHECK(job_is_zeroed());
    static const char in_directive[] = "-- sluice:table t\0x\n" UP;
    CHECK(parse_n(in_directive, sizeof in_directive - 1) < 0);
    CHECK_HAS(err.msg, PATH ":1: NUL byte at column 18");
    static const char at_end[] = "-- sluice:table t\n" UP "\0";
    CHECK(parse_n(at_end, sizeof at_end - 1) < 0);
    CHECK_HAS(err.msg, PATH ":4: NUL byte at column 1");
}

static void test_utf16_refused(void)
{
    static const char le_bom[] = "\xFF\xFE-\0-\0 \0s\0";
    CHECK(parse_n(le_bom, sizeof le_bom - 1) < 0);
    CHECK_STR(err.msg, PATH ":1: the file is UTF-16 (it starts with the byte order mark FF FE), but job files are "
                            "UTF-8 text (hint: convert it, e.g. iconv -f UTF-16 -t UTF-8 FILE > NEW, and put NEW in "
                            "its place)");
    static const char be_bom[] = "\xFE\xFF\0-\0-";
    CHECK(parse_n(be_bom, sizeof be_bom - 1) < 0);
    CHECK_HAS(err.msg, PATH ":1: the file is UTF-16 (it starts with the byte order mark FE FF)");
    static const char le[] = "-\0-\0 \0s\0l\0";
    CHECK(parse_n(le, sizeof le - 1) < 0);
    CHECK_HAS(err.msg, PATH ":1: the file is UTF-16 (it has a NUL in every other byte)");
    CHECK_HAS(err.msg, "iconv -f UTF-16 -t UTF-8");
    static const char be[] = "\0-\0-\0 ";
    CHECK(parse_n(be, sizeof be - 1) < 0);
    CHECK_HAS(err.msg, PATH ":1: the file is UTF-16 (it has a NUL in every other byte)");
}

static void test_invalid_utf8_refused(void)
{
    static const struct {
        const char *bytes;
        const char *want;
    } cases[] = {
        {"caf\xE9", "(byte 0xE9 at column 23)"},          /* Latin-1 */
        {"\xC0\xAF", "(byte 0xC0 at column 20)"},         /* overlong '/' */
        {"\xE0\x80\xAF", "(byte 0xE0 at column 20)"},     /* overlong, 3 bytes */
        {"\xED\xA0\x80", "(byte 0xED at column 20)"},     /* a UTF-16 surrogate */
        {"\xF4\x90\x80\x80", "(byte 0xF4 at column 20)"}, /* beyond U+10FFFF */
        {"\x80", "(byte 0x80 at column 20)"},             /* a stray continuation byte */
        {"\xE2\x82", "(byte 0xE2 at column 20)"},         /* cut short by the quote */
        {"\xFF", "(byte 0xFF at column 20)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = sl_asprintf("-- sluice:table t\n" UP "SELECT :lo, :hi, 'x%s';\n", cases[i].bytes);
        CHECK(parse(text) < 0);
        CHECK_HAS(err.msg, PATH ":4: invalid UTF-8 ");
        CHECK_HAS(err.msg, cases[i].want);
        CHECK_HAS(err.msg, "(hint: job files are UTF-8 text; convert it, e.g. iconv -f LATIN1 -t UTF-8 FILE > NEW");
        free(text);
    }
    /* cut short by the end of the file */
    CHECK(parse("-- sluice:table t\n" UP "-- \xF0\x9F\x98") < 0);
    CHECK_HAS(err.msg, PATH ":4: invalid UTF-8 (byte 0xF0 at column 4)");
}

static void test_control_characters_refused(void)
{
    CHECK(parse("-- sluice:table t\n" UP "SELECT :lo, :hi, '\x1b[2J';\n") < 0);
    CHECK_STR(err.msg, PATH ":4: control character U+001B at column 19: a job file is text (hint: remove it; in a "
                            "string write chr(27) instead)");
    CHECK(parse("-- sluice:table t\n-- \xC3\xA9\x7F\n" UP) < 0); /* columns count characters, not bytes */
    CHECK_HAS(err.msg, PATH ":2: control character U+007F at column 5");
    CHECK(parse("-- sluice:table t\n-- \xC2\x9B\n" UP) < 0); /* U+009B, a terminal's CSI */
    CHECK_HAS(err.msg, PATH ":2: control character U+009B at column 4");
    CHECK(parse("-- sluice:table t\r-- sluice:batch 5\r" UP) < 0);
    CHECK_STR(err.msg, PATH ":1: carriage return without a line feed at column 18 (hint: lines end in LF or CRLF; "
                            "convert old Mac line ends, e.g. with tr '\\r' '\\n')");
    CHECK(parse("-- sluice:table t\n" UP "\r") < 0);
    CHECK_HAS(err.msg, PATH ":4: carriage return without a line feed at column 1");
}

static void test_utf8_text_accepted(void)
{
    CHECK(parse("-- sluice:table \"Tabelle \xC3\xBC\"\n-- caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\n\f\n" UP
                "UPDATE t SET\tname = 'z\xC3\xBCrich \xEF\xBB\xBF' WHERE id BETWEEN :lo AND :hi;\n") == 0);
    CHECK_STR(job.table, "\"Tabelle \xC3\xBC\"");
    CHECK(job.up.nstmts == 2);
    /* A byte order mark counts only at the very start: the line numbers stay right. */
    CHECK(parse("\xEF\xBB\xBF-- sluice:table t\n" UP "SELECT :lo, :hi, '\x01';\n") < 0);
    CHECK_HAS(err.msg, PATH ":4: control character U+0001 at column 19");
}

/* CRLF: the CR is part of the line end, in the directives' values and in the
 * markers; statements keep it (SQL reads it as a blank). */
static void test_crlf(void)
{
    CHECK(parse("-- sluice:table t\r\n-- sluice:key id, b\r\n-- sluice:where a IS NULL\r\n-- sluice:up\r\n"
                "UPDATE t SET a = 1\r\n WHERE id BETWEEN :lo AND :hi;\r\n-- sluice:down\r\nUPDATE t SET a = NULL "
                "WHERE id BETWEEN :lo AND :hi;\r\n") == 0);
    CHECK_STR(job.table, "t");
    CHECK(job.nkey == 2);
    CHECK_STR(job.key[1], "b");
    CHECK_STR(job.where, "a IS NULL");
    CHECK(job.up.line == 4 && job.down.line == 7);
    CHECK_STR(job.up.stmts[0].text, "UPDATE t SET a = 1\r\n WHERE id BETWEEN :lo AND :hi");
    CHECK_STR(job.down.stmts[0].text, "UPDATE t SET a = NULL WHERE id BETWEEN :lo AND :hi");
    CHECK(parse("-- sluice:table t\r\n-- sluice:bacth 5\r\n" UP) < 0);
    CHECK_STR(err.msg, PATH ":2: unknown directive \"bacth\" (hint: did you mean \"batch\"?)");
}

/* ---- job sets ---- */

static void write_file(const char *dir, const char *name, const char *text)
{
    char *path = sl_asprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    free(path);
}

static void remove_file(const char *dir, const char *name)
{
    char *path = sl_asprintf("%s/%s", dir, name);
    unlink(path);
    free(path);
}

static void test_jobset(void)
{
    char dir[] = "/tmp/sluice_test_jobs_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    write_file(dir, "0002_b.sql", "-- sluice:table b\n" UP);
    write_file(dir, "0001_a.sql", "-- sluice:table a\n" UP);
    write_file(dir, "0010_c.sql", "-- sluice:table c\n" UP);
    write_file(dir, "notes.txt", "not a job");
    write_file(dir, ".#0003_x.sql", "editor lock file");
    sl_jobset set;
    CHECK(sl_jobset_load(dir, &set, &err) == 0);
    CHECK(set.njobs == 3);
    if (set.njobs == 3) {
        CHECK_STR(set.jobs[0].name, "0001_a");
        CHECK_STR(set.jobs[1].name, "0002_b");
        CHECK_STR(set.jobs[2].name, "0010_c");
        char *want = sl_asprintf("%s/0001_a.sql", dir);
        CHECK_STR(set.jobs[0].path, want);
        free(want);
    }
    CHECK(sl_jobset_find(&set, "0002_b") == &set.jobs[1]);
    CHECK(sl_jobset_find(&set, "0002_b.sql") == &set.jobs[1]);
    CHECK(sl_jobset_find(&set, "0002") == NULL);
    CHECK(sl_jobset_find(&set, "nope") == NULL);
    sl_jobset_free(&set);
    CHECK(set.jobs == NULL && set.njobs == 0);

    /* A trailing slash makes no double slash. */
    char *slashed = sl_asprintf("%s/", dir);
    CHECK(sl_jobset_load(slashed, &set, &err) == 0);
    if (set.njobs > 0)
        CHECK(strstr(set.jobs[0].path, "//") == NULL);
    sl_jobset_free(&set);
    free(slashed);

    /* Every file is parsed; each invalid one gets a line. */
    write_file(dir, "0003_bad.sql", "-- sluice:table t\n-- sluice:bacth 5\n" UP);
    write_file(dir, "0004_bad.sql", "-- sluice:up\nSELECT :lo, :hi;\n");
    CHECK(sl_jobset_load(dir, &set, &err) < 0);
    CHECK(set.jobs == NULL && set.njobs == 0);
    char *want = sl_asprintf("%s/0003_bad.sql:2: unknown directive \"bacth\" (hint: did you mean \"batch\"?)\n"
                             "%s/0004_bad.sql: no table directive",
                             dir, dir);
    CHECK_HAS(err.msg, want);
    free(want);

    static const char *const names[] = {"0001_a.sql",   "0002_b.sql",   "0010_c.sql",  "notes.txt",
                                        ".#0003_x.sql", "0003_bad.sql", "0004_bad.sql"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        remove_file(dir, names[i]);
    /* An empty directory is a set of no jobs. */
    CHECK(sl_jobset_load(dir, &set, &err) == 0);
    CHECK(set.njobs == 0);
    sl_jobset_free(&set);
    CHECK(rmdir(dir) == 0);

    CHECK(sl_jobset_load(dir, &set, &err) < 0);
    want = sl_asprintf("jobs directory \"%s\" does not exist", dir);
    CHECK_HAS(err.msg, want);
    free(want);
}

/* A FIFO named like a job must not hang the load (no writer would ever come):
 * it is refused, naming it. SIGALRM ends the test should it hang. */
static void test_jobset_fifo(void)
{
    char dir[] = "/tmp/sluice_test_jobs_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    write_file(dir, "0001_a.sql", "-- sluice:table a\n" UP);
    char *fifo = sl_asprintf("%s/0002_x.sql", dir);
    CHECK(mkfifo(fifo, 0600) == 0);
    alarm(10);
    sl_jobset set;
    CHECK(sl_jobset_load(dir, &set, &err) < 0);
    alarm(0);
    char *want = sl_asprintf("%s: cannot read it: it is a FIFO, not a regular file", fifo);
    CHECK_HAS(err.msg, want);
    free(want);
    unlink(fifo);
    free(fifo);
    remove_file(dir, "0001_a.sql");
    CHECK(rmdir(dir) == 0);
}

/* A job's name is a file name, shown in logs and status: it must be text. */
static void test_jobset_names_are_text(void)
{
    char dir[] = "/tmp/sluice_test_jobs_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    write_file(dir, "0001_\x1b[2J.sql", "-- sluice:table a\n" UP);
    write_file(dir, "0002_caf\xE9.sql", "-- sluice:table a\n" UP);
    write_file(dir, "0003_caf\xC3\xA9.sql", "-- sluice:table a\n" UP);
    sl_jobset set;
    CHECK(sl_jobset_load(dir, &set, &err) < 0);
    char *want = sl_asprintf("%s/0001_\\x1b[2J.sql: a job file's name must be UTF-8 text without control characters "
                             "(hint: rename it)\n%s/0002_caf\\xe9.sql: a job file's name must be UTF-8 text",
                             dir, dir);
    CHECK_HAS(err.msg, want);
    free(want);
    CHECK(strstr(err.msg, "0003") == NULL);
    remove_file(dir, "0001_\x1b[2J.sql");
    remove_file(dir, "0002_caf\xE9.sql");
    CHECK(sl_jobset_load(dir, &set, &err) == 0);
    CHECK(set.njobs == 1);
    if (set.njobs == 1)
        CHECK_STR(set.jobs[0].name, "0003_caf\xC3\xA9");
    sl_jobset_free(&set);
    remove_file(dir, "0003_caf\xC3\xA9.sql");
    CHECK(rmdir(dir) == 0);
}

static void test_job_load_missing_file(void)
{
    sl_job_free(&job);
    CHECK(sl_job_load("/nonexistent/0001_x.sql", &job, &err) < 0);
    CHECK_HAS(err.msg, "/nonexistent/0001_x.sql");
    CHECK(job_is_zeroed());
}

/* ---- the columns UPDATEs assign (sl_stmt_updates) ---- */

static char assigned[1024];
static int assigned_line[8];

/* The UPDATEs of the one statement text, as "target: col, col | target: col"; lines in assigned_line. */
static const char *assigns(const char *text)
{
    sl_stmt *st = NULL;
    size_t nst = 0;
    sl_err serr;
    assigned[0] = '\0';
    if (sl_sql_split(PATH, 5, text, strlen(text), &st, &nst, &serr) != 0 || nst != 1) {
        sl_stmts_free(st, nst);
        return "(not one statement)";
    }
    sl_sql_update *ups = NULL;
    size_t n = sl_stmt_updates(&st[0], &ups);
    sl_buf b = {0};
    sl_buf_adds(&b, "");
    for (size_t i = 0; i < n; i++) {
        sl_buf_printf(&b, "%s%s:", i ? " | " : "", ups[i].target);
        for (size_t c = 0; c < ups[i].ncols; c++)
            sl_buf_printf(&b, "%s %s", c ? "," : "", ups[i].cols[c]);
        if (i < 8)
            assigned_line[i] = ups[i].ncols ? ups[i].col_lines[0] : ups[i].line;
    }
    snprintf(assigned, sizeof assigned, "%s", b.data);
    sl_buf_free(&b);
    sl_sql_updates_free(ups, n);
    sl_stmts_free(st, nst);
    return assigned;
}

static void test_updates_plain_forms(void)
{
    CHECK_STR(assigns("UPDATE t SET v = v + 1 WHERE id BETWEEN :lo AND :hi"), "t: v");
    CHECK_STR(assigns("update T set A = 1, b=2"), "t: a, b");
    CHECK_STR(assigns("UPDATE public.T SET id = id + 1000, v = 'moved' WHERE id % 10 = 0"), "public.t: id, v");
    CHECK_STR(assigns("UPDATE \"My Schema\".\"T\" SET \"Odd \"\"Name\"\"\" = 1"), "\"My Schema\".\"T\": Odd \"Name\"");
    CHECK_STR(assigns("UPDATE ONLY t SET a = 1"), "t: a");
    CHECK_STR(assigns("UPDATE t * SET a = 1"), "t: a");
    CHECK_STR(assigns("UPDATE t AS x SET a = x.a + 1"), "t: a");
    CHECK_STR(assigns("UPDATE t x SET a = 1 FROM u WHERE u.id = x.id"), "t: a");
    CHECK_STR(assigns("UPDATE t SET a.f = 1, b[1] = 2, c[1:2] = ARRAY[1, 2], d = DEFAULT"), "t: a, b, c, d");
    CHECK_STR(assigns("UPDATE t SET (a, b) = (1, 2), c = 3"), "t: a, b, c");
    CHECK_STR(assigns("UPDATE t SET (a, \"B\".f) = ROW(1, 2)"), "t: a, B");
    CHECK_STR(assigns("UPDATE t SET (a, b) = (SELECT x, y FROM u WHERE u.id = t.id), c = 1 WHERE id = :lo"),
              "t: a, b, c");
    CHECK_STR(assigns("UPDATE t SET a = 1 RETURNING b, c"), "t: a");
}

static void test_updates_values_that_look_like_clauses(void)
{
    /* strings, comments, quoted names and calls that hold SET, FROM, WHERE or commas */
    CHECK_STR(assigns("UPDATE t SET a = 'x SET b = 1, c = 2', d = $$ SET e = 1 $$ WHERE f = 'SET g'"), "t: a, d");
    CHECK_STR(assigns("UPDATE t SET a = 1, -- SET b = 2,\n /* c = 3, */ d = 4"), "t: a, d");
    CHECK_STR(assigns("UPDATE t SET a = coalesce(b, c, 0), d = substring(e FROM 2 FOR 3), f = 1"), "t: a, d, f");
    CHECK_STR(assigns("UPDATE t SET a = ((1 + (2)) * 3), b = extract(year FROM now())"), "t: a, b");
    CHECK_STR(assigns("UPDATE t SET a = b IS DISTINCT FROM c, d = 1 FROM u"), "t: a, d");
    CHECK_STR(assigns("UPDATE t SET a = CASE WHEN b THEN 1 ELSE 2 END, c = E'it\\'s, d = 1' WHERE id = 1"), "t: a, c");
    CHECK_STR(assigns("UPDATE t SET \"where\" = 1, \"FROM\" = 2"), "t: where, FROM");
    CHECK_STR(assigns("UPDATE t SET a = 1::text, b = :lo::int"), "t: a, b");
}

static void test_updates_in_other_statements(void)
{
    CHECK_STR(assigns("WITH m AS (UPDATE t SET a = 1 WHERE id BETWEEN :lo AND :hi RETURNING id)\n"
                      "UPDATE u SET b = 2 FROM m WHERE u.id = m.id"),
              "t: a | u: b");
    CHECK_STR(assigns("WITH m AS (UPDATE t SET a = 1), n AS (UPDATE s.u SET (b, c) = (1, 2)) SELECT 1"),
              "t: a | s.u: b, c");
    CHECK_STR(assigns("INSERT INTO t AS x (id, a) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET a = excluded.a, "
                      "b = x.b WHERE x.a <> excluded.a"),
              "t: a, b");
    CHECK_STR(assigns("INSERT INTO t (id) SELECT id FROM u ON CONFLICT ON CONSTRAINT t_pkey DO NOTHING"), "");
    CHECK_STR(assigns("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED AND u.x THEN UPDATE SET a = u.a, "
                      "b = CASE WHEN u.b THEN 1 END WHEN MATCHED THEN UPDATE SET c = 1 WHEN NOT MATCHED THEN "
                      "INSERT (id) VALUES (u.id)"),
              "t: a, b | t: c");
    CHECK_STR(assigns("SELECT * FROM t WHERE id = :lo FOR UPDATE"), "");
    CHECK_STR(assigns("SELECT * FROM t FOR NO KEY UPDATE OF t SKIP LOCKED"), "");
    CHECK_STR(assigns("DELETE FROM t WHERE a = 'UPDATE t SET a = 1'"), "");
    CHECK_STR(assigns("DO $$ BEGIN UPDATE t SET a = 1; END $$"), "");
    CHECK_STR(assigns("CALL fix(:lo, :hi)"), "");
}

static void test_updates_sqlite_forms(void)
{
    CHECK_STR(assigns("UPDATE t SET [full name] = 1, `b` = 2, \"c\" = 3"), "t: full name, b, c");
    CHECK_STR(assigns("UPDATE [My T] SET [n] = [n] + 1 WHERE [id] BETWEEN :lo AND :hi"), "\"My T\": n");
    CHECK_STR(assigns("UPDATE `s`.`T` SET `a``b` = 1, [x y] = 2"), "\"s\".\"T\": a`b, x y");
    CHECK_STR(assigns("UPDATE main.[t] SET (a, [b]) = (1, 2)"), "main.\"t\": a, b");
    CHECK_STR(assigns("UPDATE OR IGNORE t SET a = 1"), "t: a");
    CHECK_STR(assigns("update or replace T set A = 1, b = 2 where id = :lo"), "t: a, b");
    CHECK_STR(assigns("UPDATE OR ROLLBACK t AS x SET a = 1"), "t: a");
    CHECK_STR(assigns("INSERT INTO [t] (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET [n] = 2"), "\"t\": n");
    /* a '[' after a value is PostgreSQL's subscript, still */
    CHECK_STR(assigns("UPDATE t SET a[1] = b[2], c = ARRAY[1, 2], d = (e)[1], f = '{}'::int[]"), "t: a, c, d, f");
}

static void test_updates_lines(void)
{
    CHECK_STR(assigns("WITH m AS (\n  UPDATE t\n  SET a = 1)\nUPDATE u SET\n\n b = 2"), "t: a | u: b");
    CHECK(assigned_line[0] == 7);
    CHECK(assigned_line[1] == 10);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* keep the TAP lines printed before a crash */
    RUN(test_spec_example);
    RUN(test_checksum_changes_with_any_byte);
    RUN(test_defaults);
    RUN(test_directive_names);
    RUN(test_table);
    RUN(test_key);
    RUN(test_key_errors);
    RUN(test_where);
    RUN(test_batch);
    RUN(test_chunk_time);
    RUN(test_pause);
    RUN(test_max_rate);
    RUN(test_window);
    RUN(test_timeouts);
    RUN(test_retries);
    RUN(test_on_error);
    RUN(test_undo);
    RUN(test_undo_default);
    RUN(test_undo_errors);
    RUN(test_workers);
    RUN(test_synchronous_commit);
    RUN(test_max_replica_lag);
    RUN(test_max_wal_rate);
    RUN(test_max_dead_tuples);
    RUN(test_throttle_query_and_requires);
    RUN(test_directive_spacing);
    RUN(test_unknown_directive_hint);
    RUN(test_unknown_directive_without_hint);
    RUN(test_unknown_section_hint);
    RUN(test_duplicate_directive);
    RUN(test_directive_after_section);
    RUN(test_sql_outside_section);
    RUN(test_missing_table_and_up);
    RUN(test_section_markers);
    RUN(test_empty_sections);
    RUN(test_sections_must_use_lo_and_hi);
    RUN(test_several_statements_and_lines);
    RUN(test_scanner_errors_name_file_lines);
    RUN(test_transaction_control_refused);
    RUN(test_statement_must_begin_as_one);
    RUN(test_block_comment_in_preamble);
    RUN(test_name_crlf_and_bom);
    RUN(test_nul_refused);
    RUN(test_utf16_refused);
    RUN(test_invalid_utf8_refused);
    RUN(test_control_characters_refused);
    RUN(test_utf8_text_accepted);
    RUN(test_crlf);
    RUN(test_jobset);
    RUN(test_jobset_fifo);
    RUN(test_jobset_names_are_text);
    RUN(test_job_load_missing_file);
    RUN(test_updates_plain_forms);
    RUN(test_updates_values_that_look_like_clauses);
    RUN(test_updates_in_other_statements);
    RUN(test_updates_sqlite_forms);
    RUN(test_updates_lines);
    sl_job_free(&job);
    return CHECK_DONE();
}
