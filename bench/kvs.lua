-- kvs.lua — the apify.kvs peer: list every key of store "bench" and print
-- "count sum".  Usage: lua5.4 bench/kvs.lua BASE_URL   (or luajit)
-- Loads the module from the build tree: build/5.4/ under lua5.4, build/jit/
-- under LuaJIT (the rest of package.cpath stays as it was).
-- KVS_GZIP=0: ask for identity bodies; KVS_PREFETCH=0: no prefetch; KVS_URLS=0:
-- urls = false (no recordPublicUrl strings).  KVS_JV=FILE (LuaJIT): the JIT's
-- trace log (-jv) into FILE.  APIFY_KVS_FFI=0 (LuaJIT): the C iterators.
-- KVS_HEAP_MB=M: M MB of live data held during the listing (a program's heap;
-- Lua 5.1's string hashing makes the URL strings cost more the bigger it is);
-- then "count sum cpu", cpu: CPU seconds of the listing loop alone.
local root = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.."
local dir = jit and "jit" or _VERSION:match("%d+%.%d+")
package.cpath = root .. "/build/" .. dir .. "/?.so;" .. package.cpath

if jit and os.getenv("KVS_JV") then require("jit.v").start(os.getenv("KVS_JV")) end

local HEAP_MB = tonumber(os.getenv("KVS_HEAP_MB") or "") or 0
local ballast = {}
for i = 1, HEAP_MB do ballast[i] = string.rep(string.char(64 + i % 32), 2 ^ 20 - 64) .. i end
local t0 = os.clock()

local WORK = tonumber(os.getenv("WORK") or "") or 0
local acc = 0

local kvs = require "apify.kvs"
local client = kvs.new{ base_url = assert(arg[1], "usage: kvs.lua BASE_URL"), token = "bench",
                        gzip = os.getenv("KVS_GZIP") ~= "0" }
local store = client:store("bench")

local n, sum = 0, 0
-- page by page (parallel = 1): the bench measures the work per key, and its server knows only
-- the pages that follow each other (an exclusiveStartKey elsewhere is a 404)
for key, size, url in store:keys{ parallel = 1, prefetch = os.getenv("KVS_PREFETCH") ~= "0",
                                  urls = os.getenv("KVS_URLS") ~= "0" } do
  n = n + 1
  sum = sum + size
  for i = 1, WORK do acc = acc + i % 7 end
end
if HEAP_MB > 0 then   -- and the CPU seconds of the listing alone
  print(string.format("%d %d %.4f", n, sum, os.clock() - t0))
else
  print(string.format("%d %d", n, sum))
end
if WORK > 0 then io.stderr:write("work ", acc, "\n") end
assert(#ballast >= 0)
