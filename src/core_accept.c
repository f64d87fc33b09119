/*
 * core_accept.c — what a page arriving for a range of a parallel listing
 * gives: the page trimmed to the range, the range's cursor moved on (or the
 * range stopped), what it shows learnt (core_split.c), and after the first
 * page, the first boundaries cut.
 *
 * A page that runs past its range's bound (the range was cut while its
 * request was in flight, or the estimate was wrong) is not thrown away: its
 * keys past the bound are the first page of the ranges after it that have
 * none yet, whose requests are then aborted.  Whatever the estimates say,
 * every key is listed exactly once: a page is trimmed to the range it was
 * asked for.
 */
#include <stdlib.h>
#include <string.h>

#include "core_plan_internal.h"

#define K KVS_PLAN_PAGES

/* Keys exist after `key`: the window for new ranges reaches past it. */
static int prove(kvs_plan *p, const char *key, size_t len)
{
    if (p->proof.data && kvs_key_cmp(key, len, p->proof.data, p->proof.len) <= 0) return 0;
    return kvs_buf_set(&p->proof, key, len) == 0 ? 0 : kvs_plan_oom(p);
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
 * thrown away (only ranges right after the one before, from its bound: a
 * finished range may have left the list).  Such a shard's request in flight
 * is aborted; it is done when
 * the page showed keys past its range, else it goes on from the last key it
 * was given.  (That no keys follow the page is never concluded here: the
 * listing may have trimmed the page to a bound of its own.) */
static void carry(kvs_plan *p, kvs_shard *s, const kvs_page *pg, size_t from)
{
    int j;
    size_t i = from, len;
    const char *k;
    for (j = 0; p->s[j] != s; j++)
        ;
    for (j++; j < p->n && i < pg->count; j++) {
        kvs_shard *t = p->s[j], *prev = p->s[j - 1];
        kvs_page *dst;
        if (t->done || t->fed || t->npages || t->inflight)
            break;      /* it has keys of its own, or will have: its reply is on the way */
        if (!t->has_cursor || !prev->has_hi             /* or does not start where the */
            || kvs_key_cmp(prev->hi.data, prev->hi.len, t->cursor.data, t->cursor.len) != 0)
            break;                                      /* range before it ends */
        dst = &t->pages[t->first];
        kvs_page_reset(dst);
        while (i < pg->count && (k = key_of(pg, i, &len), !t->has_hi
                                 || kvs_key_cmp(k, len, t->hi.data, t->hi.len) <= 0))
            if (page_add(dst, pg, i++) != 0) return (void)kvs_plan_oom(p);
        kvs_shard_stop(p, t);       /* aborts its request: what it asked for is here */
        if (dst->count > 0) {
            k = key_of(dst, dst->count - 1, &len);
            if (kvs_split_learn(p, t, dst) != 0
                || kvs_buf_set(&t->cursor, k, len) != 0 || prove(p, k, len) != 0)
                return (void)kvs_plan_oom(p);
            t->npages = 1;
            t->fed = 1;
            t->got += (long)dst->count;
        }
        if (i == pg->count)         /* its range may go on past the page */
            t->done = 0, t->retry_at = 0, t->retrying = 0, t->has_cursor = 1;
    }
}

/* The ranges after s that have shown no keys yet are not cut before they do. */
static void unfed_are_probes(kvs_plan *p, const kvs_shard *s)
{
    int i;
    for (i = p->n - 1; i >= 0 && p->s[i] != s; i--)
        if (!p->s[i]->fed) p->s[i]->probe = 1;
}

/* A page arrived for s: trim it to the range, keep it, move the cursor on. */
void kvs_plan_accept_page(kvs_plan *p, kvs_shard *s)
{
    kvs_page *pg = &s->pages[(s->first + s->npages) % K];
    int more, bound = 0;
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
            carry(p, s, pg, n);
            if (p->failed) return;
            pg->count = n;
            more = 0, bound = 1;
            if (prove(p, s->hi.data, s->hi.len) != 0) return;
        }
        if (more && kvs_key_cmp(pg->next.data, pg->next.len, s->hi.data, s->hi.len) >= 0)
            more = 0, bound = 1;
    }
    s->got += (long)n;
    if (bound || (s->has_hi && !more && pg->is_truncated == 1))
        kvs_split_record(p, s);           /* it ran to its bound (its listing trims pages to it) */
    if (n > 0) {
        if (kvs_split_learn(p, s, pg) != 0
            || (!p->started && kvs_buf_set(&p->first, pg->bytes.data + pg->items[0].key_off,
                                           pg->items[0].key_len) != 0))
            return (void)kvs_plan_oom(p);
        s->npages++;
        s->fed = 1;
    }
    if (n == 0 && s->has_hi)        /* an empty range: what the ranges after it inherited */
        unfed_are_probes(p, s);     /* about density is wrong there */
    if (!more)
        kvs_shard_stop(p, s);
    else if (kvs_buf_set(&s->cursor, pg->next.data, pg->next.len) != 0)
        return (void)kvs_plan_oom(p);
    else
        s->has_cursor = 1;
    if (!p->started) {
        kvs_first_split it;
        kvs_cut c;
        p->started = 1;
        if (!more) return;
        kvs_split_first(p, s, n, &it);
        while (kvs_split_first_next(p, &it, &c))
            if (kvs_plan_cut(p, &c) != 0) return;
    }
}
