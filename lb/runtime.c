/*
 * Runtime state of one configuration generation: the pools and servers the
 * workers balance over, and the control-plane operations on them (see
 * runtime.h). Built on the control thread from an immutable struct conf; its
 * counters and server states are atomics that every thread reads, and only
 * the control thread writes states, weights and new slots.
 */
#include "lb/runtime.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lb/log.h"
#include "lb/tls.h"

const double lb_lat_bounds_ms[LB_LAT_BUCKETS] = {1,   2.5, 5,    10,   25,   50,    100,
                                                 250, 500, 1000, 2500, 5000, 10000, 30000};

void
lb_server_observe(struct lb_server *s, uint64_t us)
{
    int i = 0;
    while (i < LB_LAT_BUCKETS && (double)us > lb_lat_bounds_ms[i] * 1000.0)
        i++;
    atomic_fetch_add_explicit(&s->st.lat[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->st.lat_sum_us, us, memory_order_relaxed);
}

double
lb_lat_quantile(const uint64_t *b, double q)
{
    uint64_t total = 0, cum = 0;
    for (int i = 0; i <= LB_LAT_BUCKETS; i++)
        total += b[i];
    if (total == 0)
        return NAN;
    double rank = q * (double)total;
    for (int i = 0; i <= LB_LAT_BUCKETS; i++) {
        if (b[i] == 0 || (double)(cum + b[i]) < rank) {
            cum += b[i];
            continue;
        }
        double lo = i ? lb_lat_bounds_ms[i - 1] : 0;
        /* The overflow bucket has no upper bound: report its lower one. */
        double hi = i < LB_LAT_BUCKETS ? lb_lat_bounds_ms[i] : lo;
        double f = (rank - (double)cum) / (double)b[i];
        return lo + (hi - lo) * (f < 0 ? 0 : f > 1 ? 1 : f);
    }
    return lb_lat_bounds_ms[LB_LAT_BUCKETS - 1];
}

uint64_t
lb_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *
lb_srv_state_name(int state)
{
    static const char *const names[] = {"ready", "down", "drain", "maint", "removed"};
    return (state >= 0 && state <= LB_SRV_REMOVED) ? names[state] : "?";
}

static void
server_init(struct lb_server *s, char *name, const struct conf_addr *addr, uint32_t weight,
            uint32_t max_conns)
{
    s->name = name;
    s->addr = *addr;
    s->id_hash = lb_hash64(name, strlen(name));
    s->max_connections = max_conns;
    atomic_init(&s->weight, weight);
    atomic_init(&s->state, LB_SRV_UP);
    atomic_init(&s->health, LB_HEALTH_UP);
    atomic_init(&s->ramp, 1000);
}

static int
pool_init(struct lb_pool *p, const struct conf_pool *cp)
{
    p->cf = cp;
    p->ops = lb_balance_ops_by_alg((enum lb_balance_alg)cp->balance);
    if (!p->ops)
        return -1;
    p->capacity = cp->nservers + LB_POOL_SPARE_SLOTS;
    p->servers = calloc(p->capacity, sizeof(*p->servers));
    if (!p->servers)
        return -1;
    for (size_t i = 0; i < cp->nservers; i++) {
        const struct conf_server *cs = &cp->servers[i];
        server_init(&p->servers[i], cs->name, &cs->address, cs->weight, cs->max_connections);
    }
    atomic_init(&p->nservers, cp->nservers);
    return 0;
}

static void
pool_free(struct lb_pool *p)
{
    size_t n = atomic_load(&p->nservers);
    for (size_t i = 0; p->servers && i < n; i++) {
        if (p->servers[i].dynamic) {
            free(p->servers[i].name);
            free(p->servers[i].addr.text);
        }
    }
    free(p->servers);
}

struct lb_snapshot *
lb_snapshot_new(struct conf *c)
{
    struct lb_snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->conf = c;
    s->npools = c->npools;
    s->pools = calloc(c->npools ? c->npools : 1, sizeof(*s->pools));
    if (!s->pools)
        goto fail;
    for (size_t i = 0; i < c->npools; i++) {
        if (pool_init(&s->pools[i], &c->pools[i]) < 0) {
            lb_err("pool %s: cannot set up balancer", c->pools[i].name);
            goto fail;
        }
    }
    atomic_init(&s->refs, 1);
    return s;
fail:
    if (s->pools)
        for (size_t i = 0; i < c->npools; i++)
            pool_free(&s->pools[i]);
    free(s->pools);
    free(s);
    return NULL;
}

void
lb_snapshot_ref(struct lb_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void forward_counters(struct lb_snapshot *gone);

void
lb_snapshot_unref(struct lb_snapshot *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    forward_counters(s);
    for (size_t i = 0; i < s->npools; i++)
        pool_free(&s->pools[i]);
    free(s->pools);
    lb_tls_free(s->tls);
    conf_free(s->conf);
    free(s);
}

/* ---- control plane ---- */

struct lb_pool *
lb_pool_find(struct lb_snapshot *s, const char *name)
{
    for (size_t i = 0; i < s->npools; i++)
        if (strcmp(s->pools[i].cf->name, name) == 0)
            return &s->pools[i];
    return NULL;
}

size_t
lb_pool_nservers(const struct lb_pool *p)
{
    return atomic_load_explicit(&p->nservers, memory_order_acquire);
}

struct lb_server *
lb_server_find(struct lb_pool *p, const char *name)
{
    size_t n = lb_pool_nservers(p);
    for (size_t i = 0; i < n; i++) {
        struct lb_server *s = &p->servers[i];
        if (atomic_load(&s->state) != LB_SRV_REMOVED && strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

static void
bump(struct lb_pool *p)
{
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
}

static bool
valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("-_.", name[i]))
            return false;
    return true;
}

int
lb_server_add(struct lb_pool *p, const char *name, const char *address, uint32_t weight,
              const char **why)
{
    struct conf_addr addr = {0};
    size_t n = lb_pool_nservers(p);

    if (!valid_name(name)) {
        *why = "server name must be 1-64 characters of letters, digits, '-', '_' or '.'";
        return -EINVAL;
    }
    if (weight > 256) {
        *why = "weight must be between 0 and 256";
        return -EINVAL;
    }
    if (lb_server_find(p, name)) {
        *why = "a server of that name already exists in this pool";
        return -EEXIST;
    }
    if (conf_parse_addr(address, &addr, why) < 0)
        return -EINVAL;
    if (n >= p->capacity) {
        *why = "no free server slot in this pool until the next reload";
        return -ENOSPC;
    }
    struct lb_server *s = &p->servers[n];
    memset(s, 0, sizeof(*s));
    addr.text = strdup(address);
    char *nm = strdup(name);
    if (!addr.text || !nm) {
        free(addr.text);
        free(nm);
        *why = "out of memory";
        return -ENOMEM;
    }
    server_init(s, nm, &addr, weight, 0);
    s->dynamic = true;
    atomic_store_explicit(&p->nservers, n + 1, memory_order_release);
    bump(p);
    lb_info("pool %s: server %s (%s, weight %u) added", p->cf->name, name, address, weight);
    return 0;
}

void
lb_server_drain(struct lb_pool *p, struct lb_server *s, bool remove, uint64_t now_ms)
{
    int st = atomic_load(&s->state);
    if (st == LB_SRV_REMOVED)
        return;
    s->remove_when_drained = remove;
    s->drain_deadline = now_ms + p->cf->drain_timeout;
    if (st != LB_SRV_DRAIN) {
        atomic_store(&s->state, LB_SRV_DRAIN);
        bump(p);
        lb_info("pool %s: server %s draining (%u active, bound %llu ms)%s", p->cf->name, s->name,
                atomic_load(&s->active), (unsigned long long)p->cf->drain_timeout,
                remove ? ", removed when done" : "");
    }
}

void
lb_server_set_maint(struct lb_pool *p, struct lb_server *s, bool on)
{
    int st = atomic_load(&s->state);
    if (st == LB_SRV_REMOVED)
        return;
    int want = on ? LB_SRV_MAINT : LB_SRV_UP;
    if (st == want)
        return;
    atomic_store(&s->state, want);
    bump(p);
    lb_info("pool %s: server %s %s", p->cf->name, s->name,
            on ? "in maintenance" : "out of maintenance");
}

void
lb_server_enable(struct lb_pool *p, struct lb_server *s)
{
    int st = atomic_load(&s->state);
    if (st == LB_SRV_REMOVED || st == LB_SRV_UP)
        return;
    s->remove_when_drained = false;
    atomic_store(&s->state, LB_SRV_UP);
    bump(p);
    lb_info("pool %s: server %s ready (was %s)", p->cf->name, s->name, lb_srv_state_name(st));
}

void
lb_server_remove(struct lb_pool *p, struct lb_server *s)
{
    if (atomic_exchange(&s->state, LB_SRV_REMOVED) == LB_SRV_REMOVED)
        return;
    bump(p);
    lb_info("pool %s: server %s removed (%u connections still finishing)", p->cf->name, s->name,
            atomic_load(&s->active));
}

int
lb_server_set_weight(struct lb_pool *p, struct lb_server *s, uint32_t weight)
{
    if (weight > 256)
        return -EINVAL;
    uint32_t old = atomic_exchange(&s->weight, weight);
    if (old != weight) {
        bump(p);
        lb_info("pool %s: server %s weight %u -> %u", p->cf->name, s->name, old, weight);
    }
    return 0;
}

void
lb_server_set_health(struct lb_pool *p, struct lb_server *s, bool up, const char *why)
{
    int want = up ? LB_HEALTH_UP : LB_HEALTH_DOWN;
    if (atomic_exchange(&s->health, want) == want)
        return;
    bump(p);
    if (up)
        lb_info("pool %s: server %s is UP (%s)", p->cf->name, s->name, why ? why : "");
    else
        lb_warn("pool %s: server %s is DOWN (%s)", p->cf->name, s->name, why ? why : "");
}

void
lb_pools_drain_tick(struct lb_snapshot *snap, uint64_t now_ms)
{
    for (size_t i = 0; i < snap->npools; i++) {
        struct lb_pool *p = &snap->pools[i];
        size_t n = lb_pool_nservers(p);
        for (size_t j = 0; j < n; j++) {
            struct lb_server *s = &p->servers[j];
            if (atomic_load(&s->state) != LB_SRV_DRAIN || !s->remove_when_drained)
                continue;
            unsigned active = atomic_load(&s->active);
            if (active == 0 || now_ms >= s->drain_deadline) {
                if (active)
                    lb_warn("pool %s: server %s: drain bound reached with %u active", p->cf->name,
                            s->name, active);
                lb_server_remove(p, s);
            }
        }
    }
}

/*
 * Counters carried over by a reload keep counting on the old snapshot: a
 * request picked there is answered, timed and measured there, and a worker
 * that has not switched yet still routes there. Each carry-over therefore
 * leaves a record of every counter it copied, with the value copied; when
 * the old snapshot is freed (nothing can bump it any more) what it counted
 * since is added to the counter it was copied to. A record whose target
 * snapshot goes first is passed on to that snapshot's own successor, so a
 * record always points into a live snapshot. Records are touched only at
 * carry-over and when a snapshot is freed, by whichever thread drops the
 * last reference: a mutex is enough.
 */
struct carried {
    atomic_ulong *from, *to;
    unsigned long base;
};

struct carry {
    struct carry *next;
    struct lb_snapshot *from, *to;
    size_t n, cap;
    struct carried *c; /* sorted by from once complete */
};

#define STATS_FIELDS (LB_LAT_BUCKETS + 1 + 12)
_Static_assert(sizeof(struct lb_server_stats) == STATS_FIELDS * sizeof(atomic_ulong),
               "stats_fields() must list every counter of struct lb_server_stats");

static pthread_mutex_t carry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct carry *carries;

static void
stats_fields(struct lb_server_stats *st, atomic_ulong **f)
{
    int k = 0;
    for (int i = 0; i <= LB_LAT_BUCKETS; i++)
        f[k++] = &st->lat[i];
    for (int i = 0; i < 6; i++)
        f[k++] = &st->responses[i];
    f[k++] = &st->lat_sum_us;
    f[k++] = &st->requests;
    f[k++] = &st->bytes_in;
    f[k++] = &st->bytes_out;
    f[k++] = &st->connect_errors;
    f[k++] = &st->connections;
}

/* Copies one counter; a record that could not grow only loses what the old
 * snapshot counts from now on, as before records existed. */
static void
carry_one(struct carry *r, atomic_ulong *to, atomic_ulong *from)
{
    unsigned long v = atomic_load(from);
    atomic_store(to, v);
    if (!r)
        return;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct carried *c = realloc(r->c, cap * sizeof(*c));
        if (!c)
            return;
        r->c = c;
        r->cap = cap;
    }
    r->c[r->n++] = (struct carried){from, to, v};
}

static void
copy_stats(struct carry *r, struct lb_server_stats *to, struct lb_server_stats *from)
{
    atomic_ulong *t[STATS_FIELDS], *f[STATS_FIELDS];
    stats_fields(to, t);
    stats_fields(from, f);
    for (int k = 0; k < STATS_FIELDS; k++)
        carry_one(r, t[k], f[k]);
}

static int
carried_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct carried *)a)->from;
    uintptr_t y = (uintptr_t)((const struct carried *)b)->from;
    return x < y ? -1 : x > y;
}

static void
forward_counters(struct lb_snapshot *gone)
{
    pthread_mutex_lock(&carry_mu);
    struct carry *mine = NULL;
    for (struct carry **pp = &carries; *pp; pp = &(*pp)->next) {
        if ((*pp)->from == gone) {
            mine = *pp;
            *pp = mine->next;
            break;
        }
    }
    for (size_t i = 0; mine && i < mine->n; i++) {
        struct carried *c = &mine->c[i];
        atomic_fetch_add_explicit(c->to, atomic_load(c->from) - c->base, memory_order_relaxed);
    }
    /* Records into the snapshot going away now point where it was carried. */
    for (struct carry *r = carries; r; r = r->next) {
        if (r->to != gone)
            continue;
        size_t kept = 0;
        for (size_t i = 0; i < r->n; i++) {
            struct carried key = {.from = r->c[i].to};
            struct carried *next =
                mine && mine->n ? bsearch(&key, mine->c, mine->n, sizeof(key), carried_cmp) : NULL;
            if (next) {
                r->c[i].to = next->to;
                r->c[kept++] = r->c[i];
            }
        }
        r->n = kept;
        r->to = mine ? mine->to : NULL;
    }
    pthread_mutex_unlock(&carry_mu);
    if (mine)
        free(mine->c);
    free(mine);
}

void
lb_snapshot_carry_over(struct lb_snapshot *ns, struct lb_snapshot *os)
{
    struct carry *r = calloc(1, sizeof(*r));
    if (r) {
        r->from = os;
        r->to = ns;
    } else {
        lb_warn("reload: out of memory; requests in flight will not be counted");
    }
    for (size_t i = 0; i < ns->npools; i++) {
        struct lb_pool *np = &ns->pools[i];
        struct lb_pool *op = lb_pool_find(os, np->cf->name);
        if (!op)
            continue;
        carry_one(r, &np->requests, &op->requests);
        carry_one(r, &np->no_server, &op->no_server);
        for (int k = 0; k < 6; k++)
            carry_one(r, &np->local_responses[k], &op->local_responses[k]);
        size_t on = lb_pool_nservers(op);
        for (size_t j = 0; j < on; j++) {
            struct lb_server *o = &op->servers[j];
            int st = atomic_load(&o->state);
            if (st == LB_SRV_REMOVED)
                continue;
            struct lb_server *n = lb_server_find(np, o->name);
            if (!n && o->dynamic) {
                /* Added at runtime (admin API, a plugin): it survives. */
                const char *why;
                if (lb_server_add(np, o->name, o->addr.text, atomic_load(&o->weight), &why) < 0) {
                    lb_warn("pool %s: runtime server %s lost in reload: %s", np->cf->name, o->name,
                            why);
                    continue;
                }
                n = lb_server_find(np, o->name);
                atomic_store(&n->weight, atomic_load(&o->weight));
            }
            if (!n || n->addr.salen != o->addr.salen ||
                memcmp(&n->addr.sa, &o->addr.sa, o->addr.salen) != 0)
                continue; /* a new server under an old name starts fresh */
            atomic_store(&n->state, st);
            atomic_store(&n->health, atomic_load(&o->health));
            atomic_store(&n->ramp, atomic_load(&o->ramp));
            n->remove_when_drained = o->remove_when_drained;
            n->drain_deadline = o->drain_deadline;
            copy_stats(r, &n->st, &o->st);
        }
        bump(np);
    }
    if (!r)
        return;
    if (r->n > 1)
        qsort(r->c, r->n, sizeof(*r->c), carried_cmp);
    pthread_mutex_lock(&carry_mu);
    r->next = carries;
    carries = r;
    pthread_mutex_unlock(&carry_mu);
}
