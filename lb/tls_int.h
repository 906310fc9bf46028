/*
 * Internals shared by tls.c, tls_ctx.c and tls_tickets.c, the only files of
 * lb/ that include OpenSSL: tls_ctx.c builds the contexts, tls.c runs the
 * connections made from them (so it reads the two context structs),
 * tls_tickets.c holds the process-wide session ticket keys the listeners'
 * contexts use. Nothing here is visible outside them; the rest of lb/ sees
 * only lb/tls.h.
 */
#ifndef LB_TLS_INT_H
#define LB_TLS_INT_H

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "lb/tls.h"

struct cert_ent; /* a served certificate and its OCSP staple (tls_ctx.c) */
struct sni_ent;  /* one name of a listener's SNI table (tls_ctx.c) */

struct lb_tls_server {
    SSL_CTX **ctx; /* per certificate group; ctx[0] is the default */
    size_t nctx;
    struct sni_ent *exact, *wild;
    size_t nexact, nwild;
    struct cert_ent *certs;
    size_t ncerts;
    unsigned char alpn[256]; /* wire format, server preference order */
    unsigned alpn_len;
};

struct lb_tls_client {
    SSL_CTX *ctx;
    char *sni;    /* sent in SNI (names only) and verified; NULL: neither */
    bool sni_set; /* sni is a host name, not an address */
};

/* Creates the ticket keys once per process; any thread, before the first
 * context that uses them. */
void lb_tls__keys_init(void);
/* The listeners' session ticket callback
 * (SSL_CTX_set_tlsext_ticket_key_evp_cb); runs on the workers. */
int lb_tls__ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                      EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc);

#endif
