/*
 * The schema engine (see schema.h): one walk over a YAML node tree guided by
 * a table (the reference page generated from the same tables is in
 * reference.c).
 *
 * Every kind has one parser, used both for user input and for the defaults
 * written in the tables, so a default can never mean something a user could
 * not write. Errors never stop the walk: a bad value is reported and left at
 * zero, and the walk moves on so one run shows every mistake.
 */
#include "conf/schema.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "conf/arena.h"
#include "conf/diag.h"
#include "conf/parse.h"

void
conf_ctx_init(struct conf_ctx *ctx, struct conf_arena *arena, struct conf_arena *tmp,
              struct conf_diag *diag)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->arena = arena;
    ctx->tmp = tmp;
    ctx->diag = diag;
}

static size_t push(struct conf_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static size_t
push(struct conf_ctx *ctx, const char *fmt, ...)
{
    size_t old = ctx->pathlen;
    size_t room = sizeof(ctx->path) - ctx->pathlen;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(ctx->path + ctx->pathlen, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        ctx->path[old] = '\0';
    else
        ctx->pathlen = (size_t)n < room ? old + (size_t)n : sizeof(ctx->path) - 1;
    return old;
}

size_t
conf_ctx_push_key(struct conf_ctx *ctx, const char *key)
{
    return push(ctx, ctx->pathlen == 0 ? "%s" : ".%s", key);
}

size_t
conf_ctx_push_index(struct conf_ctx *ctx, size_t i)
{
    return push(ctx, "[%zu]", i);
}

void
conf_ctx_pop(struct conf_ctx *ctx, size_t len)
{
    ctx->pathlen = len;
    ctx->path[len] = '\0';
}

static void
verror(struct conf_ctx *ctx, const struct conf_node *at, const char *key, const char *fmt,
       va_list ap)
{
    size_t old = key != NULL ? conf_ctx_push_key(ctx, key) : ctx->pathlen;

    if (at != NULL)
        conf_diag_vadd(ctx->diag, at->file, at->line, at->col, ctx->path, fmt, ap);
    else
        conf_diag_vadd(ctx->diag, "<default>", 0, 0, ctx->path, fmt, ap);
    conf_ctx_pop(ctx, old);
}

void
conf_error(struct conf_ctx *ctx, const struct conf_node *at, const char *key, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verror(ctx, at, key, fmt, ap);
    va_end(ap);
}

void
conf_key_error(struct conf_ctx *ctx, const struct conf_node *map, const char *key, const char *fmt,
               ...)
{
    const struct conf_pair *p = conf_node_pair(map, key);
    va_list ap;

    va_start(ap, fmt);
    verror(ctx, p != NULL ? p->value : map, key, fmt, ap);
    va_end(ap);
}

char *
conf_strdup(struct conf_ctx *ctx, const char *s)
{
    char *p;

    if (s == NULL)
        return NULL;
    p = conf_arena_strdup(ctx->arena, s);
    if (p == NULL)
        conf_diag_add(ctx->diag, "<memory>", 0, 0, ctx->path, "out of memory");
    return p;
}

/*
 * A relative file name in a configuration file names a file next to that
 * file (as include: does), not one in the daemon's working directory, which
 * is / under systemd and anything at all under `tern -t`. An included file's
 * names are relative to the included file: the node knows where it came
 * from. A default (a node without a file) is kept as it is.
 */
static char *
conf_path(struct conf_ctx *ctx, const struct conf_node *v)
{
    const char *slash = v->file != NULL ? strrchr(v->file, '/') : NULL;
    char *p;

    if (v->str[0] == '/' || v->str[0] == '\0' || slash == NULL)
        return conf_strdup(ctx, v->str);
    p = conf_arena_printf(ctx->arena, "%.*s/%s", (int)(slash - v->file), v->file, v->str);
    if (p == NULL)
        conf_diag_add(ctx->diag, "<memory>", 0, 0, ctx->path, "out of memory");
    return p;
}

/* Optimal string alignment distance: Levenshtein plus adjacent swaps, the
 * most common typo in a key ("lsiten"). Capped at 32 characters. */
static size_t
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[33][33];

    if (la > 32 || lb > 32)
        return SIZE_MAX;
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = d[i - 1][j] + 1;

            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

const char *
conf_did_you_mean(const char *word, const char *const *cands)
{
    size_t wl = strlen(word), best_d = SIZE_MAX;
    const char *best = NULL, *prefix = NULL;

    for (size_t i = 0; cands[i] != NULL; i++) {
        size_t cl = strlen(cands[i]);
        size_t limit = wl <= 3 || cl <= 3 ? 1 : 2;
        size_t dist = edit_distance(word, cands[i]);

        if (dist <= limit && dist < best_d) {
            best_d = dist;
            best = cands[i];
        }
        /* "max_conn" for "max_connections", "timeout" for "timeouts". */
        if (prefix == NULL && wl >= 3 && cl >= 3 &&
            (strncmp(word, cands[i], wl) == 0 || strncmp(cands[i], word, cl) == 0))
            prefix = cands[i];
    }
    return best != NULL ? best : prefix;
}

/* Appends ": a, b, c" for a NULL-terminated list, into buf. */
static void
join_names(char *buf, size_t size, const char *const *names)
{
    size_t len = 0;

    buf[0] = '\0';
    for (size_t i = 0; names[i] != NULL && len < size; i++) {
        int n = snprintf(buf + len, size - len, "%s%s", i ? ", " : "", names[i]);

        if (n < 0)
            break;
        len += (size_t)n;
    }
}

static void
fmt_duration(char *buf, size_t size, uint64_t ms)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, size, "%" PRIu64 "h", ms / 3600000);
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, size, "%" PRIu64 "m", ms / 60000);
    else if (ms != 0 && ms % 1000 == 0)
        snprintf(buf, size, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, size, "%" PRIu64 "ms", ms);
}

static void
fmt_size(char *buf, size_t size, uint64_t b)
{
    if (b != 0 && b % (1u << 30) == 0)
        snprintf(buf, size, "%" PRIu64 "g", b >> 30);
    else if (b != 0 && b % (1u << 20) == 0)
        snprintf(buf, size, "%" PRIu64 "m", b >> 20);
    else if (b != 0 && b % 1024 == 0)
        snprintf(buf, size, "%" PRIu64 "k", b >> 10);
    else
        snprintf(buf, size, "%" PRIu64, b);
}

void
conf__fmt_bound(char *buf, size_t size, enum conf_kind kind, int64_t v)
{
    if (kind == CONF_DURATION)
        fmt_duration(buf, size, (uint64_t)v);
    else if (kind == CONF_SIZE)
        fmt_size(buf, size, (uint64_t)v);
    else
        snprintf(buf, size, "%" PRId64, v);
}

static const char *
kind_desc(const struct conf_field *f, enum conf_kind kind)
{
    switch (kind) {
    case CONF_STRING:
        return "a string";
    case CONF_INT:
    case CONF_UINT:
        return "an integer";
    case CONF_BOOL:
        return "true or false";
    case CONF_DOUBLE:
        return "a number";
    case CONF_DURATION:
        return "a duration";
    case CONF_SIZE:
        return "a size";
    case CONF_ENUM:
    case CONF_CHOICE:
        return "a name";
    case CONF_ADDR:
        return "an address (host:port)";
    case CONF_IP:
        return "an IP address";
    case CONF_CIDR:
        return "an address/prefix";
    case CONF_LIST:
        return "a list";
    case CONF_STRUCT:
        return "a mapping";
    case CONF_SEQ:
        return "a list of mappings";
    case CONF_MAP:
        return "a mapping of names";
    case CONF_CUSTOM:
        return f->type_doc != NULL ? f->type_doc : "a value";
    }
    return "a value";
}

static void
store_int(void *p, size_t size, int64_t v)
{
    if (size == sizeof(int64_t)) {
        int64_t x = v;
        memcpy(p, &x, sizeof(x));
    } else if (size == sizeof(int32_t)) {
        int32_t x = (int32_t)v;
        memcpy(p, &x, sizeof(x));
    } else if (size == sizeof(int16_t)) {
        int16_t x = (int16_t)v;
        memcpy(p, &x, sizeof(x));
    } else if (size == sizeof(int8_t)) {
        int8_t x = (int8_t)v;
        memcpy(p, &x, sizeof(x));
    }
}

/* The largest value a target of this size holds (unsigned kinds). */
static uint64_t
size_max(size_t size)
{
    return size >= 8 ? UINT64_MAX : (UINT64_C(1) << (size * 8)) - 1;
}

/* Checks v against the field's bounds (or the target's size); reports and
 * returns -1 when outside. */
static int
check_range_u(struct conf_ctx *ctx, const struct conf_field *f, enum conf_kind kind,
              const struct conf_node *v, uint64_t x)
{
    uint64_t lo = f->min > 0 ? (uint64_t)f->min : 0;
    uint64_t hi = f->max > 0 ? (uint64_t)f->max : size_max(f->size ? f->size : 8);
    char a[32], b[32];

    if (x >= lo && x <= hi)
        return 0;
    conf__fmt_bound(a, sizeof(a), kind, (int64_t)lo);
    conf__fmt_bound(b, sizeof(b), kind, (int64_t)hi);
    if (f->max > 0 || hi != UINT64_MAX)
        conf_error(ctx, v, NULL, "%s is out of range: must be %s..%s", v->str, a, b);
    else
        conf_error(ctx, v, NULL, "%s is out of range: must be at least %s", v->str, a);
    return -1;
}

static int
expect_names(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v)
{
    char all[512];
    const char *hint;

    for (int i = 0; f->names[i] != NULL; i++) {
        if (strcmp(f->names[i], v->str) == 0)
            return i;
    }
    join_names(all, sizeof(all), f->names);
    hint = conf_did_you_mean(v->str, f->names);
    if (hint != NULL)
        conf_error(ctx, v, NULL, "unknown value '%s'; did you mean '%s'? (expected one of: %s)",
                   v->str, hint, all);
    else
        conf_error(ctx, v, NULL, "unknown value '%s'; expected one of: %s", v->str, all);
    return -1;
}

static bool
expect_scalar(struct conf_ctx *ctx, const struct conf_field *f, enum conf_kind kind,
              const struct conf_node *v)
{
    if (v->kind == CONF_NODE_SCALAR)
        return true;
    conf_error(ctx, v, NULL, "expected %s, found %s", kind_desc(f, kind), conf_node_kind_name(v));
    return false;
}

/*
 * Parses one scalar of the given kind into target. Shared by plain fields,
 * list elements and defaults. Returns 0 or -1 (reported).
 */
static int
parse_scalar(struct conf_ctx *ctx, const struct conf_field *f, enum conf_kind kind,
             const struct conf_node *v, void *target)
{
    const char *why = "malformed";
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    int idx;

    if (!expect_scalar(ctx, f, kind, v))
        return -1;
    switch (kind) {
    case CONF_STRING: {
        char *s = (f->flags & CONF_F_PATH) ? conf_path(ctx, v) : conf_strdup(ctx, v->str);

        if (s == NULL)
            return -1;
        memcpy(target, &s, sizeof(s));
        return 0;
    }
    case CONF_INT: {
        int64_t lo = f->min, hi = f->max;

        if (lo == 0 && hi == 0) {
            hi = f->size >= 8 ? INT64_MAX : (INT64_C(1) << (f->size * 8 - 1)) - 1;
            lo = -hi - 1;
        }
        if (conf_parse_int(v->str, &i) < 0) {
            conf_error(ctx, v, NULL, "expected an integer, got '%s'", v->str);
            return -1;
        }
        if (i < lo || i > hi) {
            conf_error(ctx, v, NULL, "%s is out of range: must be %" PRId64 "..%" PRId64, v->str,
                       lo, hi);
            return -1;
        }
        store_int(target, f->size, i);
        return 0;
    }
    case CONF_UINT:
        if (conf_parse_uint(v->str, &u) < 0) {
            conf_error(ctx, v, NULL, "expected a non-negative integer, got '%s'", v->str);
            return -1;
        }
        if (check_range_u(ctx, f, kind, v, u) < 0)
            return -1;
        store_int(target, f->size, (int64_t)u);
        return 0;
    case CONF_DURATION:
        if (conf_parse_duration(v->str, &u) < 0) {
            if (conf_parse_uint(v->str, &u) == 0)
                conf_error(ctx, v, NULL,
                           "duration '%s' needs a unit: ms, s, m or h (e.g. %sms or %ss)", v->str,
                           v->str, v->str);
            else
                conf_error(ctx, v, NULL,
                           "bad duration '%s': expected a number and a unit (ms, s, m, h), "
                           "e.g. 500ms, 2s, 1.5m, 1h30m",
                           v->str);
            return -1;
        }
        if (check_range_u(ctx, f, kind, v, u) < 0)
            return -1;
        store_int(target, f->size ? f->size : sizeof(uint64_t), (int64_t)u);
        return 0;
    case CONF_SIZE:
        if (conf_parse_size(v->str, &u) < 0) {
            conf_error(ctx, v, NULL,
                       "bad size '%s': expected bytes or a number with k, m or g "
                       "(e.g. 8192, 32k, 1m)",
                       v->str);
            return -1;
        }
        if (check_range_u(ctx, f, kind, v, u) < 0)
            return -1;
        store_int(target, f->size, (int64_t)u);
        return 0;
    case CONF_BOOL:
        if (conf_parse_bool(v->str, &b) < 0) {
            conf_error(ctx, v, NULL, "expected true or false, got '%s'", v->str);
            return -1;
        }
        memcpy(target, &b, sizeof(b));
        return 0;
    case CONF_DOUBLE:
        if (conf_parse_double(v->str, &d) < 0) {
            conf_error(ctx, v, NULL, "expected a number, got '%s'", v->str);
            return -1;
        }
        memcpy(target, &d, sizeof(d));
        return 0;
    case CONF_ENUM:
        idx = expect_names(ctx, f, v);
        if (idx < 0)
            return -1;
        store_int(target, f->size ? f->size : sizeof(int), idx);
        return 0;
    case CONF_CHOICE: {
        char *s;

        idx = expect_names(ctx, f, v);
        if (idx < 0)
            return -1;
        s = conf_strdup(ctx, f->names[idx]);
        if (s == NULL)
            return -1;
        memcpy(target, &s, sizeof(s));
        return 0;
    }
    case CONF_ADDR:
    case CONF_IP: {
        struct conf_addr *a = target;
        int rc =
            kind == CONF_ADDR ? conf_parse_addr(v->str, a, &why) : conf_parse_ip(v->str, a, &why);

        if (rc < 0) {
            conf_error(ctx, v, NULL, "bad %s '%s': %s",
                       kind == CONF_ADDR ? "address" : "IP address", v->str, why);
            return -1;
        }
        a->text = conf_strdup(ctx, v->str);
        return a->text != NULL ? 0 : -1;
    }
    case CONF_CIDR: {
        struct conf_cidr *c = target;

        if (conf_parse_cidr(v->str, c, &why) < 0) {
            conf_error(ctx, v, NULL, "bad CIDR '%s': %s", v->str, why);
            return -1;
        }
        c->text = conf_strdup(ctx, v->str);
        return c->text != NULL ? 0 : -1;
    }
    default:
        break;
    }
    conf_error(ctx, v, NULL, "internal error: kind %d is not a scalar kind", (int)kind);
    return -1;
}

static size_t
elem_size(enum conf_kind kind)
{
    switch (kind) {
    case CONF_ADDR:
    case CONF_IP:
        return sizeof(struct conf_addr);
    case CONF_CIDR:
        return sizeof(struct conf_cidr);
    default:
        return sizeof(char *);
    }
}

static void
store_count(void *obj, const struct conf_field *f, size_t n)
{
    memcpy((char *)obj + f->count, &n, sizeof(n));
}

static bool
check_count(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v, size_t n)
{
    if (f->min > 0 && n < (size_t)f->min) {
        conf_error(ctx, v, NULL, "needs at least %" PRId64 " item%s", f->min,
                   f->min == 1 ? "" : "s");
        return false;
    }
    if (f->max > 0 && n > (size_t)f->max) {
        conf_error(ctx, v, NULL, "takes at most %" PRId64 " item%s", f->max,
                   f->max == 1 ? "" : "s");
        return false;
    }
    return true;
}

/* A list of scalars; a single scalar counts as a list of one. */
static void
apply_list(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v, void *obj)
{
    const struct conf_node *const *items = (const struct conf_node *const *)v->items;
    size_t n = v->kind == CONF_NODE_SEQ ? v->n : 1, esz = elem_size(f->elem), ok = 0;
    unsigned char *arr;

    if (v->kind == CONF_NODE_MAP) {
        conf_error(ctx, v, NULL, "expected a list, found a mapping");
        return;
    }
    if (v->kind == CONF_NODE_SCALAR)
        items = &v;
    if (!check_count(ctx, f, v, n))
        return;
    if (f->flags & CONF_F_NOSTORE)
        return;
    arr = conf_arena_calloc(ctx->arena, n ? n : 1, esz);
    if (arr == NULL) {
        conf_error(ctx, v, NULL, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t old;

        if (items[i]->bad)
            continue;
        old = v->kind == CONF_NODE_SEQ ? conf_ctx_push_index(ctx, i) : ctx->pathlen;
        if (items[i]->null)
            conf_error(ctx, items[i], NULL, "empty list item");
        else if (parse_scalar(ctx, f, f->elem, items[i], arr + ok * esz) == 0)
            ok++;
        conf_ctx_pop(ctx, old);
    }
    memcpy((char *)obj + f->offset, &arr, sizeof(arr));
    store_count(obj, f, ok);
}

static void apply_struct(struct conf_ctx *ctx, const struct conf_schema *s,
                         const struct conf_node *map, void *obj, bool given);

static void
record_position(const struct conf_schema *s, void *elem, const struct conf_node *n)
{
    if (s->line_offset != 0)
        memcpy((char *)elem + s->line_offset - 1, &n->line, sizeof(int));
    if (s->col_offset != 0)
        memcpy((char *)elem + s->col_offset - 1, &n->col, sizeof(int));
}

static void
apply_seq(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v, void *obj)
{
    const struct conf_schema *s = f->sub;
    unsigned char *arr;

    if (v->kind != CONF_NODE_SEQ) {
        conf_error(ctx, v, NULL, "expected a list of mappings, found %s", conf_node_kind_name(v));
        return;
    }
    if (!check_count(ctx, f, v, v->n))
        return;
    arr = conf_arena_calloc(ctx->arena, v->n ? v->n : 1, s->size);
    if (arr == NULL) {
        conf_error(ctx, v, NULL, "out of memory");
        return;
    }
    /* Elements stay in node order, one per item even when an item is
     * broken, so later passes can find each element's node by index. */
    for (size_t i = 0; i < v->n; i++) {
        const struct conf_node *item = v->items[i];
        size_t old = conf_ctx_push_index(ctx, i);

        record_position(s, arr + i * s->size, item);
        if (item->kind != CONF_NODE_MAP && !item->null)
            conf_error(ctx, item, NULL, "expected a mapping, found %s", conf_node_kind_name(item));
        else
            apply_struct(ctx, s, item, arr + i * s->size, true);
        conf_ctx_pop(ctx, old);
    }
    memcpy((char *)obj + f->offset, &arr, sizeof(arr));
    store_count(obj, f, v->n);
}

static void
apply_map(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v, void *obj)
{
    const struct conf_schema *s = f->sub;
    unsigned char *arr;

    if (v->kind != CONF_NODE_MAP) {
        conf_error(ctx, v, NULL, "expected a mapping of names to settings, found %s",
                   conf_node_kind_name(v));
        return;
    }
    if (!check_count(ctx, f, v, v->n))
        return;
    arr = conf_arena_calloc(ctx->arena, v->n ? v->n : 1, s->size);
    if (arr == NULL) {
        conf_error(ctx, v, NULL, "out of memory");
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        const struct conf_pair *p = &v->pairs[i];
        unsigned char *elem = arr + i * s->size;
        size_t old = conf_ctx_push_key(ctx, p->key->str);

        record_position(s, elem, p->key);
        if (s->name_offset != 0) {
            char *name = conf_strdup(ctx, p->key->str);

            memcpy(elem + s->name_offset - 1, &name, sizeof(name));
        }
        if (p->value->kind != CONF_NODE_MAP && !p->value->null)
            conf_error(ctx, p->value, NULL, "expected a mapping, found %s",
                       conf_node_kind_name(p->value));
        else
            apply_struct(ctx, s, p->value, elem, true);
        conf_ctx_pop(ctx, old);
    }
    memcpy((char *)obj + f->offset, &arr, sizeof(arr));
    store_count(obj, f, v->n);
}

static void
set_present(const struct conf_field *f, void *obj)
{
    if (f->present != 0)
        *((bool *)((char *)obj + f->present - 1)) = true;
}

/* Parses the table's default text through the same code as user input. */
static void
apply_default(struct conf_ctx *ctx, const struct conf_field *f, void *obj)
{
    struct conf_node dn = {.kind = CONF_NODE_SCALAR, .file = "<default>"};

    switch (f->kind) {
    case CONF_STRUCT:
        if (!(f->flags & CONF_F_LAZY))
            apply_struct(ctx, f->sub, NULL, (char *)obj + f->offset, false);
        return;
    case CONF_SEQ:
    case CONF_MAP:
    case CONF_LIST:
        return;
    default:
        break;
    }
    if (f->def == NULL)
        return;
    dn.str = (char *)f->def;
    if (f->kind == CONF_CUSTOM)
        f->parse(ctx, f, &dn, obj);
    else
        parse_scalar(ctx, f, f->kind, &dn, (char *)obj + f->offset);
}

static void
apply_field(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *map,
            const struct conf_pair *pair, void *obj)
{
    const struct conf_node *v = pair != NULL ? pair->value : NULL;
    size_t old;

    if (v != NULL && v->bad)
        return; /* already reported; its default would only hide that */
    if (v == NULL || v->null) {
        if ((f->flags & CONF_F_REQUIRED) && pair != NULL)
            conf_error(ctx, pair->key, f->key, "a value is required");
        else if ((f->flags & CONF_F_REQUIRED) && map != NULL)
            conf_error(ctx, map, NULL, "missing required key '%s'", f->key);
        apply_default(ctx, f, obj);
        return;
    }
    old = conf_ctx_push_key(ctx, f->key);
    set_present(f, obj);
    switch (f->kind) {
    case CONF_LIST:
        apply_list(ctx, f, v, obj);
        break;
    case CONF_STRUCT:
        if (v->kind != CONF_NODE_MAP)
            conf_error(ctx, v, NULL, "expected a mapping, found %s", conf_node_kind_name(v));
        else
            apply_struct(ctx, f->sub, v, (char *)obj + f->offset, true);
        break;
    case CONF_SEQ:
        apply_seq(ctx, f, v, obj);
        break;
    case CONF_MAP:
        apply_map(ctx, f, v, obj);
        break;
    case CONF_CUSTOM:
        if (v->kind != CONF_NODE_SCALAR)
            conf_error(ctx, v, NULL, "expected %s, found %s", kind_desc(f, f->kind),
                       conf_node_kind_name(v));
        else
            f->parse(ctx, f, v, obj);
        break;
    default:
        if (!(f->flags & CONF_F_NOSTORE))
            parse_scalar(ctx, f, f->kind, v, (char *)obj + f->offset);
        break;
    }
    conf_ctx_pop(ctx, old);
}

static void
unknown_key(struct conf_ctx *ctx, const struct conf_schema *s, const struct conf_pair *p)
{
    const char *names[64];
    char all[512];
    const char *hint;
    size_t n = 0;

    for (const struct conf_field *f = s->fields; f->key != NULL && n < 63; f++)
        names[n++] = f->key;
    names[n] = NULL;
    hint = conf_did_you_mean(p->key->str, names);
    if (hint != NULL) {
        conf_error(ctx, p->key, p->key->str, "unknown key; did you mean '%s'?", hint);
    } else if (n <= 12) {
        join_names(all, sizeof(all), names);
        conf_error(ctx, p->key, p->key->str, "unknown key; expected one of: %s", all);
    } else {
        conf_error(ctx, p->key, p->key->str, "unknown key");
    }
}

static void
apply_struct(struct conf_ctx *ctx, const struct conf_schema *s, const struct conf_node *map,
             void *obj, bool given)
{
    if (map != NULL && map->kind == CONF_NODE_MAP) {
        for (size_t i = 0; i < map->n; i++) {
            const struct conf_field *f;

            for (f = s->fields; f->key != NULL; f++) {
                if (strcmp(f->key, map->pairs[i].key->str) == 0)
                    break;
            }
            if (f->key == NULL)
                unknown_key(ctx, s, &map->pairs[i]);
        }
    }
    for (const struct conf_field *f = s->fields; f->key != NULL; f++)
        apply_field(ctx, f, map, conf_node_pair(map, f->key), obj);
    if (given && s->check != NULL)
        s->check(ctx, map, obj);
}

void
conf_schema_apply(struct conf_ctx *ctx, const struct conf_schema *schema,
                  const struct conf_node *map, void *obj)
{
    if (map != NULL && map->kind != CONF_NODE_MAP) {
        conf_error(ctx, map, NULL, "expected a mapping, found %s", conf_node_kind_name(map));
        return;
    }
    apply_struct(ctx, schema, map, obj, true);
}

/* ---- Checking the tables themselves ---- */

static void
selftest(struct conf_ctx *ctx, const struct conf_schema *s, void *obj)
{
    for (const struct conf_field *f = s->fields; f->key != NULL; f++) {
        size_t old = conf_ctx_push_key(ctx, f->key);
        const char *why = NULL;

        for (const struct conf_field *g = s->fields; g < f && why == NULL; g++) {
            if (strcmp(g->key, f->key) == 0)
                why = "key declared twice";
        }
        if (why == NULL && f->doc == NULL)
            why = "no doc line";
        if (why == NULL && f->kind == CONF_CUSTOM && (f->parse == NULL || f->type_doc == NULL))
            why = "CUSTOM needs .parse and .type_doc";
        if (why == NULL && (f->kind == CONF_ENUM || f->kind == CONF_CHOICE) && f->names == NULL)
            why = "ENUM/CHOICE needs .names";
        if (why == NULL && (f->kind == CONF_STRUCT || f->kind == CONF_SEQ || f->kind == CONF_MAP) &&
            f->sub == NULL)
            why = "STRUCT/SEQ/MAP needs .sub";
        if (why == NULL && (f->kind == CONF_SEQ || f->kind == CONF_MAP) && f->sub->size == 0)
            why = "SEQ/MAP needs .sub->size";
        if (why == NULL && f->kind == CONF_LIST && f->elem != CONF_STRING && f->elem != CONF_ADDR &&
            f->elem != CONF_IP && f->elem != CONF_CIDR)
            why = "LIST elements must be STRING, ADDR, IP or CIDR";
        if (why != NULL) {
            conf_diag_add(ctx->diag, s->name != NULL ? s->name : "schema", 0, 0, ctx->path, "%s",
                          why);
        } else if (f->kind == CONF_STRUCT) {
            selftest(ctx, f->sub, (char *)obj + f->offset);
        } else if (f->kind == CONF_SEQ || f->kind == CONF_MAP) {
            void *elem = conf_arena_alloc(ctx->tmp, f->sub->size);

            if (elem != NULL)
                selftest(ctx, f->sub, elem);
        } else if (f->def != NULL) {
            apply_default(ctx, f, obj); /* reports a default that does not parse */
        }
        conf_ctx_pop(ctx, old);
    }
}

int
conf_schema_selftest(const struct conf_schema *root, FILE *err)
{
    struct conf_arena *arena = conf_arena_new(), *tmp = conf_arena_new();
    struct conf_diag *d = tmp != NULL ? conf_diag_new(tmp) : NULL;
    void *obj = arena != NULL ? conf_arena_alloc(arena, root->size ? root->size : 1) : NULL;
    struct conf_ctx ctx;
    int bad = 1;

    if (d == NULL || obj == NULL)
        goto out;
    conf_ctx_init(&ctx, arena, tmp, d);
    selftest(&ctx, root, obj);
    conf_diag_print(d, err);
    bad = (int)conf_diag_count(d);
out:
    conf_arena_free(tmp);
    conf_arena_free(arena);
    return bad;
}
