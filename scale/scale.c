/*
 * The scale plugin (scale.so): scaling groups that grow and shrink a pool.
 *
 * The section `scale:` is a list of groups (conf/tern_schema_plugins.c has
 * validated it and applied its defaults). Each becomes a struct scale_group
 * (group.c). One host timer ticks every group every SCALE_TICK seconds; one
 * subscription feeds them alarm raised/cleared events and keeps the VRRP
 * state: once any VRRP state event has been seen, groups act only while
 * this tern is MASTER of at least one instance (the BACKUP keeps watching
 * and follows the drains it started, but launches and terminates nothing);
 * without VRRP events it acts. GET /api/v1/scale lists the groups, their
 * servers and recent activities.
 *
 * Target tracking takes its tolerance and its two stabilization windows
 * from scale[].target_tracking; a configuration that reaches the plugin
 * without them gets the schema's defaults, the HPA's (10 %, none, 300 s).
 * A reload reconfigures groups by pool; a group dropped from the file stops
 * acting (its servers are left as they are).
 */
#include "scale/scale.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "lb/plugin.h"

#define TT_TOLERANCE 0.1
#define TT_OUT_WINDOW_MS 0
#define TT_IN_WINDOW_MS 300000

static const char *
str(const struct tern_value *map, const char *key)
{
    return tern_value_str(tern_value_get(map, key), NULL);
}

static int
read_group(const struct tern_host *h, const struct tern_value *v, struct scale_group_cfg *c)
{
    const struct tern_value *prov = tern_value_get(v, "provider");
    /* Only the chosen provider has its required key. */
    const struct tern_value *ex = tern_value_get(prov, "exec");
    const struct tern_value *lv = tern_value_get(prov, "libvirt");
    const struct tern_value *out = tern_value_get(v, "scale_out");
    const struct tern_value *in = tern_value_get(v, "scale_in");
    const struct tern_value *tt = tern_value_get(v, "target_tracking");

    memset(c, 0, sizeof(*c));
    c->pool = (char *)str(v, "pool");
    if (c->pool == NULL) {
        h->log(h, TERN_LOG_ERR, "a group without a pool");
        return -EINVAL;
    }
    c->pol.min = (uint32_t)tern_value_int(tern_value_get(v, "min"), 0);
    c->pol.max = (uint32_t)tern_value_int(tern_value_get(v, "max"), c->pol.min);
    c->desired = (uint32_t)tern_value_int(tern_value_get(v, "desired"), c->pol.min);
    c->relist_ms =
        (uint64_t)tern_value_int(tern_value_get(v, "reconcile_interval"), SCALE_RELIST_MS);
    c->grace_ms = (uint64_t)tern_value_int(tern_value_get(v, "grace_period"), SCALE_GRACE_MS);
    c->warmup_ms = (uint64_t)tern_value_int(tern_value_get(v, "warmup"), 0);
    if (str(v, "remove_first") != NULL && strcmp(str(v, "remove_first"), "oldest") == 0)
        c->remove_first = SCALE_REMOVE_OLDEST;
    else if (str(v, "remove_first") != NULL &&
             strcmp(str(v, "remove_first"), "least_connections") == 0)
        c->remove_first = SCALE_REMOVE_LEAST_CONN;
    if (tern_value_get(ex, "create") == NULL)
        ex = NULL;
    if (tern_value_get(lv, "template") == NULL)
        lv = NULL;
    if (ex != NULL) {
        c->provider = SCALE_PROV_EXEC;
        c->create = (char *)str(ex, "create");
        c->destroy = (char *)str(ex, "destroy");
        c->list = (char *)str(ex, "list");
        c->timeout_ms = (uint64_t)tern_value_int(tern_value_get(ex, "timeout"), 60000);
    } else if (lv != NULL) {
        c->provider = SCALE_PROV_LIBVIRT;
        c->lv_uri = (char *)str(lv, "uri");
        c->lv_template = (char *)str(lv, "template");
        c->lv_storage = (char *)str(lv, "storage_pool");
#ifndef SCALE_HAVE_LIBVIRT
        h->log(h, TERN_LOG_ERR, "group %s: this scale.so was built without libvirt", c->pool);
        return -ENOTSUP;
#endif
    } else {
        h->log(h, TERN_LOG_ERR, "group %s: no provider", c->pool);
        return -EINVAL;
    }
    if (out != NULL) {
        c->out_alarm = (char *)str(out, "alarm");
        c->pol.add = (uint32_t)tern_value_int(tern_value_get(out, "add"), 1);
        c->pol.add_pct = (uint32_t)tern_value_int(tern_value_get(out, "add_percent"), 0);
        c->pol.add_min = (uint32_t)tern_value_int(tern_value_get(out, "min_adjustment"), 1);
        c->pol.out_cooldown_ms = (uint64_t)tern_value_int(tern_value_get(out, "cooldown"), 300000);
    }
    if (in != NULL) {
        c->in_alarm = (char *)str(in, "alarm");
        c->pol.remove = (uint32_t)tern_value_int(tern_value_get(in, "remove"), 1);
        c->pol.remove_pct = (uint32_t)tern_value_int(tern_value_get(in, "remove_percent"), 0);
        c->pol.remove_min = (uint32_t)tern_value_int(tern_value_get(in, "min_adjustment"), 1);
        c->pol.in_cooldown_ms = (uint64_t)tern_value_int(tern_value_get(in, "cooldown"), 300000);
    }
    if (tt != NULL) {
        c->tt_metric = (char *)str(tt, "metric");
        c->pol.tracking = true;
        c->pol.target = tern_value_double(tern_value_get(tt, "target"), 1.0);
        c->pol.tolerance = tern_value_double(tern_value_get(tt, "tolerance"), TT_TOLERANCE);
        c->pol.out_window_ms = (uint64_t)tern_value_int(
            tern_value_get(tt, "scale_out_stabilization"), TT_OUT_WINDOW_MS);
        c->pol.in_window_ms =
            (uint64_t)tern_value_int(tern_value_get(tt, "scale_in_stabilization"), TT_IN_WINDOW_MS);
    }
    return 0;
}

static int
configure(struct scale *sc, const struct tern_value *sec)
{
    const struct tern_host *h = sc->h;
    size_t n = sec != NULL && sec->kind == TERN_VAL_LIST ? sec->n : 0;
    struct scale_group_cfg *cfgs = calloc(n ? n : 1, sizeof(*cfgs));
    struct scale_group **groups;
    size_t ng = 0;
    int r = 0;

    if (cfgs == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n && r == 0; i++)
        r = read_group(h, &sec->items[i], &cfgs[i]);
    if (r < 0) {
        free(cfgs);
        return r;
    }
    groups = calloc(n + sc->ngroups + 1, sizeof(*groups));
    if (groups == NULL) {
        free(cfgs);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct scale_group *g = NULL;

        for (size_t k = 0; k < sc->ngroups; k++) {
            if (sc->groups[k] != NULL && strcmp(sc->groups[k]->cfg.pool, cfgs[i].pool) == 0) {
                g = sc->groups[k];
                sc->groups[k] = NULL;
                scale_group_reconfigure(g, &cfgs[i]);
                break;
            }
        }
        if (g == NULL)
            g = scale_group_new(sc, &cfgs[i]);
        if (g == NULL) {
            r = -ENOMEM;
            continue;
        }
        groups[ng++] = g;
    }
    /* Groups gone from the file stay (jobs may point at them), retired. */
    for (size_t k = 0; k < sc->ngroups; k++) {
        if (sc->groups[k] == NULL)
            continue;
        if (!sc->groups[k]->retired)
            h->log(h, TERN_LOG_INFO, "group %s: no longer configured, stops scaling",
                   sc->groups[k]->cfg.pool);
        sc->groups[k]->retired = true;
        groups[ng++] = sc->groups[k];
    }
    free(sc->groups);
    sc->groups = groups;
    sc->ngroups = ng;
    free(cfgs);
    h->log(h, TERN_LOG_INFO, "%zu scaling group%s", n, n == 1 ? "" : "s");
    return r;
}

static bool
may_act(const struct scale *sc)
{
    if (sc->nvrrp == 0)
        return true;
    for (size_t i = 0; i < sc->nvrrp; i++)
        if (sc->vrrp[i].master)
            return true;
    return false;
}

static void
on_tick(void *arg)
{
    struct scale *sc = arg;
    bool act = may_act(sc);

    for (size_t i = 0; i < sc->ngroups; i++)
        scale_group_tick(sc->groups[i], act);
}

static void
on_event(void *arg, const struct tern_event *ev)
{
    struct scale *sc = arg;

    if (ev->type == TERN_EV_VRRP_STATE && ev->name != NULL && ev->state != NULL) {
        size_t i = 0;
        bool was = may_act(sc);

        while (i < sc->nvrrp && strcmp(sc->vrrp[i].name, ev->name) != 0)
            i++;
        if (i == sc->nvrrp && i < SCALE_VRRP_MAX) {
            snprintf(sc->vrrp[i].name, sizeof(sc->vrrp[i].name), "%s", ev->name);
            sc->nvrrp++;
        }
        if (i < sc->nvrrp)
            sc->vrrp[i].master = strcmp(ev->state, "MASTER") == 0;
        if (was != may_act(sc))
            sc->h->log(sc->h, TERN_LOG_INFO, "VRRP %s is %s: %s", ev->name, ev->state,
                       may_act(sc) ? "scaling here" : "not scaling (a backup watches only)");
        return;
    }
    for (size_t i = 0; i < sc->ngroups; i++)
        scale_group_event(sc->groups[i], ev);
}

static char *
api_scale(void *arg, const char *route)
{
    struct scale *sc = arg;
    json_t *root = json_object(), *arr = json_array();
    char *out;

    for (size_t i = 0; i < sc->ngroups; i++)
        json_array_append_new(arr, scale_group_json(sc->groups[i]));
    json_object_set_new(root, "groups", arr);
    json_object_set_new(root, "scaling", json_boolean(may_act(sc)));
    out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}

static void
scale_fini(void *state)
{
    struct scale *sc = state;

    if (sc == NULL)
        return;
    for (size_t i = 0; i < sc->ngroups; i++)
        scale_group_free(sc->groups[i]);
    free(sc->groups);
    free(sc);
}

static int
scale_init(const struct tern_host *h, const struct tern_value *sec, void **state)
{
    struct scale *sc = calloc(1, sizeof(*sc));
    int r;

    if (sc == NULL)
        return -ENOMEM;
    sc->h = h;
    r = configure(sc, sec);
    if (r == 0) {
        sc->sub =
            h->subscribe(h,
                         TERN_EV_MASK(TERN_EV_ALARM_RAISED) | TERN_EV_MASK(TERN_EV_ALARM_CLEARED) |
                             TERN_EV_MASK(TERN_EV_VRRP_STATE),
                         on_event, sc);
        r = sc->sub < 0 ? sc->sub : 0;
    }
    if (r == 0) {
        sc->tick = h->timer_add(h, 0.01, SCALE_TICK, on_tick, sc);
        r = sc->tick == NULL ? -ENOMEM : 0;
    }
    if (r == 0)
        r = h->api_register(h, "/api/v1/scale", api_scale, sc);
    if (r < 0) {
        h->log(h, TERN_LOG_ERR, "cannot start: %s", strerror(-r));
        scale_fini(sc);
        return r;
    }
    *state = sc;
    return 0;
}

static int
scale_reload(void *state, const struct tern_value *sec)
{
    return configure(state, sec);
}

TERN_PLUGIN_EXPORT const struct tern_plugin tern_plugin_entry = {
    .api_version = TERN_PLUGIN_API_VERSION,
    .name = "scale",
    .section = "scale",
    .init = scale_init,
    .reload = scale_reload,
    .fini = scale_fini,
};
