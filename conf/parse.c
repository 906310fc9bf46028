/*
 * Scalar parsers: durations, sizes, numbers, addresses (see parse.h).
 *
 * They are strict on purpose. A configuration value that a lenient parser
 * half-understands ("10 s", "0x1F", "10.1" taken as 10.0.0.1) is a silent
 * misconfiguration on a load balancer, so anything not in the documented
 * grammar is rejected and the schema engine says what was expected.
 */
#include "conf/parse.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
conf_parse_bool(const char *s, bool *v)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};

    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *v = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *v = false;
            return 0;
        }
    }
    return -1;
}

/* Parses a run of decimal digits at *p into v, advancing *p. */
static int
digits(const char **p, uint64_t *v)
{
    const char *s = *p;
    uint64_t x = 0;

    if (!isdigit((unsigned char)*s))
        return -1;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');

        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *p = s;
    *v = x;
    return 0;
}

int
conf_parse_uint(const char *s, uint64_t *v)
{
    uint64_t x;

    if (digits(&s, &x) < 0 || *s != '\0')
        return -1;
    *v = x;
    return 0;
}

int
conf_parse_int(const char *s, int64_t *v)
{
    bool neg = s[0] == '-';
    uint64_t x;

    if (conf_parse_uint(s + neg, &x) < 0)
        return -1;
    if (neg ? x > (uint64_t)INT64_MAX + 1 : x > (uint64_t)INT64_MAX)
        return -1;
    *v = neg ? (int64_t)(0 - x) : (int64_t)x;
    return 0;
}

int
conf_parse_double(const char *s, double *v)
{
    char *end;
    double x;

    /* strtod would also take hex floats, "inf" and leading blanks. */
    if (s[0] == '\0' || isspace((unsigned char)s[0]) || strpbrk(s, "xXnN") != NULL)
        return -1;
    errno = 0;
    x = strtod(s, &end);
    if (*end != '\0' || errno == ERANGE || !isfinite(x))
        return -1;
    *v = x;
    return 0;
}

static int
mul_add(uint64_t *acc, uint64_t a, uint64_t b)
{
    if (b != 0 && a > UINT64_MAX / b)
        return -1;
    if (*acc > UINT64_MAX - a * b)
        return -1;
    *acc += a * b;
    return 0;
}

/*
 * Grammar: "0", or one or more <number><unit> with number = digits[.digits]
 * and unit = ms | s | m | h, as in "500ms", "1.5s", "1h30m". The total must
 * be a whole number of milliseconds.
 */
int
conf_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t total = 0;

    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    if (*s == '\0')
        return -1;
    while (*s != '\0') {
        uint64_t whole, frac = 0, scale = 1, unit;

        if (digits(&s, &whole) < 0)
            return -1;
        if (*s == '.') {
            s++;
            if (!isdigit((unsigned char)*s))
                return -1;
            for (; isdigit((unsigned char)*s); s++) {
                if (scale >= 1000000000u)
                    return -1;
                frac = frac * 10 + (uint64_t)(*s - '0');
                scale *= 10;
            }
        }
        if (strncmp(s, "ms", 2) == 0) {
            unit = 1;
            s += 2;
        } else if (*s == 's') {
            unit = 1000;
            s++;
        } else if (*s == 'm') {
            unit = 60 * 1000;
            s++;
        } else if (*s == 'h') {
            unit = 3600 * 1000;
            s++;
        } else {
            return -1;
        }
        if ((frac * unit) % scale != 0)
            return -1; /* finer than a millisecond */
        if (mul_add(&total, whole, unit) < 0 || mul_add(&total, frac * unit / scale, 1) < 0)
            return -1;
    }
    *ms = total;
    return 0;
}

int
conf_parse_size(const char *s, uint64_t *bytes)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {
        {"", 0},    {"b", 0},    {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20},
        {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30},
    };
    uint64_t x;

    if (digits(&s, &x) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(s, units[i].suffix) == 0) {
            if (x > (UINT64_MAX >> units[i].shift))
                return -1;
            *bytes = x << units[i].shift;
            return 0;
        }
    }
    return -1;
}

static int
parse_port(const char *s, uint16_t *port, const char **why)
{
    uint64_t p;

    if (*s == '\0') {
        *why = "missing port after ':'";
        return -1;
    }
    if (conf_parse_uint(s, &p) < 0 || p < 1 || p > 65535) {
        *why = "port must be a number from 1 to 65535";
        return -1;
    }
    *port = (uint16_t)p;
    return 0;
}

/* RFC 1035: a name of at most 253 characters (255 octets on the wire). */
#define CONF_HOST_MAX 253
#define NOT_NUMERIC "host must be a numeric IPv4 or IPv6 address, localhost or *"

/* Fills out->sa from a numeric host (no brackets) and port. */
static int
fill_host(const char *host, uint16_t port, struct conf_addr *out, const char **why)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};

    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        sin.sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (strcmp(host, "localhost") == 0) {
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &sin.sin_addr) == 1) {
        ;
    } else if (inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1) {
        memset(&out->sa, 0, sizeof(out->sa));
        memcpy(&out->sa, &sin6, sizeof(sin6));
        out->salen = sizeof(sin6);
        return 0;
    } else {
        *why = strchr(host, '%') != NULL ? "IPv6 zone ids ('%') are not supported"
                                         : NOT_NUMERIC
                   " (only pools[].servers[].address in the configuration file "
                   "may name a host)";
        return -1;
    }
    memset(&out->sa, 0, sizeof(out->sa));
    memcpy(&out->sa, &sin, sizeof(sin));
    out->salen = sizeof(sin);
    return 0;
}

/* Splits "host:port" or "[v6]:port" into host (brackets removed, checked
 * as IPv6) and port. *bracketed tells which form it was. */
static int
split_addr(const char *s, char host[CONF_HOST_MAX + 1], uint16_t *port, bool *bracketed,
           const char **why)
{
    const char *colon, *port_text;
    size_t hlen;

    *bracketed = s[0] == '[';
    if (s[0] == '[') {
        const char *close = strchr(s, ']');

        if (close == NULL) {
            *why = "missing ']' after IPv6 address";
            return -1;
        }
        if (close[1] != ':') {
            *why = close[1] == '\0' ? "missing port (write [addr]:port)"
                                    : "expected ':port' after ']'";
            return -1;
        }
        hlen = (size_t)(close - s - 1);
        if (hlen == 0 || hlen > INET6_ADDRSTRLEN + 8) {
            *why = "bad IPv6 address in brackets";
            return -1;
        }
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        if (strchr(host, '%') == NULL) {
            struct in6_addr tmp;

            if (inet_pton(AF_INET6, host, &tmp) != 1) {
                *why = "bad IPv6 address in brackets";
                return -1;
            }
        }
        port_text = close + 2;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            *why = "missing port (write host:port)";
            return -1;
        }
        if (strchr(s, ':') != colon) {
            *why = "IPv6 addresses must be in brackets, as in [::1]:80";
            return -1;
        }
        hlen = (size_t)(colon - s);
        if (hlen > CONF_HOST_MAX) {
            *why = "host name longer than 253 characters";
            return -1;
        }
        memcpy(host, s, hlen);
        host[hlen] = '\0';
        port_text = colon + 1;
    }
    return parse_port(port_text, port, why);
}

int
conf_parse_addr(const char *s, struct conf_addr *out, const char **why)
{
    char host[CONF_HOST_MAX + 1];
    uint16_t port;
    bool bracketed;

    if (split_addr(s, host, &port, &bracketed, why) < 0)
        return -1;
    return fill_host(host, port, out, why);
}

/*
 * A DNS host name as RFC 1123 allows it (plus '_', which real zones have):
 * dot-separated labels of 1..63 letters, digits, '-' and '_', not starting
 * or ending with '-', one trailing dot allowed. A last label of digits only
 * is refused, so a mistyped IPv4 address ("10.1.2") is an error rather than
 * something the resolver's inet_aton() reads as 10.1.0.2.
 */
static bool
valid_host_name(const char *h)
{
    size_t n = strlen(h), label = 0;
    bool digits_only = true;

    if (n > 0 && h[n - 1] == '.')
        n--;
    if (n == 0)
        return false;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? h[i] : '.';

        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            if (i == n)
                return !digits_only;
            label = 0;
            digits_only = true;
            continue;
        }
        if (!isalnum((unsigned char)c) && c != '-' && c != '_')
            return false;
        if (label == 0 && c == '-')
            return false;
        if (!isdigit((unsigned char)c))
            digits_only = false;
        if (++label > 63)
            return false;
    }
    return false;
}

int
conf_resolve_addr(const char *s, struct conf_addr *out, const char **why)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char host[CONF_HOST_MAX + 1];
    uint16_t port;
    bool bracketed;
    int r;

    if (split_addr(s, host, &port, &bracketed, why) < 0)
        return -1;
    if (fill_host(host, port, out, why) == 0)
        return 0;
    if (bracketed || strchr(host, '%') != NULL)
        return -1;
    if (!valid_host_name(host)) {
        *why = NOT_NUMERIC ", or a host name (letters, digits, '-', '_' and dots)";
        return -1;
    }
    r = getaddrinfo(host, NULL, &hints, &res);
    if (r != 0) {
        *why = r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r);
        return -2;
    }
    /* The first answer, in the order getaddrinfo sorted them (RFC 6724 and
     * /etc/gai.conf): one server is one address, as in nginx without
     * "resolve". */
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
            ai->ai_addrlen <= sizeof(out->sa)) {
            memset(&out->sa, 0, sizeof(out->sa));
            memcpy(&out->sa, ai->ai_addr, ai->ai_addrlen);
            out->salen = ai->ai_addrlen;
            if (ai->ai_family == AF_INET)
                ((struct sockaddr_in *)&out->sa)->sin_port = htons(port);
            else
                ((struct sockaddr_in6 *)&out->sa)->sin6_port = htons(port);
            freeaddrinfo(res);
            return 0;
        }
    }
    freeaddrinfo(res);
    *why = "the name has no IPv4 or IPv6 address";
    return -2;
}

int
conf_parse_ip(const char *s, struct conf_addr *out, const char **why)
{
    char host[INET6_ADDRSTRLEN + 8];
    size_t len = strlen(s);

    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        s++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof(host)) {
        *why = "expected an IPv4 or IPv6 address";
        return -1;
    }
    memcpy(host, s, len);
    host[len] = '\0';
    if (strcmp(host, "*") == 0 || strcmp(host, "localhost") == 0) {
        *why = "expected a numeric IPv4 or IPv6 address";
        return -1;
    }
    if (fill_host(host, 0, out, why) < 0) {
        struct in_addr v4;
        char *colon = strrchr(host, ':');

        /* Say "no port" when that is what is wrong: 10.0.0.2:112. */
        if (colon != NULL) {
            *colon = '\0';
            if (inet_pton(AF_INET, host, &v4) == 1) {
                *why = "expected an IP address without a port";
                return -1;
            }
        }
        *why = "expected a numeric IPv4 or IPv6 address";
        return -1;
    }
    return 0;
}

int
conf_parse_cidr(const char *s, struct conf_cidr *out, const char **why)
{
    char host[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(s, '/');
    size_t hlen = slash != NULL ? (size_t)(slash - s) : strlen(s);
    uint8_t addr[16] = {0};
    uint64_t prefix;
    int family;

    if (hlen == 0 || hlen >= sizeof(host)) {
        *why = "expected address/prefix, as in 10.0.0.100/24";
        return -1;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, addr) == 1) {
        family = AF_INET;
    } else if (inet_pton(AF_INET6, host, addr) == 1) {
        family = AF_INET6;
    } else {
        *why = "expected a numeric IPv4 or IPv6 address before the '/'";
        return -1;
    }
    if (slash == NULL) {
        prefix = family == AF_INET ? 32 : 128;
    } else if (conf_parse_uint(slash + 1, &prefix) < 0 ||
               prefix > (family == AF_INET ? 32u : 128u)) {
        *why = family == AF_INET ? "prefix length must be 0..32" : "prefix length must be 0..128";
        return -1;
    }
    out->family = family;
    memcpy(out->addr, addr, sizeof(addr));
    out->prefix = (uint8_t)prefix;
    return 0;
}
