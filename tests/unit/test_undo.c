/* test_undo.c: the undo records (snapshot.c's codec, undo.c's record layer) and the down chunk planner, no server. */
#include "check.h"
#include "sluice/checkpoints/snapshot.h"
#include "sluice/engine/undo.h"

#include <stdint.h>
#include <stdlib.h>

/* ---- helpers ---- */

/* n copies of src (NULL stays NULL), in a malloc'd array. */
static char **dup_strs(const char *const *src, size_t n)
{
    char **out = sl_calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        out[i] = src[i] ? sl_strdup(src[i]) : NULL;
    return out;
}

static void snap_init(sl_snap *snap, size_t nkey, size_t nvals)
{
    memset(snap, 0, sizeof *snap);
    snap->nkey = nkey;
    snap->nvals = nvals;
}

/* Add a row owned by snap (sl_snap_free frees it): vals NULL for a row
 * that did not exist before the chunk. */
static void snap_add(sl_snap *snap, const char *const *key, const char *const *vals, int has_post, int64_t post_hash)
{
    if ((snap->nrows & (snap->nrows - 1)) == 0) /* at 0, 1, 2, 4...: double */
        snap->rows = sl_realloc(snap->rows, (snap->nrows ? 2 * snap->nrows : 1) * sizeof(sl_snap_row));
    sl_snap_row *row = &snap->rows[snap->nrows++];
    row->key = dup_strs(key, snap->nkey);
    row->has_pre = vals != NULL;
    row->vals = vals ? dup_strs(vals, snap->nvals) : NULL;
    row->has_post = has_post;
    row->post_hash = has_post ? post_hash : 0;
}

static int same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* Field by field: flags, keys, hashes, values (NULL is not ""). */
static int snaps_equal(const sl_snap *a, const sl_snap *b)
{
    if (a->nkey != b->nkey || a->nvals != b->nvals || a->nrows != b->nrows)
        return 0;
    for (size_t r = 0; r < a->nrows; r++) {
        const sl_snap_row *x = &a->rows[r], *y = &b->rows[r];
        if (!x->has_pre != !y->has_pre || !x->has_post != !y->has_post)
            return 0;
        if (x->has_post && x->post_hash != y->post_hash)
            return 0;
        for (size_t k = 0; k < a->nkey; k++)
            if (!same_str(x->key[k], y->key[k]))
                return 0;
        if (!x->has_pre && (x->vals || y->vals))
            return 0;
        for (size_t i = 0; x->has_pre && i < a->nvals; i++)
            if (!same_str(x->vals[i], y->vals[i]))
                return 0;
    }
    return 1;
}

/* Decode from a heap copy of exactly len bytes, so that AddressSanitizer
 * reports any read past the end. 0 or -1 as sl_snap_decode. */
static int decode_exact(const void *bytes, size_t len, sl_snap *out)
{
    unsigned char *copy = malloc(len);
    if (len)
        memcpy(copy, bytes, len);
    int rc = sl_snap_decode(len ? copy : bytes, len, out);
    free(copy);
    return rc;
}

static int decodes(const void *bytes, size_t len)
{
    sl_snap snap = {0};
    int rc = decode_exact(bytes, len, &snap);
    sl_snap_free(&snap);
    return rc == 0;
}

/* Encode snap, decode it back from exactly its bytes and compare; the
 * bytes are left in blob. */
static void check_round_trip(const sl_snap *snap, sl_buf *blob)
{
    sl_buf_reset(blob);
    sl_snap_encode(snap, blob);
    sl_snap back;
    memset(&back, 0, sizeof back);
    back.chunk_no = 77;
    memcpy(back.kind, "all", 4);
    CHECK(decode_exact(blob->data, blob->len, &back) == 0);
    CHECK(snaps_equal(snap, &back));
    /* decode keeps what the caller set: the record does not hold them */
    CHECK(back.chunk_no == 77);
    CHECK_STR(back.kind, "all");
    /* one spelling per record: it encodes back to its very bytes */
    sl_buf again = {0};
    sl_snap_encode(&back, &again);
    CHECK(again.len == blob->len && memcmp(again.data, blob->data, blob->len) == 0);
    sl_buf_free(&again);
    sl_snap_free(&back);
}

/* A result as a driver returns it: nrows x ncols cells, row-major, NULL for SQL NULL. */
static sl_result result_of(int nrows, int ncols, const char *const *cells)
{
    sl_result res = {nrows, ncols, dup_strs(cells, (size_t)nrows * (size_t)ncols), -1};
    return res;
}

static void result_free(sl_result *res)
{
    for (size_t i = 0; i < (size_t)res->nrows * (size_t)res->ncols; i++)
        free(res->vals[i]);
    free(res->vals);
    memset(res, 0, sizeof *res);
}

/* A key as sl_keys resolves it: table and quoted columns, owned (sl_keyspec_free). */
static void keyspec_of(sl_keyspec *ks, sl_dialect dialect, const char *table, size_t ncols, const char *const *cols,
                       const char *const *types)
{
    memset(ks, 0, sizeof *ks);
    ks->dialect = dialect;
    ks->table = sl_strdup(table);
    ks->ncols = ncols;
    for (size_t i = 0; i < ncols; i++) {
        ks->cols[i] = sl_strdup(cols[i]);
        ks->types[i] = sl_strdup(types[i]);
    }
}

/* PostgreSQL: "public"."users" (id bigint, full_name text, email varchar(50)), key id. */
static void pg_users(sl_keyspec *ks)
{
    keyspec_of(ks, SL_DIALECT_PG, "\"public\".\"users\"", 1, (const char *[]){"\"id\""}, (const char *[]){"bigint"});
}

/* SQLite: "users" (id INTEGER, full_name TEXT, email TEXT), key id. */
static void lite_users(sl_keyspec *ks)
{
    keyspec_of(ks, SL_DIALECT_SQLITE, "\"users\"", 1, (const char *[]){"\"id\""}, (const char *[]){"INTEGER"});
}

/* What sl_undo_resolve would make of the job: its restored columns
 * (snapshot(COL, ...)'s, or the table's for snapshot(*)). No SQL: the
 * record and the planner do not read it. sl_undo_target_free frees it. */
static void target_of(sl_undo_target *t, const sl_keyspec *ks, sl_undo_kind kind, size_t ncols, const char *const *cols,
                      const char *const *types)
{
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->ks = ks;
    t->ncols = ncols;
    t->cols = dup_strs(cols, ncols);
    t->types = dup_strs(types, ncols);
}

static void users_cols(sl_undo_target *t, const sl_keyspec *ks)
{
    int lite = ks->dialect == SL_DIALECT_SQLITE;
    target_of(t, ks, SL_UNDO_SNAPSHOT_COLS, 2, (const char *[]){"\"full_name\"", "\"email\""},
              lite ? (const char *[]){"TEXT", "TEXT"} : (const char *[]){"text", "character varying(50)"});
}

static void users_all(sl_undo_target *t, const sl_keyspec *ks)
{
    int lite = ks->dialect == SL_DIALECT_SQLITE;
    target_of(t, ks, SL_UNDO_SNAPSHOT_ALL, 3, (const char *[]){"\"id\"", "\"full_name\"", "\"email\""},
              lite ? (const char *[]){"INTEGER", "TEXT", "TEXT"}
                   : (const char *[]){"bigint", "text", "character varying(50)"});
}

/* The record sl_undo_record makes of pre and post, read back through
 * sl_undo_record_decode with the same target. */
static int record_round_trip(const sl_undo_target *t, int64_t chunk_no, const sl_result *pre, const sl_result *post,
                             sl_snap *out)
{
    char *hex = sl_undo_record(t, chunk_no, pre, post);
    CHECK(hex != NULL && strlen(hex) % 2 == 0 && strspn(hex, "0123456789abcdef") == strlen(hex));
    sl_err err = {{0}};
    int rc = sl_undo_record_decode(t, chunk_no, hex, -1, out, &err);
    if (rc != 0)
        printf("#   %s\n", err.msg);
    free(hex);
    /* the bytes PostgreSQL stores read back to the same record */
    size_t len;
    char *bytes = sl_undo_record_bytes(t, chunk_no, pre, post, &len);
    sl_snap again;
    CHECK(sl_undo_record_decode(t, chunk_no, bytes, (long long)len, &again, &err) == rc);
    if (rc == 0) {
        CHECK(again.nrows == out->nrows && again.nkey == out->nkey && again.nvals == out->nvals);
        sl_snap_free(&again);
    }
    free(bytes);
    return rc;
}

/* The row of snap with this (first) key column, or NULL. */
static const sl_snap_row *find_row(const sl_snap *snap, const char *key0)
{
    for (size_t r = 0; r < snap->nrows; r++)
        if (strcmp(snap->rows[r].key[0], key0) == 0)
            return &snap->rows[r];
    return NULL;
}

/* ---- the codec ---- */

static void test_snap_codec(void)
{
    char k1[] = "1", k2[] = "2", v1[] = "Ada";
    char *key1[] = {k1}, *key2[] = {k2}, *vals1[] = {v1, NULL};
    sl_snap_row rows[] = {{key1, 1, 1, -42, vals1}, {key2, 0, 1, 7, NULL}};
    sl_snap snap = {.chunk_no = 3, .kind = "cols", .nkey = 1, .nvals = 2, .nrows = 2, .rows = rows};
    sl_buf blob = {0};
    sl_snap_encode(&snap, &blob);
    sl_snap back = {.chunk_no = 3};
    CHECK(sl_snap_decode(blob.data, blob.len, &back) == 0);
    CHECK(back.nrows == 2 && back.nkey == 1 && back.nvals == 2 && back.chunk_no == 3);
    if (back.nrows == 2) {
        CHECK_STR(back.rows[0].key[0], "1");
        CHECK_STR(back.rows[0].vals[0], "Ada");
        CHECK(back.rows[0].vals[1] == NULL && back.rows[0].post_hash == -42);
        CHECK(!back.rows[1].has_pre && back.rows[1].vals == NULL && back.rows[1].post_hash == 7);
    }
    sl_snap_free(&back);
    /* every cut is refused */
    for (size_t len = 0; len < blob.len; len++)
        CHECK(!decodes(blob.data, len));
    sl_buf_free(&blob);
    CHECK(!decodes(NULL, 0));
    /* the fuzzer's finds: each decoded, and came back other than it was */
    static const char nul_in_value[] = "\x01\x01\x01\x01\x01\x02"
                                       "1"
                                       "\x05"
                                       "Ad\0a";
    CHECK(!decodes(nul_in_value, sizeof nul_in_value - 1));
    static const char plain_value[] = "\x01\x01\x01\x01\x01\x02"
                                      "1"
                                      "\x05"
                                      "Adaa";
    CHECK(decodes(plain_value, sizeof plain_value - 1));
    CHECK(!decodes("\x01\x81\x00\x00\x00", 5));                                  /* 1 spelt in two bytes */
    CHECK(!decodes("\x01\x81\x80\x80\x80\x80\x80\x80\x80\x80\x02\x00\x00", 13)); /* past 64 bits */
    CHECK(!decodes("\x01\x01\x00\x01\x04\x02"
                   "1",
                   7)); /* flags no encoder writes */
    CHECK(decodes("\x01\x01\x00\x01\x00\x02"
                  "1",
                  7));
    /* a row count the bytes cannot hold */
    CHECK(!decodes("\x01\x02\x00\x03\x00\x01\x01\x00\x01\x01", 10));
}

/* snapshot(*) records name their columns (format 2); those of format 1 have none and still read. */
static void test_snap_names(void)
{
    sl_buf blob = {0};
    sl_snap snap;
    snap_init(&snap, 1, 1);
    char id[] = "id", first[] = "\"First\"", g[] = "g";
    char *names[] = {id, first, g};
    int generated[] = {0, 0, 1};
    snap.ncols = 3;
    snap.cols = names;
    snap.col_generated = generated;
    snap_add(&snap, (const char *[]){"1"}, (const char *[]){"(1,a,2)"}, 0, 0);
    check_round_trip(&snap, &blob);
    CHECK(blob.len > 3 && blob.data[0] == 2);
    sl_snap back = {0};
    CHECK(decode_exact(blob.data, blob.len, &back) == 0);
    CHECK(back.ncols == 3 && back.col_generated[2] == 1 && back.col_generated[1] == 0);
    CHECK_STR(back.cols[1], "\"First\"");
    sl_snap_free(&back);
    /* format 2: 1 key, 1 value, 1 column "a" (0x61) not generated, no rows */
    CHECK(decodes("\x02\x01\x01\x01\x02\x61\x00\x00", 8));
    CHECK(!decodes("\x02\x01\x01\x01\x02\x61\x02\x00", 8)); /* generated is 0 or 1 */
    CHECK(!decodes("\x02\x01\x01\x00\x00", 5));             /* no columns: the encoder writes format 1 */
    CHECK(!decodes("\x02\x01\x01\x01\x00\x00\x00", 7));     /* a NULL name */
    CHECK(!decodes("\x02\x01\x01\x01\x02\x61", 6));         /* cut short */
    CHECK(!decodes("\x05\x01\x00\x00", 4));                 /* a format no encoder wrote */
    CHECK(decode_exact("\x01\x01\x00\x00", 4, &back) == 0 && back.ncols == 0 && !back.cols);
    sl_snap_free(&back);
    for (size_t r = 0; r < snap.nrows; r++) { /* the names are the test's */
        free(snap.rows[r].key[0]);
        free(snap.rows[r].key);
        free(snap.rows[r].vals[0]);
        free(snap.rows[r].vals);
    }
    free(snap.rows);
    sl_buf_free(&blob);
}

/* PostgreSQL snapshot(COL, ...) records hash column by column (format 3);
 * those of format 1 hash the columns' ROW() text and still read, as such. */
static void test_snap_col_hash(void)
{
    sl_buf blob = {0};
    sl_snap snap;
    snap_init(&snap, 1, 1);
    snap.col_hash = 1;
    snap_add(&snap, (const char *[]){"1"}, (const char *[]){"Ada"}, 1, -5);
    check_round_trip(&snap, &blob);
    CHECK(blob.len > 3 && blob.data[0] == 3);
    sl_snap back = {0};
    CHECK(decode_exact(blob.data, blob.len, &back) == 0 && back.col_hash == 1 && back.nrows == 1);
    sl_snap_free(&back);
    sl_buf_free(&blob);
    snap.col_hash = 0;
    check_round_trip(&snap, &blob);
    CHECK(blob.len > 3 && blob.data[0] == 1);
    CHECK(decode_exact(blob.data, blob.len, &back) == 0 && back.col_hash == 0);
    sl_snap_free(&back);
    sl_buf_free(&blob);
    sl_snap_free(&snap);
    /* format 3 is format 1's layout: no names (a 1 after the counts is a row count, cut short here) */
    CHECK(decodes("\x03\x01\x01\x00", 4));
    CHECK(!decodes("\x03\x01\x01\x01\x02\x61\x00\x00", 8));
    /* format 4 is format 2's: snapshot(*)'s names, then rows hashed column by column */
    CHECK(decode_exact("\x04\x01\x01\x01\x02\x61\x00\x00", 8, &back) == 0 && back.col_hash == 1 && back.ncols == 1);
    sl_snap_free(&back);
    CHECK(!decodes("\x04\x01\x01\x00", 4)); /* no names */
    char a[] = "\"a\"";
    char *names[] = {a};
    int generated[] = {0};
    snap_init(&snap, 1, 1);
    snap.col_hash = 1;
    snap.ncols = 1;
    snap.cols = names;
    snap.col_generated = generated;
    check_round_trip(&snap, &blob);
    CHECK(blob.len > 3 && blob.data[0] == 4);
    CHECK(decode_exact(blob.data, blob.len, &back) == 0 && back.col_hash == 1 && back.ncols == 1);
    sl_snap_free(&back);
    sl_buf_free(&blob);
}

static void test_snap_empty(void)
{
    sl_buf blob = {0};
    sl_snap snap;
    snap_init(&snap, 1, 0);
    check_round_trip(&snap, &blob);
    /* format, nkey, nvals, nrows and nothing else */
    CHECK(blob.len == 4 && memcmp(blob.data, "\x01\x01\x00\x00", 4) == 0);
    snap_init(&snap, 3, 5);
    check_round_trip(&snap, &blob);
    CHECK(blob.len == 4 && memcmp(blob.data, "\x01\x03\x05\x00", 4) == 0);
    /* rows with nothing saved (the down way): keys and hashes only */
    snap_init(&snap, 1, 0);
    snap_add(&snap, (const char *[]){"1"}, NULL, 1, 5);
    snap_add(&snap, (const char *[]){"2"}, (const char *[]){NULL}, 0, 0);
    check_round_trip(&snap, &blob);
    sl_snap back = {0};
    CHECK(decode_exact(blob.data, blob.len, &back) == 0);
    CHECK(back.nrows == 2 && back.rows[1].has_pre && !back.rows[1].has_post);
    sl_snap_free(&back);
    sl_snap_free(&snap);
    /* a record without a key cannot put anything back by key: refused */
    snap_init(&snap, 0, 0);
    sl_buf_reset(&blob);
    sl_snap_encode(&snap, &blob);
    CHECK(!decodes(blob.data, blob.len));
    sl_buf_free(&blob);
}

static void test_snap_null_and_empty(void)
{
    sl_snap snap;
    snap_init(&snap, 1, 3);
    snap_add(&snap, (const char *[]){""}, (const char *[]){NULL, "", "x"}, 1, 0);
    snap_add(&snap, (const char *[]){"k"}, (const char *[]){"", NULL, NULL}, 0, 0);
    sl_buf blob = {0};
    check_round_trip(&snap, &blob);
    /* row 1: flags 3, key "" (tag 1), hash, NULL (tag 0), "" (tag 1), "x" (tag 2) */
    static const char row1[] = "\x03\x01\0\0\0\0\0\0\0\0\x00\x01\x02x";
    CHECK(blob.len > 4 + sizeof row1 - 1 && memcmp(blob.data + 4, row1, sizeof row1 - 1) == 0);
    sl_snap back = {0};
    CHECK(decode_exact(blob.data, blob.len, &back) == 0);
    if (back.nrows == 2) {
        CHECK(back.rows[0].key[0] != NULL && back.rows[0].key[0][0] == '\0');
        CHECK(back.rows[0].vals[0] == NULL);
        CHECK(back.rows[0].vals[1] != NULL && back.rows[0].vals[1][0] == '\0');
        CHECK_STR(back.rows[0].vals[2], "x");
        CHECK(back.rows[1].vals[0] != NULL && back.rows[1].vals[0][0] == '\0');
        CHECK(back.rows[1].vals[1] == NULL && back.rows[1].vals[2] == NULL);
    }
    sl_snap_free(&back);
    sl_snap_free(&snap);
    sl_buf_free(&blob);
}

static void test_snap_binary_utf8_long(void)
{
    /* every byte but NUL, which a text value cannot hold */
    char all_bytes[256];
    for (int i = 1; i < 256; i++)
        all_bytes[i - 1] = (char)i;
    all_bytes[255] = '\0';
    const char *utf8 = "Zo\xc3\xab \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82 \xe2\x80\xae";
    /* lengths around the varint's steps: 127 | 128 bytes, 16383 | 16384, and 1 MiB */
    size_t lens[] = {126, 127, 128, 16382, 16383, 16384, (size_t)1 << 20};
    size_t tag_bytes[] = {1, 2, 2, 2, 3, 3, 3}; /* varint of len + 1 */
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        char *big = sl_malloc(lens[i] + 1);
        for (size_t j = 0; j < lens[i]; j++)
            big[j] = (char)('a' + j % 26);
        big[lens[i]] = '\0';
        sl_snap snap;
        snap_init(&snap, 1, 1);
        snap_add(&snap, (const char *[]){"1"}, (const char *[]){big}, 0, 0);
        sl_buf blob = {0};
        check_round_trip(&snap, &blob);
        /* header 4, flags 1, key 2, the value's tag and bytes */
        CHECK(blob.len == 4 + 1 + 2 + tag_bytes[i] + lens[i]);
        sl_buf_free(&blob);
        sl_snap_free(&snap);
        free(big);
    }
    sl_snap snap;
    snap_init(&snap, 2, 3);
    snap_add(&snap, (const char *[]){all_bytes, utf8}, (const char *[]){utf8, all_bytes, "\\x00ff"}, 1, INT64_MIN);
    snap_add(&snap, (const char *[]){utf8, all_bytes}, NULL, 1, INT64_MAX);
    sl_buf blob = {0};
    check_round_trip(&snap, &blob);
    sl_buf_free(&blob);
    sl_snap_free(&snap);
}

static void test_snap_many_rows(void)
{
    sl_snap snap;
    snap_init(&snap, 2, 2);
    const int64_t hashes[] = {0, -1, 1, INT64_MIN, INT64_MAX, 0x0102030405060708};
    for (int r = 0; r < 20000; r++) {
        char tenant[16], id[16], val[32];
        snprintf(tenant, sizeof tenant, "%d", r % 7);
        snprintf(id, sizeof id, "%d", r);
        snprintf(val, sizeof val, "value %d", r * 31);
        const char *vals[] = {val, r % 5 == 0 ? NULL : ""};
        /* updated, inserted and deleted rows mixed */
        snap_add(&snap, (const char *[]){tenant, id}, r % 3 == 1 ? NULL : vals, r % 3 != 2, hashes[r % 6]);
    }
    sl_buf blob = {0};
    check_round_trip(&snap, &blob);
    sl_snap back = {0};
    CHECK(decode_exact(blob.data, blob.len, &back) == 0);
    CHECK(back.nrows == 20000);
    if (back.nrows == 20000) {
        CHECK_STR(back.rows[19999].key[1], "19999");
        CHECK(back.rows[3].has_pre && back.rows[3].has_post && back.rows[3].post_hash == INT64_MIN);
        CHECK(!back.rows[1].has_pre && back.rows[1].vals == NULL);
        CHECK(back.rows[2].has_pre && !back.rows[2].has_post && back.rows[5].vals[1] == NULL);
    }
    sl_snap_free(&back);
    sl_buf_free(&blob);
    sl_snap_free(&snap);
}

static void test_snap_composite_key(void)
{
    sl_snap snap;
    snap_init(&snap, 3, 1);
    snap_add(&snap, (const char *[]){"42", "2024-01-31", "a,b"}, (const char *[]){"x"}, 1, 9);
    snap_add(&snap, (const char *[]){"42", "2024-01-31", ""}, (const char *[]){NULL}, 1, 10);
    snap_add(&snap, (const char *[]){"", "", ""}, NULL, 1, 11);
    sl_buf blob = {0};
    check_round_trip(&snap, &blob);
    sl_snap back = {0};
    CHECK(decode_exact(blob.data, blob.len, &back) == 0);
    if (back.nrows == 3) {
        CHECK_STR(back.rows[0].key[0], "42");
        CHECK_STR(back.rows[0].key[1], "2024-01-31");
        CHECK_STR(back.rows[0].key[2], "a,b");
        CHECK_STR(back.rows[1].key[2], "");
        CHECK(back.rows[2].post_hash == 11);
    }
    sl_snap_free(&back);
    /* the largest key the decoder takes, and one more */
    CHECK(decodes("\x01\x40\x00\x00", 4));
    CHECK(!decodes("\x01\x41\x00\x00", 4));
    sl_buf_free(&blob);
    sl_snap_free(&snap);
}

/* A record with a bit of everything: composite key, pre and post rows,
 * NULL, "", a value long enough for a two-byte length. */
static void rich_record(sl_buf *blob)
{
    char long_val[300];
    memset(long_val, 'L', sizeof long_val - 1);
    long_val[sizeof long_val - 1] = '\0';
    sl_snap snap;
    snap_init(&snap, 2, 3);
    snap_add(&snap, (const char *[]){"1", "a"}, (const char *[]){NULL, "", long_val}, 1, -2);
    snap_add(&snap, (const char *[]){"2", "b"}, NULL, 1, INT64_MIN);
    snap_add(&snap, (const char *[]){"3", ""}, (const char *[]){"x", NULL, "y"}, 0, 0);
    sl_snap_encode(&snap, blob);
    sl_snap_free(&snap);
}

static void test_snap_every_cut_refused(void)
{
    sl_buf blob = {0};
    rich_record(&blob);
    CHECK(decodes(blob.data, blob.len));
    for (size_t len = 0; len < blob.len; len++)
        CHECK(!decodes(blob.data, len));
    /* and a byte too many */
    const char extra[] = {0x00, 0x01, 0x7f, (char)0x80, (char)0xff};
    for (size_t i = 0; i < sizeof extra; i++) {
        sl_buf_addc(&blob, extra[i]);
        CHECK(!decodes(blob.data, blob.len));
        blob.len--;
    }
    sl_buf_free(&blob);
}

static void test_snap_corrupted(void)
{
    sl_buf blob = {0};
    rich_record(&blob);
    /* Every byte changed in a few ways: no crash, no read past the end
     * (AddressSanitizer), and whatever is still accepted is a record
     * whose one spelling these bytes are. */
    unsigned char *bytes = sl_malloc(blob.len);
    int refused = 0;
    for (size_t pos = 0; pos < blob.len; pos++) {
        unsigned char orig = (unsigned char)blob.data[pos];
        const unsigned char muts[] = {0x00, 0x01, 0x7f, 0x80, 0xff, orig ^ 0x01, orig ^ 0x80};
        for (size_t m = 0; m < sizeof muts; m++) {
            if (muts[m] == orig)
                continue;
            memcpy(bytes, blob.data, blob.len);
            bytes[pos] = muts[m];
            sl_snap snap = {0};
            if (decode_exact(bytes, blob.len, &snap) != 0) {
                refused++;
                continue;
            }
            sl_buf again = {0};
            sl_snap_encode(&snap, &again);
            CHECK(again.len == blob.len && memcmp(again.data, bytes, blob.len) == 0);
            sl_buf_free(&again);
            sl_snap_free(&snap);
        }
    }
    CHECK(refused > 0);
    free(bytes);
    sl_buf_free(&blob);

    CHECK(!decodes("\x00\x01\x00\x00", 4));                                  /* format 0 */
    CHECK(!decodes("\x02\x01\x00\x00", 4));                                  /* a later format */
    CHECK(!decodes("\x01\x00\x00\x00", 4));                                  /* no key */
    CHECK(decodes("\x01\x01\x80\x20\x00", 5));                               /* 4096 saved values */
    CHECK(!decodes("\x01\x01\x81\x20\x00", 5));                              /* 4097 */
    CHECK(!decodes("\x01\x81", 2));                                          /* a varint cut short */
    CHECK(!decodes("\x01\x80\x80\x80", 4));                                  /* and one that never ends */
    CHECK(!decodes("\x01\x80\x80\x80\x80\x80\x80\x80\x80\x01\x00\x00", 12)); /* nkey 2^56 */
    CHECK(!decodes("\x01\x01\x00\x01\x00\x00", 6));                          /* a NULL key */
    CHECK(!decodes("\x01\x01\x00\x01\x02\x02"
                   "1"
                   "\x01\x02\x03\x04\x05\x06\x07",
                   14)); /* a hash cut short */
    /* a key whose length runs past the end, up to 2^64 - 1 */
    CHECK(!decodes("\x01\x01\x00\x01\x00\x05"
                   "ab",
                   8));
    CHECK(!decodes("\x01\x01\x00\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"
                   "ab",
                   17));
    /* a value's length one short (a byte left over) and one long (past the end) */
    CHECK(decodes("\x01\x01\x01\x01\x01\x02k\x06hello", 13));
    CHECK(!decodes("\x01\x01\x01\x01\x01\x02k\x05hello", 13));
    CHECK(!decodes("\x01\x01\x01\x01\x01\x02k\x07hello", 13));
}

static void test_snap_key_cmp(void)
{
    char *const one[] = {(char *)"1"}, *const two[] = {(char *)"2"}, *const ten[] = {(char *)"10"};
    CHECK(sl_snap_key_cmp(one, two, 1) < 0);
    CHECK(sl_snap_key_cmp(two, one, 1) > 0);
    CHECK(sl_snap_key_cmp(one, one, 1) == 0);
    CHECK(sl_snap_key_cmp(ten, two, 1) < 0); /* text, not numbers: the same on both sides is all it needs */
    char *const ab[] = {(char *)"ab"}, *const abc[] = {(char *)"abc"};
    CHECK(sl_snap_key_cmp(ab, abc, 1) < 0); /* a prefix first */
    char *const upper[] = {(char *)"Z"}, *const lower[] = {(char *)"a"}, *const e_acute[] = {(char *)"\xc3\xa9"};
    CHECK(sl_snap_key_cmp(upper, lower, 1) < 0);   /* bytewise, no collation */
    CHECK(sl_snap_key_cmp(lower, e_acute, 1) < 0); /* bytes as unsigned: UTF-8 after ASCII */
    CHECK(sl_snap_key_cmp(e_acute, lower, 1) > 0);
    /* field by field: the first field decides, then the next */
    char *const a2[] = {(char *)"a", (char *)"2"}, *const b1[] = {(char *)"b", (char *)"1"};
    char *const a10[] = {(char *)"a", (char *)"10"}, *const a2z[] = {(char *)"a", (char *)"2", (char *)"z"};
    CHECK(sl_snap_key_cmp(a2, b1, 2) < 0);
    CHECK(sl_snap_key_cmp(b1, a2, 2) > 0);
    CHECK(sl_snap_key_cmp(a10, a2, 2) < 0);
    CHECK(sl_snap_key_cmp(a2, a2z, 2) == 0); /* only nkey fields count */
    /* not the concatenation: ("a", "bc") vs ("ab", "c") */
    char *const a_bc[] = {(char *)"a", (char *)"bc"}, *const ab_c[] = {(char *)"ab", (char *)"c"};
    CHECK(sl_snap_key_cmp(a_bc, ab_c, 2) < 0);
    char *const empty[] = {(char *)"", (char *)"z"}, *const a_[] = {(char *)"a", (char *)""};
    CHECK(sl_snap_key_cmp(empty, a_, 2) < 0);
}

/* ---- the record layer (undo.c): what `up` keeps of a chunk ---- */

/* PostgreSQL, snapshot(full_name, email): pre_sql gives key::text and the
 * saved columns over the whole range, post_sql key::text and a hash only
 * for rows this transaction wrote (NULL for the others). */
static void test_record_pg_cols(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    users_cols(&t, &ks);
    /* 1 updated, 2 left alone, 3 deleted by the job, 4 inserted by it */
    sl_result pre = result_of(3, 3, (const char *[]){"1", "Ada", NULL, "2", "Bob", "b@x", "3", "", "c@x"});
    sl_result post = result_of(3, 2, (const char *[]){"1", "-17", "2", NULL, "4", "9223372036854775807"});
    sl_snap snap;
    CHECK(record_round_trip(&t, 12, &pre, &post, &snap) == 0);
    CHECK(snap.chunk_no == 12);
    CHECK_STR(snap.kind, "cols");
    CHECK(snap.nkey == 1 && snap.nvals == 2 && snap.nrows == 3);
    CHECK(find_row(&snap, "2") == NULL); /* rows the chunk did not write are left out */
    const sl_snap_row *r1 = find_row(&snap, "1"), *r3 = find_row(&snap, "3"), *r4 = find_row(&snap, "4");
    CHECK(r1 && r1->has_pre && r1->has_post && r1->post_hash == -17);
    if (r1 && r1->vals) {
        CHECK_STR(r1->vals[0], "Ada");
        CHECK(r1->vals[1] == NULL);
    }
    CHECK(r3 && r3->has_pre && !r3->has_post);
    if (r3 && r3->vals) {
        CHECK(r3->vals[0] && r3->vals[0][0] == '\0'); /* "" stays "", not NULL */
        CHECK_STR(r3->vals[1], "c@x");
    }
    CHECK(r4 && !r4->has_pre && r4->vals == NULL && r4->has_post && r4->post_hash == INT64_MAX);
    sl_snap_free(&snap);
    result_free(&pre);
    result_free(&post);

    /* an UPDATE job: the same keys before and after, paired by position */
    pre = result_of(2, 3, (const char *[]){"10", "x", "y", "11", "p", "q"});
    post = result_of(2, 2, (const char *[]){"10", NULL, "11", "5"});
    CHECK(record_round_trip(&t, 13, &pre, &post, &snap) == 0);
    CHECK(snap.nrows == 1 && find_row(&snap, "11") && find_row(&snap, "11")->post_hash == 5);
    if (snap.nrows == 1) {
        CHECK_STR(snap.rows[0].vals[0], "p");
        CHECK_STR(snap.rows[0].vals[1], "q");
    }
    sl_snap_free(&snap);
    result_free(&pre);
    result_free(&post);

    /* what up records now: column-wise hashes, said by the record; a target of
     * the old form reads it as such (down hashes as the record did) */
    t.col_hash = 1;
    pre = result_of(1, 3, (const char *[]){"11", "p", "q"});
    post = result_of(1, 2, (const char *[]){"11", "5"});
    CHECK(record_round_trip(&t, 14, &pre, &post, &snap) == 0);
    CHECK(snap.col_hash == 1 && snap.nrows == 1);
    sl_snap_free(&snap);
    size_t len;
    char *bytes = sl_undo_record_bytes(&t, 14, &pre, &post, &len);
    CHECK(len > 0 && bytes[0] == 3);
    t.col_hash = 0;
    sl_err err = {{0}};
    CHECK(sl_undo_record_decode(&t, 14, bytes, (long long)len, &snap, &err) == 0 && snap.col_hash == 1);
    sl_snap_free(&snap);
    /* the same job on SQLite reading it: refused, SQLite hashes otherwise */
    sl_keyspec lks;
    lite_users(&lks);
    sl_undo_target lite;
    users_cols(&lite, &lks);
    CHECK(sl_undo_record_decode(&lite, 14, bytes, (long long)len, &snap, &err) != 0);
    CHECK(strstr(err.msg, "column by column") != NULL);
    sl_undo_target_free(&lite);
    sl_keyspec_free(&lks);
    free(bytes);
    result_free(&pre);
    result_free(&post);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* PostgreSQL, snapshot(*) (one saved value: the row's text) and the down
 * way (no pre-image at all: xmin tells the rows written). */
static void test_record_pg_all_and_down(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    users_all(&t, &ks);
    /* a purge: 5 and 6 deleted, 7 kept and not written */
    sl_result pre = result_of(3, 2, (const char *[]){"5", "(5,\"O'Brien, Pat\",)", "6", "(6,x,y)", "7", "(7,,)"});
    sl_result post = result_of(1, 2, (const char *[]){"7", NULL});
    sl_snap snap;
    CHECK(record_round_trip(&t, 1, &pre, &post, &snap) == 0);
    CHECK_STR(snap.kind, "all");
    CHECK(snap.nkey == 1 && snap.nvals == 1 && snap.nrows == 2);
    const sl_snap_row *r5 = find_row(&snap, "5");
    CHECK(r5 && r5->has_pre && !r5->has_post && r5->vals && same_str(r5->vals[0], "(5,\"O'Brien, Pat\",)"));
    CHECK(find_row(&snap, "7") == NULL);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);

    target_of(&t, &ks, SL_UNDO_DOWN, 0, NULL, NULL);
    sl_result post2 = result_of(3, 2, (const char *[]){"5", "1", "6", NULL, "8", "-3"});
    /* whatever pre is, the down way on PostgreSQL does not read it */
    CHECK(record_round_trip(&t, 2, &pre, &post2, &snap) == 0);
    CHECK_STR(snap.kind, "down");
    CHECK(snap.nvals == 0 && snap.nrows == 2);
    CHECK(find_row(&snap, "5") && !find_row(&snap, "5")->has_pre && find_row(&snap, "5")->post_hash == 1);
    CHECK(find_row(&snap, "8") && find_row(&snap, "8")->post_hash == -3);
    CHECK(find_row(&snap, "6") == NULL);
    sl_snap_free(&snap);
    result_free(&pre);
    result_free(&post);
    result_free(&post2);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* SQLite: pre_sql gives quote(key), the hash, then quote() of the saved
 * columns; post_sql quote(key) and the hash. A row whose hash did not
 * change was not written. */
static void test_record_lite(void)
{
    sl_keyspec ks;
    lite_users(&ks);
    sl_undo_target t;
    users_all(&t, &ks);
    /* 1 changed, 2 unchanged, 3 deleted, 4 inserted; listed out of order */
    sl_result pre = result_of(3, 5,
                              (const char *[]){"3", "30", "3", "'Cy'", "NULL", "1", "10", "1", "'Ada'", "X'00ff'", "2",
                                               "20", "2", "'Bob'", "'b@x'"});
    sl_result post = result_of(3, 2, (const char *[]){"4", "40", "1", "11", "2", "20"});
    sl_snap snap;
    CHECK(record_round_trip(&t, 4, &pre, &post, &snap) == 0);
    CHECK(snap.nkey == 1 && snap.nvals == 3 && snap.nrows == 3); /* one literal per column on SQLite */
    CHECK(find_row(&snap, "2") == NULL);
    const sl_snap_row *r1 = find_row(&snap, "1"), *r3 = find_row(&snap, "3"), *r4 = find_row(&snap, "4");
    CHECK(r1 && r1->has_pre && r1->has_post && r1->post_hash == 11);
    if (r1 && r1->vals) {
        CHECK_STR(r1->vals[0], "1");
        CHECK_STR(r1->vals[1], "'Ada'");
        CHECK_STR(r1->vals[2], "X'00ff'");
    }
    CHECK(r3 && r3->has_pre && !r3->has_post && r3->vals && same_str(r3->vals[2], "NULL"));
    CHECK(r4 && !r4->has_pre && r4->has_post && r4->post_hash == 40);
    sl_snap_free(&snap);
    result_free(&pre);
    result_free(&post);
    sl_undo_target_free(&t);

    /* the down way on SQLite reads the range before too, to tell the rows written */
    target_of(&t, &ks, SL_UNDO_DOWN, 0, NULL, NULL);
    pre = result_of(2, 2, (const char *[]){"1", "10", "2", "20"});
    post = result_of(2, 2, (const char *[]){"1", "10", "2", "21"});
    CHECK(record_round_trip(&t, 5, &pre, &post, &snap) == 0);
    CHECK(snap.nvals == 0 && snap.nrows == 1 && find_row(&snap, "2") && find_row(&snap, "2")->post_hash == 21);
    sl_snap_free(&snap);
    result_free(&pre);
    result_free(&post);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* A record read with the wrong job's target, or damaged, is refused with a
 * message naming the chunk, and leaves out zeroed. */
static void test_record_refused(void)
{
    sl_keyspec ks, ks2;
    pg_users(&ks);
    keyspec_of(&ks2, SL_DIALECT_PG, "\"public\".\"users\"", 2, (const char *[]){"\"tenant\"", "\"id\""},
               (const char *[]){"integer", "bigint"});
    sl_undo_target t, other;
    users_cols(&t, &ks);
    sl_result pre = result_of(1, 3, (const char *[]){"1", "Ada", "a@x"});
    sl_result post = result_of(1, 2, (const char *[]){"1", "7"});
    char *hex = sl_undo_record(&t, 31, &pre, &post);
    sl_snap snap;
    sl_err err = {{0}};

    /* another key */
    target_of(&other, &ks2, SL_UNDO_SNAPSHOT_COLS, 2, (const char *[]){"\"full_name\"", "\"email\""},
              (const char *[]){"text", "text"});
    CHECK(sl_undo_record_decode(&other, 31, hex, -1, &snap, &err) != 0);
    CHECK_HAS(err.msg, "chunk 31");
    CHECK_HAS(err.msg, "1 key and 2 saved columns, but the job's key has 2 and its undo saves 2");
    CHECK_HAS(err.msg, "another version of the job");
    CHECK(snap.nrows == 0 && snap.rows == NULL);
    sl_undo_target_free(&other);
    /* other saved columns: one fewer, snapshot(*) (one row text on PostgreSQL), the down way */
    target_of(&other, &ks, SL_UNDO_SNAPSHOT_COLS, 1, (const char *[]){"\"full_name\""}, (const char *[]){"text"});
    CHECK(sl_undo_record_decode(&other, 31, hex, -1, &snap, &err) != 0);
    CHECK_HAS(err.msg, "the undo record of chunk 31 holds 1 key and 2 saved columns");
    CHECK_HAS(err.msg, "its undo saves 1");
    sl_undo_target_free(&other);
    users_all(&other, &ks);
    CHECK(sl_undo_record_decode(&other, 31, hex, -1, &snap, &err) != 0);
    CHECK_HAS(err.msg, "chunk 31");
    sl_undo_target_free(&other);
    target_of(&other, &ks, SL_UNDO_DOWN, 0, NULL, NULL);
    CHECK(sl_undo_record_decode(&other, 31, hex, -1, &snap, &err) != 0);
    CHECK_HAS(err.msg, "its undo saves 0");
    sl_undo_target_free(&other);

    /* the same job reads it, in either case of hex */
    CHECK(sl_undo_record_decode(&t, 31, hex, -1, &snap, &err) == 0 && snap.nrows == 1);
    sl_snap_free(&snap);
    for (char *p = hex; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'f' ? *p - 'a' + 'A' : *p);
    CHECK(sl_undo_record_decode(&t, 31, hex, -1, &snap, &err) == 0 && snap.nrows == 1);
    sl_snap_free(&snap);

    /* damaged: cut, an odd digit, not hex, empty */
    size_t len = strlen(hex);
    const char *damaged[] = {"", "0", "01010001", "zz", "0g"};
    for (size_t i = 0; i < sizeof damaged / sizeof damaged[0]; i++) {
        memset(&err, 0, sizeof err);
        CHECK(sl_undo_record_decode(&t, 9, damaged[i], -1, &snap, &err) != 0);
        CHECK_HAS(err.msg, "the undo record of chunk 9 in sluice_undo is damaged");
        CHECK(snap.rows == NULL);
    }
    for (size_t cut = 0; cut < len; cut++) {
        char *part = sl_strndup(hex, cut);
        memset(&err, 0, sizeof err);
        CHECK(sl_undo_record_decode(&t, 9, part, -1, &snap, &err) != 0);
        CHECK_HAS(err.msg, "chunk 9");
        free(part);
    }
    /* the same record as bytes (PostgreSQL's, read in binary): whole, it reads; cut anywhere, damaged */
    size_t nbytes;
    char *bytes = sl_undo_record_bytes(&t, 31, &pre, &post, &nbytes);
    CHECK(nbytes * 2 == len);
    CHECK(sl_undo_record_decode(&t, 31, bytes, (long long)nbytes, &snap, &err) == 0 && snap.nrows == 1);
    sl_snap_free(&snap);
    for (size_t cut = 0; cut < nbytes; cut++) {
        memset(&err, 0, sizeof err);
        CHECK(sl_undo_record_decode(&t, 9, bytes, (long long)cut, &snap, &err) != 0);
        CHECK_HAS(err.msg, "chunk 9");
    }
    free(bytes);
    free(hex);
    result_free(&pre);
    result_free(&post);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
    sl_keyspec_free(&ks2);
}

/* ---- the down chunk planner (undo.c, undo_lite.c) ---- */

/* One restore statement of the step: its exact SQL, and its parameters,
 * which are all the values it writes. */
static void check_query(const sl_undo_step *step, size_t q, const char *sql, int nparams, const char *const *params)
{
    if (q >= step->nq) {
        printf("#   statement %zu missing: the step has %zu\n", q, step->nq);
        check_failed_in_case = 1;
        return;
    }
    CHECK_STR(step->sql[q], sql);
    CHECK(step->q[q].sql == step->sql[q]);
    CHECK(step->q[q].params == (const char *const *)step->params[q]);
    CHECK(step->q[q].nparams == nparams);
    for (int i = 0; i < nparams && i < step->q[q].nparams; i++)
        CHECK_STR(step->params[q][i], params[i]);
}

/* No saved value (of three bytes or more: "1" is in "$1") is in a
 * statement's text: they are parameters, never pasted in. */
static void check_values_not_in_sql(const sl_undo_step *step, const sl_snap *snap)
{
    for (size_t q = 0; q < step->nq; q++)
        for (size_t r = 0; r < snap->nrows; r++)
            for (size_t i = 0; snap->rows[r].has_pre && i < snap->nvals; i++) {
                const char *v = snap->rows[r].vals[i];
                if (v && strlen(v) >= 3 && strstr(step->sql[q], v)) {
                    printf("#   saved value \"%s\" is in statement %zu: %s\n", v, q, step->sql[q]);
                    check_failed_in_case = 1;
                }
            }
}

static void check_no_statements(const sl_undo_step *step)
{
    CHECK(step->nq == 0 && step->restored == 0);
    CHECK(step->sql[0] == NULL && step->params[0] == NULL);
}

static const char pg_update_cols[] =
    "UPDATE \"public\".\"users\" AS _sl_row SET \"full_name\" = v._v1::text, \"email\" = v._v2::character "
    "varying(50) FROM unnest($1::text[], $2::text[], $3::text[]) AS v(_k1, _v1, _v2) WHERE (_sl_row.\"id\") = "
    "(v._k1::bigint)";
/* stop and skip: no row locked while down looks, so each row is written only
 * if its xmin is still the one seen, and every row must be, or the chunk
 * ends (1 / 0) before its COMMIT */
static const char pg_update_cols_checked[] =
    "WITH w AS (UPDATE \"public\".\"users\" AS _sl_row SET \"full_name\" = v._v1::text, \"email\" = "
    "v._v2::character varying(50) FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS v(_k1, _v1, _v2, "
    "_x) WHERE (_sl_row.\"id\") = (v._k1::bigint) AND _sl_row.xmin = v._x::xid RETURNING 1) SELECT 1 / (count(*) = "
    "$5::bigint)::int FROM w";

static void test_plan_pg_cols(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    users_cols(&t, &ks);
    /* the record as up left it, through the codec */
    sl_result pre = result_of(
        3, 3, (const char *[]){"2", "O'Brien'); DROP TABLE users; --", "a\"b\\c{}", "1", "Ada", NULL, "10", "", "z@x"});
    sl_result post = result_of(3, 2, (const char *[]){"1", "111", "10", "333", "2", "222"});
    sl_snap snap;
    CHECK(record_round_trip(&t, 3, &pre, &post, &snap) == 0);
    /* the rows as they are now, in another order, with one the chunk did not write */
    sl_result cur =
        result_of(4, 3, (const char *[]){"2", "222", "902", "3", "444", "903", "10", "333", "910", "1", "111", "901"});
    sl_undo_step step;
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 0 && step.conflicts == NULL && step.nlost == 0);
    CHECK(step.nq == 1 && step.restored == 3);
    /* one UPDATE over four text arrays (key, the saved columns, the xmin seen), rows in key order, and the
     * count it must write */
    check_query(&step, 0, pg_update_cols_checked, 5,
                (const char *[]){"{\"1\",\"10\",\"2\"}", "{\"Ada\",\"\",\"O'Brien'); DROP TABLE users; --\"}",
                                 "{NULL,\"z@x\",\"a\\\"b\\\\c{}\"}", "{\"901\",\"910\",\"902\"}", "3"});
    check_values_not_in_sql(&step, &snap);
    sl_undo_step_free(&step);
    sl_snap_free(&snap);
    result_free(&pre);
    result_free(&post);
    result_free(&cur);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* Rows changed by someone else since the chunk ran: stop changes nothing,
 * skip leaves them out, overwrite puts them back too. */
static void test_plan_conflicts(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    users_cols(&t, &ks);
    sl_snap snap;
    snap_init(&snap, 1, 2);
    snap_add(&snap, (const char *[]){"1"}, (const char *[]){"Ada", "a@x"}, 1, 111);
    snap_add(&snap, (const char *[]){"2"}, (const char *[]){"Bob", "b@x"}, 1, 222); /* changed since */
    snap_add(&snap, (const char *[]){"3"}, (const char *[]){"Cyd", "c@x"}, 1, 333); /* deleted since */
    sl_result cur = result_of(2, 3, (const char *[]){"1", "111", "901", "2", "-5", "902"});
    sl_undo_step step;

    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 2);
    CHECK_STR(step.conflicts, "(2), (3)");
    CHECK(step.nlost == 0);
    check_no_statements(&step);
    sl_undo_step_free(&step);

    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_SKIP, &step);
    CHECK(step.nconflicts == 2);
    CHECK_STR(step.conflicts, "(2), (3)");
    CHECK(step.nq == 1 && step.restored == 1 && step.nlost == 0);
    check_query(&step, 0, pg_update_cols_checked, 5,
                (const char *[]){"{\"1\"}", "{\"Ada\"}", "{\"a@x\"}", "{\"901\"}", "1"});
    sl_undo_step_free(&step);

    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_OVERWRITE, &step);
    CHECK(step.nconflicts == 2);
    CHECK_STR(step.conflicts, "(2), (3)");
    /* 3 is gone (deleted since the job wrote it) and only some of its columns were saved: it cannot
     * come back, and it is not counted among the rows the job itself deleted */
    CHECK(step.nq == 1 && step.restored == 2 && step.ngone == 1 && step.nlost == 0);
    check_query(&step, 0, pg_update_cols, 3,
                (const char *[]){"{\"1\",\"2\"}", "{\"Ada\",\"Bob\"}", "{\"a@x\",\"b@x\"}"});
    check_values_not_in_sql(&step, &snap);
    sl_undo_step_free(&step);

    /* the message lists ten keys and counts the rest */
    sl_snap many;
    snap_init(&many, 1, 2);
    for (int i = 1; i <= 12; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%02d", i);
        snap_add(&many, (const char *[]){key}, (const char *[]){"v", "w"}, 1, i);
    }
    sl_result cur_many = result_of(1, 3, (const char *[]){"k05", "5", "905"});
    sl_undo_plan_chunk(&t, &many, &cur_many, NULL, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 11);
    CHECK_STR(step.conflicts, "(k01), (k02), (k03), (k04), (k06), (k07), (k08), (k09), (k10), (k11) and 1 more");
    check_no_statements(&step);
    sl_undo_step_free(&step);
    result_free(&cur_many);
    sl_snap_free(&many);

    sl_snap_free(&snap);
    result_free(&cur);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* The record and the rows read now hold the same keys in the same order (the
 * server's: 9 before 10, which text order puts after): they pair up by
 * position, unsorted, and each row is still checked against its own hash. */
static void test_plan_paired(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    users_cols(&t, &ks);
    sl_snap snap;
    snap_init(&snap, 1, 2);
    snap_add(&snap, (const char *[]){"9"}, (const char *[]){"Ada", "a@x"}, 1, 111);
    snap_add(&snap, (const char *[]){"10"}, (const char *[]){"Bob", "b@x"}, 1, 222); /* changed since */
    snap_add(&snap, (const char *[]){"11"}, (const char *[]){"Cyd", "c@x"}, 1, 333);
    sl_result cur = result_of(3, 3, (const char *[]){"9", "111", "909", "10", "-5", "910", "11", "333", "911"});
    sl_undo_step step;

    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 1);
    CHECK_STR(step.conflicts, "(10)");
    check_no_statements(&step);
    sl_undo_step_free(&step);

    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_SKIP, &step);
    CHECK(step.nconflicts == 1 && step.nq == 1 && step.restored == 2 && step.nlost == 0);
    check_query(&step, 0, pg_update_cols_checked, 5,
                (const char *[]){"{\"9\",\"11\"}", "{\"Ada\",\"Cyd\"}", "{\"a@x\",\"c@x\"}", "{\"909\",\"911\"}", "2"});
    sl_undo_step_free(&step);

    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_OVERWRITE, &step);
    CHECK(step.nconflicts == 1 && step.nq == 1 && step.restored == 3 && step.nlost == 0);
    check_query(&step, 0, pg_update_cols, 3,
                (const char *[]){"{\"9\",\"10\",\"11\"}", "{\"Ada\",\"Bob\",\"Cyd\"}", "{\"a@x\",\"b@x\",\"c@x\"}"});
    sl_undo_step_free(&step);

    /* the same rows read in another order: sorted and merged, the same rows restored */
    sl_result shuffled = result_of(3, 3, (const char *[]){"11", "333", "911", "9", "111", "909", "10", "-5", "910"});
    sl_undo_plan_chunk(&t, &snap, &shuffled, NULL, SL_CONFLICT_SKIP, &step);
    CHECK(step.nconflicts == 1 && step.nq == 1 && step.restored == 2);
    CHECK_STR(step.conflicts, "(10)");
    sl_undo_step_free(&step);
    result_free(&shuffled);

    sl_snap_free(&snap);
    result_free(&cur);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* snapshot(COL, ...): rows the job deleted cannot come back (counted in
 * nlost, which down warns about, not a conflict); rows it inserted stay as
 * they are (counted in nkept, which down warns about too: it only writes
 * columns back); the others are updated. */
static void test_plan_cols_lost(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    users_cols(&t, &ks);
    sl_snap snap;
    snap_init(&snap, 1, 2);
    snap_add(&snap, (const char *[]){"1"}, (const char *[]){"Ada", "a@x"}, 0, 0); /* deleted by the job */
    snap_add(&snap, (const char *[]){"2"}, NULL, 1, 5);                           /* inserted by the job */
    snap_add(&snap, (const char *[]){"3"}, (const char *[]){"Cyd", NULL}, 1, 7);  /* updated */
    sl_result cur = result_of(2, 3, (const char *[]){"2", "5", "902", "3", "7", "903"});
    sl_undo_step step;
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 0 && step.conflicts == NULL);
    CHECK(step.nlost == 1);
    CHECK(step.nkept == 1);
    CHECK(step.nq == 1 && step.restored == 1);
    check_query(&step, 0, pg_update_cols_checked, 5,
                (const char *[]){"{\"3\"}", "{\"Cyd\"}", "{NULL}", "{\"903\"}", "1"});
    sl_undo_step_free(&step);
    sl_snap_free(&snap);
    result_free(&cur);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

static const char pg_delete[] = "DELETE FROM \"public\".\"users\" AS _sl_row USING unnest($1::text[]) AS v(_k1) WHERE "
                                "(_sl_row.\"id\") = (v._k1::bigint)";
static const char pg_update_all[] =
    "UPDATE \"public\".\"users\" AS _sl_row SET (\"id\", \"full_name\", \"email\") = ROW((s.r).\"id\", "
    "(s.r).\"full_name\", (s.r).\"email\") FROM (SELECT u.x::\"public\".\"users\" AS r FROM unnest($1::text[]) AS "
    "u(x) OFFSET 0) s WHERE (_sl_row.\"id\") = ((s.r).\"id\")";
static const char pg_insert_all[] =
    "INSERT INTO \"public\".\"users\" (\"id\", \"full_name\", \"email\") OVERRIDING SYSTEM VALUE SELECT "
    "(s.r).\"id\", (s.r).\"full_name\", (s.r).\"email\" FROM (SELECT u.x::\"public\".\"users\" AS r FROM "
    "unnest($1::text[]) AS u(x) OFFSET 0) s";
static const char pg_delete_checked[] =
    "WITH w AS (DELETE FROM \"public\".\"users\" AS _sl_row USING unnest($1::text[], $2::text[]) AS v(_k1, _x) "
    "WHERE (_sl_row.\"id\") = (v._k1::bigint) AND _sl_row.xmin = v._x::xid RETURNING 1) SELECT 1 / (count(*) = "
    "$3::bigint)::int FROM w";
static const char pg_update_all_checked[] =
    "WITH w AS (UPDATE \"public\".\"users\" AS _sl_row SET (\"id\", \"full_name\", \"email\") = ROW((s.r).\"id\", "
    "(s.r).\"full_name\", (s.r).\"email\") FROM (SELECT u.x::\"public\".\"users\" AS r, u.g AS g FROM "
    "unnest($1::text[], $2::text[]) AS u(x, g) OFFSET 0) s WHERE (_sl_row.\"id\") = ((s.r).\"id\") AND _sl_row.xmin = "
    "s.g::xid RETURNING 1) SELECT 1 / (count(*) = $3::bigint)::int FROM w";
/* the rows the job deleted: put back unless someone inserted them again meanwhile */
static const char pg_insert_all_checked[] =
    "WITH w AS (INSERT INTO \"public\".\"users\" (\"id\", \"full_name\", \"email\") OVERRIDING SYSTEM VALUE SELECT "
    "(s.r).\"id\", (s.r).\"full_name\", (s.r).\"email\" FROM (SELECT u.x::\"public\".\"users\" AS r FROM "
    "unnest($1::text[]) AS u(x) OFFSET 0) s ON CONFLICT DO NOTHING RETURNING 1) SELECT 1 / (count(*) = "
    "$2::bigint)::int FROM w";

/* snapshot(*) on PostgreSQL: each row saved as its text. Deleted rows are
 * inserted back, inserted ones deleted, updated ones updated: in that
 * order, DELETE, UPDATE, INSERT, so freed keys come first. */
static void test_plan_pg_all(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    users_all(&t, &ks);
    sl_snap snap;
    snap_init(&snap, 1, 1);
    snap_add(&snap, (const char *[]){"6"}, (const char *[]){"(6,xyz,)"}, 0, 0);
    snap_add(&snap, (const char *[]){"5"}, (const char *[]){"(5,\"O'Brien, Pat\",)"}, 0, 0);
    snap_add(&snap, (const char *[]){"7"}, NULL, 1, 70);
    snap_add(&snap, (const char *[]){"8"}, (const char *[]){"(8,old,o@x)"}, 1, 80);
    sl_result cur = result_of(3, 3, (const char *[]){"8", "80", "908", "7", "70", "907", "9", "90", "909"});
    sl_undo_step step;
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 0 && step.nlost == 0);
    CHECK(step.nq == 3 && step.restored == 4);
    check_query(&step, 0, pg_delete_checked, 3, (const char *[]){"{\"7\"}", "{\"907\"}", "1"});
    check_query(&step, 1, pg_update_all_checked, 3, (const char *[]){"{\"(8,old,o@x)\"}", "{\"908\"}", "1"});
    check_query(&step, 2, pg_insert_all_checked, 2,
                (const char *[]){"{\"(5,\\\"O'Brien, Pat\\\",)\",\"(6,xyz,)\"}", "2"});
    check_values_not_in_sql(&step, &snap);
    sl_undo_step_free(&step);
    result_free(&cur);

    /* someone re-inserted 5 and 6 (5 as it was), deleted 7, changed 8 */
    cur = result_of(3, 3, (const char *[]){"5", "50", "905", "6", "60", "906", "8", "81", "918"});
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 4);
    CHECK_STR(step.conflicts, "(5), (6), (7), (8)");
    check_no_statements(&step);
    sl_undo_step_free(&step);
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_SKIP, &step);
    CHECK(step.nconflicts == 4);
    check_no_statements(&step);
    sl_undo_step_free(&step);
    /* overwrite: the re-inserted rows get their saved text back; 7 is gone already */
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_OVERWRITE, &step);
    CHECK(step.nconflicts == 4 && step.nlost == 0);
    CHECK(step.nq == 1 && step.restored == 3);
    check_query(&step, 0, pg_update_all, 1,
                (const char *[]){"{\"(5,\\\"O'Brien, Pat\\\",)\",\"(6,xyz,)\",\"(8,old,o@x)\"}"});
    sl_undo_step_free(&step);
    result_free(&cur);

    /* an inserted row someone changed: skip leaves it, overwrite deletes it */
    cur = result_of(3, 3, (const char *[]){"7", "71", "917", "8", "80", "908", "9", "90", "909"});
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_SKIP, &step);
    CHECK(step.nconflicts == 1);
    CHECK_STR(step.conflicts, "(7)");
    CHECK(step.nq == 2 && step.restored == 3);
    check_query(&step, 0, pg_update_all_checked, 3, (const char *[]){"{\"(8,old,o@x)\"}", "{\"908\"}", "1"});
    check_query(&step, 1, pg_insert_all_checked, 2,
                (const char *[]){"{\"(5,\\\"O'Brien, Pat\\\",)\",\"(6,xyz,)\"}", "2"});
    sl_undo_step_free(&step);
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_OVERWRITE, &step);
    CHECK(step.nconflicts == 1 && step.nq == 3 && step.restored == 4);
    check_query(&step, 0, pg_delete, 1, (const char *[]){"{\"7\"}"});
    sl_undo_step_free(&step);
    result_free(&cur);

    sl_snap_free(&snap);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* Trusting the record (no look at the rows first): one UPDATE writing each
 * row back only while its hash is the one the job left, checked to write
 * them all. Records of jobs that inserted or deleted rows, the down way and
 * SQLite are refused: down looks first for those. */
static void test_plan_trusting(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    users_cols(&t, &ks);
    char lo[] = "1", hi[] = "2";
    char *edges[] = {lo, hi};
    sl_snap snap;
    snap_init(&snap, 1, 2);
    snap_add(&snap, (const char *[]){"2"}, (const char *[]){"O'Brien'); DROP TABLE users; --", NULL}, 1, -222);
    snap_add(&snap, (const char *[]){"1"}, (const char *[]){"Ada", "a\"b\\c{}"}, 1, INT64_MIN);
    sl_undo_step step;
    CHECK(sl_undo_plan_trusting(&t, &snap, edges, &step) == 0);
    CHECK(step.nq == 1 && step.restored == 2 && step.nconflicts == 0);
    check_query(
        &step, 0,
        "WITH w AS (UPDATE \"public\".\"users\" AS _sl_row SET \"full_name\" = v._v1::text, \"email\" = "
        "v._v2::character varying(50) FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS v(_k1, "
        "_v1, _v2, _x) WHERE (_sl_row.\"id\") = (v._k1::bigint) AND hashtextextended(ROW(_sl_row.\"full_name\", "
        "_sl_row.\"email\")::text, 0) = v._x::bigint AND _sl_row.\"id\" BETWEEN $6::bigint AND "
        "$7::bigint RETURNING 1) SELECT 1 / (count(*) = $5::bigint)::int FROM w",
        7,
        (const char *[]){"{\"2\",\"1\"}", "{\"O'Brien'); DROP TABLE users; --\",\"Ada\"}", "{NULL,\"a\\\"b\\\\c{}\"}",
                         "{\"-222\",\"-9223372036854775808\"}", "2", "1", "2"});
    check_values_not_in_sql(&step, &snap);
    sl_undo_step_free(&step);
    /* a chunk that wrote no row: nothing to send but the COMMIT */
    sl_snap none;
    snap_init(&none, 1, 2);
    CHECK(sl_undo_plan_trusting(&t, &none, edges, &step) == 0);
    check_no_statements(&step);
    sl_snap_free(&none);
    /* a row the job inserted (no old values), or deleted (no hash after): look first */
    snap_add(&snap, (const char *[]){"3"}, NULL, 1, 333);
    CHECK(sl_undo_plan_trusting(&t, &snap, edges, &step) == -1);
    check_no_statements(&step);
    sl_snap_free(&snap);
    snap_init(&snap, 1, 2);
    snap_add(&snap, (const char *[]){"4"}, (const char *[]){"x", "y"}, 0, 0);
    CHECK(sl_undo_plan_trusting(&t, &snap, edges, &step) == -1);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);

    /* snapshot(*): the key is in the row's text; the hash is the whole row's */
    users_all(&t, &ks);
    snap_init(&snap, 1, 1);
    snap_add(&snap, (const char *[]){"8"}, (const char *[]){"(8,old,o@x)"}, 1, 80);
    CHECK(sl_undo_plan_trusting(&t, &snap, edges, &step) == 0);
    check_query(&step, 0,
                "WITH w AS (UPDATE \"public\".\"users\" AS _sl_row SET (\"id\", \"full_name\", \"email\") = "
                "ROW((s.r).\"id\", (s.r).\"full_name\", (s.r).\"email\") FROM (SELECT u.x::\"public\".\"users\" AS r, "
                "u.g AS g FROM unnest($1::text[], $2::text[]) AS u(x, g) OFFSET 0) s WHERE (_sl_row.\"id\") = "
                "((s.r).\"id\") AND hashtextextended(_sl_row::text, 0) = s.g::bigint AND _sl_row.\"id\" BETWEEN "
                "$4::bigint AND $5::bigint RETURNING 1) SELECT 1 / (count(*) = $3::bigint)::int FROM w",
                5, (const char *[]){"{\"(8,old,o@x)\"}", "{\"80\"}", "1", "1", "2"});
    sl_undo_step_free(&step);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);

    /* SQLite always looks first */
    lite_users(&ks);
    users_cols(&t, &ks);
    snap_init(&snap, 1, 2);
    snap_add(&snap, (const char *[]){"1"}, (const char *[]){"'Ada'", "NULL"}, 1, 5);
    CHECK(sl_undo_plan_trusting(&t, &snap, edges, &step) == -1);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* The down way: the planner only tells conflicts; the down section's
 * statements are the job's own. */
static void test_plan_down(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    target_of(&t, &ks, SL_UNDO_DOWN, 0, NULL, NULL);
    sl_snap snap;
    snap_init(&snap, 1, 0);
    snap_add(&snap, (const char *[]){"1"}, NULL, 1, 10);
    snap_add(&snap, (const char *[]){"2"}, NULL, 1, 20);
    snap_add(&snap, (const char *[]){"3"}, NULL, 1, 30);
    sl_result cur = result_of(2, 2, (const char *[]){"1", "10", "2", "21"});
    const sl_on_conflict modes[] = {SL_CONFLICT_STOP, SL_CONFLICT_SKIP, SL_CONFLICT_OVERWRITE};
    for (size_t m = 0; m < 3; m++) {
        sl_undo_step step;
        sl_undo_plan_chunk(&t, &snap, &cur, NULL, modes[m], &step);
        CHECK(step.nconflicts == 2 && step.nlost == 0);
        CHECK_STR(step.conflicts, "(2), (3)");
        check_no_statements(&step);
        sl_undo_step_free(&step);
    }
    result_free(&cur);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* A composite key: rows matched field by field whatever order they come
 * in, keys in the message and the UPDATE's arrays. */
static void test_plan_composite_key(void)
{
    sl_keyspec ks;
    keyspec_of(&ks, SL_DIALECT_PG, "\"app\".\"orders\"", 2, (const char *[]){"\"tenant\"", "\"code\""},
               (const char *[]){"integer", "text"});
    sl_undo_target t;
    target_of(&t, &ks, SL_UNDO_SNAPSHOT_COLS, 1, (const char *[]){"\"status\""}, (const char *[]){"text"});
    sl_snap snap;
    snap_init(&snap, 2, 1);
    snap_add(&snap, (const char *[]){"2", "b"}, (const char *[]){"new"}, 1, 1);
    snap_add(&snap, (const char *[]){"10", "a"}, (const char *[]){"paid"}, 1, 2);
    snap_add(&snap, (const char *[]){"2", "a"}, (const char *[]){NULL}, 1, 3);
    /* (2, a) and (1, 0a) would be one key if the fields ran together */
    sl_result cur = result_of(
        4, 4,
        (const char *[]){"2", "b", "1", "902", "1", "0a", "2", "910", "2", "a", "3", "920", "10", "a", "99", "930"});
    sl_undo_step step;
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_SKIP, &step);
    CHECK(step.nconflicts == 1);
    CHECK_STR(step.conflicts, "(10, a)");
    CHECK(step.nq == 1 && step.restored == 2);
    check_query(
        &step, 0,
        "WITH w AS (UPDATE \"app\".\"orders\" AS _sl_row SET \"status\" = v._v1::text FROM unnest($1::text[], "
        "$2::text[], $3::text[], $4::text[]) AS v(_k1, _k2, _v1, _x) WHERE (_sl_row.\"tenant\", _sl_row.\"code\") "
        "= (v._k1::integer, v._k2::text) AND _sl_row.xmin = v._x::xid RETURNING 1) SELECT 1 / (count(*) = "
        "$5::bigint)::int FROM w",
        5, (const char *[]){"{\"2\",\"2\"}", "{\"a\",\"b\"}", "{NULL,\"new\"}", "{\"920\",\"902\"}", "2"});
    check_values_not_in_sql(&step, &snap);
    sl_undo_step_free(&step);
    result_free(&cur);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* An empty record, and no rows now (cur NULL): nothing to do, or every
 * deleted row to insert. */
static void test_plan_empty(void)
{
    sl_keyspec ks;
    pg_users(&ks);
    sl_undo_target t;
    users_all(&t, &ks);
    sl_snap snap;
    snap_init(&snap, 1, 1);
    sl_result cur = result_of(1, 3, (const char *[]){"1", "10", "901"});
    sl_undo_step step;
    sl_undo_plan_chunk(&t, &snap, &cur, NULL, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 0 && step.conflicts == NULL && step.nlost == 0);
    check_no_statements(&step);
    sl_undo_step_free(&step);
    snap_add(&snap, (const char *[]){"4"}, (const char *[]){"(4,a,b)"}, 0, 0);
    sl_undo_plan_chunk(&t, &snap, NULL, NULL, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 0 && step.nq == 1 && step.restored == 1);
    check_query(&step, 0, pg_insert_all_checked, 2, (const char *[]){"{\"(4,a,b)\"}", "1"});
    sl_undo_step_free(&step);
    /* overwrite puts back whatever it finds: nothing checked, nothing counted */
    sl_undo_plan_chunk(&t, &snap, NULL, NULL, SL_CONFLICT_OVERWRITE, &step);
    CHECK(step.nconflicts == 0 && step.nq == 1 && step.restored == 1);
    check_query(&step, 0, pg_insert_all, 1, (const char *[]){"{\"(4,a,b)\"}"});
    sl_undo_step_free(&step);
    result_free(&cur);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* A SQLite value as it travels in the restore's JSON: its quote() literal in hex. */
static void add_hex(sl_buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        sl_buf_printf(b, "%02x", *p);
}

/* The JSON parameter of a SQLite restore: an array of rows of hex strings. malloc'd. */
static char *json_rows(size_t nrows, size_t ncols, const char *const *cells)
{
    sl_buf b = {0};
    sl_buf_addc(&b, '[');
    for (size_t r = 0; r < nrows; r++) {
        sl_buf_adds(&b, r ? ",[" : "[");
        for (size_t c = 0; c < ncols; c++) {
            sl_buf_adds(&b, c ? ",\"" : "\"");
            add_hex(&b, cells[r * ncols + c]);
            sl_buf_addc(&b, '"');
        }
        sl_buf_addc(&b, ']');
    }
    sl_buf_addc(&b, ']');
    return sl_buf_take(&b);
}

static void test_plan_lite_cols(void)
{
    sl_keyspec ks;
    lite_users(&ks);
    sl_undo_target t;
    users_cols(&t, &ks);
    sl_snap snap;
    snap_init(&snap, 1, 2);
    snap_add(&snap, (const char *[]){"2"}, (const char *[]){"'it''s; DROP'", "X'00ff'"}, 1, 6);
    snap_add(&snap, (const char *[]){"1"}, (const char *[]){"'Ada'", "NULL"}, 1, 5);
    snap_add(&snap, (const char *[]){"3"}, (const char *[]){"'Cyd'", "'c@x'"}, 1, 7); /* changed since */
    sl_result cur = result_of(3, 2, (const char *[]){"3", "70", "1", "5", "2", "6"});
    sl_undo_step step;
    sl_undo_plan_chunk(&t, &snap, &cur, (char *const[]){(char *)"1", (char *)"3"}, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 1);
    CHECK_STR(step.conflicts, "(3)");
    check_no_statements(&step);
    sl_undo_step_free(&step);
    sl_undo_plan_chunk(&t, &snap, &cur, (char *const[]){(char *)"1", (char *)"3"}, SL_CONFLICT_SKIP, &step);
    CHECK(step.nconflicts == 1 && step.nq == 1 && step.restored == 2);
    /* one JSON parameter: per row the key, then the saved columns, each literal in hex */
    char *json = json_rows(2, 3, (const char *[]){"1", "'Ada'", "NULL", "2", "'it''s; DROP'", "X'00ff'"});
    CHECK_HAS(json, "[[\"31\",\"2741646127\",\"4e554c4c\"],[\"32\",");
    check_query(&step, 0,
                "WITH v(_k1, _v1, _v2) AS MATERIALIZED (SELECT sluice_unquote(j.value ->> 0), sluice_unquote(j.value "
                "->> 1), sluice_unquote(j.value ->> 2) FROM json_each($1) AS j) UPDATE \"users\" AS _sl_row SET "
                "\"full_name\" = v._v1, \"email\" = v._v2 FROM v WHERE _sl_row.\"id\" = v._k1",
                1, (const char *[]){json});
    check_values_not_in_sql(&step, &snap);
    free(json);
    sl_undo_step_free(&step);
    result_free(&cur);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

/* snapshot(*) on SQLite: one literal per column, the key's among them. The
 * DELETE also takes the chunk's edges, after the JSON. */
static void test_plan_lite_all(void)
{
    sl_keyspec ks;
    lite_users(&ks);
    sl_undo_target t;
    users_all(&t, &ks);
    sl_snap snap;
    snap_init(&snap, 1, 3);
    snap_add(&snap, (const char *[]){"5"}, (const char *[]){"5", "'Eve'", "NULL"}, 0, 0); /* deleted by the job */
    snap_add(&snap, (const char *[]){"7"}, NULL, 1, 70);                                  /* inserted by it */
    snap_add(&snap, (const char *[]){"8"}, (const char *[]){"8", "'old'", "'o@x'"}, 1, 80);
    sl_result cur = result_of(2, 2, (const char *[]){"7", "70", "8", "80"});
    sl_undo_step step;
    sl_undo_plan_chunk(&t, &snap, &cur, (char *const[]){(char *)"4", (char *)"9"}, SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 0 && step.nlost == 0);
    CHECK(step.nq == 3 && step.restored == 3);
    char *del = json_rows(1, 1, (const char *[]){"7"});
    char *upd = json_rows(1, 4, (const char *[]){"8", "8", "'old'", "'o@x'"});
    char *ins = json_rows(1, 3, (const char *[]){"5", "'Eve'", "NULL"});
    check_query(&step, 0,
                "DELETE FROM \"users\" WHERE \"id\" BETWEEN $2 AND $3 AND (\"id\") IN (SELECT sluice_unquote(j.value "
                "->> 0) FROM json_each($1) AS j)",
                3, (const char *[]){del, "4", "9"});
    /* the key is not set: it is what finds the row */
    check_query(&step, 1,
                "WITH v(_k1, _v1, _v2, _v3) AS MATERIALIZED (SELECT sluice_unquote(j.value ->> 0), "
                "sluice_unquote(j.value ->> 1), sluice_unquote(j.value ->> 2), sluice_unquote(j.value ->> 3) FROM "
                "json_each($1) AS j) UPDATE \"users\" AS _sl_row SET \"full_name\" = v._v2, \"email\" = v._v3 FROM v "
                "WHERE _sl_row.\"id\" = v._k1",
                1, (const char *[]){upd});
    check_query(&step, 2,
                "INSERT INTO \"users\" (\"id\", \"full_name\", \"email\") SELECT sluice_unquote(j.value ->> 0), "
                "sluice_unquote(j.value ->> 1), sluice_unquote(j.value ->> 2) FROM json_each($1) AS j",
                1, (const char *[]){ins});
    check_values_not_in_sql(&step, &snap);
    free(del);
    free(upd);
    free(ins);
    sl_undo_step_free(&step);
    result_free(&cur);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);

    /* a composite key: its edges are lo's columns, then hi's */
    keyspec_of(&ks, SL_DIALECT_SQLITE, "\"t\"", 2, (const char *[]){"\"a\"", "\"b\""}, (const char *[]){"", ""});
    target_of(&t, &ks, SL_UNDO_SNAPSHOT_ALL, 3, (const char *[]){"\"a\"", "\"b\"", "\"c\""},
              (const char *[]){"", "", ""});
    snap_init(&snap, 2, 3);
    snap_add(&snap, (const char *[]){"1", "'x'"}, NULL, 1, 1);
    cur = result_of(1, 3, (const char *[]){"1", "'x'", "1"});
    sl_undo_plan_chunk(&t, &snap, &cur, (char *const[]){(char *)"0", (char *)"'a'", (char *)"9", (char *)"'z'"},
                       SL_CONFLICT_STOP, &step);
    del = json_rows(1, 2, (const char *[]){"1", "'x'"});
    check_query(&step, 0,
                "DELETE FROM \"t\" WHERE (\"a\", \"b\") BETWEEN ($2, $3) AND ($4, $5) AND (\"a\", \"b\") IN (SELECT "
                "sluice_unquote(j.value ->> 0), sluice_unquote(j.value ->> 1) FROM json_each($1) AS j)",
                5, (const char *[]){del, "0", "'a'", "9", "'z'"});
    CHECK(step.nq == 1 && step.restored == 1);
    free(del);
    sl_undo_step_free(&step);
    result_free(&cur);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);

    /* every column in the key: an unchanged row has nothing to set, a deleted one is inserted */
    target_of(&t, &ks, SL_UNDO_SNAPSHOT_ALL, 2, (const char *[]){"\"a\"", "\"b\""}, (const char *[]){"", ""});
    snap_init(&snap, 2, 2);
    snap_add(&snap, (const char *[]){"1", "'x'"}, (const char *[]){"1", "'x'"}, 1, 1);
    snap_add(&snap, (const char *[]){"2", "'y'"}, (const char *[]){"2", "'y'"}, 0, 0);
    cur = result_of(1, 3, (const char *[]){"1", "'x'", "1"});
    sl_undo_plan_chunk(&t, &snap, &cur, (char *const[]){(char *)"0", (char *)"'a'", (char *)"9", (char *)"'z'"},
                       SL_CONFLICT_STOP, &step);
    CHECK(step.nconflicts == 0 && step.nq == 1 && step.restored == 1);
    ins = json_rows(1, 2, (const char *[]){"2", "'y'"});
    check_query(&step, 0,
                "INSERT INTO \"t\" (\"a\", \"b\") SELECT sluice_unquote(j.value ->> 0), sluice_unquote(j.value ->> 1) "
                "FROM json_each($1) AS j",
                1, (const char *[]){ins});
    free(ins);
    sl_undo_step_free(&step);
    result_free(&cur);
    sl_snap_free(&snap);
    sl_undo_target_free(&t);
    sl_keyspec_free(&ks);
}

int main(void)
{
    RUN(test_snap_codec);
    RUN(test_snap_empty);
    RUN(test_snap_names);
    RUN(test_snap_col_hash);
    RUN(test_snap_null_and_empty);
    RUN(test_snap_binary_utf8_long);
    RUN(test_snap_many_rows);
    RUN(test_snap_composite_key);
    RUN(test_snap_every_cut_refused);
    RUN(test_snap_corrupted);
    RUN(test_snap_key_cmp);
    RUN(test_record_pg_cols);
    RUN(test_record_pg_all_and_down);
    RUN(test_record_lite);
    RUN(test_record_refused);
    RUN(test_plan_pg_cols);
    RUN(test_plan_conflicts);
    RUN(test_plan_paired);
    RUN(test_plan_cols_lost);
    RUN(test_plan_pg_all);
    RUN(test_plan_trusting);
    RUN(test_plan_down);
    RUN(test_plan_composite_key);
    RUN(test_plan_empty);
    RUN(test_plan_lite_cols);
    RUN(test_plan_lite_all);
    return CHECK_DONE();
}
