/*
 * core_parallel.c — the planner of a parallel listing: one listing as key
 * ranges (shards) fetched side by side.  Here: the API, the requests to send
 * and abort, replies by request id and the order pages are handed out in;
 * the ranges' lifecycle is core_shard.c's, where they are cut core_split.c's,
 * what a page gives core_accept.c's, the pace core_pace.c's.  A shard is an
 * ordinary kvs_listing of a range (lo, hi] (start_key, upper_key; the last
 * range has no hi); retries are its own; one shard failing fails all.  No
 * I/O, no clock: time comes as `now`.
 *
 * Memory: with `parallel` requests wanted in flight (core_pace.c: the rate
 * times the round trip, at most the cap asked for), all shards together hold
 * at most max(KVS_PLAN_MEMORY, 3 x parallel) decoded pages, requests in flight
 * included, of which room is kept for the range handed out next (it never
 * waits for the ranges behind it); a shard holds its share of them (p->len:
 * 3 to KVS_PLAN_PAGES, the one being received included) and sends nothing
 * while full.  At most `parallel` requests are in flight, and at most
 * 2 x parallel ranges exist.
 */
#include <stdlib.h>
#include <string.h>

#include "core_plan_internal.h"

/* --- replies ------------------------------------------------------------------- */

static int make_listing(kvs_plan *p, kvs_shard *s)
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
    if (s->l && p->decode_gzip) kvs_listing_decode_gzip(s->l, 1);
    s->rebuild = 0;
    return s->l ? 0 : -1;
}

static kvs_shard *by_id(kvs_plan *p, unsigned id)
{
    int i;
    for (i = 0; i < p->n; i++)
        if (p->s[i]->inflight && p->s[i]->id == id) return p->s[i];
    return NULL;
}

static void after_step(kvs_plan *p, kvs_shard *s, kvs_step step, double wait, double now)
{
    s->retrying = step == KVS_STEP_RETRY;
    if (step == KVS_STEP_PAGE)
        kvs_plan_accept_page(p, s);
    else if (step == KVS_STEP_RETRY)
        s->retry_at = now + wait;
    else
        kvs_plan_fail(p, kvs_listing_error(s->l));
}

void kvs_plan_reply_begin(kvs_plan *p, unsigned id, int status)
{
    kvs_shard *s = by_id(p, id);
    if (!s) return;
    s->status = status;
    kvs_listing_reply_begin(s->l, status);
}

void kvs_plan_reply_header(kvs_plan *p, unsigned id, const char *name, size_t nlen,
                           const char *value, size_t vlen)
{
    kvs_shard *s = by_id(p, id);
    if (s) kvs_listing_reply_header(s->l, name, nlen, value, vlen);
}

int kvs_plan_reply_body(kvs_plan *p, unsigned id, const char *data, size_t len)
{
    kvs_shard *s = by_id(p, id);
    return s ? kvs_listing_reply_body(s->l, data, len) : -1;
}

void kvs_plan_reply_end(kvs_plan *p, unsigned id, kvs_fault fault, const char *msg, double now)
{
    kvs_shard *s = by_id(p, id);
    double wait = 0;
    kvs_step step;
    if (!s || p->failed) return;
    s->inflight = 0;
    p->inflight--;
    step = kvs_listing_reply_end(s->l, fault, msg, now, &wait);
    kvs_pace_reply(p, s->status, kvs_listing_rate_limit(s->l), kvs_listing_retry_after(s->l),
                   fault == KVS_FAULT_NONE ? now - s->sent_at : -1, now);
    after_step(p, s, step, wait, now);
    if (!p->failed) kvs_plan_tidy(p);
}

/* Cuts ranges while a request slot is idle and a token is there (core_split.c
 * decides).  1: a slot is idle, and a cut may come when a token is. */
static int schedule(kvs_plan *p, double now)
{
    kvs_cut c;
    int r;
    kvs_pace_refill(p, now);
    if (kvs_pace_wait(p, now) > 0) return kvs_split_idle(p);
    while ((r = kvs_split_next(p, &c)) > 0)
        if (kvs_plan_cut(p, &c) != 0) return 0;
    if (r < 0) kvs_plan_oom(p);
    return 0;
}

/* --- requests -------------------------------------------------------------------------- */

/* Room for one more request of shard i: at most `parallel` in flight, and
 * at most p->memory pages held and in flight, of which the room the range
 * handed out next (ordered) may still need is kept for it: it must never
 * wait for the pages behind it (and it may always send). */
static int room_for(const kvs_plan *p, int i)
{
    int j, head = -1, held = kvs_plan_pages_held(p), reserve = 0;
    if (p->inflight >= p->parallel) return 0;
    if (p->ordered) {
        for (j = 0; j < p->n && head < 0; j++)
            if (!p->s[j]->done) head = j;
        if (head == i) return 1;        /* it is handed out next: it never waits */
        if (head >= 0) reserve = p->len - p->s[head]->npages - p->s[head]->inflight;
    }
    return held + reserve < p->memory;
}

static int wants_to_send(const kvs_plan *p, int i, double now)
{
    const kvs_shard *s = p->s[i];
    return !s->done && !s->inflight && s->npages < p->len && !(s->retry_at > now)
           && room_for(p, i);
}

int kvs_plan_next_request(kvs_plan *p, double now, kvs_plan_request *out)
{
    int i, from;
    if (p->failed || p->finished) return 0;
    kvs_plan_tidy(p);
    schedule(p, now);
    from = p->ordered || p->n == 0 ? 0 : p->turn++ % p->n;
    for (i = 0; i < p->n && !p->failed; i++) {  /* ordered: the earliest ranges first */
        kvs_shard *s = p->s[(from + i) % p->n];
        kvs_request req;
        if (!wants_to_send(p, (from + i) % p->n, now)) continue;
        kvs_pace_refill(p, now);
        if (kvs_pace_wait(p, now) > 0) return 0;
        if ((!s->l || (s->rebuild && !s->retrying)) && make_listing(p, s) != 0)
            return kvs_plan_oom(p), 0;
        if (!kvs_listing_next_request(s->l, &req)) {
            if (kvs_listing_failed(s->l)) kvs_plan_fail(p, kvs_listing_error(s->l));
            else kvs_shard_stop(p, s);
            continue;
        }
        p->tokens -= 1;
        s->retry_at = 0;
        s->sent_at = now;
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
    if (!p->failed) kvs_plan_tidy(p);
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
    int i, want;
    if (p->failed || p->finished) return -1;
    want = schedule(p, now);    /* ranges are cut when a slot is idle: maybe now */
    if (p->failed) return -1;
    for (i = 0; i < p->n; i++) {
        const kvs_shard *s = p->s[i];
        if (s->done || s->inflight || s->npages >= p->len || !room_for(p, i)) continue;
        if (s->retry_at > now) {
            if (t < 0 || s->retry_at - now < t) t = s->retry_at - now;
        } else {
            want = 1;
        }
    }
    if (want) {
        double w = kvs_pace_wait(p, now);
        if (t < 0 || w < t) t = w;
    }
    if (t < 0 && p->inflight == 0) {
        for (i = 0; i < p->n && !p->s[i]->npages; i++)
            ;
        if (i == p->n)          /* nothing to send, wait for or hand out */
            kvs_plan_fail_with(p, "internal-error", "parallel listing has nothing to wait for (a bug)");
    }
    return t;
}

/* --- the API ----------------------------------------------------------------------------- */

kvs_plan *kvs_plan_new(const kvs_listing_config *cfg, int parallel, double rate, int ordered)
{
    kvs_plan *p = calloc(1, sizeof *p);
    const char **str[6];
    size_t len[6];
    kvs_buf first;
    int i, bad = 0;
    if (!p) return NULL;
    p->cfg = *cfg;
    str[0] = &p->cfg.base_url, len[0] = strlen(cfg->base_url);
    str[1] = &p->cfg.store_id, len[1] = strlen(cfg->store_id);
    str[2] = &p->cfg.prefix, len[2] = cfg->prefix_len;
    str[3] = &p->cfg.collection, len[3] = cfg->collection_len;
    str[4] = &p->cfg.signature, len[4] = cfg->signature_len;
    str[5] = &p->cfg.start_key, len[5] = cfg->start_key_len;
    for (i = 0; i < 6; i++) {           /* own copies: the caller's may go away */
        if (*str[i] && (p->strs[i] = malloc(len[i] + 1)) != NULL) {
            memcpy(p->strs[i], *str[i], len[i]);
            p->strs[i][len[i]] = '\0';
        } else if (*str[i]) {
            bad = 1;
        }
        *str[i] = p->strs[i];
    }
    p->cfg.upper_key = NULL;
    p->cfg.single_page = 0;
    p->cap = parallel < 1 ? 1 : parallel > KVS_PLAN_MAX ? KVS_PLAN_MAX : parallel;
    p->parallel = p->max_shards = 1;    /* the first page goes alone */
    kvs_pace_share(p);
    p->ordered = ordered;
    p->remaining = cfg->limit;
    p->rate_fixed = rate > 0;
    p->rate = p->ceiling = rate > 0 ? rate : KVS_PLAN_RATE;
    p->tokens = 1;
    p->first_ok = -1;
    p->disp = -1;
    p->seed = cfg->seed;
    first.data = p->strs[5], first.len = cfg->start_key_len;
    if (bad || !(p->s[0] = kvs_shard_new(p, p->cfg.start_key ? &first : NULL, NULL, NULL))) {
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
    kvs_plan_drop_all(p);
    for (i = 0; i < 6; i++) free(p->strs[i]);
    free(p->cancels);
    kvs_buf_free(&p->first);
    kvs_buf_free(&p->proof);
    for (i = 0; i < KVS_PLAN_POOL; i++) kvs_ks_sample_free(&p->pool[i]);
    free(p);
}

size_t kvs_plan_memory(const kvs_plan *p)
{
    size_t n = sizeof *p + p->cancels_cap * sizeof *p->cancels + p->first.cap + p->proof.cap;
    int i, j;
    for (i = 0; i < p->n; i++) {
        const kvs_shard *s = p->s[i];
        n += sizeof *s + s->cursor.cap + s->hi.cap + (s->l ? kvs_listing_memory(s->l) : 0);
        for (j = 0; j < KVS_PLAN_PAGES; j++) n += kvs_page_memory(&s->pages[j]);
    }
    return n;
}

const kvs_error *kvs_plan_error(const kvs_plan *p)
{
    return p->failed ? &p->err : NULL;
}

int kvs_plan_finished(kvs_plan *p)
{
    if (!p->failed && !p->finished) kvs_plan_tidy(p);
    return p->finished;
}

void kvs_plan_decode_gzip(kvs_plan *p, int on)
{
    p->decode_gzip = on;
}

int kvs_plan_inflight(const kvs_plan *p)
{
    return p->inflight;
}

void kvs_plan_stats_get(const kvs_plan *p, kvs_plan_stats *st)
{
    *st = p->st;
    st->rate = p->rate;
    st->parallel = p->parallel;
    st->rtt = p->srtt;
    st->alive = p->n;
    st->held = kvs_plan_pages_held(p);
}

int kvs_plan_take_page(kvs_plan *p, kvs_page *mine)
{
    kvs_shard *s;
    int i;
    if (p->failed || p->finished) return 0;
    kvs_plan_tidy(p);
    if (p->n == 0) return 0;
    for (i = 0; i < p->n - 1 && !p->s[i]->npages && !p->ordered; i++)
        ;                               /* ordered: the first shard's page; else any */
    if (!p->s[i]->npages) return 0;
    s = p->s[i];
    kvs_page_swap(mine, &s->pages[s->first]);
    s->first = (s->first + 1) % KVS_PLAN_PAGES;
    s->npages--;
    if (p->remaining >= 0) {
        if ((long long)mine->count >= p->remaining) {
            mine->count = (size_t)p->remaining;
            p->finished = 1;            /* all wanted: the rest is cancelled */
            kvs_plan_drop_all(p);
        }
        p->remaining -= (long long)mine->count;
    }
    return 1;
}
