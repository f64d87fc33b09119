/*
 * lua_listing.h — the listing state that the three kinds of listing share:
 * apify.kvs.keys (lua_keys.c), apify.kvs.listing (lua_sansio.c) and
 * apify.kvs.job (lua_job.c).  Each kind is a type of its own, with its own
 * metatable and methods; this is the state inside, not a type.
 */
#ifndef APIFY_KVS_LUA_LISTING_H
#define APIFY_KVS_LUA_LISTING_H

#include <stdint.h>

#include "lua_aux.h"
#include "lua_options.h"

#pragma GCC visibility push(hidden)

#define KVS_KEYS_MT    "apify.kvs.keys"
#define KVS_LISTING_MT "apify.kvs.listing"
#define KVS_JOB_MT     "apify.kvs.job"

/* Seconds of decoding one job:poll() may do before it leaves the rest of the
 * body for the next poll: a 1000-key page is spread over a few frames. */
#define KVS_JOB_POLL_BUDGET 0.0004


typedef enum { L_RUNNING, L_DONE, L_FAILED, L_CANCELLED } run_t;

/* What an iterator reads of the page being handed out.  The LuaJIT FFI
 * iterators (lua_ffi.c) read and advance it in place: it declares the same
 * layout and checks it against these sizes and offsets at load time. */
typedef struct kvs_view {
    const kvs_item *items;    /* the page's items, NULL when none */
    const char     *bytes;    /* the page's key and url bytes */
    int32_t         pos;      /* next item to hand out */
    int32_t         count;    /* items of the page (at most KVS_MAX_PAGE_SIZE) */
    double          budget;   /* job: keys this poll may still hand out; < 0: no cap */
    int32_t         urls;     /* hand out recordPublicUrl (option urls, default true) */
} kvs_view;

typedef struct listing_ud {
    kvs_view     view;        /* first: the FFI iterators get the userdata's address */
    kvs_client  *client;      /* NULL once released */
    kvs_listing *core;        /* listing (sans-I/O): the paging core its caller drives */
    kvs_driver   drv;         /* keys, job: the driver (driver.h) that moves the bytes */
    kvs_page     page;        /* the page being handed out */
    run_t        run;
    kvs_error    err;         /* when run == L_FAILED */
    size_t       charged;     /* bytes of C memory the garbage collector was told of */
    kvs_retry_hook hook;      /* hook.L: set by every call that may drive the listing */
    kvs_http_reader *http;    /* listing: the reply of http_request() read from raw bytes */
} listing_ud;

/* The client's on_retry function as the core's hook; `ud` is a kvs_retry_hook. */
int  kvs_call_on_retry(void *ud, const kvs_error *e, int attempt, double delay,
                       char *why, size_t why_cap);
/* The core's config of every kind of listing (the plan's too), from the client, the store id
 * and the options read: strings point into the options table; the seed is option `seed`, or
 * one that differs per call (`hook` is its salt). */
void kvs_read_config(lua_State *L, kvs_client *c, const char *id, const kvs_opts *o,
                     kvs_listing_config *cfg, kvs_retry_hook *hook);

/* For store 1 with options 2 (read for `call` into `o`): pushes a new listing
 * userdata of class `mt` holding a reference to the client, and fills `cfg`
 * (the core not made yet).  With `iterator_slot` the userdata keeps one Lua
 * value (the listing's iterator, kvs_keep_iterator). */
listing_ud *kvs_new_listing(lua_State *L, unsigned call, const char *mt, kvs_opts *o,
                            kvs_listing_config *cfg, int iterator_slot);
/* Makes the paging core of `u` from `cfg`, for a caller that drives it; raises on OOM. */
void kvs_listing_start(lua_State *L, listing_ud *u, const kvs_listing_config *cfg);
/* Makes the driver of `u`: key ranges side by side (parallel = "auto" by default, or n, or
 * rate_limit), else (parallel = 1, or prefetch = false without parallel) one range page
 * after page (prefetch, budget: see kvs_driver_sequential); raises on OOM. */
void kvs_listing_start_driver(lua_State *L, listing_ud *u, const kvs_opts *o,
                              const kvs_listing_config *cfg, int prefetch, double budget);
/* The iterator kept with the listing at idx: sets it from the top (popped), or pushes it. */
void kvs_keep_iterator(lua_State *L, int idx);
void kvs_push_kept_iterator(lua_State *L, int idx);

/* After a page was swapped into u->page: the view shows it from its start (and
 * kvs_listing_account runs). */
void kvs_view_page(lua_State *L, listing_ud *u);
/* Tells the garbage collector what it cannot see: the growth of the C memory `u` holds
 * (as if Lua had allocated it), and, after a transfer of the client found no descriptor
 * left, that a full collection is due (it closes what the program dropped). */
void kvs_listing_account(lua_State *L, listing_ud *u);
/* Pushes key, size, url (nil when absent or urls = false) of the next item; returns 3. */
int  kvs_push_item(lua_State *L, listing_ud *u);
/* Lets go of drivers, core and buffers, keeping a failure's error. */
void kvs_listing_release(lua_State *L, listing_ud *u);
/* Records how the driver (or the caller-driven core) ended: done, or failed with its
 * error; then releases. */
void kvs_listing_settle(lua_State *L, listing_ud *u);
/* Closes: a listing with keys still to come is cancelled; idempotent. */
void kvs_listing_close(lua_State *L, listing_ud *u, int used_up);
/* "apify.kvs.keys (open)": the class name and one of `states` (by run). */
int  kvs_listing_tostring(lua_State *L, listing_ud *u, const char *mt,
                          const char *const states[4]);

/* Each kind's open: its metatable, and its methods added to the store's
 * method table at `store_methods`. */
void kvs_keys_open(lua_State *L, int store_methods);
void kvs_sansio_open(lua_State *L, int store_methods);
void kvs_job_open(lua_State *L, int store_methods);
/* store:listing{} (lua_plan.c): the parallel planner, sans-I/O, type apify.kvs.plan,
 * unless parallel = 1 (without rate_limit or ordered) asks for the page-by-page listing. */
int  kvs_plan_wanted(lua_State *L);
int  kvs_store_plan(lua_State *L);
void kvs_open_plan(lua_State *L);

/* Raw HTTP/1.1 for the listing's and the plan's own transports (lua_http.c): pushes
 * { request =, host =, port =, tls =, timeout = } for `url` (NULL), or nothing and why not;
 * feeds the bytes at idx (nil: the connection closed) into `r` (KVS_HTTP_*); a listing as
 * the reader's sink. */
const char *kvs_push_http_request(lua_State *L, const kvs_settings *s, const char *url, size_t n);
int  kvs_http_feed_arg(lua_State *L, kvs_http_reader *r, int idx);
extern const kvs_http_sink kvs_listing_sink;

#pragma GCC visibility pop

#endif
