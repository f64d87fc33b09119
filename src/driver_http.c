/*
 * driver_http.c — what one client's transfers share (kvs_http): the CURLSH
 * (connections, DNS answers, TLS sessions) and the one libcurl multi handle
 * every listing of the client runs its transfers on, with the table of the
 * sockets they wait on.
 *
 * One multi handle per client, not per listing: a multi handle keeps a
 * wake-up descriptor pair, and whoever turns it moves every transfer of the
 * client.  So a listing a program dropped without close() with a request in
 * flight has its reply read at the next turn of any other listing of the
 * client, and its connection goes back to the cache for the next request:
 * it holds no descriptor of its own once the client is used again, however
 * long the garbage collector takes to get to it.  A finished transfer is
 * taken out of the handle and noted in its kvs_conn, for its own listing to
 * take when that is driven: no listing's reply is judged (nor its on_retry
 * called) inside another's call.  The handle lives while a driver (a listing
 * not yet finished, closed or collected) uses it: an idle client holds only
 * its cached connections.
 *
 * libcurl tells which sockets it waits on, and for what, through
 * CURLMOPT_SOCKETFUNCTION; the table keeps them whatever their number or
 * descriptor value (unlike curl_multi_fdset, which skips descriptors >=
 * FD_SETSIZE), for job:sockets().  Only curl_multi_socket_action keeps it
 * current, so the transfers are driven through it rather than by
 * curl_multi_perform.
 */
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "driver.h"

typedef struct socket_table {
    kvs_socket *s;
    size_t      n, cap;
    int         untracked;     /* one could not be recorded (out of memory) */
} socket_table;

struct kvs_http {
    CURLSH      *share;
    CURLM       *multi;        /* made on first use, freed when no driver uses it */
    int          users;        /* drivers made on it and not freed */
    socket_table sockets;
    int          shortages;    /* descriptor shortages met, not yet taken */
};

int kvs_http_global_init(void)
{
    static int done = 0;
    if (!done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return -1;
        done = 1;
    }
    return 0;
}

const char *kvs_http_version(void)
{
    static char v[48];
    if (!v[0])
        snprintf(v, sizeof v, "libcurl/%s", curl_version_info(CURLVERSION_NOW)->version);
    return v;
}

kvs_http *kvs_http_new(void)
{
    kvs_http *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->share = curl_share_init();
    if (!h->share) { free(h); return NULL; }
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    return h;
}

void kvs_http_free(kvs_http *h)
{
    if (!h) return;
    if (h->multi) curl_multi_cleanup(h->multi);   /* every transfer was removed */
    free(h->sockets.s);
    curl_share_cleanup(h->share);
    free(h);
}

void *kvs_http_share(kvs_http *h)
{
    return h->share;
}

void kvs_http_shortage(kvs_http *h)
{
    h->shortages++;
}

int kvs_http_shortages(const kvs_http *h)
{
    return h->shortages;
}

int kvs_http_take_shortages(kvs_http *h)
{
    int n = h->shortages;
    h->shortages = 0;
    return n;
}

/* --- the multi handle ------------------------------------------------------------------ */

/* CURLMOPT_SOCKETFUNCTION: libcurl starts, changes or stops waiting on `fd`. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    socket_table *t = userp;
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
                t->untracked = 1;       /* kvs_http_drive falls back to curl_multi_perform */
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

void kvs_http_attach(kvs_http *h)
{
    h->users++;
}

void kvs_http_detach(kvs_http *h)
{
    if (--h->users > 0 || !h->multi) return;
    curl_multi_cleanup(h->multi);       /* its drivers removed their transfers */
    h->multi = NULL;
    h->sockets.n = 0;
    h->sockets.untracked = 0;
}

int kvs_http_add(kvs_http *h, void *easy)
{
    if (!h->multi) {
        if (!(h->multi = curl_multi_init())) return -1;
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, &h->sockets);
    }
    return curl_multi_add_handle(h->multi, easy) == CURLM_OK ? 0 : -1;
}

void kvs_http_remove(kvs_http *h, void *easy)
{
    curl_multi_remove_handle(h->multi, easy);   /* one in flight is cancelled */
}

/* One turn: libcurl looks at each socket it waits on itself (an event mask of
 * 0: nothing claimed ready), then runs the timers that are due (a transfer just
 * added or resumed, timeouts); the transfers that finished go to their conns. */
void kvs_http_drive(kvs_http *h)
{
    socket_table *t = &h->sockets;
    CURLMsg *m;
    int running, left;
    size_t i;
    if (!h->multi) return;
    for (i = t->n; i-- > 0;)            /* the callback may shrink the table meanwhile */
        if (i < t->n)
            curl_multi_socket_action(h->multi, t->s[i].fd, 0, &running);
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (t->untracked) curl_multi_perform(h->multi, &running);
    while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;   /* m is gone once the handle is removed */
        char *conn = NULL;
        if (m->msg != CURLMSG_DONE) continue;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &conn);
        curl_multi_remove_handle(h->multi, easy);
        kvs_conn_ended((kvs_conn *)(void *)conn, rc);
    }
}

long kvs_http_timeout(kvs_http *h)
{
    long ms = -1;
    if (h->multi) curl_multi_timeout(h->multi, &ms);
    return ms;
}

void kvs_http_wait(kvs_http *h, int ms)
{
    if (h->multi) curl_multi_poll(h->multi, NULL, 0, ms, NULL);
}

size_t kvs_http_sockets(const kvs_http *h, const kvs_socket **sockets)
{
    *sockets = h->sockets.s;
    return h->sockets.n;
}
