/*
 * A scaling group at run time: one pool, its servers, its policies and its
 * provider. This file holds what the group decides; group_jobs.c carries
 * it out on the job pool, group_reconcile.c reads the provider's list.
 *
 * Every SCALE_TICK the plugin calls scale_group_tick(). The first tick
 * adopts what the pool and the provider already hold; the provider's list
 * is read again every scale[].reconcile_interval (10 s unless configured;
 * in ticks, rounded up, at least 1) to adopt servers the group lost and to
 * replace those that stopped or never got an address. A provider that
 * cannot list (exec without `list`) is never asked: the group then knows
 * what the pool holds and what it made itself.
 *
 * Then, while this tern may act (no VRRP, or master of an instance), the
 * policies move desired: a scale-out alarm in ALARM adds servers each tick
 * its cooldown allows, a scale-in alarm removes them, target tracking
 * follows its metric. Neither scales in while a server is warming up: from
 * its launch until scale[].warmup after it went into service (AWS blocks a
 * scale-in the same way until instance warmup completes: a new server's
 * load is not yet what it will be). The group reconciles toward desired: it
 * launches servers (not before a failed launch's back-off has passed), or
 * terminates one in service, the newest unless scale[].remove_first says
 * otherwise, never one still starting. Every activity (launch, terminate,
 * adopt, desired) is logged, kept for the API and published on the event
 * bus as TERN_EV_SCALING.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scale/group_int.h"

/* ---- small helpers ---- */

uint64_t
group_now_ms(const struct scale_group *g)
{
    return (uint64_t)(g->h->monotonic(g->h) * 1000.0);
}

struct scale_server *
group_find(struct scale_group *g, const char *name)
{
    for (size_t i = 0; i < g->nsrv; i++)
        if (strcmp(g->srv[i].name, name) == 0)
            return &g->srv[i];
    return NULL;
}

void *
group_room(void *arr, size_t n, size_t *cap, size_t size)
{
    size_t c = *cap ? *cap * 2 : 8;
    void *p;

    if (n < *cap)
        return arr;
    p = realloc(arr, c * size);
    if (p != NULL)
        *cap = c;
    return p;
}

struct scale_server *
group_add_srv(struct scale_group *g, const char *name, enum scale_srv_state st)
{
    struct scale_server *s = group_room(g->srv, g->nsrv, &g->cap, sizeof(*s));

    if (s == NULL)
        return NULL;
    g->srv = s;
    s = &g->srv[g->nsrv++];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->st = st;
    s->since = g->h->monotonic(g->h);
    return s;
}

void
group_del_srv(struct scale_group *g, struct scale_server *s)
{
    size_t i = (size_t)(s - g->srv);

    memmove(&g->srv[i], &g->srv[i + 1], (g->nsrv - i - 1) * sizeof(*s));
    g->nsrv--;
}

void
group_set_state(struct scale_group *g, struct scale_server *s, enum scale_srv_state st)
{
    s->st = st;
    s->since = g->h->monotonic(g->h);
}

double
group_grace(const struct scale_group_cfg *c)
{
    return (double)(c->grace_ms != 0 ? c->grace_ms : SCALE_GRACE_MS) / 1000.0;
}

uint32_t
group_current(const struct scale_group *g)
{
    uint32_t n = 0;

    for (size_t i = 0; i < g->nsrv; i++)
        if (g->srv[i].st <= SRV_IN_SERVICE)
            n++;
    return n;
}

/* Launched by this group and not yet in service, or in service for less
 * than scale[].warmup. A server adopted in the pool or from the provider's
 * list ran before this tern saw it: it does not warm up. */
static bool
warming_srv(const struct scale_group *g, const struct scale_server *s)
{
    if (s->st < SRV_IN_SERVICE)
        return true;
    return s->st == SRV_IN_SERVICE && !s->adopted &&
           g->h->monotonic(g->h) - s->since < (double)g->cfg.warmup_ms / 1000.0;
}

static bool
warming(const struct scale_group *g)
{
    for (size_t i = 0; i < g->nsrv; i++)
        if (warming_srv(g, &g->srv[i]))
            return true;
    return false;
}

static const char *
state_name(enum scale_srv_state st)
{
    static const char *const names[] = {"creating", "probing", "in_service", "draining",
                                        "destroying"};

    return names[st];
}

/* ---- activities ---- */

static struct scale_activity *
find_act(struct scale_group *g, int id)
{
    for (size_t i = 0; i < g->nacts; i++)
        if (g->acts[i].id == id)
            return &g->acts[i];
    return NULL;
}

static void
publish(struct scale_group *g, const struct scale_activity *a, const char *state)
{
    struct tern_event ev = {
        .type = TERN_EV_SCALING,
        .name = g->cfg.pool,
        .pool = g->cfg.pool,
        .server = a->server[0] ? a->server : NULL,
        .state = state,
        .detail = a->reason,
        .metric = NULL,
        .value = NAN,
        .threshold = NAN,
    };
    char detail[1024];

    snprintf(detail, sizeof(detail), "%s %s: %s (%s)", a->action, a->server, a->reason, a->result);
    ev.detail = detail;
    g->h->publish(g->h, &ev);
}

int
group_activity(struct scale_group *g, const char *action, const char *server, const char *result,
               const char *fmt, ...)
{
    struct scale_activity *a;
    va_list ap;

    if (g->nacts < SCALE_ACTIVITIES) {
        a = &g->acts[g->nacts++];
    } else {
        a = &g->acts[g->head];
        g->head = (g->head + 1) % SCALE_ACTIVITIES;
    }
    memset(a, 0, sizeof(*a));
    a->id = ++g->next_act;
    a->time = g->h->now(g->h);
    snprintf(a->action, sizeof(a->action), "%s", action);
    snprintf(a->server, sizeof(a->server), "%s", server ? server : "");
    snprintf(a->result, sizeof(a->result), "%s", result);
    va_start(ap, fmt);
    vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
    va_end(ap);
    g->h->log(g->h, TERN_LOG_INFO, "group %s: %s%s%s: %s: %s", g->cfg.pool, a->action,
              a->server[0] ? " " : "", a->server, a->reason, a->result);
    publish(g, a, "started");
    return a->id;
}

void
group_activity_result(struct scale_group *g, int id, bool ok, bool final, const char *fmt, ...)
{
    struct scale_activity *a = find_act(g, id);
    char buf[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (a == NULL)
        return;
    snprintf(a->result, sizeof(a->result), "%s", buf);
    g->h->log(g->h, ok ? TERN_LOG_INFO : TERN_LOG_WARN, "group %s: %s%s%s: %s", g->cfg.pool,
              a->action, a->server[0] ? " " : "", a->server, a->result);
    publish(g, a, !ok ? "failed" : final ? "successful" : "progress");
}

/* ---- decisions ---- */

static void
apply_policies(struct scale_group *g)
{
    uint32_t cur = group_current(g), old = g->pol.desired, n;
    uint64_t t = group_now_ms(g);
    const char *why = NULL;

    if (g->cfg.out_alarm != NULL && g->out_alarm_on) {
        n = scale_policy_step(&g->pol, SCALE_OUT, cur, t, &why);
        if (n != old)
            group_activity(g, "desired", NULL, "successful", "%u -> %u: alarm %s is in ALARM", old,
                           n, g->cfg.out_alarm);
        return;
    }
    if (g->cfg.in_alarm != NULL && g->in_alarm_on && !warming(g)) {
        n = scale_policy_step(&g->pol, SCALE_IN, cur, t, &why);
        if (n != old)
            group_activity(g, "desired", NULL, "successful", "%u -> %u: alarm %s is in ALARM", old,
                           n, g->cfg.in_alarm);
        return;
    }
    if (g->cfg.tt_metric != NULL) {
        double v;

        if (g->h->metric_get(g->h, g->cfg.tt_metric, &v) != 0)
            return;
        /* A warming server's figures are in the metric (the host's, read by
         * alarms too): its idle start would pull it down, so a low reading
         * is not even recorded for the scale-in window, and no reading may
         * lower desired, also one above the target while a failed launch
         * left the group short of desired. */
        if (warming(g) &&
            (v < g->pol.cfg.target || scale_policy_recommend(&g->pol.cfg, cur ? cur : 1, v) < old))
            return;
        n = scale_policy_track(&g->pol, cur ? cur : 1, v, t, &why);
        if (n != old)
            group_activity(g, "desired", NULL, "successful", "%u -> %u: %s is %.3g, target %.3g",
                           old, n, g->cfg.tt_metric, v, g->pol.cfg.target);
    }
}

struct conns {
    const char *name;
    uint32_t active;
    bool found;
};

static void
conns_cb(void *arg, const struct tern_server_info *info)
{
    struct conns *c = arg;

    if (strcmp(info->name, c->name) == 0) {
        c->active = info->active;
        c->found = true;
    }
}

/* What the pool has in flight on s; 0 when it does not hold s. */
static uint32_t
active_of(const struct scale_group *g, const struct scale_server *s)
{
    struct conns c = {.name = s->name};

    g->h->pool_servers(g->h, g->cfg.pool, conns_cb, &c);
    return c.found ? c.active : 0;
}

/* The server in service that scale[].remove_first takes next, or NULL.
 * Indexes follow launch order (names are never used again), so the
 * highest is the newest even across restarts. */
static struct scale_server *
next_to_remove(struct scale_group *g)
{
    struct scale_server *victim = NULL;
    uint32_t least = 0;

    for (size_t i = 0; i < g->nsrv; i++) {
        struct scale_server *s = &g->srv[i];
        uint32_t active = 0;
        bool better;

        if (s->st != SRV_IN_SERVICE)
            continue;
        if (g->cfg.remove_first == SCALE_REMOVE_LEAST_CONN)
            active = active_of(g, s);
        if (victim == NULL)
            better = true;
        else if (g->cfg.remove_first == SCALE_REMOVE_OLDEST)
            better = s->index < victim->index;
        else if (g->cfg.remove_first == SCALE_REMOVE_LEAST_CONN && active != least)
            better = active < least;
        else
            better = s->index > victim->index;
        if (better) {
            victim = s;
            least = active;
        }
    }
    return victim;
}

static void
toward_desired(struct scale_group *g)
{
    uint32_t cur = group_current(g), want = g->pol.desired;
    char reason[256];

    while (cur < want && g->h->monotonic(g->h) >= g->next_launch) {
        snprintf(reason, sizeof(reason), "desired %u, have %u", want, cur);
        group_launch(g, reason);
        if (group_current(g) == cur)
            return; /* could not */
        cur++;
    }
    while (cur > want) {
        /* Never one still starting: it is not in the pool yet. */
        struct scale_server *victim = next_to_remove(g);

        if (victim == NULL)
            return;
        snprintf(reason, sizeof(reason), "desired %u, have %u", want, cur);
        group_terminate(g, victim, reason);
        cur--;
    }
}

/* An exec provider without a `list` program cannot list: its destroy is
 * never asked instead (provider_exec.c says why). */
static bool
can_list(const struct scale_group *g)
{
    return g->prov.ops->can_list == NULL || g->prov.ops->can_list(g->prov.p);
}

/* Ticks between two reads of the provider's list: reconcile_interval
 * rounded up to whole ticks, at least 1. */
static unsigned
relist_ticks(const struct scale_group *g)
{
    uint64_t ms = g->cfg.relist_ms != 0 ? g->cfg.relist_ms : SCALE_RELIST_MS;
    uint64_t tick_ms = (uint64_t)(SCALE_TICK * 1000);
    uint64_t n = (ms + tick_ms - 1) / tick_ms;

    return n == 0 ? 1 : n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

void
scale_group_tick(struct scale_group *g, bool act)
{
    if (g->retired)
        return;
    g->acting = act;
    if (!g->started) {
        if (!g->listing) {
            /* What the pool already holds (a reload of the plugin)... */
            group_adopt_pool(g);
            /* ...and what the provider knows (a restart of tern). */
            if (!can_list(g)) {
                g->h->log(g->h, TERN_LOG_INFO,
                          "group %s: the provider has no list program: servers made before this "
                          "start are not adopted",
                          g->cfg.pool);
                g->started = true;
            } else if (group_submit(g, group_job_new(g, JOB_LIST, NULL))) {
                g->listing = true;
            } else {
                g->started = true;
            }
        }
        return;
    }
    group_follow_drains(g);
    group_probe_new(g);
    if (!act) {
        /* A tern that may not act reads no list: a server's time without
         * an address starts again when it may. */
        g->naddrless = 0;
        return;
    }
    if (++g->ticks % relist_ticks(g) == 0 && !g->listing && can_list(g) &&
        group_submit(g, group_job_new(g, JOB_LIST, NULL)))
        g->listing = true;
    apply_policies(g);
    toward_desired(g);
}

void
scale_group_event(struct scale_group *g, const struct tern_event *ev)
{
    bool raised = ev->type == TERN_EV_ALARM_RAISED;

    if (g->retired || ev->name == NULL)
        return;
    if (ev->type != TERN_EV_ALARM_RAISED && ev->type != TERN_EV_ALARM_CLEARED)
        return;
    if (g->cfg.out_alarm != NULL && strcmp(ev->name, g->cfg.out_alarm) == 0)
        g->out_alarm_on = raised;
    if (g->cfg.in_alarm != NULL && strcmp(ev->name, g->cfg.in_alarm) == 0)
        g->in_alarm_on = raised;
}

/* ---- life ---- */

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void
cfg_copy(struct scale_group_cfg *d, const struct scale_group_cfg *s)
{
    *d = *s;
    d->pool = dup_or_null(s->pool);
    d->create = dup_or_null(s->create);
    d->destroy = dup_or_null(s->destroy);
    d->list = dup_or_null(s->list);
    d->lv_uri = dup_or_null(s->lv_uri);
    d->lv_template = dup_or_null(s->lv_template);
    d->lv_storage = dup_or_null(s->lv_storage);
    d->out_alarm = dup_or_null(s->out_alarm);
    d->in_alarm = dup_or_null(s->in_alarm);
    d->tt_metric = dup_or_null(s->tt_metric);
}

void
scale_cfg_free(struct scale_group_cfg *c)
{
    free(c->pool);
    free(c->create);
    free(c->destroy);
    free(c->list);
    free(c->lv_uri);
    free(c->lv_template);
    free(c->lv_storage);
    free(c->out_alarm);
    free(c->in_alarm);
    free(c->tt_metric);
    memset(c, 0, sizeof(*c));
}

static int
make_provider(struct scale_group *g, const struct scale_group_cfg *cfg, struct scale_provider *out)
{
    out->ops = NULL;
    out->p = NULL;
    if (cfg->provider == SCALE_PROV_EXEC) {
        out->ops = &scale_exec_ops;
        out->p = scale_exec_new(cfg->create, cfg->destroy, cfg->list, cfg->timeout_ms);
    }
#ifdef SCALE_HAVE_LIBVIRT
    if (cfg->provider == SCALE_PROV_LIBVIRT) {
        out->ops = &scale_lv_ops;
        out->p = scale_lv_new(cfg->lv_uri, cfg->lv_template, cfg->lv_storage, cfg->pool,
                              group_grace(cfg));
    }
#endif
    return out->p != NULL ? 0 : -ENOMEM;
}

static bool
same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* A libvirt provider waits grace_period for an address on its job threads,
 * where a reload must not change it under a running create: a new
 * grace_period makes a new provider. */
static bool
same_provider(const struct scale_group_cfg *a, const struct scale_group_cfg *b)
{
    return a->provider == b->provider && same(a->create, b->create) &&
           same(a->destroy, b->destroy) && same(a->list, b->list) &&
           a->timeout_ms == b->timeout_ms && same(a->lv_uri, b->lv_uri) &&
           same(a->lv_template, b->lv_template) && same(a->lv_storage, b->lv_storage) &&
           (a->provider != SCALE_PROV_LIBVIRT || a->grace_ms == b->grace_ms);
}

struct scale_group *
scale_group_new(struct scale *sc, const struct scale_group_cfg *cfg)
{
    struct scale_group *g = calloc(1, sizeof(*g));

    if (g == NULL)
        return NULL;
    g->sc = sc;
    g->h = sc->h;
    cfg_copy(&g->cfg, cfg);
    scale_policy_init(&g->pol, &cfg->pol, cfg->desired);
    g->next_index = 1;
    if (make_provider(g, cfg, &g->prov) < 0) {
        scale_group_free(g);
        return NULL;
    }
    return g;
}

void
scale_group_reconfigure(struct scale_group *g, const struct scale_group_cfg *cfg)
{
    uint32_t desired = g->pol.desired;

    if (!same_provider(&g->cfg, cfg)) {
        struct scale_provider np;
        struct scale_provider *r = realloc(g->retired_provs, (g->nretired_provs + 1) * sizeof(*r));

        /* Jobs running may still use the old one: it goes with the group. */
        if (r != NULL)
            g->retired_provs = r;
        if (r != NULL && make_provider(g, cfg, &np) == 0) {
            r[g->nretired_provs++] = g->prov;
            g->prov = np;
            g->h->log(g->h, TERN_LOG_INFO, "group %s: provider %s from now on", cfg->pool,
                      np.ops->name);
        } else {
            g->h->log(g->h, TERN_LOG_ERR, "group %s: cannot change the provider: out of memory",
                      cfg->pool);
        }
    }
    scale_cfg_free(&g->cfg);
    cfg_copy(&g->cfg, cfg);
    scale_policy_set_cfg(&g->pol, &cfg->pol);
    if (g->pol.desired != desired)
        group_activity(g, "desired", NULL, "successful", "%u -> %u: new min/max", desired,
                       g->pol.desired);
    g->retired = false;
}

void
scale_group_free(struct scale_group *g)
{
    if (g == NULL)
        return;
    if (g->prov.ops != NULL)
        g->prov.ops->free(g->prov.p);
    for (size_t i = 0; i < g->nretired_provs; i++)
        g->retired_provs[i].ops->free(g->retired_provs[i].p);
    free(g->retired_provs);
    scale_cfg_free(&g->cfg);
    free(g->srv);
    free(g->addrless);
    free(g);
}

void *
scale_group_json(const struct scale_group *g)
{
    json_t *o, *servers = json_array(), *acts = json_array();

    for (size_t i = 0; i < g->nsrv; i++) {
        const struct scale_server *s = &g->srv[i];

        json_array_append_new(servers,
                              json_pack("{s:s, s:s, s:s, s:b, s:b}", "name", s->name, "address",
                                        s->address, "state", state_name(s->st), "adopted",
                                        s->adopted, "warming", warming_srv(g, s)));
    }
    /* Oldest first. */
    for (size_t k = 0; k < g->nacts; k++) {
        const struct scale_activity *a = &g->acts[(g->head + k) % SCALE_ACTIVITIES];

        json_array_append_new(acts,
                              json_pack("{s:I, s:f, s:s, s:s, s:s, s:s}", "id", (json_int_t)a->id,
                                        "time", a->time, "action", a->action, "server", a->server,
                                        "reason", a->reason, "result", a->result));
    }
    o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:b, s:b, s:o, s:o}", "pool", g->cfg.pool,
                  "provider", g->prov.ops->name, "min", (json_int_t)g->pol.cfg.min, "max",
                  (json_int_t)g->pol.cfg.max, "desired", (json_int_t)g->pol.desired, "current",
                  (json_int_t)group_current(g), "started", g->started, "retired", g->retired,
                  "servers", servers, "activities", acts);
    return o;
}
