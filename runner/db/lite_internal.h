/* lite_internal.h: what lite.c, lite_funcs.c and lite_ahead.c share. */
#ifndef SLUICE_LITE_INTERNAL_H
#define SLUICE_LITE_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* A lock wait for sqlite3_busy_timeout, which takes an int: a longer wait
 * must not wrap to a negative (no wait at all). */
int lite_busy_ms(int64_t ms);

/* FNV-1a: len bytes of data into *h (start from 0xcbf29ce484222325). */
void lite_hash_bytes(uint64_t *h, const void *data, size_t len);

/* Define sluice_hash(v, ...) (FNV-1a over each value's type and bytes: the
 * hash undo records keep of a row) and sluice_unquote(hex) (a value an undo
 * record saved as a quote() literal) on db. */
void lite_add_functions(sqlite3 *db);

#endif
