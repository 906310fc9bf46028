/*
 * Dropping root after start-up (global.user). tern starts as root to bind
 * privileged ports and read root-only keys, then becomes an ordinary user
 * that keeps only the capabilities the running daemon still needs:
 * CAP_NET_ADMIN and CAP_NET_RAW (VRRP: raw sockets, adding and removing the
 * virtual IPs), plus CAP_NET_BIND_SERVICE when the admin listener, which is
 * bound later than the proxy listeners, asks for a privileged port.
 */
#ifndef LB_PRIVS_H
#define LB_PRIVS_H

struct conf;

/*
 * Switches to c->global.user if it is set and tern runs as root. Capabilities
 * are per thread on Linux, so this must run while the calling thread is the
 * only one: after the listeners are open and before the workers start.
 * Returns 0 when done or when there is nothing to do (no user, or not root:
 * a warning is logged), -1 after logging a one-line error (unknown user, a
 * failed system call); the daemon then exits with status 1.
 */
int lb_privs_drop(const struct conf *c);

#endif
