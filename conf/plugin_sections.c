/*
 * Sections of third-party plugins (plugin_sections.h). The schemas come
 * from the resolver the daemon sets (lb/plugin_schema.c reads them from the
 * modules); conf/ itself loads nothing.
 */
#include "conf/plugin_sections.h"

#include <string.h>

#include "conf/arena.h"
#include "conf/tern_schema.h"

#define SLOT 16 /* alignment of each section, and room for its bool present */

static conf_plugin_resolver resolver;

void
conf_set_plugin_resolver(conf_plugin_resolver r)
{
    resolver = r;
}

static size_t
round_up(size_t n)
{
    return (n + SLOT - 1) / SLOT * SLOT;
}

static bool
is_core_key(const char *key)
{
    for (const struct conf_field *f = conf_tern_schema.fields; f->key != NULL; f++)
        if (strcmp(f->key, key) == 0)
            return true;
    return false;
}

/* Adds module's section (when it declares one) to out's lists. */
static int
add_module(struct conf_arena *tmp, struct conf_diag *d, const struct conf_node *mod,
           struct conf_plugin_root *out, size_t cap)
{
    const char *section = NULL;
    const struct conf_schema *s;

    if (mod->kind != CONF_NODE_SCALAR || mod->null || out->n == cap)
        return 0; /* the schema walk reports a malformed list */
    s = resolver(mod->str, &section);
    if (s == NULL || section == NULL)
        return 0;
    if (is_core_key(section)) {
        conf_diag_add(d, mod->file, mod->line, mod->col, "global.plugins",
                      "module %s declares the section '%s', which is tern's own", mod->str,
                      section);
        return 0;
    }
    for (size_t i = 0; i < out->n; i++) {
        if (strcmp(out->names[i], section) == 0) {
            conf_diag_add(d, mod->file, mod->line, mod->col, "global.plugins",
                          "module %s declares the section '%s', as an earlier module does",
                          mod->str, section);
            return 0;
        }
    }
    out->names[out->n] = conf_arena_strdup(tmp, section);
    if (out->names[out->n] == NULL)
        return -1;
    out->schemas[out->n] = s;
    out->offsets[out->n] = out->size;
    out->size += SLOT + round_up(s->size ? s->size : 1);
    out->n++;
    return 0;
}

int
conf_plugin_root_build(struct conf_arena *tmp, struct conf_diag *d, const struct conf_node *root,
                       struct conf_plugin_root *out)
{
    const struct conf_node *mods = conf_node_get(conf_node_get(root, "global"), "plugins");
    size_t cap = mods == NULL ? 0 : mods->kind == CONF_NODE_SEQ ? mods->n : 1, nf = 0;
    struct conf_field *fields;

    memset(out, 0, sizeof(*out));
    out->schema = conf_tern_schema;
    out->size = round_up(sizeof(struct conf));
    if (resolver == NULL || cap == 0)
        return 0;
    out->names = conf_arena_calloc(tmp, cap, sizeof(*out->names));
    out->schemas = conf_arena_calloc(tmp, cap, sizeof(*out->schemas));
    out->offsets = conf_arena_calloc(tmp, cap, sizeof(*out->offsets));
    if (out->names == NULL || out->schemas == NULL || out->offsets == NULL)
        return -1;
    for (size_t i = 0; i < cap; i++)
        if (add_module(tmp, d, mods->kind == CONF_NODE_SEQ ? mods->items[i] : mods, out, cap) < 0)
            return -1;
    if (out->n == 0)
        return 0;
    while (conf_tern_schema.fields[nf].key != NULL)
        nf++;
    fields = conf_arena_calloc(tmp, nf + out->n + 1, sizeof(*fields));
    if (fields == NULL)
        return -1;
    memcpy(fields, conf_tern_schema.fields, nf * sizeof(*fields));
    for (size_t i = 0; i < out->n; i++) {
        /* Lazy: the schema's defaults fill a section only when it is given,
         * and an absent section leaves its plugin without one (NULL). */
        fields[nf + i] = (struct conf_field){
            .key = out->names[i],
            .kind = CONF_STRUCT,
            .flags = CONF_F_LAZY,
            .offset = out->offsets[i] + SLOT,
            .present = out->offsets[i] + 1,
            .sub = out->schemas[i],
            .doc = "a plugin's section",
        };
    }
    out->schema.fields = fields;
    out->schema.size = out->size;
    return 0;
}

int
conf_plugin_root_finish(const struct conf_plugin_root *pr, struct conf_arena *arena, struct conf *c)
{
    if (pr->n == 0)
        return 0;
    c->ext = conf_arena_calloc(arena, pr->n, sizeof(*c->ext));
    if (c->ext == NULL)
        return -1;
    for (size_t i = 0; i < pr->n; i++) {
        c->ext[i] = (struct conf_ext){
            .name = conf_arena_strdup(arena, pr->names[i]),
            .schema = pr->schemas[i],
            .present = *(const bool *)((const char *)c + pr->offsets[i]),
            .obj = (char *)c + pr->offsets[i] + SLOT,
        };
        if (c->ext[i].name == NULL)
            return -1;
    }
    c->next = pr->n;
    return 0;
}
