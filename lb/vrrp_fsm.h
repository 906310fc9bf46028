/*
 * The VRRP state machine of RFC 5798 section 6.4 (Initialize, Backup,
 * Master), plus the Fault state keepalived users know, as pure code: events
 * in (startup, shutdown, an accepted advertisement, the two timers, a change
 * of tracked objects), each with the current time, and actions out (send an
 * advertisement, send priority 0, add or remove the virtual addresses,
 * announce them, re-arm timers, run the notify script). The runtime
 * (lb/vrrp.c) performs the actions and keeps one libev timer per deadline;
 * the unit tests drive the same code with a fake clock.
 *
 * Times are microseconds of a monotonic clock; a deadline of 0 means the
 * timer is stopped, so clocks must start above 0.
 *
 * Accept_Mode (RFC 5798 section 6.1): a router that does not own the
 * addresses accepts packets sent to them only when Accept_Mode is true. A
 * load balancer exists to serve on its virtual addresses, so tern runs with
 * Accept_Mode true while master: the addresses are ordinary interface
 * addresses and the kernel delivers to the listeners. `accept` defaults to
 * true and the configuration refuses false (except for an owner, which
 * always accepts): enforcing it would take firewall rules, keepalived's
 * most reported "VIP does not answer" cause. A backup never holds the
 * addresses, so it accepts nothing for them, as the RFC asks.
 *
 * Tracking: with track_weight > 0 each failed tracked object lowers the
 * priority by that weight (never below 1; the owner's 255 never moves), so
 * a healthier backup with preemption takes over after its
 * Master_Down_Interval. With track_weight 0 any failure means Fault: a
 * master sends priority 0 and leaves at once, so the backup takes over after
 * Skew_Time. Losing the instance's own interface is always Fault.
 */
#ifndef LB_VRRP_FSM_H
#define LB_VRRP_FSM_H

#include <stdbool.h>
#include <stdint.h>

enum vrrp_state { VRRP_INIT = 0, VRRP_BACKUP, VRRP_MASTER, VRRP_FAULT };

/* "INIT", "BACKUP", "MASTER", "FAULT". */
const char *vrrp_state_name(enum vrrp_state s);

/* Actions, to be carried out in this order (bit order). */
enum vrrp_action {
    VRRP_ACT_SEND_PRIO0 = 1u << 0,  /* one advertisement with priority 0 */
    VRRP_ACT_SEND_ADVERT = 1u << 1, /* one advertisement with the effective priority */
    VRRP_ACT_DEL_VIPS = 1u << 2,    /* remove the virtual addresses */
    VRRP_ACT_ADD_VIPS = 1u << 3,    /* add the virtual addresses */
    VRRP_ACT_SEND_GARP = 1u << 4,   /* gratuitous ARP / unsolicited NA for each */
    VRRP_ACT_TIMERS = 1u << 5,      /* adver_at or master_down_at changed */
    VRRP_ACT_NOTIFY = 1u << 6,      /* state changed: run notify(from, to) */
};

struct vrrp_fsm_out {
    unsigned actions;
    enum vrrp_state from, to;
};

struct vrrp_fsm_cfg {
    uint8_t version;  /* 2 or 3 */
    uint8_t priority; /* configured: 1-254, 255 for the address owner */
    uint32_t advert_interval_ms;
    bool preempt;
    uint64_t preempt_delay_us; /* no preemption this long after (re)start */
    bool accept;               /* reported only, see above */
    uint8_t track_weight;      /* 0: a tracked failure means Fault */
    int family;                /* AF_INET or AF_INET6 */
    uint8_t primary[16];       /* our primary address: the tie-break */
};

struct vrrp_fsm {
    struct vrrp_fsm_cfg cfg;
    enum vrrp_state state;
    uint8_t priority;         /* effective priority */
    unsigned track_failed;    /* tracked objects failing now */
    bool if_down;             /* own interface down: Fault whatever the weight */
    bool running;             /* between startup and shutdown */
    uint64_t master_adver_us; /* Master_Adver_Interval (RFC 5798 section 6.1) */
    uint64_t adver_at;        /* Adver_Timer deadline, 0: stopped */
    uint64_t master_down_at;  /* Master_Down_Timer deadline, 0: stopped */
    uint64_t preempt_from;    /* preempt_delay: preemption allowed from then */
    uint8_t master_addr[16];  /* the current master's primary address */
    bool master_known;
    uint64_t became_master; /* times this router became master */
};

void vrrp_fsm_init(struct vrrp_fsm *f, const struct vrrp_fsm_cfg *cfg);

/* RFC 5798 section 6.1: Skew_Time and Master_Down_Interval for the current
 * effective priority and Master_Adver_Interval, in microseconds. */
uint64_t vrrp_fsm_skew_us(const struct vrrp_fsm *f);
uint64_t vrrp_fsm_master_down_us(const struct vrrp_fsm *f);

/* Each returns out->actions. */
unsigned vrrp_fsm_startup(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out);
unsigned vrrp_fsm_shutdown(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out);
/* An advertisement that passed every check of vrrp_adv_decode: its priority,
 * the sender's primary address (IP source, f->cfg.family) and its interval. */
unsigned vrrp_fsm_advert(struct vrrp_fsm *f, uint64_t now, uint8_t priority, const uint8_t *src,
                         uint32_t interval_ms, struct vrrp_fsm_out *out);
/* The timers fired (the caller runs them at their deadlines). */
unsigned vrrp_fsm_master_down(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out);
unsigned vrrp_fsm_adver_timer(struct vrrp_fsm *f, uint64_t now, struct vrrp_fsm_out *out);
/* Tracked objects changed: failed of them fail now; if_down when the
 * instance's own interface lost its link. */
unsigned vrrp_fsm_track(struct vrrp_fsm *f, uint64_t now, unsigned failed, bool if_down,
                        struct vrrp_fsm_out *out);

#endif
