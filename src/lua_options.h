/*
 * lua_options.h — the options registry: every option of every call of the Lua API, declared
 * once (name, type, range, default, the calls that take it).  Argument checking, the values a
 * call reads (defaults included) and the core's config follow from it; spec/types_spec.lua
 * checks the editor definitions (types/) and the manual (docs/reference.md) against it and
 * against the module's behaviour.  Adding an option is one row here, plus where its value goes.
 */
#ifndef APIFY_KVS_LUA_OPTIONS_H
#define APIFY_KVS_LUA_OPTIONS_H

#include "lua_aux.h"

#pragma GCC visibility push(hidden)

/* The calls (a mask: one option may be taken by several). */
#define KVS_CALL_NEW       0x01u  /* kvs.new{} */
#define KVS_CALL_KEYS      0x02u  /* store:keys{} */
#define KVS_CALL_LIST_KEYS 0x04u  /* store:list_keys{}: one page */
#define KVS_CALL_LISTING   0x08u  /* store:listing{ parallel = 1 }: sans-I/O, one range */
#define KVS_CALL_PLAN      0x10u  /* store:listing{}: the sans-I/O planner */
#define KVS_CALL_JOB       0x20u  /* store:job{} */

/* The kinds of value.  STRING_OR_FALSE: a string, or false ("none", for the token);
 * INTEGER_OR_AUTO: an integer, or "auto" (read as hi); FUNCTION: a function. */
typedef enum kvs_opt_kind {
    KVS_OPT_STRING, KVS_OPT_STRING_OR_FALSE, KVS_OPT_INTEGER, KVS_OPT_INTEGER_OR_AUTO,
    KVS_OPT_NUMBER, KVS_OPT_BOOLEAN, KVS_OPT_FUNCTION
} kvs_opt_kind;

#define KVS_ALL_LISTINGS (KVS_CALL_KEYS | KVS_CALL_LIST_KEYS | KVS_CALL_LISTING | KVS_CALL_PLAN \
                          | KVS_CALL_JOB)
#define KVS_PAGED        (KVS_CALL_KEYS | KVS_CALL_LISTING | KVS_CALL_PLAN | KVS_CALL_JOB)
#define KVS_RANGED       (KVS_CALL_KEYS | KVS_CALL_PLAN | KVS_CALL_JOB)
#define KVS_SEEDED       (KVS_CALL_LISTING | KVS_CALL_PLAN | KVS_CALL_JOB)
#define KVS_INT_MAX_LL   9223372036854775807.0   /* "no upper bound" for integers */

/* X(field, name, kind, calls, lo, hi, lo_open, default)
 *   field    the member of kvs_opts that holds the value (one per row)
 *   name     the option's name in Lua
 *   lo, hi   the range of numbers and integers (lo excluded when lo_open); hi of numbers
 *            is 1e9 unless said
 *   default  of numbers, integers and booleans when the option is absent; strings and
 *            functions are absent (NULL / no reference) by default
 * The same name may have rows for different calls (limit: a page's size for list_keys, a
 * total elsewhere); a call takes the first row of the name that names it. */
#define KVS_OPTIONS(X) \
    X(token,       "token",       STRING_OR_FALSE, KVS_CALL_NEW, 0, 0, 0, 0) \
    X(base_url,    "base_url",    STRING,   KVS_CALL_NEW, 0, 0, 0, 0) \
    X(timeout,     "timeout",     NUMBER,   KVS_CALL_NEW, 0, 1e9, 1, 30) \
    X(max_retries, "max_retries", INTEGER,  KVS_CALL_NEW, 0, 100, 0, 8) \
    X(min_delay,   "min_delay",   NUMBER,   KVS_CALL_NEW, 0, 1e9, 0, 0.5) \
    X(max_delay,   "max_delay",   NUMBER,   KVS_CALL_NEW, 0, 1e9, 1, KVS_DEFAULT_MAX_DELAY) \
    X(max_elapsed, "max_elapsed", NUMBER,   KVS_CALL_NEW, 0, 1e9, 1, 0) \
    X(on_retry,    "on_retry",    FUNCTION, KVS_CALL_NEW, 0, 0, 0, 0) \
    X(user_agent,  "user_agent",  STRING,   KVS_CALL_NEW, 0, 0, 0, 0) \
    X(gzip,        "gzip",        BOOLEAN,  KVS_CALL_NEW, 0, 0, 0, 1) \
    X(ca_file,     "ca_file",     STRING,   KVS_CALL_NEW, 0, 0, 0, 0) \
    X(ca_path,     "ca_path",     STRING,   KVS_CALL_NEW, 0, 0, 0, 0) \
    X(prefix,      "prefix",      STRING,   KVS_ALL_LISTINGS, 0, 0, 0, 0) \
    X(collection,  "collection",  STRING,   KVS_ALL_LISTINGS, 0, 0, 0, 0) \
    X(signature,   "signature",   STRING,   KVS_ALL_LISTINGS, 0, 0, 0, 0) \
    X(start_key,   "exclusiveStartKey", STRING, KVS_ALL_LISTINGS, 0, 0, 0, 0) \
    X(page_limit,  "limit",       INTEGER,  KVS_CALL_LIST_KEYS, 1, KVS_MAX_PAGE_SIZE, 0, KVS_MAX_PAGE_SIZE) \
    X(limit,       "limit",       INTEGER,  KVS_PAGED, 0, KVS_INT_MAX_LL, 0, -1) \
    X(urls,        "urls",        BOOLEAN,  KVS_ALL_LISTINGS, 0, 0, 0, 1) \
    X(page_size,   "page_size",   INTEGER,  KVS_PAGED, 1, KVS_MAX_PAGE_SIZE, 0, KVS_MAX_PAGE_SIZE) \
    X(prefetch,    "prefetch",    BOOLEAN,  KVS_CALL_KEYS, 0, 0, 0, 1) \
    X(parallel,    "parallel",    INTEGER_OR_AUTO, KVS_RANGED | KVS_CALL_LISTING, 1, KVS_PLAN_MAX, 0, KVS_PLAN_AUTO) \
    X(rate_limit,  "rate_limit",  NUMBER,   KVS_RANGED, 0, 1e6, 1, 0) \
    X(ordered,     "ordered",     BOOLEAN,  KVS_RANGED, 0, 0, 0, 1) \
    X(seed,        "seed",        INTEGER,  KVS_SEEDED, 0, 9007199254740991.0, 0, -1)

/* One option's value as a call reads it. */
typedef struct kvs_optval {
    int          given;     /* 1 when the caller set it */
    const char  *s;         /* strings: the bytes (anchored in the options table), NULL if absent */
    size_t       len;       /* strings: their length (they may hold NUL bytes) */
    double       n;         /* numbers, integers (exact up to 2^53), booleans (0/1) */
    long long    i;         /* integers, exactly */
    int          off;       /* STRING_OR_FALSE: 1 when given as false */
} kvs_optval;

/* Every option's value, by field name: opts.prefix.s, opts.page_size.i, ... */
typedef struct kvs_opts {
#define KVS_OPT_FIELD(field, name, kind, calls, lo, hi, lo_open, dflt) kvs_optval field;
    KVS_OPTIONS(KVS_OPT_FIELD)
#undef KVS_OPT_FIELD
} kvs_opts;

/* Checks the options table at `arg` (absent or nil: no options) for `call`: names it does
 * not take ("unknown option 'x'", naming the calls that do take it), types, ranges; then
 * fills `out` with every option's value or default.  Raises on a mistake. */
void kvs_read_options(lua_State *L, int arg, unsigned call, kvs_opts *out);

#pragma GCC visibility pop

#endif
