/*
 * fuzz_listing — a kvs_listing (core_listing.c) driven through up to 64
 * requests by a server the input makes up, checked against the integrity
 * contract (R1 keys strictly increasing and never twice, R2 where a listing
 * goes on, R3/R4 via the decoder, R5 no token in errors, R6 waits within
 * max_delay, R8 what is retried).
 *
 * The input is read as a stream of choices: first the configuration
 * (page_size, limit, start key, upper key, single_page, max_retries, delays,
 * hooks), then per request: a fault, a status, Retry-After / X-RateLimit-
 * Limit headers, a body (mostly a well-formed page built from input bytes:
 * keys near the cursor, sorted or not, isTruncated true/false/absent,
 * nextExclusiveStartKey null/absent/a string; else an error body, raw bytes
 * or nothing), whether it travels gzip-compressed (Content-Encoding: gzip,
 * inflated by core_inflate.c: the verdict must be the plain body's), maybe with
 * bytes after the gzip member, how to cut it into chunks (maybe also at the
 * member's end), and how far the clock moves.
 *
 * Checked, besides ASan/UBSan: every request URL carries the expected cursor
 * and limit; the keys handed out (kvs_listing_take_page) are strictly
 * increasing over the whole listing, all > start key and <= upper key, never
 * more than `limit`, and exactly the ones the contract keeps from the page
 * (computed here independently); a listing never ends normally after a page
 * that said isTruncated true unless the limit was reached, the upper key was
 * passed or it was a single page; the outcome (page, retry, failure and its
 * type) is the one the contract gives; a retry's wait is finite, >= 0,
 * <= max_delay and >= a Retry-After; a Retry-After above max_delay fails
 * the listing; bytes after a 2xx gzip member make a retry (corrupt gzip) unless the
 * decoder had stopped reading, wherever the chunks fall; empty (NULL, 0) chunks change
 * nothing; pages a driver holds stay intact while later ones arrive;
 * errors (and what on_retry sees) never hold the secret.
 */
#include <math.h>
#include <zlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "fuzz_util.h"

#define SECRET_TEXT "apify_api_7QmZk3Xr9Lw2Tn5Vb8Hc1Jd4Fg6SyP0e"
static const char SECRET[] = SECRET_TEXT;
#define SECRET_LEN (sizeof SECRET - 1)
#define BASE_URL "http://127.0.0.1:1/"
#define URL_START "http://127.0.0.1:1/v2/key-value-stores/s1/keys?"
#define MAX_REQUESTS 64

/* key bytes: a few of the alphabet, so keys collide and interleave */
static const char ALPH[] = "-0159AZ_abz";

static fz *g_in;            /* the hooks read their choices from the input too */

/* --- a byte string helper ----------------------------------------------- */

static void bset(kvs_buf *b, const void *p, size_t n)
{
    if (kvs_buf_set(b, p, n) != 0) abort();
}

static void badd(kvs_buf *b, const void *p, size_t n)
{
    if (kvs_buf_append(b, p, n) != 0) abort();
}

static void bstr(kvs_buf *b, const char *s)
{
    badd(b, s, strlen(s));
}

static int bcmp_(const kvs_buf *a, const char *b, size_t nb)
{
    return kvs_key_cmp(a->data ? a->data : "", a->len, b, nb);
}

/* gzip(body) into out, as a server with Content-Encoding: gzip sends it */
static void gzip_into(kvs_buf *out, const kvs_buf *body)
{
    z_stream zs;
    unsigned char buf[16384];
    int rc;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    zs.next_in = (unsigned char *)body->data;
    zs.avail_in = (uInt)body->len;
    do {
        zs.next_out = buf;
        zs.avail_out = sizeof buf;
        rc = deflate(&zs, Z_FINISH);
        if (kvs_buf_append(out, buf, sizeof buf - zs.avail_out) != 0) abort();
    } while (rc == Z_OK);
    if (rc != Z_STREAM_END) abort();
    deflateEnd(&zs);
}

/* --- the model: what the contract says the listing holds ----------------- */

typedef struct model {
    int       page_size, single_page, max_retries, has_hook;
    long long limit, handed;
    double    max_delay, max_elapsed, min_delay;
    int       has_start, has_upper, has_cursor, has_last;
    kvs_buf   start, upper, cursor, last;
    int       attempt;
    double    failing_since;
    int       ended;            /* the contract says the listing is over */
} model;

/* what the hooks saw during one reply_end */
static struct {
    int    date_calls, retry_calls, retry_verdict;
    double date_value, retry_delay;
    int    retry_attempt;
} hk;

static double date_hook(const char *value)
{
    static const double VALUES[] = { -1, 0, 5, 59.5, 61, 1e9, NAN, INFINITY, -INFINITY, 3600 };
    (void)value;
    hk.date_calls++;
    hk.date_value = VALUES[fz_u8(g_in) % 10];
    return hk.date_value;
}

static int retry_hook(void *ud, const kvs_error *err, int attempt, double delay,
                      char *why, size_t why_cap)
{
    uint8_t c = fz_u8(g_in);
    (void)ud;
    check_no_secret("on_retry err.type", err->type, SECRET, SECRET_LEN);
    check_no_secret("on_retry err.message", err->message, SECRET, SECRET_LEN);
    hk.retry_calls++;
    hk.retry_attempt = attempt;
    hk.retry_delay = delay;
    hk.retry_verdict = c % 8 == 0 ? 0 : c % 8 == 1 ? -1 : 1;
    if (hk.retry_verdict < 0)
        snprintf(why, why_cap, "hook broke with %s in hand", SECRET);
    return hk.retry_verdict;
}

/* --- input-made keys and bodies ---------------------------------------- */

static void gen_key(fz *in, const model *m, kvs_buf *out)
{
    uint8_t mode = fz_u8(in);
    size_t n, i;
    out->len = 0;
    badd(out, "", 0);
    switch (mode % 16) {
    case 0: case 1: case 2: case 3: case 4: case 5:   /* a short key of the small alphabet */
        n = 1 + fz_u8(in) % 4;
        for (i = 0; i < n; i++) badd(out, &ALPH[fz_u8(in) % (sizeof ALPH - 1)], 1);
        break;
    case 6: case 7: case 8:                            /* just after the cursor */
        if (m->has_cursor) badd(out, m->cursor.data, m->cursor.len);
        n = 1 + fz_u8(in) % 2;
        for (i = 0; i < n; i++) badd(out, &ALPH[fz_u8(in) % (sizeof ALPH - 1)], 1);
        break;
    case 9:                                            /* the cursor itself */
        if (m->has_cursor) badd(out, m->cursor.data, m->cursor.len);
        break;
    case 10:                                           /* the upper key */
        if (m->has_upper) badd(out, m->upper.data, m->upper.len);
        break;
    case 11:                                           /* the cursor's prefix */
        if (m->has_cursor) badd(out, m->cursor.data, m->cursor.len - (m->cursor.len > 0));
        break;
    case 12: case 13: {                                /* any bytes */
        const uint8_t *p = fz_bytes(in, fz_u8(in) % 9, &n);
        badd(out, p, n);
        break;
    }
    case 14:                                           /* nothing: "" */
        break;
    default:                                           /* rarely, a long one */
        if (fz_u8(in) % 16 == 0) {
            n = 20000 + fz_u16(in) % 4000;
            for (i = 0; i < n; i++) badd(out, "!", 1);
        } else {
            badd(out, "zz", 2);
        }
    }
}

static void json_str(kvs_buf *b, const char *s, size_t n)
{
    size_t i;
    badd(b, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = { '\\', (char)c };
            badd(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            badd(b, e, 6);
        } else {
            badd(b, &s[i], 1);
        }
    }
    badd(b, "\"", 1);
}

static int key_sort(const void *a, const void *b)
{
    const kvs_buf *x = a, *y = b;
    return kvs_key_cmp(x->data, x->len, y->data, y->len);
}

#define MAX_GEN 48

/* A page as the API writes it, from input choices. */
static void gen_page(fz *in, const model *m, size_t want, kvs_buf *body)
{
    static kvs_buf keys[MAX_GEN];      /* kept from run to run: buffers only */
    kvs_buf next = { 0 };
    uint8_t shape = fz_u8(in), trunc = fz_u8(in), nx = fz_u8(in);
    size_t n = fz_u8(in) % (want + 2 < MAX_GEN ? want + 2 : MAX_GEN), i;
    int items_last = shape & 1;

    for (i = 0; i < n; i++) gen_key(in, m, &keys[i]);
    if (!(shape & 2)) qsort(keys, n, sizeof keys[0], key_sort);   /* mostly in order */
    body->len = 0;
    bstr(body, "{\"data\":{");
    if (shape & 4) bstr(body, "\"count\":3,\"limit\":1000,\"exclusiveStartKey\":null,");
    {
        kvs_buf flags = { 0 };
        badd(&flags, "", 0);
        switch (trunc % 8) {
        case 0: case 1: case 2: case 3: case 4: bstr(&flags, "\"isTruncated\":true,"); break;
        case 5: case 6: bstr(&flags, "\"isTruncated\":false,"); break;
        default: if (trunc & 8) bstr(&flags, "\"isTruncated\":\"true\","); break;
        }
        switch (nx % 8) {
        case 0: case 1: case 2:
            if (n) {
                bstr(&flags, "\"nextExclusiveStartKey\":");
                json_str(&flags, keys[n - 1].data, keys[n - 1].len);
                bstr(&flags, ",");
            }
            break;
        case 3: bstr(&flags, "\"nextExclusiveStartKey\":null,"); break;
        case 4: break;
        case 5: case 6:
            gen_key(in, m, &next);
            bstr(&flags, "\"nextExclusiveStartKey\":");
            json_str(&flags, next.data, next.len);
            bstr(&flags, ",");
            break;
        default: bstr(&flags, "\"nextExclusiveStartKey\":5,"); break;
        }
        if (items_last) badd(body, flags.data, flags.len);
        bstr(body, "\"items\":[");
        for (i = 0; i < n; i++) {
            uint8_t it = fz_u8(in);
            if (i) bstr(body, ",");
            bstr(body, "{\"key\":");
            json_str(body, keys[i].data, keys[i].len);
            bstr(body, it % 16 == 0 ? ",\"size\":36.0" : it % 16 == 1 ? ",\"size\":-1"
                     : it % 16 == 2 ? ",\"size\":\"5\"" : ",\"size\":12");
            if (it & 16) {
                bstr(body, ",\"recordPublicUrl\":\"https://api.apify.com/v2/key-value-stores/s1/records/");
                bstr(body, "k\"");
            }
            bstr(body, "}");
        }
        bstr(body, "]");
        if (!items_last && flags.len) {
            bstr(body, ",");
            badd(body, flags.data, flags.len - 1);   /* without its last comma */
        }
        bstr(body, "}}");
        kvs_buf_free(&flags);
    }
    kvs_buf_free(&next);
}

static const char *const ERR_TYPES[] = {
    "rate-limit-exceeded", "record-not-found", "token-not-valid", "", " ", SECRET_TEXT,
    "internal-server-error", "x"
};
static const char *const ERR_MSGS[] = {
    "You have exceeded the rate limit", "Store was not found", "The token " SECRET_TEXT " is not valid",
    "", "slow down", NULL /* long, the token across the cut */, "internal", "line one\nline two"
};

static void gen_error(fz *in, kvs_buf *body)
{
    uint8_t t = fz_u8(in), mg = fz_u8(in);
    bstr(body, "{\"error\":{\"type\":");
    json_str(body, ERR_TYPES[t % 8], strlen(ERR_TYPES[t % 8]));
    if (!(mg & 8)) {
        bstr(body, ",\"message\":");
        if (ERR_MSGS[mg % 8]) {
            json_str(body, ERR_MSGS[mg % 8], strlen(ERR_MSGS[mg % 8]));
        } else {
            char msg[600];
            size_t at = 440 + fz_u8(in) % 80;
            memset(msg, 'x', at);
            memcpy(msg + at, SECRET, SECRET_LEN);
            json_str(body, msg, at + SECRET_LEN);
        }
    }
    bstr(body, "}}");
}

/* --- Retry-After ---------------------------------------------------------- */

typedef struct hdr_value {
    const char *text;
    double      secs;       /* what it asks for; NAN: not a delay (ignored) */
    int         date;       /* starts with no digit: the http_date_delay hook decides */
} hdr_value;

static const hdr_value RETRY_AFTER[] = {
    { "0", 0, 0 }, { "1", 1, 0 }, { "2.5", 2.5, 0 }, { "30", 30, 0 }, { "59", 59, 0 },
    { "60", 60, 0 }, { "61", 61, 0 }, { "120", 120, 0 }, { "999999", 999999, 0 },
    { "1e300", NAN, 0 }, { " 7 \t", 7, 0 }, { "1.5e1", NAN, 0 }, { "5, 6", NAN, 0 },
    { "", NAN, 0 }, { "5s", NAN, 0 }, { "1e999", NAN, 0 }, { "0x10", NAN, 0 },
    { "1e3", NAN, 0 }, { "2.", NAN, 0 }, { "0.25", 0.25, 0 }, { "3.75 ", 3.75, 0 },
    { "-1", NAN, 1 }, { "soon", NAN, 1 }, { "Wed, 21 Oct 2015 07:28:00 GMT", NAN, 1 },
    { "nan", NAN, 1 }, { "inf", NAN, 1 },
};
#define N_RETRY_AFTER (sizeof RETRY_AFTER / sizeof RETRY_AFTER[0])

/* --- request URLs ----------------------------------------------------- */

static size_t escaped_len(const char *s, size_t n)
{
    size_t i, k = 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        k += ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || c == '-' || c == '.' || c == '_' || c == '~') ? 1 : 3;
    }
    return k;
}

static long long want_of(const model *m)
{
    long long want = m->page_size;
    if (m->limit >= 0 && m->limit - m->handed < want) want = m->limit - m->handed;
    return want;
}

static void check_url(const model *m, const kvs_request *req)
{
    const char *q = req->url + strlen(URL_START), *end = req->url + req->url_len;
    static char dec[80000];
    int saw_cursor = 0, saw_limit = 0;
    CHECK(strlen(req->url) == req->url_len, "url_len %zu, strlen %zu", req->url_len, strlen(req->url));
    CHECK(strncmp(req->url, URL_START, strlen(URL_START)) == 0, "request URL %.200s", req->url);
    CHECK(req->attempt == m->attempt, "request attempt %d, expected %d", req->attempt, m->attempt);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q)), *eq;
        long n;
        if (!amp) amp = end;
        eq = memchr(q, '=', (size_t)(amp - q));
        CHECK(eq, "a query parameter without '=': %.200s", req->url);
        n = pct_decode(eq + 1, (size_t)(amp - eq - 1), dec);
        CHECK(n >= 0, "a malformed escape in %.200s", req->url);
        if (eq - q == 17 && memcmp(q, "exclusiveStartKey", 17) == 0) {
            saw_cursor = 1;
            CHECK(m->has_cursor && bcmp_(&m->cursor, dec, (size_t)n) == 0,
                  "exclusiveStartKey \"%.*s\", expected %s\"%.*s\"", (int)(n < 200 ? n : 200), dec,
                  m->has_cursor ? "" : "none, not ", (int)m->cursor.len, m->cursor.data);
        } else if (eq - q == 5 && memcmp(q, "limit", 5) == 0) {
            char want[32];
            saw_limit = 1;
            snprintf(want, sizeof want, "%lld", want_of(m));
            CHECK((size_t)n == strlen(want) && memcmp(dec, want, (size_t)n) == 0,
                  "limit=%.*s, expected %s", (int)n, dec, want);
        } else {
            CHECK(0, "unexpected query parameter in %.200s", req->url);
        }
        q = amp + (amp < end);
    }
    CHECK(saw_limit, "no limit in %.200s", req->url);
    CHECK(saw_cursor == m->has_cursor, "cursor %s in %.200s", saw_cursor ? "sent" : "missing", req->url);
}

/* --- the contract's page acceptance, written from the contract ----------- */

typedef enum { O_PAGE, O_RETRY, O_FAIL, O_RETRY_OR_FAIL } outcome;

#define RKEY(p, i) (p)->bytes.data + (p)->items[i].key_off, (p)->items[i].key_len

/* Which items of `raw` the listing hands out (indices into kept[]), whether
 * it goes on and from where; or the failure type. */
static const char *oracle_page(const model *m, const kvs_page *raw, size_t *kept, size_t *nkept,
                               int *more, const char **next, size_t *next_len)
{
    size_t i, n = 0;
    *more = raw->is_truncated == 1;
    *next = NULL;
    *next_len = 0;
    for (i = 0; i < raw->count; i++) {
        if (i > 0) {
            int c = kvs_key_cmp(RKEY(raw, i), RKEY(raw, i - 1));
            /* R1 asks this only of keys above the cursor; the core also fails a
             * page whose out-of-order key is at or below it: stricter, kept */
            if (c < 0) return KVS_ERR_RESPONSE;
            if (c == 0) continue;
        }
        if (m->has_cursor && bcmp_(&m->cursor, RKEY(raw, i)) >= 0) continue;
        kept[n++] = i;
    }
    if (m->has_upper) {
        size_t k = n;
        while (k > 0 && bcmp_(&m->upper, RKEY(raw, kept[k - 1])) < 0) k--;
        if (k < n) { n = k; *more = 0; }
    }
    if (m->limit >= 0 && (long long)n >= m->limit - m->handed) {
        n = (size_t)(m->limit - m->handed);
        *more = 0;
    }
    *nkept = n;
    if (*more) {
        if (n > 0) {
            *next = raw->bytes.data + raw->items[kept[n - 1]].key_off;
            *next_len = raw->items[kept[n - 1]].key_len;
        } else if (raw->has_next && (!m->has_cursor || bcmp_(&m->cursor, raw->next.data, raw->next.len) < 0)) {
            *next = raw->next.data;
            *next_len = raw->next.len;
        } else {
            return KVS_ERR_CURSOR;
        }
        if (m->has_upper && bcmp_(&m->upper, *next, *next_len) <= 0) *more = 0;
    }
    return NULL;
}

/* --- one run --------------------------------------------------------------- */

static void copy_page(kvs_buf *dst, const kvs_page *p)
{
    size_t i;
    dst->len = 0;
    badd(dst, "", 0);
    for (i = 0; i < p->count; i++) {
        long long n = (long long)p->items[i].key_len;
        badd(dst, &n, sizeof n);
        badd(dst, RKEY(p, i));
    }
}

static void same_page(const kvs_buf *copy, const kvs_page *p, const char *what)
{
    kvs_buf now = { 0 };
    copy_page(&now, p);
    CHECK(now.len == copy->len && memcmp(now.data, copy->data, now.len) == 0,
          "%s changed while later pages arrived", what);
    kvs_buf_free(&now);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in = { data, size };
    uint8_t c_ps = fz_u8(&in), c_lim = fz_u8(&in), c_fl = fz_u8(&in), c_ret = fz_u8(&in);
    uint8_t c_del = fz_u8(&in), c_el = fz_u8(&in);
    static const double MIN_DELAYS[] = { 0, 0, 0, 0, 0.001, 0.5, 1, 100 };
    static const double MAX_DELAYS[] = { 0, -1, 0.5, 2, 10, 60, 61, 1e300 };
    static const int PAGE_SIZES[] = { 20, 100, 999, 1000 };
    kvs_listing_config cfg;
    model m;
    kvs_listing *l;
    kvs_reply *shadow;
    kvs_page raw, held[2];
    kvs_buf held_copy[2] = { { 0 }, { 0 } }, body = { 0 }, gz = { 0 }, fault_msg = { 0 };
    int nreq, which = 0, held_n[2] = { 0, 0 };
    double now = 1000;
    size_t *kept = NULL;

    int verbose = getenv("KVS_FUZZ_VERBOSE") != NULL;

    g_in = &in;
    memset(&m, 0, sizeof m);
    memset(&cfg, 0, sizeof cfg);
    m.page_size = c_ps < 200 ? 1 + c_ps % 10 : PAGE_SIZES[c_ps % 4];
    m.limit = c_lim < 64 ? -1 : (c_lim - 64) % 40;
    m.single_page = (c_fl & 4) != 0;
    m.max_retries = c_ret % 4;
    m.min_delay = MIN_DELAYS[c_del % 8];
    m.max_delay = MAX_DELAYS[(c_del >> 3) % 8] > 0 ? MAX_DELAYS[(c_del >> 3) % 8] : KVS_DEFAULT_MAX_DELAY;
    m.max_elapsed = c_el % 4 == 0 ? 1 + c_el / 4 : 0;
    m.has_hook = (c_fl & 8) != 0;
    m.failing_since = -1;
    if (c_fl & 1) { gen_key(&in, &m, &m.start); m.has_start = m.has_cursor = 1; bset(&m.cursor, m.start.data, m.start.len); }
    if (c_fl & 2) { gen_key(&in, &m, &m.upper); m.has_upper = 1; }

    cfg.base_url = (c_fl & 64) ? BASE_URL "//" : BASE_URL;
    cfg.store_id = "s1";
    cfg.start_key = m.has_start ? (m.start.data ? m.start.data : "") : NULL;
    cfg.start_key_len = m.start.len;
    cfg.upper_key = m.has_upper ? (m.upper.data ? m.upper.data : "") : NULL;
    cfg.upper_key_len = m.upper.len;
    cfg.page_size = m.page_size;
    cfg.limit = m.limit;
    cfg.single_page = m.single_page;
    cfg.max_retries = m.max_retries;
    cfg.min_delay = m.min_delay;
    cfg.max_delay = MAX_DELAYS[(c_del >> 3) % 8];
    cfg.max_elapsed = m.max_elapsed;
    cfg.seed = fz_u64(&in);
    cfg.secret = SECRET;
    cfg.secret_len = SECRET_LEN;
    cfg.http_date_delay = (c_fl & 16) ? date_hook : NULL;
    cfg.on_retry = m.has_hook ? retry_hook : NULL;

    l = kvs_listing_new(&cfg);
    shadow = kvs_reply_new();
    if (!l || !shadow) abort();
    kvs_reply_secret(shadow, SECRET, SECRET_LEN);
    kvs_page_init(&raw);
    kvs_page_init(&held[0]);
    kvs_page_init(&held[1]);
    m.ended = m.limit == 0;
    CHECK(kvs_listing_finished(l) == (m.limit == 0) && !kvs_listing_failed(l),
          "a new listing with limit %lld: finished %d failed %d", m.limit,
          kvs_listing_finished(l), kvs_listing_failed(l));

    for (nreq = 0; nreq < MAX_REQUESTS; nreq++) {
        kvs_request req;
        uint8_t s_fault = fz_u8(&in), s_status = fz_u8(&in), s_hdr = fz_u8(&in);
        uint8_t s_body = fz_u8(&in), s_chunk = fz_u8(&in), s_time = fz_u8(&in);
        static const int STATUSES[16] = { 200, 200, 200, 200, 200, 200, 201, 0,
                                          400, 401, 404, 429, 500, 503, 302, 199 };
        static const int FAULTS[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                        KVS_FAULT_TIMEOUT, KVS_FAULT_NETWORK, KVS_FAULT_NETWORK,
                                        KVS_FAULT_TLS, KVS_FAULT_REQUEST };
        int status = STATUSES[s_status % 16], fault = FAULTS[s_fault % 16], got;
        long long want = want_of(&m);
        double ra = NAN, wait = -1;       /* the Retry-After asked for */
        size_t at, chunk = 1 + (size_t)s_chunk * s_chunk, url_len;
        kvs_verdict sv = KVS_REPLY_ERROR;
        kvs_error se;
        kvs_step step;
        const kvs_error *err;
        outcome expect;
        const char *expect_type = NULL, *fault_text = NULL;
        int fault_only_text = 0, by_callback = 0, r2 = 0;
        size_t member = 0;      /* bytes of the gzip member; more after them are junk */
        int ra_bug = 0;

        /* which request comes next, and whether one can be made at all */
        url_len = strlen(URL_START) + strlen("limit=") + (size_t)snprintf(NULL, 0, "%lld", want)
                + (m.has_cursor ? strlen("exclusiveStartKey=&") + escaped_len(m.cursor.data, m.cursor.len) : 0);
        got = kvs_listing_next_request(l, &req);
        if (!got) {
            err = kvs_listing_error(l);
            CHECK(kvs_listing_finished(l), "no request, yet not finished");
            /* (was a harness bug: after the end, or with limit 0, a long cursor read as a
               request due, and its URL as one not refused) */
            if (url_len > KVS_URL_MAX && !m.ended && !kvs_listing_failed(l))
                CHECK(0, "a URL of %zu bytes was not refused", url_len);
            if (err && url_len > KVS_URL_MAX) {
                CHECK(strcmp(err->type, KVS_ERR_REQUEST) == 0, "a long URL fails as %s", err->type);
                CHECK(err->retries == m.attempt, "retries %d, made %d", err->retries, m.attempt);
            }
            break;
        }
        CHECK(!kvs_listing_finished(l), "a request from a finished listing");
        CHECK(url_len <= KVS_URL_MAX, "a URL of %zu bytes was made", url_len);
        CHECK(want > 0, "a request for %lld keys", want);
        check_url(&m, &req);

        /* the reply */
        body.len = 0;
        badd(&body, "", 0);
        switch (s_body % 8) {
        case 0: case 1: case 2: case 3: case 4: gen_page(&in, &m, (size_t)want, &body); break;
        case 5: gen_error(&in, &body); break;
        case 6: { size_t n; const uint8_t *p = fz_bytes(&in, fz_u8(&in), &n); badd(&body, p, n); break; }
        default: break;
        }
        kvs_listing_reply_begin(l, status);
        if (s_hdr & 1) {
            uint8_t v = fz_u8(&in);
            char digits[100];
            const char *text;
            int by_hook = 0;
            if (v < 200) {
                const hdr_value *h = &RETRY_AFTER[v % N_RETRY_AFTER];
                text = h->text;
                ra = h->secs;
                by_hook = h->date && cfg.http_date_delay;
            } else {
                /* delay-seconds as RFC 9110 has them: digits, as many as the input says */
                size_t k, nd = 1 + (size_t)(v - 200) * 2 % 90;
                for (k = 0; k < nd; k++) digits[k] = (char)('0' + fz_u8(&in) % 10);
                digits[nd] = '\0';
                text = digits;
                ra = strtod(digits, NULL);
            }
            hk.date_calls = 0;
            ra_bug = !by_hook && (strlen(text) >= 64 || isinf(ra));
            kvs_listing_reply_header(l, (s_hdr & 4) ? "retry-after" : "Retry-After", 11, text, strlen(text));
            if (by_hook) {
                CHECK(hk.date_calls == 1, "http_date_delay called %d times for \"%s\"", hk.date_calls, text);
                ra = hk.date_value < 0 ? 0 : hk.date_value;   /* a date past: now */
            }
        }
        if (s_hdr & 2) {
            static const char *const RL[] = { "30", "0", "abc", "1000000", "10000000", " 200 ", "-5", "" };
            static const int RLV[] = { 30, 0, 0, 1000000, 0, 200, 0, 0 };
            uint8_t v = fz_u8(&in) % 8;
            int before = kvs_listing_rate_limit(l);
            kvs_listing_reply_header(l, "X-RateLimit-Limit", 17, RL[v], strlen(RL[v]));
            CHECK(kvs_listing_rate_limit(l) == (RLV[v] ? RLV[v] : before),
                  "X-RateLimit-Limit \"%s\" gives %d", RL[v], kvs_listing_rate_limit(l));
        }
        if (s_hdr & 8) kvs_listing_reply_header(l, "Content-Type", 12, "application/json", 16);
        /* the body gzip-compressed, as drivers that hand bodies over as they came see it: the
         * listing must decide exactly as for the plain body the shadow decoder reads */
        gz.len = 0;
        kvs_listing_decode_gzip(l, (s_hdr & 16) != 0);
        if ((s_hdr & 16) && status > 0) {
            gzip_into(&gz, &body);
            member = gz.len;
            if (s_hdr & 64) {       /* junk after the member: 1 to 4 bytes */
                size_t k, nj = 1 + fz_u8(&in) % 4;
                for (k = 0; k < nj; k++) badd(&gz, &(char){ (char)fz_u8(&in) }, 1);
            }
            kvs_listing_reply_header(l, "Content-Encoding", 16, (s_hdr & 32) ? "GZIP" : "gzip", 4);
        }

        memset(&se, 0, sizeof se);
        if (body.len > 8192 && chunk < 1024) chunk = 1024;   /* yajl re-scans a token cut
                                                                 into many chunks: keep it quick */
        if (status > 0) {
            int r1 = 0;
            kvs_reply_begin(shadow, status, &raw, (size_t)want);
            const kvs_buf *wire = gz.len ? &gz : &body;
            /* with s_hdr & 128, a chunk ends where the gzip member does */
            size_t cut = (s_hdr & 128) && member < gz.len ? member : wire->len;
            for (at = 0; at < wire->len && !r1; ) {
                size_t end = at < cut ? cut : wire->len;
                size_t c = chunk < end - at ? chunk : end - at;
                r1 = kvs_listing_reply_body(l, NULL, 0);
                if (!r1) r1 = kvs_listing_reply_body(l, wire->data + at, c);
                at += c;
            }
            for (at = 0; at < body.len && !r2; at += chunk) {
                size_t c = chunk < body.len - at ? chunk : body.len - at;
                r2 = kvs_reply_body(shadow, body.data + at, c);
            }
            sv = kvs_reply_end(shadow, &se);
        }

        if (fault) {
            uint8_t fm = fz_u8(&in);
            fault_msg.len = 0;
            badd(&fault_msg, "", 0);
            if (fm % 4 == 1) {
                bstr(&fault_msg, "connection reset by peer");
            } else if (fm % 4 >= 2) {
                /* a long message, maybe with the token in it where a cut may fall;
                 * no other piece of the token is in it */
                size_t k, n = (size_t)fz_u8(&in) * 3, plant = (size_t)fz_u8(&in) * 3;
                for (k = 0; k < n; k++) {
                    if ((fm & 4) && k == plant) bstr(&fault_msg, SECRET);
                    badd(&fault_msg, &"bcdefgh -:"[fz_u8(&in) % 10], 1);
                }
                fault_only_text = 1;
            }
            fault_text = fm % 4 ? fault_msg.data : NULL;
        }

        now += (s_time % 16) * 0.5;
        hk.retry_calls = 0;
        hk.date_calls = 0;
        step = kvs_listing_reply_end(l, (kvs_fault)fault, fault_text, now, &wait);
        CHECK(hk.date_calls == 0, "http_date_delay called from reply_end");
        if (verbose) {
            fprintf(stderr, "#%d %s\n   status %d fault %d body %.*s%s\n   -> step %d",
                    nreq, req.url, status, fault, (int)(body.len < 300 ? body.len : 300), body.data,
                    body.len > 300 ? "..." : "", (int)step);
            if (step == KVS_STEP_RETRY) fprintf(stderr, " wait %g", wait);
            if (kvs_listing_error(l))
                fprintf(stderr, " %s: %s (retries %d)", kvs_listing_error(l)->type,
                        kvs_listing_error(l)->message, kvs_listing_error(l)->retries);
            fputc('\n', stderr);
        }

        /* what the contract expects */
        if (fault == KVS_FAULT_TLS || fault == KVS_FAULT_REQUEST) {
            expect = O_FAIL;                     /* R8: cannot heal */
            expect_type = fault == KVS_FAULT_TLS ? KVS_ERR_TLS : KVS_ERR_REQUEST;
        } else if (fault || status == 0) {
            expect = O_RETRY;
            expect_type = fault == KVS_FAULT_TIMEOUT ? KVS_ERR_TIMEOUT : KVS_ERR_NETWORK;
        } else if (sv == KVS_REPLY_PAGE) {
            expect = O_PAGE;
        } else if (sv == KVS_REPLY_ERROR && (status < 300 || status == 429 || status >= 500)) {
            expect = O_RETRY;
            expect_type = se.type;
        } else {
            expect = O_FAIL;                     /* other 4xx, or a page no retry mends */
            expect_type = se.type;
        }
        /* bytes after the gzip member of a 2xx body the decoder read to the end (it had not
         * stopped: its verdict comes at the end, if at all) are corrupt gzip, worth another
         * try, whether or not they came in a chunk of their own */
        if (!fault && status >= 200 && status < 300 && member && member < gz.len && !r2) {
            expect = O_RETRY;
            expect_type = KVS_ERR_RESPONSE;
        }
        /* (was a core bug: a Retry-After of 64+ bytes, or past DBL_MAX, ignored) */
        if (ra_bug && tolerate("retry-after-huge"))
            ra = NAN;
        if (expect == O_RETRY) {
            if (m.failing_since < 0) m.failing_since = now;
            if (m.attempt >= m.max_retries) {
                expect = O_FAIL;
            } else if (ra == ra && ra > m.max_delay) {
                /* R6 */
                CHECK(step == KVS_STEP_FAILED,
                      "a Retry-After of %g s, more than max_delay %g s, did not fail the listing",
                      ra, m.max_delay);
                expect = O_FAIL;
            } else {
                if (m.max_elapsed > 0) expect = O_RETRY_OR_FAIL;
                if (m.has_hook) {
                    if (hk.retry_calls) {
                        CHECK(hk.retry_calls == 1, "on_retry called %d times", hk.retry_calls);
                        expect = hk.retry_verdict > 0 ? O_RETRY : O_FAIL;
                        if (hk.retry_verdict < 0) expect_type = KVS_ERR_CALLBACK, by_callback = 1;
                    } else {
                        CHECK(expect == O_RETRY_OR_FAIL && step == KVS_STEP_FAILED,
                              "on_retry not asked before a retry");
                    }
                }
            }
        } else {
            CHECK(hk.retry_calls == 0, "on_retry asked where no retry is due");
        }

        err = kvs_listing_error(l);
        CHECK((err != NULL) == (step == KVS_STEP_FAILED) && (err != NULL) == kvs_listing_failed(l),
              "step %d, error %p, failed %d", (int)step, (const void *)err, kvs_listing_failed(l));
        if (err) {
            check_no_secret("listing error type", err->type, SECRET, SECRET_LEN);
            check_no_secret("listing error message", err->message, SECRET, SECRET_LEN);
            /* R5 for transport words: the message came from our fault text, where
             * the token stands only whole: no piece of it may be left */
            if (fault_only_text && !by_callback && !tolerate("fault-cut"))
                CHECK(!has_bytes(err->message, strlen(err->message), SECRET, 4),
                      "a piece of the secret is left in \"%s\"", err->message);
            CHECK(kvs_listing_finished(l), "failed but not finished");
            CHECK(err->status == (status > 0 ? status : 0), "error status %d, reply %d", err->status, status);
        }

        if (step == KVS_STEP_RETRY) {
            CHECK(expect == O_RETRY || expect == O_RETRY_OR_FAIL,
                  "a retry where the contract says %s (status %d, fault %d, verdict %d: %s)",
                  expect == O_PAGE ? "page" : "fail", status, fault, (int)sv, se.message);
            CHECK(isfinite(wait) && wait >= 0 && wait <= m.max_delay,
                  "a wait of %g s (max_delay %g)", wait, m.max_delay);
            if (ra == ra && ra <= m.max_delay)
                CHECK(wait >= ra, "a wait of %g s after Retry-After %g", wait, ra);
            if (m.max_elapsed > 0)
                CHECK(now - m.failing_since + wait <= m.max_elapsed,
                      "a wait of %g s ends past max_elapsed %g (failing since %g, now %g)",
                      wait, m.max_elapsed, m.failing_since, now);
            if (m.has_hook) {
                CHECK(hk.retry_attempt == m.attempt + 1, "on_retry saw attempt %d, expected %d",
                      hk.retry_attempt, m.attempt + 1);
                CHECK(hk.retry_delay == wait, "on_retry saw delay %g, the wait is %g", hk.retry_delay, wait);
            }
            CHECK(!kvs_listing_finished(l), "finished after a retry");
            m.attempt++;
            continue;
        }
        if (step == KVS_STEP_FAILED) {
            CHECK(expect != O_RETRY, "a failure (%s: %s) where the contract says retry",
                  err->type, err->message);
            if (expect != O_PAGE && expect_type)
                CHECK(strcmp(err->type, expect_type) == 0, "failed as %s, expected %s (%s)",
                      err->type, expect_type, err->message);
            if (expect == O_RETRY_OR_FAIL && !hk.retry_calls)
                CHECK(strstr(err->message, "max_elapsed") || strlen(err->message) == sizeof err->message - 1,
                      "failed within max_elapsed: %s", err->message);   /* (unless cut off) */
            CHECK(err->retries == m.attempt, "error says %d retries, %d were made", err->retries, m.attempt);
            if (expect != O_PAGE) break;
        }

        /* a page arrived (or failed the listing as a page): the contract's view */
        CHECK(expect == O_PAGE, "step %d where the contract says %d", (int)step, (int)expect);
        {
            int more;
            const char *next, *why;
            size_t next_len, nkept, i;
            kept = realloc(kept, (raw.count + 1) * sizeof *kept);
            if (!kept) abort();
            why = oracle_page(&m, &raw, kept, &nkept, &more, &next, &next_len);
            if (why) {
                CHECK(step == KVS_STEP_FAILED && strcmp(err->type, why) == 0,
                      "the page should fail the listing as %s; step %d", why, (int)step);
                break;
            }
            CHECK(step == KVS_STEP_PAGE, "a good page failed the listing: %s: %s",
                  err ? err->type : "", err ? err->message : "");
            if (held_n[which]) same_page(&held_copy[which], &held[which], "a held page");
            if (held_n[!which]) same_page(&held_copy[!which], &held[!which], "a held page");
            kvs_listing_take_page(l, &held[which]);
            {
                kvs_page *p = &held[which];
                CHECK(p->count == nkept, "%zu keys handed out, the contract keeps %zu", p->count, nkept);
                for (i = 0; i < p->count; i++) {
                    CHECK(kvs_key_cmp(RKEY(p, i), RKEY(&raw, kept[i])) == 0,
                          "key %zu handed out is \"%.*s\", the contract says \"%.*s\"", i,
                          (int)p->items[i].key_len, p->bytes.data + p->items[i].key_off,
                          (int)raw.items[kept[i]].key_len, raw.bytes.data + raw.items[kept[i]].key_off);
                    CHECK(p->items[i].size == raw.items[kept[i]].size, "key %zu lost its size", i);
                    CHECK((p->items[i].url_off == KVS_NO_URL) == (raw.items[kept[i]].url_off == KVS_NO_URL)
                          && (p->items[i].url_off == KVS_NO_URL
                              || kvs_key_cmp(p->bytes.data + p->items[i].url_off, p->items[i].url_len,
                                             raw.bytes.data + raw.items[kept[i]].url_off,
                                             raw.items[kept[i]].url_len) == 0),
                          "key %zu lost its recordPublicUrl", i);
                    /* R1 over the whole listing, checked on its own */
                    if (m.has_last)
                        CHECK(bcmp_(&m.last, RKEY(p, i)) < 0, "key \"%.*s\" is not after \"%.*s\"",
                              (int)p->items[i].key_len, p->bytes.data + p->items[i].key_off,
                              (int)m.last.len, m.last.data);
                    if (m.has_start)
                        CHECK(bcmp_(&m.start, RKEY(p, i)) < 0, "a key at or below the start key");
                    if (m.has_upper)
                        CHECK(bcmp_(&m.upper, RKEY(p, i)) >= 0, "a key above the upper key");
                    bset(&m.last, RKEY(p, i));
                    m.has_last = 1;
                }
                m.handed += (long long)p->count;
                CHECK(m.limit < 0 || m.handed <= m.limit, "%lld keys handed out, limit %lld",
                      m.handed, m.limit);
                if (more && !m.single_page) {
                    CHECK(!kvs_listing_finished(l), "finished where the contract goes on");
                    bset(&m.cursor, next, next_len);
                    m.has_cursor = 1;
                    CHECK(p->has_next && kvs_key_cmp(p->next.data, p->next.len, next, next_len) == 0,
                          "the page's next is not where the listing goes on");
                } else {
                    CHECK(kvs_listing_finished(l) && !kvs_listing_failed(l), "goes on where the contract ends");
                    if (more) m.has_cursor = 1, bset(&m.cursor, next, next_len);
                    m.ended = 1;
                }
                /* said on its own: truncated pages do not end a listing */
                if (raw.is_truncated == 1 && kvs_listing_finished(l) && !kvs_listing_failed(l)) {
                    int upper_passed = 0;
                    for (i = 0; m.has_upper && i < raw.count; i++)
                        if (bcmp_(&m.upper, RKEY(&raw, i)) <= 0) upper_passed = 1;
                    if (m.has_upper && raw.has_next && bcmp_(&m.upper, raw.next.data, raw.next.len) <= 0)
                        upper_passed = 1;
                    CHECK(m.single_page || (m.limit >= 0 && m.handed == m.limit) || upper_passed,
                          "the listing ended after a truncated page");
                }
                copy_page(&held_copy[which], p);
                held_n[which] = 1;
                which = !which;
            }
            m.attempt = 0;
            m.failing_since = -1;
        }
    }

    if (kvs_listing_finished(l) && fz_u8(&in) % 4 == 0) {
        /* a driver that goes on anyway: refused, nothing breaks */
        kvs_request req;
        double wait = -1;
        int failed = kvs_listing_failed(l);
        CHECK(!kvs_listing_next_request(l, &req), "a request after the end");
        kvs_listing_reply_begin(l, 200);
        kvs_listing_reply_header(l, "Retry-After", 11, "5", 1);
        CHECK(kvs_listing_reply_body(l, "{}", 2) == -1, "a finished listing takes a body");
        CHECK(kvs_listing_reply_end(l, KVS_FAULT_NONE, NULL, now, &wait) == KVS_STEP_FAILED && wait == 0,
              "a reply without a request");
        CHECK(kvs_listing_failed(l) && kvs_listing_error(l), "no error for a reply without a request");
        if (!failed) CHECK(strcmp(kvs_listing_error(l)->type, "usage") == 0, "%s", kvs_listing_error(l)->type);
    }
    kvs_listing_free(l);
    kvs_reply_free(shadow);
    kvs_page_free(&raw);
    kvs_page_free(&held[0]);
    kvs_page_free(&held[1]);
    kvs_buf_free(&held_copy[0]);
    kvs_buf_free(&held_copy[1]);
    kvs_buf_free(&body);
    kvs_buf_free(&gz);
    kvs_buf_free(&fault_msg);
    kvs_buf_free(&m.start);
    kvs_buf_free(&m.upper);
    kvs_buf_free(&m.cursor);
    kvs_buf_free(&m.last);
    free(kept);
    return 0;
}
