/*
 * The fatal-signal path of VRRP: on SIGSEGV, SIGBUS or SIGABRT every
 * instance that is master sends priority 0 (so a backup takes over after
 * Skew_Time instead of Master_Down_Interval) and asks netlink to remove its
 * virtual IPs, then the process dies of the signal. A signal handler can
 * reach nothing but globals and may call only async-signal-safe functions,
 * so the control thread prebuilds the packets and netlink messages into
 * crash slots (armed while master, published with atomics) and the handler
 * only sends them.
 *
 * Kept in a file of its own so that what runs in signal context, and what
 * it may touch, can be checked in one place: on_fatal_signal and the slots
 * here, and vrrp_send_pkt (lb/vrrp_net.c), which uses only sendto(2) and
 * sendmsg(2).
 */
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lb/vrrp_int.h"

/* Priority-0 packets prebuilt for the crash handler: the multicast one, or
 * one per unicast peer up to this many. */
#define CRASH_MAX_PKTS 16
#define CRASH_SLOTS 64
#define ALTSTACK_SIZE (64 * 1024)

/* ---- the fatal-signal path (async-signal-safe part) ---- */

/* Room for RTM_DELADDR requests of this many addresses (each is 40 bytes);
 * more are left for the next start to remove as stale. */
#define CRASH_MAX_DEL 32

struct crash_slot {
    atomic_int armed; /* 1 while the instance is master */
    int fd;           /* the raw VRRP socket */
    int npkts;
    size_t len;
    struct sockaddr_storage dst[CRASH_MAX_PKTS];
    socklen_t dlen;
    struct in6_pktinfo src6; /* IPv6: the link-local source and interface */
    uint8_t pkt[CRASH_MAX_PKTS][VRRP_IPV4_HDR_LEN + VRRP_MAX_PKT];
    int nlfd;      /* the netlink command socket, -1: none */
    size_t nl_len; /* RTM_DELADDR messages for the addresses, back to back */
    uint8_t nl[CRASH_MAX_DEL * 64];
};

/* Read by the signal handler; written by the control thread. */
static _Atomic(struct crash_slot *) crash_slots[CRASH_SLOTS];

/* SIGSEGV, SIGBUS, SIGABRT (any thread): send every armed instance's
 * priority 0 so the backup takes over after Skew_Time, then die of the same
 * signal. Only sendto(2), raise(3) and lock-free atomics: all
 * async-signal-safe. SA_RESETHAND has restored the default action, and the
 * signal is blocked until we return, so raise() takes effect right after. */
static void
on_fatal_signal(int sig)
{
    int saved = errno;
    for (size_t i = 0; i < CRASH_SLOTS; i++) {
        struct crash_slot *s = atomic_load_explicit(&crash_slots[i], memory_order_acquire);
        if (!s || !atomic_load_explicit(&s->armed, memory_order_acquire))
            continue;
        for (int k = 0; k < s->npkts; k++)
            (void)vrrp_send_pkt(s->fd, s->pkt[k], s->len, &s->dst[k], s->dlen, &s->src6);
        /* And the addresses go, or this host would keep answering ARP for
         * them next to the new master until it runs again. */
        if (s->nlfd >= 0 && s->nl_len > 0) {
            struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
            (void)sendto(s->nlfd, s->nl, s->nl_len, 0, (const struct sockaddr *)&kernel,
                         sizeof(kernel));
        }
    }
    errno = saved;
    raise(sig);
}

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGABRT};
#define NFATAL (sizeof(fatal_signals) / sizeof(fatal_signals[0]))
_Static_assert(NFATAL == VRRP_NFATAL, "struct vrrp keeps VRRP_NFATAL old actions");

/* ---- crash slots ---- */

void
vrrp_crash_arm(struct vrrp_inst *in)
{
    if (in->slot < 0)
        return;
    struct crash_slot *s = atomic_load(&crash_slots[in->slot]);
    if (!s)
        return;
    /* Disarmed while the bytes change, so a handler never reads half a
     * packet. */
    atomic_store(&s->armed, 0);
    uint8_t dsts[CRASH_MAX_PKTS][16];
    size_t nd = vrrp_destinations(in, dsts, CRASH_MAX_PKTS);
    s->npkts = 0;
    s->src6 = vrrp_src_info(in);
    for (size_t i = 0; i < nd; i++) {
        size_t len = vrrp_build_advert(in, 0, dsts[i], s->pkt[i], sizeof(s->pkt[i]));
        if (len == 0)
            return;
        s->len = len;
        s->dlen = vrrp_dest_sockaddr(in, dsts[i], &s->dst[i]);
        s->npkts = (int)i + 1;
    }
    s->fd = in->fd;
    /* The deletions, without NLM_F_ACK: nobody will read the answers. */
    s->nl_len = 0;
    s->nlfd = in->v->nl ? mnl_socket_get_fd(in->v->nl) : -1;
    for (size_t i = 0; i < in->nvips && i < CRASH_MAX_DEL; i++) {
        struct nlmsghdr *nlh =
            vrrp_nl_addr_msg(s->nl + s->nl_len, RTM_DELADDR, 0, in->ifindex, &in->vips[i]);
        nlh->nlmsg_flags = NLM_F_REQUEST;
        s->nl_len += NLMSG_ALIGN(nlh->nlmsg_len);
    }
    atomic_store_explicit(&s->armed, 1, memory_order_release);
}

void
vrrp_crash_disarm(struct vrrp_inst *in)
{
    if (in->slot < 0)
        return;
    struct crash_slot *s = atomic_load(&crash_slots[in->slot]);
    if (s)
        atomic_store(&s->armed, 0);
}

int
vrrp_crash_slot_new(void)
{
    for (int i = 0; i < CRASH_SLOTS; i++) {
        if (atomic_load(&crash_slots[i]))
            continue;
        struct crash_slot *s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->fd = s->nlfd = -1;
        atomic_store(&crash_slots[i], s);
        return i;
    }
    return -1;
}

/* Called at stop, after the slot was disarmed. A fatal signal in another
 * thread in the instant between the load and the free could still read the
 * slot: the process is exiting either way, and the cost of closing that
 * window (never freeing) would be a leak report on every sanitizer run. */
void
vrrp_crash_slot_free(int i)
{
    if (i < 0)
        return;
    struct crash_slot *s = atomic_exchange(&crash_slots[i], NULL);
    free(s);
}

void
vrrp_fatal_handlers_install(struct vrrp *v)
{
    if (v->handlers_on)
        return;
    /* An alternate stack, so that a stack overflow on the control thread
     * still reaches the handler. Other threads run it on their own stack. */
    v->altstack = malloc(ALTSTACK_SIZE);
    if (v->altstack) {
        stack_t ss = {.ss_sp = v->altstack, .ss_size = ALTSTACK_SIZE};
        if (sigaltstack(&ss, &v->old_stack) < 0) {
            free(v->altstack);
            v->altstack = NULL;
        }
    }
    struct sigaction sa = {.sa_handler = on_fatal_signal, .sa_flags = SA_RESETHAND | SA_ONSTACK};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatal_signals[i], &sa, &v->old_act[i]);
    v->handlers_on = true;
}

void
vrrp_fatal_handlers_remove(struct vrrp *v)
{
    if (!v->handlers_on)
        return;
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatal_signals[i], &v->old_act[i], NULL);
    if (v->altstack) {
        stack_t off = {.ss_flags = SS_DISABLE};
        sigaltstack(v->old_stack.ss_sp ? &v->old_stack : &off, NULL);
        free(v->altstack);
        v->altstack = NULL;
    }
    v->handlers_on = false;
}
