-- luasocket.lua — the loop a user writes with LuaSocket + lua-cjson.
-- Usage: lua5.4 bench/luasocket.lua BASE_URL   (or luajit)
-- socket.http sends "Connection: close" and opens a new TCP connection for
-- every request; keeping one open would mean writing an HTTP/1.1 client on
-- top of socket.tcp, which is not what a typical user does.  No gzip.
local http  = require "socket.http"
local url   = require "socket.url"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local WORK = tonumber(os.getenv("WORK") or "") or 0
local acc = 0

local base = assert(arg[1], "usage: luasocket.lua BASE_URL")

local function list_keys(start)
  local u = base .. "/v2/key-value-stores/bench/keys?limit=1000"
  if start then u = u .. "&exclusiveStartKey=" .. url.escape(start) end
  local chunks = {}
  local ok, code = http.request{
    url = u,
    headers = { authorization = "Bearer bench" },
    sink = ltn12.sink.table(chunks),
  }
  if not ok or code ~= 200 then
    error(("GET %s failed: %s"):format(u, tostring(code)))
  end
  return cjson.decode(table.concat(chunks)).data
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
