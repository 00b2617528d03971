/* test_metrics.c: the Prometheus text rendering, hold accounting, JSON log lines and the HTML report. */
#include "check.h"
#include "sluice/base/log.h"
#include "sluice/checkpoints/ckpt.h"
#include "sluice/services/metrics.h"
#include "sluice/services/report.h"

#include <stdlib.h>
#include <unistd.h>

static char *render(int64_t now)
{
    sl_buf out = {0};
    sl_metrics_render(&out, now);
    return sl_buf_take(&out);
}

/* Every line is a comment or NAME{labels} VALUE, and each family has its HELP and TYPE first. */
static void check_format(const char *text)
{
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        CHECK(end != NULL);
        if (!end)
            return;
        if (line[0] != '#') {
            const char *brace = memchr(line, '{', (size_t)(end - line));
            const char *space = memchr(line, ' ', (size_t)(end - line));
            CHECK(brace && space && brace < space && space[-1] == '}');
            CHECK(strncmp(line, "sluice_", 7) == 0);
            char *stop = NULL;
            strtod(space + 1, &stop);
            CHECK(stop == end);
        }
        line = end + 1;
    }
}

static void test_render(void)
{
    sl_metrics_reset();
    sl_metrics_job *m = sl_metrics_job_get("0001_backfill");
    CHECK(sl_metrics_job_get("0001_backfill") == m);
    sl_metrics_begin(m, 0, 10000, 3000, 3);
    sl_metrics_state(m, "running");
    sl_metrics_chunk(m, 1000, 4);    /* le 0.005 */
    sl_metrics_chunk(m, 1000, 100);  /* le 0.1 */
    sl_metrics_chunk(m, 500, 70000); /* le 120 */
    sl_metrics_chunk(m, 1, 500000);  /* +Inf only */
    sl_metrics_batch(m, 1000);
    sl_metrics_workers(m, 4, 3);
    sl_metrics_count(m, SL_COUNT_RETRY, 2);
    sl_metrics_count(m, SL_COUNT_SPLIT, 1);
    sl_metrics_count(m, SL_COUNT_SET_ASIDE, 1);
    int64_t ended = 0;
    CHECK(sl_metrics_hold(m, SL_HOLD_WINDOW, 1000, &ended) == SL_HOLD_NONE);
    CHECK(sl_metrics_hold(m, SL_HOLD_WINDOW, 1500, &ended) == SL_HOLD_NONE); /* the same: nothing changes */
    CHECK(sl_metrics_hold(m, SL_HOLD_CTL_PAUSE, 3500, &ended) == SL_HOLD_WINDOW);
    CHECK(ended == 2500);
    char *text = render(4000); /* the pause under way counts up to now */
    check_format(text);
    CHECK_HAS(text, "# TYPE sluice_rows_total counter\nsluice_rows_total{job=\"0001_backfill\"} 5501\n");
    CHECK_HAS(text, "sluice_chunks_total{job=\"0001_backfill\"} 7\n");
    CHECK_HAS(text, "# TYPE sluice_chunk_duration_seconds histogram\n");
    CHECK_HAS(text, "sluice_chunk_duration_seconds_bucket{job=\"0001_backfill\",le=\"0.005\"} 1\n");
    CHECK_HAS(text, "sluice_chunk_duration_seconds_bucket{job=\"0001_backfill\",le=\"0.05\"} 1\n");
    CHECK_HAS(text, "sluice_chunk_duration_seconds_bucket{job=\"0001_backfill\",le=\"0.1\"} 2\n");
    CHECK_HAS(text, "sluice_chunk_duration_seconds_bucket{job=\"0001_backfill\",le=\"60\"} 2\n");
    CHECK_HAS(text, "sluice_chunk_duration_seconds_bucket{job=\"0001_backfill\",le=\"120\"} 3\n");
    CHECK_HAS(text, "sluice_chunk_duration_seconds_bucket{job=\"0001_backfill\",le=\"+Inf\"} 4\n");
    CHECK_HAS(text, "sluice_chunk_duration_seconds_sum{job=\"0001_backfill\"} 570.104\n");
    CHECK_HAS(text, "sluice_chunk_duration_seconds_count{job=\"0001_backfill\"} 4\n");
    CHECK_HAS(text, "sluice_batch_size{job=\"0001_backfill\"} 1000\n");
    CHECK_HAS(text, "sluice_workers{job=\"0001_backfill\"} 4\n");
    CHECK_HAS(text, "sluice_workers_busy{job=\"0001_backfill\"} 3\n");
    CHECK_HAS(text, "sluice_retries_total{job=\"0001_backfill\"} 2\n");
    CHECK_HAS(text, "sluice_splits_total{job=\"0001_backfill\"} 1\n");
    CHECK_HAS(text, "sluice_rows_set_aside_total{job=\"0001_backfill\"} 1\n");
    CHECK_HAS(text, "sluice_throttled_seconds_total{job=\"0001_backfill\",reason=\"window\"} 2.500\n");
    CHECK_HAS(text, "sluice_throttled_seconds_total{job=\"0001_backfill\",reason=\"ctl_pause\"} 0.500\n");
    CHECK_HAS(text, "sluice_throttled_seconds_total{job=\"0001_backfill\",reason=\"replica_lag\"} 0.000\n");
    CHECK_HAS(text, "sluice_job_state{job=\"0001_backfill\",state=\"running\"} 1\n");
    CHECK_HAS(text, "sluice_job_state{job=\"0001_backfill\",state=\"done\"} 0\n");
    CHECK_HAS(text, "sluice_rows_estimated{job=\"0001_backfill\"} 10000\n");
    CHECK(strstr(text, "sluice_replica_lag_seconds{") == NULL); /* never measured */
    free(text);
    sl_metrics_replica_lag(m, 1234);
    CHECK(sl_metrics_hold(m, SL_HOLD_NONE, 4500, &ended) == SL_HOLD_CTL_PAUSE && ended == 1000);
    sl_metrics_state(m, "done");
    text = render(99999);
    CHECK_HAS(text, "sluice_replica_lag_seconds{job=\"0001_backfill\"} 1.234\n");
    CHECK_HAS(text, "sluice_throttled_seconds_total{job=\"0001_backfill\",reason=\"ctl_pause\"} 1.000\n");
    CHECK_HAS(text, "sluice_job_state{job=\"0001_backfill\",state=\"done\"} 1\n");
    CHECK(strstr(text, "sluice_eta_seconds{") == NULL); /* done: no ETA */
    free(text);
    sl_metrics_reset();
}

/* A second job gets series of its own; label values are escaped. */
static void test_labels_and_jobs(void)
{
    sl_metrics_reset();
    sl_metrics_job *a = sl_metrics_job_get("a\"b\\c\nd");
    sl_metrics_job *b = sl_metrics_job_get("0002_next");
    sl_metrics_begin(b, 1, 100, 0, 0);
    sl_metrics_chunk(b, 40, 10);
    sl_metrics_chunk(a, 0, 1);
    char *text = render(0);
    check_format(text);
    CHECK_HAS(text, "sluice_rows_total{job=\"a\\\"b\\\\c\\nd\"} 0\n");
    CHECK_HAS(text, "sluice_rows_undone_total{job=\"0002_next\"} 40\n");
    CHECK_HAS(text, "sluice_chunks_undone_total{job=\"0002_next\"} 1\n");
    CHECK_HAS(text, "sluice_rows_total{job=\"0002_next\"} 0\n");
    free(text);
    /* the same job on two targets: two series */
    sl_metrics_job *on_a = sl_metrics_job_get_on("eu", "0002_next");
    CHECK(on_a != b && sl_metrics_job_get_on("eu", "0002_next") == on_a &&
          sl_metrics_job_get_on("us", "0002_next") != on_a);
    sl_metrics_chunk(on_a, 7, 1);
    text = render(0);
    check_format(text);
    CHECK_HAS(text, "sluice_rows_total{job=\"0002_next\",target=\"eu\"} 7\n");
    CHECK_HAS(text, "sluice_rows_total{job=\"0002_next\",target=\"us\"} 0\n");
    CHECK_HAS(text, "sluice_chunk_duration_seconds_bucket{job=\"0002_next\",target=\"eu\",le=\"0.005\"} 1\n");
    free(text);
    sl_metrics_reset();
}

static void test_eta(void)
{
    sl_metrics_reset();
    sl_metrics_job *m = sl_metrics_job_get("eta");
    sl_metrics_begin(m, 0, 1000, 0, 0);
    sl_metrics_state(m, "running");
    sl_metrics_chunk(m, 250, 10);
    int64_t begun = sl_mono_ms();
    char *text = render(begun + 2000); /* 250 rows in about 2 s: 750 more take about 6 s */
    const char *eta = strstr(text, "sluice_eta_seconds{job=\"eta\"} ");
    CHECK(eta != NULL);
    if (eta) {
        double v = strtod(eta + strlen("sluice_eta_seconds{job=\"eta\"} "), NULL);
        CHECK(v > 5.5 && v < 6.5);
    }
    free(text);
    sl_metrics_reset();
}

static int near(double got, double want)
{
    return got > want * 0.98 && got < want * 1.02;
}

/* The rate (progress line, ETA, ctl status) is over the last minute the run
 * ran: a hold's time is left out, max-rate's waits are not, and a change of
 * pace shows once a minute of the new one has run. */
static void test_rate(void)
{
    sl_metrics_reset();
    sl_metrics_job *m = sl_metrics_job_get("rate");
    int64_t ms;
    sl_metrics_begin(m, 0, 1000000, 0, 0);
    int64_t t0 = sl_mono_ms();
    CHECK(sl_metrics_rate(m, t0) == 0);
    sl_metrics_chunk_at(m, 1000, 10, t0 + 1000);
    CHECK(near(sl_metrics_rate(m, t0 + 2000), 500)); /* 1000 rows in 2 s */
    sl_metrics_hold(m, SL_HOLD_CTL_PAUSE, t0 + 2000, &ms);
    CHECK(near(sl_metrics_rate(m, t0 + 3600000), 500)); /* paused an hour: the speed it ran at */
    sl_metrics_hold(m, SL_HOLD_NONE, t0 + 3600000, &ms);
    sl_metrics_chunk_at(m, 1000, 10, t0 + 3602000);
    CHECK(near(sl_metrics_rate(m, t0 + 3602000), 500)); /* 2000 rows in 4 s of running */
    sl_metrics_hold(m, SL_HOLD_MAX_RATE, t0 + 3602000, &ms);
    CHECK(near(sl_metrics_rate(m, t0 + 3606000), 250)); /* waiting for max-rate is its pace */
    sl_metrics_hold(m, SL_HOLD_NONE, t0 + 3606000, &ms);

    /* 1000 rows a second for two minutes, then 100: a minute later the rate is 100 */
    sl_metrics_begin(m, 0, 1000000, 0, 0);
    t0 = sl_mono_ms();
    int64_t t = t0;
    for (int i = 0; i < 120; i++)
        sl_metrics_chunk_at(m, 1000, 10, t += 1000);
    CHECK(near(sl_metrics_rate(m, t), 1000));
    for (int i = 0; i < 60; i++)
        sl_metrics_chunk_at(m, 100, 10, t += 1000);
    CHECK(near(sl_metrics_rate(m, t), 100));
    sl_metrics_state(m, "running");
    char *text = render(t); /* 1000000 - 126000 rows left at 100 a second */
    const char *eta = strstr(text, "sluice_eta_seconds{job=\"rate\"} ");
    CHECK(eta != NULL);
    if (eta)
        CHECK(near(strtod(eta + strlen("sluice_eta_seconds{job=\"rate\"} "), NULL), 8740));
    free(text);
    sl_metrics_reset();
}

static void test_hold_of_reason(void)
{
    CHECK(sl_hold_of_reason("replica lag 12000ms > max-replica-lag 5000ms") == SL_HOLD_REPLICA_LAG);
    CHECK(sl_hold_of_reason("9 sessions wait for locks on the table (limit 8)") == SL_HOLD_LOCK_WAITERS);
    CHECK(sl_hold_of_reason("a transaction has been open 4000s (limit 3600s)") == SL_HOLD_OLD_TRANSACTION);
    CHECK(sl_hold_of_reason("throttle-query returned true (jobs/x.sql:4)") == SL_HOLD_THROTTLE_QUERY);
    CHECK(sl_hold_of_reason("health check failed: boom") == SL_HOLD_HEALTH);
    CHECK_STR(sl_hold_name(SL_HOLD_MAX_RATE), "max_rate");
}

static void test_json_log_line(void)
{
    json_t *fields = json_pack("{sIss}", "chunk", (json_int_t)7, "error", "bad \x1b[31m red");
    char *line =
        sl_log_json_line(1764403497123, SL_LOG_WARN, "0001_x", "retry", fields, "msg with \"quotes\"\nand more");
    CHECK_STR(line, "{\"time\":\"2025-11-29T08:04:57.123Z\",\"level\":\"warn\",\"job\":\"0001_x\",\"event\":\"retry\","
                    "\"msg\":\"msg with \\\"quotes\\\"\\nand more\",\"chunk\":7,\"error\":\"bad \\\\x1b[31m red\"}");
    free(line);
    json_decref(fields);
    /* the line's own keys stay: a field cannot overwrite them */
    fields = json_pack("{ss}", "event", "forged");
    line = sl_log_json_line(0, SL_LOG_INFO, NULL, "done", fields, "ok");
    CHECK_HAS(line, "\"job\":null,\"event\":\"done\"");
    CHECK(strstr(line, "forged") == NULL);
    free(line);
    json_decref(fields);
    sl_log_set_target("eu");
    line = sl_log_json_line(0, SL_LOG_INFO, "j", "done", NULL, "ok");
    CHECK_HAS(line, "\"job\":\"j\",\"target\":\"eu\",\"event\":\"done\"");
    free(line);
    sl_log_set_target(NULL);
    sl_log_format f;
    CHECK(sl_log_format_parse("json", &f) == 0 && f == SL_LOG_FORMAT_JSON);
    CHECK(sl_log_format_parse("xml", &f) != 0);
}

/* The report of a small journal: its summary numbers, one chart per measure, every value escaped. */
static void test_report(void)
{
    char dir[] = "/tmp/sluice-test-report-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *path = sl_asprintf("%s/0001_<b>&x.sluice", dir);
    sl_ckpt *ck = NULL;
    sl_err err = {{0}};
    CHECK(sl_ckpt_open(path, "0001_<b>&x", 1, &ck, &err) == 0);
    if (!ck)
        return;
    int64_t run = 0;
    CHECK(sl_ckpt_begin_run(ck, "up", SL_STATE_RUNNING, "abc", "db<script>", &run, &err) == 0);
    int64_t durations[] = {30, 10, 20, 50, 40};
    for (int i = 0; i < 5; i++) {
        char lo[32], hi[32];
        snprintf(lo, sizeof lo, "[\"%d\"]", i * 10 + 1);
        snprintf(hi, sizeof hi, "[\"%d\"]", i * 10 + 10);
        sl_ckpt_chunk c = {i + 1, lo, hi, 10, 10, durations[i], 1, NULL, 0};
        c.batch = 10;
        c.worker = i % 2;
        if (i == 4) {
            c.skipped = 1;
            c.rows = 1;
            c.error = "<img src=x onerror=alert(1)>";
        }
        CHECK(sl_ckpt_commit_chunk(ck, run, &c, &err) == 0);
    }
    CHECK(sl_ckpt_log_event_data(ck, "hold_start", "paused", "{\"reason\":\"ctl_pause\"}", &err) == 0);
    CHECK(sl_ckpt_log_event_data(ck, "hold_end", "ctl_pause", "{\"reason\":\"ctl_pause\",\"ms\":5}", &err) == 0);
    CHECK(sl_ckpt_log_event(ck, "retry", "deadlock", &err) == 0);
    CHECK(sl_ckpt_finish_run(ck, run, SL_STATE_DONE, NULL, &err) == 0);
    sl_buf html = {0};
    sl_report_summary sum;
    CHECK(sl_report_build(ck, sl_now_ms(), NULL, &html, &sum, &err) == 0);
    CHECK(sum.rows == 41 && sum.chunks == 5 && sum.set_aside == 1 && sum.retries == 1 && sum.runs == 1);
    CHECK(sum.median_ms == 20 && sum.p99_ms == 50); /* nearest rank over the four that ran: 10 20 30 50 */
    const char *measures[] = {"rows_per_second", "chunk_duration", "batch_size", "workers",
                              "throttled",       "retries_splits", "set_aside"};
    for (size_t i = 0; i < sizeof measures / sizeof measures[0]; i++) {
        char *needle = sl_asprintf("data-measure=\"%s\"", measures[i]);
        CHECK_HAS(html.data, needle);
        free(needle);
    }
    CHECK_HAS(html.data, "<td id=\"sum-rows\">41</td>");
    CHECK_HAS(html.data, "0001_&lt;b&gt;&amp;x");
    CHECK_HAS(html.data, "&lt;img src=x onerror=alert(1)&gt;");
    CHECK_HAS(html.data, "db&lt;script&gt;");
    CHECK(strstr(html.data, "<b>") == NULL && strstr(html.data, "<img") == NULL &&
          strstr(html.data, "<script") == NULL);
    CHECK(strstr(html.data, "http://") == NULL || strstr(html.data, "http://www.w3.org/2000/svg") != NULL);
    sl_buf_free(&html);
    sl_ckpt_close(ck);
    char *cmd = sl_asprintf("rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    free(cmd);
    free(path);
}

/* A long job's page stays small: each series draws at most a couple of thousand points. */
static void test_report_of_many_chunks(void)
{
    char dir[] = "/tmp/sluice-test-report-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *path = sl_asprintf("%s/big.sluice", dir);
    sl_ckpt *ck = NULL;
    sl_err err = {{0}};
    CHECK(sl_ckpt_open(path, "big", 1, &ck, &err) == 0);
    if (!ck)
        return;
    int64_t run = 0, t0 = sl_now_ms() - 100000000;
    CHECK(sl_ckpt_begin_run(ck, "up", SL_STATE_RUNNING, "abc", "db", &run, &err) == 0);
    for (int i = 1; i <= 20000; i++) {
        sl_ckpt_chunk c = {i, "[\"1\"]", "[\"2\"]", 1000, 1000, 10 + i % 97, 1, NULL, t0 + i * 2000};
        c.batch = 1000 + i % 7;
        if (sl_ckpt_commit_chunk(ck, run, &c, &err) != 0) {
            CHECK(0);
            break;
        }
    }
    sl_buf html = {0};
    sl_report_summary sum;
    CHECK(sl_report_build(ck, sl_now_ms(), NULL, &html, &sum, &err) == 0);
    CHECK(sum.chunks == 20000 && sum.rows == 20000000);
    printf("# a report of 20000 chunks: %zu bytes\n", html.len);
    CHECK(html.len < 1000000);
    sl_buf_free(&html);
    sl_ckpt_close(ck);
    char *cmd = sl_asprintf("rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    free(cmd);
    free(path);
}

int main(void)
{
    RUN(test_render);
    RUN(test_labels_and_jobs);
    RUN(test_eta);
    RUN(test_rate);
    RUN(test_hold_of_reason);
    RUN(test_json_log_line);
    RUN(test_report);
    RUN(test_report_of_many_chunks);
    return CHECK_DONE();
}
