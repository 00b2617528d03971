/* test_http.c: the metrics endpoint's HTTP request parser: what it takes, what it refuses, its bounds, and fuzzing. */
#include "check.h"
#include "sluice/base/util.h"
#include "sluice/services/http.h"
#include "sluice/services/metrics.h"

#include <stdint.h>
#include <stdlib.h>

static int parse(const char *s)
{
    sl_http_request req;
    return sl_http_parse(s, strlen(s), &req);
}

/* Every strict prefix of a whole request is PARTIAL, and the whole is
 * COMPLETE with length = its size. */
static void expect_complete(const char *s, const char *method, const char *path, int minor)
{
    sl_http_request req;
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        int rc = sl_http_parse(s, i, &req);
        if (rc != SL_HTTP_PARTIAL) {
            printf("#   prefix of %zu bytes of \"%s\": %d, expected partial\n", i, s, rc);
            CHECK(rc == SL_HTTP_PARTIAL);
            return;
        }
    }
    CHECK(sl_http_parse(s, n, &req) == SL_HTTP_COMPLETE);
    CHECK_STR(req.method, method);
    CHECK_STR(req.path, path);
    CHECK(req.minor == minor);
    CHECK(req.length == n);
}

static void test_accepts(void)
{
    expect_complete("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/metrics", 1);
    expect_complete("GET /metrics HTTP/1.0\r\n\r\n", "GET", "/metrics", 0);
    /* absolute-form, which a server must accept (RFC 9112 3.2.2) */
    expect_complete("GET http://127.0.0.1:9187/metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9187\r\n\r\n", "GET", "/metrics",
                    1);
    expect_complete("GET HTTP://h HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "/", 1);
    expect_complete("GET https://h?q HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "/", 1);
    expect_complete("HEAD /metrics?x=1&y HTTP/1.1\r\nHost: a:9\r\nAccept: */*\r\n\r\n", "HEAD", "/metrics", 1);
    expect_complete("GET / HTTP/1.1\nHost: x\n\n", "GET", "/", 1); /* bare LF line ends */
    expect_complete("POST /x HTTP/1.1\r\nhOsT:   y  \r\nUser-Agent: curl/7.88.1\r\n\r\n", "POST", "/x", 1);
    expect_complete("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Obs: caf\xc3\xa9\t1\r\n\r\n", "GET", "/metrics", 1);
    /* what Prometheus sends */
    expect_complete("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9187\r\nUser-Agent: Prometheus/2.45.0\r\n"
                    "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"
                    "Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
                    "GET", "/metrics", 1);
}

static void test_bytes_after_the_head(void)
{
    const char *s = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /again HTTP/1.1\r\n";
    sl_http_request req;
    CHECK(sl_http_parse(s, strlen(s), &req) == SL_HTTP_COMPLETE);
    CHECK(req.length == strlen("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
}

static void test_refuses(void)
{
    CHECK(parse("get /metrics HTTP/1.1\r\n") == 400);        /* methods are upper case */
    CHECK(parse(" GET /metrics HTTP/1.1\r\n") == 400);       /* leading blank */
    CHECK(parse("\r\nGET /metrics HTTP/1.1\r\n") == 400);    /* leading empty line */
    CHECK(parse("GET  /metrics HTTP/1.1\r\n") == 400);       /* two blanks */
    CHECK(parse("GET metrics HTTP/1.1\r\n") == 400);         /* not origin-form */
    CHECK(parse("GET ftp://h/metrics HTTP/1.1\r\n") == 400); /* absolute-form of another scheme */
    CHECK(parse("GET http:///metrics HTTP/1.1\r\n") == 400); /* no host */
    CHECK(parse("GET /metrics\r\n") == 400);                 /* HTTP/0.9 */
    CHECK(parse("GET /metrics HTTP/1.1 \r\n") == 400);
    CHECK(parse("GET /metrics HTTP/1.2x\r\n") == 400);
    CHECK(parse("GET /metrics http/1.1\r\n") == 400);
    CHECK(parse("GET /metrics HTTP/2.0\r\n\r\n") == 505);
    CHECK(parse("GET /metrics HTTP/1.2\r\n\r\n") == 505);
    CHECK(parse("GET /met\trics HTTP/1.1\r\n") == 400);
    CHECK(parse("GET /metrics HTTP/1.1\r\r\n") == 400);
    CHECK(parse("GET /metrics HTTP/1.1\rHost: x\r\n") == 400); /* bare CR */
    CHECK(parse("GET /metrics HTTP/1.1\r\n\r\n") == 400);      /* 1.1 without Host */
    CHECK(parse("GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400);
    CHECK(parse("GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n") == 400); /* blank before the colon */
    CHECK(parse("GET /metrics HTTP/1.1\r\n: x\r\n\r\n") == 400);      /* no name */
    CHECK(parse("GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n") == 400);
    CHECK(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n") == 400); /* obs-fold */
    CHECK(parse("GET /metrics HTTP/1.1\r\nHost: x\x01y\r\n\r\n") == 400);
    CHECK(parse("GET /metrics HTTP/1.1\r\nHost: x\x7f\r\n\r\n") == 400);
    CHECK(parse("GET /metrics HTTP/1.1\r\nHo\"st: x\r\n\r\n") == 400);
    static const char nul[] = "GET /metrics HTTP/1.1\r\nHost: a\0b\r\n\r\n";
    sl_http_request req;
    CHECK(sl_http_parse(nul, sizeof nul - 1, &req) == 400);
    CHECK(parse("AVERYLONGMETHODNAME /metrics HTTP/1.1\r\n") == 400);
}

/* Garbage is refused at its first line, before the request would end. */
static void test_refuses_early(void)
{
    CHECK(parse("\x16\x03\x01\x02\x00") == 400); /* a TLS ClientHello */
    CHECK(parse("hello") == 400);
    CHECK(parse("GET /\x01") == 400);
    CHECK(parse("GET /metrics HTTP/1.1\r\n\tx") == 400);
    CHECK(parse("GET /metrics HTTP/1.1\r\nHost: \x02") == 400);
    CHECK(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r") == SL_HTTP_PARTIAL);
}

static char *repeat(char c, size_t n)
{
    char *s = sl_malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_bounds(void)
{
    /* the target: up to SL_HTTP_MAX_TARGET bytes */
    char *path = repeat('a', SL_HTTP_MAX_TARGET - 1);
    char *ok = sl_asprintf("GET /%s HTTP/1.0\r\n\r\n", path);
    char *long_target = sl_asprintf("GET /%sa HTTP/1.0\r\n\r\n", path);
    CHECK(parse(ok) == SL_HTTP_COMPLETE);
    CHECK(parse(long_target) == 414);
    /* a request line that never ends: refused once past its bound, not buffered on */
    char *b = repeat('b', SL_HTTP_MAX_LINE + 10);
    char *no_end = sl_asprintf("GET /%s", b);
    CHECK(parse(no_end) == 414);
    /* headers: SL_HTTP_MAX_REQUEST bytes in all, at most SL_HTTP_MAX_HEADERS lines */
    sl_buf big = {0};
    sl_buf_adds(&big, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
    while (big.len < SL_HTTP_MAX_REQUEST - 20)
        sl_buf_adds(&big, "X-Pad: 0123456789abcdef0123456789abcdef0123456789abcdef\r\n");
    CHECK(sl_http_parse(big.data, big.len, &(sl_http_request){0}) == 431); /* too many lines */
    sl_buf_reset(&big);
    sl_buf_adds(&big, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    while (big.len < SL_HTTP_MAX_REQUEST + 100)
        sl_buf_addc(&big, 'v');
    CHECK(sl_http_parse(big.data, big.len, &(sl_http_request){0}) == 431); /* no end in sight */
    sl_buf_adds(&big, "\r\n\r\n");
    CHECK(sl_http_parse(big.data, big.len, &(sl_http_request){0}) == 431);
    /* exactly SL_HTTP_MAX_REQUEST bytes is fine, one more is not */
    sl_buf_reset(&big);
    sl_buf_adds(&big, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Fill: ");
    while (big.len < SL_HTTP_MAX_REQUEST - 4)
        sl_buf_addc(&big, 'f');
    sl_buf_adds(&big, "\r\n\r\n");
    CHECK(big.len == SL_HTTP_MAX_REQUEST);
    CHECK(sl_http_parse(big.data, big.len, &(sl_http_request){0}) == SL_HTTP_COMPLETE);
    sl_buf_reset(&big);
    sl_buf_adds(&big, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Fill: ");
    while (big.len < SL_HTTP_MAX_REQUEST - 3)
        sl_buf_addc(&big, 'f');
    sl_buf_adds(&big, "\r\n\r\n");
    CHECK(sl_http_parse(big.data, big.len, &(sl_http_request){0}) == 431);
    sl_buf_free(&big);
    free(no_end);
    free(b);
    free(ok);
    free(long_target);
    free(path);
}

/* A deterministic fuzzer: random bytes, and valid requests mutated, split
 * at every length. The parser never reads past len (AddressSanitizer
 * watches: each input sits in a buffer of exactly its size), answers one
 * of its codes, and a shorter prefix never says COMPLETE before a longer
 * one's error nor after one's error. */
static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static int valid_code(int rc)
{
    return rc == SL_HTTP_COMPLETE || rc == SL_HTTP_PARTIAL || rc == 400 || rc == 414 || rc == 431 || rc == 505;
}

static void fuzz_one(const char *src, size_t n)
{
    char *buf = sl_malloc(n ? n : 1);
    memcpy(buf, src, n);
    sl_http_request req;
    int settled = SL_HTTP_PARTIAL;
    for (size_t i = 0; i <= n; i++) {
        int rc = sl_http_parse(buf, i, &req);
        CHECK(valid_code(rc));
        if (rc == SL_HTTP_COMPLETE)
            CHECK(req.length <= i && req.length <= SL_HTTP_MAX_REQUEST && req.path[0] == '/');
        /* once an answer is settled (complete, or an error), more bytes never undo it */
        if (settled != SL_HTTP_PARTIAL && rc != settled && !(settled == SL_HTTP_COMPLETE)) {
            printf("#   prefix %zu: %d after %d\n", i, rc, settled);
            CHECK(rc == settled);
            break;
        }
        if (settled == SL_HTTP_COMPLETE)
            CHECK(rc == SL_HTTP_COMPLETE);
        if (rc != SL_HTTP_PARTIAL)
            settled = rc;
    }
    free(buf);
}

static void test_fuzz(void)
{
    static const char *const seeds[] = {
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9187\r\nAccept: */*\r\n\r\n",
        "HEAD / HTTP/1.0\n\n",
        "GET /metrics?a=b HTTP/1.1\r\nHost: x\r\nUser-Agent: Prometheus/2\r\nX: \t y\r\n\r\n",
    };
    char buf[512];
    for (int iter = 0; iter < 20000 && !check_failed_in_case; iter++) {
        const char *seed = seeds[iter % 3];
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        int edits = 1 + (int)(next_rand() % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = next_rand() % n;
            switch (next_rand() % 4) {
            case 0: buf[at] = (char)(next_rand() & 0xff); break;
            case 1: buf[at] = "\r\n :\t\x00"[next_rand() % 6]; break;
            case 2:
                if (n + 1 < sizeof buf) { /* insert */
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = (char)(next_rand() & 0x7f);
                    n++;
                }
                break;
            default:
                if (n > 1) { /* delete */
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                }
            }
        }
        fuzz_one(buf, n);
    }
    for (int iter = 0; iter < 2000 && !check_failed_in_case; iter++) {
        size_t n = next_rand() % sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)(next_rand() & 0xff);
        fuzz_one(buf, n);
    }
}

static void test_reasons(void)
{
    CHECK_STR(sl_http_reason(400), "Bad Request");
    CHECK_STR(sl_http_reason(431), "Request Header Fields Too Large");
    CHECK_STR(sl_http_reason(505), "HTTP Version Not Supported");
}

/* ---- the server, on a real loop and real sockets ---- */

typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    const char *request; /* NULL: connect and send nothing */
    char answer[256];
    size_t len;
    int done, closed;
} client;

static void on_client_closed(uv_handle_t *h)
{
    ((client *)h->data)->closed = 1;
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    client *c = h->data;
    if (c->len >= sizeof c->answer - 1) /* the status line is all a test reads; drop the rest */
        c->len = sizeof c->answer / 2;
    *b = uv_buf_init(c->answer + c->len, (unsigned)(sizeof c->answer - 1 - c->len));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    client *c = s->data;
    if (n > 0) {
        c->len += (size_t)n;
        c->answer[c->len] = '\0';
    } else if (n < 0) {
        c->done = 1;
        uv_close((uv_handle_t *)&c->tcp, on_client_closed);
    }
}

static void client_written(uv_write_t *w, int status)
{
    (void)w;
    CHECK(status == 0);
}

static void client_connected(uv_connect_t *req, int status)
{
    client *c = req->data;
    CHECK(status == 0);
    if (status != 0 || !c->request)
        return;
    uv_buf_t b = uv_buf_init((char *)c->request, (unsigned)strlen(c->request));
    CHECK(uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, client_written) == 0);
    CHECK(uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read) == 0);
}

static void client_start(uv_loop_t *loop, client *c, int port, const char *request)
{
    memset(c, 0, sizeof *c);
    c->request = request;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    CHECK(uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addr, client_connected) == 0);
}

/* Turn the loop until every client with a request has its answer, at most 5 s. */
static void run_until_answered(uv_loop_t *loop, client *cs, size_t n)
{
    int64_t deadline = sl_mono_ms() + 5000;
    for (;;) {
        size_t waiting = 0;
        for (size_t i = 0; i < n; i++)
            waiting += cs[i].request && !cs[i].done;
        if (!waiting || sl_mono_ms() > deadline)
            break;
        uv_run(loop, UV_RUN_NOWAIT);
    }
}

/* 70 idle connections, then scrapes, a 404, a 405, garbage; at most 64 kept;
 * stopped, the loop closes with nothing left open (and, under ASan, nothing leaked). */
static void test_server(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_metrics_server *srv = NULL;
    sl_err err = {{0}};
    CHECK(sl_metrics_serve(&loop, "nowhere", &srv, &err) == -1 && srv == NULL);
    CHECK_HAS(err.msg, "expected HOST:PORT");
    CHECK(sl_metrics_serve(&loop, "127.0.0.1:0", &srv, &err) == 0);
    if (!srv)
        return;
    int port = sl_metrics_port(srv);
    CHECK(port > 0);
    sl_metrics_job_get("0001_unit");
    enum { IDLE = 70, ASK = 4 };
    client *idle = sl_calloc(IDLE, sizeof *idle), ask[ASK];
    for (int i = 0; i < IDLE; i++)
        client_start(&loop, &idle[i], port, NULL);
    for (int i = 0; i < 200; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(sl_metrics_connections(srv) <= 64);
    client_start(&loop, &ask[0], port, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    client_start(&loop, &ask[1], port, "GET /other HTTP/1.0\r\n\r\n");
    client_start(&loop, &ask[2], port, "DELETE /metrics HTTP/1.0\r\n\r\n");
    client_start(&loop, &ask[3], port, "\x16\x03\x01garbage");
    run_until_answered(&loop, ask, ASK);
    CHECK_HAS(ask[0].answer, "HTTP/1.1 200 OK\r\n");
    CHECK_HAS(ask[1].answer, "HTTP/1.1 404 Not Found\r\n");
    CHECK_HAS(ask[2].answer, "HTTP/1.1 405 Method Not Allowed\r\n");
    CHECK_HAS(ask[2].answer, "Allow: GET, HEAD\r\n");
    CHECK_HAS(ask[3].answer, "HTTP/1.1 400 Bad Request\r\n");
    CHECK(sl_metrics_connections(srv) <= 64);
    sl_metrics_stop(srv);
    for (int i = 0; i < IDLE; i++)
        if (!idle[i].done)
            uv_close((uv_handle_t *)&idle[i].tcp, on_client_closed);
    for (int i = 0; i < ASK; i++)
        if (!ask[i].done)
            uv_close((uv_handle_t *)&ask[i].tcp, on_client_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    free(idle);
    sl_metrics_reset();
}

int main(void)
{
    RUN(test_accepts);
    RUN(test_bytes_after_the_head);
    RUN(test_refuses);
    RUN(test_refuses_early);
    RUN(test_bounds);
    RUN(test_fuzz);
    RUN(test_reasons);
    RUN(test_server);
    return CHECK_DONE();
}
