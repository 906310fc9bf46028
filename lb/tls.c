/*
 * TLS on the workers: the non-blocking calls a connection makes inside its
 * libev loop (see tls.h), from the SSL object made for an accepted or
 * connected socket to its close_notify. It is kept apart from building the
 * contexts (tls_ctx.c) and from the ticket keys (tls_tickets.c) so that the
 * path every TLS byte takes reads on its own, with the calls a proxy makes
 * per read or write next to io_error, which they share.
 *
 * Every call clears the thread's OpenSSL error queue first, so a
 * stale error of another connection cannot turn a "would block" into a
 * failure. After a fatal error a connection is marked for a quiet shutdown,
 * so freeing it never writes to a broken connection.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "lb/tls_int.h"

struct ssl_st *
lb_tls_accept_new(struct lb_tls_server *t, int fd)
{
    SSL *ssl = SSL_new(t->ctx[0]);
    if (!ssl)
        return NULL;
    if (!SSL_set_fd(ssl, fd)) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

struct ssl_st *
lb_tls_connect_new(struct lb_tls_client *t, int fd, struct ssl_session_st **cache)
{
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        return NULL;
    if (!SSL_set_fd(ssl, fd) || (t->sni_set && !SSL_set_tlsext_host_name(ssl, t->sni))) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_app_data(ssl, cache);
    /* A session the server no longer knows costs nothing: it answers with a
     * full handshake (and verification) instead. */
    if (cache && *cache && !SSL_set_session(ssl, *cache))
        ERR_clear_error();
    SSL_set_connect_state(ssl);
    return ssl;
}

void
lb_tls_session_free(struct ssl_session_st *s)
{
    SSL_SESSION_free(s);
}

/* Maps a failed call's result; fatal errors leave the connection to a quiet
 * shutdown. */
static int
io_error(SSL *ssl, int r, int *want)
{
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
        *want = EV_READ;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        *want = EV_WRITE;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        SSL_set_quiet_shutdown(ssl, 1);
        return -2;
    }
}

int
lb_tls_handshake(struct ssl_st *ssl, int *want)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    int k = io_error(ssl, r, want);
    return k == -1 ? 0 : -1;
}

ssize_t
lb_tls_read(struct ssl_st *ssl, void *buf, size_t n, int *want)
{
    size_t got = 0;
    ERR_clear_error();
    if (SSL_read_ex(ssl, buf, n, &got) == 1) {
        *want = EV_READ;
        return (ssize_t)got;
    }
    return io_error(ssl, 0, want);
}

ssize_t
lb_tls_write(struct ssl_st *ssl, const void *buf, size_t n, int *want)
{
    size_t done = 0;
    ERR_clear_error();
    if (SSL_write_ex(ssl, buf, n, &done) == 1) {
        *want = EV_WRITE;
        return (ssize_t)done;
    }
    int k = io_error(ssl, 0, want);
    return k == 0 ? -2 : k; /* the peer's close_notify: cannot write on */
}

void
lb_tls_shutdown(struct ssl_st *ssl)
{
    if (!SSL_is_init_finished(ssl) || (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) ||
        SSL_get_quiet_shutdown(ssl))
        return;
    ERR_clear_error();
    /* One non-blocking attempt: the alert usually fits the socket buffer;
     * if not, the connection ends without it, as TCP would. */
    if (SSL_shutdown(ssl) < 0)
        SSL_set_quiet_shutdown(ssl, 1);
    ERR_clear_error();
}

void
lb_tls_conn_free(struct ssl_st *ssl)
{
    if (!ssl)
        return;
    lb_tls_shutdown(ssl);
    SSL_free(ssl);
}

bool
lb_tls_pending(struct ssl_st *ssl)
{
    return SSL_has_pending(ssl) != 0;
}

bool
lb_tls_idle_ok(struct ssl_st *ssl)
{
    char c;
    int want = 0;
    return lb_tls_read(ssl, &c, 1, &want) == -1 && want == EV_READ;
}

const char *
lb_tls_version(const struct ssl_st *ssl)
{
    return SSL_get_version(ssl);
}

const char *
lb_tls_cipher(const struct ssl_st *ssl)
{
    const char *c = SSL_get_cipher_name(ssl);
    return c ? c : "-";
}

char *
lb_tls_peer_subject(struct ssl_st *ssl)
{
    X509 *x = SSL_get0_peer_certificate(ssl);
    if (!x || SSL_get_verify_result(ssl) != X509_V_OK)
        return NULL;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return NULL;
    char *out = NULL;
    /* RFC 2253 escapes control characters and non-ASCII bytes; what is left
     * is checked again below, since it goes into a header line. */
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        out = malloc((size_t)n + 1);
        for (long i = 0; out && i < n; i++) {
            unsigned char ch = (unsigned char)p[i];
            out[i] = (ch < 0x20 || ch >= 0x7f) ? '?' : (char)ch;
        }
        if (out)
            out[n] = 0;
    }
    BIO_free(b);
    ERR_clear_error();
    return out;
}

const char *
lb_tls_why(struct ssl_st *ssl, char *buf, size_t n)
{
    unsigned long code = ERR_peek_last_error();
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        snprintf(buf, n, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    } else if (code) {
        const char *r = ERR_reason_error_string(code);
        if (r)
            snprintf(buf, n, "%s", r);
        else
            ERR_error_string_n(code, buf, n);
    } else if (errno) {
        snprintf(buf, n, "%s", strerror(errno));
    } else {
        snprintf(buf, n, "connection closed");
    }
    ERR_clear_error();
    return buf;
}
