/*
 * The metrics registry that plugins read, and the sampler that fills it.
 *
 * The registry is a hash table of named numbers. Entries never move (a
 * removed one goes on a free list), so a chain is a list of indexes. Each
 * entry has an owner: the host (0) or a plugin, which may only change and
 * remove its own, and a stamp: the sampler bumps its stamp every pass and
 * sweeps host metrics it did not touch, which is how a removed server's
 * metrics disappear.
 *
 * The sampler runs once a second on the control loop. The workers count
 * with relaxed atomics (lb/core.h); the sampler reads each counter once and
 * keeps the previous reading per pool and server slot, so a rate or a
 * latency percentile is the difference over the last second. Latency
 * percentiles are interpolated within the histogram's buckets, as
 * Prometheus' histogram_quantile does. A second without requests has no
 * latency and no error rate: those metrics are left without a value
 * (-ENODATA), which an alarm counts as missing data rather than as zero.
 * A pool's error rate counts every answer given for it, including the 503s
 * tern sends itself when no server can take a request: with every server
 * down those are the only answers, and the rate is 1, not missing.
 * The host's own figures come from /proc.
 *
 * Server events (added, up, down, removed) come from comparing a server
 * with what the last event about it said (look()). Whatever changes a
 * server on the control loop asks for that comparison at once
 * (lb_plugins_server_changed), so plugins hear each transition when it
 * happens, a quick flap as two events; the sampler's pass makes the same
 * comparison each second and so publishes only what nobody reported (an
 * addition through the admin API, a removal after a drain), never a
 * transition twice. Up means taking new requests (health up, state
 * ready), so maintenance and drains are heard too.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb/log.h"
#include "lb/plugin_int.h"

/* ---- registry ---- */

static uint32_t
hash(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

int
lb_metrics_init(struct lb_metrics *m)
{
    memset(m, 0, sizeof(*m));
    m->nbuckets = 1024;
    m->buckets = malloc(m->nbuckets * sizeof(*m->buckets));
    if (m->buckets == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < m->nbuckets; i++)
        m->buckets[i] = -1;
    m->free_list = -1;
    return 0;
}

void
lb_metrics_free(struct lb_metrics *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->v[i].name);
    free(m->v);
    free(m->buckets);
    memset(m, 0, sizeof(*m));
}

static int32_t
find(const struct lb_metrics *m, const char *name, int32_t **link)
{
    int32_t *l = &m->buckets[hash(name) & (m->nbuckets - 1)];

    while (*l >= 0 && strcmp(m->v[*l].name, name) != 0)
        l = &m->v[*l].next;
    if (link != NULL)
        *link = l;
    return *l;
}

/* Doubles the buckets when chains grow long: entries stay where they are. */
static void
rehash(struct lb_metrics *m)
{
    size_t nb = m->nbuckets * 2;
    int32_t *b = malloc(nb * sizeof(*b));

    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < nb; i++)
        b[i] = -1;
    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i].name == NULL)
            continue;
        uint32_t h = hash(m->v[i].name) & (nb - 1);
        m->v[i].next = b[h];
        b[h] = (int32_t)i;
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
}

int
lb_metrics_set(struct lb_metrics *m, const char *name, double value, bool valid, int owner,
               unsigned stamp)
{
    int32_t *link, i = find(m, name, &link);

    if (i >= 0) {
        if (m->v[i].owner != owner)
            return -EPERM;
    } else {
        char *copy = strdup(name);

        if (copy == NULL)
            return -ENOMEM;
        if (m->free_list >= 0) {
            i = m->free_list;
            m->free_list = m->v[i].next;
        } else {
            if (m->n == m->cap) {
                size_t cap = m->cap ? m->cap * 2 : 256;
                struct lb_metric *v = cap <= INT32_MAX ? realloc(m->v, cap * sizeof(*v)) : NULL;

                if (v == NULL) {
                    free(copy);
                    return -ENOMEM;
                }
                m->v = v;
                m->cap = cap;
            }
            i = (int32_t)m->n++;
        }
        /* Linked at the head of its chain, not through link: link may point
         * into the old m->v, which the realloc above can have moved. */
        int32_t *head = &m->buckets[hash(copy) & (m->nbuckets - 1)];
        m->v[i] = (struct lb_metric){.name = copy, .owner = owner, .next = *head};
        *head = i;
        if (m->n > 2 * m->nbuckets)
            rehash(m);
    }
    m->v[i].value = value;
    m->v[i].valid = valid && !isnan(value);
    m->v[i].stamp = stamp;
    return 0;
}

int
lb_metrics_get(const struct lb_metrics *m, const char *name, double *value)
{
    int32_t i = find(m, name, NULL);

    if (i < 0)
        return -ENOENT;
    if (!m->v[i].valid)
        return -ENODATA;
    *value = m->v[i].value;
    return 0;
}

static void
drop(struct lb_metrics *m, int32_t *link)
{
    int32_t i = *link;

    *link = m->v[i].next;
    free(m->v[i].name);
    m->v[i] = (struct lb_metric){.next = m->free_list};
    m->free_list = i;
}

int
lb_metrics_remove(struct lb_metrics *m, const char *name, int owner)
{
    int32_t *link, i = find(m, name, &link);

    if (i < 0)
        return -ENOENT;
    if (m->v[i].owner != owner)
        return -EPERM;
    drop(m, link);
    return 0;
}

static void
remove_where(struct lb_metrics *m, int owner, bool all, unsigned stamp)
{
    for (size_t b = 0; b < m->nbuckets; b++) {
        int32_t *link = &m->buckets[b];

        while (*link >= 0) {
            struct lb_metric *e = &m->v[*link];

            if (e->owner == owner && (all || e->stamp != stamp))
                drop(m, link);
            else
                link = &e->next;
        }
    }
}

void
lb_metrics_sweep(struct lb_metrics *m, int owner, unsigned stamp)
{
    remove_where(m, owner, false, stamp);
}

void
lb_metrics_remove_owner(struct lb_metrics *m, int owner)
{
    remove_where(m, owner, true, 0);
}

size_t
lb_metrics_each(const struct lb_metrics *m, const char *prefix, tern_metric_cb cb, void *arg)
{
    size_t len = prefix != NULL ? strlen(prefix) : 0, count = 0;

    for (size_t i = 0; i < m->n; i++) {
        const struct lb_metric *e = &m->v[i];

        if (e->name == NULL || !e->valid || strncmp(e->name, prefix ? prefix : "", len) != 0)
            continue;
        cb(arg, e->name, e->value);
        count++;
    }
    return count;
}

/* ---- sampler ---- */

static unsigned long
rd(const atomic_ulong *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

struct figures {
    double rps;
    unsigned long requests; /* answered in the interval */
    unsigned long errors;   /* 5xx among them */
    unsigned long lat[LB_LAT_BUCKETS + 1];
    unsigned long latn;
    unsigned active;
};

static void
put(struct lb_plugins *ps, const char *kind, const char *pool, const char *srv, const char *what,
    double v, bool valid)
{
    char name[512];

    if (srv != NULL)
        snprintf(name, sizeof(name), "%s.%s.%s.%s", kind, pool, srv, what);
    else
        snprintf(name, sizeof(name), "%s.%s.%s", kind, pool, what);
    lb_metrics_set(&ps->metrics, name, v, valid, 0, ps->sampler.stamp);
}

static void
put_figures(struct lb_plugins *ps, const char *kind, const char *pool, const char *srv,
            const struct figures *f, bool have_rate)
{
    bool lat = f->latn > 0;

    put(ps, kind, pool, srv, "requests_per_second", f->rps, have_rate);
    put(ps, kind, pool, srv, "active_connections", f->active, true);
    put(ps, kind, pool, srv, "latency_p50_ms", lat ? lb_lat_quantile(f->lat, 0.50) : NAN, lat);
    put(ps, kind, pool, srv, "latency_p95_ms", lat ? lb_lat_quantile(f->lat, 0.95) : NAN, lat);
    put(ps, kind, pool, srv, "latency_p99_ms", lat ? lb_lat_quantile(f->lat, 0.99) : NAN, lat);
    put(ps, kind, pool, srv, "error_rate",
        f->requests ? (double)f->errors / (double)f->requests : NAN, f->requests > 0);
}

static void
event(struct lb_plugins *ps, enum tern_event_type type, const char *pool, const char *srv,
      const char *state, const char *detail)
{
    struct tern_event ev = {
        .type = type,
        .pool = pool,
        .server = srv,
        .state = state,
        .detail = detail,
        .value = NAN,
        .threshold = NAN,
    };

    lb_bus_publish(ps, NULL, &ev);
}

static void
free_pools(struct sampler_pool *pools, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; pools[i].srv && j < pools[i].capacity; j++)
            free(pools[i].srv[j].name);
        free(pools[i].srv);
        free(pools[i].name);
    }
    free(pools);
}

void
lb_sampler_free(struct sampler *s)
{
    free_pools(s->pools, s->npools);
    s->pools = NULL;
    s->npools = 0;
    if (s->snap != NULL)
        lb_snapshot_unref((struct lb_snapshot *)s->snap);
    s->snap = NULL;
}

static struct sampler_srv *
old_server(struct sampler *s, const char *pool, const char *name)
{
    for (size_t i = 0; i < s->npools; i++) {
        if (strcmp(s->pools[i].name, pool) != 0)
            continue;
        for (size_t j = 0; j < s->pools[i].capacity; j++)
            if (s->pools[i].srv[j].name && strcmp(s->pools[i].srv[j].name, name) == 0)
                return &s->pools[i].srv[j];
    }
    return NULL;
}

/* A reload made a new snapshot: slots change, names stay. The counters were
 * carried over by name (lb_snapshot_carry_over), so the previous readings
 * are carried the same way and rates go on without a gap. */
static int
rebuild(struct sampler *s, const struct lb_snapshot *snap)
{
    struct sampler_pool *np = calloc(snap->npools ? snap->npools : 1, sizeof(*np));

    if (np == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < snap->npools; i++) {
        const struct lb_pool *p = &snap->pools[i];
        size_t n = lb_pool_nservers(p);

        np[i].name = strdup(p->cf->name);
        np[i].capacity = p->capacity;
        /* One slot past the servers keeps the previous reading of the
         * pool's own answers (sample_local); it has no name. */
        np[i].srv = calloc(p->capacity + 1, sizeof(*np[i].srv));
        if (np[i].name == NULL || np[i].srv == NULL) {
            free_pools(np, i + 1);
            return -ENOMEM;
        }
        for (size_t j = 0; j < s->npools; j++) {
            if (strcmp(s->pools[j].name, p->cf->name) == 0) {
                np[i].requests = s->pools[j].requests;
                np[i].known = s->pools[j].known;
                np[i].srv[p->capacity] = s->pools[j].srv[s->pools[j].capacity];
            }
        }
        for (size_t k = 0; k < n && k < p->capacity; k++) {
            const struct lb_server *sv = &p->servers[k];
            struct sampler_srv *o;

            if (atomic_load(&sv->state) == LB_SRV_REMOVED)
                continue;
            o = old_server(s, p->cf->name, sv->name);
            if (o != NULL) {
                np[i].srv[k] = *o;
                o->name = NULL;
            } else {
                np[i].srv[k].name = strdup(sv->name);
                /* Present when the snapshot was made: not an addition. */
                np[i].srv[k].health = -1;
                np[i].srv[k].state = atomic_load(&sv->state);
            }
        }
    }
    free_pools(s->pools, s->npools);
    s->pools = np;
    s->npools = snap->npools;
    /* Held so that its address cannot be reused by a later snapshot, which
     * would hide a change of slots. */
    lb_snapshot_ref((struct lb_snapshot *)snap);
    if (s->snap != NULL)
        lb_snapshot_unref((struct lb_snapshot *)s->snap);
    s->snap = snap;
    return 0;
}

/* Adds the answers counted since the previous reading to f (a counter that
 * went back, a server re-added under its name, starts over rather than
 * giving a huge difference). */
static void
count_responses(struct figures *f, const unsigned long *now, const unsigned long *prev)
{
    for (int i = 0; i < 6; i++) {
        unsigned long d = now[i] >= prev[i] ? now[i] - prev[i] : 0;

        f->requests += d;
        if (i == 5)
            f->errors += d;
    }
}

/* Whether a server in this state takes new requests: what server up and
 * down events follow, whichever of health or admin state changed. */
static bool
serving(int state, int health)
{
    return state == LB_SRV_UP && health == LB_HEALTH_UP;
}

/* Why a server went up or down, from what changed since the last look, for
 * a change nobody explained (lb_sampler_server_changed's why). */
static const char *
guess_why(const struct sampler_srv *ss, int state, int health)
{
    if (serving(state, health))
        return ss->health != LB_HEALTH_UP ? "health check passed" : "ready";
    if (state == LB_SRV_DRAIN)
        return "draining";
    if (state == LB_SRV_MAINT)
        return "in maintenance";
    return "health check failed";
}

/*
 * Compares slot k with what its events last said and publishes the
 * difference: added, up, down, removed. Both the sampler and the control
 * loop's transitions (lb_sampler_server_changed) come here, and each look
 * moves the memory on, so a transition is published once, by whichever
 * looks first: at once when its maker says so, else within a second.
 * Returns whether the slot holds a server to sample.
 */
static bool
look(struct lb_plugins *ps, struct sampler_pool *sp, const struct lb_pool *p, size_t k,
     const char *why)
{
    const struct lb_server *sv = &p->servers[k];
    struct sampler_srv *ss = &sp->srv[k];
    int state = atomic_load(&sv->state), health = atomic_load(&sv->health);

    if (ss->name == NULL) {
        if (state == LB_SRV_REMOVED)
            return false;
        /* A new slot: added at runtime since the last look, and servers
         * are added ready and up (lb_server_add), so a change since is
         * published after the addition. */
        ss->name = strdup(sv->name);
        if (ss->name == NULL)
            return false;
        ss->health = LB_HEALTH_UP;
        ss->state = LB_SRV_UP;
        event(ps, TERN_EV_SERVER_ADDED, p->cf->name, sv->name, NULL, "server added");
        /* Read again: a subscriber may have changed it already. */
        return look(ps, sp, p, k, why);
    }
    if (state == LB_SRV_REMOVED) {
        bool was = ss->state == LB_SRV_REMOVED;

        ss->state = state;
        if (!was)
            event(ps, TERN_EV_SERVER_REMOVED, p->cf->name, sv->name, NULL, "server removed");
        return false;
    }
    /* health -1: present when the snapshot was made, not looked at yet. */
    bool changed = ss->health >= 0 && serving(ss->state, ss->health) != serving(state, health);
    const char *detail = why ? why : guess_why(ss, state, health);

    /* Before publishing: a subscriber that changes the server from its
     * callback comes back here and must compare with this state. */
    ss->state = state;
    ss->health = health;
    if (changed)
        event(ps, serving(state, health) ? TERN_EV_SERVER_UP : TERN_EV_SERVER_DOWN, p->cf->name,
              sv->name, lb_srv_state_name(state), detail);
    return true;
}

static void
sample_server(struct lb_plugins *ps, struct sampler_pool *sp, const struct lb_pool *p, size_t k,
              double dt, struct figures *pf)
{
    const struct lb_server *sv = &p->servers[k];
    struct sampler_srv *ss = &sp->srv[k];
    int state = atomic_load(&sv->state), health = atomic_load(&sv->health);
    struct figures f = {.active = atomic_load(&sv->active)};
    unsigned long responses[6], lat[LB_LAT_BUCKETS + 1], requests = rd(&sv->st.requests);

    if (!look(ps, sp, p, k, NULL))
        return;
    for (int i = 0; i < 6; i++)
        responses[i] = rd(&sv->st.responses[i]);
    for (int i = 0; i <= LB_LAT_BUCKETS; i++)
        lat[i] = rd(&sv->st.lat[i]);
    if (ss->known && dt > 0) {
        f.rps = requests >= ss->requests ? (double)(requests - ss->requests) / dt : 0;
        count_responses(&f, responses, ss->responses);
        for (int i = 0; i <= LB_LAT_BUCKETS; i++) {
            f.lat[i] = lat[i] >= ss->lat[i] ? lat[i] - ss->lat[i] : 0;
            f.latn += f.lat[i];
            pf->lat[i] += f.lat[i];
        }
        pf->latn += f.latn;
        pf->requests += f.requests;
        pf->errors += f.errors;
    }
    pf->active += f.active;
    put_figures(ps, "server", p->cf->name, sv->name, &f, ss->known && dt > 0);
    put(ps, "server", p->cf->name, sv->name, "healthy", serving(state, health) ? 1 : 0, true);
    ss->known = true;
    ss->requests = requests;
    memcpy(ss->responses, responses, sizeof(responses));
    memcpy(ss->lat, lat, sizeof(lat));
}

void
lb_sampler_server_changed(struct lb_plugins *ps, const struct lb_pool *p,
                          const struct lb_server *sv, const char *why)
{
    struct sampler *s = &ps->sampler;
    const struct lb_snapshot *snap = ps->ctl->snap;

    /* A reload's transitions (lb_health_reloaded) come before the
     * sampler's own pass over the new snapshot. */
    if (s->snap != snap && rebuild(s, snap) < 0) {
        lb_warn("plugins: out of memory while following server %s", sv->name);
        return;
    }
    for (size_t i = 0; i < snap->npools; i++) {
        if (&snap->pools[i] != p)
            continue;
        size_t k = (size_t)(sv - p->servers);

        if (k < s->pools[i].capacity)
            look(ps, &s->pools[i], p, k, why);
        return;
    }
}

/* The answers tern gave for the pool without a server, into the pool's
 * figures only: no server's error rate includes them. */
static void
sample_local(struct sampler_pool *sp, const struct lb_pool *p, double dt, struct figures *pf)
{
    struct sampler_srv *ss = &sp->srv[sp->capacity];
    unsigned long responses[6];

    for (int i = 0; i < 6; i++)
        responses[i] = rd(&p->local_responses[i]);
    if (ss->known && dt > 0)
        count_responses(pf, responses, ss->responses);
    memcpy(ss->responses, responses, sizeof(responses));
    ss->known = true;
}

static void
sample_pools(struct lb_plugins *ps, double dt)
{
    struct sampler *s = &ps->sampler;
    const struct lb_snapshot *snap = ps->ctl->snap;

    if (s->snap != snap && rebuild(s, snap) < 0) {
        lb_warn("plugins: out of memory while sampling metrics");
        return;
    }
    for (size_t i = 0; i < snap->npools; i++) {
        const struct lb_pool *p = &snap->pools[i];
        struct sampler_pool *sp = &s->pools[i];
        size_t n = lb_pool_nservers(p), servers = 0, healthy = 0;
        unsigned long req = rd(&p->requests);
        struct figures f = {0};

        for (size_t k = 0; k < n && k < sp->capacity; k++) {
            const struct lb_server *sv = &p->servers[k];
            int state = atomic_load(&sv->state);

            sample_server(ps, sp, p, k, dt, &f);
            if (state == LB_SRV_REMOVED)
                continue;
            servers++;
            healthy += atomic_load(&sv->health) == LB_HEALTH_UP && state == LB_SRV_UP;
        }
        sample_local(sp, p, dt, &f);
        if (sp->known && dt > 0)
            f.rps = req >= sp->requests ? (double)(req - sp->requests) / dt : 0;
        put_figures(ps, "pool", p->cf->name, NULL, &f, sp->known && dt > 0);
        put(ps, "pool", p->cf->name, NULL, "servers", (double)servers, true);
        put(ps, "pool", p->cf->name, NULL, "healthy_servers", (double)healthy, true);
        put(ps, "pool", p->cf->name, NULL, "queued",
            (double)atomic_load_explicit(&p->queued, memory_order_relaxed), true);
        sp->requests = req;
        sp->known = true;
    }
}

static int
read_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    size_t n;

    if (f == NULL)
        return -errno;
    n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
    return 0;
}

static void
sample_host(struct lb_plugins *ps)
{
    struct sampler *s = &ps->sampler;
    char buf[4096];
    unsigned long long v[10] = {0};
    double load;

    if (read_file("/proc/stat", buf, sizeof(buf)) == 0 &&
        sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) >= 4) {
        /* idle and iowait are the time not spent; the rest was busy. */
        unsigned long long total = 0, idle = v[3] + v[4], busy;

        for (int i = 0; i < 8; i++)
            total += v[i];
        busy = total - idle;
        if (s->cpu_total && total > s->cpu_total)
            lb_metrics_set(&ps->metrics, "host.cpu_percent",
                           100.0 * (double)(busy - s->cpu_busy) / (double)(total - s->cpu_total),
                           busy >= s->cpu_busy, 0, s->stamp);
        else if (!s->cpu_total)
            lb_metrics_set(&ps->metrics, "host.cpu_percent", NAN, false, 0, s->stamp);
        else
            lb_metrics_set(&ps->metrics, "host.cpu_percent", 0, true, 0, s->stamp);
        s->cpu_total = total;
        s->cpu_busy = busy;
    }
    if (read_file("/proc/meminfo", buf, sizeof(buf)) == 0) {
        const char *t = strstr(buf, "MemTotal:"), *a = strstr(buf, "MemAvailable:");
        double total = t ? strtod(t + 9, NULL) : 0, avail = a ? strtod(a + 13, NULL) : 0;

        if (total > 0 && a != NULL)
            lb_metrics_set(&ps->metrics, "host.memory_percent", 100.0 * (1.0 - avail / total), true,
                           0, s->stamp);
    }
    if (read_file("/proc/loadavg", buf, sizeof(buf)) == 0 && sscanf(buf, "%lf", &load) == 1)
        lb_metrics_set(&ps->metrics, "host.load1", load, true, 0, s->stamp);
}

void
lb_sampler_run(struct lb_plugins *ps)
{
    struct sampler *s = &ps->sampler;
    double now = (double)lb_monotonic_ms() / 1000.0;
    double dt = s->last > 0 ? now - s->last : 0;

    s->stamp++;
    sample_pools(ps, dt);
    sample_host(ps);
    lb_metrics_sweep(&ps->metrics, 0, s->stamp);
    s->last = now;
}
