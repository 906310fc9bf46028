/*
 * Alarm evaluation (see alarm.h): samples become one datapoint per period,
 * datapoints are judged M out of N with an explicit treatment of missing
 * periods, and each change of state keeps its reason.
 *
 * Pure code on purpose: the unit tests (tests/unit/test_alarm.c) drive it
 * with tables of series and expected states, without a clock or a daemon.
 */
#include "watch/alarm.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const stat_names[] = {"average", "minimum", "maximum", "sum",
                                         "p95",     "p99",     NULL};
static const char *const missing_names[] = {"missing", "ignore", "breaching", "not_breaching",
                                            NULL};

static int
word(const char *const *names, const char *s)
{
    for (int i = 0; s != NULL && names[i] != NULL; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

int
watch_stat_parse(const char *s)
{
    return word(stat_names, s);
}

int
watch_missing_parse(const char *s)
{
    return word(missing_names, s);
}

const char *
watch_state_name(enum watch_state s)
{
    switch (s) {
    case WATCH_OK:
        return "OK";
    case WATCH_ALARM:
        return "ALARM";
    default:
        return "INSUFFICIENT_DATA";
    }
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least q of the values at or
 * below it, as CloudWatch's percentiles of raw samples. */
static double
percentile(double *v, size_t n, double q)
{
    size_t rank = (size_t)ceil(q * (double)n);

    qsort(v, n, sizeof(*v), cmp_double);
    return v[rank > 0 ? rank - 1 : 0];
}

double
watch_statistic(enum watch_stat stat, double *v, size_t n)
{
    double r = v[0];

    switch (stat) {
    case WATCH_STAT_MINIMUM:
        for (size_t i = 1; i < n; i++)
            r = v[i] < r ? v[i] : r;
        return r;
    case WATCH_STAT_MAXIMUM:
        for (size_t i = 1; i < n; i++)
            r = v[i] > r ? v[i] : r;
        return r;
    case WATCH_STAT_SUM:
    case WATCH_STAT_AVERAGE:
        for (size_t i = 1; i < n; i++)
            r += v[i];
        return stat == WATCH_STAT_SUM ? r : r / (double)n;
    case WATCH_STAT_P95:
        return percentile(v, n, 0.95);
    case WATCH_STAT_P99:
        return percentile(v, n, 0.99);
    }
    return NAN;
}

int
watch_alarm_init(struct watch_alarm *a, const struct watch_alarm_cfg *cfg, uint64_t origin_ms)
{
    memset(a, 0, sizeof(*a));
    if (cfg->period_ms == 0 || cfg->evaluation_periods == 0 || cfg->datapoints_to_alarm == 0 ||
        cfg->datapoints_to_alarm > cfg->evaluation_periods)
        return -EINVAL;
    a->cfg = *cfg;
    a->window = calloc(cfg->evaluation_periods, sizeof(*a->window));
    if (a->window == NULL)
        return -ENOMEM;
    a->state = WATCH_INSUFFICIENT_DATA;
    snprintf(a->reason, sizeof(a->reason), "Unchecked: Initial alarm creation");
    a->origin = origin_ms;
    a->last_change = origin_ms;
    a->value = NAN;
    return 0;
}

void
watch_alarm_free(struct watch_alarm *a)
{
    free(a->samples);
    free(a->window);
    a->samples = NULL;
    a->window = NULL;
}

static bool
breaches(const struct watch_alarm *a, double v)
{
    return a->cfg.cmp == WATCH_ABOVE ? v > a->cfg.threshold : v < a->cfg.threshold;
}

/* The window's datapoints, newest first, as "[83.2, 75, -]". */
static void
window_text(const struct watch_alarm *a, char *buf, size_t size)
{
    size_t len = 0, n = a->nwindow, cap = a->cfg.evaluation_periods;

    len += (size_t)snprintf(buf, size, "[");
    for (size_t i = 0; i < n && len < size; i++) {
        const struct watch_point *p = &a->window[(a->wpos + cap - 1 - i) % cap];

        if (p->missing)
            len += (size_t)snprintf(buf + len, size - len, "%s-", i ? ", " : "");
        else
            len += (size_t)snprintf(buf + len, size - len, "%s%.6g", i ? ", " : "", p->value);
    }
    if (len < size)
        snprintf(buf + len, size - len, "]");
}

static int
evaluate(struct watch_alarm *a, uint64_t t, watch_change_cb cb, void *arg)
{
    const struct watch_alarm_cfg *c = &a->cfg;
    size_t present = 0, breaching = 0, missing = 0;
    enum watch_state to = a->state, from = a->state;
    const char *cmp = c->cmp == WATCH_ABOVE ? "greater than" : "less than";
    char points[256];

    /* ignore: a period without data changes nothing (CloudWatch: "the
     * current alarm state is maintained"); the next datapoint decides. */
    if (c->missing == WATCH_MISSING_IGNORE &&
        a->window[(a->wpos + c->evaluation_periods - 1) % c->evaluation_periods].missing)
        return 0;
    for (size_t i = 0; i < a->nwindow; i++) {
        const struct watch_point *p = &a->window[i];

        if (p->missing) {
            missing++;
        } else {
            present++;
            breaching += breaches(a, p->value);
        }
    }
    if (c->missing == WATCH_MISSING_BREACHING)
        breaching += missing;
    if (c->missing == WATCH_MISSING_BREACHING || c->missing == WATCH_MISSING_NOT_BREACHING)
        present += missing;

    if (breaching >= c->datapoints_to_alarm)
        to = WATCH_ALARM;
    else if (present == 0 && c->missing == WATCH_MISSING_MISSING)
        to = WATCH_INSUFFICIENT_DATA;
    else if (present > 0)
        to = WATCH_OK;
    if (to == from)
        return 0;

    window_text(a, points, sizeof(points));
    if (to == WATCH_ALARM)
        snprintf(a->reason, sizeof(a->reason),
                 "Threshold Crossed: %zu out of the last %zu datapoints %s were %s the threshold "
                 "(%.6g) (minimum %u datapoints for %s -> ALARM transition).",
                 breaching, a->nwindow, points, cmp, c->threshold, c->datapoints_to_alarm,
                 watch_state_name(from));
    else if (to == WATCH_OK)
        snprintf(a->reason, sizeof(a->reason),
                 "Threshold Crossed: %zu out of the last %zu datapoints %s %s %s the threshold "
                 "(%.6g), fewer than the %u needed for ALARM.",
                 breaching, a->nwindow, points, breaching == 1 ? "was" : "were", cmp, c->threshold,
                 c->datapoints_to_alarm);
    else
        snprintf(a->reason, sizeof(a->reason),
                 "Insufficient Data: no datapoint in the last %zu period%s of %.6gs %s.",
                 a->nwindow, a->nwindow == 1 ? "" : "s", (double)c->period_ms / 1000.0, points);
    a->state = to;
    a->last_change = t;
    if (cb != NULL)
        cb(arg, a, from);
    return 1;
}

/* Closes the open period: its datapoint goes into the window. */
static int
close_period(struct watch_alarm *a, watch_change_cb cb, void *arg)
{
    uint64_t end = a->origin + (a->open + 1) * a->cfg.period_ms;
    struct watch_point p = {.t = end, .missing = a->nsamples == 0, .value = NAN};
    size_t cap = a->cfg.evaluation_periods;

    if (a->nsamples > 0)
        p.value = watch_statistic(a->cfg.stat, a->samples, a->nsamples);
    a->nsamples = 0;
    a->open++;
    a->window[a->wpos] = p;
    a->wpos = (a->wpos + 1) % cap;
    if (a->nwindow < cap)
        a->nwindow++;
    a->history[a->hpos] = p;
    a->hpos = (a->hpos + 1) % WATCH_HISTORY;
    if (a->nhistory < WATCH_HISTORY)
        a->nhistory++;
    a->value = p.value;
    return evaluate(a, end, cb, arg);
}

int
watch_alarm_advance(struct watch_alarm *a, uint64_t now_ms, watch_change_cb cb, void *arg)
{
    int changes = 0;

    if (now_ms < a->origin)
        return 0;
    /* A long stall closes many periods; beyond N of them they would all be
     * missing and only the last N matter, so skip ahead. */
    uint64_t target = (now_ms - a->origin) / a->cfg.period_ms;
    if (target > a->open + a->cfg.evaluation_periods + 1) {
        a->nsamples = 0;
        a->open = target - a->cfg.evaluation_periods - 1;
    }
    while (a->open < target)
        changes += close_period(a, cb, arg);
    return changes;
}

int
watch_alarm_add(struct watch_alarm *a, uint64_t t_ms, double v, watch_change_cb cb, void *arg)
{
    int changes = watch_alarm_advance(a, t_ms, cb, arg);

    if (t_ms < a->origin || isnan(v))
        return changes;
    if (a->nsamples == a->capsamples) {
        size_t cap = a->capsamples ? a->capsamples * 2 : 16;
        double *s = realloc(a->samples, cap * sizeof(*s));

        if (s == NULL)
            return -ENOMEM;
        a->samples = s;
        a->capsamples = cap;
    }
    a->samples[a->nsamples++] = v;
    return changes;
}

size_t
watch_alarm_history(const struct watch_alarm *a, struct watch_point *out, size_t cap)
{
    size_t n = a->nhistory < cap ? a->nhistory : cap;
    size_t start = (a->hpos + WATCH_HISTORY - n) % WATCH_HISTORY;

    for (size_t i = 0; i < n; i++)
        out[i] = a->history[(start + i) % WATCH_HISTORY];
    return n;
}
