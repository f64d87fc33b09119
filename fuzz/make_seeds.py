#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; rerun after
changing an input layout).  Each target's header comment describes the layout
these bytes follow."""
import json
import os
import struct

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


