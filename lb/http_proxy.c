/*
 * HTTP/1.1 reverse proxying on a worker.
 *
 * One struct http_sess follows a client connection through its requests. The
 * session is driven by sess_run(), which advances every direction as far as
 * the sockets allow and then sets the watchers for what it still needs; every
 * callback only records which socket became ready and calls it. That keeps
 * the rules in one place: heads are parsed and rewritten, bodies are
 * validated and forwarded without being buffered whole, responses go back in
 * request order (one request at a time; pipelined requests wait in the input
 * buffer), and the connection is closed as soon as its framing is in doubt.
 *
 * Buffers: cin holds client bytes, sin backend bytes. A rewritten request head
 * goes to sout and a rewritten response head to cout; body bytes are written
 * straight from cin / sin (one sendmsg of head and body), only after the framing
 * code has approved them (req_fwd / resp_fwd), so nothing past the end of a
 * message ever reaches the other side. sout keeps the whole request head
 * until the request ends, with a copy of the body bytes sent behind it while
 * they fit: both are replayed when a reused backend connection turns out to
 * be closed, and the head names the request in the access log.
 *
 * TLS (lb/tls.h) sits under http_read_into() and http_write_out() (lb/http_io.c)
 * on either side. The readiness flags keep their meaning ("the last attempt
 * did not block"), but the event that sets them again is whatever TLS asked
 * for (c_rdw etc.): a read may wait for the socket to be writable. A flag is
 * only cleared when TLS says it would block, never because the socket looked
 * idle, so plaintext already decrypted inside the connection (which epoll
 * cannot see) is always read on a later pass. The client handshake runs
 * first, in ST_HEAD, under the header timeout; a server handshake runs in
 * ST_CONNECT, under the connect timeout.
 *
 * lb/http_head.c parses, routes and rewrites the request and response heads;
 * lb/http_io.c does the socket and TLS I/O, lb/http_log.c the access log and
 * the counters of a finished request; everything else is here: the
 * session's state machine, life cycle and timeouts, the backend side
 * (picking a server, connecting, retries, the queue, reusing idle
 * connections), body framing and error answers. lb/http_proxy_int.h has
 * what these files share.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb/accesslog.h"
#include "lb/core.h"
#include "lb/http1.h"
#include "lb/http_proxy_int.h"
#include "lb/log.h"
#include "lb/tls.h"

#define LINGER_SECS 2.0

static void sess_run(struct http_sess *s);
static void sess_close(struct http_sess *s);

static const char *const err_text[] = {
    [0] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
          "Connection: close\r\n\r\nBad Request\n",
    [1] = "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
          "Connection: close\r\n\r\nRequest Timeout\n",
    [2] = "HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n"
          "Connection: close\r\n\r\nContent Too Large\n",
    [3] = "HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
          "Connection: close\r\n\r\nURI Too Long\n",
    [4] = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
          "Content-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n",
    [5] = "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
          "Connection: close\r\n\r\nNot Implemented\n",
    [6] = "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
          "Connection: close\r\n\r\nBad Gateway\n",
    [7] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
          "Connection: close\r\n\r\nService Unavailable\n",
    [8] = "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
          "Connection: close\r\n\r\nGateway Timeout\n",
    [9] = "HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\n"
          "Content-Length: 27\r\nConnection: close\r\n\r\nHTTP Version Not Supported\n",
    [10] = "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n"
           "Connection: close\r\n\r\nMethod Not Allowed\n",
};

static const char *
err_response(int status)
{
    switch (status) {
    case 408:
        return err_text[1];
    case 413:
        return err_text[2];
    case 414:
        return err_text[3];
    case 431:
        return err_text[4];
    case 501:
        return err_text[5];
    case 502:
        return err_text[6];
    case 503:
        return err_text[7];
    case 504:
        return err_text[8];
    case 505:
        return err_text[9];
    case 405:
        return err_text[10];
    default:
        return err_text[0];
    }
}

/* ---- backend connection ---- */

static void
backend_release(struct http_sess *s, bool keep)
{
    struct lb_bconn *b = s->x->b;
    if (!b)
        return;
    ev_io_stop(s->w->loop, &s->x->bio);
    atomic_fetch_sub_explicit(&b->srv->active, 1, memory_order_relaxed);
    s->x->b = NULL;
    struct lb_wpool *wp = b->wp;
    lb_backend_put(b, keep);
    /* A slot is free: the oldest request waiting for one goes first. */
    if (wp->queued)
        lb_queue_kick(wp);
}

static void backend_cb(struct ev_loop *loop, ev_io *io, int revents);

/* Picks a server and connects, trying others on immediate failure. Returns 0
 * when a connection exists or is in progress, -1 after answering 503. */
static int send_error(struct http_sess *s, int status);

/* Whether a request may be sent again after its reused connection died
 * without a byte of answer: the server may have acted on it before dying, so
 * only an idempotent method (RFC 9110 9.2.2) qualifies, and only while every
 * body byte sent is still at hand (keep_body). nginx retries the same
 * methods, from its buffered copy of the body. */
static bool
idempotent(const struct http_exch *x)
{
    switch (x->meth) {
    case HTTP1_M_GET:
    case HTTP1_M_HEAD:
    case HTTP1_M_PUT:
    case HTTP1_M_DELETE:
    case HTTP1_M_OPTIONS:
    case HTTP1_M_TRACE:
        return true;
    default:
        return false;
    }
}

static bool
replayable(const struct http_exch *x)
{
    return idempotent(x) && (x->req_mode == BODY_NONE || !x->body_lost);
}

/* Whether a request will be replayable whatever happens: its body, if any,
 * has a length that fits behind the head. Only such a request skips the
 * probe of a reused connection; a chunked body's size is not known yet. */
static bool
surely_replayable(const struct http_exch *x)
{
    if (!idempotent(x))
        return false;
    if (x->req_mode == BODY_NONE)
        return true;
    return x->req_mode == BODY_CL && !x->body_lost &&
           (uint64_t)x->sout_len + x->body_copy + x->req_fwd + (uint64_t)x->req_left <= LB_BUF_SIZE;
}

/* Keeps a copy of n body bytes just sent (from p) behind the request head in
 * sout, where a replay sends them again. The plain path never writes past
 * the head in sout; the TLS path may have moved these very bytes there
 * already, which the copy leaves as they are. */
static void
keep_body(struct http_exch *x, const char *p, uint64_t n)
{
    if (!n || x->body_lost)
        return;
    if (n > (uint64_t)LB_BUF_SIZE - x->sout_len - x->body_copy) {
        x->body_lost = true;
        return;
    }
    char *to = x->sout.data + x->sout_len + x->body_copy;
    if (to != p)
        memcpy(to, p, n);
    x->body_copy += (uint32_t)n;
}

/* The idle timeout of a forwarded request: while tern waits for more of the
 * request body from the client (nothing of it waits for the server), the
 * client's (nginx's client_body_timeout, HAProxy's timeout client); else the
 * server's. */
static bool
client_owes_body(const struct http_sess *s)
{
    return !s->x->req_done && !s->x->req_fwd &&
           !(s->x->sout.data && s->x->sout.tail > s->x->sout.head);
}

static uint64_t
forward_timeout(const struct http_sess *s)
{
    return client_owes_body(s) ? lcf(s)->timeout_client : pcf(s)->timeout_server;
}

int
http_backend_connect(struct http_sess *s)
{
    struct lb_worker *w = s->w;
    struct lb_wpool *wp = &s->gen->wpools[s->x->pool];
    uint64_t key;

    switch (pcf(s)->balance) {
    case LB_BAL_SOURCE_HASH:
        key = lb_hash64(s->peer, s->peer_family == AF_INET ? 4 : 16);
        break;
    case LB_BAL_URI_HASH: {
        /* The path of the request line in sout (up to '?'). */
        const char *h = s->x->sout.data, *e = h + s->x->sout_len;
        const char *p = memchr(h, ' ', (size_t)(e - h));
        const char *q = p ? p + 1 : e;
        while (q < e && *q != ' ' && *q != '?')
            q++;
        key = p ? lb_hash64(p + 1, (size_t)(q - p - 1)) : 0;
        break;
    }
    default:
        key = lb_worker_rand(w);
    }

    for (;;) {
        int avoid[MAX_TRIES];
        for (int i = 0; i < s->x->tries; i++)
            avoid[i] = s->x->avoid[i];
        int i = lb_backend_pick(w, wp, key, avoid, s->x->tries);
        if (i == LB_PICK_FULL && s->state == ST_QUEUED) {
            if (lb_queue_add(wp, &s->x->q)) {
                s->x->queued = true;
                return 0;
            }
        } else if (i == LB_PICK_FULL && lb_queue_add(wp, &s->x->q)) {
            s->x->queued = true;
            s->state = ST_QUEUED;
            arm_timer(s, pcf(s)->timeout_queue);
            return 0;
        }
        if (i < 0) {
            atomic_fetch_add_explicit(&wp->pool->no_server, 1, memory_order_relaxed);
            return send_error(s, 503);
        }
        struct lb_server *srv = &wp->pool->servers[i];
        /* A replayed request (tries > 0) must not land on a connection that
         * may be just as stale as the one that failed. One that cannot be
         * replayed at all (backend_lost) has its connection probed first: a
         * syscall that GETs, the common case, do not pay. */
        struct lb_bconn *b = lb_backend_get(w, wp, i, s->x->tries == 0, !surely_replayable(s->x));
        s->x->srv = (int16_t)i;
        if (s->x->tries < MAX_TRIES)
            s->x->avoid[s->x->tries] = (int16_t)i;
        s->x->tries++;
        if (!b) {
            atomic_fetch_add_explicit(&srv->st.connect_errors, 1, memory_order_relaxed);
            if (s->x->tries <= pcf(s)->retries && s->x->tries < MAX_TRIES)
                continue;
            return send_error(s, 503);
        }
        atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&srv->st.requests, 1, memory_order_relaxed);
        b->owner = s;
        s->x->b = b;
        s->x->b_rd = false;
        s->x->b_rdw = EV_READ;
        s->x->b_wrw = EV_WRITE;
        s->x->b_hs = false;
        s->x->b_eof = false;
        s->x->sin.head = s->x->sin.tail = 0;
        ev_io_init(&s->x->bio, backend_cb, b->fd, EV_WRITE);
        /* libev re-registers an fd with epoll whenever a watcher was (re)set,
         * in case the number now names a new file. A reused connection's fd
         * is already registered: skip that syscall on every request. */
        if (b->reused)
            s->x->bio.events &= ~EV__IOFDSET;
        if (b->reused) {
            s->state = ST_FORWARD;
            s->x->b_wr = true;
            s->x->t_connect = lb_now_us(w->loop);
            arm_timer(s, pcf(s)->timeout_server);
        } else {
            s->state = ST_CONNECT;
            s->x->b_wr = false;
            ev_io_start(w->loop, &s->x->bio);
            arm_timer(s, pcf(s)->timeout_connect);
        }
        return 0;
    }
}

/* A connection attempt failed (refused, timed out, TLS refused) before any
 * byte of the request could matter: try another server if retries allow,
 * else answer status. */
static void
connect_failed(struct http_sess *s, int status)
{
    struct lb_server *srv = s->x->b->srv;
    atomic_fetch_add_explicit(&srv->st.connect_errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&srv->consecutive_failures, 1, memory_order_relaxed);
    backend_release(s, false);
    if (s->x->tries <= pcf(s)->retries && s->x->tries < MAX_TRIES) {
        s->x->sout.head = 0;
        http_backend_connect(s);
    } else {
        send_error(s, status);
    }
}

static void
reset_request(struct http_sess *s)
{
    s->x->req_mode = s->x->resp_mode = BODY_NONE;
    s->x->req_done = s->x->resp_head_done = s->x->resp_done = s->x->upgrade = false;
    s->x->backend_close = false;
    s->x->any_resp_sent = false;
    s->x->pool = -1;
    s->x->srv = -1;
    s->x->tries = 0;
    s->x->status = 0;
    s->x->sout_len = 0;
    s->x->body_copy = 0;
    s->x->body_lost = false;
    s->x->req_fwd = s->x->resp_fwd = 0;
    s->x->req_left = s->x->resp_left = 0;
    memset(&s->x->req_ck, 0, sizeof(s->x->req_ck));
    memset(&s->x->resp_ck, 0, sizeof(s->x->resp_ck));
    s->x->t_connect = s->x->t_resp = 0;
    s->x->bytes_in = s->x->bytes_out = 0;
    s->x->minor = -1;
}

static void queue_retry(struct lb_queued *q);

/* Gives s the state of a request. Returns false when memory ran out. */
static bool
exch_get(struct http_sess *s)
{
    struct lb_worker *w = s->w;
    struct http_exch *x = lb_pool_get(&w->exchs, sizeof(*x));
    if (!x)
        return false;
    memset(x, 0, sizeof(*x));
    x->s = s;
    x->b_rdw = EV_READ;
    x->b_wrw = EV_WRITE;
    x->q.retry = queue_retry;
    ev_init(&x->bio, backend_cb);
    x->t_start = lb_now_us(w->loop);
    s->x = x;
    reset_request(s);
    return true;
}

/* Takes the request state back; the caller let go of the backend
 * connection and the queue. */
static void
exch_put(struct http_sess *s)
{
    struct lb_worker *w = s->w;
    struct http_exch *x = s->x;
    lb_buf_release(&w->bufs, &x->cout, true);
    lb_buf_release(&w->bufs, &x->sout, true);
    lb_buf_release(&w->bufs, &x->sin, true);
    s->x = NULL;
    lb_pool_put(&w->exchs, x);
}

static int
send_error(struct http_sess *s, int status)
{
    const char *txt = err_response(status);
    s->x->status = (uint16_t)status;
    s->client_close = true;
    backend_release(s, false);
    s->x->cout.head = s->x->cout.tail = 0;
    lb_buf_append(&s->w->bufs, &s->x->cout, txt, strlen(txt));
    s->x->bytes_out += strlen(txt);
    if (s->x->pool >= 0 || s->x->minor >= 0 || status != 408)
        http_log_request(s, status >= 500 ? "backend" : "client");
    /* Lingering close: keep reading (and discarding) what the client still
     * sends for a moment, so that closing with unread bytes does not reset
     * the connection before the client has read the answer. */
    s->state = ST_LINGER;
    s->x->req_fwd = 0;
    s->x->resp_fwd = 0;
    lb_buf_release(&s->w->bufs, &s->x->sin, true);
    arm_timer(s, (uint64_t)(LINGER_SECS * 1000));
    return -1;
}

/* ---- body framing ---- */

/* Approves request bytes for forwarding. Returns -1 on a malformed body, -2
 * when its chunks add up to more than max_body_size. */
static int
approve_request(struct http_sess *s)
{
    uint64_t fwd0 = s->x->req_fwd;
    uint64_t avail = lb_buf_len(&s->cin) - s->x->req_fwd;
    if (!avail || s->x->req_done)
        return 0;
    switch (s->x->req_mode) {
    case BODY_CL: {
        uint64_t k = avail < (uint64_t)s->x->req_left ? avail : (uint64_t)s->x->req_left;
        s->x->req_fwd += k;
        s->x->req_left -= (int64_t)k;
        if (!s->x->req_left)
            s->x->req_done = true;
        break;
    }
    case BODY_CHUNKED: {
        bool done = false;
        ssize_t k = http1_chunked_scan(&s->x->req_ck, s->cin.data + s->cin.head + s->x->req_fwd,
                                       avail, &done);
        if (k < 0)
            return -1;
        if (lcf(s)->max_body_size && s->x->req_ck.data_bytes > lcf(s)->max_body_size)
            return -2;
        s->x->req_fwd += (uint64_t)k;
        if (done)
            s->x->req_done = true;
        break;
    }
    case BODY_TUNNEL:
        s->x->req_fwd += avail;
        break;
    default:
        break;
    }
    /* The request's bytes are counted here, as they become its own: a read
     * may bring the next request too, or the head's read some body. */
    s->x->bytes_in += s->x->req_fwd - fwd0;
    return 0;
}

static int
approve_response(struct http_sess *s)
{
    uint64_t avail = lb_buf_len(&s->x->sin) - s->x->resp_fwd;
    if (!avail || s->x->resp_done)
        return 0;
    switch (s->x->resp_mode) {
    case BODY_CL: {
        uint64_t k = avail < (uint64_t)s->x->resp_left ? avail : (uint64_t)s->x->resp_left;
        s->x->resp_fwd += k;
        s->x->resp_left -= (int64_t)k;
        if (!s->x->resp_left)
            s->x->resp_done = true;
        break;
    }
    case BODY_CHUNKED: {
        bool done = false;
        ssize_t k = http1_chunked_scan(
            &s->x->resp_ck, s->x->sin.data + s->x->sin.head + s->x->resp_fwd, avail, &done);
        if (k < 0)
            return -1;
        s->x->resp_fwd += (uint64_t)k;
        if (done)
            s->x->resp_done = true;
        break;
    }
    case BODY_CLOSE:
    case BODY_TUNNEL:
        s->x->resp_fwd += avail;
        break;
    default:
        break;
    }
    return 0;
}

/* Whether the response bytes about to go out are a head (and maybe part of
 * a body) whose small Content-Length rest the backend is sending right now.
 * Origins often write a head and its body separately (nginx: writev, then
 * sendfile), and forwarding each at once costs the client a packet and a
 * wake-up more per response; corked, the two leave as one segment when the
 * rest is written (the kernel sends a cork after 200 ms at the latest). */
static bool
resp_more_soon(const struct http_sess *s)
{
    const struct http_exch *x = s->x;
    return x->resp_mode == BODY_CL && x->resp_left > 0 && x->resp_left <= 16384 &&
           s->state == ST_FORWARD && x->cout.data && x->cout.tail > x->cout.head;
}

/* ---- lifecycle ---- */

static void
sess_free(struct http_sess *s)
{
    struct lb_worker *w = s->w;
    ev_io_stop(w->loop, &s->cio);
    ev_timer_stop(w->loop, &s->timer);
    if (s->x) {
        if (s->x->queued)
            lb_queue_del(&s->gen->wpools[s->x->pool], &s->x->q);
        backend_release(s, false);
        exch_put(s);
    }
    if (s->ssl)
        lb_tls_conn_free(s->ssl); /* close_notify first, if the connection is sound */
    free(s->cert_subject);
    close(s->cfd);
    lb_buf_release(&w->bufs, &s->cin, true);
    lb_worker_conn_del(w, &s->link);
    lb_wgen_unref(s->gen);
    free(s);
    lb_worker_conn_closed(w);
}

static void
sess_close(struct http_sess *s)
{
    if (!s->x)
        ; /* idle between requests: nothing to log */
    else if (s->x->pool >= 0 && s->x->status == 0)
        http_log_request(s, s->x->any_resp_sent ? "cut" : "aborted");
    else if (s->x->pool >= 0 && !s->x->resp_done && s->state != ST_LINGER && s->state != ST_TUNNEL)
        http_log_request(s, "cut");
    sess_free(s);
}

/* http_head.c answers errors and ends sessions through these. sess_run()
 * and the rest of this file keep calling the static functions: the compiler
 * optimizes around calls to a static function better, and sess_run() ran 11
 * instructions more per request when these two were extern. */
int
http_send_error(struct http_sess *s, int status)
{
    return send_error(s, status);
}

void
http_sess_close(struct http_sess *s)
{
    sess_close(s);
}

/* The response went out whole: recycle the backend connection and wait for
 * the next request (which may already be in cin). Returns false when the
 * session was closed (and freed). */
static bool
finish_request(struct http_sess *s)
{
    struct lb_worker *w = s->w;
    bool keep_backend = s->x->req_done && !s->x->backend_close && s->x->req_fwd == 0;
    http_log_request(s, "");
    backend_release(s, keep_backend);
    lb_buf_release(&w->bufs, &s->x->sin, true);
    lb_buf_release(&w->bufs, &s->x->sout, true);
    lb_buf_release(&w->bufs, &s->x->cout, false);
    if (s->client_close || w->draining) {
        sess_close(s);
        return false;
    }
    if (s->gen != w->gen) {
        struct lb_listener *l = successor(s);
        if (!l) {
            sess_close(s);
            return false;
        }
        migrate(s, l);
    }
    reset_request(s);
    s->state = ST_HEAD;
    s->x->t_start = lb_now_us(w->loop);
    if (lb_buf_len(&s->cin)) {
        s->head_timer = true;
        arm_timer(s, lcf(s)->timeout_header);
    } else {
        s->head_timer = false;
        lb_buf_release(&w->bufs, &s->cin, false);
        arm_timer(s, lcf(s)->timeout_client);
        /* Wait for the next request through epoll (the watcher stayed
         * armed) rather than trying a read that would mostly fail; but
         * bytes TLS already took from the socket would never wake it. */
        if (!s->ssl || !lb_tls_pending(s->ssl))
            s->c_rd = false;
    }
    return true;
}

static void
update_watchers(struct http_sess *s)
{
    struct ev_loop *loop = s->w->loop;
    int cev = 0, bev = 0;
    bool cout_pending = (s->x->cout.data && s->x->cout.tail > s->x->cout.head) || s->x->resp_fwd;
    bool sout_pending = (s->x->sout.data && s->x->sout.tail > s->x->sout.head) || s->x->req_fwd;

    /* A read watcher we do not need right now stays armed while the client
     * is quiet: disarming and rearming it costs two epoll_ctl calls per
     * request. If the client does send (a pipelined request), the event sets
     * c_rd and the next pass disarms it, so level triggering cannot spin. */
    bool keep_c = ev_is_active(&s->cio) && (s->cio.events & EV_READ) && !s->c_woke && !s->c_eof;
    s->c_woke = false;
    bool touch_b = true;

    switch (s->state) {
    case ST_HEAD:
        if (!s->c_rd && !s->c_eof)
            cev |= s->c_rdw;
        break;
    case ST_QUEUED:
    case ST_CONNECT:
        /* bio waits for EV_WRITE (set by http_backend_connect); the client is not
         * read until the request can go somewhere. */
        if (keep_c)
            cev |= EV_READ;
        touch_b = false;
        break;
    case ST_FORWARD:
    case ST_TUNNEL:
        if (!s->x->req_done && !s->c_rd && !s->c_eof && lb_buf_len(&s->cin) < LB_BUF_SIZE)
            cev |= s->c_rdw;
        if (keep_c && s->state == ST_FORWARD)
            cev |= EV_READ;
        if (cout_pending && !s->c_wr)
            cev |= s->c_wrw;
        if (s->x->b) {
            if (!s->x->resp_done && !s->x->b_rd && !s->x->b_eof)
                bev |= s->x->b_rdw;
            if (sout_pending && !s->x->b_wr)
                bev |= s->x->b_wrw;
        }
        break;
    case ST_LINGER:
        if (cout_pending && !s->c_wr)
            cev |= s->c_wrw;
        else if (!cout_pending && !s->c_rd)
            cev |= EV_READ; /* discarding raw bytes, TLS or not */
        break;
    }
    if ((s->cio.events & (EV_READ | EV_WRITE)) != cev || !ev_is_active(&s->cio)) {
        ev_io_stop(loop, &s->cio);
        if (cev) {
            ev_io_modify(&s->cio, cev); /* same fd: no re-registration */
            ev_io_start(loop, &s->cio);
        }
    }
    if (s->x->b && touch_b) {
        if ((s->x->bio.events & (EV_READ | EV_WRITE)) != bev || !ev_is_active(&s->x->bio)) {
            ev_io_stop(loop, &s->x->bio);
            if (bev) {
                ev_io_modify(&s->x->bio, bev);
                ev_io_start(loop, &s->x->bio);
            }
        }
    }
}

/* A response that cannot be completed is never passed off as a whole one:
 * while the client has seen nothing of it, it gets a 502; after that its
 * connection is cut. Returns true when the session is gone. */
static bool
response_failed(struct http_sess *s)
{
    if (!s->x->bytes_out) {
        send_error(s, 502);
        return false;
    }
    sess_close(s);
    return true;
}

/* Backend went away (EOF or error) while a response was expected. Returns
 * true when the session is gone. */
static bool
backend_lost(struct http_sess *s, bool error)
{
    if (s->state == ST_TUNNEL) {
        if (error) {
            /* A reset (or a write after the backend's close): nothing more
             * can reach it, and bytes left for it would be retried forever. */
            sess_close(s);
            return true;
        }
        s->x->b_eof = true;
        return false;
    }
    if (s->x->resp_head_done) {
        if (s->x->resp_mode == BODY_CLOSE && !error) {
            s->x->resp_done = true;
            s->x->b_eof = true;
            return false;
        }
        return response_failed(s); /* a truncated body */
    }
    if (lb_buf_len(&s->x->sin) == 0 && s->x->b && s->x->b->reused && replayable(s->x)) {
        /* Most likely the backend closed the idle connection just as we
         * reused it; an idempotent request may go again on a fresh one. */
        backend_release(s, false);
        s->x->sout.head = 0;
        s->x->sout.tail = s->x->sout_len + s->x->body_copy;
        http_backend_connect(s); /* on failure it has answered 503 */
        return false;
    }
    send_error(s, 502);
    return false;
}

static void
sess_run(struct http_sess *s)
{
    struct lb_worker *w = s->w;
    int guard;

    if (!s->x && !exch_get(s)) {
        sess_free(s);
        return;
    }
    if (s->tls_hs) {
        if (!s->c_rd) {
            update_watchers(s);
            return;
        }
        int want = EV_READ;
        int r = lb_tls_handshake(s->ssl, &want);
        if (r < 0) {
            char why[256];
            lb_debug("listener %s: TLS handshake failed: %s", lcf(s)->name,
                     lb_tls_why(s->ssl, why, sizeof(why)));
            sess_free(s);
            return;
        }
        if (r == 0) {
            s->c_rd = false;
            s->c_rdw = (uint8_t)want;
            update_watchers(s);
            return;
        }
        s->tls_hs = false;
        s->c_rdw = EV_READ;
        s->c_rd = s->c_wr = true;
        s->cert_subject = lb_tls_peer_subject(s->ssl);
    }

    /* Bounded so one busy connection cannot starve the others of the loop. */
    for (guard = 0; guard < 64; guard++) {
        bool progress = false;

        if (s->state == ST_HEAD) {
            if (lb_buf_len(&s->cin)) {
                int r = http_start_request(s);
                if (r != 0)
                    continue; /* started, or answered an error */
            }
            if (s->c_eof) {
                sess_close(s);
                return;
            }
            if (!s->c_rd)
                break;
            ssize_t n = http_read_into(w, s->cfd, s->ssl, &s->cin, &s->c_rd, &s->c_rdw);
            if (n > 0) {
                lb_stat_add(&lb_lstats(s->l)->bytes_in, n);
                if (!s->head_timer) {
                    s->head_timer = true;
                    s->x->t_start = lb_now_us(w->loop);
                    arm_timer(s, lcf(s)->timeout_header);
                }
                continue;
            }
            if (n == 0 || n == -2) {
                s->c_eof = true;
                continue;
            }
            break;
        }

        if (s->state == ST_LINGER) {
            ssize_t k = http_write_out(s->cfd, s->ssl, &s->x->cout, &s->cin, &s->x->resp_fwd,
                                       &s->c_wr, &s->c_wrw, false);
            if (k > 0)
                lb_stat_add(&lb_lstats(s->l)->bytes_out, k);
            if (k == -2) {
                sess_free(s);
                return;
            }
            if (s->x->cout.head < s->x->cout.tail)
                break;
            if (!s->c_eof) {
                http_half_close(s->cfd, s->ssl);
                s->c_eof = true; /* from now on: reading until EOF */
                s->c_rd = true;
                s->c_rdw = EV_READ; /* raw bytes, never decrypted */
            }
            char junk[4096];
            for (;;) {
                ssize_t n = read(s->cfd, junk, sizeof(junk));
                if (n > 0)
                    continue;
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    s->c_rd = false;
                    break;
                }
                sess_free(s);
                return;
            }
            break;
        }

        if (s->state == ST_QUEUED) {
            if (s->x->queued)
                break;
            http_backend_connect(s); /* a slot was freed: try again */
            continue;
        }
        if (s->state == ST_CONNECT)
            break;

        /* ST_FORWARD and ST_TUNNEL */
        bool req_was_done = s->x->req_done;
        int ar = approve_request(s);
        if (ar < 0) {
            /* What went to the server is an unfinished request: send_error
             * closes that connection. */
            if (s->x->any_resp_sent) {
                sess_close(s);
                return;
            }
            send_error(s, ar == -2 ? 413 : 400);
            continue;
        }
        if (!req_was_done && s->x->req_done && s->state == ST_FORWARD)
            arm_timer(s, pcf(s)->timeout_server); /* the client's part is done */
        if (s->x->b && s->x->b_wr && ((s->x->sout.tail > s->x->sout.head) || s->x->req_fwd)) {
            uint64_t fwd = s->x->req_fwd;
            const char *body = s->cin.data + s->cin.head;
            bool keep = s->x->b->reused && fwd && !s->x->body_lost;
            ssize_t k = http_write_out(s->x->b->fd, s->x->b->ssl, &s->x->sout, &s->cin,
                                       &s->x->req_fwd, &s->x->b_wr, &s->x->b_wrw, false);
            if (keep)
                keep_body(s->x, body, fwd - s->x->req_fwd);
            if (k > 0) {
                progress = true;
                if (s->state == ST_FORWARD && !s->x->req_done)
                    arm_timer(s, forward_timeout(s));
                if (s->x->req_fwd == 0 && s->x->sout.head == s->x->sout.tail &&
                    s->state == ST_TUNNEL && s->c_eof)
                    http_half_close(s->x->b->fd, s->x->b->ssl);
            } else if (k == -2) {
                if (backend_lost(s, true))
                    return;
                continue;
            }
        }
        /* Read more of the request body, or tunnel bytes, when there is room. */
        if (!s->x->req_done && s->c_rd && !s->c_eof && lb_buf_len(&s->cin) < LB_BUF_SIZE) {
            ssize_t n = http_read_into(w, s->cfd, s->ssl, &s->cin, &s->c_rd, &s->c_rdw);
            if (n > 0) {
                lb_stat_add(&lb_lstats(s->l)->bytes_in, n);
                progress = true;
                if (s->state == ST_FORWARD)
                    arm_timer(s, forward_timeout(s));
            } else if (n == 0 || n == -2) {
                s->c_eof = true;
                if (s->state != ST_TUNNEL) {
                    /* The client left in the middle of its request. */
                    sess_close(s);
                    return;
                }
                if (s->x->b && s->x->req_fwd == 0)
                    http_half_close(s->x->b->fd, s->x->b->ssl);
                progress = true;
            }
        }
        /* Response side. */
        if (s->x->b && !s->x->resp_done && s->x->b_rd && !s->x->b_eof) {
            ssize_t n =
                http_read_into(w, s->x->b->fd, s->x->b->ssl, &s->x->sin, &s->x->b_rd, &s->x->b_rdw);
            if (n > 0) {
                progress = true;
                if (s->state == ST_FORWARD)
                    arm_timer(s, pcf(s)->timeout_server);
            } else if (n == 0 || n == -2) {
                if (s->state == ST_TUNNEL) {
                    s->x->b_eof = true;
                    progress = true;
                } else if (!(s->x->resp_head_done && s->x->resp_mode == BODY_CLOSE && n == 0)) {
                    if (backend_lost(s, n == -2))
                        return;
                    continue;
                } else {
                    s->x->resp_done = true;
                    s->x->b_eof = true;
                    progress = true;
                }
            }
        }
        if (s->state == ST_FORWARD && !s->x->resp_head_done && lb_buf_len(&s->x->sin)) {
            int r = http_response_head(s);
            if (r == -2)
                return; /* freed */
            if (r < 0) {
                if (s->state == ST_LINGER)
                    continue;
                return; /* closed */
            }
            if (r > 0)
                progress = true;
        }
        if (s->x->resp_head_done && approve_response(s) < 0) {
            lb_warn("pool %s server %s: malformed chunked response", pcf(s)->name,
                    s->x->b ? s->x->b->srv->name : "?");
            if (response_failed(s))
                return;
            continue;
        }
        if (s->c_wr && ((s->x->cout.data && s->x->cout.tail > s->x->cout.head) || s->x->resp_fwd)) {
            ssize_t k = http_write_out(s->cfd, s->ssl, &s->x->cout, &s->x->sin, &s->x->resp_fwd,
                                       &s->c_wr, &s->c_wrw, resp_more_soon(s));
            if (k > 0) {
                s->x->bytes_out += (uint64_t)k;
                lb_stat_add(&lb_lstats(s->l)->bytes_out, k);
                progress = true;
                if (s->state == ST_TUNNEL && s->x->b_eof && !s->x->resp_fwd &&
                    s->x->cout.head == s->x->cout.tail)
                    http_half_close(s->cfd, s->ssl);
            } else if (k == -2) {
                sess_close(s);
                return;
            }
        }
        if (s->state == ST_TUNNEL) {
            bool c_done = s->c_eof && !s->x->req_fwd && lb_buf_len(&s->cin) == 0;
            bool b_done = s->x->b_eof && !s->x->resp_fwd && lb_buf_len(&s->x->sin) == 0 &&
                          (!s->x->cout.data || s->x->cout.head == s->x->cout.tail);
            if (c_done && b_done) {
                http_log_request(s, "");
                s->client_close = true;
                sess_free(s);
                return;
            }
            if (progress)
                arm_timer(s, lcf(s)->timeout_tunnel);
        } else if (s->x->resp_done && !s->x->resp_fwd &&
                   (!s->x->cout.data || s->x->cout.head == s->x->cout.tail)) {
            if (!s->x->req_done)
                s->client_close = true;
            if (!finish_request(s))
                return;
            continue;
        }
        if (!progress)
            break;
    }
    lb_buf_release(&w->bufs, &s->x->cout, false);
    if (s->state != ST_LINGER && !s->x->req_fwd && lb_buf_len(&s->cin) == 0)
        lb_buf_release(&w->bufs, &s->cin, false);
    update_watchers(s);
    if (s->state == ST_HEAD && lb_buf_len(&s->cin) == 0)
        exch_put(s); /* idle: the next request takes a fresh one */
    if (guard == 64) {
        /* Out of turns with work left: come back after the other pending
         * events had theirs. This comes after update_watchers because
         * stopping cio (as sess_free does) cancels the fed event. */
        ev_feed_event(w->loop, &s->cio, EV_CUSTOM);
    }
}

/* ---- callbacks ---- */

static void
client_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct http_sess *s = (struct http_sess *)((char *)io - offsetof(struct http_sess, cio));
    if (revents & EV_READ) {
        /* Woken for bytes we are not ready to read: the lazily kept watcher
         * must go, or level triggering would wake us again and again. */
        bool want = s->state == ST_HEAD || s->state == ST_LINGER ||
                    ((s->state == ST_FORWARD || s->state == ST_TUNNEL) && !s->x->req_done);
        if (!want)
            s->c_woke = true;
    }
    if (revents & s->c_rdw)
        s->c_rd = true;
    if (revents & s->c_wrw)
        s->c_wr = true;
    sess_run(s);
}

static void
backend_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct http_exch *x = (struct http_exch *)((char *)io - offsetof(struct http_exch, bio));
    struct http_sess *s = x->s;
    if (s->state == ST_CONNECT) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->x->b->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            lb_warn("pool %s server %s: connect to %s failed: %s", pcf(s)->name, s->x->b->srv->name,
                    s->x->b->srv->addr.text, strerror(err));
            connect_failed(s, 503);
            sess_run(s);
            return;
        }
        if (s->x->b->ssl && !s->x->b->tls_ready) {
            int want = EV_WRITE;
            s->x->b_hs = true;
            int r = lb_tls_handshake(s->x->b->ssl, &want);
            if (r == 0) {
                if (!ev_is_active(&s->x->bio) ||
                    (s->x->bio.events & (EV_READ | EV_WRITE)) != want) {
                    ev_io_stop(loop, &s->x->bio);
                    ev_io_modify(&s->x->bio, want);
                    ev_io_start(loop, &s->x->bio);
                }
                return;
            }
            if (r < 0) {
                char why[256];
                lb_warn("pool %s server %s: TLS handshake with %s failed: %s", pcf(s)->name,
                        s->x->b->srv->name, s->x->b->srv->addr.text,
                        lb_tls_why(s->x->b->ssl, why, sizeof(why)));
                /* A server we cannot trust is a bad gateway, not a missing
                 * one. */
                connect_failed(s, 502);
                sess_run(s);
                return;
            }
            s->x->b->tls_ready = true;
            s->x->b_hs = false;
            s->x->b_wr = true;
        }
        s->state = ST_FORWARD;
        s->x->t_connect = lb_now_us(loop);
        arm_timer(s, forward_timeout(s));
        ev_io_stop(loop, &s->x->bio);
        s->x->bio.events = 0;
    }
    if (revents & s->x->b_rdw)
        s->x->b_rd = true;
    if (revents & s->x->b_wrw)
        s->x->b_wr = true;
    sess_run(s);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct http_sess *s = (struct http_sess *)((char *)t - offsetof(struct http_sess, timer));
    ev_tstamp left = s->deadline - ev_now(loop);
    if (left > 0.0005) { /* pushed later since it was set: not due yet */
        ev_timer_set(t, left, 0.);
        ev_timer_start(loop, t);
        return;
    }
    switch (s->state) {
    case ST_HEAD:
        if (lb_buf_len(&s->cin)) {
            send_error(s, 408);
            sess_run(s);
        } else {
            sess_free(s); /* idle keep-alive connection */
        }
        return;
    case ST_QUEUED:
        if (s->x->queued) {
            lb_queue_del(&s->gen->wpools[s->x->pool], &s->x->q);
            s->x->queued = false;
        }
        lb_warn("pool %s: no server slot within the queue timeout", pcf(s)->name);
        send_error(s, 503);
        sess_run(s);
        return;
    case ST_CONNECT:
        lb_warn("pool %s server %s: %s timeout", pcf(s)->name, s->x->b->srv->name,
                s->x->b_hs ? "TLS handshake" : "connect");
        /* Connected but no TLS: something else answers on that port. */
        connect_failed(s, s->x->b_hs ? 502 : 503);
        sess_run(s);
        return;
    case ST_FORWARD:
        if (!s->x->resp_head_done && client_owes_body(s)) {
            lb_debug("listener %s: client sent no more of its request body within the client "
                     "timeout",
                     lcf(s)->name);
            send_error(s, 408);
            sess_run(s);
            return;
        }
        if (!s->x->resp_head_done) {
            lb_warn("pool %s server %s: no response within the server timeout", pcf(s)->name,
                    s->x->b ? s->x->b->srv->name : "?");
            send_error(s, 504);
            sess_run(s);
            return;
        }
        sess_close(s);
        return;
    default:
        sess_free(s);
        return;
    }
}

static void
queue_retry(struct lb_queued *q)
{
    struct http_exch *x = (struct http_exch *)((char *)q - offsetof(struct http_exch, q));
    struct http_sess *s = x->s;
    s->x->queued = false;
    /* Run it from the loop, not from inside whichever session freed the
     * slot. */
    ev_feed_event(s->w->loop, &s->cio, EV_CUSTOM);
}

static void
idle_close(struct lb_conn_link *l)
{
    struct http_sess *s = (struct http_sess *)l;
    if (s->state == ST_HEAD && lb_buf_len(&s->cin) == 0)
        sess_free(s);
}

static void
force_close(struct lb_conn_link *l)
{
    sess_close((struct http_sess *)l);
}

void
lb_http_accept(struct lb_listener *l, int fd, const struct sockaddr_storage *peer)
{
    struct lb_worker *w = l->w;
    struct http_sess *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        return;
    }
    struct lb_tls *tls = l->gen->snap->tls;
    if (tls && tls->listeners[l->index]) {
        s->ssl = lb_tls_accept_new(tls->listeners[l->index], fd);
        if (!s->ssl) {
            free(s);
            close(fd);
            return;
        }
        s->tls_hs = true;
    }
    s->c_rdw = EV_READ;
    s->c_wrw = EV_WRITE;
    int one = 1, zero = 0;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* The ACK of the request rides on the response instead of a packet of
     * its own (HAProxy's tcp-smart-accept). */
    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof(zero));
    s->l = l;
    s->w = w;
    s->gen = l->gen;
    s->gen->refs++;
    s->cfd = fd;
    s->peer_family = (uint8_t)peer->ss_family;
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        memcpy(s->peer, &in->sin_addr, 4);
        s->peer_port = ntohs(in->sin_port);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        memcpy(s->peer, &in6->sin6_addr, 16);
        s->peer_port = ntohs(in6->sin6_port);
    }
    s->state = ST_HEAD;
    s->c_rd = true; /* try at once: the request often arrived with the handshake */
    s->c_wr = true;
    s->link.idle_close = idle_close;
    s->link.force_close = force_close;
    lb_worker_conn_add(w, &s->link);
    ev_io_init(&s->cio, client_cb, fd, EV_READ);
    ev_init(&s->timer, timer_cb);
    s->head_timer = true;
    arm_timer(s, lcf(s)->timeout_header);
    sess_run(s);
}
