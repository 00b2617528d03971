/* pg_internal.h: what pg.c takes from pg_conninfo.c: libpq's messages, made printable. */
#ifndef SLUICE_PG_INTERNAL_H
#define SLUICE_PG_INTERNAL_H

#include "sluice/db/pg.h"

/* Fold libpq's multi-line messages ("...failed: Connection refused\n\tIs the
 * server running...") into one line, in place; returns s. */
char *pg_oneline(char *s);

/* libpq's message about pg's connection on one line, its secrets scrubbed
 * (fallback when nothing is left); malloc'd. */
char *pg_safe_line(const sl_pg *pg, const char *message, const char *fallback);

#endif
