/*
 * Pooled fixed-size buffers (see buf.h). Fixed size keeps the pool a plain
 * free list and bounds what one connection can make the process hold; the
 * parsers enforce their own limits well below LB_BUF_SIZE.
 */
#include "lb/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void *
lb_pool_get(struct lb_bufpool *p, size_t size)
{
    void *blk = p->free;
    if (blk) {
        p->free = *(void **)blk;
        p->nfree--;
    } else if ((blk = malloc(size)) != NULL) {
        p->allocs++;
    }
    return blk;
}

void
lb_pool_put(struct lb_bufpool *p, void *blk)
{
    if (p->nfree < p->max_free) {
        *(void **)blk = p->free;
        p->free = blk;
        p->nfree++;
    } else {
        free(blk);
    }
}

int
lb_buf_alloc(struct lb_bufpool *p, struct lb_buf *b)
{
    if (b->data)
        return 0;
    b->data = lb_pool_get(p, LB_BUF_SIZE);
    if (!b->data)
        return -ENOMEM;
    b->head = b->tail = 0;
    return 0;
}

void
lb_buf_release(struct lb_bufpool *p, struct lb_buf *b, bool force)
{
    if (!b->data || (!force && b->head != b->tail))
        return;
    lb_pool_put(p, b->data);
    b->data = NULL;
    b->head = b->tail = 0;
}

void
lb_buf_compact(struct lb_buf *b)
{
    if (!b->data || b->head == 0)
        return;
    uint32_t n = b->tail - b->head;
    if (n)
        memmove(b->data, b->data + b->head, n);
    b->head = 0;
    b->tail = n;
}

void
lb_buf_consume(struct lb_buf *b, uint32_t n)
{
    b->head += n;
    if (b->head == b->tail)
        b->head = b->tail = 0;
}

int
lb_buf_append(struct lb_bufpool *p, struct lb_buf *b, const void *d, size_t n)
{
    if (lb_buf_alloc(p, b) < 0)
        return -1;
    if (n > LB_BUF_SIZE - b->tail) {
        lb_buf_compact(b);
        if (n > LB_BUF_SIZE - b->tail)
            return -1;
    }
    memcpy(b->data + b->tail, d, n);
    b->tail += (uint32_t)n;
    return 0;
}

void
lb_bufpool_destroy(struct lb_bufpool *p)
{
    while (p->free) {
        void *next = *(void **)p->free;
        free(p->free);
        p->free = next;
    }
    p->nfree = 0;
}
