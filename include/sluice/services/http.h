/* http.h: the one HTTP request sluice reads (a metrics scrape), parsed within fixed bounds.
 *
 * Only what a scrape needs: a request line, header lines, a blank line.
 * Every complete line is checked as soon as it arrives, so garbage is
 * refused at its first line; a request never takes more than
 * SL_HTTP_MAX_REQUEST bytes. */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <stddef.h>

#include "sluice/base/util.h"

#define SL_HTTP_MAX_REQUEST 8192 /* request line, headers and the blank line */
#define SL_HTTP_MAX_LINE    2048 /* the request line */
#define SL_HTTP_MAX_TARGET  1024 /* the path and query */
#define SL_HTTP_MAX_HEADERS 64

typedef struct sl_http_request {
    char method[17];                   /* "GET", "HEAD", any other upper-case token */
    char path[SL_HTTP_MAX_TARGET + 1]; /* the target up to '?' */
    int minor;                         /* HTTP/1.minor: 0 or 1 */
    size_t length;                     /* bytes the request took, blank line included */
} sl_http_request;

enum {
    SL_HTTP_COMPLETE = 0, /* *req is filled */
    SL_HTTP_PARTIAL = 1,  /* nothing wrong so far: more bytes needed */
};

/* Parse the request at the start of buf[0..len). SL_HTTP_COMPLETE,
 * SL_HTTP_PARTIAL, or the HTTP status to answer with: 400 (malformed: bad
 * characters, a bare CR, a folded header, HTTP/1.1 without exactly one
 * Host), 414 (a target over SL_HTTP_MAX_TARGET bytes or a request line over
 * SL_HTTP_MAX_LINE), 431 (headers past SL_HTTP_MAX_REQUEST bytes or
 * SL_HTTP_MAX_HEADERS lines), 505 (a version other than HTTP/1.0 and 1.1).
 * Lines end in CRLF or LF. A prefix of a valid request is always PARTIAL. */
int sl_http_parse(const char *buf, size_t len, sl_http_request *req) SL_MUSTCHECK;

/* "Bad Request", ...: the reason phrase of a status sluice answers with. */
const char *sl_http_reason(int status);

#endif
