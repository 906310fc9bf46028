/*
 * VRRP packets without sockets: encoding and checking advertisements (VRRPv3,
 * RFC 5798 section 5, for IPv4 and IPv6; VRRPv2, RFC 3768 section 5.3, IPv4
 * only, authentication type 0), the IPv4 header that carries them, and the
 * gratuitous ARP frame a new master sends. Everything here is pure: the
 * runtime (lb/vrrp.c) does the I/O, and the unit tests feed captured and
 * hand-computed bytes.
 *
 * The IPv4 checksum of VRRPv3 comes in two forms. RFC 5798 section 5.2.8 asks
 * for "a pseudo-header" without defining one for IPv4; keepalived (and
 * Wireshark, tcpdump) include the IPv4 pseudo-header (source, destination,
 * zero, protocol 112, length), Cisco, Juniper and RFC 9568 section 5.2.8 do
 * not. Debian 12's keepalived 2.2.7 accepts only its own form, so tern sends
 * it by default (checksum_pseudo_header: true) and accepts both on receive: a
 * checksum is no security mechanism, and accepting both costs nothing.
 */
#ifndef LB_VRRP_PKT_H
#define LB_VRRP_PKT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VRRP_IPPROTO 112          /* RFC 5798 section 5.1.1.3 */
#define VRRP_TTL 255              /* RFC 5798 section 5.1.1.3: sent, and required */
#define VRRP_TYPE_ADVERTISEMENT 1 /* RFC 5798 section 5.2.2: the only type */
#define VRRP_HDR_LEN 8
#define VRRP_V2_AUTH_LEN 8 /* RFC 3768 section 5.3.10 */
#define VRRP_MAX_ADDRS 255 /* Count IPvX Addr is 8 bits */
#define VRRP_IPV4_HDR_LEN 20
#define VRRP_GARP_LEN 42 /* Ethernet header 14 + ARP 28 */
/* Largest advertisement: v3 with 255 IPv6 addresses. */
#define VRRP_MAX_PKT (VRRP_HDR_LEN + VRRP_MAX_ADDRS * 16)

/* Why a received packet was dropped. The names (vrrp_err_name) are the
 * counters of GET /api/v1/vrrp. */
enum vrrp_err {
    VRRP_OK = 0,
    VRRP_ERR_TTL,               /* IP TTL / hop limit not 255 */
    VRRP_ERR_TRUNCATED,         /* shorter than the header or than its address count */
    VRRP_ERR_VERSION,           /* not the instance's version */
    VRRP_ERR_TYPE,              /* not an advertisement */
    VRRP_ERR_CHECKSUM,          /* neither checksum form matches */
    VRRP_ERR_VRID,              /* another virtual router */
    VRRP_ERR_ADDR_COUNT,        /* Count IPvX Addr is 0 */
    VRRP_ERR_INTERVAL,          /* advertisement interval 0 */
    VRRP_ERR_AUTH,              /* v2 authentication type not 0 */
    VRRP_ERR_INTERVAL_MISMATCH, /* v2 interval not ours */
    VRRP_ERR_NOT_LINK_LOCAL,    /* v3 IPv6: first address not link-local */
    VRRP_ERR_BAD_IP,            /* not an IPv4 header, or not protocol 112 */
    VRRP_ERR_COUNT
};

/* Counter name of a drop reason: "bad_ttl", "truncated", ... */
const char *vrrp_err_name(enum vrrp_err e);

/* Which checksum form an advertisement carries (VRRPv3 over IPv4). */
enum vrrp_csum {
    VRRP_CSUM_PLAIN = 0,    /* VRRP message only: v2, RFC 9568 IPv4 */
    VRRP_CSUM_PSEUDO,       /* with the IP pseudo-header: keepalived IPv4, every IPv6 */
    VRRP_CSUM_PSEUDO_MCAST, /* pseudo-header naming 224.0.0.18 although sent unicast
                             * (keepalived before 1.3.6) */
};

/* One advertisement, decoded or to encode. */
struct vrrp_adv {
    uint8_t version; /* 2 or 3 */
    uint8_t vrid;
    uint8_t priority;
    uint8_t naddrs;
    int family;           /* AF_INET or AF_INET6 */
    uint32_t interval_ms; /* v3: centiseconds x 10; v2: seconds x 1000 */
    const uint8_t *addrs; /* naddrs addresses of 4 or 16 bytes; on decode, into the packet */
    enum vrrp_csum csum;  /* on decode: the form that matched */
};

/* What the receiving instance expects, and the IP header's facts. */
struct vrrp_rx {
    int family;
    const uint8_t *src, *dst; /* the IP header's addresses: the pseudo-header */
    int ttl;                  /* the IP header's TTL / hop limit */
    uint8_t version;          /* the instance's */
    uint8_t vrid;
    uint32_t interval_ms; /* the instance's Advertisement_Interval (v2 check) */
};

/*
 * Encodes a into buf. src and dst are the IP addresses the packet will carry
 * (4 or 16 bytes as a->family): they enter the checksum of v3 over IPv6
 * always, and of v3 over IPv4 when pseudo_header is true; v2 never has one
 * (RFC 3768 section 5.3.8). Returns the length, or -1 when a field is out of
 * range (interval not representable, no address, bad version) or buf is too
 * small.
 */
ssize_t vrrp_adv_encode(const struct vrrp_adv *a, const uint8_t *src, const uint8_t *dst,
                        bool pseudo_header, uint8_t *buf, size_t size);

/*
 * Checks one received VRRP message (the IP payload) in the order of RFC 5798
 * section 7.1 and fills out. Trailing bytes beyond what the address count
 * implies are tolerated (Ethernet padding). Returns VRRP_OK or the reason.
 */
enum vrrp_err vrrp_adv_decode(const uint8_t *pkt, size_t len, const struct vrrp_rx *rx,
                              struct vrrp_adv *out);

/* An IPv4 header as read from a raw socket. */
struct vrrp_ip4 {
    uint8_t src[4], dst[4];
    int ttl;
    const uint8_t *payload; /* into the buffer */
    size_t plen;            /* from the header's total length */
};

/* Parses the IPv4 header of a datagram read from a raw IPPROTO_VRRP socket.
 * Returns VRRP_OK, VRRP_ERR_TRUNCATED or VRRP_ERR_BAD_IP. */
enum vrrp_err vrrp_ip4_parse(const uint8_t *buf, size_t len, struct vrrp_ip4 *out);

/* Writes a 20-byte IPv4 header (TOS 0xc0 as keepalived, no fragment, the
 * given TTL, protocol 112, header checksum) for a payload of plen bytes.
 * Returns VRRP_IPV4_HDR_LEN. */
size_t vrrp_ip4_build(uint8_t *buf, const uint8_t src[4], const uint8_t dst[4], uint8_t ttl,
                      uint16_t id, size_t plen);

/* Writes a gratuitous ARP (RFC 5798 section 6.4.2, as keepalived sends it:
 * broadcast request, sender and target IP both the virtual address, target
 * hardware address all ones) from mac for ip. Returns VRRP_GARP_LEN. */
size_t vrrp_garp_build(uint8_t *buf, const uint8_t mac[6], const uint8_t ip[4]);

/* RFC 1071 one's complement sum of the concatenation of up to three pieces,
 * folded and complemented: the Internet checksum. */
uint16_t vrrp_inet_csum(const void *a, size_t alen, const void *b, size_t blen, const void *c,
                        size_t clen);

#endif
