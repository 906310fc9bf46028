/*
 * Internals shared by the files of a scaling group: group.c (what the group
 * decides each tick, its activities, its life and its JSON), group_jobs.c
 * (the jobs that create, probe and destroy servers, and the moves between
 * a server's states that they drive) and group_reconcile.c (what the
 * provider's list says: servers adopted, stopped or addressless ones
 * replaced). Everything runs on the control thread but a job's body. The
 * plugin sees only scale/scale.h; the unit test links these files and
 * reaches in here to run jobs on its own clock.
 */
#ifndef TERN_SCALE_GROUP_INT_H
#define TERN_SCALE_GROUP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scale/scale.h"

enum job_kind { JOB_CREATE, JOB_DESTROY, JOB_LIST, JOB_PROBE };

/* One blocking call of the provider's, or a probe, on the job pool: it
 * carries copies of what it needs, as the group may change meanwhile. */
struct job {
    struct scale_group *g;
    enum job_kind kind;
    char name[SCALE_NAME_MAX];
    char address[SCALE_ADDR_MAX];
    char group[SCALE_NAME_MAX];
    struct scale_provider prov; /* the group's when submitted */
    unsigned gen;               /* a list: g->destroyed when it was submitted */
    unsigned cgen;              /* a list: g->created when it was submitted */
    /* results */
    int rc;
    char *out;
    char err[256];
};

/* group.c */
uint64_t group_now_ms(const struct scale_group *g);
struct scale_server *group_find(struct scale_group *g, const char *name);
/* arr, of n items of size bytes and room for *cap, grown to hold one more;
 * NULL when out of memory, and arr is still valid. */
void *group_room(void *arr, size_t n, size_t *cap, size_t size);
struct scale_server *group_add_srv(struct scale_group *g, const char *name,
                                   enum scale_srv_state st);
void group_del_srv(struct scale_group *g, struct scale_server *s);
void group_set_state(struct scale_group *g, struct scale_server *s, enum scale_srv_state st);
/* scale[].grace_period in seconds: how long a new server has to answer its
 * probe and, with libvirt, to get an address. */
double group_grace(const struct scale_group_cfg *c);
/* Servers in service or coming: what desired is compared with. */
uint32_t group_current(const struct scale_group *g);
/* Starts an activity and returns its id. */
int group_activity(struct scale_group *g, const char *action, const char *server,
                   const char *result, const char *fmt, ...) TERN_PRINTF(5, 6);
/* Records the end (or a step) of an activity. */
void group_activity_result(struct scale_group *g, int id, bool ok, bool final, const char *fmt, ...)
    TERN_PRINTF(5, 6);

/* group_jobs.c */
/* A job about s (NULL: about the group), or NULL when out of memory. */
struct job *group_job_new(struct scale_group *g, enum job_kind kind, const struct scale_server *s);
/* Hands j to the job pool; false, and j freed, when it cannot. */
bool group_submit(struct scale_group *g, struct job *j);
void group_launch(struct scale_group *g, const char *reason);
void group_terminate(struct scale_group *g, struct scale_server *s, const char *reason);
void group_destroy_server(struct scale_group *g, struct scale_server *s);
void group_probe_new(struct scale_group *g);
void group_follow_drains(struct scale_group *g);

/* group_reconcile.c */
/* What the pool already holds (a reload of the plugin). */
void group_adopt_pool(struct scale_group *g);
/* A list job's result, on the control thread; j stays the caller's. */
void group_list_done(struct scale_group *g, struct job *j);

#endif
