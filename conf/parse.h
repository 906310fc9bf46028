/*
 * Scalar parsers shared by the schema engine and the daemon.
 *
 * Each takes the whole text of one YAML scalar and either fills its result
 * and returns 0, or returns -1 and leaves the result alone; none allocates.
 * The ones the daemon also needs (durations, addresses) are declared in
 * config.h; the rest are for conf/ and plugin schemas.
 */
#ifndef CONF_PARSE_H
#define CONF_PARSE_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"

/* true/false, yes/no, on/off in any case. */
int conf_parse_bool(const char *s, bool *v);

/* Decimal integers only: no '+', no leading zeros games, no hex. */
int conf_parse_int(const char *s, int64_t *v);
int conf_parse_uint(const char *s, uint64_t *v);

/* A finite decimal number. */
int conf_parse_double(const char *s, double *v);

/* "4096", "32k", "1m", "2g" (binary multiples; "kb", "KiB" spell the same). */
int conf_parse_size(const char *s, uint64_t *bytes);

/*
 * Like conf_parse_addr() (config.h), but the host may also be a DNS name,
 * resolved here with getaddrinfo(), which blocks for as long as the
 * resolver takes: callers on the control thread must not use it. Of several
 * addresses the first in getaddrinfo's order is taken. Returns 0; -1 for a
 * malformed address; -2 when the name does not resolve (*why is then the
 * resolver's message, valid until the next call on this thread).
 */
int conf_resolve_addr(const char *s, struct conf_addr *out, const char **why);

/* A numeric IPv4 or IPv6 address with no port ("[::1]" also accepted); the
 * port of out->sa is 0. out->text is not touched. */
int conf_parse_ip(const char *s, struct conf_addr *out, const char **why);

/* "10.0.0.100/24", "fd00::1/64", or a bare address (/32 or /128). Host bits
 * may be set: a virtual IP is an address with its prefix length. out->text is
 * not touched. */
int conf_parse_cidr(const char *s, struct conf_cidr *out, const char **why);

#endif
