/*
 * The schema engine: configuration declared as data.
 *
 * A module describes its configuration section once, as a table of struct
 * conf_field rows (key, kind, where the value goes, default, bounds, one doc
 * line), in the manner of nginx's ngx_command_t and Redis's standardConfig.
 * conf_schema_apply() walks a YAML node against that table and fills a C
 * struct; conf_schema_write_reference() turns the same table into the
 * markdown reference. Nothing else knows the keys, so the parser, the error
 * messages and the documentation cannot drift apart.
 *
 * Adding a key: add a row to the table of the struct it belongs to, with the
 * CONF_AT() of its target, a default written as YAML text (it is parsed by the
 * same code as user input) and a one-line doc; regenerate conf/REFERENCE.md
 * (TERN_UPDATE_REFERENCE=1 tests/test_conf). Checks that involve several keys
 * of one struct go in the table's check hook; checks across sections go in
 * conf/config.c's cross-reference pass.
 *
 * Plugins declare their own tables the same way and apply them to their
 * section's node.
 */
#ifndef CONF_SCHEMA_H
#define CONF_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "conf/node.h"

struct conf_arena;
struct conf_diag;
struct conf_ctx;
struct conf_field;

enum conf_kind {
    CONF_STRING = 1, /* char * */
    CONF_INT,        /* int, int32_t or int64_t (by .size), bounded by .min/.max */
    CONF_UINT,       /* uint32_t or uint64_t, bounded by .min/.max */
    CONF_BOOL,       /* bool: true/false, yes/no, on/off */
    CONF_DOUBLE,     /* double */
    CONF_DURATION,   /* uint64_t milliseconds: "500ms", "2s", "1.5m", "1h", "0" */
    CONF_SIZE,       /* uint32_t or uint64_t bytes: "8192", "32k", "1m" */
    CONF_ENUM,       /* int: the index of the value in .names */
    CONF_CHOICE,     /* char *: one of .names, stored as text */
    CONF_ADDR,       /* struct conf_addr: host:port */
    CONF_IP,         /* struct conf_addr: an IP address without port */
    CONF_CIDR,       /* struct conf_cidr */
    CONF_LIST,       /* array of .elem (STRING, ADDR, IP or CIDR) and a size_t count */
    CONF_STRUCT,     /* a nested mapping, filled by .sub at .offset */
    CONF_SEQ,        /* a list of mappings: array of .sub->size elements and a count */
    CONF_MAP,        /* name -> mapping: like SEQ, the name stored at .sub->name_offset */
    CONF_CUSTOM,     /* .parse does it all (e.g. "auto" or a number) */
};

enum conf_field_flags {
    CONF_F_REQUIRED = 1 << 0, /* an error when absent */
    CONF_F_RESTART = 1 << 1,  /* a change needs a restart, not a reload */
    CONF_F_LAZY = 1 << 2,     /* STRUCT: defaults applied only if the section is given */
    CONF_F_NOSTORE = 1 << 3,  /* checked and documented; handled elsewhere (include) */
    CONF_F_PATH = 1 << 4,     /* STRING naming a file: relative to the file it is written in */
};

/* A CUSTOM field's parser. value is never NULL or null. Reports its own
 * errors with conf_error() and returns 0 or -1. obj is the struct the field
 * belongs to (the base its .offset is relative to). */
typedef int (*conf_parse_cb)(struct conf_ctx *ctx, const struct conf_field *f,
                             const struct conf_node *value, void *obj);

/* A struct's check hook: cross-field rules within one struct, run after its
 * fields are filled, only when the struct was written in the file. map is
 * its node: a mapping, or a YAML null for a list item or a named entry
 * written empty ("api: ~"), which still has a position for errors. Use
 * conf_node_get() to look keys up; it copes with both. */
typedef void (*conf_check_cb)(struct conf_ctx *ctx, const struct conf_node *map, void *obj);

struct conf_schema;

struct conf_field {
    const char *key;
    enum conf_kind kind;
    unsigned flags;
    size_t offset;                 /* of the target in the parent struct */
    size_t size;                   /* of the target, for integers */
    size_t count;                  /* LIST/SEQ/MAP: offset of the size_t element count */
    size_t present;                /* offset + 1 of a bool set when the key is given; 0: none */
    enum conf_kind elem;           /* LIST: element kind */
    int64_t min, max;              /* numbers: bounds (both 0: only the C type's);
                                      LIST/SEQ/MAP: item count bounds (max 0: none) */
    const char *const *names;      /* ENUM/CHOICE: NULL-terminated */
    const struct conf_schema *sub; /* STRUCT/SEQ/MAP */
    conf_parse_cb parse;           /* CUSTOM */
    const char *def;               /* default, as YAML text; NULL: zero */
    const char *type_doc;          /* reference: type column (required for CUSTOM) */
    const char *def_doc;           /* reference: default column when .def does not say it */
    const char *doc;               /* reference: one line of meaning */
};

struct conf_schema {
    const char *name;                /* reference: what one element is ("listener") */
    size_t size;                     /* of one element, for SEQ and MAP */
    const struct conf_field *fields; /* ends with a row whose key is NULL */
    size_t name_offset;              /* MAP elements: offset + 1 of char *name */
    size_t line_offset, col_offset;  /* offset + 1 of int line/col to record; 0: none */
    conf_check_cb check;
    const char *doc; /* reference: paragraph under the section title */
};

/* Helpers for table rows. CONF_AT(T, m) gives .offset and .size of T.m. */
#define CONF_MEMBER_SIZE(T, m) sizeof(((T *)0)->m)
#define CONF_AT(T, m) .offset = offsetof(T, m), .size = CONF_MEMBER_SIZE(T, m)
#define CONF_COUNT(T, m) .count = offsetof(T, m)
#define CONF_PRESENT(T, m) .present = offsetof(T, m) + 1
#define CONF_OFF1(T, m) (offsetof(T, m) + 1)

/*
 * The walk's state: where values are stored, where errors go, and the key
 * path of the node being looked at ("pools.web.servers[1].weight").
 */
struct conf_ctx {
    struct conf_arena *arena; /* the generation's arena: typed values */
    struct conf_arena *tmp;   /* the loader's arena */
    struct conf_diag *diag;
    char path[384];
    size_t pathlen;
};

void conf_ctx_init(struct conf_ctx *ctx, struct conf_arena *arena, struct conf_arena *tmp,
                   struct conf_diag *diag);

/* Appends ".key" (or "key" at the root) / "[i]" to the path; returns the old
 * length for conf_ctx_pop(). */
size_t conf_ctx_push_key(struct conf_ctx *ctx, const char *key);
size_t conf_ctx_push_index(struct conf_ctx *ctx, size_t i);
void conf_ctx_pop(struct conf_ctx *ctx, size_t len);

/* Reports an error at node at (or at no position when NULL), with the
 * current path plus ".key" when key is not NULL. */
void conf_error(struct conf_ctx *ctx, const struct conf_node *at, const char *key, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

/* Reports an error about map's key: at its value when present, else at map. */
void conf_key_error(struct conf_ctx *ctx, const struct conf_node *map, const char *key,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A copy of s in the generation's arena (NULL stays NULL). */
char *conf_strdup(struct conf_ctx *ctx, const char *s);

/*
 * Fills obj from map according to schema: applies defaults, parses and
 * bounds-checks values, reports unknown keys (with "did you mean") and
 * missing required ones, then runs the schema's check hook. map may be NULL
 * (everything takes its default). Errors are reported, never returned.
 */
void conf_schema_apply(struct conf_ctx *ctx, const struct conf_schema *schema,
                       const struct conf_node *map, void *obj);

/* Of the names in cands (NULL-terminated), the one a user most likely meant
 * by word, or NULL when none is close (edit distance, or a prefix). */
const char *conf_did_you_mean(const char *word, const char *const *cands);

/* Writes the markdown reference for a schema: one "##" section per top-level
 * key, each a table of key path, type, default, reload and meaning
 * (conf/reference.c). */
void conf_schema_write_reference(FILE *out, const struct conf_schema *root);

/* Checks a schema's tables (recursively) for mistakes a compiler cannot
 * see: defaults that do not parse, keys declared twice, missing doc lines,
 * CUSTOM rows without a parser, ENUM rows without names. root->size must be
 * set. Writes each problem to err (may be NULL) and returns their number.
 * Unit tests call it on every schema. */
int conf_schema_selftest(const struct conf_schema *root, FILE *err);

/* For conf/ itself: formats a bound of a number kind ("30s", "32k", "5"). */
void conf__fmt_bound(char *buf, size_t size, enum conf_kind kind, int64_t v);

#endif
