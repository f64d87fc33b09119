/*
 * core_listing.c — the paging state machine and the retry policy.
 *
 * A listing knows its cursor, how many keys it may still hand out, which
 * request comes next and what a finished reply means for it: a page, a retry
 * after a computed delay, or a failure.  Drivers call it; it never calls out.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core.h"

typedef enum { S_IDLE, S_REPLY, S_FINISHED, S_FAILED } state_t;

struct kvs_listing {
    kvs_buf   url_base;        /* ".../v2/key-value-stores/<id>/keys?" + fixed params */
    kvs_buf   url;             /* the request being made */
    kvs_buf   cursor;          /* exclusiveStartKey of the next request */
    int       has_cursor;
    kvs_buf   upper;           /* last key wanted (inclusive) */
    int       has_upper;
    int       rate_limit;      /* X-RateLimit-Limit seen, 0 none */
    int       page_size;
    long long remaining;       /* keys still wanted; -1: all */
    int       single_page;
    int       max_retries;
    double    min_delay;
    uint64_t  rng;
    double  (*http_date_delay)(const char *);

    state_t   state;
    int       attempt;         /* retries made for the current page */
    double    retry_after;     /* seconds from the reply's Retry-After, < 0 none */
    int       status;
    kvs_reply *reply;
    kvs_page  page;            /* the page being decoded, then handed over */
    kvs_error error;
};

/* --- setup ---------------------------------------------------------------- */

static int add_param(kvs_buf *b, const char *name, const char *value, size_t n)
{
    if (!value) return 0;
    if (b->data[b->len - 1] != '?' && kvs_buf_append(b, "&", 1) != 0) return -1;
    if (kvs_buf_append(b, name, strlen(name)) != 0 || kvs_buf_append(b, "=", 1) != 0) return -1;
    return kvs_url_escape(b, value, n);
}

kvs_listing *kvs_listing_new(const kvs_listing_config *cfg)
{
    kvs_listing *l = calloc(1, sizeof *l);
    size_t blen;
    if (!l) return NULL;
    kvs_page_init(&l->page);
    l->reply = kvs_reply_new();
    blen = strlen(cfg->base_url);
    while (blen && cfg->base_url[blen - 1] == '/') blen--;
    if (!l->reply
        || kvs_buf_append(&l->url_base, cfg->base_url, blen) != 0
        || kvs_buf_append(&l->url_base, "/v2/key-value-stores/", 21) != 0
        || kvs_url_escape(&l->url_base, cfg->store_id, strlen(cfg->store_id)) != 0
        || kvs_buf_append(&l->url_base, "/keys?", 6) != 0
        || add_param(&l->url_base, "collection", cfg->collection,
                     cfg->collection ? strlen(cfg->collection) : 0) != 0
        || add_param(&l->url_base, "prefix", cfg->prefix,
                     cfg->prefix ? strlen(cfg->prefix) : 0) != 0
        || add_param(&l->url_base, "signature", cfg->signature,
                     cfg->signature ? strlen(cfg->signature) : 0) != 0) {
        kvs_listing_free(l);
        return NULL;
    }
    if (cfg->start_key) {
        if (kvs_buf_set(&l->cursor, cfg->start_key, cfg->start_key_len) != 0) {
            kvs_listing_free(l);
            return NULL;
        }
        l->has_cursor = 1;
    }
    if (cfg->upper_key) {
        if (kvs_buf_set(&l->upper, cfg->upper_key, cfg->upper_key_len) != 0) {
            kvs_listing_free(l);
            return NULL;
        }
        l->has_upper = 1;
    }
    l->page_size = cfg->page_size;
    l->remaining = cfg->limit;
    l->single_page = cfg->single_page;
    l->max_retries = cfg->max_retries;
    l->min_delay = cfg->min_delay;
    l->rng = cfg->seed ? cfg->seed : 0x9E3779B97F4A7C15ull;
    l->http_date_delay = cfg->http_date_delay;
    l->state = l->remaining == 0 ? S_FINISHED : S_IDLE;
    return l;
}

void kvs_listing_free(kvs_listing *l)
{
    if (!l) return;
    kvs_buf_free(&l->url_base);
    kvs_buf_free(&l->url);
    kvs_buf_free(&l->cursor);
    kvs_buf_free(&l->upper);
    kvs_reply_free(l->reply);
    kvs_page_free(&l->page);
    free(l);
}

/* --- requests -------------------------------------------------------------- */

static void set_error(kvs_listing *l, const char *type, const char *msg, int status)
{
    snprintf(l->error.type, sizeof l->error.type, "%s", type);
    snprintf(l->error.message, sizeof l->error.message, "%s", msg);
    l->error.status = status;
    l->error.retries = l->attempt;
    l->state = S_FAILED;
}

int kvs_listing_next_request(kvs_listing *l, kvs_request *req)
{
    char num[24];
    long long want;
    if (l->state != S_IDLE)
        return 0;
    want = l->page_size;
    if (l->remaining >= 0 && l->remaining < want)
        want = l->remaining;       /* the last request asks only for what remains */
    snprintf(num, sizeof num, "%lld", want);
    if (kvs_buf_set(&l->url, l->url_base.data, l->url_base.len) != 0
        || (l->has_cursor && add_param(&l->url, "exclusiveStartKey", l->cursor.data, l->cursor.len) != 0)
        || add_param(&l->url, "limit", num, strlen(num)) != 0) {
        set_error(l, KVS_ERR_MEMORY, "out of memory while building a request", 0);
        return 0;
    }
    req->url = l->url.data;
    req->url_len = l->url.len;
    req->attempt = l->attempt;
    l->state = S_REPLY;
    l->status = 0;
    l->retry_after = -1;
    return 1;
}

/* --- replies --------------------------------------------------------------- */

void kvs_listing_reply_begin(kvs_listing *l, int status)
{
    if (l->state != S_REPLY) return;
    l->status = status;
    l->retry_after = -1;
    if (kvs_reply_begin(l->reply, status, &l->page) != 0)
        l->status = -1;   /* reported by reply_end */
}

/* Retry-After: delta-seconds, or an HTTP-date when the driver can read one. */
static double parse_retry_after(kvs_listing *l, const char *v, size_t n)
{
    char tmp[64];
    char *end;
    double secs;
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    if (tmp[0] >= '0' && tmp[0] <= '9') {
        secs = strtod(tmp, &end);
        while (*end == ' ' || *end == '\t') end++;
        return (*end == '\0' && isfinite(secs)) ? secs : -1;
    }
    if (l->http_date_delay) {
        secs = l->http_date_delay(tmp);
        return secs < 0 ? 0 : secs;   /* a date in the past: retry now */
    }
    return -1;
}

void kvs_listing_reply_header(kvs_listing *l, const char *name, size_t nlen,
                              const char *value, size_t vlen)
{
    if (l->state != S_REPLY) return;
    while (vlen && (*value == ' ' || *value == '\t')) value++, vlen--;
    while (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t' ||
                    value[vlen - 1] == '\r' || value[vlen - 1] == '\n')) vlen--;
    if (nlen == 11 && strncasecmp(name, "Retry-After", 11) == 0) {
        l->retry_after = parse_retry_after(l, value, vlen);
    } else if (nlen == 17 && strncasecmp(name, "X-RateLimit-Limit", 17) == 0) {
        int n = 0;
        size_t i;
        for (i = 0; i < vlen && value[i] >= '0' && value[i] <= '9' && n < 1000000; i++)
            n = n * 10 + (value[i] - '0');
        if (i == vlen && n > 0) l->rate_limit = n;
    }
}

int kvs_listing_reply_body(kvs_listing *l, const char *data, size_t len)
{
    if (l->state != S_REPLY || l->status <= 0) return -1;
    return kvs_reply_body(l->reply, data, len);
}

/* xorshift64*: jitter only, no need for more */
static double next_random(kvs_listing *l)
{
    uint64_t x = l->rng;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    l->rng = x;
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

/* A retry, or the failure it turns into once the retries are spent. */
static kvs_step retry_or_fail(kvs_listing *l, const char *type, const char *msg,
                              int status, double *wait)
{
    double d;
    if (l->attempt >= l->max_retries) {
        char full[512];
        if (l->max_retries > 0)
            snprintf(full, sizeof full, "%s (gave up after %d %s)", msg, l->attempt,
                     l->attempt == 1 ? "retry" : "retries");
        else
            snprintf(full, sizeof full, "%s", msg);
        set_error(l, type, full, status);
        return KVS_STEP_FAILED;
    }
    /* Apify's advice: a random wait in [D, 2D], D doubling from min_delay */
    d = l->min_delay * ldexp(1.0, l->attempt);
    d = d + d * next_random(l);
    if (l->retry_after > d) d = l->retry_after;
    l->attempt++;
    l->state = S_IDLE;
    *wait = d;
    return KVS_STEP_RETRY;
}

static int bytes_cmp(const char *a, size_t na, const char *b, size_t nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);
    return c ? c : (na < nb ? -1 : na > nb ? 1 : 0);
}

/* The page decoded fine: check the cursor, trim to the limit, move on. */
static kvs_step accept_page(kvs_listing *l)
{
    kvs_page *p = &l->page;
    int more = p->is_truncated == 1 && p->has_next && p->count > 0;
    if (l->has_upper) {     /* a key range: keys past its upper bound belong to others */
        size_t n = p->count;
        while (n > 0 && bytes_cmp(p->bytes.data + p->items[n - 1].key_off, p->items[n - 1].key_len,
                                  l->upper.data, l->upper.len) > 0)
            n--;
        if (n < p->count) { p->count = n; more = 0; }
        if (more && bytes_cmp(p->next.data, p->next.len, l->upper.data, l->upper.len) >= 0)
            more = 0;
    }
    if (l->remaining >= 0) {
        if ((long long)p->count >= l->remaining) {
            p->count = (size_t)l->remaining;
            more = 0;
        }
        l->remaining -= (long long)p->count;
    }
    if (more && l->has_cursor) {
        if (bytes_cmp(p->next.data, p->next.len, l->cursor.data, l->cursor.len) <= 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "the API's next cursor does not sort after the previous "
                     "one (a server or proxy fault); stopped instead of looping");
            l->attempt = 0;
            set_error(l, KVS_ERR_CURSOR, msg, l->status);
            return KVS_STEP_FAILED;
        }
    }
    if (more && !l->single_page) {
        if (kvs_buf_set(&l->cursor, p->next.data, p->next.len) != 0) {
            set_error(l, KVS_ERR_MEMORY, "out of memory", l->status);
            return KVS_STEP_FAILED;
        }
        l->has_cursor = 1;
        l->state = S_IDLE;
    } else {
        l->state = S_FINISHED;
    }
    l->attempt = 0;
    return KVS_STEP_PAGE;
}

kvs_step kvs_listing_reply_end(kvs_listing *l, kvs_fault fault, const char *fault_msg,
                               double *wait)
{
    kvs_error e;
    *wait = 0;
    if (l->state != S_REPLY) {
        if (l->state != S_FAILED)
            set_error(l, "usage", "reply_end without a request in flight", 0);
        return KVS_STEP_FAILED;
    }
    if (fault != KVS_FAULT_NONE) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s%s%s", fault == KVS_FAULT_TIMEOUT ? "request timed out"
                 : "network error", fault_msg ? ": " : "", fault_msg ? fault_msg : "");
        return retry_or_fail(l, fault == KVS_FAULT_TIMEOUT ? KVS_ERR_TIMEOUT : KVS_ERR_NETWORK,
                             msg, l->status > 0 ? l->status : 0, wait);
    }
    if (l->status < 0) {
        set_error(l, KVS_ERR_MEMORY, "out of memory", 0);
        return KVS_STEP_FAILED;
    }
    if (l->status == 0) {
        return retry_or_fail(l, KVS_ERR_NETWORK, "network error: no HTTP status received",
                             0, wait);
    }
    memset(&e, 0, sizeof e);
    if (kvs_reply_end(l->reply, &e) == 0)
        return accept_page(l);
    if (strcmp(e.type, KVS_ERR_MEMORY) == 0) {
        set_error(l, e.type, e.message, l->status);
        return KVS_STEP_FAILED;
    }
    /* 2xx that is no page, 429 and 5xx are worth another try; other 4xx are final */
    if (l->status < 300 || l->status == 429 || l->status >= 500)
        return retry_or_fail(l, e.type, e.message, l->status, wait);
    set_error(l, e.type, e.message, l->status);
    return KVS_STEP_FAILED;
}

void kvs_listing_take_page(kvs_listing *l, kvs_page *mine)
{
    kvs_page tmp = *mine;
    *mine = l->page;
    l->page = tmp;
}

int kvs_listing_rate_limit(const kvs_listing *l)
{
    return l->rate_limit;
}

const kvs_error *kvs_listing_error(const kvs_listing *l)
{
    return l->state == S_FAILED ? &l->error : NULL;
}

int kvs_listing_finished(const kvs_listing *l)
{
    return l->state == S_FINISHED || l->state == S_FAILED;
}

int kvs_listing_failed(const kvs_listing *l)
{
    return l->state == S_FAILED;
}

void kvs_listing_stop(kvs_listing *l)
{
    if (l->state != S_FAILED)
        l->state = S_FINISHED;
}
