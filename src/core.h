/*
 * core.h — the sans-I/O core of apify.kvs.
 *
 * Everything that decides *what* to send and *what a reply means* lives behind
 * this header, with no transport inside: paging state and cursor checks
 * (core_listing.c), URL and query building (core_request.c), streaming decoding
 * of reply bodies with yajl (core_reply.c), gzip bodies (core_inflate.c), keeping the token out of server
 * text (core_redact.c), the retry policy (core_listing.c) and where to split
 * a listing into key ranges fetched side by side (core_keyspace.c), and the
 * planning of such a parallel listing: its ranges, pace and hand-out order
 * (core_parallel.c).  A driver (blocking libcurl, libcurl multi, an OpenResty
 * cosocket, a game loop's poll) only moves bytes:
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

/* A growable byte buffer.  `data` is kept NUL-terminated when non-NULL. */
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
/* Feeds a body chunk.  0: go on; -1: the rest of the body cannot change the
 * verdict (the driver may stop reading).  The verdict does not depend on how
 * the body was cut into chunks. */
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
    KVS_INFLATE_DONE = 1,       /* the gzip member ended */
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
/* Inflates `n` bytes, handing the decoded bytes to sink (nonzero: stop).  KVS_INFLATE_*;
 * once not KVS_INFLATE_MORE, later calls return the same and do nothing. */
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
    const char *prefix, *collection, *signature;    /* NULL: not sent */
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
int  kvs_listing_failed(const kvs_listing *l);
/* 1: the driver hands over bodies as they came, and a gzip one (Content-Encoding: gzip) is
 * inflated here (core_inflate.c); 0, the default: the transport decodes bodies (libcurl). */
void kvs_listing_decode_gzip(kvs_listing *l, int on);

/* --- key space arithmetic (core_keyspace.c) ------------------------------------
 *
 * Where to split a listing into key ranges.  A key reads as a mixed-radix
 * number in [0, 1), one digit per byte: 0 for "the key ended here", 1..n for
 * the characters of the allowed key alphabet ! ' ( ) - . 0-9 A-Z _ a-z that
 * the position may hold, in byte order.  Which ones it may hold is learnt
 * from the keys seen, by class (punctuation, digits, A-F, G-Z, _, a-f, g-z): where
 * only digits were seen, a position counts in base 11, so zero-padded
 * numbers read as evenly spread numbers; a position nothing was seen at yet
 * takes the whole alphabet.  Bytes outside a position's characters take the
 * rank of the nearest one below.  Within one model the reading keeps byte
 * order (a <= b gives num(a) <= num(b), strictly where both bytes count) when,
 * at the first position where a and b differ, a has ended or both bytes are
 * characters that position may hold: so for any two keys of the alphabet the
 * model has learnt.  Elsewhere (a byte outside the alphabet, or of a class the
 * position has not learnt: "9z" and "A" where only digits were seen) two
 * bytes may share a digit and later digits may reverse the order, as
 * fuzz/fuzz_keyspace.c shows.  So the span between two keys estimates how
 * many keys lie between them, and only guides splitting: a splitter checks
 * each boundary against the real keys with kvs_key_cmp, and numbers read
 * under different models must not be mixed.
 */

#define KVS_KS_DIGITS  272     /* digits kept: keys are at most 256 bytes on the API */
#define KVS_KS_KEY_MAX 256     /* longest boundary key made */

typedef struct kvs_ks_model {
    unsigned char cls[KVS_KS_DIGITS];   /* classes seen per position; 0: none yet */
} kvs_ks_model;

typedef struct kvs_ks_num {
    unsigned char d[KVS_KS_DIGITS];     /* most significant first */
} kvs_ks_num;

/* Byte order, as the API sorts keys: < 0, 0, > 0. */
int  kvs_key_cmp(const char *a, size_t na, const char *b, size_t nb);
/* Adds what `key` shows about each position; 1 when the model changed. */
int  kvs_ks_learn(kvs_ks_model *m, const char *key, size_t len);
void kvs_ks_from_key(const kvs_ks_model *m, kvs_ks_num *n, const char *key, size_t len);
/* The top of the keys starting with `prefix` (prefix + "zzz…"); len 0: of all keys. */
void kvs_ks_top(const kvs_ks_model *m, kvs_ks_num *n, const char *prefix, size_t len);
int  kvs_ks_cmp(const kvs_ks_num *a, const kvs_ks_num *b);
/* b - a as a fraction of the key space, 0 when b <= a.  A long double: keys
 * with a long common prefix lie very close together. */
long double kvs_ks_span(const kvs_ks_model *m, const kvs_ks_num *a, const kvs_ks_num *b);
/* out = a + span, saturating at the top of the key space. */
void kvs_ks_advance(const kvs_ks_model *m, kvs_ks_num *out, const kvs_ks_num *a,
                    long double span);
/* Writes a key of the alphabet at or just above n into out (room for
 * KVS_KS_KEY_MAX bytes) and returns its length.  With `from`, the key keeps
 * only a few digits past the first one where n differs from `from`: a round
 * boundary, about as near to n. */
size_t kvs_ks_key(const kvs_ks_model *m, const kvs_ks_num *n, const kvs_ks_num *from, char *out);

/* How densely keys lie somewhere: `n` keys in (lo, hi], from a page. */
typedef struct kvs_ks_sample {
    kvs_buf lo, hi;
    long    n;              /* 0: nothing known */
} kvs_ks_sample;

/* Learns the page's keys into the model (a run of positions that vary on
 * the page may hold every class any of them shows) and samples the page's
 * upper 3/4; a page of fewer than 2 keys keeps the old sample.  0 ok, -1 out
 * of memory. */
int  kvs_ks_sample_page(kvs_ks_sample *s, kvs_ks_model *m, const kvs_page *p);
int  kvs_ks_sample_copy(kvs_ks_sample *dst, const kvs_ks_sample *src);
void kvs_ks_sample_free(kvs_ks_sample *s);
/* Keys per unit of key space; 0 when unknown. */
long double kvs_ks_density(const kvs_ks_model *m, const kvs_ks_sample *s);

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
#define KVS_PLAN_PAGES 3     /* decoded pages one range holds, the one being received
                                included; a full range sends nothing */
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

/* `cfg` is copied (its upper_key and single_page are ignored); `parallel` is
 * clamped to 1..KVS_PLAN_MAX.  rate > 0: at most that many requests a second,
 * whatever the API says; else KVS_PLAN_RATE, then each reply's
 * X-RateLimit-Limit.  After a 429 the plan sends slower for a while, whatever
 * the rate.  `ordered`: pages come out in key order; else as they arrive. */
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
    double rate;            /* the pace right now, requests per second */
} kvs_plan_stats;
void      kvs_plan_stats_get(const kvs_plan *p, kvs_plan_stats *st);

/* Planner internals, shared by core_parallel.c (lifecycle, pace, requests,
 * hand-out) and core_split.c (where ranges are cut, what a page gives). */
#define KVS_PLAN_OK_RING 128   /* times of the latest accepted replies, for the 429 back-off */
#define KVS_PLAN_POOL    16    /* the latest pages' samples, pooled into densities */

typedef struct kvs_shard {
    kvs_listing  *l;            /* made at the first request, remade when hi moves */
    kvs_buf       cursor, hi;   /* the range (cursor, hi]; cursor: the next exclusiveStartKey */
    int           has_cursor, has_hi;
    kvs_ks_sample dens;         /* its latest page's, or its parent's */
    kvs_ks_model  model;        /* how its keys read as numbers: learnt from that page */
    int           fed;          /* keys came from the range (or its parent's, handed over) */
    int           probe;        /* opened past the group of keys its parent showed: not cut
                                   before a page of its own */
    int           skip;         /* could not be cut this round */
    int           rebuild;      /* hi moved since l was made */
    int           inflight, retrying, done, status;
    unsigned      id;           /* of the request in flight */
    unsigned      serial;
    double        retry_at;     /* 0: none */
    kvs_page      pages[KVS_PLAN_PAGES];   /* a ring of decoded pages waiting to be handed out */
    int           first, npages;
    long          got;          /* keys it listed */
    long          got_at_cut;   /* ... when its bound was last set, to hold `planned` more */
    double        planned;      /* 0: not estimated */
} kvs_shard;

struct kvs_plan {
    kvs_listing_config cfg;            /* its strings are the copies in strs */
    char              *strs[6];
    kvs_shard         *s[2 * KVS_PLAN_MAX]; /* in key order */
    int                n, parallel, ordered, turn;
    int                max_shards;     /* ranges at once, finished ones holding pages included */
    int                held;           /* pages held and requests in flight */
    kvs_ks_model       model;          /* learnt from every page (see local_model) */
    int                started;        /* the first page is in: splitting may begin */
    int                inflight, finished, failed;
    long long          remaining;      /* keys still to hand out; -1: all */
    double             rate, ceiling, tokens, refilled;
    double             cut_at, climbed_at; /* the latest cut of the rate after a 429, climb */
    double             first_ok;       /* when the first accepted reply came; < 0: none yet */
    int                rate_fixed, clock_set;
    int                decode_gzip;    /* kvs_plan_decode_gzip */
    double             ok_t[KVS_PLAN_OK_RING];  /* when accepted replies came */
    int                ok_n;
    unsigned           next_id, next_serial;
    unsigned          *cancels;
    size_t             ncancels, cancels_cap;
    kvs_buf            first;          /* the first key listed */
    kvs_buf            proof;          /* the greatest key a page showed keys after */
    kvs_ks_sample      pool[KVS_PLAN_POOL];    /* a ring of the latest pages' samples */
    int                pool_n;         /* samples ever put in it */
    double             err_n, err_sum, err_sq;  /* keys a range held / keys planned - 1,
                                                   decaying sums */
    size_t             prefix_len;
    uint64_t           seed;
    kvs_plan_stats     st;
    kvs_error          err;
};

kvs_shard *kvs_shard_new(kvs_plan *p, const kvs_buf *lo, const kvs_buf *hi,
                         const kvs_ks_sample *dens);
void kvs_shard_stop(kvs_plan *p, kvs_shard *s);      /* aborts its request, keeps its pages */
void kvs_shard_free(kvs_plan *p, kvs_shard *s);
void kvs_plan_insert_after(kvs_plan *p, int i, kvs_shard *t);
int  kvs_plan_oom(kvs_plan *p);                      /* fails the plan; -1 */
int  kvs_plan_pages_held(const kvs_plan *p);
void kvs_plan_schedule(kvs_plan *p);                 /* cuts ranges while there is room */
void kvs_plan_accept_page(kvs_plan *p, kvs_shard *s);   /* s's listing has a page */

#pragma GCC visibility pop

#endif
