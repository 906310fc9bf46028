/*
 * `tern ctl`: a small command-line client of the admin API, in the daemon's
 * own binary so an operator always has one that matches. It speaks plain
 * HTTP/1.1 over one blocking TCP connection per command ("Connection:
 * close", so the answer ends where the stream does) and prints the JSON it
 * gets back as aligned tables.
 *
 * Exit status: 0 success, 1 the API refused (its message is printed) or
 * could not be reached, 2 usage error.
 */
#include "lb/ctl.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CTL_MAX_RESPONSE (16u << 20)
#define CTL_MAX_COLS 12

static void
usage(FILE *out)
{
    fprintf(out, "usage: tern ctl [-a HOST:PORT] [-T TOKENFILE] COMMAND\n"
                 "\n"
                 "commands:\n"
                 "  pools                          pools with their totals\n"
                 "  pool POOL                      one pool and its servers\n"
                 "  add POOL NAME ADDRESS [WEIGHT] add a server (weight 0-256, default 1)\n"
                 "  drain POOL NAME                no new requests; in-flight ones finish\n"
                 "  enable POOL NAME               back to ready\n"
                 "  maint POOL NAME                maintenance: no new requests\n"
                 "  remove POOL NAME [--now]       drain then remove (--now: remove at once)\n"
                 "  weight POOL NAME N             set the balancing weight\n"
                 "  reload                         reload the configuration file\n"
                 "  listeners                      listeners and their pools\n"
                 "  vrrp                           VRRP instances\n"
                 "\n"
                 "  -a, --address HOST:PORT  admin API (default $TERN_ADMIN or 127.0.0.1:9900)\n"
                 "  -T, --token-file FILE    bearer token for changes (default: $TERN_TOKEN)\n");
}

/* ---- HTTP ---- */

struct reply {
    int status;
    json_t *json; /* NULL when the body is not JSON */
};

static int
dial(const char *addr)
{
    char host[256], port[16];
    const char *colon = strrchr(addr, ':');
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int fd = -1;

    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host) ||
        strlen(colon + 1) >= sizeof(port) || !colon[1]) {
        fprintf(stderr, "tern ctl: address must be HOST:PORT, not %s\n", addr);
        return -2;
    }
    const char *h = addr;
    size_t hl = (size_t)(colon - addr);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    int r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        fprintf(stderr, "tern ctl: %s: %s\n", addr, gai_strerror(r));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        /* A reload may take a moment; a hung daemon must not hang us. */
        struct timeval tv = {.tv_sec = 30};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        fprintf(stderr, "tern ctl: cannot connect to %s: %s\n", addr, strerror(errno));
    freeaddrinfo(res);
    return fd;
}

static int
send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends one request and reads the whole answer. Returns 0, or 1 when the
 * API could not be reached or answered nonsense (already reported). */
static int
call(const char *addr, const char *token, const char *method, const char *path, json_t *body,
     struct reply *out)
{
    char *b = body ? json_dumps(body, JSON_COMPACT) : NULL, *req = NULL, *resp = NULL;
    size_t len = 0, cap = 0;
    int fd = -1, rc = 1;

    out->status = 0;
    out->json = NULL;
    if (body && !b)
        goto out;
    fd = dial(addr);
    if (fd < 0) {
        rc = fd == -2 ? 2 : 1;
        goto out;
    }
    int n = asprintf(&req,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tern-ctl/%s\r\n"
                     "Accept: application/json\r\nConnection: close\r\n%s%s%s%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, addr, TERN_VERSION, token ? "Authorization: Bearer " : "",
                     token ? token : "", token ? "\r\n" : "",
                     b ? "Content-Type: application/json\r\n" : "", b ? strlen(b) : 0, b ? b : "");
    if (n < 0) {
        req = NULL;
        goto out;
    }
    if (send_all(fd, req, (size_t)n) < 0) {
        fprintf(stderr, "tern ctl: %s: sending: %s\n", addr, strerror(errno));
        goto out;
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            if (cap >= CTL_MAX_RESPONSE) {
                fprintf(stderr, "tern ctl: %s: answer too large\n", addr);
                goto out;
            }
            char *p = realloc(resp, cap ? cap * 2 : 65536);
            if (!p)
                goto out;
            resp = p;
            cap = cap ? cap * 2 : 65536;
        }
        ssize_t r = recv(fd, resp + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "tern ctl: %s: reading: %s\n", addr, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (!resp || len == 0) {
        fprintf(stderr, "tern ctl: %s: connection closed without an answer\n", addr);
        goto out;
    }
    resp[len] = '\0';
    char *end = strstr(resp, "\r\n\r\n");
    if (strncmp(resp, "HTTP/1.", 7) != 0 || len < 12 || !end) {
        fprintf(stderr, "tern ctl: %s: not an HTTP answer\n", addr);
        goto out;
    }
    out->status = atoi(resp + 9);
    out->json = json_loadb(end + 4, len - (size_t)(end + 4 - resp), 0, NULL);
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    free(b);
    free(req);
    free(resp);
    return rc;
}

/* Reports a refused call: the API's message, or the status. */
static int
failed(const struct reply *r)
{
    const char *msg = json_string_value(json_object_get(r->json, "error"));
    json_t *errs = json_object_get(r->json, "errors");
    if (msg)
        fprintf(stderr, "tern ctl: %s (HTTP %d)\n", msg, r->status);
    else
        fprintf(stderr, "tern ctl: the API answered HTTP %d\n", r->status);
    for (size_t i = 0; i < json_array_size(errs); i++)
        fprintf(stderr, "  %s\n", json_string_value(json_array_get(errs, i)));
    return 1;
}

/* ---- tables ---- */

struct table {
    size_t ncol, nrows;
    const char *head[CTL_MAX_COLS];
    bool right[CTL_MAX_COLS];
    char *(*rows)[CTL_MAX_COLS];
};

static void
table_row(struct table *t, char **cells)
{
    void *p = realloc(t->rows, (t->nrows + 1) * sizeof(*t->rows));
    if (!p) {
        for (size_t c = 0; c < t->ncol; c++)
            free(cells[c]);
        return;
    }
    t->rows = p;
    memcpy(t->rows[t->nrows++], cells, t->ncol * sizeof(char *));
}

static void
table_print(struct table *t)
{
    size_t w[CTL_MAX_COLS];
    for (size_t c = 0; c < t->ncol; c++) {
        w[c] = strlen(t->head[c]);
        for (size_t r = 0; r < t->nrows; r++)
            if (strlen(t->rows[r][c]) > w[c])
                w[c] = strlen(t->rows[r][c]);
    }
    for (size_t r = 0; r <= t->nrows; r++) {
        for (size_t c = 0; c < t->ncol; c++) {
            const char *s = r ? t->rows[r - 1][c] : t->head[c];
            int pad = (int)w[c];
            if (c + 1 == t->ncol && !t->right[c])
                printf("%s", s); /* no trailing blanks */
            else
                printf(t->right[c] ? "%*s" : "%-*s", pad, s);
            printf(c + 1 < t->ncol ? "  " : "\n");
        }
    }
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncol; c++)
            free(t->rows[r][c]);
    free(t->rows);
    t->rows = NULL;
    t->nrows = 0;
}

/* A JSON value as table text: numbers plain, reals with two decimals,
 * null and missing as "-". */
static char *
cell(json_t *v)
{
    char *s = NULL;
    if (json_is_string(v))
        s = strdup(json_string_value(v));
    else if (json_is_integer(v))
        (void)!asprintf(&s, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        (void)!asprintf(&s, "%.2f", json_real_value(v));
    else if (json_is_boolean(v))
        s = strdup(json_is_true(v) ? "yes" : "no");
    else
        s = strdup("-");
    return s ? s : strdup("");
}

static json_t *
path_get(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    return b ? json_object_get(v, b) : v;
}

static void
servers_table(json_t *servers)
{
    struct table t = {
        .ncol = 10,
        .head = {"SERVER", "ADDRESS", "STATE", "HEALTH", "WEIGHT", "ACTIVE", "REQ/S", "P99_MS",
                 "REQUESTS", "5XX"},
        .right = {false, false, false, false, true, true, true, true, true, true},
    };
    for (size_t i = 0; i < json_array_size(servers); i++) {
        json_t *s = json_array_get(servers, i);
        char *row[CTL_MAX_COLS] = {
            cell(path_get(s, "name", NULL)),
            cell(path_get(s, "address", NULL)),
            cell(path_get(s, "state", NULL)),
            cell(path_get(s, "health", NULL)),
            cell(path_get(s, "weight", NULL)),
            cell(path_get(s, "active_connections", NULL)),
            cell(path_get(s, "requests_per_second", NULL)),
            cell(path_get(s, "latency_ms", "p99")),
            cell(path_get(s, "requests_total", NULL)),
            cell(path_get(s, "responses", "5xx")),
        };
        table_row(&t, row);
    }
    table_print(&t);
}

/* ---- commands ---- */

static int
show_pools(json_t *j)
{
    struct table t = {
        .ncol = 9,
        .head = {"POOL", "BALANCE", "SERVERS", "HEALTHY", "ACTIVE", "REQ/S", "P99_MS", "REQUESTS",
                 "NO_SERVER"},
        .right = {false, false, true, true, true, true, true, true, true},
    };
    json_t *list = json_object_get(j, "pools");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *p = json_array_get(list, i);
        char *row[CTL_MAX_COLS] = {
            cell(path_get(p, "name", NULL)),
            cell(path_get(p, "balance", NULL)),
            cell(path_get(p, "servers_total", NULL)),
            cell(path_get(p, "healthy_servers", NULL)),
            cell(path_get(p, "active_connections", NULL)),
            cell(path_get(p, "requests_per_second", NULL)),
            cell(path_get(p, "latency_ms", "p99")),
            cell(path_get(p, "requests_total", NULL)),
            cell(path_get(p, "no_server_total", NULL)),
        };
        table_row(&t, row);
    }
    table_print(&t);
    return 0;
}

static int
show_pool(json_t *p)
{
    char *rps = cell(path_get(p, "requests_per_second", NULL));
    char *p99 = cell(path_get(p, "latency_ms", "p99"));
    printf("pool %s (%s): %lld servers, %lld healthy, %lld active, %s req/s, p99 %s ms\n\n",
           json_string_value(json_object_get(p, "name")),
           json_string_value(json_object_get(p, "balance")),
           (long long)json_integer_value(json_object_get(p, "servers_total")),
           (long long)json_integer_value(json_object_get(p, "healthy_servers")),
           (long long)json_integer_value(json_object_get(p, "active_connections")), rps, p99);
    free(rps);
    free(p99);
    servers_table(json_object_get(p, "servers"));
    return 0;
}

static int
show_server(json_t *s)
{
    json_t *arr = json_array();
    json_array_append(arr, s);
    servers_table(arr);
    json_decref(arr);
    return 0;
}

static int
show_listeners(json_t *j)
{
    struct table t = {
        .ncol = 4,
        .head = {"LISTENER", "BIND", "MODE", "POOL"},
    };
    json_t *list = json_object_get(j, "listeners");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *l = json_array_get(list, i);
        char *row[CTL_MAX_COLS] = {
            cell(path_get(l, "name", NULL)),
            cell(path_get(l, "bind", NULL)),
            cell(path_get(l, "mode", NULL)),
            cell(path_get(l, "pool", NULL)),
        };
        table_row(&t, row);
    }
    table_print(&t);
    return 0;
}

static int
show_vrrp(json_t *j)
{
    json_t *arr = json_object_get(j, "instances");
    if (json_array_size(arr) == 0) {
        printf("no VRRP instances\n");
        return 0;
    }
    struct table t = {
        .ncol = 5,
        .head = {"INSTANCE", "INTERFACE", "VRID", "PRIORITY", "STATE"},
        .right = {false, false, true, true, false},
    };
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        char *row[CTL_MAX_COLS] = {
            cell(path_get(v, "name", NULL)),  cell(path_get(v, "interface", NULL)),
            cell(path_get(v, "vrid", NULL)),  cell(path_get(v, "priority", NULL)),
            cell(path_get(v, "state", NULL)),
        };
        table_row(&t, row);
    }
    table_print(&t);
    return 0;
}

static int
show_reload(json_t *j)
{
    (void)j;
    printf("reload: ok, the new configuration is in effect\n");
    return 0;
}

/* Reads the token: -T FILE, else $TERN_TOKEN; NULL when neither. */
static char *
read_token(const char *file)
{
    char buf[4097];
    if (!file) {
        const char *env = getenv("TERN_TOKEN");
        return env && *env ? strdup(env) : NULL;
    }
    FILE *f = fopen(file, "re");
    if (!f) {
        fprintf(stderr, "tern ctl: %s: %s\n", file, strerror(errno));
        return NULL;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = buf, *e = buf + n;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    *e = '\0';
    return strdup(s);
}

/* Escapes a path segment (names are plain, but be safe). */
static void
seg(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-_.~", c))
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", c);
    }
    out[o] = '\0';
}

struct command {
    const char *name;
    int nargs, maxargs;
    const char *method;
    int (*show)(json_t *j);
};

static const struct command commands[] = {
    {"pools", 0, 0, "GET", show_pools},      {"pool", 1, 1, "GET", show_pool},
    {"add", 3, 4, "POST", show_server},      {"drain", 2, 2, "POST", show_server},
    {"enable", 2, 2, "POST", show_server},   {"maint", 2, 2, "POST", show_server},
    {"remove", 2, 3, "DELETE", show_server}, {"weight", 3, 3, "PATCH", show_server},
    {"reload", 0, 0, "POST", show_reload},   {"listeners", 0, 0, "GET", show_listeners},
    {"vrrp", 0, 0, "GET", show_vrrp},
};

static bool
parse_weight(const char *s, long *w)
{
    char *end;
    errno = 0;
    *w = strtol(s, &end, 10);
    return *s && !*end && !errno && *w >= 0 && *w <= 256;
}

int
lb_ctl_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"address", required_argument, NULL, 'a'},
        {"token-file", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *addr = getenv("TERN_ADMIN"), *token_file = NULL;
    char path[1024], p1[256], p2[256];
    json_t *body = NULL;
    struct reply r = {0};
    char *token = NULL;
    int opt, rc = 2;

    if (!addr || !*addr)
        addr = "127.0.0.1:9900";
    optind = 1;
    while ((opt = getopt_long(argc, argv, "+a:T:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'a':
            addr = optarg;
            break;
        case 'T':
            token_file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            cmd = &commands[i];
    if (!cmd || nargs < cmd->nargs || nargs > cmd->maxargs) {
        fprintf(stderr,
                cmd ? "tern ctl: %s: wrong number of arguments\n"
                    : "tern ctl: unknown command %s\n",
                name);
        usage(stderr);
        return 2;
    }
    if (nargs >= 1)
        seg(p1, sizeof(p1), args[0]);
    if (nargs >= 2)
        seg(p2, sizeof(p2), args[1]);

    long w = 1;
    bool now = false;
    if (!strcmp(name, "pools")) {
        snprintf(path, sizeof(path), "/api/v1/pools");
    } else if (!strcmp(name, "pool")) {
        snprintf(path, sizeof(path), "/api/v1/pools/%s", p1);
    } else if (!strcmp(name, "add")) {
        if (nargs == 4 && !parse_weight(args[3], &w)) {
            fprintf(stderr, "tern ctl: weight must be an integer from 0 to 256\n");
            return 2;
        }
        snprintf(path, sizeof(path), "/api/v1/pools/%s/servers", p1);
        body = json_pack("{s:s, s:s, s:I}", "name", args[1], "address", args[2], "weight",
                         (json_int_t)w);
    } else if (!strcmp(name, "remove")) {
        if (nargs == 3 && strcmp(args[2], "--now") != 0) {
            fprintf(stderr, "tern ctl: remove: unknown option %s\n", args[2]);
            return 2;
        }
        now = nargs == 3;
        snprintf(path, sizeof(path), "/api/v1/pools/%s/servers/%s%s", p1, p2, now ? "?now=1" : "");
    } else if (!strcmp(name, "weight")) {
        if (!parse_weight(args[2], &w)) {
            fprintf(stderr, "tern ctl: weight must be an integer from 0 to 256\n");
            return 2;
        }
        snprintf(path, sizeof(path), "/api/v1/pools/%s/servers/%s", p1, p2);
        body = json_pack("{s:I}", "weight", (json_int_t)w);
    } else if (!strcmp(name, "drain") || !strcmp(name, "enable") || !strcmp(name, "maint")) {
        snprintf(path, sizeof(path), "/api/v1/pools/%s/servers/%s/%s", p1, p2, name);
    } else {
        snprintf(path, sizeof(path), "/api/v1/%s", name);
    }

    if (strcmp(cmd->method, "GET") != 0) {
        token = read_token(token_file);
        if (token_file && !token) {
            rc = 1;
            goto out;
        }
    }
    rc = call(addr, token, cmd->method, path, body, &r);
    if (rc != 0)
        goto out;
    if (r.status < 200 || r.status > 299 || !r.json) {
        rc = failed(&r);
        goto out;
    }
    rc = cmd->show(r.json);
out:
    if (token) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
    json_decref(body);
    json_decref(r.json);
    return rc;
}
