/*
 * Listening sockets. Every worker gets its own socket per listener, bound with
 * SO_REUSEPORT, so the kernel spreads new connections across workers and no
 * accept lock or thundering herd exists. All sockets are opened on the
 * control thread before the workers start, so a port already in use is one
 * clear error at start-up instead of a worker dying later.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb/core.h"
#include "lb/log.h"

bool
lb_addr_equal(const struct conf_addr *a, const struct conf_addr *b)
{
    return a->salen == b->salen && memcmp(&a->sa, &b->sa, a->salen) == 0;
}

void
lb_listener_tune(int fd, const struct conf_listener *l)
{
    /* Seconds, which the kernel turns into SYN-ACK retransmissions: a silent
     * client is accepted after the first one, about 1 s. */
    int secs = l->defer_accept ? 1 : 0;
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs));
}

int
lb_listener_open_one(const struct conf_listener *l)
{
    int one = 1;
    int fd = socket(l->bind.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (l->bind.sa.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->bind.sa, l->bind.salen) < 0)
        goto fail;
    if (listen(fd, 4096) < 0)
        goto fail;
    lb_listener_tune(fd, l);
    return fd;
fail : {
    int e = errno;
    close(fd);
    return -e;
}
}

int
lb_listeners_open(const struct conf *c, int nworkers, int ***fds_out)
{
    int **fds = calloc((size_t)nworkers, sizeof(*fds));
    if (!fds)
        return -1;
    for (int w = 0; w < nworkers; w++) {
        fds[w] = malloc((c->nlisteners ? c->nlisteners : 1) * sizeof(int));
        if (!fds[w])
            goto fail;
        for (size_t i = 0; i < c->nlisteners; i++)
            fds[w][i] = -1;
    }
    for (int w = 0; w < nworkers; w++) {
        for (size_t i = 0; i < c->nlisteners; i++) {
            int fd = lb_listener_open_one(&c->listeners[i]);
            if (fd < 0) {
                lb_err("listener %s: cannot listen on %s: %s", c->listeners[i].name,
                       c->listeners[i].bind.text, strerror(-fd));
                goto fail;
            }
            fds[w][i] = fd;
        }
    }
    *fds_out = fds;
    return 0;
fail:
    lb_listeners_close(fds, nworkers, c->nlisteners);
    return -1;
}

void
lb_listeners_close(int **fds, int nworkers, size_t nlisteners)
{
    if (!fds)
        return;
    for (int w = 0; w < nworkers; w++) {
        if (!fds[w])
            continue;
        for (size_t i = 0; i < nlisteners; i++)
            if (fds[w][i] >= 0)
                close(fds[w][i]);
        free(fds[w]);
    }
    free(fds);
}
