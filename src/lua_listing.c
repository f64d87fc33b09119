/*
 * lua_listing.c — the listing state shared by the kinds of listing (see
 * lua_listing.h): the options every listing call reads, the on_retry hook,
 * making, draining, closing and releasing a listing userdata, and handing
 * out the items of its current page.
 */
#include <string.h>

#include "lua_listing.h"

/* --- options -> core config -------------------------------------------------------- */

int kvs_call_on_retry(void *ud, const kvs_error *e, int attempt, double delay,
                      char *why, size_t why_cap)
{
    kvs_retry_hook *h = ud;
    lua_State *L = h->L;
    int verdict;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->client->on_retry_ref);
    kvs_push_error(L, e);
    lua_pushinteger(L, attempt);
    lua_pushnumber(L, delay);
    if (lua_pcall(L, 3, 1, 0) != 0) {
        const char *msg = lua_tostring(L, -1);
        snprintf(why, why_cap, "%s", msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
        return -1;
    }
    verdict = !(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1));   /* false: stop */
    lua_pop(L, 1);
    return verdict;
}

void kvs_read_config(lua_State *L, kvs_client *c, const char *id, const kvs_opts *o,
                     kvs_listing_config *cfg, kvs_retry_hook *hook)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->base_url = c->settings.base_url;
    cfg->store_id = id;
    cfg->prefix = o->prefix.s;
    cfg->prefix_len = o->prefix.len;
    cfg->collection = o->collection.s;
    cfg->collection_len = o->collection.len;
    cfg->signature = o->signature.s;
    cfg->signature_len = o->signature.len;
    cfg->start_key = o->start_key.s;
    cfg->start_key_len = o->start_key.len;
    cfg->page_size = (int)o->page_size.i;
    cfg->limit = o->limit.i;
    cfg->seed = kvs_seed(o->seed.i, hook);
    cfg->max_retries = c->settings.max_retries;
    cfg->min_delay = c->settings.min_delay;
    cfg->max_delay = c->settings.max_delay;
    cfg->max_elapsed = c->settings.max_elapsed;
    cfg->secret = c->settings.token;
    cfg->secret_len = c->settings.token ? strlen(c->settings.token) : 0;
    cfg->http_date_delay = kvs_http_date_delay;
    hook->L = L;
    hook->client = c;
    if (c->on_retry_ref != LUA_NOREF) {
        cfg->on_retry = kvs_call_on_retry;
        cfg->on_retry_ud = hook;
    }
}

/* --- making one ------------------------------------------------------------------------ */

/* The one Lua value a listing keeps: its iterator, in a table as its user
 * value (5.2+) or environment (5.1). */
#if LUA_VERSION_NUM >= 504
#  define new_listing_ud(L, sz, slot) lua_newuserdatauv(L, sz, (slot) ? 1 : 0)
#  define set_uv(L, idx) lua_setiuservalue(L, idx, 1)
#  define get_uv(L, idx) lua_getiuservalue(L, idx, 1)
#elif LUA_VERSION_NUM >= 502
#  define new_listing_ud(L, sz, slot) lua_newuserdata(L, sz)
#  define set_uv(L, idx) lua_setuservalue(L, idx)
#  define get_uv(L, idx) lua_getuservalue(L, idx)
#else
#  define new_listing_ud(L, sz, slot) lua_newuserdata(L, sz)
#  define set_uv(L, idx) lua_setfenv(L, idx)
#  define get_uv(L, idx) lua_getfenv(L, idx)
#endif

listing_ud *kvs_new_listing(lua_State *L, unsigned call, const char *mt, kvs_opts *o,
                            kvs_listing_config *cfg, int iterator_slot)
{
    const char *id;
    kvs_client *c = kvs_check_store(L, 1, &id);
    listing_ud *u;

    kvs_read_options(L, 2, call, o);
    u = new_listing_ud(L, sizeof *u, iterator_slot);   /* first: cfg points into its hook */
    memset(u, 0, sizeof *u);
    kvs_page_init(&u->page);
    u->run = L_DONE;                 /* until it holds a client and a core */
    u->view.budget = -1;
    kvs_set_class(L, mt);
    if (iterator_slot) {
        lua_createtable(L, 1, 0);
        set_uv(L, -2);
    }
    kvs_read_config(L, c, id, o, cfg, &u->hook);
    u->view.urls = (int32_t)o->urls.i;
    u->client = c;
    c->refs++;
    u->run = L_RUNNING;
    return u;
}

void kvs_listing_start(lua_State *L, listing_ud *u, const kvs_listing_config *cfg)
{
    if (!(u->core = kvs_listing_new(cfg)))
        luaL_error(L, "apify.kvs: out of memory");
}

void kvs_listing_start_driver(lua_State *L, listing_ud *u, const kvs_opts *o,
                              const kvs_listing_config *cfg, int prefetch, double budget)
{
    const kvs_settings *s = &u->client->settings;
    /* parallel = "auto" unless said; prefetch = false: page by page unless said */
    int parallel = !o->parallel.given && !prefetch ? 1 : (int)o->parallel.i;
    int rc = parallel > 1 || o->rate_limit.n > 0
        ? kvs_driver_parallel(&u->drv, s, cfg, parallel, o->rate_limit.n, (int)o->ordered.i)
        : kvs_driver_sequential(&u->drv, s, cfg, prefetch, budget);
    if (rc != 0) luaL_error(L, "apify.kvs: out of memory");
}

void kvs_keep_iterator(lua_State *L, int idx)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    get_uv(L, idx);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 1);
    lua_pop(L, 2);
}

void kvs_push_kept_iterator(lua_State *L, int idx)
{
    get_uv(L, idx);
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
}

/* --- handing out ------------------------------------------------------------------------- */

void kvs_view_page(lua_State *L, listing_ud *u)
{
    u->view.items = u->page.items;
    u->view.bytes = u->page.bytes.data;
    u->view.count = (int32_t)u->page.count;
    u->view.pos = 0;
    kvs_listing_account(L, u);
}

/* --- what the garbage collector cannot see ---------------------------------------------- */

/* A listing's pages, buffers and libcurl handles live in C memory, about 20 KiB to a few
 * MiB of it, under a userdata of a few hundred bytes: a program that drops listings
 * without close() (a break before Lua 5.4, an error in the loop) would pile them up
 * while its collector, pacing itself on what Lua allocated, saw no reason to run.  So
 * each growth of it is charged once, as if Lua had allocated it (LUA_GCSTEP with the
 * KiB): dropped listings are collected at the pace of the program's own garbage, whatever
 * the size of its heap.  A stopped collector is left stopped (Lua 5.1 cannot tell: a
 * charge restarts it there).
 * Descriptors are not left to that pace: a listing dropped with a request in flight
 * gives its connection back at the next turn of the client's transfers (driver_http.c),
 * and when a socket could not be had (EMFILE, ENFILE), a full collection closes the
 * listings and clients the program dropped before the request is tried again. */
static size_t held_memory(const listing_ud *u)
{
    return (u->core ? kvs_listing_memory(u->core) : 0)
         + (u->drv.ops ? u->drv.ops->memory(u->drv.d) : 0) + kvs_page_memory(&u->page);
}

static int collector_running(lua_State *L)
{
#ifdef LUA_GCISRUNNING                  /* 5.2+, LuaJIT 2.1 */
    return lua_gc(L, LUA_GCISRUNNING, 0);
#else
    (void)L;
    return 1;
#endif
}

void kvs_listing_account(lua_State *L, listing_ud *u)
{
    size_t now;
    if (!u->client) return;
    if (kvs_http_take_shortages(u->client->settings.http) > 0 && collector_running(L))
        lua_gc(L, LUA_GCCOLLECT, 0);    /* may close listings, this one too: look again */
    now = held_memory(u);
    if (now >= u->charged + 1024) {
        size_t kb = (now - u->charged) >> 10;
        u->charged = now;
        if (collector_running(L)) lua_gc(L, LUA_GCSTEP, kb > 0x7fffffff ? 0x7fffffff : (int)kb);
    }
}

int kvs_push_item(lua_State *L, listing_ud *u)
{
    const kvs_item *it = &u->view.items[u->view.pos++];
    lua_pushlstring(L, u->view.bytes + it->key_off, it->key_len);
    kvs_pushsize(L, it->size);
    if (it->url_off != KVS_NO_URL && u->view.urls)
        lua_pushlstring(L, u->view.bytes + it->url_off, it->url_len);
    else
        lua_pushnil(L);
    return 3;
}

/* --- releasing ------------------------------------------------------------------------- */

void kvs_listing_release(lua_State *L, listing_ud *u)
{
    if (u->drv.ops) u->drv.ops->free(u->drv.d);     /* cancels what is in flight */
    kvs_listing_free(u->core);
    kvs_http_reader_free(u->http);
    kvs_page_free(&u->page);
    kvs_client_release(L, u->client);
    u->drv.ops = NULL;
    u->core = NULL;
    u->http = NULL;
    u->client = NULL;
    u->view.items = NULL;
    u->view.bytes = NULL;
    u->view.pos = u->view.count = 0;
}

void kvs_listing_settle(lua_State *L, listing_ud *u)
{
    if (u->run == L_RUNNING) {
        const kvs_error *e = u->drv.ops ? u->drv.ops->error(u->drv.d)
                           : u->core && kvs_listing_failed(u->core) ? kvs_listing_error(u->core)
                           : NULL;
        if (e) u->err = *e;
        u->run = e ? L_FAILED : L_DONE;
    }
    kvs_listing_release(L, u);
}

void kvs_listing_close(lua_State *L, listing_ud *u, int used_up)
{
    if (u->run == L_RUNNING) u->run = used_up ? L_DONE : L_CANCELLED;
    if (u->client) kvs_listing_release(L, u);
}

int kvs_listing_tostring(lua_State *L, listing_ud *u, const char *mt,
                         const char *const states[4])
{
    lua_pushfstring(L, "%s (%s)", mt, states[u->run]);
    return 1;
}
