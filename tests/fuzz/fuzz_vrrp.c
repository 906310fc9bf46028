/*
 * libFuzzer target for the VRRP packet code (lb/vrrp_pkt.c): the IPv4 header
 * parser, the advertisement decoder (v2 and v3, IPv4 and IPv6) and, for what
 * decodes, the encoder.
 *
 * The first input byte chooses how the rest is read (see struct layout);
 * a random checksum is right once in 65536 tries, so a bit of it asks the
 * target to fix the checksum first and the fuzzer gets past that check. The
 * packet is copied into an exact-size heap block so that ASan sees any read
 * past its end.
 *
 * Invariants (abort() when broken): every result has a name; a parsed IPv4
 * payload and decoded addresses lie inside the input; a decoded
 * advertisement has the fields the receiver asked for and values the wire
 * can carry; re-encoding it gives a packet that decodes to the same fields
 * and, when the ignored bits were zero, the same bytes; the checksum of a
 * buffer does not depend on how it is split.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lb/vrrp_pkt.h"

/* data[0], the selector. */
#define SEL_V3 0x01        /* else v2 */
#define SEL_FAMILY 0x06    /* 0: an IPv4 datagram; 2: IPv4 payload; 4, 6: IPv6 payload */
#define SEL_FIX_CSUM 0x08  /* write the right checksum before decoding */
#define SEL_PSEUDO 0x10    /* with SEL_FIX_CSUM, v3 over IPv4: pseudo-header form */
#define SEL_OWN_VRID 0x20  /* the receiver's VRID is the packet's */
#define SEL_OWN_INTVL 0x40 /* v2: the receiver's interval is the packet's */
#define SEL_BAD_TTL 0x80   /* the hop limit of an IPv6 packet is 254 */

static const uint8_t mcast4[4] = {224, 0, 0, 18};

static void
check(bool ok)
{
    if (!ok)
        abort();
}

static void
check_name(enum vrrp_err e)
{
    const char *name = vrrp_err_name(e);

    check((unsigned)e < VRRP_ERR_COUNT);
    check(name != NULL && name[0] != '\0' && strcmp(name, "unknown") != 0);
}

static size_t
alen_of(int family)
{
    return family == AF_INET6 ? 16 : 4;
}

/* What the decoder requires of len: header, addresses, v2 authentication. */
static size_t
needed(const uint8_t *pkt, uint8_t version, int family)
{
    return VRRP_HDR_LEN + (size_t)pkt[3] * alen_of(family) + (version == 2 ? VRRP_V2_AUTH_LEN : 0);
}

static void
fix_csum(uint8_t *pkt, size_t len, const struct vrrp_rx *rx, bool pseudo)
{
    size_t need = needed(pkt, rx->version, rx->family);
    uint8_t ph[40];
    size_t phlen = 0;
    uint16_t c;

    if (len < need)
        return;
    pseudo = rx->version == 3 && (rx->family == AF_INET6 || pseudo);
    if (pseudo && rx->family == AF_INET6) {
        memcpy(ph, rx->src, 16);
        memcpy(ph + 16, rx->dst, 16);
        memset(ph + 32, 0, 8);
        ph[34] = (uint8_t)(need >> 8);
        ph[35] = (uint8_t)need;
        ph[39] = VRRP_IPPROTO;
        phlen = 40;
    } else if (pseudo) {
        memcpy(ph, rx->src, 4);
        memcpy(ph + 4, rx->dst, 4);
        ph[8] = 0;
        ph[9] = VRRP_IPPROTO;
        ph[10] = (uint8_t)(need >> 8);
        ph[11] = (uint8_t)need;
        phlen = 12;
    }
    pkt[6] = pkt[7] = 0;
    c = vrrp_inet_csum(ph, phlen, pkt, need, NULL, 0);
    pkt[6] = (uint8_t)(c >> 8);
    pkt[7] = (uint8_t)c;
}

static void
check_decoded(const struct vrrp_adv *a, const uint8_t *pkt, size_t len, const struct vrrp_rx *rx)
{
    size_t span = (size_t)a->naddrs * alen_of(a->family);

    check(a->version == rx->version && a->family == rx->family && a->vrid == rx->vrid);
    check(a->naddrs >= 1 && a->addrs == pkt + VRRP_HDR_LEN);
    check(VRRP_HDR_LEN + span + (a->version == 2 ? VRRP_V2_AUTH_LEN : 0) <= len);
    if (a->version == 3)
        check(a->interval_ms >= 10 && a->interval_ms <= 40950 && a->interval_ms % 10 == 0);
    else
        check(a->interval_ms == rx->interval_ms && a->family == AF_INET);
    if (a->version == 2 || a->family == AF_INET6)
        check(a->csum == (a->version == 2 ? VRRP_CSUM_PLAIN : VRRP_CSUM_PSEUDO));
    check(a->csum == VRRP_CSUM_PLAIN || a->csum == VRRP_CSUM_PSEUDO ||
          a->csum == VRRP_CSUM_PSEUDO_MCAST);
}

/* Encodes a decoded advertisement again, with the checksum form it came
 * with, and decodes the result. */
static void
round_trip(const struct vrrp_adv *a, const uint8_t *pkt, const struct vrrp_rx *rx)
{
    uint8_t out[VRRP_MAX_PKT + VRRP_V2_AUTH_LEN];
    const uint8_t *dst = a->csum == VRRP_CSUM_PSEUDO_MCAST ? mcast4 : rx->dst;
    size_t need = needed(pkt, a->version, a->family);
    struct vrrp_adv b;
    ssize_t n = vrrp_adv_encode(a, rx->src, dst, a->csum != VRRP_CSUM_PLAIN, out, sizeof(out));

    check(n > 0 && (size_t)n == need);
    check(vrrp_adv_decode(out, (size_t)n, rx, &b) == VRRP_OK);
    check(b.version == a->version && b.vrid == a->vrid && b.priority == a->priority &&
          b.naddrs == a->naddrs && b.family == a->family && b.interval_ms == a->interval_ms);
    check(memcmp(b.addrs, a->addrs, (size_t)a->naddrs * alen_of(a->family)) == 0);

    /* Bits the decoder ignores and the encoder zeroes: v3's reserved nibble,
     * v2's authentication data. Without them the bytes are the same. */
    bool zero = a->version == 3 ? (pkt[4] & 0xf0) == 0 : true;
    for (size_t i = need - VRRP_V2_AUTH_LEN; a->version == 2 && i < need; i++)
        zero = zero && pkt[i] == 0;
    if (zero)
        check(memcmp(out, pkt, need) == 0);

    /* The smallest truncation is refused as such. */
    check(vrrp_adv_decode(out, (size_t)n - 1, rx, &b) == VRRP_ERR_TRUNCATED);
}

static void
fuzz_adv(uint8_t *pkt, size_t len, uint8_t sel, struct vrrp_rx *rx)
{
    struct vrrp_adv a;
    enum vrrp_err e;

    rx->version = sel & SEL_V3 ? 3 : 2;
    rx->vrid = (sel & SEL_OWN_VRID) && len > 1 ? pkt[1] : 1;
    rx->interval_ms = (sel & SEL_OWN_INTVL) && len > 5 ? (uint32_t)pkt[5] * 1000 : 1000;
    if (len >= VRRP_HDR_LEN && (sel & SEL_FIX_CSUM))
        fix_csum(pkt, len, rx, sel & SEL_PSEUDO);
    e = vrrp_adv_decode(pkt, len, rx, &a);
    check_name(e);
    if (e != VRRP_OK) {
        check(a.addrs == NULL && a.naddrs == 0);
        return;
    }
    check(rx->ttl == VRRP_TTL);
    check_decoded(&a, pkt, len, rx);
    round_trip(&a, pkt, rx);
}

/* A raw IPv4 datagram, as read from the socket. */
static void
fuzz_ip4(uint8_t *buf, size_t len, uint8_t sel)
{
    struct vrrp_ip4 ip;
    struct vrrp_rx rx = {.family = AF_INET};
    enum vrrp_err e = vrrp_ip4_parse(buf, len, &ip);
    uint8_t hdr[VRRP_IPV4_HDR_LEN];
    struct vrrp_ip4 again;

    check_name(e);
    check(e == VRRP_OK || e == VRRP_ERR_TRUNCATED || e == VRRP_ERR_BAD_IP);
    if (e != VRRP_OK)
        return;
    check(ip.payload >= buf + VRRP_IPV4_HDR_LEN && ip.payload <= buf + len);
    check(ip.plen <= (size_t)(buf + len - ip.payload));
    check(ip.ttl >= 0 && ip.ttl <= 255);

    /* A header built from what was parsed parses back the same. */
    vrrp_ip4_build(hdr, ip.src, ip.dst, (uint8_t)ip.ttl, 0, 0);
    check(vrrp_ip4_parse(hdr, sizeof(hdr), &again) == VRRP_OK);
    check(again.ttl == ip.ttl && again.plen == 0 && memcmp(again.src, ip.src, 4) == 0 &&
          memcmp(again.dst, ip.dst, 4) == 0);
    check(vrrp_inet_csum(hdr, sizeof(hdr), NULL, 0, NULL, 0) == 0);

    rx.src = ip.src;
    rx.dst = ip.dst;
    rx.ttl = ip.ttl;
    fuzz_adv((uint8_t *)ip.payload, ip.plen, sel, &rx);
}

/* The sum of the pieces is the sum of the whole. */
static void
fuzz_csum(const uint8_t *p, size_t len, uint32_t seed)
{
    size_t a = len ? seed % (len + 1) : 0, b = len ? (seed >> 16) % (len + 1) : 0;

    if (b < a) {
        size_t t = a;
        a = b;
        b = t;
    }
    check(vrrp_inet_csum(p, len, NULL, 0, NULL, 0) ==
          vrrp_inet_csum(p, a, p + a, b - a, p + b, len - b));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;

    uint8_t sel = data[0];
    size_t len = size - 1, addrs = (sel & SEL_FAMILY) == 2 ? 8 : (sel & SEL_FAMILY) ? 32 : 0;
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data + 1, len);

    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size && i < 64; i++)
        seed = (seed ^ data[i]) * 16777619u;
    fuzz_csum(buf, len, seed);

    if (addrs == 0) {
        fuzz_ip4(buf, len, sel);
    } else if (len >= addrs) {
        /* The addresses of the IP header come first, then the payload in an
         * exact-size block of its own. */
        size_t plen = len - addrs;
        uint8_t *pkt = malloc(plen ? plen : 1);
        struct vrrp_rx rx = {
            .family = addrs == 8 ? AF_INET : AF_INET6,
            .src = buf,
            .dst = buf + addrs / 2,
            .ttl = addrs == 32 && (sel & SEL_BAD_TTL) ? VRRP_TTL - 1 : VRRP_TTL,
        };

        if (pkt != NULL) {
            memcpy(pkt, buf + addrs, plen);
            fuzz_adv(pkt, plen, sel, &rx);
            free(pkt);
        }
    }
    free(buf);
    return 0;
}
