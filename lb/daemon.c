/*
 * Control thread: start-up, signals and shutdown.
 *
 * Signals are blocked in every worker (they inherit the mask set here before
 * they start), so SIGTERM, SIGINT, SIGHUP and SIGUSR1 are all seen by the
 * control loop through libev's signal watchers, never in the middle of a
 * worker's request.
 */
#include "lb/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/arena.h"
#include "conf/diag.h"
#include "conf/include.h"
#include "lb/accesslog.h"
#include "lb/admin.h"
#include "lb/check.h"
#include "lb/health.h"
#include "lb/log.h"
#include "lb/notify.h"
#include "lb/plugin_host.h"
#include "lb/privs.h"
#include "lb/reload.h"
#include "lb/runtime.h"
#include "lb/tls.h"
#include "lb/vrrp.h"

struct daemon {
    struct lb_ctl ctl;
    ev_signal sigterm, sigint, sighup, sigusr1;
    ev_timer tick;
    int exit_code;
};

static void
on_sigterm(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;
    lb_vrrp_shutdown(&d->ctl); /* priority 0 and VIPs gone before anything else */
    lb_info("SIGTERM: draining (listeners closed, requests in flight finish)");
    lb_notify_stopping();
    lb_workers_command(d->ctl.workers, d->ctl.nworkers, LB_CMD_DRAIN);
    ev_break(loop, EVBREAK_ALL);
}

static void
on_sigint(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;
    lb_vrrp_shutdown(&d->ctl);
    lb_info("SIGINT: stopping now");
    lb_notify_stopping();
    lb_workers_command(d->ctl.workers, d->ctl.nworkers, LB_CMD_STOP);
    ev_break(loop, EVBREAK_ALL);
}

static void
on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;
    lb_reload_request(&d->ctl); /* loads on a thread: names may take the resolver's timeouts */
}

static void
on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct daemon *d = t->data;
    lb_pools_drain_tick(d->ctl.snap, lb_monotonic_ms());
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

/* ---- tern -t: what start-up opens ---- */

struct check {
    const struct conf *c;
    FILE *err;
    struct conf_arena *tmp;
    const struct conf_node *root; /* read again only to place an error */
    bool read;
    int problems;
};

static void
check_report(struct check *k, const char *section, const char *key, const char *why)
{
    if (!k->read) {
        /* The typed configuration keeps no positions for these keys; the
         * node tree has them, includes resolved as the load did. */
        k->read = true;
        k->tmp = conf_arena_new();
        struct conf_diag *d = k->tmp ? conf_diag_new(k->tmp) : NULL;
        if (d)
            k->root = conf_include_load(k->tmp, d, k->c->file);
    }
    const struct conf_pair *p = conf_node_pair(conf_node_get(k->root, section), key);
    if (p)
        fprintf(k->err, "%s:%d:%d: %s.%s: %s\n", p->key->file, p->key->line, p->key->col, section,
                key, why);
    else
        fprintf(k->err, "%s: %s.%s: %s\n", k->c->file, section, key, why);
    k->problems++;
}

/*
 * Whether the daemon could open path for appending, without changing it: an
 * existing file is opened with O_APPEND and no O_CREAT or O_TRUNC, so it is
 * neither created nor cut; for a missing one the directory must exist and be
 * writable by us, since start-up would create the file there. -t thus leaves
 * no file behind.
 */
static int
check_appendable(const char *path, char *why, size_t whysize)
{
    /* O_NONBLOCK: a FIFO with no reader fails instead of hanging -t. */
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (errno != ENOENT) {
        snprintf(why, whysize, "cannot open %s for appending: %s", path, strerror(errno));
        return -1;
    }
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    /* A parent that is not a directory failed the open with ENOTDIR. */
    if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) < 0) {
        snprintf(why, whysize, "cannot create %s: %s: %s", path, dir, strerror(errno));
        return -1;
    }
    return 0;
}

int
lb_daemon_check(const struct conf *c, FILE *err)
{
    struct check k = {.c = c, .err = err};
    char why[4400];
    const char *log = c->global.log, *alog = c->global.access_log;

    if (log && strcmp(log, "stderr") != 0 && strcmp(log, "-") != 0 &&
        check_appendable(log, why, sizeof(why)) < 0)
        check_report(&k, "global", "log", why);
    if (alog && strcmp(alog, "stdout") != 0 && strcmp(alog, "-") != 0 &&
        check_appendable(alog, why, sizeof(why)) < 0)
        check_report(&k, "global", "access_log", why);
    if (lb_privs_check_user(c, why, sizeof(why)) < 0)
        check_report(&k, "global", "user", why);
    if (lb_admin_check_token(c, why, sizeof(why)) < 0)
        check_report(&k, "admin", "token_file", why);
    if (k.tmp)
        conf_arena_free(k.tmp);
    return k.problems;
}

int
lb_daemon_run(const char *path)
{
    struct daemon d = {.exit_code = 1};
    struct lb_ctl *ctl = &d.ctl;
    struct conf *c = NULL;
    int **fds = NULL;
    bool workers_up = false, admin_up = false, health_up = false;

    ctl->conf_path = path;
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
    ctl->snap = lb_snapshot_new(c);
    if (!ctl->snap) {
        conf_free(c);
        goto out;
    }
    char *tls_errors = NULL;
    if (lb_tls_attach(ctl->snap, &tls_errors) < 0) {
        fputs(tls_errors ? tls_errors : "TLS setup failed\n", stderr);
        free(tls_errors);
        goto out;
    }
    ctl->nworkers = c->global.workers > 0 ? c->global.workers : 1;
    if (ctl->nworkers > LB_MAX_WORKERS)
        ctl->nworkers = LB_MAX_WORKERS;
    /* Hold the control signals until their watchers exist: once a port
     * listens, a supervisor may send SIGHUP or SIGTERM at any moment, and
     * the default action would kill us. */
    sigset_t ctl_sigs, prev_sigs;
    sigemptyset(&ctl_sigs);
    sigaddset(&ctl_sigs, SIGHUP);
    sigaddset(&ctl_sigs, SIGTERM);
    sigaddset(&ctl_sigs, SIGINT);
    sigaddset(&ctl_sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &ctl_sigs, &prev_sigs);
    if (lb_listeners_open(c, ctl->nworkers, &fds) < 0)
        goto out;
    /* Real-time scheduling for VRRP while still root; the workers started
     * below come out ordinary (SCHED_RESET_ON_FORK). */
    lb_vrrp_sched_early(c);
    /* Before any thread exists: capabilities are per thread. */
    if (lb_privs_drop(c) < 0)
        goto out;

    /* Remember the socket numbers: reload hands the same sockets on. */
    ctl->listen_fds = calloc((size_t)ctl->nworkers, sizeof(int *));
    for (int w = 0; ctl->listen_fds && w < ctl->nworkers; w++) {
        ctl->listen_fds[w] = malloc((c->nlisteners ? c->nlisteners : 1) * sizeof(int));
        if (!ctl->listen_fds[w])
            goto out;
        memcpy(ctl->listen_fds[w], fds[w], c->nlisteners * sizeof(int));
    }
    if (!ctl->listen_fds)
        goto out;

    signal(SIGPIPE, SIG_IGN);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int r = lb_workers_start(ctl->snap, fds, &ctl->workers, ctl->nworkers);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    lb_listeners_close(fds, ctl->nworkers, c->nlisteners);
    fds = NULL;
    if (r < 0)
        goto out;
    workers_up = true;

    ctl->loop = ev_default_loop(EVBACKEND_EPOLL | EVFLAG_NOENV);
    if (lb_admin_start(ctl) < 0)
        goto out;
    admin_up = true;
    if (lb_health_start(ctl) < 0)
        goto out;
    health_up = true;
    lb_plugins_start(ctl); /* a plugin that fails is logged and left out */
    if (lb_vrrp_start(ctl) < 0)
        goto out;

    ev_signal_init(&d.sigterm, on_sigterm, SIGTERM);
    ev_signal_init(&d.sigint, on_sigint, SIGINT);
    ev_signal_init(&d.sighup, on_sighup, SIGHUP);
    ev_signal_init(&d.sigusr1, on_sigusr1, SIGUSR1);
    d.sigterm.data = d.sigint.data = d.sighup.data = d.sigusr1.data = &d;
    ev_signal_start(ctl->loop, &d.sigterm);
    ev_signal_start(ctl->loop, &d.sigint);
    ev_signal_start(ctl->loop, &d.sighup);
    ev_signal_start(ctl->loop, &d.sigusr1);
    pthread_sigmask(SIG_SETMASK, &prev_sigs, NULL);
    /* Drains end on the control thread: a few checks a second is plenty next
     * to drain bounds measured in seconds. */
    ev_timer_init(&d.tick, on_tick, 0.2, 0.2);
    d.tick.data = &d;
    ev_timer_start(ctl->loop, &d.tick);
    lb_tls_keys_start(ctl->loop); /* session ticket keys rotate hourly */

    lb_info("tern %s started: %d worker%s, %zu listener%s, %zu pool%s", TERN_VERSION, ctl->nworkers,
            ctl->nworkers == 1 ? "" : "s", c->nlisteners, c->nlisteners == 1 ? "" : "s", c->npools,
            c->npools == 1 ? "" : "s");
    for (size_t i = 0; i < c->nlisteners; i++)
        lb_info("listener %s: %s on %s", c->listeners[i].name,
                c->listeners[i].mode == CONF_MODE_HTTP ? "http" : "tcp", c->listeners[i].bind.text);

    lb_notify_ready();
    ev_run(ctl->loop, 0);

    ev_timer_stop(ctl->loop, &d.tick);
    lb_tls_keys_stop(ctl->loop);
    ev_signal_stop(ctl->loop, &d.sigterm);
    ev_signal_stop(ctl->loop, &d.sigint);
    ev_signal_stop(ctl->loop, &d.sighup);
    ev_signal_stop(ctl->loop, &d.sigusr1);
    d.exit_code = 0;
out:
    lb_vrrp_stop(ctl);
    lb_plugins_stop(ctl);
    if (health_up)
        lb_health_stop(ctl);
    if (admin_up)
        lb_admin_stop(ctl);
    if (workers_up) {
        if (d.exit_code != 0)
            lb_workers_command(ctl->workers, ctl->nworkers, LB_CMD_STOP);
        lb_workers_join(ctl->workers, ctl->nworkers);
    }
    if (ctl->loop) {
        lb_reload_stop(ctl);
        ev_loop_destroy(ctl->loop);
    }
    if (fds)
        lb_listeners_close(fds, ctl->nworkers, c->nlisteners);
    if (ctl->snap)
        lb_snapshot_unref(ctl->snap);
    free(ctl->last_reload.errors);
    for (int w = 0; ctl->listen_fds && w < ctl->nworkers; w++)
        free(ctl->listen_fds[w]);
    free(ctl->listen_fds);
    lb_accesslog_close();
    if (d.exit_code == 0)
        lb_info("stopped");
    return d.exit_code;
}
