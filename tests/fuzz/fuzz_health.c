/*
 * libFuzzer target for the HTTP health probe (lb/health_check.c): what a
 * backend answers to a check, read the way the daemon reads it.
 *
 * The probe runs through its public API on a real libev loop: it connects
 * to a Unix socket this target listens on (hc_probe_start takes any
 * address family), sends its request, and the target answers with the
 * input, written in up to three pieces at data-derived cut points with the
 * loop run in between, then closes its end. So the interim-answer skipping,
 * the buffer growth of do_read, the incremental chunk scan and dechunk()
 * all see the bytes as a server would deliver them.
 *
 * Input: byte 0 chooses the check (see SEL_*), byte 1 the length of the
 * expected body text that follows it (at most 15 bytes), the rest is the
 * response.
 *
 * Invariants (abort() when broken): the probe ends once the server closed
 * (done called exactly once, never with HC_LOCAL, with a reason); a pass
 * means the answer's final head parses with a status in the expected range
 * and, for a body that is not chunked, the expected text is in the body
 * bytes the probe may look at.
 */
#include <errno.h>
#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "lb/health_check.h"
#include "lb/http1.h"

#define SEL_HEAD 0x01        /* the check's method is HEAD */
#define SEL_BODY 0x02        /* the check names expect_body */
#define SEL_STATUS 0x0c      /* 0: 200, 4: 200-399, 8: 204, c: 100-599 */
#define SEL_EARLY_CLOSE 0x10 /* close before the last piece is written */

static struct ev_loop *loop;
static int lfd = -1;
static struct sockaddr_storage addr;
static socklen_t addrlen;

static int ndone;
static enum hc_result result;
static char why[192];

static void
done_cb(struct hc_probe *pr, enum hc_result res, const char *w)
{
    (void)pr;
    ndone++;
    result = res;
    check(w != NULL && memchr(w, '\0', sizeof(why)) != NULL);
    strcpy(why, w);
}

/* An abstract Unix socket: nothing to clean up, one per process. */
static void
setup(void)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&addr;

    loop = ev_loop_new(EVFLAG_AUTO);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    check(loop != NULL && lfd >= 0);
    memset(&addr, 0, sizeof(addr));
    un->sun_family = AF_UNIX;
    int n =
        snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, "tern-fuzz-health-%d", (int)getpid());
    addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    check(bind(lfd, (struct sockaddr *)&addr, addrlen) == 0 && listen(lfd, 4) == 0);
}

static void
spin(void)
{
    for (int i = 0; i < 4; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

/* Writes [p, p + n) to the probe, running the loop while the socket is
 * full; false when the probe has gone (it closed its end). */
static bool
answer(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            if (ndone)
                return false;
            spin();
            continue;
        }
        if (w < 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    spin();
    return true;
}

static int
status_min(uint8_t sel)
{
    static const int min[4] = {200, 200, 204, 100};
    return min[(sel & SEL_STATUS) >> 2];
}

static int
status_max(uint8_t sel)
{
    static const int max[4] = {200, 399, 204, 599};
    return max[(sel & SEL_STATUS) >> 2];
}

/* A pass needs a final head in range; without chunking the text it found
 * lies in the bytes after that head. */
static void
check_pass(const uint8_t *resp, size_t len, const struct conf_health *cf, bool head_only)
{
    struct http1_response r;
    ssize_t h;
    size_t off = 0;

    for (;;) {
        h = http1_parse_response((const char *)resp + off, len - off, 16384, &r);
        check(h > 0);
        if (r.status >= 200 || r.status == 101)
            break;
        off += (size_t)h;
    }
    check(r.status >= cf->expect_status_min && r.status <= cf->expect_status_max);
    if (!cf->expect_body || !cf->expect_body[0] || r.f.chunked)
        return;
    size_t want = strlen(cf->expect_body);
    const uint8_t *body = resp + off + (size_t)h;
    size_t blen = len - off - (size_t)h;
    check(!head_only && http1_response_has_body(HTTP1_M_GET, r.status));
    if (r.f.content_length >= 0 && (uint64_t)r.f.content_length < blen)
        blen = (size_t)r.f.content_length;
    if (blen > 65536)
        blen = 65536;
    check(memmem(body, blen, cf->expect_body, want) != NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    if (loop == NULL)
        setup();

    uint8_t sel = data[0];
    size_t blen = data[1] & 0x0f;
    if (size < 2 + blen)
        return 0;
    char body[16];
    memcpy(body, data + 2, blen);
    body[blen] = '\0';
    const uint8_t *resp = data + 2 + blen;
    size_t len = size - 2 - blen;

    struct conf_health cf = {
        .type = CONF_HC_HTTP,
        .method = sel & SEL_HEAD ? "HEAD" : NULL,
        .path = "/health",
        .expect_status_min = status_min(sel),
        .expect_status_max = status_max(sel),
        .expect_body = sel & SEL_BODY ? body : NULL,
        .timeout = 60000,
    };
    struct hc_probe pr;

    ndone = 0;
    why[0] = '\0';
    hc_probe_start(&pr, loop, &cf, &addr, addrlen, "backend", NULL, done_cb);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    check(fd >= 0);
    spin(); /* connected: the request is sent */

    /* The request, whole, before any answer. */
    char req[512];
    ssize_t rn = recv(fd, req, sizeof(req), 0);
    check(rn > 0 && memmem(req, (size_t)rn, "\r\n\r\n", 4) != NULL);

    size_t cut1, cut2;
    fuzz_cuts(data, size, len, &cut1, &cut2);
    size_t sent = len;
    if (answer(fd, resp, cut1) && answer(fd, resp + cut1, cut2 - cut1)) {
        if (sel & SEL_EARLY_CLOSE)
            sent = cut2;
        else
            answer(fd, resp + cut2, len - cut2);
    }
    close(fd);
    for (int i = 0; i < 8 && !ndone; i++)
        spin();

    check(ndone == 1);
    check(!hc_probe_running(&pr));
    check(result == HC_OK || result == HC_FAIL);
    check(why[0] != '\0');
    if (result == HC_OK)
        check_pass(resp, sent, &cf, sel & SEL_HEAD);
    return 0;
}
