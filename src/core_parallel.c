/*
 * core_parallel.c — the planner of a parallel listing: one listing as key
 * ranges (shards) fetched side by side.  It owns the shards, where to split
 * them, the pace (a token bucket), which requests to abort, and the order
 * pages are handed out in.  A shard is an ordinary kvs_listing of a range
 * (lo, hi] (start_key, upper_key; the last range has no hi); retries are its
 * own; one shard failing fails all.  No I/O, no clock: time comes as `now`.
 *
 * Where to split is learnt on the way (core_keyspace.c reads keys as
 * numbers).  The first page goes out alone; if the listing goes on, the key
 * space past it gets boundaries from that page's density: ordered, every
 * KVS_PLAN_PAGES pages' worth (what is in flight is what is handed out next);
 * unordered, at 1, 2, 4, ... pages' worth.  Then, whenever fewer than
 * `parallel` shards exist, the one with the most estimated work beyond what
 * it may fetch before it must wait is cut: ordered, after what fits in its
 * buffer (a full one waiting for its turn hands all of its range over);
 * unordered, in halves.  Ranges that showed no keys are not cut, and no range
 * opens more than a window (parallel x KVS_PLAN_PAGES pages' worth) past the
 * greatest key a page showed keys after: past a store's end, probing stops.
 *
 * Whatever the estimates say, every key is listed exactly once: a boundary
 * is a key strictly between the shard's cursor and its bound (compared
 * byte-wise), a page is trimmed to the range it was asked for, and a range
 * only ever shrinks from above.
 *
 * Memory: a shard holds at most KVS_PLAN_PAGES decoded pages, the one being
 * received included, and sends nothing while full; at most `parallel` shards
 * exist, finished ones still holding pages included.
 *
 * Pace: a bucket of one token refilled at `rate` per second, so requests go
 * out at least 1/rate apart.  The rate follows X-RateLimit-Limit (unless
 * fixed); a 429 empties the bucket and lowers the rate to a little under what
 * the server accepted in the second before it, from where it climbs back by
 * 2% of the limit a second.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define K     KVS_PLAN_PAGES
#define SLACK 0.95L   /* a range cut to hold n pages gets 95% of n pages' worth of
                         keys: it rarely needs one more, nearly empty request */
#define OK_RING 128   /* times of the latest accepted replies, for the 429 back-off */

typedef struct shard {
    kvs_listing  *l;            /* made at the first request, remade when hi moves */
    kvs_buf       cursor, hi;   /* the range (cursor, hi]; cursor: the next exclusiveStartKey */
    int           has_cursor, has_hi;
    kvs_ks_sample dens;         /* its latest page's, or its parent's */
    kvs_ks_model  model;        /* how its keys read as numbers: learnt from that page */
    int           fed;          /* keys came from the range (or its parent's, handed over) */
    int           skip;         /* could not be cut this round */
    int           rebuild;      /* hi moved since l was made */
    int           inflight, retrying, done, status;
    unsigned      id;           /* of the request in flight */
    unsigned      serial;
    double        retry_at;     /* 0: none */
    kvs_page      pages[K];     /* a ring of decoded pages waiting to be handed out */
    int           first, npages;
} shard;

struct kvs_plan {
    kvs_listing_config cfg;            /* its strings are the copies in strs */
    char              *strs[6];
    shard             *s[2 * KVS_PLAN_MAX]; /* in key order */
    int                n, parallel, ordered, turn;
    int                max_shards;     /* ranges at once, finished ones holding pages included */
    int                held;           /* pages held and requests in flight */
    int                started;        /* the first page is in: splitting may begin */
    int                inflight, finished, failed;
    long long          remaining;      /* keys still to hand out; -1: all */
    double             rate, ceiling, tokens, refilled, cut_at;
    int                rate_fixed, clock_set;
    double             ok_t[OK_RING];  /* when accepted replies came */
    int                ok_n;
    unsigned           next_id, next_serial;
    unsigned          *cancels;
    size_t             ncancels, cancels_cap;
    kvs_buf            first;          /* the first key listed */
    kvs_buf            proof;          /* the greatest key a page showed keys after */
    size_t             prefix_len;
    uint64_t           seed;
    kvs_plan_stats     st;
    kvs_error          err;
};

/* --- shards -------------------------------------------------------------------- */

static void shard_free(kvs_plan *p, shard *s);
static int oom(kvs_plan *p);

/* (lo, hi], a copy of `dens`; NULL when out of memory */
static shard *shard_new(kvs_plan *p, const kvs_buf *lo, const kvs_buf *hi,
                        const kvs_ks_sample *dens)
{
    shard *s = calloc(1, sizeof *s);
    int i;
    if (!s) return NULL;
    for (i = 0; i < K; i++) kvs_page_init(&s->pages[i]);
    s->has_cursor = lo != NULL;
    s->has_hi = hi != NULL;
    s->serial = ++p->next_serial;
    if ((lo && kvs_buf_set(&s->cursor, lo->data, lo->len) != 0)
        || (hi && kvs_buf_set(&s->hi, hi->data, hi->len) != 0)
        || (dens && kvs_ks_sample_copy(&s->dens, dens) != 0)) {
        shard_free(p, s);
        return NULL;
    }
    p->st.shards++;
    return s;
}

/* No more requests: the one in flight is to be aborted; the pages stay. */
static void shard_stop(kvs_plan *p, shard *s)
{
    if (s->inflight) {
        if (p->ncancels == p->cancels_cap) {
            size_t cap = p->cancels_cap ? 2 * p->cancels_cap : 16;
            unsigned *c = realloc(p->cancels, cap * sizeof *c);
            if (c) p->cancels = c, p->cancels_cap = cap;
        }
        if (p->ncancels < p->cancels_cap) p->cancels[p->ncancels++] = s->id;
        s->inflight = 0;
        p->inflight--;
    }
    kvs_listing_free(s->l);
    s->l = NULL;
    s->done = 1;
}

static void shard_free(kvs_plan *p, shard *s)
{
    int i;
    if (!s) return;
    shard_stop(p, s);
    kvs_buf_free(&s->cursor);
    kvs_buf_free(&s->hi);
    kvs_ks_sample_free(&s->dens);
    for (i = 0; i < K; i++) kvs_page_free(&s->pages[i]);
    free(s);
}

static void insert_after(kvs_plan *p, int i, shard *t)
{
    memmove(&p->s[i + 2], &p->s[i + 1], (size_t)(p->n - i - 1) * sizeof p->s[0]);
    p->s[i + 1] = t;
    p->n++;
}

static void remove_at(kvs_plan *p, int i)
{
    shard_free(p, p->s[i]);
    memmove(&p->s[i], &p->s[i + 1], (size_t)(p->n - i - 1) * sizeof p->s[0]);
    p->n--;
}

static void drop_all(kvs_plan *p)
{
    while (p->n > 0) remove_at(p, p->n - 1);
}

/* Finished and handed out (or empty) shards go; with none left, so does the listing. */
static void tidy(kvs_plan *p)
{
    int i;
    for (i = p->n - 1; i >= 0; i--)
        if (p->s[i]->done && p->s[i]->npages == 0) remove_at(p, i);
    if (p->n == 0 && !p->failed) p->finished = 1;
}

/* The whole listing fails with `e` (copied first: it may live in a shard). */
static void fail(kvs_plan *p, const kvs_error *e)
{
    if (p->failed) return;
    p->err = *e;
    p->failed = 1;
    drop_all(p);
}

static void fail_with(kvs_plan *p, const char *type, const char *message)
{
    kvs_error e;
    memset(&e, 0, sizeof e);
    strncpy(e.type, type, sizeof e.type - 1);
    strncpy(e.message, message, sizeof e.message - 1);
    fail(p, &e);
}

static int oom(kvs_plan *p)
{
    fail_with(p, KVS_ERR_MEMORY, "out of memory");
    return -1;
}

static int make_listing(kvs_plan *p, shard *s)
{
    kvs_listing_config cfg = p->cfg;
    cfg.start_key = s->has_cursor ? s->cursor.data : NULL;
    cfg.start_key_len = s->cursor.len;
    cfg.upper_key = s->has_hi ? s->hi.data : NULL;
    cfg.upper_key_len = s->hi.len;
    cfg.limit = p->remaining;          /* no shard needs more than that */
    p->seed = p->seed * 6364136223846793005ull + 1442695040888963407ull;
    cfg.seed = p->seed;
    kvs_listing_free(s->l);
    s->l = kvs_listing_new(&cfg);
    s->rebuild = 0;
    return s->l ? 0 : -1;
}

/* Pages held and requests in flight, all shards together. */
static int pages_held(const kvs_plan *p)
{
    int i, n = p->inflight;
    for (i = 0; i < p->n; i++) n += p->s[i]->npages;
    return n;
}

static shard *by_id(kvs_plan *p, unsigned id)
{
    int i;
    for (i = 0; i < p->n; i++)
        if (p->s[i]->inflight && p->s[i]->id == id) return p->s[i];
    return NULL;
}

/* --- splitting ----------------------------------------------------------------------- */

static void num_of(const shard *s, const kvs_buf *key, kvs_ks_num *n)
{
    kvs_ks_from_key(&s->model, n, key->data, key->len);
}

/* Shard i keeps (cursor, m]; a new shard after it gets (m, hi].  1 done, 0 no
 * key strictly between cursor and hi there, -1 failed. */
static int split_at(kvs_plan *p, int i, const kvs_ks_num *m)
{
    shard *s = p->s[i], *t;
    char key[KVS_KS_KEY_MAX];
    kvs_ks_num cur;
    kvs_buf kb;
    size_t len;
    if (p->n >= p->max_shards || !s->has_cursor) return 0;
    num_of(s, &s->cursor, &cur);
    len = kvs_ks_key(&s->model, m, &cur, key);
    if (kvs_key_cmp(s->cursor.data, s->cursor.len, key, len) >= 0
        || (s->has_hi && kvs_key_cmp(key, len, s->hi.data, s->hi.len) >= 0))
        return 0;
    kb.data = key, kb.len = len, kb.cap = 0;
    t = shard_new(p, &kb, s->has_hi ? &s->hi : NULL, &s->dens);
    if (!t || kvs_buf_set(&s->hi, key, len) != 0) {
        shard_free(p, t);
        return oom(p);
    }
    t->model = s->model;
    s->has_hi = 1;
    s->rebuild = 1;             /* a page in flight is trimmed to the new hi */
    insert_after(p, i, t);
    return 1;
}

/* Shard i (full, waiting for its turn) hands its remaining range to a new
 * shard that can start at once. */
static int handoff(kvs_plan *p, int i)
{
    shard *s = p->s[i], *t = shard_new(p, &s->cursor, s->has_hi ? &s->hi : NULL, &s->dens);
    if (!t) return oom(p);
    t->model = s->model;
    t->fed = 1;                 /* s's last page said there is more past the cursor */
    shard_stop(p, s);
    insert_after(p, i, t);
    return 1;
}

/* The first page said more: boundaries past its end (see the top). */
static void first_split(kvs_plan *p, shard *s, size_t got)
{
    long double step, mult = p->ordered ? K : 1, dens = kvs_ks_density(&s->model, &s->dens);
    long long need = p->remaining >= 0 ? p->remaining - (long long)got : -1;
    kvs_ks_num cur, top, b;
    if (!(dens > 0)) return;
    num_of(s, &s->cursor, &cur);
    kvs_ks_top(&s->model, &top, p->cfg.prefix, p->prefix_len);
    step = (long double)p->cfg.page_size * SLACK / dens;
    while (p->n < p->parallel && mult <= (long double)(p->parallel * K)) {
        kvs_ks_advance(&s->model, &b, &cur, step * mult);
        if (kvs_ks_cmp(&b, &top) >= 0 || split_at(p, p->n - 1, &b) <= 0) break;
        if (need >= 0 && mult * p->cfg.page_size >= (long double)need) break;
        mult = p->ordered ? mult + K : mult * 2;
    }
}

/* Keys shard s is estimated to have left past the page it has in flight. */
static long double estimate(const kvs_plan *p, const shard *s, const kvs_ks_num *cur,
                            long double dens)
{
    long double span, est;
    kvs_ks_num n;
    if (s->has_hi) {
        num_of(s, &s->hi, &n);
        span = kvs_ks_span(&s->model, cur, &n);
    } else {        /* no end in sight: guess the store goes on as far again as seen */
        long double again;
        num_of(s, &p->first, &n);
        again = kvs_ks_span(&s->model, &n, cur);
        kvs_ks_top(&s->model, &n, p->cfg.prefix, p->prefix_len);
        span = kvs_ks_span(&s->model, cur, &n);
        if (again < span) span = again;
    }
    est = dens * span - (s->inflight ? (long double)p->cfg.page_size : 0);
    if (p->remaining >= 0 && est > (long double)p->remaining) est = (long double)p->remaining;
    return est > 0 ? est : 0;
}

/* How many keys shard i should keep of est, when it is cut (see the top);
 * < 0: it should not be. */
static long double keep_of(const kvs_plan *p, int i, const kvs_ks_num *cur, long double dens,
                           long double est)
{
    const shard *s = p->s[i];
    long double ps = (long double)p->cfg.page_size, keep = est / 2;
    if (!s->has_hi) {           /* the new last range: at most a window past the proof */
        kvs_ks_num pr;
        long double room = (long double)(p->parallel * K) * ps - (s->inflight ? ps : 0);
        num_of(s, &p->proof, &pr);
        room -= dens * kvs_ks_span(&s->model, &pr, cur);
        if (room < ps / 2) return -1;
        if (keep > room) keep = room;
    }
    if (p->ordered) {           /* what it may fetch before it waits for its turn */
        int pages = K - s->inflight - (i > 0 ? s->npages : 0);
        if ((long double)pages * ps * SLACK < keep) keep = (long double)pages * ps * SLACK;
    }
    return keep;
}

/* While fewer than `parallel` shards exist, cut the one with the most work
 * past what it keeps (more than a page of it). */
static void schedule(kvs_plan *p)
{
    long double ps = (long double)p->cfg.page_size;
    int i;
    while (p->started && !p->failed && p->n < p->max_shards) {
        int best = -1, r;
        long double best_x = ps, best_keep = 0, best_dens = 0, before = 0;
        kvs_ks_num cur, m;
        shard *s;
        for (i = 0; i < p->n; i++) {
            long double est, keep, dens;
            s = p->s[i];
            if (p->remaining >= 0 && before >= (long double)p->remaining)
                break;              /* the ranges before it cover the limit */
            before += (long double)(s->npages + s->inflight) * ps;
            if (s->done || s->skip || !s->has_cursor || (s->has_hi && !s->fed)
                || !((dens = kvs_ks_density(&s->model, &s->dens)) > 0))
                continue;
            num_of(s, &s->cursor, &cur);
            est = estimate(p, s, &cur, dens);
            before += est;
            keep = keep_of(p, i, &cur, dens, est);
            if (keep >= 0 && est - keep > best_x) {
                best = i;
                best_x = est - keep;
                best_keep = keep;
                best_dens = dens;
            }
        }
        if (best < 0) break;
        s = p->s[best];
        if (best_keep < ps / 4 && !s->inflight && s->npages >= K) {
            r = handoff(p, best);
        } else {
            num_of(s, &s->cursor, &cur);
            kvs_ks_advance(&s->model, &m, &cur, ((s->inflight ? ps : 0) + best_keep) / best_dens);
            r = split_at(p, best, &m);
        }
        if (r < 0) return;
        if (r == 0) s->skip = 1;
    }
    for (i = 0; i < p->n; i++) p->s[i]->skip = 0;
}

/* --- replies --------------------------------------------------------------------------- */

/* Keys exist after `key`: the window for new ranges reaches past it. */
static int prove(kvs_plan *p, const char *key, size_t len)
{
    if (p->proof.data && kvs_key_cmp(key, len, p->proof.data, p->proof.len) <= 0) return 0;
    return kvs_buf_set(&p->proof, key, len) == 0 ? 0 : oom(p);
}

static const char *key_of(const kvs_page *pg, size_t i, size_t *len)
{
    *len = pg->items[i].key_len;
    return pg->bytes.data + pg->items[i].key_off;
}

/* Appends item i of src to dst.  0 ok, -1 out of memory. */
static int page_add(kvs_page *dst, const kvs_page *src, size_t i)
{
    const kvs_item *it = &src->items[i];
    kvs_item *d;
    if (dst->count == dst->cap) {
        size_t cap = dst->cap ? 2 * dst->cap : 64;
        kvs_item *items = realloc(dst->items, cap * sizeof *items);
        if (!items) return -1;
        dst->items = items, dst->cap = cap;
    }
    d = &dst->items[dst->count];
    d->size = it->size;
    d->key_off = dst->bytes.len, d->key_len = it->key_len;
    if (kvs_buf_append(&dst->bytes, src->bytes.data + it->key_off, it->key_len) != 0) return -1;
    d->url_off = KVS_NO_URL, d->url_len = 0;
    if (it->url_off != KVS_NO_URL) {
        d->url_off = dst->bytes.len, d->url_len = it->url_len;
        if (kvs_buf_append(&dst->bytes, src->bytes.data + it->url_off, it->url_len) != 0)
            return -1;
    }
    dst->count++;
    return 0;
}

/* Shard s's page pg ran past its range from item `from` on: those keys are
 * the next shards' (in order, each to its hi), and for a shard that has seen
 * none of its own yet they are its first page, so that nothing fetched is
 * thrown away.  Such a shard's request in flight is aborted; it goes on from
 * the last key it was given, or is done when the page showed keys past its
 * range.  `more`: keys exist past the page's last one; if not, every shard
 * after s is done. */
static void carry(kvs_plan *p, shard *s, const kvs_page *pg, size_t from, int more)
{
    int j;
    size_t i = from, len;
    const char *k;
    for (j = 0; p->s[j] != s; j++)
        ;
    for (j++; j < p->n && i < pg->count; j++) {
        shard *t = p->s[j];
        kvs_page *dst;
        if (t->done || t->fed || t->npages) break;     /* it has keys of its own */
        dst = &t->pages[t->first];
        kvs_page_reset(dst);
        while (i < pg->count && (k = key_of(pg, i, &len), !t->has_hi
                                 || kvs_key_cmp(k, len, t->hi.data, t->hi.len) <= 0))
            if (page_add(dst, pg, i++) != 0) return (void)oom(p);
        shard_stop(p, t);       /* aborts its request: what it asked for is here */
        if (dst->count > 0) {
            k = key_of(dst, dst->count - 1, &len);
            if (dst->count > 1) memset(&t->model, 0, sizeof t->model);
            if (kvs_ks_sample_page(&t->dens, &t->model, dst) != 0
                || kvs_buf_set(&t->cursor, k, len) != 0 || prove(p, k, len) != 0)
                return (void)oom(p);
            t->npages = 1;
            t->fed = 1;
        }
        if (i == pg->count && more)     /* its range goes on past the page */
            t->done = 0, t->retry_at = 0, t->retrying = 0, t->has_cursor = 1;
    }
    if (!more)
        for (; j < p->n; j++) shard_stop(p, p->s[j]);
}

/* A page arrived for s: trim it to the range, keep it, move the cursor on. */
static void accept_page(kvs_plan *p, shard *s)
{
    kvs_page *pg = &s->pages[(s->first + s->npages) % K];
    int more;
    size_t n;
    kvs_listing_take_page(s->l, pg);
    more = !kvs_listing_finished(s->l);
    n = pg->count;
    if (more && prove(p, pg->next.data, pg->next.len) != 0) return;
    if (s->has_hi) {            /* cut while in flight: the rest is another shard's */
        while (n > 0 && kvs_key_cmp(pg->bytes.data + pg->items[n - 1].key_off,
                                    pg->items[n - 1].key_len, s->hi.data, s->hi.len) > 0)
            n--;
        if (n < pg->count) {
            carry(p, s, pg, n, more);
            if (p->failed) return;
            pg->count = n;
            more = 0;
            if (prove(p, s->hi.data, s->hi.len) != 0) return;
        }
        if (more && kvs_key_cmp(pg->next.data, pg->next.len, s->hi.data, s->hi.len) >= 0)
            more = 0;
    }
    if (n > 0) {
        if (n > 1) {            /* the model of the keys around the range's cursor */
            memset(&s->model, 0, sizeof s->model);
            if (s->has_hi) kvs_ks_learn(&s->model, s->hi.data, s->hi.len);
        }
        if (kvs_ks_sample_page(&s->dens, &s->model, pg) != 0
            || (!p->started && kvs_buf_set(&p->first, pg->bytes.data + pg->items[0].key_off,
                                           pg->items[0].key_len) != 0))
            return (void)oom(p);
        s->npages++;
        s->fed = 1;
    }
    if (!more)
        shard_stop(p, s);
    else if (kvs_buf_set(&s->cursor, pg->next.data, pg->next.len) != 0)
        return (void)oom(p);
    else
        s->has_cursor = 1;
    if (!p->started) {
        p->started = 1;
        if (more) first_split(p, s, n);
    }
}

static void refill(kvs_plan *p, double now)     /* the bucket holds one token */
{
    if (!p->clock_set) {
        p->clock_set = 1;
        p->refilled = now;
    }
    if (now > p->refilled && (p->tokens += (now - p->refilled) * p->rate) > 1) p->tokens = 1;
    if (now > p->refilled) p->refilled = now;
}

/* The pace after a reply: the limit the API states, a 429's back-off, the climb back. */
static void pace(kvs_plan *p, shard *s, double now)
{
    int limit = kvs_listing_rate_limit(s->l), i, seen = 0;
    refill(p, now);
    if (limit > 0 && !p->rate_fixed && (double)limit != p->ceiling) {
        if (p->rate >= p->ceiling || p->rate > limit) p->rate = limit;
        p->ceiling = limit;         /* the API's X-RateLimit-Limit, from now on */
    }
    if (s->status != 429) {
        p->ok_t[p->ok_n++ % OK_RING] = now;
        if (p->rate < p->ceiling && now > p->cut_at) {
            p->rate += p->ceiling * 0.02 * (now - p->cut_at);
            if (p->rate > p->ceiling) p->rate = p->ceiling;
            p->cut_at = now;
        }
        return;
    }
    p->st.throttled++;
    p->tokens = 0;
    if (now < p->cut_at + 1.0 && p->rate < p->ceiling) return;   /* one cut a second */
    for (i = 0; i < OK_RING && i < p->ok_n; i++)
        if (p->ok_t[i] > now - 1.0) seen++;
    if (seen < 1) seen = 1;
    if (0.9 * seen < p->rate) p->rate = 0.9 * seen;
    p->cut_at = now;
}

static void after_step(kvs_plan *p, shard *s, kvs_step step, double wait, double now)
{
    s->retrying = step == KVS_STEP_RETRY;
    if (step == KVS_STEP_PAGE)
        accept_page(p, s);
    else if (step == KVS_STEP_RETRY)
        s->retry_at = now + wait;
    else
        fail(p, kvs_listing_error(s->l));
}

void kvs_plan_reply_begin(kvs_plan *p, unsigned id, int status)
{
    shard *s = by_id(p, id);
    if (!s) return;
    s->status = status;
    kvs_listing_reply_begin(s->l, status);
}

void kvs_plan_reply_header(kvs_plan *p, unsigned id, const char *name, size_t nlen,
                           const char *value, size_t vlen)
{
    shard *s = by_id(p, id);
    if (s) kvs_listing_reply_header(s->l, name, nlen, value, vlen);
}

int kvs_plan_reply_body(kvs_plan *p, unsigned id, const char *data, size_t len)
{
    shard *s = by_id(p, id);
    return s ? kvs_listing_reply_body(s->l, data, len) : -1;
}

void kvs_plan_reply_end(kvs_plan *p, unsigned id, kvs_fault fault, const char *msg, double now)
{
    shard *s = by_id(p, id);
    double wait = 0;
    kvs_step step;
    if (!s || p->failed) return;
    s->inflight = 0;
    p->inflight--;
    step = kvs_listing_reply_end(s->l, fault, msg, now, &wait);
    pace(p, s, now);
    after_step(p, s, step, wait, now);
    if (!p->failed) tidy(p);
}

/* --- requests -------------------------------------------------------------------------- */

/* Room for one more request of shard i: at most `parallel` in flight, and
 * parallel x K pages held and in flight, except for the range handed out
 * next (ordered), which must never wait for the pages behind it. */
static int room_for(const kvs_plan *p, int i)
{
    int j;
    if (p->inflight >= p->parallel) return 0;
    if (pages_held(p) < p->parallel * K) return 1;
    if (!p->ordered) return 0;
    for (j = 0; j < i; j++)
        if (!p->s[j]->done) return 0;
    return 1;
}

static int wants_to_send(const kvs_plan *p, int i, double now)
{
    const shard *s = p->s[i];
    return !s->done && !s->inflight && s->npages < K && !(s->retry_at > now) && room_for(p, i);
}

int kvs_plan_next_request(kvs_plan *p, double now, kvs_plan_request *out)
{
    int i, from;
    if (p->failed || p->finished) return 0;
    tidy(p);
    schedule(p);
    from = p->ordered || p->n == 0 ? 0 : p->turn++ % p->n;
    for (i = 0; i < p->n && !p->failed; i++) {  /* ordered: the earliest ranges first */
        shard *s = p->s[(from + i) % p->n];
        kvs_request req;
        if (!wants_to_send(p, (from + i) % p->n, now)) continue;
        refill(p, now);
        if (p->tokens < 1 - 1e-9) return 0;   /* (rounding: a token due now is here) */
        if ((!s->l || (s->rebuild && !s->retrying)) && make_listing(p, s) != 0)
            return oom(p), 0;
        if (!kvs_listing_next_request(s->l, &req)) {
            if (kvs_listing_failed(s->l)) fail(p, kvs_listing_error(s->l));
            else shard_stop(p, s);
            continue;
        }
        p->tokens -= 1;
        s->retry_at = 0;
        s->inflight = 1;
        s->status = 0;
        s->id = ++p->next_id ? p->next_id : ++p->next_id;
        p->inflight++;
        p->st.requests++;
        out->id = s->id;
        out->shard = s->serial;
        out->url = req.url;
        out->url_len = req.url_len;
        out->attempt = req.attempt;
        return 1;
    }
    if (!p->failed) tidy(p);
    return 0;
}

int kvs_plan_next_cancel(kvs_plan *p, unsigned *id)
{
    if (p->ncancels == 0) return 0;
    *id = p->cancels[0];
    memmove(p->cancels, p->cancels + 1, --p->ncancels * sizeof *p->cancels);
    return 1;
}

double kvs_plan_timeout(kvs_plan *p, double now)
{
    double t = -1;
    int i, want = 0;
    if (p->failed || p->finished) return -1;
    for (i = 0; i < p->n; i++) {
        const shard *s = p->s[i];
        if (s->done || s->inflight || s->npages >= K || !room_for(p, i)) continue;
        if (s->retry_at > now) {
            if (t < 0 || s->retry_at - now < t) t = s->retry_at - now;
        } else {
            want = 1;
        }
    }
    if (want) {
        refill(p, now);
        if (p->tokens >= 1 - 1e-9) return 0;
        if (t < 0 || (1 - p->tokens) / p->rate < t) t = (1 - p->tokens) / p->rate;
    }
    if (t < 0 && p->inflight == 0) {
        for (i = 0; i < p->n && !p->s[i]->npages; i++)
            ;
        if (i == p->n)          /* nothing to send, wait for or hand out */
            fail_with(p, "internal-error", "parallel listing has nothing to wait for (a bug)");
    }
    return t;
}

/* --- the API ----------------------------------------------------------------------------- */

kvs_plan *kvs_plan_new(const kvs_listing_config *cfg, int parallel, double rate, int ordered)
{
    kvs_plan *p = calloc(1, sizeof *p);
    const char **str[6];
    kvs_buf first;
    int i, bad = 0;
    if (!p) return NULL;
    p->cfg = *cfg;
    str[0] = &p->cfg.base_url, str[1] = &p->cfg.store_id, str[2] = &p->cfg.prefix;
    str[3] = &p->cfg.collection, str[4] = &p->cfg.signature, str[5] = &p->cfg.start_key;
    for (i = 0; i < 6; i++) {           /* own copies: the caller's may go away */
        size_t n = i == 5 ? cfg->start_key_len : *str[i] ? strlen(*str[i]) : 0;
        if (*str[i] && (p->strs[i] = malloc(n + 1)) != NULL) {
            memcpy(p->strs[i], *str[i], n);
            p->strs[i][n] = '\0';
        } else if (*str[i]) {
            bad = 1;
        }
        *str[i] = p->strs[i];
    }
    p->cfg.upper_key = NULL;
    p->cfg.single_page = 0;
    p->parallel = parallel < 1 ? 1 : parallel > KVS_PLAN_MAX ? KVS_PLAN_MAX : parallel;
    p->max_shards = p->parallel > 1 ? 2 * p->parallel : 1;
    p->ordered = ordered;
    p->remaining = cfg->limit;
    p->rate_fixed = rate > 0;
    p->rate = p->ceiling = rate > 0 ? rate : KVS_PLAN_RATE;
    p->tokens = 1;
    p->seed = cfg->seed;
    p->prefix_len = p->cfg.prefix ? strlen(p->cfg.prefix) : 0;
    first.data = p->strs[5], first.len = cfg->start_key_len;
    if (bad || !(p->s[0] = shard_new(p, p->cfg.start_key ? &first : NULL, NULL, NULL))) {
        kvs_plan_free(p);
        return NULL;
    }
    p->n = 1;
    p->finished = p->remaining == 0;
    return p;
}

void kvs_plan_free(kvs_plan *p)
{
    int i;
    if (!p) return;
    drop_all(p);
    for (i = 0; i < 6; i++) free(p->strs[i]);
    free(p->cancels);
    kvs_buf_free(&p->first);
    kvs_buf_free(&p->proof);
    free(p);
}

const kvs_error *kvs_plan_error(const kvs_plan *p)
{
    return p->failed ? &p->err : NULL;
}

int kvs_plan_finished(kvs_plan *p)
{
    if (!p->failed && !p->finished) tidy(p);
    return p->finished;
}

int kvs_plan_inflight(const kvs_plan *p)
{
    return p->inflight;
}

void kvs_plan_stats_get(const kvs_plan *p, kvs_plan_stats *st)
{
    *st = p->st;
    st->rate = p->rate;
    st->alive = p->n;
    st->held = pages_held(p);
}

int kvs_plan_take_page(kvs_plan *p, kvs_page *mine)
{
    shard *s;
    kvs_page tmp;
    int i;
    if (p->failed || p->finished) return 0;
    tidy(p);
    if (p->n == 0) return 0;
    for (i = 0; i < p->n - 1 && !p->s[i]->npages && !p->ordered; i++)
        ;                               /* ordered: the first shard's page; else any */
    if (!p->s[i]->npages) return 0;
    s = p->s[i];
    tmp = *mine;
    *mine = s->pages[s->first];
    s->pages[s->first] = tmp;
    s->first = (s->first + 1) % K;
    s->npages--;
    if (p->remaining >= 0) {
        if ((long long)mine->count >= p->remaining) {
            mine->count = (size_t)p->remaining;
            p->finished = 1;            /* all wanted: the rest is cancelled */
            drop_all(p);
        }
        p->remaining -= (long long)mine->count;
    }
    return 1;
}
