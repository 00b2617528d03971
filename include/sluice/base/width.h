/* width.h: the columns UTF-8 text takes on a terminal (for tables and the progress line). */
#ifndef SLUICE_WIDTH_H
#define SLUICE_WIDTH_H

#include <stddef.h>

/* Columns s[0..len) takes: 2 for East Asian wide and fullwidth characters
 * and emoji, 0 for combining marks and zero-width characters, 1 for any
 * other character (a byte that is not UTF-8 too). Needs no locale. */
size_t sl_width_of(const char *s, size_t len);
/* Bytes of the longest start of s[0..len) that takes at most cols columns,
 * cut between characters. */
size_t sl_width_prefix(const char *s, size_t len, size_t cols);

#endif
