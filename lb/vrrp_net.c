/*
 * The kernel-facing network side of VRRP (see lb/vrrp.c for the runtime
 * around it): the raw sockets that send and receive VRRPv2/v3 (IPv4 with
 * our own header, IPv6 with IPV6_PKTINFO), their multicast membership,
 * gratuitous ARP and unsolicited Neighbor Advertisements, and netlink: the
 * virtual addresses added and removed, and the events (link changes,
 * RTM_DELADDR of a virtual IP) that the runtime reacts to.
 *
 * Kept apart so that the system calls and their socket options read in one
 * place, next to the RFC sections they follow; what to send and when is
 * decided by the state machine and lb/vrrp.c. vrrp_send_pkt is also called
 * from the fatal-signal handler (lb/vrrp_crash.c) and must stay
 * async-signal-safe.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <libmnl/libmnl.h>
#include <linux/if_packet.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "lb/log.h"
#include "lb/vrrp_int.h"

/* Log a given drop reason at most this often per instance. */
#define DROP_LOG_EVERY_US (10 * 1000000ULL)
/* libmnl's MNL_SOCKET_BUFFER_SIZE depends on the page size (a VLA); 8 KiB is
 * what it amounts to on every page size we run on. */
#define NL_BUF 8192

static const uint8_t VRRP_MCAST4[4] = {224, 0, 0, 18}; /* RFC 5798 section 5.1.1.2 */
/* RFC 5798 section 5.1.2.2: ff02::12. */
static const uint8_t VRRP_MCAST6[16] = {0xff, 0x02, [15] = 0x12};
/* RFC 4861 section 4.4: unsolicited advertisements go to all-nodes ff02::1. */
static const uint8_t ALL_NODES6[16] = {0xff, 0x02, [15] = 0x01};

/* ---- raw sockets: the one send primitive ---- */

/* One datagram on a raw VRRP socket. IPv6 names its source (the link-local
 * address, RFC 5798 section 5.1.2.1) and interface in IPV6_PKTINFO: a raw
 * socket bound to an address would hear only packets sent to it, not
 * ff02::12. Only sendto(2) / sendmsg(2): async-signal-safe. */
ssize_t
vrrp_send_pkt(int fd, const void *buf, size_t len, const struct sockaddr_storage *dst,
              socklen_t dlen, const struct in6_pktinfo *src6)
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

/* ---- netlink: virtual addresses ---- */

/* One RTM_NEWADDR / RTM_DELADDR and its acknowledgement. rtnetlink handles
 * a request inside sendmsg(), so the answer is already queued when we read
 * it; the socket's receive timeout only guards against the impossible. */
struct nlmsghdr *
vrrp_nl_addr_msg(void *buf, int cmd, uint32_t seq, int ifindex, const struct conf_cidr *c)
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
    struct nlmsghdr *nlh = vrrp_nl_addr_msg(buf, cmd, ++v->nl_seq, ifindex, c);
    if (mnl_socket_sendto(v->nl, nlh, nlh->nlmsg_len) < 0)
        return -errno;
    ssize_t n = mnl_socket_recvfrom(v->nl, buf, sizeof(buf));
    if (n < 0)
        return -errno;
    if (mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, mnl_socket_get_portid(v->nl), NULL, NULL) < 0)
        return -errno;
    return 0;
}

void
vrrp_vips_add(struct vrrp_inst *in)
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

void
vrrp_vips_del(struct vrrp_inst *in, bool quiet)
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
void
vrrp_vips_remove_stale(struct vrrp_inst *in)
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
size_t
vrrp_build_advert(struct vrrp_inst *in, uint8_t prio, const uint8_t *dst, uint8_t *buf, size_t size)
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

/* The vrrp_destinations: 224.0.0.18 / ff02::12, or every unicast peer. */
size_t
vrrp_destinations(const struct vrrp_inst *in, uint8_t (*out)[16], size_t max)
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
socklen_t
vrrp_dest_sockaddr(const struct vrrp_inst *in, const uint8_t *dst, struct sockaddr_storage *ss)
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

struct in6_pktinfo
vrrp_src_info(const struct vrrp_inst *in)
{
    struct in6_pktinfo pi = {.ipi6_ifindex = (unsigned)in->ifindex};
    if (in->family == AF_INET6)
        memcpy(&pi.ipi6_addr, in->primary, 16);
    return pi;
}

void
vrrp_send_advert(struct vrrp_inst *in, uint8_t prio)
{
    uint8_t buf[VRRP_IPV4_HDR_LEN + VRRP_MAX_PKT];
    uint8_t dsts[256][16];
    size_t nd = vrrp_destinations(in, dsts, 256);
    struct in6_pktinfo pi = vrrp_src_info(in);
    for (size_t i = 0; i < nd; i++) {
        size_t len = vrrp_build_advert(in, prio, dsts[i], buf, sizeof(buf));
        struct sockaddr_storage sa;
        socklen_t salen = vrrp_dest_sockaddr(in, dsts[i], &sa);
        if (len == 0 || vrrp_send_pkt(in->fd, buf, len, &sa, salen, &pi) < 0) {
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
    socklen_t salen = vrrp_dest_sockaddr(in, ALL_NODES6, &sa);
    struct in6_pktinfo pi = vrrp_src_info(in);
    if (vrrp_send_pkt(in->pfd, &m, sizeof(m), &sa, salen, &pi) < 0)
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

void
vrrp_send_garps(struct vrrp_inst *in, unsigned repeat)
{
    for (unsigned r = 0; r < repeat; r++)
        for (size_t i = 0; i < in->nvips; i++)
            send_garp(in, i);
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
    uint64_t now = vrrp_mono_us();
    if (n == 1 || now - in->last_drop_log[idx] >= DROP_LOG_EVERY_US) {
        in->last_drop_log[idx] = now;
        char s[INET6_ADDRSTRLEN] = "?";
        if (src)
            vrrp_addr_text(in, src, s, sizeof(s));
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
                    in->name, vrrp_addr_text(in, src, s, sizeof(s)), adv.interval_ms,
                    in->interval_ms, n);
        }
    }
    struct vrrp_fsm_out o;
    vrrp_fsm_advert(&in->fsm, now, adv.priority, src, adv.interval_ms, &o);
    vrrp_apply(in, &o, now);
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

void
vrrp_on_readable(struct ev_loop *loop, ev_io *w, int revents)
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
            handle_adv(in, src, dst, hops, buf, (size_t)n, vrrp_mono_us());
        else
            handle_packet4(in, buf, (size_t)n, vrrp_mono_us());
    }
}

/* ---- netlink: events ---- */

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
void
vrrp_on_link_event(struct ev_loop *loop, ev_io *w, int revents)
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
    uint64_t now = vrrp_mono_us();
    for (size_t i = 0; i < v->n; i++) {
        struct vrrp_inst *in = v->inst[i];
        /* Lost events may have been a removal: put back what is missing
         * (EEXIST for the others). */
        if (lost && holds_vips(in))
            vrrp_vips_add(in);
        if (links)
            vrrp_track_eval(in, true, now);
    }
}

/* ---- opening the sockets ---- */

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
int
vrrp_find_primary(struct vrrp_inst *in)
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
    return 0;
}

static int
open_sockets4(struct vrrp_inst *in)
{
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
    return 0;
}

int
vrrp_open_sockets(struct vrrp_inst *in)
{
    int r = in->family == AF_INET6 ? open_sockets6(in) : open_sockets4(in);
    if (r < 0)
        return r;
    in->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    return in->tfd < 0 ? -errno : 0;
}

int
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
