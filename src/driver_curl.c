/*
 * driver_curl.c — one exchange at a time over a libcurl easy handle
 * (kvs_conn): its options, the reply's callbacks into the core, what a
 * transfer's CURLcode means, the blocking page loop of list_keys, and adding
 * the handle to the client's multi handle (driver_http.c) for the
 * non-blocking drivers.  Connections and DNS answers are shared through the
 * client's kvs_http, so the pages of a listing, and listings after it, reuse
 * one keep-alive connection.  All policy is in the core.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "driver.h"
#include "platform.h"

struct kvs_conn {
    CURL              *easy;
    struct curl_slist *headers;
    kvs_http          *http;       /* the client's: connections and multi handle */
    kvs_listing       *listing;    /* the listing of the exchange under way */
    int                stopped;    /* we cut the body short on purpose */
    int                timed_out;  /* ... because the attempt ran past its timeout */
    int                added;      /* in the client's multi handle */
    int                ended;      /* the transfer is over, `result` not taken yet */
    CURLcode           result;
    int                no_socket;  /* errno of a socket() that failed for want of descriptors */
    double             timeout;    /* seconds an attempt may take, decoding included */
    double             attempt_end;  /* monotonic: when the attempt under way times out */
    double             deadline;   /* monotonic; past it, the body waits (0: never) */
    int                paused;     /* the transfer waits for the next turn */
    int                https_only; /* an https base_url: every request, redirects too, is https */
    char               errbuf[CURL_ERROR_SIZE];
};

/* --- callbacks --------------------------------------------------------------- */

kvs_header_kind kvs_header_line(const char *buf, size_t len, kvs_header_line_parts *out)
{
    if (len > sizeof("HTTP/") - 1 && memcmp(buf, "HTTP/", sizeof("HTTP/") - 1) == 0) {
        /* a status line: "HTTP/1.1 200 OK"; after a redirect, a new reply */
        const char *sp = memchr(buf, ' ', len);
        int status = 0;
        if (sp) {
            const char *d = sp + 1, *end = buf + len;
            while (d < end && *d >= '0' && *d <= '9' && status < 1000)
                status = status * 10 + (*d++ - '0');
        }
        out->status = status;
        return KVS_LINE_STATUS;
    } else {
        const char *colon = memchr(buf, ':', len);
        if (!colon) return KVS_LINE_OTHER;
        out->name = buf;
        out->name_len = (size_t)(colon - buf);
        out->value = colon + 1;
        out->value_len = len - (size_t)(colon + 1 - buf);
        return KVS_LINE_HEADER;
    }
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
    kvs_conn *c = ud;
    size_t len = size * n;
    kvs_header_line_parts h;
    switch (kvs_header_line(buf, len, &h)) {
    case KVS_LINE_STATUS: kvs_listing_reply_begin(c->listing, h.status); break;
    case KVS_LINE_HEADER:
        kvs_listing_reply_header(c->listing, h.name, h.name_len, h.value, h.value_len);
        break;
    case KVS_LINE_OTHER: break;
    }
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud)
{
    kvs_conn *c = ud;
    size_t len = size * n;
    double now = kvs_monotonic();
    if (now > c->attempt_end) {   /* libcurl checks its timeout between chunks only */
        c->stopped = c->timed_out = 1;
        return 0;
    }
    if (c->deadline > 0 && now > c->deadline) {
        c->paused = 1;      /* libcurl keeps this chunk and hands it over again later */
        return CURL_WRITEFUNC_PAUSE;
    }
    if (kvs_listing_reply_body(c->listing, buf, len) != 0) {
        c->stopped = 1;     /* the rest cannot change the verdict */
        return 0;
    }
    return len;
}

/* CURLOPT_OPENSOCKETFUNCTION: libcurl's own socket() call, which keeps why it failed.  With
 * no descriptor left, libcurl says only "Couldn't connect to server". */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    kvs_conn *c = ud;
    curl_socket_t fd = socket(a->family, a->socktype, a->protocol);
    (void)purpose;
    if (fd == CURL_SOCKET_BAD && (errno == EMFILE || errno == ENFILE)) {
        c->no_socket = errno;
        kvs_http_shortage(c->http);
    }
    return fd;
}

/* --- connections ------------------------------------------------------------- */

kvs_conn *kvs_conn_new(const kvs_settings *s)
{
    kvs_conn *c = calloc(1, sizeof *c);
    CURL *e;
    long timeout_ms;
    if (!c) return NULL;
    c->easy = e = curl_easy_init();
    c->headers = curl_slist_append(NULL, "Accept: application/json");
    if (!e || !c->headers) { kvs_conn_free(c); return NULL; }
    timeout_ms = (long)(s->timeout * 1000.0 + 0.5);
    if (timeout_ms < 1) timeout_ms = 1;
    c->timeout = (double)timeout_ms / 1000.0;

    /* kvs.new keeps the scheme in lower case */
    c->https_only = strncmp(s->base_url, "https://", 8) == 0;
    c->http = s->http;
    curl_easy_setopt(e, CURLOPT_SHARE, kvs_http_share(s->http));
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)c);     /* kvs_http_drive finds the conn */
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, c->https_only ? "https" : "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, c->https_only ? "https" : "http,https");
    curl_easy_setopt(e, CURLOPT_UNRESTRICTED_AUTH, 0L);   /* token stays with its host */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (s->ca_file || s->ca_path) {   /* instead of libcurl's built-in bundle and directory */
        curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file);
        curl_easy_setopt(e, CURLOPT_CAPATH, s->ca_path);
    }
    if (s->gzip)   /* whatever libcurl can decode; off: identity, cheaper on loopback */
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);  /* per attempt, never compounded */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, s->user_agent);
    if (s->token) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, s->token);
    }
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    return c;
}

size_t kvs_conn_memory(const kvs_conn *c)
{
    /* libcurl's easy handle: its state and 16 KiB receive buffer */
    return c ? sizeof *c + 20480 : 0;
}

void kvs_conn_free(kvs_conn *c)
{
    if (!c) return;
    kvs_conn_remove(c);
    if (c->easy) curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
    free(c);
}

void *kvs_conn_start(kvs_conn *c, kvs_listing *l, const kvs_request *req)
{
    c->listing = l;
    c->stopped = c->timed_out = 0;
    c->paused = 0;
    c->no_socket = 0;
    c->attempt_end = kvs_monotonic() + c->timeout;
    c->errbuf[0] = '\0';
    curl_easy_setopt(c->easy, CURLOPT_URL, req->url);
    return c->easy;
}

int kvs_conn_add(kvs_conn *c)
{
    c->ended = 0;
    if (kvs_http_add(c->http, c->easy) != 0) return -1;
    c->added = 1;
    return 0;
}

void kvs_conn_remove(kvs_conn *c)
{
    if (c->added) kvs_http_remove(c->http, c->easy);
    c->added = c->ended = 0;
}

void kvs_conn_ended(kvs_conn *c, int curl_code)
{
    c->added = 0;                       /* kvs_http_drive took it out */
    c->ended = 1;
    c->result = (CURLcode)curl_code;
}

int kvs_conn_done(const kvs_conn *c)
{
    return c->ended;
}

int kvs_conn_result(kvs_conn *c)
{
    c->ended = 0;
    return (int)c->result;
}

/* What a socket() that failed with `err` (EMFILE, ENFILE) says. */
static const char *no_descriptor(int err, char *buf, size_t cap)
{
    struct rlimit lim;
    if (err == ENFILE)
        snprintf(buf, cap, "too many open files in the system: no descriptor left for a "
                 "socket (ENFILE)");
    else if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
        snprintf(buf, cap, "too many open files: no descriptor left for a socket (EMFILE, "
                 "limit %llu)", (unsigned long long)lim.rlim_cur);
    else
        snprintf(buf, cap, "too many open files: no descriptor left for a socket (EMFILE)");
    return buf;
}

void kvs_conn_budget(kvs_conn *c, double deadline)
{
    c->deadline = deadline;
    if (c->paused) {
        c->paused = 0;
        curl_easy_pause(c->easy, CURLPAUSE_CONT);   /* may decode the held chunk right now */
    }
}

int kvs_conn_paused(const kvs_conn *c)
{
    return c->paused;
}

/* After CURLE_UNSUPPORTED_PROTOCOL: 1 when it was a redirect refused for its scheme,
 * with errbuf saying where it led: scheme://host[:port], no user, path or query. */
static int refused_redirect(kvs_conn *c)
{
    long redirects = 0;
    char *url = NULL;
    const char *sep, *host, *at;
    size_t scheme, n;
    if (curl_easy_getinfo(c->easy, CURLINFO_REDIRECT_COUNT, &redirects) != CURLE_OK
        || redirects < 1
        || curl_easy_getinfo(c->easy, CURLINFO_EFFECTIVE_URL, &url) != CURLE_OK || !url
        || !(sep = strstr(url, "://")))
        return 0;
    scheme = (size_t)(sep - url);
    host = sep + 3;
    n = strcspn(host, "/?#");
    while ((at = memchr(host, '@', n)) != NULL) {   /* user:password@ */
        n -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    if (scheme > 16) scheme = 16;
    if (n > 100) n = 100;
    if (c->https_only)
        snprintf(c->errbuf, sizeof c->errbuf, "refused a redirect from https to %.*s://%.*s: an "
                 "https base_url never leaves https", (int)scheme, url, (int)n, host);
    else
        snprintf(c->errbuf, sizeof c->errbuf, "refused a redirect to %.*s://%.*s: only http and "
                 "https are followed", (int)scheme, url, (int)n, host);
    return 1;
}

kvs_fault kvs_conn_fault(kvs_conn *c, int code, const char **msg)
{
    CURLcode rc = (CURLcode)code;
    *msg = NULL;
    if (rc == CURLE_WRITE_ERROR && c->timed_out) {
        snprintf(c->errbuf, sizeof c->errbuf, "the reply took more than %g s to arrive and "
                 "decode", c->timeout);
        *msg = c->errbuf;
        return KVS_FAULT_TIMEOUT;
    }
    if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && c->stopped))
        return KVS_FAULT_NONE;      /* a whole reply, or one we stopped reading on purpose */
    if (rc == CURLE_COULDNT_CONNECT && c->no_socket) {   /* worth a retry: some may be freed */
        *msg = no_descriptor(c->no_socket, c->errbuf, sizeof c->errbuf);
        return KVS_FAULT_NETWORK;
    }
    *msg = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return KVS_FAULT_TIMEOUT;
    case CURLE_PEER_FAILED_VERIFICATION:   /* the certificate: no retry changes it */
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
        return KVS_FAULT_TLS;
    case CURLE_UNSUPPORTED_PROTOCOL:       /* what we asked for cannot be sent */
        if (refused_redirect(c)) *msg = c->errbuf;
        return KVS_FAULT_REQUEST;
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_FUNCTION_NOT_FOUND:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_LOGIN_DENIED:
    case CURLE_AUTH_ERROR:
        return KVS_FAULT_REQUEST;
    default:                               /* resets, refusals, DNS, partial bodies */
        return KVS_FAULT_NETWORK;
    }
}

int kvs_conn_next_page(kvs_conn *c, kvs_listing *l, kvs_page *page)
{
    kvs_request req;
    while (kvs_listing_next_request(l, &req)) {
        const char *msg;
        double wait;
        CURLcode rc = curl_easy_perform(kvs_conn_start(c, l, &req));
        kvs_fault fault = kvs_conn_fault(c, rc, &msg);
        switch (kvs_listing_reply_end(l, fault, msg, kvs_monotonic(), &wait)) {
        case KVS_STEP_PAGE:
            kvs_listing_take_page(l, page);
            return 1;
        case KVS_STEP_RETRY:
            kvs_sleep(wait);
            break;
        case KVS_STEP_FAILED:
            return -1;
        }
    }
    return kvs_listing_failed(l) ? -1 : 0;
}
