/*
 * The watch plugin (watch.so): alarms on tern's metrics, with notifications.
 *
 * Every watch.interval a host timer samples each alarm's metric from the
 * host's registry and feeds it to the alarm (alarm.c: CloudWatch's periods,
 * statistics, M out of N and missing data). A change of state is logged,
 * published on the event bus (alarm raised / cleared: the scale plugin
 * listens) and handed to the notifiers (notify.c), which send mail and SMS
 * on the job pool. GET /api/v1/alarms shows each alarm's state, the reason
 * of its last change and its recent datapoints, and how notifications fare.
 * With watch.sources.libvirt, per-VM CPU and memory become metrics too
 * (libvirt_source.c).
 *
 * A reload keeps the state of an alarm whose definition did not change (as
 * CloudWatch keeps it when an alarm is updated); a changed one starts over
 * in INSUFFICIENT_DATA.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef WATCH_HAVE_CURL
#include <curl/curl.h>
#endif

#include "lb/plugin.h"
#include "watch/alarm.h"
#include "watch/watch.h"

struct walarm {
    struct watch_alarm a;
    char *name, *metric, *pool;
    char **notify;
    size_t nnotify;
    double last_notify; /* wall s of the last notification sent for it */
};

struct watch {
    const struct tern_host *h;
    long interval_ms;
    double repeat; /* s; 0: no reminders */
    struct walarm *alarms;
    size_t nalarms;
    struct tern_timer *tick;
    struct watch_notify *notify;
    struct watch_lv *lv;
    char *lv_uri;
};

void
watch_fields_copy(struct watch_fields *d, const struct watch_fields *s)
{
    *d = *s;
    d->alarm = strdup(s->alarm ? s->alarm : "");
    d->metric = strdup(s->metric ? s->metric : "");
    d->state = strdup(s->state ? s->state : "");
    d->from = strdup(s->from ? s->from : "");
    d->reason = strdup(s->reason ? s->reason : "");
    d->pool = strdup(s->pool ? s->pool : "");
    d->comparison = strdup(s->comparison ? s->comparison : "");
}

void
watch_fields_free(struct watch_fields *f)
{
    free(f->alarm);
    free(f->metric);
    free(f->state);
    free(f->from);
    free(f->reason);
    free(f->pool);
    free(f->comparison);
    memset(f, 0, sizeof(*f));
}

#ifndef WATCH_HAVE_LIBVIRT
/* Built without libvirt: the source says so once and stays off. */
struct watch_lv *
watch_lv_start(const struct tern_host *h, const char *uri, long interval_ms)
{
    h->log(h, TERN_LOG_ERR, "sources.libvirt: this watch.so was built without libvirt");
    return NULL;
}

void
watch_lv_stop(struct watch_lv *lv, bool timers_gone)
{
}

json_t *
watch_lv_json(struct watch_lv *lv)
{
    return json_null();
}
#endif

static uint64_t
now_ms(const struct watch *w)
{
    return (uint64_t)(w->h->now(w->h) * 1000.0);
}

/* The pool a metric is about: "pool.web.x" and "server.web.b1.x" -> "web". */
static char *
pool_of(const char *metric)
{
    const char *p = NULL, *end;

    if (strncmp(metric, "pool.", 5) == 0)
        p = metric + 5;
    else if (strncmp(metric, "server.", 7) == 0)
        p = metric + 7;
    end = p ? strchr(p, '.') : NULL;
    return end ? strndup(p, (size_t)(end - p)) : strdup("");
}

static void
walarm_free(struct walarm *a)
{
    watch_alarm_free(&a->a);
    free(a->name);
    free(a->metric);
    free(a->pool);
    for (size_t i = 0; i < a->nnotify; i++)
        free(a->notify[i]);
    free(a->notify);
}

static void
free_alarms(struct walarm *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        walarm_free(&v[i]);
    free(v);
}

static void
on_change(void *arg, struct watch_alarm *a, enum watch_state from)
{
    struct watch *w = arg;
    struct walarm *wa = (struct walarm *)a; /* a is the first member */
    const struct tern_host *h = w->h;
    bool raised = a->state == WATCH_ALARM, cleared = from == WATCH_ALARM;
    struct watch_fields f = {
        .alarm = wa->name,
        .metric = wa->metric,
        .state = (char *)watch_state_name(a->state),
        .from = (char *)watch_state_name(from),
        .reason = a->reason,
        .pool = wa->pool,
        .comparison = a->cfg.cmp == WATCH_ABOVE ? "above" : "below",
        .value = a->value,
        .threshold = a->cfg.threshold,
        .time = (double)a->last_change / 1000.0,
    };

    h->log(h, raised ? TERN_LOG_WARN : TERN_LOG_INFO, "alarm %s: %s -> %s: %s", wa->name,
           watch_state_name(from), watch_state_name(a->state), a->reason);
    if (raised || cleared) {
        struct tern_event ev = {
            .type = raised ? TERN_EV_ALARM_RAISED : TERN_EV_ALARM_CLEARED,
            .name = wa->name,
            .pool = wa->pool[0] ? wa->pool : NULL,
            .metric = wa->metric,
            .state = watch_state_name(a->state),
            .detail = a->reason,
            .value = a->value,
            .threshold = a->cfg.threshold,
        };

        h->publish(h, &ev);
        /* Notifications go on ALARM and on leaving it; OK <->
         * INSUFFICIENT_DATA is noise nobody wants at night. */
        wa->last_notify = f.time;
        watch_notify_alarm(w->notify, &f, wa->notify, wa->nnotify);
    }
}

static void
on_tick(void *arg)
{
    struct watch *w = arg;
    const struct tern_host *h = w->h;
    uint64_t t = now_ms(w);

    for (size_t i = 0; i < w->nalarms; i++) {
        struct walarm *wa = &w->alarms[i];
        double v;

        if (h->metric_get(h, wa->metric, &v) == 0)
            watch_alarm_add(&wa->a, t, v, on_change, w);
        else
            watch_alarm_advance(&wa->a, t, on_change, w);
        if (w->repeat > 0 && wa->a.state == WATCH_ALARM &&
            (double)t / 1000.0 - wa->last_notify >= w->repeat) {
            struct watch_fields f = {
                .alarm = wa->name,
                .metric = wa->metric,
                .state = "ALARM",
                .from = "ALARM",
                .reason = wa->a.reason,
                .pool = wa->pool,
                .comparison = wa->a.cfg.cmp == WATCH_ABOVE ? "above" : "below",
                .value = wa->a.value,
                .threshold = wa->a.cfg.threshold,
                .time = (double)t / 1000.0,
                .reminder = true,
            };

            wa->last_notify = f.time;
            watch_notify_alarm(w->notify, &f, wa->notify, wa->nnotify);
        }
    }
}

/* Reads one alarm of the section. Returns 0 or -EINVAL after logging. */
static int
read_alarm(struct watch *w, const struct tern_value *v, struct walarm *wa, uint64_t origin)
{
    const struct tern_host *h = w->h;
    const struct tern_value *above = tern_value_get(v, "above"), *notify;
    struct watch_alarm_cfg cfg = {0};
    int stat = watch_stat_parse(tern_value_str(tern_value_get(v, "statistic"), "average"));
    int missing = watch_missing_parse(tern_value_str(tern_value_get(v, "missing_data"), "missing"));
    int r;

    wa->name = strdup(tern_value_str(tern_value_get(v, "name"), "?"));
    wa->metric = strdup(tern_value_str(tern_value_get(v, "metric"), ""));
    wa->pool = wa->metric ? pool_of(wa->metric) : NULL;
    if (wa->name == NULL || wa->metric == NULL || wa->pool == NULL)
        return -ENOMEM;
    cfg.name = wa->name;
    cfg.metric = wa->metric;
    cfg.stat = stat < 0 ? WATCH_STAT_AVERAGE : (enum watch_stat)stat;
    cfg.missing = missing < 0 ? WATCH_MISSING_MISSING : (enum watch_missing)missing;
    cfg.cmp = above != NULL ? WATCH_ABOVE : WATCH_BELOW;
    cfg.threshold = tern_value_double(above ? above : tern_value_get(v, "below"), 0);
    cfg.period_ms = (uint64_t)tern_value_int(tern_value_get(v, "period"), 60000);
    cfg.evaluation_periods = (uint32_t)tern_value_int(tern_value_get(v, "evaluation_periods"), 1);
    cfg.datapoints_to_alarm =
        (uint32_t)tern_value_int(tern_value_get(v, "datapoints_to_alarm"), cfg.evaluation_periods);
    if (cfg.period_ms < (uint64_t)w->interval_ms)
        h->log(h, TERN_LOG_WARN,
               "alarm %s: period (%llu ms) is shorter than watch.interval (%ld ms): some periods "
               "will have no sample and count as missing data",
               wa->name, (unsigned long long)cfg.period_ms, w->interval_ms);
    r = watch_alarm_init(&wa->a, &cfg, origin);
    if (r < 0) {
        h->log(h, TERN_LOG_ERR, "alarm %s: cannot start: %s", wa->name, strerror(-r));
        return r;
    }
    notify = tern_value_get(v, "notify");
    if (notify != NULL && notify->n > 0) {
        wa->notify = calloc(notify->n, sizeof(char *));
        if (wa->notify == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < notify->n; i++)
            if ((wa->notify[wa->nnotify] = strdup(tern_value_str(&notify->items[i], ""))) != NULL)
                wa->nnotify++;
    }
    return 0;
}

static bool
same_definition(const struct watch_alarm_cfg *a, const struct watch_alarm_cfg *b)
{
    return strcmp(a->metric, b->metric) == 0 && a->stat == b->stat && a->cmp == b->cmp &&
           a->threshold == b->threshold && a->period_ms == b->period_ms &&
           a->evaluation_periods == b->evaluation_periods &&
           a->datapoints_to_alarm == b->datapoints_to_alarm && a->missing == b->missing;
}

/* Applies a section: alarms (state carried by name when unchanged), the
 * sampling timer, notifiers and the libvirt source. */
static int
configure(struct watch *w, const struct tern_value *sec)
{
    const struct tern_host *h = w->h;
    const struct tern_value *list = tern_value_get(sec, "alarms");
    const struct tern_value *lv = tern_value_get(tern_value_get(sec, "sources"), "libvirt");
    const char *uri = tern_value_str(tern_value_get(lv, "uri"), NULL);
    long interval = (long)tern_value_int(tern_value_get(sec, "interval"), 10000);
    size_t n = list ? list->n : 0, made = 0;
    struct walarm *alarms = calloc(n ? n : 1, sizeof(*alarms));
    /* Periods start half an interval before the first sample, so samples
     * fall inside periods, never on their edges. */
    uint64_t origin = now_ms(w) + (uint64_t)interval - (uint64_t)interval / 2;

    if (alarms == NULL)
        return -ENOMEM;
    w->interval_ms = interval;
    for (; made < n; made++) {
        if (read_alarm(w, &list->items[made], &alarms[made], origin) < 0) {
            free_alarms(alarms, made + 1);
            return -EINVAL;
        }
        for (size_t j = 0; j < w->nalarms; j++) {
            struct walarm *old = &w->alarms[j];

            if (strcmp(old->name, alarms[made].name) != 0 ||
                !same_definition(&old->a.cfg, &alarms[made].a.cfg))
                continue;
            /* Same alarm: keep its periods, window and state. */
            struct watch_alarm keep = old->a;

            old->a = alarms[made].a;
            alarms[made].a = keep;
            alarms[made].a.cfg.name = alarms[made].name;
            alarms[made].a.cfg.metric = alarms[made].metric;
            alarms[made].last_notify = old->last_notify;
            break;
        }
    }
    if (watch_notify_configure(w->notify, sec) < 0) {
        free_alarms(alarms, made);
        return -EINVAL;
    }
    free_alarms(w->alarms, w->nalarms);
    w->alarms = alarms;
    w->nalarms = made;
    w->repeat = (double)tern_value_int(tern_value_get(sec, "repeat"), 0) / 1000.0;

    if (w->tick != NULL)
        h->timer_cancel(h, w->tick);
    w->tick = h->timer_add(h, (double)interval / 1000.0, (double)interval / 1000.0, on_tick, w);
    if (w->tick == NULL)
        return -ENOMEM;

    if ((uri == NULL) != (w->lv_uri == NULL) || (uri && strcmp(uri, w->lv_uri) != 0)) {
        watch_lv_stop(w->lv, false);
        w->lv = NULL;
        free(w->lv_uri);
        w->lv_uri = uri ? strdup(uri) : NULL;
        if (uri != NULL)
            w->lv = watch_lv_start(h, uri, interval);
    }
    h->log(h, TERN_LOG_INFO, "%zu alarm%s, sampling every %ld ms%s%s", made, made == 1 ? "" : "s",
           interval, uri ? ", libvirt source " : "", uri ? uri : "");
    return 0;
}

static json_t *
num_or_null(double v)
{
    return isnan(v) || isinf(v) ? json_null() : json_real(v);
}

static char *
api_alarms(void *arg, const char *route)
{
    struct watch *w = arg;
    json_t *root = json_object(), *arr = json_array();
    char *out;

    for (size_t i = 0; i < w->nalarms; i++) {
        const struct walarm *wa = &w->alarms[i];
        const struct watch_alarm *a = &wa->a;
        struct watch_point pts[WATCH_HISTORY];
        size_t n = watch_alarm_history(a, pts, WATCH_HISTORY);
        json_t *hist = json_array(), *notify = json_array();
        static const char *const stats[] = {"average", "minimum", "maximum", "sum", "p95", "p99"};
        static const char *const missing[] = {"missing", "ignore", "breaching", "not_breaching"};

        for (size_t k = 0; k < n; k++)
            json_array_append_new(
                hist, json_pack("{s:f, s:o}", "t", (double)pts[k].t / 1000.0, "value",
                                pts[k].missing ? json_null() : num_or_null(pts[k].value)));
        for (size_t k = 0; k < wa->nnotify; k++)
            json_array_append_new(notify, json_string(wa->notify[k]));
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:f, s:s, s:s, s:I, s:I, s:I, s:s, "
                           "s:f, s:o, s:o}",
                           "name", wa->name, "metric", wa->metric, "pool", wa->pool, "state",
                           watch_state_name(a->state), "reason", a->reason, "value",
                           num_or_null(a->value), "threshold", a->cfg.threshold, "comparison",
                           a->cfg.cmp == WATCH_ABOVE ? "above" : "below", "statistic",
                           stats[a->cfg.stat], "period_ms", (json_int_t)a->cfg.period_ms,
                           "evaluation_periods", (json_int_t)a->cfg.evaluation_periods,
                           "datapoints_to_alarm", (json_int_t)a->cfg.datapoints_to_alarm,
                           "missing_data", missing[a->cfg.missing], "last_change",
                           (double)a->last_change / 1000.0, "notify", notify, "history", hist));
    }
    json_object_set_new(root, "alarms", arr);
    watch_notify_json(w->notify, root);
    if (w->lv != NULL)
        json_object_set_new(root, "libvirt", watch_lv_json(w->lv));
    out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}

static void
watch_fini(void *state)
{
    struct watch *w = state;

    if (w == NULL)
        return;
    /* The host has dropped our timers and waited for our jobs. */
    watch_lv_stop(w->lv, true);
    watch_notify_free(w->notify);
    free_alarms(w->alarms, w->nalarms);
    free(w->lv_uri);
    free(w);
#ifdef WATCH_HAVE_ESMTP
    watch_email_global_exit();
#endif
#ifdef WATCH_HAVE_CURL
    curl_global_cleanup();
#endif
}

static int
watch_init(const struct tern_host *h, const struct tern_value *sec, void **state)
{
    struct watch *w = calloc(1, sizeof(*w));
    int r;

    if (w == NULL)
        return -ENOMEM;
    w->h = h;
#ifdef WATCH_HAVE_ESMTP
    watch_email_global_init();
#endif
#ifdef WATCH_HAVE_CURL
    /* Before any job thread uses libcurl. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
#endif
    w->notify = watch_notify_new(h);
    if (w->notify == NULL) {
        watch_fini(w);
        return -ENOMEM;
    }
    r = configure(w, sec);
    if (r == 0)
        r = h->api_register(h, "/api/v1/alarms", api_alarms, w);
    if (r < 0) {
        watch_fini(w);
        return r;
    }
    *state = w;
    return 0;
}

static int
watch_reload(void *state, const struct tern_value *sec)
{
    return configure(state, sec);
}

TERN_PLUGIN_EXPORT const struct tern_plugin tern_plugin_entry = {
    .api_version = TERN_PLUGIN_API_VERSION,
    .name = "watch",
    .section = "watch",
    .init = watch_init,
    .reload = watch_reload,
    .fini = watch_fini,
};
