/*
 * TCP (layer 4) proxying through TLS: a tcp listener that terminates TLS, a
 * pool reached over TLS, or both. splice(2) cannot move bytes that must be
 * decrypted or encrypted, so each direction goes through one buffer from the
 * worker's pool with read/write (SSL_read/SSL_write on a TLS side).
 *
 * The client handshake comes first, under the listener's header timeout, so
 * a scanner that never completes one costs no server connection. Then the
 * server is connected (and its TLS handshake done) under the pool's connect
 * timeout, trying other servers as retries allow, and bytes flow until both
 * directions ended; a side's EOF (close_notify, or a plain cut) is passed on
 * as close_notify plus a TCP half-close once the other direction's buffer is
 * written, as tcp_proxy.c does. Readiness follows http_proxy.c's rule: a flag
 * is cleared only when TLS says it would block, and the event that sets it
 * again is the one TLS asked for.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb/accesslog.h"
#include "lb/core.h"
#include "lb/log.h"
#include "lb/tls.h"

#define MAX_TRIES 8
#define ROUNDS 16

enum { T_HANDSHAKE, T_CONNECT, T_SERVER_HANDSHAKE, T_RUN };

struct end {
    ev_io io;
    int fd;
    struct ssl_st *ssl; /* NULL: plain text */
    bool rd, wr;        /* the last attempt did not block */
    uint8_t rdw, wrw;   /* the events that set rd / wr again */
    bool eof;           /* nothing more will come from it */
    bool shut;          /* our direction toward it has ended */
};

struct tun {
    struct lb_conn_link link; /* first: the worker's list points here */
    struct end c, s;
    struct lb_buf up, down; /* client -> server, server -> client */
    ev_timer timer;
    struct lb_listener *l;
    struct lb_worker *w;
    struct lb_wgen *gen; /* holds a reference */
    struct lb_bconn *b;  /* the server connection (owns s.fd and s.ssl) */
    struct lb_server *srv;
    int pool;
    int state;
    uint8_t tries;
    int avoid[MAX_TRIES];
    uint64_t t_start, t_connect;
    uint64_t bytes_up, bytes_down;
    struct sockaddr_storage peer;
};

static void tun_run(struct tun *t);
static void server_cb(struct ev_loop *loop, ev_io *io, int revents);

static void
arm(struct tun *t, uint64_t ms)
{
    ev_timer_stop(t->w->loop, &t->timer);
    if (ms) {
        ev_timer_set(&t->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(t->w->loop, &t->timer);
    }
}

static void
server_drop(struct tun *t)
{
    if (!t->b)
        return;
    ev_io_stop(t->w->loop, &t->s.io);
    atomic_fetch_sub_explicit(&t->srv->active, 1, memory_order_relaxed);
    lb_backend_put(t->b, false); /* closes, with close_notify when sound */
    t->b = NULL;
    t->s.fd = -1;
    t->s.ssl = NULL;
}

static void
tun_free(struct tun *t, const char *why)
{
    struct lb_worker *w = t->w;
    if (lb_accesslog_enabled()) {
        char client[64];
        lb_addr_ipport(&t->peer, client, sizeof(client));
        struct lb_access a = {
            .client = client,
            .listener = t->l->cf->name,
            .pool = t->gen->snap->pools[t->pool].cf->name,
            .server = t->srv ? t->srv->name : NULL,
            .minor_version = -1,
            .bytes_in = t->bytes_up,
            .bytes_out = t->bytes_down,
            .t_connect_us = t->t_connect ? t->t_connect - t->t_start : UINT64_MAX,
            .t_response_us = UINT64_MAX,
            .t_total_us = lb_now_us(w->loop) - t->t_start,
            .termination = why,
            .tls_version = t->c.ssl && t->state != T_HANDSHAKE ? lb_tls_version(t->c.ssl) : NULL,
            .tls_cipher = t->c.ssl && t->state != T_HANDSHAKE ? lb_tls_cipher(t->c.ssl) : NULL,
        };
        /* A handshake that failed was a scan or a mistake, not a session. */
        if (t->state != T_HANDSHAKE)
            lb_accesslog_write(w, &a);
    }
    struct lb_listener_stats *ls = lb_lstats(t->l);
    if (t->state != T_HANDSHAKE) { /* as in the access log */
        lb_stat_add(&ls->requests, 1);
        lb_stat_add(&ls->bytes_in, (long)t->bytes_up);
        lb_stat_add(&ls->bytes_out, (long)t->bytes_down);
    }
    if (t->srv && t->b) {
        atomic_fetch_add_explicit(&t->srv->st.bytes_in, t->bytes_up, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->srv->st.bytes_out, t->bytes_down, memory_order_relaxed);
    }
    server_drop(t);
    ev_io_stop(w->loop, &t->c.io);
    ev_timer_stop(w->loop, &t->timer);
    if (t->c.ssl)
        lb_tls_conn_free(t->c.ssl);
    close(t->c.fd);
    lb_buf_release(&w->bufs, &t->up, true);
    lb_buf_release(&w->bufs, &t->down, true);
    lb_worker_conn_del(w, &t->link);
    lb_wgen_unref(t->gen);
    free(t);
    lb_worker_conn_closed(w);
}

/* Connects to a server of the listener's pool. Returns 0, or -1 when the
 * session is gone (no server could be tried). */
static int
tun_connect(struct tun *t)
{
    struct lb_worker *w = t->w;
    struct lb_wpool *wp = &t->gen->wpools[t->pool];
    const struct conf_pool *pc = wp->pool->cf;
    uint64_t key = pc->balance == LB_BAL_SOURCE_HASH
                       ? (t->peer.ss_family == AF_INET
                              ? lb_hash64(&((struct sockaddr_in *)&t->peer)->sin_addr, 4)
                              : lb_hash64(&((struct sockaddr_in6 *)&t->peer)->sin6_addr, 16))
                       : lb_worker_rand(w);
    for (;;) {
        int i = lb_backend_pick(w, wp, key, t->avoid, t->tries);
        if (i < 0) {
            atomic_fetch_add_explicit(&wp->pool->no_server, 1, memory_order_relaxed);
            tun_free(t, "no-server");
            return -1;
        }
        struct lb_server *srv = &wp->pool->servers[i];
        if (t->tries < MAX_TRIES)
            t->avoid[t->tries] = i;
        t->tries++;
        struct lb_bconn *b = lb_backend_get(w, wp, i, false, false);
        if (!b) {
            atomic_fetch_add_explicit(&srv->st.connect_errors, 1, memory_order_relaxed);
            if (t->tries <= pc->retries && t->tries < MAX_TRIES)
                continue;
            tun_free(t, "connect");
            return -1;
        }
        atomic_fetch_add_explicit(&srv->st.requests, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);
        t->b = b;
        t->srv = srv;
        t->s = (struct end){.fd = b->fd, .ssl = b->ssl, .rdw = EV_READ, .wrw = EV_WRITE};
        t->state = T_CONNECT;
        ev_io_init(&t->s.io, server_cb, b->fd, EV_WRITE);
        ev_io_start(w->loop, &t->s.io);
        arm(t, pc->timeout_connect);
        return 0;
    }
}

/* The server could not be reached or trusted: another one if retries allow. */
static void
server_failed(struct tun *t, const char *why)
{
    const struct conf_pool *pc = t->gen->snap->pools[t->pool].cf;
    atomic_fetch_add_explicit(&t->srv->st.connect_errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->srv->consecutive_failures, 1, memory_order_relaxed);
    server_drop(t);
    t->srv = NULL;
    if (t->tries <= pc->retries && t->tries < MAX_TRIES)
        tun_connect(t);
    else
        tun_free(t, why);
}

/* Reads into buf: > 0 bytes, 0 at EOF (clean or not: either way the
 * direction ends), -1 when it would block, -2 on an error. */
static ssize_t
end_read(struct lb_worker *w, struct end *e, struct lb_buf *buf)
{
    if (lb_buf_alloc(&w->bufs, buf) < 0)
        return -2;
    if (LB_BUF_SIZE - buf->tail < 4096)
        lb_buf_compact(buf);
    size_t room = LB_BUF_SIZE - buf->tail;
    if (!room)
        return -1;
    ssize_t n;
    if (e->ssl) {
        int want = EV_READ;
        n = lb_tls_read(e->ssl, buf->data + buf->tail, room, &want);
        if (n == -1)
            e->rdw = (uint8_t)want;
        else if (n == -2)
            n = 0; /* a cut without close_notify still ends the direction */
    } else {
        do
            n = read(e->fd, buf->data + buf->tail, room);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            n = (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
    }
    if (n > 0)
        buf->tail += (uint32_t)n;
    if (n == -1) {
        e->rd = false;
        lb_buf_release(&w->bufs, buf, false);
    }
    return n;
}

static ssize_t
end_write(struct end *e, struct lb_buf *buf)
{
    ssize_t n;
    if (e->ssl) {
        int want = EV_WRITE;
        n = lb_tls_write(e->ssl, buf->data + buf->head, lb_buf_len(buf), &want);
        if (n == -1)
            e->wrw = (uint8_t)want;
    } else {
        do
            n = write(e->fd, buf->data + buf->head, lb_buf_len(buf));
        while (n < 0 && errno == EINTR);
        if (n < 0)
            n = (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
    }
    if (n > 0)
        lb_buf_consume(buf, (uint32_t)n);
    else if (n == -1)
        e->wr = false;
    return n;
}

/* Moves one direction as far as it goes now. Returns true on progress. */
static bool
xfer(struct lb_worker *w, struct end *src, struct end *dst, struct lb_buf *buf, uint64_t *bytes,
     bool *err)
{
    bool moved = false;
    if (lb_buf_len(buf) && dst->wr) {
        ssize_t n = end_write(dst, buf);
        if (n > 0) {
            *bytes += (uint64_t)n;
            moved = true;
        } else if (n == -2) {
            *err = true;
            return moved;
        }
    }
    if (!src->eof && src->rd && lb_buf_len(buf) < LB_BUF_SIZE) {
        ssize_t n = end_read(w, src, buf);
        if (n > 0) {
            moved = true;
        } else if (n == 0) {
            src->eof = true;
            moved = true;
        } else if (n == -2) {
            *err = true;
            return moved;
        }
    }
    if (src->eof && !lb_buf_len(buf) && !dst->shut) {
        if (dst->ssl)
            lb_tls_shutdown(dst->ssl);
        shutdown(dst->fd, SHUT_WR);
        dst->shut = true;
        moved = true;
    }
    lb_buf_release(&w->bufs, buf, false);
    return moved;
}

static void
set_watch(struct ev_loop *loop, ev_io *io, int ev)
{
    if ((io->events & (EV_READ | EV_WRITE)) == ev && ev_is_active(io))
        return;
    ev_io_stop(loop, io);
    if (ev) {
        ev_io_modify(io, ev);
        ev_io_start(loop, io);
    }
}

/* Drives one end's handshake. Returns 1 when done, 0 when waiting, -1 on
 * failure. */
static int
end_handshake(struct end *e)
{
    if (!e->rd)
        return 0;
    int want = EV_READ;
    int r = lb_tls_handshake(e->ssl, &want);
    if (r == 0) {
        e->rd = false;
        e->rdw = (uint8_t)want;
        return 0;
    }
    if (r > 0) {
        e->rdw = EV_READ;
        e->rd = e->wr = true;
    }
    return r;
}

static void
tun_run(struct tun *t)
{
    struct ev_loop *loop = t->w->loop;
    char why[256];

    if (t->state == T_HANDSHAKE) {
        int r = end_handshake(&t->c);
        if (r < 0) {
            lb_debug("listener %s: TLS handshake failed: %s", t->l->cf->name,
                     lb_tls_why(t->c.ssl, why, sizeof(why)));
            tun_free(t, "handshake");
            return;
        }
        if (r == 0) {
            set_watch(loop, &t->c.io, t->c.rdw);
            return;
        }
        /* The client is not read until a server can take its bytes. */
        set_watch(loop, &t->c.io, 0);
        tun_connect(t);
        return;
    }
    if (t->state == T_CONNECT)
        return; /* server_cb */
    if (t->state == T_SERVER_HANDSHAKE) {
        int r = end_handshake(&t->s);
        if (r < 0) {
            lb_warn("pool %s server %s: TLS handshake with %s failed: %s",
                    t->gen->snap->pools[t->pool].cf->name, t->srv->name, t->srv->addr.text,
                    lb_tls_why(t->s.ssl, why, sizeof(why)));
            server_failed(t, "server-handshake");
            return;
        }
        if (r == 0) {
            set_watch(loop, &t->s.io, t->s.rdw);
            return;
        }
        t->b->tls_ready = true;
        t->state = T_RUN;
        t->t_connect = lb_now_us(loop);
        atomic_store_explicit(&t->srv->consecutive_failures, 0, memory_order_relaxed);
        arm(t, t->l->cf->timeout_tunnel);
    }

    bool err = false, progress = false, more = false;
    for (int round = 0;; round++) {
        bool moved = xfer(t->w, &t->c, &t->s, &t->up, &t->bytes_up, &err);
        if (!err)
            moved |= xfer(t->w, &t->s, &t->c, &t->down, &t->bytes_down, &err);
        if (err) {
            tun_free(t, "reset");
            return;
        }
        progress |= moved;
        if (!moved)
            break;
        if (round == ROUNDS) {
            more = true;
            break;
        }
    }
    if (t->c.shut && t->s.shut) {
        tun_free(t, "");
        return;
    }
    if (progress)
        arm(t, t->l->cf->timeout_tunnel);
    int cev = 0, sev = 0;
    if (!t->c.eof && !t->c.rd && lb_buf_len(&t->up) < LB_BUF_SIZE)
        cev |= t->c.rdw;
    if (lb_buf_len(&t->down) && !t->c.wr)
        cev |= t->c.wrw;
    if (!t->s.eof && !t->s.rd && lb_buf_len(&t->down) < LB_BUF_SIZE)
        sev |= t->s.rdw;
    if (lb_buf_len(&t->up) && !t->s.wr)
        sev |= t->s.wrw;
    set_watch(loop, &t->c.io, cev);
    set_watch(loop, &t->s.io, sev);
    /* Out of turns with work left: come back after the other connections
     * had theirs (fed after set_watch, which would cancel it). */
    if (more)
        ev_feed_event(loop, &t->c.io, EV_CUSTOM);
}

static void
client_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct tun *t = (struct tun *)((char *)io - offsetof(struct tun, c.io));
    if (revents & t->c.rdw)
        t->c.rd = true;
    if (revents & t->c.wrw)
        t->c.wr = true;
    tun_run(t);
}

static void
server_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct tun *t = (struct tun *)((char *)io - offsetof(struct tun, s.io));
    if (t->state == T_CONNECT) {
        int e = 0;
        socklen_t len = sizeof(e);
        if (getsockopt(t->s.fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
            e = errno;
        if (e) {
            lb_warn("pool %s server %s: connect to %s failed: %s",
                    t->gen->snap->pools[t->pool].cf->name, t->srv->name, t->srv->addr.text,
                    strerror(e));
            server_failed(t, "connect");
            return;
        }
        t->s.rd = t->s.wr = true;
        if (t->s.ssl) {
            t->state = T_SERVER_HANDSHAKE;
        } else {
            t->state = T_RUN;
            t->t_connect = lb_now_us(loop);
            atomic_store_explicit(&t->srv->consecutive_failures, 0, memory_order_relaxed);
            arm(t, t->l->cf->timeout_tunnel);
        }
        t->c.rd = t->c.wr = true; /* the client may have sent already */
        tun_run(t);
        return;
    }
    if (revents & t->s.rdw)
        t->s.rd = true;
    if (revents & t->s.wrw)
        t->s.wr = true;
    tun_run(t);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
    struct tun *t = (struct tun *)((char *)tm - offsetof(struct tun, timer));
    switch (t->state) {
    case T_HANDSHAKE:
        tun_free(t, "handshake-timeout");
        return;
    case T_CONNECT:
    case T_SERVER_HANDSHAKE:
        lb_warn("pool %s server %s: %s timeout", t->gen->snap->pools[t->pool].cf->name,
                t->srv->name, t->state == T_CONNECT ? "connect" : "TLS handshake");
        server_failed(t, "connect-timeout");
        return;
    default:
        tun_free(t, "idle-timeout");
    }
}

static void
force_close(struct lb_conn_link *l)
{
    tun_free((struct tun *)l, "stopped");
}

void
lb_tls_tunnel_accept(struct lb_listener *l, int fd, const struct sockaddr_storage *peer)
{
    struct lb_worker *w = l->w;
    struct tun *t = calloc(1, sizeof(*t));
    if (!t) {
        close(fd);
        return;
    }
    struct lb_tls *tls = l->gen->snap->tls;
    t->c = (struct end){.fd = fd, .rdw = EV_READ, .wrw = EV_WRITE, .rd = true, .wr = true};
    t->s = (struct end){.fd = -1, .rdw = EV_READ, .wrw = EV_WRITE};
    if (tls && tls->listeners[l->index]) {
        t->c.ssl = lb_tls_accept_new(tls->listeners[l->index], fd);
        if (!t->c.ssl) {
            free(t);
            close(fd);
            return;
        }
    }
    t->l = l;
    t->w = w;
    t->gen = l->gen;
    t->gen->refs++;
    t->pool = l->cf->pool_index;
    t->peer = *peer;
    t->t_start = lb_now_us(w->loop);
    t->link.force_close = force_close;
    lb_worker_conn_add(w, &t->link);
    ev_io_init(&t->c.io, client_cb, fd, EV_READ);
    ev_io_init(&t->s.io, server_cb, -1, EV_READ);
    ev_init(&t->timer, timer_cb);
    if (t->c.ssl) {
        t->state = T_HANDSHAKE;
        arm(t, l->cf->timeout_header ? l->cf->timeout_header : l->cf->timeout_tunnel);
        tun_run(t);
    } else {
        tun_connect(t);
    }
}
