/*
 * Internals shared by the VRRP runtime's files, which all run on the control
 * thread (but for the fatal-signal handler): vrrp.c (instances, timers,
 * tracking, notify, scheduling, reload, GET /api/v1/vrrp), vrrp_net.c (raw
 * sockets, ARP / NA, netlink) and vrrp_crash.c (the fatal-signal path).
 * Nothing here is visible outside lb/vrrp*.c; the daemon only sees
 * lb/vrrp.h.
 */
#ifndef LB_VRRP_INT_H
#define LB_VRRP_INT_H

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "lb/runtime.h"
#include "lb/vrrp.h"
#include "lb/vrrp_fsm.h"
#include "lb/vrrp_pkt.h"

/* The fatal signals handled (vrrp_crash.c: SIGSEGV, SIGBUS, SIGABRT), whose
 * previous actions struct vrrp keeps. */
#define VRRP_NFATAL 3

/* ---- module state ---- */

struct vrrp_counters {
    uint64_t adverts_sent, adverts_received, prio0_sent, prio0_received;
    uint64_t dropped[VRRP_ERR_COUNT];
    uint64_t interval_mismatch; /* v3: adopted, counted; v2: in dropped[] too */
    uint64_t bad_source;        /* unicast: not a configured peer */
    uint64_t csum[3];           /* accepted adverts by checksum form */
    uint64_t garps_sent, send_errors, netlink_errors, notify_runs, notify_failed;
    uint64_t vips_restored; /* removed by someone else while master, put back */
    uint64_t late_timers;   /* fired more than 2 ms after their deadline */
    uint64_t max_late_us;   /* worst timer lateness seen */
    uint64_t became_master;
};

struct vrrp;
struct notify_child; /* vrrp.c: a notify script still running */

struct vrrp_inst {
    struct vrrp *v;
    /* Settings, copied: a reload frees the configuration they came from. */
    char *name, *ifname, *notify;
    uint8_t vrid, version, priority, track_weight;
    uint32_t interval_ms;
    bool preempt, accept, pseudo;
    uint64_t preempt_delay_ms, garp_refresh_ms;
    uint32_t garp_repeat;
    struct conf_cidr *vips;
    size_t nvips;
    int family;         /* AF_INET or AF_INET6: of every virtual IP and peer */
    size_t alen;        /* 4 or 16 */
    uint8_t *vip_bytes; /* nvips x alen, the advertisement's address list */
    uint8_t (*peers)[16];
    size_t npeers;
    char **track_pools, **track_ifs;
    size_t ntrack_pools, ntrack_ifs;

    /* Interface and sockets. */
    int ifindex;
    uint8_t mac[6];
    uint8_t primary[16]; /* IPv4: the first own address; IPv6: the link-local one */
    int fd;              /* raw IPPROTO_VRRP (IPv4: IP_HDRINCL) */
    int pfd;             /* IPv4: AF_PACKET, gratuitous ARP; IPv6: raw ICMPv6, NAs */
    uint16_t ip_id;

    ev_io rx;
    int tfd; /* timerfd for the state machine's deadlines */
    ev_io tio;
    ev_timer garp_t;
    struct vrrp_fsm fsm;
    unsigned pools_failed, ifs_failed; /* tracked objects failing now */
    bool if_down;                      /* own interface without link */
    struct vrrp_counters c;
    uint64_t last_drop_log[VRRP_ERR_COUNT + 1];
    int slot; /* index in crash_slots, -1: none */
    bool vips_on;
};

struct vrrp {
    struct lb_ctl *ctl;
    struct vrrp_inst **inst;
    size_t n;
    struct mnl_socket *nl;      /* address commands */
    struct mnl_socket *nl_link; /* link events (track_interfaces, own links) */
    ev_io link_io;
    ev_timer track_t;
    ev_timer crash_t; /* TERN_TEST_CRASH_AFTER_MS, tests only */
    uint32_t nl_seq;
    bool shut;
    struct notify_child *children;
    /* Fatal-signal handling, restored at stop. */
    bool handlers_on;
    struct sigaction old_act[VRRP_NFATAL];
    stack_t old_stack;
    void *altstack;
};

static inline uint64_t
vrrp_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static inline const char *
vrrp_addr_text(const struct vrrp_inst *in, const uint8_t *a, char *buf, size_t size)
{
    return inet_ntop(in->family, a, buf, (socklen_t)size) ? buf : "?";
}

/* vrrp.c: carries out the state machine's actions (sending, addresses,
 * timers, notify); re-evaluates tracking (links too when links is true). */
void vrrp_apply(struct vrrp_inst *in, const struct vrrp_fsm_out *o, uint64_t now);
void vrrp_track_eval(struct vrrp_inst *in, bool links, uint64_t now);

/* vrrp_net.c: sockets and netlink. vrrp_send_pkt runs in the fatal-signal
 * handler too: async-signal-safe, and must stay so. */
ssize_t vrrp_send_pkt(int fd, const void *buf, size_t len, const struct sockaddr_storage *dst,
                      socklen_t dlen, const struct in6_pktinfo *src6);
struct nlmsghdr *vrrp_nl_addr_msg(void *buf, int cmd, uint32_t seq, int ifindex,
                                  const struct conf_cidr *c);
void vrrp_vips_add(struct vrrp_inst *in);
void vrrp_vips_del(struct vrrp_inst *in, bool quiet);
void vrrp_vips_remove_stale(struct vrrp_inst *in);
size_t vrrp_build_advert(struct vrrp_inst *in, uint8_t prio, const uint8_t *dst, uint8_t *buf,
                         size_t size);
size_t vrrp_destinations(const struct vrrp_inst *in, uint8_t (*out)[16], size_t max);
socklen_t vrrp_dest_sockaddr(const struct vrrp_inst *in, const uint8_t *dst,
                             struct sockaddr_storage *ss);
struct in6_pktinfo vrrp_src_info(const struct vrrp_inst *in);
void vrrp_send_advert(struct vrrp_inst *in, uint8_t prio);
void vrrp_send_garps(struct vrrp_inst *in, unsigned repeat);
void vrrp_on_readable(struct ev_loop *loop, ev_io *w, int revents);
void vrrp_on_link_event(struct ev_loop *loop, ev_io *w, int revents);
int vrrp_find_primary(struct vrrp_inst *in);
int vrrp_open_sockets(struct vrrp_inst *in);
int vrrp_open_netlink(struct vrrp *v);

/* vrrp_crash.c: the fatal-signal path. */
void vrrp_crash_arm(struct vrrp_inst *in);
void vrrp_crash_disarm(struct vrrp_inst *in);
int vrrp_crash_slot_new(void);
void vrrp_crash_slot_free(int i);
void vrrp_fatal_handlers_install(struct vrrp *v);
void vrrp_fatal_handlers_remove(struct vrrp *v);

#endif
