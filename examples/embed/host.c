/*
 * examples/embed/host.c — a C program that embeds Lua 5.4 and lists a store's
 * keys from a 60 Hz frame loop, the way a game engine or a GUI would.
 *
 *   APIFY_TOKEN=... host BASE_URL STORE [expected_keys]
 *
 * The token is read from the environment (APIFY_TOKEN) only, never from the command line,
 * where it would land in the shell history and in every process listing.
 * The Lua side (frame.lua) creates an apify.kvs job; every frame the loop
 * calls the Lua function frame(), which polls the job (never blocking) and
 * takes at most KVS_KEYS_PER_FRAME keys, then sleeps until the next frame
 * deadline (clock_nanosleep on CLOCK_MONOTONIC, absolute time).  At the end
 * it prints frame-time statistics and exits 0 only when every key was listed,
 * the job is "done" and no frame was late (interval > 1.5 x 16.67 ms).
 *
 * apify/kvs.so is looked for first in HOST_CPATH (compiled in; the Makefile
 * sets the checkout's build/5.4/?.so), then in package.cpath (LUA_CPATH_5_4 /
 * LUA_CPATH, or Lua's default).
 *
 * Environment (all optional but the token):
 *   APIFY_TOKEN         the API token (read by kvs.new in frame.lua)
 *   KVS_FRAME_SCRIPT    the Lua script (default: frame.lua, compiled in by the Makefile)
 *   KVS_KEYS_PER_FRAME  keys handed out per frame at most, 1..1000000 (default 250)
 *   KVS_MAX_SECONDS     give up after this long, 0 < s <= 3600 (default 60)
 *   KVS_LATE_FRAMES_OK  1: late frames are reported, not a failure (a busy machine)
 * A number that is not one (expected_keys "abc", KVS_KEYS_PER_FRAME=0) is a usage error.
 *
 * Exit status: 0 ok, 1 incomplete / failed / late frames, 2 usage or Lua error.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#ifndef HOST_CPATH
#define HOST_CPATH "build/5.4/?.so"
#endif
#ifndef HOST_SCRIPT
#define HOST_SCRIPT "examples/embed/frame.lua"
#endif

#define HZ 60
#define PERIOD_NS (1000000000L / HZ)
#define LATE_FACTOR 1.5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void add_ns(struct timespec *ts, long ns)
{
    ts->tv_nsec += ns;
    while (ts->tv_nsec >= 1000000000L) {
        ts->tv_nsec -= 1000000000L;
        ts->tv_sec++;
    }
}

static int before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A whole number in [min, max], digits only: *out, or 0 when s is not one. */
static int parse_count(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (*s < '0' || *s > '9') return 0;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max) return 0;
    *out = v;
    return 1;
}

static int usage(const char *prog, const char *problem, const char *value)
{
    if (problem) fprintf(stderr, "host: %s%s%s%s\n", problem, value ? ", got '" : "", value ? value : "",
                         value ? "'" : "");
    fprintf(stderr, "usage: APIFY_TOKEN=... %s BASE_URL STORE [expected_keys]\n", prog);
    return 2;
}

/* nearest-rank percentile of a sorted array */
static double percentile(const double *sorted, size_t n, double p)
{
    size_t rank = (size_t)(p * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* package.cpath = cpath .. ";" .. package.cpath */
static void prepend_cpath(lua_State *L, const char *cpath)
{
    lua_getglobal(L, "package");
    lua_pushstring(L, cpath);
    lua_pushliteral(L, ";");
    lua_getfield(L, -3, "cpath");
    lua_concat(L, 3);
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
}

int main(int argc, char **argv)
{
    const char *script = env_or("KVS_FRAME_SCRIPT", HOST_SCRIPT);
    const char *per_frame_s = env_or("KVS_KEYS_PER_FRAME", "250");
    const char *max_seconds_s = env_or("KVS_MAX_SECONDS", "60");
    long long per_frame;
    double max_seconds;
    char *end;
    int late_ok = strcmp(env_or("KVS_LATE_FRAMES_OK", "0"), "1") == 0;
    long long expected = -1;
    size_t max_frames, frames = 0;
    double *work, *sorted, max_interval = 0, prev_start = -1;
    double late_limit = LATE_FACTOR * (double)PERIOD_NS / 1e9;
    int late = 0, lua_failed = 0, frame_ref, status_ok, rc;
    long long keys;
    lua_Integer bytes;
    const char *status, *err;
    struct timespec next, now;
    lua_State *L;

    if (argc < 3) return usage(argv[0], argc < 2 ? "missing BASE_URL and STORE" : "missing STORE", NULL);
    if (argc > 4) return usage(argv[0], "too many arguments (the token comes from APIFY_TOKEN only)", NULL);
    if (argc == 4 && !parse_count(argv[3], 0, 1LL << 53, &expected))
        return usage(argv[0], "expected_keys must be a whole number >= 0", NULL);   /* not echoed */
    if (!parse_count(per_frame_s, 1, 1000000, &per_frame))
        return usage(argv[0], "KVS_KEYS_PER_FRAME must be a whole number from 1 to 1000000", per_frame_s);
    errno = 0;
    max_seconds = strtod(max_seconds_s, &end);
    if (errno || *end || end == max_seconds_s || !(max_seconds > 0 && max_seconds <= 3600))
        return usage(argv[0], "KVS_MAX_SECONDS must be a number of seconds, more than 0 and at most 3600",
                     max_seconds_s);
    max_frames = (size_t)(max_seconds * HZ) + 1;
    work = malloc(max_frames * sizeof *work);
    sorted = malloc(max_frames * sizeof *sorted);
    if (!work || !sorted) {
        fprintf(stderr, "host: out of memory\n");
        return 2;
    }

    L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "host: cannot create a Lua state\n");
        return 2;
    }
    luaL_openlibs(L);
    prepend_cpath(L, HOST_CPATH);
    lua_pushcfunction(L, traceback);             /* stack 1: message handler */

    /* run the script once: it creates the job (no I/O yet) and defines frame() and summary() */
    if (luaL_loadfile(L, script) != LUA_OK) {
        fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 2;
    }
    lua_pushstring(L, argv[1]);
    lua_pushstring(L, argv[2]);
    lua_pushinteger(L, (lua_Integer)per_frame);
    if (lua_pcall(L, 3, 0, 1) != LUA_OK) {
        fprintf(stderr, "host: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 2;
    }
    if (lua_getglobal(L, "frame") != LUA_TFUNCTION) {
        fprintf(stderr, "host: %s does not define frame()\n", script);
        lua_close(L);
        return 2;
    }
    frame_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    printf("host: %d Hz frame loop, %s, up to %lld keys per frame\n", HZ, LUA_RELEASE, per_frame);

    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        double t0 = now_s(), t1;
        int running;

        if (prev_start >= 0) {
            double interval = t0 - prev_start;
            if (interval > max_interval) max_interval = interval;
            if (interval > late_limit) late++;
        }
        prev_start = t0;

        /* the frame's work: running, keys_this_frame = frame() */
        lua_rawgeti(L, LUA_REGISTRYINDEX, frame_ref);
        if (lua_pcall(L, 0, 2, 1) != LUA_OK) {
            fprintf(stderr, "host: frame(): %s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
            lua_failed = 1;
            break;
        }
        running = lua_toboolean(L, -2);
        lua_pop(L, 2);
        t1 = now_s();
        work[frames++] = t1 - t0;

        if (!running) break;
        if (frames >= max_frames) {
            fprintf(stderr, "host: still running after %.0f s, giving up\n", max_seconds);
            break;
        }

        /* sleep until the next frame deadline; skip deadlines already missed */
        add_ns(&next, PERIOD_NS);
        clock_gettime(CLOCK_MONOTONIC, &now);
        while (before(&next, &now)) add_ns(&next, PERIOD_NS);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {}
    }

    /* status, keys, bytes, err = summary() */
    if (lua_getglobal(L, "summary") != LUA_TFUNCTION || lua_pcall(L, 0, 4, 1) != LUA_OK) {
        fprintf(stderr, "host: summary(): %s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "not defined");
        lua_close(L);
        free(work);
        free(sorted);
        return 2;
    }
    status = lua_tostring(L, -4);
    keys = (long long)lua_tointeger(L, -3);
    bytes = lua_tointeger(L, -2);
    err = lua_tostring(L, -1);

    memcpy(sorted, work, frames * sizeof *sorted);
    qsort(sorted, frames, sizeof *sorted, cmp_double);
    printf("frames       %zu\n", frames);
    printf("keys listed  %lld (%lld bytes), status %s\n", keys, (long long)bytes,
           status ? status : "?");
    if (err) printf("error        %s\n", err);
    printf("frame work   max %.3f ms   median %.3f ms   p99 %.3f ms\n",
           frames ? sorted[frames - 1] * 1e3 : 0.0, frames ? percentile(sorted, frames, 0.5) * 1e3 : 0.0,
           frames ? percentile(sorted, frames, 0.99) * 1e3 : 0.0);
    printf("interval     max %.2f ms   late frames (> %.1f ms): %d\n", max_interval * 1e3,
           late_limit * 1e3, late);

    status_ok = status && strcmp(status, "done") == 0;
    rc = !lua_failed && status_ok && (expected < 0 || keys == expected) && (late == 0 || late_ok)
         ? 0 : 1;
    if (rc == 0) {
        printf("ok\n");
    } else {
        printf("FAILED:%s%s%s%s\n", lua_failed ? " frame() raised an error;" : "",
               status_ok ? "" : " the job is not done;",
               expected >= 0 && keys != expected ? " not every key was listed;" : "",
               late && !late_ok ? " late frames;" : "");
    }

    lua_close(L);
    free(work);
    free(sorted);
    return rc;
}
