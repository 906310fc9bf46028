/*
 * Configuration reload (SIGHUP, POST /api/v1/reload): load and validate the
 * file, build a new snapshot, carry server state over by name, keep the
 * listening sockets of listeners that stay, and hand the snapshot to the
 * workers. An invalid file changes nothing.
 */
#ifndef LB_RELOAD_H
#define LB_RELOAD_H

#include "lb/runtime.h"

/* Returns 0 when the new configuration is in effect, -1 when nothing changed
 * (ctl->last_reload.errors says why). Control thread only. */
int lb_reload(struct lb_ctl *ctl);

#endif
