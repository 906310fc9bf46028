/*
 * Per-VM metrics from libvirt (watch.sources.libvirt.uri).
 *
 * Every watch.interval a job on the host's job pool asks libvirt for the
 * bulk statistics of every domain (virConnectGetAllDomainStats: cpu.time,
 * balloon.*, net.*, block.*) and turns the difference with the previous
 * poll into CPU %, memory %, and network and disk rates. libvirt calls block
 * (an RPC for qemu:///system), hence the job pool; one poll runs at a time,
 * so the connection and the previous readings belong to whichever job runs.
 * A connection that fails or dies is opened again on the next poll.
 *
 * Domains are matched to pool servers on the control thread's side: by
 * name (domain "web1" is server web1 of any pool), else by address (the
 * domain's interface addresses against the server's host). Matched domains
 * give server.<pool>.<server>.cpu_percent, .memory_percent,
 * .net_rx_bytes_per_second, .net_tx_bytes_per_second,
 * .disk_read_bytes_per_second, .disk_write_bytes_per_second, and
 * pool.<pool>.cpu_percent / .memory_percent average them over the pool's
 * VMs (DESIGN.md's metric names). Every domain also gives
 * libvirt.<domain>.cpu_percent and .memory_percent.
 *
 * CPU % is the vCPUs' time (vcpu.<n>.time) over the interval and the vCPU
 * count, else cpu.time (every thread of the VM's process).
 *
 * Drivers differ in what the bulk call returns (the test driver returns
 * only state.*), so a missing field falls back to the per-domain call that
 * has it: virDomainGetInfo for CPU time and vCPUs, virDomainMemoryStats for
 * the balloon.
 */
#include <errno.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "watch/watch.h"

/* What one poll learned about one domain. */
struct dom {
    char *name;
    int id;
    unsigned long long cpu_ns, rx, tx, rd, wr;
    bool has_cpu, has_net, has_block;
    unsigned vcpus;
    double mem_percent; /* NaN: unknown */
    char **addrs;       /* IPs of its interfaces, for matching */
    size_t naddrs;
    /* Derived from the previous poll. */
    double cpu_percent, rx_rate, tx_rate, rd_rate, wr_rate;
};

/* A pool server as the control thread saw it, for address matching. */
struct target {
    char *pool, *server, *host;
};

struct poll_job {
    struct watch_lv *lv;
    struct target *targets;
    size_t ntargets;
    struct dom *doms;
    size_t ndoms;
    char err[256];
    bool reconnected;
};

struct watch_lv {
    const struct tern_host *h;
    char *uri;
    long interval_ms;
    struct tern_timer *timer;
    bool busy;
    bool stopping;
    /* Job side (one poll at a time). */
    virConnectPtr conn;
    struct dom *prev;
    size_t nprev;
    double prev_time;
    /* Control side: status for the API and what was published. */
    bool connected;
    char last_error[256];
    unsigned long polls, reconnects, failures;
    size_t ndomains, nmatched;
    char **published;
    size_t npublished;
};

static void
free_doms(struct dom *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(d[i].name);
        for (size_t k = 0; k < d[i].naddrs; k++)
            free(d[i].addrs[k]);
        free(d[i].addrs);
    }
    free(d);
}

static void
free_targets(struct target *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(t[i].pool);
        free(t[i].server);
        free(t[i].host);
    }
    free(t);
}

static const char *
lv_error(void)
{
    const virError *e = virGetLastError(); /* per thread */

    return e && e->message ? e->message : "unknown libvirt error";
}

/* libvirt's default error handler prints to stderr: the messages are ours
 * to log, once, with context. */
static void
quiet(void *arg, virErrorPtr e)
{
}

static bool
param_ull(virTypedParameterPtr p, int n, const char *name, unsigned long long *out)
{
    return virTypedParamsGetULLong(p, n, name, out) == 1;
}

static void
read_record(virDomainStatsRecordPtr r, struct dom *d)
{
    unsigned long long v, count = 0, avail = 0, usable = 0, unused = 0;
    unsigned int ui;
    char key[64];
    virDomainInfo info;

    d->has_cpu = param_ull(r->params, r->nparams, "cpu.time", &d->cpu_ns);
    if (virTypedParamsGetUInt(r->params, r->nparams, "vcpu.current", &ui) == 1)
        d->vcpus = ui;
    /* cpu.time counts every QEMU thread (the I/O thread too), so a busy
     * 1-vCPU guest reads over 100 %: the vCPUs' own time, when there, is
     * the guest's CPU use. */
    if (d->vcpus > 0) {
        unsigned long long sum = 0;
        unsigned i;

        for (i = 0; i < d->vcpus; i++) {
            snprintf(key, sizeof(key), "vcpu.%u.time", i);
            if (!param_ull(r->params, r->nparams, key, &v))
                break;
            sum += v;
        }
        if (i == d->vcpus) {
            d->cpu_ns = sum;
            d->has_cpu = true;
        }
    }
    if (virTypedParamsGetUInt(r->params, r->nparams, "net.count", &ui) == 1) {
        d->has_net = true;
        for (unsigned i = 0; i < ui; i++) {
            snprintf(key, sizeof(key), "net.%u.rx.bytes", i);
            d->rx += param_ull(r->params, r->nparams, key, &v) ? v : 0;
            snprintf(key, sizeof(key), "net.%u.tx.bytes", i);
            d->tx += param_ull(r->params, r->nparams, key, &v) ? v : 0;
        }
    }
    if (virTypedParamsGetUInt(r->params, r->nparams, "block.count", &ui) == 1) {
        d->has_block = true;
        for (unsigned i = 0; i < ui; i++) {
            snprintf(key, sizeof(key), "block.%u.rd.bytes", i);
            d->rd += param_ull(r->params, r->nparams, key, &v) ? v : 0;
            snprintf(key, sizeof(key), "block.%u.wr.bytes", i);
            d->wr += param_ull(r->params, r->nparams, key, &v) ? v : 0;
        }
    }
    param_ull(r->params, r->nparams, "balloon.available", &avail);
    if (!param_ull(r->params, r->nparams, "balloon.usable", &usable))
        param_ull(r->params, r->nparams, "balloon.unused", &unused);
    /* Fallbacks for drivers whose bulk stats lack a group. */
    if ((!d->has_cpu || d->vcpus == 0) && virDomainGetInfo(r->dom, &info) == 0) {
        if (!d->has_cpu)
            d->cpu_ns = info.cpuTime;
        d->has_cpu = true;
        if (d->vcpus == 0)
            d->vcpus = info.nrVirtCpu;
    }
    if (avail == 0) {
        virDomainMemoryStatStruct ms[VIR_DOMAIN_MEMORY_STAT_NR];
        int n = virDomainMemoryStats(r->dom, ms, VIR_DOMAIN_MEMORY_STAT_NR, 0);

        for (int i = 0; i < n; i++) {
            if (ms[i].tag == VIR_DOMAIN_MEMORY_STAT_AVAILABLE)
                avail = ms[i].val;
            else if (ms[i].tag == VIR_DOMAIN_MEMORY_STAT_USABLE)
                usable = ms[i].val;
            else if (ms[i].tag == VIR_DOMAIN_MEMORY_STAT_UNUSED)
                unused = ms[i].val;
        }
        count = (unsigned long long)n;
    }
    (void)count;
    d->mem_percent = NAN;
    if (avail > 0) {
        unsigned long long free_kib = usable ? usable : unused;

        if (free_kib <= avail)
            d->mem_percent = 100.0 * (double)(avail - free_kib) / (double)avail;
    }
}

static void
read_addrs(virDomainPtr dom, struct dom *d)
{
    virDomainInterfacePtr *ifaces = NULL;
    int n = virDomainInterfaceAddresses(dom, &ifaces, VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0);

    if (n < 0) {
        virResetLastError();
        return;
    }
    for (int i = 0; i < n; i++) {
        for (unsigned k = 0; k < ifaces[i]->naddrs; k++) {
            char **grown = realloc(d->addrs, (d->naddrs + 1) * sizeof(char *));

            if (grown == NULL)
                break;
            d->addrs = grown;
            if ((d->addrs[d->naddrs] = strdup(ifaces[i]->addrs[k].addr)) != NULL)
                d->naddrs++;
        }
        virDomainInterfaceFree(ifaces[i]);
    }
    free(ifaces);
}

static bool
named_target(const struct poll_job *j, const char *name)
{
    for (size_t i = 0; i < j->ntargets; i++)
        if (strcmp(j->targets[i].server, name) == 0)
            return true;
    return false;
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
rate(unsigned long long now, unsigned long long before, double dt)
{
    return now >= before && dt > 0 ? (double)(now - before) / dt : NAN;
}

/* The job: connect if needed, read every domain, derive rates. */
static void *
poll_run(void *arg)
{
    struct poll_job *j = arg;
    struct watch_lv *lv = j->lv;
    virDomainStatsRecordPtr *recs = NULL;
    unsigned stats = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL |
                     VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU | VIR_DOMAIN_STATS_INTERFACE |
                     VIR_DOMAIN_STATS_BLOCK;
    double t;
    int n;

    if (lv->conn != NULL && virConnectIsAlive(lv->conn) != 1) {
        virConnectClose(lv->conn);
        lv->conn = NULL;
    }
    if (lv->conn == NULL) {
        lv->conn = virConnectOpenReadOnly(lv->uri);
        if (lv->conn == NULL) {
            snprintf(j->err, sizeof(j->err), "cannot connect to %s: %s", lv->uri, lv_error());
            return NULL;
        }
        j->reconnected = true;
    }
    n = virConnectGetAllDomainStats(lv->conn, stats, &recs,
                                    VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE);
    if (n < 0) {
        snprintf(j->err, sizeof(j->err), "reading domain statistics from %s: %s", lv->uri,
                 lv_error());
        /* A dead connection is found out here; the next poll reopens it. */
        if (virConnectIsAlive(lv->conn) != 1) {
            virConnectClose(lv->conn);
            lv->conn = NULL;
        }
        return NULL;
    }
    t = now_s();
    j->doms = calloc((size_t)n + 1, sizeof(*j->doms));
    for (int i = 0; j->doms != NULL && i < n; i++) {
        struct dom *d = &j->doms[j->ndoms];
        const char *name = virDomainGetName(recs[i]->dom);

        if (name == NULL || (d->name = strdup(name)) == NULL)
            continue;
        d->id = virDomainGetID(recs[i]->dom);
        read_record(recs[i], d);
        if (!named_target(j, name))
            read_addrs(recs[i]->dom, d);
        d->cpu_percent = d->rx_rate = d->tx_rate = d->rd_rate = d->wr_rate = NAN;
        for (size_t k = 0; k < lv->nprev; k++) {
            const struct dom *p = &lv->prev[k];
            double dt = t - lv->prev_time;

            /* A restarted domain (new id) starts its counters over. */
            if (strcmp(p->name, d->name) != 0 || p->id != d->id)
                continue;
            if (d->has_cpu && p->has_cpu && d->cpu_ns >= p->cpu_ns && dt > 0)
                d->cpu_percent = 100.0 * (double)(d->cpu_ns - p->cpu_ns) / (dt * 1e9) /
                                 (double)(d->vcpus ? d->vcpus : 1);
            if (d->has_net && p->has_net) {
                d->rx_rate = rate(d->rx, p->rx, dt);
                d->tx_rate = rate(d->tx, p->tx, dt);
            }
            if (d->has_block && p->has_block) {
                d->rd_rate = rate(d->rd, p->rd, dt);
                d->wr_rate = rate(d->wr, p->wr, dt);
            }
        }
        j->ndoms++;
    }
    virDomainStatsRecordListFree(recs);
    /* Keep this poll's readings for the next one (names and counters). */
    free_doms(lv->prev, lv->nprev);
    lv->prev = calloc(j->ndoms + 1, sizeof(*lv->prev));
    lv->nprev = 0;
    for (size_t i = 0; lv->prev != NULL && i < j->ndoms; i++) {
        lv->prev[i] = j->doms[i];
        lv->prev[i].addrs = NULL;
        lv->prev[i].naddrs = 0;
        if ((lv->prev[i].name = strdup(j->doms[i].name)) != NULL)
            lv->nprev++;
    }
    lv->prev_time = t;
    return NULL;
}

/* ---- control thread ---- */

struct collect {
    struct target *v;
    size_t n, cap;
    const char *pool;
    const struct tern_host *h;
};

static void
add_target(void *arg, const struct tern_server_info *s)
{
    struct collect *c = arg;
    const char *colon = strrchr(s->address, ':');
    struct target *t;

    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        struct target *v = realloc(c->v, cap * sizeof(*v));

        if (v == NULL)
            return;
        c->v = v;
        c->cap = cap;
    }
    t = &c->v[c->n];
    t->pool = strdup(c->pool);
    t->server = strdup(s->name);
    t->host = colon ? strndup(s->address, (size_t)(colon - s->address)) : strdup(s->address);
    if (t->host != NULL && t->host[0] == '[') { /* [v6]:port */
        memmove(t->host, t->host + 1, strlen(t->host));
        t->host[strcspn(t->host, "]")] = '\0';
    }
    c->n++;
}

static void
add_pool(void *arg, const char *pool)
{
    struct collect *c = arg;

    c->pool = pool;
    c->h->pool_servers(c->h, pool, add_target, c);
}

static void
publish(struct watch_lv *lv, char ***names, size_t *n, size_t *cap, const char *name, double v)
{
    const struct tern_host *h = lv->h;

    if (isnan(v))
        return;
    h->metric_set(h, name, v);
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 32;
        char **g = realloc(*names, c * sizeof(char *));

        if (g == NULL)
            return;
        *names = g;
        *cap = c;
    }
    if (((*names)[*n] = strdup(name)) != NULL)
        (*n)++;
}

struct avg {
    char *pool;
    double cpu, mem;
    unsigned ncpu, nmem;
};

static const struct target *
match(const struct poll_job *j, const struct dom *d)
{
    for (size_t i = 0; i < j->ntargets; i++)
        if (strcmp(j->targets[i].server, d->name) == 0)
            return &j->targets[i];
    for (size_t i = 0; i < j->ntargets; i++)
        for (size_t k = 0; k < d->naddrs; k++)
            if (j->targets[i].host && strcmp(j->targets[i].host, d->addrs[k]) == 0)
                return &j->targets[i];
    return NULL;
}

static void
lv_free(struct watch_lv *lv)
{
    if (lv->conn != NULL)
        virConnectClose(lv->conn);
    free_doms(lv->prev, lv->nprev);
    free(lv->uri);
    free(lv);
}

static void
poll_done(void *arg, void *result, int status)
{
    struct poll_job *j = arg;
    struct watch_lv *lv = j->lv;
    const struct tern_host *h = lv->h;
    char **names = NULL, name[512];
    size_t nnames = 0, cap = 0, npools = 0;
    struct avg *avgs = calloc(j->ntargets + 1, sizeof(*avgs));

    lv->busy = false;
    if (status == -ECANCELED || lv->stopping)
        goto out;
    lv->polls++;
    if (j->err[0]) {
        if (lv->connected || strcmp(lv->last_error, j->err) != 0)
            h->log(h, TERN_LOG_WARN, "libvirt: %s; retrying every poll", j->err);
        lv->connected = lv->conn != NULL;
        lv->failures++;
        snprintf(lv->last_error, sizeof(lv->last_error), "%s", j->err);
        goto out;
    }
    if (j->reconnected) {
        if (lv->polls > 1)
            lv->reconnects++;
        h->log(h, TERN_LOG_INFO, "libvirt: connected to %s", lv->uri);
    }
    lv->connected = true;
    lv->ndomains = j->ndoms;
    lv->nmatched = 0;
    for (size_t i = 0; i < j->ndoms; i++) {
        const struct dom *d = &j->doms[i];
        const struct target *t = match(j, d);

        snprintf(name, sizeof(name), "libvirt.%s.cpu_percent", d->name);
        publish(lv, &names, &nnames, &cap, name, d->cpu_percent);
        snprintf(name, sizeof(name), "libvirt.%s.memory_percent", d->name);
        publish(lv, &names, &nnames, &cap, name, d->mem_percent);
        if (t == NULL)
            continue;
        lv->nmatched++;
        static const char *const what[] = {"cpu_percent",
                                           "memory_percent",
                                           "net_rx_bytes_per_second",
                                           "net_tx_bytes_per_second",
                                           "disk_read_bytes_per_second",
                                           "disk_write_bytes_per_second"};
        double vals[] = {d->cpu_percent, d->mem_percent, d->rx_rate,
                         d->tx_rate,     d->rd_rate,     d->wr_rate};

        for (size_t k = 0; k < 6; k++) {
            snprintf(name, sizeof(name), "server.%s.%s.%s", t->pool, t->server, what[k]);
            publish(lv, &names, &nnames, &cap, name, vals[k]);
        }
        size_t a;
        for (a = 0; a < npools && strcmp(avgs[a].pool, t->pool) != 0; a++)
            ;
        if (avgs == NULL)
            continue;
        if (a == npools)
            avgs[npools++].pool = t->pool;
        if (!isnan(d->cpu_percent))
            avgs[a].cpu += d->cpu_percent, avgs[a].ncpu++;
        if (!isnan(d->mem_percent))
            avgs[a].mem += d->mem_percent, avgs[a].nmem++;
    }
    for (size_t a = 0; a < npools; a++) {
        snprintf(name, sizeof(name), "pool.%s.cpu_percent", avgs[a].pool);
        publish(lv, &names, &nnames, &cap, name, avgs[a].ncpu ? avgs[a].cpu / avgs[a].ncpu : NAN);
        snprintf(name, sizeof(name), "pool.%s.memory_percent", avgs[a].pool);
        publish(lv, &names, &nnames, &cap, name, avgs[a].nmem ? avgs[a].mem / avgs[a].nmem : NAN);
    }
    /* What was published last time and not now is gone (domain stopped,
     * server removed): an alarm should see missing data, not a stale value. */
    for (size_t i = 0; i < lv->npublished; i++) {
        bool kept = false;

        for (size_t k = 0; k < nnames && !kept; k++)
            kept = strcmp(lv->published[i], names[k]) == 0;
        if (!kept)
            h->metric_remove(h, lv->published[i]);
        free(lv->published[i]);
    }
    free(lv->published);
    lv->published = names;
    lv->npublished = nnames;
    names = NULL;
    lv->last_error[0] = '\0';
out:
    free(avgs);
    free(names);
    free_doms(j->doms, j->ndoms);
    free_targets(j->targets, j->ntargets);
    free(j);
    if (lv->stopping)
        lv_free(lv);
}

static void
on_poll(void *arg)
{
    struct watch_lv *lv = arg;
    const struct tern_host *h = lv->h;
    struct poll_job *j;
    struct collect c = {.h = h};

    if (lv->busy)
        return; /* the previous poll is still waiting for libvirt */
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    h->pool_list(h, add_pool, &c);
    j->lv = lv;
    j->targets = c.v;
    j->ntargets = c.n;
    lv->busy = true;
    if (h->job_submit(h, poll_run, poll_done, j) < 0) {
        lv->busy = false;
        free_targets(j->targets, j->ntargets);
        free(j);
    }
}

struct watch_lv *
watch_lv_start(const struct tern_host *h, const char *uri, long interval_ms)
{
    struct watch_lv *lv = calloc(1, sizeof(*lv));

    if (lv == NULL || (lv->uri = strdup(uri)) == NULL) {
        free(lv);
        return NULL;
    }
    lv->h = h;
    lv->interval_ms = interval_ms;
    /* Process-wide, so set here on the control thread, not in a job. */
    virSetErrorFunc(NULL, quiet);
    /* First poll at once: rates need two readings. */
    lv->timer = h->timer_add(h, 0, (double)interval_ms / 1000.0, on_poll, lv);
    return lv;
}

void
watch_lv_stop(struct watch_lv *lv, bool timers_gone)
{
    if (lv == NULL)
        return;
    /* Called from fini (the host has ended our jobs and timers) or from a
     * reload that changed the URI: then a poll may still be out, and it
     * owns lv until it is done. */
    if (lv->timer != NULL && !timers_gone)
        lv->h->timer_cancel(lv->h, lv->timer);
    lv->timer = NULL;
    for (size_t i = 0; i < lv->npublished; i++) {
        lv->h->metric_remove(lv->h, lv->published[i]);
        free(lv->published[i]);
    }
    free(lv->published);
    lv->published = NULL;
    lv->npublished = 0;
    if (lv->busy) {
        lv->stopping = true; /* poll_done frees it */
        return;
    }
    lv_free(lv);
}

json_t *
watch_lv_json(struct watch_lv *lv)
{
    return json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:s?}", "uri", lv->uri, "connected",
                     lv->connected, "polls", (json_int_t)lv->polls, "reconnects",
                     (json_int_t)lv->reconnects, "failures", (json_int_t)lv->failures, "domains",
                     (json_int_t)lv->ndomains, "matched", (json_int_t)lv->nmatched, "last_error",
                     lv->last_error[0] ? lv->last_error : NULL);
}
