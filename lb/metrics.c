/*
 * GET /metrics: the Prometheus text exposition format, version 0.0.4.
 *
 * Every family gets its HELP and TYPE lines and then all its samples in one
 * block (the format requires a family's samples to be contiguous), so the
 * loops run family first, then pool and server. Counters are the workers'
 * relaxed atomics read once each; a scrape is a consistent-enough view, and
 * Prometheus computes rates itself, so nothing here depends on the 1 s
 * sampler. Servers in state "removed" are left out, as in the JSON API.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb/admin_int.h"
#include "lb/vrrp.h"

/* Label values: backslash, double quote and line feed are escaped. */
static void
label(struct admin_sbuf *o, const char *name, const char *v, bool first)
{
    admin_sbuf_printf(o, "%s%s=\"", first ? "" : ",", name);
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            admin_sbuf_puts(o, "\\\\");
        else if (*p == '"')
            admin_sbuf_puts(o, "\\\"");
        else if (*p == '\n')
            admin_sbuf_puts(o, "\\n");
        else
            admin_sbuf_add(o, p, 1);
    }
    admin_sbuf_puts(o, "\"");
}

static void
family(struct admin_sbuf *o, const char *name, const char *type, const char *help)
{
    admin_sbuf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
server_labels(struct admin_sbuf *o, const struct lb_pool *p, const struct lb_server *s)
{
    label(o, "pool", p->cf->name, true);
    label(o, "server", s->name, false);
}

static bool
listed(const struct lb_server *s)
{
    return atomic_load(&s->state) != LB_SRV_REMOVED;
}

static unsigned long
rd(const atomic_ulong *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* ---- per-server families with one value ---- */

static unsigned long
g_up(const struct lb_server *s)
{
    return atomic_load(&s->health) == LB_HEALTH_UP && atomic_load(&s->state) == LB_SRV_UP;
}

static unsigned long
g_healthy(const struct lb_server *s)
{
    return atomic_load(&s->health) == LB_HEALTH_UP;
}

static unsigned long
g_weight(const struct lb_server *s)
{
    return atomic_load(&s->weight);
}

static unsigned long
g_active(const struct lb_server *s)
{
    return atomic_load(&s->active);
}

static unsigned long
c_requests(const struct lb_server *s)
{
    return rd(&s->st.requests);
}

static unsigned long
c_bytes_in(const struct lb_server *s)
{
    return rd(&s->st.bytes_in);
}

static unsigned long
c_bytes_out(const struct lb_server *s)
{
    return rd(&s->st.bytes_out);
}

static unsigned long
c_connect_errors(const struct lb_server *s)
{
    return rd(&s->st.connect_errors);
}

static unsigned long
c_connections(const struct lb_server *s)
{
    return rd(&s->st.connections);
}

static const struct {
    const char *name, *type, *help;
    unsigned long (*get)(const struct lb_server *s);
} server_families[] = {
    {"tern_server_up", "gauge", "1 when the server takes new requests (health up, state ready).",
     g_up},
    {"tern_server_healthy", "gauge", "1 when the health checks see the server up.", g_healthy},
    {"tern_server_weight", "gauge", "Balancing weight of the server (0-256).", g_weight},
    {"tern_server_active_connections", "gauge", "Requests or tunnels using the server now.",
     g_active},
    {"tern_server_requests_total", "counter", "Requests sent to the server.", c_requests},
    {"tern_server_bytes_in_total", "counter",
     "Bytes received from clients in the requests (TCP: sessions) the server took.", c_bytes_in},
    {"tern_server_bytes_out_total", "counter",
     "Bytes sent to clients in the answers to those requests (TCP: sessions).", c_bytes_out},
    {"tern_server_connect_errors_total", "counter", "Failed connection attempts to the server.",
     c_connect_errors},
    {"tern_server_connections_total", "counter", "Backend connections opened to the server.",
     c_connections},
};

static void
server_simple(struct admin_sbuf *o, struct lb_snapshot *snap, size_t f)
{
    family(o, server_families[f].name, server_families[f].type, server_families[f].help);
    for (size_t i = 0; i < snap->npools; i++) {
        const struct lb_pool *p = &snap->pools[i];
        size_t n = lb_pool_nservers(p);
        for (size_t j = 0; j < n; j++) {
            const struct lb_server *s = &p->servers[j];
            if (!listed(s))
                continue;
            admin_sbuf_printf(o, "%s{", server_families[f].name);
            server_labels(o, p, s);
            admin_sbuf_printf(o, "} %lu\n", server_families[f].get(s));
        }
    }
}

/* ---- per-server families with a label of their own ---- */

static void
server_states(struct admin_sbuf *o, struct lb_snapshot *snap)
{
    static const int states[] = {LB_SRV_UP, LB_SRV_DRAIN, LB_SRV_MAINT};
    family(o, "tern_server_state", "gauge",
           "Administrative state of the server: 1 for the state it is in.");
    for (size_t i = 0; i < snap->npools; i++) {
        const struct lb_pool *p = &snap->pools[i];
        size_t n = lb_pool_nservers(p);
        for (size_t j = 0; j < n; j++) {
            const struct lb_server *s = &p->servers[j];
            if (!listed(s))
                continue;
            int st = atomic_load(&s->state);
            for (size_t k = 0; k < 3; k++) {
                admin_sbuf_puts(o, "tern_server_state{");
                server_labels(o, p, s);
                label(o, "state", lb_srv_state_name(states[k]), false);
                admin_sbuf_printf(o, "} %d\n", st == states[k]);
            }
        }
    }
}

static const char *const classes[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

static void
server_responses(struct admin_sbuf *o, struct lb_snapshot *snap)
{
    family(o, "tern_server_responses_total", "counter",
           "Responses from the server by status class.");
    for (size_t i = 0; i < snap->npools; i++) {
        const struct lb_pool *p = &snap->pools[i];
        size_t n = lb_pool_nservers(p);
        for (size_t j = 0; j < n; j++) {
            const struct lb_server *s = &p->servers[j];
            if (!listed(s))
                continue;
            for (int k = 0; k < 6; k++) {
                admin_sbuf_puts(o, "tern_server_responses_total{");
                server_labels(o, p, s);
                label(o, "code", classes[k], false);
                admin_sbuf_printf(o, "} %lu\n", rd(&s->st.responses[k]));
            }
        }
    }
}

static void
server_latency(struct admin_sbuf *o, struct lb_snapshot *snap)
{
    const char *name = "tern_server_request_duration_seconds";
    family(o, name, "histogram",
           "Total time of requests to the server, from the first byte "
           "sent to the last byte of the answer.");
    for (size_t i = 0; i < snap->npools; i++) {
        const struct lb_pool *p = &snap->pools[i];
        size_t n = lb_pool_nservers(p);
        for (size_t j = 0; j < n; j++) {
            const struct lb_server *s = &p->servers[j];
            if (!listed(s))
                continue;
            uint64_t b[LB_LAT_BUCKETS + 1], cum = 0;
            admin_server_buckets(s, b);
            for (int k = 0; k <= LB_LAT_BUCKETS; k++) {
                cum += b[k];
                admin_sbuf_printf(o, "%s_bucket{", name);
                server_labels(o, p, s);
                if (k < LB_LAT_BUCKETS)
                    admin_sbuf_printf(o, ",le=\"%g\"} %llu\n", lb_lat_bounds_ms[k] / 1000.0,
                                      (unsigned long long)cum);
                else
                    admin_sbuf_printf(o, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
            }
            admin_sbuf_printf(o, "%s_sum{", name);
            server_labels(o, p, s);
            admin_sbuf_printf(o, "} %.6f\n", (double)rd(&s->st.lat_sum_us) / 1e6);
            admin_sbuf_printf(o, "%s_count{", name);
            server_labels(o, p, s);
            admin_sbuf_printf(o, "} %llu\n", (unsigned long long)cum);
        }
    }
}

/* ---- pools ---- */

enum pool_metric { P_SERVERS, P_HEALTHY, P_ACTIVE, P_QUEUED, P_REQUESTS, P_NO_SERVER };

static unsigned long
pool_value(const struct lb_pool *p, enum pool_metric m)
{
    if (m == P_REQUESTS)
        return rd(&p->requests);
    if (m == P_NO_SERVER)
        return rd(&p->no_server);
    if (m == P_QUEUED)
        return atomic_load_explicit(&p->queued, memory_order_relaxed);
    unsigned long v = 0;
    size_t n = lb_pool_nservers(p);
    for (size_t j = 0; j < n; j++) {
        const struct lb_server *s = &p->servers[j];
        if (m == P_ACTIVE)
            v += atomic_load(&s->active); /* removed ones finishing count too */
        else if (listed(s))
            v += m == P_SERVERS || atomic_load(&s->health) == LB_HEALTH_UP;
    }
    return v;
}

/* Every answer given for the pool's requests: its servers' (removed ones
 * too, so the sum never goes back within a generation) and tern's own when
 * no server could be chosen, as pool.<pool>.error_rate counts them. */
static void
pool_responses(struct admin_sbuf *o, struct lb_snapshot *snap)
{
    family(o, "tern_pool_responses_total", "counter",
           "Responses to the pool's requests by status class, from its servers or from tern "
           "when no server could take them.");
    for (size_t i = 0; i < snap->npools; i++) {
        const struct lb_pool *p = &snap->pools[i];
        size_t n = lb_pool_nservers(p);
        for (int k = 0; k < 6; k++) {
            unsigned long v = rd(&p->local_responses[k]);
            for (size_t j = 0; j < n; j++)
                v += rd(&p->servers[j].st.responses[k]);
            admin_sbuf_puts(o, "tern_pool_responses_total{");
            label(o, "pool", p->cf->name, true);
            label(o, "code", classes[k], false);
            admin_sbuf_printf(o, "} %lu\n", v);
        }
    }
}

static const struct {
    const char *name, *type, *help;
    enum pool_metric m;
} pool_families[] = {
    {"tern_pool_servers", "gauge", "Servers in the pool (any state but removed).", P_SERVERS},
    {"tern_pool_healthy_servers", "gauge", "Servers of the pool whose health is up.", P_HEALTHY},
    {"tern_pool_active_connections", "gauge", "Requests or tunnels using the pool's servers now.",
     P_ACTIVE},
    {"tern_pool_queued", "gauge", "Requests or TCP connections waiting for a server slot now.",
     P_QUEUED},
    {"tern_pool_requests_total", "counter", "Requests routed to the pool.", P_REQUESTS},
    {"tern_pool_no_server_total", "counter", "Requests refused because no server was usable.",
     P_NO_SERVER},
};

/* ---- listeners ---- */

static uint64_t
name_key(const char *name)
{
    return lb_hash64(name, strlen(name)) | 1;
}

/* Worker thread. A slot, once taken, keeps its name for the worker's life:
 * the control thread may be reading it. */
struct lb_listener_stats *
lb_listener_stats_find(struct lb_worker *w, const char *name)
{
    uint64_t key = name_key(name);

    for (size_t i = 0; i < LB_LISTENER_STATS; i++) {
        struct lb_listener_stats *e = &w->lstats[i];
        uint64_t k = atomic_load_explicit(&e->key, memory_order_relaxed);

        if (k == key)
            return e;
        if (k == 0) {
            atomic_store_explicit(&e->key, key, memory_order_release);
            return e;
        }
    }
    return &w->lstats[LB_LISTENER_STATS];
}

void
lb_listener_stats_sum(const struct lb_worker *ws, int n, const struct conf_listener *cf,
                      struct lb_listener_totals *t)
{
    uint64_t key = name_key(cf->name);

    memset(t, 0, sizeof(*t));
    t->active = lb_listener_open(cf);
    for (int w = 0; w < n; w++) {
        for (size_t i = 0; i < LB_LISTENER_STATS; i++) {
            const struct lb_listener_stats *e = &ws[w].lstats[i];
            uint64_t k = atomic_load_explicit(&e->key, memory_order_acquire);

            if (k == 0)
                break;
            if (k != key)
                continue;
            t->connections += rd(&e->connections);
            t->requests += rd(&e->requests);
            for (int c = 0; c < 6; c++)
                t->responses[c] += rd(&e->responses[c]);
            t->bytes_in += rd(&e->bytes_in);
            t->bytes_out += rd(&e->bytes_out);
            break;
        }
    }
}

static const struct {
    const char *name, *type, *help;
    size_t off; /* into struct lb_listener_totals */
} listener_families[] = {
    {"tern_listener_connections_total", "counter", "Client connections accepted.",
     offsetof(struct lb_listener_totals, connections)},
    {"tern_listener_active_connections", "gauge", "Client connections open now.",
     offsetof(struct lb_listener_totals, active)},
    {"tern_listener_requests_total", "counter",
     "HTTP requests, or TCP sessions, that ended (answered or not).",
     offsetof(struct lb_listener_totals, requests)},
    {"tern_listener_bytes_in_total", "counter", "Bytes received from clients (decrypted).",
     offsetof(struct lb_listener_totals, bytes_in)},
    {"tern_listener_bytes_out_total", "counter", "Bytes sent to clients (before encryption).",
     offsetof(struct lb_listener_totals, bytes_out)},
};

static void
listener_metrics(struct admin_sbuf *o, const struct lb_ctl *ctl)
{
    const struct conf *c = ctl->snap->conf;
    struct lb_listener_totals *t = calloc(c->nlisteners ? c->nlisteners : 1, sizeof(*t));

    if (t == NULL)
        return;
    for (size_t i = 0; i < c->nlisteners; i++)
        lb_listener_stats_sum(ctl->workers, ctl->nworkers, &c->listeners[i], &t[i]);
    for (size_t f = 0; f < sizeof(listener_families) / sizeof(listener_families[0]); f++) {
        family(o, listener_families[f].name, listener_families[f].type, listener_families[f].help);
        for (size_t i = 0; i < c->nlisteners; i++) {
            admin_sbuf_printf(o, "%s{", listener_families[f].name);
            label(o, "listener", c->listeners[i].name, true);
            uint64_t v;
            memcpy(&v, (const char *)&t[i] + listener_families[f].off, sizeof(v));
            admin_sbuf_printf(o, "} %llu\n", (unsigned long long)v);
        }
    }
    family(o, "tern_listener_responses_total", "counter",
           "Responses to clients of HTTP listeners by status class (other: none sent).");
    for (size_t i = 0; i < c->nlisteners; i++) {
        if (c->listeners[i].mode != CONF_MODE_HTTP)
            continue;
        for (int k = 0; k < 6; k++) {
            admin_sbuf_puts(o, "tern_listener_responses_total{");
            label(o, "listener", c->listeners[i].name, true);
            label(o, "code", classes[k], false);
            admin_sbuf_printf(o, "} %llu\n", (unsigned long long)t[i].responses[k]);
        }
    }
    free(t);
}

/* ---- VRRP instances ---- */

/* From the same view GET /api/v1/vrrp serves: one family at a time over
 * every instance. */
static const struct {
    const char *name, *type, *key, *help;
    bool counter;
} vrrp_families[] = {
    {"tern_vrrp_priority", "gauge", "effective_priority", "Priority now, after tracking.", false},
    {"tern_vrrp_adverts_sent_total", "counter", "adverts_sent", "Advertisements sent.", true},
    {"tern_vrrp_adverts_received_total", "counter", "adverts_received",
     "Valid advertisements received.", true},
    {"tern_vrrp_became_master_total", "counter", "became_master", "Transitions to MASTER.", true},
    {"tern_vrrp_vips_restored_total", "counter", "vips_restored",
     "Virtual IPs removed by someone else while master and put back.", true},
    {"tern_vrrp_late_timers_total", "counter", "late_timers",
     "Timers that fired more than 2 ms after their deadline.", true},
};

static void
vrrp_metrics(struct admin_sbuf *o, struct lb_ctl *ctl)
{
    static const char *const states[] = {"INIT", "BACKUP", "MASTER", "FAULT"};
    json_t *all = lb_vrrp_json(ctl);
    json_t *insts = json_object_get(all, "instances");
    size_t n = json_array_size(insts);
    if (n == 0) {
        json_decref(all);
        return;
    }
    family(o, "tern_vrrp_state", "gauge", "VRRP state of the instance: 1 for the state it is in.");
    for (size_t i = 0; i < n; i++) {
        json_t *in = json_array_get(insts, i);
        const char *st = json_string_value(json_object_get(in, "state"));
        for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
            admin_sbuf_puts(o, "tern_vrrp_state{");
            label(o, "instance", json_string_value(json_object_get(in, "name")), true);
            label(o, "state", states[k], false);
            admin_sbuf_printf(o, "} %d\n", st && strcmp(st, states[k]) == 0);
        }
    }
    for (size_t f = 0; f < sizeof(vrrp_families) / sizeof(vrrp_families[0]); f++) {
        family(o, vrrp_families[f].name, vrrp_families[f].type, vrrp_families[f].help);
        for (size_t i = 0; i < n; i++) {
            json_t *in = json_array_get(insts, i);
            json_t *src = vrrp_families[f].counter ? json_object_get(in, "counters") : in;
            admin_sbuf_printf(o, "%s{", vrrp_families[f].name);
            label(o, "instance", json_string_value(json_object_get(in, "name")), true);
            admin_sbuf_printf(
                o, "} %lld\n",
                (long long)json_integer_value(json_object_get(src, vrrp_families[f].key)));
        }
    }
    family(o, "tern_vrrp_timer_late_max_seconds", "gauge",
           "Worst lateness of a VRRP timer since the instance started.");
    for (size_t i = 0; i < n; i++) {
        json_t *in = json_array_get(insts, i);
        admin_sbuf_puts(o, "tern_vrrp_timer_late_max_seconds{");
        label(o, "instance", json_string_value(json_object_get(in, "name")), true);
        admin_sbuf_printf(o, "} %.6f\n",
                          (double)json_integer_value(json_object_get(
                              json_object_get(in, "counters"), "max_timer_late_us")) /
                              1e6);
    }
    json_decref(all);
}

/* ---- the whole page ---- */

void
admin_metrics(struct admin *a, struct admin_sbuf *o)
{
    struct lb_snapshot *snap = a->ctl->snap;
    const struct conf *c = snap->conf;
    const struct lb_ctl *ctl = a->ctl;

    family(o, "tern_build_info", "gauge", "Always 1; the labels say which tern this is.");
    admin_sbuf_puts(o, "tern_build_info{");
    label(o, "version", TERN_VERSION, true);
    admin_sbuf_puts(o, "} 1\n");
    family(o, "tern_workers", "gauge", "Worker threads serving traffic.");
    admin_sbuf_printf(o, "tern_workers %d\n", ctl->nworkers);
    family(o, "tern_config_last_reload_successful", "gauge",
           "1 when the last reload succeeded or none was tried.");
    admin_sbuf_printf(o, "tern_config_last_reload_successful %d\n",
                      ctl->last_reload.time == 0 || ctl->last_reload.ok);
    family(o, "tern_config_last_reload_timestamp_seconds", "gauge",
           "Wall clock time of the last reload attempt, 0 when none.");
    admin_sbuf_printf(o, "tern_config_last_reload_timestamp_seconds %.3f\n", ctl->last_reload.time);

    family(o, "tern_listener_info", "gauge", "Always 1, one per listener, with its settings.");
    for (size_t i = 0; i < c->nlisteners; i++) {
        const struct conf_listener *l = &c->listeners[i];
        admin_sbuf_puts(o, "tern_listener_info{");
        label(o, "listener", l->name, true);
        label(o, "bind", l->bind.text, false);
        label(o, "mode", l->mode == CONF_MODE_HTTP ? "http" : "tcp", false);
        label(o, "pool", l->pool, false);
        label(o, "tls", l->tls.enabled ? "true" : "false", false);
        admin_sbuf_puts(o, "} 1\n");
    }
    listener_metrics(o, ctl);

    for (size_t f = 0; f < sizeof(pool_families) / sizeof(pool_families[0]); f++) {
        family(o, pool_families[f].name, pool_families[f].type, pool_families[f].help);
        for (size_t i = 0; i < snap->npools; i++) {
            admin_sbuf_printf(o, "%s{", pool_families[f].name);
            label(o, "pool", snap->pools[i].cf->name, true);
            admin_sbuf_printf(o, "} %lu\n", pool_value(&snap->pools[i], pool_families[f].m));
        }
    }
    pool_responses(o, snap);

    for (size_t f = 0; f < sizeof(server_families) / sizeof(server_families[0]); f++)
        server_simple(o, snap, f);
    server_states(o, snap);
    server_responses(o, snap);
    server_latency(o, snap);
    vrrp_metrics(o, a->ctl);
}
