/*
 * driver_sequential.c — the one-range driver of store:keys{} and store:job{} behind
 * kvs_driver_ops (driver.h): a paging core (core_listing.c) that it owns, driven page after
 * page by the libcurl multi driver (driver_multi.c).  The multi driver is made at the first
 * poll or take, so a listing that is never iterated holds no transfer state.
 */
#include <stdio.h>
#include <stdlib.h>

#include "driver.h"

typedef struct sequential {
    const kvs_settings *settings;
    kvs_listing        *core;
    kvs_async          *async;     /* NULL until first driven */
    int                 prefetch;
    double              budget;
    int                 oom;       /* the multi driver could not be made */
    kvs_error           oom_err;
} sequential;

/* The multi driver, made on first use; NULL (and an error) when out of memory. */
static kvs_async *driven(sequential *q)
{
    if (!q->async && !q->oom) {
        if ((q->async = kvs_async_new(q->settings, q->core, q->prefetch)) != NULL) {
            kvs_async_budget(q->async, q->budget);
        } else {
            q->oom = 1;
            snprintf(q->oom_err.type, sizeof q->oom_err.type, "%s", KVS_ERR_MEMORY);
            snprintf(q->oom_err.message, sizeof q->oom_err.message, "out of memory");
        }
    }
    return q->async;
}

static void seq_poll(void *d)
{
    kvs_async *a = driven(d);
    if (a) kvs_async_poll(a);
}

static const kvs_error *seq_error(void *d)
{
    sequential *q = d;
    if (q->oom) return &q->oom_err;
    return kvs_listing_failed(q->core) ? kvs_listing_error(q->core) : NULL;
}

static int seq_finished(void *d)
{
    sequential *q = d;
    if (q->oom) return 1;
    return q->async ? kvs_async_finished(q->async) : kvs_listing_finished(q->core);
}

static int seq_next(void *d, kvs_page *mine)
{
    kvs_async *a = driven(d);
    if (a && kvs_async_take(a, mine)) return 1;
    if (!seq_finished(d)) return 0;
    return seq_error(d) ? -1 : 0;
}

static int seq_take(void *d, kvs_page *mine)
{
    kvs_async *a = driven(d);
    int rc;
    if (a) kvs_async_poll(a);
    if ((rc = seq_next(d, mine)) != 0 || seq_finished(d)) return rc;
    kvs_async_wait(a, 1.0);
    return KVS_DRIVER_AGAIN;
}

static double seq_timeout(void *d)
{
    kvs_async *a = driven(d);
    return a ? kvs_async_timeout(a) : -1;
}

static size_t seq_sockets(void *d, const kvs_socket **sockets)
{
    sequential *q = d;
    *sockets = NULL;
    return q->async ? kvs_async_sockets(q->async, sockets) : 0;
}

static size_t seq_memory(void *d)
{
    sequential *q = d;
    return sizeof *q + kvs_listing_memory(q->core) + (q->async ? kvs_async_memory(q->async) : 0);
}

static void seq_free(void *d)
{
    sequential *q = d;
    kvs_async_free(q->async);           /* first: it drives the core */
    kvs_listing_free(q->core);
    free(q);
}

static const kvs_driver_ops sequential_ops = {
    seq_poll, seq_next, seq_take, seq_finished, seq_error, seq_timeout, seq_sockets, seq_memory,
    seq_free
};

int kvs_driver_sequential(kvs_driver *out, const kvs_settings *s, const kvs_listing_config *cfg,
                          int prefetch, double budget)
{
    sequential *q = calloc(1, sizeof *q);
    if (!q) return -1;
    if (!(q->core = kvs_listing_new(cfg))) {
        free(q);
        return -1;
    }
    q->settings = s;
    q->prefetch = prefetch;
    q->budget = budget;
    out->ops = &sequential_ops;
    out->d = q;
    return 0;
}
