/*
 * What a scaling group makes of the provider's list.
 *
 * The first tick asks the provider which servers exist (exec: the `list`
 * program; without one nothing is listed and nothing adopted but what the
 * pool holds; a list that exits non-zero adopts nothing either) and what
 * the pool holds: servers named <pool>-tern-<n> are adopted rather
 * than made again after a restart, and desired becomes at least their
 * number. The list is read again every scale[].reconcile_interval to adopt
 * servers the group lost and to replace those that stopped.
 *
 * A list line is "name host:port [state]". Without a state, or with
 * "running", the server runs at host:port; host:port may be "-" when it has
 * no address yet (such a server is not adopted, its name is not used
 * again). Any other state (libvirt says stopped, paused, stopping, crashed
 * or suspended) means it exists but does not run: as an AWS group replaces
 * an unhealthy instance, the group terminates it (drained first if it is in
 * the pool; destroy also deletes a stopped clone's disk) and, as it no
 * longer counts toward desired, launches a new one. A stopped clone is
 * suspect (it crashed, or someone stopped it), so it is not started again.
 * A running server without an address that the group does not hold is
 * terminated the same way once the lists have shown it so for longer than
 * a create waits for an address (scale[].grace_period with libvirt, the
 * program's timeout with exec): a clone whose guest never got a DHCP
 * lease, or whose create was cut short by a restart, would otherwise run
 * forever without counting toward desired. The group remembers when it
 * first saw each such name and forgets it once a list shows it with an
 * address or not at all.
 * Only a tern that may act does this, and never for a server still in its
 * create job (a libvirt clone is defined, stopped, before it starts), nor
 * from a list read while a create finished (it may show that server before
 * it started).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scale/group_int.h"

/* The n of "<pool>-tern-<n>", or 0 when name is not one of ours. */
static unsigned
our_index(const struct scale_group *g, const char *name)
{
    size_t pl = strlen(g->cfg.pool);
    char *end;
    unsigned long n;

    if (strncmp(name, g->cfg.pool, pl) != 0 || strncmp(name + pl, "-tern-", 6) != 0)
        return 0;
    n = strtoul(name + pl + 6, &end, 10);
    return *end == '\0' && n > 0 && n < 1000000 ? (unsigned)n : 0;
}

/* The n of name if it is one of ours; a name that exists is never made
 * again, so the next launch takes a higher n. */
static unsigned
claim_index(struct scale_group *g, const char *name)
{
    unsigned idx = our_index(g, name);

    if (idx >= g->next_index)
        g->next_index = idx + 1;
    return idx;
}

static void
adopt(struct scale_group *g, const char *name, const char *address, bool in_pool)
{
    unsigned idx = claim_index(g, name);
    struct scale_server *s;

    if (idx == 0 || group_find(g, name) != NULL)
        return;
    s = group_add_srv(g, name, in_pool ? SRV_IN_SERVICE : SRV_PROBING);
    if (s == NULL)
        return;
    snprintf(s->address, sizeof(s->address), "%s", address);
    s->adopted = true;
    s->index = idx;
    s->activity = group_activity(g, "adopt", name, in_pool ? "in service" : "probing",
                                 "%s already exists at %s%s", name, address,
                                 in_pool ? " and is in the pool" : "");
}

static void
adopt_cb(void *arg, const struct tern_server_info *info)
{
    adopt(arg, info->name, info->address, true);
}

void
group_adopt_pool(struct scale_group *g)
{
    g->h->pool_servers(g->h, g->cfg.pool, adopt_cb, g);
}

/* name exists and will not serve: as an AWS group replaces an unhealthy
 * instance, it goes, and the launch of another follows as it no longer
 * counts toward desired. */
static void
replace(struct scale_group *g, const char *name, unsigned idx, const char *reason)
{
    struct scale_server *s = group_find(g, name);

    if (s == NULL) {
        /* Found by the list, not run by the group (a restart, a failover,
         * a lost create): not adopted, only destroyed. */
        s = group_add_srv(g, name, SRV_DESTROYING);
        if (s == NULL)
            return;
        s->adopted = true;
        s->index = idx;
        s->activity = group_activity(g, "terminate", name, "destroying", "%s", reason);
        group_destroy_server(g, s);
    } else if (s->st == SRV_PROBING || s->st == SRV_IN_SERVICE) {
        if (s->st == SRV_PROBING)
            group_activity_result(g, s->activity, false, true, "failed: %s", reason);
        group_terminate(g, s, reason);
    }
    /* Creating: its create job decides. Draining, destroying: going. */
}

/* The provider lists name as existing in state, not running. */
static void
replace_stopped(struct scale_group *g, const char *name, const char *state, bool stale)
{
    unsigned idx = claim_index(g, name);
    char reason[256];

    if (idx == 0 || !g->acting || stale)
        return;
    snprintf(reason, sizeof(reason), "%s is %s in the provider's list: replacing it", name, state);
    replace(g, name, idx, reason);
}

/* How long a create waits for its server's address (libvirt: for a DHCP
 * lease; exec: the create program is killed after its timeout). A server
 * without one for longer is no create's any more: its guest is broken, or
 * the tern that made it went away meanwhile. */
static double
addr_allowance(const struct scale_group *g)
{
    if (g->cfg.provider == SCALE_PROV_LIBVIRT)
        return group_grace(&g->cfg);
    return (double)g->cfg.timeout_ms / 1000.0;
}

/* The provider lists name as running with no address. */
static void
addressless(struct scale_group *g, const char *name, bool stale)
{
    unsigned idx = claim_index(g, name);
    double now = g->h->monotonic(g->h), allowance = addr_allowance(g);
    struct scale_addrless *e = NULL;
    char reason[256];

    /* One the group holds is creating (its create decides) or has an
     * address the group knows (the probe or the pool's health check
     * judges it). */
    if (idx == 0 || group_find(g, name) != NULL)
        return;
    for (size_t i = 0; i < g->naddrless && e == NULL; i++)
        if (strcmp(g->addrless[i].name, name) == 0)
            e = &g->addrless[i];
    if (e == NULL) {
        e = group_room(g->addrless, g->naddrless, &g->addrless_cap, sizeof(*e));
        if (e == NULL)
            return;
        g->addrless = e;
        e = &g->addrless[g->naddrless++];
        snprintf(e->name, sizeof(e->name), "%s", name);
        e->since = now;
    }
    e->listed = true;
    if (!g->acting || stale || now - e->since <= allowance)
        return;
    snprintf(reason, sizeof(reason),
             "%s has had no address for %.0f s (the boot allowance is %.0f s): replacing it", name,
             now - e->since, allowance);
    replace(g, name, idx, reason);
}

/* Forgets the names the last list showed with an address, or not at all. */
static void
addrless_sweep(struct scale_group *g)
{
    size_t k = 0;

    for (size_t i = 0; i < g->naddrless; i++)
        if (g->addrless[i].listed)
            g->addrless[k++] = g->addrless[i];
    g->naddrless = k;
}

void
group_list_done(struct scale_group *g, struct job *j)
{
    bool first = !g->started;
    size_t before = g->nsrv;

    g->listing = false;
    g->started = true;
    if (!first && j->gen != g->destroyed) {
        /* A server destroyed since the list was taken could be in it:
         * adopting it again would be wrong. The next list will do. */
        return;
    }
    if (j->rc != 0 || j->out == NULL) {
        g->h->log(g->h, first ? TERN_LOG_WARN : TERN_LOG_DEBUG,
                  "group %s: the provider cannot list its servers (%s): none adopted", g->cfg.pool,
                  j->err);
    } else {
        char *save = NULL;

        /* A create that finished while the list was read: the list may
         * show its server stopped, between define and start. */
        bool stale = j->cgen != g->created;

        for (size_t i = 0; i < g->naddrless; i++)
            g->addrless[i].listed = false;
        for (char *line = strtok_r(j->out, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            char name[SCALE_NAME_MAX], addr[SCALE_ADDR_MAX], state[32];
            int n = sscanf(line, "%95s %127s %31s", name, addr, state);

            if (n < 2)
                continue;
            if (n == 3 && strcmp(state, "running") != 0)
                replace_stopped(g, name, state, stale);
            else if (strcmp(addr, "-") == 0)
                addressless(g, name, stale);
            else
                adopt(g, name, addr, false);
        }
        addrless_sweep(g);
    }
    if (first && g->nsrv > before) {
        uint32_t n = group_current(g);

        if (n > g->pol.desired) {
            uint32_t old = g->pol.desired;

            scale_policy_set_desired(&g->pol, n, group_now_ms(g));
            group_activity(g, "desired", NULL, "successful",
                           "%u -> %u: adopted %u existing servers", old, g->pol.desired, n);
        }
    }
}
