/*
 * lua_aux.c — the helpers every binding file shares (see lua_aux.h): classes
 * and class checks, option tables and their readers, error objects, the
 * store userdata and the client's reference count.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_aux.h"

/* --- classes ------------------------------------------------------------------ */

void kvs_new_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, meta, 0);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "apify.kvs: metatable is locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

void kvs_set_class(lua_State *L, const char *name)
{
    luaL_getmetatable(L, name);
    lua_setmetatable(L, -2);
}

/* What a value is called in a type error: its class's __name, else its type. */
static const char *type_name(lua_State *L, int idx)
{
    const char *name = luaL_typename(L, idx);
    if (lua_getmetatable(L, idx)) {       /* the C API sees past __metatable */
        lua_getfield(L, -1, "__name");
        if (lua_type(L, -1) == LUA_TSTRING) name = lua_tostring(L, -1);
        lua_pop(L, 2);                    /* __name stays anchored in the metatable */
    }
    return name;
}

int kvs_type_error(lua_State *L, int idx, const char *what)
{
    return luaL_argerror(L, idx, lua_pushfstring(L, "%s expected, got %s", what,
                         type_name(L, idx)));
}

void *kvs_check_class(lua_State *L, int idx, const char *name)
{
    void *p = luaL_testudata(L, idx, name);
    if (!p) kvs_type_error(L, idx, name);
    return p;
}

/* --- error objects ---------------------------------------------------------------- */

static int error_tostring(lua_State *L)
{
    int status;
    lua_getfield(L, 1, "type");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "status");
    status = (int)lua_tointeger(L, -1);
    if (status)
        lua_pushfstring(L, "apify.kvs: %s (%s, HTTP %d)", lua_tostring(L, -2),
                        lua_tostring(L, -3), status);
    else
        lua_pushfstring(L, "apify.kvs: %s (%s)", lua_tostring(L, -2), lua_tostring(L, -3));
    return 1;
}

void kvs_push_request_headers(lua_State *L, const kvs_settings *s)
{
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, "application/json");
    lua_setfield(L, -2, "Accept");
    lua_pushstring(L, s->user_agent);
    lua_setfield(L, -2, "User-Agent");
    if (s->token) {
        lua_pushfstring(L, "Bearer %s", s->token);
        lua_setfield(L, -2, "Authorization");
    }
}

kvs_fault kvs_check_fault(lua_State *L, int idx)
{
    static const char *const kinds[] = { "none", "timeout", "network", "tls", "request", NULL };
    static const kvs_fault faults[] = { KVS_FAULT_NONE, KVS_FAULT_TIMEOUT, KVS_FAULT_NETWORK,
                                        KVS_FAULT_TLS, KVS_FAULT_REQUEST };
    return faults[luaL_checkoption(L, idx, "none", kinds)];
}

void kvs_push_error(lua_State *L, const kvs_error *e)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, e->type);
    lua_setfield(L, -2, "type");
    lua_pushstring(L, e->message);
    lua_setfield(L, -2, "message");
    if (e->status) {
        lua_pushinteger(L, e->status);
        lua_setfield(L, -2, "status");
    }
    lua_pushinteger(L, e->retries);
    lua_setfield(L, -2, "retries");
    kvs_set_class(L, KVS_ERROR_MT);
}

/* --- stores and clients -------------------------------------------------------------- */

kvs_client *kvs_check_store(lua_State *L, int idx, const char **id)
{
    kvs_store_ud *s = kvs_check_class(L, idx, KVS_STORE_MT);
    if (!s->client) luaL_argerror(L, idx, "store is closed");
    if (id) *id = s->id;
    return s->client;
}

void kvs_client_release(lua_State *L, kvs_client *c)
{
    if (!c || --c->refs > 0) return;
    luaL_unref(L, LUA_REGISTRYINDEX, c->on_retry_ref);
    kvs_http_free(c->settings.http);
    if (c->settings.token) {
        /* wipe before free: the token should not linger in freed memory */
        volatile char *p = c->settings.token;
        while (*p) *p++ = 0;
        free(c->settings.token);
    }
    free(c->settings.base_url);
    free(c->settings.user_agent);
    free(c->settings.ca_file);
    free(c->settings.ca_path);
    free(c);
}

void kvs_aux_open(lua_State *L)
{
    static const luaL_Reg error_meta[] = { { "__tostring", error_tostring }, { NULL, NULL } };
    kvs_new_class(L, KVS_ERROR_MT, error_meta, NULL);
}

/* Option `seed` (store:listing{}, store:job{}): the seed of the retry delays' jitter, a whole
 * number, so that a driver with a simulated clock gets the same run every time; without it
 * (seed < 0) a seed that differs per call. */
uint64_t kvs_seed(long long seed, const void *salt)
{
    return seed < 0 ? kvs_random_seed(salt) : (uint64_t)seed * 2654435761u + 1;
}

/* One header of a reply given from Lua: name at name_idx, value at value_idx, the value may
 * be a list of values (as OpenResty gives repeated headers); each string goes to sink. */
void kvs_feed_header(lua_State *L, int name_idx, int value_idx, kvs_header_sink sink, void *ud)
{
    size_t nlen, vlen;
    const char *name = lua_tolstring(L, name_idx, &nlen), *v;
    if (!name) return;
    if (lua_type(L, value_idx) == LUA_TTABLE) {
        int i, n = (int)lua_rawlen(L, value_idx);
        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, value_idx, i);
            if ((v = lua_tolstring(L, -1, &vlen))) sink(ud, name, nlen, v, vlen);
            lua_pop(L, 1);
        }
    } else if ((v = lua_tolstring(L, value_idx, &vlen))) {
        sink(ud, name, nlen, v, vlen);
    }
}

/* A headers table (name -> value or list of values), nil or absent: each one to sink. */
void kvs_feed_headers(lua_State *L, int idx, kvs_header_sink sink, void *ud)
{
    if (!lua_istable(L, idx)) return;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING) kvs_feed_header(L, lua_gettop(L) - 1, lua_gettop(L), sink, ud);
        lua_pop(L, 1);
    }
}

int kvs_check_status(lua_State *L, int idx)
{
    lua_Integer status = luaL_checkinteger(L, idx);
    luaL_argcheck(L, status >= 100 && status <= 999, idx, "HTTP status must be in 100..999");
    return (int)status;
}
