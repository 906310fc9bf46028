/*
 * The SMS channel: an HTTP request to a gateway through libcurl, one per
 * phone number, run on the host's job pool (notify.c).
 *
 * Gateways differ (Twilio takes a form, most Korean providers JSON), so the
 * request is a template: sms.method, sms.url, sms.headers and sms.body with
 * {alarm} {state} {metric} {value} {threshold} {comparison} {pool} {time}
 * {reason} {text} {to} filled in. Values are escaped for the body's kind:
 * URL-encoded when a Content-Type header says form, JSON-escaped otherwise.
 * Without a body template the request is JSON {"to": ..., "text": ...}. A
 * 2xx answer is success; anything else fails with the status and the start
 * of the answer, so the API shows what the gateway said.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "watch/watch.h"

struct answer {
    char buf[200];
    size_t len;
};

static size_t
on_data(char *p, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t take = size * n;

    if (take > sizeof(a->buf) - 1 - a->len)
        take = sizeof(a->buf) - 1 - a->len;
    memcpy(a->buf + a->len, p, take);
    a->len += take;
    a->buf[a->len] = '\0';
    return size * n;
}

static bool
is_form(const struct watch_sms_cfg *c)
{
    for (size_t i = 0; i < c->nheaders; i++)
        if (strncasecmp(c->headers[i], "content-type:", 13) == 0 &&
            strstr(c->headers[i], "x-www-form-urlencoded") != NULL)
            return true;
    return false;
}

static int
send_one(const struct watch_sms_cfg *c, const struct watch_fields *f, const char *text,
         const char *to, char *err, size_t errlen)
{
    bool form = is_form(c), json = !form;
    char *body = watch_template(c->body ? c->body : "{\"to\": \"{to}\", \"text\": \"{text}\"}", f,
                                text, to, json, form);
    char *url = watch_template(c->url, f, text, to, false, true);
    struct curl_slist *hdrs = NULL;
    struct answer ans = {0};
    bool has_type = false;
    long status = 0;
    CURLcode cc;
    CURL *curl = NULL;
    int rc = -1;

    if (body == NULL || url == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    curl = curl_easy_init();
    if (curl == NULL) {
        snprintf(err, errlen, "cannot start libcurl");
        goto out;
    }
    for (size_t i = 0; i < c->nheaders; i++) {
        hdrs = curl_slist_append(hdrs, c->headers[i]);
        has_type = has_type || strncasecmp(c->headers[i], "content-type:", 13) == 0;
    }
    if (!has_type)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* we are on a job thread */
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms > 0 ? c->timeout_ms : 10000L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ans);
    if (strcmp(c->method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, c->method);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }
    cc = curl_easy_perform(curl);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s %s: %s", c->method, c->url, curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status / 100 != 2) {
        snprintf(err, errlen, "the gateway answered %ld: %.120s", status, ans.buf);
        goto out;
    }
    rc = 0;
out:
    if (curl != NULL)
        curl_easy_cleanup(curl);
    curl_slist_free_all(hdrs);
    free(body);
    free(url);
    return rc;
}

int
watch_sms_send(struct watch_sms_cfg *c, const struct watch_fields *f, const char *text, char *err,
               size_t errlen)
{
    size_t left = 0;

    for (size_t i = 0; i < c->nto; i++) {
        char one[256];

        if (send_one(c, f, text, c->to[i], one, sizeof(one)) < 0) {
            /* Report the first failure; try every number anyway. */
            if (left == 0)
                snprintf(err, errlen, "to %s: %s", c->to[i], one);
            c->to[left++] = c->to[i];
        } else {
            /* Texted: a retry is not for this number. */
            free(c->to[i]);
        }
    }
    c->nto = left;
    return left > 0 ? -1 : 0;
}
