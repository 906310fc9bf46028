/*
 * sd_notify(3) by hand. The protocol is a single datagram on an AF_UNIX
 * socket whose path is $NOTIFY_SOCKET ('@' first: Linux's abstract
 * namespace), so a few lines replace a dependency on libsystemd. A fresh
 * socket per message keeps this stateless and thread-safe; notifications are
 * rare (start, reload, stop).
 */
#include "lb/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int
lb_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    /* systemd only ever sets a path or an abstract name; anything else is
     * not a socket we should write to. */
    if (path[0] != '/' && path[0] != '@')
        return -EAFNOSUPPORT;

    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len > sizeof(sun.sun_path) - (path[0] == '/'))
        return -ENAMETOOLONG;
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract: no terminating NUL counted */
    socklen_t salen =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '/' ? 1 : 0));

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, salen);
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    return 1;
}

int
lb_notifyf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -EMSGSIZE;
    return lb_notify(buf);
}

int
lb_notify_ready(void)
{
    /* MAINPID lets systemd track the right process even if the unit was
     * started through a wrapper. */
    return lb_notifyf("READY=1\nMAINPID=%ld", (long)getpid());
}

int
lb_notify_reloading(void)
{
    /* systemd 253+ wants the monotonic time with RELOADING=1 to tell this
     * reload from a stale one; older versions ignore the extra line. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long usec =
        (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull;
    return lb_notifyf("RELOADING=1\nMONOTONIC_USEC=%llu", usec);
}

int
lb_notify_stopping(void)
{
    return lb_notify("STOPPING=1");
}
