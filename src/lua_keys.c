/*
 * lua_keys.c — store:keys, the generic-for iterator that hides
 * exclusiveStartKey paging (type apify.kvs.keys: the iterator's state, page
 * by page or in key ranges side by side), and store:list_keys, one page as a
 * table (`nil, err` on failure).
 */
#include <string.h>

#include "lua_ffi.h"
#include "lua_listing.h"

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
    kvs_set_class(L, PAGE_BOX_MT);
    return p;
}

static void set_string_field(lua_State *L, const char *name, int present, const kvs_buf *b)
{
    if (!present) return;
    lua_pushlstring(L, b->data, b->len);
    lua_setfield(L, -2, name);
}

static void push_page_table(lua_State *L, const kvs_page *p, int urls)
{
    size_t i;
    lua_createtable(L, 0, 6);
    lua_createtable(L, (int)p->count, 0);
    for (i = 0; i < p->count; i++) {
        const kvs_item *it = &p->items[i];
        int url = urls && it->url_off != KVS_NO_URL;
        lua_createtable(L, 0, url ? 3 : 2);
        lua_pushlstring(L, p->bytes.data + it->key_off, it->key_len);
        lua_setfield(L, -2, "key");
        kvs_pushsize(L, it->size);
        lua_setfield(L, -2, "size");
        if (url) {
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

static int store_list_keys(lua_State *L)
{
    const char *id;
    kvs_client *c = kvs_check_store(L, 1, &id);
    kvs_listing_config cfg;
    kvs_listing *core;
    kvs_conn *conn;
    kvs_page *page;
    kvs_error err;
    kvs_retry_hook hook;
    kvs_opts o;
    int rc, urls;

    kvs_read_options(L, 2, KVS_CALL_LIST_KEYS, &o);
    kvs_read_config(L, c, id, &o, &cfg, &hook);
    cfg.page_size = (int)o.page_limit.i;
    cfg.limit = -1;
    cfg.single_page = 1;
    urls = (int)o.urls.i;
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
    push_page_table(L, page, urls);    /* may raise: the box frees the page then */
    kvs_page_free(page);               /* now, rather than when the box is collected */
    return 1;
}

/* --- keys: the iterator ---------------------------------------------------------------- */

/* The current page is used up: waits for the next one (blocking).  1: the
 * view shows a page with keys; 0: the listing is over.  Raises its error. */
static int next_page(lua_State *L, listing_ud *u)
{
    u->hook.L = L;
    for (;;) {
        if (u->run == L_FAILED) {
            kvs_push_error(L, &u->err);
            return lua_error(L);
        }
        if (u->run != L_RUNNING || !u->client)
            return 0;
        int rc = u->drv.ops->take(u->drv.d, &u->page);    /* blocks until a page comes */
        if (rc == KVS_DRIVER_AGAIN) {
            kvs_listing_account(L, u);  /* a retry may wait for descriptors: collect the dropped */
        } else if (rc > 0) {
            kvs_view_page(L, u);
            if (u->view.count > 0) return 1;
        } else {
            kvs_listing_settle(L, u);                       /* finished, or failed */
        }
    }
}

#define POLL_EVERY 256   /* keys between two looks at the page in flight */

/* A non-blocking turn of the transfer that brings the next page. */
static void poll_transfer(lua_State *L, listing_ud *u)
{
    u->hook.L = L;
    if (u->drv.ops) u->drv.ops->poll(u->drv.d);
}

static int keys_next(lua_State *L)
{
    listing_ud *u = lua_touserdata(L, lua_upvalueindex(1));
    if (u->view.pos < u->view.count) {
        /* the per-key path: three pushes, and now and then a turn of the transfer */
        if ((u->view.pos & (POLL_EVERY - 1)) == POLL_EVERY - 1) poll_transfer(L, u);
        return kvs_push_item(L, u);
    }
    return next_page(L, u) ? kvs_push_item(L, u) : 0;
}

/* The FFI iterator's calls into C (lua_ffi.c). */
static int keys_ffi_more(lua_State *L)
{
    lua_pushboolean(L, next_page(L, kvs_check_class(L, 1, KVS_KEYS_MT)));
    return 1;
}

static int keys_ffi_poll(lua_State *L)
{
    poll_transfer(L, kvs_check_class(L, 1, KVS_KEYS_MT));
    return 0;
}

static int store_keys(lua_State *L)
{
    kvs_listing_config cfg;
    kvs_opts o;
    listing_ud *u = kvs_new_listing(L, KVS_CALL_KEYS, KVS_KEYS_MT, &o, &cfg, 0);
    kvs_listing_start_driver(L, u, &o, &cfg, (int)o.prefetch.i, 0);
    if (!kvs_ffi_iterator(L, -1, "keys", u->view.urls)) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, keys_next, 1);
    }
    lua_pushvalue(L, -2);                  /* state: the listing */
    lua_pushnil(L);                        /* control */
    lua_pushvalue(L, -4);                  /* to-be-closed on 5.4 */
    return 4;
}

/* Nothing is left to hand out: closing now cancels nothing. */
static int keys_used_up(const listing_ud *u)
{
    return u->drv.ops && u->view.pos >= u->view.count && u->drv.ops->finished(u->drv.d);
}

static int keys_close(lua_State *L)
{
    listing_ud *u = kvs_check_class(L, 1, KVS_KEYS_MT);
    kvs_listing_close(L, u, keys_used_up(u));
    return 0;
}

static int keys_tostring(lua_State *L)
{
    static const char *const states[] = { "open", "closed", "failed", "closed" };
    return kvs_listing_tostring(L, kvs_check_class(L, 1, KVS_KEYS_MT), KVS_KEYS_MT, states);
}

void kvs_keys_open(lua_State *L, int store_methods)
{
    static const luaL_Reg meta[] = {
        { "__gc", keys_close },
#if LUA_VERSION_NUM >= 504
        { "__close", keys_close },
#endif
        { "__tostring", keys_tostring },
        { NULL, NULL }
    };
    static const luaL_Reg methods[] = { { "close", keys_close }, { NULL, NULL } };
    static const luaL_Reg page_box_meta[] = { { "__gc", page_box_gc }, { NULL, NULL } };
    static const luaL_Reg store_fns[] = {
        { "keys", store_keys }, { "list_keys", store_list_keys }, { NULL, NULL }
    };
    kvs_new_class(L, KVS_KEYS_MT, meta, methods);
    kvs_new_class(L, PAGE_BOX_MT, page_box_meta, NULL);
    kvs_ffi_bind(L, "keys", keys_ffi_more, keys_ffi_poll);
    lua_pushvalue(L, store_methods);
    luaL_setfuncs(L, store_fns, 0);
    lua_pop(L, 1);
}
