/*
 * The watch plugin's own declarations, shared by its files: watch.c (the
 * plugin: configuration, sampling, alarms, events, GET /api/v1/alarms),
 * notify.c (when and to whom notifications go: grouping, repeat, rate
 * limit, retries), notify_email.c (libesmtp), notify_sms.c (libcurl) and
 * libvirt_source.c (per-VM metrics). The plugin sees tern only through
 * lb/plugin.h; everything here is the plugin's.
 */
#ifndef WATCH_WATCH_H
#define WATCH_WATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "lb/plugin.h"

/* What a notification says about one alarm change. Strings owned by whoever
 * holds the struct (watch_fields_copy / watch_fields_free). */
struct watch_fields {
    char *alarm;
    char *metric;
    char *state; /* new state: ALARM, OK, INSUFFICIENT_DATA */
    char *from;  /* previous state */
    char *reason;
    char *pool;       /* the pool the metric is about, or "" */
    char *comparison; /* "above" / "below" */
    double value;     /* NaN when missing */
    double threshold;
    double time;   /* wall clock of the change, s */
    bool reminder; /* sent again because the alarm stays on */
};

void watch_fields_copy(struct watch_fields *dst, const struct watch_fields *src);
void watch_fields_free(struct watch_fields *f);

/* ---- channels: blocking sends, run on the job pool ---- */

enum watch_starttls { WATCH_TLS_OFF = 0, WATCH_TLS_OPTIONAL, WATCH_TLS_REQUIRED };

struct watch_email_cfg {
    char *server; /* host:port */
    enum watch_starttls starttls;
    char *user;     /* NULL: no AUTH */
    char *password; /* read from password_file */
    char *from;
    char **to;
    size_t nto;
    char *ca_file;   /* NULL: the system's CAs */
    long timeout_ms; /* each SMTP step */
    bool sms_format; /* one-line message for e-mail-to-SMS gateways */
};

struct watch_sms_cfg {
    char *url;
    char *method;
    char **headers;
    size_t nheaders;
    char *body; /* template; NULL: JSON {"to": ..., "text": ...} */
    char **to;
    size_t nto;
    long timeout_ms;
};

/* Sends one mail. Returns 0, or -1 with err set to a sentence; on 0, a
 * non-empty err is a warning (the mail went out, but not as configured).
 * When some recipients got it and others were refused for now (4xx), it
 * returns -1 with c->to cut down to those, so that a retry reaches only
 * them. Any thread; blocks up to a few timeouts. */
int watch_email_send(struct watch_email_cfg *c, const char *subject, const char *body, char *err,
                     size_t errlen);
/* One-time setup and teardown of libesmtp's process state. */
void watch_email_global_init(void);
void watch_email_global_exit(void);

/* Sends text to every number of c through the gateway: one request each,
 * the template filled from f and text. Returns 0, or -1 with err set and
 * c->to cut down to the numbers that failed, so that a retry texts only
 * them. */
int watch_sms_send(struct watch_sms_cfg *c, const struct watch_fields *f, const char *text,
                   char *err, size_t errlen);

/* Fills template tpl: {alarm} {metric} {state} {from} {value} {threshold}
 * {comparison} {pool} {time} {reason} {text} {to}, each escaped for JSON
 * (json true), for a form (form true) or not at all. malloc()ed. */
char *watch_template(const char *tpl, const struct watch_fields *f, const char *text,
                     const char *to, bool json, bool form);

/* ---- notification policy (notify.c) ---- */

struct watch_notify;

struct watch_notify *watch_notify_new(const struct tern_host *h);
/* (Re)reads the notifiers and the policy keys of the watch section; state of
 * notifiers that keep their name is kept. Returns 0 or -1 after logging. */
int watch_notify_configure(struct watch_notify *n, const struct tern_value *watch);
/* An alarm changed state (or reminds): notify each named notifier. */
void watch_notify_alarm(struct watch_notify *n, const struct watch_fields *f, char *const *names,
                        size_t nnames);
/* Sets "notifiers" (counters, last error) and "deliveries" (the last
 * sends, newest first) in root, for the API. */
void watch_notify_json(struct watch_notify *n, json_t *root);
void watch_notify_free(struct watch_notify *n);

/* ---- libvirt metric source (libvirt_source.c) ---- */

struct watch_lv;

/* Starts polling uri every interval_ms on the job pool; publishes
 * server.<pool>.<server>.cpu_percent / memory_percent / net_rx_bytes_per_second
 * ... and pool.<pool>.cpu_percent / memory_percent averages for domains that
 * match a pool server by name or address. NULL when uri is NULL. */
struct watch_lv *watch_lv_start(const struct tern_host *h, const char *uri, long interval_ms);
/* Stops the source. timers_gone: called from fini, when the host has
 * already dropped the plugin's timers. */
void watch_lv_stop(struct watch_lv *lv, bool timers_gone);
json_t *watch_lv_json(struct watch_lv *lv);

#endif
