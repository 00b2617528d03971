/* text.c: which bytes a job file may hold: UTF-8 text with LF or CRLF line ends, no NUL or other control bytes. */
#include "sluice/jobs/job.h"

#include <stdio.h>
#include <string.h>

#define ICONV_HINT "convert it, e.g. iconv -f %s -t UTF-8 FILE > NEW, and put NEW in its place"

/* Where the byte being checked is, for messages. */
typedef struct text_pos {
    const char *path;
    int line;
    int column; /* in characters, from 1 */
} text_pos;

static int refuse_utf16(const text_pos *at, const char *how, sl_err *err)
{
    sl_err_set(err, "%s:%d: the file is UTF-16 (%s), but job files are UTF-8 text (hint: " ICONV_HINT ")", at->path,
               at->line, how, "UTF-16");
    return -1;
}

static int refuse_nul(const text_pos *at, sl_err *err)
{
    sl_err_set(err,
               "%s:%d: NUL byte at column %d: a job file is text, and nothing after a NUL would reach the "
               "database (hint: remove it)",
               at->path, at->line, at->column);
    return -1;
}

static int refuse_control(const text_pos *at, uint32_t code, sl_err *err)
{
    if (code == '\r') {
        sl_err_set(err,
                   "%s:%d: carriage return without a line feed at column %d (hint: lines end in LF or CRLF; "
                   "convert old Mac line ends, e.g. with tr '\\r' '\\n')",
                   at->path, at->line, at->column);
        return -1;
    }
    sl_err_set(err,
               "%s:%d: control character U+%04X at column %d: a job file is text (hint: remove it; in a string "
               "write chr(%u) instead)",
               at->path, at->line, (unsigned)code, at->column, (unsigned)code);
    return -1;
}

static int refuse_invalid(const text_pos *at, unsigned char byte, sl_err *err)
{
    sl_err_set(err, "%s:%d: invalid UTF-8 (byte 0x%02X at column %d) (hint: job files are UTF-8 text; " ICONV_HINT ")",
               at->path, at->line, byte, at->column, "LATIN1");
    return -1;
}

/* Tab and form feed are blanks; CR only as the first half of a CRLF line end. */
static int is_refused_control(uint32_t code, const unsigned char *next, const unsigned char *end)
{
    if (code == '\t' || code == '\f')
        return 0;
    if (code == '\r')
        return next >= end || *next != '\n';
    return code < 0x20 || (code >= 0x7F && code <= 0x9F);
}

/* UTF-16 without a byte order mark: ASCII text then has a NUL in every other
 * byte, starting with the first (big-endian) or the second (little-endian). */
static int looks_utf16(const unsigned char *s, size_t len)
{
    return len >= 2 && (s[0] == 0) != (s[1] == 0);
}

int sl_job_check_text(const char *path, const char *text, size_t len, sl_err *err)
{
    const unsigned char *s = (const unsigned char *)text, *end = s + len;
    text_pos at = {path, 1, 1};
    if (len >= 2 && ((s[0] == 0xFF && s[1] == 0xFE) || (s[0] == 0xFE && s[1] == 0xFF))) {
        char how[64];
        snprintf(how, sizeof how, "it starts with the byte order mark %02X %02X", s[0], s[1]);
        return refuse_utf16(&at, how, err);
    }
    if (len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3; /* UTF-8's byte order mark: allowed at the start, not part of the text */
    while (s < end) {
        uint32_t code;
        size_t n = sl_utf8_decode((const char *)s, (size_t)(end - s), &code);
        if (n == 0)
            return refuse_invalid(&at, *s, err);
        if (code == 0)
            return looks_utf16((const unsigned char *)text, len)
                       ? refuse_utf16(&at, "it has a NUL in every other byte", err)
                       : refuse_nul(&at, err);
        if (code == '\n') {
            at.line++;
            at.column = 1;
            s++;
            continue;
        }
        if (is_refused_control(code, s + n, end))
            return refuse_control(&at, code, err);
        s += n;
        at.column++;
    }
    return 0;
}
