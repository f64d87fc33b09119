/*
 * fuzz_escape — request building (core_request.c and the listing's URL):
 * kvs_url_escape appends what percent-decodes back to its input, made only
 * of RFC 3986 unreserved bytes and %XX, keeping what the buffer held;
 * kvs_store_id_problem refuses exactly the empty id, "." and ".." and ids
 * with a NUL byte; and a listing's first request URL carries the store id,
 * prefix, collection, signature and start key the input gave, each whole
 * (NUL bytes too) and decoding back to itself, with no '/' or other reserved
 * byte unescaped.
 *
 * The input: a byte saying which parts to set, then the text to escape (which
 * may hold NULs: it runs to the end), read again as strings separated by NUL
 * bytes or, with the byte's top bit, by 0xFF bytes (so the values may hold NULs).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "fuzz_util.h"

static int unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || c == '-' || c == '.' || c == '_' || c == '~';
}

static void check_escaped(const char *e, size_t n, const char *want, size_t wn, const char *what)
{
    char *dec = malloc(n + 1);
    long dn;
    size_t i;
    if (!dec) abort();
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)e[i];
        if (c == '%') {
            CHECK(i + 2 < n && strchr("0123456789ABCDEF", e[i + 1]) && e[i + 1]
                  && strchr("0123456789ABCDEF", e[i + 2]) && e[i + 2],
                  "%s: a bad escape at %zu in \"%.*s\"", what, i, (int)n, e);
            CHECK(!unreserved((unsigned char)(hexval(e[i + 1]) * 16 + hexval(e[i + 2]))),
                  "%s: an unreserved byte escaped", what);
            i += 2;
        } else {
            CHECK(unreserved(c), "%s: byte 0x%02x left as it is", what, c);
        }
    }
    dn = pct_decode(e, n, dec);
    CHECK(dn >= 0 && (size_t)dn == wn && memcmp(dec, want, wn) == 0,
          "%s: \"%.*s\" does not decode back", what, (int)n, e);
    free(dec);
}

/* The value of query parameter `name` in url; NULL when absent. */
static const char *param(const char *url, const char *name, size_t *len)
{
    const char *q = strchr(url, '?'), *p;
    size_t n = strlen(name);
    for (p = q; p && *p; p = strchr(p + 1, '&')) {
        if (strncmp(p + 1, name, n) == 0 && p[1 + n] == '=') {
            const char *v = p + 2 + n, *end = strchr(v, '&');
            *len = end ? (size_t)(end - v) : strlen(v);
            return v;
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in = { data, size };
    uint8_t which = fz_u8(&in);
    size_t n, i, pre;
    const uint8_t *rest = fz_bytes(&in, in.n, &n);
    kvs_buf b = { 0 };
    const char *why;
    /* parts for the listing: separated strings out of the same bytes, each a
     * NUL-terminated copy (its length in plen: it may hold NULs) */
    char *part[5] = { 0 };
    size_t plen[5] = { 0 }, at = 0;
    const int sep = (which & 128) ? 0xFF : 0;

    /* 1. escaping, appended after what the buffer held */
    pre = which % 4;
    if (kvs_buf_set(&b, "pre:", pre) != 0) abort();
    if (kvs_url_escape(&b, (const char *)rest, n) != 0) abort();
    CHECK(b.data[b.len] == '\0' && memcmp(b.data, "pre:", pre) == 0, "the buffer's start or end changed");
    CHECK(strlen(b.data) == b.len, "a NUL inside an escaped string");
    check_escaped(b.data + pre, b.len - pre, (const char *)rest, n, "kvs_url_escape");

    /* 2. store id checks */
    why = kvs_store_id_problem((const char *)rest, n);
    {
        int bad = n == 0 || (n == 1 && rest[0] == '.') || (n == 2 && rest[0] == '.' && rest[1] == '.')
               || memchr(rest, 0, n) != NULL;
        CHECK((why != NULL) == bad, "store id \"%.*s\": %s", (int)n, (const char *)rest, why ? why : "fine");
        CHECK(!why || strlen(why) > 0, "an empty reason");
    }

    /* 3. a listing's URL */
    for (i = 0; i < 5 && at <= n; i++) {
        const uint8_t *end = memchr(rest + at, sep, n - at);
        plen[i] = end ? (size_t)(end - (rest + at)) : n - at;
        if (!(part[i] = malloc(plen[i] + 1))) abort();
        memcpy(part[i], rest + at, plen[i]);
        part[i][plen[i]] = '\0';
        at += plen[i] + 1;
    }
    if (part[0] && plen[0] && !kvs_store_id_problem(part[0], plen[0])) {
        kvs_listing_config cfg;
        kvs_listing *l;
        kvs_request req;
        size_t vl;
        const char *v, *seg_end;
        static const char *const names[4] = { "prefix", "collection", "signature", "exclusiveStartKey" };
        const char *vals[4];
        size_t lens[4];
        memset(&cfg, 0, sizeof cfg);
        cfg.base_url = (which & 4) ? "https://api.apify.com/" : "http://h:8/base";
        cfg.store_id = part[0];
        for (i = 0; i < 4; i++) {
            vals[i] = (which & (8 << i)) ? part[i + 1] : NULL;
            lens[i] = vals[i] ? plen[i + 1] : 0;
        }
        cfg.prefix = vals[0], cfg.prefix_len = lens[0];
        cfg.collection = vals[1], cfg.collection_len = lens[1];
        cfg.signature = vals[2], cfg.signature_len = lens[2];
        cfg.start_key = vals[3], cfg.start_key_len = lens[3];
        cfg.page_size = 1 + which % 1000;
        cfg.limit = -1;
        l = kvs_listing_new(&cfg);
        if (!l) abort();
        CHECK(kvs_listing_next_request(l, &req) == 1, "no first request");
        {
            const char *base = (which & 4) ? "https://api.apify.com/v2/key-value-stores/"
                                           : "http://h:8/base/v2/key-value-stores/";
            CHECK(strncmp(req.url, base, strlen(base)) == 0, "URL %s", req.url);
            v = req.url + strlen(base);
            seg_end = strstr(v, "/keys?");
            CHECK(seg_end && memchr(v, '/', (size_t)(seg_end - v)) == NULL, "the store id leaves its path "
                  "segment: %s", req.url);
            check_escaped(v, (size_t)(seg_end - v), part[0], plen[0], "store id");
            CHECK(strchr(seg_end + 6, '/') == NULL && strchr(seg_end + 6, '?') == NULL
                  && strchr(seg_end + 6, '#') == NULL, "a reserved byte in the query: %s", req.url);
        }
        for (i = 0; i < 4; i++) {
            v = param(req.url, names[i], &vl);
            CHECK((v != NULL) == (vals[i] != NULL), "%s %s", names[i], v ? "sent, not set" : "set, not sent");
            if (v) check_escaped(v, vl, vals[i], lens[i], names[i]);
        }
        kvs_listing_free(l);
    }
    kvs_buf_free(&b);
    for (i = 0; i < 5; i++) free(part[i]);
    return 0;
}
