/*
 * driver_parallel.c — one listing as key ranges fetched side by side
 * (store:keys{ parallel = n }), on one libcurl multi handle.  A shard is an
 * ordinary kvs_listing of a range (lo, hi] (start_key, upper_key; the last
 * range has no hi) with an easy handle of its own; all share the client's
 * connection cache.  Retries are the core's; one shard failing fails all.
 *
 * Where to split is learnt on the way (core_keyspace.c reads keys as
 * numbers).  The first page goes out alone; if the listing goes on, the key
 * space past it gets boundaries from that page's density: ordered, every
 * KVS_PAR_PAGES pages' worth (what is in flight is what is handed out next);
 * unordered, at 1, 2, 4, ... pages' worth.  Then, whenever fewer than
 * `parallel` shards exist, the one with the most estimated work beyond what
 * it may fetch before it must wait is cut: ordered, after what fits in its
 * buffer (a full one waiting for its turn hands all of its range over);
 * unordered, in halves.  Ranges that showed no keys are not cut, and no range
 * opens more than a window (parallel x KVS_PAR_PAGES pages' worth) past the
 * greatest key a page showed keys after: past a store's end, probing stops.
 *
 * Whatever the estimates say, every key is listed exactly once: a boundary
 * is a key strictly between the shard's cursor and its bound (compared
 * byte-wise), a page is trimmed to the range it was asked for, and a range
 * only ever shrinks from above.
 *
 * Memory: a shard holds at most KVS_PAR_PAGES decoded pages, the one being
 * received included, and sends nothing while full; at most `parallel` shards
 * exist, finished ones still holding pages included: at most
 * parallel x KVS_PAR_PAGES pages of <= page_size keys, plus the caller's.
 *
 * Rate: a token bucket of one token refilled at `rate` per second; requests
 * go out at least 1/rate apart, never more than `rate` in any one second.
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "driver.h"
#include "platform.h"

#define K     KVS_PAR_PAGES
#define SLACK 0.95L   /* a range cut to hold n pages gets 95% of n pages' worth of
                         keys: it rarely needs one more, nearly empty request */

typedef struct shard {
    kvs_listing  *l;            /* made at the first request, remade when hi moves */
    kvs_conn     *conn;
    kvs_buf       cursor, hi;   /* the range (cursor, hi]; cursor: the next exclusiveStartKey */
    int           has_cursor, has_hi;
    kvs_ks_sample dens;         /* its latest page's, or its parent's */
    int           fed;          /* keys came from the range (or its parent's, handed over) */
    int           skip;         /* could not be cut this round */
    int           rebuild;      /* hi moved since l was made */
    int           inflight, retrying, done;
    double        retry_at;     /* monotonic seconds; 0: none */
    kvs_page      pages[K];     /* a ring of decoded pages waiting to be handed out */
    int           first, npages;
} shard;

struct kvs_par {
    const kvs_settings *settings;
    kvs_listing_config cfg;            /* its strings are the copies in strs */
    char              *strs[6];
    CURLM             *multi;
    shard             *s[KVS_PAR_MAX]; /* in key order */
    int                n, parallel, ordered, turn;
    int                started;        /* the first page is in: splitting may begin */
    int                inflight, finished, failed;
    long long          remaining;      /* keys still to hand out; -1: all */
    double             rate, tokens, refilled;
    int                rate_fixed;
    kvs_ks_model       model;          /* how keys read as numbers, learnt from pages */
    kvs_buf            first;          /* the first key listed */
    kvs_buf            proof;          /* the greatest key a page showed keys after */
    size_t             prefix_len;
    uint64_t           seed;
    kvs_error          err;
};

/* --- shards -------------------------------------------------------------------- */

static void shard_free(kvs_par *p, shard *s);

/* (lo, hi], a copy of `dens`; NULL when out of memory */
static shard *shard_new(kvs_par *p, const kvs_buf *lo, const kvs_buf *hi, const kvs_ks_sample *dens)
{
    shard *s = calloc(1, sizeof *s);
    int i;
    if (!s) return NULL;
    for (i = 0; i < K; i++) kvs_page_init(&s->pages[i]);
    s->has_cursor = lo != NULL;
    s->has_hi = hi != NULL;
    if ((lo && kvs_buf_set(&s->cursor, lo->data, lo->len) != 0)
        || (hi && kvs_buf_set(&s->hi, hi->data, hi->len) != 0)
        || (dens && kvs_ks_sample_copy(&s->dens, dens) != 0)) {
        shard_free(p, s);
        return NULL;
    }
    return s;
}

/* No more requests: cancels the one in flight, keeps the pages. */
static void shard_stop(kvs_par *p, shard *s)
{
    if (s->inflight) {
        curl_multi_remove_handle(p->multi, kvs_conn_handle(s->conn));
        s->inflight = 0;
        p->inflight--;
    }
    kvs_listing_free(s->l);
    kvs_conn_free(s->conn);
    s->l = NULL;
    s->conn = NULL;
    s->done = 1;
}

static void shard_free(kvs_par *p, shard *s)
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

static void insert_after(kvs_par *p, int i, shard *t)
{
    memmove(&p->s[i + 2], &p->s[i + 1], (size_t)(p->n - i - 1) * sizeof p->s[0]);
    p->s[i + 1] = t;
    p->n++;
}

static void remove_at(kvs_par *p, int i)
{
    shard_free(p, p->s[i]);
    memmove(&p->s[i], &p->s[i + 1], (size_t)(p->n - i - 1) * sizeof p->s[0]);
    p->n--;
}

static void drop_all(kvs_par *p)
{
    while (p->n > 0) remove_at(p, p->n - 1);
}

/* The whole listing fails with `e` (copied first: it may live in a shard). */
static void fail(kvs_par *p, const kvs_error *e)
{
    if (p->failed) return;
    p->err = *e;
    p->failed = 1;
    drop_all(p);
}

static void fail_with(kvs_par *p, const char *type, const char *message)
{
    kvs_error e;
    memset(&e, 0, sizeof e);
    strcpy(e.type, type);
    strcpy(e.message, message);
    fail(p, &e);
}

static int oom(kvs_par *p)
{
    fail_with(p, KVS_ERR_MEMORY, "out of memory");
    return -1;
}

static int make_listing(kvs_par *p, shard *s)
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

/* --- splitting ----------------------------------------------------------------------- */

static void num_of(const kvs_par *p, const kvs_buf *key, kvs_ks_num *n)
{
    kvs_ks_from_key(&p->model, n, key->data, key->len);
}

/* Shard i keeps (cursor, m]; a new shard after it gets (m, hi].  1 done, 0 no
 * key strictly between cursor and hi there, -1 failed. */
static int split_at(kvs_par *p, int i, const kvs_ks_num *m)
{
    shard *s = p->s[i], *t;
    char key[KVS_KS_KEY_MAX];
    kvs_ks_num cur;
    kvs_buf kb;
    size_t len;
    if (p->n >= p->parallel || !s->has_cursor) return 0;
    num_of(p, &s->cursor, &cur);
    len = kvs_ks_key(&p->model, m, &cur, key);
    if (kvs_key_cmp(s->cursor.data, s->cursor.len, key, len) >= 0
        || (s->has_hi && kvs_key_cmp(key, len, s->hi.data, s->hi.len) >= 0))
        return 0;
    kb.data = key, kb.len = len, kb.cap = 0;
    t = shard_new(p, &kb, s->has_hi ? &s->hi : NULL, &s->dens);
    if (!t || kvs_buf_set(&s->hi, key, len) != 0) {
        shard_free(p, t);
        return oom(p);
    }
    s->has_hi = 1;
    s->rebuild = 1;             /* a page in flight is trimmed to the new hi */
    insert_after(p, i, t);
    return 1;
}

/* Shard i (full, waiting for its turn) hands its remaining range to a new
 * shard that can start at once. */
static int handoff(kvs_par *p, int i)
{
    shard *s = p->s[i], *t = shard_new(p, &s->cursor, s->has_hi ? &s->hi : NULL, &s->dens);
    if (!t) return oom(p);
    t->fed = 1;                 /* s's last page said there is more past the cursor */
    shard_stop(p, s);
    insert_after(p, i, t);
    return 1;
}

/* The first page said more: boundaries past its end (see the top). */
static void first_split(kvs_par *p, shard *s, size_t got)
{
    long double step, mult = p->ordered ? K : 1, dens = kvs_ks_density(&p->model, &s->dens);
    long long need = p->remaining >= 0 ? p->remaining - (long long)got : -1;
    kvs_ks_num cur, top, b;
    if (!(dens > 0)) return;
    num_of(p, &s->cursor, &cur);
    kvs_ks_top(&p->model, &top, p->cfg.prefix, p->prefix_len);
    step = (long double)p->cfg.page_size * SLACK / dens;
    while (p->n < p->parallel && mult <= (long double)(p->parallel * K)) {
        kvs_ks_advance(&p->model, &b, &cur, step * mult);
        if (kvs_ks_cmp(&b, &top) >= 0 || split_at(p, p->n - 1, &b) <= 0) break;
        if (need >= 0 && mult * p->cfg.page_size >= (long double)need) break;
        mult = p->ordered ? mult + K : mult * 2;
    }
}

/* Keys shard s is estimated to have left past the page it has in flight. */
static long double estimate(const kvs_par *p, const shard *s, const kvs_ks_num *cur,
                            long double dens)
{
    long double span, est;
    kvs_ks_num n;
    if (s->has_hi) {
        num_of(p, &s->hi, &n);
        span = kvs_ks_span(&p->model, cur, &n);
    } else {        /* no end in sight: guess the store goes on as far again as seen */
        long double again;
        num_of(p, &p->first, &n);
        again = kvs_ks_span(&p->model, &n, cur);
        kvs_ks_top(&p->model, &n, p->cfg.prefix, p->prefix_len);
        span = kvs_ks_span(&p->model, cur, &n);
        if (again < span) span = again;
    }
    est = dens * span - (s->inflight ? (long double)p->cfg.page_size : 0);
    if (p->remaining >= 0 && est > (long double)p->remaining) est = (long double)p->remaining;
    return est > 0 ? est : 0;
}

/* How many keys shard i should keep of est, when it is cut (see the top);
 * < 0: it should not be. */
static long double keep_of(const kvs_par *p, int i, const kvs_ks_num *cur, long double dens,
                           long double est)
{
    const shard *s = p->s[i];
    long double ps = (long double)p->cfg.page_size, keep = est / 2;
    if (!s->has_hi) {           /* the new last range: at most a window past the proof */
        kvs_ks_num pr;
        long double room = (long double)(p->parallel * K) * ps - (s->inflight ? ps : 0);
        num_of(p, &p->proof, &pr);
        room -= dens * kvs_ks_span(&p->model, &pr, cur);
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
static void schedule(kvs_par *p)
{
    long double ps = (long double)p->cfg.page_size;
    int i;
    while (p->started && !p->failed && p->n < p->parallel) {
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
                || !((dens = kvs_ks_density(&p->model, &s->dens)) > 0))
                continue;
            num_of(p, &s->cursor, &cur);
            est = estimate(p, s, &cur, dens);
            before += est;
            if ((keep = keep_of(p, i, &cur, dens, est)) >= 0 && est - keep > best_x) {
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
            num_of(p, &s->cursor, &cur);
            kvs_ks_advance(&p->model, &m, &cur, ((s->inflight ? ps : 0) + best_keep) / best_dens);
            r = split_at(p, best, &m);
        }
        if (r < 0) return;
        if (r == 0) s->skip = 1;
    }
    for (i = 0; i < p->n; i++) p->s[i]->skip = 0;
}

/* --- replies --------------------------------------------------------------------------- */

/* Keys exist after `key`: the window for new ranges reaches past it. */
static int prove(kvs_par *p, const char *key, size_t len)
{
    if (p->proof.data && kvs_key_cmp(key, len, p->proof.data, p->proof.len) <= 0) return 0;
    return kvs_buf_set(&p->proof, key, len) == 0 ? 0 : oom(p);
}

/* A page arrived for s: trim it to the range, keep it, move the cursor on. */
static void accept_page(kvs_par *p, shard *s)
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
            pg->count = n;
            more = 0;
            if (prove(p, s->hi.data, s->hi.len) != 0) return;
        }
        if (more && kvs_key_cmp(pg->next.data, pg->next.len, s->hi.data, s->hi.len) >= 0)
            more = 0;
    }
    if (n > 0) {
        if (kvs_ks_sample_page(&s->dens, &p->model, pg) != 0
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

static void after_step(kvs_par *p, shard *s, kvs_step step, double wait)
{
    s->retrying = step == KVS_STEP_RETRY;
    if (step == KVS_STEP_PAGE)
        accept_page(p, s);
    else if (step == KVS_STEP_RETRY)
        s->retry_at = kvs_monotonic() + wait;
    else
        fail(p, kvs_listing_error(s->l));
}

static void refill(kvs_par *p, double now)     /* the bucket holds one token */
{
    if (now > p->refilled && (p->tokens += (now - p->refilled) * p->rate) > 1) p->tokens = 1;
    p->refilled = now;
}

/* Hands the finished transfers to their shards' listings. */
static void harvest(kvs_par *p)
{
    CURLMsg *m;
    int left;
    while (!p->failed && (m = curl_multi_info_read(p->multi, &left)) != NULL) {
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;   /* m is gone once the handle is removed */
        shard *s = NULL;
        const char *msg;
        double wait;
        kvs_step step;
        kvs_fault fault;
        int i, limit;
        if (m->msg != CURLMSG_DONE) continue;
        for (i = 0; i < p->n && !s; i++)
            if (p->s[i]->inflight && kvs_conn_handle(p->s[i]->conn) == easy) s = p->s[i];
        if (!s) continue;
        fault = kvs_conn_fault(s->conn, rc, &msg);
        curl_multi_remove_handle(p->multi, easy);
        s->inflight = 0;
        p->inflight--;
        step = kvs_listing_reply_end(s->l, fault, msg, kvs_monotonic(), &wait);
        limit = kvs_listing_rate_limit(s->l);
        if (limit > 0 && !p->rate_fixed && (double)limit != p->rate) {
            refill(p, kvs_monotonic());
            p->rate = limit;        /* the API's X-RateLimit-Limit, from now on */
        }
        after_step(p, s, step, wait);
    }
}

/* --- requests -------------------------------------------------------------------------- */

/* 1 when a request went out (or was tried), 0 when s had none to make. */
static int send_one(kvs_par *p, shard *s)
{
    kvs_request req;
    if (((!s->l || (s->rebuild && !s->retrying)) && make_listing(p, s) != 0)
        || (!s->conn && !(s->conn = kvs_conn_new(p->settings))))
        return oom(p), 0;
    if (!kvs_listing_next_request(s->l, &req)) {
        if (kvs_listing_failed(s->l)) fail(p, kvs_listing_error(s->l));
        else shard_stop(p, s);
        return 0;
    }
    s->retry_at = 0;
    if (curl_multi_add_handle(p->multi, kvs_conn_start(s->conn, s->l, &req)) != CURLM_OK) {
        double wait;
        kvs_step step = kvs_listing_reply_end(s->l, KVS_FAULT_NETWORK,
                                              "libcurl could not start the request",
                                              kvs_monotonic(), &wait);
        after_step(p, s, step, wait);
        return 1;
    }
    s->inflight = 1;
    p->inflight++;
    return 1;
}

static int wants_to_send(const shard *s, double now)
{
    return !s->done && !s->inflight && s->npages < K && !(s->retry_at > now);
}

/* Starts what may start as the bucket allows: ordered, the earliest ranges
 * first (they are handed out next); else taking turns. */
static void start_requests(kvs_par *p)
{
    double now = kvs_monotonic();
    int i, sent = 0, running, from = p->ordered || p->n == 0 ? 0 : p->turn++ % p->n;
    for (i = 0; i < p->n && !p->failed; i++) {
        shard *s = p->s[(from + i) % p->n];
        if (!wants_to_send(s, now)) continue;
        refill(p, now);
        if (p->tokens < 1) break;
        if (send_one(p, s)) {
            p->tokens -= 1;
            sent = 1;
        }
    }
    if (sent && !p->failed) curl_multi_perform(p->multi, &running);
}

/* The work that is ready, without waiting. */
void kvs_par_poll(kvs_par *p)
{
    int i, running;
    if (p->failed || p->finished) return;
    if (p->inflight > 0) {
        curl_multi_perform(p->multi, &running);
        harvest(p);
        if (p->failed) return;
    }
    for (i = p->n - 1; i >= 0; i--)     /* finished and handed out (or empty) */
        if (p->s[i]->done && p->s[i]->npages == 0) remove_at(p, i);
    schedule(p);
    start_requests(p);
}

/* Blocks until a transfer moves, a retry is due or the bucket has a token. */
static void wait_some(kvs_par *p)
{
    double now = kvs_monotonic(), t = 1.0;
    int i, want = 0, retry = 0, ms;
    for (i = 0; i < p->n; i++) {
        const shard *s = p->s[i];
        if (s->done || s->inflight || s->npages >= K) continue;
        if (s->retry_at > now) {
            retry = 1;
            if (s->retry_at - now < t) t = s->retry_at - now;
        } else {
            want = 1;
        }
    }
    if (want) {
        refill(p, now);
        if (p->tokens >= 1) t = 0;
        else if ((1 - p->tokens) / p->rate < t) t = (1 - p->tokens) / p->rate;
    }
    if (p->inflight > 0) {
        long cms = -1;
        curl_multi_timeout(p->multi, &cms);
        if (cms >= 0 && (double)cms / 1000.0 < t) t = (double)cms / 1000.0;
    } else if (!want && !retry) {
        fail_with(p, "internal-error", "parallel listing has nothing to wait for (a bug)");
        return;
    }
    ms = (int)(t * 1000.0);
    if ((double)ms < t * 1000.0) ms++;
    curl_multi_poll(p->multi, NULL, 0, ms, NULL);
}

/* --- the API ----------------------------------------------------------------------------- */

kvs_par *kvs_par_new(const kvs_settings *c, const kvs_listing_config *cfg,
                     int parallel, double rate, int ordered)
{
    kvs_par *p = calloc(1, sizeof *p);
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
    p->settings = c;
    p->parallel = parallel < 1 ? 1 : parallel > KVS_PAR_MAX ? KVS_PAR_MAX : parallel;
    p->ordered = ordered;
    p->remaining = cfg->limit;
    p->rate_fixed = rate > 0;
    p->rate = rate > 0 ? rate : KVS_PAR_RATE;
    p->tokens = 1;
    p->refilled = kvs_monotonic();
    p->seed = cfg->seed;
    p->prefix_len = p->cfg.prefix ? strlen(p->cfg.prefix) : 0;
    p->multi = curl_multi_init();
    first.data = p->strs[5], first.len = cfg->start_key_len;
    if (bad || !p->multi || !(p->s[0] = shard_new(p, p->cfg.start_key ? &first : NULL, NULL, NULL))) {
        kvs_par_free(p);
        return NULL;
    }
    p->n = 1;
    p->finished = p->remaining == 0;
    return p;
}

void kvs_par_free(kvs_par *p)
{
    int i;
    if (!p) return;
    drop_all(p);                        /* cancels every transfer at once */
    if (p->multi) curl_multi_cleanup(p->multi);
    for (i = 0; i < 6; i++) free(p->strs[i]);
    kvs_buf_free(&p->first);
    kvs_buf_free(&p->proof);
    free(p);
}

const kvs_error *kvs_par_error(const kvs_par *p)
{
    return p->failed ? &p->err : NULL;
}

int kvs_par_take(kvs_par *p, kvs_page *mine)
{
    shard *s;
    int i;
    for (;;) {
        if (p->failed) return -1;
        if (p->finished) return 0;
        kvs_par_poll(p);
        if (p->failed) return -1;
        if (p->n == 0) return p->finished = 1, 0;
        for (i = 0; i < p->n - 1 && !p->s[i]->npages && !p->ordered; i++)
            ;                           /* ordered: the first shard's page; else any */
        if (p->s[i]->npages) break;
        wait_some(p);
    }
    s = p->s[i];
    kvs_page_swap(mine, &s->pages[s->first]);
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
    kvs_par_poll(p);                    /* the room it left goes back to work at once */
    return 1;
}
