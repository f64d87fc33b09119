/*
 * lua_listing.c — store:list_keys (one page, `nil, err` on failure) and
 * store:keys (the generic-for iterator that hides exclusiveStartKey paging),
 * the listing userdata behind the iterator, and error objects.
 */
#include <string.h>

#include "kvs.h"

typedef enum { L_RUNNING, L_DONE, L_FAILED } run_t;

typedef struct listing_ud {
    kvs_client  *client;
    kvs_listing *core;
    kvs_conn    *conn;
    kvs_page     page;      /* the page being handed out */
    size_t       pos;       /* next item of `page` */
    run_t        run;
    kvs_error    err;       /* when run == L_FAILED */
} listing_ud;

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

/* --- options -> core config -------------------------------------------------------- */

static const kvs_optspec keys_options[] = {
    { "prefix", LUA_TSTRING }, { "collection", LUA_TSTRING }, { "signature", LUA_TSTRING },
    { "exclusiveStartKey", LUA_TSTRING }, { "page_size", LUA_TNUMBER },
    { "limit", LUA_TNUMBER }, { NULL, 0 }
};

static const kvs_optspec list_keys_options[] = {
    { "prefix", LUA_TSTRING }, { "collection", LUA_TSTRING }, { "signature", LUA_TSTRING },
    { "exclusiveStartKey", LUA_TSTRING }, { "limit", LUA_TNUMBER }, { NULL, 0 }
};

static void read_common(lua_State *L, kvs_client *c, const char *id, kvs_listing_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->base_url = c->base_url;
    cfg->store_id = id;
    cfg->prefix = kvs_opt_string(L, 2, "prefix", NULL);
    cfg->collection = kvs_opt_string(L, 2, "collection", NULL);
    cfg->signature = kvs_opt_string(L, 2, "signature", NULL);
    cfg->start_key = kvs_opt_string(L, 2, "exclusiveStartKey", &cfg->start_key_len);
    cfg->max_retries = c->max_retries;
    cfg->min_delay = c->min_delay;
    cfg->http_date_delay = kvs_http_date_delay;
}

/* --- list_keys: one page ----------------------------------------------------------- */

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
    kvs_page page;
    kvs_error err;
    int rc;

    kvs_check_options(L, 2, list_keys_options);
    read_common(L, c, id, &cfg);
    cfg.page_size = (int)kvs_opt_integer(L, 2, "limit", 1, KVS_MAX_PAGE_SIZE, KVS_MAX_PAGE_SIZE);
    cfg.limit = -1;
    cfg.single_page = 1;
    cfg.seed = kvs_random_seed(&cfg);

    core = kvs_listing_new(&cfg);
    conn = core ? kvs_conn_new(c) : NULL;
    if (!conn) {
        kvs_listing_free(core);
        return luaL_error(L, "apify.kvs: out of memory");
    }
    kvs_page_init(&page);
    rc = kvs_conn_next_page(conn, core, &page);   /* a failure leaves `page` empty */
    if (rc < 0) err = *kvs_listing_error(core);
    kvs_conn_free(conn);
    kvs_listing_free(core);
    if (rc < 0) {
        kvs_page_free(&page);
        lua_pushnil(L);
        kvs_push_error(L, &err);
        return 2;
    }
    push_page_table(L, &page);   /* (a Lua memory error here would leak one page) */
    kvs_page_free(&page);
    return 1;
}

/* --- keys: the iterator ---------------------------------------------------------------- */

/* Lets go of the connection and the buffers; keeps an error for re-raising. */
static void listing_release(listing_ud *u)
{
    if (u->core && u->run == L_FAILED && kvs_listing_error(u->core))
        u->err = *kvs_listing_error(u->core);
    kvs_conn_free(u->conn);
    kvs_listing_free(u->core);
    kvs_page_free(&u->page);
    kvs_client_release(u->client);
    u->conn = NULL;
    u->core = NULL;
    u->client = NULL;
    u->pos = 0;
}

static int push_item(lua_State *L, listing_ud *u)
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

static int next_page_then_item(lua_State *L, listing_ud *u)
{
    for (;;) {
        int rc;
        if (u->run == L_FAILED) {
            kvs_push_error(L, &u->err);
            return lua_error(L);
        }
        if (u->run == L_DONE || !u->core || kvs_listing_finished(u->core)) {
            if (u->core) listing_release(u);
            u->run = L_DONE;
            return 0;
        }
        if (!u->conn && !(u->conn = kvs_conn_new(u->client)))
            return luaL_error(L, "apify.kvs: out of memory");
        rc = kvs_conn_next_page(u->conn, u->core, &u->page);
        if (rc < 0) u->run = L_FAILED;
        if (rc <= 0) { listing_release(u); continue; }
        u->pos = 0;
        if (u->page.count > 0)
            return push_item(L, u);
    }
}

static int keys_next(lua_State *L)
{
    listing_ud *u = lua_touserdata(L, lua_upvalueindex(1));
    if (u->pos < u->page.count)
        return push_item(L, u);     /* the per-key path: three pushes */
    return next_page_then_item(L, u);
}

/* Checks the options at 2 and pushes a new listing userdata for store 1. */
static listing_ud *new_listing(lua_State *L)
{
    const char *id;
    kvs_client *c = kvs_check_store(L, 1, &id);
    kvs_listing_config cfg;
    listing_ud *u;

    kvs_check_options(L, 2, keys_options);
    read_common(L, c, id, &cfg);
    cfg.page_size = (int)kvs_opt_integer(L, 2, "page_size", 1, KVS_MAX_PAGE_SIZE,
                                         KVS_MAX_PAGE_SIZE);
    cfg.limit = kvs_opt_integer(L, 2, "limit", 0, 0x7fffffffffffffffLL, -1);

    u = kvs_newuserdata(L, sizeof *u);
    memset(u, 0, sizeof *u);
    kvs_page_init(&u->page);
    luaL_getmetatable(L, KVS_LISTING_MT);
    lua_setmetatable(L, -2);
    cfg.seed = kvs_random_seed(u);
    if (!(u->core = kvs_listing_new(&cfg)))
        luaL_error(L, "apify.kvs: out of memory");
    u->client = c;
    c->refs++;
    u->run = L_RUNNING;
    return u;
}

int kvs_store_keys(lua_State *L)
{
    new_listing(L);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, keys_next, 1);     /* iterator */
    lua_pushvalue(L, -2);                  /* state: the listing */
    lua_pushnil(L);                        /* control */
    lua_pushvalue(L, -4);                  /* to-be-closed on 5.4 */
    return 4;
}

int kvs_store_listing(lua_State *L)
{
    new_listing(L);
    return 1;
}

static listing_ud *check_listing(lua_State *L)
{
    return luaL_checkudata(L, 1, KVS_LISTING_MT);
}

static int listing_close(lua_State *L)
{
    listing_ud *u = check_listing(L);
    if (u->run == L_RUNNING) u->run = L_DONE;
    if (u->core) listing_release(u);
    return 0;
}

/* --- the sans-I/O methods: a driver of its own moves the bytes ----------------------- */

static listing_ud *check_open(lua_State *L)
{
    listing_ud *u = check_listing(L);
    if (!u->core) luaL_argerror(L, 1, "listing is closed");
    return u;
}

/* listing:request() -> url, headers | nil (finished) | nil, err (failed) */
static int listing_request(lua_State *L)
{
    listing_ud *u = check_open(L);
    kvs_request req;
    if (!kvs_listing_next_request(u->core, &req)) {
        lua_pushnil(L);
        if (!kvs_listing_failed(u->core)) return 1;
        kvs_push_error(L, kvs_listing_error(u->core));
        return 2;
    }
    lua_pushlstring(L, req.url, req.url_len);
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, "application/json");
    lua_setfield(L, -2, "Accept");
    lua_pushstring(L, u->client->user_agent);
    lua_setfield(L, -2, "User-Agent");
    if (u->client->token) {
        lua_pushfstring(L, "Bearer %s", u->client->token);
        lua_setfield(L, -2, "Authorization");
    }
    return 2;
}

static int listing_begin(lua_State *L)
{
    listing_ud *u = check_open(L);
    lua_Integer status = luaL_checkinteger(L, 2);
    luaL_argcheck(L, status >= 100 && status <= 999, 2, "HTTP status must be in 100..999");
    kvs_listing_reply_begin(u->core, (int)status);
    return 0;
}

static void feed_header_value(listing_ud *u, const char *name, size_t nlen, lua_State *L, int idx)
{
    size_t vlen;
    const char *v = lua_tolstring(L, idx, &vlen);
    if (v) kvs_listing_reply_header(u->core, name, nlen, v, vlen);
}

/* name, value; value may also be a list of values (as OpenResty gives repeated headers) */
static void feed_header(lua_State *L, listing_ud *u, int name_idx, int value_idx)
{
    size_t nlen;
    const char *name = lua_tolstring(L, name_idx, &nlen);
    if (!name) return;
    if (lua_type(L, value_idx) == LUA_TTABLE) {
        int i, n = (int)lua_rawlen(L, value_idx);
        for (i = 1; i <= n; i++) {
            lua_rawgeti(L, value_idx, i);
            feed_header_value(u, name, nlen, L, lua_gettop(L));
            lua_pop(L, 1);
        }
    } else {
        feed_header_value(u, name, nlen, L, value_idx);
    }
}

static int listing_header(lua_State *L)
{
    listing_ud *u = check_open(L);
    luaL_checkstring(L, 2);
    feed_header(L, u, 2, 3);
    return 0;
}

/* listing:body(chunk) -> true, or false when the rest of the body cannot matter */
static int listing_body(lua_State *L)
{
    listing_ud *u = check_open(L);
    size_t n;
    const char *chunk = luaL_checklstring(L, 2, &n);
    lua_pushboolean(L, kvs_listing_reply_body(u->core, chunk, n) == 0);
    return 1;
}

static int push_step(lua_State *L, listing_ud *u, kvs_step step, double wait)
{
    switch (step) {
    case KVS_STEP_PAGE:
        kvs_listing_take_page(u->core, &u->page);
        u->pos = 0;
        lua_pushliteral(L, "page");
        lua_pushinteger(L, (lua_Integer)u->page.count);
        return 2;
    case KVS_STEP_RETRY:
        lua_pushliteral(L, "retry");
        lua_pushnumber(L, wait);
        return 2;
    default:
        u->run = L_FAILED;
        u->err = *kvs_listing_error(u->core);
        lua_pushliteral(L, "failed");
        kvs_push_error(L, &u->err);
        return 2;
    }
}

static kvs_fault check_fault(lua_State *L, int idx)
{
    static const char *const kinds[] = { "none", "timeout", "network", NULL };
    static const kvs_fault faults[] = { KVS_FAULT_NONE, KVS_FAULT_TIMEOUT, KVS_FAULT_NETWORK };
    return faults[luaL_checkoption(L, idx, "none", kinds)];
}

/* listing:finish([fault [, message]]) -> "page", n | "retry", seconds | "failed", err */
static int listing_finish(lua_State *L)
{
    listing_ud *u = check_open(L);
    kvs_fault fault = check_fault(L, 2);
    const char *msg = luaL_optstring(L, 3, NULL);
    double wait;
    kvs_step step = kvs_listing_reply_end(u->core, fault, msg, &wait);
    return push_step(L, u, step, wait);
}

/* listing:reply(status, headers, body): a whole reply at once */
static int listing_reply(lua_State *L)
{
    listing_ud *u = check_open(L);
    lua_Integer status = luaL_checkinteger(L, 2);
    size_t n = 0;
    const char *body;
    double wait;
    kvs_step step;
    luaL_argcheck(L, status >= 100 && status <= 999, 2, "HTTP status must be in 100..999");
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    body = luaL_optlstring(L, 4, "", &n);
    kvs_listing_reply_begin(u->core, (int)status);
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) == LUA_TSTRING) feed_header(L, u, lua_gettop(L) - 1, lua_gettop(L));
            lua_pop(L, 1);
        }
    }
    kvs_listing_reply_body(u->core, body, n);
    step = kvs_listing_reply_end(u->core, KVS_FAULT_NONE, NULL, &wait);
    return push_step(L, u, step, wait);
}

static int page_next(lua_State *L)
{
    listing_ud *u = lua_touserdata(L, lua_upvalueindex(1));
    if (u->pos < u->page.count)
        return push_item(L, u);
    return 0;
}

/* listing:page_keys() -> iterator over the keys of the latest page */
static int listing_page_keys(lua_State *L)
{
    check_listing(L);
    lua_settop(L, 1);
    lua_pushcclosure(L, page_next, 1);
    return 1;
}

static int listing_finished(lua_State *L)
{
    listing_ud *u = check_listing(L);
    lua_pushboolean(L, !u->core || kvs_listing_finished(u->core));
    return 1;
}

static int listing_error(lua_State *L)
{
    listing_ud *u = check_listing(L);
    if (u->run != L_FAILED) return 0;
    kvs_push_error(L, &u->err);
    return 1;
}

static int listing_tostring(lua_State *L)
{
    listing_ud *u = check_listing(L);
    lua_pushfstring(L, "apify.kvs.listing (%s)", u->run == L_RUNNING ? "open"
                    : u->run == L_DONE ? "closed" : "failed");
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
    static const luaL_Reg methods[] = {
        { "close", listing_close }, { "request", listing_request }, { "begin", listing_begin },
        { "header", listing_header }, { "body", listing_body }, { "finish", listing_finish },
        { "reply", listing_reply }, { "page_keys", listing_page_keys },
        { "finished", listing_finished }, { "error", listing_error }, { NULL, NULL }
    };
    static const luaL_Reg error_meta[] = { { "__tostring", error_tostring }, { NULL, NULL } };
    kvs_new_class(L, KVS_LISTING_MT, meta, methods);
    kvs_new_class(L, KVS_ERROR_MT, error_meta, NULL);
}
