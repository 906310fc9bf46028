/*
 * libFuzzer target for the watch plugin's message templates
 * (watch/notify.c: watch_template), which put an alarm's fields into the
 * body an SMS gateway receives, escaped for JSON or for a form. The fields
 * carry names from outside: metrics that plugins publish (named after the
 * pools and servers of libvirt domains), the pool taken from a metric's
 * name, and values a plugin scraped.
 *
 * Input: byte 0 chooses the template (see SEL_*), bytes 1-16 are the value
 * and the threshold, the rest is the text fields separated by NUL bytes
 * (alarm, metric, state, from, reason, pool, comparison, text, to, and
 * with SEL_OWN_TEMPLATE the template itself).
 *
 * Invariants (abort() when broken) with the fixed templates, which quote
 * every field: a JSON body is valid JSON whenever the fields are valid
 * UTF-8 and gives each field back exactly; a form body holds only
 * unreserved characters and escapes, and each field decodes back exactly.
 * With a template from the input: no crash, no leak.
 */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "watch/watch.h"

#define SEL_FORM 0x01         /* form-encode, else JSON-escape */
#define SEL_OWN_TEMPLATE 0x02 /* the template is the last field of the input */
#define SEL_REMINDER 0x04

enum { F_ALARM, F_METRIC, F_STATE, F_FROM, F_REASON, F_POOL, F_CMP, F_TEXT, F_TO, F_TPL, NF };

static const char *const keys[] = {"alarm", "metric",     "state", "from", "reason",
                                   "pool",  "comparison", "text",  "to"};

static const char json_tpl[] =
    "{\"alarm\":\"{alarm}\",\"metric\":\"{metric}\",\"state\":\"{state}\",\"from\":\"{from}\","
    "\"reason\":\"{reason}\",\"pool\":\"{pool}\",\"comparison\":\"{comparison}\","
    "\"text\":\"{text}\",\"to\":\"{to}\",\"value\":\"{value}\",\"threshold\":\"{threshold}\","
    "\"time\":\"{time}\",\"x\":\"{unknown}\"}";

static const char form_tpl[] = "alarm={alarm}&metric={metric}&state={state}&from={from}&"
                               "reason={reason}&pool={pool}&comparison={comparison}&"
                               "text={text}&to={to}&value={value}";

static bool
utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void
check_json(const char *out, const char *const *f)
{
    for (int i = 0; i < F_TPL; i++)
        if (!utf8(f[i]))
            return; /* jansson refuses it whatever the escaping */
    json_t *j = json_loads(out, 0, NULL);
    check(j != NULL);
    for (int i = 0; i < F_TPL; i++) {
        const char *v = json_string_value(json_object_get(j, keys[i]));
        check(v != NULL && strcmp(v, f[i]) == 0);
    }
    /* A placeholder it does not know stays as written. */
    check(strcmp(json_string_value(json_object_get(j, "x")), "{unknown}") == 0);
    json_decref(j);
}

static void
check_form(const char *out, const char *const *f)
{
    char *copy = strdup(out), *save = NULL;
    int i = 0;

    check(copy != NULL);
    for (const char *p = out; *p; p++)
        check((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("-._~%&=", *p) != NULL);
    for (char *pair = strtok_r(copy, "&", &save); pair != NULL && i < F_TPL;
         pair = strtok_r(NULL, "&", &save), i++) {
        char *eq = strchr(pair, '=');
        check(eq != NULL && (size_t)(eq - pair) == strlen(keys[i]) &&
              strncmp(pair, keys[i], strlen(keys[i])) == 0);
        const char *v = f[i];
        for (const char *p = eq + 1; *p; p++, v++) {
            char c = *p;
            if (c == '%') {
                int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
                check(hi >= 0 && lo >= 0);
                c = (char)(hi * 16 + lo);
                p += 2;
            }
            check(*v == c);
        }
        check(*v == '\0');
    }
    check(i == F_TPL);
    free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A template and fields of the sizes a configuration gives. Larger ones
     * grow the output by one vasprintf and realloc per byte (cat() in
     * notify.c): a 3 KB input took 4 s and 1.5 GB under ASan. */
    if (size < 17 || size > 600)
        return 0;

    uint8_t sel = data[0];
    double value, threshold;
    memcpy(&value, data + 1, 8);
    memcpy(&threshold, data + 9, 8);

    /* The fields, NUL-terminated in a copy; missing ones are empty. */
    char *text = malloc(size - 17 + 1);
    check(text != NULL);
    memcpy(text, data + 17, size - 17);
    text[size - 17] = '\0';
    const char *f[NF];
    const char *p = text, *end = text + (size - 17);
    for (int i = 0; i < NF; i++) {
        f[i] = p <= end ? p : "";
        if (p <= end)
            p += strlen(p) + 1;
    }

    struct watch_fields wf = {
        .alarm = (char *)f[F_ALARM],
        .metric = (char *)f[F_METRIC],
        .state = (char *)f[F_STATE],
        .from = (char *)f[F_FROM],
        .reason = (char *)f[F_REASON],
        .pool = (char *)f[F_POOL],
        .comparison = (char *)f[F_CMP],
        .value = value,
        .threshold = threshold,
        /* The wall clock of the change: tern's own, not the input's. */
        .time = 1.7e9 + (double)(sel >> 3) * 86400.0,
        .reminder = sel & SEL_REMINDER,
    };
    bool form = sel & SEL_FORM;
    const char *tpl = sel & SEL_OWN_TEMPLATE ? f[F_TPL] : form ? form_tpl : json_tpl;
    char *out = watch_template(tpl, &wf, f[F_TEXT], f[F_TO], !form, form);

    check(out != NULL);
    if (!(sel & SEL_OWN_TEMPLATE)) {
        if (form)
            check_form(out, f);
        else
            check_json(out, f);
    }
    free(out);
    free(text);
    return 0;
}
