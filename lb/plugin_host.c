/*
 * The plugin host (see plugin_host.h and plugin.h): loading modules and the
 * services of the host table.
 *
 * watch.so and scale.so are loaded when their configuration section is
 * present, from global.plugin_dir, or else from the build tree next to the
 * running binary (<exe>/../<name>/<name>.so, so that a build directory runs
 * as it is) and then from the installed TERN_PLUGIN_DIR. Modules named in
 * global.plugins are loaded by path. A module is refused when it lacks
 * tern_plugin_entry or was built for another TERN_PLUGIN_API_VERSION; a
 * plugin whose init() fails is unloaded. Either way the reason is logged
 * and the proxy serves on: a plugin is an addition, never a condition.
 *
 * Each plugin gets its own copy of the host table with host_private
 * pointing at its struct plugin, so every call knows its caller: logs are
 * prefixed with its name, and what it registered (timers, subscriptions,
 * metrics, routes, jobs) is taken back when it is unloaded, before fini().
 *
 * Unloading never waits on the control loop for a job that is running (an
 * SMTP send hanging on a silent server for its whole timeout, a slow
 * clone): the plugin stops at once (running false: its queued jobs are
 * dropped and its calls that would register anything are refused), and its
 * fini() waits on the retiring list until its last job has ended.
 */
#include "lb/plugin_host.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/arena.h"
#include "lb/log.h"
#include "lb/plugin_int.h"

#ifndef TERN_PLUGIN_DIR
#define TERN_PLUGIN_DIR "/usr/local/lib/tern"
#endif

/* The plugins the daemon knows by their section. */
static const char *const known_plugins[] = {"watch", "scale", NULL};

static struct plugin *
self(const struct tern_host *h)
{
    return h->host_private;
}

/* ---- log and clocks ---- */

static void
h_log(const struct tern_host *h, enum tern_log_level level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (level > TERN_LOG_DEBUG)
        level = TERN_LOG_DEBUG;
    lb_log((enum lb_log_level)level, "%s: %s", h->name, msg);
}

static double
h_now(const struct tern_host *h)
{
    return ev_now(self(h)->ps->ctl->loop);
}

static double
h_monotonic(const struct tern_host *h)
{
    return (double)lb_monotonic_ms() / 1000.0;
}

/* ---- timers ---- */

static void
timer_unlink(struct lb_plugins *ps, struct tern_timer *t)
{
    ev_timer_stop(ps->ctl->loop, &t->w);
    if (t->prev)
        t->prev->next = t->next;
    else
        ps->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    free(t);
}

static void
on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tern_timer *t = w->data;
    struct lb_plugins *ps = t->owner->ps;
    bool oneshot = w->repeat <= 0;

    t->firing = true;
    t->cb(t->arg);
    t->firing = false;
    if (oneshot || t->cancelled)
        timer_unlink(ps, t);
}

static struct tern_timer *
h_timer_add(const struct tern_host *h, double after, double repeat, tern_timer_cb cb, void *arg)
{
    struct plugin *p = self(h);
    struct tern_timer *t;

    /* A job's done callback of a plugin being unloaded: a timer added now
     * would outlive the plugin and call into freed state. */
    if (!p->running)
        return NULL;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->owner = p;
    t->cb = cb;
    t->arg = arg;
    ev_timer_init(&t->w, on_timer, after > 0 ? after : 0, repeat > 0 ? repeat : 0);
    t->w.data = t;
    t->next = p->ps->timers;
    if (t->next)
        t->next->prev = t;
    p->ps->timers = t;
    ev_timer_start(p->ps->ctl->loop, &t->w);
    return t;
}

static void
h_timer_cancel(const struct tern_host *h, struct tern_timer *t)
{
    if (t == NULL)
        return;
    if (t->firing) {
        /* Freed once its callback returns. */
        t->cancelled = true;
        ev_timer_stop(t->owner->ps->ctl->loop, &t->w);
        return;
    }
    timer_unlink(t->owner->ps, t);
}

/* ---- jobs ---- */

static int
h_job_submit(const struct tern_host *h, tern_job_run_cb run, tern_job_done_cb done, void *arg)
{
    struct plugin *p = self(h);

    if (!p->ps->jobs_up)
        return -EAGAIN;
    if (!p->running)
        return -ECANCELED;
    return lb_jobs_submit(&p->ps->jobs, p, run, done, arg);
}

/* ---- metrics ---- */

static int
h_metric_get(const struct tern_host *h, const char *name, double *value)
{
    return lb_metrics_get(&self(h)->ps->metrics, name, value);
}

static size_t
h_metric_list(const struct tern_host *h, const char *prefix, tern_metric_cb cb, void *arg)
{
    return lb_metrics_each(&self(h)->ps->metrics, prefix, cb, arg);
}

static int
h_metric_set(const struct tern_host *h, const char *name, double value)
{
    struct plugin *p = self(h);

    return lb_metrics_set(&p->ps->metrics, name, value, !isnan(value), p->id, 0);
}

static int
h_metric_remove(const struct tern_host *h, const char *name)
{
    struct plugin *p = self(h);

    return lb_metrics_remove(&p->ps->metrics, name, p->id);
}

/* ---- event bus ---- */

static char *
dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static void
free_event(struct tern_event *ev)
{
    free((char *)ev->source);
    free((char *)ev->name);
    free((char *)ev->pool);
    free((char *)ev->server);
    free((char *)ev->metric);
    free((char *)ev->state);
    free((char *)ev->detail);
}

static void
deliver(struct lb_plugins *ps)
{
    if (ps->delivering)
        return; /* the outer call delivers it, in order */
    ps->delivering = true;
    while (ps->queue != NULL) {
        struct bus_item *it = ps->queue;

        ps->queue = it->next;
        if (ps->queue == NULL)
            ps->queue_tail = NULL;
        for (struct bus_sub *s = ps->subs; s != NULL; s = s->next)
            if (!s->dead && (s->mask & TERN_EV_MASK(it->ev.type)))
                s->cb(s->arg, &it->ev);
        free_event(&it->ev);
        free(it);
    }
    ps->delivering = false;
    for (struct bus_sub **l = &ps->subs; *l != NULL;) {
        struct bus_sub *s = *l;

        if (s->dead) {
            *l = s->next;
            free(s);
        } else {
            l = &s->next;
        }
    }
}

void
lb_bus_publish(struct lb_plugins *ps, const char *source, const struct tern_event *ev)
{
    struct bus_item *it = calloc(1, sizeof(*it));

    if (it == NULL || ev->type <= 0 || ev->type >= TERN_EV_MAX) {
        free(it);
        return;
    }
    it->ev = *ev;
    it->ev.time = ev->time > 0 ? ev->time : ev_now(ps->ctl->loop);
    it->ev.source = dup_or_null(source ? source : "tern");
    it->ev.name = dup_or_null(ev->name);
    it->ev.pool = dup_or_null(ev->pool);
    it->ev.server = dup_or_null(ev->server);
    it->ev.metric = dup_or_null(ev->metric);
    it->ev.state = dup_or_null(ev->state);
    it->ev.detail = dup_or_null(ev->detail);
    if (ps->queue_tail)
        ps->queue_tail->next = it;
    else
        ps->queue = it;
    ps->queue_tail = it;
    deliver(ps);
}

static int
h_subscribe(const struct tern_host *h, unsigned mask, tern_event_cb cb, void *arg)
{
    struct plugin *p = self(h);
    struct bus_sub *s, **l;

    if (!p->running)
        return -ECANCELED;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    *s = (struct bus_sub){
        .id = ++p->ps->next_sub, .owner = p->id, .mask = mask, .cb = cb, .arg = arg};
    /* At the end: subscribers hear events in the order they subscribed. */
    for (l = &p->ps->subs; *l != NULL; l = &(*l)->next)
        ;
    *l = s;
    return s->id;
}

static void
unsubscribe_where(struct lb_plugins *ps, int id, int owner)
{
    for (struct bus_sub *s = ps->subs; s != NULL; s = s->next)
        if ((id > 0 && s->id == id && s->owner == owner) || (id == 0 && s->owner == owner))
            s->dead = true;
    if (!ps->delivering)
        deliver(ps); /* frees the dead ones */
}

static void
h_unsubscribe(const struct tern_host *h, int id)
{
    struct plugin *p = self(h);

    if (id > 0)
        unsubscribe_where(p->ps, id, p->id);
}

static void
h_publish(const struct tern_host *h, const struct tern_event *ev)
{
    struct plugin *p = self(h);

    lb_bus_publish(p->ps, p->name, ev);
}

/* ---- pools ---- */

static void
h_pool_list(const struct tern_host *h, tern_name_cb cb, void *arg)
{
    const struct lb_snapshot *snap = self(h)->ps->ctl->snap;

    for (size_t i = 0; i < snap->npools; i++)
        cb(arg, snap->pools[i].cf->name);
}

static int
h_pool_servers(const struct tern_host *h, const char *pool, tern_server_cb cb, void *arg)
{
    struct lb_pool *p = lb_pool_find(self(h)->ps->ctl->snap, pool);

    if (p == NULL)
        return -ENOENT;
    for (size_t i = 0, n = lb_pool_nservers(p); i < n; i++) {
        const struct lb_server *s = &p->servers[i];
        int state = atomic_load(&s->state);
        struct tern_server_info info = {
            .name = s->name,
            .address = s->addr.text,
            .state = lb_srv_state_name(state),
            .healthy = atomic_load(&s->health) == LB_HEALTH_UP,
            .dynamic = s->dynamic,
            .weight = atomic_load(&s->weight),
            .active = atomic_load(&s->active),
        };

        if (state != LB_SRV_REMOVED)
            cb(arg, &info);
    }
    return 0;
}

static int
find_server(const struct tern_host *h, const char *pool, const char *name, struct lb_pool **pp,
            struct lb_server **sp, const char **why)
{
    *pp = lb_pool_find(self(h)->ps->ctl->snap, pool);
    *sp = *pp != NULL ? lb_server_find(*pp, name) : NULL;
    if (*sp != NULL)
        return 0;
    if (why != NULL)
        *why = *pp == NULL ? "no such pool" : "no such server";
    return -ENOENT;
}

static int
h_server_add(const struct tern_host *h, const char *pool, const char *name, const char *address,
             uint32_t weight, const char **why)
{
    struct lb_pool *p = lb_pool_find(self(h)->ps->ctl->snap, pool);
    const char *w = NULL;
    int r;

    if (p == NULL) {
        if (why != NULL)
            *why = "no such pool";
        return -ENOENT;
    }
    r = lb_server_add(p, name, address, weight, &w);
    if (r < 0 && why != NULL)
        *why = w;
    if (r == 0)
        lb_info("%s: added server %s (%s) to pool %s", h->name, name, address, pool);
    return r;
}

static int
h_server_drain(const struct tern_host *h, const char *pool, const char *name, bool remove,
               const char **why)
{
    struct lb_pool *p;
    struct lb_server *s;
    char why_buf[128];
    int r = find_server(h, pool, name, &p, &s, why);

    if (r < 0)
        return r;
    lb_info("%s: draining server %s of pool %s%s", h->name, name, pool,
            remove ? " (removed once idle)" : "");
    lb_server_drain(p, s, remove, lb_monotonic_ms());
    snprintf(why_buf, sizeof(why_buf), "drained by plugin %s", h->name);
    lb_sampler_server_changed(self(h)->ps, p, s, why_buf);
    return 0;
}

static int
h_server_remove(const struct tern_host *h, const char *pool, const char *name, const char **why)
{
    struct lb_pool *p;
    struct lb_server *s;
    int r = find_server(h, pool, name, &p, &s, why);

    if (r < 0)
        return r;
    lb_info("%s: removing server %s of pool %s", h->name, name, pool);
    lb_server_remove(p, s);
    lb_sampler_server_changed(self(h)->ps, p, s, NULL);
    return 0;
}

/* ---- API routes ---- */

static int
h_api_register(const struct tern_host *h, const char *route, tern_api_cb cb, void *arg)
{
    struct plugin *p = self(h);
    struct api_route *r;

    if (!p->running)
        return -ECANCELED;
    for (r = p->ps->routes; r != NULL; r = r->next)
        if (strcmp(r->route, route) == 0)
            return -EEXIST;
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->route = strdup(route)) == NULL) {
        free(r);
        return -ENOMEM;
    }
    r->owner = p->id;
    r->cb = cb;
    r->arg = arg;
    r->next = p->ps->routes;
    p->ps->routes = r;
    return 0;
}

char *
lb_plugins_api_json(struct lb_ctl *ctl, const char *route)
{
    struct lb_plugins *ps = ctl->plugins;

    for (struct api_route *r = ps ? ps->routes : NULL; r != NULL; r = r->next)
        if (strcmp(r->route, route) == 0)
            return r->cb(r->arg, route);
    return NULL;
}

void
lb_plugins_publish(struct lb_ctl *ctl, const struct tern_event *ev)
{
    if (ctl->plugins != NULL)
        lb_bus_publish(ctl->plugins, NULL, ev);
}

void
lb_plugins_server_changed(struct lb_ctl *ctl, const struct lb_pool *p, const struct lb_server *s,
                          const char *why)
{
    if (ctl->plugins != NULL)
        lb_sampler_server_changed(ctl->plugins, p, s, why);
}

int
lb_plugins_metric(struct lb_ctl *ctl, const char *name, double *value)
{
    struct lb_plugins *ps = ctl->plugins;

    return ps != NULL ? lb_metrics_get(&ps->metrics, name, value) : -ENOENT;
}

static const struct tern_host host_template = {
    .api_version = TERN_PLUGIN_API_VERSION,
    .size = sizeof(struct tern_host),
    .log = h_log,
    .now = h_now,
    .monotonic = h_monotonic,
    .timer_add = h_timer_add,
    .timer_cancel = h_timer_cancel,
    .job_submit = h_job_submit,
    .metric_get = h_metric_get,
    .metric_list = h_metric_list,
    .metric_set = h_metric_set,
    .metric_remove = h_metric_remove,
    .subscribe = h_subscribe,
    .unsubscribe = h_unsubscribe,
    .publish = h_publish,
    .pool_list = h_pool_list,
    .pool_servers = h_pool_servers,
    .server_add = h_server_add,
    .server_drain = h_server_drain,
    .server_remove = h_server_remove,
    .api_register = h_api_register,
};

/* ---- loading ---- */

static void
plugin_free(struct plugin *p)
{
    if (p->dl != NULL)
        dlclose(p->dl);
    if (p->tree_mem != NULL)
        conf_arena_free(p->tree_mem);
    free(p->name);
    free(p->path);
    free(p->section);
    free(p);
}

/* Plugins unloaded while a job of theirs ran: off ps->list, nothing of
 * theirs registered any more, fini() pending. One host per process. */
static struct plugin *retiring;

/* Queued or running jobs of p, done callbacks included. */
static unsigned
jobs_of(struct lb_plugins *ps, struct plugin *p)
{
    unsigned n;

    if (!ps->jobs_up)
        return 0;
    pthread_mutex_lock(&ps->jobs.mu);
    n = p->jobs;
    pthread_mutex_unlock(&ps->jobs.mu);
    return n;
}

/* Waits for p's jobs (none are left unless wait is meant), then fini()
 * and free. */
static void
plugin_finish(struct lb_plugins *ps, struct plugin *p, bool fini)
{
    if (ps->jobs_up)
        lb_jobs_drain_owner(&ps->jobs, p);
    if (fini && p->desc->fini != NULL)
        p->desc->fini(p->state);
    lb_metrics_remove_owner(&ps->metrics, p->id);
    if (fini)
        lb_info("plugin %s unloaded", p->name);
    plugin_free(p);
}

/* Finishes the retiring plugins whose last job has ended (all of them,
 * waiting, when wait). */
static void
finish_retired(struct lb_plugins *ps, bool wait)
{
    for (struct plugin **l = &retiring; *l != NULL;) {
        struct plugin *p = *l;

        if (p->ps == ps && (wait || jobs_of(ps, p) == 0)) {
            *l = p->next;
            plugin_finish(ps, p, true);
        } else {
            l = &p->next;
        }
    }
}

/* Takes back what p registered, then lets it go. fini is false for a
 * plugin whose init failed: it has no state to finish. With defer, a
 * plugin with a job still running retires instead of making the control
 * thread wait for it (finish_retired). */
static void
plugin_unload(struct lb_plugins *ps, struct plugin *p, bool fini, bool defer)
{
    bool was_running = p->running;
    unsigned busy;

    for (struct plugin **l = &ps->list; *l != NULL; l = &(*l)->next) {
        if (*l == p) {
            *l = p->next;
            break;
        }
    }
    if (!was_running) {
        plugin_free(p);
        return;
    }
    /* Under the pool's lock: its threads drop the queued jobs of a plugin
     * that no longer runs. */
    if (ps->jobs_up)
        pthread_mutex_lock(&ps->jobs.mu);
    p->running = false;
    if (ps->jobs_up)
        pthread_mutex_unlock(&ps->jobs.mu);
    for (struct tern_timer *t = ps->timers, *next; t != NULL; t = next) {
        next = t->next;
        if (t->owner == p)
            timer_unlink(ps, t);
    }
    unsubscribe_where(ps, 0, p->id);
    for (struct api_route **r = &ps->routes; *r != NULL;) {
        struct api_route *x = *r;

        if (x->owner == p->id) {
            *r = x->next;
            free(x->route);
            free(x);
        } else {
            r = &x->next;
        }
    }
    busy = jobs_of(ps, p);
    if (defer && fini && busy > 0) {
        lb_info("plugin %s: stopped; unloaded once its %u job%s end%s", p->name, busy,
                busy == 1 ? "" : "s", busy == 1 ? "s" : "");
        p->next = retiring;
        retiring = p;
        return;
    }
    plugin_finish(ps, p, fini);
}

/* The path of the module of a known plugin, or NULL after logging. */
static char *
find_module(const struct conf *c, const char *name)
{
    char exe[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n;

    if (c->global.plugin_dir != NULL) {
        snprintf(path, sizeof(path), "%s/%s.so", c->global.plugin_dir, name);
        if (access(path, R_OK) == 0)
            return strdup(path);
        lb_err("plugin %s: %s: %s", name, path, strerror(errno));
        return NULL;
    }
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        char *slash;

        exe[n] = '\0';
        slash = strrchr(exe, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(path, sizeof(path), "%s/../%s/%s.so", exe, name, name);
            if (access(path, R_OK) == 0)
                return strdup(path);
        }
    }
    snprintf(path, sizeof(path), "%s/%s.so", TERN_PLUGIN_DIR, name);
    if (access(path, R_OK) == 0)
        return strdup(path);
    lb_err("plugin %s: %s.so not found (set global.plugin_dir; looked in the build tree and %s)",
           name, name, TERN_PLUGIN_DIR);
    return NULL;
}

/* Loads, checks and initialises one module. A failure is logged and the
 * plugin left out. */
static void
plugin_load(struct lb_plugins *ps, const char *path, const char *want_name, bool external)
{
    const struct conf *c = ps->ctl->snap->conf;
    struct plugin *p = calloc(1, sizeof(*p));
    const char *what = want_name ? want_name : path;
    int r;

    if (p == NULL || (p->path = strdup(path)) == NULL) {
        lb_err("plugin %s: out of memory", what);
        free(p);
        return;
    }
    p->ps = ps;
    p->external = external;
    p->id = ++ps->next_id;
    /* RTLD_NODELETE: the libraries a module links (libvirt, OpenSSL,
     * libcurl) leave thread-local destructors and atexit handlers behind;
     * unmapping their code would turn those into crashes at thread or
     * process exit. An unloaded module stays mapped, inert. */
    p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (p->dl == NULL) {
        lb_err("plugin %s: cannot load %s: %s; running without it", what, path, dlerror());
        goto fail;
    }
    p->desc = dlsym(p->dl, TERN_PLUGIN_SYMBOL);
    if (p->desc == NULL) {
        lb_err("plugin %s: %s has no %s: not a tern plugin; running without it", what, path,
               TERN_PLUGIN_SYMBOL);
        goto fail;
    }
    if (p->desc->api_version != TERN_PLUGIN_API_VERSION) {
        lb_err("plugin %s: %s was built for plugin API version %u, this tern has version %u: "
               "rebuild it against this tern's lb/plugin.h; running without it",
               what, path, (unsigned)p->desc->api_version, (unsigned)TERN_PLUGIN_API_VERSION);
        goto fail;
    }
    if (p->desc->name == NULL || p->desc->init == NULL) {
        lb_err("plugin %s: %s: its descriptor has no name or no init; running without it", what,
               path);
        goto fail;
    }
    for (struct plugin *o = ps->list; o != NULL; o = o->next) {
        if (strcmp(o->name, p->desc->name) == 0) {
            lb_err("plugin %s: %s: a plugin of that name is already loaded (%s)", what, path,
                   o->path);
            goto fail;
        }
    }
    p->name = strdup(p->desc->name);
    p->section = dup_or_null(p->desc->section);
    if (p->name == NULL || (p->desc->section != NULL && p->section == NULL)) {
        lb_err("plugin %s: out of memory", what);
        goto fail;
    }
    p->host = host_template;
    p->host.name = p->name;
    p->host.host_private = p;
    p->tree = lb_plugin_section(c, p->section, &p->tree_mem);
    if (p->section != NULL && p->tree == NULL && lb_plugin_section_present(c, p->section)) {
        lb_err("plugin %s: out of memory", what);
        goto fail;
    }
    p->next = ps->list;
    ps->list = p;
    p->running = true;
    r = p->desc->init(&p->host, p->tree, &p->state);
    if (r < 0) {
        lb_err("plugin %s: init failed (%s); the plugin is disabled, tern serves on without it",
               p->name, strerror(-r));
        plugin_unload(ps, p, false, false);
        return;
    }
    lb_info("plugin %s loaded from %s", p->name, path);
    return;
fail:
    plugin_free(p);
}

static void
on_sample(struct ev_loop *loop, ev_timer *w, int revents)
{
    lb_sampler_run(w->data);
    finish_retired(w->data, false);
}

static void
load_configured(struct lb_plugins *ps)
{
    const struct conf *c = ps->ctl->snap->conf;

    for (int i = 0; known_plugins[i] != NULL; i++) {
        char *path;

        if (!lb_plugin_section_present(c, known_plugins[i]))
            continue;
        path = find_module(c, known_plugins[i]);
        if (path != NULL)
            plugin_load(ps, path, known_plugins[i], false);
        free(path);
    }
    for (size_t i = 0; i < c->global.nplugins; i++)
        plugin_load(ps, c->global.plugins[i], NULL, true);
}

int
lb_plugins_start(struct lb_ctl *ctl)
{
    struct lb_plugins *ps = calloc(1, sizeof(*ps));

    if (ps == NULL || lb_metrics_init(&ps->metrics) < 0) {
        lb_err("plugins: out of memory");
        free(ps);
        return -1;
    }
    ps->ctl = ctl;
    ctl->plugins = ps;
    if (lb_jobs_start(&ps->jobs, ctl->loop) < 0)
        lb_err("plugins: cannot start the job pool; plugins cannot run blocking jobs");
    else
        ps->jobs_up = true;
    /* The sampler runs whether or not a plugin is loaded: the metrics are
     * the host's, and a plugin loaded by a reload finds them warm. */
    lb_sampler_run(ps);
    ev_timer_init(&ps->sample_timer, on_sample, 1.0, 1.0);
    ps->sample_timer.data = ps;
    ev_timer_start(ctl->loop, &ps->sample_timer);
    load_configured(ps);
    return 0;
}

void
lb_plugins_reloaded(struct lb_ctl *ctl)
{
    struct lb_plugins *ps = ctl->plugins;
    const struct conf *c;

    if (ps == NULL)
        return;
    c = ctl->snap->conf;
    lb_sampler_run(ps); /* follow the new snapshot's slots at once */
    for (struct plugin *p = ps->list, *next; p != NULL; p = next) {
        next = p->next;
        if (p->external) {
            bool kept = false;

            for (size_t i = 0; i < c->global.nplugins; i++)
                kept = kept || strcmp(c->global.plugins[i], p->path) == 0;
            if (!kept) {
                lb_info("plugin %s: no longer in global.plugins", p->name);
                plugin_unload(ps, p, true, true);
                continue;
            }
        } else if (!lb_plugin_section_present(c, p->section)) {
            lb_info("plugin %s: its section is gone", p->name);
            plugin_unload(ps, p, true, true);
            continue;
        }
        struct conf_arena *mem = NULL;
        const struct tern_value *tree = lb_plugin_section(c, p->section, &mem);

        if (p->desc->reload == NULL) {
            char *path = strdup(p->path);
            bool external = p->external;

            plugin_unload(ps, p, true, true);
            if (path != NULL)
                plugin_load(ps, path, NULL, external);
            free(path);
            if (mem != NULL)
                conf_arena_free(mem);
            continue;
        }
        if (p->desc->reload(p->state, tree) < 0) {
            lb_warn("plugin %s: refused the new configuration; it keeps the previous one", p->name);
            if (mem != NULL)
                conf_arena_free(mem);
            continue;
        }
        if (p->tree_mem != NULL)
            conf_arena_free(p->tree_mem);
        p->tree_mem = mem;
        p->tree = tree;
    }
    /* Sections that appeared, modules newly named. */
    for (int i = 0; known_plugins[i] != NULL; i++) {
        bool loaded = false;
        char *path;

        for (struct plugin *p = ps->list; p != NULL; p = p->next)
            loaded = loaded || (!p->external && strcmp(p->name, known_plugins[i]) == 0);
        if (loaded || !lb_plugin_section_present(c, known_plugins[i]))
            continue;
        path = find_module(c, known_plugins[i]);
        if (path != NULL)
            plugin_load(ps, path, known_plugins[i], false);
        free(path);
    }
    for (size_t i = 0; i < c->global.nplugins; i++) {
        bool loaded = false;

        for (struct plugin *p = ps->list; p != NULL; p = p->next)
            loaded = loaded || (p->external && strcmp(p->path, c->global.plugins[i]) == 0);
        if (!loaded)
            plugin_load(ps, c->global.plugins[i], NULL, true);
    }
    struct tern_event ev = {.type = TERN_EV_RELOADED, .value = NAN, .threshold = NAN};
    lb_bus_publish(ps, NULL, &ev);
}

void
lb_plugins_stop(struct lb_ctl *ctl)
{
    struct lb_plugins *ps = ctl->plugins;

    if (ps == NULL)
        return;
    /* Shutting down: jobs still running are waited for (each is bounded by
     * its own timeout), as the module's code is theirs. */
    while (ps->list != NULL)
        plugin_unload(ps, ps->list, true, false);
    finish_retired(ps, true);
    ev_timer_stop(ctl->loop, &ps->sample_timer);
    if (ps->jobs_up)
        lb_jobs_stop(&ps->jobs);
    while (ps->timers != NULL)
        timer_unlink(ps, ps->timers);
    unsubscribe_where(ps, 0, 0);
    while (ps->queue != NULL) {
        struct bus_item *it = ps->queue;

        ps->queue = it->next;
        free_event(&it->ev);
        free(it);
    }
    for (struct bus_sub *s = ps->subs, *n; s != NULL; s = n) {
        n = s->next;
        free(s);
    }
    for (struct api_route *r = ps->routes, *n; r != NULL; r = n) {
        n = r->next;
        free(r->route);
        free(r);
    }
    lb_sampler_free(&ps->sampler);
    lb_metrics_free(&ps->metrics);
    free(ps);
    ctl->plugins = NULL;
}
