/*
 * Unit tests for the session ticket keys of lb/tls_tickets.c: a ticket resumes with
 * the key that made it, still resumes after one rotation (and comes back
 * renewed), and no longer after two; in TLS 1.3 and 1.2. The server side is
 * tern's own listener context (lb_tls_build on a generated certificate), the
 * client OpenSSL's, the two ends of a socketpair with the server on a thread,
 * so rotations can be forced instead of waited for.
 */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* cmocka.h needs these three first; keep clang-format from sorting it up. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
// clang-format on

#include "conf/config.h"
#include "lb/tls.h"

static struct lb_tls *tls;
static struct conf *cf;
static char dir[] = "/tmp/tern-test-tls-XXXXXX";

/* A self-signed P-256 certificate for "unit.test", written as PEM files. */
static void
make_cert(const char *cert, const char *key)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(pk);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"unit.test", -1, -1,
                               0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    FILE *f = fopen(cert, "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key, "w");
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static int
setup(void **state)
{
    char cert[64], key[64], yaml[64];
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir))
        return -1;
    snprintf(cert, sizeof(cert), "%s/c.pem", dir);
    snprintf(key, sizeof(key), "%s/c.key", dir);
    snprintf(yaml, sizeof(yaml), "%s/t.yaml", dir);
    make_cert(cert, key);
    FILE *f = fopen(yaml, "w");
    fprintf(f,
            "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    pool: web\n"
            "    tls: { certificates: [ { cert: %s, key: %s } ] }\n"
            "pools:\n  web: { servers: [ { name: a, address: 127.0.0.1:2 } ] }\n",
            cert, key);
    fclose(f);
    if (conf_load(yaml, stderr, &cf) || lb_tls_build(cf, stderr, &tls) || !tls)
        return -1;
    return 0;
}

static int
teardown(void **state)
{
    char cmd[128];
    lb_tls_free(tls);
    conf_free(cf);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void *
serve(void *arg)
{
    int fd = (int)(long)arg, want;
    char b[4];
    struct ssl_st *s = lb_tls_accept_new(tls->listeners[0], fd);
    /* Blocking socket: each call runs to completion. */
    if (lb_tls_handshake(s, &want) == 1) {
        lb_tls_write(s, "x", 1, &want); /* carries the TLS 1.3 ticket along */
        lb_tls_read(s, b, 1, &want);
    }
    lb_tls_conn_free(s);
    close(fd);
    return NULL;
}

/* One connection, resuming `use` if given. Returns the client's session
 * (with the ticket it received) and whether it resumed. */
static SSL_SESSION *
conn(SSL_CTX *ctx, SSL_SESSION *use, int *reused)
{
    int sv[2];
    char b[4];
    pthread_t t;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    pthread_create(&t, NULL, serve, (void *)(long)sv[1]);
    SSL *c = SSL_new(ctx);
    SSL_set_fd(c, sv[0]);
    if (use)
        SSL_set_session(c, use);
    assert_int_equal(SSL_connect(c), 1);
    assert_int_equal(SSL_read(c, b, 1), 1);
    SSL_write(c, "y", 1);
    *reused = SSL_session_reused(c);
    SSL_SESSION *s = SSL_get1_session(c);
    SSL_shutdown(c); /* a session not shut down would be dropped */
    pthread_join(t, NULL);
    SSL_free(c);
    close(sv[0]);
    return s;
}

static void
rotation(int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    SSL_CTX_set_max_proto_version(ctx, max_version);
    int r;
    /* TLS 1.3 clients use a ticket once: one fresh ticket per check. */
    SSL_SESSION *a = conn(ctx, NULL, &r), *b = conn(ctx, NULL, &r), *c = conn(ctx, NULL, &r);
    assert_int_equal(r, 0);
    SSL_SESSION_free(conn(ctx, a, &r));
    assert_int_equal(r, 1);
    lb_tls_keys_rotate();
    SSL_SESSION *renewed = conn(ctx, b, &r);
    assert_int_equal(r, 1); /* the previous key still decrypts */
    SSL_SESSION_free(conn(ctx, renewed, &r));
    assert_int_equal(r, 1); /* and the ticket that came back is current */
    lb_tls_keys_rotate();
    SSL_SESSION_free(conn(ctx, c, &r));
    assert_int_equal(r, 0); /* two rotations old: a full handshake */
    SSL_SESSION_free(a);
    SSL_SESSION_free(b);
    SSL_SESSION_free(c);
    SSL_SESSION_free(renewed);
    SSL_CTX_free(ctx);
}

static void
test_rotation_tls13(void **state)
{
    rotation(TLS1_3_VERSION);
}

static void
test_rotation_tls12(void **state)
{
    rotation(TLS1_2_VERSION);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rotation_tls13),
        cmocka_unit_test(test_rotation_tls12),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
