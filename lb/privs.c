/*
 * global.user: from root to an ordinary user with a few capabilities, using
 * the raw capget/capset system calls (linux/capability.h) rather than
 * libcap, for the three masks we set.
 *
 * The order matters. PR_SET_KEEPCAPS keeps the permitted set across the uid
 * change (otherwise leaving uid 0 clears every capability); supplementary
 * groups and the gid go first, since changing them needs CAP_SETGID, which
 * the final set no longer has; capset then trims the permitted set to what is
 * kept and raises it into the effective set (setuid cleared the effective
 * set). Last, we check that getting root back fails, as a guard against a
 * kernel or libc that silently did less than asked.
 *
 * glibc applies setresuid/setresgid/setgroups to every thread of the process,
 * but capabilities and the keep-caps flag belong to one thread: threads that
 * already exist would come out with no capabilities at all. The daemon
 * therefore calls this before it starts any thread.
 */
#include "lb/privs.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "conf/config.h"
#include "lb/check.h"
#include "lb/log.h"

#define CAPBIT(c) (UINT64_C(1) << (c))

static const struct {
    int cap;
    const char *name;
} cap_names[] = {
    {CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"},
    {CAP_NET_ADMIN, "CAP_NET_ADMIN"},
    {CAP_NET_RAW, "CAP_NET_RAW"},
};

static int
caps_get(uint64_t *permitted)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {{0}};
    if (syscall(SYS_capget, &h, d) < 0)
        return -errno;
    *permitted = (uint64_t)d[0].permitted | ((uint64_t)d[1].permitted << 32);
    return 0;
}

/* Permitted and effective become exactly keep; inheritable is emptied so a
 * program we run (notify scripts, exec providers) inherits nothing. */
static int
caps_set(uint64_t keep)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {{0}};
    d[0].permitted = d[0].effective = (uint32_t)keep;
    d[1].permitted = d[1].effective = (uint32_t)(keep >> 32);
    if (syscall(SYS_capset, &h, d) < 0)
        return -errno;
    return 0;
}

static void
caps_text(uint64_t mask, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++) {
        if (!(mask & CAPBIT(cap_names[i].cap)))
            continue;
        int k = snprintf(out + n, size - n, "%s%s", n ? " " : "", cap_names[i].name);
        if (k < 0 || (size_t)k >= size - n)
            break;
        n += (size_t)k;
    }
    if (n == 0)
        snprintf(out, size, "none");
}

/* Ports below this need CAP_NET_BIND_SERVICE (a sysctl, 1024 by default). */
static int
unprivileged_port_start(void)
{
    int port = 1024;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_unprivileged_port_start", "re");
    if (f) {
        if (fscanf(f, "%d", &port) != 1)
            port = 1024;
        fclose(f);
    }
    return port;
}

static int
addr_port(const struct conf_addr *a)
{
    if (a->sa.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
    if (a->sa.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
    return 0;
}

/* Counts this process's threads; capabilities set here reach only the
 * calling one. */
static int
thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Looks user up in the password database. Returns its entry, whose strings
 * live in *buf (the caller frees it), or NULL with the reason in why. */
static struct passwd *
user_lookup(const char *user, struct passwd *pwbuf, char **buf, char *why, size_t whysize)
{
    long bufsize = sysconf(_SC_GETPW_R_SIZE_MAX);
    if (bufsize < 1024)
        bufsize = 16384;
    *buf = malloc((size_t)bufsize);
    if (!*buf) {
        snprintf(why, whysize, "out of memory");
        return NULL;
    }
    struct passwd *pw = NULL;
    int e = getpwnam_r(user, pwbuf, *buf, (size_t)bufsize, &pw);
    if (!pw) {
        if (e)
            snprintf(why, whysize, "cannot look up user '%s': %s", user, strerror(e));
        else
            snprintf(why, whysize, "unknown user '%s'", user);
    }
    return pw;
}

int
lb_privs_check_user(const struct conf *c, char *why, size_t whysize)
{
    const char *user = c->global.user;
    if (!user || !*user)
        return 0;
    char *buf = NULL;
    struct passwd pwbuf;
    int rc = user_lookup(user, &pwbuf, &buf, why, whysize) ? 0 : -1;
    free(buf);
    return rc;
}

int
lb_privs_drop(const struct conf *c)
{
    const char *user = c->global.user;
    if (!user || !*user)
        return 0;

    char *buf = NULL, why[512];
    struct passwd pwbuf, *pw = user_lookup(user, &pwbuf, &buf, why, sizeof(why));
    if (!pw) {
        lb_err("global.user: %s", why);
        free(buf);
        return -1;
    }
    int e, rc = -1;
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;

    if (geteuid() != 0) {
        if (geteuid() == uid)
            lb_info("global.user: already running as %s", user);
        else
            lb_warn("global.user is %s but tern runs as uid %ld, not root: staying uid %ld", user,
                    (long)geteuid(), (long)geteuid());
        rc = 0;
        goto out;
    }
    if (uid == 0) {
        lb_info("global.user: %s is uid 0: staying root with every capability", user);
        rc = 0;
        goto out;
    }

    int threads = thread_count();
    if (threads > 1)
        lb_warn("global.user: %d threads already run; only the calling one keeps capabilities",
                threads);

    /* VRRP needs raw sockets and address changes for the whole run; the admin
     * listener is bound after this point, so it needs the right to a low
     * port too when it asks for one. Proxy listeners are already bound. */
    uint64_t want = CAPBIT(CAP_NET_ADMIN) | CAPBIT(CAP_NET_RAW);
    if (c->admin.enabled) {
        int port = addr_port(&c->admin.listen);
        if (port > 0 && port < unprivileged_port_start())
            want |= CAPBIT(CAP_NET_BIND_SERVICE);
    }
    /* Root may run with a reduced bounding set (systemd's
     * CapabilityBoundingSet=): keep what we have of what we want. */
    uint64_t have = 0;
    if ((e = caps_get(&have)) < 0) {
        lb_err("global.user: capget: %s", strerror(-e));
        goto out;
    }
    uint64_t keep = want & have;
    char text[128];
    if (want & ~have) {
        caps_text(want & ~have, text, sizeof(text));
        lb_warn("global.user: not in the permitted set, so not kept: %s", text);
    }

    if (prctl(PR_SET_KEEPCAPS, 1L, 0L, 0L, 0L) < 0) {
        lb_err("global.user: prctl(PR_SET_KEEPCAPS): %s", strerror(errno));
        goto out;
    }
    if (initgroups(pw->pw_name, gid) < 0) {
        lb_err("global.user: setting the groups of %s: %s", user, strerror(errno));
        goto out;
    }
    if (setresgid(gid, gid, gid) < 0) {
        lb_err("global.user: setresgid(%ld): %s", (long)gid, strerror(errno));
        goto out;
    }
    if (setresuid(uid, uid, uid) < 0) {
        lb_err("global.user: setresuid(%ld): %s", (long)uid, strerror(errno));
        goto out;
    }
    if ((e = caps_set(keep)) < 0) {
        lb_err("global.user: capset: %s", strerror(-e));
        goto out;
    }
    prctl(PR_SET_KEEPCAPS, 0L, 0L, 0L, 0L);
    /* Ambient capabilities (systemd AmbientCapabilities=) would otherwise pass
     * to the programs we run; EINVAL only means a kernel older than 4.3. */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0L, 0L, 0L) < 0 && errno != EINVAL) {
        lb_err("global.user: clearing ambient capabilities: %s", strerror(errno));
        goto out;
    }
    if (setuid(0) == 0 || seteuid(0) == 0 || getuid() != uid || geteuid() != uid ||
        getgid() != gid || getegid() != gid) {
        lb_err("global.user: root could be regained after switching to %s; refusing to run", user);
        goto out;
    }

    caps_text(keep, text, sizeof(text));
    lb_info("switched to user %s (uid %ld, gid %ld); capabilities kept: %s", user, (long)uid,
            (long)gid, text);
    rc = 0;
out:
    free(buf);
    return rc;
}
