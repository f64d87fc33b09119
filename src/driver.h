/*
 * driver.h — the transport drivers over libcurl: the blocking one
 * (driver_curl.c), the non-blocking multi one (driver_multi.c) and parallel
 * key-range listing (driver_parallel.c).  They move the core's requests and
 * replies and take plain C settings; nothing here knows Lua.
 */
#ifndef APIFY_KVS_DRIVER_H
#define APIFY_KVS_DRIVER_H

#include "core.h"

/* Internal: hidden from the shared object's symbol table even without
 * -fvisibility=hidden (LuaRocks builds). */
#pragma GCC visibility push(hidden)

typedef struct kvs_http kvs_http;   /* connections and DNS answers shared by transfers */

/* How transfers are made.  The strings and `http` are the maker's and must
 * outlive every driver object made with these settings; drivers copy nothing
 * but what they hand to libcurl. */
typedef struct kvs_settings {
    char     *token;          /* NULL: no Authorization header */
    char     *base_url;
    char     *user_agent;
    char     *ca_file;        /* CA certificates (PEM) trusted instead of the system's; NULL */
    char     *ca_path;        /* a directory of them, hashed (openssl rehash); NULL */
    double    timeout;        /* seconds per attempt, decoding included */
    double    min_delay;      /* seconds */
    double    max_delay;      /* longest wait between tries (seconds) */
    double    max_elapsed;    /* seconds one page may spend retrying; 0: no cap */
    int       max_retries;
    int       gzip;           /* ask for compressed replies */
    kvs_http *http;           /* the connection cache (kvs_http_new) */
} kvs_settings;

/* --- the blocking libcurl driver (driver_curl.c) ------------------------- */

int       kvs_http_global_init(void);          /* 0 ok */
kvs_http *kvs_http_new(void);                  /* NULL: out of memory */
void      kvs_http_free(kvs_http *h);
const char *kvs_http_version(void);            /* "libcurl/x.y.z" */

typedef struct kvs_conn kvs_conn;             /* one connection's worth of state */
kvs_conn *kvs_conn_new(const kvs_settings *s);
void      kvs_conn_free(kvs_conn *c);
/* Drives `l` until it has a page (1, swapped into *page), is finished (0) or
 * has failed (-1, see kvs_listing_error).  Blocks; sleeps between retries. */
int       kvs_conn_next_page(kvs_conn *c, kvs_listing *l, kvs_page *page);

/* For the multi driver: prepares the easy handle (returned) for `req` of `l`,
 * and after the transfer says what its CURLcode means for the core. */
void     *kvs_conn_start(kvs_conn *c, kvs_listing *l, const kvs_request *req);
void     *kvs_conn_handle(kvs_conn *c);
/* Work budget of the next turn: past `deadline` (monotonic seconds; 0 none) the
 * body callback pauses the transfer; a paused one resumes here. */
void      kvs_conn_budget(kvs_conn *c, double deadline);
int       kvs_conn_paused(const kvs_conn *c);
/* What the transfer's CURLcode means for the core: none, timeout, network
 * (worth a retry), or TLS / request (never mended by one). */
kvs_fault kvs_conn_fault(kvs_conn *c, int curl_code, const char **msg);
/* What one line libcurl hands a header callback is: a status line ("HTTP/1.1 200 OK",
 * a new reply after a redirect or a 100), a "Name: value" header, or neither. */
typedef enum { KVS_LINE_OTHER, KVS_LINE_STATUS, KVS_LINE_HEADER } kvs_header_kind;
typedef struct kvs_header_line_parts {
    int         status;                 /* KVS_LINE_STATUS */
    const char *name, *value;           /* KVS_LINE_HEADER; value keeps its spaces and CRLF */
    size_t      name_len, value_len;
} kvs_header_line_parts;
kvs_header_kind kvs_header_line(const char *buf, size_t len, kvs_header_line_parts *out);

/* --- the non-blocking libcurl multi driver (driver_multi.c) ------------------ */

typedef struct kvs_async kvs_async;
/* Drives `l` (not owned) without blocking.  With `prefetch`, the next page is
 * requested as soon as the previous one has been taken. */
kvs_async *kvs_async_new(const kvs_settings *s, kvs_listing *l, int prefetch);
/* At most about `seconds` of decoding per poll (0: no limit); the rest waits
 * for the next poll.  For frame loops. */
void       kvs_async_budget(kvs_async *a, double seconds);
void       kvs_async_free(kvs_async *a);          /* cancels a request in flight */
void       kvs_async_poll(kvs_async *a);          /* the work that is ready, no waiting */
int        kvs_async_take(kvs_async *a, kvs_page *mine);   /* 1: a page swapped into *mine */
int        kvs_async_finished(const kvs_async *a);         /* nothing ready, nothing coming */
/* Seconds until poll has work (0: now; < 0: never, finished). */
double     kvs_async_timeout(kvs_async *a);
/* Blocks up to `max` seconds until poll may have work. */
void       kvs_async_wait(kvs_async *a, double max);
/* A socket libcurl waits on, and for what: 1 read, 2 write, 3 both (0: not yet). */
typedef struct kvs_socket {
    int fd;
    int events;
} kvs_socket;
/* Points *sockets at every socket the request in flight waits on; returns
 * their count.  Valid until the next call into `a`. */
size_t     kvs_async_sockets(const kvs_async *a, const kvs_socket **sockets);

/* The sockets a libcurl multi handle waits on, kept by its socket callback
 * (which only curl_multi_socket_action keeps current: drive the handle here). */
typedef struct kvs_sockets {
    kvs_socket *s;
    size_t      n, cap;
    int         untracked;     /* one could not be recorded (out of memory) */
} kvs_sockets;
void       kvs_sockets_track(void *multi, kvs_sockets *t);   /* a CURLM * */
void       kvs_sockets_drive(void *multi, kvs_sockets *t);   /* what is ready, no waiting */
void       kvs_sockets_free(kvs_sockets *t);

/* --- parallel key-range listing on libcurl multi (driver_parallel.c) ----------- */

typedef struct kvs_par kvs_par;
/* One listing of `cfg` (copied) split into up to `parallel` key ranges
 * (1..KVS_PLAN_MAX; memory and pace as in core.h's planner).
 * rate > 0: at most that many requests per second, whatever the API says;
 * rate <= 0: KVS_PLAN_RATE, then each reply's X-RateLimit-Limit.  `ordered`:
 * pages come out in key order; else as they arrive.  Makes no request yet. */
kvs_par *kvs_par_new(const kvs_settings *s, const kvs_listing_config *cfg,
                     int parallel, double rate, int ordered);
void     kvs_par_free(kvs_par *p);       /* cancels every transfer at once */
void     kvs_par_poll(kvs_par *p);       /* the work that is ready, no waiting */
/* Blocks until the next page: 1 (swapped into *mine), 0 (finished) or -1
 * (failed: kvs_par_error says why; every transfer was cancelled). */
int      kvs_par_take(kvs_par *p, kvs_page *mine);
const kvs_error *kvs_par_error(const kvs_par *p);
/* Without waiting (the job): 1 (the next page swapped into *mine), 0 (none yet:
 * poll again, after kvs_par_timeout at the latest) or -1 (failed, as kvs_par_take).
 * Pages come in the same order, with the same guarantees as kvs_par_take's. */
int      kvs_par_next(kvs_par *p, kvs_page *mine);
int      kvs_par_finished(kvs_par *p);   /* no page left to hand out (done or failed) */
/* Seconds until kvs_par_poll has work (0: now; < 0: never, finished), or
 * until a socket of kvs_par_sockets is ready, whichever comes first. */
double   kvs_par_timeout(kvs_par *p);
/* As kvs_async_sockets: the sockets of every transfer in flight. */
size_t   kvs_par_sockets(const kvs_par *p, const kvs_socket **sockets);

/* --- one interface over the drivers a listing object runs on -------------------- */

/* What the binding asks of a driver (store:keys, store:job): it never asks which driver
 * it has.  `d` is the driver's own state. */
typedef struct kvs_driver_ops {
    void   (*poll)(void *d);                    /* the work that is ready, no waiting */
    /* The next page, without waiting: 1 (swapped into *mine), 0 (none for now) or -1
     * (failed: error says why). */
    int    (*next)(void *d, kvs_page *mine);
    /* The next page, blocking until it comes: 1, 0 (finished) or -1 (failed). */
    int    (*take)(void *d, kvs_page *mine);
    int    (*finished)(void *d);                /* no page left to hand out */
    const kvs_error *(*error)(void *d);         /* the failure, NULL while none */
    double (*timeout)(void *d);                 /* seconds until poll has work; < 0: never */
    size_t (*sockets)(void *d, const kvs_socket **sockets);   /* as kvs_async_sockets */
    void   (*free)(void *d);                    /* cancels what is in flight */
} kvs_driver_ops;

typedef struct kvs_driver {
    const kvs_driver_ops *ops;                  /* NULL: none (never made, or released) */
    void                 *d;
} kvs_driver;

/* The drivers.  Each fills `out` and returns 0, or -1 when out of memory; none makes a
 * request yet.  `cfg` is copied, its strings too.
 *   sequential (driver_sequential.c): one range, page after page, on the multi driver;
 *     `prefetch` asks for the next page as soon as one is taken; `budget`: seconds of
 *     decoding a poll may do (0: no limit), for frame loops.
 *   parallel (driver_parallel.c): key ranges side by side, as kvs_par_new. */
int kvs_driver_sequential(kvs_driver *out, const kvs_settings *s, const kvs_listing_config *cfg,
                          int prefetch, double budget);
int kvs_driver_parallel(kvs_driver *out, const kvs_settings *s, const kvs_listing_config *cfg,
                        int parallel, double rate, int ordered);

#pragma GCC visibility pop

#endif
