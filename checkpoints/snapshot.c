/* snapshot.c: undo records (rows before and after each chunk) kept in the checkpoint file, and their binary form. */
#include "sluice/snapshot.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Version byte of the blob, so a later layout can tell old records apart. */
#define SNAP_FORMAT 1

enum { FLAG_PRE = 1, FLAG_POST = 2 };

static const char create_sql[] = "CREATE TABLE IF NOT EXISTS undo ("
                                 " chunk_no INTEGER PRIMARY KEY, kind TEXT NOT NULL, nrows INTEGER NOT NULL,"
                                 " data BLOB NOT NULL)";

/* ---- the codec ---- */

static void put_varint(sl_buf *b, uint64_t v)
{
    char tmp[10];
    size_t n = 0;
    do {
        tmp[n++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    sl_buf_add(b, tmp, n);
}

/* A field: 0 for NULL, else length + 1 and the bytes. */
static void put_field(sl_buf *b, const char *s)
{
    if (!s) {
        put_varint(b, 0);
        return;
    }
    size_t len = strlen(s);
    put_varint(b, (uint64_t)len + 1);
    sl_buf_add(b, s, len);
}

void sl_snap_encode(const sl_snap *snap, sl_buf *out)
{
    sl_buf_addc(out, SNAP_FORMAT);
    put_varint(out, snap->nkey);
    put_varint(out, snap->nvals);
    put_varint(out, snap->nrows);
    for (size_t r = 0; r < snap->nrows; r++) {
        const sl_snap_row *row = &snap->rows[r];
        sl_buf_addc(out, (char)((row->has_pre ? FLAG_PRE : 0) | (row->has_post ? FLAG_POST : 0)));
        for (size_t k = 0; k < snap->nkey; k++)
            put_field(out, row->key[k]);
        if (row->has_post) {
            char h[8];
            uint64_t v = (uint64_t)row->post_hash;
            for (int i = 0; i < 8; i++)
                h[i] = (char)(v >> (8 * i));
            sl_buf_add(out, h, 8);
        }
        for (size_t i = 0; row->has_pre && i < snap->nvals; i++)
            put_field(out, row->vals[i]);
    }
}

typedef struct reader {
    const unsigned char *p, *end;
    int bad;
} reader;

/* Every number has one spelling, the encoder's: no superfluous 0x80 0x00
 * continuation (a record must encode back to its very bytes), nothing past
 * 64 bits. */
static uint64_t get_varint(reader *rd)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (rd->p >= rd->end) {
            rd->bad = 1;
            return 0;
        }
        unsigned char c = *rd->p++;
        if ((shift > 0 && c == 0) || (shift == 63 && c > 1)) {
            rd->bad = 1;
            return 0;
        }
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
    }
    rd->bad = 1;
    return 0;
}

/* A field is text: a NUL inside it would cut the value short when it is put
 * back (the encoder never writes one). */
static char *get_field(reader *rd)
{
    uint64_t tag = get_varint(rd);
    if (rd->bad || tag == 0)
        return NULL;
    if (tag - 1 > (uint64_t)(rd->end - rd->p) || memchr(rd->p, '\0', (size_t)(tag - 1))) {
        rd->bad = 1;
        return NULL;
    }
    char *s = sl_strndup((const char *)rd->p, (size_t)(tag - 1));
    rd->p += tag - 1;
    return s;
}

static void read_row(reader *rd, const sl_snap *snap, sl_snap_row *row)
{
    if (rd->p >= rd->end || (*rd->p & ~(FLAG_PRE | FLAG_POST))) {
        rd->bad = 1; /* cut short, or flags no encoder wrote */
        return;
    }
    unsigned flags = *rd->p++;
    row->has_pre = (flags & FLAG_PRE) != 0;
    row->has_post = (flags & FLAG_POST) != 0;
    row->key = sl_calloc(snap->nkey + 1, sizeof(char *));
    for (size_t k = 0; k < snap->nkey && !rd->bad; k++)
        if (!(row->key[k] = get_field(rd)))
            rd->bad = 1; /* keys are never NULL */
    if (row->has_post && !rd->bad) {
        if (rd->end - rd->p < 8) {
            rd->bad = 1;
            return;
        }
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v |= (uint64_t)rd->p[i] << (8 * i);
        row->post_hash = (int64_t)v;
        rd->p += 8;
    }
    if (row->has_pre && !rd->bad) {
        row->vals = sl_calloc(snap->nvals + 1, sizeof(char *));
        for (size_t i = 0; i < snap->nvals && !rd->bad; i++)
            row->vals[i] = get_field(rd);
    }
}

int sl_snap_decode(const void *data, size_t len, sl_snap *out)
{
    int64_t chunk_no = out->chunk_no;
    char kind[sizeof out->kind];
    memcpy(kind, out->kind, sizeof kind);
    memset(out, 0, sizeof *out);
    out->chunk_no = chunk_no;
    memcpy(out->kind, kind, sizeof kind);
    if (!data || len < 1 || *(const unsigned char *)data != SNAP_FORMAT)
        return -1;
    reader rd = {(const unsigned char *)data + 1, (const unsigned char *)data + len, 0};
    uint64_t nkey = get_varint(&rd), nvals = get_varint(&rd), nrows = get_varint(&rd);
    /* every row takes a flag byte and a byte per key at least: a count
     * beyond that is corruption (and would allocate for nothing) */
    if (rd.bad || nkey == 0 || nkey > 64 || nvals > 4096 || nrows > (uint64_t)(rd.end - rd.p) / (1 + nkey))
        return -1;
    out->nkey = (size_t)nkey;
    out->nvals = (size_t)nvals;
    out->rows = sl_calloc((size_t)nrows + 1, sizeof(sl_snap_row));
    for (; out->nrows < nrows && !rd.bad; out->nrows++)
        read_row(&rd, out, &out->rows[out->nrows]);
    if (rd.bad || rd.p != rd.end) {
        sl_snap_free(out);
        return -1;
    }
    return 0;
}

void sl_snap_free(sl_snap *snap)
{
    for (size_t r = 0; r < snap->nrows; r++) {
        sl_snap_row *row = &snap->rows[r];
        for (size_t k = 0; row->key && k < snap->nkey; k++)
            free(row->key[k]);
        for (size_t i = 0; row->vals && i < snap->nvals; i++)
            free(row->vals[i]);
        free(row->key);
        free(row->vals);
    }
    free(snap->rows);
    memset(snap, 0, sizeof *snap);
}

int sl_snap_key_cmp(char *const *a, char *const *b, size_t nkey)
{
    for (size_t k = 0; k < nkey; k++) {
        int c = strcmp(a[k], b[k]);
        if (c)
            return c;
    }
    return 0;
}

/* ---- storage ---- */

static int fail(sl_ckpt *ckpt, const char *what, sl_err *err)
{
    sl_err_set(err, "checkpoint file %s: %s: %s", sl_ckpt_file(ckpt), what, sqlite3_errmsg(sl_ckpt_sqlite(ckpt)));
    return -1;
}

/* The undo table is created on first use, so files written before it exist
 * keep working (no schema version bump needed). */
static int ensure_table(sl_ckpt *ckpt, sl_err *err)
{
    if (sqlite3_exec(sl_ckpt_sqlite(ckpt), create_sql, NULL, NULL, NULL) != SQLITE_OK)
        return fail(ckpt, "cannot create the undo table", err);
    return 0;
}

/* Prepare sql; a missing undo table (a file that never saved a snapshot)
 * gives *st = NULL and 0. */
static int prepare(sl_ckpt *ckpt, const char *sql, sqlite3_stmt **st, sl_err *err)
{
    *st = NULL;
    sqlite3 *db = sl_ckpt_sqlite(ckpt);
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) == SQLITE_OK)
        return 0;
    if (strstr(sqlite3_errmsg(db), "no such table"))
        return 0;
    return fail(ckpt, "cannot read the undo records", err);
}

int sl_snap_put(sl_ckpt *ckpt, const sl_snap *snap, sl_err *err)
{
    if (ensure_table(ckpt, err) != 0)
        return -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sl_ckpt_sqlite(ckpt), "INSERT OR REPLACE INTO undo VALUES (?1, ?2, ?3, ?4)", -1, &st,
                           NULL) != SQLITE_OK)
        return fail(ckpt, "cannot save a snapshot", err);
    sl_buf blob = {0};
    sl_snap_encode(snap, &blob);
    sqlite3_bind_int64(st, 1, snap->chunk_no);
    sqlite3_bind_text(st, 2, snap->kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (int64_t)snap->nrows);
    sqlite3_bind_blob(st, 4, blob.data, (int)blob.len, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail(ckpt, "cannot save a snapshot", err);
    sqlite3_finalize(st);
    sl_buf_free(&blob);
    if (rc != 0)
        sl_err_append(err, "hint: the chunk was rolled back; free disk space and run `sluice up` again");
    return rc;
}

int sl_snap_get(sl_ckpt *ckpt, int64_t chunk_no, sl_snap *out, int *found, sl_err *err)
{
    memset(out, 0, sizeof *out);
    *found = 0;
    sqlite3_stmt *st;
    if (prepare(ckpt, "SELECT kind, data FROM undo WHERE chunk_no = ?1", &st, err) != 0)
        return -1;
    if (!st)
        return 0;
    sqlite3_bind_int64(st, 1, chunk_no);
    int rc = sqlite3_step(st), res = 0;
    if (rc == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 0);
        snprintf(out->kind, sizeof out->kind, "%s", kind ? kind : "");
        out->chunk_no = chunk_no;
        const void *data = sqlite3_column_blob(st, 1);
        if (sl_snap_decode(data, (size_t)sqlite3_column_bytes(st, 1), out) != 0) {
            sl_err_set(err, "checkpoint file %s: the undo record of chunk %lld is corrupt", sl_ckpt_file(ckpt),
                       (long long)chunk_no);
            res = -1;
        } else {
            *found = 1;
        }
    } else if (rc != SQLITE_DONE) {
        res = fail(ckpt, "cannot read the undo records", err);
    }
    sqlite3_finalize(st);
    return res;
}

int sl_snap_kind(sl_ckpt *ckpt, int64_t chunk_no, char kind[16], sl_err *err)
{
    kind[0] = '\0';
    sqlite3_stmt *st;
    if (prepare(ckpt, "SELECT kind FROM undo WHERE chunk_no = ?1", &st, err) != 0)
        return -1;
    if (!st)
        return 0;
    sqlite3_bind_int64(st, 1, chunk_no);
    int rc = sqlite3_step(st), res = 0;
    if (rc == SQLITE_ROW)
        snprintf(kind, 16, "%s", sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "");
    else if (rc != SQLITE_DONE)
        res = fail(ckpt, "cannot read the undo records", err);
    sqlite3_finalize(st);
    return res;
}

int sl_snap_drop_from(sl_ckpt *ckpt, int64_t first, sl_err *err)
{
    sqlite3_stmt *st;
    if (prepare(ckpt, "DELETE FROM undo WHERE chunk_no >= ?1", &st, err) != 0)
        return -1;
    if (!st)
        return 0;
    sqlite3_bind_int64(st, 1, first);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail(ckpt, "cannot drop undo records", err);
    sqlite3_finalize(st);
    return rc;
}

int sl_snap_drop_uncommitted(sl_ckpt *ckpt, sl_err *err)
{
    sqlite3_stmt *st;
    if (prepare(ckpt, "DELETE FROM undo WHERE chunk_no NOT IN (SELECT chunk_no FROM chunks)", &st, err) != 0)
        return -1;
    if (!st)
        return 0;
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail(ckpt, "cannot drop undo records", err);
    sqlite3_finalize(st);
    return rc;
}

int sl_snap_usage(sl_ckpt *ckpt, int64_t *records, int64_t *bytes, sl_err *err)
{
    *records = *bytes = 0;
    sqlite3_stmt *st;
    if (prepare(ckpt, "SELECT count(*), coalesce(sum(length(data)), 0) FROM undo", &st, err) != 0)
        return -1;
    if (!st)
        return 0;
    int rc = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *records = sqlite3_column_int64(st, 0);
        *bytes = sqlite3_column_int64(st, 1);
    } else {
        rc = fail(ckpt, "cannot read the undo records", err);
    }
    sqlite3_finalize(st);
    return rc;
}
