/*
 * The plugin host: the daemon's side of lb/plugin.h.
 *
 * It loads watch.so and scale.so when their configuration sections are
 * present, and the modules listed in global.plugins, and serves them the
 * host table: timers on the control loop, a job pool whose results come back
 * through an ev_async, the metrics registry (refreshed once a second from the
 * workers' counters and /proc), the event bus, pool operations and admin API
 * routes. Every function here runs on the control thread.
 */
#ifndef LB_PLUGIN_HOST_H
#define LB_PLUGIN_HOST_H

#include "lb/plugin.h"
#include "lb/runtime.h"

/* Starts the host (metrics sampler, job pool) and loads the plugins the
 * configuration asks for. A plugin that cannot be loaded or whose init fails
 * is logged and left out; the daemon serves on. Returns 0, or -1 only when
 * the host itself cannot start (out of memory, no thread). */
int lb_plugins_start(struct lb_ctl *ctl);

/* After a reload swapped ctl->snap: plugins whose section appeared are
 * loaded, those whose section went away unloaded, the others get reload()
 * with their new section. */
void lb_plugins_reloaded(struct lb_ctl *ctl);

/* Unloads every plugin (waiting for their running jobs) and stops the host. */
void lb_plugins_stop(struct lb_ctl *ctl);

/*
 * For the admin API: the JSON a plugin serves for a GET of route (the path
 * without query, e.g. "/api/v1/alarms"), malloc()ed -- the caller frees it
 * -- or NULL when no plugin registered that route.
 */
char *lb_plugins_api_json(struct lb_ctl *ctl, const char *route);

/*
 * For the daemon's other modules (VRRP state changes, health): publishes an
 * event on the bus with source "tern". Events are copied.
 */
void lb_plugins_publish(struct lb_ctl *ctl, const struct tern_event *ev);

/*
 * For whatever changes a server's health or admin state on the control
 * thread (health checks, outlier detection, the admin API, a plugin's
 * drain): call it right after the change, with why as the event's detail
 * (NULL: said from the change). It publishes the server up / down event
 * (or removed) at once, so a flap shorter than the sampler's second is
 * heard as two events in order; the sampler publishes only changes nobody
 * reported, and never one twice. A call with nothing changed publishes
 * nothing. Up means taking new requests: health up and state ready; down,
 * health down or drain or maint; the event's state is the admin state.
 */
void lb_plugins_server_changed(struct lb_ctl *ctl, const struct lb_pool *p,
                               const struct lb_server *s, const char *why);

/* Reads a metric of the registry (the admin API or /metrics may show
 * them). Returns 0, -ENOENT or -ENODATA, as tern_host.metric_get. */
int lb_plugins_metric(struct lb_ctl *ctl, const char *name, double *value);

/* plugin_schema.c: lets conf_load() read the section schemas of the modules
 * in global.plugins. Called once, before the first conf_load(). */
void lb_plugin_schemas_init(void);

#endif
