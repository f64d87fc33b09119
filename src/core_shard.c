/*
 * core_shard.c — the ranges (shards) of a parallel listing as the plan
 * holds them: making one, cutting one in two or handing its range over (the
 * decisions are core_split.c's), stopping one (its request in flight is to
 * be aborted), tidying finished ones away, and failing the whole plan.
 * No I/O, no clock.
 */
#include <stdlib.h>
#include <string.h>

#include "core_plan_internal.h"

#define K KVS_PLAN_PAGES

/* No more requests: the one in flight is to be aborted; the pages stay. */
void kvs_shard_stop(kvs_plan *p, kvs_shard *s)
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

static void shard_free(kvs_plan *p, kvs_shard *s)
{
    int i;
    if (!s) return;
    kvs_shard_stop(p, s);
    kvs_buf_free(&s->cursor);
    kvs_buf_free(&s->hi);
    kvs_ks_sample_free(&s->dens);
    for (i = 0; i < K; i++) kvs_page_free(&s->pages[i]);
    free(s);
}

kvs_shard *kvs_shard_new(kvs_plan *p, const kvs_buf *lo, const kvs_buf *hi,
                         const kvs_ks_sample *dens)
{
    kvs_shard *s = calloc(1, sizeof *s);
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

static void insert_after(kvs_plan *p, int i, kvs_shard *t)
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

void kvs_plan_drop_all(kvs_plan *p)
{
    while (p->n > 0) remove_at(p, p->n - 1);
}

void kvs_plan_tidy(kvs_plan *p)
{
    int i;
    for (i = p->n - 1; i >= 0; i--)
        if (p->s[i]->done && p->s[i]->npages == 0) remove_at(p, i);
    if (p->n == 0 && !p->failed) p->finished = 1;
}

/* `e` is copied first: it may live in a shard. */
void kvs_plan_fail(kvs_plan *p, const kvs_error *e)
{
    if (p->failed) return;
    p->err = *e;
    p->failed = 1;
    kvs_plan_drop_all(p);
}

void kvs_plan_fail_with(kvs_plan *p, const char *type, const char *message)
{
    kvs_error e;
    memset(&e, 0, sizeof e);
    strncpy(e.type, type, sizeof e.type - 1);
    strncpy(e.message, message, sizeof e.message - 1);
    kvs_plan_fail(p, &e);
}

int kvs_plan_oom(kvs_plan *p)
{
    kvs_plan_fail_with(p, KVS_ERR_MEMORY, "out of memory");
    return -1;
}

int kvs_plan_pages_held(const kvs_plan *p)
{
    int i, n = p->inflight;
    for (i = 0; i < p->n; i++) n += p->s[i]->npages;
    return n;
}

/* Shard c->at (full, waiting for its turn) hands its remaining range to a
 * new shard that can start at once. */
static int handoff(kvs_plan *p, int i)
{
    kvs_shard *s = p->s[i], *t = kvs_shard_new(p, &s->cursor, s->has_hi ? &s->hi : NULL, &s->dens);
    if (!t) return kvs_plan_oom(p);
    t->model = s->model;
    t->fed = 1;                 /* s's last page said there is more past the cursor */
    kvs_shard_stop(p, s);
    insert_after(p, i, t);
    return 0;
}

int kvs_plan_cut(kvs_plan *p, const kvs_cut *c)
{
    kvs_shard *s = p->s[c->at], *t;
    kvs_buf kb;
    if (c->handoff) return handoff(p, c->at);
    kb.data = (char *)c->key, kb.len = c->len, kb.cap = 0;
    t = kvs_shard_new(p, &kb, s->has_hi ? &s->hi : NULL, &s->dens);
    if (!t || kvs_buf_set(&s->hi, c->key, c->len) != 0) {
        shard_free(p, t);
        return kvs_plan_oom(p);
    }
    t->model = s->model;
    t->probe = c->probe;
    s->got_at_cut = s->got;
    s->planned = c->planned;
    s->has_hi = 1;
    s->rebuild = 1;             /* a page in flight is trimmed to the new hi */
    insert_after(p, c->at, t);
    return 0;
}
