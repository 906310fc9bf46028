/*
 * Notifications: who hears about an alarm, when, and what happens when a
 * send fails.
 *
 * The policy is the one operators ask for after their first alert storm
 * (shared/notes/autoscale.md, section 3): a message when an alarm enters
 * ALARM and one when it leaves it; alarms that change within group_wait of
 * each other go out as one message per notifier; an alarm that stays on is
 * repeated every `repeat` (watch.c decides, off by default); each notifier
 * has a token bucket of rate_limit messages per hour, and what it holds
 * back is counted and mentioned in the next message that goes out.
 *
 * Sending blocks (SMTP, HTTP), so each channel of a message becomes a
 * delivery that runs on the host's job pool with its own copy of the
 * settings and text -- a reload may change the notifier meanwhile. A
 * failed delivery is logged and retried with exponential backoff (2 s,
 * 4 s, ... capped at 5 min) up to `retries` attempts; the notifiers'
 * counters, last error and recent deliveries are in GET /api/v1/alarms.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "watch/watch.h"

enum channel { CH_EMAIL = 0, CH_SMS };

static const char *const channel_names[] = {"email", "sms"};

struct notifier {
    char *name;
    bool has_email, has_sms;
    struct watch_email_cfg email;
    struct watch_sms_cfg sms;
    char *config_error; /* e.g. an unreadable password file: sends fail with it */
    struct watch_fields *batch;
    size_t nbatch;
    struct tern_timer *group_timer;
    double tokens, refilled;
    unsigned suppressed; /* held back by the rate limit since the last send */
    unsigned long sent, failed, retries, suppressed_total;
    char last_error[320];
    double last_error_time, last_sent_time;
    struct watch_notify *wn;
};

struct delivery {
    struct delivery *next;
    struct watch_notify *wn;
    char *notifier;
    enum channel ch;
    struct watch_email_cfg email;
    struct watch_sms_cfg sms;
    struct watch_fields f; /* the first change: the SMS template's fields */
    char *subject, *body, *text;
    int attempts;
    int rc;
    char err[256];
    struct tern_timer *retry;
};

#define RECENT 20

struct recent {
    char notifier[64];
    const char *channel;
    char subject[160];
    int attempts;
    const char *state; /* "sent", "retrying", "failed" */
    char error[256];
    double time;
};

struct watch_notify {
    const struct tern_host *h;
    struct notifier **v;
    size_t n;
    double group_wait; /* s */
    double rate;       /* messages per hour per notifier */
    int max_attempts;
    struct delivery *out; /* deliveries not finished (in a job or waiting to retry) */
    struct recent recent[RECENT];
    size_t nrecent, rpos;
};

/* ---- copies of settings for a delivery ---- */

static char **
dup_list(char *const *v, size_t n)
{
    char **c = calloc(n ? n : 1, sizeof(char *));

    for (size_t i = 0; c != NULL && i < n; i++)
        c[i] = strdup(v[i]);
    return c;
}

static void
free_list(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

static char *
dup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void
email_copy(struct watch_email_cfg *d, const struct watch_email_cfg *s)
{
    *d = *s;
    d->server = dup0(s->server);
    d->user = dup0(s->user);
    d->password = dup0(s->password);
    d->from = dup0(s->from);
    d->to = dup_list(s->to, s->nto);
    d->ca_file = dup0(s->ca_file);
}

static void
email_free(struct watch_email_cfg *c)
{
    free(c->server);
    free(c->user);
    if (c->password != NULL)
        memset(c->password, 0, strlen(c->password));
    free(c->password);
    free(c->from);
    free_list(c->to, c->nto);
    free(c->ca_file);
    memset(c, 0, sizeof(*c));
}

static void
sms_copy(struct watch_sms_cfg *d, const struct watch_sms_cfg *s)
{
    *d = *s;
    d->url = dup0(s->url);
    d->method = dup0(s->method);
    d->headers = dup_list(s->headers, s->nheaders);
    d->body = dup0(s->body);
    d->to = dup_list(s->to, s->nto);
}

static void
sms_free(struct watch_sms_cfg *c)
{
    free(c->url);
    free(c->method);
    free_list(c->headers, c->nheaders);
    free(c->body);
    free_list(c->to, c->nto);
    memset(c, 0, sizeof(*c));
}

/* ---- configuration ---- */

static char **
read_list(const struct tern_value *v, size_t *n)
{
    char **out;

    *n = 0;
    if (v == NULL || v->kind != TERN_VAL_LIST)
        return NULL;
    out = calloc(v->n ? v->n : 1, sizeof(char *));
    for (size_t i = 0; out != NULL && i < v->n; i++)
        if ((out[*n] = dup0(tern_value_str(&v->items[i], NULL))) != NULL)
            (*n)++;
    return out;
}

static char *
read_password(const char *path, char **err)
{
    FILE *f = fopen(path, "re");
    char buf[512];
    size_t len;

    if (f == NULL) {
        if (asprintf(err, "cannot read password_file %s: %s", path, strerror(errno)) < 0)
            *err = NULL;
        return NULL;
    }
    len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    /* The file holds the password and perhaps a final newline. */
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    return strdup(buf);
}

static void
read_email(struct notifier *nt, const struct tern_value *e)
{
    struct watch_email_cfg *c = &nt->email;
    const char *tls = tern_value_str(tern_value_get(e, "starttls"), "required");
    const char *pw = tern_value_str(tern_value_get(e, "password_file"), NULL);

    nt->has_email = true;
    c->server = dup0(tern_value_str(tern_value_get(e, "server"), NULL));
    c->starttls = strcmp(tls, "off") == 0        ? WATCH_TLS_OFF
                  : strcmp(tls, "optional") == 0 ? WATCH_TLS_OPTIONAL
                                                 : WATCH_TLS_REQUIRED;
    c->user = dup0(tern_value_str(tern_value_get(e, "user"), NULL));
    c->from = dup0(tern_value_str(tern_value_get(e, "from"), NULL));
    c->to = read_list(tern_value_get(e, "to"), &c->nto);
    c->ca_file = dup0(tern_value_str(tern_value_get(e, "ca_file"), NULL));
    c->timeout_ms = (long)tern_value_int(tern_value_get(e, "timeout"), 30000);
    c->sms_format = strcmp(tern_value_str(tern_value_get(e, "format"), "full"), "sms") == 0;
    if (pw != NULL && c->user != NULL)
        c->password = read_password(pw, &nt->config_error);
    else if (c->user != NULL && nt->config_error == NULL)
        nt->config_error = strdup("email.user is set but email.password_file is not");
}

static void
read_sms(struct notifier *nt, const struct tern_value *s)
{
    struct watch_sms_cfg *c = &nt->sms;

    nt->has_sms = true;
    c->url = dup0(tern_value_str(tern_value_get(s, "url"), NULL));
    c->method = dup0(tern_value_str(tern_value_get(s, "method"), "POST"));
    c->headers = read_list(tern_value_get(s, "headers"), &c->nheaders);
    c->body = dup0(tern_value_str(tern_value_get(s, "body"), NULL));
    c->to = read_list(tern_value_get(s, "to"), &c->nto);
    c->timeout_ms = (long)tern_value_int(tern_value_get(s, "timeout"), 10000);
}

static void
clear_settings(struct notifier *nt)
{
    email_free(&nt->email);
    sms_free(&nt->sms);
    free(nt->config_error);
    nt->config_error = NULL;
    nt->has_email = nt->has_sms = false;
}

static void
notifier_free(struct watch_notify *wn, struct notifier *nt)
{
    if (nt->group_timer != NULL)
        wn->h->timer_cancel(wn->h, nt->group_timer);
    for (size_t i = 0; i < nt->nbatch; i++)
        watch_fields_free(&nt->batch[i]);
    free(nt->batch);
    clear_settings(nt);
    free(nt->name);
    free(nt);
}

static struct notifier *
find(struct watch_notify *wn, const char *name)
{
    for (size_t i = 0; i < wn->n; i++)
        if (strcmp(wn->v[i]->name, name) == 0)
            return wn->v[i];
    return NULL;
}

struct watch_notify *
watch_notify_new(const struct tern_host *h)
{
    struct watch_notify *wn = calloc(1, sizeof(*wn));

    if (wn != NULL)
        wn->h = h;
    return wn;
}

int
watch_notify_configure(struct watch_notify *wn, const struct tern_value *sec)
{
    const struct tern_host *h = wn->h;
    const struct tern_value *map = tern_value_get(sec, "notify");
    size_t n = map ? map->n : 0;
    struct notifier **v = calloc(n ? n : 1, sizeof(*v));

    if (v == NULL)
        return -1;
    wn->group_wait = (double)tern_value_int(tern_value_get(sec, "group_wait"), 2000) / 1000.0;
    wn->rate = tern_value_double(tern_value_get(sec, "rate_limit"), 20);
    wn->max_attempts = (int)tern_value_int(tern_value_get(sec, "retries"), 5);
    if (wn->max_attempts < 1)
        wn->max_attempts = 1;
    for (size_t i = 0; i < n; i++) {
        const struct tern_value *item = &map->items[i];
        struct notifier *nt = find(wn, item->key);

        if (nt != NULL) {
            /* Kept: counters, bucket and batch stay; settings are new. */
            clear_settings(nt);
            for (size_t j = 0; j < wn->n; j++)
                if (wn->v[j] == nt)
                    wn->v[j] = NULL;
        } else {
            nt = calloc(1, sizeof(*nt));
            if (nt == NULL || (nt->name = strdup(item->key)) == NULL) {
                free(nt);
                continue;
            }
            nt->wn = wn;
            nt->tokens = wn->rate;
            nt->refilled = h->monotonic(h);
        }
        if (tern_value_get(item, "email") != NULL)
            read_email(nt, tern_value_get(item, "email"));
        if (tern_value_get(item, "sms") != NULL)
            read_sms(nt, tern_value_get(item, "sms"));
        if (nt->config_error != NULL)
            h->log(h, TERN_LOG_ERR, "notifier %s: %s; its sends will fail until this is fixed",
                   nt->name, nt->config_error);
        v[i] = nt;
    }
    for (size_t j = 0; j < wn->n; j++) {
        if (wn->v[j] == NULL)
            continue;
        if (wn->v[j]->nbatch > 0)
            h->log(h, TERN_LOG_WARN, "notifier %s removed: %zu pending notification%s dropped",
                   wn->v[j]->name, wn->v[j]->nbatch, wn->v[j]->nbatch == 1 ? "" : "s");
        notifier_free(wn, wn->v[j]);
    }
    free(wn->v);
    wn->v = v;
    wn->n = n;
    return 0;
}

/* ---- messages ---- */

static void
fmt_time(double t, char *buf, size_t size)
{
    time_t s = (time_t)t;
    struct tm tm;

    gmtime_r(&s, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void
fmt_value(double v, char *buf, size_t size)
{
    if (isnan(v))
        snprintf(buf, size, "no data");
    else
        snprintf(buf, size, "%.4g", v);
}

/* "[ALARM] web-busy pool.web.cpu_percent=83.2 above 70" */
static void
one_line(const struct watch_fields *f, char *buf, size_t size)
{
    char v[32];

    fmt_value(f->value, v, sizeof(v));
    snprintf(buf, size, "[%s%s] %s %s=%s %s %.4g%s%s", f->state, f->reminder ? " again" : "",
             f->alarm, f->metric, v, f->comparison, f->threshold, f->pool[0] ? " pool " : "",
             f->pool);
}

/* Grows a malloc()ed string by printf. */
static void cat(char **s, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
cat(char **s, size_t *len, const char *fmt, ...)
{
    va_list ap;
    char *add = NULL, *grown;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&add, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    grown = realloc(*s, *len + (size_t)n + 1);
    if (grown != NULL) {
        memcpy(grown + *len, add, (size_t)n + 1);
        *s = grown;
        *len += (size_t)n;
    }
    free(add);
}

static void
build_message(struct notifier *nt, char **subject, char **body, char **text)
{
    size_t bl = 0, tl = 0, sl = 0;
    char line[512], when[64], v[32];

    *subject = *body = *text = NULL;
    if (nt->nbatch == 1) {
        const struct watch_fields *f = &nt->batch[0];

        if (strcmp(f->state, "ALARM") == 0)
            cat(subject, &sl, "[tern] ALARM%s %s: %s %s %.4g", f->reminder ? " (still on)" : "",
                f->alarm, f->metric, f->comparison, f->threshold);
        else
            cat(subject, &sl, "[tern] %s %s: %s cleared", f->state, f->alarm, f->metric);
    } else {
        cat(subject, &sl, "[tern] %zu alarms changed:", nt->nbatch);
        for (size_t i = 0; i < nt->nbatch && i < 4; i++)
            cat(subject, &sl, "%s %s %s", i ? "," : "", nt->batch[i].state, nt->batch[i].alarm);
        if (nt->nbatch > 4)
            cat(subject, &sl, ", ...");
    }
    /* libesmtp adds the headers: the message starts with the blank line
     * that ends them, and lines end with CRLF. */
    cat(body, &bl, "\r\n");
    for (size_t i = 0; i < nt->nbatch; i++) {
        const struct watch_fields *f = &nt->batch[i];

        fmt_time(f->time, when, sizeof(when));
        fmt_value(f->value, v, sizeof(v));
        cat(body, &bl,
            "%sAlarm:     %s\r\nState:     %s (was %s)%s\r\nMetric:    %s\r\nValue:     %s\r\n"
            "Threshold: %s %.6g\r\nPool:      %s\r\nTime:      %s\r\nReason:    %s\r\n",
            i ? "\r\n" : "", f->alarm, f->state, f->from, f->reminder ? ", still on" : "",
            f->metric, v, f->comparison, f->threshold, f->pool[0] ? f->pool : "-", when, f->reason);
        one_line(f, line, sizeof(line));
        cat(text, &tl, "%s%s", i ? "; " : "", line);
    }
    if (nt->suppressed > 0) {
        cat(body, &bl, "\r\n%u further notification%s held back by the rate limit.\r\n",
            nt->suppressed, nt->suppressed == 1 ? " was" : "s were");
        cat(text, &tl, " (+%u held back)", nt->suppressed);
    }
    cat(body, &bl, "\r\n-- \r\ntern watch\r\n");
}

/* ---- deliveries ---- */

static void
delivery_free(struct delivery *d)
{
    free(d->notifier);
    email_free(&d->email);
    sms_free(&d->sms);
    watch_fields_free(&d->f);
    free(d->subject);
    free(d->body);
    free(d->text);
    free(d);
}

static void
unlink_delivery(struct delivery *d)
{
    for (struct delivery **l = &d->wn->out; *l != NULL; l = &(*l)->next) {
        if (*l == d) {
            *l = d->next;
            return;
        }
    }
}

static void
remember(struct watch_notify *wn, const struct delivery *d, const char *state)
{
    struct recent *r = &wn->recent[wn->rpos];

    snprintf(r->notifier, sizeof(r->notifier), "%s", d->notifier);
    r->channel = channel_names[d->ch];
    snprintf(r->subject, sizeof(r->subject), "%s", d->subject ? d->subject : "");
    r->attempts = d->attempts;
    r->state = state;
    snprintf(r->error, sizeof(r->error), "%s", d->rc == 0 ? "" : d->err);
    r->time = wn->h->now(wn->h);
    wn->rpos = (wn->rpos + 1) % RECENT;
    if (wn->nrecent < RECENT)
        wn->nrecent++;
}

static void *
run_delivery(void *arg)
{
    struct delivery *d = arg;

    d->err[0] = '\0';
    if (d->ch == CH_EMAIL) {
#ifdef WATCH_HAVE_ESMTP
        d->rc = watch_email_send(&d->email, d->subject, d->body, d->err, sizeof(d->err));
#else
        d->rc = -1;
        snprintf(d->err, sizeof(d->err), "this watch.so was built without libesmtp");
#endif
    } else {
#ifdef WATCH_HAVE_CURL
        d->rc = watch_sms_send(&d->sms, &d->f, d->text, d->err, sizeof(d->err));
#else
        d->rc = -1;
        snprintf(d->err, sizeof(d->err), "this watch.so was built without libcurl");
#endif
    }
    return NULL;
}

static void delivery_done(void *arg, void *result, int status);

/* What the API shows as the notifier's last error; nt may be gone after a
 * reload. */
static void
note_error(struct notifier *nt, const struct delivery *d, const struct tern_host *h)
{
    if (nt == NULL)
        return;
    snprintf(nt->last_error, sizeof(nt->last_error), "%s: %s", channel_names[d->ch], d->err);
    nt->last_error_time = h->now(h);
}

static void
submit(struct delivery *d)
{
    const struct tern_host *h = d->wn->h;

    d->attempts++;
    if (h->job_submit(h, run_delivery, delivery_done, d) < 0) {
        d->rc = -1;
        snprintf(d->err, sizeof(d->err), "cannot start a job");
        delivery_done(d, NULL, 0);
    }
}

static void
on_retry(void *arg)
{
    struct delivery *d = arg;

    d->retry = NULL; /* a one-shot timer is gone after its call */
    submit(d);
}

static void
delivery_done(void *arg, void *result, int status)
{
    struct delivery *d = arg;
    struct watch_notify *wn = d->wn;
    const struct tern_host *h = wn->h;
    struct notifier *nt = find(wn, d->notifier);

    if (status == -ECANCELED) {
        unlink_delivery(d);
        delivery_free(d);
        return;
    }
    if (d->rc == 0) {
        if (d->err[0] != '\0') {
            h->log(h, TERN_LOG_WARN, "notifier %s: %s sent, but %s: %s", d->notifier,
                   channel_names[d->ch], d->err, d->subject);
            note_error(nt, d, h);
        } else {
            h->log(h, TERN_LOG_INFO, "notifier %s: %s sent: %s", d->notifier, channel_names[d->ch],
                   d->subject);
        }
        if (nt != NULL) {
            nt->sent++;
            nt->last_sent_time = h->now(h);
        }
        remember(wn, d, "sent");
        unlink_delivery(d);
        delivery_free(d);
        return;
    }
    note_error(nt, d, h);
    if (d->attempts < wn->max_attempts) {
        double backoff = 2.0 * (double)(1u << (d->attempts - 1 < 8 ? d->attempts - 1 : 8));

        if (backoff > 300)
            backoff = 300;
        /* No timer while the plugin is being unloaded: then this is the
         * last attempt. */
        d->retry = h->timer_add(h, backoff, 0, on_retry, d);
        if (d->retry != NULL) {
            h->log(h, TERN_LOG_WARN,
                   "notifier %s: %s failed (attempt %d of %d): %s; retrying in %.0fs", d->notifier,
                   channel_names[d->ch], d->attempts, wn->max_attempts, d->err, backoff);
            if (nt != NULL)
                nt->retries++;
            remember(wn, d, "retrying");
            return;
        }
    }
    h->log(h, TERN_LOG_ERR, "notifier %s: %s failed after %d attempt%s, giving up: %s (%s)",
           d->notifier, channel_names[d->ch], d->attempts, d->attempts == 1 ? "" : "s", d->err,
           d->subject);
    if (nt != NULL)
        nt->failed++;
    remember(wn, d, "failed");
    unlink_delivery(d);
    delivery_free(d);
}

static void
start_delivery(struct watch_notify *wn, struct notifier *nt, enum channel ch, const char *subject,
               const char *body, const char *text)
{
    struct delivery *d = calloc(1, sizeof(*d));

    if (d == NULL)
        return;
    d->wn = wn;
    d->ch = ch;
    d->notifier = strdup(nt->name);
    if (ch == CH_EMAIL)
        email_copy(&d->email, &nt->email);
    else
        sms_copy(&d->sms, &nt->sms);
    watch_fields_copy(&d->f, &nt->batch[0]);
    d->subject = dup0(subject);
    if (ch == CH_EMAIL && nt->email.sms_format) {
        /* An e-mail-to-SMS gateway texts the body: one line, no layout. */
        if (asprintf(&d->body, "\r\n%s\r\n", text) < 0)
            d->body = NULL;
    } else {
        d->body = dup0(body);
    }
    d->text = dup0(text);
    d->next = wn->out;
    wn->out = d;
    if (nt->config_error != NULL) {
        /* Counted and shown like any failed send, without retries. */
        d->attempts = wn->max_attempts;
        d->rc = -1;
        snprintf(d->err, sizeof(d->err), "%s", nt->config_error);
        delivery_done(d, NULL, 0);
        return;
    }
    submit(d);
}

/* Sends the notifier's batch as one message, if its bucket allows. */
static void
flush(struct watch_notify *wn, struct notifier *nt)
{
    const struct tern_host *h = wn->h;
    double now = h->monotonic(h);
    char *subject, *body, *text;

    if (nt->nbatch == 0)
        return;
    nt->tokens += (now - nt->refilled) * wn->rate / 3600.0;
    nt->refilled = now;
    if (nt->tokens > wn->rate)
        nt->tokens = wn->rate;
    if (nt->tokens < 1.0) {
        nt->suppressed += (unsigned)nt->nbatch;
        nt->suppressed_total += nt->nbatch;
        h->log(h, TERN_LOG_WARN,
               "notifier %s: rate limit (%.0f per hour) reached; %zu notification%s held back",
               nt->name, wn->rate, nt->nbatch, nt->nbatch == 1 ? "" : "s");
    } else {
        nt->tokens -= 1.0;
        build_message(nt, &subject, &body, &text);
        if (nt->has_email)
            start_delivery(wn, nt, CH_EMAIL, subject, body, text);
        if (nt->has_sms)
            start_delivery(wn, nt, CH_SMS, subject, body, text);
        nt->suppressed = 0;
        free(subject);
        free(body);
        free(text);
    }
    for (size_t i = 0; i < nt->nbatch; i++)
        watch_fields_free(&nt->batch[i]);
    nt->nbatch = 0;
}

static void
on_group(void *arg)
{
    struct notifier *nt = arg;

    /* Alive: a notifier removed by a reload cancels its timer first. */
    nt->group_timer = NULL;
    flush(nt->wn, nt);
}

void
watch_notify_alarm(struct watch_notify *wn, const struct watch_fields *f, char *const *names,
                   size_t nnames)
{
    const struct tern_host *h = wn->h;

    for (size_t i = 0; i < nnames; i++) {
        struct notifier *nt = find(wn, names[i]);
        struct watch_fields *b;

        if (nt == NULL) {
            h->log(h, TERN_LOG_WARN, "alarm %s: no notifier named %s", f->alarm, names[i]);
            continue;
        }
        b = realloc(nt->batch, (nt->nbatch + 1) * sizeof(*b));
        if (b == NULL)
            continue;
        nt->batch = b;
        watch_fields_copy(&nt->batch[nt->nbatch++], f);
        if (wn->group_wait <= 0)
            flush(wn, nt);
        else if (nt->group_timer == NULL)
            nt->group_timer = h->timer_add(h, wn->group_wait, 0, on_group, nt);
        if (nt->group_timer == NULL && nt->nbatch > 0 && wn->group_wait > 0)
            flush(wn, nt);
    }
}

void
watch_notify_json(struct watch_notify *wn, json_t *root)
{
    json_t *arr = json_array(), *rec = json_array();

    for (size_t i = 0; i < wn->n; i++) {
        const struct notifier *nt = wn->v[i];
        json_t *ch = json_array();
        size_t pending = nt->nbatch;

        for (const struct delivery *d = wn->out; d != NULL; d = d->next)
            pending += strcmp(d->notifier, nt->name) == 0;
        if (nt->has_email)
            json_array_append_new(ch, json_string("email"));
        if (nt->has_sms)
            json_array_append_new(ch, json_string("sms"));
        json_array_append_new(
            arr,
            json_pack("{s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:s?, s:o, s:o}", "name", nt->name,
                      "channels", ch, "sent", (json_int_t)nt->sent, "failed",
                      (json_int_t)nt->failed, "retries", (json_int_t)nt->retries, "suppressed",
                      (json_int_t)nt->suppressed_total, "pending", (json_int_t)pending,
                      "last_error", nt->last_error[0] ? nt->last_error : NULL, "last_error_time",
                      nt->last_error_time > 0 ? json_real(nt->last_error_time) : json_null(),
                      "last_sent_time",
                      nt->last_sent_time > 0 ? json_real(nt->last_sent_time) : json_null()));
    }
    for (size_t k = 0; k < wn->nrecent; k++) {
        const struct recent *r = &wn->recent[(wn->rpos + RECENT - 1 - k) % RECENT];

        json_array_append_new(rec, json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:f}", "notifier",
                                             r->notifier, "channel", r->channel, "subject",
                                             r->subject, "attempts", r->attempts, "state", r->state,
                                             "error", r->error, "time", r->time));
    }
    json_object_set_new(root, "notifiers", arr);
    json_object_set_new(root, "deliveries", rec);
}

void
watch_notify_free(struct watch_notify *wn)
{
    if (wn == NULL)
        return;
    /* Jobs have ended (the host waits for them before fini); what is left
     * waits for a retry timer, which the host has already dropped. */
    while (wn->out != NULL) {
        struct delivery *d = wn->out;

        wn->out = d->next;
        delivery_free(d);
    }
    for (size_t i = 0; i < wn->n; i++) {
        wn->v[i]->group_timer = NULL; /* dropped by the host */
        notifier_free(wn, wn->v[i]);
    }
    free(wn->v);
    free(wn);
}

/* ---- templates (the SMS gateway's body) ---- */

static void
put_escaped(char **s, size_t *len, const char *v, bool json, bool form)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (json && (*p == '"' || *p == '\\'))
            cat(s, len, "\\%c", *p);
        else if (json && *p < 0x20)
            cat(s, len, "\\u%04x", *p);
        else if (form && !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                           (*p >= '0' && *p <= '9') || strchr("-._~", *p)))
            cat(s, len, "%%%02X", *p);
        else
            cat(s, len, "%c", *p);
    }
}

char *
watch_template(const char *tpl, const struct watch_fields *f, const char *text, const char *to,
               bool json, bool form)
{
    char *out = strdup(""), v[64], when[64];
    size_t len = 0;

    for (const char *p = tpl; out != NULL && *p;) {
        const char *end = *p == '{' ? strchr(p, '}') : NULL;
        const char *val = NULL;
        size_t klen = end ? (size_t)(end - p - 1) : 0;

#define KEY(k) (klen == strlen(k) && strncmp(p + 1, k, klen) == 0)
        if (end == NULL)
            val = NULL;
        else if (KEY("alarm"))
            val = f->alarm;
        else if (KEY("metric"))
            val = f->metric;
        else if (KEY("state"))
            val = f->state;
        else if (KEY("from"))
            val = f->from;
        else if (KEY("pool"))
            val = f->pool;
        else if (KEY("comparison"))
            val = f->comparison;
        else if (KEY("reason"))
            val = f->reason;
        else if (KEY("text"))
            val = text;
        else if (KEY("to"))
            val = to;
        else if (KEY("value"))
            fmt_value(f->value, v, sizeof(v)), val = v;
        else if (KEY("threshold"))
            snprintf(v, sizeof(v), "%.6g", f->threshold), val = v;
        else if (KEY("time"))
            fmt_time(f->time, when, sizeof(when)), val = when;
#undef KEY
        if (val != NULL) {
            put_escaped(&out, &len, val, json, form);
            p = end + 1;
        } else {
            cat(&out, &len, "%c", *p);
            p++;
        }
    }
    return out;
}
