/*
 * Health of the servers, on the control thread's loop (see health.h): when
 * to run active probes (lb/health_check.c) and what their results mean,
 * passive outlier detection from the workers' consecutive_failures counters,
 * and the slow-start ramp of a server that comes (back) up.
 *
 * Two opinions make up a server's health: the active checks' (rise/fall
 * over probe results) and the outlier detector's (ejected or not). The server
 * is up when both agree it may be; the single place that turns them into a
 * transition is set_effective(), which also tells the plugin host, so the
 * server up/down event is published with the transition itself rather than
 * at the sampler's next second (a flap shorter than that would be lost).
 *
 * Choices, as HAProxy and Envoy make them:
 * - Servers start UP, with or without checks, so traffic flows the moment
 *   tern starts; `fall` failed probes in a row mark one down, `rise` passed
 *   probes bring it back. Servers added at runtime start UP too and are
 *   probed at once.
 * - The next probe of a server starts `interval` after the previous one
 *   ended, moved by a random amount within +-jitter (at most half the
 *   interval); the first ones are spread over the first interval.
 * - Outlier detection is on by default (5 failures in a row, 10 s, at most
 *   5 min; `outlier: { consecutive_failures: 0 }` turns it off) and looks
 *   every 100 ms, so a server may fail a few more requests than the
 *   threshold before it is out. A server whose counter reaches
 *   outlier.consecutive_failures is ejected for base_ejection * 2^(n-1)
 *   (n: its recent ejections, capped by max_ejection), then comes back on
 *   its own; each base_ejection period without an ejection forgets one. At
 *   most max_ejection_percent (default 50) of a pool's servers are ejected at
 *   once, rounded down: ejecting the only server of a pool (or all of them)
 *   would turn errors from some requests into 503s for every request.
 * - Slow start: a server that begins to take traffic again (health up,
 *   enabled, added) gets 10% of its weight, raised every 250 ms to reach
 *   100% after the pool's slow_start.
 *
 * No pointer into a snapshot outlives it: state is rebuilt from ctl->snap
 * on reload and matched to the old state by names kept here.
 */
#include "lb/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "lb/health_check.h"
#include "lb/log.h"
#include "lb/plugin_host.h"
#include "lb/tls.h"

#define TICK_S 0.1
#define RAMP_START 100 /* thousandths of the weight when slow start begins */
#define RAMP_STEP_MS 250

struct hc_pool;

struct hc_server {
    struct hc_pool *hp;
    size_t slot;           /* index into the pool's servers */
    char *name;            /* copies, to match state across a reload */
    struct conf_addr addr; /* .text not owned */
    bool live;             /* tracked and not removed */
    bool serving;          /* admin state ready and health up, at the last look */
    /* Active checks. */
    bool active_up;
    bool local_warned;
    uint32_t ok_run, fail_run;
    ev_timer next;
    struct hc_probe probe;
    /* Outlier detection. */
    bool ejected, limit_warned;
    uint32_t ejections;
    uint64_t eject_until, clean_since; /* monotonic ms */
    /* Slow start. */
    bool ramping;
    uint64_t ramp_start, ramp_last;
};

struct hc_pool {
    struct health *h;
    struct lb_pool *pool;
    char *name;
    struct hc_server *srv; /* pool->capacity entries: watchers never move */
    size_t nknown;         /* slots looked at so far */
};

struct health {
    struct lb_ctl *ctl;
    struct hc_pool *pools;
    size_t npools;
    ev_timer tick;
    uint64_t rng;
};

static struct lb_server *
srv_of(const struct hc_server *hs)
{
    return &hs->hp->pool->servers[hs->slot];
}

static const struct conf_pool *
pcf(const struct hc_server *hs)
{
    return hs->hp->pool->cf;
}

static bool
has_checks(const struct hc_pool *hp)
{
    return hp->pool->cf->health.type != CONF_HC_NONE;
}

static uint64_t
rnd(struct health *h)
{
    /* xorshift64*: spreading timers needs no more. */
    h->rng ^= h->rng >> 12;
    h->rng ^= h->rng << 25;
    h->rng ^= h->rng >> 27;
    return h->rng * 0x2545F4914F6CDD1DULL;
}

static void
bump(struct lb_pool *p)
{
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
}

/* "250 ms", "10 s", "5 min" for log lines. */
static const char *
fmt_ms(char *buf, size_t n, uint64_t ms)
{
    if (ms % 60000 == 0 && ms >= 60000)
        snprintf(buf, n, "%llu min", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0 && ms >= 1000)
        snprintf(buf, n, "%llu s", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, n, "%llu ms", (unsigned long long)ms);
    return buf;
}

static bool
is_serving(const struct lb_server *s)
{
    return atomic_load(&s->state) == LB_SRV_UP && atomic_load(&s->health) == LB_HEALTH_UP;
}

/* Returns whether a ramp began. */
static bool
ramp_begin(struct hc_server *hs, uint64_t now)
{
    if (pcf(hs)->slow_start == 0)
        return false;
    atomic_store_explicit(&srv_of(hs)->ramp, RAMP_START, memory_order_relaxed);
    hs->ramping = true;
    hs->ramp_start = hs->ramp_last = now;
    return true;
}

/* Logged after the transition that started the ramp, so the lines read in
 * order. */
static void
ramp_log(const struct hc_server *hs)
{
    char a[32];
    lb_info("pool %s: server %s: slow start, %d%% of its weight rising to 100%% over %s",
            hs->hp->name, hs->name, RAMP_START / 10, fmt_ms(a, sizeof(a), pcf(hs)->slow_start));
}

/* A server begins to take traffic: a streak of failures from before it
 * stopped means nothing now, and its share grows slowly. The caller bumps
 * the generation (the health change does). */
static bool
begin_serving(struct hc_server *hs, uint64_t now)
{
    atomic_store_explicit(&srv_of(hs)->consecutive_failures, 0, memory_order_relaxed);
    return atomic_load(&srv_of(hs)->state) == LB_SRV_UP && ramp_begin(hs, now);
}

/*
 * The one place where a server's health changes: both opinions (active
 * checks, outlier detection) are combined here and the transition goes
 * through lb_server_set_health, which logs it with why. detail is what
 * the plugins' event says (NULL: why).
 */
static void
set_effective(struct hc_server *hs, const char *why, const char *detail)
{
    struct lb_server *s = srv_of(hs);
    bool up = hs->active_up && !hs->ejected;
    bool cur = atomic_load(&s->health) == LB_HEALTH_UP;
    if (up == cur)
        return;
    bool ramp = up && begin_serving(hs, lb_monotonic_ms());
    lb_server_set_health(hs->hp->pool, s, up, why);
    hs->serving = is_serving(s);
    if (ramp)
        ramp_log(hs);
    lb_plugins_server_changed(hs->hp->h->ctl, hs->hp->pool, s, detail ? detail : why);
}

/* ---- active checks ---- */

static void probe_done(struct hc_probe *pr, enum hc_result res, const char *why);

static void
schedule(struct hc_server *hs, uint64_t delay_ms)
{
    struct ev_loop *loop = hs->hp->h->ctl->loop;
    ev_timer_stop(loop, &hs->next);
    ev_timer_set(&hs->next, (double)delay_ms / 1000.0, 0.);
    ev_timer_start(loop, &hs->next);
}

static uint64_t
next_delay(struct hc_server *hs)
{
    const struct conf_health *cf = &pcf(hs)->health;
    uint64_t j = cf->jitter < cf->interval / 2 ? cf->jitter : cf->interval / 2;
    if (!j)
        return cf->interval;
    uint64_t r = rnd(hs->hp->h) % (2 * j + 1);
    return cf->interval - j + r;
}

/* The pool's TLS client context in the current snapshot, NULL for plain
 * text. Looked up per check: a reload may have replaced it. */
static struct lb_tls_client *
pool_tls(struct hc_server *hs)
{
    struct lb_snapshot *snap = hs->hp->h->ctl->snap;
    struct lb_pool *p = lb_pool_find(snap, hs->hp->name);
    if (!p || !snap->tls)
        return NULL;
    size_t i = (size_t)(p - snap->pools);
    return i < snap->tls->npools ? snap->tls->pools[i] : NULL;
}

static void
next_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct hc_server *hs = t->data;
    struct lb_server *s = srv_of(hs);
    if (!hs->live || !has_checks(hs->hp))
        return;
    hc_probe_start(&hs->probe, loop, &pcf(hs)->health, &s->addr.sa, s->addr.salen, s->addr.text,
                   pool_tls(hs), probe_done);
}

static void
probe_done(struct hc_probe *pr, enum hc_result res, const char *why)
{
    struct hc_server *hs = (struct hc_server *)((char *)pr - offsetof(struct hc_server, probe));
    const struct conf_health *cf = &pcf(hs)->health;
    const char *pool = hs->hp->name, *name = hs->name;
    char reason[256];

    if (res == HC_LOCAL) {
        /* Our own trouble (out of descriptors): no verdict on the server. */
        if (!hs->local_warned)
            lb_warn("pool %s: server %s: health check not run: %s", pool, name, why);
        hs->local_warned = true;
    } else if (res == HC_OK) {
        hs->local_warned = false;
        hs->fail_run = 0;
        if (hs->ok_run < UINT32_MAX)
            hs->ok_run++;
        if (!hs->active_up) {
            if (hs->ok_run >= cf->rise) {
                hs->active_up = true;
                snprintf(reason, sizeof(reason), "%s; %u check%s passed", why, hs->ok_run,
                         hs->ok_run == 1 ? "" : "s");
                if (hs->ejected)
                    lb_info("pool %s: server %s passes its checks (%s) but stays ejected", pool,
                            name, why);
                set_effective(hs, reason, "health check passed");
            } else {
                lb_debug("pool %s: server %s: check passed (%s), %u/%u to go up", pool, name, why,
                         hs->ok_run, cf->rise);
            }
        }
    } else {
        hs->local_warned = false;
        hs->ok_run = 0;
        if (hs->fail_run < UINT32_MAX)
            hs->fail_run++;
        if (hs->active_up) {
            if (hs->fail_run >= cf->fall) {
                hs->active_up = false;
                snprintf(reason, sizeof(reason), "%s; %u check%s failed", why, hs->fail_run,
                         hs->fail_run == 1 ? "" : "s");
                set_effective(hs, reason, "health check failed");
            } else {
                lb_info("pool %s: server %s: check failed (%s), %u/%u to go down", pool, name, why,
                        hs->fail_run, cf->fall);
            }
        } else {
            lb_debug("pool %s: server %s: check failed (%s)", pool, name, why);
        }
    }
    if (hs->live && has_checks(hs->hp))
        schedule(hs, next_delay(hs));
}

/* ---- tracking servers ---- */

static void
server_retire(struct hc_server *hs)
{
    if (!hs->hp)
        return;
    struct ev_loop *loop = hs->hp->h->ctl->loop;
    ev_timer_stop(loop, &hs->next);
    hc_probe_cancel(&hs->probe);
    hs->live = false;
}

static void
server_free(struct hc_server *hs)
{
    server_retire(hs);
    free(hs->name);
    hs->name = NULL;
}

/* Starts tracking slot i. first_delay_ms: when to probe first. */
static int
server_track(struct hc_pool *hp, size_t i, uint64_t first_delay_ms)
{
    struct hc_server *hs = &hp->srv[i];
    struct lb_server *s = &hp->pool->servers[i];
    memset(hs, 0, sizeof(*hs));
    hs->hp = hp;
    hs->slot = i;
    hs->name = strdup(s->name);
    if (!hs->name)
        return -1;
    hs->addr = s->addr;
    hs->addr.text = NULL;
    hs->live = atomic_load(&s->state) != LB_SRV_REMOVED;
    hs->active_up = atomic_load(&s->health) == LB_HEALTH_UP;
    hs->serving = is_serving(s);
    ev_init(&hs->next, next_cb);
    hs->next.data = hs;
    if (hs->live && has_checks(hp))
        schedule(hs, first_delay_ms);
    return 0;
}

static uint64_t
first_delay(struct health *h, const struct hc_pool *hp)
{
    uint64_t iv = hp->pool->cf->health.interval;
    return iv ? rnd(h) % iv : 0;
}

static void
pool_free(struct health *h, struct hc_pool *hp)
{
    for (size_t i = 0; hp->srv && i < hp->nknown; i++)
        server_free(&hp->srv[i]);
    free(hp->srv);
    free(hp->name);
}

static int
pool_init(struct health *h, struct hc_pool *hp, struct lb_pool *p)
{
    hp->h = h;
    hp->pool = p;
    hp->name = strdup(p->cf->name);
    hp->srv = calloc(p->capacity ? p->capacity : 1, sizeof(*hp->srv));
    return hp->name && hp->srv ? 0 : -1;
}

/* ---- outlier detection and slow start, every tick ---- */

static void
uneject(struct hc_server *hs, uint64_t now, const char *why)
{
    hs->ejected = false;
    hs->clean_since = now;
    atomic_store_explicit(&srv_of(hs)->consecutive_failures, 0, memory_order_relaxed);
    set_effective(hs, why, NULL);
}

static void
outlier_look(struct hc_server *hs, uint64_t now, size_t *nejected, size_t max_ejected)
{
    const struct conf_outlier *o = &pcf(hs)->outlier;
    struct lb_server *s = srv_of(hs);
    char a[32], reason[160];

    if (hs->ejected) {
        if (now >= hs->eject_until) {
            uneject(hs, now, "ejection over");
            (*nejected)--;
        }
        return;
    }
    if (hs->ejections && now - hs->clean_since >= o->base_ejection) {
        hs->ejections--;
        hs->clean_since = now;
    }
    if (o->consecutive_failures == 0)
        return;
    unsigned cf = atomic_load_explicit(&s->consecutive_failures, memory_order_relaxed);
    if (!hs->serving) {
        /* Not taking traffic: a streak would be stale when it comes back. */
        if (cf)
            atomic_store_explicit(&s->consecutive_failures, 0, memory_order_relaxed);
        return;
    }
    if (cf < o->consecutive_failures) {
        hs->limit_warned = false;
        return;
    }
    if (*nejected >= max_ejected) {
        if (!hs->limit_warned)
            lb_warn("pool %s: server %s: %u consecutive failures, not ejected: %zu of the "
                    "pool's servers already are (max_ejection_percent %u)",
                    hs->hp->name, hs->name, cf, *nejected, o->max_ejection_percent);
        hs->limit_warned = true;
        return;
    }
    hs->ejections++;
    unsigned shift = hs->ejections - 1 < 30 ? hs->ejections - 1 : 30;
    uint64_t dur = o->base_ejection << shift;
    if (dur > o->max_ejection || dur >> shift != o->base_ejection)
        dur = o->max_ejection;
    hs->ejected = true;
    hs->eject_until = now + dur;
    hs->clean_since = now;
    (*nejected)++;
    snprintf(reason, sizeof(reason), "ejected: %u consecutive failures; back in %s", cf,
             fmt_ms(a, sizeof(a), dur));
    set_effective(hs, reason, NULL);
}

static void
ramp_step(struct hc_server *hs, uint64_t now)
{
    uint64_t ss = pcf(hs)->slow_start;
    uint64_t el = now - hs->ramp_start;
    struct lb_server *s = srv_of(hs);
    if (ss == 0 || el >= ss) {
        atomic_store_explicit(&s->ramp, 1000, memory_order_relaxed);
        hs->ramping = false;
        lb_debug("pool %s: server %s: slow start done", hs->hp->name, hs->name);
    } else if (now - hs->ramp_last >= RAMP_STEP_MS) {
        unsigned r = RAMP_START + (unsigned)((1000 - RAMP_START) * el / ss);
        atomic_store_explicit(&s->ramp, r, memory_order_relaxed);
        hs->ramp_last = now;
    } else {
        return;
    }
    bump(hs->hp->pool);
}

static void
pool_tick(struct health *h, struct hc_pool *hp, uint64_t now)
{
    struct lb_pool *p = hp->pool;
    size_t n = lb_pool_nservers(p);

    /* Servers added since the last look: probed at once, and eased in. */
    for (size_t i = hp->nknown; i < n && i < p->capacity; i++) {
        if (server_track(hp, i, 0) < 0) {
            lb_err("pool %s: out of memory tracking server %s", hp->name, p->servers[i].name);
            break;
        }
        hp->nknown = i + 1;
        if (hp->srv[i].serving && ramp_begin(&hp->srv[i], now)) {
            bump(p);
            ramp_log(&hp->srv[i]);
        }
    }

    size_t nlive = 0, nejected = 0;
    for (size_t i = 0; i < hp->nknown; i++) {
        struct hc_server *hs = &hp->srv[i];
        if (!hs->live)
            continue;
        if (atomic_load(&srv_of(hs)->state) == LB_SRV_REMOVED) {
            server_retire(hs);
            continue;
        }
        nlive++;
        nejected += hs->ejected;
    }
    size_t max_ejected = nlive * p->cf->outlier.max_ejection_percent / 100;

    for (size_t i = 0; i < hp->nknown; i++) {
        struct hc_server *hs = &hp->srv[i];
        if (!hs->live)
            continue;
        /* Back from maintenance or a drain: eased in like a recovery. */
        bool serving = is_serving(srv_of(hs));
        if (serving && !hs->serving && begin_serving(hs, now)) {
            bump(p);
            ramp_log(hs);
        }
        hs->serving = serving;
        outlier_look(hs, now, &nejected, max_ejected);
        if (hs->ramping)
            ramp_step(hs, now);
    }
}

static void
tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct health *h = t->data;
    uint64_t now = lb_monotonic_ms();
    for (size_t i = 0; i < h->npools; i++)
        if (h->pools[i].srv)
            pool_tick(h, &h->pools[i], now);
}

/* ---- lifecycle ---- */

static void
pools_free(struct health *h, struct hc_pool *pools, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pool_free(h, &pools[i]);
    free(pools);
}

/* Builds the state for ctl->snap. */
static struct hc_pool *
pools_build(struct health *h, size_t *n_out)
{
    struct lb_snapshot *snap = h->ctl->snap;
    struct hc_pool *pools = calloc(snap->npools ? snap->npools : 1, sizeof(*pools));
    if (!pools)
        return NULL;
    for (size_t i = 0; i < snap->npools; i++) {
        struct hc_pool *hp = &pools[i];
        if (pool_init(h, hp, &snap->pools[i]) < 0)
            goto fail;
        size_t n = lb_pool_nservers(hp->pool);
        for (size_t j = 0; j < n; j++) {
            if (server_track(hp, j, first_delay(h, hp)) < 0)
                goto fail;
            hp->nknown = j + 1;
        }
    }
    *n_out = snap->npools;
    return pools;
fail:
    pools_free(h, pools, snap->npools);
    return NULL;
}

static void
log_checks(const struct hc_pool *hp)
{
    const struct conf_pool *cp = hp->pool->cf;
    const struct conf_health *c = &cp->health;
    char a[32], b[32];
    if (has_checks(hp))
        lb_info("pool %s: %s health checks every %s (timeout %s), rise %u, fall %u", cp->name,
                c->type == CONF_HC_HTTP ? "http" : "tcp", fmt_ms(a, sizeof(a), c->interval),
                fmt_ms(b, sizeof(b), c->timeout), c->rise, c->fall);
}

int
lb_health_start(struct lb_ctl *ctl)
{
    struct health *h = calloc(1, sizeof(*h));
    if (!h)
        return -1;
    h->ctl = ctl;
    if (getrandom(&h->rng, sizeof(h->rng), GRND_NONBLOCK) != sizeof(h->rng))
        h->rng = lb_monotonic_ms();
    h->rng |= 1;
    h->pools = pools_build(h, &h->npools);
    if (!h->pools) {
        lb_err("health checks: out of memory");
        free(h);
        return -1;
    }
    for (size_t i = 0; i < h->npools; i++)
        log_checks(&h->pools[i]);
    ev_timer_init(&h->tick, tick_cb, TICK_S, TICK_S);
    h->tick.data = h;
    ev_timer_start(ctl->loop, &h->tick);
    ctl->health = h;
    return 0;
}

static struct hc_server *
find_old(struct hc_pool *old, size_t nold, const char *pool, const struct hc_server *ns)
{
    for (size_t i = 0; i < nold; i++) {
        if (strcmp(old[i].name, pool) != 0)
            continue;
        for (size_t j = 0; j < old[i].nknown; j++) {
            struct hc_server *os = &old[i].srv[j];
            if (os->live && strcmp(os->name, ns->name) == 0 && os->addr.salen == ns->addr.salen &&
                memcmp(&os->addr.sa, &ns->addr.sa, ns->addr.salen) == 0)
                return os;
        }
        return NULL;
    }
    return NULL;
}

static bool
pool_existed(struct hc_pool *old, size_t nold, const char *pool)
{
    for (size_t i = 0; i < nold; i++)
        if (strcmp(old[i].name, pool) == 0)
            return true;
    return false;
}

void
lb_health_reloaded(struct lb_ctl *ctl)
{
    struct health *h = ctl->health;
    if (!h)
        return;
    size_t nold = h->npools, nnew = 0;
    struct hc_pool *old = h->pools;
    struct hc_pool *pools = pools_build(h, &nnew);
    if (!pools) {
        /* Keeping the old state would leave pointers into the old snapshot:
         * run without checks rather than crash. */
        lb_err("health checks: out of memory after reload; checks stopped");
        pools_free(h, old, nold);
        h->pools = NULL;
        h->npools = 0;
        return;
    }
    uint64_t now = lb_monotonic_ms();
    for (size_t i = 0; i < nnew; i++) {
        struct hc_pool *hp = &pools[i];
        bool existed = pool_existed(old, nold, hp->name);
        for (size_t j = 0; j < hp->nknown; j++) {
            struct hc_server *hs = &hp->srv[j];
            if (!hs->live)
                continue;
            struct hc_server *os = find_old(old, nold, hp->name, hs);
            const char *why = "configuration reloaded";
            if (os) {
                /* Same server: its history carries over (the snapshot
                 * already carries health and ramp). */
                hs->active_up = os->active_up;
                hs->ok_run = os->ok_run;
                hs->fail_run = os->fail_run;
                hs->ejected = os->ejected;
                hs->ejections = os->ejections;
                hs->eject_until = os->eject_until;
                hs->clean_since = os->clean_since;
                hs->ramping = os->ramping;
                hs->ramp_start = os->ramp_start;
                hs->ramp_last = os->ramp_last;
            } else if (existed && hs->serving && ramp_begin(hs, now)) {
                ramp_log(hs); /* a server new to an existing pool */
            }
            if (!has_checks(hp) && !hs->active_up) {
                hs->active_up = true;
                why = "health checks removed from the configuration";
            }
            if (hs->ejected && hp->pool->cf->outlier.consecutive_failures == 0) {
                hs->ejected = false;
                why = "outlier detection turned off";
            }
            set_effective(hs, why, NULL);
            hs->serving = is_serving(srv_of(hs));
        }
        bump(hp->pool);
    }
    pools_free(h, old, nold);
    h->pools = pools;
    h->npools = nnew;
    for (size_t i = 0; i < nnew; i++)
        log_checks(&pools[i]);
}

void
lb_health_stop(struct lb_ctl *ctl)
{
    struct health *h = ctl->health;
    if (!h)
        return;
    ev_timer_stop(ctl->loop, &h->tick);
    pools_free(h, h->pools, h->npools);
    free(h);
    ctl->health = NULL;
}
