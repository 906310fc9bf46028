/*
 * Strict HTTP/1.1 message parsing (RFC 9110 / RFC 9112) for the proxy.
 *
 * The parser works on a contiguous buffer holding the start of a message. It
 * never allocates and never copies: every string it reports is a view into the
 * caller's buffer, valid for as long as that buffer is. A head that is not yet
 * complete is parsed again from the start when more bytes arrive; heads are
 * small and a restart is cheaper than keeping resumable state for every field.
 *
 * Everything that could let two parties disagree about where a message ends
 * (request smuggling) is refused, with the status the client should get:
 * Content-Length together with Transfer-Encoding, repeated or malformed
 * Content-Length, a Transfer-Encoding other than a final "chunked", obs-fold,
 * bare CR, bad characters in names or values, oversized lines or blocks.
 *
 * Thread safety: all functions are pure over their arguments.
 */
#ifndef LB_HTTP1_H
#define LB_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP1_MAX_HEADERS 100

/* Return values of the head parsers (besides a positive head length). */
#define HTTP1_INCOMPLETE 0 /* need more bytes */
#define HTTP1_ERROR (-1)   /* malformed: see ->error_status and ->error */

struct http1_str {
    const char *p;
    size_t len;
};

struct http1_header {
    struct http1_str name;
    struct http1_str value; /* leading and trailing OWS removed */
};

enum http1_method {
    HTTP1_M_OTHER = 0,
    HTTP1_M_GET,
    HTTP1_M_HEAD,
    HTTP1_M_POST,
    HTTP1_M_PUT,
    HTTP1_M_DELETE,
    HTTP1_M_CONNECT,
    HTTP1_M_OPTIONS,
    HTTP1_M_TRACE,
    HTTP1_M_PATCH,
};

/* Framing and connection semantics derived from the headers, shared by
 * requests and responses. */
struct http1_framing {
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked (the only coding accepted) */
    bool conn_close;        /* Connection: close */
    bool conn_keep_alive;   /* Connection: keep-alive */
    bool conn_upgrade;      /* Connection lists "upgrade" */
    bool conn_other;        /* Connection lists another token: a field it makes hop-by-hop */
    bool has_upgrade;       /* an Upgrade header is present */
};

struct http1_request {
    struct http1_str method;
    enum http1_method meth;
    struct http1_str target; /* request-target as sent */
    struct http1_str path;   /* target up to '?' (origin-form), or empty */
    int minor_version;       /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
    struct http1_str host;   /* Host header value, or authority of absolute-form */
    struct http1_str upgrade;
    bool expect_continue; /* Expect: 100-continue */
    struct http1_framing f;
    size_t nheaders;
    struct http1_header headers[HTTP1_MAX_HEADERS];
    int error_status;  /* on HTTP1_ERROR: 400, 414, 431, 501 or 505 */
    const char *error; /* on HTTP1_ERROR: a short static reason */
};

struct http1_response {
    int status; /* 100..999 */
    struct http1_str reason;
    int minor_version;
    struct http1_framing f;
    size_t nheaders;
    struct http1_header headers[HTTP1_MAX_HEADERS];
    const char *error; /* on HTTP1_ERROR */
};

struct http1_limits {
    size_t max_request_line; /* longer: 414 */
    size_t max_head;         /* whole head block longer: 431 */
    size_t max_headers;      /* more header fields: 431 (at most HTTP1_MAX_HEADERS) */
};

/*
 * Parses a request head at the start of buf[0..len).
 * Returns the length of the head including the final CRLF CRLF (> 0), or
 * HTTP1_INCOMPLETE if more bytes are needed (the limits are already enforced on
 * the partial head, so a caller can stop reading), or HTTP1_ERROR with
 * req->error_status and req->error set.
 * Leading empty lines (RFC 9112 section 2.2) are skipped and counted in the
 * returned length.
 */
ssize_t http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                            struct http1_request *req);

/*
 * Parses a response head at the start of buf[0..len). Same return convention
 * as http1_parse_request(); a backend that breaks the rules gets HTTP1_ERROR
 * and the proxy answers 502.
 */
ssize_t http1_parse_response(const char *buf, size_t len, size_t max_head,
                             struct http1_response *resp);

/*
 * Whether a response to a request of method meth with this status carries a
 * body according to RFC 9112 section 6.3 (HEAD, 1xx, 204 and 304 never do; a
 * 2xx answer to CONNECT switches to a tunnel).
 */
bool http1_response_has_body(enum http1_method meth, int status);

/*
 * Incremental validator for a chunked body (RFC 9112 section 7.1) including
 * chunk extensions and the trailer section. The proxy forwards the bytes it
 * was given unchanged, so the scanner only needs to find where the body ends
 * and refuse anything malformed. The all-zero value is the initial state.
 */
struct http1_chunked {
    int state;
    uint64_t remaining; /* data bytes left in the current chunk */
    uint32_t line_len;  /* length of the current size/extension/trailer line */
    uint32_t trailer_bytes;
    uint64_t data_bytes; /* sum of the chunk sizes read so far (saturates) */
};

/*
 * Consumes up to len bytes of chunked body. Returns the number of bytes that
 * belong to the body (<= len) and sets *done when the last byte of the trailer
 * section was consumed; bytes after that belong to the next message. Returns
 * -1 on a malformed body (bad size, overflow, missing CRLF, line too long).
 */
ssize_t http1_chunked_scan(struct http1_chunked *c, const char *buf, size_t len, bool *done);

/* Case-insensitive comparison of a view with a NUL-terminated lowercase
 * token. Inline: the proxy compares field names with literals many times per
 * message, and inlined, the token's length is a constant that rejects most
 * names before any byte is compared. */
static inline bool
http1_str_ieq(struct http1_str s, const char *lowertok)
{
    size_t n = __builtin_strlen(lowertok);
    if (s.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c >= 'A' && c <= 'Z')
            c |= 0x20;
        if (c != (unsigned char)lowertok[i])
            return false;
    }
    return true;
}

#endif
