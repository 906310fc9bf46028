/*
 * Active health probes (see health_check.h): one non-blocking connection per
 * probe, driven by an ev_io and bounded by an ev_timer on the control loop.
 *
 * A tcp probe passes when the connect completes. An http probe sends one
 * request with "Connection: close", parses the answer with the same strict
 * parser the proxy uses (a server the proxy would refuse is not healthy),
 * checks the status and, when the check names expect_body, looks for that
 * text in the first 64 KiB of the body. Every failure carries a short reason
 * for the log line that marks the server down.
 */
#include "lb/health_check.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb/http1.h"
#include "lb/tls.h"

#define HEAD_MAX 16384
#define BODY_MAX 65536

enum { PH_IDLE = 0, PH_EARLY, PH_CONNECT, PH_HANDSHAKE, PH_SEND, PH_READ };

static void
probe_close(struct hc_probe *pr)
{
    ev_io_stop(pr->loop, &pr->io);
    ev_timer_stop(pr->loop, &pr->timer);
    if (pr->ssl)
        lb_tls_conn_free(pr->ssl);
    pr->ssl = NULL;
    if (pr->fd >= 0)
        close(pr->fd);
    pr->fd = -1;
    free(pr->buf);
    pr->buf = NULL;
    pr->len = pr->cap = pr->sent = 0;
    pr->phase = PH_IDLE;
}

static void set_why(struct hc_probe *pr, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
set_why(struct hc_probe *pr, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pr->why, sizeof(pr->why), fmt, ap);
    va_end(ap);
}

/* Ends the probe and reports: everything is released before the callback,
 * so the callback may start the next probe on the same struct. */
static void
finish(struct hc_probe *pr, enum hc_result res)
{
    probe_close(pr);
    pr->done(pr, res, pr->why);
}

/* A result known before the loop ran (socket() or connect() failed at
 * once): reported from the loop, so that hc_probe_start never calls back
 * into its caller. */
static void
early(struct hc_probe *pr, enum hc_result res)
{
    if (pr->fd >= 0)
        close(pr->fd);
    pr->fd = -1;
    pr->early = res;
    pr->phase = PH_EARLY;
    ev_timer_stop(pr->loop, &pr->timer);
    ev_timer_set(&pr->timer, 0., 0.);
    ev_timer_start(pr->loop, &pr->timer);
}

static void
connect_reason(struct hc_probe *pr, int err)
{
    if (err == ECONNREFUSED)
        set_why(pr, "connect refused");
    else
        set_why(pr, "connect failed: %s", strerror(err));
}

static const char *
phase_name(const struct hc_probe *pr)
{
    switch (pr->phase) {
    case PH_CONNECT:
        return "connecting";
    case PH_SEND:
        return "sending the request";
    case PH_READ:
        if (pr->head_len)
            return "reading the response body";
        return pr->len ? "reading the response head" : "waiting for the response";
    default:
        return "starting";
    }
}

static void
timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct hc_probe *pr = t->data;
    if (pr->phase == PH_EARLY) {
        finish(pr, pr->early);
        return;
    }
    set_why(pr, "timeout after %llu ms (%s)", (unsigned long long)pr->cf->timeout, phase_name(pr));
    finish(pr, HC_FAIL);
}

/* Removes chunked framing in place from a body that may be cut short (the
 * 64 KiB limit): data only ever moves towards the start. The framing was
 * validated by http1_chunked_scan as far as it goes. */
static size_t
dechunk(char *p, size_t n)
{
    size_t r = 0, w = 0;
    while (r < n) {
        uint64_t size = 0;
        while (r < n && isxdigit((unsigned char)p[r]) && size <= n) {
            int c = tolower((unsigned char)p[r]);
            size = size * 16 + (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
            r++;
        }
        while (r < n && p[r] != '\n')
            r++; /* extensions and CRLF */
        r++;
        if (size == 0 || r >= n)
            break;
        size_t take = size < n - r ? (size_t)size : n - r;
        memmove(p + w, p + r, take);
        w += take;
        r += take + 2; /* CRLF after the data */
    }
    return w;
}

static void
evaluate_body(struct hc_probe *pr, char *body, size_t blen)
{
    const char *want = pr->cf->expect_body;
    if (pr->chunked)
        blen = dechunk(body, blen);
    if (memmem(body, blen, want, strlen(want)) != NULL || !*want) {
        set_why(pr, "status %d, body matched", pr->status);
        finish(pr, HC_OK);
    } else {
        set_why(pr, "body does not contain '%.60s'", want);
        finish(pr, HC_FAIL);
    }
}

/* Looks at what was read so far. Returns true when the probe finished. */
static bool
process(struct hc_probe *pr, bool eof)
{
    const struct conf_health *cf = pr->cf;

    if (!pr->head_len) {
        struct http1_response resp;
        ssize_t r;
        for (;;) {
            r = http1_parse_response(pr->buf, pr->len, HEAD_MAX, &resp);
            if (r <= 0 || resp.status >= 200 || resp.status == 101)
                break;
            /* An interim answer (100 Continue, 103 Early Hints): the real
             * one follows. */
            memmove(pr->buf, pr->buf + r, pr->len - (size_t)r);
            pr->len -= (size_t)r;
        }
        if (r == HTTP1_ERROR) {
            set_why(pr, "bad response: %s", resp.error ? resp.error : "malformed");
            finish(pr, HC_FAIL);
            return true;
        }
        if (r == HTTP1_INCOMPLETE) {
            if (!eof)
                return false;
            if (pr->len)
                set_why(pr,
                        "connection closed after %zu bytes, before the end of the response "
                        "head",
                        pr->len);
            else
                set_why(pr, "connection closed without a response");
            finish(pr, HC_FAIL);
            return true;
        }
        pr->head_len = (size_t)r;
        pr->status = resp.status;
        pr->content_length = resp.f.content_length;
        pr->chunked = resp.f.chunked;
        if (pr->status < cf->expect_status_min || pr->status > cf->expect_status_max) {
            if (cf->expect_status_min == cf->expect_status_max)
                set_why(pr, "status %d, expected %d", pr->status, cf->expect_status_min);
            else
                set_why(pr, "status %d, expected %d-%d", pr->status, cf->expect_status_min,
                        cf->expect_status_max);
            finish(pr, HC_FAIL);
            return true;
        }
        if (!cf->expect_body) {
            set_why(pr, "status %d", pr->status);
            finish(pr, HC_OK);
            return true;
        }
        enum http1_method m = pr->head_only ? HTTP1_M_HEAD : HTTP1_M_GET;
        if (!http1_response_has_body(m, pr->status)) {
            pr->chunked = false;
            evaluate_body(pr, pr->buf + pr->len, 0);
            return true;
        }
    }

    char *body = pr->buf + pr->head_len;
    size_t blen = pr->len - pr->head_len;
    if (pr->chunked) {
        bool done = false;
        ssize_t n = http1_chunked_scan(&pr->chunk, body + pr->chunk_scanned,
                                       blen - pr->chunk_scanned, &done);
        if (n < 0) {
            set_why(pr, "bad response: malformed chunked body");
            finish(pr, HC_FAIL);
            return true;
        }
        pr->chunk_scanned += (size_t)n;
        if (done || blen >= BODY_MAX) {
            evaluate_body(pr, body, pr->chunk_scanned);
            return true;
        }
        if (eof) {
            set_why(pr, "connection closed before the end of the chunked body");
            finish(pr, HC_FAIL);
            return true;
        }
        return false;
    }
    if (pr->content_length >= 0) {
        size_t want = pr->content_length < BODY_MAX ? (size_t)pr->content_length : BODY_MAX;
        if (blen >= want) {
            evaluate_body(pr, body, want);
            return true;
        }
        if (eof) {
            set_why(pr, "connection closed after %zu of %lld body bytes", blen,
                    (long long)pr->content_length);
            finish(pr, HC_FAIL);
            return true;
        }
        return false;
    }
    /* Delimited by the end of the connection. */
    if (eof || blen >= BODY_MAX) {
        evaluate_body(pr, body, blen < BODY_MAX ? blen : BODY_MAX);
        return true;
    }
    return false;
}

/* TLS may need the other direction than the phase suggests (a read that
 * waits for a write, during renegotiation or a handshake). */
static void
wait_for(struct hc_probe *pr, int want)
{
    int ev = want ? want : EV_READ;
    if ((pr->io.events & (EV_READ | EV_WRITE)) == ev && ev_is_active(&pr->io))
        return;
    ev_io_stop(pr->loop, &pr->io);
    ev_io_set(&pr->io, pr->fd, ev);
    ev_io_start(pr->loop, &pr->io);
}

static void
do_read(struct hc_probe *pr)
{
    for (;;) {
        size_t limit = pr->head_len ? pr->head_len + BODY_MAX : HEAD_MAX;
        if (pr->len == pr->cap) {
            if (pr->cap >= limit) {
                /* The parser refuses a head over HEAD_MAX and process()
                 * ends at BODY_MAX, so this is only a safety net. */
                set_why(pr, "response too large");
                finish(pr, HC_FAIL);
                return;
            }
            size_t ncap = pr->cap ? pr->cap * 2 : 4096;
            if (ncap > limit)
                ncap = limit;
            char *nb = realloc(pr->buf, ncap);
            if (!nb) {
                set_why(pr, "out of memory");
                finish(pr, HC_LOCAL);
                return;
            }
            pr->buf = nb;
            pr->cap = ncap;
        }
        ssize_t n;
        if (pr->ssl) {
            int want = 0;
            n = lb_tls_read(pr->ssl, pr->buf + pr->len, pr->cap - pr->len, &want);
            if (n == -1) {
                wait_for(pr, want);
                return;
            }
            if (n < 0) {
                /* A cut without close_notify: what was read decides, as
                 * for a plain connection reset after the answer. */
                process(pr, true);
                return;
            }
        } else {
            n = recv(pr->fd, pr->buf + pr->len, pr->cap - pr->len, 0);
        }
        if (n > 0) {
            pr->len += (size_t)n;
            if (process(pr, false))
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* End of the connection, or reset by the server after (or before) it
         * answered: what was read decides. */
        process(pr, true);
        return;
    }
}

static void
do_send(struct hc_probe *pr)
{
    while (pr->sent < pr->len) {
        if (pr->ssl) {
            int want = 0;
            ssize_t n = lb_tls_write(pr->ssl, pr->buf + pr->sent, pr->len - pr->sent, &want);
            if (n == -1) {
                wait_for(pr, want);
                return;
            }
            if (n < 0) {
                char e[160];
                set_why(pr, "TLS write failed: %s", lb_tls_why(pr->ssl, e, sizeof(e)));
                finish(pr, HC_FAIL);
                return;
            }
            pr->sent += (size_t)n;
            continue;
        }
        ssize_t n = send(pr->fd, pr->buf + pr->sent, pr->len - pr->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            set_why(pr, "send failed: %s", strerror(errno));
            finish(pr, HC_FAIL);
            return;
        }
        pr->sent += (size_t)n;
    }
    /* The request buffer becomes the response buffer. */
    pr->len = pr->sent = 0;
    pr->phase = PH_READ;
    ev_io_stop(pr->loop, &pr->io);
    ev_io_set(&pr->io, pr->fd, EV_READ);
    ev_io_start(pr->loop, &pr->io);
}

static void
handshake(struct hc_probe *pr)
{
    int want = 0;
    int r = lb_tls_handshake(pr->ssl, &want);
    if (r == 0) {
        wait_for(pr, want);
        return;
    }
    if (r < 0) {
        char e[160];
        set_why(pr, "TLS handshake failed: %s", lb_tls_why(pr->ssl, e, sizeof(e)));
        finish(pr, HC_FAIL);
        return;
    }
    pr->phase = PH_SEND;
    do_send(pr);
}

static void
connected(struct hc_probe *pr)
{
    if (pr->cf->type == CONF_HC_HTTP && pr->tls) {
        /* The servers of a TLS pool answer HTTP only inside TLS, verified
         * the way the proxy verifies them. */
        pr->ssl = lb_tls_connect_new(pr->tls, pr->fd, NULL);
        if (!pr->ssl) {
            set_why(pr, "out of memory");
            finish(pr, HC_LOCAL);
            return;
        }
        pr->phase = PH_HANDSHAKE;
        handshake(pr);
        return;
    }
    if (pr->cf->type != CONF_HC_HTTP) {
        set_why(pr, "connected");
        finish(pr, HC_OK);
        return;
    }
    pr->phase = PH_SEND;
    do_send(pr);
}

static void
io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct hc_probe *pr = io->data;
    switch (pr->phase) {
    case PH_CONNECT: {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(pr->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
            err = errno;
        if (err) {
            connect_reason(pr, err);
            finish(pr, HC_FAIL);
            return;
        }
        connected(pr);
        return;
    }
    case PH_HANDSHAKE:
        handshake(pr);
        return;
    case PH_SEND:
        do_send(pr);
        return;
    case PH_READ:
        do_read(pr);
        return;
    default:
        ev_io_stop(loop, io);
    }
}

static int
build_request(struct hc_probe *pr, const char *host_default)
{
    const struct conf_health *cf = pr->cf;
    const char *method = cf->method ? cf->method : "GET";
    const char *path = cf->path ? cf->path : "/";
    const char *host = cf->host ? cf->host : host_default;
    int n = snprintf(NULL, 0,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                     "User-Agent: tern-health\r\n\r\n",
                     method, path, host);
    pr->buf = malloc((size_t)n + 1);
    if (!pr->buf)
        return -1;
    snprintf(pr->buf, (size_t)n + 1,
             "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: tern-health\r\n\r\n",
             method, path, host);
    pr->len = pr->cap = (size_t)n;
    pr->head_only = strcasecmp(method, "HEAD") == 0;
    return 0;
}

void
hc_probe_start(struct hc_probe *pr, struct ev_loop *loop, const struct conf_health *cf,
               const struct sockaddr_storage *sa, socklen_t salen, const char *host_default,
               struct lb_tls_client *tls, hc_probe_done_cb done)
{
    memset(pr, 0, sizeof(*pr));
    pr->tls = tls;
    pr->loop = loop;
    pr->cf = cf;
    pr->done = done;
    pr->fd = -1;
    pr->content_length = -1;
    ev_init(&pr->io, io_cb);
    pr->io.data = pr;
    ev_init(&pr->timer, timer_cb);
    pr->timer.data = pr;

    if (cf->type == CONF_HC_HTTP && build_request(pr, host_default ? host_default : "") < 0) {
        set_why(pr, "out of memory");
        early(pr, HC_LOCAL);
        return;
    }
    pr->fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (pr->fd < 0) {
        set_why(pr, "socket: %s", strerror(errno));
        early(pr, HC_LOCAL);
        return;
    }
    pr->phase = PH_CONNECT;
    ev_timer_set(&pr->timer, (double)cf->timeout / 1000.0, 0.);
    ev_timer_start(loop, &pr->timer);
    if (connect(pr->fd, (const struct sockaddr *)sa, salen) < 0 && errno != EINPROGRESS) {
        connect_reason(pr, errno);
        early(pr, HC_FAIL);
        return;
    }
    /* Even a connect that completed at once is reported through the loop:
     * the socket is writable straight away. */
    ev_io_set(&pr->io, pr->fd, EV_WRITE);
    ev_io_start(loop, &pr->io);
}

void
hc_probe_cancel(struct hc_probe *pr)
{
    if (pr->phase != PH_IDLE)
        probe_close(pr);
}

bool
hc_probe_running(const struct hc_probe *pr)
{
    return pr->phase != PH_IDLE;
}
