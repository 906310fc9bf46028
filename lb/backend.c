/*
 * Backend side of a worker: choosing a server through the pool's balancer,
 * opening non-blocking connections, and keeping idle keep-alive connections
 * per server for reuse.
 *
 * Each worker has its own balancer instance per pool (struct lb_wpool). It is
 * rebuilt lazily when the pool's generation changes, so the control thread can
 * change a weight or mark a server down with one atomic store and no lock.
 *
 * An idle connection is watched for readability: a backend that closes it (or
 * sends bytes nobody asked for) makes it unusable, and it is closed at once
 * instead of being handed to the next request.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb/core.h"
#include "lb/log.h"
#include "lb/tls.h"

int
lb_wpools_init(struct lb_wgen *g)
{
    struct lb_snapshot *s = g->snap;
    g->wpools = calloc(s->npools ? s->npools : 1, sizeof(*g->wpools));
    if (!g->wpools)
        return -1;
    for (size_t i = 0; i < s->npools; i++) {
        struct lb_wpool *wp = &g->wpools[i];
        size_t n = s->pools[i].capacity;
        wp->pool = &s->pools[i];
        wp->gen = g;
        wp->bs = calloc(n, sizeof(*wp->bs));
        wp->idle = calloc(n, sizeof(*wp->idle));
        wp->nidle = calloc(n, sizeof(*wp->nidle));
        if (s->tls && s->tls->pools[i] && !(wp->tls_sess = calloc(n, sizeof(*wp->tls_sess))))
            return -1;
        wp->bal = wp->pool->ops->create(n);
        if (!wp->bs || !wp->idle || !wp->nidle || !wp->bal)
            return -1; /* lb_wpools_free releases what was made */
    }
    return 0;
}

static void
bconn_close(struct lb_bconn *b)
{
    ev_io_stop(b->w->loop, &b->io);
    lb_tls_conn_free(b->ssl);
    close(b->fd);
    free(b);
}

void
lb_wpools_close_idle(struct lb_wgen *g)
{
    for (size_t i = 0; g->wpools && i < g->snap->npools; i++) {
        struct lb_wpool *wp = &g->wpools[i];
        for (size_t j = 0; wp->idle && j < wp->pool->capacity; j++) {
            while (wp->idle[j]) {
                struct lb_bconn *b = wp->idle[j];
                wp->idle[j] = b->next_idle;
                bconn_close(b);
            }
            wp->nidle[j] = 0;
        }
    }
}

void
lb_wpools_free(struct lb_wgen *g)
{
    if (!g->wpools)
        return;
    lb_wpools_close_idle(g);
    for (size_t i = 0; i < g->snap->npools; i++) {
        struct lb_wpool *wp = &g->wpools[i];
        if (ev_is_active(&wp->queue_timer))
            ev_timer_stop(g->w->loop, &wp->queue_timer);
        if (wp->bal)
            wp->pool->ops->destroy(wp->bal);
        free(wp->bs);
        free(wp->idle);
        free(wp->nidle);
        for (size_t j = 0; wp->tls_sess && j < wp->pool->capacity; j++)
            lb_tls_session_free(wp->tls_sess[j]);
        free(wp->tls_sess);
    }
    free(g->wpools);
    g->wpools = NULL;
}

bool
lb_server_usable(const struct lb_server *s)
{
    return atomic_load_explicit(&s->state, memory_order_relaxed) == LB_SRV_UP &&
           atomic_load_explicit(&s->health, memory_order_relaxed) == LB_HEALTH_UP;
}

static int
rebuild(struct lb_wpool *wp, unsigned gen)
{
    struct lb_pool *p = wp->pool;
    /* Acquire pairs with the control thread's release when it publishes a
     * new slot: the slot's fields are complete before we read them. */
    size_t n = atomic_load_explicit(&p->nservers, memory_order_acquire);
    /* The hashing algorithms keep their weights: their tables grow with the
     * weight and a ramp would move keys around for nothing. */
    int alg = p->cf->balance;
    bool scaled = alg == LB_BAL_ROUNDROBIN || alg == LB_BAL_LEASTCONN || alg == LB_BAL_RANDOM2;
    for (size_t i = 0; i < n; i++) {
        struct lb_server *s = &p->servers[i];
        uint32_t w =
            lb_server_usable(s) ? atomic_load_explicit(&s->weight, memory_order_relaxed) : 0;
        if (w && scaled) {
            /* Weights in thousandths so that the slow-start ramp can give a
             * fraction of even a weight-1 server's share; a ramping server
             * keeps at least one unit so it is tried at all. */
            uint32_t ramp = atomic_load_explicit(&s->ramp, memory_order_relaxed);
            w *= ramp > 1000 ? 1000 : (ramp ? ramp : 1);
        }
        wp->bs[i].weight = w;
        wp->bs[i].id_hash = s->id_hash;
        wp->bs[i].active = &s->active;
    }
    if (p->ops->update(wp->bal, wp->bs, n) < 0)
        return -1;
    wp->n = n;
    wp->generation = gen;
    wp->built = true;
    return 0;
}

int
lb_backend_pick(struct lb_worker *w, struct lb_wpool *wp, uint64_t key, const int *avoid,
                size_t navoid)
{
    if (!wp->bal || !wp->bs)
        return -1;
    unsigned gen = atomic_load_explicit(&wp->pool->generation, memory_order_acquire);
    if ((!wp->built || gen != wp->generation) && rebuild(wp, gen) < 0)
        return -1;
    int tried[64];
    bool saw_full = false;
    if (navoid > 32)
        navoid = 32;
    memcpy(tried, avoid, navoid * sizeof(int));
    for (;;) {
        int i = wp->pool->ops->pick(wp->bal, wp->bs, wp->n, key, tried, navoid);
        if (i < 0)
            return saw_full ? LB_PICK_FULL : -1;
        struct lb_server *s = &wp->pool->servers[i];
        if (!s->max_connections ||
            atomic_load_explicit(&s->active, memory_order_relaxed) < s->max_connections)
            return i;
        /* Full: try the others, each once. A balancer handed an avoid list
         * covering every usable server returns one of them anyway: when that
         * one is full too, all are. */
        saw_full = true;
        for (size_t k = 0; k < navoid; k++)
            if (tried[k] == i)
                return LB_PICK_FULL;
        if (navoid >= 64)
            return LB_PICK_FULL;
        tried[navoid++] = i;
    }
}

static void
idle_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct lb_bconn *b = (struct lb_bconn *)io;
    struct lb_wpool *wp = b->wp;
    /* A TLS server may send a session ticket after the handshake: that
     * leaves the connection as good as it was. */
    if (b->ssl && lb_tls_idle_ok(b->ssl))
        return;
    /* Any readable event on an idle connection means EOF, an error or bytes
     * we never asked for: none of these leaves it reusable. */
    struct lb_bconn **pp = &wp->idle[b->srv_index];
    while (*pp && *pp != b)
        pp = &(*pp)->next_idle;
    if (*pp)
        *pp = b->next_idle;
    wp->nidle[b->srv_index]--;
    bconn_close(b);
}

/* Whether an idle connection is still usable, asked of the socket itself:
 * a server that closes right after a response (an HTTP/1.0 habit, an idle
 * timeout) has often queued its FIN before idle_cb could run, when another
 * session of the same loop pass takes the connection. */
static bool
still_open(struct lb_bconn *b)
{
    char c;
    ssize_t n = recv(b->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK;
    return n > 0 && b->ssl && lb_tls_idle_ok(b->ssl);
}

struct lb_bconn *
lb_backend_get(struct lb_worker *w, struct lb_wpool *wp, int i, bool allow_reuse, bool probe)
{
    struct lb_server *s = &wp->pool->servers[i];
    struct lb_bconn *b;

    /* An idle connection of a server that became unusable is not reused;
     * lb_backend_put closes such connections as they come back. */
    while (allow_reuse && wp->idle[i]) {
        b = wp->idle[i];
        wp->idle[i] = b->next_idle;
        wp->nidle[i]--;
        ev_io_stop(w->loop, &b->io);
        b->next_idle = NULL;
        if (probe && !still_open(b)) {
            bconn_close(b);
            continue;
        }
        b->reused = true;
        return b;
    }

    b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    int fd = socket(s->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        free(b);
        errno = e;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&s->addr.sa, s->addr.salen) < 0 &&
        errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        free(b);
        errno = e;
        return NULL;
    }
    atomic_fetch_add_explicit(&s->st.connections, 1, memory_order_relaxed);
    ev_io_init(&b->io, idle_cb, fd, EV_READ);
    b->io.events &= ~EV__IOFDSET; /* the session's watcher registers the new fd */
    b->w = w;
    b->wp = wp;
    b->srv = s;
    b->srv_index = i;
    b->fd = fd;
    struct lb_tls *tls = wp->gen->snap->tls;
    size_t pi = (size_t)(wp - wp->gen->wpools);
    if (tls && tls->pools[pi]) {
        /* The handshake runs once connected, driven by the session. */
        b->ssl = lb_tls_connect_new(tls->pools[pi], fd, wp->tls_sess ? &wp->tls_sess[i] : NULL);
        if (!b->ssl) {
            close(fd);
            free(b);
            errno = ENOMEM;
            return NULL;
        }
    }
    return b;
}

void
lb_backend_put(struct lb_bconn *b, bool keep)
{
    struct lb_wpool *wp = b->wp;
    int i = b->srv_index;

    ev_io_stop(b->w->loop, &b->io);
    b->owner = NULL;
    /* Bytes already inside a TLS connection were never asked for. */
    if (b->ssl && (!b->tls_ready || lb_tls_pending(b->ssl)))
        keep = false;
    if (!keep || b->w->draining || wp->gen->retired ||
        wp->nidle[i] >= wp->pool->cf->idle_connections || !lb_server_usable(b->srv)) {
        bconn_close(b);
        return;
    }
    /* Same fd as the session's watcher had: modify rather than set, so that
     * libev does not re-register it with epoll (see backend_connect). */
    ev_set_cb(&b->io, idle_cb);
    ev_io_modify(&b->io, EV_READ);
    ev_io_start(b->w->loop, &b->io);
    b->next_idle = wp->idle[i];
    wp->idle[i] = b;
    wp->nidle[i]++;
}

static void
queue_poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct lb_wpool *wp = (struct lb_wpool *)((char *)t - offsetof(struct lb_wpool, queue_timer));
    /* Retry every waiting request once: each either gets a server, stays
     * queued (moved back to its place by its retry) or has left. */
    uint32_t n = wp->queued;
    while (n-- && wp->queue_head)
        lb_queue_kick(wp);
    if (!wp->queued)
        ev_timer_stop(loop, t);
}

bool
lb_queue_add(struct lb_wpool *wp, struct lb_queued *q)
{
    uint32_t cap = wp->pool->cf->queue_size;
    if (wp->queued >= cap)
        return false;
    q->next = NULL;
    q->prev = wp->queue_tail;
    if (wp->queue_tail)
        wp->queue_tail->next = q;
    else
        wp->queue_head = q;
    wp->queue_tail = q;
    wp->queued++;
    atomic_fetch_add_explicit(&wp->pool->queued, 1, memory_order_relaxed);
    if (!ev_is_active(&wp->queue_timer)) {
        ev_timer_init(&wp->queue_timer, queue_poll_cb, 0.02, 0.02);
        ev_timer_start(wp->gen->w->loop, &wp->queue_timer);
    }
    return true;
}

void
lb_queue_del(struct lb_wpool *wp, struct lb_queued *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        wp->queue_head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        wp->queue_tail = q->prev;
    q->next = q->prev = NULL;
    wp->queued--;
    atomic_fetch_sub_explicit(&wp->pool->queued, 1, memory_order_relaxed);
    if (!wp->queued && ev_is_active(&wp->queue_timer))
        ev_timer_stop(wp->gen->w->loop, &wp->queue_timer);
}

void
lb_queue_kick(struct lb_wpool *wp)
{
    struct lb_queued *q = wp->queue_head;
    if (!q)
        return;
    lb_queue_del(wp, q);
    q->retry(q);
}
