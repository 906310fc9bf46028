/*
 * libFuzzer target for the HTTP/1.1 parser (lb/http1.c).
 *
 * Feeds each input to the request parser (with small limits, so the limit
 * paths are reached, and with roomy ones), the response parser and the
 * chunked scanner, and abort()s when an invariant breaks: a result longer than
 * the input, a view outside the buffer, a prefix of an accepted head that is
 * not "incomplete", an error without a reason, or a chunked scan whose result
 * depends on how the input was split. The input is copied into an exact-size
 * heap block so that ASan sees any read past its end.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lb/http1.h"

static void
check(bool ok)
{
    if (!ok)
        abort();
}

/* Views must point into the buffer; an empty view may point anywhere. */
static void
check_view(struct http1_str s, const char *buf, size_t len)
{
    if (s.len == 0)
        return;
    check(s.p >= buf && s.p <= buf + len && s.len <= (size_t)(buf + len - s.p));
}

static void
check_framing(const struct http1_framing *f)
{
    check(f->content_length >= -1 && f->content_length <= ((int64_t)1 << 62));
    check(!(f->chunked && f->content_length >= 0));
}

static void
fuzz_request(const char *buf, size_t len, const struct http1_limits *lim)
{
    struct http1_request req;
    ssize_t r = http1_parse_request(buf, len, lim, &req);

    check(r >= HTTP1_ERROR && r <= (ssize_t)len);
    if (r == HTTP1_ERROR) {
        check(req.error != NULL);
        check(req.error_status == 400 || req.error_status == 414 || req.error_status == 431 ||
              req.error_status == 501 || req.error_status == 505);
        return;
    }
    if (r == HTTP1_INCOMPLETE)
        return;

    size_t hl = (size_t)r;
    check(hl <= lim->max_head);
    check(req.nheaders <= lim->max_headers && req.nheaders <= HTTP1_MAX_HEADERS);
    check(req.minor_version == 0 || req.minor_version == 1);
    check(req.method.len > 0 && req.target.len > 0);
    check_view(req.method, buf, hl);
    check_view(req.target, buf, hl);
    check_view(req.path, buf, hl);
    check_view(req.host, buf, hl);
    check_view(req.upgrade, buf, hl);
    check(req.target.len <= lim->max_request_line);
    check_framing(&req.f);
    check(!(req.f.chunked && req.minor_version == 0));
    for (size_t i = 0; i < req.nheaders; i++) {
        check(req.headers[i].name.len > 0);
        check_view(req.headers[i].name, buf, hl);
        check_view(req.headers[i].value, buf, hl);
    }

    /* The head ends where it says: parsing just it gives the same length, and
     * any shorter prefix needs more bytes. */
    struct http1_request again;
    check(http1_parse_request(buf, hl, lim, &again) == r);
    check(again.nheaders == req.nheaders && again.f.content_length == req.f.content_length &&
          again.f.chunked == req.f.chunked);
    check(http1_parse_request(buf, hl - 1, lim, &again) == HTTP1_INCOMPLETE);
    size_t cut = (unsigned char)buf[0] % hl;
    check(http1_parse_request(buf, cut, lim, &again) == HTTP1_INCOMPLETE);
}

static void
fuzz_response(const char *buf, size_t len, size_t max_head)
{
    struct http1_response resp;
    ssize_t r = http1_parse_response(buf, len, max_head, &resp);

    check(r >= HTTP1_ERROR && r <= (ssize_t)len);
    if (r == HTTP1_ERROR) {
        check(resp.error != NULL);
        return;
    }
    if (r == HTTP1_INCOMPLETE)
        return;

    size_t hl = (size_t)r;
    check(hl <= max_head);
    check(resp.status >= 100 && resp.status <= 999);
    check(resp.minor_version == 0 || resp.minor_version == 1);
    check(resp.nheaders <= HTTP1_MAX_HEADERS);
    check_view(resp.reason, buf, hl);
    check_framing(&resp.f);
    for (size_t i = 0; i < resp.nheaders; i++) {
        check(resp.headers[i].name.len > 0);
        check_view(resp.headers[i].name, buf, hl);
        check_view(resp.headers[i].value, buf, hl);
    }
    struct http1_response again;
    check(http1_parse_response(buf, hl, max_head, &again) == r);
    check(http1_parse_response(buf, hl - 1, max_head, &again) == HTTP1_INCOMPLETE);
}

/* Scans buf in pieces ending at the given cut points; -1 on error. */
static ssize_t
scan_split(const char *buf, size_t len, size_t cut1, size_t cut2, bool *done)
{
    struct http1_chunked c = {0};
    size_t cuts[3] = {cut1, cut2, len}, off = 0;
    ssize_t total = 0;

    *done = false;
    for (int i = 0; i < 3 && !*done; i++) {
        size_t n = cuts[i] - off;
        ssize_t r = http1_chunked_scan(&c, buf + off, n, done);
        if (r < 0)
            return -1;
        check((size_t)r <= n);
        check(*done || (size_t)r == n);
        total += r;
        off = cuts[i];
    }
    return total;
}

static void
fuzz_chunked(const char *buf, size_t len, uint32_t seed)
{
    struct http1_chunked c = {0};
    bool done, done2;
    ssize_t whole = http1_chunked_scan(&c, buf, len, &done);

    check(whole >= -1 && whole <= (ssize_t)len);
    check(whole < 0 || done || (size_t)whole == len);

    /* Two data-derived cut points: the result may not depend on them. */
    size_t cut1 = len ? seed % (len + 1) : 0;
    size_t cut2 = len ? (seed >> 16) % (len + 1) : 0;
    if (cut2 < cut1) {
        size_t t = cut1;
        cut1 = cut2;
        cut2 = t;
    }
    ssize_t split = scan_split(buf, len, cut1, cut2, &done2);
    check(split == whole);
    check(whole < 0 || done2 == done);

    /* One byte at a time, for inputs small enough to keep the fuzzer fast. */
    if (len <= 512) {
        struct http1_chunked b = {0};
        ssize_t total = 0;
        bool d = false;
        size_t i;
        for (i = 0; i < len && !d; i++) {
            ssize_t r = http1_chunked_scan(&b, buf + i, 1, &d);
            if (r < 0) {
                total = -1;
                break;
            }
            total += r;
        }
        check(total == whole);
        check(whole < 0 || d == done);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);

    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size && i < 64; i++)
        seed = (seed ^ data[i]) * 16777619u;

    static const struct http1_limits small = {
        .max_request_line = 64, .max_head = 256, .max_headers = 8};
    static const struct http1_limits roomy = {
        .max_request_line = 8192, .max_head = 65536, .max_headers = HTTP1_MAX_HEADERS};
    fuzz_request(buf, size, &small);
    fuzz_request(buf, size, &roomy);
    fuzz_response(buf, size, 256);
    fuzz_response(buf, size, 65536);
    fuzz_chunked(buf, size, seed);

    /* The body that follows a chunked request head, as the proxy scans it. */
    struct http1_request req;
    ssize_t r = http1_parse_request(buf, size, &roomy, &req);
    if (r > 0 && req.f.chunked)
        fuzz_chunked(buf + r, size - (size_t)r, seed);

    /* RFC 9112 6.3: these never have a body, whatever the rest says. */
    if (r > 0) {
        int status = 100 + (int)(seed % 900);
        bool body = http1_response_has_body(req.meth, status);
        check(!(body &&
                (req.meth == HTTP1_M_HEAD || status < 200 || status == 204 || status == 304)));
    }

    free(buf);
    return 0;
}
