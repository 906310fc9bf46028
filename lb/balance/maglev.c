/*
 * Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
 * Network Load Balancer", NSDI 2016, section 3.4): a lookup table of prime
 * size M where each server, in turn, claims the next free slot of its own
 * permutation of the table (offset and skip from two hashes of its id). A key
 * goes to table[key % M]: one memory access, whatever the number of servers,
 * and a near-perfectly even spread. A membership change disturbs slightly more
 * than the changed server's share of slots (the paper measures the excess),
 * unlike the ring, which is exact but needs a binary search and many points.
 *
 * Weights follow Envoy's reading of the paper: in every round each server
 * earns its weight in credit and claims one slot per max-weight of credit, so
 * the heaviest claims one slot a round and the others proportionally fewer.
 * Servers are filled in id_hash order, so the table depends on the set of
 * servers and not on the order of the array.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lb/balance.h"
#include "lb/balance/internal.h"

/* M must be prime so every skip walks a full permutation, and M >= 100 * N
 * keeps the servers' shares within about 1% of each other (paper, section
 * 3.4). The size only grows past 65537 for pools of more than 655 servers. */
static const uint32_t mg_primes[] = {65537, 131071, 262139, 524287, 1048573, 2097143, 4194301};

#define MG_EMPTY16 UINT16_MAX
#define MG_EMPTY32 UINT32_MAX

struct mg_state {
    uint32_t size; /* M, 0 before the first update */
    /* Slots name server indices; 16 bits halve the table (128 KiB per worker)
     * for any pool under 65535 servers, 32 bits take over beyond. */
    uint16_t *t16;
    uint32_t *t32;
};

struct mg_build {
    uint64_t id_hash;
    uint32_t server;
    uint32_t weight;
    uint32_t pos; /* next slot of its permutation to try */
    uint32_t skip;
    uint64_t credit; /* weight earned, not yet spent on slots */
};

static void *
mg_create(size_t n)
{
    return calloc(1, sizeof(struct mg_state));
}

static void
mg_destroy(void *p)
{
    struct mg_state *st = p;

    if (st == NULL)
        return;
    free(st->t16);
    free(st->t32);
    free(st);
}

static int
mg_build_cmp(const void *a, const void *b)
{
    const struct mg_build *x = a, *y = b;

    if (x->id_hash != y->id_hash)
        return x->id_hash < y->id_hash ? -1 : 1;
    return (x->server > y->server) - (x->server < y->server);
}

static uint32_t
mg_size_for(size_t n)
{
    size_t count = sizeof(mg_primes) / sizeof(mg_primes[0]);

    for (size_t i = 0; i < count; i++)
        if (mg_primes[i] / 100 >= n)
            return mg_primes[i];
    return mg_primes[count - 1];
}

static int
mg_update(void *p, const struct lb_bal_server *servers, size_t n)
{
    struct mg_state *st = p;
    /* Sized from n, not from the usable count, so health flaps never change M
     * (which would reshuffle the whole table). */
    uint32_t m = mg_size_for(n);
    bool wide = n >= MG_EMPTY16;
    struct mg_build *b;
    size_t nb = 0;
    uint32_t max_weight = 0, filled = 0;
    uint16_t *t16 = NULL;
    uint32_t *t32 = NULL;

    if (n >= m)
        return -ENOMEM; /* more servers than slots: cannot give each one */

    for (size_t i = 0; i < n; i++)
        if (servers[i].weight > 0)
            nb++;
    b = malloc((nb ? nb : 1) * sizeof(*b));
    if (wide)
        t32 = malloc((size_t)m * sizeof(*t32));
    else
        t16 = malloc((size_t)m * sizeof(*t16));
    if (b == NULL || (t16 == NULL && t32 == NULL)) {
        free(b);
        free(t16);
        free(t32);
        return -ENOMEM;
    }

    nb = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t h = servers[i].id_hash;

        if (servers[i].weight == 0)
            continue;
        /* Two independent hashes of the id, as the paper asks for. */
        b[nb] = (struct mg_build){
            .id_hash = h,
            .server = (uint32_t)i,
            .weight = servers[i].weight,
            .pos = (uint32_t)(lb_bal_fmix64(h ^ 0x6a09e667f3bcc908ULL) % m),
            .skip = (uint32_t)(lb_bal_fmix64(h ^ 0xbb67ae8584caa73bULL) % (m - 1) + 1),
        };
        if (servers[i].weight > max_weight)
            max_weight = servers[i].weight;
        nb++;
    }
    qsort(b, nb, sizeof(*b), mg_build_cmp);

    if (wide)
        memset(t32, 0xff, (size_t)m * sizeof(*t32));
    else
        memset(t16, 0xff, (size_t)m * sizeof(*t16));

    while (nb > 0 && filled < m) {
        for (size_t j = 0; j < nb && filled < m; j++) {
            struct mg_build *e = &b[j];

            e->credit += e->weight;
            if (e->credit < max_weight)
                continue;
            e->credit -= max_weight;
            /* The permutation visits every slot once, and a slot is free, so
             * this ends. */
            for (;;) {
                uint32_t pos = e->pos;

                e->pos = pos + e->skip >= m ? pos + e->skip - m : pos + e->skip;
                if (wide ? t32[pos] == MG_EMPTY32 : t16[pos] == MG_EMPTY16) {
                    if (wide)
                        t32[pos] = e->server;
                    else
                        t16[pos] = (uint16_t)e->server;
                    filled++;
                    break;
                }
            }
        }
    }
    free(b);

    free(st->t16);
    free(st->t32);
    st->t16 = t16;
    st->t32 = t32;
    st->size = nb > 0 ? m : 0;
    return 0;
}

static inline uint32_t
mg_slot(const struct mg_state *st, uint32_t i)
{
    return st->t16 ? st->t16[i] : st->t32[i];
}

static int
mg_pick(void *p, const struct lb_bal_server *servers, size_t n, uint64_t key, const int *avoid,
        size_t navoid)
{
    struct mg_state *st = p;
    uint32_t at, s;

    if (st->size == 0)
        return lb_bal_fallback(servers, n, avoid, navoid);
    at = (uint32_t)(key % st->size);
    s = mg_slot(st, at);
    if (s < n && servers[s].weight > 0 && !lb_bal_avoided((int)s, avoid, navoid))
        return (int)s;

    /* With the list dropped the first slot is the answer again: start at 0. */
    if (navoid > 0 && lb_bal_all_avoided(servers, n, avoid, navoid))
        navoid = 0;
    /* Following slots belong to servers spread at random, so the next
     * acceptable one is a few probes away and the same for every worker. */
    for (uint32_t k = 0; k < st->size; k++) {
        uint32_t i = at + k < st->size ? at + k : at + k - st->size;

        s = mg_slot(st, i);
        if (s < n && servers[s].weight > 0 && !lb_bal_avoided((int)s, avoid, navoid))
            return (int)s;
    }
    return lb_bal_fallback(servers, n, avoid, navoid);
}

const struct lb_balance_ops lb_balance_maglev = {
    .name = "maglev",
    .create = mg_create,
    .destroy = mg_destroy,
    .update = mg_update,
    .pick = mg_pick,
};
