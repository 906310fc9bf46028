/*
 * HTTP/1.1 proxying: request and response heads.
 *
 * A request head is parsed, routed to a pool and rewritten for the backend
 * (hop-by-hop fields out, X-Forwarded-* and Forwarded in); a response head is
 * parsed and rewritten for the client. Both decide how the message body that
 * follows is framed (BODY_*), which lb/http_proxy.c then enforces byte by
 * byte. It is separate because it is the one part of the proxy that reads and
 * writes HTTP syntax rather than sockets and session states. The session
 * reaches it through two calls per request, http_start_request() and
 * http_response_head(), which were calls already when the proxy was one
 * file; the helpers they inline live here too.
 */
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lb/core.h"
#include "lb/http1.h"
#include "lb/http_proxy_int.h"
#include "lb/log.h"
#include "lb/runtime.h"

/* ---- request head ---- */

static bool
host_matches(const char *pattern, struct http1_str host)
{
    size_t n = host.len;
    /* Compare without the port; a bracketed IPv6 literal keeps its colons. */
    if (n && host.p[0] == '[') {
        const char *rb = memchr(host.p, ']', n);
        if (rb)
            n = (size_t)(rb - host.p) + 1;
    } else {
        const char *colon = memchr(host.p, ':', n);
        if (colon)
            n = (size_t)(colon - host.p);
    }
    size_t plen = strlen(pattern);
    if (plen > 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* "*.example.com" matches any name strictly below example.com. */
        if (n <= plen - 1)
            return false;
        return strncasecmp(host.p + n - (plen - 1), pattern + 1, plen - 1) == 0;
    }
    return n == plen && strncasecmp(host.p, pattern, n) == 0;
}

static int
route(const struct conf_listener *cl, const struct http1_request *r)
{
    for (size_t i = 0; i < cl->nroutes; i++) {
        const struct conf_route *rt = &cl->routes[i];
        if (rt->host && !host_matches(rt->host, r->host))
            continue;
        if (rt->path_prefix) {
            size_t n = strlen(rt->path_prefix);
            if (r->path.len < n || memcmp(r->path.p, rt->path_prefix, n) != 0)
                continue;
        }
        return rt->pool_index;
    }
    return cl->pool_index;
}

/* Whether the Connection header(s) list this field name, making it
 * hop-by-hop (RFC 9110 section 7.6.1). */
static bool
listed_in_connection(const struct http1_header *hs, size_t n, struct http1_str name)
{
    for (size_t i = 0; i < n; i++) {
        if (!http1_str_ieq(hs[i].name, "connection"))
            continue;
        const char *p = hs[i].value.p, *e = p + hs[i].value.len;
        while (p < e) {
            while (p < e && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *t = p;
            while (p < e && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if ((size_t)(p - t) == name.len && strncasecmp(t, name.p, name.len) == 0)
                return true;
        }
    }
    return false;
}

/* Whether listed_in_connection() can find name at all: Connection named a
 * token other than close, keep-alive and upgrade (the last two are
 * hop-by-hop anyway), or it named close and so is this field. */
static inline bool
conn_may_list(const struct http1_framing *f, struct http1_str name)
{
    return f->conn_other || (f->conn_close && http1_str_ieq(name, "close"));
}

/* Fields tern framed (or routed) the message by. Connection may list them,
 * but dropping one would hand the next hop a message framed differently
 * from ours: "Connection: content-length" would turn a request's body into
 * a second request nobody routed. They go on as they came. */
static bool
frames_message(struct http1_str n, bool request)
{
    return http1_str_ieq(n, "content-length") || http1_str_ieq(n, "transfer-encoding") ||
           (request && http1_str_ieq(n, "host"));
}

/* A field that Connection lists is hop-by-hop and stays here. */
static bool
dropped_as_listed(const struct http1_framing *f, const struct http1_header *hs, size_t n,
                  struct http1_str name, bool request)
{
    return conn_may_list(f, name) && !frames_message(name, request) &&
           listed_in_connection(hs, n, name);
}

static bool
hop_by_hop(struct http1_str n)
{
    return http1_str_ieq(n, "connection") || http1_str_ieq(n, "keep-alive") ||
           http1_str_ieq(n, "proxy-connection") || http1_str_ieq(n, "te") ||
           http1_str_ieq(n, "upgrade") || http1_str_ieq(n, "proxy-authorization");
}

struct out {
    char *p, *end;
    bool overflow;
};

static void
put(struct out *o, const void *d, size_t n)
{
    if ((size_t)(o->end - o->p) < n) {
        o->overflow = true;
        return;
    }
    memcpy(o->p, d, n);
    o->p += n;
}

static void
puts_(struct out *o, const char *str)
{
    put(o, str, strlen(str));
}

static void
put_hdr(struct out *o, struct http1_str name, struct http1_str value)
{
    put(o, name.p, name.len);
    put(o, ": ", 2);
    put(o, value.p, value.len);
    put(o, "\r\n", 2);
}

static size_t
peer_ip(const struct http_sess *s, char *out, size_t cap)
{
    struct sockaddr_storage ss = {0};
    ss.ss_family = s->peer_family;
    if (s->peer_family == AF_INET)
        memcpy(&((struct sockaddr_in *)&ss)->sin_addr, s->peer, 4);
    else
        memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, s->peer, 16);
    return lb_addr_ip(&ss, out, cap);
}

/* Writes the head sent to the backend: the request line as received, the
 * end-to-end fields, and what a proxy adds. Returns -1 if it does not fit. */
/* An empty Host is a Host all the same: adding one would make two. */
static bool
has_host_field(const struct http1_request *r)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (http1_str_ieq(r->headers[i].name, "host"))
            return true;
    return false;
}

static int
build_request_head(struct http_sess *s, const struct http1_request *r, struct lb_buf *dst)
{
    struct out o = {dst->data, dst->data + LB_BUF_SIZE, false};
    const struct conf_listener *cl = lcf(s);
    char ip[INET6_ADDRSTRLEN + 2];
    size_t iplen = peer_ip(s, ip, sizeof(ip));
    struct http1_str xff[8];
    size_t nxff = 0;
    struct http1_str fwd[8];
    size_t nfwd = 0;

    put(&o, r->method.p, r->method.len);
    put(&o, " ", 1);
    put(&o, r->target.p, r->target.len);
    puts_(&o, r->minor_version ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct http1_header *h = &r->headers[i];
        if (hop_by_hop(h->name)) {
            if (s->x->upgrade && http1_str_ieq(h->name, "upgrade"))
                put_hdr(&o, h->name, h->value);
            continue;
        }
        if (dropped_as_listed(&r->f, r->headers, r->nheaders, h->name, true))
            continue;
        /* Only we can vouch for a client certificate, on any listener. */
        if (http1_str_ieq(h->name, "x-client-cert-subject"))
            continue;
        if (cl->forwarded_headers) {
            if (http1_str_ieq(h->name, "x-forwarded-for")) {
                if (nxff < 8)
                    xff[nxff++] = h->value;
                continue;
            }
            if (http1_str_ieq(h->name, "forwarded")) {
                if (nfwd < 8)
                    fwd[nfwd++] = h->value;
                continue;
            }
            /* The client cannot tell us which scheme it used: we know. */
            if (http1_str_ieq(h->name, "x-forwarded-proto"))
                continue;
        }
        put_hdr(&o, h->name, h->value);
    }
    if (!r->host.len && !r->minor_version && !has_host_field(r)) {
        /* HTTP/1.0 allows a missing Host; the backend still wants one. A
         * pool with no server yet (filled at runtime) has no address to give:
         * its slot 0 is empty, and the request goes without, as 1.0 allows. */
        const struct lb_pool *p = &s->gen->snap->pools[s->x->pool];
        const char *host =
            lb_pool_nservers(p) ? p->servers[s->x->srv >= 0 ? s->x->srv : 0].addr.text : NULL;
        if (host) {
            puts_(&o, "Host: ");
            puts_(&o, host);
            puts_(&o, "\r\n");
        }
    }
    if (s->cert_subject) {
        puts_(&o, "X-Client-Cert-Subject: ");
        puts_(&o, s->cert_subject);
        puts_(&o, "\r\n");
    }
    if (s->x->upgrade)
        puts_(&o, "Connection: upgrade\r\n");
    else if (!r->minor_version)
        puts_(&o, "Connection: keep-alive\r\n");
    if (cl->forwarded_headers) {
        /* The connection's own transport: it may predate a reload that
         * changed the listener. */
        const char *proto = s->ssl ? "https" : "http";
        puts_(&o, "X-Forwarded-For: ");
        for (size_t i = 0; i < nxff; i++) {
            put(&o, xff[i].p, xff[i].len);
            put(&o, ", ", 2);
        }
        put(&o, ip, iplen);
        puts_(&o, "\r\nX-Forwarded-Proto: ");
        puts_(&o, proto);
        puts_(&o, "\r\nForwarded: ");
        for (size_t i = 0; i < nfwd; i++) {
            put(&o, fwd[i].p, fwd[i].len);
            put(&o, ", ", 2);
        }
        /* RFC 7239 section 6: IPv6 addresses are quoted and bracketed. */
        if (s->peer_family == AF_INET6) {
            puts_(&o, "for=\"[");
            put(&o, ip, iplen);
            puts_(&o, "]\"");
        } else {
            puts_(&o, "for=");
            put(&o, ip, iplen);
        }
        puts_(&o, ";proto=");
        puts_(&o, proto);
        puts_(&o, "\r\n");
    }
    put(&o, "\r\n", 2);
    if (o.overflow)
        return -1;
    dst->head = 0;
    dst->tail = (uint32_t)(o.p - dst->data);
    return 0;
}

/* Parses the head in cin and starts forwarding. Returns 1 when a request
 * started, 0 when more bytes are needed, -1 when an error was answered. */
int
http_start_request(struct http_sess *s)
{
    if (s->gen != s->w->gen) {
        /* A reload happened while this connection was idle: this request
         * runs on the new configuration, its limits included. A listener
         * the reload removed (or turned into tcp) has none: the request
         * runs on the configuration the connection started with, which
         * then ends with it. */
        struct lb_listener *nl = successor(s);
        if (nl)
            migrate(s, nl);
        else
            s->client_close = true;
    }
    const struct conf_listener *cl = lcf(s);
    struct http1_limits lim = {
        .max_request_line = cl->max_request_line,
        .max_head = cl->max_header_size,
        .max_headers = HTTP1_MAX_HEADERS,
    };
    if (!lim.max_head || lim.max_head > LB_BUF_SIZE - 2048)
        lim.max_head = LB_BUF_SIZE - 2048;
    if (!lim.max_request_line || lim.max_request_line > lim.max_head)
        lim.max_request_line = lim.max_head;
    struct http1_request *r = alloca(sizeof(*r));
    ssize_t n = http1_parse_request(s->cin.data + s->cin.head, lb_buf_len(&s->cin), &lim, r);
    if (n == HTTP1_INCOMPLETE)
        return 0;
    if (n < 0) {
        lb_debug("client request refused with %d: %s", r->error_status, r->error);
        return http_send_error(s, r->error_status ? r->error_status : 400);
    }
    s->x->minor = (int8_t)r->minor_version;
    s->x->meth = (uint8_t)r->meth;
    s->head_timer = false;
    if (r->meth == HTTP1_M_CONNECT)
        return http_send_error(s, 405);

    s->x->pool = (int16_t)route(cl, r);
    if (s->x->pool < 0)
        return http_send_error(s, 503);
    atomic_fetch_add_explicit(&s->gen->snap->pools[s->x->pool].requests, 1, memory_order_relaxed);

    if (cl->max_body_size && !r->f.chunked && r->f.content_length > 0 &&
        (uint64_t)r->f.content_length > cl->max_body_size) {
        lb_debug("listener %s: request body of %" PRId64 " bytes refused with 413", cl->name,
                 r->f.content_length);
        return http_send_error(s, 413);
    }
    if (r->f.chunked) {
        s->x->req_mode = BODY_CHUNKED;
    } else if (r->f.content_length > 0) {
        s->x->req_mode = BODY_CL;
        s->x->req_left = r->f.content_length;
    } else {
        s->x->req_mode = BODY_NONE;
        s->x->req_done = true;
    }
    s->x->upgrade = r->f.conn_upgrade && r->f.has_upgrade && r->minor_version == 1;
    s->client_close = r->f.conn_close || (r->minor_version == 0 && !r->f.conn_keep_alive);

    if (lb_buf_alloc(&s->w->bufs, &s->x->sout) < 0 || build_request_head(s, r, &s->x->sout) < 0)
        return http_send_error(s, 431);
    s->x->sout_len = s->x->sout.tail;
    s->x->bytes_in += (uint64_t)n;
    lb_buf_consume(&s->cin, (uint32_t)n);
    if (http_backend_connect(s) < 0)
        return -1;
    return 1;
}

/* ---- response head ---- */

static int
build_response_head(struct http_sess *s, const struct http1_response *r, struct lb_buf *dst,
                    bool interim)
{
    struct out o = {dst->data + dst->tail, dst->data + LB_BUF_SIZE, false};
    /* The parser took three digits: no snprintf on every response. */
    char line[] = "HTTP/1.1 000 ";
    line[9] = (char)('0' + r->status / 100 % 10);
    line[10] = (char)('0' + r->status / 10 % 10);
    line[11] = (char)('0' + r->status % 10);
    put(&o, line, sizeof(line) - 1);
    put(&o, r->reason.p, r->reason.len);
    put(&o, "\r\n", 2);
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct http1_header *h = &r->headers[i];
        if (hop_by_hop(h->name)) {
            if (r->status == 101 && http1_str_ieq(h->name, "upgrade"))
                put_hdr(&o, h->name, h->value);
            continue;
        }
        if (dropped_as_listed(&r->f, r->headers, r->nheaders, h->name, false))
            continue;
        put_hdr(&o, h->name, h->value);
    }
    if (r->status == 101)
        puts_(&o, "Connection: upgrade\r\n");
    else if (!interim && s->client_close)
        puts_(&o, "Connection: close\r\n");
    else if (!interim && s->x->minor == 0)
        puts_(&o, "Connection: keep-alive\r\n");
    put(&o, "\r\n", 2);
    if (o.overflow)
        return -1;
    dst->tail = (uint32_t)(o.p - dst->data);
    return 0;
}

/* Parses response heads in sin. Returns 1 when the final head was handled,
 * 0 when more bytes are needed, -1 when an error answer was queued, -2 when
 * the session is freed (s must not be touched). */
int
http_response_head(struct http_sess *s)
{
    const struct conf_listener *cl = lcf(s);
    struct http1_response *r = alloca(sizeof(*r));

    for (;;) {
        ssize_t n =
            http1_parse_response(s->x->sin.data + s->x->sin.head, lb_buf_len(&s->x->sin),
                                 cl->max_header_size ? cl->max_header_size : LB_BUF_SIZE - 2048, r);
        if (n == HTTP1_INCOMPLETE) {
            if (lb_buf_len(&s->x->sin) >= LB_BUF_SIZE - 2048) {
                lb_warn("pool %s server %s: response head too large", pcf(s)->name,
                        s->x->b->srv->name);
                http_send_error(s, 502);
                return -1;
            }
            return 0;
        }
        if (n < 0) {
            lb_warn("pool %s server %s: invalid response: %s", pcf(s)->name, s->x->b->srv->name,
                    r->error ? r->error : "?");
            if (s->x->any_resp_sent) {
                http_sess_close(s);
                return -2;
            }
            http_send_error(s, 502);
            return -1;
        }
        if (!s->x->t_resp)
            s->x->t_resp = lb_now_us(s->w->loop);
        if (lb_buf_alloc(&s->w->bufs, &s->x->cout) < 0) {
            http_send_error(s, 502);
            return -1;
        }
        bool interim = r->status >= 100 && r->status < 200 && !(r->status == 101 && s->x->upgrade);
        if (r->status == 101 && !s->x->upgrade) {
            /* Switching protocols that nobody asked for. */
            http_send_error(s, 502);
            return -1;
        }
        if (interim && s->x->minor == 0) {
            /* HTTP/1.0 clients do not expect interim responses. */
            lb_buf_consume(&s->x->sin, (uint32_t)n);
            continue;
        }
        lb_buf_compact(&s->x->cout);
        if (!interim) {
            s->x->status = (uint16_t)r->status;
            /* A listener removed by a reload takes no further request on
             * this connection; tell the client before it sends one. */
            if (s->gen != s->w->gen && !successor(s))
                s->client_close = true;
            if (r->f.conn_close || (r->minor_version == 0 && !r->f.conn_keep_alive))
                s->x->backend_close = true;
            if (r->status == 101) {
                s->x->resp_mode = BODY_TUNNEL;
                s->x->req_mode = BODY_TUNNEL;
            } else if (!http1_response_has_body((enum http1_method)s->x->meth, r->status)) {
                s->x->resp_mode = BODY_NONE;
            } else if (r->f.chunked) {
                s->x->resp_mode = BODY_CHUNKED;
            } else if (r->f.content_length >= 0) {
                s->x->resp_mode = r->f.content_length ? BODY_CL : BODY_NONE;
                s->x->resp_left = r->f.content_length;
            } else {
                /* Delimited by the backend closing: the client cannot tell
                 * the end otherwise, so it must be closed too. */
                s->x->resp_mode = BODY_CLOSE;
                s->x->backend_close = true;
                s->client_close = true;
            }
            if (!s->x->req_done && s->x->resp_mode != BODY_TUNNEL) {
                /* The backend answered before reading the whole request
                 * body: the rest of it cannot be told from a next request
                 * unless we read it, so both connections end after this. */
                s->client_close = true;
                s->x->backend_close = true;
            }
        }
        if (build_response_head(s, r, &s->x->cout, interim) < 0) {
            http_send_error(s, 502);
            return -1;
        }
        s->x->any_resp_sent = true;
        lb_buf_consume(&s->x->sin, (uint32_t)n);
        if (interim)
            continue;
        s->x->resp_head_done = true;
        if (s->x->resp_mode == BODY_NONE)
            s->x->resp_done = true;
        if (s->x->resp_mode == BODY_TUNNEL) {
            s->state = ST_TUNNEL;
            s->x->req_done = false;
            arm_timer(s, cl->timeout_tunnel);
        }
        return 1;
    }
}
