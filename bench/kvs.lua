-- kvs.lua — the apify.kvs peer: list every key of store "bench" and print
-- "count sum".  Usage: lua5.4 bench/kvs.lua BASE_URL   (or luajit)
-- Loads the module from the build tree: build/5.4/ under lua5.4, build/jit/
-- under LuaJIT (the rest of package.cpath stays as it was).
local root = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.."
local dir = jit and "jit" or _VERSION:match("%d+%.%d+")
package.cpath = root .. "/build/" .. dir .. "/?.so;" .. package.cpath

local WORK = tonumber(os.getenv("WORK") or "") or 0
local acc = 0

local kvs = require "apify.kvs"
local store = kvs.new{ base_url = assert(arg[1], "usage: kvs.lua BASE_URL"), token = "bench" }:store("bench")

local n, sum = 0, 0
for key, size, url in store:keys{} do
  n = n + 1
  sum = sum + size
  for i = 1, WORK do acc = acc + i % 7 end
end
print(string.format("%d %d", n, sum))
if WORK > 0 then io.stderr:write("work ", acc, "\n") end
