/*
 * driver_multi.c — the non-blocking transport on libcurl's multi interface.
 *
 * One listing, one easy handle inside a multi handle.  kvs_async_poll() does
 * only what is ready (socket I/O, decoding what arrived, starting the next
 * request once a retry deadline has passed) and returns at once; retry waits
 * are deadlines, never sleeps.  Used by the game-loop job (store:job) and,
 * with prefetch, under the blocking iterator (store:keys): page k+1 is in
 * flight while the loop body works through page k.
 *
 * libcurl tells which sockets it waits on, and for what, through
 * CURLMOPT_SOCKETFUNCTION (libcurl >= 7.15.4); the driver keeps them in a
 * small growable table, whatever their number or descriptor value (unlike
 * curl_multi_fdset, which skips descriptors >= FD_SETSIZE), for job:sockets().
 * That table is only kept current by curl_multi_socket_action, so the
 * transfers are driven through it rather than by curl_multi_perform.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "driver.h"
#include "platform.h"

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
    kvs_sockets  sockets;       /* what libcurl waits on, as its socket callback says */
};

#define monotonic kvs_monotonic

/* CURLMOPT_SOCKETFUNCTION: libcurl starts, changes or stops waiting on `fd`. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    kvs_sockets *t = userp;
    size_t i;
    (void)easy;
    (void)socketp;
    for (i = 0; i < t->n && t->s[i].fd != fd; i++) {}
    if (what == CURL_POLL_REMOVE) {
        if (i < t->n) t->s[i] = t->s[--t->n];
        return 0;
    }
    if (i == t->n) {
        if (t->n == t->cap) {
            size_t cap = t->cap ? 2 * t->cap : 4;
            kvs_socket *grown = realloc(t->s, cap * sizeof *grown);
            if (!grown) {
                t->untracked = 1;       /* kvs_sockets_drive falls back to curl_multi_perform */
                return 0;
            }
            t->s = grown;
            t->cap = cap;
        }
        t->s[t->n++].fd = fd;
    }
    t->s[i].events = what & (CURL_POLL_IN | CURL_POLL_OUT);   /* 1 read, 2 write */
    return 0;
}

void kvs_sockets_track(void *multi, kvs_sockets *t)
{
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, t);
}

/* One turn of the transfers: libcurl looks at each socket it waits on itself
 * (an event mask of 0: nothing claimed ready), then runs the timers that are
 * due (a transfer just added or resumed, timeouts). */
void kvs_sockets_drive(void *multi, kvs_sockets *t)
{
    int running;
    size_t i;
    for (i = t->n; i-- > 0;)            /* the callback may shrink the table meanwhile */
        if (i < t->n)
            curl_multi_socket_action(multi, t->s[i].fd, 0, &running);
    curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (t->untracked) curl_multi_perform(multi, &running);
}

void kvs_sockets_free(kvs_sockets *t)
{
    free(t->s);
    t->s = NULL;
    t->n = t->cap = 0;
}

kvs_async *kvs_async_new(const kvs_settings *c, kvs_listing *l, int prefetch)
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
    kvs_sockets_track(a->multi, &a->sockets);
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
    kvs_sockets_free(&a->sockets);      /* after: removing the handle reports to it */
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
        CURLMsg *m;
        int left;
        start_next(a);
        if (!a->inflight) return;
        kvs_conn_budget(a->conn, a->budget > 0 ? monotonic() + a->budget : 0);
        kvs_sockets_drive(a->multi, &a->sockets);
        while ((m = curl_multi_info_read(a->multi, &left)) != NULL)
            if (m->msg == CURLMSG_DONE) finish_transfer(a, m->data.result);
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

size_t kvs_async_sockets(const kvs_async *a, const kvs_socket **sockets)
{
    *sockets = a->sockets.s;
    return a->inflight ? a->sockets.n : 0;
}
