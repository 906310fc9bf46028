/*
 * Health of the servers: active checks (tcp connect, http request) per pool,
 * run on the control thread's loop, and passive outlier detection fed by the
 * workers' consecutive_failures counters. Transitions go through
 * lb_server_set_health() (runtime.h).
 */
#ifndef LB_HEALTH_H
#define LB_HEALTH_H

#include "lb/runtime.h"

int lb_health_start(struct lb_ctl *ctl);
/* After a reload: checks follow the new snapshot's pools and servers
 * (servers keep their state by name, see lb_snapshot_carry_over). */
void lb_health_reloaded(struct lb_ctl *ctl);
void lb_health_stop(struct lb_ctl *ctl);

#endif
