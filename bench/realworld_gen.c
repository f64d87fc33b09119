/*
 * realworld_gen.c — writes a key-value store of N records in the Apify CLI local layout for
 * bench/realworld.sh, with the key shapes real actors write:
 *
 *     realworld-gen SHAPE N STOREDIR
 *
 *   uniform   item-0000001, item-0000002, ... (7 digits, more when N needs them)
 *   prefixes  long shared prefixes with skewed counts: 4 singletons (INPUT, OUTPUT,
 *             SDK_CRAWLER_STATISTICS_0, SDK_SESSION_POOL_STATE), then of the rest
 *             55 % run-2026-11-28T10-00-00.000Z-page-<8 digits>,
 *             20 % run-2026-11-29T08-30-00.000Z-page-<8 digits>,
 *              5 % run-2026-11-30T23-59-59.999Z-page-<8 digits>,
 *             12 % run-2026-11-28T10-00-00.000Z-screenshot-<16 hex>,
 *              8 % crawlee-snapshot-<17 base62>
 *   gap       a dense group of random ids then a long gap then sequential keys:
 *             40 % J<16 base62> (all between "J" and "K"), 60 % seq-<8 digits>
 *   random    random keys over the whole allowed alphabet a-z A-Z 0-9 ! - _ . ' ( ),
 *             12..40 characters
 *
 * Each record is STOREDIR/<key>.bin, a sparse file (ftruncate: no data blocks) whose size is a
 * deterministic log-uniform spread over 100..100000 bytes. STOREDIR.expected (beside the
 * store, not a record in it) gets "count sum" of the store. Keys are drawn from a fixed seed: the same SHAPE and N give the same
 * store. A key drawn twice (possible only for the random shapes) is drawn again.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t rng_state = 0x7ea1f0c1d5eedULL;

static uint64_t splitmix64(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double uniform01(void)
{
    return (double)(splitmix64() >> 11) / 9007199254740992.0;
}

static void die(const char *what, const char *path)
{
    fprintf(stderr, "realworld-gen: %s %s: %s\n", what, path ? path : "", strerror(errno));
    exit(1);
}

static const char BASE62[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
static const char ALPHABET[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.'()";
static const char HEX[] = "0123456789abcdef";

static void random_chars(char *out, int n, const char *set, size_t setlen)
{
    for (int i = 0; i < n; i++)
        out[i] = set[splitmix64() % setlen];
    out[n] = '\0';
}

/* Writes one record; returns its size, or -1 when the key exists already. */
static long long write_record(const char *dir, const char *key)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, key);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        if (errno == EEXIST)
            return -1;
        die("cannot create", path);
    }
    long long size = (long long)floor(100.0 * pow(1000.0, uniform01()));
    if (ftruncate(fd, (off_t)size) != 0)
        die("cannot size", path);
    close(fd);
    return size;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: realworld-gen uniform|prefixes|gap|random N STOREDIR\n");
        return 2;
    }
    const char *shape = argv[1], *dir = argv[3];
    long n = strtol(argv[2], NULL, 10);
    if (n < 0) {
        fprintf(stderr, "realworld-gen: N must be >= 0\n");
        return 2;
    }
    if (strcmp(shape, "uniform") && strcmp(shape, "prefixes") && strcmp(shape, "gap")
        && strcmp(shape, "random")) {
        fprintf(stderr, "realworld-gen: unknown shape %s\n", shape);
        return 2;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        die("cannot create", dir);

    int digits = 7;
    for (long m = 9999999; m < n; m = m * 10 + 9)
        digits++;
    static const char *singletons[] = {
        "INPUT", "OUTPUT", "SDK_CRAWLER_STATISTICS_0", "SDK_SESSION_POOL_STATE",
    };
    long long sum = 0;
    long count = 0, seq[3] = { 0, 0, 0 }, sequential = 0;
    char key[512], tail[64];
    while (count < n) {
        if (!strcmp(shape, "uniform")) {
            snprintf(key, sizeof key, "item-%0*ld", digits & 31, (count + 1) % 1000000000000000000L);
        } else if (!strcmp(shape, "prefixes")) {
            if (count < 4) {
                snprintf(key, sizeof key, "%s", singletons[count]);
            } else {
                double u = uniform01();
                if (u < 0.55) {
                    snprintf(key, sizeof key, "run-2026-11-28T10-00-00.000Z-page-%08ld", ++seq[0]);
                } else if (u < 0.75) {
                    snprintf(key, sizeof key, "run-2026-11-29T08-30-00.000Z-page-%08ld", ++seq[1]);
                } else if (u < 0.80) {
                    snprintf(key, sizeof key, "run-2026-11-30T23-59-59.999Z-page-%08ld", ++seq[2]);
                } else if (u < 0.92) {
                    random_chars(tail, 16, HEX, 16);
                    snprintf(key, sizeof key, "run-2026-11-28T10-00-00.000Z-screenshot-%s", tail);
                } else {
                    random_chars(tail, 17, BASE62, 62);
                    snprintf(key, sizeof key, "crawlee-snapshot-%s", tail);
                }
            }
        } else if (!strcmp(shape, "gap")) {
            if (uniform01() < 0.4) {
                random_chars(tail, 16, BASE62, 62);
                snprintf(key, sizeof key, "J%s", tail);
            } else {
                snprintf(key, sizeof key, "seq-%08ld", ++sequential);
            }
        } else {
            int len = 12 + (int)(splitmix64() % 29);
            random_chars(key, len, ALPHABET, sizeof ALPHABET - 1);
        }
        long long size = write_record(dir, key);
        if (size < 0)
            continue;   /* drawn twice: draw again */
        sum += size;
        count++;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.expected", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        die("cannot write", path);
    fprintf(f, "%ld %lld\n", count, sum);
    fclose(f);
    return 0;
}
