/*
 * Scaling policy arithmetic (see policy.h): step policies with cooldowns and
 * target tracking with a tolerance band and stabilization windows, bounded
 * by min and max. Pure: the caller supplies the time.
 */
#include "scale/policy.h"

#include <math.h>
#include <string.h>

uint32_t
scale_policy_clamp(const struct scale_policy_cfg *cfg, uint64_t n)
{
    if (n < cfg->min)
        return cfg->min;
    if (n > cfg->max)
        return cfg->max;
    return (uint32_t)n;
}

void
scale_policy_init(struct scale_policy *p, const struct scale_policy_cfg *cfg, uint32_t desired)
{
    memset(p, 0, sizeof(*p));
    p->cfg = *cfg;
    p->desired = scale_policy_clamp(cfg, desired);
}

void
scale_policy_set_cfg(struct scale_policy *p, const struct scale_policy_cfg *cfg)
{
    p->cfg = *cfg;
    p->desired = scale_policy_clamp(cfg, p->desired);
}

void
scale_policy_set_desired(struct scale_policy *p, uint32_t n, uint64_t now_ms)
{
    (void)now_ms;
    p->desired = scale_policy_clamp(&p->cfg, n);
}

bool
scale_policy_cooling(const struct scale_policy *p, enum scale_dir dir, uint64_t now_ms)
{
    uint64_t cd;

    if (!p->scaled || dir == SCALE_NONE)
        return false;
    /* The cooldown of the policy that made the last change applies to the
     * whole group (AWS simple scaling). */
    cd = p->last_out ? p->cfg.out_cooldown_ms : p->cfg.in_cooldown_ms;
    return now_ms < p->last_ms + cd;
}

/* Servers one step moves. A percentage rounds down as AWS's does (150 %
 * of 3 is 4, not 5) but never below one or min_adj: a step that moves
 * nothing would leave an alarm raised for ever. */
static uint32_t
step_size(uint32_t count, uint32_t pct, uint32_t min_adj, uint32_t current)
{
    if (pct > 0) {
        uint64_t n = (uint64_t)current * pct / 100;

        if (n < 1)
            n = 1;
        if (n < min_adj)
            n = min_adj;
        return (uint32_t)(n > UINT32_MAX ? UINT32_MAX : n);
    }
    return count < 1 ? 1 : count;
}

static uint32_t
change(struct scale_policy *p, uint32_t n, uint64_t now_ms)
{
    if (n != p->desired) {
        p->last_out = n > p->desired;
        p->desired = n;
        p->scaled = true;
        p->last_ms = now_ms;
    }
    return p->desired;
}

uint32_t
scale_policy_step(struct scale_policy *p, enum scale_dir dir, uint32_t current, uint64_t now_ms,
                  const char **why)
{
    const char *dummy;
    uint64_t n;

    if (why == NULL)
        why = &dummy;
    *why = NULL;
    if (dir == SCALE_NONE)
        return p->desired;
    if (scale_policy_cooling(p, dir, now_ms)) {
        *why = "cooling down";
        return p->desired;
    }
    /* Steps start from what is there or coming, as AWS's do, but never
     * from below the desired size already asked for on the way out. */
    if (dir == SCALE_OUT) {
        uint64_t base = current > p->desired ? current : p->desired;

        n = base + step_size(p->cfg.add, p->cfg.add_pct, p->cfg.add_min, (uint32_t)base);
    } else {
        uint64_t base = current < p->desired ? current : p->desired;
        uint32_t k = step_size(p->cfg.remove, p->cfg.remove_pct, p->cfg.remove_min, (uint32_t)base);

        n = base > k ? base - k : 0;
    }
    n = scale_policy_clamp(&p->cfg, n);
    if (n == p->desired)
        *why = dir == SCALE_OUT ? "at max" : "at min";
    return change(p, (uint32_t)n, now_ms);
}

uint32_t
scale_policy_recommend(const struct scale_policy_cfg *cfg, uint32_t current, double value)
{
    double ratio, want;

    if (current == 0)
        current = 1;
    if (!(cfg->target > 0) || isnan(value) || value < 0)
        return scale_policy_clamp(cfg, current);
    ratio = value / cfg->target;
    if (fabs(ratio - 1.0) <= cfg->tolerance + 1e-9)
        return scale_policy_clamp(cfg, current);
    want = ceil((double)current * ratio - 1e-9);
    if (want < 0)
        want = 0;
    if (want > (double)UINT32_MAX)
        want = (double)UINT32_MAX;
    return scale_policy_clamp(cfg, (uint64_t)want);
}

static void
record(struct scale_policy *p, uint64_t now_ms, uint32_t n)
{
    p->recs[p->head] = (struct scale_rec){.t = now_ms, .n = n};
    p->head = (p->head + 1) % SCALE_POLICY_HISTORY;
    if (p->nrecs < SCALE_POLICY_HISTORY)
        p->nrecs++;
}

/* The lowest (out) or highest (in) recommendation within window ms. */
static uint32_t
stabilized(const struct scale_policy *p, uint64_t now_ms, uint64_t window, bool lowest)
{
    uint32_t best = lowest ? UINT32_MAX : 0;

    for (unsigned i = 0; i < p->nrecs; i++) {
        unsigned k = (p->head + SCALE_POLICY_HISTORY - 1 - i) % SCALE_POLICY_HISTORY;
        const struct scale_rec *r = &p->recs[k];

        if (i > 0 && r->t + window < now_ms)
            break;
        if (lowest ? r->n < best : r->n > best)
            best = r->n;
    }
    return best;
}

uint32_t
scale_policy_track(struct scale_policy *p, uint32_t current, double value, uint64_t now_ms,
                   const char **why)
{
    const char *dummy;
    uint32_t rec, n;

    if (why == NULL)
        why = &dummy;
    *why = NULL;
    rec = scale_policy_recommend(&p->cfg, current, value);
    record(p, now_ms, rec);
    if (rec > p->desired) {
        n = stabilized(p, now_ms, p->cfg.out_window_ms, true);
        if (n <= p->desired) {
            *why = "scale-out stabilization window";
            return p->desired;
        }
        if (scale_policy_cooling(p, SCALE_OUT, now_ms)) {
            *why = "cooling down";
            return p->desired;
        }
    } else if (rec < p->desired) {
        n = stabilized(p, now_ms, p->cfg.in_window_ms, false);
        if (n >= p->desired) {
            *why = "scale-in stabilization window";
            return p->desired;
        }
        if (scale_policy_cooling(p, SCALE_IN, now_ms)) {
            *why = "cooling down";
            return p->desired;
        }
    } else {
        *why = "at the recommendation";
        return p->desired;
    }
    return change(p, scale_policy_clamp(&p->cfg, n), now_ms);
}
