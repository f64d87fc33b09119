/*
 * core_pace.c — how fast a parallel listing sends: a bucket refilled at
 * `rate` tokens per second, a token a request.  The rate follows
 * X-RateLimit-Limit (unless fixed); while it is at that limit the bucket
 * holds KVS_PLAN_BURST tokens, so that replies arriving together are followed
 * by their next requests together (requests in any span t: at most
 * KVS_PLAN_BURST + rate x t); a fixed rate, or one lowered after a 429, holds
 * one token: requests go out at least 1/rate apart.  A 429 empties the bucket
 * and, at most once a second, lowers the rate to a little under the rate the
 * server accepted over the second before it (the first page, which goes out
 * alone, left out), from where it climbs back by 2% of the limit a second.
 * No I/O, no clock: time comes as `now`.
 */
#include "core_plan_internal.h"

void kvs_pace_refill(kvs_plan *p, double now)
{
    double most = !p->rate_fixed && p->rate >= p->ceiling ? KVS_PLAN_BURST : 1;
    if (!p->clock_set) {
        p->clock_set = 1;
        p->refilled = now;
    }
    if (now > p->refilled && (p->tokens += (now - p->refilled) * p->rate) > most)
        p->tokens = most;
    if (now > p->refilled) p->refilled = now;
}

void kvs_pace_reply(kvs_plan *p, int limit, int status, double now)
{
    int i, seen = 0;
    double span, accepted;
    kvs_pace_refill(p, now);
    if (limit > 0 && !p->rate_fixed && (double)limit != p->ceiling) {
        if (p->rate >= p->ceiling || p->rate > limit) p->rate = limit;
        p->ceiling = limit;         /* the API's X-RateLimit-Limit, from now on */
    }
    if (status != 429) {
        if (p->first_ok < 0) p->first_ok = now;   /* the first page: it went alone */
        else p->ok_t[p->ok_n++ % KVS_PLAN_OK_RING] = now;
        if (p->rate < p->ceiling && now > p->climbed_at) {
            p->rate += p->ceiling * 0.02 * (now - p->climbed_at);
            if (p->rate > p->ceiling) p->rate = p->ceiling;
            p->climbed_at = now;
        }
        return;
    }
    p->st.throttled++;
    p->tokens = 0;
    if (now < p->cut_at + 1.0 && p->rate < p->ceiling) return;   /* one cut a second */
    for (i = 0; i < KVS_PLAN_OK_RING && i < p->ok_n; i++)
        if (p->ok_t[i] > now - 1.0) seen++;
    /* over the second before, or since the first page when that is shorter */
    span = p->first_ok >= 0 && now - p->first_ok < 1.0 ? now - p->first_ok : 1.0;
    accepted = seen / (span < 0.1 ? 0.1 : span);
    if (accepted < 1) accepted = 1;
    if (0.9 * accepted < p->rate) p->rate = 0.9 * accepted;
    p->cut_at = p->climbed_at = now;
}
