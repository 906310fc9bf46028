/*
 * Power of two random choices (Mitzenmacher), weighted: draw two distinct
 * servers at random in proportion to their weights and send the connection to
 * the one with fewer active connections per unit of weight. It needs no shared
 * state between workers beyond the live counters, yet keeps the maximum load
 * far below plain random while avoiding the herd that pure least-connections
 * causes when many workers read the same stale counters.
 *
 * Both draws come from the caller's 64-bit random key: the first from its high
 * bits, the second from a splitmix64 step of it. Weighted draws binary-search
 * a prefix-sum array built by update().
 */
#include <errno.h>
#include <stdlib.h>

#include "lb/balance.h"
#include "lb/balance/internal.h"

struct r2_state {
    size_t n, cap;
    uint64_t total;
    uint64_t *cum; /* cum[i] = weight[0] + ... + weight[i] */
};

static void *
r2_create(size_t n)
{
    struct r2_state *st = calloc(1, sizeof(*st));

    if (st == NULL)
        return NULL;
    if (n > 0) {
        st->cum = malloc(n * sizeof(*st->cum));
        if (st->cum == NULL) {
            free(st);
            return NULL;
        }
    }
    st->cap = n;
    return st;
}

static void
r2_destroy(void *p)
{
    struct r2_state *st = p;

    if (st == NULL)
        return;
    free(st->cum);
    free(st);
}

static int
r2_update(void *p, const struct lb_bal_server *servers, size_t n)
{
    struct r2_state *st = p;
    uint64_t total = 0;

    if (n > st->cap) {
        uint64_t *cum = realloc(st->cum, n * sizeof(*cum));

        if (cum == NULL)
            return -ENOMEM;
        st->cum = cum;
        st->cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        total += servers[i].weight;
        st->cum[i] = total;
    }
    st->n = n;
    st->total = total;
    return 0;
}

static uint64_t
r2_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* First index whose prefix sum exceeds r; weight-0 servers own an empty range
 * and are never found. */
static int
r2_search(const struct r2_state *st, uint64_t r)
{
    size_t lo = 0, hi = st->n - 1;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (st->cum[mid] > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    return (int)lo;
}

/* A weighted draw among the usable servers that are neither avoided nor
 * `exclude` (-1 for none); -1 when no such server exists. Without an avoid
 * list this is O(log n): the excluded server's range is cut out of the prefix
 * sums by shifting the draw past it. The avoid list only comes with retries,
 * which can afford a linear pass. */
static int
r2_draw(const struct r2_state *st, const struct lb_bal_server *servers, uint64_t x,
        const int *avoid, size_t navoid, int exclude)
{
    uint64_t total = 0, r, w_ex = 0;

    if (navoid == 0) {
        /* The weight as the prefix sums know it, so the cut is exact. */
        if (exclude >= 0)
            w_ex = st->cum[exclude] - (exclude > 0 ? st->cum[exclude - 1] : 0);
        if (st->total == w_ex)
            return -1;
        r = lb_bal_reduce(x, st->total - w_ex);
        if (exclude >= 0 && r >= st->cum[exclude] - w_ex)
            r += w_ex;
        return r2_search(st, r);
    }

    for (size_t i = 0; i < st->n; i++)
        if ((int)i != exclude && !lb_bal_avoided((int)i, avoid, navoid))
            total += servers[i].weight;
    if (total == 0)
        return -1;
    r = lb_bal_reduce(x, total);
    for (size_t i = 0; i < st->n; i++) {
        if ((int)i == exclude || lb_bal_avoided((int)i, avoid, navoid))
            continue;
        if (r < servers[i].weight)
            return (int)i;
        r -= servers[i].weight;
    }
    return -1; /* not reached: r < total */
}

static int
r2_pick(void *p, const struct lb_bal_server *servers, size_t n, uint64_t key, const int *avoid,
        size_t navoid)
{
    struct r2_state *st = p;
    uint64_t a, b, wa, wb;
    int c1, c2;

    /* The prefix sums describe the array given to update(); a caller whose
     * array no longer matches gets a plain answer rather than a wrong index. */
    if (n != st->n || st->total == 0)
        return lb_bal_fallback(servers, n, avoid, navoid);
    if (navoid > 0 && lb_bal_all_avoided(servers, n, avoid, navoid))
        navoid = 0;

    c1 = r2_draw(st, servers, key, avoid, navoid, -1);
    if (c1 < 0)
        return lb_bal_fallback(servers, n, avoid, navoid);
    /* Drawing the second among the others is exactly "redraw until it
     * differs", without the loop. */
    c2 = r2_draw(st, servers, r2_mix(key), avoid, navoid, c1);
    if (c2 < 0)
        return c1;

    /* Compare active / weight by cross-multiplying; ties keep the first draw,
     * which alone is weighted, so an idle pool still splits by weight. */
    a = lb_bal_active(&servers[c1]);
    b = lb_bal_active(&servers[c2]);
    wa = servers[c1].weight;
    wb = servers[c2].weight;
    return b * wa < a * wb ? c2 : c1;
}

const struct lb_balance_ops lb_balance_random2 = {
    .name = "random2",
    .create = r2_create,
    .destroy = r2_destroy,
    .update = r2_update,
    .pick = r2_pick,
};
