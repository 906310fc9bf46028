/*
 * Internals shared by the HTTP proxy's files, which both run on a worker's
 * loop: http_proxy.c (the session: state machine, backend side, I/O) and
 * http_head.c (parsing, routing and rewriting heads). Nothing outside
 * lb/http_*.c includes it; the worker only sees lb_http_accept() in
 * lb/core.h.
 *
 * The helpers defined here are small, and the compiler inlined every one of
 * them when the proxy was one file (most run on every request): static
 * inline keeps it so in both files. The functions declared here were calls
 * already.
 */
#ifndef LB_HTTP_PROXY_INT_H
#define LB_HTTP_PROXY_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "lb/core.h"
#include "lb/http1.h"

enum { ST_HEAD, ST_QUEUED, ST_CONNECT, ST_FORWARD, ST_TUNNEL, ST_LINGER };
enum { BODY_NONE, BODY_CL, BODY_CHUNKED, BODY_CLOSE, BODY_TUNNEL };

#define MAX_TRIES 8

/* What one request needs beyond the client connection itself. A session
 * holds one only while a request is in progress (or bytes of the next one
 * are buffered): an idle keep-alive connection costs just its http_sess, as
 * it does in HAProxy (session vs stream). Exchanges come from a per-worker
 * free list, so taking one per request is a pop, not a malloc. */
struct http_exch {
    struct http_sess *s;
    ev_io bio;
    struct lb_bconn *b;
    struct lb_queued q; /* while waiting for a server slot */
    struct lb_buf cout, sout, sin;
    uint8_t req_mode, resp_mode;
    uint8_t meth;
    int8_t minor;
    bool b_rd, b_wr;
    uint8_t b_rdw, b_wrw;
    bool b_hs; /* server connected, its TLS handshake in progress */
    bool b_eof;
    bool backend_close;
    bool req_done, resp_head_done, resp_done, upgrade;
    bool queued; /* in the pool's queue (state ST_QUEUED) */
    bool any_resp_sent;
    uint8_t tries;
    int16_t pool;
    int16_t srv;
    int16_t avoid[MAX_TRIES];
    uint16_t status;
    uint32_t sout_len; /* length of the rewritten request head in sout */
    /* Request body bytes sent on a reused connection, kept in sout behind
     * the head for a replay (see keep_body); body_lost: some did not fit. */
    uint32_t body_copy;
    bool body_lost;
    uint64_t req_fwd, resp_fwd;
    int64_t req_left, resp_left;
    struct http1_chunked req_ck, resp_ck;
    uint64_t t_start, t_connect, t_resp;
    uint64_t bytes_in, bytes_out;
};

struct http_sess {
    struct lb_conn_link link; /* first: the worker's list points here */
    ev_io cio;
    ev_timer timer;
    struct lb_listener *l;
    struct lb_worker *w;
    struct lb_wgen *gen; /* holds a reference */
    struct http_exch *x; /* NULL while idle between requests */
    struct ssl_st *ssl;  /* client side TLS, NULL: plain text */
    ev_tstamp deadline;  /* of the timeout that runs (see arm_timer) */
    char *cert_subject;  /* verified client certificate's subject, or NULL */
    struct lb_buf cin;
    int cfd;
    uint8_t state;
    bool c_rd, c_wr; /* socket ready (last op did not hit EAGAIN) */
    /* The event that sets each of c_rd, c_wr, x->b_rd, x->b_wr again:
     * EV_READ / EV_WRITE, swapped while TLS needs the other direction to
     * make progress. */
    uint8_t c_rdw, c_wrw;
    bool tls_hs; /* client handshake in progress */
    bool c_eof;
    bool c_woke;       /* the client read watcher fired while we wanted no bytes */
    bool client_close; /* close the client connection after this response */
    bool head_timer;   /* the header timeout runs (not reset by activity) */
    uint8_t peer_family;
    uint16_t peer_port;
    uint8_t peer[16];
};

static inline const struct conf_listener *
lcf(const struct http_sess *s)
{
    return s->l->cf;
}

static inline const struct conf_pool *
pcf(const struct http_sess *s)
{
    return s->gen->snap->pools[s->x->pool].cf;
}

/* Sets the one timeout that runs (0: none). Re-arming a libev timer is two
 * heap operations, and a busy connection pushes its deadline later on every
 * read; that only moves s->deadline, and timer_cb, when the timer fires
 * before it, sleeps again until then. Only an earlier deadline re-arms. */
static inline void
arm_timer(struct http_sess *s, uint64_t ms)
{
    struct ev_loop *loop = s->w->loop;
    if (!ms) {
        ev_timer_stop(loop, &s->timer);
        return;
    }
    ev_tstamp after = (double)ms / 1000.0;
    s->deadline = ev_now(loop) + after;
    if (ev_is_active(&s->timer) && after >= ev_timer_remaining(loop, &s->timer))
        return;
    ev_timer_stop(loop, &s->timer);
    ev_timer_set(&s->timer, after, 0.);
    ev_timer_start(loop, &s->timer);
}

/* The listener of the worker's current generation that this session's
 * listener became after a reload: the one on the same address (the reload
 * kept its socket, whatever its name) in mode http, or NULL. */
static inline struct lb_listener *
successor(struct http_sess *s)
{
    struct lb_wgen *g = s->w->gen;
    for (size_t i = 0; i < g->nlisteners; i++) {
        struct lb_listener *l = &g->listeners[i];
        if (l->cf->mode == CONF_MODE_HTTP && lb_addr_equal(&l->cf->bind, &lcf(s)->bind))
            return l;
    }
    return NULL;
}

/* Moves a keep-alive connection to the current generation between two
 * requests: the request that just ended ran on the configuration it started
 * with, the next one runs on the new configuration. */
static inline void
migrate(struct http_sess *s, struct lb_listener *l)
{
    struct lb_wgen *old = s->gen;
    s->l = l;
    s->gen = l->gen;
    s->gen->refs++;
    lb_wgen_unref(old);
}

/* ---- http_head.c ---- */

/* 1: done, 0: more bytes needed, -1: answered an error or closed. */
int http_start_request(struct http_sess *s);
int http_response_head(struct http_sess *s);

/* ---- http_proxy.c ---- */

/* 0: a server connection exists or is under way, -1: answered 503. */
int http_backend_connect(struct http_sess *s);
/* Answers status, then closes after a lingering moment. Returns -1. */
int http_send_error(struct http_sess *s, int status);
/* Logs the request in progress if it did not end, and frees the session. */
void http_sess_close(struct http_sess *s);

/* ---- http_io.c ---- */

/* Reads into b: bytes read, 0 on EOF, -1 when it would block (*ready
 * cleared, *want set to the event to wait for), -2 on error (for TLS: also
 * a cut without close_notify). */
ssize_t http_read_into(struct lb_worker *w, int fd, struct ssl_st *ssl, struct lb_buf *b,
                       bool *ready, uint8_t *want);
/* Writes head bytes [hb->head, hb->tail) then up to *fwd approved body bytes
 * from the front of bb; more: the rest follows at once (MSG_MORE). Bytes
 * written, -1 when it would block (*ready cleared, *want set), -2 on error. */
ssize_t http_write_out(int fd, struct ssl_st *ssl, struct lb_buf *hb, struct lb_buf *bb,
                       uint64_t *fwd, bool *ready, uint8_t *want, bool more);
/* Ends our direction of a connection: close_notify first over TLS. */
void http_half_close(int fd, struct ssl_st *ssl);

/* ---- http_log.c ---- */

/* Counts the request's end and writes its access log line; term says how
 * it ended ("" for a complete exchange, "cut", "aborted", ...). */
void http_log_request(struct http_sess *s, const char *term);

#endif
