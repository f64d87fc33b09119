-- bench/realworld.lua — the apify.kvs rows of bench/realworld.sh: list every key of one store
-- and print "count sum order" (order: "ok" when every key came after the one before it in byte
-- order, else "UNORDERED" and the first offending pair on stderr).
--
--   lua5.4 bench/realworld.lua BASE_URL STORE PARALLEL      (1: sequential; auto: the default)
--
-- Loads the module from the build tree (build/5.4/ under lua5.4, build/jit/ under LuaJIT).
-- The client keeps its defaults (retries, the API's 60 requests/s and X-RateLimit-Limit for
-- parallel listings), as a user would run it against the real API; with PARALLEL auto the
-- listing is store:keys() with no options at all.
local root = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.."
local dir = jit and "jit" or _VERSION:match("%d+%.%d+")
package.cpath = root .. "/build/" .. dir .. "/?.so;" .. package.cpath

local kvs = require "apify.kvs"
local base, name, parallel = arg[1], arg[2], arg[3] == "auto" and "auto" or tonumber(arg[3] or "")
assert(base and name and parallel, "usage: realworld.lua BASE_URL STORE PARALLEL (a number or auto)")
local store = kvs.new{ base_url = base, token = "bench" }:store(name)

local opts = {}
if parallel ~= "auto" then opts.parallel = parallel end
local n, sum, prev, order = 0, 0, nil, "ok"
for key, size in store:keys(opts) do
  n = n + 1
  sum = sum + size
  if prev and not (key > prev) and order == "ok" then
    order = "UNORDERED"
    io.stderr:write(("key %d %q after %q\n"):format(n, key, prev))
  end
  prev = key
end
print(string.format("%d %d %s", n, sum, order))
