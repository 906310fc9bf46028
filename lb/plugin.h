/*
 * The plugin API: the one header a tern plugin includes.
 *
 * A plugin is a shared module (watch.so, scale.so, or a third party's) that
 * exports one `const struct tern_plugin tern_plugin_entry`. The daemon loads
 * it with dlopen(), refuses it unless its api_version equals the daemon's
 * TERN_PLUGIN_API_VERSION, and calls init() on the control thread with a
 * table of host services (struct tern_host) and the plugin's configuration
 * section. Everything the plugin may do to the daemon goes through that
 * table, as in Redis's redismodule.h and nginx's ngx_module_t: log, timers
 * on the control loop, a job pool for blocking calls, a metrics registry, an
 * event bus, pool operations and JSON for admin API routes. Nothing else of
 * tern is visible: this header uses plain C types only, so a third party can
 * build a plugin against it alone.
 *
 * Threads. Every host call and every callback runs on the control thread
 * (whose loop must never block), except tern_host.log, which any thread may
 * call, and the `run` function of a job, which runs on a job-pool thread and
 * may call nothing of the host but log.
 *
 * State. A plugin keeps its state in the struct it hands back from init();
 * the host passes it to reload() and fini(). Plugins have no globals, so one
 * module could even be loaded twice.
 *
 * Errors follow the daemon's convention: 0 or a negative errno.
 *
 * Versioning. TERN_PLUGIN_API_VERSION changes whenever a struct here changes
 * layout or a function changes meaning. The host table only grows at its end
 * within one version; tern_host.size tells a plugin how much of it exists.
 */
#ifndef TERN_PLUGIN_H
#define TERN_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TERN_PLUGIN_API_VERSION 1

#if defined(__GNUC__)
#define TERN_PLUGIN_EXPORT __attribute__((visibility("default")))
#define TERN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TERN_PLUGIN_EXPORT
#define TERN_PRINTF(f, a)
#endif

struct tern_host;

/* ---- configuration ---- */

/*
 * A plugin's configuration section, as a read-only tree of values. conf/ has
 * already validated the section against the schema declared for it (unknown
 * keys, types, bounds, required keys, cross references) and applied the
 * defaults, so a plugin reads values without checking them again. Durations
 * are integers in milliseconds, sizes integers in bytes, addresses and
 * choices strings as written. A key whose value is absent and has no default
 * is not in its map at all.
 */
enum tern_value_kind {
    TERN_VAL_NULL = 0,
    TERN_VAL_BOOL,
    TERN_VAL_INT,
    TERN_VAL_DOUBLE,
    TERN_VAL_STRING,
    TERN_VAL_LIST, /* items[0..n) */
    TERN_VAL_MAP   /* items[0..n), each with its key */
};

struct tern_value {
    enum tern_value_kind kind;
    const char *key; /* the key of a map member; NULL otherwise */
    union {
        bool b;
        int64_t i;
        double d;
        const char *s;
    } u;
    const struct tern_value *items;
    size_t n;
};

/* The member of map named key, or NULL (also when map is NULL or no map). */
static inline const struct tern_value *
tern_value_get(const struct tern_value *map, const char *key)
{
    if (map == NULL || map->kind != TERN_VAL_MAP)
        return NULL;
    for (size_t i = 0; i < map->n; i++) {
        const char *k = map->items[i].key, *q = key;

        while (*k != '\0' && *k == *q)
            k++, q++;
        if (*k == '\0' && *q == '\0')
            return &map->items[i];
    }
    return NULL;
}

static inline const char *
tern_value_str(const struct tern_value *v, const char *def)
{
    return v != NULL && v->kind == TERN_VAL_STRING ? v->u.s : def;
}

static inline int64_t
tern_value_int(const struct tern_value *v, int64_t def)
{
    if (v != NULL && v->kind == TERN_VAL_INT)
        return v->u.i;
    if (v != NULL && v->kind == TERN_VAL_DOUBLE)
        return (int64_t)v->u.d;
    return def;
}

static inline double
tern_value_double(const struct tern_value *v, double def)
{
    if (v != NULL && v->kind == TERN_VAL_DOUBLE)
        return v->u.d;
    if (v != NULL && v->kind == TERN_VAL_INT)
        return (double)v->u.i;
    return def;
}

static inline bool
tern_value_bool(const struct tern_value *v, bool def)
{
    return v != NULL && v->kind == TERN_VAL_BOOL ? v->u.b : def;
}

/*
 * The schema of a third-party module's section. A module named in
 * global.plugins whose descriptor names a section may export, besides
 * tern_plugin_entry, a table of the keys of that section:
 *
 *     TERN_PLUGIN_EXPORT const struct tern_conf_key tern_plugin_schema[] = {
 *         {.key = "greeting", .type = TERN_CONF_STRING, .def = "hello", .doc = "..."},
 *         {.key = "every", .type = TERN_CONF_DURATION, .required = true, .doc = "..."},
 *         {0},
 *     };
 *
 * tern reads it when it loads the configuration (also `tern -t` and a
 * reload), so the section is checked with the rest of the file, errors as
 * FILE:LINE:COL: key.path: message, and the plugin receives it as a tree
 * of values with the defaults applied. Without the table a section of that
 * name is an unknown key. It is an optional symbol, not part of the
 * descriptor, so modules built without it keep working in this version.
 */
enum tern_conf_type {
    TERN_CONF_END = 0,
    TERN_CONF_STRING,   /* TERN_VAL_STRING */
    TERN_CONF_PATH,     /* a file name: relative to the configuration file's folder */
    TERN_CONF_INT,      /* TERN_VAL_INT, within min..max when either is set */
    TERN_CONF_BOOL,     /* TERN_VAL_BOOL */
    TERN_CONF_DOUBLE,   /* TERN_VAL_DOUBLE */
    TERN_CONF_DURATION, /* "500ms", "2s": TERN_VAL_INT in milliseconds */
    TERN_CONF_SIZE,     /* "32k": TERN_VAL_INT in bytes */
    TERN_CONF_ADDR,     /* numeric host:port, as written */
    TERN_CONF_STRINGS,  /* a list of strings: TERN_VAL_LIST */
    TERN_CONF_MAP,      /* a nested mapping of the keys in .sub */
    TERN_CONF_LIST,     /* a list of mappings of the keys in .sub */
};

struct tern_conf_key {
    const char *key;
    enum tern_conf_type type;
    bool required;
    const char *def;                 /* default as YAML text; NULL: none */
    int64_t min, max;                /* INT bounds (both 0: none; else both apply) */
    const struct tern_conf_key *sub; /* MAP, LIST: keys, ended by {0} */
    const char *doc;                 /* one line, as in conf/REFERENCE.md */
};

/* The optional symbol of the table. */
#define TERN_PLUGIN_SCHEMA_SYMBOL "tern_plugin_schema"

/* ---- events ---- */

enum tern_event_type {
    /* Up: the server takes new requests (health up, state ready). Down:
     * it stopped (health down, drain or maint). Published when it happens. */
    TERN_EV_SERVER_UP = 1,
    TERN_EV_SERVER_DOWN,
    TERN_EV_SERVER_ADDED, /* a server appeared in a pool (config, API, plugin) */
    TERN_EV_SERVER_REMOVED,
    TERN_EV_ALARM_RAISED,  /* an alarm entered ALARM */
    TERN_EV_ALARM_CLEARED, /* an alarm left ALARM */
    TERN_EV_VRRP_STATE,    /* a VRRP instance changed state (state: MASTER...) */
    TERN_EV_SCALING,       /* a scaling activity started, ended or failed */
    TERN_EV_RELOADED,      /* a new configuration is in effect */
    TERN_EV_MAX
};

#define TERN_EV_MASK(t) (1u << (t))
#define TERN_EV_ALL (~0u)

/*
 * One event. Fields that do not apply are NULL (strings) or NaN (numbers).
 * Strings belong to the bus and live only during the callback: copy what
 * you keep. A published event is copied, so the publisher's strings need
 * only live during the publish call.
 */
struct tern_event {
    enum tern_event_type type;
    double time;        /* wall clock, seconds (set by the bus when 0) */
    const char *source; /* "tern" or the publishing plugin's name (set by the bus) */
    const char *name;   /* alarm, VRRP instance or scaling group */
    const char *pool;
    const char *server;
    const char *metric;
    const char *state;  /* new state: "ALARM", "OK", "MASTER", "BACKUP", "started"... */
    const char *detail; /* a sentence for humans: the reason */
    double value;
    double threshold;
};

typedef void (*tern_event_cb)(void *arg, const struct tern_event *ev);

/* ---- pools ---- */

struct tern_server_info {
    const char *name;
    const char *address; /* host:port */
    const char *state;   /* "ready", "drain", "maint" */
    bool healthy;
    bool dynamic; /* added at runtime (API or plugin), not in the config file */
    uint32_t weight;
    uint32_t active; /* requests or tunnels in flight */
};

typedef void (*tern_server_cb)(void *arg, const struct tern_server_info *s);
typedef void (*tern_name_cb)(void *arg, const char *name);
typedef void (*tern_metric_cb)(void *arg, const char *name, double value);

/* ---- the rest of the callbacks ---- */

typedef void (*tern_timer_cb)(void *arg);
/* Runs on a job-pool thread; returns the result handed to done. */
typedef void *(*tern_job_run_cb)(void *arg);
/* Runs on the control thread. status is 0 when run ran (result is its
 * return value), or -ECANCELED when the job was dropped before it started
 * (the plugin is being unloaded): free arg either way. */
typedef void (*tern_job_done_cb)(void *arg, void *result, int status);
/* Returns the JSON document for a GET of route, malloc()ed (the host frees
 * it), or NULL for a 500. */
typedef char *(*tern_api_cb)(void *arg, const char *route);

struct tern_timer;

enum tern_log_level { TERN_LOG_ERR = 0, TERN_LOG_WARN, TERN_LOG_INFO, TERN_LOG_DEBUG };

/*
 * The services of the host. One table per loaded plugin: the host knows who
 * calls, so logs carry the plugin's name and what a plugin registered
 * (timers, subscriptions, metrics, routes, jobs) is cleaned up when it is
 * unloaded. Pass the table itself as the first argument of every call.
 */
struct tern_host {
    uint32_t api_version; /* TERN_PLUGIN_API_VERSION of the daemon */
    size_t size;          /* sizeof(struct tern_host) of the daemon */
    const char *name;     /* the plugin's name, as the host calls it */
    void *host_private;   /* the host's; do not touch */

    /* Writes one log line "name: message". Any thread. */
    void (*log)(const struct tern_host *h, enum tern_log_level level, const char *fmt, ...)
        TERN_PRINTF(3, 4);

    /* Wall-clock time and a monotonic clock, in seconds (the control
     * loop's time of the current iteration). */
    double (*now)(const struct tern_host *h);
    double (*monotonic)(const struct tern_host *h);

    /* Calls cb(arg) on the control loop after `after` seconds, then every
     * `repeat` seconds if repeat > 0. Returns a handle for timer_cancel, or
     * NULL when out of memory. A one-shot timer's handle is freed after its
     * call: do not cancel it from then on. */
    struct tern_timer *(*timer_add)(const struct tern_host *h, double after, double repeat,
                                    tern_timer_cb cb, void *arg);
    void (*timer_cancel)(const struct tern_host *h, struct tern_timer *t);

    /* Runs run(arg) on the job pool (2-4 threads shared by all plugins,
     * growing to 16 while all are busy; those added exit after a minute
     * idle), then done(arg, result, 0) on the control thread. For every blocking
     * call: libvirt, SMTP, HTTP, fork/exec. Returns 0 or -ENOMEM (done is
     * then not called). Before fini(), jobs not started are dropped (done
     * with -ECANCELED) and running ones are waited for. */
    int (*job_submit)(const struct tern_host *h, tern_job_run_cb run, tern_job_done_cb done,
                      void *arg);

    /* Metrics by name: "pool.web.requests_per_second",
     * "server.web.b1.active_connections", "host.cpu_percent" (DESIGN.md
     * lists them). The host refreshes its own once a second. metric_get
     * returns 0, -ENOENT for an unknown name or -ENODATA for a metric with
     * no value in its last interval (e.g. latency without requests). */
    int (*metric_get)(const struct tern_host *h, const char *name, double *value);
    /* Calls cb for every metric with a value whose name starts with prefix
     * ("" for all), in no particular order. Returns how many. */
    size_t (*metric_list)(const struct tern_host *h, const char *prefix, tern_metric_cb cb,
                          void *arg);
    /* Adds or updates a metric of the plugin's own (e.g. from libvirt);
     * names of the host's metrics are refused (-EPERM). NaN marks "no
     * value now". Removed with metric_remove or when the plugin unloads. */
    int (*metric_set)(const struct tern_host *h, const char *name, double value);
    int (*metric_remove)(const struct tern_host *h, const char *name);

    /* The event bus. subscribe returns an id (> 0) or -ENOMEM; mask is a
     * set of TERN_EV_MASK(type). Events are delivered in order on the
     * control thread; one published from a callback is delivered after the
     * current one. A plugin receives its own events too. */
    int (*subscribe)(const struct tern_host *h, unsigned mask, tern_event_cb cb, void *arg);
    void (*unsubscribe)(const struct tern_host *h, int id);
    void (*publish)(const struct tern_host *h, const struct tern_event *ev);

    /* Pools of the running configuration. The server calls return 0 or
     * -ENOENT (no such pool or server), -EEXIST, -EINVAL, -ENOSPC (add);
     * *why, when not NULL, gets a static sentence on failure. drain stops
     * new requests; with remove the server goes once idle or after the
     * pool's drain_timeout. Changes are logged by the host with the
     * plugin's name. List callbacks' strings live during the call. */
    void (*pool_list)(const struct tern_host *h, tern_name_cb cb, void *arg);
    int (*pool_servers)(const struct tern_host *h, const char *pool, tern_server_cb cb, void *arg);
    int (*server_add)(const struct tern_host *h, const char *pool, const char *name,
                      const char *address, uint32_t weight, const char **why);
    int (*server_drain)(const struct tern_host *h, const char *pool, const char *name, bool remove,
                        const char **why);
    int (*server_remove)(const struct tern_host *h, const char *pool, const char *name,
                         const char **why);

    /* Serves GET of an admin API route (e.g. "/api/v1/alarms") with the
     * JSON cb returns. One plugin per route: -EEXIST if taken. */
    int (*api_register)(const struct tern_host *h, const char *route, tern_api_cb cb, void *arg);
};

/*
 * The module's descriptor, exported as `tern_plugin_entry`:
 *
 *     TERN_PLUGIN_EXPORT const struct tern_plugin tern_plugin_entry = {
 *         .api_version = TERN_PLUGIN_API_VERSION, .name = "hello",
 *         .section = "hello", .init = hello_init, .fini = hello_fini,
 *     };
 */
struct tern_plugin {
    uint32_t api_version; /* TERN_PLUGIN_API_VERSION the plugin was built with */
    const char *name;
    /* The configuration section it reads (a top-level key of the file), or
     * NULL. The daemon loads watch.so and scale.so when theirs is present. */
    const char *section;
    /* Called once after loading. section is the validated section (NULL
     * when absent); it stays valid until fini() or until the reload() that
     * replaces it has returned. Sets *state. A negative return disables the
     * plugin (the daemon logs it and goes on serving): log why first. */
    int (*init)(const struct tern_host *h, const struct tern_value *section, void **state);
    /* A new configuration is in effect; section is its version of the
     * section. NULL reload: the plugin is unloaded and loaded again. A
     * negative return keeps the plugin running with what it had. */
    int (*reload)(void *state, const struct tern_value *section);
    /* Called once before unloading, after its jobs have ended; the host has
     * already dropped the plugin's timers, subscriptions and routes. */
    void (*fini)(void *state);
};

/* The symbol the host looks up. */
#define TERN_PLUGIN_SYMBOL "tern_plugin_entry"

#endif
