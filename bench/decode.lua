-- decode.lua — cjson.decode alone: read the cached pages of a store one by
-- one, decode each and count keys / sum sizes, timing only the decode calls.
-- Usage: lua5.4 bench/decode.lua STORE_DIR   (or luajit)
-- Prints "count sum decode_seconds" (CPU seconds spent inside cjson.decode).
local cjson = require "cjson"
local dir = assert(arg[1], "usage: decode.lua STORE_DIR")

local WORK = tonumber(os.getenv("WORK") or "") or 0
local acc = 0

local n, sum, spent = 0, 0, 0
for name in io.lines(dir .. "/pages.txt") do
  local f = assert(io.open(dir .. "/pages/" .. name, "rb"))
  local body = f:read("*a")
  f:close()
  local t0 = os.clock()
  local page = cjson.decode(body).data
  spent = spent + (os.clock() - t0)
  for _, item in ipairs(page.items) do
    n = n + 1
    sum = sum + item.size
    for i = 1, WORK do acc = acc + i % 7 end
  end
end
print(string.format("%d %d %.6f", n, sum, spent))
if WORK > 0 then io.stderr:write("work ", acc, "\n") end
