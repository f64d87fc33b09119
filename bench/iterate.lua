-- iterate.lua — the per-key cost of handing keys to Lua, without HTTP: saved
-- pages fed through the sans-I/O listing (store:listing{ parallel = 1 } + listing:reply), each
-- page's keys taken with listing:page_keys().  Prints ns a key for decoding
-- alone (pages replied, no key taken) and for decoding + iterating, with and
-- without urls, medians of R runs; the difference is the iteration's cost.
-- Usage: lua5.4 bench/iterate.lua STORE_DIR [PAGES] [R]   (or luajit, lua5.1)
--   STORE_DIR: bench/.cache/store-<N> (bench/run.sh makes it); PAGES: 100; R: 7
local root = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.."
local dir = jit and "jit" or _VERSION:match("%d+%.%d+")
package.cpath = root .. "/build/" .. dir .. "/?.so;" .. package.cpath
local kvs = require "apify.kvs"

local store_dir = assert(arg[1], "usage: iterate.lua STORE_DIR [PAGES] [R]")
local PAGES, R = tonumber(arg[2] or "100"), tonumber(arg[3] or "7")
local bodies, names = {}, {}
for line in io.lines(store_dir .. "/pages.txt") do
  if #names >= PAGES then break end
  names[#names + 1] = line
end
for i, name in ipairs(names) do
  local f = assert(io.open(store_dir .. "/pages/" .. name, "rb"))
  bodies[i] = f:read("*a")
  f:close()
end
local store = kvs.new{ base_url = "http://127.0.0.1:1", token = false }:store("bench")
local headers = { ["Content-Type"] = "application/json" }

-- one pass over the pages; take: nil (no keys taken), "all" or "nourl"
local function pass(take)
  local listing = store:listing{ parallel = 1, urls = take ~= "nourl" }
  local n, sum = 0, 0
  local t0 = os.clock()
  for i = 1, #bodies do
    assert(listing:request())
    local step, count = listing:reply(200, headers, bodies[i])
    assert(step == "page", step)
    if take then
      for _, size in listing:page_keys() do n = n + 1; sum = sum + size end
    else
      n = n + count
    end
  end
  local t = os.clock() - t0
  listing:close()
  return t, n
end

local function median(t)
  table.sort(t)
  local m = math.floor((#t + 1) / 2)
  return #t % 2 == 1 and t[m] or (t[m] + t[m + 1]) / 2
end

local results = { decode = {}, all = {}, nourl = {} }
local keys
for _ = 1, R do            -- interleaved
  for _, what in ipairs({ "decode", "all", "nourl" }) do
    local t, n = pass(what ~= "decode" and what or nil)
    keys = n
    results[what][#results[what] + 1] = t
  end
end
local d, a, u = median(results.decode), median(results.all), median(results.nourl)
local label = (jit and jit.version or _VERSION) .. (kvs._FFI and " (FFI iterators)" or "")
print(string.format("%-34s %d keys: decode %4.0f ns/key; + iterate: %4.0f (urls), %4.0f (urls = false) ns/key",
  label, keys, d / keys * 1e9, (a - d) / keys * 1e9, (u - d) / keys * 1e9))
