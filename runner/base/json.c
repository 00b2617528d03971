/* json.c: JSON through jansson: strings made valid UTF-8, key arrays written and read back. */
#include "sluice/base/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the UTF-8 sequence at p (1..4), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p)
{
    size_t n = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3 : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 2 && p[0] < 0xc2)
        return 0; /* overlong */
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* s with each byte that starts no UTF-8 sequence as U+FFFD, malloc'd. */
static char *mended(const char *s)
{
    sl_buf b = {0};
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_len(p);
        if (n == 0) {
            sl_buf_adds(&b, "\xef\xbf\xbd");
            p++;
            continue;
        }
        sl_buf_add(&b, (const char *)p, n);
        p += n;
    }
    return sl_buf_take(&b);
}

json_t *sl_json_str(const char *s)
{
    if (!s)
        return json_null();
    json_t *v = json_string(s);
    if (v)
        return v;
    char *m = mended(s); /* not UTF-8 (or over-long forms jansson refuses): mend it */
    v = json_string(m);
    free(m);
    return v ? v : json_string("\xef\xbf\xbd");
}

char *sl_json_strings(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, sl_json_str(v[i]));
    char *text = json_dumps(a, 0);
    json_decref(a);
    char *out = sl_strdup(text ? text : "[]");
    free(text);
    return out;
}

json_t *sl_json_key(const char *text)
{
    if (!text)
        return NULL;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (!v) { /* a SQLite text key need not be UTF-8: shown with U+FFFD, not as no key at all */
        char *m = mended(text);
        v = json_loads(m, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        free(m);
    }
    if (!json_is_array(v)) {
        json_decref(v);
        return NULL;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e) && !json_is_null(e)) {
            json_decref(v);
            return NULL;
        }
    }
    return v;
}
