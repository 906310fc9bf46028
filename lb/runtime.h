/*
 * The control plane's view of the running proxy: find pools and servers in
 * the current snapshot and change them (add, drain, maintenance, weight,
 * health, remove). Every function here runs on the control thread only; the
 * workers see the change on their next pick through the pool's generation
 * counter, without a lock.
 *
 * The admin API, the health checker and the plugins all go through these
 * calls, so a change made by any of them is logged once, the same way.
 */
#ifndef LB_RUNTIME_H
#define LB_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "lb/core.h"

/* Slots reserved for servers added at runtime, per pool, beyond the
 * configured ones. A reload makes room again. */
#define LB_POOL_SPARE_SLOTS 256

/* The control context: what the control thread's modules (admin API, health
 * checks, reload, plugins) share. */
struct lb_ctl {
    struct ev_loop *loop;
    const char *conf_path;
    struct lb_snapshot *snap; /* current generation */
    struct lb_worker *workers;
    int nworkers;
    /* Listening socket numbers of the current generation, [worker][listener].
     * The workers own the sockets; reload reads the numbers to hand the same
     * sockets to the next generation. */
    int **listen_fds;
    /* Last reload attempt, for GET /api/v1/reload. */
    struct {
        double time; /* wall clock, 0: never */
        bool ok;
        char *errors; /* "FILE:LINE:COL: ..." lines, NULL when ok */
    } last_reload;
    void *admin;   /* lb/admin.c state */
    void *health;  /* lb/health.c state */
    void *plugins; /* lb/plugin_host.c state */
};

/* Returns the pool of that name in snapshot s, or NULL. */
struct lb_pool *lb_pool_find(struct lb_snapshot *s, const char *name);
/* Returns the server of that name (not REMOVED), or NULL. */
struct lb_server *lb_server_find(struct lb_pool *p, const char *name);
/* Servers currently published (including REMOVED slots, to be skipped). */
size_t lb_pool_nservers(const struct lb_pool *p);

/*
 * Adds a server. address is "host:port" as in the config. Returns 0, or a
 * negative errno with *why set to a static message: -EEXIST (name taken),
 * -EINVAL (bad name, address or weight), -ENOSPC (no free slot until the
 * next reload).
 */
int lb_server_add(struct lb_pool *p, const char *name, const char *address, uint32_t weight,
                  const char **why);

/* Drains: no new requests; in-flight ones finish. When remove is true the
 * server is removed once it has no active connection or when the pool's
 * drain_timeout expires. */
void lb_server_drain(struct lb_pool *p, struct lb_server *s, bool remove, uint64_t now_ms);
/* Maintenance on/off (off also ends a drain that was not a removal). */
void lb_server_set_maint(struct lb_pool *p, struct lb_server *s, bool on);
/* Back to ready from drain or maintenance. */
void lb_server_enable(struct lb_pool *p, struct lb_server *s);
/* Removes at once (connections in flight finish on their own). */
void lb_server_remove(struct lb_pool *p, struct lb_server *s);
int lb_server_set_weight(struct lb_pool *p, struct lb_server *s, uint32_t weight);
/* Health transition from a checker; logs when it changes. */
void lb_server_set_health(struct lb_pool *p, struct lb_server *s, bool up, const char *why);

/* Completes drains (idle or timed out). Call periodically. */
void lb_pools_drain_tick(struct lb_snapshot *snap, uint64_t now_ms);

/* Copies state, weight, health and counters of servers with the same name
 * (and address) from old into new, and carries over servers added at runtime
 * to pools that still exist. */
void lb_snapshot_carry_over(struct lb_snapshot *new_snap, struct lb_snapshot *old_snap);

const char *lb_srv_state_name(int state);
uint64_t lb_monotonic_ms(void);

#endif
