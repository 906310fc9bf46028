/*
 * The VRRP runtime (see lb/vrrp.h): sockets, timers, netlink and scripts
 * around the pure state machine (lb/vrrp_fsm.c) and packet code
 * (lb/vrrp_pkt.c), all on the control thread's libev loop.
 *
 * Per instance: a raw IPPROTO_VRRP socket with IP_HDRINCL (we write the IPv4
 * header ourselves, so the source address that enters the keepalived-style
 * checksum is exactly the one on the wire, and TTL is 255), bound to the
 * interface; a packet socket for gratuitous ARP (IPv6: a raw socket without
 * our header, the link-local source named per packet, and a raw ICMPv6
 * socket for unsolicited Neighbor Advertisements); an ev_io for receive, and a
 * timerfd (in the same loop through an ev_io) for the state machine's
 * deadlines: absolute CLOCK_MONOTONIC times, fired by the kernel's
 * high-resolution timers, so Master_Down_Interval is kept to the
 * microsecond rather than to libev's millisecond, and 10 ms advertisements
 * keep their pace. The loop is the control thread's, which never blocks, so
 * the timing holds while the workers are saturated.
 *
 * Globals: the fatal-signal handler can reach nothing but globals, so the
 * prebuilt priority-0 packets live in crash_slots (one per instance,
 * published with atomics); and struct lb_ctl has no slot for this module yet,
 * so the module state hangs off one pointer (vrrp_state) that only the
 * control thread touches. Nothing else is global.
 */
#include "lb/vrrp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <libmnl/libmnl.h>
#include <linux/if_packet.h>
#include <linux/rtnetlink.h>
#include <math.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lb/log.h"
#include "lb/plugin.h"
#include "lb/plugin_host.h"
#include "lb/vrrp_fsm.h"
#include "lb/vrrp_pkt.h"

extern char **environ;

/* Pool tracking polls the snapshot (a few atomic loads per server): often
 * enough that tracking adds nothing noticeable to health-check time. */
#define TRACK_POLL_S 0.01
/* Log a given drop reason at most this often per instance. */
#define DROP_LOG_EVERY_US (10 * 1000000ULL)
/* Priority-0 packets prebuilt for the crash handler: the multicast one, or
 * one per unicast peer up to this many. */
#define CRASH_MAX_PKTS 16
#define CRASH_SLOTS 64
#define ALTSTACK_SIZE (64 * 1024)
/* libmnl's MNL_SOCKET_BUFFER_SIZE depends on the page size (a VLA); 8 KiB is
 * what it amounts to on every page size we run on. */
#define NL_BUF 8192

static const uint8_t VRRP_MCAST4[4] = {224, 0, 0, 18}; /* RFC 5798 section 5.1.1.2 */
/* RFC 5798 section 5.1.2.2: ff02::12. */
static const uint8_t VRRP_MCAST6[16] = {0xff, 0x02, [15] = 0x12};
/* RFC 4861 section 4.4: unsolicited advertisements go to all-nodes ff02::1. */
static const uint8_t ALL_NODES6[16] = {0xff, 0x02, [15] = 0x01};

/* ---- the fatal-signal path (async-signal-safe part) ---- */

/* Room for RTM_DELADDR requests of this many addresses (each is 40 bytes);
 * more are left for the next start to remove as stale. */
#define CRASH_MAX_DEL 32

struct crash_slot {
    atomic_int armed; /* 1 while the instance is master */
    int fd;           /* the raw VRRP socket */
    int npkts;
    size_t len;
    struct sockaddr_storage dst[CRASH_MAX_PKTS];
    socklen_t dlen;
    struct in6_pktinfo src6; /* IPv6: the link-local source and interface */
    uint8_t pkt[CRASH_MAX_PKTS][VRRP_IPV4_HDR_LEN + VRRP_MAX_PKT];
    int nlfd;      /* the netlink command socket, -1: none */
    size_t nl_len; /* RTM_DELADDR messages for the addresses, back to back */
    uint8_t nl[CRASH_MAX_DEL * 64];
};

/* One datagram on a raw VRRP socket. IPv6 names its source (the link-local
 * address, RFC 5798 section 5.1.2.1) and interface in IPV6_PKTINFO: a raw
 * socket bound to an address would hear only packets sent to it, not
 * ff02::12. Only sendto(2) / sendmsg(2): async-signal-safe. */
static ssize_t
send_pkt(int fd, const void *buf, size_t len, const struct sockaddr_storage *dst, socklen_t dlen,
         const struct in6_pktinfo *src6)
{
    if (dst->ss_family != AF_INET6)
        return sendto(fd, buf, len, 0, (const struct sockaddr *)dst, dlen);
    union {
        struct cmsghdr h;
        uint8_t b[CMSG_SPACE(sizeof(struct in6_pktinfo))];
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr m = {.msg_name = (void *)dst,
                       .msg_namelen = dlen,
                       .msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.b,
                       .msg_controllen = sizeof(ctl.b)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(*src6));
    memcpy(CMSG_DATA(c), src6, sizeof(*src6));
    return sendmsg(fd, &m, 0);
}

/* Read by the signal handler; written by the control thread. */
static _Atomic(struct crash_slot *) crash_slots[CRASH_SLOTS];

/* SIGSEGV, SIGBUS, SIGABRT (any thread): send every armed instance's
 * priority 0 so the backup takes over after Skew_Time, then die of the same
 * signal. Only sendto(2), raise(3) and lock-free atomics: all
 * async-signal-safe. SA_RESETHAND has restored the default action, and the
 * signal is blocked until we return, so raise() takes effect right after. */
static void
on_fatal_signal(int sig)
{
    int saved = errno;
    for (size_t i = 0; i < CRASH_SLOTS; i++) {
        struct crash_slot *s = atomic_load_explicit(&crash_slots[i], memory_order_acquire);
        if (!s || !atomic_load_explicit(&s->armed, memory_order_acquire))
            continue;
        for (int k = 0; k < s->npkts; k++)
            (void)send_pkt(s->fd, s->pkt[k], s->len, &s->dst[k], s->dlen, &s->src6);
        /* And the addresses go, or this host would keep answering ARP for
         * them next to the new master until it runs again. */
        if (s->nlfd >= 0 && s->nl_len > 0) {
            struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
            (void)sendto(s->nlfd, s->nl, s->nl_len, 0, (const struct sockaddr *)&kernel,
                         sizeof(kernel));
        }
    }
    errno = saved;
    raise(sig);
}

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGABRT};
#define NFATAL (sizeof(fatal_signals) / sizeof(fatal_signals[0]))

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

struct notify_child {
    ev_child w;
    struct vrrp *v;
    char *what;
    struct notify_child *next;
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
    struct sigaction old_act[NFATAL];
    stack_t old_stack;
    void *altstack;
};

/* See the file comment: the single module pointer, control thread only. */
static struct vrrp *vrrp_state;

static uint64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static const char *
addr_text(const struct vrrp_inst *in, const uint8_t *a, char *buf, size_t size)
{
    return inet_ntop(in->family, a, buf, (socklen_t)size) ? buf : "?";
}

/* ---- netlink: virtual addresses ---- */

/* One RTM_NEWADDR / RTM_DELADDR and its acknowledgement. rtnetlink handles
 * a request inside sendmsg(), so the answer is already queued when we read
 * it; the socket's receive timeout only guards against the impossible. */
static struct nlmsghdr *
nl_addr_msg(void *buf, int cmd, uint32_t seq, int ifindex, const struct conf_cidr *c)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (uint16_t)cmd;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    if (cmd == RTM_NEWADDR)
        nlh->nlmsg_flags |= NLM_F_CREATE | NLM_F_EXCL;
    nlh->nlmsg_seq = seq;
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
    ifa->ifa_family = (uint8_t)c->family;
    ifa->ifa_prefixlen = c->prefix;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = (unsigned)ifindex;
    size_t alen = c->family == AF_INET6 ? 16 : 4;
    mnl_attr_put(nlh, IFA_LOCAL, alen, c->addr);
    mnl_attr_put(nlh, IFA_ADDRESS, alen, c->addr);
    if (c->family == AF_INET6 && cmd == RTM_NEWADDR) {
        /* No duplicate address detection: a tentative address would not
         * answer for a second or more (keepalived does the same). */
        ifa->ifa_flags = IFA_F_NODAD;
        mnl_attr_put_u32(nlh, IFA_FLAGS, IFA_F_NODAD);
    }
    return nlh;
}

static int
nl_addr(struct vrrp *v, int cmd, int ifindex, const struct conf_cidr *c)
{
    char buf[NL_BUF];
    struct nlmsghdr *nlh = nl_addr_msg(buf, cmd, ++v->nl_seq, ifindex, c);
    if (mnl_socket_sendto(v->nl, nlh, nlh->nlmsg_len) < 0)
        return -errno;
    ssize_t n = mnl_socket_recvfrom(v->nl, buf, sizeof(buf));
    if (n < 0)
        return -errno;
    if (mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, mnl_socket_get_portid(v->nl), NULL, NULL) < 0)
        return -errno;
    return 0;
}

static void
vips_add(struct vrrp_inst *in)
{
    for (size_t i = 0; i < in->nvips; i++) {
        int r = nl_addr(in->v, RTM_NEWADDR, in->ifindex, &in->vips[i]);
        if (r < 0 && r != -EEXIST) {
            in->c.netlink_errors++;
            lb_err("vrrp %s: cannot add %s on %s: %s", in->name, in->vips[i].text, in->ifname,
                   strerror(-r));
        }
    }
    in->vips_on = true;
}

static void
vips_del(struct vrrp_inst *in, bool quiet)
{
    for (size_t i = 0; i < in->nvips; i++) {
        int r = nl_addr(in->v, RTM_DELADDR, in->ifindex, &in->vips[i]);
        if (r < 0 && r != -EADDRNOTAVAIL && r != -ENOENT && r != -ENODEV && !quiet) {
            in->c.netlink_errors++;
            lb_err("vrrp %s: cannot remove %s from %s: %s", in->name, in->vips[i].text, in->ifname,
                   strerror(-r));
        }
    }
    in->vips_on = false;
}

/* Start-up: an earlier run that crashed (or was killed with -9) left its
 * addresses configured, and this host would go on answering ARP for them
 * while another one is master. */
static void
vips_remove_stale(struct vrrp_inst *in)
{
    for (size_t i = 0; i < in->nvips; i++) {
        if (nl_addr(in->v, RTM_DELADDR, in->ifindex, &in->vips[i]) == 0)
            lb_warn("vrrp %s: removed %s from %s, left behind by an earlier run", in->name,
                    in->vips[i].text, in->ifname);
    }
}

/* ---- sending ---- */

/* Encodes priority prio for destination dst into buf (IPv4: header
 * included; IPv6: the kernel writes it). Returns the length, or 0. */
static size_t
build_advert(struct vrrp_inst *in, uint8_t prio, const uint8_t *dst, uint8_t *buf, size_t size)
{
    struct vrrp_adv a = {.version = in->version,
                         .vrid = in->vrid,
                         .priority = prio,
                         .naddrs = (uint8_t)in->nvips,
                         .family = in->family,
                         .interval_ms = in->interval_ms,
                         .addrs = in->vip_bytes};
    if (in->family == AF_INET6) {
        ssize_t n = vrrp_adv_encode(&a, in->primary, dst, true, buf, size);
        return n < 0 ? 0 : (size_t)n;
    }
    if (size < VRRP_IPV4_HDR_LEN)
        return 0;
    ssize_t n = vrrp_adv_encode(&a, in->primary, dst, in->pseudo, buf + VRRP_IPV4_HDR_LEN,
                                size - VRRP_IPV4_HDR_LEN);
    if (n < 0)
        return 0;
    /* The kernel fills in the id when it is 0; a counter matches what
     * keepalived puts on the wire and helps reading captures. */
    vrrp_ip4_build(buf, in->primary, dst, VRRP_TTL, ++in->ip_id, (size_t)n);
    return VRRP_IPV4_HDR_LEN + (size_t)n;
}

/* The destinations: 224.0.0.18 / ff02::12, or every unicast peer. */
static size_t
destinations(const struct vrrp_inst *in, uint8_t (*out)[16], size_t max)
{
    if (in->npeers == 0) {
        memcpy(out[0], in->family == AF_INET6 ? VRRP_MCAST6 : VRRP_MCAST4, in->alen);
        return 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < in->npeers && n < max; i++)
        memcpy(out[n++], in->peers[i], in->alen);
    return n;
}

/* The socket address of dst (4 or 16 bytes as in->family). */
static socklen_t
dest_sockaddr(const struct vrrp_inst *in, const uint8_t *dst, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (in->family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, dst, 16);
        s6->sin6_scope_id = (uint32_t)in->ifindex;
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, dst, 4);
    return sizeof(*s4);
}

static struct in6_pktinfo
src_info(const struct vrrp_inst *in)
{
    struct in6_pktinfo pi = {.ipi6_ifindex = (unsigned)in->ifindex};
    if (in->family == AF_INET6)
        memcpy(&pi.ipi6_addr, in->primary, 16);
    return pi;
}

static void
send_advert(struct vrrp_inst *in, uint8_t prio)
{
    uint8_t buf[VRRP_IPV4_HDR_LEN + VRRP_MAX_PKT];
    uint8_t dsts[256][16];
    size_t nd = destinations(in, dsts, 256);
    struct in6_pktinfo pi = src_info(in);
    for (size_t i = 0; i < nd; i++) {
        size_t len = build_advert(in, prio, dsts[i], buf, sizeof(buf));
        struct sockaddr_storage sa;
        socklen_t salen = dest_sockaddr(in, dsts[i], &sa);
        if (len == 0 || send_pkt(in->fd, buf, len, &sa, salen, &pi) < 0) {
            if (in->c.send_errors++ == 0)
                lb_err("vrrp %s: cannot send advertisement: %s", in->name,
                       len == 0 ? "encoding failed" : strerror(errno));
            continue;
        }
        in->c.adverts_sent++;
        if (prio == 0)
            in->c.prio0_sent++;
    }
}

/* IPv6: one unsolicited Neighbor Advertisement for virtual IP k (RFC 5798
 * section 6.4.2, RFC 4861 section 7.2.6): to all-nodes, hop limit 255,
 * Override set, Solicited clear, the interface's MAC as target link-layer
 * address. Router stays clear: tern is a host that serves the address, not
 * a router. The kernel computes the ICMPv6 checksum. */
static void
send_na(struct vrrp_inst *in, size_t k)
{
    struct {
        struct nd_neighbor_advert na;
        uint8_t opt[8];
    } m;
    memset(&m, 0, sizeof(m));
    m.na.nd_na_type = ND_NEIGHBOR_ADVERT;
    m.na.nd_na_flags_reserved = ND_NA_FLAG_OVERRIDE;
    memcpy(&m.na.nd_na_target, in->vips[k].addr, 16);
    m.opt[0] = ND_OPT_TARGET_LINKADDR;
    m.opt[1] = 1; /* units of 8 bytes */
    memcpy(m.opt + 2, in->mac, 6);
    struct sockaddr_storage sa;
    socklen_t salen = dest_sockaddr(in, ALL_NODES6, &sa);
    struct in6_pktinfo pi = src_info(in);
    if (send_pkt(in->pfd, &m, sizeof(m), &sa, salen, &pi) < 0)
        in->c.send_errors++;
    else
        in->c.garps_sent++;
}

/* One gratuitous ARP (IPv6: unsolicited NA) for virtual IP k. */
static void
send_garp(struct vrrp_inst *in, size_t k)
{
    if (in->family == AF_INET6) {
        send_na(in, k);
        return;
    }
    struct sockaddr_ll sll = {.sll_family = AF_PACKET,
                              .sll_protocol = htons(ETH_P_ARP),
                              .sll_ifindex = in->ifindex,
                              .sll_halen = 6};
    memset(sll.sll_addr, 0xff, 6);
    uint8_t frame[VRRP_GARP_LEN];
    vrrp_garp_build(frame, in->mac, in->vips[k].addr);
    if (sendto(in->pfd, frame, sizeof(frame), 0, (struct sockaddr *)&sll, sizeof(sll)) < 0)
        in->c.send_errors++;
    else
        in->c.garps_sent++;
}

static void
send_garps(struct vrrp_inst *in, unsigned repeat)
{
    for (unsigned r = 0; r < repeat; r++)
        for (size_t i = 0; i < in->nvips; i++)
            send_garp(in, i);
}

/* ---- crash slots ---- */

static void
crash_arm(struct vrrp_inst *in)
{
    if (in->slot < 0)
        return;
    struct crash_slot *s = atomic_load(&crash_slots[in->slot]);
    if (!s)
        return;
    /* Disarmed while the bytes change, so a handler never reads half a
     * packet. */
    atomic_store(&s->armed, 0);
    uint8_t dsts[CRASH_MAX_PKTS][16];
    size_t nd = destinations(in, dsts, CRASH_MAX_PKTS);
    s->npkts = 0;
    s->src6 = src_info(in);
    for (size_t i = 0; i < nd; i++) {
        size_t len = build_advert(in, 0, dsts[i], s->pkt[i], sizeof(s->pkt[i]));
        if (len == 0)
            return;
        s->len = len;
        s->dlen = dest_sockaddr(in, dsts[i], &s->dst[i]);
        s->npkts = (int)i + 1;
    }
    s->fd = in->fd;
    /* The deletions, without NLM_F_ACK: nobody will read the answers. */
    s->nl_len = 0;
    s->nlfd = in->v->nl ? mnl_socket_get_fd(in->v->nl) : -1;
    for (size_t i = 0; i < in->nvips && i < CRASH_MAX_DEL; i++) {
        struct nlmsghdr *nlh =
            nl_addr_msg(s->nl + s->nl_len, RTM_DELADDR, 0, in->ifindex, &in->vips[i]);
        nlh->nlmsg_flags = NLM_F_REQUEST;
        s->nl_len += NLMSG_ALIGN(nlh->nlmsg_len);
    }
    atomic_store_explicit(&s->armed, 1, memory_order_release);
}

static void
crash_disarm(struct vrrp_inst *in)
{
    if (in->slot < 0)
        return;
    struct crash_slot *s = atomic_load(&crash_slots[in->slot]);
    if (s)
        atomic_store(&s->armed, 0);
}

static int
crash_slot_new(void)
{
    for (int i = 0; i < CRASH_SLOTS; i++) {
        if (atomic_load(&crash_slots[i]))
            continue;
        struct crash_slot *s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->fd = s->nlfd = -1;
        atomic_store(&crash_slots[i], s);
        return i;
    }
    return -1;
}

/* Called at stop, after the slot was disarmed. A fatal signal in another
 * thread in the instant between the load and the free could still read the
 * slot: the process is exiting either way, and the cost of closing that
 * window (never freeing) would be a leak report on every sanitizer run. */
static void
crash_slot_free(int i)
{
    if (i < 0)
        return;
    struct crash_slot *s = atomic_exchange(&crash_slots[i], NULL);
    free(s);
}

static void
fatal_handlers_install(struct vrrp *v)
{
    if (v->handlers_on)
        return;
    /* An alternate stack, so that a stack overflow on the control thread
     * still reaches the handler. Other threads run it on their own stack. */
    v->altstack = malloc(ALTSTACK_SIZE);
    if (v->altstack) {
        stack_t ss = {.ss_sp = v->altstack, .ss_size = ALTSTACK_SIZE};
        if (sigaltstack(&ss, &v->old_stack) < 0) {
            free(v->altstack);
            v->altstack = NULL;
        }
    }
    struct sigaction sa = {.sa_handler = on_fatal_signal, .sa_flags = SA_RESETHAND | SA_ONSTACK};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatal_signals[i], &sa, &v->old_act[i]);
    v->handlers_on = true;
}

static void
fatal_handlers_remove(struct vrrp *v)
{
    if (!v->handlers_on)
        return;
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatal_signals[i], &v->old_act[i], NULL);
    if (v->altstack) {
        stack_t off = {.ss_flags = SS_DISABLE};
        sigaltstack(v->old_stack.ss_sp ? &v->old_stack : &off, NULL);
        free(v->altstack);
        v->altstack = NULL;
    }
    v->handlers_on = false;
}

/* ---- notify ---- */

static void
on_notify_exit(struct ev_loop *loop, ev_child *w, int revents)
{
    struct notify_child *ch = (struct notify_child *)w;
    struct vrrp *v = ch->v;
    ev_child_stop(loop, w);
    if (!WIFEXITED(w->rstatus) || WEXITSTATUS(w->rstatus) != 0) {
        lb_warn("vrrp: notify %s: %s %d", ch->what,
                WIFEXITED(w->rstatus) ? "exit status" : "killed by signal",
                WIFEXITED(w->rstatus) ? WEXITSTATUS(w->rstatus) : WTERMSIG(w->rstatus));
    }
    for (struct notify_child **p = &v->children; *p; p = &(*p)->next) {
        if (*p == ch) {
            *p = ch->next;
            break;
        }
    }
    free(ch->what);
    free(ch);
}

/* Runs "notify NAME OLD NEW" without waiting for it: posix_spawn (vfork +
 * exec) costs tens of microseconds, and the exit is collected by an
 * ev_child watcher. The child gets default signal dispositions and an empty
 * mask (the daemon ignores SIGPIPE; libev may block signals). */
static void
run_notify(struct vrrp_inst *in, enum vrrp_state from, enum vrrp_state to)
{
    if (!in->notify || !*in->notify)
        return;
    char *argv[] = {in->notify, in->name, (char *)vrrp_state_name(from),
                    (char *)vrrp_state_name(to), NULL};
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    /* And ordinary scheduling (SCHED_RESET_ON_FORK does it too). */
    struct sched_param sp = {.sched_priority = 0};
    posix_spawnattr_setschedpolicy(&attr, SCHED_OTHER);
    posix_spawnattr_setschedparam(&attr, &sp);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSCHEDULER);
    pid_t pid;
    int e = posix_spawn(&pid, in->notify, NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    in->c.notify_runs++;
    if (e != 0) {
        in->c.notify_failed++;
        lb_err("vrrp %s: cannot run notify %s: %s", in->name, in->notify, strerror(e));
        return;
    }
    struct notify_child *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return; /* reaped by libev's SIGCHLD handler all the same */
    ch->v = in->v;
    char what[256];
    snprintf(what, sizeof(what), "%s %s %s %s", in->notify, in->name, vrrp_state_name(from),
             vrrp_state_name(to));
    ch->what = strdup(what);
    ev_child_init(&ch->w, on_notify_exit, pid, 0);
    ev_child_start(in->v->ctl->loop, &ch->w);
    ch->next = in->v->children;
    in->v->children = ch;
}

/* ---- timers and actions ---- */

/* The state machine's two deadlines share one timerfd, armed for the
 * nearer one: an absolute CLOCK_MONOTONIC deadline (the clock of mono_us)
 * that the kernel's high-resolution timers fire to the microsecond. An
 * ev_timer would do, but libev hands epoll_wait a timeout rounded up to the
 * millisecond: a takeover would come up to 1 ms after Master_Down_Interval
 * for no reason. */
static void
sync_timers(struct vrrp_inst *in)
{
    uint64_t next = in->fsm.adver_at;
    if (in->fsm.master_down_at && (!next || in->fsm.master_down_at < next))
        next = in->fsm.master_down_at;
    struct itimerspec its = {{0, 0}, {0, 0}};
    if (next) {
        its.it_value.tv_sec = (time_t)(next / 1000000);
        its.it_value.tv_nsec = (long)(next % 1000000) * 1000;
    }
    if (timerfd_settime(in->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        lb_err("vrrp %s: timerfd_settime: %s", in->name, strerror(errno));
}

static void
garp_refresh_update(struct vrrp_inst *in)
{
    struct ev_loop *loop = in->v->ctl->loop;
    if (in->fsm.state == VRRP_MASTER && in->garp_refresh_ms > 0) {
        if (!ev_is_active(&in->garp_t)) {
            double s = (double)in->garp_refresh_ms / 1000.0;
            ev_timer_set(&in->garp_t, s, s);
            ev_timer_start(loop, &in->garp_t);
        }
    } else {
        ev_timer_stop(loop, &in->garp_t);
    }
}

/* Carries out the state machine's actions in the order of enum
 * vrrp_action: priority 0 / advertisement first (the other router reacts
 * while we change addresses), then addresses, then the announcements. */
static void
apply(struct vrrp_inst *in, const struct vrrp_fsm_out *o, uint64_t now)
{
    unsigned a = o->actions;
    if (a & VRRP_ACT_SEND_PRIO0) {
        /* Twice: one lost packet would cost a Master_Down_Interval. */
        send_advert(in, 0);
        send_advert(in, 0);
    }
    if (a & VRRP_ACT_SEND_ADVERT)
        send_advert(in, in->fsm.priority);
    if (a & VRRP_ACT_DEL_VIPS) {
        crash_disarm(in);
        vips_del(in, false);
    }
    if (a & VRRP_ACT_ADD_VIPS) {
        vips_add(in);
        crash_arm(in);
    }
    if (a & VRRP_ACT_SEND_GARP)
        send_garps(in, in->garp_repeat);
    if (a & VRRP_ACT_TIMERS)
        sync_timers(in);
    in->c.became_master = in->fsm.became_master;
    if (a & VRRP_ACT_NOTIFY) {
        char m[INET6_ADDRSTRLEN] = "-";
        if (in->fsm.master_known && o->to == VRRP_BACKUP)
            addr_text(in, in->fsm.master_addr, m, sizeof(m));
        lb_info("vrrp %s: %s -> %s (priority %u%s%s)", in->name, vrrp_state_name(o->from),
                vrrp_state_name(o->to), in->fsm.priority, o->to == VRRP_BACKUP ? ", master " : "",
                o->to == VRRP_BACKUP ? m : "");
        garp_refresh_update(in);
        run_notify(in, o->from, o->to);
        /* Plugins (scale acts only on the master) hear it on the event bus. */
        struct tern_event ev = {
            .type = TERN_EV_VRRP_STATE,
            .name = in->name,
            .state = vrrp_state_name(o->to),
            .detail = vrrp_state_name(o->from),
            .value = (double)in->fsm.priority,
            .threshold = NAN,
        };
        lb_plugins_publish(in->v->ctl, &ev);
    }
}

/* Lateness of a deadline, for the counters: a control thread that cannot
 * keep its timers (a stalled host, a blocking call someone added) shows up
 * here before it shows up as a flap. */
static void
note_lateness(struct vrrp_inst *in, const char *which, uint64_t deadline, uint64_t now)
{
    uint64_t late = now > deadline ? now - deadline : 0;
    if (late > in->c.max_late_us)
        in->c.max_late_us = late;
    if (late > 2000) {
        in->c.late_timers++;
        lb_warn("vrrp %s: %s fired %.1f ms late (%" PRIu64 " late so far)", in->name, which,
                (double)late / 1000.0, in->c.late_timers);
    }
}

static void
on_timerfd(struct ev_loop *loop, ev_io *w, int revents)
{
    struct vrrp_inst *in = w->data;
    uint64_t expirations;
    if (read(in->tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        lb_err("vrrp %s: timerfd: %s", in->name, strerror(errno));
    uint64_t now = mono_us();
    struct vrrp_fsm_out o;
    /* RFC 5798 section 6.4.3: Adver_Timer (Master). */
    if (in->fsm.adver_at && now >= in->fsm.adver_at) {
        note_lateness(in, "Adver_Timer", in->fsm.adver_at, now);
        vrrp_fsm_adver_timer(&in->fsm, now, &o);
        apply(in, &o, now);
    }
    /* RFC 5798 section 6.4.2: Master_Down_Timer (Backup). */
    if (in->fsm.master_down_at && now >= in->fsm.master_down_at) {
        note_lateness(in, "Master_Down_Timer", in->fsm.master_down_at, now);
        vrrp_fsm_master_down(&in->fsm, now, &o);
        apply(in, &o, now);
    }
    sync_timers(in);
}

static void
on_garp_refresh(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct vrrp_inst *in = t->data;
    if (in->fsm.state == VRRP_MASTER)
        send_garps(in, 1);
}

/* ---- receiving ---- */

static void
count_drop(struct vrrp_inst *in, enum vrrp_err e, const uint8_t src[4])
{
    unsigned idx = (unsigned)e <= VRRP_ERR_COUNT ? (unsigned)e : VRRP_ERR_COUNT;
    uint64_t n;
    const char *why;
    if (idx == VRRP_ERR_COUNT) {
        n = ++in->c.bad_source;
        why = "bad_source";
    } else {
        n = ++in->c.dropped[idx];
        why = vrrp_err_name(e);
    }
    /* The first of each kind is logged, then one line per 10 s at most:
     * a foreign router in our VRID, or a flood, must be visible but must
     * not flood the log in turn. */
    uint64_t now = mono_us();
    if (n == 1 || now - in->last_drop_log[idx] >= DROP_LOG_EVERY_US) {
        in->last_drop_log[idx] = now;
        char s[INET6_ADDRSTRLEN] = "?";
        if (src)
            addr_text(in, src, s, sizeof(s));
        lb_warn("vrrp %s: dropped a packet from %s: %s (%" PRIu64 " so far)", in->name, s, why, n);
    }
}

/* One VRRP message (the IP payload) from src to dst with that TTL / hop
 * limit. */
static void
handle_adv(struct vrrp_inst *in, const uint8_t *src, const uint8_t *dst, int ttl,
           const uint8_t *payload, size_t plen, uint64_t now)
{
    /* Our own multicast does not loop back (multicast loop is off), but a
     * bridge in hairpin mode could reflect it. */
    if (memcmp(src, in->primary, in->alen) == 0)
        return;
    if (in->npeers > 0) {
        /* unicast_peers: only the configured routers are heard. */
        bool known = false;
        for (size_t i = 0; i < in->npeers && !known; i++)
            known = memcmp(in->peers[i], src, in->alen) == 0;
        if (!known) {
            count_drop(in, VRRP_ERR_COUNT, src);
            return;
        }
    }
    struct vrrp_rx rx = {.family = in->family,
                         .src = src,
                         .dst = dst,
                         .ttl = ttl,
                         .version = in->version,
                         .vrid = in->vrid,
                         .interval_ms = in->interval_ms};
    struct vrrp_adv adv;
    enum vrrp_err e = vrrp_adv_decode(payload, plen, &rx, &adv);
    if (e != VRRP_OK) {
        if (e == VRRP_ERR_INTERVAL_MISMATCH)
            in->c.interval_mismatch++;
        count_drop(in, e, src);
        return;
    }
    in->c.adverts_received++;
    in->c.csum[adv.csum]++;
    if (adv.priority == 0)
        in->c.prio0_received++;
    if (adv.interval_ms != in->interval_ms) {
        /* RFC 5798 section 6.4.2: a v3 backup adopts the master's interval;
         * counted and logged (rate-limited like drops) because it is a
         * misconfiguration all the same. */
        uint64_t n = ++in->c.interval_mismatch;
        uint64_t *last = &in->last_drop_log[VRRP_ERR_INTERVAL_MISMATCH];
        if (n == 1 || now - *last >= DROP_LOG_EVERY_US) {
            *last = now;
            char s[INET6_ADDRSTRLEN];
            lb_warn("vrrp %s: %s advertises every %u ms, we every %u ms: interval_mismatch "
                    "(%" PRIu64 " so far)",
                    in->name, addr_text(in, src, s, sizeof(s)), adv.interval_ms, in->interval_ms,
                    n);
        }
    }
    struct vrrp_fsm_out o;
    vrrp_fsm_advert(&in->fsm, now, adv.priority, src, adv.interval_ms, &o);
    apply(in, &o, now);
}

/* IPv4: the raw socket hands over the IP header too. */
static void
handle_packet4(struct vrrp_inst *in, const uint8_t *buf, size_t len, uint64_t now)
{
    struct vrrp_ip4 ip;
    enum vrrp_err e = vrrp_ip4_parse(buf, len, &ip);
    if (e != VRRP_OK) {
        count_drop(in, e, NULL);
        return;
    }
    handle_adv(in, ip.src, ip.dst, ip.ttl, ip.payload, ip.plen, now);
}

/* IPv6: the payload only; source from the address, destination and hop
 * limit from IPV6_PKTINFO and IPV6_HOPLIMIT. A missing hop limit counts as
 * 0, so it is dropped as bad_ttl. */
static ssize_t
recv6(struct vrrp_inst *in, uint8_t *buf, size_t size, uint8_t src[16], uint8_t dst[16], int *hops)
{
    struct sockaddr_in6 from;
    union {
        struct cmsghdr h;
        uint8_t b[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = size};
    struct msghdr m = {.msg_name = &from,
                       .msg_namelen = sizeof(from),
                       .msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.b,
                       .msg_controllen = sizeof(ctl.b)};
    ssize_t n = recvmsg(in->fd, &m, MSG_TRUNC);
    if (n < 0)
        return n;
    memcpy(src, &from.sin6_addr, 16);
    memset(dst, 0, 16);
    *hops = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != IPPROTO_IPV6)
            continue;
        if (c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            memcpy(dst, &pi.ipi6_addr, 16);
        } else if (c->cmsg_type == IPV6_HOPLIMIT) {
            memcpy(hops, CMSG_DATA(c), sizeof(*hops));
        }
    }
    return n;
}

static void
on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct vrrp_inst *in = w->data;
    /* Bounded: a flood of forged packets must not keep the loop here. */
    for (int i = 0; i < 64; i++) {
        uint8_t buf[VRRP_IPV4_HDR_LEN + VRRP_MAX_PKT + 64];
        uint8_t src[16], dst[16];
        int hops = 0;
        ssize_t n = in->family == AF_INET6 ? recv6(in, buf, sizeof(buf), src, dst, &hops)
                                           : recv(in->fd, buf, sizeof(buf), MSG_TRUNC);
        if (n < 0)
            return;
        if ((size_t)n > sizeof(buf)) {
            count_drop(in, VRRP_ERR_TRUNCATED, NULL);
            continue;
        }
        if (in->family == AF_INET6)
            handle_adv(in, src, dst, hops, buf, (size_t)n, mono_us());
        else
            handle_packet4(in, buf, (size_t)n, mono_us());
    }
}

/* ---- tracking ---- */

static bool
link_up(const char *ifname)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return true; /* cannot tell: do not fault on it */
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    bool up = false;
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0)
        up = (ifr.ifr_flags & IFF_UP) && (ifr.ifr_flags & IFF_RUNNING);
    close(s);
    return up;
}

/* A tracked pool fails when none of its servers can take a request. */
static bool
pool_ok(struct lb_ctl *ctl, const char *name)
{
    struct lb_pool *p = ctl->snap ? lb_pool_find(ctl->snap, name) : NULL;
    if (!p)
        return false;
    size_t n = lb_pool_nservers(p);
    for (size_t i = 0; i < n; i++)
        if (lb_server_usable(&p->servers[i]))
            return true;
    return false;
}

/* Re-evaluates tracking: pools always, links when links is true (at start
 * and on netlink link events; an ioctl per interface is too much for a
 * 10 ms poll). Tells the state machine when anything changed. */
static void
track_eval(struct vrrp_inst *in, bool links, uint64_t now)
{
    unsigned pools_failed = 0;
    for (size_t i = 0; i < in->ntrack_pools; i++) {
        bool ok = pool_ok(in->v->ctl, in->track_pools[i]);
        pools_failed += !ok;
    }
    unsigned ifs_failed = in->ifs_failed;
    bool if_down = in->if_down;
    if (links) {
        if_down = !link_up(in->ifname);
        ifs_failed = 0;
        for (size_t i = 0; i < in->ntrack_ifs; i++)
            ifs_failed += !link_up(in->track_ifs[i]);
    }
    if (pools_failed == in->pools_failed && ifs_failed == in->ifs_failed && if_down == in->if_down)
        return;
    lb_info("vrrp %s: tracking: %u of %zu pool%s without a usable server, %u of %zu interface%s "
            "down%s",
            in->name, pools_failed, in->ntrack_pools, in->ntrack_pools == 1 ? "" : "s", ifs_failed,
            in->ntrack_ifs, in->ntrack_ifs == 1 ? "" : "s", if_down ? ", own interface down" : "");
    in->pools_failed = pools_failed;
    in->ifs_failed = ifs_failed;
    in->if_down = if_down;
    struct vrrp_fsm_out o;
    vrrp_fsm_track(&in->fsm, now, pools_failed + ifs_failed, if_down, &o);
    apply(in, &o, now);
}

static void
on_track_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct vrrp *v = t->data;
    uint64_t now = mono_us();
    for (size_t i = 0; i < v->n; i++)
        if (v->inst[i]->ntrack_pools > 0)
            track_eval(v->inst[i], false, now);
}

/* A virtual IP that disappeared while we are master: someone ran `ip addr
 * del`, or a network manager rewrote the interface. keepalived leaves the
 * address gone (or leaves master state); an operator expects the master to
 * keep serving, so it goes back at once, with a gratuitous ARP, and the log
 * says so. */
static void
vip_restore(struct vrrp_inst *in, size_t k)
{
    int r = nl_addr(in->v, RTM_NEWADDR, in->ifindex, &in->vips[k]);
    if (r < 0 && r != -EEXIST) {
        in->c.netlink_errors++;
        lb_err("vrrp %s: %s was removed from %s and cannot be restored: %s", in->name,
               in->vips[k].text, in->ifname, strerror(-r));
        return;
    }
    in->c.vips_restored++;
    lb_warn("vrrp %s: %s was removed from %s by someone else while master: restored", in->name,
            in->vips[k].text, in->ifname);
    send_garp(in, k);
}

static bool
holds_vips(const struct vrrp_inst *in)
{
    return in->fsm.state == VRRP_MASTER && in->vips_on && !in->v->shut;
}

/* RTM_DELADDR of one of our addresses on one of our interfaces. */
static void
on_addr_removed(struct vrrp *v, const struct nlmsghdr *nlh)
{
    const struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
    size_t alen = ifa->ifa_family == AF_INET6 ? 16 : 4;
    if (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6)
        return;
    const uint8_t *addr = NULL;
    const struct nlattr *attr;
    mnl_attr_for_each(attr, nlh, sizeof(*ifa))
    {
        uint16_t type = mnl_attr_get_type(attr);
        if ((type == IFA_LOCAL || (type == IFA_ADDRESS && !addr)) &&
            mnl_attr_get_payload_len(attr) == alen)
            addr = mnl_attr_get_payload(attr);
    }
    if (!addr)
        return;
    for (size_t i = 0; i < v->n; i++) {
        struct vrrp_inst *in = v->inst[i];
        if (in->family != ifa->ifa_family || in->ifindex != (int)ifa->ifa_index || !holds_vips(in))
            continue;
        for (size_t k = 0; k < in->nvips; k++)
            if (memcmp(in->vips[k].addr, addr, alen) == 0)
                vip_restore(in, k);
    }
}

/* Netlink events: RTM_NEWLINK / RTM_DELLINK (some interface changed; which
 * one matters little, re-reading the few we track is cheap) and
 * RTM_DELADDR (one of our virtual IPs may have been taken away). */
static void
on_link_event(struct ev_loop *loop, ev_io *w, int revents)
{
    struct vrrp *v = w->data;
    char buf[NL_BUF];
    bool links = false, lost = false;
    for (int i = 0; i < 64; i++) {
        ssize_t n = recv(mnl_socket_get_fd(v->nl_link), buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            /* ENOBUFS: events were lost; re-reading covers it. */
            if (errno == ENOBUFS)
                links = lost = true;
            break;
        }
        const struct nlmsghdr *nlh = (const struct nlmsghdr *)buf;
        int left = (int)n;
        for (; mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) {
            if (nlh->nlmsg_type == RTM_NEWLINK || nlh->nlmsg_type == RTM_DELLINK)
                links = true;
            else if (nlh->nlmsg_type == RTM_DELADDR &&
                     nlh->nlmsg_len >= NLMSG_LENGTH(sizeof(struct ifaddrmsg)))
                on_addr_removed(v, nlh);
        }
    }
    uint64_t now = mono_us();
    for (size_t i = 0; i < v->n; i++) {
        struct vrrp_inst *in = v->inst[i];
        /* Lost events may have been a removal: put back what is missing
         * (EEXIST for the others). */
        if (lost && holds_vips(in))
            vips_add(in);
        if (links)
            track_eval(in, true, now);
    }
}

/* ---- instances ---- */

static char *
xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static char **
strv_dup(char **src, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof(*out));
    for (size_t i = 0; out && i < n; i++)
        out[i] = xstrdup(src[i]);
    return out;
}

static void
strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void
inst_free(struct vrrp_inst *in)
{
    if (!in)
        return;
    struct ev_loop *loop = in->v->ctl->loop;
    ev_io_stop(loop, &in->rx);
    ev_io_stop(loop, &in->tio);
    ev_timer_stop(loop, &in->garp_t);
    crash_disarm(in);
    crash_slot_free(in->slot);
    if (in->fd >= 0)
        close(in->fd);
    if (in->pfd >= 0)
        close(in->pfd);
    if (in->tfd >= 0)
        close(in->tfd);
    free(in->name);
    free(in->ifname);
    free(in->notify);
    for (size_t i = 0; i < in->nvips; i++)
        free(in->vips[i].text);
    free(in->vips);
    free(in->vip_bytes);
    free(in->peers);
    strv_free(in->track_pools, in->ntrack_pools);
    strv_free(in->track_ifs, in->ntrack_ifs);
    free(in);
}

/* A unicast peer's address as 4 or 16 bytes (the family was checked with
 * the configuration). */
static void
peer_bytes(const struct conf_addr *a, uint8_t out[16])
{
    memset(out, 0, 16);
    if (a->sa.ss_family == AF_INET6)
        memcpy(out, &((const struct sockaddr_in6 *)&a->sa)->sin6_addr, 16);
    else
        memcpy(out, &((const struct sockaddr_in *)&a->sa)->sin_addr, 4);
}

static struct vrrp_inst *
inst_new(struct vrrp *v, const struct conf_vrrp *cf)
{
    struct vrrp_inst *in = calloc(1, sizeof(*in));
    if (!in)
        return NULL;
    in->v = v;
    in->fd = in->pfd = in->tfd = -1;
    in->slot = -1;
    in->name = xstrdup(cf->name);
    in->ifname = xstrdup(cf->interface);
    in->notify = xstrdup(cf->notify);
    in->vrid = (uint8_t)cf->vrid;
    in->version = (uint8_t)cf->version;
    in->priority = (uint8_t)cf->priority;
    in->track_weight = (uint8_t)cf->track_weight;
    in->interval_ms = (uint32_t)cf->advert_interval;
    in->preempt = cf->preempt;
    in->preempt_delay_ms = cf->preempt_delay;
    in->accept = cf->accept;
    in->pseudo = cf->checksum_pseudo_header;
    in->garp_repeat = cf->garp_repeat ? cf->garp_repeat : 1;
    in->garp_refresh_ms = cf->garp_refresh;
    in->nvips = cf->nvirtual_ips;
    in->vips = calloc(in->nvips ? in->nvips : 1, sizeof(*in->vips));
    in->family = in->nvips > 0 ? cf->virtual_ips[0].family : AF_INET;
    in->alen = in->family == AF_INET6 ? 16 : 4;
    in->vip_bytes = calloc(in->nvips ? in->nvips : 1, in->alen);
    in->npeers = cf->nunicast_peers;
    in->peers = calloc(in->npeers ? in->npeers : 1, sizeof(*in->peers));
    in->ntrack_pools = cf->ntrack_pools;
    in->track_pools = strv_dup(cf->track_pools, cf->ntrack_pools);
    in->ntrack_ifs = cf->ntrack_interfaces;
    in->track_ifs = strv_dup(cf->track_interfaces, cf->ntrack_interfaces);
    if (!in->name || !in->ifname || !in->vips || !in->vip_bytes || !in->peers || !in->track_pools ||
        !in->track_ifs) {
        inst_free(in);
        return NULL;
    }
    for (size_t i = 0; i < in->nvips; i++) {
        in->vips[i] = cf->virtual_ips[i];
        in->vips[i].text = xstrdup(cf->virtual_ips[i].text);
        memcpy(in->vip_bytes + in->alen * i, cf->virtual_ips[i].addr, in->alen);
    }
    for (size_t i = 0; i < in->npeers; i++)
        peer_bytes(&cf->unicast_peers[i], in->peers[i]);
    ev_io_init(&in->rx, on_readable, -1, EV_READ);
    ev_io_init(&in->tio, on_timerfd, -1, EV_READ);
    ev_timer_init(&in->garp_t, on_garp_refresh, 0.0, 0.0);
    in->rx.data = in->tio.data = in->garp_t.data = in;
    return in;
}

/* Whether a running instance can stay as it is under the new settings. */
static bool
inst_same(const struct vrrp_inst *in, const struct conf_vrrp *cf)
{
    if (strcmp(in->ifname, cf->interface) != 0 || in->vrid != cf->vrid ||
        in->version != cf->version || in->priority != cf->priority ||
        in->track_weight != cf->track_weight || in->interval_ms != cf->advert_interval ||
        in->preempt != cf->preempt || in->preempt_delay_ms != cf->preempt_delay ||
        in->accept != cf->accept || in->pseudo != cf->checksum_pseudo_header ||
        in->garp_repeat != (cf->garp_repeat ? cf->garp_repeat : 1) ||
        in->garp_refresh_ms != cf->garp_refresh || in->nvips != cf->nvirtual_ips ||
        in->npeers != cf->nunicast_peers || in->ntrack_pools != cf->ntrack_pools ||
        in->ntrack_ifs != cf->ntrack_interfaces)
        return false;
    if ((in->notify == NULL) != (cf->notify == NULL) ||
        (in->notify && strcmp(in->notify, cf->notify) != 0))
        return false;
    for (size_t i = 0; i < in->nvips; i++)
        if (in->vips[i].family != cf->virtual_ips[i].family ||
            in->vips[i].prefix != cf->virtual_ips[i].prefix ||
            memcmp(in->vips[i].addr, cf->virtual_ips[i].addr, in->alen) != 0)
            return false;
    for (size_t i = 0; i < in->npeers; i++) {
        uint8_t p[16];
        peer_bytes(&cf->unicast_peers[i], p);
        if (memcmp(in->peers[i], p, 16) != 0)
            return false;
    }
    for (size_t i = 0; i < in->ntrack_pools; i++)
        if (strcmp(in->track_pools[i], cf->track_pools[i]) != 0)
            return false;
    for (size_t i = 0; i < in->ntrack_ifs; i++)
        if (strcmp(in->track_ifs[i], cf->track_interfaces[i]) != 0)
            return false;
    return true;
}

static bool
is_vip(const struct vrrp_inst *in, const void *addr)
{
    for (size_t i = 0; i < in->nvips; i++)
        if (memcmp(in->vips[i].addr, addr, in->alen) == 0)
            return true;
    return false;
}

/* The primary address: the interface's first IPv4 address that is not one
 * of our virtual ones (RFC 5798 section 5.1.1.1: the source of adverts), or
 * for IPv6 its first link-local address that is not one of them (section
 * 5.1.2.1). */
static int
find_primary(struct vrrp_inst *in)
{
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) < 0)
        return -errno;
    int r = -EADDRNOTAVAIL;
    for (struct ifaddrs *a = ifs; a; a = a->ifa_next) {
        if (!a->ifa_addr || a->ifa_addr->sa_family != in->family || strcmp(a->ifa_name, in->ifname))
            continue;
        const void *ia;
        if (in->family == AF_INET6) {
            const struct in6_addr *a6 = &((const struct sockaddr_in6 *)a->ifa_addr)->sin6_addr;
            if (!IN6_IS_ADDR_LINKLOCAL(a6))
                continue;
            ia = a6;
        } else {
            ia = &((const struct sockaddr_in *)a->ifa_addr)->sin_addr;
        }
        if (is_vip(in, ia))
            continue;
        memcpy(in->primary, ia, in->alen);
        r = 0;
        break;
    }
    freeifaddrs(ifs);
    return r;
}

/* IPv6: the VRRP socket (no header of ours: the kernel writes it, with hop
 * limit 255; we compute the checksum with its pseudo-header ourselves, so
 * bad ones are counted rather than dropped unseen), joined to ff02::12; and
 * a raw ICMPv6 socket for the unsolicited NAs. */
static int
open_sockets6(struct vrrp_inst *in)
{
    int one = 1, zero = 0, hops = VRRP_TTL, ifindex = in->ifindex;
    in->fd = socket(AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, VRRP_IPPROTO);
    if (in->fd < 0)
        return -errno;
    if (setsockopt(in->fd, SOL_SOCKET, SO_BINDTODEVICE, in->ifname,
                   (socklen_t)strlen(in->ifname) + 1) < 0 ||
        setsockopt(in->fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof(ifindex)) < 0 ||
        setsockopt(in->fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &zero, sizeof(zero)) < 0 ||
        setsockopt(in->fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops)) < 0 ||
        setsockopt(in->fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, sizeof(hops)) < 0 ||
        setsockopt(in->fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &one, sizeof(one)) < 0 ||
        setsockopt(in->fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) < 0)
        return -errno;
    if (in->npeers == 0) {
        struct ipv6_mreq join = {.ipv6mr_interface = (unsigned)in->ifindex};
        memcpy(&join.ipv6mr_multiaddr, VRRP_MCAST6, 16);
        if (setsockopt(in->fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &join, sizeof(join)) < 0)
            return -errno;
    }
    in->pfd = socket(AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMPV6);
    if (in->pfd < 0)
        return -errno;
    /* Only sends: hear nothing. */
    struct icmp6_filter none;
    ICMP6_FILTER_SETBLOCKALL(&none);
    if (setsockopt(in->pfd, IPPROTO_ICMPV6, ICMP6_FILTER, &none, sizeof(none)) < 0 ||
        setsockopt(in->pfd, SOL_SOCKET, SO_BINDTODEVICE, in->ifname,
                   (socklen_t)strlen(in->ifname) + 1) < 0 ||
        setsockopt(in->pfd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof(ifindex)) < 0 ||
        setsockopt(in->pfd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops)) < 0 ||
        setsockopt(in->pfd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &zero, sizeof(zero)) < 0)
        return -errno;
    in->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (in->tfd < 0)
        return -errno;
    return 0;
}

static int
open_sockets(struct vrrp_inst *in)
{
    if (in->family == AF_INET6)
        return open_sockets6(in);
    int one = 1, zero = 0, ttl = VRRP_TTL;
    in->fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, VRRP_IPPROTO);
    if (in->fd < 0)
        return -errno;
    /* IP_HDRINCL: the header is ours (TTL 255 per RFC 5798 section
     * 5.1.1.3, TOS 0xc0, source = primary address). */
    if (setsockopt(in->fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof(one)) < 0 ||
        setsockopt(in->fd, SOL_SOCKET, SO_BINDTODEVICE, in->ifname,
                   (socklen_t)strlen(in->ifname) + 1) < 0)
        return -errno;
    struct ip_mreqn mr = {.imr_ifindex = in->ifindex};
    memcpy(&mr.imr_address, in->primary, 4);
    if (setsockopt(in->fd, IPPROTO_IP, IP_MULTICAST_IF, &mr, sizeof(mr)) < 0 ||
        setsockopt(in->fd, IPPROTO_IP, IP_MULTICAST_LOOP, &zero, sizeof(zero)) < 0 ||
        setsockopt(in->fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl)) < 0)
        return -errno;
    if (in->npeers == 0) {
        /* RFC 5798 section 5.1.1.2: adverts go to 224.0.0.18; a raw socket
         * only hears a group the host joined on that interface. */
        struct ip_mreqn join = {.imr_ifindex = in->ifindex};
        memcpy(&join.imr_multiaddr, VRRP_MCAST4, 4);
        if (setsockopt(in->fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &join, sizeof(join)) < 0)
            return -errno;
    }
    /* Protocol 0: this socket only sends. */
    in->pfd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (in->pfd < 0)
        return -errno;
    in->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (in->tfd < 0)
        return -errno;
    return 0;
}

static int
inst_start(struct vrrp_inst *in)
{
    struct vrrp *v = in->v;
    if (in->nvips == 0) {
        lb_err("vrrp %s: no virtual_ips", in->name);
        return -1;
    }
    in->ifindex = (int)if_nametoindex(in->ifname);
    if (in->ifindex == 0) {
        lb_err("vrrp %s: interface %s: %s", in->name, in->ifname, strerror(errno));
        return -1;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", in->ifname);
    if (s < 0 || ioctl(s, SIOCGIFHWADDR, &ifr) < 0) {
        lb_err("vrrp %s: cannot read the MAC address of %s: %s", in->name, in->ifname,
               strerror(errno));
        if (s >= 0)
            close(s);
        return -1;
    }
    close(s);
    memcpy(in->mac, ifr.ifr_hwaddr.sa_data, 6);

    vips_remove_stale(in);
    int r = find_primary(in);
    if (r < 0) {
        lb_err("vrrp %s: %s has no %s address of its own to send advertisements from: %s", in->name,
               in->ifname, in->family == AF_INET6 ? "IPv6 link-local" : "IPv4", strerror(-r));
        return -1;
    }
    r = open_sockets(in);
    if (r < 0) {
        lb_err("vrrp %s: cannot open VRRP sockets on %s: %s%s", in->name, in->ifname, strerror(-r),
               r == -EPERM ? " (needs CAP_NET_RAW)" : "");
        return -1;
    }
    in->slot = crash_slot_new();
    if (in->slot < 0)
        lb_warn("vrrp %s: no crash slot: a crash will cost a Master_Down_Interval", in->name);

    struct vrrp_fsm_cfg fc = {.version = in->version,
                              .priority = in->priority,
                              .advert_interval_ms = in->interval_ms,
                              .preempt = in->preempt,
                              .preempt_delay_us = in->preempt_delay_ms * 1000,
                              .accept = in->accept,
                              .track_weight = in->track_weight,
                              .family = in->family};
    memcpy(fc.primary, in->primary, in->alen);
    vrrp_fsm_init(&in->fsm, &fc);
    ev_io_set(&in->rx, in->fd, EV_READ);
    ev_io_start(v->ctl->loop, &in->rx);
    ev_io_set(&in->tio, in->tfd, EV_READ);
    ev_io_start(v->ctl->loop, &in->tio);

    char p[INET6_ADDRSTRLEN];
    lb_info("vrrp %s: VRRPv%u VRID %u on %s from %s, priority %u, every %u ms, %s%s", in->name,
            in->version, in->vrid, in->ifname, addr_text(in, in->primary, p, sizeof(p)),
            in->priority, in->interval_ms,
            in->npeers               ? "unicast"
            : in->family == AF_INET6 ? "multicast ff02::12"
                                     : "multicast 224.0.0.18",
            in->pseudo ? "" : ", RFC 9568 checksum");
    uint64_t now = mono_us();
    /* Tracking first, so a failure known at start means Fault right away. */
    in->if_down = false;
    track_eval(in, true, now);
    struct vrrp_fsm_out o;
    vrrp_fsm_startup(&in->fsm, now, &o);
    apply(in, &o, now);
    return 0;
}

/* Graceful end of one instance: priority 0 if master, addresses removed,
 * nothing armed any more. */
static void
inst_shutdown(struct vrrp_inst *in)
{
    uint64_t now = mono_us();
    struct vrrp_fsm_out o;
    vrrp_fsm_shutdown(&in->fsm, now, &o);
    apply(in, &o, now);
    /* Whatever the state said, no address of ours stays behind. */
    if (in->vips_on)
        vips_del(in, true);
    crash_disarm(in);
    struct ev_loop *loop = in->v->ctl->loop;
    ev_io_stop(loop, &in->rx);
    ev_io_stop(loop, &in->tio);
    ev_timer_stop(loop, &in->garp_t);
}

/* ---- scheduling ---- */

/* The control thread runs VRRP. With the workers saturating every core the
 * kernel's fair scheduler let its timers fire up to 117 ms late on a 2-CPU
 * host (measured with wrk through the VIP: bench/RESULTS-vrrp.md), which is
 * a late takeover, or a missed advertisement and a flap at 10-20 ms
 * intervals. SCHED_FIFO puts it ahead of every ordinary thread the moment it
 * wakes; it sleeps in epoll almost all the time, so the workers lose
 * nothing measurable (bench/vrrp_rt_cost.sh; and the kernel's RT throttling
 * keeps 5% for others in any case). SCHED_RESET_ON_FORK: threads and processes it creates later
 * (the workers, a plugin's job pool, notify scripts) start with ordinary
 * scheduling. That is why it can be set before global.user drops root
 * (lb_vrrp_sched_early): the user then needs no right of its own. */
#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000
#endif

/* The control thread's SCHED_FIFO priority now; 0: ordinary. Control
 * thread only. */
static int rt_prio_now;

static void
sched_apply(int prio)
{
    if (prio == rt_prio_now)
        return;
    struct sched_param sp = {.sched_priority = prio};
    int policy = prio > 0 ? SCHED_FIFO : SCHED_OTHER;
    /* pid 0: the calling thread (scheduling is per thread on Linux). */
    if (sched_setscheduler(0, policy | SCHED_RESET_ON_FORK, &sp) < 0) {
        lb_warn("vrrp: cannot run the control thread %s%.0d: %s%s; VRRP timers may be late "
                "while the workers are saturated",
                prio > 0 ? "SCHED_FIFO " : "with ordinary scheduling", prio, strerror(errno),
                errno == EPERM ? " (needs root, CAP_SYS_NICE or RLIMIT_RTPRIO; "
                                 "global.vrrp_rt_priority: 0 turns this off)"
                               : "");
        return;
    }
    if (prio > 0)
        lb_info("vrrp: control thread runs SCHED_FIFO priority %d", prio);
    else if (rt_prio_now > 0)
        lb_info("vrrp: control thread back to ordinary scheduling");
    rt_prio_now = prio;
}

void
lb_vrrp_sched_early(const struct conf *c)
{
    if (c->nvrrp > 0)
        sched_apply((int)c->global.vrrp_rt_priority);
}

/* ---- module ---- */

static void
on_test_crash(struct ev_loop *loop, ev_timer *t, int revents)
{
    lb_warn("TERN_TEST_CRASH_AFTER_MS: aborting now (test hook)");
    abort();
}

static int
vrrp_open_netlink(struct vrrp *v)
{
    v->nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!v->nl || mnl_socket_bind(v->nl, 0, MNL_SOCKET_AUTOPID) < 0)
        return -errno;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(mnl_socket_get_fd(v->nl), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    v->nl_link = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (!v->nl_link ||
        mnl_socket_bind(v->nl_link, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
                        MNL_SOCKET_AUTOPID) < 0)
        return -errno;
    return 0;
}

static void
vrrp_free(struct vrrp *v)
{
    struct ev_loop *loop = v->ctl->loop;
    for (size_t i = 0; i < v->n; i++)
        inst_free(v->inst[i]);
    free(v->inst);
    ev_io_stop(loop, &v->link_io);
    ev_timer_stop(loop, &v->track_t);
    ev_timer_stop(loop, &v->crash_t);
    while (v->children) {
        struct notify_child *ch = v->children;
        v->children = ch->next;
        ev_child_stop(loop, &ch->w);
        free(ch->what);
        free(ch);
    }
    if (v->nl)
        mnl_socket_close(v->nl);
    if (v->nl_link)
        mnl_socket_close(v->nl_link);
    fatal_handlers_remove(v);
    free(v);
}

static bool
any_tracked_pools(const struct vrrp *v)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->inst[i]->ntrack_pools > 0)
            return true;
    return false;
}

static void
track_timer_update(struct vrrp *v)
{
    if (any_tracked_pools(v) && !v->shut) {
        if (!ev_is_active(&v->track_t))
            ev_timer_start(v->ctl->loop, &v->track_t);
    } else {
        ev_timer_stop(v->ctl->loop, &v->track_t);
    }
}

/* Starts one instance from cf and appends it; logs and returns -1 on
 * failure. */
static int
add_instance(struct vrrp *v, const struct conf_vrrp *cf)
{
    struct vrrp_inst **grown = realloc(v->inst, (v->n + 1) * sizeof(*grown));
    if (!grown)
        return -1;
    v->inst = grown;
    struct vrrp_inst *in = inst_new(v, cf);
    if (!in) {
        lb_err("vrrp %s: out of memory", cf->name);
        return -1;
    }
    if (inst_start(in) < 0) {
        inst_shutdown(in);
        inst_free(in);
        return -1;
    }
    v->inst[v->n++] = in;
    return 0;
}

int
lb_vrrp_start(struct lb_ctl *ctl)
{
    const struct conf *c = ctl->snap->conf;
    struct vrrp *v = calloc(1, sizeof(*v));
    if (!v)
        return -1;
    v->ctl = ctl;
    ev_io_init(&v->link_io, on_link_event, -1, EV_READ);
    ev_timer_init(&v->track_t, on_track_timer, TRACK_POLL_S, TRACK_POLL_S);
    ev_timer_init(&v->crash_t, on_test_crash, 0.0, 0.0);
    v->link_io.data = v->track_t.data = v->crash_t.data = v;
    vrrp_state = v;
    if (c->nvrrp == 0)
        return 0;

    int r = vrrp_open_netlink(v);
    if (r < 0) {
        lb_err("vrrp: cannot open netlink: %s", strerror(-r));
        goto fail;
    }
    ev_io_set(&v->link_io, mnl_socket_get_fd(v->nl_link), EV_READ);
    ev_io_start(ctl->loop, &v->link_io);
    fatal_handlers_install(v);
    sched_apply((int)c->global.vrrp_rt_priority);
    for (size_t i = 0; i < c->nvrrp; i++)
        if (add_instance(v, &c->vrrp[i]) < 0)
            goto fail;
    track_timer_update(v);

    /* Test hook: die of SIGABRT after this many ms, to exercise the fatal
     * signal path. Read only when set; never in a normal run. */
    const char *crash = getenv("TERN_TEST_CRASH_AFTER_MS");
    if (crash && *crash) {
        double ms = strtod(crash, NULL);
        lb_warn("TERN_TEST_CRASH_AFTER_MS=%s: this process will abort() (test hook)", crash);
        ev_timer_set(&v->crash_t, ms / 1000.0, 0.0);
        ev_timer_start(ctl->loop, &v->crash_t);
    }
    return 0;
fail:
    lb_vrrp_stop(ctl);
    return -1;
}

void
lb_vrrp_reloaded(struct lb_ctl *ctl)
{
    struct vrrp *v = vrrp_state;
    if (!v || v->ctl != ctl || v->shut)
        return;
    const struct conf *c = ctl->snap->conf;
    /* Stop instances that went away or changed. */
    size_t kept = 0;
    for (size_t i = 0; i < v->n; i++) {
        struct vrrp_inst *in = v->inst[i];
        const struct conf_vrrp *cf = NULL;
        for (size_t k = 0; k < c->nvrrp && !cf; k++)
            if (strcmp(c->vrrp[k].name, in->name) == 0)
                cf = &c->vrrp[k];
        if (cf && inst_same(in, cf)) {
            v->inst[kept++] = in;
            continue;
        }
        lb_info("vrrp %s: %s by the reload", in->name, cf ? "changed" : "removed");
        inst_shutdown(in);
        inst_free(in);
    }
    v->n = kept;
    if (c->nvrrp > 0 && !v->nl) {
        int r = vrrp_open_netlink(v);
        if (r < 0) {
            lb_err("vrrp: cannot open netlink: %s", strerror(-r));
            return;
        }
        ev_io_set(&v->link_io, mnl_socket_get_fd(v->nl_link), EV_READ);
        ev_io_start(ctl->loop, &v->link_io);
    }
    if (c->nvrrp > 0)
        fatal_handlers_install(v);
    sched_apply(c->nvrrp > 0 ? (int)c->global.vrrp_rt_priority : 0);
    /* Start the new and the changed ones, in configuration order. */
    for (size_t k = 0; k < c->nvrrp; k++) {
        bool running = false;
        for (size_t i = 0; i < v->n && !running; i++)
            running = strcmp(v->inst[i]->name, c->vrrp[k].name) == 0;
        if (!running)
            add_instance(v, &c->vrrp[k]);
    }
    track_timer_update(v);
}

void
lb_vrrp_shutdown(struct lb_ctl *ctl)
{
    struct vrrp *v = vrrp_state;
    if (!v || v->ctl != ctl || v->shut)
        return;
    v->shut = true;
    for (size_t i = 0; i < v->n; i++)
        inst_shutdown(v->inst[i]);
    ev_timer_stop(ctl->loop, &v->track_t);
    ev_io_stop(ctl->loop, &v->link_io);
}

void
lb_vrrp_stop(struct lb_ctl *ctl)
{
    struct vrrp *v = vrrp_state;
    if (!v || v->ctl != ctl)
        return;
    lb_vrrp_shutdown(ctl);
    /* What runs after (draining, joining the workers) needs no priority. */
    sched_apply(0);
    vrrp_state = NULL;
    vrrp_free(v);
}

/* ---- GET /api/v1/vrrp ---- */

static json_t *
counters_json(const struct vrrp_inst *in)
{
    const struct vrrp_counters *c = &in->c;
    json_t *o = json_object();
    json_object_set_new(o, "adverts_sent", json_integer((json_int_t)c->adverts_sent));
    json_object_set_new(o, "adverts_received", json_integer((json_int_t)c->adverts_received));
    /* Every drop reason by its name: bad_ttl, bad_checksum, bad_version,
     * bad_vrid, truncated, interval_mismatch (v2 drops; v3 adopted and
     * counted below), bad_type, bad_addr_count, ... */
    for (int e = 1; e < VRRP_ERR_COUNT; e++)
        json_object_set_new(o, vrrp_err_name((enum vrrp_err)e),
                            json_integer((json_int_t)c->dropped[e]));
    json_object_set_new(o, "interval_mismatch", json_integer((json_int_t)c->interval_mismatch));
    json_object_set_new(o, "bad_source", json_integer((json_int_t)c->bad_source));
    json_object_set_new(o, "became_master", json_integer((json_int_t)c->became_master));
    json_object_set_new(o, "priority0_sent", json_integer((json_int_t)c->prio0_sent));
    json_object_set_new(o, "priority0_received", json_integer((json_int_t)c->prio0_received));
    json_object_set_new(o, "checksum_pseudo_header", json_integer((json_int_t)c->csum[1]));
    json_object_set_new(o, "checksum_rfc9568", json_integer((json_int_t)c->csum[0]));
    json_object_set_new(o, "checksum_old_unicast", json_integer((json_int_t)c->csum[2]));
    json_object_set_new(o, "garps_sent", json_integer((json_int_t)c->garps_sent));
    json_object_set_new(o, "send_errors", json_integer((json_int_t)c->send_errors));
    json_object_set_new(o, "netlink_errors", json_integer((json_int_t)c->netlink_errors));
    json_object_set_new(o, "notify_runs", json_integer((json_int_t)c->notify_runs));
    json_object_set_new(o, "notify_failed", json_integer((json_int_t)c->notify_failed));
    json_object_set_new(o, "vips_restored", json_integer((json_int_t)c->vips_restored));
    json_object_set_new(o, "late_timers", json_integer((json_int_t)c->late_timers));
    json_object_set_new(o, "max_timer_late_us", json_integer((json_int_t)c->max_late_us));
    return o;
}

static json_t *
inst_json(const struct vrrp_inst *in)
{
    char buf[INET6_ADDRSTRLEN];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(in->name));
    json_object_set_new(o, "interface", json_string(in->ifname));
    json_object_set_new(o, "vrid", json_integer(in->vrid));
    json_object_set_new(o, "version", json_integer(in->version));
    json_object_set_new(o, "state", json_string(vrrp_state_name(in->fsm.state)));
    json_object_set_new(o, "priority", json_integer(in->priority));
    json_object_set_new(o, "effective_priority", json_integer(in->fsm.priority));
    json_object_set_new(o, "primary_ip", json_string(addr_text(in, in->primary, buf, sizeof(buf))));
    json_object_set_new(o, "master_ip",
                        in->fsm.master_known
                            ? json_string(addr_text(in, in->fsm.master_addr, buf, sizeof(buf)))
                            : json_null());
    json_object_set_new(o, "advert_interval_ms", json_integer(in->interval_ms));
    json_object_set_new(o, "master_advert_interval_ms",
                        json_integer((json_int_t)(in->fsm.master_adver_us / 1000)));
    json_object_set_new(o, "skew_time_us", json_integer((json_int_t)vrrp_fsm_skew_us(&in->fsm)));
    json_object_set_new(o, "master_down_interval_us",
                        json_integer((json_int_t)vrrp_fsm_master_down_us(&in->fsm)));
    json_t *vips = json_array();
    for (size_t i = 0; i < in->nvips; i++)
        json_array_append_new(vips, json_string(in->vips[i].text));
    json_object_set_new(o, "virtual_ips", vips);
    json_t *peers = json_array();
    for (size_t i = 0; i < in->npeers; i++)
        json_array_append_new(peers, json_string(addr_text(in, in->peers[i], buf, sizeof(buf))));
    json_object_set_new(o, "unicast_peers", peers);
    json_object_set_new(o, "preempt", json_boolean(in->preempt));
    json_object_set_new(o, "preempt_delay_ms", json_integer((json_int_t)in->preempt_delay_ms));
    json_object_set_new(o, "accept", json_boolean(in->accept));
    json_object_set_new(o, "checksum_pseudo_header", json_boolean(in->pseudo));
    json_object_set_new(o, "rt_priority", json_integer(rt_prio_now));
    json_t *tr = json_object();
    json_object_set_new(tr, "pools_failed", json_integer(in->pools_failed));
    json_object_set_new(tr, "interfaces_failed", json_integer(in->ifs_failed));
    json_object_set_new(tr, "interface_down", json_boolean(in->if_down));
    json_object_set_new(tr, "weight", json_integer(in->track_weight));
    json_object_set_new(o, "tracking", tr);
    json_object_set_new(o, "counters", counters_json(in));
    return o;
}

json_t *
lb_vrrp_json(struct lb_ctl *ctl)
{
    json_t *arr = json_array();
    struct vrrp *v = vrrp_state;
    for (size_t i = 0; v && v->ctl == ctl && i < v->n; i++)
        json_array_append_new(arr, inst_json(v->inst[i]));
    return json_pack("{s:o}", "instances", arr);
}
