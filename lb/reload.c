/*
 * Configuration reload (see reload.h).
 *
 * Everything that can fail happens before anything is handed over: the file
 * is loaded and validated, the new snapshot built, new listening sockets
 * opened and each worker's new generation allocated. Only then are the
 * generations posted, so a failed reload leaves the running configuration
 * exactly as it was.
 *
 * Loading the file can block: server addresses may name hosts, and
 * getaddrinfo() waits as long as the resolver's timeouts when a name server
 * does not answer. The control loop must not (VRRP adverts, health checks and
 * the admin API run on it), so a reload (SIGHUP or POST /api/v1/reload)
 * loads the file on a thread of its own and hands the result to the loop
 * (ev_async), where the rest of the reload (snapshot, sockets, hand-over)
 * runs as before. One load at a time: a request during a load is remembered
 * and starts one more load when it ends, however many came, since that one
 * reads the file as it is by then. Loads are numbered so that a POST can wait
 * for the one that reads the file as it was when it came: the admin API
 * parks its connection and answers it when that load has finished.
 *
 * Listeners are matched by bind address: a listener whose address stays
 * keeps its sockets (the kernel's accept queues are never closed, so no
 * connection is refused while reloading), even when its name, mode or pool
 * changed. Listeners that disappear close their sockets when the workers
 * switch; their connections finish on the old generation.
 */
#include "lb/reload.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lb/accesslog.h"
#include "lb/admin.h"
#include "lb/health.h"
#include "lb/log.h"
#include "lb/notify.h"
#include "lb/plugin_host.h"
#include "lb/tls.h"
#include "lb/vrrp.h"

static void
record(struct lb_ctl *ctl, bool ok, char *errors)
{
    free(ctl->last_reload.errors);
    ctl->last_reload.errors = ok ? NULL : errors;
    if (ok)
        free(errors);
    ctl->last_reload.ok = ok;
    ctl->last_reload.time = ev_time();
}

static void
free_fds(int **fds, int nworkers)
{
    for (int w = 0; fds && w < nworkers; w++)
        free(fds[w]);
    free(fds);
}

static bool
same_string(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Log destinations may move with a reload; a failure keeps the old ones. */
static void
reopen_logs(const struct conf *old, const struct conf *c)
{
    if (!same_string(old->global.log, c->global.log) && lb_log_open(c->global.log) < 0)
        lb_err("reload: cannot open log %s; keeping the old one", c->global.log);
    if (!same_string(old->global.access_log, c->global.access_log) &&
        lb_accesslog_open(c->global.access_log) < 0)
        lb_err("reload: cannot open access log %s; keeping the old one", c->global.access_log);
}

/* Loads and validates path: 0 and *out, or the number of errors with their
 * text in *errors (caller frees). Blocks while names resolve. Any thread. */
static int
load_file(const char *path, struct conf **out, char **errors)
{
    char *errbuf = NULL;
    size_t errlen = 0;
    FILE *err = open_memstream(&errbuf, &errlen);

    *out = NULL;
    *errors = NULL;
    if (!err) {
        *errors = strdup("out of memory\n");
        return 1;
    }
    int nerr = conf_load(path, err, out);
    fclose(err);
    if (nerr || !*out) {
        *errors = errbuf;
        return nerr ? nerr : 1;
    }
    free(errbuf);
    return 0;
}

/* The second half of a reload, on the control thread, with the outcome of
 * load_file(): takes c and errbuf. */
static int
reload_apply(struct lb_ctl *ctl, int nerr, struct conf *c, char *errbuf)
{
    const struct conf *oc = ctl->snap->conf;
    int nw = ctl->nworkers;
    struct lb_snapshot *ns = NULL;
    struct lb_wgen **gens = NULL;
    int **nfds = NULL;
    bool *opened = NULL;

    if (nerr || !c) {
        lb_err("reload of %s refused, the running configuration is unchanged:", ctl->conf_path);
        for (const char *line = errbuf; line && *line;) {
            const char *nl = strchr(line, '\n');
            int len = nl ? (int)(nl - line) : (int)strlen(line);
            lb_err("  %.*s", len, line);
            line = nl ? nl + 1 : NULL;
        }
        record(ctl, false, errbuf);
        return -1;
    }
    free(errbuf);
    errbuf = NULL;

    if (c->global.workers != oc->global.workers)
        lb_warn("reload: global.workers changed (%d -> %d); that takes a restart, keeping %d",
                oc->global.workers, c->global.workers, nw);
    if (c->global.max_connections != oc->global.max_connections)
        lb_info("reload: global.max_connections %u -> %u; connections open above the new limit "
                "stay, new ones wait until the count is under it",
                oc->global.max_connections, c->global.max_connections);

    ns = lb_snapshot_new(c);
    if (!ns) {
        conf_free(c);
        errbuf = strdup("cannot build the new runtime state (out of memory)\n");
        goto fail;
    }
    /* Certificates and keys are read here, while a bad one can still refuse
     * the reload; the snapshot owns the contexts. */
    if (lb_tls_attach(ns, &errbuf) < 0)
        goto fail;
    nfds = calloc((size_t)nw, sizeof(*nfds));
    opened = calloc(c->nlisteners ? c->nlisteners : 1, sizeof(*opened));
    gens = calloc((size_t)nw, sizeof(*gens));
    if (!nfds || !opened || !gens)
        goto oom;
    for (int w = 0; w < nw; w++) {
        nfds[w] = malloc((c->nlisteners ? c->nlisteners : 1) * sizeof(int));
        if (!nfds[w])
            goto oom;
        for (size_t j = 0; j < c->nlisteners; j++)
            nfds[w][j] = -1;
    }
    for (size_t j = 0; j < c->nlisteners; j++) {
        const struct conf_listener *nl = &c->listeners[j];
        size_t i;
        for (i = 0; i < oc->nlisteners; i++)
            if (lb_addr_equal(&oc->listeners[i].bind, &nl->bind))
                break;
        if (i < oc->nlisteners) {
            for (int w = 0; w < nw; w++)
                nfds[w][j] = ctl->listen_fds[w][i];
            continue;
        }
        opened[j] = true;
        for (int w = 0; w < nw; w++) {
            int fd = lb_listener_open_one(nl);
            if (fd < 0) {
                char msg[512];
                snprintf(msg, sizeof(msg), "%s: listener %s: cannot listen on %s: %s\n",
                         ctl->conf_path, nl->name, nl->bind.text, strerror(-fd));
                errbuf = strdup(msg);
                goto fail;
            }
            nfds[w][j] = fd;
        }
    }
    for (int w = 0; w < nw; w++) {
        gens[w] = lb_wgen_new(&ctl->workers[w], ns, nfds[w]);
        if (!gens[w])
            goto oom;
    }

    /* Nothing can fail from here on. */
    lb_snapshot_carry_over(ns, ctl->snap);
    reopen_logs(oc, c);
    for (int w = 0; w < nw; w++) /* kept sockets take the new socket options */
        for (size_t j = 0; j < c->nlisteners; j++)
            if (!opened[j])
                lb_listener_tune(nfds[w][j], &c->listeners[j]);
    for (int w = 0; w < nw; w++)
        lb_wgen_post(gens[w]);
    struct lb_snapshot *old = ctl->snap;
    ctl->snap = ns;
    free_fds(ctl->listen_fds, nw);
    ctl->listen_fds = nfds;
    free(gens);
    free(opened);
    lb_admin_reloaded(ctl);
    lb_health_reloaded(ctl);
    lb_vrrp_reloaded(ctl);
    lb_plugins_reloaded(ctl);
    lb_snapshot_unref(old);
    record(ctl, true, NULL);
    lb_info("reload: %s in effect (%zu listener%s, %zu pool%s)", ctl->conf_path, c->nlisteners,
            c->nlisteners == 1 ? "" : "s", c->npools, c->npools == 1 ? "" : "s");
    return 0;

oom:
    errbuf = strdup("out of memory while preparing the new configuration\n");
fail:
    /* Generations not posted own nothing yet: detach their sockets before
     * freeing them, then close only the sockets this attempt opened. */
    for (int w = 0; gens && w < nw; w++) {
        if (!gens[w])
            continue;
        for (size_t j = 0; j < gens[w]->nlisteners; j++)
            gens[w]->listeners[j].fd = -1;
        lb_wgen_unref(gens[w]);
    }
    for (int w = 0; nfds && w < nw; w++)
        for (size_t j = 0; nfds[w] && opened && j < ns->conf->nlisteners; j++)
            if (opened[j] && nfds[w][j] >= 0)
                close(nfds[w][j]);
    free_fds(nfds, nw);
    free(gens);
    free(opened);
    if (ns)
        lb_snapshot_unref(ns);
    lb_err("reload of %s failed, the running configuration is unchanged: %s", ctl->conf_path,
           errbuf ? errbuf : "?");
    record(ctl, false, errbuf);
    return -1;
}

/* The load in flight, if any. The thread owns job until it hands it over
 * under mu; after lb_reload_stop() it frees it instead. */
struct load_job {
    char *path;
    struct conf *conf;
    char *errors;
    int nerr;
    uint64_t seq;
};

static struct {
    pthread_mutex_t mu;
    struct lb_ctl *ctl;
    ev_async done;
    bool running;                  /* a load thread exists (control thread's view) */
    bool again;                    /* a request came while it ran */
    bool again_sighup;             /* ... and a SIGHUP was one of them */
    uint64_t started;              /* the number of the last load started */
    uint64_t finished;             /* ... and of the last one whose outcome is recorded */
    bool stopped;                  /* under mu: the loop is going away */
    struct load_job *finished_job; /* under mu */
} bg = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void
job_free(struct load_job *job)
{
    if (!job)
        return;
    if (job->conf)
        conf_free(job->conf);
    free(job->errors);
    free(job->path);
    free(job);
}

static void *
load_thread(void *arg)
{
    struct load_job *job = arg;

    pthread_setname_np(pthread_self(), "tern-load");
    job->nerr = load_file(job->path, &job->conf, &job->errors);
    pthread_mutex_lock(&bg.mu);
    if (!bg.stopped) {
        bg.finished_job = job;
        ev_async_send(bg.ctl->loop, &bg.done);
        job = NULL;
    }
    pthread_mutex_unlock(&bg.mu);
    job_free(job);
    return NULL;
}

static int
start_load(struct lb_ctl *ctl, uint64_t seq)
{
    struct load_job *job = calloc(1, sizeof(*job));
    pthread_attr_t attr;
    pthread_t t;
    sigset_t all, old;
    int r;

    if (job)
        job->path = strdup(ctl->conf_path);
    if (!job || !job->path) {
        job_free(job);
        return -ENOMEM;
    }
    job->seq = seq;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* Signals stay with the control loop's watchers. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    r = pthread_create(&t, &attr, load_thread, job);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        job_free(job);
        return -r;
    }
    bg.running = true;
    lb_notify_reloading();
    return 0;
}

/* Load seq's outcome is in ctl->last_reload: the admin requests that waited
 * for it are answered now, before a later load can overwrite it. */
static void
finish(struct lb_ctl *ctl, uint64_t seq)
{
    bg.finished = seq;
    lb_admin_loads_finished(ctl);
}

static uint64_t request(struct lb_ctl *ctl, bool sighup);

static void
load_done(struct ev_loop *loop, ev_async *w, int revents)
{
    struct load_job *job;

    pthread_mutex_lock(&bg.mu);
    job = bg.finished_job;
    bg.finished_job = NULL;
    pthread_mutex_unlock(&bg.mu);
    if (!job)
        return;
    bg.running = false;
    reload_apply(bg.ctl, job->nerr, job->conf, job->errors); /* takes conf and errors */
    job->conf = NULL;
    job->errors = NULL;
    uint64_t seq = job->seq;
    job_free(job);
    lb_notify_ready();
    /* The answers may let pipelined POSTs in, which start the next load
     * themselves: the one the coalesced requests wait for. */
    finish(bg.ctl, seq);
    if (bg.again && !bg.running)
        request(bg.ctl, bg.again_sighup);
}

/* Logs one "SIGHUP: reloading" per load a SIGHUP asked for (or one
 * "admin API: reloading" when only the API did), so that each such line is
 * followed by one outcome ("in effect" or "refused"). */
static uint64_t
request(struct lb_ctl *ctl, bool sighup)
{
    const char *who = sighup ? "SIGHUP" : "admin API";

    if (!bg.ctl) {
        /* Started before any thread can send: ev_async_start() forgets a
         * send that came before it. */
        bg.ctl = ctl;
        ev_async_init(&bg.done, load_done);
        ev_async_start(ctl->loop, &bg.done);
        ev_unref(ctl->loop); /* it alone does not keep the loop running */
    }
    if (bg.running) {
        if (!bg.again || (sighup && !bg.again_sighup))
            lb_info("%s during the load of %s: it is loaded once more after this load", who,
                    ctl->conf_path);
        bg.again = true;
        bg.again_sighup |= sighup;
        return bg.started + 1;
    }
    /* A SIGHUP waiting for this load names it, whoever starts it. */
    if (bg.again_sighup)
        who = "SIGHUP";
    bg.again = bg.again_sighup = false;
    uint64_t seq = ++bg.started;
    lb_info("%s: reloading %s", who, ctl->conf_path);
    int r = start_load(ctl, seq);
    if (r < 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s: cannot start loading the file: %s\n", ctl->conf_path,
                 strerror(-r));
        lb_err("reload of %s refused, the running configuration is unchanged: %s", ctl->conf_path,
               msg);
        record(ctl, false, strdup(msg));
        finish(ctl, seq);
    }
    return seq;
}

uint64_t
lb_reload_request(struct lb_ctl *ctl)
{
    return request(ctl, true);
}

uint64_t
lb_reload_request_api(struct lb_ctl *ctl)
{
    return request(ctl, false);
}

uint64_t
lb_reload_finished(const struct lb_ctl *ctl)
{
    (void)ctl;
    return bg.finished;
}

void
lb_reload_stop(struct lb_ctl *ctl)
{
    if (bg.ctl != ctl)
        return;
    pthread_mutex_lock(&bg.mu);
    bg.stopped = true;
    struct load_job *job = bg.finished_job;
    bg.finished_job = NULL;
    pthread_mutex_unlock(&bg.mu);
    job_free(job);
    if (ev_is_active(&bg.done)) {
        ev_ref(ctl->loop);
        ev_async_stop(ctl->loop, &bg.done);
    }
}
