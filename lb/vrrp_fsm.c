/*
 * RFC 5798 section 6.4 as code (see lb/vrrp_fsm.h). Each event handler
 * follows the RFC's text for the state it is in; the section numbers sit
 * next to the rule they implement. RFC 9568 (which obsoletes 5798 without
 * changing the wire) is cited where tern follows its clarifications.
 */
#include "lb/vrrp_fsm.h"

#include <string.h>
#include <sys/socket.h>

static const char *const state_names[] = {"INIT", "BACKUP", "MASTER", "FAULT"};

const char *
vrrp_state_name(enum vrrp_state s)
{
    if ((unsigned)s >= sizeof(state_names) / sizeof(state_names[0]))
        return "UNKNOWN";
    return state_names[s];
}

static size_t
addr_len(const struct vrrp_fsm *f)
{
    return f->cfg.family == AF_INET6 ? 16 : 4;
}

static uint64_t
advert_us(const struct vrrp_fsm *f)
{
    return (uint64_t)f->cfg.advert_interval_ms * 1000;
}

uint64_t
vrrp_fsm_skew_us(const struct vrrp_fsm *f)
{
    /* RFC 3768 section 6.1: v2 skews by (256 - Priority) / 256 seconds. */
    if (f->cfg.version == 2)
        return (uint64_t)(256 - f->priority) * 1000000 / 256;
    /* RFC 5798 section 6.1: Skew_Time = ((256 - Priority) *
     * Master_Adver_Interval) / 256. */
    return (uint64_t)(256 - f->priority) * f->master_adver_us / 256;
}

uint64_t
vrrp_fsm_master_down_us(const struct vrrp_fsm *f)
{
    /* RFC 5798 section 6.1: Master_Down_Interval = (3 * Master_Adver_Interval)
     * + Skew_Time. */
    return 3 * f->master_adver_us + vrrp_fsm_skew_us(f);
}

/* Tracking (header): the effective priority. */
static uint8_t
effective_priority(const struct vrrp_fsm *f)
{
    if (f->cfg.priority == 255)
        return 255;
    int p = (int)f->cfg.priority - (int)f->cfg.track_weight * (int)f->track_failed;
    return (uint8_t)(p < 1 ? 1 : p);
}

static bool
faulty(const struct vrrp_fsm *f)
{
    return f->if_down || (f->cfg.track_weight == 0 && f->track_failed > 0);
}

static void
go(struct vrrp_fsm *f, enum vrrp_state to, struct vrrp_fsm_out *out)
{
    if (f->state != to) {
        out->actions |= VRRP_ACT_NOTIFY;
        out->to = to;
    }
    f->state = to;
}

static void
out_begin(const struct vrrp_fsm *f, struct vrrp_fsm_out *out)
{
    out->actions = 0;
    out->from = out->to = f->state;
}

void
vrrp_fsm_init(struct vrrp_fsm *f, const struct vrrp_fsm_cfg *cfg)
{
    memset(f, 0, sizeof(*f));
    f->cfg = *cfg;
    f->state = VRRP_INIT;
    f->priority = effective_priority(f);
    f->master_adver_us = advert_us(f);
}

static void
become_master(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out)
{
    /* RFC 5798 section 6.4.1 and 6.4.2: send an ADVERTISEMENT, broadcast a
     * gratuitous ARP (unsolicited NA) for each address, start the
     * Adver_Timer, transition to Master. The advertisement goes first, as
     * keepalived does, so the old master lets go before the address moves. */
    out->actions |= VRRP_ACT_SEND_ADVERT | VRRP_ACT_ADD_VIPS | VRRP_ACT_SEND_GARP | VRRP_ACT_TIMERS;
    f->master_down_at = 0;
    f->adver_at = now + advert_us(f);
    f->master_adver_us = advert_us(f);
    memcpy(f->master_addr, f->cfg.primary, addr_len(f));
    f->master_known = true;
    f->became_master++;
    go(f, VRRP_MASTER, out);
}

/* RFC 5798 section 6.4.1, the Startup event of Initialize. */
static void
start(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out)
{
    f->preempt_from = now + f->cfg.preempt_delay_us;
    f->master_known = false;
    if (faulty(f)) {
        out->actions |= VRRP_ACT_TIMERS;
        f->adver_at = f->master_down_at = 0;
        go(f, VRRP_FAULT, out);
        return;
    }
    if (f->priority == 255) {
        /* "If the Priority = 255 (i.e., the router owns the IPvX address(es)
         * associated with the virtual router)": Master at once. */
        become_master(f, now, out);
        return;
    }
    /* "Set Master_Adver_Interval to Advertisement_Interval; Set the
     * Master_Down_Timer to Master_Down_Interval; Transition to the Backup
     * state." */
    f->master_adver_us = advert_us(f);
    f->adver_at = 0;
    f->master_down_at = now + vrrp_fsm_master_down_us(f);
    out->actions |= VRRP_ACT_TIMERS;
    go(f, VRRP_BACKUP, out);
}

unsigned
vrrp_fsm_startup(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out)
{
    out_begin(f, out);
    if (f->running)
        return 0;
    f->running = true;
    start(f, now, out);
    return out->actions;
}

/* Leaving Master for any reason other than a better master: RFC 5798
 * section 6.4.3 Shutdown, "Stop the Adver_Timer, Send an ADVERTISEMENT with
 * Priority = 0". The addresses go with it (a backup must not answer for
 * them, section 6.4.2). */
static void
leave_master_gracefully(struct vrrp_fsm *f, struct vrrp_fsm_out *out)
{
    out->actions |= VRRP_ACT_SEND_PRIO0 | VRRP_ACT_DEL_VIPS;
}

unsigned
vrrp_fsm_shutdown(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out)
{
    out_begin(f, out);
    if (!f->running)
        return 0;
    f->running = false;
    /* RFC 5798 section 6.4.2 (Backup): "Stop the Master_Down_Timer,
     * Transition to the Initialize state"; section 6.4.3 (Master): also
     * send priority 0 so the backup takes over after Skew_Time. */
    if (f->state == VRRP_MASTER)
        leave_master_gracefully(f, out);
    f->adver_at = f->master_down_at = 0;
    f->master_known = false;
    out->actions |= VRRP_ACT_TIMERS;
    go(f, VRRP_INIT, out);
    return out->actions;
}

/* Unsigned comparison of two addresses in network order (RFC 5798 section
 * 6.4.3: "the primary IPvX address of the sender is greater than the local
 * primary IPvX address"). */
static int
addr_cmp(const struct vrrp_fsm *f, const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, addr_len(f));
}

unsigned
vrrp_fsm_advert(struct vrrp_fsm *f, uint64_t now, uint8_t priority, const uint8_t *src,
                uint32_t interval_ms, struct vrrp_fsm_out *out)
{
    out_begin(f, out);
    uint64_t interval_us = (uint64_t)interval_ms * 1000;
    if (f->state == VRRP_BACKUP) {
        /* RFC 5798 section 6.4.2: "If the Priority in the ADVERTISEMENT is
         * zero, then: Set the Master_Down_Timer to Skew_Time". */
        if (priority == 0) {
            f->master_down_at = now + vrrp_fsm_skew_us(f);
            out->actions |= VRRP_ACT_TIMERS;
            return out->actions;
        }
        /* "If Preempt_Mode is False, or if the Priority in the ADVERTISEMENT
         * is greater than or equal to the local Priority, then: Set
         * Master_Adver_Interval to Adver Interval contained in the
         * ADVERTISEMENT, Recompute the Skew_Time, Recompute the
         * Master_Down_Interval, Reset the Master_Down_Timer to
         * Master_Down_Interval". preempt_delay keeps preemption off for a
         * while after (re)start, as keepalived's extension does. */
        bool preempt = f->cfg.preempt && now >= f->preempt_from;
        if (!preempt || priority >= f->priority) {
            /* RFC 3768 has no Master_Adver_Interval: v2 intervals must
             * match (checked by the decoder), so ours stays. */
            if (f->cfg.version == 3)
                f->master_adver_us = interval_us;
            f->master_down_at = now + vrrp_fsm_master_down_us(f);
            memcpy(f->master_addr, src, addr_len(f));
            f->master_known = true;
            out->actions |= VRRP_ACT_TIMERS;
        }
        /* "Otherwise: Discard the ADVERTISEMENT": our timer runs out and we
         * preempt. */
        return out->actions;
    }
    if (f->state != VRRP_MASTER)
        return 0; /* Initialize and Fault ignore advertisements */

    /* RFC 5798 section 6.4.3: "If the Priority in the ADVERTISEMENT is zero,
     * then: Send an ADVERTISEMENT, Reset the Adver_Timer to
     * Advertisement_Interval". */
    if (priority == 0) {
        f->adver_at = now + advert_us(f);
        out->actions |= VRRP_ACT_SEND_ADVERT | VRRP_ACT_TIMERS;
        return out->actions;
    }
    /* "If the Priority in the ADVERTISEMENT is greater than the local
     * Priority, or the Priority in the ADVERTISEMENT is equal to the local
     * Priority and the primary IPvX Address of the sender is greater than the
     * local primary IPvX Address, then: Cancel Adver_Timer, Set
     * Master_Adver_Interval to Adver Interval contained in the ADVERTISEMENT,
     * Recompute the Skew_Time, Recompute the Master_Down_Interval, Set
     * Master_Down_Timer to Master_Down_Interval, Transition to the Backup
     * state". */
    if (priority > f->priority ||
        (priority == f->priority && addr_cmp(f, src, f->cfg.primary) > 0)) {
        f->adver_at = 0;
        if (f->cfg.version == 3)
            f->master_adver_us = interval_us;
        f->master_down_at = now + vrrp_fsm_master_down_us(f);
        memcpy(f->master_addr, src, addr_len(f));
        f->master_known = true;
        /* No priority 0 here: a better master is already running. */
        out->actions |= VRRP_ACT_DEL_VIPS | VRRP_ACT_TIMERS;
        go(f, VRRP_BACKUP, out);
        return out->actions;
    }
    /* "Otherwise: Discard the ADVERTISEMENT". RFC 9568 section 6.4.3 adds
     * that an Active (master) router hearing a lower priority sends an
     * advertisement at once, and keepalived re-announces the addresses too:
     * two masters (after a partition healed) end in one interval, and hosts
     * that followed the other one's ARP come back. */
    f->adver_at = now + advert_us(f);
    out->actions |= VRRP_ACT_SEND_ADVERT | VRRP_ACT_SEND_GARP | VRRP_ACT_TIMERS;
    return out->actions;
}

unsigned
vrrp_fsm_master_down(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out)
{
    out_begin(f, out);
    if (f->state != VRRP_BACKUP || f->master_down_at == 0)
        return 0;
    /* RFC 5798 section 6.4.2: "If the Master_Down_Timer fires, then: Send
     * an ADVERTISEMENT, ..., Transition to the Master state". */
    become_master(f, now, out);
    return out->actions;
}

unsigned
vrrp_fsm_adver_timer(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out)
{
    out_begin(f, out);
    if (f->state != VRRP_MASTER || f->adver_at == 0)
        return 0;
    /* RFC 5798 section 6.4.3: "If the Adver_Timer fires, then: Send an
     * ADVERTISEMENT, Reset the Adver_Timer to Advertisement_Interval". The
     * next deadline follows the previous one, not the (possibly late) call,
     * so the rate does not drift; after a long stall it restarts from now
     * rather than sending a burst. */
    uint64_t next = f->adver_at + advert_us(f);
    if (next <= now)
        next = now + advert_us(f);
    f->adver_at = next;
    out->actions |= VRRP_ACT_SEND_ADVERT | VRRP_ACT_TIMERS;
    return out->actions;
}

unsigned
vrrp_fsm_track(struct vrrp_fsm *f, uint64_t now, unsigned failed, bool if_down,
               struct vrrp_fsm_out *out)
{
    out_begin(f, out);
    bool was_faulty = faulty(f);
    uint8_t old_priority = f->priority;
    f->track_failed = failed;
    f->if_down = if_down;
    f->priority = effective_priority(f);
    if (!f->running)
        return 0; /* remembered for startup */

    if (faulty(f) && !was_faulty) {
        /* Fault (keepalived's state, not RFC 5798's): a master leaves as on
         * Shutdown, with priority 0, so the backup takes over after
         * Skew_Time instead of Master_Down_Interval. */
        if (f->state == VRRP_MASTER)
            leave_master_gracefully(f, out);
        f->adver_at = f->master_down_at = 0;
        f->master_known = false;
        out->actions |= VRRP_ACT_TIMERS;
        go(f, VRRP_FAULT, out);
        return out->actions;
    }
    if (!faulty(f) && was_faulty && f->state == VRRP_FAULT) {
        /* Leaving Fault is a new Startup (RFC 5798 section 6.4.1), and
         * preempt_delay counts from it (keepalived fixed the opposite as a
         * bug, #295). */
        start(f, now, out);
        return out->actions;
    }
    if (f->state == VRRP_MASTER && f->priority != old_priority) {
        /* Tell the backups at once: a better one stops accepting our
         * advertisements from this one on and takes over one interval
         * sooner than if we waited for the Adver_Timer. */
        f->adver_at = now + advert_us(f);
        out->actions |= VRRP_ACT_SEND_ADVERT | VRRP_ACT_TIMERS;
    }
    return out->actions;
}
