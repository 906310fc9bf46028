/*
 * libFuzzer target for what a scaling group reads from its provider
 * (scale/): the output of the exec provider's create program (its last line
 * is the new server's host:port) and the "name host:port [state]" lines of
 * successive lists, which a group reconciles with what it holds
 * (scale/group_reconcile.c: adopt, replace the stopped, replace those
 * without an address).
 *
 * The group's files run on a host and a provider of this target's, on its
 * clock, as in tests/unit/test_scale_group.c: jobs run when the target says
 * and the provider's outputs are pieces of the input. A probe makes no
 * connection: it splits the address the way the real probe does and
 * answers as byte 0 says.
 *
 * Input: byte 0 chooses the group's settings (see SEL_*); the rest is split
 * at NUL bytes: first the create program's output, then one list per piece
 * (the last piece is listed again until the run ends).
 *
 * Invariants (abort() when broken): every name, address and activity the
 * group holds is a terminated string that fits its field; the names it
 * holds are distinct and end in an index it has claimed; at most one job
 * per server at a time; an address that reaches the pool splits into host
 * and port; the group's JSON view can be made at the end.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "scale/group_int.h"

/* last_line() is the exec provider's own: the file is compiled here so that
 * this target can reach it. */
#include "../../scale/provider_exec.c"

#define SEL_DESIRED 0x03   /* desired, 0 to 3 */
#define SEL_PROBES_OK 0x04 /* probes answer */
#define SEL_IDLE 0x08      /* every third tick may not act (a VRRP backup) */
#define SEL_REMOVE 0x30    /* remove_first */
#define SEL_CREATE_FAIL 0x40
#define SEL_LIST_FAIL 0x80 /* every third list fails */

#define MAX_PIECES 32

static double clock_s;
static const char *pieces[MAX_PIECES];
static size_t npieces, nlists;
static uint8_t sel;

struct queued {
    tern_job_run_cb run;
    tern_job_done_cb done;
    void *arg;
};

static struct queued queue[256];
static size_t nqueue;

/* The pool, as the host would hold it: names added and not drained. */
static char pool[64][SCALE_NAME_MAX];
static size_t npool;

static void
fake_log(const struct tern_host *h, enum tern_log_level level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    (void)h;
    (void)level;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
}

static double
fake_monotonic(const struct tern_host *h)
{
    (void)h;
    return clock_s;
}

static double
fake_now(const struct tern_host *h)
{
    (void)h;
    return 1.7e9 + clock_s;
}

static int
fake_submit(const struct tern_host *h, tern_job_run_cb run, tern_job_done_cb done, void *arg)
{
    (void)h;
    if (nqueue == sizeof(queue) / sizeof(queue[0]))
        return -1;
    queue[nqueue++] = (struct queued){run, done, arg};
    return 0;
}

static void
fake_publish(const struct tern_host *h, const struct tern_event *ev)
{
    (void)h;
    check(ev->state != NULL);
}

static int
fake_pool_servers(const struct tern_host *h, const char *p, tern_server_cb cb, void *arg)
{
    (void)h;
    (void)p;
    for (size_t i = 0; i < npool; i++) {
        struct tern_server_info info = {.name = pool[i],
                                        .address = "127.0.0.1:1",
                                        .state = "ready",
                                        .healthy = true,
                                        .dynamic = true,
                                        .weight = 1};
        cb(arg, &info);
    }
    return 0;
}

static int
fake_server_add(const struct tern_host *h, const char *p, const char *name, const char *address,
                uint32_t weight, const char **why)
{
    char hostpart[SCALE_ADDR_MAX], port[16];

    (void)h;
    (void)p;
    (void)weight;
    check(fits(name, SCALE_NAME_MAX) && name[0] != '\0');
    check(fits(address, SCALE_ADDR_MAX));
    /* Only an address the probe could split gets this far. */
    check(scale_split_hostport(address, hostpart, sizeof(hostpart), port, sizeof(port)) == 0);
    for (size_t i = 0; i < npool; i++)
        if (strcmp(pool[i], name) == 0)
            return -EEXIST;
    if (npool == sizeof(pool) / sizeof(pool[0])) {
        *why = "pool full";
        return -ENOSPC;
    }
    snprintf(pool[npool++], SCALE_NAME_MAX, "%s", name);
    return 0;
}

static int
fake_server_drain(const struct tern_host *h, const char *p, const char *name, bool remove,
                  const char **why)
{
    (void)h;
    (void)p;
    (void)remove;
    (void)why;
    for (size_t i = 0; i < npool; i++) {
        if (strcmp(pool[i], name) == 0) {
            memmove(pool[i], pool[i + 1], (npool - i - 1) * sizeof(pool[0]));
            npool--;
            return 0;
        }
    }
    return -ENOENT;
}

static const struct tern_host host = {
    .log = fake_log,
    .now = fake_now,
    .monotonic = fake_monotonic,
    .job_submit = fake_submit,
    .publish = fake_publish,
    .pool_servers = fake_pool_servers,
    .server_add = fake_server_add,
    .server_drain = fake_server_drain,
};

/* The exec provider's create, from the point where its program exited 0
 * with pieces[0] on its standard output: exec_create in
 * scale/provider_exec.c, step for step, as it also runs the program (and
 * destroy, for a name). Keep the two in step until that parsing is a
 * function of its own. */
static int
prov_create(void *p, const char *group, const char *server, char *address, size_t addrlen,
            char *err, size_t errlen)
{
    char line[256], h[256], port[16];

    (void)p;
    (void)group;
    (void)server;
    if (sel & SEL_CREATE_FAIL) {
        snprintf(err, errlen, "exited 1");
        return -1;
    }
    last_line(pieces[0], line, sizeof(line));
    check(fits(line, sizeof(line)));
    if (scale_split_hostport(line, h, sizeof(h), port, sizeof(port)) < 0 || atoi(port) <= 0 ||
        atoi(port) > 65535) {
        snprintf(err, errlen, "exited 0 but its last line \"%.100s\" is no host:port", line);
        return -1;
    }
    if (line[0] != '[' && names_a_host(h)) {
        /* refuse_name(), without running destroy. */
        snprintf(err, errlen, "exited 0 but printed a host name, \"%.100s\"", line);
        return -1;
    }
    snprintf(address, addrlen, "%s", line);
    return 0;
}

static int
prov_destroy(void *p, const char *group, const char *server, const char *address, char *err,
             size_t errlen)
{
    (void)p;
    (void)group;
    (void)address;
    (void)err;
    (void)errlen;
    check(fits(server, SCALE_NAME_MAX));
    return 0;
}

static int
prov_list(void *p, const char *group, char **out, char *err, size_t errlen)
{
    size_t k = 1 + nlists < npieces ? 1 + nlists : npieces - 1;

    (void)p;
    (void)group;
    if ((sel & SEL_LIST_FAIL) && nlists++ % 3 == 2) {
        snprintf(err, errlen, "exited 2");
        return -1;
    }
    if (!(sel & SEL_LIST_FAIL))
        nlists++;
    *out = strdup(pieces[k]);
    return *out ? 0 : -1;
}

static void
prov_free(void *p)
{
    (void)p;
}

static const struct scale_provider_ops fake_ops = {
    .name = "fuzz",
    .create = prov_create,
    .destroy = prov_destroy,
    .list = prov_list,
    .free = prov_free,
};

static void
run_jobs(void)
{
    while (nqueue > 0) {
        struct queued q = queue[0];
        struct job *j = q.arg;

        memmove(&queue[0], &queue[1], (nqueue - 1) * sizeof(queue[0]));
        nqueue--;
        if (j->kind == JOB_PROBE) {
            char h[SCALE_ADDR_MAX], port[16];
            bool ok = scale_split_hostport(j->address, h, sizeof(h), port, sizeof(port)) == 0;

            j->rc = ok && (sel & SEL_PROBES_OK) ? 0 : -1;
            snprintf(j->err, sizeof(j->err), "refused");
            q.done(j, NULL, 0);
        } else {
            q.done(j, q.run(j), 0);
        }
    }
}

static void
check_group(struct scale_group *g)
{
    char prefix[SCALE_NAME_MAX];
    int pl = snprintf(prefix, sizeof(prefix), "%s-tern-", g->cfg.pool);

    check(g->nacts <= SCALE_ACTIVITIES);
    for (size_t i = 0; i < g->nsrv; i++) {
        const struct scale_server *s = &g->srv[i];

        check(fits(s->name, sizeof(s->name)) && fits(s->address, sizeof(s->address)));
        check(strncmp(s->name, prefix, (size_t)pl) == 0);
        check(s->index >= 1 && s->index < g->next_index);
        for (size_t k = i + 1; k < g->nsrv; k++)
            check(strcmp(s->name, g->srv[k].name) != 0);
    }
    for (size_t i = 0; i < g->naddrless; i++)
        check(fits(g->addrless[i].name, sizeof(g->addrless[i].name)));
    for (size_t k = 0; k < g->nacts; k++) {
        const struct scale_activity *a = &g->acts[(g->head + k) % SCALE_ACTIVITIES];

        check(fits(a->action, sizeof(a->action)) && fits(a->server, sizeof(a->server)) &&
              fits(a->reason, sizeof(a->reason)) && fits(a->result, sizeof(a->result)));
    }
    /* No two jobs about one server: the busy flag is set per job. */
    for (size_t i = 0; i < nqueue; i++) {
        const struct job *a = queue[i].arg;

        for (size_t k = i + 1; k < nqueue && a->kind != JOB_LIST; k++) {
            const struct job *b = queue[k].arg;

            check(b->kind == JOB_LIST || strcmp(a->name, b->name) != 0);
        }
    }
}

/* The API's view of the group; once per run, as it is the slowest part. */
static void
check_json(const struct scale_group *g)
{
    json_t *j = scale_group_json(g);
    check(j != NULL);
    char *s = json_dumps(j, JSON_COMPACT);
    check(s != NULL);
    free(s);
    json_decref(j);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;

    /* A NUL-terminated copy, cut into pieces in place. */
    char *text = malloc(size);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    sel = data[0];
    npieces = 0;
    for (char *p = text; npieces < MAX_PIECES && p <= text + size - 1; p += strlen(p) + 1)
        pieces[npieces++] = p;
    if (npieces < 2)
        pieces[npieces++] = "";

    struct scale sc = {.h = &host};
    struct scale_group_cfg cfg = {
        .pool = "web",
        .desired = sel & SEL_DESIRED,
        .pol = {.min = 0, .max = 3, .add = 1, .remove = 1},
        .provider = SCALE_PROV_EXEC,
        .create = "false",
        .destroy = "false",
        .list = "false",
        .timeout_ms = 3000,
        .relist_ms = 1000,
        .grace_ms = 4000,
        .remove_first = (enum scale_remove_first)((sel & SEL_REMOVE) >> 4) % 3,
    };

    clock_s = 0;
    nlists = 0;
    nqueue = 0;
    npool = 0;
    struct scale_group *g = scale_group_new(&sc, &cfg);
    check(g != NULL);
    g->prov.ops->free(g->prov.p);
    g->prov = (struct scale_provider){&fake_ops, NULL};

    /* Every list read, then long enough for allowances and graces to run
     * out on the last one. */
    unsigned ticks = 2 * (unsigned)npieces + 24;
    for (unsigned t = 1; t <= ticks; t++) {
        clock_s += SCALE_TICK;
        scale_group_tick(g, !(sel & SEL_IDLE) || t % 3 != 0);
        check_group(g);
        run_jobs();
        check_group(g);
    }
    check_json(g);
    scale_group_free(g);
    free(text);
    return 0;
}
