/*
 * Unit test of the exec provider's runner (scale_exec_run): a run ends at
 * its deadline even when the helper process never reports the program's
 * PID.
 *
 * The helper is a fork of a threaded process and makes only
 * async-signal-safe calls, yet a fork taken while another thread held a
 * lock (a sanitizer's, say) can stop there, and a CI run under ASan once
 * had a launch stay "in progress" far past its timeout. This test stands
 * in for such a helper with a vfork() of its own, the helper's first call,
 * which never returns: this executable's definition wins over libc's.
 */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scale/scale.h"

pid_t
vfork(void)
{
    for (;;)
        pause();
}

/* group_jobs.c's, which this test does not link: only a create's output
 * reaches it. */
int
scale_split_hostport(const char *addr, char *host, size_t hl, char *port, size_t pl)
{
    (void)addr;
    (void)host;
    (void)hl;
    (void)port;
    (void)pl;
    return -1;
}

static double
mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
test_helper_that_never_reports_is_killed_at_the_deadline(void **state)
{
    char *env[] = {"TERN_ACTION=create", NULL};
    char *out = NULL, err[256];
    double t0, took;
    int rc;

    (void)state;
    alarm(30); /* the old runner waited here forever */
    t0 = mono();
    rc = scale_exec_run("echo 127.0.0.1:1", env, 300, &out, err, sizeof(err));
    took = mono() - t0;
    alarm(0);
    assert_int_equal(rc, -1);
    assert_null(out);
    assert_non_null(strstr(err, "timed out after 300 ms before the program started"));
    assert_true(took >= 0.29 && took < 10.0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_helper_that_never_reports_is_killed_at_the_deadline),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
