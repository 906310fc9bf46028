/*
 * Includes and the merge of included files (see include.h).
 *
 * Merging happens on node trees, before the schema walk, so the schema and
 * the cross-reference pass see one configuration and need not know that it
 * came from several files. The merge rules are a small table keyed by
 * section: to let a new section merge, add a row.
 */
#include "conf/include.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/arena.h"
#include "conf/diag.h"

enum merge_rule {
    MERGE_ONCE = 0, /* a key set in two files is an error */
    MERGE_CONCAT,   /* lists: the included items follow the includer's */
    MERGE_NAMED,    /* name -> mapping: names must be distinct across files */
    MERGE_KEYS,     /* a mapping whose keys merge one level down */
};

static const struct {
    const char *section; /* "" for the top level */
    const char *key;
    enum merge_rule rule;
    const char *what; /* MERGE_NAMED: what one entry is called */
} merge_rules[] = {
    {"", "global", MERGE_KEYS, NULL},        {"", "admin", MERGE_KEYS, NULL},
    {"", "listeners", MERGE_CONCAT, NULL},   {"", "pools", MERGE_NAMED, "pool"},
    {"", "vrrp", MERGE_CONCAT, NULL},        {"", "watch", MERGE_KEYS, NULL},
    {"watch", "alarms", MERGE_CONCAT, NULL}, {"watch", "notify", MERGE_NAMED, "notifier"},
    {"watch", "sources", MERGE_KEYS, NULL},  {"", "scale", MERGE_CONCAT, NULL},
};

struct loader {
    struct conf_arena *tmp;
    struct conf_diag *d;
    size_t left;  /* bytes the files still to read may hold together */
    size_t files; /* files read so far */
    int depth;
    struct {
        dev_t dev;
        ino_t ino;
    } stack[CONF_INCLUDE_MAX_DEPTH + 1];
};

static struct conf_node *load_file(struct loader *L, const char *path,
                                   const struct conf_node *from);

static const char *
rule_for(const char *section, const char *key, enum merge_rule *rule)
{
    for (size_t i = 0; i < sizeof(merge_rules) / sizeof(merge_rules[0]); i++) {
        if (strcmp(merge_rules[i].section, section) == 0 && strcmp(merge_rules[i].key, key) == 0) {
            *rule = merge_rules[i].rule;
            return merge_rules[i].what;
        }
    }
    *rule = MERGE_ONCE;
    return NULL;
}

/* Appends src's pairs to dst's in one allocation. */
static int
append_pairs(struct loader *L, struct conf_node *dst, const struct conf_pair *src, size_t n)
{
    struct conf_pair *p;

    if (n == 0)
        return 0;
    p = conf_arena_calloc(L->tmp, dst->n + n, sizeof(*p));
    if (p == NULL)
        return -1;
    memcpy(p, dst->pairs, dst->n * sizeof(*p));
    memcpy(p + dst->n, src, n * sizeof(*p));
    dst->pairs = p;
    dst->n += n;
    return 0;
}

static int
concat_items(struct loader *L, struct conf_node *dst, const struct conf_node *src)
{
    struct conf_node **items;

    if (src->n == 0)
        return 0;
    items = conf_arena_calloc(L->tmp, dst->n + src->n, sizeof(*items));
    if (items == NULL)
        return -1;
    memcpy(items, dst->items, dst->n * sizeof(*items));
    memcpy(items + dst->n, src->items, src->n * sizeof(*items));
    dst->items = items;
    dst->n += src->n;
    return 0;
}

static void merge_map(struct loader *L, struct conf_node *dst, const struct conf_node *src,
                      const char *section);

static void
merge_pair(struct loader *L, struct conf_pair *pd, const struct conf_pair *ps, const char *section)
{
    struct conf_node *dv = pd->value, *sv = ps->value;
    const char *key = ps->key->str;
    enum merge_rule rule;
    const char *what = rule_for(section, key, &rule);
    enum conf_node_kind want = rule == MERGE_CONCAT ? CONF_NODE_SEQ : CONF_NODE_MAP;

    if (rule != MERGE_ONCE && (dv->null || sv->null)) {
        if (dv->null)
            pd->value = sv;
        return;
    }
    if (rule != MERGE_ONCE && (dv->kind != want || sv->kind != want)) {
        const struct conf_node *bad = sv->kind != want ? sv : dv;

        conf_diag_add(L->d, bad->file, bad->line, bad->col, key, "expected %s, found %s",
                      want == CONF_NODE_SEQ ? "a list" : "a mapping", conf_node_kind_name(bad));
        return;
    }
    switch (rule) {
    case MERGE_CONCAT:
        if (concat_items(L, dv, sv) < 0)
            conf_diag_add(L->d, sv->file, 0, 0, NULL, "out of memory merging '%s'", key);
        break;
    case MERGE_NAMED:
        for (size_t i = 0; i < sv->n; i++) {
            const struct conf_pair *first = conf_node_pair(dv, sv->pairs[i].key->str);
            const struct conf_node *k = sv->pairs[i].key;

            if (first != NULL) {
                char path[256];

                snprintf(path, sizeof(path), "%s.%s", key, k->str);
                conf_diag_add(L->d, k->file, k->line, k->col, path,
                              "%s '%s' is already defined at %s:%d:%d", what, k->str,
                              first->key->file, first->key->line, first->key->col);
                continue;
            }
            if (append_pairs(L, dv, &sv->pairs[i], 1) < 0)
                conf_diag_add(L->d, sv->file, 0, 0, NULL, "out of memory merging '%s'", key);
        }
        break;
    case MERGE_KEYS:
        merge_map(L, dv, sv, key);
        break;
    case MERGE_ONCE: {
        const struct conf_node *k = ps->key;
        char path[256];

        snprintf(path, sizeof(path), "%s%s%s", section, section[0] ? "." : "", key);
        conf_diag_add(L->d, k->file, k->line, k->col, path,
                      "already set at %s:%d:%d (a setting may appear in only one file)",
                      pd->key->file, pd->key->line, pd->key->col);
        break;
    }
    }
}

static void
merge_map(struct loader *L, struct conf_node *dst, const struct conf_node *src, const char *section)
{
    for (size_t i = 0; i < src->n; i++) {
        const struct conf_pair *ps = &src->pairs[i];
        struct conf_pair *pd = (struct conf_pair *)conf_node_pair(dst, ps->key->str);

        if (pd == NULL) {
            if (append_pairs(L, dst, ps, 1) < 0)
                conf_diag_add(L->d, src->file, 0, 0, NULL, "out of memory merging");
        } else {
            merge_pair(L, pd, ps, section);
        }
    }
}

/* Resolves a name written in file `from` relative to that file's folder. */
static char *
relative_to(struct loader *L, const char *including, const char *name)
{
    const char *slash = strrchr(including, '/');

    if (name[0] == '/' || slash == NULL)
        return conf_arena_strdup(L->tmp, name);
    return conf_arena_printf(L->tmp, "%.*s/%s", (int)(slash - including), including, name);
}

static void
include_one(struct loader *L, struct conf_node *root, const struct conf_node *spec)
{
    char *pattern;
    glob_t g;
    int rc;

    if (spec->kind != CONF_NODE_SCALAR || spec->null) {
        conf_diag_add(L->d, spec->file, spec->line, spec->col, "include",
                      "expected a file name or pattern, found %s", conf_node_kind_name(spec));
        return;
    }
    if (spec->bad)
        return;
    pattern = relative_to(L, spec->file, spec->str);
    if (pattern == NULL)
        return;
    if (strpbrk(spec->str, "*?[") == NULL) {
        struct conf_node *child = load_file(L, pattern, spec);

        if (child != NULL)
            merge_map(L, root, child, "");
        return;
    }
    /* A pattern that matches nothing is fine (an empty conf.d), unlike a
     * plain name, which must exist. */
    rc = glob(pattern, GLOB_ERR, NULL, &g);
    if (rc == GLOB_NOMATCH)
        return;
    if (rc != 0) {
        conf_diag_add(L->d, spec->file, spec->line, spec->col, "include", "cannot expand '%s': %s",
                      pattern, rc == GLOB_NOSPACE ? "out of memory" : "read error");
        if (rc != GLOB_NOSPACE)
            globfree(&g);
        return;
    }
    /* Three wildcard levels from the root match tens of thousands of files:
     * refuse the pattern whole rather than open each only to report it. */
    if (g.gl_pathc > CONF_INCLUDE_MAX_FILES - L->files) {
        conf_diag_add(
            L->d, spec->file, spec->line, spec->col, "include",
            "'%s' matches %zu files; a configuration may read at most " CONF_INCLUDE_MAX_FILES_TEXT,
            pattern, g.gl_pathc);
        globfree(&g);
        return;
    }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        struct conf_node *child = load_file(L, g.gl_pathv[i], spec);

        if (child != NULL)
            merge_map(L, root, child, "");
    }
    globfree(&g);
}

/* Takes the "include" pair out of root and merges every file it names. */
static void
process_includes(struct loader *L, struct conf_node *root)
{
    const struct conf_pair *p = conf_node_pair(root, "include");
    const struct conf_node *v;
    size_t i;

    if (p == NULL)
        return;
    v = p->value;
    i = (size_t)(p - root->pairs);
    memmove(&root->pairs[i], &root->pairs[i + 1], (root->n - i - 1) * sizeof(root->pairs[0]));
    root->n--;
    if (v->null)
        return;
    if (v->kind == CONF_NODE_SEQ) {
        for (i = 0; i < v->n; i++)
            include_one(L, root, v->items[i]);
    } else if (v->kind == CONF_NODE_SCALAR) {
        include_one(L, root, v);
    } else {
        conf_diag_add(L->d, v->file, v->line, v->col, "include",
                      "expected a file name or a list of file names, found %s",
                      conf_node_kind_name(v));
    }
}

static void
file_error(struct loader *L, const struct conf_node *from, const char *name, const char *why)
{
    if (from != NULL)
        conf_diag_add(L->d, from->file, from->line, from->col, "include", "cannot include '%s': %s",
                      name, why);
    else
        conf_diag_add(L->d, name, 0, 0, NULL, "cannot open: %s", why);
}

/*
 * Opens what an include names. Only a regular file has an end that comes
 * without waiting for anyone: a FIFO blocks the open until a writer comes,
 * a device or /dev/stdin may never end or has side effects on open, so they
 * are refused from stat() before any is opened; O_NONBLOCK covers one
 * swapped in between. The main file is the operator's choice (tern -t -c
 * <(...) reads a pipe) and opens as it is.
 */
static const char not_regular[] =
    "not a regular file (a FIFO, device or socket could block or never end)";

static bool
refused(bool include, const struct stat *st)
{
    return include && !S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode);
}

static FILE *
open_file(const char *path, bool include, struct stat *st, const char **why)
{
    FILE *f;
    int fd;

    *why = NULL;
    if (include && stat(path, st) == 0 && refused(include, st)) {
        *why = not_regular;
        return NULL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | (include ? O_NONBLOCK | O_NOCTTY : 0));
    if (fd < 0)
        return NULL;
    f = fdopen(fd, "r");
    if (f == NULL) {
        int e = errno;

        close(fd);
        errno = e;
        return NULL;
    }
    if (fstat(fd, st) < 0) {
        fclose(f);
        return NULL;
    }
    if (refused(include, st)) {
        *why = not_regular;
        fclose(f);
        return NULL;
    }
    return f;
}

/*
 * Reads f whole, within what is left of the load's byte budget, and hands
 * libyaml a copy in memory: a file that grows, or a /proc file whose size
 * says 0, cannot make the loader read without end. NULL with *why set when
 * over budget or unreadable.
 */
static FILE *
read_capped(struct loader *L, FILE *f, char **buf, const char **why)
{
    size_t len = 0, cap = 0;
    char *p = NULL;

    *buf = NULL;
    for (;;) {
        size_t want, got;

        if (len == cap) {
            char *q;

            cap = cap ? cap * 2 : 4096;
            q = realloc(p, cap);
            if (q == NULL) {
                *why = "out of memory";
                goto fail;
            }
            p = q;
        }
        want = cap - len;
        got = fread(p + len, 1, want, f);
        len += got;
        /* Checked after every read, so the buffer never grows past twice
         * the budget. */
        if (len > L->left) {
            *why = "the configuration files are larger than " CONF_MAX_BYTES_TEXT " together";
            goto fail;
        }
        if (got < want)
            break;
    }
    if (ferror(f)) {
        *why = strerror(errno);
        goto fail;
    }
    L->left -= len;
    *buf = p;
    f = fmemopen(p, len, "r");
    if (f == NULL)
        *why = "out of memory";
    return f;
fail:
    free(p);
    return NULL;
}

static struct conf_node *
load_file(struct loader *L, const char *path, const struct conf_node *from)
{
    struct conf_node *root = NULL;
    const char *name, *why;
    char *text = NULL;
    struct stat st;
    FILE *f = NULL, *mem = NULL;
    int rc;

    /* depth counts the files being read: the main file and its includers. */
    if (L->depth > CONF_INCLUDE_MAX_DEPTH) {
        file_error(L, from, path, "includes nest deeper than 8 levels");
        goto out;
    }
    if (L->files >= CONF_INCLUDE_MAX_FILES) {
        file_error(L, from, path, "a configuration may read at most " CONF_INCLUDE_MAX_FILES_TEXT);
        goto out;
    }
    L->files++;
    name = conf_diag_file(L->d, path);
    if (name == NULL)
        goto out;
    f = open_file(path, from != NULL, &st, &why);
    if (f == NULL) {
        file_error(L, from, name, why != NULL ? why : strerror(errno));
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        file_error(L, from, name, "it is a directory (use a pattern such as dir/*.yaml)");
        goto out;
    }
    for (int i = 0; i < L->depth; i++) {
        if (L->stack[i].dev == st.st_dev && L->stack[i].ino == st.st_ino) {
            file_error(L, from, name,
                       "include cycle (the file includes itself, directly or "
                       "through other files)");
            goto out;
        }
    }
    mem = read_capped(L, f, &text, &why);
    if (mem == NULL) {
        file_error(L, from, name, why);
        goto out;
    }
    rc = conf_node_parse(L->tmp, L->d, name, mem, &root);
    if (rc < 0)
        goto out;
    if (root == NULL) {
        if (from == NULL)
            conf_diag_add(L->d, name, 0, 0, NULL, "the file is empty");
        goto out;
    }
    if (root->kind != CONF_NODE_MAP) {
        conf_diag_add(L->d, name, root->line, root->col, NULL,
                      "expected a mapping of sections (global, listeners, pools, ...), found %s",
                      conf_node_kind_name(root));
        root = NULL;
        goto out;
    }
    L->stack[L->depth].dev = st.st_dev;
    L->stack[L->depth].ino = st.st_ino;
    L->depth++;
    process_includes(L, root);
    L->depth--;
out:
    if (mem != NULL)
        fclose(mem);
    free(text);
    if (f != NULL)
        fclose(f);
    return root;
}

struct conf_node *
conf_include_load(struct conf_arena *tmp, struct conf_diag *d, const char *path)
{
    struct loader L = {.tmp = tmp, .d = d, .left = CONF_MAX_BYTES};

    return load_file(&L, path, NULL);
}
