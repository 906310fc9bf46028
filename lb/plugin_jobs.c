/*
 * The job pool: where plugins make their blocking calls (libvirt, SMTP,
 * HTTP, fork/exec) so that the control loop never waits.
 *
 * A few threads take jobs from one queue under one mutex; a finished job
 * goes on a completion list and an ev_async wakes the control loop, which
 * runs the done callbacks there. Jobs are few and slow (a mail, a VM clone),
 * so a plain locked list is all the machinery needed. The threads block
 * every signal: signals belong to the control loop (lb/daemon.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "lb/log.h"
#include "lb/plugin_int.h"

static void *
worker(void *arg)
{
    struct lb_jobs *j = arg;

    pthread_mutex_lock(&j->mu);
    for (;;) {
        struct lb_job *job;
        bool run;

        while (j->queue == NULL && !j->stop)
            pthread_cond_wait(&j->work, &j->mu);
        if (j->queue == NULL)
            break;
        job = j->queue;
        j->queue = job->next;
        if (j->queue == NULL)
            j->queue_tail = NULL;
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
        pthread_cond_broadcast(&j->ended);
        ev_async_send(j->loop, &j->async);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
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
    complete(w->data);
}

int
lb_jobs_start(struct lb_jobs *j, struct ev_loop *loop)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    sigset_t all, old;
    int n = cpus >= 8 ? 4 : cpus >= 4 ? 3 : 2;

    j->loop = loop;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->work, NULL);
    pthread_cond_init(&j->ended, NULL);
    ev_async_init(&j->async, on_async);
    j->async.data = j;
    ev_async_start(loop, &j->async);
    /* The job threads must not take the daemon's signals. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&j->threads[i], NULL, worker, j) != 0)
            break;
        j->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (j->nthreads == 0) {
        ev_async_stop(loop, &j->async);
        return -EAGAIN;
    }
    return 0;
}

void
lb_jobs_stop(struct lb_jobs *j)
{
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    pthread_cond_broadcast(&j->work);
    pthread_mutex_unlock(&j->mu);
    for (int i = 0; i < j->nthreads; i++)
        pthread_join(j->threads[i], NULL);
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
    owner->jobs++;
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
