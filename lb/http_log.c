/*
 * The end of a request in the counters (listener, pool, server: responses by
 * class, bytes, response time, consecutive failures) and, when enabled, its
 * access log line. The method and path come from the rewritten head kept in
 * sout, so a line names what the backend was asked.
 */
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

#include "lb/accesslog.h"
#include "lb/http_proxy_int.h"
#include "lb/tls.h"

void
http_log_request(struct http_sess *s, const char *term)
{
    struct lb_pool *p = s->x->pool >= 0 ? &s->gen->snap->pools[s->x->pool] : NULL;
    struct lb_server *srv = (p && s->x->srv >= 0) ? &p->servers[s->x->srv] : NULL;
    int cls = s->x->status / 100;

    if (cls < 1 || cls > 5)
        cls = 0;
    struct lb_listener_stats *ls = lb_lstats(s->l);
    lb_stat_add(&ls->requests, 1);
    lb_stat_add(&ls->responses[cls], 1);
    if (!srv && p && s->x->status)
        atomic_fetch_add_explicit(&p->local_responses[cls], 1, memory_order_relaxed);
    if (srv) {
        atomic_fetch_add_explicit(&srv->st.responses[cls], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&srv->st.bytes_in, s->x->bytes_in, memory_order_relaxed);
        atomic_fetch_add_explicit(&srv->st.bytes_out, s->x->bytes_out, memory_order_relaxed);
        if (s->x->status) {
            lb_server_observe(srv, lb_now_us(s->w->loop) - s->x->t_start);
            if (s->x->status >= 500 && s->x->t_resp)
                atomic_fetch_add_explicit(&srv->consecutive_failures, 1, memory_order_relaxed);
            else if (s->x->t_resp)
                atomic_store_explicit(&srv->consecutive_failures, 0, memory_order_relaxed);
        }
    }
    if (!lb_accesslog_enabled())
        return;

    struct sockaddr_storage ss = {0};
    char client[64];
    if (s->peer_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(s->peer_port);
        memcpy(&in->sin_addr, s->peer, 4);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(s->peer_port);
        memcpy(&in6->sin6_addr, s->peer, 16);
    }
    lb_addr_ipport(&ss, client, sizeof(client));

    /* The request line is the first line of the rewritten head in sout. */
    const char *m = "-", *path = "-";
    size_t mlen = 1, plen = 1;
    if (s->x->sout.data && s->x->sout_len) {
        const char *h = s->x->sout.data, *e = h + s->x->sout_len;
        const char *sp1 = memchr(h, ' ', (size_t)(e - h));
        const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(e - sp1 - 1)) : NULL;
        if (sp1 && sp2) {
            m = h;
            mlen = (size_t)(sp1 - h);
            path = sp1 + 1;
            plen = (size_t)(sp2 - sp1 - 1);
        }
    }
    uint64_t now = lb_now_us(s->w->loop);
    struct lb_access a = {
        .client = client,
        .listener = lcf(s)->name,
        .pool = p ? p->cf->name : NULL,
        .server = srv ? srv->name : NULL,
        .method = m,
        .method_len = mlen,
        .path = path,
        .path_len = plen,
        .minor_version = s->x->minor >= 0 ? s->x->minor : 1,
        .status = s->x->status,
        .bytes_in = s->x->bytes_in,
        .bytes_out = s->x->bytes_out,
        .t_connect_us = s->x->t_connect ? s->x->t_connect - s->x->t_start : UINT64_MAX,
        .t_response_us = s->x->t_resp ? s->x->t_resp - s->x->t_start : UINT64_MAX,
        .t_total_us = now - s->x->t_start,
        .termination = term,
        .tls_version = s->ssl ? lb_tls_version(s->ssl) : NULL,
        .tls_cipher = s->ssl ? lb_tls_cipher(s->ssl) : NULL,
    };
    lb_accesslog_write(s->w, &a);
}
