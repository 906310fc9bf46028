/*
 * VRRP inside the daemon: the virtual IPs of the `vrrp:` section follow the
 * state machine of lb/vrrp_fsm.h, on the control thread's loop (which never
 * blocks, so advertisement timing holds while the workers are saturated).
 * One raw IPPROTO_VRRP socket per instance, bound to its interface, joined to
 * 224.0.0.18 there (or talking to unicast_peers only); addresses added and
 * removed with netlink (libmnl); gratuitous ARP from a packet socket;
 * tracking of pools and interfaces; the notify script run off the loop.
 *
 * Failing fast is the point: priority 0 goes out first thing on SIGTERM and
 * SIGINT, on Fault, and from the handler of SIGSEGV, SIGBUS and SIGABRT (a
 * prebuilt packet on the open raw socket), so a backup takes over after
 * Skew_Time instead of Master_Down_Interval. Virtual IPs left behind by a
 * crashed earlier run are removed at start.
 *
 * IPv4 and IPv6 (VRRPv3: adverts to ff02::12 from the interface's
 * link-local address, unsolicited Neighbor Advertisements instead of
 * gratuitous ARP, addresses added without duplicate address detection); one
 * family per instance.
 */
#ifndef LB_VRRP_H
#define LB_VRRP_H

#include <jansson.h>

#include "lb/runtime.h"

/* With vrrp instances configured, puts the calling (control) thread under
 * SCHED_FIFO at global.vrrp_rt_priority, with SCHED_RESET_ON_FORK so that
 * the threads and processes it starts stay ordinary. Call before
 * lb_privs_drop: setting it needs root or CAP_SYS_NICE, keeping it does
 * not. Logs a warning when refused. */
void lb_vrrp_sched_early(const struct conf *c);

/* Starts every configured instance (none: does nothing). Call once the
 * workers are up. Returns 0, or -1 after logging why (interface missing, no
 * IPv4 address on it, no CAP_NET_RAW / CAP_NET_ADMIN). Control thread. */
int lb_vrrp_start(struct lb_ctl *ctl);

/* After a reload: instances whose settings changed restart (a master hands
 * over with priority 0 first), removed ones stop, new ones start, unchanged
 * ones keep running untouched. Tracked pools are looked up by name in the
 * current snapshot on every check, so they follow any reload anyway. */
void lb_vrrp_reloaded(struct lb_ctl *ctl);

/* Graceful stop, synchronous: each master sends priority 0 and removes its
 * virtual IPs before this returns; every instance stops reacting. Call first
 * thing on SIGTERM / SIGINT. Idempotent. */
void lb_vrrp_shutdown(struct lb_ctl *ctl);

/* Releases everything (shuts down first if that was not done). At exit. */
void lb_vrrp_stop(struct lb_ctl *ctl);

/*
 * GET /api/v1/vrrp: {"instances":[{"name","interface","vrid","version",
 * "state":"INIT|BACKUP|MASTER|FAULT","priority","effective_priority",
 * "master_ip","advert_interval_ms","master_advert_interval_ms",
 * "virtual_ips":[...],"unicast_peers":[...],"preempt","accept",
 * "tracking":{...},"counters":{"adverts_sent","adverts_received","bad_ttl",
 * "bad_checksum","bad_version","bad_vrid","truncated","interval_mismatch",
 * "became_master", and more}}]}. A new reference; never NULL
 * ({"instances":[]} without VRRP). Control thread.
 */
json_t *lb_vrrp_json(struct lb_ctl *ctl);

#endif
