/*
 * Least connections, weighted: picks the server with the smallest
 * (active + 1) / weight, i.e. the one that would be least loaded relative to
 * its capacity once it takes this connection. The "+ 1" makes an idle pool
 * fill the heavy servers first instead of treating every idle server alike.
 * Ratios are compared by cross-multiplying in 64 bits, so there is no float
 * and no rounding. Ties go to the first candidate after the previous pick,
 * so equally loaded servers take turns rather than the lowest index taking
 * every connection that arrives before the counters move.
 */
#include <stdlib.h>

#include "lb/balance.h"
#include "lb/balance/internal.h"

struct lc_state {
    size_t next; /* where the tie-breaking scan starts */
};

static void *
lc_create(size_t n)
{
    return calloc(1, sizeof(struct lc_state));
}

static void
lc_destroy(void *p)
{
    free(p);
}

static int
lc_update(void *p, const struct lb_bal_server *servers, size_t n)
{
    struct lc_state *st = p;

    st->next = 0;
    return 0;
}

/* Returns the least loaded candidate scanning from start, or -1. */
static int
lc_scan(const struct lb_bal_server *servers, size_t n, size_t start, const int *avoid,
        size_t navoid)
{
    int best = -1;
    uint64_t best_load = 0, best_weight = 1;

    for (size_t k = 0; k < n; k++) {
        size_t i = start + k < n ? start + k : start + k - n;
        uint64_t w = servers[i].weight;
        uint64_t load;

        if (w == 0 || lb_bal_avoided((int)i, avoid, navoid))
            continue;
        /* (active + 1) <= 2^32 and weight < 2^32: the products fit. */
        load = (uint64_t)lb_bal_active(&servers[i]) + 1;
        if (best < 0 || load * best_weight < best_load * w) {
            best = (int)i;
            best_load = load;
            best_weight = w;
        }
    }
    return best;
}

static int
lc_pick(void *p, const struct lb_bal_server *servers, size_t n, uint64_t key, const int *avoid,
        size_t navoid)
{
    struct lc_state *st = p;
    size_t start = st->next < n ? st->next : 0;
    int best;

    best = lc_scan(servers, n, start, avoid, navoid);
    if (best < 0 && navoid > 0)
        best = lc_scan(servers, n, start, NULL, 0);
    if (best >= 0)
        st->next = (size_t)best + 1 < n ? (size_t)best + 1 : 0;
    return best;
}

const struct lb_balance_ops lb_balance_leastconn = {
    .name = "leastconn",
    .create = lc_create,
    .destroy = lc_destroy,
    .update = lc_update,
    .pick = lc_pick,
};
