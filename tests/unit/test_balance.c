/*
 * Unit tests for the balancing algorithms (lb/balance.h): the exact nginx
 * sequence for smooth weighted round robin, least-connections choices and tie
 * spreading, the weighting and load preference of power-of-two choices, the
 * spread and the stability under membership changes of the consistent hash
 * ring and of Maglev, and the avoid-list contract shared by all of them. The
 * random keys come from a seeded xorshift, so every run checks the same
 * numbers and the bounds can be tight.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* cmocka.h needs these three first; keep clang-format from sorting it up. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include "lb/balance.h"

#define MAXS 64
#define NKEYS 100000

struct pool {
    size_t n;
    struct lb_bal_server s[MAXS];
    atomic_uint active[MAXS];
};

struct bal {
    const struct lb_balance_ops *ops;
    void *st;
};

static const enum lb_balance_alg all_algs[] = {LB_BAL_ROUNDROBIN,  LB_BAL_LEASTCONN, LB_BAL_RANDOM2,
                                               LB_BAL_SOURCE_HASH, LB_BAL_URI_HASH,  LB_BAL_MAGLEV};
static const enum lb_balance_alg hash_algs[] = {LB_BAL_SOURCE_HASH, LB_BAL_URI_HASH, LB_BAL_MAGLEV};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* xorshift64*: the test's only source of keys, seeded per test. */
static uint64_t
rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static uint64_t
server_id(size_t i)
{
    char name[32];
    int len = snprintf(name, sizeof(name), "web%zu", i);

    return lb_hash64(name, (size_t)len);
}

static void
pool_init(struct pool *p, const uint32_t *weights, size_t n)
{
    assert_true(n <= MAXS);
    memset(p, 0, sizeof(*p));
    p->n = n;
    for (size_t i = 0; i < n; i++) {
        atomic_init(&p->active[i], 0);
        p->s[i].weight = weights[i];
        p->s[i].id_hash = server_id(i);
        p->s[i].active = &p->active[i];
    }
}

static void
set_active(struct pool *p, size_t i, unsigned v)
{
    atomic_store(&p->active[i], v);
}

static struct bal
bal_new(enum lb_balance_alg alg, const struct pool *p)
{
    struct bal b = {.ops = lb_balance_ops_by_alg(alg)};

    assert_non_null(b.ops);
    b.st = b.ops->create(p->n);
    assert_non_null(b.st);
    assert_int_equal(b.ops->update(b.st, p->s, p->n), 0);
    return b;
}

static void
bal_update(struct bal *b, const struct pool *p)
{
    assert_int_equal(b->ops->update(b->st, p->s, p->n), 0);
}

static void
bal_free(struct bal *b)
{
    b->ops->destroy(b->st);
}

static int
pick(struct bal *b, const struct pool *p, uint64_t key)
{
    return b->ops->pick(b->st, p->s, p->n, key, NULL, 0);
}

static int
pick_avoid(struct bal *b, const struct pool *p, uint64_t key, const int *avoid, size_t navoid)
{
    return b->ops->pick(b->st, p->s, p->n, key, avoid, navoid);
}

static uint32_t
total_weight(const struct pool *p)
{
    uint32_t t = 0;

    for (size_t i = 0; i < p->n; i++)
        t += p->s[i].weight;
    return t;
}

/* ---- registry and hash ---- */

static void
test_names(void **state)
{
    static const char *const names[] = {"roundrobin",  "leastconn", "random2",
                                        "source_hash", "uri_hash",  "maglev"};
    static const char *const bad[] = {"", "RoundRobin", "round", "maglev2", "hash", "random"};

    assert_int_equal(ARRAY_LEN(names), LB_BAL_COUNT);
    for (int i = 0; i < LB_BAL_COUNT; i++) {
        const struct lb_balance_ops *ops = lb_balance_ops_by_alg((enum lb_balance_alg)i);

        assert_int_equal(lb_balance_alg_by_name(names[i]), i);
        assert_string_equal(lb_balance_alg_name((enum lb_balance_alg)i), names[i]);
        assert_non_null(ops);
        assert_string_equal(ops->name, names[i]);
        assert_non_null(ops->create);
        assert_non_null(ops->destroy);
        assert_non_null(ops->update);
        assert_non_null(ops->pick);
    }
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_int_equal(lb_balance_alg_by_name(bad[i]), -1);
    assert_int_equal(lb_balance_alg_by_name(NULL), -1);
    assert_null(lb_balance_ops_by_alg(LB_BAL_COUNT));
    assert_null(lb_balance_alg_name(LB_BAL_COUNT));
    assert_null(lb_balance_ops_by_alg((enum lb_balance_alg) - 1));
}

static void
test_hash64_vectors(void **state)
{
    /* FNV-1a 64 then murmur3 fmix64, computed independently. */
    static const struct {
        const char *in;
        uint64_t out;
    } v[] = {
        {"", 0xefd01f60ba992926ULL},
        {"a", 0x82a2a958a9bece5bULL},
        {"10.0.0.1", 0xc879e56ddc6c5c88ULL},
        {"/index.html", 0x43f3e2a1af9f1352ULL},
    };

    for (size_t i = 0; i < ARRAY_LEN(v); i++)
        assert_int_equal(lb_hash64(v[i].in, strlen(v[i].in)), v[i].out);
}

/* ---- roundrobin ---- */

static void
test_rr_nginx_sequence(void **state)
{
    static const uint32_t w[] = {5, 1, 1};
    static const int seq[] = {0, 0, 1, 0, 2, 0, 0}; /* a a b a c a a */
    struct pool p;
    struct bal b;

    pool_init(&p, w, 3);
    b = bal_new(LB_BAL_ROUNDROBIN, &p);
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < ARRAY_LEN(seq); i++)
            assert_int_equal(pick(&b, &p, 0), seq[i]);
    bal_free(&b);
}

static void
test_rr_proportions(void **state)
{
    static const struct {
        size_t n;
        uint32_t w[8];
    } cases[] = {
        {3, {1, 1, 1}}, {5, {3, 2, 1, 0, 4}},    {2, {10, 1}}, {4, {1, 0, 0, 7}}, {3, {100, 1, 50}},
        {1, {9}},       {6, {0, 2, 2, 0, 3, 1}},
    };

    for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
        struct pool p;
        struct bal b;
        uint32_t sum;

        pool_init(&p, cases[c].w, cases[c].n);
        b = bal_new(LB_BAL_ROUNDROBIN, &p);
        sum = total_weight(&p);
        /* Every window of sum(weights) picks holds each server exactly its
         * weight times, not just on average. */
        for (int period = 0; period < 5; period++) {
            unsigned cnt[MAXS] = {0};

            for (uint32_t k = 0; k < sum; k++) {
                int s = pick(&b, &p, 0);

                assert_in_range(s, 0, (int)p.n - 1);
                cnt[s]++;
            }
            for (size_t i = 0; i < p.n; i++)
                assert_int_equal(cnt[i], cases[c].w[i]);
        }
        bal_free(&b);
    }
}

static void
test_rr_equal_weights_cycle(void **state)
{
    static const uint32_t w[] = {2, 2, 2, 2};
    struct pool p;
    struct bal b;

    pool_init(&p, w, 4);
    b = bal_new(LB_BAL_ROUNDROBIN, &p);
    for (int k = 0; k < 20; k++)
        assert_int_equal(pick(&b, &p, 0), k % 4);
    bal_free(&b);
}

static void
test_rr_rebuild(void **state)
{
    static const uint32_t w1[] = {5, 1, 1};
    static const uint32_t w2[] = {1, 0, 3};
    static const int seq2[] = {2, 0, 2, 2}; /* nginx on 1,0,3 */
    struct pool p;
    struct bal b;

    pool_init(&p, w1, 3);
    b = bal_new(LB_BAL_ROUNDROBIN, &p);
    (void)pick(&b, &p, 0);
    (void)pick(&b, &p, 0);
    for (size_t i = 0; i < 3; i++)
        p.s[i].weight = w2[i];
    bal_update(&b, &p);
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < ARRAY_LEN(seq2); i++)
            assert_int_equal(pick(&b, &p, 0), seq2[i]);
    bal_free(&b);
}

/* ---- leastconn ---- */

static void
test_lc_picks_min(void **state)
{
    /* active -1 stands for a NULL counter. */
    static const struct {
        size_t n;
        uint32_t w[4];
        int64_t a[4];
        int want;
    } cases[] = {
        {3, {1, 1, 1}, {5, 2, 7}, 1},
        {3, {1, 1, 1}, {0, 0, 1}, 0},
        {2, {3, 1}, {4, 1}, 0}, /* 5/3 < 2/1 */
        {2, {3, 1}, {6, 1}, 1}, /* 7/3 > 2/1 */
        {3, {1, 0, 1}, {9, 0, 8}, 2},
        {3, {2, 4, 8}, {3, 6, 15}, 1}, /* 2, 1.75, 2 */
        {4, {1, 1, 1, 1}, {3, 3, 3, 2}, 3},
        {2, {1, 1}, {-1, 3}, 0},
        {2, {1, 1}, {3, -1}, 1},
        /* Near the limits of both types: (4e9 + 1) / 4e9 > 1 / 1. */
        {2, {4000000000u, 1}, {4000000000, 0}, 1},
        {2, {4000000000u, 1}, {3999999998, 0}, 0},
        {2, {UINT32_MAX, UINT32_MAX}, {UINT32_MAX, UINT32_MAX - 1}, 1},
    };

    for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
        struct pool p;
        struct bal b;

        pool_init(&p, cases[c].w, cases[c].n);
        for (size_t i = 0; i < p.n; i++) {
            if (cases[c].a[i] < 0)
                p.s[i].active = NULL;
            else
                set_active(&p, i, (unsigned)cases[c].a[i]);
        }
        b = bal_new(LB_BAL_LEASTCONN, &p);
        assert_int_equal(pick(&b, &p, 0), cases[c].want);
        bal_free(&b);
    }
}

/* Is s among the servers with the least (active + 1) / weight? */
static int
lc_is_min(const struct pool *p, int s)
{
    uint64_t as = atomic_load(&p->active[s]) + 1ULL, ws = p->s[s].weight;

    for (size_t i = 0; i < p->n; i++) {
        uint64_t ai = atomic_load(&p->active[i]) + 1ULL, wi = p->s[i].weight;

        if (wi > 0 && ai * ws < as * wi)
            return 0;
    }
    return 1;
}

static void
test_lc_weights_respected(void **state)
{
    static const uint32_t w[] = {3, 1, 2, 0};
    struct pool p;
    struct bal b;
    uint64_t rng = 42;

    pool_init(&p, w, 4);
    b = bal_new(LB_BAL_LEASTCONN, &p);
    /* Connections that never close: the greedy choice is D'Hondt's, which at
     * a multiple of the weight sum gives exactly proportional counts. */
    for (int k = 0; k < 600; k++) {
        int s = pick(&b, &p, 0);

        assert_true(lc_is_min(&p, s));
        atomic_fetch_add(&p.active[s], 1);
    }
    assert_int_equal(atomic_load(&p.active[0]), 300);
    assert_int_equal(atomic_load(&p.active[1]), 100);
    assert_int_equal(atomic_load(&p.active[2]), 200);
    assert_int_equal(atomic_load(&p.active[3]), 0);

    /* Now with connections closing at random: still always a minimum. */
    for (int k = 0; k < 5000; k++) {
        int s;

        if (rng_next(&rng) % 2) {
            size_t c = rng_next(&rng) % 3;

            if (atomic_load(&p.active[c]) > 0)
                atomic_fetch_sub(&p.active[c], 1);
        }
        s = pick(&b, &p, 0);
        assert_in_range(s, 0, 2);
        assert_true(lc_is_min(&p, s));
        atomic_fetch_add(&p.active[s], 1);
    }
    bal_free(&b);
}

static void
test_lc_ties_spread(void **state)
{
    static const uint32_t w[] = {1, 1, 1, 1};
    static const uint32_t w2[] = {2, 2, 1, 1};
    struct pool p;
    struct bal b;

    /* No counters at all: every server ties, so they must take turns. */
    pool_init(&p, w, 4);
    for (size_t i = 0; i < 4; i++)
        p.s[i].active = NULL;
    b = bal_new(LB_BAL_LEASTCONN, &p);
    for (int k = 0; k < 12; k++)
        assert_int_equal(pick(&b, &p, 0), k % 4);
    bal_free(&b);

    /* Ties in ratio, not in count: (1+1)/2 == (0+1)/1. */
    pool_init(&p, w2, 4);
    set_active(&p, 0, 1);
    set_active(&p, 1, 1);
    b = bal_new(LB_BAL_LEASTCONN, &p);
    for (int k = 0; k < 12; k++)
        assert_int_equal(pick(&b, &p, 0), k % 4);
    bal_free(&b);
}

/* ---- random2 ---- */

static void
test_r2_distribution(void **state)
{
    static const uint32_t w[] = {1, 2, 3, 4, 0, 10};
    enum { PICKS = 200000 };
    struct pool p;
    struct bal b;
    unsigned cnt[MAXS] = {0};
    uint64_t rng = 0x9e3779b97f4a7c15ULL;

    /* Idle pool: the two draws tie on load, so the weighted first draw wins. */
    pool_init(&p, w, 6);
    b = bal_new(LB_BAL_RANDOM2, &p);
    for (int k = 0; k < PICKS; k++)
        cnt[pick(&b, &p, rng_next(&rng))]++;
    for (size_t i = 0; i < p.n; i++) {
        double want = (double)PICKS * w[i] / total_weight(&p);

        /* 3% is over three standard deviations for the lightest server. */
        assert_true(cnt[i] >= want * 0.97 && cnt[i] <= want * 1.03);
    }
    assert_int_equal(cnt[4], 0);
    bal_free(&b);
}

static void
test_r2_prefers_less_loaded(void **state)
{
    /* Two usable servers: the pair is always both, so the less loaded per
     * unit of weight must win every time. */
    static const struct {
        uint32_t w[2];
        unsigned a[2];
        int want;
    } pairs[] = {
        {{1, 1}, {5, 3}, 1}, {{1, 1}, {3, 5}, 0},  {{3, 1}, {5, 2}, 0},
        {{3, 1}, {7, 2}, 1}, {{1, 9}, {1, 10}, 0}, {{1, 9}, {2, 10}, 1},
    };
    static const uint32_t w3[] = {1, 1, 1};
    struct pool p;
    struct bal b;
    uint64_t rng = 7;

    for (size_t c = 0; c < ARRAY_LEN(pairs); c++) {
        pool_init(&p, pairs[c].w, 2);
        set_active(&p, 0, pairs[c].a[0]);
        set_active(&p, 1, pairs[c].a[1]);
        b = bal_new(LB_BAL_RANDOM2, &p);
        for (int k = 0; k < 2000; k++)
            assert_int_equal(pick(&b, &p, rng_next(&rng)), pairs[c].want);
        bal_free(&b);
    }

    /* Three equal servers loaded 0, 1, 2: uniform distinct pairs make the
     * idlest win 2/3 of the time, the middle one 1/3, the busiest never. */
    {
        enum { PICKS = 90000 };
        unsigned cnt[3] = {0};

        pool_init(&p, w3, 3);
        set_active(&p, 1, 1);
        set_active(&p, 2, 2);
        b = bal_new(LB_BAL_RANDOM2, &p);
        for (int k = 0; k < PICKS; k++)
            cnt[pick(&b, &p, rng_next(&rng))]++;
        assert_int_equal(cnt[2], 0);
        assert_in_range(cnt[0], 59000, 61000);
        assert_in_range(cnt[1], 29000, 31000);
        bal_free(&b);
    }
}

static void
test_r2_never_busiest(void **state)
{
    struct pool p;
    uint32_t w[8];
    uint64_t rng = 12345;

    /* Random pools: the server with the unique highest active/weight is never
     * chosen while another is usable, since the two draws are distinct. */
    for (int round = 0; round < 200; round++) {
        struct bal b;
        int busiest = -1, unique = 1;

        for (size_t i = 0; i < 8; i++)
            w[i] = (uint32_t)(rng_next(&rng) % 5); /* some weight 0 */
        w[round % 8] = 1 + (uint32_t)(rng_next(&rng) % 4);
        w[(round + 3) % 8] = 1 + (uint32_t)(rng_next(&rng) % 4);
        pool_init(&p, w, 8);
        for (size_t i = 0; i < 8; i++)
            set_active(&p, i, (unsigned)(rng_next(&rng) % 50));
        for (size_t i = 0; i < 8; i++) {
            uint64_t ai, wi, ab, wb;

            if (w[i] == 0)
                continue;
            if (busiest < 0) {
                busiest = (int)i;
                continue;
            }
            ai = atomic_load(&p.active[i]);
            wi = w[i];
            ab = atomic_load(&p.active[busiest]);
            wb = w[busiest];
            if (ai * wb > ab * wi) {
                busiest = (int)i;
                unique = 1;
            } else if (ai * wb == ab * wi) {
                unique = 0;
            }
        }
        b = bal_new(LB_BAL_RANDOM2, &p);
        for (int k = 0; k < 500; k++) {
            int s = pick(&b, &p, rng_next(&rng));

            assert_in_range(s, 0, 7);
            assert_true(w[s] > 0);
            if (unique)
                assert_int_not_equal(s, busiest);
        }
        bal_free(&b);
    }
}

/* ---- consistent hashing and maglev ---- */

static void
map_keys(struct bal *b, const struct pool *p, const uint64_t *keys, int *out, size_t nkeys)
{
    for (size_t k = 0; k < nkeys; k++) {
        out[k] = pick(b, p, keys[k]);
        assert_in_range(out[k], 0, (int)p->n - 1);
    }
}

static uint64_t *
make_keys(uint64_t seed)
{
    uint64_t *keys = malloc(NKEYS * sizeof(*keys));

    assert_non_null(keys);
    for (size_t k = 0; k < NKEYS; k++)
        keys[k] = rng_next(&seed);
    return keys;
}

static void
test_hash_stable(void **state)
{
    static const uint32_t w[] = {1, 2, 1, 3, 1, 0, 2};
    uint64_t *keys = make_keys(99);
    int *m1 = malloc(NKEYS * sizeof(int)), *m2 = malloc(NKEYS * sizeof(int));

    assert_non_null(m1);
    assert_non_null(m2);
    for (size_t a = 0; a < ARRAY_LEN(hash_algs); a++) {
        struct pool p, rev;
        struct bal b1, b2, b3;

        pool_init(&p, w, ARRAY_LEN(w));
        b1 = bal_new(hash_algs[a], &p);
        b2 = bal_new(hash_algs[a], &p); /* another worker's instance */
        map_keys(&b1, &p, keys, m1, NKEYS);
        map_keys(&b2, &p, keys, m2, NKEYS);
        assert_memory_equal(m1, m2, NKEYS * sizeof(int));
        map_keys(&b1, &p, keys, m2, NKEYS); /* same instance, again */
        assert_memory_equal(m1, m2, NKEYS * sizeof(int));
        bal_update(&b1, &p); /* a rebuild with nothing changed */
        map_keys(&b1, &p, keys, m2, NKEYS);
        assert_memory_equal(m1, m2, NKEYS * sizeof(int));

        /* The same servers listed in reverse order map each key to the same
         * server (by name), so a reload that reorders changes nothing. */
        memset(&rev, 0, sizeof(rev));
        rev.n = p.n;
        for (size_t i = 0; i < p.n; i++) {
            rev.s[i] = p.s[p.n - 1 - i];
            rev.s[i].active = NULL;
        }
        b3 = bal_new(hash_algs[a], &rev);
        map_keys(&b3, &rev, keys, m2, NKEYS);
        for (size_t k = 0; k < NKEYS; k++)
            assert_int_equal(m2[k], (int)p.n - 1 - m1[k]);
        bal_free(&b1);
        bal_free(&b2);
        bal_free(&b3);
    }
    free(m1);
    free(m2);
    free(keys);
}

static void
test_hash_distribution(void **state)
{
    static const struct {
        size_t n;
        uint32_t w[12];
        int string_keys; /* hash client addresses instead of random keys */
    } cases[] = {
        {10, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 0},
        {10, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 1},
        {4, {1, 2, 3, 4}, 0},
        {5, {5, 1, 1, 0, 3}, 1},
        {3, {1, 1, 1}, 0},
    };
    uint64_t *keys = make_keys(2024);
    uint64_t *addr_keys = malloc(NKEYS * sizeof(*addr_keys));

    assert_non_null(addr_keys);
    for (size_t k = 0; k < NKEYS; k++) {
        char ip[32];
        int len = snprintf(ip, sizeof(ip), "10.%zu.%zu.%zu", k >> 16, (k >> 8) & 255, k & 255);

        addr_keys[k] = lb_hash64(ip, (size_t)len);
    }

    for (size_t a = 0; a < ARRAY_LEN(hash_algs); a++) {
        for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
            const uint64_t *kk = cases[c].string_keys ? addr_keys : keys;
            unsigned cnt[MAXS] = {0};
            struct pool p;
            struct bal b;

            pool_init(&p, cases[c].w, cases[c].n);
            b = bal_new(hash_algs[a], &p);
            for (size_t k = 0; k < NKEYS; k++)
                cnt[pick(&b, &p, kk[k])]++;
            for (size_t i = 0; i < p.n; i++) {
                double want = (double)NKEYS * cases[c].w[i] / total_weight(&p);

                if (cnt[i] < want * 0.90 || cnt[i] > want * 1.10)
                    fail_msg("%s case %zu server %zu: %u keys, want %.0f +-10%%", b.ops->name, c, i,
                             cnt[i], want);
            }
            bal_free(&b);
        }
    }
    free(addr_keys);
    free(keys);
}

/* Moves after taking server `gone` out (weight 0) of ten equal servers. */
static void
check_remove(enum lb_balance_alg alg, size_t gone, const uint64_t *keys, int *before, int *after)
{
    static const uint32_t w[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    struct pool p;
    struct bal b;
    size_t owned = 0, moved = 0, stolen = 0;

    pool_init(&p, w, 10);
    b = bal_new(alg, &p);
    map_keys(&b, &p, keys, before, NKEYS);
    p.s[gone].weight = 0;
    bal_update(&b, &p);
    map_keys(&b, &p, keys, after, NKEYS);
    for (size_t k = 0; k < NKEYS; k++) {
        assert_int_not_equal(after[k], (int)gone);
        if (before[k] == (int)gone)
            owned++;
        else if (after[k] != before[k])
            stolen++; /* moved between two surviving servers */
        if (after[k] != before[k])
            moved++;
    }
    if (alg == LB_BAL_MAGLEV) {
        /* The paper's table is not minimally disruptive, but close: allow
         * 1% of keys moving between survivors (about 0.2% do), on top of the
         * 1/N that must. */
        assert_true(stolen < NKEYS / 100);
        assert_true(moved < NKEYS / 10 + NKEYS / 100);
    } else {
        assert_int_equal(stolen, 0);
        assert_int_equal(moved, owned);
    }
    bal_free(&b);
}

static void
test_hash_remove(void **state)
{
    uint64_t *keys = make_keys(31337);
    int *before = malloc(NKEYS * sizeof(int)), *after = malloc(NKEYS * sizeof(int));

    assert_non_null(before);
    assert_non_null(after);
    for (size_t a = 0; a < ARRAY_LEN(hash_algs); a++)
        for (size_t gone = 0; gone < 10; gone++)
            check_remove(hash_algs[a], gone, keys, before, after);
    free(before);
    free(after);
    free(keys);
}

static void
test_hash_add(void **state)
{
    static const uint32_t w[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    uint64_t *keys = make_keys(4711);
    int *before = malloc(NKEYS * sizeof(int)), *after = malloc(NKEYS * sizeof(int));

    assert_non_null(before);
    assert_non_null(after);
    for (size_t a = 0; a < ARRAY_LEN(hash_algs); a++) {
        struct pool p;
        struct bal b;
        size_t moved = 0, stolen = 0;

        pool_init(&p, w, 10);
        b = bal_new(hash_algs[a], &p);
        map_keys(&b, &p, keys, before, NKEYS);
        pool_init(&p, w, 11); /* a scale-out appends web10 */
        bal_update(&b, &p);
        map_keys(&b, &p, keys, after, NKEYS);
        for (size_t k = 0; k < NKEYS; k++) {
            if (after[k] == before[k])
                continue;
            moved++;
            if (after[k] != 10)
                stolen++;
        }
        /* 1/11 of the keys is 9091. */
        if (hash_algs[a] == LB_BAL_MAGLEV) {
            assert_true(stolen < NKEYS / 100);
            assert_true(moved < NKEYS / 11 + NKEYS / 100);
        } else {
            assert_int_equal(stolen, 0);
            assert_true(moved < NKEYS / 11 + NKEYS / 100);
        }
        assert_true(moved > NKEYS / 11 - NKEYS / 100);
        bal_free(&b);
    }
    free(before);
    free(after);
    free(keys);
}

static void
test_chash_weight_changes(void **state)
{
    static const uint32_t w[] = {1, 2, 3, 4};
    uint64_t *keys = make_keys(5);
    int *before = malloc(NKEYS * sizeof(int)), *after = malloc(NKEYS * sizeof(int));
    struct pool p;
    struct bal b;
    size_t gained = 0;

    assert_non_null(before);
    assert_non_null(after);
    pool_init(&p, w, 4);
    b = bal_new(LB_BAL_URI_HASH, &p);

    /* A heavier server only attracts keys: its extra points are new ones. */
    map_keys(&b, &p, keys, before, NKEYS);
    p.s[1].weight = 4;
    bal_update(&b, &p);
    map_keys(&b, &p, keys, after, NKEYS);
    for (size_t k = 0; k < NKEYS; k++) {
        if (after[k] != before[k]) {
            assert_int_equal(after[k], 1);
            gained++;
        }
    }
    /* From 2/10 to 4/12 of the ring: about 13% of keys. */
    assert_in_range(gained, NKEYS * 10 / 100, NKEYS * 17 / 100);

    /* Weighted removal: survivors keep every key. */
    memcpy(before, after, NKEYS * sizeof(int));
    p.s[2].weight = 0;
    bal_update(&b, &p);
    map_keys(&b, &p, keys, after, NKEYS);
    for (size_t k = 0; k < NKEYS; k++)
        if (before[k] != 2)
            assert_int_equal(after[k], before[k]);
    bal_free(&b);
    free(before);
    free(after);
    free(keys);
}

static void
test_chash_heavy_weights(void **state)
{
    static const uint32_t w[] = {100, 100, 100, 100, 100, 100, 100, 100, 100, 100};
    uint64_t *keys = make_keys(6);
    int *before = malloc(NKEYS * sizeof(int)), *after = malloc(NKEYS * sizeof(int));
    unsigned cnt[MAXS] = {0};
    size_t stolen = 0;
    struct pool p;
    struct bal b;

    /* A total weight of 1000 does not fit the ring at 1000 points per unit:
     * weights are scaled down together, so the spread stays right... */
    assert_non_null(before);
    assert_non_null(after);
    pool_init(&p, w, 10);
    b = bal_new(LB_BAL_SOURCE_HASH, &p);
    map_keys(&b, &p, keys, before, NKEYS);
    for (size_t k = 0; k < NKEYS; k++)
        cnt[before[k]]++;
    for (size_t i = 0; i < 10; i++)
        assert_in_range(cnt[i], NKEYS / 10 * 95 / 100, NKEYS / 10 * 105 / 100);

    /* ...but a removal rescales the others too and moves some of their keys:
     * fewer than the removed server's own share. */
    p.s[4].weight = 0;
    bal_update(&b, &p);
    map_keys(&b, &p, keys, after, NKEYS);
    for (size_t k = 0; k < NKEYS; k++) {
        assert_int_not_equal(after[k], 4);
        stolen += before[k] != 4 && after[k] != before[k];
    }
    assert_true(stolen < NKEYS / 10);
    bal_free(&b);
    free(before);
    free(after);
    free(keys);
}

static void
test_maglev_wide_table(void **state)
{
    /* More servers than 16-bit slots can name: the table widens. */
    enum { N = 70000 };
    struct lb_bal_server *s = calloc(N, sizeof(*s));
    const struct lb_balance_ops *ops = lb_balance_ops_by_alg(LB_BAL_MAGLEV);
    unsigned char *seen = calloc(N, 1);
    uint64_t rng = 1;
    size_t distinct = 0;
    void *st;

    assert_non_null(s);
    assert_non_null(seen);
    for (size_t i = 0; i < N; i++) {
        s[i].weight = i % 7 == 3 ? 0 : 1;
        s[i].id_hash = server_id(i);
    }
    st = ops->create(N);
    assert_non_null(st);
    assert_int_equal(ops->update(st, s, N), 0);
    for (int k = 0; k < 200000; k++) {
        int r = ops->pick(st, s, N, rng_next(&rng), NULL, 0);

        assert_in_range(r, 0, N - 1);
        assert_int_equal(s[r].weight, 1);
        distinct += !seen[r];
        seen[r] = 1;
    }
    /* 60000 usable servers, 200000 keys: nearly all of them get some. */
    assert_true(distinct > 57000);
    ops->destroy(st);
    free(seen);
    free(s);
}

/* ---- avoid list, for every algorithm ---- */

static int
in_list(int s, const int *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == s)
            return 1;
    return 0;
}

static void
test_avoid_all_algs(void **state)
{
    static const uint32_t w[] = {1, 2, 0, 3, 1};
    static const struct {
        size_t navoid;
        int avoid[6];
        int only;    /* the one acceptable answer, or -1 if several */
        int ignored; /* every usable server avoided: the list is ignored */
    } cases[] = {
        {1, {1}, -1, 0},          {1, {3}, -1, 0},
        {2, {0, 4}, -1, 0},       {3, {0, 1, 3}, 4, 0},
        {3, {4, 3, 1}, 0, 0},     {4, {4, 4, 1, 3}, 0, 0}, /* duplicates */
        {4, {0, 1, 3, 4}, -1, 1}, {5, {4, 3, 2, 1, 0}, -1, 1},
        {1, {2}, -1, 0},         /* weight 0 anyway */
        {3, {99, -1, 0}, -1, 0}, /* out of range entries are harmless */
    };
    uint64_t rng = 77;

    for (size_t a = 0; a < ARRAY_LEN(all_algs); a++) {
        for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
            struct pool p;
            struct bal b;

            pool_init(&p, w, 5);
            /* Load the servers unevenly so leastconn and random2 would rather
             * pick the avoided ones. */
            for (size_t i = 0; i < 5; i++)
                set_active(&p, i, in_list((int)i, cases[c].avoid, cases[c].navoid) ? 0 : 9);
            b = bal_new(all_algs[a], &p);
            for (int k = 0; k < 3000; k++) {
                uint64_t key = rng_next(&rng);
                int s = pick_avoid(&b, &p, key, cases[c].avoid, cases[c].navoid);

                if (s < 0 || s >= 5 || w[s] == 0)
                    fail_msg("%s case %zu: picked %d", b.ops->name, c, s);
                if (!cases[c].ignored && in_list(s, cases[c].avoid, cases[c].navoid))
                    fail_msg("%s case %zu: picked avoided %d", b.ops->name, c, s);
                if (cases[c].only >= 0 && s != cases[c].only)
                    fail_msg("%s case %zu: picked %d, want %d", b.ops->name, c, s, cases[c].only);
                /* Ignoring the list means answering as if there were none, not
                 * falling back to some fixed server; the stateless algorithms
                 * show it by giving the key its usual server. */
                if (cases[c].ignored && all_algs[a] != LB_BAL_ROUNDROBIN &&
                    all_algs[a] != LB_BAL_LEASTCONN)
                    assert_int_equal(s, pick(&b, &p, key));
            }
            bal_free(&b);
        }
    }
}

static void
test_avoid_hash_consistency(void **state)
{
    static const uint32_t w[] = {1, 1, 1, 1, 1, 1};
    uint64_t *keys = make_keys(8);
    int *plain = malloc(NKEYS * sizeof(int)), *without = malloc(NKEYS * sizeof(int));

    assert_non_null(plain);
    assert_non_null(without);
    for (size_t a = 0; a < ARRAY_LEN(hash_algs); a++) {
        const int avoid[] = {2};
        struct pool p, p2;
        struct bal b, b2;
        unsigned cnt[MAXS] = {0};

        pool_init(&p, w, 6);
        b = bal_new(hash_algs[a], &p);
        map_keys(&b, &p, keys, plain, NKEYS);
        p2 = p;
        p2.s[2].weight = 0;
        b2 = bal_new(hash_algs[a], &p2);
        map_keys(&b2, &p2, keys, without, NKEYS);
        for (size_t k = 0; k < NKEYS; k++) {
            int s = pick_avoid(&b, &p, keys[k], avoid, 1);

            /* A retry only moves the keys of the avoided server... */
            if (plain[k] != 2)
                assert_int_equal(s, plain[k]);
            /* ...and, on the ring, exactly to where removing it would. */
            else if (hash_algs[a] != LB_BAL_MAGLEV)
                assert_int_equal(s, without[k]);
            assert_int_not_equal(s, 2);
            cnt[s]++;
        }
        /* The avoided server's keys spread over the others rather than all
         * landing on one neighbour: each survivor stays within 1/5 +- 3%. */
        for (size_t i = 0; i < 6; i++)
            if (i != 2)
                assert_in_range(cnt[i], NKEYS * 17 / 100, NKEYS * 23 / 100);
        bal_free(&b);
        bal_free(&b2);
    }
    free(plain);
    free(without);
    free(keys);
}

/* ---- edge cases and rebuilds, for every algorithm ---- */

static void
test_edges_all_algs(void **state)
{
    static const uint32_t zero[] = {0, 0, 0};
    static const uint32_t one[] = {0, 0, 5, 0};
    static const uint32_t some[] = {0, 3, 0, 1};
    const int avoid[] = {2};
    uint64_t rng = 3;

    for (size_t a = 0; a < ARRAY_LEN(all_algs); a++) {
        struct pool p;
        struct bal b;

        /* Empty pool. */
        pool_init(&p, zero, 0);
        b = bal_new(all_algs[a], &p);
        assert_int_equal(pick(&b, &p, 1), -1);
        assert_int_equal(pick_avoid(&b, &p, 1, avoid, 1), -1);
        bal_free(&b);

        /* Nothing usable. */
        pool_init(&p, zero, 3);
        b = bal_new(all_algs[a], &p);
        for (int k = 0; k < 10; k++) {
            assert_int_equal(pick(&b, &p, rng_next(&rng)), -1);
            assert_int_equal(pick_avoid(&b, &p, rng_next(&rng), avoid, 1), -1);
        }
        bal_free(&b);

        /* One usable server, even when avoided. */
        pool_init(&p, one, 4);
        b = bal_new(all_algs[a], &p);
        for (int k = 0; k < 100; k++) {
            assert_int_equal(pick(&b, &p, rng_next(&rng)), 2);
            assert_int_equal(pick_avoid(&b, &p, rng_next(&rng), avoid, 1), 2);
        }
        bal_free(&b);

        /* Weight 0 is never picked. */
        pool_init(&p, some, 4);
        b = bal_new(all_algs[a], &p);
        for (int k = 0; k < 2000; k++) {
            int s = pick(&b, &p, rng_next(&rng));

            assert_true(s == 1 || s == 3);
        }
        bal_free(&b);

        /* Everything drained to zero, then back. */
        pool_init(&p, some, 4);
        b = bal_new(all_algs[a], &p);
        p.s[1].weight = 0;
        p.s[3].weight = 0;
        bal_update(&b, &p);
        assert_int_equal(pick(&b, &p, rng_next(&rng)), -1);
        p.s[3].weight = 2;
        bal_update(&b, &p);
        assert_int_equal(pick(&b, &p, rng_next(&rng)), 3);
        bal_free(&b);
    }
}

static void
test_rebuild_many_times(void **state)
{
    uint64_t rng = 0xdeadbeef;

    /* Created for 4 servers, then updated with pools that grow and shrink:
     * under ASan this also checks that rebuilds neither leak nor overrun. */
    for (size_t a = 0; a < ARRAY_LEN(all_algs); a++) {
        const struct lb_balance_ops *ops = lb_balance_ops_by_alg(all_algs[a]);
        struct pool p;
        void *st = ops->create(4);

        assert_non_null(st);
        for (int round = 0; round < 60; round++) {
            uint32_t w[MAXS];
            size_t n = rng_next(&rng) % 41;
            int usable = 0;

            for (size_t i = 0; i < n; i++) {
                w[i] = rng_next(&rng) % 3 == 0 ? 0 : (uint32_t)(rng_next(&rng) % 6);
                usable |= w[i] > 0;
            }
            pool_init(&p, w, n);
            assert_int_equal(ops->update(st, p.s, p.n), 0);
            for (int k = 0; k < 200; k++) {
                int avoid[2] = {(int)(rng_next(&rng) % 41), (int)(rng_next(&rng) % 41)};
                int s = ops->pick(st, p.s, p.n, rng_next(&rng), avoid, k % 3);

                if (!usable) {
                    assert_int_equal(s, -1);
                    continue;
                }
                assert_in_range(s, 0, (int)n - 1);
                assert_true(w[s] > 0);
            }
        }
        ops->destroy(st);
    }
}

static void
test_pick_before_update(void **state)
{
    static const uint32_t w[] = {0, 2, 1};

    /* Not the contract, but a worker racing its first update must still get
     * a usable server rather than garbage. */
    for (size_t a = 0; a < ARRAY_LEN(all_algs); a++) {
        const struct lb_balance_ops *ops = lb_balance_ops_by_alg(all_algs[a]);
        struct pool p;
        void *st = ops->create(3);

        pool_init(&p, w, 3);
        assert_non_null(st);
        for (int k = 0; k < 10; k++) {
            int s = ops->pick(st, p.s, p.n, (uint64_t)k * 0x9e3779b97f4a7c15ULL, NULL, 0);

            assert_true(s == 1 || s == 2);
        }
        ops->destroy(st);
    }
}

/* ---- speed, printed only ---- */

static void
test_perf_print(void **state)
{
    static const uint32_t w[] = {1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2};
    enum { PICKS = 2000000 };

    for (size_t a = 0; a < ARRAY_LEN(all_algs); a++) {
        struct pool p;
        struct bal b;
        struct timespec t0, t1;
        uint64_t rng = 11, sink = 0;
        double secs;

        pool_init(&p, w, ARRAY_LEN(w));
        b = bal_new(all_algs[a], &p);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int k = 0; k < PICKS; k++)
            sink += (uint64_t)pick(&b, &p, rng_next(&rng));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        print_message("%-12s %6.1f M picks/s over 20 servers (checksum %llu)\n", b.ops->name,
                      PICKS / secs / 1e6, (unsigned long long)sink);
        bal_free(&b);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_hash64_vectors),
        cmocka_unit_test(test_rr_nginx_sequence),
        cmocka_unit_test(test_rr_proportions),
        cmocka_unit_test(test_rr_equal_weights_cycle),
        cmocka_unit_test(test_rr_rebuild),
        cmocka_unit_test(test_lc_picks_min),
        cmocka_unit_test(test_lc_weights_respected),
        cmocka_unit_test(test_lc_ties_spread),
        cmocka_unit_test(test_r2_distribution),
        cmocka_unit_test(test_r2_prefers_less_loaded),
        cmocka_unit_test(test_r2_never_busiest),
        cmocka_unit_test(test_hash_stable),
        cmocka_unit_test(test_hash_distribution),
        cmocka_unit_test(test_hash_remove),
        cmocka_unit_test(test_hash_add),
        cmocka_unit_test(test_chash_weight_changes),
        cmocka_unit_test(test_chash_heavy_weights),
        cmocka_unit_test(test_maglev_wide_table),
        cmocka_unit_test(test_avoid_all_algs),
        cmocka_unit_test(test_avoid_hash_consistency),
        cmocka_unit_test(test_edges_all_algs),
        cmocka_unit_test(test_rebuild_many_times),
        cmocka_unit_test(test_pick_before_update),
        cmocka_unit_test(test_perf_print),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
