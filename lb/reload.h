/*
 * Configuration reload (SIGHUP, POST /api/v1/reload): load and validate the
 * file, build a new snapshot, carry server state over by name, keep the
 * listening sockets of listeners that stay, and hand the snapshot to the
 * workers. An invalid file changes nothing.
 */
#ifndef LB_RELOAD_H
#define LB_RELOAD_H

#include <stdint.h>

#include "lb/runtime.h"

/* Starts a reload without blocking: the file is loaded, names resolved, on
 * a thread of its own; the outcome applies on ctl's loop and lands in
 * ctl->last_reload. Returns the number of the load that reads the file as it
 * is now: the one it starts or, while a load runs, the one that follows it
 * (requests during a load coalesce into that one). Loads finish in order;
 * lb_reload_finished() says how far. lb_reload_request() is SIGHUP's,
 * lb_reload_request_api() POST /api/v1/reload's: they differ in what they
 * log. Control thread only. */
uint64_t lb_reload_request(struct lb_ctl *ctl);
uint64_t lb_reload_request_api(struct lb_ctl *ctl);

/* The number of the last load whose outcome is in ctl->last_reload (0:
 * none yet). */
uint64_t lb_reload_finished(const struct lb_ctl *ctl);

/* Before ctl's loop is destroyed: a load still running is abandoned (its
 * thread frees what it made). */
void lb_reload_stop(struct lb_ctl *ctl);

#endif
