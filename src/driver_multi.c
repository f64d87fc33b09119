/*
 * driver_multi.c — the non-blocking transport on libcurl's multi interface.
 *
 * One listing, one easy handle inside a multi handle.  kvs_async_poll() does
 * only what is ready (socket I/O, decoding what arrived, starting the next
 * request once a retry deadline has passed) and returns at once; retry waits
 * are deadlines, never sleeps.  Used by the game-loop job (store:job) and,
 * with prefetch, under the blocking iterator (store:keys): page k+1 is in
 * flight while the loop body works through page k.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include <curl/curl.h>

#include "kvs.h"

struct kvs_async {
    CURLM       *multi;
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

kvs_async *kvs_async_new(const kvs_client *c, kvs_listing *l, int prefetch)
{
    kvs_async *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    kvs_page_init(&a->ready);
    a->multi = curl_multi_init();
    a->conn = kvs_conn_new(c);
    if (!a->multi || !a->conn) {
        kvs_async_free(a);
        return NULL;
    }
    a->listing = l;
    a->prefetch = prefetch;
    a->wanted = 1;
    return a;
}

void kvs_async_budget(kvs_async *a, double seconds)
{
    a->budget = seconds > 0 ? seconds : 0;
}

void kvs_async_free(kvs_async *a)
{
    if (!a) return;
    if (a->inflight)    /* cancels the transfer; its connection is not reused */
        curl_multi_remove_handle(a->multi, kvs_conn_handle(a->conn));
    kvs_conn_free(a->conn);
    if (a->multi) curl_multi_cleanup(a->multi);
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
    if (curl_multi_add_handle(a->multi, kvs_conn_start(a->conn, a->listing, &req)) != CURLM_OK) {
        double wait;
        kvs_listing_reply_end(a->listing, KVS_FAULT_NETWORK, "libcurl could not start the request",
                              monotonic(), &wait);
        return 0;
    }
    a->inflight = 1;
    return 1;
}

/* Hands a finished transfer to the core. */
static void finish_transfer(kvs_async *a, CURLcode rc)
{
    const char *msg;
    double wait;
    kvs_fault fault = kvs_conn_fault(a->conn, rc, &msg);
    curl_multi_remove_handle(a->multi, kvs_conn_handle(a->conn));
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
    for (round = 0; round < 3; round++) {   /* a retry due at once may start right away */
        int running;
        CURLMsg *m;
        int left;
        start_next(a);
        if (!a->inflight) return;
        kvs_conn_budget(a->conn, a->budget > 0 ? monotonic() + a->budget : 0);
        curl_multi_perform(a->multi, &running);
        while ((m = curl_multi_info_read(a->multi, &left)) != NULL)
            if (m->msg == CURLMSG_DONE) finish_transfer(a, m->data.result);
        if (a->inflight || a->has_ready) return;
    }
}

int kvs_async_take(kvs_async *a, kvs_page *mine)
{
    kvs_page tmp;
    if (!a->has_ready) {
        a->wanted = 1;
        return 0;
    }
    tmp = *mine;
    *mine = a->ready;
    a->ready = tmp;
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
    long ms = -1;
    if (a->has_ready || (a->inflight && kvs_conn_paused(a->conn))) return 0;
    if (a->inflight) {
        curl_multi_timeout(a->multi, &ms);
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
        curl_multi_poll(a->multi, NULL, 0, (int)(t * 1000.0 + 0.5), NULL);
    else
        kvs_sleep(t);
}

int kvs_async_sockets(kvs_async *a, int *fds, int *events, int cap)
{
    fd_set r, w, x;
    int maxfd = -1, fd, n = 0;
    if (!a->inflight) return 0;
    FD_ZERO(&r); FD_ZERO(&w); FD_ZERO(&x);
    if (curl_multi_fdset(a->multi, &r, &w, &x, &maxfd) != CURLM_OK) return 0;
    for (fd = 0; fd <= maxfd && n < cap; fd++) {
        int ev = (FD_ISSET(fd, &r) ? 1 : 0) | (FD_ISSET(fd, &w) ? 2 : 0);
        if (ev) { fds[n] = fd; events[n] = ev; n++; }
    }
    return n;
}
