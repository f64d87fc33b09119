/*
 * core_buf.c — the growable byte buffer (kvs_buf) every part of the core
 * keeps keys, cursors, URLs and page bytes in.  Kept NUL-terminated, so that
 * its bytes can be handed out as a C string too.
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
