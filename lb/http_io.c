/*
 * Socket and TLS I/O of HTTP sessions (lb/http_proxy.c): reads into and
 * writes from the session's pooled buffers, with one return convention for
 * plain and TLS connections (see http_read_into()).
 *
 * Plain sockets use recv(2)/send(2)/sendmsg(2) rather than read(2)/writev(2):
 * the socket calls skip the VFS layer, 1.3% of the proxy's CPU per request
 * at keep-alive (bench/README.md).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lb/http_proxy_int.h"
#include "lb/tls.h"

/* TLS hands out one record per call: read until the buffer is full or
 * nothing is left inside the connection. What stays inside keeps *ready set.
 * An EOF or error after some bytes is seen again by the next call. */
static ssize_t
tls_read_into(struct lb_worker *w, struct ssl_st *ssl, struct lb_buf *b, size_t room, bool *ready,
              uint8_t *want)
{
    ssize_t total = 0;
    while (room) {
        int wt = EV_READ;
        ssize_t n = lb_tls_read(ssl, b->data + b->tail, room, &wt);
        if (n > 0) {
            b->tail += (uint32_t)n;
            room -= (size_t)n;
            total += n;
            /* Nothing left inside TLS: another call would be a read(2)
             * that most likely blocks; *ready stays set, as after a short
             * plain read. */
            if (!lb_tls_pending(ssl))
                return total;
            continue;
        }
        if (n == -1) {
            *ready = false;
            *want = (uint8_t)wt;
            if (!total)
                lb_buf_release(&w->bufs, b, false);
            return total ? total : -1;
        }
        return total ? total : n;
    }
    return total;
}

ssize_t
http_read_into(struct lb_worker *w, int fd, struct ssl_st *ssl, struct lb_buf *b, bool *ready,
               uint8_t *want)
{
    if (lb_buf_alloc(&w->bufs, b) < 0)
        return -2;
    if (LB_BUF_SIZE - b->tail < 4096)
        lb_buf_compact(b);
    size_t room = LB_BUF_SIZE - b->tail;
    if (!room)
        return -1;
    if (ssl)
        return tls_read_into(w, ssl, b, room, ready, want);
    for (;;) {
        ssize_t n = recv(fd, b->data + b->tail, room, 0);
        if (n > 0) {
            b->tail += (uint32_t)n;
            return n;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *ready = false;
            lb_buf_release(&w->bufs, b, false);
            return -1;
        }
        return -2;
    }
}

/* No writev in TLS: the head, then the body, each in as many records as the
 * socket takes. A body that fits behind its head is moved there first, so a
 * small response is one record and one write(2). That keeps OpenSSL's retry
 * rule after "would block": the next call starts with the same bytes (maybe
 * moved, maybe more of them), since the head is only ever appended to while
 * it is pending and a body is written only once its head is out. */
static ssize_t
tls_write_out(struct ssl_st *ssl, struct lb_buf *hb, struct lb_buf *bb, uint64_t *fwd, bool *ready,
              uint8_t *want)
{
    ssize_t total = 0, k = 0;
    int wt = EV_WRITE;

    if (*fwd && hb->data && hb->tail > hb->head && *fwd <= LB_BUF_SIZE - hb->tail) {
        memcpy(hb->data + hb->tail, bb->data + bb->head, *fwd);
        hb->tail += (uint32_t)*fwd;
        lb_buf_consume(bb, (uint32_t)*fwd);
        *fwd = 0;
    }
    while (hb->data && hb->tail > hb->head) {
        k = lb_tls_write(ssl, hb->data + hb->head, hb->tail - hb->head, &wt);
        if (k < 0)
            goto stop;
        hb->head += (uint32_t)k;
        total += k;
    }
    while (*fwd) {
        k = lb_tls_write(ssl, bb->data + bb->head, *fwd, &wt);
        if (k < 0)
            goto stop;
        lb_buf_consume(bb, (uint32_t)k);
        *fwd -= (uint64_t)k;
        total += k;
    }
    return total;
stop:
    if (k == -2)
        return -2;
    *ready = false;
    *want = (uint8_t)wt;
    return total ? total : -1;
}

ssize_t
http_write_out(int fd, struct ssl_st *ssl, struct lb_buf *hb, struct lb_buf *bb, uint64_t *fwd,
               bool *ready, uint8_t *want, bool more)
{
    if (ssl)
        return tls_write_out(ssl, hb, bb, fwd, ready, want);
    struct iovec iov[2];
    int n = 0;
    if (hb->data && hb->tail > hb->head) {
        iov[n].iov_base = hb->data + hb->head;
        iov[n].iov_len = hb->tail - hb->head;
        n++;
    }
    if (*fwd) {
        iov[n].iov_base = bb->data + bb->head;
        iov[n].iov_len = *fwd;
        n++;
    }
    if (!n)
        return 0;
    for (;;) {
        ssize_t k =
            n == 1 ? send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | (more ? MSG_MORE : 0))
                   : sendmsg(fd, &(struct msghdr){.msg_iov = iov, .msg_iovlen = (size_t)n},
                             MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        if (k >= 0) {
            size_t left = (size_t)k;
            uint32_t h = hb->data ? hb->tail - hb->head : 0;
            uint32_t take = left < h ? (uint32_t)left : h;
            hb->head += take;
            left -= take;
            if (left) {
                lb_buf_consume(bb, (uint32_t)left);
                *fwd -= left;
            }
            return k;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *ready = false;
            return -1;
        }
        return -2;
    }
}

void
http_half_close(int fd, struct ssl_st *ssl)
{
    if (ssl)
        lb_tls_shutdown(ssl);
    shutdown(fd, SHUT_WR);
}
