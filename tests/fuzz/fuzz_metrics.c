/*
 * libFuzzer target for the metrics registry that plugins read and write
 * (lb/plugin_metrics.c: lb_metrics_*). Its names come from outside: a
 * plugin publishes what it scraped (the watch plugin names metrics after
 * the pools and servers of libvirt domains), and the API lists them.
 *
 * The input is a program of operations (set, get, remove, sweep, remove an
 * owner's, list by prefix, and a bulk set that grows the table past its
 * first allocations and rehashes), run against the registry and against a
 * plain list that does the same thing slowly. Every answer must agree:
 * return codes, values, which metrics exist, and what a listing returns.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "lb/plugin_int.h"

#define MAX_MODEL 4096

/* The reference: entries in insertion order, never moved; a removed one
 * keeps its slot with no name. An open-addressing index over every slot
 * ever used finds a name (removed ones are passed over), so that programs
 * of thousands of metrics stay fast under the fuzzer. */
struct entry {
    char *name;
    uint32_t hash; /* of name: compared first, as strcmp is slow under the fuzzer */
    double value;
    bool valid;
    int owner;
    unsigned stamp;
};

static struct entry model[MAX_MODEL];
static size_t nmodel;                /* slots used, live or removed */
static int32_t slots[2 * MAX_MODEL]; /* -1: empty */

static uint32_t
name_hash(const char *s)
{
    uint32_t h = 5381;

    for (; *s; s++)
        h = h * 33 + (unsigned char)*s;
    return h;
}

static struct entry *
model_find(const char *name)
{
    uint32_t h = name_hash(name);

    for (size_t k = h % (2 * MAX_MODEL); slots[k] >= 0; k = (k + 1) % (2 * MAX_MODEL)) {
        struct entry *e = &model[slots[k]];
        if (e->name != NULL && e->hash == h && strcmp(e->name, name) == 0)
            return e;
    }
    return NULL;
}

static void
model_drop(size_t i)
{
    free(model[i].name);
    model[i].name = NULL;
}

static int
model_set(const char *name, double value, bool valid, int owner, unsigned stamp)
{
    struct entry *e = model_find(name);

    if (e != NULL && e->owner != owner)
        return -EPERM;
    if (e == NULL) {
        if (nmodel == MAX_MODEL)
            return 1; /* the program is too long: not compared */
        e = &model[nmodel];
        e->name = strdup(name);
        check(e->name != NULL);
        e->hash = name_hash(name);
        e->owner = owner;
        size_t k = e->hash % (2 * MAX_MODEL);
        while (slots[k] >= 0)
            k = (k + 1) % (2 * MAX_MODEL);
        slots[k] = (int32_t)nmodel++;
    }
    e->value = value;
    e->valid = valid && !isnan(value);
    e->stamp = stamp;
    return 0;
}

static const char *const names[] = {
    "pool.web.rps", "pool.web.error_rate",  "server.web.b1.cpu_percent", "server.web.b1.rps",
    "host.load1",   "watch.alarm.web-busy", "pool.api.latency_p99",      "",
};

struct listing {
    size_t n;
    double sum;
};

static void
on_metric(void *arg, const char *name, double value)
{
    struct listing *l = arg;
    struct entry *e = model_find(name);

    /* Listed: it exists, has a value, and has that value. */
    check(e != NULL && e->valid && e->value == value);
    l->n++;
    l->sum += value;
}

static void
set_both(struct lb_metrics *m, const char *name, double v, bool valid, int owner, unsigned stamp)
{
    int want = model_set(name, v, valid, owner, stamp);

    if (want == 1)
        return;
    check(lb_metrics_set(m, name, v, valid, owner, stamp) == want);
}

static void
get_both(const struct lb_metrics *m, const char *name)
{
    const struct entry *e = model_find(name);
    double v = -1;
    int r = lb_metrics_get(m, name, &v);

    check(r == (e == NULL ? -ENOENT : !e->valid ? -ENODATA : 0));
    if (r == 0)
        check(v == e->value);
}

static void
check_all(const struct lb_metrics *m)
{
    for (size_t i = 0; i < nmodel; i++)
        if (model[i].name != NULL)
            get_both(m, model[i].name);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lb_metrics m;
    char name[64];

    check(lb_metrics_init(&m) == 0);
    nmodel = 0;
    memset(slots, 0xff, sizeof(slots));
    for (size_t pc = 0; pc + 4 <= size;) {
        uint8_t op = data[pc], a = data[pc + 1], b = data[pc + 2], c = data[pc + 3];
        const char *nm = names[a % (sizeof(names) / sizeof(names[0]))];
        int owner = c % 3;

        pc += 4;
        switch (op % 8) {
        case 0:
            set_both(&m, nm, b == 255 ? NAN : (double)b, c & 4, owner, c >> 3);
            break;
        case 1:
            get_both(&m, nm);
            break;
        case 2: {
            struct entry *e = model_find(nm);
            int want = e == NULL ? -ENOENT : e->owner != owner ? -EPERM : 0;

            check(lb_metrics_remove(&m, nm, owner) == want);
            if (want == 0)
                model_drop((size_t)(e - model));
            break;
        }
        case 3:
        case 4: {
            /* sweep: what the owner's last pass did not set goes; remove
             * owner: all of the owner's go. */
            bool all = op % 8 == 4;
            unsigned stamp = b % 4;

            if (all)
                lb_metrics_remove_owner(&m, owner);
            else
                lb_metrics_sweep(&m, owner, stamp);
            for (size_t i = 0; i < nmodel; i++)
                if (model[i].name != NULL && model[i].owner == owner &&
                    (all || model[i].stamp != stamp))
                    model_drop(i);
            break;
        }
        case 5: {
            /* A prefix of one of the names, of a data-chosen length. */
            size_t plen = b % (strlen(nm) + 1);
            struct listing l = {0};
            size_t want = 0;

            snprintf(name, sizeof(name), "%.*s", (int)plen, nm);
            size_t n = lb_metrics_each(&m, name, on_metric, &l);
            for (size_t i = 0; i < nmodel; i++)
                want += model[i].name != NULL && model[i].valid &&
                        strncmp(model[i].name, name, plen) == 0;
            check(n == l.n && n == want);
            break;
        }
        case 6:
            /* Many servers' worth at once: past 256 entries, past twice the
             * buckets. */
            for (unsigned i = 0; i < (unsigned)a * 4u + 1u; i++) {
                snprintf(name, sizeof(name), "server.p%u.s%u.rps", b, i);
                set_both(&m, name, (double)i, true, owner, c >> 3);
            }
            break;
        default: {
            /* A name from the input itself: any bytes but NUL. */
            size_t len = a % 32;

            if (pc + len > size)
                len = size - pc;
            memcpy(name, data + pc, len);
            name[len] = '\0';
            pc += len;
            set_both(&m, name, (double)b, true, owner, c >> 3);
            get_both(&m, name);
            break;
        }
        }
    }
    check_all(&m);
    lb_metrics_free(&m);
    for (size_t i = 0; i < nmodel; i++)
        model_drop(i);
    return 0;
}
