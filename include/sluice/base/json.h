/* json.h: JSON through one escaping writer and reader (jansson): key arrays, and strings that may not be UTF-8. */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <jansson.h>

#include "sluice/base/util.h"

/* A JSON string of s, or null for NULL. Bytes that are not UTF-8 (a SQLite
 * value may hold any) become U+FFFD: JSON can only hold Unicode. */
json_t *sl_json_str(const char *s);

/* ["a", "b"]: n strings (NULL ones as null) as a JSON array's text. malloc'd. */
char *sl_json_strings(char *const *v, size_t n);

/* Parse text as a JSON array of strings (a key as the journal keeps it): the
 * array, or NULL when text is NULL or anything else (a damaged or crafted
 * file); the caller json_decref()s it. Bytes that are not UTF-8 (a SQLite
 * text key may hold any) come back as U+FFFD: for showing, not for reading
 * a position back. */
json_t *sl_json_key(const char *text);

#endif
