/*
 * The admin API's life cycle and the state it keeps between requests: the
 * bearer token (read from admin.token_file at start and after each reload),
 * and the request rates and per-pool history that a 1 s timer samples from
 * the workers' counters (the counters themselves only ever grow; a rate
 * needs two readings, and the dashboard's charts need the last few minutes).
 *
 * Everything here runs on the control thread. The HTTP side is in
 * admin_http.c, the routes in admin_routes.c, /metrics in metrics.c.
 */
#include "lb/admin.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lb/admin_int.h"
#include "lb/check.h"
#include "lb/log.h"

/* ---- byte strings ---- */

static bool
sbuf_reserve(struct admin_sbuf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void
admin_sbuf_add(struct admin_sbuf *b, const void *d, size_t n)
{
    if (!sbuf_reserve(b, n))
        return;
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void
admin_sbuf_puts(struct admin_sbuf *b, const char *s)
{
    admin_sbuf_add(b, s, strlen(s));
}

void
admin_sbuf_printf(struct admin_sbuf *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];

    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        admin_sbuf_add(b, small, (size_t)n);
        return;
    }
    if (!sbuf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void
admin_sbuf_free(struct admin_sbuf *b)
{
    free(b->p);
    *b = (struct admin_sbuf){0};
}

/* ---- token ---- */

/*
 * Reads the token file: its content without surrounding white space. A
 * relative path is taken from the configuration file's directory, like
 * included files. Returns 0 (*out set, or NULL when no file is configured)
 * or -1 with the reason in why ("cannot read PATH: ...", naming the file).
 */
static int
token_read(const struct conf *c, char **out, char *why, size_t whysize)
{
    char path[4096], buf[4097];
    const char *tf = c->admin.token_file;
    const char *slash = c->file ? strrchr(c->file, '/') : NULL;
    int fd = -1, rc = -1;
    size_t len = 0;

    *out = NULL;
    if (!tf)
        return 0;
    if (tf[0] != '/' && slash)
        snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - c->file), c->file, tf);
    else
        snprintf(path, sizeof(path), "%s", tf);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whysize, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    while (len < sizeof(buf) - 1) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, whysize, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len == sizeof(buf) - 1) {
        snprintf(why, whysize, "%s: longer than %zu bytes", path, sizeof(buf) - 1);
        goto out;
    }
    buf[len] = '\0';
    char *s = buf, *e = buf + len;
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    *e = '\0';
    for (const char *q = s; q < e; q++) {
        /* It travels in a header: only visible ASCII can match. */
        if (*q <= ' ' || *q >= 127) {
            snprintf(why, whysize, "%s: the token must be visible ASCII without spaces", path);
            goto out;
        }
    }
    if (s == e) {
        snprintf(why, whysize, "%s is empty", path);
        goto out;
    }
    *out = strdup(s);
    if (*out)
        rc = 0;
    else
        snprintf(why, whysize, "%s: out of memory", path);
out:
    if (fd >= 0)
        close(fd);
    explicit_bzero(buf, sizeof(buf));
    return rc;
}

static void
token_free(char *t)
{
    if (t) {
        explicit_bzero(t, strlen(t));
        free(t);
    }
}

/* token_read, logging why it failed. */
static int
token_load(const struct conf *c, char **out)
{
    char why[4400];
    int rc = token_read(c, out, why, sizeof(why));
    if (rc < 0)
        lb_err("admin: token_file: %s", why);
    return rc;
}

int
lb_admin_check_token(const struct conf *c, char *why, size_t whysize)
{
    char *tok = NULL;
    if (!c->admin.enabled)
        return 0; /* the daemon does not read it either */
    int rc = token_read(c, &tok, why, whysize);
    token_free(tok);
    return rc;
}

/* ---- rates and history ---- */

double
admin_percentile(const uint64_t *b, double q)
{
    return lb_lat_quantile(b, q);
}

void
admin_server_buckets(const struct lb_server *s, uint64_t *out)
{
    for (int i = 0; i <= LB_LAT_BUCKETS; i++)
        out[i] = atomic_load_explicit(&s->st.lat[i], memory_order_relaxed);
}

void
admin_pool_buckets(const struct lb_pool *p, uint64_t *out)
{
    size_t n = lb_pool_nservers(p);
    memset(out, 0, sizeof(uint64_t) * (LB_LAT_BUCKETS + 1));
    /* Removed slots too: their requests happened. */
    for (size_t j = 0; j < n; j++)
        for (int i = 0; i <= LB_LAT_BUCKETS; i++)
            out[i] += atomic_load_explicit(&p->servers[j].st.lat[i], memory_order_relaxed);
}

struct admin_pool_stats *
admin_pool_stats(struct admin *a, const struct lb_pool *p)
{
    for (size_t i = 0; i < a->npools; i++)
        if (a->pools[i].pool == p)
            return &a->pools[i];
    return NULL;
}

double
admin_server_rps(struct admin *a, const struct lb_pool *p, const struct lb_server *s)
{
    struct admin_pool_stats *ps = admin_pool_stats(a, p);
    size_t i = (size_t)(s - p->servers);
    return ps && i < p->capacity ? ps->srv[i].rps : 0;
}

static void
pool_stats_free(struct admin_pool_stats *ps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ps[i].name);
        free(ps[i].srv);
    }
    free(ps);
}

/* Starts every counter reading afresh on snapshot snap, keeping the history
 * and last rates of pools and servers that keep their names. */
static int
stats_rebuild(struct admin *a, struct lb_snapshot *snap)
{
    size_t n = snap->npools;
    struct admin_pool_stats *ps = calloc(n ? n : 1, sizeof(*ps));
    if (!ps)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct lb_pool *p = &snap->pools[i];
        struct admin_pool_stats *o = NULL;
        for (size_t k = 0; k < a->npools && !o; k++)
            if (strcmp(a->pools[k].name, p->cf->name) == 0)
                o = &a->pools[k];
        if (o) {
            memcpy(ps[i].ring, o->ring, sizeof(o->ring));
            ps[i].head = o->head;
            ps[i].count = o->count;
            ps[i].rps = o->rps;
        }
        ps[i].name = strdup(p->cf->name);
        ps[i].srv = calloc(p->capacity ? p->capacity : 1, sizeof(*ps[i].srv));
        if (!ps[i].name || !ps[i].srv) {
            pool_stats_free(ps, i + 1);
            return -1;
        }
        ps[i].pool = p;
        ps[i].last_req = atomic_load(&p->requests);
        admin_pool_buckets(p, ps[i].last_lat);
        size_t ns = lb_pool_nservers(p);
        for (size_t j = 0; j < ns; j++) {
            struct lb_server *s = &p->servers[j];
            ps[i].srv[j].last = atomic_load(&s->st.requests);
            if (o && atomic_load(&s->state) != LB_SRV_REMOVED) {
                struct lb_server *os = lb_server_find(o->pool, s->name);
                if (os)
                    ps[i].srv[j].rps = admin_server_rps(a, o->pool, os);
            }
        }
    }
    pool_stats_free(a->pools, a->npools);
    a->pools = ps;
    a->npools = n;
    return 0;
}

void
admin_sync(struct admin *a)
{
    struct lb_snapshot *snap = a->ctl->snap;
    if (a->snap == snap)
        return;
    const struct conf *c = snap->conf;
    if (!c->admin.enabled)
        lb_warn("admin: the admin section was removed; the API stays up until a restart");
    else if (strcmp(c->admin.listen.text, a->listen_text) != 0)
        lb_warn("admin: admin.listen changed to %s; it stays on %s until a restart",
                c->admin.listen.text, a->listen_text);
    char *tok = NULL;
    if (!c->admin.enabled || token_load(c, &tok) == 0) {
        if (!tok && a->token)
            lb_warn("admin: no token_file any more: mutating calls are refused");
        token_free(a->token);
        a->token = tok;
    } else if (a->token) {
        lb_warn("admin: keeping the previous token");
    }
    if (stats_rebuild(a, snap) < 0) {
        /* Rates restart on the next tick; stale pointers must not stay. */
        lb_err("admin: out of memory rebuilding statistics");
        pool_stats_free(a->pools, a->npools);
        a->pools = NULL;
        a->npools = 0;
    }
    lb_snapshot_ref(snap);
    lb_snapshot_unref(a->snap);
    a->snap = snap;
}

static void
on_sample(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct admin *a = t->data;
    double now = ev_now(loop), wall = ev_time();
    double dt = now - a->last_sample;
    uint64_t cur[LB_LAT_BUCKETS + 1], delta[LB_LAT_BUCKETS + 1];

    admin_sync(a);
    if (dt <= 0.05)
        dt = 1;
    a->last_sample = now;
    for (size_t i = 0; i < a->npools; i++) {
        struct admin_pool_stats *ps = &a->pools[i];
        struct lb_pool *p = ps->pool;
        uint64_t req = atomic_load(&p->requests);
        ps->rps = (double)(req >= ps->last_req ? req - ps->last_req : 0) / dt;
        ps->last_req = req;
        admin_pool_buckets(p, cur);
        for (int k = 0; k <= LB_LAT_BUCKETS; k++)
            delta[k] = cur[k] >= ps->last_lat[k] ? cur[k] - ps->last_lat[k] : 0;
        memcpy(ps->last_lat, cur, sizeof(cur));
        ps->ring[ps->head] = (struct admin_sample){
            .t = wall,
            .rps = ps->rps,
            .p50_ms = admin_percentile(delta, 0.50),
            .p99_ms = admin_percentile(delta, 0.99),
        };
        ps->head = (ps->head + 1) % ADMIN_HISTORY;
        if (ps->count < ADMIN_HISTORY)
            ps->count++;
        size_t ns = lb_pool_nservers(p);
        for (size_t j = 0; j < ns && j < p->capacity; j++) {
            uint64_t r = atomic_load(&p->servers[j].st.requests);
            struct admin_srv_rate *sr = &ps->srv[j];
            sr->rps = (double)(r >= sr->last ? r - sr->last : 0) / dt;
            sr->last = r;
        }
    }
}

/* ---- life cycle ---- */

static void
admin_free(struct admin *a)
{
    if (a->snap)
        lb_snapshot_unref(a->snap);
    pool_stats_free(a->pools, a->npools);
    token_free(a->token);
    free(a->listen_text);
    free(a);
}

int
lb_admin_start(struct lb_ctl *ctl)
{
    const struct conf *c = ctl->snap->conf;
    struct admin *a = NULL;

    if (!c->admin.enabled)
        return 0;
    a = calloc(1, sizeof(*a));
    if (!a)
        goto fail;
    a->ctl = ctl;
    a->fd = -1;
    if (token_load(c, &a->token) < 0)
        goto fail;
    a->listen_text = strdup(c->admin.listen.text);
    if (!a->listen_text || stats_rebuild(a, ctl->snap) < 0)
        goto fail;
    a->snap = ctl->snap;
    lb_snapshot_ref(a->snap);
    if (admin_http_listen(a, &c->admin.listen) < 0)
        goto fail;
    a->last_sample = ev_now(ctl->loop);
    ev_timer_init(&a->sample, on_sample, 1.0, 1.0);
    a->sample.data = a;
    ev_timer_start(ctl->loop, &a->sample);
    ctl->admin = a;
    lb_info("admin API on %s%s", a->listen_text,
            a->token ? "" : " (no token_file: mutating calls are refused)");
    return 0;
fail:
    if (a)
        admin_free(a);
    lb_err("admin API not started");
    return -1;
}

void
lb_admin_reloaded(struct lb_ctl *ctl)
{
    struct admin *a = ctl->admin;
    if (a)
        admin_sync(a);
    else if (ctl->snap->conf->admin.enabled)
        lb_warn("admin: the admin section takes effect at the next restart");
}

void
lb_admin_stop(struct lb_ctl *ctl)
{
    struct admin *a = ctl->admin;
    if (!a)
        return;
    ev_timer_stop(ctl->loop, &a->sample);
    admin_http_close_all(a);
    admin_free(a);
    ctl->admin = NULL;
}
