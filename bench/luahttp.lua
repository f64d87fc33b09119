-- luahttp.lua — the loop a user writes with lua-http (0.4, cqueues) +
-- lua-cjson.  Usage: luajit bench/luahttp.lua BASE_URL
-- http.request makes a new connection for every request (lua-http 0.4 has
-- no connection pool).  No gzip: lua-http offers gzip only as a transfer
-- coding ("TE: gzip", and only with a zlib binding, none installed here),
-- which nginx never applies.
local request = require "http.request"
local util    = require "http.util"
local cjson   = require "cjson"

local WORK = tonumber(os.getenv("WORK") or "") or 0
local acc = 0

local base = assert(arg[1], "usage: luahttp.lua BASE_URL")

local function list_keys(start)
  local u = base .. "/v2/key-value-stores/bench/keys?limit=1000"
  if start then u = u .. "&exclusiveStartKey=" .. util.encodeURIComponent(start) end
  local req = request.new_from_uri(u)
  req.headers:upsert("authorization", "Bearer bench")
  local headers, stream = assert(req:go(30))
  local body = assert(stream:get_body_as_string())
  if headers:get(":status") ~= "200" then
    error(("GET %s failed: HTTP %s"):format(u, headers:get(":status")))
  end
  stream:shutdown()
  return cjson.decode(body).data
end

local n, sum = 0, 0
local start
repeat
  local page = list_keys(start)
  for _, item in ipairs(page.items) do
    n = n + 1
    sum = sum + item.size
    for i = 1, WORK do acc = acc + i % 7 end
  end
  start = page.nextExclusiveStartKey
until not page.isTruncated
print(string.format("%d %d", n, sum))
if WORK > 0 then io.stderr:write("work ", acc, "\n") end
