/*
 * VRRP wire formats (see lb/vrrp_pkt.h): advertisements of RFC 5798 section
 * 5 (v3) and RFC 3768 section 5.3 (v2), the IPv4 header around them and the
 * gratuitous ARP frame. No I/O and no state, so the unit tests cover every
 * byte and every rejection.
 */
#include "lb/vrrp_pkt.h"

#include <string.h>
#include <sys/socket.h>

static const char *const err_names[VRRP_ERR_COUNT] = {
    [VRRP_OK] = "ok",
    [VRRP_ERR_TTL] = "bad_ttl",
    [VRRP_ERR_TRUNCATED] = "truncated",
    [VRRP_ERR_VERSION] = "bad_version",
    [VRRP_ERR_TYPE] = "bad_type",
    [VRRP_ERR_CHECKSUM] = "bad_checksum",
    [VRRP_ERR_VRID] = "bad_vrid",
    [VRRP_ERR_ADDR_COUNT] = "bad_addr_count",
    [VRRP_ERR_INTERVAL] = "bad_interval",
    [VRRP_ERR_AUTH] = "bad_auth",
    [VRRP_ERR_INTERVAL_MISMATCH] = "interval_mismatch",
    [VRRP_ERR_NOT_LINK_LOCAL] = "not_link_local",
    [VRRP_ERR_BAD_IP] = "bad_ip",
};

const char *
vrrp_err_name(enum vrrp_err e)
{
    if ((unsigned)e >= VRRP_ERR_COUNT)
        return "unknown";
    return err_names[e];
}

/* Adds bytes to a running one's complement sum. *odd says whether the
 * previous piece ended in the middle of a 16-bit word, so that pieces of
 * any length concatenate as one buffer would. */
static uint32_t
sum_bytes(uint32_t sum, const uint8_t *p, size_t n, bool *odd)
{
    for (size_t i = 0; i < n; i++) {
        if (*odd)
            sum += p[i];
        else
            sum += (uint32_t)p[i] << 8;
        *odd = !*odd;
    }
    return sum;
}

uint16_t
vrrp_inet_csum(const void *a, size_t alen, const void *b, size_t blen, const void *c, size_t clen)
{
    uint32_t sum = 0;
    bool odd = false;
    if (a)
        sum = sum_bytes(sum, a, alen, &odd);
    if (b)
        sum = sum_bytes(sum, b, blen, &odd);
    if (c)
        sum = sum_bytes(sum, c, clen, &odd);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static size_t
addr_len(int family)
{
    return family == AF_INET6 ? 16 : 4;
}

/* The pseudo-header: RFC 2460 section 8.1 for IPv6 (source, destination,
 * 32-bit upper-layer length, three zero bytes, next header); the IPv4 form
 * keepalived uses (source, destination, zero, protocol, 16-bit length), as
 * UDP's. Returns its length. */
static size_t
pseudo_header(uint8_t *ph, int family, const uint8_t *src, const uint8_t *dst, size_t len)
{
    if (family == AF_INET6) {
        memcpy(ph, src, 16);
        memcpy(ph + 16, dst, 16);
        ph[32] = (uint8_t)(len >> 24);
        ph[33] = (uint8_t)(len >> 16);
        ph[34] = (uint8_t)(len >> 8);
        ph[35] = (uint8_t)len;
        ph[36] = ph[37] = ph[38] = 0;
        ph[39] = VRRP_IPPROTO;
        return 40;
    }
    memcpy(ph, src, 4);
    memcpy(ph + 4, dst, 4);
    ph[8] = 0;
    ph[9] = VRRP_IPPROTO;
    ph[10] = (uint8_t)(len >> 8);
    ph[11] = (uint8_t)len;
    return 12;
}

/* Checksum of msg (its checksum field zero or not: the field is skipped as
 * if it were zero), with or without a pseudo-header. */
static uint16_t
msg_csum(const uint8_t *msg, size_t len, int family, const uint8_t *src, const uint8_t *dst,
         bool pseudo)
{
    uint8_t ph[40];
    size_t phlen = pseudo ? pseudo_header(ph, family, src, dst, len) : 0;
    static const uint8_t zero[2];
    /* Bytes 6-7 are the checksum: sum around them. */
    uint32_t sum = 0;
    bool odd = false;
    sum = sum_bytes(sum, ph, phlen, &odd);
    sum = sum_bytes(sum, msg, 6, &odd);
    sum = sum_bytes(sum, zero, 2, &odd);
    sum = sum_bytes(sum, msg + 8, len - 8, &odd);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

ssize_t
vrrp_adv_encode(const struct vrrp_adv *a, const uint8_t *src, const uint8_t *dst,
                bool pseudo_header, uint8_t *buf, size_t size)
{
    size_t alen = addr_len(a->family);
    if (a->naddrs == 0 || !a->addrs)
        return -1;
    if (a->family != AF_INET && a->family != AF_INET6)
        return -1;
    size_t len = VRRP_HDR_LEN + a->naddrs * alen;
    if (a->version == 2) {
        /* RFC 3768 section 5.3.7: Adver Int is whole seconds in 8 bits. */
        if (a->family != AF_INET || a->interval_ms % 1000 || a->interval_ms / 1000 < 1 ||
            a->interval_ms / 1000 > 255)
            return -1;
        len += VRRP_V2_AUTH_LEN;
    } else if (a->version == 3) {
        /* RFC 5798 section 5.2.7: 12 bits of centiseconds. */
        if (a->interval_ms % 10 || a->interval_ms / 10 < 1 || a->interval_ms / 10 > 4095)
            return -1;
    } else {
        return -1;
    }
    if (len > size)
        return -1;

    /* RFC 5798 section 5.2.1-5.2.2: version in the high nibble, type 1. */
    buf[0] = (uint8_t)(a->version << 4 | VRRP_TYPE_ADVERTISEMENT);
    buf[1] = a->vrid;
    buf[2] = a->priority;
    buf[3] = a->naddrs;
    if (a->version == 3) {
        /* RFC 5798 section 5.2.6: 4 reserved bits, zero on send. */
        uint16_t cs = (uint16_t)(a->interval_ms / 10);
        buf[4] = (uint8_t)(cs >> 8 & 0x0f);
        buf[5] = (uint8_t)cs;
    } else {
        buf[4] = 0; /* RFC 3768 section 5.3.6: authentication type 0, none */
        buf[5] = (uint8_t)(a->interval_ms / 1000);
    }
    buf[6] = buf[7] = 0;
    memcpy(buf + VRRP_HDR_LEN, a->addrs, a->naddrs * alen);
    if (a->version == 2)
        memset(buf + VRRP_HDR_LEN + a->naddrs * alen, 0, VRRP_V2_AUTH_LEN);

    /* RFC 5798 section 5.2.8: IPv6 always has the pseudo-header; IPv4 per
     * configuration (see the header). RFC 3768 section 5.3.8: v2 none. */
    bool pseudo = a->version == 3 && (a->family == AF_INET6 || pseudo_header);
    uint16_t c = msg_csum(buf, len, a->family, src, dst, pseudo);
    buf[6] = (uint8_t)(c >> 8);
    buf[7] = (uint8_t)c;
    return (ssize_t)len;
}

static bool
csum_ok(const uint8_t *msg, size_t len, int family, const uint8_t *src, const uint8_t *dst,
        bool pseudo)
{
    uint16_t want = (uint16_t)(msg[6] << 8 | msg[7]);
    return msg_csum(msg, len, family, src, dst, pseudo) == want;
}

enum vrrp_err
vrrp_adv_decode(const uint8_t *pkt, size_t len, const struct vrrp_rx *rx, struct vrrp_adv *out)
{
    memset(out, 0, sizeof(*out));
    /* RFC 5798 section 7.1: "MUST verify that the IPv4 TTL or IPv6 Hop Limit
     * is 255": the only thing that keeps off-link senders out. */
    if (rx->ttl != VRRP_TTL)
        return VRRP_ERR_TTL;
    if (len < VRRP_HDR_LEN)
        return VRRP_ERR_TRUNCATED;
    /* RFC 5798 section 7.1: "MUST verify the VRRP version"; section 5.2.2:
     * a packet with an unknown type MUST be discarded. */
    if (pkt[0] >> 4 != rx->version)
        return VRRP_ERR_VERSION;
    /* RFC 3768 is IPv4 only, and vrrp_adv_encode refuses v2 over IPv6: read
     * with 16-byte addresses, a v2 message would decode into an advert no v2
     * sender writes and that could not be encoded again. */
    if (rx->version == 2 && rx->family != AF_INET)
        return VRRP_ERR_VERSION;
    if ((pkt[0] & 0x0f) != VRRP_TYPE_ADVERTISEMENT)
        return VRRP_ERR_TYPE;
    size_t alen = addr_len(rx->family);
    size_t need = VRRP_HDR_LEN + (size_t)pkt[3] * alen;
    if (rx->version == 2)
        need += VRRP_V2_AUTH_LEN;
    /* RFC 5798 section 7.1: "MUST verify that the received packet contains
     * the complete VRRP packet (including fixed fields, and IPvX
     * address(es))". More is Ethernet padding or a sloppy sender: the
     * checksum covers what the count says. */
    if (len < need)
        return VRRP_ERR_TRUNCATED;
    /* RFC 5798 section 7.1: "MUST verify the VRRP checksum". Which form
     * (header comment): IPv6 and v2 have one each; v3 over IPv4 is accepted
     * in either, and with 224.0.0.18 in place of a unicast destination. */
    enum vrrp_csum form;
    if (rx->version == 2) {
        if (!csum_ok(pkt, need, AF_INET, NULL, NULL, false))
            return VRRP_ERR_CHECKSUM;
        form = VRRP_CSUM_PLAIN;
    } else if (rx->family == AF_INET6) {
        if (!csum_ok(pkt, need, AF_INET6, rx->src, rx->dst, true))
            return VRRP_ERR_CHECKSUM;
        form = VRRP_CSUM_PSEUDO;
    } else {
        static const uint8_t mcast[4] = {224, 0, 0, 18};
        if (csum_ok(pkt, need, AF_INET, rx->src, rx->dst, true))
            form = VRRP_CSUM_PSEUDO;
        else if (csum_ok(pkt, need, AF_INET, NULL, NULL, false))
            form = VRRP_CSUM_PLAIN;
        else if (memcmp(rx->dst, mcast, 4) != 0 &&
                 csum_ok(pkt, need, AF_INET, rx->src, mcast, true))
            form = VRRP_CSUM_PSEUDO_MCAST;
        else
            return VRRP_ERR_CHECKSUM;
    }
    /* RFC 5798 section 7.1: "MUST verify that the VRID is configured on the
     * receiving interface". */
    if (pkt[1] != rx->vrid)
        return VRRP_ERR_VRID;
    /* RFC 9568 errata (section 7.1): an advertisement names at least one
     * address and has a non-zero interval. */
    if (pkt[3] == 0)
        return VRRP_ERR_ADDR_COUNT;
    uint32_t interval_ms;
    if (rx->version == 3) {
        interval_ms = (uint32_t)((pkt[4] & 0x0f) << 8 | pkt[5]) * 10;
    } else {
        /* RFC 3768 section 7.1: "MUST verify that the Auth Type matches the
         * locally configured authentication method": ours is 0 (none). */
        if (pkt[4] != 0)
            return VRRP_ERR_AUTH;
        interval_ms = (uint32_t)pkt[5] * 1000;
    }
    if (interval_ms == 0)
        return VRRP_ERR_INTERVAL;
    /* RFC 3768 section 7.1: "MUST verify that the Adver Interval in the
     * packet is the same as the locally configured"; v3 instead adopts the
     * master's interval (RFC 5798 section 6.4.2), which the caller counts. */
    if (rx->version == 2 && interval_ms != rx->interval_ms)
        return VRRP_ERR_INTERVAL_MISMATCH;
    /* RFC 5798 section 5.2.9: for IPv6 the first address is the virtual
     * router's link-local one (fe80::/10). */
    if (rx->family == AF_INET6 && !(pkt[8] == 0xfe && (pkt[9] & 0xc0) == 0x80))
        return VRRP_ERR_NOT_LINK_LOCAL;

    out->version = rx->version;
    out->vrid = pkt[1];
    out->priority = pkt[2];
    out->naddrs = pkt[3];
    out->family = rx->family;
    out->interval_ms = interval_ms;
    out->addrs = pkt + VRRP_HDR_LEN;
    out->csum = form;
    return VRRP_OK;
}

enum vrrp_err
vrrp_ip4_parse(const uint8_t *buf, size_t len, struct vrrp_ip4 *out)
{
    memset(out, 0, sizeof(*out));
    if (len < VRRP_IPV4_HDR_LEN)
        return VRRP_ERR_TRUNCATED;
    if (buf[0] >> 4 != 4)
        return VRRP_ERR_BAD_IP;
    size_t ihl = (size_t)(buf[0] & 0x0f) * 4;
    size_t total = (size_t)buf[2] << 8 | buf[3];
    if (ihl < VRRP_IPV4_HDR_LEN || total < ihl)
        return VRRP_ERR_BAD_IP;
    if (len < ihl || len < total)
        return VRRP_ERR_TRUNCATED;
    if (buf[9] != VRRP_IPPROTO)
        return VRRP_ERR_BAD_IP;
    out->ttl = buf[8];
    memcpy(out->src, buf + 12, 4);
    memcpy(out->dst, buf + 16, 4);
    out->payload = buf + ihl;
    out->plen = total - ihl;
    return VRRP_OK;
}

size_t
vrrp_ip4_build(uint8_t *buf, const uint8_t src[4], const uint8_t dst[4], uint8_t ttl, uint16_t id,
               size_t plen)
{
    size_t total = VRRP_IPV4_HDR_LEN + plen;
    buf[0] = 0x45;
    /* DSCP CS6 (internetwork control), what keepalived and routers use. */
    buf[1] = 0xc0;
    buf[2] = (uint8_t)(total >> 8);
    buf[3] = (uint8_t)total;
    buf[4] = (uint8_t)(id >> 8);
    buf[5] = (uint8_t)id;
    buf[6] = buf[7] = 0;
    buf[8] = ttl;
    buf[9] = VRRP_IPPROTO;
    buf[10] = buf[11] = 0;
    memcpy(buf + 12, src, 4);
    memcpy(buf + 16, dst, 4);
    uint16_t c = vrrp_inet_csum(buf, VRRP_IPV4_HDR_LEN, NULL, 0, NULL, 0);
    buf[10] = (uint8_t)(c >> 8);
    buf[11] = (uint8_t)c;
    return VRRP_IPV4_HDR_LEN;
}

size_t
vrrp_garp_build(uint8_t *buf, const uint8_t mac[6], const uint8_t ip[4])
{
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    /* Ethernet: broadcast, from the interface, ARP. */
    memcpy(buf, bcast, 6);
    memcpy(buf + 6, mac, 6);
    buf[12] = 0x08;
    buf[13] = 0x06;
    uint8_t *arp = buf + 14;
    arp[0] = 0x00; /* hardware type Ethernet */
    arp[1] = 0x01;
    arp[2] = 0x08; /* protocol IPv4 */
    arp[3] = 0x00;
    arp[4] = 6;
    arp[5] = 4;
    arp[6] = 0x00; /* request: every Linux host updates an entry it has from it */
    arp[7] = 0x01;
    memcpy(arp + 8, mac, 6);
    memcpy(arp + 14, ip, 4);
    memcpy(arp + 18, bcast, 6);
    memcpy(arp + 24, ip, 4);
    return VRRP_GARP_LEN;
}
