/*
 * The schema of the plugins' sections, watch and scale.
 *
 * Plugins see the daemon only through the plugin API, yet their
 * configuration is checked with the rest of the file so that `tern -t`
 * finds every mistake at once. Their tables live here, in the same form a
 * plugin would declare them (see conf/schema.h), with the rules that tie
 * them to each other; tern_schema.c nests them under "watch" and "scale".
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "conf/config.h"
#include "conf/parse.h"
#include "conf/tern_schema.h"

#define END                                                                                        \
    {                                                                                              \
        .key = NULL                                                                                \
    }

/* ---- watch ---- */

static const char *const statistic_names[] = {"average", "minimum", "maximum", "sum",
                                              "p95",     "p99",     NULL};
static const char *const missing_data_names[] = {"missing", "ignore", "breaching", "not_breaching",
                                                 NULL};

static void
check_alarm(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct conf_alarm *a = obj;

    if (a->has_above && a->has_below)
        conf_key_error(ctx, map, "below", "an alarm has one threshold: above or below, not both");
    else if (conf_node_get(map, "above") == NULL && conf_node_get(map, "below") == NULL)
        conf_error(ctx, map, NULL, "an alarm needs a threshold: above or below");
    if (conf_node_get(map, "datapoints_to_alarm") == NULL)
        a->datapoints_to_alarm = a->evaluation_periods;
    else if (a->datapoints_to_alarm > a->evaluation_periods)
        conf_key_error(ctx, map, "datapoints_to_alarm",
                       "%" PRIu32 " is more than evaluation_periods (%" PRIu32 ")",
                       a->datapoints_to_alarm, a->evaluation_periods);
}

static const struct conf_field alarm_fields[] = {
    {.key = "name",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_alarm, name),
     .doc = "unique name; scale policies refer to it"},
    {.key = "metric",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_alarm, metric),
     .doc = "metric name, e.g. pool.web.cpu_percent"},
    {.key = "statistic",
     .kind = CONF_CHOICE,
     .names = statistic_names,
     CONF_AT(struct conf_alarm, statistic),
     .def = "average",
     .doc = "how samples within one period are combined"},
    {.key = "above",
     .kind = CONF_DOUBLE,
     CONF_AT(struct conf_alarm, above),
     CONF_PRESENT(struct conf_alarm, has_above),
     .doc = "breaching when the statistic is above this (give above or below)"},
    {.key = "below",
     .kind = CONF_DOUBLE,
     CONF_AT(struct conf_alarm, below),
     CONF_PRESENT(struct conf_alarm, has_below),
     .doc = "breaching when it is below this"},
    {.key = "period",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_alarm, period),
     .min = 1,
     .def = "60s",
     .doc = "length of one evaluation period"},
    {.key = "evaluation_periods",
     .kind = CONF_UINT,
     CONF_AT(struct conf_alarm, evaluation_periods),
     .min = 1,
     .max = 1000,
     .def = "1",
     .doc = "how many recent periods are looked at"},
    {.key = "datapoints_to_alarm",
     .kind = CONF_UINT,
     CONF_AT(struct conf_alarm, datapoints_to_alarm),
     .min = 1,
     .max = 1000,
     .def_doc = "evaluation_periods",
     .doc = "breaching periods among them that raise the alarm (M out of N)"},
    {.key = "missing_data",
     .kind = CONF_CHOICE,
     .names = missing_data_names,
     CONF_AT(struct conf_alarm, missing_data),
     .def = "missing",
     .doc = "how a period without samples counts (as CloudWatch's TreatMissingData)"},
    {.key = "notify",
     .kind = CONF_LIST,
     .elem = CONF_STRING,
     CONF_AT(struct conf_alarm, notify),
     CONF_COUNT(struct conf_alarm, nnotify),
     .doc = "notifiers (watch.notify names) told when the alarm is raised or cleared"},
    END,
};

static const struct conf_schema alarm_schema = {
    .name = "alarm",
    .size = sizeof(struct conf_alarm),
    .fields = alarm_fields,
    .check = check_alarm,
};

static bool
valid_hostname(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.')
            return false;
    }
    return true;
}

/* email.server: host:port where, unlike everywhere else, the host may be a
 * name -- the mail server is resolved when a mail is sent, not at start. */
static int
parse_smtp_server(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v,
                  void *obj)
{
    struct conf_email *e = obj;
    const char *why = NULL, *colon = strrchr(v->str, ':');
    struct conf_addr a = {0};
    uint64_t port;

    if (conf_parse_addr(v->str, &a, &why) == 0) {
        e->server_addr = a;
    } else if (colon == NULL) {
        conf_error(ctx, v, NULL, "missing port: write host:port, e.g. smtp.example.com:587");
        return -1;
    } else if (conf_parse_uint(colon + 1, &port) < 0 || port < 1 || port > 65535) {
        conf_error(ctx, v, NULL, "bad address '%s': port must be a number from 1 to 65535", v->str);
        return -1;
    } else if (!valid_hostname(v->str, (size_t)(colon - v->str))) {
        conf_error(ctx, v, NULL, "bad address '%s': %s", v->str, why);
        return -1;
    }
    e->server = conf_strdup(ctx, v->str);
    e->server_addr.text = e->server;
    return 0;
}

/* starttls: YAML booleans for the common cases, or the three words. */
static int
parse_starttls(struct conf_ctx *ctx, const struct conf_field *f, const struct conf_node *v,
               void *obj)
{
    struct conf_email *e = obj;
    const char *word = NULL;
    bool b;

    if (strcmp(v->str, "required") == 0 || strcmp(v->str, "optional") == 0 ||
        strcmp(v->str, "off") == 0)
        word = v->str;
    else if (conf_parse_bool(v->str, &b) == 0)
        word = b ? "required" : "off";
    if (word == NULL) {
        conf_error(ctx, v, NULL, "expected true, false, required, optional or off, got '%s'",
                   v->str);
        return -1;
    }
    e->starttls = conf_strdup(ctx, word);
    return 0;
}

static const char *const email_formats[] = {"full", "sms", NULL};

static const struct conf_field email_fields[] = {
    {.key = "server",
     .kind = CONF_CUSTOM,
     .flags = CONF_F_REQUIRED,
     .parse = parse_smtp_server,
     .type_doc = "host:port (host may be a name)",
     .doc = "SMTP submission server"},
    {.key = "starttls",
     .kind = CONF_CUSTOM,
     .parse = parse_starttls,
     .def = "required",
     .type_doc = "bool, or `required`, `optional`, `off`",
     .doc = "STARTTLS use; true means required, false off"},
    {.key = "user",
     .kind = CONF_STRING,
     CONF_AT(struct conf_email, user),
     .doc = "SMTP AUTH user; absent: no authentication"},
    {.key = "password_file",
     .kind = CONF_STRING,
     .flags = CONF_F_PATH,
     CONF_AT(struct conf_email, password_file),
     .doc = "file holding the SMTP AUTH password; a relative name is relative to the folder of "
            "the configuration file that holds it"},
    {.key = "from",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_email, from),
     .doc = "sender address"},
    {.key = "to",
     .kind = CONF_LIST,
     .elem = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     .min = 1,
     CONF_AT(struct conf_email, to),
     CONF_COUNT(struct conf_email, nto),
     .doc = "recipient addresses"},
    {.key = "ca_file",
     .kind = CONF_STRING,
     .flags = CONF_F_PATH,
     CONF_AT(struct conf_email, ca_file),
     .doc = "CA certificates the server's STARTTLS certificate is checked against (relative to "
            "the configuration file's folder); absent: the system's"},
    {.key = "timeout",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_email, timeout),
     .min = 1000,
     .def = "30s",
     .doc = "longest wait for each step of the SMTP dialogue (greeting, envelope, data)"},
    {.key = "format",
     .kind = CONF_CHOICE,
     .names = email_formats,
     CONF_AT(struct conf_email, format),
     .def = "full",
     .doc = "full: a mail per change with every detail; sms: one short line, for "
            "e-mail-to-SMS gateways"},
    END,
};

static const struct conf_schema email_schema = {
    .name = "email",
    .fields = email_fields,
};

static const char *const http_methods[] = {"POST", "PUT", "GET", NULL};

static void
check_sms(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct conf_sms *s = obj;

    if (s->url != NULL && strncmp(s->url, "https://", 8) != 0 && strncmp(s->url, "http://", 7) != 0)
        conf_key_error(ctx, map, "url", "expected an http:// or https:// URL, got '%s'", s->url);
    for (size_t i = 0; i < s->nheaders; i++) {
        const char *colon = strchr(s->headers[i], ':');

        if (colon == NULL || colon == s->headers[i]) {
            conf_key_error(ctx, map, "headers", "expected 'Name: value', got '%s'", s->headers[i]);
            break;
        }
    }
}

static const struct conf_field sms_fields[] = {
    {.key = "url",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_sms, url),
     .doc = "HTTP(S) endpoint of the SMS gateway"},
    {.key = "method",
     .kind = CONF_CHOICE,
     .names = http_methods,
     CONF_AT(struct conf_sms, method),
     .def = "POST",
     .doc = "request method"},
    {.key = "headers",
     .kind = CONF_LIST,
     .elem = CONF_STRING,
     CONF_AT(struct conf_sms, headers),
     CONF_COUNT(struct conf_sms, nheaders),
     .doc = "extra request headers, each `Name: value` (e.g. an API key)"},
    {.key = "body",
     .kind = CONF_STRING,
     CONF_AT(struct conf_sms, body),
     .doc = "request body template; absent: the plugin's JSON body"},
    {.key = "to",
     .kind = CONF_LIST,
     .elem = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     .min = 1,
     CONF_AT(struct conf_sms, to),
     CONF_COUNT(struct conf_sms, nto),
     .doc = "phone numbers (quote them: \"+821000000000\")"},
    {.key = "timeout",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_sms, timeout),
     .min = 100,
     .def = "10s",
     .doc = "longest wait for the gateway's answer"},
    END,
};

static const struct conf_schema sms_schema = {
    .name = "sms",
    .fields = sms_fields,
    .check = check_sms,
};

static void
check_notify(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct conf_notify *n = obj;

    if (!n->email.enabled && !n->sms.enabled)
        conf_error(ctx, map, NULL, "a notifier needs email or sms (or both)");
}

static const struct conf_field notify_fields[] = {
    {.key = "email",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &email_schema,
     CONF_AT(struct conf_notify, email),
     CONF_PRESENT(struct conf_notify, email.enabled),
     .doc = "send mail"},
    {.key = "sms",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &sms_schema,
     CONF_AT(struct conf_notify, sms),
     CONF_PRESENT(struct conf_notify, sms.enabled),
     .doc = "send text messages through an HTTP gateway"},
    END,
};

static const struct conf_schema notify_schema = {
    .name = "notifier",
    .size = sizeof(struct conf_notify),
    .fields = notify_fields,
    .name_offset = CONF_OFF1(struct conf_notify, name),
    .check = check_notify,
};

static const struct conf_field libvirt_source_fields[] = {
    {.key = "uri",
     .kind = CONF_STRING,
     CONF_AT(struct conf_watch, libvirt_uri),
     .def = "qemu:///system",
     .doc = "libvirt connection URI"},
    END,
};

static const struct conf_schema libvirt_source_schema = {
    .name = "libvirt",
    .fields = libvirt_source_fields,
};

/* sources: and sources.libvirt: are flattened into struct conf_watch. */
static const struct conf_field sources_fields[] = {
    {.key = "libvirt",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &libvirt_source_schema,
     .doc = "per-VM CPU and memory from libvirt (pool.*.cpu_percent, ...); absent: off"},
    END,
};

static const struct conf_schema sources_schema = {
    .name = "sources",
    .fields = sources_fields,
};

static const struct conf_field watch_fields[] = {
    {.key = "interval",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_watch, interval),
     .min = 100,
     .def = "10s",
     .doc = "how often metrics are sampled"},
    {.key = "sources",
     .kind = CONF_STRUCT,
     .sub = &sources_schema,
     .doc = "metric sources beyond tern's own"},
    {.key = "alarms",
     .kind = CONF_SEQ,
     .sub = &alarm_schema,
     CONF_AT(struct conf_watch, alarms),
     CONF_COUNT(struct conf_watch, nalarms),
     .doc = "conditions on metrics"},
    {.key = "notify",
     .kind = CONF_MAP,
     .sub = &notify_schema,
     CONF_AT(struct conf_watch, notify),
     CONF_COUNT(struct conf_watch, nnotify),
     .doc = "notifiers by name"},
    {.key = "group_wait",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_watch, group_wait),
     .def = "2s",
     .doc = "alarms that change within this of each other go out as one message per notifier"},
    {.key = "repeat",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_watch, repeat),
     .def = "0",
     .doc = "notify again at this interval while an alarm stays in ALARM; 0: once"},
    {.key = "rate_limit",
     .kind = CONF_DOUBLE,
     CONF_AT(struct conf_watch, rate_limit),
     .def = "20",
     .doc = "messages per hour each notifier may send; those over it are counted and mentioned "
            "in the next one"},
    {.key = "retries",
     .kind = CONF_UINT,
     CONF_AT(struct conf_watch, retries),
     .min = 1,
     .max = 20,
     .def = "5",
     .doc = "attempts of a failed send, with a doubling wait from 2s (capped at 5m)"},
    END,
};

const struct conf_schema conf_watch_schema = {
    .name = "watch",
    .fields = watch_fields,
    .doc = "The watch plugin (watch.so, loaded when this section is present): samples metrics, "
           "raises and clears alarms, sends notifications.",
};

/* ---- scale ---- */

static const char *const remove_first_names[] = {"newest", "oldest", "least_connections", NULL};

static const struct conf_field provider_libvirt_fields[] = {
    {.key = "uri",
     .kind = CONF_STRING,
     CONF_AT(struct conf_scale, libvirt_uri),
     .def = "qemu:///system",
     .doc = "libvirt connection URI"},
    {.key = "template",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_scale, libvirt_template),
     .doc = "domain cloned for each new server"},
    {.key = "storage_pool",
     .kind = CONF_STRING,
     CONF_AT(struct conf_scale, libvirt_storage_pool),
     .def = "default",
     .doc = "storage pool that receives the cloned disks"},
    END,
};

static const struct conf_schema provider_libvirt_schema = {
    .name = "libvirt",
    .fields = provider_libvirt_fields,
};

static const struct conf_field provider_exec_fields[] = {
    {.key = "create",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_scale, exec_create),
     .doc = "program that creates a server and prints its host:port last"},
    {.key = "destroy",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_scale, exec_destroy),
     .doc = "program that destroys a server"},
    {.key = "list",
     .kind = CONF_STRING,
     CONF_AT(struct conf_scale, exec_list),
     .doc = "program that prints a \"name host:port [state]\" line per server that exists, to "
            "adopt them after a restart; host:port may be - (no address yet: a running server "
            "listed so for longer than timeout is destroyed), state is running (the default) or "
            "a word for not running (stopped, paused ...): such a server is destroyed and "
            "replaced; absent: nothing is listed, so the group knows only the servers it made "
            "since it started: a restart cannot adopt servers (it makes new ones) and a stopped "
            "one is not replaced (destroy is never run to list)"},
    {.key = "timeout",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_scale, exec_timeout),
     .min = 1,
     .def = "60s",
     .doc = "a program still running after this is killed and has failed; a create waits no "
            "longer for its server's address, so a server listed without one for longer is "
            "destroyed"},
    END,
};

static const struct conf_schema provider_exec_schema = {
    .name = "exec",
    .fields = provider_exec_fields,
};

static void
check_provider(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct conf_scale *s = obj;
    bool lv = conf_node_get(map, "libvirt") != NULL, ex = conf_node_get(map, "exec") != NULL;

    if (lv && ex)
        conf_error(ctx, map, NULL, "choose one provider: libvirt or exec, not both");
    else if (!lv && !ex)
        conf_error(ctx, map, NULL, "expected a provider: libvirt or exec");
    s->provider = lv && !ex   ? CONF_PROVIDER_LIBVIRT
                  : ex && !lv ? CONF_PROVIDER_EXEC
                              : CONF_PROVIDER_NONE;
}

/* provider: and its libvirt:/exec: are flattened into struct conf_scale. */
static const struct conf_field provider_fields[] = {
    {.key = "libvirt",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &provider_libvirt_schema,
     .doc = "clone libvirt domains"},
    {.key = "exec",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &provider_exec_schema,
     .doc = "run programs (any cloud or tool)"},
    END,
};

static const struct conf_schema provider_schema = {
    .name = "provider",
    .fields = provider_fields,
    .check = check_provider,
};

/* AWS's PercentChangeInCapacity: a step is a count or a percentage. */
static void
check_step(struct conf_ctx *ctx, const struct conf_node *map, void *obj, const char *verb)
{
    char pct[32];

    (void)obj;
    snprintf(pct, sizeof(pct), "%s_percent", verb);
    if (conf_node_get(map, verb) != NULL && conf_node_get(map, pct) != NULL)
        conf_key_error(ctx, map, pct, "choose %s or %s, not both", verb, pct);
    if (conf_node_get(map, "min_adjustment") != NULL && conf_node_get(map, pct) == NULL)
        conf_key_error(ctx, map, "min_adjustment", "applies only with %s", pct);
}

static void
check_scale_out(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    check_step(ctx, map, obj, "add");
}

static void
check_scale_in(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    check_step(ctx, map, obj, "remove");
}

static const struct conf_field scale_out_fields[] = {
    {.key = "alarm",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_scale_policy, alarm),
     .doc = "alarm (watch.alarms) that triggers it"},
    {.key = "add",
     .kind = CONF_UINT,
     CONF_AT(struct conf_scale_policy, count),
     .min = 1,
     .max = 1000,
     .def = "1",
     .doc = "servers added each time"},
    {.key = "add_percent",
     .kind = CONF_UINT,
     CONF_AT(struct conf_scale_policy, percent),
     .min = 1,
     .max = 1000,
     .doc = "servers added each time as a percentage of the group's size (rounded down, at least "
            "1); instead of add"},
    {.key = "min_adjustment",
     .kind = CONF_UINT,
     CONF_AT(struct conf_scale_policy, min_adjustment),
     .min = 1,
     .max = 1000,
     .def = "1",
     .doc = "with add_percent: the fewest servers a step adds"},
    {.key = "cooldown",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_scale_policy, cooldown),
     .def = "300s",
     .doc = "no further scaling of the group for this long"},
    END,
};

static const struct conf_schema scale_out_schema = {
    .name = "scale_out",
    .fields = scale_out_fields,
    .check = check_scale_out,
};

static const struct conf_field scale_in_fields[] = {
    {.key = "alarm",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_scale_policy, alarm),
     .doc = "alarm (watch.alarms) that triggers it"},
    {.key = "remove",
     .kind = CONF_UINT,
     CONF_AT(struct conf_scale_policy, count),
     .min = 1,
     .max = 1000,
     .def = "1",
     .doc = "servers drained and destroyed each time"},
    {.key = "remove_percent",
     .kind = CONF_UINT,
     CONF_AT(struct conf_scale_policy, percent),
     .min = 1,
     .max = 100,
     .doc = "servers removed each time as a percentage of the group's size (rounded down, at least "
            "1); instead of remove"},
    {.key = "min_adjustment",
     .kind = CONF_UINT,
     CONF_AT(struct conf_scale_policy, min_adjustment),
     .min = 1,
     .max = 1000,
     .def = "1",
     .doc = "with remove_percent: the fewest servers a step removes"},
    {.key = "cooldown",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_scale_policy, cooldown),
     .def = "300s",
     .doc = "no further scaling of the group for this long"},
    END,
};

static const struct conf_schema scale_in_schema = {
    .name = "scale_in",
    .fields = scale_in_fields,
    .check = check_scale_in,
};

/* target_tracking: is flattened into struct conf_scale. */
static const struct conf_field target_tracking_fields[] = {
    {.key = "metric",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_scale, tt_metric),
     .doc = "metric to hold near the target"},
    {.key = "target",
     .kind = CONF_DOUBLE,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_scale, tt_target),
     .doc = "value to hold it at, more than 0"},
    {.key = "tolerance",
     .kind = CONF_DOUBLE,
     CONF_AT(struct conf_scale, tt_tolerance),
     .def = "0.1",
     .doc = "a fraction of the target, 0 to less than 1: while the metric is within target "
            "x (1 +/- tolerance) the group is left as it is, like the Kubernetes HPA's tolerance"},
    {.key = "scale_out_stabilization",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_scale, tt_out_window),
     .max = 3600000,
     .def = "0s",
     .doc = "a scale-out takes the lowest size the metric asked for over this window (HPA's "
            "scaleUp stabilizationWindowSeconds), so a short burst does not grow the group; 0: "
            "at once"},
    {.key = "scale_in_stabilization",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_scale, tt_in_window),
     .max = 3600000,
     .def = "300s",
     .doc = "a scale-in takes the highest size the metric asked for over this window (HPA's "
            "scaleDown stabilizationWindowSeconds), so a dip does not shrink the group"},
    END,
};

static void
check_target_tracking(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    const struct conf_scale *s = obj;

    /* desired = ceil(current x value / target): a target of 0 or less
     * divides by zero or points the wrong way. */
    if (!(s->tt_target > 0))
        conf_key_error(ctx, map, "target", "%g is out of range: must be more than 0", s->tt_target);
    /* A band of 1 or more would hold a metric of 0 in it: never a scale-in. */
    if (!(s->tt_tolerance >= 0 && s->tt_tolerance < 1))
        conf_key_error(ctx, map, "tolerance", "%g is out of range: must be 0 to less than 1",
                       s->tt_tolerance);
}

static const struct conf_schema target_tracking_schema = {
    .name = "target_tracking",
    .fields = target_tracking_fields,
    .check = check_target_tracking,
};

static void
check_scale(struct conf_ctx *ctx, const struct conf_node *map, void *obj)
{
    struct conf_scale *s = obj;

    if (s->min > s->max && conf_node_get(map, "max") != NULL)
        conf_key_error(ctx, map, "max", "max (%" PRIu32 ") is less than min (%" PRIu32 ")", s->max,
                       s->min);
    if (conf_node_get(map, "desired") == NULL)
        s->desired = s->min;
    else if (s->min <= s->max && (s->desired < s->min || s->desired > s->max))
        conf_key_error(ctx, map, "desired",
                       "%" PRIu32 " is outside min..max (%" PRIu32 "..%" PRIu32 ")", s->desired,
                       s->min, s->max);
}

static const struct conf_field scale_fields[] = {
    {.key = "pool",
     .kind = CONF_STRING,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_scale, pool),
     .doc = "pool this group adds servers to"},
    {.key = "min",
     .kind = CONF_UINT,
     CONF_AT(struct conf_scale, min),
     .def = "0",
     .doc = "fewest servers"},
    {.key = "max",
     .kind = CONF_UINT,
     .flags = CONF_F_REQUIRED,
     CONF_AT(struct conf_scale, max),
     .doc = "most servers"},
    {.key = "desired",
     .kind = CONF_UINT,
     CONF_AT(struct conf_scale, desired),
     .def_doc = "min",
     .doc = "servers wanted at start"},
    {.key = "provider",
     .kind = CONF_STRUCT,
     .flags = CONF_F_REQUIRED,
     .sub = &provider_schema,
     .doc = "how servers are created and destroyed: exactly one of libvirt, exec"},
    {.key = "grace_period",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_scale, grace_period),
     .min = 10000,
     .max = 3600000,
     .def = "120s",
     .doc = "how long a new server has, once created, to answer a TCP connect on its address "
            "before its launch has failed and it is destroyed, like AWS Auto Scaling's "
            "HealthCheckGracePeriod; raise it for images that boot slowly. With libvirt it is also "
            "how long a create waits for the clone's address, and how long a running clone listed "
            "without one is left before it is replaced (exec: provider.exec.timeout)"},
    {.key = "reconcile_interval",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_scale, reconcile_interval),
     .min = 1000,
     .max = 3600000,
     .def = "10s",
     .doc = "how often the group reads the provider's list again to adopt servers it lost and "
            "replace those that stopped or never got an address, like a Kubernetes controller's "
            "resync period; rounded up to the 500ms tick"},
    {.key = "warmup",
     .kind = CONF_DURATION,
     CONF_AT(struct conf_scale, warmup),
     .max = 3600000,
     .def = "0s",
     .doc = "instance warm-up: a server launched by the group is warming up from its launch "
            "until this long after it joined the pool, and while any is, the group does not "
            "scale in: the scale_in alarm is not acted on, and target_tracking lowers desired "
            "for no reading and ignores one below its target (not kept for "
            "scale_in_stabilization either), as a new server's idle start would pull the metric "
            "down; scale-out is not held. Warming servers count as capacity and their figures "
            "stay in every metric: pool.<pool>.* are the pool's as it serves, read by alarms "
            "too, so unlike AWS Auto Scaling's instance warmup no server's metrics are left out "
            "of the metric a policy follows. 0: until it joins the pool. Servers adopted after a "
            "restart do not warm up"},
    {.key = "remove_first",
     .kind = CONF_CHOICE,
     .names = remove_first_names,
     CONF_AT(struct conf_scale, remove_first),
     .def = "newest",
     .doc = "which server in service a scale-in drains and removes first: newest (the last "
            "launched, the highest n of <pool>-tern-<n>), oldest (the first launched, like AWS's "
            "OldestInstance, e.g. to move a group onto a new template) or least_connections (the "
            "fewest requests or tunnels in flight in the pool, so the drain is shortest; a tie "
            "goes to the newest). A server still starting is never removed"},
    {.key = "scale_out",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &scale_out_schema,
     CONF_AT(struct conf_scale, scale_out),
     CONF_PRESENT(struct conf_scale, scale_out.present),
     .doc = "step policy: add servers when an alarm is raised"},
    {.key = "scale_in",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &scale_in_schema,
     CONF_AT(struct conf_scale, scale_in),
     CONF_PRESENT(struct conf_scale, scale_in.present),
     .doc = "step policy: remove servers when an alarm is raised"},
    {.key = "target_tracking",
     .kind = CONF_STRUCT,
     .flags = CONF_F_LAZY,
     .sub = &target_tracking_schema,
     CONF_PRESENT(struct conf_scale, has_target_tracking),
     .doc = "keep a metric near a target by resizing the group"},
    END,
};

const struct conf_schema conf_scale_schema = {
    .name = "scaling group",
    .size = sizeof(struct conf_scale),
    .fields = scale_fields,
    .check = check_scale,
    .doc = "The scale plugin (scale.so, loaded when this section is present): scaling groups "
           "that add servers to a pool, or drain and remove them, in answer to alarms.",
};
