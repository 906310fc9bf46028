/*
 * Buffered per-worker access log (see accesslog.h). The line format follows
 * nginx's "combined" spirit with HAProxy's timers:
 *   TIME CLIENT LISTENER POOL/SERVER "METHOD PATH HTTP/1.x" STATUS IN OUT Tc/Tr/Tt TERM
 *   TLSVERSION CIPHER
 * (the last two "-" on a plain-text connection).
 * Timers are in milliseconds with microsecond precision; -1 means the phase
 * was never reached.
 */
#include "lb/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lb/core.h"

#define ALOG_BUF 65536
#define ALOG_FLUSH_AT (ALOG_BUF - 4096)

struct lb_accesslog {
    size_t len;
    char buf[ALOG_BUF];
};

/* alog_fd is what workers write to, -1 when the log is off. Once a file has
 * been open its descriptor number (alog_num) stays for the life of the
 * process: a worker may hold the number between its load and its write(2),
 * and closing it would hand the number to the next socket accepted, and the
 * log lines to that client. A reopen puts the new file under the number
 * (dup3, atomically); switching the log off puts /dev/null there. */
static atomic_int alog_fd = -1;
static int alog_num = -1;
static char *alog_path;

int
lb_accesslog_open(const char *dest)
{
    int fd = -1;

    if (dest) {
        if (strcmp(dest, "stdout") == 0 || strcmp(dest, "-") == 0) {
            fd = dup(1);
        } else {
            fd = open(dest, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        }
        if (fd < 0)
            return -errno;
    } else if (alog_num >= 0) {
        /* Without /dev/null the old file stays under the number, unused. */
        fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    }
    if (fd >= 0 && alog_num >= 0) {
        int r = dup3(fd, alog_num, O_CLOEXEC);
        int e = errno;
        close(fd);
        if (r < 0 && dest)
            return -e;
    } else if (fd >= 0) {
        alog_num = fd;
    }
    atomic_store(&alog_fd, dest ? alog_num : -1);
    free(alog_path);
    alog_path = (dest && strcmp(dest, "stdout") && strcmp(dest, "-")) ? strdup(dest) : NULL;
    return 0;
}

int
lb_accesslog_reopen(void)
{
    if (!alog_path)
        return 0;
    char *p = strdup(alog_path);
    if (!p)
        return -ENOMEM;
    int r = lb_accesslog_open(p);
    free(p);
    return r;
}

void
lb_accesslog_close(void)
{
    atomic_store(&alog_fd, -1);
    if (alog_num >= 0)
        close(alog_num);
    alog_num = -1;
    free(alog_path);
    alog_path = NULL;
}

int
lb_accesslog_enabled(void)
{
    return atomic_load_explicit(&alog_fd, memory_order_relaxed) >= 0;
}

static void
put_ms(char **p, char *end, uint64_t us)
{
    if (us == UINT64_MAX)
        *p += snprintf(*p, (size_t)(end - *p), "-1");
    else
        *p += snprintf(*p, (size_t)(end - *p), "%llu.%03llu", (unsigned long long)(us / 1000),
                       (unsigned long long)(us % 1000));
    if (*p > end)
        *p = end;
}

/* Copies a client-supplied string, replacing anything that could forge a log
 * line or break its quoting. */
static void
put_safe(char **p, char *end, const char *s, size_t n)
{
    if (n > 1024)
        n = 1024;
    for (size_t i = 0; i < n && *p < end; i++) {
        unsigned char c = (unsigned char)s[i];
        *(*p)++ = (c < 0x21 || c == '"' || c == '\\' || c >= 0x7f) ? '?' : (char)c;
    }
}

void
lb_accesslog_write(struct lb_worker *w, const struct lb_access *a)
{
    if (!lb_accesslog_enabled())
        return;
    if (!w->alog) {
        w->alog = malloc(sizeof(*w->alog));
        if (!w->alog)
            return;
        w->alog->len = 0;
    }
    struct lb_accesslog *al = w->alog;
    char *p = al->buf + al->len, *end = al->buf + ALOG_BUF - 1;

    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    p += strftime(p, (size_t)(end - p), "%Y-%m-%dT%H:%M:%S", &tm);
    p += snprintf(p, (size_t)(end - p), ".%03ldZ %s %s %s/%s ", ts.tv_nsec / 1000000, a->client,
                  a->listener, a->pool ? a->pool : "-", a->server ? a->server : "-");
    if (a->minor_version >= 0) {
        *p++ = '"';
        put_safe(&p, end, a->method, a->method_len);
        *p++ = ' ';
        put_safe(&p, end, a->path, a->path_len);
        p += snprintf(p, (size_t)(end - p), " HTTP/1.%d\" ", a->minor_version);
    } else {
        p += snprintf(p, (size_t)(end - p), "TCP ");
    }
    p += snprintf(p, (size_t)(end - p), "%d %llu %llu ", a->status, (unsigned long long)a->bytes_in,
                  (unsigned long long)a->bytes_out);
    put_ms(&p, end, a->t_connect_us);
    *p++ = '/';
    put_ms(&p, end, a->t_response_us);
    *p++ = '/';
    put_ms(&p, end, a->t_total_us);
    p += snprintf(p, (size_t)(end - p), " %s %s %s\n",
                  (a->termination && *a->termination) ? a->termination : "-",
                  a->tls_version ? a->tls_version : "-", a->tls_cipher ? a->tls_cipher : "-");
    if (p > end)
        p = end;
    al->len = (size_t)(p - al->buf);
    if (al->len >= ALOG_FLUSH_AT)
        lb_accesslog_flush(w);
}

void
lb_accesslog_flush(struct lb_worker *w)
{
    struct lb_accesslog *al = w->alog;
    if (!al || !al->len)
        return;
    int fd = atomic_load_explicit(&alog_fd, memory_order_relaxed);
    size_t off = 0;
    while (fd >= 0 && off < al->len) {
        ssize_t n = write(fd, al->buf + off, al->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* a full disk must not stall the data path: drop the lines */
        off += (size_t)n;
    }
    al->len = 0;
}

void
lb_accesslog_worker_free(struct lb_worker *w)
{
    lb_accesslog_flush(w);
    free(w->alog);
    w->alog = NULL;
}
