/*
 * Unit tests of watch/alarm.c: CloudWatch alarm semantics as tables.
 *
 * Each row is a series of periods (the samples taken in each, "" for a
 * period without any) and the state expected after each period closes. The
 * rows cover M out of N, every missing-data treatment, both comparisons,
 * each statistic and the reasons given for changes.
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
#include <stdlib.h>
#include <string.h>

#include "watch/alarm.h"

#define I WATCH_INSUFFICIENT_DATA
#define O WATCH_OK
#define A WATCH_ALARM
#define MAXP 16

struct row {
    const char *name;
    enum watch_stat stat;
    enum watch_cmp cmp;
    double threshold;
    uint32_t n, m;
    enum watch_missing missing;
    const char *periods[MAXP]; /* samples of each period, comma separated */
    enum watch_state expect[MAXP];
    int changes; /* state changes over the whole series */
};

static const struct row rows[] = {
    {"2 of 3 above, not consecutive",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     70,
     3,
     2,
     WATCH_MISSING_MISSING,
     {"80", "50", "80", "50", "50"},
     {O, O, A, O, O},
     3},
    {"3 of 3 needs all three",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     70,
     3,
     3,
     WATCH_MISSING_MISSING,
     {"80", "80", "60", "80", "80", "80"},
     {O, O, O, O, O, A},
     2},
    {"1 of 1 follows each point",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     10,
     1,
     1,
     WATCH_MISSING_MISSING,
     {"11", "9", "11"},
     {A, O, A},
     3},
    {"threshold itself does not breach",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     10,
     1,
     1,
     WATCH_MISSING_MISSING,
     {"10", "10.001"},
     {O, A},
     2},
    {"below",
     WATCH_STAT_AVERAGE,
     WATCH_BELOW,
     20,
     2,
     2,
     WATCH_MISSING_MISSING,
     {"30", "10", "10", "25"},
     {O, O, A, O},
     3},
    {"average of the period's samples",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     50,
     1,
     1,
     WATCH_MISSING_MISSING,
     {"0,100,40", "0,100,60"},
     {O, A},
     2},
    {"maximum",
     WATCH_STAT_MAXIMUM,
     WATCH_ABOVE,
     90,
     1,
     1,
     WATCH_MISSING_MISSING,
     {"10,95,10", "10,20"},
     {A, O},
     2},
    {"minimum",
     WATCH_STAT_MINIMUM,
     WATCH_BELOW,
     5,
     1,
     1,
     WATCH_MISSING_MISSING,
     {"10,4,10", "10,20"},
     {A, O},
     2},
    {"sum",
     WATCH_STAT_SUM,
     WATCH_ABOVE,
     10,
     1,
     1,
     WATCH_MISSING_MISSING,
     {"4,4", "4,4,4"},
     {O, A},
     2},
    {"p95 ignores one outlier in 20",
     WATCH_STAT_P95,
     WATCH_ABOVE,
     50,
     1,
     1,
     WATCH_MISSING_MISSING,
     {"1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,99", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,99,99"},
     {O, A},
     2},
    {"p99 sees it",
     WATCH_STAT_P99,
     WATCH_ABOVE,
     50,
     1,
     1,
     WATCH_MISSING_MISSING,
     {"1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,99"},
     {A},
     1},
    {"missing: no data stays insufficient",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     1,
     2,
     1,
     WATCH_MISSING_MISSING,
     {"", "", ""},
     {I, I, I},
     0},
    {"missing: skipped while some data",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     1,
     3,
     2,
     WATCH_MISSING_MISSING,
     {"5", "", "5", "", "", ""},
     {O, O, A, O, O, I},
     4},
    {"breaching: missing counts as breaching",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     100,
     2,
     2,
     WATCH_MISSING_BREACHING,
     {"1", "", "", "1"},
     {O, O, A, O},
     3},
    {"not_breaching: missing clears",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     1,
     2,
     1,
     WATCH_MISSING_NOT_BREACHING,
     {"", "5", "", ""},
     {O, A, A, O},
     3},
    {"ignore: all missing keeps ALARM",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     1,
     2,
     2,
     WATCH_MISSING_IGNORE,
     {"5", "5", "", "", "", "0"},
     {O, A, A, A, A, O},
     3},
    {"ignore: nothing yet stays insufficient",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     1,
     2,
     2,
     WATCH_MISSING_IGNORE,
     {"", ""},
     {I, I},
     0},
    {"missing: ALARM then silence",
     WATCH_STAT_AVERAGE,
     WATCH_ABOVE,
     1,
     2,
     1,
     WATCH_MISSING_MISSING,
     {"5", "", ""},
     {A, A, I},
     2},
};

static int changes_seen;

static void
on_change(void *arg, struct watch_alarm *a, enum watch_state from)
{
    changes_seen++;
    assert_int_not_equal(from, a->state);
}

static void
run_row(const struct row *r)
{
    struct watch_alarm_cfg cfg = {
        .name = r->name,
        .metric = "m",
        .stat = r->stat,
        .cmp = r->cmp,
        .threshold = r->threshold,
        .period_ms = 1000,
        .evaluation_periods = r->n,
        .datapoints_to_alarm = r->m,
        .missing = r->missing,
    };
    struct watch_alarm a;

    assert_int_equal(watch_alarm_init(&a, &cfg, 10000), 0);
    assert_int_equal(a.state, WATCH_INSUFFICIENT_DATA);
    changes_seen = 0;
    for (int p = 0; p < MAXP && r->periods[p] != NULL; p++) {
        char buf[256], *save = NULL;
        uint64_t t = 10000 + (uint64_t)p * 1000 + 10;

        snprintf(buf, sizeof(buf), "%s", r->periods[p]);
        for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save), t += 10)
            assert_true(watch_alarm_add(&a, t, strtod(tok, NULL), on_change, NULL) >= 0);
        watch_alarm_advance(&a, 10000 + (uint64_t)(p + 1) * 1000, on_change, NULL);
        if (a.state != r->expect[p])
            fail_msg("%s: after period %d expected %s, got %s (%s)", r->name, p + 1,
                     watch_state_name(r->expect[p]), watch_state_name(a.state), a.reason);
    }
    if (changes_seen != r->changes)
        fail_msg("%s: expected %d changes, saw %d", r->name, r->changes, changes_seen);
    watch_alarm_free(&a);
}

static void
test_rows(void **state)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        run_row(&rows[i]);
}

static void
test_reason_and_history(void **state)
{
    struct watch_alarm_cfg cfg = {
        .name = "web-busy",
        .metric = "pool.web.cpu_percent",
        .stat = WATCH_STAT_AVERAGE,
        .cmp = WATCH_ABOVE,
        .threshold = 70,
        .period_ms = 60000,
        .evaluation_periods = 3,
        .datapoints_to_alarm = 2,
        .missing = WATCH_MISSING_MISSING,
    };
    struct watch_alarm a;
    struct watch_point h[8];

    assert_int_equal(watch_alarm_init(&a, &cfg, 0), 0);
    assert_non_null(strstr(a.reason, "Initial"));
    watch_alarm_add(&a, 1000, 83.2, NULL, NULL);
    watch_alarm_add(&a, 61000, 75, NULL, NULL);
    watch_alarm_advance(&a, 120000, NULL, NULL);
    assert_int_equal(a.state, WATCH_ALARM);
    assert_string_equal(a.reason, "Threshold Crossed: 2 out of the last 2 datapoints [75, 83.2] "
                                  "were greater than the threshold (70) (minimum 2 datapoints "
                                  "for OK -> ALARM transition).");
    assert_int_equal(a.last_change, 120000);
    assert_true(a.value == 75);
    assert_int_equal(watch_alarm_history(&a, h, 8), 2);
    assert_int_equal(h[0].t, 60000);
    assert_true(h[0].value == 83.2);
    assert_int_equal(h[1].t, 120000);
    watch_alarm_free(&a);
}

static void
test_long_gap(void **state)
{
    struct watch_alarm_cfg cfg = {
        .name = "x",
        .metric = "m",
        .period_ms = 1000,
        .evaluation_periods = 2,
        .datapoints_to_alarm = 1,
        .threshold = 1,
        .missing = WATCH_MISSING_MISSING,
    };
    struct watch_alarm a;

    assert_int_equal(watch_alarm_init(&a, &cfg, 0), 0);
    watch_alarm_add(&a, 10, 5, NULL, NULL);
    watch_alarm_advance(&a, 1000, NULL, NULL);
    assert_int_equal(a.state, WATCH_ALARM);
    /* A day later: the window is the last two periods, both missing. */
    watch_alarm_advance(&a, 86400000, NULL, NULL);
    assert_int_equal(a.state, WATCH_INSUFFICIENT_DATA);
    assert_int_equal(a.open, 86400);
    watch_alarm_free(&a);
}

static void
test_bad_config(void **state)
{
    struct watch_alarm_cfg cfg = {
        .period_ms = 1000, .evaluation_periods = 2, .datapoints_to_alarm = 3};
    struct watch_alarm a;

    assert_int_equal(watch_alarm_init(&a, &cfg, 0), -22);
    cfg.datapoints_to_alarm = 2;
    cfg.period_ms = 0;
    assert_int_equal(watch_alarm_init(&a, &cfg, 0), -22);
}

static void
test_words(void **state)
{
    assert_int_equal(watch_stat_parse("p99"), WATCH_STAT_P99);
    assert_int_equal(watch_stat_parse("median"), -1);
    assert_int_equal(watch_missing_parse("not_breaching"), WATCH_MISSING_NOT_BREACHING);
    assert_string_equal(watch_state_name(WATCH_INSUFFICIENT_DATA), "INSUFFICIENT_DATA");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),     cmocka_unit_test(test_reason_and_history),
        cmocka_unit_test(test_long_gap), cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_words),
    };

    return cmocka_run_group_tests_name("alarm", tests, NULL, NULL);
}
