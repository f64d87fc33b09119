/*
 * core.h — the sans-I/O core of apify.kvs.
 *
 * Everything that decides *what* to send and *what a reply means* lives behind
 * this header, with no transport inside: paging state and cursor checks
 * (core_listing.c), byte buffers (core_buf.c), URL and query building
 * (core_request.c), streaming decoding of reply bodies with yajl
 * (core_reply.c), gzip bodies (core_inflate.c), keeping the token out of
 * server text (core_redact.c), raw HTTP/1.1 requests and replies for drivers
 * that move bytes themselves (core_http.c), the retry policy (core_listing.c), and the
 * planner of a listing fetched as key ranges side by side (core_parallel.c;
 * its internals are core_plan_internal.h's, for core files only).  A driver
 * (blocking libcurl, libcurl multi, an OpenResty cosocket, a game loop's
 * poll) only moves bytes:
 *
 *     while (kvs_listing_next_request(l, &req)) {       // URL of the next page
 *         send GET req.url; then for the reply:
 *         kvs_listing_reply_begin(l, status);
 *         kvs_listing_reply_header(l, name, nlen, value, vlen);   // each header
 *         kvs_listing_reply_body(l, chunk, len);                  // each chunk
 *         switch (kvs_listing_reply_end(l, fault, msg, &wait)) {
 *         case KVS_STEP_PAGE:   kvs_listing_take_page(l, &page); hand it out;
 *         case KVS_STEP_RETRY:  wait `wait` seconds, then loop; break;
 *         case KVS_STEP_FAILED: report kvs_listing_error(l); stop;
 *         }
 *     }
 *
 * No function here blocks, sleeps, reads a clock or touches Lua.
 */
#ifndef APIFY_KVS_CORE_H
#define APIFY_KVS_CORE_H

#include <stddef.h>
#include <stdint.h>

/* Internal: hidden from the shared object's symbol table even without
 * -fvisibility=hidden (LuaRocks builds). */
#pragma GCC visibility push(hidden)

#define KVS_MAX_PAGE_SIZE 1000
#define KVS_2POW53 9007199254740992.0   /* 2^53: doubles hold every integer up to it */

/* A growable byte buffer (core_buf.c).  `data` is kept NUL-terminated when non-NULL. */
typedef struct kvs_buf {
    char  *data;
    size_t len, cap;
} kvs_buf;

int  kvs_buf_reserve(kvs_buf *b, size_t extra);       /* 0 ok, -1 out of memory */
int  kvs_buf_append(kvs_buf *b, const void *p, size_t n);
int  kvs_buf_set(kvs_buf *b, const void *p, size_t n);
void kvs_buf_free(kvs_buf *b);

/* One key of a page; strings are (offset, length) into the page's byte
 * buffer, back to back and not NUL-terminated, so a page is two allocations
 * however many keys it holds. */
typedef struct kvs_item {
    size_t    key_off, key_len;
    size_t    url_off, url_len;   /* url_off == (size_t)-1: no recordPublicUrl */
    long long size;
} kvs_item;

#define KVS_NO_URL ((size_t)-1)

/* A decoded page: the reply's "data" object. */
typedef struct kvs_page {
    kvs_item *items;
    size_t    count, cap;
    kvs_buf   bytes;              /* key and url bytes of all items */
    long long count_field, limit_field;   /* -1 when absent */
    int       is_truncated;       /* -1 absent, 0 false, 1 true */
    int       has_next;           /* nextExclusiveStartKey is a string */
    kvs_buf   next;
    int       has_start;          /* exclusiveStartKey echoed as a string */
    kvs_buf   start;
} kvs_page;

/* What went wrong, ready to show a user.  Never holds the token. */
typedef struct kvs_error {
    char type[64];        /* API error type, or one of the client's own below */
    char message[512];
    int  status;          /* HTTP status, 0 when no reply was had */
    int  retries;         /* retries made before giving up */
} kvs_error;

/* (core_redact.c) Every occurrence of `secret` in s (NUL-terminated, room for cap bytes) becomes
 * "[redacted]", and so does a tail of s that is the start of `secret` (a cut-off
 * copy).  A secret of fewer than 4 bytes is left alone: it would eat words. */
void kvs_redact(char *s, size_t cap, const char *secret, size_t n);
#define KVS_REDACTED "[redacted]"

/* The client's own error types (the API's pass through unchanged). */
#define KVS_ERR_NETWORK   "network-error"       /* connect/reset/DNS/partial body */
#define KVS_ERR_TIMEOUT   "timeout"             /* one attempt ran past `timeout` */
#define KVS_ERR_RESPONSE  "invalid-response"    /* 200 body not a valid page */
#define KVS_ERR_CURSOR    "cursor-not-advancing"
#define KVS_ERR_HTTP      "http-error"          /* non-2xx without an API error body */
#define KVS_ERR_MEMORY    "out-of-memory"
#define KVS_ERR_TLS       "tls-error"           /* certificate or TLS setup: not retried */
#define KVS_ERR_REQUEST   "request-error"       /* a request that cannot be sent: not retried */
#define KVS_ERR_CALLBACK  "callback-error"      /* the on_retry hook failed */

/* What one page may hold, whatever a server sends: the items asked for, and
 * this many decoded body bytes (64 KiB + 4 KiB an item: 4.06 MiB a full page). */
#define KVS_BODY_MAX(items) (65536u + 4096u * (size_t)(items))
/* Longest request URL made; a longer cursor fails as KVS_ERR_REQUEST. */
#define KVS_URL_MAX 65536

/* --- reply decoding (core_reply.c) ------------------------------------- */

typedef struct kvs_reply kvs_reply;   /* opaque: yajl handle and parse state */

kvs_reply *kvs_reply_new(void);
void       kvs_reply_free(kvs_reply *r);
/* Server text that must never reach an error (the token); not copied, so it
 * must outlive the reply. */
void       kvs_reply_secret(kvs_reply *r, const char *secret, size_t n);
/* Starts decoding a reply with HTTP status `status` into `page` (reset first);
 * a page of more than `max_items` items, or a body of more than
 * KVS_BODY_MAX(max_items) bytes, is not a page. */
int        kvs_reply_begin(kvs_reply *r, int status, kvs_page *page, size_t max_items);
/* Feeds a body chunk; an empty one may be given as (NULL, 0).  0: go on; -1: the
 * rest of the body cannot change the verdict (the driver may stop reading).  The
 * verdict does not depend on how the body was cut into chunks. */
int        kvs_reply_body(kvs_reply *r, const char *data, size_t len);

typedef enum kvs_verdict {
    KVS_REPLY_PAGE = 0,     /* 2xx and `page` holds a complete page */
    KVS_REPLY_ERROR = -1,   /* `err` says what; worth another try if the status is */
    KVS_REPLY_FINAL = -2,   /* a 2xx body that no retry can mend (too big, a lone
                               surrogate): `err` says what */
    KVS_REPLY_NOMEM = -3    /* out of memory while decoding */
} kvs_verdict;
/* Ends the body.  For 2xx: a page, or why the body is none (KVS_ERR_RESPONSE).
 * For other statuses: the API's error type and message (or KVS_ERR_HTTP). */
kvs_verdict kvs_reply_end(kvs_reply *r, kvs_error *err);

void kvs_page_init(kvs_page *p);
void kvs_page_reset(kvs_page *p);
void kvs_page_free(kvs_page *p);
void kvs_page_swap(kvs_page *a, kvs_page *b);   /* contents and buffers trade places */

/* Bytes of memory held (buffers as allocated; yajl's and zlib's state as an
 * estimate), for a binding to tell its garbage collector what an object costs. */
size_t kvs_page_memory(const kvs_page *p);
size_t kvs_reply_memory(const kvs_reply *r);

/* --- gzip bodies (core_inflate.c) --------------------------------------- */

typedef struct kvs_inflate kvs_inflate;

enum {
    KVS_INFLATE_MORE = 0,       /* fed; the stream goes on */
    KVS_INFLATE_DONE = 1,       /* the gzip member ended (a byte more would be junk) */
    KVS_INFLATE_STOPPED = 2,    /* the sink said stop (its verdict is made) */
    KVS_INFLATE_CORRUPT = -1,   /* not gzip, corrupt, cut short, or junk after it */
    KVS_INFLATE_TOO_BIG = -2,   /* more than max_out decoded bytes */
    KVS_INFLATE_NOMEM = -3
};

kvs_inflate *kvs_inflate_new(void);
void         kvs_inflate_free(kvs_inflate *z);
size_t       kvs_inflate_memory(const kvs_inflate *z);   /* as kvs_page_memory */
/* Starts a body; at most about max_out decoded bytes are ever made.  0, or -1 (no memory). */
int          kvs_inflate_begin(kvs_inflate *z, size_t max_out);
/* Inflates `n` bytes, handing the decoded bytes to sink (nonzero: stop).  KVS_INFLATE_*.
 * After KVS_INFLATE_DONE, bytes in a later call make it KVS_INFLATE_CORRUPT, as they
 * would in the same call: the verdict does not depend on the chunks.  Otherwise, once
 * not KVS_INFLATE_MORE, later calls return the same and do nothing. */
int          kvs_inflate_feed(kvs_inflate *z, const char *in, size_t n,
                              int (*sink)(void *ud, const char *data, size_t len), void *ud);
/* The body ended: KVS_INFLATE_CORRUPT if the gzip stream did not. */
int          kvs_inflate_end(kvs_inflate *z);
/* Why the stream failed ("" if it did not). */
const char  *kvs_inflate_message(const kvs_inflate *z);

/* --- request building (core_request.c) ---------------------------------- */

/* Appends s percent-encoded (everything but RFC 3986 unreserved bytes). */
int kvs_url_escape(kvs_buf *out, const char *s, size_t n);
/* Checks a store id: NULL when fine, else why not. */
const char *kvs_store_id_problem(const char *id, size_t n);

/* --- listing: paging + retries (core_listing.c) ------------------------- */

typedef struct kvs_listing_config {
    const char *base_url;       /* "http(s)://host[:port][/path]", no trailing '/' needed */
    const char *store_id;
    /* Query values, sent whole (percent-encoded, a NUL byte too); NULL: not sent */
    const char *prefix;     size_t prefix_len;
    const char *collection; size_t collection_len;
    const char *signature;  size_t signature_len;
    const char *start_key;  size_t start_key_len;   /* NULL: from the first key */
    const char *upper_key;  size_t upper_key_len;   /* NULL: to the end; else the
                                                       last key wanted is <= it */
    int         page_size;      /* 1..1000 */
    long long   limit;          /* keys in total; -1: all */
    int         single_page;    /* 1: exactly one page (list_keys) */
    int         max_retries;
    double      min_delay;      /* seconds */
    double      max_delay;      /* longest wait between two tries; <= 0: 60 s.  A
                                   Retry-After asking for more fails the listing */
    double      max_elapsed;    /* seconds one page may spend retrying; <= 0: no cap */
    uint64_t    seed;           /* jitter randomness; any value */
    const char *secret;  size_t secret_len;   /* redacted from every error (the token) */
    /* Optional: seconds from now until an HTTP-date, or < 0 if not a date. */
    double    (*http_date_delay)(const char *value);
    /* Optional: asked before each retry (`attempt` counts from 1).  1: retry;
     * 0: give up with `err`; -1: fail as KVS_ERR_CALLBACK with `why` filled. */
    int       (*on_retry)(void *ud, const kvs_error *err, int attempt, double delay,
                          char *why, size_t why_cap);
    void       *on_retry_ud;
} kvs_listing_config;

#define KVS_DEFAULT_MAX_DELAY 60.0

typedef enum kvs_fault {
    KVS_FAULT_NONE = 0,     /* the whole reply arrived */
    KVS_FAULT_TIMEOUT,      /* the attempt timed out (decoding included) */
    KVS_FAULT_NETWORK,      /* anything else that cut the exchange short */
    KVS_FAULT_TLS,          /* certificate or TLS setup: retrying cannot mend it */
    KVS_FAULT_REQUEST       /* the request cannot be sent as it is (protocol, URL) */
} kvs_fault;

typedef enum kvs_step {
    KVS_STEP_PAGE,          /* kvs_listing_page() holds a new page */
    KVS_STEP_RETRY,         /* wait the given seconds, then request again */
    KVS_STEP_FAILED         /* kvs_listing_error() says why; nothing more to do */
} kvs_step;

typedef struct kvs_request {
    const char *url;        /* NUL-terminated, owned by the listing */
    size_t      url_len;
    int         attempt;    /* 0 for the first try of this page */
} kvs_request;

typedef struct kvs_listing kvs_listing;

kvs_listing *kvs_listing_new(const kvs_listing_config *cfg);
void         kvs_listing_free(kvs_listing *l);
size_t       kvs_listing_memory(const kvs_listing *l);   /* as kvs_page_memory */

/* Fills `req` with the next request to send; 0 when there is none (done or failed). */
int  kvs_listing_next_request(kvs_listing *l, kvs_request *req);
void kvs_listing_reply_begin(kvs_listing *l, int status);
void kvs_listing_reply_header(kvs_listing *l, const char *name, size_t nlen,
                              const char *value, size_t vlen);
int  kvs_listing_reply_body(kvs_listing *l, const char *data, size_t len);
/* `fault` says whether the exchange completed; `fault_msg` (may be NULL) is the
 * transport's words for it; `now` is the driver's monotonic clock in seconds
 * (for max_elapsed).  On KVS_STEP_RETRY, *wait is the delay in seconds. */
kvs_step kvs_listing_reply_end(kvs_listing *l, kvs_fault fault,
                               const char *fault_msg, double now, double *wait);

/* After KVS_STEP_PAGE: swaps the new page into *mine and takes *mine's old
 * buffers for reuse, so a driver may hold pages while later ones arrive.
 * The page holds only keys that sort after every key handed out before, in
 * increasing byte order; while the listing goes on, its `next` is the cursor
 * the listing continues from (whatever the server sent there). */
void kvs_listing_take_page(kvs_listing *l, kvs_page *mine);
const kvs_error *kvs_listing_error(const kvs_listing *l);
int  kvs_listing_finished(const kvs_listing *l);   /* no request left to make */
/* The X-RateLimit-Limit of the latest reply (requests per second), 0 if none. */
int  kvs_listing_rate_limit(const kvs_listing *l);
/* The seconds the latest reply's Retry-After asked for, < 0 if none. */
double kvs_listing_retry_after(const kvs_listing *l);
int  kvs_listing_failed(const kvs_listing *l);
/* 1: the driver hands over bodies as they came, and a gzip one (Content-Encoding: gzip) is
 * inflated here (core_inflate.c); 0, the default: the transport decodes bodies (libcurl). */
void kvs_listing_decode_gzip(kvs_listing *l, int on);

/* --- raw HTTP/1.1 (core_http.c) ---------------------------------------------------
 *
 * For drivers that move bytes themselves: the request of a URL the listing
 * (or the plan) made, as bytes, and its reply read as it arrives, cut
 * anywhere, into a sink (kvs_listing_reply_* or kvs_plan_reply_* of the
 * request):
 *
 *     kvs_http_request(&bytes, &target, req.url, req.url_len, &fields);
 *     connect to target (TLS when target.tls), send bytes;
 *     kvs_http_reader_begin(r, the listing);
 *     while ((st = kvs_http_reader_feed(r, chunk, n)) == KVS_HTTP_MORE) read more;
 *         (the connection closed: st = kvs_http_reader_eof(r))
 *     KVS_HTTP_DONE: kvs_listing_reply_end(l, KVS_FAULT_NONE, ...); keep the
 *                    connection alive when kvs_http_reader_reusable(r), else close it;
 *     KVS_HTTP_BROKEN: kvs_listing_reply_end(l, KVS_FAULT_NETWORK,
 *                      kvs_http_reader_message(r), ...); close it.
 *
 * Bodies reach the sink as they came (chunked ones decoded): let the listing
 * inflate gzip ones (kvs_listing_decode_gzip).
 */

/* Where a request goes. */
typedef struct kvs_http_target {
    const char *host;  size_t host_len;   /* points into the URL; an IPv6 address without [] */
    unsigned    port;                     /* the URL's, else 80 or 443 */
    int         tls;                      /* https */
} kvs_http_target;

/* The request's header values (NUL-terminated; NULL: not sent). */
typedef struct kvs_http_fields {
    const char *user_agent;
    const char *token;          /* sent as Authorization: Bearer <token> */
    int         gzip;           /* Accept-Encoding: gzip */
} kvs_http_fields;

/* Writes the GET request of `url` into `out` (its old contents replaced) and
 * where it goes into *t.  NULL when done; else why it cannot be sent (a
 * KVS_FAULT_REQUEST), words that never hold the token. */
const char *kvs_http_request(kvs_buf *out, kvs_http_target *t, const char *url, size_t url_len,
                             const kvs_http_fields *f);

/* Where the reply's parts go. */
typedef struct kvs_http_sink {
    void (*begin)(void *ud, int status);
    void (*header)(void *ud, const char *name, size_t nlen, const char *value, size_t vlen);
    int  (*body)(void *ud, const char *data, size_t len);   /* nonzero: the rest cannot matter */
} kvs_http_sink;

enum {
    KVS_HTTP_MORE = 0,      /* the reply goes on: feed what comes next */
    KVS_HTTP_DONE = 1,      /* the reply ended, or the sink needs no more of it */
    KVS_HTTP_BROKEN = -1    /* not an HTTP/1.x reply, or cut short: a network fault */
};

typedef struct kvs_http_reader kvs_http_reader;

kvs_http_reader *kvs_http_reader_new(const kvs_http_sink *sink);   /* NULL: out of memory */
void kvs_http_reader_free(kvs_http_reader *r);
/* Starts reading a reply for `ud`, the sink's first argument. */
void kvs_http_reader_begin(kvs_http_reader *r, void *ud);
/* Feeds the next bytes of the connection: KVS_HTTP_*.  Once not KVS_HTTP_MORE,
 * later calls return the same and do nothing.  How the bytes are cut into
 * calls does not change what the sink gets, nor the end. */
int  kvs_http_reader_feed(kvs_http_reader *r, const char *data, size_t len);
/* The connection closed: the end of a body read to the close (KVS_HTTP_DONE),
 * or a reply cut short (KVS_HTTP_BROKEN). */
int  kvs_http_reader_eof(kvs_http_reader *r);
/* After KVS_HTTP_DONE: 1 when the connection may carry the next request. */
int  kvs_http_reader_reusable(const kvs_http_reader *r);
/* After KVS_HTTP_BROKEN: what was wrong (the parser's words, never the server's). */
const char *kvs_http_reader_message(const kvs_http_reader *r);

/* --- byte order (core_keyspace.c) --------------------------------------------- */

/* Byte order, as the API sorts keys: < 0, 0, > 0. */
int  kvs_key_cmp(const char *a, size_t na, const char *b, size_t nb);

/* --- parallel planning (core_parallel.c) -----------------------------------------
 *
 * One listing split into key ranges (shards) fetched side by side: where to
 * split, what to send when (a token bucket at the API's rate), which request
 * to abort when a range is cut or stopped, and which page to hand out next.
 * Each shard is a kvs_listing of its range.  A driver, with its own clock:
 *
 *     for (;;) {
 *         while (kvs_plan_next_cancel(p, &id))  abort transfer id (no reply for it);
 *         while (kvs_plan_take_page(p, &page))  hand the page out;
 *         if (kvs_plan_finished(p) || kvs_plan_error(p)) break;
 *         while (kvs_plan_next_request(p, now, &req))  send GET req.url as transfer req.id;
 *         wait for a transfer to move, at most kvs_plan_timeout(p, now) seconds (< 0: no limit);
 *         for each reply: kvs_plan_reply_begin/header/body(p, id, ...),
 *                         kvs_plan_reply_end(p, id, fault, msg, now);
 *     }
 *
 * Replies of a request the plan no longer waits for (cancelled, or an id it
 * never gave) are ignored.  Strings a request points to stay valid until the
 * next call into the plan.
 */

#define KVS_PLAN_MAX   64    /* most ranges fetched side by side */
#define KVS_PLAN_AUTO  KVS_PLAN_MAX   /* parallel = "auto": as many as the rate asks for */
#define KVS_PLAN_PAGES 12    /* most decoded pages one range holds, the one being
                                received included; a full range sends nothing */
#define KVS_PLAN_MEMORY 64   /* decoded pages all ranges hold together, requests in flight
                                included: this many, or 3 a request in flight when more */
#define KVS_PLAN_RATE  60.0  /* requests per second until X-RateLimit-Limit says */
#define KVS_PLAN_BURST 3     /* requests that may go out at once at the API's limit */

typedef struct kvs_plan kvs_plan;

typedef struct kvs_plan_request {
    unsigned    id;         /* names the transfer in replies and cancels; never 0 */
    unsigned    shard;      /* which range it is for (a serial number) */
    const char *url;        /* NUL-terminated */
    size_t      url_len;
    int         attempt;    /* 0 for the first try of a page */
} kvs_plan_request;

/* `cfg` is copied (its upper_key and single_page are ignored).  `parallel`
 * caps the requests in flight (clamped to 1..KVS_PLAN_MAX; KVS_PLAN_AUTO:
 * "auto"): the first goes alone, then the plan keeps as many in flight as the
 * rate times the round trip it measures asks for, at most that.  rate > 0: at
 * most that many requests a second, whatever the API says; else
 * KVS_PLAN_RATE, then each reply's X-RateLimit-Limit.  After a 429 the plan
 * sends slower for a while, whatever the rate, and none before its
 * Retry-After has passed.  `ordered`: pages come out in key order; else as
 * they arrive. */
kvs_plan *kvs_plan_new(const kvs_listing_config *cfg, int parallel, double rate, int ordered);
void      kvs_plan_free(kvs_plan *p);
size_t    kvs_plan_memory(const kvs_plan *p);      /* as kvs_page_memory */
/* 1: send `req` now (the bucket's token is spent); 0: nothing may go now. */
int       kvs_plan_next_request(kvs_plan *p, double now, kvs_plan_request *req);
/* 1: abort transfer *id; 0: none to abort. */
int       kvs_plan_next_cancel(kvs_plan *p, unsigned *id);
void      kvs_plan_reply_begin(kvs_plan *p, unsigned id, int status);
void      kvs_plan_reply_header(kvs_plan *p, unsigned id, const char *name, size_t nlen,
                                const char *value, size_t vlen);
/* 0: go on; -1: the rest of the body cannot matter (stop reading it). */
int       kvs_plan_reply_body(kvs_plan *p, unsigned id, const char *data, size_t len);
void      kvs_plan_reply_end(kvs_plan *p, unsigned id, kvs_fault fault, const char *msg,
                             double now);
/* Seconds until kvs_plan_next_request may give a request: 0 now, < 0 not
 * before a reply arrives (or never: finished, failed). */
double    kvs_plan_timeout(kvs_plan *p, double now);
/* 1: a page swapped into *mine (as kvs_listing_take_page); 0: none ready. */
int       kvs_plan_take_page(kvs_plan *p, kvs_page *mine);
int       kvs_plan_finished(kvs_plan *p);          /* every page handed out */
const kvs_error *kvs_plan_error(const kvs_plan *p);   /* NULL unless failed */
int       kvs_plan_inflight(const kvs_plan *p);    /* requests awaiting a reply */
/* As kvs_listing_decode_gzip, for every range's listing: 1 when the driver hands over
 * bodies as they came (gzip ones are inflated here); 0, the default: the transport decodes. */
void      kvs_plan_decode_gzip(kvs_plan *p, int on);
/* Figures for tests and benches: requests made, 429s seen, ranges made. */
typedef struct kvs_plan_stats {
    long requests, throttled, shards;
    int  alive, held;       /* ranges now; pages held and requests in flight */
    int  parallel;          /* requests wanted in flight now (rate x round trip) */
    double rate;            /* the pace right now, requests per second */
    double rtt;             /* the round trip measured (smoothed), seconds; 0: none yet */
} kvs_plan_stats;
void      kvs_plan_stats_get(const kvs_plan *p, kvs_plan_stats *st);

#pragma GCC visibility pop

#endif
