/*
 * Strict HTTP/1.1 head parser and chunked-body scanner (RFC 9110, RFC 9112).
 *
 * The proxy sits between clients and backends that each parse HTTP their own
 * way. Any message two parsers could frame differently is a request-smuggling
 * vector, so this parser accepts only what the RFC grammar allows and refuses
 * everything else with the status the peer should see. Speed comes from a
 * byte-class table built at compile time, memchr() for line ends, a word-wise
 * fast path for field values, and never allocating or copying.
 */
#include "lb/http1.h"

#include <string.h>

/* RFC 9112 section 2.2: a server SHOULD ignore at least one empty line before
 * the request-line; a handful covers every real client and bounds the work. */
#define MAX_LEADING_EMPTY_LINES 4
/* Content-Length above this is refused: far beyond any real body and far from
 * int64_t overflow, so arithmetic on it downstream cannot wrap. */
#define MAX_CONTENT_LENGTH ((int64_t)1 << 62)
#define CHUNK_MAX_HEX_DIGITS 16
#define CHUNK_MAX_LINE 4096
#define CHUNK_MAX_TRAILER (16 * 1024)

/* Used when the caller passes no limits. */
static const struct http1_limits default_limits = {
    .max_request_line = 8 * 1024,
    .max_head = 64 * 1024,
    .max_headers = HTTP1_MAX_HEADERS,
};

/*
 * Byte classes. The table is computed by the compiler from the RFC grammar
 * rules below, so the rules stay readable and the lookup stays one load.
 */
enum {
    C_TCHAR = 1 << 0,   /* token character (RFC 9110 5.6.2) */
    C_FVAL = 1 << 1,    /* field-vchar, SP or HTAB (RFC 9110 5.5) */
    C_TARGET = 1 << 2,  /* request-target byte: VCHAR except '#' */
    C_REGNAME = 1 << 3, /* reg-name byte except '%' (RFC 3986 3.2.2) */
    C_IPLIT = 1 << 4,   /* byte inside an IP-literal's brackets */
    C_HEX = 1 << 5,
    C_DIGIT = 1 << 6,
};

#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_HEX(c) (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))
#define IS_TCHAR(c)                                                                                \
    (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' ||         \
     (c) == '&' || (c) == '\'' || (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' ||          \
     (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define IS_UNRESERVED(c)                                                                           \
    (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '-' || (c) == '.' || (c) == '_' || (c) == '~')
#define IS_SUBDELIM(c)                                                                             \
    ((c) == '!' || (c) == '$' || (c) == '&' || (c) == '\'' || (c) == '(' || (c) == ')' ||          \
     (c) == '*' || (c) == '+' || (c) == ',' || (c) == ';' || (c) == '=')
/* obs-text (0x80-0xFF) is allowed in values; every other CTL, DEL included, is not. */
#define IS_FVAL(c) ((c) == '\t' || ((c) >= 0x20 && (c) != 0x7f))
/* RFC 9112 3.2: the target grammar has no '#' (a fragment is never sent). */
#define IS_TARGET(c) ((c) >= 0x21 && (c) <= 0x7e && (c) != '#')

#define CLASS(c)                                                                                   \
    ((IS_TCHAR(c) ? C_TCHAR : 0) | (IS_FVAL(c) ? C_FVAL : 0) | (IS_TARGET(c) ? C_TARGET : 0) |     \
     (IS_UNRESERVED(c) || IS_SUBDELIM(c) ? C_REGNAME : 0) |                                        \
     (IS_UNRESERVED(c) || IS_SUBDELIM(c) || (c) == ':' ? C_IPLIT : 0) | (IS_HEX(c) ? C_HEX : 0) |  \
     (IS_DIGIT(c) ? C_DIGIT : 0))
#define CLASS4(c) CLASS(c), CLASS((c) + 1), CLASS((c) + 2), CLASS((c) + 3)
#define CLASS16(c) CLASS4(c), CLASS4((c) + 4), CLASS4((c) + 8), CLASS4((c) + 12)
#define CLASS64(c) CLASS16(c), CLASS16((c) + 16), CLASS16((c) + 32), CLASS16((c) + 48)

static const unsigned char cls[256] = {CLASS64(0), CLASS64(64), CLASS64(128), CLASS64(192)};

static inline bool
is(unsigned char c, int class)
{
    return cls[c] & class;
}

static inline unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

static inline unsigned
hexval(unsigned char c)
{
    return IS_DIGIT(c) ? (unsigned)(c - '0') : (unsigned)(lower(c) - 'a' + 10);
}

static inline bool
is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static bool
str_ieq2(struct http1_str a, struct http1_str b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++) {
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return false;
    }
    return true;
}

/*
 * Field values are most of a head's bytes, so they are checked eight at a time:
 * a word with no byte below 0x20 and none equal to 0x7F is valid as a whole
 * (obs-text is allowed). Only words that contain HTAB or a bad byte take the
 * per-byte path.
 */
static bool
valid_field_value(const unsigned char *p, const unsigned char *end)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t x, y;
        memcpy(&x, p, sizeof(x));
        y = x ^ (ones * 0x7f);
        if (((x - ones * 0x20) & ~x & highs) | ((y - ones) & ~y & highs)) {
            for (int i = 0; i < 8; i++) {
                if (!is(p[i], C_FVAL))
                    return false;
            }
        }
        p += 8;
    }
    for (; p < end; p++) {
        if (!is(*p, C_FVAL))
            return false;
    }
    return true;
}

static bool
all_tchar(struct http1_str s)
{
    for (size_t i = 0; i < s.len; i++) {
        if (!is((unsigned char)s.p[i], C_TCHAR))
            return false;
    }
    return s.len > 0;
}

/*
 * Walks a comma-separated list (RFC 9110 5.6.1), skipping the empty elements a
 * recipient must tolerate. Each element comes back with OWS removed.
 */
static bool
next_list_elem(struct http1_str v, size_t *pos, struct http1_str *elem)
{
    size_t i = *pos;
    while (i < v.len) {
        size_t j = i;
        while (j < v.len && v.p[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && is_ows((unsigned char)v.p[a]))
            a++;
        while (b > a && is_ows((unsigned char)v.p[b - 1]))
            b--;
        i = j + 1;
        if (a < b) {
            elem->p = v.p + a;
            elem->len = b - a;
            *pos = i;
            return true;
        }
    }
    *pos = v.len;
    return false;
}

/*
 * authority = host [ ":" port ] without userinfo (RFC 3986 3.2, RFC 9110 4.2):
 * userinfo in a request is refused since it only serves phishing tricks.
 * An empty value is accepted only when allow_empty (RFC 9112 3.2: Host is
 * empty when the target URI has no authority).
 */
static bool
valid_authority(struct http1_str a, bool need_port, bool allow_empty)
{
    const unsigned char *p = (const unsigned char *)a.p;
    size_t n = a.len, i = 0;

    if (n == 0)
        return allow_empty;
    if (p[0] == '[') {
        i = 1;
        while (i < n && is(p[i], C_IPLIT))
            i++;
        if (i == 1 || i >= n || p[i] != ']')
            return false;
        i++;
    } else {
        while (i < n) {
            if (p[i] == '%') {
                if (n - i < 3 || !is(p[i + 1], C_HEX) || !is(p[i + 2], C_HEX))
                    return false;
                i += 3;
            } else if (is(p[i], C_REGNAME)) {
                i++;
            } else {
                break;
            }
        }
        if (i == 0)
            return false;
    }
    if (i == n)
        return !need_port;
    if (p[i] != ':')
        return false;
    size_t d = ++i;
    while (i < n && is(p[i], C_DIGIT))
        i++;
    return i == n && (!need_port || i > d);
}

/* Drops the scheme's default port (or an empty one) so that an absolute-form
 * authority and a Host header naming the same origin compare equal. */
static struct http1_str
strip_default_port(struct http1_str s, bool https)
{
    const char *dp = https ? ":443" : ":80";
    size_t dl = https ? 4 : 3;
    if (s.len > dl && memcmp(s.p + s.len - dl, dp, dl) == 0)
        s.len -= dl;
    else if (s.len > 1 && s.p[s.len - 1] == ':')
        s.len--;
    return s;
}

static enum http1_method
method_of(const char *p, size_t n)
{
#define M(s, v)                                                                                    \
    if (memcmp(p, s, n) == 0)                                                                      \
        return v;
    switch (n) {
    case 3:
        M("GET", HTTP1_M_GET);
        M("PUT", HTTP1_M_PUT);
        break;
    case 4:
        M("HEAD", HTTP1_M_HEAD);
        M("POST", HTTP1_M_POST);
        break;
    case 5:
        M("PATCH", HTTP1_M_PATCH);
        M("TRACE", HTTP1_M_TRACE);
        break;
    case 6:
        M("DELETE", HTTP1_M_DELETE);
        break;
    case 7:
        M("CONNECT", HTTP1_M_CONNECT);
        M("OPTIONS", HTTP1_M_OPTIONS);
        break;
    }
#undef M
    return HTTP1_M_OTHER;
}

/* Parse state shared by requests and responses while the field lines are read. */
struct head {
    const char *buf;
    size_t len;
    size_t max_head;
    size_t max_fields;
    bool request;
    int minor;
    struct http1_header *hdrs;
    size_t *nhdrs;
    struct http1_framing *f;
    struct http1_str *host;    /* requests only */
    struct http1_str *upgrade; /* requests only */
    bool *expect_continue;     /* requests only */
    bool seen_host, seen_te, seen_upgrade;
    int te_chunked; /* responses: how many times "chunked" was listed */
    bool te_final_chunked;
    int status;
    const char *error;
};

static ssize_t
fail(struct head *h, int status, const char *why)
{
    h->status = status;
    h->error = why;
    return HTTP1_ERROR;
}

/* The head does not end within the bytes looked at: either more are needed,
 * or the head already exceeds its limit and the caller can stop reading. */
static ssize_t
need_more(struct head *h)
{
    if (h->len > h->max_head)
        return fail(h, 431, "header section too large");
    return HTTP1_INCOMPLETE;
}

static bool
parse_content_length(struct http1_str v, int64_t *out)
{
    int64_t n = 0;
    if (v.len == 0)
        return false;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (!is(c, C_DIGIT))
            return false;
        /* Checked before the arithmetic: signed overflow must never happen. */
        if (n > (MAX_CONTENT_LENGTH - (c - '0')) / 10)
            return false;
        n = n * 10 + (c - '0');
    }
    *out = n;
    return true;
}

static ssize_t
on_transfer_encoding(struct head *h, struct http1_str v)
{
    struct http1_framing *f = h->f;
    int bad = h->request ? 400 : 502;

    /* RFC 9112 6.1: HTTP/1.0 recipients of Transfer-Encoding must treat the
     * framing as faulty; an HTTP/1.0 peer cannot be trusted to chunk. */
    if (h->minor == 0)
        return fail(h, bad, "Transfer-Encoding in HTTP/1.0 message");
    /* RFC 9112 6.3 point 3: CL with TE is a smuggling attempt; refuse both ways. */
    if (f->content_length >= 0)
        return fail(h, bad, "Content-Length with Transfer-Encoding");
    if (v.len == 0)
        return fail(h, bad, "empty Transfer-Encoding");

    if (h->request) {
        /*
         * A second Transfer-Encoding line continues the list (RFC 9110 5.3),
         * so it could only be a list we refuse anyway; it gets 400 rather
         * than 501 because it is a framing ambiguity, not an unknown coding.
         */
        if (h->seen_te)
            return fail(h, 400, "repeated Transfer-Encoding");
        h->seen_te = true;
        /* RFC 9112 6.3 point 4: only a lone "chunked" lets us find the end of
         * a request body; anything else is a coding we do not implement. */
        if (!http1_str_ieq(v, "chunked"))
            return fail(h, 501, "unsupported transfer coding");
        f->chunked = true;
        return 0;
    }

    h->seen_te = true;
    size_t pos = 0;
    struct http1_str e;
    bool any = false;
    while (next_list_elem(v, &pos, &e)) {
        if (!all_tchar(e))
            return fail(h, 502, "invalid Transfer-Encoding");
        any = true;
        h->te_final_chunked = http1_str_ieq(e, "chunked");
        /* RFC 9112 6.1: chunked MUST NOT be applied more than once. */
        if (h->te_final_chunked && ++h->te_chunked > 1)
            return fail(h, 502, "chunked applied twice");
    }
    if (!any)
        return fail(h, 502, "empty Transfer-Encoding");
    return 0;
}

static ssize_t
on_content_length(struct head *h, struct http1_str v)
{
    int bad = h->request ? 400 : 502;
    int64_t n;
    /* RFC 9110 8.6 lets a recipient merge identical repeated values; we do
     * not, because the next hop may not, and a list is never needed. */
    if (h->f->content_length >= 0)
        return fail(h, bad, "repeated Content-Length");
    if (h->seen_te)
        return fail(h, bad, "Content-Length with Transfer-Encoding");
    if (!parse_content_length(v, &n))
        return fail(h, bad, "invalid Content-Length");
    h->f->content_length = n;
    return 0;
}

static ssize_t
on_connection(struct head *h, struct http1_str v)
{
    size_t pos = 0;
    struct http1_str e;
    while (next_list_elem(v, &pos, &e)) {
        if (!all_tchar(e))
            return fail(h, h->request ? 400 : 502, "invalid Connection");
        if (http1_str_ieq(e, "close"))
            h->f->conn_close = true;
        else if (http1_str_ieq(e, "keep-alive"))
            h->f->conn_keep_alive = true;
        else if (http1_str_ieq(e, "upgrade"))
            h->f->conn_upgrade = true;
        else
            h->f->conn_other = true;
    }
    return 0;
}

/* Applies what a field means for framing and routing. */
static ssize_t
on_field(struct head *h, struct http1_str name, struct http1_str v)
{
    switch (name.len) {
    case 4:
        if (h->request && http1_str_ieq(name, "host")) {
            /* RFC 9112 3.2: more than one Host, or an invalid one, is a 400. */
            if (h->seen_host)
                return fail(h, 400, "repeated Host");
            if (!valid_authority(v, false, true))
                return fail(h, 400, "invalid Host");
            h->seen_host = true;
            *h->host = v;
        }
        break;
    case 6:
        /* RFC 9110 10.1.1: a 100-continue expectation in HTTP/1.0 is ignored. */
        if (h->request && h->minor == 1 && http1_str_ieq(name, "expect") &&
            http1_str_ieq(v, "100-continue"))
            *h->expect_continue = true;
        break;
    case 7:
        if (http1_str_ieq(name, "upgrade")) {
            /* Two Upgrade lines could be read as one list or as the last one;
             * nobody needs that, so it is refused rather than guessed. */
            if (h->seen_upgrade)
                return fail(h, h->request ? 400 : 502, "repeated Upgrade");
            h->seen_upgrade = true;
            h->f->has_upgrade = true;
            if (h->upgrade)
                *h->upgrade = v;
        }
        break;
    case 10:
        if (http1_str_ieq(name, "connection"))
            return on_connection(h, v);
        break;
    case 14:
        if (http1_str_ieq(name, "content-length"))
            return on_content_length(h, v);
        break;
    case 17:
        if (http1_str_ieq(name, "transfer-encoding"))
            return on_transfer_encoding(h, v);
        break;
    }
    return 0;
}

/*
 * Reads field lines from pos up to and including the empty line that ends the
 * head (RFC 9112 section 5). Returns the head length, HTTP1_INCOMPLETE or
 * HTTP1_ERROR.
 */
static ssize_t
parse_fields(struct head *h, size_t pos)
{
    const unsigned char *b = (const unsigned char *)h->buf;
    size_t end = h->len < h->max_head ? h->len : h->max_head;
    int bad = h->request ? 400 : 502;

    for (;;) {
        if (pos >= end)
            return need_more(h);
        unsigned char c = b[pos];
        if (c == '\r') {
            if (pos + 1 >= end)
                return need_more(h);
            if (b[pos + 1] != '\n')
                return fail(h, bad, "bare CR");
            return (ssize_t)(pos + 2);
        }
        if (c == '\n')
            return fail(h, bad, "bare LF");
        /* RFC 9112 5.2: obs-fold is refused rather than unfolded, and RFC
         * 9112 2.2 whitespace before the first field line likewise. */
        if (is_ows(c))
            return fail(h, bad, "obs-fold or leading whitespace");

        const unsigned char *lf = memchr(b + pos, '\n', end - pos);
        if (lf == NULL)
            return need_more(h);
        size_t eol = (size_t)(lf - b);
        /* RFC 9112 2.2: we never accept a bare LF as a line terminator. */
        if (b[eol - 1] != '\r')
            return fail(h, bad, "bare LF");
        size_t vend = eol - 1;

        /* The CR at vend is not a tchar, so the scan stops inside the line. */
        size_t n = pos;
        while (is(b[n], C_TCHAR))
            n++;
        if (b[n] != ':') {
            /* RFC 9112 5.1: no whitespace between field name and colon. */
            if (is_ows(b[n]))
                return fail(h, bad, "whitespace before colon");
            return fail(h, bad, "invalid field name");
        }
        if (n == pos)
            return fail(h, bad, "empty field name");

        size_t v = n + 1;
        while (v < vend && is_ows(b[v]))
            v++;
        while (vend > v && is_ows(b[vend - 1]))
            vend--;
        if (!valid_field_value(b + v, b + vend))
            return fail(h, bad, "invalid character in field value");

        if (*h->nhdrs >= h->max_fields)
            return fail(h, h->request ? 431 : 502, "too many header fields");
        struct http1_header *hd = &h->hdrs[(*h->nhdrs)++];
        hd->name.p = h->buf + pos;
        hd->name.len = n - pos;
        hd->value.p = h->buf + v;
        hd->value.len = vend - v;
        if (on_field(h, hd->name, hd->value) < 0)
            return HTTP1_ERROR;
        pos = eol + 1;
    }
}

static void
init_framing(struct http1_framing *f)
{
    f->content_length = -1;
    f->chunked = false;
    f->conn_close = false;
    f->conn_keep_alive = false;
    f->conn_upgrade = false;
    f->conn_other = false;
    f->has_upgrade = false;
}

static const struct http1_str empty_str = {"", 0};

/* Request-target forms, RFC 9112 section 3.2. */
enum target_form { T_ORIGIN, T_ABSOLUTE, T_AUTHORITY, T_ASTERISK };

static ssize_t
parse_target(struct head *h, struct http1_request *req, enum target_form *form,
             struct http1_str *authority, bool *https)
{
    struct http1_str t = req->target;
    const char *q;

    if (t.p[0] == '/') {
        /* RFC 9110 9.3.6: CONNECT takes authority-form only. */
        if (req->meth == HTTP1_M_CONNECT)
            return fail(h, 400, "CONNECT needs authority-form");
        *form = T_ORIGIN;
        q = memchr(t.p, '?', t.len);
        req->path.p = t.p;
        req->path.len = q ? (size_t)(q - t.p) : t.len;
        return 0;
    }
    if (t.len == 1 && t.p[0] == '*') {
        /* RFC 9112 3.2.4: asterisk-form is for server-wide OPTIONS only. */
        if (req->meth != HTTP1_M_OPTIONS)
            return fail(h, 400, "asterisk-form outside OPTIONS");
        *form = T_ASTERISK;
        req->path.p = t.p;
        req->path.len = 0;
        return 0;
    }
    if (req->meth == HTTP1_M_CONNECT) {
        /* RFC 9112 3.2.3: authority-form = uri-host ":" port. */
        if (!valid_authority(t, true, false))
            return fail(h, 400, "invalid CONNECT target");
        *form = T_AUTHORITY;
        req->path.p = t.p;
        req->path.len = 0;
        return 0;
    }

    /* RFC 9112 3.2.2 absolute-form; only the schemes a proxy can serve. */
    size_t skip;
    if (t.len >= 7 && http1_str_ieq((struct http1_str){t.p, 7}, "http://")) {
        skip = 7;
        *https = false;
    } else if (t.len >= 8 && http1_str_ieq((struct http1_str){t.p, 8}, "https://")) {
        skip = 8;
        *https = true;
    } else {
        return fail(h, 400, "invalid request-target");
    }
    size_t a = skip;
    while (a < t.len && t.p[a] != '/' && t.p[a] != '?')
        a++;
    authority->p = t.p + skip;
    authority->len = a - skip;
    /* RFC 9110 4.2.1: an http(s) URI with an empty host is invalid. */
    if (!valid_authority(*authority, false, false))
        return fail(h, 400, "invalid authority in request-target");
    *form = T_ABSOLUTE;
    if (a < t.len && t.p[a] == '/') {
        q = memchr(t.p + a, '?', t.len - a);
        req->path.p = t.p + a;
        req->path.len = (q ? (size_t)(q - t.p) : t.len) - a;
    } else {
        /* An empty path means "/"; the second slash of "//" is one, in the buffer. */
        req->path.p = t.p + skip - 1;
        req->path.len = 1;
    }
    return 0;
}

ssize_t
http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                    struct http1_request *req)
{
    const unsigned char *b = (const unsigned char *)buf;
    if (lim == NULL)
        lim = &default_limits;
    size_t max_rl = lim->max_request_line;

    req->method = req->target = req->path = req->host = req->upgrade = empty_str;
    req->meth = HTTP1_M_OTHER;
    req->minor_version = 1;
    req->expect_continue = false;
    init_framing(&req->f);
    req->nheaders = 0;
    req->error_status = 0;
    req->error = NULL;

    struct head h = {
        .buf = buf,
        .len = len,
        .max_head = lim->max_head,
        .max_fields = lim->max_headers < HTTP1_MAX_HEADERS ? lim->max_headers : HTTP1_MAX_HEADERS,
        .request = true,
        .hdrs = req->headers,
        .nhdrs = &req->nheaders,
        .f = &req->f,
        .host = &req->host,
        .upgrade = &req->upgrade,
        .expect_continue = &req->expect_continue,
    };
    ssize_t r;

    /* RFC 9112 2.2: skip a few empty lines a client may send after a body. */
    size_t pos = 0;
    for (int empty = 0;; empty++) {
        if (pos >= len)
            goto more;
        if (b[pos] == '\n') {
            r = fail(&h, 400, "bare LF");
            goto out;
        }
        if (b[pos] != '\r')
            break;
        if (pos + 1 >= len)
            goto more;
        if (b[pos + 1] != '\n') {
            r = fail(&h, 400, "bare CR");
            goto out;
        }
        if (empty == MAX_LEADING_EMPTY_LINES) {
            r = fail(&h, 400, "too many empty lines before request");
            goto out;
        }
        pos += 2;
    }

    /* Look for the line end no further than the longest line allowed, so an
     * endless request-line is refused (414) without scanning all of it. */
    size_t start = pos, win = len - pos;
    if (max_rl <= SIZE_MAX - 2 && win > max_rl + 2)
        win = max_rl + 2;
    const unsigned char *lf = memchr(b + start, '\n', win);
    if (lf == NULL) {
        if (win - (b[start + win - 1] == '\r') > max_rl) {
            r = fail(&h, 414, "request-line too long");
            goto out;
        }
        goto more;
    }
    size_t eol = (size_t)(lf - b);
    if (b[eol - 1] != '\r') {
        r = fail(&h, 400, "bare LF");
        goto out;
    }
    /* The window above already keeps line_end - start within max_rl. */
    size_t line_end = eol - 1;
    if (eol + 1 > lim->max_head) {
        r = fail(&h, 431, "header section too large");
        goto out;
    }

    /* RFC 9112 3: method SP request-target SP HTTP-version, single SPs. */
    size_t p = start;
    while (is(b[p], C_TCHAR))
        p++;
    if (p == start || b[p] != ' ') {
        r = fail(&h, 400, "invalid method");
        goto out;
    }
    req->method.p = buf + start;
    req->method.len = p - start;
    req->meth = method_of(req->method.p, req->method.len);

    size_t t = ++p;
    while (is(b[p], C_TARGET))
        p++;
    if (p == t || b[p] != ' ') {
        r = fail(&h, 400, "invalid request-target");
        goto out;
    }
    req->target.p = buf + t;
    req->target.len = p - t;

    /* RFC 9112 2.3: HTTP-version is case-sensitive "HTTP/" DIGIT "." DIGIT. */
    const unsigned char *v = b + p + 1;
    if (line_end - (p + 1) != 8 || memcmp(v, "HTTP/", 5) != 0 || !IS_DIGIT(v[5]) || v[6] != '.' ||
        !IS_DIGIT(v[7])) {
        r = fail(&h, 400, "invalid HTTP version");
        goto out;
    }
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) {
        r = fail(&h, 505, "HTTP version not supported");
        goto out;
    }
    req->minor_version = h.minor = v[7] - '0';

    enum target_form form;
    struct http1_str authority = empty_str;
    bool https = false;
    if ((r = parse_target(&h, req, &form, &authority, &https)) < 0)
        goto out;

    r = parse_fields(&h, eol + 1);
    if (r <= 0)
        goto out;

    /* RFC 9112 3.2: an HTTP/1.1 request without Host gets 400. */
    if (req->minor_version == 1 && !h.seen_host) {
        r = fail(&h, 400, "missing Host");
        goto out;
    }
    if (form == T_ABSOLUTE) {
        /*
         * RFC 9112 3.2.2: the authority replaces Host. A client MUST send a
         * Host identical to it, and a mismatch would let us route on one name
         * while a backend that reads Host serves another: refuse it.
         */
        if (h.seen_host &&
            !str_ieq2(strip_default_port(authority, https), strip_default_port(req->host, https))) {
            r = fail(&h, 400, "Host does not match request-target");
            goto out;
        }
        req->host = authority;
    }
    return r;

more:
    r = need_more(&h);
out:
    if (r < 0) {
        req->error_status = h.status;
        req->error = h.error;
    }
    return r;
}

ssize_t
http1_parse_response(const char *buf, size_t len, size_t max_head, struct http1_response *resp)
{
    const unsigned char *b = (const unsigned char *)buf;

    resp->status = 0;
    resp->reason = empty_str;
    resp->minor_version = 1;
    init_framing(&resp->f);
    resp->nheaders = 0;
    resp->error = NULL;

    struct head h = {
        .buf = buf,
        .len = len,
        .max_head = max_head,
        .max_fields = HTTP1_MAX_HEADERS,
        .request = false,
        .hdrs = resp->headers,
        .nhdrs = &resp->nheaders,
        .f = &resp->f,
    };
    ssize_t r;

    size_t end = len < max_head ? len : max_head;
    const unsigned char *lf = memchr(b, '\n', end);
    if (lf == NULL) {
        r = need_more(&h);
        goto out;
    }
    size_t eol = (size_t)(lf - b);
    if (eol == 0 || b[eol - 1] != '\r') {
        r = fail(&h, 502, "bare LF");
        goto out;
    }
    size_t line_end = eol - 1;

    /* RFC 9112 4: HTTP-version SP 3DIGIT SP [ reason-phrase ]. */
    if (line_end < 12 || memcmp(b, "HTTP/1.", 7) != 0 || (b[7] != '0' && b[7] != '1') ||
        b[8] != ' ' || b[9] < '1' || b[9] > '9' || !IS_DIGIT(b[10]) || !IS_DIGIT(b[11])) {
        r = fail(&h, 502, "invalid status line");
        goto out;
    }
    resp->minor_version = h.minor = b[7] - '0';
    resp->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    /* The SP before an empty reason is often left out; it frames nothing, so
     * the lone status code is tolerated. */
    if (line_end > 12) {
        if (b[12] != ' ' || !valid_field_value(b + 13, b + line_end)) {
            r = fail(&h, 502, "invalid status line");
            goto out;
        }
        resp->reason.p = buf + 13;
        resp->reason.len = line_end - 13;
    } else {
        resp->reason.p = buf + 12;
    }

    r = parse_fields(&h, eol + 1);
    if (r <= 0)
        goto out;
    if (h.seen_te) {
        /*
         * RFC 9112 6.3 point 4: a response whose final coding is not chunked
         * is delimited by closing the connection; the proxy then relays until
         * EOF and must not reuse the backend connection.
         */
        resp->f.chunked = h.te_final_chunked;
    }
    return r;

out:
    if (r < 0)
        resp->error = h.error;
    return r;
}

bool
http1_response_has_body(enum http1_method meth, int status)
{
    /* RFC 9112 6.3 points 1 and 2. */
    if (meth == HTTP1_M_HEAD)
        return false;
    if (status < 200 || status == 204 || status == 304)
        return false;
    if (meth == HTTP1_M_CONNECT && status < 300)
        return false;
    return true;
}

/* Chunked scanner states (RFC 9112 7.1). The zero state is the start. */
enum {
    CK_SIZE0 = 0, /* first byte of a chunk-size line */
    CK_SIZE,      /* in chunk-size */
    CK_SIZE_BWS,  /* whitespace after chunk-size: only ';' may follow */
    CK_EXT,       /* in chunk-ext */
    CK_SIZE_LF,   /* CR of the size line seen */
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TRL0, /* start of a trailer line or of the final CRLF */
    CK_TRL_NAME,
    CK_TRL_VALUE,
    CK_TRL_LF,
    CK_FINAL_LF,
    CK_DONE,
    CK_ERROR,
};

ssize_t
http1_chunked_scan(struct http1_chunked *c, const char *buf, size_t len, bool *done)
{
    const unsigned char *p = (const unsigned char *)buf, *end = p + len;
    int st = c->state;

    *done = false;
    if (st == CK_ERROR)
        return -1;
    while (p < end && st != CK_DONE) {
        if (st == CK_DATA) {
            /* The body's bulk: skipped without looking at it. */
            size_t n = (size_t)(end - p);
            if (n > c->remaining)
                n = (size_t)c->remaining;
            p += n;
            c->remaining -= n;
            if (c->remaining == 0)
                st = CK_DATA_CR;
            continue;
        }
        unsigned char ch = *p++;
        /* The size line's CR is counted too, hence the + 1. */
        if (st <= CK_EXT && ++c->line_len > CHUNK_MAX_LINE + 1)
            goto bad;
        if (st >= CK_TRL0 && ++c->trailer_bytes > CHUNK_MAX_TRAILER)
            goto bad;
        switch (st) {
        case CK_SIZE0:
            /* 1*HEXDIG: no sign, no "0x", no leading whitespace. */
            if (!is(ch, C_HEX))
                goto bad;
            c->remaining = hexval(ch);
            st = CK_SIZE;
            break;
        case CK_SIZE:
            if (is(ch, C_HEX)) {
                /* line_len counts the digits so far; 16 cannot overflow. */
                if (c->line_len > CHUNK_MAX_HEX_DIGITS)
                    goto bad;
                c->remaining = c->remaining << 4 | hexval(ch);
            } else if (ch == ';') {
                st = CK_EXT;
            } else if (ch == '\r') {
                st = CK_SIZE_LF;
            } else if (is_ows(ch)) {
                st = CK_SIZE_BWS; /* RFC 9112 7.1.1: BWS before ';' */
            } else {
                goto bad;
            }
            break;
        case CK_SIZE_BWS:
            if (ch == ';')
                st = CK_EXT;
            else if (!is_ows(ch))
                goto bad;
            break;
        case CK_EXT:
            /* chunk-ext is read loosely (nobody interprets it here) but
             * without CTLs, so no CR or LF can hide inside it. */
            if (ch == '\r')
                st = CK_SIZE_LF;
            else if (!is(ch, C_FVAL))
                goto bad;
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                goto bad;
            c->line_len = 0;
            c->data_bytes = c->remaining > UINT64_MAX - c->data_bytes
                                ? UINT64_MAX
                                : c->data_bytes + c->remaining;
            st = c->remaining ? CK_DATA : CK_TRL0;
            break;
        case CK_DATA_CR:
            if (ch != '\r')
                goto bad;
            st = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (ch != '\n')
                goto bad;
            st = CK_SIZE0;
            break;
        case CK_TRL0:
            /* RFC 9112 7.1.2: trailer fields follow the field-line rules. */
            if (ch == '\r')
                st = CK_FINAL_LF;
            else if (is(ch, C_TCHAR))
                st = CK_TRL_NAME;
            else
                goto bad;
            break;
        case CK_TRL_NAME:
            if (ch == ':')
                st = CK_TRL_VALUE;
            else if (!is(ch, C_TCHAR))
                goto bad;
            break;
        case CK_TRL_VALUE:
            if (ch == '\r')
                st = CK_TRL_LF;
            else if (!is(ch, C_FVAL))
                goto bad;
            break;
        case CK_TRL_LF:
            if (ch != '\n')
                goto bad;
            st = CK_TRL0;
            break;
        case CK_FINAL_LF:
            if (ch != '\n')
                goto bad;
            st = CK_DONE;
            break;
        default:
            goto bad;
        }
    }
    c->state = st;
    *done = st == CK_DONE;
    return p - (const unsigned char *)buf;

bad:
    c->state = CK_ERROR;
    return -1;
}
