/*
 * The registry of balancing algorithms: maps the configuration names to the
 * ops tables the per-algorithm files export, and provides lb_hash64, the one
 * hash used for client keys and server ids so that every worker (and every
 * tern node fed the same configuration) sends a given key to the same server.
 */
#include "lb/balance.h"

#include <string.h>

#include "lb/balance/internal.h"

/* Indexed by enum lb_balance_alg; the names are the configuration's. */
static const struct lb_balance_ops *const ops_by_alg[LB_BAL_COUNT] = {
    [LB_BAL_ROUNDROBIN] = &lb_balance_roundrobin, [LB_BAL_LEASTCONN] = &lb_balance_leastconn,
    [LB_BAL_RANDOM2] = &lb_balance_random2,       [LB_BAL_SOURCE_HASH] = &lb_balance_source_hash,
    [LB_BAL_URI_HASH] = &lb_balance_uri_hash,     [LB_BAL_MAGLEV] = &lb_balance_maglev,
};

const struct lb_balance_ops *
lb_balance_ops_by_alg(enum lb_balance_alg alg)
{
    if ((unsigned)alg >= LB_BAL_COUNT)
        return NULL;
    return ops_by_alg[alg];
}

int
lb_balance_alg_by_name(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < LB_BAL_COUNT; i++)
        if (strcmp(ops_by_alg[i]->name, name) == 0)
            return i;
    return -1;
}

const char *
lb_balance_alg_name(enum lb_balance_alg alg)
{
    const struct lb_balance_ops *ops = lb_balance_ops_by_alg(alg);

    return ops ? ops->name : NULL;
}

uint64_t
lb_hash64(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64 offset basis */

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL; /* FNV-1a 64 prime */
    }
    /* FNV-1a alone leaves the high bits weak for short inputs such as IPv4
     * addresses; the finalizer spreads every input bit over the whole word. */
    return lb_bal_fmix64(h);
}
