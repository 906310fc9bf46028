/*
 * TLS for the data path: contexts built from a configuration generation on
 * the control thread, and non-blocking per-connection calls for the workers.
 *
 * This header is the only way the rest of lb/ reaches OpenSSL: it names the
 * OpenSSL types by their struct tags (struct ssl_st is SSL, struct ssl_ctx_st
 * is SSL_CTX) so that no other file includes an OpenSSL header.
 *
 * Contexts belong to a snapshot (struct lb_snapshot.tls) and are freed with
 * it: every connection holds its snapshot, so a context outlives the
 * connections that use it, and a reload never changes a running handshake.
 * Session ticket keys are process-wide instead, so that a ticket stays good
 * across reloads and on every worker (see tls_tickets.c).
 *
 * The I/O calls report "would block" with the libev event (EV_READ or
 * EV_WRITE) the connection waits for: TLS may need to write to make a read
 * progress (a KeyUpdate answer) and to read to finish a handshake, so the
 * caller watches what is asked for, not what it is doing.
 */
#ifndef LB_TLS_H
#define LB_TLS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

struct conf;
struct lb_listener;
struct lb_snapshot;
struct ssl_st;
struct ssl_ctx_st;
struct ssl_session_st;
struct lb_tls_server; /* a listener's contexts: one per certificate group, SNI table */
struct lb_tls_client; /* a pool's context for connecting to its servers */

/* The TLS state of one configuration generation. */
struct lb_tls {
    struct lb_tls_server **listeners; /* per conf listener; NULL: plain text */
    struct lb_tls_client **pools;     /* per conf pool; NULL: plain text */
    size_t nlisteners, npools;
};

/* ---- control thread ---- */

/* Builds every listener's and pool's context for c, reading certificates,
 * keys, CAs and OCSP responses. Returns the number of errors, each written to
 * err (may be NULL) as one line "FILE:LINE:COL: listener NAME: ... PATH: why";
 * on success *out is the new state (NULL when c uses no TLS at all). */
int lb_tls_build(const struct conf *c, FILE *err, struct lb_tls **out);
void lb_tls_free(struct lb_tls *t);
/* lb_tls_build into s->tls: the snapshot owns the contexts from then on.
 * Returns 0, or -1 with *errors set to the malloc'd error lines. */
int lb_tls_attach(struct lb_snapshot *s, char **errors);
/* Builds and frees, for tern -t: returns the number of errors. */
int lb_tls_check(const struct conf *c, FILE *err);
/* Starts and stops the hourly rotation of the session ticket keys. */
void lb_tls_keys_start(struct ev_loop *loop);
void lb_tls_keys_stop(struct ev_loop *loop);
/* Makes a new ticket encryption key current; the previous one still
 * decrypts (those tickets are renewed), the one before is forgotten. */
void lb_tls_keys_rotate(void);

/* ---- workers ---- */

/* A server-side connection on fd for a listener. NULL on allocation failure. */
struct ssl_st *lb_tls_accept_new(struct lb_tls_server *t, int fd);
/* A client-side connection on fd to a server of the pool (SNI and name
 * verification as configured). It offers *cache, if set, for resumption, and
 * the sessions the server hands out replace *cache (the worker's slot for
 * that server, which must outlive the connection). NULL on allocation
 * failure. */
struct ssl_st *lb_tls_connect_new(struct lb_tls_client *t, int fd, struct ssl_session_st **cache);
void lb_tls_session_free(struct ssl_session_st *s);
/* Drives the handshake: 1 when done, 0 when it waits for *want, -1 on
 * failure (lb_tls_why says why). */
int lb_tls_handshake(struct ssl_st *ssl, int *want);
/* Reads up to n bytes: > 0 bytes, 0 on the peer's close_notify, -1 when it
 * waits for *want, -2 on an error (including a cut without close_notify,
 * which could hide a truncated message). */
ssize_t lb_tls_read(struct ssl_st *ssl, void *buf, size_t n, int *want);
/* Writes up to n bytes (one record or more): > 0 bytes written, -1 when it
 * waits for *want (retry with the same bytes, possibly moved, possibly
 * more), -2 on an error. */
ssize_t lb_tls_write(struct ssl_st *ssl, const void *buf, size_t n, int *want);
/* Sends close_notify once (best effort, never blocks). */
void lb_tls_shutdown(struct ssl_st *ssl);
/* Sends close_notify if the connection is healthy, then frees it. The
 * caller closes the socket. */
void lb_tls_conn_free(struct ssl_st *ssl);
/* Whether decrypted or undecrypted bytes wait inside the connection. */
bool lb_tls_pending(struct ssl_st *ssl);
/* For an idle connection whose socket became readable: processes what
 * arrived and returns true when it was only TLS housekeeping (a session
 * ticket), false for data, EOF or an error. */
bool lb_tls_idle_ok(struct ssl_st *ssl);
/* Negotiated version ("TLSv1.3") and cipher; static strings. */
const char *lb_tls_version(const struct ssl_st *ssl);
const char *lb_tls_cipher(const struct ssl_st *ssl);
/* The subject of the verified client certificate (RFC 2253, printable
 * ASCII only), malloc'd, or NULL when the client sent none. */
char *lb_tls_peer_subject(struct ssl_st *ssl);
/* Why the last call on this thread failed, for a log line. */
const char *lb_tls_why(struct ssl_st *ssl, char *buf, size_t n);

/* tls_tunnel.c: a tcp listener with TLS on either side (termination or a
 * pool with tls: true) proxies with read/write through TLS instead of
 * splice. Takes ownership of fd. */
void lb_tls_tunnel_accept(struct lb_listener *l, int fd, const struct sockaddr_storage *peer);

#endif
