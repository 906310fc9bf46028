/*
 * The daemon's log. Workers log while the control thread reopens the file:
 * once a file is open its descriptor number stays, and a reopen puts the new
 * file under that number (dup3), so a thread that read the number just before
 * never writes to a closed descriptor or to one reused for a socket. A line
 * written before the switch lands in the old file, which is what logrotate's
 * move-then-signal dance expects.
 */
#include "lb/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_fd = 2;
static atomic_int log_level = LB_LOG_INFO;
static char *log_path;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int
lb_log_open(const char *path)
{
    int fd = 2;

    if (path && strcmp(path, "stderr") != 0 && strcmp(path, "-") != 0) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0)
            return -errno;
    }
    int old = atomic_load(&log_fd);
    if (old > 2) {
        /* Another thread may hold the old number between its load and its
         * write(2): closing it would hand the number to the next socket
         * opened, and log lines to that peer. The file changes under the
         * number instead, atomically. */
        int r = dup3(fd, old, O_CLOEXEC);
        int e = errno;
        if (fd > 2)
            close(fd);
        if (r < 0)
            return -e;
    } else {
        atomic_store(&log_fd, fd);
    }
    free(log_path);
    log_path = (fd > 2) ? strdup(path) : NULL;
    return 0;
}

int
lb_log_reopen(void)
{
    if (!log_path)
        return 0;
    char *p = strdup(log_path);
    if (!p)
        return -ENOMEM;
    int r = lb_log_open(p);
    free(p);
    return r;
}

void
lb_log_set_level(enum lb_log_level level)
{
    atomic_store(&log_level, level);
}

void
lb_log(enum lb_log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;

    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ [%s] ", ts.tv_nsec / 1000000,
                          level_names[level]);

    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (k < 0)
        k = 0;
    n += (size_t)k;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';

    int fd = atomic_load_explicit(&log_fd, memory_order_relaxed);
    /* A log line that cannot be written has nowhere else to go. */
    ssize_t w = write(fd, line, n);
    (void)w;
}
