/*
 * lua_aux.h — what every Lua binding file shares, and nothing of any one
 * feature: classes (one metatable per type) and checking a value's class,
 * error objects, the store userdata, the client's reference count.  Options
 * are declared in lua_options.h.  Every binding file includes this; it depends on no binding file.
 *
 * The binding files, each with its `*_open` called in turn by
 * luaopen_apify_kvs (lua_kvs.c: the module, clients, stores):
 *   lua_options.c  the options registry (lua_options.h): checking and reading options
 *   lua_listing.c  the listing state the kinds share (not a type of its own)
 *   lua_keys.c     store:keys (type apify.kvs.keys) and store:list_keys
 *   lua_sansio.c   store:listing (type apify.kvs.listing), driven by the caller
 *   lua_job.c      store:job (type apify.kvs.job), for frame loops
 *   lua_plan.c     store:listing{ parallel = n } (type apify.kvs.plan), the planner
 *   lua_ffi.c      the LuaJIT FFI iterators over the same pages
 */
#ifndef APIFY_KVS_LUA_AUX_H
#define APIFY_KVS_LUA_AUX_H

#include "kvs.h"

#pragma GCC visibility push(hidden)

#define KVS_CLIENT_MT  "apify.kvs.client"
#define KVS_STORE_MT   "apify.kvs.store"
#define KVS_ERROR_MT   "apify.kvs.error"

/* --- classes ------------------------------------------------------------------ */

/* Registers the metatable `name` with `meta` and, as __index, a table of
 * `methods` (may be NULL); sets __name and locks the metatable. */
void  kvs_new_class(lua_State *L, const char *name, const luaL_Reg *meta,
                    const luaL_Reg *methods);
/* Sets the metatable `name` on the value at the top of the stack. */
void  kvs_set_class(lua_State *L, const char *name);
/* The userdata at idx if it is of class `name`; else raises, on every Lua,
 * "bad argument #1 to 'poll' (apify.kvs.job expected, got apify.kvs.keys)". */
void *kvs_check_class(lua_State *L, int idx, const char *name);
/* Raises "bad argument #idx to 'f' (<what> expected, got <idx's type>)". */
int   kvs_type_error(lua_State *L, int idx, const char *what);

/* --- options (their registry is lua_options.h) ------------------------------------ */

/* The retry jitter's seed: option `seed` (>= 0), or one that differs per call (seed < 0;
 * salt: any address). */
uint64_t    kvs_seed(long long seed, const void *salt);

/* Reply headers given from Lua (a name and a value or list of values; a table of them) and
 * an HTTP status argument (100..999), for the sans-I/O bindings. */
typedef void (*kvs_header_sink)(void *ud, const char *name, size_t nlen, const char *value,
                                size_t vlen);
void        kvs_feed_header(lua_State *L, int name_idx, int value_idx, kvs_header_sink sink, void *ud);
void        kvs_feed_headers(lua_State *L, int idx, kvs_header_sink sink, void *ud);
int         kvs_check_status(lua_State *L, int idx);

/* --- error objects ---------------------------------------------------------------- */

/* Pushes an apify.kvs.error table (type, message, status, retries). */
void kvs_push_error(lua_State *L, const kvs_error *e);
/* How a transfer ended, named at idx: "none" (default), "timeout", "network", "tls", "request". */
kvs_fault kvs_check_fault(lua_State *L, int idx);
/* Pushes the headers a request of these settings carries (Accept, User-Agent and, with a
 * token, Authorization: the secret, for the caller's transport only). */
void kvs_push_request_headers(lua_State *L, const kvs_settings *s);

/* --- stores and clients -------------------------------------------------------------- */

typedef struct kvs_store_ud {
    kvs_client *client;       /* NULL once collected */
    char       *id;
} kvs_store_ud;

/* The client of the store at idx (and its id); raises for anything else. */
kvs_client *kvs_check_store(lua_State *L, int idx, const char **id);
/* Drops one reference; the last one frees the client (and its on_retry ref in L). */
void        kvs_client_release(lua_State *L, kvs_client *c);

/* Registers the error class; called first by luaopen_apify_kvs. */
void kvs_aux_open(lua_State *L);

#pragma GCC visibility pop

#endif
