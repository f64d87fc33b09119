/*
 * kvs.h — what the Lua binding files share: the client object, the listing
 * entry points and the option helpers.  The drivers (driver.h) and the
 * platform helpers (platform.h) know nothing of Lua.
 */
#ifndef APIFY_KVS_H
#define APIFY_KVS_H

#include "compat.h"
#include "core.h"
#include "driver.h"
#include "platform.h"

/* Internal: hidden from the shared object's symbol table even without
 * -fvisibility=hidden (LuaRocks builds). */
#pragma GCC visibility push(hidden)

#define KVS_VERSION "0.2.0"

/* The only symbol the shared object exports; everything else is hidden. */
#define KVS_EXPORT __attribute__((visibility("default")))
KVS_EXPORT int luaopen_apify_kvs(lua_State *L);

#define KVS_CLIENT_MT  "apify.kvs.client"
#define KVS_STORE_MT   "apify.kvs.store"
#define KVS_LISTING_MT "apify.kvs.listing"
#define KVS_ERROR_MT   "apify.kvs.error"

/* The client: its transfer settings, reference counted so stores and listings
 * may outlive the client object that made them. */
typedef struct kvs_client {
    int          refs;
    kvs_settings settings;    /* what the drivers see */
    int          on_retry_ref;   /* registry ref of on_retry(err, attempt, delay), or LUA_NOREF */
} kvs_client;

/* Drops one reference; the last one frees the client (and its on_retry ref in L). */
void kvs_client_release(lua_State *L, kvs_client *c);

/* --- the Lua side (lua_listing.c) ----------------------------------------- */

void kvs_push_error(lua_State *L, const kvs_error *e);
/* The client's on_retry function as the core's hook; `ud` is a kvs_retry_hook. */
typedef struct kvs_retry_hook {
    lua_State  *L;            /* the thread driving the listing right now */
    kvs_client *client;
} kvs_retry_hook;
int  kvs_call_on_retry(void *ud, const kvs_error *e, int attempt, double delay,
                       char *why, size_t why_cap);
int  kvs_store_list_keys(lua_State *L);
int  kvs_store_keys(lua_State *L);
int  kvs_store_listing(lua_State *L);
int  kvs_store_job(lua_State *L);
void kvs_open_listing(lua_State *L);     /* registers the listing/error metatables */
kvs_client *kvs_check_store(lua_State *L, int idx, const char **id);

/* Lua helpers (lua_kvs.c) */
void kvs_new_class(lua_State *L, const char *name, const luaL_Reg *meta,
                   const luaL_Reg *methods);
typedef struct kvs_optspec {
    const char *name;
    int         type;         /* LUA_TSTRING, LUA_TNUMBER, LUA_TBOOLEAN */
    unsigned    calls;        /* which calls take it: a mask of the caller's choosing */
} kvs_optspec;
/* Raises on a non-table argument, on option names not in `spec` and on those
 * whose `calls` has no bit of `call`. */
void kvs_check_options(lua_State *L, int arg, const kvs_optspec *spec, unsigned call);
const char *kvs_opt_string(lua_State *L, int arg, const char *name, size_t *len);
long long   kvs_opt_integer(lua_State *L, int arg, const char *name,
                            long long min, long long max, long long dflt);

#pragma GCC visibility pop

#endif
