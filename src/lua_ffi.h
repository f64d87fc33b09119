/*
 * lua_ffi.h — the LuaJIT path: iterators written in Lua that read a
 * listing's page (its kvs_view) through the FFI, so the loop stays in
 * compiled code.  Without LuaJIT's FFI, or with APIFY_KVS_FFI=0 in the
 * environment, nothing here is used and the C iterators serve.
 */
#ifndef APIFY_KVS_LUA_FFI_H
#define APIFY_KVS_LUA_FFI_H

#include "lua_aux.h"

#pragma GCC visibility push(hidden)

/* Loads the FFI iterators when the Lua is LuaJIT with its FFI. */
void kvs_ffi_open(lua_State *L);
/* 1 when the FFI iterators are in use. */
int  kvs_ffi_enabled(lua_State *L);
/* Binds the FFI iterator of `kind` ("keys", "job" or "page") to the C
 * functions it calls on a listing userdata: `more` (ud) -> boolean, true when
 * the view shows a page with keys again, false when there are no more keys
 * for now (it may raise), and `poll` (ud), a turn of the transfer every 256
 * keys (keys only; else NULL).  Does nothing without the FFI. */
void kvs_ffi_bind(lua_State *L, const char *kind, lua_CFunction more, lua_CFunction poll);
/* Pushes a new FFI iterator of `kind` over the listing userdata at idx and
 * returns 1; returns 0 (nothing pushed) without the FFI. */
int  kvs_ffi_iterator(lua_State *L, int idx, const char *kind, int urls);

#pragma GCC visibility pop

#endif
