/*
 * Error collection for the loader (see diag.h).
 *
 * Errors are kept in a singly linked list in the temporary arena and sorted
 * only when printed. When memory runs out the list still counts the error, so
 * conf_load() never reports success for a file it could not check.
 */
#include "conf/diag.h"

#include <stdlib.h>
#include <string.h>

#include "conf/arena.h"

#define DIAG_MAX_FILES 256

struct diag_error {
    struct diag_error *next;
    const char *file;
    int line, col;
    size_t seq; /* insertion order, to keep the sort stable */
    const char *path;
    const char *msg;
};

struct conf_diag {
    struct conf_arena *arena;
    struct diag_error *head;
    size_t count;
    size_t lost; /* errors that could not be stored */
    const char *files[DIAG_MAX_FILES];
    size_t nfiles;
};

struct conf_diag *
conf_diag_new(struct conf_arena *tmp)
{
    struct conf_diag *d = conf_arena_alloc(tmp, sizeof(*d));

    if (d != NULL)
        d->arena = tmp;
    return d;
}

const char *
conf_diag_file(struct conf_diag *d, const char *name)
{
    const char *copy = conf_arena_strdup(d->arena, name);

    if (copy != NULL && d->nfiles < DIAG_MAX_FILES)
        d->files[d->nfiles++] = copy;
    return copy;
}

void
conf_diag_vadd(struct conf_diag *d, const char *file, int line, int col, const char *path,
               const char *fmt, va_list ap)
{
    struct diag_error *e = conf_arena_alloc(d->arena, sizeof(*e));

    if (e == NULL) {
        d->lost++;
        return;
    }
    e->file = file != NULL ? file : "?";
    e->line = line;
    e->col = col;
    e->seq = d->count + d->lost;
    e->path = path != NULL && path[0] != '\0' ? conf_arena_strdup(d->arena, path) : NULL;
    e->msg = conf_arena_vprintf(d->arena, fmt, ap);
    if (e->msg == NULL)
        e->msg = "(out of memory formatting this error)";
    e->next = d->head;
    d->head = e;
    d->count++;
}

void
conf_diag_add(struct conf_diag *d, const char *file, int line, int col, const char *path,
              const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    conf_diag_vadd(d, file, line, col, path, fmt, ap);
    va_end(ap);
}

size_t
conf_diag_count(const struct conf_diag *d)
{
    return d->count + d->lost;
}

static size_t
file_rank(const struct conf_diag *d, const char *file)
{
    for (size_t i = 0; i < d->nfiles; i++) {
        if (d->files[i] == file || strcmp(d->files[i], file) == 0)
            return i;
    }
    return d->nfiles;
}

struct ranked {
    const struct diag_error *e;
    size_t rank;
};

static int
cmp_ranked(const void *pa, const void *pb)
{
    const struct ranked *a = pa, *b = pb;

    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    if (a->e->file != b->e->file) {
        int c = strcmp(a->e->file, b->e->file);
        if (c != 0)
            return c;
    }
    if (a->e->line != b->e->line)
        return a->e->line < b->e->line ? -1 : 1;
    if (a->e->col != b->e->col)
        return a->e->col < b->e->col ? -1 : 1;
    return a->e->seq < b->e->seq ? -1 : a->e->seq > b->e->seq;
}

/* Values, keys and file names in a message come from the file: a newline in
 * one (a quoted "a\nb") would split the error in two and make the rest of
 * the line look like an error of its own, so control characters are written
 * as C escapes. */
static void
put_escaped(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '\n')
            fputs("\\n", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
}

static void
print_one(FILE *out, const struct diag_error *e)
{
    put_escaped(out, e->file);
    if (e->line > 0)
        fprintf(out, ":%d:%d", e->line, e->col);
    fputs(": ", out);
    if (e->path != NULL) {
        put_escaped(out, e->path);
        fputs(": ", out);
    }
    put_escaped(out, e->msg);
    fputc('\n', out);
}

void
conf_diag_print(struct conf_diag *d, FILE *out)
{
    struct ranked *v = NULL;
    const struct diag_error *e;
    size_t i = 0;

    if (out == NULL || d->count == 0)
        goto out;
    v = calloc(d->count, sizeof(*v));
    if (v == NULL) {
        /* Unsorted is better than nothing. */
        for (e = d->head; e != NULL; e = e->next)
            print_one(out, e);
        goto out;
    }
    for (e = d->head; e != NULL; e = e->next) {
        v[i].e = e;
        v[i].rank = file_rank(d, e->file);
        i++;
    }
    qsort(v, i, sizeof(*v), cmp_ranked);
    for (size_t j = 0; j < i; j++)
        print_one(out, v[j].e);
out:
    if (out != NULL && d->lost > 0)
        fprintf(out, "(%zu more errors lost: out of memory)\n", d->lost);
    free(v);
}
