/*
 * Sections of third-party plugins in conf_load() (see struct conf_ext): the
 * root schema is tern's plus one lazy mapping row per module that declares a
 * section, stored after struct conf in the same allocation so that the one
 * schema walk checks and fills them with everything else.
 */
#ifndef CONF_PLUGIN_SECTIONS_H
#define CONF_PLUGIN_SECTIONS_H

#include <stddef.h>

#include "conf/config.h"
#include "conf/diag.h"
#include "conf/node.h"
#include "conf/schema.h"

struct conf_plugin_root {
    struct conf_schema schema; /* tern's root, plus the plugin rows */
    size_t size;               /* bytes to allocate for struct conf and the sections */
    size_t n;                  /* plugin sections */
    const char **names;        /* [n] */
    const struct conf_schema **schemas;
    size_t *offsets; /* [n] of each section's bool present; its object follows at +16 */
};

/* Reads global.plugins from the raw tree and asks the resolver. Reports a
 * module whose section is one of tern's own. Returns 0, or -1 out of memory. */
int conf_plugin_root_build(struct conf_arena *tmp, struct conf_diag *d,
                           const struct conf_node *root, struct conf_plugin_root *out);

/* After the walk: c->ext from the filled allocation (c is its start). */
int conf_plugin_root_finish(const struct conf_plugin_root *pr, struct conf_arena *arena,
                            struct conf *c);

#endif
