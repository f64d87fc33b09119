/*
 * floor.c — the lower bounds of listing every key over HTTP.  Built twice:
 *
 *   cc -O2 -o floor-fetch floor.c -lcurl                 (fetch only)
 *   cc -O2 -DPARSE -o floor-parse floor.c -lcurl -lyajl  (fetch + yajl)
 *
 *     floor-fetch BASE_URL      floor-parse BASE_URL
 *
 * One libcurl easy handle, reused, so one keep-alive connection.  Asks for
 * gzip only when FLOOR_GZIP=1 is set.  Prints "count sum".
 *
 * floor-fetch discards the body but its last 2 KiB, where it finds the page's
 * "count" and "nextExclusiveStartKey"; it never sees the sizes, so it prints
 * "count -".
 *
 * floor-parse feeds every chunk to yajl_parse as it arrives and, in the
 * callbacks, counts each item's "key", adds each "size" and keeps
 * "nextExclusiveStartKey" and "isTruncated" — no other values are made.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#ifdef PARSE
#include <yajl/yajl_parse.h>
#endif

static char cursor[1024];
static int  has_cursor;

#ifdef PARSE
/* --- streaming parse --------------------------------------------------- */
enum { K_OTHER, K_KEY, K_SIZE, K_NEXT, K_TRUNC, K_COUNT };

static struct {
    int       depth;          /* maps/arrays open */
    int       field;          /* what the last map key named */
    long long count, sum;     /* whole listing, never reset */
    int       truncated;
} st;

static int on_map_key(void *ctx, const unsigned char *s, size_t n)
{
    (void)ctx;
    st.field = K_OTHER;
    if (st.depth == 4) {                  /* root{ data{ items[ {item} */
        if (n == 3 && memcmp(s, "key", 3) == 0)
            st.field = K_KEY;
        else if (n == 4 && memcmp(s, "size", 4) == 0)
            st.field = K_SIZE;
    } else if (st.depth == 2) {           /* root{ data{ */
        if (n == 21 && memcmp(s, "nextExclusiveStartKey", 21) == 0)
            st.field = K_NEXT;
        else if (n == 11 && memcmp(s, "isTruncated", 11) == 0)
            st.field = K_TRUNC;
    }
    return 1;
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    (void)ctx;
    if (st.field == K_KEY) {
        st.count++;
    } else if (st.field == K_NEXT) {
        if (n >= sizeof cursor)
            return 0;
        memcpy(cursor, s, n);
        cursor[n] = '\0';
        has_cursor = 1;
    }
    st.field = K_OTHER;
    return 1;
}

static int on_integer(void *ctx, long long v)
{
    (void)ctx;
    if (st.field == K_SIZE)
        st.sum += v;
    st.field = K_OTHER;
    return 1;
}

static int on_boolean(void *ctx, int v)
{
    (void)ctx;
    if (st.field == K_TRUNC)
        st.truncated = v;
    st.field = K_OTHER;
    return 1;
}

static int on_null(void *ctx)      { (void)ctx; st.field = K_OTHER; return 1; }
static int on_double(void *ctx, double d) { (void)ctx; (void)d; st.field = K_OTHER; return 1; }
static int on_open(void *ctx)      { (void)ctx; st.depth++; st.field = K_OTHER; return 1; }
static int on_close(void *ctx)     { (void)ctx; st.depth--; st.field = K_OTHER; return 1; }

static const yajl_callbacks callbacks = {
    on_null, on_boolean, on_integer, on_double, NULL, on_string,
    on_open, on_map_key, on_close, on_open, on_close
};

static yajl_handle parser;

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    size_t n = size * nmemb;
    (void)ud;
    if (yajl_parse(parser, (const unsigned char *)p, n) != yajl_status_ok)
        return 0;
    return n;
}
#else
/* --- fetch only: keep the body's tail for the cursor ------------------- */
static char   tail[2048];
static size_t tail_len;
static long long total;

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    size_t n = size * nmemb;
    (void)ud;
    if (n >= sizeof tail) {
        memcpy(tail, p + n - sizeof tail, sizeof tail);
        tail_len = sizeof tail;
    } else {
        if (tail_len + n > sizeof tail) {
            size_t drop = tail_len + n - sizeof tail;
            memmove(tail, tail + drop, tail_len - drop);
            tail_len -= drop;
        }
        memcpy(tail + tail_len, p, n);
        tail_len += n;
    }
    return n;
}

static char *find_last(const char *tag)
{
    size_t i, n = strlen(tag);
    char *at = NULL;
    for (i = 0; i + n <= tail_len; i++)
        if (memcmp(tail + i, tag, n) == 0)
            at = tail + i + n;
    return at;
}

/* 1: next cursor found, 0: last page, -1: cannot tell */
static int cursor_from_tail(void)
{
    char *q = find_last("],\"count\":"), *end;
    if (!q)
        return -1;
    total += strtoll(q, NULL, 10);
    q = find_last("\"nextExclusiveStartKey\":");
    if (!q)
        return -1;
    if (q < tail + tail_len && *q == 'n')
        return 0;
    if (q >= tail + tail_len || *q != '"')
        return -1;
    q++;
    end = memchr(q, '"', (size_t)(tail + tail_len - q));
    if (!end || (size_t)(end - q) >= sizeof cursor)
        return -1;
    memcpy(cursor, q, (size_t)(end - q));
    cursor[end - q] = '\0';
    return 1;
}
#endif

int main(int argc, char **argv)
{
    CURL *h;
    CURLcode rc;
    struct curl_slist *hdrs = NULL;
    char url[4096], err[CURL_ERROR_SIZE] = "";
    long status = 0;
    const char *gz = getenv("FLOOR_GZIP");

    if (argc != 2) {
        fprintf(stderr, "usage: %s BASE_URL\n", argv[0]);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h = curl_easy_init();
    hdrs = curl_slist_append(hdrs, "Authorization: Bearer bench");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (gz && strcmp(gz, "1") == 0)
        curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "gzip");

    for (;;) {
        char *esc = NULL;
        if (has_cursor) {
            esc = curl_easy_escape(h, cursor, 0);
            snprintf(url, sizeof url,
                     "%s/v2/key-value-stores/bench/keys?exclusiveStartKey=%s&limit=1000",
                     argv[1], esc);
            curl_free(esc);
        } else {
            snprintf(url, sizeof url, "%s/v2/key-value-stores/bench/keys?limit=1000", argv[1]);
        }
        curl_easy_setopt(h, CURLOPT_URL, url);
#ifdef PARSE
        st.depth = 0;
        st.field = K_OTHER;
        st.truncated = 0;
        has_cursor = 0;
        parser = yajl_alloc(&callbacks, NULL, NULL);
        rc = curl_easy_perform(h);
        if (rc == CURLE_OK && yajl_complete_parse(parser) != yajl_status_ok)
            rc = CURLE_WRITE_ERROR;
        yajl_free(parser);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK || status != 200) {
            fprintf(stderr, "floor-parse: %s: %s (HTTP %ld)\n", url,
                    err[0] ? err : curl_easy_strerror(rc), status);
            return 1;
        }
        if (!st.truncated || !has_cursor) {
            printf("%lld %lld\n", st.count, st.sum);
            break;
        }
#else
        tail_len = 0;
        rc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK || status != 200) {
            fprintf(stderr, "floor-fetch: %s: %s (HTTP %ld)\n", url,
                    err[0] ? err : curl_easy_strerror(rc), status);
            return 1;
        }
        {
            int c = cursor_from_tail();
            if (c < 0) {
                fprintf(stderr, "floor-fetch: no nextExclusiveStartKey at the end of %s\n", url);
                return 1;
            }
            has_cursor = c;
            if (!c) {
                printf("%lld -\n", total);
                break;
            }
        }
#endif
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    return 0;
}
