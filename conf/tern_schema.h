/*
 * tern's own configuration schema: the tables in tern_schema.c that describe
 * every key of struct conf (config.h), for conf_load() and the reference.
 */
#ifndef CONF_TERN_SCHEMA_H
#define CONF_TERN_SCHEMA_H

#include "conf/schema.h"

/* The top level of the file: global, admin, include, listeners, pools, vrrp,
 * watch, scale. Applied to a struct conf. */
extern const struct conf_schema conf_tern_schema;

/* The sections of the watch and scale plugins (tern_schema_plugins.c). */
extern const struct conf_schema conf_watch_schema;
extern const struct conf_schema conf_scale_schema;

/* Upper bound of global.workers. */
#define CONF_MAX_WORKERS 256

#endif
