/*
 * compat.h — the few Lua C API differences between 5.1/LuaJIT, 5.2, 5.3 and
 * 5.4 that this module meets, in one place.
 */
#ifndef APIFY_KVS_COMPAT_H
#define APIFY_KVS_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#include "core.h"   /* KVS_2POW53 */

#if LUA_VERSION_NUM < 502
/* 5.1 and LuaJIT.  LuaJIT 2.1's lauxlib.h has luaL_setfuncs (and a luaL_newlib over it), which
 * Lua 5.1 lacks: the module uses its own, so that a build against LuaJIT's headers loads in
 * Lua 5.1 too (both look in lib/lua/5.1: make install LUA=jit and LUA=5.1 share it). */
static inline void kvs_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name; l++) {
        int i;
        for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#  undef luaL_newlib
#  define luaL_setfuncs kvs_setfuncs
#  define luaL_newlib(L, l) (lua_newtable(L), luaL_setfuncs(L, l, 0))
#  define lua_rawlen lua_objlen
static inline void *kvs_testudata(lua_State *L, int i, const char *tname)
{
    void *p = lua_touserdata(L, i);
    if (p && lua_getmetatable(L, i)) {
        luaL_getmetatable(L, tname);
        if (!lua_rawequal(L, -1, -2)) p = NULL;
        lua_pop(L, 2);
        return p;
    }
    return NULL;
}
#  define luaL_testudata kvs_testudata
#endif

#if LUA_VERSION_NUM < 503
#  define lua_isinteger(L, i) 0
#endif

#if LUA_VERSION_NUM < 504
#  define kvs_newuserdata(L, sz) lua_newuserdata(L, sz)
#else
#  define kvs_newuserdata(L, sz) lua_newuserdatauv(L, sz, 0)
#endif

/* Reads an integral number at `i` into *out; 0 when it is not one. */
static inline int kvs_tointeger(lua_State *L, int i, long long *out)
{
    lua_Number n;
    if (lua_type(L, i) != LUA_TNUMBER) return 0;
    if (lua_isinteger(L, i)) {
        *out = (long long)lua_tointeger(L, i);
        return 1;
    }
    n = lua_tonumber(L, i);
    if (!(n >= -KVS_2POW53 && n <= KVS_2POW53) || n != (lua_Number)(long long)n)
        return 0;
    *out = (long long)n;
    return 1;
}

/* Pushes a byte count: a Lua integer on 5.3+, an exact float below 2^53 elsewhere. */
static inline void kvs_pushsize(lua_State *L, long long v)
{
#if LUA_VERSION_NUM >= 503
    lua_pushinteger(L, (lua_Integer)v);
#else
    lua_pushnumber(L, (lua_Number)v);
#endif
}

#endif
