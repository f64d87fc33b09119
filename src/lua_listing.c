/*
 * lua_listing.c — the listing state shared by the kinds of listing (see
 * lua_listing.h): the options every listing call reads, the on_retry hook,
 * making, draining, closing and releasing a listing userdata, and handing
 * out the items of its current page.
 */
#include <string.h>

#include "lua_listing.h"

/* --- options -> core config -------------------------------------------------------- */

#define K  KVS_CALL_KEYS
#define LI KVS_CALL_LISTING
#define LK KVS_CALL_LIST_KEYS
#define J  KVS_CALL_JOB

const kvs_optspec kvs_listing_options[] = {
    { "prefix", LUA_TSTRING, K | LI | LK },
    { "collection", LUA_TSTRING, K | LI | LK },
    { "signature", LUA_TSTRING, K | LI | LK },
    { "exclusiveStartKey", LUA_TSTRING, K | LI | LK },
    { "limit", LUA_TNUMBER, K | LI | LK },
    { "urls", LUA_TBOOLEAN, K | LI | LK },
    { "page_size", LUA_TNUMBER, K | LI },
    { "prefetch", LUA_TBOOLEAN, K },
    { "parallel", LUA_TNUMBER, K | J },
    { "rate_limit", LUA_TNUMBER, K | J },
    { "ordered", LUA_TBOOLEAN, K | J },
    { "seed", LUA_TNUMBER, LI },
    { NULL, 0, 0 }
};

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

void kvs_read_config(lua_State *L, kvs_client *c, const char *id, kvs_listing_config *cfg,
                     kvs_retry_hook *hook)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->base_url = c->settings.base_url;
    cfg->store_id = id;
    cfg->prefix = kvs_opt_string(L, 2, "prefix", NULL);
    cfg->collection = kvs_opt_string(L, 2, "collection", NULL);
    cfg->signature = kvs_opt_string(L, 2, "signature", NULL);
    cfg->start_key = kvs_opt_string(L, 2, "exclusiveStartKey", &cfg->start_key_len);
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

listing_ud *kvs_new_listing(lua_State *L, unsigned call, const char *mt, kvs_listing_config *cfg,
                            int iterator_slot)
{
    const char *id;
    kvs_client *c = kvs_check_store(L, 1, &id);
    listing_ud *u;

    kvs_check_options(L, 2, kvs_listing_options, call);
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
    kvs_read_config(L, c, id, cfg, &u->hook);
    cfg->page_size = (int)kvs_opt_integer(L, 2, "page_size", 1, KVS_MAX_PAGE_SIZE,
                                          KVS_MAX_PAGE_SIZE);
    cfg->limit = kvs_opt_integer(L, 2, "limit", 0, 0x7fffffffffffffffLL, -1);
    cfg->seed = kvs_opt_seed(L, 2, u);
    u->view.urls = kvs_opt_boolean(L, 2, "urls", 1);
    u->prefetch = kvs_opt_boolean(L, 2, "prefetch", 1);
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

int kvs_listing_start_parallel(lua_State *L, listing_ud *u, const kvs_listing_config *cfg)
{
    int parallel = (int)kvs_opt_integer(L, 2, "parallel", 1, KVS_PLAN_MAX, 1);
    int ordered = kvs_opt_boolean(L, 2, "ordered", 1);
    double rate = 0;
    if (!lua_isnoneornil(L, 2)) {
        lua_getfield(L, 2, "rate_limit");
        if (!lua_isnil(L, -1)) {
            rate = (double)lua_tonumber(L, -1);
            if (!(rate > 0 && rate <= 1e6))
                luaL_argerror(L, 2, "option 'rate_limit' must be a number in (0, 1e6]");
        }
        lua_pop(L, 1);
    }
    if (parallel <= 1 && rate <= 0) return 0;
    /* the ranges' driver runs cores of its own */
    if (!(u->par = kvs_par_new(&u->client->settings, cfg, parallel, rate, ordered)))
        luaL_error(L, "apify.kvs: out of memory");
    return 1;
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
         + (u->async ? kvs_async_memory(u->async) : 0)
         + (u->par ? kvs_par_memory(u->par) : 0) + kvs_page_memory(&u->page);
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
    if (u->core && u->run == L_FAILED && kvs_listing_error(u->core))
        u->err = *kvs_listing_error(u->core);
    kvs_async_free(u->async);           /* first: it drives the core */
    kvs_par_free(u->par);               /* cancels every range's transfer */
    kvs_listing_free(u->core);
    kvs_page_free(&u->page);
    kvs_client_release(L, u->client);
    u->async = NULL;
    u->par = NULL;
    u->core = NULL;
    u->client = NULL;
    u->view.items = NULL;
    u->view.bytes = NULL;
    u->view.pos = u->view.count = 0;
}

void kvs_listing_drive(lua_State *L, listing_ud *u)
{
    if (!u->async && !(u->async = kvs_async_new(&u->client->settings, u->core, u->prefetch)))
        luaL_error(L, "apify.kvs: out of memory");
}

void kvs_listing_settle(lua_State *L, listing_ud *u)
{
    if (u->run == L_RUNNING)
        u->run = kvs_listing_failed(u->core) ? L_FAILED : L_DONE;
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
