/* http.c: parse one HTTP/1.x request head within fixed bounds (RFC 9112), for the metrics endpoint. */
#include "sluice/services/http.h"

#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_vchar(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e;
}

/* A header value's bytes: visible characters, blanks and obs-text. */
static int is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* What is there of a line with no LF yet must not already be wrong: a
 * control character (a CR only as its last byte), or a header line that
 * starts with a blank (obs-fold). */
static int check_partial(const char *s, size_t n, int request_line)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' && i + 1 == n)
            break;
        if (request_line ? !(is_vchar(c) || c == ' ') : !is_field_char(c))
            return 400;
    }
    if (!request_line && n > 0 && (s[0] == ' ' || s[0] == '\t'))
        return 400;
    if (request_line && n > 0 && !(s[0] >= 'A' && s[0] <= 'Z'))
        return 400;
    return 0;
}

/* The path of an absolute-form target, which a server must accept (RFC
 * 9112 3.2.2): http://host:port/path?query, an empty path read as "/".
 * 0, or -1 when the target is not one. */
static int absolute_path(const char *target, size_t len, const char **path, size_t *plen)
{
    size_t scheme = len > 7 && strncasecmp(target, "http://", 7) == 0    ? 7
                    : len > 8 && strncasecmp(target, "https://", 8) == 0 ? 8
                                                                         : 0;
    if (scheme == 0)
        return -1;
    const char *end = target + len, *p = target + scheme;
    while (p < end && *p != '/' && *p != '?')
        p++;
    if (p == target + scheme)
        return -1; /* no host */
    if (p == end || *p == '?') {
        *path = "/";
        *plen = 1;
    } else {
        *path = p;
        *plen = (size_t)(end - p);
    }
    return 0;
}

/* METHOD SP TARGET SP HTTP/1.x */
static int parse_request_line(const char *s, size_t n, sl_http_request *req)
{
    for (size_t i = 0; i < n; i++)
        if (!is_vchar((unsigned char)s[i]) && s[i] != ' ')
            return 400;
    size_t i = 0;
    while (i < n && s[i] >= 'A' && s[i] <= 'Z')
        i++;
    if (i == 0 || i >= sizeof req->method || i >= n || s[i] != ' ')
        return 400;
    memcpy(req->method, s, i);
    req->method[i] = '\0';
    size_t t = ++i;
    while (i < n && s[i] != ' ')
        i++;
    size_t tlen = i - t;
    if (tlen > SL_HTTP_MAX_TARGET)
        return 414;
    if (tlen == 0 || i >= n)
        return 400;
    const char *path = s + t;
    size_t plen = tlen;
    if (*path != '/' && absolute_path(s + t, tlen, &path, &plen) != 0)
        return 400;
    const char *q = memchr(path, '?', plen);
    plen = q ? (size_t)(q - path) : plen;
    memcpy(req->path, path, plen);
    req->path[plen] = '\0';
    const char *v = s + i + 1;
    size_t vlen = n - i - 1;
    if (vlen == 8 && memcmp(v, "HTTP/1.", 7) == 0 && (v[7] == '0' || v[7] == '1')) {
        req->minor = v[7] - '0';
        return 0;
    }
    if (vlen == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' && v[6] == '.' && v[7] >= '0' &&
        v[7] <= '9')
        return 505;
    return 400;
}

/* NAME ":" OWS VALUE OWS; counts Host headers. */
static int parse_header(const char *s, size_t n, int *hosts)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i >= n || s[i] != ':')
        return 400;
    for (size_t j = i + 1; j < n; j++)
        if (!is_field_char((unsigned char)s[j]))
            return 400;
    if (i == 4 && strncasecmp(s, "host", 4) == 0)
        (*hosts)++;
    return 0;
}

int sl_http_parse(const char *buf, size_t len, sl_http_request *req)
{
    memset(req, 0, sizeof *req);
    size_t at = 0;
    int lineno = 0, hosts = 0;
    for (;;) {
        const char *nl = at < len ? memchr(buf + at, '\n', len - at) : NULL;
        if (!nl) {
            size_t part = len - at;
            int rc = check_partial(buf + at, part, lineno == 0);
            if (rc)
                return rc;
            if (lineno == 0 && part > SL_HTTP_MAX_LINE + 1) /* its CR may be in */
                return 414;
            return len >= SL_HTTP_MAX_REQUEST ? 431 : SL_HTTP_PARTIAL;
        }
        size_t end = (size_t)(nl - buf), next = end + 1, n = end - at;
        const char *line = buf + at;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        int rc;
        if (lineno == 0) {
            if (n > SL_HTTP_MAX_LINE)
                return 414;
            rc = parse_request_line(line, n, req);
        } else if (n == 0) {
            if (next > SL_HTTP_MAX_REQUEST)
                return 431;
            if (req->minor == 1 && hosts != 1)
                return 400; /* RFC 9112 3.2: exactly one Host in HTTP/1.1 */
            req->length = next;
            return SL_HTTP_COMPLETE;
        } else {
            rc = lineno > SL_HTTP_MAX_HEADERS ? 431 : parse_header(line, n, &hosts);
        }
        if (rc)
            return rc;
        if (next > SL_HTTP_MAX_REQUEST)
            return 431;
        lineno++;
        at = next;
    }
}

const char *sl_http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}
