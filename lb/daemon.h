/*
 * The control side of the daemon: loads the configuration, opens the
 * listeners, starts the workers and then runs the control loop (signals,
 * reload, and later the admin API, health checks and VRRP) until it stops.
 */
#ifndef LB_DAEMON_H
#define LB_DAEMON_H

/* Runs tern on the configuration file path in the foreground. Returns the
 * process exit status. */
int lb_daemon_run(const char *path);

#endif
