/*
 * core_listing.c — the paging state machine and the retry policy.
 *
 * A listing knows its cursor, how many keys it may still hand out, which
 * request comes next and what a finished reply means for it: a page, a retry
 * after a computed delay, or a failure.  Drivers call it; it never calls out
 * (but for the optional on_retry hook).
 *
 * Integrity (docs/integrity.md, "Every key exactly once"): the cursor is the last key
 * handed out, so a page's keys at or below it are dropped (a repeat, never a
 * loss), keys out of byte order fail the page, and where the listing goes on
 * is decided by the keys themselves: after a page's last key, or, for a page
 * with none, at a next cursor that sorts after the cursor.  A listing never
 * ends while the API says it is truncated.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core.h"

/* A string literal and its length, counted by the compiler. */
#define LIT(s) s, sizeof(s) - 1

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
    double    min_delay, max_delay, max_elapsed;
    uint64_t  rng;
    double  (*http_date_delay)(const char *);
    int     (*on_retry)(void *, const kvs_error *, int, double, char *, size_t);
    void     *on_retry_ud;
    char     *secret;          /* a copy, wiped when freed */
    size_t    secret_len;
    size_t    asked;           /* items the request in flight asked for */
    double    failing_since;   /* `now` of this page's first failure; < 0 none */

    state_t   state;
    int       attempt;         /* retries made for the current page */
    double    retry_after;     /* seconds from the reply's Retry-After, < 0 none */
    int       status;
    kvs_reply *reply;
    kvs_inflate *gz;           /* made at the first gzip reply */
    int       gzip;            /* this reply's body is gzip (Content-Encoding) */
    int       decode_gzip;     /* bodies come as sent: inflate gzip ones */
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
        || kvs_buf_append(&l->url_base, LIT("/v2/key-value-stores/")) != 0
        || kvs_url_escape(&l->url_base, cfg->store_id, strlen(cfg->store_id)) != 0
        || kvs_buf_append(&l->url_base, LIT("/keys?")) != 0
        || add_param(&l->url_base, "collection", cfg->collection, cfg->collection_len) != 0
        || add_param(&l->url_base, "prefix", cfg->prefix, cfg->prefix_len) != 0
        || add_param(&l->url_base, "signature", cfg->signature, cfg->signature_len) != 0) {
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
    if (cfg->secret && cfg->secret_len) {
        if (!(l->secret = malloc(cfg->secret_len))) {
            kvs_listing_free(l);
            return NULL;
        }
        memcpy(l->secret, cfg->secret, cfg->secret_len);
        l->secret_len = cfg->secret_len;
        kvs_reply_secret(l->reply, l->secret, l->secret_len);
    }
    l->max_retries = cfg->max_retries;
    l->min_delay = cfg->min_delay;
    l->max_delay = cfg->max_delay > 0 ? cfg->max_delay : KVS_DEFAULT_MAX_DELAY;
    l->max_elapsed = cfg->max_elapsed;
    l->failing_since = -1;
    l->rng = cfg->seed ? cfg->seed : 0x9E3779B97F4A7C15ull;
    l->http_date_delay = cfg->http_date_delay;
    l->on_retry = cfg->on_retry;
    l->on_retry_ud = cfg->on_retry_ud;
    l->state = l->remaining == 0 ? S_FINISHED : S_IDLE;
    return l;
}

size_t kvs_listing_memory(const kvs_listing *l)
{
    return sizeof *l + l->url_base.cap + l->url.cap + l->cursor.cap + l->upper.cap
         + l->secret_len + (l->reply ? kvs_reply_memory(l->reply) : 0)
         + (l->gz ? kvs_inflate_memory(l->gz) : 0) + kvs_page_memory(&l->page);
}

void kvs_listing_free(kvs_listing *l)
{
    if (!l) return;
    kvs_buf_free(&l->url_base);
    kvs_buf_free(&l->url);
    kvs_buf_free(&l->cursor);
    kvs_buf_free(&l->upper);
    if (l->secret) {
        volatile char *p = l->secret;
        size_t i;
        for (i = 0; i < l->secret_len; i++) p[i] = 0;
        free(l->secret);
    }
    kvs_reply_free(l->reply);
    kvs_inflate_free(l->gz);
    kvs_page_free(&l->page);
    free(l);
}

/* --- requests -------------------------------------------------------------- */

/* The error as a user would see it: never with the secret in it. */
static void fill_error(const kvs_listing *l, kvs_error *e, const char *type, const char *msg,
                       int status)
{
    snprintf(e->type, sizeof e->type, "%s", type);
    snprintf(e->message, sizeof e->message, "%s", msg);
    kvs_redact(e->type, sizeof e->type, l->secret, l->secret_len);
    kvs_redact(e->message, sizeof e->message, l->secret, l->secret_len);
    e->status = status;
    e->retries = l->attempt;
}

static void set_error(kvs_listing *l, const char *type, const char *msg, int status)
{
    fill_error(l, &l->error, type, msg, status);
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
    if (l->url.len > KVS_URL_MAX) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request URL would be %zu bytes long, more than the %d "
                 "a request may have (the cursor is too long)", l->url.len, KVS_URL_MAX);
        set_error(l, KVS_ERR_REQUEST, msg, 0);
        return 0;
    }
    l->asked = (size_t)want;
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
    l->gzip = 0;
    if (kvs_reply_begin(l->reply, status, &l->page, l->asked) != 0)
        l->status = -1;   /* reported by reply_end */
}

/* Whether v[0..n) is delta-seconds: digits, here also with a fraction ("2.5"). */
static int is_delta_seconds(const char *v, size_t n)
{
    size_t i = 0, frac;
    while (i < n && v[i] >= '0' && v[i] <= '9') i++;
    if (i == 0) return 0;
    if (i < n && v[i] == '.') {
        for (frac = ++i; i < n && v[i] >= '0' && v[i] <= '9'; i++)
            ;
        if (i == frac) return 0;
    }
    return i == n;
}

/* Retry-After (trimmed by reply_header): delta-seconds, or an HTTP-date when
 * the driver can read one; anything else ("1e3", "0x10", "-5", "5s") is no
 * Retry-After.  A number too large to read is an endless wait (HUGE_VAL),
 * never none. */
static double parse_retry_after(kvs_listing *l, const char *v, size_t n)
{
    char tmp[64], *buf = tmp;
    double secs;
    if (n == 0) return -1;
    if (v[0] >= '0' && v[0] <= '9') {   /* checked first: strtod would take "1e3" */
        if (!is_delta_seconds(v, n)) return -1;
        if (n >= sizeof tmp && !(buf = malloc(n + 1))) return HUGE_VAL;   /* unreadable: wait for ever */
        memcpy(buf, v, n);
        buf[n] = '\0';
        secs = strtod(buf, NULL);       /* correctly rounded; HUGE_VAL past DBL_MAX */
        if (buf != tmp) free(buf);
        return secs;
    }
    if (n >= sizeof tmp) return -1;     /* no date is that long */
    if (l->http_date_delay) {
        memcpy(tmp, v, n);
        tmp[n] = '\0';
        secs = l->http_date_delay(tmp);
        return secs < 0 ? 0 : secs;     /* a date in the past: retry now */
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
#define HEADER_IS(lit) (nlen == sizeof(lit) - 1 && strncasecmp(name, lit, nlen) == 0)
    if (l->decode_gzip && HEADER_IS("Content-Encoding")) {
        /* gzip: decoded here, counted against the page's limits as decoded bytes */
        if ((vlen == 4 && strncasecmp(value, "gzip", 4) == 0)
            || (vlen == 6 && strncasecmp(value, "x-gzip", 6) == 0)) {
            if (!l->gz) l->gz = kvs_inflate_new();
            if (!l->gz || kvs_inflate_begin(l->gz, KVS_BODY_MAX(l->asked)) != 0)
                l->status = -1;   /* out of memory, reported by reply_end */
            else
                l->gzip = 1;
        }
    } else if (HEADER_IS("Retry-After")) {
        l->retry_after = parse_retry_after(l, value, vlen);
    } else if (HEADER_IS("X-RateLimit-Limit")) {
        int n = 0;
        size_t i;
        for (i = 0; i < vlen && value[i] >= '0' && value[i] <= '9' && n < 1000000; i++)
            n = n * 10 + (value[i] - '0');
        if (i == vlen && n > 0) l->rate_limit = n;
    }
#undef HEADER_IS
}

static int reply_sink(void *ud, const char *data, size_t len)
{
    return kvs_reply_body(ud, data, len) != 0;
}

int kvs_listing_reply_body(kvs_listing *l, const char *data, size_t len)
{
    if (l->state != S_REPLY || l->status <= 0) return -1;
    if (l->gzip) {   /* after the member's end, read on: a byte more is junk */
        int st = kvs_inflate_feed(l->gz, data, len, reply_sink, l->reply);
        return st == KVS_INFLATE_MORE || st == KVS_INFLATE_DONE ? 0 : -1;
    }
    return kvs_reply_body(l->reply, data, len);
}

/* xorshift64*: jitter only, no need for more */
static double next_random(kvs_listing *l)
{
    uint64_t x = l->rng;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    l->rng = x;
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / KVS_2POW53;
}

static void gave_up(char *out, size_t cap, const char *msg, int attempt, const char *why)
{
    if (attempt > 0)
        snprintf(out, cap, "%s (gave up after %d %s%s%s)", msg, attempt,
                 attempt == 1 ? "retry" : "retries", why ? ": " : "", why ? why : "");
    else if (why)
        snprintf(out, cap, "%s (not retried: %s)", msg, why);
    else
        snprintf(out, cap, "%s", msg);
}

/* A retry, or the failure it turns into: retries spent, a wait past max_delay
 * or max_elapsed, or the on_retry hook saying no. */
static kvs_step retry_or_fail(kvs_listing *l, const char *type, const char *msg,
                              int status, double now, double *wait)
{
    char full[600], why[200];
    double d;
    int verdict;
    kvs_error e;
    if (l->failing_since < 0) l->failing_since = now;
    if (l->attempt >= l->max_retries) {
        gave_up(full, sizeof full, msg, l->attempt, NULL);
        set_error(l, type, full, status);
        return KVS_STEP_FAILED;
    }
    if (l->retry_after > l->max_delay) {
        if (l->retry_after < 1e15)
            snprintf(why, sizeof why, "the server asked to wait %.0f s, more than max_delay "
                     "(%g s)", l->retry_after, l->max_delay);
        else
            snprintf(why, sizeof why, "the server asked to wait for ever, more than max_delay "
                     "(%g s)", l->max_delay);
        gave_up(full, sizeof full, msg, l->attempt, why);
        set_error(l, type, full, status);
        return KVS_STEP_FAILED;
    }
    /* Apify's advice: a random wait in [D, 2D], D doubling from min_delay */
    d = l->min_delay * ldexp(1.0, l->attempt < 60 ? l->attempt : 60);
    d = d + d * next_random(l);
    if (d > l->max_delay) d = l->max_delay;
    if (l->retry_after > d) d = l->retry_after;
    if (l->max_elapsed > 0 && now - l->failing_since + d > l->max_elapsed) {
        snprintf(why, sizeof why, "another try would end past max_elapsed (%g s)",
                 l->max_elapsed);
        gave_up(full, sizeof full, msg, l->attempt, why);
        set_error(l, type, full, status);
        return KVS_STEP_FAILED;
    }
    if (l->on_retry) {
        fill_error(l, &e, type, msg, status);
        why[0] = '\0';
        verdict = l->on_retry(l->on_retry_ud, &e, l->attempt + 1, d, why, sizeof why);
        if (verdict <= 0) {
            if (verdict < 0) {
                snprintf(full, sizeof full, "on_retry failed: %s", why);
                set_error(l, KVS_ERR_CALLBACK, full, status);
            } else {
                gave_up(full, sizeof full, msg, l->attempt, "on_retry said no");
                set_error(l, type, full, status);
            }
            return KVS_STEP_FAILED;
        }
    }
    l->attempt++;
    l->state = S_IDLE;
    *wait = d;
    return KVS_STEP_RETRY;
}

static kvs_step fail_now(kvs_listing *l, const char *type, const char *msg, int status)
{
    char full[600];
    gave_up(full, sizeof full, msg, l->attempt, NULL);
    set_error(l, type, full, status);
    return KVS_STEP_FAILED;
}

#define ITEM_KEY(p, i) (p)->bytes.data + (p)->items[i].key_off, (p)->items[i].key_len

/* Keeps the page's keys that sort after the cursor, in place; -1 when a key
 * sorts below the one before it (the page is not in the API's order). */
static int keep_new_keys(kvs_listing *l, kvs_page *p)
{
    size_t i, n = 0;
    for (i = 0; i < p->count; i++) {
        if (i > 0) {
            int c = kvs_key_cmp(ITEM_KEY(p, i), ITEM_KEY(p, i - 1));
            if (c < 0) return -1;
            if (c == 0) continue;                           /* the same key twice */
        }
        if (l->has_cursor && kvs_key_cmp(ITEM_KEY(p, i), l->cursor.data, l->cursor.len) <= 0)
            continue;                                       /* handed out already */
        if (n != i) p->items[n] = p->items[i];
        n++;
    }
    p->count = n;
    return 0;
}

/* The page decoded fine: keep what is new, trim to the range and the limit,
 * and decide where the listing goes on. */
static kvs_step accept_page(kvs_listing *l)
{
    kvs_page *p = &l->page;
    int more = p->is_truncated == 1;
    const char *next = NULL;
    size_t next_len = 0;
    if (keep_new_keys(l, p) != 0)
        return fail_now(l, KVS_ERR_RESPONSE, "unexpected reply from the API: the page's keys "
                        "are not in byte order", l->status);
    if (l->has_upper) {     /* a key range: keys past its upper bound belong to others */
        size_t n = p->count;
        while (n > 0 && kvs_key_cmp(ITEM_KEY(p, n - 1), l->upper.data, l->upper.len) > 0)
            n--;
        if (n < p->count) { p->count = n; more = 0; }
    }
    if (l->remaining >= 0) {
        if ((long long)p->count >= l->remaining) {
            p->count = (size_t)l->remaining;
            more = 0;
        }
        l->remaining -= (long long)p->count;
    }
    if (more) {
        /* after the last key handed out, whatever the next cursor says; a page
         * with no new key goes on at a next cursor only if that one advances */
        if (p->count > 0) {
            next = p->bytes.data + p->items[p->count - 1].key_off;
            next_len = p->items[p->count - 1].key_len;
        } else if (p->has_next && (!l->has_cursor
                   || kvs_key_cmp(p->next.data, p->next.len, l->cursor.data, l->cursor.len) > 0)) {
            next = p->next.data;
            next_len = p->next.len;
        } else {
            return fail_now(l, KVS_ERR_CURSOR, p->has_next
                ? "the API says the listing is truncated, but the page holds no new key and its "
                  "next cursor does not sort after the previous one (a server or proxy fault); "
                  "stopped instead of looping"
                : "the API says the listing is truncated, but the page holds no new key and "
                  "no next cursor to go on from (a server or proxy fault)", l->status);
        }
        if (l->has_upper && kvs_key_cmp(next, next_len, l->upper.data, l->upper.len) >= 0)
            more = 0;
    }
    if (more) {
        if (kvs_buf_set(&l->cursor, next, next_len) != 0
            || (next != p->next.data && kvs_buf_set(&p->next, next, next_len) != 0)) {
            set_error(l, KVS_ERR_MEMORY, "out of memory", l->status);
            return KVS_STEP_FAILED;
        }
        p->has_next = 1;
        l->has_cursor = 1;
    }
    l->state = more && !l->single_page ? S_IDLE : S_FINISHED;
    l->attempt = 0;
    l->failing_since = -1;
    return KVS_STEP_PAGE;
}

kvs_step kvs_listing_reply_end(kvs_listing *l, kvs_fault fault, const char *fault_msg,
                               double now, double *wait)
{
    kvs_error e;
    *wait = 0;
    if (l->state != S_REPLY) {
        if (l->state != S_FAILED)
            set_error(l, "usage", "reply_end without a request in flight", 0);
        return KVS_STEP_FAILED;
    }
    if (fault != KVS_FAULT_NONE) {
        static const char *const what[] = { "", "request timed out", "network error",
                                            "TLS error", "request refused by the transport" };
        static const char *const type[] = { "", KVS_ERR_TIMEOUT, KVS_ERR_NETWORK,
                                            KVS_ERR_TLS, KVS_ERR_REQUEST };
        char msg[400];
        int status = l->status > 0 ? l->status : 0;
        snprintf(msg, sizeof msg, "%s%s%s", what[fault], fault_msg ? ": " : "",
                 fault_msg ? fault_msg : "");
        /* now, while a copy cut off at the end is still at the end */
        kvs_redact(msg, sizeof msg, l->secret, l->secret_len);
        if (fault == KVS_FAULT_TLS || fault == KVS_FAULT_REQUEST)
            return fail_now(l, type[fault], msg, status);     /* retrying cannot mend it */
        return retry_or_fail(l, type[fault], msg, status, now, wait);
    }
    if (l->status < 0) {
        set_error(l, KVS_ERR_MEMORY, "out of memory", 0);
        return KVS_STEP_FAILED;
    }
    if (l->status == 0) {
        return retry_or_fail(l, KVS_ERR_NETWORK, "network error: no HTTP status received",
                             0, now, wait);
    }
    if (l->gzip && l->status >= 200 && l->status < 300) {
        char msg[240];
        switch (kvs_inflate_end(l->gz)) {
        case KVS_INFLATE_NOMEM:
            set_error(l, KVS_ERR_MEMORY, "out of memory while inflating a reply", l->status);
            return KVS_STEP_FAILED;
        case KVS_INFLATE_TOO_BIG:     /* the decoder stops first; this is the backstop */
            snprintf(msg, sizeof msg, "%s (more than %zu bytes for a page of %zu items)",
                     kvs_inflate_message(l->gz), (size_t)KVS_BODY_MAX(l->asked), l->asked);
            return fail_now(l, KVS_ERR_RESPONSE, msg, l->status);
        case KVS_INFLATE_CORRUPT:     /* like a body cut short or not JSON: worth another try */
            snprintf(msg, sizeof msg, "the body is not valid gzip: %s", kvs_inflate_message(l->gz));
            return retry_or_fail(l, KVS_ERR_RESPONSE, msg, l->status, now, wait);
        default:
            break;
        }
    }
    memset(&e, 0, sizeof e);
    switch (kvs_reply_end(l->reply, &e)) {
    case KVS_REPLY_PAGE:
        return accept_page(l);
    case KVS_REPLY_NOMEM:
        set_error(l, KVS_ERR_MEMORY, e.message, l->status);
        return KVS_STEP_FAILED;
    case KVS_REPLY_FINAL:
        return fail_now(l, e.type, e.message, l->status);
    case KVS_REPLY_ERROR:
        break;
    }
    /* 2xx that is no page, 429 and 5xx are worth another try; other 4xx are final */
    if (l->status < 300 || l->status == 429 || l->status >= 500)
        return retry_or_fail(l, e.type, e.message, l->status, now, wait);
    set_error(l, e.type, e.message, l->status);
    return KVS_STEP_FAILED;
}

void kvs_listing_take_page(kvs_listing *l, kvs_page *mine)
{
    kvs_page_swap(mine, &l->page);
}

int kvs_listing_rate_limit(const kvs_listing *l)
{
    return l->rate_limit;
}

double kvs_listing_retry_after(const kvs_listing *l)
{
    return l->retry_after;
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

void kvs_listing_decode_gzip(kvs_listing *l, int on)
{
    l->decode_gzip = on;
}
