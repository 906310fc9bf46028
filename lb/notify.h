/*
 * systemd's readiness protocol (sd_notify(3)) without libsystemd: one
 * datagram of "KEY=value" lines to the AF_UNIX socket named by
 * $NOTIFY_SOCKET. When tern is not started by systemd (the variable is unset)
 * every call does nothing, so callers never need to check.
 *
 * The unit (dist/tern.service.in) is Type=notify: systemd considers tern
 * started only when READY=1 arrives, i.e. once the listeners are bound and the
 * workers accept, and a reload finished only when READY=1 follows RELOADING=1.
 */
#ifndef LB_NOTIFY_H
#define LB_NOTIFY_H

/* Sends state (e.g. "READY=1\nSTATUS=running") as one datagram. Returns 1 when
 * sent, 0 when $NOTIFY_SOCKET is unset, -errno on failure (callers may ignore
 * it: a lost notification makes systemd time out, it never breaks the proxy).
 * Safe from any thread. */
int lb_notify(const char *state);
int lb_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "READY=1\nMAINPID=<pid>": start-up is complete, or a reload has ended (with
 * or without success: the old configuration still serves after a failure). */
int lb_notify_ready(void);
/* "RELOADING=1\nMONOTONIC_USEC=<now>": a reload has started. Must be followed
 * by lb_notify_ready() when it ends, whatever the outcome. */
int lb_notify_reloading(void);
/* "STOPPING=1": shutdown has begun (SIGTERM, SIGINT). */
int lb_notify_stopping(void);

#endif
