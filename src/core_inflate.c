/*
 * core_inflate.c — gzip reply bodies, decoded with zlib for drivers whose
 * transport hands over the body as it came (the OpenResty subrequest, a
 * driver of one's own through listing:reply/body).  libcurl drivers let
 * libcurl decode instead.
 *
 * Sans-I/O like the rest of the core: compressed bytes go in, decoded bytes
 * go out to a sink (the reply decoder) in pieces of at most 16 KiB.  What
 * counts against a page's limits is the decoded bytes: the sink stops the
 * inflater as soon as a page is too big (KVS_BODY_MAX), and the inflater
 * stops by itself past `max_out` decoded bytes whatever the sink says, so a
 * small body that inflates to gigabytes costs at most max_out + 16 KiB of work.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core.h"

#define OUT_CHUNK 16384

struct kvs_inflate {
    z_stream zs;
    int      ready;            /* inflateInit2 done */
    int      state;            /* KVS_INFLATE_* of the stream so far */
    size_t   out_total, max_out;
    char     msg[160];
    unsigned char out[OUT_CHUNK];
};

kvs_inflate *kvs_inflate_new(void)
{
    return calloc(1, sizeof(kvs_inflate));
}

void kvs_inflate_free(kvs_inflate *z)
{
    if (!z) return;
    if (z->ready) inflateEnd(&z->zs);
    free(z);
}

size_t kvs_inflate_memory(const kvs_inflate *z)
{
    /* zlib's inflate state (7 KiB) and its 32 KiB window */
    return sizeof *z + (z->ready ? 40960 : 0);
}

int kvs_inflate_begin(kvs_inflate *z, size_t max_out)
{
    z->out_total = 0;
    z->max_out = max_out;
    z->msg[0] = '\0';
    z->state = KVS_INFLATE_MORE;
    if (z->ready) {
        if (inflateReset(&z->zs) == Z_OK) return 0;
        inflateEnd(&z->zs);
        z->ready = 0;
    }
    memset(&z->zs, 0, sizeof z->zs);
    if (inflateInit2(&z->zs, 16 + MAX_WBITS) != Z_OK) {   /* 16: gzip wrapper only */
        z->state = KVS_INFLATE_NOMEM;
        return -1;
    }
    z->ready = 1;
    return 0;
}

static int set_state(kvs_inflate *z, int state, const char *what)
{
    z->state = state;
    if (what) {
        size_t n = strlen(what);
        if (n >= sizeof z->msg) n = sizeof z->msg - 1;
        memcpy(z->msg, what, n);
        z->msg[n] = '\0';
    }
    return state;
}

int kvs_inflate_feed(kvs_inflate *z, const char *in, size_t n,
                     int (*sink)(void *ud, const char *data, size_t len), void *ud)
{
    if (z->state == KVS_INFLATE_DONE && n > 0)   /* bytes after the member, in a later feed */
        return set_state(z, KVS_INFLATE_CORRUPT, "bytes after the end of the gzip body");
    if (z->state != KVS_INFLATE_MORE) return z->state;
    /* input is never kept across calls (nor across bodies: a stopped one leaves some) */
    z->zs.next_in = (unsigned char *)(uintptr_t)in;
    z->zs.avail_in = 0;
    while (n > 0 || z->zs.avail_in > 0) {
        int rc;
        size_t got;
        if (n > 0 && z->zs.avail_in == 0) {          /* zlib takes at most UINT_MAX at once */
            uInt step = n > 0x40000000u ? 0x40000000u : (uInt)n;
            z->zs.avail_in = step;
            n -= step;
        }
        if (z->out_total > z->max_out)
            return set_state(z, KVS_INFLATE_TOO_BIG, "the gzip body inflates past the most a "
                             "reply may take");
        z->zs.next_out = z->out;
        z->zs.avail_out = OUT_CHUNK;
        rc = inflate(&z->zs, Z_NO_FLUSH);
        got = OUT_CHUNK - z->zs.avail_out;
        z->out_total += got;
        if (got && sink(ud, (const char *)z->out, got) != 0)
            return set_state(z, KVS_INFLATE_STOPPED, NULL);
        if (rc == Z_STREAM_END) {
            /* bytes after the gzip member (another member, or junk): not a body we read */
            if (z->zs.avail_in > 0 || n > 0)
                return set_state(z, KVS_INFLATE_CORRUPT, "bytes after the end of the gzip body");
            return set_state(z, KVS_INFLATE_DONE, NULL);
        }
        if (rc == Z_MEM_ERROR) return set_state(z, KVS_INFLATE_NOMEM, "out of memory");
        if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_STREAM_ERROR)
            return set_state(z, KVS_INFLATE_CORRUPT, z->zs.msg ? z->zs.msg : "corrupt gzip data");
        if (rc == Z_BUF_ERROR && got == 0)
            break;                                     /* needs more input */
    }
    return KVS_INFLATE_MORE;
}

int kvs_inflate_end(kvs_inflate *z)
{
    if (z->state == KVS_INFLATE_MORE)
        return set_state(z, KVS_INFLATE_CORRUPT, "the gzip body is cut short");
    return z->state;
}

const char *kvs_inflate_message(const kvs_inflate *z)
{
    return z->msg;
}
