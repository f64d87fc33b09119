/*
 * lua_kvs.c — the module table (luaopen_apify_kvs), clients and stores:
 * checking what a script passes in, and keeping the token out of sight.
 * Listings live in lua_listing.c.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvs.h"

#define DEFAULT_BASE_URL "https://api.apify.com"

/* --- option tables ------------------------------------------------------------ */

static const char *lua_typename_of(int t)
{
    return t == LUA_TSTRING ? "a string" : t == LUA_TNUMBER ? "a number"
         : t == LUA_TFUNCTION ? "a function" : "a boolean";
}

void kvs_check_options(lua_State *L, int arg, const kvs_optspec *spec, unsigned call)
{
    if (lua_isnoneornil(L, arg))
        return;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        const kvs_optspec *s;
        if (lua_type(L, -2) != LUA_TSTRING) {
            luaL_argerror(L, arg, "option names must be strings");
        }
        for (s = spec; s->name; s++)
            if ((s->calls & call) && strcmp(s->name, lua_tostring(L, -2)) == 0) break;
        if (!s->name)
            luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s'", lua_tostring(L, -2)));
        if (lua_type(L, -1) != s->type &&
            !(s->type == LUA_TSTRING && lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)
              && strcmp(s->name, "token") == 0))
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be %s, got %s", s->name,
                          lua_typename_of(s->type), luaL_typename(L, -1)));
        lua_pop(L, 1);
    }
}

/* Pushes nothing; returns NULL when the option is absent (types were checked). */
const char *kvs_opt_string(lua_State *L, int arg, const char *name, size_t *len)
{
    const char *s = NULL;
    if (lua_isnoneornil(L, arg)) return NULL;
    lua_getfield(L, arg, name);
    if (lua_type(L, -1) == LUA_TSTRING)
        s = lua_tolstring(L, -1, len);   /* anchored in the options table */
    lua_pop(L, 1);
    return s;
}

/* Range errors name the whole range: integers as lo..hi (">= lo" when there
 * is no upper bound), numbers as an interval, "(0, 1e9]". */
long long kvs_opt_integer(lua_State *L, int arg, const char *name,
                          long long min, long long max, long long dflt)
{
    long long v = dflt;
    if (lua_isnoneornil(L, arg)) return dflt;
    lua_getfield(L, arg, name);
    if (!lua_isnil(L, -1)) {
        if (!kvs_tointeger(L, -1, &v) || v < min || v > max) {
            char range[64];
            if (max == LLONG_MAX) snprintf(range, sizeof range, ">= %lld", min);
            else snprintf(range, sizeof range, "in %lld..%lld", min, max);
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be an integer %s",
                          name, range));
        }
    }
    lua_pop(L, 1);
    return v;
}

#define NUMBER_OPTION_MAX 1e9

/* A bound as a person writes it: 0.5, 30, 1e9 (not printf's 1e+09). */
static const char *format_bound(char *buf, size_t cap, double v)
{
    char *exponent;
    snprintf(buf, cap, "%g", v);
    if ((exponent = strchr(buf, 'e')) != NULL) {
        exponent++;
        if (*exponent == '+') memmove(exponent, exponent + 1, strlen(exponent));
        if (*exponent == '-') exponent++;
        while (exponent[0] == '0' && exponent[1]) memmove(exponent, exponent + 1, strlen(exponent));
    }
    return buf;
}

static double opt_number(lua_State *L, int arg, const char *name, double min, double dflt,
                         int min_exclusive)
{
    double v = dflt;
    if (lua_isnoneornil(L, arg)) return dflt;
    lua_getfield(L, arg, name);
    if (!lua_isnil(L, -1)) {
        v = (double)lua_tonumber(L, -1);
        if (!(v == v) || v > NUMBER_OPTION_MAX || (min_exclusive ? v <= min : v < min)) {
            char lo[32], hi[32];
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a number in %s%s, %s]",
                          name, min_exclusive ? "(" : "[", format_bound(lo, sizeof lo, min),
                          format_bound(hi, sizeof hi, NUMBER_OPTION_MAX)));
        }
    }
    lua_pop(L, 1);
    return v;
}

/* A header value must not smuggle in a line break or other control bytes. */
static void check_header_safe(lua_State *L, int arg, const char *name, const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must not contain control "
                          "characters", name));
    }
}

/* --- clients -------------------------------------------------------------------- */

static char *dup_bytes(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = '\0'; }
    return d;
}

void kvs_client_release(lua_State *L, kvs_client *c)
{
    if (!c || --c->refs > 0) return;
    luaL_unref(L, LUA_REGISTRYINDEX, c->on_retry_ref);
    kvs_http_free(c->settings.http);
    if (c->settings.token) {
        /* wipe before free: the token should not linger in freed memory */
        volatile char *p = c->settings.token;
        while (*p) *p++ = 0;
        free(c->settings.token);
    }
    free(c->settings.base_url);
    free(c->settings.user_agent);
    free(c);
}

static kvs_client **check_client(lua_State *L, int idx)
{
    kvs_client **ud = luaL_checkudata(L, idx, KVS_CLIENT_MT);
    if (!*ud) luaL_argerror(L, idx, "client is closed");
    return ud;
}

/* `s` (n bytes) starts with the lower-case ASCII `prefix`, in any case. */
static int starts_nocase(const char *s, size_t n, const char *prefix)
{
    size_t i;
    for (i = 0; prefix[i]; i++) {
        char c = i < n ? s[i] : '\0';
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != prefix[i]) return 0;
    }
    return 1;
}

/* Schemes are case-insensitive (RFC 3986): the client keeps its own copy in lower case. */
static void lower_scheme(char *url)
{
    for (; *url && *url != ':'; url++)
        if (*url >= 'A' && *url <= 'Z') *url = (char)(*url - 'A' + 'a');
}

static const char *check_base_url(lua_State *L, int arg, const char *u, size_t n, size_t *outlen)
{
    const char *host;
    if (starts_nocase(u, n, "https://")) host = u + 8;
    else if (starts_nocase(u, n, "http://")) host = u + 7;
    else {
        luaL_argerror(L, arg, "option 'base_url' must start with http:// or https://");
        return NULL;
    }
    if (*host == '/' || *host == '\0')
        luaL_argerror(L, arg, "option 'base_url' has no host");
    if (strpbrk(u, "?#@") || memchr(u, ' ', n))
        luaL_argerror(L, arg, "option 'base_url' must be scheme://host[:port][/path] "
                      "without user, query or fragment");
    check_header_safe(L, arg, "base_url", u, n);
    while (n > 0 && u[n - 1] == '/') n--;
    /* "https://api.apify.com/v2" is a common copy-paste; the requests add /v2 themselves */
    if (n > (size_t)(host - u) + 3 && memcmp(u + n - 3, "/v2", 3) == 0) {
        n -= 3;
        while (n > 0 && u[n - 1] == '/') n--;
    }
    *outlen = n;
    return u;
}

static const kvs_optspec new_options[] = {
    { "token", LUA_TSTRING, 1 }, { "base_url", LUA_TSTRING, 1 }, { "timeout", LUA_TNUMBER, 1 },
    { "max_retries", LUA_TNUMBER, 1 }, { "min_delay", LUA_TNUMBER, 1 },
    { "user_agent", LUA_TSTRING, 1 }, { "gzip", LUA_TBOOLEAN, 1 },
    { "max_delay", LUA_TNUMBER, 1 }, { "max_elapsed", LUA_TNUMBER, 1 },
    { "on_retry", LUA_TFUNCTION, 1 }, { NULL, 0, 0 }
};

static int kvs_new(lua_State *L)
{
    size_t tlen = 0, blen = 0, ulen = 0;
    const char *token, *base, *ua;
    char uabuf[128];
    kvs_client *c, **ud;
    int token_off = 0;

    kvs_check_options(L, 1, new_options, 1);
    if (!lua_isnoneornil(L, 1)) {
        lua_getfield(L, 1, "token");
        token_off = lua_type(L, -1) == LUA_TBOOLEAN;   /* token = false: send none */
        lua_pop(L, 1);
    }
    token = token_off ? NULL : kvs_opt_string(L, 1, "token", &tlen);
    if (token && tlen == 0)
        luaL_argerror(L, 1, "option 'token' must not be empty (use false for no token)");
    if (!token && !token_off) {
        token = getenv("APIFY_TOKEN");
        tlen = token ? strlen(token) : 0;
        if (tlen == 0) token = NULL;
    }
    if (token) check_header_safe(L, 1, "token", token, tlen);

    base = kvs_opt_string(L, 1, "base_url", &blen);
    if (!base) {
        base = getenv("APIFY_API_BASE_URL");
        if (!base || !*base) base = DEFAULT_BASE_URL;
        blen = strlen(base);
    }
    base = check_base_url(L, 1, base, blen, &blen);

    ua = kvs_opt_string(L, 1, "user_agent", &ulen);
    if (ua) {
        check_header_safe(L, 1, "user_agent", ua, ulen);
    } else {
        snprintf(uabuf, sizeof uabuf, "apify.kvs/%s (%s; %s)", KVS_VERSION, LUA_VERSION,
                 kvs_http_version());
        ua = uabuf;
        ulen = strlen(uabuf);
    }

    ud = kvs_newuserdata(L, sizeof *ud);
    *ud = NULL;
    luaL_getmetatable(L, KVS_CLIENT_MT);
    lua_setmetatable(L, -2);
    c = calloc(1, sizeof *c);
    if (!c) return luaL_error(L, "apify.kvs: out of memory");
    *ud = c;
    c->refs = 1;
    c->on_retry_ref = LUA_NOREF;
    c->settings.timeout = opt_number(L, 1, "timeout", 0, 30, 1);
    c->settings.min_delay = opt_number(L, 1, "min_delay", 0, 0.5, 0);
    c->settings.max_retries = (int)kvs_opt_integer(L, 1, "max_retries", 0, 100, 8);
    c->settings.max_delay = opt_number(L, 1, "max_delay", 0, KVS_DEFAULT_MAX_DELAY, 1);
    c->settings.max_elapsed = opt_number(L, 1, "max_elapsed", 0, 0, 1);
    if (!lua_isnoneornil(L, 1)) {
        lua_getfield(L, 1, "on_retry");
        if (lua_isfunction(L, -1)) c->on_retry_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else lua_pop(L, 1);
    }
    c->settings.gzip = 1;
    if (!lua_isnoneornil(L, 1)) {
        lua_getfield(L, 1, "gzip");
        c->settings.gzip = lua_isnil(L, -1) || lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    c->settings.base_url = dup_bytes(base, blen);
    if (c->settings.base_url) lower_scheme(c->settings.base_url);
    c->settings.user_agent = dup_bytes(ua, ulen);
    c->settings.token = token ? dup_bytes(token, tlen) : NULL;
    c->settings.http = kvs_http_new();
    if (!c->settings.base_url || !c->settings.user_agent || (token && !c->settings.token)
        || !c->settings.http)
        return luaL_error(L, "apify.kvs: out of memory");
    return 1;
}

static int client_gc(lua_State *L)
{
    kvs_client **ud = luaL_checkudata(L, 1, KVS_CLIENT_MT);
    kvs_client_release(L, *ud);
    *ud = NULL;
    return 0;
}

static int client_tostring(lua_State *L)
{
    kvs_client **ud = luaL_checkudata(L, 1, KVS_CLIENT_MT);
    if (!*ud)
        lua_pushliteral(L, "apify.kvs.client (closed)");
    else    /* says whether a token is set, never what it is */
        lua_pushfstring(L, "apify.kvs.client (%s, %s)", (*ud)->settings.base_url,
                        (*ud)->settings.token ? "token set" : "no token");
    return 1;
}

/* --- stores --------------------------------------------------------------------- */

typedef struct store_ud {
    kvs_client *client;
    char       *id;
} store_ud;

kvs_client *kvs_check_store(lua_State *L, int idx, const char **id)
{
    store_ud *s = luaL_checkudata(L, idx, KVS_STORE_MT);
    if (!s->client) luaL_argerror(L, idx, "store is closed");
    if (id) *id = s->id;
    return s->client;
}

static int client_store(lua_State *L)
{
    kvs_client **c = check_client(L, 1);
    size_t n;
    const char *id, *problem;
    store_ud *s;
    if (lua_type(L, 2) != LUA_TSTRING)
        luaL_argerror(L, 2, lua_pushfstring(L, "store id must be a string, got %s",
                      luaL_typename(L, 2)));
    id = lua_tolstring(L, 2, &n);
    if ((problem = kvs_store_id_problem(id, n)) != NULL)
        luaL_argerror(L, 2, problem);
    s = kvs_newuserdata(L, sizeof *s);
    s->client = NULL;
    s->id = NULL;
    luaL_getmetatable(L, KVS_STORE_MT);
    lua_setmetatable(L, -2);
    if (!(s->id = dup_bytes(id, n)))
        return luaL_error(L, "apify.kvs: out of memory");
    s->client = *c;
    (*c)->refs++;
    return 1;
}

static int store_gc(lua_State *L)
{
    store_ud *s = luaL_checkudata(L, 1, KVS_STORE_MT);
    kvs_client_release(L, s->client);
    free(s->id);
    s->client = NULL;
    s->id = NULL;
    return 0;
}

static int store_tostring(lua_State *L)
{
    store_ud *s = luaL_checkudata(L, 1, KVS_STORE_MT);
    if (!s->client)
        lua_pushliteral(L, "apify.kvs.store (closed)");
    else
        lua_pushfstring(L, "apify.kvs.store (%s at %s)", s->id, s->client->settings.base_url);
    return 1;
}

static int store_id(lua_State *L)
{
    const char *id;
    kvs_check_store(L, 1, &id);
    lua_pushstring(L, id);
    return 1;
}

/* --- module ----------------------------------------------------------------------- */

void kvs_new_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, meta, 0);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "apify.kvs: metatable is locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

KVS_EXPORT int luaopen_apify_kvs(lua_State *L)
{
    static const luaL_Reg client_meta[] = {
        { "__gc", client_gc }, { "__tostring", client_tostring }, { NULL, NULL }
    };
    static const luaL_Reg client_methods[] = { { "store", client_store }, { NULL, NULL } };
    static const luaL_Reg store_meta[] = {
        { "__gc", store_gc }, { "__tostring", store_tostring }, { NULL, NULL }
    };
    static const luaL_Reg store_methods[] = {
        { "list_keys", kvs_store_list_keys }, { "keys", kvs_store_keys },
        { "listing", kvs_store_listing }, { "job", kvs_store_job }, { "id", store_id },
        { NULL, NULL }
    };
    static const luaL_Reg functions[] = { { "new", kvs_new }, { NULL, NULL } };

    if (kvs_http_global_init() != 0)
        return luaL_error(L, "apify.kvs: libcurl failed to initialise");
    kvs_new_class(L, KVS_CLIENT_MT, client_meta, client_methods);
    kvs_new_class(L, KVS_STORE_MT, store_meta, store_methods);
    kvs_open_listing(L);

    luaL_newlib(L, functions);
    lua_pushliteral(L, "apify.kvs " KVS_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushstring(L, kvs_http_version());
    lua_setfield(L, -2, "_TRANSPORT");
    return 1;
}
