/*
 * Runtime state of one configuration generation: the pools and servers the
 * workers balance over. Built on the control thread from an immutable
 * struct conf; its counters and server states are atomics that every thread
 * reads, and only the control thread writes states and weights.
 */
#include "lb/core.h"
#include "lb/log.h"

#include <stdlib.h>
#include <string.h>

static int
pool_init(struct lb_pool *p, const struct conf_pool *cp)
{
    p->cf = cp;
    p->ops = lb_balance_ops_by_alg((enum lb_balance_alg)cp->balance);
    if (!p->ops)
        return -1;
    p->nservers = cp->nservers;
    p->servers = calloc(cp->nservers ? cp->nservers : 1, sizeof(*p->servers));
    if (!p->servers)
        return -1;
    for (size_t i = 0; i < cp->nservers; i++) {
        const struct conf_server *cs = &cp->servers[i];
        struct lb_server *s = &p->servers[i];
        s->name = cs->name;
        s->addr = cs->address;
        s->id_hash = lb_hash64(cs->name, strlen(cs->name));
        s->max_connections = cs->max_connections;
        atomic_init(&s->weight, cs->weight);
        atomic_init(&s->state, LB_SRV_UP);
    }
    return 0;
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
            free(s->pools[i].servers);
    free(s->pools);
    free(s);
    return NULL;
}

void
lb_snapshot_ref(struct lb_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void
lb_snapshot_unref(struct lb_snapshot *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < s->npools; i++)
        free(s->pools[i].servers);
    free(s->pools);
    conf_free(s->conf);
    free(s);
}
