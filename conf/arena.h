/*
 * A bump allocator for everything one configuration generation owns.
 *
 * conf_load() builds a struct conf out of many small strings and arrays that
 * all live and die together, so they come from one arena that conf_free()
 * releases whole (nginx's cycle pool). The loader also keeps a second,
 * short-lived arena for the YAML node tree and the error list, so the
 * snapshot the daemon keeps holds only typed values.
 *
 * Every allocation is zeroed. Allocation failure returns NULL; the arena stays
 * usable and conf_arena_free() still releases everything.
 */
#ifndef CONF_ARENA_H
#define CONF_ARENA_H

#include <stdarg.h>
#include <stddef.h>

struct conf_arena;

struct conf_arena *conf_arena_new(void);
void conf_arena_free(struct conf_arena *a);

/* Zeroed memory aligned for any type, or NULL. */
void *conf_arena_alloc(struct conf_arena *a, size_t size);
/* n * size bytes, zeroed; NULL on overflow or failure. */
void *conf_arena_calloc(struct conf_arena *a, size_t n, size_t size);
char *conf_arena_strdup(struct conf_arena *a, const char *s);
char *conf_arena_strndup(struct conf_arena *a, const char *s, size_t n);
char *conf_arena_printf(struct conf_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *conf_arena_vprintf(struct conf_arena *a, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Bytes handed out so far (for tests and the admin API's memory figures). */
size_t conf_arena_used(const struct conf_arena *a);

#endif
