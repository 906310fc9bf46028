/*
 * Consistent hashing on a ring (Karger et al.; the ketama layout), shared by
 * source_hash and uri_hash, which differ only in what the caller hashes into
 * the key. Each server owns CH_POINTS_PER_WEIGHT points per unit of weight,
 * placed by hashing its id_hash with the point's number; a key goes to the
 * owner of the first point at or after it. A server's points depend on nothing
 * but its own id and weight, so taking it out (weight 0) hands only its keys
 * to its ring neighbours, and every survivor keeps every key it had. The ring
 * does not depend on the order of the server array either.
 */
#include <errno.h>
#include <stdlib.h>

#include "lb/balance.h"
#include "lb/balance/internal.h"

/* A server's share of the keys strays from its weight's share by about
 * 1 / sqrt(its points): with 1000 points per unit of weight the largest
 * deviation in a pool of ten is near 6%; with ketama's 160 it is near 15%. */
#define CH_POINTS_PER_WEIGHT 1000
/* 3 MiB of ring. Past this many points (a total weight above 262) weights are
 * scaled down to fit, and then a membership change also moves a few points of
 * the other servers: about as many keys again as the changed server's share. */
#define CH_MAX_POINTS (1u << 18)

struct ch_state {
    size_t npoints;
    uint64_t *hash;  /* sorted ring positions */
    uint32_t *owner; /* owner[i] is the server index of hash[i] */
};

struct ch_point {
    uint64_t hash;
    uint32_t owner;
};

static void *
ch_create(size_t n)
{
    return calloc(1, sizeof(struct ch_state));
}

static void
ch_destroy(void *p)
{
    struct ch_state *st = p;

    if (st == NULL)
        return;
    free(st->hash);
    free(st->owner);
    free(st);
}

static bool
ch_point_less(uint64_t ha, uint32_t oa, uint64_t hb, uint32_t ob)
{
    return ha < hb || (ha == hb && oa < ob);
}

/* Sorts the points by position into hash[] and owner[]. Positions are uniform,
 * so a counting pass on their top bits leaves buckets of a few points each,
 * which insertion sort finishes: linear time, where qsort took 40 ms on a full
 * ring, long enough to stall the worker's event loop doing the update. */
static int
ch_sort(const struct ch_point *pts, size_t np, uint64_t *hash, uint32_t *owner)
{
    unsigned bits = 1;
    size_t nbuckets, *end, lo = 0;

    while (bits < 16 && ((size_t)1 << bits) < np)
        bits++;
    nbuckets = (size_t)1 << bits;
    end = calloc(nbuckets + 1, sizeof(*end));
    if (end == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < np; i++)
        end[(pts[i].hash >> (64 - bits)) + 1]++;
    for (size_t b = 0; b < nbuckets; b++)
        end[b + 1] += end[b];
    /* end[b] starts as the start of bucket b and ends as its end. */
    for (size_t i = 0; i < np; i++) {
        size_t at = end[pts[i].hash >> (64 - bits)]++;

        hash[at] = pts[i].hash;
        owner[at] = pts[i].owner;
    }
    for (size_t b = 0; b < nbuckets; b++) {
        for (size_t i = lo + 1; i < end[b]; i++) {
            uint64_t h = hash[i];
            uint32_t o = owner[i];
            size_t j = i;

            for (; j > lo && ch_point_less(h, o, hash[j - 1], owner[j - 1]); j--) {
                hash[j] = hash[j - 1];
                owner[j] = owner[j - 1];
            }
            hash[j] = h;
            owner[j] = o;
        }
        lo = end[b];
    }
    free(end);
    return 0;
}

static uint64_t
ch_points_for(uint64_t weight, uint64_t total_weight)
{
    uint64_t pts;

    if (weight == 0)
        return 0;
    if (total_weight <= CH_MAX_POINTS / CH_POINTS_PER_WEIGHT)
        return weight * CH_POINTS_PER_WEIGHT;
    pts = (uint64_t)(((unsigned __int128)weight * CH_MAX_POINTS) / total_weight);
    return pts > 0 ? pts : 1;
}

static int
ch_update(void *p, const struct lb_bal_server *servers, size_t n)
{
    struct ch_state *st = p;
    uint64_t total_weight = 0, npoints = 0;
    struct ch_point *pts;
    uint64_t *hash;
    uint32_t *owner;
    size_t k = 0;

    if (n > UINT32_MAX)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        total_weight += servers[i].weight;
    for (size_t i = 0; i < n; i++)
        npoints += ch_points_for(servers[i].weight, total_weight);

    /* Build aside and swap, so a failed update leaves the old ring working. */
    pts = malloc((npoints ? npoints : 1) * sizeof(*pts));
    hash = malloc((npoints ? npoints : 1) * sizeof(*hash));
    owner = malloc((npoints ? npoints : 1) * sizeof(*owner));
    if (pts == NULL || hash == NULL || owner == NULL) {
        free(pts);
        free(hash);
        free(owner);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t np = ch_points_for(servers[i].weight, total_weight);

        /* splitmix64's sequence seeded by the id: replicas are independent
         * of each other and of other servers' replicas. */
        for (uint64_t r = 0; r < np; r++) {
            pts[k].hash = lb_bal_fmix64(servers[i].id_hash + (r + 1) * 0x9e3779b97f4a7c15ULL);
            pts[k].owner = (uint32_t)i;
            k++;
        }
    }
    if (ch_sort(pts, npoints, hash, owner) < 0) {
        free(pts);
        free(hash);
        free(owner);
        return -ENOMEM;
    }
    free(pts);

    free(st->hash);
    free(st->owner);
    st->hash = hash;
    st->owner = owner;
    st->npoints = npoints;
    return 0;
}

/* Index of the first point at or after key, wrapping past the top. */
static size_t
ch_find(const struct ch_state *st, uint64_t key)
{
    size_t lo = 0, hi = st->npoints;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (st->hash[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == st->npoints ? 0 : lo;
}

static int
ch_pick(void *p, const struct lb_bal_server *servers, size_t n, uint64_t key, const int *avoid,
        size_t navoid)
{
    struct ch_state *st = p;
    size_t at;
    uint32_t s;

    if (st->npoints == 0)
        return lb_bal_fallback(servers, n, avoid, navoid);
    at = ch_find(st, key);
    s = st->owner[at];
    if (s < n && servers[s].weight > 0 && !lb_bal_avoided((int)s, avoid, navoid))
        return (int)s;

    /* With the list dropped the key's own point is the answer: start at 0. */
    if (navoid > 0 && lb_bal_all_avoided(servers, n, avoid, navoid))
        navoid = 0;
    /* The next acceptable owner clockwise: the server that would inherit this
     * key if the avoided ones left the ring, so retries stay consistent too. */
    for (size_t k = 0; k < st->npoints; k++) {
        size_t i = at + k < st->npoints ? at + k : at + k - st->npoints;

        s = st->owner[i];
        if (s < n && servers[s].weight > 0 && !lb_bal_avoided((int)s, avoid, navoid))
            return (int)s;
    }
    return lb_bal_fallback(servers, n, avoid, navoid);
}

const struct lb_balance_ops lb_balance_source_hash = {
    .name = "source_hash",
    .create = ch_create,
    .destroy = ch_destroy,
    .update = ch_update,
    .pick = ch_pick,
};

const struct lb_balance_ops lb_balance_uri_hash = {
    .name = "uri_hash",
    .create = ch_create,
    .destroy = ch_destroy,
    .update = ch_update,
    .pick = ch_pick,
};
