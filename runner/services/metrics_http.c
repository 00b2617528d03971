/* metrics_http.c: serve /metrics over HTTP from the event loop, with bounded connections, memory and time.
 *
 * One scrape is one connection: read a request head (at most
 * SL_HTTP_MAX_REQUEST bytes, into the connection's own buffer), answer it,
 * close. Rendering takes microseconds on the loop, so a scrape never waits
 * behind a chunk nor holds one up. At most MAX_CONNS connections are open:
 * a new one past that closes the oldest that has sent nothing (else the
 * oldest), so idle connections can never lock a scraper out. Each has
 * CONN_DEADLINE_MS from its accept to be done, its answer written
 * included, so a client that never sends or never reads holds at most one
 * buffer and one answer, for a bounded time. */
#include <stdlib.h>
#include <string.h>

#include "sluice/services/http.h"
#include "sluice/services/metrics.h"

#define MAX_CONNS        64
#define CONN_DEADLINE_MS 10000
#define SWEEP_MS         500
#define LINGER_MS        2000

typedef struct conn conn;

struct sl_metrics_server {
    uv_tcp_t listener;
    uv_timer_t sweep;
    conn *head, *tail; /* open connections, oldest first */
    int nconns;
    int pending_closes; /* handles whose close callback has not run */
    int stopping;
    int port;
};

struct conn {
    uv_tcp_t tcp;
    uv_write_t write;
    uv_shutdown_t shutdown;
    sl_metrics_server *srv;
    conn *prev, *next;
    int64_t deadline; /* mono ms */
    int answered;     /* a reply is being written: read nothing more */
    int closing;
    char *reply;
    size_t len;
    char buf[SL_HTTP_MAX_REQUEST];
};

static void maybe_free(sl_metrics_server *srv)
{
    if (srv->stopping && srv->pending_closes == 0)
        free(srv);
}

static void on_conn_closed(uv_handle_t *h)
{
    conn *c = h->data;
    sl_metrics_server *srv = c->srv;
    free(c->reply);
    free(c);
    srv->pending_closes--;
    maybe_free(srv);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    sl_metrics_server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->tail = c->prev;
    srv->nconns--;
    srv->pending_closes++;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Lingering close (RFC 9112 9.6): after the answer, read and drop what the
 * client still sends until it closes, for at most LINGER_MS. Closing at
 * once with unread bytes (an oversized request) makes the kernel send a
 * reset, which can destroy the answer before the client reads it. */
static void on_drain_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    conn *c = h->data;
    *b = uv_buf_init(c->buf, sizeof c->buf);
}

static void on_drain(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    (void)b;
    if (nread < 0)
        conn_close(s->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    if (status < 0)
        conn_close(req->data);
}

static void on_written(uv_write_t *w, int status)
{
    conn *c = w->data;
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    free(c->reply); /* written */
    c->reply = NULL;
    int64_t linger = sl_mono_ms() + LINGER_MS;
    if (linger < c->deadline)
        c->deadline = linger;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_drain_alloc, on_drain) != 0)
        conn_close(c);
}

static void reply(conn *c, int status, const char *body, size_t body_len, int head_only)
{
    c->answered = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    sl_buf out = {0};
    sl_buf_printf(&out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
                  status, sl_http_reason(status),
                  status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8", body_len,
                  status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (!head_only)
        sl_buf_add(&out, body, body_len);
    c->len = out.len;
    c->reply = sl_buf_take(&out);
    uv_buf_t b = uv_buf_init(c->reply, (unsigned)c->len);
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void reply_error(conn *c, int status)
{
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, sl_http_reason(status));
    reply(c, status, body, (size_t)n, 0);
}

static void answer(conn *c, const sl_http_request *req)
{
    int head_only = strcmp(req->method, "HEAD") == 0;
    if (!head_only && strcmp(req->method, "GET") != 0) {
        reply_error(c, 405);
        return;
    }
    if (strcmp(req->path, "/metrics") != 0) {
        static const char not_found[] = "404 Not Found: sluice serves /metrics\n";
        reply(c, 404, not_found, sizeof not_found - 1, head_only);
        return;
    }
    sl_buf body = {0};
    sl_metrics_render(&body, sl_mono_ms());
    reply(c, 200, body.data ? body.data : "", body.len, head_only);
    sl_buf_free(&body);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    conn *c = h->data;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    (void)b;
    conn *c = s->data;
    if (c->answered || c->closing)
        return;
    if (nread < 0) { /* EOF or an error before a whole request: nothing to answer */
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    sl_http_request req;
    int rc = sl_http_parse(c->buf, c->len, &req);
    if (rc == SL_HTTP_COMPLETE)
        answer(c, &req);
    else if (rc != SL_HTTP_PARTIAL)
        reply_error(c, rc);
    else if (c->len >= sizeof c->buf)
        reply_error(c, 431); /* cannot happen: the parser says so first */
}

/* Who makes room for a new connection: the oldest that has sent nothing
 * (an idle one), else the oldest. */
static conn *victim(sl_metrics_server *srv)
{
    for (conn *c = srv->head; c; c = c->next)
        if (c->len == 0 && !c->answered)
            return c;
    return srv->head;
}

static void on_connection(uv_stream_t *l, int status)
{
    sl_metrics_server *srv = l->data;
    if (status < 0 || srv->stopping)
        return;
    if (srv->nconns >= MAX_CONNS && srv->head)
        conn_close(victim(srv));
    conn *c = sl_calloc(1, sizeof *c);
    c->srv = srv;
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    c->deadline = sl_mono_ms() + CONN_DEADLINE_MS;
    c->prev = srv->tail;
    if (srv->tail)
        srv->tail->next = c;
    else
        srv->head = c;
    srv->tail = c;
    srv->nconns++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

/* Connections past their deadline, closed: a request that never came, an
 * answer nobody reads. */
static void on_sweep(uv_timer_t *t)
{
    sl_metrics_server *srv = t->data;
    int64_t now = sl_mono_ms();
    for (conn *c = srv->head, *next; c; c = next) {
        next = c->next;
        if (c->deadline <= now)
            conn_close(c);
    }
}

/* "HOST:PORT", "[V6]:PORT", ":PORT" (0.0.0.0), "localhost:PORT". */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, sl_err *err)
{
    const char *colon = strrchr(addr, ':');
    int64_t port;
    if (!colon || sl_parse_int(colon + 1, 0, 65535, &port) != 0) {
        sl_err_set(
            err, "--metrics %s: expected HOST:PORT with a port from 0 (any free one) to 65535, such as 127.0.0.1:9187",
            addr);
        return -1;
    }
    char host[256];
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host)
        hl = sizeof host - 1;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    int rc;
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        rc = uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss);
    } else {
        const char *h = !host[0] ? "0.0.0.0" : strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
        rc = uv_ip4_addr(h, (int)port, (struct sockaddr_in *)ss);
    }
    if (rc != 0) {
        sl_err_set(err, "--metrics %s: \"%s\" is not an IP address (hint: 127.0.0.1:PORT, [::1]:PORT or :PORT)", addr,
                   host);
        return -1;
    }
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    sl_metrics_server *srv = h->data;
    srv->pending_closes--;
    maybe_free(srv);
}

int sl_metrics_serve(uv_loop_t *loop, const char *addr, sl_metrics_server **out, sl_err *err)
{
    *out = NULL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (parse_addr(addr, &ss, err) != 0)
        return -1;
    sl_metrics_server *srv = sl_calloc(1, sizeof *srv);
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    int rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection);
    if (rc != 0) {
        sl_err_set(err, "--metrics %s: cannot listen: %s", addr, uv_strerror(rc));
        srv->stopping = 1;
        srv->pending_closes = 1;
        uv_close((uv_handle_t *)&srv->listener, on_handle_closed);
        return -1;
    }
    uv_timer_init(loop, &srv->sweep);
    srv->sweep.data = srv;
    uv_timer_start(&srv->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&srv->sweep);
    *out = srv;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    char host[64] = "?";
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len) == 0) {
        if (bound.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&bound, host, sizeof host);
        else
            uv_ip4_name((struct sockaddr_in *)&bound, host, sizeof host);
        srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    }
    sl_info("metrics at http://%s%s%s:%d/metrics", bound.ss_family == AF_INET6 ? "[" : "", host,
            bound.ss_family == AF_INET6 ? "]" : "", srv->port);
    return 0;
}

int sl_metrics_port(const sl_metrics_server *srv)
{
    return srv->port;
}

int sl_metrics_connections(const sl_metrics_server *srv)
{
    return srv->nconns;
}

void sl_metrics_stop(sl_metrics_server *srv)
{
    if (!srv)
        return;
    while (srv->head)
        conn_close(srv->head);
    srv->stopping = 1;
    srv->pending_closes += 2;
    uv_close((uv_handle_t *)&srv->listener, on_handle_closed);
    uv_close((uv_handle_t *)&srv->sweep, on_handle_closed);
}
