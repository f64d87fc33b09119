/*
 * fuzz_keyspace — the key-space arithmetic (core_keyspace.c) on input keys:
 * kvs_ks_learn, kvs_ks_from_key, kvs_ks_cmp, kvs_ks_span, kvs_ks_advance,
 * kvs_ks_key, kvs_ks_top, kvs_ks_sample_page and kvs_ks_density.
 *
 * The input: up to 8 keys to learn, then keys a, b, c and a span choice;
 * key bytes are mostly of the key alphabet, some any byte, some keys long.
 * Checked, besides ASan/UBSan:
 *  - order: a <= b (byte order) gives num(a) <= num(b) when, at the first
 *    position where they differ, both bytes are characters of that
 *    position's set (the classes learnt there; all of them where nothing
 *    was learnt), or a ends there.  Outside that it may not: set
 *    KVS_FUZZ_KS_PROBE=1 (any keys) or =alphabet (keys of the alphabet only)
 *    to abort on any a <= b read out of order, and see counterexamples;
 *  - every digit is below its position's base;
 *  - span(a, b) is 0 when b <= a, else in (0, 1]; spans add up
 *    (a <= b <= c: span(a,c) = span(a,b) + span(b,c), within rounding);
 *  - advance(a, s): a itself for s <= 0 or NaN, the top for s >= 1, else
 *    between a and the top, monotone in s, and span(a, advance(a, s)) is s
 *    less at most the digits it drops, unless it saturated;
 *  - kvs_ks_key: at most KVS_KS_KEY_MAX bytes, all of the alphabet; reads
 *    back at or above n (n of at most 256 digits); reads back as n for a
 *    key of the sets; with `from` < n: reads back above `from` and is at
 *    most 4 digits longer than where n and `from` part;
 *  - kvs_ks_top(p) is at or above every key starting with p;
 *  - density is finite and >= 0.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core_plan_internal.h"
#include "fuzz_util.h"

/* the key alphabet, by class, as core_plan_internal.h describes it */
static const char *const CLASSES[7] = {
    "!'()-.", "0123456789", "ABCDEF", "GHIJKLMNOPQRSTUVWXYZ", "_", "abcdef", "ghijklmnopqrstuvwxyz"
};
static const char ALPHABET[] = "!'()-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

static int in_alphabet(unsigned char c)
{
    return c && strchr(ALPHABET, c) != NULL;
}

/* The classes position i may hold (bit per class), 1 << 7 when keys end there. */
static int pos_mask(const kvs_ks_model *m, size_t i)
{
    return (m->cls[i] & 127) ? m->cls[i] : 255;
}

static int in_set(const kvs_ks_model *m, size_t i, unsigned char c)
{
    int k, mask = pos_mask(m, i);
    for (k = 0; k < 7; k++)
        if ((mask & (1 << k)) && c && strchr(CLASSES[k], c)) return 1;
    return 0;
}

static int base_of(const kvs_ks_model *m, size_t i)
{
    int k, mask = pos_mask(m, i), n = (mask & 128) ? 1 : 0;
    for (k = 0; k < 7; k++)
        if (mask & (1 << k)) n += (int)strlen(CLASSES[k]);
    return n;
}

static int bases[KVS_KS_DIGITS];     /* of the model at hand */

typedef struct key {
    char   b[320];
    size_t n;
} key;

static void gen(fz *in, key *k)
{
    uint8_t l = fz_u8(in);
    size_t i;
    k->n = l < 0xF0 ? l % 12 : l < 0xFC ? 240 + (size_t)fz_u8(in) % 40 : (size_t)fz_u8(in) % 300;
    for (i = 0; i < k->n; i++) {
        uint8_t c = fz_u8(in);
        k->b[i] = c < 0xE0 ? ALPHABET[c % (sizeof ALPHABET - 1)] : (char)fz_u8(in);
    }
    if (l & 1 && k->n > 0 && fz_u8(in) < 0x20) k->b[k->n - 1] = (char)(k->b[k->n - 1] + 1);
}


static void check_digits(const kvs_ks_model *m, const kvs_ks_num *n, const char *what)
{
    size_t i;
    (void)m;
    for (i = 0; i < KVS_KS_DIGITS; i++)
        CHECK(n->d[i] < bases[i], "%s: digit %zu is %d, base %d", what, i, n->d[i], bases[i]);
}

static void check_order(const kvs_ks_model *m, const key *x, const key *y)
{
    kvs_ks_num nx, ny;
    size_t i, lim = x->n < y->n ? x->n : y->n;
    int keeps;
    const key *t;
    const char *probe;
    if (kvs_key_cmp(x->b, x->n, y->b, y->n) > 0) t = x, x = y, y = t;
    for (i = 0; i < lim && x->b[i] == y->b[i]; i++)
        ;
    /* where the reading keeps order (see the header) */
    keeps = i >= KVS_KS_DIGITS || i == x->n
         || (in_set(m, i, (unsigned char)x->b[i]) && in_set(m, i, (unsigned char)y->b[i]));
    kvs_ks_from_key(m, &nx, x->b, x->n);
    kvs_ks_from_key(m, &ny, y->b, y->n);
    check_digits(m, &nx, "from_key");
    if (!keeps && (probe = getenv("KVS_FUZZ_KS_PROBE")) != NULL) {
        /* "alphabet": only keys all of the alphabet; else any keys */
        keeps = 1;
        for (i = 0; strcmp(probe, "alphabet") == 0 && i < x->n; i++) keeps &= in_alphabet((unsigned char)x->b[i]);
        for (i = 0; strcmp(probe, "alphabet") == 0 && i < y->n; i++) keeps &= in_alphabet((unsigned char)y->b[i]);
        for (i = 0; i < lim && x->b[i] == y->b[i]; i++)
            ;
    }
    if (keeps)
        CHECK(kvs_ks_cmp(&nx, &ny) <= 0, "\"%.*s\" <= \"%.*s\" but reads greater (first difference "
              "at %zu: 0x%02x vs 0x%02x, base there %d)", (int)x->n, x->b, (int)y->n, y->b, i,
              i < x->n ? (unsigned char)x->b[i] : 0, i < y->n ? (unsigned char)y->b[i] : 0,
              base_of(m, i < KVS_KS_DIGITS ? i : 0));
    /* strictly so where the bytes differ inside the sets */
    if (i < KVS_KS_DIGITS && i < x->n && in_set(m, i, (unsigned char)x->b[i])
        && in_set(m, i, (unsigned char)y->b[i]))
        CHECK(kvs_ks_cmp(&nx, &ny) < 0, "\"%.*s\" < \"%.*s\" read as equal", (int)x->n, x->b,
              (int)y->n, y->b);
}

/* The weight of digit i: 1 / (base_0 * ... * base_i), for the model at hand. */
static long double weights[KVS_KS_DIGITS];

static void set_weights(const kvs_ks_model *m)
{
    long double w = 1;
    int j;
    for (j = 0; j < KVS_KS_DIGITS; j++) weights[j] = w /= (bases[j] = base_of(m, (size_t)j));
}

static long double weight(int i)
{
    return weights[i < KVS_KS_DIGITS ? i : KVS_KS_DIGITS - 1];
}

static void check_advance(const kvs_ks_model *m, const kvs_ks_num *a, long double s,
                          const kvs_ks_num *top, kvs_ks_num *out)
{
    kvs_ks_advance(m, out, a, s);
    check_digits(m, out, "advance");
    if (!(s > 0)) {
        CHECK(kvs_ks_cmp(out, a) == 0, "advance by %Lg moved", s);
        return;
    }
    if (s >= 1) {
        CHECK(kvs_ks_cmp(out, top) == 0, "advance by %Lg is not the top", s);
        return;
    }
    CHECK(kvs_ks_cmp(out, a) >= 0, "advance by %Lg went back", s);
    CHECK(kvs_ks_cmp(out, top) <= 0, "advance by %Lg went past the top", s);
    if (kvs_ks_cmp(out, top) != 0) {
        long double got = kvs_ks_span(m, a, out), drop;
        int f = 0;
        while (f < KVS_KS_DIGITS - 1 && weight(f) > s) f++;
        drop = weight(f + 12);       /* the digits past the 12 kept after the first */
        CHECK(got <= s * (1 + 1e-12L) && got >= s - drop - s * 1e-12L,
              "advance by %.20Lg moved by %.20Lg (may drop %Lg)", s, got, drop);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz in = { data, size };
    kvs_ks_model m;
    key learnt[8], k[3];
    kvs_ks_num n[3], top, o1, o2, back;
    int nl = fz_u8(&in) % 9, i, j;
    uint8_t smode;
    uint64_t sbits;
    long double s, s2;
    char out[KVS_KS_KEY_MAX + 1];
    size_t len, q;

    memset(&m, 0, sizeof m);
    for (i = 0; i < nl; i++) {
        gen(&in, &learnt[i]);
        kvs_ks_learn(&m, learnt[i].b, learnt[i].n);
        CHECK(kvs_ks_learn(&m, learnt[i].b, learnt[i].n) == 0, "learning a key twice changed the model");
    }
    set_weights(&m);
    for (i = 0; i < 3; i++) gen(&in, &k[i]);
    smode = fz_u8(&in);
    sbits = fz_u64(&in);

    /* order, for every pair of the keys at hand */
    for (i = 0; i < 3; i++)
        for (j = i + 1; j < 3; j++) check_order(&m, &k[i], &k[j]);
    for (i = 0; i < nl; i++) {
        check_order(&m, &learnt[i], &k[0]);
        if (i) check_order(&m, &learnt[i - 1], &learnt[i]);
    }

    for (i = 0; i < 3; i++) kvs_ks_from_key(&m, &n[i], k[i].b, k[i].n);
    kvs_ks_top(&m, &top, NULL, 0);
    check_digits(&m, &top, "top");

    /* spans */
    for (i = 0; i < 3; i++)
        for (j = 0; j < 3; j++) {
            long double sp = kvs_ks_span(&m, &n[i], &n[j]);
            if (kvs_ks_cmp(&n[j], &n[i]) <= 0)
                CHECK(sp == 0, "span back or nowhere is %Lg", sp);
            else
                CHECK(sp > 0 && sp <= 1, "span forward is %Lg", sp);
        }
    {
        int ix[3] = { 0, 1, 2 }, t;
        for (i = 0; i < 3; i++)             /* sort the three by their numbers */
            for (j = 0; j < 2; j++)
                if (kvs_ks_cmp(&n[ix[j]], &n[ix[j + 1]]) > 0) t = ix[j], ix[j] = ix[j + 1], ix[j + 1] = t;
        s = kvs_ks_span(&m, &n[ix[0]], &n[ix[2]]);
        s2 = kvs_ks_span(&m, &n[ix[0]], &n[ix[1]]) + kvs_ks_span(&m, &n[ix[1]], &n[ix[2]]);
        CHECK(fabsl(s - s2) <= s * 1e-12L + 1e-4000L, "spans do not add up: %.20Lg vs %.20Lg", s, s2);
    }

    /* advance */
    switch (smode % 5) {
    case 0: s = kvs_ks_span(&m, &n[0], &n[1]); break;
    case 1: s = (long double)sbits / 18446744073709551616.0L; break;
    case 2: { double d; memcpy(&d, &sbits, sizeof d); s = d; break; }     /* any double */
    case 3: s = ldexpl((long double)(sbits >> 11), -(int)(53 + smode % 64 * 16)); break;
    default: s = (long double)(sbits % 1000) / 999.0L; break;
    }
    check_advance(&m, &n[0], s, &top, &o1);
    s2 = s * (1 + (long double)(smode >> 4) / 8);
    if (s > 0 && s < 1) {
        check_advance(&m, &n[0], s2, &top, &o2);
        CHECK(kvs_ks_cmp(&o1, &o2) <= 0, "advance is not monotone: %Lg, %Lg", s, s2);
    }

    /* keys from numbers */
    {
        const kvs_ks_num *nums[5] = { &n[0], &n[1], &n[2], &o1, &top };
        for (i = 0; i < 5; i++) {
            int used = KVS_KS_DIGITS;
            while (used > 0 && nums[i]->d[used - 1] == 0) used--;
            len = kvs_ks_key(&m, nums[i], NULL, out);
            CHECK(len <= KVS_KS_KEY_MAX, "a key of %zu bytes", len);
            for (q = 0; q < len; q++)
                CHECK(in_alphabet((unsigned char)out[q]), "key byte 0x%02x", (unsigned char)out[q]);
            kvs_ks_from_key(&m, &back, out, len);
            if (used <= KVS_KS_KEY_MAX)
                CHECK(kvs_ks_cmp(&back, nums[i]) >= 0, "key \"%.*s\" reads below its number",
                      (int)len, out);
        }
        /* a key of the sets (and short enough) reads back as itself */
        for (i = 0; i < 3; i++) {
            int ok = k[i].n <= KVS_KS_KEY_MAX;
            for (q = 0; ok && q < k[i].n; q++) ok = in_set(&m, q, (unsigned char)k[i].b[q]);
            if (!ok) continue;
            len = kvs_ks_key(&m, &n[i], NULL, out);
            kvs_ks_from_key(&m, &back, out, len);
            CHECK(kvs_ks_cmp(&back, &n[i]) == 0, "\"%.*s\" comes back as \"%.*s\", another number",
                  (int)k[i].n, k[i].b, (int)len, out);
        }
        /* round boundaries between two numbers */
        for (i = 0; i < 5; i++)
            for (j = 0; j < 5; j++) {
                size_t at = 0;
                if (kvs_ks_cmp(nums[i], nums[j]) >= 0) continue;
                while (at < KVS_KS_DIGITS && nums[i]->d[at] == nums[j]->d[at]) at++;
                len = kvs_ks_key(&m, nums[j], nums[i], out);
                CHECK(len <= KVS_KS_KEY_MAX && len <= at + 4, "a boundary of %zu bytes, parting at %zu",
                      len, at);
                for (q = 0; q < len; q++)
                    CHECK(in_alphabet((unsigned char)out[q]), "boundary byte 0x%02x", (unsigned char)out[q]);
                kvs_ks_from_key(&m, &back, out, len);
                if (at < KVS_KS_KEY_MAX)
                    CHECK(kvs_ks_cmp(&back, nums[i]) > 0, "boundary \"%.*s\" is not above `from`",
                          (int)len, out);
            }
    }

    /* the top of a prefix is above every key with that prefix */
    for (i = 0; i < 3; i++) {
        size_t plen = k[i].n ? (size_t)(sbits >> (8 * i)) % (k[i].n + 1) : 0;
        kvs_ks_top(&m, &o2, k[i].b, plen);
        check_digits(&m, &o2, "top of a prefix");
        CHECK(kvs_ks_cmp(&n[i], &o2) <= 0, "\"%.*s\" reads above the top of its prefix \"%.*s\"",
              (int)k[i].n, k[i].b, (int)plen, k[i].b);
    }

    /* density from a page of the learnt keys */
    {
        kvs_page p;
        kvs_ks_sample smp, cp;
        long double d1, d2;
        memset(&smp, 0, sizeof smp);
        memset(&cp, 0, sizeof cp);
        kvs_page_init(&p);
        p.items = calloc(8, sizeof *p.items);
        if (!p.items) abort();
        p.cap = 8;
        for (i = 0; i < nl; i++) {
            p.items[i].key_off = p.bytes.len;
            p.items[i].key_len = learnt[i].n;
            p.items[i].url_off = KVS_NO_URL;
            if (kvs_buf_append(&p.bytes, learnt[i].b, learnt[i].n) != 0) abort();
        }
        p.count = (size_t)nl;
        if (kvs_ks_sample_page(&smp, &m, &p) != 0) abort();
        if (kvs_ks_sample_copy(&cp, &smp) != 0) abort();
        d1 = kvs_ks_density(&m, &smp);
        d2 = kvs_ks_density(&m, &cp);
        CHECK(isfinite(d1) && d1 >= 0 && d1 == d2, "density %Lg (copy %Lg)", d1, d2);
        kvs_ks_sample_free(&smp);
        kvs_ks_sample_free(&cp);
        kvs_page_free(&p);
    }
    return 0;
}
