/*
 * Unit tests of scale/policy.c: the scaling arithmetic as tables.
 *
 * Step rows are a series of (time, direction, current) firings with the
 * desired size expected after each: bounds, counts, percentages and
 * cooldowns. Tracking rows are a series of (time, current, metric value)
 * samples with the desired size expected after each: the HPA formula, the
 * tolerance band, the two stabilization windows and a flapping metric.
 */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scale/policy.h"

#define MAXS 16

struct step {
    uint64_t t;
    int dir;
    uint32_t current;
    uint32_t want;
};

struct step_row {
    const char *name;
    struct scale_policy_cfg cfg;
    uint32_t desired;
    struct step steps[MAXS];
};

#define CFG(mn, mx, a, r, ocd, icd)                                                                \
    {                                                                                              \
        .min = mn, .max = mx, .add = a, .remove = r, .out_cooldown_ms = ocd, .in_cooldown_ms = icd \
    }

static const struct step_row step_rows[] = {
    {"add one up to max",
     CFG(1, 3, 1, 1, 0, 0),
     1,
     {{0, 1, 1, 2}, {1, 1, 2, 3}, {2, 1, 3, 3}, {3, 1, 3, 3}, {0, 0, 0, 0}}},
    {"remove one down to min",
     CFG(1, 5, 1, 1, 0, 0),
     4,
     {{0, -1, 4, 3}, {1, -1, 3, 2}, {2, -1, 2, 1}, {3, -1, 1, 1}, {0, 0, 0, 0}}},
    {"add two, clamped at max",
     CFG(2, 5, 2, 1, 0, 0),
     2,
     {{0, 1, 2, 4}, {1, 1, 4, 5}, {0, 0, 0, 0}}},
    {"remove three, clamped at min",
     CFG(2, 10, 1, 3, 0, 0),
     6,
     {{0, -1, 6, 3}, {1, -1, 3, 2}, {0, 0, 0, 0}}},
    {"out cooldown blocks both ways",
     CFG(1, 10, 1, 1, 100, 100),
     2,
     {{0, 1, 2, 3}, {50, 1, 3, 3}, {99, -1, 3, 3}, {100, 1, 3, 4}, {0, 0, 0, 0}}},
    {"in cooldown is the in policy's",
     CFG(1, 10, 1, 1, 10, 500),
     5,
     {{0, -1, 5, 4}, {20, 1, 4, 4}, {499, -1, 4, 4}, {500, -1, 4, 3}, {0, 0, 0, 0}}},
    {"step starts from servers still coming",
     CFG(0, 10, 2, 1, 0, 0),
     0,
     {{0, 1, 0, 2}, {1, 1, 1, 4}, {2, 1, 5, 7}, {0, 0, 0, 0}}},
    {"min equals max never moves",
     CFG(3, 3, 1, 1, 0, 0),
     3,
     {{0, 1, 3, 3}, {1, -1, 3, 3}, {0, 0, 0, 0}}},
    {"desired outside bounds is clamped first",
     CFG(2, 4, 1, 1, 0, 0),
     9,
     {{0, -1, 4, 3}, {0, 0, 0, 0}}},
};

static void
test_steps(void **unused)
{
    for (size_t i = 0; i < sizeof(step_rows) / sizeof(step_rows[0]); i++) {
        const struct step_row *r = &step_rows[i];
        struct scale_policy p;

        scale_policy_init(&p, &r->cfg, r->desired);
        for (size_t k = 0; k < MAXS && r->steps[k].dir != 0; k++) {
            const struct step *s = &r->steps[k];
            uint32_t got = scale_policy_step(&p, s->dir, s->current, s->t, NULL);

            if (got != s->want)
                fail_msg("%s: step %zu: desired %u, want %u", r->name, k, got, s->want);
        }
    }
}

/* Percent steps as AWS's PercentChangeInCapacity: rounded down, at least
 * one, at least min_adjustment (0 here: the default of one). */
struct pct_row {
    uint32_t add_pct, remove_pct, min_adj, current, want_out, want_in;
};

static const struct pct_row pct_rows[] = {
    {50, 50, 0, 4, 6, 2},     {10, 10, 0, 4, 5, 3}, /* 10 % of 4 is 0.4: one */
    {100, 25, 0, 3, 6, 2},    {200, 100, 0, 2, 6, 1},
    {50, 50, 0, 3, 4, 2},     /* 1.5 rounds down to 1 */
    {150, 70, 0, 3, 7, 1},    /* 4.5 and 2.1 round down */
    {10, 10, 2, 4, 6, 2},     /* min_adjustment lifts 0.4 to 2 */
    {50, 50, 3, 10, 15, 5},   /* above min_adjustment it is the percentage */
    {50, 50, 3, 4, 7, 1},     /* 2 < 3: three, bounded by min */
    {300, 90, 0, 40, 100, 4}, /* 120 is clamped at max */
};

static void
test_percentages(void **unused)
{
    for (size_t i = 0; i < sizeof(pct_rows) / sizeof(pct_rows[0]); i++) {
        const struct pct_row *r = &pct_rows[i];
        struct scale_policy_cfg cfg = {.min = 1,
                                       .max = 100,
                                       .add = 7, /* ignored: the percentage wins */
                                       .remove = 7,
                                       .add_pct = r->add_pct,
                                       .remove_pct = r->remove_pct,
                                       .add_min = r->min_adj,
                                       .remove_min = r->min_adj};
        struct scale_policy p;
        uint32_t got;

        scale_policy_init(&p, &cfg, r->current);
        got = scale_policy_step(&p, SCALE_OUT, r->current, 0, NULL);
        if (got != r->want_out)
            fail_msg("row %zu: out to %u, want %u", i, got, r->want_out);
        scale_policy_init(&p, &cfg, r->current);
        got = scale_policy_step(&p, SCALE_IN, r->current, 0, NULL);
        if (got != r->want_in)
            fail_msg("row %zu: in to %u, want %u", i, got, r->want_in);
    }
}

static void
test_why(void **unused)
{
    struct scale_policy_cfg cfg = CFG(1, 2, 1, 1, 100, 100);
    struct scale_policy p;
    const char *why;

    scale_policy_init(&p, &cfg, 1);
    assert_int_equal(scale_policy_step(&p, SCALE_IN, 1, 0, &why), 1);
    assert_string_equal(why, "at min");
    assert_int_equal(scale_policy_step(&p, SCALE_OUT, 1, 0, &why), 2);
    assert_null(why);
    assert_int_equal(scale_policy_step(&p, SCALE_OUT, 2, 10, &why), 2);
    assert_string_equal(why, "cooling down");
    assert_int_equal(scale_policy_step(&p, SCALE_OUT, 2, 200, &why), 2);
    assert_string_equal(why, "at max");
}

struct rec_row {
    uint32_t current;
    double value, target;
    uint32_t want;
};

static const struct rec_row rec_rows[] = {
    {2, 100, 50, 4},   /* twice the target: twice the servers */
    {2, 55, 50, 2},    /* +10 %: inside the band */
    {2, 44, 50, 2},    /* -12 % of 2 is still ceil(1.76) = 2 */
    {4, 20, 50, 2},    /* ceil(1.6) */
    {4, 0, 50, 1},     /* idle: down to min */
    {3, 1000, 50, 10}, /* clamped at max */
    {0, 80, 50, 2},    /* no servers counts as one */
    {5, NAN, 50, 5},   /* no data: no change */
    {10, 56, 50, 10},  /* +12 %: ceil(11.2) = 12, clamped at 10 */
    {6, 60, 50, 8},    /* ceil(7.2) */
};

static void
test_recommend(void **unused)
{
    struct scale_policy_cfg cfg = {.min = 1, .max = 10, .tracking = true, .tolerance = 0.1};

    for (size_t i = 0; i < sizeof(rec_rows) / sizeof(rec_rows[0]); i++) {
        const struct rec_row *r = &rec_rows[i];
        uint32_t got;

        cfg.target = r->target;
        got = scale_policy_recommend(&cfg, r->current, r->value);
        if (got != r->want)
            fail_msg("row %zu: %u servers at %g/%g: %u, want %u", i, r->current, r->value,
                     r->target, got, r->want);
    }
}

struct sample {
    uint64_t t;
    uint32_t current;
    double value;
    uint32_t want;
};

struct track_row {
    const char *name;
    uint64_t out_window, in_window, out_cd, in_cd;
    uint32_t desired;
    struct sample s[MAXS];
};

static const struct track_row track_rows[] = {
    {"no windows follows the metric",
     0,
     0,
     0,
     0,
     2,
     {{1, 2, 100, 4}, {2, 4, 50, 4}, {3, 4, 25, 2}, {4, 2, 50, 2}, {0, 0, 0, 0}}},
    {"scale-in waits for its window",
     0,
     300,
     0,
     0,
     4,
     {{0, 4, 50, 4}, {100, 4, 25, 4}, {200, 4, 25, 4}, {301, 4, 25, 2}, {0, 0, 0, 0}}},
    {"scale-out is immediate with an in window",
     0,
     300,
     0,
     0,
     2,
     {{0, 2, 50, 2}, {1, 2, 150, 6}, {0, 0, 0, 0}}},
    {"scale-out waits for its own window",
     100,
     0,
     0,
     0,
     2,
     {{0, 2, 50, 2}, {50, 2, 100, 2}, {90, 2, 100, 2}, {120, 2, 100, 4}, {0, 0, 0, 0}}},
    {"flapping metric holds the size",
     0,
     300,
     0,
     0,
     4,
     {{0, 4, 50, 4},
      {10, 4, 10, 4},
      {20, 4, 50, 4},
      {30, 4, 10, 4},
      {40, 4, 50, 4},
      {50, 4, 10, 4},
      {60, 4, 50, 4},
      {0, 0, 0, 0}}},
    {"flapping settles after the window",
     0,
     100,
     0,
     0,
     4,
     {{0, 4, 50, 4}, {10, 4, 10, 4}, {60, 4, 10, 4}, {111, 4, 10, 1}, {0, 0, 0, 0}}},
    {"in window takes the highest of the window",
     0,
     100,
     0,
     0,
     6,
     {{0, 6, 50, 6},
      {10, 6, 33, 6},
      {50, 6, 16, 6},
      {105, 6, 16, 4},
      {151, 6, 16, 2},
      {0, 0, 0, 0}}},
    {"cooldown after a scale-out",
     0,
     0,
     100,
     0,
     2,
     {{0, 2, 100, 4}, {50, 4, 100, 4}, {101, 4, 100, 8}, {0, 0, 0, 0}}},
    {"within tolerance nothing moves",
     0,
     0,
     0,
     0,
     3,
     {{0, 3, 52, 3}, {1, 3, 46, 3}, {2, 3, 54.9, 3}, {0, 0, 0, 0}}},
};

static void
test_tracking(void **unused)
{
    for (size_t i = 0; i < sizeof(track_rows) / sizeof(track_rows[0]); i++) {
        const struct track_row *r = &track_rows[i];
        struct scale_policy_cfg cfg = {.min = 1,
                                       .max = 10,
                                       .tracking = true,
                                       .target = 50,
                                       .tolerance = 0.1,
                                       .out_window_ms = r->out_window,
                                       .in_window_ms = r->in_window,
                                       .out_cooldown_ms = r->out_cd,
                                       .in_cooldown_ms = r->in_cd};
        struct scale_policy p;

        scale_policy_init(&p, &cfg, r->desired);
        for (size_t k = 0; k < MAXS && r->s[k].current != 0; k++) {
            const struct sample *s = &r->s[k];
            uint32_t got = scale_policy_track(&p, s->current, s->value, s->t, NULL);

            if (got != s->want)
                fail_msg("%s: sample %zu (t=%llu, %g): desired %u, want %u", r->name, k,
                         (unsigned long long)s->t, s->value, got, s->want);
        }
    }
}

/* A scale-in window of window ms holds with a sample every 500 ms (the
 * tick) for the whole window, then lets the group shrink: the history is
 * long enough. The scale-out window is as long. Returns the policy, at 1. */
static struct scale_policy *
held_scale_in(uint64_t window)
{
    struct scale_policy_cfg cfg = {.min = 1,
                                   .max = 10,
                                   .tracking = true,
                                   .target = 50,
                                   .tolerance = 0.1,
                                   .out_window_ms = window,
                                   .in_window_ms = window};
    static struct scale_policy p;
    uint64_t t = 0;

    scale_policy_init(&p, &cfg, 4);
    assert_int_equal(scale_policy_track(&p, 4, 50, t, NULL), 4);
    for (t = 500; t < window; t += 500)
        if (scale_policy_track(&p, 4, 10, t, NULL) != 4)
            fail_msg("scaled in at %llu ms, inside the window", (unsigned long long)t);
    assert_int_equal(scale_policy_track(&p, 4, 10, window + 500, NULL), 1);
    return &p;
}

static void
test_long_window(void **unused)
{
    held_scale_in(300000);
}

/* The longest window the schema allows, an hour, holds a scale-in for the
 * whole hour, and a scale-out as long. */
static void
test_hour_window(void **unused)
{
    uint64_t end = SCALE_POLICY_WINDOW_MAX_MS;
    struct scale_policy *p;

    assert_int_equal(SCALE_POLICY_WINDOW_MAX_MS, 3600000);
    p = held_scale_in(end);
    /* A recommendation of 8 from now: held at 1 for an hour. */
    for (uint64_t t = end + 1000; t < 2 * end + 1000; t += 500)
        if (scale_policy_track(p, 1, 400, t, NULL) != 1)
            fail_msg("scaled out at %llu ms, inside the window", (unsigned long long)t);
    assert_int_equal(scale_policy_track(p, 1, 400, 2 * end + 1000, NULL), 8);
}

static void
test_reload_clamps(void **unused)
{
    struct scale_policy_cfg cfg = CFG(1, 10, 1, 1, 0, 0);
    struct scale_policy p;

    scale_policy_init(&p, &cfg, 8);
    cfg.max = 5;
    scale_policy_set_cfg(&p, &cfg);
    assert_int_equal(p.desired, 5);
    cfg.min = 7;
    cfg.max = 9;
    scale_policy_set_cfg(&p, &cfg);
    assert_int_equal(p.desired, 7);
    scale_policy_set_desired(&p, 100, 0);
    assert_int_equal(p.desired, 9);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steps),       cmocka_unit_test(test_percentages),
        cmocka_unit_test(test_why),         cmocka_unit_test(test_recommend),
        cmocka_unit_test(test_tracking),    cmocka_unit_test(test_reload_clamps),
        cmocka_unit_test(test_long_window), cmocka_unit_test(test_hour_window),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
