/*
 * core_http.c — raw HTTP/1.1 for drivers that move bytes themselves (an nginx
 * cosocket, luasocket, a game engine's sockets): the GET request of a URL the
 * listing made, as bytes, and the reading of its reply as it arrives, cut
 * anywhere, into a sink (a listing or a plan's range).  The grammar is
 * http-parser's (the C HTTP/1.x parser of libgit2 and httptools): status line,
 * headers, Content-Length, chunked and close-delimited bodies.  Bodies go to
 * the sink as they came: gzip ones are inflated by the listing
 * (kvs_listing_decode_gzip).  No I/O.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "core.h"

/* --- the request ------------------------------------------------------------ */

static int add(kvs_buf *b, const char *s, size_t n)
{
    return kvs_buf_append(b, s, n);
}

static int adds(kvs_buf *b, const char *s)
{
    return add(b, s, strlen(s));
}

/* A header value we send: visible ASCII and spaces only (no CR, LF, NUL). */
static int value_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return 0;
    return 1;
}

const char *kvs_http_request(kvs_buf *out, kvs_http_target *t, const char *url, size_t url_len,
                             const kvs_http_fields *f)
{
    struct http_parser_url u;
    const char *scheme;
    size_t slen;
    int ok = 0;

    memset(t, 0, sizeof *t);
    out->len = 0;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_SCHEMA))
        || !(u.field_set & (1 << UF_HOST)))
        return "the request URL cannot be read";
    if (u.field_set & (1 << UF_USERINFO))
        return "base_url holds a user name or password, which this transport never sends";
    scheme = url + u.field_data[UF_SCHEMA].off;
    slen = u.field_data[UF_SCHEMA].len;
    if (slen == 5 && strncasecmp(scheme, "https", 5) == 0) t->tls = 1;
    else if (!(slen == 4 && strncasecmp(scheme, "http", 4) == 0))
        return "only http and https base URLs can be requested";
    if (f->user_agent && !value_ok(f->user_agent))
        return "user_agent holds a control character";
    if (f->token && !value_ok(f->token))
        return "the token holds a control character";
    t->host = url + u.field_data[UF_HOST].off;
    t->host_len = u.field_data[UF_HOST].len;
    t->port = (u.field_set & (1 << UF_PORT)) ? u.port : t->tls ? 443 : 80;

    ok = adds(out, "GET ") == 0;
    if (u.field_set & (1 << UF_PATH))
        ok = ok && add(out, url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len) == 0;
    else
        ok = ok && adds(out, "/") == 0;
    if (u.field_set & (1 << UF_QUERY))
        ok = ok && adds(out, "?") == 0
                && add(out, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len) == 0;
    ok = ok && adds(out, " HTTP/1.1\r\nHost: ") == 0;
    /* as the URL names it: an IPv6 address in brackets, the port when it gave one */
    if (memchr(t->host, ':', t->host_len))
        ok = ok && adds(out, "[") == 0 && add(out, t->host, t->host_len) == 0 && adds(out, "]") == 0;
    else
        ok = ok && add(out, t->host, t->host_len) == 0;
    if (u.field_set & (1 << UF_PORT))
        ok = ok && adds(out, ":") == 0
                && add(out, url + u.field_data[UF_PORT].off, u.field_data[UF_PORT].len) == 0;
    ok = ok && adds(out, "\r\nAccept: application/json\r\n") == 0;
    if (f->gzip) ok = ok && adds(out, "Accept-Encoding: gzip\r\n") == 0;
    if (f->user_agent)
        ok = ok && adds(out, "User-Agent: ") == 0 && adds(out, f->user_agent) == 0
                && adds(out, "\r\n") == 0;
    if (f->token)
        ok = ok && adds(out, "Authorization: Bearer ") == 0 && adds(out, f->token) == 0
                && adds(out, "\r\n") == 0;
    ok = ok && adds(out, "\r\n") == 0;
    return ok ? NULL : "out of memory";
}

/* --- the reply ----------------------------------------------------------------- */

struct kvs_http_reader {
    http_parser          p;
    http_parser_settings cb;
    const kvs_http_sink *sink;
    void                *ud;
    kvs_buf              name, value;   /* the header being read */
    kvs_buf              heads;         /* the headers read: (length, name, length, value)... */
    int                  in_value;      /* value bytes came after the name's */
    int                  interim;       /* a 1xx reply, skipped */
    int                  in_body;       /* the final reply's headers went to the sink */
    int                  stopped;       /* the sink needs no more of the body: no more reads */
    int                  complete;      /* the reply ended */
    int                  got_bytes;     /* anything was fed */
    int                  extra;         /* bytes came after the reply */
    int                  state;         /* KVS_HTTP_*: where it stands */
    int                  nomem;
    const char          *why;           /* KVS_HTTP_BROKEN: what was wrong */
};

static kvs_http_reader *of(http_parser *p)
{
    return p->data;
}

static int grow(kvs_http_reader *r, kvs_buf *b, const void *at, size_t n)
{
    if (kvs_buf_append(b, at, n) == 0) return 0;
    r->nomem = 1;
    return -1;
}

/* The header just read joins the others: the sink gets them all once the status line and
 * every header are in, so where the bytes were cut never shows. */
static int keep_header(kvs_http_reader *r)
{
    int rc = 0;
    if (r->in_value)
        rc = grow(r, &r->heads, &r->name.len, sizeof r->name.len) || grow(r, &r->heads,
             r->name.data, r->name.len) || grow(r, &r->heads, &r->value.len, sizeof r->value.len)
             || grow(r, &r->heads, r->value.data, r->value.len);
    r->name.len = r->value.len = 0;
    r->in_value = 0;
    return rc;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    kvs_http_reader *r = of(p);
    if (r->in_body) return 0;                  /* trailers */
    if (r->in_value && keep_header(r) != 0) return -1;
    return grow(r, &r->name, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    kvs_http_reader *r = of(p);
    if (r->in_body) return 0;
    r->in_value = 1;
    return grow(r, &r->value, at, n);
}

static int on_headers_complete(http_parser *p)
{
    kvs_http_reader *r = of(p);
    size_t at = 0, nlen, vlen;
    if (keep_header(r) != 0) return -1;
    if (p->status_code < 200) {                /* 100 Continue, 103 Early Hints: the reply */
        r->interim = 1;                        /* comes after */
        r->heads.len = 0;
        return 0;
    }
    r->sink->begin(r->ud, p->status_code);
    while (at < r->heads.len) {
        const char *name, *value;
        memcpy(&nlen, r->heads.data + at, sizeof nlen);
        name = r->heads.data + at + sizeof nlen;
        at += sizeof nlen + nlen;
        memcpy(&vlen, r->heads.data + at, sizeof vlen);
        value = r->heads.data + at + sizeof vlen;
        at += sizeof vlen + vlen;
        r->sink->header(r->ud, name, nlen, value, vlen);
    }
    r->heads.len = 0;
    r->in_body = 1;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    kvs_http_reader *r = of(p);
    /* Past the sink's stop the body is only looked through for the reply's end, within the
     * bytes at hand: the connection is kept when it came with them (a gzip member ends just
     * before its chunked body does), the reply ends there whatever they hold. */
    if (r->in_body && !r->stopped && r->sink->body(r->ud, at, n) != 0) r->stopped = 1;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    kvs_http_reader *r = of(p);
    if (r->interim) {                   /* what follows a 1xx is the reply */
        r->interim = 0;
        return 0;
    }
    r->complete = 1;
    http_parser_pause(p, 1);            /* anything after it is not this reply's */
    return 0;
}

kvs_http_reader *kvs_http_reader_new(const kvs_http_sink *sink)
{
    kvs_http_reader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->sink = sink;
    http_parser_settings_init(&r->cb);
    r->cb.on_header_field = on_header_field;
    r->cb.on_header_value = on_header_value;
    r->cb.on_headers_complete = on_headers_complete;
    r->cb.on_body = on_body;
    r->cb.on_message_complete = on_message_complete;
    r->state = KVS_HTTP_DONE;           /* nothing to read before kvs_http_reader_begin */
    return r;
}

void kvs_http_reader_free(kvs_http_reader *r)
{
    if (!r) return;
    kvs_buf_free(&r->name);
    kvs_buf_free(&r->value);
    kvs_buf_free(&r->heads);
    free(r);
}

void kvs_http_reader_begin(kvs_http_reader *r, void *ud)
{
    kvs_buf name = r->name, value = r->value, heads = r->heads;   /* kept for reuse */
    const kvs_http_sink *sink = r->sink;
    http_parser_settings cb = r->cb;
    memset(r, 0, sizeof *r);
    r->name = name;
    r->value = value;
    r->heads = heads;
    r->name.len = r->value.len = r->heads.len = 0;
    r->sink = sink;
    r->cb = cb;
    r->ud = ud;
    http_parser_init(&r->p, HTTP_RESPONSE);
    r->p.data = r;
    r->state = KVS_HTTP_MORE;
}

static int broken(kvs_http_reader *r, const char *why)
{
    r->why = why;
    return r->state = KVS_HTTP_BROKEN;
}

/* What the parser's stop means: the reply's end, or a fault. */
static int settle(kvs_http_reader *r, size_t fed, size_t len)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&r->p);
    if (r->nomem) return broken(r, "out of memory while reading the reply's headers");
    if (r->complete) {
        if (fed < len) r->extra = 1;
        return r->state = KVS_HTTP_DONE;
    }
    if (r->stopped) return r->state = KVS_HTTP_DONE;   /* the rest cannot matter: stop reading */
    if (e != HPE_OK) return broken(r, http_errno_description(e));
    if (r->p.upgrade) return broken(r, "the server switched protocols");
    return KVS_HTTP_MORE;
}

int kvs_http_reader_feed(kvs_http_reader *r, const char *data, size_t len)
{
    size_t fed;
    if (r->state != KVS_HTTP_MORE) return r->state;
    if (len == 0) return KVS_HTTP_MORE;       /* an empty read is no end of stream */
    r->got_bytes = 1;
    fed = http_parser_execute(&r->p, &r->cb, data, len);
    return settle(r, fed, len);
}

int kvs_http_reader_eof(kvs_http_reader *r)
{
    if (r->state != KVS_HTTP_MORE) return r->state;
    if (!r->got_bytes)
        return broken(r, "the connection closed before the reply");
    http_parser_execute(&r->p, &r->cb, NULL, 0);
    if (r->complete) {
        r->extra = 1;                          /* closed: nothing to keep alive */
        return r->state = KVS_HTTP_DONE;
    }
    if (r->nomem) return broken(r, "out of memory while reading the reply's headers");
    return broken(r, "the connection closed in the middle of the reply");
}

int kvs_http_reader_reusable(const kvs_http_reader *r)
{
    return r->state == KVS_HTTP_DONE && r->complete && !r->extra && http_should_keep_alive(&r->p);
}

const char *kvs_http_reader_message(const kvs_http_reader *r)
{
    return r->state == KVS_HTTP_BROKEN && r->why ? r->why : "";
}
