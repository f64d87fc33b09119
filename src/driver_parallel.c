/*
 * driver_parallel.c — store:keys{ parallel = n } on the client's libcurl multi handle:
 * plumbing under the planner of core_parallel.c, which decides what to send,
 * when, what to abort and which page comes next.  Here: one easy handle per
 * request in flight (all share the client's connection cache), replies fed
 * to the planner by request id, and the waiting: blocking under store:keys
 * (kvs_par_take), or none under the job (kvs_par_next, kvs_par_timeout,
 * kvs_par_sockets).  The transfers run on the client's multi handle
 * (driver_http.c), whose turns, from any listing, may finish them: each poll
 * takes those first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>       /* the easy handle's callbacks and CURLcodes */

#include "driver.h"
#include "platform.h"

typedef struct transfer {
    kvs_par  *par;
    kvs_conn *conn;
    unsigned  id;               /* 0: idle */
    int       stopped;          /* we cut the body short on purpose */
    int       timed_out;        /* ... because the attempt ran past its timeout */
    double    attempt_end;
} transfer;

struct kvs_par {
    const kvs_settings *settings;
    kvs_plan         *plan;
    transfer          t[KVS_PLAN_MAX];
    int               running;  /* transfers with an id */
    kvs_page          ready;    /* the job's next page, taken from the plan (kvs_par_next) */
    int               has_ready;
    char              msg[128];
};

/* --- callbacks: the reply to the planner, by request id ------------------------------ */

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
    transfer *t = ud;
    size_t len = size * n;
    kvs_header_line_parts h;
    switch (kvs_header_line(buf, len, &h)) {
    case KVS_LINE_STATUS: kvs_plan_reply_begin(t->par->plan, t->id, h.status); break;
    case KVS_LINE_HEADER:
        kvs_plan_reply_header(t->par->plan, t->id, h.name, h.name_len, h.value, h.value_len);
        break;
    case KVS_LINE_OTHER: break;
    }
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud)
{
    transfer *t = ud;
    size_t len = size * n;
    if (kvs_monotonic() > t->attempt_end) {   /* libcurl checks its timeout between chunks */
        t->stopped = t->timed_out = 1;
        return 0;
    }
    if (kvs_plan_reply_body(t->par->plan, t->id, buf, len) != 0) {
        t->stopped = 1;     /* the rest cannot change the verdict */
        return 0;
    }
    return len;
}

/* --- transfers ------------------------------------------------------------------------ */

static transfer *by_id(kvs_par *p, unsigned id)
{
    int i;
    for (i = 0; i < KVS_PLAN_MAX; i++)
        if (p->t[i].id == id) return &p->t[i];
    return NULL;
}

static void release(kvs_par *p, transfer *t)
{
    kvs_conn_remove(t->conn);           /* cancels it if still in flight */
    t->id = 0;
    p->running--;
}

static void cancel_aborted(kvs_par *p)
{
    unsigned id;
    while (kvs_plan_next_cancel(p->plan, &id)) {
        transfer *t = by_id(p, id);
        if (t) release(p, t);
    }
}

/* Adds what the planner says may go now to the multi handle (sent by the next turn). */
static void start_requests(kvs_par *p)
{
    kvs_plan_request req;
    while (kvs_plan_next_request(p->plan, kvs_monotonic(), &req)) {
        transfer *t = by_id(p, 0);
        CURL *easy;
        if (t && !t->conn) t->conn = kvs_conn_new(p->settings);
        if (!t || !t->conn) {
            kvs_plan_reply_end(p->plan, req.id, KVS_FAULT_NETWORK, "out of memory",
                               kvs_monotonic());
            continue;
        }
        t->id = req.id;
        t->stopped = t->timed_out = 0;
        t->attempt_end = kvs_monotonic() + p->settings->timeout;
        easy = kvs_conn_start(t->conn, NULL, &(kvs_request){ req.url, req.url_len, req.attempt });
        curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
        if (kvs_conn_add(t->conn) != 0) {
            t->id = 0;
            kvs_plan_reply_end(p->plan, req.id, KVS_FAULT_NETWORK,
                               "libcurl could not start the request", kvs_monotonic());
            continue;
        }
        p->running++;
    }
    cancel_aborted(p);
}

/* Hands the finished transfers to the planner; returns how many. */
static int harvest(kvs_par *p)
{
    int i, n = 0;
    for (i = 0; i < KVS_PLAN_MAX; i++) {
        transfer *t = &p->t[i];
        const char *msg = NULL;
        kvs_fault fault;
        unsigned id;
        CURLcode rc;
        if (!t->id || !kvs_conn_done(t->conn)) continue;
        rc = (CURLcode)kvs_conn_result(t->conn);
        if (rc == CURLE_WRITE_ERROR && t->timed_out) {
            snprintf(p->msg, sizeof p->msg, "the reply took more than %g s to arrive and decode",
                     p->settings->timeout);
            msg = p->msg;
            fault = KVS_FAULT_TIMEOUT;
        } else if (rc == CURLE_WRITE_ERROR && t->stopped) {
            fault = KVS_FAULT_NONE;
        } else {
            fault = kvs_conn_fault(t->conn, rc, &msg);
        }
        id = t->id;
        release(p, t);              /* msg lives in the conn, which stays */
        kvs_plan_reply_end(p->plan, id, fault, msg, kvs_monotonic());
        cancel_aborted(p);
        n++;
    }
    return n;
}

/* The work that is ready, without waiting.  A turn can finish the transfers it
 * sends (a reused connection, a reply already there): they are handed to the
 * planner before returning, never left for after a wait, which nothing would
 * end (no socket to wake it, no timer: libcurl is done with them).  Their
 * replies may let the next requests go: a few more turns do that at once. */
void kvs_par_poll(kvs_par *p)
{
    int round;
    harvest(p);                         /* what other listings' turns finished */
    for (round = 0; round < 3; round++) {
        if (kvs_plan_error(p->plan) || kvs_plan_finished(p->plan)) return;
        start_requests(p);
        if (p->running == 0) return;
        kvs_http_drive(p->settings->http);
        if (!harvest(p)) return;
    }
}

/* Blocks until a transfer moves, a retry is due or the bucket has a token. */
static void wait_some(kvs_par *p)
{
    double t = kvs_plan_timeout(p->plan, kvs_monotonic());
    int ms;
    if (t < 0 || t > 1.0) t = 1.0;
    if (p->running > 0) {
        long cms = kvs_http_timeout(p->settings->http);
        if (cms < 0) cms = 50;          /* no opinion (a transfer just added): look again soon */
        if ((double)cms / 1000.0 < t) t = (double)cms / 1000.0;
    }
    ms = (int)(t * 1000.0);
    if ((double)ms < t * 1000.0) ms++;
    if (p->running > 0) kvs_http_wait(p->settings->http, ms);
    else kvs_sleep((double)ms / 1000.0);
}

/* --- the API ----------------------------------------------------------------------------- */

kvs_par *kvs_par_new(const kvs_settings *c, const kvs_listing_config *cfg,
                     int parallel, double rate, int ordered)
{
    kvs_par *p = calloc(1, sizeof *p);
    int i;
    if (!p) return NULL;
    p->settings = c;
    kvs_http_attach(c->http);
    for (i = 0; i < KVS_PLAN_MAX; i++) p->t[i].par = p;
    kvs_page_init(&p->ready);
    p->plan = kvs_plan_new(cfg, parallel, rate, ordered);
    if (!p->plan) {
        kvs_par_free(p);
        return NULL;
    }
    return p;
}

void kvs_par_free(kvs_par *p)
{
    int i;
    if (!p) return;
    for (i = 0; i < KVS_PLAN_MAX; i++) {     /* cancels every transfer at once */
        if (p->t[i].id) release(p, &p->t[i]);
        kvs_conn_free(p->t[i].conn);
    }
    kvs_http_detach(p->settings->http);
    kvs_plan_free(p->plan);
    kvs_page_free(&p->ready);
    free(p);
}

size_t kvs_par_memory(const kvs_par *p)
{
    size_t n = sizeof *p + kvs_plan_memory(p->plan) + kvs_page_memory(&p->ready);
    int i;
    for (i = 0; i < KVS_PLAN_MAX; i++) n += kvs_conn_memory(p->t[i].conn);
    return n;
}

const kvs_error *kvs_par_error(const kvs_par *p)
{
    return kvs_plan_error(p->plan);
}

/* A page for the caller, and the requests the room it left lets go at once. */
static int try_take(kvs_par *p, kvs_page *mine)
{
    if (!kvs_plan_take_page(p->plan, mine)) return 0;
    cancel_aborted(p);                  /* the limit reached: the rest goes */
    kvs_par_poll(p);
    return 1;
}

static void cancel_all(kvs_par *p)
{
    int i;
    cancel_aborted(p);
    for (i = 0; i < KVS_PLAN_MAX; i++)
        if (p->t[i].id) release(p, &p->t[i]);
}

int kvs_par_take(kvs_par *p, kvs_page *mine)
{
    int round;
    for (round = 0;; round++) {
        if (try_take(p, mine)) return 1;
        if (kvs_plan_error(p->plan)) break;
        if (kvs_plan_finished(p->plan)) return 0;
        if (round % 2 == 0) kvs_par_poll(p);
        else if (kvs_http_shortages(p->settings->http)) return KVS_DRIVER_AGAIN;   /* before the retry's wait */
        else wait_some(p);              /* nothing ready after a poll: wait */
    }
    cancel_all(p);                      /* failed: every transfer goes */
    return -1;
}

/* --- without waiting: the job ------------------------------------------------------------- */

/* Keeps the plan's next page at hand, so that the job knows it has work now. */
static void fill_ready(kvs_par *p)
{
    if (!p->has_ready && try_take(p, &p->ready)) p->has_ready = 1;
}

int kvs_par_next(kvs_par *p, kvs_page *mine)
{
    fill_ready(p);
    if (p->has_ready) {
        kvs_page_swap(mine, &p->ready);
        p->has_ready = 0;
        fill_ready(p);
        return 1;
    }
    if (!kvs_plan_error(p->plan)) return 0;
    cancel_all(p);
    return -1;
}

int kvs_par_finished(kvs_par *p)
{
    return !p->has_ready && (kvs_plan_finished(p->plan) || kvs_plan_error(p->plan));
}

double kvs_par_timeout(kvs_par *p)
{
    double t;
    fill_ready(p);
    if (p->has_ready) return 0;
    if (kvs_plan_finished(p->plan) || kvs_plan_error(p->plan)) return -1;
    t = kvs_plan_timeout(p->plan, kvs_monotonic());   /* < 0: not before a reply */
    if (p->running > 0) {
        long ms = kvs_http_timeout(p->settings->http);
        double c = ms < 0 ? 0.05 : (double)ms / 1000.0;   /* no opinion: look again soon */
        int i;
        for (i = 0; i < KVS_PLAN_MAX; i++)      /* finished in another listing's turn */
            if (p->t[i].id && kvs_conn_done(p->t[i].conn)) c = 0;
        if (t < 0 || c < t) t = c;
    }
    return t < 0 ? 0.05 : t;
}

size_t kvs_par_sockets(const kvs_par *p, const kvs_socket **sockets)
{
    size_t n = kvs_http_sockets(p->settings->http, sockets);
    return p->running > 0 ? n : 0;
}

/* --- behind kvs_driver_ops (driver.h) ------------------------------------------------------ */

static void par_poll(void *d) { kvs_par_poll(d); }
static int par_next(void *d, kvs_page *mine) { return kvs_par_next(d, mine); }
static int par_take(void *d, kvs_page *mine) { return kvs_par_take(d, mine); }
static int par_finished(void *d) { return kvs_par_finished(d); }
static const kvs_error *par_error(void *d) { return kvs_par_error(d); }
static double par_timeout(void *d) { return kvs_par_timeout(d); }
static size_t par_sockets(void *d, const kvs_socket **s) { return kvs_par_sockets(d, s); }
static size_t par_memory(void *d) { return kvs_par_memory(d); }
static void par_free(void *d) { kvs_par_free(d); }

static const kvs_driver_ops parallel_ops = {
    par_poll, par_next, par_take, par_finished, par_error, par_timeout, par_sockets, par_memory,
    par_free
};

int kvs_driver_parallel(kvs_driver *out, const kvs_settings *s, const kvs_listing_config *cfg,
                        int parallel, double rate, int ordered)
{
    if (!(out->d = kvs_par_new(s, cfg, parallel, rate, ordered))) return -1;
    out->ops = &parallel_ops;
    return 0;
}
