/*
 * Alarm evaluation with CloudWatch's semantics, as pure code: no clock, no
 * I/O, no host. The caller feeds samples with their times and says what
 * time it is; the alarm turns samples into one datapoint per period (the
 * configured statistic over the period's samples) and, each time a period
 * closes, looks at the last N datapoints:
 *
 *   - a datapoint breaches when it is above (or below) the threshold;
 *   - a period without samples is missing, and counts as the alarm's
 *     missing_data says: `breaching`, `not_breaching`, or skipped
 *     (`missing` and `ignore`);
 *   - M breaching datapoints among the last N (datapoints_to_alarm out of
 *     evaluation_periods, not necessarily consecutive) put it in ALARM;
 *   - otherwise, with no datapoint at all among the last N, `missing` goes
 *     to INSUFFICIENT_DATA; else OK;
 *   - with `ignore`, a period without data changes nothing at all: the
 *     state stays until a period with data is evaluated.
 *
 * The window is exactly the last N closed periods since the alarm started
 * (fewer at first): there is no hidden look-back. A new alarm starts in
 * INSUFFICIENT_DATA. The reason of each change is kept, in CloudWatch's
 * words, with the datapoints that decided it.
 */
#ifndef WATCH_ALARM_H
#define WATCH_ALARM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum watch_stat {
    WATCH_STAT_AVERAGE = 0,
    WATCH_STAT_MINIMUM,
    WATCH_STAT_MAXIMUM,
    WATCH_STAT_SUM,
    WATCH_STAT_P95,
    WATCH_STAT_P99,
};

enum watch_cmp { WATCH_ABOVE = 0, WATCH_BELOW };

enum watch_missing {
    WATCH_MISSING_MISSING = 0,
    WATCH_MISSING_IGNORE,
    WATCH_MISSING_BREACHING,
    WATCH_MISSING_NOT_BREACHING,
};

enum watch_state { WATCH_INSUFFICIENT_DATA = 0, WATCH_OK, WATCH_ALARM };

struct watch_alarm_cfg {
    const char *name;
    const char *metric;
    enum watch_stat stat;
    enum watch_cmp cmp;
    double threshold;
    uint64_t period_ms;
    uint32_t evaluation_periods;  /* N */
    uint32_t datapoints_to_alarm; /* M, 1..N */
    enum watch_missing missing;
};

/* One datapoint: the statistic of a closed period, or missing. */
struct watch_point {
    uint64_t t; /* end of its period, in the caller's clock (ms) */
    double value;
    bool missing;
};

#define WATCH_HISTORY 60

struct watch_alarm {
    struct watch_alarm_cfg cfg;
    enum watch_state state;
    char reason[512];
    uint64_t last_change; /* ms; the start time until the first change */
    double value;         /* the last datapoint; NaN when missing or none */
    uint64_t origin;      /* start of period 0 */
    uint64_t open;        /* index of the period samples go to now */
    double *samples;      /* of the open period */
    size_t nsamples, capsamples;
    struct watch_point *window; /* ring of the last N datapoints */
    size_t nwindow, wpos;
    struct watch_point history[WATCH_HISTORY]; /* ring of recent datapoints */
    size_t nhistory, hpos;
};

/* Called for each change of state; a->state is the new one. */
typedef void (*watch_change_cb)(void *arg, struct watch_alarm *a, enum watch_state from);

/* Starts an alarm whose first period begins at origin_ms. cfg's strings are
 * not copied. Returns 0, -EINVAL (bad period or M/N) or -ENOMEM. */
int watch_alarm_init(struct watch_alarm *a, const struct watch_alarm_cfg *cfg, uint64_t origin_ms);
void watch_alarm_free(struct watch_alarm *a);

/* Closes every period that ended at or before now_ms, evaluating after each
 * one; calls cb (may be NULL) on each change. Returns the number of
 * changes. */
int watch_alarm_advance(struct watch_alarm *a, uint64_t now_ms, watch_change_cb cb, void *arg);

/* Advances to t_ms, then adds the sample v taken at t_ms to its period.
 * Returns the number of changes, or -ENOMEM. */
int watch_alarm_add(struct watch_alarm *a, uint64_t t_ms, double v, watch_change_cb cb, void *arg);

/* The statistic of n values (n > 0); values is reordered. */
double watch_statistic(enum watch_stat stat, double *values, size_t n);

/* Copies the datapoints of the history, oldest first, into out (up to cap);
 * returns how many. */
size_t watch_alarm_history(const struct watch_alarm *a, struct watch_point *out, size_t cap);

/* Names for config words and JSON; parsing returns -1 for an unknown word. */
const char *watch_state_name(enum watch_state s);
int watch_stat_parse(const char *s);
int watch_missing_parse(const char *s);

#endif
