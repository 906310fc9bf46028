/*
 * The configuration arena: a list of chunks carved front to back.
 *
 * Configurations are small and written once, so nothing is ever freed on its
 * own; a generation's memory goes back to malloc in one conf_arena_free().
 * Requests larger than a quarter chunk get a chunk of their own so that a big
 * server array does not waste the tail of the current chunk.
 */
#include "conf/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK (16 * 1024)
#define ARENA_ALIGN (alignof(max_align_t))

struct arena_chunk {
    struct arena_chunk *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    alignas(max_align_t) unsigned char data[];
};

struct conf_arena {
    struct arena_chunk *head; /* the chunk being carved */
    struct arena_chunk *big;  /* dedicated chunks for large requests */
    size_t used;
};

struct conf_arena *
conf_arena_new(void)
{
    return calloc(1, sizeof(struct conf_arena));
}

static void
free_chunks(struct arena_chunk *c)
{
    while (c != NULL) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

void
conf_arena_free(struct conf_arena *a)
{
    if (a == NULL)
        return;
    free_chunks(a->head);
    free_chunks(a->big);
    free(a);
}

static struct arena_chunk *
chunk_new(size_t size)
{
    struct arena_chunk *c;

    if (size > SIZE_MAX - sizeof(*c))
        return NULL;
    c = malloc(sizeof(*c) + size);
    if (c == NULL)
        return NULL;
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

void *
conf_arena_alloc(struct conf_arena *a, size_t size)
{
    struct arena_chunk *c;
    void *p = NULL;

    if (size == 0)
        size = 1;
    if (size > SIZE_MAX - ARENA_ALIGN)
        goto out;
    size = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);

    if (size > ARENA_CHUNK / 4) {
        c = chunk_new(size);
        if (c == NULL)
            goto out;
        c->next = a->big;
        a->big = c;
        c->used = size;
        p = c->data;
    } else {
        c = a->head;
        if (c == NULL || c->size - c->used < size) {
            c = chunk_new(ARENA_CHUNK);
            if (c == NULL)
                goto out;
            c->next = a->head;
            a->head = c;
        }
        p = c->data + c->used;
        c->used += size;
    }
    memset(p, 0, size);
    a->used += size;
out:
    return p;
}

void *
conf_arena_calloc(struct conf_arena *a, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    return conf_arena_alloc(a, n * size);
}

char *
conf_arena_strndup(struct conf_arena *a, const char *s, size_t n)
{
    char *p;

    if (n == SIZE_MAX)
        return NULL;
    p = conf_arena_alloc(a, n + 1);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

char *
conf_arena_strdup(struct conf_arena *a, const char *s)
{
    return s == NULL ? NULL : conf_arena_strndup(a, s, strlen(s));
}

char *
conf_arena_vprintf(struct conf_arena *a, const char *fmt, va_list ap)
{
    va_list ap2;
    char *p = NULL;
    int n;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        goto out;
    p = conf_arena_alloc(a, (size_t)n + 1);
    if (p != NULL)
        vsnprintf(p, (size_t)n + 1, fmt, ap);
out:
    return p;
}

char *
conf_arena_printf(struct conf_arena *a, const char *fmt, ...)
{
    va_list ap;
    char *p;

    va_start(ap, fmt);
    p = conf_arena_vprintf(a, fmt, ap);
    va_end(ap);
    return p;
}

size_t
conf_arena_used(const struct conf_arena *a)
{
    return a->used;
}
