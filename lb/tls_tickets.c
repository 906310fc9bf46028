/*
 * Session ticket keys: one key set for the whole process, not per context.
 * They live apart from the contexts (tls_ctx.c) because they outlive them: a
 * context belongs to one configuration generation and dies with it, the keys
 * belong to the process, so a ticket issued by any worker, before or after a
 * reload, resumes on any worker.
 *
 * The set is an immutable pair (current key, previous key) published
 * through an atomic pointer; the control thread rotates it every hour, so a
 * ticket lives at most two hours and one encrypted with the previous key is
 * renewed when used. A replaced set is freed only at the rotation after next,
 * an hour after the last worker could have loaded it, so the workers read it
 * without a lock. Resumption across listeners is kept apart by each
 * listener's session id context (its name and client-certificate settings,
 * see tls_ctx.c).
 */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lb/log.h"
#include "lb/tls_int.h"

#define TICKET_ROTATE_SECS 3600.0

struct tkey {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

struct tkeys {
    struct tkey k[2]; /* k[0] encrypts; both decrypt */
    int n;
};

static _Atomic(struct tkeys *) g_keys;
static struct tkeys *g_keys_retired; /* control thread only */
static EVP_CIPHER *g_aes;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static ev_timer g_rotate;

static void
tkey_new(struct tkey *k)
{
    if (RAND_bytes((unsigned char *)k, sizeof(*k)) != 1) {
        /* Without randomness there is no safe key: tickets stay off (the
         * callback finds no key set) and every handshake is a full one. */
        lb_err("tls: no random bytes for a session ticket key");
        memset(k, 0, sizeof(*k));
    }
}

static void
tls_once(void)
{
    g_aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    struct tkeys *ks = calloc(1, sizeof(*ks));
    if (ks && g_aes) {
        tkey_new(&ks->k[0]);
        ks->n = 1;
        atomic_store_explicit(&g_keys, ks, memory_order_release);
    } else {
        free(ks);
    }
}

void
lb_tls_keys_rotate(void)
{
    pthread_once(&g_once, tls_once);
    struct tkeys *cur = atomic_load_explicit(&g_keys, memory_order_acquire);
    struct tkeys *ks = calloc(1, sizeof(*ks));
    if (!cur || !ks) {
        free(ks);
        return;
    }
    tkey_new(&ks->k[0]);
    ks->k[1] = cur->k[0];
    ks->n = 2;
    atomic_store_explicit(&g_keys, ks, memory_order_release);
    /* The set retired an hour ago has been out of every worker's hands
     * since then. */
    free(g_keys_retired);
    g_keys_retired = cur;
}

static void
rotate_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    lb_tls_keys_rotate();
    lb_debug("tls: session ticket key rotated");
}

void
lb_tls__keys_init(void)
{
    pthread_once(&g_once, tls_once);
}

void
lb_tls_keys_start(struct ev_loop *loop)
{
    pthread_once(&g_once, tls_once);
    ev_timer_init(&g_rotate, rotate_cb, TICKET_ROTATE_SECS, TICKET_ROTATE_SECS);
    ev_timer_start(loop, &g_rotate);
}

void
lb_tls_keys_stop(struct ev_loop *loop)
{
    ev_timer_stop(loop, &g_rotate);
}

/* OpenSSL's ticket callback: 1 = key found/used, 2 = found but renew the
 * ticket, 0 = no key (full handshake), -1 = error. */
int
lb_tls__ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                  EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    struct tkeys *ks = atomic_load_explicit(&g_keys, memory_order_acquire);
    const struct tkey *k = NULL;
    int ret = 1;

    if (!ks)
        return enc ? -1 : 0;
    if (enc) {
        k = &ks->k[0];
        memcpy(key_name, k->name, 16);
        if (RAND_bytes(iv, 16) != 1)
            return -1;
    } else {
        for (int i = 0; i < ks->n && !k; i++)
            if (memcmp(key_name, ks->k[i].name, 16) == 0)
                k = &ks->k[i];
        if (!k)
            return 0;
        /* A ticket of the previous key is renewed; in TLS 1.3 every
         * resumption gets a fresh one, since clients use each once (RFC 8446
         * appendix C.4: reusing one would link the connections). */
        ret = (k != &ks->k[0] || SSL_version(ssl) >= TLS1_3_VERSION) ? 2 : 1;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string("key", (void *)k->hmac, sizeof(k->hmac)),
        OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_MAC_CTX_set_params(hctx, params))
        return -1;
    if (enc ? !EVP_EncryptInit_ex(ectx, g_aes, NULL, k->aes, iv)
            : !EVP_DecryptInit_ex(ectx, g_aes, NULL, k->aes, iv))
        return -1;
    return ret;
}
