/*
 * gen.c — writes a synthetic key-value store as the static pages that
 * GET /v2/key-value-stores/bench/keys would return, 1000 keys a page.
 *
 *     gen N OUTDIR
 *
 * OUTDIR/pages/first.json        the reply without exclusiveStartKey
 * OUTDIR/pages/<cursor>.json     the reply for ?exclusiveStartKey=<cursor>
 * OUTDIR/pages/<name>.json.gz    the same bytes gzipped (nginx gzip_static)
 * OUTDIR/pages.txt               page file names in listing order
 * OUTDIR/expected.txt            "count sum" of the whole store
 *
 * Keys are item-0000001, item-0000002, ... (at least 7 digits, more when N
 * needs them, so byte order is numeric order); sizes are a deterministic
 * pseudo-random log-uniform spread over 100..100000 bytes.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define PAGE 1000
#define PUBLIC_BASE "https://api.apify.com/v2/key-value-stores/bench/records/"

static uint64_t rng_state = 0x5eed0f4b3ac4e5ULL;

static uint64_t splitmix64(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void die(const char *what, const char *path)
{
    fprintf(stderr, "gen: %s %s: %s\n", what, path ? path : "", strerror(errno));
    exit(1);
}

typedef struct {
    char  *p;
    size_t len, cap;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        while (b->len + n > b->cap)
            b->cap = b->cap ? b->cap * 2 : 1 << 17;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            die("out of memory", NULL);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static void write_file(const char *path, const buf *b)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->len, f) != b->len || fclose(f) != 0)
        die("cannot write", path);
}

static void write_gz(const char *path, const buf *b)
{
    gzFile g = gzopen(path, "wb6");
    if (!g || gzwrite(g, b->p, (unsigned)b->len) != (int)b->len || gzclose(g) != Z_OK)
        die("cannot write", path);
}

int main(int argc, char **argv)
{
    long long n, i, sum = 0;
    int width = 7;
    char dir[4096], path[4200], key[64], prev[64], tmp[256];
    FILE *list;
    buf b = {0};

    if (argc != 3) {
        fprintf(stderr, "usage: gen N OUTDIR\n");
        return 2;
    }
    n = atoll(argv[1]);
    if (n < 0) {
        fprintf(stderr, "gen: N must be >= 0\n");
        return 2;
    }
    while (n >= (long long)pow(10, width))
        width++;
    snprintf(dir, sizeof dir, "%s/pages", argv[2]);
    if (mkdir(argv[2], 0755) != 0 && errno != EEXIST)
        die("cannot create", argv[2]);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        die("cannot create", dir);
    snprintf(path, sizeof path, "%s/pages.txt", argv[2]);
    if (!(list = fopen(path, "w")))
        die("cannot write", path);

    prev[0] = '\0';                       /* first page: no exclusiveStartKey */
    i = 0;
    do {
        long long first = i, last = i + PAGE < n ? i + PAGE : n;
        int truncated = last < n;
        const char *name = prev[0] ? prev : "first";

        b.len = 0;
        puts_(&b, "{\"data\":{\"items\":[");
        for (; i < last; i++) {
            double u = (double)(splitmix64() >> 11) / 9007199254740992.0;
            long long size = (long long)(100.0 * pow(1000.0, u));
            int kl = snprintf(key, sizeof key, "item-%0*lld", width, i + 1);
            sum += size;
            if (i > first)
                put(&b, ",", 1);
            puts_(&b, "{\"key\":\"");
            put(&b, key, kl);
            snprintf(tmp, sizeof tmp, "\",\"size\":%lld,\"recordPublicUrl\":\"", size);
            puts_(&b, tmp);
            puts_(&b, PUBLIC_BASE);
            put(&b, key, kl);
            puts_(&b, "\"}");
        }
        snprintf(tmp, sizeof tmp, "],\"count\":%lld,\"limit\":%d,\"exclusiveStartKey\":",
                 last - first, PAGE);
        puts_(&b, tmp);
        if (prev[0]) {
            put(&b, "\"", 1);
            puts_(&b, prev);
            put(&b, "\"", 1);
        } else {
            puts_(&b, "null");
        }
        if (truncated) {
            snprintf(tmp, sizeof tmp, ",\"isTruncated\":true,\"nextExclusiveStartKey\":\"%s\"}}", key);
        } else {
            snprintf(tmp, sizeof tmp, ",\"isTruncated\":false,\"nextExclusiveStartKey\":null}}");
        }
        puts_(&b, tmp);

        snprintf(path, sizeof path, "%s/%s.json", dir, name);
        write_file(path, &b);
        snprintf(path, sizeof path, "%s/%s.json.gz", dir, name);
        write_gz(path, &b);
        fprintf(list, "%s.json\n", name);
        if (truncated)
            memcpy(prev, key, sizeof key);
        else
            break;
    } while (1);

    if (fclose(list) != 0)
        die("cannot write", "pages.txt");
    snprintf(path, sizeof path, "%s/expected.txt", argv[2]);
    if (!(list = fopen(path, "w")))
        die("cannot write", path);
    fprintf(list, "%lld %lld\n", n, sum);
    if (fclose(list) != 0)
        die("cannot write", path);
    free(b.p);
    return 0;
}
