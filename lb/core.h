/*
 * Types shared by the daemon's files: the runtime state built from a
 * configuration generation (pools and servers, shared by all threads through
 * atomics), the per-worker state (loop, listeners, balancers, buffer pool,
 * idle backend connections) and the entry points between them.
 *
 * Threads: one control thread (the default libev loop: signals, reload and,
 * later, the admin API and health checks) and N workers, each with its own
 * loop. Workers never lock: what they share with other threads is either
 * immutable for the life of a snapshot or an atomic counter.
 */
#ifndef LB_CORE_H
#define LB_CORE_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"
#include "lb/balance.h"
#include "lb/buf.h"

#define LB_MAX_WORKERS 256

/* Administrative state, set by the operator (admin API, plugins). */
enum lb_srv_state {
    LB_SRV_UP = 0, /* ready: takes traffic when healthy */
    LB_SRV_DOWN,   /* unused as an admin state; kept for ABI order */
    LB_SRV_DRAIN,  /* no new requests; removed once idle or after drain_timeout */
    LB_SRV_MAINT,  /* no new requests; stays in the pool */
    LB_SRV_REMOVED /* gone: the slot is never reused within a snapshot */
};

/* Health, set by the health checker and passive outlier detection. */
enum lb_srv_health { LB_HEALTH_UP = 0, LB_HEALTH_DOWN };

/* Per-server counters. Relaxed atomics: they are statistics, not
 * synchronisation. */
/* Upper bounds (ms) of the latency histogram buckets; one more bucket counts
 * everything above the last bound. */
#define LB_LAT_BUCKETS 14
extern const double lb_lat_bounds_ms[LB_LAT_BUCKETS];

struct lb_server_stats {
    atomic_ulong lat[LB_LAT_BUCKETS + 1]; /* total request time, by bucket */
    atomic_ulong lat_sum_us;
    atomic_ulong requests;
    atomic_ulong responses[6]; /* index status/100, 0 for "other" */
    atomic_ulong bytes_in, bytes_out;
    atomic_ulong connect_errors;
    atomic_ulong connections; /* backend connections opened */
};

struct lb_server {
    char *name;
    struct conf_addr addr;
    uint64_t id_hash;
    uint32_t max_connections;
    atomic_uint weight;
    atomic_int state;   /* enum lb_srv_state */
    atomic_int health;  /* enum lb_srv_health */
    atomic_uint active; /* requests or tunnels using it now, all workers */
    /* Consecutive failed connects or 5xx answers seen by the workers, reset
     * by a success: the control thread's outlier detection reads it. */
    atomic_uint consecutive_failures;
    /* Slow start: share of the weight in effect, in thousandths (1000 =
     * full), raised step by step by the control thread after a server comes
     * up. */
    atomic_uint ramp;
    struct lb_server_stats st;
    /* Control thread only. */
    bool dynamic;             /* added at runtime: name and addr.text are owned */
    bool remove_when_drained; /* DRAIN ends in REMOVED (else it stays drained) */
    uint64_t drain_deadline;  /* monotonic ms */
};

/* A pool's servers live in a fixed array of slots for the life of a
 * snapshot, so a worker may keep a pointer to a server without a lock: adding
 * fills the next slot and then publishes the new count; removing marks the
 * slot REMOVED. A reload compacts the array into the next snapshot. */
struct lb_pool {
    const struct conf_pool *cf;
    const struct lb_balance_ops *ops;
    struct lb_server *servers;
    size_t capacity;
    atomic_size_t nservers; /* slots in use (release-published) */
    /* Bumped by the control thread whenever a weight or state changes, so
     * each worker rebuilds its balancer on its next pick. */
    atomic_uint generation;
    atomic_ulong requests, no_server;
    /* Answers tern gave to this pool's requests itself, with no server
     * chosen (none usable, queue full, queue timeout), by status class as in
     * a server's responses. The pool's figures add them to its servers', so
     * a total outage shows in its error rate. */
    atomic_ulong local_responses[6];
    /* Requests waiting in this pool's queues, all workers (a gauge the
     * sampler reads; each worker's list stays its own). */
    atomic_uint queued;
};

/* One configuration generation with its runtime state. Reference counted:
 * every connection holds the snapshot it started with. */
struct lb_snapshot {
    struct conf *conf;
    struct lb_pool *pools;
    size_t npools;
    struct lb_tls *tls; /* lb/tls.h: TLS contexts, owned; NULL: no TLS */
    atomic_int refs;
};

struct lb_worker;
struct lb_wgen;
struct lb_tls;

/* Counters of one listener on one worker. Only that worker writes them, with
 * lb_stat_add (a relaxed load and store: no locked instruction, no cache line
 * shared with another worker); the control thread reads them with relaxed
 * loads and sums the workers (lb_listener_stats_sum). A worker keeps them by
 * listener name, so they carry over a reload, and sessions still on an older
 * generation count where the new one does. The connections open now are not
 * here: worker.c counts them for max_connections (lb_listener_open). */
struct lb_listener_stats {
    _Atomic uint64_t key;      /* lb_hash64 of the name | 1; 0: slot free */
    atomic_ulong connections;  /* accepted */
    atomic_ulong requests;     /* HTTP requests or TCP sessions that ended */
    atomic_ulong responses[6]; /* HTTP: index status/100, 0 for none or other */
    atomic_ulong bytes_in;     /* received from clients (after TLS) */
    atomic_ulong bytes_out;    /* sent to clients (before TLS) */
};

/* Listener names a worker keeps counters for over its life; the names past
 * it share one more slot that nothing reads. */
#define LB_LISTENER_STATS 64

/* The same counters summed over the workers (control thread). */
struct lb_listener_totals {
    uint64_t connections, active, requests, responses[6], bytes_in, bytes_out;
};

struct ssl_st;
struct ssl_session_st;

/* A listening socket of one worker. */
struct lb_listener {
    ev_io io;
    struct lb_worker *w;
    struct lb_wgen *gen;
    const struct conf_listener *cf;
    int index;                       /* into gen->snap->conf->listeners */
    int fd;                          /* -1 once closed or handed to the next generation */
    bool paused;                     /* for the global limit */
    bool full;                       /* for its own max_connections */
    struct lb_lcount *lc;            /* the listener's connections in all workers */
    struct lb_listener_stats *stats; /* this worker's, found on first use */
};

/* Per worker view of a pool: a balancer built for the current generation. */
struct lb_wpool {
    struct lb_pool *pool;
    struct lb_wgen *gen;
    void *bal;
    struct lb_bal_server *bs;
    unsigned generation;
    size_t n; /* servers the balancer was built over */
    bool built;
    struct lb_bconn **idle; /* per server: idle keep-alive backend connections */
    uint32_t *nidle;
    /* Per server, for a pool with tls: the last TLS session, offered by the
     * next new connection to skip a full handshake (lb/tls.h). */
    struct ssl_session_st **tls_sess;
    /* Requests waiting for a server slot (max_connections), oldest first. */
    struct lb_queued *queue_head, *queue_tail;
    uint32_t queued;
    ev_timer queue_timer;
};

/* A request waiting in a pool's queue; embedded in the session. */
struct lb_queued {
    struct lb_queued *next, *prev;
    void (*retry)(struct lb_queued *q); /* try to get a server again */
};

/*
 * What one worker runs for one configuration generation: its listening
 * sockets, balancers and idle backend connections. Built by the control
 * thread, handed over through the worker's pending list and used only by
 * the worker after that. Sessions hold a reference, so a connection keeps the
 * generation it started with; a retired generation is freed with its last
 * session.
 */
struct lb_wgen {
    struct lb_worker *w;
    struct lb_snapshot *snap;
    struct lb_listener *listeners;
    size_t nlisteners;
    struct lb_wpool *wpools;
    unsigned refs; /* sessions, plus one while current; worker thread only */
    bool retired;
    struct lb_wgen *next_pending;
};

struct lb_accesslog;

struct lb_worker {
    int id;
    pthread_t thread;
    struct ev_loop *loop;
    ev_async wake; /* commands and new generations from the control thread */
    ev_prepare flush;
    struct lb_wgen *gen;               /* current generation */
    _Atomic(struct lb_wgen *) pending; /* pushed by the control thread, LIFO */
    struct lb_bufpool bufs;
    struct lb_bufpool exchs; /* http_proxy.c's per-request state */
    uint64_t rng;
    uint32_t conns;     /* client connections open on this worker */
    atomic_int command; /* LB_CMD_* bits posted with wake */
    bool draining;
    ev_timer drain_timer;
    struct lb_accesslog *alog;
    struct lb_conn_list {
        struct lb_conn_link *next, *prev;
    } conns_list;
    struct lb_listener_stats lstats[LB_LISTENER_STATS + 1];
};

/* Every client session begins with this link so a draining worker can find
 * idle keep-alive connections and close them. */
struct lb_conn_link {
    struct lb_conn_link *next, *prev;
    void (*idle_close)(struct lb_conn_link *l); /* closes it if idle; may be NULL */
    void (*force_close)(struct lb_conn_link *l);
    struct lb_lcount *lc; /* the listener it was accepted on, or NULL */
};

enum { LB_CMD_NONE = 0, LB_CMD_DRAIN = 1, LB_CMD_STOP = 2, LB_CMD_SWAP = 4 };

/* runtime.c */
struct lb_snapshot *lb_snapshot_new(struct conf *c);
void lb_snapshot_ref(struct lb_snapshot *s);
void lb_snapshot_unref(struct lb_snapshot *s);

/* worker.c */
int lb_workers_start(struct lb_snapshot *snap, int **listen_fds, struct lb_worker **out, int n);
void lb_workers_command(struct lb_worker *ws, int n, int cmd);
void lb_workers_join(struct lb_worker *ws, int n);
/* Builds worker w's generation for snap with these listening sockets (one
 * per listener of snap, owned by the generation from now on). Control
 * thread. NULL on allocation failure (fds untouched). */
struct lb_wgen *lb_wgen_new(struct lb_worker *w, struct lb_snapshot *snap, int *fds);
/* Queues g for its worker, which switches to it on its next loop turn. */
void lb_wgen_post(struct lb_wgen *g);
void lb_wgen_unref(struct lb_wgen *g);
void lb_worker_conn_add(struct lb_worker *w, struct lb_conn_link *l);
void lb_worker_conn_del(struct lb_worker *w, struct lb_conn_link *l);
void lb_worker_conn_closed(struct lb_worker *w);
/* Client connections open on listener cf's address, all workers. */
uint32_t lb_listener_open(const struct conf_listener *cf);
uint64_t lb_worker_rand(struct lb_worker *w);

/* listener.c: opens one SO_REUSEPORT socket per worker and listener.
 * fds[w][l]. Returns 0 or -1 after logging which bind failed. */
int lb_listeners_open(const struct conf *c, int nworkers, int ***fds_out);
void lb_listeners_close(int **fds, int nworkers, size_t nlisteners);
/* Opens one listening socket for l. Returns the fd or -errno. */
int lb_listener_open_one(const struct conf_listener *l);
void lb_listener_tune(int fd, const struct conf_listener *l);
bool lb_addr_equal(const struct conf_addr *a, const struct conf_addr *b);

/* backend.c */
struct lb_bconn {
    ev_io io;
    struct lb_worker *w;
    struct lb_wpool *wp;
    struct lb_server *srv;
    int srv_index;
    int fd;
    struct lb_bconn *next_idle;
    void *owner;
    bool reused;
    struct ssl_st *ssl; /* lb/tls.h: set for a pool with tls, kept across reuse */
    bool tls_ready;     /* handshake done */
};

#define LB_PICK_FULL (-2)
/* Picks a usable server of pool wp (not in avoid). Returns the index, -1 when
 * no server is usable, or LB_PICK_FULL when every usable one is at its
 * max_connections (the request may wait in the pool's queue). */
int lb_backend_pick(struct lb_worker *w, struct lb_wpool *wp, uint64_t key, const int *avoid,
                    size_t navoid);
bool lb_server_usable(const struct lb_server *s);
/* The q-quantile (0..1), in ms, of latency histogram counts b[0..LB_LAT_BUCKETS],
 * interpolated linearly inside its bucket; NAN when the histogram is empty. */
double lb_lat_quantile(const uint64_t *b, double q);
/* Counts one finished request's total time in the server's histogram. */
void lb_server_observe(struct lb_server *s, uint64_t us);
/* Returns an idle connection to server i if one is alive, else opens a new
 * non-blocking connection (connect in progress). NULL with errno on failure. */
struct lb_bconn *lb_backend_get(struct lb_worker *w, struct lb_wpool *wp, int i, bool allow_reuse,
                                bool probe);
/* Gives a connection back: kept idle for reuse when keep, else closed. */
void lb_backend_put(struct lb_bconn *b, bool keep);
/* Queues q on wp (false when the queue is full). A slot freed on this worker
 * retries the oldest at once; slots freed by other workers are noticed by a
 * short poll while the queue is not empty. */
bool lb_queue_add(struct lb_wpool *wp, struct lb_queued *q);
void lb_queue_del(struct lb_wpool *wp, struct lb_queued *q);
/* Retries the oldest waiting request, if any. */
void lb_queue_kick(struct lb_wpool *wp);
int lb_wpools_init(struct lb_wgen *g);
void lb_wpools_free(struct lb_wgen *g);
/* Closes the idle backend connections of a generation being retired. */
void lb_wpools_close_idle(struct lb_wgen *g);

/* http_proxy.c / tcp_proxy.c: take ownership of an accepted socket. */
void lb_http_accept(struct lb_listener *l, int fd, const struct sockaddr_storage *peer);
void lb_tcp_accept(struct lb_listener *l, int fd, const struct sockaddr_storage *peer);

/* Formats an address as "ip" (no port) into out; returns the length. */
size_t lb_addr_ip(const struct sockaddr_storage *sa, char *out, size_t cap);
size_t lb_addr_ipport(const struct sockaddr_storage *sa, char *out, size_t cap);

/* metrics.c: the worker's counters for listener name (taking a free slot
 * the first time), and the totals of listener cf: its counters summed over
 * workers ws[0..n) and its open connections (control thread). */
struct lb_listener_stats *lb_listener_stats_find(struct lb_worker *w, const char *name);
void lb_listener_stats_sum(const struct lb_worker *ws, int n, const struct conf_listener *cf,
                           struct lb_listener_totals *out);

static inline struct lb_listener_stats *
lb_lstats(struct lb_listener *l)
{
    if (!l->stats)
        l->stats = lb_listener_stats_find(l->w, l->cf->name);
    return l->stats;
}

/* Adds v (or, with a negative v, takes it away) to a counter that only the
 * calling thread writes. */
static inline void
lb_stat_add(atomic_ulong *c, long v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (unsigned long)v,
                          memory_order_relaxed);
}

static inline uint64_t
lb_now_us(struct ev_loop *loop)
{
    return (uint64_t)(ev_now(loop) * 1e6);
}

#endif
