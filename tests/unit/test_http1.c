/*
 * Unit tests for the HTTP/1.1 parser (lb/http1.c).
 *
 * The parser is the proxy's defence against request smuggling, so most tests
 * are tables of inputs with the exact outcome expected: valid heads with every
 * field the parser reports, every known framing trick with the status a client
 * must get, limits, byte-class boundaries checked for all 256 byte values, and
 * the chunked scanner fed in every possible split. Every input is copied into
 * a heap block of its exact size so that ASan catches any read past the end.
 * A small throughput benchmark prints to stdout and asserts nothing.
 */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lb/http1.h"

#define CHECK(name, cond)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail_msg("%s: check failed: %s (line %d)", (name), #cond, __LINE__);                   \
    } while (0)

#define CHECK_INT(name, got, want)                                                                 \
    do {                                                                                           \
        long long g_ = (long long)(got), w_ = (long long)(want);                                   \
        if (g_ != w_)                                                                              \
            fail_msg("%s: %s = %lld, want %lld (line %d)", (name), #got, g_, w_, __LINE__);        \
    } while (0)

#define CHECK_STR(name, got, want) check_str((name), #got, (got), (want), __LINE__)

static const struct http1_limits lim_std = {
    .max_request_line = 8192,
    .max_head = 65536,
    .max_headers = HTTP1_MAX_HEADERS,
};

static void
check_str(const char *name, const char *what, struct http1_str s, const char *want, int line)
{
    size_t n = strlen(want);
    if (s.len != n || (n && memcmp(s.p, want, n) != 0))
        fail_msg("%s: %s = '%.*s', want '%s' (line %d)", name, what, (int)s.len, s.p, want, line);
}

/* An exact-size heap copy: a read past the input is an ASan error. */
static char *
dup_exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

static ssize_t
parse_req_n(const char *s, size_t n, const struct http1_limits *lim, struct http1_request *req)
{
    char *b = dup_exact(s, n);
    ssize_t r = http1_parse_request(b, n, lim, req);
    free(b);
    return r;
}

static ssize_t
parse_resp_n(const char *s, size_t n, size_t max_head, struct http1_response *resp)
{
    char *b = dup_exact(s, n);
    ssize_t r = http1_parse_response(b, n, max_head, resp);
    free(b);
    return r;
}

/* ------------------------------------------------------------------------ */
/* Valid requests                                                           */

struct req_case {
    const char *name;
    const char *head;
    const char *body; /* bytes after the head in the same buffer, or NULL */
    enum http1_method meth;
    const char *method, *target, *path, *host;
    int minor;
    int64_t cl;
    bool chunked, close, keep_alive, conn_upgrade, has_upgrade, expect;
    size_t nheaders;
    const char *upgrade;
};

static const struct req_case valid_requests[] = {
    {"simple GET", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", NULL, HTTP1_M_GET, "GET", "/",
     "/", "example.com", 1, -1, .nheaders = 1},
    {"query and headers",
     "GET /a/b?x=1&y=/2 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t/1.0\r\n"
     "Accept: */*\r\n\r\n",
     NULL, HTTP1_M_GET, "GET", "/a/b?x=1&y=/2", "/a/b", "example.com:8080", 1, -1, .nheaders = 3},
    {"POST with Content-Length", "POST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n",
     "hello", HTTP1_M_POST, "POST", "/submit", "/submit", "h", 1, 5, .nheaders = 2},
    {"Content-Length zero and leading zeros",
     "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n", "1234567", HTTP1_M_PUT, "PUT",
     "/x", "/x", "h", 1, 7, .nheaders = 2},
    {"Content-Length at the cap",
     "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4611686018427387904\r\n\r\n", NULL, HTTP1_M_PUT,
     "PUT", "/x", "/x", "h", 1, 4611686018427387904LL, .nheaders = 2},
    {"chunked POST", "POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
     "5\r\nhello\r\n0\r\n\r\n", HTTP1_M_POST, "POST", "/u", "/u", "h", 1, -1, .chunked = true,
     .nheaders = 2},
    {"chunked any case with OWS",
     "POST /u HTTP/1.1\r\nTransfer-Encoding: \t CHUNKED \t\r\nHost: h\r\n\r\n", NULL, HTTP1_M_POST,
     "POST", "/u", "/u", "h", 1, -1, .chunked = true, .nheaders = 2},
    {"absolute-form", "GET http://example.com/x/y?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", NULL,
     HTTP1_M_GET, "GET", "http://example.com/x/y?q=1", "/x/y", "example.com", 1, -1, .nheaders = 1},
    {"absolute-form empty path", "GET http://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
     NULL, HTTP1_M_GET, "GET", "http://example.com?q", "/", "example.com", 1, -1, .nheaders = 1},
    {"absolute-form no path", "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", NULL,
     HTTP1_M_GET, "GET", "http://example.com", "/", "example.com", 1, -1, .nheaders = 1},
    {"absolute-form https default port",
     "GET HTTPS://Example.COM:443/ HTTP/1.1\r\nHost: example.com\r\n\r\n", NULL, HTTP1_M_GET, "GET",
     "HTTPS://Example.COM:443/", "/", "Example.COM:443", 1, -1, .nheaders = 1},
    {"absolute-form port both sides",
     "GET http://[::1]:8080/p HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", NULL, HTTP1_M_GET, "GET",
     "http://[::1]:8080/p", "/p", "[::1]:8080", 1, -1, .nheaders = 1},
    {"absolute-form HTTP/1.0 without Host", "GET http://a.example/p HTTP/1.0\r\n\r\n", NULL,
     HTTP1_M_GET, "GET", "http://a.example/p", "/p", "a.example", 0, -1, .nheaders = 0},
    {"CONNECT authority-form", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
     NULL, HTTP1_M_CONNECT, "CONNECT", "example.com:443", "", "example.com:443", 1, -1,
     .nheaders = 1},
    {"CONNECT IPv6", "CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n",
     NULL, HTTP1_M_CONNECT, "CONNECT", "[2001:db8::1]:8443", "", "[2001:db8::1]:8443", 1, -1,
     .nheaders = 1},
    {"OPTIONS asterisk", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_OPTIONS, "OPTIONS",
     "*", "", "h", 1, -1, .nheaders = 1},
    {"OPTIONS origin-form", "OPTIONS /x HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_OPTIONS,
     "OPTIONS", "/x", "/x", "h", 1, -1, .nheaders = 1},
    {"HTTP/1.0 without Host", "GET /old HTTP/1.0\r\n\r\n", NULL, HTTP1_M_GET, "GET", "/old", "/old",
     "", 0, -1, .nheaders = 0},
    {"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", NULL, HTTP1_M_GET,
     "GET", "/", "/", "", 0, -1, .keep_alive = true, .nheaders = 1},
    {"websocket upgrade",
     "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
     "Sec-WebSocket-Version: 13\r\n\r\n",
     NULL, HTTP1_M_GET, "GET", "/ws", "/ws", "h", 1, -1, .keep_alive = true, .conn_upgrade = true,
     .has_upgrade = true, .nheaders = 4, .upgrade = "websocket"},
    {"Connection lists over lines with empty elements",
     "GET / HTTP/1.1\r\nConnection: ,\r\nHost: h\r\nConnection: , TE ,CLOSE,,\r\n\r\n", NULL,
     HTTP1_M_GET, "GET", "/", "/", "h", 1, -1, .close = true, .nheaders = 3},
    {"Expect 100-continue",
     "POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", "abc",
     HTTP1_M_POST, "POST", "/up", "/up", "h", 1, 3, .expect = true, .nheaders = 3},
    {"Expect ignored in HTTP/1.0",
     "POST /up HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", "abc", HTTP1_M_POST,
     "POST", "/up", "/up", "", 0, 3, .nheaders = 2},
    {"other Expect", "POST /up HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n", NULL,
     HTTP1_M_POST, "POST", "/up", "/up", "h", 1, -1, .nheaders = 2},
    {"leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_GET, "GET",
     "/", "/", "h", 1, -1, .nheaders = 1},
    {"four leading empty lines", "\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", NULL,
     HTTP1_M_GET, "GET", "/", "/", "h", 1, -1, .nheaders = 1},
    {"empty values", "GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Blank: \t \r\n\r\n", NULL,
     HTTP1_M_GET, "GET", "/", "/", "h", 1, -1, .nheaders = 3},
    {"obs-text and HTAB in value",
     "GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9 au\tlait, 0123456789 \xff\x80 end\r\n\r\n",
     NULL, HTTP1_M_GET, "GET", "/", "/", "h", 1, -1, .nheaders = 2},
    {"all tchar in name", "GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09AZaz: v\r\nHost: h\r\n\r\n", NULL,
     HTTP1_M_GET, "GET", "/", "/", "h", 1, -1, .nheaders = 2},
    {"all target chars", "GET /!\"$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~ HTTP/1.1\r\nHost: h\r\n\r\n",
     NULL, HTTP1_M_GET, "GET", "/!\"$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~",
     "/!\"$%&'()*+,-./09:;<=>", "h", 1, -1, .nheaders = 1},
    {"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", NULL, HTTP1_M_GET, "GET", "/", "/", "", 1, -1,
     .nheaders = 1},
    {"Host reg-name chars", "GET / HTTP/1.1\r\nHost: a%41-._~!$&'()*+,;=z:\r\n\r\n", NULL,
     HTTP1_M_GET, "GET", "/", "/", "a%41-._~!$&'()*+,;=z:", 1, -1, .nheaders = 1},
    {"Host IPvFuture", "GET / HTTP/1.1\r\nHost: [v1.fe80::a+en1]\r\n\r\n", NULL, HTTP1_M_GET, "GET",
     "/", "/", "[v1.fe80::a+en1]", 1, -1, .nheaders = 1},
    {"HEAD", "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_HEAD, "HEAD", "/", "/", "h", 1, -1,
     .nheaders = 1},
    {"DELETE", "DELETE /r/1 HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_DELETE, "DELETE", "/r/1",
     "/r/1", "h", 1, -1, .nheaders = 1},
    {"PATCH", "PATCH /r HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", NULL, HTTP1_M_PATCH,
     "PATCH", "/r", "/r", "h", 1, 0, .nheaders = 2},
    {"TRACE", "TRACE / HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_TRACE, "TRACE", "/", "/", "h", 1,
     -1, .nheaders = 1},
    {"extension method", "PURGE /c HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_OTHER, "PURGE", "/c",
     "/c", "h", 1, -1, .nheaders = 1},
    {"extension method 4", "COPY /c HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_OTHER, "COPY", "/c",
     "/c", "h", 1, -1, .nheaders = 1},
    {"extension method 6", "UNLOCK /c HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_OTHER, "UNLOCK",
     "/c", "/c", "h", 1, -1, .nheaders = 1},
    {"extension method 7", "CHECKIN /c HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_OTHER, "CHECKIN",
     "/c", "/c", "h", 1, -1, .nheaders = 1},
    {"names as long as the framing ones",
     "GET / HTTP/1.1\r\nDate: x\r\nHost: h\r\nAccept-Charset: utf-8\r\n"
     "If-Modified-Since: y\r\nKeep-Alive: 5\r\nExpect-CT: z\r\nUpgrades: u\r\n\r\n",
     NULL, HTTP1_M_GET, "GET", "/", "/", "h", 1, -1, .nheaders = 7},
    {"absolute-form empty port", "GET http://a.example:/ HTTP/1.1\r\nHost: a.example\r\n\r\n", NULL,
     HTTP1_M_GET, "GET", "http://a.example:/", "/", "a.example:", 1, -1, .nheaders = 1},
    {"methods are case-sensitive", "get / HTTP/1.1\r\nHost: h\r\n\r\n", NULL, HTTP1_M_OTHER, "get",
     "/", "/", "h", 1, -1, .nheaders = 1},
    {"pipelined", "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n", "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
     HTTP1_M_GET, "GET", "/1", "/1", "h", 1, -1, .nheaders = 1},
    {"pipelined after body", "POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n",
     "abGET /2 HTTP/1.1\r\nHost: h\r\n\r\n", HTTP1_M_POST, "POST", "/1", "/1", "h", 1, 2,
     .nheaders = 2},
};

static void
check_request(const struct req_case *c, const struct http1_request *req)
{
    const char *n = c->name;
    CHECK_INT(n, req->meth, c->meth);
    CHECK_STR(n, req->method, c->method);
    CHECK_STR(n, req->target, c->target);
    CHECK_STR(n, req->path, c->path);
    CHECK_STR(n, req->host, c->host);
    CHECK_INT(n, req->minor_version, c->minor);
    CHECK_INT(n, req->f.content_length, c->cl);
    CHECK_INT(n, req->f.chunked, c->chunked);
    CHECK_INT(n, req->f.conn_close, c->close);
    CHECK_INT(n, req->f.conn_keep_alive, c->keep_alive);
    CHECK_INT(n, req->f.conn_upgrade, c->conn_upgrade);
    CHECK_INT(n, req->f.has_upgrade, c->has_upgrade);
    CHECK_STR(n, req->upgrade, c->upgrade ? c->upgrade : "");
    CHECK_INT(n, req->expect_continue, c->expect);
    CHECK_INT(n, req->nheaders, c->nheaders);
    CHECK_INT(n, req->error_status, 0);
}

/* conn_other says whether a Connection header named a field to drop; it is
 * set on every parse, whatever the struct held before. */
static void
test_connection_tokens(void **state)
{
    (void)state;
    static const struct {
        const char *head;
        bool other, close;
    } reqs[] = {
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", false, false},
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", false, false},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Foo, close\r\n\r\n", true, true},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n", false, false},
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        struct http1_request req;
        memset(&req, 0xa5, sizeof(req));
        size_t n = strlen(reqs[i].head);
        CHECK_INT(reqs[i].head, parse_req_n(reqs[i].head, n, &lim_std, &req), n);
        CHECK_INT(reqs[i].head, req.f.conn_other, reqs[i].other);
        CHECK_INT(reqs[i].head, req.f.conn_close, reqs[i].close);
    }
    static const char *const resps[] = {
        "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, X-Hop\r\nContent-Length: 0\r\n\r\n",
    };
    for (size_t i = 0; i < 2; i++) {
        struct http1_response resp;
        memset(&resp, 0xa5, sizeof(resp));
        size_t n = strlen(resps[i]);
        CHECK_INT(resps[i], parse_resp_n(resps[i], n, 65536, &resp), n);
        CHECK_INT(resps[i], resp.f.conn_other, i == 1);
        CHECK_INT(resps[i], resp.f.conn_keep_alive, true);
    }
}

static void
test_valid_requests(void **state)
{
    for (size_t i = 0; i < sizeof(valid_requests) / sizeof(valid_requests[0]); i++) {
        const struct req_case *c = &valid_requests[i];
        size_t hlen = strlen(c->head), blen = c->body ? strlen(c->body) : 0;
        char *buf = malloc(hlen + blen);
        struct http1_request req;

        assert_non_null(buf);
        memcpy(buf, c->head, hlen);
        if (blen)
            memcpy(buf + hlen, c->body, blen);
        /* The head alone, and the head followed by more bytes. */
        CHECK_INT(c->name, http1_parse_request(buf, hlen, &lim_std, &req), hlen);
        check_request(c, &req);
        CHECK_INT(c->name, http1_parse_request(buf, hlen + blen, &lim_std, &req), hlen);
        check_request(c, &req);
        /* Every proper prefix needs more bytes, and none is an error. */
        for (size_t k = 0; k < hlen; k++) {
            ssize_t r = parse_req_n(buf, k, &lim_std, &req);
            if (r != HTTP1_INCOMPLETE)
                fail_msg("%s: prefix of %zu bytes returned %zd (%s)", c->name, k, r,
                         req.error ? req.error : "");
        }
        /* The limits exactly at the head's size still accept it. */
        struct http1_limits tight = {
            .max_request_line = 8192, .max_head = hlen, .max_headers = c->nheaders};
        CHECK_INT(c->name, parse_req_n(buf, hlen, &tight, &req), hlen);
        free(buf);
    }
}

static void
test_header_views(void **state)
{
    static const char in[] = "GET /p HTTP/1.1\r\nHost:  h.example \r\nX-A:b\r\n"
                             "X-Long: \t one two three four five six \t\r\nX-E: \r\n\r\n";
    struct http1_request req;
    char *b = dup_exact(in, sizeof(in) - 1);

    assert_int_equal(http1_parse_request(b, sizeof(in) - 1, &lim_std, &req), sizeof(in) - 1);
    assert_int_equal(req.nheaders, 4);
    CHECK_STR("views", req.headers[0].name, "Host");
    CHECK_STR("views", req.headers[0].value, "h.example");
    CHECK_STR("views", req.headers[1].name, "X-A");
    CHECK_STR("views", req.headers[1].value, "b");
    CHECK_STR("views", req.headers[2].name, "X-Long");
    CHECK_STR("views", req.headers[2].value, "one two three four five six");
    CHECK_STR("views", req.headers[3].name, "X-E");
    CHECK_STR("views", req.headers[3].value, "");
    assert_ptr_equal(req.headers[3].value.p, b + (strstr(in, "X-E: ") - in) + 5);
    CHECK_STR("views", req.host, "h.example");
    assert_ptr_equal(req.host.p, req.headers[0].value.p);
    free(b);
}

static void
test_pipelined_exact(void **state)
{
    static const char in[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t n = sizeof(in) - 1, first = strlen("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    struct http1_request req;
    char *b = dup_exact(in, n);

    assert_int_equal(http1_parse_request(b, n, &lim_std, &req), first);
    CHECK_STR("pipelined", req.path, "/a");
    assert_int_equal(http1_parse_request(b + first, n - first, &lim_std, &req), n - first);
    CHECK_STR("pipelined", req.path, "/b");
    free(b);
}

/* ------------------------------------------------------------------------ */
/* Malformed requests and smuggling vectors                                 */

struct bad_case {
    const char *name;
    const char *in;
    size_t len; /* the literal's, NULs included */
    int status;
};

#define BAD(name, lit, status)                                                                     \
    {                                                                                              \
        name, lit, sizeof(lit) - 1, status                                                         \
    }

#define RL "GET / HTTP/1.1\r\n"
#define PL "POST / HTTP/1.1\r\nHost: h\r\n"

static const struct bad_case bad_requests[] = {
    /* Content-Length / Transfer-Encoding conflicts (RFC 9112 6.1, 6.3). */
    BAD("CL then TE", PL "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("TE then CL", PL "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
    BAD("TE gzip then CL", PL "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n", 501),
    BAD("CL then TE gzip", PL "Content-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    BAD("CL then empty TE", PL "Content-Length: 0\r\nTransfer-Encoding:\r\n\r\n", 400),
    BAD("repeated CL identical", PL "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
    BAD("repeated CL different", PL "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    BAD("repeated CL other case", PL "content-length: 5\r\nCONTENT-LENGTH: 5\r\n\r\n", 400),
    BAD("CL list", PL "Content-Length: 5, 5\r\n\r\n", 400),
    BAD("CL list no space", PL "Content-Length: 5,5\r\n\r\n", 400),
    BAD("CL plus sign", PL "Content-Length: +5\r\n\r\n", 400),
    BAD("CL negative", PL "Content-Length: -1\r\n\r\n", 400),
    BAD("CL inner space", PL "Content-Length: 5 5\r\n\r\n", 400),
    BAD("CL inner tab", PL "Content-Length: 5\t5\r\n\r\n", 400),
    BAD("CL hex", PL "Content-Length: 0x5\r\n\r\n", 400),
    BAD("CL trailing letter", PL "Content-Length: 5a\r\n\r\n", 400),
    BAD("CL decimal point", PL "Content-Length: 5.0\r\n\r\n", 400),
    BAD("CL empty", PL "Content-Length:\r\n\r\n", 400),
    BAD("CL blank", PL "Content-Length:  \r\n\r\n", 400),
    BAD("CL over cap", PL "Content-Length: 4611686018427387905\r\n\r\n", 400),
    BAD("CL overflow", PL "Content-Length: 99999999999999999999999\r\n\r\n", 400),
    BAD("CL uint64 wrap", PL "Content-Length: 18446744073709551621\r\n\r\n", 400),
    BAD("CL vertical tab", PL "Content-Length: \v5\r\n\r\n", 400),
    BAD("CL NUL", PL "Content-Length: 5\0\r\n\r\n", 400),
    BAD("CL space before colon", PL "Content-Length : 5\r\n\r\n", 400),
    BAD("CL tab before colon", PL "Content-Length\t: 5\r\n\r\n", 400),
    BAD("CL obs-fold", PL "X: y\r\n Content-Length: 5\r\n\r\n", 400),
    BAD("CL folded value", PL "Content-Length:\r\n 5\r\n\r\n", 400),
    /* Transfer-Encoding values (RFC 9112 6.1). */
    BAD("TE gzip, chunked", PL "Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    BAD("TE chunked, chunked", PL "Transfer-Encoding: chunked, chunked\r\n\r\n", 501),
    BAD("TE chunked, gzip", PL "Transfer-Encoding: chunked, gzip\r\n\r\n", 501),
    BAD("TE identity", PL "Transfer-Encoding: identity\r\n\r\n", 501),
    BAD("TE gzip", PL "Transfer-Encoding: gzip\r\n\r\n", 501),
    BAD("TE with parameter", PL "Transfer-Encoding: chunked;q=1\r\n\r\n", 501),
    BAD("TE chunked comma", PL "Transfer-Encoding: chunked,\r\n\r\n", 501),
    BAD("TE quoted", PL "Transfer-Encoding: \"chunked\"\r\n\r\n", 501),
    BAD("TE xchunked", PL "Transfer-Encoding: xchunked\r\n\r\n", 501),
    BAD("TE chunked with inner space", PL "Transfer-Encoding: chun ked\r\n\r\n", 501),
    BAD("TE repeated", PL "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("TE repeated other", PL "Transfer-Encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n",
        400),
    BAD("TE empty", PL "Transfer-Encoding:\r\n\r\n", 400),
    BAD("TE blank", PL "Transfer-Encoding: \t \r\n\r\n", 400),
    BAD("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("TE space before colon", PL "Transfer-Encoding : chunked\r\n\r\n", 400),
    BAD("TE vertical tab", PL "Transfer-Encoding:\vchunked\r\n\r\n", 400),
    BAD("TE form feed", PL "Transfer-Encoding: chunked\f\r\n\r\n", 400),
    BAD("TE obs-fold", PL "Transfer-Encoding:\r\n chunked\r\n\r\n", 400),
    BAD("TE bare CR inside", PL "Transfer-Encoding: chunked\rX: y\r\n\r\n", 400),
    /* Line structure (RFC 9112 2.2, 5.1, 5.2). */
    BAD("bare LF everywhere", "GET / HTTP/1.1\nHost: h\n\n", 400),
    BAD("bare LF after request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", 400),
    BAD("bare LF after field", RL "Host: h\n\r\n", 400),
    BAD("bare LF as final line", RL "Host: h\r\n\n", 400),
    BAD("bare CR in request line", "GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("bare CR in value", RL "Host: h\r\nX: a\rb\r\n\r\n", 400),
    BAD("bare CR starting a line", RL "Host: h\r\n\rX: y\r\n\r\n", 400),
    BAD("bare CR CR LF", RL "Host: h\r\r\n\r\n", 400),
    BAD("obs-fold", RL "Host: h\r\nX: a\r\n b\r\n\r\n", 400),
    BAD("obs-fold tab", RL "Host: h\r\nX: a\r\n\tb\r\n\r\n", 400),
    BAD("whitespace before first field", RL " Host: h\r\n\r\n", 400),
    BAD("empty field name", RL "Host: h\r\n: v\r\n\r\n", 400),
    BAD("no colon", RL "Host: h\r\nNoColon\r\n\r\n", 400),
    BAD("space in name", RL "Host: h\r\nX Y: v\r\n\r\n", 400),
    BAD("NUL in name", RL "Host: h\r\nX\0Y: v\r\n\r\n", 400),
    BAD("obs-text in name", RL "Host: h\r\nX\xc3\xa9: v\r\n\r\n", 400),
    BAD("NUL in value", RL "Host: h\r\nX: a\0b\r\n\r\n", 400),
    BAD("DEL in value", RL "Host: h\r\nX: a\x7f\r\n\r\n", 400),
    BAD("ESC in long value",
        RL "Host: h\r\nX: 0123456789abcdef\x1b"
           "0123456789\r\n\r\n",
        400),
    BAD("five leading empty lines", "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("leading bare LF", "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("leading bare CR", "\r\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("leading space", " GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    /* Request-line (RFC 9112 3). */
    BAD("double SP after method", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("double SP before version", "GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("HTAB separator", "GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("trailing SP", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),
    BAD("no version", "GET /\r\nHost: h\r\n\r\n", 400),
    BAD("no target", "GET HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("bad method char", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("lowercase version", "GET / http/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("version suffix", "GET / HTTP/1.1x\r\nHost: h\r\n\r\n", 400),
    BAD("version without minor", "GET / HTTP/1\r\nHost: h\r\n\r\n", 400),
    BAD("version minor not a digit", "GET / HTTP/1.x\r\nHost: h\r\n\r\n", 400),
    BAD("version major not a digit", "GET / HTTP/x.1\r\nHost: h\r\n\r\n", 400),
    BAD("version without dot", "GET / HTTP/1,1\r\nHost: h\r\n\r\n", 400),
    BAD("two-digit major", "GET / HTTP/10.1\r\nHost: h\r\n\r\n", 400),
    BAD("HTTP/1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
    BAD("HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    BAD("HTTP/0.9", "GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505),
    BAD("h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    BAD("NUL in target", "GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("obs-text in target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("fragment in target", "GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("relative target", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("asterisk for GET", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("asterisk plus", "OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("authority-form for GET", "GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("CONNECT origin-form", "CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("CONNECT without port", "CONNECT h HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("CONNECT empty port", "CONNECT h: HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("CONNECT absolute-form", "CONNECT http://h:80/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("CONNECT userinfo", "CONNECT u@h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("CONNECT asterisk", "CONNECT * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("CONNECT without Host", "CONNECT h:443 HTTP/1.1\r\n\r\n", 400),
    BAD("absolute-form other scheme", "GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("absolute-form userinfo", "GET http://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    BAD("absolute-form empty authority", "GET http:///x HTTP/1.1\r\nHost: \r\n\r\n", 400),
    BAD("absolute-form Host mismatch", "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
        400),
    BAD("absolute-form port mismatch",
        "GET http://a.example:81/ HTTP/1.1\r\nHost: a.example\r\n\r\n", 400),
    BAD("absolute-form without Host", "GET http://a.example/ HTTP/1.1\r\n\r\n", 400),
    BAD("absolute-form bad port", "GET http://a.example:8x/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
        400),
    /* Host (RFC 9112 3.2, RFC 3986 3.2.2). */
    BAD("missing Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    BAD("repeated Host", RL "Host: h\r\nHost: h\r\n\r\n", 400),
    BAD("repeated Host other case", RL "Host: h\r\nhOST: g\r\n\r\n", 400),
    BAD("repeated Host in HTTP/1.0", "GET / HTTP/1.0\r\nHost: h\r\nHost: h\r\n\r\n", 400),
    BAD("Host with space", RL "Host: a b\r\n\r\n", 400),
    BAD("Host with userinfo", RL "Host: u@h\r\n\r\n", 400),
    BAD("Host with slash", RL "Host: h/x\r\n\r\n", 400),
    BAD("Host with backslash", RL "Host: h\\x\r\n\r\n", 400),
    BAD("Host bad port", RL "Host: h:8o\r\n\r\n", 400),
    BAD("Host two ports", RL "Host: h:80:80\r\n\r\n", 400),
    BAD("Host only port", RL "Host: :80\r\n\r\n", 400),
    BAD("Host bad percent", RL "Host: a%zzb\r\n\r\n", 400),
    BAD("Host short percent", RL "Host: a%4\r\n\r\n", 400),
    BAD("Host open bracket", RL "Host: [::1\r\n\r\n", 400),
    BAD("Host empty brackets", RL "Host: []\r\n\r\n", 400),
    BAD("Host junk after bracket", RL "Host: [::1]x\r\n\r\n", 400),
    BAD("Host unclosed bracket", RL "Host: [::1}\r\n\r\n", 400),
    BAD("Host bad second hex digit", RL "Host: a%4zb\r\n\r\n", 400),
    BAD("Host obs-text", RL "Host: caf\xc3\xa9\r\n\r\n", 400),
    /* Connection and Upgrade. */
    BAD("Connection non-token", RL "Host: h\r\nConnection: close;x\r\n\r\n", 400),
    BAD("Connection inner space", RL "Host: h\r\nConnection: keep alive\r\n\r\n", 400),
    BAD("repeated Upgrade", RL "Host: h\r\nUpgrade: a\r\nUpgrade: b\r\n\r\n", 400),
};

static void
test_bad_requests(void **state)
{
    for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++) {
        const struct bad_case *c = &bad_requests[i];
        size_t n = c->len;
        struct http1_request req;

        ssize_t r = parse_req_n(c->in, n, &lim_std, &req);
        if (r != HTTP1_ERROR || req.error_status != c->status)
            fail_msg("%s: got %zd status %d (%s), want status %d", c->name, r, req.error_status,
                     req.error ? req.error : "-", c->status);
        assert_non_null(req.error);
        /* A prefix may need more bytes or fail the same way; never succeed. */
        for (size_t k = 0; k < n; k++) {
            r = parse_req_n(c->in, k, &lim_std, &req);
            if (r != HTTP1_INCOMPLETE && (r != HTTP1_ERROR || req.error_status != c->status))
                fail_msg("%s: prefix of %zu bytes returned %zd status %d", c->name, k, r,
                         req.error_status);
        }
    }
}

static void
test_error_reasons(void **state)
{
    static const struct {
        const char *in, *reason;
    } cases[] = {
        {RL "Host: h\r\nX: a\r\n b\r\n\r\n", "obs-fold or leading whitespace"},
        {RL "Host: h\r\nX : a\r\n\r\n", "whitespace before colon"},
        {RL "Host: h\r\n: a\r\n\r\n", "empty field name"},
        {RL "Host: h\nX: a\r\n\r\n", "bare LF"},
        {PL "Content-Length: 1\r\nContent-Length: 1\r\n\r\n", "repeated Content-Length"},
        {PL "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
         "Content-Length with Transfer-Encoding"},
        {"GET / HTTP/1.1\r\n\r\n", "missing Host"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http1_request req;
        assert_int_equal(parse_req_n(cases[i].in, strlen(cases[i].in), &lim_std, &req),
                         HTTP1_ERROR);
        assert_string_equal(req.error, cases[i].reason);
    }
}

/* ------------------------------------------------------------------------ */
/* Limits                                                                   */

static void
test_request_line_limit(void **state)
{
    struct http1_limits lim = {.max_request_line = 32, .max_head = 1024, .max_headers = 10};
    struct http1_request req;
    char line[64], buf[256];

    /* "GET /xxx HTTP/1.1" padded so that the line is exactly 32 and 33 bytes. */
    for (size_t linelen = 30; linelen <= 36; linelen++) {
        size_t tlen = linelen - strlen("GET  HTTP/1.1");
        memset(line, 'x', sizeof(line));
        line[0] = '/';
        int n = snprintf(buf, sizeof(buf), "GET %.*s HTTP/1.1\r\nHost: h\r\n\r\n", (int)tlen, line);
        ssize_t r = parse_req_n(buf, (size_t)n, &lim, &req);
        if (linelen <= 32) {
            assert_int_equal(r, n);
        } else {
            assert_int_equal(r, HTTP1_ERROR);
            assert_int_equal(req.error_status, 414);
        }
        /* While incomplete: 414 as soon as more than 32 line bytes are seen. */
        for (size_t k = 0; k < (size_t)n; k++) {
            r = parse_req_n(buf, k, &lim, &req);
            if (linelen > 32 && k > 32) {
                if (r != HTTP1_ERROR || req.error_status != 414)
                    fail_msg("line %zu prefix %zu: %zd %d", linelen, k, r, req.error_status);
            } else {
                assert_int_equal(r, HTTP1_INCOMPLETE);
            }
        }
    }

    /* An endless request-line is refused without waiting for its end. */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET /", 5);
    assert_int_equal(parse_req_n(buf, sizeof(buf), &lim, &req), HTTP1_ERROR);
    assert_int_equal(req.error_status, 414);
    assert_int_equal(parse_req_n(buf, 33, &lim, &req), HTTP1_ERROR);
    assert_int_equal(parse_req_n(buf, 32, &lim, &req), HTTP1_INCOMPLETE);
    /* A line ending exactly at the limit with its CR still pending is not too long. */
    memcpy(buf + 32, "\r", 1);
    assert_int_equal(parse_req_n(buf, 33, &lim, &req), HTTP1_INCOMPLETE);
}

static void
test_head_limit(void **state)
{
    static const char base[] = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
    struct http1_request req;
    char buf[512];

    /* A complete request-line longer than the whole head limit. */
    struct http1_limits tiny = {.max_request_line = 100, .max_head = 15, .max_headers = 10};
    assert_int_equal(parse_req_n(base, 16, &tiny, &req), HTTP1_ERROR);
    assert_int_equal(req.error_status, 431);
    tiny.max_head = 16;
    assert_int_equal(parse_req_n(base, 16, &tiny, &req), HTTP1_INCOMPLETE);

    for (size_t max = 40; max < 200; max += 7) {
        struct http1_limits lim = {.max_request_line = 100, .max_head = max, .max_headers = 10};
        for (size_t total = 40; total < 220; total += 3) {
            /* A head of exactly `total` bytes. */
            size_t pad = total - (sizeof(base) - 1) - 4;
            memcpy(buf, base, sizeof(base) - 1);
            memset(buf + sizeof(base) - 1, 'v', pad);
            memcpy(buf + total - 4, "\r\n\r\n", 4);
            ssize_t r = parse_req_n(buf, total, &lim, &req);
            if (total <= max) {
                assert_int_equal(r, total);
            } else {
                assert_int_equal(r, HTTP1_ERROR);
                assert_int_equal(req.error_status, 431);
            }
            /* Partial heads: 431 once more than max bytes are buffered. */
            for (size_t k = 0; k < total; k++) {
                r = parse_req_n(buf, k, &lim, &req);
                if (k > max) {
                    if (r != HTTP1_ERROR || req.error_status != 431)
                        fail_msg("max %zu total %zu prefix %zu: %zd", max, total, k, r);
                } else {
                    assert_int_equal(r, HTTP1_INCOMPLETE);
                }
            }
        }
    }
}

static void
test_header_count_limit(void **state)
{
    struct http1_request req;
    char buf[8192];

    for (size_t max = 0; max <= 12; max++) {
        struct http1_limits lim = {.max_request_line = 100, .max_head = 8192, .max_headers = max};
        for (size_t nh = 1; nh <= 14; nh++) {
            size_t n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: h\r\n");
            for (size_t i = 1; i < nh; i++)
                n += (size_t)sprintf(buf + n, "X-%zu: v\r\n", i);
            n += (size_t)sprintf(buf + n, "\r\n");
            ssize_t r = parse_req_n(buf, n, &lim, &req);
            if (nh <= max) {
                assert_int_equal(r, n);
                assert_int_equal(req.nheaders, nh);
            } else {
                assert_int_equal(r, HTTP1_ERROR);
                assert_int_equal(req.error_status, 431);
            }
        }
    }

    /* A configured limit above the array size is capped at HTTP1_MAX_HEADERS. */
    struct http1_limits big = {.max_request_line = 100, .max_head = 8192, .max_headers = 1000};
    for (size_t nh = HTTP1_MAX_HEADERS; nh <= HTTP1_MAX_HEADERS + 1; nh++) {
        size_t n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: h\r\n");
        for (size_t i = 1; i < nh; i++)
            n += (size_t)sprintf(buf + n, "X-%zu: v\r\n", i);
        n += (size_t)sprintf(buf + n, "\r\n");
        ssize_t r = parse_req_n(buf, n, &big, &req);
        if (nh == HTTP1_MAX_HEADERS) {
            assert_int_equal(r, n);
        } else {
            assert_int_equal(r, HTTP1_ERROR);
            assert_int_equal(req.error_status, 431);
        }
    }
}

static void
test_null_and_huge_limits(void **state)
{
    static const char in[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    struct http1_request req;
    assert_int_equal(parse_req_n(in, sizeof(in) - 1, NULL, &req), sizeof(in) - 1);

    /* Limits at SIZE_MAX mean "no limit" and must not wrap. */
    struct http1_limits none = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    assert_int_equal(parse_req_n(in, sizeof(in) - 1, &none, &req), sizeof(in) - 1);
    assert_int_equal(parse_req_n(in, 10, &none, &req), HTTP1_INCOMPLETE);
}

/* ------------------------------------------------------------------------ */
/* Byte classes, checked for all 256 values against the RFC definitions     */

static bool
ref_tchar(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool
ref_fval(int c)
{
    return c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80;
}

static bool
ref_regname(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("-._~!$&'()*+,;=", c) != NULL);
}

static void
test_byte_classes(void **state)
{
    struct http1_request req;
    char buf[128];

    for (int c = 0; c < 256; c++) {
        char name[32];
        ssize_t r;
        size_t n;

        snprintf(name, sizeof(name), "byte 0x%02x", c);

        /* In a field name: tchar, or ':' which just ends the name early. */
        n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: h\r\nXaY: v\r\n\r\n");
        buf[26] = (char)c;
        r = parse_req_n(buf, n, &lim_std, &req);
        if (ref_tchar(c) || c == ':')
            CHECK_INT(name, r, n);
        else
            CHECK(name, r == HTTP1_ERROR && req.error_status == 400);

        /* In a field value. */
        n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789a123456789\r\n\r\n");
        for (size_t pos = 28; pos < 48; pos += 5) {
            char save = buf[pos];
            buf[pos] = (char)c;
            r = parse_req_n(buf, n, &lim_std, &req);
            if (ref_fval(c))
                CHECK_INT(name, r, n);
            else
                CHECK(name, r == HTTP1_ERROR && req.error_status == 400);
            buf[pos] = save;
        }

        /* In a method. */
        n = (size_t)sprintf(buf, "GaT / HTTP/1.1\r\nHost: h\r\n\r\n");
        buf[1] = (char)c;
        r = parse_req_n(buf, n, &lim_std, &req);
        if (ref_tchar(c))
            CHECK_INT(name, r, n);
        else
            CHECK(name, r == HTTP1_ERROR && req.error_status == 400);

        /* In an origin-form target: visible ASCII except '#'. */
        n = (size_t)sprintf(buf, "GET /aXb HTTP/1.1\r\nHost: h\r\n\r\n");
        buf[6] = (char)c;
        r = parse_req_n(buf, n, &lim_std, &req);
        if (c >= 0x21 && c <= 0x7e && c != '#')
            CHECK_INT(name, r, n);
        else
            CHECK(name, r == HTTP1_ERROR && req.error_status == 400);

        /* In a Host reg-name. */
        n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: aXb\r\n\r\n");
        buf[23] = (char)c;
        r = parse_req_n(buf, n, &lim_std, &req);
        if (ref_regname(c))
            CHECK_INT(name, r, n);
        else
            CHECK(name, r == HTTP1_ERROR && req.error_status == 400);

        /* In a response reason phrase. */
        struct http1_response resp;
        n = (size_t)sprintf(buf, "HTTP/1.1 200 OaK\r\n\r\n");
        buf[14] = (char)c;
        r = parse_resp_n(buf, n, 1024, &resp);
        if (ref_fval(c))
            CHECK_INT(name, r, n);
        else
            CHECK(name, r == HTTP1_ERROR);
    }
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                */

struct resp_case {
    const char *name;
    const char *head;
    int status;
    const char *reason;
    int minor;
    int64_t cl;
    bool chunked, close, keep_alive, conn_upgrade, has_upgrade;
    size_t nheaders;
};

static const struct resp_case valid_responses[] = {
    {"200 with CL", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, "OK", 1, 5, .nheaders = 1},
    {"204", "HTTP/1.1 204 No Content\r\n\r\n", 204, "No Content", 1, -1, .nheaders = 0},
    {"HTTP/1.0", "HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", 200, "OK", 0, -1, .nheaders = 1},
    {"empty reason", "HTTP/1.1 200 \r\n\r\n", 200, "", 1, -1, .nheaders = 0},
    {"no SP before empty reason", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", 404, "", 1, 0,
     .nheaders = 1},
    {"reason with tab and obs-text", "HTTP/1.1 200 Tr\xc3\xa8s\tbien  \r\n\r\n", 200,
     "Tr\xc3\xa8s\tbien  ", 1, -1, .nheaders = 0},
    {"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200, "OK", 1, -1,
     .chunked = true, .nheaders = 1},
    {"gzip then chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", 200, "OK",
     1, -1, .chunked = true, .nheaders = 1},
    {"TE over two lines",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 200, "OK",
     1, -1, .chunked = true, .nheaders = 2},
    {"chunked not final: close-delimited",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 200, "OK", 1, -1,
     .nheaders = 1},
    {"gzip only: close-delimited", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 200, "OK",
     1, -1, .nheaders = 1},
    {"upgrade",
     "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 101,
     "Switching Protocols", 1, -1, .conn_upgrade = true, .has_upgrade = true, .nheaders = 2},
    {"close", "HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 3\r\n\r\n", 500, "Oops", 1,
     3, .close = true, .nheaders = 2},
    {"keep-alive 1.0", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n",
     200, "OK", 0, 3, .keep_alive = true, .nheaders = 2},
    {"100 continue", "HTTP/1.1 100 Continue\r\n\r\n", 100, "Continue", 1, -1, .nheaders = 0},
    {"status 999", "HTTP/1.1 999 Whatever\r\n\r\n", 999, "Whatever", 1, -1, .nheaders = 0},
    {"many fields",
     "HTTP/1.1 302 Found\r\nLocation: /x\r\nSet-Cookie: a=b\r\nSet-Cookie: c=d\r\n\r\n", 302,
     "Found", 1, -1, .nheaders = 3},
    {"request-only fields are ignored",
     "HTTP/1.1 200 OK\r\nHost: a b\r\nHost: c\r\nExpect: 100-continue\r\n\r\n", 200, "OK", 1, -1,
     .nheaders = 3},
};

static void
test_valid_responses(void **state)
{
    for (size_t i = 0; i < sizeof(valid_responses) / sizeof(valid_responses[0]); i++) {
        const struct resp_case *c = &valid_responses[i];
        const char *n = c->name;
        size_t hlen = strlen(c->head);
        struct http1_response resp;
        char *b = dup_exact(c->head, hlen);

        CHECK_INT(n, http1_parse_response(b, hlen, 65536, &resp), hlen);
        CHECK_INT(n, resp.status, c->status);
        CHECK_STR(n, resp.reason, c->reason);
        CHECK_INT(n, resp.minor_version, c->minor);
        CHECK_INT(n, resp.f.content_length, c->cl);
        CHECK_INT(n, resp.f.chunked, c->chunked);
        CHECK_INT(n, resp.f.conn_close, c->close);
        CHECK_INT(n, resp.f.conn_keep_alive, c->keep_alive);
        CHECK_INT(n, resp.f.conn_upgrade, c->conn_upgrade);
        CHECK_INT(n, resp.f.has_upgrade, c->has_upgrade);
        CHECK_INT(n, resp.nheaders, c->nheaders);
        CHECK(n, resp.error == NULL);
        free(b);
        for (size_t k = 0; k < hlen; k++)
            CHECK_INT(n, parse_resp_n(c->head, k, 65536, &resp), HTTP1_INCOMPLETE);
        CHECK_INT(n, parse_resp_n(c->head, hlen, hlen, &resp), hlen);
        CHECK_INT(n, parse_resp_n(c->head, hlen, hlen - 1, &resp), HTTP1_ERROR);
    }
}

static const char *const bad_responses[] = {
    "HTTP/1.1 099 Low\r\n\r\n",
    "HTTP/1.1 20 OK\r\n\r\n",
    "HTTP/1.1 2000 OK\r\n\r\n",
    "HTTP/1.1 20x OK\r\n\r\n",
    "HTTP/1.1  200 OK\r\n\r\n",
    "HTTP/1.1 200OK\r\n\r\n",
    "HTTP/1.1x200 OK\r\n\r\n",
    "HTTP/1.1 :00 OK\r\n\r\n",
    "HTTP/1.1 2:0 OK\r\n\r\n",
    "HTTP/1.1 20: OK\r\n\r\n",
    "\nHTTP/1.1 200 OK\r\n\r\n",
    "HTTP/1.2 200 OK\r\n\r\n",
    "HTTP/2 200 OK\r\n\r\n",
    "HTTP/2.0 200 OK\r\n\r\n",
    "http/1.1 200 OK\r\n\r\n",
    " HTTP/1.1 200 OK\r\n\r\n",
    "\r\nHTTP/1.1 200 OK\r\n\r\n",
    "HTTP/1.1 200 OK\n\r\n",
    "HTTP/1.1 200 OK\r\n\n",
    "HTTP/1.1 200 O\rK\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: , ,\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
    "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
    "HTTP/1.1 200 OK\r\n: a\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n",
    "HTTP/1.1 200 OK\r\nConnection: a b\r\n\r\n",
    "HTTP/1.1 101 S\r\nUpgrade: a\r\nUpgrade: b\r\n\r\n",
};

static void
test_bad_responses(void **state)
{
    for (size_t i = 0; i < sizeof(bad_responses) / sizeof(bad_responses[0]); i++) {
        const char *in = bad_responses[i];
        struct http1_response resp;
        ssize_t r = parse_resp_n(in, strlen(in), 65536, &resp);
        if (r != HTTP1_ERROR || resp.error == NULL)
            fail_msg("bad response %zu (%s): got %zd", i, in, r);
        for (size_t k = 0; k < strlen(in); k++) {
            r = parse_resp_n(in, k, 65536, &resp);
            if (r > 0)
                fail_msg("bad response %zu: prefix %zu accepted", i, k);
        }
    }

    /* Too many fields, and a head that outgrows max_head while incomplete. */
    char buf[4096];
    struct http1_response resp;
    size_t n = (size_t)sprintf(buf, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i <= HTTP1_MAX_HEADERS; i++)
        n += (size_t)sprintf(buf + n, "X: %d\r\n", i);
    n += (size_t)sprintf(buf + n, "\r\n");
    assert_int_equal(parse_resp_n(buf, n, sizeof(buf), &resp), HTTP1_ERROR);
    assert_non_null(resp.error);
    assert_int_equal(parse_resp_n(buf, 200, 199, &resp), HTTP1_ERROR);
    assert_int_equal(parse_resp_n(buf, 199, 199, &resp), HTTP1_INCOMPLETE);
}

static void
test_response_has_body(void **state)
{
    static const struct {
        enum http1_method meth;
        int status;
        bool body;
    } cases[] = {
        {HTTP1_M_GET, 200, true},     {HTTP1_M_GET, 100, false},     {HTTP1_M_GET, 101, false},
        {HTTP1_M_GET, 199, false},    {HTTP1_M_GET, 204, false},     {HTTP1_M_GET, 205, true},
        {HTTP1_M_GET, 304, false},    {HTTP1_M_GET, 301, true},      {HTTP1_M_GET, 404, true},
        {HTTP1_M_GET, 500, true},     {HTTP1_M_HEAD, 200, false},    {HTTP1_M_HEAD, 404, false},
        {HTTP1_M_HEAD, 500, false},   {HTTP1_M_CONNECT, 200, false}, {HTTP1_M_CONNECT, 299, false},
        {HTTP1_M_CONNECT, 407, true}, {HTTP1_M_CONNECT, 302, true},  {HTTP1_M_POST, 201, true},
        {HTTP1_M_OPTIONS, 200, true}, {HTTP1_M_OTHER, 200, true},    {HTTP1_M_DELETE, 204, false},
        {HTTP1_M_PUT, 304, false},    {HTTP1_M_GET, 999, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (http1_response_has_body(cases[i].meth, cases[i].status) != cases[i].body)
            fail_msg("has_body(%d, %d) != %d", cases[i].meth, cases[i].status, cases[i].body);
    }
}

static void
test_str_ieq(void **state)
{
    struct http1_str s = {"ChUnKeD", 7};
    assert_true(http1_str_ieq(s, "chunked"));
    assert_false(http1_str_ieq(s, "chunke"));
    assert_false(http1_str_ieq(s, "chunkedx"));
    s.len = 6;
    assert_true(http1_str_ieq(s, "chunke"));
    s.len = 0;
    assert_true(http1_str_ieq(s, ""));
    assert_false(http1_str_ieq(s, "a"));
    /* Only ASCII letters fold: '[' (0x5b) is not '{' (0x7b), '@' is not '`'. */
    struct http1_str t = {"[@", 2};
    assert_false(http1_str_ieq(t, "{`"));
    struct http1_str u = {"\xc9", 1};
    assert_false(http1_str_ieq(u, "\xe9"));
}

/* ------------------------------------------------------------------------ */
/* Chunked bodies                                                           */

static const char *const valid_chunked[] = {
    "0\r\n\r\n",
    "5\r\nhello\r\n0\r\n\r\n",
    "A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
    "1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n",
    "4\r\n\r\n\r\n\r\n0\r\n\r\n",
    "5;ext=1\r\nhello\r\n0;last\r\n\r\n",
    "5 ;ext\r\nhello\r\n0\t; a = b ; c=\"q s;\\\"\"\r\n\r\n",
    "5 \t ;x\r\nhello\r\n0\r\n\r\n",
    "5;a=\xc3\xa9\tb\r\nhello\r\n0\r\n\r\n",
    "0\r\nX-Sum: abc\r\nY:\r\nZ: \t\xff v\r\n\r\n",
    "000000000000000F\r\n0123456789abcde\r\n00\r\n\r\n",
    "fF\r\n"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"
    "\r\n0\r\n\r\n",
};

struct lit {
    const char *s;
    size_t len;
};
#define LIT(s)                                                                                     \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }

static const struct lit bad_chunked[] = {
    LIT("\r\n"),
    LIT("0x5\r\nhello\r\n0\r\n\r\n"),
    LIT("-1\r\n"),
    LIT("+1\r\na\r\n0\r\n\r\n"),
    LIT(" 5\r\nhello\r\n0\r\n\r\n"),
    LIT("5 \r\nhello\r\n0\r\n\r\n"),
    LIT("5\nhello\r\n0\r\n\r\n"),
    LIT("5\r\nhello\n0\r\n\r\n"),
    LIT("5\r\nhelloX\r\n0\r\n\r\n"),
    LIT("5\r\nhello\r\r\n0\r\n\r\n"),
    LIT("5\r\nhello0\r\n\r\n"),
    LIT("5\rhello\r\n0\r\n\r\n"),
    LIT("00000000000000001\r\na\r\n0\r\n\r\n"),
    LIT("g\r\n"),
    LIT("5;a\x01\r\nhello\r\n0\r\n\r\n"),
    LIT("5;a\nb\r\nhello\r\n0\r\n\r\n"),
    LIT("5;a\x7f\r\nhello\r\n0\r\n\r\n"),
    LIT("5;a\rb\r\nhello\r\n0\r\n\r\n"),
    LIT("0\r\n X: y\r\n\r\n"),
    LIT("0\r\nX : y\r\n\r\n"),
    LIT("0\r\n: y\r\n\r\n"),
    LIT("0\r\nX\r\n\r\n"),
    LIT("0\r\nX: y\n\r\n"),
    LIT("0\r\nX: y\r\r\n\r\n"),
    LIT("0\r\nX: y\r\n\n"),
    LIT("0\r\n\n"),
    LIT("0\r\n\r\r"),
    LIT("0\r\nX: \x7f\r\n\r\n"),
    LIT("0\r\nX: \0\r\n\r\n"),
    LIT("0\n\r\n"),
    LIT("0\r\r\n\r\n"),
    LIT(";\r\n"),
};

/* Scans in pieces of the given sizes (0-terminated list, then the rest). */
static ssize_t
scan_pieces(const char *in, size_t n, size_t split, bool bytewise, bool *done)
{
    struct http1_chunked c = {0};
    char *b = dup_exact(in, n);
    size_t off = 0;
    ssize_t total = 0;

    *done = false;
    while (off < n && !*done) {
        size_t len = bytewise ? 1 : (off < split ? split - off : n - off);
        ssize_t r = http1_chunked_scan(&c, b + off, len, done);
        if (r < 0) {
            total = -1;
            break;
        }
        assert_true((size_t)r <= len);
        if (!*done)
            assert_int_equal(r, len);
        total += r;
        off += len;
    }
    free(b);
    return total;
}

static void
test_chunked_valid(void **state)
{
    static const char tail[] = "GET / HTTP/1.1\r\n";
    char buf[1024];

    for (size_t i = 0; i < sizeof(valid_chunked) / sizeof(valid_chunked[0]); i++) {
        size_t blen = strlen(valid_chunked[i]);
        size_t n = blen + sizeof(tail) - 1;
        bool done;

        memcpy(buf, valid_chunked[i], blen);
        memcpy(buf + blen, tail, sizeof(tail) - 1);
        for (size_t split = 0; split <= n; split++) {
            ssize_t r = scan_pieces(buf, n, split, false, &done);
            if (r != (ssize_t)blen || !done)
                fail_msg("valid chunked %zu split %zu: %zd done %d, want %zu", i, split, r, done,
                         blen);
        }
        assert_int_equal(scan_pieces(buf, n, 0, true, &done), blen);
        assert_true(done);
        /* Every proper prefix is consumed whole and is not done. */
        for (size_t k = 0; k < blen; k++) {
            struct http1_chunked c = {0};
            char *b = dup_exact(buf, k);
            assert_int_equal(http1_chunked_scan(&c, b, k, &done), k);
            assert_false(done);
            free(b);
        }
    }
}

static void
test_chunked_invalid(void **state)
{
    for (size_t i = 0; i < sizeof(bad_chunked) / sizeof(bad_chunked[0]); i++) {
        const char *in = bad_chunked[i].s;
        size_t n = bad_chunked[i].len;
        bool done;

        for (size_t split = 0; split <= n; split++) {
            ssize_t r = scan_pieces(in, n, split, false, &done);
            if (r != -1)
                fail_msg("bad chunked %zu split %zu: %zd done %d", i, split, r, done);
        }
        assert_int_equal(scan_pieces(in, n, 0, true, &done), -1);
    }
}

/* data_bytes adds up the chunk sizes (what max_body_size limits), split
 * anywhere, and saturates instead of wrapping. */
static void
test_chunked_data_bytes(void **state)
{
    static const char in[] = "a\r\n0123456789\r\n1F;x=y\r\n0123456789012345678901234567890\r\n"
                             "0\r\n\r\n";
    size_t n = sizeof(in) - 1;
    bool done;

    for (size_t split = 0; split <= n; split++) {
        struct http1_chunked c = {0};
        assert_int_equal(http1_chunked_scan(&c, in, split, &done), split);
        assert_int_equal(http1_chunked_scan(&c, in + split, n - split, &done), n - split);
        assert_true(done);
        assert_int_equal(c.data_bytes, 10 + 31);
    }
    struct http1_chunked c = {0};
    const char *huge = "FFFFFFFFFFFFFFFF\r\n";
    assert_int_equal(http1_chunked_scan(&c, huge, strlen(huge), &done), strlen(huge));
    c.remaining = 0;
    c.state = 0; /* as if that chunk had passed: a second one of the same size */
    assert_int_equal(http1_chunked_scan(&c, huge, strlen(huge), &done), strlen(huge));
    assert_true(c.data_bytes == UINT64_MAX);
}

static void
test_chunked_state(void **state)
{
    struct http1_chunked c = {0};
    bool done;
    char big[20000];

    /* Errors are sticky. */
    assert_int_equal(http1_chunked_scan(&c, "x", 1, &done), -1);
    assert_int_equal(http1_chunked_scan(&c, "0\r\n\r\n", 5, &done), -1);

    /* Done is sticky and consumes nothing more. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(http1_chunked_scan(&c, "0\r\n\r\nX", 6, &done), 5);
    assert_true(done);
    assert_int_equal(http1_chunked_scan(&c, "X", 1, &done), 0);
    assert_true(done);
    assert_int_equal(http1_chunked_scan(&c, "", 0, &done), 0);
    assert_true(done);

    /* Empty input on a fresh scanner. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(http1_chunked_scan(&c, "", 0, &done), 0);
    assert_false(done);

    /* The largest chunk size: data is skipped without being looked at. */
    memset(&c, 0, sizeof(c));
    assert_int_equal(http1_chunked_scan(&c, "FFFFFFFFFFFFFFFF\r\n", 18, &done), 18);
    assert_int_equal(c.remaining, UINT64_MAX);
    memset(big, 0, sizeof(big));
    assert_int_equal(http1_chunked_scan(&c, big, sizeof(big), &done), sizeof(big));
    assert_int_equal(c.remaining, UINT64_MAX - sizeof(big));
    assert_false(done);

    /* The size line (with extensions) is capped at 4096 bytes. */
    for (size_t len = 4090; len <= 4100; len++) {
        memset(&c, 0, sizeof(c));
        memset(big, 'e', sizeof(big));
        memcpy(big, "0;", 2);
        memcpy(big + len, "\r\n\r\n", 4);
        ssize_t r = http1_chunked_scan(&c, big, len + 4, &done);
        if (len <= 4096)
            assert_int_equal(r, len + 4);
        else
            assert_int_equal(r, -1);
    }

    /* Trailer section capped at 16 KiB, CRLFs included. */
    for (size_t tl = 16380; tl <= 16390; tl++) {
        /* One trailer line "X: vvv...\r\n" then the final CRLF, tl bytes in all. */
        memset(&c, 0, sizeof(c));
        assert_int_equal(http1_chunked_scan(&c, "0\r\n", 3, &done), 3);
        memset(big, 'v', sizeof(big));
        memcpy(big, "X: ", 3);
        memcpy(big + tl - 4, "\r\n\r\n", 4);
        ssize_t r = http1_chunked_scan(&c, big, tl, &done);
        if (tl <= 16384) {
            assert_int_equal(r, tl);
            assert_true(done);
        } else {
            assert_int_equal(r, -1);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Throughput (printed, not asserted)                                        */

static double
now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
test_benchmark(void **state)
{
    static const char in[] =
        "GET /static/js/app.3f9a1c.js?v=20240101&lang=en HTTP/1.1\r\n"
        "Host: www.example.com\r\n"
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36\r\n"
        "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;"
        "q=0.8\r\n"
        "Accept-Language: en-US,en;q=0.9\r\n"
        "Accept-Encoding: gzip, deflate, br\r\n"
        "Referer: https://www.example.com/index.html\r\n"
        "Cookie: session=8f2a9c1d4b7e6f3a2c1d0e9f8a7b6c5d; theme=dark; consent=yes\r\n"
        "Connection: keep-alive\r\n"
        "Cache-Control: no-cache\r\n"
        "\r\n";
    const int iters = 200000;
    struct http1_request req;
    ssize_t sum = 0;

    double t0 = now_sec();
    for (int i = 0; i < iters; i++)
        sum += http1_parse_request(in, sizeof(in) - 1, &lim_std, &req);
    double t = now_sec() - t0;
    assert_int_equal(sum, (ssize_t)iters * (ssize_t)(sizeof(in) - 1));
    printf("http1 bench: %zu-byte request, %.0f ns/req, %.2f Mreq/s, %.0f MB/s\n", sizeof(in) - 1,
           t / iters * 1e9, iters / t / 1e6, iters * (double)(sizeof(in) - 1) / t / 1e6);

    /* Many small chunks with an extension each: the per-byte part of the scanner. */
    static char body[70000];
    size_t n = 0;
    while (n < 65536) {
        n += (size_t)sprintf(body + n, "40;x=y\r\n");
        memset(body + n, 'd', 64);
        n += 64;
        n += (size_t)sprintf(body + n, "\r\n");
    }
    n += (size_t)sprintf(body + n, "0\r\n\r\n");
    t0 = now_sec();
    for (int i = 0; i < 2000; i++) {
        struct http1_chunked c = {0};
        bool done;
        sum = http1_chunked_scan(&c, body, n, &done);
        assert_true(done);
    }
    t = now_sec() - t0;
    assert_int_equal(sum, n);
    printf("http1 bench: chunked scan, 64-byte chunks, %.0f MB/s\n", 2000.0 * n / t / 1e6);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_requests),
        cmocka_unit_test(test_header_views),
        cmocka_unit_test(test_connection_tokens),
        cmocka_unit_test(test_pipelined_exact),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_error_reasons),
        cmocka_unit_test(test_request_line_limit),
        cmocka_unit_test(test_head_limit),
        cmocka_unit_test(test_header_count_limit),
        cmocka_unit_test(test_null_and_huge_limits),
        cmocka_unit_test(test_byte_classes),
        cmocka_unit_test(test_valid_responses),
        cmocka_unit_test(test_bad_responses),
        cmocka_unit_test(test_response_has_body),
        cmocka_unit_test(test_str_ieq),
        cmocka_unit_test(test_chunked_valid),
        cmocka_unit_test(test_chunked_invalid),
        cmocka_unit_test(test_chunked_data_bytes),
        cmocka_unit_test(test_chunked_state),
        cmocka_unit_test(test_benchmark),
    };
    return cmocka_run_group_tests_name("http1", tests, NULL, NULL);
}
