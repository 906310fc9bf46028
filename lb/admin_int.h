/*
 * Internals shared by the admin API's files, which all run on the control
 * thread: admin.c (life cycle, token, rates and history), admin_http.c (the
 * HTTP/1.1 connections), admin_routes.c (routes and JSON) and metrics.c
 * (Prometheus text format). Nothing here is visible outside lb/admin*.c and
 * lb/metrics.c; the daemon only sees lb/admin.h.
 */
#ifndef LB_ADMIN_INT_H
#define LB_ADMIN_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb/http1.h"
#include "lb/runtime.h"

/* Admin requests are small JSON documents: anything bigger is a mistake or
 * an attack, and a bound keeps a connection's memory bounded. */
#define ADMIN_MAX_HEAD 16384
#define ADMIN_MAX_LINE 8192
#define ADMIN_MAX_BODY 65536
/* Admin clients are few (an operator, a dashboard, a scraper): past this,
 * the oldest idle connection makes room for a new one. */
#define ADMIN_MAX_CONNS 256
/* Seconds: a whole request must arrive within REQ of its first byte
 * (slowloris); a keep-alive connection may wait IDLE for the next one; a
 * response that makes no progress for WRITE is abandoned. */
#define ADMIN_TIMEOUT_REQ 5.0
#define ADMIN_TIMEOUT_IDLE 30.0
#define ADMIN_TIMEOUT_WRITE 10.0
#define ADMIN_TIMEOUT_LINGER 2.0
/* Samples (one a second) kept per pool for the dashboard's charts. */
#define ADMIN_HISTORY 300

/* A growable byte string; after a failed allocation it stays as it was and
 * remembers the failure (checked once, when the response is sent). */
struct admin_sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

void admin_sbuf_add(struct admin_sbuf *b, const void *d, size_t n);
void admin_sbuf_puts(struct admin_sbuf *b, const char *s);
void admin_sbuf_printf(struct admin_sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void admin_sbuf_free(struct admin_sbuf *b);

/* One second of a pool's traffic, for GET /api/v1/pools/{pool}/history.
 * Percentiles are NaN when no request finished in that second. */
struct admin_sample {
    double t; /* wall clock, seconds */
    double rps;
    double p50_ms, p99_ms;
};

/* Rate of one server slot of the tracked snapshot. */
struct admin_srv_rate {
    uint64_t last;
    double rps;
};

struct admin_pool_stats {
    char *name; /* the pool's name: history survives a reload by name */
    struct lb_pool *pool;
    uint64_t last_req;
    uint64_t last_lat[LB_LAT_BUCKETS + 1];
    double rps;
    struct admin_srv_rate *srv; /* by slot, pool->capacity of them */
    struct admin_sample ring[ADMIN_HISTORY];
    size_t head, count; /* next slot to write, samples held */
};

struct admin_conn;

struct admin {
    struct lb_ctl *ctl;
    /* The snapshot the rates and the token were last synced with, held by a
     * reference so that a new snapshot can never reuse its address. */
    struct lb_snapshot *snap;
    int fd;
    ev_io accept_io;
    ev_timer accept_pause; /* out of descriptors: accepting resumes later */
    ev_timer sample;
    double last_sample; /* ev_now of the last sample */
    char *token;        /* NULL: no token_file, mutations refused */
    char *listen_text;  /* admin.listen in effect (a change needs a restart) */
    struct admin_pool_stats *pools;
    size_t npools;
    struct admin_conn *conns; /* oldest first */
    struct admin_conn *conns_tail;
    size_t nconns;
};

/* A parsed request as the routes see it: views into the connection's
 * buffer, valid during the call. */
struct admin_req {
    enum http1_method meth;
    struct http1_str method;
    struct http1_str path;
    struct http1_str query; /* after '?', may be empty */
    struct http1_str body;
    struct http1_str auth; /* Authorization value; p NULL when absent */
};

struct admin_resp {
    int status;
    const char *ctype; /* NULL: application/json */
    struct admin_sbuf body;
    char allow[64]; /* for 405 */
    char *location; /* for 201, owned */
    bool www_auth;  /* 401: WWW-Authenticate: Bearer */
    /* The answer comes later (a reload loading the file): the connection
     * waits, reading no further request, until load number wait_load has
     * finished (lb_reload_finished()); then finish fills a fresh response
     * (status 200, the rest empty) and the connection goes on. */
    bool defer;
    uint64_t wait_load;
    void (*finish)(struct admin *a, struct admin_resp *rs);
};

/* admin.c: brings rates and the token up to date after a snapshot change
 * (reload); cheap when nothing changed. */
void admin_sync(struct admin *a);
struct admin_pool_stats *admin_pool_stats(struct admin *a, const struct lb_pool *p);
double admin_server_rps(struct admin *a, const struct lb_pool *p, const struct lb_server *s);
/* The q-quantile (0..1) in ms of a latency histogram, interpolated linearly
 * inside its bucket; NaN when the histogram is empty. */
double admin_percentile(const uint64_t *buckets, double q);
void admin_server_buckets(const struct lb_server *s, uint64_t *out);
void admin_pool_buckets(const struct lb_pool *p, uint64_t *out);

/* admin_http.c */
int admin_http_listen(struct admin *a, const struct conf_addr *addr);
void admin_http_close_all(struct admin *a);

/* admin_routes.c: fills rs for rq (never fails: errors are responses). */
void admin_route(struct admin *a, const struct admin_req *rq, struct admin_resp *rs);
/* A JSON error body {"error": msg, "status": status}. */
void admin_error(struct admin_resp *rs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* metrics.c: the Prometheus text exposition (format 0.0.4). */
void admin_metrics(struct admin *a, struct admin_sbuf *out);

/* dashboard.c */
extern const char lb_dashboard_html[];

#endif
