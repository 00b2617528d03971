/* snapshot.c: the binary form of an undo record (rows before and after a chunk), kept in the target's sluice_undo. */
#include "sluice/checkpoints/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Version byte of the blob, so a later layout can tell old records apart. */
#define SNAP_FORMAT 1

enum { FLAG_PRE = 1, FLAG_POST = 2 };

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
