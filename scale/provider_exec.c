/*
 * The exec provider's runner: fork/exec of a program of the operator's on a
 * job-pool thread, with a timeout.
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
