/*
 * The YAML node tree: the first of the loader's three phases.
 *
 * libyaml's document loader parses a file; conf_node_parse() turns the
 * document into this small tree of scalars, mappings and sequences in which
 * every node, and every mapping key, keeps the file, line and column it came
 * from (1-based), so that the later phases -- the schema walk and the
 * cross-reference pass -- can point at the exact spot of a mistake. The
 * conversion also expands ${VAR} and ${VAR:-default} in scalar values and
 * rejects what YAML allows but a configuration must not have: duplicate keys,
 * several documents, non-scalar keys.
 *
 * Nodes live in the loader's temporary arena and are read-only once built,
 * except for the include merge (include.c), which splices top-level sections.
 */
#ifndef CONF_NODE_H
#define CONF_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct conf_arena;
struct conf_diag;

enum conf_node_kind { CONF_NODE_SCALAR = 1, CONF_NODE_MAP, CONF_NODE_SEQ };

struct conf_pair;

struct conf_node {
    enum conf_node_kind kind;
    const char *file;
    int line, col;
    bool null; /* plain "", "~" or "null": YAML's null, which counts as absent */
    bool bad;  /* an error about this value was already reported */
    char *str; /* SCALAR: the text after ${VAR} expansion */
    size_t n;  /* MAP: number of pairs; SEQ: number of items */
    struct conf_pair *pairs;
    struct conf_node **items;
};

struct conf_pair {
    struct conf_node *key; /* always a scalar; key->str is the key */
    struct conf_node *value;
};

/*
 * Parses one YAML stream from f (named file in messages; file must outlive
 * the tree) into *root. Returns 0 and sets *root (NULL for an empty file), or
 * -1 after reporting a syntax error. Mistakes inside a well-formed document
 * (duplicate keys, undefined variables) are reported to d but still give a
 * tree, so the caller can go on and find more.
 */
int conf_node_parse(struct conf_arena *tmp, struct conf_diag *d, const char *file, FILE *f,
                    struct conf_node **root);

/* The pair with this key in a mapping, or NULL (also when map is not one). */
const struct conf_pair *conf_node_pair(const struct conf_node *map, const char *key);

/* The value for key in map, or NULL when absent or YAML null. */
const struct conf_node *conf_node_get(const struct conf_node *map, const char *key);

/* "a mapping", "a list", "a scalar" or "null", for "expected X, found Y". */
const char *conf_node_kind_name(const struct conf_node *n);

#endif
