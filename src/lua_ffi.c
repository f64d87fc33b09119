/*
 * lua_ffi.c — the LuaJIT path (see lua_ffi.h).  The iterators of keys, job
 * and page_keys are Lua functions, compiled by LuaJIT with the loop that
 * calls them, reading the listing's kvs_view and its page in place through
 * the FFI.  They call into C only when a page is used up and, for keys,
 * every 256 keys for a turn of the transfer: through plain Lua C functions
 * (so an on_retry hook may run and errors may raise).  The Lua text is part
 * of this file, so the module stays one shared object exporting one symbol.
 * One iterator function per listing, whatever its number of pages or polls.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "lua_ffi.h"
#include "lua_listing.h"

#define FFI_KEY "apify.kvs.ffi"    /* registry: the iterator makers, by kind */

#if LUA_VERSION_NUM == 501

/* Called with the layout the C side uses; returns the makers by kind, or
 * nothing when the FFI's idea of that layout differs. */
static const char ffi_chunk[] =
"local layout = ...\n"
"local ffi = require('ffi')\n"
"local band = require('bit').band\n"
"local ffi_string, tonumber = ffi.string, tonumber\n"
"local item_t = ffi.typeof('struct { size_t key_off, key_len, url_off, url_len; int64_t size; }')\n"
"local view_t = ffi.typeof('struct { const $ *items; const char *bytes; int32_t pos, count;'\n"
"                          .. ' double budget; int32_t urls; }', item_t)\n"
"for name, v in pairs(layout) do\n"
"  local t, field = name:match('^(%a+)_(.+)$')\n"
"  local ct = t == 'item' and item_t or view_t\n"
"  if (field == 'size_of' and ffi.sizeof(ct) or ffi.offsetof(ct, field)) ~= v then return end\n"
"end\n"
"local view_p = ffi.typeof('$ *', view_t)\n"
"local NO_URL = ffi.cast('size_t', 0xffffffffffffffffULL)   -- KVS_NO_URL, (size_t)-1\n"
"local makers = {}\n"
/* store:keys: more(ud) waits for the next page (false: the end; raises on
 * failure); poll(ud) turns the transfer. */
"function makers.keys(more, poll)\n"
"  return function(ud, p, urls)\n"
"    local v = ffi.cast(view_p, p)\n"
"    return function()\n"
"      local i = v.pos\n"
"      if i >= v.count then\n"
"        if not more(ud) then return end\n"
"        i = 0\n"
"      elseif band(i, 255) == 255 then\n"
"        poll(ud)\n"
"      end\n"
"      v.pos = i + 1\n"
"      local it, b = v.items[i], v.bytes\n"
"      local key = ffi_string(b + it.key_off, it.key_len)\n"
"      if urls and it.url_off ~= NO_URL then\n"
"        return key, tonumber(it.size), ffi_string(b + it.url_off, it.url_len)\n"
"      end\n"
"      return key, tonumber(it.size), nil\n"
"    end\n"
"  end\n"
"end\n"
/* job:poll: more(ud) takes a page that has arrived (false: none yet); the
 * budget is what poll(max_keys) allows. */
"function makers.job(more)\n"
"  return function(ud, p, urls)\n"
"    local v = ffi.cast(view_p, p)\n"
"    return function()\n"
"      local budget = v.budget\n"
"      if budget == 0 then return end\n"
"      local i = v.pos\n"
"      if i >= v.count then\n"
"        if not more(ud) then return end\n"
"        i = 0\n"
"      end\n"
"      if budget > 0 then v.budget = budget - 1 end\n"
"      v.pos = i + 1\n"
"      local it, b = v.items[i], v.bytes\n"
"      local key = ffi_string(b + it.key_off, it.key_len)\n"
"      if urls and it.url_off ~= NO_URL then\n"
"        return key, tonumber(it.size), ffi_string(b + it.url_off, it.url_len)\n"
"      end\n"
"      return key, tonumber(it.size), nil\n"
"    end\n"
"  end\n"
"end\n"
/* listing:page_keys: the latest page only. */
"function makers.page()\n"
"  return function(ud, p, urls)\n"
"    local v = ffi.cast(view_p, p)\n"
"    return function()\n"
"      local i = v.pos\n"
"      if i >= v.count then return end\n"
"      v.pos = i + 1\n"
"      local it, b = v.items[i], v.bytes\n"
"      local key = ffi_string(b + it.key_off, it.key_len)\n"
"      if urls and it.url_off ~= NO_URL then\n"
"        return key, tonumber(it.size), ffi_string(b + it.url_off, it.url_len)\n"
"      end\n"
"      return key, tonumber(it.size), nil\n"
"    end\n"
"  end\n"
"end\n"
"return makers\n";

static void set_int(lua_State *L, const char *name, size_t v)
{
    lua_pushnumber(L, (lua_Number)v);
    lua_setfield(L, -2, name);
}

void kvs_ffi_open(lua_State *L)
{
    const char *env = getenv("APIFY_KVS_FFI");
    if (env && strcmp(env, "0") == 0) return;           /* the C iterators, by request */
    lua_getglobal(L, "jit");
    if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }  /* PUC Lua 5.1 */
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, ffi_chunk, sizeof ffi_chunk - 1, "=apify.kvs.ffi") != 0) {
        lua_pop(L, 1);
        return;
    }
    lua_createtable(L, 0, 12);
    set_int(L, "item_size_of", sizeof(kvs_item));
    set_int(L, "item_key_off", offsetof(kvs_item, key_off));
    set_int(L, "item_key_len", offsetof(kvs_item, key_len));
    set_int(L, "item_url_off", offsetof(kvs_item, url_off));
    set_int(L, "item_url_len", offsetof(kvs_item, url_len));
    set_int(L, "item_size", offsetof(kvs_item, size));
    set_int(L, "view_size_of", sizeof(kvs_view));
    set_int(L, "view_items", offsetof(kvs_view, items));
    set_int(L, "view_bytes", offsetof(kvs_view, bytes));
    set_int(L, "view_pos", offsetof(kvs_view, pos));
    set_int(L, "view_count", offsetof(kvs_view, count));
    set_int(L, "view_budget", offsetof(kvs_view, budget));
    set_int(L, "view_urls", offsetof(kvs_view, urls));
    /* a LuaJIT built without its FFI fails require('ffi'): the C iterators serve */
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, FFI_KEY);
}

void kvs_ffi_bind(lua_State *L, const char *kind, lua_CFunction more, lua_CFunction poll)
{
    lua_getfield(L, LUA_REGISTRYINDEX, FFI_KEY);
    if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
    lua_getfield(L, -1, kind);
    if (more) lua_pushcfunction(L, more); else lua_pushnil(L);
    if (poll) lua_pushcfunction(L, poll); else lua_pushnil(L);
    lua_call(L, 2, 1);                 /* the maker of this kind's iterators */
    lua_setfield(L, -2, kind);
    lua_pop(L, 1);
}

int kvs_ffi_iterator(lua_State *L, int idx, const char *kind, int urls)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_getfield(L, LUA_REGISTRYINDEX, FFI_KEY);
    if (!lua_istable(L, -1)) { lua_pop(L, 1); return 0; }
    lua_getfield(L, -1, kind);
    lua_remove(L, -2);
    lua_pushvalue(L, idx);
    lua_pushlightuserdata(L, lua_touserdata(L, idx));   /* its kvs_view comes first */
    lua_pushboolean(L, urls);
    lua_call(L, 3, 1);
    return 1;
}

int kvs_ffi_enabled(lua_State *L)
{
    int on;
    lua_getfield(L, LUA_REGISTRYINDEX, FFI_KEY);
    on = lua_istable(L, -1);
    lua_pop(L, 1);
    return on;
}

#else   /* Lua 5.2+: no LuaJIT, no FFI */

void kvs_ffi_open(lua_State *L) { (void)L; }
int  kvs_ffi_enabled(lua_State *L) { (void)L; return 0; }
void kvs_ffi_bind(lua_State *L, const char *kind, lua_CFunction more, lua_CFunction poll)
{
    (void)L; (void)kind; (void)more; (void)poll;
}
int  kvs_ffi_iterator(lua_State *L, int idx, const char *kind, int urls)
{
    (void)L; (void)idx; (void)kind; (void)urls;
    return 0;
}

#endif
