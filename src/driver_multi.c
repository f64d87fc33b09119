/*
 * driver_multi.c — the non-blocking transport of one listing, on the
 * client's libcurl multi handle (driver_http.c).
 *
 * One listing, one easy handle.  kvs_async_poll() does only what is ready
 * (socket I/O, decoding what arrived, starting the next request once a retry
 * deadline has passed) and returns at once; retry waits are deadlines, never
 * sleeps.  Used by the game-loop job (store:job) and, with prefetch, under
 * the blocking iterator (store:keys): page k+1 is in flight while the loop
 * body works through page k.  A turn of the client's multi handle, from any
 * listing, may finish this one's transfer: it is taken at the next poll.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver.h"
#include "platform.h"

struct kvs_async {
    kvs_http    *http;          /* the client's: its multi handle */
    kvs_conn    *conn;
    kvs_listing *listing;
    kvs_page     ready;         /* a decoded page nobody has taken yet */
    int          has_ready;
    int          inflight;
    int          prefetch;
    int          wanted;        /* without prefetch: a page was asked for */
    double       retry_at;      /* monotonic seconds; 0: no retry pending */
    double       budget;        /* seconds of body work per poll; 0: no limit */
};

#define monotonic kvs_monotonic

kvs_async *kvs_async_new(const kvs_settings *c, kvs_listing *l, int prefetch)
{
    kvs_async *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    kvs_page_init(&a->ready);
    a->http = c->http;
    kvs_http_attach(a->http);
    a->conn = kvs_conn_new(c);
    if (!a->conn) {
        kvs_async_free(a);
        return NULL;
    }
    a->listing = l;
    a->prefetch = prefetch;
    a->wanted = 1;
    return a;
}

size_t kvs_async_memory(const kvs_async *a)
{
    return sizeof *a + kvs_conn_memory(a->conn) + kvs_page_memory(&a->ready);
}

void kvs_async_budget(kvs_async *a, double seconds)
{
    a->budget = seconds > 0 ? seconds : 0;
}

void kvs_async_free(kvs_async *a)
{
    if (!a) return;
    kvs_conn_free(a->conn);    /* cancels a transfer in flight; its connection is not reused */
    kvs_http_detach(a->http);
    kvs_page_free(&a->ready);
    free(a);
}

/* Starts the next request if one is due; 0 when there is nothing to start. */
static int start_next(kvs_async *a)
{
    kvs_request req;
    if (a->inflight || a->has_ready || !a->wanted) return 0;
    if (a->retry_at > 0) {
        if (monotonic() < a->retry_at) return 0;
        a->retry_at = 0;
    }
    if (!kvs_listing_next_request(a->listing, &req)) return 0;
    kvs_conn_start(a->conn, a->listing, &req);
    if (kvs_conn_add(a->conn) != 0) {
        double wait;
        kvs_listing_reply_end(a->listing, KVS_FAULT_NETWORK, "libcurl could not start the request",
                              monotonic(), &wait);
        return 0;
    }
    a->inflight = 1;
    return 1;
}

/* Hands the transfer to the core once it is over (here or in another listing's turn). */
static void take_finished(kvs_async *a)
{
    const char *msg;
    double wait;
    kvs_fault fault;
    if (!a->inflight || !kvs_conn_done(a->conn)) return;
    fault = kvs_conn_fault(a->conn, kvs_conn_result(a->conn), &msg);
    a->inflight = 0;
    switch (kvs_listing_reply_end(a->listing, fault, msg, monotonic(), &wait)) {
    case KVS_STEP_PAGE:
        kvs_listing_take_page(a->listing, &a->ready);
        a->has_ready = 1;
        a->wanted = a->prefetch;
        break;
    case KVS_STEP_RETRY:
        a->retry_at = monotonic() + wait;
        break;
    case KVS_STEP_FAILED:
        break;
    }
}

void kvs_async_poll(kvs_async *a)
{
    int round;
    take_finished(a);
    for (round = 0; round < 3; round++) {   /* a retry due at once may start right away */
        start_next(a);
        if (!a->inflight) return;
        kvs_conn_budget(a->conn, a->budget > 0 ? monotonic() + a->budget : 0);
        kvs_http_drive(a->http);
        take_finished(a);
        if (a->inflight || a->has_ready) return;
    }
}

int kvs_async_take(kvs_async *a, kvs_page *mine)
{
    if (!a->has_ready) {
        a->wanted = 1;
        return 0;
    }
    kvs_page_swap(mine, &a->ready);
    a->has_ready = 0;
    /* without prefetch, the next page is wanted only once this one is used up */
    a->wanted = a->prefetch;
    if (a->prefetch) kvs_async_poll(a);   /* the next page is on its way at once */
    return 1;
}

int kvs_async_finished(const kvs_async *a)
{
    return !a->inflight && !a->has_ready && a->retry_at == 0 && kvs_listing_finished(a->listing);
}

double kvs_async_timeout(kvs_async *a)
{
    long ms;
    if (a->has_ready || (a->inflight && (kvs_conn_paused(a->conn) || kvs_conn_done(a->conn))))
        return 0;
    if (a->inflight) {
        ms = kvs_http_timeout(a->http);
        return ms < 0 ? 0.05 : (double)ms / 1000.0;  /* no opinion: look again soon */
    }
    if (a->retry_at > 0) {
        double left = a->retry_at - monotonic();
        return left > 0 ? left : 0;
    }
    return kvs_listing_finished(a->listing) ? -1 : 0;
}

void kvs_async_wait(kvs_async *a, double max)
{
    double t = kvs_async_timeout(a);
    if (t < 0 || t > max) t = max;
    if (t <= 0) return;
    if (a->inflight)
        kvs_http_wait(a->http, (int)(t * 1000.0 + 0.5));
    else
        kvs_sleep(t);
}

size_t kvs_async_sockets(const kvs_async *a, const kvs_socket **sockets)
{
    size_t n = kvs_http_sockets(a->http, sockets);
    return a->inflight ? n : 0;
}
