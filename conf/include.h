/*
 * Reading the main file and everything it includes into one node tree.
 *
 * A top-level "include:" names a file, a glob pattern or a list of them,
 * relative to the including file. Each included file is a configuration of
 * its own whose top-level sections merge into the includer's: lists
 * (listeners, vrrp, scale, watch.alarms) concatenate, named maps (pools,
 * watch.notify) merge with duplicate names refused, the keys of global,
 * admin and watch merge with each key set once. Nodes keep their own file, so
 * errors inside an included file point into it. Cycles and nesting deeper
 * than CONF_INCLUDE_MAX_DEPTH are errors, and so is including what is not a
 * regular file (a FIFO, a device), more than CONF_INCLUDE_MAX_FILES files or
 * more than CONF_MAX_BYTES in all.
 */
#ifndef CONF_INCLUDE_H
#define CONF_INCLUDE_H

#include "conf/node.h"

#define CONF_INCLUDE_MAX_DEPTH 8
#define CONF_INCLUDE_MAX_FILES 256 /* the main file included */
#define CONF_INCLUDE_MAX_FILES_TEXT "256 files"

/* All the files of one load together: far more than any configuration, far
 * less than a file that never ends. */
#define CONF_MAX_BYTES (16u << 20)
#define CONF_MAX_BYTES_TEXT "16 MiB"

struct conf_arena;
struct conf_diag;

/* Returns the merged top-level mapping, or NULL when the main file could not
 * be read or parsed (reported to d). The "include" keys are consumed. */
struct conf_node *conf_include_load(struct conf_arena *tmp, struct conf_diag *d, const char *path);

#endif
