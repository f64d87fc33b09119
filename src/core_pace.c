/*
 * core_pace.c — how fast a parallel listing sends, and how many requests it
 * keeps in flight.
 *
 * A bucket refilled at `rate` tokens per second, a token a request.  The
 * rate follows X-RateLimit-Limit (unless fixed); while it is at that limit
 * the bucket holds KVS_PLAN_BURST tokens, so that replies arriving together
 * are followed by their next requests together (requests in any span t: at
 * most KVS_PLAN_BURST + rate x t); a fixed rate, or one lowered after a 429,
 * holds one token: requests go out at least 1/rate apart.  A 429 empties the
 * bucket and, at most once a second, lowers the rate to a little under the
 * rate the server accepted over the second before it (the first page, which
 * goes out alone, left out), from where it climbs back by 2% of the limit a
 * second; a 429's Retry-After holds every request back until it has passed.
 *
 * Requests in flight: as many as the rate times the round trip asks for
 * (Little's law), with the round trip measured on every reply (smoothed, plus
 * twice its mean deviation, so that slower replies do not leave a token
 * unused) and one more, at most `cap`.  A lower rate or shorter round trips
 * shrink it again.  No I/O, no clock: time comes as `now`.
 */
#include <math.h>

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

double kvs_pace_wait(const kvs_plan *p, double now)
{
    double t = p->tokens >= 1 - 1e-9 ? 0 : (1 - p->tokens) / p->rate;  /* (rounding: a token
                                                                           due now is here) */
    return p->hold_until - now > t ? p->hold_until - now : t;
}

void kvs_pace_share(kvs_plan *p)
{
    int mem = p->parallel > 1 && KVS_PLAN_MEMORY > 3 * p->parallel ? KVS_PLAN_MEMORY
            : 3 * p->parallel;
    p->len = mem / p->parallel > KVS_PLAN_PAGES ? KVS_PLAN_PAGES : mem / p->parallel;
    p->memory = p->len * p->parallel;
}

/* Requests wanted in flight: rate x round trip, and one for the spread of replies. */
static void concurrency(kvs_plan *p, double rtt)
{
    double want;
    if (rtt >= 0) {
        if (p->srtt <= 0) {
            p->srtt = rtt;
            p->rttvar = rtt / 8;
        } else {
            p->rttvar = 0.75 * p->rttvar + 0.25 * fabs(rtt - p->srtt);
            p->srtt = 0.875 * p->srtt + 0.125 * rtt;
        }
    }
    want = ceil(p->rate * (p->srtt + 2 * p->rttvar)) + 1;
    p->parallel = want >= p->cap ? p->cap : want < 1 ? 1 : (int)want;
    p->max_shards = p->parallel > 1 ? 2 * p->parallel : 1;
    kvs_pace_share(p);
}

void kvs_pace_reply(kvs_plan *p, int status, int limit, double retry_after, double rtt,
                    double now)
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
        concurrency(p, rtt);
        return;
    }
    p->st.throttled++;
    p->tokens = 0;
    if (retry_after > 0 && now + retry_after > p->hold_until) p->hold_until = now + retry_after;
    if (now < p->cut_at + 1.0 && p->rate < p->ceiling) return;   /* one cut a second */
    for (i = 0; i < KVS_PLAN_OK_RING && i < p->ok_n; i++)
        if (p->ok_t[i] > now - 1.0) seen++;
    /* over the second before, or since the first page when that is shorter */
    span = p->first_ok >= 0 && now - p->first_ok < 1.0 ? now - p->first_ok : 1.0;
    accepted = seen / (span < 0.1 ? 0.1 : span);
    if (accepted < 1) accepted = 1;
    if (0.9 * accepted < p->rate) p->rate = 0.9 * accepted;
    p->cut_at = p->climbed_at = now;
    concurrency(p, -1);
}
