/*
 * lua_http.c — the raw HTTP/1.1 hooks of the sans-I/O listing (lua_sansio.c)
 * and of the plan (lua_plan.c), for drivers that move bytes themselves (an
 * nginx cosocket, luasocket): a request as the bytes to send and where to
 * send them, made by the core (core_http.c), and the reply's bytes read into
 * the core as they come, cut anywhere.
 */
#include <string.h>

#include "lua_listing.h"

/* Pushes { request =, host =, port =, tls =, timeout = } for `url`, or nothing and
 * why the URL cannot be requested. */
const char *kvs_push_http_request(lua_State *L, const kvs_settings *s, const char *url, size_t n)
{
    kvs_buf bytes = { NULL, 0, 0 };
    kvs_http_target t;
    kvs_http_fields f;
    const char *why;
    f.user_agent = s->user_agent;
    f.token = s->token;
    f.gzip = s->gzip;
    why = kvs_http_request(&bytes, &t, url, n, &f);
    if (!why) {
        lua_createtable(L, 0, 5);
        lua_pushlstring(L, bytes.data, bytes.len);
        lua_setfield(L, -2, "request");
        lua_pushlstring(L, t.host, t.host_len);
        lua_setfield(L, -2, "host");
        lua_pushinteger(L, (lua_Integer)t.port);
        lua_setfield(L, -2, "port");
        lua_pushboolean(L, t.tls);
        lua_setfield(L, -2, "tls");
        lua_pushnumber(L, s->timeout);
        lua_setfield(L, -2, "timeout");
    }
    if (bytes.data) {
        /* it held the token: wiped before it is freed */
        volatile char *p = bytes.data;
        size_t i;
        for (i = 0; i < bytes.cap; i++) p[i] = 0;
    }
    kvs_buf_free(&bytes);
    return why;
}

/* The bytes at idx (a string), or the end of the connection (nil): KVS_HTTP_*. */
int kvs_http_feed_arg(lua_State *L, kvs_http_reader *r, int idx)
{
    size_t n;
    const char *data;
    luaL_checkany(L, idx);
    if (lua_isnil(L, idx)) return kvs_http_reader_eof(r);
    data = luaL_checklstring(L, idx, &n);
    return kvs_http_reader_feed(r, data, n);
}

/* A listing as the reader's sink. */
static void listing_begin(void *ud, int status)
{
    kvs_listing_reply_begin(ud, status);
}

static void listing_header(void *ud, const char *name, size_t nlen, const char *value, size_t vlen)
{
    kvs_listing_reply_header(ud, name, nlen, value, vlen);
}

static int listing_body(void *ud, const char *data, size_t len)
{
    return kvs_listing_reply_body(ud, data, len);
}

const kvs_http_sink kvs_listing_sink = { listing_begin, listing_header, listing_body };
