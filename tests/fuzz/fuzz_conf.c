/*
 * libFuzzer target for the configuration loader (conf_load() and all of
 * conf/: YAML, includes, ${VAR}, the schema walk, cross-references).
 *
 * Each input is written as fuzz.yaml in a private folder, so that relative
 * includes (relative to the including file) stay inside it. The folder
 * holds things a hostile include could name: a FIFO (opening it for reading
 * blocks until a writer comes), a folder, a link to /dev/zero (endless), a
 * link back to fuzz.yaml and a small valid file to merge. The loader must
 * come back at once for every one of them.
 *
 * Invariants (abort() when broken): a success returns a conf that
 * conf_free() releases, with no error text; a failure returns as many errors
 * as it prints lines, each "FILE:LINE:COL: message" with LINE and COL from 1,
 * except the few that have no position in the main file. ASan's leak check
 * covers the rest: whatever the input, the loader frees everything.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/config.h"
#include "conf/schema.h"

#define MAIN_FILE "fuzz.yaml"

static char dir[4096]; /* under $TMPDIR, so that run.sh removes it even after a crash */
static char main_path[sizeof(dir) + sizeof(MAIN_FILE)];

static void
check(bool ok)
{
    if (!ok)
        abort();
}

/* A third-party module's section, as lb/plugin_schema.c would build it from
 * a module, so that global.plugins and the sections it adds are fuzzed too:
 * "ext.so" and "twin.so" both declare "ext", "core.so" claims tern's own
 * "pools". */
struct ext {
    char *name;
    uint64_t every;
    struct conf_cidr *nets;
    size_t nnets;
    int level;
};

static const char *const levels[] = {"low", "high", NULL};

static const struct conf_field ext_fields[] = {
    {.key = "name", .kind = CONF_STRING, .flags = CONF_F_REQUIRED, CONF_AT(struct ext, name)},
    {.key = "every", .kind = CONF_DURATION, CONF_AT(struct ext, every), .def = "1s"},
    {.key = "nets",
     .kind = CONF_LIST,
     .elem = CONF_CIDR,
     CONF_AT(struct ext, nets),
     .count = offsetof(struct ext, nnets),
     .max = 4},
    {.key = "level", .kind = CONF_ENUM, CONF_AT(struct ext, level), .names = levels},
    {0},
};

static const struct conf_schema ext_schema = {
    .name = "ext", .size = sizeof(struct ext), .fields = ext_fields};

static const struct conf_schema *
resolver(const char *module, const char **section)
{
    if (strcmp(module, "ext.so") == 0 || strcmp(module, "twin.so") == 0)
        *section = "ext";
    else if (strcmp(module, "core.so") == 0)
        *section = "pools";
    else
        return NULL;
    return &ext_schema;
}

static void
put(const char *name, const char *text)
{
    FILE *f = fopen(name, "w");

    check(f != NULL);
    check(fputs(text, f) >= 0);
    check(fclose(f) == 0);
}

static void
remove_dir(void)
{
    static const char *const names[] = {MAIN_FILE, "fifo",       "zero",          "self",
                                        "dir",     "merge.yaml", "conf.d/a.yaml", "conf.d"};
    char path[sizeof(dir) + 32];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        remove(path);
    }
    rmdir(dir);
}

/* libFuzzer reads the corpus by relative names after this: the working
 * directory changes only while the folder is filled. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char cwd[4096];

    const char *tmp = getenv("TMPDIR");

    check(getcwd(cwd, sizeof(cwd)) != NULL);
    snprintf(dir, sizeof(dir), "%s/fuzz_conf.XXXXXX", tmp && *tmp == '/' ? tmp : "/tmp");
    check(mkdtemp(dir) != NULL);
    snprintf(main_path, sizeof(main_path), "%s/%s", dir, MAIN_FILE);
    atexit(remove_dir);
    check(chdir(dir) == 0);
    check(mkfifo("fifo", 0600) == 0);
    check(mkdir("dir", 0700) == 0);
    check(mkdir("conf.d", 0700) == 0);
    check(symlink("/dev/zero", "zero") == 0);
    check(symlink(MAIN_FILE, "self") == 0);
    put("merge.yaml", "global: {log: stderr}\npools:\n  merged:\n    servers:\n"
                      "      - {name: m1, address: 127.0.0.1:9001}\n");
    put("conf.d/a.yaml", "listeners:\n  - {name: d, bind: 127.0.0.1:9002, pool: merged}\n");
    check(chdir(cwd) == 0);
    conf_set_plugin_resolver(resolver);
    setenv("TERN_FUZZ_VAR", "127.0.0.1", 1);
    unsetenv("TERN_FUZZ_UNSET");
    return 0;
}

/* The first digit of the decimal number without leading zero that ends at
 * end, or NULL. */
static const char *
number_before(const char *start, const char *end)
{
    const char *p = end;

    while (p > start && p[-1] >= '0' && p[-1] <= '9')
        p--;
    return p < end && *p != '0' ? p : NULL;
}

/* One printed error: "FILE:LINE:COL: message", FILE absolute as the main
 * file's name is. Only an empty main file and memory running out have no
 * position: "/tmp/.../fuzz.yaml: message". */
static bool
line_ok(const char *s, size_t len)
{
    static const char empty[] = "the file is empty";
    size_t plen = strlen(main_path);
    const char *sep = memmem(s, len, ": ", 2), *col, *line;

    if (sep == s + plen && memcmp(s, main_path, plen) == 0)
        return (len == plen + 2 + strlen(empty) && memcmp(sep + 2, empty, strlen(empty)) == 0) ||
               memmem(s, len, "out of memory", 13) != NULL;
    if (len == 0 || s[0] != '/' || sep == NULL)
        return false;
    col = number_before(s, sep);
    if (col == NULL || col - s < 2 || col[-1] != ':')
        return false;
    line = number_before(s, col - 1);
    return line != NULL && line - s >= 2 && line[-1] == ':';
}

static void
check_errors(const char *errs, size_t len, int n, const uint8_t *data, size_t size)
{
    const char *eintr = strerror(EINTR);
    int lines = 0;

    check(n > 0 && len > 0 && errs[len - 1] == '\n');
    check(strlen(errs) == len); /* no NUL inside a message */
    /* libFuzzer's -timeout timer interrupts a blocked open(2) every few
     * seconds without SA_RESTART, so a load that blocks shows up as EINTR in
     * a message rather than as a timeout; unless the input wrote the words
     * itself for a message to echo. */
    check(memmem(errs, len, eintr, strlen(eintr)) == NULL ||
          memmem(data, size, eintr, strlen(eintr)) != NULL);
    for (const char *s = errs; s < errs + len;) {
        const char *nl = memchr(s, '\n', (size_t)(errs + len - s));

        check(line_ok(s, (size_t)(nl - s)));
        lines++;
        s = nl + 1;
    }
    check(lines == n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conf *c = (struct conf *)&c; /* conf_load must reset it */
    char *errs = NULL;
    size_t len = 0;
    FILE *f, *err;
    int n;

    f = fopen(main_path, "w");
    check(f != NULL);
    check(fwrite(data, 1, size, f) == size);
    check(fclose(f) == 0);

    err = open_memstream(&errs, &len);
    check(err != NULL);
    n = conf_load(main_path, err, &c);
    check(fclose(err) == 0);
    if (n == 0) {
        check(c != NULL && len == 0);
        conf_free(c);
    } else {
        check(c == NULL);
        check_errors(errs, len, n, data, size);
    }
    free(errs);
    return 0;
}
