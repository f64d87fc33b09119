#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; rerun after
changing an input layout).  Each target's header comment describes the layout
these bytes follow."""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "apify_api_7QmZk3Xr9Lw2Tn5Vb8Hc1Jd4Fg6SyP0e"   # the targets' fixed token


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def page(keys, truncated=True, nxt=None, limit=1000, start=None, url=True):
    items = []
    for i, k in enumerate(keys):
        it = {"key": k, "size": (i * 37) % 5000}
        if url:
            it["recordPublicUrl"] = "https://api.apify.com/v2/key-value-stores/s1/records/" + k
        items.append(it)
    d = {"items": items, "count": len(keys), "limit": limit, "exclusiveStartKey": start,
         "isTruncated": truncated, "nextExclusiveStartKey": nxt}
    return json.dumps({"data": d}, separators=(",", ":"))


def error(typ, msg):
    return json.dumps({"error": {"type": typ, "message": msg}})


# --- fuzz_reply: status sel, max_items sel, flags, plant_at, pad_delta, 4 chunk lengths
ST = {200: 0, 201: 3, 204: 4, 400: 6, 401: 7, 403: 8, 404: 9, 429: 10, 500: 11, 502: 12, 503: 13}


def reply(status, max_items, body, flags=0, plant_at=0, pad_delta=4, chunks=(7, 1, 30, 2)):
    hdr = bytes([ST[status], max_items, flags, plant_at, pad_delta]) + bytes(c - 1 for c in chunks)
    return hdr + (body.encode() if isinstance(body, str) else body)


write("fuzz_reply", "page-first", reply(200, 5, page(["a-1", "a-2", "b.txt"], True, "b.txt")))
write("fuzz_reply", "page-last", reply(200, 5, page(["x", "y_2"], False, None, url=False)))
write("fuzz_reply", "page-empty-cursor", reply(200, 3, page([], True, "k0042", start="k0040")))
write("fuzz_reply", "page-escapes", reply(200, 4,
      '{"data":{"items":[{"key":"\\ud83d\\ude00","size":1},{"key":"caf\\u00e9\\n\\"","size":2.0}],'
      '"isTruncated":false,"nextExclusiveStartKey":null}}'))
write("fuzz_reply", "page-lone-surrogate", reply(200, 4,
      '{"data":{"items":[{"key":"a\\ud800b","size":1}],"isTruncated":false}}'))
write("fuzz_reply", "page-odd-numbers", reply(200, 6,
      '{"data":{"items":[{"key":"a","size":-0.0},{"key":"b","size":1.5}],'
      '"isTruncated":false,"limit":1e400,"count":-2}}'))
write("fuzz_reply", "page-surrogate-then-letter", reply(200, 6,
      '{"data":{"items":[{"key":"b\\ud800\\u0041","size":1}],"isTruncated":false}}'))
write("fuzz_reply", "page-too-many", reply(200, 1, page(["a", "b"], True, "b")))
write("fuzz_reply", "page-padded-to-cap", reply(200, 2, page(["a"], False), flags=2, pad_delta=5))
write("fuzz_reply", "page-cut-short", reply(200, 5, page(["a", "b"], True, "b")[:40]))
write("fuzz_reply", "error-404", reply(404, 5, error("record-not-found", "Key-value store was not found")))
write("fuzz_reply", "error-401-token", reply(401, 5, error("token-not-valid",
      "Authentication token " + SECRET + " is not valid")))
write("fuzz_reply", "error-long-cut-token", reply(403, 5, error("insufficient-permissions",
      "x" * 490 + " " + SECRET + " and more")))
write("fuzz_reply", "error-429", reply(429, 5, error("rate-limit-exceeded", "You have exceeded the rate limit")))
write("fuzz_reply", "error-html-502", reply(502, 5, "<html><head><title>502 Bad Gateway</title></head>\r\n"
      "<body>nginx " + SECRET[:20] + "</body></html>"))
write("fuzz_reply", "error-planted", reply(500, 5, error("internal", "upstream said: "), flags=1, plant_at=230))


# --- fuzz_listing: a stream of choices (see the reader in fuzz_listing.c)
ALPH = "-0159AZ_abz"
STATUS_IDX = {200: 0, 201: 6, 0: 7, 400: 8, 401: 9, 404: 10, 429: 11, 500: 12, 503: 13, 302: 14}


def key(k):
    """gen_key: mode 0 (a short key of the small alphabet) when it fits, else raw bytes"""
    if 1 <= len(k) <= 4 and all(c in ALPH for c in k):
        return bytes([0, len(k) - 1] + [ALPH.index(c) for c in k])
    b = k.encode()
    assert len(b) <= 8
    return bytes([12, len(b)]) + b


def cfg(page_size=3, limit=None, start=None, upper=None, single=False, retries=2,
        min_delay=0, max_delay=0, elapsed=None, hook=False, date_hook=False):
    ps = page_size - 1 if page_size <= 10 else 200 + [20, 100, 999, 1000].index(page_size)
    lim = 0 if limit is None else 64 + limit
    fl = (1 if start is not None else 0) | (2 if upper is not None else 0) | (4 if single else 0) \
        | (8 if hook else 0) | (16 if date_hook else 0)
    dl = min_delay | (max_delay << 3)
    el = 1 if elapsed is None else elapsed * 4
    out = bytes([ps, lim, fl, retries, dl, el])
    if start is not None:
        out += key(start)
    if upper is not None:
        out += key(upper)
    return out + struct.pack("<Q", 0x5EED)


def pg(keys, trunc=True, nxt="last", sort=True, extra=False):
    shape = (0 if sort else 2) | (4 if extra else 0)
    t = 0 if trunc else 5
    nx = {"last": 0, "null": 3, "absent": 4}.get(nxt, 5)
    out = bytes([shape, t, nx, len(keys)]) + b"".join(key(k) for k in keys)
    if nx == 5:
        out += key(nxt)
    return out + bytes([16 * (i % 2) + 3 for i in range(len(keys))])


def step(body=b"", status=200, kind=0, fault=0, hdr=0, hdr_bytes=b"", chunk=4, dt=1, tail=b""):
    """one request: the body's choices come first, then the headers', then the
    fault message's and the hooks' (the order the target reads them in)"""
    return bytes([fault, STATUS_IDX[status], hdr, kind, chunk, dt]) + body + hdr_bytes + tail


write("fuzz_listing", "three-pages", cfg() + step(pg(["a0", "a1", "a5"])) + step(pg(["b0", "b1", "b5"]))
      + step(pg(["z"], trunc=False, nxt="null")))
write("fuzz_listing", "rate-limited", cfg(retries=3, hook=True)
      + step(kind=5, status=429, hdr=1 | 2, hdr_bytes=bytes([2, 0]), body=bytes([0, 0]), tail=b"\x02")
      + step(pg(["a", "b"], trunc=False)))
write("fuzz_listing", "empty-page-cursor", cfg(page_size=2)
      + step(pg([], nxt="k5")) + step(pg(["m", "n"])) + step(pg([], trunc=False, nxt="null")))
write("fuzz_listing", "cursor-repeated", cfg(page_size=3, start="a1")
      + step(pg(["a1", "a5", "b"])) + step(pg(["b", "b1", "b5"], nxt="a")) + step(pg(["z"], trunc=False)))
write("fuzz_listing", "out-of-order", cfg() + step(pg(["b", "a", "c"], sort=False)))
write("fuzz_listing", "limit-5", cfg(page_size=3, limit=5) + step(pg(["a", "b", "c"]))
      + step(pg(["d", "e"])))
write("fuzz_listing", "upper-key", cfg(page_size=3, start="a", upper="b5")
      + step(pg(["a0", "b", "b1"])) + step(pg(["b5", "b9", "z"])))
write("fuzz_listing", "network-then-page", cfg(retries=2)
      + step(fault=12, kind=7, tail=bytes([2 | 4, 150, 20]) + bytes(range(10)) * 45)
      + step(fault=11, kind=7, tail=b"\x01") + step(pg(["a"], trunc=False)))
write("fuzz_listing", "single-page", cfg(page_size=5, single=True) + step(pg(["a", "b", "c"])))
write("fuzz_listing", "error-401", cfg() + step(kind=5, status=401, body=bytes([2, 2])))
# a gzip page, its member ending a chunk, then one byte after it: corrupt, a retry; then the page
write("fuzz_listing", "gzip-junk-after-member-split", cfg()
      + step(pg(["a", "b"], trunc=False), hdr=16 | 64 | 128, hdr_bytes=b"\x00x")
      + step(pg(["a", "b"], trunc=False), hdr=16))
write("fuzz_listing", "retry-after-huge", cfg(retries=3, max_delay=3)
      + step(kind=5, status=503, hdr=1, hdr_bytes=bytes([8]), body=bytes([6, 4])) + step(pg(["a"], False)))


# --- fuzz_keyspace: keys to learn, keys a b c, a span choice
KS_ALPH = "!'()-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


def kskey(k):
    if isinstance(k, bytes):            # any bytes: each one escaped as 0xE0 + the byte
        return bytes([len(k)]) + b"".join(bytes([0xE0, c]) for c in k)
    assert len(k) < 12
    return bytes([len(k)]) + bytes(KS_ALPH.index(c) for c in k)


def ks(learn, abc, smode=0, sbits=0):
    return bytes([len(learn)]) + b"".join(kskey(k) for k in learn) + b"".join(kskey(k) for k in abc) \
        + bytes([smode]) + struct.pack("<Q", sbits)


write("fuzz_keyspace", "numbered", ks(["k0001", "k0002", "k0107", "k0999"], ["k0050", "k0500", "k0990"]))
write("fuzz_keyspace", "words", ks(["apple", "banana", "cherry", "date"], ["b", "bz", "c"], smode=4, sbits=500))
write("fuzz_keyspace", "mixed-classes", ks(["A-1", "a_2", "Z.9", "(x)"], ["A", "Z9", "a"], smode=1, sbits=1 << 62))
write("fuzz_keyspace", "nothing-learnt", ks([], ["", "!", "zzzzzzzzzzz"], smode=2, sbits=0x3FE0000000000000))
write("fuzz_keyspace", "odd-bytes", ks(["img-1"], [b"\x00a", b"\xff", "img-9"], smode=3, sbits=12345))

# --- fuzz_escape: which parts to set, then separated strings
write("fuzz_escape", "plain", b"\x7f" + b"my-store\0img-\0default\0abc123\0k0042")
write("fuzz_escape", "reserved", b"\x7e" + b"user~store/x\0a b/c?d#e&f=g\0%2F\0sig+/=\0..\0")
write("fuzz_escape", "utf8", b"\x48" + "naïve ☃\0caf\u00e9\0".encode())
write("fuzz_escape", "dots", b"\x01" + b"..")
write("fuzz_escape", "nul-inside", b"\x02" + b"ab\0cd")
# the top bit: 0xFF-separated strings, so the query values may hold NUL bytes
write("fuzz_escape", "nul-in-values", b"\xf8" + b"my-store\xffimg-\0x\xffc\0d\xffs\0g\xffk\0")


# --- fuzz_plan: parallel, ordered, page size, limit, key shape and count, seed, then per
# request a kind (< 240 a page, < 246 a 429, < 252 a 503, else a reset) and a latency
def plan(parallel, ordered, page_size, limit, shape, count, seed, steps=b""):
    lim = bytes([0]) if limit is None else bytes([1]) + struct.pack("<H", limit)
    return (bytes([parallel - 1, 1 if ordered else 0, page_size - 1]) + lim
            + bytes([shape]) + struct.pack("<H", count - 1) + struct.pack("<Q", seed) + steps)


write("fuzz_plan", "uniform-8", plan(8, True, 10, None, 0, 500, 1))
write("fuzz_plan", "alphabet-unordered", plan(8, False, 20, None, 1, 1500, 7))
write("fuzz_plan", "prefixes-16", plan(16, True, 13, None, 2, 1800, 3))
write("fuzz_plan", "prefixes-unordered-limit", plan(14, False, 13, 843, 2, 1893, 5))
write("fuzz_plan", "faults", plan(4, True, 7, None, 0, 300, 9, bytes([250, 3, 241, 9, 255, 1] * 8)))
write("fuzz_plan", "bytes", plan(6, True, 5, 100, 3, 200, 0, bytes(range(40, 240))))

# --- regressions: inputs that broke an invariant (fuzz/regressions/<target>/)
def regression(target, name, data):
    d = os.path.join(HERE, "regressions", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# A lone surrogate after a JSON error in the same chunk: decoded whole, the
# surrogate scan (run over the chunk before yajl) says "surrogate" (final);
# in small chunks yajl stops first and says "not valid JSON" (retried).
regression("fuzz_reply", "surrogate-after-bad-json", reply(200, 5, '{"data":x "\\ud800"}', chunks=(3, 3, 3, 3)))
# ... the same after a page that is no page ("items" a number): retried or not by chunking.
regression("fuzz_reply", "surrogate-after-bad-items", reply(200, 5, '{"data":{"items":5,"k":"\\ud800"}}',
           chunks=(2, 2, 2, 2)))
# Retry-After: 1e999 (past DBL_MAX) is taken as no Retry-After: retried after the
# backoff instead of failing as a wait above max_delay (R6).
regression("fuzz_listing", "retry-after-1e999", cfg(retries=3)
           + step(kind=5, status=503, hdr=1, hdr_bytes=bytes([15]), body=bytes([6, 4]))
           + step(pg(["a"], False)))
# Retry-After: 1 followed by 70 zeros (delay-seconds, 71 bytes): ignored as well.
regression("fuzz_listing", "retry-after-71-digits", cfg(retries=3)
           + step(kind=5, status=503, hdr=1, hdr_bytes=bytes([200 + 35]) + bytes([1] + [0] * 70),
                  body=bytes([6, 4]))
           + step(pg(["a"], False)))
# A transport message of 390 bytes with the token at 372: cut at 399 bytes of
# "network error: ...", then " (gave up after 1 retry)" is appended, so the
# first 12 bytes of the token stand in the middle of the message, unredacted (R5).
regression("fuzz_listing", "fault-message-cut-token", cfg(retries=1)
           + step(fault=12, kind=7, tail=bytes([1]))
           + step(fault=12, kind=7, tail=bytes([2 | 4, 130, 124]) + bytes([0] * 390)))

# --- fuzz_http: the listing's config, then per reply: eof, raw or made (kind, frame, extra,
# status, the body's choices, chunking), then the cuts.
HTTP_ALPH = "-05AZ_az"
HTTP_ST = {200: 0, 404: 4, 429: 5, 500: 6, 503: 7, 401: 8, 301: 9, 204: 10}


def hkey(k):   # a key of the generator's alphabet: count, no cursor prefix, characters
    return bytes([len(k), 0] + [HTTP_ALPH.index(c) for c in k])


def hpage(keys, truncated=True):
    return bytes([2 if truncated else 0, len(keys)]) + b"".join(hkey(k) for k in keys)


def hbody(keys, truncated, gzip):   # the body fuzz_http's generator writes for a page
    items = ",".join('{"key":"%s","size":3}' % k for k in keys)
    body = ('{"data":{"items":[%s],"count":1,"limit":1000,"isTruncated":%s}}'
            % (items, "true" if truncated else "false")).encode()
    if gzip:
        z = zlib.compressobj(1, zlib.DEFLATED, 31, 8)
        body = z.compress(body) + z.flush()
    return body


def hreply(keys=(), status=200, gzip=False, frame=0, extra=0, eof=0, truncated=True,
           retry_after=None, chunk=None, wrong=0, cuts=(5, 40)):
    kind = 1 | (8 if gzip else 0) | (16 if retry_after is not None else 0)
    out = bytes([eof, 1, kind, frame, extra, HTTP_ST[status]])
    if status == 200:
        out += hpage(keys, truncated)
    if retry_after is not None:
        out += bytes([retry_after])
    if frame % 5 == 2:   # chunks of `chunk` bytes, with an extension every other one
        n = len(hbody(keys, truncated, gzip)) if status == 200 else 0
        for i in range((n + chunk - 1) // chunk if n else 0):
            out += bytes([chunk - 1, i % 2])
    if frame % 5 == 4:
        out += bytes([wrong])
    out += bytes([len(cuts) - 1]) + b"".join(struct.pack("<H", c) for c in cuts)
    return out


def hraw(data, eof=1, cuts=(3, 17)):
    return (bytes([eof, 0]) + struct.pack("<H", len(data)) + data + bytes([len(cuts) - 1])
            + b"".join(struct.pack("<H", c) for c in cuts))


def hconf(page_size=3, retries=2, gzip=1, replies=4, limit=None):
    lim = bytes([1]) if limit is None else bytes([0, limit])
    return bytes([page_size]) + lim + bytes([retries, 0, gzip, replies - 1])


write("fuzz_http", "three-pages", hconf(3) + hreply(["A", "Z", "a"]) + hreply(["a0", "az", "z"])
      + hreply(["zz"], truncated=False))
write("fuzz_http", "chunked-gzip", hconf(3) + hreply(["0", "5"], gzip=True, frame=2, chunk=9)
      + hreply(["A"], frame=2 | 8, chunk=40, truncated=False))
write("fuzz_http", "close-delimited", hconf(2) + hreply(["a", "z"], frame=3, eof=1, truncated=False))
write("fuzz_http", "interim-and-junk", hconf(3) + hreply(["a"], extra=1 | 2 | 4, truncated=False))
write("fuzz_http", "retry-429-then-page", hconf(3) + hreply(status=429, retry_after=1)
      + hreply(status=503) + hreply(["_"], truncated=False))
write("fuzz_http", "wrong-length", hconf(3, retries=1) + hreply(["a"], frame=4, wrong=0)
      + hreply(["a"], truncated=False))
body = page(["img-1", "img-2"], False).encode()
write("fuzz_http", "raw-reply", hconf(2, replies=1) + hraw(
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(body)).encode() + b"\r\n\r\n" + body))
write("fuzz_http", "raw-garbage", hconf(2, replies=2) + hraw(b"HTTP/1.1 2OO OK\r\n\r\n")
      + hraw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", eof=0))
