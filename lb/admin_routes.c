/*
 * The admin API's routes: a table of path patterns and methods, the bearer
 * token check for every mutating call, strict JSON bodies (unknown fields
 * and wrong types are refused, so a typo never passes silently), and the
 * JSON views of pools, servers, listeners and reloads. Changes go through
 * lb/runtime.h like every other control-plane caller, so they are logged
 * the same way.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb/admin_int.h"
#include "lb/plugin_host.h"
#include "lb/reload.h"
#include "lb/vrrp.h"

#define MAX_SEGS 8

enum {
    M_GET = 1u << 0,
    M_POST = 1u << 1,
    M_PUT = 1u << 2,
    M_PATCH = 1u << 3,
    M_DELETE = 1u << 4,
};

struct ctx {
    struct admin *a;
    const struct admin_req *rq;
    struct admin_resp *rs;
    char *seg[MAX_SEGS];
    size_t nseg;
    json_t *body; /* the parsed body of a mutating call, NULL when empty */
    struct lb_pool *pool;
    struct lb_server *srv;
};

void
admin_error(struct admin_resp *rs, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *m = json_string(msg);
    if (!m) {
        /* Not UTF-8 (a name decoded from the path): show the bytes as '?'. */
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        m = json_string(msg);
    }
    json_t *o = json_pack("{s:o, s:i}", "error", m, "status", status);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    rs->status = status;
    rs->ctype = NULL;
    admin_sbuf_free(&rs->body);
    if (s) {
        admin_sbuf_puts(&rs->body, s);
        admin_sbuf_puts(&rs->body, "\n");
    } else {
        rs->body.oom = true;
    }
    free(s);
    json_decref(o);
}

/* Takes o (a new reference) as the response body. */
static void
reply(struct ctx *x, int status, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(o);
    x->rs->status = status;
    if (!s) {
        x->rs->body.oom = true;
        return;
    }
    admin_sbuf_puts(&x->rs->body, s);
    admin_sbuf_puts(&x->rs->body, "\n");
    free(s);
}

/* ---- JSON views ---- */

static json_t *
num(double v, double unit)
{
    return isnan(v) ? json_null() : json_real(round(v / unit) * unit);
}

static json_t *
latency_json(const uint64_t *b)
{
    json_t *o = json_object();
    json_object_set_new(o, "p50", num(admin_percentile(b, 0.50), 0.001));
    json_object_set_new(o, "p95", num(admin_percentile(b, 0.95), 0.001));
    json_object_set_new(o, "p99", num(admin_percentile(b, 0.99), 0.001));
    return o;
}

static json_t *
u64(atomic_ulong *v)
{
    return json_integer((json_int_t)atomic_load_explicit(v, memory_order_relaxed));
}

static const char *const classes[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

static json_t *
server_json(struct admin *a, struct lb_pool *p, struct lb_server *s)
{
    uint64_t b[LB_LAT_BUCKETS + 1];
    json_t *o = json_object(), *resp = json_object();

    admin_server_buckets(s, b);
    json_object_set_new(o, "name", json_string(s->name));
    json_object_set_new(o, "address", json_string(s->addr.text));
    json_object_set_new(o, "weight", json_integer(atomic_load(&s->weight)));
    json_object_set_new(o, "state", json_string(lb_srv_state_name(atomic_load(&s->state))));
    json_object_set_new(o, "health",
                        json_string(atomic_load(&s->health) == LB_HEALTH_UP ? "up" : "down"));
    json_object_set_new(o, "active_connections", json_integer(atomic_load(&s->active)));
    json_object_set_new(o, "requests_total", u64(&s->st.requests));
    json_object_set_new(o, "requests_per_second", num(admin_server_rps(a, p, s), 0.01));
    for (int k = 1; k < 6; k++)
        json_object_set_new(resp, classes[k], u64(&s->st.responses[k]));
    json_object_set_new(resp, classes[0], u64(&s->st.responses[0]));
    json_object_set_new(o, "responses", resp);
    json_object_set_new(o, "bytes_in", u64(&s->st.bytes_in));
    json_object_set_new(o, "bytes_out", u64(&s->st.bytes_out));
    json_object_set_new(o, "connect_errors", u64(&s->st.connect_errors));
    json_object_set_new(o, "connections_total", u64(&s->st.connections));
    json_object_set_new(o, "latency_ms", latency_json(b));
    json_object_set_new(o, "dynamic", json_boolean(s->dynamic));
    json_object_set_new(
        o, "removing",
        json_boolean(atomic_load(&s->state) == LB_SRV_DRAIN && s->remove_when_drained));
    return o;
}

static json_t *
pool_json(struct admin *a, struct lb_pool *p)
{
    json_t *o = json_object(), *servers = json_array(), *resp = json_object();
    size_t n = lb_pool_nservers(p), total = 0, healthy = 0;
    uint64_t active = 0, b[LB_LAT_BUCKETS + 1], answers[6];
    struct admin_pool_stats *ps = admin_pool_stats(a, p);

    /* Every answer for the pool, as /metrics' tern_pool_responses_total:
     * tern's own (no server could take the request) and every server's,
     * removed ones included. */
    for (int k = 0; k < 6; k++)
        answers[k] = atomic_load_explicit(&p->local_responses[k], memory_order_relaxed);
    for (size_t i = 0; i < n; i++) {
        struct lb_server *s = &p->servers[i];
        active += atomic_load(&s->active);
        for (int k = 0; k < 6; k++)
            answers[k] += atomic_load_explicit(&s->st.responses[k], memory_order_relaxed);
        if (atomic_load(&s->state) == LB_SRV_REMOVED)
            continue;
        total++;
        healthy += atomic_load(&s->health) == LB_HEALTH_UP;
        json_array_append_new(servers, server_json(a, p, s));
    }
    admin_pool_buckets(p, b);
    json_object_set_new(o, "name", json_string(p->cf->name));
    json_object_set_new(o, "balance", json_string(p->ops->name));
    json_object_set_new(o, "servers", servers);
    json_object_set_new(o, "servers_total", json_integer((json_int_t)total));
    json_object_set_new(o, "healthy_servers", json_integer((json_int_t)healthy));
    json_object_set_new(o, "active_connections", json_integer((json_int_t)active));
    json_object_set_new(o, "requests_total", u64(&p->requests));
    json_object_set_new(o, "requests_per_second", num(ps ? ps->rps : 0, 0.01));
    json_object_set_new(o, "no_server_total", u64(&p->no_server));
    for (int k = 0; k < 6; k++)
        json_object_set_new(resp, classes[k], json_integer((json_int_t)answers[k]));
    json_object_set_new(o, "responses", resp);
    json_object_set_new(o, "latency_ms", latency_json(b));
    json_object_set_new(o, "free_slots", json_integer((json_int_t)(p->capacity - n)));
    return o;
}

/* ---- request helpers ---- */

/* Checks the bearer token of a mutating call; answers 401/403 if wrong. */
static bool
authorized(struct ctx *x)
{
    const char *tok = x->a->token;
    struct http1_str h = x->rq->auth;

    if (!tok) {
        admin_error(x->rs, 403, "mutating calls are disabled: admin.token_file is not configured");
        return false;
    }
    if (!h.p || h.len < 7 || strncasecmp(h.p, "bearer ", 7) != 0) {
        x->rs->www_auth = true;
        admin_error(x->rs, 401, "missing bearer token (Authorization: Bearer <token>)");
        return false;
    }
    const char *g = h.p + 7;
    size_t glen = h.len - 7, tlen = strlen(tok);
    while (glen && *g == ' ') {
        g++;
        glen--;
    }
    /* Time independent of where the first difference is. */
    unsigned char diff = glen != tlen;
    for (size_t i = 0; i < tlen; i++)
        diff |= (unsigned char)tok[i] ^ (unsigned char)(i < glen ? g[i] : 0);
    if (diff) {
        x->rs->www_auth = true;
        admin_error(x->rs, 401, "invalid bearer token");
        return false;
    }
    return true;
}

struct field {
    const char *key;
    json_type type;
    bool required;
    json_t *val; /* out: borrowed */
};

static const char *
type_name(json_type t)
{
    return t == JSON_STRING ? "a string" : t == JSON_INTEGER ? "an integer" : "a value";
}

/* Checks x->body against the fields allowed (none: the body must be empty
 * or {}). Answers 400 and returns false on an unknown, missing or mistyped
 * field. */
static bool
fields(struct ctx *x, struct field *f, size_t n)
{
    if (!x->body) {
        for (size_t i = 0; i < n; i++) {
            if (f[i].required) {
                admin_error(x->rs, 400, "request body must be a JSON object with \"%s\"", f[i].key);
                return false;
            }
        }
        return true;
    }
    for (void *it = json_object_iter(x->body); it; it = json_object_iter_next(x->body, it)) {
        const char *key = json_object_iter_key(it);
        json_t *v = json_object_iter_value(it);
        size_t i = 0;
        while (i < n && strcmp(f[i].key, key) != 0)
            i++;
        if (i == n) {
            admin_error(x->rs, 400, "unknown field \"%s\"", key);
            return false;
        }
        if (json_typeof(v) != f[i].type) {
            admin_error(x->rs, 400, "field \"%s\" must be %s", key, type_name(f[i].type));
            return false;
        }
        f[i].val = v;
    }
    for (size_t i = 0; i < n; i++) {
        if (f[i].required && !f[i].val) {
            admin_error(x->rs, 400, "missing field \"%s\"", f[i].key);
            return false;
        }
    }
    return true;
}

static bool
weight_ok(struct ctx *x, json_t *w, uint32_t *out)
{
    json_int_t v = json_integer_value(w);
    if (v < 0 || v > 256) {
        admin_error(x->rs, 400, "field \"weight\" must be between 0 and 256");
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* Finds the pool named by segment 3 and, when want_server, the server named
 * by segment 5; answers 404 when either is missing. */
static bool
lookup(struct ctx *x, bool want_server)
{
    x->pool = lb_pool_find(x->a->ctl->snap, x->seg[3]);
    if (!x->pool) {
        admin_error(x->rs, 404, "no pool named \"%s\"", x->seg[3]);
        return false;
    }
    if (!want_server)
        return true;
    x->srv = lb_server_find(x->pool, x->seg[5]);
    if (!x->srv) {
        admin_error(x->rs, 404, "pool %s has no server named \"%s\"", x->seg[3], x->seg[5]);
        return false;
    }
    return true;
}

/* After a call that may have changed x->srv's admin state: plugins hear
 * the server go down or up now, not at the sampler's next second. */
static void
tell_plugins(struct ctx *x)
{
    char why[64];

    snprintf(why, sizeof(why), "set to %s through the admin API",
             lb_srv_state_name(atomic_load(&x->srv->state)));
    lb_plugins_server_changed(x->a->ctl, x->pool, x->srv, why);
}

/* ---- handlers ---- */

static void
h_dashboard(struct ctx *x)
{
    x->rs->ctype = "text/html; charset=utf-8";
    admin_sbuf_puts(&x->rs->body, lb_dashboard_html);
}

static void
h_metrics(struct ctx *x)
{
    x->rs->ctype = "text/plain; version=0.0.4; charset=utf-8";
    admin_metrics(x->a, &x->rs->body);
}

static void
h_pools(struct ctx *x)
{
    struct lb_snapshot *snap = x->a->ctl->snap;
    json_t *arr = json_array();
    for (size_t i = 0; i < snap->npools; i++)
        json_array_append_new(arr, pool_json(x->a, &snap->pools[i]));
    reply(x, 200, json_pack("{s:o}", "pools", arr));
}

static void
h_pool(struct ctx *x)
{
    if (lookup(x, false))
        reply(x, 200, pool_json(x->a, x->pool));
}

static void
h_history(struct ctx *x)
{
    if (!lookup(x, false))
        return;
    struct admin_pool_stats *ps = admin_pool_stats(x->a, x->pool);
    json_t *arr = json_array();
    for (size_t i = 0; ps && i < ps->count; i++) {
        const struct admin_sample *s =
            &ps->ring[(ps->head + ADMIN_HISTORY - ps->count + i) % ADMIN_HISTORY];
        json_t *o = json_object();
        json_object_set_new(o, "t", json_real(round(s->t * 1000) / 1000));
        json_object_set_new(o, "rps", num(s->rps, 0.01));
        json_object_set_new(o, "p50_ms", num(s->p50_ms, 0.001));
        json_object_set_new(o, "p99_ms", num(s->p99_ms, 0.001));
        json_array_append_new(arr, o);
    }
    reply(x, 200,
          json_pack("{s:s, s:i, s:o}", "pool", x->pool->cf->name, "interval_s", 1, "samples", arr));
}

static void
h_servers(struct ctx *x)
{
    if (!lookup(x, false))
        return;
    json_t *arr = json_array();
    size_t n = lb_pool_nservers(x->pool);
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&x->pool->servers[i].state) != LB_SRV_REMOVED)
            json_array_append_new(arr, server_json(x->a, x->pool, &x->pool->servers[i]));
    reply(x, 200, json_pack("{s:o}", "servers", arr));
}

static void
h_server_get(struct ctx *x)
{
    if (lookup(x, true))
        reply(x, 200, server_json(x->a, x->pool, x->srv));
}

static void
h_server_add(struct ctx *x)
{
    struct field f[] = {
        {"name", JSON_STRING, true, NULL},
        {"address", JSON_STRING, true, NULL},
        {"weight", JSON_INTEGER, false, NULL},
    };
    uint32_t weight = 1;
    const char *why = "invalid server";

    if (!fields(x, f, 3) || (f[2].val && !weight_ok(x, f[2].val, &weight)) || !lookup(x, false))
        return;
    const char *name = json_string_value(f[0].val);
    int r = lb_server_add(x->pool, name, json_string_value(f[1].val), weight, &why);
    if (r < 0) {
        int st = r == -EEXIST ? 409 : r == -ENOSPC ? 507 : r == -EINVAL ? 400 : 500;
        admin_error(x->rs, st, "%s", why);
        return;
    }
    x->srv = lb_server_find(x->pool, name);
    size_t n = strlen(x->pool->cf->name) + strlen(name) + 32;
    x->rs->location = malloc(n);
    if (x->rs->location)
        snprintf(x->rs->location, n, "/api/v1/pools/%s/servers/%s", x->pool->cf->name, name);
    reply(x, 201, server_json(x->a, x->pool, x->srv));
}

/* POST .../drain, .../enable, .../maint: segment 6 says which. */
static void
h_server_action(struct ctx *x)
{
    if (!fields(x, NULL, 0) || !lookup(x, true))
        return;
    int status = 200;
    if (strcmp(x->seg[6], "drain") == 0) {
        lb_server_drain(x->pool, x->srv, false, lb_monotonic_ms());
        status = 202;
    } else if (strcmp(x->seg[6], "enable") == 0) {
        lb_server_enable(x->pool, x->srv);
    } else {
        lb_server_set_maint(x->pool, x->srv, true);
    }
    tell_plugins(x);
    reply(x, status, server_json(x->a, x->pool, x->srv));
}

static void
h_server_patch(struct ctx *x)
{
    struct field f[] = {
        {"weight", JSON_INTEGER, false, NULL},
        {"state", JSON_STRING, false, NULL},
    };
    uint32_t weight = 0;

    if (!fields(x, f, 2))
        return;
    if (!f[0].val && !f[1].val) {
        admin_error(x->rs, 400, "nothing to change: give \"weight\" and/or \"state\"");
        return;
    }
    if (f[0].val && !weight_ok(x, f[0].val, &weight))
        return;
    const char *state = f[1].val ? json_string_value(f[1].val) : NULL;
    if (state && strcmp(state, "ready") && strcmp(state, "drain") && strcmp(state, "maint")) {
        admin_error(x->rs, 400, "field \"state\" must be \"ready\", \"drain\" or \"maint\"");
        return;
    }
    if (!lookup(x, true))
        return;
    /* Everything was checked first: a refused call changes nothing. */
    if (f[0].val)
        lb_server_set_weight(x->pool, x->srv, weight);
    if (state && strcmp(state, "ready") == 0)
        lb_server_enable(x->pool, x->srv);
    else if (state && strcmp(state, "drain") == 0)
        lb_server_drain(x->pool, x->srv, false, lb_monotonic_ms());
    else if (state)
        lb_server_set_maint(x->pool, x->srv, true);
    tell_plugins(x);
    reply(x, 200, server_json(x->a, x->pool, x->srv));
}

/* Parses the query of DELETE: only now=1|true|0|false. */
static bool
query_now(struct ctx *x, bool *now)
{
    struct http1_str q = x->rq->query;
    *now = false;
    if (q.len == 0)
        return true;
    static const char *const yes[] = {"now=1", "now=true", "now=yes", "now"};
    static const char *const no[] = {"now=0", "now=false", "now=no"};
    for (size_t i = 0; i < 4; i++) {
        if (q.len == strlen(yes[i]) && memcmp(q.p, yes[i], q.len) == 0) {
            *now = true;
            return true;
        }
    }
    for (size_t i = 0; i < 3; i++)
        if (q.len == strlen(no[i]) && memcmp(q.p, no[i], q.len) == 0)
            return true;
    admin_error(x->rs, 400, "unknown query \"%.*s\": the only parameter is now=1",
                (int)(q.len > 100 ? 100 : q.len), q.p);
    return false;
}

static void
h_server_delete(struct ctx *x)
{
    bool now;
    if (!query_now(x, &now) || !fields(x, NULL, 0) || !lookup(x, true))
        return;
    if (now) {
        lb_server_remove(x->pool, x->srv);
        tell_plugins(x);
        reply(x, 200, server_json(x->a, x->pool, x->srv));
    } else {
        lb_server_drain(x->pool, x->srv, true, lb_monotonic_ms());
        tell_plugins(x);
        reply(x, 202, server_json(x->a, x->pool, x->srv));
    }
}

static void
h_listeners(struct ctx *x)
{
    const struct conf *c = x->a->ctl->snap->conf;
    json_t *arr = json_array();
    for (size_t i = 0; i < c->nlisteners; i++) {
        const struct conf_listener *l = &c->listeners[i];
        json_t *routes = json_array();
        for (size_t r = 0; r < l->nroutes; r++) {
            const struct conf_route *rt = &l->routes[r];
            json_array_append_new(routes,
                                  json_pack("{s:s?, s:s?, s:s}", "host", rt->host, "path_prefix",
                                            rt->path_prefix, "pool", rt->pool));
        }
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:o}", "name", l->name, "bind",
                              l->bind.text, "mode", l->mode == CONF_MODE_HTTP ? "http" : "tcp",
                              "pool", l->pool, "tls", l->tls.enabled, "routes", routes);
        /* The counters of /metrics' tern_listener_* families. */
        struct lb_listener_totals t;
        json_t *resp = json_object();
        lb_listener_stats_sum(x->a->ctl->workers, x->a->ctl->nworkers, l, &t);
        json_object_set_new(o, "connections_total", json_integer((json_int_t)t.connections));
        json_object_set_new(o, "active_connections", json_integer((json_int_t)t.active));
        json_object_set_new(o, "requests_total", json_integer((json_int_t)t.requests));
        for (int k = 0; k < 6; k++)
            json_object_set_new(resp, classes[k], json_integer((json_int_t)t.responses[k]));
        json_object_set_new(o, "responses", resp);
        json_object_set_new(o, "bytes_in", json_integer((json_int_t)t.bytes_in));
        json_object_set_new(o, "bytes_out", json_integer((json_int_t)t.bytes_out));
        json_array_append_new(arr, o);
    }
    reply(x, 200, json_pack("{s:o}", "listeners", arr));
}

/* VRRP, alarms and scaling are not built yet: the shapes are fixed. */
static void
h_vrrp(struct ctx *x)
{
    reply(x, 200, lb_vrrp_json(x->a->ctl));
}

/* Routes a plugin serves (watch: alarms, scale: groups); the shape stays the
 * same, empty, while the plugin is not loaded. */
static void
plugin_route(struct ctx *x, const char *route, const char *empty_key)
{
    char *doc = lb_plugins_api_json(x->a->ctl, route);
    json_t *j = doc ? json_loads(doc, 0, NULL) : NULL;
    free(doc);
    reply(x, 200, j ? j : json_pack("{s:[]}", empty_key));
}

static void
h_alarms(struct ctx *x)
{
    plugin_route(x, "/api/v1/alarms", "alarms");
}

static void
h_scale(struct ctx *x)
{
    plugin_route(x, "/api/v1/scale", "groups");
}

static json_t *
reload_errors(const struct lb_ctl *ctl)
{
    json_t *arr = json_array();
    const char *p = ctl->last_reload.errors;
    while (p && *p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n)
            json_array_append_new(arr, json_stringn(p, n));
        p += n + (e ? 1 : 0);
    }
    return arr;
}

static void
h_reload_get(struct ctx *x)
{
    const struct lb_ctl *ctl = x->a->ctl;
    bool never = ctl->last_reload.time == 0;
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(ctl->conf_path));
    json_object_set_new(o, "time", never ? json_null() : json_real(ctl->last_reload.time));
    json_object_set_new(o, "ok", never ? json_null() : json_boolean(ctl->last_reload.ok));
    json_object_set_new(o, "errors", reload_errors(ctl));
    reply(x, 200, o);
}

/* The answer to POST /api/v1/reload, once its load has finished: that
 * load's outcome, which ctl->last_reload holds until the next one ends. */
static void
reload_outcome(struct admin *a, struct admin_resp *rs)
{
    struct ctx x = {.a = a, .rs = rs};
    const struct lb_ctl *ctl = a->ctl;

    admin_sync(a);
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_boolean(ctl->last_reload.ok));
    json_object_set_new(o, "time", json_real(ctl->last_reload.time));
    if (ctl->last_reload.ok) {
        reply(&x, 200, o);
        return;
    }
    json_t *errs = reload_errors(ctl);
    if (json_array_size(errs) == 0)
        json_array_append_new(errs, json_string("reload failed; see the log"));
    json_object_set_new(o, "errors", errs);
    reply(&x, 400, o);
}

/* Loading the file may wait for name servers: the load runs on a thread and
 * the answer waits for the load that reads the file as it is now (after one
 * already running, when one is). */
static void
h_reload_post(struct ctx *x)
{
    if (!fields(x, NULL, 0))
        return;
    struct lb_ctl *ctl = x->a->ctl;
    uint64_t n = lb_reload_request_api(ctl);
    if (lb_reload_finished(ctl) >= n) { /* it could not start */
        reload_outcome(x->a, x->rs);
        return;
    }
    x->rs->defer = true;
    x->rs->wait_load = n;
    x->rs->finish = reload_outcome;
}

/* ---- routing ---- */

struct route {
    const char *pat[MAX_SEGS + 1]; /* "*": any one segment; NULL ends */
    unsigned method;
    void (*fn)(struct ctx *x);
};

#define POOLS "api", "v1", "pools"
static const struct route routes[] = {
    {{NULL}, M_GET, h_dashboard},
    {{"metrics", NULL}, M_GET, h_metrics},
    {{POOLS, NULL}, M_GET, h_pools},
    {{POOLS, "*", NULL}, M_GET, h_pool},
    {{POOLS, "*", "history", NULL}, M_GET, h_history},
    {{POOLS, "*", "servers", NULL}, M_GET, h_servers},
    {{POOLS, "*", "servers", NULL}, M_POST, h_server_add},
    {{POOLS, "*", "servers", "*", NULL}, M_GET, h_server_get},
    {{POOLS, "*", "servers", "*", NULL}, M_PATCH, h_server_patch},
    {{POOLS, "*", "servers", "*", NULL}, M_DELETE, h_server_delete},
    {{POOLS, "*", "servers", "*", "drain", NULL}, M_POST, h_server_action},
    {{POOLS, "*", "servers", "*", "enable", NULL}, M_POST, h_server_action},
    {{POOLS, "*", "servers", "*", "maint", NULL}, M_POST, h_server_action},
    {{"api", "v1", "listeners", NULL}, M_GET, h_listeners},
    {{"api", "v1", "vrrp", NULL}, M_GET, h_vrrp},
    {{"api", "v1", "alarms", NULL}, M_GET, h_alarms},
    {{"api", "v1", "scale", NULL}, M_GET, h_scale},
    {{"api", "v1", "reload", NULL}, M_GET, h_reload_get},
    {{"api", "v1", "reload", NULL}, M_POST, h_reload_post},
};

static unsigned
method_bit(enum http1_method m)
{
    switch (m) {
    case HTTP1_M_GET:
    case HTTP1_M_HEAD:
        return M_GET;
    case HTTP1_M_POST:
        return M_POST;
    case HTTP1_M_PUT:
        return M_PUT;
    case HTTP1_M_PATCH:
        return M_PATCH;
    case HTTP1_M_DELETE:
        return M_DELETE;
    default:
        return 0;
    }
}

static bool
matches(const struct route *r, char *const *seg, size_t nseg)
{
    size_t i = 0;
    for (; r->pat[i]; i++)
        if (i >= nseg || (strcmp(r->pat[i], "*") != 0 && strcmp(r->pat[i], seg[i]) != 0))
            return false;
    return i == nseg;
}

static int
hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Splits the path into percent-decoded segments in buf (path.len + 1
 * bytes). Returns the count, -1 when it cannot name a route (404), -2 on a
 * malformed escape (400). */
static int
split(struct http1_str path, char *buf, char **seg)
{
    const char *p = path.p + 1, *end = path.p + path.len;
    size_t n = 0;
    char *o = buf;

    if (end > p && end[-1] == '/')
        end--; /* "/api/v1/pools/" is "/api/v1/pools" */
    while (p < end) {
        if (n == MAX_SEGS)
            return -1;
        seg[n++] = o;
        const char *e = memchr(p, '/', (size_t)(end - p));
        if (!e)
            e = end;
        if (e == p)
            return -1; /* empty segment */
        for (; p < e; p++) {
            if (*p != '%') {
                *o++ = *p;
                continue;
            }
            int hi = p + 2 < e ? hexval(p[1]) : -1, lo = p + 2 < e ? hexval(p[2]) : -1;
            if (hi < 0 || lo < 0)
                return -2;
            char ch = (char)(hi * 16 + lo);
            if (ch == '\0' || ch == '/')
                return -1;
            *o++ = ch;
            p += 2;
        }
        *o++ = '\0';
        p = e + 1;
    }
    return (int)n;
}

static void
allow_header(char *out, size_t cap, unsigned allow)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{M_GET, "GET, HEAD"},
                 {M_POST, "POST"},
                 {M_PUT, "PUT"},
                 {M_PATCH, "PATCH"},
                 {M_DELETE, "DELETE"}};
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (allow & names[i].bit)
            len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? ", " : "", names[i].name);
}

/* GET of a route that a plugin registered (api_register) and tern has no
 * table entry for: a third party's. Returns false when no plugin has it. */
static bool
plugin_get(struct ctx *x)
{
    char route[256];
    const struct admin_req *rq = x->rq;
    if (rq->path.len >= sizeof(route))
        return false;
    memcpy(route, rq->path.p, rq->path.len);
    route[rq->path.len] = '\0';
    char *doc = lb_plugins_api_json(x->a->ctl, route);
    if (!doc)
        return false;
    json_t *j = json_loads(doc, 0, NULL);
    free(doc);
    if (j)
        reply(x, 200, j);
    else
        admin_error(x->rs, 500, "plugin route %s answered something that is not JSON", route);
    return true;
}

void
admin_route(struct admin *a, const struct admin_req *rq, struct admin_resp *rs)
{
    struct ctx x = {.a = a, .rq = rq, .rs = rs};
    char *buf = malloc(rq->path.len + 1);
    const struct route *found = NULL;
    unsigned bit = method_bit(rq->meth), allow = 0;

    if (!buf) {
        rs->body.oom = true;
        return;
    }
    int n = split(rq->path, buf, x.seg);
    if (n == -2) {
        admin_error(rs, 400, "malformed percent-escape in the path");
        goto out;
    }
    x.nseg = n < 0 ? 0 : (size_t)n;
    for (size_t i = 0; n >= 0 && i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (!matches(&routes[i], x.seg, x.nseg))
            continue;
        allow |= routes[i].method;
        if (routes[i].method == bit)
            found = &routes[i];
    }
    if (!allow && bit == M_GET && plugin_get(&x))
        goto out;
    if (!allow) {
        admin_error(rs, 404, "no such route: %.*s", (int)(rq->path.len > 200 ? 200 : rq->path.len),
                    rq->path.p);
        goto out;
    }
    if (!found) {
        allow_header(rs->allow, sizeof(rs->allow), allow);
        admin_error(rs, 405, "method %.*s not allowed here (allowed: %s)",
                    (int)(rq->method.len > 20 ? 20 : rq->method.len), rq->method.p, rs->allow);
        goto out;
    }
    if (bit != M_GET) {
        if (!authorized(&x))
            goto out;
        if (rq->body.len) {
            json_error_t err;
            x.body = json_loadb(rq->body.p, rq->body.len, JSON_REJECT_DUPLICATES, &err);
            if (!x.body) {
                admin_error(rs, 400, "malformed JSON at line %d, column %d: %s", err.line,
                            err.column, err.text);
                goto out;
            }
            if (!json_is_object(x.body)) {
                admin_error(rs, 400, "request body must be a JSON object");
                goto out;
            }
        }
    }
    found->fn(&x);
out:
    json_decref(x.body);
    free(buf);
}
