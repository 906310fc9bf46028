/*
 * A plugin's configuration section as a tree of plain values.
 *
 * Plugins see no tern header but lb/plugin.h, so they cannot read conf/'s
 * typed structs. conf/ has already validated their section with the schema
 * table declared for it (conf/tern_schema_plugins.c) and stored it typed,
 * defaults applied; this file walks the same table over the stored struct
 * and writes each value into a struct tern_value. The schema is the single
 * description of the section, so the tree has exactly the keys, types and
 * defaults the reference documents, and a key added to the table reaches the
 * plugin without a change here.
 *
 * One exception: a CUSTOM row stores through its own parser, so the table
 * does not say where the value went. custom_rows below says it, for the
 * plugin sections' CUSTOM rows; to add one, name the schema, the key and the
 * char * member that holds the text.
 */
#include <stddef.h>
#include <string.h>

#include "conf/arena.h"
#include "conf/schema.h"
#include "conf/tern_schema.h"
#include "lb/plugin_int.h"

static const struct {
    const char *schema, *key;
    size_t offset; /* of a char * in the schema's struct */
} custom_rows[] = {
    {"email", "server", offsetof(struct conf_email, server)},
    {"email", "starttls", offsetof(struct conf_email, starttls)},
};

struct tb {
    struct conf_arena *mem;
    bool oom;
};

static bool dump_struct(struct tb *b, const struct conf_schema *s, const char *obj,
                        struct tern_value *out);

static const void *
at(const char *obj, size_t off)
{
    return obj + off;
}

static int64_t
load_int(const char *p, size_t size, bool is_signed)
{
    switch (size) {
    case 1:
        return is_signed ? (int64_t) * (const int8_t *)p : (int64_t) * (const uint8_t *)p;
    case 2:
        return is_signed ? (int64_t) * (const int16_t *)p : (int64_t) * (const uint16_t *)p;
    case 4:
        return is_signed ? (int64_t) * (const int32_t *)p : (int64_t) * (const uint32_t *)p;
    default:
        return *(const int64_t *)p;
    }
}

static void
set_str(struct tern_value *v, const char *s)
{
    v->kind = TERN_VAL_STRING;
    v->u.s = s;
}

/* One scalar of kind k stored at p. Returns false when it has no value. */
static bool
dump_scalar(struct tb *b, const struct conf_field *f, enum conf_kind k, const char *p,
            struct tern_value *v)
{
    const char *s;

    switch (k) {
    case CONF_STRING:
    case CONF_CHOICE:
        memcpy(&s, p, sizeof(s));
        if (s == NULL)
            return false;
        set_str(v, conf_arena_strdup(b->mem, s));
        break;
    case CONF_INT:
        v->kind = TERN_VAL_INT;
        v->u.i = load_int(p, f->size ? f->size : sizeof(int), true);
        break;
    case CONF_UINT:
    case CONF_SIZE:
        v->kind = TERN_VAL_INT;
        v->u.i = load_int(p, f->size ? f->size : sizeof(uint32_t), false);
        break;
    case CONF_DURATION:
        v->kind = TERN_VAL_INT;
        v->u.i = load_int(p, f->size ? f->size : sizeof(uint64_t), false);
        break;
    case CONF_BOOL:
        v->kind = TERN_VAL_BOOL;
        v->u.b = *(const bool *)p;
        break;
    case CONF_DOUBLE:
        v->kind = TERN_VAL_DOUBLE;
        v->u.d = *(const double *)p;
        break;
    case CONF_ENUM: {
        int64_t i = load_int(p, f->size ? f->size : sizeof(int), true);
        size_t n = 0;

        while (f->names != NULL && f->names[n] != NULL)
            n++;
        if (i < 0 || (size_t)i >= n)
            return false;
        set_str(v, f->names[i]);
        break;
    }
    case CONF_ADDR:
    case CONF_IP:
        s = ((const struct conf_addr *)p)->text;
        if (s == NULL)
            return false;
        set_str(v, conf_arena_strdup(b->mem, s));
        break;
    case CONF_CIDR:
        s = ((const struct conf_cidr *)p)->text;
        if (s == NULL)
            return false;
        set_str(v, conf_arena_strdup(b->mem, s));
        break;
    default:
        return false;
    }
    if (v->kind == TERN_VAL_STRING && v->u.s == NULL)
        b->oom = true;
    return true;
}

static size_t
elem_size(enum conf_kind k)
{
    if (k == CONF_ADDR || k == CONF_IP)
        return sizeof(struct conf_addr);
    if (k == CONF_CIDR)
        return sizeof(struct conf_cidr);
    return sizeof(char *);
}

static struct tern_value *
items(struct tb *b, size_t n)
{
    struct tern_value *v = conf_arena_calloc(b->mem, n ? n : 1, sizeof(*v));

    if (v == NULL)
        b->oom = true;
    return v;
}

static bool
dump_field(struct tb *b, const struct conf_schema *s, const struct conf_field *f, const char *obj,
           struct tern_value *v)
{
    const char *arr;
    size_t n;
    struct tern_value *it;

    if (f->flags & CONF_F_NOSTORE)
        return false;
    if (f->present != 0 && !*(const bool *)at(obj, f->present - 1))
        return false;
    switch (f->kind) {
    case CONF_STRUCT:
        if (!dump_struct(b, f->sub, obj + f->offset, v))
            return false;
        /* A lazy section without a flag of its own: absent when empty. */
        return !((f->flags & CONF_F_LAZY) && f->present == 0 && v->n == 0);
    case CONF_LIST:
    case CONF_SEQ:
    case CONF_MAP:
        memcpy(&arr, at(obj, f->offset), sizeof(arr));
        memcpy(&n, at(obj, f->count), sizeof(n));
        v->kind = f->kind == CONF_MAP ? TERN_VAL_MAP : TERN_VAL_LIST;
        it = items(b, n);
        if (it == NULL)
            return false;
        v->items = it;
        for (size_t i = 0; i < n && arr != NULL; i++) {
            if (f->kind == CONF_LIST) {
                if (dump_scalar(b, f, f->elem, arr + i * elem_size(f->elem), &it[v->n]))
                    v->n++;
                continue;
            }
            const char *elem = arr + i * f->sub->size;

            if (!dump_struct(b, f->sub, elem, &it[v->n]))
                continue;
            if (f->kind == CONF_MAP && f->sub->name_offset != 0) {
                const char *name;

                memcpy(&name, elem + f->sub->name_offset - 1, sizeof(name));
                it[v->n].key = conf_arena_strdup(b->mem, name ? name : "");
            }
            v->n++;
        }
        return true;
    case CONF_CUSTOM:
        for (size_t i = 0; i < sizeof(custom_rows) / sizeof(custom_rows[0]); i++) {
            if (s->name != NULL && strcmp(custom_rows[i].schema, s->name) == 0 &&
                strcmp(custom_rows[i].key, f->key) == 0)
                return dump_scalar(b, f, CONF_STRING, obj + custom_rows[i].offset, v);
        }
        return false;
    default:
        return dump_scalar(b, f, f->kind, obj + f->offset, v);
    }
}

static bool
dump_struct(struct tb *b, const struct conf_schema *s, const char *obj, struct tern_value *out)
{
    size_t n = 0;
    struct tern_value *it;

    for (const struct conf_field *f = s->fields; f->key != NULL; f++)
        n++;
    it = items(b, n);
    if (it == NULL)
        return false;
    *out = (struct tern_value){.kind = TERN_VAL_MAP, .items = it};
    for (const struct conf_field *f = s->fields; f->key != NULL; f++) {
        struct tern_value *v = &it[out->n];

        if (!dump_field(b, s, f, obj, v)) {
            *v = (struct tern_value){0};
            continue;
        }
        v->key = f->key;
        out->n++;
    }
    return true;
}

/* A third-party module's section (conf/plugin_sections.c), or NULL. */
static const struct conf_ext *
ext_section(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->next; i++)
        if (strcmp(c->ext[i].name, name) == 0)
            return &c->ext[i];
    return NULL;
}

bool
lb_plugin_section_present(const struct conf *c, const char *name)
{
    const struct conf_ext *e = ext_section(c, name);

    if (e != NULL)
        return e->present;
    if (strcmp(name, "watch") == 0)
        return c->watch.present;
    if (strcmp(name, "scale") == 0)
        return c->nscale > 0;
    return false;
}

const struct tern_value *
lb_plugin_section(const struct conf *c, const char *name, struct conf_arena **mem)
{
    struct tb b = {0};
    struct tern_value *root;

    *mem = NULL;
    if (name == NULL || !lb_plugin_section_present(c, name))
        return NULL;
    b.mem = conf_arena_new();
    root = b.mem ? conf_arena_calloc(b.mem, 1, sizeof(*root)) : NULL;
    if (root == NULL)
        goto oom;
    if (ext_section(c, name) != NULL) {
        const struct conf_ext *e = ext_section(c, name);

        dump_struct(&b, e->schema, e->obj, root);
    } else if (strcmp(name, "watch") == 0) {
        dump_struct(&b, &conf_watch_schema, (const char *)&c->watch, root);
    } else {
        /* scale: is a list of groups. */
        struct tern_value *it = items(&b, c->nscale);

        *root = (struct tern_value){.kind = TERN_VAL_LIST, .items = it};
        for (size_t i = 0; it != NULL && i < c->nscale; i++)
            if (dump_struct(&b, &conf_scale_schema, (const char *)&c->scale[i], &it[root->n]))
                root->n++;
    }
    if (b.oom)
        goto oom;
    *mem = b.mem;
    return root;
oom:
    if (b.mem)
        conf_arena_free(b.mem);
    return NULL;
}
