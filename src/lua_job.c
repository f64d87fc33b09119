/*
 * lua_job.c — store:job{...}: a listing for frame loops and event loops.
 * job:poll() does only the I/O that is ready and hands out the keys that have
 * arrived, never waiting; job:timeout() and job:sockets() tell a host's own
 * loop when and on what to wait.  It runs on a driver (driver.h: one range,
 * or with parallel = n key ranges side by side) and never asks which.
 * Type apify.kvs.job; poll() returns the same iterator every frame.
 */
#include "lua_ffi.h"
#include "lua_listing.h"

static listing_ud *check_job(lua_State *L)
{
    return kvs_check_class(L, 1, KVS_JOB_MT);
}

/* Settles a job whose driver has nothing left and whose keys are all out. */
static void settle_if_finished(lua_State *L, listing_ud *u)
{
    if (u->run != L_RUNNING || u->view.pos < u->view.count) return;
    if (u->drv.ops->finished(u->drv.d)) kvs_listing_settle(L, u);
}

/* 1: the driver's next page is in u->page; 0: none for now (or none left). */
static int take_next(listing_ud *u)
{
    return u->drv.ops && u->drv.ops->next(u->drv.d, &u->page) > 0;
}

/* The keys of this poll are used up: takes the next page that has arrived.
 * 1: the view shows a page with keys; 0: none for now. */
static int take_page(lua_State *L, listing_ud *u)
{
    while (u->view.pos >= u->view.count) {
        u->hook.L = L;          /* taking a page may start the next request, and retry */
        if (!take_next(u)) {
            settle_if_finished(L, u);
            return 0;
        }
        kvs_view_page(L, u);
    }
    return 1;
}

static int job_next(lua_State *L)
{
    listing_ud *u = lua_touserdata(L, lua_upvalueindex(1));
    if (u->view.budget == 0 || !take_page(L, u)) return 0;
    if (u->view.budget > 0) u->view.budget--;
    return kvs_push_item(L, u);
}

static int job_ffi_more(lua_State *L)
{
    lua_pushboolean(L, take_page(L, check_job(L)));
    return 1;
}

/* job:poll([max_keys]) -> iterator over the keys that have arrived (never blocks) */
static int job_poll(lua_State *L)
{
    listing_ud *u = check_job(L);
    long long max = -1;
    if (!lua_isnoneornil(L, 2) && (!kvs_tointeger(L, 2, &max) || max < 1))
        luaL_argerror(L, 2, "max_keys must be an integer >= 1");
    u->hook.L = L;
    if (u->drv.ops) u->drv.ops->poll(u->drv.d);
    kvs_listing_account(L, u);
    u->view.budget = (double)max;
    kvs_push_kept_iterator(L, 1);
    return 1;
}

/* job:status() -> "running" | "done" | "failed", err | "cancelled" (closed before done) */
static int job_status(lua_State *L)
{
    listing_ud *u = check_job(L);
    settle_if_finished(L, u);
    switch (u->run) {
    case L_RUNNING: lua_pushliteral(L, "running"); return 1;
    case L_DONE:    lua_pushliteral(L, "done"); return 1;
    case L_CANCELLED: lua_pushliteral(L, "cancelled"); return 1;
    default:
        lua_pushliteral(L, "failed");
        kvs_push_error(L, &u->err);
        return 2;
    }
}

/* Pushes the seconds until poll() has work (0: now); nothing when it never will. */
static int push_timeout(lua_State *L)
{
    listing_ud *u = check_job(L);
    double t;
    settle_if_finished(L, u);
    if (u->run != L_RUNNING) return 0;
    u->hook.L = L;           /* the parallel driver may take a page that has arrived */
    t = u->view.pos < u->view.count ? 0 : u->drv.ops->timeout(u->drv.d);
    if (t < 0) return 0;
    lua_pushnumber(L, t);
    return 1;
}

/* job:timeout() -> seconds until poll() has work (0: now), or nil when it never will */
static int job_timeout(lua_State *L)
{
    if (push_timeout(L)) return 1;
    lua_pushnil(L);                  /* one value, always */
    return 1;
}

/* job:sockets() -> {fds to wait on for reading}, {fds for writing} */
static int job_sockets(lua_State *L)
{
    listing_ud *u = check_job(L);
    const kvs_socket *s = NULL;
    size_t n = u->drv.ops ? u->drv.ops->sockets(u->drv.d, &s) : 0, i;
    int nr = 0, nw = 0;
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {     /* presized: filling them allocates nothing */
        if (s[i].events & 1) { lua_pushinteger(L, s[i].fd); lua_rawseti(L, -3, ++nr); }
        if (s[i].events & 2) { lua_pushinteger(L, s[i].fd); lua_rawseti(L, -2, ++nw); }
    }
    return 2;
}

static int store_job(lua_State *L)
{
    kvs_listing_config cfg;
    kvs_opts o;
    listing_ud *u = kvs_new_listing(L, KVS_CALL_JOB, KVS_JOB_MT, &o, &cfg, 1);
    kvs_listing_start_driver(L, u, &o, &cfg, 1, KVS_JOB_POLL_BUDGET);
    if (!kvs_ffi_iterator(L, -1, "job", u->view.urls)) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, job_next, 1);
    }
    kvs_keep_iterator(L, -2);
    return 1;
}

/* Nothing is left to hand out: closing now cancels nothing. */
static int job_close(lua_State *L)
{
    listing_ud *u = check_job(L);
    kvs_listing_close(L, u, u->view.pos >= u->view.count && u->drv.ops
                            && u->drv.ops->finished(u->drv.d));
    return 0;
}

static int job_tostring(lua_State *L)
{
    static const char *const states[] = { "running", "done", "failed", "cancelled" };
    return kvs_listing_tostring(L, check_job(L), KVS_JOB_MT, states);
}

void kvs_job_open(lua_State *L, int store_methods)
{
    static const luaL_Reg meta[] = {
        { "__gc", job_close },
#if LUA_VERSION_NUM >= 504
        { "__close", job_close },
#endif
        { "__tostring", job_tostring },
        { NULL, NULL }
    };
    static const luaL_Reg methods[] = {
        { "poll", job_poll }, { "status", job_status }, { "timeout", job_timeout },
        { "sockets", job_sockets }, { "close", job_close }, { NULL, NULL }
    };
    kvs_new_class(L, KVS_JOB_MT, meta, methods);
    kvs_ffi_bind(L, "job", job_ffi_more, NULL);
    lua_pushvalue(L, store_methods);
    lua_pushcfunction(L, store_job);
    lua_setfield(L, -2, "job");
    lua_pop(L, 1);
}
