/*
 * lua_plan.c — store:listing{} (parallel = "auto" or n): the parallel planner
 * (core_parallel.c) for drivers of one's own (OpenResty, luasocket, a
 * simulator).  The plan says which requests to send now and which to abort,
 * and takes the replies by request id; the driver moves the bytes, keeps the
 * clock (`now`, seconds, any origin) and does the waiting.  A driver that moves raw
 * bytes takes requests as HTTP/1.1 bytes (http_requests) and feeds each reply's bytes
 * back by request id as they come (http_feed): one reader per request in flight.
 */
#include <stdlib.h>
#include <string.h>

#include "lua_listing.h"

#define KVS_PLAN_MT "apify.kvs.plan"

/* A request of http_requests() awaiting the rest of its reply. */
typedef struct http_xfer {
    kvs_plan        *plan;
    unsigned         id;
    kvs_http_reader *r;
} http_xfer;

typedef struct plan_ud {
    kvs_plan      *plan;        /* NULL: closed */
    kvs_client    *client;
    kvs_page       page;        /* the page taken last */
    size_t         pos;
    int            urls;        /* hand out recordPublicUrl (option urls, default true) */
    kvs_retry_hook hook;        /* hook.L: set by every call that may drive the plan */
    http_xfer    **xfers;       /* raw replies being read, by request id */
    size_t         nxfers, xfers_cap;
} plan_ud;

/* store:listing{} plans key ranges (parallel = "auto"), unless parallel = 1 without
 * rate_limit or ordered asks for the page-by-page listing. */
int kvs_plan_wanted(lua_State *L)
{
    int one;
    if (lua_type(L, 2) != LUA_TTABLE) return 1;
    lua_getfield(L, 2, "parallel");
    lua_getfield(L, 2, "rate_limit");
    lua_getfield(L, 2, "ordered");
    one = lua_type(L, -3) == LUA_TNUMBER && lua_tonumber(L, -3) == 1
          && lua_isnil(L, -2) && lua_isnil(L, -1);
    lua_pop(L, 3);
    return !one;
}

static plan_ud *check_plan(lua_State *L)
{
    plan_ud *u = kvs_check_class(L, 1, KVS_PLAN_MT);
    if (!u->plan) luaL_argerror(L, 1, "plan is closed");
    u->hook.L = L;
    return u;
}

static double opt_now(lua_State *L, int idx)
{
    return lua_isnoneornil(L, idx) ? kvs_monotonic() : (double)luaL_checknumber(L, idx);
}

static unsigned check_id(lua_State *L, int idx)
{
    lua_Integer id = luaL_checkinteger(L, idx);
    luaL_argcheck(L, id > 0 && id <= 0xffffffffLL, idx, "request id expected");
    return (unsigned)id;
}

/* store:listing{ parallel = "auto" | n, ordered =, rate_limit =, ... } -> plan */
int kvs_store_plan(lua_State *L)
{
    const char *id;
    kvs_client *c = kvs_check_store(L, 1, &id);
    kvs_listing_config cfg;
    kvs_opts o;
    plan_ud *u;

    kvs_read_options(L, 2, KVS_CALL_PLAN, &o);
    u = kvs_newuserdata(L, sizeof *u);   /* first: cfg points into its hook */
    memset(u, 0, sizeof *u);
    kvs_page_init(&u->page);
    luaL_getmetatable(L, KVS_PLAN_MT);
    lua_setmetatable(L, -2);
    kvs_read_config(L, c, id, &o, &cfg, &u->hook);
    u->urls = (int)o.urls.i;
    if (!(u->plan = kvs_plan_new(&cfg, (int)o.parallel.i, o.rate_limit.n, (int)o.ordered.i)))
        luaL_error(L, "apify.kvs: out of memory");
    kvs_plan_decode_gzip(u->plan, 1);   /* its driver hands over bodies as they came */
    u->client = c;
    c->refs++;
    return 1;
}

/* --- raw HTTP/1.1: one reader per request in flight --------------------------- */

static void xfer_begin(void *ud, int status)
{
    http_xfer *x = ud;
    kvs_plan_reply_begin(x->plan, x->id, status);
}

static void xfer_header(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    http_xfer *x = ud;
    kvs_plan_reply_header(x->plan, x->id, name, nlen, value, vlen);
}

static int xfer_body(void *ud, const char *data, size_t len)
{
    http_xfer *x = ud;
    return kvs_plan_reply_body(x->plan, x->id, data, len);
}

static const kvs_http_sink xfer_sink = { xfer_begin, xfer_header, xfer_body };

static size_t xfer_find(const plan_ud *u, unsigned id)
{
    size_t i;
    for (i = 0; i < u->nxfers; i++)
        if (u->xfers[i]->id == id) break;
    return i;
}

/* Forgets the reader of request id (its reply ended, failed or was cancelled). */
static void xfer_drop(plan_ud *u, unsigned id)
{
    size_t i = xfer_find(u, id);
    if (i == u->nxfers) return;
    kvs_http_reader_free(u->xfers[i]->r);
    free(u->xfers[i]);
    u->xfers[i] = u->xfers[--u->nxfers];
}

/* A reader for request id, reading from its first byte; NULL: out of memory. */
static http_xfer *xfer_start(plan_ud *u, unsigned id)
{
    http_xfer *x;
    if (u->nxfers == u->xfers_cap) {
        size_t cap = u->xfers_cap ? 2 * u->xfers_cap : 8;
        http_xfer **more = realloc(u->xfers, cap * sizeof *more);
        if (!more) return NULL;
        u->xfers = more;
        u->xfers_cap = cap;
    }
    if (!(x = malloc(sizeof *x))) return NULL;
    if (!(x->r = kvs_http_reader_new(&xfer_sink))) {
        free(x);
        return NULL;
    }
    x->plan = u->plan;
    x->id = id;
    kvs_http_reader_begin(x->r, x);
    u->xfers[u->nxfers++] = x;
    return x;
}

static void xfers_free(plan_ud *u)
{
    while (u->nxfers) xfer_drop(u, u->xfers[0]->id);
    free(u->xfers);
    u->xfers = NULL;
    u->xfers_cap = 0;
}

/* plan:http_requests([now]) -> { { id =, shard =, attempt =, request =, host =, port =,
 * tls =, timeout = }, ... }: the requests to send now as raw HTTP/1.1 bytes; their replies
 * to http_feed.  One that cannot be sent as it is fails the plan (plan:error()). */
static int plan_http_requests(lua_State *L)
{
    plan_ud *u = check_plan(L);
    double now = opt_now(L, 2);
    kvs_plan_request req;
    int n = 0;
    lua_newtable(L);
    while (kvs_plan_next_request(u->plan, now, &req)) {
        const char *why = kvs_push_http_request(L, &u->client->settings, req.url, req.url_len);
        if (!why && !xfer_start(u, req.id)) {
            lua_pop(L, 1);
            why = "out of memory";
        }
        if (why) {
            kvs_plan_reply_end(u->plan, req.id, KVS_FAULT_REQUEST, why, now);
            continue;
        }
        lua_pushinteger(L, (lua_Integer)req.id);
        lua_setfield(L, -2, "id");
        lua_pushinteger(L, (lua_Integer)req.shard);
        lua_setfield(L, -2, "shard");
        lua_pushinteger(L, req.attempt);
        lua_setfield(L, -2, "attempt");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* plan:http_feed(id, bytes | nil [, now]) -> nothing while the reply goes on (nil: the
 * connection closed); at its end (the plan took it) true and whether the connection may
 * carry the next request.  A request the plan no longer waits for ends at once. */
static int plan_http_feed(lua_State *L)
{
    plan_ud *u = check_plan(L);
    unsigned id = check_id(L, 2);
    size_t i = xfer_find(u, id);
    http_xfer *x;
    int st;
    if (i == u->nxfers) {
        luaL_checkany(L, 3);
        lua_pushboolean(L, 1);
        lua_pushboolean(L, 0);
        return 2;
    }
    x = u->xfers[i];
    if ((st = kvs_http_feed_arg(L, x->r, 3)) == KVS_HTTP_MORE) return 0;
    kvs_plan_reply_end(u->plan, id, st == KVS_HTTP_DONE ? KVS_FAULT_NONE : KVS_FAULT_NETWORK,
                       st == KVS_HTTP_DONE ? NULL : kvs_http_reader_message(x->r), opt_now(L, 4));
    lua_pushboolean(L, 1);
    lua_pushboolean(L, kvs_http_reader_reusable(x->r));
    xfer_drop(u, id);
    return 2;
}

/* plan:requests([now]) -> { { id =, url =, headers =, shard =, attempt = }, ... } */
static int plan_requests(lua_State *L)
{
    plan_ud *u = check_plan(L);
    double now = opt_now(L, 2);
    kvs_plan_request req;
    int n = 0;
    lua_newtable(L);
    while (kvs_plan_next_request(u->plan, now, &req)) {
        lua_createtable(L, 0, 5);
        lua_pushinteger(L, (lua_Integer)req.id);
        lua_setfield(L, -2, "id");
        lua_pushlstring(L, req.url, req.url_len);
        lua_setfield(L, -2, "url");
        lua_pushinteger(L, (lua_Integer)req.shard);
        lua_setfield(L, -2, "shard");
        lua_pushinteger(L, req.attempt);
        lua_setfield(L, -2, "attempt");
        kvs_push_request_headers(L, &u->client->settings);
        lua_setfield(L, -2, "headers");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* plan:cancels() -> { id, ... }: transfers to abort (their replies would be ignored) */
static int plan_cancels(lua_State *L)
{
    plan_ud *u = check_plan(L);
    unsigned id;
    int n = 0;
    lua_newtable(L);
    while (kvs_plan_next_cancel(u->plan, &id)) {
        xfer_drop(u, id);
        lua_pushinteger(L, (lua_Integer)id);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* A header of reply `id`, for kvs_feed_header(s) */
typedef struct { kvs_plan *plan; unsigned id; } reply_to;

static void to_plan(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    reply_to *r = ud;
    kvs_plan_reply_header(r->plan, r->id, name, nlen, value, vlen);
}

/* plan:begin(id, status) */
static int plan_begin(lua_State *L)
{
    plan_ud *u = check_plan(L);
    unsigned id = check_id(L, 2);
    kvs_plan_reply_begin(u->plan, id, kvs_check_status(L, 3));
    return 0;
}

/* plan:header(id, name, value) */
static int plan_header(lua_State *L)
{
    plan_ud *u = check_plan(L);
    unsigned id = check_id(L, 2);
    reply_to r;
    luaL_checkstring(L, 3);
    r.plan = u->plan;
    r.id = id;
    kvs_feed_header(L, 3, 4, to_plan, &r);
    return 0;
}

/* plan:body(id, chunk) -> true, or false when the rest of the body cannot matter */
static int plan_body(lua_State *L)
{
    plan_ud *u = check_plan(L);
    unsigned id = check_id(L, 2);
    size_t n;
    const char *chunk = luaL_checklstring(L, 3, &n);
    lua_pushboolean(L, kvs_plan_reply_body(u->plan, id, chunk, n) == 0);
    return 1;
}

/* plan:finish(id [, fault [, message [, now]]]): the end of a transfer (begun, or failed) */
static int plan_finish(lua_State *L)
{
    plan_ud *u = check_plan(L);
    unsigned id = check_id(L, 2);
    kvs_fault fault = kvs_check_fault(L, 3);
    const char *msg = luaL_optstring(L, 4, NULL);
    xfer_drop(u, id);
    kvs_plan_reply_end(u->plan, id, fault, msg, opt_now(L, 5));
    return 0;
}

/* plan:reply(id, status, headers, body [, now]): a whole reply at once */
static int plan_reply(lua_State *L)
{
    plan_ud *u = check_plan(L);
    unsigned id = check_id(L, 2);
    int status = kvs_check_status(L, 3);
    reply_to r;
    size_t n = 0;
    const char *body;
    double now = opt_now(L, 6);
    if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
    body = luaL_optlstring(L, 5, "", &n);
    kvs_plan_reply_begin(u->plan, id, status);
    r.plan = u->plan;
    r.id = id;
    kvs_feed_headers(L, 4, to_plan, &r);
    kvs_plan_reply_body(u->plan, id, body, n);
    kvs_plan_reply_end(u->plan, id, KVS_FAULT_NONE, NULL, now);
    return 0;
}

/* plan:timeout([now]) -> seconds until requests() has one (0: now), or nil: not
 * before a reply comes (or never: finished, failed) */
static int plan_timeout(lua_State *L)
{
    plan_ud *u = check_plan(L);
    double t = kvs_plan_timeout(u->plan, opt_now(L, 2));
    if (t < 0) return 0;
    lua_pushnumber(L, t);
    return 1;
}

/* plan:take() -> number of keys of the next page (then page_keys()), or nil: none ready */
static int plan_take(lua_State *L)
{
    plan_ud *u = check_plan(L);
    if (!kvs_plan_take_page(u->plan, &u->page)) return 0;
    u->pos = 0;
    lua_pushinteger(L, (lua_Integer)u->page.count);
    return 1;
}

static int page_next(lua_State *L)
{
    plan_ud *u = lua_touserdata(L, lua_upvalueindex(1));
    const kvs_item *it;
    if (u->pos >= u->page.count) return 0;
    it = &u->page.items[u->pos++];
    lua_pushlstring(L, u->page.bytes.data + it->key_off, it->key_len);
    kvs_pushsize(L, it->size);
    if (it->url_off != KVS_NO_URL && u->urls)
        lua_pushlstring(L, u->page.bytes.data + it->url_off, it->url_len);
    else
        lua_pushnil(L);
    return 3;
}

/* plan:page_keys() -> iterator of key, size, url over the page taken last */
static int plan_page_keys(lua_State *L)
{
    kvs_check_class(L, 1, KVS_PLAN_MT);
    lua_settop(L, 1);
    lua_pushcclosure(L, page_next, 1);
    return 1;
}

static int plan_finished(lua_State *L)
{
    plan_ud *u = kvs_check_class(L, 1, KVS_PLAN_MT);
    lua_pushboolean(L, !u->plan || kvs_plan_finished(u->plan));
    return 1;
}

static int plan_error(lua_State *L)
{
    plan_ud *u = kvs_check_class(L, 1, KVS_PLAN_MT);
    const kvs_error *e = u->plan ? kvs_plan_error(u->plan) : NULL;
    if (!e) return 0;
    kvs_push_error(L, e);
    return 1;
}

/* plan:stats() -> { requests =, throttled =, ranges =, rate =, inflight =, alive =, held =,
 *                  parallel =, rtt = } */
static int plan_stats(lua_State *L)
{
    plan_ud *u = check_plan(L);
    kvs_plan_stats st;
    kvs_plan_stats_get(u->plan, &st);
    lua_createtable(L, 0, 9);
    lua_pushinteger(L, st.requests);
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, st.throttled);
    lua_setfield(L, -2, "throttled");
    lua_pushinteger(L, st.shards);
    lua_setfield(L, -2, "ranges");
    lua_pushnumber(L, st.rate);
    lua_setfield(L, -2, "rate");
    lua_pushinteger(L, kvs_plan_inflight(u->plan));
    lua_setfield(L, -2, "inflight");
    lua_pushinteger(L, st.alive);
    lua_setfield(L, -2, "alive");
    lua_pushinteger(L, st.held);
    lua_setfield(L, -2, "held");
    lua_pushinteger(L, st.parallel);
    lua_setfield(L, -2, "parallel");
    lua_pushnumber(L, st.rtt);
    lua_setfield(L, -2, "rtt");
    return 1;
}

static int plan_close(lua_State *L)
{
    plan_ud *u = kvs_check_class(L, 1, KVS_PLAN_MT);
    xfers_free(u);
    kvs_plan_free(u->plan);
    kvs_page_free(&u->page);
    if (u->client) kvs_client_release(L, u->client);
    u->plan = NULL;
    u->client = NULL;
    u->pos = 0;
    return 0;
}

static int plan_tostring(lua_State *L)
{
    plan_ud *u = kvs_check_class(L, 1, KVS_PLAN_MT);
    const char *state = !u->plan ? "closed" : kvs_plan_error(u->plan) ? "failed"
                      : kvs_plan_finished(u->plan) ? "finished" : "open";
    lua_pushfstring(L, KVS_PLAN_MT " (%s)", state);
    return 1;
}

void kvs_open_plan(lua_State *L)
{
    static const luaL_Reg meta[] = {
        { "__gc", plan_close },
#if LUA_VERSION_NUM >= 504
        { "__close", plan_close },
#endif
        { "__tostring", plan_tostring }, { NULL, NULL }
    };
    static const luaL_Reg methods[] = {
        { "requests", plan_requests }, { "cancels", plan_cancels }, { "begin", plan_begin },
        { "http_requests", plan_http_requests }, { "http_feed", plan_http_feed },
        { "header", plan_header }, { "body", plan_body }, { "finish", plan_finish },
        { "reply", plan_reply }, { "timeout", plan_timeout }, { "take", plan_take },
        { "page_keys", plan_page_keys }, { "finished", plan_finished }, { "error", plan_error },
        { "stats", plan_stats }, { "close", plan_close }, { NULL, NULL }
    };
    kvs_new_class(L, KVS_PLAN_MT, meta, methods);
}
