/*
 * Unit tests for the plugin job pool (lb/plugin_jobs.c), on a private libev
 * loop that stands for the control thread: blocking jobs beyond the first
 * few threads run at once (the pool grows), never more than LB_JOBS_MAX,
 * threads that idled out are joined and their slots reused, stop with jobs
 * running and queued finishes them all, and what the pool did before still
 * holds: done callbacks on the loop's thread, signals blocked in job threads,
 * queued jobs of an unloading plugin dropped with -ECANCELED.
 *
 * Jobs wait on conditions with bounded timeouts, so a pool that cannot run
 * them at once makes a test fail after a few seconds rather than hang.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* cmocka.h needs these three first; keep clang-format from sorting it up. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include "lb/plugin_int.h"

/* Generous: the machine is shared, and only a broken pool reaches them. */
#define WAIT_S 10

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running, peak; /* jobs inside run() now, and at most */
    int ran;           /* run() entered */
    int need;          /* barrier jobs: how many must be inside at once */
    bool gate;         /* gate jobs: may return */
    int done, cancelled;
    bool bad_thread, bad_mask;
    int missed; /* barrier jobs that timed out before all were in */
} st = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static pthread_t control;

static struct timespec
in_seconds(int s)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += s;
    return ts;
}

static void
reset(void)
{
    pthread_mutex_lock(&st.mu);
    st.running = st.peak = st.ran = st.need = st.done = st.cancelled = st.missed = 0;
    st.gate = st.bad_thread = st.bad_mask = false;
    pthread_mutex_unlock(&st.mu);
}

/* Under st.mu. */
static void
enter(void)
{
    sigset_t cur;

    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    if (!sigismember(&cur, SIGTERM) || !sigismember(&cur, SIGHUP) || !sigismember(&cur, SIGINT))
        st.bad_mask = true;
    st.ran++;
    if (++st.running > st.peak)
        st.peak = st.running;
    pthread_cond_broadcast(&st.cv);
}

/* Returns only when st.need jobs have entered: as none leaves before, they
 * were all inside at once (or on timeout, counted as missed). */
static void *
barrier_job(void *arg)
{
    struct timespec until = in_seconds(WAIT_S);
    int rc = 0;

    pthread_mutex_lock(&st.mu);
    enter();
    while (st.ran < st.need && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&st.cv, &st.mu, &until);
    if (st.ran < st.need)
        st.missed++;
    st.running--;
    pthread_mutex_unlock(&st.mu);
    return arg;
}

/* Returns when the test opens the gate (or on timeout). */
static void *
gate_job(void *arg)
{
    struct timespec until = in_seconds(3 * WAIT_S);
    int rc = 0;

    pthread_mutex_lock(&st.mu);
    enter();
    while (!st.gate && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&st.cv, &st.mu, &until);
    st.running--;
    pthread_mutex_unlock(&st.mu);
    return arg;
}

static void
done_cb(void *arg, void *result, int status)
{
    pthread_mutex_lock(&st.mu);
    if (!pthread_equal(pthread_self(), control))
        st.bad_thread = true;
    if (status == -ECANCELED)
        st.cancelled++;
    else if (status == 0 && result == arg)
        st.done++;
    pthread_mutex_unlock(&st.mu);
}

static void
open_gate(void)
{
    pthread_mutex_lock(&st.mu);
    st.gate = true;
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
}

static int
get(int *v)
{
    int r;

    pthread_mutex_lock(&st.mu);
    r = *v;
    pthread_mutex_unlock(&st.mu);
    return r;
}

/* Runs the loop (done callbacks, reaping) until *v reaches want or the
 * time is up; returns the last value. */
static int
loop_until(struct ev_loop *loop, int *v, int want)
{
    time_t end = time(NULL) + WAIT_S;
    int r;

    while ((r = get(v)) < want && time(NULL) <= end) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(2000);
    }
    ev_run(loop, EVRUN_NOWAIT);
    return r;
}

static int
live_threads(struct lb_jobs *j, int *exited)
{
    int live = 0, nthreads;

    pthread_mutex_lock(&j->mu);
    *exited = 0;
    for (int i = 0; i < LB_JOBS_MAX; i++) {
        live += j->threads[i].state == LB_JOBS_LIVE;
        *exited += j->threads[i].state == LB_JOBS_EXITED;
    }
    nthreads = j->nthreads;
    pthread_mutex_unlock(&j->mu);
    assert_int_equal(live, nthreads);
    return live;
}

/* On the heap, and freed only by a test that passes: the threads of a
 * failed one may still run, and must not find the next test's stack. */
struct pool {
    struct lb_jobs j;
    struct ev_loop *loop;
    struct plugin a, b; /* the owners of the jobs */
};

static struct pool *
start(void)
{
    struct pool *p = calloc(1, sizeof(*p));

    assert_non_null(p);
    p->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(p->loop);
    p->a.running = p->b.running = true;
    reset();
    control = pthread_self();
    assert_int_equal(lb_jobs_start(&p->j, p->loop), 0);
    return p;
}

static void
stop(struct pool *p)
{
    lb_jobs_stop(&p->j);
    ev_loop_destroy(p->loop);
    free(p);
    assert_false(st.bad_thread);
    assert_false(st.bad_mask);
}

static void
submit(struct pool *p, struct plugin *owner, tern_job_run_cb run, int n)
{
    static char args[2 * LB_JOBS_MAX];

    for (int i = 0; i < n; i++)
        assert_int_equal(lb_jobs_submit(&p->j, owner, run, done_cb, &args[i]), 0);
}

/* n jobs that each wait for all n to be running: they pass only when the
 * pool runs n at once. */
static void
run_barrier(struct pool *p, int n)
{
    reset();
    pthread_mutex_lock(&st.mu);
    st.need = n;
    pthread_mutex_unlock(&st.mu);
    submit(p, &p->a, barrier_job, n);
    assert_int_equal(loop_until(p->loop, &st.done, n), n);
    assert_int_equal(get(&st.missed), 0);
    assert_int_equal(get(&st.peak), n);
    assert_int_equal(p->a.jobs, 0);
}

static void
test_blocking_jobs_run_at_once(void **state)
{
    struct pool *p = start();

    int exited;

    /* More than the 2 to 4 threads the pool starts with, on any machine. */
    run_barrier(p, 6);
    /* Added only for jobs that no thread was free for. */
    assert_int_equal(live_threads(&p->j, &exited), 6);
    stop(p);
}

static void
test_cap(void **state)
{
    struct pool *p = start();
    int exited, queued;

    submit(p, &p->a, gate_job, LB_JOBS_MAX + 4);
    /* Threads are added by submit itself: the count is final now. */
    assert_int_equal(live_threads(&p->j, &exited), LB_JOBS_MAX);
    assert_int_equal(loop_until(p->loop, &st.running, LB_JOBS_MAX), LB_JOBS_MAX);
    pthread_mutex_lock(&p->j.mu);
    queued = p->j.nqueued;
    pthread_mutex_unlock(&p->j.mu);
    assert_int_equal(queued, 4);
    usleep(100000);
    assert_int_equal(get(&st.running), LB_JOBS_MAX);
    open_gate();
    assert_int_equal(loop_until(p->loop, &st.done, LB_JOBS_MAX + 4), LB_JOBS_MAX + 4);
    assert_int_equal(get(&st.peak), LB_JOBS_MAX);
    assert_int_equal(p->a.jobs, 0);
    stop(p);
}

static void
test_idle_threads_exit_and_come_back(void **state)
{
    struct pool *p = start();
    int base, exited;
    time_t end;

    base = live_threads(&p->j, &exited);
    pthread_mutex_lock(&p->j.mu);
    p->j.idle_ms = 50;
    pthread_mutex_unlock(&p->j.mu);
    run_barrier(p, 8);
    /* The 4+ added threads idle out and the loop joins them; the first
     * ones stay. */
    end = time(NULL) + WAIT_S;
    while ((live_threads(&p->j, &exited) > base || exited > 0) && time(NULL) <= end) {
        ev_run(p->loop, EVRUN_NOWAIT);
        usleep(10000);
    }
    assert_int_equal(live_threads(&p->j, &exited), base);
    assert_int_equal(exited, 0);
    /* The freed slots take new threads. */
    run_barrier(p, 8);
    stop(p);
}

static void *
open_gate_later(void *arg)
{
    usleep(200000);
    open_gate();
    return NULL;
}

static void
test_stop_with_jobs_running_and_queued(void **state)
{
    struct pool *p = start();
    pthread_t opener;

    submit(p, &p->a, gate_job, LB_JOBS_MAX + 4);
    assert_true(loop_until(p->loop, &st.running, 1) >= 1);
    /* Stop waits for the running ones, runs the queued ones, then every
     * done callback, here. */
    assert_int_equal(pthread_create(&opener, NULL, open_gate_later, NULL), 0);
    lb_jobs_stop(&p->j);
    pthread_join(opener, NULL);
    assert_int_equal(st.ran, LB_JOBS_MAX + 4);
    assert_int_equal(st.done, LB_JOBS_MAX + 4);
    assert_int_equal(p->a.jobs, 0);
    ev_loop_destroy(p->loop);
    free(p);
    assert_false(st.bad_thread);
    assert_false(st.bad_mask);
}

static void
test_unloading_owner_jobs_dropped(void **state)
{
    struct pool *p = start();

    submit(p, &p->a, gate_job, LB_JOBS_MAX);
    assert_int_equal(loop_until(p->loop, &st.running, LB_JOBS_MAX), LB_JOBS_MAX);
    submit(p, &p->b, gate_job, 3);
    pthread_mutex_lock(&p->j.mu);
    p->b.running = false;
    pthread_mutex_unlock(&p->j.mu);
    /* Its jobs never started: dropped at once, done called here. */
    lb_jobs_drain_owner(&p->j, &p->b);
    assert_int_equal(st.cancelled, 3);
    assert_int_equal(p->b.jobs, 0);
    open_gate();
    assert_int_equal(loop_until(p->loop, &st.done, LB_JOBS_MAX), LB_JOBS_MAX);
    assert_int_equal(get(&st.ran), LB_JOBS_MAX);
    stop(p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocking_jobs_run_at_once),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_idle_threads_exit_and_come_back),
        cmocka_unit_test(test_stop_with_jobs_running_and_queued),
        cmocka_unit_test(test_unloading_owner_jobs_dropped),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
