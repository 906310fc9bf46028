/*
 * Helpers shared by the balancing algorithms in lb/balance/ and nothing else:
 * the ops tables each file exports, the hash finalizer, and the small checks
 * every pick() repeats (usable, avoided, load). Everything here is inline and
 * cheap because it sits on the per-request path.
 */
#ifndef LB_BALANCE_INTERNAL_H
#define LB_BALANCE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb/balance.h"

extern const struct lb_balance_ops lb_balance_roundrobin;
extern const struct lb_balance_ops lb_balance_leastconn;
extern const struct lb_balance_ops lb_balance_random2;
extern const struct lb_balance_ops lb_balance_source_hash;
extern const struct lb_balance_ops lb_balance_uri_hash;
extern const struct lb_balance_ops lb_balance_maglev;

/* murmur3's 64-bit finalizer: a bijection with full avalanche, so it can turn
 * structured inputs (ids plus replica numbers, counters) into ring positions. */
static inline uint64_t
lb_bal_fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* Maps a uniform 64-bit value onto [0, range) by its high bits; unlike % it
 * costs no division and carries no bias worth measuring. */
static inline uint64_t
lb_bal_reduce(uint64_t x, uint64_t range)
{
    return (uint64_t)(((unsigned __int128)x * range) >> 64);
}

static inline bool
lb_bal_avoided(int idx, const int *avoid, size_t navoid)
{
    for (size_t i = 0; i < navoid; i++)
        if (avoid[i] == idx)
            return true;
    return false;
}

/* Relaxed is enough: the counter is a hint, other workers change it anyway. */
static inline uint32_t
lb_bal_active(const struct lb_bal_server *s)
{
    return s->active ? atomic_load_explicit(s->active, memory_order_relaxed) : 0;
}

/* True when avoid covers every server with weight > 0 (or none is usable), in
 * which case the header says the avoid list is to be ignored. Only called on
 * the retry path, so O(n * navoid) is fine. */
static inline bool
lb_bal_all_avoided(const struct lb_bal_server *servers, size_t n, const int *avoid, size_t navoid)
{
    for (size_t i = 0; i < n; i++)
        if (servers[i].weight > 0 && !lb_bal_avoided((int)i, avoid, navoid))
            return false;
    return true;
}

/* Last resort when an algorithm's table cannot answer (pick() before update(),
 * or a caller whose array drifted from the one given to update()): the first
 * usable server, preferring one not avoided. */
static inline int
lb_bal_fallback(const struct lb_bal_server *servers, size_t n, const int *avoid, size_t navoid)
{
    int any = -1;

    for (size_t i = 0; i < n; i++) {
        if (servers[i].weight == 0)
            continue;
        if (!lb_bal_avoided((int)i, avoid, navoid))
            return (int)i;
        if (any < 0)
            any = (int)i;
    }
    return any;
}

#endif
