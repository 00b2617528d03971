/* test_util.c: durations, integers, buffers, JSON escaping, checksums, edit distance, reading files, logging. */
#include "check.h"
#include "sluice/base/json.h"
#include "sluice/base/util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_durations(void)
{
    int64_t ms = -1;
    CHECK(sl_parse_duration("250ms", &ms) == 0 && ms == 250);
    CHECK(sl_parse_duration("2s", &ms) == 0 && ms == 2000);
    CHECK(sl_parse_duration("5m", &ms) == 0 && ms == 300000);
    CHECK(sl_parse_duration("1h", &ms) == 0 && ms == 3600000);
    CHECK(sl_parse_duration("0s", &ms) == 0 && ms == 0);
    CHECK(sl_parse_duration("2", &ms) != 0);
    CHECK(sl_parse_duration("s", &ms) != 0);
    CHECK(sl_parse_duration("2 s", &ms) != 0);
    CHECK(sl_parse_duration("-2s", &ms) != 0);
    CHECK(sl_parse_duration("2d", &ms) != 0);
    CHECK(sl_parse_duration("", &ms) != 0);
}

static void test_format_duration(void)
{
    char out[32];
    sl_format_duration(250, out, sizeof out);
    CHECK_STR(out, "250ms");
    sl_format_duration(2000, out, sizeof out);
    CHECK_STR(out, "2s");
    sl_format_duration(90000, out, sizeof out);
    CHECK_STR(out, "1m30s");
    sl_format_duration(3600000, out, sizeof out);
    CHECK_STR(out, "1h");
}

static void test_ints(void)
{
    int64_t v = 0;
    CHECK(sl_parse_int("5000", 1, 10000, &v) == 0 && v == 5000);
    CHECK(sl_parse_int("1_000", 1, 10000, &v) == 0 && v == 1000);
    CHECK(sl_parse_int("0", 1, 10000, &v) != 0);
    CHECK(sl_parse_int("10001", 1, 10000, &v) != 0);
    CHECK(sl_parse_int("12abc", 1, 10000, &v) != 0);
    CHECK(sl_parse_int("", 1, 10000, &v) != 0);
    CHECK(sl_parse_int("99999999999999999999999", 0, INT64_MAX, &v) != 0);
}

static void test_buf_and_json(void)
{
    sl_buf buf = {0};
    sl_buf_adds(&buf, "[");
    sl_buf_add_json_str(&buf, "a\"b\\c\n\x01");
    sl_buf_adds(&buf, ",");
    sl_buf_add_json_str(&buf, NULL);
    sl_buf_printf(&buf, ",%d]", 42);
    CHECK_STR(buf.data, "[\"a\\\"b\\\\c\\n\\u0001\",null,42]");
    char *taken = sl_buf_take(&buf);
    CHECK(buf.data == NULL && buf.len == 0);
    free(taken);
    char *s = sl_asprintf("%s-%lld", "x", 7LL);
    CHECK_STR(s, "x-7");
    free(s);
}

/* Keys as the journal keeps them, shown by status: a SQLite text key that is
 * not UTF-8 comes back with U+FFFD in place of the bad bytes, not as no key. */
static void test_json_key(void)
{
    json_t *k = sl_json_key("[\"a\", null]");
    CHECK(json_is_array(k) && json_array_size(k) == 2);
    json_decref(k);
    k = sl_json_key("[\"c\xff\", \"e\xc0\xaf\"]");
    CHECK(json_is_array(k) && json_array_size(k) == 2);
    CHECK_STR(json_string_value(json_array_get(k, 0)), "c\xef\xbf\xbd");
    CHECK_STR(json_string_value(json_array_get(k, 1)), "e\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(k);
    CHECK(sl_json_key("{\"a\": 1}") == NULL);
    CHECK(sl_json_key("[1]") == NULL);
    CHECK(sl_json_key("[\"a\"") == NULL);
    CHECK(sl_json_key(NULL) == NULL);
}

static void test_checksum(void)
{
    char a[17], b[17];
    sl_checksum_hex("abc", 3, a);
    sl_checksum_hex("abd", 3, b);
    CHECK(strlen(a) == 16);
    CHECK(strcmp(a, b) != 0);
    CHECK_STR(a, "e71fa2190541574b"); /* FNV-1a 64 of "abc" */
}

static void test_edit_distance(void)
{
    CHECK(sl_edit_distance("bacth", "batch") == 2);
    CHECK(sl_edit_distance("batch", "batch") == 0);
    CHECK(sl_edit_distance("", "key") == 3);
}

static void test_err(void)
{
    sl_err err = {{0}};
    sl_err_set(&err, "a %d", 1);
    sl_err_append(&err, "b %d", 2);
    CHECK_STR(err.msg, "a 1\nb 2");
}

/* ---- sl_read_file ---- */

static char tmpdir[] = "/tmp/sluice_test_util_XXXXXX";

static char *tmp_path(const char *name)
{
    return sl_asprintf("%s/%s", tmpdir, name);
}

/* Read path, expecting a refusal whose message holds path and want. */
static void check_refused(const char *path, const char *want)
{
    sl_err err = {{0}};
    char *text = NULL;
    size_t len = 0;
    CHECK(sl_read_file(path, &text, &len, &err) < 0);
    CHECK(text == NULL);
    CHECK_HAS(err.msg, path);
    CHECK_HAS(err.msg, want);
    free(text);
}

static void test_read_regular_file(void)
{
    char *path = tmp_path("a.sql");
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("-- sluice:table t\n", f);
        fclose(f);
    }
    char *text = NULL;
    size_t len = 0;
    sl_err err = {{0}};
    CHECK(sl_read_file(path, &text, &len, &err) == 0);
    CHECK(len == 18);
    CHECK_STR(text, "-- sluice:table t\n");
    free(text);
    char *missing = tmp_path("missing.sql");
    check_refused(missing, "cannot open: No such file or directory");
    free(missing);
    free(path);
}

/* A FIFO with no writer would block a plain open or read forever: the test
 * dies by SIGALRM if sl_read_file waits for one. */
static void test_read_refuses_fifo(void)
{
    char *path = tmp_path("fifo.sql");
    CHECK(mkfifo(path, 0600) == 0);
    alarm(10);
    check_refused(path, "it is a FIFO, not a regular file");
    /* and with a writer holding it open, too */
    int rd = open(path, O_RDONLY | O_NONBLOCK), wr = open(path, O_WRONLY | O_NONBLOCK);
    CHECK(rd >= 0 && wr >= 0);
    check_refused(path, "it is a FIFO");
    close(wr);
    close(rd);
    alarm(0);
    unlink(path);
    free(path);
}

/* /dev/zero never ends: read to the end it would take all memory. */
static void test_read_refuses_devices_and_dirs(void)
{
    alarm(10);
    check_refused("/dev/zero", "it is a character device, not a regular file");
    char *link = tmp_path("zero.sql");
    CHECK(symlink("/dev/zero", link) == 0);
    check_refused(link, "it is a character device");
    unlink(link);
    free(link);
    check_refused(tmpdir, "it is a directory");
    alarm(0);
}

static void test_read_size_limit(void)
{
    char *path = tmp_path("big.sql");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, SL_FILE_MAX) == 0); /* sparse: no disk space needed */
    char *text = NULL;
    size_t len = 0;
    sl_err err = {{0}};
    CHECK(sl_read_file(path, &text, &len, &err) == 0);
    CHECK(len == SL_FILE_MAX);
    free(text);
    CHECK(ftruncate(fd, SL_FILE_MAX + 1) == 0);
    check_refused(path, "too large to read: 16777217 bytes, the limit is 16777216 bytes (16 MiB)");
    close(fd);
    unlink(path);
    free(path);
}

/* ---- logging: control characters shown, not obeyed ---- */

/* What sl_log wrote for "job ARG failed" (or ARG alone with bare set). */
static char *capture_log(const char *arg, int bare)
{
    char *path = tmp_path("log.txt");
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    if (bare)
        sl_log(SL_LOG_ERROR, "%s", arg);
    else
        sl_log(SL_LOG_ERROR, "job %s failed", arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    char *text = NULL;
    size_t len;
    sl_err err;
    CHECK(sl_read_file(path, &text, &len, &err) == 0);
    unlink(path);
    free(path);
    return text ? text : sl_strdup("");
}

static void check_log(const char *arg, const char *want)
{
    char *text = capture_log(arg, 0);
    char *line = sl_asprintf(" sluice: error: job %s failed\n", want);
    CHECK_HAS(text, line);
    free(line);
    free(text);
}

static void test_log_shows_control_characters(void)
{
    check_log("\x1b]0;owned\x07\x1b[2J", "\\x1b]0;owned\\x07\\x1b[2J");
    check_log("a\rb\bc\x7f", "a\\x0db\\x08c\\x7f");
    check_log("csi\xC2\x9B"
              "31m",
              "csi\\u009b31m"); /* U+009B, the one-character CSI */
    check_log("\xE2\x80\xAE"
              "evil",
              "\\u202eevil");                                                      /* a right-to-left override */
    check_log("latin1 caf\xE9 \xFF", "latin1 caf\\xe9 \\xff");                     /* not UTF-8 */
    check_log("z\xC3\xBCrich \xE2\x82\xAC\tok", "z\xC3\xBCrich \xE2\x82\xAC\tok"); /* UTF-8 text and tabs stay */
    check_log("a\\x1b", "a\\x1b");                                                 /* a backslash stays one */
    /* the lines of a multi-line message stay lines */
    char *text = capture_log("first\nhint: second\n", 1);
    CHECK_HAS(text, " sluice: error: first\nhint: second\n");
    CHECK(strstr(text, "second\n\n") == NULL);
    free(text);
}

static void test_add_visible(void)
{
    sl_buf b = {0};
    sl_buf_add_visible(&b, "a\0b\x1b\n", 5, 0);
    CHECK_STR(b.data, "a\\x00b\\x1b\n");
    sl_buf_reset(&b);
    sl_buf_add_visible(&b, "a\nb\tc", 5, 1); /* one line: a progress line, a name */
    CHECK_STR(b.data, "a\\x0ab\tc");
    sl_buf_reset(&b);
    sl_buf_add_visible(&b, "\xF0\x9F\x98\x80 \xF0\x9F\x98", 8, 0); /* a character cut short */
    CHECK_STR(b.data, "\xF0\x9F\x98\x80 \\xf0\\x9f\\x98");
    sl_buf_free(&b);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* keep the TAP lines printed before a crash or SIGALRM */
    if (!mkdtemp(tmpdir))
        return 1;
    RUN(test_durations);
    RUN(test_format_duration);
    RUN(test_ints);
    RUN(test_buf_and_json);
    RUN(test_json_key);
    RUN(test_checksum);
    RUN(test_edit_distance);
    RUN(test_err);
    RUN(test_read_regular_file);
    RUN(test_read_refuses_fifo);
    RUN(test_read_refuses_devices_and_dirs);
    RUN(test_read_size_limit);
    RUN(test_log_shows_control_characters);
    RUN(test_add_visible);
    rmdir(tmpdir);
    return CHECK_DONE();
}
