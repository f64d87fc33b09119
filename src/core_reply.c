/*
 * core_reply.c — decodes reply bodies as they arrive, with yajl's streaming
 * parser: a 2xx body into a kvs_page (items, cursors, flags), any other into
 * the API's {"error":{"type","message"}}.  Items go straight into the page's
 * flat arrays; nothing is built per key.  No I/O.
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
    int         out_of_memory;
    char        problem[160];   /* why a page body is not a page */
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
    if (d >= 0 && d < 9007199254740992.0 && d == (double)(long long)d)
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

void kvs_reply_free(kvs_reply *r)
{
    if (!r) return;
    if (r->h) yajl_free(r->h);
    kvs_buf_free(&r->err_type);
    kvs_buf_free(&r->err_message);
    kvs_buf_free(&r->raw);
    free(r);
}

int kvs_reply_begin(kvs_reply *r, int status, kvs_page *page)
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
    r->failed = r->out_of_memory = 0;
    r->problem[0] = '\0';
    r->have_type = r->have_message = 0;
    r->raw.len = 0;
    return 0;
}

int kvs_reply_body(kvs_reply *r, const char *data, size_t len)
{
    if (!r->is_page && r->raw.len < ERR_BODY_CAP) {
        size_t n = ERR_BODY_CAP - r->raw.len;
        if (kvs_buf_append(&r->raw, data, len < n ? len : n) != 0)
            return oom(r), -1;
    }
    if (r->failed || !r->h)
        return -1;
    if (yajl_parse(r->h, (const unsigned char *)data, len) != yajl_status_ok) {
        if (!r->failed) fail(r, "the body is not valid JSON");
        return -1;
    }
    return 0;
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

static int end_error_body(kvs_reply *r, kvs_error *err)
{
    err->status = r->status;
    if (r->have_type) {
        copy_str(err->type, sizeof err->type, r->err_type.data, r->err_type.len);
        if (r->have_message)
            copy_str(err->message, sizeof err->message, r->err_message.data, r->err_message.len);
        else
            snprintf(err->message, sizeof err->message, "HTTP %d", r->status);
        return -1;
    }
    snprintf(err->type, sizeof err->type, "%s", KVS_ERR_HTTP);
    if (r->raw.len) {
        char snippet[200];
        copy_str(snippet, sizeof snippet, r->raw.data, r->raw.len);
        snprintf(err->message, sizeof err->message, "HTTP %d: %s", r->status, snippet);
    } else {
        snprintf(err->message, sizeof err->message, "HTTP %d with an empty body", r->status);
    }
    return -1;
}

int kvs_reply_end(kvs_reply *r, kvs_error *err)
{
    if (!r->h) {
        snprintf(err->type, sizeof err->type, "%s", KVS_ERR_MEMORY);
        snprintf(err->message, sizeof err->message, "out of memory");
        return -1;
    }
    if (!r->failed && yajl_complete_parse(r->h) != yajl_status_ok)
        fail(r, r->ctx == C_TOP ? "the body is empty" : "the body is cut short or not valid JSON");
    if (!r->is_page) {
        if (r->out_of_memory) goto memory;
        return end_error_body(r, err);
    }
    if (!r->failed) {
        if (!r->saw_data) fail(r, "the body has no \"data\" object");
        else if (!r->saw_items) fail(r, "\"data\" has no \"items\" array");
        else if (r->page->is_truncated < 0) fail(r, "\"data\" has no boolean \"isTruncated\"");
    }
    if (!r->failed)
        return 0;
    if (r->out_of_memory) goto memory;
    err->status = r->status;
    snprintf(err->type, sizeof err->type, "%s", KVS_ERR_RESPONSE);
    snprintf(err->message, sizeof err->message, "unexpected reply from the API: %s", r->problem);
    return -1;
memory:
    err->status = r->status;
    snprintf(err->type, sizeof err->type, "%s", KVS_ERR_MEMORY);
    snprintf(err->message, sizeof err->message, "out of memory while decoding a reply");
    return -1;
}
