/*
 * Health of the servers: active checks (tcp connect, http request) per pool,
 * run on the control thread's loop, and passive outlier detection fed by the
 * workers' consecutive_failures counters. Transitions go through
 * lb_server_set_health() (runtime.h).
 */
#ifndef LB_HEALTH_H
#define LB_HEALTH_H

#include "lb/runtime.h"

/* Starts checking every pool of ctl->snap on ctl->loop; state goes in
 * ctl->health. Returns 0 or -1 (out of memory). */
int lb_health_start(struct lb_ctl *ctl);
/* After a reload, once ctl->snap is the new snapshot and
 * lb_snapshot_carry_over() has run: checks follow the new pools and servers,
 * and each server keeps its health history (checks passed or failed,
 * ejections, slow start) by pool name, server name and address. Keeps no
 * pointer into the old snapshot, which may be freed when this returns. */
void lb_health_reloaded(struct lb_ctl *ctl);
/* Cancels every probe and timer; call before the loop is destroyed. */
void lb_health_stop(struct lb_ctl *ctl);

#endif
