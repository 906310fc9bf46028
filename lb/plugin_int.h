/*
 * The plugin host's internals, shared by its files: plugin_host.c (loading,
 * the host table, timers, events, pools, routes), plugin_metrics.c (the
 * registry and the 1 s sampler), plugin_jobs.c (the job pool) and
 * plugin_conf.c (a section as a tree of values). Nothing outside lb/plugin*
 * includes it.
 */
#ifndef LB_PLUGIN_INT_H
#define LB_PLUGIN_INT_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb/plugin.h"
#include "lb/runtime.h"

struct conf_arena;
struct lb_plugins;

/* One loaded module. */
struct plugin {
    struct plugin *next;
    struct lb_plugins *ps;
    int id; /* > 0; owner id of what it registers (0 is the host) */
    char *name;
    char *path;
    char *section; /* top-level key of its configuration, or NULL */
    bool external; /* named in global.plugins, not loaded by section */
    void *dl;      /* dlopen() handle */
    const struct tern_plugin *desc;
    struct tern_host host; /* its own copy of the table: host_private = this */
    void *state;
    bool running;                /* init succeeded, fini not yet called */
    struct conf_arena *tree_mem; /* its section's tree */
    const struct tern_value *tree;
    unsigned jobs; /* queued or running jobs (under the job pool's lock) */
};

/* ---- metrics registry (plugin_metrics.c) ---- */

struct lb_metric {
    char *name; /* NULL: a free entry */
    double value;
    bool valid;
    int owner;
    unsigned stamp;
    int32_t next; /* hash chain, or free list */
};

struct lb_metrics {
    struct lb_metric *v;
    size_t n, cap;
    int32_t *buckets;
    size_t nbuckets;
    int32_t free_list;
};

int lb_metrics_init(struct lb_metrics *m);
void lb_metrics_free(struct lb_metrics *m);
/* Creates or updates; -EPERM when the name belongs to another owner. */
int lb_metrics_set(struct lb_metrics *m, const char *name, double value, bool valid, int owner,
                   unsigned stamp);
int lb_metrics_get(const struct lb_metrics *m, const char *name, double *value);
int lb_metrics_remove(struct lb_metrics *m, const char *name, int owner);
/* Removes owner's metrics whose stamp differs from stamp: those its last
 * pass did not set. */
void lb_metrics_sweep(struct lb_metrics *m, int owner, unsigned stamp);
void lb_metrics_remove_owner(struct lb_metrics *m, int owner);
size_t lb_metrics_each(const struct lb_metrics *m, const char *prefix, tern_metric_cb cb,
                       void *arg);

/* The sampler's memory of the previous second. */
struct sampler_srv {
    char *name;
    bool known; /* has a previous sample */
    int health, state;
    unsigned long requests;
    unsigned long responses[6];
    unsigned long lat[LB_LAT_BUCKETS + 1];
};

struct sampler_pool {
    char *name;
    unsigned long requests;
    bool known;
    struct sampler_srv *srv; /* [capacity] */
    size_t capacity;
};

struct sampler {
    const struct lb_snapshot *snap;
    struct sampler_pool *pools;
    size_t npools;
    double last; /* monotonic seconds of the previous sample, 0: none */
    unsigned long long cpu_busy, cpu_total;
    unsigned stamp;
};

void lb_sampler_run(struct lb_plugins *ps);
void lb_sampler_free(struct sampler *s);
/* Publishes at once what changed for server sv of pool p (both of the
 * current snapshot) since the sampler or this last looked: up, down, added,
 * removed, with why as the detail (NULL: said from the change). */
void lb_sampler_server_changed(struct lb_plugins *ps, const struct lb_pool *p,
                               const struct lb_server *sv, const char *why);

/* ---- job pool (plugin_jobs.c) ---- */

struct lb_job {
    struct lb_job *next;
    struct plugin *owner;
    tern_job_run_cb run;
    tern_job_done_cb done;
    void *arg;
    void *result;
    int status;
};

/*
 * The pool's bound. A job is one blocking call bounded by its own timeout
 * (an SMTP send's 30 s, a clone, a script), so the threads worth having are
 * the calls in flight at once: a round of notifications with a scale-out's
 * launches is a handful. 16 leaves room for that while an unreachable mail
 * server hangs every send, and bounds what such a backend can hold: 16
 * threads, their stacks, and as many sockets.
 */
#define LB_JOBS_MAX 16
/* How long a thread beyond the first few waits idle before it exits: long
 * enough that alarms repeating every minute reuse their threads rather
 * than make new ones, short enough that one burst does not keep 16. */
#define LB_JOBS_IDLE_MS 60000

enum lb_jobs_slot {
    LB_JOBS_FREE,   /* no thread */
    LB_JOBS_LIVE,   /* running or waiting for a job */
    LB_JOBS_EXITED, /* returned after idling, not yet joined */
};

struct lb_jobs_thread {
    pthread_t tid;
    struct lb_jobs *j;
    enum lb_jobs_slot state; /* under mu */
};

struct lb_jobs {
    pthread_mutex_t mu;
    pthread_cond_t work;  /* a job was queued, or stop (CLOCK_MONOTONIC) */
    pthread_cond_t ended; /* a job finished */
    struct lb_job *queue, *queue_tail;
    struct lb_job *done, *done_tail;
    struct lb_jobs_thread threads[LB_JOBS_MAX];
    /* All under mu. The pool starts base threads, adds one whenever a job
     * is queued with no idle thread to take it, up to LB_JOBS_MAX, and lets
     * those beyond base exit after idle_ms without a job. */
    int nthreads; /* LIVE slots */
    int nidle;    /* threads not running a job (waiting, or starting) */
    int nqueued;  /* jobs in queue */
    int base;
    int idle_ms;
    bool stop;
    ev_async async;
    struct ev_loop *loop;
};

int lb_jobs_start(struct lb_jobs *j, struct ev_loop *loop);
void lb_jobs_stop(struct lb_jobs *j);
int lb_jobs_submit(struct lb_jobs *j, struct plugin *owner, tern_job_run_cb run,
                   tern_job_done_cb done, void *arg);
/* Drops owner's queued jobs (done with -ECANCELED), waits for its running
 * ones and runs every completion. Control thread. */
void lb_jobs_drain_owner(struct lb_jobs *j, struct plugin *owner);

/* ---- configuration tree (plugin_conf.c) ---- */

/* The tree of section `name` of c ("watch", "scale"), or NULL when the
 * section is absent or unknown. Allocated in *mem (created here). */
const struct tern_value *lb_plugin_section(const struct conf *c, const char *name,
                                           struct conf_arena **mem);
/* Whether c has that section (so its plugin should be loaded). */
bool lb_plugin_section_present(const struct conf *c, const char *name);

/* ---- the host ---- */

struct bus_sub {
    struct bus_sub *next;
    int id;
    int owner;
    unsigned mask;
    tern_event_cb cb;
    void *arg;
    bool dead;
};

struct bus_item {
    struct bus_item *next;
    struct tern_event ev; /* strings owned */
};

struct api_route {
    struct api_route *next;
    char *route;
    int owner;
    tern_api_cb cb;
    void *arg;
};

struct tern_timer {
    ev_timer w;
    struct tern_timer *next, *prev;
    struct plugin *owner;
    tern_timer_cb cb;
    void *arg;
    bool firing, cancelled;
};

struct lb_plugins {
    struct lb_ctl *ctl;
    struct plugin *list;
    int next_id;
    struct lb_metrics metrics;
    struct sampler sampler;
    ev_timer sample_timer;
    struct lb_jobs jobs;
    bool jobs_up;
    struct tern_timer *timers;
    struct bus_sub *subs;
    int next_sub;
    struct bus_item *queue, *queue_tail;
    bool delivering;
    struct api_route *routes;
};

/* Publishes on behalf of owner ("tern" when NULL). */
void lb_bus_publish(struct lb_plugins *ps, const char *source, const struct tern_event *ev);

#endif
