/*
 * Unit tests for the VRRP wire formats (lb/vrrp_pkt.h), table-driven.
 *
 * The good packets are real: captured with tcpdump on a test bridge from
 * Debian 12's keepalived 2.2.7 (VRRPv3 multicast and unicast, priority 0 on
 * SIGTERM, VRRPv2 with one and two addresses, its gratuitous ARP), plus
 * hand-computed ones where keepalived cannot produce them (the RFC 9568 IPv4
 * checksum without pseudo-header, the pre-1.3.6 unicast checksum, VRRPv3 over
 * IPv6); their checksums were computed with an independent Python script and
 * are checked here by a test-local RFC 1071 sum as well. Every malformation
 * RFC 5798 section 7.1 (and RFC 3768 section 7.1 for v2) names is rejected,
 * with its reason, and the checks run in the RFC's order.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* cmocka.h needs these three first; keep clang-format from sorting it up. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include "lb/vrrp_pkt.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const uint8_t A_SRC[4] = {10, 99, 0, 2};
static const uint8_t A_PEER[4] = {10, 99, 0, 3};
static const uint8_t MCAST4[4] = {224, 0, 0, 18};
static const uint8_t VIP100[4] = {10, 99, 0, 100};

/* keepalived 2.2.7, VRRPv3, VRID 51, priority 100, 100 cs, VIP 10.99.0.100,
 * from 10.99.0.2 to 224.0.0.18: checksum 0x74ac with the IPv4
 * pseudo-header. */
static const uint8_t KA_V3_MCAST[] = {0x31, 0x33, 0x64, 0x01, 0x00, 0x64,
                                      0x74, 0xac, 0x0a, 0x63, 0x00, 0x64};
/* The same advertisement as RFC 9568 section 5.2.8 wants it for IPv4 (and
 * Cisco/Juniper send it): no pseudo-header, checksum 0x5fa0. */
static const uint8_t RFC9568_V3[] = {0x31, 0x33, 0x64, 0x01, 0x00, 0x64,
                                     0x5f, 0xa0, 0x0a, 0x63, 0x00, 0x64};
/* keepalived 2.2.7 unicast_peer 10.99.0.3, priority 255, 10 cs: the
 * pseudo-header names the real destination. */
static const uint8_t KA_V3_UNICAST[] = {0x31, 0x33, 0xff, 0x01, 0x00, 0x0a,
                                        0xaf, 0xb2, 0x0a, 0x63, 0x00, 0x64};
/* The same sent by keepalived before 1.3.6: 224.0.0.18 in the pseudo-header
 * although it went to 10.99.0.3 (checksum 0xda05). */
static const uint8_t OLD_KA_V3_UNICAST[] = {0x31, 0x33, 0xff, 0x01, 0x00, 0x0a,
                                            0xda, 0x05, 0x0a, 0x63, 0x00, 0x64};
/* keepalived 2.2.7 on SIGTERM at 10 cs: priority 0 (RFC 5798 section 6.4.3). */
static const uint8_t KA_V3_PRIO0[] = {0x31, 0x33, 0x00, 0x01, 0x00, 0x0a,
                                      0xd9, 0x06, 0x0a, 0x63, 0x00, 0x64};
/* keepalived 2.2.7, VRRPv2 (its default), priority 100, 1 s, auth none. */
static const uint8_t KA_V2[] = {0x21, 0x33, 0x64, 0x01, 0x00, 0x01, 0x70, 0x03, 0x0a, 0x63,
                                0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
/* keepalived 2.2.7, VRRPv2, priority 150, two addresses. */
static const uint8_t KA_V2_TWO[] = {0x21, 0x33, 0x96, 0x02, 0x00, 0x01, 0x33, 0x3a,
                                    0x0a, 0x63, 0x00, 0x64, 0x0a, 0x63, 0x00, 0x65,
                                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
/* Hand-computed VRRPv3 over IPv6: fe80::1 to ff02::12, VRID 7, priority 200,
 * 100 cs, addresses fe80::7 (link-local first, RFC 5798 section 5.2.9) and
 * 2001:db8::7; checksum 0xdc1a over the IPv6 pseudo-header. */
static const uint8_t V6_SRC[16] = {0xfe, 0x80, [15] = 0x01};
static const uint8_t V6_DST[16] = {0xff, 0x02, [15] = 0x12};
static const uint8_t V6_ADV[] = {0x31, 0x07, 0xc8, 0x02, 0x00, 0x64, 0xdc, 0x1a, 0xfe, 0x80,
                                 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                 0x00, 0x00, 0x00, 0x07, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00,
                                 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07};

/* The IPv4 header keepalived put around KA_V3_MCAST (id 1). */
static const uint8_t KA_V3_MCAST_IP[] = {0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00,
                                         0x00, 0xff, 0x70, 0xd0, 0x35, 0x0a, 0x63,
                                         0x00, 0x02, 0xe0, 0x00, 0x00, 0x12};
/* keepalived's gratuitous ARP for 10.99.0.100 from 32:f4:2b:b7:2a:87. */
static const uint8_t KA_MAC[6] = {0x32, 0xf4, 0x2b, 0xb7, 0x2a, 0x87};
static const uint8_t KA_GARP[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x32, 0xf4, 0x2b, 0xb7, 0x2a,
                                  0x87, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
                                  0x32, 0xf4, 0x2b, 0xb7, 0x2a, 0x87, 0x0a, 0x63, 0x00, 0x64, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x63, 0x00, 0x64};

/* An RFC 1071 sum written apart from the one under test. */
static uint16_t
ref_csum(const uint8_t *pseudo, size_t plen, const uint8_t *msg, size_t mlen)
{
    uint32_t sum = 0;
    uint8_t buf[128];
    if (plen)
        memcpy(buf, pseudo, plen);
    memcpy(buf + plen, msg, mlen);
    buf[plen + 6] = buf[plen + 7] = 0;
    size_t n = plen + mlen;
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)buf[i] << 8 | buf[i + 1];
    if (n % 2)
        sum += (uint32_t)buf[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Writes the keepalived-form checksum (IPv4 pseudo-header src, dst) into
 * msg, after a test changed a field. */
static void
fix_csum4(uint8_t *msg, size_t len, const uint8_t *src, const uint8_t *dst)
{
    uint8_t ph[12];
    memcpy(ph, src, 4);
    memcpy(ph + 4, dst, 4);
    ph[8] = 0;
    ph[9] = 112;
    ph[10] = (uint8_t)(len >> 8);
    ph[11] = (uint8_t)len;
    uint16_t c = ref_csum(ph, 12, msg, len);
    msg[6] = (uint8_t)(c >> 8);
    msg[7] = (uint8_t)c;
}

static void
fix_csum_plain(uint8_t *msg, size_t len)
{
    uint16_t c = ref_csum(NULL, 0, msg, len);
    msg[6] = (uint8_t)(c >> 8);
    msg[7] = (uint8_t)c;
}

static struct vrrp_rx
rx4(uint8_t version, uint8_t vrid, uint32_t interval_ms, const uint8_t *dst)
{
    return (struct vrrp_rx){.family = AF_INET,
                            .src = A_SRC,
                            .dst = dst,
                            .ttl = 255,
                            .version = version,
                            .vrid = vrid,
                            .interval_ms = interval_ms};
}

/* ---- good packets ---- */

struct good {
    const char *name;
    const uint8_t *pkt;
    size_t len;
    int family;
    const uint8_t *src, *dst;
    uint8_t version, vrid;
    uint32_t local_interval_ms;
    uint8_t priority, naddrs;
    uint32_t interval_ms;
    enum vrrp_csum csum;
    size_t padding; /* zero bytes appended (Ethernet padding) */
};

static const struct good goods[] = {
    {"keepalived v3 multicast", KA_V3_MCAST, sizeof(KA_V3_MCAST), AF_INET, A_SRC, MCAST4, 3, 51,
     1000, 100, 1, 1000, VRRP_CSUM_PSEUDO, 0},
    {"RFC 9568 v3 IPv4 (no pseudo-header)", RFC9568_V3, sizeof(RFC9568_V3), AF_INET, A_SRC, MCAST4,
     3, 51, 1000, 100, 1, 1000, VRRP_CSUM_PLAIN, 0},
    {"keepalived v3 unicast, owner 255", KA_V3_UNICAST, sizeof(KA_V3_UNICAST), AF_INET, A_SRC,
     A_PEER, 3, 51, 100, 255, 1, 100, VRRP_CSUM_PSEUDO, 0},
    {"keepalived <1.3.6 unicast checksum", OLD_KA_V3_UNICAST, sizeof(OLD_KA_V3_UNICAST), AF_INET,
     A_SRC, A_PEER, 3, 51, 100, 255, 1, 100, VRRP_CSUM_PSEUDO_MCAST, 0},
    {"keepalived v3 priority 0", KA_V3_PRIO0, sizeof(KA_V3_PRIO0), AF_INET, A_SRC, MCAST4, 3, 51,
     100, 0, 1, 100, VRRP_CSUM_PSEUDO, 0},
    /* RFC 5798 section 6.4.2: a backup adopts the master's interval, so a
     * v3 interval other than ours is not a reason to drop. */
    {"v3 interval differs from ours", KA_V3_MCAST, sizeof(KA_V3_MCAST), AF_INET, A_SRC, MCAST4, 3,
     51, 100, 100, 1, 1000, VRRP_CSUM_PSEUDO, 0},
    {"v3 with Ethernet padding", KA_V3_MCAST, sizeof(KA_V3_MCAST), AF_INET, A_SRC, MCAST4, 3, 51,
     1000, 100, 1, 1000, VRRP_CSUM_PSEUDO, 34},
    {"keepalived v2", KA_V2, sizeof(KA_V2), AF_INET, A_SRC, MCAST4, 2, 51, 1000, 100, 1, 1000,
     VRRP_CSUM_PLAIN, 0},
    {"keepalived v2 two addresses", KA_V2_TWO, sizeof(KA_V2_TWO), AF_INET, A_SRC, MCAST4, 2, 51,
     1000, 150, 2, 1000, VRRP_CSUM_PLAIN, 0},
    {"v3 IPv6", V6_ADV, sizeof(V6_ADV), AF_INET6, V6_SRC, V6_DST, 3, 7, 1000, 200, 2, 1000,
     VRRP_CSUM_PSEUDO, 0},
};

static void
test_decode_good(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(goods); i++) {
        const struct good *g = &goods[i];
        uint8_t buf[256] = {0};
        memcpy(buf, g->pkt, g->len);
        struct vrrp_rx rx = {.family = g->family,
                             .src = g->src,
                             .dst = g->dst,
                             .ttl = 255,
                             .version = g->version,
                             .vrid = g->vrid,
                             .interval_ms = g->local_interval_ms};
        struct vrrp_adv a;
        enum vrrp_err e = vrrp_adv_decode(buf, g->len + g->padding, &rx, &a);
        if (e != VRRP_OK)
            fail_msg("%s: rejected as %s", g->name, vrrp_err_name(e));
        assert_int_equal(a.priority, g->priority);
        assert_int_equal(a.naddrs, g->naddrs);
        assert_int_equal(a.interval_ms, g->interval_ms);
        assert_int_equal(a.vrid, g->vrid);
        assert_int_equal(a.version, g->version);
        if (a.csum != g->csum)
            fail_msg("%s: checksum form %d, want %d", g->name, a.csum, g->csum);
        assert_ptr_equal(a.addrs, buf + VRRP_HDR_LEN);
    }
}

/* The checksums of the table, recomputed by the test's own RFC 1071 sum:
 * the bytes above are what the comments say they are. */
static void
test_reference_checksums(void **state)
{
    uint8_t ph[12];
    memcpy(ph, A_SRC, 4);
    memcpy(ph + 4, MCAST4, 4);
    ph[8] = 0;
    ph[9] = 112;
    ph[10] = 0;
    ph[11] = 12;
    assert_int_equal(ref_csum(ph, 12, KA_V3_MCAST, 12), 0x74ac);
    assert_int_equal(ref_csum(NULL, 0, KA_V3_MCAST, 12), 0x5fa0);
    assert_int_equal(ref_csum(NULL, 0, KA_V2, sizeof(KA_V2)), 0x7003);
    memcpy(ph + 4, A_PEER, 4);
    assert_int_equal(ref_csum(ph, 12, KA_V3_UNICAST, 12), 0xafb2);
    /* And the library's own sum agrees over a split buffer of odd pieces. */
    uint8_t whole[12];
    memcpy(whole, KA_V2, 12);
    assert_int_equal(vrrp_inet_csum(whole, 3, whole + 3, 5, whole + 8, 4),
                     vrrp_inet_csum(whole, 12, NULL, 0, NULL, 0));
}

/* ---- encoding reproduces the captured bytes ---- */

struct enc {
    const char *name;
    const uint8_t *want;
    size_t len;
    uint8_t version, vrid, priority, naddrs;
    int family;
    uint32_t interval_ms;
    const uint8_t *src, *dst;
    bool pseudo;
};

static const struct enc encs[] = {
    {"keepalived v3 multicast", KA_V3_MCAST, sizeof(KA_V3_MCAST), 3, 51, 100, 1, AF_INET, 1000,
     A_SRC, MCAST4, true},
    {"RFC 9568 form", RFC9568_V3, sizeof(RFC9568_V3), 3, 51, 100, 1, AF_INET, 1000, A_SRC, MCAST4,
     false},
    {"keepalived v3 unicast", KA_V3_UNICAST, sizeof(KA_V3_UNICAST), 3, 51, 255, 1, AF_INET, 100,
     A_SRC, A_PEER, true},
    {"keepalived priority 0", KA_V3_PRIO0, sizeof(KA_V3_PRIO0), 3, 51, 0, 1, AF_INET, 100, A_SRC,
     MCAST4, true},
    /* RFC 3768 section 5.3.8: no pseudo-header whatever the option says. */
    {"keepalived v2", KA_V2, sizeof(KA_V2), 2, 51, 100, 1, AF_INET, 1000, A_SRC, MCAST4, true},
    {"keepalived v2 two addresses", KA_V2_TWO, sizeof(KA_V2_TWO), 2, 51, 150, 2, AF_INET, 1000,
     A_SRC, MCAST4, false},
    /* RFC 5798 section 5.2.8: IPv6 always has it. */
    {"v3 IPv6", V6_ADV, sizeof(V6_ADV), 3, 7, 200, 2, AF_INET6, 1000, V6_SRC, V6_DST, false},
};

static void
test_encode(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(encs); i++) {
        const struct enc *t = &encs[i];
        struct vrrp_adv a = {.version = t->version,
                             .vrid = t->vrid,
                             .priority = t->priority,
                             .naddrs = t->naddrs,
                             .family = t->family,
                             .interval_ms = t->interval_ms,
                             .addrs = t->want + VRRP_HDR_LEN};
        uint8_t buf[VRRP_MAX_PKT];
        ssize_t n = vrrp_adv_encode(&a, t->src, t->dst, t->pseudo, buf, sizeof(buf));
        if (n != (ssize_t)t->len)
            fail_msg("%s: length %zd, want %zu", t->name, n, t->len);
        if (memcmp(buf, t->want, t->len) != 0)
            fail_msg("%s: bytes differ (checksum %02x%02x, want %02x%02x)", t->name, buf[6], buf[7],
                     t->want[6], t->want[7]);
    }
}

struct enc_bad {
    const char *name;
    uint8_t version, naddrs;
    int family;
    uint32_t interval_ms;
    size_t size;
};

static void
test_encode_rejects(void **state)
{
    static const struct enc_bad bads[] = {
        /* RFC 5798 section 5.2.7: 12 bits of centiseconds, 10 ms steps. */
        {"v3 5 ms", 3, 1, AF_INET, 5, 64},
        {"v3 15 ms", 3, 1, AF_INET, 15, 64},
        {"v3 40960 ms", 3, 1, AF_INET, 40960, 64},
        /* RFC 3768 section 5.3.7: whole seconds, 8 bits. */
        {"v2 1500 ms", 2, 1, AF_INET, 1500, 64},
        {"v2 256 s", 2, 1, AF_INET, 256000, 64},
        {"v2 IPv6", 2, 1, AF_INET6, 1000, 64},
        {"no address", 3, 0, AF_INET, 1000, 64},
        {"version 4", 4, 1, AF_INET, 1000, 64},
        {"buffer too small", 3, 2, AF_INET, 1000, 15},
    };
    uint8_t addrs[32] = {10, 0, 0, 1, 10, 0, 0, 2};
    for (size_t i = 0; i < ARRAY_LEN(bads); i++) {
        struct vrrp_adv a = {.version = bads[i].version,
                             .vrid = 1,
                             .priority = 100,
                             .naddrs = bads[i].naddrs,
                             .family = bads[i].family,
                             .interval_ms = bads[i].interval_ms,
                             .addrs = addrs};
        uint8_t buf[64];
        if (vrrp_adv_encode(&a, A_SRC, MCAST4, true, buf, bads[i].size) != -1)
            fail_msg("%s: encoded", bads[i].name);
    }
}

/* ---- every malformation rejected with its reason ---- */

enum mut {
    M_NONE,
    M_TTL,           /* ttl = arg */
    M_LEN,           /* length = arg */
    M_BYTE,          /* pkt[arg] = arg2, checksum left stale */
    M_BYTE_FIXED,    /* pkt[arg] = arg2, checksum recomputed (keepalived form) */
    M_CSUM_FLIP,     /* checksum's low byte ^= 1 */
    M_PRIO_UP_STALE, /* priority 254 without fixing the checksum: a forged takeover */
};

struct bad {
    const char *name;
    const uint8_t *pkt;
    size_t len;
    uint8_t version; /* the receiving instance's */
    uint32_t local_interval_ms;
    enum mut mut;
    int arg, arg2;
    enum vrrp_err want;
};

static const struct bad bads[] = {
    /* RFC 5798 section 7.1: TTL first, whatever else is wrong. */
    {"TTL 64", KA_V3_MCAST, 12, 3, 1000, M_TTL, 64, 0, VRRP_ERR_TTL},
    {"TTL 254", KA_V3_MCAST, 12, 3, 1000, M_TTL, 254, 0, VRRP_ERR_TTL},
    {"TTL 0", KA_V3_MCAST, 12, 3, 1000, M_TTL, 0, 0, VRRP_ERR_TTL},
    {"shorter than the header", KA_V3_MCAST, 12, 3, 1000, M_LEN, 7, 0, VRRP_ERR_TRUNCATED},
    {"empty", KA_V3_MCAST, 12, 3, 1000, M_LEN, 0, 0, VRRP_ERR_TRUNCATED},
    {"address cut short", KA_V3_MCAST, 12, 3, 1000, M_LEN, 11, 0, VRRP_ERR_TRUNCATED},
    {"count 2, one address sent", KA_V3_MCAST, 12, 3, 1000, M_BYTE_FIXED, 3, 2, VRRP_ERR_TRUNCATED},
    {"v2 without auth data", KA_V2, 12, 2, 1000, M_NONE, 0, 0, VRRP_ERR_TRUNCATED},
    /* RFC 5798 section 7.1: "MUST verify the VRRP version". */
    {"version 1", KA_V3_MCAST, 12, 3, 1000, M_BYTE_FIXED, 0, 0x11, VRRP_ERR_VERSION},
    {"v2 to a v3 instance", KA_V2, sizeof(KA_V2), 3, 1000, M_NONE, 0, 0, VRRP_ERR_VERSION},
    {"v3 to a v2 instance", KA_V3_MCAST, 12, 2, 1000, M_NONE, 0, 0, VRRP_ERR_VERSION},
    {"version 15", KA_V3_MCAST, 12, 3, 1000, M_BYTE_FIXED, 0, 0xf1, VRRP_ERR_VERSION},
    /* RFC 5798 section 5.2.2: unknown types are discarded. */
    {"type 0", KA_V3_MCAST, 12, 3, 1000, M_BYTE_FIXED, 0, 0x30, VRRP_ERR_TYPE},
    {"type 2", KA_V3_MCAST, 12, 3, 1000, M_BYTE_FIXED, 0, 0x32, VRRP_ERR_TYPE},
    /* RFC 5798 section 7.1: "MUST verify the VRRP checksum". */
    {"checksum off by one", KA_V3_MCAST, 12, 3, 1000, M_CSUM_FLIP, 0, 0, VRRP_ERR_CHECKSUM},
    {"higher priority, stale checksum", KA_V3_MCAST, 12, 3, 1000, M_PRIO_UP_STALE, 0, 0,
     VRRP_ERR_CHECKSUM},
    {"address changed, stale checksum", KA_V3_MCAST, 12, 3, 1000, M_BYTE, 11, 0x65,
     VRRP_ERR_CHECKSUM},
    {"v2 checksum off", KA_V2, sizeof(KA_V2), 2, 1000, M_CSUM_FLIP, 0, 0, VRRP_ERR_CHECKSUM},
    {"v2 with a pseudo-header checksum", KA_V2, sizeof(KA_V2), 2, 1000, M_BYTE_FIXED, 2, 100,
     VRRP_ERR_CHECKSUM},
    /* RFC 5798 section 7.1: "MUST verify that the VRID is configured". */
    {"VRID 52", KA_V3_MCAST, 12, 3, 1000, M_BYTE_FIXED, 1, 52, VRRP_ERR_VRID},
    {"VRID 0", KA_V3_MCAST, 12, 3, 1000, M_BYTE_FIXED, 1, 0, VRRP_ERR_VRID},
    /* RFC 9568 errata on section 7.1: count >= 1, interval != 0. */
    {"count 0", KA_V3_MCAST, 8, 3, 1000, M_BYTE_FIXED, 3, 0, VRRP_ERR_ADDR_COUNT},
    {"interval 0", KA_V3_MCAST, 12, 3, 1000, M_BYTE_FIXED, 5, 0, VRRP_ERR_INTERVAL},
    /* RFC 3768 section 7.1: auth type must match ours (0), and the
     * interval must be ours. */
    {"v2 auth type 1 (PASS)", KA_V2, sizeof(KA_V2), 2, 1000, M_BYTE_FIXED, 4, 1, VRRP_ERR_AUTH},
    {"v2 interval 2 s against 1 s", KA_V2, sizeof(KA_V2), 2, 1000, M_BYTE_FIXED, 5, 2,
     VRRP_ERR_INTERVAL_MISMATCH},
    {"v2 interval 1 s against 3 s", KA_V2, sizeof(KA_V2), 2, 3000, M_NONE, 0, 0,
     VRRP_ERR_INTERVAL_MISMATCH},
    /* Order (RFC 5798 section 7.1): the TTL beats a bad checksum, and the
     * checksum beats the VRID, so a damaged packet is never counted as
     * another router's. */
    {"TTL 64 and bad checksum", KA_V3_MCAST, 12, 3, 1000, M_TTL, 64, 1, VRRP_ERR_TTL},
    {"VRID 52 with a stale checksum", KA_V3_MCAST, 12, 3, 1000, M_BYTE, 1, 52, VRRP_ERR_CHECKSUM},
};

static void
test_decode_bad(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(bads); i++) {
        const struct bad *b = &bads[i];
        uint8_t buf[64] = {0};
        memcpy(buf, b->pkt, b->len > sizeof(KA_V2) ? sizeof(KA_V2) : b->len);
        size_t len = b->len;
        struct vrrp_rx rx = rx4(b->version, 51, b->local_interval_ms, MCAST4);
        switch (b->mut) {
        case M_NONE:
            break;
        case M_TTL:
            rx.ttl = b->arg;
            if (b->arg2)
                buf[7] ^= 1;
            break;
        case M_LEN:
            len = (size_t)b->arg;
            break;
        case M_BYTE:
            buf[b->arg] = (uint8_t)b->arg2;
            break;
        case M_BYTE_FIXED:
            buf[b->arg] = (uint8_t)b->arg2;
            if (b->pkt == KA_V2 && b->arg != 2)
                fix_csum_plain(buf, len);
            else
                fix_csum4(buf, len, A_SRC, MCAST4);
            break;
        case M_CSUM_FLIP:
            buf[7] ^= 1;
            break;
        case M_PRIO_UP_STALE:
            buf[2] = 254;
            break;
        }
        struct vrrp_adv a;
        enum vrrp_err e = vrrp_adv_decode(buf, len, &rx, &a);
        if (e != b->want)
            fail_msg("%s: got %s, want %s", b->name, vrrp_err_name(e), vrrp_err_name(b->want));
    }
}

static void
test_v6_not_link_local(void **state)
{
    /* RFC 5798 section 5.2.9: swap the two addresses and fix the checksum. */
    uint8_t buf[sizeof(V6_ADV)];
    memcpy(buf, V6_ADV, 8);
    memcpy(buf + 8, V6_ADV + 24, 16);
    memcpy(buf + 24, V6_ADV + 8, 16);
    /* The sum does not depend on word order, so the checksum stays valid. */
    struct vrrp_rx rx = {.family = AF_INET6,
                         .src = V6_SRC,
                         .dst = V6_DST,
                         .ttl = 255,
                         .version = 3,
                         .vrid = 7,
                         .interval_ms = 1000};
    struct vrrp_adv a;
    assert_int_equal(vrrp_adv_decode(buf, sizeof(buf), &rx, &a), VRRP_ERR_NOT_LINK_LOCAL);
    /* A wrong source address breaks the IPv6 pseudo-header checksum. */
    uint8_t other[16] = {0xfe, 0x80, [15] = 0x02};
    rx.src = other;
    assert_int_equal(vrrp_adv_decode(V6_ADV, sizeof(V6_ADV), &rx, &a), VRRP_ERR_CHECKSUM);
    /* Hop limit as TTL. */
    rx.src = V6_SRC;
    rx.ttl = 1;
    assert_int_equal(vrrp_adv_decode(V6_ADV, sizeof(V6_ADV), &rx, &a), VRRP_ERR_TTL);
}

/* VRRPv2 has no IPv6 form (RFC 3768): a well-formed v2 message with one
 * 16-byte address and a right checksum is still no advert for a receiver
 * that says v2 over IPv6, as vrrp_adv_encode refuses to write one. */
static void
test_v2_over_ipv6(void **state)
{
    uint8_t buf[VRRP_HDR_LEN + 16 + VRRP_V2_AUTH_LEN] = {0x21, 7, 100, 1, 0, 1};
    struct vrrp_rx rx = rx4(2, 7, 1000, V6_DST);
    struct vrrp_adv a = {
        .version = 2, .naddrs = 1, .family = AF_INET6, .interval_ms = 1000, .addrs = V6_ADV + 8};
    struct vrrp_adv d;
    uint8_t out[sizeof(buf)];

    rx.family = AF_INET6;
    rx.src = V6_SRC;
    memcpy(buf + VRRP_HDR_LEN, V6_ADV + 8, 16);
    fix_csum_plain(buf, sizeof(buf));
    assert_int_equal(vrrp_adv_decode(buf, sizeof(buf), &rx, &d), VRRP_ERR_VERSION);
    assert_int_equal(vrrp_adv_encode(&a, V6_SRC, V6_DST, false, out, sizeof(out)), -1);
}

/* A v3 IPv4 checksum made with some other destination than the one in the IP
 * header is rejected (only the real one and 224.0.0.18 are tried). */
static void
test_checksum_wrong_destination(void **state)
{
    static const uint8_t other[4] = {10, 99, 0, 9};
    struct vrrp_rx rx = rx4(3, 51, 100, other);
    struct vrrp_adv a;
    assert_int_equal(vrrp_adv_decode(KA_V3_UNICAST, 12, &rx, &a), VRRP_ERR_CHECKSUM);
    rx.dst = A_PEER;
    assert_int_equal(vrrp_adv_decode(KA_V3_UNICAST, 12, &rx, &a), VRRP_OK);
    /* The wrong source: the pseudo-header forms fail; nothing else matches. */
    rx.src = VIP100;
    assert_int_equal(vrrp_adv_decode(KA_V3_UNICAST, 12, &rx, &a), VRRP_ERR_CHECKSUM);
}

/* ---- IPv4 header and gratuitous ARP ---- */

static void
test_ip4_build_matches_keepalived(void **state)
{
    uint8_t buf[VRRP_IPV4_HDR_LEN];
    assert_int_equal(vrrp_ip4_build(buf, A_SRC, MCAST4, 255, 1, 12), VRRP_IPV4_HDR_LEN);
    assert_memory_equal(buf, KA_V3_MCAST_IP, sizeof(KA_V3_MCAST_IP));
}

static void
test_ip4_parse(void **state)
{
    uint8_t dgram[64];
    memcpy(dgram, KA_V3_MCAST_IP, 20);
    memcpy(dgram + 20, KA_V3_MCAST, 12);
    struct vrrp_ip4 ip;
    assert_int_equal(vrrp_ip4_parse(dgram, 32, &ip), VRRP_OK);
    assert_int_equal(ip.ttl, 255);
    assert_memory_equal(ip.src, A_SRC, 4);
    assert_memory_equal(ip.dst, MCAST4, 4);
    assert_ptr_equal(ip.payload, dgram + 20);
    assert_int_equal(ip.plen, 12);
    /* Trailing bytes beyond the total length are not payload. */
    assert_int_equal(vrrp_ip4_parse(dgram, 40, &ip), VRRP_OK);
    assert_int_equal(ip.plen, 12);

    struct {
        const char *name;
        size_t len;
        int at, value;
        enum vrrp_err want;
    } cases[] = {
        {"short header", 19, -1, 0, VRRP_ERR_TRUNCATED},
        {"total length beyond the datagram", 31, -1, 0, VRRP_ERR_TRUNCATED},
        {"IPv6 version nibble", 32, 0, 0x65, VRRP_ERR_BAD_IP},
        {"IHL 4", 32, 0, 0x44, VRRP_ERR_BAD_IP},
        {"protocol 17", 32, 9, 17, VRRP_ERR_BAD_IP},
        {"total length below IHL", 32, 3, 10, VRRP_ERR_BAD_IP},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t b[64];
        memcpy(b, dgram, 32);
        if (cases[i].at >= 0)
            b[cases[i].at] = (uint8_t)cases[i].value;
        enum vrrp_err e = vrrp_ip4_parse(b, cases[i].len, &ip);
        if (e != cases[i].want)
            fail_msg("%s: got %s", cases[i].name, vrrp_err_name(e));
    }

    /* IP options (IHL 6): the payload starts after them. */
    uint8_t opt[64] = {0x46, 0xc0, 0x00, 0x24, 0, 0, 0, 0, 0xff, 0x70, 0, 0};
    memcpy(opt + 12, A_SRC, 4);
    memcpy(opt + 16, MCAST4, 4);
    memcpy(opt + 24, KA_V3_MCAST, 12);
    assert_int_equal(vrrp_ip4_parse(opt, 36, &ip), VRRP_OK);
    assert_ptr_equal(ip.payload, opt + 24);
    assert_int_equal(ip.plen, 12);
}

static void
test_garp_matches_keepalived(void **state)
{
    uint8_t buf[VRRP_GARP_LEN];
    assert_int_equal(vrrp_garp_build(buf, KA_MAC, VIP100), VRRP_GARP_LEN);
    assert_memory_equal(buf, KA_GARP, sizeof(KA_GARP));
}

/* The drop reasons are the counter names of GET /api/v1/vrrp. */
static void
test_err_names(void **state)
{
    assert_string_equal(vrrp_err_name(VRRP_ERR_TTL), "bad_ttl");
    assert_string_equal(vrrp_err_name(VRRP_ERR_CHECKSUM), "bad_checksum");
    assert_string_equal(vrrp_err_name(VRRP_ERR_VERSION), "bad_version");
    assert_string_equal(vrrp_err_name(VRRP_ERR_VRID), "bad_vrid");
    assert_string_equal(vrrp_err_name(VRRP_ERR_TRUNCATED), "truncated");
    assert_string_equal(vrrp_err_name(VRRP_ERR_INTERVAL_MISMATCH), "interval_mismatch");
    for (int e = 0; e < VRRP_ERR_COUNT; e++)
        assert_non_null(vrrp_err_name((enum vrrp_err)e));
    assert_string_equal(vrrp_err_name(VRRP_ERR_COUNT), "unknown");
}

/* Round trip over every priority and a spread of intervals and counts. */
static void
test_round_trip(void **state)
{
    uint8_t addrs[255 * 4];
    for (size_t i = 0; i < sizeof(addrs); i++)
        addrs[i] = (uint8_t)(i * 7 + 1);
    static const uint32_t intervals[] = {10, 20, 100, 990, 1000, 40950};
    for (int pseudo = 0; pseudo < 2; pseudo++) {
        for (int prio = 0; prio <= 255; prio += 15) {
            for (size_t k = 0; k < ARRAY_LEN(intervals); k++) {
                uint8_t n = (uint8_t)(1 + (prio + k * 40) % 255);
                struct vrrp_adv a = {.version = 3,
                                     .vrid = 200,
                                     .priority = (uint8_t)prio,
                                     .naddrs = n,
                                     .family = AF_INET,
                                     .interval_ms = intervals[k],
                                     .addrs = addrs};
                uint8_t buf[VRRP_MAX_PKT];
                ssize_t len = vrrp_adv_encode(&a, A_SRC, MCAST4, pseudo, buf, sizeof(buf));
                assert_int_equal(len, 8 + 4 * n);
                struct vrrp_rx rx = rx4(3, 200, 1000, MCAST4);
                struct vrrp_adv d;
                assert_int_equal(vrrp_adv_decode(buf, (size_t)len, &rx, &d), VRRP_OK);
                assert_int_equal(d.priority, prio);
                assert_int_equal(d.naddrs, n);
                assert_int_equal(d.interval_ms, intervals[k]);
                assert_int_equal(d.csum, pseudo ? VRRP_CSUM_PSEUDO : VRRP_CSUM_PLAIN);
                assert_memory_equal(d.addrs, addrs, 4u * n);
            }
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_checksums),
        cmocka_unit_test(test_decode_good),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_decode_bad),
        cmocka_unit_test(test_v6_not_link_local),
        cmocka_unit_test(test_checksum_wrong_destination),
        cmocka_unit_test(test_v2_over_ipv6),
        cmocka_unit_test(test_ip4_build_matches_keepalived),
        cmocka_unit_test(test_ip4_parse),
        cmocka_unit_test(test_garp_matches_keepalived),
        cmocka_unit_test(test_err_names),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
