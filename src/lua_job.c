/*
 * lua_job.c — store:job{...}: a listing for frame loops and event loops.
 * job:poll() does only the I/O that is ready and hands out the keys that have
 * arrived, never waiting; job:timeout() and job:sockets() tell a host's own
 * loop when and on what to wait.  Driven by the libcurl multi driver.
 */
#include "lua_listing.h"

static listing_ud *check_job(lua_State *L)
{
    return kvs_check_kind(L, 1, KIND_JOB);
}

/* Settles a job whose driver has nothing left and whose keys are all out. */
static void settle_if_finished(lua_State *L, listing_ud *u)
{
    if (u->run == L_RUNNING && u->core && u->pos >= u->page.count && kvs_async_finished(u->async))
        kvs_listing_settle(L, u);
}

static int job_next(lua_State *L)
{
    listing_ud *u = lua_touserdata(L, lua_upvalueindex(1));
    if (u->budget == 0) return 0;
    while (u->pos >= u->page.count) {
        u->hook.L = L;          /* taking a page may start the next request, and retry */
        if (!u->core || !kvs_async_take(u->async, &u->page)) {
            if (u->core) settle_if_finished(L, u);
            return 0;
        }
        u->pos = 0;
    }
    if (u->budget > 0) u->budget--;
    return kvs_push_item(L, u);
}

/* job:poll([max_keys]) -> iterator over the keys that have arrived (never blocks) */
static int job_poll(lua_State *L)
{
    listing_ud *u = check_job(L);
    long long max = -1;
    if (!lua_isnoneornil(L, 2) && (!kvs_tointeger(L, 2, &max) || max < 1))
        luaL_argerror(L, 2, "max_keys must be an integer >= 1");
    u->hook.L = L;
    if (u->core) kvs_async_poll(u->async);
    u->budget = max;
    lua_settop(L, 1);
    lua_pushcclosure(L, job_next, 1);
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
    t = u->pos < u->page.count ? 0 : kvs_async_timeout(u->async);
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
    size_t n = u->core ? kvs_async_sockets(u->async, &s) : 0, i;
    int nr = 0, nw = 0;
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {     /* presized: filling them allocates nothing */
        if (s[i].events & 1) { lua_pushinteger(L, s[i].fd); lua_rawseti(L, -3, ++nr); }
        if (s[i].events & 2) { lua_pushinteger(L, s[i].fd); lua_rawseti(L, -2, ++nw); }
    }
    return 2;
}

void kvs_open_job(lua_State *L, int methods)
{
    static const luaL_Reg fns[] = {
        { "poll", job_poll }, { "status", job_status }, { "timeout", job_timeout },
        { "sockets", job_sockets }, { NULL, NULL }
    };
    lua_pushvalue(L, methods);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
