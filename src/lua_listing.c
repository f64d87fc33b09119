/*
 * lua_listing.c — store:list_keys (one page, `nil, err` on failure) and
 * store:keys (the generic-for iterator that hides exclusiveStartKey paging),
 * the listing userdata behind the iterator, and error objects.
 */
#include <string.h>

#include "lua_listing.h"

/* --- errors -------------------------------------------------------------------- */

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
    luaL_getmetatable(L, KVS_ERROR_MT);
    lua_setmetatable(L, -2);
}

/* --- on_retry ------------------------------------------------------------------------- */

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

/* --- options -> core config -------------------------------------------------------- */

/* Which call takes which option. */
#define KEYS      1u     /* store:keys */
#define LISTING   2u     /* store:listing and store:job: paging of their own */
#define LIST_KEYS 4u     /* store:list_keys: one page */

static const kvs_optspec options[] = {
    { "prefix", LUA_TSTRING, KEYS | LISTING | LIST_KEYS },
    { "collection", LUA_TSTRING, KEYS | LISTING | LIST_KEYS },
    { "signature", LUA_TSTRING, KEYS | LISTING | LIST_KEYS },
    { "exclusiveStartKey", LUA_TSTRING, KEYS | LISTING | LIST_KEYS },
    { "limit", LUA_TNUMBER, KEYS | LISTING | LIST_KEYS },
    { "page_size", LUA_TNUMBER, KEYS | LISTING },
    { "prefetch", LUA_TBOOLEAN, KEYS },
    { "parallel", LUA_TNUMBER, KEYS },
    { "rate_limit", LUA_TNUMBER, KEYS },
    { "ordered", LUA_TBOOLEAN, KEYS },
    { NULL, 0, 0 }
};

static void read_common(lua_State *L, kvs_client *c, const char *id, kvs_listing_config *cfg,
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

/* --- list_keys: one page ----------------------------------------------------------- */

#define PAGE_BOX_MT "apify.kvs.page_box"

/* The page list_keys decodes lives in a userdata (as lauxlib boxes its
 * buffers): when a Lua error (out of memory) cuts the result table short
 * and unwinds past list_keys, the box's __gc frees the page. */
static int page_box_gc(lua_State *L)
{
    kvs_page_free(lua_touserdata(L, 1));   /* idempotent */
    return 0;
}

static kvs_page *push_page_box(lua_State *L)
{
    kvs_page *p = kvs_newuserdata(L, sizeof *p);
    kvs_page_init(p);
    luaL_getmetatable(L, PAGE_BOX_MT);
    lua_setmetatable(L, -2);
    return p;
}

static void set_string_field(lua_State *L, const char *name, int present, const kvs_buf *b)
{
    if (!present) return;
    lua_pushlstring(L, b->data, b->len);
    lua_setfield(L, -2, name);
}

static void push_page_table(lua_State *L, const kvs_page *p)
{
    size_t i;
    lua_createtable(L, 0, 6);
    lua_createtable(L, (int)p->count, 0);
    for (i = 0; i < p->count; i++) {
        const kvs_item *it = &p->items[i];
        lua_createtable(L, 0, 3);
        lua_pushlstring(L, p->bytes.data + it->key_off, it->key_len);
        lua_setfield(L, -2, "key");
        kvs_pushsize(L, it->size);
        lua_setfield(L, -2, "size");
        if (it->url_off != KVS_NO_URL) {
            lua_pushlstring(L, p->bytes.data + it->url_off, it->url_len);
            lua_setfield(L, -2, "recordPublicUrl");
        }
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "items");
    kvs_pushsize(L, p->count_field >= 0 ? p->count_field : (long long)p->count);
    lua_setfield(L, -2, "count");
    if (p->limit_field >= 0) {
        kvs_pushsize(L, p->limit_field);
        lua_setfield(L, -2, "limit");
    }
    lua_pushboolean(L, p->is_truncated == 1);
    lua_setfield(L, -2, "isTruncated");
    set_string_field(L, "exclusiveStartKey", p->has_start, &p->start);
    set_string_field(L, "nextExclusiveStartKey", p->has_next, &p->next);
}

int kvs_store_list_keys(lua_State *L)
{
    const char *id;
    kvs_client *c = kvs_check_store(L, 1, &id);
    kvs_listing_config cfg;
    kvs_listing *core;
    kvs_conn *conn;
    kvs_page *page;
    kvs_error err;
    kvs_retry_hook hook;
    int rc;

    kvs_check_options(L, 2, options, LIST_KEYS);
    read_common(L, c, id, &cfg, &hook);
    cfg.page_size = (int)kvs_opt_integer(L, 2, "limit", 1, KVS_MAX_PAGE_SIZE, KVS_MAX_PAGE_SIZE);
    cfg.limit = -1;
    cfg.single_page = 1;
    cfg.seed = kvs_random_seed(&cfg);
    page = push_page_box(L);       /* first: it may raise, before anything is allocated */

    core = kvs_listing_new(&cfg);
    conn = core ? kvs_conn_new(&c->settings) : NULL;
    if (!conn) {
        kvs_listing_free(core);
        return luaL_error(L, "apify.kvs: out of memory");
    }
    rc = kvs_conn_next_page(conn, core, page);    /* a failure leaves `page` empty */
    if (rc < 0) err = *kvs_listing_error(core);
    kvs_conn_free(conn);
    kvs_listing_free(core);
    if (rc < 0) {
        kvs_page_free(page);
        lua_pushnil(L);
        kvs_push_error(L, &err);
        return 2;
    }
    push_page_table(L, page);    /* may raise: the box frees the page then */
    kvs_page_free(page);         /* now, rather than when the box is collected */
    return 1;
}

/* --- keys: the iterator ---------------------------------------------------------------- */

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
    u->pos = 0;
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

int kvs_push_item(lua_State *L, listing_ud *u)
{
    const kvs_item *it = &u->page.items[u->pos++];
    lua_pushlstring(L, u->page.bytes.data + it->key_off, it->key_len);
    kvs_pushsize(L, it->size);
    if (it->url_off != KVS_NO_URL)
        lua_pushlstring(L, u->page.bytes.data + it->url_off, it->url_len);
    else
        lua_pushnil(L);
    return 3;
}

/* The current page is used up: wait for the next one (blocking). */
static int next_page_then_item(lua_State *L, listing_ud *u)
{
    u->hook.L = L;
    for (;;) {
        if (u->run == L_FAILED) {
            kvs_push_error(L, &u->err);
            return lua_error(L);
        }
        if (u->run == L_DONE || !u->core)
            return 0;
        if (u->par) {                   /* parallel: the driver blocks until a page */
            int rc = kvs_par_take(u->par, &u->page);
            if (rc > 0) {
                u->pos = 0;
                if (u->page.count > 0) return kvs_push_item(L, u);
                continue;
            }
            if (rc < 0) {
                u->err = *kvs_par_error(u->par);
                u->run = L_FAILED;
            } else {
                u->run = L_DONE;
            }
            kvs_listing_release(L, u);
            continue;
        }
        kvs_listing_drive(L, u);
        kvs_async_poll(u->async);
        if (kvs_async_take(u->async, &u->page)) {
            u->pos = 0;
            if (u->page.count > 0)
                return kvs_push_item(L, u);
        } else if (kvs_async_finished(u->async)) {
            kvs_listing_settle(L, u);
        } else {
            kvs_async_wait(u->async, 1.0);
        }
    }
}

#define POLL_EVERY 256   /* keys between two looks at the page in flight */

static int keys_next(lua_State *L)
{
    listing_ud *u = lua_touserdata(L, lua_upvalueindex(1));
    if (u->pos < u->page.count) {
        /* the per-key path: three pushes, and now and then a non-blocking
         * turn of the transfer that brings the next page */
        if ((u->pos & (POLL_EVERY - 1)) == POLL_EVERY - 1) {
            u->hook.L = L;
            if (u->async) kvs_async_poll(u->async);
            else if (u->par) kvs_par_poll(u->par);
        }
        return kvs_push_item(L, u);
    }
    return next_page_then_item(L, u);
}

/* Checks the options at 2 and pushes a new listing userdata for store 1. */
static listing_ud *new_listing(lua_State *L, unsigned call)
{
    const char *id;
    kvs_client *c = kvs_check_store(L, 1, &id);
    kvs_listing_config cfg;
    listing_ud *u;
    int prefetch = 1, parallel = 1, ordered = 1;
    double rate = 0;

    kvs_check_options(L, 2, options, call);
    u = kvs_newuserdata(L, sizeof *u);     /* first: cfg points into its hook */
    memset(u, 0, sizeof *u);
    kvs_page_init(&u->page);
    luaL_getmetatable(L, KVS_LISTING_MT);
    lua_setmetatable(L, -2);
    read_common(L, c, id, &cfg, &u->hook);
    cfg.page_size = (int)kvs_opt_integer(L, 2, "page_size", 1, KVS_MAX_PAGE_SIZE,
                                         KVS_MAX_PAGE_SIZE);
    cfg.limit = kvs_opt_integer(L, 2, "limit", 0, 0x7fffffffffffffffLL, -1);
    if (!lua_isnoneornil(L, 2)) {
        lua_getfield(L, 2, "prefetch");
        prefetch = lua_isnil(L, -1) || lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (call == KEYS && !lua_isnoneornil(L, 2)) {
        parallel = (int)kvs_opt_integer(L, 2, "parallel", 1, KVS_PAR_MAX, 1);
        lua_getfield(L, 2, "rate_limit");
        if (!lua_isnil(L, -1)) {
            rate = (double)lua_tonumber(L, -1);
            if (!(rate > 0 && rate <= 1e6))
                luaL_argerror(L, 2, "option 'rate_limit' must be a number in (0, 1e6]");
        }
        lua_getfield(L, 2, "ordered");
        ordered = lua_isnil(L, -1) || lua_toboolean(L, -1);
        lua_pop(L, 2);
    }

    cfg.seed = kvs_random_seed(u);
    if (!(u->core = kvs_listing_new(&cfg)))
        luaL_error(L, "apify.kvs: out of memory");
    u->client = c;
    c->refs++;
    u->run = L_RUNNING;
    u->prefetch = prefetch;
    if ((parallel > 1 || rate > 0) && !(u->par = kvs_par_new(&c->settings, &cfg, parallel, rate, ordered)))
        luaL_error(L, "apify.kvs: out of memory");
    return u;
}

int kvs_store_keys(lua_State *L)
{
    listing_ud *u = new_listing(L, KEYS);
    u->kind = u->par ? KIND_PARALLEL : KIND_KEYS;
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, keys_next, 1);     /* iterator */
    lua_pushvalue(L, -2);                  /* state: the listing */
    lua_pushnil(L);                        /* control */
    lua_pushvalue(L, -4);                  /* to-be-closed on 5.4 */
    return 4;
}

int kvs_store_listing(lua_State *L)
{
    new_listing(L, LISTING)->kind = KIND_LISTING;
    return 1;
}

int kvs_store_job(lua_State *L)
{
    listing_ud *u = new_listing(L, LISTING);
    u->kind = KIND_JOB;
    u->prefetch = 1;
    u->budget = -1;
    kvs_listing_drive(L, u);
    kvs_async_budget(u->async, KVS_JOB_POLL_BUDGET);
    return 1;
}

listing_ud *kvs_check_listing(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, KVS_LISTING_MT);
}

/* What a script sees each kind as (all share one metatable). */
static const char *const kind_names[] = {
    "apify.kvs.keys", "apify.kvs.keys", "apify.kvs.listing", "apify.kvs.job"
};

listing_ud *kvs_check_kind(lua_State *L, int idx, listing_kind kind)
{
    listing_ud *u = kvs_check_listing(L, idx);
    if (u->kind != kind)
        luaL_argerror(L, idx, lua_pushfstring(L, "%s expected, got %s", kind_names[kind],
                      kind_names[u->kind]));
    return u;
}

/* Nothing is left to hand out: closing now cancels nothing. */
static int used_up(const listing_ud *u)
{
    if (!u->core || u->par || u->pos < u->page.count) return 0;
    if (u->async) return kvs_async_finished(u->async);
    return u->kind == KIND_LISTING && kvs_listing_finished(u->core);
}

static int listing_close(lua_State *L)
{
    listing_ud *u = kvs_check_listing(L, 1);
    if (u->run == L_RUNNING && !used_up(u)) u->run = L_CANCELLED;
    if (u->run == L_RUNNING) u->run = L_DONE;
    if (u->core) kvs_listing_release(L, u);
    return 0;
}

static int listing_tostring(lua_State *L)
{
    static const char *const states[] = { "open", "closed", "failed", "closed" };
    static const char *const job_states[] = { "running", "done", "failed", "cancelled" };
    listing_ud *u = kvs_check_listing(L, 1);
    lua_pushfstring(L, "%s (%s)", kind_names[u->kind],
                    (u->kind == KIND_JOB ? job_states : states)[u->run]);
    return 1;
}

void kvs_open_listing(lua_State *L)
{
    static const luaL_Reg meta[] = {
        { "__gc", listing_close },
#if LUA_VERSION_NUM >= 504
        { "__close", listing_close },
#endif
        { "__tostring", listing_tostring },
        { NULL, NULL }
    };
    static const luaL_Reg methods[] = { { "close", listing_close }, { NULL, NULL } };
    static const luaL_Reg error_meta[] = { { "__tostring", error_tostring }, { NULL, NULL } };
    static const luaL_Reg page_box_meta[] = { { "__gc", page_box_gc }, { NULL, NULL } };
    kvs_new_class(L, KVS_LISTING_MT, meta, methods);
    luaL_getmetatable(L, KVS_LISTING_MT);
    lua_getfield(L, -1, "__index");
    kvs_open_sansio(L, lua_gettop(L));
    kvs_open_job(L, lua_gettop(L));
    lua_pop(L, 2);
    kvs_new_class(L, KVS_ERROR_MT, error_meta, NULL);
    kvs_new_class(L, PAGE_BOX_MT, page_box_meta, NULL);
}
