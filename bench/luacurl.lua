-- luacurl.lua — the loop a user writes with Debian's lua-curl (0.3.0, Lua
-- 5.1/5.2 and LuaJIT) + lua-cjson.  Usage: luajit bench/luacurl.lua BASE_URL
-- One easy handle reused for every page, so libcurl keeps the connection
-- open.  No gzip (CURLOPT_ACCEPT_ENCODING is not set, as by default).
local curl  = require "curl"
local cjson = require "cjson"

local WORK = tonumber(os.getenv("WORK") or "") or 0
local acc = 0

local base = assert(arg[1], "usage: luacurl.lua BASE_URL")
local c = curl.easy_init()
c:setopt(curl.OPT_HTTPHEADER, { "Authorization: Bearer bench" })
local chunks
c:setopt(curl.OPT_WRITEFUNCTION, function(s) chunks[#chunks + 1] = s; return #s end)

local function list_keys(start)
  local u = base .. "/v2/key-value-stores/bench/keys?limit=1000"
  if start then u = u .. "&exclusiveStartKey=" .. curl.escape(start) end
  chunks = {}
  c:setopt(curl.OPT_URL, u)
  local rc, err = c:perform()
  if rc ~= 0 then error(("GET %s failed: %s"):format(u, tostring(err))) end
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
