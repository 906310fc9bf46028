/*
 * One active health probe: a non-blocking TCP connect, and for http checks a
 * request and the strict parsing of its response, on the control thread's
 * loop. lb/health.c decides when to probe and what a result means; this file
 * only knows how to ask one server once and say why the answer was bad.
 */
#ifndef LB_HEALTH_CHECK_H
#define LB_HEALTH_CHECK_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf/config.h"
#include "lb/http1.h"

enum hc_result {
    HC_OK = 0,
    HC_FAIL,  /* the server failed the check: why says how */
    HC_LOCAL, /* we could not run the check (no socket): says nothing of the server */
};

struct hc_probe;
typedef void (*hc_probe_done_cb)(struct hc_probe *pr, enum hc_result res, const char *why);

struct lb_tls_client;
struct ssl_st;

struct hc_probe {
    ev_io io;
    ev_timer timer; /* the check's timeout (or a deferred early result) */
    struct ev_loop *loop;
    const struct conf_health *cf; /* valid while the probe runs */
    hc_probe_done_cb done;
    int fd;
    int phase;
    bool head_only; /* HEAD: the response has no body */
    char *buf;      /* the request while sending, then the response */
    size_t len, cap, sent;
    /* Response, once its head is parsed. */
    size_t head_len;
    int status;
    int64_t content_length;
    bool chunked;
    size_t chunk_scanned; /* body bytes already given to the chunk scanner */
    bool chunk_done;
    struct http1_chunked chunk;
    enum hc_result early;
    struct lb_tls_client *tls; /* the pool talks TLS to its servers; NULL: plain */
    struct ssl_st *ssl;
    char why[192];
};

/* Starts a probe of the server at sa. host_default is the Host header when
 * the check names none. done is called exactly once, from the loop (never
 * from within this call), unless the probe is cancelled first. */
void hc_probe_start(struct hc_probe *pr, struct ev_loop *loop, const struct conf_health *cf,
                    const struct sockaddr_storage *sa, socklen_t salen, const char *host_default,
                    struct lb_tls_client *tls, hc_probe_done_cb done);
/* Stops a running probe without calling done. Harmless on an idle one. */
void hc_probe_cancel(struct hc_probe *pr);
bool hc_probe_running(const struct hc_probe *pr);

#endif
