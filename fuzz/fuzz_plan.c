/*
 * fuzz_plan — the parallel planner (core_parallel.c and its parts) driven
 * against a store the input makes up, with a simulated clock.
 *
 * The input is read as a stream of choices: parallel (1..16), ordered, a
 * limit or none, a page size (1..64), how many keys (up to ~2,000) and how
 * they are made (a shape: numbered under a long prefix, random over the
 * whole alphabet, groups under a few prefixes, or bytes of the input), then
 * per request: its latency and whether the server answers a page, a 429, a
 * 503 or the transfer fails.  The server answers as the API does
 * (exclusiveStartKey, limit, isTruncated, nextExclusiveStartKey,
 * X-RateLimit-Limit).
 *
 * Checked, besides ASan/UBSan: the listing ends (finished or, only when the
 * server failed more than the retries allow, failed); ordered, the keys
 * handed out are exactly the store's first `limit` keys in byte order;
 * unordered, `limit` distinct keys of the store (all of them without a
 * limit); never more than `parallel` requests in flight; a cancelled
 * request's reply changes nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "fuzz_util.h"

#define ALPHABET "!'()-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
#define MAX_KEYS 2048
#define MAX_PENDING 64
#define KEY_MAX 64

static char keys[MAX_KEYS][KEY_MAX + 1];
static size_t nkeys;

static int cmp_keys(const void *a, const void *b)
{
    return kvs_key_cmp(a, strlen(a), b, strlen(b));
}

static uint64_t rng;
static unsigned rnd(unsigned m)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)(rng >> 33) % m;
}

static void make_keys(fz *in)
{
    unsigned shape = fz_u8(in) % 4, want = 1 + fz_u16(in) % (MAX_KEYS - 1), i, j;
    static const char *const prefixes[] = { "INPUT", "crawlee-snapshot-",
        "run-2026-11-28T10-00-00.000Z-page-", "run-2026-11-28T10-00-00.000Z-screenshot-" };
    rng = fz_u64(in);
    for (i = 0; i < want; i++) {
        char *k = keys[i];
        switch (shape) {
        case 0:
            snprintf(k, KEY_MAX + 1, "item-%07u", i + 1);
            break;
        case 1: {
            unsigned len = 1 + rnd(24);
            for (j = 0; j < len; j++) k[j] = ALPHABET[rnd(sizeof ALPHABET - 1)];
            k[len] = '\0';
            break;
        }
        case 2: {
            const char *p = prefixes[rnd(4)];
            size_t n = strlen(p);
            memcpy(k, p, n);
            for (j = 0; j < 12; j++) k[n + j] = "0123456789abcdef"[rnd(16)];
            k[n + 12] = '\0';
            break;
        }
        default: {
            size_t len = 1 + fz_u8(in) % 16;
            for (j = 0; j < len; j++) k[j] = ALPHABET[fz_u8(in) % (sizeof ALPHABET - 1)];
            k[len] = '\0';
        }
        }
    }
    qsort(keys, want, sizeof keys[0], cmp_keys);
    for (i = 0, nkeys = 0; i < want; i++)
        if (nkeys == 0 || strcmp(keys[nkeys - 1], keys[i]) != 0) {
            if (nkeys != i) memcpy(keys[nkeys], keys[i], sizeof keys[0]);
            nkeys++;
        }
}

/* The query value of `name` in url, percent-decoded into out; 0 when absent. */
static int query(const char *url, const char *name, char *out, size_t cap)
{
    const char *q = strchr(url, '?'), *p;
    size_t n = strlen(name);
    for (p = q; p; p = strchr(p + 1, '&')) {
        if (strncmp(p + 1, name, n) == 0 && p[1 + n] == '=') {
            const char *v = p + 2 + n, *e = strchr(v, '&');
            size_t len = e ? (size_t)(e - v) : strlen(v);
            long w;
            CHECK(len < cap, "query value too long");
            w = pct_decode(v, len, out);
            CHECK(w >= 0, "bad escape in %s", url);
            out[w] = '\0';
            return 1;
        }
    }
    return 0;
}

typedef struct pending {
    unsigned id;
    double   due;
    int      status, fault;
    kvs_buf  body;
} pending;

static void answer(pending *r, const char *url, kvs_buf *b)
{
    char esk[512], lim[16];
    size_t i = 0, limit = 1000, n = 0;
    int has = query(url, "exclusiveStartKey", esk, sizeof esk);
    if (query(url, "limit", lim, sizeof lim)) limit = (size_t)atoi(lim);
    if (has)
        while (i < nkeys && kvs_key_cmp(keys[i], strlen(keys[i]), esk, strlen(esk)) <= 0) i++;
    b->len = 0;
    kvs_buf_append(b, "{\"data\":{\"items\":[", 18);
    for (; i < nkeys && n < limit; i++, n++) {
        char item[160];
        int len = snprintf(item, sizeof item, "%s{\"key\":\"%s\",\"size\":%zu}", n ? "," : "",
                           keys[i], strlen(keys[i]));
        kvs_buf_append(b, item, (size_t)len);
    }
    {
        char tail[256];
        int more = i < nkeys;
        int len = snprintf(tail, sizeof tail, "],\"count\":%zu,\"limit\":%zu,\"isTruncated\":%s,"
                           "\"nextExclusiveStartKey\":%s%s%s}}", n, limit, more ? "true" : "false",
                           more ? "\"" : "null", more ? keys[i - 1] : "", more ? "\"" : "");
        kvs_buf_append(b, tail, (size_t)len);
    }
    r->status = 200;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in = { data, size };
    kvs_listing_config cfg;
    kvs_plan *p;
    pending pend[MAX_PENDING];
    size_t npend = 0, got = 0, i;
    long long limit;
    int parallel = 1 + fz_u8(&in) % 16, ordered = fz_u8(&in) & 1, steps = 0, failed = 0;
    static char seen[MAX_KEYS];
    double now = 0;
    kvs_page page;

    memset(&cfg, 0, sizeof cfg);
    cfg.base_url = "http://127.0.0.1:1";
    cfg.store_id = "s1";
    cfg.page_size = 1 + fz_u8(&in) % 64;
    limit = fz_u8(&in) & 1 ? (long long)fz_u16(&in) % 3000 : -1;
    cfg.limit = limit;
    cfg.max_retries = 3;
    cfg.min_delay = 0.01;
    cfg.max_delay = 0.5;
    cfg.seed = 1;
    make_keys(&in);
    if (getenv("KVS_FUZZ_VERBOSE"))
        fprintf(stderr, "parallel=%d ordered=%d page_size=%d limit=%lld keys=%zu\n", parallel,
                ordered, cfg.page_size, limit, nkeys);
    memset(seen, 0, sizeof seen);
    kvs_page_init(&page);
    p = kvs_plan_new(&cfg, parallel, 0, ordered);
    CHECK(p != NULL, "out of memory");
    for (;;) {
        kvs_plan_request req;
        unsigned id;
        double t, wake;
        CHECK(++steps < 200000, "the plan does not end (%zu of %zu keys)", got, nkeys);
        while (kvs_plan_next_cancel(p, &id) && (!getenv("KVS_FUZZ_VERBOSE")
               || fprintf(stderr, "%.3f cancel id=%u\n", now, id) > 0))
            for (i = 0; i < npend; i++)
                if (pend[i].id == id) {
                    kvs_buf_free(&pend[i].body);
                    pend[i--] = pend[--npend];
                }
        while (kvs_plan_take_page(p, &page)) {
            if (getenv("KVS_FUZZ_VERBOSE") && page.count)
                fprintf(stderr, "%.3f page %zu keys %.*s .. %.*s\n", now, page.count,
                        (int)page.items[0].key_len, page.bytes.data + page.items[0].key_off,
                        (int)page.items[page.count - 1].key_len,
                        page.bytes.data + page.items[page.count - 1].key_off);
            for (i = 0; i < page.count; i++) {
                const char *k = page.bytes.data + page.items[i].key_off;
                size_t len = page.items[i].key_len, at;
                char key[KEY_MAX + 1];
                CHECK(len <= KEY_MAX, "key too long");
                memcpy(key, k, len);
                key[len] = '\0';
                if (ordered) {
                    CHECK(got < nkeys && strcmp(keys[got], key) == 0,
                          "key %zu: got \"%s\", want \"%s\"", got, key, got < nkeys ? keys[got] : "(end)");
                } else {
                    char *hit = bsearch(key, keys, nkeys, sizeof keys[0], cmp_keys);
                    CHECK(hit != NULL, "key \"%s\" not in the store", key);
                    at = (size_t)(hit - keys[0]) / sizeof keys[0];
                    CHECK(!seen[at], "key \"%s\" twice", key);
                    seen[at] = 1;
                }
                got++;
            }
        }
        if (kvs_plan_error(p)) { failed = 1; break; }
        if (kvs_plan_finished(p)) break;
        while (kvs_plan_next_request(p, now, &req)) {
            pending *r;
            unsigned kind = fz_u8(&in);
            CHECK(kvs_plan_inflight(p) <= parallel, "%d requests in flight", kvs_plan_inflight(p));
            if (getenv("KVS_FUZZ_VERBOSE"))
                fprintf(stderr, "%.3f send id=%u shard=%u attempt=%d %s\n", now, req.id, req.shard,
                        req.attempt, req.url + 40);
            CHECK(npend < MAX_PENDING, "too many requests in flight");
            r = &pend[npend++];
            memset(r, 0, sizeof *r);
            r->id = req.id;
            r->due = now + 0.01 + (double)(fz_u8(&in) % 32) / 100.0;
            if (kind < 240) answer(r, req.url, &r->body);
            else if (kind < 246) r->status = 429;
            else if (kind < 252) r->status = 503;
            else r->fault = 1;
        }
        t = kvs_plan_timeout(p, now);
        wake = t >= 0 ? now + t : 1e300;
        for (i = 0; i < npend; i++)
            if (pend[i].due < wake) wake = pend[i].due;
        if (kvs_plan_error(p)) { failed = 1; break; }
        CHECK(wake < 1e300, "nothing to wait for, and not finished");
        now = wake > now ? wake : now + 1e-6;
        for (i = 0; i < npend; i++) {
            pending r = pend[i];
            if (r.due > now) continue;
            pend[i--] = pend[--npend];
            if (getenv("KVS_FUZZ_VERBOSE"))
                fprintf(stderr, "%.3f reply id=%u status=%d fault=%d\n", now, r.id, r.status, r.fault);
            if (r.fault) {
                kvs_plan_reply_end(p, r.id, KVS_FAULT_NETWORK, "connection reset", now);
            } else {
                kvs_plan_reply_begin(p, r.id, r.status);
                kvs_plan_reply_header(p, r.id, "X-RateLimit-Limit", 17, "60", 2);
                if (r.body.len) kvs_plan_reply_body(p, r.id, r.body.data, r.body.len);
                kvs_plan_reply_end(p, r.id, KVS_FAULT_NONE, NULL, now);
                kvs_plan_reply_end(p, r.id, KVS_FAULT_NONE, NULL, now);   /* twice: ignored */
            }
            kvs_buf_free(&r.body);
            break;          /* one reply at a time, then back to the plan */
        }
    }
    if (!failed) {
        size_t want = limit >= 0 && (size_t)limit < nkeys ? (size_t)limit : nkeys;
        CHECK(got == want, "%zu keys handed out, want %zu", got, want);
    }
    for (i = 0; i < npend; i++) kvs_buf_free(&pend[i].body);
    kvs_page_free(&page);
    kvs_plan_free(p);
    return 0;
}
