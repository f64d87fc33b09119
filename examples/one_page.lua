-- examples/one_page.lua — one request, the API's page as a table, errors as values.
--
--   lua5.4 examples/one_page.lua <store-id> [limit]
local kvs = require "apify.kvs"

local USAGE = "usage: one_page.lua <store-id> [limit]"
if arg[1] == "--help" or arg[1] == "-h" then
  print(USAGE .. "\n" ..
        "Fetches the first page of the store's keys (limit: 1..1000, default 5) and prints it\n" ..
        "with the next cursor. Reads APIFY_TOKEN and APIFY_API_BASE_URL.")
  os.exit(0)
end
local function usage_error(problem)
  io.stderr:write("one_page.lua: ", problem, "\n", USAGE, "\n")
  os.exit(2)
end
if not arg[1] then usage_error("missing <store-id>") end
if arg[1] == "" then usage_error("<store-id> must not be empty") end
if arg[3] then usage_error("too many arguments") end
local limit = 5
if arg[2] then
  limit = tonumber(arg[2])
  if not limit or limit < 1 or limit > 1000 or limit % 1 ~= 0 then
    usage_error("limit must be an integer in 1..1000, got " .. arg[2])
  end
end

-- token from APIFY_TOKEN, base URL from APIFY_API_BASE_URL; a bad base URL raises here
local ok_new, client = pcall(kvs.new)
if not ok_new then
  usage_error("bad APIFY_API_BASE_URL or APIFY_TOKEN: " .. tostring(client):gsub("^.-%((.*)%)$", "%1"))
end
local store = client:store(arg[1])
local page, err = store:list_keys{ limit = limit }
if not page then
  -- err.type is the API's error type (or the client's own: network-error, timeout, ...)
  io.stderr:write(string.format("failed: %s (type %s, HTTP %s)\n", err.message, err.type,
                                tostring(err.status)))
  os.exit(1)
end
for i, item in ipairs(page.items) do
  print(i, item.key, item.size, item.recordPublicUrl)
end
print("count", page.count, "isTruncated", page.isTruncated,
      "nextExclusiveStartKey", page.nextExclusiveStartKey)
