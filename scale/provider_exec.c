/*
 * The exec provider's runner: fork/exec of a program of the operator's on a
 * job-pool thread, with a timeout.
 *
 * create runs the `create` program with TERN_ACTION=create, TERN_GROUP,
 * TERN_POOL and TERN_SERVER; its last line of output is the new server's
 * host:port, with a numeric host (a name is refused: see refuse_name()).
 * destroy runs `destroy` with TERN_ACTION=destroy and
 * TERN_ADDRESS too. list runs the `list` program with TERN_ACTION=list and
 * no TERN_SERVER; it prints "name host:port" lines for the servers that
 * exist, optionally with a third word, the server's state: "running" (the
 * same as none) or any other word (stopped, paused ...) for one that exists
 * and does not run, which the group replaces; host:port may be "-" for a
 * server without an address yet (group_reconcile.c has the details).
 * Without a `list` program nothing is listed: the group knows only the
 * servers it made itself, and adopts none after a restart. destroy is never
 * run for anything but a destroy: DESIGN.md gives it TERN_SERVER and
 * TERN_ADDRESS, and a script written to that contract (rm -rf
 * /vms/$TERN_SERVER) must never see them empty. destroy must also work on
 * a server that is stopped.
 *
 * The program runs as `/bin/sh -c <command>` in a process group of its own,
 * with the daemon's environment plus the TERN_* variables the group sets
 * (TERN_ACTION, TERN_GROUP, TERN_POOL, TERN_SERVER, TERN_ADDRESS). Its
 * standard output is collected (up to 64 KiB) until it exits; a server it
 * starts in the background may keep the pipe open, so reading stops when the
 * program itself has exited. Past the timeout the whole process group gets
 * SIGKILL and the run has failed.
 *
 * The daemon's loop reaps every child it gets a SIGCHLD for (libev's child
 * watchers call waitpid(-1)), which would steal the program's exit status.
 * So the program is a grandchild: a helper process forks it, sends its PID
 * and then its wait status through a pipe of its own, and exits; whoever
 * reaps the helper loses nothing. Only async-signal-safe calls happen in
 * the helper and the program before exec(); the environment is built
 * before.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scale/scale.h"

extern char **environ;

#define OUT_MAX (64 * 1024)

static double
mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* environ without the TERN_* names that env sets, then env. */
static char **
build_env(char *const *env)
{
    size_t n = 0, k = 0, m = 0;
    char **out;

    while (environ != NULL && environ[n] != NULL)
        n++;
    while (env[m] != NULL)
        m++;
    out = calloc(n + m + 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;

        for (size_t j = 0; j < m && !dup; j++) {
            size_t len = strcspn(env[j], "=") + 1;

            dup = strncmp(environ[i], env[j], len) == 0;
        }
        if (!dup)
            out[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++)
        out[k++] = env[j];
    return out;
}

static void
drain_pipe(int fd, char *buf, size_t *len)
{
    for (;;) {
        ssize_t r;

        if (*len >= OUT_MAX) {
            char sink[4096];

            r = read(fd, sink, sizeof(sink));
        } else {
            r = read(fd, buf + *len, OUT_MAX - *len);
            if (r > 0)
                *len += (size_t)r;
        }
        if (r <= 0)
            return;
    }
}

/* The helper: runs in a fork of a job thread, so async-signal-safe calls only. */
static void
helper(const char *cmd, char **envp, int out, int st)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    int status = 0;
    pid_t pid = vfork();

    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

        setpgid(0, 0);
        if (null >= 0)
            dup2(null, 0);
        dup2(out, 1);
        execve("/bin/sh", argv, envp);
        _exit(127);
    }
    if (pid < 0)
        _exit(126);
    setpgid(pid, pid);
    if (write(st, &pid, sizeof(pid)) != sizeof(pid))
        _exit(125);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            _exit(124);
    if (write(st, &status, sizeof(status)) != sizeof(status))
        _exit(123);
    _exit(0);
}

/* Whether fd became readable before deadline (an error counts as readable:
 * the read() that follows reports it). */
static bool
readable_by(int fd, double deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        double left = deadline - mono();
        int r;

        if (left <= 0)
            return false;
        r = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (r > 0 || (r < 0 && errno != EINTR))
            return true;
    }
}

static bool
read_all(int fd, void *buf, size_t len)
{
    ssize_t r;

    while ((r = read(fd, buf, len)) < 0 && errno == EINTR)
        ;
    return r == (ssize_t)len;
}

int
scale_exec_run(const char *cmd, char *const *env, uint64_t timeout_ms, char **out, char *err,
               size_t errlen)
{
    char *buf = malloc(OUT_MAX + 1), **envp = build_env(env);
    size_t len = 0;
    int fds[2] = {-1, -1}, st[2] = {-1, -1}, status = 0, rc = -1;
    double deadline = mono() + (double)timeout_ms / 1000.0;
    bool exited = false, timed_out = false;
    pid_t helper_pid = -1, pid = -1;

    *out = NULL;
    err[0] = '\0';
    if (buf == NULL || envp == NULL || pipe2(fds, O_CLOEXEC) < 0 || pipe2(st, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "cannot run: %s", strerror(errno ? errno : ENOMEM));
        goto out;
    }
    helper_pid = fork();
    if (helper_pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto out;
    }
    if (helper_pid == 0) {
        close(st[0]);
        helper(cmd, envp, fds[1], st[1]);
    }
    close(fds[1]);
    fds[1] = -1;
    close(st[1]);
    st[1] = -1;
    /* The helper is a fork of a threaded process: should it never get as far
     * as starting the program, the run still ends at its deadline. */
    if (!readable_by(st[0], deadline)) {
        kill(helper_pid, SIGKILL);
        snprintf(err, errlen, "timed out after %llu ms before the program started, killed",
                 (unsigned long long)timeout_ms);
        goto out;
    }
    if (!read_all(st[0], &pid, sizeof(pid))) {
        snprintf(err, errlen, "cannot start /bin/sh");
        goto out;
    }
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    while (!exited) {
        struct pollfd pfd[2] = {{.fd = fds[0], .events = POLLIN}, {.fd = st[0], .events = POLLIN}};
        double left = deadline - mono();

        if (left <= 0) {
            timed_out = true;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            break;
        }
        if (poll(pfd, 2, left > 0.1 ? 100 : (int)(left * 1000) + 1) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents != 0)
            drain_pipe(fds[0], buf, &len);
        /* The helper reports when the program itself exits, even when a
         * child it left behind holds the output pipe. */
        if (pfd[1].revents != 0) {
            if (!read_all(st[0], &status, sizeof(status))) {
                snprintf(err, errlen, "lost the program's exit status");
                goto out;
            }
            exited = true;
        }
    }
    drain_pipe(fds[0], buf, &len);
    buf[len] = '\0';
    *out = buf;
    buf = NULL;
    if (timed_out)
        snprintf(err, errlen, "timed out after %llu ms, killed", (unsigned long long)timeout_ms);
    else if (!exited)
        snprintf(err, errlen, "poll: %s", strerror(errno));
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        rc = 0;
    else if (WIFEXITED(status))
        snprintf(err, errlen, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(err, errlen, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(err, errlen, "ended abnormally");
out:
    if (helper_pid > 0)
        waitpid(helper_pid, NULL, 0); /* or the daemon's loop reaped it: ECHILD */
    for (int i = 0; i < 2; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        if (st[i] >= 0)
            close(st[i]);
    }
    free(buf);
    free(envp);
    return rc;
}

/* ---- the provider ---- */

struct exec_prov {
    char *create, *destroy, *list; /* list "": cannot list */
    uint64_t timeout_ms;
};

static void
exec_free(void *p)
{
    struct exec_prov *e = p;

    if (e == NULL)
        return;
    free(e->create);
    free(e->destroy);
    free(e->list);
    free(e);
}

void *
scale_exec_new(const char *create, const char *destroy, const char *list, uint64_t timeout_ms)
{
    struct exec_prov *e = calloc(1, sizeof(*e));

    if (e == NULL)
        return NULL;
    e->create = strdup(create ? create : "");
    e->destroy = strdup(destroy ? destroy : "");
    e->list = strdup(list ? list : "");
    e->timeout_ms = timeout_ms;
    if (e->create == NULL || e->destroy == NULL || e->list == NULL) {
        exec_free(e);
        return NULL;
    }
    return e;
}

static int
run(const struct exec_prov *e, const char *cmd, const char *action, const char *group,
    const char *server, const char *address, char **out, char *err, size_t errlen)
{
    char e_action[64], e_group[256], e_pool[256], e_server[256], e_addr[256];
    char *env[6] = {e_action, e_group, e_pool, NULL, NULL, NULL};
    int k = 3;

    if (cmd[0] == '\0') {
        snprintf(err, errlen, "no program for %s", action);
        *out = NULL;
        return -1;
    }
    snprintf(e_action, sizeof(e_action), "TERN_ACTION=%s", action);
    snprintf(e_group, sizeof(e_group), "TERN_GROUP=%s", group);
    snprintf(e_pool, sizeof(e_pool), "TERN_POOL=%s", group); /* a group is named by its pool */
    if (server != NULL) {
        snprintf(e_server, sizeof(e_server), "TERN_SERVER=%s", server);
        env[k++] = e_server;
    }
    if (address != NULL) {
        snprintf(e_addr, sizeof(e_addr), "TERN_ADDRESS=%s", address);
        env[k++] = e_addr;
    }
    return scale_exec_run(cmd, env, e->timeout_ms, out, err, errlen);
}

/* The last non-empty line of out, trimmed, into buf. */
static void
last_line(const char *out, char *buf, size_t len)
{
    const char *end = out + strlen(out), *start;

    while (end > out && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    start = end;
    while (start > out && start[-1] != '\n')
        start--;
    while (start < end && (*start == ' ' || *start == '\t'))
        start++;
    snprintf(buf, len, "%.*s", (int)(end - start), start);
}

/* Whether host is a name rather than an address tern takes as it is (the
 * numeric forms of conf_parse_addr: IPv4, IPv6, localhost, "*", ""). */
static bool
names_a_host(const char *host)
{
    struct in6_addr a;

    return host[0] != '\0' && strcmp(host, "*") != 0 && strcmp(host, "localhost") != 0 &&
           inet_pton(AF_INET, host, &a) != 1 && inet_pton(AF_INET6, host, &a) != 1;
}

/*
 * create printed a host name. A server added at runtime is one fixed
 * address: tern resolves names only when it loads its configuration file,
 * and a name resolved here would be shown, and handed to destroy, as an
 * address the script never printed. So the launch fails (and backs off, as
 * any failed create) with a message that says what to print. The server
 * exists by now: destroy it, with the address as printed, rather than leave
 * it running unknown to the group.
 */
static void
refuse_name(const struct exec_prov *e, const char *group, const char *server, const char *line,
            char *err, size_t errlen)
{
    char derr[200] = "";
    char *out = NULL;
    int r = run(e, e->destroy, "destroy", group, server, line, &out, derr, sizeof(derr));

    free(out);
    snprintf(err, errlen,
             "exited 0 but printed a host name, \"%.100s\": print the server's numeric IP "
             "address (tern resolves names only in its configuration file); destroy %s%s",
             line, r == 0 ? "ran" : "failed: ", r == 0 ? "" : derr);
}

static int
exec_create(void *p, const char *group, const char *server, char *address, size_t addrlen,
            char *err, size_t errlen)
{
    const struct exec_prov *e = p;
    char *out = NULL, line[256], host[256], port[16];
    int rc = run(e, e->create, "create", group, server, NULL, &out, err, errlen);

    if (rc == 0) {
        last_line(out ? out : "", line, sizeof(line));
        if (scale_split_hostport(line, host, sizeof(host), port, sizeof(port)) < 0 ||
            atoi(port) <= 0 || atoi(port) > 65535) {
            snprintf(err, errlen, "exited 0 but its last line \"%.100s\" is no host:port", line);
            rc = -1;
        } else if (line[0] != '[' && names_a_host(host)) {
            refuse_name(e, group, server, line, err, errlen);
            rc = -1;
        } else {
            snprintf(address, addrlen, "%s", line);
        }
    }
    free(out);
    return rc;
}

static int
exec_destroy(void *p, const char *group, const char *server, const char *address, char *err,
             size_t errlen)
{
    const struct exec_prov *e = p;
    char *out = NULL;
    int rc = run(e, e->destroy, "destroy", group, server, address, &out, err, errlen);

    free(out);
    return rc;
}

static int
exec_list(void *p, const char *group, char **out, char *err, size_t errlen)
{
    const struct exec_prov *e = p;

    return run(e, e->list, "list", group, NULL, NULL, out, err, errlen);
}

static bool
exec_can_list(const void *p)
{
    const struct exec_prov *e = p;

    return e->list[0] != '\0';
}

const struct scale_provider_ops scale_exec_ops = {
    .name = "exec",
    .create = exec_create,
    .destroy = exec_destroy,
    .list = exec_list,
    .can_list = exec_can_list,
    .free = exec_free,
};
