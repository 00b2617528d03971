/* test_util.c: durations, integers, buffers, JSON escaping, checksums, edit distance. */
#include "check.h"
#include "sluice/util.h"

#include <stdlib.h>

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

int main(void)
{
    RUN(test_durations);
    RUN(test_format_duration);
    RUN(test_ints);
    RUN(test_buf_and_json);
    RUN(test_checksum);
    RUN(test_edit_distance);
    RUN(test_err);
    return CHECK_DONE();
}
