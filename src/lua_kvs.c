/*
 * lua_kvs.c — the module table (luaopen_apify_kvs), clients and stores:
 * checking what a script passes in, and keeping the token out of sight.
 * Each kind of listing opens itself (its *_open, lua_aux.h lists them) and
 * adds its store methods.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua_ffi.h"
#include "lua_listing.h"

#define DEFAULT_BASE_URL "https://api.apify.com"

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

/* A token is sent as it is after "Bearer ": only visible ASCII (0x21-0x7E), which
 * holds RFC 6750's b64token characters and every token the API issues; a space,
 * a control byte or a non-ASCII one would reach the server as bytes no header
 * should carry.  `what` names where it came from, never the value. */
static void check_token(lua_State *L, const char *what, const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            luaL_argerror(L, 1, lua_pushfstring(L, "%s must be visible ASCII (0x21-0x7E): no "
                          "spaces, control characters or non-ASCII bytes", what));
}

/* --- clients -------------------------------------------------------------------- */

static char *dup_bytes(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = '\0'; }
    return d;
}

static kvs_client **check_client(lua_State *L, int idx)
{
    kvs_client **ud = kvs_check_class(L, idx, KVS_CLIENT_MT);
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

/* Raises "option 'ca_file': cannot read <path> (<why>)" with errno's why. */
static void cannot_read(lua_State *L, int arg, const char *name, const char *path)
{
    luaL_argerror(L, arg, lua_pushfstring(L, "option '%s': cannot read %s (%s)", name, path,
                  strerror(errno)));
}

/* Option `name` of kvs.new, a CA file (ca_file) or a directory of them (ca_path): a path that
 * is there now; NULL when absent.  libcurl reads it at each new connection: one gone by then,
 * or not PEM, fails that listing as tls-error. */
static const char *check_ca_option(lua_State *L, int arg, const char *name, const kvs_optval *v,
                                   int want_dir)
{
    size_t n = v->len;
    struct stat st;
    const char *path = v->s;
    if (!path) return NULL;
    if (n == 0)
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must not be empty", name));
    if (strlen(path) != n)
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must not contain a NUL byte", name));
    if (stat(path, &st) != 0)
        cannot_read(L, arg, name, path);
    if (!S_ISDIR(st.st_mode) != !want_dir)
        luaL_argerror(L, arg, want_dir
            ? "option 'ca_path' names a file, not a directory (ca_file takes a file)"
            : "option 'ca_file' names a directory (ca_path takes a directory of hashed certificates)");
    if (!want_dir) {
        FILE *f = fopen(path, "rb");
        if (f) fclose(f);
        else cannot_read(L, arg, name, path);
    }
    return path;
}

static int kvs_new(lua_State *L)
{
    size_t tlen = 0, blen = 0, ulen = 0;
    const char *token, *base, *ua, *ca_file, *ca_path;
    char uabuf[128];
    kvs_client *c, **ud;
    kvs_opts o;
    int token_off;

    kvs_read_options(L, 1, KVS_CALL_NEW, &o);
    token_off = o.token.off;                           /* token = false: send none */
    token = o.token.s;
    tlen = o.token.len;
    if (token && tlen == 0)
        luaL_argerror(L, 1, "option 'token' must not be empty (use false for no token)");
    if (token) {
        check_token(L, "option 'token'", token, tlen);
    } else if (!token_off) {
        token = getenv("APIFY_TOKEN");
        tlen = token ? strlen(token) : 0;
        if (tlen == 0) token = NULL;
        else check_token(L, "APIFY_TOKEN", token, tlen);
    }

    base = o.base_url.s;
    blen = o.base_url.len;
    if (!base) {
        base = getenv("APIFY_API_BASE_URL");
        if (!base || !*base) base = DEFAULT_BASE_URL;
        blen = strlen(base);
    }
    base = check_base_url(L, 1, base, blen, &blen);

    ua = o.user_agent.s;
    ulen = o.user_agent.len;
    if (ua) {
        check_header_safe(L, 1, "user_agent", ua, ulen);
    } else {
        snprintf(uabuf, sizeof uabuf, "apify.kvs/%s (%s; %s)", KVS_VERSION, LUA_VERSION,
                 kvs_http_version());
        ua = uabuf;
        ulen = strlen(uabuf);
    }
    ca_file = check_ca_option(L, 1, "ca_file", &o.ca_file, 0);
    ca_path = check_ca_option(L, 1, "ca_path", &o.ca_path, 1);

    ud = kvs_newuserdata(L, sizeof *ud);
    *ud = NULL;
    kvs_set_class(L, KVS_CLIENT_MT);
    c = calloc(1, sizeof *c);
    if (!c) return luaL_error(L, "apify.kvs: out of memory");
    *ud = c;
    c->refs = 1;
    c->on_retry_ref = LUA_NOREF;
    c->settings.timeout = o.timeout.n;
    c->settings.min_delay = o.min_delay.n;
    c->settings.max_retries = (int)o.max_retries.i;
    c->settings.max_delay = o.max_delay.n;
    c->settings.max_elapsed = o.max_elapsed.n;
    if (o.on_retry.given) {
        lua_getfield(L, 1, "on_retry");
        c->on_retry_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    c->settings.gzip = (int)o.gzip.i;
    c->settings.base_url = dup_bytes(base, blen);
    if (c->settings.base_url) lower_scheme(c->settings.base_url);
    c->settings.user_agent = dup_bytes(ua, ulen);
    c->settings.token = token ? dup_bytes(token, tlen) : NULL;
    c->settings.ca_file = ca_file ? dup_bytes(ca_file, strlen(ca_file)) : NULL;
    c->settings.ca_path = ca_path ? dup_bytes(ca_path, strlen(ca_path)) : NULL;
    c->settings.http = kvs_http_new();
    if (!c->settings.base_url || !c->settings.user_agent || (token && !c->settings.token)
        || (ca_file && !c->settings.ca_file) || (ca_path && !c->settings.ca_path)
        || !c->settings.http)
        return luaL_error(L, "apify.kvs: out of memory");
    return 1;
}

static int client_gc(lua_State *L)
{
    kvs_client **ud = kvs_check_class(L, 1, KVS_CLIENT_MT);
    kvs_client_release(L, *ud);
    *ud = NULL;
    return 0;
}

static int client_tostring(lua_State *L)
{
    kvs_client **ud = kvs_check_class(L, 1, KVS_CLIENT_MT);
    if (!*ud)
        lua_pushliteral(L, "apify.kvs.client (closed)");
    else    /* says whether a token is set, never what it is */
        lua_pushfstring(L, "apify.kvs.client (%s, %s)", (*ud)->settings.base_url,
                        (*ud)->settings.token ? "token set" : "no token");
    return 1;
}

/* The base URL as the client uses it (scheme in lower case, no trailing slash or /v2); it
 * never holds a token (base_url takes no user part). */
static int client_base_url(lua_State *L)
{
    kvs_client **c = check_client(L, 1);
    lua_pushstring(L, (*c)->settings.base_url);
    return 1;
}

/* --- stores --------------------------------------------------------------------- */

static int client_store(lua_State *L)
{
    kvs_client **c = check_client(L, 1);
    size_t n;
    const char *id, *problem;
    kvs_store_ud *s;
    if (lua_type(L, 2) != LUA_TSTRING)
        luaL_argerror(L, 2, lua_pushfstring(L, "store id must be a string, got %s",
                      luaL_typename(L, 2)));
    id = lua_tolstring(L, 2, &n);
    if ((problem = kvs_store_id_problem(id, n)) != NULL)
        luaL_argerror(L, 2, problem);
    s = kvs_newuserdata(L, sizeof *s);
    s->client = NULL;
    s->id = NULL;
    kvs_set_class(L, KVS_STORE_MT);
    if (!(s->id = dup_bytes(id, n)))
        return luaL_error(L, "apify.kvs: out of memory");
    s->client = *c;
    (*c)->refs++;
    return 1;
}

static int store_gc(lua_State *L)
{
    kvs_store_ud *s = kvs_check_class(L, 1, KVS_STORE_MT);
    kvs_client_release(L, s->client);
    free(s->id);
    s->client = NULL;
    s->id = NULL;
    return 0;
}

static int store_tostring(lua_State *L)
{
    kvs_store_ud *s = kvs_check_class(L, 1, KVS_STORE_MT);
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

/* kvs.is_error(v): true for the error tables of runtime failures (class apify.kvs.error,
 * apify.kvs.openresty's too), false for anything else, such as the strings programmer
 * mistakes raise.  The class's metatable is locked: a script cannot make one. */
static int kvs_is_error(lua_State *L)
{
    int yes = 0;
    if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, KVS_ERROR_MT);
        yes = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_pushboolean(L, yes);
    return 1;
}

KVS_EXPORT int luaopen_apify_kvs(lua_State *L)
{
    static const luaL_Reg client_meta[] = {
        { "__gc", client_gc }, { "__tostring", client_tostring }, { NULL, NULL }
    };
    static const luaL_Reg client_methods[] = {
        { "store", client_store }, { "base_url", client_base_url }, { NULL, NULL }
    };
    static const luaL_Reg store_meta[] = {
        { "__gc", store_gc }, { "__tostring", store_tostring }, { NULL, NULL }
    };
    static const luaL_Reg store_methods[] = { { "id", store_id }, { NULL, NULL } };
    static const luaL_Reg functions[] = {
        { "new", kvs_new }, { "is_error", kvs_is_error }, { NULL, NULL }
    };

    if (kvs_http_global_init() != 0)
        return luaL_error(L, "apify.kvs: libcurl failed to initialise");
    kvs_new_class(L, KVS_CLIENT_MT, client_meta, client_methods);
    kvs_aux_open(L);
    kvs_new_class(L, KVS_STORE_MT, store_meta, store_methods);
    luaL_getmetatable(L, KVS_STORE_MT);
    lua_getfield(L, -1, "__index");           /* each kind adds its store methods */
    kvs_ffi_open(L);
    kvs_keys_open(L, lua_gettop(L));
    kvs_sansio_open(L, lua_gettop(L));
    kvs_job_open(L, lua_gettop(L));
    kvs_open_plan(L);
    lua_pop(L, 2);

    luaL_newlib(L, functions);
    lua_pushliteral(L, "apify.kvs " KVS_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushstring(L, kvs_http_version());
    lua_setfield(L, -2, "_TRANSPORT");
    lua_pushboolean(L, kvs_ffi_enabled(L));
    lua_setfield(L, -2, "_FFI");
    return 1;
}
