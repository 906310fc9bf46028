/*
 * The job pool: where plugins make their blocking calls (libvirt, SMTP,
 * HTTP, fork/exec) so that the control loop never waits.
 *
 * Threads take jobs from one queue under one mutex; a finished job goes on
 * a completion list and an ev_async wakes the control loop, which runs the
 * done callbacks there. Jobs are few and slow (a mail, a VM clone), so a
 * plain locked list is all the machinery needed. The threads block every
 * signal: signals belong to the control loop (lb/daemon.c).
 *
 * The pool grows: a job queued while every thread is busy gets a new thread
 * (up to LB_JOBS_MAX), so two mails hanging on a dead SMTP server for their
 * timeout do not hold up a scale-out's launch behind them. Threads beyond
 * the first few exit after idling; only the control thread creates and
 * joins threads (submit, the async callback, stop), so an exited thread is
 * joined there and no thread is ever detached.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lb/log.h"
#include "lb/plugin_int.h"

static struct timespec
deadline_in(int ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

/* Waits under mu for a job or stop. Returns false when this thread is one
 * too many and has idled out: it then has left the pool. */
static bool
wait_for_work(struct lb_jobs_thread *t)
{
    struct lb_jobs *j = t->j;
    struct timespec deadline = deadline_in(j->idle_ms);

    while (j->queue == NULL && !j->stop) {
        int rc;

        if (j->nthreads <= j->base) {
            pthread_cond_wait(&j->work, &j->mu);
            /* Idle time counts from when the pool grew past base. */
            deadline = deadline_in(j->idle_ms);
            continue;
        }
        rc = pthread_cond_timedwait(&j->work, &j->mu, &deadline);
        if (rc == ETIMEDOUT && j->queue == NULL && !j->stop && j->nthreads > j->base) {
            j->nidle--;
            j->nthreads--;
            t->state = LB_JOBS_EXITED;
            /* The control thread joins it (reap). */
            ev_async_send(j->loop, &j->async);
            return false;
        }
    }
    return true;
}

static void *
worker(void *arg)
{
    struct lb_jobs_thread *t = arg;
    struct lb_jobs *j = t->j;

    pthread_setname_np(pthread_self(), "tern-job");
    pthread_mutex_lock(&j->mu);
    for (;;) {
        struct lb_job *job;
        bool run;

        if (!wait_for_work(t))
            break;
        if (j->queue == NULL) {
            j->nidle--;
            break;
        }
        job = j->queue;
        j->queue = job->next;
        if (j->queue == NULL)
            j->queue_tail = NULL;
        j->nqueued--;
        j->nidle--;
        /* Its plugin is being unloaded (plugin_host.c sets running under
         * this lock): the job is dropped, as lb_jobs_drain_owner would. */
        run = job->owner->running;
        pthread_mutex_unlock(&j->mu);

        if (run) {
            job->result = job->run(job->arg);
            job->status = 0;
        } else {
            job->result = NULL;
            job->status = -ECANCELED;
        }

        pthread_mutex_lock(&j->mu);
        job->next = NULL;
        if (j->done_tail)
            j->done_tail->next = job;
        else
            j->done = job;
        j->done_tail = job;
        j->nidle++;
        pthread_cond_broadcast(&j->ended);
        ev_async_send(j->loop, &j->async);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* Joins the threads that idled out. Under mu, control thread: an EXITED
 * thread set that state under mu and takes it no more, so it cannot wait
 * for us while we wait for it. */
static void
reap(struct lb_jobs *j)
{
    for (int i = 0; i < LB_JOBS_MAX; i++) {
        if (j->threads[i].state == LB_JOBS_EXITED) {
            pthread_join(j->threads[i].tid, NULL);
            j->threads[i].state = LB_JOBS_FREE;
        }
    }
}

/* Adds a thread. Under mu, control thread. */
static int
spawn(struct lb_jobs *j)
{
    struct lb_jobs_thread *t = NULL;
    sigset_t all, old;
    int rc;

    reap(j);
    for (int i = 0; i < LB_JOBS_MAX && t == NULL; i++)
        if (j->threads[i].state == LB_JOBS_FREE)
            t = &j->threads[i];
    if (t == NULL)
        return -EAGAIN;
    t->j = j;
    /* The job threads must not take the daemon's signals: they inherit
     * this mask. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&t->tid, NULL, worker, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -rc;
    t->state = LB_JOBS_LIVE;
    j->nthreads++;
    /* Idle from now: a job queued before it first waits is its own. */
    j->nidle++;
    return 0;
}

/* Runs the done callbacks of finished jobs. Control thread. */
static void
complete(struct lb_jobs *j)
{
    struct lb_job *list;

    pthread_mutex_lock(&j->mu);
    list = j->done;
    j->done = j->done_tail = NULL;
    pthread_mutex_unlock(&j->mu);
    while (list != NULL) {
        struct lb_job *job = list;

        list = job->next;
        job->done(job->arg, job->result, job->status);
        pthread_mutex_lock(&j->mu);
        job->owner->jobs--;
        pthread_mutex_unlock(&j->mu);
        free(job);
    }
}

static void
on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    struct lb_jobs *j = w->data;

    complete(j);
    pthread_mutex_lock(&j->mu);
    reap(j);
    pthread_mutex_unlock(&j->mu);
}

int
lb_jobs_start(struct lb_jobs *j, struct ev_loop *loop)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    pthread_condattr_t attr;

    j->loop = loop;
    /* Kept however idle, so the common case never waits for a thread. */
    j->base = cpus >= 8 ? 4 : cpus >= 4 ? 3 : 2;
    j->idle_ms = LB_JOBS_IDLE_MS;
    pthread_mutex_init(&j->mu, NULL);
    /* Idle deadlines must not move with the wall clock. */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&j->work, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&j->ended, NULL);
    ev_async_init(&j->async, on_async);
    j->async.data = j;
    ev_async_start(loop, &j->async);
    pthread_mutex_lock(&j->mu);
    for (int i = 0; i < j->base; i++)
        if (spawn(j) < 0)
            break;
    pthread_mutex_unlock(&j->mu);
    if (j->nthreads == 0) {
        ev_async_stop(loop, &j->async);
        pthread_cond_destroy(&j->work);
        pthread_cond_destroy(&j->ended);
        pthread_mutex_destroy(&j->mu);
        return -EAGAIN;
    }
    return 0;
}

void
lb_jobs_stop(struct lb_jobs *j)
{
    pthread_t tids[LB_JOBS_MAX];
    int n = 0;

    /* Threads are created only by the control thread, which is here: the
     * set taken under the lock is all there will be. Those running finish
     * the queue first (each job is bounded by its own timeout). */
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    pthread_cond_broadcast(&j->work);
    for (int i = 0; i < LB_JOBS_MAX; i++) {
        if (j->threads[i].state != LB_JOBS_FREE)
            tids[n++] = j->threads[i].tid;
        j->threads[i].state = LB_JOBS_FREE;
    }
    j->nthreads = 0;
    pthread_mutex_unlock(&j->mu);
    for (int i = 0; i < n; i++)
        pthread_join(tids[i], NULL);
    complete(j);
    ev_async_stop(j->loop, &j->async);
    pthread_cond_destroy(&j->work);
    pthread_cond_destroy(&j->ended);
    pthread_mutex_destroy(&j->mu);
}

int
lb_jobs_submit(struct lb_jobs *j, struct plugin *owner, tern_job_run_cb run, tern_job_done_cb done,
               void *arg)
{
    struct lb_job *job = calloc(1, sizeof(*job));

    if (job == NULL)
        return -ENOMEM;
    *job = (struct lb_job){.owner = owner, .run = run, .done = done, .arg = arg};
    pthread_mutex_lock(&j->mu);
    if (j->queue_tail)
        j->queue_tail->next = job;
    else
        j->queue = job;
    j->queue_tail = job;
    j->nqueued++;
    owner->jobs++;
    /* Every thread is busy, or those idle already have a job each. The
     * job waits in the queue when no thread can be added. */
    if (j->nqueued > j->nidle && j->nthreads < LB_JOBS_MAX) {
        int rc = spawn(j);

        if (rc < 0)
            lb_warn("plugins: job pool: cannot add a thread to its %d (%s); the job waits",
                    j->nthreads, strerror(-rc));
    }
    pthread_cond_signal(&j->work);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

void
lb_jobs_drain_owner(struct lb_jobs *j, struct plugin *owner)
{
    struct lb_job *dropped = NULL, **l;

    pthread_mutex_lock(&j->mu);
    j->queue_tail = NULL;
    for (l = &j->queue; *l != NULL;) {
        struct lb_job *job = *l;

        if (job->owner == owner) {
            *l = job->next;
            j->nqueued--;
            job->next = dropped;
            dropped = job;
        } else {
            j->queue_tail = job;
            l = &job->next;
        }
    }
    pthread_mutex_unlock(&j->mu);
    while (dropped != NULL) {
        struct lb_job *job = dropped;

        dropped = job->next;
        job->done(job->arg, NULL, -ECANCELED);
        pthread_mutex_lock(&j->mu);
        owner->jobs--;
        pthread_mutex_unlock(&j->mu);
        free(job);
    }
    /* Running ones: their code is in the module about to be closed. */
    for (;;) {
        unsigned pending;

        complete(j);
        pthread_mutex_lock(&j->mu);
        while (owner->jobs > 0 && j->done == NULL)
            pthread_cond_wait(&j->ended, &j->mu);
        pending = owner->jobs;
        pthread_mutex_unlock(&j->mu);
        if (pending == 0)
            break;
    }
}
