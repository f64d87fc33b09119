/*
 * core_redact.c — keeps a secret (the token) out of text a server sent: every
 * copy, and a copy cut off at the end, becomes "[redacted]" before the text
 * can reach an error, a log or a callback.  No I/O.
 */
#include <string.h>

#include "core.h"

static char *find_bytes(char *s, size_t len, const char *w, size_t n)
{
    char *p = s, *end = s + len;
    while ((size_t)(end - p) >= n && (p = memchr(p, w[0], (size_t)(end - p) - n + 1)) != NULL) {
        if (memcmp(p, w, n) == 0) return p;
        p++;
    }
    return NULL;
}

void kvs_redact(char *s, size_t cap, const char *secret, size_t n)
{
    static const char mark[] = KVS_REDACTED;
    size_t len, i, tail;
    char *hit;
    if (!secret || n < 4 || cap == 0) return;
    len = strlen(s);
    i = 0;
    while (i + n <= len && (hit = find_bytes(s + i, len - i, secret, n)) != NULL) {
        size_t at = (size_t)(hit - s), keep = len - at - n;   /* bytes after the hit */
        size_t room = cap - 1 - at;                           /* room from the hit on */
        size_t mlen = sizeof mark - 1 < room ? sizeof mark - 1 : room;
        if (keep > room - mlen) keep = room - mlen;
        memmove(s + at + mlen, hit + n, keep);
        memcpy(s + at, mark, mlen);
        len = at + mlen + keep;
        s[len] = '\0';
        i = at + mlen;
    }
    /* a copy cut short at the end: the longest tail that starts the secret */
    for (tail = n - 1 < len ? n - 1 : len; tail >= 4; tail--) {
        if (memcmp(s + len - tail, secret, tail) == 0) {
            size_t at = len - tail;
            size_t mlen = sizeof mark - 1 < cap - 1 - at ? sizeof mark - 1 : cap - 1 - at;
            memcpy(s + at, mark, mlen);
            s[at + mlen] = '\0';
            break;
        }
    }
}
