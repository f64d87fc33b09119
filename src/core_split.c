/*
 * core_split.c — where the planner of a parallel listing cuts its key
 * ranges, as decisions (kvs_cut) that core_shard.c carries out, and what
 * pages show about how keys spread.
 *
 * Where to split is learnt on the way (core_keyspace.c reads keys as
 * numbers; each range reads its keys with a model learnt from its latest
 * page, so that other parts of the store do not blur how its keys spread;
 * the last range, until it has a page of its own, from the nearest page
 * behind it).  The first page goes out alone; if the listing goes on, the
 * key space past it gets boundaries from that page's density: ordered, at
 * 1, 2, 4, 6, 9, ... pages' worth (ranges of 1, 1, 2, 2, 3, ... pages up
 * to p->len: what is in flight is what is handed out next, and a store of a
 * few pages is soon listed); unordered, at 1, 2, 4, 8, ... pages' worth.
 * Then a range is cut only when a request slot is idle and the pace has a
 * token for it (so that no more ranges are made than the rate can feed):
 * the one with the most estimated work beyond what it may fetch before it
 * must wait: ordered, after what fits in its buffer (a full one waiting for
 * its turn hands the rest of its range over), and no more than half the
 * pages listed so far (a small store is listed in short ranges side by
 * side, a big one in long ones); unordered, in halves.  A range is cut to
 * hold a little less than whole pages (slack: how far off the estimates
 * are).  Ranges that showed no keys are not cut (nor a probe: see
 * past_group), and no range opens more than a window past the greatest key
 * a page showed keys after (see window): past a store's end, probing stops.
 *
 * Whatever the estimates say, every key is listed exactly once: a boundary
 * is a key strictly between the shard's cursor and its bound (compared
 * byte-wise), and a range only ever shrinks from above (core_accept.c trims
 * each page to the range it was asked for).
 */
#include <math.h>
#include <string.h>

#include "core_plan_internal.h"

#define POOL_TOL 1.2L  /* pages whose densities differ less than this are pooled */
#define SLACK0 0.92L  /* a range cut to hold n pages gets 92% of n pages' worth of keys
                         when nothing says how evenly keys lie: it rarely needs one more,
                         nearly empty request */

/* --- how far off the estimates are ---------------------------------------------------- */

/* The share of n pages' worth of keys range s gets when cut to hold n
 * pages: so that it rarely holds more (a request for a few keys, a page
 * that runs into the next range), with two standard deviations of how far
 * off such an estimate is: the part of chance, from how unevenly its latest
 * page's keys lie (keys at random: their number in a range of p->len pages
 * varies by the square root of it), and once five ranges have ended, the
 * part left of how the latest ones compared with their estimates (their
 * mean too).  Uniform keys come to 0.995, random ones to about 0.96. */
static long double slack(const kvs_plan *p, const kvs_shard *s)
{
    double d = s->dens.disp >= 0 ? s->dens.disp : p->disp, mean = 0, var, sd, x;
    if (d < 0 && p->err_n < 5) return SLACK0;
    var = d > 0 ? d / (p->len * (double)p->cfg.page_size) : 0;
    if (p->err_n >= 5) {
        mean = p->err_sum / p->err_n;
        x = p->err_sq / p->err_n - mean * mean - p->err_chance / p->err_n;
        if (x > 0) var += x;
    }
    sd = sqrt(var);
    x = 1 / (1 + mean + 2 * sd + 0.005);
    return x < 0.8 ? 0.8L : x > 0.995 ? 0.995L : (long double)x;
}

void kvs_split_record(kvs_plan *p, kvs_shard *s)
{
    double got = (double)(s->got - s->got_at_cut), r;
    if (!(s->planned >= (double)p->cfg.page_size / 2) || got <= 0) return;
    r = got / s->planned - 1;
    if (r > 0.1) r = 0.1;       /* a range across a change of key shape says little */
    if (r < -0.1) r = -0.1;     /* about the next ones: the latest ranges count most */
    p->err_n = 0.9 * p->err_n + 1;
    p->err_sum = 0.9 * p->err_sum + r;
    p->err_sq = 0.9 * p->err_sq + r * r;
    p->err_chance = 0.9 * p->err_chance + (s->dens.disp > 0 ? s->dens.disp / s->planned : 0);
    s->planned = 0;
}

/* --- splitting ----------------------------------------------------------------------- */

static void num_of(const kvs_shard *s, const kvs_buf *key, kvs_ks_num *n)
{
    kvs_ks_from_key(&s->model, n, key->data, key->len);
}

static long double span_of(const kvs_shard *s, const kvs_ks_sample *x)
{
    kvs_ks_num a, b;
    num_of(s, &x->lo, &a);
    num_of(s, &x->hi, &b);
    return kvs_ks_span(&s->model, &a, &b);
}

/* Keys per unit of key space where shard s is cut: its own sample, pooled
 * with those of the latest pages that agree with it (within POOL_TOL), read
 * with its model.  One page of random keys misjudges how densely they lie
 * by 5% or so, and every range cut from it would be off the same way. */
static long double density(const kvs_plan *p, const kvs_shard *s)
{
    long double n = (long double)s->dens.n, span, sp, d;
    int j;
    if (s->dens.n <= 0 || !((span = span_of(s, &s->dens)) > 0)) return 0;
    for (j = 0; j < KVS_PLAN_POOL && j < p->pool_n; j++) {
        const kvs_ks_sample *x = &p->pool[(p->pool_n - 1 - j) % KVS_PLAN_POOL];
        if (x->n <= 0 || kvs_key_cmp(x->lo.data, x->lo.len, s->dens.lo.data, s->dens.lo.len) == 0
            || !((sp = span_of(s, x)) > 0))
            continue;
        d = (long double)x->n / sp;
        if (d > n / span * POOL_TOL || d * POOL_TOL < n / span) continue;
        n += (long double)x->n;
        span += sp;
    }
    return n / span;
}

/* The last range has seen no keys of its own yet: it reads how densely keys lie
 * from the nearest page behind its cursor, rather than from its parent's
 * (which, ranges after ranges, may lie far behind, where keys ran another
 * way).  0, or -1 out of memory. */
static int refresh(kvs_plan *p, kvs_shard *s)
{
    const kvs_ks_sample *best = NULL;
    int j;
    if (s->fed || s->has_hi || !s->has_cursor) return 0;
    for (j = 0; j < KVS_PLAN_POOL && j < p->pool_n; j++) {
        const kvs_ks_sample *x = &p->pool[j];
        if (x->n > 0 && kvs_key_cmp(x->hi.data, x->hi.len, s->cursor.data, s->cursor.len) <= 0
            && (!best || kvs_key_cmp(x->hi.data, x->hi.len, best->hi.data, best->hi.len) > 0))
            best = x;
    }
    if (!best || (s->dens.n > 0 && kvs_key_cmp(best->hi.data, best->hi.len, s->dens.hi.data,
                                               s->dens.hi.len) <= 0))
        return 0;
    kvs_ks_learn(&s->model, best->lo.data, best->lo.len);
    kvs_ks_learn(&s->model, best->hi.data, best->hi.len);
    return kvs_ks_sample_copy(&s->dens, best);
}

/* A page's sample joins the pool. */
static int remember(kvs_plan *p, const kvs_ks_sample *x)
{
    return kvs_ks_sample_copy(&p->pool[p->pool_n++ % KVS_PLAN_POOL], x);
}

/* Whether a boundary key for the last range s leaves the group of keys its
 * latest page showed (their common prefix) through a position that is not a
 * counter's digit: a separator ("crawlee-snapshot-zz" to "crawlee-snapshot.").  The model reads such a space as dense as the group, yet it is
 * mostly empty; so one range (a probe) opens at the group's end, g, and is
 * not cut before a page of its own shows what lies there.  A counter or a
 * random field carries ("item-0009" to "item-0010"): letters and digits may. */
static int past_group(const kvs_shard *s, const char *key, size_t len, kvs_ks_num *g)
{
    const kvs_buf *lo = &s->dens.lo, *hi = &s->dens.hi, *cur = &s->cursor;
    size_t c = 0, j = 0, i;
    while (c < lo->len && c < hi->len && lo->data[c] == hi->data[c]) c++;
    if (c < 4 || c >= lo->len || c >= hi->len || c > cur->len
        || memcmp(cur->data, hi->data, c) != 0) return 0;
    while (j < len && j < cur->len && key[j] == cur->data[j]) j++;
    for (i = j; i < c && !strchr("!'()-._", cur->data[i]); i++)
        ;
    if (i >= c) return 0;
    kvs_ks_top(&s->model, g, hi->data, c);
    return 1;
}

/* Shard i keeps (cursor, m]; a new shard after it gets (m, hi]: the cut, or 0
 * when there is no key strictly between cursor and hi there. */
static int cut_at(const kvs_plan *p, int i, const kvs_ks_num *m, kvs_cut *c)
{
    const kvs_shard *s = p->s[i];
    kvs_ks_num cur;
    if (p->n >= p->max_shards || !s->has_cursor) return 0;
    num_of(s, &s->cursor, &cur);
    c->at = i;
    c->handoff = c->probe = 0;
    c->len = kvs_ks_key(&s->model, m, &cur, c->key);
    if (!s->has_hi && s->dens.n >= 8) { /* the last range: see past_group */
        kvs_ks_num g;
        if (past_group(s, c->key, c->len, &g)) {
            c->len = kvs_ks_key(&s->model, &g, &cur, c->key);
            c->probe = 1;
        }
    }
    if (kvs_key_cmp(s->cursor.data, s->cursor.len, c->key, c->len) >= 0
        || (s->has_hi && kvs_key_cmp(c->key, c->len, s->hi.data, s->hi.len) >= 0))
        return 0;
    c->planned = 0;
    if (!c->probe) {            /* keys planned from the cursor to the new bound */
        kvs_ks_num b;
        kvs_ks_from_key(&s->model, &b, c->key, c->len);
        c->planned = (double)(density(p, s) * kvs_ks_span(&s->model, &cur, &b));
    }
    return 1;
}

/* The first page said more: boundaries past its end (see the top). */
void kvs_split_first(kvs_plan *p, const kvs_shard *s, size_t got, kvs_first_split *it)
{
    long double dens = density(p, s);
    it->from = s;
    it->on = dens > 0;
    if (!it->on) return;
    it->k = 0;
    it->mult = 1;
    it->need = p->remaining >= 0 ? p->remaining - (long long)got : -1;
    num_of(s, &s->cursor, &it->cur);
    kvs_ks_top(&s->model, &it->top, p->cfg.prefix, p->cfg.prefix_len);
    it->step = (long double)p->cfg.page_size * slack(p, s) / dens;
}

int kvs_split_first_next(kvs_plan *p, kvs_first_split *it, kvs_cut *c)
{
    kvs_ks_num b;
    if (!it->on || p->n >= p->parallel || it->mult > (long double)p->memory)
        return it->on = 0;
    kvs_ks_advance(&it->from->model, &b, &it->cur, it->step * it->mult);
    if (kvs_ks_cmp(&b, &it->top) >= 0 || !cut_at(p, p->n - 1, &b, c)) return it->on = 0;
    if (c->probe || (it->need >= 0 && it->mult * p->cfg.page_size >= (long double)it->need))
        it->on = 0;             /* this one is the last */
    it->k++;                    /* ordered: ranges of 1, 1, 2, 2, 3, ... pages, at most p->len,
                                   so that a store of a few pages is soon listed too */
    it->mult = p->ordered ? it->mult + (1 + it->k / 2 < p->len ? 1 + it->k / 2 : p->len)
                          : it->mult * 2;
    return 1;
}

/* Keys shard s is estimated to have left past the page it has in flight. */
static long double estimate(const kvs_plan *p, const kvs_shard *s, const kvs_ks_num *cur,
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
        kvs_ks_top(&s->model, &n, p->cfg.prefix, p->cfg.prefix_len);
        span = kvs_ks_span(&s->model, cur, &n);
        if (again < span) span = again;
    }
    est = dens * span - (s->inflight ? (long double)p->cfg.page_size : 0);
    if (p->remaining >= 0 && est > (long double)p->remaining) est = (long double)p->remaining;
    return est > 0 ? est : 0;
}

/* Pages' worth of key space new ranges may open past the greatest key a page
 * showed keys after: until a range past the first page has shown keys, the
 * whole memory (a range per request wanted in flight: the listing starts);
 * then what the requests of one round trip fetch and two ranges more, as the
 * ranges opened in the round trip before prove keys as far as they go.  Past
 * a store's end, up to that many pages' worth are probed. */
static int window(const kvs_plan *p)
{
    return p->fed_ranges > 1 ? p->parallel + 2 * p->len : p->memory;
}

/* How many keys shard i should keep of est, when it is cut (see the top);
 * < 0: it should not be. */
static long double keep_of(const kvs_plan *p, int i, const kvs_ks_num *cur, long double dens,
                           long double est)
{
    const kvs_shard *s = p->s[i];
    long double ps = (long double)p->cfg.page_size, keep = est / 2;
    if (!s->has_hi) {           /* the new last range: at most a window past the proof */
        kvs_ks_num pr;
        long double room = (long double)window(p) * ps - (s->inflight ? ps : 0);
        num_of(s, &p->proof, &pr);
        room -= dens * kvs_ks_span(&s->model, &pr, cur);
        if (room < ps / 2) return -1;
        if (keep > room) keep = room;
    }
    if (p->ordered) {           /* what it may fetch before it waits for its turn */
        int pages = p->len - (i > 0 ? s->npages : 0);     /* the slack over the whole range */
        if (pages > 1 + p->pages_in / 2) pages = 1 + (int)(p->pages_in / 2);   /* (see the top) */
        long double most = (long double)pages * ps * slack(p, s) - (s->inflight ? ps : 0);
        if (most < 0) most = 0;
        if (most < keep) keep = most;
    }
    return keep;
}

/* Whether a request slot is free that no range could take now, and a token
 * for it is in the bucket (unless `any`): a range is cut only then, so that
 * no more ranges are made than the pace can feed, and where each starts is
 * placed with the latest pages. */
static int idle_slot(const kvs_plan *p, int any)
{
    int i, free = p->parallel - p->inflight, reserve = 0;
    if (!any && free > (int)(p->tokens + 1e-9)) free = (int)(p->tokens + 1e-9);
    for (i = 0; i < p->n && p->ordered; i++)
        if (!p->s[i]->done) {       /* the room kept for the range handed out next */
            reserve = p->len - p->s[i]->npages - p->s[i]->inflight;
            break;
        }
    if (kvs_plan_pages_held(p) + reserve >= p->memory) return 0;
    for (i = 0; i < p->n && free > 0; i++) {
        const kvs_shard *s = p->s[i];
        if (!s->done && !s->inflight && s->npages < p->len) free--;
    }
    return free > 0;
}

int kvs_split_idle(const kvs_plan *p)
{
    return p->started && !p->failed && p->n < p->max_shards && idle_slot(p, 1);
}

/* While a request slot is idle and a token is there: ordered, a full range
 * waiting for its turn with keys left hands them to a new range (the one
 * request it needs goes now, rather than when its turn comes and every range
 * after it waits); else the range with the most work past what it keeps
 * (more than half a page of it: near the end, the last pages of the ranges
 * go side by side) is cut; one that cannot be cut there is skipped until no
 * cut is left to make. */

int kvs_split_next(kvs_plan *p, kvs_cut *c)
{
    long double ps = (long double)p->cfg.page_size;
    int i;
    if (p->n > 0 && refresh(p, p->s[p->n - 1]) != 0) return -1;
    while (p->started && !p->failed && p->n < p->max_shards && idle_slot(p, 0)) {
        int best = -1, head = -1;
        long double best_x = ps / 2, best_keep = 0, best_dens = 0, before = 0;
        kvs_ks_num cur, m;
        kvs_shard *s;
        for (i = 0; i < p->n && p->ordered; i++) {
            s = p->s[i];
            if (s->done) continue;
            if (head < 0) {
                head = i;
            } else if (!s->inflight && s->npages >= p->len && s->has_cursor && !s->skip) {
                c->at = i;
                c->handoff = 1;
                return 1;
            }
        }
        for (i = 0; i < p->n; i++) {
            long double est, keep, dens;
            s = p->s[i];
            if (p->remaining >= 0 && before >= (long double)p->remaining)
                break;              /* the ranges before it cover the limit */
            before += (long double)(s->npages + s->inflight) * ps;
            if (s->done || s->skip || !s->has_cursor || ((s->has_hi || s->probe) && !s->fed)
                || !((dens = density(p, s)) > 0))
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
        if (best_keep < ps / 4 && !s->inflight && s->npages >= p->len) {
            c->at = best;           /* full and waiting: all of it goes to a new range */
            c->handoff = 1;
            return 1;
        }
        num_of(s, &s->cursor, &cur);
        kvs_ks_advance(&s->model, &m, &cur, ((s->inflight ? ps : 0) + best_keep) / best_dens);
        if (cut_at(p, best, &m, c)) return 1;
        s->skip = 1;
    }
    for (i = 0; i < p->n; i++) p->s[i]->skip = 0;
    return 0;
}

/* --- what a page shows -------------------------------------------------------------- */

static const char *key_of(const kvs_page *pg, size_t i, size_t *len)
{
    *len = pg->items[i].key_len;
    return pg->bytes.data + pg->items[i].key_off;
}

/* The last range reaches to the top of the key space: past the prefix, its
 * first position may hold any character, not only the classes seen so far
 * (random keys listed from "!..." show only punctuation there for a while;
 * the top of such a model is ".zzz", and the store would seem to end). */
static void open_top(const kvs_plan *p, kvs_shard *s)
{
    static const char every[] = "!0AG_ag";     /* a character of each class */
    char key[KVS_KS_KEY_MAX + 1];
    size_t pl = p->cfg.prefix_len, i;
    s->model.cls[0] = p->model.cls[0];
    if (pl >= KVS_KS_KEY_MAX) return;
    if (pl) memcpy(key, p->cfg.prefix, pl);
    for (i = 0; every[i]; i++) {
        key[pl] = every[i];
        kvs_ks_learn(&s->model, key, pl + 1);
    }
}

/* The model shard s reads keys with after page pg: a bounded range's is
 * learnt from the page (and its bound) alone, so that other parts of the
 * store do not blur how its keys spread; the last range's is learnt from
 * every page, as it reaches to the top of the key space. */
static void local_model(kvs_plan *p, kvs_shard *s, const kvs_page *pg)
{
    size_t i, len;
    for (i = 0; i < pg->count; i++) {
        const char *k = key_of(pg, i, &len);
        kvs_ks_learn(&p->model, k, len);
    }
    if (pg->count > 1) {
        memset(&s->model, 0, sizeof s->model);
        if (s->has_hi) kvs_ks_learn(&s->model, s->hi.data, s->hi.len);
        else open_top(p, s);
    }
}

int kvs_split_learn(kvs_plan *p, kvs_shard *s, const kvs_page *pg)
{
    local_model(p, s, pg);
    if (kvs_ks_sample_page(&s->dens, &s->model, pg, !p->started) != 0) return -1;
    if (s->dens.disp >= 0)          /* how unevenly keys lie, over the latest pages */
        p->disp = p->disp < 0 ? s->dens.disp : 0.8 * p->disp + 0.2 * s->dens.disp;
    return remember(p, &s->dens);
}
