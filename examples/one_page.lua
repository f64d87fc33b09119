-- examples/one_page.lua — one request, the API's page as a table, errors as values.
--
--   lua5.4 examples/one_page.lua <store-id> [limit]
local kvs = require "apify.kvs"

local store = kvs.new():store(assert(arg[1], "usage: one_page.lua <store-id> [limit]"))
local page, err = store:list_keys{ limit = tonumber(arg[2]) or 5 }
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
