/*
 * Helpers shared by the fuzz targets written after fuzz_http1 and
 * fuzz_vrrp: an invariant check that libFuzzer reports as a crash, a
 * bounded-string test, and the data-derived cut points at which a target
 * splits its input, so that a split is part of what the fuzzer explores
 * and replays exactly.
 */
#ifndef TERN_FUZZ_COMMON_H
#define TERN_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline void
check(bool ok)
{
    if (!ok)
        abort();
}

/* s is terminated within size bytes: it fits the buffer it came from. */
static inline bool
fits(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}

/* Two cut points 0 <= *cut1 <= *cut2 <= len, from a hash of the input's
 * first 64 bytes. */
static inline void
fuzz_cuts(const uint8_t *data, size_t size, size_t len, size_t *cut1, size_t *cut2)
{
    uint32_t seed = 2166136261u;

    for (size_t i = 0; i < size && i < 64; i++)
        seed = (seed ^ data[i]) * 16777619u;
    *cut1 = len ? seed % (len + 1) : 0;
    *cut2 = len ? (seed >> 16) % (len + 1) : 0;
    if (*cut2 < *cut1) {
        size_t t = *cut1;
        *cut1 = *cut2;
        *cut2 = t;
    }
}

#endif
