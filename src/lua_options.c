/*
 * lua_options.c — reading an options table against the registry of lua_options.h: the one
 * place that knows which call takes which option, of which type and range, and its default.
 */
#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "lua_options.h"

typedef struct option_row {
    const char  *name;
    kvs_opt_kind kind;
    unsigned     calls;
    double       lo, hi;
    int          lo_open;
    double       dflt;
    size_t       offset;      /* of its kvs_optval in kvs_opts */
} option_row;

static const option_row rows[] = {
#define KVS_OPT_ROW(field, name, kind, calls, lo, hi, lo_open, dflt) \
    { name, KVS_OPT_##kind, calls, lo, hi, lo_open, dflt, offsetof(kvs_opts, field) },
    KVS_OPTIONS(KVS_OPT_ROW)
#undef KVS_OPT_ROW
};
#define NROWS (sizeof rows / sizeof rows[0])

static const struct { unsigned call; const char *name; } call_names[] = {
    { KVS_CALL_NEW, "kvs.new" }, { KVS_CALL_KEYS, "store:keys" },
    { KVS_CALL_LIST_KEYS, "store:list_keys" },
    { KVS_CALL_LISTING, "store:listing{ parallel = 1 }" }, { KVS_CALL_PLAN, "store:listing" },
    { KVS_CALL_JOB, "store:job" },
};

static kvs_optval *slot(kvs_opts *o, const option_row *r)
{
    return (kvs_optval *)((char *)o + r->offset);
}

static const char *kind_name(kvs_opt_kind k)
{
    switch (k) {
    case KVS_OPT_STRING: return "a string";
    case KVS_OPT_STRING_OR_FALSE: return "a string or false";
    case KVS_OPT_INTEGER: return "an integer";
    case KVS_OPT_INTEGER_OR_AUTO: return "\"auto\" or an integer";
    case KVS_OPT_NUMBER: return "a number";
    case KVS_OPT_BOOLEAN: return "a boolean";
    default: return "a function";
    }
}

static int kind_matches(kvs_opt_kind k, lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    switch (k) {
    case KVS_OPT_STRING: return t == LUA_TSTRING;
    case KVS_OPT_STRING_OR_FALSE: return t == LUA_TSTRING || (t == LUA_TBOOLEAN && !lua_toboolean(L, idx));
    case KVS_OPT_INTEGER: case KVS_OPT_NUMBER: return t == LUA_TNUMBER;
    case KVS_OPT_INTEGER_OR_AUTO: return t == LUA_TNUMBER || t == LUA_TSTRING;
    case KVS_OPT_BOOLEAN: return t == LUA_TBOOLEAN;
    default: return t == LUA_TFUNCTION;
    }
}

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

/* "unknown option 'prefetch' (taken by store:keys)": which calls do take a name. */
static void unknown(lua_State *L, int arg, const char *name)
{
    luaL_Buffer b;
    unsigned takers = 0;
    size_t i;
    for (i = 0; i < NROWS; i++)
        if (strcmp(rows[i].name, name) == 0) takers |= rows[i].calls;
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "unknown option '%s'", name);
    luaL_addvalue(&b);
    if (takers) {
        const char *sep = " (taken by ";
        for (i = 0; i < sizeof call_names / sizeof call_names[0]; i++)
            if (takers & call_names[i].call) {
                luaL_addstring(&b, sep);
                luaL_addstring(&b, call_names[i].name);
                sep = ", ";
            }
        luaL_addchar(&b, ')');
    }
    luaL_pushresult(&b);
    luaL_argerror(L, arg, lua_tostring(L, -1));
}

static void out_of_range(lua_State *L, int arg, const option_row *r)
{
    char lo[32], hi[32];
    if (r->kind == KVS_OPT_INTEGER_OR_AUTO) {
        snprintf(lo, sizeof lo, "%lld", (long long)r->lo);
        snprintf(hi, sizeof hi, "%lld", (long long)r->hi);
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be \"auto\" or an integer in %s..%s",
                      r->name, lo, hi));
    }
    if (r->kind == KVS_OPT_INTEGER) {       /* whole numbers, written out: 0..9007199254740991 */
        snprintf(lo, sizeof lo, "%lld", (long long)r->lo);
        if (r->hi >= KVS_INT_MAX_LL)         /* no upper bound (and no long long holds it) */
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be an integer >= %s", r->name, lo));
        snprintf(hi, sizeof hi, "%lld", (long long)r->hi);
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be an integer in %s..%s", r->name,
                      lo, hi));
    }
    luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a number in %s%s, %s]", r->name,
                  r->lo_open ? "(" : "[", format_bound(lo, sizeof lo, r->lo),
                  format_bound(hi, sizeof hi, r->hi)));
}

/* The value at the top of the stack into `v`, checked against row `r`. */
static void take_value(lua_State *L, int arg, const option_row *r, kvs_optval *v)
{
    if (!kind_matches(r->kind, L, -1))
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be %s, got %s", r->name,
                      kind_name(r->kind), luaL_typename(L, -1)));
    v->given = 1;
    switch (r->kind) {
    case KVS_OPT_STRING: case KVS_OPT_STRING_OR_FALSE:
        if (lua_type(L, -1) == LUA_TSTRING) v->s = lua_tolstring(L, -1, &v->len);  /* anchored */
        else v->off = 1;
        break;
    case KVS_OPT_INTEGER: case KVS_OPT_INTEGER_OR_AUTO: {
        long long i = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {      /* (INTEGER_OR_AUTO) "auto": its hi */
            if (strcmp(lua_tostring(L, -1), "auto") != 0) out_of_range(L, arg, r);
            v->i = (long long)r->hi;
            v->n = r->hi;
            break;
        }
        if (!kvs_tointeger(L, -1, &i) || (double)i < r->lo || (r->hi < KVS_INT_MAX_LL && (double)i > r->hi))
            out_of_range(L, arg, r);
        v->i = i;
        v->n = (double)i;
        break;
    }
    case KVS_OPT_NUMBER: {
        double n = (double)lua_tonumber(L, -1);
        if (!(n == n) || n > r->hi || (r->lo_open ? n <= r->lo : n < r->lo)) out_of_range(L, arg, r);
        v->n = n;
        break;
    }
    case KVS_OPT_BOOLEAN:
        v->n = lua_toboolean(L, -1);
        v->i = (long long)v->n;
        break;
    default:            /* a function: the caller takes it from the table itself */
        break;
    }
}

void kvs_read_options(lua_State *L, int arg, unsigned call, kvs_opts *out)
{
    size_t i;
    for (i = 0; i < NROWS; i++) {
        kvs_optval *v = slot(out, &rows[i]);
        memset(v, 0, sizeof *v);
        v->n = rows[i].dflt;
        v->i = (long long)rows[i].dflt;
    }
    if (lua_isnoneornil(L, arg)) return;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        const char *name;
        if (lua_type(L, -2) != LUA_TSTRING) luaL_argerror(L, arg, "option names must be strings");
        name = lua_tostring(L, -2);
        for (i = 0; i < NROWS; i++)
            if ((rows[i].calls & call) && strcmp(rows[i].name, name) == 0) break;
        if (i == NROWS) unknown(L, arg, name);
        take_value(L, arg, &rows[i], slot(out, &rows[i]));
        lua_pop(L, 1);
    }
}
