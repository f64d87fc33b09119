/*
 * core_request.c — byte buffers, percent-encoding and store id checks: the
 * pieces the listing uses to build request URLs.  No I/O.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"

int kvs_buf_reserve(kvs_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;
    if (extra > (size_t)-1 - b->len - 1)
        return -1;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
    p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int kvs_buf_append(kvs_buf *b, const void *p, size_t n)
{
    if (kvs_buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int kvs_buf_set(kvs_buf *b, const void *p, size_t n)
{
    b->len = 0;
    return kvs_buf_append(b, p, n);
}

void kvs_buf_free(kvs_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~" */
static int is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
}

int kvs_url_escape(kvs_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;
    char *w;
    if (kvs_buf_reserve(out, n * 3) != 0)
        return -1;
    w = out->data + out->len;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c)) {
            *w++ = (char)c;
        } else {
            *w++ = '%';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
    }
    out->len = (size_t)(w - out->data);
    out->data[out->len] = '\0';
    return 0;
}

const char *kvs_store_id_problem(const char *id, size_t n)
{
    if (n == 0)
        return "store id must not be empty";
    if ((n == 1 && id[0] == '.') || (n == 2 && id[0] == '.' && id[1] == '.'))
        return "store id must not be '.' or '..'";
    if (memchr(id, '\0', n))
        return "store id must not contain NUL bytes";
    return NULL;
}
