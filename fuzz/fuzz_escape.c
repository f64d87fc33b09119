/*
 * fuzz_escape — request building (core_request.c and the listing's URL):
 * kvs_url_escape appends what percent-decodes back to its input, made only
 * of RFC 3986 unreserved bytes and %XX, keeping what the buffer held;
 * kvs_store_id_problem refuses exactly the empty id, "." and ".." and ids
 * with a NUL byte; and a listing's first request URL carries the store id,
 * prefix, collection, signature and start key the input gave, each
 * decoding back to itself, with no '/' or other reserved byte unescaped.
 *
 * The input: a byte saying which parts to set, then NUL-separated strings
 * (the text to escape first, which may hold NULs: it runs to the end).
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
    /* parts for the listing: NUL-separated strings out of the same bytes */
    char *copy = malloc(n + 1), *part[5] = { 0 };
    size_t at = 0;

    if (!copy) abort();
    memcpy(copy, rest, n);
    copy[n] = '\0';

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
    for (i = 0; i < 5; i++) {
        if (at > n) break;
        part[i] = copy + at;
        at += strlen(copy + at) + 1;
    }
    if (part[0] && *part[0] && !kvs_store_id_problem(part[0], strlen(part[0]))) {
        kvs_listing_config cfg;
        kvs_listing *l;
        kvs_request req;
        size_t vl;
        const char *v, *seg_end;
        static const char *const names[4] = { "prefix", "collection", "signature", "exclusiveStartKey" };
        const char *vals[4];
        memset(&cfg, 0, sizeof cfg);
        cfg.base_url = (which & 4) ? "https://api.apify.com/" : "http://h:8/base";
        cfg.store_id = part[0];
        cfg.prefix = vals[0] = (which & 8) ? part[1] : NULL;
        cfg.collection = vals[1] = (which & 16) ? part[2] : NULL;
        cfg.signature = vals[2] = (which & 32) ? part[3] : NULL;
        vals[3] = (which & 64) ? part[4] : NULL;
        cfg.start_key = vals[3];
        cfg.start_key_len = vals[3] ? strlen(vals[3]) : 0;
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
            check_escaped(v, (size_t)(seg_end - v), part[0], strlen(part[0]), "store id");
            CHECK(strchr(seg_end + 6, '/') == NULL && strchr(seg_end + 6, '?') == NULL
                  && strchr(seg_end + 6, '#') == NULL, "a reserved byte in the query: %s", req.url);
        }
        for (i = 0; i < 4; i++) {
            v = param(req.url, names[i], &vl);
            CHECK((v != NULL) == (vals[i] != NULL), "%s %s", names[i], v ? "sent, not set" : "set, not sent");
            if (v) check_escaped(v, vl, vals[i], strlen(vals[i]), names[i]);
        }
        kvs_listing_free(l);
    }
    kvs_buf_free(&b);
    free(copy);
    return 0;
}
