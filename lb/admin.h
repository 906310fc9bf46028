/*
 * The admin API: HTTP/1.1 + JSON (libjansson) on admin.listen, served by the
 * control thread's loop; GET /metrics (Prometheus text format) and GET / (the
 * dashboard). Mutating calls need the bearer token of admin.token_file.
 */
#ifndef LB_ADMIN_H
#define LB_ADMIN_H

#include "lb/runtime.h"

/* Opens the admin listener if the configuration has one. Returns 0, or -1
 * after logging why (the daemon then refuses to start). */
int lb_admin_start(struct lb_ctl *ctl);
/* Called after a reload swapped ctl->snap (token file re-read; a changed
 * admin.listen needs a restart and is logged). */
void lb_admin_reloaded(struct lb_ctl *ctl);
void lb_admin_stop(struct lb_ctl *ctl);
/* Called at the end of each configuration load (lb/reload.c): answers the
 * POST /api/v1/reload requests that waited for loads up to
 * lb_reload_finished(). */
void lb_admin_loads_finished(struct lb_ctl *ctl);

#endif
