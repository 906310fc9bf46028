/*
 * I/O buffers. A struct lb_buf whose fields are all zero is a valid empty
 * buffer without storage; storage comes from a per-worker free list when bytes
 * arrive and goes back as soon as the buffer is empty again, so an idle
 * keep-alive connection holds no buffer at all.
 *
 * Buffers are owned by one worker thread; nothing here is thread-safe.
 */
#ifndef LB_BUF_H
#define LB_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LB_BUF_SIZE 16384u

struct lb_buf {
    char *data;    /* NULL: no storage */
    uint32_t head; /* first unconsumed byte */
    uint32_t tail; /* one past the last byte */
};

struct lb_bufpool {
    void *free; /* singly linked through the first word of each block */
    uint32_t nfree;
    uint32_t max_free; /* blocks kept beyond that go back to malloc */
    uint64_t allocs;   /* blocks obtained from malloc, for metrics */
};

static inline uint32_t
lb_buf_len(const struct lb_buf *b)
{
    return b->tail - b->head;
}

static inline uint32_t
lb_buf_room(const struct lb_buf *b)
{
    return b->data ? LB_BUF_SIZE - b->tail : LB_BUF_SIZE;
}

/* Gives b storage if it has none. Returns 0 or -ENOMEM. */
int lb_buf_alloc(struct lb_bufpool *p, struct lb_buf *b);
/* Returns b's storage to the pool if b is empty (or unconditionally when
 * force); b becomes the zero buffer. */
void lb_buf_release(struct lb_bufpool *p, struct lb_buf *b, bool force);
/* Moves unconsumed bytes to the front so that reads have the most room. */
void lb_buf_compact(struct lb_buf *b);
/* Consumes n bytes; an emptied buffer is rewound to offset 0. */
void lb_buf_consume(struct lb_buf *b, uint32_t n);
/* Appends; returns -1 if it does not fit (the buffer is left unchanged). */
int lb_buf_append(struct lb_bufpool *p, struct lb_buf *b, const void *d, size_t n);
void lb_bufpool_destroy(struct lb_bufpool *p);

/* The free list itself, for other fixed-size blocks (one size per pool, at
 * least a pointer): a block from the list or malloc (NULL when memory ran
 * out), and back to the list or to free() beyond max_free. */
void *lb_pool_get(struct lb_bufpool *p, size_t size);
void lb_pool_put(struct lb_bufpool *p, void *blk);

#endif
