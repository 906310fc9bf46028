/*
 * Scaling policy of one group, as pure code (no I/O, no clock of its own):
 * what the desired size becomes after a step policy fires on an alarm, or
 * after target tracking sees a metric value. The group runtime (group.c)
 * feeds it the time in milliseconds; the unit tests feed it tables.
 *
 * Step policies (AWS simple/step scaling): a raised scale-out alarm adds
 * `add` servers, a raised scale-in alarm removes `remove`; after a change
 * the group's size is left alone for that policy's cooldown. A percentage
 * step (add_pct, remove_pct) is AWS's PercentChangeInCapacity: pct % of the
 * current size rounded down, at least one, and at least add_min or
 * remove_min (MinAdjustmentMagnitude), so a small group still moves.
 *
 * Target tracking (Kubernetes HPA): desired = ceil(current × value / target),
 * unchanged while value / target is within the tolerance band around 1.
 * Recommendations are kept for the stabilization windows: a scale-out takes
 * the lowest recommendation of the scale-out window, a scale-in the highest
 * of the scale-in window, so a flapping metric does not resize the group on
 * every dip. Everything is clamped to min..max.
 */
#ifndef TERN_SCALE_POLICY_H
#define TERN_SCALE_POLICY_H

#include <stdbool.h>
#include <stdint.h>

/* The longest stabilization window (the schema's bound, the HPA's too) and
 * room for a recommendation every 0.5 s tick over all of it: a window the
 * ring cannot hold would end early and let a scale-in through. */
#define SCALE_POLICY_WINDOW_MAX_MS 3600000
#define SCALE_POLICY_HISTORY (SCALE_POLICY_WINDOW_MAX_MS / 500 + 2)

struct scale_policy_cfg {
    uint32_t min, max;
    uint32_t add, remove;         /* servers per step; used when the _pct is 0 */
    uint32_t add_pct, remove_pct; /* percent of the current size per step */
    uint32_t add_min, remove_min; /* fewest servers a percent step moves */
    uint64_t out_cooldown_ms, in_cooldown_ms;
    bool tracking;
    double target;
    double tolerance;       /* 0.1: ±10 % of the target does nothing */
    uint64_t out_window_ms; /* scale-out stabilization window (0: none) */
    uint64_t in_window_ms;  /* scale-in stabilization window (HPA: 300 s) */
};

struct scale_rec {
    uint64_t t;
    uint32_t n;
};

struct scale_policy {
    struct scale_policy_cfg cfg;
    uint32_t desired;
    bool scaled;      /* last_ms is valid */
    uint64_t last_ms; /* time of the last change of desired */
    bool last_out;    /* direction of that change */
    struct scale_rec recs[SCALE_POLICY_HISTORY];
    unsigned nrecs, head; /* ring of target-tracking recommendations */
};

enum scale_dir { SCALE_IN = -1, SCALE_NONE = 0, SCALE_OUT = 1 };

/* Sets the config and the desired size (clamped). */
void scale_policy_init(struct scale_policy *p, const struct scale_policy_cfg *cfg,
                       uint32_t desired);

/* Replaces the config (a reload), keeping history; desired is re-clamped. */
void scale_policy_set_cfg(struct scale_policy *p, const struct scale_policy_cfg *cfg);

uint32_t scale_policy_clamp(const struct scale_policy_cfg *cfg, uint64_t n);

/* True while the cooldown of the last change blocks a change in dir. */
bool scale_policy_cooling(const struct scale_policy *p, enum scale_dir dir, uint64_t now_ms);

/*
 * A step policy fired (its alarm is in ALARM) with `current` servers in
 * service or coming. Returns the new desired size, which is p->desired
 * unchanged when cooling down or at a bound; *why (may be NULL) gets a
 * static phrase explaining a non-change.
 */
uint32_t scale_policy_step(struct scale_policy *p, enum scale_dir dir, uint32_t current,
                           uint64_t now_ms, const char **why);

/* The raw HPA recommendation, clamped: ceil(current × value / target), or
 * current within the tolerance band. current 0 counts as 1. */
uint32_t scale_policy_recommend(const struct scale_policy_cfg *cfg, uint32_t current, double value);

/*
 * Target tracking saw `value` with `current` servers. Records the
 * recommendation and returns the new desired size after the stabilization
 * windows and cooldowns (p->desired when unchanged).
 */
uint32_t scale_policy_track(struct scale_policy *p, uint32_t current, double value, uint64_t now_ms,
                            const char **why);

/* Forces desired (an operator, adoption after a restart), clamped. */
void scale_policy_set_desired(struct scale_policy *p, uint32_t n, uint64_t now_ms);

#endif
