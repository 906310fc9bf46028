/*
 * tlsload: full TLS handshakes per second against one https port.
 *
 * wrk resumes TLS sessions across its reconnections (SSL_clear keeps the
 * session), so its "Connection: close" figure mixes full and resumed
 * handshakes in whatever share each server's ticket policy allows. This
 * client never offers a session: every connection is a new SSL object,
 * handshakes in full, sends one "GET PATH HTTP/1.1" with Connection: close,
 * reads the answer to the end and closes, CONNS of them at a time on one
 * thread (epoll, non-blocking). Certificates are not verified (the server's
 * work is the same either way).
 *
 * usage: tlsload PORT SECONDS CONNS [PATH]
 * prints: "<completed> connections in <seconds> s, <rate>/s, <errors> errors"
 *
 * Built by bench/tls_bench.py with: cc -O2 -o tlsload tlsload.c -lssl -lcrypto
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    SSL *ssl;
    int state; /* 0 connecting, 1 handshake, 2 writing, 3 reading */
    size_t sent;
};

static SSL_CTX *ctx;
static int ep, port;
static char req[256];
static size_t reqlen;
static long done, errors;

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
arm(struct conn *c, unsigned ev, int op)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, op, c->fd, &e);
}

static void
start(struct conn *c)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->ssl = NULL;
    c->sent = 0;
    c->state = 0;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
        perror("connect");
        exit(1);
    }
    arm(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void
finish(struct conn *c, int ok)
{
    if (ok)
        done++;
    else
        errors++;
    if (c->ssl) {
        if (ok)
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    ERR_clear_error();
    close(c->fd);
    start(c);
}

/* Maps an SSL result onto the events to wait for; 0 on a fatal error. */
static unsigned
want(struct conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return EPOLLIN;
    case SSL_ERROR_WANT_WRITE:
        return EPOLLOUT;
    default:
        return 0;
    }
}

static void
step(struct conn *c)
{
    char buf[16384];
    for (;;) {
        if (c->state == 0) {
            int e = 0;
            socklen_t l = sizeof(e);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l);
            if (e) {
                finish(c, 0);
                return;
            }
            c->ssl = SSL_new(ctx);
            SSL_set_fd(c->ssl, c->fd);
            SSL_set_connect_state(c->ssl);
            c->state = 1;
        }
        if (c->state == 1) {
            ERR_clear_error();
            int r = SSL_do_handshake(c->ssl);
            if (r != 1) {
                unsigned ev = want(c, r);
                if (!ev) {
                    finish(c, 0);
                    return;
                }
                arm(c, ev, EPOLL_CTL_MOD);
                return;
            }
            c->state = 2;
        }
        if (c->state == 2) {
            size_t n = 0;
            ERR_clear_error();
            int r = SSL_write_ex(c->ssl, req + c->sent, reqlen - c->sent, &n);
            if (r != 1) {
                unsigned ev = want(c, r);
                if (!ev) {
                    finish(c, 0);
                    return;
                }
                arm(c, ev, EPOLL_CTL_MOD);
                return;
            }
            c->sent += n;
            if (c->sent < reqlen)
                continue;
            c->state = 3;
        }
        if (c->state == 3) {
            size_t n = 0;
            ERR_clear_error();
            int r = SSL_read_ex(c->ssl, buf, sizeof(buf), &n);
            if (r == 1)
                continue;
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL) {
                /* The server closed after its answer: one complete round. */
                finish(c,
                       e == SSL_ERROR_ZERO_RETURN || ERR_peek_error() == 0 ||
                           ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
                return;
            }
            arm(c, want(c, r), EPOLL_CTL_MOD);
            return;
        }
    }
}

int
main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: tlsload PORT SECONDS CONNS [PATH]\n");
        return 2;
    }
    port = atoi(argv[1]);
    double secs = atof(argv[2]);
    int nconns = atoi(argv[3]);
    reqlen = (size_t)snprintf(req, sizeof(req),
                              "GET %s HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n",
                              argc > 4 ? argv[4] : "/");
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* No session cache and no tickets kept: nothing to resume with. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)nconns, sizeof(*cs));
    for (int i = 0; i < nconns; i++)
        start(&cs[i]);
    double t0 = now(), end = t0 + secs;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++)
            step(evs[i].data.ptr);
    }
    double t = now() - t0;
    printf("%ld connections in %.2f s, %.1f/s, %ld errors\n", done, t, done / t, errors);
    return 0;
}
