/*
 * A scaling group's jobs, and the moves of its servers that they drive.
 *
 * A launch runs the provider's create on the job pool, probes the new
 * address with a TCP connect (on the job pool, every tick, for up to
 * scale[].grace_period, 120 s unless configured: an image that boots
 * slowly needs more) and only then adds it to the pool (server_add); the
 * pool's own health check takes over from there. A failed create holds
 * the next launch back 1, 2, 4 ... 60 s, so a broken template or script
 * does not spin. A server leaving is drained with remove, so requests in
 * flight finish; once the pool no longer lists it, destroy runs. The
 * result of every job comes back on the control thread (job_done); a
 * list's goes on to group_reconcile.c.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "scale/group_int.h"

#define PROBE_TIMEOUT 1000 /* ms */

static void *job_run(void *arg);
static void job_done(void *arg, void *result, int status);

struct job *
group_job_new(struct scale_group *g, enum job_kind kind, const struct scale_server *s)
{
    struct job *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return NULL;
    j->g = g;
    j->kind = kind;
    if (s != NULL) {
        snprintf(j->name, sizeof(j->name), "%s", s->name);
        snprintf(j->address, sizeof(j->address), "%s", s->address);
    }
    snprintf(j->group, sizeof(j->group), "%s", g->cfg.pool);
    j->prov = g->prov;
    j->gen = g->destroyed;
    j->cgen = g->created;
    return j;
}

static void
job_free(struct job *j)
{
    free(j->out);
    free(j);
}

bool
group_submit(struct scale_group *g, struct job *j)
{
    if (j == NULL)
        return false;
    if (g->h->job_submit(g->h, job_run, job_done, j) < 0) {
        job_free(j);
        return false;
    }
    return true;
}

int
scale_split_hostport(const char *addr, char *host, size_t hl, char *port, size_t pl)
{
    const char *colon;

    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');

        if (end == NULL || end[1] != ':')
            return -1;
        snprintf(host, hl, "%.*s", (int)(end - addr - 1), addr + 1);
        snprintf(port, pl, "%s", end + 2);
        return 0;
    }
    colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr)
        return -1;
    snprintf(host, hl, "%.*s", (int)(colon - addr), addr);
    snprintf(port, pl, "%s", colon + 1);
    return 0;
}

/* A TCP connect to address within PROBE_TIMEOUT. Job thread. */
static int
probe(const char *address, char *err, size_t errlen)
{
    char host[SCALE_ADDR_MAX], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int fd, r, soerr = 0;
    socklen_t sl = sizeof(soerr);
    struct pollfd pfd;

    if (scale_split_hostport(address, host, sizeof(host), port, sizeof(port)) < 0) {
        snprintf(err, errlen, "bad address %s", address);
        return -1;
    }
    r = getaddrinfo(host, port, &hints, &ai);
    if (r != 0) {
        snprintf(err, errlen, "%s: %s", address, gai_strerror(r));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (r < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect %s: %s", address, strerror(errno));
        close(fd);
        return -1;
    }
    pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
    if (r < 0 && poll(&pfd, 1, PROBE_TIMEOUT) != 1) {
        snprintf(err, errlen, "connect %s: timed out", address);
        close(fd);
        return -1;
    }
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    close(fd);
    if (soerr != 0) {
        snprintf(err, errlen, "connect %s: %s", address, strerror(soerr));
        return -1;
    }
    return 0;
}

static void *
job_run(void *arg)
{
    struct job *j = arg;
    const struct scale_provider_ops *ops = j->prov.ops;

    switch (j->kind) {
    case JOB_PROBE:
        j->rc = probe(j->address, j->err, sizeof(j->err));
        break;
    case JOB_CREATE:
        j->rc = ops->create(j->prov.p, j->group, j->name, j->address, sizeof(j->address), j->err,
                            sizeof(j->err));
        break;
    case JOB_DESTROY:
        j->rc = ops->destroy(j->prov.p, j->group, j->name, j->address, j->err, sizeof(j->err));
        break;
    case JOB_LIST:
        j->rc = ops->list(j->prov.p, j->group, &j->out, j->err, sizeof(j->err));
        break;
    }
    return NULL;
}

static void
job_done(void *arg, void *result, int status)
{
    struct job *j = arg;
    struct scale_group *g = j->g;
    struct scale_server *s;

    if (status < 0) {
        job_free(j);
        return;
    }
    if (j->kind == JOB_LIST) {
        group_list_done(g, j);
        job_free(j);
        return;
    }
    if (j->kind == JOB_CREATE)
        g->created++;
    s = group_find(g, j->name);
    if (s == NULL) {
        job_free(j);
        return;
    }
    s->busy = false;
    switch (j->kind) {
    case JOB_CREATE:
        if (j->rc != 0) {
            double wait = g->launch_failures < 6 ? (double)(1u << g->launch_failures) : 60.0;

            g->launch_failures++;
            g->next_launch = g->h->monotonic(g->h) + wait;
            group_activity_result(g, s->activity, false, true,
                                  "failed: create %s (next try in %.0f s)", j->err, wait);
            group_del_srv(g, s);
            break;
        }
        g->launch_failures = 0;
        snprintf(s->address, sizeof(s->address), "%s", j->address);
        group_set_state(g, s, SRV_PROBING);
        group_activity_result(g, s->activity, true, false, "created at %s, probing", s->address);
        break;
    case JOB_PROBE:
        if (s->st != SRV_PROBING)
            break;
        if (j->rc == 0) {
            const char *why = NULL;
            int r = g->h->server_add(g->h, g->cfg.pool, s->name, s->address, 1, &why);

            if (r == 0 || r == -EEXIST) {
                group_set_state(g, s, SRV_IN_SERVICE);
                group_activity_result(g, s->activity, true, true, "successful: %s in service",
                                      s->address);
            } else {
                group_activity_result(g, s->activity, false, true, "failed: server_add: %s",
                                      why ? why : strerror(-r));
                group_destroy_server(g, s);
            }
        } else if (g->h->monotonic(g->h) - s->since > group_grace(&g->cfg)) {
            group_activity_result(g, s->activity, false, true,
                                  "failed: no answer within %.0f s (%s)", group_grace(&g->cfg),
                                  j->err);
            group_destroy_server(g, s);
        }
        break;
    case JOB_DESTROY:
        if (j->rc != 0) {
            /* Tried again from the next tick. */
            group_activity_result(g, s->activity, false, false, "destroy failed: %s; retrying",
                                  j->err);
            group_set_state(g, s, SRV_DESTROYING);
            break;
        }
        group_activity_result(g, s->activity, true, true, "successful: destroyed");
        g->destroyed++;
        group_del_srv(g, s);
        break;
    case JOB_LIST:
        break;
    }
    job_free(j);
}

/* ---- transitions ---- */

void
group_destroy_server(struct scale_group *g, struct scale_server *s)
{
    group_set_state(g, s, SRV_DESTROYING);
    if (!s->busy && group_submit(g, group_job_new(g, JOB_DESTROY, s)))
        s->busy = true;
}

void
group_launch(struct scale_group *g, const char *reason)
{
    char name[SCALE_NAME_MAX];
    struct scale_server *s;

    if (g->next_index == 0)
        g->next_index = 1;
    snprintf(name, sizeof(name), "%s-tern-%u", g->cfg.pool, g->next_index);
    s = group_add_srv(g, name, SRV_CREATING);
    if (s == NULL)
        return;
    s->index = g->next_index++;
    s->activity = group_activity(g, "launch", name, "in progress", "%s", reason);
    if (group_submit(g, group_job_new(g, JOB_CREATE, s))) {
        s->busy = true;
    } else {
        group_activity_result(g, s->activity, false, true, "failed: cannot submit a job");
        group_del_srv(g, s);
    }
}

void
group_terminate(struct scale_group *g, struct scale_server *s, const char *reason)
{
    const char *why = NULL;
    int r;

    s->activity = group_activity(g, "terminate", s->name, "draining", "%s", reason);
    r = g->h->server_drain(g->h, g->cfg.pool, s->name, true, &why);
    if (r == -ENOENT) {
        group_destroy_server(g, s); /* not in the pool: nothing to drain */
        return;
    }
    if (r < 0)
        group_activity_result(g, s->activity, false, false, "drain: %s; destroying anyway",
                              why ? why : strerror(-r));
    group_set_state(g, s, r < 0 ? SRV_DESTROYING : SRV_DRAINING);
    if (r < 0)
        group_destroy_server(g, s);
}

struct pool_scan {
    char **names;
    size_t n, cap;
};

static void
pool_scan_cb(void *arg, const struct tern_server_info *info)
{
    struct pool_scan *ps = arg;
    char **names = group_room(ps->names, ps->n, &ps->cap, sizeof(*names));

    if (names == NULL)
        return;
    ps->names = names;
    ps->names[ps->n] = strdup(info->name);
    if (ps->names[ps->n] != NULL)
        ps->n++;
}

static bool
in_pool(const struct pool_scan *ps, const char *name)
{
    for (size_t i = 0; i < ps->n; i++)
        if (strcmp(ps->names[i], name) == 0)
            return true;
    return false;
}

/* Servers drained with remove that the pool no longer lists: destroy.
 * Servers in service that it no longer lists: add again. */
void
group_follow_drains(struct scale_group *g)
{
    struct pool_scan ps = {0};

    g->h->pool_servers(g->h, g->cfg.pool, pool_scan_cb, &ps);
    for (size_t i = 0; i < g->nsrv; i++) {
        struct scale_server *s = &g->srv[i];

        if (s->st == SRV_IN_SERVICE && !in_pool(&ps, s->name)) {
            /* A reload rebuilt the pool from the file, or an operator
             * removed it: the group still owns it, so it goes back. */
            const char *why = NULL;
            int r = g->h->server_add(g->h, g->cfg.pool, s->name, s->address, 1, &why);

            g->h->log(g->h, r == 0 ? TERN_LOG_INFO : TERN_LOG_WARN,
                      "group %s: %s was not in the pool: %s%s", g->cfg.pool, s->name,
                      r == 0 ? "added again" : "cannot add it: ",
                      r == 0 ? ""
                      : why  ? why
                             : "");
        } else if (s->st == SRV_DRAINING && !in_pool(&ps, s->name)) {
            group_activity_result(g, s->activity, true, false, "left the pool, destroying");
            group_destroy_server(g, s);
        } else if (s->st == SRV_DESTROYING && !s->busy && g->h->monotonic(g->h) - s->since >= 5.0) {
            group_destroy_server(g, s); /* a failed destroy, again */
        }
    }
    for (size_t i = 0; i < ps.n; i++)
        free(ps.names[i]);
    free(ps.names);
}

void
group_probe_new(struct scale_group *g)
{
    for (size_t i = 0; i < g->nsrv; i++) {
        struct scale_server *s = &g->srv[i];

        if (s->st == SRV_PROBING && !s->busy && group_submit(g, group_job_new(g, JOB_PROBE, s)))
            s->busy = true;
    }
}
