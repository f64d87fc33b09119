/*
 * core_reply.c — decodes reply bodies as they arrive, with yajl's streaming
 * parser: a 2xx body into a kvs_page (items, cursors, flags), any other into
 * the API's {"error":{"type","message"}}.  Items go straight into the page's
 * flat arrays; nothing is built per key.  What a reply may cost is bounded
 * (items, decoded bytes), lone UTF-16 surrogate escapes are refused (yajl
 * would turn them into bytes that no longer name the server's key), and
 * server text is cleared of the token (core_redact.c) before it can reach an
 * error.  The verdict does not depend on how the body is cut into chunks.
 * No I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "core.h"

/* Where in the document the parser stands.  The shapes we care about are
 * fixed, so a context enum plus a skip depth for anything else is enough. */
typedef enum { C_TOP, C_ROOT, C_DATA, C_ITEMS, C_ITEM, C_ERROR, C_END } ctx_t;

typedef enum {
    K_OTHER, K_DATA, K_ERROR,                                  /* root */
    K_ITEMS, K_COUNT, K_LIMIT, K_TRUNC, K_NEXT, K_START,       /* data */
    K_KEY, K_SIZE, K_URL,                                      /* item */
    K_TYPE, K_MESSAGE                                          /* error */
} field_t;

#define HAVE_KEY  1
#define HAVE_SIZE 2

#define ERR_BODY_CAP 4096   /* bytes of a non-2xx body kept for the message */
#define ERR_PARSE_CAP 65536 /* bytes of a non-2xx body decoded for type and message */

/* Where the escape scanner stands (it sees every body byte, yajl's view aside). */
typedef enum { E_TEXT, E_BACKSLASH, E_HEX } esc_t;

struct kvs_reply {
    yajl_handle h;
    kvs_page   *page;
    int         status;
    int         is_page;        /* 2xx: decoding a page, else an error body */
    ctx_t       ctx;
    int         skip;           /* depth inside a value we ignore */
    field_t     field;          /* key just read in the current object */
    int         item_have;
    int         saw_data, saw_items;
    int         failed;         /* decoding cannot succeed any more */
    int         final;          /* ... and no retry can mend it */
    int         out_of_memory;
    char        problem[160];   /* why a page body is not a page */
    size_t      max_items, body_max, body_len;
    const char *secret;
    size_t      secret_len;
    esc_t       esc;            /* escape scanner state */
    int         lone_surrogate; /* the scanner met one */
    int         hex_n, high;    /* hex digits read; a high surrogate waits for its low */
    unsigned    hex;
    /* error body */
    int         have_type, have_message;
    kvs_buf     err_type, err_message;
    kvs_buf     raw;            /* first bytes of a non-2xx body */
};

void kvs_page_init(kvs_page *p)
{
    memset(p, 0, sizeof *p);
    kvs_page_reset(p);
}

void kvs_page_reset(kvs_page *p)
{
    p->count = 0;
    p->bytes.len = 0;
    p->next.len = 0;
    p->start.len = 0;
    p->count_field = p->limit_field = -1;
    p->is_truncated = -1;
    p->has_next = p->has_start = 0;
}

void kvs_page_swap(kvs_page *a, kvs_page *b)
{
    kvs_page t = *a;
    *a = *b;
    *b = t;
}

size_t kvs_page_memory(const kvs_page *p)
{
    return p->cap * sizeof *p->items + p->bytes.cap + p->next.cap + p->start.cap;
}

void kvs_page_free(kvs_page *p)
{
    free(p->items);
    kvs_buf_free(&p->bytes);
    kvs_buf_free(&p->next);
    kvs_buf_free(&p->start);
    p->items = NULL;
    p->count = p->cap = 0;
}

static int fail(kvs_reply *r, const char *what)
{
    if (!r->failed) {
        r->failed = 1;
        snprintf(r->problem, sizeof r->problem, "%s", what);
    }
    return 0;   /* tells yajl to stop */
}

static int oom(kvs_reply *r)
{
    r->out_of_memory = 1;
    return fail(r, "out of memory");
}

/* --- yajl callbacks ------------------------------------------------------ */

static int on_start_map(void *ud)
{
    kvs_reply *r = ud;
    if (r->skip) { r->skip++; return 1; }
    switch (r->ctx) {
    case C_TOP:  r->ctx = C_ROOT; return 1;
    case C_ROOT:
        if (r->field == K_DATA && r->is_page) { r->ctx = C_DATA; r->saw_data = 1; return 1; }
        if (r->field == K_ERROR && !r->is_page) { r->ctx = C_ERROR; return 1; }
        break;
    case C_ITEMS: {
        kvs_page *p = r->page;
        if (p->count >= r->max_items) {
            char why[120];
            snprintf(why, sizeof why, "the page holds more items than the %zu asked for",
                     r->max_items);
            r->final = 1;
            return fail(r, why);
        }
        if (p->count == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 64;
            kvs_item *n = realloc(p->items, cap * sizeof *n);
            if (!n) return oom(r);
            p->items = n;
            p->cap = cap;
        }
        p->items[p->count].url_off = KVS_NO_URL;
        p->items[p->count].size = 0;
        r->item_have = 0;
        r->ctx = C_ITEM;
        return 1;
    }
    case C_DATA:
        if (r->field == K_ITEMS) return fail(r, "\"items\" is not an array");
        break;
    default: break;
    }
    r->skip = 1;
    return 1;
}

static int on_end_map(void *ud)
{
    kvs_reply *r = ud;
    if (r->skip) { r->skip--; return 1; }
    switch (r->ctx) {
    case C_ROOT:  r->ctx = C_END; break;
    case C_DATA:
    case C_ERROR: r->ctx = C_ROOT; break;
    case C_ITEM:
        if (!(r->item_have & HAVE_KEY)) return fail(r, "an item has no \"key\" string");
        if (!(r->item_have & HAVE_SIZE)) return fail(r, "an item has no integer \"size\"");
        r->page->count++;
        r->ctx = C_ITEMS;
        break;
    default: break;
    }
    r->field = K_OTHER;
    return 1;
}

static int on_start_array(void *ud)
{
    kvs_reply *r = ud;
    if (r->skip) { r->skip++; return 1; }
    if (r->ctx == C_DATA && r->field == K_ITEMS) {
        r->ctx = C_ITEMS;
        r->saw_items = 1;
        return 1;
    }
    if (r->ctx == C_TOP && r->is_page) return fail(r, "the body is not a JSON object");
    if (r->ctx == C_ROOT && r->field == K_DATA && r->is_page) return fail(r, "\"data\" is not an object");
    if (r->ctx == C_ITEMS) return fail(r, "an item is not an object");
    r->skip = 1;
    return 1;
}

static int on_end_array(void *ud)
{
    kvs_reply *r = ud;
    if (r->skip) { r->skip--; return 1; }
    if (r->ctx == C_ITEMS) { r->ctx = C_DATA; r->field = K_OTHER; }
    return 1;
}

#define IS(lit) (len == sizeof(lit) - 1 && memcmp(s, lit, len) == 0)

static int on_map_key(void *ud, const unsigned char *us, size_t len)
{
    kvs_reply *r = ud;
    const char *s = (const char *)us;
    if (r->skip) return 1;
    switch (r->ctx) {
    case C_ROOT:
        r->field = IS("data") ? K_DATA : IS("error") ? K_ERROR : K_OTHER;
        break;
    case C_DATA:
        r->field = IS("items") ? K_ITEMS : IS("count") ? K_COUNT : IS("limit") ? K_LIMIT
                 : IS("isTruncated") ? K_TRUNC : IS("nextExclusiveStartKey") ? K_NEXT
                 : IS("exclusiveStartKey") ? K_START : K_OTHER;
        break;
    case C_ITEM:
        r->field = IS("key") ? K_KEY : IS("size") ? K_SIZE
                 : IS("recordPublicUrl") ? K_URL : K_OTHER;
        break;
    case C_ERROR:
        r->field = IS("type") ? K_TYPE : IS("message") ? K_MESSAGE : K_OTHER;
        break;
    default:
        r->field = K_OTHER;
    }
    return 1;
}

/* A scalar where the document should hold a container. */
static int scalar_where_container(kvs_reply *r)
{
    if (r->ctx == C_TOP && r->is_page) return fail(r, "the body is not a JSON object");
    if (r->ctx == C_ROOT && r->field == K_DATA && r->is_page) return fail(r, "\"data\" is not an object");
    if (r->ctx == C_ITEMS) return fail(r, "an item is not an object");
    return 1;
}

/* A scalar of a type the current field does not take. */
static int unexpected_scalar(kvs_reply *r)
{
    if (r->ctx == C_ITEM) {
        if (r->field == K_KEY) return fail(r, "an item's \"key\" is not a string");
        if (r->field == K_SIZE) return fail(r, "an item's \"size\" is not a non-negative integer");
        return 1;                       /* a recordPublicUrl that is no string: none */
    }
    if (r->ctx == C_DATA) {
        if (r->field == K_ITEMS) return fail(r, "\"items\" is not an array");
        if (r->field == K_TRUNC) return fail(r, "\"isTruncated\" is not a boolean");
        if (r->field == K_NEXT) return fail(r, "\"nextExclusiveStartKey\" is not a string");
        return 1;
    }
    return scalar_where_container(r);
}

static int on_string(void *ud, const unsigned char *us, size_t len)
{
    kvs_reply *r = ud;
    kvs_page *p = r->page;
    if (r->skip) return 1;
    if (r->ctx == C_ITEM && (r->field == K_KEY || r->field == K_URL)) {
        kvs_item *it = &p->items[p->count];
        size_t off = p->bytes.len;
        if (kvs_buf_append(&p->bytes, us, len) != 0)
            return oom(r);
        if (r->field == K_KEY) {
            it->key_off = off; it->key_len = len;
            r->item_have |= HAVE_KEY;
        } else {
            it->url_off = off; it->url_len = len;
        }
        return 1;
    }
    if (r->ctx == C_DATA && (r->field == K_NEXT || r->field == K_START)) {
        int next = r->field == K_NEXT;
        if (kvs_buf_set(next ? &p->next : &p->start, us, len) != 0) return oom(r);
        if (next) p->has_next = 1; else p->has_start = 1;
        return 1;
    }
    if (r->ctx == C_ERROR && (r->field == K_TYPE || r->field == K_MESSAGE)) {
        int type = r->field == K_TYPE;
        if (kvs_buf_set(type ? &r->err_type : &r->err_message, us, len) != 0) return oom(r);
        if (type) r->have_type = 1; else r->have_message = 1;
        return 1;
    }
    return unexpected_scalar(r);
}

static int on_integer(void *ud, long long v)
{
    kvs_reply *r = ud;
    if (r->skip) return 1;
    if (r->ctx == C_ITEM && r->field == K_SIZE && v >= 0) {
        r->page->items[r->page->count].size = v;
        r->item_have |= HAVE_SIZE;
        return 1;
    }
    if (r->ctx == C_DATA && r->field == K_COUNT) { r->page->count_field = v; return 1; }
    if (r->ctx == C_DATA && r->field == K_LIMIT) { r->page->limit_field = v; return 1; }
    return unexpected_scalar(r);
}

static int on_double(void *ud, double d)
{
    kvs_reply *r = ud;
    if (r->skip) return 1;
    /* JSON does not tell integers from floats: 36.0 is still 36 bytes */
    if (d >= 0 && d < KVS_2POW53 && d == (double)(long long)d)
        return on_integer(ud, (long long)d);
    return unexpected_scalar(r);
}

static int on_boolean(void *ud, int b)
{
    kvs_reply *r = ud;
    if (r->skip) return 1;
    if (r->ctx == C_DATA && r->field == K_TRUNC) { r->page->is_truncated = b ? 1 : 0; return 1; }
    return unexpected_scalar(r);
}

static int on_null(void *ud)
{
    kvs_reply *r = ud;
    if (r->skip) return 1;
    if (r->ctx == C_DATA && r->field == K_NEXT) { r->page->has_next = 0; return 1; }
    if (r->ctx == C_DATA && r->field == K_START) { r->page->has_start = 0; return 1; }
    if (r->ctx == C_ITEM && r->field == K_URL) return 1;
    return unexpected_scalar(r);
}

static const yajl_callbacks callbacks = {
    on_null, on_boolean, on_integer, on_double, NULL /* number: use the two above */,
    on_string, on_start_map, on_map_key, on_end_map, on_start_array, on_end_array
};

/* --- public ---------------------------------------------------------------- */

kvs_reply *kvs_reply_new(void)
{
    return calloc(1, sizeof(kvs_reply));
}

void kvs_reply_secret(kvs_reply *r, const char *secret, size_t n)
{
    r->secret = secret;
    r->secret_len = n;
}

void kvs_reply_free(kvs_reply *r)
{
    if (!r) return;
    if (r->h) yajl_free(r->h);
    kvs_buf_free(&r->err_type);
    kvs_buf_free(&r->err_message);
    kvs_buf_free(&r->raw);
    free(r);
}

size_t kvs_reply_memory(const kvs_reply *r)
{
    /* yajl's handle, lexer and buffers: a few KiB */
    return sizeof *r + 4096 + r->err_type.cap + r->err_message.cap + r->raw.cap;
}

int kvs_reply_begin(kvs_reply *r, int status, kvs_page *page, size_t max_items)
{
    if (r->h) yajl_free(r->h);
    r->h = yajl_alloc(&callbacks, NULL, r);
    if (!r->h) return -1;
    /* keys may be any byte string; the page's bytes are handed on as they are */
    yajl_config(r->h, yajl_dont_validate_strings, 1);
    r->page = page;
    kvs_page_reset(page);
    r->status = status;
    r->is_page = status >= 200 && status < 300;
    r->ctx = C_TOP;
    r->skip = 0;
    r->field = K_OTHER;
    r->item_have = 0;
    r->saw_data = r->saw_items = 0;
    r->failed = r->final = r->out_of_memory = 0;
    r->problem[0] = '\0';
    r->have_type = r->have_message = 0;
    r->raw.len = 0;
    r->max_items = max_items;
    r->body_max = r->is_page ? KVS_BODY_MAX(max_items) : ERR_PARSE_CAP;
    r->body_len = 0;
    r->esc = E_TEXT;
    r->lone_surrogate = 0;
    r->hex_n = r->high = 0;
    r->hex = 0;
    return 0;
}

static int hex_digit(unsigned char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Follows the \u escapes of a page body: 0, or -1 at a lone surrogate.  Valid
 * JSON has backslashes only inside strings, so looking for them is enough;
 * anything else malformed is yajl's to reject. */
static int scan_escapes(kvs_reply *r, const unsigned char *p, size_t n)
{
    const unsigned char *end = p + n;
    while (p < end) {
        switch (r->esc) {
        case E_TEXT:
            if (r->high) {                      /* only "\u<low>" may follow a high half */
                if (*p != '\\') return -1;
            } else if (!(p = memchr(p, '\\', (size_t)(end - p)))) {
                return 0;
            }
            r->esc = E_BACKSLASH;
            p++;
            break;
        case E_BACKSLASH:
            if (*p == 'u') {
                r->esc = E_HEX;
                r->hex_n = 0;
                r->hex = 0;
            } else {
                if (r->high) return -1;
                r->esc = E_TEXT;                /* \" \\ \/ \n ...: one byte */
            }
            p++;
            break;
        case E_HEX: {
            int d = hex_digit(*p);
            if (d < 0) { r->esc = E_TEXT; r->high = 0; break; }   /* yajl says no */
            r->hex = r->hex * 16 + (unsigned)d;
            p++;
            if (++r->hex_n < 4) break;
            r->esc = E_TEXT;
            if (r->hex >= 0xDC00 && r->hex <= 0xDFFF) {
                if (!r->high) return -1;
                r->high = 0;
            } else if (r->high) {
                return -1;
            } else if (r->hex >= 0xD800 && r->hex <= 0xDBFF) {
                r->high = 1;
            }
            break;
        }
        }
    }
    return 0;
}

/* 0: more body may still matter; -1: it cannot (an error body's snippet is
 * complete, or a page has failed). */
static int body_verdict(const kvs_reply *r)
{
    if (r->out_of_memory) return -1;
    if (!r->is_page)
        return r->raw.len >= ERR_BODY_CAP && (r->failed || r->body_len >= r->body_max) ? -1 : 0;
    return r->failed ? -1 : 0;
}

int kvs_reply_body(kvs_reply *r, const char *data, size_t len)
{
    size_t take;
    yajl_status st;
    if (len == 0)               /* an empty chunk, maybe (NULL, 0): nothing to decode */
        return body_verdict(r);
    if (!r->is_page && r->raw.len < ERR_BODY_CAP) {
        size_t n = ERR_BODY_CAP - r->raw.len;
        if (kvs_buf_append(&r->raw, data, len < n ? len : n) != 0)
            return oom(r), -1;
    }
    if (r->failed || !r->h)
        return body_verdict(r);
    /* Whatever the chunks, the decoder sees the same first body_max bytes. */
    take = r->body_max - r->body_len;
    if (take > len) take = len;
    r->body_len += take;
    /* A lone surrogate is reported at the end, and only if the body is JSON
     * all through: yajl lexes ahead, so which of two problems it meets first
     * would depend on the chunks. */
    if (r->is_page && !r->lone_surrogate
        && scan_escapes(r, (const unsigned char *)data, take) != 0)
        r->lone_surrogate = 1;
    st = yajl_parse(r->h, (const unsigned char *)data, take);
    if (st != yajl_status_ok) {
        if (!r->failed) fail(r, "the body is not valid JSON");
        return body_verdict(r);
    }
    if (take < len) {
        if (r->is_page) {
            char why[120];
            snprintf(why, sizeof why, "the body is larger than %zu bytes, the most a page "
                     "of %zu items may take", r->body_max, r->max_items);
            r->final = 1;
            fail(r, why);
        } else {
            r->failed = 1;      /* keep what was decoded of the error so far */
        }
        r->body_len = r->body_max;
    }
    return body_verdict(r);
}

static void copy_str(char *dst, size_t cap, const char *src, size_t n)
{
    size_t i, w = 0;
    for (i = 0; i < n && w + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c < 0x20 || c == 0x7f || c == ' ') {      /* one line, runs of blanks folded */
            if (w > 0 && dst[w - 1] != ' ') dst[w++] = ' ';
        } else {
            dst[w++] = (char)c;
        }
    }
    dst[w] = '\0';
}

/* The secret out of both fields: what a server echoes stays with it. */
static void redact_error(const kvs_reply *r, kvs_error *err)
{
    kvs_redact(err->type, sizeof err->type, r->secret, r->secret_len);
    kvs_redact(err->message, sizeof err->message, r->secret, r->secret_len);
}

static kvs_verdict end_error_body(kvs_reply *r, kvs_error *err)
{
    err->status = r->status;
    if (r->have_type)   /* a blank type is no type: the snippet says more */
        copy_str(err->type, sizeof err->type, r->err_type.data, r->err_type.len);
    if (r->have_type && err->type[0] && strcmp(err->type, " ") != 0) {
        if (r->have_message)
            copy_str(err->message, sizeof err->message, r->err_message.data, r->err_message.len);
        if (!r->have_message || !err->message[0] || strcmp(err->message, " ") == 0)
            snprintf(err->message, sizeof err->message, "HTTP %d", r->status);
        redact_error(r, err);
        return KVS_REPLY_ERROR;
    }
    snprintf(err->type, sizeof err->type, "%s", KVS_ERR_HTTP);
    if (r->raw.len) {
        char snippet[200];
        copy_str(snippet, sizeof snippet, r->raw.data, r->raw.len);
        snprintf(err->message, sizeof err->message, "HTTP %d: %s", r->status, snippet);
    } else {
        snprintf(err->message, sizeof err->message, "HTTP %d with an empty body", r->status);
    }
    redact_error(r, err);
    return KVS_REPLY_ERROR;
}

kvs_verdict kvs_reply_end(kvs_reply *r, kvs_error *err)
{
    if (!r->h) {
        snprintf(err->type, sizeof err->type, "%s", KVS_ERR_MEMORY);
        snprintf(err->message, sizeof err->message, "out of memory");
        return KVS_REPLY_NOMEM;
    }
    if (!r->failed && yajl_complete_parse(r->h) != yajl_status_ok)
        fail(r, r->ctx == C_TOP ? "the body is empty" : "the body is cut short or not valid JSON");
    if (!r->is_page) {
        if (r->out_of_memory) goto memory;
        return end_error_body(r, err);
    }
    if (!r->failed && r->lone_surrogate) {
        r->final = 1;
        fail(r, "a string holds a lone UTF-16 surrogate escape (such as \\ud800), "
                "which names no UTF-8 key");
    }
    if (!r->failed) {
        if (!r->saw_data) fail(r, "the body has no \"data\" object");
        else if (!r->saw_items) fail(r, "\"data\" has no \"items\" array");
        else if (r->page->is_truncated < 0) fail(r, "\"data\" has no boolean \"isTruncated\"");
    }
    if (!r->failed)
        return KVS_REPLY_PAGE;
    if (r->out_of_memory) goto memory;
    err->status = r->status;
    snprintf(err->type, sizeof err->type, "%s", KVS_ERR_RESPONSE);
    snprintf(err->message, sizeof err->message, "unexpected reply from the API: %s", r->problem);
    return r->final ? KVS_REPLY_FINAL : KVS_REPLY_ERROR;
memory:
    err->status = r->status;
    snprintf(err->type, sizeof err->type, "%s", KVS_ERR_MEMORY);
    snprintf(err->message, sizeof err->message, "out of memory while decoding a reply");
    return KVS_REPLY_NOMEM;
}
