/*
 * The list of errors one conf_load() collects.
 *
 * Loading never stops at the first mistake: every stage (YAML, includes,
 * schema, cross-references) adds what it finds here, and the caller prints
 * the whole list at the end, ordered by file (in the order files were read),
 * line and column, each as "FILE:LINE:COL: key.path: message".
 *
 * The list lives in the loader's short-lived arena.
 */
#ifndef CONF_DIAG_H
#define CONF_DIAG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

struct conf_arena;
struct conf_diag;

struct conf_diag *conf_diag_new(struct conf_arena *tmp);

/* Remembers a file name so its errors sort in reading order; returns the
 * copy that nodes and errors point to (NULL when out of memory). */
const char *conf_diag_file(struct conf_diag *d, const char *name);

/* Adds one error. line 0 means the error has no position (a file that cannot
 * be opened); path may be NULL or empty when no key is involved. */
void conf_diag_add(struct conf_diag *d, const char *file, int line, int col, const char *path,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void conf_diag_vadd(struct conf_diag *d, const char *file, int line, int col, const char *path,
                    const char *fmt, va_list ap) __attribute__((format(printf, 6, 0)));

size_t conf_diag_count(const struct conf_diag *d);

/* Writes every error, sorted, one per line. out may be NULL. */
void conf_diag_print(struct conf_diag *d, FILE *out);

#endif
