/*
 * Configuration reload (SIGHUP, POST /api/v1/reload): load and validate the
 * file, build a new snapshot, carry server state over by name, keep the
 * listening sockets of listeners that stay, and hand the snapshot to the
 * workers. An invalid file changes nothing.
 */
#ifndef LB_RELOAD_H
#define LB_RELOAD_H

#include "lb/runtime.h"

/* Reloads now and returns 0 when the new configuration is in effect, -1
 * when nothing changed (ctl->last_reload.errors says why). Blocks the
 * control loop while server names resolve (POST /api/v1/reload, whose
 * answer is the outcome). Refused while a lb_reload_request() load runs.
 * Control thread only. */
int lb_reload(struct lb_ctl *ctl);

/* Starts a reload without blocking (SIGHUP): the file is loaded, names
 * resolved, on a thread of its own; the outcome applies on ctl's loop and
 * lands in ctl->last_reload. A request during a load makes one more load
 * follow it. Control thread only. */
void lb_reload_request(struct lb_ctl *ctl);

/* Before ctl's loop is destroyed: a load still running is abandoned (its
 * thread frees what it made). */
void lb_reload_stop(struct lb_ctl *ctl);

#endif
