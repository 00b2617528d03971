/* lite_funcs.c: the SQL functions sluice's own statements call on a SQLite connection: sluice_hash, sluice_unquote. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lite_internal.h"

void lite_hash_bytes(uint64_t *h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        *h ^= p[i];
        *h *= UINT64_C(0x100000001b3);
    }
}

/* sluice_hash(v, ...): FNV-1a over each value's type and bytes, so 1, 1.0,
 * '1' and X'31' all differ, as a change of type is a change of the row. */
static void fn_hash(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (int i = 0; i < argc; i++) {
        unsigned char type = (unsigned char)sqlite3_value_type(argv[i]);
        lite_hash_bytes(&h, &type, 1);
        if (type == SQLITE_INTEGER) {
            sqlite3_int64 v = sqlite3_value_int64(argv[i]);
            lite_hash_bytes(&h, &v, sizeof v);
        } else if (type == SQLITE_FLOAT) {
            double v = sqlite3_value_double(argv[i]);
            lite_hash_bytes(&h, &v, sizeof v);
        } else if (type != SQLITE_NULL) {
            const void *data = type == SQLITE_BLOB ? sqlite3_value_blob(argv[i]) : sqlite3_value_text(argv[i]);
            int64_t len = sqlite3_value_bytes(argv[i]);
            lite_hash_bytes(&h, &len, sizeof len);
            lite_hash_bytes(&h, data, (size_t)len);
        }
    }
    sqlite3_result_int64(ctx, (sqlite3_int64)h);
}

/* 'text' with its quotes doubled, between lit[0] and lit[len - 1]. */
static int unquote_text(sqlite3_context *ctx, const char *lit, size_t len)
{
    char *text = sqlite3_malloc64(len);
    size_t n = 0;
    int bad = text == NULL;
    for (size_t i = 1; !bad && i + 1 < len; i++) {
        if (lit[i] == '\'' && (i + 2 >= len || lit[++i] != '\''))
            bad = 1; /* a lone quote inside */
        else
            text[n++] = lit[i];
    }
    if (bad) {
        sqlite3_free(text);
        return -1;
    }
    sqlite3_result_text64(ctx, text, n, sqlite3_free, SQLITE_UTF8);
    return 0;
}

/* X'00ff'. */
static int unquote_blob(sqlite3_context *ctx, const char *lit, size_t len)
{
    size_t n = (len - 3) / 2;
    unsigned char *bytes = sqlite3_malloc64(n + 1);
    int bad = bytes == NULL || len % 2 == 0;
    for (size_t i = 0; !bad && i < n; i++) {
        char pair[3] = {lit[2 + 2 * i], lit[3 + 2 * i], 0}, *end;
        bytes[i] = (unsigned char)strtoul(pair, &end, 16);
        bad = *end != '\0' || !isxdigit((unsigned char)pair[0]);
    }
    if (bad) {
        sqlite3_free(bytes);
        return -1;
    }
    sqlite3_result_blob64(ctx, bytes, n, sqlite3_free);
    return 0;
}

/* An integer, or a real (Inf and -Inf included). */
static int unquote_number(sqlite3_context *ctx, const char *lit, size_t len)
{
    char num[64], *end;
    if (len == 0 || len >= sizeof num)
        return -1;
    memcpy(num, lit, len);
    num[len] = '\0';
    if (strcmp(num, "Inf") == 0 || strcmp(num, "-Inf") == 0) {
        sqlite3_result_double(ctx, num[0] == '-' ? -HUGE_VAL : HUGE_VAL);
        return 0;
    }
    errno = 0;
    long long i = strtoll(num, &end, 10);
    if (*end == '\0' && errno == 0) {
        sqlite3_result_int64(ctx, i);
        return 0;
    }
    double d = strtod(num, &end);
    if (*end != '\0')
        return -1;
    sqlite3_result_double(ctx, d);
    return 0;
}

/* The value of a quote() literal: NULL, a number, 'text' or X'blob'. 0, or
 * -1 when lit is not one. */
static int unquote(sqlite3_context *ctx, const char *lit, size_t len)
{
    if (len == 4 && memcmp(lit, "NULL", 4) == 0) {
        sqlite3_result_null(ctx);
        return 0;
    }
    if (len >= 2 && lit[0] == '\'' && lit[len - 1] == '\'')
        return unquote_text(ctx, lit, len);
    if (len >= 3 && (lit[0] == 'X' || lit[0] == 'x') && lit[1] == '\'' && lit[len - 1] == '\'')
        return unquote_blob(ctx, lit, len);
    return unquote_number(ctx, lit, len);
}

/* sluice_unquote(hex): the value an undo record saved as a quote() literal,
 * handed over as the hex of the literal's bytes in a bound JSON parameter
 * (undo.c), so no saved value is ever part of a statement's text. */
static void fn_unquote(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    const char *hex = (const char *)sqlite3_value_text(argv[0]);
    size_t n = (size_t)sqlite3_value_bytes(argv[0]);
    char *lit = n % 2 == 0 ? sqlite3_malloc64(n / 2 + 1) : NULL;
    int bad = lit == NULL;
    for (size_t i = 0; !bad && i < n / 2; i++) {
        char pair[3] = {hex[2 * i], hex[2 * i + 1], 0}, *end;
        lit[i] = (char)strtoul(pair, &end, 16);
        bad = *end != '\0';
    }
    if (bad || unquote(ctx, lit, n / 2) != 0)
        sqlite3_result_error(ctx, "sluice_unquote: not a value sluice saved", -1);
    sqlite3_free(lit);
}

void lite_add_functions(sqlite3 *db)
{
    sqlite3_create_function(db, "sluice_hash", -1, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL, fn_hash,
                            NULL, NULL);
    sqlite3_create_function(db, "sluice_unquote", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                            fn_unquote, NULL, NULL);
}
