/*
 * TCP (layer 4) proxying with splice(2).
 *
 * Bytes move socket -> pipe -> socket inside the kernel, so a bulk transfer
 * never crosses into user space. Each direction has its own pipe; a direction
 * ends when its source reached EOF and its pipe is empty, and then the
 * destination's write side is shut down, so half-closed connections (a
 * client that sends a request and shuts down its side, then waits for the
 * answer) work as with a direct connection. The session ends when both
 * directions have ended, on an error, or after the idle timeout.
 *
 * A listener that terminates TLS, or a pool reached over TLS, needs the bytes
 * in user space: those connections go to lb/tls_tunnel.c instead.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb/accesslog.h"
#include "lb/core.h"
#include "lb/log.h"
#include "lb/tls.h"

#define PIPE_SIZE (256 * 1024)
#define MAX_TRIES 8

struct dir {
    int pipe[2];
    uint32_t in_pipe; /* bytes spliced in and not yet out */
    bool src_rd, dst_wr, eof, shut;
    /* splice into the pipe said EAGAIN while the pipe held bytes: the pipe
     * may be out of slots (a slot per socket buffer, not per byte), so wait
     * for a write to drain it instead of polling the socket. */
    bool pipe_full;
    uint64_t bytes;
};

struct tcp_sess {
    struct lb_conn_link link;
    ev_io cio, sio;
    ev_timer timer;
    struct lb_listener *l;
    struct lb_worker *w;
    struct lb_wgen *gen; /* holds a reference */
    struct lb_server *srv;
    struct lb_queued q; /* while every server is at max_connections */
    int cfd, sfd;
    bool connecting;
    bool queued;  /* in the pool's queue */
    bool waiting; /* for a slot, since the queue timer started */
    uint8_t tries;
    int avoid[MAX_TRIES];
    int pool;
    struct dir up, down; /* client->server, server->client */
    uint64_t t_start, t_connect;
    struct sockaddr_storage peer;
};

static void tcp_run(struct tcp_sess *s);

static void
tcp_free(struct tcp_sess *s, const char *why)
{
    struct lb_worker *w = s->w;
    if (lb_accesslog_enabled()) {
        char client[64];
        lb_addr_ipport(&s->peer, client, sizeof(client));
        struct lb_access a = {
            .client = client,
            .listener = s->l->cf->name,
            .pool = s->gen->snap->pools[s->pool].cf->name,
            .server = s->srv ? s->srv->name : NULL,
            .minor_version = -1,
            .bytes_in = s->up.bytes,
            .bytes_out = s->down.bytes,
            .t_connect_us = s->t_connect ? s->t_connect - s->t_start : UINT64_MAX,
            .t_response_us = UINT64_MAX,
            .t_total_us = lb_now_us(w->loop) - s->t_start,
            .termination = why,
        };
        lb_accesslog_write(w, &a);
    }
    struct lb_wpool *wp = &s->gen->wpools[s->pool];
    struct lb_listener_stats *ls = lb_lstats(s->l);
    lb_stat_add(&ls->requests, 1);
    lb_stat_add(&ls->bytes_in, (long)s->up.bytes); /* as far as they went on */
    lb_stat_add(&ls->bytes_out, (long)s->down.bytes);
    if (s->queued)
        lb_queue_del(wp, &s->q);
    if (s->srv) {
        atomic_fetch_sub_explicit(&s->srv->active, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->srv->st.bytes_in, s->up.bytes, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->srv->st.bytes_out, s->down.bytes, memory_order_relaxed);
    }
    ev_io_stop(w->loop, &s->cio);
    ev_io_stop(w->loop, &s->sio);
    ev_timer_stop(w->loop, &s->timer);
    close(s->cfd);
    if (s->sfd >= 0)
        close(s->sfd);
    for (int i = 0; i < 2; i++) {
        if (s->up.pipe[i] >= 0)
            close(s->up.pipe[i]);
        if (s->down.pipe[i] >= 0)
            close(s->down.pipe[i]);
    }
    /* A slot is free: the oldest connection waiting for one goes first. */
    if (s->srv && wp->queued)
        lb_queue_kick(wp);
    lb_worker_conn_del(w, &s->link);
    lb_wgen_unref(s->gen);
    free(s);
    lb_worker_conn_closed(w);
}

static void
arm(struct tcp_sess *s, uint64_t ms)
{
    ev_timer_stop(s->w->loop, &s->timer);
    if (ms) {
        ev_timer_set(&s->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(s->w->loop, &s->timer);
    }
}

static void sock_cb(struct ev_loop *loop, ev_io *io, int revents);

/* Connects to a server of the listener's pool. Returns 0 or -1 (no server
 * could be tried; the session is gone). */
static int
tcp_connect(struct tcp_sess *s)
{
    struct lb_worker *w = s->w;
    struct lb_wpool *wp = &s->gen->wpools[s->pool];
    const struct conf_pool *pc = wp->pool->cf;
    uint64_t key = pc->balance == LB_BAL_SOURCE_HASH
                       ? (s->peer.ss_family == AF_INET
                              ? lb_hash64(&((struct sockaddr_in *)&s->peer)->sin_addr, 4)
                              : lb_hash64(&((struct sockaddr_in6 *)&s->peer)->sin6_addr, 16))
                       : lb_worker_rand(w);
    for (;;) {
        int i = lb_backend_pick(w, wp, key, s->avoid, s->tries);
        if (i == LB_PICK_FULL && lb_queue_add(wp, &s->q)) {
            /* Wait for a slot as HTTP requests do; the client's bytes stay
             * in its socket meanwhile. The timer runs from the first wait. */
            if (!s->waiting)
                arm(s, pc->timeout_queue);
            s->queued = s->waiting = true;
            return 0;
        }
        if (i < 0) {
            atomic_fetch_add_explicit(&wp->pool->no_server, 1, memory_order_relaxed);
            tcp_free(s, "no-server");
            return -1;
        }
        struct lb_server *srv = &wp->pool->servers[i];
        if (s->tries < MAX_TRIES)
            s->avoid[s->tries] = i;
        s->tries++;
        int fd = socket(srv->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (const struct sockaddr *)&srv->addr.sa, srv->addr.salen) < 0 &&
            errno != EINPROGRESS) {
            close(fd);
            fd = -1;
        }
        if (fd < 0) {
            atomic_fetch_add_explicit(&srv->st.connect_errors, 1, memory_order_relaxed);
            if (s->tries <= pc->retries && s->tries < MAX_TRIES)
                continue;
            tcp_free(s, "connect");
            return -1;
        }
        atomic_fetch_add_explicit(&srv->st.connections, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&srv->st.requests, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&srv->active, 1, memory_order_relaxed);
        s->srv = srv;
        s->sfd = fd;
        s->connecting = true;
        s->waiting = false;
        ev_io_init(&s->sio, sock_cb, fd, EV_WRITE);
        ev_io_start(w->loop, &s->sio);
        arm(s, pc->timeout_connect);
        return 0;
    }
}

/* Moves bytes of one direction. Returns true on progress; sets *err on a
 * hard error and *more when it stopped with work left (bounded turns, so one
 * fast connection cannot starve the others). */
static bool
pump(struct dir *d, int src, int dst, bool *err, bool *more)
{
    bool progress = false;
    *more = true;
    for (int round = 0; round < 16; round++) {
        bool moved = false;
        if (d->in_pipe && d->dst_wr) {
            ssize_t n =
                splice(d->pipe[0], NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe -= (uint32_t)n;
                d->bytes += (uint64_t)n;
                d->pipe_full = false;
                progress = moved = true;
            } else if (n < 0 && errno == EAGAIN) {
                d->dst_wr = false;
            } else if (n < 0 && errno != EINTR) {
                *err = true;
                return progress;
            }
        }
        if (!d->eof && d->src_rd && !d->pipe_full && d->in_pipe < PIPE_SIZE) {
            ssize_t n = splice(src, NULL, d->pipe[1], NULL, PIPE_SIZE - d->in_pipe,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe += (uint32_t)n;
                progress = moved = true;
                continue;
            }
            if (n == 0) {
                d->eof = true;
                progress = true;
            } else if (errno == EAGAIN) {
                if (d->in_pipe)
                    d->pipe_full = true;
                else
                    d->src_rd = false;
            } else if (errno != EINTR) {
                *err = true;
                return progress;
            }
        }
        if (d->eof && !d->in_pipe && !d->shut) {
            shutdown(dst, SHUT_WR);
            d->shut = true;
            progress = true;
        }
        if (!moved) {
            *more = false;
            break;
        }
    }
    return progress;
}

static void
set_watch(struct ev_loop *loop, ev_io *io, int fd, int ev)
{
    if ((io->events & (EV_READ | EV_WRITE)) == ev && ev_is_active(io))
        return;
    ev_io_stop(loop, io);
    if (ev) {
        ev_io_modify(io, ev); /* fd fixed since init: no re-registration */
        ev_io_start(loop, io);
    }
}

static void
tcp_run(struct tcp_sess *s)
{
    if (s->connecting)
        return;
    bool err = false, more1 = false, more2 = false;
    bool p1 = pump(&s->up, s->cfd, s->sfd, &err, &more1);
    bool p2 = !err && pump(&s->down, s->sfd, s->cfd, &err, &more2);
    if (err) {
        tcp_free(s, "reset");
        return;
    }
    if (s->up.shut && s->down.shut) {
        tcp_free(s, "");
        return;
    }
    if (p1 || p2)
        arm(s, s->l->cf->timeout_tunnel);
    int cev = 0, sev = 0;
    if (!s->up.eof && !s->up.src_rd && !s->up.pipe_full && s->up.in_pipe < PIPE_SIZE)
        cev |= EV_READ;
    if (s->down.in_pipe && !s->down.dst_wr)
        cev |= EV_WRITE;
    if (!s->down.eof && !s->down.src_rd && !s->down.pipe_full && s->down.in_pipe < PIPE_SIZE)
        sev |= EV_READ;
    if (s->up.in_pipe && !s->up.dst_wr)
        sev |= EV_WRITE;
    set_watch(s->w->loop, &s->cio, s->cfd, cev);
    set_watch(s->w->loop, &s->sio, s->sfd, sev);
    /* Out of turns with the sockets still ready: no watcher would wake us,
     * so queue a turn after the other pending events. Fed after set_watch,
     * which would cancel it; tcp_free stops cio, which cancels it too. */
    if (more1 || more2)
        ev_feed_event(s->w->loop, &s->cio, EV_CUSTOM);
}

static void
client_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct tcp_sess *s = (struct tcp_sess *)((char *)io - offsetof(struct tcp_sess, cio));
    if (revents & EV_READ)
        s->up.src_rd = true;
    if (revents & EV_WRITE)
        s->down.dst_wr = true;
    tcp_run(s);
}

/* A connect that was refused or timed out: count it (outlier detection
 * included, as for HTTP), then try another server if retries allow. */
static void
connect_failed(struct tcp_sess *s, const char *term)
{
    atomic_fetch_add_explicit(&s->srv->st.connect_errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->srv->consecutive_failures, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->srv->active, 1, memory_order_relaxed);
    s->srv = NULL;
    ev_io_stop(s->w->loop, &s->sio);
    close(s->sfd);
    s->sfd = -1;
    struct lb_wpool *wp = &s->gen->wpools[s->pool];
    if (wp->queued)
        lb_queue_kick(wp);
    if (s->tries <= wp->pool->cf->retries && s->tries < MAX_TRIES)
        tcp_connect(s);
    else
        tcp_free(s, term);
}

static void
sock_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct tcp_sess *s = (struct tcp_sess *)((char *)io - offsetof(struct tcp_sess, sio));
    if (s->connecting) {
        int e = 0;
        socklen_t len = sizeof(e);
        if (getsockopt(s->sfd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
            e = errno;
        if (e) {
            lb_warn("pool %s server %s: connect to %s failed: %s",
                    s->gen->snap->pools[s->pool].cf->name, s->srv->name, s->srv->addr.text,
                    strerror(e));
            connect_failed(s, "connect");
            return;
        }
        s->connecting = false;
        s->t_connect = lb_now_us(loop);
        atomic_store_explicit(&s->srv->consecutive_failures, 0, memory_order_relaxed);
        s->up.dst_wr = true;
        s->down.src_rd = true;
        s->up.src_rd = true;
        ev_io_stop(loop, &s->sio);
        s->sio.events = 0;
        arm(s, s->l->cf->timeout_tunnel);
        tcp_run(s);
        return;
    }
    if (revents & EV_READ)
        s->down.src_rd = true;
    if (revents & EV_WRITE)
        s->up.dst_wr = true;
    tcp_run(s);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct tcp_sess *s = (struct tcp_sess *)((char *)t - offsetof(struct tcp_sess, timer));
    if (revents & EV_CUSTOM) { /* fed by queue_retry */
        if (s->waiting && !s->queued)
            tcp_connect(s);
        return;
    }
    if (s->waiting) {
        lb_warn("pool %s: no server slot within the queue timeout",
                s->gen->snap->pools[s->pool].cf->name);
        tcp_free(s, "queue-timeout");
        return;
    }
    if (s->connecting) {
        lb_warn("pool %s server %s: connect timeout", s->gen->snap->pools[s->pool].cf->name,
                s->srv->name);
        connect_failed(s, "connect-timeout");
        return;
    }
    tcp_free(s, "idle-timeout");
}

static void
force_close(struct lb_conn_link *l)
{
    tcp_free((struct tcp_sess *)l, "stopped");
}

static void
queue_retry(struct lb_queued *q)
{
    struct tcp_sess *s = (struct tcp_sess *)((char *)q - offsetof(struct tcp_sess, q));
    s->queued = false;
    /* From the loop, not from inside whichever session freed the slot. */
    ev_feed_event(s->w->loop, &s->timer, EV_CUSTOM);
}

void
lb_tcp_accept(struct lb_listener *l, int fd, const struct sockaddr_storage *peer)
{
    struct lb_worker *w = l->w;
    /* Bytes that must be decrypted or encrypted cannot be spliced. */
    if (l->cf->tls.enabled || l->gen->snap->pools[l->cf->pool_index].cf->tls) {
        lb_tls_tunnel_accept(l, fd, peer);
        return;
    }
    struct tcp_sess *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        return;
    }
    s->up.pipe[0] = s->up.pipe[1] = s->down.pipe[0] = s->down.pipe[1] = -1;
    s->sfd = -1;
    if (pipe2(s->up.pipe, O_NONBLOCK | O_CLOEXEC) < 0 ||
        pipe2(s->down.pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        lb_warn("listener %s: pipe2: %s", l->cf->name, strerror(errno));
        for (int i = 0; i < 2; i++) {
            if (s->up.pipe[i] >= 0)
                close(s->up.pipe[i]);
            if (s->down.pipe[i] >= 0)
                close(s->down.pipe[i]);
        }
        free(s);
        close(fd);
        return;
    }
    /* A bigger pipe moves more per splice call; refusal (pipe-user-pages
     * limits) only costs speed. */
    fcntl(s->up.pipe[1], F_SETPIPE_SZ, PIPE_SIZE);
    fcntl(s->down.pipe[1], F_SETPIPE_SZ, PIPE_SIZE);
    s->l = l;
    s->w = w;
    s->gen = l->gen;
    s->gen->refs++;
    s->cfd = fd;
    s->pool = l->cf->pool_index;
    s->peer = *peer;
    s->t_start = lb_now_us(w->loop);
    s->link.force_close = force_close;
    s->q.retry = queue_retry;
    lb_worker_conn_add(w, &s->link);
    ev_io_init(&s->cio, client_cb, fd, EV_READ);
    ev_io_init(&s->sio, sock_cb, -1, EV_READ);
    ev_init(&s->timer, timer_cb);
    tcp_connect(s);
}

/* IPv4 by hand: inet_ntop formats it with sprintf, which was a tenth of the
 * proxy's user time per request (X-Forwarded-For and Forwarded name the
 * client in every request). */
static size_t
ipv4_text(const unsigned char *b, char *out)
{
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
    return (size_t)(p - out - 1);
}

size_t
lb_addr_ip(const struct sockaddr_storage *sa, char *out, size_t cap)
{
    if (sa->ss_family == AF_INET && cap >= INET_ADDRSTRLEN)
        return ipv4_text((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr, out);
    const void *a = sa->ss_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (!inet_ntop(sa->ss_family, a, out, (socklen_t)cap)) {
        snprintf(out, cap, "?");
    }
    return strlen(out);
}

size_t
lb_addr_ipport(const struct sockaddr_storage *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    lb_addr_ip(sa, ip, sizeof(ip));
    unsigned port = sa->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
                                             : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    int n = snprintf(out, cap, sa->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
    return n < 0 ? 0 : (size_t)n;
}
