/*
 * The VRRP runtime (see lb/vrrp.h): instances, timers, tracking and scripts
 * around the pure state machine (lb/vrrp_fsm.c) and packet code
 * (lb/vrrp_pkt.c), all on the control thread's libev loop. What talks to
 * the kernel's network side (raw sockets, multicast membership, netlink,
 * gratuitous ARP and Neighbor Advertisements) is in lb/vrrp_net.c; the
 * fatal-signal path (crash slots and their handler) in lb/vrrp_crash.c;
 * what the three share in lb/vrrp_int.h.
 *
 * Per instance: a raw IPPROTO_VRRP socket with IP_HDRINCL (we write the IPv4
 * header ourselves, so the source address that enters the keepalived-style
 * checksum is exactly the one on the wire, and TTL is 255), bound to the
 * interface; a packet socket for gratuitous ARP (IPv6: a raw socket without
 * our header, the link-local source named per packet, and a raw ICMPv6
 * socket for unsolicited Neighbor Advertisements); an ev_io for receive, and a
 * timerfd (in the same loop through an ev_io) for the state machine's
 * deadlines: absolute CLOCK_MONOTONIC times, fired by the kernel's
 * high-resolution timers, so Master_Down_Interval is kept to the
 * microsecond rather than to libev's millisecond, and 10 ms advertisements
 * keep their pace. The loop is the control thread's, which never blocks, so
 * the timing holds while the workers are saturated.
 *
 * Globals: the fatal-signal handler can reach nothing but globals, so the
 * prebuilt priority-0 packets live in crash_slots (lb/vrrp_crash.c: one per
 * instance, published with atomics); and struct lb_ctl has no slot for this
 * module yet, so the module state hangs off one pointer (vrrp_state) that
 * only the control thread touches. Nothing else is global.
 */
#include "lb/vrrp.h"

#include <errno.h>
#include <inttypes.h>
#include <libmnl/libmnl.h>
#include <math.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lb/log.h"
#include "lb/plugin.h"
#include "lb/plugin_host.h"
#include "lb/vrrp_int.h"

extern char **environ;

/* Pool tracking polls the snapshot (a few atomic loads per server): often
 * enough that tracking adds nothing noticeable to health-check time. */
#define TRACK_POLL_S 0.01

struct notify_child {
    ev_child w;
    struct vrrp *v;
    char *what;
    struct notify_child *next;
};

/* See the file comment: the single module pointer, control thread only. */
static struct vrrp *vrrp_state;

/* ---- notify ---- */

static void
on_notify_exit(struct ev_loop *loop, ev_child *w, int revents)
{
    struct notify_child *ch = (struct notify_child *)w;
    struct vrrp *v = ch->v;
    ev_child_stop(loop, w);
    if (!WIFEXITED(w->rstatus) || WEXITSTATUS(w->rstatus) != 0) {
        lb_warn("vrrp: notify %s: %s %d", ch->what,
                WIFEXITED(w->rstatus) ? "exit status" : "killed by signal",
                WIFEXITED(w->rstatus) ? WEXITSTATUS(w->rstatus) : WTERMSIG(w->rstatus));
    }
    for (struct notify_child **p = &v->children; *p; p = &(*p)->next) {
        if (*p == ch) {
            *p = ch->next;
            break;
        }
    }
    free(ch->what);
    free(ch);
}

/* Runs "notify NAME OLD NEW" without waiting for it: posix_spawn (vfork +
 * exec) costs tens of microseconds, and the exit is collected by an
 * ev_child watcher. The child gets default signal dispositions and an empty
 * mask (the daemon ignores SIGPIPE; libev may block signals). */
static void
run_notify(struct vrrp_inst *in, enum vrrp_state from, enum vrrp_state to)
{
    if (!in->notify || !*in->notify)
        return;
    char *argv[] = {in->notify, in->name, (char *)vrrp_state_name(from),
                    (char *)vrrp_state_name(to), NULL};
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    /* And ordinary scheduling (SCHED_RESET_ON_FORK does it too). */
    struct sched_param sp = {.sched_priority = 0};
    posix_spawnattr_setschedpolicy(&attr, SCHED_OTHER);
    posix_spawnattr_setschedparam(&attr, &sp);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSCHEDULER);
    pid_t pid;
    int e = posix_spawn(&pid, in->notify, NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    in->c.notify_runs++;
    if (e != 0) {
        in->c.notify_failed++;
        lb_err("vrrp %s: cannot run notify %s: %s", in->name, in->notify, strerror(e));
        return;
    }
    struct notify_child *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return; /* reaped by libev's SIGCHLD handler all the same */
    ch->v = in->v;
    char what[256];
    snprintf(what, sizeof(what), "%s %s %s %s", in->notify, in->name, vrrp_state_name(from),
             vrrp_state_name(to));
    ch->what = strdup(what);
    ev_child_init(&ch->w, on_notify_exit, pid, 0);
    ev_child_start(in->v->ctl->loop, &ch->w);
    ch->next = in->v->children;
    in->v->children = ch;
}

/* ---- timers and actions ---- */

/* The state machine's two deadlines share one timerfd, armed for the
 * nearer one: an absolute CLOCK_MONOTONIC deadline (the clock of vrrp_mono_us)
 * that the kernel's high-resolution timers fire to the microsecond. An
 * ev_timer would do, but libev hands epoll_wait a timeout rounded up to the
 * millisecond: a takeover would come up to 1 ms after Master_Down_Interval
 * for no reason. */
static void
sync_timers(struct vrrp_inst *in)
{
    uint64_t next = in->fsm.adver_at;
    if (in->fsm.master_down_at && (!next || in->fsm.master_down_at < next))
        next = in->fsm.master_down_at;
    struct itimerspec its = {{0, 0}, {0, 0}};
    if (next) {
        its.it_value.tv_sec = (time_t)(next / 1000000);
        its.it_value.tv_nsec = (long)(next % 1000000) * 1000;
    }
    if (timerfd_settime(in->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        lb_err("vrrp %s: timerfd_settime: %s", in->name, strerror(errno));
}

static void
garp_refresh_update(struct vrrp_inst *in)
{
    struct ev_loop *loop = in->v->ctl->loop;
    if (in->fsm.state == VRRP_MASTER && in->garp_refresh_ms > 0) {
        if (!ev_is_active(&in->garp_t)) {
            double s = (double)in->garp_refresh_ms / 1000.0;
            ev_timer_set(&in->garp_t, s, s);
            ev_timer_start(loop, &in->garp_t);
        }
    } else {
        ev_timer_stop(loop, &in->garp_t);
    }
}

/* Carries out the state machine's actions in the order of enum
 * vrrp_action: priority 0 / advertisement first (the other router reacts
 * while we change addresses), then addresses, then the announcements. */
void
vrrp_apply(struct vrrp_inst *in, const struct vrrp_fsm_out *o, uint64_t now)
{
    unsigned a = o->actions;
    if (a & VRRP_ACT_SEND_PRIO0) {
        /* Twice: one lost packet would cost a Master_Down_Interval. */
        vrrp_send_advert(in, 0);
        vrrp_send_advert(in, 0);
    }
    if (a & VRRP_ACT_SEND_ADVERT)
        vrrp_send_advert(in, in->fsm.priority);
    if (a & VRRP_ACT_DEL_VIPS) {
        vrrp_crash_disarm(in);
        vrrp_vips_del(in, false);
    }
    if (a & VRRP_ACT_ADD_VIPS) {
        vrrp_vips_add(in);
        vrrp_crash_arm(in);
    }
    if (a & VRRP_ACT_SEND_GARP)
        vrrp_send_garps(in, in->garp_repeat);
    if (a & VRRP_ACT_TIMERS)
        sync_timers(in);
    in->c.became_master = in->fsm.became_master;
    if (a & VRRP_ACT_NOTIFY) {
        char m[INET6_ADDRSTRLEN] = "-";
        if (in->fsm.master_known && o->to == VRRP_BACKUP)
            vrrp_addr_text(in, in->fsm.master_addr, m, sizeof(m));
        lb_info("vrrp %s: %s -> %s (priority %u%s%s)", in->name, vrrp_state_name(o->from),
                vrrp_state_name(o->to), in->fsm.priority, o->to == VRRP_BACKUP ? ", master " : "",
                o->to == VRRP_BACKUP ? m : "");
        garp_refresh_update(in);
        run_notify(in, o->from, o->to);
        /* Plugins (scale acts only on the master) hear it on the event bus. */
        struct tern_event ev = {
            .type = TERN_EV_VRRP_STATE,
            .name = in->name,
            .state = vrrp_state_name(o->to),
            .detail = vrrp_state_name(o->from),
            .value = (double)in->fsm.priority,
            .threshold = NAN,
        };
        lb_plugins_publish(in->v->ctl, &ev);
    }
}

/* Lateness of a deadline, for the counters: a control thread that cannot
 * keep its timers (a stalled host, a blocking call someone added) shows up
 * here before it shows up as a flap. */
static void
note_lateness(struct vrrp_inst *in, const char *which, uint64_t deadline, uint64_t now)
{
    uint64_t late = now > deadline ? now - deadline : 0;
    if (late > in->c.max_late_us)
        in->c.max_late_us = late;
    if (late > 2000) {
        in->c.late_timers++;
        lb_warn("vrrp %s: %s fired %.1f ms late (%" PRIu64 " late so far)", in->name, which,
                (double)late / 1000.0, in->c.late_timers);
    }
}

static void
on_timerfd(struct ev_loop *loop, ev_io *w, int revents)
{
    struct vrrp_inst *in = w->data;
    uint64_t expirations;
    if (read(in->tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        lb_err("vrrp %s: timerfd: %s", in->name, strerror(errno));
    uint64_t now = vrrp_mono_us();
    struct vrrp_fsm_out o;
    /* RFC 5798 section 6.4.3: Adver_Timer (Master). */
    if (in->fsm.adver_at && now >= in->fsm.adver_at) {
        note_lateness(in, "Adver_Timer", in->fsm.adver_at, now);
        vrrp_fsm_adver_timer(&in->fsm, now, &o);
        vrrp_apply(in, &o, now);
    }
    /* RFC 5798 section 6.4.2: Master_Down_Timer (Backup). */
    if (in->fsm.master_down_at && now >= in->fsm.master_down_at) {
        note_lateness(in, "Master_Down_Timer", in->fsm.master_down_at, now);
        vrrp_fsm_master_down(&in->fsm, now, &o);
        vrrp_apply(in, &o, now);
    }
    sync_timers(in);
}

static void
on_garp_refresh(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct vrrp_inst *in = t->data;
    if (in->fsm.state == VRRP_MASTER)
        vrrp_send_garps(in, 1);
}

/* ---- tracking ---- */

static bool
link_up(const char *ifname)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return true; /* cannot tell: do not fault on it */
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    bool up = false;
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0)
        up = (ifr.ifr_flags & IFF_UP) && (ifr.ifr_flags & IFF_RUNNING);
    close(s);
    return up;
}

/* A tracked pool fails when none of its servers can take a request. */
static bool
pool_ok(struct lb_ctl *ctl, const char *name)
{
    struct lb_pool *p = ctl->snap ? lb_pool_find(ctl->snap, name) : NULL;
    if (!p)
        return false;
    size_t n = lb_pool_nservers(p);
    for (size_t i = 0; i < n; i++)
        if (lb_server_usable(&p->servers[i]))
            return true;
    return false;
}

/* Re-evaluates tracking: pools always, links when links is true (at start
 * and on netlink link events; an ioctl per interface is too much for a
 * 10 ms poll). Tells the state machine when anything changed. */
void
vrrp_track_eval(struct vrrp_inst *in, bool links, uint64_t now)
{
    unsigned pools_failed = 0;
    for (size_t i = 0; i < in->ntrack_pools; i++) {
        bool ok = pool_ok(in->v->ctl, in->track_pools[i]);
        pools_failed += !ok;
    }
    unsigned ifs_failed = in->ifs_failed;
    bool if_down = in->if_down;
    if (links) {
        if_down = !link_up(in->ifname);
        ifs_failed = 0;
        for (size_t i = 0; i < in->ntrack_ifs; i++)
            ifs_failed += !link_up(in->track_ifs[i]);
    }
    if (pools_failed == in->pools_failed && ifs_failed == in->ifs_failed && if_down == in->if_down)
        return;
    lb_info("vrrp %s: tracking: %u of %zu pool%s without a usable server, %u of %zu interface%s "
            "down%s",
            in->name, pools_failed, in->ntrack_pools, in->ntrack_pools == 1 ? "" : "s", ifs_failed,
            in->ntrack_ifs, in->ntrack_ifs == 1 ? "" : "s", if_down ? ", own interface down" : "");
    in->pools_failed = pools_failed;
    in->ifs_failed = ifs_failed;
    in->if_down = if_down;
    struct vrrp_fsm_out o;
    vrrp_fsm_track(&in->fsm, now, pools_failed + ifs_failed, if_down, &o);
    vrrp_apply(in, &o, now);
}

static void
on_track_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct vrrp *v = t->data;
    uint64_t now = vrrp_mono_us();
    for (size_t i = 0; i < v->n; i++)
        if (v->inst[i]->ntrack_pools > 0)
            vrrp_track_eval(v->inst[i], false, now);
}
/* ---- instances ---- */

static char *
xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static char **
strv_dup(char **src, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof(*out));
    for (size_t i = 0; out && i < n; i++)
        out[i] = xstrdup(src[i]);
    return out;
}

static void
strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void
inst_free(struct vrrp_inst *in)
{
    if (!in)
        return;
    struct ev_loop *loop = in->v->ctl->loop;
    ev_io_stop(loop, &in->rx);
    ev_io_stop(loop, &in->tio);
    ev_timer_stop(loop, &in->garp_t);
    vrrp_crash_disarm(in);
    vrrp_crash_slot_free(in->slot);
    if (in->fd >= 0)
        close(in->fd);
    if (in->pfd >= 0)
        close(in->pfd);
    if (in->tfd >= 0)
        close(in->tfd);
    free(in->name);
    free(in->ifname);
    free(in->notify);
    for (size_t i = 0; i < in->nvips; i++)
        free(in->vips[i].text);
    free(in->vips);
    free(in->vip_bytes);
    free(in->peers);
    strv_free(in->track_pools, in->ntrack_pools);
    strv_free(in->track_ifs, in->ntrack_ifs);
    free(in);
}

/* A unicast peer's address as 4 or 16 bytes (the family was checked with
 * the configuration). */
static void
peer_bytes(const struct conf_addr *a, uint8_t out[16])
{
    memset(out, 0, 16);
    if (a->sa.ss_family == AF_INET6)
        memcpy(out, &((const struct sockaddr_in6 *)&a->sa)->sin6_addr, 16);
    else
        memcpy(out, &((const struct sockaddr_in *)&a->sa)->sin_addr, 4);
}

static struct vrrp_inst *
inst_new(struct vrrp *v, const struct conf_vrrp *cf)
{
    struct vrrp_inst *in = calloc(1, sizeof(*in));
    if (!in)
        return NULL;
    in->v = v;
    in->fd = in->pfd = in->tfd = -1;
    in->slot = -1;
    in->name = xstrdup(cf->name);
    in->ifname = xstrdup(cf->interface);
    in->notify = xstrdup(cf->notify);
    in->vrid = (uint8_t)cf->vrid;
    in->version = (uint8_t)cf->version;
    in->priority = (uint8_t)cf->priority;
    in->track_weight = (uint8_t)cf->track_weight;
    in->interval_ms = (uint32_t)cf->advert_interval;
    in->preempt = cf->preempt;
    in->preempt_delay_ms = cf->preempt_delay;
    in->accept = cf->accept;
    in->pseudo = cf->checksum_pseudo_header;
    in->garp_repeat = cf->garp_repeat ? cf->garp_repeat : 1;
    in->garp_refresh_ms = cf->garp_refresh;
    in->nvips = cf->nvirtual_ips;
    in->vips = calloc(in->nvips ? in->nvips : 1, sizeof(*in->vips));
    in->family = in->nvips > 0 ? cf->virtual_ips[0].family : AF_INET;
    in->alen = in->family == AF_INET6 ? 16 : 4;
    in->vip_bytes = calloc(in->nvips ? in->nvips : 1, in->alen);
    in->npeers = cf->nunicast_peers;
    in->peers = calloc(in->npeers ? in->npeers : 1, sizeof(*in->peers));
    in->ntrack_pools = cf->ntrack_pools;
    in->track_pools = strv_dup(cf->track_pools, cf->ntrack_pools);
    in->ntrack_ifs = cf->ntrack_interfaces;
    in->track_ifs = strv_dup(cf->track_interfaces, cf->ntrack_interfaces);
    if (!in->name || !in->ifname || !in->vips || !in->vip_bytes || !in->peers || !in->track_pools ||
        !in->track_ifs) {
        inst_free(in);
        return NULL;
    }
    for (size_t i = 0; i < in->nvips; i++) {
        in->vips[i] = cf->virtual_ips[i];
        in->vips[i].text = xstrdup(cf->virtual_ips[i].text);
        memcpy(in->vip_bytes + in->alen * i, cf->virtual_ips[i].addr, in->alen);
    }
    for (size_t i = 0; i < in->npeers; i++)
        peer_bytes(&cf->unicast_peers[i], in->peers[i]);
    ev_io_init(&in->rx, vrrp_on_readable, -1, EV_READ);
    ev_io_init(&in->tio, on_timerfd, -1, EV_READ);
    ev_timer_init(&in->garp_t, on_garp_refresh, 0.0, 0.0);
    in->rx.data = in->tio.data = in->garp_t.data = in;
    return in;
}

/* Whether a running instance can stay as it is under the new settings. */
static bool
inst_same(const struct vrrp_inst *in, const struct conf_vrrp *cf)
{
    if (strcmp(in->ifname, cf->interface) != 0 || in->vrid != cf->vrid ||
        in->version != cf->version || in->priority != cf->priority ||
        in->track_weight != cf->track_weight || in->interval_ms != cf->advert_interval ||
        in->preempt != cf->preempt || in->preempt_delay_ms != cf->preempt_delay ||
        in->accept != cf->accept || in->pseudo != cf->checksum_pseudo_header ||
        in->garp_repeat != (cf->garp_repeat ? cf->garp_repeat : 1) ||
        in->garp_refresh_ms != cf->garp_refresh || in->nvips != cf->nvirtual_ips ||
        in->npeers != cf->nunicast_peers || in->ntrack_pools != cf->ntrack_pools ||
        in->ntrack_ifs != cf->ntrack_interfaces)
        return false;
    if ((in->notify == NULL) != (cf->notify == NULL) ||
        (in->notify && strcmp(in->notify, cf->notify) != 0))
        return false;
    for (size_t i = 0; i < in->nvips; i++)
        if (in->vips[i].family != cf->virtual_ips[i].family ||
            in->vips[i].prefix != cf->virtual_ips[i].prefix ||
            memcmp(in->vips[i].addr, cf->virtual_ips[i].addr, in->alen) != 0)
            return false;
    for (size_t i = 0; i < in->npeers; i++) {
        uint8_t p[16];
        peer_bytes(&cf->unicast_peers[i], p);
        if (memcmp(in->peers[i], p, 16) != 0)
            return false;
    }
    for (size_t i = 0; i < in->ntrack_pools; i++)
        if (strcmp(in->track_pools[i], cf->track_pools[i]) != 0)
            return false;
    for (size_t i = 0; i < in->ntrack_ifs; i++)
        if (strcmp(in->track_ifs[i], cf->track_interfaces[i]) != 0)
            return false;
    return true;
}

static int
inst_start(struct vrrp_inst *in)
{
    struct vrrp *v = in->v;
    if (in->nvips == 0) {
        lb_err("vrrp %s: no virtual_ips", in->name);
        return -1;
    }
    in->ifindex = (int)if_nametoindex(in->ifname);
    if (in->ifindex == 0) {
        lb_err("vrrp %s: interface %s: %s", in->name, in->ifname, strerror(errno));
        return -1;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", in->ifname);
    if (s < 0 || ioctl(s, SIOCGIFHWADDR, &ifr) < 0) {
        lb_err("vrrp %s: cannot read the MAC address of %s: %s", in->name, in->ifname,
               strerror(errno));
        if (s >= 0)
            close(s);
        return -1;
    }
    close(s);
    memcpy(in->mac, ifr.ifr_hwaddr.sa_data, 6);

    vrrp_vips_remove_stale(in);
    int r = vrrp_find_primary(in);
    if (r < 0) {
        lb_err("vrrp %s: %s has no %s address of its own to send advertisements from: %s", in->name,
               in->ifname, in->family == AF_INET6 ? "IPv6 link-local" : "IPv4", strerror(-r));
        return -1;
    }
    r = vrrp_open_sockets(in);
    if (r < 0) {
        lb_err("vrrp %s: cannot open VRRP sockets on %s: %s%s", in->name, in->ifname, strerror(-r),
               r == -EPERM ? " (needs CAP_NET_RAW)" : "");
        return -1;
    }
    in->slot = vrrp_crash_slot_new();
    if (in->slot < 0)
        lb_warn("vrrp %s: no crash slot: a crash will cost a Master_Down_Interval", in->name);

    struct vrrp_fsm_cfg fc = {.version = in->version,
                              .priority = in->priority,
                              .advert_interval_ms = in->interval_ms,
                              .preempt = in->preempt,
                              .preempt_delay_us = in->preempt_delay_ms * 1000,
                              .accept = in->accept,
                              .track_weight = in->track_weight,
                              .family = in->family};
    memcpy(fc.primary, in->primary, in->alen);
    vrrp_fsm_init(&in->fsm, &fc);
    ev_io_set(&in->rx, in->fd, EV_READ);
    ev_io_start(v->ctl->loop, &in->rx);
    ev_io_set(&in->tio, in->tfd, EV_READ);
    ev_io_start(v->ctl->loop, &in->tio);

    char p[INET6_ADDRSTRLEN];
    lb_info("vrrp %s: VRRPv%u VRID %u on %s from %s, priority %u, every %u ms, %s%s", in->name,
            in->version, in->vrid, in->ifname, vrrp_addr_text(in, in->primary, p, sizeof(p)),
            in->priority, in->interval_ms,
            in->npeers               ? "unicast"
            : in->family == AF_INET6 ? "multicast ff02::12"
                                     : "multicast 224.0.0.18",
            in->pseudo ? "" : ", RFC 9568 checksum");
    uint64_t now = vrrp_mono_us();
    /* Tracking first, so a failure known at start means Fault right away. */
    in->if_down = false;
    vrrp_track_eval(in, true, now);
    struct vrrp_fsm_out o;
    vrrp_fsm_startup(&in->fsm, now, &o);
    vrrp_apply(in, &o, now);
    return 0;
}

/* Graceful end of one instance: priority 0 if master, addresses removed,
 * nothing armed any more. */
static void
inst_shutdown(struct vrrp_inst *in)
{
    uint64_t now = vrrp_mono_us();
    struct vrrp_fsm_out o;
    vrrp_fsm_shutdown(&in->fsm, now, &o);
    vrrp_apply(in, &o, now);
    /* Whatever the state said, no address of ours stays behind. */
    if (in->vips_on)
        vrrp_vips_del(in, true);
    vrrp_crash_disarm(in);
    struct ev_loop *loop = in->v->ctl->loop;
    ev_io_stop(loop, &in->rx);
    ev_io_stop(loop, &in->tio);
    ev_timer_stop(loop, &in->garp_t);
}

/* ---- scheduling ---- */

/* The control thread runs VRRP. With the workers saturating every core the
 * kernel's fair scheduler let its timers fire up to 117 ms late on a 2-CPU
 * host (measured with wrk through the VIP: bench/RESULTS-vrrp.md), which is
 * a late takeover, or a missed advertisement and a flap at 10-20 ms
 * intervals. SCHED_FIFO puts it ahead of every ordinary thread the moment it
 * wakes; it sleeps in epoll almost all the time, so the workers lose
 * nothing measurable (bench/vrrp_rt_cost.sh; and the kernel's RT throttling
 * keeps 5% for others in any case). SCHED_RESET_ON_FORK: threads and processes it creates later
 * (the workers, a plugin's job pool, notify scripts) start with ordinary
 * scheduling. That is why it can be set before global.user drops root
 * (lb_vrrp_sched_early): the user then needs no right of its own. */
#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000
#endif

/* The control thread's SCHED_FIFO priority now; 0: ordinary. Control
 * thread only. */
static int rt_prio_now;

static void
sched_apply(int prio)
{
    if (prio == rt_prio_now)
        return;
    struct sched_param sp = {.sched_priority = prio};
    int policy = prio > 0 ? SCHED_FIFO : SCHED_OTHER;
    /* pid 0: the calling thread (scheduling is per thread on Linux). */
    if (sched_setscheduler(0, policy | SCHED_RESET_ON_FORK, &sp) < 0) {
        lb_warn("vrrp: cannot run the control thread %s%.0d: %s%s; VRRP timers may be late "
                "while the workers are saturated",
                prio > 0 ? "SCHED_FIFO " : "with ordinary scheduling", prio, strerror(errno),
                errno == EPERM ? " (needs root, CAP_SYS_NICE or RLIMIT_RTPRIO; "
                                 "global.vrrp_rt_priority: 0 turns this off)"
                               : "");
        return;
    }
    if (prio > 0)
        lb_info("vrrp: control thread runs SCHED_FIFO priority %d", prio);
    else if (rt_prio_now > 0)
        lb_info("vrrp: control thread back to ordinary scheduling");
    rt_prio_now = prio;
}

void
lb_vrrp_sched_early(const struct conf *c)
{
    if (c->nvrrp > 0)
        sched_apply((int)c->global.vrrp_rt_priority);
}

/* ---- module ---- */

static void
on_test_crash(struct ev_loop *loop, ev_timer *t, int revents)
{
    lb_warn("TERN_TEST_CRASH_AFTER_MS: aborting now (test hook)");
    abort();
}

static void
vrrp_free(struct vrrp *v)
{
    struct ev_loop *loop = v->ctl->loop;
    for (size_t i = 0; i < v->n; i++)
        inst_free(v->inst[i]);
    free(v->inst);
    ev_io_stop(loop, &v->link_io);
    ev_timer_stop(loop, &v->track_t);
    ev_timer_stop(loop, &v->crash_t);
    while (v->children) {
        struct notify_child *ch = v->children;
        v->children = ch->next;
        ev_child_stop(loop, &ch->w);
        free(ch->what);
        free(ch);
    }
    if (v->nl)
        mnl_socket_close(v->nl);
    if (v->nl_link)
        mnl_socket_close(v->nl_link);
    vrrp_fatal_handlers_remove(v);
    free(v);
}

static bool
any_tracked_pools(const struct vrrp *v)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->inst[i]->ntrack_pools > 0)
            return true;
    return false;
}

static void
track_timer_update(struct vrrp *v)
{
    if (any_tracked_pools(v) && !v->shut) {
        if (!ev_is_active(&v->track_t))
            ev_timer_start(v->ctl->loop, &v->track_t);
    } else {
        ev_timer_stop(v->ctl->loop, &v->track_t);
    }
}

/* Starts one instance from cf and appends it; logs and returns -1 on
 * failure. */
static int
add_instance(struct vrrp *v, const struct conf_vrrp *cf)
{
    struct vrrp_inst **grown = realloc(v->inst, (v->n + 1) * sizeof(*grown));
    if (!grown)
        return -1;
    v->inst = grown;
    struct vrrp_inst *in = inst_new(v, cf);
    if (!in) {
        lb_err("vrrp %s: out of memory", cf->name);
        return -1;
    }
    if (inst_start(in) < 0) {
        inst_shutdown(in);
        inst_free(in);
        return -1;
    }
    v->inst[v->n++] = in;
    return 0;
}

int
lb_vrrp_start(struct lb_ctl *ctl)
{
    const struct conf *c = ctl->snap->conf;
    struct vrrp *v = calloc(1, sizeof(*v));
    if (!v)
        return -1;
    v->ctl = ctl;
    ev_io_init(&v->link_io, vrrp_on_link_event, -1, EV_READ);
    ev_timer_init(&v->track_t, on_track_timer, TRACK_POLL_S, TRACK_POLL_S);
    ev_timer_init(&v->crash_t, on_test_crash, 0.0, 0.0);
    v->link_io.data = v->track_t.data = v->crash_t.data = v;
    vrrp_state = v;
    if (c->nvrrp == 0)
        return 0;

    int r = vrrp_open_netlink(v);
    if (r < 0) {
        lb_err("vrrp: cannot open netlink: %s", strerror(-r));
        goto fail;
    }
    ev_io_set(&v->link_io, mnl_socket_get_fd(v->nl_link), EV_READ);
    ev_io_start(ctl->loop, &v->link_io);
    vrrp_fatal_handlers_install(v);
    sched_apply((int)c->global.vrrp_rt_priority);
    for (size_t i = 0; i < c->nvrrp; i++)
        if (add_instance(v, &c->vrrp[i]) < 0)
            goto fail;
    track_timer_update(v);

    /* Test hook: die of SIGABRT after this many ms, to exercise the fatal
     * signal path. Read only when set; never in a normal run. */
    const char *crash = getenv("TERN_TEST_CRASH_AFTER_MS");
    if (crash && *crash) {
        double ms = strtod(crash, NULL);
        lb_warn("TERN_TEST_CRASH_AFTER_MS=%s: this process will abort() (test hook)", crash);
        ev_timer_set(&v->crash_t, ms / 1000.0, 0.0);
        ev_timer_start(ctl->loop, &v->crash_t);
    }
    return 0;
fail:
    lb_vrrp_stop(ctl);
    return -1;
}

void
lb_vrrp_reloaded(struct lb_ctl *ctl)
{
    struct vrrp *v = vrrp_state;
    if (!v || v->ctl != ctl || v->shut)
        return;
    const struct conf *c = ctl->snap->conf;
    /* Stop instances that went away or changed. */
    size_t kept = 0;
    for (size_t i = 0; i < v->n; i++) {
        struct vrrp_inst *in = v->inst[i];
        const struct conf_vrrp *cf = NULL;
        for (size_t k = 0; k < c->nvrrp && !cf; k++)
            if (strcmp(c->vrrp[k].name, in->name) == 0)
                cf = &c->vrrp[k];
        if (cf && inst_same(in, cf)) {
            v->inst[kept++] = in;
            continue;
        }
        lb_info("vrrp %s: %s by the reload", in->name, cf ? "changed" : "removed");
        inst_shutdown(in);
        inst_free(in);
    }
    v->n = kept;
    if (c->nvrrp > 0 && !v->nl) {
        int r = vrrp_open_netlink(v);
        if (r < 0) {
            lb_err("vrrp: cannot open netlink: %s", strerror(-r));
            return;
        }
        ev_io_set(&v->link_io, mnl_socket_get_fd(v->nl_link), EV_READ);
        ev_io_start(ctl->loop, &v->link_io);
    }
    if (c->nvrrp > 0)
        vrrp_fatal_handlers_install(v);
    sched_apply(c->nvrrp > 0 ? (int)c->global.vrrp_rt_priority : 0);
    /* Start the new and the changed ones, in configuration order. */
    for (size_t k = 0; k < c->nvrrp; k++) {
        bool running = false;
        for (size_t i = 0; i < v->n && !running; i++)
            running = strcmp(v->inst[i]->name, c->vrrp[k].name) == 0;
        if (!running)
            add_instance(v, &c->vrrp[k]);
    }
    track_timer_update(v);
}

void
lb_vrrp_shutdown(struct lb_ctl *ctl)
{
    struct vrrp *v = vrrp_state;
    if (!v || v->ctl != ctl || v->shut)
        return;
    v->shut = true;
    for (size_t i = 0; i < v->n; i++)
        inst_shutdown(v->inst[i]);
    ev_timer_stop(ctl->loop, &v->track_t);
    ev_io_stop(ctl->loop, &v->link_io);
}

void
lb_vrrp_stop(struct lb_ctl *ctl)
{
    struct vrrp *v = vrrp_state;
    if (!v || v->ctl != ctl)
        return;
    lb_vrrp_shutdown(ctl);
    /* What runs after (draining, joining the workers) needs no priority. */
    sched_apply(0);
    vrrp_state = NULL;
    vrrp_free(v);
}

/* ---- GET /api/v1/vrrp ---- */

static json_t *
counters_json(const struct vrrp_inst *in)
{
    const struct vrrp_counters *c = &in->c;
    json_t *o = json_object();
    json_object_set_new(o, "adverts_sent", json_integer((json_int_t)c->adverts_sent));
    json_object_set_new(o, "adverts_received", json_integer((json_int_t)c->adverts_received));
    /* Every drop reason by its name: bad_ttl, bad_checksum, bad_version,
     * bad_vrid, truncated, interval_mismatch (v2 drops; v3 adopted and
     * counted below), bad_type, bad_addr_count, ... */
    for (int e = 1; e < VRRP_ERR_COUNT; e++)
        json_object_set_new(o, vrrp_err_name((enum vrrp_err)e),
                            json_integer((json_int_t)c->dropped[e]));
    json_object_set_new(o, "interval_mismatch", json_integer((json_int_t)c->interval_mismatch));
    json_object_set_new(o, "bad_source", json_integer((json_int_t)c->bad_source));
    json_object_set_new(o, "became_master", json_integer((json_int_t)c->became_master));
    json_object_set_new(o, "priority0_sent", json_integer((json_int_t)c->prio0_sent));
    json_object_set_new(o, "priority0_received", json_integer((json_int_t)c->prio0_received));
    json_object_set_new(o, "checksum_pseudo_header", json_integer((json_int_t)c->csum[1]));
    json_object_set_new(o, "checksum_rfc9568", json_integer((json_int_t)c->csum[0]));
    json_object_set_new(o, "checksum_old_unicast", json_integer((json_int_t)c->csum[2]));
    json_object_set_new(o, "garps_sent", json_integer((json_int_t)c->garps_sent));
    json_object_set_new(o, "send_errors", json_integer((json_int_t)c->send_errors));
    json_object_set_new(o, "netlink_errors", json_integer((json_int_t)c->netlink_errors));
    json_object_set_new(o, "notify_runs", json_integer((json_int_t)c->notify_runs));
    json_object_set_new(o, "notify_failed", json_integer((json_int_t)c->notify_failed));
    json_object_set_new(o, "vips_restored", json_integer((json_int_t)c->vips_restored));
    json_object_set_new(o, "late_timers", json_integer((json_int_t)c->late_timers));
    json_object_set_new(o, "max_timer_late_us", json_integer((json_int_t)c->max_late_us));
    return o;
}

static json_t *
inst_json(const struct vrrp_inst *in)
{
    char buf[INET6_ADDRSTRLEN];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(in->name));
    json_object_set_new(o, "interface", json_string(in->ifname));
    json_object_set_new(o, "vrid", json_integer(in->vrid));
    json_object_set_new(o, "version", json_integer(in->version));
    json_object_set_new(o, "state", json_string(vrrp_state_name(in->fsm.state)));
    json_object_set_new(o, "priority", json_integer(in->priority));
    json_object_set_new(o, "effective_priority", json_integer(in->fsm.priority));
    json_object_set_new(o, "primary_ip",
                        json_string(vrrp_addr_text(in, in->primary, buf, sizeof(buf))));
    json_object_set_new(o, "master_ip",
                        in->fsm.master_known
                            ? json_string(vrrp_addr_text(in, in->fsm.master_addr, buf, sizeof(buf)))
                            : json_null());
    json_object_set_new(o, "advert_interval_ms", json_integer(in->interval_ms));
    json_object_set_new(o, "master_advert_interval_ms",
                        json_integer((json_int_t)(in->fsm.master_adver_us / 1000)));
    json_object_set_new(o, "skew_time_us", json_integer((json_int_t)vrrp_fsm_skew_us(&in->fsm)));
    json_object_set_new(o, "master_down_interval_us",
                        json_integer((json_int_t)vrrp_fsm_master_down_us(&in->fsm)));
    json_t *vips = json_array();
    for (size_t i = 0; i < in->nvips; i++)
        json_array_append_new(vips, json_string(in->vips[i].text));
    json_object_set_new(o, "virtual_ips", vips);
    json_t *peers = json_array();
    for (size_t i = 0; i < in->npeers; i++)
        json_array_append_new(peers,
                              json_string(vrrp_addr_text(in, in->peers[i], buf, sizeof(buf))));
    json_object_set_new(o, "unicast_peers", peers);
    json_object_set_new(o, "preempt", json_boolean(in->preempt));
    json_object_set_new(o, "preempt_delay_ms", json_integer((json_int_t)in->preempt_delay_ms));
    json_object_set_new(o, "accept", json_boolean(in->accept));
    json_object_set_new(o, "checksum_pseudo_header", json_boolean(in->pseudo));
    json_object_set_new(o, "rt_priority", json_integer(rt_prio_now));
    json_t *tr = json_object();
    json_object_set_new(tr, "pools_failed", json_integer(in->pools_failed));
    json_object_set_new(tr, "interfaces_failed", json_integer(in->ifs_failed));
    json_object_set_new(tr, "interface_down", json_boolean(in->if_down));
    json_object_set_new(tr, "weight", json_integer(in->track_weight));
    json_object_set_new(o, "tracking", tr);
    json_object_set_new(o, "counters", counters_json(in));
    return o;
}

json_t *
lb_vrrp_json(struct lb_ctl *ctl)
{
    json_t *arr = json_array();
    struct vrrp *v = vrrp_state;
    for (size_t i = 0; v && v->ctl == ctl && i < v->n; i++)
        json_array_append_new(arr, inst_json(v->inst[i]));
    return json_pack("{s:o}", "instances", arr);
}
