/* tcpbulk: single-stream TCP bulk sender and counting sink for bench/run.sh.
 *
 *   tcpbulk sink PORT                      listen on 127.0.0.1:PORT, one thread
 *                                          per connection, discard what arrives
 *   tcpbulk send HOST PORT BYTES [TIMEOUT [STALL]]
 *                                          connect, send BYTES, wait for the
 *                                          sink's acknowledgement, print
 *                                          "bytes=N seconds=S"; gives up after
 *                                          TIMEOUT s (default 60, exit 2) or
 *                                          STALL s without progress (default
 *                                          3, exit 3)
 *
 * Wire protocol, so that the test does not depend on the proxy forwarding a
 * half-close: the sender first writes an 8-byte big-endian length N, then N
 * bytes; the sink answers with the same 8 bytes once it has read all N, and
 * the sender stops its clock when it has read them.
 *
 * Both ends are built not to be the bottleneck: the sender uses sendfile(2)
 * from a memfd (the kernel passes page references, no copy in user space), and
 * the sink uses recv(MSG_TRUNC), which on TCP drops the data without copying
 * it out. What is left to measure is the proxy's cost.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (16u << 20) /* memfd size */
#define STEP (1u << 20)   /* bytes per sendfile call: progress is counted per call */

static uint64_t
get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void
put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static int
read_full(int fd, unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r == 0)
            return -1;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static int
write_full(int fd, const unsigned char *buf, size_t n)
{
    size_t put = 0;
    while (put < n) {
        ssize_t w = send(fd, buf + put, n - put, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        put += (size_t)w;
    }
    return 0;
}

static void *
sink_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static char scratch[1 << 16]; /* only touched when MSG_TRUNC is refused */
    unsigned char hdr[8];

    for (;;) { /* one or more transfers per connection */
        if (read_full(fd, hdr, 8) < 0)
            break;
        uint64_t want = get_be64(hdr), got = 0;
        while (got < want) {
            uint64_t left = want - got;
            size_t ask = left > (1u << 30) ? (1u << 30) : (size_t)left;
            ssize_t r = recv(fd, scratch, ask, MSG_TRUNC);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && (errno == EINVAL || errno == EOPNOTSUPP))
                r = recv(fd, scratch, ask < sizeof scratch ? ask : sizeof scratch, 0);
            if (r <= 0)
                goto out;
            got += (uint64_t)r;
        }
        if (write_full(fd, hdr, 8) < 0)
            break;
    }
out:
    close(fd);
    return NULL;
}

static int
run_sink(int port)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 128) < 0) {
        perror("tcpbulk sink: bind/listen");
        return 1;
    }
    printf("listening %d\n", port);
    fflush(stdout);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("tcpbulk sink: accept");
            return 1;
        }
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 << 10);
        if (pthread_create(&t, &at, sink_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
        pthread_attr_destroy(&at);
    }
}

static volatile uint64_t g_sent;
static uint64_t g_last_sent;
static int g_left_s, g_still_s, g_stall_s;

/* Once a second: give up when the overall time is over (exit 2) or when no
 * byte has gone out for stall seconds (exit 3), so that a proxy which stops
 * forwarding costs the run seconds, not minutes. */
static void
on_alarm(int sig)
{
    (void)sig;
    const char *why = NULL;
    if (--g_left_s <= 0)
        why = "timeout";
    if (g_sent == g_last_sent) {
        if (++g_still_s >= g_stall_s)
            why = "stalled";
    } else {
        g_still_s = 0;
    }
    g_last_sent = g_sent;
    if (why) {
        char msg[96];
        int n = snprintf(msg, sizeof msg, "%s bytes=%llu\n", why, (unsigned long long)g_sent);
        if (write(1, msg, (size_t)n) < 0) {
        }
        _exit(why[0] == 't' ? 2 : 3);
    }
    alarm(1);
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
run_send(const char *host, int port, uint64_t bytes, int timeout, int stall)
{
    struct sigaction sa_alarm = {.sa_handler =
                                     on_alarm}; /* no SA_RESTART: let blocked calls see EINTR */
    sigaction(SIGALRM, &sa_alarm, NULL);
    g_left_s = timeout;
    g_stall_s = stall;
    alarm(1);

    int mfd = memfd_create("tcpbulk", 0);
    unsigned char *fill = malloc(CHUNK);
    if (!fill) {
        perror("malloc");
        return 1;
    }
    for (size_t i = 0; i < CHUNK; i++)
        fill[i] = (unsigned char)(i * 131u + (i >> 12));
    int use_sendfile = mfd >= 0 && write(mfd, fill, CHUNK) == (ssize_t)CHUNK;

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "tcpbulk: bad host %s\n", host);
        return 1;
    }
    double t0 = now_s();
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("tcpbulk send: connect");
        return 1;
    }
    unsigned char hdr[8], ack[8];
    put_be64(hdr, bytes);
    if (write_full(fd, hdr, 8) < 0) {
        perror("tcpbulk send: write");
        return 1;
    }
    while (g_sent < bytes) {
        uint64_t left = bytes - g_sent;
        size_t n = left > STEP ? STEP : (size_t)left;
        ssize_t w;
        if (use_sendfile) {
            off_t off = (off_t)(g_sent % (CHUNK - STEP));
            w = sendfile(fd, mfd, &off, n);
        } else {
            w = send(fd, fill, n, MSG_NOSIGNAL);
        }
        if (w < 0) {
            if (errno == EINTR)
                continue;
            perror("tcpbulk send: send");
            return 1;
        }
        g_sent += (uint64_t)w;
    }
    if (read_full(fd, ack, 8) < 0 || memcmp(ack, hdr, 8) != 0) {
        fprintf(stderr, "tcpbulk send: no acknowledgement from sink\n");
        return 1;
    }
    double dt = now_s() - t0;
    printf("bytes=%llu seconds=%.6f\n", (unsigned long long)bytes, dt);
    close(fd);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "sink") == 0)
        return run_sink(atoi(argv[2]));
    if (argc >= 5 && argc <= 7 && strcmp(argv[1], "send") == 0)
        return run_send(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10),
                        argc >= 6 ? atoi(argv[5]) : 60, argc >= 7 ? atoi(argv[6]) : 3);
    fprintf(stderr,
            "usage: tcpbulk sink PORT | tcpbulk send HOST PORT BYTES [TIMEOUT_S [STALL_S]]\n");
    return 64;
}
