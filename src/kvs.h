/*
 * kvs.h — the client object the Lua binding files share (their helpers are in
 * lua_aux.h).  The drivers (driver.h) and the platform helpers (platform.h)
 * know nothing of Lua.
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

#define KVS_VERSION "0.4.0"

/* The only symbol the shared object exports; everything else is hidden. */
#define KVS_EXPORT __attribute__((visibility("default")))
KVS_EXPORT int luaopen_apify_kvs(lua_State *L);

/* The client: its transfer settings, reference counted so stores and listings
 * may outlive the client object that made them. */
typedef struct kvs_client {
    int          refs;
    kvs_settings settings;    /* what the drivers see */
    int          on_retry_ref;   /* registry ref of on_retry(err, attempt, delay), or LUA_NOREF */
} kvs_client;

/* The client's on_retry function as the core's hook (lua_listing.c). */
typedef struct kvs_retry_hook {
    lua_State  *L;            /* the thread driving the listing right now */
    kvs_client *client;
} kvs_retry_hook;

#pragma GCC visibility pop

#endif
