/*
 * Control thread: start-up, signals and shutdown.
 *
 * Signals are blocked in every worker (they inherit the mask set here before
 * they start), so SIGTERM, SIGINT, SIGHUP and SIGUSR1 are all seen by the
 * control loop through libev's signal watchers, never in the middle of a
 * worker's request.
 */
#include "lb/daemon.h"

#include "lb/accesslog.h"
#include "lb/core.h"
#include "lb/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct daemon {
    struct ev_loop *loop;
    const char *path;
    struct lb_snapshot *snap;
    struct lb_worker *workers;
    int nworkers;
    ev_signal sigterm, sigint, sighup, sigusr1;
    int exit_code;
};

static void
on_sigterm(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;
    lb_info("SIGTERM: draining (listeners closed, requests in flight finish)");
    lb_workers_command(d->workers, d->nworkers, LB_CMD_DRAIN);
    ev_break(loop, EVBREAK_ALL);
}

static void
on_sigint(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;
    lb_info("SIGINT: stopping now");
    lb_workers_command(d->workers, d->nworkers, LB_CMD_STOP);
    ev_break(loop, EVBREAK_ALL);
}

static void
on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    lb_warn("SIGHUP: configuration reload is not available in this build; nothing changed");
}

static void
on_sigusr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    int r1 = lb_log_reopen(), r2 = lb_accesslog_reopen();
    if (r1 < 0 || r2 < 0)
        lb_err("SIGUSR1: reopening log files failed: %s", strerror(-(r1 < 0 ? r1 : r2)));
    else
        lb_info("SIGUSR1: log files reopened");
}

int
lb_daemon_run(const char *path)
{
    struct daemon d = {.path = path, .exit_code = 1};
    struct conf *c = NULL;
    int **fds = NULL;
    int errors = conf_load(path, stderr, &c);
    if (errors || !c) {
        fprintf(stderr, "tern: %s: %d error%s, not starting\n", path, errors,
                errors == 1 ? "" : "s");
        return 1;
    }
    if (lb_log_open(c->global.log) < 0) {
        fprintf(stderr, "tern: cannot open log %s: %s\n", c->global.log, strerror(errno));
        conf_free(c);
        return 1;
    }
    if (lb_accesslog_open(c->global.access_log) < 0) {
        lb_err("cannot open access log %s: %s", c->global.access_log, strerror(errno));
        conf_free(c);
        return 1;
    }
    d.snap = lb_snapshot_new(c);
    if (!d.snap) {
        conf_free(c);
        goto out;
    }
    d.nworkers = c->global.workers > 0 ? c->global.workers : 1;
    if (d.nworkers > LB_MAX_WORKERS)
        d.nworkers = LB_MAX_WORKERS;
    if (lb_listeners_open(c, d.nworkers, &fds) < 0)
        goto out;

    signal(SIGPIPE, SIG_IGN);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int r = lb_workers_start(d.snap, fds, &d.workers, d.nworkers);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    lb_listeners_close(fds, d.nworkers, c->nlisteners);
    fds = NULL;
    if (r < 0)
        goto out;

    d.loop = ev_default_loop(EVBACKEND_EPOLL | EVFLAG_NOENV);
    ev_signal_init(&d.sigterm, on_sigterm, SIGTERM);
    ev_signal_init(&d.sigint, on_sigint, SIGINT);
    ev_signal_init(&d.sighup, on_sighup, SIGHUP);
    ev_signal_init(&d.sigusr1, on_sigusr1, SIGUSR1);
    d.sigterm.data = d.sigint.data = d.sighup.data = d.sigusr1.data = &d;
    ev_signal_start(d.loop, &d.sigterm);
    ev_signal_start(d.loop, &d.sigint);
    ev_signal_start(d.loop, &d.sighup);
    ev_signal_start(d.loop, &d.sigusr1);

    lb_info("tern %s started: %d worker%s, %zu listener%s, %zu pool%s", TERN_VERSION, d.nworkers,
            d.nworkers == 1 ? "" : "s", c->nlisteners, c->nlisteners == 1 ? "" : "s", c->npools,
            c->npools == 1 ? "" : "s");
    for (size_t i = 0; i < c->nlisteners; i++)
        lb_info("listener %s: %s on %s", c->listeners[i].name,
                c->listeners[i].mode == CONF_MODE_HTTP ? "http" : "tcp", c->listeners[i].bind.text);

    ev_run(d.loop, 0);

    lb_workers_join(d.workers, d.nworkers);
    ev_signal_stop(d.loop, &d.sigterm);
    ev_signal_stop(d.loop, &d.sigint);
    ev_signal_stop(d.loop, &d.sighup);
    ev_signal_stop(d.loop, &d.sigusr1);
    ev_loop_destroy(d.loop);
    lb_info("stopped");
    d.exit_code = 0;
out:
    if (fds)
        lb_listeners_close(fds, d.nworkers, c->nlisteners);
    if (d.snap)
        lb_snapshot_unref(d.snap);
    lb_accesslog_close();
    return d.exit_code;
}
