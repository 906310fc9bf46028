/*
 * Load-balancing algorithms.
 *
 * Each algorithm lives in its own file under lb/balance/ and fills one
 * struct lb_balance_ops. A balancer instance belongs to one worker thread, so
 * picking a server takes no lock; the instance is rebuilt (update) when the
 * pool's membership, weights or server usability change, which the worker
 * notices through a generation counter.
 *
 * Server indices are positions in the array handed to update() and pick();
 * the caller keeps that array stable between updates except for the live
 * connection counters it points to.
 *
 * To add an algorithm: write lb/balance/NAME.c defining
 * `const struct lb_balance_ops lb_balance_NAME`, add an enum value below, a
 * row in lb_balance_ops_by_alg() (lb/balance/balance.c) and the file to
 * lb/meson.build.
 */
#ifndef LB_BALANCE_H
#define LB_BALANCE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum lb_balance_alg {
    LB_BAL_ROUNDROBIN = 0, /* smooth weighted round robin (nginx's) */
    LB_BAL_LEASTCONN,      /* fewest active connections per unit of weight */
    LB_BAL_RANDOM2,        /* power of two random choices, weighted */
    LB_BAL_SOURCE_HASH,    /* consistent hash of the client address */
    LB_BAL_URI_HASH,       /* consistent hash of the request path */
    LB_BAL_MAGLEV,         /* Maglev lookup table (Eisenbud et al., NSDI'16) */
    LB_BAL_COUNT
};

struct lb_bal_server {
    uint32_t weight;           /* effective weight; 0 means not usable now */
    uint64_t id_hash;          /* stable hash of the server name (consistent hashing) */
    const atomic_uint *active; /* live connections across all workers; may be NULL */
};

struct lb_balancer; /* opaque, per worker */

struct lb_balance_ops {
    const char *name;
    /* Allocates state for up to n servers; NULL on allocation failure. */
    void *(*create)(size_t n);
    void (*destroy)(void *st);
    /* (Re)builds internal tables from servers[0..n). Returns 0 or -ENOMEM. */
    int (*update)(void *st, const struct lb_bal_server *servers, size_t n);
    /* Returns a server index in [0, n) with weight > 0 that is not listed in
     * avoid[0..navoid), or -1 when none is usable. key is the hash of the
     * client address or URI for the hashing algorithms, a random number
     * otherwise. When every usable server is avoided, the avoid list is
     * ignored rather than failing the request. */
    int (*pick)(void *st, const struct lb_bal_server *servers, size_t n, uint64_t key,
                const int *avoid, size_t navoid);
};

const struct lb_balance_ops *lb_balance_ops_by_alg(enum lb_balance_alg alg);
/* Returns the algorithm for a config name, or -1. */
int lb_balance_alg_by_name(const char *name);
const char *lb_balance_alg_name(enum lb_balance_alg alg);

/* 64-bit hash (FNV-1a followed by a murmur3 finalizer) used for keys and ids. */
uint64_t lb_hash64(const void *data, size_t len);

#endif
