/*
 * core_plan_internal.h — the planner's internals, for core files only (no
 * driver or binding includes it; `make check-layers` checks that): the key
 * space arithmetic that places range boundaries (core_keyspace.c), and the
 * state of a plan and its ranges as its parts share it:
 *
 *     core_parallel.c  the API: requests, replies by id, hand-out order
 *       core_accept.c  what a page arriving for a range gives (carried keys)
 *       core_split.c   where ranges are cut: decisions only, as kvs_cut
 *       core_shard.c   making, cutting, stopping and freeing ranges; failing
 *       core_pace.c    the token bucket, X-RateLimit-Limit and 429s
 *
 * A file calls only the ones listed under or after it, never back (no
 * circle: `make check-layers`).
 */
#ifndef APIFY_KVS_CORE_PLAN_INTERNAL_H
#define APIFY_KVS_CORE_PLAN_INTERNAL_H

#include "core.h"

#pragma GCC visibility push(hidden)

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
    double  disp;           /* how unevenly they lie: the variance of the keys in equal
                               slices of (lo, hi] over their mean (0 evenly, 1 at random,
                               more in clumps); < 0 unknown */
} kvs_ks_sample;

/* Learns the page's keys into the model (a run of positions that vary on
 * the page may hold every class any of them shows) and samples the page's
 * upper 3/4 (with `tail`, only the group of keys it ends in, when that is
 * shorter), how unevenly included; a page of fewer than 2 keys keeps the old
 * sample.  0 ok, -1 out of memory. */
int  kvs_ks_sample_page(kvs_ks_sample *s, kvs_ks_model *m, const kvs_page *p, int tail);
int  kvs_ks_sample_copy(kvs_ks_sample *dst, const kvs_ks_sample *src);
void kvs_ks_sample_free(kvs_ks_sample *s);
/* Keys per unit of key space; 0 when unknown. */
long double kvs_ks_density(const kvs_ks_model *m, const kvs_ks_sample *s);

/* --- the plan's state ------------------------------------------------------------ */

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
    double        sent_at;      /* when the request in flight went */
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
    int                n, ordered, turn;
    int                cap;            /* most requests in flight: `parallel` as asked */
    int                parallel;       /* requests in flight wanted now (core_pace.c) */
    int                len;            /* pages a range holds now, the one being received
                                          included: a share of the memory (core_pace.c) */
    int                memory;         /* pages all ranges hold, requests in flight included */
    int                max_shards;     /* ranges at once, finished ones holding pages included */
    kvs_ks_model       model;          /* learnt from every page (see local_model) */
    int                started;        /* the first page is in: splitting may begin */
    int                fed_ranges;     /* ranges that have shown keys of their own */
    long               pages_in;       /* pages that brought keys */
    int                inflight, finished, failed;
    long long          remaining;      /* keys still to hand out; -1: all */
    double             rate, ceiling, tokens, refilled;
    double             cut_at, climbed_at; /* the latest cut of the rate after a 429, climb */
    double             first_ok;       /* when the first accepted reply came; < 0: none yet */
    double             srtt, rttvar;   /* round trips: smoothed, and their mean deviation */
    double             hold_until;     /* a 429's Retry-After: nothing is sent before */
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
    double             err_chance;     /* ... and the variance chance alone gives it */
    double             disp;           /* the pages' kvs_ks_sample.disp, decaying; < 0 none */
    uint64_t           seed;
    kvs_plan_stats     st;
    kvs_error          err;
};

/* --- ranges and failure (core_shard.c) ------------------------------------------- */

/* (lo, hi], with a copy of `dens`; NULL when out of memory. */
kvs_shard *kvs_shard_new(kvs_plan *p, const kvs_buf *lo, const kvs_buf *hi,
                         const kvs_ks_sample *dens);
void kvs_shard_stop(kvs_plan *p, kvs_shard *s);      /* aborts its request, keeps its pages */
void kvs_plan_drop_all(kvs_plan *p);                 /* every range goes */
/* Finished and handed out (or empty) ranges go; with none left, so does the listing. */
void kvs_plan_tidy(kvs_plan *p);
void kvs_plan_fail(kvs_plan *p, const kvs_error *e); /* the whole listing fails with e */
void kvs_plan_fail_with(kvs_plan *p, const char *type, const char *message);
int  kvs_plan_oom(kvs_plan *p);                      /* fails the plan; -1 */
int  kvs_plan_pages_held(const kvs_plan *p);         /* pages held and requests in flight */

/* A decision of core_split.c: range `at` is cut (its bound becomes `key`, a new
 * range after it takes the rest), or hands all of its range over. */
typedef struct kvs_cut {
    int    at;              /* which range: p->s[at] */
    int    handoff;         /* 1: a new range takes (cursor, hi] and it stops; key unused */
    int    probe;           /* the new range opens past the group of keys it showed */
    double planned;         /* keys planned from its cursor to the new bound; 0: none */
    size_t len;
    char   key[KVS_KS_KEY_MAX];
} kvs_cut;

/* Makes the cut.  0, or -1 out of memory (the plan failed). */
int  kvs_plan_cut(kvs_plan *p, const kvs_cut *c);

/* --- pace (core_pace.c) ------------------------------------------------------------ */

void kvs_pace_refill(kvs_plan *p, double now);       /* the bucket's tokens up to now */
/* A reply came after `rtt` seconds (< 0: the transfer failed): its status, X-RateLimit-Limit
 * (0: none) and Retry-After (< 0: none) set the pace and the requests wanted in flight. */
void kvs_pace_reply(kvs_plan *p, int status, int limit, double retry_after, double rtt,
                    double now);
/* Seconds until a request may go (0: now). */
double kvs_pace_wait(const kvs_plan *p, double now);
/* The memory for the requests wanted in flight (p->parallel): KVS_PLAN_MEMORY pages, or 3 a
 * request when that is more, shared into ranges of p->len pages (3..KVS_PLAN_PAGES). */
void kvs_pace_share(kvs_plan *p);

/* --- where ranges are cut (core_split.c) ----------------------------------------- */

/* The next cut to make while a request slot is idle and the bucket has a token for
 * it; 0: none now; -1: out of memory. */
int  kvs_split_next(kvs_plan *p, kvs_cut *c);
/* Whether a slot is idle, a token or not (a cut may come when one is there). */
int  kvs_split_idle(const kvs_plan *p);
/* The boundaries past the first page of shard s (`got` keys), one cut at a time. */
typedef struct kvs_first_split {
    const kvs_shard *from;
    kvs_ks_num  cur, top;
    long double step, mult;     /* pages' worth of keys a page; the next boundary's */
    int         k;              /* boundaries made */
    long long   need;       /* keys still wanted past the page; -1: all */
    int         on;
} kvs_first_split;
void kvs_split_first(kvs_plan *p, const kvs_shard *s, size_t got, kvs_first_split *it);
int  kvs_split_first_next(kvs_plan *p, kvs_first_split *it, kvs_cut *c);
/* Page pg of range s: what it shows of how keys read and spread there.  0, -1 out of memory. */
int  kvs_split_learn(kvs_plan *p, kvs_shard *s, const kvs_page *pg);
/* Range s ran to its bound: how many keys it held against the estimate. */
void kvs_split_record(kvs_plan *p, kvs_shard *s);

/* --- pages arriving (core_accept.c) ------------------------------------------------ */

void kvs_plan_accept_page(kvs_plan *p, kvs_shard *s);   /* s's listing has a page */

#pragma GCC visibility pop

#endif
