-- kvs.lua — the apify.kvs peer: list every key of store "bench" and print
-- "count sum".  Usage: lua5.4 bench/kvs.lua BASE_URL   (or luajit)
-- Loads the module from the build tree: build/5.4/ under lua5.4, build/jit/
-- under LuaJIT (the rest of package.cpath stays as it was).
-- KVS_GZIP=0: ask for identity bodies; KVS_PREFETCH=0: no prefetch.
local root = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.."
local dir = jit and "jit" or _VERSION:match("%d+%.%d+")
package.cpath = root .. "/build/" .. dir .. "/?.so;" .. package.cpath

local WORK = tonumber(os.getenv("WORK") or "") or 0
local acc = 0

local kvs = require "apify.kvs"
local client = kvs.new{ base_url = assert(arg[1], "usage: kvs.lua BASE_URL"), token = "bench",
                        gzip = os.getenv("KVS_GZIP") ~= "0" }
local store = client:store("bench")

local n, sum = 0, 0
for key, size, url in store:keys{ prefetch = os.getenv("KVS_PREFETCH") ~= "0" } do
  n = n + 1
  sum = sum + size
  for i = 1, WORK do acc = acc + i % 7 end
end
print(string.format("%d %d", n, sum))
if WORK > 0 then io.stderr:write("work ", acc, "\n") end
