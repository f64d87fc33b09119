/*
 * lua_sansio.c — store:listing{...} (type apify.kvs.listing), for drivers of
 * one's own (OpenResty, luasocket, any event loop): the C core says what to
 * request and what each reply means; the driver moves the bytes and does the
 * waiting.  listing:page_keys() iterates the latest page.  A driver that moves raw
 * bytes (an nginx cosocket) takes each request as HTTP/1.1 bytes (http_request) and
 * feeds the reply's bytes back as they come (http_feed), lua_http.c.
 */
#include "lua_ffi.h"
#include "lua_listing.h"

static listing_ud *check_listing(lua_State *L)
{
    return kvs_check_class(L, 1, KVS_LISTING_MT);
}

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
    kvs_push_request_headers(L, &u->client->settings);
    return 2;
}

static int listing_begin(lua_State *L)
{
    listing_ud *u = check_open(L);
    kvs_listing_reply_begin(u->core, kvs_check_status(L, 2));
    return 0;
}

static void to_listing(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    kvs_listing_reply_header(ud, name, nlen, value, vlen);
}

static int listing_header(lua_State *L)
{
    listing_ud *u = check_open(L);
    luaL_checkstring(L, 2);
    kvs_feed_header(L, 2, 3, to_listing, u->core);
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
        kvs_view_page(L, u);
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

/* The caller's clock (seconds, for max_elapsed) at idx, or the monotonic one. */
static double opt_now(lua_State *L, int idx)
{
    return lua_isnoneornil(L, idx) ? kvs_monotonic() : (double)luaL_checknumber(L, idx);
}

/* listing:finish([fault [, message [, now]]]) -> "page", n | "retry", seconds | "failed", err */
static int listing_finish(lua_State *L)
{
    listing_ud *u = check_open(L);
    kvs_fault fault = kvs_check_fault(L, 2);
    const char *msg = luaL_optstring(L, 3, NULL);
    double wait, now = opt_now(L, 4);
    kvs_step step;
    u->hook.L = L;
    step = kvs_listing_reply_end(u->core, fault, msg, now, &wait);
    return push_step(L, u, step, wait);
}

/* listing:reply(status, headers, body [, now]): a whole reply at once */
static int listing_reply(lua_State *L)
{
    listing_ud *u = check_open(L);
    int status = kvs_check_status(L, 2);
    size_t n = 0;
    const char *body;
    double wait, now = opt_now(L, 5);
    kvs_step step;
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    body = luaL_optlstring(L, 4, "", &n);
    kvs_listing_reply_begin(u->core, status);
    kvs_feed_headers(L, 3, to_listing, u->core);
    kvs_listing_reply_body(u->core, body, n);
    u->hook.L = L;
    step = kvs_listing_reply_end(u->core, KVS_FAULT_NONE, NULL, now, &wait);
    return push_step(L, u, step, wait);
}

/* A request that cannot be sent as it is (the URL, the client's settings): the listing fails. */
static int refuse(lua_State *L, listing_ud *u, const char *why)
{
    double wait;
    u->hook.L = L;
    kvs_listing_reply_end(u->core, KVS_FAULT_REQUEST, why, kvs_monotonic(), &wait);
    u->run = L_FAILED;
    u->err = *kvs_listing_error(u->core);
    lua_pushnil(L);
    kvs_push_error(L, &u->err);
    return 2;
}

/* listing:http_request() -> { request =, host =, port =, tls =, timeout = } | nil (finished)
 * | nil, err (failed): the next request as raw HTTP/1.1 bytes, its reply to http_feed */
static int listing_http_request(lua_State *L)
{
    listing_ud *u = check_open(L);
    kvs_request req;
    const char *why;
    if (!kvs_listing_next_request(u->core, &req)) {
        lua_pushnil(L);
        if (!kvs_listing_failed(u->core)) return 1;
        kvs_push_error(L, kvs_listing_error(u->core));
        return 2;
    }
    if ((why = kvs_push_http_request(L, &u->client->settings, req.url, req.url_len)))
        return refuse(L, u, why);
    if (!u->http && !(u->http = kvs_http_reader_new(&kvs_listing_sink)))
        return refuse(L, u, "out of memory");
    kvs_http_reader_begin(u->http, u->core);
    return 1;
}

/* listing:http_feed(bytes | nil [, now]) -> nothing while the reply goes on (nil: the
 * connection closed); at its end "page", n | "retry", seconds | "failed", err, and whether
 * the connection may carry the next request */
static int listing_http_feed(lua_State *L)
{
    listing_ud *u = check_open(L);
    int st, n;
    double wait, now;
    kvs_step step;
    if (!u->http) luaL_argerror(L, 1, "no http_request() awaits its reply");
    if ((st = kvs_http_feed_arg(L, u->http, 2)) == KVS_HTTP_MORE) return 0;
    now = opt_now(L, 3);
    u->hook.L = L;
    step = kvs_listing_reply_end(u->core, st == KVS_HTTP_DONE ? KVS_FAULT_NONE : KVS_FAULT_NETWORK,
                                 st == KVS_HTTP_DONE ? NULL : kvs_http_reader_message(u->http),
                                 now, &wait);
    n = push_step(L, u, step, wait);
    lua_pushboolean(L, kvs_http_reader_reusable(u->http));
    return n + 1;
}

static int page_next(lua_State *L)
{
    listing_ud *u = lua_touserdata(L, lua_upvalueindex(1));
    if (u->view.pos < u->view.count)
        return kvs_push_item(L, u);
    return 0;
}

/* listing:page_keys() -> iterator over the keys of the latest page (one
 * function for the listing's life, whatever the number of pages) */
static int listing_page_keys(lua_State *L)
{
    check_listing(L);
    kvs_push_kept_iterator(L, 1);
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

static int store_listing(lua_State *L)
{
    kvs_listing_config cfg;
    kvs_opts o;
    listing_ud *u;
    if (kvs_plan_wanted(L)) return kvs_store_plan(L);    /* parallel: lua_plan.c */
    u = kvs_new_listing(L, KVS_CALL_LISTING, KVS_LISTING_MT, &o, &cfg, 1);
    kvs_listing_start(L, u, &cfg);
    kvs_listing_decode_gzip(u->core, 1);   /* its driver hands over bodies as they came */
    if (!kvs_ffi_iterator(L, -1, "page", u->view.urls)) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, page_next, 1);
    }
    kvs_keep_iterator(L, -2);
    return 1;
}

/* Nothing is left to hand out: closing now cancels nothing. */
static int listing_close(lua_State *L)
{
    listing_ud *u = check_listing(L);
    kvs_listing_close(L, u, u->core && u->view.pos >= u->view.count
                            && kvs_listing_finished(u->core));
    return 0;
}

static int listing_tostring(lua_State *L)
{
    static const char *const states[] = { "open", "closed", "failed", "closed" };
    return kvs_listing_tostring(L, check_listing(L), KVS_LISTING_MT, states);
}

void kvs_sansio_open(lua_State *L, int store_methods)
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
        { "request", listing_request }, { "begin", listing_begin },
        { "header", listing_header }, { "body", listing_body }, { "finish", listing_finish },
        { "reply", listing_reply }, { "http_request", listing_http_request },
        { "http_feed", listing_http_feed }, { "page_keys", listing_page_keys },
        { "finished", listing_finished }, { "error", listing_error },
        { "close", listing_close }, { NULL, NULL }
    };
    kvs_new_class(L, KVS_LISTING_MT, meta, methods);
    kvs_ffi_bind(L, "page", NULL, NULL);
    lua_pushvalue(L, store_methods);
    lua_pushcfunction(L, store_listing);
    lua_setfield(L, -2, "listing");
    lua_pop(L, 1);
}
