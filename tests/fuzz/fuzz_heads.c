/*
 * libFuzzer target for the proxy's rewriting of heads (lb/http_head.c):
 * the route a client's request takes, the request head sent to the backend
 * (hop-by-hop fields dropped, X-Forwarded-For, Forwarded, Host for
 * HTTP/1.0, the client certificate's subject) and the response head sent
 * back to the client.
 *
 * These functions are static and take a session, so the file is compiled
 * into this target and a session is set up around them: a listener and
 * pools from a real configuration and snapshot (loaded once), and the
 * fields of the session and exchange that the rewrite reads, chosen by
 * byte 0. The rest of the input is a client's request head, or a backend's
 * response head (SEL_RESPONSE), parsed as http_start_request and
 * http_response_head parse them.
 *
 * Invariants (abort() when broken): the route is one of the listener's
 * pools; a rewritten head fits its buffer and is exactly one head that the
 * same parser accepts, with the same request line or status and the same
 * framing (Content-Length, chunked) as what came in, so that the next hop
 * cannot see a different message boundary (request smuggling); no field a
 * client may not send survives (hop-by-hop ones, X-Client-Cert-Subject,
 * and with forwarded_headers X-Forwarded-Proto), and the proxy's own
 * fields appear once each, X-Forwarded-For ending in the peer's address.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../lb/http_head.c"
#include "fuzz_common.h"

#define SEL_RESPONSE 0x01   /* the input is a backend's response head */
#define SEL_FORWARDED 0x02  /* the listener has forwarded_headers */
#define SEL_V6 0x04         /* the client came over IPv6 */
#define SEL_CERT 0x08       /* the client showed a verified certificate */
#define SEL_CLOSE 0x10      /* response: the client connection ends after it */
#define SEL_HTTP10 0x20     /* response: the client spoke HTTP/1.0 */
#define SEL_UPGRADE 0x40    /* response: the client asked for an upgrade */
#define SEL_HEAD 0x80       /* response: to a HEAD request */
#define SEL_BEHIND SEL_CERT /* response: behind an interim answer in the buffer */

#define CERT "CN=client.example"

static const char conf_text[] =
    "listeners:\n"
    "  - name: web\n"
    "    bind: 127.0.0.1:1\n"
    "    mode: http\n"
    "    pool: web\n"
    "    routes:\n"
    "      - { match: { host: api.example.com, path_prefix: /v1/ }, pool: api }\n"
    "      - { match: { host: '*.example.org' }, pool: empty }\n"
    "      - { match: { path_prefix: /static/ }, pool: web }\n"
    "pools:\n"
    "  web:\n"
    "    servers:\n"
    "      - { name: web1, address: '127.0.0.1:8080' }\n"
    "      - { name: web2, address: '[::1]:8081' }\n"
    "  api:\n"
    "    servers:\n"
    "      - { name: api1, address: '127.0.0.2:9000' }\n"
    "  empty:\n"
    "    servers: []\n";

static struct lb_snapshot *snap;

static void
setup(void)
{
    const char *tmp = getenv("TMPDIR");
    char path[256];
    struct conf *c = NULL;

    snprintf(path, sizeof(path), "%s/tern-fuzz-heads-%d.yaml", tmp ? tmp : "/tmp", (int)getpid());
    FILE *f = fopen(path, "w");
    check(f != NULL && fputs(conf_text, f) >= 0 && fclose(f) == 0);
    FILE *devnull = fopen("/dev/null", "w");
    check(conf_load(path, devnull, &c) == 0 && c != NULL);
    fclose(devnull);
    unlink(path);
    snap = lb_snapshot_new(c);
    check(snap != NULL && c->nlisteners == 1);
}

/* How many header fields named name (lower case) the head has. */
static size_t
count(const struct http1_header *hs, size_t n, const char *name)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += http1_str_ieq(hs[i].name, name);
    return k;
}

static struct http1_str
field(const struct http1_header *hs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (http1_str_ieq(hs[i].name, name))
            return hs[i].value;
    return (struct http1_str){NULL, 0};
}

static bool
same(struct http1_str a, struct http1_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void
fuzz_request(struct http_sess *s, struct conf_listener *cl, const char *buf, size_t len,
             uint8_t sel)
{
    /* As http_start_request sets them. */
    struct http1_limits lim = {
        .max_request_line = LB_BUF_SIZE - 2048,
        .max_head = LB_BUF_SIZE - 2048,
        .max_headers = HTTP1_MAX_HEADERS,
    };
    struct http1_request r, o;

    if (http1_parse_request(buf, len, &lim, &r) <= 0 || r.meth == HTTP1_M_CONNECT)
        return;
    int pool = route(cl, &r);
    check(pool >= 0 && (size_t)pool < snap->npools);
    s->x->pool = (int16_t)pool;
    s->x->upgrade = r.f.conn_upgrade && r.f.has_upgrade && r.minor_version == 1;

    char *out = malloc(LB_BUF_SIZE);
    struct lb_buf dst = {out, 0, 0};
    check(out != NULL);
    if (build_request_head(s, &r, &dst) < 0) {
        free(out);
        return; /* 431: it does not fit */
    }
    check(dst.head == 0 && dst.tail <= LB_BUF_SIZE);

    /* What the backend reads: one whole head, the same message. */
    struct http1_limits roomy = {LB_BUF_SIZE, LB_BUF_SIZE, HTTP1_MAX_HEADERS};
    ssize_t n = http1_parse_request(out, dst.tail, &roomy, &o);
    if (n == HTTP1_ERROR && o.error_status == 431 && r.nheaders + 6 > HTTP1_MAX_HEADERS) {
        /* The proxy adds up to six fields (Host, Connection,
         * X-Client-Cert-Subject, X-Forwarded-For, X-Forwarded-Proto,
         * Forwarded): past the parser's own count limit this check cannot
         * read the head back (a backend with a larger limit can). */
        free(out);
        return;
    }
    check(n == (ssize_t)dst.tail);
    check(same(o.method, r.method) && same(o.target, r.target) &&
          o.minor_version == r.minor_version);
    check(o.f.content_length == r.f.content_length && o.f.chunked == r.f.chunked);
    check(r.host.len == 0 || same(o.host, r.host));

    check(count(o.headers, o.nheaders, "keep-alive") == 0 &&
          count(o.headers, o.nheaders, "proxy-connection") == 0 &&
          count(o.headers, o.nheaders, "te") == 0 &&
          count(o.headers, o.nheaders, "proxy-authorization") == 0);
    check(count(o.headers, o.nheaders, "connection") <= 1);
    check(count(o.headers, o.nheaders, "upgrade") == 0 || s->x->upgrade);
    size_t certs = count(o.headers, o.nheaders, "x-client-cert-subject");
    check(sel & SEL_CERT ? certs == 1 && same(field(o.headers, o.nheaders, "x-client-cert-subject"),
                                              (struct http1_str){CERT, strlen(CERT)})
                         : certs == 0);
    if (cl->forwarded_headers) {
        check(count(o.headers, o.nheaders, "x-forwarded-for") == 1 &&
              count(o.headers, o.nheaders, "x-forwarded-proto") == 1 &&
              count(o.headers, o.nheaders, "forwarded") == 1);
        struct http1_str xff = field(o.headers, o.nheaders, "x-forwarded-for");
        const char *ip = sel & SEL_V6 ? "::1" : "192.0.2.7";
        size_t il = strlen(ip);
        check(xff.len >= il && memcmp(xff.p + xff.len - il, ip, il) == 0);
        check(
            same(field(o.headers, o.nheaders, "x-forwarded-proto"), (struct http1_str){"http", 4}));
    }
    free(out);
}

static void
fuzz_response(struct http_sess *s, const char *buf, size_t len, uint8_t sel)
{
    struct http1_response r, o;

    s->x->minor = sel & SEL_HTTP10 ? 0 : 1;
    s->x->upgrade = (sel & SEL_UPGRADE) && !(sel & SEL_HTTP10);
    s->x->meth = sel & SEL_HEAD ? HTTP1_M_HEAD : HTTP1_M_GET;
    s->client_close = sel & SEL_CLOSE;
    if (http1_parse_response(buf, len, LB_BUF_SIZE - 2048, &r) <= 0)
        return;
    /* As http_response_head decides. */
    bool interim = r.status >= 100 && r.status < 200 && !(r.status == 101 && s->x->upgrade);
    if (r.status == 101 && !s->x->upgrade)
        return; /* 502 */

    /* Behind an interim answer already in the buffer, as it would be. */
    char *out = malloc(LB_BUF_SIZE);
    check(out != NULL);
    memcpy(out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    struct lb_buf dst = {out, 0, (sel & SEL_BEHIND) ? 25 : 0};
    if (build_response_head(s, &r, &dst, interim) < 0) {
        free(out);
        return; /* 502 */
    }
    check(dst.tail <= LB_BUF_SIZE);

    const char *h = out + ((sel & SEL_BEHIND) ? 25 : 0);
    size_t hl = dst.tail - (size_t)(h - out);
    ssize_t n = http1_parse_response(h, hl, LB_BUF_SIZE, &o);
    if (n == HTTP1_ERROR && r.nheaders + 1 > HTTP1_MAX_HEADERS &&
        strcmp(o.error, "too many header fields") == 0) {
        /* The proxy adds a Connection field: past the parser's own count
         * limit this check cannot read the head back (a client with a
         * larger limit can), as with requests above. */
        free(out);
        return;
    }
    check(n == (ssize_t)hl);
    check(o.status == r.status && o.minor_version == 1 && same(o.reason, r.reason));
    check(o.f.content_length == r.f.content_length && o.f.chunked == r.f.chunked);
    check(count(o.headers, o.nheaders, "keep-alive") == 0 &&
          count(o.headers, o.nheaders, "proxy-connection") == 0 &&
          count(o.headers, o.nheaders, "te") == 0);
    check(count(o.headers, o.nheaders, "connection") <= 1);
    check(count(o.headers, o.nheaders, "upgrade") == 0 || r.status == 101);
    /* A client told the connection ends hears so on the final answer. */
    if (!interim && r.status != 101 && s->client_close)
        check(o.f.conn_close);
    free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (snap == NULL)
        setup();

    uint8_t sel = data[0];
    size_t len = size - 1;
    char *buf = malloc(len ? len : 1);
    check(buf != NULL);
    memcpy(buf, data + 1, len);

    struct conf_listener cl = snap->conf->listeners[0];
    cl.forwarded_headers = sel & SEL_FORWARDED;
    struct lb_listener l = {.cf = &cl};
    struct lb_wgen gen = {.snap = snap};
    struct http_exch x = {.srv = -1};
    struct http_sess s = {.l = &l, .gen = &gen, .x = &x};
    static const uint8_t v4[4] = {192, 0, 2, 7};
    if (sel & SEL_V6) {
        s.peer_family = AF_INET6;
        s.peer[15] = 1;
    } else {
        s.peer_family = AF_INET;
        memcpy(s.peer, v4, 4);
    }
    s.cert_subject = sel & SEL_CERT ? CERT : NULL;

    if (sel & SEL_RESPONSE)
        fuzz_response(&s, buf, len, sel);
    else
        fuzz_request(&s, &cl, buf, len, sel);
    free(buf);
    return 0;
}
