/*
 * The e-mail channel: one blocking SMTP submission through libesmtp, run on
 * the host's job pool (notify.c). libesmtp lives in this file only.
 *
 * Four traps of libesmtp 1.1 are handled here (shared/notes/autoscale.md,
 * section 5):
 *   - over TLS 1.3 it intermittently quits right after the EHLO that
 *     follows STARTTLS (about one session in four against aiosmtpd, which
 *     sends TLS 1.3 session tickets; none in a row of 12 with TLS 1.2), so
 *     we hand it an OpenSSL context of ours that speaks TLS 1.2 only, peer
 *     verified against email.ca_file or the system's CAs;
 *   - when the server refuses AUTH it sends the mail without it and tells
 *     nobody: the protocol monitor watches the AUTH replies instead;
 *   - its default timeouts are RFC 5321's minimums (5 minutes for the
 *     greeting) and it raises smaller values to them unless told
 *     Timeout_OVERRIDE_RFC2822_MINIMUM;
 *   - smtp_start_session() returns success when the protocol ran, even if
 *     the server refused the message: success is a 2xx transfer status.
 *     A recipient refused at RCPT is reported; the others have the
 *     message, so a retry goes only to those refused for now (4xx).
 * AUTH credentials come through the interact callback's argument, not the
 * statics of libesmtp's example, because several sends may run at once.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Order matters: libesmtp.h uses size_t without including stddef.h, and
 * declares smtp_starttls_set_ctx only after openssl/ssl.h and
 * smtp_auth_set_context only after auth-client.h. */
// clang-format off
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <auth-client.h>
#include <libesmtp.h>
// clang-format on

#include "watch/watch.h"

struct send_ctx {
    const struct watch_email_cfg *cfg;
    char event[200];    /* what libesmtp's events said went wrong */
    char rcpt_err[200]; /* every refused recipient, with the server's reply */
    unsigned rcpt_ok, rcpt_refused, rcpt_later;
    size_t rcpt_next; /* recipients are enumerated in the order of cfg->to */
    bool *later;      /* [cfg->nto]: refused for now (4xx), worth a retry */
    bool auth_sent;   /* an AUTH command went out */
    int auth_code;    /* the final reply to the last AUTH; 0: none yet */
    char auth_reply[120];
};

/* Instances of the plugin using libesmtp. Two can overlap: one whose
 * section a reload removed finishes once its last send ends, after a
 * later reload may have loaded the next, and auth_client_exit() unloads
 * the AUTH mechanisms that one's sends use. init and fini run on the
 * control thread. */
static unsigned email_users;

void
watch_email_global_init(void)
{
    if (email_users++ == 0)
        auth_client_init();
}

void
watch_email_global_exit(void)
{
    if (email_users > 0 && --email_users == 0)
        auth_client_exit();
}

static int
interact(auth_client_request_t req, char **result, int fields, void *arg)
{
    struct send_ctx *sc = arg;

    for (int i = 0; i < fields; i++) {
        if (req[i].flags & AUTH_USER)
            result[i] = sc->cfg->user;
        else if (req[i].flags & AUTH_PASS)
            result[i] = sc->cfg->password;
        else
            result[i] = NULL;
        if (result[i] == NULL)
            return 0;
    }
    return 1;
}

static void
on_event(smtp_session_t s, int event, void *arg, ...)
{
    struct send_ctx *sc = arg;
    va_list ap;

    va_start(ap, arg);
    switch (event) {
    case SMTP_EV_EXTNA_STARTTLS:
        if (sc->cfg->starttls == WATCH_TLS_REQUIRED)
            snprintf(sc->event, sizeof(sc->event),
                     "the server does not offer STARTTLS, which email.starttls requires");
        break;
    case SMTP_EV_INVALID_PEER_CERTIFICATE: {
        long result = va_arg(ap, long);
        int *ok = va_arg(ap, int *);

        *ok = 0;
        snprintf(sc->event, sizeof(sc->event), "the server's certificate was rejected: %s",
                 X509_verify_cert_error_string(result));
        break;
    }
    case SMTP_EV_NO_PEER_CERTIFICATE:
    case SMTP_EV_WRONG_PEER_CERTIFICATE: {
        int *ok = va_arg(ap, int *);

        *ok = 0;
        snprintf(sc->event, sizeof(sc->event),
                 event == SMTP_EV_NO_PEER_CERTIFICATE
                     ? "the server sent no certificate"
                     : "the server's certificate does not name %s (use the name it was issued for)",
                 sc->cfg->server);
        break;
    }
    case SMTP_EV_WEAK_CIPHER: {
        int bits = va_arg(ap, int);
        int *ok = va_arg(ap, int *);

        *ok = bits >= 128;
        break;
    }
    default:
        break;
    }
    va_end(ap);
}

/* libesmtp answers a refused AUTH by sending the mail without it ("the MTA
 * is required to accept mail for its own domain"), and tells nobody. The
 * protocol monitor is the only place that sees the reply, so a wrong
 * password is caught here rather than hidden behind a delivered alert. */
static void
monitor(const char *buf, int len, int writing, void *arg)
{
    struct send_ctx *sc = arg;

    if (writing == SMTP_CB_WRITING) {
        if (len >= 5 && strncasecmp(buf, "AUTH ", 5) == 0) {
            sc->auth_sent = true;
            sc->auth_code = 0;
        }
        return;
    }
    if (writing != SMTP_CB_READING || !sc->auth_sent || sc->auth_code != 0 || len < 3)
        return;
    if (buf[0] < '2' || buf[0] > '5' || buf[1] < '0' || buf[1] > '9' || buf[2] < '0' ||
        buf[2] > '9' || buf[0] == '3') /* 334: the exchange goes on */
        return;
    sc->auth_code = (buf[0] - '0') * 100 + (buf[1] - '0') * 10 + (buf[2] - '0');
    int n = 0;
    while (n < len && buf[n] != '\r' && buf[n] != '\n') /* buf is not a C string */
        n++;
    snprintf(sc->auth_reply, sizeof(sc->auth_reply), "%.*s", n, buf);
}

/* Writes why AUTH did not succeed into out ("" when it did or was not
 * asked for). */
static void
auth_problem(const struct send_ctx *sc, char *out, size_t outlen)
{
    out[0] = '\0';
    if (sc->cfg->user == NULL || (sc->auth_sent && sc->auth_code / 100 == 2))
        return;
    if (!sc->auth_sent)
        snprintf(out, outlen, "the server offered no AUTH mechanism for user %s", sc->cfg->user);
    else
        snprintf(out, outlen, "authentication as %s failed (%s)", sc->cfg->user,
                 sc->auth_code ? sc->auth_reply : "no reply");
}

/* The length of a reply's text without the line end libesmtp keeps. */
static int
text_len(const smtp_status_t *st)
{
    size_t n = st != NULL && st->text != NULL ? strlen(st->text) : 0;

    while (n > 0 && (st->text[n - 1] == '\n' || st->text[n - 1] == '\r' || st->text[n - 1] == ' '))
        n--;
    return (int)n;
}

/* A recipient without a status (code 0) was never tried: the session
 * ended before RCPT, which the message's own status explains. */
static void
check_rcpt(smtp_recipient_t r, const char *mailbox, void *arg)
{
    struct send_ctx *sc = arg;
    const smtp_status_t *st = smtp_recipient_status(r);
    size_t n = strlen(sc->rcpt_err), i = sc->rcpt_next++;

    if (st == NULL || st->code == 0)
        return;
    if (st->code / 100 == 2) {
        sc->rcpt_ok++;
        return;
    }
    sc->rcpt_refused++;
    if (st->code / 100 == 4 && i < sc->cfg->nto) {
        sc->later[i] = true;
        sc->rcpt_later++;
    }
    snprintf(sc->rcpt_err + n, sizeof(sc->rcpt_err) - n, "%srecipient %s refused: %d %.*s",
             n ? "; " : "", mailbox, st->code, text_len(st), st->text ? st->text : "");
}

/* Leaves in c->to only the recipients refused for now: a retry goes to
 * them, not again to those who have the mail or were refused for good. */
static void
keep_later(struct watch_email_cfg *c, const bool *later)
{
    size_t n = 0;

    for (size_t i = 0; i < c->nto; i++) {
        if (later[i])
            c->to[n++] = c->to[i];
        else
            free(c->to[i]);
    }
    c->nto = n;
}

static SSL_CTX *
make_ssl_ctx(const struct watch_email_cfg *c, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    /* TLS 1.2 only: see the top of this file. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (c->ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL) != 1
                           : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "cannot load CA certificates%s%s: %s", c->ca_file ? " from " : "",
                 c->ca_file ? c->ca_file : "", ERR_reason_error_string(ERR_get_error()));
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int
watch_email_send(struct watch_email_cfg *c, const char *subject, const char *body, char *err,
                 size_t errlen)
{
    struct send_ctx sc = {.cfg = c, .later = calloc(c->nto ? c->nto : 1, sizeof(bool))};
    static const int steps[] = {Timeout_GREETING, Timeout_ENVELOPE, Timeout_DATA, Timeout_TRANSFER,
                                Timeout_DATA2};
    smtp_session_t s = NULL;
    smtp_message_t m;
    auth_context_t a = NULL;
    SSL_CTX *ctx = NULL;
    const smtp_status_t *st;
    char auth[200];
    int rc = -1;

    err[0] = '\0';
    if (sc.later == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s = smtp_create_session();
    if (s == NULL) {
        free(sc.later);
        snprintf(err, errlen, "cannot create an SMTP session");
        return -1;
    }
    if (smtp_set_server(s, c->server) == 0 || (m = smtp_add_message(s)) == NULL)
        goto lib_error;
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
        smtp_set_timeout(s, steps[i] | Timeout_OVERRIDE_RFC2822_MINIMUM,
                         c->timeout_ms > 1000 ? c->timeout_ms : 1000);
    smtp_set_eventcb(s, on_event, &sc);
    smtp_set_monitorcb(s, monitor, &sc, 0);
    if (c->starttls != WATCH_TLS_OFF) {
        ctx = make_ssl_ctx(c, err, errlen);
        if (ctx == NULL)
            goto out;
        smtp_starttls_set_ctx(s, ctx);
        smtp_starttls_enable(s, c->starttls == WATCH_TLS_REQUIRED ? Starttls_REQUIRED
                                                                  : Starttls_ENABLED);
    } else {
        smtp_starttls_enable(s, Starttls_DISABLED);
    }
    if (c->user != NULL) {
        a = auth_create_context();
        if (a == NULL)
            goto lib_error;
        auth_set_mechanism_flags(a, AUTH_PLUGIN_PLAIN, 0);
        auth_set_interact_cb(a, interact, &sc);
        smtp_auth_set_context(s, a);
    }
    smtp_set_reverse_path(m, c->from);
    smtp_set_header(m, "Subject", subject);
    smtp_set_header_option(m, "Subject", Hdr_OVERRIDE, 1);
    for (size_t i = 0; i < c->nto; i++) {
        if (smtp_add_recipient(m, c->to[i]) == NULL)
            goto lib_error;
        smtp_set_header(m, "To", NULL, c->to[i]);
    }
    smtp_set_message_str(m, (void *)body);

    if (smtp_start_session(s) == 0) {
        char buf[128];

        snprintf(err, errlen, "%s%s%s", sc.event[0] ? sc.event : "", sc.event[0] ? ": " : "",
                 smtp_strerror(smtp_errno(), buf, sizeof(buf)));
        goto out;
    }
    smtp_enumerate_recipients(m, check_rcpt, &sc);
    st = smtp_message_transfer_status(m);
    if (st == NULL || st->code / 100 != 2) {
        /* Only a refused AUTH explains what follows (often a 530); a session
         * that ended before AUTH says so itself. */
        auth_problem(&sc, auth, sizeof(auth));
        if (auth[0] && sc.auth_sent) {
            size_t n = (size_t)snprintf(err, errlen, "%s; then ", auth);

            if (n < errlen) {
                err += n;
                errlen -= n;
            }
        }
        if (sc.event[0])
            snprintf(err, errlen, "%s", sc.event);
        else if (sc.rcpt_refused > 0 && sc.rcpt_ok == 0) {
            /* Then libesmtp sends DATA anyway and reports the server's
             * "need RCPT" instead of the reason. */
            snprintf(err, errlen, "%s", sc.rcpt_err);
            if (sc.rcpt_later > 0)
                keep_later(c, sc.later);
        } else if (st != NULL && st->code != 0)
            snprintf(err, errlen, "message refused: %d %.*s", st->code, text_len(st),
                     st->text ? st->text : "");
        else if ((st = smtp_reverse_path_status(m)) != NULL && st->code / 100 > 3)
            snprintf(err, errlen, "sender %s refused: %d %.*s", c->from, st->code, text_len(st),
                     st->text ? st->text : "");
        else
            snprintf(err, errlen,
                     "the session ended before the message was sent (TLS or AUTH "
                     "failed, or the server closed)");
        goto out;
    }
    if (sc.rcpt_later > 0) {
        /* Delivered, but some were told to come back later. */
        snprintf(err, errlen, "%s", sc.rcpt_err);
        keep_later(c, sc.later);
        goto out;
    }
    rc = 0;
    /* Delivered: sending it again would duplicate the alert for everyone
     * who got it, so a recipient refused for good or a refused AUTH is a
     * warning for the operator, not a failure. */
    auth_problem(&sc, auth, sizeof(auth));
    if (auth[0])
        snprintf(err, errlen, "%s%s%s; the server took the message without it", sc.rcpt_err,
                 sc.rcpt_err[0] ? "; " : "", auth);
    else
        snprintf(err, errlen, "%s", sc.rcpt_err);
    goto out;
lib_error : {
    char buf[128];

    snprintf(err, errlen, "libesmtp: %s", smtp_strerror(smtp_errno(), buf, sizeof(buf)));
}
out:
    free(sc.later);
    smtp_destroy_session(s);
    if (a != NULL)
        auth_destroy_context(a);
    if (ctx != NULL)
        SSL_CTX_free(ctx);
    return rc;
}
