/*
 * Unit tests of a scaling group's reconciliation with the provider's list,
 * on a clock of the test's: a host whose jobs run when the test says, and
 * a provider whose list is a string the test sets.
 *
 * The group's files are linked; scale/group_int.h shows the test a job's
 * kind and result, to hold a create job in flight and to fail probes
 * without a network.
 *
 * A server listed running without an address that the group does not hold
 * is destroyed once the lists have shown it so for longer than the boot
 * allowance (the exec timeout, 30 s here), and not before; the clock starts
 * again when it leaves the list or the tern may not act; a server in its
 * create job is never destroyed that way.
 *
 * scale[].grace_period is how long a new server has to answer its probe
 * (and, with libvirt, the boot allowance above): one that never answers is
 * given up after it, 120 s when unset.
 *
 * scale[].remove_first picks the server a scale-in removes: the newest, the
 * oldest or the one with the fewest requests in flight in the pool.
 *
 * scale[].warmup holds a scale-in while a server the group launched is
 * newer in service than it; adopted servers do not warm up.
 */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scale/group_int.h"

#define ALLOWANCE_MS 30000

static double clock_s;
static const char *list_text = "";
static int nlists;           /* lists read since group() */
static char destroyed[1024]; /* "name " per destroy */
static char failed[512];     /* the detail of the last failed activity */
static bool hold_creates;
static bool probes_answer;

struct queued {
    tern_job_run_cb run;
    tern_job_done_cb done;
    void *arg;
};

static struct queued queue[64];
static size_t nqueue;

static void
fake_log(const struct tern_host *h, enum tern_log_level level, const char *fmt, ...)
{
    va_list ap;

    (void)h;
    (void)level;
    if (getenv("VERBOSE") == NULL)
        return;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static double
fake_monotonic(const struct tern_host *h)
{
    (void)h;
    return clock_s;
}

static double
fake_now(const struct tern_host *h)
{
    (void)h;
    return 1.7e9 + clock_s;
}

static int
fake_submit(const struct tern_host *h, tern_job_run_cb run, tern_job_done_cb done, void *arg)
{
    (void)h;
    assert_true(nqueue < sizeof(queue) / sizeof(queue[0]));
    queue[nqueue++] = (struct queued){run, done, arg};
    return 0;
}

static void
fake_publish(const struct tern_host *h, const struct tern_event *ev)
{
    (void)h;
    if (strcmp(ev->state, "failed") == 0)
        snprintf(failed, sizeof(failed), "%s", ev->detail);
}

/* What the pool holds: in flight on web-tern-<i + 1>, or -1 past the end. */
static int pool_active[8] = {-1};

static int
fake_pool_servers(const struct tern_host *h, const char *pool, tern_server_cb cb, void *arg)
{
    (void)h;
    (void)pool;
    for (int i = 0; i < 8 && pool_active[i] >= 0; i++) {
        char name[32];
        struct tern_server_info info = {.name = name,
                                        .address = "127.0.0.1:1",
                                        .state = "ready",
                                        .healthy = true,
                                        .dynamic = true,
                                        .weight = 1,
                                        .active = (uint32_t)pool_active[i]};

        snprintf(name, sizeof(name), "web-tern-%d", i + 1);
        cb(arg, &info);
    }
    return 0;
}

static int
fake_server_add(const struct tern_host *h, const char *pool, const char *name, const char *address,
                uint32_t weight, const char **why)
{
    (void)h;
    (void)pool;
    (void)name;
    (void)address;
    (void)weight;
    (void)why;
    return 0;
}

static int
fake_server_drain(const struct tern_host *h, const char *pool, const char *name, bool remove,
                  const char **why)
{
    (void)h;
    (void)pool;
    (void)name;
    (void)remove;
    (void)why;
    return -ENOENT;
}

static const struct tern_host host = {
    .log = fake_log,
    .now = fake_now,
    .monotonic = fake_monotonic,
    .job_submit = fake_submit,
    .publish = fake_publish,
    .pool_servers = fake_pool_servers,
    .server_add = fake_server_add,
    .server_drain = fake_server_drain,
};

static int
prov_create(void *p, const char *group, const char *server, char *address, size_t addrlen,
            char *err, size_t errlen)
{
    (void)p;
    (void)group;
    (void)server;
    (void)err;
    (void)errlen;
    snprintf(address, addrlen, "127.0.0.1:1");
    return 0;
}

static int
prov_destroy(void *p, const char *group, const char *server, const char *address, char *err,
             size_t errlen)
{
    size_t n = strlen(destroyed);

    (void)p;
    (void)group;
    (void)address;
    (void)err;
    (void)errlen;
    snprintf(destroyed + n, sizeof(destroyed) - n, "%s ", server);
    return 0;
}

static int
prov_list(void *p, const char *group, char **out, char *err, size_t errlen)
{
    (void)p;
    (void)group;
    (void)err;
    (void)errlen;
    nlists++;
    *out = strdup(list_text);
    return 0;
}

static void
prov_free(void *p)
{
    (void)p;
}

static const struct scale_provider_ops fake_ops = {
    .name = "fake",
    .create = prov_create,
    .destroy = prov_destroy,
    .list = prov_list,
    .free = prov_free,
};

/* Runs the queued jobs, those they queue too; a held create stays. */
static void
run_jobs(void)
{
    size_t held = 0;

    while (nqueue > held) {
        struct queued q = queue[held];
        struct job *j = q.arg;

        if (j->kind == JOB_CREATE && hold_creates) {
            held++;
            continue;
        }
        memmove(&queue[held], &queue[held + 1], (nqueue - held - 1) * sizeof(queue[0]));
        nqueue--;
        if (j->kind == JOB_PROBE) {
            /* No network here: the test says whether the probe answers. */
            j->rc = probes_answer ? 0 : -1;
            snprintf(j->err, sizeof(j->err), "refused");
            q.done(j, NULL, 0);
        } else {
            q.done(j, q.run(j), 0);
        }
    }
}

static struct scale sc = {.h = &host};

static struct scale_group *
group(uint32_t desired)
{
    struct scale_group_cfg cfg = {
        .pool = "web",
        .desired = desired,
        .pol = {.min = 0, .max = 3, .add = 1, .remove = 1},
        .provider = SCALE_PROV_EXEC,
        .create = "false",
        .destroy = "false",
        .timeout_ms = ALLOWANCE_MS,
    };
    struct scale_group *g;

    clock_s = 0;
    list_text = "";
    nlists = 0;
    destroyed[0] = '\0';
    failed[0] = '\0';
    hold_creates = false;
    probes_answer = false;
    nqueue = 0;
    pool_active[0] = -1;
    g = scale_group_new(&sc, &cfg);
    assert_non_null(g);
    g->prov.ops->free(g->prov.p);
    g->prov = (struct scale_provider){&fake_ops, NULL};
    return g;
}

/* Ticks until the clock reads until; the list is read at 0.5, 10.5,
 * 20.5 ... s while the tern acts from the start. */
static void
run_until(struct scale_group *g, double until, bool act)
{
    while (clock_s + SCALE_TICK <= until) {
        clock_s += SCALE_TICK;
        scale_group_tick(g, act);
        run_jobs();
    }
}

/* Nothing is destroyed until before; by after, want is. */
static void
destroyed_by(struct scale_group *g, double before, double after, const char *want)
{
    run_until(g, before, true);
    assert_string_equal(destroyed, "");
    run_until(g, after, true);
    assert_string_equal(destroyed, want);
}

static const struct scale_activity *
last_act(const struct scale_group *g)
{
    return &g->acts[(g->head + g->nacts - 1) % SCALE_ACTIVITIES];
}

static void
test_addressless_destroyed_after_allowance(void **unused)
{
    struct scale_group *g = group(0);

    (void)unused;
    list_text = "web-tern-1 - running\nweb-tern-2 -\nweb-tern-3 127.0.0.1:1\nother -\n";
    /* Lists at 0.5 (first seen), 10.5, 20.5, 30.5 (30 s: not more). */
    run_until(g, 35, true);
    assert_string_equal(destroyed, "");
    assert_int_equal(g->naddrless, 2);
    assert_int_equal(g->next_index, 4);
    /* 40.5: 40 s. */
    run_until(g, 45, true);
    assert_string_equal(destroyed, "web-tern-1 web-tern-2 ");
    assert_string_equal(last_act(g)->action, "terminate");
    assert_string_equal(last_act(g)->reason,
                        "web-tern-2 has had no address for 40 s (the boot allowance is 30 s): "
                        "replacing it");
    assert_string_equal(last_act(g)->result, "successful: destroyed");
    /* web-tern-3 has an address: adopted, never destroyed. */
    assert_int_equal(g->nsrv, 1);
    assert_string_equal(g->srv[0].name, "web-tern-3");
    list_text = "web-tern-3 127.0.0.1:1\n";
    run_until(g, 55, true);
    assert_int_equal(g->naddrless, 0);
    assert_string_equal(destroyed, "web-tern-1 web-tern-2 ");
    scale_group_free(g);
}

static void
test_forgotten_when_listed_otherwise(void **unused)
{
    struct scale_group *g = group(0);

    (void)unused;
    list_text = "web-tern-1 -\nweb-tern-2 -\n";
    run_until(g, 5, true);
    assert_int_equal(g->naddrless, 2);
    /* 10.5: web-tern-1 gone from the list, web-tern-2 with an address
     * (adopted: the group holds it from now on). */
    list_text = "web-tern-2 127.0.0.1:1\n";
    run_until(g, 15, true);
    assert_int_equal(g->naddrless, 0);
    assert_int_equal(g->nsrv, 1);
    /* Back without an address at 20.5: its 30 s start there. */
    list_text = "web-tern-1 -\n";
    destroyed_by(g, 55, 65, "web-tern-1 ");
    scale_group_free(g);
}

static void
test_only_while_acting(void **unused)
{
    struct scale_group *g = group(0);

    (void)unused;
    list_text = "web-tern-1 -\n";
    run_until(g, 100, false); /* read once at the start, then no more */
    assert_string_equal(destroyed, "");
    assert_int_equal(g->naddrless, 0);
    /* Acting from 100: lists at 110, 120, 130, 140 (30 s), 150. */
    destroyed_by(g, 145, 155, "web-tern-1 ");
    scale_group_free(g);
}

static void
test_not_in_its_create(void **unused)
{
    struct scale_group *g = group(1);

    (void)unused;
    hold_creates = true;
    run_until(g, 5, true);
    assert_int_equal(g->nsrv, 1);
    assert_int_equal(g->srv[0].st, SRV_CREATING);
    list_text = "web-tern-1 - running\n";
    run_until(g, 100, true);
    assert_string_equal(destroyed, "");
    assert_int_equal(g->naddrless, 0);
    hold_creates = false;
    run_until(g, 101, true);
    assert_int_equal(g->srv[0].st, SRV_PROBING);
    assert_string_equal(destroyed, "");
    scale_group_free(g);
}

/* reconcile_interval is rounded up to whole ticks, at least one, and a
 * reload's new value holds from the next tick. */
static void
test_reconcile_interval_in_ticks(void **unused)
{
    struct scale_group *g = group(0);

    (void)unused;
    g->cfg.relist_ms = 1200; /* 3 ticks: lists at 0.5, 2, 3.5 */
    run_until(g, 1.5, true);
    assert_int_equal(nlists, 1);
    run_until(g, 2, true);
    assert_int_equal(nlists, 2);
    run_until(g, 3, true);
    assert_int_equal(nlists, 2);
    run_until(g, 3.5, true);
    assert_int_equal(nlists, 3);
    g->cfg.relist_ms = 400; /* less than a tick: every tick */
    run_until(g, 5, true);
    assert_int_equal(nlists, 6);
    g->cfg.relist_ms = 0; /* unset: 10 s */
    run_until(g, 20, true);
    assert_int_equal(nlists, 7);
    scale_group_free(g);
}

/* The first list is read at 0.5, the launch follows at 1: a probe that
 * never answers fails once more than grace_period has passed since. */
static void
test_grace_period_gives_up(void **unused)
{
    struct scale_group *g = group(1);

    (void)unused;
    g->cfg.grace_ms = 15000;
    destroyed_by(g, 16, 16.5, "web-tern-1 ");
    assert_string_equal(failed, "launch web-tern-1: desired 1, have 0 "
                                "(failed: no answer within 15 s (refused))");
    scale_group_free(g);
}

static void
test_grace_period_unset_is_120s(void **unused)
{
    struct scale_group *g = group(1);

    (void)unused;
    destroyed_by(g, 121, 121.5, "web-tern-1 ");
    assert_string_equal(failed, "launch web-tern-1: desired 1, have 0 "
                                "(failed: no answer within 120 s (refused))");
    scale_group_free(g);
}

/* With libvirt a clone listed without an address has grace_period, not
 * the exec timeout (30 s here), before it is replaced. */
static void
test_grace_period_is_libvirt_boot_allowance(void **unused)
{
    struct scale_group *g = group(0);

    (void)unused;
    g->cfg.provider = SCALE_PROV_LIBVIRT;
    g->cfg.grace_ms = 20000;
    list_text = "web-tern-1 - running\n";
    /* Lists at 0.5 (first seen), 10.5, 20.5 (20 s: not more), 30.5. */
    destroyed_by(g, 25, 35, "web-tern-1 ");
    scale_group_free(g);
}

/* The pool holds web-tern-1..3 with these requests in flight and desired
 * is 2: the first scale-in removes want. */
static void
removes_first(enum scale_remove_first order, int a1, int a2, int a3, const char *want)
{
    struct scale_group *g;
    int active[] = {a1, a2, a3, -1};

    g = group(2);
    memcpy(pool_active, active, sizeof(active));
    g->cfg.remove_first = order;
    run_until(g, 2, true);
    assert_string_equal(destroyed, want);
    assert_int_equal(group_current(g), 2);
    scale_group_free(g);
}

static void
test_remove_first(void **unused)
{
    (void)unused;
    removes_first(SCALE_REMOVE_NEWEST, 5, 0, 7, "web-tern-3 ");
    removes_first(SCALE_REMOVE_OLDEST, 5, 0, 7, "web-tern-1 ");
    removes_first(SCALE_REMOVE_LEAST_CONN, 5, 0, 7, "web-tern-2 ");
    removes_first(SCALE_REMOVE_LEAST_CONN, 2, 9, 3, "web-tern-1 ");
    /* A tie goes to the newest of the least busy. */
    removes_first(SCALE_REMOVE_LEAST_CONN, 0, 4, 0, "web-tern-3 ");
}

/* A scale-in alarm raised on g (remove 1, then a long cooldown). */
static void
raise_scale_in(struct scale_group *g)
{
    g->cfg.in_alarm = strdup("idle");
    assert_non_null(g->cfg.in_alarm);
    g->in_alarm_on = true;
    g->pol.cfg.in_cooldown_ms = 3600000;
}

static bool
json_warming(const struct scale_group *g, size_t i)
{
    json_t *o = scale_group_json(g);
    bool w =
        json_is_true(json_object_get(json_array_get(json_object_get(o, "servers"), i), "warming"));

    json_decref(o);
    return w;
}

/* warmup: while a server the group launched is younger in service than
 * warmup, a raised scale-in alarm lowers nothing; after, it does. Servers
 * adopted from the pool (a restart) ran before: they do not warm up. */
static void
test_warmup(void **unused)
{
    struct scale_group *g = group(2);
    int active[] = {0, 0, -1};
    double in_service;

    (void)unused;
    probes_answer = true;
    g->cfg.warmup_ms = 60000;
    run_until(g, 3, true);
    assert_int_equal(g->nsrv, 2);
    assert_int_equal(g->srv[0].st, SRV_IN_SERVICE);
    assert_int_equal(g->srv[1].st, SRV_IN_SERVICE);
    in_service = g->srv[1].since;
    assert_true(json_warming(g, 1));
    raise_scale_in(g);
    run_until(g, in_service + 59.5, true);
    assert_int_equal(g->pol.desired, 2);
    assert_string_equal(destroyed, "");
    run_until(g, in_service + 60.5, true);
    assert_false(json_warming(g, 1));
    assert_int_equal(g->pol.desired, 1);
    assert_string_equal(destroyed, "web-tern-2 ");
    scale_group_free(g);

    g = group(2);
    memcpy(pool_active, active, sizeof(active));
    g->cfg.warmup_ms = 60000;
    run_until(g, 1, true);
    assert_int_equal(g->nsrv, 2);
    assert_false(json_warming(g, 0));
    raise_scale_in(g);
    run_until(g, 2, true);
    assert_int_equal(g->pol.desired, 1);
    scale_group_free(g);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addressless_destroyed_after_allowance),
        cmocka_unit_test(test_forgotten_when_listed_otherwise),
        cmocka_unit_test(test_only_while_acting),
        cmocka_unit_test(test_not_in_its_create),
        cmocka_unit_test(test_reconcile_interval_in_ticks),
        cmocka_unit_test(test_grace_period_gives_up),
        cmocka_unit_test(test_grace_period_unset_is_120s),
        cmocka_unit_test(test_grace_period_is_libvirt_boot_allowance),
        cmocka_unit_test(test_remove_first),
        cmocka_unit_test(test_warmup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
