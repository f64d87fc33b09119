/*
 * spec/support/oom_host.c — a C program embedding Lua 5.4 with an allocator
 * that fails on demand, for spec/embed_spec.lua: a Lua memory error in the
 * middle of the module's work must not leak what the module holds outside
 * Lua (malloc'd pages, libcurl handles).
 *
 *   oom_host SCRIPT [ARGS...]    runs SCRIPT with ARGS as `...`
 *
 * The script gets two globals:
 *   fail_after(n)   from now on, a Lua allocation fails once it would take
 *                   the Lua heap more than n bytes above its size now;
 *                   fail_after(nil): allocations succeed again
 *   heap_in_use()   bytes malloc has handed out and not had back (mallinfo2:
 *                   the module's own allocations and Lua's alike)
 *
 * Exit status: 0 when the script ran to its end, 1 on a Lua error (printed).
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

typedef struct lua_heap {
    size_t used;          /* bytes of Lua's blocks */
    size_t limit;         /* when armed: most bytes `used` may reach */
    int    armed;
} lua_heap;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lua_heap *h = ud;
    size_t old = ptr ? osize : 0;        /* without ptr, osize is a type tag */
    void *p;
    if (nsize == 0) {
        free(ptr);
        h->used -= old;
        return NULL;
    }
    if (h->armed && nsize > old && h->used - old + nsize > h->limit)
        return NULL;
    p = realloc(ptr, nsize);
    if (p) h->used = h->used - old + nsize;
    return p;
}

static lua_heap *heap_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

static int fail_after(lua_State *L)
{
    lua_heap *h = heap_of(L);
    if (lua_isnoneornil(L, 1)) {
        h->armed = 0;
    } else {
        h->limit = h->used + (size_t)luaL_checkinteger(L, 1);
        h->armed = 1;
    }
    return 0;
}

static int heap_in_use(lua_State *L)
{
    struct mallinfo2 mi = mallinfo2();
    lua_pushinteger(L, (lua_Integer)mi.uordblks);
    return 1;
}

static int traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

int main(int argc, char **argv)
{
    lua_heap heap = { 0, 0, 0 };
    lua_State *L;
    int i, rc;
    if (argc < 2) {
        fprintf(stderr, "usage: oom_host SCRIPT [ARGS...]\n");
        return 2;
    }
    if (!(L = lua_newstate(limited_alloc, &heap))) return 1;
    luaL_openlibs(L);
    lua_register(L, "fail_after", fail_after);
    lua_register(L, "heap_in_use", heap_in_use);
    lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, argv[1]) != LUA_OK) {
        fprintf(stderr, "oom_host: %s\n", lua_tostring(L, -1));
        return 1;
    }
    for (i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
    rc = lua_pcall(L, argc - 2, 0, 1);
    if (rc != LUA_OK) fprintf(stderr, "oom_host: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return rc == LUA_OK ? 0 : 1;
}
