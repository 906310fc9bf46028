/*
 * The admin API's HTTP/1.1 server on the control thread's loop: accepts,
 * reads requests with the proxy's strict parser (lb/http1.h), hands complete
 * ones to admin_route() and writes the answers, with keep-alive and
 * pipelining. Never blocks.
 *
 * Admin clients are few, so each connection simply owns a growable input
 * buffer (bounded by ADMIN_MAX_HEAD + ADMIN_MAX_BODY) and one output string.
 * A connection is in one phase at a time, each with its own timeout:
 *   IDLE    waiting for a request (keep-alive),
 *   REQ     part of a request arrived; the whole of it must come in time,
 *   WRITE   an answer is being sent (no reading meanwhile: back pressure),
 *   WAIT    the answer comes later (POST /api/v1/reload waits for its load):
 *           no timeout, no further request taken until lb_admin_loads_
 *           finished() answers it,
 *   LINGER  answered with "close": our side is shut, input is discarded a
 *           little while so the client reads the answer rather than a reset.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb/admin.h"
#include "lb/admin_int.h"
#include "lb/log.h"
#include "lb/reload.h"

enum conn_phase { C_IDLE, C_REQ, C_WRITE, C_WAIT, C_LINGER };

struct admin_conn {
    struct admin *a;
    struct admin_conn *prev, *next;
    int fd;
    ev_io io;
    ev_timer timer;
    enum conn_phase phase;
    char *in;
    size_t in_len, in_cap;
    struct admin_sbuf out;
    size_t out_off;
    bool close_after;   /* close once out is sent */
    bool eof;           /* the client shut its side */
    bool sent_continue; /* 100 Continue sent for the request being read */
    /* A deferred answer (struct admin_resp.defer) and how to frame it. */
    bool waiting;
    bool wait_head, wait_keep;
    uint64_t wait_load;
    void (*finish)(struct admin *a, struct admin_resp *rs);
    bool resume; /* answered, to be run again (lb_admin_loads_finished) */
};

static const char *
reason(int status)
{
    static const struct {
        int status;
        const char *text;
    } reasons[] = {
        {100, "Continue"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {411, "Length Required"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {505, "HTTP Version Not Supported"},
        {507, "Insufficient Storage"},
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].status == status)
            return reasons[i].text;
    return "Status";
}

static bool
pending(const struct admin_conn *c)
{
    return c->out_off < c->out.len;
}

static void
conn_close(struct admin_conn *c)
{
    struct admin *a = c->a;
    struct ev_loop *loop = a->ctl->loop;

    ev_io_stop(loop, &c->io);
    ev_timer_stop(loop, &c->timer);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        a->conns_tail = c->prev;
    a->nconns--;
    admin_sbuf_free(&c->out);
    free(c->in);
    free(c);
}

static void
set_timer(struct admin_conn *c, double seconds)
{
    struct ev_loop *loop = c->a->ctl->loop;
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, seconds, 0);
    ev_timer_start(loop, &c->timer);
}

static void
set_events(struct admin_conn *c, int events)
{
    struct ev_loop *loop = c->a->ctl->loop;
    if (!events) {
        ev_io_stop(loop, &c->io);
        return;
    }
    if ((c->io.events & (EV_READ | EV_WRITE)) == events && ev_is_active(&c->io))
        return;
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(loop, &c->io);
}

/* Appends a whole response to c->out. */
static void
put_response(struct admin_conn *c, struct admin_resp *rs, bool head_only, bool keep_alive)
{
    struct admin_sbuf *o = &c->out;

    if (rs->body.oom) {
        admin_sbuf_free(&rs->body);
        rs->status = 500;
        rs->ctype = NULL;
        admin_sbuf_puts(&rs->body, "{\"error\":\"out of memory\",\"status\":500}\n");
    }
    admin_sbuf_printf(o,
                      "HTTP/1.1 %d %s\r\nServer: tern\r\nContent-Type: %s\r\n"
                      "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                      "X-Content-Type-Options: nosniff\r\n",
                      rs->status, reason(rs->status), rs->ctype ? rs->ctype : "application/json",
                      rs->body.len);
    if (rs->allow[0])
        admin_sbuf_printf(o, "Allow: %s\r\n", rs->allow);
    if (rs->www_auth)
        admin_sbuf_puts(o, "WWW-Authenticate: Bearer realm=\"tern\"\r\n");
    if (rs->location)
        admin_sbuf_printf(o, "Location: %s\r\n", rs->location);
    admin_sbuf_puts(o, keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
    if (!head_only && rs->body.len)
        admin_sbuf_add(o, rs->body.p, rs->body.len);
    if (!keep_alive)
        c->close_after = true;
}

/* An answer that ends the connection: the request could not be read. */
static void
put_error(struct admin_conn *c, int status, const char *msg)
{
    struct admin_resp rs = {0};
    admin_error(&rs, status, "%s", msg);
    put_response(c, &rs, false, false);
    admin_sbuf_free(&rs.body);
}

static struct http1_str
header(const struct http1_request *req, const char *lower)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (http1_str_ieq(req->headers[i].name, lower))
            return req->headers[i].value;
    return (struct http1_str){NULL, 0};
}

static void
dispatch(struct admin_conn *c, const struct http1_request *req, size_t head_len, size_t body_len)
{
    struct admin_req rq = {
        .meth = req->meth,
        .method = req->method,
        .path = req->path,
        .body = {c->in + head_len, body_len},
        .auth = header(req, "authorization"),
    };
    struct admin_resp rs = {.status = 200};
    bool keep = !req->f.conn_close && (req->minor_version >= 1 || req->f.conn_keep_alive);

    if (req->path.len == 0 || req->path.p[0] != '/') {
        admin_error(&rs, 400, "the request target must be a path (origin-form)");
    } else {
        const char *q = memchr(req->target.p, '?', req->target.len);
        if (q)
            rq.query = (struct http1_str){q + 1, (size_t)(req->target.p + req->target.len - q - 1)};
        admin_sync(c->a);
        admin_route(c->a, &rq, &rs);
    }
    if (rs.defer) {
        c->waiting = true;
        c->wait_head = req->meth == HTTP1_M_HEAD;
        c->wait_keep = keep;
        c->wait_load = rs.wait_load;
        c->finish = rs.finish;
        admin_sbuf_free(&rs.body);
        free(rs.location);
        return;
    }
    put_response(c, &rs, req->meth == HTTP1_M_HEAD, keep);
    admin_sbuf_free(&rs.body);
    free(rs.location);
}

/*
 * Looks at the buffered input. Returns 1 when it appended something to send
 * (an answer, or 100 Continue), 0 when more input is needed, -1 when the
 * connection was closed.
 */
static int
next_request(struct admin_conn *c)
{
    static const struct http1_limits lim = {
        .max_request_line = ADMIN_MAX_LINE,
        .max_head = ADMIN_MAX_HEAD,
        .max_headers = HTTP1_MAX_HEADERS,
    };
    struct http1_request req;

    if (c->in_len == 0) {
        if (c->eof) {
            conn_close(c);
            return -1;
        }
        return 0;
    }
    ssize_t h = http1_parse_request(c->in, c->in_len, &lim, &req);
    if (h == HTTP1_ERROR) {
        put_error(c, req.error_status, req.error);
        return 1;
    }
    if (h == HTTP1_INCOMPLETE) {
        if (c->eof) {
            conn_close(c);
            return -1;
        }
        return 0;
    }
    if (req.f.chunked) {
        put_error(c, 411, "send the body with a Content-Length");
        return 1;
    }
    size_t cl = req.f.content_length > 0 ? (size_t)req.f.content_length : 0;
    if (req.f.content_length > ADMIN_MAX_BODY) {
        put_error(c, 413, "request bodies are limited to 65536 bytes");
        return 1;
    }
    if (c->in_len < (size_t)h + cl) {
        if (c->eof) {
            conn_close(c);
            return -1;
        }
        if (req.expect_continue && !c->sent_continue) {
            c->sent_continue = true;
            admin_sbuf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            return 1;
        }
        return 0;
    }
    dispatch(c, &req, (size_t)h, cl);
    memmove(c->in, c->in + h + cl, c->in_len - (size_t)h - cl);
    c->in_len -= (size_t)h + cl;
    c->sent_continue = false;
    return 1;
}

/* Sends what it can. Returns false when the connection was closed. */
static bool
flush(struct admin_conn *c)
{
    while (pending(c)) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0) {
            conn_close(c);
            return false;
        }
        c->out_off += (size_t)n;
        if (c->phase == C_WRITE)
            set_timer(c, ADMIN_TIMEOUT_WRITE); /* progress */
    }
    admin_sbuf_free(&c->out);
    c->out_off = 0;
    return true;
}

/* Chooses the phase, events and timeout from what is left to do. */
static void
settle(struct admin_conn *c)
{
    enum conn_phase was = c->phase;

    if (pending(c)) {
        c->phase = C_WRITE;
        set_events(c, EV_WRITE);
        if (was != C_WRITE)
            set_timer(c, ADMIN_TIMEOUT_WRITE);
    } else if (c->waiting) {
        /* No timeout: the load ends by itself (within the resolver's
         * timeouts). Input goes on being read, up to the buffer's bound, so
         * that a client that resets is freed at once; after EOF the socket
         * stays readable, so reading stops (a client that only shut its
         * side still gets the answer, as with any request). */
        c->phase = C_WAIT;
        ev_timer_stop(c->a->ctl->loop, &c->timer);
        bool room = c->in_len < c->in_cap || c->in_cap < ADMIN_MAX_HEAD + ADMIN_MAX_BODY;
        set_events(c, c->eof || !room ? 0 : EV_READ);
    } else if (c->close_after) {
        if (c->eof) {
            conn_close(c);
            return;
        }
        if (was != C_LINGER) {
            shutdown(c->fd, SHUT_WR);
            c->phase = C_LINGER;
            set_events(c, EV_READ);
            set_timer(c, ADMIN_TIMEOUT_LINGER);
        }
    } else if (c->in_len > 0) {
        c->phase = C_REQ;
        set_events(c, EV_READ);
        if (was != C_REQ)
            set_timer(c, ADMIN_TIMEOUT_REQ);
    } else {
        c->phase = C_IDLE;
        set_events(c, EV_READ);
        if (was != C_IDLE)
            set_timer(c, ADMIN_TIMEOUT_IDLE);
    }
}

/* Answers every complete request buffered, as far as the socket takes it. */
static void
run(struct admin_conn *c)
{
    for (;;) {
        if (!flush(c))
            return;
        if (pending(c) || c->close_after || c->waiting)
            break;
        int r = next_request(c);
        if (r < 0)
            return;
        if (r == 0)
            break;
    }
    settle(c);
}

static void
on_read(struct admin_conn *c)
{
    if (c->phase == C_LINGER) {
        char junk[4096];
        ssize_t n = recv(c->fd, junk, sizeof(junk), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            conn_close(c);
        return;
    }
    if (c->in_len == c->in_cap) {
        size_t max = ADMIN_MAX_HEAD + ADMIN_MAX_BODY;
        size_t cap = c->in_cap ? c->in_cap * 2 : 4096;
        if (cap > max)
            cap = max;
        if (cap == c->in_cap) {
            /* Cannot happen: a full buffer always holds a complete request
             * or a head the parser refuses. Be safe anyway. */
            put_error(c, 431, "request too large");
            run(c);
            return;
        }
        char *p = realloc(c->in, cap);
        if (!p) {
            conn_close(c);
            return;
        }
        c->in = p;
        c->in_cap = cap;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_close(c);
        return;
    }
    if (n == 0)
        c->eof = true;
    c->in_len += (size_t)n;
    run(c);
}

static void
on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct admin_conn *c = w->data;
    if (revents & EV_READ)
        on_read(c);
    else if (revents & EV_WRITE)
        run(c);
}

static void
on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct admin_conn *c = t->data;
    if (c->phase == C_REQ) {
        /* Too slow (slowloris): say so, and close. */
        c->in_len = 0;
        put_error(c, 408, "the request did not arrive in time");
        run(c);
        return;
    }
    conn_close(c);
}

static void
conn_new(struct admin *a, int fd)
{
    if (a->nconns >= ADMIN_MAX_CONNS) {
        /* Make room: the oldest connection that is done or waiting, else the
         * oldest one still trickling its request in (a slowloris must not
         * lock the operator out); never one being answered. */
        struct admin_conn *old = NULL;
        for (struct admin_conn *o = a->conns; o && !old; o = o->next)
            if (o->phase == C_IDLE || o->phase == C_LINGER)
                old = o;
        for (struct admin_conn *o = a->conns; o && !old; o = o->next)
            if (o->phase == C_REQ)
                old = o;
        if (!old) {
            close(fd);
            return;
        }
        conn_close(old);
    }
    struct admin_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->a = a;
    c->fd = fd;
    c->phase = C_IDLE;
    c->prev = a->conns_tail;
    if (a->conns_tail)
        a->conns_tail->next = c;
    else
        a->conns = c;
    a->conns_tail = c;
    a->nconns++;
    ev_io_init(&c->io, on_io, fd, EV_READ);
    c->io.data = c;
    ev_io_start(a->ctl->loop, &c->io);
    ev_timer_init(&c->timer, on_timer, ADMIN_TIMEOUT_IDLE, 0);
    c->timer.data = c;
    ev_timer_start(a->ctl->loop, &c->timer);
}

static void
on_accept_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct admin *a = t->data;
    ev_io_start(loop, &a->accept_io);
}

static void
on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct admin *a = w->data;
    /* A bounded batch: the control loop has other duties (VRRP timing). */
    for (int i = 0; i < 64; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_new(a, fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* The socket stays readable: without a pause the loop would
             * spin on it. */
            lb_warn("admin: accept: %s; pausing for a second", strerror(errno));
            ev_io_stop(loop, &a->accept_io);
            ev_timer_set(&a->accept_pause, 1.0, 0);
            ev_timer_start(loop, &a->accept_pause);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                   errno != ECONNABORTED) {
            lb_warn("admin: accept: %s", strerror(errno));
        }
        return;
    }
}

int
admin_http_listen(struct admin *a, const struct conf_addr *addr)
{
    int one = 1;
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&addr->sa, addr->salen) < 0 || listen(fd, 128) < 0)
        goto fail;
    a->fd = fd;
    ev_io_init(&a->accept_io, on_accept, fd, EV_READ);
    a->accept_io.data = a;
    ev_io_start(a->ctl->loop, &a->accept_io);
    ev_timer_init(&a->accept_pause, on_accept_resume, 1.0, 0);
    a->accept_pause.data = a;
    return 0;
fail:
    lb_err("admin: cannot listen on %s: %s", addr->text, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

void
lb_admin_loads_finished(struct lb_ctl *ctl)
{
    struct admin *a = ctl->admin;
    uint64_t done = lb_reload_finished(ctl);

    if (!a)
        return;
    /* Every answer is written before any connection runs on: a pipelined
     * request behind one may start another load, whose outcome must not
     * reach the others. */
    for (struct admin_conn *c = a->conns; c; c = c->next) {
        if (!c->waiting || c->wait_load > done)
            continue;
        struct admin_resp rs = {.status = 200};
        c->finish(a, &rs);
        put_response(c, &rs, c->wait_head, c->wait_keep);
        admin_sbuf_free(&rs.body);
        free(rs.location);
        c->waiting = false;
        c->resume = true;
    }
    /* Running one may close it, or (through a route) answer others: look
     * for the next one afresh each time. */
    for (;;) {
        struct admin_conn *c = a->conns;
        while (c && !c->resume)
            c = c->next;
        if (!c)
            break;
        c->resume = false;
        run(c);
    }
}

void
admin_http_close_all(struct admin *a)
{
    while (a->conns)
        conn_close(a->conns);
    if (a->fd >= 0) {
        ev_io_stop(a->ctl->loop, &a->accept_io);
        ev_timer_stop(a->ctl->loop, &a->accept_pause);
        close(a->fd);
        a->fd = -1;
    }
}
