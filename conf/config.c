/*
 * conf_load(): the three phases put together, and the cross-reference pass.
 *
 * Phase one reads the main file and its includes into one node tree
 * (include.c, node.c); phase two walks it against tern's schema into a
 * struct conf (schema.c, tern_schema.c); phase three, here, checks what no
 * single table can: that names used in one section are defined in another,
 * that names are unique, that two listeners do not claim one address. It
 * works on the typed values but reports at the nodes they came from, which it
 * finds again by index since the schema walk keeps list order.
 */
#include "conf/config.h"

#include <limits.h>
#include <string.h>

#include "conf/arena.h"
#include "conf/diag.h"
#include "conf/include.h"
#include "conf/node.h"
#include "conf/plugin_sections.h"
#include "conf/schema.h"
#include "conf/tern_schema.h"

struct xref {
    struct conf_ctx *ctx;
    struct conf *c;
    const struct conf_node *root;
    const char **pool_names;  /* NULL-terminated, for "did you mean" */
    const char **alarm_names; /* idem */
};

/* The node of item i of a top-level list, or of entry i of a named map. */
static const struct conf_node *
nth(const struct conf_node *n, size_t i)
{
    if (n == NULL || i >= n->n)
        return NULL;
    if (n->kind == CONF_NODE_SEQ)
        return n->items[i];
    if (n->kind == CONF_NODE_MAP)
        return n->pairs[i].value;
    return NULL;
}

static const char **
name_list(struct conf_ctx *ctx, size_t n, const void *base, size_t stride, size_t name_off)
{
    const char **v = conf_arena_calloc(ctx->tmp, n + 1, sizeof(*v));

    for (size_t i = 0; v != NULL && i < n; i++)
        memcpy(&v[i], (const char *)base + i * stride + name_off, sizeof(char *));
    return v;
}

/* Reports an undefined reference at key in map, suggesting a close name. */
static void
undefined(struct xref *x, const struct conf_node *at, const char *key, const char *what,
          const char *name, const char **known)
{
    const char *hint = known != NULL ? conf_did_you_mean(name, known) : NULL;

    if (hint != NULL)
        conf_error(x->ctx, at, key, "undefined %s '%s'; did you mean '%s'?", what, name, hint);
    else if (known == NULL || known[0] == NULL)
        conf_error(x->ctx, at, key, "undefined %s '%s' (none is defined)", what, name);
    else
        conf_error(x->ctx, at, key, "undefined %s '%s'", what, name);
}

static int
resolve_pool(struct xref *x, const struct conf_node *map, const char *key, const char *name)
{
    int i;

    if (name == NULL)
        return -1;
    i = conf_pool_index(x->c, name);
    if (i < 0) {
        const struct conf_pair *p = conf_node_pair(map, key);

        undefined(x, p != NULL ? p->value : map, key, "pool", name, x->pool_names);
    }
    return i;
}

/* "line 7" when `there` is in the same file as `here`, else "other.yaml:7",
 * for messages that point back at a first definition. */
static const char *
where(char *buf, size_t size, const struct conf_node *here, const struct conf_node *there)
{
    if (there == NULL)
        snprintf(buf, size, "?");
    else if (here == NULL || strcmp(here->file, there->file) == 0)
        snprintf(buf, size, "line %d", there->line);
    else
        snprintf(buf, size, "%s:%d", there->file, there->line);
    return buf;
}

/* Names in an array of structs must be unique: the second one is the error. */
static void
unique_names(struct xref *x, const struct conf_node *list, const void *base, size_t n,
             size_t stride, size_t name_off, const char *what)
{
    for (size_t j = 1; j < n; j++) {
        const char *nj = *(char *const *)((const char *)base + j * stride + name_off);

        for (size_t i = 0; nj != NULL && i < j; i++) {
            const char *ni = *(char *const *)((const char *)base + i * stride + name_off);
            const struct conf_node *first = conf_node_get(nth(list, i), "name");
            const struct conf_node *dup = nth(list, j);
            char at[300];
            size_t old;

            if (ni == NULL || strcmp(ni, nj) != 0)
                continue;
            old = conf_ctx_push_index(x->ctx, j);
            conf_key_error(x->ctx, dup, "name", "duplicate %s name '%s' (first at %s)", what, nj,
                           where(at, sizeof(at), conf_node_get(dup, "name"), first));
            conf_ctx_pop(x->ctx, old);
            break;
        }
    }
}

static bool
same_sockaddr(const struct conf_addr *a, const struct conf_addr *b)
{
    return a->salen != 0 && a->salen == b->salen && memcmp(&a->sa, &b->sa, a->salen) == 0;
}

static void
check_listeners(struct xref *x)
{
    const struct conf_node *list = conf_node_get(x->root, "listeners");
    struct conf *c = x->c;
    size_t top = conf_ctx_push_key(x->ctx, "listeners");

    unique_names(x, list, c->listeners, c->nlisteners, sizeof(*c->listeners),
                 offsetof(struct conf_listener, name), "listener");
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct conf_listener *l = &c->listeners[i];
        const struct conf_node *n = nth(list, i);
        const struct conf_node *routes = conf_node_get(n, "routes");
        size_t old = conf_ctx_push_index(x->ctx, i);
        char at[300];

        l->pool_index = resolve_pool(x, n, "pool", l->pool);
        for (size_t r = 0; r < l->nroutes; r++) {
            size_t o2 = conf_ctx_push_key(x->ctx, "routes");

            conf_ctx_push_index(x->ctx, r);
            l->routes[r].pool_index = resolve_pool(x, nth(routes, r), "pool", l->routes[r].pool);
            conf_ctx_pop(x->ctx, o2);
        }
        for (size_t j = 0; j < i; j++) {
            if (!same_sockaddr(&l->bind, &c->listeners[j].bind))
                continue;
            conf_key_error(x->ctx, n, "bind",
                           "conflicting bind: %s is already bound by listener '%s' (at %s)",
                           l->bind.text, c->listeners[j].name ? c->listeners[j].name : "?",
                           where(at, sizeof(at), conf_node_get(n, "bind"),
                                 conf_node_get(nth(list, j), "bind")));
            break;
        }
        conf_ctx_pop(x->ctx, old);
    }
    conf_ctx_pop(x->ctx, top);
}

static void
check_pools(struct xref *x)
{
    const struct conf_node *map = conf_node_get(x->root, "pools");
    struct conf *c = x->c;
    size_t top = conf_ctx_push_key(x->ctx, "pools");

    for (size_t i = 0; i < c->npools; i++) {
        struct conf_pool *p = &c->pools[i];
        size_t old = conf_ctx_push_key(x->ctx, p->name != NULL ? p->name : "?");

        conf_ctx_push_key(x->ctx, "servers");
        unique_names(x, conf_node_get(nth(map, i), "servers"), p->servers, p->nservers,
                     sizeof(*p->servers), offsetof(struct conf_server, name), "server");
        conf_ctx_pop(x->ctx, old);
    }
    conf_ctx_pop(x->ctx, top);
}

static void
check_vrrp(struct xref *x)
{
    const struct conf_node *list = conf_node_get(x->root, "vrrp");
    struct conf *c = x->c;
    size_t top = conf_ctx_push_key(x->ctx, "vrrp");

    unique_names(x, list, c->vrrp, c->nvrrp, sizeof(*c->vrrp), offsetof(struct conf_vrrp, name),
                 "vrrp instance");
    for (size_t i = 0; i < c->nvrrp; i++) {
        struct conf_vrrp *v = &c->vrrp[i];
        const struct conf_node *n = nth(list, i);
        const struct conf_node *tracks = conf_node_get(n, "track_pools");
        size_t old = conf_ctx_push_index(x->ctx, i);

        for (size_t t = 0; t < v->ntrack_pools; t++) {
            if (conf_pool_index(c, v->track_pools[t]) >= 0)
                continue;
            undefined(x, tracks != NULL && tracks->kind == CONF_NODE_SEQ ? nth(tracks, t) : tracks,
                      "track_pools", "pool", v->track_pools[t], x->pool_names);
        }
        /* One VRID per interface and address family (RFC 5798 section 5.2.3). */
        for (size_t j = 0; j < i && v->interface != NULL && v->vrid != 0; j++) {
            const struct conf_vrrp *w = &c->vrrp[j];
            int fv = v->nvirtual_ips ? v->virtual_ips[0].family : 0;
            int fw = w->nvirtual_ips ? w->virtual_ips[0].family : 0;

            if (w->interface == NULL || strcmp(v->interface, w->interface) != 0 ||
                v->vrid != w->vrid || fv != fw)
                continue;
            conf_key_error(x->ctx, n, "vrid", "vrid %u is already used on %s by vrrp instance '%s'",
                           v->vrid, v->interface, w->name != NULL ? w->name : "?");
            break;
        }
        conf_ctx_pop(x->ctx, old);
    }
    conf_ctx_pop(x->ctx, top);
}

static void
check_watch(struct xref *x)
{
    const struct conf_node *watch = conf_node_get(x->root, "watch");
    const struct conf_node *list = conf_node_get(watch, "alarms");
    struct conf_watch *w = &x->c->watch;
    const char **notifiers = name_list(x->ctx, w->nnotify, w->notify, sizeof(*w->notify),
                                       offsetof(struct conf_notify, name));
    size_t top = conf_ctx_push_key(x->ctx, "watch");

    conf_ctx_push_key(x->ctx, "alarms");
    unique_names(x, list, w->alarms, w->nalarms, sizeof(*w->alarms),
                 offsetof(struct conf_alarm, name), "alarm");
    for (size_t i = 0; i < w->nalarms; i++) {
        const struct conf_alarm *a = &w->alarms[i];
        const struct conf_node *ns = conf_node_get(nth(list, i), "notify");
        size_t old = conf_ctx_push_index(x->ctx, i);

        for (size_t k = 0; k < a->nnotify; k++) {
            bool found = false;

            for (size_t j = 0; j < w->nnotify; j++)
                found =
                    found || (w->notify[j].name && strcmp(w->notify[j].name, a->notify[k]) == 0);
            if (!found)
                undefined(x, ns != NULL && ns->kind == CONF_NODE_SEQ ? nth(ns, k) : ns, "notify",
                          "notifier", a->notify[k], notifiers);
        }
        conf_ctx_pop(x->ctx, old);
    }
    conf_ctx_pop(x->ctx, top);
}

static void
check_policy(struct xref *x, const struct conf_node *group, const char *key,
             const struct conf_scale_policy *p)
{
    const struct conf_node *n = conf_node_get(group, key);
    size_t old;

    if (!p->present || p->alarm == NULL)
        return;
    for (size_t i = 0; i < x->c->watch.nalarms; i++) {
        if (x->c->watch.alarms[i].name && strcmp(x->c->watch.alarms[i].name, p->alarm) == 0)
            return;
    }
    old = conf_ctx_push_key(x->ctx, key);
    if (!x->c->watch.present)
        conf_key_error(x->ctx, n, "alarm", "undefined alarm '%s' (there is no watch section)",
                       p->alarm);
    else
        undefined(x, conf_node_get(n, "alarm"), "alarm", "alarm", p->alarm, x->alarm_names);
    conf_ctx_pop(x->ctx, old);
}

static void
check_scale(struct xref *x)
{
    const struct conf_node *list = conf_node_get(x->root, "scale");
    struct conf *c = x->c;
    size_t top = conf_ctx_push_key(x->ctx, "scale");

    for (size_t i = 0; i < c->nscale; i++) {
        const struct conf_scale *s = &c->scale[i];
        const struct conf_node *n = nth(list, i);
        size_t old = conf_ctx_push_index(x->ctx, i);

        resolve_pool(x, n, "pool", s->pool);
        for (size_t j = 0; j < i && s->pool != NULL; j++) {
            if (c->scale[j].pool == NULL || strcmp(c->scale[j].pool, s->pool) != 0)
                continue;
            conf_key_error(x->ctx, n, "pool", "pool '%s' already has a scaling group (scale[%zu])",
                           s->pool, j);
            break;
        }
        check_policy(x, n, "scale_out", &s->scale_out);
        check_policy(x, n, "scale_in", &s->scale_in);
        conf_ctx_pop(x->ctx, old);
    }
    conf_ctx_pop(x->ctx, top);
}

static void
cross_reference(struct conf_ctx *ctx, const struct conf_node *root, struct conf *c)
{
    struct xref x = {.ctx = ctx, .c = c, .root = root};

    x.pool_names =
        name_list(ctx, c->npools, c->pools, sizeof(*c->pools), offsetof(struct conf_pool, name));
    x.alarm_names = name_list(ctx, c->watch.nalarms, c->watch.alarms, sizeof(*c->watch.alarms),
                              offsetof(struct conf_alarm, name));
    check_listeners(&x);
    check_pools(&x);
    check_vrrp(&x);
    check_watch(&x);
    check_scale(&x);
}

int
conf_load(const char *path, FILE *err, struct conf **out)
{
    struct conf_arena *arena = conf_arena_new(), *tmp = conf_arena_new();
    struct conf_diag *d = tmp != NULL ? conf_diag_new(tmp) : NULL;
    struct conf_plugin_root pr;
    struct conf *c = NULL;
    struct conf_node *root = NULL;
    struct conf_ctx ctx;
    size_t n;
    int rc = 1;

    *out = NULL;
    if (d == NULL || arena == NULL) {
        if (err != NULL)
            fprintf(err, "%s: out of memory\n", path);
        goto out;
    }
    root = conf_include_load(tmp, d, path);
    /* Plugin sections are known once global.plugins has been read: they
     * extend the root schema and the allocation of struct conf. */
    if (root != NULL && conf_plugin_root_build(tmp, d, root, &pr) == 0)
        c = conf_arena_alloc(arena, pr.size);
    if (c != NULL) {
        c->arena = arena;
        c->file = conf_arena_strdup(arena, path);
        conf_ctx_init(&ctx, arena, tmp, d);
        conf_schema_apply(&ctx, &pr.schema, root, c);
        cross_reference(&ctx, root, c);
        if (conf_plugin_root_finish(&pr, arena, c) < 0)
            c->file = NULL; /* reported as out of memory below */
    }
    n = conf_diag_count(d);
    if (n == 0 && (c == NULL || c->file == NULL))
        conf_diag_add(d, path, 0, 0, NULL, "out of memory");
    n = conf_diag_count(d);
    if (n > 0) {
        conf_diag_print(d, err);
        rc = n > INT_MAX ? INT_MAX : (int)n;
        goto out;
    }
    *out = c;
    arena = NULL; /* now owned by *out */
    rc = 0;
out:
    conf_arena_free(tmp);
    conf_arena_free(arena);
    return rc;
}

void
conf_free(struct conf *c)
{
    if (c != NULL)
        conf_arena_free(c->arena); /* c itself lives in the arena */
}

int
conf_pool_index(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->npools; i++) {
        if (c->pools[i].name != NULL && strcmp(c->pools[i].name, name) == 0)
            return i > INT_MAX ? -1 : (int)i;
    }
    return -1;
}

static const char reference_intro[] =
    "# tern configuration reference\n"
    "\n"
    "<!-- Generated from the schema tables in conf/tern_schema.c by conf_write_reference().\n"
    "     Do not edit: run `TERN_UPDATE_REFERENCE=1 ../../build/tests/test_conf` in\n"
    "     tests/unit after changing a table. -->\n"
    "\n"
    "tern reads one YAML file (`tern -c FILE`; `tern -t -c FILE` only checks it). Every\n"
    "mistake is reported, not just the first, as `FILE:LINE:COL: key.path: message`.\n"
    "Unknown keys are errors, with a suggestion when a known key is close.\n"
    "\n"
    "## Values\n"
    "\n"
    "- **duration**: a number and a unit, `ms`, `s`, `m` or `h`: `500ms`, `2s`, `1.5s`,\n"
    "  `1h30m`; a bare `0` is zero. Stored in whole milliseconds, so `0.5ms` is refused.\n"
    "- **size**: bytes, or a number with `k`, `m` or `g` (powers of 1024; `kb`, `KiB` are\n"
    "  the same): `8192`, `32k`, `1m`.\n"
    "- **address**: `host:port` with a numeric IPv4 host, `[IPv6]:port`, `localhost:port`,\n"
    "  or `*:port` / `:port` for any IPv4 address (use `[::]:port` for IPv6). Ports are\n"
    "  1..65535. Names other than localhost are refused, except in a server's address\n"
    "  (`pools.<name>.servers[].address`), which may name a host resolved at load.\n"
    "- **CIDR**: `address/prefix`, e.g. `10.0.0.100/24`; host bits may be set (a virtual IP\n"
    "  with its prefix length). A bare address means /32 or /128.\n"
    "- **bool**: `true`/`false` (also `yes`/`no`, `on`/`off`).\n"
    "- **list**: a YAML list; a single value is taken as a list of one.\n"
    "- An empty value, `~` or `null` is the same as leaving the key out.\n"
    "\n"
    "## Environment variables\n"
    "\n"
    "`${NAME}` in a value is replaced by the environment variable NAME; using one that is\n"
    "not set is an error. `${NAME:-default}` uses `default` when NAME is unset or empty.\n"
    "`$${` stands for a literal `${`; any other `$` is kept as is. Keys are not expanded.\n"
    "\n"
    "## Includes\n"
    "\n"
    "`include:` at the top level names a file, a glob pattern (`conf.d/*.yaml`) or a list of\n"
    "them, relative to the including file. A name that does not exist is an error; a pattern\n"
    "that matches nothing is not. Each included file is a configuration of its own, whose\n"
    "sections merge into the includer's: `listeners`, `vrrp`, `scale` and `watch.alarms`\n"
    "lists are appended; `pools` and `watch.notify` entries are added, and a name defined\n"
    "twice is an error; the keys of `global`, `admin`, `watch` and `watch.sources` may be\n"
    "spread over files but each is set once. Included files may include others, up to 8\n"
    "levels; cycles are errors. Errors in an included file name that file. An included name\n"
    "must be a regular file: a FIFO, a device or a socket is refused, as it could block the\n"
    "load or never end. One configuration reads at most 256 files and 16 MiB in all.\n"
    "\n"
    "## Reading the tables\n"
    "\n"
    "`listeners[]` is a list whose items take the keys below it; `pools.<name>` is a mapping\n"
    "from names you choose to settings. *default* is what applies when the key is absent;\n"
    "the defaults of an optional section (tls, health_check, email, ...) apply only when the\n"
    "section is present. *reload* says whether a change takes effect on SIGHUP or needs a\n"
    "restart.\n"
    "\n";

void
conf_write_reference(FILE *out)
{
    fputs(reference_intro, out);
    conf_schema_write_reference(out, &conf_tern_schema);
}
