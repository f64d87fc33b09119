/*
 * lua_listing.h — the listing userdata shared by the Lua binding files: the
 * blocking iterator (lua_listing.c), the game-loop job (lua_job.c) and the
 * sans-I/O methods for drivers of one's own (lua_sansio.c).
 */
#ifndef APIFY_KVS_LUA_LISTING_H
#define APIFY_KVS_LUA_LISTING_H

#include "kvs.h"

#pragma GCC visibility push(hidden)

/* Seconds of decoding one job:poll() may do before it leaves the rest of the
 * body for the next poll: a 1000-key page is spread over a few frames. */
#define KVS_JOB_POLL_BUDGET 0.0004

typedef enum { L_RUNNING, L_DONE, L_FAILED, L_CANCELLED } run_t;

/* Which call made a listing userdata: each kind has methods of its own. */
typedef enum {
    KIND_KEYS,              /* store:keys, the iterator's state */
    KIND_PARALLEL,          /* store:keys{ parallel = n } (or rate_limit) */
    KIND_LISTING,           /* store:listing: sans-I/O, driven by the caller */
    KIND_JOB                /* store:job */
} listing_kind;

typedef struct listing_ud {
    listing_kind kind;      /* set where it is made, never changed */
    kvs_client  *client;
    kvs_listing *core;
    kvs_async   *async;     /* libcurl multi driver (keys, job); NULL: sans-I/O */
    kvs_par     *par;       /* keys{ parallel = n }: key ranges side by side */
    kvs_page     page;      /* the page being handed out */
    size_t       pos;       /* next item of `page` */
    run_t        run;
    kvs_error    err;       /* when run == L_FAILED */
    int          prefetch;
    long long    budget;    /* job: keys poll() may still hand out */
    kvs_retry_hook hook;    /* hook.L: set by every call that may drive the listing */
} listing_ud;

listing_ud *kvs_check_listing(lua_State *L, int idx);
/* The listing userdata at idx if it is of `kind`; else raises like a type
 * error: "apify.kvs.listing expected, got apify.kvs.keys". */
listing_ud *kvs_check_kind(lua_State *L, int idx, listing_kind kind);
/* Pushes key, size, url of the next item of the current page; returns 3. */
int  kvs_push_item(lua_State *L, listing_ud *u);
/* Lets go of driver, core and buffers, keeping a failure's error. */
void kvs_listing_release(lua_State *L, listing_ud *u);
/* Starts the libcurl multi driver of `u` if it has none; raises on OOM. */
void kvs_listing_drive(lua_State *L, listing_ud *u);
/* Records how the driver ended: done, or failed with the core's error. */
void kvs_listing_settle(lua_State *L, listing_ud *u);

void kvs_open_sansio(lua_State *L, int methods_idx);
void kvs_open_job(lua_State *L, int methods_idx);

#pragma GCC visibility pop

#endif
