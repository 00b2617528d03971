/* snapshot.h: the form of an undo record: per committed chunk, its rows before and after it ran.
 *
 * One record per chunk (a row of the target's sluice_undo, undo.h), holding
 * one entry per table row in a compact length-prefixed binary form: the row's key, the values saved
 * before the up statements ran (snapshot(COL, ...): those columns' text;
 * snapshot(*): the whole row's text), and a 64-bit hash of the row (of the
 * saved columns for snapshot(COL, ...)) as the job left it, which tells
 * `down` whether someone changed it since. On SQLite keys and values are
 * quote() literals and snapshot(*) saves one per column. Rows the chunk did
 * not write are left out. A snapshot(*) record also names the table's
 * columns its rows were saved from, in their order (records of format 1,
 * written before, have none): `down` puts values back only into the
 * columns they came from. The
 * record is written in the chunk's own transaction, so a committed chunk
 * always has one and a chunk that rolled back has none. */
#ifndef SLUICE_SNAPSHOT_H
#define SLUICE_SNAPSHOT_H

#include "sluice/base/util.h"

/* One table row of a chunk. Strings are owned by the sl_snap. */
typedef struct sl_snap_row {
    char **key;        /* nkey strings, the key columns' text (SQLite: quote() literals) */
    int has_pre;       /* the row existed before the chunk: vals hold it */
    int has_post;      /* the row existed after the chunk: post_hash is its hash */
    int64_t post_hash; /* the row's hash after the up statements (sl_snap.col_hash says which; SQLite: sluice_hash) */
    char **vals;       /* nvals strings (NULL = SQL NULL) when has_pre, else NULL */
} sl_snap_row;

typedef struct sl_snap {
    int64_t chunk_no;
    char kind[16]; /* "down", "cols" or "all" */
    size_t nkey, nvals;
    size_t nrows;
    sl_snap_row *rows; /* in the order they were captured (the key's index order) */
    /* snapshot(*): the table's columns when the rows were saved, in the
     * rows' order, generated ones included (SQLite saves no value for
     * those); ncols 0 in older records and for other kinds */
    size_t ncols;
    char **cols;        /* quoted names, as sl_undo_target's field_cols */
    int *col_generated; /* 1 for a generated column */
    /* PostgreSQL records of format 3 (4 for snapshot(*), with names): each
     * column's text hashed on its own (sl_undo_target.col_hash); 0:
     * hashtextextended() of the row's text, or of ROW(COL, ...)'s */
    int col_hash;
} sl_snap;

void sl_snap_free(sl_snap *snap);

/* Order of keys inside a record: field by field, bytewise. Any total order
 * works as long as capture and `down` use the same one. */
int sl_snap_key_cmp(char *const *a, char *const *b, size_t nkey);

/* Binary form of snap's rows (appended to out), and back. decode fails (-1)
 * on a truncated or malformed blob. */
void sl_snap_encode(const sl_snap *snap, sl_buf *out);
int sl_snap_decode(const void *data, size_t len, sl_snap *out) SL_MUSTCHECK;

#endif
