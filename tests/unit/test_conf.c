/*
 * Unit tests of conf/: the scalar parsers, the YAML loader, includes, the
 * schema engine and its error messages, the cross-reference pass, the example
 * configuration and the generated reference page.
 *
 * Broken configurations live under conf/bad/, one file per mistake, each
 * saying on its first line how many errors it must produce, the exact
 * LINE:COL of the expected one and a piece of its text; each file runs as its
 * own test, named after it. Runs with tests/unit as working directory.
 *
 * TERN_UPDATE_REFERENCE=1 rewrites conf/REFERENCE.md from the schema instead
 * of failing when it is out of date.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <glob.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* cmocka needs stdarg.h, stddef.h and setjmp.h first. */
// clang-format off
#include <cmocka.h>
// clang-format on

#include "conf/arena.h"
#include "conf/config.h"
#include "conf/diag.h"
#include "conf/include.h"
#include "conf/node.h"
#include "conf/parse.h"
#include "conf/schema.h"
#include "conf/tern_schema.h"

#define REFERENCE_PATH "../../conf/REFERENCE.md"
#define EXAMPLE_PATH "../../conf/tern.example.yaml"

/* ---- helpers ---- */

/* A private temporary folder per test, removed at the end. */
struct tdir {
    char path[64];
};

static void
tdir_init(struct tdir *t)
{
    snprintf(t->path, sizeof(t->path), "/tmp/test_conf.XXXXXX");
    assert_non_null(mkdtemp(t->path));
}

static void
tdir_put(const struct tdir *t, const char *name, const char *text, char *out, size_t size)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", t->path, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    if (out != NULL)
        snprintf(out, size, "%s", path);
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void
tdir_free(struct tdir *t)
{
    nftw(t->path, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* Loads path, capturing the error text (always NUL-terminated, caller frees). */
static int
load(const char *path, struct conf **c, char **errs)
{
    size_t len = 0;
    FILE *m;
    int n;

    *errs = NULL;
    m = open_memstream(errs, &len);
    assert_non_null(m);
    n = conf_load(path, m, c);
    fclose(m);
    return n;
}

static int
count_lines(const char *s)
{
    int n = 0;

    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* True when errs has a line "FILE:POS: ..." containing msg. */
static bool
has_error(const char *errs, const char *file, const char *pos, const char *msg)
{
    char prefix[512];
    size_t plen;

    snprintf(prefix, sizeof(prefix), "%s:%s: ", file, pos);
    plen = strlen(prefix);
    for (const char *line = errs; line != NULL && *line != '\0';) {
        const char *nl = strchr(line, '\n');
        size_t len = nl != NULL ? (size_t)(nl - line) : strlen(line);
        char buf[1024];

        snprintf(buf, sizeof(buf), "%.*s", (int)len, line);
        if (strncmp(buf, prefix, plen) == 0 && strstr(buf, msg) != NULL)
            return true;
        line = nl != NULL ? nl + 1 : NULL;
    }
    return false;
}

static void
expect_error(const char *errs, const char *file, const char *pos, const char *msg)
{
    if (!has_error(errs, file, pos, msg)) {
        print_error("expected   %s:%s: ...%s...\ngot errors:\n%s", file, pos, msg, errs);
        fail();
    }
}

/* Writes text to a temporary file and loads it; the conf must load cleanly. */
static struct conf *
load_ok(struct tdir *t, const char *text)
{
    char path[256], *errs;
    struct conf *c = NULL;
    int n;

    tdir_put(t, "ok.yaml", text, path, sizeof(path));
    n = load(path, &c, &errs);
    if (n != 0)
        print_error("unexpected errors:\n%s", errs);
    free(errs);
    assert_int_equal(n, 0);
    assert_non_null(c);
    return c;
}

static uint16_t
port_of(const struct conf_addr *a)
{
    if (a->sa.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
}

static void
assert_ipv4(const struct conf_addr *a, const char *ip, uint16_t port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->sa;
    char buf[INET_ADDRSTRLEN];

    assert_int_equal(a->sa.ss_family, AF_INET);
    assert_int_equal(a->salen, sizeof(struct sockaddr_in));
    assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)));
    assert_string_equal(buf, ip);
    assert_int_equal(port_of(a), port);
}

/* ---- scalar parsers ---- */

static void
test_parse_duration(void **state)
{
    static const struct {
        const char *in;
        int rc;
        uint64_t ms;
    } cases[] = {
        {"0", 0, 0},
        {"0s", 0, 0},
        {"500ms", 0, 500},
        {"2s", 0, 2000},
        {"1.5s", 0, 1500},
        {"0.25s", 0, 250},
        {"1m", 0, 60000},
        {"1.5m", 0, 90000},
        {"1h", 0, 3600000},
        {"1h30m", 0, 5400000},
        {"1m30s250ms", 0, 90250},
        {"10", -1, 0},
        {"", -1, 0},
        {"-1s", -1, 0},
        {"2 s", -1, 0},
        {"1.s", -1, 0},
        {".5s", -1, 0},
        {"0.5ms", -1, 0},
        {"1d", -1, 0},
        {"ms", -1, 0},
        {"1sx", -1, 0},
        {"5124095576030432h", -1, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 12345;
        int rc = conf_parse_duration(cases[i].in, &ms);

        if (rc != cases[i].rc)
            print_error("duration '%s': rc %d, want %d\n", cases[i].in, rc, cases[i].rc);
        assert_int_equal(rc, cases[i].rc);
        assert_int_equal(ms, cases[i].rc == 0 ? cases[i].ms : 12345);
    }
}

static void
test_parse_size(void **state)
{
    static const struct {
        const char *in;
        int rc;
        uint64_t v;
    } cases[] = {
        {"8192", 0, 8192}, {"32k", 0, 32768},  {"32K", 0, 32768},      {"32kb", 0, 32768},
        {"1KiB", 0, 1024}, {"1m", 0, 1048576}, {"2g", 0, 2147483648u}, {"0", 0, 0},
        {"1.5k", -1, 0},   {"k", -1, 0},       {"-1", -1, 0},          {"12q", -1, 0},
        {"32 k", -1, 0},   {"", -1, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 7;
        int rc = conf_parse_size(cases[i].in, &v);

        if (rc != cases[i].rc)
            print_error("size '%s': rc %d, want %d\n", cases[i].in, rc, cases[i].rc);
        assert_int_equal(rc, cases[i].rc);
        assert_int_equal(v, cases[i].rc == 0 ? cases[i].v : 7);
    }
}

static void
test_parse_addr(void **state)
{
    static const struct {
        const char *in;
        int family; /* 0: must fail */
        const char *ip;
        uint16_t port;
        const char *why; /* part of the message on failure */
    } cases[] = {
        {"127.0.0.1:80", AF_INET, "127.0.0.1", 80, NULL},
        {"0.0.0.0:443", AF_INET, "0.0.0.0", 443, NULL},
        {"*:80", AF_INET, "0.0.0.0", 80, NULL},
        {":8080", AF_INET, "0.0.0.0", 8080, NULL},
        {"localhost:9900", AF_INET, "127.0.0.1", 9900, NULL},
        {"[::1]:443", AF_INET6, "::1", 443, NULL},
        {"[::]:80", AF_INET6, "::", 80, NULL},
        {"[fd00::1]:65535", AF_INET6, "fd00::1", 65535, NULL},
        {"::1:80", 0, NULL, 0, "brackets"},
        {"1.2.3.4", 0, NULL, 0, "missing port"},
        {"1.2.3.4:", 0, NULL, 0, "missing port"},
        {"1.2.3.4:0", 0, NULL, 0, "1 to 65535"},
        {"1.2.3.4:65536", 0, NULL, 0, "1 to 65535"},
        {"1.2.3.4:8a", 0, NULL, 0, "1 to 65535"},
        {"1.2.3:80", 0, NULL, 0, "numeric"},
        {"example.com:80", 0, NULL, 0, "may name a host"},
        {"[::1]", 0, NULL, 0, "missing port"},
        {"[::1:80", 0, NULL, 0, "']'"},
        {"[1.2.3.4]:80", 0, NULL, 0, "IPv6"},
        {"[fe80::1%eth0]:80", 0, NULL, 0, "zone"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf_addr a;
        const char *why = NULL;
        char buf[INET6_ADDRSTRLEN];
        int rc;

        memset(&a, 0xa5, sizeof(a));
        a.text = NULL;
        rc = conf_parse_addr(cases[i].in, &a, &why);
        if ((rc == 0) != (cases[i].family != 0))
            print_error("addr '%s': rc %d (%s)\n", cases[i].in, rc, why ? why : "");
        assert_int_equal(rc == 0, cases[i].family != 0);
        if (rc != 0) {
            assert_non_null(why);
            if (strstr(why, cases[i].why) == NULL)
                print_error("addr '%s': message '%s' lacks '%s'\n", cases[i].in, why, cases[i].why);
            assert_non_null(strstr(why, cases[i].why));
            continue;
        }
        assert_int_equal(a.sa.ss_family, cases[i].family);
        if (cases[i].family == AF_INET) {
            assert_ipv4(&a, cases[i].ip, cases[i].port);
        } else {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a.sa;

            assert_int_equal(a.salen, sizeof(*s6));
            assert_non_null(inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof(buf)));
            assert_string_equal(buf, cases[i].ip);
            assert_int_equal(port_of(&a), cases[i].port);
            assert_int_equal(s6->sin6_scope_id, 0);
        }
        assert_null(a.text); /* the caller owns the text */
    }
}

static void
test_parse_cidr_ip(void **state)
{
    struct conf_cidr c;
    struct conf_addr a;
    const char *why;

    assert_int_equal(conf_parse_cidr("10.0.0.100/24", &c, &why), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 24);
    assert_memory_equal(c.addr, "\x0a\x00\x00\x64", 4);
    assert_int_equal(conf_parse_cidr("fd00::1/64", &c, &why), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 64);
    assert_int_equal(conf_parse_cidr("10.0.0.1", &c, &why), 0);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(conf_parse_cidr("::1", &c, &why), 0);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(conf_parse_cidr("10.0.0.1/33", &c, &why), -1);
    assert_int_equal(conf_parse_cidr("fd00::/129", &c, &why), -1);
    assert_int_equal(conf_parse_cidr("10.0.0.1/", &c, &why), -1);
    assert_int_equal(conf_parse_cidr("/24", &c, &why), -1);
    assert_int_equal(conf_parse_cidr("10.0.0/24", &c, &why), -1);

    assert_int_equal(conf_parse_ip("10.0.0.2", &a, &why), 0);
    assert_ipv4(&a, "10.0.0.2", 0);
    assert_int_equal(conf_parse_ip("[fd00::2]", &a, &why), 0);
    assert_int_equal(a.sa.ss_family, AF_INET6);
    assert_int_equal(conf_parse_ip("10.0.0.2:112", &a, &why), -1);
    assert_non_null(strstr(why, "without a port"));
    assert_int_equal(conf_parse_ip("localhost", &a, &why), -1);
}

static void
test_parse_numbers(void **state)
{
    int64_t i;
    uint64_t u;
    double d;
    bool b;

    assert_int_equal(conf_parse_int("-42", &i), 0);
    assert_int_equal(i, -42);
    assert_int_equal(conf_parse_int("9223372036854775807", &i), 0);
    assert_int_equal(conf_parse_int("9223372036854775808", &i), -1);
    assert_int_equal(conf_parse_int("-9223372036854775808", &i), 0);
    assert_true(i == INT64_MIN);
    assert_int_equal(conf_parse_uint("18446744073709551615", &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(conf_parse_uint("18446744073709551616", &u), -1);
    assert_int_equal(conf_parse_uint("0x10", &u), -1);
    assert_int_equal(conf_parse_uint("+1", &u), -1);
    assert_int_equal(conf_parse_uint(" 1", &u), -1);
    assert_int_equal(conf_parse_double("70.5", &d), 0);
    assert_true(d == 70.5);
    assert_int_equal(conf_parse_double("1e3", &d), 0);
    assert_true(d == 1000);
    assert_int_equal(conf_parse_double("nan", &d), -1);
    assert_int_equal(conf_parse_double("inf", &d), -1);
    assert_int_equal(conf_parse_double("0x1p3", &d), -1);
    assert_int_equal(conf_parse_double("1e999", &d), -1);
    assert_int_equal(conf_parse_double("", &d), -1);
    assert_int_equal(conf_parse_bool("Yes", &b), 0);
    assert_true(b);
    assert_int_equal(conf_parse_bool("off", &b), 0);
    assert_false(b);
    assert_int_equal(conf_parse_bool("1", &b), -1);
}

static void
test_did_you_mean(void **state)
{
    static const char *const keys[] = {"listen", "token_file", "max_connections", "timeouts", NULL};

    assert_string_equal(conf_did_you_mean("lsiten", keys), "listen");
    assert_string_equal(conf_did_you_mean("listn", keys), "listen");
    assert_string_equal(conf_did_you_mean("token-file", keys), "token_file");
    assert_string_equal(conf_did_you_mean("max_conn", keys), "max_connections");
    assert_string_equal(conf_did_you_mean("timeout", keys), "timeouts");
    assert_null(conf_did_you_mean("zzz", keys));
    assert_null(conf_did_you_mean("workers", keys));
}

static void
test_arena(void **state)
{
    struct conf_arena *a = conf_arena_new();
    char *big, *s;
    int *small;

    assert_non_null(a);
    small = conf_arena_alloc(a, sizeof(int) * 4);
    assert_non_null(small);
    assert_int_equal(small[0] | small[3], 0);
    assert_int_equal((uintptr_t)small % _Alignof(max_align_t), 0);
    big = conf_arena_alloc(a, 1 << 20);
    assert_non_null(big);
    assert_int_equal(big[(1 << 20) - 1], 0);
    s = conf_arena_printf(a, "%s:%d", "x", 42);
    assert_string_equal(s, "x:42");
    assert_null(conf_arena_calloc(a, SIZE_MAX / 2, 4));
    assert_true(conf_arena_used(a) >= (1 << 20));
    conf_arena_free(a);
    conf_arena_free(NULL);
    conf_free(NULL);
}

/* ---- the schema engine on its own, as a plugin would use it ---- */

struct demo_target {
    char *name;
    int64_t offset;
    uint64_t buffer;
    struct conf_addr *peers;
    size_t npeers;
    char *level;
    bool has_offset;
    int checked;
};

struct demo {
    struct demo_target *targets;
    size_t ntargets;
};

static const char *const demo_levels[] = {"low", "high", NULL};

static void
demo_check(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct demo_target *t = obj;

    t->checked++;
    if (t->npeers > 0 && strcmp(t->level, "low") == 0)
        conf_key_error(ctx, map, "peers", "peers need level high");
}

static const struct conf_field demo_target_fields[] = {
    {.key = "offset",
     .kind = CONF_INT,
     CONF_AT(struct demo_target, offset),
     .min = -10,
     .max = 10,
     .def = "-3",
     CONF_PRESENT(struct demo_target, has_offset),
     .doc = "d"},
    {.key = "buffer",
     .kind = CONF_SIZE,
     CONF_AT(struct demo_target, buffer),
     .def = "4g",
     .doc = "d"},
    {.key = "peers",
     .kind = CONF_LIST,
     .elem = CONF_ADDR,
     CONF_AT(struct demo_target, peers),
     CONF_COUNT(struct demo_target, npeers),
     .max = 2,
     .doc = "d"},
    {.key = "level",
     .kind = CONF_CHOICE,
     .names = demo_levels,
     CONF_AT(struct demo_target, level),
     .def = "low",
     .doc = "d"},
    {.key = NULL},
};

static const struct conf_schema demo_target_schema = {
    .name = "target",
    .size = sizeof(struct demo_target),
    .fields = demo_target_fields,
    .name_offset = CONF_OFF1(struct demo_target, name),
    .check = demo_check,
};

static const struct conf_field demo_fields[] = {
    {.key = "targets",
     .kind = CONF_MAP,
     .sub = &demo_target_schema,
     CONF_AT(struct demo, targets),
     CONF_COUNT(struct demo, ntargets),
     .doc = "d"},
    {.key = NULL},
};

static const struct conf_schema demo_schema = {
    .name = "demo",
    .size = sizeof(struct demo),
    .fields = demo_fields,
};

static void
test_schema_engine(void **state)
{
    static const char yaml[] = "targets:\n"
                               "  a: {offset: 7, peers: \"127.0.0.1:1\", level: high}\n"
                               "  b: ~\n"
                               "  c: {offset: -11, buffer: 1x, peers: [\":1\", \":2\", \":3\"]}\n"
                               "  d: {peers: [\":1\"]}\n";
    struct conf_arena *arena = conf_arena_new(), *tmp = conf_arena_new();
    struct conf_diag *d = conf_diag_new(tmp);
    struct conf_node *root = NULL;
    struct demo demo = {0};
    struct conf_ctx ctx;
    char *errs = NULL;
    size_t len = 0;
    FILE *in = fmemopen((void *)yaml, strlen(yaml), "r"), *m;

    assert_non_null(in);
    assert_int_equal(conf_node_parse(tmp, d, "demo.yaml", in, &root), 0);
    fclose(in);
    conf_ctx_init(&ctx, arena, tmp, d);
    conf_schema_apply(&ctx, &demo_schema, root, &demo);

    assert_int_equal(demo.ntargets, 4);
    assert_string_equal(demo.targets[0].name, "a");
    assert_int_equal(demo.targets[0].offset, 7);
    assert_true(demo.targets[0].has_offset);
    assert_true(demo.targets[0].buffer == (UINT64_C(4) << 30));
    assert_int_equal(demo.targets[0].npeers, 1); /* a single value is a list of one */
    assert_int_equal(port_of(&demo.targets[0].peers[0]), 1);
    assert_string_equal(demo.targets[0].level, "high");
    assert_int_equal(demo.targets[0].checked, 1);
    assert_string_equal(demo.targets[1].name, "b"); /* null: all defaults */
    assert_int_equal(demo.targets[1].offset, -3);
    assert_false(demo.targets[1].has_offset);
    assert_int_equal(demo.targets[1].checked, 1);

    m = open_memstream(&errs, &len);
    assert_int_equal(conf_diag_count(d), 4);
    conf_diag_print(d, m);
    fclose(m);
    expect_error(errs, "demo.yaml", "4:15",
                 "targets.c.offset: -11 is out of range: must be -10..10");
    expect_error(errs, "demo.yaml", "4:28", "targets.c.buffer: bad size '1x'");
    expect_error(errs, "demo.yaml", "4:39", "targets.c.peers: takes at most 2 items");
    expect_error(errs, "demo.yaml", "5:14", "targets.d.peers: peers need level high");
    free(errs);
    conf_arena_free(tmp);
    conf_arena_free(arena);
}

static void
test_schema_selftest(void **state)
{
    struct broken {
        uint64_t t;
        char *s;
        int e;
    };
    static const struct conf_field broken_fields[] = {
        {.key = "t", .kind = CONF_DURATION, CONF_AT(struct broken, t), .def = "3x", .doc = "d"},
        {.key = "t", .kind = CONF_STRING, CONF_AT(struct broken, s), .doc = "declared twice"},
        {.key = "e", .kind = CONF_ENUM, CONF_AT(struct broken, e), .doc = "no names"},
        {.key = "c", .kind = CONF_CUSTOM, .doc = "no parser"},
        {.key = "u", .kind = CONF_STRING, CONF_AT(struct broken, s)},
        {.key = NULL},
    };
    static const struct conf_schema broken = {
        .name = "broken", .size = sizeof(struct broken), .fields = broken_fields};
    char *errs = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&errs, &len);

    assert_int_equal(conf_schema_selftest(&conf_tern_schema, m), 0);
    assert_int_equal(conf_schema_selftest(&demo_schema, m), 0);
    fflush(m);
    assert_string_equal(errs, "");
    assert_int_equal(conf_schema_selftest(&broken, m), 5);
    fclose(m);
    assert_non_null(strstr(errs, "t: bad duration '3x'"));
    assert_non_null(strstr(errs, "t: key declared twice"));
    assert_non_null(strstr(errs, "e: ENUM/CHOICE needs .names"));
    assert_non_null(strstr(errs, "c: CUSTOM needs .parse"));
    assert_non_null(strstr(errs, "u: no doc line"));
    free(errs);
}

/* ---- broken configurations ---- */

/*
 * Each file under conf/bad/ is a broken configuration whose first line says
 * what loading it must report:
 *
 *   # expect: COUNT error(s) at LINE:COL: TEXT
 *
 * exactly COUNT errors, one of them at LINE:COL containing TEXT (its key path
 * and message). To add a case, add a file.
 */
static void
run_bad_case(void **state)
{
    const char *path = *state;
    struct conf *c = (struct conf *)&c; /* must be reset to NULL */
    char head[512], pos[32], *errs;
    int want, line, col, off = 0, n;
    FILE *f = fopen(path, "r");

    assert_non_null(f);
    assert_non_null(fgets(head, sizeof(head), f));
    fclose(f);
    head[strcspn(head, "\n")] = '\0';
    if (sscanf(head, "# expect: %d error%*[s ]at %d:%d: %n", &want, &line, &col, &off) < 3 ||
        off == 0) {
        print_error("%s: first line must be '# expect: N errors at L:C: text'\n", path);
        fail();
    }
    snprintf(pos, sizeof(pos), "%d:%d", line, col);
    n = load(path, &c, &errs);
    assert_null(c);
    if (n != want || count_lines(errs) != n)
        print_error("want %d errors, got %d:\n%s", want, n, errs);
    assert_int_equal(n, want);
    assert_int_equal(count_lines(errs), n);
    expect_error(errs, path, pos, head + off);
    free(errs);
}

/* Every error of a file is reported, sorted by line and column. */
static void
test_all_errors_reported(void **state)
{
    static const char yaml[] = "global:\n"
                               "  workers: many\n"
                               "  max_conections: 1\n"
                               "listeners:\n"
                               "  - name: a\n"
                               "    bind: 1.2.3.4\n"
                               "    pool: nope\n"
                               "    timeouts: {client: 1d}\n"
                               "pools:\n"
                               "  p:\n"
                               "    servers: [{name: s, address: 10.0.0.1:80, weight: 300}]\n"
                               "vrrp:\n"
                               "  - {name: v, interface: eth0, vrid: 0, priority: 256,"
                               " virtual_ips: [10.0.0.1/24]}\n";
    static const char *const want[] = {"2:12", "3:3",   "6:11",  "7:11",
                                       "8:24", "11:55", "13:38", "13:51"};
    struct conf *c;
    char path[256], *errs, *p;
    struct tdir t;
    int n;

    tdir_init(&t);
    tdir_put(&t, "many.yaml", yaml, path, sizeof(path));
    n = load(path, &c, &errs);
    tdir_free(&t);
    if (n != 8)
        print_error("%s", errs);
    assert_int_equal(n, 8);
    assert_null(c);
    /* In order of position: each expected position appears after the last. */
    p = errs;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char needle[300];

        snprintf(needle, sizeof(needle), "%s:%s: ", path, want[i]);
        p = strstr(p, needle);
        if (p == NULL)
            print_error("missing or out of order: %s\n%s", needle, errs);
        assert_non_null(p);
    }
    expect_error(errs, path, "3:3", "did you mean 'max_connections'");
    expect_error(errs, path, "7:11", "undefined pool 'nope'");
    free(errs);
}

/* ---- valid configurations ---- */

static void
test_defaults(void **state)
{
    struct tdir t;
    struct conf *c;
    const struct conf_listener *l;
    const struct conf_pool *p;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    tdir_init(&t);
    c = load_ok(&t, "listeners:\n"
                    "  - name: web\n"
                    "    bind: 127.0.0.1:8080\n"
                    "    pool: web\n"
                    "pools:\n"
                    "  web:\n"
                    "    servers:\n"
                    "      - name: s1\n"
                    "        address: 10.0.0.1:80\n");
    tdir_free(&t);
    assert_non_null(c->arena);
    assert_non_null(strstr(c->file, "ok.yaml"));
    assert_int_equal(c->global.workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
    assert_int_equal(c->global.max_connections, 100000);
    assert_null(c->global.access_log);
    assert_string_equal(c->global.log, "stderr");
    assert_null(c->global.user);
    assert_null(c->global.plugin_dir);
    assert_false(c->admin.enabled);
    assert_string_equal(c->admin.listen.text, "127.0.0.1:9900");
    assert_ipv4(&c->admin.listen, "127.0.0.1", 9900);
    assert_null(c->admin.token_file);

    assert_int_equal(c->nlisteners, 1);
    l = &c->listeners[0];
    assert_string_equal(l->name, "web");
    assert_ipv4(&l->bind, "127.0.0.1", 8080);
    assert_string_equal(l->bind.text, "127.0.0.1:8080");
    assert_int_equal(l->mode, CONF_MODE_HTTP);
    assert_string_equal(l->pool, "web");
    assert_int_equal(l->pool_index, 0);
    assert_int_equal(l->nroutes, 0);
    assert_false(l->tls.enabled);
    assert_int_equal(l->max_connections, 0);
    assert_int_equal(l->timeout_client, 30000);
    assert_int_equal(l->timeout_header, 10000);
    assert_int_equal(l->timeout_tunnel, 3600000);
    assert_int_equal(l->max_header_size, 32768);
    assert_int_equal(l->max_request_line, 8192);
    assert_true(l->forwarded_headers);
    assert_int_equal(l->line, 2);
    assert_int_equal(l->col, 5);

    assert_int_equal(c->npools, 1);
    p = &c->pools[0];
    assert_string_equal(p->name, "web");
    assert_int_equal(p->line, 6);
    assert_int_equal(p->col, 3);
    assert_int_equal(p->balance, CONF_BALANCE_ROUNDROBIN);
    assert_int_equal(p->health.type, CONF_HC_NONE);
    assert_int_equal(p->timeout_connect, 3000);
    assert_int_equal(p->timeout_server, 30000);
    assert_int_equal(p->timeout_queue, 5000);
    assert_int_equal(p->retries, 2);
    assert_int_equal(p->queue_size, 1024);
    assert_int_equal(p->drain_timeout, 30000);
    assert_int_equal(p->slow_start, 0);
    assert_false(p->tls);
    assert_null(p->tls_ca);
    assert_int_equal(p->nservers, 1);
    assert_string_equal(p->servers[0].name, "s1");
    assert_ipv4(&p->servers[0].address, "10.0.0.1", 80);
    assert_int_equal(p->servers[0].weight, 1);
    assert_int_equal(p->servers[0].max_connections, 0);
    assert_false(p->servers[0].backup);

    assert_int_equal(c->nvrrp, 0);
    assert_false(c->watch.present);
    assert_int_equal(c->watch.nalarms, 0);
    assert_int_equal(c->nscale, 0);
    assert_int_equal(conf_pool_index(c, "web"), 0);
    assert_int_equal(conf_pool_index(c, "nope"), -1);
    conf_free(c);
}

/* The defaults inside optional sections apply once the section is given. */
static void
test_section_defaults(void **state)
{
    struct tdir t;
    struct conf *c;
    const struct conf_health *h;
    const struct conf_vrrp *v;
    const struct conf_alarm *a;
    const struct conf_notify *n;
    const struct conf_scale *s;

    tdir_init(&t);
    c = load_ok(&t, "global: {workers: 3, access_log: \"-\"}\n"
                    "admin: {}\n"
                    "listeners:\n"
                    "  - {name: s, bind: \"[::]:443\", pool: p, mode: tcp,\n"
                    "     tls: {certificates: [{cert: c.pem, key: c.key}]}}\n"
                    "pools:\n"
                    "  p:\n"
                    "    health_check: {}\n"
                    "vrrp:\n"
                    "  - {name: v, interface: eth0, vrid: 1, virtual_ips: [10.0.0.1]}\n"
                    "watch:\n"
                    "  alarms:\n"
                    "    - {name: busy, metric: host.load1, above: 4, evaluation_periods: 5}\n"
                    "  notify:\n"
                    "    ops:\n"
                    "      email: {server: \"10.0.0.25:25\", from: a@b, to: c@d}\n"
                    "      sms: {url: \"https://x/\", to: [\"+1\"]}\n"
                    "  sources: {libvirt: {}}\n"
                    "scale:\n"
                    "  - pool: p\n"
                    "    min: 2\n"
                    "    max: 5\n"
                    "    provider: {libvirt: {template: t}}\n"
                    "    scale_out: {alarm: busy}\n");
    char key[128];
    snprintf(key, sizeof(key), "%s/c.key", t.path); /* files: relative to the config */
    tdir_free(&t);
    assert_int_equal(c->global.workers, 3);
    assert_string_equal(c->global.access_log, "-");
    assert_true(c->admin.enabled);
    assert_int_equal(c->listeners[0].mode, CONF_MODE_TCP);
    assert_int_equal(c->listeners[0].bind.sa.ss_family, AF_INET6);
    assert_true(c->listeners[0].tls.enabled);
    assert_int_equal(c->listeners[0].tls.ncertificates, 1);
    assert_string_equal(c->listeners[0].tls.certificates[0].key, key);
    assert_string_equal(c->listeners[0].tls.min_version, "1.2");
    assert_string_equal(c->listeners[0].tls.client_auth, "none");

    h = &c->pools[0].health;
    assert_int_equal(h->type, CONF_HC_TCP);
    assert_string_equal(h->method, "GET");
    assert_string_equal(h->path, "/");
    assert_int_equal(h->expect_status_min, 200);
    assert_int_equal(h->expect_status_max, 200);
    assert_int_equal(h->interval, 2000);
    assert_int_equal(h->timeout, 1000);
    assert_int_equal(h->jitter, 0);
    assert_int_equal(h->rise, 2);
    assert_int_equal(h->fall, 3);

    v = &c->vrrp[0];
    assert_int_equal(v->priority, 100);
    assert_int_equal(v->version, 3);
    assert_int_equal(v->advert_interval, 1000);
    assert_int_equal(v->nvirtual_ips, 1);
    assert_int_equal(v->virtual_ips[0].prefix, 32);
    assert_string_equal(v->virtual_ips[0].text, "10.0.0.1");
    assert_true(v->preempt);
    assert_true(v->accept);
    assert_int_equal(c->global.vrrp_rt_priority, 10);
    assert_true(v->checksum_pseudo_header);
    assert_int_equal(v->garp_repeat, 5);
    assert_int_equal(v->garp_refresh, 0);
    assert_int_equal(v->track_weight, 0);

    assert_true(c->watch.present);
    assert_int_equal(c->watch.interval, 10000);
    assert_string_equal(c->watch.libvirt_uri, "qemu:///system");
    a = &c->watch.alarms[0];
    assert_string_equal(a->statistic, "average");
    assert_true(a->has_above);
    assert_false(a->has_below);
    assert_true(a->above == 4.0);
    assert_int_equal(a->period, 60000);
    assert_int_equal(a->evaluation_periods, 5);
    assert_int_equal(a->datapoints_to_alarm, 5);
    assert_string_equal(a->missing_data, "missing");
    n = &c->watch.notify[0];
    assert_string_equal(n->name, "ops");
    assert_true(n->email.enabled);
    assert_string_equal(n->email.starttls, "required");
    assert_string_equal(n->email.server, "10.0.0.25:25");
    assert_ipv4(&n->email.server_addr, "10.0.0.25", 25);
    assert_int_equal(n->email.nto, 1);
    assert_true(n->sms.enabled);
    assert_string_equal(n->sms.method, "POST");

    s = &c->scale[0];
    assert_int_equal(s->provider, CONF_PROVIDER_LIBVIRT);
    assert_string_equal(s->libvirt_uri, "qemu:///system");
    assert_string_equal(s->libvirt_storage_pool, "default");
    assert_int_equal(s->desired, 2);
    assert_true(s->scale_out.present);
    assert_int_equal(s->scale_out.count, 1);
    assert_int_equal(s->scale_out.percent, 0); /* no percentage: add applies */
    assert_int_equal(s->scale_out.min_adjustment, 1);
    assert_int_equal(s->scale_out.cooldown, 300000);
    assert_false(s->scale_in.present);
    assert_false(s->has_target_tracking);
    conf_free(c);
}

static void
test_env_expansion(void **state)
{
    struct tdir t;
    struct conf *c;

    setenv("TERN_T_PORT", "8081", 1);
    setenv("TERN_T_EMPTY", "", 1);
    unsetenv("TERN_T_UNSET");
    tdir_init(&t);
    c = load_ok(&t, "global:\n"
                    "  log: ${TERN_T_UNSET:-/var/log/tern.log}\n"
                    "  user: ${TERN_T_EMPTY:-nobody}\n"
                    "  access_log: \"/logs/$${HOME}/a$b.log\"\n"
                    "  plugin_dir: \"${TERN_T_EMPTY}\"\n"
                    "listeners:\n"
                    "  - name: a\n"
                    "    bind: \"127.0.0.1:${TERN_T_PORT}\"\n"
                    "    pool: p\n"
                    "pools: {p: {}}\n");
    tdir_free(&t);
    assert_string_equal(c->global.log, "/var/log/tern.log");
    assert_string_equal(c->global.user, "nobody");
    assert_string_equal(c->global.access_log, "/logs/${HOME}/a$b.log");
    assert_string_equal(c->global.plugin_dir, "");
    assert_string_equal(c->listeners[0].bind.text, "127.0.0.1:8081");
    assert_int_equal(port_of(&c->listeners[0].bind), 8081);
    conf_free(c);
}

/* Flow style ({a: 1}) and block style give the same configuration. */
static void
test_flow_and_block(void **state)
{
    struct tdir t;
    struct conf *a, *b;

    tdir_init(&t);
    a = load_ok(&t, "listeners:\n"
                    "  - name: web\n"
                    "    bind: 127.0.0.1:80\n"
                    "    pool: web\n"
                    "    routes:\n"
                    "      - match:\n"
                    "          host: api.example.com\n"
                    "        pool: web\n"
                    "pools:\n"
                    "  web:\n"
                    "    balance: maglev\n"
                    "    servers:\n"
                    "      - name: w1\n"
                    "        address: 10.0.0.1:80\n"
                    "        weight: 5\n"
                    "    health_check:\n"
                    "      type: http\n"
                    "      expect_status: 200-399\n");
    b = load_ok(&t, "{listeners: [{name: web, bind: '127.0.0.1:80', pool: web,\n"
                    "  routes: [{match: {host: api.example.com}, pool: web}]}],\n"
                    " pools: {web: {balance: maglev, servers: [{name: w1, address: "
                    "'10.0.0.1:80', weight: 5}],\n"
                    "  health_check: {type: http, expect_status: '200-399'}}}}\n");
    tdir_free(&t);
    assert_string_equal(a->listeners[0].routes[0].host, b->listeners[0].routes[0].host);
    assert_null(a->listeners[0].routes[0].path_prefix);
    assert_int_equal(a->listeners[0].routes[0].pool_index, 0);
    assert_int_equal(b->listeners[0].routes[0].pool_index, 0);
    assert_int_equal(a->pools[0].balance, CONF_BALANCE_MAGLEV);
    assert_int_equal(b->pools[0].balance, CONF_BALANCE_MAGLEV);
    assert_int_equal(a->pools[0].servers[0].weight, 5);
    assert_int_equal(b->pools[0].servers[0].weight, 5);
    assert_int_equal(a->pools[0].health.type, CONF_HC_HTTP);
    assert_int_equal(b->pools[0].health.expect_status_min, 200);
    assert_int_equal(a->pools[0].health.expect_status_max, 399);
    assert_int_equal(b->pools[0].health.expect_status_max, 399);
    assert_memory_equal(&a->listeners[0].bind.sa, &b->listeners[0].bind.sa,
                        a->listeners[0].bind.salen);
    conf_free(a);
    conf_free(b);
}

static void
test_aliases(void **state)
{
    static const char bomb[] = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                               "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                               "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                               "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                               "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                               "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                               "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    struct tdir t;
    struct conf *c;
    char path[256], *errs;

    tdir_init(&t);
    /* Ordinary anchors work: one server definition reused. */
    c = load_ok(&t, "pools:\n"
                    "  a: {servers: [&s {name: s, address: 10.0.0.1:80}]}\n"
                    "  b: {servers: [*s]}\n");
    assert_string_equal(c->pools[1].servers[0].name, "s");
    conf_free(c);

    tdir_put(&t, "bomb.yaml", bomb, path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 1);
    assert_non_null(strstr(errs, "aliases expand to more than"));
    free(errs);

    tdir_put(&t, "loop.yaml", "a: &x [*x]\n", path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 1);
    assert_non_null(strstr(errs, "nesting deeper than"));
    free(errs);
    tdir_free(&t);
}

static void
test_file_errors(void **state)
{
    struct tdir t;
    struct conf *c;
    char path[256], *errs;

    assert_int_equal(load("conf/does-not-exist.yaml", &c, &errs), 1);
    assert_null(c);
    assert_string_equal(errs, "conf/does-not-exist.yaml: cannot open: No such file or directory\n");
    free(errs);

    tdir_init(&t);
    tdir_put(&t, "empty.yaml", "# nothing\n", path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 1);
    assert_non_null(strstr(errs, "the file is empty"));
    free(errs);
    assert_int_equal(conf_load(path, NULL, &c), 1); /* err may be NULL */
    assert_null(c);
    tdir_free(&t);
}

/* ---- relative file names ---- */

/* A relative file name in a plugin section names a file next to the
 * configuration file that holds it (an included one: next to that one),
 * whatever the working directory; absolute names stay. */
static void
test_relative_paths(void **state)
{
    static const char mail[] = "watch:\n"
                               "  notify:\n"
                               "    ops:\n"
                               "      email: {server: \"10.0.0.25:25\", from: a@b, to: [c@d],\n"
                               "              user: u, password_file: %s, ca_file: %s}\n";
    struct tdir t;
    struct conf *c;
    char path[256], text[512], want[256], sub[128], *errs;

    tdir_init(&t);
    snprintf(sub, sizeof(sub), "%s/sub", t.path);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(text, sizeof(text), mail, "secret", "/etc/ssl/ca.pem");
    tdir_put(&t, "main.yaml", text, path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 0);
    snprintf(want, sizeof(want), "%s/secret", t.path);
    assert_string_equal(c->watch.notify[0].email.password_file, want);
    assert_string_equal(c->watch.notify[0].email.ca_file, "/etc/ssl/ca.pem");
    conf_free(c);
    free(errs);

    snprintf(text, sizeof(text), mail, "../pw", "certs/ca.pem");
    tdir_put(&t, "sub/mail.yaml", text, NULL, 0);
    tdir_put(&t, "main.yaml", "include: sub/mail.yaml\n", path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 0);
    snprintf(want, sizeof(want), "%s/sub/../pw", t.path);
    assert_string_equal(c->watch.notify[0].email.password_file, want);
    snprintf(want, sizeof(want), "%s/sub/certs/ca.pem", t.path);
    assert_string_equal(c->watch.notify[0].email.ca_file, want);
    conf_free(c);
    free(errs);
    tdir_free(&t);
}

/* ---- plugin sections ---- */

/* A module's section as conf/plugin_sections.c sees it: the resolver (the
 * daemon's reads modules; this one is a table) names the section and its
 * schema, and conf_load() checks and fills it with the rest of the file. */
struct greet {
    char *text;
    uint32_t times;
};

static const struct conf_field greet_fields[] = {
    {.key = "text",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct greet, text),
     .doc = "t"},
    {.key = "times",
     .kind = CONF_UINT,
     CONF_AT(struct greet, times),
     .min = 1,
     .max = 9,
     .def = "2",
     .doc = "n"},
    {0},
};

static const struct conf_schema greet_schema = {
    .name = "greet", .size = sizeof(struct greet), .fields = greet_fields};

static const struct conf_schema *
fake_resolver(const char *module, const char **section)
{
    if (strcmp(module, "/x/greet.so") != 0)
        return NULL;
    *section = "greet";
    return &greet_schema;
}

static void
test_plugin_sections(void **state)
{
    struct tdir t;
    struct conf *c;
    char path[256], *errs;
    const struct greet *g;

    tdir_init(&t);
    conf_set_plugin_resolver(fake_resolver);
    tdir_put(&t, "p.yaml",
             "global: { plugins: [ /x/other.so, /x/greet.so ] }\ngreet: { text: hi }\n", path,
             sizeof(path));
    assert_int_equal(load(path, &c, &errs), 0);
    assert_int_equal(c->next, 1);
    assert_string_equal(c->ext[0].name, "greet");
    assert_true(c->ext[0].present);
    g = c->ext[0].obj;
    assert_string_equal(g->text, "hi");
    assert_int_equal(g->times, 2);
    conf_free(c);
    free(errs);

    /* Errors inside it carry its key path; absent, it is not present. */
    tdir_put(&t, "p.yaml", "global: { plugins: /x/greet.so }\ngreet: { times: 10 }\n", path,
             sizeof(path));
    assert_int_equal(load(path, &c, &errs), 2);
    assert_non_null(strstr(errs, "greet: missing required key 'text'"));
    assert_non_null(strstr(errs, "greet.times:"));
    free(errs);
    tdir_put(&t, "p.yaml", "global: { plugins: /x/greet.so }\n", path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 0);
    assert_int_equal(c->next, 1);
    assert_false(c->ext[0].present);
    conf_free(c);
    free(errs);

    /* Without the module named, the section is an unknown key. */
    tdir_put(&t, "p.yaml", "greet: { text: hi }\n", path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 1);
    assert_non_null(strstr(errs, "greet: unknown key"));
    free(errs);
    conf_set_plugin_resolver(NULL);
    tdir_free(&t);
}

/* ---- includes ---- */

static void
test_include_merge(void **state)
{
    struct conf *c = NULL;
    char *errs;
    int n = load("conf/include-main.yaml", &c, &errs);
    int api;

    if (n != 0)
        print_error("%s", errs);
    free(errs);
    assert_int_equal(n, 0);
    assert_int_equal(c->global.workers, 2);
    assert_int_equal(c->global.max_connections, 5000);
    assert_int_equal(c->nlisteners, 2);
    assert_string_equal(c->listeners[0].name, "web");
    assert_string_equal(c->listeners[1].name, "api");
    assert_int_equal(c->npools, 2);
    api = conf_pool_index(c, "api");
    assert_int_equal(api, 1);
    assert_int_equal(c->pools[api].balance, CONF_BALANCE_MAGLEV);
    assert_int_equal(c->listeners[1].pool_index, api);
    assert_int_equal(c->listeners[1].line, 2); /* its line in include.d/10-listeners.yaml */
    assert_int_equal(c->nvrrp, 1);
    assert_string_equal(c->vrrp[0].track_pools[0], "api");
    assert_int_equal(c->watch.nalarms, 1);
    assert_int_equal(c->watch.nnotify, 1);
    assert_true(c->watch.notify[0].sms.enabled);
    conf_free(c);
}

static void
test_include_errors(void **state)
{
    struct conf *c;
    char *errs;

    /* An error inside an included file names that file. */
    assert_int_equal(load("conf/include-bad-main.yaml", &c, &errs), 1);
    expect_error(errs, "conf/include-bad-child.yaml", "3:14",
                 "pools.api.balance: unknown value 'fastest'");
    free(errs);

    /* A setting or a pool name given in two files. */
    assert_int_equal(load("conf/include-dup-main.yaml", &c, &errs), 4);
    expect_error(errs, "conf/include-dup-child.yaml", "2:3",
                 "global.workers: already set at conf/include-dup-main.yaml:3:3");
    expect_error(errs, "conf/include-dup-child.yaml", "4:3",
                 "pools.web: pool 'web' is already defined at conf/include-dup-main.yaml:5:3");
    expect_error(errs, "conf/include-dup-child.yaml", "6:13",
                 "listeners[1].name: duplicate listener name 'a' (first at "
                 "conf/include-dup-main.yaml:7)");
    expect_error(errs, "conf/include-dup-child.yaml", "6:22",
                 "listeners[1].bind: conflicting bind: 127.0.0.1:80 is already bound by listener "
                 "'a' (at conf/include-dup-main.yaml:7)");
    free(errs);

    assert_int_equal(load("conf/include-cycle-a.yaml", &c, &errs), 1);
    expect_error(errs, "conf/include-cycle-b.yaml", "3:10",
                 "include: cannot include 'conf/include-cycle-a.yaml': include cycle");
    free(errs);
    assert_null(c);
}

/* Eight levels of includes are fine, nine are not. */
static void
test_include_depth(void **state)
{
    struct tdir t;
    struct conf *c;
    char name[32], text[64], path[256], main_path[256], *errs;

    tdir_init(&t);
    for (int i = 0; i <= 9; i++) {
        snprintf(name, sizeof(name), "d%d.yaml", i);
        if (i < 9)
            snprintf(text, sizeof(text), "include: d%d.yaml\n", i + 1);
        else
            snprintf(text, sizeof(text), "pools: {p9: {}}\n");
        tdir_put(&t, name, text, i == 0 ? main_path : path, sizeof(path));
    }
    assert_int_equal(load(main_path, &c, &errs), 1);
    snprintf(path, sizeof(path), "%s/d8.yaml", t.path);
    expect_error(errs, path, "1:10", "includes nest deeper than 8 levels");
    free(errs);

    snprintf(path, sizeof(path), "%s/d1.yaml", t.path);
    assert_int_equal(load(path, &c, &errs), 0); /* d1 .. d9: eight levels */
    free(errs);
    assert_int_equal(c->npools, 1);
    assert_string_equal(c->pools[0].name, "p9");
    conf_free(c);
    tdir_free(&t);
}

/* What an include names must have an end that comes without waiting: a FIFO
 * is refused before it is opened (opening it would block until a writer
 * came), and one load reads at most CONF_INCLUDE_MAX_FILES files and
 * CONF_MAX_BYTES. alarm() turns a hang into a failure. */
static void
test_include_unbounded(void **state)
{
    struct tdir t;
    struct conf *c;
    char path[256], fifo[256], big[256], sub[256], *errs;
    FILE *f;

    tdir_init(&t);
    snprintf(fifo, sizeof(fifo), "%s/fifo", t.path);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    tdir_put(&t, "main.yaml", "include: fifo\n", path, sizeof(path));
    alarm(10);
    assert_int_equal(load(path, &c, &errs), 1);
    expect_error(errs, path, "1:10", "cannot include");
    expect_error(errs, path, "1:10", "not a regular file");
    free(errs);

    /* A comment one byte over the budget, after a valid start. */
    tdir_put(&t, "big.yaml", "pools: {p: {}}\n", big, sizeof(big));
    f = fopen(big, "a");
    assert_non_null(f);
    assert_int_equal(fputc('#', f), '#');
    for (size_t i = strlen("pools: {p: {}}\n") + 1; i <= CONF_MAX_BYTES; i++)
        assert_int_equal(fputc('x', f), 'x');
    assert_int_equal(fclose(f), 0);
    tdir_put(&t, "main.yaml", "include: big.yaml\n", path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 1);
    expect_error(errs, path, "1:10", "larger than 16 MiB together");
    free(errs);
    assert_null(c);

    /* The main file and 255 more are fine; a pattern that matches one more
     * file than that is refused before any of them is opened. */
    snprintf(sub, sizeof(sub), "%s/d", t.path);
    assert_int_equal(mkdir(sub, 0700), 0);
    for (int i = 0; i < CONF_INCLUDE_MAX_FILES; i++) {
        char name[32];

        snprintf(name, sizeof(name), "d/%03d.yaml", i);
        tdir_put(&t, name, "{}\n", NULL, 0);
    }
    tdir_put(&t, "main.yaml", "include: d/[01]*.yaml\n", path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 0);
    free(errs);
    conf_free(c);
    tdir_put(&t, "main.yaml", "include: [d/*.yaml]\n", path, sizeof(path));
    assert_int_equal(load(path, &c, &errs), 1);
    expect_error(errs, path, "1:11", "matches 256 files; a configuration may read at most 256");
    free(errs);
    alarm(0);
    tdir_free(&t);
}

/* ---- the example and the reference ---- */

static void
test_example(void **state)
{
    struct conf *c = NULL;
    char *errs;
    int n = load(EXAMPLE_PATH, &c, &errs);
    const struct conf_pool *web, *api;
    const struct conf_scale *s;

    if (n != 0)
        print_error("%s", errs);
    free(errs);
    assert_int_equal(n, 0);
    assert_true(c->global.workers >= 1);
    assert_int_equal(c->global.max_connections, 100000);
    assert_true(c->admin.enabled);
    assert_ipv4(&c->admin.listen, "127.0.0.1", 9900);
    assert_string_equal(c->admin.token_file, "/etc/tern/admin.token");

    assert_int_equal(c->nlisteners, 1);
    assert_string_equal(c->listeners[0].name, "web");
    assert_ipv4(&c->listeners[0].bind, "0.0.0.0", 80);
    assert_int_equal(c->listeners[0].nroutes, 1);
    assert_string_equal(c->listeners[0].routes[0].host, "api.example.com");
    assert_string_equal(c->listeners[0].routes[0].path_prefix, "/v1/");
    assert_int_equal(c->listeners[0].routes[0].pool_index, conf_pool_index(c, "api"));
    assert_int_equal(c->listeners[0].pool_index, conf_pool_index(c, "web"));
    assert_true(c->listeners[0].tls.enabled);
    assert_string_equal(c->listeners[0].tls.certificates[0].cert, "/etc/tern/site.pem");

    assert_int_equal(c->npools, 2);
    web = &c->pools[conf_pool_index(c, "web")];
    api = &c->pools[conf_pool_index(c, "api")];
    assert_int_equal(web->balance, CONF_BALANCE_ROUNDROBIN);
    assert_int_equal(web->nservers, 1);
    assert_ipv4(&web->servers[0].address, "10.0.0.11", 8080);
    assert_int_equal(web->health.type, CONF_HC_HTTP);
    assert_string_equal(web->health.path, "/healthz");
    assert_int_equal(web->health.interval, 2000);
    assert_int_equal(web->health.timeout, 1000);
    assert_int_equal(web->health.rise, 2);
    assert_int_equal(web->health.fall, 3);
    assert_int_equal(web->timeout_connect, 3000);
    assert_int_equal(web->timeout_server, 30000);
    assert_int_equal(web->retries, 2);
    assert_int_equal(web->drain_timeout, 30000);
    assert_int_equal(api->balance, CONF_BALANCE_LEASTCONN);
    assert_int_equal(api->nservers, 0);

    assert_int_equal(c->nvrrp, 1);
    assert_string_equal(c->vrrp[0].name, "vi_web");
    assert_int_equal(c->vrrp[0].vrid, 51);
    assert_int_equal(c->vrrp[0].priority, 150);
    assert_int_equal(c->vrrp[0].advert_interval, 100);
    assert_int_equal(c->vrrp[0].virtual_ips[0].prefix, 24);
    assert_int_equal(c->vrrp[0].nunicast_peers, 1);
    assert_ipv4(&c->vrrp[0].unicast_peers[0], "10.0.0.2", 0);
    assert_string_equal(c->vrrp[0].track_pools[0], "web");
    assert_string_equal(c->vrrp[0].notify, "/etc/tern/notify.sh");

    assert_true(c->watch.present);
    assert_int_equal(c->watch.interval, 10000);
    assert_int_equal(c->watch.nalarms, 2);
    assert_string_equal(c->watch.alarms[0].name, "web-busy");
    assert_true(c->watch.alarms[0].has_above);
    assert_true(c->watch.alarms[0].above == 70);
    assert_int_equal(c->watch.alarms[0].evaluation_periods, 3);
    assert_int_equal(c->watch.alarms[0].datapoints_to_alarm, 2);
    assert_string_equal(c->watch.alarms[0].notify[0], "ops");
    assert_true(c->watch.alarms[1].has_below);
    assert_true(c->watch.alarms[1].below == 20);
    assert_int_equal(c->watch.nnotify, 1);
    assert_string_equal(c->watch.notify[0].email.server, "smtp.example.com:587");
    assert_int_equal(c->watch.notify[0].email.server_addr.salen, 0); /* a name: not resolved */
    assert_string_equal(c->watch.notify[0].email.starttls, "required");
    assert_string_equal(c->watch.notify[0].sms.to[0], "+821000000000");

    assert_int_equal(c->nscale, 2);
    s = &c->scale[0];
    assert_string_equal(s->pool, "web");
    assert_int_equal(s->min, 2);
    assert_int_equal(s->max, 10);
    assert_int_equal(s->desired, 2);
    assert_int_equal(s->provider, CONF_PROVIDER_LIBVIRT);
    assert_string_equal(s->libvirt_template, "web-master");
    assert_true(s->scale_out.present);
    assert_string_equal(s->scale_out.alarm, "web-busy");
    assert_int_equal(s->scale_out.count, 2);
    assert_int_equal(s->scale_out.cooldown, 120000);
    assert_int_equal(s->scale_in.count, 1);
    assert_int_equal(s->scale_in.cooldown, 300000);
    s = &c->scale[1];
    assert_int_equal(s->provider, CONF_PROVIDER_EXEC);
    assert_string_equal(s->exec_create, "/etc/tern/create.sh");
    assert_int_equal(s->exec_timeout, 60000);
    assert_true(s->has_target_tracking);
    assert_string_equal(s->tt_metric, "pool.api.requests_per_second");
    assert_true(s->tt_target == 500);
    conf_free(c);
}

static char *
read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t cap = 0;

    *len = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        char *p;

        if (*len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            p = realloc(buf, cap);
            assert_non_null(p);
            buf = p;
        }
        size_t got = fread(buf + *len, 1, cap - *len - 1, f);
        *len += got;
        if (got == 0)
            break;
    }
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void
test_reference_up_to_date(void **state)
{
    const char *update = getenv("TERN_UPDATE_REFERENCE");
    char *gen = NULL, *cur;
    size_t glen = 0, clen;
    FILE *m = open_memstream(&gen, &glen);

    assert_non_null(m);
    conf_write_reference(m);
    fclose(m);
    /* Every key of the tables is on the page. */
    assert_non_null(strstr(gen, "| `pools.<name>.servers[].weight` | integer, 0..256 | `1` |"));
    assert_non_null(strstr(gen, "| `listeners[].timeouts.client` | duration | `30s` |"));
    assert_non_null(strstr(gen, "`roundrobin`, `leastconn`, `random2`, `source_hash`, "
                                "`uri_hash`, `maglev`"));
    if (update != NULL && strcmp(update, "1") == 0) {
        FILE *f = fopen(REFERENCE_PATH, "w");

        assert_non_null(f);
        assert_int_equal(fwrite(gen, 1, glen, f), glen);
        assert_int_equal(fclose(f), 0);
        print_message("rewrote %s\n", REFERENCE_PATH);
    }
    cur = read_all(REFERENCE_PATH, &clen);
    if (cur == NULL || clen != glen || memcmp(cur, gen, glen) != 0)
        print_error("%s is out of date: run TERN_UPDATE_REFERENCE=1 test_conf in tests/unit\n",
                    REFERENCE_PATH);
    assert_non_null(cur);
    assert_int_equal(clen, glen);
    assert_memory_equal(cur, gen, glen);
    free(cur);
    free(gen);
}

int
main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_parse_duration),  cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_addr),      cmocka_unit_test(test_parse_cidr_ip),
        cmocka_unit_test(test_parse_numbers),   cmocka_unit_test(test_did_you_mean),
        cmocka_unit_test(test_arena),           cmocka_unit_test(test_schema_engine),
        cmocka_unit_test(test_schema_selftest), cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_defaults),        cmocka_unit_test(test_section_defaults),
        cmocka_unit_test(test_env_expansion),   cmocka_unit_test(test_flow_and_block),
        cmocka_unit_test(test_aliases),         cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_relative_paths),  cmocka_unit_test(test_plugin_sections),
        cmocka_unit_test(test_include_merge),   cmocka_unit_test(test_include_errors),
        cmocka_unit_test(test_include_depth),   cmocka_unit_test(test_include_unbounded),
        cmocka_unit_test(test_example),         cmocka_unit_test(test_reference_up_to_date),
    };
    enum { NFIXED = sizeof(fixed) / sizeof(fixed[0]) };
    struct CMUnitTest *tests = NULL;
    glob_t g = {0};
    int rc = 1;

    unsetenv("TERN_TEST_UNSET_VAR");
    if (glob("conf/bad/*.yaml", 0, NULL, &g) != 0 || g.gl_pathc < 50) {
        fprintf(stderr, "test_conf: conf/bad/*.yaml not found: run from tests/unit\n");
        goto out;
    }
    tests = calloc(NFIXED + g.gl_pathc, sizeof(*tests));
    if (tests == NULL)
        goto out;
    memcpy(tests, fixed, sizeof(fixed));
    for (size_t i = 0; i < g.gl_pathc; i++) {
        tests[NFIXED + i].name = g.gl_pathv[i] + strlen("conf/bad/");
        tests[NFIXED + i].test_func = run_bad_case;
        tests[NFIXED + i].initial_state = g.gl_pathv[i];
    }
    rc = _cmocka_run_group_tests("conf", tests, NFIXED + g.gl_pathc, NULL, NULL);
out:
    free(tests);
    globfree(&g);
    return rc;
}
