/*
 * From libyaml's document to the conf node tree (see node.h).
 *
 * The document loader (yaml_parser_load) is used rather than raw events
 * because it already resolves anchors and aliases. Aliases make the document
 * a graph, and a self-referencing anchor or a "billion laughs" would make a
 * naive copy loop or explode, so the conversion caps both depth and the
 * number of nodes it produces.
 */
#include "conf/node.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "conf/arena.h"
#include "conf/diag.h"

#define NODE_MAX_DEPTH 64
#define NODE_MAX_ALIASED (1u << 16) /* nodes copied again because of aliases */
#define NODE_MAX_SCALAR (1u << 20)  /* bytes after ${VAR} expansion */

struct builder {
    yaml_document_t *doc;
    struct conf_arena *a;
    struct conf_diag *d;
    const char *file;
    unsigned char *seen; /* per libyaml node: converted once already */
    size_t nseen;
    size_t aliased;
    bool too_big;   /* reported once, then the conversion unwinds */
    char path[384]; /* key path of the node being converted, for messages */
    size_t pathlen;
};

static size_t
path_push(struct builder *b, const char *key, size_t index)
{
    size_t old = b->pathlen, room = sizeof(b->path) - old;
    int n = key != NULL ? snprintf(b->path + old, room, old ? ".%s" : "%s", key)
                        : snprintf(b->path + old, room, "[%zu]", index);

    if (n < 0)
        b->path[old] = '\0';
    else
        b->pathlen = (size_t)n < room ? old + (size_t)n : sizeof(b->path) - 1;
    return old;
}

static void
path_pop(struct builder *b, size_t old)
{
    b->pathlen = old;
    b->path[old] = '\0';
}

static bool
is_null_text(const char *s, size_t len)
{
    return len == 0 || (len == 1 && s[0] == '~') ||
           (len == 4 &&
            (memcmp(s, "null", 4) == 0 || memcmp(s, "Null", 4) == 0 || memcmp(s, "NULL", 4) == 0));
}

/* A growable string with a hard cap, for ${VAR} expansion. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool over;
};

static void
sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->over || n == 0)
        return;
    if (b->len + n + 1 > NODE_MAX_SCALAR) {
        b->over = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL) {
            b->over = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static bool
is_name_char(char c, bool first)
{
    return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (!first && c >= '0' && c <= '9');
}

/*
 * Expands ${NAME} and ${NAME:-default} (default when unset or empty, as in
 * the shell); "$${" stands for a literal "${". Any other '$' is kept, so
 * prices and regular expressions pass through. Returns the expanded copy in
 * the arena, or NULL after reporting an error at the scalar.
 */
static char *
expand_env(struct builder *b, struct conf_node *n, const char *s, size_t len)
{
    struct sbuf out = {0};
    char *res = NULL;
    size_t i = 0;

    if (memchr(s, '$', len) == NULL) {
        res = conf_arena_strndup(b->a, s, len);
        goto out;
    }
    while (i < len) {
        const char *dollar = memchr(s + i, '$', len - i);
        size_t j, name_start, name_len;
        const char *val;
        char name[256];

        if (dollar == NULL) {
            sbuf_add(&out, s + i, len - i);
            break;
        }
        j = (size_t)(dollar - s);
        sbuf_add(&out, s + i, j - i);
        if (j + 2 < len && s[j + 1] == '$' && s[j + 2] == '{') {
            sbuf_add(&out, "${", 2);
            i = j + 3;
            continue;
        }
        if (j + 1 >= len || s[j + 1] != '{') {
            sbuf_add(&out, "$", 1);
            i = j + 1;
            continue;
        }
        name_start = j + 2;
        name_len = 0;
        while (name_start + name_len < len && is_name_char(s[name_start + name_len], name_len == 0))
            name_len++;
        if (name_len == 0 || name_len >= sizeof(name)) {
            conf_diag_add(b->d, n->file, n->line, n->col, b->path,
                          "bad variable reference: '${' must be followed by a name "
                          "(letters, digits, '_'); write '$${' for a literal '${'");
            goto out;
        }
        memcpy(name, s + name_start, name_len);
        name[name_len] = '\0';
        i = name_start + name_len;
        val = getenv(name);
        if (i + 1 < len && s[i] == ':' && s[i + 1] == '-') {
            const char *close = memchr(s + i + 2, '}', len - i - 2);

            if (close == NULL) {
                conf_diag_add(b->d, n->file, n->line, n->col, b->path,
                              "unterminated '${%s:-': missing '}'", name);
                goto out;
            }
            if (val == NULL || val[0] == '\0')
                sbuf_add(&out, s + i + 2, (size_t)(close - (s + i + 2)));
            else
                sbuf_add(&out, val, strlen(val));
            i = (size_t)(close - s) + 1;
            continue;
        }
        if (i >= len || s[i] != '}') {
            conf_diag_add(b->d, n->file, n->line, n->col, b->path,
                          "bad variable reference '${%s': expected '}' or ':-default}'", name);
            goto out;
        }
        i++;
        if (val == NULL) {
            conf_diag_add(b->d, n->file, n->line, n->col, b->path,
                          "environment variable '%s' is not set "
                          "(use ${%s:-default} to give a default)",
                          name, name);
            goto out;
        }
        sbuf_add(&out, val, strlen(val));
    }
    if (out.over) {
        conf_diag_add(b->d, n->file, n->line, n->col, b->path,
                      "value too long after expanding variables");
        goto out;
    }
    res = conf_arena_strndup(b->a, out.p != NULL ? out.p : "", out.len);
out:
    free(out.p);
    return res;
}

static struct conf_node *
new_node(struct builder *b, yaml_node_t *yn, enum conf_node_kind kind)
{
    size_t idx = (size_t)(yn - b->doc->nodes.start);
    struct conf_node *n;

    /* Aliases are copied, so a "billion laughs" would expand without end;
     * ordinary documents, however large, copy nothing twice. */
    if (idx < b->nseen && b->seen[idx] != 0 && ++b->aliased > NODE_MAX_ALIASED) {
        if (!b->too_big)
            conf_diag_add(b->d, b->file, (int)yn->start_mark.line + 1,
                          (int)yn->start_mark.column + 1, b->path,
                          "aliases expand to more than %u nodes", NODE_MAX_ALIASED);
        b->too_big = true;
        return NULL;
    }
    if (idx < b->nseen)
        b->seen[idx] = 1;
    n = conf_arena_alloc(b->a, sizeof(*n));
    if (n == NULL)
        return NULL;
    n->kind = kind;
    n->file = b->file;
    n->line = (int)yn->start_mark.line + 1;
    n->col = (int)yn->start_mark.column + 1;
    return n;
}

static struct conf_node *convert(struct builder *b, yaml_node_t *yn, int depth, bool is_key);

static int
cmp_pair_key(const void *pa, const void *pb)
{
    const struct conf_pair *a = *(const struct conf_pair *const *)pa;
    const struct conf_pair *b = *(const struct conf_pair *const *)pb;
    int c = strcmp(a->key->str, b->key->str);

    if (c != 0)
        return c;
    if (a->key->line != b->key->line)
        return a->key->line < b->key->line ? -1 : 1;
    return a->key->col < b->key->col ? -1 : a->key->col > b->key->col;
}

/* Reports every repeated key at its second (and later) occurrence and drops
 * it, keeping the first, so later phases see each key once. */
static void
drop_duplicate_keys(struct builder *b, struct conf_node *map)
{
    const struct conf_pair **sorted = NULL;
    size_t i, k;

    if (map->n < 2)
        goto out;
    sorted = calloc(map->n, sizeof(*sorted));
    if (sorted == NULL)
        goto out;
    for (i = 0; i < map->n; i++)
        sorted[i] = &map->pairs[i];
    qsort(sorted, map->n, sizeof(*sorted), cmp_pair_key);
    for (i = 1; i < map->n; i++) {
        const struct conf_pair *first = sorted[i - 1], *dup = sorted[i];

        if (strcmp(first->key->str, dup->key->str) != 0)
            continue;
        /* Walk back to the first occurrence for the message. */
        for (k = i - 1; k > 0 && strcmp(sorted[k - 1]->key->str, dup->key->str) == 0; k--)
            ;
        first = sorted[k];
        {
            size_t old = path_push(b, dup->key->str, 0);

            conf_diag_add(b->d, dup->key->file, dup->key->line, dup->key->col, b->path,
                          "duplicate key (first at line %d, column %d)", first->key->line,
                          first->key->col);
            path_pop(b, old);
        }
        dup->key->bad = true; /* marks it for removal below */
    }
    for (i = 0, k = 0; i < map->n; i++) {
        if (!map->pairs[i].key->bad)
            map->pairs[k++] = map->pairs[i];
    }
    map->n = k;
out:
    free(sorted);
}

static struct conf_node *
convert_mapping(struct builder *b, yaml_node_t *yn, int depth)
{
    struct conf_node *n = new_node(b, yn, CONF_NODE_MAP);
    yaml_node_pair_t *p;
    size_t cnt;

    if (n == NULL)
        return NULL;
    cnt = (size_t)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
    n->pairs = conf_arena_calloc(b->a, cnt ? cnt : 1, sizeof(*n->pairs));
    if (n->pairs == NULL)
        return NULL;
    for (p = yn->data.mapping.pairs.start; p < yn->data.mapping.pairs.top; p++) {
        yaml_node_t *yk = yaml_document_get_node(b->doc, p->key);
        yaml_node_t *yv = yaml_document_get_node(b->doc, p->value);
        struct conf_node *k, *v;
        size_t old;

        if (yk == NULL || yv == NULL)
            continue;
        if (yk->type != YAML_SCALAR_NODE) {
            conf_diag_add(b->d, b->file, (int)yk->start_mark.line + 1,
                          (int)yk->start_mark.column + 1, b->path,
                          "mapping keys must be plain names, not %s",
                          yk->type == YAML_MAPPING_NODE ? "mappings" : "lists");
            continue;
        }
        k = convert(b, yk, depth + 1, true);
        if (k == NULL)
            return NULL;
        old = path_push(b, k->str, 0);
        v = convert(b, yv, depth + 1, false);
        path_pop(b, old);
        if (v == NULL)
            return NULL;
        n->pairs[n->n].key = k;
        n->pairs[n->n].value = v;
        n->n++;
    }
    drop_duplicate_keys(b, n);
    return n;
}

static struct conf_node *
convert_sequence(struct builder *b, yaml_node_t *yn, int depth)
{
    struct conf_node *n = new_node(b, yn, CONF_NODE_SEQ);
    yaml_node_item_t *it;
    size_t cnt;

    if (n == NULL)
        return NULL;
    cnt = (size_t)(yn->data.sequence.items.top - yn->data.sequence.items.start);
    n->items = conf_arena_calloc(b->a, cnt ? cnt : 1, sizeof(*n->items));
    if (n->items == NULL)
        return NULL;
    for (it = yn->data.sequence.items.start; it < yn->data.sequence.items.top; it++) {
        yaml_node_t *yi = yaml_document_get_node(b->doc, *it);
        struct conf_node *v;
        size_t old;

        if (yi == NULL)
            continue;
        old = path_push(b, NULL, n->n);
        v = convert(b, yi, depth + 1, false);
        path_pop(b, old);
        if (v == NULL)
            return NULL;
        n->items[n->n++] = v;
    }
    return n;
}

static struct conf_node *
convert(struct builder *b, yaml_node_t *yn, int depth, bool is_key)
{
    struct conf_node *n = NULL;

    if (b->too_big)
        return NULL;
    if (depth > NODE_MAX_DEPTH) {
        conf_diag_add(b->d, b->file, (int)yn->start_mark.line + 1, (int)yn->start_mark.column + 1,
                      NULL, "nesting deeper than %d levels (a recursive alias?)", NODE_MAX_DEPTH);
        b->too_big = true;
        return NULL;
    }
    switch (yn->type) {
    case YAML_SCALAR_NODE: {
        const char *s = (const char *)yn->data.scalar.value;
        size_t len = yn->data.scalar.length;

        n = new_node(b, yn, CONF_NODE_SCALAR);
        if (n == NULL)
            break;
        n->null =
            !is_key && yn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && is_null_text(s, len);
        if (is_key || n->null) {
            n->str = conf_arena_strndup(b->a, s, len);
        } else {
            n->str = expand_env(b, n, s, len);
            if (n->str == NULL) {
                n->bad = true;
                n->str = conf_arena_strndup(b->a, s, len);
            }
        }
        if (n->str == NULL)
            n = NULL;
        break;
    }
    case YAML_MAPPING_NODE:
        n = convert_mapping(b, yn, depth);
        break;
    case YAML_SEQUENCE_NODE:
        n = convert_sequence(b, yn, depth);
        break;
    default:
        break;
    }
    return n;
}

static void
report_yaml_error(struct conf_diag *d, const char *file, const yaml_parser_t *p)
{
    const yaml_mark_t *m = &p->problem_mark;
    const char *problem = p->problem != NULL ? p->problem : "malformed YAML";

    switch (p->error) {
    case YAML_MEMORY_ERROR:
        conf_diag_add(d, file, 0, 0, NULL, "out of memory while parsing YAML");
        break;
    case YAML_READER_ERROR:
        /* The reader knows only a byte offset; the parser's mark is where
         * scanning stopped, which is the closest line we have. */
        conf_diag_add(d, file, (int)p->mark.line + 1, (int)p->mark.column + 1, NULL,
                      "cannot read YAML: %s (byte offset %zu)", problem, p->problem_offset);
        break;
    default:
        if (p->context != NULL)
            conf_diag_add(d, file, (int)m->line + 1, (int)m->column + 1, NULL,
                          "YAML syntax error: %s, %s that started at line %d, column %d", problem,
                          p->context, (int)p->context_mark.line + 1,
                          (int)p->context_mark.column + 1);
        else
            conf_diag_add(d, file, (int)m->line + 1, (int)m->column + 1, NULL,
                          "YAML syntax error: %s", problem);
        break;
    }
}

int
conf_node_parse(struct conf_arena *tmp, struct conf_diag *d, const char *file, FILE *f,
                struct conf_node **root)
{
    yaml_parser_t parser;
    yaml_document_t doc, next;
    bool have_doc = false, have_next = false;
    yaml_node_t *yroot;
    int rc = -1;

    *root = NULL;
    if (!yaml_parser_initialize(&parser)) {
        conf_diag_add(d, file, 0, 0, NULL, "out of memory while parsing YAML");
        return -1;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        report_yaml_error(d, file, &parser);
        goto out;
    }
    have_doc = true;
    /* A second document would be silently ignored by most readers; in a
     * configuration it is almost always a stray "---". */
    if (!yaml_parser_load(&parser, &next)) {
        report_yaml_error(d, file, &parser);
        goto out;
    }
    have_next = true;
    yroot = yaml_document_get_root_node(&next);
    if (yroot != NULL) {
        conf_diag_add(d, file, (int)next.start_mark.line + 1, (int)next.start_mark.column + 1, NULL,
                      "more than one YAML document in the file (a stray '---'?)");
        goto out;
    }
    yroot = yaml_document_get_root_node(&doc);
    if (yroot != NULL) {
        struct builder b = {.doc = &doc, .a = tmp, .d = d, .file = file};

        b.nseen = (size_t)(doc.nodes.top - doc.nodes.start);
        b.seen = conf_arena_alloc(tmp, b.nseen);
        if (b.seen == NULL)
            b.nseen = 0;
        *root = convert(&b, yroot, 0, false);
        if (*root == NULL) {
            if (!b.too_big)
                conf_diag_add(d, file, 0, 0, NULL, "out of memory while loading");
            goto out;
        }
    }
    rc = 0;
out:
    if (have_next)
        yaml_document_delete(&next);
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

const struct conf_pair *
conf_node_pair(const struct conf_node *map, const char *key)
{
    if (map == NULL || map->kind != CONF_NODE_MAP)
        return NULL;
    for (size_t i = 0; i < map->n; i++) {
        if (strcmp(map->pairs[i].key->str, key) == 0)
            return &map->pairs[i];
    }
    return NULL;
}

const struct conf_node *
conf_node_get(const struct conf_node *map, const char *key)
{
    const struct conf_pair *p = conf_node_pair(map, key);

    if (p == NULL || p->value->null)
        return NULL;
    return p->value;
}

const char *
conf_node_kind_name(const struct conf_node *n)
{
    if (n == NULL || n->null)
        return "null";
    switch (n->kind) {
    case CONF_NODE_MAP:
        return "a mapping";
    case CONF_NODE_SEQ:
        return "a list";
    default:
        return "a scalar";
    }
}
