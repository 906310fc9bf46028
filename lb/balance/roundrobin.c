/*
 * Smooth weighted round robin, as nginx does it (ngx_http_upstream_round_robin):
 * on each pick every candidate's current weight grows by its weight, the
 * largest wins and loses the sum of the candidates' weights. Over any window
 * of sum(weights) picks each server gets exactly its weight's share, and the
 * heavy servers are interleaved with the light ones instead of being picked
 * in bursts (5,1,1 gives a a b a c a a, not a a a a a b c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lb/balance.h"
#include "lb/balance/internal.h"

struct rr_state {
    size_t cap;
    /* Signed and 64-bit: a winner drops to about -sum(weights), and weights
     * are 32-bit. */
    int64_t *current;
};

static void *
rr_create(size_t n)
{
    struct rr_state *st = calloc(1, sizeof(*st));

    if (st == NULL)
        return NULL;
    if (n > 0) {
        st->current = calloc(n, sizeof(*st->current));
        if (st->current == NULL) {
            free(st);
            return NULL;
        }
    }
    st->cap = n;
    return st;
}

static void
rr_destroy(void *p)
{
    struct rr_state *st = p;

    if (st == NULL)
        return;
    free(st->current);
    free(st);
}

static int
rr_update(void *p, const struct lb_bal_server *servers, size_t n)
{
    struct rr_state *st = p;

    if (n > st->cap) {
        int64_t *cur = realloc(st->current, n * sizeof(*cur));

        if (cur == NULL)
            return -ENOMEM;
        st->current = cur;
        st->cap = n;
    }
    /* Indices may mean other servers after an update, and old credits would
     * skew the first round; nginx likewise starts a new configuration at 0. */
    if (st->cap > 0)
        memset(st->current, 0, st->cap * sizeof(*st->current));
    return 0;
}

/* One nginx round over the candidates; returns -1 when there is none. */
static int
rr_round(struct rr_state *st, const struct lb_bal_server *servers, size_t n, const int *avoid,
         size_t navoid)
{
    int64_t total = 0;
    int best = -1;

    for (size_t i = 0; i < n; i++) {
        if (servers[i].weight == 0 || lb_bal_avoided((int)i, avoid, navoid))
            continue;
        st->current[i] += servers[i].weight;
        total += servers[i].weight;
        if (best < 0 || st->current[i] > st->current[best])
            best = (int)i;
    }
    if (best >= 0)
        st->current[best] -= total;
    return best;
}

static int
rr_pick(void *p, const struct lb_bal_server *servers, size_t n, uint64_t key, const int *avoid,
        size_t navoid)
{
    struct rr_state *st = p;
    int best;

    if (n > st->cap)
        n = st->cap; /* never index past what update() sized */
    best = rr_round(st, servers, n, avoid, navoid);
    if (best < 0 && navoid > 0)
        best = rr_round(st, servers, n, NULL, 0);
    return best;
}

const struct lb_balance_ops lb_balance_roundrobin = {
    .name = "roundrobin",
    .create = rr_create,
    .destroy = rr_destroy,
    .update = rr_update,
    .pick = rr_pick,
};
