/*
 * The typed configuration of tern, as loaded from YAML by conf_load().
 *
 * A struct conf is one immutable generation: everything it points to lives in
 * its arena and is freed whole by conf_free(). The daemon never edits a loaded
 * generation; a reload builds a new one and swaps it in.
 *
 * Durations are in milliseconds. Addresses are kept both as the text the user
 * wrote (for logs and the API) and resolved to a sockaddr. They are numeric
 * (or "localhost") everywhere but in pools[].servers[].address, whose host
 * may be a name that conf_load() resolves, as HAProxy and nginx do at load:
 * a name that does not resolve fails the load like any other error.
 *
 * conf/ knows YAML and schemas, not proxies: nothing here includes lb/.
 */
#ifndef CONF_CONFIG_H
#define CONF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

struct conf_arena; /* conf/arena.h */

struct conf_addr {
    char *text; /* as written, e.g. "127.0.0.1:8080" or "[::1]:80" */
    struct sockaddr_storage sa;
    socklen_t salen;
};

struct conf_cidr {
    char *text;
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    uint8_t prefix;
};

enum conf_mode { CONF_MODE_HTTP = 0, CONF_MODE_TCP };
enum conf_hc_type { CONF_HC_NONE = 0, CONF_HC_TCP, CONF_HC_HTTP };

/* conf_pool.balance: the index of the name in the YAML, in this order. */
enum conf_balance {
    CONF_BALANCE_ROUNDROBIN = 0,
    CONF_BALANCE_LEASTCONN,
    CONF_BALANCE_RANDOM2,
    CONF_BALANCE_SOURCE_HASH,
    CONF_BALANCE_URI_HASH,
    CONF_BALANCE_MAGLEV,
};

struct conf_global {
    int workers;              /* resolved: "auto" becomes the number of online CPUs */
    uint32_t max_connections; /* per process, client side */
    char *access_log;         /* NULL: off; "stdout"/"-" or a path */
    char *log;                /* NULL/"stderr" or a path */
    char *user;               /* drop privileges to this user after binding; NULL: stay */
    char *plugin_dir;         /* where watch.so / scale.so are looked up */
    char **plugins;           /* third-party plugin modules to load, by path */
    size_t nplugins;
    uint64_t shutdown_timeout; /* ms: SIGTERM waits this long for requests in flight */
    uint32_t vrrp_rt_priority; /* SCHED_FIFO priority of the control thread with VRRP; 0: off */
};

struct conf_admin {
    bool enabled;
    struct conf_addr listen;
    char *token_file;
};

struct conf_tls_cert {
    char *cert;
    char *key;
    char *ocsp; /* DER OCSP response to staple; NULL: none */
};

struct conf_tls {
    bool enabled;
    struct conf_tls_cert *certificates;
    size_t ncertificates;
    char *min_version; /* "1.2" | "1.3" */
    char *ciphers;
    char *client_ca;   /* mTLS */
    char *client_auth; /* "none" | "optional" | "required" */
    char **alpn;
    size_t nalpn;
};

struct conf_route {
    char *host;        /* NULL: any */
    char *path_prefix; /* NULL: any */
    char *pool;
    int pool_index; /* resolved index into conf.pools */
};

struct conf_listener {
    char *name;
    struct conf_addr bind;
    enum conf_mode mode;
    char *pool; /* default pool */
    int pool_index;
    struct conf_route *routes;
    size_t nroutes;
    struct conf_tls tls;
    uint32_t max_connections; /* 0: only the global limit */
    uint64_t timeout_client;  /* idle client (keep-alive wait, body read) */
    uint64_t timeout_header;  /* whole request head (slowloris) */
    uint64_t timeout_tunnel;  /* upgraded / tcp connection idle */
    uint32_t max_header_size; /* bytes of request head; over: 431 */
    uint32_t max_request_line;
    uint64_t max_body_size; /* request body bytes; over: 413; 0: no limit */
    bool forwarded_headers; /* add X-Forwarded-For/-Proto and Forwarded */
    bool defer_accept;      /* TCP_DEFER_ACCEPT; resolved from mode when not set */
    bool defer_accept_set;
    int line, col; /* where it was declared, for messages */
};

struct conf_server {
    char *name;
    struct conf_addr address;
    uint32_t weight;          /* 0..256 */
    uint32_t max_connections; /* 0: unlimited */
    bool backup;
};

struct conf_health {
    enum conf_hc_type type;
    char *method;
    char *path;
    char *host;
    int expect_status_min, expect_status_max; /* "200" or "200-399" */
    char *expect_body;                        /* substring, NULL: any */
    uint64_t interval, timeout, jitter;
    uint32_t rise, fall;
};

/* Passive health (outlier detection): the workers count failed connects and
 * 5xx answers in a row per server; the control thread ejects a server whose
 * count reaches consecutive_failures. */
struct conf_outlier {
    uint32_t consecutive_failures; /* 0: off */
    uint64_t base_ejection;        /* first ejection; doubles with each further one */
    uint64_t max_ejection;         /* cap on one ejection */
    uint32_t max_ejection_percent; /* of the pool's servers ejected at once */
};

struct conf_pool {
    char *name;
    int balance; /* enum lb_balance_alg, by name; conf/ keeps the int */
    struct conf_server *servers;
    size_t nservers;
    struct conf_health health;
    uint64_t timeout_connect, timeout_server, timeout_queue;
    uint32_t retries;
    uint32_t queue_size;       /* requests waiting for a server slot per pool */
    uint32_t idle_connections; /* idle keep-alive connections kept per server and worker */
    uint64_t drain_timeout;
    uint64_t slow_start;
    bool tls;     /* connect to servers over TLS */
    char *tls_ca; /* verify against this CA file */
    char *tls_sni;
    int line, col;
    struct conf_outlier outlier;
};

struct conf_vrrp {
    char *name;
    char *interface;
    uint32_t vrid;
    uint32_t priority;
    uint32_t version; /* 2 or 3 */
    uint64_t advert_interval;
    struct conf_cidr *virtual_ips;
    size_t nvirtual_ips;
    struct conf_addr *unicast_peers; /* port unused */
    size_t nunicast_peers;
    bool preempt;
    uint64_t preempt_delay;
    bool accept;
    char **track_pools;
    size_t ntrack_pools;
    char **track_interfaces;
    size_t ntrack_interfaces;
    uint32_t track_weight; /* 0: tracked failure means FAULT */
    char *notify;
    bool checksum_pseudo_header; /* keepalived's VRRPv3 IPv4 checksum form */
    uint32_t garp_repeat;
    uint64_t garp_refresh;
};

struct conf_alarm {
    char *name;
    char *metric;
    char *statistic; /* average|minimum|maximum|sum|p95|p99 */
    bool has_above, has_below;
    double above, below;
    uint64_t period;
    uint32_t evaluation_periods, datapoints_to_alarm;
    char *missing_data; /* missing|ignore|breaching|not_breaching */
    char **notify;
    size_t nnotify;
};

struct conf_email {
    bool enabled;
    struct conf_addr server_addr;
    char *server;   /* host:port as written */
    char *starttls; /* required|optional|off; YAML true/false map to required/off */
    char *user;
    char *password_file;
    char *from;
    char **to;
    size_t nto;
    char *ca_file;    /* CAs for STARTTLS; NULL: the system's */
    uint64_t timeout; /* each SMTP step */
    char *format;     /* full|sms */
};

struct conf_sms {
    bool enabled;
    char *url;
    char *method;
    char **headers;
    size_t nheaders;
    char *body; /* template */
    char **to;
    size_t nto;
    uint64_t timeout;
};

struct conf_notify {
    char *name;
    struct conf_email email;
    struct conf_sms sms;
};

struct conf_watch {
    bool present;
    uint64_t interval;
    char *libvirt_uri; /* watch.sources.libvirt.uri, NULL: off */
    struct conf_alarm *alarms;
    size_t nalarms;
    struct conf_notify *notify;
    size_t nnotify;
    uint64_t group_wait; /* alarms changing within this go out as one message */
    uint64_t repeat;     /* remind while an alarm stays on; 0: never */
    double rate_limit;   /* messages per hour per notifier */
    uint32_t retries;    /* attempts of one send */
};

enum conf_provider { CONF_PROVIDER_NONE = 0, CONF_PROVIDER_LIBVIRT, CONF_PROVIDER_EXEC };

struct conf_scale_policy {
    bool present;
    char *alarm;
    uint32_t count;          /* add or remove */
    uint32_t percent;        /* add_percent or remove_percent; 0: count applies */
    uint32_t min_adjustment; /* fewest servers a percent step moves */
    uint64_t cooldown;
};

struct conf_scale {
    char *pool;
    uint32_t min, max, desired;
    enum conf_provider provider;
    char *libvirt_uri, *libvirt_template, *libvirt_storage_pool;
    char *exec_create, *exec_destroy, *exec_list;
    uint64_t exec_timeout;
    uint64_t reconcile_interval; /* ms between two reads of the provider's list */
    uint64_t grace_period;       /* ms a new server has to answer before it has failed */
    char *remove_first;          /* newest, oldest or least_connections */
    uint64_t warmup;             /* ms after joining the pool a server warms up */
    struct conf_scale_policy scale_out, scale_in;
    bool has_target_tracking;
    char *tt_metric;
    double tt_target;
    double tt_tolerance;    /* |value / target - 1| within this: no change */
    uint64_t tt_out_window; /* ms: scale-out stabilization window */
    uint64_t tt_in_window;  /* ms: scale-in stabilization window */
};

/*
 * A section of a third-party plugin: a top-level key that a module named in
 * global.plugins declares with a schema (conf_set_plugin_resolver), checked
 * and filled by that schema like tern's own sections.
 */
struct conf_schema;
struct conf_ext {
    const char *name;                 /* the top-level key */
    const struct conf_schema *schema; /* the resolver's; lives as long as the process */
    bool present;                     /* the file has the section */
    void *obj;                        /* schema->size bytes that the schema filled */
};

struct conf {
    char *file;
    struct conf_arena *arena;
    struct conf_global global;
    struct conf_admin admin;
    struct conf_listener *listeners;
    size_t nlisteners;
    struct conf_pool *pools;
    size_t npools;
    struct conf_vrrp *vrrp;
    size_t nvrrp;
    struct conf_watch watch;
    struct conf_scale *scale;
    size_t nscale;
    struct conf_ext *ext; /* one per module of global.plugins that declares a section */
    size_t next;
};

/*
 * Loads and validates the file at path. On success returns 0 and sets *out.
 * On failure returns the number of errors (> 0) after writing each one, as
 * "FILE:LINE:COL: key.path: message", to err (which may be NULL); *out is
 * left NULL. Every error in the file is reported, not just the first.
 * Errors are sorted by file (in reading order), line and column; one without
 * a position (a file that cannot be opened) reads "FILE: message". Files
 * named by "include:" are read too (see conf/REFERENCE.md). Uses no global
 * state but the resolver below and may run on any thread; reads the
 * environment for ${VAR}. Server addresses that name a host are resolved
 * here (getaddrinfo), so a load can take as long as the resolver's timeouts:
 * the daemon's control loop reloads on another thread (lb/reload.c).
 */
int conf_load(const char *path, FILE *err, struct conf **out);

/*
 * What conf_load() asks about each module of global.plugins: the section it
 * declares and that section's schema, or NULL (no section, no schema, or a
 * module that cannot be read: then its section is an unknown key). The
 * schema must live as long as the process. The daemon sets it once before
 * its first conf_load(); without one, plugin sections are unknown keys.
 */
typedef const struct conf_schema *(*conf_plugin_resolver)(const char *module, const char **section);
void conf_set_plugin_resolver(conf_plugin_resolver r);

void conf_free(struct conf *c);

/* Returns the index of the named pool, or -1. */
int conf_pool_index(const struct conf *c, const char *name);

/* Writes conf/REFERENCE.md (every key, type, default and meaning) to out,
 * generated from the same schema tables that drive parsing. */
void conf_write_reference(FILE *out);

/* Parses "1500ms", "2s", "1m", "1h" (and a bare 0). Returns 0 or -1. */
int conf_parse_duration(const char *s, uint64_t *ms);

/* Parses "host:port", "[v6]:port", "*:port" or ":port". host is numeric or
 * "localhost" (never a name: see conf_resolve_addr() in parse.h). Returns 0 or -1 with *why set to
 * a static message. Fills out->sa and out->salen only ("*" and "" give 0.0.0.0, "localhost"
 * 127.0.0.1); out->text is left to the caller, who owns the string. */
int conf_parse_addr(const char *s, struct conf_addr *out, const char **why);

#endif
