/*
 * A third-party plugin for the integration tests (tests/integration/
 * test_plugins.py), built by meson as tests/greeter.so against lb/plugin.h
 * only. It declares the section `greeter:` with a schema and logs what it
 * receives at init and at each reload, one "key=value" per key, so a test
 * can see that the section arrived checked, with defaults applied and file
 * names resolved.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lb/plugin.h"

static const struct tern_conf_key target_keys[] = {
    {.key = "host", .type = TERN_CONF_STRING, .required = true, .doc = "where"},
    {.key = "port", .type = TERN_CONF_INT, .min = 1, .max = 65535, .def = "80", .doc = "port"},
    {0},
};

TERN_PLUGIN_EXPORT const struct tern_conf_key tern_plugin_schema[] = {
    {.key = "greeting", .type = TERN_CONF_STRING, .def = "hello", .doc = "what to say"},
    {.key = "every", .type = TERN_CONF_DURATION, .required = true, .doc = "how often"},
    {.key = "times", .type = TERN_CONF_INT, .min = 1, .max = 10, .def = "3", .doc = "how many"},
    {.key = "loud", .type = TERN_CONF_BOOL, .def = "false", .doc = "shout"},
    {.key = "names", .type = TERN_CONF_STRINGS, .doc = "whom"},
    {.key = "words", .type = TERN_CONF_PATH, .doc = "a file of words"},
    {.key = "target", .type = TERN_CONF_MAP, .sub = target_keys, .doc = "a nested mapping"},
    {.key = "targets", .type = TERN_CONF_LIST, .sub = target_keys, .doc = "a list of mappings"},
    {0},
};

struct greeter {
    const struct tern_host *h;
};

static struct greeter the_state;

/* Logs the tree as "greeter got: k=v k=v ...". */
static void
show(const struct tern_host *h, const char *when, const struct tern_value *sec)
{
    char line[1024];
    size_t n = 0;

    n += (size_t)snprintf(line + n, sizeof(line) - n, "%s:", when);
    for (size_t i = 0; sec != NULL && i < sec->n && n < sizeof(line); i++) {
        const struct tern_value *v = &sec->items[i];

        switch (v->kind) {
        case TERN_VAL_STRING:
            n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=%s", v->key, v->u.s);
            break;
        case TERN_VAL_INT:
            n +=
                (size_t)snprintf(line + n, sizeof(line) - n, " %s=%lld", v->key, (long long)v->u.i);
            break;
        case TERN_VAL_BOOL:
            n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=%s", v->key,
                                  v->u.b ? "true" : "false");
            break;
        case TERN_VAL_LIST:
            n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=[%zu]", v->key, v->n);
            break;
        case TERN_VAL_MAP:
            n += (size_t)snprintf(line + n, sizeof(line) - n, " %s={%s:%lld}", v->key,
                                  tern_value_str(tern_value_get(v, "host"), "?"),
                                  (long long)tern_value_int(tern_value_get(v, "port"), -1));
            break;
        default:
            break;
        }
    }
    if (sec == NULL)
        snprintf(line + n, sizeof(line) - n, " no section");
    h->log(h, TERN_LOG_INFO, "%s", line);
}

static int
init(const struct tern_host *h, const struct tern_value *sec, void **state)
{
    the_state.h = h;
    show(h, "init", sec);
    *state = &the_state;
    return 0;
}

static int
reload(void *state, const struct tern_value *sec)
{
    struct greeter *g = state;

    show(g->h, "reload", sec);
    return 0;
}

TERN_PLUGIN_EXPORT const struct tern_plugin tern_plugin_entry = {
    .api_version = TERN_PLUGIN_API_VERSION,
    .name = "greeter",
    .section = "greeter",
    .init = init,
    .reload = reload,
};
