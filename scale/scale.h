/*
 * Internals shared by the scale plugin's files: the plugin state (struct
 * scale, handed back to the host), scaling groups (group*.c) and the
 * providers that create and destroy servers (provider_exec.c).
 */
#ifndef TERN_SCALE_SCALE_H
#define TERN_SCALE_SCALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb/plugin.h"
#include "scale/policy.h"

#define SCALE_NAME_MAX 96
#define SCALE_ADDR_MAX 128
#define SCALE_ACTIVITIES 64
#define SCALE_VRRP_MAX 32

enum scale_provider_kind { SCALE_PROV_EXEC = 1, SCALE_PROV_LIBVIRT };

/* scale[].remove_first: which server in service a scale-in takes. */
enum scale_remove_first { SCALE_REMOVE_NEWEST = 0, SCALE_REMOVE_OLDEST, SCALE_REMOVE_LEAST_CONN };

/* The schema's defaults of reconcile_interval and grace_period, for a
 * configuration that reaches the plugin without them. */
#define SCALE_RELIST_MS 10000
#define SCALE_GRACE_MS 120000

/* A group's configuration, from one item of the scale: list. */
struct scale_group_cfg {
    char *pool;
    uint32_t desired;
    struct scale_policy_cfg pol;
    enum scale_provider_kind provider;
    char *create, *destroy, *list; /* exec; list NULL: the provider cannot list */
    uint64_t timeout_ms;
    uint64_t relist_ms; /* between two reads of the provider's list; 0: SCALE_RELIST_MS */
    uint64_t grace_ms;  /* a new server's time to answer; 0: SCALE_GRACE_MS */
    enum scale_remove_first remove_first;
    uint64_t warmup_ms;                      /* no scale-in while a server is this new in service */
    char *lv_uri, *lv_template, *lv_storage; /* libvirt */
    char *out_alarm, *in_alarm;              /* NULL: no such step policy */
    char *tt_metric;                         /* NULL: no target tracking */
};

enum scale_srv_state {
    SRV_CREATING,   /* the provider is making it */
    SRV_PROBING,    /* made; waiting for its address to answer */
    SRV_IN_SERVICE, /* in the pool */
    SRV_DRAINING,   /* drained with remove; waiting for it to leave the pool */
    SRV_DESTROYING, /* left the pool; the provider is destroying it */
};

struct scale_server {
    char name[SCALE_NAME_MAX];
    char address[SCALE_ADDR_MAX];
    enum scale_srv_state st;
    double since;   /* monotonic s of entering st */
    bool adopted;   /* found at start, not made by this run */
    bool busy;      /* a job about it is running */
    unsigned index; /* the n of <pool>-tern-<n> */
    int activity;   /* id of the activity that tracks it, or 0 */
};

/* A name of the group's that the provider lists running without an address
 * and that the group does not hold. */
struct scale_addrless {
    char name[SCALE_NAME_MAX];
    double since; /* monotonic s of the first list that showed it so */
    bool listed;  /* so in the list being read */
};

struct scale_activity {
    int id;
    double time; /* wall s */
    char action[16];
    char server[SCALE_NAME_MAX];
    char reason[256];
    char result[256];
};

struct scale;
struct scale_lv;

/*
 * A provider: how a group's servers are made and unmade, one per file behind
 * this table (provider_exec.c, provider_libvirt.c). The ops block and run on
 * a job-pool thread; p is the provider's instance, made and freed on the
 * control thread. create returns 0 with the server's host:port in address,
 * or -1 with err set after undoing what it made; destroy returns 0 once the
 * server is gone (also when it already was, and when it is stopped); list
 * returns 0 with "name host:port [state]" lines in *out (malloc()ed), or -1
 * when it cannot tell; host:port may be "-" (no address yet) and a state
 * other than "running" (or none) says the server exists but is not running.
 * can_list (may be NULL: it can) says whether list may be called at all:
 * an exec provider without a `list` program cannot, and the group then
 * never asks.
 */
struct scale_provider_ops {
    const char *name;
    int (*create)(void *p, const char *group, const char *server, char *address, size_t addrlen,
                  char *err, size_t errlen);
    int (*destroy)(void *p, const char *group, const char *server, const char *address, char *err,
                   size_t errlen);
    int (*list)(void *p, const char *group, char **out, char *err, size_t errlen);
    bool (*can_list)(const void *p);
    void (*free)(void *p);
};

struct scale_provider {
    const struct scale_provider_ops *ops;
    void *p;
};

struct scale_group {
    struct scale *sc;
    const struct tern_host *h;
    struct scale_group_cfg cfg;
    struct scale_policy pol;
    bool out_alarm_on, in_alarm_on;
    bool started; /* the provider's list has been read */
    bool listing; /* a list job is running */
    bool retired; /* gone from the configuration: does nothing more */
    unsigned ticks;
    unsigned next_index;
    bool acting;              /* the last tick's act: may this tern change anything */
    unsigned destroyed;       /* servers destroyed so far */
    unsigned created;         /* create jobs finished so far, failed or not */
    unsigned launch_failures; /* in a row; launches back off 1, 2, 4 ... 60 s */
    double next_launch;       /* monotonic s before which none starts */
    struct scale_server *srv;
    size_t nsrv, cap;
    struct scale_addrless *addrless; /* gone from the table when listed otherwise */
    size_t naddrless, addrless_cap;
    struct scale_provider prov;
    struct scale_provider *retired_provs; /* replaced by a reload; jobs may use them */
    size_t nretired_provs;
    struct scale_activity acts[SCALE_ACTIVITIES];
    size_t nacts, head;
    int next_act;
};

struct scale {
    const struct tern_host *h;
    struct scale_group **groups;
    size_t ngroups;
    struct tern_timer *tick;
    int sub;
    struct {
        char name[SCALE_NAME_MAX];
        bool master;
    } vrrp[SCALE_VRRP_MAX];
    size_t nvrrp;
};

/* Seconds between two evaluations of every group. */
#define SCALE_TICK 0.5

/* group.c */
struct scale_group *scale_group_new(struct scale *sc, const struct scale_group_cfg *cfg);
void scale_group_reconfigure(struct scale_group *g, const struct scale_group_cfg *cfg);
void scale_group_free(struct scale_group *g);
void scale_group_tick(struct scale_group *g, bool act);
void scale_group_event(struct scale_group *g, const struct tern_event *ev);
/* The group as a JSON object (a json_t *, returned as void * to keep jansson
 * out of this header). */
void *scale_group_json(const struct scale_group *g);
void scale_cfg_free(struct scale_group_cfg *cfg);

/* group_jobs.c: splits "host:port" or "[v6]:port". Returns 0 or -1. */
int scale_split_hostport(const char *addr, char *host, size_t hl, char *port, size_t pl);

/* provider_exec.c */
extern const struct scale_provider_ops scale_exec_ops;
void *scale_exec_new(const char *create, const char *destroy, const char *list,
                     uint64_t timeout_ms);

/* Runs cmd with /bin/sh -c and the extra environment (NAME=VALUE strings,
 * NULL-terminated), kills its process group after timeout_ms. Returns 0
 * when it exited 0, else -1 with err set; *out gets its standard output
 * (malloc()ed, NUL-terminated) or NULL. Job thread. */
int scale_exec_run(const char *cmd, char *const *env, uint64_t timeout_ms, char **out, char *err,
                   size_t errlen);

/* provider_libvirt.c (built with libvirt) */
extern const struct scale_provider_ops scale_lv_ops;
struct scale_lv *scale_lv_new(const char *uri, const char *tmpl, const char *storage,
                              const char *group, double addr_timeout);
void scale_lv_free(struct scale_lv *lv);
int scale_lv_create(struct scale_lv *lv, const char *name, char *address, size_t addrlen, char *err,
                    size_t errlen);
int scale_lv_destroy(struct scale_lv *lv, const char *name, char *err, size_t errlen);
int scale_lv_list(struct scale_lv *lv, char **out, char *err, size_t errlen);
/* The connection (a virConnectPtr), for tests; NULL before the first call. */
void *scale_lv_connection(struct scale_lv *lv);

#endif
