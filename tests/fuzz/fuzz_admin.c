/*
 * libFuzzer target for the admin API (lb/admin_http.c, lb/admin_routes.c):
 * a client's bytes on a real admin connection, through the request loop,
 * the router, the bearer token check, the JSON bodies and every handler,
 * including the mutating ones.
 *
 * The admin API runs as the daemon runs it: lb_admin_start() on a loaded
 * configuration and a snapshot of it, listening on 127.0.0.1 (an ephemeral
 * port) on this target's libev loop. Each input gets a fresh snapshot (as a
 * reload would make it, so that what one input changed does not leak into
 * the next) and one connection: the input is written in up to three pieces
 * at data-derived cut points with the loop run in between, then the client
 * shuts its side and reads until the server closes. The reload route reads
 * a file that does not exist, so it always fails, without touching the
 * state of the target.
 *
 * Invariants (abort() when broken): the server ends the connection once
 * the client has shut its side; what it sent is a sequence of whole
 * HTTP/1.1 responses that the proxy's parser accepts, each framed by its
 * Content-Length (no body for HEAD), with no bytes after a response that
 * says "Connection: close"; every JSON response body is valid JSON; no
 * connection is left behind.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf/config.h"
#include "fuzz_common.h"
#include "lb/admin.h"
#include "lb/admin_int.h"
#include "lb/core.h"
#include "lb/http1.h"
#include "lb/log.h"
#include "lb/runtime.h"

#define TOKEN "fuzz-token-7f3a"

/* admin.listen is filled in with a free port (the schema refuses 0). */
static const char conf_text[] =
    "admin:\n"
    "  listen: 127.0.0.1:%d\n"
    "  token_file: token\n"
    "listeners:\n"
    "  - { name: web, bind: 127.0.0.1:1, mode: http, pool: web,\n"
    "      routes: [ { match: { host: api.example.com, path_prefix: /v1/ }, pool: api } ] }\n"
    "  - { name: raw, bind: 127.0.0.1:2, mode: tcp, pool: api }\n"
    "pools:\n"
    "  web:\n"
    "    balance: roundrobin\n"
    "    servers:\n"
    "      - { name: web1, address: 127.0.0.1:1, weight: 1 }\n"
    "      - { name: web2, address: '[::1]:2', weight: 3 }\n"
    "    health_check: { type: tcp, interval: 1h, timeout: 1s }\n"
    "  api:\n"
    "    balance: maglev\n"
    "    servers: []\n";

static struct lb_ctl ctl;
static char conf_path[256];
static struct sockaddr_in addr;

static FILE *
create(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    check(f != NULL);
    return f;
}

/* A port the kernel just handed out, free again for the admin listener. */
static int
free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    check(fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    check(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static struct lb_snapshot *
fresh_snapshot(void)
{
    struct conf *c = NULL;
    FILE *devnull = fopen("/dev/null", "w");
    int errors = conf_load(conf_path, devnull, &c);

    fclose(devnull);
    check(errors == 0 && c != NULL);
    struct lb_snapshot *s = lb_snapshot_new(c);
    check(s != NULL);
    return s;
}

static void
setup(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[256];

    snprintf(dir, sizeof(dir), "%s/tern-fuzz-admin-XXXXXX", tmp ? tmp : "/tmp");
    check(mkdtemp(dir) != NULL);
    FILE *f = create(dir, "token");
    check(fputs(TOKEN "\n", f) >= 0 && fclose(f) == 0);
    f = create(dir, "tern.yaml");
    check(fprintf(f, conf_text, free_port()) > 0 && fclose(f) == 0);
    snprintf(conf_path, sizeof(conf_path), "%s/tern.yaml", dir);

    signal(SIGPIPE, SIG_IGN);
    lb_log_set_level(LB_LOG_ERR);
    ctl.loop = ev_loop_new(EVFLAG_AUTO);
    ctl.snap = fresh_snapshot();
    check(lb_admin_start(&ctl) == 0 && ctl.admin != NULL);

    struct admin *a = ctl.admin;
    socklen_t len = sizeof(addr);
    check(getsockname(a->fd, (struct sockaddr *)&addr, &len) == 0);
    /* Each input loads the file again; reload finds none and fails. */
    ctl.conf_path = "/nonexistent/tern-fuzz-admin.yaml";
}

static void
spin(void)
{
    for (int i = 0; i < 4; i++)
        ev_run(ctl.loop, EVRUN_NOWAIT);
}

static void
on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
}

struct stream {
    char *p;
    size_t len, cap;
};

/* Reads what is there; false once the server closed. */
static bool
drain(int fd, struct stream *s)
{
    for (;;) {
        if (s->cap - s->len < 65536) {
            s->cap = s->cap ? s->cap * 2 : 131072;
            s->p = realloc(s->p, s->cap);
            check(s->p != NULL);
        }
        ssize_t n = recv(fd, s->p + s->len, s->cap - s->len, MSG_DONTWAIT);
        if (n > 0) {
            s->len += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return true;
        return false; /* 0, or a reset: the server is done */
    }
}

static void
put(int fd, const uint8_t *p, size_t n, struct stream *s)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            spin();
            if (!drain(fd, s))
                return;
            continue;
        }
        if (w < 0)
            return; /* the server closed (an error answer) */
        p += w;
        n -= (size_t)w;
    }
    spin();
    drain(fd, s);
}

/* Which of the requests in the input, in order as the server reads them,
 * get an answer without a body: HEAD requests that reach the router (a
 * chunked or oversized one is refused with a body). */
static size_t
request_heads(const uint8_t *data, size_t size, bool *head, size_t max)
{
    static const struct http1_limits lim = {
        .max_request_line = ADMIN_MAX_LINE,
        .max_head = ADMIN_MAX_HEAD,
        .max_headers = HTTP1_MAX_HEADERS,
    };
    size_t n = 0, off = 0;

    while (n < max && off < size) {
        struct http1_request r;
        ssize_t h = http1_parse_request((const char *)data + off, size - off, &lim, &r);
        if (h <= 0)
            break;
        head[n++] = r.meth == HTTP1_M_HEAD && !r.f.chunked && r.f.content_length <= ADMIN_MAX_BODY;
        off += (size_t)h + (r.f.content_length > 0 ? (size_t)r.f.content_length : 0);
    }
    return n;
}

static void
check_responses(const struct stream *s, const uint8_t *data, size_t size)
{
    bool heads[256];
    size_t nreq = request_heads(data, size, heads, 256), k = 0, off = 0;

    while (off < s->len) {
        struct http1_response r;
        ssize_t h = http1_parse_response(s->p + off, s->len - off, 65536, &r);
        check(h > 0 && r.minor_version == 1);
        off += (size_t)h;
        if (r.status == 100)
            continue;
        check(r.f.content_length >= 0 && !r.f.chunked);
        size_t blen = k < nreq && heads[k] ? 0 : (size_t)r.f.content_length;
        check(blen <= s->len - off);
        bool json = false;
        for (size_t i = 0; i < r.nheaders; i++)
            if (http1_str_ieq(r.headers[i].name, "content-type"))
                json = r.headers[i].value.len == 16 &&
                       memcmp(r.headers[i].value.p, "application/json", 16) == 0;
        if (json && blen > 0) {
            json_t *j = json_loadb(s->p + off, blen, 0, NULL);
            check(j != NULL);
            json_decref(j);
        }
        off += blen;
        k++;
        if (r.f.conn_close)
            check(off == s->len);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ctl.loop == NULL)
        setup();

    /* A fresh snapshot, as after a reload: the admin API syncs to it. */
    struct lb_snapshot *old = ctl.snap;
    ctl.snap = fresh_snapshot();
    lb_snapshot_unref(old);

    /* The client closes first and so keeps TIME_WAIT for a minute: from one
     * source address, a thousand inputs a second would run out of ports in
     * under a minute. Each input comes from the next address of
     * 127.1.0.0/16. */
    static unsigned clients;
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(0x7f010000u | (++clients & 0xffffu))};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    check(fd >= 0 && bind(fd, (struct sockaddr *)&src, sizeof(src)) == 0);
    int r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    if (r != 0 && errno == EINTR) {
        /* libFuzzer's timer signal: the connect goes on without us. */
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof(err);
        while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
            ;
        r = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0 ? 0 : -1;
        errno = err;
    }
    if (r != 0) {
        /* The listener is gone or refuses: say why before the abort. */
        fprintf(stderr, "fuzz_admin: connect from 127.1.%u.%u: %s\n", (clients >> 8) & 255,
                clients & 255, strerror(errno));
        check(false);
    }
    struct admin *a = ctl.admin;
    for (int i = 0; i < 100 && a->nconns == 0; i++)
        spin();
    check(a->nconns == 1);

    size_t cut1, cut2;
    fuzz_cuts(data, size, size, &cut1, &cut2);
    struct stream s = {0};
    put(fd, data, cut1, &s);
    put(fd, data + cut1, cut2 - cut1, &s);
    put(fd, data + cut2, size - cut2, &s);
    shutdown(fd, SHUT_WR);

    /* The server must close: every request answered or refused. An answer
     * may wait for work off the loop (POST /api/v1/reload loads the file on
     * a thread), so the loop blocks here, woken at least every 10 ms, and a
     * connection is hung when nothing came for 3 s. */
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.01, 0.01);
    ev_timer_start(ctl.loop, &tick);
    int idle = 0;
    for (;;) {
        size_t before = s.len;
        ev_run(ctl.loop, EVRUN_ONCE);
        if (!drain(fd, &s))
            break;
        idle = s.len == before ? idle + 1 : 0;
        check(idle < 300);
    }
    ev_timer_stop(ctl.loop, &tick);
    close(fd);
    spin();
    check(a->nconns == 0);
    check_responses(&s, data, size);
    free(s.p);
    return 0;
}
