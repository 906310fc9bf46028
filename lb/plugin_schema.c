/*
 * The schemas of third-party plugin sections (lb/plugin.h, struct
 * tern_conf_key), turned into conf/ schema tables for conf_load().
 *
 * conf_load() asks, for each module of global.plugins, which section it
 * declares and with which keys (conf_set_plugin_resolver). The module is
 * opened here as the plugin host will open it (RTLD_NODELETE: it stays
 * mapped), its descriptor checked for the API version, and its key table
 * converted once: each key gets an 8-aligned slot in a generated struct, so
 * the schema walk stores values by offset as it does for tern's own
 * structs, and plugin_conf.c turns them into the plugin's value tree with
 * the same table. The conversion is kept per path for the life of the
 * process (a rebuilt module at the same path keeps its first schema until
 * a restart, as dlopen keeps its first code).
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "conf/schema.h"
#include "lb/log.h"
#include "lb/plugin.h"
#include "lb/plugin_host.h"

struct known {
    struct known *next;
    char *path;
    const char *section;
    const struct conf_schema *schema; /* NULL: none */
};

static struct known *known;

static size_t
slot(size_t size)
{
    return (size + 7) / 8 * 8;
}

/* The table of keys as a schema whose struct is laid out here. */
static const struct conf_schema *
convert(const struct tern_conf_key *keys, const char *name)
{
    size_t n = 0, off = 0;
    struct conf_field *f;
    struct conf_schema *s;

    while (keys[n].key != NULL)
        n++;
    f = calloc(n + 1, sizeof(*f));
    s = calloc(1, sizeof(*s));
    if (f == NULL || s == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const struct tern_conf_key *k = &keys[i];
        struct conf_field *o = &f[i];

        *o = (struct conf_field){.key = k->key,
                                 .flags = k->required ? CONF_F_REQUIRED : 0,
                                 .def = k->def,
                                 .doc = k->doc ? k->doc : "",
                                 .offset = off,
                                 .size = 8};
        switch (k->type) {
        case TERN_CONF_STRING:
        case TERN_CONF_PATH:
            o->kind = CONF_STRING;
            o->flags |= k->type == TERN_CONF_PATH ? CONF_F_PATH : 0;
            off += 8;
            break;
        case TERN_CONF_INT:
            o->kind = CONF_INT;
            o->min = k->min;
            o->max = k->max;
            off += 8;
            break;
        case TERN_CONF_BOOL:
            o->kind = CONF_BOOL;
            o->size = sizeof(bool);
            off += 8;
            break;
        case TERN_CONF_DOUBLE:
            o->kind = CONF_DOUBLE;
            off += 8;
            break;
        case TERN_CONF_DURATION:
        case TERN_CONF_SIZE:
            o->kind = k->type == TERN_CONF_DURATION ? CONF_DURATION : CONF_SIZE;
            off += 8;
            break;
        case TERN_CONF_ADDR:
            o->kind = CONF_ADDR;
            o->size = sizeof(struct conf_addr);
            off += slot(sizeof(struct conf_addr));
            break;
        case TERN_CONF_STRINGS:
            o->kind = CONF_LIST;
            o->elem = CONF_STRING;
            o->count = off + 8;
            off += 16;
            break;
        case TERN_CONF_MAP:
        case TERN_CONF_LIST:
            if (k->sub == NULL || (o->sub = convert(k->sub, k->key)) == NULL)
                goto fail;
            if (k->type == TERN_CONF_MAP) {
                /* Lazy, with its own flag: an absent mapping stays absent
                 * from the tree rather than a mapping of defaults. */
                o->kind = CONF_STRUCT;
                o->flags |= CONF_F_LAZY;
                o->present = off + 1;
                o->offset = off + 8;
                off += 8 + slot(o->sub->size);
            } else {
                o->kind = CONF_SEQ;
                o->count = off + 8;
                off += 16;
            }
            break;
        default:
            lb_err("plugin schema %s: key %s has an unknown type %d", name, k->key, (int)k->type);
            goto fail;
        }
    }
    s->name = name;
    s->fields = f;
    s->size = off ? off : 8;
    return s;
fail:
    free(f); /* a nested table already made is leaked: a broken module, once */
    free(s);
    return NULL;
}

static const struct conf_schema *
resolve(const char *path, const char **section)
{
    struct known *k;
    void *dl;
    const struct tern_plugin *desc;
    const struct tern_conf_key *keys;

    for (k = known; k != NULL; k = k->next) {
        if (strcmp(k->path, path) == 0) {
            *section = k->section;
            return k->schema;
        }
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL || (k->path = strdup(path)) == NULL) {
        free(k);
        return NULL;
    }
    /* A module that cannot be opened, or one of another API version, has
     * no section here; the plugin host says why when it loads modules. */
    dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    desc = dl ? dlsym(dl, TERN_PLUGIN_SYMBOL) : NULL;
    keys = dl ? dlsym(dl, TERN_PLUGIN_SCHEMA_SYMBOL) : NULL;
    if (desc != NULL && desc->api_version == TERN_PLUGIN_API_VERSION && desc->section != NULL &&
        keys != NULL) {
        k->section = strdup(desc->section);
        k->schema = k->section ? convert(keys, k->section) : NULL;
    }
    if (dl != NULL)
        dlclose(dl); /* NODELETE: stays mapped for the host's own dlopen */
    k->next = known;
    known = k;
    *section = k->section;
    return k->schema;
}

void
lb_plugin_schemas_init(void)
{
    conf_set_plugin_resolver(resolve);
}
