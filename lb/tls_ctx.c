/*
 * TLS contexts built from a configuration generation: a listener's
 * certificates, SNI table, ALPN, protocol versions and ciphers, OCSP staples
 * and client-certificate rules, and a pool's context for connecting to its
 * servers (see tls.h). This is what runs while a configuration is loaded,
 * with the callbacks OpenSSL then makes from these contexts during a
 * handshake (SNI, ALPN, OCSP, a pool's new session), since they read only
 * what was built here. The connections that use the contexts are in tls.c,
 * the ticket keys the listeners encrypt with in tls_tickets.c.
 *
 * Listeners. A listener's certificates are grouped by the set of names they
 * carry (subjectAltName DNS entries, else the common name): certificates with
 * the same names, typically an RSA and an ECDSA one, share one SSL_CTX and
 * OpenSSL serves the one the client's signature algorithms allow. The group
 * of the first certificate is the default; the servername callback moves a
 * connection to the group whose name matches the SNI name exactly, else to a
 * group with a matching wildcard ("*.example.com" covers exactly one more
 * label, as clients check it), else leaves it on the default. Every group's
 * context gets the same settings, so switching only changes the certificate.
 *
 * Contexts are built on the control thread while a configuration is loaded or
 * reloaded, before anything is handed over, so a bad certificate, a key that
 * does not match, an expired certificate or an unreadable CA refuses the
 * start or the reload with the path in the message. After that they are only
 * read: OpenSSL allows one SSL_CTX to serve SSL objects on many threads.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/config.h"
#include "lb/core.h"
#include "lb/log.h"
#include "lb/tls_int.h"

#define SESSION_LIFETIME 3600 /* seconds a ticket is offered for */
/* TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3 suites are all
 * that already). */
#define DEFAULT_CIPHERS                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define DEFAULT_GROUPS "X25519:P-256:P-384"

/* ---- build-time errors ---- */

struct berr {
    FILE *out;
    const struct conf *c;
    int n;
};

static void __attribute__((format(printf, 5, 6)))
report(struct berr *e, int line, int col, const char *what, const char *fmt, ...)
{
    e->n++;
    if (!e->out)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(e->out, "%s:%d:%d: %s: ", e->c->file ? e->c->file : "?", line, col, what);
    vfprintf(e->out, fmt, ap);
    fputc('\n', e->out);
    va_end(ap);
}

/* The deepest OpenSSL reason on this thread's queue, which is then cleared. */
static const char *
ssl_reason(char *buf, size_t n)
{
    unsigned long code = ERR_peek_last_error();
    const char *r = code ? ERR_reason_error_string(code) : NULL;
    if (r)
        snprintf(buf, n, "%s", r);
    else if (code)
        ERR_error_string_n(code, buf, n);
    else
        snprintf(buf, n, "unknown error");
    ERR_clear_error();
    return buf;
}

static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1; /* never prompt: an encrypted key is an error, not a hang */
}

static BIO *
open_file(const char *path, char *why, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, n, "cannot open: %s", strerror(errno));
        return NULL;
    }
    BIO *b = BIO_new_fp(f, BIO_CLOSE);
    if (!b) {
        fclose(f);
        snprintf(why, n, "out of memory");
    }
    return b;
}

static void
time_text(const ASN1_TIME *t, char *buf, size_t n)
{
    BIO *b = BIO_new(BIO_s_mem());
    buf[0] = 0;
    if (b && ASN1_TIME_print(b, t)) {
        int k = BIO_read(b, buf, (int)n - 1);
        buf[k > 0 ? k : 0] = 0;
    }
    BIO_free(b);
}

/* ---- listeners ---- */

struct cert_ent {
    X509 *leaf;
    unsigned char *ocsp; /* DER response to staple, or NULL */
    long ocsp_len;
    time_t ocsp_until; /* its nextUpdate; 0: none given */
};

struct sni_ent {
    char *name; /* lower case; a wildcard is kept as its suffix ".example.com" */
    uint32_t group;
};

static int
sni_cmp(const void *a, const void *b)
{
    const struct sni_ent *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    if (r)
        return r;
    return x->group < y->group ? -1 : x->group > y->group;
}

static int
sni_find(const struct sni_ent *v, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = strcmp(name, v[mid].name);
        if (!r)
            return (int)v[mid].group;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
    struct lb_tls_server *t = arg;
    const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char name[256];
    size_t n;

    if (!sn || t->nctx < 2)
        return SSL_TLSEXT_ERR_OK;
    for (n = 0; sn[n] && n < sizeof(name) - 1; n++)
        name[n] = (char)tolower((unsigned char)sn[n]);
    if (n && name[n - 1] == '.')
        n--;
    name[n] = 0;
    int g = sni_find(t->exact, t->nexact, name);
    if (g < 0) {
        const char *dot = strchr(name, '.');
        if (dot && dot != name)
            g = sni_find(t->wild, t->nwild, dot);
    }
    if (g > 0)
        SSL_set_SSL_CTX(ssl, t->ctx[g]);
    return SSL_TLSEXT_ERR_OK;
}

static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
        unsigned int inlen, void *arg)
{
    struct lb_tls_server *t = arg;
    unsigned char *sel = NULL;
    /* Our order wins; no common protocol goes on without ALPN, as a
     * client that offers only protocols we do not speak will find out
     * soon enough. */
    if (SSL_select_next_proto(&sel, outlen, t->alpn, t->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int
ocsp_cb(SSL *ssl, void *arg)
{
    struct lb_tls_server *t = arg;
    X509 *x = SSL_get_certificate(ssl);
    for (size_t i = 0; x && i < t->ncerts; i++) {
        struct cert_ent *ce = &t->certs[i];
        if (ce->leaf != x || !ce->ocsp)
            continue;
        /* A response past its nextUpdate would make a careful client fail
         * the connection: better to staple nothing. */
        if (ce->ocsp_until && time(NULL) >= ce->ocsp_until)
            return SSL_TLSEXT_ERR_NOACK;
        unsigned char *copy = OPENSSL_malloc((size_t)ce->ocsp_len);
        if (!copy)
            return SSL_TLSEXT_ERR_NOACK;
        memcpy(copy, ce->ocsp, (size_t)ce->ocsp_len);
        SSL_set_tlsext_status_ocsp_resp(ssl, copy, ce->ocsp_len);
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static void
server_free(struct lb_tls_server *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nctx; i++)
        SSL_CTX_free(t->ctx[i]);
    free(t->ctx);
    for (size_t i = 0; i < t->nexact; i++)
        free(t->exact[i].name);
    for (size_t i = 0; i < t->nwild; i++)
        free(t->wild[i].name);
    free(t->exact);
    free(t->wild);
    for (size_t i = 0; i < t->ncerts; i++) {
        X509_free(t->certs[i].leaf);
        free(t->certs[i].ocsp);
    }
    free(t->certs);
    free(t);
}

/* What one configured certificate turned into while building. */
struct loaded {
    X509 *leaf;
    STACK_OF(X509) * chain;
    EVP_PKEY *key;
    char **names;
    size_t nnames;
    char *names_key; /* sorted names joined: equal for one group */
    int group;
};

static void
loaded_free(struct loaded *ld)
{
    X509_free(ld->leaf);
    sk_X509_pop_free(ld->chain, X509_free);
    EVP_PKEY_free(ld->key);
    for (size_t i = 0; i < ld->nnames; i++)
        free(ld->names[i]);
    free(ld->names);
    free(ld->names_key);
}

static int
add_name(struct loaded *ld, const unsigned char *p, int len)
{
    if (len <= 0 || len > 253)
        return 0;
    char *s = malloc((size_t)len + 1);
    char **v = realloc(ld->names, (ld->nnames + 1) * sizeof(*v));
    if (!s || !v) {
        free(s);
        if (v)
            ld->names = v;
        return -1;
    }
    ld->names = v;
    for (int i = 0; i < len; i++)
        s[i] = (char)tolower(p[i]);
    s[len] = 0;
    if (len > 1 && s[len - 1] == '.')
        s[len - 1] = 0;
    for (size_t i = 0; i < ld->nnames; i++) {
        if (strcmp(ld->names[i], s) == 0) {
            free(s);
            return 0;
        }
    }
    ld->names[ld->nnames++] = s;
    return 0;
}

static int
str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
cert_names(struct loaded *ld)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(ld->leaf, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS &&
            add_name(ld, ASN1_STRING_get0_data(g->d.dNSName), ASN1_STRING_length(g->d.dNSName)) < 0)
            break;
    }
    GENERAL_NAMES_free(gens);
    if (!ld->nnames) {
        /* No DNS names: the common name is what old certificates carry. */
        X509_NAME *sub = X509_get_subject_name(ld->leaf);
        int i = X509_NAME_get_index_by_NID(sub, NID_commonName, -1);
        unsigned char *cn = NULL;
        int len =
            i >= 0 ? ASN1_STRING_to_UTF8(&cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(sub, i)))
                   : -1;
        if (len > 0)
            add_name(ld, cn, len);
        OPENSSL_free(cn);
    }
    qsort(ld->names, ld->nnames, sizeof(*ld->names), str_cmp);
    size_t total = 1;
    for (size_t i = 0; i < ld->nnames; i++)
        total += strlen(ld->names[i]) + 1;
    ld->names_key = malloc(total);
    if (!ld->names_key)
        return -1;
    char *p = ld->names_key;
    for (size_t i = 0; i < ld->nnames; i++)
        p += sprintf(p, "%s\n", ld->names[i]);
    *p = 0;
    return 0;
}

/* Reads the certificate chain and key of one entry and checks them. */
static int
load_cert(struct berr *e, const struct conf_listener *l, const struct conf_tls_cert *cc,
          struct loaded *ld)
{
    char why[256], what[300];
    snprintf(what, sizeof(what), "listener %s: tls", l->name);

    BIO *b = open_file(cc->cert, why, sizeof(why));
    if (!b) {
        report(e, l->line, l->col, what, "certificate %s: %s", cc->cert, why);
        return -1;
    }
    ld->leaf = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
    if (!ld->leaf) {
        BIO_free(b);
        ERR_clear_error();
        report(e, l->line, l->col, what, "certificate %s: no PEM certificate in it", cc->cert);
        return -1;
    }
    ld->chain = sk_X509_new_null();
    X509 *x;
    while (ld->chain && (x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)))
        sk_X509_push(ld->chain, x);
    ERR_clear_error(); /* the end of the file reads as "no start line" */
    BIO_free(b);

    b = open_file(cc->key, why, sizeof(why));
    if (!b) {
        report(e, l->line, l->col, what, "key %s: %s", cc->key, why);
        return -1;
    }
    ld->key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (!ld->key) {
        ERR_clear_error();
        report(e, l->line, l->col, what,
               "key %s: no PEM private key in it (an encrypted key is not supported)", cc->key);
        return -1;
    }
    if (!X509_check_private_key(ld->leaf, ld->key)) {
        ERR_clear_error();
        report(e, l->line, l->col, what, "key %s does not match certificate %s", cc->key, cc->cert);
        return -1;
    }
    char when[64];
    if (X509_cmp_current_time(X509_get0_notAfter(ld->leaf)) < 0) {
        time_text(X509_get0_notAfter(ld->leaf), when, sizeof(when));
        report(e, l->line, l->col, what, "certificate %s expired on %s", cc->cert, when);
        return -1;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(ld->leaf)) > 0) {
        time_text(X509_get0_notBefore(ld->leaf), when, sizeof(when));
        report(e, l->line, l->col, what, "certificate %s is not valid before %s", cc->cert, when);
        return -1;
    }
    if (cert_names(ld) < 0) {
        report(e, l->line, l->col, what, "certificate %s: out of memory", cc->cert);
        return -1;
    }
    return 0;
}

static time_t
asn1_to_time(const ASN1_GENERALIZEDTIME *t)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return timegm(&tm);
}

/* Reads a DER OCSP response for one certificate. Returns 0 (possibly with
 * nothing to staple, after a warning) or -1 on an error. */
static int
load_ocsp(struct berr *e, const struct conf_listener *l, const struct conf_tls_cert *cc,
          struct cert_ent *ce)
{
    char why[256], what[300];
    snprintf(what, sizeof(what), "listener %s: tls", l->name);
    BIO *b = open_file(cc->ocsp, why, sizeof(why));
    if (!b) {
        report(e, l->line, l->col, what, "ocsp %s: %s", cc->ocsp, why);
        return -1;
    }
    OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE_bio(b, NULL);
    BIO_free(b);
    OCSP_BASICRESP *basic = resp ? OCSP_response_get1_basic(resp) : NULL;
    int rc = -1;
    if (!resp || OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL || !basic) {
        ERR_clear_error();
        report(e, l->line, l->col, what, "ocsp %s: not a successful DER OCSP response", cc->ocsp);
        goto out;
    }
    const ASN1_INTEGER *serial = X509_get0_serialNumber(ce->leaf);
    OCSP_SINGLERESP *single = NULL;
    for (int i = 0; i < OCSP_resp_count(basic) && !single; i++) {
        OCSP_SINGLERESP *sr = OCSP_resp_get0(basic, i);
        ASN1_INTEGER *sn = NULL;
        if (OCSP_id_get0_info(NULL, NULL, NULL, &sn, (OCSP_CERTID *)OCSP_SINGLERESP_get0_id(sr)) &&
            ASN1_INTEGER_cmp(sn, serial) == 0)
            single = sr;
    }
    if (!single) {
        report(e, l->line, l->col, what, "ocsp %s: is not about certificate %s", cc->ocsp,
               cc->cert);
        goto out;
    }
    int reason;
    ASN1_GENERALIZEDTIME *rev, *thisupd, *nextupd;
    int st = OCSP_single_get0_status(single, &reason, &rev, &thisupd, &nextupd);
    if (st == V_OCSP_CERTSTATUS_REVOKED) {
        report(e, l->line, l->col, what, "certificate %s is revoked according to %s", cc->cert,
               cc->ocsp);
        goto out;
    }
    time_t until = asn1_to_time(nextupd);
    if (st != V_OCSP_CERTSTATUS_GOOD || (until && until <= time(NULL))) {
        /* Not worth refusing a reload over: the certificate is fine, the
         * staple is merely useless. */
        lb_warn("listener %s: ocsp %s is %s; nothing is stapled for %s", l->name, cc->ocsp,
                st != V_OCSP_CERTSTATUS_GOOD ? "not a \"good\" answer" : "out of date", cc->cert);
        rc = 0;
        goto out;
    }
    int len = i2d_OCSP_RESPONSE(resp, NULL);
    unsigned char *der = len > 0 ? malloc((size_t)len) : NULL, *p = der;
    if (!der || i2d_OCSP_RESPONSE(resp, &p) != len) {
        free(der);
        report(e, l->line, l->col, what, "ocsp %s: out of memory", cc->ocsp);
        goto out;
    }
    ce->ocsp = der;
    ce->ocsp_len = len;
    ce->ocsp_until = until;
    rc = 0;
out:
    OCSP_BASICRESP_free(basic);
    OCSP_RESPONSE_free(resp);
    return rc;
}

static int
alpn_build(struct berr *e, const struct conf_listener *l, struct lb_tls_server *t)
{
    char what[300];
    snprintf(what, sizeof(what), "listener %s: tls.alpn", l->name);
    static const char *const http_default[] = {"http/1.1"};
    const char *const *v = (const char *const *)l->tls.alpn;
    size_t n = l->tls.nalpn;
    if (!n && l->mode == CONF_MODE_HTTP) {
        v = http_default;
        n = 1;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(v[i]);
        if (l->mode == CONF_MODE_HTTP && strcmp(v[i], "http/1.1") && strcmp(v[i], "http/1.0")) {
            report(e, l->line, l->col, what,
                   "'%s' cannot be offered: this listener speaks HTTP/1.1 (and 1.0) to "
                   "clients only%s",
                   v[i], strcmp(v[i], "h2") == 0 ? ", HTTP/2 is not supported yet" : "");
            return -1;
        }
        if (!len || len > 255 || t->alpn_len + 1 + len > sizeof(t->alpn)) {
            report(e, l->line, l->col, what, "'%s': protocol names take 1 to 255 bytes, %zu in all",
                   v[i], sizeof(t->alpn));
            return -1;
        }
        t->alpn[t->alpn_len++] = (unsigned char)len;
        memcpy(t->alpn + t->alpn_len, v[i], len);
        t->alpn_len += (unsigned)len;
    }
    return 0;
}

/* Settings every group context of a listener shares. */
static int
server_ctx_common(struct berr *e, const struct conf_listener *l, struct lb_tls_server *t,
                  SSL_CTX *ctx, X509_STORE *client_store, STACK_OF(X509_NAME) * client_names,
                  const unsigned char *sid, bool any_ocsp)
{
    const struct conf_tls *ct = &l->tls;
    char what[300], why[256];
    snprintf(what, sizeof(what), "listener %s: tls", l->name);

    SSL_CTX_set_min_proto_version(ctx, ct->min_version && strcmp(ct->min_version, "1.3") == 0
                                           ? TLS1_3_VERSION
                                           : TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    /* No renegotiation: it only ever served client-certificate tricks and
     * DoS, and it would let reads want writes mid-stream. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Partial writes and moving buffers: the proxies write from buffers that
     * compact; released buffers keep an idle keep-alive connection at a few
     * hundred bytes of TLS state. Reading ahead takes whole records (and
     * more) in one read(2) instead of a header and a body. The chain served
     * is the one in the certificate file: building one from a store would
     * run a verification on every handshake. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
    SSL_CTX_set_read_ahead(ctx, 1);
    if (!SSL_CTX_set_cipher_list(ctx, ct->ciphers ? ct->ciphers : DEFAULT_CIPHERS)) {
        ERR_clear_error();
        report(e, l->line, l->col, what, "ciphers '%s': no cipher OpenSSL knows",
               ct->ciphers ? ct->ciphers : DEFAULT_CIPHERS);
        return -1;
    }
    if (!SSL_CTX_set1_groups_list(ctx, DEFAULT_GROUPS)) {
        report(e, l->line, l->col, what, "key exchange groups: %s", ssl_reason(why, sizeof(why)));
        return -1;
    }
    SSL_CTX_set_dh_auto(ctx, 1);
    /* Stateless resumption only: a server-side cache would be a lock shared
     * by every worker on every handshake. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, sid, SSL_MAX_SID_CTX_LENGTH);
    SSL_CTX_set_timeout(ctx, SESSION_LIFETIME);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, lb_tls__ticket_cb);
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    if (t->alpn_len)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, t);
    if (any_ocsp) {
        SSL_CTX_set_tlsext_status_cb(ctx, ocsp_cb);
        SSL_CTX_set_tlsext_status_arg(ctx, t);
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (client_store) {
        bool required = ct->client_auth && strcmp(ct->client_auth, "required") == 0;
        SSL_CTX_set1_cert_store(ctx, client_store);
        STACK_OF(X509_NAME) *names =
            sk_X509_NAME_deep_copy(client_names, X509_NAME_dup, X509_NAME_free);
        if (!names) {
            report(e, l->line, l->col, what, "client_ca: out of memory");
            return -1;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           NULL);
        SSL_CTX_set_verify_depth(ctx, 8);
    }
    return 0;
}

static struct lb_tls_server *
server_build(struct berr *e, const struct conf_listener *l)
{
    const struct conf_tls *ct = &l->tls;
    char what[300], why[256];
    snprintf(what, sizeof(what), "listener %s: tls", l->name);
    struct lb_tls_server *t = calloc(1, sizeof(*t));
    struct loaded *ld = calloc(ct->ncertificates ? ct->ncertificates : 1, sizeof(*ld));
    X509_STORE *client_store = NULL;
    STACK_OF(X509_NAME) *client_names = NULL;
    bool any_ocsp = false;
    int nerr = e->n;

    if (!t || !ld) {
        report(e, l->line, l->col, what, "out of memory");
        goto fail;
    }
    if (alpn_build(e, l, t) < 0)
        goto fail;

    /* Client certificates: one store for all the groups' contexts. */
    bool mtls = ct->client_ca && ct->client_auth && strcmp(ct->client_auth, "none") != 0;
    if (ct->client_ca && !mtls)
        lb_warn("listener %s: tls client_ca is set but client_auth is none: client "
                "certificates are not asked for",
                l->name);
    if (mtls) {
        BIO *b = open_file(ct->client_ca, why, sizeof(why));
        if (!b) {
            report(e, l->line, l->col, what, "client_ca %s: %s", ct->client_ca, why);
            goto fail;
        }
        BIO_free(b);
        client_store = X509_STORE_new();
        client_names = SSL_load_client_CA_file(ct->client_ca);
        if (!client_store || !client_names || !X509_STORE_load_file(client_store, ct->client_ca)) {
            ERR_clear_error();
            report(e, l->line, l->col, what, "client_ca %s: no PEM CA certificate in it",
                   ct->client_ca);
            goto fail;
        }
    }

    /* Certificates, then groups of equal names in the order given. */
    t->certs = calloc(ct->ncertificates ? ct->ncertificates : 1, sizeof(*t->certs));
    if (!t->certs) {
        report(e, l->line, l->col, what, "out of memory");
        goto fail;
    }
    size_t ngroups = 0;
    for (size_t i = 0; i < ct->ncertificates; i++) {
        if (load_cert(e, l, &ct->certificates[i], &ld[i]) < 0)
            goto fail;
        t->certs[i].leaf = ld[i].leaf;
        X509_up_ref(ld[i].leaf);
        t->ncerts = i + 1;
        if (ct->certificates[i].ocsp) {
            if (load_ocsp(e, l, &ct->certificates[i], &t->certs[i]) < 0)
                goto fail;
            any_ocsp |= t->certs[i].ocsp != NULL;
        }
        ld[i].group = -1;
        for (size_t j = 0; j < i && ld[i].group < 0; j++) {
            if (strcmp(ld[j].names_key, ld[i].names_key) != 0)
                continue;
            if (EVP_PKEY_get_base_id(ld[j].key) == EVP_PKEY_get_base_id(ld[i].key)) {
                report(e, l->line, l->col, what,
                       "certificate %s has the same names and key type as %s: only one of "
                       "them could ever be served",
                       ct->certificates[i].cert, ct->certificates[j].cert);
                goto fail;
            }
            ld[i].group = ld[j].group;
        }
        if (ld[i].group < 0)
            ld[i].group = (int)ngroups++;
    }

    unsigned char sid[SSL_MAX_SID_CTX_LENGTH] = {0};
    {
        /* Sessions resume only on a listener with the same name and the same
         * client-certificate rules: a session made without a certificate
         * must not open a listener that requires one. */
        char idtext[1024];
        unsigned int mdlen = 0;
        int k = snprintf(idtext, sizeof(idtext), "tern\n%s\n%s\n%s", l->name,
                         mtls ? ct->client_auth : "none", mtls ? ct->client_ca : "");
        if (k < 0 || (size_t)k >= sizeof(idtext))
            k = (int)sizeof(idtext) - 1;
        EVP_Digest(idtext, (size_t)k, sid, &mdlen, EVP_sha256(), NULL);
    }

    t->ctx = calloc(ngroups, sizeof(*t->ctx));
    if (!t->ctx) {
        report(e, l->line, l->col, what, "out of memory");
        goto fail;
    }
    t->nctx = ngroups;
    for (size_t g = 0; g < ngroups; g++) {
        t->ctx[g] = SSL_CTX_new(TLS_server_method());
        if (!t->ctx[g]) {
            report(e, l->line, l->col, what, "cannot create a context: %s",
                   ssl_reason(why, sizeof(why)));
            goto fail;
        }
        if (server_ctx_common(e, l, t, t->ctx[g], client_store, client_names, sid, any_ocsp) < 0)
            goto fail;
    }
    for (size_t i = 0; i < ct->ncertificates; i++) {
        if (!SSL_CTX_use_cert_and_key(t->ctx[ld[i].group], ld[i].leaf, ld[i].key, ld[i].chain, 1)) {
            report(e, l->line, l->col, what, "certificate %s: %s", ct->certificates[i].cert,
                   ssl_reason(why, sizeof(why)));
            goto fail;
        }
    }

    /* The SNI table: names of every certificate, the first group listing a
     * name wins it. */
    size_t nnames = 0;
    for (size_t i = 0; i < ct->ncertificates; i++)
        nnames += ld[i].nnames;
    t->exact = calloc(nnames ? nnames : 1, sizeof(*t->exact));
    t->wild = calloc(nnames ? nnames : 1, sizeof(*t->wild));
    if (!t->exact || !t->wild) {
        report(e, l->line, l->col, what, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < ct->ncertificates; i++) {
        for (size_t k = 0; k < ld[i].nnames; k++) {
            const char *nm = ld[i].names[k];
            bool wild = nm[0] == '*' && nm[1] == '.' && nm[2];
            if (!wild && strchr(nm, '*'))
                continue; /* partial wildcards: clients refuse them anyway */
            struct sni_ent *se = wild ? &t->wild[t->nwild] : &t->exact[t->nexact];
            se->name = strdup(wild ? nm + 1 : nm);
            se->group = (uint32_t)ld[i].group;
            if (!se->name) {
                report(e, l->line, l->col, what, "out of memory");
                goto fail;
            }
            if (wild)
                t->nwild++;
            else
                t->nexact++;
        }
    }
    struct sni_ent *tabs[2] = {t->exact, t->wild};
    size_t *counts[2] = {&t->nexact, &t->nwild};
    for (int k = 0; k < 2; k++) {
        qsort(tabs[k], *counts[k], sizeof(*tabs[k]), sni_cmp);
        size_t out = 0;
        for (size_t i = 0; i < *counts[k]; i++) {
            if (out && strcmp(tabs[k][out - 1].name, tabs[k][i].name) == 0) {
                free(tabs[k][i].name);
                continue;
            }
            tabs[k][out++] = tabs[k][i];
        }
        *counts[k] = out;
    }
    if (t->nctx > 1)
        lb_debug("listener %s: tls: %zu certificate groups, %zu names, %zu wildcards", l->name,
                 t->nctx, t->nexact, t->nwild);

    for (size_t i = 0; i < ct->ncertificates; i++)
        loaded_free(&ld[i]);
    free(ld);
    X509_STORE_free(client_store);
    sk_X509_NAME_pop_free(client_names, X509_NAME_free);
    return t;

fail:
    if (e->n == nerr)
        report(e, l->line, l->col, what, "cannot set up TLS");
    for (size_t i = 0; ld && i < ct->ncertificates; i++)
        loaded_free(&ld[i]);
    free(ld);
    X509_STORE_free(client_store);
    sk_X509_NAME_pop_free(client_names, X509_NAME_free);
    server_free(t);
    return NULL;
}

/* ---- pools ---- */

/* A server's new session (after the handshake in TLS 1.2, with each ticket in
 * TLS 1.3): it becomes the one the worker offers next. Runs on the worker
 * that owns the connection and the slot. */
static int
client_new_session(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_app_data(ssl);
    if (!slot)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1; /* we keep the reference */
}

static void
client_free(struct lb_tls_client *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t->sni);
    free(t);
}

static struct lb_tls_client *
client_build(struct berr *e, const struct conf_pool *p)
{
    char what[300], why[256];
    snprintf(what, sizeof(what), "pool %s", p->name);
    if (!p->tls_ca && !p->tls_sni) {
        /* Verification is not optional, and the system store with no name to
         * check would accept any server with any public certificate. */
        report(e, p->line, p->col, what,
               "tls needs tls_sni (the name servers are verified against) or tls_ca (a "
               "private CA that signs only them)");
        return NULL;
    }
    struct lb_tls_client *t = calloc(1, sizeof(*t));
    if (!t || !(t->ctx = SSL_CTX_new(TLS_client_method()))) {
        report(e, p->line, p->col, what, "cannot create a TLS context");
        goto fail;
    }
    SSL_CTX *ctx = t->ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* Sessions go to the worker's slot of each server (client_new_session),
     * never to a cache shared by the threads. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, client_new_session);
    if (p->tls_ca) {
        BIO *b = open_file(p->tls_ca, why, sizeof(why));
        if (!b) {
            report(e, p->line, p->col, what, "tls_ca %s: %s", p->tls_ca, why);
            goto fail;
        }
        BIO_free(b);
        if (!SSL_CTX_load_verify_file(ctx, p->tls_ca)) {
            ERR_clear_error();
            report(e, p->line, p->col, what, "tls_ca %s: no PEM CA certificate in it", p->tls_ca);
            goto fail;
        }
    } else if (!SSL_CTX_set_default_verify_paths(ctx)) {
        report(e, p->line, p->col, what, "cannot use the system CA store: %s",
               ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (p->tls_sni) {
        X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
        unsigned char addr[16];
        bool is_ip =
            inet_pton(AF_INET, p->tls_sni, addr) == 1 || inet_pton(AF_INET6, p->tls_sni, addr) == 1;
        t->sni = strdup(p->tls_sni);
        t->sni_set = !is_ip; /* SNI carries host names only (RFC 6066) */
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (!t->sni || (is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(vp, p->tls_sni)
                              : !X509_VERIFY_PARAM_set1_host(vp, p->tls_sni, 0))) {
            report(e, p->line, p->col, what, "tls_sni '%s': not a usable name", p->tls_sni);
            goto fail;
        }
    }
    return t;
fail:
    ERR_clear_error();
    client_free(t);
    return NULL;
}

/* ---- building a generation ---- */

void
lb_tls_free(struct lb_tls *t)
{
    if (!t)
        return;
    for (size_t i = 0; t->listeners && i < t->nlisteners; i++)
        server_free(t->listeners[i]);
    for (size_t i = 0; t->pools && i < t->npools; i++)
        client_free(t->pools[i]);
    free(t->listeners);
    free(t->pools);
    free(t);
}

int
lb_tls_build(const struct conf *c, FILE *err, struct lb_tls **out)
{
    struct berr e = {.out = err, .c = c};
    bool any = false;

    *out = NULL;
    for (size_t i = 0; i < c->nlisteners; i++)
        any |= c->listeners[i].tls.enabled;
    for (size_t i = 0; i < c->npools; i++)
        any |= c->pools[i].tls;
    if (!any)
        return 0;
    lb_tls__keys_init();
    ERR_clear_error();

    struct lb_tls *t = calloc(1, sizeof(*t));
    if (t) {
        t->listeners = calloc(c->nlisteners ? c->nlisteners : 1, sizeof(*t->listeners));
        t->pools = calloc(c->npools ? c->npools : 1, sizeof(*t->pools));
    }
    if (!t || !t->listeners || !t->pools) {
        lb_tls_free(t);
        report(&e, 0, 0, "tls", "out of memory");
        return e.n;
    }
    t->nlisteners = c->nlisteners;
    t->npools = c->npools;
    /* Every listener and pool is tried, so that tern -t lists all the
     * problems at once. */
    for (size_t i = 0; i < c->nlisteners; i++)
        if (c->listeners[i].tls.enabled)
            t->listeners[i] = server_build(&e, &c->listeners[i]);
    for (size_t i = 0; i < c->npools; i++)
        if (c->pools[i].tls)
            t->pools[i] = client_build(&e, &c->pools[i]);
    if (e.n) {
        lb_tls_free(t);
        return e.n;
    }
    *out = t;
    return 0;
}

int
lb_tls_attach(struct lb_snapshot *s, char **errors)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    *errors = NULL;
    if (!f) {
        *errors = strdup("out of memory while setting up TLS\n");
        return -1;
    }
    int n = lb_tls_build(s->conf, f, &s->tls);
    fclose(f);
    if (!n) {
        free(buf);
        return 0;
    }
    *errors = buf;
    return -1;
}

int
lb_tls_check(const struct conf *c, FILE *err)
{
    struct lb_tls *t = NULL;
    int n = lb_tls_build(c, err, &t);
    lb_tls_free(t);
    return n;
}
