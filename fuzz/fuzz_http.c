/*
 * fuzz_http — raw HTTP/1.1 (core_http.c) between a kvs_listing and a server
 * the input makes up: the request bytes of each URL, and replies read from
 * raw bytes, cut anywhere.
 *
 * The input is read as a stream of choices: the listing's configuration
 * (page_size, limit, a start key, retries, gzip), then per request a reply:
 * mostly one built from choices (a status, a 1xx before it, Retry-After,
 * X-RateLimit-Limit, odd or empty headers, a body that is a page of keys near
 * the cursor, an API error or raw bytes, gzip or not, framed by
 * Content-Length (right or wrong), chunked (with chunk extensions) or the
 * close of the connection, with bytes after it or not), else raw bytes of
 * the input as they are; then how it is cut, and whether the connection closes
 * after it.
 *
 * Checked, besides ASan/UBSan:
 * - the request: one request line "GET <path> HTTP/1.1" of the URL's path and
 *   query, Host, Accept, Accept-Encoding when gzip is on, the token once, in
 *   Authorization, and nothing after the blank line; no CR or LF but as line ends;
 * - a reply decodes the same whole, byte by byte and cut at input-chosen
 *   points (with empty feeds between): the same end (done or broken, and
 *   why), the same step (page, retry and its wait, failure and its error),
 *   the same keys; a reply the reader calls reusable ended and was not cut;
 * - over the whole listing, whatever the bytes ("Every key exactly once"):
 *   keys strictly increasing, after the start key, never more than `limit`;
 *   a page that said isTruncated true ends the listing only at the limit;
 *   errors never hold the token.
 *
 * KVS_FUZZ_VERBOSE=1 prints how each reply ended.
 */
#include <zlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "fuzz_util.h"

#define SECRET_TEXT "apify_api_Hq4Tz8Rk2Wm6Yp0Nc3Vb7Lx5Df9Gs1Je"
static const char SECRET[] = SECRET_TEXT;
#define SECRET_LEN (sizeof SECRET - 1)
#define MAX_REPLIES 24
#define MAX_CUTS 8

static const char ALPH[] = "-05AZ_az";

static void add(kvs_buf *b, const void *p, size_t n)
{
    if (kvs_buf_append(b, p, n) != 0) abort();
}

static void adds(kvs_buf *b, const char *s)
{
    add(b, s, strlen(s));
}

static void addf(kvs_buf *b, const char *fmt, unsigned long v)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, fmt, v);
    adds(b, tmp);
}

/* --- a listing and its sink ------------------------------------------------- */

static void s_begin(void *ud, int status)
{
    kvs_listing_reply_begin(ud, status);
}

static void s_header(void *ud, const char *n, size_t nl, const char *v, size_t vl)
{
    kvs_listing_reply_header(ud, n, nl, v, vl);
}

static int s_body(void *ud, const char *d, size_t n)
{
    return kvs_listing_reply_body(ud, d, n);
}

static const kvs_http_sink SINK = { s_begin, s_header, s_body };

typedef struct conf {
    kvs_listing_config cfg;
    char start[8];
    int  gzip;
} conf;

/* --- the request -------------------------------------------------------------- */

static void check_request(const kvs_buf *req, const kvs_http_target *t, const char *url, int gzip)
{
    const char *path = strstr(url, "://"), *end, *p;
    size_t n = req->len, i, auths = 0;
    CHECK(t->tls == 0 && t->port == 1 && t->host_len == 9 && memcmp(t->host, "127.0.0.1", 9) == 0,
          "target %.*s:%u tls %d", (int)t->host_len, t->host, t->port, t->tls);
    path = strchr(path + 3, '/');
    CHECK(n > 4 && memcmp(req->data, "GET ", 4) == 0, "no GET: %.40s", req->data);
    end = strstr(req->data, " HTTP/1.1\r\n");
    CHECK(end && (size_t)(end - req->data - 4) == strlen(path)
          && memcmp(req->data + 4, path, strlen(path)) == 0, "request line: %.200s", req->data);
    CHECK(n >= 4 && memcmp(req->data + n - 4, "\r\n\r\n", 4) == 0 && strstr(req->data, "\r\n\r\n")
          == req->data + n - 4, "not one header block: %s", req->data);
    for (i = 0; i < n; i++) {
        char c = req->data[i];
        if (c == '\r') CHECK(i + 1 < n && req->data[i + 1] == '\n', "a bare CR");
        if (c == '\n') CHECK(i > 0 && req->data[i - 1] == '\r', "a bare LF");
    }
    CHECK(strstr(req->data, "\r\nHost: 127.0.0.1:1\r\n"), "Host: %s", req->data);
    CHECK(strstr(req->data, "\r\nAccept: application/json\r\n"), "Accept");
    CHECK(!gzip == !strstr(req->data, "\r\nAccept-Encoding: gzip\r\n"), "Accept-Encoding");
    for (p = req->data; (p = strstr(p, SECRET)); p++) auths++;
    CHECK(auths == 1 && strstr(req->data, "\r\nAuthorization: Bearer " SECRET_TEXT "\r\n"),
          "the token %zu times, or not in Authorization", auths);
}

/* --- replies -------------------------------------------------------------------- */

static void gen_key(fz *in, const kvs_buf *cursor, kvs_buf *k)
{
    size_t i, n = fz_u8(in) % 4;
    k->len = 0;
    add(k, "", 0);
    if (fz_u8(in) & 1) add(k, cursor->data ? cursor->data : "", cursor->len);
    for (i = 0; i < n; i++) add(k, &ALPH[fz_u8(in) % (sizeof ALPH - 1)], 1);
}

static int key_order(const void *a, const void *b)
{
    const kvs_buf *x = a, *y = b;
    return kvs_key_cmp(x->data, x->len, y->data, y->len);
}

/* A page of up to 9 keys (sorted mostly), isTruncated and a next cursor from choices. */
static void gen_page(fz *in, const kvs_buf *cursor, kvs_buf *body)
{
    kvs_buf keys[9];
    uint8_t shape = fz_u8(in);
    size_t n = fz_u8(in) % 10, i;
    memset(keys, 0, sizeof keys);
    for (i = 0; i < n; i++) gen_key(in, cursor, &keys[i]);
    if (!(shape & 1)) qsort(keys, n, sizeof keys[0], key_order);
    adds(body, "{\"data\":{\"items\":[");
    for (i = 0; i < n; i++) {
        adds(body, i ? ",{\"key\":\"" : "{\"key\":\"");
        add(body, keys[i].data, keys[i].len);
        adds(body, "\",\"size\":3}");
    }
    adds(body, "],\"count\":1,\"limit\":1000,\"isTruncated\":");
    adds(body, shape & 2 ? "true" : "false");
    if ((shape & 12) == 4 && n) {
        adds(body, ",\"nextExclusiveStartKey\":\"");
        add(body, keys[n - 1].data, keys[n - 1].len);
        adds(body, "\"");
    } else if ((shape & 12) == 8) {
        adds(body, ",\"nextExclusiveStartKey\":null");
    }
    adds(body, "}}");
    for (i = 0; i < 9; i++) kvs_buf_free(&keys[i]);
}

static void gzip_into(kvs_buf *out, const kvs_buf *in)
{
    z_stream zs;
    unsigned char buf[4096];
    int rc;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    zs.next_in = (unsigned char *)in->data;
    zs.avail_in = (uInt)in->len;
    do {
        zs.next_out = buf;
        zs.avail_out = sizeof buf;
        rc = deflate(&zs, Z_FINISH);
        add(out, buf, sizeof buf - zs.avail_out);
    } while (rc == Z_OK);
    if (rc != Z_STREAM_END) abort();
    deflateEnd(&zs);
}

static const int STATUSES[] = { 200, 200, 200, 200, 404, 429, 500, 503, 401, 301, 204, 999 };

/* A whole reply as a server sends it, from choices. */
static void gen_reply(fz *in, const kvs_buf *cursor, kvs_buf *out)
{
    kvs_buf body = { 0 }, plain = { 0 };
    uint8_t kind = fz_u8(in), frame = fz_u8(in), extra = fz_u8(in);
    int status = STATUSES[fz_u8(in) % 12];
    size_t i;
    out->len = 0;
    add(out, "", 0);
    add(&plain, "", 0);
    if (kind % 8 == 0) {
        size_t n;
        const uint8_t *p = fz_bytes(in, fz_u8(in), &n);
        add(&plain, p, n);
    } else if (status != 200 && kind % 8 < 4) {
        adds(&plain, "{\"error\":{\"type\":\"some-error\",\"message\":\"The token " SECRET_TEXT
                     " is wrong\"}}");
    } else {
        gen_page(in, cursor, &plain);
    }
    if (kind & 8) gzip_into(&body, &plain);
    else add(&body, plain.data, plain.len);
    if (extra & 1) adds(out, "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n");
    addf(out, "HTTP/1.%lu ", (unsigned long)!(extra >> 7));   /* mostly 1.1 */
    addf(out, "%03lu Reason\r\nContent-Type: application/json\r\n", (unsigned long)status);
    if (kind & 8) adds(out, "Content-Encoding: gzip\r\n");
    if (kind & 16) addf(out, "Retry-After: %lu\r\n", (unsigned long)(fz_u8(in) % 4));
    if (kind & 32) adds(out, "X-RateLimit-Limit: 60\r\nX-Empty:\r\nX-Spaces:   a  b   \r\n");
    if (kind & 64) {                          /* header bytes of the input */
        size_t n;
        const uint8_t *p = fz_bytes(in, fz_u8(in) % 24, &n);
        adds(out, "X-Odd: ");
        add(out, p, n);
        adds(out, "\r\n");
    }
    switch (frame % 5) {
    case 0: case 1:                           /* Content-Length */
        addf(out, "Content-Length: %lu\r\n\r\n", (unsigned long)body.len);
        add(out, body.data, body.len);
        break;
    case 2: {                                 /* chunked, chunk sizes from the input */
        size_t at = 0;
        adds(out, "Transfer-Encoding: chunked\r\n\r\n");
        while (at < body.len) {
            size_t n = 1 + fz_u8(in) % 64;
            if (n > body.len - at) n = body.len - at;
            addf(out, fz_u8(in) & 1 ? "%lx;ext=1\r\n" : "%lX\r\n", (unsigned long)n);
            add(out, body.data + at, n);
            adds(out, "\r\n");
            at += n;
        }
        adds(out, frame & 8 ? "0\r\nX-Trailer: t\r\n\r\n" : "0\r\n\r\n");
        break;
    }
    case 3:                                   /* until the connection closes */
        adds(out, "Connection: close\r\n\r\n");
        add(out, body.data, body.len);
        break;
    default: {                                /* a wrong Content-Length */
        size_t n = body.len + (size_t)(fz_u8(in) % 7) - 3;
        addf(out, "Content-Length: %lu\r\n\r\n", (unsigned long)(n > body.len + 3 ? 0 : n));
        add(out, body.data, body.len);
    }
    }
    if (extra & 2) adds(out, "HTTP/1.1 200 OK\r\n");   /* bytes after the reply */
    for (i = 0; (extra & 4) && i < 3; i++) adds(out, "\r\n");
    kvs_buf_free(&body);
    kvs_buf_free(&plain);
}

/* --- one reply, read under one way of cutting it ----------------------------------- */

typedef struct outcome {
    int       end;              /* KVS_HTTP_*; MORE: no end (the driver's timeout) */
    char      why[128];
    int       reusable;
    kvs_step  step;
    double    wait;
    kvs_error err;
    kvs_page  page;
} outcome;

/* The replies read so far: their bytes, and whether the connection closed after each. */
typedef struct history {
    kvs_buf raw[MAX_REPLIES];
    int     eof[MAX_REPLIES];
    size_t  n;
} history;

/* Feeds raw cut at cuts[] (ascending offsets; none: whole), an empty feed before each
 * piece; then the close of the connection when `eof`. */
static int read_reply(kvs_http_reader *r, const kvs_buf *raw, const size_t *cuts, size_t ncuts,
                      int eof)
{
    size_t at = 0, i;
    int st = KVS_HTTP_MORE;
    for (i = 0; i <= ncuts && st == KVS_HTTP_MORE; i++) {
        size_t to = i < ncuts ? cuts[i] : raw->len;
        if (to < at) to = at;
        st = kvs_http_reader_feed(r, NULL, 0);           /* an empty read changes nothing */
        if (st == KVS_HTTP_MORE) st = kvs_http_reader_feed(r, raw->data + at, to - at);
        at = to;
    }
    if (st == KVS_HTTP_MORE && eof) st = kvs_http_reader_eof(r);
    return st;
}

/* Ends the exchange as a driver does: a whole reply, a broken one, or none in time. */
static void end_exchange(kvs_listing *l, kvs_http_reader *r, int st, outcome *o)
{
    o->end = st;
    o->reusable = st == KVS_HTTP_DONE && kvs_http_reader_reusable(r);
    snprintf(o->why, sizeof o->why, "%s", kvs_http_reader_message(r));
    o->wait = 0;
    o->step = kvs_listing_reply_end(l, st == KVS_HTTP_DONE ? KVS_FAULT_NONE : st == KVS_HTTP_MORE
                                    ? KVS_FAULT_TIMEOUT : KVS_FAULT_NETWORK,
                                    st == KVS_HTTP_BROKEN ? o->why : NULL, 100.0, &o->wait);
    memset(&o->err, 0, sizeof o->err);
    if (kvs_listing_error(l)) o->err = *kvs_listing_error(l);
    if (o->step == KVS_STEP_PAGE) kvs_listing_take_page(l, &o->page);
    else kvs_page_reset(&o->page);
}

/* A fresh listing that reads the history's replies whole, then `raw` cut at cuts[]; its
 * requests' bytes checked on the way.  Returns the listing, *o the last exchange. */
static kvs_listing *replay(const conf *c, const history *h, const kvs_buf *raw,
                           const size_t *cuts, size_t ncuts, int eof, outcome *o)
{
    kvs_listing *l = kvs_listing_new(&c->cfg);
    kvs_http_reader *r = kvs_http_reader_new(&SINK);
    kvs_http_fields f = { "apify.kvs-fuzz", SECRET, c->gzip };
    kvs_http_target t;
    kvs_buf bytes = { 0 };
    size_t i;
    if (!l || !r) abort();
    kvs_listing_decode_gzip(l, 1);
    for (i = 0; i <= h->n; i++) {
        kvs_request req;
        int last = i == h->n;
        CHECK(kvs_listing_next_request(l, &req), "the replay lost its request %zu", i);
        CHECK(kvs_http_request(&bytes, &t, req.url, req.url_len, &f) == NULL,
              "a listing URL refused: %s", req.url);
        check_request(&bytes, &t, req.url, c->gzip);
        kvs_http_reader_begin(r, l);
        end_exchange(l, r, read_reply(r, last ? raw : &h->raw[i], last ? cuts : NULL,
                                      last ? ncuts : 0, last ? eof : h->eof[i]), o);
    }
    kvs_buf_free(&bytes);
    kvs_http_reader_free(r);
    return l;
}

static void same_outcome(const outcome *a, const outcome *b, const char *how)
{
    size_t i;
    CHECK(a->end == b->end && strcmp(a->why, b->why) == 0, "%s: ended %d (%s), whole %d (%s)",
          how, b->end, b->why, a->end, a->why);
    CHECK(a->step == b->step && a->wait == b->wait, "%s: step %d wait %g, whole %d wait %g", how,
          (int)b->step, b->wait, (int)a->step, a->wait);
    CHECK(strcmp(a->err.type, b->err.type) == 0 && strcmp(a->err.message, b->err.message) == 0
          && a->err.status == b->err.status, "%s: error %s: %s, whole %s: %s", how, b->err.type,
          b->err.message, a->err.type, a->err.message);
    CHECK(a->page.count == b->page.count, "%s: %zu keys, whole %zu", how, b->page.count,
          a->page.count);
    for (i = 0; i < a->page.count; i++)
        CHECK(kvs_key_cmp(a->page.bytes.data + a->page.items[i].key_off, a->page.items[i].key_len,
                          b->page.bytes.data + b->page.items[i].key_off,
                          b->page.items[i].key_len) == 0, "%s: key %zu differs", how, i);
}

/* The same reply cut elsewhere must give the same outcome. */
static void check_cut(const conf *c, const history *h, const kvs_buf *raw, const size_t *cuts,
                      size_t ncuts, int eof, const outcome *whole, outcome *other, const char *how)
{
    kvs_listing_free(replay(c, h, raw, cuts, ncuts, eof, other));
    same_outcome(whole, other, how);
}

/* The keys of a page against the listing so far: R1, the start key, the limit. */
static void check_keys(const conf *c, const kvs_page *p, kvs_buf *last, int *has_last,
                       long long *handed)
{
    size_t k;
    for (k = 0; k < p->count; k++) {
        const char *key = p->bytes.data + p->items[k].key_off;
        size_t klen = p->items[k].key_len;
        if (*has_last)
            CHECK(kvs_key_cmp(last->data, last->len, key, klen) < 0, "a key not after the last");
        if (c->cfg.start_key)
            CHECK(kvs_key_cmp(c->start, 1, key, klen) < 0, "a key at or before the start key");
        last->len = 0;
        add(last, key, klen);
        *has_last = 1;
    }
    *handed += (long long)p->count;
    CHECK(c->cfg.limit < 0 || *handed <= c->cfg.limit, "%lld keys, limit %lld", *handed,
          c->cfg.limit);
}

/* --- the driver ---------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in = { data, size };
    conf c;
    history h;
    kvs_buf cursor = { 0 }, last = { 0 };
    outcome whole, other;
    long long handed = 0;
    int nreplies, has_last = 0;
    size_t i;

    memset(&c, 0, sizeof c);
    memset(&h, 0, sizeof h);
    memset(&whole, 0, sizeof whole);
    memset(&other, 0, sizeof other);
    kvs_page_init(&whole.page);
    kvs_page_init(&other.page);
    c.cfg.base_url = "http://127.0.0.1:1/";
    c.cfg.store_id = "s1";
    c.cfg.page_size = 1 + fz_u8(&in) % 9;
    c.cfg.limit = fz_u8(&in) % 4 ? -1 : 1 + fz_u8(&in) % 20;
    c.cfg.max_retries = fz_u8(&in) % 4;
    c.cfg.max_delay = 10;
    c.cfg.seed = 7;
    c.cfg.secret = SECRET;
    c.cfg.secret_len = SECRET_LEN;
    if (fz_u8(&in) & 1) {
        c.start[0] = ALPH[fz_u8(&in) % (sizeof ALPH - 1)];
        c.cfg.start_key = c.start;
        c.cfg.start_key_len = 1;
        add(&cursor, c.start, 1);
    }
    c.gzip = fz_u8(&in) & 1;
    nreplies = 1 + fz_u8(&in) % MAX_REPLIES;

    for (i = 0; i < (size_t)nreplies && in.n; i++) {
        kvs_buf *raw = &h.raw[i];
        size_t cuts[MAX_CUTS], ncuts, k;
        int eof = fz_u8(&in) & 1, done;
        kvs_listing *l;

        if (fz_u8(&in) % 4 == 0) {                 /* raw bytes as they are */
            size_t n;
            const uint8_t *p = fz_bytes(&in, fz_u16(&in) % 2048, &n);
            add(raw, "", 0);
            add(raw, p, n);
        } else {
            gen_reply(&in, &cursor, raw);
        }
        l = replay(&c, &h, raw, NULL, 0, eof, &whole);
        if (getenv("KVS_FUZZ_VERBOSE")) {
            for (k = 0; k < raw->len; k++) {
                unsigned char ch = (unsigned char)raw->data[k];
                fprintf(stderr, ch >= 32 && ch < 127 && ch != '\\' ? "%c" : "\\x%02x", ch);
            }
            fprintf(stderr, "\n(eof %d)\n", eof);
        }

        /* cut where the input says, and byte by byte */
        ncuts = 1 + fz_u8(&in) % MAX_CUTS;
        for (k = 0; k < ncuts; k++) cuts[k] = fz_u16(&in) % (raw->len + 1);
        for (k = 1; k < ncuts; k++) {             /* ascending */
            size_t j = k, v = cuts[k];
            while (j > 0 && cuts[j - 1] > v) { cuts[j] = cuts[j - 1]; j--; }
            cuts[j] = v;
        }
        check_cut(&c, &h, raw, cuts, ncuts, eof, &whole, &other, "cut");
        if (raw->len <= 4096) {
            size_t *every = malloc((raw->len + 1) * sizeof *every);
            if (!every) abort();
            for (k = 0; k < raw->len; k++) every[k] = k;
            check_cut(&c, &h, raw, every, raw->len, eof, &whole, &other, "byte by byte");
            free(every);
        }
        CHECK(!whole.reusable || whole.end == KVS_HTTP_DONE, "reusable without an end");
        if (getenv("KVS_FUZZ_VERBOSE"))
            fprintf(stderr, "#%zu %zu bytes: end %d%s%s reusable %d, step %d (%zu keys%s%s)\n", i,
                    raw->len, whole.end, *whole.why ? ": " : "", whole.why, whole.reusable,
                    (int)whole.step, whole.page.count, *whole.err.type ? ", " : "", whole.err.type);

        /* the listing's contract over all replies so far */
        if (whole.step == KVS_STEP_FAILED) {
            check_no_secret("error type", whole.err.type, SECRET, SECRET_LEN);
            check_no_secret("error message", whole.err.message, SECRET, SECRET_LEN);
        }
        if (whole.step == KVS_STEP_PAGE) {
            check_keys(&c, &whole.page, &last, &has_last, &handed);
            if (whole.page.is_truncated == 1 && kvs_listing_finished(l) && !kvs_listing_failed(l))
                CHECK(c.cfg.limit >= 0 && handed == c.cfg.limit, "ended after a truncated page");
            if (whole.page.has_next) {
                cursor.len = 0;
                add(&cursor, whole.page.next.data, whole.page.next.len);
            }
        }
        done = kvs_listing_finished(l);
        kvs_listing_free(l);
        h.eof[i] = eof;
        h.n = i + 1;
        if (done) break;
    }

    for (i = 0; i < MAX_REPLIES; i++) kvs_buf_free(&h.raw[i]);
    kvs_buf_free(&cursor);
    kvs_buf_free(&last);
    kvs_page_free(&whole.page);
    kvs_page_free(&other.page);
    return 0;
}
