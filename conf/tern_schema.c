/*
 * Every key of tern's configuration, declared once (the watch and scale
 * sections are in tern_schema_plugins.c).
 *
 * Each table below describes one C struct of config.h: a row per YAML key
 * with its kind, target, default (as YAML text), bounds and a doc line that
 * ends up in conf/REFERENCE.md. Rules that involve several keys of one struct
 * live in the struct's check hook next to its table; rules across sections
 * (names that refer to pools, alarms, notifiers) are in config.c.
 *
 * Tables are written bottom-up: a struct's table comes before the tables that
 * nest it. The order of rows is the order of the reference page.
 */
#include "conf/tern_schema.h"

#include <inttypes.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "conf/parse.h"

#define END                                                                                        \
    {                                                                                              \
        .key = NULL                                                                                \
    }

/* ---- global ---- */

static int
parse_workers(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v,
              void *obj)
{
    struct conf_global *g = obj;
    uint64_t n;

    if (strcmp(v->str, "auto") == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);

        n = cpus < 1 ? 1 : cpus > CONF_MAX_WORKERS ? CONF_MAX_WORKERS : (uint64_t)cpus;
    } else if (conf_parse_uint(v->str, &n) < 0 || n < 1 || n > CONF_MAX_WORKERS) {
        conf_error(ctx, v, NULL, "expected auto or a number of threads from 1 to %d, got '%s'",
                   CONF_MAX_WORKERS, v->str);
        return -1;
    }
    g->workers = (int)n;
    return 0;
}

/* access_log: "off" is spelled out in configs more often than omitted. */
static int
parse_access_log(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v,
                 void *obj)
{
    struct conf_global *g = obj;

    if (strcmp(v->str, "off") == 0 || v->str[0] == '\0') {
        g->access_log = NULL;
        return 0;
    }
    g->access_log = conf_strdup(ctx, v->str);
    return g->access_log != NULL ? 0 : -1;
}

static const struct conf_field global_fields[] = {
    {.key = "workers",
     .kind = CONF_CUSTOM,
     .flags = CONF_F_RESTART,
     .parse = parse_workers,
     .def = "auto",
     .type_doc = "`auto` or integer, 1..256",
     .doc = "worker threads, each with its own event loop and listening sockets; "
            "auto: one per online CPU"},
    {.key = "max_connections",
     .kind = CONF_UINT,
     CONF_AT(struct conf_global, max_connections),
     .min = 1,
     .def = "100000",
     .doc = "client connections open at once across all workers together (HAProxy's "
            "global maxconn, not a share per worker); beyond it new connections wait in "
            "the kernel's accept queue. A reload applies to new connections: those open "
            "above a lowered limit stay until they end"},
    {.key = "access_log",
     .kind = CONF_CUSTOM,
     .parse = parse_access_log,
     .type_doc = "`stdout`, `-`, `off` or a path",
     .def_doc = "off",
     .doc = "one line per HTTP request or TCP session; `-` is stdout. A path is taken from "
            "the working directory; `tern -t` checks that the file opens for appending, or "
            "that its directory is writable when it does not exist yet (it creates nothing)"},
    {.key = "log",
     .kind = CONF_STRING,
     CONF_AT(struct conf_global, log),
     .def = "stderr",
     .doc = "daemon log: `stderr` or a file path (reopened on SIGUSR1), checked by `tern -t` "
            "as `access_log` is"},
    {.key = "user",
     .kind = CONF_STRING,
     .flags = CONF_F_RESTART,
     CONF_AT(struct conf_global, user),
     .doc = "user to switch to once sockets are bound; absent: keep the starting user. "
            "`tern -t` checks that the user exists"},
    {.key = "plugin_dir",
     .kind = CONF_STRING,
     .flags = CONF_F_RESTART,
     CONF_AT(struct conf_global, plugin_dir),
     .doc = "folder holding watch.so and scale.so; absent: the directory built in"},
    {.key = "plugins",
     .kind = CONF_LIST,
     .elem = CONF_STRING,
     CONF_AT(struct conf_global, plugins),
     CONF_COUNT(struct conf_global, nplugins),
     .doc = "paths of further plugin modules (built against lb/plugin.h) to load; one that "
            "exports tern_plugin_schema gets its own top-level section, checked with the file"},
    {.key = "shutdown_timeout",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_global, shutdown_timeout),
     .min = 1,
     .def = "30s",
     .doc = "on SIGTERM, how long requests and TCP sessions in flight may take to "
            "finish once the listeners are closed; then they are cut (HAProxy's "
            "hard-stop-after, nginx's worker_shutdown_timeout)"},
    {.key = "vrrp_rt_priority",
     .kind = CONF_UINT,
     CONF_AT(struct conf_global, vrrp_rt_priority),
     .min = 0,
     .max = 99,
     .def = "10",
     .doc = "while `vrrp` instances run, the control thread (VRRP, health checks, admin) "
            "runs SCHED_FIFO at this priority, so saturated workers cannot delay "
            "advertisements and takeovers (keepalived's vrrp_rt_priority); 0: ordinary "
            "scheduling. Set at start before global.user takes effect; turning it on by a "
            "reload as another user needs RLIMIT_RTPRIO (the systemd unit's LimitRTPRIO)"},
    END,
};

static const struct conf_schema global_schema = {
    .name = "global",
    .fields = global_fields,
    .doc = "Process-wide settings.",
};

/* ---- admin ---- */

static const struct conf_field admin_fields[] = {
    {.key = "listen",
     .kind = CONF_ADDR,
     .flags = CONF_F_RESTART,
     CONF_AT(struct conf_admin, listen),
     .def = "127.0.0.1:9900",
     .doc = "address of the admin API, /metrics and the dashboard"},
    {.key = "token_file",
     .kind = CONF_STRING,
     .flags = CONF_F_PATH,
     CONF_AT(struct conf_admin, token_file),
     .doc = "file holding the bearer token every mutating call must present; read at start "
            "and on reload, and by `tern -t`, which fails when it cannot be read or holds no "
            "usable token"},
    END,
};

static const struct conf_schema admin_schema = {
    .name = "admin",
    .fields = admin_fields,
    .doc = "The admin API (HTTP, JSON), Prometheus metrics at /metrics and the dashboard "
           "at /. Enabled when the section is present.",
};

/* ---- listeners ---- */

static const struct conf_field tls_cert_fields[] = {
    {.key = "cert",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED | CONF_F_PATH,
     CONF_AT(struct conf_tls_cert, cert),
     .doc = "PEM certificate chain file"},
    {.key = "key",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED | CONF_F_PATH,
     CONF_AT(struct conf_tls_cert, key),
     .doc = "PEM private key file"},
    {.key = "ocsp",
     .kind = CONF_STRING,
     .flags = CONF_F_PATH,
     CONF_AT(struct conf_tls_cert, ocsp),
     .doc = "DER OCSP response for this certificate, stapled to handshakes that ask for it "
            "(refresh the file and reload); absent: no stapling"},
    END,
};

static const struct conf_schema tls_cert_schema = {
    .name = "certificate",
    .size = sizeof(struct conf_tls_cert),
    .fields = tls_cert_fields,
};

static const char *const tls_versions[] = {"1.2", "1.3", NULL};
static const char *const client_auth_names[] = {"none", "optional", "required", NULL};

static void
check_tls(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct conf_tls *t = obj;

    if (t->ncertificates == 0 && conf_node_pair(map, "certificates") == NULL)
        conf_error(ctx, map, NULL,
                   "TLS needs at least one certificate (certificates: "
                   "[{cert: FILE, key: FILE}])");
    else if (t->ncertificates == 0)
        conf_key_error(ctx, map, "certificates", "TLS needs at least one certificate");
    if (t->client_auth != NULL && strcmp(t->client_auth, "none") != 0 && t->client_ca == NULL)
        conf_key_error(ctx, map, "client_auth",
                       "client_auth '%s' needs client_ca, the CA that signs client certificates",
                       t->client_auth);
}

static const struct conf_field tls_fields[] = {
    {.key = "certificates",
     .kind = CONF_SEQ,
     .sub = &tls_cert_schema,
     CONF_AT(struct conf_tls, certificates),
     CONF_COUNT(struct conf_tls, ncertificates),
     .doc = "certificate/key pairs; the one matching the SNI name is served, the first "
            "one by default"},
    {.key = "min_version",
     .kind = CONF_CHOICE,
     .names = tls_versions,
     CONF_AT(struct conf_tls, min_version),
     .def = "1.2",
     .doc = "oldest TLS version accepted"},
    {.key = "ciphers",
     .kind = CONF_STRING,
     CONF_AT(struct conf_tls, ciphers),
     .doc = "OpenSSL cipher list for TLS 1.2; absent: ECDHE with AES-GCM or ChaCha20-Poly1305 "
            "only (TLS 1.3 suites are OpenSSL's)"},
    {.key = "client_ca",
     .kind = CONF_STRING,
     .flags = CONF_F_PATH,
     CONF_AT(struct conf_tls, client_ca),
     .doc = "CA file to verify client certificates against (mutual TLS)"},
    {.key = "client_auth",
     .kind = CONF_CHOICE,
     .names = client_auth_names,
     CONF_AT(struct conf_tls, client_auth),
     .def = "none",
     .doc = "whether clients must present a certificate"},
    {.key = "alpn",
     .kind = CONF_LIST,
     .elem = CONF_STRING,
     CONF_AT(struct conf_tls, alpn),
     CONF_COUNT(struct conf_tls, nalpn),
     .doc = "protocols offered in ALPN, in order of preference; http listeners take only "
            "http/1.1 and http/1.0 (the default: [http/1.1]); tcp listeners any, none by "
            "default"},
    END,
};

static const struct conf_schema tls_schema = {
    .name = "tls",
    .fields = tls_fields,
    .check = check_tls,
};

static void
check_match(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct conf_route *r = obj;

    if (r->path_prefix != NULL && r->path_prefix[0] != '/')
        conf_key_error(ctx, map, "path_prefix", "a path prefix starts with '/', got '%s'",
                       r->path_prefix);
}

/* match: is flattened into struct conf_route. */
static const struct conf_field route_match_fields[] = {
    {.key = "host",
     .kind = CONF_STRING,
     CONF_AT(struct conf_route, host),
     .doc = "Host header to match, port ignored, case-insensitive; `*.example.com` "
            "matches any name below example.com; absent: any host"},
    {.key = "path_prefix",
     .kind = CONF_STRING,
     CONF_AT(struct conf_route, path_prefix),
     .doc = "request path prefix to match; absent: any path"},
    END,
};

static const struct conf_schema route_match_schema = {
    .name = "match",
    .fields = route_match_fields,
    .check = check_match,
};

static const struct conf_field route_fields[] = {
    {.key = "match",
     .kind = CONF_STRUCT,
     .sub = &route_match_schema,
     .doc = "conditions, all of which must hold; absent: match everything"},
    {.key = "pool",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_route, pool),
     .doc = "pool that serves matching requests"},
    END,
};

static const struct conf_schema route_schema = {
    .name = "route",
    .size = sizeof(struct conf_route),
    .fields = route_fields,
};

/* timeouts: is flattened into struct conf_listener. */
static const struct conf_field listener_timeout_fields[] = {
    {.key = "client",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_listener, timeout_client),
     .def = "30s",
     .doc = "idle client: waiting for the next request, or for body data"},
    {.key = "header",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_listener, timeout_header),
     .def = "10s",
     .doc = "time to receive a whole request head (slowloris defence)"},
    {.key = "tunnel",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_listener, timeout_tunnel),
     .def = "1h",
     .doc = "idle TCP connection or upgraded HTTP connection (WebSocket)"},
    END,
};

static const struct conf_schema listener_timeout_schema = {
    .name = "timeouts",
    .fields = listener_timeout_fields,
};

static const char *const mode_names[] = {
    [CONF_MODE_HTTP] = "http",
    [CONF_MODE_TCP] = "tcp",
    NULL,
};

static void
check_listener(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct conf_listener *l = obj;

    if (!l->defer_accept_set)
        l->defer_accept = l->mode == CONF_MODE_HTTP;
    if (l->mode == CONF_MODE_TCP && l->nroutes > 0)
        conf_key_error(ctx, map, "routes",
                       "routes apply to HTTP listeners only (this listener is mode: tcp)");
}

static const struct conf_field listener_fields[] = {
    {.key = "name",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_listener, name),
     .doc = "unique name, used in logs and metrics"},
    {.key = "bind",
     .kind = CONF_ADDR,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_listener, bind),
     .doc = "address to listen on: `0.0.0.0:80`, `[::]:443`, `*:80`, `:80`"},
    {.key = "mode",
     .kind = CONF_ENUM,
     .names = mode_names,
     CONF_AT(struct conf_listener, mode),
     .def = "http",
     .doc = "proxy HTTP/1.1 requests or relay TCP byte streams"},
    {.key = "pool",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_listener, pool),
     .doc = "default pool: serves what no route matches (every connection in tcp mode)"},
    {.key = "routes",
     .kind = CONF_SEQ,
     .sub = &route_schema,
     CONF_AT(struct conf_listener, routes),
     CONF_COUNT(struct conf_listener, nroutes),
     .doc = "http only: request routing rules; the first that matches wins"},
    {.key = "tls",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &tls_schema,
     CONF_AT(struct conf_listener, tls),
     CONF_PRESENT(struct conf_listener, tls.enabled),
     .doc = "terminate TLS on this listener; absent: plain text"},
    {.key = "max_connections",
     .kind = CONF_UINT,
     CONF_AT(struct conf_listener, max_connections),
     .def = "0",
     .doc = "client connections open at once on this listener, all workers together "
            "(HAProxy's bind maxconn); beyond it this listener's new connections wait in the "
            "kernel's accept queue while the others go on accepting. A reload applies to new "
            "connections; 0: only the global limit"},
    {.key = "timeouts",
     .kind = CONF_STRUCT,
     .sub = &listener_timeout_schema,
     .doc = "client-side timeouts"},
    {.key = "max_header_size",
     .kind = CONF_SIZE,
     CONF_AT(struct conf_listener, max_header_size),
     .min = 1024,
     .max = 1024 * 1024,
     .def = "32k",
     .doc = "largest request head (request line and headers); larger: 431"},
    {.key = "max_request_line",
     .kind = CONF_SIZE,
     CONF_AT(struct conf_listener, max_request_line),
     .min = 256,
     .max = 1024 * 1024,
     .def = "8k",
     .doc = "longest request line; longer: 414"},
    {.key = "max_body_size",
     .kind = CONF_SIZE,
     CONF_AT(struct conf_listener, max_body_size),
     .def = "0",
     .doc = "largest request body (its Content-Length, or the sum of its chunk sizes); "
            "larger: 413 and the connection closed, before any of it reaches a server when "
            "the length is declared; 0: no limit (HAProxy's default; nginx's "
            "client_max_body_size is 1m)"},
    {.key = "forwarded_headers",
     .kind = CONF_BOOL,
     CONF_AT(struct conf_listener, forwarded_headers),
     .def = "true",
     .doc = "add X-Forwarded-For, X-Forwarded-Proto and Forwarded to proxied requests"},
    {.key = "defer_accept",
     .kind = CONF_BOOL,
     CONF_AT(struct conf_listener, defer_accept),
     CONF_PRESENT(struct conf_listener, defer_accept_set),
     .def_doc = "true in mode http, false in mode tcp",
     .doc = "hand a connection to a worker only once its first bytes arrived "
            "(TCP_DEFER_ACCEPT; nginx's `deferred`, HAProxy's `defer-accept`): one wake-up "
            "per connection instead of two, and a client that connects and stays silent is "
            "accepted only after about a second. Leave it off in tcp mode for protocols where "
            "the server speaks first (SMTP, MySQL)"},
    END,
};

static const struct conf_schema listener_schema = {
    .name = "listener",
    .size = sizeof(struct conf_listener),
    .fields = listener_fields,
    .line_offset = CONF_OFF1(struct conf_listener, line),
    .col_offset = CONF_OFF1(struct conf_listener, col),
    .check = check_listener,
    .doc = "Where clients connect. Each listener accepts on its own address in every "
           "worker (SO_REUSEPORT) and sends requests to a pool.",
};

/* ---- pools ---- */

/* A server's address may name a host (see the row's doc). The text stays as
 * written: the API, the dashboard and the logs show the name. */
static int
parse_server_address(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v,
                     void *obj)
{
    struct conf_addr *a = (struct conf_addr *)((char *)obj + f->offset);
    const char *why = NULL;
    int rc = conf_resolve_addr(v->str, a, &why);

    if (rc == -2) {
        conf_error(ctx, v, NULL, "cannot resolve '%s': %s", v->str, why);
        return -1;
    }
    if (rc < 0) {
        conf_error(ctx, v, NULL, "bad address '%s': %s", v->str, why);
        return -1;
    }
    a->text = conf_strdup(ctx, v->str);
    return a->text != NULL ? 0 : -1;
}

static const struct conf_field server_fields[] = {
    {.key = "name",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_server, name),
     .doc = "unique within the pool; state carries over reloads by name"},
    {.key = "address",
     .kind = CONF_CUSTOM,
     .flags = CONF_F_REQUIRED,
     .parse = parse_server_address,
     .type_doc = "host:port",
     CONF_AT(struct conf_server, address),
     .doc = "`10.0.0.11:8080`, `[fd00::11]:8080`, or a host name, `app1.internal:8080`, "
            "resolved (getaddrinfo: /etc/hosts, then DNS) when the file is loaded, at start, "
            "by `tern -t` and at every reload, and never in between, as nginx does without "
            "`resolve`: a changed record takes effect at the next reload. One server is one "
            "address: of several (A and AAAA records, round-robin DNS) the first getaddrinfo "
            "returns is used, in its preference order (RFC 6724, /etc/gai.conf), IPv4 or IPv6. "
            "A name that does not resolve is an error, and a reload with it is refused, the "
            "running configuration unchanged. The API and logs show the address as written. "
            "Servers added through the admin API or by scaling need a numeric address"},
    {.key = "weight",
     .kind = CONF_UINT,
     CONF_AT(struct conf_server, weight),
     .min = 0,
     .max = 256,
     .def = "1",
     .doc = "share of the traffic; 0: no new traffic"},
    {.key = "max_connections",
     .kind = CONF_UINT,
     CONF_AT(struct conf_server, max_connections),
     .def = "0",
     .doc = "connections open to this server at once; 0: unlimited"},
    {.key = "backup",
     .kind = CONF_BOOL,
     CONF_AT(struct conf_server, backup),
     .def = "false",
     .doc = "used only while no other server of the pool is healthy"},
    END,
};

static const struct conf_schema server_schema = {
    .name = "server",
    .size = sizeof(struct conf_server),
    .fields = server_fields,
};

static int
parse_status(const char *s, int *v)
{
    uint64_t x;

    if (conf_parse_uint(s, &x) < 0 || x < 100 || x > 599)
        return -1;
    *v = (int)x;
    return 0;
}

/* expect_status: "200", 200 or a range "200-399". */
static int
parse_expect_status(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v,
                    void *obj)
{
    struct conf_health *h = obj;
    const char *dash = strchr(v->str, '-');
    char lo[8];
    int a, b;

    if (dash == NULL) {
        if (parse_status(v->str, &a) < 0)
            goto bad;
        b = a;
    } else {
        if ((size_t)(dash - v->str) >= sizeof(lo))
            goto bad;
        memcpy(lo, v->str, (size_t)(dash - v->str));
        lo[dash - v->str] = '\0';
        if (parse_status(lo, &a) < 0 || parse_status(dash + 1, &b) < 0 || a > b)
            goto bad;
    }
    h->expect_status_min = a;
    h->expect_status_max = b;
    return 0;
bad:
    conf_error(ctx, v, NULL,
               "expected an HTTP status (100..599) or a range such as 200-399, got '%s'", v->str);
    return -1;
}

static const char *const hc_type_names[] = {
    [CONF_HC_NONE] = "none",
    [CONF_HC_TCP] = "tcp",
    [CONF_HC_HTTP] = "http",
    NULL,
};

static const struct conf_field health_fields[] = {
    {.key = "type",
     .kind = CONF_ENUM,
     .names = hc_type_names,
     CONF_AT(struct conf_health, type),
     .def = "tcp",
     .doc = "tcp: a connect succeeds; http: a request gets the expected answer"},
    {.key = "method",
     .kind = CONF_STRING,
     CONF_AT(struct conf_health, method),
     .def = "GET",
     .doc = "http: request method"},
    {.key = "path",
     .kind = CONF_STRING,
     CONF_AT(struct conf_health, path),
     .def = "/",
     .doc = "http: request path"},
    {.key = "host",
     .kind = CONF_STRING,
     CONF_AT(struct conf_health, host),
     .doc = "http: Host header; absent: the server's address"},
    {.key = "expect_status",
     .kind = CONF_CUSTOM,
     .parse = parse_expect_status,
     .def = "200",
     .type_doc = "status or range, e.g. `200-399`",
     .doc = "http: status codes that count as healthy"},
    {.key = "expect_body",
     .kind = CONF_STRING,
     CONF_AT(struct conf_health, expect_body),
     .doc = "http: text the response body must contain; absent: any body"},
    {.key = "interval",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_health, interval),
     .min = 1,
     .def = "2s",
     .doc = "time between checks of one server"},
    {.key = "timeout",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_health, timeout),
     .min = 1,
     .def = "1s",
     .doc = "a check not answered within this fails"},
    {.key = "jitter",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_health, jitter),
     .def = "0",
     .doc = "each interval is moved by a random amount of up to plus or minus this, to spread "
            "checks"},
    {.key = "rise",
     .kind = CONF_UINT,
     CONF_AT(struct conf_health, rise),
     .min = 1,
     .max = 1000,
     .def = "2",
     .doc = "consecutive successes that mark a server up"},
    {.key = "fall",
     .kind = CONF_UINT,
     CONF_AT(struct conf_health, fall),
     .min = 1,
     .max = 1000,
     .def = "3",
     .doc = "consecutive failures that mark a server down"},
    END,
};

static const struct conf_schema health_schema = {
    .name = "health_check",
    .fields = health_fields,
};

static void
check_outlier(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    const struct conf_outlier *o = obj;

    if (o->max_ejection < o->base_ejection)
        conf_key_error(ctx, map, "max_ejection",
                       "is shorter than base_ejection: an ejection could never last its "
                       "base time");
}

static const struct conf_field outlier_fields[] = {
    {.key = "consecutive_failures",
     .kind = CONF_UINT,
     CONF_AT(struct conf_outlier, consecutive_failures),
     .min = 0,
     .max = 1000,
     .def = "5",
     .doc = "failed connects or 5xx answers in a row that eject a server; 0: passive checks "
            "off"},
    {.key = "base_ejection",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_outlier, base_ejection),
     .min = 1,
     .def = "10s",
     .doc = "how long a first ejection lasts; each further one doubles it (a clean period of "
            "this length forgets one)"},
    {.key = "max_ejection",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_outlier, max_ejection),
     .min = 1,
     .def = "5m",
     .doc = "the longest one ejection lasts"},
    {.key = "max_ejection_percent",
     .kind = CONF_UINT,
     CONF_AT(struct conf_outlier, max_ejection_percent),
     .min = 0,
     .max = 100,
     .def = "50",
     .doc = "share of the pool's servers ejected at once, rounded down: a lone server is never "
            "ejected"},
    END,
};

static const struct conf_schema outlier_schema = {
    .name = "outlier",
    .fields = outlier_fields,
    .check = check_outlier,
};

/* timeouts: is flattened into struct conf_pool. */
static const struct conf_field pool_timeout_fields[] = {
    {.key = "connect",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_pool, timeout_connect),
     .min = 1,
     .def = "3s",
     .doc = "to establish a connection to a server"},
    {.key = "server",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_pool, timeout_server),
     .def = "30s",
     .doc = "idle server: waiting for response data"},
    {.key = "queue",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_pool, timeout_queue),
     .def = "5s",
     .doc = "longest wait for a server slot; then 503 (TCP: closed)"},
    END,
};

static const struct conf_schema pool_timeout_schema = {
    .name = "timeouts",
    .fields = pool_timeout_fields,
};

static const char *const balance_names[] = {
    [CONF_BALANCE_ROUNDROBIN] = "roundrobin",
    [CONF_BALANCE_LEASTCONN] = "leastconn",
    [CONF_BALANCE_RANDOM2] = "random2",
    [CONF_BALANCE_SOURCE_HASH] = "source_hash",
    [CONF_BALANCE_URI_HASH] = "uri_hash",
    [CONF_BALANCE_MAGLEV] = "maglev",
    NULL,
};

static const struct conf_field pool_fields[] = {
    {.key = "balance",
     .kind = CONF_ENUM,
     .names = balance_names,
     CONF_AT(struct conf_pool, balance),
     .def = "roundrobin",
     .doc = "how a server is chosen (random2: the less loaded of two picked at random; "
            "source_hash, uri_hash: a hash of the client address or of the URI; maglev: "
            "Maglev consistent hashing)"},
    {.key = "servers",
     .kind = CONF_SEQ,
     .sub = &server_schema,
     CONF_AT(struct conf_pool, servers),
     CONF_COUNT(struct conf_pool, nservers),
     .doc = "backend servers; may be empty for a pool filled by scaling or the admin API"},
    {.key = "health_check",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &health_schema,
     CONF_AT(struct conf_pool, health),
     .doc = "active health checks; absent: none, every server counts as up"},
    {.key = "outlier",
     .kind = CONF_STRUCT,
     .sub = &outlier_schema,
     CONF_AT(struct conf_pool, outlier),
     .doc = "passive health: eject a server that fails requests in a row, for a while"},
    {.key = "timeouts",
     .kind = CONF_STRUCT,
     .sub = &pool_timeout_schema,
     .doc = "server-side timeouts"},
    {.key = "retries",
     .kind = CONF_UINT,
     CONF_AT(struct conf_pool, retries),
     .min = 0,
     .max = 10,
     .def = "2",
     .doc = "further attempts, on other servers, when connecting to a server fails"},
    {.key = "queue_size",
     .kind = CONF_UINT,
     CONF_AT(struct conf_pool, queue_size),
     .def = "1024",
     .doc = "requests (TCP: connections) waiting for a server slot; beyond it: 503 (TCP: closed)"},
    {.key = "idle_connections",
     .kind = CONF_UINT,
     CONF_AT(struct conf_pool, idle_connections),
     .max = 1000000,
     .def = "4096",
     .doc = "idle keep-alive connections to each server that each worker keeps for "
            "reuse; a connection finishing beyond it is closed. Set it above the "
            "requests a worker has in flight to one server at peak, or connections "
            "churn (nginx's upstream keepalive); 0: no reuse"},
    {.key = "drain_timeout",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_pool, drain_timeout),
     .def = "30s",
     .doc = "how long a server that leaves by draining (DELETE, scale-in) waits for its "
            "open connections to finish; then it leaves the pool anyway and what is still "
            "open is left to finish (a plain drain keeps the server, drained)"},
    {.key = "slow_start",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_pool, slow_start),
     .def = "0",
     .doc = "a server back up ramps its weight up over this time; 0: at once"},
    {.key = "tls",
     .kind = CONF_BOOL,
     CONF_AT(struct conf_pool, tls),
     .def = "false",
     .doc = "connect to the servers over TLS"},
    {.key = "tls_ca",
     .kind = CONF_STRING,
     .flags = CONF_F_PATH,
     CONF_AT(struct conf_pool, tls_ca),
     .doc = "CA file to verify servers against; absent: the system store (tls_sni is then "
            "required)"},
    {.key = "tls_sni",
     .kind = CONF_STRING,
     CONF_AT(struct conf_pool, tls_sni),
     .doc = "server name sent in SNI and checked against the servers' certificates (an IP "
            "address is checked, not sent); absent: no SNI and no name check, only the chain "
            "against tls_ca"},
    END,
};

static const struct conf_schema pool_schema = {
    .name = "pool",
    .size = sizeof(struct conf_pool),
    .fields = pool_fields,
    .name_offset = CONF_OFF1(struct conf_pool, name),
    .line_offset = CONF_OFF1(struct conf_pool, line),
    .col_offset = CONF_OFF1(struct conf_pool, col),
    .doc = "Backend servers by pool name, and how traffic is spread over them.",
};

/* ---- vrrp ---- */

static void
check_vrrp(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct conf_vrrp *v = obj;
    int family = v->nvirtual_ips > 0 ? v->virtual_ips[0].family : 0;
    uint64_t ms = v->advert_interval;

    /* RFC 5798 section 5.2.7: a 12-bit count of centiseconds. */
    if (v->version == 3 && (ms < 10 || ms > 40950 || ms % 10 != 0))
        conf_key_error(ctx, map, "advert_interval",
                       "VRRPv3 advertises in steps of 10ms from 10ms to 40950ms "
                       "(RFC 5798 section 5.2.7), got %" PRIu64 "ms",
                       ms);
    /* RFC 3768 section 5.3.7: whole seconds in 8 bits. */
    if (v->version == 2 && (ms < 1000 || ms > 255000 || ms % 1000 != 0))
        conf_key_error(ctx, map, "advert_interval",
                       "VRRPv2 advertises in whole seconds from 1s to 255s "
                       "(RFC 3768 section 5.3.7), got %" PRIu64 "ms",
                       ms);
    for (size_t i = 1; i < v->nvirtual_ips; i++) {
        if (v->virtual_ips[i].family != family) {
            conf_key_error(ctx, map, "virtual_ips",
                           "mixes IPv4 and IPv6; a VRRP instance serves one address family "
                           "(RFC 5798 section 5.2.9): declare one instance per family");
            break;
        }
    }
    /* RFC 5798 section 6.1 Accept_Mode false means a non-owner master drops
     * packets for the addresses; keepalived does it with firewall rules, the
     * most reported "VIP does not answer" cause. tern serves on the VIP, so
     * it refuses the setting rather than ignoring it. */
    if (!v->accept && v->priority != 255)
        conf_key_error(ctx, map, "accept",
                       "accept: false (RFC 5798 Accept_Mode off) is not supported: the master "
                       "holds the virtual IPs as interface addresses so that tern's listeners "
                       "answer on them; leave accept out (true) and filter other services of "
                       "the host with its firewall");
    /* RFC 5798 section 5.2.9: over IPv6 the first address is the virtual
     * router's link-local one; receivers drop adverts without it. */
    if (family == AF_INET6 &&
        !(v->virtual_ips[0].addr[0] == 0xfe && (v->virtual_ips[0].addr[1] & 0xc0) == 0x80))
        conf_key_error(ctx, map, "virtual_ips",
                       "over IPv6 the first virtual IP must be a link-local address (fe80::/10, "
                       "RFC 5798 section 5.2.9), e.g. [ fe80::1/64, %s ]",
                       v->virtual_ips[0].text);
    if (v->version == 2 && family == AF_INET6)
        conf_key_error(ctx, map, "version", "VRRPv2 carries IPv4 addresses only; use version 3");
    for (size_t i = 0; i < v->nunicast_peers && family != 0; i++) {
        if (v->unicast_peers[i].sa.ss_family != (sa_family_t)family) {
            conf_key_error(ctx, map, "unicast_peers",
                           "peer %s is not of the address family of virtual_ips",
                           v->unicast_peers[i].text);
            break;
        }
        /* Over IPv6 adverts come from the sender's link-local address
         * (RFC 5798 section 5.1.2.1), which is what a peer is known by. */
        const uint8_t *a6 =
            (const uint8_t *)&((const struct sockaddr_in6 *)&v->unicast_peers[i].sa)->sin6_addr;
        if (family == AF_INET6 && !(a6[0] == 0xfe && (a6[1] & 0xc0) == 0x80)) {
            conf_key_error(ctx, map, "unicast_peers",
                           "peer %s: over IPv6 name each peer by its link-local address "
                           "(fe80::/10), the source of its advertisements",
                           v->unicast_peers[i].text);
            break;
        }
    }
}

static const struct conf_field vrrp_fields[] = {
    {.key = "name",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_vrrp, name),
     .doc = "unique name, used in logs, the API and notify"},
    {.key = "interface",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_vrrp, interface),
     .doc = "interface that sends advertisements and carries the virtual IPs"},
    {.key = "vrid",
     .kind = CONF_UINT,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_vrrp, vrid),
     .min = 1,
     .max = 255,
     .doc = "virtual router id, shared by every router of the group"},
    {.key = "priority",
     .kind = CONF_UINT,
     CONF_AT(struct conf_vrrp, priority),
     .min = 1,
     .max = 255,
     .def = "100",
     .doc = "highest wins mastership; 255: owns the addresses"},
    {.key = "version",
     .kind = CONF_UINT,
     CONF_AT(struct conf_vrrp, version),
     .min = 2,
     .max = 3,
     .def = "3",
     .doc = "VRRP protocol version (3: RFC 5798, 2: RFC 3768)"},
    {.key = "advert_interval",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_vrrp, advert_interval),
     .def = "1s",
     .doc = "time between advertisements: v3 10ms..40950ms in 10ms steps, v2 whole "
            "seconds"},
    {.key = "virtual_ips",
     .kind = CONF_LIST,
     .elem = CONF_CIDR,
     .flags = CONF_F_REQUIRED,
     .min = 1,
     CONF_AT(struct conf_vrrp, virtual_ips),
     CONF_COUNT(struct conf_vrrp, nvirtual_ips),
     .doc = "addresses the master holds, with their prefix length (bare: /32 or /128); one "
            "family per instance; IPv6 starts with a link-local address"},
    {.key = "unicast_peers",
     .kind = CONF_LIST,
     .elem = CONF_IP,
     CONF_AT(struct conf_vrrp, unicast_peers),
     CONF_COUNT(struct conf_vrrp, nunicast_peers),
     .doc = "other routers' addresses for unicast adverts (IPv6: their link-local addresses); "
            "absent: multicast 224.0.0.18 / ff02::12"},
    {.key = "preempt",
     .kind = CONF_BOOL,
     CONF_AT(struct conf_vrrp, preempt),
     .def = "true",
     .doc = "take mastership from a lower-priority master"},
    {.key = "preempt_delay",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_vrrp, preempt_delay),
     .def = "0",
     .doc = "wait this long after start before preempting"},
    {.key = "accept",
     .kind = CONF_BOOL,
     CONF_AT(struct conf_vrrp, accept),
     .def = "true",
     .doc = "RFC 5798 Accept_Mode. Only `true`: the master holds the virtual IPs as interface "
            "addresses, so tern's listeners (and any other service of the host) answer on "
            "them, which is what a load balancer's VIP is for. `false` would need firewall "
            "rules tern does not install (keepalived's `no_accept`); filter other services "
            "with the host's firewall instead"},
    {.key = "track_pools",
     .kind = CONF_LIST,
     .elem = CONF_STRING,
     CONF_AT(struct conf_vrrp, track_pools),
     CONF_COUNT(struct conf_vrrp, ntrack_pools),
     .doc = "pools that must have a healthy server"},
    {.key = "track_interfaces",
     .kind = CONF_LIST,
     .elem = CONF_STRING,
     CONF_AT(struct conf_vrrp, track_interfaces),
     CONF_COUNT(struct conf_vrrp, ntrack_interfaces),
     .doc = "interfaces that must be up"},
    {.key = "track_weight",
     .kind = CONF_UINT,
     CONF_AT(struct conf_vrrp, track_weight),
     .min = 0,
     .max = 254,
     .def = "0",
     .doc = "priority lost per failed tracked object; 0: any failure means FAULT"},
    {.key = "notify",
     .kind = CONF_STRING,
     CONF_AT(struct conf_vrrp, notify),
     .doc = "script run on each state change with instance name and new state"},
    {.key = "checksum_pseudo_header",
     .kind = CONF_BOOL,
     CONF_AT(struct conf_vrrp, checksum_pseudo_header),
     .def = "true",
     .doc = "VRRPv3 IPv4 checksum over the IP pseudo-header, as keepalived does"},
    {.key = "garp_repeat",
     .kind = CONF_UINT,
     CONF_AT(struct conf_vrrp, garp_repeat),
     .min = 1,
     .max = 100,
     .def = "5",
     .doc = "gratuitous ARPs / unsolicited NAs sent for each virtual address on becoming "
            "master, back to back right after the first advertisement"},
    {.key = "garp_refresh",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_vrrp, garp_refresh),
     .def = "0",
     .doc = "while master, one more gratuitous ARP / unsolicited NA per virtual address this "
            "often (keepalived's vrrp_garp_master_refresh); 0: never"},
    END,
};

static const struct conf_schema vrrp_schema = {
    .name = "vrrp instance",
    .size = sizeof(struct conf_vrrp),
    .fields = vrrp_fields,
    .check = check_vrrp,
    .doc = "Virtual IP failover between tern hosts with VRRP (v3, RFC 5798; v2 for old "
           "peers). Interoperates with keepalived in the same VRID.",
};

/* ---- the top level ---- */

static const struct conf_field root_fields[] = {
    {.key = "global",
     .kind = CONF_STRUCT,
     .sub = &global_schema,
     CONF_AT(struct conf, global),
     .doc = "process-wide settings"},
    {.key = "admin",
     .kind = CONF_STRUCT,
     .sub = &admin_schema,
     CONF_AT(struct conf, admin),
     CONF_PRESENT(struct conf, admin.enabled),
     .doc = "admin API; absent: disabled"},
    {.key = "include",
     .kind = CONF_LIST,
     .elem = CONF_STRING,
     .flags = CONF_F_NOSTORE,
     .doc = "files merged into this one: a path, a glob pattern or a list, relative to this "
            "file (see Includes)"},
    {.key = "listeners",
     .kind = CONF_SEQ,
     .sub = &listener_schema,
     CONF_AT(struct conf, listeners),
     CONF_COUNT(struct conf, nlisteners),
     .doc = "where clients connect"},
    {.key = "pools",
     .kind = CONF_MAP,
     .sub = &pool_schema,
     CONF_AT(struct conf, pools),
     CONF_COUNT(struct conf, npools),
     .doc = "backend server pools by name"},
    {.key = "vrrp",
     .kind = CONF_SEQ,
     .sub = &vrrp_schema,
     CONF_AT(struct conf, vrrp),
     CONF_COUNT(struct conf, nvrrp),
     .doc = "VRRP instances"},
    {.key = "watch",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &conf_watch_schema,
     CONF_AT(struct conf, watch),
     CONF_PRESENT(struct conf, watch.present),
     .doc = "metrics, alarms and notifications; absent: plugin not loaded"},
    {.key = "scale",
     .kind = CONF_SEQ,
     .sub = &conf_scale_schema,
     CONF_AT(struct conf, scale),
     CONF_COUNT(struct conf, nscale),
     .doc = "scaling groups; absent: plugin not loaded"},
    END,
};

const struct conf_schema conf_tern_schema = {
    .name = "tern",
    .size = sizeof(struct conf),
    .fields = root_fields,
};
