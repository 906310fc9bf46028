/*
 * Worker threads. Each runs its own libev loop on epoll with its own
 * SO_REUSEPORT listening sockets, accepts connections and runs them to the
 * end without ever touching another worker's state. The control thread talks
 * to a worker only through an ev_async and an atomic command word.
 *
 * Draining (SIGTERM): listeners close first so the kernel sends new
 * connections elsewhere, idle keep-alive connections are closed, and requests
 * in flight finish; whatever remains when the drain bound expires is cut.
 *
 * global.max_connections bounds the client connections of the whole process,
 * as HAProxy's global maxconn does, not a share per worker: with SO_REUSEPORT
 * the kernel spreads connections by hash, so a per-worker share would refuse
 * service on one worker while another sits idle. One relaxed atomic counts
 * them; a worker takes a slot before accept(2) and gives it back when the
 * connection ends. Each worker reads the limit from its current generation,
 * so a reload changes it at the next accept; connections already open stay.
 * A worker that finds no slot stops watching its listening sockets (new
 * connections wait in the kernel's accept queue) and is woken by whichever
 * worker frees one.
 *
 * listeners[].max_connections works the same way for one listener: its
 * connections in all workers are counted in a struct lb_lcount found by the
 * listener's address, as reload.c keeps its socket, so the count survives
 * reloads, renames included (a limit set by a reload sees the connections
 * already open). A worker whose listener is full stops
 * watching that socket only, and counts as waiting for a wake-up.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb/accesslog.h"
#include "lb/core.h"
#include "lb/log.h"

#define ACCEPT_BATCH 64

static struct {
    _Atomic uint32_t open; /* client connections, all workers */
    atomic_int nwaiting;   /* workers waiting for a slot; closers wake them */
    atomic_bool *waiting;  /* [worker id] */
    struct lb_worker *ws;
    int n;
} slots;

struct lb_lcount {
    struct lb_lcount *next;
    _Atomic uint32_t open;
    char name[];
};

/* Created by the control thread as generations are built, read by workers
 * through their listeners; freed when the workers are gone. */
static struct {
    pthread_mutex_t mu;
    struct lb_lcount *head;
} lcounts = {PTHREAD_MUTEX_INITIALIZER, NULL};

/* Worker-thread state. at_limit: this worker's listeners are paused for
 * want of a slot. slot_held: accept_cb took a slot that the session being set
 * up has not claimed yet (lb_worker_conn_add), so a session that never
 * started gives it back; held_lc: the same for its listener's count. nfull:
 * listeners of the current generation paused at their own limit. */
static _Thread_local bool at_limit, slot_held;
static _Thread_local struct lb_lcount *held_lc;
static _Thread_local unsigned nfull;

/* The count of listener cf's address, made when create and missing. */
static struct lb_lcount *
lcount_find(const struct conf_listener *cf, bool create)
{
    char name[INET6_ADDRSTRLEN + 8];
    lb_addr_ipport(&cf->bind.sa, name, sizeof(name));
    pthread_mutex_lock(&lcounts.mu);
    struct lb_lcount *c = lcounts.head;
    while (c && strcmp(c->name, name) != 0)
        c = c->next;
    if (!c && create && (c = calloc(1, sizeof(*c) + strlen(name) + 1))) {
        strcpy(c->name, name);
        atomic_init(&c->open, 0);
        c->next = lcounts.head;
        lcounts.head = c;
    }
    pthread_mutex_unlock(&lcounts.mu);
    return c;
}

uint32_t
lb_listener_open(const struct conf_listener *cf)
{
    struct lb_lcount *c = lcount_find(cf, false);
    return c ? atomic_load_explicit(&c->open, memory_order_relaxed) : 0;
}

static void
lcounts_free(void)
{
    pthread_mutex_lock(&lcounts.mu);
    while (lcounts.head) {
        struct lb_lcount *c = lcounts.head;
        lcounts.head = c->next;
        free(c);
    }
    pthread_mutex_unlock(&lcounts.mu);
}

/* Adds one to *c unless it is at max (0: no bound). */
static bool
count_take(_Atomic uint32_t *c, uint32_t max)
{
    if (!max) {
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
        return true;
    }
    uint32_t n = atomic_load_explicit(c, memory_order_relaxed);
    do {
        if (n >= max)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(c, &n, n + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* Counts a connection about to be accepted on l, within its limit. */
static bool
lcount_take(const struct lb_listener *l)
{
    return !l->lc || count_take(&l->lc->open, l->cf->max_connections);
}

uint64_t
lb_worker_rand(struct lb_worker *w)
{
    /* xorshift64*: balancing needs speed and spread, not secrecy. */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint32_t
conn_limit(const struct lb_worker *w)
{
    return w->gen->snap->conf->global.max_connections;
}

static bool
slot_take(const struct lb_worker *w)
{
    return count_take(&slots.open, conn_limit(w)); /* the schema keeps it >= 1 */
}

/* The count and the waiting flags are each written before the other is read
 * (seq_cst), by closers and by pausing workers alike, so a worker that pauses
 * while the last connection closes either sees the free slot itself or is
 * seen waiting: it is never left paused with room to spare. On x86 these are
 * the same locked instructions as relaxed ones. */
static void
slot_put(const struct lb_worker *w, struct lb_lcount *lc)
{
    if (lc)
        atomic_fetch_sub(&lc->open, 1);
    atomic_fetch_sub(&slots.open, 1);
    if (atomic_load(&slots.nwaiting) == 0)
        return;
    for (int i = 0; i < slots.n; i++)
        if (i != w->id && atomic_load(&slots.waiting[i]))
            ev_async_send(slots.ws[i].loop, &slots.ws[i].wake);
}

void
lb_worker_conn_add(struct lb_worker *w, struct lb_conn_link *l)
{
    if (slot_held)
        slot_held = false;
    else
        atomic_fetch_add_explicit(&slots.open, 1, memory_order_relaxed);
    l->lc = held_lc;
    held_lc = NULL;
    l->prev = NULL;
    l->next = w->conns_list.next;
    if (l->next)
        l->next->prev = l;
    w->conns_list.next = l;
    w->conns++;
}

/* A listening socket is watched unless the global limit or its own pauses
 * it. */
static void
listener_watch(struct lb_worker *w, struct lb_listener *l)
{
    if (l->fd < 0)
        return;
    if (l->paused || l->full)
        ev_io_stop(w->loop, &l->io);
    else
        ev_io_start(w->loop, &l->io);
}

static void
listeners_pause(struct lb_worker *w, bool pause)
{
    for (size_t i = 0; i < w->gen->nlisteners; i++) {
        struct lb_listener *l = &w->gen->listeners[i];
        if (l->fd < 0 || l->paused == pause)
            continue;
        l->paused = pause;
        listener_watch(w, l);
    }
}

/* The worker waits for a wake-up while any of its listeners is paused. */
static void
update_waiting(struct lb_worker *w)
{
    bool on = at_limit || nfull;
    if (atomic_load(&slots.waiting[w->id]) == on)
        return;
    atomic_store(&slots.waiting[w->id], on);
    atomic_fetch_add(&slots.nwaiting, on ? 1 : -1);
}

static void
set_waiting(struct lb_worker *w, bool on)
{
    at_limit = on;
    update_waiting(w);
}

/* Listens again on what is under its (current) limit. */
static void
resume_if_room(struct lb_worker *w)
{
    if (w->draining || (!at_limit && !nfull))
        return;
    for (size_t i = 0; nfull && i < w->gen->nlisteners; i++) {
        struct lb_listener *l = &w->gen->listeners[i];
        uint32_t max = l->cf->max_connections;
        if (!l->full || (max && atomic_load(&l->lc->open) >= max))
            continue;
        l->full = false;
        nfull--;
        listener_watch(w, l);
    }
    if (at_limit && atomic_load(&slots.open) < conn_limit(w)) {
        at_limit = false;
        listeners_pause(w, false);
    }
    update_waiting(w);
}

static void
pause_at_limit(struct lb_worker *w)
{
    if (!at_limit) {
        listeners_pause(w, true);
        set_waiting(w, true);
    }
    resume_if_room(w); /* a slot freed before we were seen waiting */
}

static void
pause_listener_full(struct lb_worker *w, struct lb_listener *l)
{
    if (!l->full) {
        l->full = true;
        nfull++;
        listener_watch(w, l);
        update_waiting(w);
    }
    resume_if_room(w); /* a connection closed before we were seen waiting */
}

void
lb_worker_conn_del(struct lb_worker *w, struct lb_conn_link *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        w->conns_list.next = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
    w->conns--;
    slot_put(w, l->lc);
}

void
lb_worker_conn_closed(struct lb_worker *w)
{
    if (w->draining) {
        if (w->conns == 0)
            ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    resume_if_room(w);
}

static void
accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct lb_listener *l = (struct lb_listener *)io;
    struct lb_worker *w = l->w;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (!slot_take(w)) {
            /* Leave further connections in the kernel backlog rather than
             * accepting what we cannot serve. */
            pause_at_limit(w);
            return;
        }
        if (!lcount_take(l)) {
            slot_put(w, NULL);
            pause_listener_full(w, l);
            return;
        }
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            slot_put(w, l->lc);
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                lb_warn("listener %s: accept: %s", l->cf->name, strerror(errno));
            return;
        }
        lb_stat_add(&lb_lstats(l)->connections, 1);
        slot_held = true;
        held_lc = l->lc;
        if (l->cf->mode == CONF_MODE_HTTP)
            lb_http_accept(l, fd, &peer);
        else
            lb_tcp_accept(l, fd, &peer);
        if (slot_held) { /* the session could not be set up */
            slot_held = false;
            slot_put(w, held_lc);
            held_lc = NULL;
        }
    }
}

static void
close_listeners(struct lb_wgen *g)
{
    for (size_t i = 0; i < g->nlisteners; i++) {
        struct lb_listener *l = &g->listeners[i];
        if (l->fd < 0)
            continue;
        ev_io_stop(g->w->loop, &l->io);
        close(l->fd);
        l->fd = -1;
    }
}

static void
gen_free(struct lb_wgen *g)
{
    close_listeners(g);
    lb_wpools_free(g);
    free(g->listeners);
    lb_snapshot_unref(g->snap);
    free(g);
}

void
lb_wgen_unref(struct lb_wgen *g)
{
    if (--g->refs == 0)
        gen_free(g);
}

struct lb_wgen *
lb_wgen_new(struct lb_worker *w, struct lb_snapshot *snap, int *fds)
{
    const struct conf *c = snap->conf;
    struct lb_wgen *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->w = w;
    g->snap = snap;
    lb_snapshot_ref(snap);
    g->refs = 1;
    g->nlisteners = c->nlisteners;
    g->listeners = calloc(c->nlisteners ? c->nlisteners : 1, sizeof(*g->listeners));
    if (!g->listeners || lb_wpools_init(g) < 0) {
        lb_wpools_free(g);
        free(g->listeners);
        lb_snapshot_unref(snap);
        free(g);
        return NULL;
    }
    for (size_t j = 0; j < c->nlisteners; j++) {
        struct lb_listener *l = &g->listeners[j];
        l->w = w;
        l->gen = g;
        l->cf = &c->listeners[j];
        l->index = (int)j;
        l->fd = fds[j];
        l->lc = lcount_find(l->cf, true);
        ev_io_init(&l->io, accept_cb, l->fd, EV_READ);
    }
    return g;
}

void
lb_wgen_post(struct lb_wgen *g)
{
    struct lb_worker *w = g->w;
    struct lb_wgen *head = atomic_load(&w->pending);
    do {
        g->next_pending = head;
    } while (!atomic_compare_exchange_weak(&w->pending, &head, g));
    atomic_fetch_or(&w->command, LB_CMD_SWAP);
    ev_async_send(w->loop, &w->wake);
}

/* Switches the worker to generation g: listening sockets that g inherited
 * stay open (no connection is refused during a reload), the others close;
 * sessions of the old generation finish on it. */
static void
swap_to(struct lb_worker *w, struct lb_wgen *g)
{
    struct lb_wgen *old = w->gen;
    for (size_t i = 0; i < old->nlisteners; i++) {
        struct lb_listener *l = &old->listeners[i];
        if (l->fd < 0)
            continue;
        ev_io_stop(w->loop, &l->io);
        bool kept = false;
        for (size_t j = 0; j < g->nlisteners; j++)
            kept |= g->listeners[j].fd == l->fd;
        if (!kept)
            close(l->fd);
        l->fd = -1;
        if (l->full) {
            l->full = false;
            nfull--;
        }
    }
    old->retired = true;
    lb_wpools_close_idle(old);
    w->gen = g;
    for (size_t j = 0; j < g->nlisteners; j++) {
        struct lb_listener *l = &g->listeners[j];
        if (w->draining) {
            close(l->fd);
            l->fd = -1;
        } else if (at_limit) {
            l->paused = true;
        } else {
            ev_io_start(w->loop, &l->io);
        }
    }
    lb_wgen_unref(old);
    resume_if_room(w); /* the new generation may allow more connections */
}

static void
apply_pending(struct lb_worker *w)
{
    struct lb_wgen *list = atomic_exchange(&w->pending, NULL), *fifo = NULL;
    while (list) { /* the control thread pushed newest first */
        struct lb_wgen *next = list->next_pending;
        list->next_pending = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        struct lb_wgen *next = fifo->next_pending;
        swap_to(w, fifo);
        fifo = next;
    }
}

static void
drain_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct lb_worker *w = (struct lb_worker *)((char *)t - offsetof(struct lb_worker, drain_timer));
    lb_info("worker %d: drain bound reached with %u connections left; closing them", w->id,
            w->conns);
    while (w->conns_list.next)
        w->conns_list.next->force_close(w->conns_list.next);
    ev_break(loop, EVBREAK_ALL);
}

static void
start_drain(struct lb_worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    close_listeners(w->gen);
    for (size_t i = 0; i < w->gen->nlisteners; i++)
        w->gen->listeners[i].full = false;
    nfull = 0;
    set_waiting(w, false);
    struct lb_conn_link *l = w->conns_list.next;
    while (l) {
        struct lb_conn_link *next = l->next;
        if (l->idle_close)
            l->idle_close(l);
        l = next;
    }
    if (w->conns == 0) {
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    uint64_t ms = w->gen->snap->conf->global.shutdown_timeout;
    ev_timer_init(&w->drain_timer, drain_timeout_cb, (double)ms / 1000.0, 0.);
    ev_timer_start(w->loop, &w->drain_timer);
}

static void
wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct lb_worker *w = (struct lb_worker *)((char *)a - offsetof(struct lb_worker, wake));
    int cmd = atomic_exchange(&w->command, LB_CMD_NONE);
    if (cmd & LB_CMD_SWAP)
        apply_pending(w);
    resume_if_room(w); /* another worker may have freed a slot */
    if (cmd & LB_CMD_STOP) {
        while (w->conns_list.next)
            w->conns_list.next->force_close(w->conns_list.next);
        ev_break(loop, EVBREAK_ALL);
    } else if (cmd & LB_CMD_DRAIN) {
        start_drain(w);
    }
}

static void
flush_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    struct lb_worker *w = (struct lb_worker *)((char *)p - offsetof(struct lb_worker, flush));
    lb_accesslog_flush(w);
}

static void *
worker_main(void *arg)
{
    struct lb_worker *w = arg;
    char name[16];

    /* Named for top -H, ps -L and perf: which thread burns the CPU. */
    snprintf(name, sizeof(name), "tern-w%d", w->id);
    pthread_setname_np(pthread_self(), name);
    ev_run(w->loop, 0);
    apply_pending(w); /* generations posted too late still own sockets */
    close_listeners(w->gen);
    while (w->conns_list.next)
        w->conns_list.next->force_close(w->conns_list.next);
    lb_accesslog_worker_free(w);
    return NULL;
}

static void
slots_forget(void)
{
    lcounts_free();
    free(slots.waiting);
    slots.waiting = NULL;
    slots.ws = NULL;
    slots.n = 0;
}

int
lb_workers_start(struct lb_snapshot *snap, int **listen_fds, struct lb_worker **out, int n)
{
    const struct conf *c = snap->conf;
    struct lb_worker *ws = calloc((size_t)n, sizeof(*ws));
    atomic_bool *waiting = calloc((size_t)n, sizeof(*waiting));
    if (!ws || !waiting) {
        free(ws);
        free(waiting);
        return -1;
    }
    for (int i = 0; i < n; i++)
        atomic_init(&waiting[i], false);
    atomic_store(&slots.open, 0);
    atomic_store(&slots.nwaiting, 0);
    slots.waiting = waiting;
    slots.ws = ws;
    slots.n = n;

    for (int i = 0; i < n; i++) {
        struct lb_worker *w = &ws[i];
        w->id = i;
        w->loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
        if (!w->loop) {
            lb_err("worker %d: cannot create an epoll event loop", i);
            goto fail;
        }
        w->bufs.max_free = 1024;
        w->exchs.max_free = 1024;
        w->rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1) ^ (uint64_t)getpid();
        atomic_init(&w->command, LB_CMD_NONE);
        atomic_init(&w->pending, NULL);
        w->gen = lb_wgen_new(w, snap, listen_fds[i]);
        if (!w->gen)
            goto fail;
        for (size_t j = 0; j < c->nlisteners; j++) {
            listen_fds[i][j] = -1; /* the generation owns it now */
            ev_io_start(w->loop, &w->gen->listeners[j].io);
        }
        ev_async_init(&w->wake, wake_cb);
        ev_async_start(w->loop, &w->wake);
        ev_prepare_init(&w->flush, flush_cb);
        ev_prepare_start(w->loop, &w->flush);
    }
    for (int i = 0; i < n; i++) {
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
            lb_err("cannot start worker thread %d", i);
            goto fail_threads;
        }
    }
    *out = ws;
    return 0;

fail_threads:
    /* Stop the threads that started; the rest never ran. */
    for (int i = 0; i < n; i++) {
        if (ws[i].thread) {
            atomic_store(&ws[i].command, LB_CMD_STOP);
            ev_async_send(ws[i].loop, &ws[i].wake);
            pthread_join(ws[i].thread, NULL);
        }
    }
fail:
    for (int i = 0; i < n; i++) {
        struct lb_worker *w = &ws[i];
        if (w->gen)
            lb_wgen_unref(w->gen);
        if (w->loop)
            ev_loop_destroy(w->loop);
        lb_bufpool_destroy(&w->bufs);
        lb_bufpool_destroy(&w->exchs);
    }
    free(ws);
    slots_forget();
    return -1;
}

void
lb_workers_command(struct lb_worker *ws, int n, int cmd)
{
    for (int i = 0; i < n; i++) {
        atomic_fetch_or(&ws[i].command, cmd);
        ev_async_send(ws[i].loop, &ws[i].wake);
    }
}

void
lb_workers_join(struct lb_worker *ws, int n)
{
    for (int i = 0; i < n; i++) {
        struct lb_worker *w = &ws[i];
        pthread_join(w->thread, NULL);
        lb_wgen_unref(w->gen);
        lb_bufpool_destroy(&w->bufs);
        lb_bufpool_destroy(&w->exchs);
        ev_loop_destroy(w->loop);
    }
    free(ws);
    slots_forget();
}
