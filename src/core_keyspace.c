/*
 * core_keyspace.c — keys read as numbers, to split a listing into key ranges.
 *
 * A key is a mixed-radix fraction: byte i is digit i, 0 for "the key ended
 * here" and 1..n for the characters position i may hold (learnt by class
 * from the keys seen: see core_plan_internal.h).  Spans between keys estimate how many keys
 * lie between them, given a density seen on a page, and a key plus a span
 * gives a boundary to split at.  Everything here only guides where to split;
 * the driver checks each boundary against the real keys byte-wise.  No I/O.
 */
#include <ctype.h>
#include <string.h>

#include "core_plan_internal.h"

#define SIG_DIGITS  3     /* digits a boundary keeps past the first one that differs */
#define SPAN_DIGITS 12    /* past the first nonzero digit of a span: rounding noise */

/* The allowed key characters by class; the classes follow each other in byte
 * order, and so do the characters inside each. */
static const char *const CLASS_CHARS[] = {
    "!'()-.", "0123456789", "ABCDEF", "GHIJKLMNOPQRSTUVWXYZ", "_", "abcdef",
    "ghijklmnopqrstuvwxyz"      /* A-F and a-f apart: hex digits read in base 16 */
};
#define NCLASSES 7
#define ALL_CLASSES ((1 << NCLASSES) - 1)
#define ENDS (1 << NCLASSES)      /* some key ended at the position */

static int class_of(unsigned char b)
{
    int c;
    for (c = 0; c < NCLASSES; c++)
        if (b && strchr(CLASS_CHARS[c], b)) return 1 << c;
    return 0;
}

/* The classes a position may hold, and ENDS when a key may end there; a
 * position no key reached yet may hold anything. */
static int mask_at(const kvs_ks_model *m, size_t i)
{
    return (m->cls[i] & ALL_CLASSES) ? m->cls[i] : ALL_CLASSES | ENDS;
}

/* Digits of position i run 0..base-1: "ended" (if keys end there), then the characters. */
static int base_at(const kvs_ks_model *m, size_t i)
{
    int mask = mask_at(m, i), c, n = (mask & ENDS) ? 1 : 0;
    for (c = 0; c < NCLASSES; c++)
        if (mask & (1 << c)) n += (int)strlen(CLASS_CHARS[c]);
    return n;
}

/* The digit of byte b: how many of the position's characters sort at or
 * before it, less one where no key ends (there "ended" shares digit 0 with
 * the lowest character: equal numbers, order kept). */
static int rank(int mask, unsigned char b)
{
    int c, n = 0;
    for (c = 0; c < NCLASSES; c++) {
        const char *s = CLASS_CHARS[c];
        if (!(mask & (1 << c))) continue;
        while (*s && (unsigned char)*s <= b) s++, n++;
    }
    return (mask & ENDS) || n == 0 ? n : n - 1;
}

/* The character of digit d at a position (d >= 1 where keys end there). */
static char char_of(int mask, int d)
{
    int c;
    if (!(mask & ENDS)) d++;
    for (c = 0; c < NCLASSES; c++) {
        int len;
        if (!(mask & (1 << c))) continue;
        len = (int)strlen(CLASS_CHARS[c]);
        if (d <= len) return CLASS_CHARS[c][d - 1];
        d -= len;
    }
    return 'z';
}

int kvs_key_cmp(const char *a, size_t na, const char *b, size_t nb)
{
    size_t n = na < nb ? na : nb;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (na < nb ? -1 : na > nb ? 1 : 0);
}

int kvs_ks_learn(kvs_ks_model *m, const char *key, size_t len)
{
    size_t i;
    int changed = 0;
    if (len > KVS_KS_DIGITS) len = KVS_KS_DIGITS;
    for (i = 0; i <= len && i < KVS_KS_DIGITS; i++) {
        int c = i < len ? class_of((unsigned char)key[i]) : ENDS;
        if (c & ~m->cls[i]) {
            m->cls[i] = (unsigned char)(m->cls[i] | c);
            changed = 1;
        }
    }
    return changed;
}

void kvs_ks_from_key(const kvs_ks_model *m, kvs_ks_num *n, const char *key, size_t len)
{
    size_t i;
    memset(n->d, 0, sizeof n->d);
    if (len > KVS_KS_DIGITS) len = KVS_KS_DIGITS;
    for (i = 0; i < len; i++)
        n->d[i] = (unsigned char)rank(mask_at(m, i), (unsigned char)key[i]);
}

static void set_top(const kvs_ks_model *m, kvs_ks_num *n, size_t from)
{
    size_t i;
    for (i = from; i < KVS_KS_DIGITS; i++)
        n->d[i] = (unsigned char)(base_at(m, i) - 1);
}

void kvs_ks_top(const kvs_ks_model *m, kvs_ks_num *n, const char *prefix, size_t len)
{
    kvs_ks_from_key(m, n, prefix, len);
    set_top(m, n, len < KVS_KS_DIGITS ? len : KVS_KS_DIGITS);
}

int kvs_ks_cmp(const kvs_ks_num *a, const kvs_ks_num *b)
{
    return memcmp(a->d, b->d, KVS_KS_DIGITS);   /* digits are bytes, most significant first */
}

static int used_digits(const kvs_ks_num *n)
{
    int i = KVS_KS_DIGITS;
    while (i > 0 && n->d[i - 1] == 0) i--;
    return i;
}

long double kvs_ks_span(const kvs_ks_model *m, const kvs_ks_num *a, const kvs_ks_num *b)
{
    long double x = 0;
    int i, borrow = 0, ua = used_digits(a), ub = used_digits(b);
    if (kvs_ks_cmp(b, a) <= 0) return 0;
    /* b - a digit by digit from the least significant one, folded into x */
    for (i = (ua > ub ? ua : ub) - 1; i >= 0; i--) {
        int base = base_at(m, (size_t)i), d = b->d[i] - a->d[i] - borrow;
        borrow = d < 0;
        if (borrow) d += base;
        x = (x + d) / base;
    }
    return x;
}

void kvs_ks_advance(const kvs_ks_model *m, kvs_ks_num *out, const kvs_ks_num *a,
                    long double span)
{
    unsigned char s[KVS_KS_DIGITS];
    long double x = span;
    int i, carry = 0, first = -1;
    if (!(span > 0)) {          /* also NaN */
        if (out != a) *out = *a;
        return;
    }
    if (span >= 1) {
        set_top(m, out, 0);
        return;
    }
    memset(s, 0, sizeof s);
    for (i = 0; i < KVS_KS_DIGITS && x > 0; i++) {
        int base = base_at(m, (size_t)i), d;
        x *= base;
        d = (int)x;
        if (d > base - 1) d = base - 1;
        s[i] = (unsigned char)d;
        x -= d;
        if (d && first < 0) first = i;
        if (first >= 0 && i - first >= SPAN_DIGITS) break;
    }
    for (i = KVS_KS_DIGITS - 1; i >= 0; i--) {
        int base = base_at(m, (size_t)i), d = a->d[i] + s[i] + carry;
        carry = d >= base;
        out->d[i] = (unsigned char)(carry ? d - base : d);
    }
    if (carry)
        set_top(m, out, 0);
}

size_t kvs_ks_key(const kvs_ks_model *m, const kvs_ks_num *n, const kvs_ks_num *from, char *out)
{
    size_t len = (size_t)used_digits(n), cap = KVS_KS_KEY_MAX, i;
    if (from) {
        for (i = 0; i < KVS_KS_DIGITS && n->d[i] == from->d[i]; i++)
            ;
        if (i + 1 + SIG_DIGITS < cap) cap = i + 1 + SIG_DIGITS;
    }
    if (len > cap) len = cap;       /* cut short: at or below n */
    for (i = 0; i < len; i++) {
        int mask = mask_at(m, i);
        if (n->d[i] == 0 && (mask & ENDS)) {   /* "ended" with digits after it: no key
                                                  reads so, the next one up is this
                                                  prefix + the lowest char */
            out[i] = char_of(mask, 1);
            return i + 1;
        }
        out[i] = char_of(mask, n->d[i]);
    }
    return len;
}

static const char *key_at(const kvs_page *p, size_t i, size_t *len)
{
    *len = p->items[i].key_len;
    return p->bytes.data + p->items[i].key_off;
}

/* A page sees only a slice of a random field: "0" + 12 base62 characters
 * over 1,000 keys shows only 0..2 at the field's first position, and a
 * boundary carried past "09" would jump over all of "0A".."0z".  So the
 * positions that vary from the first position where the page's keys differ
 * on (a run of them: a random field) may hold every class any of them holds.
 * So may the letters and digits just before the run, of classes the run
 * holds (a page of 1,000 of 100,000 such keys shows "00".."00z": the field
 * starts before the first position that varies).  Separators and fixed
 * prefixes are left as they are. */
static void widen(kvs_ks_model *m, const kvs_page *p, size_t from)
{
    size_t i, j, len0, len, d, e;
    const char *k0 = key_at(p, from, &len0), *k;
    unsigned char cls = 0;
    k = key_at(p, p->count - 1, &len);
    for (d = 0; d < len0 && d < len && k0[d] == k[d]; d++)
        ;
    for (e = d; e < KVS_KS_DIGITS; e++) {      /* positions d..e-1 vary */
        int varies = 0;
        for (j = from + 1; j < p->count && !varies; j++) {
            k = key_at(p, j, &len);
            varies = (e < len0) != (e < len) || (e < len && k[e] != k0[e]);
        }
        if (!varies) break;
    }
    for (i = d; i < e; i++) cls = (unsigned char)(cls | (m->cls[i] & ALL_CLASSES));
    while (d > 0 && d - 1 < len0 && (class_of((unsigned char)k0[d - 1]) & ~cls & ALL_CLASSES) == 0
           && isalnum((unsigned char)k0[d - 1]))
        d--;                /* and the field's first characters, constant on this page */
    for (i = d; i < e; i++)
        if (m->cls[i] & ALL_CLASSES) m->cls[i] = (unsigned char)(m->cls[i] | cls);
}

/* The sample's index of dispersion: its keys cut into DISP_SLICES runs of as
 * many keys, the variance of the runs' spans over their mean squared, times
 * the keys in a run (for keys at random, spans of n keys vary as 1/n). */
#define DISP_SLICES 8
static double dispersion(const kvs_ks_model *m, const kvs_page *p, size_t lo)
{
    size_t n = p->count - 1 - lo, i, len;
    long double span[DISP_SLICES], mean = 0, var = 0;
    kvs_ks_num a, b;
    const char *k;
    if (n < 8 * DISP_SLICES) return -1;
    k = key_at(p, lo, &len);
    kvs_ks_from_key(m, &a, k, len);
    for (i = 0; i < DISP_SLICES; i++) {
        k = key_at(p, lo + n * (i + 1) / DISP_SLICES, &len);
        kvs_ks_from_key(m, &b, k, len);
        span[i] = kvs_ks_span(m, &a, &b);
        mean += span[i] / DISP_SLICES;
        a = b;
    }
    if (!(mean > 0)) return -1;
    for (i = 0; i < DISP_SLICES; i++)
        var += (span[i] - mean) * (span[i] - mean) / (DISP_SLICES - 1);
    return (double)(var / (mean * mean) * (long double)n / DISP_SLICES);
}

static size_t common(const char *a, size_t na, const char *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

/* The first key from `lo` on of the group the page ends in: the keys that
 * share with its last key as long a prefix as its last eighth does, 4 bytes
 * more than the key at `lo`, when there are enough of them (a page that
 * ends in "run-...-page-00000250" after 750 "crawlee-snapshot-..." keys: its
 * density is the page group's, which the next ranges hold, not a blend of
 * the two). */
static size_t tail_group(const kvs_page *p, size_t lo)
{
    size_t n = p->count, hlen, len, t, i;
    const char *hi = key_at(p, n - 1, &hlen), *k;
    if (n < 64) return lo;
    k = key_at(p, n - 1 - n / 8, &len);
    t = common(k, len, hi, hlen);
    k = key_at(p, lo, &len);
    if (common(k, len, hi, hlen) + 4 > t) return lo;    /* (not one of random keys) */
    for (i = n - 1 - n / 8; i > lo; i--) {       /* the group: keys share t bytes with hi */
        k = key_at(p, i - 1, &len);
        if (common(k, len, hi, hlen) < t) break;
    }
    return n - 1 - i >= 48 ? i : lo;
}

int kvs_ks_sample_page(kvs_ks_sample *s, kvs_ks_model *m, const kvs_page *p, int tail)
{
    size_t i, len, lo = (p->count - 1) / 4, from = 0;   /* its upper 3/4: the upper half
                                                            alone is noisy where keys are
                                                            random, the whole page may
                                                            start in another group */
    const char *k;
    if (tail && p->count >= 2 && tail_group(p, lo) > lo)
        lo = from = tail_group(p, lo);      /* the rest of the page says nothing of it */
    for (i = from; i < p->count; i++) {
        k = key_at(p, i, &len);
        kvs_ks_learn(m, k, len);
    }
    if (p->count < 2) return 0;
    widen(m, p, from);
    s->n = (long)(p->count - 1 - lo);
    s->disp = dispersion(m, p, lo);
    k = key_at(p, lo, &len);
    if (kvs_buf_set(&s->lo, k, len) != 0) return -1;
    k = key_at(p, p->count - 1, &len);
    return kvs_buf_set(&s->hi, k, len);
}

int kvs_ks_sample_copy(kvs_ks_sample *dst, const kvs_ks_sample *src)
{
    dst->n = src->n;
    dst->disp = src->disp;
    if (!src->n) return 0;
    if (kvs_buf_set(&dst->lo, src->lo.data, src->lo.len) != 0) return -1;
    return kvs_buf_set(&dst->hi, src->hi.data, src->hi.len);
}

void kvs_ks_sample_free(kvs_ks_sample *s)
{
    kvs_buf_free(&s->lo);
    kvs_buf_free(&s->hi);
    s->n = 0;
}

long double kvs_ks_density(const kvs_ks_model *m, const kvs_ks_sample *s)
{
    kvs_ks_num x, y;
    long double span;
    if (s->n <= 0) return 0;
    kvs_ks_from_key(m, &x, s->lo.data, s->lo.len);
    kvs_ks_from_key(m, &y, s->hi.data, s->hi.len);
    span = kvs_ks_span(m, &x, &y);
    return span > 0 ? (long double)s->n / span : 0;
}
