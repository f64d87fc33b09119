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

#pragma GCC visibility push(hidden)

#define KVS_KEYS_MT    "apify.kvs.keys"
#define KVS_LISTING_MT "apify.kvs.listing"
#define KVS_JOB_MT     "apify.kvs.job"

/* Seconds of decoding one job:poll() may do before it leaves the rest of the
 * body for the next poll: a 1000-key page is spread over a few frames. */
#define KVS_JOB_POLL_BUDGET 0.0004

/* Which calls take which option (kvs_optspec.calls). */
#define KVS_CALL_KEYS      1u     /* store:keys */
#define KVS_CALL_LISTING   2u     /* store:listing and store:job: paging of their own */
#define KVS_CALL_LIST_KEYS 4u     /* store:list_keys: one page */
#define KVS_CALL_JOB       8u     /* store:job: parallel, as store:keys */
extern const kvs_optspec kvs_listing_options[];

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
    kvs_listing *core;        /* the paging core; NULL once released, and for parallel */
    kvs_async   *async;       /* keys, job: the libcurl multi driver; NULL: not started */
    kvs_par     *par;         /* keys{ parallel = n }: key ranges side by side */
    kvs_page     page;        /* the page being handed out */
    run_t        run;
    kvs_error    err;         /* when run == L_FAILED */
    int          prefetch;
    size_t       charged;     /* bytes of C memory the garbage collector was told of */
    kvs_retry_hook hook;      /* hook.L: set by every call that may drive the listing */
} listing_ud;

/* The client's on_retry function as the core's hook; `ud` is a kvs_retry_hook. */
int  kvs_call_on_retry(void *ud, const kvs_error *e, int attempt, double delay,
                       char *why, size_t why_cap);
/* Fills `cfg` from the client, store id and the (checked) options at 2: what
 * every kind reads alike.  Strings point into the options table. */
void kvs_read_config(lua_State *L, kvs_client *c, const char *id, kvs_listing_config *cfg,
                     kvs_retry_hook *hook);

/* For store 1 with options 2 (checked against `call`): pushes a new listing
 * userdata of class `mt` holding a reference to the client, and fills `cfg`
 * (page_size, limit, urls read; the core not made yet).  With `iterator_slot`
 * the userdata keeps one Lua value (the listing's iterator, kvs_keep_iterator). */
listing_ud *kvs_new_listing(lua_State *L, unsigned call, const char *mt, kvs_listing_config *cfg,
                            int iterator_slot);
/* Makes the paging core of `u` from `cfg`; raises on OOM. */
void kvs_listing_start(lua_State *L, listing_ud *u, const kvs_listing_config *cfg);
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
/* Options parallel, rate_limit, ordered at 2: when they ask for key ranges side
 * by side, makes the parallel driver of `u` (u->par, no core) and returns 1. */
int  kvs_listing_start_parallel(lua_State *L, listing_ud *u, const kvs_listing_config *cfg);
/* Starts the libcurl multi driver of `u` if it has none; raises on OOM. */
void kvs_listing_drive(lua_State *L, listing_ud *u);
/* Records how the driver ended: done, or failed with the core's error. */
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
/* store:listing{ parallel = n } (lua_plan.c): the parallel planner, sans-I/O,
 * type apify.kvs.plan; store:listing hands such options to kvs_store_plan. */
int  kvs_plan_wanted(lua_State *L);
int  kvs_store_plan(lua_State *L);
void kvs_open_plan(lua_State *L);

#pragma GCC visibility pop

#endif
