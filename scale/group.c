/*
 * A scaling group at run time: one pool, its servers, its policies and its
 * provider.
 *
 * Every SCALE_TICK the plugin calls scale_group_tick(). The first tick asks
 * the provider which servers exist (exec: the `list` program, or without
 * one `destroy` with TERN_ACTION=list; a program that does not know the
 * action may exit non-zero, and then nothing is adopted) and what the pool
 * holds: servers named <pool>-tern-<n> are adopted rather than made again
 * after a restart, and desired becomes at least their number. The list is
 * read again every scale[].reconcile_interval (10 s unless configured; in
 * ticks, rounded up, at least 1) to adopt servers the group lost and to
 * replace those that stopped.
 *
 * A list line is "name host:port [state]". Without a state, or with
 * "running", the server runs at host:port; host:port may be "-" when it has
 * no address yet (such a server is not adopted, its name is not used
 * again). Any other state (libvirt says stopped, paused, stopping, crashed
 * or suspended) means it exists but does not run: as an AWS group replaces
 * an unhealthy instance, the group terminates it (drained first if it is in
 * the pool; destroy also deletes a stopped clone's disk) and, as it no
 * longer counts toward desired, launches a new one. A stopped clone is
 * suspect (it crashed, or someone stopped it), so it is not started again.
 * A running server without an address that the group does not hold is
 * terminated the same way once the lists have shown it so for longer than
 * a create waits for an address (SCALE_GRACE with libvirt, the program's
 * timeout with exec): a clone whose guest never got a DHCP lease, or whose
 * create was cut short by a restart, would otherwise run forever without
 * counting toward desired. The group remembers when it first saw each such
 * name and forgets it once a list shows it with an address or not at all.
 * Only a tern that may act does this, and never for a server still in its
 * create job (a libvirt clone is defined, stopped, before it starts), nor
 * from a list read while a create finished (it may show that server before
 * it started).
 *
 * Then, while this tern may act (no VRRP, or master of an instance), the
 * policies move desired: a scale-out alarm in ALARM adds servers each tick
 * its cooldown allows, a scale-in alarm removes them (not while a new
 * server is still starting), target tracking follows its metric. The group
 * reconciles toward desired (failed launches back off 1, 2, 4 ... 60 s
 * before the next): a launch runs the provider's create on the job
 * pool, probes the new address with a TCP connect (on the job pool, every
 * tick, for up to SCALE_GRACE seconds) and only then adds it to the pool
 * (server_add); the pool's own health check takes over from there. A
 * server leaving (the newest first) is drained with remove, so requests in
 * flight finish; once the pool no longer lists it, destroy runs. Every
 * activity (launch, terminate, adopt, desired) is logged, kept for the API
 * and published on the event bus as TERN_EV_SCALING.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "scale/scale.h"

#define SCALE_GRACE 120.0     /* s a new server has to answer its probe */
#define SCALE_RELIST_MS 10000 /* ms between two reads of the list, unless configured */
#define PROBE_TIMEOUT 1000    /* ms */

enum job_kind { JOB_CREATE, JOB_DESTROY, JOB_LIST, JOB_PROBE };

struct job {
    struct scale_group *g;
    enum job_kind kind;
    char name[SCALE_NAME_MAX];
    char address[SCALE_ADDR_MAX];
    char group[SCALE_NAME_MAX];
    struct scale_provider prov; /* the group's when submitted */
    unsigned gen;               /* a list: g->destroyed when it was submitted */
    unsigned cgen;              /* a list: g->created when it was submitted */
    /* results */
    int rc;
    char *out;
    char err[256];
};

/* ---- small helpers ---- */

static uint64_t
now_ms(const struct scale_group *g)
{
    return (uint64_t)(g->h->monotonic(g->h) * 1000.0);
}

static struct scale_server *
find_srv(struct scale_group *g, const char *name)
{
    for (size_t i = 0; i < g->nsrv; i++)
        if (strcmp(g->srv[i].name, name) == 0)
            return &g->srv[i];
    return NULL;
}

/* arr, of n items of size bytes and room for *cap, grown to hold one more;
 * NULL when out of memory, and arr is still valid. */
static void *
room(void *arr, size_t n, size_t *cap, size_t size)
{
    size_t c = *cap ? *cap * 2 : 8;
    void *p;

    if (n < *cap)
        return arr;
    p = realloc(arr, c * size);
    if (p != NULL)
        *cap = c;
    return p;
}

static struct scale_server *
add_srv(struct scale_group *g, const char *name, enum scale_srv_state st)
{
    struct scale_server *s = room(g->srv, g->nsrv, &g->cap, sizeof(*s));

    if (s == NULL)
        return NULL;
    g->srv = s;
    s = &g->srv[g->nsrv++];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->st = st;
    s->since = g->h->monotonic(g->h);
    return s;
}

static void
del_srv(struct scale_group *g, struct scale_server *s)
{
    size_t i = (size_t)(s - g->srv);

    memmove(&g->srv[i], &g->srv[i + 1], (g->nsrv - i - 1) * sizeof(*s));
    g->nsrv--;
}

static void
set_state(struct scale_group *g, struct scale_server *s, enum scale_srv_state st)
{
    s->st = st;
    s->since = g->h->monotonic(g->h);
}

/* The n of "<pool>-tern-<n>", or 0 when name is not one of ours. */
static unsigned
our_index(const struct scale_group *g, const char *name)
{
    size_t pl = strlen(g->cfg.pool);
    char *end;
    unsigned long n;

    if (strncmp(name, g->cfg.pool, pl) != 0 || strncmp(name + pl, "-tern-", 6) != 0)
        return 0;
    n = strtoul(name + pl + 6, &end, 10);
    return *end == '\0' && n > 0 && n < 1000000 ? (unsigned)n : 0;
}

/* Servers in service or coming: what desired is compared with. */
static uint32_t
current(const struct scale_group *g)
{
    uint32_t n = 0;

    for (size_t i = 0; i < g->nsrv; i++)
        if (g->srv[i].st <= SRV_IN_SERVICE)
            n++;
    return n;
}

static bool
starting(const struct scale_group *g)
{
    for (size_t i = 0; i < g->nsrv; i++)
        if (g->srv[i].st < SRV_IN_SERVICE)
            return true;
    return false;
}

static const char *
state_name(enum scale_srv_state st)
{
    static const char *const names[] = {"creating", "probing", "in_service", "draining",
                                        "destroying"};

    return names[st];
}

/* ---- activities ---- */

static struct scale_activity *
find_act(struct scale_group *g, int id)
{
    for (size_t i = 0; i < g->nacts; i++)
        if (g->acts[i].id == id)
            return &g->acts[i];
    return NULL;
}

static void
publish(struct scale_group *g, const struct scale_activity *a, const char *state)
{
    struct tern_event ev = {
        .type = TERN_EV_SCALING,
        .name = g->cfg.pool,
        .pool = g->cfg.pool,
        .server = a->server[0] ? a->server : NULL,
        .state = state,
        .detail = a->reason,
        .metric = NULL,
        .value = NAN,
        .threshold = NAN,
    };
    char detail[1024];

    snprintf(detail, sizeof(detail), "%s %s: %s (%s)", a->action, a->server, a->reason, a->result);
    ev.detail = detail;
    g->h->publish(g->h, &ev);
}

/* Starts an activity and returns its id. */
static int activity(struct scale_group *g, const char *action, const char *server,
                    const char *result, const char *fmt, ...) TERN_PRINTF(5, 6);

static int
activity(struct scale_group *g, const char *action, const char *server, const char *result,
         const char *fmt, ...)
{
    struct scale_activity *a;
    va_list ap;

    if (g->nacts < SCALE_ACTIVITIES) {
        a = &g->acts[g->nacts++];
    } else {
        a = &g->acts[g->head];
        g->head = (g->head + 1) % SCALE_ACTIVITIES;
    }
    memset(a, 0, sizeof(*a));
    a->id = ++g->next_act;
    a->time = g->h->now(g->h);
    snprintf(a->action, sizeof(a->action), "%s", action);
    snprintf(a->server, sizeof(a->server), "%s", server ? server : "");
    snprintf(a->result, sizeof(a->result), "%s", result);
    va_start(ap, fmt);
    vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
    va_end(ap);
    g->h->log(g->h, TERN_LOG_INFO, "group %s: %s%s%s: %s: %s", g->cfg.pool, a->action,
              a->server[0] ? " " : "", a->server, a->reason, a->result);
    publish(g, a, "started");
    return a->id;
}

/* Records the end (or a step) of an activity. */
static void activity_result(struct scale_group *g, int id, bool ok, bool final, const char *fmt,
                            ...) TERN_PRINTF(5, 6);

static void
activity_result(struct scale_group *g, int id, bool ok, bool final, const char *fmt, ...)
{
    struct scale_activity *a = find_act(g, id);
    char buf[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (a == NULL)
        return;
    snprintf(a->result, sizeof(a->result), "%s", buf);
    g->h->log(g->h, ok ? TERN_LOG_INFO : TERN_LOG_WARN, "group %s: %s%s%s: %s", g->cfg.pool,
              a->action, a->server[0] ? " " : "", a->server, a->result);
    publish(g, a, !ok ? "failed" : final ? "successful" : "progress");
}

/* ---- jobs ---- */

static void *job_run(void *arg);
static void job_done(void *arg, void *result, int status);

static struct job *
job_new(struct scale_group *g, enum job_kind kind, const struct scale_server *s)
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

static bool
submit(struct scale_group *g, struct job *j)
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

static void destroy_server(struct scale_group *g, struct scale_server *s);
static void terminate(struct scale_group *g, struct scale_server *s, const char *reason);

/* The n of name if it is one of ours; a name that exists is never made
 * again, so the next launch takes a higher n. */
static unsigned
claim_index(struct scale_group *g, const char *name)
{
    unsigned idx = our_index(g, name);

    if (idx >= g->next_index)
        g->next_index = idx + 1;
    return idx;
}

static void
adopt(struct scale_group *g, const char *name, const char *address, bool in_pool)
{
    unsigned idx = claim_index(g, name);
    struct scale_server *s;

    if (idx == 0 || find_srv(g, name) != NULL)
        return;
    s = add_srv(g, name, in_pool ? SRV_IN_SERVICE : SRV_PROBING);
    if (s == NULL)
        return;
    snprintf(s->address, sizeof(s->address), "%s", address);
    s->adopted = true;
    s->index = idx;
    s->activity =
        activity(g, "adopt", name, in_pool ? "in service" : "probing", "%s already exists at %s%s",
                 name, address, in_pool ? " and is in the pool" : "");
}

/* name exists and will not serve: as an AWS group replaces an unhealthy
 * instance, it goes, and the launch of another follows as it no longer
 * counts toward desired. */
static void
replace(struct scale_group *g, const char *name, unsigned idx, const char *reason)
{
    struct scale_server *s = find_srv(g, name);

    if (s == NULL) {
        /* Found by the list, not run by the group (a restart, a failover,
         * a lost create): not adopted, only destroyed. */
        s = add_srv(g, name, SRV_DESTROYING);
        if (s == NULL)
            return;
        s->adopted = true;
        s->index = idx;
        s->activity = activity(g, "terminate", name, "destroying", "%s", reason);
        destroy_server(g, s);
    } else if (s->st == SRV_PROBING || s->st == SRV_IN_SERVICE) {
        if (s->st == SRV_PROBING)
            activity_result(g, s->activity, false, true, "failed: %s", reason);
        terminate(g, s, reason);
    }
    /* Creating: its create job decides. Draining, destroying: going. */
}

/* The provider lists name as existing in state, not running. */
static void
replace_stopped(struct scale_group *g, const char *name, const char *state, bool stale)
{
    unsigned idx = claim_index(g, name);
    char reason[256];

    if (idx == 0 || !g->acting || stale)
        return;
    snprintf(reason, sizeof(reason), "%s is %s in the provider's list: replacing it", name, state);
    replace(g, name, idx, reason);
}

/* How long a create waits for its server's address (libvirt: for a DHCP
 * lease; exec: the create program is killed after its timeout). A server
 * without one for longer is no create's any more: its guest is broken, or
 * the tern that made it went away meanwhile. */
static double
addr_allowance(const struct scale_group *g)
{
    if (g->cfg.provider == SCALE_PROV_LIBVIRT)
        return SCALE_GRACE;
    return (double)g->cfg.timeout_ms / 1000.0;
}

/* The provider lists name as running with no address. */
static void
addressless(struct scale_group *g, const char *name, bool stale)
{
    unsigned idx = claim_index(g, name);
    double now = g->h->monotonic(g->h), allowance = addr_allowance(g);
    struct scale_addrless *e = NULL;
    char reason[256];

    /* One the group holds is creating (its create decides) or has an
     * address the group knows (the probe or the pool's health check
     * judges it). */
    if (idx == 0 || find_srv(g, name) != NULL)
        return;
    for (size_t i = 0; i < g->naddrless && e == NULL; i++)
        if (strcmp(g->addrless[i].name, name) == 0)
            e = &g->addrless[i];
    if (e == NULL) {
        e = room(g->addrless, g->naddrless, &g->addrless_cap, sizeof(*e));
        if (e == NULL)
            return;
        g->addrless = e;
        e = &g->addrless[g->naddrless++];
        snprintf(e->name, sizeof(e->name), "%s", name);
        e->since = now;
    }
    e->listed = true;
    if (!g->acting || stale || now - e->since <= allowance)
        return;
    snprintf(reason, sizeof(reason),
             "%s has had no address for %.0f s (the boot allowance is %.0f s): replacing it", name,
             now - e->since, allowance);
    replace(g, name, idx, reason);
}

/* Forgets the names the last list showed with an address, or not at all. */
static void
addrless_sweep(struct scale_group *g)
{
    size_t k = 0;

    for (size_t i = 0; i < g->naddrless; i++)
        if (g->addrless[i].listed)
            g->addrless[k++] = g->addrless[i];
    g->naddrless = k;
}

static void
list_done(struct scale_group *g, struct job *j)
{
    bool first = !g->started;
    size_t before = g->nsrv;

    g->listing = false;
    g->started = true;
    if (!first && j->gen != g->destroyed) {
        /* A server destroyed since the list was taken could be in it:
         * adopting it again would be wrong. The next list will do. */
        return;
    }
    if (j->rc != 0 || j->out == NULL) {
        g->h->log(g->h, first ? TERN_LOG_WARN : TERN_LOG_DEBUG,
                  "group %s: the provider cannot list its servers (%s): none adopted", g->cfg.pool,
                  j->err);
    } else {
        char *save = NULL;

        /* A create that finished while the list was read: the list may
         * show its server stopped, between define and start. */
        bool stale = j->cgen != g->created;

        for (size_t i = 0; i < g->naddrless; i++)
            g->addrless[i].listed = false;
        for (char *line = strtok_r(j->out, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            char name[SCALE_NAME_MAX], addr[SCALE_ADDR_MAX], state[32];
            int n = sscanf(line, "%95s %127s %31s", name, addr, state);

            if (n < 2)
                continue;
            if (n == 3 && strcmp(state, "running") != 0)
                replace_stopped(g, name, state, stale);
            else if (strcmp(addr, "-") == 0)
                addressless(g, name, stale);
            else
                adopt(g, name, addr, false);
        }
        addrless_sweep(g);
    }
    if (first && g->nsrv > before) {
        uint32_t n = current(g);

        if (n > g->pol.desired) {
            uint32_t old = g->pol.desired;

            scale_policy_set_desired(&g->pol, n, now_ms(g));
            activity(g, "desired", NULL, "successful", "%u -> %u: adopted %u existing servers", old,
                     g->pol.desired, n);
        }
    }
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
        list_done(g, j);
        job_free(j);
        return;
    }
    if (j->kind == JOB_CREATE)
        g->created++;
    s = find_srv(g, j->name);
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
            activity_result(g, s->activity, false, true, "failed: create %s (next try in %.0f s)",
                            j->err, wait);
            del_srv(g, s);
            break;
        }
        g->launch_failures = 0;
        snprintf(s->address, sizeof(s->address), "%s", j->address);
        set_state(g, s, SRV_PROBING);
        activity_result(g, s->activity, true, false, "created at %s, probing", s->address);
        break;
    case JOB_PROBE:
        if (s->st != SRV_PROBING)
            break;
        if (j->rc == 0) {
            const char *why = NULL;
            int r = g->h->server_add(g->h, g->cfg.pool, s->name, s->address, 1, &why);

            if (r == 0 || r == -EEXIST) {
                set_state(g, s, SRV_IN_SERVICE);
                activity_result(g, s->activity, true, true, "successful: %s in service",
                                s->address);
            } else {
                activity_result(g, s->activity, false, true, "failed: server_add: %s",
                                why ? why : strerror(-r));
                destroy_server(g, s);
            }
        } else if (g->h->monotonic(g->h) - s->since > SCALE_GRACE) {
            activity_result(g, s->activity, false, true, "failed: no answer within %.0f s (%s)",
                            SCALE_GRACE, j->err);
            destroy_server(g, s);
        }
        break;
    case JOB_DESTROY:
        if (j->rc != 0) {
            /* Tried again from the next tick. */
            activity_result(g, s->activity, false, false, "destroy failed: %s; retrying", j->err);
            set_state(g, s, SRV_DESTROYING);
            break;
        }
        activity_result(g, s->activity, true, true, "successful: destroyed");
        g->destroyed++;
        del_srv(g, s);
        break;
    case JOB_LIST:
        break;
    }
    job_free(j);
}

/* ---- transitions ---- */

static void
destroy_server(struct scale_group *g, struct scale_server *s)
{
    set_state(g, s, SRV_DESTROYING);
    if (!s->busy && submit(g, job_new(g, JOB_DESTROY, s)))
        s->busy = true;
}

static void
launch(struct scale_group *g, const char *reason)
{
    char name[SCALE_NAME_MAX];
    struct scale_server *s;

    if (g->next_index == 0)
        g->next_index = 1;
    snprintf(name, sizeof(name), "%s-tern-%u", g->cfg.pool, g->next_index);
    s = add_srv(g, name, SRV_CREATING);
    if (s == NULL)
        return;
    s->index = g->next_index++;
    s->activity = activity(g, "launch", name, "in progress", "%s", reason);
    if (submit(g, job_new(g, JOB_CREATE, s))) {
        s->busy = true;
    } else {
        activity_result(g, s->activity, false, true, "failed: cannot submit a job");
        del_srv(g, s);
    }
}

static void
terminate(struct scale_group *g, struct scale_server *s, const char *reason)
{
    const char *why = NULL;
    int r;

    s->activity = activity(g, "terminate", s->name, "draining", "%s", reason);
    r = g->h->server_drain(g->h, g->cfg.pool, s->name, true, &why);
    if (r == -ENOENT) {
        destroy_server(g, s); /* not in the pool: nothing to drain */
        return;
    }
    if (r < 0)
        activity_result(g, s->activity, false, false, "drain: %s; destroying anyway",
                        why ? why : strerror(-r));
    set_state(g, s, r < 0 ? SRV_DESTROYING : SRV_DRAINING);
    if (r < 0)
        destroy_server(g, s);
}

struct pool_scan {
    struct scale_group *g;
    bool adopting;
    char **names;
    size_t n, cap;
};

static void
pool_scan_cb(void *arg, const struct tern_server_info *info)
{
    struct pool_scan *ps = arg;
    char **names;

    if (ps->adopting) {
        adopt(ps->g, info->name, info->address, true);
        return;
    }
    names = room(ps->names, ps->n, &ps->cap, sizeof(*names));
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
static void
follow_drains(struct scale_group *g)
{
    struct pool_scan ps = {.g = g};

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
            activity_result(g, s->activity, true, false, "left the pool, destroying");
            destroy_server(g, s);
        } else if (s->st == SRV_DESTROYING && !s->busy && g->h->monotonic(g->h) - s->since >= 5.0) {
            destroy_server(g, s); /* a failed destroy, again */
        }
    }
    for (size_t i = 0; i < ps.n; i++)
        free(ps.names[i]);
    free(ps.names);
}

static void
apply_policies(struct scale_group *g)
{
    uint32_t cur = current(g), old = g->pol.desired, n;
    uint64_t t = now_ms(g);
    const char *why = NULL;

    if (g->cfg.out_alarm != NULL && g->out_alarm_on) {
        n = scale_policy_step(&g->pol, SCALE_OUT, cur, t, &why);
        if (n != old)
            activity(g, "desired", NULL, "successful", "%u -> %u: alarm %s is in ALARM", old, n,
                     g->cfg.out_alarm);
        return;
    }
    if (g->cfg.in_alarm != NULL && g->in_alarm_on && !starting(g)) {
        n = scale_policy_step(&g->pol, SCALE_IN, cur, t, &why);
        if (n != old)
            activity(g, "desired", NULL, "successful", "%u -> %u: alarm %s is in ALARM", old, n,
                     g->cfg.in_alarm);
        return;
    }
    if (g->cfg.tt_metric != NULL) {
        double v;

        if (g->h->metric_get(g->h, g->cfg.tt_metric, &v) != 0)
            return;
        if (starting(g) && v < g->pol.cfg.target)
            return; /* new servers count as idle for scale-in: wait for them */
        n = scale_policy_track(&g->pol, cur ? cur : 1, v, t, &why);
        if (n != old)
            activity(g, "desired", NULL, "successful", "%u -> %u: %s is %.3g, target %.3g", old, n,
                     g->cfg.tt_metric, v, g->pol.cfg.target);
    }
}

static void
reconcile(struct scale_group *g)
{
    uint32_t cur = current(g), want = g->pol.desired;
    char reason[256];

    while (cur < want && g->h->monotonic(g->h) >= g->next_launch) {
        snprintf(reason, sizeof(reason), "desired %u, have %u", want, cur);
        launch(g, reason);
        if (current(g) == cur)
            return; /* could not */
        cur++;
    }
    while (cur > want) {
        struct scale_server *victim = NULL;

        /* The newest in service (highest index); never one still starting. */
        for (size_t i = 0; i < g->nsrv; i++) {
            struct scale_server *s = &g->srv[i];

            if (s->st == SRV_IN_SERVICE && (victim == NULL || s->index > victim->index))
                victim = s;
        }
        if (victim == NULL)
            return;
        snprintf(reason, sizeof(reason), "desired %u, have %u", want, cur);
        terminate(g, victim, reason);
        cur--;
    }
}

static void
probe_new(struct scale_group *g)
{
    for (size_t i = 0; i < g->nsrv; i++) {
        struct scale_server *s = &g->srv[i];

        if (s->st == SRV_PROBING && !s->busy && submit(g, job_new(g, JOB_PROBE, s)))
            s->busy = true;
    }
}

/* Ticks between two reads of the provider's list: reconcile_interval
 * rounded up to whole ticks, at least 1. */
static unsigned
relist_ticks(const struct scale_group *g)
{
    uint64_t ms = g->cfg.relist_ms != 0 ? g->cfg.relist_ms : SCALE_RELIST_MS;
    uint64_t tick_ms = (uint64_t)(SCALE_TICK * 1000);
    uint64_t n = (ms + tick_ms - 1) / tick_ms;

    return n == 0 ? 1 : n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

void
scale_group_tick(struct scale_group *g, bool act)
{
    if (g->retired)
        return;
    g->acting = act;
    if (!g->started) {
        if (!g->listing) {
            struct pool_scan ps = {.g = g, .adopting = true};

            /* What the pool already holds (a reload of the plugin)... */
            g->h->pool_servers(g->h, g->cfg.pool, pool_scan_cb, &ps);
            /* ...and what the provider knows (a restart of tern). */
            if (submit(g, job_new(g, JOB_LIST, NULL)))
                g->listing = true;
            else
                g->started = true;
        }
        return;
    }
    follow_drains(g);
    probe_new(g);
    if (!act) {
        /* A tern that may not act reads no list: a server's time without
         * an address starts again when it may. */
        g->naddrless = 0;
        return;
    }
    if (++g->ticks % relist_ticks(g) == 0 && !g->listing && submit(g, job_new(g, JOB_LIST, NULL)))
        g->listing = true;
    apply_policies(g);
    reconcile(g);
}

void
scale_group_event(struct scale_group *g, const struct tern_event *ev)
{
    bool raised = ev->type == TERN_EV_ALARM_RAISED;

    if (g->retired || ev->name == NULL)
        return;
    if (ev->type != TERN_EV_ALARM_RAISED && ev->type != TERN_EV_ALARM_CLEARED)
        return;
    if (g->cfg.out_alarm != NULL && strcmp(ev->name, g->cfg.out_alarm) == 0)
        g->out_alarm_on = raised;
    if (g->cfg.in_alarm != NULL && strcmp(ev->name, g->cfg.in_alarm) == 0)
        g->in_alarm_on = raised;
}

/* ---- life ---- */

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void
cfg_copy(struct scale_group_cfg *d, const struct scale_group_cfg *s)
{
    *d = *s;
    d->pool = dup_or_null(s->pool);
    d->create = dup_or_null(s->create);
    d->destroy = dup_or_null(s->destroy);
    d->list = dup_or_null(s->list);
    d->lv_uri = dup_or_null(s->lv_uri);
    d->lv_template = dup_or_null(s->lv_template);
    d->lv_storage = dup_or_null(s->lv_storage);
    d->out_alarm = dup_or_null(s->out_alarm);
    d->in_alarm = dup_or_null(s->in_alarm);
    d->tt_metric = dup_or_null(s->tt_metric);
}

void
scale_cfg_free(struct scale_group_cfg *c)
{
    free(c->pool);
    free(c->create);
    free(c->destroy);
    free(c->list);
    free(c->lv_uri);
    free(c->lv_template);
    free(c->lv_storage);
    free(c->out_alarm);
    free(c->in_alarm);
    free(c->tt_metric);
    memset(c, 0, sizeof(*c));
}

static int
make_provider(struct scale_group *g, const struct scale_group_cfg *cfg, struct scale_provider *out)
{
    out->ops = NULL;
    out->p = NULL;
    if (cfg->provider == SCALE_PROV_EXEC) {
        out->ops = &scale_exec_ops;
        out->p = scale_exec_new(cfg->create, cfg->destroy, cfg->list, cfg->timeout_ms);
    }
#ifdef SCALE_HAVE_LIBVIRT
    if (cfg->provider == SCALE_PROV_LIBVIRT) {
        out->ops = &scale_lv_ops;
        out->p =
            scale_lv_new(cfg->lv_uri, cfg->lv_template, cfg->lv_storage, cfg->pool, SCALE_GRACE);
    }
#endif
    return out->p != NULL ? 0 : -ENOMEM;
}

static bool
same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool
same_provider(const struct scale_group_cfg *a, const struct scale_group_cfg *b)
{
    return a->provider == b->provider && same(a->create, b->create) &&
           same(a->destroy, b->destroy) && same(a->list, b->list) &&
           a->timeout_ms == b->timeout_ms && same(a->lv_uri, b->lv_uri) &&
           same(a->lv_template, b->lv_template) && same(a->lv_storage, b->lv_storage);
}

struct scale_group *
scale_group_new(struct scale *sc, const struct scale_group_cfg *cfg)
{
    struct scale_group *g = calloc(1, sizeof(*g));

    if (g == NULL)
        return NULL;
    g->sc = sc;
    g->h = sc->h;
    cfg_copy(&g->cfg, cfg);
    scale_policy_init(&g->pol, &cfg->pol, cfg->desired);
    g->next_index = 1;
    if (make_provider(g, cfg, &g->prov) < 0) {
        scale_group_free(g);
        return NULL;
    }
    return g;
}

void
scale_group_reconfigure(struct scale_group *g, const struct scale_group_cfg *cfg)
{
    uint32_t desired = g->pol.desired;

    if (!same_provider(&g->cfg, cfg)) {
        struct scale_provider np;
        struct scale_provider *r = realloc(g->retired_provs, (g->nretired_provs + 1) * sizeof(*r));

        /* Jobs running may still use the old one: it goes with the group. */
        if (r != NULL)
            g->retired_provs = r;
        if (r != NULL && make_provider(g, cfg, &np) == 0) {
            r[g->nretired_provs++] = g->prov;
            g->prov = np;
            g->h->log(g->h, TERN_LOG_INFO, "group %s: provider %s from now on", cfg->pool,
                      np.ops->name);
        } else {
            g->h->log(g->h, TERN_LOG_ERR, "group %s: cannot change the provider: out of memory",
                      cfg->pool);
        }
    }
    scale_cfg_free(&g->cfg);
    cfg_copy(&g->cfg, cfg);
    scale_policy_set_cfg(&g->pol, &cfg->pol);
    if (g->pol.desired != desired)
        activity(g, "desired", NULL, "successful", "%u -> %u: new min/max", desired,
                 g->pol.desired);
    g->retired = false;
}

void
scale_group_free(struct scale_group *g)
{
    if (g == NULL)
        return;
    if (g->prov.ops != NULL)
        g->prov.ops->free(g->prov.p);
    for (size_t i = 0; i < g->nretired_provs; i++)
        g->retired_provs[i].ops->free(g->retired_provs[i].p);
    free(g->retired_provs);
    scale_cfg_free(&g->cfg);
    free(g->srv);
    free(g->addrless);
    free(g);
}

void *
scale_group_json(const struct scale_group *g)
{
    json_t *o, *servers = json_array(), *acts = json_array();

    for (size_t i = 0; i < g->nsrv; i++) {
        const struct scale_server *s = &g->srv[i];

        json_array_append_new(servers, json_pack("{s:s, s:s, s:s, s:b}", "name", s->name, "address",
                                                 s->address, "state", state_name(s->st), "adopted",
                                                 s->adopted));
    }
    /* Oldest first. */
    for (size_t k = 0; k < g->nacts; k++) {
        const struct scale_activity *a = &g->acts[(g->head + k) % SCALE_ACTIVITIES];

        json_array_append_new(acts,
                              json_pack("{s:I, s:f, s:s, s:s, s:s, s:s}", "id", (json_int_t)a->id,
                                        "time", a->time, "action", a->action, "server", a->server,
                                        "reason", a->reason, "result", a->result));
    }
    o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:b, s:b, s:o, s:o}", "pool", g->cfg.pool,
                  "provider", g->prov.ops->name, "min", (json_int_t)g->pol.cfg.min, "max",
                  (json_int_t)g->pol.cfg.max, "desired", (json_int_t)g->pol.desired, "current",
                  (json_int_t)current(g), "started", g->started, "retired", g->retired, "servers",
                  servers, "activities", acts);
    return o;
}
