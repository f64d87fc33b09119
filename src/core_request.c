/*
 * core_request.c — percent-encoding and store id checks: the pieces the
 * listing uses to build request URLs.  No I/O.
 */
#include <string.h>

#include "core.h"

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
